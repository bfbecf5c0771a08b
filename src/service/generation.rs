//! The immutable snapshot workers run: VIP map, Maglev tables, endpoint
//! states, routes and neighbors, compiled from specs by the control thread.
//!
//! Building is incremental: [`Generation::rebuild`] starts from the previous
//! generation and recompiles only the services whose spec changed, so a
//! change to one service of a thousand costs about that service (its Maglev
//! tables) plus a copy of the flat arrays, not a thousand Maglev builds.
//! To make that possible without touching what the data path looks up:
//! - compiled services are shared between generations (`Arc<ServiceRt>`);
//! - every service owns a *block* of global endpoint indices that stays put
//!   while the service exists and fits in it, so the global indices that
//!   flow entries, per-endpoint counters and the backend map hold do not
//!   shift when another service changes. Unused indices of a block are
//!   *holes*: endpoints with port 0 and state `Removed`, which no lookup
//!   returns (no real endpoint has port 0);
//! - service indices are stable too: a removed service leaves a vacant slot
//!   (matching no VIP) that a later service may take.
//!
//! When holes outnumber live endpoints the next rebuild compacts everything
//! (a full build): correctness never depends on indices staying put, only
//! speed does (flow entries re-resolve by identity on a generation change,
//! per-endpoint counters are carried by identity).

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use super::route::{Hop, RouteTable, TopologyError};
use super::{EndpointSpec, EndpointState, ServiceSpec, Topology};
use crate::hash::{FastBuildHasher, HashVersion};
use crate::maglev::{MaglevBackend, MaglevError, MaglevTable};
use crate::wire::MacAddr;

/// What a service is matched on: destination address, port and protocol
/// (also used for backend identities: source address, port, protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VipKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
}

impl VipKey {
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> VipKey {
        VipKey {
            addr: u32::from(addr),
            port,
            proto,
        }
    }

    /// The key as one word (what the maps hash; a worker's one-entry VIP
    /// memo compares it).
    #[inline]
    pub(crate) fn packed(&self) -> u64 {
        (u64::from(self.addr) << 32) | (u64::from(self.port) << 8) | u64::from(self.proto)
    }
}

impl Hash for VipKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.packed());
    }
}

/// An endpoint of one service, as the data path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointRt {
    pub addr: u32,
    pub port: u16,
    pub weight: u32,
    pub state: EndpointState,
    /// Index of the service it belongs to.
    pub service: u32,
    /// Egress port and destination MAC, resolved when the generation was
    /// built; `None` while the next hop is unresolved.
    pub egress: Option<(u16, MacAddr)>,
}

impl EndpointRt {
    /// An unused index of service `service`'s block.
    fn hole(service: u32) -> EndpointRt {
        EndpointRt {
            addr: 0,
            port: 0,
            weight: 0,
            state: EndpointState::Removed,
            service,
            egress: None,
        }
    }

    /// Whether this is an unused index (see the module comment).
    pub fn is_hole(&self) -> bool {
        self.port == 0
    }
}

/// A (service, endpoint) pair a backend address serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendRef {
    pub service: u32,
    pub endpoint: u32,
}

/// Backend map value: nearly every backend address serves one service, so
/// that case is stored inline (and the map stays `Copy`-cheap to clone);
/// the rare shared backend is listed in a side map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendSlot {
    One(BackendRef),
    Many,
}

/// A service, compiled. Shared between generations while its spec does not
/// change; every endpoint index in it is global.
#[derive(Debug)]
pub struct ServiceRt {
    pub name: String,
    pub key: VipKey,
    pub seed: u64,
    pub hash: HashVersion,
    /// Maglev over endpoints that take new flows (active, weight > 0).
    table: MaglevTable,
    /// Maglev index -> global endpoint index, for `table`.
    table_endpoints: Box<[u32]>,
    /// Maglev over endpoints that still carry flows (active and draining),
    /// for mid-flow packets that miss the flow table: a connection to a
    /// draining backend picked up after a restart or eviction keeps going to
    /// it. Only built while some endpoint drains; otherwise `table` serves.
    carry_table: Option<(MaglevTable, Box<[u32]>)>,
    /// (address << 16 | port) -> global endpoint index.
    ids: HashMap<u64, u32, FastBuildHasher>,
    /// Global indices of this service's endpoints (sorted by identity).
    pub endpoints: Range<u32>,
    /// The block reserved for it: `endpoints` plus holes to grow into.
    block: Range<u32>,
    /// The spec it was compiled from (to tell whether a rebuild may reuse it).
    spec: Option<Arc<ServiceSpec>>,
}

