//! The per-packet pipeline: classify, find or create the flow, choose the
//! backend, rewrite. One function per direction, one verdict per packet.

use std::cell::Cell;
use std::net::Ipv4Addr;

use super::query::{endpoint_of, EndpointCounters};
use super::verdict::{DropReason, Verdict};
use super::Counters;
use super::Worker;
use crate::flow::{tcp_flags, Direction, FlowEntry, FlowId, FlowKey, FlowState, FlowTable, Tick};
use crate::hash::owner_worker;
use crate::nat::{self, IcmpSteer, Offsets};
use crate::port::Port;
use crate::service::{EndpointRt, EndpointState, Generation, VipKey};
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
/// read from one fixed-size array: a single length check up front, then
/// constant offsets the compiler needs no bounds checks for. `None` hands
/// anything else (VLAN tags, IP options, ICMP, ARP, short frames) to the
/// general parser; both apply the same checks (tests/malformed.rs).
#[inline(always)]
pub(crate) fn parse_common(frame: &[u8]) -> Option<Result<Parsed, Option<DropReason>>> {
    const L3: usize = 14;
    const L4: usize = 34;
    let h: &[u8; 54] = frame.get(..54)?.try_into().ok()?;
    if h[12] != 0x08 || h[13] != 0x00 || h[L3] != 0x45 {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let total = usize::from(be16(L3 + 2));
    let end = L3 + total;
    if total < 20 || end > frame.len() {
        return Some(Err(Some(DropReason::MalformedIpv4)));
    }
    if be16(L3 + 6) & 0x3fff != 0 {
        return Some(Err(Some(DropReason::Fragment)));
    }
    let proto = h[L3 + 9];
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
        src: u32::from_be_bytes([h[26], h[27], h[28], h[29]]),
        dst: u32::from_be_bytes([h[30], h[31], h[32], h[33]]),
        sport: be16(L4),
        dport: be16(L4 + 2),
        ttl: h[L3 + 8],
        ..Parsed::default()
    };
    if end > usize::from(u16::MAX) {
        return Some(Err(Some(DropReason::MalformedIpv4)));
    }
    match proto {
        IPPROTO_TCP => {
            let hl = usize::from(h[L4 + 12] >> 4) * 4;
            if hl < 20 || 20 + hl > total {
                return Some(Err(Some(DropReason::MalformedL4)));
            }
            p.flags = h[L4 + 13];
            p.seq = u32::from_be_bytes([h[L4 + 4], h[L4 + 5], h[L4 + 6], h[L4 + 7]]);
        }
        IPPROTO_UDP => {
            let len = usize::from(be16(L4 + 4));
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

/// The last VIP resolved, as (packed key, service index) of the current
/// generation: traffic comes in runs to the same VIP, and one comparison
/// is cheaper than a map probe. Cleared at every generation switch.
pub(crate) struct VipMemo(Cell<(u64, u32)>);

/// Packed keys keep bits 24..32 clear: this matches none.
const NO_VIP: (u64, u32) = (u64::MAX, 0);

impl VipMemo {
    pub(crate) fn new() -> VipMemo {
        VipMemo(Cell::new(NO_VIP))
    }

    pub(crate) fn clear(&self) {
        self.0.set(NO_VIP);
    }

    /// `g.service_for(vip)`, remembered.
    #[inline(always)]
    pub(crate) fn service(&self, g: &Generation, vip: &VipKey) -> Option<u32> {
        let packed = vip.packed();
        let (key, svc) = self.0.get();
        if key == packed {
            return Some(svc);
        }
        let svc = g.service_for(vip)?;
        self.0.set((packed, svc));
        Some(svc)
    }
}

#[inline]
pub(crate) fn classify(g: &Generation, memo: &VipMemo, p: &Parsed) -> Result<Class, DropReason> {
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

#[inline]
fn is_syn(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
}

/// How a forward packet with a table entry is treated.
enum Pinned {
    /// Keep the entry's backend.
    Keep(u32),
    /// Schedule afresh (S3: SYN reusing a dead or closed flow's tuple).
    Reschedule,
    /// The backend is gone or down: reset the client (S4b).
    Gone,
}

impl<P: Port> Worker<P> {
    /// The common case in one pass: a mid-flow TCP or UDP packet of a flow
    /// this worker already tracks, pinned under the current generation to a
    /// backend that still carries flows and has a resolved next hop. It is
    /// rewritten in place and its egress port returned. `None` means "not
    /// the common case" and nothing was changed: the general path
    /// ([`Worker::forward`] and friends) takes the packet and decides
    /// everything again, so this path only ever agrees with it, faster.
    #[inline(always)]
    pub(super) fn fast_forward(
        &mut self,
        frame: &mut [u8],
        now: Tick,
        handed: bool,
        pre: super::PreLookup,
    ) -> Option<u16> {
        let Some(Ok(p)) = parse_common(frame) else {
            return None;
        };
        let tcp = p.o.proto == IPPROTO_TCP;
        // TTL expiry and SYNs (S3 rescheduling) are the general path's.
        if p.ttl <= 1 || (tcp && is_syn(p.flags)) {
            return None;
        }
        let g = &*self.gen;
        let vip = VipKey {
            addr: p.dst,
            port: p.dport,
            proto: p.o.proto,
        };
        let svc = self.vip_memo.service(g, &vip)?;
        if !handed && owner_worker(p.src, p.sport, self.n_workers) != self.id {
            return None;
        }
        let (_, id) = self.find_flow(&p, pre);
        let id = id?;
        let e = self.flows.entry_mut(id);
        // An entry pinned under an older generation is re-resolved by
        // identity on the general path (its endpoint index may have moved).
        if e.generation != g.number as u32 {
            return None;
        }
        let ep = g.endpoint(e.endpoint);
        if !ep.state.carries_flows() || ep.service != svc {
            return None;
        }
        let (port, mac) = ep.egress?;
        let link = g.link(port)?;
        if usize::from(port) >= self.tx.len() {
            return None;
        }
        let state = if tcp {
            e.state.next_tcp(Direction::Original, p.flags)
        } else {
            e.state.next_udp(Direction::Original)
        };
        // A flow closing (or reopening) changes its backend's open-flow
        // count: the general path does that bookkeeping.
        if state.is_closed() != e.state.is_closed() {
            return None;
        }
        e.last_seen = now;
        e.state = state;
        if let Some(c) = self.ep.get_mut(e.endpoint as usize) {
            c.packets_in += 1;
            c.bytes_in += frame.len() as u64;
        }
        // parse_common accepted the frame, so it has the fixed layout.
        let rewritten = nat::dnat_common(frame, ep.addr, ep.port, link.mac, mac);
        debug_assert!(
            rewritten,
            "parse_common accepted a frame dnat_common refuses"
        );
        self.counters.forwarded += 1;
        Some(port)
    }

    /// Client -> VIP. `id` is the table lookup's result for `key`.
    #[inline]
    pub(crate) fn forward(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        l: Lookup,
        now: Tick,
    ) -> (Verdict, Option<usize>) {
        // Before any state: a packet that dies here must not create, move or
        // refresh a flow.
        if p.ttl <= 1 {
            return (Verdict::Drop(DropReason::TtlExpired), None);
        }
        let Lookup { svc, hash, id } = l;
        let key = p.forward_key();
        let g = &*self.gen;
        let tcp = p.o.proto == IPPROTO_TCP;
        let syn = tcp && is_syn(p.flags);
        let ep_idx = match id {
            Some(id) => {
                let e = *self.flows.entry(id);
                match pin(g, svc, &e, syn, p.seq) {
                    Pinned::Keep(ep) => {
                        let e = self.flows.entry_mut(id);
                        let was = e.state;
                        e.endpoint = ep;
                        e.generation = g.number as u32;
                        e.last_seen = now;
                        e.state = if tcp {
                            e.state.next_tcp(Direction::Original, p.flags)
                        } else {
                            e.state.next_udp(Direction::Original)
                        };
                        count_open(&mut self.ep, Some(ep), was, e.state);
                        Some(ep)
                    }
                    Pinned::Reschedule => {
                        self.counters.flows_rescheduled += 1;
                        forget(g, &mut self.ep, &key, &e);
                        self.flows.remove(id);
                        self.mutations += 1;
                        None
                    }
                    Pinned::Gone => {
                        forget(g, &mut self.ep, &key, &e);
                        self.flows.remove(id);
                        self.mutations += 1;
                        return gone(&mut self.counters, self.rx_port, frame, p, tcp);
                    }
                }
            }
            None => None,
        };
        // No entry, or one just dropped (S3): a new flow.
        let ep_idx = match ep_idx {
            Some(ep) => ep,
            None => {
                let ctx = FlowCtx {
                    flows: &mut self.flows,
                    counters: &mut self.counters,
                    mutations: &mut self.mutations,
                    ep: &mut self.ep,
                };
                match new_flow(ctx, g, svc, key, hash, p, now, syn) {
                    Some(ep) => ep,
                    None => return no_backend(&mut self.counters, self.rx_port, frame, p, tcp),
                }
            }
        };
        let ep = g.endpoint(ep_idx);
        if let Some(c) = self.ep.get_mut(ep_idx as usize) {
            c.packets_in += 1;
            c.bytes_in += frame.len() as u64;
        }
        let Some((port, mac)) = ep.egress else {
            return (Verdict::Drop(DropReason::NeighborUnresolved), None);
        };
        let Some(link) = g.link(port) else {
            return (Verdict::Drop(DropReason::NoRoute), None);
        };
        nat::dnat(frame, p.o, Ipv4Addr::from(ep.addr), ep.port, link.mac, mac);
        self.counters.forwarded += 1;
        (Verdict::Forward { port }, None)
    }

    /// Backend -> client.
    #[inline]
    pub(crate) fn reply(&mut self, frame: &mut [u8], p: &Parsed, now: Tick) -> Verdict {
        if p.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let g = &*self.gen;
        let backend = VipKey {
            addr: p.src,
            port: p.sport,
            proto: p.o.proto,
        };
        let refs = g.backend_refs(&backend);
        let mut found = None;
        for r in refs {
            let key = p.reply_key(&g.service(r.service).key);
            let h = self.flows.hash(&key);
            if let Some(id) = self.flows.lookup(&key, h) {
                let e = self.flows.entry(id);
                if e.backend_addr == p.src && e.backend_port == p.sport {
                    found = Some((r.service, Some(id)));
                    break;
                }
            }
        }
        if found.is_none() {
            // No entry: the service whose Maglev choice for this flow is this
            // backend (what the forward path of any instance would pick).
            found = refs
                .iter()
                .find(|r| {
                    let s = g.service(r.service);
                    let key = p.reply_key(&s.key);
                    g.choose_existing(r.service, key.hash_v1(s.seed)) == Some(r.endpoint)
                })
                .or(if refs.len() == 1 { refs.first() } else { None })
                .map(|r| (r.service, None));
        }
        let Some((svc, id)) = found else {
            return Verdict::Drop(DropReason::ReplyUnknownFlow);
        };
        if let Some(r) = refs.iter().find(|r| r.service == svc) {
            if let Some(c) = self.ep.get_mut(r.endpoint as usize) {
                c.packets_out += 1;
                c.bytes_out += frame.len() as u64;
            }
        }
        if let Some(id) = id {
            let tcp = p.o.proto == IPPROTO_TCP;
            let e = self.flows.entry_mut(id);
            let was = e.state;
            e.last_seen = now;
            e.state = if tcp {
                e.state.next_tcp(Direction::Reply, p.flags)
            } else {
                e.state.next_udp(Direction::Reply)
            };
            if was.is_closed() != e.state.is_closed() {
                let (k, e) = (self.flows.key(id), self.flows.entry(id));
                count_open(&mut self.ep, endpoint_of(g, k, e), was, e.state);
            }
        }
        let (port, mac) = match g.route(p.dst) {
            Ok(r) => r,
            Err(None) => return Verdict::Drop(DropReason::NoRoute),
            Err(Some(_)) => return Verdict::Drop(DropReason::NeighborUnresolved),
        };
        let Some(link) = g.link(port) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let s = g.service(svc);
        nat::reverse_dnat(
            frame,
            p.o,
            Ipv4Addr::from(s.key.addr),
            s.key.port,
            link.mac,
            mac,
        );
        self.counters.replies += 1;
        Verdict::Forward { port }
    }

    /// ICMP: echo requests to a VIP are answered; errors to a VIP go to the
    /// backend of the flow they are about; errors from a backend about a
    /// client's packet go to the client as if from the VIP.
    pub(crate) fn icmp(&mut self, frame: &mut [u8], p: &Parsed) -> (Verdict, Option<usize>) {
        use crate::wire::icmp::ECHO_REQUEST;
        let g = &*self.gen;
        let (is_err, msg_type, emb) = {
            let icmp = IcmpPacket::new_unchecked(&frame[p.o.l4()..p.o.end()]);
            let emb = icmp.embedded().ok().map(|e| {
                (
                    u32::from(e.src_addr()),
                    u32::from(e.dst_addr()),
                    e.src_port(),
                    e.dst_port(),
                    e.protocol(),
                )
            });
            (icmp.is_error(), icmp.msg_type(), emb)
        };
        if g.is_vip_addr(p.dst) {
            if msg_type == ECHO_REQUEST {
                self.counters.answered += 1;
                nat::icmp_echo_reply_in_place(frame, p.o);
                return (Verdict::Reply { port: self.rx_port }, None);
            }
            // An error about a packet the VIP sent: embedded src is VIP:vport,
            // embedded dst is the client.
            let Some((esrc, edst, esport, edport, eproto)) = emb.filter(|_| is_err) else {
                return (Verdict::Drop(DropReason::IcmpUnhandled), None);
            };
            let vip = VipKey {
                addr: esrc,
                port: esport,
                proto: eproto,
            };
            let Some(svc) = g.service_for(&vip) else {
                return (Verdict::Drop(DropReason::IcmpUnhandled), None);
            };
            let owner = owner_worker(edst, edport, self.n_workers);
            if owner != self.id {
                return (Verdict::Handoff { worker: owner }, None);
            }
            let key = FlowKey {
                client_addr: edst,
                vip_addr: esrc,
                client_port: edport,
                vip_port: esport,
                proto: eproto,
            };
            let h = self.flows.hash(&key);
            let ep_idx = match self.flows.lookup(&key, h) {
                Some(id) => {
                    let e = self.flows.entry(id);
                    g.find_endpoint(svc, e.backend_addr, e.backend_port)
                }
                None => g.choose_existing(svc, key.hash_v1(g.service(svc).seed)),
            };
            let Some(ep) = ep_idx.map(|i| *g.endpoint(i)) else {
                return (Verdict::Drop(DropReason::IcmpUnhandled), None);
            };
            return self.icmp_out(frame, p, &ep, true, ep.addr, ep.port);
        }
        // From a backend: embedded src is the client, embedded dst the backend.
        let Some((esrc, edst, esport, edport, eproto)) = emb.filter(|_| is_err) else {
            return (Verdict::Drop(DropReason::IcmpUnhandled), None);
        };
        let backend = VipKey {
            addr: edst,
            port: edport,
            proto: eproto,
        };
        let Some(r) = g.backend_refs(&backend).first().copied() else {
            return (Verdict::Drop(DropReason::NoService), None);
        };
        let owner = owner_worker(esrc, esport, self.n_workers);
        if owner != self.id {
            return (Verdict::Handoff { worker: owner }, None);
        }
        let s = g.service(r.service);
        let (vaddr, vport) = (s.key.addr, s.key.port);
        let ep = *g.endpoint(r.endpoint);
        self.icmp_out(frame, p, &ep, false, vaddr, vport)
    }

    fn icmp_out(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        ep: &EndpointRt,
        to_backend: bool,
        addr: u32,
        port16: u16,
    ) -> (Verdict, Option<usize>) {
        let g = &*self.gen;
        if p.ttl <= 1 {
            return (Verdict::Drop(DropReason::TtlExpired), None);
        }
        let (port, mac) = if to_backend {
            match ep.egress {
                Some(x) => x,
                None => return (Verdict::Drop(DropReason::NeighborUnresolved), None),
            }
        } else {
            match g.route(p.dst) {
                Ok(x) => x,
                Err(None) => return (Verdict::Drop(DropReason::NoRoute), None),
                Err(Some(_)) => return (Verdict::Drop(DropReason::NeighborUnresolved), None),
            }
        };
        let Some(link) = g.link(port) else {
            return (Verdict::Drop(DropReason::NoRoute), None);
        };
        let steer = if to_backend {
            IcmpSteer::ToBackend
        } else {
            IcmpSteer::FromBackend
        };
        let ok = nat::steer_icmp_error(
            frame,
            p.o,
            steer,
            Ipv4Addr::from(addr),
            port16,
            link.mac,
            mac,
        );
        if !ok {
            return (Verdict::Drop(DropReason::IcmpUnhandled), None);
        }
        self.counters.forwarded += 1;
        (Verdict::Forward { port }, None)
    }
}

/// Decides what an existing entry means for this forward packet.
#[inline]
fn pin(g: &Generation, svc: u32, e: &FlowEntry, syn: bool, seq: u32) -> Pinned {
    let ep = if e.generation == g.number as u32 {
        Some(e.endpoint)
    } else {
        g.find_endpoint(svc, e.backend_addr, e.backend_port)
    };
    let Some(ep) = ep else {
        // Removed from the service since the flow began.
        return if syn {
            Pinned::Reschedule
        } else {
            Pinned::Gone
        };
    };
    let state = g.endpoint(ep).state;
    if syn {
        // S3: a SYN on a known tuple keeps its backend only if it is a plain
        // retransmission (same ISN) of a live flow to an active backend.
        // Anything else (TIME_WAIT reuse, a new connection after a close, a
        // draining or failed backend) is a new connection.
        let retransmit = e.client_isn == seq && !e.state.is_closed();
        return if retransmit && state == EndpointState::Active {
            Pinned::Keep(ep)
        } else {
            Pinned::Reschedule
        };
    }
    // Mid-flow packets (a packet after a RST included: the backend's stack
    // answers it as it sees fit) stay with a backend that carries flows.
    if state.carries_flows() {
        Pinned::Keep(ep)
    } else {
        Pinned::Gone
    }
}

/// Creates the entry for a flow that has none (or whose entry was just
/// dropped); returns its endpoint. A free function over the worker's fields
/// so the generation can stay borrowed meanwhile (no `Arc` clone per packet).
#[allow(clippy::too_many_arguments)]
#[inline]
fn new_flow(
    mut w: FlowCtx<'_>,
    g: &Generation,
    svc: u32,
    key: FlowKey,
    hash: u64,
    p: &Parsed,
    now: Tick,
    syn: bool,
) -> Option<u32> {
    let tcp = p.o.proto == IPPROTO_TCP;
    let mhash = key.hash_v1(g.service(svc).seed);
    // A SYN opens a connection: only endpoints taking new flows. Anything
    // else is mid-flow (after a restart, failover or eviction): the choice
    // every instance with this endpoint set makes, draining ones included.
    let ep_idx = if syn || !tcp {
        g.choose_new(svc, mhash)?
    } else {
        w.counters.table_misses += 1;
        g.choose_existing(svc, mhash)?
    };
    // A lone RST for an unknown flow is passed on but not remembered.
    if tcp && p.flags & tcp_flags::RST != 0 {
        return Some(ep_idx);
    }
    let ep = g.endpoint(ep_idx);
    let state = if tcp {
        FlowState::new_tcp(p.flags)
    } else {
        FlowState::UdpUnreplied
    };
    w.counters.flows_created += 1;
    if let Some(c) = w.ep.get_mut(ep_idx as usize) {
        c.flows_created += 1;
    }
    admit(
        &mut w,
        g,
        key,
        hash,
        FlowEntry {
            backend_addr: ep.addr,
            backend_port: ep.port,
            state,
            flags: 0,
            endpoint: ep_idx,
            generation: g.number as u32,
            created: now,
            last_seen: now,
            client_isn: p.seq,
        },
        now,
    );
    Some(ep_idx)
}

/// Puts an entry the table lacks into it and keeps the counters true: the
/// flow's endpoint (when pinned under the current generation) gains an open
/// flow unless the flow starts closed, and a flow evicted to make room is
/// forgotten. Shared by new flows and restored ones.
#[inline]
pub(super) fn admit(
    w: &mut FlowCtx<'_>,
    g: &Generation,
    key: FlowKey,
    hash: u64,
    e: FlowEntry,
    now: Tick,
) {
    let ins = w.flows.insert(key, hash, e, now);
    *w.mutations += 1;
    if !e.state.is_closed() && e.generation == g.number as u32 {
        if let Some(c) = w.ep.get_mut(e.endpoint as usize) {
            c.active_flows += 1;
        }
    }
    if let Some((k, v)) = ins.victim {
        w.counters.flows_evicted += 1;
        forget(g, w.ep, &k, &v);
    }
}

/// The worker fields flow creation touches.
pub(super) struct FlowCtx<'a> {
    pub(super) flows: &'a mut FlowTable,
    pub(super) counters: &'a mut Counters,
    pub(super) mutations: &'a mut u64,
    pub(super) ep: &'a mut Vec<EndpointCounters>,
}

/// A flow leaves the table: its backend carries one open flow less, unless
/// the flow had already closed (see [`count_open`]).
#[inline]
pub(crate) fn forget(g: &Generation, ep: &mut [EndpointCounters], key: &FlowKey, e: &FlowEntry) {
    if e.state.is_closed() {
        return;
    }
    if let Some(c) = endpoint_of(g, key, e).and_then(|i| ep.get_mut(i as usize)) {
        c.active_flows = c.active_flows.saturating_sub(1);
    }
}

/// `active_flows` counts a backend's open flows: a flow entering Closed or
/// TimeWait leaves the count at once, though its entry stays in the table
/// until it times out (to recognise late segments and reused tuples), and
/// one leaving those states joins it again. Otherwise an operator looking
/// for a skew (S2) would see every recently closed connection as load.
#[inline]
fn count_open(ep: &mut [EndpointCounters], at: Option<u32>, was: FlowState, now: FlowState) {
    if was.is_closed() == now.is_closed() {
        return;
    }
    if let Some(c) = at.and_then(|i| ep.get_mut(i as usize)) {
        if now.is_closed() {
            c.active_flows = c.active_flows.saturating_sub(1);
        } else {
            c.active_flows += 1;
        }
    }
}

/// A service with no endpoint for this flow: a TCP client is refused at once
/// with a RST rather than left to time out; others are dropped.
fn no_backend(
    counters: &mut Counters,
    rx_port: u16,
    frame: &mut [u8],
    p: &Parsed,
    tcp: bool,
) -> (Verdict, Option<usize>) {
    if tcp && p.flags & tcp_flags::RST == 0 {
        counters.answered += 1;
        let len = nat::tcp_reset_in_place(frame, p.o);
        return (Verdict::Reply { port: rx_port }, Some(len));
    }
    (Verdict::Drop(DropReason::NoBackend), None)
}

/// The client's flow lost its backend: a TCP client gets a RST at once
/// instead of retransmitting into a black hole (S4b).
fn gone(
    counters: &mut Counters,
    rx_port: u16,
    frame: &mut [u8],
    p: &Parsed,
    tcp: bool,
) -> (Verdict, Option<usize>) {
    // Never answer a RST with a RST.
    if !tcp || p.flags & tcp_flags::RST != 0 {
        return (Verdict::Drop(DropReason::BackendGone), None);
    }
    counters.resets += 1;
    counters.answered += 1;
    let len = nat::tcp_reset_in_place(frame, p.o);
    (Verdict::Reply { port: rx_port }, Some(len))
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
