//! `sluice bench-control`: endpoint changes through the real control socket
//! while workers forward generator traffic on mem ports.
//!
//! Two phases: a lone client sending one change at a time (request ->
//! "every worker runs it" latency), then several clients keeping a window of
//! requests in flight (sustained changes per second, with group commit).

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::protocol::{Request, Response};
use super::sched;
use super::{ControlPriority, ControlServer, Dataplane, Limits, ServerOptions, Store};
use crate::bench::BenchTraffic;
use crate::port::mem::GenPort;
use crate::service::{EndpointSpec, Generation, LinkSpec, Protocol, ServiceSpec, Topology};
use crate::wire::MacAddr;
use crate::worker::WorkerConfig;

/// What to run.
#[derive(Clone, Debug)]
pub struct ControlBenchConfig {
    pub services: usize,
    pub endpoints: usize,
    pub workers: usize,
    pub seconds: f64,
    /// Clients in the throughput phase.
    pub clients: usize,
    /// Requests each client keeps in flight.
    pub window: usize,
    /// How many distinct services the changes touch (1 = a rolling update
    /// of one service; `services` = spread at random over all).
    pub spread: usize,
    pub table_size: u32,
    /// Established flows the generator replays (split over workers).
    pub flows: usize,
    /// TCP health checks of every endpoint at this interval (ms), against
    /// listeners the bench opens on every service's backend port: run it
    /// where 10.200.0.0/16 is local (scripts/bench_health.sh).
    pub health_interval_ms: Option<u32>,
}

/// What came out.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ControlBenchReport {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub workers: usize,
    pub table_size: u32,
    pub spread: usize,
    pub initial_build_ms: f64,
    /// Lone client: round trip of one change (request sent -> reply, which
    /// comes once every worker runs it).
    pub latency_samples: usize,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_max_us: f64,
    /// Server-side part: commit -> every worker acknowledged.
    pub apply_p50_us: f64,
    pub apply_p99_us: f64,
    /// Several clients with a window of requests in flight.
    pub changes_per_s: f64,
    pub changes_ok: u64,
    pub changes_failed: u64,
    pub generations: u64,
    pub changes_per_generation: f64,
    /// Data path meanwhile.
    pub packets: u64,
    pub mpps: f64,
    pub drops: u64,
    pub drops_by_reason: std::collections::BTreeMap<String, u64>,
    /// Scheduling the control thread asked for (`control.priority`).
    pub control_priority: String,
    /// Scheduling of the lone client (phase 1), which stands for an
    /// external controller: `normal` unless `SLUICE_BENCH_CLIENT_PRIORITY=
    /// realtime` (then its wake-ups do not wait behind busy workers either,
    /// which a real controller process would not get by default).
    pub client_priority: String,
    /// CPU over both phases, in percent of one core.
    pub cpu: CpuCost,
    /// What probing cost while both phases ran (with health checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCost>,
}

/// CPU over both phases, in percent of one core.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CpuCost {
    pub control_pct: f64,
    pub workers_pct: f64,
    pub process_pct: f64,
    pub seconds: f64,
}

/// The cost of health checks, over both phases.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HealthCost {
    pub interval_ms: u32,
    pub targets: u64,
    /// Endpoints up / down / unknown before the measurement.
    pub up: u64,
    pub down: u64,
    pub unknown: u64,
    pub probes_per_s: f64,
    pub probes_failed: u64,
    pub probes_late: u64,
    /// CPU of one core, in percent, over the measured time.
    pub prober_cpu_pct: f64,
    /// The bench's listeners accepting the probes (stand-ins for the
    /// backends' kernels and servers).
    pub acceptor_cpu_pct: f64,
    /// Prober CPU per probe, in microseconds (kernel work of the loopback
    /// handshake included).
    pub prober_us_per_probe: f64,
}

const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0xfe]);

fn endpoint_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0ac8_0000 + 11 + i as u32)
}

