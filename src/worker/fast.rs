//! The fast path: the common case in one pass, for both directions. A
//! mid-flow TCP or UDP packet of a flow this worker tracks, under the
//! current generation, that leaves the flow's state as it was: parsed once
//! at fixed offsets, its service found in a direct-mapped memo, its flow
//! through its hinted slot (or the batch's first pass), rewritten in place
//! with incremental checksums, its egress taken from the generation's
//! endpoint (forward) or the flow's remembered client hop (reply), with no
//! route scan. Anything else returns `None` having changed nothing, and the
//! general path decides afresh; the fast path only ever agrees with it,
//! faster (the differential test in tests/fast_path.rs holds it to that).

use super::parse::{is_syn, parse_common, Parsed};
use super::{PreLookup, Worker};
use crate::flow::{advance_seq, tcp_flags, Direction, FlowId, FlowState, Tick};
use crate::hash::owner_worker;
use crate::nat;
use crate::port::Port;
use crate::service::VipKey;
use crate::wire::IPPROTO_TCP;

impl<P: Port> Worker<P> {
    /// Rewrites `frame` if it is the common case and returns its egress
    /// port; `None` (frame untouched) sends it to the general path.
    #[inline(always)]
    pub(super) fn fast_path(
        &mut self,
        frame: &mut [u8],
        now: Tick,
        handed: bool,
        pre: PreLookup,
    ) -> Option<u16> {
        let Some(Ok(p)) = parse_common(frame) else {
            return None;
        };
        // TTL expiry is the general path's (it answers).
        if p.ttl <= 1 {
            return None;
        }
        let vip = VipKey {
            addr: p.dst,
            port: p.dport,
            proto: p.o.proto,
        };
        let backend = VipKey {
            addr: p.src,
            port: p.sport,
            proto: p.o.proto,
        };
        // Both memos first (a compare each), map probes only on a miss.
        if let Some(svc) = self.memo.cached_vip(&vip) {
            return self.fast_forward(frame, &p, svc, now, handed, pre);
        }
        if let Some(svc) = self.memo.cached_backend(&backend) {
            return self.fast_reply(frame, &p, svc, now, handed, pre);
        }
        let g = &*self.gen;
        if let Some(svc) = self.memo.service(g, &vip) {
            return self.fast_forward(frame, &p, svc, now, handed, pre);
        }
        let svc = self.memo.reply_service(g, &backend)?;
        self.fast_reply(frame, &p, svc, now, handed, pre)
    }

    /// Client -> VIP: [`super::decide::decide`]'s `Keep` case, unrolled.
    #[inline(always)]
    fn fast_forward(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        svc: u32,
        now: Tick,
        handed: bool,
        pre: PreLookup,
    ) -> Option<u16> {
        let tcp = p.o.proto == IPPROTO_TCP;
        // SYNs (S3 rescheduling) are the general path's.
        if tcp && is_syn(p.flags) {
            return None;
        }
        if !handed && owner_worker(p.src, p.sport, self.n_workers) != self.id {
            return None;
        }
        let id = match pre {
            PreLookup {
                hash: Some(_),
                id,
                reply: false,
            } => id,
            _ => {
                let key = p.forward_key();
                self.flows.lookup(&key, self.flows.hash(&key))
            }
        }?;
        let g = &*self.gen;
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
        // count, and a handshake completing (the client's ACK after the
        // backend's SYN-ACK) makes it assured: the general path does that
        // bookkeeping.
        if state.is_closed() != e.state.is_closed()
            || (e.state == FlowState::SynRecv && state == FlowState::Established)
        {
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

    /// Backend -> client of an assured flow whose client hop a reply on the
    /// general path already resolved under this generation.
    #[inline(always)]
    fn fast_reply(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        svc: u32,
        now: Tick,
        handed: bool,
        pre: PreLookup,
    ) -> Option<u16> {
        if !handed && owner_worker(p.dst, p.dport, self.n_workers) != self.id {
            return None;
        }
        let g = &*self.gen;
        let vip = g.service(svc).key;
        let id: FlowId = match pre {
            PreLookup {
                hash: Some(_),
                id,
                reply: true,
            } => id,
            _ => {
                let key = p.reply_key(&vip);
                self.flows.lookup(&key, self.flows.hash(&key))
            }
        }?;
        let e = self.flows.entry_mut(id);
        if e.generation != g.number as u32
            || e.backend_addr != p.src
            || e.backend_port != p.sport
            || !e.is_assured()
        {
            return None;
        }
        let (port, mac) = g.hop(e.client_hop)?;
        let link = g.link(port)?;
        if usize::from(port) >= self.tx.len() {
            return None;
        }
        let tcp = p.o.proto == IPPROTO_TCP;
        let state = if tcp {
            e.state.next_tcp(Direction::Reply, p.flags)
        } else {
            e.state.next_udp(Direction::Reply)
        };
        if state != e.state {
            return None;
        }
        e.last_seen = now;
        if tcp {
            advance_seq(&mut e.backend_next, p.seq_end());
            if p.flags & tcp_flags::ACK != 0 {
                advance_seq(&mut e.client_next, p.ack(frame));
            }
        }
        if let Some(c) = self.ep.get_mut(e.endpoint as usize) {
            c.packets_out += 1;
            c.bytes_out += frame.len() as u64;
        }
        let rewritten = nat::reverse_dnat_common(frame, vip.addr, vip.port, link.mac, mac);
        debug_assert!(
            rewritten,
            "parse_common accepted a frame the rewrite refuses"
        );
        self.counters.replies += 1;
        Some(port)
    }
}