#[inline]
fn endpoint_id(addr: u32, port: u16) -> u64 {
    (u64::from(addr) << 16) | u64::from(port)
}

impl ServiceRt {
    /// A slot no service occupies (after a removal); keeps its old block so
    /// the holes there still name a valid service index.
    fn vacant(block: Range<u32>) -> ServiceRt {
        ServiceRt {
            name: String::new(),
            key: VipKey {
                addr: 0,
                port: 0,
                proto: 0,
            },
            seed: 0,
            hash: HashVersion::V1,
            table: empty_table(),
            table_endpoints: Box::new([]),
            carry_table: None,
            ids: HashMap::default(),
            endpoints: block.start..block.start,
            block,
            spec: None,
        }
    }

    /// Whether the slot is vacant.
    pub fn is_vacant(&self) -> bool {
        self.spec.is_none()
    }

    /// The new-flow Maglev table.
    pub fn table(&self) -> &MaglevTable {
        &self.table
    }

    /// The spec this service was compiled from (`None` for a vacant slot).
    pub fn spec(&self) -> Option<&Arc<ServiceSpec>> {
        self.spec.as_ref()
    }

    /// The endpoint index a Maglev index of the new-flow table stands for.
    pub fn table_endpoint(&self, maglev_index: u16) -> Option<u32> {
        self.table_endpoints.get(usize::from(maglev_index)).copied()
    }
}

fn empty_table() -> MaglevTable {
    // Smallest valid size with no backend: every lookup says "none".
    MaglevTable::build(&[], crate::maglev::MIN_TABLE_SIZE, 0)
        .unwrap_or_else(|_| unreachable_empty_table())
}

#[cold]
fn unreachable_empty_table() -> MaglevTable {
    // MIN_TABLE_SIZE is a valid prime and an empty backend list is valid:
    // `build` cannot fail on them. Should the Maglev rules change, fail at
    // the first build in tests rather than silently.
    panic!("an empty Maglev table of the minimum size must build")
}

/// One interface, as the data path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkRt {
    pub mac: MacAddr,
    pub addr: u32,
}

/// Why a set of specs could not be compiled. Nothing is published then: the
/// previous generation keeps running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerationError {
    #[error("service {name:?}: {vip}:{port}/{proto} is already used by service {other:?}")]
    DuplicateService {
        name: String,
        other: String,
        vip: Ipv4Addr,
        port: u16,
        proto: super::Protocol,
    },
    #[error("service {name:?} is listed twice")]
    DuplicateName { name: String },
    #[error("service {service:?}: endpoint {addr}:{port} is listed twice")]
    DuplicateEndpoint {
        service: String,
        addr: Ipv4Addr,
        port: u16,
    },
    #[error("service {service:?}: {source}")]
    Maglev {
        service: String,
        source: MaglevError,
    },
    #[error("service {service:?}: port 0 is not a valid {what} port")]
    ZeroPort { service: String, what: &'static str },
    #[error("topology: {0}")]
    Topology(#[from] TopologyError),
    #[error("more than {max} endpoints in all services", max = u32::MAX)]
    TooManyEndpoints,
}

/// An immutable snapshot of everything workers look up, with its number.
/// Published as an `Arc`: workers switch between bursts and acknowledge the
/// number; the old snapshot is freed when its last holder lets go.
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    /// Indexed by service index; vacant slots match nothing.
    services: Vec<Arc<ServiceRt>>,
    /// Indexed by global endpoint index; holes included.
    endpoints: Vec<EndpointRt>,
    vips: HashMap<VipKey, u32, FastBuildHasher>,
    vip_addrs: HashSet<u32, FastBuildHasher>,
    backends: HashMap<VipKey, BackendSlot, FastBuildHasher>,
    shared_backends: HashMap<VipKey, Box<[BackendRef]>, FastBuildHasher>,
    links: Vec<LinkRt>,
    routes: RouteTable,
}

/// The data path's view of the interfaces, and the route table over them.
fn compile_links(topo: &Topology) -> Result<(Vec<LinkRt>, RouteTable), GenerationError> {
    let routes = RouteTable::compile(topo)?;
    let links = topo
        .links
        .iter()
        .map(|l| LinkRt {
            mac: l.mac,
            addr: u32::from(l.addr),
        })
        .collect();
    Ok((links, routes))
}

/// Rebuilds compact everything once holes outnumber live endpoints by this
/// much (and by the live count).
const COMPACT_SLACK: usize = 4096;

