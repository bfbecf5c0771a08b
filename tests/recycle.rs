//! Connection recycling (S2) on the in-memory port: a long-lived flow is
//! reset both ways, in-window, only once it is old enough and quiet in
//! both directions; a busy flow never is; the rate bound and the
//! skewed-only option hold; the RSTs are valid to an independent reader.

mod common;

use std::time::Duration;

use common::oracle::{self, check_ipv4};
use common::*;
use sluice::service::{Protocol, RecyclePolicy, ServiceSpec};

fn policy(max_age_ms: u32, idle_gap_ms: u32) -> RecyclePolicy {
    RecyclePolicy {
        max_age_ms,
        idle_gap_ms,
        jitter_ms: 0,
        max_per_sec: 1000,
        skewed_only: false,
    }
}

fn recycled(weights: &[u32], p: RecyclePolicy) -> ServiceSpec {
    let mut s = service(Protocol::Tcp, &eps(weights));
    s.recycle = Some(p);
    s
}

/// A full handshake through the rig; returns the backend index.
fn open(rig: &mut Rig, sport: u16) -> u8 {
    let out = rig.send(0, &from_client(sport, SYN, 1000, 0));
    // The SYN on its way to a backend (on a slow machine, an older flow's
    // recycling RSTs may leave in the same poll).
    let syn = out
        .iter()
        .map(|(_, f)| inspect(f))
        .find(|s| s.flags == SYN && s.sport == sport)
        .expect("the SYN is forwarded");
    let b = backend_index(&syn);
    rig.send(1, &from_backend(b, sport, SYN | ACK, 5000, 1001));
    rig.send(0, &from_client(sport, ACK, 1001, 5001));
    b
}

/// A request (`len` bytes) and its response (`rlen` bytes), each
/// acknowledged, so both sides' next sequence numbers move.
fn exchange(rig: &mut Rig, sport: u16, b: u8, seq: u32, ack: u32, len: usize, rlen: usize) {
    let req = vec![b'q'; len];
    let f = tcp_frame(
        GATEWAY_MAC,
        CLIENT_LINK_MAC,
        CLIENT,
        sport,
        VIP,
        80,
        PSH | ACK,
        seq,
        ack,
        &req,
    );
    rig.send(0, &f);
    let resp = vec![b'r'; rlen];
    let f = tcp_frame(
        backend_mac(b),
        BACKEND_LINK_MAC,
        backend(b),
        8080,
        CLIENT,
        sport,
        PSH | ACK,
        ack,
        seq + len as u32,
        &resp,
    );
    rig.send(1, &f);
    rig.send(
        0,
        &from_client(sport, ACK, seq + len as u32, ack + rlen as u32),
    );
}

#[test]
fn an_old_idle_flow_is_reset_both_ways_in_window() {
    let mut rig = Rig::with_capacity(1, &[recycled(&[1, 1], policy(150, 40))], 1024);
    let b = open(&mut rig, 45_000);
    exchange(&mut rig, 45_000, b, 1001, 5001, 100, 300);
    // Young: nothing, however idle.
    std::thread::sleep(Duration::from_millis(60));
    assert!(rig.poll_all().iter().all(|(_, _, f)| is_arp(f)));
    std::thread::sleep(Duration::from_millis(150));
    let out: Vec<_> = rig
        .poll_all()
        .into_iter()
        .filter(|o| !is_arp(&o.2))
        .collect();
    assert_eq!(out.len(), 2, "one RST each way: {out:?}");
    let to_client = out.iter().find(|o| o.1 == 0).expect("a RST to the client");
    let to_backend = out.iter().find(|o| o.1 == 1).expect("a RST to the backend");
    let c = check_ipv4(&to_client.2).expect("valid RST to the client");
    let t = oracle::tcp(&c);
    assert_eq!((c.src, c.dst), (VIP.octets(), CLIENT.octets()));
    assert_eq!((t.sport, t.dport, t.flags), (80, 45_000, RST));
    assert_eq!(t.seq, 5001 + 300, "the client's next expected byte");
    assert_eq!(c.dst_mac, [2, 0, 0, 0, 1, 7]);
    let k = check_ipv4(&to_backend.2).expect("valid RST to the backend");
    let t = oracle::tcp(&k);
    assert_eq!((k.src, k.dst), (CLIENT.octets(), backend(b).octets()));
    assert_eq!((t.sport, t.dport, t.flags), (45_000, 8080, RST));
    assert_eq!(t.seq, 1001 + 100, "what the backend acknowledged");
    assert_eq!(k.dst_mac, backend_mac(b).0);
    let c = rig.counters(0);
    assert_eq!(c.flows_recycled, 1);
    assert_eq!(
        rig.workers[0]
            .endpoint_counters()
            .iter()
            .map(|e| e.active_flows)
            .sum::<u64>(),
        0
    );
    assert_eq!(
        rig.workers[0]
            .endpoint_counters()
            .iter()
            .map(|e| e.flows_recycled)
            .sum::<u64>(),
        1
    );
    // Reset once: the closed entry is not recycled again.
    std::thread::sleep(Duration::from_millis(60));
    assert!(rig.poll_all().iter().all(|(_, _, f)| is_arp(f)));
}

