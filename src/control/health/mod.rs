//! Active health checks of endpoints, from the control plane.
//!
//! - [`book`]: the verdicts, kept in the store and folded into the specs
//!   generations are compiled from (the operator's state wins);
//! - [`prober`]: the thread that probes (kernel TCP sockets, one epoll
//!   loop, bounded in flight);
//! - [`state`]: rise and fall;
//! - [`HealthMonitor`] (here): the control thread's side, which tells the
//!   prober what to check as services change and turns its verdicts into
//!   new generations, logged and counted.
//!
//! The prober runs on its own thread so probe I/O never delays a control
//! change: the control thread only sees changed verdicts.

pub mod book;
pub mod prober;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

pub use book::{EndpointHealth, HealthBook};
pub use prober::{Command, Prober, ProberStats, Verdict};

use super::store::{Store, Touched};
use crate::service::{HealthState, ServiceSpec};

/// Probes in flight at most, before the descriptor limit lowers it.
pub const MAX_IN_FLIGHT: usize = 16_384;

/// Totals over every endpoint, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthTotals {
    pub went_down: u64,
    pub came_up: u64,
}

/// The control thread's side of health checking.
pub struct HealthMonitor {
    prober: Option<Prober>,
    notify: Arc<Waker>,
    verdicts_tx: Sender<Verdict>,
    verdicts: Receiver<Verdict>,
    /// What the prober was last told per service: the operator spec and
    /// the epoch its verdicts carry.
    synced: HashMap<String, (Arc<ServiceSpec>, u64)>,
    next_epoch: u64,
    max_in_flight: usize,
    totals: HealthTotals,
}

/// What a step of the monitor did.
#[derive(Debug, Default)]
pub struct Step {
    /// The data path's view changed: a generation must carry it.
    pub publish: bool,
    /// Services whose endpoints' health changed (announcements depend on
    /// it).
    pub services: Vec<String>,
}

impl HealthMonitor {
    /// A monitor that wakes the control loop through `notify` when
    /// verdicts arrive. The prober thread starts with the first check.
    pub fn new(notify: Arc<Waker>) -> HealthMonitor {
        let (tx, rx) = crossbeam_channel::unbounded();
        HealthMonitor {
            prober: None,
            notify,
            verdicts_tx: tx,
            verdicts: rx,
            synced: HashMap::new(),
            next_epoch: 1,
            max_in_flight: MAX_IN_FLIGHT,
            totals: HealthTotals::default(),
        }
    }

    /// The prober's counters, once it runs.
    pub fn prober_stats(&self) -> Option<&ProberStats> {
        self.prober.as_ref().map(Prober::stats)
    }

    pub fn totals(&self) -> HealthTotals {
        self.totals
    }

    /// Brings the prober and the health book in line with the services
    /// the store changed (`touched`, from [`Store::take_touched`]).
    pub fn sync(&mut self, store: &mut Store, touched: &Touched, now: Instant) -> Step {
        let mut step = Step::default();
        let names: Vec<String> = match touched {
            Touched::None => return step,
            Touched::Some(names) => names.clone(),
            Touched::All => store
                .services()
                .map(|s| s.name.clone())
                .chain(self.synced.keys().cloned())
                .collect(),
        };
        for name in names {
            let spec = store.service(&name).cloned();
            let old = self.synced.get(&name);
            if let (Some(s), Some((o, _))) = (&spec, old) {
                if Arc::ptr_eq(s, o) {
                    continue;
                }
            }
            let old_check = old.and_then(|(o, _)| o.health.clone());
            let new_check = spec.as_ref().and_then(|s| s.health.clone());
            let same_check = old_check == new_check;
            let same_endpoints = match (old, &spec) {
                (Some((o, _)), Some(s)) => same_addrs(o, s),
                _ => false,
            };
            match (&spec, new_check) {
                (Some(s), Some(check)) => {
                    if same_check && same_endpoints {
                        // Weights or states changed: nothing to probe anew.
                        let epoch = old.map_or(0, |(_, e)| *e);
                        self.synced.insert(name, (s.clone(), epoch));
                        continue;
                    }
                    let epoch = self.next_epoch;
                    self.next_epoch += 1;
                    let endpoints: Vec<SocketAddrV4> = addrs(s).collect();
                    step.publish |= store.health_mut().track(
                        &name,
                        endpoints.iter().copied(),
                        !same_check,
                        now,
                    );
                    if self.ensure_prober() {
                        self.send(Command::Set {
                            service: name.as_str().into(),
                            epoch,
                            check: Some(check),
                            endpoints,
                        });
                    }
                    step.services.push(name.clone());
                    self.synced.insert(name, (s.clone(), epoch));
                }
                // No check (any more), or no service (any more).
                (spec, _) => {
                    if old_check.is_some() {
                        step.publish |= store.health_mut().untrack(&name);
                        self.send(Command::Set {
                            service: name.as_str().into(),
                            epoch: 0,
                            check: None,
                            endpoints: Vec::new(),
                        });
                        step.services.push(name.clone());
                    }
                    match spec {
                        Some(s) => {
                            self.synced.insert(name, (s.clone(), 0));
                        }
                        None => {
                            self.synced.remove(&name);
                        }
                    }
                }
            }
        }
        step
    }

