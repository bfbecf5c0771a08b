//! Malformed and unusual packets: every one dropped with a counted reason
//! (or handled), none panics, and real traffic keeps flowing.

mod common;

use common::*;
use sluice::service::Protocol;
use sluice::wire::checksum;
use sluice::wire::icmp::IcmpPacket;
use sluice::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use sluice::worker::DropReason;

fn rig() -> Rig {
    Rig::new(1, &[service(Protocol::Tcp, &eps(&[1, 1, 1]))])
}

fn fix_ip_csum(f: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
}

#[test]
fn each_kind_of_malformed_frame_is_dropped_with_its_reason() {
    let good = from_client(50000, SYN, 1, 0);
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = vec![];
    cases.push(("runt", good[..10].to_vec(), DropReason::MalformedEthernet));
    let mut vlan_cut = good[..16].to_vec();
    vlan_cut[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    cases.push(("vlan cut short", vlan_cut, DropReason::MalformedEthernet));
    let mut v6 = good.clone();
    v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    cases.push(("ipv6", v6, DropReason::UnsupportedEthertype));
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    cases.push(("IHL 4", ihl, DropReason::MalformedIpv4));
    let mut ver = good.clone();
    ver[14] = 0x65;
    cases.push(("version 6 in an IPv4 frame", ver, DropReason::MalformedIpv4));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&1500u16.to_be_bytes());
    fix_ip_csum(&mut long);
    cases.push(("total length beyond frame", long, DropReason::MalformedIpv4));
    let mut short = good.clone();
    short[16..18].copy_from_slice(&12u16.to_be_bytes());
    cases.push((
        "total length under header",
        short,
        DropReason::MalformedIpv4,
    ));
    cases.push((
        "truncated IP header",
        good[..30].to_vec(),
        DropReason::MalformedIpv4,
    ));
    let mut mf = good.clone();
    mf[20] = 0x20;
    fix_ip_csum(&mut mf);
    cases.push(("first fragment", mf, DropReason::Fragment));
    let mut off = good.clone();
    off[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    fix_ip_csum(&mut off);
    cases.push(("later fragment", off, DropReason::Fragment));
    let mut doff = good.clone();
    doff[46] = 0x30;
    cases.push(("TCP data offset 3", doff, DropReason::MalformedL4));
    let mut doff_big = good.clone();
    doff_big[46] = 0xf0;
    cases.push((
        "TCP data offset beyond segment",
        doff_big,
        DropReason::MalformedL4,
    ));
    let mut cut_tcp = good[..44].to_vec();
    cut_tcp[16..18].copy_from_slice(&30u16.to_be_bytes());
    fix_ip_csum(&mut cut_tcp);
    cases.push(("truncated TCP header", cut_tcp, DropReason::MalformedL4));
    let mut udp = udp_frame(CLIENT, 1, VIP, 80, b"xx");
    udp[38..40].copy_from_slice(&400u16.to_be_bytes());
    cases.push(("UDP length beyond datagram", udp, DropReason::MalformedL4));
    let mut gre = good.clone();
    gre[23] = 47;
    fix_ip_csum(&mut gre);
    cases.push(("GRE", gre, DropReason::UnsupportedProtocol));
    let mut arp = good[..42].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp[14..16].copy_from_slice(&0x0006u16.to_be_bytes()); // htype IEEE 802: unsupported
    cases.push(("ARP garbage", arp, DropReason::MalformedArp));
    cases.push((
        "ARP truncated",
        {
            let mut a = good[..20].to_vec();
            a[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
            a
        },
        DropReason::MalformedArp,
    ));

    let mut r = rig();
    for (name, frame, reason) in &cases {
        let before = r.counters(0).drops[*reason as usize];
        let out = r.send(0, frame);
        assert!(out.is_empty(), "{name}: nothing may leave");
        assert_eq!(
            r.counters(0).drops[*reason as usize],
            before + 1,
            "{name}: counted as {}",
            reason.name()
        );
        // Real traffic still flows after each bad frame.
        let ok = r.send(0, &from_client(50001, SYN, 1, 0));
        assert_eq!(ok.len(), 1, "{name}: good traffic after it");
    }
}

#[test]
fn ip_options_and_vlan_tags_are_handled() {
    let mut r = rig();
    // IPv4 header with 8 bytes of options (NOPs + EOL), IHL 7.
    let base = from_client(50100, SYN, 1, 0);
    let mut f = base[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x47;
    f[16..18].copy_from_slice(&(20u16 + 8 + 20).to_be_bytes());
    fix_ip_csum(&mut f);
    // TCP checksum does not cover IP options: the segment is unchanged.
    let out = r.send(0, &f);
    assert_eq!(out.len(), 1);
    let s = inspect(&out[0].1);
    assert_eq!(s.dport, 8080);

    // One 802.1Q tag: parsed through, kept on output.
    let mut v = base[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    v.extend_from_slice(&base[12..]);
    let out = r.send(0, &v);
    assert_eq!(out.len(), 1);
    let o = &out[0].1;
    assert_eq!(&o[12..16], &[0x81, 0x00, 0x00, 0x2a]);
    let ip = Ipv4Packet::new_checked(&o[18..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.ttl(), 63);
}

#[test]
fn random_and_mutated_frames_never_panic_and_every_packet_is_accounted_for() {
    let mut r = rig();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let good = from_client(50200, ACK, 1, 1);
    for i in 0..20_000u32 {
        let frame: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 128) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut f = good.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            if next() % 3 == 0 {
                f.truncate((next() as usize) % f.len());
            }
            f
        };
        r.send(0, &frame);
        if i % 512 == 0 {
            r.send(1, &frame);
        }
    }
    let c = r.counters(0);
    assert_eq!(
        c.rx_packets,
        c.forwarded + c.replies + c.answered + c.total_drops() + c.punted + c.handoffs_out,
        "every received packet has exactly one verdict: {c:?}"
    );
    assert_eq!(r.send(0, &from_client(50201, SYN, 1, 0)).len(), 1);
}

fn icmp_frame(
    outer_src: std::net::Ipv4Addr,
    outer_dst: std::net::Ipv4Addr,
    body: &[u8],
) -> Vec<u8> {
    let mut f = from_client(1, SYN, 0, 0)[..34].to_vec();
    f.extend_from_slice(body);
    Ipv4Repr {
        src_addr: outer_src,
        dst_addr: outer_dst,
        protocol: 1,
        ttl: 64,
        payload_len: body.len(),
        ident: 3,
        dont_fragment: false,
    }
    .emit(&mut f[14..34])
    .expect("room for the header");
    IcmpPacket::new_unchecked(&mut f[34..]).fill_checksum();
    f
}

/// A "fragmentation needed" sent by a router to the VIP about a packet the
/// VIP (really the backend) sent must reach that backend, with the embedded
/// header rewritten to the backend's address and port.
#[test]
fn icmp_frag_needed_to_the_vip_reaches_the_flow_backend() {
    let mut r = rig();
    let out = r.send(0, &from_client(50300, SYN, 1, 0));
    let b = backend_index(&inspect(&out[0].1));
    // Embedded: the VIP's packet to the client (IP header + 8 bytes of TCP).
    let mut emb = vec![0u8; 28];
    Ipv4Repr {
        src_addr: VIP,
        dst_addr: CLIENT,
        protocol: 6,
        ttl: 60,
        payload_len: 1480,
        ident: 9,
        dont_fragment: true,
    }
    .emit(&mut emb[..20])
    .expect("room for the header");
    emb[20..22].copy_from_slice(&80u16.to_be_bytes());
    emb[22..24].copy_from_slice(&50300u16.to_be_bytes());
    emb[24..28].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    let mut body = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    body.extend_from_slice(&emb);
    let frame = icmp_frame(GATEWAY, VIP, &body);
    let out = r.send(0, &frame);
    assert_eq!(
        out.len(),
        1,
        "steered, not dropped: {:?}",
        r.counters(0).drops
    );
    let (port, f) = &out[0];
    assert_eq!(*port, 1);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), backend(b));
    let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum after rewrite");
    let e = icmp.embedded().unwrap();
    assert_eq!((e.src_addr(), e.src_port()), (backend(b), 8080));
    assert_eq!((e.dst_addr(), e.dst_port()), (CLIENT, 50300));
    let inner = &icmp.payload()[..20];
    assert_eq!(checksum::checksum(inner), 0, "embedded IP header checksum");
}

#[test]
fn echo_requests_to_the_vip_are_answered() {
    let mut r = rig();
    let frame = icmp_frame(
        CLIENT,
        VIP,
        &[8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'],
    );
    let out = r.send(0, &frame);
    assert_eq!(out.len(), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, 0);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (VIP, CLIENT));
    let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), 0);
    assert!(icmp.verify_checksum());
}
