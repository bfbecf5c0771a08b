//! Maglev properties over random endpoint sets: no empty slot, determinism
//! under reordering, proportional weights, bounded disruption.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use sluice::hash::hash_words_v1;
use sluice::maglev::{MaglevBackend, MaglevTable, DEFAULT_TABLE_SIZE, NO_BACKEND, TABLE_SIZES};

fn backend_of((v6, addr, port): (bool, u32, u16), weight: u32) -> MaglevBackend {
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (addr >> 16) as u16,
            addr as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(addr))
    };
    MaglevBackend::new(addr, port, weight)
}

/// Up to `max_n` backends with distinct identities (mixed IPv4 / IPv6) and
/// weights drawn from `weights`.
fn backends(
    max_n: usize,
    weights: std::ops::RangeInclusive<u32>,
) -> impl Strategy<Value = Vec<MaglevBackend>> {
    proptest::collection::btree_set((any::<bool>(), any::<u32>(), any::<u16>()), 1..=max_n)
        .prop_flat_map(move |ids: BTreeSet<_>| {
            let n = ids.len();
            (Just(ids), proptest::collection::vec(weights.clone(), n))
        })
        .prop_map(|(ids, weights)| {
            ids.into_iter()
                .zip(weights)
                .map(|(id, w)| backend_of(id, w))
                .collect::<Vec<_>>()
        })
        // The generator yields sorted identities; shuffle so tests see
        // arbitrary caller orders.
        .prop_shuffle()
}

fn identity_map(table: &MaglevTable, backends: &[MaglevBackend]) -> Vec<Option<(IpAddr, u16)>> {
    table
        .slots()
        .iter()
        .map(|&s| backends.get(s as usize).map(|b| (b.addr, b.port)))
        .collect()
}

fn sorted_by_identity(backends: &[MaglevBackend]) -> Vec<MaglevBackend> {
    let mut sorted = backends.to_vec();
    sorted.sort_by_key(|b| (b.addr, b.port));
    sorted
}

