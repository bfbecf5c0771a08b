//! The operator's truth: topology, services by name, drain deadlines.
//!
//! Every change is staged on a copy, compiled into a generation (reusing the
//! compiled services it does not touch), published, and committed only once
//! every worker runs it; on any error nothing changes. Several changes queued
//! together are applied in one generation (group commit), each answered on
//! its own.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{Config, ConfigError};
use super::health::HealthBook;
use super::protocol::{ErrorBody, ErrorKind, Request};
use super::{Dataplane, PublishError};
use crate::maglev::{validate_table_size, MAX_BACKENDS};
use crate::service::{
    EndpointSpec, EndpointState, Generation, GenerationError, ServiceSpec, Topology,
};

/// Why a change was refused or did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no service named {0:?}; `services list` shows the names")]
    UnknownService(String),
    #[error("service {service:?} has no endpoint {endpoint}")]
    UnknownEndpoint {
        service: String,
        endpoint: SocketAddrV4,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Build(#[from] GenerationError),
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Publish(#[from] PublishError),
    #[error("{0} is not a change")]
    NotAChange(&'static str),
}

impl StoreError {
    /// The protocol error for this failure.
    pub fn to_body(&self) -> ErrorBody {
        let kind = match self {
            StoreError::UnknownService(_) => ErrorKind::UnknownService,
            StoreError::UnknownEndpoint { .. } => ErrorKind::UnknownEndpoint,
            StoreError::Invalid(_) | StoreError::Build(_) | StoreError::NotAChange(_) => {
                ErrorKind::Invalid
            }
            StoreError::Config(_) => ErrorKind::Config,
            StoreError::Publish(_) => ErrorKind::Dataplane,
        };
        ErrorBody::new(kind, self.to_string())
    }
}

fn invalid(msg: String) -> StoreError {
    StoreError::Invalid(msg)
}

/// A change that took effect: the generation carrying it, and how long the
/// workers took to run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub generation: u64,
    pub apply: Duration,
}

/// Services changed since the last [`Store::take_touched`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    None,
    Some(Vec<String>),
    /// Everything may have changed (the first publish, a reload).
    All,
}

/// The configuration sluice runs, as the operator sees it.
#[derive(Debug)]
pub struct Store {
    topology: Topology,
    services: BTreeMap<String, Arc<ServiceSpec>>,
    config_path: Option<PathBuf>,
    /// Drain deadlines: when they pass, the endpoint is marked down (if it
    /// is still draining under the same deadline).
    drains: HashMap<(String, SocketAddrV4), Instant>,
    publish_timeout: Duration,
    /// Neighbors learnt by ARP (configured ones stay in `topology`).
    learnt: Vec<(std::net::Ipv4Addr, crate::wire::MacAddr)>,
    /// What health probes say of checked endpoints; folded into the specs
    /// every generation is compiled from (the operator's state wins).
    health: HealthBook,
    /// Services changed by commits since the last `take_touched`, for
    /// whoever follows changes service by service (the health monitor).
    touched: Touched,
}

impl Store {
    /// A store with these services (checked), not yet published.
    pub fn new(topology: Topology, services: Vec<Arc<ServiceSpec>>) -> Result<Store, StoreError> {
        let mut map = BTreeMap::new();
        for s in services {
            validate_spec(&s)?;
            if map.insert(s.name.clone(), s.clone()).is_some() {
                return Err(invalid(format!("service {:?} is defined twice", s.name)));
            }
        }
        Ok(Store {
            topology,
            services: map,
            config_path: None,
            drains: HashMap::new(),
            learnt: Vec::new(),
            publish_timeout: Duration::from_secs(5),
            health: HealthBook::default(),
            touched: Touched::All,
        })
    }

    /// A store from a configuration file's contents.
    pub fn from_config(config: &Config, path: Option<PathBuf>) -> Result<Store, StoreError> {
        let mut s = Store::new(config.topology()?, config.services()?)?;
        s.config_path = path;
        Ok(s)
    }

    /// How long a change may take to reach every worker.
    pub fn set_publish_timeout(&mut self, t: Duration) {
        self.publish_timeout = t;
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceSpec>> {
        self.services.values()
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceSpec>> {
        self.services.get(name)
    }

    /// The topology in force: configured neighbors, then learnt ones for
    /// addresses the configuration does not pin.
    pub fn effective_topology(&self) -> Topology {
        let mut t = self.topology.clone();
        for &(ip, mac) in &self.learnt {
            if !t.neighbors.iter().any(|(a, _)| *a == ip) {
                t.neighbors.push((ip, mac));
            }
        }
        t
    }

    /// Publishes a generation with these learnt neighbors (services and
    /// Maglev tables shared with the running generation).
    /// Sets the learnt neighbors the next published generation carries,
    /// without publishing one (at start, before the first generation).
    pub fn preset_learnt_neighbors(
        &mut self,
        learnt: Vec<(std::net::Ipv4Addr, crate::wire::MacAddr)>,
    ) {
        self.learnt = learnt;
    }

    pub fn set_learnt_neighbors<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
        learnt: Vec<(std::net::Ipv4Addr, crate::wire::MacAddr)>,
    ) -> Result<Applied, StoreError> {
        let old = std::mem::replace(&mut self.learnt, learnt);
        let number = dp.current().number + 1;
        let g = match Generation::with_topology(dp.current(), number, &self.effective_topology()) {
            Ok(g) => g,
            Err(e) => {
                self.learnt = old;
                return Err(e.into());
            }
        };
        let apply = dp.publish(g, self.publish_timeout)?;
        Ok(Applied {
            generation: number,
            apply,
        })
    }

    /// What health probes say of checked endpoints.
    pub fn health(&self) -> &HealthBook {
        &self.health
    }

    /// The health book, for the control thread's health monitor: a verdict
    /// that changes the data path's view takes effect with the next
    /// generation (see [`Store::publish_health`]).
    pub fn health_mut(&mut self) -> &mut HealthBook {
        &mut self.health
    }

    /// The services changed since the last call (by name).
    pub fn take_touched(&mut self) -> Touched {
        std::mem::replace(&mut self.touched, Touched::None)
    }

    fn touch(&mut self, names: impl IntoIterator<Item = String>) {
        match &mut self.touched {
            Touched::All => {}
            Touched::None => self.touched = Touched::Some(names.into_iter().collect()),
            Touched::Some(v) => v.extend(names),
        }
    }

    /// Publishes the services with the health book's current verdicts
    /// (only services whose combined spec changed are rebuilt).
    pub fn publish_health<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
    ) -> Result<Applied, StoreError> {
        let drains = self.drains.clone();
        self.commit(dp, Undo::default(), drains)
    }

    /// Publishes the store's services as a fresh generation (at start).
    pub fn publish_all<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
    ) -> Result<Applied, StoreError> {
        let number = dp.current().number + 1;
        let g = Generation::build_shared(
            number,
            &self.effective_topology(),
            &self.health.combined(&self.services),
        )?;
        let apply = dp.publish(g, self.publish_timeout)?;
        Ok(Applied {
            generation: number,
            apply,
        })
    }

    /// Applies `reqs` (changes only) in one generation if they all compile
    /// together, answering each; a refused request changes nothing and does
    /// not hold back the others.
    pub fn apply_batch<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
        reqs: &[&Request],
        now: Instant,
    ) -> Vec<Result<Applied, StoreError>> {
        let mut undo = Undo::default();
        let mut drains = self.drains.clone();
        let mut results: Vec<Option<Result<Applied, StoreError>>> = Vec::with_capacity(reqs.len());
        let mut accepted = 0;
        for r in reqs {
            let mark = undo.mark();
            match stage(&mut self.services, &mut undo, &mut drains, r, now) {
                Ok(()) => {
                    accepted += 1;
                    results.push(None);
                }
                Err(e) => {
                    undo.rollback_to(&mut self.services, mark);
                    results.push(Some(Err(e)));
                }
            }
        }
        if accepted == 0 {
            return results.into_iter().flatten().collect();
        }
        match self.commit(dp, undo, drains) {
            Ok(a) => results.into_iter().map(|r| r.unwrap_or(Ok(a))).collect(),
            Err(StoreError::Build(_)) if accepted > 1 => {
                // Some request compiles alone but not with the rest (or not
                // at all): apply them one by one so each gets its own answer.
                reqs.iter()
                    .zip(results)
                    .map(|(r, res)| match res {
                        Some(e) => e,
                        None => self.apply_one(dp, r, now),
                    })
                    .collect()
            }
            Err(e) => {
                let body = e.to_string();
                let mut first = Some(e);
                results
                    .into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| {
                            Err(first
                                .take()
                                .unwrap_or_else(|| StoreError::Invalid(body.clone())))
                        })
                    })
                    .collect()
            }
        }
    }

    /// Applies one change in its own generation.
    pub fn apply_one<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
        req: &Request,
        now: Instant,
    ) -> Result<Applied, StoreError> {
        let mut undo = Undo::default();
        let mut drains = self.drains.clone();
        if let Err(e) = stage(&mut self.services, &mut undo, &mut drains, req, now) {
            undo.rollback_to(&mut self.services, 0);
            return Err(e);
        }
        self.commit(dp, undo, drains)
    }

    /// Publishes the services as staged (in place, `undo` says how to go
    /// back); on any failure before the generation is sent, they go back.
    fn commit<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
        mut undo: Undo,
        drains: HashMap<(String, SocketAddrV4), Instant>,
    ) -> Result<Applied, StoreError> {
        let number = dp.current().number + 1;
        let specs = self.health.combined(&self.services);
        let g = match Generation::rebuild(dp.current(), number, &specs) {
            Ok(g) => g,
            Err(e) => {
                undo.rollback_to(&mut self.services, 0);
                return Err(e.into());
            }
        };
        let result = dp.publish(g, self.publish_timeout);
        // Once sent, a generation takes effect when the lagging worker
        // catches up: the store must describe it even if the wait timed out.
        if dp.current().number == number {
            self.drains = drains;
            let names: Vec<String> = undo.0.drain(..).map(|(name, _)| name).collect();
            self.touch(names);
        } else {
            undo.rollback_to(&mut self.services, 0);
        }
        let apply = result?;
        Ok(Applied {
            generation: number,
            apply,
        })
    }

    /// Rereads the configuration file (`path`, or the one sluice started
    /// with) and runs it; on any error the running configuration stays.
    pub fn reload<B: Send + 'static>(
        &mut self,
        dp: &mut Dataplane<B>,
        path: Option<&str>,
    ) -> Result<(Applied, PathBuf, usize), StoreError> {
        let path = match path {
            Some(p) => PathBuf::from(p),
            None => self.config_path.clone().ok_or_else(|| {
                invalid("sluice was not started from a file; give the path to reload".into())
            })?,
        };
        let mut config = Config::load(&path)?;
        self.keep_interfaces(&mut config)?;
        let mut next = Store::from_config(&config, Some(path.clone()))?;
        next.publish_timeout = self.publish_timeout;
        // What ARP learnt stays true across a reload, and so do probe
        // verdicts (the health monitor then forgets endpoints and checks the
        // new file no longer has).
        next.learnt = self.learnt.clone();
        let number = dp.current().number + 1;
        let g = Generation::build_shared(
            number,
            &next.effective_topology(),
            &self.health.combined(&next.services),
        )?;
        let result = dp.publish(g, self.publish_timeout);
        if dp.current().number == number {
            let n = next.services.len();
            next.health = std::mem::take(&mut self.health);
            next.touched = Touched::All;
            *self = next;
            let apply = result?;
            return Ok((
                Applied {
                    generation: number,
                    apply,
                },
                path,
                n,
            ));
        }
        Err(result.err().map_or_else(
            || invalid("generation not published".into()),
            StoreError::Publish,
        ))
    }

    /// A reload runs on the ports opened at start: its file must name the
    /// same interfaces in the same order (a port is its index). An
    /// interface given without `mac` keeps the MAC it runs with (read from
    /// the interface at start), as at start.
    fn keep_interfaces(&self, config: &mut Config) -> Result<(), StoreError> {
        let running: Vec<&str> = self
            .topology
            .links
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        let wanted: Vec<&str> = config.interface.iter().map(|i| i.name.as_str()).collect();
        if running != wanted {
            return Err(invalid(format!(
                "interfaces {wanted:?} differ from the running {running:?}: ports are opened at start, restart sluice to change them"
            )));
        }
        for (i, l) in config.interface.iter_mut().zip(&self.topology.links) {
            if i.mac.is_none() {
                i.mac = Some(l.mac);
            }
        }
        Ok(())
    }

    /// The earliest pending drain deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.drains.values().min().copied()
    }

    /// Changes that drain deadlines due by `now` call for: marking the
    /// endpoints down (their remaining flows then get RSTs).
    pub fn due_drains(&mut self, now: Instant) -> Vec<Request> {
        let due: Vec<(String, SocketAddrV4)> = self
            .drains
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in due {
            self.drains.remove(&key);
            let (service, endpoint) = key;
            let still_draining = self.services.get(&service).is_some_and(|s| {
                s.endpoints
                    .iter()
                    .any(|e| same(e, endpoint) && e.state == EndpointState::Draining)
            });
            if still_draining {
                out.push(Request::EndpointDown { service, endpoint });
            }
        }
        out
    }
}

