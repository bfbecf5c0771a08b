//! Scale-out and failover end to end: two sluice instances behind routers
//! that learn the VIP over real BGP sessions (BIRD on both sides) and
//! spread connections with L4 ECMP, kernel TCP clients and HTTP backends
//! in network namespaces (scripts/netlab_ha.sh). What counts is what
//! independent parties see: the routers' kernel FIBs and the clients'
//! errors. Needs root, `ip`, `python3`, `bird` (bird2) and `nft`; skipped
//! with a message otherwise. The labs run one at a time.
//!
//! BGP settings throughout: hold time 3 s, BFD 100 ms x 3 on both sides,
//! `withdraw_wait_ms` 1500.

#[macro_use]
mod harness;
#[path = "e2e/lab.rs"]
mod lab;

#[path = "e2e/ha_lab.rs"]
mod ha_lab;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ha_lab::HaLab;
use lab::{unix_now, Lines};
use serde_json::Value;

const INTERVAL: f64 = 0.1;

/// A keep-alive connection (lab_conn.py): a request every 100 ms.
struct Conn {
    child: usize,
    lines: Lines,
    client: String,
    /// Index of the backend that answered first (1 for b1, ...).
    backend: usize,
}

fn next_line(lines: &Lines, limit: Duration) -> Value {
    lines
        .next(limit)
        .unwrap_or_else(|| panic!("no line from lab_conn within {limit:?}"))
}

/// Opens `n` keep-alive connections from client `c` lasting `seconds`.
fn open_conns(lab: &mut HaLab, c: usize, n: usize, seconds: f64) -> Vec<Conn> {
    let args = [
        "198.18.0.100".to_string(),
        "80".to_string(),
        seconds.to_string(),
        "--interval".to_string(),
        INTERVAL.to_string(),
        "--timeout".to_string(),
        "8".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started: Vec<(usize, Lines)> = (0..n)
        .map(|_| {
            let (child, out) = lab.py_spawn(&format!("c{c}"), "lab_conn.py", &args);
            (child, Lines::new(out))
        })
        .collect();
    started
        .into_iter()
        .map(|(child, lines)| {
            let hello = next_line(&lines, Duration::from_secs(8));
            let first = next_line(&lines, Duration::from_secs(8));
            let backend = first["backend"]
                .as_str()
                .and_then(|b| b.trim_start_matches('b').parse().ok())
                .unwrap_or_else(|| panic!("{hello} {first}"));
            Conn {
                child,
                lines,
                client: hello["connected"].as_str().unwrap_or("").to_string(),
                backend,
            }
        })
        .collect()
}

/// What a set of keep-alive connections saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    failed: u64,
    /// Longest time any connection went without an answer beyond its
    /// request interval: time without service.
    outage: f64,
    errors: Vec<Value>,
    changed_backend: u64,
    /// Each connection's client address and longest wait beyond its
    /// interval.
    gaps: Vec<(String, f64)>,
}

/// Reads every connection to its end.
fn finish(lab: &mut HaLab, conns: Vec<Conn>) -> Tally {
    let mut t = Tally::default();
    for k in conns {
        let mut last: Option<f64> = None;
        let mut gap = 0.0f64;
        loop {
            let l = next_line(&k.lines, Duration::from_secs(15));
            if l.get("done").is_some() {
                break;
            }
            t.sent += 1;
            let at = l["t"].as_f64().unwrap_or(0.0);
            if let Some(p) = last {
                gap = gap.max(at - p - INTERVAL);
            }
            last = Some(at);
            if l.get("error").is_some() {
                t.failed += 1;
                t.errors.push(l);
                break;
            }
            if l["backend"] != format!("b{}", k.backend) {
                t.changed_backend += 1;
            }
        }
        t.outage = t.outage.max(gap);
        t.gaps.push((k.client.clone(), gap));
        lab.wait_child(k.child, Duration::from_secs(5));
    }
    t
}

