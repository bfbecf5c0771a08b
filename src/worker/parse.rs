//! First stage of every packet: one parse of the headers, and the
//! classification of a frame as client -> VIP, backend -> client or ICMP.

use std::cell::Cell;

use super::verdict::DropReason;
use crate::flow::{tcp_flags, FlowId, FlowKey};
use crate::nat::Offsets;
use crate::service::{Generation, VipKey};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::TcpSegment;
use crate::wire::udp::UdpDatagram;
use crate::wire::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// What parsing found in a frame; everything later stages need, so each
/// header is validated once.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Parsed {
    pub o: Offsets,
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// Raw TCP flags (0 for UDP/ICMP).
    pub flags: u8,
    pub seq: u32,
    /// TCP: bytes of data the segment carries (after its header).
    pub data_len: u16,
}

impl Parsed {
    /// TCP: the sequence number after this segment (`seq` plus its data,
    /// SYN and FIN), what its receiver expects next once it has it.
    #[inline(always)]
    pub(crate) fn seq_end(&self) -> u32 {
        self.seq
            .wrapping_add(seq_len(usize::from(self.data_len), self.flags))
    }

    /// TCP: the segment's acknowledgment number, read from `frame` (only
    /// the paths that track sequence numbers need it).
    #[inline(always)]
    pub(crate) fn ack(&self, frame: &[u8]) -> u32 {
        let at = self.o.l4() + crate::wire::fixed::TCP_ACK;
        frame
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The sequence space a segment occupies: its data, plus one for SYN and
/// one for FIN.
#[inline(always)]
fn seq_len(data: usize, flags: u8) -> u32 {
    data as u32 + u32::from(flags & tcp_flags::SYN != 0) + u32::from(flags & tcp_flags::FIN != 0)
}

/// First stage: Ethernet, IPv4 and L4 checks. `Err(None)` means ARP (punt).
#[inline]
pub(crate) fn parse(frame: &[u8]) -> Result<Parsed, Option<DropReason>> {
    if let Some(p) = parse_common(frame) {
        return p;
    }
    parse_general(frame)
}

/// The common case (untagged Ethernet, IPv4 without options, TCP or UDP)
/// read from one fixed-size array (the layout of [`crate::wire::fixed`]): a
/// single length check up front, then constant offsets the compiler needs
/// no bounds checks for. `None` hands anything else (VLAN tags, IP
/// options, ICMP, ARP, short frames) to the general parser; both apply the
/// same checks (tests/malformed.rs).
#[inline(always)]
pub(crate) fn parse_common(frame: &[u8]) -> Option<Result<Parsed, Option<DropReason>>> {
    use crate::wire::fixed::*;
    let h: &[u8; HEADERS] = frame.get(..HEADERS)?.try_into().ok()?;
    if h[ETHERTYPE] != 0x08 || h[ETHERTYPE + 1] != 0x00 || h[VER_IHL] != 0x45 {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let total = usize::from(be16(TOTAL_LEN));
    let end = L3 + total;
    if total < 20 || end > frame.len() {
        return Some(Err(Some(DropReason::MalformedIpv4)));
    }
    if be16(FLAGS_FRAG) & 0x3fff != 0 {
        return Some(Err(Some(DropReason::Fragment)));
    }
    let proto = h[PROTOCOL];
    let mut p = Parsed {
        o: Offsets {
            l3: L3 as u16,
            l4: L4 as u16,
            // total <= 65535 and frames this size come only with a bogus
            // length, which `end > frame.len()` already rejected for any
            // buffer sluice uses (< 64 KiB).
            end: end.min(usize::from(u16::MAX)) as u16,
            proto,
        },
        src: be32(IP_SRC),
        dst: be32(IP_DST),
        sport: be16(L4 + L4_SPORT),
        dport: be16(L4 + L4_DPORT),
        ttl: h[TTL],
        ..Parsed::default()
    };
    if end > usize::from(u16::MAX) {
        return Some(Err(Some(DropReason::MalformedIpv4)));
    }
    match proto {
        IPPROTO_TCP => {
            let hl = usize::from(h[L4 + TCP_DATA_OFFSET] >> 4) * 4;
            if hl < 20 || 20 + hl > total {
                return Some(Err(Some(DropReason::MalformedL4)));
            }
            p.flags = h[L4 + TCP_FLAGS];
            p.seq = be32(L4 + TCP_SEQ);
            p.data_len = (total - 20 - hl) as u16;
        }
        IPPROTO_UDP => {
            let len = usize::from(be16(L4 + UDP_LEN));
            if len < 8 || len > total - 20 {
                return Some(Err(Some(DropReason::MalformedL4)));
            }
        }
        _ => return None,
    }
    Some(Ok(p))
}

/// Every other frame, through the checked wire views.
fn parse_general(frame: &[u8]) -> Result<Parsed, Option<DropReason>> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Some(DropReason::MalformedEthernet))?;
    match eth.ethertype() {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_ARP => {
            return match ArpPacket::new_checked(eth.payload()) {
                Ok(_) => Err(None),
                Err(_) => Err(Some(DropReason::MalformedArp)),
            }
        }
        _ => return Err(Some(DropReason::UnsupportedEthertype)),
    }
    let l3 = eth.header_len();
    let ip = Ipv4Packet::new_checked(&frame[l3..]).map_err(|_| Some(DropReason::MalformedIpv4))?;
    if ip.is_fragment() {
        return Err(Some(DropReason::Fragment));
    }
    let l4 = l3 + ip.header_len();
    let end = l3 + usize::from(ip.total_len());
    if end > usize::from(u16::MAX) {
        return Err(Some(DropReason::MalformedIpv4));
    }
    let proto = ip.protocol();
    let mut p = Parsed {
        // A frame is at most 18 + 65535 bytes of headers and IP packet; only
        // a bogus length could push `end` past u16 (rejected just above).
        o: Offsets {
            l3: l3 as u16,
            l4: l4 as u16,
            end: end as u16,
            proto,
        },
        src: u32::from(ip.src_addr()),
        dst: u32::from(ip.dst_addr()),
        ttl: ip.ttl(),
        ..Parsed::default()
    };
    let l4b = &frame[l4..end];
    match proto {
        IPPROTO_TCP => {
            let t = TcpSegment::new_checked(l4b).map_err(|_| Some(DropReason::MalformedL4))?;
            p.sport = t.src_port();
            p.dport = t.dst_port();
            p.flags = t.flags().0;
            p.seq = t.seq_number();
            p.data_len = (l4b.len() - t.header_len()) as u16;
        }
        IPPROTO_UDP => {
            let u = UdpDatagram::new_checked(l4b).map_err(|_| Some(DropReason::MalformedL4))?;
            p.sport = u.src_port();
            p.dport = u.dst_port();
        }
        IPPROTO_ICMP => {
            IcmpPacket::new_checked(l4b).map_err(|_| Some(DropReason::MalformedL4))?;
        }
        _ => return Err(Some(DropReason::UnsupportedProtocol)),
    }
    Ok(p)
}

/// A forward packet's service and flow-table lookup, from stage 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup {
    pub svc: u32,
    pub hash: u64,
    pub id: Option<FlowId>,
}

