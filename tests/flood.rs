//! A spoofed flood cannot push real connections out of the flow table: the
//! way Linux conntrack never early-drops assured entries. Real connections
//! complete their handshakes through sluice (assured), then sit idle while
//! SYNs and bare ACKs from random sources (four times the table's
//! capacity, answered by the backends as real ones would: SYN-ACKs and
//! RSTs) fill the table; then the endpoint set grows so that Maglev would
//! move most of them. Every real connection must keep its backend.

mod common;

use common::*;
use sluice::service::Protocol;
use std::net::Ipv4Addr;

const CAPACITY: usize = 1024;
const REAL: u16 = 300;

/// A client -> VIP segment from any source (the flood's spoofed ones).
fn spoofed(src: Ipv4Addr, sport: u16, flags: u8, seq: u32) -> Vec<u8> {
    tcp_frame(
        GATEWAY_MAC,
        CLIENT_LINK_MAC,
        src,
        sport,
        VIP,
        80,
        flags,
        seq,
        1,
        b"",
    )
}

/// The backend's answer to a segment sluice forwarded to it, as its
/// kernel would give it: SYN-ACK to a SYN, RST to a stray ACK.
fn answer(forwarded: &[u8]) -> Vec<u8> {
    let s = inspect(forwarded);
    let b = backend_index(&s);
    let flags = if s.flags == SYN { SYN | ACK } else { RST };
    tcp_frame(
        backend_mac(b),
        BACKEND_LINK_MAC,
        s.dst,
        s.dport,
        s.src,
        s.sport,
        flags,
        77,
        s.seq.wrapping_add(1),
        b"",
    )
}

#[test]
fn a_spoofed_flood_never_evicts_a_real_connection() {
    let two = service(Protocol::Tcp, &eps(&[1, 1]));
    let mut rig = Rig::with_capacity(1, std::slice::from_ref(&two), CAPACITY);
    // Real connections: full handshakes through sluice.
    let mut pinned = Vec::new();
    for i in 0..REAL {
        let sport = 20_000 + i;
        let out = rig.send(0, &from_client(sport, SYN, 1000, 0));
        assert_eq!(out.len(), 1);
        let b = backend_index(&inspect(&out[0].1));
        let out = rig.send(1, &from_backend(b, sport, SYN | ACK, 5, 1001));
        assert_eq!(out.len(), 1, "SYN-ACK reaches the client");
        let out = rig.send(0, &from_client(sport, ACK, 1001, 6));
        assert_eq!(backend_index(&inspect(&out[0].1)), b);
        pinned.push((sport, b));
    }
    let c = rig.counters(0);
    assert_eq!(c.flows_assured, u64::from(REAL));

    // The flood: 4x the capacity in SYNs and as many bare ACKs, from
    // random sources, each answered by the backend it reached.
    let mut x: u32 = 0x9e37_79b9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut injected = 0u64;
    for round in 0..(8 * CAPACITY) {
        let r = next();
        let src = Ipv4Addr::new(198, 18, (r >> 8) as u8 | 1, r as u8);
        let flags = if round % 2 == 0 { SYN } else { ACK };
        let out = rig.send(0, &spoofed(src, (r >> 16) as u16 | 1024, flags, next()));
        injected += 1;
        for (port, f) in out {
            if port == 1 && !is_arp(&f) {
                rig.send(1, &answer(&f));
            }
        }
    }
    let during = rig.counters(0);
    assert!(
        during.flows_evicted > 0,
        "the flood filled the table: {during:?}"
    );
    assert_eq!(rig.workers[0].flow_count(), CAPACITY);
    eprintln!(
        "flood: {injected} spoofed frames into a {CAPACITY}-flow table with {REAL} real \
         connections; evicted {} (none assured), untracked {}, occupancy {}",
        during.flows_evicted,
        during.flows_untracked,
        rig.workers[0].flow_count()
    );

    // Scale 2 -> 6: Maglev alone would move about 2/3 of the connections.
    rig.publish(&[service(Protocol::Tcp, &eps(&[1, 1, 1, 1, 1, 1]))]);
    rig.poll_all();
    let mut would_move = 0;
    let mut kept = 0;
    for &(sport, b) in &pinned {
        let out = rig.send(0, &from_client(sport, ACK | PSH, 1001, 6));
        assert_eq!(out.len(), 1);
        let now = backend_index(&inspect(&out[0].1));
        assert_eq!(now, b, "real connection {sport} moved from b{b} to b{now}");
        kept += 1;
        let fresh = rig.send(0, &from_client(sport + 10_000, SYN, 5, 0));
        if backend_index(&inspect(&fresh[0].1)) != b {
            would_move += 1;
        }
    }
    eprintln!("after 2 -> 6 backends: {kept} of {REAL} kept their backend");
    assert!(would_move > 0);
    assert_eq!(kept, usize::from(REAL));
}

/// When every examined entry is a live assured connection, a new flow is
/// forwarded by Maglev without an entry and counted, never at a live
/// connection's expense; its connection still works (its later packets
/// are mid-flow pickups to the same backend).
#[test]
fn a_table_full_of_real_connections_forwards_new_flows_untracked() {
    let svc = [service(Protocol::Tcp, &eps(&[1, 1, 1]))];
    let mut rig = Rig::with_capacity(1, &svc, 16);
    for i in 0..16u16 {
        let sport = 30_000 + i;
        let out = rig.send(0, &from_client(sport, SYN, 1000, 0));
        let b = backend_index(&inspect(&out[0].1));
        rig.send(1, &from_backend(b, sport, SYN | ACK, 5, 1001));
        rig.send(0, &from_client(sport, ACK, 1001, 6));
    }
    assert_eq!(rig.workers[0].flow_count(), 16);
    let out = rig.send(0, &from_client(31_000, SYN, 9, 0));
    assert_eq!(out.len(), 1, "forwarded all the same");
    let b = backend_index(&inspect(&out[0].1));
    let c = rig.counters(0);
    assert_eq!((c.flows_untracked, c.flows_evicted), (1, 0));
    assert_eq!(rig.workers[0].flow_count(), 16);
    let out = rig.send(0, &from_client(31_000, ACK | PSH, 10, 1));
    assert_eq!(backend_index(&inspect(&out[0].1)), b);
}