impl Generation {
    /// A generation with no services and no links: everything is dropped.
    pub fn empty() -> Generation {
        Generation {
            number: 0,
            services: Vec::new(),
            endpoints: Vec::new(),
            vips: HashMap::default(),
            vip_addrs: HashSet::default(),
            backends: HashMap::default(),
            shared_backends: HashMap::default(),
            links: Vec::new(),
            routes: RouteTable::default(),
        }
    }

    /// Compiles specs and topology into generation `number`.
    pub fn build(
        number: u64,
        topo: &Topology,
        specs: &[ServiceSpec],
    ) -> Result<Generation, GenerationError> {
        let shared: Vec<Arc<ServiceSpec>> = specs.iter().cloned().map(Arc::new).collect();
        Generation::build_shared(number, topo, &shared)
    }

    /// [`Generation::build`] over shared specs (what the control store keeps).
    pub fn build_shared(
        number: u64,
        topo: &Topology,
        specs: &[Arc<ServiceSpec>],
    ) -> Result<Generation, GenerationError> {
        let (links, routes) = compile_links(topo)?;
        let mut g = Generation {
            number,
            links,
            routes,
            ..Generation::empty()
        };
        check_unique(specs)?;
        for spec in specs {
            let slot = g.services.len() as u32;
            g.services.push(Arc::new(ServiceRt::vacant(0..0)));
            g.place(slot, spec, false)?;
        }
        g.index_vips();
        Ok(g)
    }

