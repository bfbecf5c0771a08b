//! Every frame sluice originates (TCP RSTs, ICMP errors, echo replies, ARP)
//! checked by an independent reader (`common::oracle`: RFC offsets and a
//! from-scratch checksum, no code shared with `sluice::wire`), for inputs
//! with IP options, TCP options, payload and VLAN tags: lengths and
//! checksums are the answer's own, never the received frame's.

mod common;

use std::net::Ipv4Addr;

use common::oracle::{self, check_arp, check_ipv4, ones_sum};
use common::*;
use proptest::prelude::*;
use sluice::control::arp::{ArpLink, ArpTimers, Neighbors};
use sluice::service::Protocol;
use sluice::wire::MacAddr;
use sluice::worker::DropReason;

/// A client -> VIP frame built by hand: optional 802.1Q tag, `ip_opts`
/// bytes of IP options (NOPs), `tcp_opts` bytes of TCP options (NOPs),
/// then `payload`. Checksums from the oracle's sum.
#[allow(clippy::too_many_arguments)]
fn client_frame(
    vlan: bool,
    ip_opts: usize,
    tcp_opts: usize,
    payload: &[u8],
    sport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    ttl: u8,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&CLIENT_LINK_MAC.0);
    f.extend_from_slice(&GATEWAY_MAC.0);
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let l3 = f.len();
    let ihl = 20 + ip_opts;
    let thl = 20 + tcp_opts;
    let total = ihl + thl + payload.len();
    f.extend_from_slice(&[0x40 | (ihl / 4) as u8, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, ttl, 6, 0, 0]);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&VIP.octets());
    f.extend(std::iter::repeat(1u8).take(ip_opts));
    let l4 = f.len();
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    // Reserved bits and NS set on purpose: a RST must not copy them.
    f.extend_from_slice(&[((thl / 4) << 4) as u8 | 0x0f, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend(std::iter::repeat(1u8).take(tcp_opts));
    f.extend_from_slice(payload);
    let c = !ones_sum(&f[l3..l3 + ihl]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&f[l3 + 12..l3 + 20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((thl + payload.len()) as u16).to_be_bytes());
    pseudo.extend_from_slice(&f[l4..]);
    let c = !ones_sum(&pseudo);
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    // Ethernet padding after the IP packet, as short frames arrive.
    f.extend_from_slice(&[0xee; 6]);
    f
}

fn udp_client_frame(vlan: bool, payload: &[u8], ttl: u8) -> Vec<u8> {
    let mut f = udp_frame(CLIENT, 5353, VIP, 80, payload);
    f[22] = ttl;
    let c = !ones_sum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&c.to_be_bytes());
    if vlan {
        f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    }
    f
}

/// The RST a client must get for `input` (RFC 9293 3.10.7.1), checked
/// field by field against the input as the oracle reads it.
fn assert_valid_rst(out: &[u8], input: &[u8]) {
    let o = check_ipv4(out).unwrap_or_else(|e| panic!("RST rejected: {e}"));
    let i = check_ipv4(input).expect("input valid");
    let (ti, to) = (oracle::tcp(&i), oracle::tcp(&o));
    assert_eq!(o.vlan, i.vlan, "VLAN kept");
    assert_eq!((o.dst_mac, o.src_mac), (i.src_mac, i.dst_mac));
    assert_eq!((o.src, o.dst), (i.dst, i.src));
    assert_eq!((o.ihl, o.total_len), (20, 40), "a bare 40-byte RST");
    assert_eq!(out.len(), o.l3 + 40, "no trailing bytes");
    assert_eq!((to.sport, to.dport), (ti.dport, ti.sport));
    assert_eq!(to.offset_byte, 0x50, "data offset 5, reserved bits clear");
    assert_eq!((to.window, to.urgent, to.payload_len), (0, 0, 0));
    if ti.flags & ACK != 0 {
        assert_eq!((to.flags, to.seq, to.ack), (RST, ti.ack, 0));
    } else {
        let len =
            ti.payload_len as u32 + u32::from(ti.flags & SYN != 0) + u32::from(ti.flags & FIN != 0);
        assert_eq!((to.flags, to.seq), (RST | ACK, 0));
        assert_eq!(to.ack, ti.seq.wrapping_add(len));
    }
}

fn one_out(out: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let data: Vec<_> = out.iter().filter(|(_, f)| !is_arp(f)).collect();
    assert_eq!(data.len(), 1, "one frame out: {out:?}");
    assert_eq!(data[0].0, 0, "answers leave by the port they came in");
    data[0].1.clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// S4b: a client whose backend was removed gets a valid RST for any
    /// segment shape (options, payload, VLAN).
    #[test]
    fn rst_for_a_removed_backend_is_valid_for_any_segment(
        vlan in any::<bool>(),
        ip_opts in (0usize..=10).prop_map(|w| w * 4),
        tcp_opts in (0usize..=10).prop_map(|w| w * 4),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        flags in prop_oneof![Just(ACK), Just(ACK | PSH), Just(FIN | ACK), Just(0u8), Just(FIN)],
        seq in any::<u32>(),
        ack in any::<u32>(),
    ) {
        let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1]))]);
        let sport = 41_000;
        let out = rig.send(0, &from_client(sport, SYN, 7, 0));
        prop_assert_eq!(out.len(), 1);
        // The backend removed: the service has no endpoint left, so nothing
        // but sluice could answer.
        rig.publish(&[service(Protocol::Tcp, &[])]);
        rig.poll_all();
        let input = client_frame(vlan, ip_opts, tcp_opts, &payload, sport, flags, seq, ack, 64);
        let out = one_out(&rig.send(0, &input));
        assert_valid_rst(&out, &input);
        prop_assert_eq!(rig.counters(0).resets, 1);
    }

    /// A SYN (with options, as every real SYN has) to a service with no
    /// endpoint is refused with a valid RST+ACK.
    #[test]
    fn rst_for_a_service_without_endpoints_is_valid(
        vlan in any::<bool>(),
        ip_opts in (0usize..=10).prop_map(|w| w * 4),
        tcp_opts in (0usize..=10).prop_map(|w| w * 4),
        seq in any::<u32>(),
    ) {
        let mut rig = Rig::new(1, &[service(Protocol::Tcp, &[])]);
        let input = client_frame(vlan, ip_opts, tcp_opts, b"", 42_000, SYN, seq, 0, 64);
        let out = one_out(&rig.send(0, &input));
        assert_valid_rst(&out, &input);
    }

    /// ICMP port unreachable for UDP to a service with no endpoint, and time
    /// exceeded for a TTL that runs out: valid, from the right address,
    /// quoting the packet (its header and at least 8 bytes, at most 576
    /// bytes of IP in all).
    #[test]
    fn icmp_errors_are_valid_and_quote_the_packet(
        vlan in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1200),
        ttl_runs_out in any::<bool>(),
    ) {
        let (mut rig, input) = if ttl_runs_out {
            let rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1]))]);
            (rig, client_frame(vlan, 4, 0, &payload, 43_000, ACK, 1, 1, 1))
        } else {
            let mut udp = sluice::service::ServiceSpec::new("dns", VIP, 80, Protocol::Udp);
            udp.endpoints = vec![];
            (Rig::new(1, &[udp]), udp_client_frame(vlan, &payload, 64))
        };
        let out = one_out(&rig.send(0, &input));
        let o = check_ipv4(&out).unwrap_or_else(|e| panic!("ICMP rejected: {e}"));
        let i = check_ipv4(&input).unwrap();
        prop_assert_eq!(o.proto, 1);
        prop_assert_eq!(o.vlan, i.vlan);
        prop_assert_eq!((o.dst_mac, o.src_mac), (i.src_mac, i.dst_mac));
        prop_assert_eq!(o.dst, i.src);
        let (t, code, src) = if ttl_runs_out {
            (11, 0, [10, 200, 1, 254])
        } else {
            (3, 3, VIP.octets())
        };
        prop_assert_eq!((o.l4[0], o.l4[1]), (t, code));
        prop_assert_eq!(o.src, src);
        prop_assert!(o.total_len <= 576);
        prop_assert_eq!(out.len(), o.l3 + o.total_len);
        let quoted = &o.l4[8..];
        let original = &input[i.l3..i.l3 + i.total_len];
        prop_assert!(quoted.len() >= i.ihl + 8);
        prop_assert_eq!(quoted, &original[..quoted.len()]);
        let c = rig.counters(0);
        prop_assert_eq!((c.icmp_errors, c.total_drops()), (1, 0));
        prop_assert_eq!(rig.workers[0].flow_count(), 0);
    }

    /// Echo requests to the VIP, with IP options and any payload: the reply
    /// is valid, carries no options, and echoes identifier, sequence and data.
    #[test]
    fn echo_replies_are_valid(
        vlan in any::<bool>(),
        ip_opts in (0usize..=10).prop_map(|w| w * 4),
        data in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut rig = Rig::new(1, &[service(Protocol::Tcp, &eps(&[1]))]);
        let mut f = Vec::new();
        f.extend_from_slice(&CLIENT_LINK_MAC.0);
        f.extend_from_slice(&GATEWAY_MAC.0);
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let l3 = f.len();
        let ihl = 20 + ip_opts;
        let total = ihl + 8 + data.len();
        f.extend_from_slice(&[0x40 | (ihl / 4) as u8, 0]);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&[0, 1, 0, 0, 64, 1, 0, 0]);
        f.extend_from_slice(&CLIENT.octets());
        f.extend_from_slice(&VIP.octets());
        f.extend(std::iter::repeat(1u8).take(ip_opts));
        let l4 = f.len();
        f.extend_from_slice(&[8, 0, 0, 0, 0xab, 0xcd, 0x00, 0x07]);
        f.extend_from_slice(&data);
        let c = !ones_sum(&f[l3..l3 + ihl]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        let c = !ones_sum(&f[l4..]);
        f[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        let out = one_out(&rig.send(0, &f));
        let o = check_ipv4(&out).unwrap_or_else(|e| panic!("echo reply rejected: {e}"));
        prop_assert_eq!((o.ihl, o.total_len), (20, 28 + data.len()));
        prop_assert_eq!(o.src, VIP.octets());
        prop_assert_eq!(o.dst, CLIENT.octets());
        prop_assert_eq!(&o.l4[..2], &[0u8, 0][..]);
        prop_assert_eq!(&o.l4[4..8], &[0xab, 0xcd, 0x00, 0x07][..]);
        prop_assert_eq!(&o.l4[8..], &data[..]);
        // The same request with a bad checksum is not answered.
        f[l4 + 2] ^= 0x55;
        let before = rig.counters(0).drops[DropReason::MalformedL4 as usize];
        prop_assert!(rig.send(0, &f).is_empty());
        prop_assert_eq!(rig.counters(0).drops[DropReason::MalformedL4 as usize], before + 1);
    }
}

