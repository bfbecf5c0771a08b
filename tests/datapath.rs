//! Golden packet-in / packet-out cases and the SCENARIOS.md patterns at
//! packet level, on the in-memory port.

mod common;

use std::collections::HashMap;

use common::*;
use sluice::flow::FlowKey;
use sluice::service::{EndpointState, Generation, Protocol};
use sluice::worker::DropReason;

fn one(out: Vec<(usize, Vec<u8>)>) -> (usize, Seen) {
    assert_eq!(
        out.len(),
        1,
        "expected exactly one frame out, got {}",
        out.len()
    );
    let (p, f) = out.into_iter().next().unwrap();
    (p, inspect(&f))
}

#[test]
fn golden_syn_is_dnated_to_a_backend_with_l2_and_checksums_rewritten() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1, 1, 1]))]);
    let (port, s) = one(rig.send(0, &from_client(40000, SYN, 1000, 0)));
    assert_eq!(port, 1);
    assert_eq!(s.src_mac, BACKEND_LINK_MAC);
    let b = backend_index(&s);
    assert!((1..=3).contains(&b));
    assert_eq!(s.dst_mac, backend_mac(b));
    assert_eq!((s.src, s.sport), (CLIENT, 40000));
    assert_eq!(s.dport, 8080);
    assert_eq!(s.ttl, 63);
    assert_eq!((s.flags, s.seq), (SYN, 1000));
    let c = rig.counters(0);
    assert_eq!((c.forwarded, c.flows_created), (1, 1));
}

#[test]
fn golden_reply_is_reverse_dnated_to_the_vip_and_routed_via_the_gateway() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1, 1, 1]))]);
    let (_, s) = one(rig.send(0, &from_client(40001, SYN, 1000, 0)));
    let b = backend_index(&s);
    let (port, r) = one(rig.send(1, &from_backend(b, 40001, SYN | ACK, 5000, 1001)));
    assert_eq!(port, 0);
    assert_eq!((r.src, r.sport, r.dst, r.dport), (VIP, 80, CLIENT, 40001));
    assert_eq!((r.src_mac, r.ttl), (CLIENT_LINK_MAC, 63));
    // The client is on-link (a static neighbor), so it is reached directly.
    assert_eq!(r.dst_mac, sluice::wire::MacAddr([2, 0, 0, 0, 1, 7]));
    assert_eq!(rig.counters(0).replies, 1);
}

#[test]
fn payload_and_udp_survive_the_rewrite() {
    let mut rig = Rig::new(1, &[service(Protocol::Udp, &eps(&[1, 1]))]);
    let out = rig.send(0, &udp_frame(CLIENT, 5353, VIP, 80, b"hello, backend"));
    assert_eq!(out.len(), 1);
    let (p, f) = &out[0];
    assert_eq!(*p, 1);
    let s = inspect(f);
    assert_eq!(s.dport, 8080);
    assert!(f.ends_with(b"hello, backend"));
    let b = backend_index(&s);
    // Same datagram flow -> same backend.
    for _ in 0..5 {
        let out = rig.send(0, &udp_frame(CLIENT, 5353, VIP, 80, b"again"));
        assert_eq!(backend_index(&inspect(&out[0].1)), b);
    }
}

/// S1 at packet level: one client, sequential short connections, spread in
/// proportion to weights whatever the order endpoints were listed in.
#[test]
fn s1_sequential_connections_spread_by_weight() {
    for weights in [vec![1u32, 1], vec![1, 1, 2, 2, 4]] {
        let mut list = eps(&weights);
        list.reverse();
        let mut rig = Rig::new(1, &[service(Protocol::Tcp, &list)]);
        let mut hits: HashMap<u8, u32> = HashMap::new();
        for i in 0..2000u32 {
            let sport = 20000 + i as u16;
            let (_, s) = one(rig.send(0, &from_client(sport, SYN, i, 0)));
            let b = backend_index(&s);
            *hits.entry(b).or_default() += 1;
            // Complete and close the connection as a real client would.
            rig.send(1, &from_backend(b, sport, SYN | ACK, 7, i + 1));
            rig.send(0, &from_client(sport, ACK, i + 1, 8));
            rig.send(0, &from_client(sport, FIN | ACK, i + 1, 8));
            rig.send(1, &from_backend(b, sport, FIN | ACK, 8, i + 2));
            rig.send(0, &from_client(sport, ACK, i + 2, 9));
        }
        let total: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let share = *hits.get(&(i as u8 + 1)).unwrap_or(&0) as f64 / 2000.0;
            let want = *w as f64 / total as f64;
            assert!(
                (share - want).abs() <= 0.05,
                "weights {weights:?}: backend {} got {:.3}, weight share {:.3}",
                i + 1,
                share,
                want
            );
        }
    }
}

