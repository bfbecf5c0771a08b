//! Human-readable tables for `sluice ctl` (scripts use `--json`).

use std::fmt::Write as _;

use super::protocol::{Outcome, Response, Stats, VipReport};

fn si(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn pct(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:5.1}%", 100.0 * part / whole)
    } else {
        "    -".to_string()
    }
}

/// The text for a successful response.
pub fn response(r: &Response) -> String {
    let mut o = String::new();
    match &r.result {
        None | Some(Outcome::Generation) => {
            let _ = writeln!(o, "generation {}", r.generation);
        }
        Some(Outcome::Status(st)) => {
            let _ = writeln!(
                o,
                "{}: generation {}, {}/{} workers run it, {} services",
                if st.ready { "ready" } else { "not ready" },
                st.generation,
                st.workers_ready,
                st.workers,
                st.services
            );
        }
        Some(Outcome::Applied { apply_us }) => {
            let _ = writeln!(
                o,
                "ok: generation {} runs on every worker ({apply_us} us)",
                r.generation
            );
        }
        Some(Outcome::Services { services }) => {
            let _ = writeln!(
                o,
                "{:<20} {:<22} {:>5} {:>9}  endpoints",
                "SERVICE", "VIP", "PROTO", "TABLE"
            );
            for s in services {
                let _ = writeln!(
                    o,
                    "{:<20} {:<22} {:>5} {:>9}  {}",
                    s.name,
                    format!("{}:{}", s.vip, s.port),
                    s.protocol.to_string(),
                    s.table_size,
                    s.endpoints.len()
                );
                if let Some(r) = &s.recycle {
                    let _ = writeln!(o, "    {}", recycle_text(r));
                }
                for e in &s.endpoints {
                    let _ = writeln!(
                        o,
                        "    {:<24} weight {:<4} {:?}",
                        format!("{}:{}", e.addr, e.port),
                        e.weight,
                        e.state
                    );
                }
            }
        }
        Some(Outcome::Stats(s)) => o.push_str(&stats(s, true)),
        Some(Outcome::FlowCount { per_worker, total }) => {
            let _ = writeln!(o, "flows {total}");
            for (i, n) in per_worker.iter().enumerate() {
                let _ = writeln!(o, "  worker {i}: {n}");
            }
        }
        Some(Outcome::Flow { flow: None }) => o.push_str("no such flow\n"),
        Some(Outcome::Flow { flow: Some(f) }) => {
            let _ = writeln!(
                o,
                "worker {} {} -> {} -> {} {} age {} ms idle {} ms gen {}",
                f.worker, f.client, f.vip, f.backend, f.state, f.age_ms, f.idle_ms, f.generation
            );
        }
        Some(Outcome::Neighbors { neighbors }) => {
            let _ = writeln!(
                o,
                "{:<16} {:<18} {:<12} {:<11} {:>9} {:<9} NEXT_HOP",
                "IP", "MAC", "INTERFACE", "STATE", "AGE_MS", "SOURCE"
            );
            for n in neighbors {
                let e = &n.entry;
                let _ = writeln!(
                    o,
                    "{:<16} {:<18} {:<12} {:<11} {:>9} {:<9} {}",
                    e.ip.to_string(),
                    e.mac.map_or_else(|| "-".to_string(), |m| m.to_string()),
                    n.interface,
                    e.state,
                    e.age_ms.map_or_else(|| "-".to_string(), |a| a.to_string()),
                    e.source,
                    if e.next_hop { "yes" } else { "no" }
                );
            }
        }
        Some(Outcome::Flows { flows }) => {
            let _ = writeln!(
                o,
                "{:>3} {:<22} {:<22} {:<22} {:<12} {:>10} {:>10}",
                "W", "CLIENT", "VIP", "BACKEND", "STATE", "AGE_MS", "IDLE_MS"
            );
            for f in flows {
                let _ = writeln!(
                    o,
                    "{:>3} {:<22} {:<22} {:<22} {:<12} {:>10} {:>10}",
                    f.worker,
                    f.client.to_string(),
                    f.vip.to_string(),
                    f.backend.to_string(),
                    f.state,
                    f.age_ms,
                    f.idle_ms
                );
            }
        }
        Some(Outcome::Explain(x)) => {
            let _ = writeln!(o, "service   {} ({}/{})", x.service, x.vip, x.protocol);
            let _ = writeln!(
                o,
                "client    {} (owned by worker {})",
                x.client, x.owner_worker
            );
            let _ = writeln!(
                o,
                "backend   {}",
                x.backend.map_or("none".to_string(), |b| b.to_string())
            );
            let _ = writeln!(o, "why       {}", x.reason);
            if let Some(r) = &x.recycle {
                let _ = writeln!(o, "recycle   {r}");
            }
            let _ = writeln!(
                o,
                "maglev    hash {:016x}, slot {} of {}; new flows -> {}, mid-flow misses -> {}",
                x.maglev_hash,
                x.slot,
                x.table_size,
                x.new_flow_backend
                    .map_or("none".to_string(), |b| b.to_string()),
                x.mid_flow_backend
                    .map_or("none".to_string(), |b| b.to_string())
            );
        }
        Some(Outcome::Digests { digests }) => {
            for d in digests {
                let _ = writeln!(o, "{:<20} {:>9} {}", d.service, d.table_size, d.digest);
            }
        }
        Some(Outcome::Reloaded { path, services }) => {
            let _ = writeln!(
                o,
                "reloaded {path}: {services} services, generation {}",
                r.generation
            );
        }
        Some(Outcome::Vips(v)) => o.push_str(&vips(v)),
    }
    o
}

