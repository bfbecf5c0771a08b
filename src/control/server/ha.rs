//! The control loop's high-availability side: health checks folded into
//! generations, VIP announcements over BGP, the planned stop that
//! withdraws before the data path stops, the `vip_*` requests and their
//! metrics. Kept apart from the loop itself, which calls in at four
//! points (each iteration, a stop, a `vip_*` request, /metrics).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use super::{Loop, ServerError};
use crate::control::announce::Announcer;
use crate::control::bgp::{BgpSettings, Speaker};
use crate::control::health::HealthMonitor;
use crate::control::protocol::{ErrorBody, ErrorKind, Outcome, Request, VipReport};
use crate::control::store::Store;
use crate::service::HealthState;

/// How long a `vip_*` change or the stop's withdrawal may wait for BIRD
/// to apply it.
const APPLY_LIMIT: Duration = Duration::from_secs(2);

/// What the loop needs beyond its socket: BGP, when configured.
#[derive(Clone, Debug, Default)]
pub struct HaOptions {
    pub bgp: Option<BgpSettings>,
}

struct Bgp {
    /// The settings BIRD runs with (a reload does not change them).
    settings: BgpSettings,
    announcer: Announcer,
    speaker: Speaker,
    withdraw_wait: Duration,
    /// Generation whose next hops were last looked at (until ready).
    checked: u64,
    started: Instant,
}

/// Where a planned stop is.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// VIPs withdrawal sent to BIRD; waiting for it to apply it.
    Withdrawing {
        seq: u64,
        since: Instant,
        packets: u64,
    },
    /// Withdrawn; the routers move traffic away meanwhile.
    Waiting {
        until: Instant,
        since: Instant,
        packets: u64,
    },
    Done,
}

pub(super) struct Ha {
    health: HealthMonitor,
    bgp: Option<Bgp>,
    stop: Option<Stop>,
}

impl Ha {
    /// Starts what `opts` asks for (BIRD, when there is a `[bgp]`).
    pub(super) fn start(opts: HaOptions, notify: Arc<Waker>) -> Result<Ha, ServerError> {
        let bgp = match opts.bgp {
            Some(s) => {
                let withdraw_wait = s.withdraw_wait;
                let speaker =
                    Speaker::start(s.clone()).map_err(|e| ServerError::Bgp(e.to_string()))?;
                Some(Bgp {
                    settings: s,
                    announcer: Announcer::default(),
                    speaker,
                    withdraw_wait,
                    checked: 0,
                    started: Instant::now(),
                })
            }
            None => None,
        };
        Ok(Ha {
            health: HealthMonitor::new(notify),
            bgp,
            stop: None,
        })
    }

    /// Stops BIRD, last of all.
    pub(super) fn shutdown(&mut self) {
        if let Some(b) = self.bgp.take() {
            b.speaker.stop();
        }
    }
}

fn packets<B: Send + 'static>(dp: &crate::control::Dataplane<B>) -> u64 {
    dp.counters().iter().map(|c| c.forwarded + c.replies).sum()
}

