//! The pinned poll loop: rx burst -> parse -> classify -> flow lookup ->
//! backend choice -> rewrite -> tx burst, with per-worker counters.
//!
//! A worker owns everything it touches per packet (its ports' queues, its
//! flow table, its counters); the only shared things are read-only (the
//! current [`Generation`] behind an `Arc`) or lock-free rings (handoff to
//! another worker, punts to the control thread, generations from it).

mod answer;
mod counters;
pub mod decide;
mod fast;
mod forward;
mod icmp;
mod parse;
mod query;
mod recycle;
mod reply;
mod verdict;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use crossbeam_queue::ArrayQueue;

pub use counters::{CounterInfo, Counters, SharedCounters};
pub use query::{
    EndpointCounters, EndpointReport, EndpointStat, FlowInfo, Restored, WorkerRequest,
};
pub use recycle::{eligible_age_ms, jitter_ms as recycle_jitter_ms};
pub use verdict::{Answer, AnswerKind, DropReason, Verdict};

use crate::flow::{FlowEntry, FlowId, FlowKey, FlowTable, SavedFlow, Tick, Timeouts};
use crate::hash::owner_worker;
use crate::port::wait::{self, Doorbell};
use crate::port::{PacketBuf, Port};
use crate::service::Generation;
use crate::wire::ethernet::EthernetFrame;
use parse::{classify, parse, Class, Lookup, Parsed, ServiceMemo};

/// Packets per burst.
pub const BATCH: usize = 32;

/// Flow tables at least this large (their slab alone is several MiB, past
/// the L2 cache) look a burst up in one batch through the hint array, whose
/// overlapping cache misses pay for its extra instructions; smaller tables
/// stay in cache and are cheaper looked up one packet at a time.
const BATCHED_LOOKUP_MIN_FLOWS: usize = 1 << 17;

/// What a worker does when a poll finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdlePolicy {
    /// Spin (bare metal: the core is sluice's alone).
    BusyPoll,
    /// After `spin_polls` empty polls, sleep until there is work: blocked in
    /// `ppoll(2)` on every port's receive event and the worker's doorbell
    /// (rung by the control thread and by workers handing it packets), so
    /// the first packet after an idle spell waits for a scheduler wake-up,
    /// not a timer. A port with no event to block on (see
    /// [`Port::rx_event_fd`]) bounds each sleep to `sleep_us` microseconds
    /// instead, with a 1 us timer slack.
    Backoff { spin_polls: u32, sleep_us: u32 },
}

/// Longest sleep of an idle worker whose ports all have receive events:
/// it wakes this often anyway to age its flows and publish its counters.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// An idle worker's tick ages this many times its per-poll budget of flow
/// slots, so a quiet table still expires its flows (a busy worker polls
/// thousands of times per tick).
const IDLE_EXPIRE_FACTOR: usize = 256;

/// How one worker is set up.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: u32,
    pub workers: u32,
    /// Core to pin to, if any.
    pub core: Option<usize>,
    pub flow_capacity: usize,
    pub timeouts: Timeouts,
    pub idle: IdlePolicy,
    /// Flow-table slots examined for expiry per poll.
    pub expire_budget: usize,
    /// Benchmark baseline: only swap Ethernet addresses and send back.
    pub mac_swap_only: bool,
    /// The one-pass path for mid-flow packets of known flows. Off, every
    /// packet takes the general path: how tests check that both agree.
    pub fast_path: bool,
    /// Poll no port until the first configured generation arrives: frames
    /// already waiting in a port (a ring taken back from the previous
    /// process across a restart) meet the services they are for, not the
    /// empty generation a worker starts with.
    pub wait_for_configuration: bool,
}

impl WorkerConfig {
    pub fn new(id: u32, workers: u32) -> WorkerConfig {
        WorkerConfig {
            id,
            workers,
            core: None,
            flow_capacity: 1 << 20,
            timeouts: Timeouts::default(),
            idle: IdlePolicy::BusyPoll,
            expire_budget: 16,
            mac_swap_only: false,
            fast_path: true,
            wait_for_configuration: false,
        }
    }
}

/// A frame on its way to the worker that owns its flow, with the port it
/// arrived on.
pub type Handoff<B> = (u16, B);

/// A frame for the control thread (ARP), copied: punts are rare and the
/// control thread must not hold data-path buffers.
pub type Punted = (u16, Vec<u8>);

/// A frame whose next hop's MAC address is not known yet, held (copied) on
/// the control thread while it resolves the neighbor, and given back to the
/// worker that processed it once the neighbor is known, as the kernel holds
/// packets in a neighbor's queue instead of dropping them.
#[derive(Debug)]
pub struct Held {
    pub worker: u32,
    /// The port it arrived on.
    pub port: u16,
    /// The frame as it arrived (nothing is rewritten before the next hop
    /// is looked up).
    pub frame: Vec<u8>,
}

