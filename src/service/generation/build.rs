//! Compiling specs into generations: full builds, incremental rebuilds
//! that write only what changed, and topology changes.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use super::backends::BackendMap;
use super::endpoints::EndpointTable;
use super::{
    endpoint_id, BackendRef, EndpointRt, Generation, GenerationError, LinkRt, ServiceRt, VipKey,
};
use crate::hash::FastBuildHasher;
use crate::maglev::{MaglevBackend, MaglevTable};
use crate::service::route::RouteTable;
use crate::service::{EndpointSpec, EndpointState, ServiceSpec, Topology};

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
pub(super) const COMPACT_SLACK: usize = 4096;

impl Generation {
    /// A generation with no services and no links: everything is dropped.
    pub fn empty() -> Generation {
        Generation {
            number: 0,
            services: Vec::new(),
            endpoints: EndpointTable::default(),
            vips: HashMap::default(),
            vip_addrs: HashSet::default(),
            names: Arc::default(),
            backends: BackendMap::default(),
            links: Vec::new(),
            routes: Arc::new(RouteTable::default()),
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
        check_unique(specs)?;
        Generation {
            number,
            links,
            routes: Arc::new(routes),
            ..Generation::empty()
        }
        .packed(specs)
    }

    /// Generation `number` for `specs` under the same topology as `prev`,
    /// reusing every compiled service whose spec is unchanged (the same `Arc`
    /// or an equal value). Services are matched by name. Costs the changed
    /// services (their Maglev tables, the endpoint chunks and backend shards
    /// they write) plus a pointer comparison per unchanged one: nothing
    /// O(endpoints), and no hashing of every name and key.
    pub fn rebuild(
        prev: &Generation,
        number: u64,
        specs: &[Arc<ServiceSpec>],
    ) -> Result<Generation, GenerationError> {
        let mut g = Generation {
            number,
            services: prev.services.clone(),
            endpoints: prev.endpoints.clone(),
            vips: prev.vips.clone(),
            vip_addrs: prev.vip_addrs.clone(),
            names: prev.names.clone(),
            backends: prev.backends.clone(),
            links: prev.links.clone(),
            routes: prev.routes.clone(),
        };
        let mut kept = vec![false; prev.services.len()];
        let mut changed: Vec<(Option<u32>, &Arc<ServiceSpec>)> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            // The store lists specs in a stable order, so an unchanged spec
            // is usually the very one at the same index.
            let slot = match prev.services.get(i) {
                Some(s) if s.spec.as_ref().is_some_and(|o| Arc::ptr_eq(o, spec)) => Some(i as u32),
                _ => prev.names.get(spec.name.as_str()).copied(),
            };
            match slot {
                Some(slot) => {
                    if std::mem::replace(&mut kept[slot as usize], true) {
                        return Err(GenerationError::DuplicateName {
                            name: spec.name.clone(),
                        });
                    }
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
        check_changed_unique(prev, &kept, &changed)?;
        // The VIP maps are rebuilt only when some service key comes or goes.
        let mut keys_changed = false;
        for (slot, kept) in kept.iter().enumerate() {
            if !kept && !g.services[slot].is_vacant() {
                g.vacate(slot as u32);
                keys_changed = true;
            }
        }
        for (slot, spec) in changed {
            let slot = match slot {
                Some(s) => {
                    keys_changed |= g.services[s as usize].key != spec.key();
                    s
                }
                None => {
                    keys_changed = true;
                    match g.services.iter().position(|s| s.is_vacant()) {
                        Some(s) => s as u32,
                        None => {
                            g.services.push(Arc::new(ServiceRt::vacant(0..0)));
                            (g.services.len() - 1) as u32
                        }
                    }
                }
            };
            g.place(slot, spec, true)?;
        }
        let live: usize = g.services.iter().map(|s| s.endpoints.len()).sum();
        if g.endpoints.len() - live > live + COMPACT_SLACK {
            return Generation {
                number: g.number,
                links: g.links,
                routes: g.routes,
                ..Generation::empty()
            }
            .packed(specs);
        }
        if keys_changed {
            g.index_vips();
        }
        Ok(g)
    }

    /// `specs` placed from scratch into this generation, which has none:
    /// no holes, no vacant slots.
    fn packed(mut self, specs: &[Arc<ServiceSpec>]) -> Result<Generation, GenerationError> {
        for spec in specs {
            let slot = self.services.len() as u32;
            self.services.push(Arc::new(ServiceRt::vacant(0..0)));
            self.place(slot, spec, false)?;
        }
        self.index_vips();
        Ok(self)
    }

    /// Empties slot `slot`: its endpoints become holes, its backend entries go.
    fn vacate(&mut self, slot: u32) {
        let old = self.services[slot as usize].clone();
        if old.is_vacant() {
            return;
        }
        for idx in old.endpoints.clone() {
            let e = *self.endpoints.get(idx);
            self.backends.unlink(
                VipKey {
                    addr: e.addr,
                    port: e.port,
                    proto: old.key.proto,
                },
                slot,
            );
            self.endpoints.set(idx, EndpointRt::hole(slot));
        }
        self.services[slot as usize] = Arc::new(ServiceRt::vacant(old.block.clone()));
    }

    /// Compiles `spec` into slot `slot` (vacant, or holding an older version
    /// of the same service), in the slot's block if it fits, else in a new
    /// block at the end (with room to grow when `slack`). Writes only what
    /// differs from the slot's previous contents: a weight change rewrites
    /// one endpoint and no backend entry; copy-on-write does the rest.
    fn place(
        &mut self,
        slot: u32,
        spec: &Arc<ServiceSpec>,
        slack: bool,
    ) -> Result<(), GenerationError> {
        let eps = canonical_endpoints(spec)?;
        let n = eps.len();
        let old = self.services[slot as usize].clone();
        let block = if old.block.len() >= n {
            old.block.clone()
        } else {
            let cap = if slack { n + n / 4 + 4 } else { n };
            let start = u32::try_from(self.endpoints.len())
                .map_err(|_| GenerationError::TooManyEndpoints)?;
            let end = u32::try_from(self.endpoints.len() + cap)
                .map_err(|_| GenerationError::TooManyEndpoints)?;
            self.endpoints.grow(end as usize, EndpointRt::hole(slot));
            start..end
        };
        let first = block.start;
        let seed = spec.effective_seed();
        let (table, table_endpoints) = maglev(spec, &eps, first, &|s| s == EndpointState::Active)?;
        let carry_table = if eps
            .iter()
            .any(|e| e.state == EndpointState::Draining && e.weight > 0)
        {
            Some(maglev(spec, &eps, first, &EndpointState::carries_flows)?)
        } else {
            None
        };
        let key = spec.key();
        let proto = key.proto;
        let mut ids = HashMap::with_capacity_and_hasher(n, FastBuildHasher);
        for (i, e) in eps.iter().enumerate() {
            ids.insert(endpoint_id(u32::from(e.addr), e.port), first + i as u32);
        }
        // A backend entry stays when the same backend keeps the same index
        // under the same protocol; the rest of the old ones go, before the
        // new ones come (a backend may move index within the service).
        let old_proto = (!old.is_vacant()).then_some(old.key.proto);
        let same_proto = old_proto == Some(proto);
        for idx in old.endpoints.clone() {
            let e = *self.endpoints.get(idx);
            if !(same_proto && ids.get(&endpoint_id(e.addr, e.port)) == Some(&idx)) {
                let key = VipKey {
                    addr: e.addr,
                    port: e.port,
                    proto: old.key.proto,
                };
                self.backends.unlink(key, slot);
            }
        }
        if !old.is_vacant() && old.key != key {
            // Same fields, other service identity: workers must not carry
            // an endpoint's counters across the change of key, so the
            // chunks must be reported changed although nothing differs.
            self.endpoints.unshare(old.block.clone());
            self.endpoints.unshare(block.clone());
        }
        for (i, e) in eps.iter().enumerate() {
            let idx = first + i as u32;
            let addr = u32::from(e.addr);
            self.endpoints.set(
                idx,
                EndpointRt {
                    addr,
                    port: e.port,
                    weight: e.weight,
                    state: e.state,
                    service: slot,
                    egress: self.routes.resolve(addr).ok(),
                },
            );
            if !(same_proto && old.ids.get(&endpoint_id(addr, e.port)) == Some(&idx)) {
                self.backends.link(
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
        }
        for idx in first + n as u32..block.end {
            self.endpoints.set(idx, EndpointRt::hole(slot));
        }
        if block != old.block {
            // Moved to a new block: the old one is left to holes.
            for idx in old.endpoints.clone() {
                self.endpoints.set(idx, EndpointRt::hole(slot));
            }
        }
        self.services[slot as usize] = Arc::new(ServiceRt {
            name: spec.name.clone(),
            key,
            seed,
            hash: spec.hash,
            table,
            table_endpoints,
            carry_table,
            ids,
            endpoints: first..first + n as u32,
            block,
            spec: Some(spec.clone()),
            recycle: spec.recycle,
        });
        Ok(())
    }

    /// Rebuilds the VIP and name maps (one entry per service), when
    /// services come or go or change key.
    fn index_vips(&mut self) {
        self.vips.clear();
        self.vip_addrs.clear();
        let mut names = HashMap::with_capacity_and_hasher(self.services.len(), FastBuildHasher);
        for (i, s) in self.services.iter().enumerate() {
            if !s.is_vacant() {
                self.vips.insert(s.key, i as u32);
                self.vip_addrs.insert(s.key.addr);
                names.insert(s.name.as_str().into(), i as u32);
            }
        }
        self.names = Arc::new(names);
    }

    /// Generation `number`: `prev` with a new topology (links, routes,
    /// neighbors), every endpoint's egress resolved again. Services and
    /// their Maglev tables are shared, not rebuilt, and only the endpoint
    /// chunks whose egress changed are copied: a neighbor learnt by ARP
    /// costs a pass over the endpoints, not a rebuild.
    pub fn with_topology(
        prev: &Generation,
        number: u64,
        topo: &Topology,
    ) -> Result<Generation, GenerationError> {
        let (links, routes) = compile_links(topo)?;
        let mut endpoints = prev.endpoints.clone();
        for idx in 0..endpoints.len() as u32 {
            let e = *endpoints.get(idx);
            if !e.is_hole() {
                endpoints.set(
                    idx,
                    EndpointRt {
                        egress: routes.resolve(e.addr).ok(),
                        ..e
                    },
                );
            }
        }
        Ok(Generation {
            number,
            services: prev.services.clone(),
            endpoints,
            vips: prev.vips.clone(),
            vip_addrs: prev.vip_addrs.clone(),
            names: prev.names.clone(),
            backends: prev.backends.clone(),
            links,
            routes: Arc::new(routes),
        })
    }
}

/// `spec`'s endpoints in canonical order (Maglev tables come out
/// bit-identical whatever order the operator or the controller listed them
/// in), checked.
fn canonical_endpoints(spec: &ServiceSpec) -> Result<Vec<EndpointSpec>, GenerationError> {
    if spec.port == 0 {
        return Err(GenerationError::ZeroPort {
            service: spec.name.clone(),
            what: "service",
        });
    }
    let mut eps: Vec<EndpointSpec> = spec.endpoints.clone();
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
    Ok(eps)
}

/// A Maglev table over the endpoints in states `take` with a weight, and
/// its Maglev index -> global endpoint index map (`eps[i]` at `first + i`).
fn maglev(
    spec: &ServiceSpec,
    eps: &[EndpointSpec],
    first: u32,
    take: &dyn Fn(EndpointState) -> bool,
) -> Result<(MaglevTable, Box<[u32]>), GenerationError> {
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
    MaglevTable::build(&backends, spec.table_size, spec.effective_seed())
        .map(|t| (t, map.into_boxed_slice()))
        .map_err(|source| GenerationError::Maglev {
            service: spec.name.clone(),
            source,
        })
}

/// [`check_unique`] for a rebuild, looking only at the changed and new
/// specs: the unchanged ones were unique among themselves in `prev`.
/// `kept[s]`: slot `s` of `prev` is still listed (changed or not).
fn check_changed_unique(
    prev: &Generation,
    kept: &[bool],
    changed: &[(Option<u32>, &Arc<ServiceSpec>)],
) -> Result<(), GenerationError> {
    let changed_slots: HashSet<u32, FastBuildHasher> =
        changed.iter().filter_map(|(s, _)| *s).collect();
    let mut keys: HashMap<VipKey, &str, FastBuildHasher> = HashMap::default();
    let mut new_names: HashSet<&str, FastBuildHasher> = HashSet::default();
    for &(slot, spec) in changed {
        if slot.is_none() && !new_names.insert(spec.name.as_str()) {
            return Err(GenerationError::DuplicateName {
                name: spec.name.clone(),
            });
        }
        let key = spec.key();
        let clash = |other: &str| GenerationError::DuplicateService {
            name: spec.name.clone(),
            other: other.to_string(),
            vip: spec.vip,
            port: spec.port,
            proto: spec.protocol,
        };
        if let Some(other) = keys.insert(key, &spec.name) {
            return Err(clash(other));
        }
        // An unchanged service still listed keeps its key.
        if let Some(&s) = prev.vips.get(&key) {
            if Some(s) != slot && kept[s as usize] && !changed_slots.contains(&s) {
                return Err(clash(&prev.services[s as usize].name));
            }
        }
    }
    Ok(())
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
