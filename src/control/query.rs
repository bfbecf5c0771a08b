//! Read-only operations: stats (with rates between samples), flows,
//! `explain`, digests, and the Prometheus exposition of the same counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::protocol::{
    DigestView, EndpointStats, ErrorBody, ErrorKind, Explanation, FlowView, Outcome, ServiceStats,
    Stats, WorkerStats,
};
use super::publish::WorkerGauges;
use super::store::Store;
use super::Dataplane;
use crate::flow::{tcp_flags, FlowKey};
use crate::hash::owner_worker;
use crate::service::{EndpointState, Generation, Protocol, VipKey};
use crate::worker::decide::{decide, Decision, Facts};
use crate::worker::{Counters, DropReason, EndpointStat, FlowInfo};

/// How long a query may wait for a worker's answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Identity of an endpoint across generations.
type EndpointId = (VipKey, Ipv4Addr, u16);

/// The previous counter sample, for rates.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Option<Sample>,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    /// Per worker: received packets, flows created.
    workers: Vec<(u64, u64)>,
    endpoints: HashMap<EndpointId, (u64, u64)>,
}

fn dp_err(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorKind::Dataplane, e.to_string())
}

fn rate(now: u64, before: Option<u64>, secs: f64) -> f64 {
    match before {
        Some(b) if secs > 0.0 => now.saturating_sub(b) as f64 / secs,
        _ => 0.0,
    }
}

/// Everything `stats` reports; rates cover the time since the previous call
/// (kept when the previous sample is under 0.2 s old, so two clients polling
/// at once do not see zero-length intervals).
pub fn stats<B: Send + 'static>(
    dp: &Dataplane<B>,
    store: &Store,
    sampler: &mut Sampler,
) -> Result<Stats, ErrorBody> {
    let now = Instant::now();
    let counters = dp.counters();
    let gauges = dp.gauges();
    let eps = dp.endpoint_stats(QUERY_TIMEOUT).map_err(dp_err)?;
    let prev = sampler.last.as_ref();
    let secs = prev.map_or(0.0, |p| now.duration_since(p.at).as_secs_f64());
    let workers = counters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let g = gauges.get(i).copied().unwrap_or_default();
            let before = prev.and_then(|p| p.workers.get(i).copied());
            WorkerStats {
                worker: i as u32,
                generation: g.generation,
                flows_active: g.flows_active,
                flow_capacity: g.flow_capacity,
                rx_pps: rate(c.rx_packets, before.map(|b| b.0), secs),
                new_flows_per_s: rate(c.flows_created, before.map(|b| b.1), secs),
                counters: *c,
            }
        })
        .collect();
    let mut drops = BTreeMap::new();
    for r in DropReason::ALL {
        let n: u64 = counters.iter().map(|c| c.drops[r as usize]).sum();
        if n > 0 {
            drops.insert(r.name().to_string(), n);
        }
    }
    let by_id: HashMap<EndpointId, &EndpointStat> = eps
        .iter()
        .filter(|e| e.port != 0)
        .map(|e| ((e.service, e.addr, e.port), e))
        .collect();
    let mut services = Vec::new();
    let mut sample_eps = HashMap::with_capacity(by_id.len());
    for spec in store.services() {
        let key = spec.key();
        let mut s = ServiceStats {
            name: spec.name.clone(),
            vip: SocketAddrV4::new(spec.vip, spec.port),
            protocol: spec.protocol,
            active_flows: 0,
            new_flows_per_s: 0.0,
            packets: 0,
            bytes: 0,
            flows_recycled: 0,
            recycle: spec.recycle,
            table_size: spec.table_size,
            endpoints: Vec::with_capacity(spec.endpoints.len()),
        };
        for e in &spec.endpoints {
            let id = (key, e.addr, e.port);
            let c = by_id.get(&id).map(|s| s.counters).unwrap_or_default();
            let packets = c.packets_in + c.packets_out;
            let before = prev.and_then(|p| p.endpoints.get(&id));
            let es = EndpointStats {
                endpoint: SocketAddrV4::new(e.addr, e.port),
                weight: e.weight,
                state: e.state,
                active_flows: c.active_flows,
                flows_created: c.flows_created,
                new_flows_per_s: rate(c.flows_created, before.map(|b| b.0), secs),
                packets_in: c.packets_in,
                bytes_in: c.bytes_in,
                packets_out: c.packets_out,
                bytes_out: c.bytes_out,
                packets_per_s: rate(packets, before.map(|b| b.1), secs),
                flows_recycled: c.flows_recycled,
                health: super::health::view(store.health(), &spec.name, e, now),
            };
            sample_eps.insert(id, (c.flows_created, packets));
            s.active_flows += es.active_flows;
            s.new_flows_per_s += es.new_flows_per_s;
            s.packets += packets;
            s.bytes += c.bytes_in + c.bytes_out;
            s.flows_recycled += c.flows_recycled;
            s.endpoints.push(es);
        }
        services.push(s);
    }
    let keep_prev = prev.is_some_and(|p| now.duration_since(p.at) < Duration::from_millis(200));
    if !keep_prev {
        sampler.last = Some(Sample {
            at: now,
            workers: counters
                .iter()
                .map(|c| (c.rx_packets, c.flows_created))
                .collect(),
            endpoints: sample_eps,
        });
    }
    Ok(Stats {
        interval_s: secs,
        workers,
        drops,
        services,
    })
}

