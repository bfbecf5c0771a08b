//! What probes say of each checked endpoint, kept beside the operator's
//! specs in the store, and the specs the data path gets once both are
//! combined.
//!
//! Combining is one rule: an endpoint the operator left `active` whose
//! probes say `down` is compiled as `down`; every other operator state
//! (draining, down, removed) stands whatever the probes say, so an
//! operator's decision always wins. `unknown` (no verdict yet) changes
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Instant;

use crate::service::{EndpointState, HealthState, ServiceSpec};

/// One checked endpoint's health and its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHealth {
    pub state: HealthState,
    /// When `state` was entered.
    pub since: Instant,
    /// Times it went down, and came back up.
    pub went_down: u64,
    pub came_up: u64,
    /// Why the probe that took it down failed (kept while it is down).
    pub reason: Option<String>,
}

impl EndpointHealth {
    fn new(now: Instant) -> EndpointHealth {
        EndpointHealth {
            state: HealthState::Unknown,
            since: now,
            went_down: 0,
            came_up: 0,
            reason: None,
        }
    }
}

#[derive(Debug, Default)]
struct ServiceHealth {
    endpoints: HashMap<SocketAddrV4, EndpointHealth>,
    /// Endpoints whose state is `Down`.
    down: usize,
    /// The combined spec must be computed again.
    dirty: bool,
}

/// The health of every checked endpoint, by service.
#[derive(Debug, Default)]
pub struct HealthBook {
    services: HashMap<String, ServiceHealth>,
    /// Services with at least one endpoint down: when there are none, the
    /// combined specs are the operator's, shared as they are.
    with_down: usize,
    /// Combined specs, with the operator spec they were made from.
    combined: HashMap<String, (Arc<ServiceSpec>, Arc<ServiceSpec>)>,
}

/// What a verdict did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub from: HealthState,
    pub to: HealthState,
}

impl Recorded {
    /// Whether the verdict changes what the data path gets.
    pub fn changes_datapath(&self) -> bool {
        (self.from == HealthState::Down) != (self.to == HealthState::Down)
    }
}

impl HealthBook {
    /// The specs to compile: the operator's, with probe verdicts folded in.
    /// A service without a down endpoint is the operator's spec itself
    /// (generations detect unchanged services by pointer); others are
    /// combined once and reused until their spec or health changes.
    pub fn combined(
        &mut self,
        services: &BTreeMap<String, Arc<ServiceSpec>>,
    ) -> Vec<Arc<ServiceSpec>> {
        if self.with_down == 0 {
            self.combined.clear();
            return services.values().cloned().collect();
        }
        let mut out = Vec::with_capacity(services.len());
        for (name, spec) in services {
            let Some(h) = self.services.get_mut(name).filter(|h| h.down > 0) else {
                out.push(spec.clone());
                continue;
            };
            if !h.dirty {
                if let Some((op, c)) = self.combined.get(name) {
                    if Arc::ptr_eq(op, spec) {
                        out.push(c.clone());
                        continue;
                    }
                }
            }
            let mut c = (**spec).clone();
            for e in &mut c.endpoints {
                let addr = SocketAddrV4::new(e.addr, e.port);
                if e.state == EndpointState::Active
                    && h.endpoints.get(&addr).map(|x| x.state) == Some(HealthState::Down)
                {
                    e.state = EndpointState::Down;
                }
            }
            let c = Arc::new(c);
            h.dirty = false;
            self.combined
                .insert(name.clone(), (spec.clone(), c.clone()));
            out.push(c);
        }
        out
    }

    /// One endpoint's health, if it is checked.
    pub fn get(&self, service: &str, endpoint: SocketAddrV4) -> Option<&EndpointHealth> {
        self.services.get(service)?.endpoints.get(&endpoint)
    }

