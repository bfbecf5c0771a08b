//! The control thread: a mio loop serving the Unix control socket (and the
//! optional Prometheus listener), applying changes with group commit and
//! firing drain deadlines.
//!
//! Nothing a client does can hold the loop: sockets are non-blocking, input
//! lines and buffered output are bounded per connection, the number of
//! connections is bounded, and a client that stops reading is dropped once
//! its unsent replies pass the bound. The only waits are on the workers
//! (bounded by the publish and query timeouts).

use std::collections::HashMap;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::arp::{ArpLink, ArpTimers, HoldLimits, HoldQueue, Neighbors};
use super::config::Config;
use super::protocol::{ErrorBody, ErrorKind, Outcome, Request, Response, MAX_LINE};
use super::query::{self, Sampler};
use super::sched::{self, ControlPriority};
use super::store::{Store, StoreError};
use super::Dataplane;
use crate::service::Generation;

mod ha;
mod neighbors;

pub use ha::HaOptions;

const LISTENER: Token = Token(0);
const METRICS: Token = Token(1);
const WAKER: Token = Token(2);
/// The workers' bell: a punted or held frame is waiting.
const WORKER_BELL: Token = Token(3);
const FIRST_CONN: usize = 16;
/// How often the loop looks at punted ARP frames and neighbor timers at
/// the latest: a client's ARP request waits at most this long for sluice.
const ARP_PERIOD: Duration = Duration::from_millis(20);

/// Limits on what clients may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Longest request line (newline excluded).
    pub max_line: usize,
    /// Unsent reply bytes a client may have before it is dropped.
    pub max_pending_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_line: MAX_LINE,
            max_pending_output: 64 << 20,
        }
    }
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub socket: PathBuf,
    /// Prometheus listener (already checked to be loopback or allowed).
    pub metrics: Option<SocketAddr>,
    pub limits: Limits,
    /// Scheduling class the control thread asks for (falls back to
    /// time-sharing with a warning when refused).
    pub priority: ControlPriority,
    /// Flow snapshot: restored from after the first generation is running,
    /// written when the server stops (S4c; see `flow::save`).
    pub flow_state: Option<PathBuf>,
}

/// Why the control server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another sluice is serving {0} (it answered a connection); stop it or use another control.socket")]
    InUse(PathBuf),
    #[error("{path} exists and is not a socket; remove it or use another control.socket")]
    NotASocket { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the control loop: {0}")]
    Io(#[from] std::io::Error),
    #[error("initial configuration: {0}")]
    Store(#[from] StoreError),
    #[error("bgp: {0}")]
    Bgp(String),
}

/// The running control thread.
pub struct ControlHandle<B: Send + 'static> {
    thread: Option<JoinHandle<Dataplane<B>>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    socket: PathBuf,
    metrics: Option<SocketAddr>,
}

impl<B: Send + 'static> ControlHandle<B> {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The metrics listener's bound address (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Stops serving, removes the socket file and hands the data plane back.
    pub fn shutdown(mut self) -> Option<Dataplane<B>> {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl<B: Send + 'static> Drop for ControlHandle<B> {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            let _ = self.waker.wake();
            let _ = t.join();
        }
    }
}

/// Entry points.
pub struct ControlServer;