impl Parsed {
    /// The flow key of a backend->client packet of the service `vip`.
    #[inline(always)]
    pub(crate) fn reply_key(&self, vip: &VipKey) -> FlowKey {
        FlowKey {
            client_addr: self.dst,
            vip_addr: vip.addr,
            client_port: self.dport,
            vip_port: vip.port,
            proto: self.o.proto,
        }
    }

    /// The flow key of a client->VIP packet.
    #[inline(always)]
    pub(crate) fn forward_key(&self) -> FlowKey {
        FlowKey {
            client_addr: self.src,
            vip_addr: self.dst,
            client_port: self.sport,
            vip_port: self.dport,
            proto: self.o.proto,
        }
    }
}

/// Which way a packet goes, found from the generation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Class {
    /// Client -> VIP of service `svc`.
    Forward { svc: u32 },
    /// Backend -> client.
    Reply,
    /// ICMP to a VIP or from a backend.
    Icmp,
}

/// What the current generation says of a (VIP or backend) key, remembered
/// in two small direct-mapped caches: which service a VIP is, and which one
/// service a backend serves. A hit is one multiply and one compare instead
/// of a map probe, and traffic to a handful of VIPs and from a few dozen
/// backends stays in them; a miss probes the generation's maps and fills
/// the slot. Cleared at every generation switch (indices change).
pub(crate) struct ServiceMemo {
    vips: Box<[Cell<(u64, u32)>]>,
    backends: Box<[Cell<(u64, u32)>]>,
}

/// Packed keys keep bits 24..32 clear: this matches none.
const NO_KEY: (u64, u32) = (u64::MAX, 0);
const VIP_SLOTS_LOG2: u32 = 6;
const BACKEND_SLOTS_LOG2: u32 = 8;

#[inline(always)]
fn slot(packed: u64, log2: u32) -> usize {
    (packed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - log2)) as usize
}