    /// Every checked endpoint of a service.
    pub fn service(
        &self,
        service: &str,
    ) -> impl Iterator<Item = (&SocketAddrV4, &EndpointHealth)> + '_ {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|h| h.endpoints.iter())
    }

    /// Whether a service's endpoints are checked.
    pub fn is_tracked(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// Services whose endpoints are checked.
    pub fn tracked(&self) -> impl Iterator<Item = &str> + '_ {
        self.services.keys().map(String::as_str)
    }

    /// Checks `endpoints` of `service` from now on: endpoints no longer
    /// listed are forgotten, new ones start `unknown`; with `reset` (the
    /// check itself changed) every endpoint starts over. Whether the data
    /// path's view changed (a down endpoint forgotten or reset).
    pub fn track(
        &mut self,
        service: &str,
        endpoints: impl IntoIterator<Item = SocketAddrV4>,
        reset: bool,
        now: Instant,
    ) -> bool {
        let h = self.services.entry(service.to_string()).or_default();
        let had_down = h.down > 0;
        let mut old = if reset {
            HashMap::new()
        } else {
            std::mem::take(&mut h.endpoints)
        };
        if reset {
            h.endpoints.clear();
        }
        let mut next = HashMap::new();
        for e in endpoints {
            let v = old.remove(&e).unwrap_or_else(|| EndpointHealth::new(now));
            next.insert(e, v);
        }
        h.endpoints = next;
        let down = h
            .endpoints
            .values()
            .filter(|e| e.state == HealthState::Down)
            .count();
        let changed = down != h.down || (reset && had_down);
        h.down = down;
        h.dirty |= changed;
        self.recount();
        changed
    }

    /// Stops checking `service`; whether the data path's view changed.
    pub fn untrack(&mut self, service: &str) -> bool {
        self.combined.remove(service);
        let changed = self.services.remove(service).is_some_and(|h| h.down > 0);
        self.recount();
        changed
    }

    /// A verdict on a checked endpoint: what changed, if anything (`None`
    /// for an endpoint that is not checked, or a verdict it already has).
    pub fn record(
        &mut self,
        service: &str,
        endpoint: SocketAddrV4,
        to: HealthState,
        reason: Option<String>,
        now: Instant,
    ) -> Option<Recorded> {
        let h = self.services.get_mut(service)?;
        let e = h.endpoints.get_mut(&endpoint)?;
        if e.state == to {
            return None;
        }
        let r = Recorded { from: e.state, to };
        e.state = to;
        e.since = now;
        match to {
            HealthState::Down => {
                e.went_down += 1;
                e.reason = reason;
                h.down += 1;
            }
            HealthState::Up => {
                if r.from == HealthState::Down {
                    e.came_up += 1;
                }
                e.reason = None;
            }
            HealthState::Unknown => e.reason = None,
        }
        if r.from == HealthState::Down {
            h.down -= 1;
        }
        if r.changes_datapath() {
            h.dirty = true;
            self.recount();
        }
        Some(r)
    }

    fn recount(&mut self) {
        self.with_down = self.services.values().filter(|h| h.down > 0).count();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::service::{EndpointSpec, Protocol};

    fn ep(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 200, 2, last), 8080)
    }

    fn services(states: &[EndpointState]) -> BTreeMap<String, Arc<ServiceSpec>> {
        let mut s = ServiceSpec::new("web", Ipv4Addr::new(198, 18, 0, 100), 80, Protocol::Tcp);
        s.endpoints = states
            .iter()
            .enumerate()
            .map(|(i, &st)| EndpointSpec::new(*ep(11 + i as u8).ip(), 8080).state(st))
            .collect();
        [("web".to_string(), Arc::new(s))].into_iter().collect()
    }

    fn states(specs: &[Arc<ServiceSpec>]) -> Vec<EndpointState> {
        specs[0].endpoints.iter().map(|e| e.state).collect()
    }

    #[test]
    fn operator_state_wins_and_probes_only_take_active_endpoints_down() {
        use EndpointState::*;
        let now = Instant::now();
        let ops = services(&[Active, Draining, Down, Active]);
        let mut book = HealthBook::default();
        assert!(!book.track("web", (11..=14).map(ep), false, now));
        // Nothing is down: the operator's specs, the very same Arcs.
        let c = book.combined(&ops);
        assert!(Arc::ptr_eq(&c[0], &ops["web"]));
        for i in 11..=14 {
            let r = book.record("web", ep(i), HealthState::Down, Some("refused".into()), now);
            assert!(r.unwrap().changes_datapath());
        }
        // Active -> down; draining and down stay what the operator said.
        assert_eq!(states(&book.combined(&ops)), [Down, Draining, Down, Down]);
        // The combined spec is reused until something changes.
        let a = book.combined(&ops);
        assert!(Arc::ptr_eq(&a[0], &book.combined(&ops)[0]));
        // Probes saying up never override an operator's down.
        for i in 11..=14 {
            book.record("web", ep(i), HealthState::Up, None, now);
        }
        assert_eq!(
            states(&book.combined(&ops)),
            [Active, Draining, Down, Active]
        );
        assert!(Arc::ptr_eq(&book.combined(&ops)[0], &ops["web"]));
        assert_eq!(book.get("web", ep(11)).unwrap().went_down, 1);
        assert_eq!(book.get("web", ep(11)).unwrap().came_up, 1);
    }

    #[test]
    fn tracking_forgets_removed_endpoints_and_a_reset_starts_over() {
        use EndpointState::*;
        let now = Instant::now();
        let ops = services(&[Active, Active]);
        let mut book = HealthBook::default();
        book.track("web", [ep(11), ep(12)], false, now);
        book.record("web", ep(11), HealthState::Down, None, now);
        book.record("web", ep(12), HealthState::Up, None, now);
        assert_eq!(states(&book.combined(&ops)), [Down, Active]);
        // Same endpoints, same check: verdicts stay.
        assert!(!book.track("web", [ep(11), ep(12)], false, now));
        assert_eq!(book.get("web", ep(12)).unwrap().state, HealthState::Up);
        // The down one leaves the service: its verdict goes with it.
        assert!(book.track("web", [ep(12)], false, now));
        assert_eq!(states(&book.combined(&ops)), [Active, Active]);
        assert!(book.get("web", ep(11)).is_none());
        // A changed check starts every endpoint over.
        book.track("web", [ep(11), ep(12)], false, now);
        book.record("web", ep(11), HealthState::Down, None, now);
        assert!(book.track("web", [ep(11), ep(12)], true, now));
        assert_eq!(book.get("web", ep(11)).unwrap().state, HealthState::Unknown);
        assert_eq!(states(&book.combined(&ops)), [Active, Active]);
        book.record("web", ep(12), HealthState::Down, None, now);
        assert!(book.untrack("web"));
        assert!(!book.is_tracked("web"));
        assert_eq!(states(&book.combined(&ops)), [Active, Active]);
        // Verdicts on endpoints nobody checks are ignored.
        assert_eq!(
            book.record("web", ep(12), HealthState::Down, None, now),
            None
        );
    }
}