impl ControlServer {
    /// Serves `config`'s socket (and metrics) for `dataplane`, after
    /// publishing `config`'s services to it.
    pub fn spawn<B: Send + 'static>(
        config: &Config,
        config_path: Option<PathBuf>,
        dataplane: Dataplane<B>,
    ) -> Result<ControlHandle<B>, ServerError> {
        let store = Store::from_config(config, config_path)?;
        let ha = HaOptions {
            bgp: match &config.bgp {
                Some(b) => Some(
                    b.settings(config)
                        .map_err(|e| ServerError::Bgp(e.to_string()))?,
                ),
                None => None,
            },
        };
        let opts = ServerOptions {
            socket: config.control.socket.clone(),
            metrics: config.control.metrics,
            limits: Limits::default(),
            priority: config.control.priority,
            flow_state: config.control.flow_state_path(),
        };
        ControlServer::spawn_with_ha(opts, ha, store, dataplane)
    }

    /// Serves `opts.socket` for `dataplane`, after publishing `store`'s
    /// services to it.
    pub fn spawn_with<B: Send + 'static>(
        opts: ServerOptions,
        store: Store,
        dataplane: Dataplane<B>,
    ) -> Result<ControlHandle<B>, ServerError> {
        ControlServer::spawn_with_ha(opts, HaOptions::default(), store, dataplane)
    }

    /// [`ControlServer::spawn_with`], announcing VIPs over BGP when `ha`
    /// says so.
    pub fn spawn_with_ha<B: Send + 'static>(
        opts: ServerOptions,
        ha: HaOptions,
        mut store: Store,
        mut dataplane: Dataplane<B>,
    ) -> Result<ControlHandle<B>, ServerError> {
        let poll = Poll::new()?;
        let mut listener = bind_socket(&opts.socket)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut metrics = match opts.metrics {
            Some(addr) => {
                let mut l = TcpListener::bind(addr)
                    .map_err(|source| ServerError::Metrics { addr, source })?;
                poll.registry()
                    .register(&mut l, METRICS, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        let metrics_addr = match &mut metrics {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        if let Some(fd) = dataplane.control_bell().fd() {
            poll.registry()
                .register(&mut SourceFd(&fd), WORKER_BELL, Interest::READABLE)?;
        }
        let mut neighbors = Neighbors::new(
            store
                .topology()
                .links
                .iter()
                .map(|l| ArpLink {
                    mac: l.mac,
                    addr: l.addr,
                    prefix_len: l.prefix_len,
                })
                .collect(),
            ArpTimers::default(),
        );
        for &(ip, mac) in &store.topology().neighbors {
            neighbors.add_static(ip, mac);
        }
        let neighbor_file = neighbors::neighbor_file(&opts.socket);
        neighbors::restore_neighbors(&neighbor_file, &mut neighbors, &mut store);
        // A snapshot goes to the workers before the first generation, so
        // they restore it before they forward anything with it.
        let restoring = opts
            .flow_state
            .as_deref()
            .and_then(|path| send_restore(path, &dataplane));
        if let Err(e) = store.publish_all(&mut dataplane) {
            let _ = std::fs::remove_file(&opts.socket);
            return Err(e.into());
        }
        if let Some((path, saved, pending)) = restoring {
            report_restore(&path, saved, pending);
        }
        let ha = match ha::Ha::start(ha, waker.clone()) {
            Ok(h) => h,
            Err(e) => {
                let _ = std::fs::remove_file(&opts.socket);
                return Err(e);
            }
        };
        tracing::info!(socket = %opts.socket.display(), generation = dataplane.current().number, "control socket ready");
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop {
            poll,
            listener,
            metrics,
            conns: Vec::new(),
            live: 0,
            store,
            dp: dataplane,
            sampler: Sampler::default(),
            limits: opts.limits,
            stop: stop.clone(),
            socket: opts.socket.clone(),
            arp: neighbors,
            arp_epoch: Instant::now(),
            arp_seen: None,
            arp_hops: HashMap::new(),
            ha,
            holds: HoldQueue::new(HoldLimits::default()),
            neighbor_file,
        };
        // Tell the segments where sluice's addresses and VIPs live.
        let garp = lp.arp.announce();
        lp.send_arp(garp);
        let priority = opts.priority;
        let flow_state = opts.flow_state.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-control".into())
            .spawn(move || {
                let wait = sched::apply_or_warn(priority);
                lp.dp.set_wait(wait);
                lp.run();
                if let Some(path) = &flow_state {
                    save_flows(path, &lp.dp);
                }
                lp.dp
            })?;
        Ok(ControlHandle {
            thread: Some(thread),
            waker,
            stop,
            socket: opts.socket,
            metrics: metrics_addr,
        })
    }
}

/// How long a worker may take to hand over or take back its flows.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the flow snapshot at `path`, if there is one, and sends its flows
/// to the workers, to be restored under the generation about to be
/// published. A snapshot that cannot be read is reported and ignored:
/// sluice starts with empty tables (mid-flow packets then go where Maglev
/// says, S4a).
fn send_restore<B: Send + 'static>(
    path: &Path,
    dp: &Dataplane<B>,
) -> Option<(PathBuf, usize, super::publish::PendingRestore)> {
    match crate::flow::save::take(path) {
        Ok(None) => None,
        Ok(Some(flows)) => {
            let saved = flows.len();
            match dp.send_restore(flows, dp.current().number + 1, SNAPSHOT_TIMEOUT) {
                Ok(p) => Some((path.to_path_buf(), saved, p)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "flows not restored");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the flow snapshot");
            None
        }
    }
}

/// Waits for the workers' restores and logs what they did.
fn report_restore(path: &Path, saved: usize, pending: super::publish::PendingRestore) {
    match pending.wait(SNAPSHOT_TIMEOUT) {
        Ok(r) => tracing::info!(
            path = %path.display(),
            saved,
            restored = r.restored,
            backend_gone = r.backend_gone,
            no_service = r.no_service,
            stale = r.stale,
            table_full = r.table_full,
            "flows restored"
        ),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "flows not restored"),
    }
}

/// Writes every worker's flows to `path` on a planned stop.
fn save_flows<B: Send + 'static>(path: &Path, dp: &Dataplane<B>) {
    let result = dp
        .save_flows(SNAPSHOT_TIMEOUT)
        .map_err(|e| e.to_string())
        .and_then(|flows| {
            crate::flow::save::save(path, &flows)
                .map(|()| flows.len())
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(flows) => tracing::info!(path = %path.display(), flows, "flows saved"),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "flows not saved"),
    }
}

/// Binds the control socket: owner-only, refusing a live instance's socket
/// and replacing a crashed one's.
fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    let sock_err = |source| ServerError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(sock_err)?;
            // A directory we create is ours alone: no window in which
            // someone else can reach the socket before its chmod.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(sock_err)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServerError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == IoKind::ConnectionRefused => {
                tracing::warn!(socket = %path.display(), "removing stale control socket (no one listening)");
                std::fs::remove_file(path).map_err(sock_err)?;
            }
            Err(e) => return Err(sock_err(e)),
        },
        Err(e) if e.kind() == IoKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    // If another instance binds between our check and here, bind fails with
    // "address in use": two instances never share a path silently.
    let l = UnixListener::bind(path).map_err(sock_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(sock_err)?;
    Ok(l)
}