fn same(e: &EndpointSpec, a: SocketAddrV4) -> bool {
    e.addr == *a.ip() && e.port == a.port()
}

/// Checks what `Generation::build` would refuse late or with a less
/// helpful message.
fn validate_spec(s: &ServiceSpec) -> Result<(), StoreError> {
    let name = &s.name;
    if name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(format!(
            "service name {name:?}: must be 1-128 characters without spaces"
        )));
    }
    if s.port == 0 {
        return Err(invalid(format!("service {name:?}: port must be 1-65535")));
    }
    validate_table_size(s.table_size).map_err(|e| {
        invalid(format!(
            "service {name:?}: table_size: {e}; use a prime such as 65537 (the default), 16381 or 251"
        ))
    })?;
    crate::service::check_recycle(s).map_err(|e| invalid(format!("service {name:?}: {e}")))?;
    if let Some(h) = &s.health {
        h.validate()
            .map_err(|e| invalid(format!("service {name:?}: {e}")))?;
    }
    validate_endpoints(name, s.table_size, &s.endpoints)
}

fn validate_endpoints(name: &str, table_size: u32, eps: &[EndpointSpec]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(eps.len());
    let mut weighted = 0usize;
    for e in eps {
        if e.port == 0 {
            return Err(invalid(format!(
                "service {name:?}: endpoint {}:0: port must be 1-65535",
                e.addr
            )));
        }
        if !seen.insert((e.addr, e.port)) {
            return Err(invalid(format!(
                "service {name:?}: endpoint {}:{} is listed twice",
                e.addr, e.port
            )));
        }
        if e.weight > 0 && e.state.carries_flows() {
            weighted += 1;
        }
    }
    if eps.len() > MAX_BACKENDS || weighted > table_size as usize {
        return Err(invalid(format!(
            "service {name:?}: {} endpoints is more than its table of {table_size} slots can spread; use a larger table_size",
            eps.len()
        )));
    }
    Ok(())
}

