//! Property tests for `sluice::wire`: incremental checksum rewrites agree bit for bit with full
//! recomputation, ICMP error translation matches rewriting the original packet, and no checked
//! view or `Repr::parse` panics on arbitrary bytes.
//!
//! Checksum representation under test: IPv4, TCP and ICMP checksums are `!fold(sum)` (never
//! `0xffff` for these headers, `0x0000` when the sum is `0xffff`), incremental or not. UDP stores
//! a computed `0x0000` as `0xffff` and leaves a stored `0x0000` ("no checksum") alone.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use sluice::wire::arp::{ArpPacket, ArpRepr};
use sluice::wire::checksum;
use sluice::wire::ethernet::{EthernetFrame, EthernetRepr};
use sluice::wire::icmp::{self, EmbeddedIpv4, IcmpPacket, IcmpRepr};
use sluice::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use sluice::wire::tcp::{TcpFlags, TcpRepr, TcpSegment};
use sluice::wire::udp::{UdpDatagram, UdpRepr};
use sluice::wire::{MacAddr, IPPROTO_TCP, IPPROTO_UDP};

#[derive(Clone, Debug)]
struct L4Spec {
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    ttl: u8,
    ip_options: Vec<u8>,
    tcp_options: Vec<u8>,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
    udp_without_checksum: bool,
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn options() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4))
}

fn l4_spec() -> impl Strategy<Value = L4Spec> {
    (
        prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP)],
        (addr(), addr(), any::<u16>(), any::<u16>(), any::<u8>()),
        (options(), options()),
        (any::<u32>(), any::<u8>()),
        proptest::collection::vec(any::<u8>(), 0..80),
        any::<bool>(),
    )
        .prop_map(
            |(
                protocol,
                (src, dst, src_port, dst_port, ttl),
                (ip_options, tcp_options),
                (seq, flags),
                payload,
                no_csum,
            )| {
                L4Spec {
                    protocol,
                    src,
                    dst,
                    src_port,
                    dst_port,
                    ttl,
                    ip_options,
                    tcp_options,
                    seq,
                    flags,
                    payload,
                    udp_without_checksum: no_csum,
                }
            },
        )
}

/// Builds IPv4 + TCP/UDP with every checksum fully computed.
fn build(spec: &L4Spec) -> Vec<u8> {
    let ip_header_len = 20 + spec.ip_options.len();
    let l4_header_len = match spec.protocol {
        IPPROTO_TCP => 20 + spec.tcp_options.len(),
        _ => 8,
    };
    let total = ip_header_len + l4_header_len + spec.payload.len();
    let mut buf = vec![0u8; total];
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.set_version(4);
    ip.set_header_len(ip_header_len);
    ip.set_total_len(total as u16);
    ip.set_ident(0x1c46);
    ip.set_dont_fragment(true);
    ip.set_ttl(spec.ttl);
    ip.set_protocol(spec.protocol);
    ip.set_src_addr(spec.src);
    ip.set_dst_addr(spec.dst);
    ip.header_mut()[20..].copy_from_slice(&spec.ip_options);
    ip.fill_checksum();
    let l4 = ip.payload_mut();
    l4[l4_header_len..].copy_from_slice(&spec.payload);
    if spec.protocol == IPPROTO_TCP {
        let mut tcp = TcpSegment::new_unchecked(l4);
        tcp.set_src_port(spec.src_port);
        tcp.set_dst_port(spec.dst_port);
        tcp.set_seq_number(spec.seq);
        tcp.set_ack_number(!spec.seq);
        tcp.set_header_len(l4_header_len);
        tcp.set_flags(TcpFlags(spec.flags));
        tcp.set_window(0xffff);
        tcp.options_mut().copy_from_slice(&spec.tcp_options);
        tcp.fill_checksum(spec.src, spec.dst);
    } else {
        let mut udp = UdpDatagram::new_unchecked(l4);
        udp.set_src_port(spec.src_port);
        udp.set_dst_port(spec.dst_port);
        udp.set_length((8 + spec.payload.len()) as u16);
        if !spec.udp_without_checksum {
            udp.fill_checksum(spec.src, spec.dst);
        }
    }
    buf
}