/// Flow-table occupancy per worker.
pub fn flow_count<B: Send + 'static>(dp: &Dataplane<B>) -> Outcome {
    let per_worker = dp.flows_active();
    let total = per_worker.iter().sum();
    Outcome::FlowCount { per_worker, total }
}

pub fn flow_lookup<B: Send + 'static>(
    dp: &Dataplane<B>,
    client: SocketAddrV4,
    vip: SocketAddrV4,
    protocol: Protocol,
) -> Result<Outcome, ErrorBody> {
    let key = FlowKey::new(
        *client.ip(),
        client.port(),
        *vip.ip(),
        vip.port(),
        protocol.number(),
    );
    let flow = dp.lookup_flow(key, QUERY_TIMEOUT).map_err(dp_err)?;
    Ok(Outcome::Flow {
        flow: flow.map(FlowView::from),
    })
}

pub fn flow_dump<B: Send + 'static>(dp: &Dataplane<B>, limit: usize) -> Result<Outcome, ErrorBody> {
    let flows = dp
        .dump_flows(limit.min(1_000_000), QUERY_TIMEOUT)
        .map_err(dp_err)?;
    Ok(Outcome::Flows {
        flows: flows.into_iter().map(FlowView::from).collect(),
    })
}

/// Runs the data path's classification and backend choice on a 5-tuple:
/// resolves the service, asks the owner worker for the flow's entry, and
/// hands both to [`explain_with`].
pub fn explain<B: Send + 'static>(
    dp: &Dataplane<B>,
    store: &Store,
    client: SocketAddrV4,
    service: Option<&str>,
    vip: Option<SocketAddrV4>,
    protocol: Option<Protocol>,
    syn: bool,
) -> Result<Explanation, ErrorBody> {
    let g = dp.current();
    let (key, proto) = match (service, vip) {
        (Some(name), _) => {
            let s = store.service(name).ok_or_else(|| {
                ErrorBody::new(
                    ErrorKind::UnknownService,
                    format!("no service named {name:?}; `services list` shows the names"),
                )
            })?;
            (s.key(), s.protocol)
        }
        (None, Some(vip)) => {
            let proto = protocol.unwrap_or(Protocol::Tcp);
            (VipKey::new(*vip.ip(), vip.port(), proto.number()), proto)
        }
        (None, None) => {
            return Err(ErrorBody::new(
                ErrorKind::MissingField,
                "explain needs `service` (a name) or `vip` (address:port)",
            ))
        }
    };
    let vip = SocketAddrV4::new(Ipv4Addr::from(key.addr), key.port);
    let svc = g.service_for(&key).ok_or_else(|| {
        ErrorBody::new(
            ErrorKind::UnknownService,
            format!(
                "no service matches {vip}/{proto}: the data path drops such packets (no_service)"
            ),
        )
    })?;
    let fkey = FlowKey::new(
        *client.ip(),
        client.port(),
        *vip.ip(),
        vip.port(),
        key.proto,
    );
    let flow = dp.lookup_flow(fkey, QUERY_TIMEOUT).map_err(dp_err)?;
    Ok(explain_with(
        g.as_ref(),
        svc,
        &fkey,
        flow.as_ref(),
        syn,
        dp.counters().len() as u32,
    ))
}