enum Stream {
    Control(UnixStream),
    Http(TcpStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Control(s) => s.read(buf),
            Stream::Http(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Control(s) => s.write(buf),
            Stream::Http(s) => s.write(buf),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Control(s) => s,
            Stream::Http(s) => s,
        }
    }
}

struct Conn {
    stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already sent.
    sent: usize,
    /// Close once `output` is sent (EOF seen, a fatal error, HTTP done).
    closing: bool,
    /// Registered for writable events.
    writable: bool,
}

/// A request (or its decoding error) from a connection, in arrival order.
type Work = (usize, Result<Request, ErrorBody>);

struct Loop<B: Send + 'static> {
    poll: Poll,
    listener: UnixListener,
    metrics: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    live: usize,
    store: Store,
    dp: Dataplane<B>,
    sampler: Sampler,
    limits: Limits,
    stop: Arc<AtomicBool>,
    socket: PathBuf,
    /// Neighbor resolution (ARP) for the data path.
    arp: Neighbors,
    arp_epoch: Instant,
    /// Generation whose next hops and VIPs `arp` was last told about.
    arp_seen: Option<Arc<Generation>>,
    /// Next hops of that generation's endpoints, with how many endpoints
    /// use each: kept up to date over the endpoints a generation changed,
    /// so a change to one service costs that service, not a pass over
    /// every endpoint.
    arp_hops: HashMap<Ipv4Addr, u32>,
    /// Health checks and VIP announcements.
    ha: ha::Ha,
    /// Frames waiting for a neighbor's MAC (see `neighbors`).
    holds: HoldQueue<crate::worker::Held>,
    /// Where learnt neighbors are kept for the next instance.
    neighbor_file: PathBuf,
}