#[test]
fn a_flow_never_idle_for_the_gap_is_never_reset() {
    let mut rig = Rig::with_capacity(1, &[recycled(&[1], policy(100, 250))], 1024);
    let b = open(&mut rig, 45_100);
    let (mut seq, mut ack) = (1001u32, 5001u32);
    for _ in 0..40 {
        exchange(&mut rig, 45_100, b, seq, ack, 10, 10);
        seq += 10;
        ack += 10;
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(rig.counters(0).flows_recycled, 0);
    }
}

#[test]
fn flows_not_assured_are_not_recycled() {
    let mut rig = Rig::with_capacity(1, &[recycled(&[1], policy(100, 20))], 1024);
    // A mid-stream pickup the backend never answers.
    rig.send(0, &from_client(45_200, ACK | PSH, 1, 1));
    std::thread::sleep(Duration::from_millis(200));
    rig.poll_all();
    assert_eq!(rig.counters(0).flows_recycled, 0);
}

#[test]
fn the_rate_bound_spreads_recycling_over_time() {
    let mut p = policy(100, 20);
    p.max_per_sec = 5;
    let mut rig = Rig::with_capacity(1, &[recycled(&[1, 1], p)], 1024);
    for i in 0..20 {
        open(&mut rig, 46_000 + i);
    }
    std::thread::sleep(Duration::from_millis(150));
    let start = std::time::Instant::now();
    rig.poll_all();
    let first = rig.counters(0).flows_recycled;
    let slack = start.elapsed().as_millis() as u64 / 200 + 1;
    assert!(
        (5..=5 + slack).contains(&first),
        "a burst of the rate (5), then 5/s: {first}"
    );
    std::thread::sleep(Duration::from_millis(450));
    rig.poll_all();
    let later = rig.counters(0).flows_recycled;
    assert!(later > first && later < 20, "{first} then {later}");
}

#[test]
fn skewed_only_recycles_the_overloaded_backends_flows_until_even() {
    let mut p = policy(100, 20);
    p.skewed_only = true;
    // Place flows by tuple until one backend holds 3 and the other 1.
    let mut rig = Rig::with_capacity(1, &[recycled(&[1, 1], p)], 1024);
    let mut per = [Vec::new(), Vec::new()];
    let mut sport = 47_000;
    while per[0].len() < 3 || per[1].is_empty() {
        let b = open(&mut rig, sport);
        // Three flows on b1, one on b2.
        let want = if b == 1 {
            per[0].len() < 3
        } else {
            per[1].is_empty()
        };
        if want {
            per[usize::from(b - 1)].push(sport);
        } else {
            // Close the extra flow so it does not count.
            rig.send(0, &from_client(sport, RST, 1001, 0));
        }
        sport += 1;
    }
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..4 {
        rig.poll_all();
    }
    let ec = rig.workers[0].endpoint_counters().to_vec();
    let g = rig.workers[0].generation().clone();
    let idx = |b: u8| {
        g.endpoints()
            .position(|e| e.addr == u32::from(backend(b)))
            .unwrap()
    };
    assert_eq!(ec[idx(1)].flows_recycled, 2, "b1 down to an even share");
    assert_eq!(ec[idx(2)].flows_recycled, 0, "b2 under its share");
    assert_eq!((ec[idx(1)].active_flows, ec[idx(2)].active_flows), (1, 1));
}

#[test]
fn recycling_is_refused_for_udp_and_bad_values() {
    let mut s = ServiceSpec::new("dns", VIP, 53, Protocol::Udp);
    s.recycle = Some(policy(1000, 100));
    assert!(sluice::service::check_recycle(&s)
        .unwrap_err()
        .contains("TCP services only"));
    let mut t = service(Protocol::Tcp, &eps(&[1]));
    t.recycle = Some(policy(1000, 1));
    assert!(sluice::service::check_recycle(&t)
        .unwrap_err()
        .contains("idle_gap"));
    t.recycle = Some(RecyclePolicy {
        max_per_sec: 0,
        ..policy(1000, 100)
    });
    assert!(sluice::service::check_recycle(&t)
        .unwrap_err()
        .contains("max_per_sec"));
}
