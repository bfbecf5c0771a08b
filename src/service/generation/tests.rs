use super::*;
use crate::service::{EndpointSpec, LinkSpec, Protocol, Topology};
use std::ops::Range;

fn topo() -> Topology {
    Topology {
        links: vec![LinkSpec {
            name: "eth0".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            addr: Ipv4Addr::new(10, 200, 2, 254),
            prefix_len: 24,
        }],
        neighbors: vec![(Ipv4Addr::new(10, 200, 2, 11), MacAddr([2, 0, 0, 0, 0, 11]))],
        ..Default::default()
    }
}

fn svc(eps: &[EndpointSpec]) -> ServiceSpec {
    let mut s = ServiceSpec::new("web", Ipv4Addr::new(198, 18, 0, 100), 80, Protocol::Tcp);
    s.table_size = 251;
    s.endpoints = eps.to_vec();
    s
}

fn ep(last: u8) -> EndpointSpec {
    EndpointSpec::new(Ipv4Addr::new(10, 200, 2, last), 8080)
}

#[test]
fn compiles_lookups_for_both_directions() {
    let g = Generation::build(1, &topo(), &[svc(&[ep(12), ep(11)])]).unwrap();
    let key = VipKey::new(Ipv4Addr::new(198, 18, 0, 100), 80, 6);
    assert_eq!(g.service_for(&key), Some(0));
    assert!(g.is_vip_addr(key.addr));
    // Endpoints are stored in canonical order.
    assert_eq!(g.endpoint(0).addr, u32::from(Ipv4Addr::new(10, 200, 2, 11)));
    assert_eq!(
        g.endpoint(0).egress,
        Some((0, MacAddr([2, 0, 0, 0, 0, 11])))
    );
    assert_eq!(g.endpoint(1).egress, None, "no neighbor entry for .12");
    let b = VipKey::new(Ipv4Addr::new(10, 200, 2, 12), 8080, 6);
    assert_eq!(
        g.backend_refs(&b),
        &[BackendRef {
            service: 0,
            endpoint: 1
        }]
    );
    assert_eq!(g.find_endpoint(0, b.addr, 8080), Some(1));
    assert_eq!(g.find_endpoint(0, b.addr, 8081), None);
    assert!(g.choose_new(0, 12345).is_some());
    assert!(g.service(0).carry_table.is_none());
}

#[test]
fn draining_endpoints_get_no_new_flows_but_keep_carrying() {
    let g = Generation::build(
        1,
        &topo(),
        &[svc(&[ep(11), ep(12).state(EndpointState::Draining)])],
    )
    .unwrap();
    for h in 0..2000u64 {
        let h = crate::hash::hash_words_v1(h, 0, 0);
        assert_eq!(g.choose_new(0, h), Some(0));
    }
    let carried: std::collections::HashSet<u32> = (0..2000u64)
        .filter_map(|h| g.choose_existing(0, crate::hash::hash_words_v1(h, 0, 0)))
        .collect();
    assert_eq!(carried.len(), 2);
}

#[test]
fn bad_specs_are_refused_with_the_culprit_named() {
    let e = Generation::build(1, &topo(), &[svc(&[ep(11), ep(11)])]).unwrap_err();
    assert!(e.to_string().contains("10.200.2.11:8080"), "{e}");
    let mut other = svc(&[]);
    other.name = "other".into();
    let e = Generation::build(1, &topo(), &[svc(&[]), other]).unwrap_err();
    assert!(matches!(e, GenerationError::DuplicateService { .. }), "{e}");
    let e = Generation::build(1, &topo(), &[svc(&[]), svc(&[])]).unwrap_err();
    assert!(matches!(e, GenerationError::DuplicateName { .. }), "{e}");
    let mut s = svc(&[ep(11)]);
    s.table_size = 100;
    let e = Generation::build(1, &topo(), &[s]).unwrap_err();
    assert!(matches!(e, GenerationError::Maglev { .. }), "{e}");
}

