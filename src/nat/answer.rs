//! Packets sluice answers itself, built in the buffer of the packet they
//! answer: a TCP RST, an ICMP error, an ICMP echo reply.
//!
//! Unlike the rewrites in the parent module, which patch checksums
//! incrementally because they keep most of a packet, an answer is a new
//! packet: every header is written whole, every length is the answer's own
//! (never the received frame's: its options, payload and Ethernet padding
//! are not part of the answer), and every checksum is computed from scratch
//! over exactly the bytes sent. A receiver's kernel is the judge of these
//! frames, and it discards a segment whose checksum is off by one bit.

use std::net::Ipv4Addr;

use super::Offsets;
use crate::wire::ethernet::ETHERTYPE_IPV4;
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{Ipv4Packet, MIN_HEADER_LEN};
use crate::wire::tcp::{TcpFlags, TcpSegment};
use crate::wire::{MacAddr, IPPROTO_ICMP, IPPROTO_TCP};

/// TTL of the packets sluice originates (Linux's default).
pub const ANSWER_TTL: u8 = 64;

/// Bytes an ICMP error adds in front of the packet it quotes: its own IPv4
/// header (no options) and the 8-byte ICMP header. The worker takes them
/// from the buffer's headroom ([`crate::port::HEADROOM`]).
pub const ICMP_ERROR_PREFIX: usize = MIN_HEADER_LEN + icmp::HEADER_LEN;

/// Largest ICMP error sent: 576 bytes of IP (RFC 1812 4.3.2.3), so it
/// crosses any link without fragmenting.
const ICMP_ERROR_MAX_IP: usize = 576;

/// Whether a source address may be answered at all (RFC 1812 4.3.2.7 and
/// RFC 1122 4.2.3.10 for RSTs): never a broadcast, multicast, loopback,
/// "this network" or class E source, which a spoofer would use to make
/// sluice talk to many hosts or to itself.
pub fn answerable(src: Ipv4Addr) -> bool {
    !(src.is_broadcast()
        || src.is_multicast()
        || src.is_loopback()
        || src.is_unspecified()
        || src.octets()[0] == 0
        || src.octets()[0] >= 240)
}

/// Writes a fresh IPv4 header (no options) at the start of `ip`.
fn write_ipv4(ip: &mut [u8], total_len: u16, proto: u8, tos: u8, df: bool, src: u32, dst: u32) {
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..MIN_HEADER_LEN]);
    p.set_version(4);
    p.set_header_len(MIN_HEADER_LEN);
    p.set_dscp_ecn(tos);
    p.set_total_len(total_len);
    p.set_ident(0);
    p.set_more_fragments(false);
    p.set_frag_offset(0);
    p.set_dont_fragment(df);
    p.set_ttl(ANSWER_TTL);
    p.set_protocol(proto);
    p.set_src_addr(Ipv4Addr::from(src));
    p.set_dst_addr(Ipv4Addr::from(dst));
    p.fill_checksum();
}

/// Swaps the Ethernet source and destination (a VLAN tag, if any, stays).
fn swap_macs(frame: &mut [u8]) {
    let (dst, rest) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut rest[..6]);
}

/// Turns a TCP segment into the RST that answers it (RFC 9293 3.10.7.1: if
/// the segment has ACK, the RST carries SEQ = SEG.ACK and no ACK; otherwise
/// SEQ = 0, ACK = SEG.SEQ + SEG.LEN, with ACK set), from the address and
/// port the segment was sent to. IP options, TCP options, payload and
/// padding are dropped. Returns the new frame length; the caller truncates
/// its buffer to it. `o` must describe a validated TCP segment.
pub fn tcp_reset(frame: &mut [u8], o: Offsets) -> usize {
    let (src, dst, seg_seq, seg_ack, flags, seg_len, sport, dport) = {
        let ip = Ipv4Packet::new_unchecked(&frame[o.l3()..o.end()]);
        let t = TcpSegment::new_unchecked(&frame[o.l4()..o.end()]);
        let flags = t.flags();
        let data = o.end().saturating_sub(o.l4() + t.header_len()) as u32;
        let len = data + u32::from(flags.syn()) + u32::from(flags.fin());
        (
            u32::from(ip.src_addr()),
            u32::from(ip.dst_addr()),
            t.seq_number(),
            t.ack_number(),
            flags,
            len,
            t.src_port(),
            t.dst_port(),
        )
    };
    swap_macs(frame);
    let l3 = o.l3();
    let l4 = l3 + MIN_HEADER_LEN;
    let end = l4 + 20;
    // DF as Linux sets it on its own RSTs; TOS 0.
    write_ipv4(&mut frame[l3..], 40, IPPROTO_TCP, 0, true, dst, src);
    // The whole data-offset byte: 5 words, reserved bits and NS clear.
    frame[l4 + 12] = 5 << 4;
    let mut t = TcpSegment::new_unchecked(&mut frame[l4..end]);
    t.set_src_port(dport);
    t.set_dst_port(sport);
    if flags.ack() {
        t.set_seq_number(seg_ack);
        t.set_ack_number(0);
        t.set_flags(TcpFlags::RST);
    } else {
        t.set_seq_number(0);
        t.set_ack_number(seg_seq.wrapping_add(seg_len));
        t.set_flags(TcpFlags::RST | TcpFlags::ACK);
    }
    t.set_window(0);
    t.set_urgent(0);
    t.fill_checksum(Ipv4Addr::from(dst), Ipv4Addr::from(src));
    end
}