proptest! {
    // Regressions are not persisted: failing seeds are printed, and this
    // test's file list has no place for a regressions file.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_empty_slot_for_any_offered_size(
        size in proptest::sample::select(TABLE_SIZES),
        backends in backends(64, 0..=100),
        seed in any::<u64>(),
    ) {
        let active = backends.iter().filter(|b| b.weight > 0).count();
        let table = MaglevTable::build(&backends, size, seed).unwrap();
        prop_assert_eq!(table.size(), size);
        prop_assert_eq!(table.slots().len(), size as usize);
        if active == 0 {
            prop_assert!(table.slots().iter().all(|&s| s == NO_BACKEND));
        } else {
            prop_assert!(table.slots().iter().all(|&s| (s as usize) < backends.len()));
        }
        let counts = table.slot_counts(backends.len());
        for (b, c) in backends.iter().zip(&counts) {
            // Weight 0 gets nothing; a positive weight gets at least a slot
            // whenever the table has 100 slots per backend.
            prop_assert!(b.weight > 0 || *c == 0);
            prop_assert!(b.weight == 0 || *c > 0 || size < 100 * active as u32);
        }
    }

    #[test]
    fn input_order_never_changes_the_mapping(
        backends in backends(50, 0..=100),
        size in proptest::sample::select(&[251u32, 4093, 65537][..]),
        seed in any::<u64>(),
        reorder_seed in any::<u64>(),
    ) {
        let table = MaglevTable::build(&backends, size, seed).unwrap();
        // Another arbitrary order of the same set.
        let mut reordered = backends.clone();
        reordered.sort_by_key(|b| hash_words_v1(b.port as u64, b.weight as u64, reorder_seed));
        let table2 = MaglevTable::build(&reordered, size, seed).unwrap();
        prop_assert!(identity_map(&table, &backends) == identity_map(&table2, &reordered));
        prop_assert_eq!(table.digest(&backends), table2.digest(&reordered));

        let canonical = sorted_by_identity(&backends);
        let canonical2 = sorted_by_identity(&reordered);
        let a = MaglevTable::build(&canonical, size, seed).unwrap();
        let b = MaglevTable::build(&canonical2, size, seed).unwrap();
        prop_assert!(a.slots() == b.slots());
    }

    #[test]
    fn another_seed_gives_another_table(
        backends in backends(50, 1..=100),
        seed in any::<u64>(),
        other in any::<u64>(),
    ) {
        prop_assume!(backends.len() >= 2 && seed != other);
        let a = MaglevTable::build(&backends, 4093, seed).unwrap();
        let b = MaglevTable::build(&backends, 4093, other).unwrap();
        prop_assert!(a.slots() != b.slots());
        prop_assert_ne!(a.digest(&backends), b.digest(&backends));
    }

    #[test]
    fn shares_within_one_percent_of_weights(
        backends in backends(50, 1..=100),
        size in proptest::sample::select(TABLE_SIZES),
        seed in any::<u64>(),
    ) {
        prop_assume!(size as usize > 100 * backends.len());
        let table = MaglevTable::build(&backends, size, seed).unwrap();
        let total: u64 = backends.iter().map(|b| b.weight as u64).sum();
        for (b, c) in backends.iter().zip(table.slot_counts(backends.len())) {
            let share = c as f64 / size as f64;
            let ideal = b.weight as f64 / total as f64;
            prop_assert!((share - ideal).abs() <= 0.01, "{} slots: {} vs {}", c, share, ideal);
        }
    }

    #[test]
    fn shares_within_one_percent_at_default_size(
        backends in backends(50, 1..=100),
        seed in any::<u64>(),
    ) {
        let size = DEFAULT_TABLE_SIZE;
        let table = MaglevTable::build(&backends, size, seed).unwrap();
        let total: u64 = backends.iter().map(|b| b.weight as u64).sum();
        for (b, c) in backends.iter().zip(table.slot_counts(backends.len())) {
            let share = c as f64 / size as f64;
            let ideal = b.weight as f64 / total as f64;
            prop_assert!((share - ideal).abs() <= 0.01, "{} slots: {} vs {}", c, share, ideal);
        }
    }

    #[test]
    fn lookup_always_names_a_given_backend(
        backends in backends(100, 1..=10),
        hashes in proptest::collection::vec(any::<u64>(), 64),
        seed in any::<u64>(),
    ) {
        let table = MaglevTable::build(&backends, 16381, seed).unwrap();
        for h in hashes {
            let b = table.lookup(h).unwrap();
            prop_assert!((b as usize) < backends.len());
            prop_assert_eq!(table.slot_of(h), ((h >> 32) as u32) % 16381);
        }
    }
}

#[test]
fn every_offered_size_fills_every_slot() {
    // Deterministic companion to the proptest: each offered size, several set
    // sizes up to the largest that fits, weights 1..=100 and some draining.
    for &size in TABLE_SIZES {
        for n in [1usize, 2, 7, 50, 250.min(size as usize)] {
            let backends: Vec<MaglevBackend> = (0..n)
                .map(|i| {
                    let h = hash_words_v1(i as u64, size as u64, 11);
                    let weight = if i % 5 == 4 { 0 } else { 1 + (h % 100) as u32 };
                    backend_of((i % 2 == 0, h as u32 ^ i as u32, (h >> 40) as u16), weight)
                })
                .collect();
            let table = MaglevTable::build(&backends, size, size as u64).unwrap();
            assert!(
                table.slots().iter().all(|&s| (s as usize) < n),
                "size {size}, n {n}"
            );
            let counts = table.slot_counts(n);
            for (b, c) in backends.iter().zip(counts) {
                // A small positive weight may round to no slot in a table
                // with fewer than 100 slots per backend.
                let must_have_slots = b.weight > 0 && size as usize >= 100 * n;
                assert!(
                    b.weight > 0 || c == 0,
                    "size {size}, n {n}, {b:?}: {c} slots"
                );
                assert!(
                    !must_have_slots || c > 0,
                    "size {size}, n {n}, {b:?}: no slot"
                );
            }
        }
    }
}

