//! Recycling long-lived connections (S2): a clock hand over the flow table,
//! separate from aging, finds flows of services with a
//! [`RecyclePolicy`] that are old enough and idle in both directions, and
//! resets them both ways, in-window, so the client's pool reconnects (and
//! Maglev places the new connection afresh) while nothing in flight is cut.
//!
//! Why here and this way: only the data path sees every packet of a flow,
//! so only it can tell a quiet moment (no packet either way for
//! `idle_gap`) from a request in flight; Envoy's connection duration limit,
//! which closes at the deadline whatever is in flight, is the failure this
//! avoids. The reset carries the sequence number each receiver expects
//! next (learnt from the backend's segments, see `FlowEntry::client_next`),
//! so both kernels accept it at once (RFC 5961) instead of answering with a
//! challenge ACK. A per-service token bucket (split over the workers) keeps
//! a fleet of clients from reconnecting all at once.

use super::answer::TokenBucket;
use super::forward::count_open;
use super::Worker;
use crate::flow::{FlowEntry, FlowKey, FlowState, Tick};
use crate::nat::answer::{tcp_rst_frame, RST_FRAME_LEN};
use crate::port::{PacketBuf, Port};
use crate::service::{Generation, RecyclePolicy, VipKey};

/// Slots examined per poll that found packets, and per idle poll (an idle
/// worker has time to walk the table faster, so the hand's lap, which
/// bounds how late a flow is recycled, stays short).
pub(super) const SCAN_BUSY: usize = 64;
pub(super) const SCAN_IDLE: usize = 1024;

/// This flow's share of the policy's jitter: a fixed, evenly spread
/// function of the flow, so a fleet's connections opened together do not
/// become eligible together, and `explain` can say when this one will.
pub fn jitter_ms(key: &FlowKey, policy: &RecyclePolicy) -> u32 {
    if policy.jitter_ms == 0 {
        return 0;
    }
    (key.hash_v1(0x0072_6563_7963_6c65) % (u64::from(policy.jitter_ms) + 1)) as u32
}

/// The age at which this flow becomes a candidate.
pub fn eligible_age_ms(key: &FlowKey, policy: &RecyclePolicy) -> u32 {
    policy.max_age_ms.saturating_add(jitter_ms(key, policy))
}

/// Per-service recycling state of one worker, rebuilt at each generation
/// switch.
#[derive(Debug, Default)]
pub(super) struct Recycler {
    /// Next slab position to examine.
    hand: usize,
    /// Rate budget per service index; `None` where recycling is off.
    buckets: Vec<Option<TokenBucket>>,
    /// Whether any service of the generation recycles.
    pub(super) on: bool,
}

impl Recycler {
    /// Takes the policies of `g`, each worker allowed its share of every
    /// service's rate (at least one a second).
    pub(super) fn configure(&mut self, g: &Generation, workers: u32) {
        self.buckets.clear();
        self.buckets.extend(g.services().map(|(_, s)| {
            s.recycle.map(|p| {
                let per_worker = p.max_per_sec.div_ceil(workers.max(1)).max(1);
                TokenBucket::new(per_worker, per_worker)
            })
        }));
        self.on = self.buckets.iter().any(Option::is_some);
    }
}

impl<P: Port> Worker<P> {
    /// Examines up to `budget` flow-table slots for flows to recycle.
    pub(super) fn recycle_scan(&mut self, now: Tick, budget: usize) {
        let cap = self.flows.capacity();
        for _ in 0..budget.min(cap) {
            let id = self.recycler.hand as u32;
            self.recycler.hand += 1;
            if self.recycler.hand >= cap {
                self.recycler.hand = 0;
            }
            let Some((key, e)) = self.flows.get(id) else {
                continue;
            };
            let (key, e) = (*key, *e);
            if let Some((svc, ep)) = self.candidate(&key, &e, now) {
                self.recycle(id, svc, ep, &key, &e, now);
            }
        }
    }