/// How to take staged changes back: the previous value of every service
/// changed, newest last. Staging in place with this log costs the services
/// a batch touches; staging on a copy cost a copy of every service (and
/// its name) per batch.
#[derive(Debug, Default)]
struct Undo(Vec<(String, Option<Arc<ServiceSpec>>)>);

impl Undo {
    fn mark(&self) -> usize {
        self.0.len()
    }

    fn insert(
        &mut self,
        services: &mut BTreeMap<String, Arc<ServiceSpec>>,
        name: String,
        spec: Arc<ServiceSpec>,
    ) {
        let old = services.insert(name.clone(), spec);
        self.0.push((name, old));
    }

    fn remove(&mut self, services: &mut BTreeMap<String, Arc<ServiceSpec>>, name: &str) {
        if let Some(old) = services.remove(name) {
            self.0.push((name.to_string(), Some(old)));
        }
    }

    /// Undoes everything logged after `mark`.
    fn rollback_to(&mut self, services: &mut BTreeMap<String, Arc<ServiceSpec>>, mark: usize) {
        while self.0.len() > mark {
            let Some((name, old)) = self.0.pop() else {
                return;
            };
            match old {
                Some(spec) => {
                    services.insert(name, spec);
                }
                None => {
                    services.remove(&name);
                }
            }
        }
    }
}