fn equal_backends(n: usize) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| backend_of((false, 0x0a02_0000 + i as u32, 443), 1))
        .collect()
}

/// Fraction of slots whose identity changed, and the fraction of those that
/// `owned_by` (the removed or added backend) owns in `before` or `after`.
fn disruption(
    before: &MaglevTable,
    before_backends: &[MaglevBackend],
    after: &MaglevTable,
    after_backends: &[MaglevBackend],
    owned_by: (IpAddr, u16),
) -> (f64, f64) {
    let a = identity_map(before, before_backends);
    let b = identity_map(after, after_backends);
    let mut changed = 0usize;
    let mut explained = 0usize;
    for (x, y) in a.iter().zip(&b) {
        if x != y {
            changed += 1;
            if *x == Some(owned_by) || *y == Some(owned_by) {
                explained += 1;
            }
        }
    }
    (
        changed as f64 / a.len() as f64,
        explained as f64 / changed.max(1) as f64,
    )
}

#[test]
fn removing_or_adding_one_backend_moves_about_one_nth() {
    let size = DEFAULT_TABLE_SIZE;
    for n in [10usize, 100] {
        let all = equal_backends(n + 1);
        let base = &all[..n];
        let table = MaglevTable::build(base, size, 77).unwrap();

        // Remove each of a few backends in turn; report the worst.
        let mut worst_remove = (0.0f64, 1.0f64);
        for k in [0, n / 3, n / 2, n - 1] {
            let mut fewer = base.to_vec();
            let removed = fewer.remove(k);
            let after = MaglevTable::build(&fewer, size, 77).unwrap();
            let (changed, explained) =
                disruption(&table, base, &after, &fewer, (removed.addr, removed.port));
            worst_remove = (worst_remove.0.max(changed), worst_remove.1.min(explained));
        }
        let ideal_remove = 1.0 / n as f64;
        println!(
            "N={n} remove one: changed {:.4} of slots (ideal {:.4}, ratio {:.2}), \
             {:.1}% of changed slots were the removed backend's",
            worst_remove.0,
            ideal_remove,
            worst_remove.0 / ideal_remove,
            worst_remove.1 * 100.0
        );
        assert!(
            worst_remove.0 <= 2.0 * ideal_remove + 0.01,
            "{worst_remove:?}"
        );
        assert!(worst_remove.1 >= 0.5, "{worst_remove:?}");

        let added = all[n];
        let after = MaglevTable::build(&all, size, 77).unwrap();
        let (changed, explained) = disruption(&table, base, &after, &all, (added.addr, added.port));
        let ideal_add = 1.0 / (n + 1) as f64;
        println!(
            "N={n} add one: changed {:.4} of slots (ideal {:.4}, ratio {:.2}), \
             {:.1}% of changed slots went to the new backend",
            changed,
            ideal_add,
            changed / ideal_add,
            explained * 100.0
        );
        assert!(changed <= 2.0 * ideal_add + 0.01, "{changed}");
        assert!(explained >= 0.5, "{explained}");
    }
}

#[test]
fn draining_one_backend_moves_only_a_bounded_share() {
    // Weight 0 (draining) must behave like removal for the slot mapping.
    let size = DEFAULT_TABLE_SIZE;
    let base = equal_backends(20);
    let table = MaglevTable::build(&base, size, 3).unwrap();
    let mut drained = base.clone();
    drained[7].weight = 0;
    let after = MaglevTable::build(&drained, size, 3).unwrap();
    let mut removed = base.clone();
    removed.remove(7);
    let after_removed = MaglevTable::build(&removed, size, 3).unwrap();
    assert_eq!(after.digest(&drained), after_removed.digest(&removed));
    let (changed, explained) = disruption(
        &table,
        &base,
        &after,
        &drained,
        (base[7].addr, base[7].port),
    );
    println!("N=20 drain one: changed {changed:.4} (ideal 0.0500), {explained:.3} explained");
    assert!(changed <= 0.11 && explained >= 0.5);
}
