//! The prober: one thread, one epoll loop, every probe a non-blocking
//! kernel TCP socket.
//!
//! Probes are kernel sockets, not frames from sluice's data path: the
//! kernel's TCP does the handshake, retransmissions and teardown, and the
//! probes leave through whatever kernel interface routes to the backends
//! (the management interface in a deployment where the data interfaces
//! belong to sluice). Workers never see probe traffic: no flow entries, no
//! counters, no per-packet branch for it.
//!
//! Each target (endpoint address and check) is probed once per interval at
//! a fixed phase derived from its identity, so 100,000 targets at 1 s make
//! an even 100 probes a millisecond rather than one burst a second. The
//! same endpoint checked the same way by several services is probed once.
//! Probes in flight are bounded (file descriptors): a probe that cannot
//! start on time waits and is counted `late`. Connections are closed with
//! a RST (SO_LINGER 0), as HAProxy closes its checks, so probing leaves no
//! TIME_WAIT sockets behind on either side.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::state::Tracker;
use crate::service::{CheckKind, HealthCheck, HealthState};

const WAKER: Token = Token(0);
/// Longest HTTP status line read before the probe is failed.
const MAX_STATUS_LINE: usize = 2048;

/// What the control thread asks of the prober.
#[derive(Debug)]
pub enum Command {
    /// From now on, check `endpoints` of `service` with `check` (`None`:
    /// stop checking the service). Verdicts about them carry `epoch`.
    Set {
        service: Arc<str>,
        epoch: u64,
        check: Option<HealthCheck>,
        endpoints: Vec<SocketAddrV4>,
    },
}

/// A changed verdict on an endpoint, for one service checking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub service: Arc<str>,
    pub epoch: u64,
    pub endpoint: SocketAddrV4,
    pub state: HealthState,
    /// Why the last probe failed, for a `down` verdict.
    pub reason: Option<String>,
}

/// The prober's counters (read by the control thread for stats and
/// metrics).
#[derive(Debug, Default)]
pub struct ProberStats {
    pub probes_ok: AtomicU64,
    pub probes_failed: AtomicU64,
    /// Probes that started more than a tenth of their interval late, or
    /// were skipped because the previous one had not finished.
    pub probes_late: AtomicU64,
    /// Probes that could not start for a local reason (no file descriptor
    /// or local port left): no verdict is drawn from them.
    pub local_errors: AtomicU64,
    pub in_flight: AtomicU64,
    /// Distinct targets probed.
    pub targets: AtomicU64,
    /// The prober thread's kernel thread id (for CPU accounting).
    pub tid: AtomicU64,
}

/// The running prober thread.
pub struct Prober {
    thread: Option<JoinHandle<()>>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    stats: Arc<ProberStats>,
}