/// S3: a SYN that reuses the tuple of a closed flow, or of a flow to a
/// draining backend, is scheduled afresh; a draining backend never gets a
/// new connection but keeps its established ones; a SYN retransmission
/// keeps its backend.
#[test]
fn s3_reused_tuples_are_rescheduled_and_draining_gets_no_new_flows() {
    let specs = eps(&[1, 1, 1]);
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &specs)]);
    // Find a source port whose flow lands on some backend, establish it.
    let (_, s) = one(rig.send(0, &from_client(30000, SYN, 100, 0)));
    let b = backend_index(&s);
    // Retransmitted SYN (same ISN): same backend.
    let (_, s2) = one(rig.send(0, &from_client(30000, SYN, 100, 0)));
    assert_eq!(backend_index(&s2), b);
    rig.send(1, &from_backend(b, 30000, SYN | ACK, 900, 101));
    rig.send(0, &from_client(30000, ACK, 101, 901));

    // Drain that backend.
    let mut drained = specs.clone();
    drained[(b - 1) as usize].state = EndpointState::Draining;
    rig.publish(&[service(Protocol::Tcp, &drained)]);
    // Established flow keeps going to the draining backend.
    let (_, d) = one(rig.send(0, &from_client(30000, ACK | PSH, 101, 901)));
    assert_eq!(backend_index(&d), b);
    // A new SYN on the same tuple (new ISN, as after TIME_WAIT reuse) is a
    // new connection and must not go to the draining backend.
    let (_, n) = one(rig.send(0, &from_client(30000, SYN, 555_555, 0)));
    assert_ne!(backend_index(&n), b);
    assert_eq!(rig.counters(0).flows_rescheduled, 1);
    // And no new connection at all reaches it.
    for i in 0..300u16 {
        let (_, s) = one(rig.send(0, &from_client(31000 + i, SYN, 1, 0)));
        assert_ne!(backend_index(&s), b, "new flow sent to a draining backend");
    }
}

#[test]
fn s3_syn_after_close_is_scheduled_by_maglev_not_by_the_old_entry() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1, 1, 1, 1]))]);
    let g = Generation::build(
        9,
        &topology(),
        &[service(Protocol::Tcp, &eps(&[1, 1, 1, 1]))],
    )
    .unwrap();
    let mut moved = 0;
    for i in 0..200u16 {
        let sport = 32000 + i;
        let (_, s) = one(rig.send(0, &from_client(sport, SYN, 10, 0)));
        let b = backend_index(&s);
        rig.send(1, &from_backend(b, sport, SYN | ACK, 20, 11));
        rig.send(0, &from_client(sport, ACK, 11, 21));
        rig.send(0, &from_client(sport, RST | ACK, 11, 21));
        // New connection on the same tuple: Maglev decides, as for any new flow.
        let (_, n) = one(rig.send(0, &from_client(sport, SYN, 99_999, 0)));
        let key = FlowKey {
            client_addr: u32::from(CLIENT),
            vip_addr: u32::from(VIP),
            client_port: sport,
            vip_port: 80,
            proto: 6,
        };
        let want = g.choose_new(0, key.hash_v1(g.service(0).seed)).unwrap();
        assert_eq!(u32::from(n.dst), g.endpoint(want).addr);
        moved += u32::from(backend_index(&n) != b);
        let _ = moved;
    }
}

/// `active_flows` counts open connections: one that closes (RST, or FINs
/// both ways and the last ACK) leaves its backend's count at once although
/// its entry stays to catch late segments, and evicting that entry later
/// does not count it out twice. Without this, `ctl top` showed recently
/// closed connections as load (found by the S2 end-to-end test).
#[test]
fn active_flows_count_open_connections_only() {
    let mut rig = Rig::with_capacity(1, &[service(Protocol::Tcp, &eps(&[1, 1]))], 3);
    let open = |rig: &Rig| -> u64 {
        rig.workers[0]
            .endpoint_counters()
            .iter()
            .map(|c| c.active_flows)
            .sum()
    };
    let mut backend = [0u8; 3];
    for (i, sport) in [1000u16, 1001, 1002].into_iter().enumerate() {
        let (_, s) = one(rig.send(0, &from_client(sport, SYN, 10, 0)));
        backend[i] = backend_index(&s);
        rig.send(1, &from_backend(backend[i], sport, SYN | ACK, 20, 11));
        rig.send(0, &from_client(sport, ACK, 11, 21));
    }
    assert_eq!((open(&rig), rig.workers[0].flow_count()), (3, 3));
    rig.send(0, &from_client(1000, RST | ACK, 11, 21));
    assert_eq!((open(&rig), rig.workers[0].flow_count()), (2, 3));
    rig.send(0, &from_client(1001, FIN | ACK, 11, 21));
    assert_eq!(open(&rig), 2, "half-closed is still open");
    rig.send(1, &from_backend(backend[1], 1001, FIN | ACK, 21, 12));
    rig.send(0, &from_client(1001, ACK, 12, 22));
    assert_eq!((open(&rig), rig.workers[0].flow_count()), (1, 3));
    // A late segment of the closed flow changes nothing.
    rig.send(0, &from_client(1001, ACK, 12, 22));
    assert_eq!(open(&rig), 1);
    // The table is full: a new flow evicts a closed entry, which was
    // already out of the count.
    one(rig.send(0, &from_client(1003, SYN, 10, 0)));
    assert_eq!(rig.counters(0).flows_evicted, 1);
    assert_eq!((open(&rig), rig.workers[0].flow_count()), (2, 3));
}

