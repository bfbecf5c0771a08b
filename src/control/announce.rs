//! Which VIPs this instance asks the routers to send it: the decision the
//! control thread owns (BIRD only carries it out).
//!
//! A VIP is wanted while sluice forwards for it and one of its endpoints
//! is healthy, unless the operator withdrew it or sluice is stopping:
//! - an endpoint is healthy when the operator lets it carry flows (active
//!   or draining: a VIP whose endpoints all drain keeps its established
//!   flows) and, if its service is health-checked, its probes say `up`;
//! - a VIP is *first* announced only once none of its checked endpoints
//!   awaits its first verdict, so a starting instance joins with the same
//!   view of the endpoints (and the same Maglev tables) as the running
//!   ones, and connections the routers move to it keep their backends;
//!   once announced it stays so while any endpoint is healthy;
//! - with several services on one VIP (ports), any healthy service keeps
//!   the VIP: BGP announces addresses, not ports.
//!
//! Work is per service changed, never a pass over every endpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::health::HealthBook;
use super::protocol::VipView;
use super::store::{Store, Touched};
use crate::service::{HealthState, ServiceSpec};

/// A service's standing, as announcements need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Standing {
    vip: Option<Ipv4Addr>,
    healthy: u32,
    /// Checked endpoints with no verdict yet.
    unknown: u32,
    endpoints: u32,
}

impl Standing {
    fn of(spec: &ServiceSpec, book: &HealthBook) -> Standing {
        let mut s = Standing {
            vip: Some(spec.vip),
            endpoints: spec.endpoints.len() as u32,
            ..Default::default()
        };
        let checked = spec.health.is_some();
        for e in &spec.endpoints {
            if !e.state.carries_flows() {
                continue;
            }
            let h = if checked {
                book.get(&spec.name, std::net::SocketAddrV4::new(e.addr, e.port))
                    .map_or(HealthState::Unknown, |h| h.state)
            } else {
                HealthState::Up
            };
            match h {
                HealthState::Up => s.healthy += 1,
                HealthState::Unknown => s.unknown += 1,
                HealthState::Down => {}
            }
        }
        s
    }

    /// May keep an announced VIP.
    fn keeps(&self) -> bool {
        self.healthy > 0
    }

    /// May announce a VIP that is not announced yet.
    fn starts(&self) -> bool {
        self.healthy > 0 && self.unknown == 0
    }
}

/// Why a VIP is (not) announced, with the wish itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct VipState {
    services: BTreeMap<String, Standing>,
}

/// The announcement decision, kept up to date service by service.
#[derive(Debug, Default)]
pub struct Announcer {
    /// Every service's standing.
    services: HashMap<String, Standing>,
    vips: BTreeMap<Ipv4Addr, VipState>,
    /// VIPs the operator withdrew.
    held: BTreeSet<Ipv4Addr>,
    /// Every VIP withdrawn by the operator (new ones included).
    held_all: bool,
    stopping: bool,
    /// The data path can forward: the next hops every packet needs (the
    /// gateway back to clients, the static routes' next hops) are
    /// resolved. Until then the routers must not send traffic here.
    ready: bool,
    wanted: BTreeSet<Ipv4Addr>,
    seq: u64,
}

/// Why an operator's announce/withdraw was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnounceError {
    #[error("no service has VIP {0}; `services list` shows the VIPs")]
    UnknownVip(Ipv4Addr),
    #[error("give a VIP, or all")]
    NoVip,
}

impl Announcer {
    /// Brings the standings of the services `touched` names up to date
    /// (all of them for `Touched::All`).
    pub fn update(&mut self, store: &Store, touched: &Touched) {
        match touched {
            Touched::None => {}
            Touched::Some(names) => {
                for n in names {
                    self.update_one(store, n);
                }
            }
            Touched::All => {
                let names: BTreeSet<String> = store
                    .services()
                    .map(|s| s.name.clone())
                    .chain(self.services.keys().cloned())
                    .collect();
                for n in &names {
                    self.update_one(store, n);
                }
            }
        }
    }

    /// Brings one service's standing up to date (its spec or health
    /// changed, or it is gone).
    pub fn update_one(&mut self, store: &Store, name: &str) {
        let new = store.service(name).map(|s| Standing::of(s, store.health()));
        let old = match new {
            Some(n) => self.services.insert(name.to_string(), n),
            None => self.services.remove(name),
        };
        if let Some(vip) = old.and_then(|o| o.vip) {
            if new.and_then(|n| n.vip) != Some(vip) {
                if let Some(v) = self.vips.get_mut(&vip) {
                    v.services.remove(name);
                    if v.services.is_empty() {
                        self.vips.remove(&vip);
                    }
                }
            }
        }
        if let Some(n) = new {
            if let Some(vip) = n.vip {
                self.vips
                    .entry(vip)
                    .or_default()
                    .services
                    .insert(name.to_string(), n);
            }
        }
    }

