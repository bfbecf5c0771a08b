//! S2 solved end to end: long-lived keep-alive connections from pooled
//! clients never reach backends added later, until the service's
//! recycling policy resets them at idle moments; then every backend
//! carries traffic, and no request fails (a pooled client retries a
//! request on a connection reset while idle, as urllib3, Go and Java
//! clients do). A client that is never idle for the gap is never reset.

#[macro_use]
mod harness;
#[path = "e2e/lab.rs"]
mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lab::{worker_sum, Backend, Lab, Lines, VIP, VIP_PORT};
use serde_json::Value;

/// Every line of the pools, gathered until they end.
struct Pools {
    lines: Vec<(usize, Lines)>,
    seen: Vec<Value>,
    done: Vec<Value>,
}

impl Pools {
    fn start(lab: &mut Lab, clients: &[usize], conns: &str, think: &str, secs: &str) -> Pools {
        let port = VIP_PORT.to_string();
        let lines = clients
            .iter()
            .map(|&c| {
                let (child, out) = lab.py_spawn(
                    &format!("c{c}"),
                    "lab_pool.py",
                    &[VIP, &port, secs, "--conns", conns, "--think", think],
                );
                (child, Lines::new(out))
            })
            .collect();
        Pools {
            lines,
            seen: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Reads what arrived (up to `wait`).
    fn pump(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let mut got = false;
            for (_, l) in &self.lines {
                while let Some(v) = l.next(Duration::from_millis(1)) {
                    got = true;
                    if v.get("done").is_some() {
                        self.done.push(v);
                    } else {
                        self.seen.push(v);
                    }
                }
            }
            if Instant::now() >= until {
                return;
            }
            if !got {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn finish(&mut self, lab: &mut Lab) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done.len() < self.lines.len() && Instant::now() < deadline {
            self.pump(Duration::from_millis(200));
        }
        for (child, _) in &self.lines {
            assert!(lab.wait_child(*child, Duration::from_secs(5)));
        }
        assert_eq!(self.done.len(), self.lines.len(), "every pool ended");
    }

    /// Requests served per backend between unix times `from` and `to`.
    fn served(&self, from: f64, to: f64) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for v in &self.seen {
            let t = v["t"].as_f64().unwrap_or(0.0);
            if let (Some(b), true) = (v["backend"].as_str(), t >= from && t < to) {
                *m.entry(b.to_string()).or_default() += 1;
            }
        }
        m
    }

    fn errors(&self) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|v| v.get("error").is_some())
            .collect()
    }

    fn total(&self, k: &str) -> u64 {
        self.done.iter().filter_map(|d| d[k].as_u64()).sum()
    }
}

fn all_six() -> Vec<String> {
    (1..=6)
        .map(|i| format!("{}:{}", Lab::backend_addr(i), lab::BACKEND_PORT))
        .collect()
}

