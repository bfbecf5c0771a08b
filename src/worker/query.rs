//! What the control thread can ask a running worker, answered between
//! bursts: flow lookups and dumps, per-endpoint counters. Requests travel
//! over a bounded channel and carry their own reply channel, so a worker
//! never blocks on the control thread and a slow control client never
//! stalls a worker.

use std::net::{Ipv4Addr, SocketAddrV4};

use crossbeam_channel::Sender;

use crate::flow::{FlowEntry, FlowKey, FlowState, Tick};
use crate::service::{Generation, VipKey};

/// A request to one worker.
#[derive(Debug)]
pub enum WorkerRequest {
    /// The flow with this key, if this worker has it.
    LookupFlow {
        key: FlowKey,
        reply: Sender<Option<FlowInfo>>,
    },
    /// Up to `limit` flows.
    DumpFlows {
        limit: usize,
        reply: Sender<Vec<FlowInfo>>,
    },
    /// Counters of every endpoint of the generation the worker runs.
    EndpointStats { reply: Sender<EndpointReport> },
}

/// One flow, as reported to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlowInfo {
    pub worker: u32,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub protocol: u8,
    pub backend: SocketAddrV4,
    pub state: FlowState,
    /// Milliseconds since the flow was created.
    pub age_ms: u32,
    /// Milliseconds since its last packet.
    pub idle_ms: u32,
    /// Generation the flow's backend was last resolved in.
    pub generation: u32,
}

impl FlowInfo {
    pub(crate) fn new(worker: u32, key: &FlowKey, e: &FlowEntry, now: Tick) -> FlowInfo {
        FlowInfo {
            worker,
            client: SocketAddrV4::new(Ipv4Addr::from(key.client_addr), key.client_port),
            vip: SocketAddrV4::new(Ipv4Addr::from(key.vip_addr), key.vip_port),
            protocol: key.proto,
            backend: SocketAddrV4::new(Ipv4Addr::from(e.backend_addr), e.backend_port),
            state: e.state,
            age_ms: now.wrapping_sub(e.created),
            idle_ms: now.wrapping_sub(e.last_seen),
            generation: e.generation,
        }
    }
}

/// Per-endpoint counters one worker keeps, indexed like the generation's
/// endpoints. "In" is client -> backend, "out" backend -> client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndpointCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub flows_created: u64,
    /// Flows in the worker's table pinned to this endpoint now.
    pub active_flows: u64,
}

impl EndpointCounters {
    pub fn add(&mut self, o: &EndpointCounters) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.flows_created += o.flows_created;
        self.active_flows += o.active_flows;
    }
}

/// An endpoint's counters with its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStat {
    pub service: VipKey,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub counters: EndpointCounters,
}

/// One worker's answer to [`WorkerRequest::EndpointStats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointReport {
    pub worker: u32,
    pub generation: u64,
    pub endpoints: Vec<EndpointStat>,
}

impl EndpointReport {
    pub(crate) fn new(
        worker: u32,
        g: &Generation,
        counters: &[EndpointCounters],
    ) -> EndpointReport {
        EndpointReport {
            worker,
            generation: g.number,
            endpoints: g
                .endpoints()
                .zip(counters)
                // Port 0 marks a hole in the endpoint layout, not an endpoint.
                .filter(|(e, _)| e.port != 0)
                .map(|(e, c)| EndpointStat {
                    service: g.service(e.service).key,
                    addr: Ipv4Addr::from(e.addr),
                    port: e.port,
                    counters: *c,
                })
                .collect(),
        }
    }
}

/// Carries per-endpoint counters (`counters`, indexed like `old_gen`'s
/// endpoints) over to `new_gen`'s indices, in place, by endpoint identity
/// (service key, address, port). Counters of endpoints that left their
/// service are dropped with them.
///
/// Only the index ranges `new_gen` did not share with `old_gen` are looked
/// at ([`Generation::changed_endpoints`]): elsewhere the same endpoint sits
/// at the same index, so its counters stay where they are. A one-service
/// change costs the chunks that service wrote, not every endpoint.
/// `scratch` holds the counters of the changed ranges meanwhile (kept by
/// the caller so a switch allocates nothing once warmed up).
pub(crate) fn remap_endpoint_counters(
    old_gen: &Generation,
    new_gen: &Generation,
    counters: &mut Vec<EndpointCounters>,
    scratch: &mut Vec<EndpointCounters>,
) {
    let old_len = counters.len().min(old_gen.endpoint_count());
    scratch.clear();
    for r in new_gen.changed_endpoints(old_gen) {
        let r = r.start as usize..(r.end as usize).min(old_len);
        for c in counters.get_mut(r).into_iter().flatten() {
            scratch.push(std::mem::take(c));
        }
    }
    counters.resize(new_gen.endpoint_count(), EndpointCounters::default());
    // Same ranges, same order: `taken` walks `scratch` in step. Two
    // endpoints never land on one index (identities are unique in a
    // generation, and an index outside the ranges keeps its own).
    let mut taken = scratch.iter();
    for r in new_gen.changed_endpoints(old_gen) {
        for i in r.start..(r.end as usize).min(old_len) as u32 {
            let Some(c) = taken.next() else { return };
            if *c == EndpointCounters::default() {
                continue; // nothing to carry
            }
            let e = old_gen.endpoint(i);
            if e.is_hole() {
                continue;
            }
            let key = old_gen.service(e.service).key;
            let same_here = new_gen.endpoint_count() > i as usize && {
                let n = new_gen.endpoint(i);
                n.addr == e.addr && n.port == e.port && new_gen.service(n.service).key == key
            };
            let to = if same_here {
                Some(i)
            } else {
                new_gen
                    .service_for(&key)
                    .and_then(|svc| new_gen.find_endpoint(svc, e.addr, e.port))
            };
            if let Some(slot) = to.and_then(|j| counters.get_mut(j as usize)) {
                *slot = *c;
            }
        }
    }
}

/// The endpoint index, in generation `g`, of the backend a flow entry is
/// pinned to (the entry's cached index when it was resolved in `g`).
#[inline]
pub(crate) fn endpoint_of(g: &Generation, key: &FlowKey, e: &FlowEntry) -> Option<u32> {
    if e.generation == g.number as u32 {
        return Some(e.endpoint);
    }
    let svc = g.service_for(&VipKey {
        addr: key.vip_addr,
        port: key.vip_port,
        proto: key.proto,
    })?;
    g.find_endpoint(svc, e.backend_addr, e.backend_port)
}