    /// The flow's service and endpoint if it is due for recycling now.
    fn candidate(&self, key: &FlowKey, e: &FlowEntry, now: Tick) -> Option<(u32, u32)> {
        // Only live, assured TCP flows: a handshake that never completed or
        // a pickup never answered has no sequence numbers to reset with.
        if e.state != FlowState::Established || !e.is_assured() {
            return None;
        }
        let g = &*self.gen;
        let svc = g.service_for(&VipKey {
            addr: key.vip_addr,
            port: key.vip_port,
            proto: key.proto,
        })?;
        let policy = g.service(svc).recycle?;
        if (now.wrapping_sub(e.last_seen) as i32) < policy.idle_gap_ms as i32 {
            return None;
        }
        if (now.wrapping_sub(e.created) as i32) < eligible_age_ms(key, &policy) as i32 {
            return None;
        }
        let ep = if e.generation == g.number as u32 {
            e.endpoint
        } else {
            g.find_endpoint(svc, e.backend_addr, e.backend_port)?
        };
        if policy.skewed_only && !self.overloaded(g, svc, ep) {
            return None;
        }
        Some((svc, ep))
    }

    /// Whether endpoint `ep` holds more than its weight's share of service
    /// `svc`'s open flows on this worker (flows are spread over workers by
    /// client, so each worker's view is a sample of the whole).
    fn overloaded(&self, g: &Generation, svc: u32, ep: u32) -> bool {
        let s = g.service(svc);
        let (mut flows, mut weights) = (0u64, 0u64);
        for i in s.endpoints.clone() {
            let e = g.endpoint(i);
            if e.is_hole() || !e.state.carries_flows() {
                continue;
            }
            flows += self.ep.get(i as usize).map_or(0, |c| c.active_flows);
            weights += u64::from(e.weight);
        }
        let mine = self.ep.get(ep as usize).map_or(0, |c| c.active_flows);
        let w = u64::from(g.endpoint(ep).weight);
        // mine / flows > w / weights, without division.
        weights > 0 && mine * weights > w * flows
    }

    /// Resets flow `id` both ways and marks it closed, if the service's
    /// rate allows and both RSTs can be built and routed now.
    fn recycle(&mut self, id: u32, svc: u32, ep_idx: u32, key: &FlowKey, e: &FlowEntry, now: Tick) {
        let g = &*self.gen;
        let ep = *g.endpoint(ep_idx);
        let Some((bport, bmac)) = ep.egress else {
            return;
        };
        let Ok((cport, cmac)) = g.route(key.client_addr) else {
            return;
        };
        let (Some(blink), Some(clink)) = (g.link(bport), g.link(cport)) else {
            return;
        };
        if usize::from(bport) >= self.tx.len() || usize::from(cport) >= self.tx.len() {
            return;
        }
        let allowed = match self.recycler.buckets.get_mut(svc as usize) {
            Some(Some(b)) => b.take(now),
            _ => false,
        };
        if !allowed {
            return;
        }
        // To the client, as from the VIP: the client's next expected byte.
        let to_client = (
            cport,
            clink.mac,
            cmac,
            key.vip_addr,
            key.vip_port,
            key.client_addr,
            key.client_port,
            e.backend_next,
        );
        // To the backend, as from the client: what the backend acknowledged.
        let to_backend = (
            bport,
            blink.mac,
            bmac,
            key.client_addr,
            key.client_port,
            ep.addr,
            ep.port,
            e.client_next,
        );
        let mut bufs = Vec::with_capacity(2);
        for (port, smac, dmac, src, sport, dst, dport, seq) in [to_client, to_backend] {
            let p = &mut self.ports[usize::from(port)];
            let Some(mut b) = p.alloc() else {
                self.counters.drop(super::DropReason::NoBuffer);
                break;
            };
            let built = b
                .extend(RST_FRAME_LEN)
                .and_then(|f| tcp_rst_frame(f, smac, dmac, src, sport, dst, dport, seq));
            if built.is_none() {
                p.free(b);
                self.counters.drop(super::DropReason::NoBuffer);
                break;
            }
            bufs.push((port, b));
        }
        if bufs.len() != 2 {
            for (port, b) in bufs {
                self.ports[usize::from(port)].free(b);
            }
            return;
        }
        for (port, b) in bufs {
            self.tx[usize::from(port)].push(b);
        }
        let entry = self.flows.entry_mut(id);
        let was = entry.state;
        entry.state = FlowState::Closed;
        entry.last_seen = now;
        count_open(&mut self.ep, Some(ep_idx), was, FlowState::Closed);
        self.counters.flows_recycled += 1;
        self.counters.answered += 2;
        if let Some(c) = self.ep.get_mut(ep_idx as usize) {
            c.flows_recycled += 1;
        }
    }
}