impl ServiceMemo {
    pub(crate) fn new() -> ServiceMemo {
        ServiceMemo {
            vips: (0..1 << VIP_SLOTS_LOG2)
                .map(|_| Cell::new(NO_KEY))
                .collect(),
            backends: (0..1 << BACKEND_SLOTS_LOG2)
                .map(|_| Cell::new(NO_KEY))
                .collect(),
        }
    }

    pub(crate) fn clear(&self) {
        for c in self.vips.iter().chain(self.backends.iter()) {
            c.set(NO_KEY);
        }
    }

    /// The service of VIP `vip`, if the cache knows it (no map probe).
    #[inline(always)]
    pub(crate) fn cached_vip(&self, vip: &VipKey) -> Option<u32> {
        let packed = vip.packed();
        let (k, svc) = self.vips.get(slot(packed, VIP_SLOTS_LOG2))?.get();
        (k == packed).then_some(svc)
    }

    /// The one service backend `b` serves, if the cache knows it.
    #[inline(always)]
    pub(crate) fn cached_backend(&self, b: &VipKey) -> Option<u32> {
        let packed = b.packed();
        let (k, svc) = self.backends.get(slot(packed, BACKEND_SLOTS_LOG2))?.get();
        (k == packed).then_some(svc)
    }

    /// `g.service_for(vip)`, remembered.
    #[inline(always)]
    pub(crate) fn service(&self, g: &Generation, vip: &VipKey) -> Option<u32> {
        if let Some(svc) = self.cached_vip(vip) {
            return Some(svc);
        }
        let svc = g.service_for(vip)?;
        let packed = vip.packed();
        if let Some(c) = self.vips.get(slot(packed, VIP_SLOTS_LOG2)) {
            c.set((packed, svc));
        }
        Some(svc)
    }

    /// The service backend `b` serves if it serves exactly one (the reply
    /// fast path's case), remembered; `None` for a backend of no service
    /// or of several (their replies take the general path, which tells
    /// the services apart by flow).
    #[inline(always)]
    pub(crate) fn reply_service(&self, g: &Generation, b: &VipKey) -> Option<u32> {
        if let Some(svc) = self.cached_backend(b) {
            return Some(svc);
        }
        let [r] = g.backend_refs(b) else {
            return None;
        };
        let packed = b.packed();
        if let Some(c) = self.backends.get(slot(packed, BACKEND_SLOTS_LOG2)) {
            c.set((packed, r.service));
        }
        Some(r.service)
    }
}

#[inline]
pub(crate) fn classify(
    g: &Generation,
    memo: &ServiceMemo,
    p: &Parsed,
) -> Result<Class, DropReason> {
    if p.o.proto == IPPROTO_ICMP {
        return Ok(Class::Icmp);
    }
    let vip = VipKey {
        addr: p.dst,
        port: p.dport,
        proto: p.o.proto,
    };
    if let Some(svc) = memo.service(g, &vip) {
        return Ok(Class::Forward { svc });
    }
    let backend = VipKey {
        addr: p.src,
        port: p.sport,
        proto: p.o.proto,
    };
    if !g.backend_refs(&backend).is_empty() {
        return Ok(Class::Reply);
    }
    Err(DropReason::NoService)
}

/// A connection-opening SYN: SYN without ACK or RST.
#[inline]
pub(crate) fn is_syn(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tcp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 100]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x02;
        f
    }

    fn same(
        a: &Result<Parsed, Option<DropReason>>,
        b: &Result<Parsed, Option<DropReason>>,
    ) -> bool {
        match (a, b) {
            (Ok(x), Ok(y)) => format!("{x:?}") == format!("{y:?}"),
            (Err(x), Err(y)) => x == y,
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// The fast path is an optimisation, never a second opinion.
        #[test]
        fn fast_path_agrees_with_the_general_parser(
            edits in proptest::collection::vec((0usize..60, any::<u8>()), 0..6),
            len in 0usize..80,
            udp in any::<bool>(),
        ) {
            let mut f = tcp_frame();
            if udp {
                f[23] = 17;
                f[38..40].copy_from_slice(&20u16.to_be_bytes());
            }
            for (at, v) in edits {
                f[at] = v;
            }
            f.resize(len.max(54), 0);
            f.truncate(len);
            if let Some(fast) = parse_common(&f) {
                let general = parse_general(&f);
                prop_assert!(same(&fast, &general), "fast {:?} general {:?} frame {:?}", fast, general, f);
            }
        }
    }
}