/// A burst of packets that would each earn an ICMP error gets at most the
/// burst's worth (Linux's icmp_msgs_burst); the rest are counted.
#[test]
fn icmp_errors_are_rate_limited() {
    let mut udp = sluice::service::ServiceSpec::new("dns", VIP, 80, Protocol::Udp);
    udp.endpoints = vec![];
    let mut rig = Rig::new(1, &[udp]);
    for i in 0..200u16 {
        assert!(rig.wires[0][0].inject(&udp_frame(CLIENT, 6000 + i, VIP, 80, b"q")));
    }
    let start = std::time::Instant::now();
    let mut out = 0;
    for _ in 0..4 {
        out += rig.poll_all().len() as u64;
    }
    // The bucket refills at 1000/s: allow for the time the polls took.
    let slack = start.elapsed().as_millis() as u64 + 1;
    let c = rig.counters(0);
    assert_eq!(out, c.icmp_errors);
    assert_eq!(c.icmp_errors + c.icmp_errors_limited, 200);
    assert!(
        (50..=50 + slack).contains(&c.icmp_errors),
        "the burst of 50, then 1000/s: {c:?}"
    );
    assert_eq!(
        c.drops[DropReason::NoBackend as usize],
        c.icmp_errors_limited
    );
}

/// Nothing is answered to a frame sent to a group MAC or from a source no
/// answer may go to (a spoofer's way to make sluice talk to many hosts).
#[test]
fn broadcast_and_martian_sources_get_no_answer() {
    let mut rig = Rig::new(1, &[service(Protocol::Tcp, &[])]);
    let mut bcast = client_frame(false, 0, 0, b"", 44_000, SYN, 1, 0, 64);
    bcast[0..6].copy_from_slice(&[0xff; 6]);
    assert!(rig.send(0, &bcast).is_empty());
    let mut f = tcp_frame(
        GATEWAY_MAC,
        CLIENT_LINK_MAC,
        Ipv4Addr::new(224, 0, 0, 9),
        44_001,
        VIP,
        80,
        SYN,
        1,
        0,
        b"",
    );
    assert!(rig.send(0, &f).is_empty());
    f = tcp_frame(
        GATEWAY_MAC,
        CLIENT_LINK_MAC,
        Ipv4Addr::new(127, 0, 0, 1),
        44_002,
        VIP,
        80,
        SYN,
        1,
        0,
        b"",
    );
    assert!(rig.send(0, &f).is_empty());
    assert_eq!(rig.counters(0).drops[DropReason::NoBackend as usize], 3);
    assert_eq!(rig.counters(0).answered, 0);
}