fn ms_text(ms: u32) -> String {
    if ms >= 60_000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", f64::from(ms) / 1e3)
    } else {
        format!("{ms}ms")
    }
}

fn recycle_text(r: &crate::service::RecyclePolicy) -> String {
    format!(
        "recycle: max_age {} + jitter {}, idle_gap {}, {}/s{}",
        ms_text(r.max_age_ms),
        ms_text(r.jitter_ms),
        ms_text(r.idle_gap_ms),
        r.max_per_sec,
        if r.skewed_only {
            ", skewed backends only"
        } else {
            ""
        }
    )
}

/// `top`: [`stats`] without the full counter list, refreshed in place.
pub fn top(r: &Response) -> String {
    match &r.result {
        Some(Outcome::Stats(s)) => stats(s, false),
        _ => response(r),
    }
}

/// `stats` and `top`: workers (with new flows/s and untracked flows, so a
/// flood shows), drops, then per service each backend's share of flows and
/// packets, so a skew (S2) is visible at a glance. `all` adds every counter
/// each worker keeps, per worker (what `ctl stats` prints).
pub fn stats(s: &Stats, all: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>6} {:>9} {:>9} {:>9} {:>17} {:>8} {:>9} {:>8} {:>8} {:>6}",
        "WORKER",
        "Mpps",
        "RX",
        "TX",
        "FLOWS/CAPACITY",
        "NEW/s",
        "UNTRACKED",
        "HANDOFF",
        "DROPS",
        "GEN"
    );
    for w in &s.workers {
        let c = &w.counters;
        let _ = writeln!(
            o,
            "{:>6} {:>9.3} {:>9} {:>9} {:>17} {:>8.0} {:>9} {:>8} {:>8} {:>6}",
            w.worker,
            w.rx_pps / 1e6,
            si(c.rx_packets as f64),
            si(c.tx_packets as f64),
            format!(
                "{}/{}",
                si(w.flows_active as f64),
                si(w.flow_capacity as f64)
            ),
            w.new_flows_per_s,
            si(c.flows_untracked as f64),
            si(c.handoffs_out as f64),
            si(c.total_drops() as f64),
            w.generation
        );
    }
    if !s.drops.is_empty() {
        let d: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, "drops: {}", d.join(" "));
    }
    if all && !s.workers.is_empty() {
        o.push_str(&counter_table(s));
    }
    for svc in &s.services {
        let flows: f64 = svc.endpoints.iter().map(|e| e.active_flows as f64).sum();
        let pps: f64 = svc.endpoints.iter().map(|e| e.packets_per_s).sum();
        let pkts: f64 = svc
            .endpoints
            .iter()
            .map(|e| (e.packets_in + e.packets_out) as f64)
            .sum();
        let _ = writeln!(
            o,
            "\n{} {}/{}  flows {}  new/s {:.0}  packets {}",
            svc.name,
            svc.vip,
            svc.protocol,
            svc.active_flows,
            svc.new_flows_per_s,
            si(pkts)
        );
        if let Some(r) = &svc.recycle {
            let _ = writeln!(o, "  {}; recycled {}", recycle_text(r), svc.flows_recycled);
        }
        let _ = writeln!(
            o,
            "  {:<22} {:<9} {:>3} {:>9} {:>6} {:>8} {:>9} {:>6} {:>10} {:>9}  HEALTH",
            "ENDPOINT",
            "STATE",
            "W",
            "FLOWS",
            "SHARE",
            "NEW/s",
            "PKT/s",
            "SHARE",
            "PACKETS",
            "RECYCLED"
        );
        for e in &svc.endpoints {
            let p = (e.packets_in + e.packets_out) as f64;
            let _ = writeln!(
                o,
                "  {:<22} {:<9} {:>3} {:>9} {} {:>8.0} {:>9} {} {:>10} {:>9}  {}",
                e.endpoint.to_string(),
                format!("{:?}", e.state).to_lowercase(),
                e.weight,
                e.active_flows,
                pct(e.active_flows as f64, flows),
                e.new_flows_per_s,
                si(e.packets_per_s),
                // No packet in the sampled interval (or none yet): the share
                // of all packets so far, rather than a column of dashes.
                if s.interval_s > 0.0 && pps > 0.0 {
                    pct(e.packets_per_s, pps)
                } else {
                    pct(p, pkts)
                },
                si(p),
                e.flows_recycled,
                // Last, so the columns before it keep their places.
                e.health
                    .as_ref()
                    .map_or("-".to_string(), |h| h.state.to_string())
            );
        }
    }
    o
}