/// `explain` of a packet of flow `key` (service `svc` of generation `g`),
/// whose entry the owner worker reported as `flow`: the data path's own
/// decision ([`decide`]), put into words. A SYN is explained as a new
/// connection's (an ISN other than the entry's); a retransmitted SYN of a
/// live flow to an active backend would keep its entry.
pub fn explain_with(
    g: &Generation,
    svc: u32,
    key: &FlowKey,
    flow: Option<&FlowInfo>,
    syn: bool,
    workers: u32,
) -> Explanation {
    let s = g.service(svc);
    let tcp = key.proto == crate::flow::ip_proto::TCP;
    let entry = flow.map(|f| f.entry);
    let facts = match (tcp, syn) {
        (false, _) => Facts::udp(),
        (true, true) => Facts::tcp(
            tcp_flags::SYN,
            entry.map_or(0, |e| e.client_isn.wrapping_add(1)),
        ),
        (true, false) => Facts::tcp(tcp_flags::ACK, 0),
    };
    let decision = decide(g, svc, key, entry.as_ref(), facts);
    let hash = key.hash_v1(s.seed);
    let addr_of = |i: u32| {
        let e = g.endpoint(i);
        SocketAddrV4::new(Ipv4Addr::from(e.addr), e.port)
    };
    let new_flow_backend = g.choose_new(svc, hash).map(addr_of);
    let mid_flow_backend = g.choose_existing(svc, hash).map(addr_of);
    let slot = s.table().slot_of(hash);
    let backend = decision.endpoint().map(addr_of);
    let refused = if tcp {
        "the client gets a RST at once"
    } else {
        "the client gets ICMP port unreachable"
    };
    let pinned = |f: &FlowInfo| {
        let state = g
            .find_endpoint(svc, u32::from(*f.backend.ip()), f.backend.port())
            .map(|i| format!("{:?}", g.endpoint(i).state).to_lowercase());
        format!(
            "flow table hit on worker {}: pinned to {} ({}), flow {}{} since generation {}",
            f.worker,
            f.backend,
            state.as_deref().unwrap_or("gone from the service"),
            serde_json::to_value(f.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            if f.assured { ", assured" } else { "" },
            f.generation,
        )
    };
    let b = |o: Option<SocketAddrV4>| o.map_or("none".to_string(), |a| a.to_string());
    let (kind, reason) = match (decision, flow) {
        (Decision::Keep { .. }, Some(f)) => ("keep", format!("{}; the packet follows it", pinned(f))),
        (Decision::New { rescheduled: true, .. }, Some(f)) => (
            "rescheduled",
            format!(
                "{}; but a new SYN on this tuple is a new connection (a reused TIME_WAIT tuple, or a backend that is not active): Maglev slot {slot} picks {}",
                pinned(f),
                b(backend)
            ),
        ),
        (Decision::New { .. }, _) => (
            "new",
            format!(
                "no flow entry; new {}: Maglev slot {slot} of {} belongs to {} (draining and down endpoints hold no slots)",
                if tcp { "connection" } else { "flow" },
                s.table().size(),
                b(backend)
            ),
        ),
        (Decision::Pickup { .. }, _) => (
            "pickup",
            format!(
                "no flow entry; mid-flow packet (after a restart, failover or eviction): sent where every instance with this endpoint set sends it, {}{}",
                b(backend),
                if s.spec().is_some_and(|sp| sp.endpoints.iter().any(|e| e.state == EndpointState::Draining)) {
                    " (table of active and draining endpoints)"
                } else {
                    ""
                }
            ),
        ),
        (Decision::Gone, Some(f)) => (
            "gone",
            format!("{}; its backend no longer carries flows: {refused}, and the entry is dropped", pinned(f)),
        ),
        (Decision::NoBackend { rescheduled }, f) => (
            "no_backend",
            format!(
                "{}no endpoint {}: {refused}",
                if rescheduled {
                    f.map(|f| format!("{}; a new SYN is a new connection, but ", pinned(f))).unwrap_or_default()
                } else {
                    String::new()
                },
                if syn || !tcp { "takes new flows" } else { "carries flows" }
            ),
        ),
        // Keep and Gone come only from an entry.
        (d, None) => ("keep", format!("{d:?}")),
    };
    let recycle = s.recycle.map(|p| {
        let due = crate::worker::eligible_age_ms(key, &p);
        let gap = p.idle_gap_ms;
        match flow {
            None => format!(
                "recycled once older than {:.1} s (max_age plus this tuple's jitter) and idle both ways for {gap} ms",
                f64::from(due) / 1e3
            ),
            Some(f) if !f.assured || f.state != crate::flow::FlowState::Established => format!(
                "not a candidate while {} (only established, assured flows are recycled); then at age {:.1} s after an idle gap of {gap} ms",
                if f.assured { "closing" } else { "not assured" },
                f64::from(due) / 1e3
            ),
            Some(f) if f.age_ms < due => format!(
                "eligible in {:.1} s (at age {:.1} s: max_age plus this flow's jitter), then reset at its first idle gap of {gap} ms",
                f64::from(due - f.age_ms) / 1e3,
                f64::from(due) / 1e3
            ),
            Some(f) => format!(
                "eligible now (age {:.1} s >= {:.1} s): reset once idle both ways for {gap} ms (idle {} ms now), within the rate of {}/s",
                f64::from(f.age_ms) / 1e3,
                f64::from(due) / 1e3,
                f.idle_ms,
                p.max_per_sec
            ),
        }
    });
    Explanation {
        service: s.name.clone(),
        vip: SocketAddrV4::new(Ipv4Addr::from(key.vip_addr), key.vip_port),
        protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
        client: SocketAddrV4::new(Ipv4Addr::from(key.client_addr), key.client_port),
        owner_worker: owner_worker(key.client_addr, key.client_port, workers.max(1)),
        flow: flow.copied().map(FlowView::from),
        maglev_hash: hash,
        slot,
        table_size: s.table().size(),
        new_flow_backend,
        mid_flow_backend,
        backend,
        decision: kind.to_string(),
        reason,
        recycle,
    }
}

/// Maglev digests of every service (or one).
pub fn digests<B: Send + 'static>(
    dp: &Dataplane<B>,
    service: Option<&str>,
) -> Result<Outcome, ErrorBody> {
    let g = dp.current();
    let mut digests: Vec<DigestView> = g
        .services()
        .filter(|(_, s)| service.map_or(true, |n| n == s.name))
        .map(|(i, s)| DigestView {
            service: s.name.clone(),
            table_size: s.table().size(),
            digest: format!("{:016x}", g.digest(i)),
        })
        .collect();
    if let Some(name) = service {
        if digests.is_empty() {
            return Err(ErrorBody::new(
                ErrorKind::UnknownService,
                format!("no service named {name:?}; `services list` shows the names"),
            ));
        }
    }
    digests.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(Outcome::Digests { digests })
}