/// Turns an ICMP echo request into its reply in place: addresses swapped,
/// a fresh IP header (the request's options are not echoed back, as Linux
/// does not either), the same identifier, sequence and data, the ICMP
/// checksum computed over the message. `None` if the request's own checksum
/// is wrong (Linux drops those too); otherwise the new frame length.
pub fn echo_reply(frame: &mut [u8], o: Offsets) -> Option<usize> {
    let (src, dst, tos) = {
        let ip = Ipv4Packet::new_unchecked(&frame[o.l3()..o.end()]);
        if !IcmpPacket::new_unchecked(&frame[o.l4()..o.end()]).verify_checksum() {
            return None;
        }
        (
            u32::from(ip.src_addr()),
            u32::from(ip.dst_addr()),
            ip.dscp_ecn(),
        )
    };
    let msg = o.end() - o.l4();
    let l3 = o.l3();
    let l4 = l3 + MIN_HEADER_LEN;
    // Options gone: the message moves up to right after a 20-byte header.
    frame.copy_within(o.l4()..o.end(), l4);
    swap_macs(frame);
    write_ipv4(
        &mut frame[l3..],
        (MIN_HEADER_LEN + msg) as u16,
        IPPROTO_ICMP,
        tos,
        false,
        dst,
        src,
    );
    let mut m = IcmpPacket::new_unchecked(&mut frame[l4..l4 + msg]);
    m.set_msg_type(icmp::ECHO_REPLY);
    m.set_code(0);
    m.fill_checksum();
    Some(l4 + msg)
}

/// Builds an ICMP error about the packet in `frame`, which the caller has
/// already grown by [`ICMP_ERROR_PREFIX`] bytes at the front: the quoted
/// packet's Ethernet header now starts at `ICMP_ERROR_PREFIX` and its IP
/// header at `ICMP_ERROR_PREFIX + l2`, where `l2` is its Ethernet header
/// length (14, or 18 with a VLAN tag). The error goes from `src` back to the
/// quoted packet's source, through the neighbor it came from, and quotes as
/// much of the packet as fits in 576 bytes of IP (at least its header and 8
/// bytes). Returns the new frame length.
pub fn icmp_error(
    frame: &mut [u8],
    l2: usize,
    quoted_len: usize,
    kind: (u8, u8),
    src: u32,
) -> usize {
    let old_l3 = ICMP_ERROR_PREFIX + l2;
    let to = u32::from(Ipv4Packet::new_unchecked(&frame[old_l3..]).src_addr());
    // The new Ethernet header: the quoted one with its addresses swapped.
    frame.copy_within(ICMP_ERROR_PREFIX..ICMP_ERROR_PREFIX + l2, 0);
    swap_macs(frame);
    let quote = quoted_len.min(ICMP_ERROR_MAX_IP - ICMP_ERROR_PREFIX);
    let total = ICMP_ERROR_PREFIX + quote;
    // TOS: internetwork control, as Linux sends its ICMP errors.
    write_ipv4(
        &mut frame[l2..],
        total as u16,
        IPPROTO_ICMP,
        0xc0,
        false,
        src,
        to,
    );
    let l4 = l2 + MIN_HEADER_LEN;
    let mut m = IcmpPacket::new_unchecked(&mut frame[l4..l4 + icmp::HEADER_LEN + quote]);
    m.set_msg_type(kind.0);
    m.set_code(kind.1);
    m.set_rest_of_header(0);
    m.fill_checksum();
    l2 + total
}

/// Length of a bare TCP RST frame (Ethernet, IPv4 without options, TCP
/// without options).
pub const RST_FRAME_LEN: usize = 14 + MIN_HEADER_LEN + 20;

/// Writes a bare RST from `src:sport` to `dst:dport` with sequence number
/// `seq` (the receiver's RCV.NXT, so it is accepted as is: RFC 5961 3.2)
/// into the first [`RST_FRAME_LEN`] bytes of `frame` (addresses host
/// order). Used to recycle a connection, which sluice resets in both
/// directions. Returns the frame length, or `None` if `frame` is shorter.
#[allow(clippy::too_many_arguments)]
pub fn tcp_rst_frame(
    frame: &mut [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: u32,
    sport: u16,
    dst: u32,
    dport: u16,
    seq: u32,
) -> Option<usize> {
    let f = frame.get_mut(..RST_FRAME_LEN)?;
    f[0..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    write_ipv4(&mut f[14..], 40, IPPROTO_TCP, 0, true, src, dst);
    let l4 = 14 + MIN_HEADER_LEN;
    f[l4..].fill(0);
    f[l4 + 12] = 5 << 4;
    let mut t = TcpSegment::new_unchecked(&mut f[l4..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(seq);
    t.set_flags(TcpFlags::RST);
    t.fill_checksum(Ipv4Addr::from(src), Ipv4Addr::from(dst));
    Some(RST_FRAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unicast_sources_are_answered() {
        for bad in [
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "240.0.0.1",
        ] {
            assert!(!answerable(bad.parse().unwrap()), "{bad}");
        }
        assert!(answerable("10.200.1.7".parse().unwrap()));
        assert!(answerable("198.18.3.4".parse().unwrap()));
    }
}