/// Rings shared between workers and with the control thread.
pub struct Plumbing<B> {
    /// Every worker's inbox, indexed by worker id.
    pub inboxes: Vec<Arc<ArrayQueue<Handoff<B>>>>,
    /// Frames for the control thread.
    pub punts: Arc<ArrayQueue<Punted>>,
    /// Frames the control thread originates (ARP), per worker: the worker
    /// copies each into a buffer of the port and sends it.
    pub injects: Vec<Arc<ArrayQueue<Punted>>>,
    /// Set to stop every worker.
    pub stop: Arc<AtomicBool>,
    /// Every worker's doorbell, indexed by worker id: rung after putting
    /// something in its inbox, inject queue, generation or request channel,
    /// so that a sleeping worker wakes for it (see `port::wait`).
    pub doorbells: Vec<Arc<Doorbell>>,
    /// Frames waiting for a neighbor, for the control thread.
    pub held: Arc<ArrayQueue<Held>>,
    /// Held frames given back once their neighbor is known, per worker:
    /// processed again as if they had just arrived on the port.
    pub reinjects: Vec<Arc<ArrayQueue<Punted>>>,
    /// Rung after a punt or a held frame, so the control thread answers an
    /// ARP request or resolves a neighbor at once rather than at its next
    /// timer.
    pub control_bell: Arc<Doorbell>,
}

impl<B> Clone for Plumbing<B> {
    fn clone(&self) -> Self {
        Plumbing {
            inboxes: self.inboxes.clone(),
            punts: self.punts.clone(),
            injects: self.injects.clone(),
            stop: self.stop.clone(),
            doorbells: self.doorbells.clone(),
            held: self.held.clone(),
            reinjects: self.reinjects.clone(),
            control_bell: self.control_bell.clone(),
        }
    }
}

impl<B> Plumbing<B> {
    pub fn new(workers: usize, depth: usize) -> Plumbing<B> {
        Plumbing {
            inboxes: (0..workers)
                .map(|_| Arc::new(ArrayQueue::new(depth)))
                .collect(),
            punts: Arc::new(ArrayQueue::new(1024)),
            injects: (0..workers)
                .map(|_| Arc::new(ArrayQueue::new(256)))
                .collect(),
            stop: Arc::new(AtomicBool::new(false)),
            doorbells: (0..workers).map(|_| Arc::new(Doorbell::new())).collect(),
            held: Arc::new(ArrayQueue::new(1024)),
            reinjects: (0..workers)
                .map(|_| Arc::new(ArrayQueue::new(256)))
                .collect(),
            control_bell: Arc::new(Doorbell::new()),
        }
    }

    /// Wakes worker `worker` if it sleeps; call after giving it work.
    #[inline]
    pub fn wake(&self, worker: usize) {
        if let Some(d) = self.doorbells.get(worker) {
            d.ring();
        }
    }

    /// Sets the stop flag and wakes every worker to see it.
    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for d in &self.doorbells {
            d.ring();
        }
    }
}

/// What the general path's classification found for one packet.
#[derive(Clone, Copy)]
enum Stage {
    Drop(DropReason),
    Punt,
    Handoff(u32),
    Forward(Parsed, Lookup),
    Reply(Parsed),
    Icmp(Parsed),
}

/// What a batched burst's first pass found for one packet.
#[derive(Clone, Copy, Default)]
pub(crate) struct PreLookup {
    /// The flow's hash, if the frame parsed on the fast path and a memo
    /// told its direction; `None` leaves the lookup to the second pass.
    pub(crate) hash: Option<u64>,
    /// With a hash: the flow's slot, or `None` if it has none.
    pub(crate) id: Option<FlowId>,
    /// The key looked up was the reply key (backend -> client), not the
    /// forward one.
    pub(crate) reply: bool,
}

/// One pinned worker.
pub struct Worker<P: Port> {
    id: u32,
    n_workers: u32,
    ports: Vec<P>,
    gen: Arc<Generation>,
    gen_rx: Receiver<Arc<Generation>>,
    flows: FlowTable,
    counters: Counters,
    shared: Arc<SharedCounters>,
    plumbing: Plumbing<P::Buf>,
    /// Port of the burst being processed (where replies go back out).
    rx_port: u16,
    /// Each port's own MAC under the current generation (`None`: the
    /// generation names no link for the port, so no frame is refused).
    link_macs: Vec<Option<[u8; 6]>>,
    /// `rx_port`'s MAC as the low 48 bits of a little-endian load of a
    /// frame's first 8 bytes, if known (set with `rx_port`, read per
    /// packet).
    rx_mac: Option<u64>,
    burst: Vec<P::Buf>,
    tx: Vec<Vec<P::Buf>>,
    epoch: Instant,
    cfg: WorkerConfig,
    /// Flow-table inserts and removals so far (a batched burst's first-pass
    /// lookups are stale once this moves).
    mutations: u64,
    /// Per-endpoint counters, indexed like the current generation's endpoints.
    ep: Vec<EndpointCounters>,
    /// Spare vector for remapping `ep` at a generation switch.
    ep_spare: Vec<EndpointCounters>,
    requests: Option<Receiver<WorkerRequest>>,
    memo: ServiceMemo,
    /// ICMP errors this worker may still send.
    icmp_limit: answer::TokenBucket,
    /// Connection recycling (S2) over this worker's flows.
    recycler: recycle::Recycler,
    /// A flow snapshot waiting for the generation it was saved for.
    pending_restore: Option<(Vec<SavedFlow>, u64, crossbeam_channel::Sender<Restored>)>,
    /// What an idle sleep polls (ports' events, the doorbell), kept to
    /// sleep without allocating.
    pollfds: Vec<libc::pollfd>,
}

/// The 48 bits of a MAC address in a `u64`; all ones is broadcast.
const MAC_MASK: u64 = 0xffff_ffff_ffff;

