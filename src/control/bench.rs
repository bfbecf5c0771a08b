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

/// Runs both phases.
pub fn run(cfg: &ControlBenchConfig) -> Result<ControlBenchReport, String> {
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
            metrics: None,
            limits: Limits::default(),
            priority: ControlPriority::Realtime,
            flow_state: None,
        },
        store,
        dp,
    )
    .map_err(|e| e.to_string())?;
    let initial_build_ms = t0.elapsed().as_secs_f64() * 1e3;
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
    drop((r, wr));
    let dp = handle.shutdown().ok_or("control thread panicked")?;
    dp.stop();
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
    })
}
