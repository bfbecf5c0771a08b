//! `sluice bench`: the real worker loop over the in-memory generator port.
//!
//! Each worker's port produces client->VIP TCP segments: with probability
//! `new_ratio` a SYN on a tuple never seen before, otherwise an ACK of one of
//! the worker's share of `flows` established flows, picked at random (the
//! realistic, cache-unfriendly access pattern). Flows are generated only on
//! tuples the worker owns, as an RSS-consistent NIC would deliver them. The
//! same ports then drive the baseline (rx, Ethernet address swap, tx), so the
//! pipeline's cost shows as a ratio measured in the same run.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::control::Dataplane;
use crate::hash::owner_worker;
use crate::port::mem::{FrameSource, GenPort, MemBuf};
use crate::service::{EndpointSpec, Generation, LinkSpec, Protocol, ServiceSpec, Topology};
use crate::wire::checksum;
use crate::wire::MacAddr;
use crate::worker::{Counters, WorkerConfig};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub flows: usize,
    pub new_ratio: f64,
    pub workers: usize,
    pub seconds: f64,
    pub backends: usize,
    /// Flow-table capacity per worker (default: twice the worker's flows).
    pub flow_capacity: Option<usize>,
}

/// What came out (one JSON line with `--json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub mpps_per_worker: f64,
    pub ns_per_packet: f64,
    pub flows: usize,
    pub new_ratio: f64,
    pub workers: usize,
    pub baseline_mpps_per_worker: f64,
    pub baseline_ns_per_packet: f64,
    /// mpps_per_worker / baseline_mpps_per_worker.
    pub ratio_to_baseline: f64,
    pub seconds: f64,
    pub backends: usize,
    pub flow_capacity: usize,
    pub flows_created: u64,
    pub flows_evicted: u64,
    pub table_misses: u64,
    pub drops: u64,
    pub forwarded: u64,
}

const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0xfe]);
const GEN_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x01]);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const FRAME_LEN: usize = 60;
const OFF_SRC: usize = 14 + 12;
const OFF_IP_CSUM: usize = 14 + 10;
const OFF_SPORT: usize = 34;
const OFF_FLAGS: usize = 34 + 13;
const OFF_TCP_CSUM: usize = 34 + 16;
const FLAG_SYN: u8 = 0x02;
const FLAG_ACK: u8 = 0x10;

/// The synthetic traffic of one worker.
///
/// Flow `i` of the run is the client 10.0.0.0/9 + `i >> 14`, port
/// 1024 + `i & 0x3fff`: computed, not stored, so the generator touches no
/// per-flow memory and its cost does not grow with `--flows` (a NIC writes
/// frames into memory without such cost). A worker keeps only the flows it
/// owns, by rejection (about `workers` draws per packet).
pub struct BenchTraffic {
    template: [u8; FRAME_LEN],
    /// Flows in the whole run (all workers).
    flows: u64,
    /// Next flow the warm-up pass opens; `flows` when done.
    warm: u64,
    rng: u64,
    new_threshold: u64,
    new_counter: u64,
    worker: u32,
    workers: u32,
    /// The template's flags word (data offset + flags), for checksum deltas.
    flags_word: u16,
}

fn template() -> [u8; FRAME_LEN] {
    use crate::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
    use crate::wire::ipv4::Ipv4Repr;
    use crate::wire::tcp::{TcpFlags, TcpRepr};
    let mut f = [0u8; FRAME_LEN];
    let eth = EthernetRepr {
        src_addr: GEN_MAC,
        dst_addr: LB_MAC,
        ethertype: ETHERTYPE_IPV4,
        vlan_tci: None,
    };
    eth.emit(&mut f[..]).expect("room for the header");
    let src = Ipv4Addr::UNSPECIFIED;
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: VIP,
        protocol: crate::wire::IPPROTO_TCP,
        ttl: 64,
        payload_len: 20,
        ident: 0,
        dont_fragment: true,
    };
    ip.emit(&mut f[14..34]).expect("room for the header");
    let tcp = TcpRepr {
        src_port: 0,
        dst_port: 80,
        seq_number: 0x1234_5678,
        ack_number: 0x0abc_def0,
        flags: TcpFlags(FLAG_ACK),
        window: 65535,
        payload_len: 0,
    };
    tcp.emit(&mut f[34..54], src, VIP, &[])
        .expect("room for the segment");
    f
}