/// S4a: a mid-flow packet whose flow this instance never saw goes to the
/// backend any instance with the same endpoint set picks.
#[test]
fn s4a_mid_flow_miss_goes_where_maglev_says_on_every_instance() {
    let specs = [service(Protocol::Tcp, &eps(&[1, 2, 1, 3]))];
    let mut a = Rig::new(1, &specs);
    let mut b = Rig::new(1, &specs);
    for i in 0..300u16 {
        let sport = 41000 + i;
        let (_, sa) = one(a.send(0, &from_client(sport, SYN, 1, 0)));
        // Instance b has never seen the SYN (failover / restart).
        let (_, sb) = one(b.send(0, &from_client(sport, ACK | PSH, 2, 77)));
        assert_eq!(sa.dst, sb.dst, "instances disagree for port {sport}");
    }
    let c = b.counters(0);
    assert_eq!(c.table_misses, 300);
    assert_eq!(c.total_drops(), 0);
}

/// S4b: when a flow's backend is removed or fails, the client's next
/// packet is answered with a RST (SEQ = the client's ACK) at once.
#[test]
fn s4b_removed_backend_resets_the_client() {
    for how in ["remove", "down"] {
        let specs = eps(&[1, 1, 1]);
        let mut rig = Rig::new(1, &[service(Protocol::Tcp, &specs)]);
        let (_, s) = one(rig.send(0, &from_client(42000, SYN, 10, 0)));
        let b = backend_index(&s);
        rig.send(1, &from_backend(b, 42000, SYN | ACK, 500, 11));
        rig.send(0, &from_client(42000, ACK, 11, 501));
        let mut next = specs.clone();
        if how == "remove" {
            next.remove((b - 1) as usize);
        } else {
            next[(b - 1) as usize].state = EndpointState::Down;
        }
        rig.publish(&[service(Protocol::Tcp, &next)]);
        let (port, r) = one(rig.send(0, &from_client(42000, ACK | PSH, 11, 501)));
        assert_eq!(port, 0, "{how}: RST goes back towards the client");
        assert_eq!(r.flags & RST, RST, "{how}");
        assert_eq!((r.src, r.sport, r.dst, r.dport), (VIP, 80, CLIENT, 42000));
        assert_eq!(r.seq, 501, "{how}: RST must carry SEQ = SEG.ACK");
        assert_eq!(r.dst_mac, GATEWAY_MAC);
        assert_eq!(rig.counters(0).resets, 1);
        // The flow is forgotten: a new SYN is scheduled on the live set.
        let (_, n) = one(rig.send(0, &from_client(42000, SYN, 999, 0)));
        assert_ne!(backend_index(&n), b);
    }
}

#[test]
fn service_without_endpoints_refuses_syn_with_rst() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &[])]);
    let (port, r) = one(rig.send(0, &from_client(43000, SYN, 77, 0)));
    assert_eq!(port, 0);
    assert_eq!(r.flags, RST | ACK);
    assert_eq!(r.ack, 78);
}

#[test]
fn packets_for_unknown_services_and_from_strangers_are_dropped_and_counted() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1]))]);
    let other = tcp_frame(
        GATEWAY_MAC,
        CLIENT_LINK_MAC,
        CLIENT,
        1,
        VIP,
        81,
        SYN,
        0,
        0,
        b"",
    );
    assert!(rig.send(0, &other).is_empty());
    let stranger = tcp_frame(
        GATEWAY_MAC,
        BACKEND_LINK_MAC,
        backend(9),
        8080,
        CLIENT,
        5,
        ACK,
        0,
        0,
        b"",
    );
    assert!(rig.send(1, &stranger).is_empty());
    assert_eq!(rig.counters(0).drops[DropReason::NoService as usize], 2);
}