    /// Generation `number` for `specs` under the same topology as `prev`,
    /// reusing every compiled service whose spec is unchanged (the same `Arc`
    /// or an equal value). Services are matched by name.
    pub fn rebuild(
        prev: &Generation,
        number: u64,
        specs: &[Arc<ServiceSpec>],
    ) -> Result<Generation, GenerationError> {
        check_unique(specs)?;
        let mut g = Generation {
            number,
            services: prev.services.clone(),
            endpoints: prev.endpoints.clone(),
            vips: HashMap::default(),
            vip_addrs: HashSet::default(),
            backends: prev.backends.clone(),
            shared_backends: prev.shared_backends.clone(),
            links: prev.links.clone(),
            routes: prev.routes.clone(),
        };
        let slots: std::collections::HashMap<&str, u32> = prev
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_vacant())
            .map(|(i, s)| (s.name.as_str(), i as u32))
            .collect();
        let mut kept = vec![false; prev.services.len()];
        let mut changed: Vec<(Option<u32>, &Arc<ServiceSpec>)> = Vec::new();
        for spec in specs {
            match slots.get(spec.name.as_str()) {
                Some(&slot) => {
                    kept[slot as usize] = true;
                    let same = prev.services[slot as usize]
                        .spec
                        .as_ref()
                        .is_some_and(|old| Arc::ptr_eq(old, spec) || **old == **spec);
                    if !same {
                        changed.push((Some(slot), spec));
                    }
                }
                None => changed.push((None, spec)),
            }
        }
        for (slot, kept) in kept.iter().enumerate() {
            if !kept && !g.services[slot].is_vacant() {
                g.vacate(slot as u32);
            }
        }
        for (slot, spec) in changed {
            let slot = match slot {
                Some(s) => {
                    g.vacate(s);
                    s
                }
                None => match g.services.iter().position(|s| s.is_vacant()) {
                    Some(s) => s as u32,
                    None => {
                        g.services.push(Arc::new(ServiceRt::vacant(0..0)));
                        (g.services.len() - 1) as u32
                    }
                },
            };
            g.place(slot, spec, true)?;
        }
        let live: usize = g.services.iter().map(|s| s.endpoints.len()).sum();
        if g.endpoints.len() - live > live + COMPACT_SLACK {
            return g.compacted(specs);
        }
        g.index_vips();
        Ok(g)
    }

    /// The same services, repacked from scratch (no holes, no vacant slots).
    fn compacted(self, specs: &[Arc<ServiceSpec>]) -> Result<Generation, GenerationError> {
        let mut g = Generation {
            number: self.number,
            links: self.links,
            routes: self.routes,
            ..Generation::empty()
        };
        for spec in specs {
            let slot = g.services.len() as u32;
            g.services.push(Arc::new(ServiceRt::vacant(0..0)));
            g.place(slot, spec, false)?;
        }
        g.index_vips();
        Ok(g)
    }

    /// Empties slot `slot`: its endpoints become holes, its backend entries go.
    fn vacate(&mut self, slot: u32) {
        let old = self.services[slot as usize].clone();
        if old.is_vacant() {
            return;
        }
        let proto = old.key.proto;
        for idx in old.endpoints.clone() {
            let e = self.endpoints[idx as usize];
            let key = VipKey {
                addr: e.addr,
                port: e.port,
                proto,
            };
            self.unlink_backend(key, slot);
            self.endpoints[idx as usize] = EndpointRt::hole(slot);
        }
        self.services[slot as usize] = Arc::new(ServiceRt::vacant(old.block.clone()));
    }

    fn unlink_backend(&mut self, key: VipKey, slot: u32) {
        match self.backends.get(&key).copied() {
            Some(BackendSlot::One(r)) if r.service == slot => {
                self.backends.remove(&key);
            }
            Some(BackendSlot::Many) => {
                let Some(list) = self.shared_backends.get(&key) else {
                    return;
                };
                let rest: Vec<BackendRef> =
                    list.iter().copied().filter(|r| r.service != slot).collect();
                if let [one] = rest[..] {
                    self.shared_backends.remove(&key);
                    self.backends.insert(key, BackendSlot::One(one));
                } else {
                    self.shared_backends.insert(key, rest.into_boxed_slice());
                }
            }
            _ => {}
        }
    }

    fn link_backend(&mut self, key: VipKey, r: BackendRef) {
        match self.backends.get(&key).copied() {
            None => {
                self.backends.insert(key, BackendSlot::One(r));
            }
            Some(BackendSlot::One(first)) => {
                self.backends.insert(key, BackendSlot::Many);
                self.shared_backends.insert(key, Box::new([first, r]));
            }
            Some(BackendSlot::Many) => {
                let mut v = self
                    .shared_backends
                    .get(&key)
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                v.push(r);
                self.shared_backends.insert(key, v.into_boxed_slice());
            }
        }
    }

    /// Compiles `spec` into the vacant slot `slot`, in the slot's old block
    /// if it fits, else in a new block at the end (with room to grow when
    /// `slack`).
    fn place(
        &mut self,
        slot: u32,
        spec: &Arc<ServiceSpec>,
        slack: bool,
    ) -> Result<(), GenerationError> {
        if spec.port == 0 {
            return Err(GenerationError::ZeroPort {
                service: spec.name.clone(),
                what: "service",
            });
        }
        let proto = spec.protocol.number();
        let mut eps: Vec<EndpointSpec> = spec.endpoints.clone();
        // Canonical order: Maglev tables come out bit-identical whatever order
        // the operator (or the controller) listed the endpoints in.
        eps.sort_by_key(|e| (u32::from(e.addr), e.port));
        for w in eps.windows(2) {
            if (w[0].addr, w[0].port) == (w[1].addr, w[1].port) {
                return Err(GenerationError::DuplicateEndpoint {
                    service: spec.name.clone(),
                    addr: w[0].addr,
                    port: w[0].port,
                });
            }
        }
        if eps.iter().any(|e| e.port == 0) {
            return Err(GenerationError::ZeroPort {
                service: spec.name.clone(),
                what: "endpoint",
            });
        }
        let n = eps.len();
        let old_block = self.services[slot as usize].block.clone();
        let block = if old_block.len() >= n {
            old_block
        } else {
            let cap = if slack { n + n / 4 + 4 } else { n };
            let start = u32::try_from(self.endpoints.len())
                .map_err(|_| GenerationError::TooManyEndpoints)?;
            let end = u32::try_from(self.endpoints.len() + cap)
                .map_err(|_| GenerationError::TooManyEndpoints)?;
            self.endpoints.resize(end as usize, EndpointRt::hole(slot));
            start..end
        };
        let first = block.start;
        let seed = spec.effective_seed();
        let build = |take: &dyn Fn(EndpointState) -> bool| {
            let mut backends = Vec::new();
            let mut map = Vec::new();
            for (i, e) in eps.iter().enumerate() {
                if take(e.state) && e.weight > 0 {
                    backends.push(MaglevBackend {
                        addr: std::net::IpAddr::V4(e.addr),
                        port: e.port,
                        weight: e.weight,
                    });
                    map.push(first + i as u32);
                }
            }
            MaglevTable::build(&backends, spec.table_size, seed)
                .map(|t| (t, map.into_boxed_slice()))
                .map_err(|source| GenerationError::Maglev {
                    service: spec.name.clone(),
                    source,
                })
        };
        let (table, table_endpoints) = build(&|s| s == EndpointState::Active)?;
        let carry_table = if eps
            .iter()
            .any(|e| e.state == EndpointState::Draining && e.weight > 0)
        {
            Some(build(&EndpointState::carries_flows)?)
        } else {
            None
        };
        let mut ids = HashMap::with_capacity_and_hasher(n, FastBuildHasher);
        for (i, e) in eps.iter().enumerate() {
            let idx = first + i as u32;
            let addr = u32::from(e.addr);
            self.endpoints[idx as usize] = EndpointRt {
                addr,
                port: e.port,
                weight: e.weight,
                state: e.state,
                service: slot,
                egress: self.routes.resolve(addr).ok(),
            };
            ids.insert(endpoint_id(addr, e.port), idx);
            self.link_backend(
                VipKey {
                    addr,
                    port: e.port,
                    proto,
                },
                BackendRef {
                    service: slot,
                    endpoint: idx,
                },
            );
        }
        for idx in first + n as u32..block.end {
            self.endpoints[idx as usize] = EndpointRt::hole(slot);
        }
        self.services[slot as usize] = Arc::new(ServiceRt {
            name: spec.name.clone(),
            key: spec.key(),
            seed,
            hash: spec.hash,
            table,
            table_endpoints,
            carry_table,
            ids,
            endpoints: first..first + n as u32,
            block,
            spec: Some(spec.clone()),
        });
        Ok(())
    }

    /// Rebuilds the VIP maps (one entry per service: cheap at any scale).
    fn index_vips(&mut self) {
        self.vips.clear();
        self.vip_addrs.clear();
        for (i, s) in self.services.iter().enumerate() {
            if !s.is_vacant() {
                self.vips.insert(s.key, i as u32);
                self.vip_addrs.insert(s.key.addr);
            }
        }
    }

    /// Generation `number`: `prev` with a new topology (links, routes,
    /// neighbors), every endpoint's egress resolved again. Services and
    /// their Maglev tables are shared, not rebuilt: a neighbor learnt by ARP
    /// costs a pass over the endpoints, not a rebuild.
    pub fn with_topology(
        prev: &Generation,
        number: u64,
        topo: &Topology,
    ) -> Result<Generation, GenerationError> {
        let (links, routes) = compile_links(topo)?;
        let mut endpoints = prev.endpoints.clone();
        for e in endpoints.iter_mut().filter(|e| e.port != 0) {
            e.egress = routes.resolve(e.addr).ok();
        }
        Ok(Generation {
            number,
            services: prev.services.clone(),
            endpoints,
            vips: prev.vips.clone(),
            vip_addrs: prev.vip_addrs.clone(),
            backends: prev.backends.clone(),
            shared_backends: prev.shared_backends.clone(),
            links,
            routes,
        })
    }

    /// The next hop towards `addr` (itself when on a connected subnet).
    pub fn next_hop(&self, addr: u32) -> Option<Hop> {
        self.routes.lookup(addr)
    }

    /// The service a client->VIP packet is for.
    #[inline]
    pub fn service_for(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).copied()
    }

    #[inline]
    pub fn service(&self, idx: u32) -> &ServiceRt {
        &self.services[idx as usize]
    }

    /// Occupied service slots with their indices.
    pub fn services(&self) -> impl Iterator<Item = (u32, &ServiceRt)> {
        self.services
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_vacant())
            .map(|(i, s)| (i as u32, &**s))
    }

    /// The index of the service named `name` (control path: a linear scan).
    pub fn service_by_name(&self, name: &str) -> Option<u32> {
        self.services()
            .find(|(_, s)| s.name == name)
            .map(|(i, _)| i)
    }

    #[inline]
    pub fn endpoint(&self, idx: u32) -> &EndpointRt {
        &self.endpoints[idx as usize]
    }

    /// Every endpoint index, holes included (see [`EndpointRt::is_hole`]).
    pub fn endpoints(&self) -> &[EndpointRt] {
        &self.endpoints
    }

    /// The (service, endpoint) pairs served by a backend address and port:
    /// how a backend->client reply finds its service.
    #[inline]
    pub fn backend_refs(&self, key: &VipKey) -> &[BackendRef] {
        match self.backends.get(key) {
            Some(BackendSlot::One(r)) => std::slice::from_ref(r),
            Some(BackendSlot::Many) => self.shared_backends.get(key).map_or(&[], |b| &b[..]),
            None => &[],
        }
    }

    /// An endpoint of service `svc` by identity: how a flow entry made under
    /// an older generation finds its backend in this one.
    #[inline]
    pub fn find_endpoint(&self, svc: u32, addr: u32, port: u16) -> Option<u32> {
        self.services
            .get(svc as usize)?
            .ids
            .get(&endpoint_id(addr, port))
            .copied()
    }

    /// Whether `addr` is the address of some VIP (ICMP and ARP handling).
    #[inline]
    pub fn is_vip_addr(&self, addr: u32) -> bool {
        self.vip_addrs.contains(&addr)
    }

    /// Backend for a new flow of service `svc` with Maglev hash `hash`.
    #[inline]
    pub fn choose_new(&self, svc: u32, hash: u64) -> Option<u32> {
        let s = &self.services[svc as usize];
        s.table
            .lookup(hash)
            .map(|i| s.table_endpoints[usize::from(i)])
    }

    /// Backend for a mid-flow packet of service `svc` that missed the flow
    /// table: the same choice every instance with this endpoint set makes,
    /// draining endpoints included (S4a).
    #[inline]
    pub fn choose_existing(&self, svc: u32, hash: u64) -> Option<u32> {
        let s = &self.services[svc as usize];
        match &s.carry_table {
            Some((t, map)) => t.lookup(hash).map(|i| map[usize::from(i)]),
            None => self.choose_new(svc, hash),
        }
    }

    /// Digest of service `svc`'s new-flow Maglev table (slot -> endpoint
    /// identity), equal on every instance with the same endpoint set.
    pub fn digest(&self, svc: u32) -> u64 {
        let s = &self.services[svc as usize];
        let backends: Vec<MaglevBackend> = s
            .table_endpoints
            .iter()
            .map(|&i| {
                let e = self.endpoints[i as usize];
                MaglevBackend {
                    addr: std::net::IpAddr::V4(Ipv4Addr::from(e.addr)),
                    port: e.port,
                    weight: e.weight,
                }
            })
            .collect();
        s.table.digest(&backends)
    }

    /// Global endpoint indices in use and in all (holes included): how
    /// fragmented incremental rebuilds left the index space.
    pub fn endpoint_occupancy(&self) -> (usize, usize) {
        let live = self.services.iter().map(|s| s.endpoints.len()).sum();
        (live, self.endpoints.len())
    }

    /// Port and destination MAC for a packet to `dst`.
    #[inline]
    pub fn route(&self, dst: u32) -> Result<(u16, MacAddr), Option<Hop>> {
        self.routes.resolve(dst)
    }

    /// Interface `port`'s MAC and address.
    #[inline]
    pub fn link(&self, port: u16) -> Option<&LinkRt> {
        self.links.get(usize::from(port))
    }

    pub fn links(&self) -> &[LinkRt] {
        &self.links
    }
}

