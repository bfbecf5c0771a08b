//! Client -> VIP on the general path: acts on [`decide`] for everything
//! the fast path (`fast.rs`) leaves (new flows, rescheduled SYNs, mid-flow
//! pickups, gone backends, generation changes).

use std::net::Ipv4Addr;

use super::decide::{decide, Decision, Facts};
use super::parse::{Lookup, Parsed};
use super::query::{endpoint_of, EndpointCounters};
use super::verdict::{Answer, AnswerKind, DropReason, Verdict};
use super::Counters;
use super::Worker;
use crate::flow::{Direction, FlowEntry, FlowKey, FlowState, FlowTable, Tick};
use crate::nat;
use crate::port::Port;
use crate::service::Generation;
use crate::wire::icmp;
use crate::wire::IPPROTO_TCP;

impl<P: Port> Worker<P> {
    /// Client -> VIP on the general path: [`decide`], then act on it.
    #[inline]
    pub(crate) fn forward(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        l: Lookup,
        now: Tick,
    ) -> Verdict {
        // Before any state: a packet that dies here must not create, move or
        // refresh a flow.
        if p.ttl <= 1 {
            return self.time_exceeded(p);
        }
        let Lookup { svc, hash, id } = l;
        let key = p.forward_key();
        let g = &*self.gen;
        let tcp = p.o.proto == IPPROTO_TCP;
        let facts = if tcp {
            Facts::tcp(p.flags, p.seq)
        } else {
            Facts::udp()
        };
        let entry = id.map(|id| *self.flows.entry(id));
        let decision = decide(g, svc, &key, entry.as_ref(), facts);
        // An entry the decision does not keep goes (S3 reschedule, S4b).
        if let (Some(id), Some(e)) = (id, entry) {
            if !matches!(decision, Decision::Keep { .. }) {
                forget(g, &mut self.ep, &key, &e);
                self.flows.remove(id);
                self.mutations += 1;
            }
        }
        let (ep_idx, new) = match decision {
            Decision::Keep { endpoint } => {
                // Keep comes only from an entry.
                if let Some(id) = id {
                    let e = self.flows.entry_mut(id);
                    let was = e.state;
                    if e.generation != g.number as u32 {
                        // Hop indices are the old generation's.
                        e.client_hop = crate::service::NO_HOP;
                    }
                    e.endpoint = endpoint;
                    e.generation = g.number as u32;
                    e.last_seen = now;
                    e.state = if tcp {
                        e.state.next_tcp(Direction::Original, p.flags)
                    } else {
                        e.state.next_udp(Direction::Original)
                    };
                    // The client's ACK after the backend's SYN-ACK: a
                    // handshake completed through sluice, which no spoofed
                    // source can do.
                    if was == FlowState::SynRecv && e.state == FlowState::Established {
                        assure(e, &mut self.counters);
                    }
                    count_open(&mut self.ep, Some(endpoint), was, e.state);
                }
                (endpoint, false)
            }
            Decision::New {
                endpoint,
                rescheduled,
            } => {
                self.counters.flows_rescheduled += u64::from(rescheduled);
                (endpoint, true)
            }
            Decision::Pickup { endpoint, track } => {
                if tcp {
                    self.counters.table_misses += 1;
                }
                (endpoint, track)
            }
            Decision::Gone => return refuse(p, tcp, DropReason::BackendGone),
            Decision::NoBackend { rescheduled } => {
                self.counters.flows_rescheduled += u64::from(rescheduled);
                return refuse(p, tcp, DropReason::NoBackend);
            }
        };
        if new {
            let ctx = FlowCtx {
                flows: &mut self.flows,
                counters: &mut self.counters,
                mutations: &mut self.mutations,
                ep: &mut self.ep,
            };
            track(ctx, g, key, hash, p, ep_idx, now);
        }
        let ep = g.endpoint(ep_idx);
        if let Some(c) = self.ep.get_mut(ep_idx as usize) {
            c.packets_in += 1;
            c.bytes_in += frame.len() as u64;
        }
        let Some((port, mac)) = ep.egress else {
            return Verdict::Drop(DropReason::NeighborUnresolved);
        };
        let Some(link) = g.link(port) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        nat::dnat(frame, p.o, Ipv4Addr::from(ep.addr), ep.port, link.mac, mac);
        self.counters.forwarded += 1;
        Verdict::Forward { port }
    }