/// Frames handed to the wrong worker reach the owner over the handoff ring
/// and leave from the owner's queue.
#[test]
fn misdelivered_packets_are_handed_to_the_owner() {
    let mut rig = Rig::new(2, &[service(Protocol::Tcp, &eps(&[1, 1]))]);
    let mut handed = 0;
    for i in 0..64u16 {
        let sport = 44000 + i;
        let owner = sluice::hash::owner_worker(u32::from(CLIENT), sport, 2) as usize;
        let wrong = 1 - owner;
        let out = rig.send_to(wrong, 0, &from_client(sport, SYN, 1, 0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, owner, "sent from the owner's queue");
        handed += 1;
        // The reply arriving at the wrong worker is handed over too, and
        // finds the owner's flow entry.
        let b = backend_index(&inspect(&out[0].2));
        let out = rig.send_to(wrong, 1, &from_backend(b, sport, SYN | ACK, 5, 2));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, owner);
    }
    let c0 = rig.counters(0);
    let c1 = rig.counters(1);
    assert_eq!(c0.handoffs_out + c1.handoffs_out, 2 * handed);
    assert_eq!(c0.handoffs_in + c1.handoffs_in, 2 * handed);
    assert_eq!(c0.flows_created + c1.flows_created, handed);
}

/// A packet that dies of TTL creates, moves and refreshes nothing, and its
/// sender hears of it (ICMP time exceeded from sluice's address on the
/// link, as from any router).
#[test]
fn ttl_expired_packets_are_answered_and_leave_no_flow_behind() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1, 1]))]);
    let mut syn = from_client(46000, SYN, 1, 0);
    syn[22] = 1;
    let mut ip = sluice::wire::ipv4::Ipv4Packet::new_unchecked(&mut syn[14..]);
    ip.fill_checksum();
    let out = rig.send(0, &syn);
    assert_eq!(out.len(), 1);
    let icmp = common::oracle::check_ipv4(&out[0].1).expect("a valid ICMP error");
    assert_eq!((icmp.proto, icmp.l4[0], icmp.l4[1]), (1, 11, 0));
    assert_eq!(icmp.src, [10, 200, 1, 254]);
    assert_eq!(icmp.dst, CLIENT.octets());
    let c = rig.counters(0);
    assert_eq!((c.flows_created, c.icmp_errors, c.total_drops()), (0, 1, 0));
    assert_eq!(rig.workers[0].flow_count(), 0);
}

/// A frame for another host's MAC (a switch flooding unicast it has not
/// learnt, seen by a port in promiscuous mode) is dropped as not_our_mac on
/// both paths: a new flow's SYN and an established flow's segment. Every
/// instance on the segment would forward it otherwise.
#[test]
fn frames_for_another_hosts_mac_are_dropped_not_forwarded() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1, 1]))]);
    let other = |mut f: Vec<u8>| {
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0x99, 0x99]);
        f
    };
    // A SYN to someone else's MAC creates nothing.
    assert!(rig
        .send(0, &other(from_client(40100, SYN, 1, 0)))
        .is_empty());
    let c = rig.counters(0);
    assert_eq!(c.drops[DropReason::NotOurMac as usize], 1);
    assert_eq!(c.flows_created, 0);
    // An established flow: ours goes through (fast path), a copy to
    // another MAC does not.
    let (_, s) = one(rig.send(0, &from_client(40101, SYN, 1, 0)));
    let b = backend_index(&s);
    one(rig.send(1, &from_backend(b, 40101, SYN | ACK, 7, 2)));
    one(rig.send(0, &from_client(40101, ACK, 2, 8)));
    one(rig.send(0, &from_client(40101, ACK | PSH, 2, 8)));
    assert!(rig
        .send(0, &other(from_client(40101, ACK | PSH, 2, 8)))
        .is_empty());
    assert!(rig
        .send(1, &other(from_backend(b, 40101, ACK, 8, 2)))
        .is_empty());
    let c = rig.counters(0);
    assert_eq!(c.drops[DropReason::NotOurMac as usize], 3);
    // Broadcast is everyone's (ARP requests, and the kernel too accepts
    // IPv4 in a broadcast frame by default).
    let mut bcast = from_client(40102, SYN, 1, 0);
    bcast[..6].copy_from_slice(&[0xff; 6]);
    one(rig.send(0, &bcast));
    assert_eq!(rig.counters(0).drops[DropReason::NotOurMac as usize], 3);
}