/// ARP requests, replies and gratuitous ARP, read by the independent
/// reader: Ethernet/IPv4 ARP, sender fields matching the frame.
#[test]
fn arp_frames_are_well_formed() {
    let mac = MacAddr([2, 0, 0, 0, 1, 0xfe]);
    let me = Ipv4Addr::new(10, 200, 1, 254);
    let mut n = Neighbors::new(
        vec![ArpLink {
            mac,
            addr: me,
            prefix_len: 24,
        }],
        ArpTimers::default(),
    );
    n.set_vips([VIP]);
    for g in n.announce() {
        let (op, sha, spa, _, tpa) = check_arp(&g.frame).unwrap();
        assert_eq!(sha, mac.0);
        assert_eq!(spa, tpa, "gratuitous: sender and target address agree");
        assert!(op == 1 || op == 2);
        assert_eq!(&g.frame[0..6], &[0xff; 6]);
    }
    // A request for the VIP from a client: the reply names sluice's MAC.
    let client_mac = [2, 0, 0, 0, 1, 7];
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&client_mac);
    req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&client_mac);
    req.extend_from_slice(&CLIENT.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&VIP.octets());
    let (reply, _) = n.on_frame(0, &req, std::time::Duration::from_secs(1));
    let reply = reply.expect("a reply for the VIP");
    let (op, sha, spa, tha, tpa) = check_arp(&reply.frame).unwrap();
    assert_eq!((op, sha, spa), (2, mac.0, VIP.octets()));
    assert_eq!((tha, tpa), (client_mac, CLIENT.octets()));
    assert_eq!(&reply.frame[0..6], &client_mac);
    assert!(reply.frame.len() >= 60, "padded to the Ethernet minimum");
    // Resolving a backend: a broadcast request from sluice's address.
    n.want([Ipv4Addr::new(10, 200, 1, 9)]);
    let (asks, _) = n.tick(std::time::Duration::from_secs(2));
    assert!(!asks.is_empty());
    for a in asks {
        let (op, sha, spa, _, tpa) = check_arp(&a.frame).unwrap();
        assert_eq!(
            (op, sha, spa, tpa),
            (1, mac.0, me.octets(), [10, 200, 1, 9])
        );
    }
}

/// The oracle's checksum agrees with RFC 1071's worked example.
#[test]
fn oracle_checksum_matches_rfc1071() {
    // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
    assert_eq!(
        ones_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0xddf2
    );
}
