//! `sluice bench`: the real worker loop over the in-memory generator port,
//! with traffic shaped like a real service's.
//!
//! Each worker's port produces, over `services` VIPs of `backends` each:
//! with probability `new_ratio` a SYN on a tuple never seen before;
//! otherwise a segment of one of `flows` established flows picked at random
//! (the cache-unfriendly pattern), a reply from its backend with
//! probability `reply_ratio` (under DNAT half the packets are replies),
//! else the client's ACK. Every flow is opened first by a full handshake
//! (SYN, the backend's SYN-ACK, ACK), so flows are assured as in life.
//!
//! Which worker's port delivers a frame follows `spread`, as a NIC would:
//! `Owner`, the queue the port's RSS computes from the client-side address
//! and port (what sluice programs where it can, so the owner receives both
//! directions); `Tuple`, a hash of the frame's own addresses and ports (a
//! NIC left to its default), where a frame reaching another worker than its
//! flow's owner is handed over and counted. With `cold`, frames are written
//! a full ring of 32,768 frames ahead of their reception, so their headers
//! come from the last-level cache as a NIC's DMA leaves them, not from L1.
//! The same ports and the same traffic then drive the baseline (rx, an
//! Ethernet address swap, tx), so the pipeline's cost shows as a ratio
//! measured in the same run.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::Dataplane;
use crate::flow::FlowKey;
use crate::hash::{hash_words_v1, owner_worker};
use crate::port::mem::{FrameSource, GenPort, MemBuf};
use crate::service::{EndpointSpec, Generation, LinkSpec, Protocol, ServiceSpec, Topology, VipKey};
use crate::wire::checksum;
use crate::wire::fixed::{IP_CSUM, IP_DST, IP_SRC, L4, L4_DPORT, L4_SPORT, TCP_CSUM, TCP_FLAGS};
use crate::wire::MacAddr;
use crate::worker::{Counters, WorkerConfig};

/// Which worker's port receives a frame (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// The flow's owner, by its client-side address and port.
    Owner,
    /// A hash of the frame's own 4-tuple.
    Tuple,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub flows: usize,
    pub new_ratio: f64,
    /// Share of established-flow packets that are backend -> client.
    pub reply_ratio: f64,
    pub services: usize,
    pub workers: usize,
    pub seconds: f64,
    /// Endpoints per service.
    pub backends: usize,
    /// Flow-table capacity per worker (default: twice its flows).
    pub flow_capacity: Option<usize>,
    pub spread: Spread,
    pub cold: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            flows: 10_000,
            new_ratio: 0.0,
            reply_ratio: 0.5,
            services: 1,
            workers: 1,
            seconds: 3.0,
            backends: 16,
            flow_capacity: None,
            spread: Spread::Owner,
            cold: false,
        }
    }
}

/// What came out (one JSON line with `--json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub mpps_per_worker: f64,
    pub ns_per_packet: f64,
    pub flows: usize,
    pub new_ratio: f64,
    pub reply_ratio: f64,
    pub services: usize,
    pub workers: usize,
    pub spread: Spread,
    pub cold: bool,
    pub baseline_mpps_per_worker: f64,
    pub baseline_ns_per_packet: f64,
    /// mpps_per_worker / baseline_mpps_per_worker.
    pub ratio_to_baseline: f64,
    /// All workers together, Mpps.
    pub mpps_total: f64,
    pub seconds: f64,
    pub backends: usize,
    pub flow_capacity: usize,
    pub flows_created: u64,
    pub flows_evicted: u64,
    pub table_misses: u64,
    pub drops: u64,
    pub forwarded: u64,
    pub replies: u64,
    /// Share of received packets handed to another worker.
    pub handoff_share: f64,
}

const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0xfe]);
const GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x01]);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const VIP_BASE: u32 = 0xc612_0064; // 198.18.0.100
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
const FRAME_LEN: usize = 60;
const FLAG_SYN: u8 = 0x02;
const FLAG_ACK: u8 = 0x10;
/// Frames a cold port keeps written ahead of reception.
pub const COLD_FRAMES: usize = 32_768;

/// The backend address of endpoint `i` of service `s`.
fn backend_addr(s: usize, i: usize) -> u32 {
    0x0ac8_0000 | ((s as u32 + 1) << 8) | (i as u32 + 11)
}