    fn wants(&self, vip: Ipv4Addr, v: &VipState) -> bool {
        if !self.ready || self.stopping || self.held_all || self.held.contains(&vip) {
            return false;
        }
        if self.wanted.contains(&vip) {
            v.services.values().any(Standing::keeps)
        } else {
            v.services.values().any(Standing::starts)
        }
    }

    /// The VIPs to announce, with a new sequence number, when they changed
    /// since the last call.
    pub fn desired(&mut self) -> Option<(u64, BTreeSet<Ipv4Addr>)> {
        let next: BTreeSet<Ipv4Addr> = self
            .vips
            .iter()
            .filter(|(vip, v)| self.wants(**vip, v))
            .map(|(vip, _)| *vip)
            .collect();
        if next == self.wanted && self.seq > 0 {
            return None;
        }
        self.wanted = next;
        self.seq += 1;
        Some((self.seq, self.wanted.clone()))
    }

    /// The VIPs wanted as of the last [`Announcer::desired`].
    pub fn wanted(&self) -> &BTreeSet<Ipv4Addr> {
        &self.wanted
    }

    /// The operator withdraws `vip` (or every VIP): it stays withdrawn
    /// until [`Announcer::announce`].
    pub fn withdraw(&mut self, vip: Option<Ipv4Addr>, all: bool) -> Result<(), AnnounceError> {
        match (vip, all) {
            (_, true) => {
                self.held_all = true;
                Ok(())
            }
            (Some(v), false) if self.vips.contains_key(&v) => {
                self.held.insert(v);
                Ok(())
            }
            (Some(v), false) => Err(AnnounceError::UnknownVip(v)),
            (None, false) => Err(AnnounceError::NoVip),
        }
    }

    /// Ends an operator's withdrawal of `vip` (or of every VIP).
    pub fn announce(&mut self, vip: Option<Ipv4Addr>, all: bool) -> Result<(), AnnounceError> {
        match (vip, all) {
            (_, true) => {
                self.held_all = false;
                self.held.clear();
                Ok(())
            }
            (Some(v), false) if self.vips.contains_key(&v) => {
                if self.held_all {
                    // The others stay withdrawn.
                    self.held_all = false;
                    self.held = self.vips.keys().copied().filter(|x| *x != v).collect();
                }
                self.held.remove(&v);
                Ok(())
            }
            (Some(v), false) => Err(AnnounceError::UnknownVip(v)),
            (None, false) => Err(AnnounceError::NoVip),
        }
    }