/// 1 service with traffic ("bench", the generator's VIP) and `services - 1`
/// others; endpoint `i` of service `s` is 10.200.0.(11+i):(1024+s), so every
/// (service, endpoint) is a distinct backend identity, as in a cluster.
fn specs(cfg: &ControlBenchConfig) -> (Topology, Vec<Arc<ServiceSpec>>) {
    let topo = Topology {
        links: vec![LinkSpec {
            name: "bench0".into(),
            mac: LB_MAC,
            addr: Ipv4Addr::new(10, 200, 0, 254),
            prefix_len: 16,
        }],
        neighbors: (0..cfg.endpoints)
            .map(|i| {
                (
                    endpoint_addr(i),
                    MacAddr([0x02, 0, 0, 0, (i >> 8) as u8, i as u8]),
                )
            })
            .collect(),
        ..Default::default()
    };
    let specs = (0..cfg.services)
        .map(|s| {
            let (name, vip) = if s == 0 {
                ("bench".to_string(), Ipv4Addr::new(198, 18, 0, 100))
            } else {
                (format!("svc{s}"), Ipv4Addr::from(0xc613_0000 + s as u32))
            };
            let mut spec = ServiceSpec::new(&name, vip, 80, Protocol::Tcp);
            spec.table_size = cfg.table_size;
            if let Some(ms) = cfg.health_interval_ms {
                let mut h = crate::service::HealthCheck::new(crate::service::CheckKind::Tcp);
                h.interval_ms = ms;
                h.timeout_ms = (ms / 2).clamp(1, 1000);
                spec.health = Some(h);
            }
            spec.endpoints = (0..cfg.endpoints)
                .map(|i| EndpointSpec::new(endpoint_addr(i), 1024 + s as u16))
                .collect();
            Arc::new(spec)
        })
        .collect();
    (topo, specs)
}

/// A small deterministic generator for which change to send.
struct Picker(u64);

impl Picker {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    fn change(&mut self, cfg: &ControlBenchConfig) -> Request {
        let s = self.next(cfg.spread.min(cfg.services));
        let i = self.next(cfg.endpoints);
        let name = if s == 0 {
            "bench".to_string()
        } else {
            format!("svc{s}")
        };
        Request::EndpointWeight {
            service: name,
            endpoint: std::net::SocketAddrV4::new(endpoint_addr(i), 1024 + s as u16),
            weight: 1 + self.next(3) as u32,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user + system) of this process's threads whose name
/// starts with `prefix` ("" for all).
fn thread_cpu(prefix: &str) -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Fields after the command (which may hold spaces) start at ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
        total += (ticks(11) + ticks(12)) / tick;
    }
    total
}

/// CPU of the threads the health cost is split into.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    prober: f64,
    control: f64,
    acceptor: f64,
    workers: f64,
    process: f64,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            prober: thread_cpu("sluice-health"),
            control: thread_cpu("sluice-control"),
            acceptor: thread_cpu("bench-acceptor"),
            workers: thread_cpu("sluice-w"),
            process: thread_cpu(""),
        }
    }
}