impl<B: Send + 'static> Loop<B> {
    /// Each loop iteration: services changed by the operator and verdicts
    /// from the prober go to the health book (a generation carries those
    /// that change the data path), then to the announcement decision.
    pub(super) fn ha_step(&mut self) {
        let now = Instant::now();
        let touched = self.store.take_touched();
        let synced = self.ha.health.sync(&mut self.store, &touched, now);
        let polled = self.ha.health.poll(&mut self.store, now);
        if synced.publish || polled.publish {
            match self.store.publish_health(&mut self.dp) {
                Ok(a) => tracing::info!(
                    generation = a.generation,
                    "health verdicts in effect on every worker"
                ),
                Err(e) => tracing::warn!(error = %e, "publishing health verdicts failed"),
            }
        }
        let Some(b) = self.ha.bgp.as_mut() else {
            return;
        };
        if !b.announcer.is_ready() && b.checked != self.dp.current().number {
            // Announcing before sluice can send a reply to the gateway or a
            // request to a route's next hop would black-hole the first
            // connections the routers send (ARP resolves them within
            // milliseconds of start; BGP takes longer, but not always).
            let g = self.dp.current();
            b.checked = g.number;
            let topo = self.store.topology();
            let unresolved: Vec<std::net::Ipv4Addr> = topo
                .gateway
                .iter()
                .chain(topo.routes.iter().map(|r| &r.via))
                .copied()
                .filter(|h| g.route(u32::from(*h)).is_err())
                .collect();
            if unresolved.is_empty() {
                tracing::info!(
                    after_ms = b.started.elapsed().as_millis() as u64,
                    "data path ready: gateway and route next hops resolved; VIPs may be announced"
                );
                b.announcer.set_ready(true);
            }
        }
        b.announcer.update(&self.store, &touched);
        for s in synced.services.iter().chain(&polled.services) {
            b.announcer.update_one(&self.store, s);
        }
        if let Some((seq, vips)) = b.announcer.desired() {
            let prefixes = !vips.is_empty();
            b.speaker.want(seq, vips, prefixes);
        }
    }

    /// Called while a stop is requested: whether the loop must keep
    /// running. With BGP, a planned stop first withdraws every VIP (and
    /// the return prefixes), waits for BIRD to send that, keeps forwarding
    /// for `withdraw_wait` while the routers move traffic to the other
    /// instances, and only then lets the data path stop.
    pub(super) fn ha_stopping(&mut self) -> bool {
        let now = Instant::now();
        let pk = packets(&self.dp);
        let Some(b) = self.ha.bgp.as_mut() else {
            return false;
        };
        match self.ha.stop {
            None => {
                b.announcer.stop();
                let seq = b.announcer.desired().map_or(u64::MAX, |(seq, _)| seq);
                b.speaker.want(seq, BTreeSet::new(), false);
                tracing::info!("planned stop: withdrawing every VIP from the routers before the data path stops");
                self.ha.stop = Some(Stop::Withdrawing {
                    seq,
                    since: now,
                    packets: pk,
                });
                true
            }
            Some(Stop::Withdrawing {
                seq,
                since,
                packets,
            }) => {
                let applied = b.speaker.status().applied;
                let done = seq == u64::MAX || applied >= seq;
                if done || now.duration_since(since) > APPLY_LIMIT {
                    if !done {
                        tracing::warn!("planned stop: BIRD did not confirm the withdrawal in time; waiting anyway");
                    }
                    tracing::info!(
                        wait_ms = b.withdraw_wait.as_millis() as u64,
                        "planned stop: VIPs withdrawn; forwarding on while the routers converge"
                    );
                    self.ha.stop = Some(Stop::Waiting {
                        until: now + b.withdraw_wait,
                        since,
                        packets,
                    });
                }
                true
            }
            Some(Stop::Waiting {
                until,
                since,
                packets,
            }) => {
                if now < until {
                    return true;
                }
                tracing::info!(
                    after_withdrawal = pk.saturating_sub(packets),
                    waited_ms = now.duration_since(since).as_millis() as u64,
                    "planned stop: packets forwarded since the withdrawal; stopping the data path"
                );
                self.ha.stop = Some(Stop::Done);
                false
            }
            Some(Stop::Done) => false,
        }
    }

    /// After a reload: services (and so VIPs) follow the new file at once,
    /// but `[bgp]` itself (peers, AS, next hops, timers) is what BIRD was
    /// started with; a changed `[bgp]` is said so in the log, not applied
    /// half-way.
    pub(super) fn ha_reloaded(&self, path: &std::path::Path) {
        let running = self.ha.bgp.as_ref().map(|b| &b.settings);
        let Ok(config) = crate::control::Config::load(path) else {
            return;
        };
        let wanted = config.bgp.as_ref().and_then(|b| b.settings(&config).ok());
        if wanted.as_ref() != running {
            tracing::warn!(
                path = %path.display(),
                "bgp: the reloaded file changes [bgp]; services were reloaded, but [bgp] takes effect at the next start"
            );
        }
    }

    /// `vip_list`, `vip_announce`, `vip_withdraw`.
    pub(super) fn ha_query(&mut self, req: &Request) -> Result<Outcome, ErrorBody> {
        let Some(b) = self.ha.bgp.as_mut() else {
            return match req {
                Request::VipList => Ok(Outcome::Vips(VipReport {
                    bgp: false,
                    daemon: "none".into(),
                    vips: Vec::new(),
                    peers: Vec::new(),
                })),
                _ => Err(ErrorBody::new(
                    ErrorKind::Invalid,
                    "sluice announces no VIP (no [bgp] section); add one to the configuration and restart",
                )),
            };
        };
        let changed = match req {
            Request::VipAnnounce { vip, all } => Some(b.announcer.announce(*vip, *all)),
            Request::VipWithdraw { vip, all } => Some(b.announcer.withdraw(*vip, *all)),
            _ => None,
        };
        if let Some(r) = changed {
            r.map_err(|e| ErrorBody::new(ErrorKind::Invalid, e.to_string()))?;
            if let Some((seq, vips)) = b.announcer.desired() {
                let prefixes = !vips.is_empty();
                b.speaker.want(seq, vips, prefixes);
                // Answered once BIRD applied it (bounded: BIRD takes
                // milliseconds; a stuck one must not hold the loop).
                let start = Instant::now();
                while b.speaker.status().applied < seq && start.elapsed() < APPLY_LIMIT {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let what = if matches!(req, Request::VipWithdraw { .. }) {
                    "withdrawn"
                } else {
                    "announced"
                };
                tracing::info!(?req, "operator: VIP {what}");
            }
        }
        let st = b.speaker.status();
        Ok(Outcome::Vips(VipReport {
            bgp: true,
            daemon: st.daemon.clone(),
            vips: b.announcer.report(&st.announced),
            peers: st.peers,
        }))
    }
}