/// Waits for a lab_stream result.
fn stream_result(lab: &mut HaLab, s: (usize, Lines)) -> Value {
    assert!(
        lab.wait_child(s.0, Duration::from_secs(30)),
        "lab_stream failed"
    );
    s.1.next(Duration::from_secs(2))
        .expect("lab_stream's result")
}

fn worker_sum(stats: &Value, field: &str) -> u64 {
    stats["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w[field].as_u64()).sum())
        .unwrap_or(0)
}

fn both_up(lab: &HaLab) {
    let front = [HaLab::front_hop(1), HaLab::front_hop(2)];
    let back = [HaLab::back_hop(1), HaLab::back_hop(2)];
    let t = lab.wait_hops("rc", "198.18.0.100", &front, Duration::from_secs(20));
    lab.wait_hops("rb", "10.200.1.0/24", &back, Duration::from_secs(20));
    eprintln!(
        "both instances in the routers' FIBs {:.2} s after they answered",
        t.as_secs_f64()
    );
}

/// Two instances with the same endpoints listed in different orders build
/// identical Maglev tables; the client-side router spreads connections
/// over both, and the backend-side router sends some replies through the
/// instance that did not see the request: every request still succeeds.
fn ha_instances_agree_share_traffic_and_replies_cross_instances() {
    let mut lab = HaLab::up(2, 3, 2);
    lab.start(1);
    lab.start(2);
    both_up(&lab);
    let order = |k: usize| -> Vec<Value> {
        lab.ctl(k, &["services", "list"])["services"][0]["endpoints"]
            .as_array()
            .map(|a| a.iter().map(|e| e["addr"].clone()).collect())
            .unwrap_or_default()
    };
    assert_ne!(
        order(1),
        order(2),
        "the instances must list endpoints in different orders"
    );
    let digest = |k: usize| lab.ctl(k, &["digest"])["digests"][0]["digest"].clone();
    assert_eq!(digest(1), digest(2));
    eprintln!("digests equal: {}", digest(1));

    let mut conns = open_conns(&mut lab, 1, 8, 4.0);
    conns.extend(open_conns(&mut lab, 2, 8, 4.0));
    // The routers' own answers for each connection: which instance its
    // requests cross, which one its replies cross.
    let (mut via, mut crossed) = (BTreeMap::new(), 0);
    for c in &conns {
        let f = lab.forward_hop(&c.client);
        let r = lab.return_hop(&c.client, c.backend);
        let k = if f == HaLab::front_hop(1) { 1 } else { 2 };
        *via.entry(k).or_insert(0) += 1;
        let rk = if r == HaLab::back_hop(1) { 1 } else { 2 };
        crossed += usize::from(k != rk);
        // The instance the router chose holds the flow.
        let flow = lab.ctl(k, &["flows", "lookup", &c.client, "198.18.0.100:80"]);
        assert!(
            flow["flow"].is_object(),
            "lb{k} has no flow for {}: {flow}",
            c.client
        );
    }
    eprintln!("16 connections: requests through {via:?}, {crossed} with replies through the other instance");
    assert_eq!(via.len(), 2, "the router used one instance only: {via:?}");
    assert!(
        crossed > 0,
        "no reply crossed instances: the test shows nothing"
    );
    let t = finish(&mut lab, conns);
    assert_eq!(t.failed, 0, "{:?}", t.errors);
    assert_eq!(t.changed_backend, 0);
    assert!(t.sent >= 16 * 20, "{t:?}");
    // New connections spread over both.
    let before: Vec<u64> = (1..=2)
        .map(|k| worker_sum(&lab.ctl(k, &["stats"]), "flows_created"))
        .collect();
    let s = lab.stream(1, 2.0);
    let r = stream_result(&mut lab, s);
    assert_eq!(r["errors"], 0, "{r}");
    for k in 1..=2 {
        let n = worker_sum(&lab.ctl(k, &["stats"]), "flows_created") - before[k - 1];
        assert!(n > 0, "lb{k} got no new connection");
        eprintln!("lb{k}: {n} new flows of {} connections", r["ok"]);
    }
}

/// One step of the failover test: keep-alive connections and a stream of
/// new connections run while `event` happens to the instances.
/// The event hits instance `hit`: at least two keep-alive connections go
/// through it (by the client-side router's own answer), or the phase would
/// show nothing.
fn phase(
    lab: &mut HaLab,
    name: &str,
    hit: usize,
    event: impl FnOnce(&mut HaLab) -> String,
) -> (Tally, Value) {
    let mut conns = Vec::new();
    let mut through = Vec::new();
    for round in 0..6 {
        conns.extend(open_conns(lab, 1 + round % 2, 4, 6.0));
        through = conns
            .iter()
            .filter(|c| lab.forward_hop(&c.client) == HaLab::front_hop(hit))
            .map(|c| c.client.clone())
            .collect();
        if conns.len() >= 8 && through.len() >= 2 {
            break;
        }
    }
    // Two streams of new connections, one per client.
    let s1 = lab.stream(1, 5.0);
    let s2 = lab.stream(2, 5.0);
    std::thread::sleep(Duration::from_millis(1500));
    let what = event(lab);
    let t = finish(lab, conns);
    let r1 = stream_result(lab, s1);
    let r2 = stream_result(lab, s2);
    let n = |k: &str| r1[k].as_u64().unwrap_or(0) + r2[k].as_u64().unwrap_or(0);
    let slowest = r1["slowest_s"]
        .as_f64()
        .unwrap_or(0.0)
        .max(r2["slowest_s"].as_f64().unwrap_or(0.0));
    let r = serde_json::json!({"ok": n("ok"), "errors": n("errors"), "slowest_s": slowest});
    let hit_gap = t
        .gaps
        .iter()
        .filter(|(c, _)| through.contains(c))
        .map(|(_, g)| *g)
        .fold(0.0, f64::max);
    eprintln!(
        "| {name} | keep-alive: {} requests, {} failed, longest without an answer {:.0} ms ({} through lb{hit}: {:.0} ms) | new connections: {} ok, {} failed, slowest {:.0} ms | {what} |",
        t.sent,
        t.failed,
        t.outage * 1e3,
        through.len(),
        hit_gap * 1e3,
        r["ok"],
        r["errors"],
        r["slowest_s"].as_f64().unwrap_or(0.0) * 1e3
    );
    (t, r)
}

/// Failover, three ways, with keep-alive connections (a request every
/// 100 ms) and a stream of new connections running each time:
/// - lb1 stops gracefully: it withdraws its routes first (both routers
///   drop it while it still forwards), then stops: nothing fails;
/// - lb1 joins again: the client-side router spreads new connections over
///   it, and connections the rehash moves to it keep their backends
///   (backend choice is the same pure function on both): nothing fails;
/// - lb2 dies without warning (its frames dropped on the switch, the
///   process killed): the routers drop it when BFD says so, and every
///   connection resumes through lb1; the longest wait is reported.
fn ha_failover_graceful_stop_join_and_kill() {
    let mut lab = HaLab::up(2, 3, 2);
    lab.start(1);
    lab.start(2);
    both_up(&lab);
    eprintln!("| event | keep-alive connections | new connections | routers |");

    let (t, r) = phase(&mut lab, "graceful stop of lb1", 1, |lab| {
        let t0 = Instant::now();
        lab.terminate(1);
        let front = lab.wait_hops(
            "rc",
            "198.18.0.100",
            &[HaLab::front_hop(2)],
            Duration::from_secs(3),
        );
        let back = lab.wait_hops(
            "rb",
            "10.200.1.0/24",
            &[HaLab::back_hop(2)],
            Duration::from_secs(3),
        );
        // Withdrawn before the data path stopped: lb1 still runs.
        let still_running = !lab.reap(1, Duration::ZERO);
        assert!(still_running, "lb1 exited before the routers dropped it");
        assert!(lab.reap(1, Duration::from_secs(10)), "lb1 did not stop");
        format!(
            "withdrawn from rc after {:.0} ms, rb after {:.0} ms; lb1 exited after {:.0} ms",
            front.as_secs_f64() * 1e3,
            (front + back).as_secs_f64() * 1e3,
            t0.elapsed().as_secs_f64() * 1e3
        )
    });
    assert_eq!(t.failed, 0, "graceful stop: {:?}", t.errors);
    assert_eq!(r["errors"], 0, "graceful stop: {r}");
    assert!(
        lab.log(1)
            .contains("packets forwarded since the withdrawal"),
        "{}",
        lab.log(1)
    );

    let (t, r) = phase(&mut lab, "lb1 joins", 2, |lab| {
        let t0 = Instant::now();
        lab.start(1);
        both_up(lab);
        format!(
            "in both routers' FIBs {:.2} s after start",
            t0.elapsed().as_secs_f64()
        )
    });
    assert_eq!(t.failed, 0, "join: {:?}", t.errors);
    assert_eq!(t.changed_backend, 0, "join: a connection changed backend");
    assert_eq!(r["errors"], 0, "join: {r}");
    let s1 = lab.ctl(1, &["stats"]);
    assert!(
        worker_sum(&s1, "flows_created") > 0,
        "lb1 got no new connection after joining: {s1}"
    );
    // Connections that were on lb2 and that the rehash now sends to lb1
    // arrive there mid-flow (table misses) and kept their backends above.
    eprintln!(
        "lb1 after joining: flows_created {}, table_misses {} (mid-flow packets of connections moved to it), drops {}",
        worker_sum(&s1, "flows_created"),
        worker_sum(&s1, "table_misses"),
        s1["drops"]
    );

    let (t, r) = phase(&mut lab, "lb2 killed (isolated, then SIGKILL)", 2, |lab| {
        let carried = |lab: &HaLab, k: usize| worker_sum(&lab.ctl(k, &["stats"]), "forwarded");
        let (a, b) = (carried(lab, 1), carried(lab, 2));
        std::thread::sleep(Duration::from_millis(200));
        let (a2, b2) = (carried(lab, 1), carried(lab, 2));
        eprintln!(
            "forwarded in the 200 ms before the kill: lb1 {}, lb2 {}",
            a2 - a,
            b2 - b
        );
        assert!(
            b2 > b,
            "lb2 carried nothing before it was killed: the test shows nothing"
        );
        lab.kill(2);
        let front = lab.wait_hops(
            "rc",
            "198.18.0.100",
            &[HaLab::front_hop(1)],
            Duration::from_secs(5),
        );
        let back = lab.wait_hops(
            "rb",
            "10.200.1.0/24",
            &[HaLab::back_hop(1)],
            Duration::from_secs(5),
        );
        format!(
            "dropped by rc after {:.0} ms, by rb within {:.0} ms (BFD 100 ms x 3)",
            front.as_secs_f64() * 1e3,
            (front + back).as_secs_f64() * 1e3
        )
    });
    assert_eq!(t.failed, 0, "kill: {:?}", t.errors);
    assert_eq!(t.changed_backend, 0, "kill: a connection changed backend");
    assert_eq!(r["errors"], 0, "kill: {r}");
    assert!(t.outage < 3.0, "kill: {:.2} s without service", t.outage);
}

/// Health checks in the HA lab (HTTP GET /healthz every 200 ms, timeout
/// 150 ms, rise 2, fall 2, through each instance's management interface):
/// - b1 goes silent (its kernel drops TCP to port 8080): both instances
///   mark it down within interval x fall (+ the timeout); a keep-alive
///   client on b1 gets a RST on its next packet (a retransmission) instead
///   of hanging; new connections avoid b1; it comes back after rise;
/// - every backend's server stops: both instances withdraw the VIP and
///   the client-side router drops the route; servers back: announced again.
fn ha_health_checks_take_endpoints_and_vips_out_and_back() {
    let (interval, fall, rise, timeout) = (200u64, 2u64, 2u64, 150u64);
    let mut lab = HaLab::up(2, 3, 2);
    lab.set_health(&format!(
        "\n[service.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = {interval}\ntimeout_ms = {timeout}\nrise = {rise}\nfall = {fall}\n"
    ));
    lab.start(1);
    lab.start(2);
    both_up(&lab);
    let b1 = format!("{}:8080", HaLab::backend_addr(1));
    let health = |lab: &HaLab, k: usize| -> Value {
        lab.ctl(k, &["stats"])["services"][0]["endpoints"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["endpoint"] == b1))
            .map(|e| e["health"].clone())
            .unwrap_or(Value::Null)
    };
    for k in 1..=2 {
        assert_eq!(health(&lab, k)["state"], "up", "lb{k}");
    }
    // Keep-alive connections, some of them on b1.
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.extend(open_conns(&mut lab, 1, 4, 12.0));
        if conns.iter().filter(|c| c.backend == 1).count() >= 2 {
            break;
        }
    }
    let (on_b1, others): (Vec<Conn>, Vec<Conn>) = conns.into_iter().partition(|c| c.backend == 1);
    assert!(!on_b1.is_empty(), "no connection landed on b1");

    // b1 goes silent.
    let t0 = unix_now();
    lab.silence_backend(1, true);
    let mut down_after = [None; 2];
    let limit = Duration::from_secs(3);
    let start = Instant::now();
    while down_after.iter().any(Option::is_none) && start.elapsed() < limit {
        for k in 1..=2 {
            if down_after[k - 1].is_none() && health(&lab, k)["state"] == "down" {
                down_after[k - 1] = Some(unix_now() - t0);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let bound = ((interval * fall + timeout) as f64 + 150.0) / 1e3;
    for (k, d) in down_after.iter().enumerate() {
        let d = d.unwrap_or_else(|| panic!("lb{} never marked b1 down", k + 1));
        eprintln!("health: lb{} marked b1 down {:.0} ms after it went silent (interval x fall = {} ms, + timeout {} ms)", k + 1, d * 1e3, interval * fall, timeout);
        assert!(d <= bound, "lb{}: {d:.3} s > {bound:.3} s", k + 1);
    }
    let reason = health(&lab, 1)["reason"].clone();
    assert!(
        reason
            .as_str()
            .unwrap_or("")
            .contains("no HTTP status line")
            || reason.as_str().unwrap_or("").contains("connect"),
        "{reason}"
    );
    // Its clients: the next packet (the retransmitted request) gets a RST.
    for c in &on_b1 {
        let err = loop {
            let l = next_line(&c.lines, Duration::from_secs(8));
            if l.get("error").is_some() {
                break l;
            }
            assert!(l.get("done").is_none(), "{} on b1 never failed", c.client);
        };
        let after = err["t"].as_f64().unwrap_or(f64::MAX) - t0;
        eprintln!(
            "health: client {} on b1 got {} {:.0} ms after b1 went silent",
            c.client,
            err["error"],
            after * 1e3
        );
        assert_eq!(err["error"], "ConnectionResetError", "{err}");
        assert!(after < 4.0, "{after}");
    }
    let resets: u64 = (1..=2)
        .map(|k| worker_sum(&lab.ctl(k, &["stats"]), "resets"))
        .sum();
    assert!(resets >= on_b1.len() as u64, "RSTs counted: {resets}");
    let top = lab.ctl_text(1, &["top", "--count", "1"]);
    let row = top
        .lines()
        .find(|l| l.trim_start().starts_with(&b1))
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(
        row.split_whitespace().last(),
        Some("down"),
        "HEALTH column: {row}"
    );
    eprintln!("health: ctl top while b1 is down:\n{top}");
    // New connections avoid b1.
    let s = lab.stream(2, 1.5);
    let r = stream_result(&mut lab, s);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        r["backends"].get("b1").is_none(),
        "a new connection went to b1: {r}"
    );

    // b1 answers again: up after `rise` successes.
    let t1 = unix_now();
    lab.silence_backend(1, false);
    let mut up_after = [None; 2];
    let start = Instant::now();
    while up_after.iter().any(Option::is_none) && start.elapsed() < limit {
        for k in 1..=2 {
            if up_after[k - 1].is_none() && health(&lab, k)["state"] == "up" {
                up_after[k - 1] = Some(unix_now() - t1);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (k, d) in up_after.iter().enumerate() {
        let d = d.unwrap_or_else(|| panic!("lb{} never brought b1 back", k + 1));
        eprintln!("health: lb{} brought b1 back {:.0} ms after it answered again (rise x interval = {} ms)", k + 1, d * 1e3, rise * interval);
        assert!(
            d <= ((rise * interval) as f64 + 250.0) / 1e3,
            "lb{}: {d:.3} s",
            k + 1
        );
    }
    let s = lab.stream(2, 1.5);
    let r = stream_result(&mut lab, s);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        r["backends"].get("b1").is_some(),
        "b1 got no new connection once back: {r}"
    );
    // Connections on other backends never noticed.
    let t = finish(&mut lab, others);
    assert_eq!(t.failed, 0, "{:?}", t.errors);

    // Every server stops: no healthy endpoint anywhere, the VIP leaves
    // the router's FIB.
    for i in 1..=3 {
        lab.stop_server(i);
    }
    let gone = lab.wait_hops("rc", "198.18.0.100", &[], Duration::from_secs(5));
    lab.wait_hops("rb", "10.200.1.0/24", &[], Duration::from_secs(5));
    eprintln!(
        "health: every server stopped -> VIP gone from the router {:.0} ms later",
        gone.as_secs_f64() * 1e3
    );
    let v = lab.ctl(1, &["vip", "list"]);
    assert_eq!(v["vips"][0]["wanted"], false, "{v}");
    assert!(
        v["vips"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no healthy endpoint"),
        "{v}"
    );
    let t3 = Instant::now();
    for i in 1..=3 {
        lab.start_server(i);
    }
    both_up(&lab);
    eprintln!(
        "health: servers restarted -> VIP back in both routers {:.0} ms after the first one started",
        t3.elapsed().as_secs_f64() * 1e3
    );
}

/// `vip withdraw` takes one instance out of the routers for maintenance
/// while it keeps running; `vip announce` brings it back.
fn ha_operator_withdraws_and_announces_a_vip() {
    let mut lab = HaLab::up(2, 2, 1);
    lab.start(1);
    lab.start(2);
    both_up(&lab);
    let v = lab.ctl(1, &["vip", "withdraw", "198.18.0.100"]);
    assert_eq!(v["vips"][0]["announced"], false, "{v}");
    let t = lab.wait_hops(
        "rc",
        "198.18.0.100",
        &[HaLab::front_hop(2)],
        Duration::from_secs(3),
    );
    eprintln!(
        "vip withdraw: gone from the router {:.0} ms after ctl returned",
        t.as_secs_f64() * 1e3
    );
    let text = lab.ctl_text(1, &["vip", "list"]);
    assert!(text.contains("withdrawn by the operator"), "{text}");
    assert!(text.contains("Established"), "{text}");
    let e = lab
        .try_ctl(1, &["vip", "withdraw", "198.18.0.9"])
        .unwrap_err();
    assert!(e.contains("no service has VIP 198.18.0.9"), "{e}");
    lab.ctl(1, &["vip", "announce", "198.18.0.100"]);
    both_up(&lab);
}

machine_tests!(ha_lab::NEEDS;
    ha_instances_agree_share_traffic_and_replies_cross_instances,
    ha_failover_graceful_stop_join_and_kill,
    ha_health_checks_take_endpoints_and_vips_out_and_back,
    ha_operator_withdraws_and_announces_a_vip,
);
