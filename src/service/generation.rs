//! The immutable snapshot workers run: VIP map, Maglev tables, endpoint
//! states, routes and neighbors, compiled from specs by the control thread.

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use hashbrown::{HashMap, HashSet};

use super::route::{Hop, RouteTable, TopologyError};
use super::{EndpointState, ServiceSpec, Topology};
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

    #[inline]
    fn packed(&self) -> u64 {
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

/// A (service, endpoint) pair a backend address serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendRef {
    pub service: u32,
    pub endpoint: u32,
}

/// A service, compiled.
#[derive(Clone, Debug)]
pub struct ServiceRt {
    pub name: String,
    pub key: VipKey,
    pub seed: u64,
    pub hash: HashVersion,
    /// Maglev over endpoints that take new flows (active, weight > 0).
    pub table: MaglevTable,
    /// Maglev index -> global endpoint index, for `table`.
    pub table_endpoints: Box<[u32]>,
    /// Maglev over endpoints that still carry flows (active and draining),
    /// for mid-flow packets that miss the flow table: a connection to a
    /// draining backend picked up after a restart or eviction keeps going to
    /// it. Only built while some endpoint drains; otherwise `table` serves.
    pub carry_table: Option<(MaglevTable, Box<[u32]>)>,
    /// Global indices of this service's endpoints (sorted by identity).
    pub endpoints: std::ops::Range<u32>,
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
    services: Vec<ServiceRt>,
    endpoints: Vec<EndpointRt>,
    vips: HashMap<VipKey, u32, FastBuildHasher>,
    vip_addrs: HashSet<u32, FastBuildHasher>,
    backends: HashMap<VipKey, Box<[BackendRef]>, FastBuildHasher>,
    endpoint_ids: HashMap<(u32, VipKey), u32, FastBuildHasher>,
    links: Vec<LinkRt>,
    routes: RouteTable,
}

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
            endpoint_ids: HashMap::default(),
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
        let routes = RouteTable::compile(topo)?;
        let links = topo
            .links
            .iter()
            .map(|l| LinkRt {
                mac: l.mac,
                addr: u32::from(l.addr),
            })
            .collect();
        let mut g = Generation {
            number,
            links,
            routes,
            ..Generation::empty()
        };
        let mut names: HashMap<VipKey, &str, FastBuildHasher> = HashMap::default();
        for spec in specs {
            let key = spec.key();
            if spec.port == 0 {
                return Err(GenerationError::ZeroPort {
                    service: spec.name.clone(),
                    what: "service",
                });
            }
            if let Some(other) = names.insert(key, &spec.name) {
                return Err(GenerationError::DuplicateService {
                    name: spec.name.clone(),
                    other: other.to_string(),
                    vip: spec.vip,
                    port: spec.port,
                    proto: spec.protocol,
                });
            }
            g.add_service(spec)?;
        }
        Ok(g)
    }

    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), GenerationError> {
        let svc_idx = self.services.len() as u32;
        let proto = spec.protocol.number();
        let mut eps = spec.endpoints.clone();
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
        let first =
            u32::try_from(self.endpoints.len()).map_err(|_| GenerationError::TooManyEndpoints)?;
        u32::try_from(self.endpoints.len() + eps.len())
            .map_err(|_| GenerationError::TooManyEndpoints)?;
        for (i, e) in eps.iter().enumerate() {
            let idx = first + i as u32;
            let addr = u32::from(e.addr);
            self.endpoints.push(EndpointRt {
                addr,
                port: e.port,
                weight: e.weight,
                state: e.state,
                service: svc_idx,
                egress: self.routes.resolve(addr).ok(),
            });
            let bkey = VipKey {
                addr,
                port: e.port,
                proto,
            };
            self.endpoint_ids.insert((svc_idx, bkey), idx);
            let refs = self.backends.entry(bkey).or_default();
            let mut v = refs.to_vec();
            v.push(BackendRef {
                service: svc_idx,
                endpoint: idx,
            });
            *refs = v.into_boxed_slice();
        }
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
        let key = spec.key();
        self.vips.insert(key, svc_idx);
        self.vip_addrs.insert(key.addr);
        self.services.push(ServiceRt {
            name: spec.name.clone(),
            key,
            seed,
            hash: spec.hash,
            table,
            table_endpoints,
            carry_table,
            endpoints: first..first + eps.len() as u32,
        });
        Ok(())
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

    pub fn services(&self) -> &[ServiceRt] {
        &self.services
    }

    #[inline]
    pub fn endpoint(&self, idx: u32) -> &EndpointRt {
        &self.endpoints[idx as usize]
    }

    pub fn endpoints(&self) -> &[EndpointRt] {
        &self.endpoints
    }

    /// The (service, endpoint) pairs served by a backend address and port:
    /// how a backend->client reply finds its service.
    #[inline]
    pub fn backend_refs(&self, key: &VipKey) -> &[BackendRef] {
        self.backends.get(key).map_or(&[], |b| &b[..])
    }

    /// An endpoint of service `svc` by identity: how a flow entry made under
    /// an older generation finds its backend in this one.
    #[inline]
    pub fn find_endpoint(&self, svc: u32, addr: u32, port: u16) -> Option<u32> {
        let proto = self.services.get(svc as usize)?.key.proto;
        self.endpoint_ids
            .get(&(svc, VipKey { addr, port, proto }))
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
        let e = Generation::build(1, &topo(), &[svc(&[]), svc(&[])]).unwrap_err();
        assert!(matches!(e, GenerationError::DuplicateService { .. }), "{e}");
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
}
