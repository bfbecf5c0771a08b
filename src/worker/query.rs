//! What the control thread can ask a running worker, answered between
//! bursts: flow lookups and dumps, per-endpoint counters, flow snapshots. Requests travel
//! over a bounded channel and carry their own reply channel, so a worker
//! never blocks on the control thread and a slow control client never
//! stalls a worker.

use std::net::{Ipv4Addr, SocketAddrV4};

use crossbeam_channel::Sender;

use crate::flow::{FlowEntry, FlowKey, FlowState, SavedFlow, Tick};
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
    /// Every flow, for the snapshot of a planned stop (`flow::save`).
    SaveFlows { reply: Sender<Vec<SavedFlow>> },
    /// Flows of a snapshot that this worker owns, to be pinned to their
    /// saved backends under generation `generation` (or a later one): sent
    /// before that generation is published, so the worker restores them
    /// before it forwards a packet with it (a packet in between would be
    /// placed by Maglev over the new endpoint set, and its flow lost).
    RestoreFlows {
        flows: Vec<SavedFlow>,
        generation: u64,
        reply: Sender<Restored>,
    },
}

/// What a restore did with a snapshot's flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Flows back in a table.
    pub restored: u64,
    /// Of those, flows whose backend the configuration no longer has: their
    /// next packet gets what any such flow gets (a RST, S4b).
    pub backend_gone: u64,
    /// Flows of services the configuration no longer has (not restored).
    pub no_service: u64,
    /// Flows idle past their timeout, or already re-created by traffic
    /// (not restored).
    pub stale: u64,
    /// Flows the table had no room for (full of live assured flows).
    pub table_full: u64,
}

impl Restored {
    pub fn add(&mut self, o: &Restored) {
        self.restored += o.restored;
        self.backend_gone += o.backend_gone;
        self.no_service += o.no_service;
        self.stale += o.stale;
        self.table_full += o.table_full;
    }
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
    /// Protected from eviction (see `FlowEntry::ASSURED`).
    pub assured: bool,
    /// The entry itself, for `explain` to run the data path's decision on.
    #[serde(skip)]
    pub entry: FlowEntry,
}

impl FlowInfo {
    pub fn new(worker: u32, key: &FlowKey, e: &FlowEntry, now: Tick) -> FlowInfo {
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
            assured: e.is_assured(),
            entry: *e,
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
    /// Open flows (not Closed or TimeWait) in the worker's table pinned to
    /// this endpoint now.
    pub active_flows: u64,
    /// Connections recycled (reset at an idle moment, S2).
    pub flows_recycled: u64,
}

impl EndpointCounters {
    pub fn add(&mut self, o: &EndpointCounters) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.flows_created += o.flows_created;
        self.active_flows += o.active_flows;
        self.flows_recycled += o.flows_recycled;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::service::{EndpointSpec, LinkSpec, Protocol, ServiceSpec, Topology};
    use crate::wire::MacAddr;

    fn topo() -> Topology {
        Topology {
            links: vec![LinkSpec {
                name: "eth0".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                addr: Ipv4Addr::new(10, 200, 0, 254),
                prefix_len: 16,
            }],
            ..Default::default()
        }
    }

    fn service(name: &str, port: u16, eps: impl Iterator<Item = (u8, u8)>) -> Arc<ServiceSpec> {
        let mut s = ServiceSpec::new(name, Ipv4Addr::new(198, 18, 0, 1), port, Protocol::Tcp);
        s.table_size = 251;
        s.endpoints = eps
            .map(|(third, last)| EndpointSpec::new(Ipv4Addr::new(10, 200, third, last), 8080))
            .collect();
        Arc::new(s)
    }

    type Identity = (VipKey, u32, u16);

    fn identity(g: &Generation, i: u32) -> Option<Identity> {
        let e = g.endpoint(i);
        (!e.is_hole()).then(|| (g.service(e.service).key, e.addr, e.port))
    }

    /// Counters unique to each endpoint of `g`, as a worker would have.
    fn counters_for(g: &Generation, salt: u64) -> Vec<EndpointCounters> {
        (0..g.endpoint_count() as u32)
            .map(|i| match identity(g, i) {
                Some(_) => EndpointCounters {
                    packets_in: salt * 1_000_000 + u64::from(i) + 1,
                    active_flows: u64::from(i % 3),
                    ..Default::default()
                },
                None => EndpointCounters::default(),
            })
            .collect()
    }

