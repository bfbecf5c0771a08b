//! Backend -> client: the reverse translation of replies, found by the
//! flow they belong to (or, for a flow sluice has not seen, by the service
//! whose Maglev choice that backend is, as any instance would decide).

use std::net::Ipv4Addr;

use super::forward::{assure, count_open};
use super::parse::Parsed;
use super::query::endpoint_of;
use super::verdict::{DropReason, Verdict};
use super::Worker;
use crate::flow::{advance_seq, tcp_flags, Direction, FlowState, Tick};
use crate::nat;
use crate::port::Port;
use crate::service::VipKey;
use crate::wire::IPPROTO_TCP;

impl<P: Port> Worker<P> {
    /// Backend -> client.
    #[inline]
    pub(crate) fn reply(&mut self, frame: &mut [u8], p: &Parsed, now: Tick) -> Verdict {
        if p.ttl <= 1 {
            return self.time_exceeded(p);
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
        let this = refs.iter().find(|r| r.service == svc).copied();
        if let Some(r) = this {
            if let Some(c) = self.ep.get_mut(r.endpoint as usize) {
                c.packets_out += 1;
                c.bytes_out += frame.len() as u64;
            }
        }
        let hop = g.route_hop(p.dst);
        if let Some(id) = id {
            let tcp = p.o.proto == IPPROTO_TCP;
            let e = self.flows.entry_mut(id);
            let was = e.state;
            e.last_seen = now;
            // Pin the entry to this generation (the backend's index in it,
            // as the forward path would find it by identity) with the
            // client's next hop, so the flow's next replies take the fast
            // path.
            if e.generation != g.number as u32 {
                if let Some(r) = this {
                    e.endpoint = r.endpoint;
                    e.generation = g.number as u32;
                }
            }
            if e.generation == g.number as u32 {
                e.client_hop = hop.unwrap_or(crate::service::NO_HOP);
            }
            e.state = if tcp {
                // What each side expects next, learnt from the backend's
                // segments alone (the client's are the fast path's, which
                // must not pay for it): the client next expects the end of
                // the backend's data, the backend the next byte it has not
                // acknowledged.
                advance_seq(&mut e.backend_next, p.seq_end());
                if p.flags & tcp_flags::ACK != 0 {
                    advance_seq(&mut e.client_next, p.ack(frame));
                }
                e.state.next_tcp(Direction::Reply, p.flags)
            } else {
                e.state.next_udp(Direction::Reply)
            };
            // The backend answered: an established flow (its handshake seen
            // or picked up mid-stream) or a UDP flow is now assured.
            if matches!(e.state, FlowState::Established | FlowState::UdpReplied) {
                assure(e, &mut self.counters);
            }
            if was.is_closed() != e.state.is_closed() {
                let (k, e) = (self.flows.key(id), self.flows.entry(id));
                count_open(&mut self.ep, endpoint_of(g, k, e), was, e.state);
            }
        }
        let (port, mac) = match hop {
            Ok(i) => match g.hop(i) {
                Some(h) => h,
                None => return Verdict::Drop(DropReason::NoRoute),
            },
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
}