/// Applies one change to the services in place, logging it in `undo`, or
/// says why not (changing nothing: every check comes before the write).
fn stage(
    staged: &mut BTreeMap<String, Arc<ServiceSpec>>,
    undo: &mut Undo,
    drains: &mut HashMap<(String, SocketAddrV4), Instant>,
    req: &Request,
    now: Instant,
) -> Result<(), StoreError> {
    let find = |staged: &BTreeMap<String, Arc<ServiceSpec>>, name: &str| {
        staged
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::UnknownService(name.to_string()))
    };
    // Edits one endpoint of a copy of the service's spec.
    let edit = |staged: &mut BTreeMap<String, Arc<ServiceSpec>>,
                undo: &mut Undo,
                service: &str,
                endpoint: SocketAddrV4,
                f: &dyn Fn(&mut EndpointSpec)|
     -> Result<(), StoreError> {
        let mut spec = (*find(staged, service)?).clone();
        let e = spec
            .endpoints
            .iter_mut()
            .find(|e| same(e, endpoint))
            .ok_or_else(|| StoreError::UnknownEndpoint {
                service: service.to_string(),
                endpoint,
            })?;
        f(e);
        validate_endpoints(&spec.name, spec.table_size, &spec.endpoints)?;
        undo.insert(staged, spec.name.clone(), Arc::new(spec));
        Ok(())
    };
    match req {
        Request::ServiceAdd { service } => {
            validate_spec(service)?;
            if staged.contains_key(&service.name) {
                return Err(invalid(format!(
                    "service {:?} already exists; remove it first or change its endpoints",
                    service.name
                )));
            }
            let key = service.key();
            if let Some(other) = staged.values().find(|s| s.key() == key) {
                return Err(invalid(format!(
                    "service {:?}: {}:{}/{} is already used by service {:?}",
                    service.name, service.vip, service.port, service.protocol, other.name
                )));
            }
            undo.insert(staged, service.name.clone(), Arc::new(service.clone()));
        }
        Request::ServiceRemove { name } => {
            find(staged, name)?;
            undo.remove(staged, name);
        }
        Request::ServiceRecycle { service, recycle } => {
            let mut spec = (*find(staged, service)?).clone();
            spec.recycle = *recycle;
            crate::service::check_recycle(&spec)
                .map_err(|e| invalid(format!("service {service:?}: {e}")))?;
            undo.insert(staged, service.clone(), Arc::new(spec));
        }
        Request::EndpointsSet { service, endpoints } => {
            let mut spec = (*find(staged, service)?).clone();
            validate_endpoints(service, spec.table_size, endpoints)?;
            spec.endpoints = endpoints.clone();
            undo.insert(staged, service.clone(), Arc::new(spec));
        }
        Request::EndpointAdd { service, endpoint } => {
            let mut spec = (*find(staged, service)?).clone();
            spec.endpoints.push(*endpoint);
            validate_endpoints(service, spec.table_size, &spec.endpoints)?;
            undo.insert(staged, service.clone(), Arc::new(spec));
        }
        Request::EndpointRemove { service, endpoint } => {
            let mut spec = (*find(staged, service)?).clone();
            let before = spec.endpoints.len();
            spec.endpoints.retain(|e| !same(e, *endpoint));
            if spec.endpoints.len() == before {
                return Err(StoreError::UnknownEndpoint {
                    service: service.clone(),
                    endpoint: *endpoint,
                });
            }
            undo.insert(staged, service.clone(), Arc::new(spec));
        }
        Request::EndpointDrain {
            service,
            endpoint,
            deadline_ms,
        } => {
            edit(staged, undo, service, *endpoint, &|e| {
                e.state = EndpointState::Draining
            })?;
            let key = (service.clone(), *endpoint);
            match deadline_ms {
                Some(ms) => {
                    drains.insert(key, now + Duration::from_millis(*ms));
                }
                None => {
                    drains.remove(&key);
                }
            }
        }
        Request::EndpointWeight {
            service,
            endpoint,
            weight,
        } => edit(staged, undo, service, *endpoint, &|e| e.weight = *weight)?,
        Request::EndpointDown { service, endpoint } => {
            edit(staged, undo, service, *endpoint, &|e| {
                e.state = EndpointState::Down
            })?;
            drains.remove(&(service.clone(), *endpoint));
        }
        Request::EndpointUp { service, endpoint } => {
            edit(staged, undo, service, *endpoint, &|e| {
                e.state = EndpointState::Active
            })?;
            drains.remove(&(service.clone(), *endpoint));
        }
        Request::ServicesList
        | Request::Stats
        | Request::FlowsCount
        | Request::FlowsLookup { .. }
        | Request::FlowsDump { .. }
        | Request::Explain { .. }
        | Request::Digest { .. }
        | Request::Reload { .. }
        | Request::Generation
        | Request::Status
        | Request::Neighbors => return Err(StoreError::NotAChange("a query")),
        Request::VipAnnounce { .. } | Request::VipWithdraw { .. } | Request::VipList => {
            return Err(StoreError::NotAChange("an announcement request"))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::service::Protocol;

    fn spec(name: &str, port: u16) -> Arc<ServiceSpec> {
        let mut s = ServiceSpec::new(name, Ipv4Addr::new(198, 18, 0, 1), port, Protocol::Tcp);
        s.endpoints = vec![EndpointSpec::new(Ipv4Addr::new(10, 0, 0, 1), 80)];
        Arc::new(s)
    }

    #[test]
    fn staging_in_place_rolls_back_to_any_mark() {
        let mut services: BTreeMap<String, Arc<ServiceSpec>> = [spec("a", 80), spec("b", 81)]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let original = services.clone();
        let mut drains = HashMap::new();
        let mut undo = Undo::default();
        let now = Instant::now();
        let weight = Request::EndpointWeight {
            service: "a".into(),
            endpoint: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80),
            weight: 7,
        };
        stage(&mut services, &mut undo, &mut drains, &weight, now).unwrap();
        let after_weight = services.clone();
        let mark = undo.mark();
        let remove = Request::ServiceRemove { name: "b".into() };
        stage(&mut services, &mut undo, &mut drains, &remove, now).unwrap();
        let add = Request::ServiceAdd {
            service: (*spec("c", 82)).clone(),
        };
        stage(&mut services, &mut undo, &mut drains, &add, now).unwrap();
        // A refused request writes nothing.
        let clash = Request::ServiceAdd {
            service: (*spec("d", 82)).clone(),
        };
        let before = services.clone();
        assert!(stage(&mut services, &mut undo, &mut drains, &clash, now).is_err());
        assert_eq!(services, before);
        assert_eq!(services["a"].endpoints[0].weight, 7);
        assert!(!services.contains_key("b"));
        undo.rollback_to(&mut services, mark);
        assert_eq!(services, after_weight);
        undo.rollback_to(&mut services, 0);
        assert_eq!(services, original);
        assert!(Arc::ptr_eq(&services["a"], &original["a"]));
    }
}