    /// Takes the verdicts that arrived: each change is logged and counted,
    /// and recorded in the store's health book.
    pub fn poll(&mut self, store: &mut Store, now: Instant) -> Step {
        let mut step = Step::default();
        while let Ok(v) = self.verdicts.try_recv() {
            let current = self
                .synced
                .get(&*v.service)
                .is_some_and(|(_, e)| *e == v.epoch);
            if !current {
                // About an endpoint set the service no longer has.
                continue;
            }
            let Some(r) =
                store
                    .health_mut()
                    .record(&v.service, v.endpoint, v.state, v.reason.clone(), now)
            else {
                continue;
            };
            match v.state {
                HealthState::Down => {
                    self.totals.went_down += 1;
                    tracing::warn!(
                        service = %v.service,
                        endpoint = %v.endpoint,
                        from = %r.from,
                        reason = v.reason.as_deref().unwrap_or(""),
                        "health: endpoint down"
                    );
                }
                HealthState::Up if r.from == HealthState::Down => {
                    self.totals.came_up += 1;
                    tracing::info!(service = %v.service, endpoint = %v.endpoint, "health: endpoint up again");
                }
                // A first verdict is no news (100,000 of them at start).
                HealthState::Up => {
                    tracing::debug!(service = %v.service, endpoint = %v.endpoint, "health: endpoint up");
                }
                HealthState::Unknown => {}
            }
            step.publish |= r.changes_datapath();
            if step.services.last().map(String::as_str) != Some(&*v.service) {
                step.services.push(v.service.to_string());
            }
        }
        step.services.dedup();
        step
    }

    fn ensure_prober(&mut self) -> bool {
        if self.prober.is_none() {
            match Prober::spawn(
                self.notify.clone(),
                self.verdicts_tx.clone(),
                self.max_in_flight,
            ) {
                Ok(p) => self.prober = Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "the health prober could not start; endpoints stay unchecked");
                    return false;
                }
            }
        }
        true
    }

    fn send(&self, cmd: Command) {
        if let Some(p) = &self.prober {
            p.send(cmd);
        }
    }

    /// Probes started so far (ok and failed).
    pub fn probes(&self) -> (u64, u64) {
        self.prober_stats().map_or((0, 0), |s| {
            (
                s.probes_ok.load(Ordering::Relaxed),
                s.probes_failed.load(Ordering::Relaxed),
            )
        })
    }
}

fn addrs(s: &ServiceSpec) -> impl Iterator<Item = SocketAddrV4> + '_ {
    s.endpoints
        .iter()
        .map(|e| SocketAddrV4::new(e.addr, e.port))
}

fn same_addrs(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    a.endpoints.len() == b.endpoints.len() && addrs(a).zip(addrs(b)).all(|(x, y)| x == y)
}

/// How `stats` reports an endpoint's health (`None` when not checked).
pub fn view(
    book: &HealthBook,
    service: &str,
    e: &crate::service::EndpointSpec,
    now: Instant,
) -> Option<super::protocol::EndpointHealthView> {
    let h = book.get(service, SocketAddrV4::new(e.addr, e.port))?;
    Some(super::protocol::EndpointHealthView {
        state: h.state,
        for_s: now.saturating_duration_since(h.since).as_secs_f64(),
        went_down: h.went_down,
        came_up: h.came_up,
        reason: h.reason.clone(),
    })
}