/// The topology and services the benchmark runs: one link with a gateway
/// for the clients, `services` VIPs of `backends` endpoints each (every
/// backend serves one service), neighbors static.
pub fn bench_generation(services: usize, backends: usize) -> Generation {
    let mut neighbors = vec![(GATEWAY, GW_MAC)];
    for s in 0..services {
        for i in 0..backends {
            let a = backend_addr(s, i);
            neighbors.push((
                Ipv4Addr::from(a),
                MacAddr([0x02, 0, 0, (a >> 16) as u8, (a >> 8) as u8, a as u8]),
            ));
        }
    }
    let topo = Topology {
        links: vec![LinkSpec {
            name: "bench0".into(),
            mac: LB_MAC,
            addr: Ipv4Addr::new(10, 200, 0, 254),
            prefix_len: 16,
        }],
        gateway: Some(GATEWAY),
        neighbors,
        ..Default::default()
    };
    let specs: Vec<ServiceSpec> = (0..services)
        .map(|s| {
            let mut svc = ServiceSpec::new(
                &format!("bench{s}"),
                Ipv4Addr::from(VIP_BASE + s as u32),
                VIP_PORT,
                Protocol::Tcp,
            );
            svc.endpoints = (0..backends)
                .map(|i| EndpointSpec::new(Ipv4Addr::from(backend_addr(s, i)), BACKEND_PORT))
                .collect();
            svc
        })
        .collect();
    Generation::build(1, &topo, &specs).expect("the benchmark's generation is valid")
}

/// A TCP frame with zero addresses and ports, checksummed: the frames are
/// this plus checksum deltas.
fn template() -> [u8; FRAME_LEN] {
    use crate::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
    use crate::wire::ipv4::Ipv4Repr;
    use crate::wire::tcp::{TcpFlags, TcpRepr};
    let mut f = [0u8; FRAME_LEN];
    EthernetRepr {
        src_addr: GW_MAC,
        dst_addr: LB_MAC,
        ethertype: ETHERTYPE_IPV4,
        vlan_tci: None,
    }
    .emit(&mut f[..])
    .expect("room for the header");
    let zero = Ipv4Addr::UNSPECIFIED;
    Ipv4Repr {
        src_addr: zero,
        dst_addr: zero,
        protocol: crate::wire::IPPROTO_TCP,
        ttl: 64,
        payload_len: 20,
        ident: 0,
        dont_fragment: true,
    }
    .emit(&mut f[14..L4])
    .expect("room for the header");
    TcpRepr {
        src_port: 0,
        dst_port: 0,
        seq_number: 0x1234_5678,
        ack_number: 0x0abc_def0,
        flags: TcpFlags(0),
        window: 65535,
        payload_len: 0,
    }
    .emit(&mut f[L4..L4 + 20], zero, zero, &[])
    .expect("room for the segment");
    f
}

/// Client address and port of flow `i` (`base` chooses established or new).
#[inline(always)]
fn tuple(base: u32, i: u64) -> (u32, u16) {
    (
        base | ((i >> 14) as u32 & 0x007f_ffff),
        1024 + (i & 0x3fff) as u16,
    )
}

const ESTABLISHED_BASE: u32 = 0x0a00_0000;
const NEW_BASE: u32 = 0x0a80_0000;

/// One frame to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    src: u32,
    sport: u16,
    dst: u32,
    dport: u16,
    flags: u8,
    /// Backend -> client.
    reply: bool,
}

/// The synthetic traffic of one worker's port.
///
/// Flow `i` is computed, not stored (client 10.0.0.0/9 + `i >> 14`, port
/// 1024 + `i & 0x3fff`, service `i % services`, backend by the service's
/// Maglev table as sluice picks it), so the generator touches no per-flow
/// memory and its cost does not grow with `--flows`. A port keeps only the
/// frames its queue would receive (by rejection).
pub struct BenchTraffic {
    template: [u8; FRAME_LEN],
    gen: Arc<Generation>,
    /// Service index in `gen` of service `s`, and its VIP.
    services: Vec<(u32, u32, u64)>,
    flows: u64,
    /// Warm-up position: flow `warm / steps`, step `warm % steps` of its
    /// handshake.
    warm: u64,
    /// Frames of a handshake: SYN, SYN-ACK, ACK; without replies, SYN and
    /// ACK (the flows are then not assured, as no reply is seen).
    steps: u64,
    rng: u64,
    new_threshold: u64,
    reply_threshold: u64,
    new_counter: u64,
    worker: u32,
    workers: u32,
    spread: Spread,
}