    /// What the remap must produce: every endpoint of `new` gets the
    /// counters its identity had in `old`, all else zero (a full pass, as
    /// before chunk sharing).
    fn by_identity(
        old: &Generation,
        counters: &[EndpointCounters],
        new: &Generation,
    ) -> Vec<EndpointCounters> {
        let was: HashMap<Identity, EndpointCounters> = (0..old.endpoint_count() as u32)
            .filter_map(|i| identity(old, i).map(|id| (id, counters[i as usize])))
            .collect();
        (0..new.endpoint_count() as u32)
            .map(|i| {
                identity(new, i)
                    .and_then(|id| was.get(&id).copied())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn counters_stay_put_for_unchanged_endpoints_and_follow_moved_ones() {
        let specs: Vec<Arc<ServiceSpec>> = (0..8u16)
            .map(|s| service(&format!("s{s}"), 80 + s, (1..=90).map(|i| (s as u8, i))))
            .collect();
        let g1 = Generation::build_shared(1, &topo(), &specs).unwrap();
        let mut counters = counters_for(&g1, 1);
        let before = counters.clone();
        // Grow s3 past its block (all its endpoints move to new indices),
        // change a weight in s6, remove s1, add s9.
        let mut next = specs.clone();
        next[3] = service("s3", 83, (1..=120).map(|i| (3, i)));
        let mut s6 = (*next[6]).clone();
        s6.endpoints[7].weight = 5;
        next[6] = Arc::new(s6);
        next.remove(1);
        next.push(service("s9", 99, (1..=10).map(|i| (9, i))));
        let g2 = Generation::rebuild(&g1, 2, &next).unwrap();
        let want = by_identity(&g1, &before, &g2);
        let mut scratch = Vec::new();
        remap_endpoint_counters(&g1, &g2, &mut counters, &mut scratch);
        assert_eq!(counters, want);
        // s3's endpoints did move, and took their counters along.
        let (s3_old, s3_new) = (
            g1.service(g1.service_by_name("s3").unwrap())
                .endpoints
                .start,
            g2.service(g2.service_by_name("s3").unwrap())
                .endpoints
                .start,
        );
        assert_ne!(s3_old, s3_new);
        assert_eq!(counters[s3_new as usize], before[s3_old as usize]);
        assert_ne!(counters[s3_new as usize], EndpointCounters::default());
        // An endpoint outside every changed range kept its counters exactly.
        let s0 = g2.service_by_name("s0").unwrap();
        let i = g2.service(s0).endpoints.start as usize;
        assert_eq!(counters[i], before[i]);
    }

    #[test]
    fn remap_agrees_with_a_full_identity_pass_through_churn() {
        let mut specs: Vec<Arc<ServiceSpec>> = (0..12u16)
            .map(|s| service(&format!("s{s}"), 80 + s, (1..=40).map(|i| (s as u8, i))))
            .collect();
        let mut g = Generation::build_shared(1, &topo(), &specs).unwrap();
        let mut counters = counters_for(&g, 1);
        let mut scratch = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 2..200u64 {
            let s = rnd(specs.len() as u64) as usize;
            let name = specs[s].name.clone();
            let port = specs[s].port;
            let third = port as u8;
            specs[s] = match rnd(5) {
                // Resize (may relocate the block, or leave holes).
                0 => service(&name, port, (1..=1 + rnd(120) as u8).map(|i| (third, i))),
                // Another VIP for the same endpoints.
                1 => {
                    let mut v = (*specs[s]).clone();
                    v.vip = Ipv4Addr::new(198, 18, 1, rnd(200) as u8);
                    Arc::new(v)
                }
                _ => {
                    let mut v = (*specs[s]).clone();
                    if let Some(e) = v.endpoints.first_mut() {
                        e.weight = 1 + rnd(3) as u32;
                    }
                    Arc::new(v)
                }
            };
            let next = match Generation::rebuild(&g, round, &specs) {
                Ok(n) => n,
                Err(_) => {
                    // A VIP clash: undo and carry on.
                    specs[s] = g
                        .service(g.service_by_name(&name).unwrap())
                        .spec()
                        .unwrap()
                        .clone();
                    continue;
                }
            };
            let want = by_identity(&g, &counters, &next);
            remap_endpoint_counters(&g, &next, &mut counters, &mut scratch);
            assert_eq!(counters, want, "round {round}");
            // New traffic under the new generation, so every round carries
            // fresh values.
            for (c, f) in counters.iter_mut().zip(counters_for(&next, round)) {
                c.bytes_in += f.packets_in;
            }
            g = next;
        }
    }
}