/// The health and announcement families of /metrics.
pub(super) fn metrics(ha: &Ha, store: &Store) -> String {
    let mut o = String::new();
    let label = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut states = String::new();
    let mut changes = String::new();
    for spec in store.services().filter(|s| s.health.is_some()) {
        let svc = label(&spec.name);
        for (ep, h) in store.health().service(&spec.name) {
            let l = format!("service=\"{svc}\",endpoint=\"{ep}\"");
            for s in [HealthState::Up, HealthState::Down, HealthState::Unknown] {
                let _ = writeln!(
                    states,
                    "sluice_endpoint_health{{{l},state=\"{s}\"}} {}",
                    u8::from(h.state == s)
                );
            }
            let _ = writeln!(
                changes,
                "sluice_endpoint_health_changes_total{{{l},to=\"down\"}} {}",
                h.went_down
            );
            let _ = writeln!(
                changes,
                "sluice_endpoint_health_changes_total{{{l},to=\"up\"}} {}",
                h.came_up
            );
        }
    }
    let _ = writeln!(o, "# HELP sluice_endpoint_health What health checks say of each checked endpoint (1 for its current state).\n# TYPE sluice_endpoint_health gauge");
    o.push_str(&states);
    let _ = writeln!(o, "# HELP sluice_endpoint_health_changes_total Times each checked endpoint went down or came back up.\n# TYPE sluice_endpoint_health_changes_total counter");
    o.push_str(&changes);
    if let Some(p) = ha.health.prober_stats() {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(o, "# HELP sluice_health_probes_total Health probes finished, by result.\n# TYPE sluice_health_probes_total counter");
        let _ = writeln!(
            o,
            "sluice_health_probes_total{{result=\"ok\"}} {}\nsluice_health_probes_total{{result=\"failed\"}} {}",
            get(&p.probes_ok),
            get(&p.probes_failed)
        );
        for (name, kind, help, v) in [
            ("sluice_health_probes_late_total", "counter", "Probes that started late or were skipped (in-flight bound, slow loop).", get(&p.probes_late)),
            ("sluice_health_probe_local_errors_total", "counter", "Probes that could not start for a local reason (descriptors, ports); no verdict drawn.", get(&p.local_errors)),
            ("sluice_health_probes_in_flight", "gauge", "Health probes in flight.", get(&p.in_flight)),
            ("sluice_health_targets", "gauge", "Distinct endpoint checks probed.", get(&p.targets)),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
    if let Some(b) = &ha.bgp {
        let st = b.speaker.status();
        let _ = writeln!(o, "# HELP sluice_vip_announced Whether the routing daemon announces each VIP.\n# TYPE sluice_vip_announced gauge");
        for v in b.announcer.report(&st.announced) {
            let _ = writeln!(
                o,
                "sluice_vip_announced{{vip=\"{}\"}} {}",
                v.vip,
                u8::from(v.announced)
            );
        }
        let _ = writeln!(o, "# HELP sluice_bgp_session_established Whether each BGP session is established.\n# TYPE sluice_bgp_session_established gauge");
        for p in &st.peers {
            let _ = writeln!(
                o,
                "sluice_bgp_session_established{{peer=\"{}\",address=\"{}\"}} {}",
                label(&p.name),
                p.address,
                u8::from(p.established)
            );
        }
        for (name, help, v) in [
            (
                "sluice_vip_announcements_total",
                "VIP announcements applied.",
                st.announcements,
            ),
            (
                "sluice_vip_withdrawals_total",
                "VIP withdrawals applied.",
                st.withdrawals,
            ),
            (
                "sluice_bgp_daemon_errors_total",
                "Failed attempts to talk to the routing daemon.",
                st.errors,
            ),
            (
                "sluice_bgp_daemon_restarts_total",
                "Routing daemon restarts after it died.",
                st.restarts,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
    }
    o
}
