//! Generation publishing: bounded channels to workers, acknowledgements
//! through each worker's shared counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender, TrySendError};

use super::sched::Wait;
use crate::flow::{FlowKey, SavedFlow};
use crate::hash::owner_worker;
use crate::port::wait::Doorbell;
use crate::port::Port;
use crate::service::Generation;
use crate::worker::{
    Counters, EndpointCounters, EndpointStat, FlowInfo, Held, Plumbing, Punted, Restored,
    SharedCounters, Worker, WorkerConfig, WorkerRequest,
};

/// A restore sent to the workers ([`Dataplane::send_restore`]).
pub struct PendingRestore {
    replies: Vec<crossbeam_channel::Receiver<Restored>>,
}

impl PendingRestore {
    /// Waits for every worker's answer.
    pub fn wait(self, timeout: Duration) -> Result<Restored, PublishError> {
        let start = Instant::now();
        let mut total = Restored::default();
        for (w, rx) in self.replies.into_iter().enumerate() {
            let r = rx
                .recv_timeout(timeout.saturating_sub(start.elapsed()))
                .map_err(|_| PublishError::NoAnswer {
                    worker: w as u32,
                    waited_ms: start.elapsed().as_millis() as u64,
                })?;
            total.add(&r);
        }
        Ok(total)
    }
}

/// What a worker reports besides its counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerGauges {
    pub flows_active: u64,
    pub flow_capacity: u64,
    pub generation: u64,
}

/// Why a generation did not take effect everywhere in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("generation {number} not acknowledged within {waited_ms} ms by worker(s) {lagging:?} (stuck or stopped); the previous generation may still run there")]
    Timeout {
        number: u64,
        waited_ms: u64,
        lagging: Vec<u32>,
    },
    #[error("worker {0} has stopped")]
    WorkerGone(u32),
    #[error("generation number {number} is not above the current {current}")]
    NotNewer { number: u64, current: u64 },
    #[error("worker {worker} did not answer within {waited_ms} ms (stuck, or its request queue is full)")]
    NoAnswer { worker: u32, waited_ms: u64 },
}

/// Running workers and the means to reconfigure and observe them.
pub struct Dataplane<B: Send + 'static> {
    senders: Vec<Sender<Arc<Generation>>>,
    requests: Vec<Sender<WorkerRequest>>,
    shared: Vec<Arc<SharedCounters>>,
    handles: Vec<JoinHandle<Counters>>,
    plumbing: Plumbing<B>,
    current: Arc<Generation>,
    /// How waits for workers pass time (depends on the caller's class).
    wait: Wait,
}