    /// Whether the data path can forward (see `ready`).
    pub fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// A planned stop: nothing is wanted any more.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Each VIP, wanted or not and why; `announced` is what the routing
    /// daemon applied.
    pub fn report(&self, announced: &BTreeSet<Ipv4Addr>) -> Vec<VipView> {
        self.vips
            .iter()
            .map(|(vip, v)| {
                let healthy: u32 = v.services.values().map(|s| s.healthy).sum();
                let unknown: u32 = v.services.values().map(|s| s.unknown).sum();
                let total: u32 = v.services.values().map(|s| s.endpoints).sum();
                let wanted = self.wanted.contains(vip);
                let reason = if self.stopping {
                    "sluice is stopping: withdrawn before the data path stops".to_string()
                } else if !self.ready {
                    "waiting for the data path's next hops (gateway, routes) to resolve".to_string()
                } else if self.held_all || self.held.contains(vip) {
                    "withdrawn by the operator (`vip announce` ends it)".to_string()
                } else if wanted {
                    format!("{healthy} of {total} endpoints healthy")
                } else if healthy > 0 && unknown > 0 {
                    format!("waiting for the first health checks of {unknown} endpoints")
                } else {
                    format!("no healthy endpoint ({total} endpoints)")
                };
                VipView {
                    vip: *vip,
                    wanted,
                    announced: announced.contains(vip),
                    reason,
                    services: v.services.keys().cloned().collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::service::{CheckKind, EndpointSpec, EndpointState, HealthCheck, Protocol, Topology};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn ep(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 200, 2, last), 8080)
    }

    fn store(checked: bool, states: &[EndpointState]) -> Store {
        let mut s = ServiceSpec::new("web", VIP, 80, Protocol::Tcp);
        s.endpoints = states
            .iter()
            .enumerate()
            .map(|(i, &st)| EndpointSpec::new(*ep(11 + i as u8).ip(), 8080).state(st))
            .collect();
        if checked {
            s.health = Some(HealthCheck::new(CheckKind::Tcp));
        }
        let mut st = Store::new(Topology::default(), vec![Arc::new(s)]).unwrap();
        if checked {
            let eps: Vec<SocketAddrV4> = (0..states.len()).map(|i| ep(11 + i as u8)).collect();
            st.health_mut().track("web", eps, false, Instant::now());
        }
        st
    }

    fn verdict(st: &mut Store, a: &mut Announcer, last: u8, h: HealthState) {
        st.health_mut()
            .record("web", ep(last), h, None, Instant::now());
        a.update_one(st, "web");
    }

    #[test]
    fn an_unchecked_service_is_announced_while_an_endpoint_carries_flows() {
        use EndpointState::*;
        let st = store(false, &[Active, Draining]);
        let mut a = Announcer::default();
        a.set_ready(true);
        a.update(&st, &Touched::All);
        assert_eq!(a.desired(), Some((1, [VIP].into())));
        assert_eq!(a.desired(), None, "nothing changed");
        // Every endpoint down or removed by the operator: withdrawn.
        let st = store(false, &[Down, Removed]);
        a.update(&st, &Touched::All);
        assert_eq!(a.desired(), Some((2, BTreeSet::new())));
    }

    #[test]
    fn checked_endpoints_decide_and_the_first_announcement_waits_for_every_verdict() {
        use EndpointState::*;
        let mut st = store(true, &[Active, Active]);
        let mut a = Announcer::default();
        a.set_ready(true);
        a.update(&st, &Touched::All);
        assert_eq!(a.desired(), Some((1, BTreeSet::new())), "no verdict yet");
        verdict(&mut st, &mut a, 11, HealthState::Up);
        assert_eq!(a.desired(), None, "one endpoint still unknown");
        assert!(a.report(&BTreeSet::new())[0]
            .reason
            .contains("first health checks"));
        verdict(&mut st, &mut a, 12, HealthState::Up);
        assert_eq!(a.desired(), Some((2, [VIP].into())));
        // Announced: one healthy endpoint keeps it, whatever the others.
        verdict(&mut st, &mut a, 12, HealthState::Down);
        assert_eq!(a.desired(), None);
        verdict(&mut st, &mut a, 11, HealthState::Down);
        assert_eq!(
            a.desired(),
            Some((3, BTreeSet::new())),
            "every endpoint down"
        );
        assert!(a.report(&BTreeSet::new())[0]
            .reason
            .contains("no healthy endpoint"));
        verdict(&mut st, &mut a, 11, HealthState::Up);
        assert_eq!(a.desired(), Some((4, [VIP].into())), "back");
    }

    #[test]
    fn nothing_is_announced_before_the_data_path_can_forward() {
        let st = store(false, &[EndpointState::Active]);
        let mut a = Announcer::default();
        a.update(&st, &Touched::All);
        assert_eq!(a.desired(), Some((1, BTreeSet::new())));
        assert!(a.report(&BTreeSet::new())[0].reason.contains("next hops"));
        a.set_ready(true);
        assert_eq!(a.desired(), Some((2, [VIP].into())));
    }

    #[test]
    fn the_operator_and_a_planned_stop_override_health() {
        use EndpointState::*;
        let st = store(false, &[Active]);
        let mut a = Announcer::default();
        a.set_ready(true);
        a.update(&st, &Touched::All);
        a.desired();
        let other = Ipv4Addr::new(198, 18, 0, 9);
        assert_eq!(
            a.withdraw(Some(other), false),
            Err(AnnounceError::UnknownVip(other))
        );
        a.withdraw(Some(VIP), false).unwrap();
        assert_eq!(a.desired(), Some((2, BTreeSet::new())));
        assert!(a.report(&BTreeSet::new())[0].reason.contains("operator"));
        a.announce(Some(VIP), false).unwrap();
        assert_eq!(a.desired(), Some((3, [VIP].into())));
        a.withdraw(None, true).unwrap();
        assert_eq!(a.desired(), Some((4, BTreeSet::new())));
        a.announce(None, true).unwrap();
        assert_eq!(a.desired(), Some((5, [VIP].into())));
        a.stop();
        assert_eq!(a.desired(), Some((6, BTreeSet::new())));
        a.announce(None, true).unwrap();
        assert_eq!(a.desired(), None, "stopping wins over the operator");
    }
}
