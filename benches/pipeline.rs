//! The whole pipeline (parse, classify, flow lookup, Maglev, DNAT, tx) per
//! burst of 32 on the in-memory generator port, against the rx/MAC-swap/tx
//! baseline through the same loop.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::bench::{bench_generation, BenchConfig, BenchTraffic};
use sluice::port::mem::GenPort;
use sluice::worker::{Plumbing, SharedCounters, Worker, WorkerConfig, BATCH};

fn worker(flows: usize, new_ratio: f64, mac_swap_only: bool) -> Worker<GenPort<BenchTraffic>> {
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let mut cfg = WorkerConfig::new(0, 1);
    cfg.flow_capacity = (flows * 2).max(1 << 16);
    cfg.mac_swap_only = mac_swap_only;
    let mix = BenchConfig {
        flows,
        new_ratio,
        ..BenchConfig::default()
    };
    let gen = Arc::new(bench_generation(1, 16));
    let mut traffic = BenchTraffic::new(0, &mix, gen.clone());
    let warm = traffic.warm_frames();
    let mut w = Worker::new(
        cfg,
        vec![GenPort::new(traffic)],
        gen,
        rx,
        Arc::new(SharedCounters::default()),
        Plumbing::new(1, 64),
        Instant::now(),
    );
    // Warm-up: the generator opens every flow first (full handshakes).
    while w.counters().rx_packets < warm {
        w.poll_once();
    }
    w
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (flows, ratio) in [(10_000usize, 0.0f64), (1_000_000, 0.0), (1_000_000, 1.0)] {
        let mut w = worker(flows, ratio, false);
        g.bench_with_input(
            BenchmarkId::new("lb", format!("{flows}flows-new{ratio}")),
            &(),
            |b, _| b.iter(|| w.poll_once()),
        );
    }
    let mut w = worker(10_000, 0.0, true);
    g.bench_function("baseline-macswap", |b| b.iter(|| w.poll_once()));
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
