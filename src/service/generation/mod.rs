//! The immutable snapshot workers run: VIP map, Maglev tables, endpoint
//! states, routes and neighbors, compiled from specs by the control thread.
//!
//! Building is incremental: [`Generation::rebuild`] starts from the previous
//! generation and recompiles only the services whose spec changed, and a
//! generation costs about what changed, not the size of the configuration:
//! - compiled services are shared between generations (`Arc<ServiceRt>`);
//! - every service owns a *block* of global endpoint indices that stays put
//!   while the service exists and fits in it, so the global indices that
//!   flow entries, per-endpoint counters and the backend map hold do not
//!   shift when another service changes. Unused indices of a block are
//!   *holes*: endpoints with port 0 and state `Removed`, which no lookup
//!   returns (no real endpoint has port 0);
//! - the endpoint array is chunked and the backend map sharded, both
//!   copy-on-write (`endpoints.rs`, `backends.rs`): a generation shares every
//!   chunk and shard it did not write with its parent, and a worker carries
//!   its per-endpoint counters over the changed chunks only;
//! - service indices are stable too: a removed service leaves a vacant slot
//!   (matching no VIP) that a later service may take.
//!
//! When holes outnumber live endpoints the next rebuild compacts everything
//! (a full build): correctness never depends on indices staying put, only
//! speed does (flow entries re-resolve by identity on a generation change,
//! per-endpoint counters are carried by identity).

mod backends;
mod build;
mod endpoints;

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use backends::BackendMap;
use endpoints::EndpointTable;

use super::route::{Hop, RouteTable, TopologyError};
use super::{EndpointState, ServiceSpec};
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
    /// Recycling of long-lived connections (S2), if the service asks for it.
    pub recycle: Option<crate::service::RecyclePolicy>,
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
            recycle: None,
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
    endpoints: EndpointTable,
    vips: HashMap<VipKey, u32, FastBuildHasher>,
    vip_addrs: HashSet<u32, FastBuildHasher>,
    /// Service name -> index: a rebuild finds a spec's slot without
    /// hashing every name. Rebuilt, like `vips`, only when services come or
    /// go or change key; shared otherwise.
    names: Arc<HashMap<Box<str>, u32, FastBuildHasher>>,
    backends: BackendMap,
    links: Vec<LinkRt>,
    /// Shared until the topology changes, so "same routes" is a pointer test.
    routes: Arc<RouteTable>,
}

/// How much of a generation is the same memory as another's (see
/// [`Generation::sharing`]): (shared, total) per structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sharing {
    pub endpoint_chunks: (usize, usize),
    pub backend_shards: (usize, usize),
    pub services: (usize, usize),
}

impl Generation {
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
        self.endpoints.get(idx)
    }

    /// Global endpoint indices, holes included: endpoint `i` exists for
    /// every `i` below this.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Every endpoint in index order, holes included (see
    /// [`EndpointRt::is_hole`]).
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointRt> + '_ {
        self.endpoints.iter()
    }

    /// Index ranges whose endpoints may differ from `older`'s (ascending,
    /// disjoint, covering every index either has that may differ): outside
    /// them, index `i` is the same endpoint of the same service in both.
    /// O(chunks), so a worker carrying per-endpoint state from `older` to
    /// `self` pays for the changed chunks only.
    pub fn changed_endpoints<'a>(
        &'a self,
        older: &'a Generation,
    ) -> impl Iterator<Item = Range<u32>> + 'a {
        self.endpoints.changed_ranges(&older.endpoints)
    }

    /// Whether `other` runs the very same route table (not a recompiled
    /// one): next hops are then the same for every address.
    pub fn same_routes(&self, other: &Generation) -> bool {
        Arc::ptr_eq(&self.routes, &other.routes)
    }

    /// Whether `other` has the very same services at the same indices with
    /// the same keys (endpoints and tables aside): the VIP maps are shared.
    pub fn same_service_keys(&self, other: &Generation) -> bool {
        Arc::ptr_eq(&self.names, &other.names)
    }

    /// What this generation shares with `other` (an ancestor, usually).
    pub fn sharing(&self, other: &Generation) -> Sharing {
        Sharing {
            endpoint_chunks: self.endpoints.sharing(&other.endpoints),
            backend_shards: self.backends.sharing(&other.backends),
            services: shared_arcs(&self.services, &other.services),
        }
    }

    /// The (service, endpoint) pairs served by a backend address and port:
    /// how a backend->client reply finds its service.
    #[inline]
    pub fn backend_refs(&self, key: &VipKey) -> &[BackendRef] {
        self.backends.get(key)
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
                let e = self.endpoints.get(i);
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

    /// [`Generation::route`] as a hop index, for a flow to keep (valid for
    /// this generation): [`Generation::hop`] turns it into port and MAC.
    #[inline]
    pub fn route_hop(&self, dst: u32) -> Result<u32, Option<Hop>> {
        self.routes.resolve_hop(dst)
    }

    /// The port and MAC of a hop index from [`Generation::route_hop`].
    #[inline(always)]
    pub fn hop(&self, i: u32) -> Option<(u16, MacAddr)> {
        self.routes.hop(i)
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

#[cfg(test)]
mod tests;

/// (position by position, how many of `mine` are the very allocation
/// `theirs` holds, how many `mine` has): what a generation shares with an
/// older one, structure by structure.
fn shared_arcs<T: ?Sized>(mine: &[Arc<T>], theirs: &[Arc<T>]) -> (usize, usize) {
    let shared = mine
        .iter()
        .zip(theirs)
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    (shared, mine.len())
}