impl<B: Send + 'static> Loop<B> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut work: Vec<Work> = Vec::new();
        // A planned stop keeps the loop going while the VIPs are withdrawn
        // and the routers converge (see `ha_stopping`).
        while !self.stop.load(Ordering::Acquire) || self.ha_stopping() {
            let timeout = self
                .store
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(ARP_PERIOD)
                .min(ARP_PERIOD);
            self.dp.control_bell().arm();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != IoKind::Interrupted {
                    tracing::error!(error = %e, "control loop poll failed");
                    break;
                }
            }
            let rung = events.iter().any(|ev| ev.token() == WORKER_BELL);
            self.dp.control_bell().disarm(rung);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_control(),
                    METRICS => self.accept_metrics(),
                    WAKER | WORKER_BELL => {}
                    Token(t) => {
                        let i = t - FIRST_CONN;
                        if ev.is_readable() || ev.is_read_closed() {
                            self.read(i, &mut work);
                        }
                    }
                }
            }
            self.serve(&mut work);
            self.arp_step();
            let due = self.store.due_drains(Instant::now());
            if !due.is_empty() {
                let refs: Vec<&Request> = due.iter().collect();
                for (r, res) in
                    due.iter()
                        .zip(self.store.apply_batch(&mut self.dp, &refs, Instant::now()))
                {
                    match res {
                        Ok(a) => tracing::info!(
                            ?r,
                            generation = a.generation,
                            "drain deadline passed: endpoint marked down"
                        ),
                        Err(e) => {
                            tracing::warn!(?r, error = %e, "drain deadline passed but marking the endpoint down failed")
                        }
                    }
                }
            }
            self.ha_step();
            for i in 0..self.conns.len() {
                self.flush(i);
            }
        }
        self.ha.shutdown();
        let _ = std::fs::remove_file(&self.socket);
    }

    fn insert(&mut self, mut stream: Stream) {
        let i = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if self
            .poll
            .registry()
            .register(stream.source(), Token(FIRST_CONN + i), Interest::READABLE)
            .is_err()
        {
            return;
        }
        self.conns[i] = Some(Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            closing: false,
            writable: false,
        });
        self.live += 1;
    }

    fn accept_control(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut s, _)) => {
                    if self.live >= self.limits.max_connections {
                        // Best effort: the reply fits any socket buffer.
                        let r = Response::err(
                            self.dp.current().number,
                            ErrorBody::new(
                                ErrorKind::Invalid,
                                format!(
                                    "too many control connections (limit {}); try again later",
                                    self.limits.max_connections
                                ),
                            ),
                        );
                        let _ = s.write(r.to_line().as_bytes());
                        continue;
                    }
                    self.insert(Stream::Control(s));
                }
                Err(e) if e.kind() == IoKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a control connection failed");
                    return;
                }
            }
        }
    }

    fn accept_metrics(&mut self) {
        loop {
            let Some(l) = &self.metrics else { return };
            match l.accept() {
                Ok((s, _)) => {
                    if self.live >= self.limits.max_connections {
                        continue;
                    }
                    self.insert(Stream::Http(s));
                }
                Err(e) if e.kind() == IoKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    return;
                }
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(c.stream.source());
            self.live -= 1;
        }
    }

    /// Reads what the client sent; complete lines become work.
    fn read(&mut self, i: usize, work: &mut Vec<Work>) {
        let max_line = self.limits.max_line;
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if !c.closing {
                        c.input.extend_from_slice(&buf[..n]);
                    }
                    if matches!(c.stream, Stream::Control(_)) {
                        split_lines(i, c, max_line, work);
                    } else if c.input.len() > 8192 || c.input.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if let Stream::Http(_) = c.stream {
            if !c.closing && (c.input.windows(4).any(|w| w == b"\r\n\r\n") || c.input.len() > 8192)
            {
                c.closing = true;
                let ok =
                    c.input.starts_with(b"GET /metrics ") || c.input.starts_with(b"GET /metrics?");
                let body = if ok {
                    query::metrics_text(&self.dp, &self.store).map(|mut t| {
                        t.push_str(&ha::metrics(&self.ha, &self.store));
                        t
                    })
                } else {
                    Err(ErrorBody::new(
                        ErrorKind::UnknownOp,
                        "only GET /metrics is served\n",
                    ))
                };
                let c = self.conns[i].as_mut().map(|c| &mut c.output);
                if let Some(out) = c {
                    let (status, ctype, text) = match body {
                        Ok(t) => ("200 OK", "text/plain; version=0.0.4", t),
                        Err(e) if ok => ("503 Service Unavailable", "text/plain", e.message),
                        Err(e) => ("404 Not Found", "text/plain", e.message),
                    };
                    out.extend_from_slice(
                        format!("HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", text.len()).as_bytes(),
                    );
                    out.extend_from_slice(text.as_bytes());
                }
            } else if eof {
                self.close(i);
            }
            return;
        }
        if eof {
            // A partial line from a client that went away is dropped: it
            // never reached the store, so nothing changed.
            c.closing = true;
            c.input.clear();
        }
    }

    /// Answers queued work in order; runs of changes share one generation.
    fn serve(&mut self, work: &mut Vec<Work>) {
        let mut k = 0;
        while k < work.len() {
            let run_end = work[k..]
                .iter()
                .position(|(_, r)| !matches!(r, Ok(req) if req.is_mutation()))
                .map_or(work.len(), |p| k + p);
            if run_end > k {
                let reqs: Vec<&Request> = work[k..run_end]
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .collect();
                let results = self.store.apply_batch(&mut self.dp, &reqs, Instant::now());
                for ((conn, _), res) in work[k..run_end].iter().zip(results) {
                    let resp = match res {
                        Ok(a) => Response::ok(
                            a.generation,
                            Outcome::Applied {
                                apply_us: a.apply.as_micros() as u64,
                            },
                        ),
                        Err(e) => Response::err(self.dp.current().number, e.to_body()),
                    };
                    self.reply(*conn, &resp);
                }
                k = run_end;
                continue;
            }
            let (conn, r) = &work[k];
            let resp = match r {
                Err(e) => Response::err(self.dp.current().number, e.clone()),
                Ok(req) => self.query(req),
            };
            self.reply(*conn, &resp);
            k += 1;
        }
        work.clear();
    }

    fn query(&mut self, req: &Request) -> Response {
        let g = self.dp.current().number;
        let result = match req {
            Request::ServicesList => Ok(Outcome::Services {
                services: self.store.services().map(|s| (**s).clone()).collect(),
            }),
            Request::Stats => {
                query::stats(&self.dp, &self.store, &mut self.sampler).map(Outcome::Stats)
            }
            Request::FlowsCount => Ok(query::flow_count(&self.dp)),
            Request::FlowsLookup {
                client,
                vip,
                protocol,
            } => query::flow_lookup(&self.dp, *client, *vip, *protocol),
            Request::FlowsDump { limit } => query::flow_dump(&self.dp, *limit),
            Request::Explain {
                client,
                service,
                vip,
                protocol,
                syn,
            } => query::explain(
                &self.dp,
                &self.store,
                *client,
                service.as_deref(),
                *vip,
                *protocol,
                *syn,
            )
            .map(Outcome::Explain),
            Request::Digest { service } => query::digests(&self.dp, service.as_deref()),
            Request::Reload { path } => match self.store.reload(&mut self.dp, path.as_deref()) {
                Ok((a, path, services)) => {
                    tracing::info!(path = %path.display(), generation = a.generation, "configuration reloaded");
                    self.ha_reloaded(&path);
                    Ok(Outcome::Reloaded {
                        path: path.display().to_string(),
                        services,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reload refused; the running configuration stays");
                    Err(e.to_body())
                }
            },
            Request::Generation => Ok(Outcome::Generation),
            Request::Status => {
                let generation = self.dp.current().number;
                let gauges = self.dp.gauges();
                let workers_ready = gauges.iter().filter(|w| w.generation >= generation).count();
                Ok(Outcome::Status(super::protocol::Status {
                    ready: workers_ready == gauges.len(),
                    generation,
                    workers: gauges.len() as u32,
                    workers_ready: workers_ready as u32,
                    services: self.store.services().count(),
                }))
            }
            Request::Neighbors => {
                let links = &self.store.topology().links;
                let neighbors = self
                    .arp
                    .view(self.arp_epoch.elapsed())
                    .into_iter()
                    .map(|entry| super::protocol::NeighborRow {
                        interface: links
                            .get(usize::from(entry.port))
                            .map_or_else(|| format!("port {}", entry.port), |l| l.name.clone()),
                        entry,
                    })
                    .collect();
                Ok(Outcome::Neighbors { neighbors })
            }
            Request::VipList | Request::VipAnnounce { .. } | Request::VipWithdraw { .. } => {
                self.ha_query(req)
            }
            _ => Err(ErrorBody::new(
                ErrorKind::Invalid,
                "a change reached the query path",
            )),
        };
        match result {
            Ok(o) => Response::ok(self.dp.current().number.max(g), o),
            Err(e) => Response::err(self.dp.current().number, e),
        }
    }

    fn reply(&mut self, i: usize, resp: &Response) {
        let max = self.limits.max_pending_output;
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if c.output.len() - c.sent > max {
            tracing::warn!(
                conn = i,
                "control client not reading its replies; dropping it"
            );
            self.close(i);
            return;
        }
        c.output.extend_from_slice(resp.to_line().as_bytes());
        self.flush(i);
    }

    /// Sends buffered output; closes finished connections.
    fn flush(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut dead = false;
        while c.sent < c.output.len() {
            match c.stream.write(&c.output[c.sent..]) {
                Ok(0) => {
                    dead = true;
                    break;
                }
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(_) => {
                    dead = true;
                    break;
                }
            }
        }
        if c.sent == c.output.len() {
            c.output.clear();
            c.sent = 0;
        } else if c.sent > 1 << 20 {
            c.output.drain(..c.sent);
            c.sent = 0;
        }
        let pending = !c.output.is_empty();
        if dead || (c.closing && !pending) {
            self.close(i);
            return;
        }
        if pending != c.writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            c.writable = pending;
            let _ =
                self.poll
                    .registry()
                    .reregister(c.stream.source(), Token(FIRST_CONN + i), interest);
        }
    }
}

/// Moves complete lines out of `c.input` as work; an over-long line is
/// answered with an error and ends the connection (the stream cannot be
/// resynchronised reliably).
fn split_lines(i: usize, c: &mut Conn, max_line: usize, work: &mut Vec<Work>) {
    let mut start = 0;
    while let Some(nl) = c.input[start..].iter().position(|&b| b == b'\n') {
        let line = &c.input[start..start + nl];
        start += nl + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max_line {
            too_long(i, c, max_line, work);
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        work.push((i, Request::decode(line)));
    }
    c.input.drain(..start);
    if c.input.len() > max_line {
        too_long(i, c, max_line, work);
    }
}

fn too_long(i: usize, c: &mut Conn, max_line: usize, work: &mut Vec<Work>) {
    work.push((
        i,
        Err(ErrorBody::new(
            ErrorKind::LineTooLong,
            format!("request line longer than {max_line} bytes; nothing was changed and the connection is closed"),
        )),
    ));
    c.input.clear();
    c.closing = true;
}