impl Prober {
    /// Starts the thread. Verdicts go to `verdicts`, and `notify` wakes
    /// the control loop after each batch of them.
    pub fn spawn(
        notify: Arc<Waker>,
        verdicts: Sender<Verdict>,
        max_in_flight: usize,
    ) -> std::io::Result<Prober> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProberStats::default());
        let limit = max_in_flight.min(raise_fd_limit() / 2).max(16);
        let mut lp = ProbeLoop {
            poll,
            commands: rx,
            verdicts,
            notify,
            stop: stop.clone(),
            stats: stats.clone(),
            max_in_flight: limit,
            targets: Vec::new(),
            target_epochs: Vec::new(),
            free_targets: Vec::new(),
            index: HashMap::new(),
            subscriptions: HashMap::new(),
            due: BinaryHeap::new(),
            probes: Vec::new(),
            probe_epochs: Vec::new(),
            free_probes: Vec::new(),
            deadlines: BinaryHeap::new(),
            out: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("sluice-health".into())
            .spawn(move || {
                // Threads inherit their creator's class, and the control
                // thread is real-time: probing must time-share, never hold
                // a core against workers or the control thread.
                if let Err(e) = crate::control::sched::set_current_thread(
                    crate::control::ControlPriority::Normal,
                ) {
                    tracing::warn!(error = %e, "health prober keeps the control thread's class");
                }
                lp.stats.tid.store(current_tid(), Ordering::Relaxed);
                lp.run()
            })?;
        tracing::info!(max_in_flight = limit, "health prober started");
        Ok(Prober {
            thread: Some(thread),
            commands: tx,
            waker,
            stop,
            stats,
        })
    }

    pub fn send(&self, cmd: Command) {
        if self.commands.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn stats(&self) -> &ProberStats {
        &self.stats
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The calling thread's kernel id, from /proc (no FFI needed).
fn current_tid() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime
/// and nginx do): probes in flight are sockets. Returns the soft limit in
/// force.
fn raise_fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit the call only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

type TargetKey = (SocketAddrV4, Arc<HealthCheck>);

struct Target {
    addr: SocketAddrV4,
    check: Arc<HealthCheck>,
    /// The HTTP request, built once.
    request: Option<Arc<[u8]>>,
    tracker: Tracker,
    /// Services checking this target, with their subscription epochs.
    subscribers: Vec<(Arc<str>, u64)>,
    probing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Receiving,
}

struct Probe {
    target: u32,
    target_epoch: u32,
    stream: TcpStream,
    phase: Phase,
    started: Instant,
    sent: usize,
    buf: Vec<u8>,
}

struct ProbeLoop {
    poll: Poll,
    commands: Receiver<Command>,
    verdicts: Sender<Verdict>,
    notify: Arc<Waker>,
    stop: Arc<AtomicBool>,
    stats: Arc<ProberStats>,
    max_in_flight: usize,
    /// Targets by slot; a slot's epoch changes when it is freed, so stale
    /// schedule entries and probes are recognised.
    targets: Vec<Option<Target>>,
    target_epochs: Vec<u32>,
    free_targets: Vec<u32>,
    index: HashMap<TargetKey, u32>,
    /// Service -> (epoch, target slots).
    subscriptions: HashMap<Arc<str>, (u64, Vec<u32>)>,
    /// When each target's next probe is due: (due, slot, epoch).
    due: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    probes: Vec<Option<Probe>>,
    probe_epochs: Vec<u32>,
    free_probes: Vec<u32>,
    /// When each probe in flight times out: (deadline, slot, epoch).
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    out: Vec<Verdict>,
}

/// The outcome of one probe.
enum Outcome {
    Ok,
    Failed(String),
    /// A local shortage (descriptors, ports): no verdict.
    Local(String),
}

impl ProbeLoop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let next = [
                self.due.peek().map(|Reverse((t, _, _))| *t),
                self.deadlines.peek().map(|Reverse((t, _, _))| *t),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "health prober poll failed; probing stops");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.advance(ev.token().0 as u32 - 1);
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd);
            }
            let now = Instant::now();
            self.expire(now);
            self.launch(now);
            if !self.out.is_empty() {
                for v in self.out.drain(..) {
                    let _ = self.verdicts.send(v);
                }
                let _ = self.notify.wake();
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let Command::Set {
            service,
            epoch,
            check,
            endpoints,
        } = cmd;
        let now = Instant::now();
        let old = self.subscriptions.remove(&service);
        // Subscribe first, release after: a target this service keeps is
        // never freed in between, so its verdict and run carry over.
        if let Some(check) = check {
            let check = Arc::new(check);
            let mut slots = Vec::with_capacity(endpoints.len());
            for addr in endpoints {
                let key = (addr, check.clone());
                let slot = match self.index.get(&key) {
                    Some(&s) => s,
                    None => self.add_target(key, now),
                };
                let Some(t) = self.targets[slot as usize].as_mut() else {
                    continue;
                };
                t.subscribers.retain(|(s, _)| *s != service);
                t.subscribers.push((service.clone(), epoch));
                // A target already judged tells the new subscriber at once.
                if t.tracker.state() != HealthState::Unknown {
                    self.out.push(Verdict {
                        service: service.clone(),
                        epoch,
                        endpoint: t.addr,
                        state: t.tracker.state(),
                        reason: None,
                    });
                }
                slots.push(slot);
            }
            if let Some((_, old_slots)) = &old {
                self.release(&service, old_slots, Some(&slots));
            }
            self.subscriptions.insert(service, (epoch, slots));
        } else if let Some((_, old_slots)) = &old {
            self.release(&service, old_slots, None);
        }
        self.stats
            .targets
            .store(self.index.len() as u64, Ordering::Relaxed);
    }

    fn add_target(&mut self, key: TargetKey, now: Instant) -> u32 {
        let (addr, check) = key.clone();
        let request = (check.kind == CheckKind::Http).then(|| http_request(addr, &check));
        let t = Target {
            addr,
            check: check.clone(),
            request,
            tracker: Tracker::default(),
            subscribers: Vec::new(),
            probing: false,
        };
        let slot = match self.free_targets.pop() {
            Some(s) => {
                self.targets[s as usize] = Some(t);
                s
            }
            None => {
                self.targets.push(Some(t));
                self.target_epochs.push(0);
                (self.targets.len() - 1) as u32
            }
        };
        // A fixed phase within the interval, from the target's identity:
        // probes spread evenly and keep their spacing.
        let interval = u64::from(check.interval_ms);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let phase = Duration::from_millis(h.finish() % interval);
        self.due.push(Reverse((
            now + phase,
            slot,
            self.target_epochs[slot as usize],
        )));
        self.index.insert(key, slot);
        slot
    }

    /// Drops `service` from the targets in `slots` (but those in `keep`);
    /// targets nobody checks any more are freed.
    fn release(&mut self, service: &Arc<str>, slots: &[u32], keep: Option<&[u32]>) {
        for &slot in slots {
            if keep.is_some_and(|k| k.contains(&slot)) {
                continue;
            }
            let Some(t) = self.targets[slot as usize].as_mut() else {
                continue;
            };
            t.subscribers.retain(|(s, _)| s != service);
            if t.subscribers.is_empty() {
                let key = (t.addr, t.check.clone());
                self.index.remove(&key);
                self.targets[slot as usize] = None;
                self.target_epochs[slot as usize] =
                    self.target_epochs[slot as usize].wrapping_add(1);
                self.free_targets.push(slot);
            }
        }
    }

    fn target_alive(&self, slot: u32, epoch: u32) -> bool {
        self.target_epochs.get(slot as usize) == Some(&epoch)
            && self.targets[slot as usize].is_some()
    }

    /// Starts the probes that are due, as far as the in-flight bound
    /// allows.
    fn launch(&mut self, now: Instant) {
        while let Some(&Reverse((due, slot, epoch))) = self.due.peek() {
            if due > now {
                return;
            }
            if !self.target_alive(slot, epoch) {
                self.due.pop();
                continue;
            }
            let in_flight = self.probes.len() - self.free_probes.len();
            if in_flight >= self.max_in_flight {
                // Waits for a probe to finish; the loop comes back then.
                return;
            }
            self.due.pop();
            let Some(t) = self.targets[slot as usize].as_ref() else {
                continue;
            };
            let interval = Duration::from_millis(u64::from(t.check.interval_ms));
            let mut next = due + interval;
            let late = now.duration_since(due) > interval / 10;
            if next <= now {
                next = now + interval;
            }
            self.due.push(Reverse((next, slot, epoch)));
            if late || t.probing {
                self.stats.probes_late.fetch_add(1, Ordering::Relaxed);
            }
            if t.probing {
                continue;
            }
            let addr = t.addr;
            match connect(addr) {
                Ok(stream) => self.track_probe(slot, epoch, stream, now),
                Err(Outcome::Local(e)) => {
                    self.stats.local_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %addr, error = %e, "health probe not started");
                }
                Err(o) => self.judge(slot, o),
            }
        }
    }

    fn track_probe(&mut self, slot: u32, epoch: u32, mut stream: TcpStream, now: Instant) {
        let idx = match self.free_probes.pop() {
            Some(i) => i,
            None => {
                self.probes.push(None);
                self.probe_epochs.push(0);
                (self.probes.len() - 1) as u32
            }
        };
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(idx as usize + 1), Interest::WRITABLE)
        {
            self.free_probes.push(idx);
            self.stats.local_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "health probe not registered");
            return;
        }
        let timeout = match self.targets[slot as usize].as_mut() {
            Some(t) => {
                t.probing = true;
                Duration::from_millis(u64::from(t.check.timeout_ms))
            }
            None => return,
        };
        self.probes[idx as usize] = Some(Probe {
            target: slot,
            target_epoch: epoch,
            stream,
            phase: Phase::Connecting,
            started: now,
            sent: 0,
            buf: Vec::new(),
        });
        self.deadlines.push(Reverse((
            now + timeout,
            idx,
            self.probe_epochs[idx as usize],
        )));
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves a probe on after a readiness event.
    fn advance(&mut self, idx: u32) {
        let Some(p) = self.probes.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(t) = self.targets.get(p.target as usize).and_then(Option::as_ref) else {
            self.finish(idx, None);
            return;
        };
        let outcome = step(p, t);
        if let Some(o) = outcome {
            self.finish(idx, Some(o));
        } else if let Some(p) = self.probes[idx as usize].as_mut() {
            let interest = match p.phase {
                Phase::Connecting | Phase::Sending => Interest::WRITABLE,
                Phase::Receiving => Interest::READABLE,
            };
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut p.stream, Token(idx as usize + 1), interest);
        }
    }

    /// Fails the probes whose time is up.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, idx, epoch))) = self.deadlines.peek() {
            if deadline > now {
                return;
            }
            self.deadlines.pop();
            if self.probe_epochs[idx as usize] != epoch {
                continue;
            }
            // One last look before failing it: when the prober runs late
            // (a busy machine, more ready sockets than one poll returns), a
            // probe may have succeeded and not been read yet. Only what
            // the backend did decides, never how late we looked.
            let slot = self.probes[idx as usize].as_ref().map(|p| p.target);
            let last = match (
                self.probes[idx as usize].as_mut(),
                slot.and_then(|t| self.targets.get(t as usize)),
            ) {
                (Some(p), Some(Some(t))) => step(p, t),
                _ => None,
            };
            if let Some(o) = last {
                self.finish(idx, Some(o));
                continue;
            }
            let Some(p) = self.probes[idx as usize].as_ref() else {
                continue;
            };
            let ms = now.duration_since(p.started).as_millis();
            let why = match p.phase {
                Phase::Connecting => format!("connect: no answer within {ms} ms"),
                Phase::Sending => format!("request not sent within {ms} ms"),
                Phase::Receiving => format!("no HTTP status line within {ms} ms"),
            };
            self.finish(idx, Some(Outcome::Failed(why)));
        }
    }

    /// Ends probe `idx` (its socket closes with a RST) and judges its
    /// target by `outcome`.
    fn finish(&mut self, idx: u32, outcome: Option<Outcome>) {
        let Some(p) = self.probes[idx as usize].take() else {
            return;
        };
        // Closing the socket takes it out of the epoll set (Linux, no
        // duplicated descriptor): no deregister call, one syscall less per
        // probe.
        drop(p.stream);
        self.probe_epochs[idx as usize] = self.probe_epochs[idx as usize].wrapping_add(1);
        self.free_probes.push(idx);
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.target_alive(p.target, p.target_epoch) {
            return;
        }
        if let Some(t) = self.targets[p.target as usize].as_mut() {
            t.probing = false;
        }
        match outcome {
            Some(Outcome::Local(e)) => {
                self.stats.local_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "health probe failed locally");
            }
            Some(o) => self.judge(p.target, o),
            None => {}
        }
    }

    /// Counts a probe's result against its target; a changed verdict goes
    /// to every service checking it.
    fn judge(&mut self, slot: u32, outcome: Outcome) {
        let Some(t) = self.targets[slot as usize].as_mut() else {
            return;
        };
        let (ok, reason) = match outcome {
            Outcome::Ok => (true, None),
            Outcome::Failed(why) => (false, Some(why)),
            Outcome::Local(_) => return,
        };
        let counter = if ok {
            &self.stats.probes_ok
        } else {
            &self.stats.probes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(state) = t.tracker.record(ok, t.check.rise, t.check.fall) {
            for (service, epoch) in &t.subscribers {
                self.out.push(Verdict {
                    service: service.clone(),
                    epoch: *epoch,
                    endpoint: t.addr,
                    state,
                    reason: reason.clone(),
                });
            }
        }
    }
}

