//! Model-based property test: the flow table driven by random insert / lookup / touch / remove /
//! expire sequences must agree with a plain `HashMap`, never exceed its capacity, accept an
//! insert (evicting when full, for a stated and true reason) unless the flows it examined are
//! all live and assured, never evict a live assured flow, and never expire a live flow.

use std::collections::HashMap;

use proptest::prelude::*;
use sluice::flow::{
    Direction, EvictReason, FlowEntry, FlowKey, FlowState, FlowTable, Tick, Timeouts,
};

#[derive(Clone, Debug)]
enum Op {
    /// Look the key up; insert it on a miss, otherwise refresh it with a packet.
    Packet {
        key: u8,
        flags: u8,
        reply: bool,
    },
    Lookup {
        key: u8,
    },
    Remove {
        key: u8,
    },
    Expire {
        budget: usize,
    },
    Advance {
        ms: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40, any::<u8>(), any::<bool>())
            .prop_map(|(key, flags, reply)| Op::Packet { key, flags, reply }),
        2 => (0u8..40).prop_map(|key| Op::Lookup { key }),
        1 => (0u8..40).prop_map(|key| Op::Remove { key }),
        1 => (0usize..40).prop_map(|budget| Op::Expire { budget }),
        2 => prop_oneof![0u32..50, 0u32..2_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn key(i: u8) -> FlowKey {
    FlowKey {
        client_addr: 0x0a00_0000 | i as u32,
        vip_addr: 0xc612_0064,
        client_port: 40_000 + i as u16,
        vip_port: 80,
        proto: if i % 4 == 0 { 17 } else { 6 },
    }
}

/// Short timeouts so that random clock advances expire flows often.
fn timeouts() -> Timeouts {
    Timeouts {
        syn_sent: 300,
        syn_recv: 200,
        established: 1_500,
        fin_wait: 250,
        close_wait: 250,
        last_ack: 100,
        time_wait: 150,
        closed: 50,
        udp: 120,
        udp_stream: 700,
        unassured: 400,
    }
}

fn expired(e: &FlowEntry, now: Tick) -> bool {
    now.wrapping_sub(e.last_seen) as i32 > e.timeout(&timeouts()) as i32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_a_hashmap_model(
        capacity in 1usize..20,
        start in prop_oneof![Just(0u32), Just(u32::MAX - 1_000), any::<u32>()],
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut table = FlowTable::new(capacity, timeouts(), seed);
        let mut model: HashMap<FlowKey, FlowEntry> = HashMap::new();
        let mut now: Tick = start;

        for op in ops {
            match op {
                Op::Packet { key: k, flags, reply } => {
                    let k = key(k);
                    let h = table.hash(&k);
                    let dir = if reply { Direction::Reply } else { Direction::Original };
                    match table.lookup(&k, h) {
                        Some(id) => {
                            prop_assert!(model.contains_key(&k));
                            let e = table.entry_mut(id);
                            e.state = if k.proto == 17 {
                                e.state.next_udp(dir)
                            } else {
                                e.state.next_tcp(dir, flags)
                            };
                            e.last_seen = now;
                            // A reply to an established (or UDP) flow makes it assured.
                            if reply && matches!(e.state, FlowState::Established | FlowState::UdpReplied) {
                                e.flags |= FlowEntry::ASSURED;
                            }
                            model.insert(k, *e);
                        }
                        None => {
                            prop_assert!(!model.contains_key(&k));
                            let state = if k.proto == 17 {
                                FlowState::new_udp()
                            } else {
                                FlowState::new_tcp(flags)
                            };
                            let mut entry = FlowEntry::new(0xc0a8_0001, 8080, state, now);
                            entry.client_isn = flags as u32;
                            let was_full = model.len() == capacity;
                            let Some(ins) = table.insert(k, h, entry, now) else {
                                // Refused: only a full table whose examined flows were all
                                // live and assured does that.
                                prop_assert!(was_full);
                                let protected = model
                                    .values()
                                    .filter(|e| e.is_assured() && !e.state.is_closed() && !expired(e, now))
                                    .count();
                                prop_assert!(protected >= capacity.min(sluice::flow::EVICTION_SCAN));
                                prop_assert_eq!(table.lookup(&k, h), None);
                                continue;
                            };
                            prop_assert_eq!(ins.evicted.is_some(), was_full);
                            if let Some(reason) = ins.evicted {
                                let gone: Vec<FlowKey> = model
                                    .keys()
                                    .filter(|mk| table.lookup(mk, table.hash(mk)).is_none())
                                    .copied()
                                    .collect();
                                prop_assert_eq!(gone.len(), 1);
                                let victim = model.remove(&gone[0]).unwrap();
                                match reason {
                                    EvictReason::Expired => prop_assert!(expired(&victim, now)),
                                    EvictReason::Closed => prop_assert!(victim.state.is_closed()),
                                    EvictReason::Unassured => prop_assert!(!victim.is_assured()),
                                }
                            }
                            prop_assert_eq!(table.entry(ins.id), &entry);
                            prop_assert_eq!(table.key(ins.id), &k);
                            model.insert(k, entry);
                        }
                    }
                }
                Op::Lookup { key: k } => {
                    let k = key(k);
                    let found = table.lookup(&k, table.hash(&k)).map(|id| *table.entry(id));
                    prop_assert_eq!(found, model.get(&k).copied());
                }
                Op::Remove { key: k } => {
                    let k = key(k);
                    if let Some(id) = table.lookup(&k, table.hash(&k)) {
                        table.remove(id);
                    }
                    model.remove(&k);
                }
                Op::Expire { budget } => {
                    let live_before = model.len();
                    let removed = table.expire(now, budget);
                    prop_assert!(removed <= budget);
                    let gone: Vec<FlowKey> = model
                        .keys()
                        .filter(|mk| table.lookup(mk, table.hash(mk)).is_none())
                        .copied()
                        .collect();
                    prop_assert_eq!(gone.len(), removed);
                    for g in gone {
                        let e = model.remove(&g).unwrap();
                        prop_assert!(expired(&e, now), "expire removed a live flow {:?}", e);
                    }
                    prop_assert_eq!(model.len(), live_before - removed);
                }
                Op::Advance { ms } => now = now.wrapping_add(ms),
            }

            prop_assert!(table.len() <= table.capacity());
            prop_assert_eq!(table.len(), model.len());
            prop_assert_eq!(table.is_empty(), model.is_empty());
            prop_assert_eq!(table.iter().count(), model.len());
            for (id, k, e) in table.iter() {
                prop_assert_eq!(model.get(k), Some(e));
                prop_assert_eq!(table.lookup(k, table.hash(k)), Some(id));
                prop_assert_eq!(table.is_expired(id, now), expired(e, now));
            }
        }

        // A full pass of aging removes exactly the expired flows.
        let expected = model.values().filter(|e| expired(e, now)).count();
        prop_assert_eq!(table.expire(now, capacity), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Batched lookups (hint array first) answer exactly what single lookups
    /// answer, through inserts, removals, evictions and slot reuse.
    #[test]
    fn batch_lookup_agrees_with_single_lookups(
        ops in proptest::collection::vec((0u32..200, any::<bool>()), 1..400),
        cap in 1usize..64,
    ) {
        let mut t: FlowTable = FlowTable::new(cap, Timeouts::default(), 99);
        for (k, insert) in ops {
            let key = FlowKey::new(std::net::Ipv4Addr::from(k), k as u16, std::net::Ipv4Addr::new(198, 18, 0, 1), 80, 6);
            let h = t.hash(&key);
            match t.lookup(&key, h) {
                Some(id) if !insert => t.remove(id),
                None if insert => {
                    t.insert(key, h, FlowEntry::new(1, 2, FlowState::SynSent, 0), 0);
                }
                _ => {}
            }
        }
        let keys: Vec<FlowKey> = (0u32..200)
            .map(|k| FlowKey::new(std::net::Ipv4Addr::from(k), k as u16, std::net::Ipv4Addr::new(198, 18, 0, 1), 80, 6))
            .collect();
        for chunk in keys.chunks(32) {
            let hashes: Vec<u64> = chunk.iter().map(|k| t.hash(k)).collect();
            let mut out = vec![None; chunk.len()];
            t.lookup_batch(chunk, &hashes, &mut out);
            for (i, k) in chunk.iter().enumerate() {
                prop_assert_eq!(out[i], t.lookup(k, hashes[i]));
            }
        }
    }
}