/// Every counter, a row each, a column per worker and the total; drop
/// reasons only where some worker counted one (`--json` has them all).
fn counter_table(s: &Stats) -> String {
    let mut o = String::new();
    let _ = write!(o, "\n{:<28}", "COUNTER");
    for w in &s.workers {
        let _ = write!(o, " {:>12}", format!("w{}", w.worker));
    }
    let _ = writeln!(o, " {:>12}", "total");
    let rows: Vec<Vec<(String, &str, u64)>> = s
        .workers
        .iter()
        .map(|w| w.counters.rows().collect())
        .collect();
    for (i, (name, _, _)) in rows[0].iter().enumerate() {
        let values: Vec<u64> = rows.iter().map(|r| r.get(i).map_or(0, |x| x.2)).collect();
        let total: u64 = values.iter().sum();
        if name.starts_with("drop_") && total == 0 {
            continue;
        }
        let _ = write!(o, "{name:<28}");
        for v in &values {
            let _ = write!(o, " {v:>12}");
        }
        let _ = writeln!(o, " {total:>12}");
    }
    o
}

/// `vip list`: each VIP, whether the routers are told of it and why; the
/// BGP sessions.
pub fn vips(v: &VipReport) -> String {
    let mut o = String::new();
    if !v.bgp {
        o.push_str("no [bgp] section: sluice announces no VIP\n");
        return o;
    }
    let _ = writeln!(o, "routing daemon: {}", v.daemon);
    let _ = writeln!(o, "{:<16} {:<10} {:<8}  WHY", "VIP", "ANNOUNCED", "WANTED");
    for x in &v.vips {
        let _ = writeln!(
            o,
            "{:<16} {:<10} {:<8}  {} ({})",
            x.vip.to_string(),
            if x.announced { "yes" } else { "no" },
            if x.wanted { "yes" } else { "no" },
            x.reason,
            x.services.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "\n{:<12} {:<16} {:<12}  INFO",
        "PEER", "ADDRESS", "STATE"
    );
    for p in &v.peers {
        let _ = writeln!(
            o,
            "{:<12} {:<16} {:<12}  {}",
            p.name,
            p.address.to_string(),
            p.state,
            p.info
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{EndpointStats, ServiceStats};
    use crate::service::{EndpointState, Protocol};

    fn endpoint(last: u8, flows: u64, packets: u64) -> EndpointStats {
        EndpointStats {
            endpoint: format!("10.200.2.{last}:8080").parse().unwrap(),
            weight: 1,
            state: EndpointState::Active,
            active_flows: flows,
            flows_created: flows,
            new_flows_per_s: 0.0,
            packets_in: packets,
            bytes_in: 0,
            packets_out: 0,
            bytes_out: 0,
            packets_per_s: 0.0,
            flows_recycled: 0,
            health: None,
        }
    }

    /// The S2 view: the backends carrying everything and the idle ones are
    /// told apart by flows and packets, even when no packet flowed during
    /// the sampled interval.
    #[test]
    fn stats_show_each_backends_share_of_flows_and_packets() {
        let s = Stats {
            interval_s: 0.5,
            workers: vec![],
            drops: Default::default(),
            services: vec![ServiceStats {
                name: "web".into(),
                vip: "198.18.0.100:80".parse().unwrap(),
                protocol: Protocol::Tcp,
                active_flows: 8,
                new_flows_per_s: 0.0,
                packets: 400,
                bytes: 0,
                flows_recycled: 0,
                recycle: None,
                table_size: 65537,
                endpoints: vec![
                    endpoint(11, 2, 100),
                    endpoint(12, 6, 300),
                    endpoint(13, 0, 0),
                ],
            }],
        };
        let text = stats(&s, false);
        let row = |ep: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.contains(ep)).unwrap();
            line.split_whitespace().map(str::to_string).collect()
        };
        // ENDPOINT STATE W FLOWS SHARE NEW/s PKT/s SHARE PACKETS
        assert_eq!(row("10.200.2.11:8080")[3..5], ["2", "25.0%"], "{text}");
        assert_eq!(row("10.200.2.12:8080")[7], "75.0%", "{text}");
        assert_eq!(row("10.200.2.13:8080")[3..5], ["0", "0.0%"], "{text}");
        assert_eq!(row("10.200.2.13:8080")[7], "0.0%", "{text}");
    }
}