/// Starts a non-blocking connection to `addr`, closed with a RST when
/// dropped.
fn connect(addr: SocketAddrV4) -> Result<TcpStream, Outcome> {
    let local = |e: std::io::Error| Outcome::Local(e.to_string());
    let sock = Socket::new(
        Domain::IPV4,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(local)?;
    sock.set_linger(Some(Duration::ZERO)).map_err(local)?;
    match sock.connect(&SockAddr::from(SocketAddr::V4(addr))) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(classify(e, "connect")),
    }
    Ok(TcpStream::from_std(sock.into()))
}

/// Whether an error is the endpoint's (a failed probe) or ours (no
/// verdict: running out of descriptors or local ports says nothing about
/// the backend).
fn classify(e: std::io::Error, what: &str) -> Outcome {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL) => {
            Outcome::Local(format!("{what}: {e}"))
        }
        _ => Outcome::Failed(format!("{what}: {e}")),
    }
}

/// The request an HTTP check sends: HTTP/1.0 and `Connection: close`, so
/// any server answers and nothing is kept open.
fn http_request(addr: SocketAddrV4, check: &HealthCheck) -> Arc<[u8]> {
    let host = match &check.host {
        Some(h) => h.clone(),
        None if addr.port() == 80 => addr.ip().to_string(),
        None => addr.to_string(),
    };
    format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sluice-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.http_path()
    )
    .into_bytes()
    .into()
}

