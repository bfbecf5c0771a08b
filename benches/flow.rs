//! Flow table costs per operation: insert into an empty table, lookup hit (10k and 1M flows,
//! random order), lookup miss, incremental aging, and insert into a full table (eviction).
//!
//! Every timed lookup includes computing the key's hash, as the data path does.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice::flow::{FlowEntry, FlowKey, FlowState, FlowTable, Timeouts};

const SEED: u64 = 0x0123_4567_89ab_cdef;

/// Distinct keys for distinct `i` (up to 2^32), spread over addresses and ports.
fn key(i: u32) -> FlowKey {
    FlowKey {
        client_addr: 0x0a00_0000 ^ i.rotate_left(7),
        vip_addr: 0xc612_0064,
        client_port: 1024 + (i % 60_000) as u16,
        vip_port: 443,
        proto: 6,
    }
}

fn entry(now: u32) -> FlowEntry {
    FlowEntry::new(0xc0a8_0001, 8080, FlowState::Established, now)
}

fn filled(capacity: usize, flows: u32, now: u32) -> FlowTable {
    let mut t = FlowTable::new(capacity, Timeouts::default(), SEED);
    for i in 0..flows {
        let k = key(i);
        let h = t.hash(&k);
        t.insert(k, h, entry(now), now);
    }
    t
}

/// Deterministic shuffle (xorshift + Fisher-Yates) so lookups do not walk memory in order.
fn shuffled(n: u32) -> Vec<FlowKey> {
    let mut keys: Vec<FlowKey> = (0..n).map(key).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..keys.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        keys.swap(i, (x % (i as u64 + 1)) as usize);
    }
    keys
}

fn insert_empty(c: &mut Criterion) {
    const CAP: u32 = 1 << 20;
    c.bench_function("flow/insert_empty_1M_capacity", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let batch = (iters - done).min(CAP as u64) as u32;
                let mut t: FlowTable = FlowTable::new(CAP as usize, Timeouts::default(), SEED);
                let start = Instant::now();
                for i in 0..batch {
                    let k = key(i);
                    let h = t.hash(&k);
                    black_box(t.insert(k, h, entry(0), 0));
                }
                total += start.elapsed();
                done += batch as u64;
            }
            total
        })
    });
}

fn lookup_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow/lookup_hit");
    for flows in [10_000u32, 1_000_000] {
        let t = filled(flows as usize, flows, 0);
        let keys = shuffled(flows);
        g.bench_with_input(BenchmarkId::from_parameter(flows), &flows, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let k = &keys[i];
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                let id = t.lookup(k, t.hash(k));
                // Read the entry as the data path would.
                black_box(id.map(|id| t.entry(id).backend_addr))
            })
        });
    }
    g.finish();
}

fn lookup_miss(c: &mut Criterion) {
    const FLOWS: u32 = 1_000_000;
    let t = filled(FLOWS as usize, FLOWS, 0);
    let misses: Vec<FlowKey> = shuffled(FLOWS)
        .into_iter()
        .map(|k| FlowKey { vip_port: 80, ..k })
        .collect();
    c.bench_function("flow/lookup_miss/1000000", |b| {
        let mut i = 0;
        b.iter(|| {
            let k = &misses[i];
            i = if i + 1 == misses.len() { 0 } else { i + 1 };
            black_box(t.lookup(k, t.hash(k)))
        })
    });
}

fn expire(c: &mut Criterion) {
    const FLOWS: u32 = 1_000_000;
    const BUDGET: usize = 64;
    let mut g = c.benchmark_group("flow/expire_budget_64");
    // All live: the cost of examining 64 slots and removing nothing.
    let mut live = filled(FLOWS as usize, FLOWS, 0);
    g.bench_function("scan_live_1M", |b| {
        b.iter(|| black_box(live.expire(1000, BUDGET)))
    });
    // All expired: every examined slot is removed; refill outside the timing when empty.
    let expired_at = Timeouts::default().established + 1;
    g.bench_function("remove_expired_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut t = filled(FLOWS as usize, FLOWS, 0);
            for _ in 0..iters {
                if t.is_empty() {
                    t = filled(FLOWS as usize, FLOWS, 0);
                }
                let start = Instant::now();
                black_box(t.expire(expired_at, BUDGET));
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn insert_full(c: &mut Criterion) {
    const FLOWS: u32 = 1_000_000;
    let mut t = filled(FLOWS as usize, FLOWS, 0);
    let mut next = FLOWS;
    c.bench_function("flow/insert_full_evict/1000000", |b| {
        b.iter(|| {
            // Keys beyond the prefill are never present, so each insert evicts the oldest
            // scanned flow (all are live).
            let k = key(next);
            next = next.wrapping_add(1);
            let h = t.hash(&k);
            black_box(t.insert(k, h, entry(next), next))
        })
    });
}

fn config() -> Criterion {
    // Two shared cores: short, small samples keep the whole run to a couple of minutes.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = insert_empty, lookup_hit, lookup_miss, expire, insert_full
}
criterion_main!(benches);