/// Listeners on every service's backend port (all addresses), accepting
/// and closing what the health checks open, until dropped.
struct Acceptor {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(services: usize) -> Result<Acceptor, String> {
        use mio::net::TcpListener;
        let poll = mio::Poll::new().map_err(|e| e.to_string())?;
        let mut ls = Vec::with_capacity(services);
        for s in 0..services {
            let addr = std::net::SocketAddr::from(([0, 0, 0, 0], 1024 + s as u16));
            let mut l = TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"))?;
            poll.registry()
                .register(&mut l, mio::Token(s), mio::Interest::READABLE)
                .map_err(|e| e.to_string())?;
            ls.push(l);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-acceptor".into())
            .spawn(move || {
                let mut poll = poll;
                let mut events = mio::Events::with_capacity(1024);
                while !st.load(std::sync::atomic::Ordering::Relaxed) {
                    if poll
                        .poll(&mut events, Some(Duration::from_millis(50)))
                        .is_err()
                    {
                        return;
                    }
                    for ev in events.iter() {
                        // Accept everything pending; the probe resets it.
                        while ls[ev.token().0].accept().is_ok() {}
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Acceptor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A counter's value in Prometheus text.
fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Runs both phases.
pub fn run(cfg: &ControlBenchConfig) -> Result<ControlBenchReport, String> {
    let acceptor = match cfg.health_interval_ms {
        Some(_) => {
            let a = Acceptor::start(cfg.services)?;
            let probe = std::net::SocketAddr::from((endpoint_addr(0), 1024));
            std::net::TcpStream::connect_timeout(&probe, Duration::from_secs(1)).map_err(|e| {
                format!("{probe} does not answer ({e}): health checks need 10.200.0.0/16 local; run scripts/bench_health.sh")
            })?;
            Some(a)
        }
        None => None,
    };
    let (topo, specs) = specs(cfg);
    let w = cfg.workers as u32;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let per_worker = cfg.flows.div_ceil(cfg.workers.max(1));
    // Client -> VIP traffic to the first service (198.18.0.100:80), no
    // replies: background load for the workers while changes arrive.
    let traffic = crate::bench::BenchConfig {
        flows: per_worker * cfg.workers.max(1),
        reply_ratio: 0.0,
        workers: cfg.workers.max(1),
        ..crate::bench::BenchConfig::default()
    };
    let traffic_gen = Arc::new(crate::bench::bench_generation(1, 1));
    let workers = (0..w)
        .map(|i| {
            let mut wc = WorkerConfig::new(i, w);
            wc.core = cores.get(i as usize % cores.len().max(1)).map(|c| c.id);
            wc.flow_capacity = (per_worker * 2).max(1 << 16);
            (
                wc,
                vec![GenPort::new(BenchTraffic::new(
                    i,
                    &traffic,
                    traffic_gen.clone(),
                ))],
            )
        })
        .collect();
    let dp = Dataplane::start(workers, Generation::empty());
    let dir = std::env::temp_dir().join(format!("sluice-bench-control-{}", std::process::id()));
    let socket: PathBuf = dir.join("ctl.sock");
    let store = Store::new(topo, specs).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let handle = ControlServer::spawn_with(
        ServerOptions {
            socket: socket.clone(),
            metrics: cfg
                .health_interval_ms
                .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            limits: Limits::default(),
            priority: ControlPriority::Realtime,
            flow_state: None,
        },
        store,
        dp,
    )
    .map_err(|e| e.to_string())?;
    let initial_build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let metrics_addr = handle.metrics_addr();
    let connect = || -> Result<(BufReader<UnixStream>, UnixStream), String> {
        let s = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        Ok((BufReader::new(s), w))
    };
    let read = |r: &mut BufReader<UnixStream>| -> Result<Response, String> {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        serde_json::from_str(line.trim_end()).map_err(|e| format!("{e}: {line}"))
    };
    let generation = |r: &mut BufReader<UnixStream>, w: &mut UnixStream| -> Result<u64, String> {
        w.write_all(Request::Generation.to_line().as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(read(r)?.generation)
    };

    // Phase 1: one change at a time.
    let client_priority = match std::env::var("SLUICE_BENCH_CLIENT_PRIORITY").as_deref() {
        Ok("realtime") => ControlPriority::Realtime,
        _ => ControlPriority::Normal,
    };
    sched::set_current_thread(client_priority).map_err(|e| e.to_string())?;
    let (mut r, mut wr) = connect()?;
    let rx_total = |r: &mut BufReader<UnixStream>,
                    w: &mut UnixStream|
     -> Result<(u64, std::collections::BTreeMap<String, u64>), String> {
        w.write_all(Request::Stats.to_line().as_bytes())
            .map_err(|e| e.to_string())?;
        match read(r)?.result {
            Some(super::Outcome::Stats(s)) => Ok((
                s.workers.iter().map(|w| w.counters.rx_packets).sum(),
                s.drops,
            )),
            other => Err(format!("stats failed: {other:?}")),
        }
    };
    // Workers publish counters every few polls: let start-up drops settle.
    std::thread::sleep(Duration::from_millis(100));
    // With health checks: every endpoint gets its first verdict before
    // anything is measured.
    let mut health_counts = (0u64, 0u64, 0u64);
    if let Some(ms) = cfg.health_interval_ms {
        // Up to 30 s for the first verdicts (a prober that cannot keep the
        // interval takes longer; what remains unknown is reported).
        let deadline = Instant::now() + Duration::from_secs(30);
        std::thread::sleep(Duration::from_millis(u64::from(ms) + 200));
        loop {
            health_counts = (0, 0, 0);
            w_stats_health(&mut r, &mut wr, &mut health_counts)?;
            if health_counts.2 == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let health_start = (
        Cpu::now(),
        Instant::now(),
        metrics_addr.map(scrape).unwrap_or_default(),
    );
    let (_, drops_at_start) = rx_total(&mut r, &mut wr)?;
    let mut pick = Picker(0x9e37_79b9_7f4a_7c15);
    let mut rtt = Vec::new();
    let mut apply = Vec::new();
    let phase1 = Duration::from_secs_f64(cfg.seconds / 2.0);
    let start = Instant::now();
    while start.elapsed() < phase1 {
        let line = pick.change(cfg).to_line();
        let t = Instant::now();
        wr.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        let resp = read(&mut r)?;
        rtt.push(t.elapsed().as_secs_f64() * 1e6);
        if let Some(super::Outcome::Applied { apply_us }) = resp.result {
            apply.push(apply_us as f64);
        } else {
            return Err(format!("change refused: {resp:?}"));
        }
    }
    rtt.sort_by(f64::total_cmp);
    apply.sort_by(f64::total_cmp);
    // The throughput clients (spawned next) inherit this thread's class.
    sched::set_current_thread(ControlPriority::Normal).map_err(|e| e.to_string())?;

    // Phase 2: many in flight, counters around it.
    let g_before = generation(&mut r, &mut wr)?;
    let (rx_before, _) = rx_total(&mut r, &mut wr)?;
    let phase2 = Duration::from_secs_f64(cfg.seconds);
    let t2 = Instant::now();
    let threads: Vec<_> = (0..cfg.clients)
        .map(|k| {
            let (mut r, mut wr) = connect()?;
            let cfg = cfg.clone();
            Ok(std::thread::spawn(move || -> Result<(u64, u64), String> {
                let mut pick = Picker(0x2545_f491_4f6c_dd1d ^ ((k as u64 + 1) * 0x9e37));
                let (mut ok, mut failed, mut in_flight) = (0u64, 0u64, 0usize);
                let start = Instant::now();
                loop {
                    let sending = start.elapsed() < phase2;
                    if sending && in_flight < cfg.window {
                        let mut batch = String::new();
                        while in_flight < cfg.window {
                            batch.push_str(&pick.change(&cfg).to_line());
                            in_flight += 1;
                        }
                        wr.write_all(batch.as_bytes()).map_err(|e| e.to_string())?;
                    }
                    if in_flight == 0 {
                        break;
                    }
                    let mut line = String::new();
                    r.read_line(&mut line).map_err(|e| e.to_string())?;
                    in_flight -= 1;
                    if line.contains("\"ok\":true") {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                Ok((ok, failed))
            }))
        })
        .collect::<Result<_, String>>()?;
    let (mut ok, mut failed) = (0, 0);
    for t in threads {
        let (o, f) = t
            .join()
            .map_err(|_| "client thread panicked".to_string())??;
        ok += o;
        failed += f;
    }
    let dt = t2.elapsed().as_secs_f64();
    let (rx_after, drops_at_end) = rx_total(&mut r, &mut wr)?;
    let g_after = generation(&mut r, &mut wr)?;
    let (c0, t, m0) = health_start;
    let c1 = Cpu::now();
    let secs = t.elapsed().as_secs_f64();
    let pct = |a: f64, b: f64| 100.0 * (b - a) / secs;
    let cpu = CpuCost {
        control_pct: pct(c0.control, c1.control),
        workers_pct: pct(c0.workers, c1.workers),
        process_pct: pct(c0.process, c1.process),
        seconds: secs,
    };
    let health = match (cfg.health_interval_ms, metrics_addr) {
        (Some(ms), Some(addr)) => {
            let m1 = scrape(addr);
            let d = |prefix: &str| metric(&m1, prefix).saturating_sub(metric(&m0, prefix));
            let ok = d("sluice_health_probes_total{result=\"ok\"}");
            let failed = d("sluice_health_probes_total{result=\"failed\"}");
            Some(HealthCost {
                interval_ms: ms,
                targets: metric(&m1, "sluice_health_targets "),
                up: health_counts.0,
                down: health_counts.1,
                unknown: health_counts.2,
                probes_per_s: (ok + failed) as f64 / secs,
                probes_failed: failed,
                probes_late: d("sluice_health_probes_late_total "),
                prober_cpu_pct: pct(c0.prober, c1.prober),
                acceptor_cpu_pct: pct(c0.acceptor, c1.acceptor),
                prober_us_per_probe: (c1.prober - c0.prober) * 1e6 / (ok + failed).max(1) as f64,
            })
        }
        _ => None,
    };
    drop((r, wr));
    let dp = handle.shutdown().ok_or("control thread panicked")?;
    dp.stop();
    drop(acceptor);
    let _ = std::fs::remove_dir_all(&dir);
    let packets = rx_after.saturating_sub(rx_before);
    // Drops while changes were applied (the start-up drops everything until
    // the first generation is in place, which is not what is measured).
    let mut drops_by_reason = std::collections::BTreeMap::new();
    for (k, v) in drops_at_end {
        let d = v.saturating_sub(drops_at_start.get(&k).copied().unwrap_or(0));
        if d > 0 {
            drops_by_reason.insert(k, d);
        }
    }
    let drops = drops_by_reason.values().sum();
    let generations = g_after.saturating_sub(g_before);
    Ok(ControlBenchReport {
        services: cfg.services,
        endpoints_per_service: cfg.endpoints,
        workers: cfg.workers,
        table_size: cfg.table_size,
        spread: cfg.spread.min(cfg.services),
        initial_build_ms,
        latency_samples: rtt.len(),
        latency_p50_us: percentile(&rtt, 0.5),
        latency_p99_us: percentile(&rtt, 0.99),
        latency_max_us: rtt.last().copied().unwrap_or(0.0),
        apply_p50_us: percentile(&apply, 0.5),
        apply_p99_us: percentile(&apply, 0.99),
        changes_per_s: ok as f64 / dt,
        changes_ok: ok,
        changes_failed: failed,
        generations,
        changes_per_generation: if generations > 0 {
            ok as f64 / generations as f64
        } else {
            0.0
        },
        packets,
        mpps: packets as f64 / dt / 1e6,
        drops,
        drops_by_reason,
        control_priority: ControlPriority::Realtime.to_string(),
        client_priority: client_priority.to_string(),
        cpu,
        health,
    })
}

/// Counts endpoints up, down and unknown from a `stats` reply.
fn w_stats_health(
    r: &mut BufReader<UnixStream>,
    w: &mut UnixStream,
    counts: &mut (u64, u64, u64),
) -> Result<(), String> {
    w.write_all(Request::Stats.to_line().as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let resp: Response = serde_json::from_str(line.trim_end()).map_err(|e| e.to_string())?;
    let Some(super::Outcome::Stats(s)) = resp.result else {
        return Err("stats failed".into());
    };
    for e in s.services.iter().flat_map(|s| &s.endpoints) {
        match e.health.as_ref().map(|h| h.state) {
            Some(crate::service::HealthState::Up) => counts.0 += 1,
            Some(crate::service::HealthState::Down) => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    Ok(())
}