impl BenchTraffic {
    /// Traffic for worker `worker` of `cfg.workers` over `gen`'s services.
    pub fn new(worker: u32, cfg: &BenchConfig, gen: Arc<Generation>) -> BenchTraffic {
        let threshold = |r: f64| {
            if r >= 1.0 {
                u64::MAX
            } else {
                (r.max(0.0) * u64::MAX as f64) as u64
            }
        };
        let services = (0..cfg.services.max(1))
            .map(|s| {
                let vip = VIP_BASE + s as u32;
                let svc = gen
                    .service_for(&VipKey {
                        addr: vip,
                        port: VIP_PORT,
                        proto: crate::wire::IPPROTO_TCP,
                    })
                    .expect("every benchmark service is in the generation");
                (svc, vip, gen.service(svc).seed)
            })
            .collect();
        BenchTraffic {
            template: template(),
            gen,
            services,
            flows: (cfg.flows as u64).max(1),
            warm: 0,
            steps: if cfg.reply_ratio > 0.0 { 3 } else { 2 },
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(worker).wrapping_mul(0x1234_5678_9abc_def1),
            new_threshold: threshold(cfg.new_ratio),
            reply_threshold: threshold(cfg.reply_ratio),
            new_counter: 0,
            worker,
            workers: (cfg.workers as u32).max(1),
            spread: cfg.spread,
        }
    }