impl<B: Send + 'static> Dataplane<B> {
    /// Starts one worker per entry of `workers` (its config and its ports),
    /// all running `gen`.
    pub fn start<P>(workers: Vec<(WorkerConfig, Vec<P>)>, gen: Generation) -> Dataplane<B>
    where
        P: Port<Buf = B> + Send + 'static,
    {
        let n = workers.len();
        let plumbing = Plumbing::new(n, 4096);
        let current = Arc::new(gen);
        let epoch = Instant::now();
        let mut dp = Dataplane {
            senders: Vec::with_capacity(n),
            requests: Vec::with_capacity(n),
            shared: Vec::with_capacity(n),
            handles: Vec::with_capacity(n),
            plumbing: plumbing.clone(),
            current: current.clone(),
            wait: Wait::default(),
        };
        for (cfg, ports) in workers {
            // Depth 4: a worker drains to the newest between bursts, so more
            // than one pending generation only happens while it is stalled.
            let (tx, rx) = bounded(4);
            let shared = Arc::new(SharedCounters::default());
            shared.generation.store(current.number, Ordering::Release);
            let (req_tx, req_rx) = bounded(64);
            dp.requests.push(req_tx);
            let (gen, sh, pl, name) = (
                current.clone(),
                shared.clone(),
                plumbing.clone(),
                format!("sluice-w{}", cfg.id),
            );
            // Each worker builds its flow table on its own thread: tens of
            // milliseconds of page faults per million flows, in parallel
            // rather than one worker after the other before any runs.
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    Worker::new(cfg, ports, gen, rx, sh, pl, epoch)
                        .with_requests(req_rx)
                        .run()
                })
                .expect("spawning a worker thread");
            dp.senders.push(tx);
            dp.shared.push(shared);
            dp.handles.push(handle);
        }
        dp
    }

    /// How the thread that publishes waits for workers: [`Wait::Sleep`]
    /// from a real-time thread (see `control::sched`).
    pub fn set_wait(&mut self, wait: Wait) {
        self.wait = wait;
    }

    /// The generation most recently published.
    pub fn current(&self) -> &Arc<Generation> {
        &self.current
    }

    /// Sends `gen` to every worker and waits until each runs it (or a newer
    /// one). Returns how long that took.
    pub fn publish(
        &mut self,
        gen: Generation,
        timeout: Duration,
    ) -> Result<Duration, PublishError> {
        if gen.number <= self.current.number {
            return Err(PublishError::NotNewer {
                number: gen.number,
                current: self.current.number,
            });
        }
        let start = Instant::now();
        let number = gen.number;
        let gen = Arc::new(gen);
        for (i, tx) in self.senders.iter().enumerate() {
            let mut g = gen.clone();
            let mut spins = 0u32;
            loop {
                match tx.try_send(g) {
                    Ok(()) => {
                        self.plumbing.wake(i);
                        break;
                    }
                    Err(TrySendError::Full(back)) => {
                        if start.elapsed() > timeout {
                            return Err(self.timeout(number, start));
                        }
                        g = back;
                        self.wait.pause(spins);
                        spins += 1;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(PublishError::WorkerGone(i as u32))
                    }
                }
            }
        }
        self.current = gen;
        self.wait_applied(number, timeout.saturating_sub(start.elapsed()))?;
        Ok(start.elapsed())
    }

    /// Waits until every worker acknowledges generation `number`.
    pub fn wait_applied(&self, number: u64, timeout: Duration) -> Result<(), PublishError> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if self
                .shared
                .iter()
                .all(|s| s.generation.load(Ordering::Acquire) >= number)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(self.timeout(number, start));
            }
            // Workers poll between bursts (microseconds): spin briefly, then
            // yield or sleep, so the answer comes fast without keeping the
            // core from the worker we wait for.
            self.wait.pause(spins);
            spins += 1;
        }
    }

    fn timeout(&self, number: u64, start: Instant) -> PublishError {
        PublishError::Timeout {
            number,
            waited_ms: start.elapsed().as_millis() as u64,
            lagging: self
                .shared
                .iter()
                .enumerate()
                .filter(|(_, s)| s.generation.load(Ordering::Acquire) < number)
                .map(|(i, _)| i as u32)
                .collect(),
        }
    }

    /// Per-worker counters, read without stopping the workers.
    pub fn counters(&self) -> Vec<Counters> {
        self.shared.iter().map(|s| s.snapshot()).collect()
    }

    /// Per-worker flow-table occupancy, capacity and the generation each
    /// runs.
    pub fn gauges(&self) -> Vec<WorkerGauges> {
        self.shared
            .iter()
            .map(|s| WorkerGauges {
                flows_active: s.flows_active.load(Ordering::Relaxed),
                flow_capacity: s.flow_capacity.load(Ordering::Relaxed),
                generation: s.generation.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Per-worker flow-table occupancy.
    pub fn flows_active(&self) -> Vec<u64> {
        self.shared
            .iter()
            .map(|s| s.flows_active.load(Ordering::Relaxed))
            .collect()
    }

    /// Sends `make(reply)` to worker `w` and waits for the answer.
    fn ask<T>(
        &self,
        w: usize,
        timeout: Duration,
        make: impl FnOnce(Sender<T>) -> WorkerRequest,
    ) -> Result<T, PublishError> {
        let start = Instant::now();
        let no_answer = || PublishError::NoAnswer {
            worker: w as u32,
            waited_ms: start.elapsed().as_millis() as u64,
        };
        let (tx, rx) = bounded(1);
        self.requests[w]
            .send_timeout(make(tx), timeout)
            .map_err(|_| no_answer())?;
        self.plumbing.wake(w);
        rx.recv_timeout(timeout.saturating_sub(start.elapsed()))
            .map_err(|_| no_answer())
    }

    /// The flow with this key, asked of the worker that owns it.
    pub fn lookup_flow(
        &self,
        key: FlowKey,
        timeout: Duration,
    ) -> Result<Option<FlowInfo>, PublishError> {
        let w = owner_worker(key.client_addr, key.client_port, self.requests.len() as u32);
        self.ask(w as usize, timeout, |reply| WorkerRequest::LookupFlow {
            key,
            reply,
        })
    }

    /// Every worker's flows, for the snapshot of a planned stop.
    pub fn save_flows(&self, timeout: Duration) -> Result<Vec<SavedFlow>, PublishError> {
        let mut all = Vec::new();
        for w in 0..self.requests.len() {
            all.extend(self.ask(w, timeout, |reply| WorkerRequest::SaveFlows { reply })?);
        }
        Ok(all)
    }

    /// Sends a snapshot's flows, each to the worker that owns it now (the
    /// worker count may have changed since the snapshot), to be restored
    /// under generation `generation`: call before publishing it, then
    /// [`PendingRestore::wait`] after.
    pub fn send_restore(
        &self,
        flows: Vec<SavedFlow>,
        generation: u64,
        timeout: Duration,
    ) -> Result<PendingRestore, PublishError> {
        let n = self.requests.len();
        let mut parts = vec![Vec::new(); n];
        for f in flows {
            let w = owner_worker(f.key.client_addr, f.key.client_port, n as u32) as usize;
            if let Some(part) = parts.get_mut(w) {
                part.push(f);
            }
        }
        let mut replies = Vec::with_capacity(n);
        for (w, flows) in parts.into_iter().enumerate() {
            let (tx, rx) = bounded(1);
            self.requests[w]
                .send_timeout(
                    WorkerRequest::RestoreFlows {
                        flows,
                        generation,
                        reply: tx,
                    },
                    timeout,
                )
                .map_err(|_| PublishError::NoAnswer {
                    worker: w as u32,
                    waited_ms: timeout.as_millis() as u64,
                })?;
            self.plumbing.wake(w);
            replies.push(rx);
        }
        Ok(PendingRestore { replies })
    }

    /// Up to `limit` flows, gathered from every worker in turn.
    pub fn dump_flows(
        &self,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<FlowInfo>, PublishError> {
        let mut all = Vec::new();
        for w in 0..self.requests.len() {
            if all.len() >= limit {
                break;
            }
            let left = limit - all.len();
            all.extend(self.ask(w, timeout, |reply| WorkerRequest::DumpFlows {
                limit: left,
                reply,
            })?);
        }
        Ok(all)
    }

    /// Per-endpoint counters summed over workers, keyed by identity.
    pub fn endpoint_stats(&self, timeout: Duration) -> Result<Vec<EndpointStat>, PublishError> {
        let mut sum: Vec<EndpointStat> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for w in 0..self.requests.len() {
            let report = self.ask(w, timeout, |reply| WorkerRequest::EndpointStats { reply })?;
            for e in report.endpoints {
                let id = (e.service, e.addr, e.port);
                match index.get(&id) {
                    Some(&i) => {
                        let s: &mut EndpointStat = &mut sum[i];
                        s.counters.add(&e.counters);
                    }
                    None => {
                        index.insert(id, sum.len());
                        sum.push(EndpointStat {
                            counters: EndpointCounters::default(),
                            ..e
                        });
                        let last = sum.len() - 1;
                        sum[last].counters.add(&e.counters);
                    }
                }
            }
        }
        Ok(sum)
    }

    /// Queues a frame for worker `worker` to send on `port` (frames sluice
    /// originates: ARP). `false` if that worker's queue is full or absent.
    pub fn inject(&self, worker: usize, port: u16, frame: Vec<u8>) -> bool {
        let queued = self
            .plumbing
            .injects
            .get(worker)
            .is_some_and(|q| q.push((port, frame)).is_ok());
        self.plumbing.wake(worker);
        queued
    }

    /// Takes a frame the workers punted (ARP), if any.
    pub fn take_punted(&self) -> Option<Punted> {
        self.plumbing.punts.pop()
    }

    /// Takes a frame a worker holds for an unresolved neighbor, if any.
    pub fn take_held(&self) -> Option<Held> {
        self.plumbing.held.pop()
    }

    /// Gives a held frame back to `worker`, to process again as arrived on
    /// `port`. `false` if that worker's queue is full or absent.
    pub fn reinject(&self, worker: usize, port: u16, frame: Vec<u8>) -> bool {
        let queued = self
            .plumbing
            .reinjects
            .get(worker)
            .is_some_and(|q| q.push((port, frame)).is_ok());
        self.plumbing.wake(worker);
        queued
    }

    /// Rung by workers when they punt or hold a frame.
    pub fn control_bell(&self) -> &Arc<Doorbell> {
        &self.plumbing.control_bell
    }

    /// Stops every worker and returns their final counters.
    pub fn stop(self) -> Vec<Counters> {
        self.plumbing.stop_all();
        self.handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    }
}
