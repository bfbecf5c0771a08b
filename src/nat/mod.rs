//! DNAT of client->VIP packets to a backend, the reverse for replies, and
//! (in [`answer`]) the packets sluice answers itself (RST, ICMP errors,
//! ICMP echo reply).
//!
//! Every rewrite is incremental (RFC 1624): the IP header checksum and the
//! TCP/UDP pseudo-header checksum are patched for exactly the words that
//! change, never recomputed over the payload. Callers have validated the
//! headers (offsets `l3`, `l4` come from the checked views), so the views
//! here are built unchecked.

pub mod answer;

use std::net::Ipv4Addr;

use crate::wire::ethernet::EthernetFrame;
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::TcpSegment;
use crate::wire::udp::UdpDatagram;
use crate::wire::{checksum, MacAddr, IPPROTO_TCP, IPPROTO_UDP};

/// Where the headers of a validated frame start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Offsets {
    pub l3: u16,
    pub l4: u16,
    /// End of the IP packet (l3 + total length); Ethernet padding follows.
    pub end: u16,
    pub proto: u8,
}

impl Offsets {
    #[inline(always)]
    pub fn l3(&self) -> usize {
        usize::from(self.l3)
    }
    #[inline(always)]
    pub fn l4(&self) -> usize {
        usize::from(self.l4)
    }
    #[inline(always)]
    pub fn end(&self) -> usize {
        usize::from(self.end)
    }
}

#[inline]
fn set_l2(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_src_addr(src);
    eth.set_dst_addr(dst);
}

/// Rewrites one address of the IP header (destination if `dst`, else
/// source), decrements the TTL, and rewrites the matching L4 port, patching
/// each checksum once with the summed deltas of every word that changed
/// (RFC 1624), instead of once per field.
#[inline(always)]
fn rewrite_addr_port(frame: &mut [u8], o: Offsets, dst: bool, addr: Ipv4Addr, port: u16) {
    let new_addr = u32::from(addr);
    let old_addr = {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[o.l3()..]);
        let old = if dst { ip.dst_addr() } else { ip.src_addr() };
        let old = u32::from(old);
        let ttl = ip.ttl();
        // TTL shares a 16-bit word with the protocol byte.
        let old_word = u16::from_be_bytes([ttl, ip.protocol()]);
        let new_ttl = ttl.saturating_sub(1);
        let new_word = u16::from_be_bytes([new_ttl, ip.protocol()]);
        let delta = checksum::delta_u32(old, new_addr) + checksum::delta_u16(old_word, new_word);
        if dst {
            ip.set_dst_addr(addr);
        } else {
            ip.set_src_addr(addr);
        }
        ip.set_ttl(new_ttl);
        ip.set_checksum(checksum::apply_delta(ip.checksum(), delta));
        old
    };
    match o.proto {
        IPPROTO_TCP => {
            let mut t = TcpSegment::new_unchecked(&mut frame[o.l4()..]);
            let old_port = if dst { t.dst_port() } else { t.src_port() };
            let delta =
                checksum::delta_u32(old_addr, new_addr) + checksum::delta_u16(old_port, port);
            if dst {
                t.set_dst_port(port);
            } else {
                t.set_src_port(port);
            }
            t.set_checksum(checksum::apply_delta(t.checksum(), delta));
        }
        IPPROTO_UDP => {
            let mut u = UdpDatagram::new_unchecked(&mut frame[o.l4()..]);
            let old_port = if dst { u.dst_port() } else { u.src_port() };
            if dst {
                u.set_dst_port(port);
            } else {
                u.set_src_port(port);
            }
            // Zero means "no checksum" (RFC 768): leave it; a computed zero
            // is sent as 0xffff.
            let c = u.checksum();
            if c != 0 {
                let delta =
                    checksum::delta_u32(old_addr, new_addr) + checksum::delta_u16(old_port, port);
                let n = checksum::apply_delta(c, delta);
                u.set_checksum(if n == 0 { 0xffff } else { n });
            }
        }
        _ => {}
    }
}

/// Client->VIP packet to the backend: destination address and port, TTL,
/// checksums, and the Ethernet addresses of the egress link.
#[inline]
pub fn dnat(
    frame: &mut [u8],
    o: Offsets,
    backend: Ipv4Addr,
    backend_port: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) {
    // Untagged Ethernet and a 20-byte IP header: the fixed-offset rewrite.
    let common = o.l3 == 14 && o.l4 == 34;
    if common && dnat_common(frame, u32::from(backend), backend_port, src_mac, dst_mac) {
        return;
    }
    rewrite_addr_port(frame, o, true, backend, backend_port);
    set_l2(frame, src_mac, dst_mac);
}