/// 2 clients x 4 pooled keep-alive connections to 2 backends; 4 backends
/// are added. Without a policy the new ones get nothing; with max_age 5 s
/// and idle_gap 200 ms, connections are reset at idle moments, the pools
/// reconnect, Maglev spreads the new connections, and every backend
/// serves, with no failed request.
fn s2_recycling_rebalances_long_lived_connections() {
    let mut lab = Lab::up(6, 2, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let mut pools = Pools::start(&mut lab, &[1, 2], "4", "0.3", "34");
    pools.pump(Duration::from_secs(2));
    let scaled = lab::unix_now();
    let mut args = vec!["endpoints", "set", "web"];
    let eps = all_six();
    args.extend(eps.iter().map(String::as_str));
    lab.ctl(&args);
    // Without a policy: the new backends carry nothing.
    pools.pump(Duration::from_secs(7));
    let enabled = lab::unix_now();
    let without = pools.served(scaled, enabled);
    lab.ctl(&[
        "service",
        "recycle",
        "web",
        "--max-age",
        "5s",
        "--idle-gap",
        "200ms",
        "--jitter",
        "1s",
    ]);
    let explained = lab.ctl_text(&["explain", "web", "10.200.1.11:40000"]);
    assert!(explained.contains("recycle"), "{explained}");
    // With it: wait until every backend has served since the policy.
    let mut every = None;
    let deadline = Instant::now() + Duration::from_secs(22);
    while Instant::now() < deadline {
        pools.pump(Duration::from_millis(250));
        let with = pools.served(enabled, f64::MAX);
        if with.len() == 6 && every.is_none() {
            let t = pools
                .seen
                .iter()
                .filter(|v| v["t"].as_f64().unwrap_or(0.0) >= enabled)
                .filter_map(|v| {
                    v["backend"]
                        .as_str()
                        .map(|b| (b.to_string(), v["t"].as_f64().unwrap_or(0.0)))
                })
                .fold(BTreeMap::<String, f64>::new(), |mut m, (b, t)| {
                    m.entry(b).or_insert(t);
                    m
                })
                .values()
                .cloned()
                .fold(0.0, f64::max);
            every = Some(t - enabled);
            break;
        }
    }
    pools.finish(&mut lab);
    let with = pools.served(enabled, f64::MAX);
    let s = lab.stats();
    let recycled = worker_sum(&s, "flows_recycled");
    eprintln!(
        "S2: before the scale-up {:?}; after it without a policy {without:?}; with the policy {with:?}; \
         every backend served {:?} s after the policy; requests {}, failed {}, retried {}, connections {}, recycled {recycled}",
        pools.served(0.0, scaled),
        every,
        pools.total("requests"),
        pools.total("failed"),
        pools.total("retried"),
        pools.total("connections"),
    );
    let new: BTreeSet<&str> = ["b3", "b4", "b5", "b6"].into();
    assert!(
        without.keys().all(|b| !new.contains(b.as_str())),
        "without the policy the new backends must carry nothing: {without:?}"
    );
    assert!(
        pools.errors().is_empty(),
        "failed requests: {:?}",
        pools.errors()
    );
    assert_eq!(pools.total("failed"), 0);
    assert!(recycled > 0, "{s}");
    assert!(
        every.is_some(),
        "not every backend served within 22 s of the policy: {with:?}"
    );
}

/// A client that never idles for idle_gap (a request every 50 ms) is never
/// reset, while a pool beside it that does idle is recycled.
fn s2_a_busy_connection_is_never_recycled() {
    let mut lab = Lab::up(2, 2, Backend::AfPacket);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    lab.ctl(&[
        "service",
        "recycle",
        "web",
        "--max-age",
        "1s",
        "--idle-gap",
        "200ms",
    ]);
    let (busy, out) = lab.py_spawn(
        "c1",
        "lab_conn.py",
        &[VIP, &VIP_PORT.to_string(), "7", "--interval", "0.05"],
    );
    let busy_lines = Lines::new(out);
    let mut idle = Pools::start(&mut lab, &[2], "2", "0.4", "7");
    idle.pump(Duration::from_secs(8));
    idle.finish(&mut lab);
    let mut answers = 0;
    let mut last = Value::Null;
    while let Some(l) = busy_lines.next(Duration::from_secs(2)) {
        assert!(l.get("error").is_none(), "the busy connection was cut: {l}");
        if l.get("done").is_some() {
            last = l;
            break;
        }
        answers += 1;
    }
    assert!(lab.wait_child(busy, Duration::from_secs(5)));
    assert!(last.get("done").is_some(), "busy client ended: {last}");
    let s = lab.stats();
    eprintln!(
        "S2 busy: {answers} answers on one connection over 7 s, none cut; idle pool retried {} \
         (recycled {} flows in all)",
        idle.total("retried"),
        worker_sum(&s, "flows_recycled")
    );
    assert!(answers > 50);
    assert!(idle.total("retried") > 0, "the idle pool was recycled");
    assert_eq!(idle.total("failed"), 0);
}

machine_tests!(lab::NEEDS;
    s2_recycling_rebalances_long_lived_connections,
    s2_a_busy_connection_is_never_recycled,
);