/// Every worker counter in the Prometheus text format, generated from the
/// one counter list ([`Counters::INFO`]): families in list order, each with
/// its help once, a series per worker (and per label the list gives), then
/// drops per worker and reason.
pub fn worker_metrics(counters: &[Counters]) -> String {
    let mut o = String::new();
    let scalars: Vec<_> = counters.iter().map(Counters::scalars).collect();
    let mut done: Vec<&str> = Vec::new();
    for info in &Counters::INFO {
        if done.contains(&info.metric) {
            continue;
        }
        done.push(info.metric);
        let _ = writeln!(
            o,
            "# HELP {m} {h}\n# TYPE {m} counter",
            m = info.metric,
            h = info.help
        );
        for (k, same) in Counters::INFO.iter().enumerate() {
            if same.metric != info.metric {
                continue;
            }
            let extra = if same.label.is_empty() {
                String::new()
            } else {
                format!(",{}", same.label)
            };
            for (w, s) in scalars.iter().enumerate() {
                let _ = writeln!(o, "{}{{worker=\"{w}\"{extra}}} {}", same.metric, s[k]);
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP sluice_drops_total Packets dropped, per worker and reason.\n# TYPE sluice_drops_total counter"
    );
    for (w, c) in counters.iter().enumerate() {
        for r in DropReason::ALL {
            let _ = writeln!(
                o,
                "sluice_drops_total{{worker=\"{w}\",reason=\"{}\"}} {}",
                r.name(),
                c.drops[r as usize]
            );
        }
    }
    o
}

/// Prometheus label value escaping (backslash, quote, newline).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4) of the same counters.
pub fn metrics_text<B: Send + 'static>(
    dp: &Dataplane<B>,
    store: &Store,
) -> Result<String, ErrorBody> {
    let counters = dp.counters();
    let gauges = dp.gauges();
    let eps = dp.endpoint_stats(QUERY_TIMEOUT).map_err(dp_err)?;
    let mut o = String::new();
    let _ = writeln!(o, "# HELP sluice_generation Generation number every worker runs or is switching to.\n# TYPE sluice_generation gauge\nsluice_generation {}", dp.current().number);
    o.push_str(&worker_metrics(&counters));
    for (name, help, get) in [
        (
            "sluice_flows_active",
            "Entries in each worker's flow table (closed ones waiting to expire included).",
            (|g: &WorkerGauges| g.flows_active) as fn(&WorkerGauges) -> u64,
        ),
        (
            "sluice_flow_capacity",
            "Flows each worker's table holds at most.",
            |g| g.flow_capacity,
        ),
        (
            "sluice_worker_generation",
            "Generation each worker runs.",
            |g| g.generation,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, g) in gauges.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", get(g));
        }
    }
    let by_id: HashMap<EndpointId, &EndpointStat> = eps
        .iter()
        .filter(|e| e.port != 0)
        .map(|e| ((e.service, e.addr, e.port), e))
        .collect();
    let mut lines: [String; 5] = Default::default();
    for spec in store.services() {
        let svc = label(&spec.name);
        for e in &spec.endpoints {
            let c = by_id
                .get(&(spec.key(), e.addr, e.port))
                .map(|s| s.counters)
                .unwrap_or_default();
            let l = format!("service=\"{svc}\",endpoint=\"{}:{}\"", e.addr, e.port);
            let _ = writeln!(
                lines[0],
                "sluice_endpoint_packets_total{{{l},direction=\"in\"}} {}",
                c.packets_in
            );
            let _ = writeln!(
                lines[0],
                "sluice_endpoint_packets_total{{{l},direction=\"out\"}} {}",
                c.packets_out
            );
            let _ = writeln!(
                lines[1],
                "sluice_endpoint_bytes_total{{{l},direction=\"in\"}} {}",
                c.bytes_in
            );
            let _ = writeln!(
                lines[1],
                "sluice_endpoint_bytes_total{{{l},direction=\"out\"}} {}",
                c.bytes_out
            );
            let _ = writeln!(
                lines[2],
                "sluice_endpoint_flows_created_total{{{l}}} {}",
                c.flows_created
            );
            let _ = writeln!(
                lines[3],
                "sluice_endpoint_flows_active{{{l}}} {}",
                c.active_flows
            );
            let _ = writeln!(
                lines[4],
                "sluice_endpoint_flows_recycled_total{{{l}}} {}",
                c.flows_recycled
            );
        }
    }
    for (i, (name, kind, help)) in [
        (
            "sluice_endpoint_packets_total",
            "counter",
            "Packets per endpoint, in (client to backend) and out.",
        ),
        (
            "sluice_endpoint_bytes_total",
            "counter",
            "Bytes per endpoint, in and out.",
        ),
        (
            "sluice_endpoint_flows_created_total",
            "counter",
            "Flows created per endpoint.",
        ),
        (
            "sluice_endpoint_flows_active",
            "gauge",
            "Open flows pinned to each endpoint.",
        ),
        (
            "sluice_endpoint_flows_recycled_total",
            "counter",
            "Connections recycled at an idle moment (S2), per endpoint.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        o.push_str(&lines[i]);
    }
    Ok(o)
}