#[derive(Clone, Copy, Debug)]
enum Rewrite {
    SrcAddr(Ipv4Addr),
    DstAddr(Ipv4Addr),
    SrcPort(u16),
    DstPort(u16),
    DecrementTtl,
}

fn rewrite() -> impl Strategy<Value = Rewrite> {
    prop_oneof![
        addr().prop_map(Rewrite::SrcAddr),
        addr().prop_map(Rewrite::DstAddr),
        any::<u16>().prop_map(Rewrite::SrcPort),
        any::<u16>().prop_map(Rewrite::DstPort),
        Just(Rewrite::DecrementTtl),
    ]
}

/// Applies one rewrite the way the NAT will: IP first, then the L4 pseudo-header fix-up.
fn apply(buf: &mut [u8], rewrite: Rewrite) {
    let mut ip = Ipv4Packet::new_checked(buf).unwrap();
    let protocol = ip.protocol();
    let (addr_change, port_change) = match rewrite {
        Rewrite::SrcAddr(new) => {
            let old = ip.src_addr();
            ip.rewrite_src_addr(new);
            (Some((old, new)), None)
        }
        Rewrite::DstAddr(new) => {
            let old = ip.dst_addr();
            ip.rewrite_dst_addr(new);
            (Some((old, new)), None)
        }
        Rewrite::SrcPort(port) => (None, Some((true, port))),
        Rewrite::DstPort(port) => (None, Some((false, port))),
        Rewrite::DecrementTtl => {
            let ttl = ip.ttl();
            let new_ttl = ip.decrement_ttl();
            assert_eq!(new_ttl, ttl.saturating_sub(1));
            assert_eq!(ip.ttl(), new_ttl);
            (None, None)
        }
    };
    let l4 = ip.payload_mut();
    if protocol == IPPROTO_TCP {
        let mut tcp = TcpSegment::new_checked(l4).unwrap();
        if let Some((old, new)) = addr_change {
            tcp.update_checksum_for_addr(old, new);
        }
        match port_change {
            Some((true, port)) => tcp.rewrite_src_port(port),
            Some((false, port)) => tcp.rewrite_dst_port(port),
            None => {}
        }
    } else {
        let mut udp = UdpDatagram::new_checked(l4).unwrap();
        if let Some((old, new)) = addr_change {
            udp.update_checksum_for_addr(old, new);
        }
        match port_change {
            Some((true, port)) => udp.rewrite_src_port(port),
            Some((false, port)) => udp.rewrite_dst_port(port),
            None => {}
        }
    }
}