/// Client address and port of flow `i` (`c` for new flows: another /9).
#[inline(always)]
fn tuple(base: u32, i: u64) -> (u32, u16) {
    (
        base | ((i >> 14) as u32 & 0x007f_ffff),
        1024 + (i & 0x3fff) as u16,
    )
}

const ESTABLISHED_BASE: u32 = 0x0a00_0000;
const NEW_BASE: u32 = 0x0a80_0000;

impl BenchTraffic {
    /// Traffic for worker `worker` of `workers`; `flows` in the whole run.
    pub fn new(worker: u32, workers: u32, flows: usize, new_ratio: f64) -> BenchTraffic {
        let new_threshold = if new_ratio >= 1.0 {
            u64::MAX
        } else {
            (new_ratio.max(0.0) * u64::MAX as f64) as u64
        };
        let template = template();
        BenchTraffic {
            flags_word: u16::from_be_bytes([template[OFF_FLAGS - 1], template[OFF_FLAGS]]),
            template,
            flows: (flows as u64).max(1),
            warm: 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(worker).wrapping_mul(0x1234_5678_9abc_def1),
            new_threshold,
            new_counter: 0,
            worker,
            workers: workers.max(1),
        }
    }

    /// Flows of the run this worker owns (what its warm-up opens).
    pub fn owned_flows(&self) -> u64 {
        (0..self.flows)
            .filter(|&i| {
                let (a, p) = tuple(ESTABLISHED_BASE, i);
                owner_worker(a, p, self.workers) == self.worker
            })
            .count() as u64
    }

    #[inline(always)]
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: cheap and good enough to scatter flow picks.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[inline(always)]
    fn owned(&self, t: (u32, u16)) -> bool {
        self.workers == 1 || owner_worker(t.0, t.1, self.workers) == self.worker
    }

    #[inline]
    fn pick(&mut self) -> (u32, u16, u8) {
        while self.warm < self.flows {
            let t = tuple(ESTABLISHED_BASE, self.warm);
            self.warm += 1;
            if self.owned(t) {
                return (t.0, t.1, FLAG_SYN);
            }
        }
        loop {
            let r = self.next_rand();
            let t = if r < self.new_threshold {
                let c = self.new_counter;
                self.new_counter = self.new_counter.wrapping_add(1);
                (tuple(NEW_BASE, c), FLAG_SYN)
            } else {
                let i = ((u128::from(self.next_rand()) * u128::from(self.flows)) >> 64) as u64;
                (tuple(ESTABLISHED_BASE, i), FLAG_ACK)
            };
            if self.owned(t.0) {
                return (t.0 .0, t.0 .1, t.1);
            }
        }
    }
}

impl FrameSource for BenchTraffic {
    #[inline]
    fn next_frame(&mut self, buf: &mut MemBuf) {
        let (addr, port, flags) = self.pick();
        let f = buf.reset(FRAME_LEN);
        f.copy_from_slice(&self.template);
        f[OFF_SRC..OFF_SRC + 4].copy_from_slice(&addr.to_be_bytes());
        f[OFF_SPORT..OFF_SPORT + 2].copy_from_slice(&port.to_be_bytes());
        f[OFF_FLAGS] = flags;
        // The template was checksummed with source 0.0.0.0:0 and ACK: one
        // delta per header covers every changed word.
        let a = checksum::delta_u32(0, addr);
        let ip_c = u16::from_be_bytes([f[OFF_IP_CSUM], f[OFF_IP_CSUM + 1]]);
        f[OFF_IP_CSUM..OFF_IP_CSUM + 2]
            .copy_from_slice(&checksum::apply_delta(ip_c, a).to_be_bytes());
        let new_word = (self.flags_word & 0xff00) | u16::from(flags);
        let d = a + checksum::delta_u16(0, port) + checksum::delta_u16(self.flags_word, new_word);
        let t = u16::from_be_bytes([f[OFF_TCP_CSUM], f[OFF_TCP_CSUM + 1]]);
        f[OFF_TCP_CSUM..OFF_TCP_CSUM + 2]
            .copy_from_slice(&checksum::apply_delta(t, d).to_be_bytes());
    }
}

