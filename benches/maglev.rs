//! Maglev build and lookup: sluice's weighted table against the `maglev`
//! crate (0.2, unweighted) at the same table size, 65537.
//!
//! Fairness notes: both get the same backend strings ("10.1.x.y:8080" is
//! what sluice hashes as an identity; the crate hashes the string). The crate
//! picks the first prime >= the capacity asked for, so asking for 65537 gives
//! it exactly 65537 slots. Its `get` hashes the key itself (SipHash), while
//! sluice's data path hashes the 5-tuple once and reuses it for the flow
//! table, so the lookup group measures both "precomputed hash" (ours) and
//! "key -> backend" (ours with `hash_words_v1`, theirs with `get`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use maglev::ConsistentHasher;
use sluice::hash::hash_words_v1;
use sluice::maglev::{MaglevBackend, MaglevTable, DEFAULT_TABLE_SIZE};

const SEED: u64 = 0x5eed;

fn fixture(n: usize) -> (Vec<MaglevBackend>, Vec<String>) {
    let backends: Vec<MaglevBackend> = (0..n)
        .map(|i| {
            let addr = Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8);
            MaglevBackend::new(IpAddr::V4(addr), 8080, 1)
        })
        .collect();
    let names = backends.iter().map(|b| b.endpoint().to_string()).collect();
    (backends, names)
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build_65537");
    group.sample_size(10);
    for n in [10usize, 100, 1000] {
        let (backends, names) = fixture(n);
        group.bench_with_input(BenchmarkId::new("sluice", n), &backends, |b, backends| {
            b.iter(|| MaglevTable::build(black_box(backends), DEFAULT_TABLE_SIZE, SEED).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("maglev_crate", n), &names, |b, names| {
            b.iter(|| {
                maglev::Maglev::with_capacity(
                    black_box(names).iter().map(String::as_str),
                    DEFAULT_TABLE_SIZE as usize,
                )
            })
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    const BATCH: usize = 1024;
    let (backends, names) = fixture(100);
    let ours = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE, SEED).unwrap();
    let theirs = maglev::Maglev::with_capacity(names.clone(), DEFAULT_TABLE_SIZE as usize);
    assert_eq!(theirs.capacity(), DEFAULT_TABLE_SIZE as usize);
    let keys: Vec<u64> = (0..BATCH as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let hashes: Vec<u64> = keys.iter().map(|&k| hash_words_v1(k, 0, SEED)).collect();

    let mut group = c.benchmark_group("maglev_lookup_1024_n100");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("sluice_precomputed_hash", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &h in black_box(&hashes) {
                acc = acc.wrapping_add(ours.lookup(h).unwrap_or(0) as u32);
            }
            acc
        })
    });
    group.bench_function("sluice_hash_and_lookup", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &k in black_box(&keys) {
                acc = acc.wrapping_add(ours.lookup(hash_words_v1(k, 0, SEED)).unwrap_or(0) as u32);
            }
            acc
        })
    });
    group.bench_function("maglev_crate_get", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for k in black_box(&keys) {
                acc = acc.wrapping_add(theirs.get(k).map_or(0, |s| s.len()));
            }
            acc
        })
    });
    group.finish();
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