/// Asserts that every checksum verifies and equals a from-scratch recomputation.
fn assert_checksums_exact(buf: &[u8], udp_without_checksum: bool) {
    let ip = Ipv4Packet::new_checked(buf).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum does not verify");
    let mut copy = buf.to_vec();
    let mut full = Ipv4Packet::new_checked(&mut copy[..]).unwrap();
    full.fill_checksum();
    assert_eq!(ip.checksum(), full.checksum(), "IPv4 incremental != full");
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if ip.protocol() == IPPROTO_TCP {
        let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
        assert!(
            tcp.verify_checksum(src, dst),
            "TCP checksum does not verify"
        );
        let mut full = TcpSegment::new_checked(full.payload_mut()).unwrap();
        full.fill_checksum(src, dst);
        assert_eq!(tcp.checksum(), full.checksum(), "TCP incremental != full");
        assert_ne!(tcp.checksum(), 0xffff, "TCP checksum not in canonical form");
    } else {
        let udp = UdpDatagram::new_checked(ip.payload()).unwrap();
        assert!(
            udp.verify_checksum(src, dst),
            "UDP checksum does not verify"
        );
        if udp_without_checksum {
            assert_eq!(udp.checksum(), 0, "an absent UDP checksum must stay absent");
        } else {
            let mut full = UdpDatagram::new_checked(full.payload_mut()).unwrap();
            full.fill_checksum(src, dst);
            assert_eq!(udp.checksum(), full.checksum(), "UDP incremental != full");
            assert_ne!(
                udp.checksum(),
                0,
                "a computed UDP checksum must never be stored as 0"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rewrites_keep_checksums_equal_to_recompute(
        spec in l4_spec(),
        rewrites in proptest::collection::vec(rewrite(), 1..8),
    ) {
        let mut buf = build(&spec);
        assert_checksums_exact(&buf, spec.udp_without_checksum);
        for rewrite in rewrites {
            apply(&mut buf, rewrite);
            assert_checksums_exact(&buf, spec.udp_without_checksum);
        }
    }

    /// Steers the L4 checksum to the ones'-complement zero on purpose (random data hits it once
    /// in 65536) and checks the representation: TCP stores 0x0000, UDP 0xffff, both as recompute.
    #[test]
    fn rewrite_to_zero_checksum_uses_canonical_form(spec in l4_spec()) {
        let spec = L4Spec { udp_without_checksum: false, ..spec };
        let mut buf = build(&spec);
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        let l4 = ip.payload();
        let stored = u16::from_be_bytes([l4[if spec.protocol == IPPROTO_TCP { 16 } else { 6 }], l4[if spec.protocol == IPPROTO_TCP { 17 } else { 7 }]]);
        // New port p' = p - sum = p + csum in ones'-complement arithmetic, so the sum becomes -0.
        let port = checksum::fold(u32::from(spec.dst_port) + u32::from(stored));
        apply(&mut buf, Rewrite::DstPort(port));
        assert_checksums_exact(&buf, false);
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        if spec.protocol == IPPROTO_TCP {
            prop_assert_eq!(TcpSegment::new_checked(ip.payload()).unwrap().checksum(), 0x0000);
        } else {
            prop_assert_eq!(UdpDatagram::new_checked(ip.payload()).unwrap().checksum(), 0xffff);
        }
    }

    /// An ICMP error quoting a packet, after `rewrite_embedded_*`, is byte-identical to the
    /// error built by quoting the packet rewritten with the (already verified) L3/L4 rewrites.
    #[test]
    fn icmp_embedded_rewrite_matches_rewriting_the_original(
        spec in l4_spec(),
        quote_extra in 0usize..200,
        rewrite_src in any::<bool>(),
        new_addr in addr(),
        new_port in any::<u16>(),
        mtu in any::<u16>(),
    ) {
        let original = build(&spec);
        let ip_header_len = 20 + spec.ip_options.len();
        let quote_len = (ip_header_len + 8 + quote_extra).min(original.len());
        let error = |quoted: &[u8]| {
            let repr = IcmpRepr {
                msg_type: icmp::DEST_UNREACHABLE,
                code: icmp::FRAG_NEEDED,
                rest_of_header: u32::from(mtu),
                payload_len: quoted.len(),
            };
            let mut message = vec![0u8; repr.buffer_len()];
            repr.emit(&mut message, quoted).unwrap();
            message
        };

        let mut message = error(&original[..quote_len]);
        let mut packet = IcmpPacket::new_checked(&mut message[..]).unwrap();
        if rewrite_src {
            packet.rewrite_embedded_src(new_addr, new_port).unwrap();
        } else {
            packet.rewrite_embedded_dst(new_addr, new_port).unwrap();
        }
        prop_assert!(packet.verify_checksum());
        let embedded = packet.embedded().unwrap();
        prop_assert!(embedded.verify_checksum());
        if rewrite_src {
            prop_assert_eq!((embedded.src_addr(), embedded.src_port()), (new_addr, new_port));
        } else {
            prop_assert_eq!((embedded.dst_addr(), embedded.dst_port()), (new_addr, new_port));
        }

        let mut rewritten = original.clone();
        if rewrite_src {
            apply(&mut rewritten, Rewrite::SrcAddr(new_addr));
            apply(&mut rewritten, Rewrite::SrcPort(new_port));
        } else {
            apply(&mut rewritten, Rewrite::DstAddr(new_addr));
            apply(&mut rewritten, Rewrite::DstPort(new_port));
        }
        let mut expected_quote = rewritten[..quote_len].to_vec();
        let tcp_checksum_at = ip_header_len + 16;
        if spec.protocol == IPPROTO_TCP && quote_len == tcp_checksum_at + 1 {
            // A quote that cuts the TCP checksum in half keeps its half: the new value depends
            // on the missing byte through carries.
            expected_quote[tcp_checksum_at] = original[tcp_checksum_at];
        }
        let expected = error(&expected_quote);
        prop_assert_eq!(message, expected);
    }

    #[test]
    fn repr_emit_parse_round_trip(
        src in addr(), dst in addr(), src_port in any::<u16>(), dst_port in any::<u16>(),
        seq in any::<u32>(), flags in any::<u8>(), ttl in any::<u8>(), ident in any::<u16>(),
        dont_fragment in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..64),
        macs in any::<([u8; 6], [u8; 6])>(), vlan in proptest::option::of(any::<u16>()),
    ) {
        let eth = EthernetRepr { src_addr: MacAddr(macs.0), dst_addr: MacAddr(macs.1), ethertype: 0x0800, vlan_tci: vlan };
        let mut buf = vec![0u8; 18];
        let len = eth.emit(&mut buf).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&EthernetFrame::new_checked(&buf[..len]).unwrap()), Ok(eth));

        let arp = ArpRepr { operation: 1, sender_hw_addr: MacAddr(macs.0), sender_proto_addr: src, target_hw_addr: MacAddr(macs.1), target_proto_addr: dst };
        let mut buf = [0u8; 28];
        arp.emit(&mut buf).unwrap();
        prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()), Ok(arp));

        let tcp = TcpRepr { src_port, dst_port, seq_number: seq, ack_number: !seq, flags: TcpFlags(flags), window: 1000, payload_len: payload.len() };
        let ip = Ipv4Repr { src_addr: src, dst_addr: dst, protocol: IPPROTO_TCP, ttl, payload_len: tcp.buffer_len(), ident, dont_fragment };
        let mut buf = vec![0u8; ip.buffer_len()];
        let header_len = ip.emit(&mut buf).unwrap();
        tcp.emit(&mut buf[header_len..], src, dst, &payload).unwrap();
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&packet), Ok(ip));
        let segment = TcpSegment::new_checked(packet.payload()).unwrap();
        prop_assert_eq!(TcpRepr::parse(&segment, src, dst), Ok(tcp));
        prop_assert_eq!(segment.payload(), &payload[..]);

        let udp = UdpRepr { src_port, dst_port, payload_len: payload.len() };
        let mut buf = vec![0u8; udp.buffer_len()];
        udp.emit(&mut buf, src, dst, &payload).unwrap();
        let datagram = UdpDatagram::new_checked(&buf[..]).unwrap();
        prop_assert_ne!(datagram.checksum(), 0);
        prop_assert_eq!(UdpRepr::parse(&datagram, src, dst), Ok(udp));
    }
}

