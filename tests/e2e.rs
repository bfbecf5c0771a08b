//! End-to-end scenarios with real kernel TCP peers: clients and HTTP
//! backends in network namespaces, the `sluice` binary in between, steered
//! through `sluice ctl`. Each test builds its own lab (unique namespace
//! names) and tears it down on drop, panics included. Needs root, `ip` and
//! `python3`; skipped with a message otherwise. The labs run one at a time
//! (sluice's workers poll, and the machine may have two cores).
//!
//! The scenarios are those of SCENARIOS.md: S1 (spread of sequential
//! connections), S2a (the skew of long-lived connections, visible), S3 (rolling replacement with reused source ports), S4a
//! (restart keeps connections), S4c (planned restart with a changed endpoint set), S4b (removed backend: RST, not a hang),
//! plus malformed input, forged backend replies and ARP.

#[macro_use]
mod harness;
#[path = "e2e/lab.rs"]
mod lab;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lab::{drops, worker_sum, Backend, Lab, Lines, VIP, VIP_PORT};
use serde_json::Value;

/// Requests served per backend name, from a lab_client/lab_stream result.
fn tally(r: &Value) -> BTreeMap<String, u64> {
    r["backends"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn http_through_vip(backend: Backend) {
    let mut lab = Lab::up(3, 1, backend);
    lab.write_config(&[(1, 1), (2, 1), (3, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let r = lab.http(1, 300);
    assert_eq!(r["errors"], 0, "failed requests through the VIP: {r}");
    assert_eq!(r["ok"], 300, "{r}");
    let t = tally(&r);
    for b in ["b1", "b2", "b3"] {
        assert!(
            t.get(b).copied().unwrap_or(0) > 0,
            "{b} served nothing: {r}"
        );
    }
    let s = lab.stats();
    assert!(
        worker_sum(&s, "forwarded") > 0 && worker_sum(&s, "replies") > 0,
        "{s}"
    );
}

/// 300 requests on fresh connections through the VIP over the AF_PACKET
/// port: none fails and every backend serves some.
fn http_through_vip_afpacket() {
    http_through_vip(Backend::AfPacket);
}

/// The same over the DPDK port on net_af_packet virtual devices.
#[cfg(feature = "dpdk")]
fn http_through_vip_dpdk() {
    http_through_vip(Backend::Dpdk);
}

/// Two workers, 400 connections from as many client ports: the share of
/// received packets that crossed a handoff ring. Where the port programs
/// flow ownership (the AF_PACKET fanout program) it must be near zero;
/// where it cannot (DPDK's net_af_packet has no RSS) sluice must say so
/// at start, and the share is what it is (printed).
fn owner_steering(backend: Backend, programmed: bool) -> f64 {
    let mut lab = Lab::up(2, 1, backend);
    lab.workers = 2;
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let before = lab.stats();
    let r = lab.http(1, 400);
    assert_eq!(r["ok"], 400, "{r}");
    let s = lab.stats();
    let delta = |f: &str| worker_sum(&s, f) - worker_sum(&before, f);
    let (rx, handoffs) = (delta("rx_packets"), delta("handoffs_out"));
    let share = handoffs as f64 / rx.max(1) as f64;
    println!(
        "{backend:?}, 2 workers: {handoffs} handoffs of {rx} packets received ({:.2}%)",
        share * 100.0
    );
    let log = lab.sluice_log();
    let per_worker: Vec<u64> = s["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["rx_packets"].as_u64()).collect())
        .unwrap_or_default();
    println!("rx per worker: {per_worker:?}");
    if programmed {
        assert!(log.contains("steers each flow to its owner"), "{log}");
        assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
        assert!(share < 0.01, "handoff share {share}");
    } else {
        assert!(log.contains("cannot steer flows to their owner"), "{log}");
    }
    share
}

/// AF_PACKET: the kernel's fanout program puts each flow on its owner.
fn two_workers_afpacket_hand_off_almost_nothing() {
    owner_steering(Backend::AfPacket, true);
}

/// DPDK on net_af_packet (no RSS): the fallback is announced, and the
/// handoff ring carries what the PMD spread elsewhere.
#[cfg(feature = "dpdk")]
fn two_workers_dpdk_without_rss_announce_the_handoff_fallback() {
    owner_steering(Backend::Dpdk, false);
}

/// Asserts each backend's share of `r`'s requests is within 5 percentage
/// points of its weight's share.
fn assert_shares(r: &Value, weights: &[(usize, u32)]) {
    let t = tally(r);
    let total: u64 = t.values().sum();
    let wsum: u32 = weights.iter().map(|w| w.1).sum();
    for &(i, w) in weights {
        let got = t.get(&format!("b{i}")).copied().unwrap_or(0) as f64 / total as f64;
        let want = f64::from(w) / f64::from(wsum);
        assert!(
            (got - want).abs() <= 0.05,
            "b{i}: share {:.1}% but weight share {:.1}% (±5 points): {r}",
            got * 100.0,
            want * 100.0
        );
    }
    let known: Vec<String> = weights.iter().map(|w| format!("b{}", w.0)).collect();
    for b in t.keys() {
        assert!(known.contains(b), "{b} is not an endpoint but served: {r}");
    }
}

/// S1: one client, 2000 strictly sequential short connections, spread over
/// 2 equal backends and then (after `ctl endpoints set`) 5 backends of
/// weights 1,1,2,2,4, each within ±5 points of its weight share.
fn s1_sequential_connections_spread_by_weight_real_tcp() {
    let mut lab = Lab::up(5, 1, Backend::AfPacket);
    let two = [(1, 1), (2, 1)];
    lab.write_config(&two);
    lab.start_sluice();
    lab.wait_ready();
    let r = lab.http(1, 2000);
    assert_eq!(r["errors"], 0, "{r}");
    assert_shares(&r, &two);

    let five = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 4)];
    let specs: Vec<String> = five
        .iter()
        .map(|&(i, w)| format!("{}:{}={w}", Lab::backend_addr(i), lab::BACKEND_PORT))
        .collect();
    let mut args = vec!["endpoints", "set", "web"];
    args.extend(specs.iter().map(String::as_str));
    lab.ctl(&args);
    let r = lab.http(1, 2000);
    assert_eq!(r["errors"], 0, "{r}");
    assert_shares(&r, &five);
}

/// Malformed frames sent at sluice's client-side MAC while HTTP traffic
/// flows: the requests all succeed and every bad frame is counted under
/// its drop reason.
fn malformed_frames_are_counted_while_traffic_flows() {
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let before = lab.stats();
    let (client, out) = lab.py_spawn("c1", "lab_client.py", &[VIP, &VIP_PORT.to_string(), "400"]);
    let rounds = 50u64;
    let sent = lab.py(
        "c1",
        "lab_raw.py",
        &[
            "malformed",
            "c0",
            lab::SLUICE_CLIENT_MAC,
            &Lab::client_addr(1),
            VIP,
            &VIP_PORT.to_string(),
            &rounds.to_string(),
        ],
    );
    assert!(
        lab.wait_child(client, Duration::from_secs(30)),
        "lab_client did not finish"
    );
    let r = Lines::new(out)
        .next(Duration::from_secs(1))
        .expect("lab_client's result");
    assert_eq!(
        r["errors"], 0,
        "requests failed while malformed frames flowed: {r}"
    );
    assert_eq!(r["ok"], 400, "{r}");
    // Counters are published once per burst; give the last burst a moment.
    std::thread::sleep(Duration::from_millis(200));
    let after = lab.stats();
    let delta = |reason: &str| drops(&after, reason) - drops(&before, reason);
    let n = |kind: &str| sent["sent"][kind].as_u64().unwrap_or(0);
    assert_eq!(n("ttl_1"), rounds, "{sent}");
    // A frame announcing a VLAN tag but cut short never reaches sluice:
    // Linux frees it in skb_vlan_untag() before any AF_PACKET tap, so
    // malformed_ethernet cannot move here (sent anyway: it must not crash or
    // count elsewhere). tests/malformed.rs covers that reason in memory.
    let expect = [
        ("malformed_ethernet", 0),
        (
            "malformed_ipv4",
            n("bad_ihl") + n("bad_version") + n("bogus_total_length") + n("truncated_ipv4"),
        ),
        ("fragment", n("fragment_first") + n("fragment_later")),
        ("malformed_arp", n("arp_short") + n("arp_wrong_hw")),
        ("malformed_l4", n("tcp_bad_offset")),
        ("unsupported_ethertype", n("ipv6")),
    ];
    eprintln!(
        "malformed: flows_created moved by {} for 400 connections and {} TTL-1 SYNs",
        worker_sum(&after, "flows_created") - worker_sum(&before, "flows_created"),
        n("ttl_1")
    );
    let got: Vec<(&str, u64)> = expect.iter().map(|&(k, _)| (k, delta(k))).collect();
    assert_eq!(
        got,
        expect.to_vec(),
        "drop counters moved by other amounts than the frames sent ({sent}); stats after: {}",
        after["drops"]
    );
    // TTL-1 SYNs are answered with ICMP time exceeded (rate-limited: any
    // beyond the limit are counted as ttl_expired drops instead).
    let icmp = worker_sum(&after, "icmp_errors") - worker_sum(&before, "icmp_errors");
    assert_eq!(icmp + delta("ttl_expired"), n("ttl_1"), "{sent} {after}");
}

/// A SYN to the VIP that arrives with TTL 1 is answered with ICMP time
/// exceeded (as a router would) and must leave no trace: no flow entry, no
/// flow counted for a backend. (This test found flows created before the
/// TTL check.)
fn ttl_expired_syn_creates_no_flow() {
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let before = lab.stats();
    let sent = lab.py(
        "c1",
        "lab_raw.py",
        &[
            "malformed",
            "c0",
            lab::SLUICE_CLIENT_MAC,
            &Lab::client_addr(1),
            VIP,
            &VIP_PORT.to_string(),
            "20",
            "ttl_1",
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    let after = lab.stats();
    assert_eq!(
        worker_sum(&after, "icmp_errors") - worker_sum(&before, "icmp_errors"),
        20,
        "{sent} {}",
        after["drops"]
    );
    assert_eq!(drops(&after, "ttl_expired"), drops(&before, "ttl_expired"));
    assert_eq!(
        worker_sum(&after, "flows_created"),
        worker_sum(&before, "flows_created"),
        "TTL-expired SYNs created flows"
    );
    assert_eq!(
        worker_sum(&after, "flows_active"),
        worker_sum(&before, "flows_active"),
        "TTL-expired SYNs occupy flow-table entries"
    );
}

/// Forged backend -> client segments. From 10.200.2.11:9999 (no endpoint)
/// nothing reaches the client and no_service counts it. From
/// 10.200.2.11:8080 (an endpoint of exactly one service) to a client tuple
/// sluice never saw, sluice reverse-NATs it statelessly (S4a: any instance
/// must pass replies of flows it does not know), so the client sees it
/// from VIP:80 and its kernel answers with a RST.
fn backend_reply_from_wrong_port_or_unknown_flow_is_dropped() {
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    // Client traffic first: sluice learns the client's MAC from its ARP.
    lab.wait_ready();
    let before = lab.stats();
    let (stray_port, unknown_port) = ("45001", "45002");
    let (sniffer, out) = lab.py_spawn(
        "c1",
        "lab_raw.py",
        &["sniff", "c0", "3", stray_port, unknown_port],
    );
    // The sniffer opens its socket within python's start-up time.
    std::thread::sleep(Duration::from_millis(700));
    let b1 = Lab::backend_addr(1);
    let c1 = Lab::client_addr(1);
    lab.py(
        "b1",
        "lab_raw.py",
        &["tcp", &b1, "9999", &c1, stray_port, "PA", "3"],
    );
    lab.py(
        "b1",
        "lab_raw.py",
        &["tcp", &b1, "8080", &c1, unknown_port, "PA", "3"],
    );
    assert!(
        lab.wait_child(sniffer, Duration::from_secs(10)),
        "sniffer failed"
    );
    let seen = Lines::new(out)
        .next(Duration::from_secs(1))
        .expect("sniffer's result");
    let frames = seen.as_array().cloned().unwrap_or_default();
    let matching = |f: &Value, src: &str, dst: &str| f["src"] == src && f["dst"] == dst;
    let any_stray = frames.iter().any(|f| {
        f["src"].as_str().is_some_and(|s| s.ends_with(":9999"))
            || f["dst"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!(":{stray_port}")))
    });
    assert!(
        !any_stray,
        "a segment from a non-endpoint port reached the client: {seen}"
    );
    let vip = format!("{VIP}:{VIP_PORT}");
    let client = format!("{c1}:{unknown_port}");
    let natted = frames
        .iter()
        .filter(|f| matching(f, &vip, &client) && f["flags"] == "PA")
        .count();
    assert_eq!(
        natted, 3,
        "the unknown-flow segments should reach the client as from the VIP: {seen}"
    );
    // The client has no such connection: its kernel resets it.
    assert!(
        frames
            .iter()
            .any(|f| matching(f, &client, &vip)
                && f["flags"].as_str().is_some_and(|s| s.contains('R'))),
        "the client did not reset the unknown flow: {seen}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let after = lab.stats();
    assert_eq!(
        drops(&after, "no_service") - drops(&before, "no_service"),
        3,
        "segments from 10.200.2.11:9999 should count as no_service: {}",
        after["drops"]
    );
    assert_eq!(
        drops(&after, "reply_unknown_flow"),
        drops(&before, "reply_unknown_flow"),
        "{}",
        after["drops"]
    );
    assert!(
        worker_sum(&after, "replies") >= worker_sum(&before, "replies") + 3,
        "the unknown-flow segments were not reverse-NATed: before {before}, after {after}"
    );
    // The client's RST crosses sluice as a mid-flow packet with no entry.
    let explain = lab.ctl(&["explain", "web", &client, "--mid-flow"]);
    eprintln!("explain for the unknown flow: {explain}");
}

/// S3: a client limited to 10 local ports makes a steady stream of short
/// connections while both backends are replaced one by one (add new,
/// drain old, remove old): no connection fails. The client binds the ten
/// ports in turn, so every port is reused many times during each step and
/// the set of tuples (hence Maglev's choices) is the same on every run.
fn s3_backends_replaced_one_by_one_without_failed_connections() {
    let mut lab = Lab::up(4, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    let out = lab.run_in(
        "c1",
        &["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40009"],
    );
    assert!(out.status.success(), "sysctl: {:?}", out);
    lab.start_sluice();
    lab.wait_ready();
    let (stream, out) = lab.py_spawn(
        "c1",
        "lab_stream.py",
        &[
            VIP,
            &VIP_PORT.to_string(),
            "12",
            "--timeout",
            "2",
            "--ports",
            "40000-40009",
        ],
    );
    let port = lab::BACKEND_PORT;
    let ep = |i: usize| format!("{}:{port}", Lab::backend_addr(i));
    let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
    pause(1500);
    for (old, new) in [(1, 3), (2, 4)] {
        lab.ctl(&["endpoint", "add", "web", &ep(new)]);
        pause(1000);
        lab.ctl(&["endpoint", "drain", "web", &ep(old)]);
        pause(1500);
        lab.ctl(&["endpoint", "remove", "web", &ep(old)]);
        pause(1000);
    }
    assert!(
        lab.wait_child(stream, Duration::from_secs(30)),
        "lab_stream failed"
    );
    let r = Lines::new(out)
        .next(Duration::from_secs(1))
        .expect("lab_stream's result");
    eprintln!("S3 stream: {r}");
    assert_eq!(
        r["errors"], 0,
        "failed connections during the replacement: {r}"
    );
    assert!(r["ports"].as_u64().unwrap_or(99) <= 10, "{r}");
    let t = tally(&r);
    assert!(
        r["ok"].as_u64().unwrap_or(0) >= 500,
        "too few connections to mean anything: {r}"
    );
    for b in ["b1", "b2", "b3", "b4"] {
        assert!(
            t.get(b).copied().unwrap_or(0) > 0,
            "{b} served nothing: {r}"
        );
    }
    let s = lab.stats();
    let eps: Vec<String> = s["services"][0]["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["endpoint"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(eps, vec![ep(3), ep(4)], "{s}");
}

/// Waits for the next JSON line of a lab_conn client.
fn next_line(lines: &Lines, limit: Duration) -> Value {
    lines
        .next(limit)
        .unwrap_or_else(|| panic!("no line from lab_conn within {limit:?}"))
}

/// A keep-alive connection through the VIP (lab_conn.py): a request every
/// 0.2 s on one TCP connection that is never reopened.
struct KeepAlive {
    child: usize,
    lines: Lines,
    /// The client's "addr:port".
    client: String,
    /// The backend that answered the first request.
    backend: String,
}

/// Opens `n` keep-alive connections from client `c` for `seconds`, and
/// waits for each one's first answer (which must come from b1 or b2).
fn open_keep_alive(lab: &mut Lab, c: usize, n: usize, seconds: &str) -> Vec<KeepAlive> {
    open_keep_alive_every(lab, c, n, seconds, "0.2")
}

/// [`open_keep_alive`] with a request every `interval` seconds.
fn open_keep_alive_every(
    lab: &mut Lab,
    c: usize,
    n: usize,
    seconds: &str,
    interval: &str,
) -> Vec<KeepAlive> {
    let port = VIP_PORT.to_string();
    let args = [
        VIP,
        port.as_str(),
        seconds,
        "--interval",
        interval,
        "--timeout",
        "8",
    ];
    let mut conns: Vec<(usize, Lines)> = (0..n)
        .map(|_| {
            let (child, out) = lab.py_spawn(&format!("c{c}"), "lab_conn.py", &args);
            (child, Lines::new(out))
        })
        .collect();
    conns
        .drain(..)
        .map(|(child, lines)| {
            let hello = next_line(&lines, Duration::from_secs(5));
            let first = next_line(&lines, Duration::from_secs(5));
            let backend = first["backend"].as_str().unwrap_or("").to_string();
            assert!(backend == "b1" || backend == "b2", "{hello} {first}");
            KeepAlive {
                child,
                client: hello["connected"].as_str().unwrap_or("").to_string(),
                lines,
                backend,
            }
        })
        .collect()
}

/// Reads every connection to its end: no request may fail and none may
/// change backend. Returns how many answers came after `since` (unix time).
fn finish_keep_alive(lab: &mut Lab, conns: &[KeepAlive], since: f64) -> usize {
    let mut after = 0;
    for k in conns {
        loop {
            let l = next_line(&k.lines, Duration::from_secs(12));
            assert!(
                l.get("error").is_none(),
                "a keep-alive connection failed: {l}"
            );
            if l.get("done").is_some() {
                break;
            }
            assert_eq!(l["backend"].as_str(), Some(k.backend.as_str()), "{l}");
            after += usize::from(l["t"].as_f64().unwrap_or(0.0) > since);
        }
        assert!(lab.wait_child(k.child, Duration::from_secs(5)));
    }
    after
}

/// One endpoint's row of `stats` (by "ADDR:PORT").
fn endpoint_stats<'a>(s: &'a Value, endpoint: &str) -> &'a Value {
    s["services"][0]["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == endpoint))
        .unwrap_or_else(|| panic!("no endpoint {endpoint} in stats: {s}"))
}

/// S2 (a), the skew made visible: two clients hold four keep-alive
/// connections each to a service of two backends, then four backends join.
/// The live connections stay on their backends (moving one would break it),
/// and both `ctl stats` and `ctl top` show at a glance that two of six
/// backends carry every active flow and all the packets while the four new
/// ones idle; new connections meanwhile spread over all six. Every request
/// of the persistent connections succeeds throughout.
fn s2_skew_of_long_lived_connections_is_visible() {
    let mut lab = Lab::up(6, 2, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let ep = |i: usize| format!("{}:8080", Lab::backend_addr(i));
    let mut conns = open_keep_alive(&mut lab, 1, 4, "8");
    conns.extend(open_keep_alive(&mut lab, 2, 4, "8"));
    for i in 3..=6 {
        lab.ctl(&["endpoint", "add", "web", &ep(i)]);
    }
    // Let the persistent connections make a few more requests each.
    std::thread::sleep(Duration::from_millis(1500));
    let s = lab.stats();
    let old: u64 = (1..=2)
        .map(|i| {
            endpoint_stats(&s, &ep(i))["active_flows"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(old, 8, "b1 and b2 should carry the 8 connections: {s}");
    for i in 3..=6 {
        let e = endpoint_stats(&s, &ep(i));
        assert_eq!(e["active_flows"], 0, "{e}");
        assert_eq!(
            e["packets_in"],
            0,
            "a live connection moved to {}: {e}",
            ep(i)
        );
    }
    // The operator's view: each new backend's row reads 0 flows, 0.0% share.
    let top = lab.ctl_text(&["top", "--count", "1"]);
    for i in 3..=6 {
        let row = top
            .lines()
            .find(|l| l.trim_start().starts_with(&ep(i)))
            .unwrap_or_else(|| panic!("no row for {} in top:\n{top}", ep(i)));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols.get(3),
            Some(&"0"),
            "flows column of {row:?} in:\n{top}"
        );
    }
    eprintln!("S2: ctl top with the skew:\n{top}");
    // New connections spread over all six.
    let r = lab.http(1, 120);
    assert_eq!(r["errors"], 0, "{r}");
    let t = tally(&r);
    for b in ["b1", "b2", "b3", "b4", "b5", "b6"] {
        assert!(
            t.get(b).copied().unwrap_or(0) > 0,
            "{b} got no new connection: {r}"
        );
    }
    // The persistent connections never failed nor moved.
    finish_keep_alive(&mut lab, &conns, 0.0);
}

/// S4c: a planned restart (SIGTERM, start again) keeps established
/// connections even though the endpoint set grew from 2 to 6 backends while
/// sluice was down. Eight keep-alive connections run across the restart:
/// every request succeeds and each stays on its backend, though Maglev over
/// the new set would send some of them elsewhere (checked with `explain`:
/// those would have broken without the flow snapshot).
fn s4c_planned_restart_keeps_connections_when_endpoints_changed_meanwhile() {
    let mut lab = Lab::up(6, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let conns = open_keep_alive(&mut lab, 1, 8, "7");
    lab.stop_sluice();
    lab.write_config(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]);
    lab.start_sluice();
    let restarted_at = lab::unix_now();
    assert!(
        lab.sluice_log().contains("flows restored"),
        "{}",
        lab.sluice_log()
    );
    // Maglev's answer for each connection over the new set: the snapshot
    // overrides it where it differs.
    let mut moved = 0;
    for k in &conns {
        let (client, b) = (&k.client, &k.backend);
        let x = lab.ctl(&["explain", "web", client, "--mid-flow"]);
        let x = x.get("result").unwrap_or(&x);
        let maglev = x["mid_flow_backend"].as_str().unwrap_or("").to_string();
        let want = format!("{}:8080", Lab::backend_addr(b[1..].parse().unwrap_or(0)));
        assert_eq!(x["backend"].as_str(), Some(want.as_str()), "{x}");
        moved += usize::from(maglev != want);
    }
    assert!(
        moved > 0,
        "no connection would have moved: the test shows nothing"
    );
    let after = finish_keep_alive(&mut lab, &conns, restarted_at);
    eprintln!("S4c: {moved} of 8 connections kept their backend only thanks to the snapshot; {after} answers after the restart");
    assert!(
        after >= 8 * 5,
        "too few requests after the restart: {after}"
    );
}

/// S4b: a long-lived connection whose backend is removed gets a RST on its
/// next packet: the client's next request fails with ECONNRESET within a
/// second instead of hanging in retransmissions.
fn s4b_backend_removed_client_gets_reset_within_a_second() {
    // One backend: once it is removed nothing but sluice can answer the
    // client, so the reset it sees is sluice's own (a RST the client's
    // kernel discarded would leave it retransmitting until its timeout).
    let mut lab = Lab::up(1, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let (_conn, out) = lab.py_spawn(
        "c1",
        "lab_conn.py",
        &[
            VIP,
            &VIP_PORT.to_string(),
            "15",
            "--interval",
            "0.2",
            "--timeout",
            "10",
        ],
    );
    let lines = Lines::new(out);
    let hello = next_line(&lines, Duration::from_secs(5));
    assert!(hello.get("connected").is_some(), "{hello}");
    for _ in 0..3 {
        let l = next_line(&lines, Duration::from_secs(5));
        assert!(l.get("error").is_none(), "failed before the removal: {l}");
        assert_eq!(l["backend"], "b1", "{l}");
    }
    let rst = lab.capture("c1", "c0", 1, "tcp[tcpflags] & tcp-rst != 0");
    let removed_at = lab::unix_now();
    lab.ctl(&[
        "endpoint",
        "remove",
        "web",
        &format!("{}:{}", Lab::backend_addr(1), lab::BACKEND_PORT),
    ]);
    let applied = lab::unix_now() - removed_at;
    let failure = loop {
        let l = next_line(&lines, Duration::from_secs(3));
        if l.get("error").is_some() {
            break l;
        }
        assert!(
            l["t"].as_f64().unwrap_or(0.0) < removed_at + 0.5,
            "requests still succeed after the removal: {l}"
        );
    };
    let after = failure["t"].as_f64().unwrap_or(f64::MAX) - removed_at;
    eprintln!(
        "S4b: {failure} {after:.3} s after the removal request (ctl returned after {applied:.3} s)"
    );
    assert_eq!(
        failure["error"], "ConnectionResetError",
        "expected ECONNRESET: {failure}"
    );
    assert!(after < 1.0, "the reset came {after:.3} s after the removal");
    let seen = lab.capture_text(&rst, Duration::from_secs(2));
    eprintln!("S4b RST as the client's tcpdump saw it:\n{seen}");
    assert!(
        seen.contains("198.18.0.100.80 >") && seen.contains("cksum") && seen.contains("(correct)"),
        "the client must see sluice's RST with correct checksums: {seen}"
    );
    assert!(
        !seen.contains("incorrect") && !seen.contains("bad cksum"),
        "{seen}"
    );
    let s = lab.stats();
    assert_eq!(worker_sum(&s, "resets"), 1, "one RST, the first: {s}");
}

/// A TCP connection to a service with no endpoint is refused at once
/// (ECONNREFUSED from sluice's RST, not a connect timeout), and a UDP
/// datagram to such a service earns ICMP port unreachable (ECONNREFUSED on
/// the client's connected socket). Both checked by the client's kernel and
/// by tcpdump's checksum verification.
fn refused_within_100ms_when_a_service_has_no_endpoint() {
    let mut lab = Lab::up(1, 1, Backend::AfPacket);
    lab.write_config_with(
        &[],
        &format!("[[service]]\nname = \"dns\"\nvip = \"{VIP}\"\nport = 53\nprotocol = \"udp\"\n"),
    );
    lab.start_sluice();
    let probe = r#"
import json, socket, sys, time
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = []
for i in range(int(sys.argv[4])):
    t0 = time.monotonic()
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=3)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.connect((host, port))
            s.send(b"q")
            s.recv(100)
        res.append({"error": None, "s": time.monotonic() - t0})
    except Exception as e:
        res.append({"error": type(e).__name__, "s": time.monotonic() - t0})
    s = None
    time.sleep(0.05)
print(json.dumps(res))
"#;
    let run = |lab: &Lab, port: &str, proto: &str, n: &str| -> Value {
        let out = lab.run_in("c1", &["python3", "-c", probe, VIP, port, proto, n]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("probe: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    // The first attempt also resolves sluice's MAC (ARP): not timed.
    let warm = run(&lab, "80", "tcp", "1");
    assert_eq!(warm[0]["error"], "ConnectionRefusedError", "{warm}");
    let rst = lab.capture("c1", "c0", 1, "tcp[tcpflags] & tcp-rst != 0");
    let tcp = run(&lab, "80", "tcp", "5");
    let icmp = lab.capture("c1", "c0", 1, "icmp");
    let udp = run(&lab, "53", "udp", "5");
    eprintln!("refused: tcp {tcp}\nudp {udp}");
    for (what, r) in [("TCP", &tcp), ("UDP", &udp)] {
        for a in r.as_array().expect("results") {
            assert_eq!(a["error"], "ConnectionRefusedError", "{what}: {r}");
            let s = a["s"].as_f64().unwrap_or(9.9);
            assert!(s < 0.1, "{what} refused after {s:.3} s, not at once: {r}");
        }
    }
    let rst = lab.capture_text(&rst, Duration::from_secs(2));
    let icmp = lab.capture_text(&icmp, Duration::from_secs(2));
    eprintln!("tcpdump on the client:\n{rst}{icmp}");
    assert!(
        rst.contains("(correct)") && !rst.contains("incorrect") && !rst.contains("bad cksum"),
        "{rst}"
    );
    // tcpdump flags a bad ICMP checksum ("wrong icmp cksum") or IP header
    // checksum ("bad cksum"); a good one goes unremarked.
    assert!(
        icmp.contains("port 53 unreachable")
            && !icmp.contains("wrong")
            && !icmp.contains("bad cksum"),
        "{icmp}"
    );
    let s = lab.stats();
    assert!(worker_sum(&s, "icmp_errors") >= 5, "{s}");
}

/// A spoofed flood cannot push real connections out of the flow table
/// (conntrack's assured entries, Katran's flood guard). Eight keep-alive
/// connections, a request every 4 s, sit idle while 4x the table's capacity
/// of SYNs and 4x of bare ACKs from random sources arrive, each answered by
/// the real backends (SYN-ACKs, RSTs); then the service grows from 2 to 6
/// backends, which would move most of them if sluice had forgotten them.
/// Every connection's next requests must reach its own backend.
fn flood_never_evicts_real_connections() {
    let capacity = 1024usize;
    let mut lab = Lab::up(6, 1, Backend::AfPacket);
    lab.flow_capacity = Some(capacity);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let conns = open_keep_alive_every(&mut lab, 1, 8, "9", "4");
    let before = lab.stats();
    let t0 = lab::unix_now();
    let flood = lab.py(
        "c1",
        "lab_raw.py",
        &[
            "flood",
            "c0",
            lab::SLUICE_CLIENT_MAC,
            VIP,
            &VIP_PORT.to_string(),
            &(8 * capacity).to_string(),
            "198.19",
        ],
    );
    // Let the backends' answers to the last of it come back.
    std::thread::sleep(Duration::from_millis(300));
    let during = lab.stats();
    let flood_s = lab::unix_now() - t0;
    assert!(
        flood_s < 3.5,
        "the flood took {flood_s:.1} s: longer than the connections' idle spell"
    );
    let delta = |k: &str| worker_sum(&during, k) - worker_sum(&before, k);
    let occupancy = worker_sum(&during, "flows_active");
    // Which connections Maglev alone would move once there are 6 backends.
    let all: Vec<(usize, u32)> = (1..=6).map(|i| (i, 1)).collect();
    let specs: Vec<String> = all
        .iter()
        .map(|&(i, w)| format!("{}:{}={w}", Lab::backend_addr(i), lab::BACKEND_PORT))
        .collect();
    let mut args = vec!["endpoints", "set", "web"];
    args.extend(specs.iter().map(String::as_str));
    lab.ctl(&args);
    let mut would_move = 0;
    for k in &conns {
        let x = lab.ctl(&["explain", "web", &k.client, "--mid-flow"]);
        let x = &x["result"];
        assert_eq!(x["decision"], "keep", "flow forgotten: {x}");
        let maglev = x["mid_flow_backend"].as_str().unwrap_or("");
        let pinned = x["backend"].as_str().unwrap_or("");
        would_move += usize::from(maglev != pinned);
    }
    let answered = finish_keep_alive(&mut lab, &conns, t0);
    eprintln!(
        "flood: {flood}; table capacity {capacity}, occupancy after {occupancy}; \
         flows created {}, evicted {}, untracked {}; real connections kept {} of 8 \
         ({would_move} would have moved if forgotten), {answered} answers after the flood",
        delta("flows_created"),
        delta("flows_evicted"),
        delta("flows_untracked"),
        conns.len()
    );
    assert!(
        flood["sent"].as_u64().unwrap_or(0) >= 8 * capacity as u64,
        "{flood}"
    );
    assert!(delta("flows_evicted") > 0, "the flood must fill the table");
    assert!(would_move > 0, "the scale-up must be one that moves flows");
    assert!(answered >= 8, "every connection answered after the flood");
}

/// The systemd unit's claims hold: sluice runs as an unprivileged user with
/// exactly the capabilities config/sluice.service grants (parsed from the
/// file), forwards, hands its AF_PACKET sockets to the fd store, and tells
/// the service manager READY=1 (Type=notify) only when every worker runs
/// the configuration; `ctl status` and `ctl wait --ready` agree.
fn unprivileged_with_the_units_capabilities_and_ready_notification() {
    let unit = std::fs::read_to_string(format!(
        "{}/config/sluice.service",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("read config/sluice.service");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    assert!(unit.contains("Type=notify"), "{unit}");
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    let notify = lab.dir().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).expect("bind the notify socket");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o777)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    lab.env
        .push(("NOTIFY_SOCKET".into(), notify.display().to_string()));
    lab.run_as = Some((65534, caps.clone()));
    let started = Instant::now();
    lab.start_sluice();
    // Before READY=1: each AF_PACKET socket for the fd store (FDSTORE=1,
    // named by interface and worker; the descriptors themselves are
    // dropped by this plain recv).
    let mut buf = [0u8; 512];
    let mut before = Vec::new();
    let msg = loop {
        let n = rx.recv(&mut buf).expect("READY=1 from sluice");
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.starts_with("READY=1") {
            break msg;
        }
        before.push(msg);
    };
    let ready_after = started.elapsed();
    for iface in ["l0", "l1"] {
        assert!(
            before
                .iter()
                .any(|m| m.starts_with(&format!("FDSTORE=1\nFDNAME=afpacket-{iface}-w0of1-"))),
            "no FDSTORE for {iface} before READY=1: {before:?}"
        );
    }
    let status = lab.ctl(&["status"]);
    assert_eq!(status["result"]["ready"], true, "{status}");
    lab.ctl(&["wait", "--ready", "--timeout", "2s"]);
    let pid = lab.sluice_pid().expect("running");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("65534"), "not unprivileged: {uid_line}");
    lab.wait_ready();
    let r = lab.http(1, 100);
    assert_eq!(r["errors"], 0, "{r}");
    eprintln!(
        "unprivileged ({uid_line}) with {caps:?}: {msg:?} {ready_after:?} after the start; 100 requests, 0 errors"
    );
    // CAP_SYS_NICE is what the real-time control thread needs: no
    // fallback warning.
    let log = lab.sluice_log();
    assert!(
        !log.contains("cannot change the thread's scheduling class"),
        "{log}"
    );
}

/// Starts scripts/lab_conn.py in c1: one keep-alive connection through the
/// VIP with a request every `interval` seconds for `secs` seconds. Returns
/// its output lines once it answered, the first answer and its backend.
fn long_connection(lab: &mut Lab, secs: &str, interval: &str) -> (Lines, Value, Value) {
    let (_conn, out) = lab.py_spawn(
        "c1",
        "lab_conn.py",
        &[
            VIP,
            &VIP_PORT.to_string(),
            secs,
            "--interval",
            interval,
            "--timeout",
            "8",
        ],
    );
    let lines = Lines::new(out);
    let hello = next_line(&lines, Duration::from_secs(5));
    let first = next_line(&lines, Duration::from_secs(5));
    let backend = first["backend"].clone();
    assert!(backend.is_string(), "{hello} {first}");
    (lines, first, backend)
}

/// A long-lived connection with a request every 200 ms across a restart of
/// sluice (SIGTERM, start again with the same configuration). With
/// `client_rearps`, the client's neighbor entry for sluice is flushed right
/// after the restart, so its next packet is preceded by an ARP request that
/// teaches the new sluice the client's MAC.
fn s4a_restart(client_rearps: bool) {
    let mut lab = Lab::up(3, 1, Backend::AfPacket);
    // What S4a is about: an instance that knows nothing of the flows.
    lab.without_flow_snapshot();
    lab.write_config(&[(1, 1), (2, 1), (3, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let (lines, first, backend) = long_connection(&mut lab, "7", "0.2");
    next_line(&lines, Duration::from_secs(5));
    let t0 = Instant::now();
    lab.stop_sluice();
    std::thread::sleep(Duration::from_millis(300));
    lab.start_sluice();
    if client_rearps {
        let out = lab.run_in("c1", &["ip", "neigh", "flush", "dev", "c0"]);
        assert!(out.status.success(), "{out:?}");
    }
    let restart = t0.elapsed();
    let restarted_at = lab::unix_now();
    let mut after_restart = 0;
    let mut longest_gap = 0.0f64;
    let mut last_t = first["t"].as_f64().unwrap_or(0.0);
    loop {
        let l = next_line(&lines, Duration::from_secs(12));
        if l.get("error").is_some() {
            let s = lab.stats();
            panic!(
                "the connection failed across the restart: {l}; restarted sluice's drops {}, table_misses {}, forwarded {}, replies {}",
                s["drops"],
                worker_sum(&s, "table_misses"),
                worker_sum(&s, "forwarded"),
                worker_sum(&s, "replies")
            );
        }
        if l.get("done").is_some() {
            break;
        }
        assert_eq!(l["backend"], backend, "the connection changed backend: {l}");
        let t = l["t"].as_f64().unwrap_or(0.0);
        longest_gap = longest_gap.max(t - last_t);
        last_t = t;
        if t > restarted_at {
            after_restart += 1;
        }
    }
    eprintln!(
        "S4a: restart took {restart:?}; longest gap between answers {longest_gap:.2} s; {after_restart} answers after it"
    );
    assert!(after_restart >= 5, "too few requests after the restart");
    let s = lab.stats();
    assert!(
        worker_sum(&s, "table_misses") > 0,
        "the restarted sluice saw no mid-flow packet without an entry: {s}"
    );
}

/// S4a as SCENARIOS.md states it: the connection survives a plain restart.
/// The restarted sluice has never heard from the on-link client (whose own
/// entry for 10.200.1.254 is still fresh, so it does not ARP): the first
/// reply is dropped as neighbor_unresolved, its headers make the control
/// thread ARP for the client, and the retransmission gets through.
/// (This test found that gap; it used to stall.)
fn s4a_restart_keeps_long_lived_connection() {
    s4a_restart(false);
}

/// S4a's flow-consistency half, with the ARP gap above taken out: after
/// the restart the client re-resolves sluice's address (as a client behind
/// a router, or one whose entry went stale, would). Mid-flow packets miss
/// the new, empty flow table, go to the same backend by Maglev, replies are
/// reverse-NATed statelessly; no request fails or changes backend.
fn s4a_restart_keeps_long_lived_connection_when_client_rearps() {
    s4a_restart(true);
}

/// TCP segments a namespace's kernel has retransmitted (`/proc/net/snmp`).
fn retransmitted(lab: &Lab, ns: &str) -> u64 {
    let out = lab.run_in(ns, &["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no RetransSegs in {text}"))
}

/// S4a with SIGKILL under a service manager: the supervisor
/// (scripts/lab_supervisor.py, doing what systemd does with
/// `FileDescriptorStoreMax=` and `Restart=always`, here 150 ms after the
/// exit) keeps sluice's AF_PACKET sockets while no sluice runs. The request
/// the client sends during the outage (longer than its 100 ms interval)
/// waits in the ring and is answered when sluice is back: the client never
/// retransmits. Client and backends get a 1 s minimum RTO, so a lost
/// segment shows as a retransmission however slow the machine is.
fn s4a_kill9_under_a_supervisor_loses_no_frame() {
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.without_flow_snapshot();
    lab.supervised = Some(150);
    lab.write_config(&[(1, 1), (2, 1)]);
    let route = |ns: &str, args: &[&str]| {
        let out = lab.run_in(
            ns,
            &[&["ip", "route", "change"], args, &["rto_min", "1000ms"]].concat(),
        );
        assert!(out.status.success(), "{ns}: {out:?}");
    };
    route("c1", &["198.18.0.0/15", "via", "10.200.1.254", "dev", "c0"]);
    for b in ["b1", "b2"] {
        route(b, &["default", "via", "10.200.2.254", "dev", "b0"]);
    }
    lab.start_sluice();
    lab.wait_ready();
    let (lines, first, backend) = long_connection(&mut lab, "6", "0.1");
    let before = retransmitted(&lab, "c1");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let pid = lab.kill9_supervised();
        lab.wait_restarted(pid);
        std::thread::sleep(Duration::from_millis(700));
    }
    let mut longest_gap = 0.0f64;
    let mut last_t = first["t"].as_f64().unwrap_or(0.0);
    loop {
        let l = next_line(&lines, Duration::from_secs(12));
        assert!(l.get("error").is_none(), "the connection failed: {l}");
        if l.get("done").is_some() {
            break;
        }
        assert_eq!(l["backend"], backend, "the connection changed backend: {l}");
        let t = l["t"].as_f64().unwrap_or(0.0);
        longest_gap = longest_gap.max(t - last_t);
        last_t = t;
    }
    let retrans = retransmitted(&lab, "c1") - before;
    let log = lab.sluice_log();
    let waiting: u64 = log
        .lines()
        .filter(|l| l.contains("took over the socket"))
        .filter_map(|l| {
            l.split("unread=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    eprintln!(
        "S4a, 3 x kill -9 under a supervisor: longest gap between answers {:.0} ms, \
         client retransmissions {retrans}, frames waiting in kept rings {waiting}",
        longest_gap * 1e3
    );
    assert!(
        waiting >= 1,
        "no frame waited in a kept ring: was the socket taken back?\n{log}"
    );
    assert_eq!(
        retrans, 0,
        "the client had to retransmit: a frame was lost across a restart"
    );
}

/// Kept sockets that no longer match the configuration are not taken back:
/// sluice restarted (SIGKILL, under the supervisor) with 2 workers where
/// its sockets were stored by a 1-worker instance closes them, drops them
/// from the store, opens its own (in a fanout group) and forwards.
fn kept_sockets_of_another_worker_count_are_dropped() {
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.supervised = Some(0);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    assert_eq!(lab.http(1, 20)["ok"], 20);
    lab.workers = 2;
    lab.write_config(&[(1, 1), (2, 1)]);
    let pid = lab.kill9_supervised();
    lab.wait_restarted(pid);
    lab.wait_ready();
    let log = lab.sluice_log();
    for iface in ["l0", "l1"] {
        let old = format!("afpacket-{iface}-w0of1-");
        assert!(
            log.lines()
                .any(|l| l.contains("matches no port of this configuration") && l.contains(&old)),
            "{old}* was not dropped:\n{log}"
        );
        // The supervisor's own log line: the store let it go.
        assert!(
            log.lines().any(|l| l.contains(&format!("remove {old}"))),
            "the store still holds {old}*:\n{log}"
        );
    }
    assert!(
        !log.contains("took over the socket"),
        "a 1-worker socket was taken back:\n{log}"
    );
    let r = lab.http(1, 100);
    assert_eq!(r["ok"], 100, "{r}");
    let s = lab.stats();
    assert_eq!(s["workers"].as_array().map(Vec::len), Some(2), "{s}");
}

/// ARP: sluice answers for its own addresses and the VIP, and resolves the
/// backends itself (the lab has no static neighbors anywhere).
fn arp_resolution_learns_backends_and_answers_for_vip() {
    let mut lab = Lab::up(2, 1, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let r = lab.http(1, 40);
    assert_eq!(r["errors"], 0, "{r}");
    let t = tally(&r);
    assert!(t.contains_key("b1") && t.contains_key("b2"), "{r}");

    let neigh = |ns: &str, ip: &str| {
        let out = lab.run_in(ns, &["ip", "-j", "neigh", "show", ip]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0]["lladdr"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(neigh("c1", "10.200.1.254"), lab::SLUICE_CLIENT_MAC);
    for b in ["b1", "b2"] {
        assert_eq!(neigh(b, "10.200.2.254"), lab::SLUICE_BACKEND_MAC, "{b}");
    }
    let vip = lab.py(
        "c1",
        "lab_raw.py",
        &["arp", "c0", &Lab::client_addr(1), VIP],
    );
    assert_eq!(vip["mac"], lab::SLUICE_CLIENT_MAC, "ARP for the VIP: {vip}");
    let own = lab.py(
        "b1",
        "lab_raw.py",
        &["arp", "b0", &Lab::backend_addr(1), "10.200.2.254"],
    );
    assert_eq!(own["mac"], lab::SLUICE_BACKEND_MAC, "{own}");
    // Nobody answers for an address sluice does not own.
    let stranger = lab.py(
        "c1",
        "lab_raw.py",
        &["arp", "c0", &Lab::client_addr(1), "10.200.1.77"],
    );
    assert_eq!(stranger["mac"], Value::Null, "{stranger}");
    let s = lab.stats();
    eprintln!(
        "ARP: neighbor_unresolved drops {} (packets that waited for a backend's MAC)",
        drops(&s, "neighbor_unresolved")
    );
}

machine_tests!(lab::NEEDS;
    http_through_vip_afpacket,
    #[cfg(feature = "dpdk")]
    http_through_vip_dpdk,
    s1_sequential_connections_spread_by_weight_real_tcp,
    malformed_frames_are_counted_while_traffic_flows,
    ttl_expired_syn_creates_no_flow,
    backend_reply_from_wrong_port_or_unknown_flow_is_dropped,
    s3_backends_replaced_one_by_one_without_failed_connections,
    s2_skew_of_long_lived_connections_is_visible,
    s4c_planned_restart_keeps_connections_when_endpoints_changed_meanwhile,
    s4b_backend_removed_client_gets_reset_within_a_second,
    refused_within_100ms_when_a_service_has_no_endpoint,
    flood_never_evicts_real_connections,
    unprivileged_with_the_units_capabilities_and_ready_notification,
    s4a_restart_keeps_long_lived_connection,
    s4a_restart_keeps_long_lived_connection_when_client_rearps,
    s4a_kill9_under_a_supervisor_loses_no_frame,
    kept_sockets_of_another_worker_count_are_dropped,
    arp_resolution_learns_backends_and_answers_for_vip,
    two_workers_afpacket_hand_off_almost_nothing,
    #[cfg(feature = "dpdk")]
    two_workers_dpdk_without_rss_announce_the_handoff_fallback,
);