/// The topology and service the benchmark runs: one link, `backends`
/// endpoints with static neighbors.
pub fn bench_generation(backends: usize) -> Generation {
    let topo = Topology {
        links: vec![LinkSpec {
            name: "bench0".into(),
            mac: LB_MAC,
            addr: Ipv4Addr::new(10, 200, 0, 254),
            prefix_len: 16,
        }],
        neighbors: (0..backends)
            .map(|i| {
                let i = i as u32 + 11;
                (
                    Ipv4Addr::from(0x0ac8_0000 + i),
                    MacAddr([0x02, 0, 0, 0, (i >> 8) as u8, i as u8]),
                )
            })
            .collect(),
        ..Default::default()
    };
    let mut svc = ServiceSpec::new("bench", VIP, 80, Protocol::Tcp);
    svc.endpoints = (0..backends)
        .map(|i| EndpointSpec::new(Ipv4Addr::from(0x0ac8_0000 + i as u32 + 11), 8080))
        .collect();
    Generation::build(1, &topo, &[svc]).expect("the benchmark's generation is valid")
}

fn sum(cs: &[Counters]) -> Counters {
    let mut t = Counters::default();
    for c in cs {
        t.add(c);
    }
    t
}

/// Runs one phase (the pipeline or the baseline); returns (Mpps per worker,
/// counters over the measured window).
fn phase(cfg: &BenchConfig, capacity: usize, mac_swap_only: bool) -> (f64, Counters) {
    let w = cfg.workers as u32;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut owned = Vec::new();
    let workers: Vec<_> = (0..w)
        .map(|i| {
            let mut wc = WorkerConfig::new(i, w);
            wc.core = cores.get(i as usize % cores.len().max(1)).map(|c| c.id);
            wc.flow_capacity = capacity;
            wc.mac_swap_only = mac_swap_only;
            let traffic = BenchTraffic::new(i, w, cfg.flows, cfg.new_ratio);
            owned.push(traffic.owned_flows());
            (wc, vec![GenPort::new(traffic)])
        })
        .collect();
    let dp = Dataplane::start(workers, bench_generation(cfg.backends));
    // Warm-up: every worker has opened its flows (the generator sends each
    // flow's SYN first) and run a little more.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = dp.counters();
        if c.iter()
            .zip(&owned)
            .all(|(c, &o)| c.rx_packets >= o + 100_000)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = dp.counters();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cfg.seconds));
    let after = dp.counters();
    let dt = t0.elapsed().as_secs_f64();
    dp.stop();
    let delta: Vec<Counters> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
    let total = sum(&delta);
    let mpps = total.rx_packets as f64 / dt / 1e6 / cfg.workers as f64;
    (mpps, total)
}

/// Runs the pipeline, then the baseline, and reports both.
pub fn run(cfg: &BenchConfig) -> BenchReport {
    let per_worker = cfg.flows.div_ceil(cfg.workers.max(1));
    let capacity = cfg
        .flow_capacity
        .unwrap_or_else(|| (per_worker * 2).max(1 << 16));
    let (mpps, c) = phase(cfg, capacity, false);
    let (base, _) = phase(cfg, capacity, true);
    BenchReport {
        mpps_per_worker: mpps,
        ns_per_packet: 1e3 / mpps,
        flows: cfg.flows,
        new_ratio: cfg.new_ratio,
        workers: cfg.workers,
        baseline_mpps_per_worker: base,
        baseline_ns_per_packet: 1e3 / base,
        ratio_to_baseline: mpps / base,
        seconds: cfg.seconds,
        backends: cfg.backends,
        flow_capacity: capacity,
        flows_created: c.flows_created,
        flows_evicted: c.flows_evicted,
        table_misses: c.table_misses,
        drops: c.total_drops(),
        forwarded: c.forwarded,
    }
}

/// Runs one worker on the calling thread until it has processed `packets`
/// packets after warm-up, with no timing and no other thread: the mode for
/// instruction counting (callgrind), where two runs with different counts
/// give instructions per packet by difference.
pub fn run_counted(flows: usize, new_ratio: f64, packets: u64, mac_swap_only: bool) -> Counters {
    use std::sync::Arc;
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let mut cfg = WorkerConfig::new(0, 1);
    cfg.flow_capacity = (flows * 2).max(1 << 16);
    cfg.mac_swap_only = mac_swap_only;
    let mut w = crate::worker::Worker::new(
        cfg,
        vec![GenPort::new(BenchTraffic::new(0, 1, flows, new_ratio))],
        Arc::new(bench_generation(16)),
        rx,
        Arc::new(crate::worker::SharedCounters::default()),
        crate::worker::Plumbing::new(1, 64),
        Instant::now(),
    );
    let target = flows as u64 + packets; // warm-up opens every flow first (one worker)
    while w.counters().rx_packets < target {
        w.poll_once();
    }
    *w.counters()
}