/// Random bytes, sometimes nudged towards passing the first checks so that deeper paths run.
fn fuzz_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<u8>(),
        any::<u16>(),
    )
        .prop_map(|(mut bytes, nudge, len)| {
            if nudge % 3 == 0 && bytes.len() >= 4 {
                // IPv4 version, random IHL, total length within the buffer; also a plausible
                // TCP data offset / UDP length, an ICMP error type, a VLAN tag.
                bytes[0] = 0x40 | (nudge >> 4);
                let total = (usize::from(len) % (bytes.len() + 1)) as u16;
                bytes[2..4].copy_from_slice(&total.to_be_bytes());
            }
            if nudge % 5 == 0 && bytes.len() >= 13 {
                bytes[12] = 0x50 | (nudge & 0xa0);
                bytes[0] = icmp::DEST_UNREACHABLE;
                bytes[8] = 0x45 + (nudge & 0x03);
            }
            if nudge % 7 == 0 && bytes.len() >= 14 {
                bytes[12] = 0x81;
                bytes[13] = 0x00;
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn checked_views_never_panic(bytes in fuzz_bytes(), a in addr(), b in addr(), port in any::<u16>()) {
        if let Ok(frame) = EthernetFrame::new_checked(&bytes[..]) {
            let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.vlan_tci());
            prop_assert_eq!(frame.header_len() + frame.payload().len(), bytes.len());
        }
        let _ = EthernetRepr::parse(&EthernetFrame::new_unchecked(&bytes[..]));

        if let Ok(packet) = ArpPacket::new_checked(&bytes[..]) {
            let _ = (packet.operation(), packet.sender_hw_addr(), packet.sender_proto_addr());
            let _ = (packet.target_hw_addr(), packet.target_proto_addr());
        }
        let _ = ArpRepr::parse(&ArpPacket::new_unchecked(&bytes[..]));

        let mut copy = bytes.clone();
        if let Ok(mut packet) = Ipv4Packet::new_checked(&mut copy[..]) {
            let _ = (packet.version(), packet.header_len(), packet.dscp_ecn(), packet.total_len());
            let _ = (packet.ident(), packet.dont_fragment(), packet.more_fragments());
            let _ = (packet.frag_offset(), packet.is_fragment(), packet.ttl(), packet.protocol());
            let _ = (packet.checksum(), packet.src_addr(), packet.dst_addr(), packet.verify_checksum());
            prop_assert!(packet.options().len() <= 40);
            prop_assert_eq!(packet.header_len() + packet.payload().len(), usize::from(packet.total_len()));
            packet.rewrite_src_addr(a);
            packet.rewrite_dst_addr(b);
            let _ = packet.decrement_ttl();
            let _ = packet.payload_mut();
        }
        let _ = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..]));

        let mut copy = bytes.clone();
        if let Ok(mut segment) = TcpSegment::new_checked(&mut copy[..]) {
            let _ = (segment.src_port(), segment.dst_port(), segment.seq_number(), segment.ack_number());
            let _ = (segment.header_len(), segment.flags(), segment.window(), segment.checksum());
            let _ = (segment.urgent(), segment.options(), segment.payload(), segment.verify_checksum(a, b));
            segment.rewrite_src_port(port);
            segment.rewrite_dst_port(port);
            segment.update_checksum_for_addr(a, b);
            let _ = (segment.options_mut().len(), segment.payload_mut().len());
        }
        let _ = TcpRepr::parse(&TcpSegment::new_unchecked(&bytes[..]), a, b);

        let mut copy = bytes.clone();
        if let Ok(mut datagram) = UdpDatagram::new_checked(&mut copy[..]) {
            let _ = (datagram.src_port(), datagram.dst_port(), datagram.length(), datagram.checksum());
            prop_assert_eq!(datagram.payload().len() + 8, usize::from(datagram.length()));
            let _ = datagram.verify_checksum(a, b);
            datagram.rewrite_src_port(port);
            datagram.rewrite_dst_port(port);
            datagram.update_checksum_for_addr(a, b);
            let _ = datagram.payload_mut();
        }
        let _ = UdpRepr::parse(&UdpDatagram::new_unchecked(&bytes[..]), a, b);

        let mut copy = bytes.clone();
        if let Ok(mut packet) = IcmpPacket::new_checked(&mut copy[..]) {
            let _ = (packet.msg_type(), packet.code(), packet.checksum(), packet.rest_of_header());
            let _ = (packet.payload(), packet.verify_checksum(), packet.is_error(), packet.next_hop_mtu());
            if let Ok(embedded) = packet.embedded() {
                let _ = (embedded.src_addr(), embedded.dst_addr(), embedded.protocol());
                let _ = (embedded.src_port(), embedded.dst_port(), embedded.header_len());
                let _ = (embedded.total_len(), embedded.frag_offset(), embedded.checksum());
                let _ = (embedded.header(), embedded.l4_bytes(), embedded.verify_checksum());
            }
            if let Ok(mut embedded) = packet.embedded_mut() {
                embedded.set_src_port(port);
                embedded.set_dst_port(port);
            }
            let _ = packet.rewrite_embedded_src(a, port);
            let _ = packet.rewrite_embedded_dst(b, port);
        }
        let _ = IcmpRepr::parse(&IcmpPacket::new_unchecked(&bytes[..]));

        if let Ok(embedded) = EmbeddedIpv4::new_checked(&bytes[..]) {
            let _ = (embedded.src_addr(), embedded.dst_addr(), embedded.protocol());
            let _ = (embedded.src_port(), embedded.dst_port(), embedded.header_len(), embedded.l4_bytes());
        }
    }
}