#[test]
fn no_active_endpoint_means_no_choice() {
    let g = Generation::build(1, &topo(), &[svc(&[ep(11).state(EndpointState::Down)])]).unwrap();
    assert_eq!(g.choose_new(0, 42), None);
    assert_eq!(g.choose_existing(0, 42), None);
}

fn named(name: &str, port: u16, eps: &[EndpointSpec]) -> Arc<ServiceSpec> {
    let mut s = ServiceSpec::new(name, Ipv4Addr::new(198, 18, 0, 100), port, Protocol::Tcp);
    s.table_size = 251;
    s.endpoints = eps.to_vec();
    Arc::new(s)
}

fn ep_at(third: u8, last: u8) -> EndpointSpec {
    EndpointSpec::new(Ipv4Addr::new(10, 200, third, last), 8080)
}

type Fingerprint = Vec<(
    String,
    u64,
    Vec<(u32, u16, u32, EndpointState)>,
    Vec<Option<(u32, u16)>>,
)>;

/// Everything observable through the lookup API, by identity.
fn fingerprint(g: &Generation) -> Fingerprint {
    let mut v: Vec<_> = g
        .services()
        .map(|(i, s)| {
            let eps = s
                .endpoints
                .clone()
                .map(|e| {
                    let e = g.endpoint(e);
                    assert_eq!(e.service, i);
                    assert_eq!(
                        g.find_endpoint(i, e.addr, e.port)
                            .map(|x| g.endpoint(x).port),
                        Some(e.port)
                    );
                    let refs = g.backend_refs(&VipKey {
                        addr: e.addr,
                        port: e.port,
                        proto: 6,
                    });
                    assert!(refs.iter().any(|r| r.service == i));
                    (e.addr, e.port, e.weight, e.state)
                })
                .collect();
            let choices = (0..500u64)
                .map(|h| {
                    let h = crate::hash::hash_words_v1(h, 1, 2);
                    g.choose_existing(i, h)
                        .map(|e| (g.endpoint(e).addr, g.endpoint(e).port))
                })
                .collect();
            assert_eq!(g.service_for(&s.key), Some(i));
            (s.name.clone(), g.digest(i), eps, choices)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn rebuild_equals_a_full_build_and_reuses_unchanged_services() {
    let a = named("a", 80, &[ep_at(2, 11), ep_at(2, 12)]);
    let b = named("b", 81, &[ep_at(3, 11), ep_at(3, 12), ep_at(3, 13)]);
    let c = named("c", 82, &[ep_at(2, 11)]);
    let g1 = Generation::build_shared(1, &topo(), &[a.clone(), b.clone(), c.clone()]).unwrap();
    // Grow b (relocates it), drain in a, remove c, add d.
    let mut b2 = (*b).clone();
    b2.endpoints.extend((14..30).map(|i| ep_at(3, i)));
    let b2 = Arc::new(b2);
    let mut a2 = (*a).clone();
    a2.endpoints[0].state = EndpointState::Draining;
    let a2 = Arc::new(a2);
    let d = named("d", 83, &[ep_at(2, 12), ep_at(4, 1)]);
    let specs = [a2.clone(), b2.clone(), d.clone()];
    let g2 = Generation::rebuild(&g1, 2, &specs).unwrap();
    let full = Generation::build_shared(2, &topo(), &specs).unwrap();
    assert_eq!(fingerprint(&g2), fingerprint(&full));
    // c's slot was reused by d; the shared backend 10.200.2.12 serves a and d.
    assert_eq!(g2.services().count(), 3);
    let shared = g2.backend_refs(&VipKey::new(Ipv4Addr::new(10, 200, 2, 12), 8080, 6));
    assert_eq!(shared.len(), 2);
    assert!(g2.service_for(&c.key()).is_none());
    // An unchanged service is the same compiled object, at the same indices.
    let g3 = Generation::rebuild(&g2, 3, &[a2.clone(), b2.clone(), named("d", 83, &[])]).unwrap();
    let (ia, ib) = (
        g2.service_by_name("a").unwrap(),
        g2.service_by_name("b").unwrap(),
    );
    assert!(std::ptr::eq(g2.service(ia), g3.service(ia)));
    assert!(std::ptr::eq(g2.service(ib), g3.service(ib)));
    assert_eq!(
        g3.backend_refs(&VipKey::new(Ipv4Addr::new(10, 200, 2, 12), 8080, 6))
            .len(),
        1
    );
    // Holes are never found.
    for (i, _) in g3.services() {
        assert_eq!(g3.find_endpoint(i, 0, 0), None);
    }
    assert!(g3.endpoints().any(EndpointRt::is_hole));
}

#[test]
fn a_failed_rebuild_leaves_the_previous_generation_usable() {
    let a = named("a", 80, &[ep_at(2, 11)]);
    let g1 = Generation::build_shared(1, &topo(), std::slice::from_ref(&a)).unwrap();
    let bad = named("b", 81, &[ep_at(2, 11), ep_at(2, 11)]);
    assert!(Generation::rebuild(&g1, 2, &[a.clone(), bad]).is_err());
    let clash = named("b", 80, &[]);
    assert!(Generation::rebuild(&g1, 2, &[a, clash]).is_err());
    assert_eq!(g1.services().count(), 1);
}

#[test]
fn churn_compacts_the_index_space() {
    let mut g = Generation::build_shared(1, &topo(), &[named("a", 80, &[])]).unwrap();
    for round in 0..300u32 {
        let n = (round % 50) as u8 + 1;
        let eps: Vec<EndpointSpec> = (0..n).map(|i| ep_at((round % 7) as u8, i + 1)).collect();
        let specs: Vec<Arc<ServiceSpec>> = (0..20u16)
            .map(|s| {
                named(
                    &format!("s{s}"),
                    1000 + s,
                    if s as u32 == round % 20 { &eps } else { &[] },
                )
            })
            .chain(std::iter::once(named("big", 80, &eps)))
            .collect();
        g = Generation::rebuild(&g, u64::from(round) + 2, &specs).unwrap();
        let full = Generation::build_shared(0, &topo(), &specs).unwrap();
        assert_eq!(fingerprint(&g), fingerprint(&full), "round {round}");
        let (live, all) = g.endpoint_occupancy();
        assert!(
            all <= 2 * live + build::COMPACT_SLACK + 200,
            "{live} of {all}"
        );
    }
}

fn many(services: u16, per: u8) -> Vec<Arc<ServiceSpec>> {
    (0..services)
        .map(|s| {
            let eps: Vec<EndpointSpec> = (0..per)
                .map(|i| EndpointSpec::new(Ipv4Addr::new(10, 200, 2, i + 1), 1000 + s))
                .collect();
            named(&format!("s{s}"), 2000 + s, &eps)
        })
        .collect()
}

fn with_spec(
    specs: &[Arc<ServiceSpec>],
    i: usize,
    f: impl FnOnce(&mut ServiceSpec),
) -> Vec<Arc<ServiceSpec>> {
    let mut v = specs.to_vec();
    let mut s = (*v[i]).clone();
    f(&mut s);
    v[i] = Arc::new(s);
    v
}

/// Chunks that cover indices `r` (the ones a change there may copy).
fn chunks_of(r: Range<u32>) -> usize {
    let c = endpoints::ENDPOINT_CHUNK as u32;
    if r.is_empty() {
        0
    } else {
        ((r.end - 1) / c - r.start / c + 1) as usize
    }
}

#[test]
fn a_weight_change_shares_every_other_chunk_shard_and_service() {
    let specs = many(40, 100);
    let g1 = Generation::build_shared(1, &topo(), &specs).unwrap();
    let specs2 = with_spec(&specs, 17, |s| s.endpoints[42].weight = 3);
    let g2 = Generation::rebuild(&g1, 2, &specs2).unwrap();
    let sh = g2.sharing(&g1);
    assert_eq!(
        sh.endpoint_chunks.1,
        4000usize.div_ceil(endpoints::ENDPOINT_CHUNK)
    );
    assert_eq!(
        sh.endpoint_chunks.0,
        sh.endpoint_chunks.1 - 1,
        "one endpoint written, one chunk copied: {sh:?}"
    );
    assert_eq!(sh.backend_shards.0, sh.backend_shards.1, "no backend moved");
    assert_eq!(sh.services, (39, 40));
    // Exactly the copied chunk is reported changed, and it holds the change.
    let changed: Vec<Range<u32>> = g2.changed_endpoints(&g1).collect();
    assert_eq!(changed.len(), 1);
    let idx = g2.service(17).endpoints.start + 42;
    assert!(changed[0].contains(&idx), "{changed:?} lacks {idx}");
    assert_eq!(changed[0].len(), endpoints::ENDPOINT_CHUNK);
    assert!(g2.same_routes(&g1));
    assert_eq!(
        fingerprint(&g2),
        fingerprint(&Generation::build_shared(2, &topo(), &specs2).unwrap())
    );
}

#[test]
fn growing_or_removing_a_service_copies_only_what_it_covers() {
    let specs = many(40, 100);
    let g1 = Generation::build_shared(1, &topo(), &specs).unwrap();
    // Growing past its block moves service 5 to a new block at the end.
    let specs2 = with_spec(&specs, 5, |s| {
        s.endpoints
            .push(EndpointSpec::new(Ipv4Addr::new(10, 200, 3, 1), 1005))
    });
    let g2 = Generation::rebuild(&g1, 2, &specs2).unwrap();
    let (old_block, new_block) = (g1.service(5).block.clone(), g2.service(5).block.clone());
    assert_ne!(old_block, new_block);
    let sh = g2.sharing(&g1);
    let touched = chunks_of(old_block) + chunks_of(new_block);
    assert!(
        sh.endpoint_chunks.1 - sh.endpoint_chunks.0 <= touched,
        "{sh:?}, {touched} chunks touched"
    );
    // 101 backends re-linked at new indices: at most that many shards.
    assert!(sh.backend_shards.1 - sh.backend_shards.0 <= 101, "{sh:?}");
    assert!(sh.backend_shards.0 > 0);
    assert_eq!(sh.services, (39, 40));
    assert_eq!(
        fingerprint(&g2),
        fingerprint(&Generation::build_shared(2, &topo(), &specs2).unwrap())
    );
    // Removing a service: its block's chunks and its backends' shards only.
    let mut specs3 = specs2.clone();
    specs3.remove(30);
    let g3 = Generation::rebuild(&g2, 3, &specs3).unwrap();
    let sh = g3.sharing(&g2);
    assert!(sh.endpoint_chunks.1 - sh.endpoint_chunks.0 <= chunks_of(g2.service(30).block.clone()));
    assert!(sh.backend_shards.1 - sh.backend_shards.0 <= 100, "{sh:?}");
    assert_eq!(
        fingerprint(&g3),
        fingerprint(&Generation::build_shared(3, &topo(), &specs3).unwrap())
    );
}

#[test]
fn a_new_vip_for_the_same_endpoints_is_reported_changed() {
    let specs = many(3, 10);
    let g1 = Generation::build_shared(1, &topo(), &specs).unwrap();
    let specs2 = with_spec(&specs, 1, |s| s.port = 9999);
    let g2 = Generation::rebuild(&g1, 2, &specs2).unwrap();
    // Every field of every endpoint is the same, but index i of service 1
    // now means another identity: it must be in a changed range.
    let changed: Vec<Range<u32>> = g2.changed_endpoints(&g1).collect();
    for i in g2.service(1).endpoints.clone() {
        assert!(
            changed.iter().any(|r| r.contains(&i)),
            "{i} not in {changed:?}"
        );
    }
    assert!(g2.service_for(&specs[1].key()).is_none());
    assert_eq!(g2.service_for(&specs2[1].key()), Some(1));
}

#[test]
fn a_learnt_neighbor_copies_only_chunks_whose_egress_changed() {
    let mut specs = many(20, 100);
    // One service whose endpoints sit on an address no neighbor entry resolves yet.
    specs.push(named(
        "far",
        3000,
        &[EndpointSpec::new(Ipv4Addr::new(10, 200, 2, 200), 80)],
    ));
    let mut t = topo();
    let g1 = Generation::build_shared(1, &t, &specs).unwrap();
    let far = g1.service_by_name("far").unwrap();
    let idx = g1.service(far).endpoints.start;
    assert_eq!(g1.endpoint(idx).egress, None);
    t.neighbors.push((
        Ipv4Addr::new(10, 200, 2, 200),
        MacAddr([2, 0, 0, 0, 2, 200]),
    ));
    let g2 = Generation::with_topology(&g1, 2, &t).unwrap();
    assert!(g2.endpoint(idx).egress.is_some());
    assert!(!g2.same_routes(&g1));
    let sh = g2.sharing(&g1);
    assert_eq!(sh.endpoint_chunks.0, sh.endpoint_chunks.1 - 1, "{sh:?}");
    assert_eq!(sh.backend_shards.0, sh.backend_shards.1);
}

#[test]
fn rebuild_checks_changed_services_against_the_unchanged_ones() {
    let specs = many(5, 3);
    let g1 = Generation::build_shared(1, &topo(), &specs).unwrap();
    let clash = |specs: &[Arc<ServiceSpec>]| Generation::rebuild(&g1, 2, specs).unwrap_err();
    // A new service on an unchanged one's VIP.
    let mut v = specs.clone();
    v.push(named("new", specs[2].port, &[]));
    let e = clash(&v);
    assert!(
        matches!(&e, GenerationError::DuplicateService { name, other, .. } if name == "new" && other == "s2"),
        "{e}"
    );
    // A changed service moving onto an unchanged one's VIP.
    let v = with_spec(&specs, 0, |s| s.port = specs[4].port);
    assert!(matches!(
        clash(&v),
        GenerationError::DuplicateService { .. }
    ));
    // Two new services with one name, or one VIP.
    let mut v = specs.clone();
    v.push(named("x", 7000, &[]));
    v.push(named("x", 7001, &[]));
    assert!(matches!(clash(&v), GenerationError::DuplicateName { .. }));
    let mut v = specs.clone();
    v.push(named("x", 7000, &[]));
    v.push(named("y", 7000, &[]));
    assert!(matches!(
        clash(&v),
        GenerationError::DuplicateService { .. }
    ));
    // An existing service listed twice.
    let mut v = specs.clone();
    v.push(with_spec(&specs, 1, |s| s.endpoints.clear())[1].clone());
    assert!(matches!(clash(&v), GenerationError::DuplicateName { .. }));
    // Two changed services swapping VIPs, and a new one on a removed one's
    // VIP, are fine, as in a full build.
    let mut v = with_spec(&specs, 0, |s| s.port = specs[1].port);
    v = with_spec(&v, 1, |s| s.port = specs[0].port);
    let removed = v.remove(3);
    v.push(named("new", removed.port, &[]));
    let g2 = Generation::rebuild(&g1, 2, &v).unwrap();
    assert_eq!(
        fingerprint(&g2),
        fingerprint(&Generation::build_shared(2, &topo(), &v).unwrap())
    );
    assert!(!g2.same_service_keys(&g1));
    let g3 = Generation::rebuild(&g2, 3, &with_spec(&v, 3, |s| s.endpoints[0].weight = 7)).unwrap();
    assert!(g3.same_service_keys(&g2));
}
