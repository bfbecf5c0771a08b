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
use super::store::Store;
use super::Dataplane;
use crate::flow::FlowKey;
use crate::hash::owner_worker;
use crate::service::{EndpointState, Protocol, VipKey};
use crate::worker::{DropReason, EndpointStat};

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
    rx: Vec<u64>,
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
    let active = dp.flows_active();
    let eps = dp.endpoint_stats(QUERY_TIMEOUT).map_err(dp_err)?;
    let prev = sampler.last.as_ref();
    let secs = prev.map_or(0.0, |p| now.duration_since(p.at).as_secs_f64());
    let generation = dp.current().number;
    let workers = counters
        .iter()
        .enumerate()
        .map(|(i, c)| WorkerStats {
            worker: i as u32,
            generation,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            forwarded: c.forwarded,
            replies: c.replies,
            resets: c.resets,
            flows_active: active.get(i).copied().unwrap_or(0),
            flow_capacity: None,
            flows_created: c.flows_created,
            flows_evicted: c.flows_evicted,
            flows_expired: c.flows_expired,
            table_misses: c.table_misses,
            handoffs_in: c.handoffs_in,
            handoffs_out: c.handoffs_out,
            drops: c.total_drops(),
            rx_pps: rate(c.rx_packets, prev.and_then(|p| p.rx.get(i).copied()), secs),
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
                health: super::health::view(store.health(), &spec.name, e, now),
            };
            sample_eps.insert(id, (c.flows_created, packets));
            s.active_flows += es.active_flows;
            s.new_flows_per_s += es.new_flows_per_s;
            s.packets += packets;
            s.bytes += c.bytes_in + c.bytes_out;
            s.endpoints.push(es);
        }
        services.push(s);
    }
    let keep_prev = prev.is_some_and(|p| now.duration_since(p.at) < Duration::from_millis(200));
    if !keep_prev {
        sampler.last = Some(Sample {
            at: now,
            rx: counters.iter().map(|c| c.rx_packets).collect(),
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

/// Runs the data path's classification and backend choice on a 5-tuple.
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
    let s = g.service(svc);
    let fkey = FlowKey::new(
        *client.ip(),
        client.port(),
        *vip.ip(),
        vip.port(),
        key.proto,
    );
    let owner = owner_worker(
        fkey.client_addr,
        fkey.client_port,
        dp.counters().len() as u32,
    );
    let flow = dp
        .lookup_flow(fkey, QUERY_TIMEOUT)
        .map_err(dp_err)?
        .map(FlowView::from);
    let hash = fkey.hash_v1(s.seed);
    let addr_of = |i: u32| {
        let e = g.endpoint(i);
        SocketAddrV4::new(Ipv4Addr::from(e.addr), e.port)
    };
    let new_flow_backend = g.choose_new(svc, hash).map(addr_of);
    let mid_flow_backend = g.choose_existing(svc, hash).map(addr_of);
    let slot = s.table().slot_of(hash);
    let state_of = |a: SocketAddrV4| {
        g.find_endpoint(svc, u32::from(*a.ip()), a.port())
            .map(|i| g.endpoint(i).state)
    };
    let (backend, reason) = match &flow {
        Some(f) => match state_of(f.backend) {
            Some(st) if syn && st != EndpointState::Active => (
                new_flow_backend,
                format!(
                    "flow table hit on worker {} pinned to {} ({st:?}), but a SYN to a non-active backend is a new connection: Maglev slot {slot} picks anew",
                    f.worker, f.backend
                ),
            ),
            Some(st) if st.carries_flows() => (
                Some(f.backend),
                format!(
                    "flow table hit on worker {}: the connection is pinned to {} ({st:?}, state {}) since generation {}{}",
                    f.worker,
                    f.backend,
                    f.state,
                    f.generation,
                    if syn { "; a SYN keeps it only if it retransmits the same ISN of a live flow" } else { "" }
                ),
            ),
            other => (
                None,
                format!(
                    "flow table hit on worker {}, but its backend {} is {}: the client gets a RST (TCP) or the packet is dropped",
                    f.worker,
                    f.backend,
                    other.map_or("gone from the service".to_string(), |s| format!("{s:?}"))
                ),
            ),
        },
        None if syn => match new_flow_backend {
            Some(b) => (
                Some(b),
                format!("no flow entry; new connection: Maglev slot {slot} of {} belongs to {b} (draining and down endpoints hold no slots)", s.table().size()),
            ),
            None => (
                None,
                "no flow entry and no endpoint takes new flows: TCP clients get a RST".to_string(),
            ),
        },
        None => match mid_flow_backend {
            Some(b) => (
                Some(b),
                format!(
                    "no flow entry; mid-flow packet (after a restart, failover or eviction): sent where every instance sends it, {b}{}",
                    if s.spec().is_some_and(|sp| sp.endpoints.iter().any(|e| e.state == EndpointState::Draining)) {
                        " (table of active and draining endpoints)"
                    } else {
                        ""
                    }
                ),
            ),
            None => (None, "no flow entry and no endpoint carries flows: the client gets a RST".to_string()),
        },
    };
    Ok(Explanation {
        service: s.name.clone(),
        vip,
        protocol: proto,
        client,
        owner_worker: owner,
        flow,
        maglev_hash: hash,
        slot,
        table_size: s.table().size(),
        new_flow_backend,
        mid_flow_backend,
        backend,
        reason,
    })
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
    let active = dp.flows_active();
    let eps = dp.endpoint_stats(QUERY_TIMEOUT).map_err(dp_err)?;
    let mut o = String::new();
    let _ = writeln!(o, "# HELP sluice_generation Generation number every worker runs or is switching to.\n# TYPE sluice_generation gauge\nsluice_generation {}", dp.current().number);
    let _ = writeln!(o, "# HELP sluice_packets_total Packets per worker and direction.\n# TYPE sluice_packets_total counter");
    for (i, c) in counters.iter().enumerate() {
        let _ = writeln!(
            o,
            "sluice_packets_total{{worker=\"{i}\",direction=\"rx\"}} {}",
            c.rx_packets
        );
        let _ = writeln!(
            o,
            "sluice_packets_total{{worker=\"{i}\",direction=\"tx\"}} {}",
            c.tx_packets
        );
    }
    let _ = writeln!(o, "# HELP sluice_bytes_total Bytes per worker and direction.\n# TYPE sluice_bytes_total counter");
    for (i, c) in counters.iter().enumerate() {
        let _ = writeln!(
            o,
            "sluice_bytes_total{{worker=\"{i}\",direction=\"rx\"}} {}",
            c.rx_bytes
        );
        let _ = writeln!(
            o,
            "sluice_bytes_total{{worker=\"{i}\",direction=\"tx\"}} {}",
            c.tx_bytes
        );
    }
    for (name, help, get) in [
        (
            "sluice_forwarded_packets_total",
            "Client to backend packets forwarded.",
            (|c: &crate::worker::Counters| c.forwarded) as fn(&crate::worker::Counters) -> u64,
        ),
        (
            "sluice_reply_packets_total",
            "Backend to client packets reverse-translated.",
            |c| c.replies,
        ),
        (
            "sluice_resets_total",
            "RSTs sent to clients whose backend is gone.",
            |c| c.resets,
        ),
        ("sluice_flows_created_total", "Flows created.", |c| {
            c.flows_created
        }),
        (
            "sluice_flows_evicted_total",
            "Flows evicted from a full table.",
            |c| c.flows_evicted,
        ),
        (
            "sluice_flows_expired_total",
            "Flows removed by aging.",
            |c| c.flows_expired,
        ),
        (
            "sluice_flow_table_misses_total",
            "Mid-flow packets with no flow entry.",
            |c| c.table_misses,
        ),
        (
            "sluice_handoffs_total",
            "Packets handed to the owner worker.",
            |c| c.handoffs_out,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, c) in counters.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", get(c));
        }
    }
    let _ = writeln!(o, "# HELP sluice_flows_active Flows in each worker's table.\n# TYPE sluice_flows_active gauge");
    for (i, n) in active.iter().enumerate() {
        let _ = writeln!(o, "sluice_flows_active{{worker=\"{i}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP sluice_drops_total Packets dropped, by reason.\n# TYPE sluice_drops_total counter"
    );
    for r in DropReason::ALL {
        let n: u64 = counters.iter().map(|c| c.drops[r as usize]).sum();
        let _ = writeln!(o, "sluice_drops_total{{reason=\"{}\"}} {n}", r.name());
    }
    let by_id: HashMap<EndpointId, &EndpointStat> = eps
        .iter()
        .filter(|e| e.port != 0)
        .map(|e| ((e.service, e.addr, e.port), e))
        .collect();
    let mut lines: [String; 4] = Default::default();
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
            "Flows pinned to each endpoint.",
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