/// [`dnat`] for the frames the worker's fast path accepts: untagged
/// Ethernet, a 20-byte IP header, TCP or UDP at byte 34. The headers are
/// read and written through one fixed-size array, so no field access is
/// bounds-checked on its own. Returns false (frame untouched) for a frame
/// shorter than those headers or another protocol. Same bytes out as
/// [`dnat`] (tested).
#[inline(always)]
pub fn dnat_common(
    frame: &mut [u8],
    backend: u32,
    backend_port: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> bool {
    rewrite_common::<true>(frame, backend, backend_port, src_mac, dst_mac)
}

/// [`reverse_dnat`] for the fast path's frames (see [`dnat_common`]).
#[inline(always)]
pub fn reverse_dnat_common(
    frame: &mut [u8],
    vip: u32,
    vip_port: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> bool {
    rewrite_common::<false>(frame, vip, vip_port, src_mac, dst_mac)
}

/// The fixed-layout rewrite of the destination (`DST`) or source address
/// and port, TTL, both checksums (RFC 1624) and the Ethernet addresses.
#[inline(always)]
fn rewrite_common<const DST: bool>(
    frame: &mut [u8],
    addr: u32,
    port: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> bool {
    use crate::wire::fixed::{
        IP_CSUM, IP_DST, IP_SRC, L4, L4_DPORT, L4_SPORT, TCP_CSUM, TTL, UDP_CSUM,
    };
    let (a_off, p_off) = if DST {
        (IP_DST, L4 + L4_DPORT)
    } else {
        (IP_SRC, L4 + L4_SPORT)
    };
    let Some(h) = frame.get_mut(..54) else {
        return false;
    };
    let Ok(h): Result<&mut [u8; 54], _> = h.try_into() else {
        return false;
    };
    let l4_csum = match h[TTL + 1] {
        IPPROTO_TCP => L4 + TCP_CSUM,
        IPPROTO_UDP => L4 + UDP_CSUM,
        _ => return false,
    };
    let rd16 = |h: &[u8; 54], i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let old_addr = u32::from_be_bytes([h[a_off], h[a_off + 1], h[a_off + 2], h[a_off + 3]]);
    let (ttl, proto) = (h[TTL], h[TTL + 1]);
    let new_ttl = ttl.saturating_sub(1);
    let addr_delta = checksum::delta_u32(old_addr, addr);
    let ip_delta = addr_delta
        + checksum::delta_u16(
            u16::from_be_bytes([ttl, proto]),
            u16::from_be_bytes([new_ttl, proto]),
        );
    let ip_csum = checksum::apply_delta(rd16(h, IP_CSUM), ip_delta);
    let old_port = rd16(h, p_off);
    let l4 = rd16(h, l4_csum);
    // UDP checksum zero means "none" (RFC 768); a computed zero goes as 0xffff.
    let l4 = if proto == IPPROTO_UDP && l4 == 0 {
        0
    } else {
        let n = checksum::apply_delta(l4, addr_delta + checksum::delta_u16(old_port, port));
        if proto == IPPROTO_UDP && n == 0 {
            0xffff
        } else {
            n
        }
    };
    h[0..6].copy_from_slice(&dst_mac.0);
    h[6..12].copy_from_slice(&src_mac.0);
    h[TTL] = new_ttl;
    h[IP_CSUM..IP_CSUM + 2].copy_from_slice(&ip_csum.to_be_bytes());
    h[a_off..a_off + 4].copy_from_slice(&addr.to_be_bytes());
    h[p_off..p_off + 2].copy_from_slice(&port.to_be_bytes());
    h[l4_csum..l4_csum + 2].copy_from_slice(&l4.to_be_bytes());
    true
}

/// Backend->client reply back to the VIP: source address and port, TTL,
/// checksums, Ethernet addresses.
#[inline]
pub fn reverse_dnat(
    frame: &mut [u8],
    o: Offsets,
    vip: Ipv4Addr,
    vip_port: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) {
    let common = o.l3 == 14 && o.l4 == 34;
    if common && reverse_dnat_common(frame, u32::from(vip), vip_port, src_mac, dst_mac) {
        return;
    }
    rewrite_addr_port(frame, o, false, vip, vip_port);
    set_l2(frame, src_mac, dst_mac);
}

/// Which side of an ICMP error sluice rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpSteer {
    /// An error addressed to a VIP (e.g. "fragmentation needed" about a
    /// packet the VIP sent) goes to the backend that owns the flow: the
    /// outer destination and the embedded source become the backend's.
    ToBackend,
    /// An error from a backend about a client's packet goes on to the client
    /// as if from the VIP: the outer source and the embedded destination
    /// become the VIP's.
    FromBackend,
}

/// Rewrites an ICMP error for `steer` to `addr:port` (checksums of the
/// outer header, the embedded header and the ICMP message patched), and the
/// Ethernet addresses. `false` if the embedded packet cannot be rewritten.
pub fn steer_icmp_error(
    frame: &mut [u8],
    o: Offsets,
    steer: IcmpSteer,
    addr: Ipv4Addr,
    port: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> bool {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[o.l3()..]);
    match steer {
        IcmpSteer::ToBackend => ip.rewrite_dst_addr(addr),
        IcmpSteer::FromBackend => ip.rewrite_src_addr(addr),
    }
    ip.decrement_ttl();
    let mut icmp = IcmpPacket::new_unchecked(&mut frame[o.l4()..o.end()]);
    let rewritten = match steer {
        IcmpSteer::ToBackend => icmp.rewrite_embedded_src(addr, port),
        IcmpSteer::FromBackend => icmp.rewrite_embedded_dst(addr, port),
    };
    if rewritten.is_err() {
        return false;
    }
    set_l2(frame, src_mac, dst_mac);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// The fast path's rewrite is the general rewrite, byte for byte.
        #[test]
        fn dnat_common_writes_what_dnat_writes(
            mut frame in proptest::collection::vec(any::<u8>(), 54..90),
            udp in any::<bool>(),
            zero_udp_csum in any::<bool>(),
            backend in any::<u32>(),
            port in any::<u16>(),
            src in any::<[u8; 6]>(),
            dst in any::<[u8; 6]>(),
        ) {
            frame[12] = 0x08;
            frame[13] = 0x00;
            frame[14] = 0x45;
            frame[23] = if udp { IPPROTO_UDP } else { IPPROTO_TCP };
            if udp && zero_udp_csum {
                frame[40] = 0;
                frame[41] = 0;
            }
            let o = Offsets { l3: 14, l4: 34, end: frame.len() as u16, proto: frame[23] };
            let mut general = frame.clone();
            rewrite_addr_port(&mut general, o, true, Ipv4Addr::from(backend), port);
            set_l2(&mut general, MacAddr(src), MacAddr(dst));
            prop_assert!(dnat_common(&mut frame, backend, port, MacAddr(src), MacAddr(dst)));
            prop_assert_eq!(frame, general);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// The reply fast path's rewrite is the general one, byte for byte.
        #[test]
        fn reverse_dnat_common_writes_what_the_general_rewrite_writes(
            mut frame in proptest::collection::vec(any::<u8>(), 54..90),
            udp in any::<bool>(),
            zero_udp_csum in any::<bool>(),
            vip in any::<u32>(),
            port in any::<u16>(),
            src in any::<[u8; 6]>(),
            dst in any::<[u8; 6]>(),
        ) {
            frame[12] = 0x08;
            frame[13] = 0x00;
            frame[14] = 0x45;
            frame[23] = if udp { IPPROTO_UDP } else { IPPROTO_TCP };
            if udp && zero_udp_csum {
                frame[40] = 0;
                frame[41] = 0;
            }
            let o = Offsets { l3: 14, l4: 34, end: frame.len() as u16, proto: frame[23] };
            let mut general = frame.clone();
            rewrite_addr_port(&mut general, o, false, Ipv4Addr::from(vip), port);
            set_l2(&mut general, MacAddr(src), MacAddr(dst));
            prop_assert!(reverse_dnat_common(&mut frame, vip, port, MacAddr(src), MacAddr(dst)));
            prop_assert_eq!(frame, general);
        }
    }

    #[test]
    fn dnat_common_refuses_short_frames_and_other_protocols() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut short = vec![0u8; 53];
        short[23] = IPPROTO_TCP;
        assert!(!dnat_common(&mut short, 1, 1, mac, mac));
        assert_eq!(short, {
            let mut s = vec![0u8; 53];
            s[23] = IPPROTO_TCP;
            s
        });
        let mut icmp = vec![0u8; 60];
        icmp[23] = crate::wire::IPPROTO_ICMP;
        assert!(!dnat_common(&mut icmp, 1, 1, mac, mac));
        assert!(icmp
            .iter()
            .enumerate()
            .all(|(i, &b)| b == if i == 23 { 1 } else { 0 }));
    }
}