    /// A packet whose TTL runs out here: answered with ICMP time exceeded
    /// from sluice's address on the link it came in on, like any router.
    pub(super) fn time_exceeded(&self, p: &Parsed) -> Verdict {
        let Some(link) = self.gen.link(self.rx_port) else {
            return Verdict::Drop(DropReason::TtlExpired);
        };
        Verdict::Answer(Answer {
            kind: AnswerKind::IcmpError {
                msg_type: icmp::TIME_EXCEEDED,
                code: icmp::TTL_EXPIRED,
                src: link.addr,
            },
            o: p.o,
            reason: DropReason::TtlExpired,
        })
    }
}

/// Creates the entry of a new flow to `endpoint` (a new connection or a
/// mid-flow pickup). A full table of live assured flows takes no new
/// entry: the packet still goes where the decision says, untracked.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn track(
    mut w: FlowCtx<'_>,
    g: &Generation,
    key: FlowKey,
    hash: u64,
    p: &Parsed,
    endpoint: u32,
    now: Tick,
) {
    let ep = g.endpoint(endpoint);
    let state = if p.o.proto == IPPROTO_TCP {
        FlowState::new_tcp(p.flags)
    } else {
        FlowState::new_udp()
    };
    w.counters.flows_created += 1;
    if let Some(c) = w.ep.get_mut(endpoint as usize) {
        c.flows_created += 1;
    }
    let entry = FlowEntry {
        backend_addr: ep.addr,
        backend_port: ep.port,
        state,
        flags: 0,
        endpoint,
        generation: g.number as u32,
        created: now,
        last_seen: now,
        client_isn: p.seq,
        client_next: p.seq_end(),
        backend_next: 0,
        client_hop: crate::service::NO_HOP,
    };
    if !admit(&mut w, g, key, hash, entry, now) {
        w.counters.flows_untracked += 1;
    }
}

/// Marks a flow assured (see [`FlowEntry::ASSURED`]), once.
#[inline]
pub(super) fn assure(e: &mut FlowEntry, counters: &mut Counters) {
    if !e.is_assured() {
        e.flags |= FlowEntry::ASSURED;
        counters.flows_assured += 1;
    }
}

/// Puts an entry the table lacks into it and keeps the counters true: the
/// flow's endpoint (when pinned under the current generation) gains an open
/// flow unless the flow starts closed, and a flow evicted to make room is
/// forgotten. False if the table refused it (full of live assured flows).
/// Shared by new flows and restored ones.
#[inline]
pub(super) fn admit(
    w: &mut FlowCtx<'_>,
    g: &Generation,
    key: FlowKey,
    hash: u64,
    e: FlowEntry,
    now: Tick,
) -> bool {
    let Some(ins) = w.flows.insert(key, hash, e, now) else {
        return false;
    };
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
    true
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
pub(super) fn count_open(
    ep: &mut [EndpointCounters],
    at: Option<u32>,
    was: FlowState,
    now: FlowState,
) {
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

/// A client -> VIP packet no backend takes (`reason`: the service has no
/// endpoint for it, or its flow's backend is gone): a TCP client is reset
/// at once and a UDP client told the port is unreachable (ECONNREFUSED on
/// a connected socket), rather than left to time out (S4b). A RST is never
/// answered.
fn refuse(p: &Parsed, tcp: bool, reason: DropReason) -> Verdict {
    let kind = if !tcp {
        AnswerKind::IcmpError {
            msg_type: icmp::DEST_UNREACHABLE,
            code: icmp::PORT_UNREACHABLE,
            src: p.dst,
        }
    } else if p.flags & crate::flow::tcp_flags::RST == 0 {
        AnswerKind::TcpReset
    } else {
        return Verdict::Drop(reason);
    };
    Verdict::Answer(Answer {
        kind,
        o: p.o,
        reason,
    })
}