/// `mac` as [`Worker::addressed_to_us`] compares it.
fn mac_bits(mac: &[u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(mac);
    u64::from_le_bytes(b)
}

impl<P: Port> Worker<P> {
    pub fn new(
        cfg: WorkerConfig,
        ports: Vec<P>,
        gen: Arc<Generation>,
        gen_rx: Receiver<Arc<Generation>>,
        shared: Arc<SharedCounters>,
        plumbing: Plumbing<P::Buf>,
        epoch: Instant,
    ) -> Worker<P> {
        let seed = crate::hash::hash_words_v1(
            u64::from(cfg.id),
            epoch.elapsed().as_nanos() as u64 ^ (std::process::id() as u64) << 32,
            0x7ab1e,
        );
        let nports = ports.len();
        Worker {
            id: cfg.id,
            n_workers: cfg.workers.max(1),
            ports,
            gen,
            gen_rx,
            flows: FlowTable::new(cfg.flow_capacity, cfg.timeouts, seed),
            counters: Counters::default(),
            shared,
            plumbing,
            rx_port: 0,
            link_macs: Vec::new(),
            rx_mac: None,
            burst: Vec::with_capacity(BATCH),
            tx: (0..nports).map(|_| Vec::with_capacity(BATCH * 2)).collect(),
            epoch,
            cfg,
            mutations: 0,
            ep: Vec::new(),
            ep_spare: Vec::new(),
            requests: None,
            memo: ServiceMemo::new(),
            icmp_limit: answer::TokenBucket::new(
                answer::ICMP_ERRORS_PER_SEC,
                answer::ICMP_ERRORS_BURST,
            ),
            recycler: recycle::Recycler::default(),
            pending_restore: None,
            pollfds: Vec::with_capacity(nports + 1),
        }
        .with_endpoint_counters()
    }

    fn with_endpoint_counters(mut self) -> Self {
        self.ep = vec![EndpointCounters::default(); self.gen.endpoint_count()];
        self.refresh_link_macs();
        self.recycler.configure(&self.gen, self.n_workers);
        self.shared
            .flow_capacity
            .store(self.flows.capacity() as u64, Ordering::Relaxed);
        self
    }

    /// The flow table, for invariant checks (fuzz targets, tests).
    #[doc(hidden)]
    pub fn flow_table(&self) -> &FlowTable {
        &self.flows
    }

    /// Lets the control thread query this worker (flows, endpoint counters).
    pub fn with_requests(mut self, rx: Receiver<WorkerRequest>) -> Self {
        self.requests = Some(rx);
        self
    }

    /// Answers pending control requests (between bursts).
    fn serve_requests(&mut self, now: Tick) {
        let Some(rx) = &self.requests else {
            return;
        };
        // A few per poll: a burst of requests must not starve the data path.
        let mut restore = None;
        for _ in 0..4 {
            let req = match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.requests = None;
                    return;
                }
            };
            // A requester that gave up has dropped its receiver: nothing to do.
            match req {
                WorkerRequest::LookupFlow { key, reply } => {
                    let h = self.flows.hash(&key);
                    let info = self
                        .flows
                        .lookup(&key, h)
                        .map(|id| FlowInfo::new(self.id, &key, self.flows.entry(id), now));
                    let _ = reply.send(info);
                }
                WorkerRequest::DumpFlows { limit, reply } => {
                    let v = self
                        .flows
                        .iter()
                        .take(limit)
                        .map(|(_, k, e)| FlowInfo::new(self.id, k, e, now))
                        .collect();
                    let _ = reply.send(v);
                }
                WorkerRequest::EndpointStats { reply } => {
                    let _ = reply.send(EndpointReport::new(self.id, &self.gen, &self.ep));
                }
                WorkerRequest::SaveFlows { reply } => {
                    let v = self
                        .flows
                        .iter()
                        .map(|(_, k, e)| SavedFlow {
                            key: *k,
                            backend_addr: e.backend_addr,
                            backend_port: e.backend_port,
                            state: e.state,
                            age_ms: clamp_age(now.wrapping_sub(e.created)),
                            idle_ms: clamp_age(e.idle_ms(now).max(0) as u32),
                            client_isn: e.client_isn,
                            assured: e.is_assured(),
                            client_next: e.client_next,
                            backend_next: e.backend_next,
                        })
                        .collect();
                    let _ = reply.send(v);
                }
                // Needs the worker mutably, and the generation it is for.
                WorkerRequest::RestoreFlows {
                    flows,
                    generation,
                    reply,
                } => {
                    restore = Some((flows, generation, reply));
                    break;
                }
            }
        }
        if let Some(r) = restore {
            self.pending_restore = Some(r);
            self.restore_when_ready(now);
        }
    }

    /// Restores a pending snapshot once the worker runs its generation
    /// (called after each generation switch, before any packet).
    fn restore_when_ready(&mut self, now: Tick) {
        let ready = self
            .pending_restore
            .as_ref()
            .is_some_and(|(_, g, _)| self.gen.number >= *g);
        if !ready {
            return;
        }
        if let Some((flows, _, reply)) = self.pending_restore.take() {
            let r = self.restore_flows(flows, now);
            let _ = reply.send(r);
        }
    }

    /// Puts a snapshot's flows (those this worker owns) back in the table,
    /// pinned to their saved backends by address and port; see
    /// [`crate::flow::save`].
    fn restore_flows(&mut self, flows: Vec<SavedFlow>, now: Tick) -> Restored {
        let mut r = Restored::default();
        let g = &*self.gen;
        for f in flows {
            let vip = crate::service::VipKey {
                addr: f.key.vip_addr,
                port: f.key.vip_port,
                proto: f.key.proto,
            };
            let Some(svc) = g.service_for(&vip) else {
                r.no_service += 1;
                continue;
            };
            let hash = self.flows.hash(&f.key);
            let flags = if f.assured { FlowEntry::ASSURED } else { 0 };
            let timeout = FlowEntry {
                state: f.state,
                flags,
                ..FlowEntry::new(0, 0, f.state, 0)
            }
            .timeout(self.flows.timeouts());
            if f.idle_ms > timeout || self.flows.lookup(&f.key, hash).is_some() {
                r.stale += 1;
                continue;
            }
            let ep = g.find_endpoint(svc, f.backend_addr, f.backend_port);
            let entry = FlowEntry {
                backend_addr: f.backend_addr,
                backend_port: f.backend_port,
                state: f.state,
                flags,
                // A backend the configuration lost is pinned to no
                // endpoint: an entry of an older generation, which the
                // next packet resolves by address (and finds gone).
                endpoint: ep.unwrap_or(0),
                generation: match ep {
                    Some(_) => g.number as u32,
                    None => (g.number as u32).wrapping_sub(1),
                },
                created: now.wrapping_sub(clamp_age(f.age_ms)),
                last_seen: now.wrapping_sub(clamp_age(f.idle_ms)),
                client_isn: f.client_isn,
                client_next: f.client_next,
                backend_next: f.backend_next,
                client_hop: crate::service::NO_HOP,
            };
            let mut ctx = forward::FlowCtx {
                flows: &mut self.flows,
                counters: &mut self.counters,
                mutations: &mut self.mutations,
                ep: &mut self.ep,
            };
            if !forward::admit(&mut ctx, g, f.key, hash, entry, now) {
                r.table_full += 1;
                continue;
            }
            r.backend_gone += u64::from(ep.is_none());
            r.restored += 1;
        }
        r
    }

    /// Reads each port's MAC from the current generation.
    fn refresh_link_macs(&mut self) {
        let gen = &self.gen;
        self.link_macs = (0..self.ports.len())
            .map(|p| {
                u16::try_from(p)
                    .ok()
                    .and_then(|p| gen.link(p))
                    .map(|l| l.mac.0)
            })
            .collect();
        self.set_rx_port(self.rx_port);
    }

    /// The port the next packets arrived on (and its MAC, for the filter).
    #[inline]
    fn set_rx_port(&mut self, port: u16) {
        self.rx_port = port;
        self.rx_mac = self
            .link_macs
            .get(usize::from(port))
            .copied()
            .flatten()
            .map(|m| mac_bits(&m));
    }

    /// Whether `frame` is addressed to the port it arrived on: its MAC, or
    /// broadcast (ARP requests). A port in promiscuous mode also sees
    /// unicast meant for other hosts (a switch flooding a MAC it has not
    /// learnt); forwarding those would duplicate the flow on every instance
    /// of a segment.
    #[inline(always)]
    fn addressed_to_us(&self, frame: &[u8]) -> bool {
        let Some(mac) = self.rx_mac else {
            return true;
        };
        // One load and a mask rather than a byte compare: this runs for
        // every packet.
        let Some(head) = frame.first_chunk::<8>() else {
            return true; // too short: the parser's to refuse
        };
        let dst = u64::from_le_bytes(*head) & MAC_MASK;
        dst == mac || dst == MAC_MASK
    }

    /// Milliseconds on the worker clock (read once per poll, never per packet).
    #[inline]
    fn now(&self) -> Tick {
        self.epoch.elapsed().as_millis() as Tick
    }

    /// Takes the newest published generation, if any, and acknowledges it.
    #[inline]
    fn switch_generation(&mut self) {
        let mut newest = None;
        while let Ok(g) = self.gen_rx.try_recv() {
            newest = Some(g);
        }
        if let Some(g) = newest {
            // O(what changed): only endpoint chunks the new generation did
            // not share with the old one are looked at.
            query::remap_endpoint_counters(&self.gen, &g, &mut self.ep, &mut self.ep_spare);
            // The old generation is freed when its last holder (this worker
            // or the control thread) drops it: publication is the Arc swap,
            // acknowledged below, never a rule about timing.
            self.gen = g;
            self.refresh_link_macs();
            self.memo.clear();
            self.recycler.configure(&self.gen, self.n_workers);
            self.shared
                .generation
                .store(self.gen.number, Ordering::Release);
        }
    }

    /// Runs until the stop flag is set; returns the final counters.
    pub fn run(mut self) -> Counters {
        if let Some(core) = self.cfg.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        // Naps (ports without receive events) end within a microsecond of
        // their deadline rather than the default 50 us of timer slack.
        wait::set_timer_slack(Duration::from_micros(1));
        self.shared
            .generation
            .store(self.gen.number, Ordering::Release);
        if self.cfg.wait_for_configuration {
            while self.gen.number == 0
                && self.gen_rx.is_empty()
                && !self.plumbing.stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let mut empty_polls = 0u32;
        let mut polls = 0u32;
        while !self.plumbing.stop.load(Ordering::Relaxed) {
            let got = self.poll_once();
            polls = polls.wrapping_add(1);
            if got == 0 {
                empty_polls = empty_polls.saturating_add(1);
                self.counters.idle_polls += 1;
                match self.cfg.idle {
                    IdlePolicy::Backoff {
                        spin_polls,
                        sleep_us,
                    } if empty_polls > spin_polls => {
                        self.publish_counters();
                        self.sleep(Duration::from_micros(u64::from(sleep_us)));
                    }
                    _ => {
                        if empty_polls % 64 == 0 {
                            self.publish_counters();
                        }
                        std::hint::spin_loop();
                    }
                }
            } else {
                empty_polls = 0;
                if polls % 16 == 0 {
                    self.publish_counters();
                }
            }
            // A busy worker looks at its links every few thousand polls (the
            // ports rate-limit their own checks); an idle one after each
            // sleep (in `sleep`).
            if polls % 4096 == 0 {
                self.check_links(false);
            }
        }
        self.publish_counters();
        self.counters
    }

    /// Whether anything but the ports has work for this worker: a
    /// generation, a request, handed-over or injected frames, a stop.
    fn has_pending_work(&self) -> bool {
        let id = self.id as usize;
        self.plumbing.stop.load(Ordering::Relaxed)
            || !self.gen_rx.is_empty()
            || self.requests.as_ref().is_some_and(|r| !r.is_empty())
            || self.plumbing.inboxes.get(id).is_some_and(|q| !q.is_empty())
            || self.plumbing.injects.get(id).is_some_and(|q| !q.is_empty())
            || self
                .plumbing
                .reinjects
                .get(id)
                .is_some_and(|q| !q.is_empty())
    }

    /// An idle worker's sleep: blocked until a port has frames, the
    /// doorbell rings, or the idle tick passes (`nap` when a port has no
    /// event to block on). The doorbell is armed before the last look at
    /// the queues, so a ring after that look always wakes the sleep.
    fn sleep(&mut self, nap: Duration) {
        let bell = self.plumbing.doorbells.get(self.id as usize).cloned();
        if let Some(b) = &bell {
            b.arm();
        }
        if self.has_pending_work() {
            if let Some(b) = &bell {
                b.disarm(false);
            }
            return;
        }
        self.pollfds.clear();
        self.pollfds
            .extend(bell.as_ref().and_then(|b| b.fd()).map(wait::readable));
        let mut all_ports_wake = true;
        let mut quiet = true;
        for p in &mut self.ports {
            match p.rx_event_fd() {
                Some(fd) => {
                    quiet &= p.arm_rx_event();
                    self.pollfds.push(wait::readable(fd));
                }
                None => all_ports_wake = false,
            }
        }
        let timeout = if all_ports_wake && bell.as_ref().is_some_and(|b| b.fd().is_some()) {
            IDLE_TICK
        } else {
            nap.min(IDLE_TICK)
        };
        if !quiet {
            self.pollfds.clear();
        }
        let start = Instant::now();
        if quiet {
            wait::wait_readable(&mut self.pollfds, timeout);
        }
        for p in &mut self.ports {
            p.disarm_rx_event();
        }
        // A port whose event polled as an error (a socket whose interface
        // went down) is checked at once; the others at their own pace.
        let first_port = usize::from(bell.as_ref().is_some_and(|b| b.fd().is_some()));
        let failed = self.pollfds[first_port.min(self.pollfds.len())..]
            .iter()
            .any(|p| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0);
        self.check_links(quiet && failed);
        if let Some(b) = &bell {
            // The bell's pollfd is the first one when it has a descriptor.
            let rung = quiet
                && b.fd().is_some()
                && self
                    .pollfds
                    .first()
                    .is_some_and(|p| p.revents & libc::POLLIN != 0);
            b.disarm(rung);
        }
        // Woken by the clock, not by work: the table ages as it would have
        // over the polls a busy worker makes meanwhile.
        if quiet && timeout == IDLE_TICK && start.elapsed() >= timeout {
            let now = self.now();
            self.expire(now, self.cfg.expire_budget * IDLE_EXPIRE_FACTOR);
        }
    }

    /// Lets each port check its link and counts the re-opens (see
    /// [`Port::check_link`]).
    fn check_links(&mut self, now: bool) {
        for p in &mut self.ports {
            if p.check_link(now) {
                self.counters.port_reopens += 1;
            }
        }
    }

    /// Ages up to `budget` flow-table slots.
    fn expire(&mut self, now: Tick, budget: usize) {
        let (g, ep) = (&*self.gen, &mut self.ep);
        let expired = self
            .flows
            .expire_each(now, budget, |k, e| forward::forget(g, ep, k, e));
        self.counters.flows_expired += expired as u64;
    }

    fn publish_counters(&mut self) {
        self.shared.publish(&self.counters);
        self.shared
            .flows_active
            .store(self.flows.len() as u64, Ordering::Relaxed);
    }

    /// One pass over every port and the handoff inbox; returns the number of
    /// packets processed.
    pub fn poll_once(&mut self) -> usize {
        let now = self.now();
        self.poll_at(now)
    }

    /// [`Worker::poll_once`] at a given time on the worker clock
    /// (milliseconds): for the fuzz targets and tests that drive time
    /// themselves.
    #[doc(hidden)]
    pub fn poll_at(&mut self, now: Tick) -> usize {
        self.switch_generation();
        self.restore_when_ready(now);
        self.serve_requests(now);
        self.counters.polls += 1;
        let mut total = 0;
        for port in 0..self.ports.len() {
            let mut burst = std::mem::take(&mut self.burst);
            let n = self.ports[port].rx_burst(&mut burst, BATCH);
            if n > 0 {
                self.counters.rx_packets += n as u64;
                self.counters.rx_bytes += burst.iter().map(|b| b.len() as u64).sum::<u64>();
                self.set_rx_port(port as u16);
                self.process_burst(&mut burst, now, false);
                total += n;
            }
            self.burst = burst;
        }
        total += self.drain_inbox(now);
        total += self.drain_reinjects(now);
        if self.recycler.on {
            let budget = if total == 0 {
                recycle::SCAN_IDLE
            } else {
                recycle::SCAN_BUSY
            };
            self.recycle_scan(now, budget);
        }
        self.send_injected();
        self.flush_tx();
        self.expire(now, self.cfg.expire_budget);
        total
    }

    fn drain_inbox(&mut self, now: Tick) -> usize {
        let inbox = self.plumbing.inboxes[self.id as usize].clone();
        let mut total = 0;
        let mut burst = std::mem::take(&mut self.burst);
        loop {
            // Handed-over frames are grouped by arrival port so replies go
            // back out the right one.
            let Some((port, first)) = inbox.pop() else {
                break;
            };
            burst.push(first);
            while burst.len() < BATCH {
                match inbox.pop() {
                    Some((p, b)) if p == port => burst.push(b),
                    Some(other) => {
                        // Different port: process what we have first.
                        if inbox.push(other).is_err() {
                            self.counters.drop(DropReason::HandoffFull);
                        }
                        break;
                    }
                    None => break,
                }
            }
            let n = burst.len();
            self.counters.handoffs_in += n as u64;
            self.set_rx_port(port);
            self.process_burst(&mut burst, now, true);
            total += n;
            if total >= 4 * BATCH {
                break;
            }
        }
        self.burst = burst;
        total
    }

    /// Held frames whose neighbor is now known, processed again from the
    /// start (in order, grouped by arrival port); they were counted as
    /// received when they first came in.
    fn drain_reinjects(&mut self, now: Tick) -> usize {
        let id = self.id as usize;
        if self
            .plumbing
            .reinjects
            .get(id)
            .map_or(true, |q| q.is_empty())
        {
            return 0;
        }
        let q = self.plumbing.reinjects[id].clone();
        let mut burst = std::mem::take(&mut self.burst);
        let mut total = 0;
        let mut port = None;
        while let Some((p, bytes)) = q.pop() {
            if port.is_some_and(|cur| cur != p) || burst.len() == BATCH {
                self.set_rx_port(port.unwrap_or(p));
                total += burst.len();
                self.process_burst(&mut burst, now, true);
            }
            port = Some(p);
            let Some(dev) = self.ports.get_mut(usize::from(p)) else {
                self.counters.drop(DropReason::NoRoute);
                continue;
            };
            let Some(mut b) = dev.alloc() else {
                self.counters.drop(DropReason::NoBuffer);
                continue;
            };
            match b.extend(bytes.len()) {
                Some(room) => {
                    room.copy_from_slice(&bytes);
                    burst.push(b);
                }
                None => {
                    self.counters.drop(DropReason::NoBuffer);
                    dev.free(b);
                }
            }
        }
        if let Some(p) = port {
            self.set_rx_port(p);
            total += burst.len();
            self.process_burst(&mut burst, now, true);
        }
        self.burst = burst;
        total
    }

    /// One pass over the burst, packet by packet in arrival order: the
    /// common case (a mid-flow packet of a known flow, see
    /// [`Worker::fast_forward`]) is rewritten in place at once; anything else
    /// takes the general path for that packet alone. On tables too large for
    /// the cache, a first pass looks the whole burst's flows up together
    /// ([`Worker::pre_lookup`]) so their cache misses overlap instead of
    /// queueing one per packet.
    fn process_burst(&mut self, burst: &mut Vec<P::Buf>, now: Tick, handed: bool) {
        // Frames for other hosts first, as a pass of its own over the burst
        // (a load and a compare each): per packet in the paths below, the
        // same check cost several times that.
        if self.rx_mac.is_some() && !burst.iter().all(|b| self.addressed_to_us(b.data())) {
            self.drop_not_ours(burst);
        }
        if self.cfg.mac_swap_only {
            for mut b in burst.drain(..) {
                let mut eth = EthernetFrame::new_unchecked(b.data_mut());
                let (s, d) = (eth.src_addr(), eth.dst_addr());
                eth.set_src_addr(d);
                eth.set_dst_addr(s);
                self.tx[self.rx_port as usize].push(b);
            }
            return;
        }
        if !self.cfg.fast_path {
            for b in burst.drain(..) {
                self.general(b, now, handed, PreLookup::default());
            }
            return;
        }
        if self.flows.capacity() < BATCHED_LOOKUP_MIN_FLOWS {
            // In cache: each packet looked up on its own (the loop the
            // compiler specialises for "no first pass").
            for mut b in burst.drain(..) {
                let none = PreLookup::default();
                match self.fast_path(b.data_mut(), now, handed, none) {
                    Some(port) => self.tx[usize::from(port)].push(b),
                    None => self.general(b, now, handed, none),
                }
            }
            return;
        }
        let mut pre = [PreLookup::default(); BATCH];
        self.pre_lookup(burst, &mut pre);
        // A flow created or removed by an earlier packet of this burst makes
        // the first pass's answers stale: they count only while this holds.
        let mutations = self.mutations;
        for (i, mut b) in burst.drain(..).enumerate() {
            let pre = match pre.get(i) {
                Some(p) if self.mutations == mutations => *p,
                _ => PreLookup::default(),
            };
            match self.fast_path(b.data_mut(), now, handed, pre) {
                Some(port) => self.tx[usize::from(port)].push(b),
                None => self.general(b, now, handed, pre),
            }
        }
    }

    /// Drops (and counts) the frames of `burst` addressed to other hosts.
    #[cold]
    #[inline(never)]
    fn drop_not_ours(&mut self, burst: &mut Vec<P::Buf>) {
        let mut kept = Vec::with_capacity(burst.len());
        for b in burst.drain(..) {
            if self.addressed_to_us(b.data()) {
                kept.push(b);
            } else {
                self.counters.drop(DropReason::NotOurMac);
                self.ports[usize::from(self.rx_port)].free(b);
            }
        }
        *burst = kept;
    }

    /// First pass of a batched burst: every fast-path packet's flow hash and
    /// flow, looked up together ([`FlowTable::lookup_batch`]: all hints,
    /// then all hinted slots, then hashbrown for the rest, each a loop of
    /// independent loads) so the burst's cache misses overlap. A packet's
    /// direction comes from the memos alone (a packet they do not know is
    /// left to the second pass).
    #[inline]
    fn pre_lookup(&self, burst: &[P::Buf], pre: &mut [PreLookup; BATCH]) {
        let mut keys = [FlowKey::default(); BATCH];
        let mut hashes = [0u64; BATCH];
        let mut at = [0u8; BATCH];
        let mut reply = [false; BATCH];
        let mut n = 0;
        for (i, b) in burst.iter().enumerate().take(BATCH) {
            let Some(Ok(p)) = parse::parse_common(b.data()) else {
                continue;
            };
            let vip = crate::service::VipKey {
                addr: p.dst,
                port: p.dport,
                proto: p.o.proto,
            };
            let backend = crate::service::VipKey {
                addr: p.src,
                port: p.sport,
                proto: p.o.proto,
            };
            keys[n] = if self.memo.cached_vip(&vip).is_some() {
                p.forward_key()
            } else if let Some(svc) = self.memo.cached_backend(&backend) {
                reply[n] = true;
                p.reply_key(&self.gen.service(svc).key)
            } else {
                continue;
            };
            hashes[n] = self.flows.hash(&keys[n]);
            at[n] = i as u8;
            n += 1;
        }
        let mut ids = [None; BATCH];
        self.flows
            .lookup_batch(&keys[..n], &hashes[..n], &mut ids[..n]);
        for j in 0..n {
            if let Some(p) = pre.get_mut(usize::from(at[j])) {
                *p = PreLookup {
                    hash: Some(hashes[j]),
                    id: ids[j],
                    reply: reply[j],
                };
            }
        }
    }

    /// The forward flow of `p` as (hash, slot): the batched first pass's
    /// answer when it has one, else a lookup now.
    #[inline(always)]
    fn find_flow(&self, p: &Parsed, pre: PreLookup) -> (u64, Option<FlowId>) {
        if let PreLookup {
            hash: Some(h),
            id,
            reply: false,
        } = pre
        {
            return (h, id);
        }
        let key = p.forward_key();
        let hash = self.flows.hash(&key);
        (hash, self.flows.lookup(&key, hash))
    }

    /// The general path for one packet: every verdict, every drop reason.
    /// `pre` is the first pass's lookup, if still valid.
    #[inline(never)]
    fn general(&mut self, mut b: P::Buf, now: Tick, handed: bool, pre: PreLookup) {
        let verdict = match self.lookup_stage(b.data(), handed, pre) {
            Stage::Drop(r) => Verdict::Drop(r),
            Stage::Punt => Verdict::Punt,
            Stage::Handoff(w) => Verdict::Handoff { worker: w },
            Stage::Forward(p, l) => self.forward(b.data_mut(), &p, l, now),
            Stage::Reply(p) => self.reply(b.data_mut(), &p, now),
            Stage::Icmp(p) => self.icmp(b.data_mut(), &p),
        };
        self.dispatch(b, verdict, now);
    }

    #[inline]
    fn lookup_stage(&self, frame: &[u8], handed: bool, pre: PreLookup) -> Stage {
        let p = match parse(frame) {
            Ok(p) => p,
            Err(None) => return Stage::Punt,
            Err(Some(r)) => return Stage::Drop(r),
        };
        match classify(&self.gen, &self.memo, &p) {
            Ok(Class::Forward { svc }) => {
                let owner = owner_worker(p.src, p.sport, self.n_workers);
                if owner != self.id && !handed {
                    return Stage::Handoff(owner);
                }
                let (hash, id) = self.find_flow(&p, pre);
                Stage::Forward(p, Lookup { svc, hash, id })
            }
            Ok(Class::Reply) => {
                let owner = owner_worker(p.dst, p.dport, self.n_workers);
                if owner != self.id && !handed {
                    return Stage::Handoff(owner);
                }
                Stage::Reply(p)
            }
            Ok(Class::Icmp) => Stage::Icmp(p),
            Err(r) => Stage::Drop(r),
        }
    }

    /// Sends, hands over, punts or drops one packet. Every drop, whatever
    /// the verdict that led to it, goes through the `Drop` arm: counted once,
    /// buffer returned to the port.
    #[inline]
    fn dispatch(&mut self, b: P::Buf, v: Verdict, now: Tick) {
        match v {
            Verdict::Forward { port } => match self.tx.get_mut(usize::from(port)) {
                Some(q) => q.push(b),
                None => self.dispatch(b, Verdict::Drop(DropReason::NoRoute), now),
            },
            Verdict::Answer(a) => self.answer(b, a, now),
            Verdict::Drop(r) => {
                // A frame for a next hop being resolved waits on the control
                // thread instead (a copy: rare, and data-path buffers must
                // not be parked); dropped only when that queue is full.
                if r == DropReason::NeighborUnresolved && self.hold(&b) {
                    self.counters.punted += 1;
                } else {
                    self.counters.drop(r);
                }
                self.ports[self.rx_port as usize].free(b);
            }
            Verdict::Handoff { worker } => {
                let refused = match self.plumbing.inboxes.get(worker as usize) {
                    Some(q) => q.push((self.rx_port, b)).err().map(|(_, b)| b),
                    None => Some(b),
                };
                match refused {
                    None => {
                        self.counters.handoffs_out += 1;
                        self.plumbing.wake(worker as usize);
                    }
                    Some(b) => self.dispatch(b, Verdict::Drop(DropReason::HandoffFull), now),
                }
            }
            Verdict::Punt => {
                if self
                    .plumbing
                    .punts
                    .push((self.rx_port, b.data().to_vec()))
                    .is_ok()
                {
                    self.plumbing.control_bell.ring();
                    self.counters.punted += 1;
                    self.ports[self.rx_port as usize].free(b);
                } else {
                    self.dispatch(b, Verdict::Drop(DropReason::PuntFull), now);
                }
            }
        }
    }

    /// Builds `a` in `b` and sends it back out the port it came in on (or
    /// drops it for the answer's reason). Rare, and kept out of `dispatch`
    /// so the forwarding verdicts stay small.
    #[cold]
    #[inline(never)]
    fn answer(&mut self, mut b: P::Buf, a: Answer, now: Tick) {
        let v = match answer::build(&mut b, a, &mut self.icmp_limit, now, &mut self.counters) {
            Ok(()) => Verdict::Forward { port: self.rx_port },
            Err(r) => Verdict::Drop(r),
        };
        self.dispatch(b, v, now);
    }

    /// Hands a copy of `b` to the control thread to wait for its neighbor;
    /// `false` if the queue is full.
    fn hold(&self, b: &P::Buf) -> bool {
        let held = Held {
            worker: self.id,
            port: self.rx_port,
            frame: b.data().to_vec(),
        };
        let queued = self.plumbing.held.push(held).is_ok();
        if queued {
            self.plumbing.control_bell.ring();
        }
        queued
    }

    /// Frames the control thread asked this worker to send.
    fn send_injected(&mut self) {
        let Some(q) = self.plumbing.injects.get(self.id as usize) else {
            return;
        };
        while let Some((port, bytes)) = q.pop() {
            let Some(p) = self.ports.get_mut(usize::from(port)) else {
                self.counters.drop(DropReason::NoRoute);
                continue;
            };
            let Some(mut b) = p.alloc() else {
                self.counters.drop(DropReason::NoBuffer);
                continue;
            };
            match b.extend(bytes.len()) {
                Some(room) => {
                    room.copy_from_slice(&bytes);
                    self.counters.answered += 1;
                    self.tx[usize::from(port)].push(b);
                }
                None => {
                    self.counters.drop(DropReason::NoBuffer);
                    p.free(b);
                }
            }
        }
    }

    fn flush_tx(&mut self) {
        for (port, q) in self.tx.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            let bytes: u64 = q.iter().map(|b| b.len() as u64).sum();
            let sent = self.ports[port].tx_burst(q);
            self.counters.tx_packets += sent as u64;
            if q.is_empty() {
                self.counters.tx_bytes += bytes;
            } else {
                let unsent: u64 = q.iter().map(|b| b.len() as u64).sum();
                self.counters.tx_bytes += bytes - unsent;
                for b in q.drain(..) {
                    self.counters.drop(DropReason::TxFull);
                    self.ports[port].free(b);
                }
            }
        }
    }

    /// The worker's counters so far (tests and benchmarks drive workers
    /// with `poll_once` on their own thread).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Per-endpoint counters, indexed like the current generation's
    /// endpoints (tests read them; the control thread asks by query).
    pub fn endpoint_counters(&self) -> &[EndpointCounters] {
        &self.ep
    }

    /// Flow-table occupancy.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The table entry of flow `key`, if this worker has one (tests, and
    /// what `explain` is given through a flow lookup).
    pub fn flow_entry(&self, key: &FlowKey) -> Option<FlowEntry> {
        let h = self.flows.hash(key);
        self.flows.lookup(key, h).map(|id| *self.flows.entry(id))
    }

    /// The generation this worker runs.
    pub fn generation(&self) -> &Arc<Generation> {
        &self.gen
    }

    /// The ports (tests read their stats).
    pub fn ports(&self) -> &[P] {
        &self.ports
    }
}

/// An age in milliseconds kept below 2^30, so a restored timestamp
/// (`now - age`) still reads as in the past on the wrapping clock.
fn clamp_age(ms: u32) -> u32 {
    ms.min(1 << 30)
}