/// Names and service keys must be unique across services.
fn check_unique(specs: &[Arc<ServiceSpec>]) -> Result<(), GenerationError> {
    let mut keys: HashMap<VipKey, &str, FastBuildHasher> = HashMap::default();
    let mut names = std::collections::HashSet::new();
    for spec in specs {
        if !names.insert(spec.name.as_str()) {
            return Err(GenerationError::DuplicateName {
                name: spec.name.clone(),
            });
        }
        if let Some(other) = keys.insert(spec.key(), &spec.name) {
            return Err(GenerationError::DuplicateService {
                name: spec.name.clone(),
                other: other.to_string(),
                vip: spec.vip,
                port: spec.port,
                proto: spec.protocol,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{EndpointSpec, LinkSpec, Protocol};

    fn topo() -> Topology {
        Topology {
            links: vec![LinkSpec {
                name: "eth0".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                addr: Ipv4Addr::new(10, 200, 2, 254),
                prefix_len: 24,
            }],
            neighbors: vec![(Ipv4Addr::new(10, 200, 2, 11), MacAddr([2, 0, 0, 0, 0, 11]))],
            ..Default::default()
        }
    }

    fn svc(eps: &[EndpointSpec]) -> ServiceSpec {
        let mut s = ServiceSpec::new("web", Ipv4Addr::new(198, 18, 0, 100), 80, Protocol::Tcp);
        s.table_size = 251;
        s.endpoints = eps.to_vec();
        s
    }

    fn ep(last: u8) -> EndpointSpec {
        EndpointSpec::new(Ipv4Addr::new(10, 200, 2, last), 8080)
    }

    #[test]
    fn compiles_lookups_for_both_directions() {
        let g = Generation::build(1, &topo(), &[svc(&[ep(12), ep(11)])]).unwrap();
        let key = VipKey::new(Ipv4Addr::new(198, 18, 0, 100), 80, 6);
        assert_eq!(g.service_for(&key), Some(0));
        assert!(g.is_vip_addr(key.addr));
        // Endpoints are stored in canonical order.
        assert_eq!(g.endpoint(0).addr, u32::from(Ipv4Addr::new(10, 200, 2, 11)));
        assert_eq!(
            g.endpoint(0).egress,
            Some((0, MacAddr([2, 0, 0, 0, 0, 11])))
        );
        assert_eq!(g.endpoint(1).egress, None, "no neighbor entry for .12");
        let b = VipKey::new(Ipv4Addr::new(10, 200, 2, 12), 8080, 6);
        assert_eq!(
            g.backend_refs(&b),
            &[BackendRef {
                service: 0,
                endpoint: 1
            }]
        );
        assert_eq!(g.find_endpoint(0, b.addr, 8080), Some(1));
        assert_eq!(g.find_endpoint(0, b.addr, 8081), None);
        assert!(g.choose_new(0, 12345).is_some());
        assert!(g.service(0).carry_table.is_none());
    }

    #[test]
    fn draining_endpoints_get_no_new_flows_but_keep_carrying() {
        let g = Generation::build(
            1,
            &topo(),
            &[svc(&[ep(11), ep(12).state(EndpointState::Draining)])],
        )
        .unwrap();
        for h in 0..2000u64 {
            let h = crate::hash::hash_words_v1(h, 0, 0);
            assert_eq!(g.choose_new(0, h), Some(0));
        }
        let carried: std::collections::HashSet<u32> = (0..2000u64)
            .filter_map(|h| g.choose_existing(0, crate::hash::hash_words_v1(h, 0, 0)))
            .collect();
        assert_eq!(carried.len(), 2);
    }

    #[test]
    fn bad_specs_are_refused_with_the_culprit_named() {
        let e = Generation::build(1, &topo(), &[svc(&[ep(11), ep(11)])]).unwrap_err();
        assert!(e.to_string().contains("10.200.2.11:8080"), "{e}");
        let mut other = svc(&[]);
        other.name = "other".into();
        let e = Generation::build(1, &topo(), &[svc(&[]), other]).unwrap_err();
        assert!(matches!(e, GenerationError::DuplicateService { .. }), "{e}");
        let e = Generation::build(1, &topo(), &[svc(&[]), svc(&[])]).unwrap_err();
        assert!(matches!(e, GenerationError::DuplicateName { .. }), "{e}");
        let mut s = svc(&[ep(11)]);
        s.table_size = 100;
        let e = Generation::build(1, &topo(), &[s]).unwrap_err();
        assert!(matches!(e, GenerationError::Maglev { .. }), "{e}");
    }

    #[test]
    fn no_active_endpoint_means_no_choice() {
        let g =
            Generation::build(1, &topo(), &[svc(&[ep(11).state(EndpointState::Down)])]).unwrap();
        assert_eq!(g.choose_new(0, 42), None);
        assert_eq!(g.choose_existing(0, 42), None);
    }

    fn named(name: &str, port: u16, eps: &[EndpointSpec]) -> Arc<ServiceSpec> {
        let mut s = ServiceSpec::new(name, Ipv4Addr::new(198, 18, 0, 100), port, Protocol::Tcp);
        s.table_size = 251;
        s.endpoints = eps.to_vec();
        Arc::new(s)
    }

    fn ep_at(third: u8, last: u8) -> EndpointSpec {
        EndpointSpec::new(Ipv4Addr::new(10, 200, third, last), 8080)
    }

    type Fingerprint = Vec<(
        String,
        u64,
        Vec<(u32, u16, u32, EndpointState)>,
        Vec<Option<(u32, u16)>>,
    )>;

    /// Everything observable through the lookup API, by identity.
    fn fingerprint(g: &Generation) -> Fingerprint {
        let mut v: Vec<_> = g
            .services()
            .map(|(i, s)| {
                let eps = s
                    .endpoints
                    .clone()
                    .map(|e| {
                        let e = g.endpoint(e);
                        assert_eq!(e.service, i);
                        assert_eq!(
                            g.find_endpoint(i, e.addr, e.port)
                                .map(|x| g.endpoint(x).port),
                            Some(e.port)
                        );
                        let refs = g.backend_refs(&VipKey {
                            addr: e.addr,
                            port: e.port,
                            proto: 6,
                        });
                        assert!(refs.iter().any(|r| r.service == i));
                        (e.addr, e.port, e.weight, e.state)
                    })
                    .collect();
                let choices = (0..500u64)
                    .map(|h| {
                        let h = crate::hash::hash_words_v1(h, 1, 2);
                        g.choose_existing(i, h)
                            .map(|e| (g.endpoint(e).addr, g.endpoint(e).port))
                    })
                    .collect();
                assert_eq!(g.service_for(&s.key), Some(i));
                (s.name.clone(), g.digest(i), eps, choices)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn rebuild_equals_a_full_build_and_reuses_unchanged_services() {
        let a = named("a", 80, &[ep_at(2, 11), ep_at(2, 12)]);
        let b = named("b", 81, &[ep_at(3, 11), ep_at(3, 12), ep_at(3, 13)]);
        let c = named("c", 82, &[ep_at(2, 11)]);
        let g1 = Generation::build_shared(1, &topo(), &[a.clone(), b.clone(), c.clone()]).unwrap();
        // Grow b (relocates it), drain in a, remove c, add d.
        let mut b2 = (*b).clone();
        b2.endpoints.extend((14..30).map(|i| ep_at(3, i)));
        let b2 = Arc::new(b2);
        let mut a2 = (*a).clone();
        a2.endpoints[0].state = EndpointState::Draining;
        let a2 = Arc::new(a2);
        let d = named("d", 83, &[ep_at(2, 12), ep_at(4, 1)]);
        let specs = [a2.clone(), b2.clone(), d.clone()];
        let g2 = Generation::rebuild(&g1, 2, &specs).unwrap();
        let full = Generation::build_shared(2, &topo(), &specs).unwrap();
        assert_eq!(fingerprint(&g2), fingerprint(&full));
        // c's slot was reused by d; the shared backend 10.200.2.12 serves a and d.
        assert_eq!(g2.services().count(), 3);
        let shared = g2.backend_refs(&VipKey::new(Ipv4Addr::new(10, 200, 2, 12), 8080, 6));
        assert_eq!(shared.len(), 2);
        assert!(g2.service_for(&c.key()).is_none());
        // An unchanged service is the same compiled object, at the same indices.
        let g3 =
            Generation::rebuild(&g2, 3, &[a2.clone(), b2.clone(), named("d", 83, &[])]).unwrap();
        let (ia, ib) = (
            g2.service_by_name("a").unwrap(),
            g2.service_by_name("b").unwrap(),
        );
        assert!(std::ptr::eq(g2.service(ia), g3.service(ia)));
        assert!(std::ptr::eq(g2.service(ib), g3.service(ib)));
        assert_eq!(
            g3.backend_refs(&VipKey::new(Ipv4Addr::new(10, 200, 2, 12), 8080, 6))
                .len(),
            1
        );
        // Holes are never found.
        for (i, _) in g3.services() {
            assert_eq!(g3.find_endpoint(i, 0, 0), None);
        }
        assert!(g3.endpoints().iter().any(EndpointRt::is_hole));
    }

    #[test]
    fn a_failed_rebuild_leaves_the_previous_generation_usable() {
        let a = named("a", 80, &[ep_at(2, 11)]);
        let g1 = Generation::build_shared(1, &topo(), std::slice::from_ref(&a)).unwrap();
        let bad = named("b", 81, &[ep_at(2, 11), ep_at(2, 11)]);
        assert!(Generation::rebuild(&g1, 2, &[a.clone(), bad]).is_err());
        let clash = named("b", 80, &[]);
        assert!(Generation::rebuild(&g1, 2, &[a, clash]).is_err());
        assert_eq!(g1.services().count(), 1);
    }

    #[test]
    fn churn_compacts_the_index_space() {
        let mut g = Generation::build_shared(1, &topo(), &[named("a", 80, &[])]).unwrap();
        for round in 0..300u32 {
            let n = (round % 50) as u8 + 1;
            let eps: Vec<EndpointSpec> = (0..n).map(|i| ep_at((round % 7) as u8, i + 1)).collect();
            let specs: Vec<Arc<ServiceSpec>> = (0..20u16)
                .map(|s| {
                    named(
                        &format!("s{s}"),
                        1000 + s,
                        if s as u32 == round % 20 { &eps } else { &[] },
                    )
                })
                .chain(std::iter::once(named("big", 80, &eps)))
                .collect();
            g = Generation::rebuild(&g, u64::from(round) + 2, &specs).unwrap();
            let full = Generation::build_shared(0, &topo(), &specs).unwrap();
            assert_eq!(fingerprint(&g), fingerprint(&full), "round {round}");
            let (live, all) = g.endpoint_occupancy();
            assert!(all <= 2 * live + COMPACT_SLACK + 200, "{live} of {all}");
        }
    }
}