    /// Flows of the run whose handshake this worker's port delivers (its
    /// warm-up), for the benchmark to know when warm-up is over.
    pub fn warm_frames(&mut self) -> u64 {
        let mut n = 0;
        for i in 0..self.flows {
            for step in 0..self.steps {
                if self.mine(&self.handshake(i, step)) {
                    n += 1;
                }
            }
        }
        n
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

    /// Whether this worker's port receives `f` (see [`Spread`]).
    #[inline(always)]
    fn mine(&self, f: &Frame) -> bool {
        if self.workers == 1 {
            return true;
        }
        let queue = match self.spread {
            Spread::Owner => {
                // The client side: the source of a forward frame, the
                // destination of a reply.
                let (a, p) = if f.reply {
                    (f.dst, f.dport)
                } else {
                    (f.src, f.sport)
                };
                owner_worker(a, p, self.workers)
            }
            Spread::Tuple => {
                let h = hash_words_v1(
                    u64::from(f.src) << 32 | u64::from(f.dst),
                    u64::from(f.sport) << 16 | u64::from(f.dport),
                    0x0071_7565_7565,
                );
                ((u128::from(h) * u128::from(self.workers)) >> 64) as u32
            }
        };
        queue == self.worker
    }

    /// Client -> VIP of flow `(addr, port)` in service `s`.
    #[inline(always)]
    fn forward(&self, client: (u32, u16), s: usize, flags: u8) -> Frame {
        Frame {
            src: client.0,
            sport: client.1,
            dst: self.services[s].1,
            dport: VIP_PORT,
            flags,
            reply: false,
        }
    }

    /// Backend -> client of flow `client` in service `s`: the backend
    /// sluice's Maglev picks for it.
    #[inline(always)]
    fn reply(&self, client: (u32, u16), s: usize, flags: u8) -> Frame {
        let (svc, vip, seed) = self.services[s];
        let key = FlowKey::new(
            Ipv4Addr::from(client.0),
            client.1,
            Ipv4Addr::from(vip),
            VIP_PORT,
            crate::wire::IPPROTO_TCP,
        );
        let backend = self
            .gen
            .choose_new(svc, key.hash_v1(seed))
            .map_or(0, |e| self.gen.endpoint(e).addr);
        Frame {
            src: backend,
            sport: BACKEND_PORT,
            dst: client.0,
            dport: client.1,
            flags,
            reply: true,
        }
    }

    /// Step `step` of flow `i`'s handshake.
    fn handshake(&self, i: u64, step: u64) -> Frame {
        let t = tuple(ESTABLISHED_BASE, i);
        let s = (i % self.services.len() as u64) as usize;
        match step {
            0 => self.forward(t, s, FLAG_SYN),
            1 if self.steps == 3 => self.reply(t, s, FLAG_SYN | FLAG_ACK),
            _ => self.forward(t, s, FLAG_ACK),
        }
    }

    #[inline]
    fn pick(&mut self) -> Frame {
        while self.warm < self.flows * self.steps {
            let f = self.handshake(self.warm / self.steps, self.warm % self.steps);
            self.warm += 1;
            if self.mine(&f) {
                return f;
            }
        }
        loop {
            let r = self.next_rand();
            let f = if r < self.new_threshold {
                let c = self.new_counter;
                self.new_counter = self.new_counter.wrapping_add(1);
                self.forward(
                    tuple(NEW_BASE, c),
                    (c % self.services.len() as u64) as usize,
                    FLAG_SYN,
                )
            } else {
                let i = ((u128::from(self.next_rand()) * u128::from(self.flows)) >> 64) as u64;
                let t = tuple(ESTABLISHED_BASE, i);
                let s = (i % self.services.len() as u64) as usize;
                if self.next_rand() < self.reply_threshold {
                    self.reply(t, s, FLAG_ACK)
                } else {
                    self.forward(t, s, FLAG_ACK)
                }
            };
            if self.mine(&f) {
                return f;
            }
        }
    }
}

impl FrameSource for BenchTraffic {
    #[inline]
    fn next_frame(&mut self, buf: &mut MemBuf) {
        let f = self.pick();
        let out = buf.reset(FRAME_LEN);
        out.copy_from_slice(&self.template);
        out[IP_SRC..IP_SRC + 4].copy_from_slice(&f.src.to_be_bytes());
        out[IP_DST..IP_DST + 4].copy_from_slice(&f.dst.to_be_bytes());
        out[L4 + L4_SPORT..L4 + L4_SPORT + 2].copy_from_slice(&f.sport.to_be_bytes());
        out[L4 + L4_DPORT..L4 + L4_DPORT + 2].copy_from_slice(&f.dport.to_be_bytes());
        out[L4 + TCP_FLAGS] = f.flags;
        // The template was checksummed with zero addresses, ports and
        // flags: one delta per header covers every changed word.
        let a = checksum::delta_u32(0, f.src) + checksum::delta_u32(0, f.dst);
        let ip_c = u16::from_be_bytes([out[IP_CSUM], out[IP_CSUM + 1]]);
        out[IP_CSUM..IP_CSUM + 2].copy_from_slice(&checksum::apply_delta(ip_c, a).to_be_bytes());
        let flags_word = u16::from_be_bytes([out[L4 + TCP_FLAGS - 1], 0]);
        let d = a
            + checksum::delta_u16(0, f.sport)
            + checksum::delta_u16(0, f.dport)
            + checksum::delta_u16(flags_word, flags_word | u16::from(f.flags));
        let t = u16::from_be_bytes([out[L4 + TCP_CSUM], out[L4 + TCP_CSUM + 1]]);
        out[L4 + TCP_CSUM..L4 + TCP_CSUM + 2]
            .copy_from_slice(&checksum::apply_delta(t, d).to_be_bytes());
    }
}

fn sum(cs: &[Counters]) -> Counters {
    let mut t = Counters::default();
    for c in cs {
        t.add(c);
    }
    t
}

fn port(traffic: BenchTraffic, cold: bool) -> GenPort<BenchTraffic> {
    if cold {
        GenPort::cold(traffic, COLD_FRAMES)
    } else {
        GenPort::new(traffic)
    }
}

/// Runs one phase (the pipeline or the baseline); returns (Mpps per worker,
/// counters over the measured window).
fn phase(cfg: &BenchConfig, capacity: usize, mac_swap_only: bool) -> (f64, Counters) {
    let w = cfg.workers as u32;
    let gen = Arc::new(bench_generation(cfg.services.max(1), cfg.backends));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut warm = Vec::new();
    let workers: Vec<_> = (0..w)
        .map(|i| {
            let mut wc = WorkerConfig::new(i, w);
            wc.core = cores.get(i as usize % cores.len().max(1)).map(|c| c.id);
            wc.flow_capacity = capacity;
            wc.mac_swap_only = mac_swap_only;
            let mut traffic = BenchTraffic::new(i, cfg, gen.clone());
            warm.push(traffic.warm_frames());
            (wc, vec![port(traffic, cfg.cold)])
        })
        .collect();
    // The workers run their own build of the same generation (identical:
    // the build is deterministic), the generator reads this one.
    let dp = Dataplane::start(workers, bench_generation(cfg.services.max(1), cfg.backends));
    // Warm-up: every worker's port has delivered its handshakes and run a
    // little more.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = dp.counters();
        if c.iter()
            .zip(&warm)
            .all(|(c, &o)| c.rx_packets >= o + COLD_FRAMES as u64 + 100_000)
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

/// The flow-table capacity of a run.
fn capacity(cfg: &BenchConfig) -> usize {
    let per_worker = cfg.flows.div_ceil(cfg.workers.max(1));
    cfg.flow_capacity
        .unwrap_or_else(|| (per_worker * 2).max(1 << 16))
}

/// Runs the pipeline, then the baseline, and reports both.
pub fn run(cfg: &BenchConfig) -> BenchReport {
    let capacity = capacity(cfg);
    let (mpps, c) = phase(cfg, capacity, false);
    let (base, _) = phase(cfg, capacity, true);
    BenchReport {
        mpps_per_worker: mpps,
        ns_per_packet: 1e3 / mpps,
        flows: cfg.flows,
        new_ratio: cfg.new_ratio,
        reply_ratio: cfg.reply_ratio,
        services: cfg.services,
        workers: cfg.workers,
        spread: cfg.spread,
        cold: cfg.cold,
        baseline_mpps_per_worker: base,
        baseline_ns_per_packet: 1e3 / base,
        ratio_to_baseline: mpps / base,
        mpps_total: mpps * cfg.workers as f64,
        seconds: cfg.seconds,
        backends: cfg.backends,
        flow_capacity: capacity,
        flows_created: c.flows_created,
        flows_evicted: c.flows_evicted,
        table_misses: c.table_misses,
        drops: c.total_drops(),
        forwarded: c.forwarded,
        replies: c.replies,
        handoff_share: c.handoffs_out as f64 / (c.rx_packets.max(1)) as f64,
    }
}

/// Runs one worker on the calling thread until it has processed `packets`
/// packets after warm-up, with no timing and no other thread: the mode for
/// instruction counting (callgrind), where two runs with different counts
/// give instructions per packet by difference.
pub fn run_counted(cfg: &BenchConfig, packets: u64, mac_swap_only: bool) -> Counters {
    let one = BenchConfig {
        workers: 1,
        ..cfg.clone()
    };
    let gen = Arc::new(bench_generation(one.services.max(1), one.backends));
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let mut wc = WorkerConfig::new(0, 1);
    wc.flow_capacity = capacity(&one);
    wc.mac_swap_only = mac_swap_only;
    let mut traffic = BenchTraffic::new(0, &one, gen.clone());
    let warm = traffic.warm_frames() + if one.cold { COLD_FRAMES as u64 } else { 0 };
    let mut w = crate::worker::Worker::new(
        wc,
        vec![port(traffic, one.cold)],
        gen,
        rx,
        Arc::new(crate::worker::SharedCounters::default()),
        crate::worker::Plumbing::new(1, 64),
        Instant::now(),
    );
    let target = warm + packets;
    while w.counters().rx_packets < target {
        w.poll_once();
    }
    *w.counters()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame the generator writes is valid and, through the real
    /// worker, a handshake then a steady mix of forwards and replies: no
    /// drop, every flow assured, replies on the fast path's terms.
    #[test]
    fn the_mix_flows_through_the_worker_without_drops() {
        let cfg = BenchConfig {
            flows: 2_000,
            services: 3,
            backends: 4,
            ..BenchConfig::default()
        };
        let c = run_counted(&cfg, 50_000, false);
        assert_eq!(c.total_drops(), 0, "{c:?}");
        assert_eq!(c.flows_created, 2_000);
        assert_eq!(c.flows_assured, 2_000);
        let share = c.replies as f64 / (c.replies + c.forwarded) as f64;
        assert!((0.4..0.6).contains(&share), "{share} {c:?}");
    }

    #[test]
    fn tuple_spread_hands_frames_over_and_owner_spread_does_not() {
        let mut cfg = BenchConfig {
            flows: 1_000,
            workers: 2,
            ..BenchConfig::default()
        };
        let gen = Arc::new(bench_generation(1, 4));
        let count = |cfg: &BenchConfig| {
            let mut t = BenchTraffic::new(0, cfg, gen.clone());
            let mut foreign = 0;
            for _ in 0..10_000 {
                let f = t.pick();
                let client = if f.reply {
                    (f.dst, f.dport)
                } else {
                    (f.src, f.sport)
                };
                foreign += u32::from(owner_worker(client.0, client.1, 2) != 0);
            }
            foreign
        };
        assert_eq!(count(&cfg), 0);
        cfg.spread = Spread::Tuple;
        let f = count(&cfg);
        assert!((3_000..7_000).contains(&f), "{f}");
    }
}