/// One step of a probe after a readiness event: its outcome once known.
fn step(p: &mut Probe, t: &Target) -> Option<Outcome> {
    loop {
        match p.phase {
            Phase::Connecting => {
                match p.stream.take_error() {
                    Ok(Some(e)) | Err(e) => return Some(classify(e, "connect")),
                    Ok(None) => {}
                }
                match p.stream.peer_addr() {
                    Ok(_) => {}
                    // Not connected yet: a spurious wake-up.
                    Err(e) if e.kind() == ErrorKind::NotConnected => return None,
                    Err(e) => return Some(classify(e, "connect")),
                }
                match &t.request {
                    None => return Some(Outcome::Ok),
                    Some(_) => p.phase = Phase::Sending,
                }
            }
            Phase::Sending => {
                let req = t.request.as_deref().unwrap_or_default();
                while p.sent < req.len() {
                    match p.stream.write(&req[p.sent..]) {
                        Ok(0) => return Some(Outcome::Failed("send: connection closed".into())),
                        Ok(n) => p.sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Some(classify(e, "send")),
                    }
                }
                p.phase = Phase::Receiving;
                return None;
            }
            Phase::Receiving => {
                let mut chunk = [0u8; 1024];
                loop {
                    match p.stream.read(&mut chunk) {
                        Ok(0) => {
                            return Some(status(&p.buf, t.check.http_expect()).unwrap_or_else(
                                || {
                                    Outcome::Failed(
                                        "connection closed before an HTTP status line".into(),
                                    )
                                },
                            ))
                        }
                        Ok(n) => {
                            p.buf.extend_from_slice(&chunk[..n]);
                            if let Some(o) = status(&p.buf, t.check.http_expect()) {
                                return Some(o);
                            }
                            if p.buf.len() > MAX_STATUS_LINE {
                                return Some(Outcome::Failed(format!(
                                    "no HTTP status line in the first {MAX_STATUS_LINE} bytes"
                                )));
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Some(classify(e, "receive")),
                    }
                }
            }
        }
    }
}

/// The verdict of an HTTP answer once its status line is complete.
fn status(buf: &[u8], expect: u16) -> Option<Outcome> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&buf[..nl]);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    Some(match code {
        Some(c) if version.starts_with("HTTP/") && c == expect => Outcome::Ok,
        Some(c) if version.starts_with("HTTP/") => {
            Outcome::Failed(format!("HTTP status {c}, expected {expect}"))
        }
        _ => Outcome::Failed(format!("not an HTTP status line: {line:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_judged_against_the_expected_code() {
        assert!(status(b"HTTP/1.1 200 OK\r\n", 200).is_some_and(|o| matches!(o, Outcome::Ok)));
        assert!(status(b"HTTP/1.0 204\r\n", 204).is_some_and(|o| matches!(o, Outcome::Ok)));
        match status(b"HTTP/1.1 503 Service Unavailable\r\n", 200) {
            Some(Outcome::Failed(m)) => assert_eq!(m, "HTTP status 503, expected 200"),
            _ => panic!("503 is a failure"),
        }
        assert!(status(b"HTTP/1.1 200 O", 200).is_none(), "incomplete line");
        match status(b"SSH-2.0-OpenSSH\r\n", 200) {
            Some(Outcome::Failed(m)) => assert!(m.contains("not an HTTP status line"), "{m}"),
            _ => panic!("not HTTP"),
        }
    }

    #[test]
    fn http_requests_carry_the_path_and_host() {
        let mut c = HealthCheck::new(CheckKind::Http);
        c.path = Some("/healthz".into());
        let a: SocketAddrV4 = "10.200.2.11:8080".parse().unwrap();
        let r = http_request(a, &c);
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("GET /healthz HTTP/1.0\r\nHost: 10.200.2.11:8080\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        c.host = Some("web.example".into());
        let r = http_request(a, &c);
        assert!(std::str::from_utf8(&r)
            .unwrap()
            .contains("Host: web.example\r\n"));
    }
}
