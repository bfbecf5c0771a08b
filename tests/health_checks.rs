//! Health checks against real sockets on loopback: the prober's verdicts
//! (TCP and HTTP checks, rise and fall, timeouts), then a whole control
//! thread over in-memory workers whose endpoints are local listeners:
//! verdicts change what the data path gets, the operator's state wins,
//! and stats and metrics show it.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::topology;
use serde_json::{json, Value};
use sluice::control::client::Client;
use sluice::control::health::{Command, Prober, Verdict};
use sluice::control::{ControlPriority, ControlServer, Dataplane, Limits, ServerOptions, Store};
use sluice::port::mem::QueuePort;
use sluice::service::{CheckKind, EndpointSpec, Generation, HealthCheck, HealthState};
use sluice::service::{Protocol, ServiceSpec};
use sluice::worker::WorkerConfig;

/// How a test server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// Accepts and closes.
    Accept,
    /// Answers every request with this HTTP status.
    Http(u16),
    /// Accepts, reads, never answers.
    Silent,
}

/// A listener on 127.0.0.1 answering as told, until dropped.
struct Server {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(answer: Answer) -> Server {
        Server::on(0, answer)
    }

    fn on(port: u16, answer: Answer) -> Server {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind a test listener");
        l.set_nonblocking(true).unwrap();
        let addr = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => match answer {
                        Answer::Accept => {}
                        Answer::Http(code) => {
                            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = [0u8; 1024];
                            let _ = s.read(&mut buf);
                            let _ = s.write_all(
                                format!("HTTP/1.0 {code} X\r\nContent-Length: 0\r\n\r\n")
                                    .as_bytes(),
                            );
                        }
                        Answer::Silent => held.push(s),
                    },
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// A port nothing listens on (bound, then closed).
    fn closed_port() -> SocketAddrV4 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check(kind: CheckKind, interval_ms: u32, timeout_ms: u32, rise: u32, fall: u32) -> HealthCheck {
    let mut c = HealthCheck::new(kind);
    c.interval_ms = interval_ms;
    c.timeout_ms = timeout_ms;
    c.rise = rise;
    c.fall = fall;
    c
}

/// Collects verdicts until `want` holds or `limit` passes.
fn wait_for(
    rx: &crossbeam_channel::Receiver<Verdict>,
    seen: &mut Vec<(Instant, Verdict)>,
    limit: Duration,
    want: impl Fn(&[(Instant, Verdict)]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while !want(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Ok(v) = rx.recv_timeout(left) {
            seen.push((Instant::now(), v));
        }
    }
    true
}

fn last_state(seen: &[(Instant, Verdict)], ep: SocketAddrV4) -> Option<HealthState> {
    seen.iter()
        .rev()
        .find(|(_, v)| v.endpoint == ep)
        .map(|(_, v)| v.state)
}

#[test]
fn prober_judges_tcp_and_http_checks_by_rise_and_fall() {
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let prober = Prober::spawn(waker, tx, 1024).unwrap();
    let accept = Server::start(Answer::Accept);
    let refused = Server::closed_port();
    let ok = Server::start(Answer::Http(200));
    let failing = Server::start(Answer::Http(503));
    let silent = Server::start(Answer::Silent);
    let tcp = check(CheckKind::Tcp, 100, 80, 2, 2);
    let mut http = check(CheckKind::Http, 100, 80, 2, 2);
    http.path = Some("/healthz".into());
    prober.send(Command::Set {
        service: "tcp".into(),
        epoch: 1,
        check: Some(tcp.clone()),
        endpoints: vec![accept.addr, refused],
    });
    prober.send(Command::Set {
        service: "http".into(),
        epoch: 2,
        check: Some(http.clone()),
        endpoints: vec![ok.addr, failing.addr, silent.addr],
    });
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let all = [accept.addr, refused, ok.addr, failing.addr, silent.addr];
    assert!(
        wait_for(&rx, &mut seen, Duration::from_secs(3), |s| all
            .iter()
            .all(|a| last_state(s, *a).is_some())),
        "no verdict on every endpoint: {seen:?}"
    );
    assert_eq!(last_state(&seen, accept.addr), Some(HealthState::Up));
    assert_eq!(last_state(&seen, ok.addr), Some(HealthState::Up));
    for a in [refused, failing.addr, silent.addr] {
        assert_eq!(
            last_state(&seen, a),
            Some(HealthState::Down),
            "{a}: {seen:?}"
        );
    }
    let reason = |a: SocketAddrV4| {
        seen.iter()
            .find(|(_, v)| v.endpoint == a)
            .and_then(|(_, v)| v.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason(refused).contains("refused"), "{}", reason(refused));
    assert_eq!(reason(failing.addr), "HTTP status 503, expected 200");
    assert!(
        reason(silent.addr).contains("no HTTP status line"),
        "{}",
        reason(silent.addr)
    );
    // Down takes `fall` failures: two probes 100 ms apart, the second one
    // timing out 80 ms after it started; never more than fall x interval
    // plus the timeout.
    let down_at = seen
        .iter()
        .find(|(_, v)| v.endpoint == silent.addr)
        .map(|(t, _)| t.duration_since(t0))
        .unwrap();
    assert!(
        down_at <= Duration::from_millis(2 * 100 + 80 + 100),
        "{down_at:?}"
    );
    // The refused port starts listening: up after `rise` successes.
    let back = Server::on(refused.port(), Answer::Accept);
    let t1 = Instant::now();
    assert!(
        wait_for(&rx, &mut seen, Duration::from_secs(2), |s| last_state(
            s, refused
        ) == Some(
            HealthState::Up
        )),
        "{seen:?}"
    );
    let up_after = t1.elapsed();
    assert!(
        up_after >= Duration::from_millis(100) && up_after <= Duration::from_millis(2 * 100 + 150),
        "rise 2 at 100 ms: {up_after:?}"
    );
    // A second service checking the same endpoint the same way shares the
    // target and hears its verdict at once.
    prober.send(Command::Set {
        service: "also".into(),
        epoch: 3,
        check: Some(tcp),
        endpoints: vec![accept.addr],
    });
    assert!(wait_for(&rx, &mut seen, Duration::from_millis(500), |s| s
        .iter()
        .any(
            |(_, v)| &*v.service == "also" && v.state == HealthState::Up
        )));
    assert_eq!(prober.stats().targets.load(Ordering::Relaxed), 5);
    drop(back);
}

/// A control thread over in-memory workers, with a metrics listener.
struct Lb {
    handle: Option<sluice::control::ControlHandle<sluice::port::mem::MemBuf>>,
    socket: PathBuf,
    metrics: std::net::SocketAddr,
}

impl Lb {
    fn start(name: &str, spec: ServiceSpec) -> Lb {
        let dir = std::env::temp_dir().join(format!("sluice-health-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("ctl.sock");
        let (p0, _w0) = QueuePort::new(1024);
        let (p1, _w1) = QueuePort::new(1024);
        let dp = Dataplane::start(
            vec![(WorkerConfig::new(0, 1), vec![p0, p1])],
            Generation::empty(),
        );
        let store = Store::new(topology(), vec![Arc::new(spec)]).unwrap();
        let handle = ControlServer::spawn_with(
            ServerOptions {
                socket: socket.clone(),
                metrics: Some("127.0.0.1:0".parse().unwrap()),
                limits: Limits::default(),
                priority: ControlPriority::Normal,
                flow_state: None,
            },
            store,
            dp,
        )
        .unwrap();
        let metrics = handle.metrics_addr().unwrap();
        Lb {
            handle: Some(handle),
            socket,
            metrics,
        }
    }

    fn call(&self, v: Value) -> Value {
        let mut c = Client::connect(&self.socket).unwrap();
        let r = c.send_line(&format!("{v}\n")).unwrap();
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        v
    }

    fn health(&self, ep: SocketAddrV4) -> Value {
        let s = self.call(json!({"v":1,"op":"stats"}));
        s["result"]["services"][0]["endpoints"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["endpoint"] == ep.to_string()))
            .map(|e| e["health"].clone())
            .unwrap_or(Value::Null)
    }

    fn wait_health(&self, ep: SocketAddrV4, state: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let h = self.health(ep);
            if h["state"] == state {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "{ep} not {state} in {limit:?}: {h}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Backends new connections from 64 client ports get (what the data
    /// path's Maglev table holds).
    fn new_flow_backends(&self) -> std::collections::BTreeSet<String> {
        (0..64)
            .map(|i| {
                let x = self.call(json!({"v":1,"op":"explain","service":"web","client":format!("10.200.1.7:{}", 40000 + i)}));
                x["result"]["new_flow_backend"].as_str().unwrap_or("none").to_string()
            })
            .collect()
    }

    fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Some(dp) = h.shutdown() {
                dp.stop();
            }
        }
    }
}

#[test]
fn verdicts_reach_the_data_path_and_the_operator_wins() {
    let a = Server::start(Answer::Accept);
    let b = Server::start(Answer::Accept);
    let mut spec = ServiceSpec::new("web", Ipv4Addr::new(198, 18, 0, 100), 80, Protocol::Tcp);
    spec.table_size = 251;
    spec.endpoints = vec![
        EndpointSpec::new(*a.addr.ip(), a.addr.port()),
        EndpointSpec::new(*b.addr.ip(), b.addr.port()),
    ];
    spec.health = Some(check(CheckKind::Tcp, 100, 80, 2, 2));
    let lb = Lb::start("verdicts", spec);
    lb.wait_health(a.addr, "up", Duration::from_secs(2));
    lb.wait_health(b.addr, "up", Duration::from_secs(2));
    let both: std::collections::BTreeSet<String> = [a.addr.to_string(), b.addr.to_string()].into();
    assert_eq!(lb.new_flow_backends(), both);
    let b_addr = b.addr;
    // b's server goes away: down within fall x interval (+ a probe's
    // timeout and the poll), and it leaves the Maglev table.
    let t = Instant::now();
    drop(b);
    let h = lb.wait_health(b_addr, "down", Duration::from_secs(2));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2 * 100 + 80 + 150), "{took:?}");
    assert!(
        h["reason"].as_str().unwrap_or("").contains("refused"),
        "{h}"
    );
    assert_eq!(h["went_down"], 1, "{h}");
    assert_eq!(lb.new_flow_backends(), [a.addr.to_string()].into());
    let x = lb.call(
        json!({"v":1,"op":"explain","service":"web","client":"10.200.1.7:40000","syn":false}),
    );
    assert_ne!(x["result"]["mid_flow_backend"], b_addr.to_string(), "{x}");
    // The operator drains it while it is down: the operator's state stands
    // (draining: its established flows may continue), whatever the probes.
    lb.call(json!({"v":1,"op":"endpoint_drain","service":"web","endpoint":b_addr.to_string()}));
    let text = lb.metrics();
    assert!(
        text.contains(&format!(
            "sluice_endpoint_health{{service=\"web\",endpoint=\"{b_addr}\",state=\"down\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("sluice_health_probes_total{result=\"failed\"}"),
        "{text}"
    );
    // Back up: the probes say so after `rise` successes, but it stays
    // draining (no new flows) until the operator says otherwise.
    let _b = Server::on(b_addr.port(), Answer::Accept);
    let h = lb.wait_health(b_addr, "up", Duration::from_secs(2));
    assert_eq!(h["came_up"], 1, "{h}");
    assert_eq!(lb.new_flow_backends(), [a.addr.to_string()].into());
    lb.call(json!({"v":1,"op":"endpoint_up","service":"web","endpoint":b_addr.to_string()}));
    assert_eq!(lb.new_flow_backends(), both);
    // An operator's `down` also stands against healthy probes.
    lb.call(json!({"v":1,"op":"endpoint_down","service":"web","endpoint":b_addr.to_string()}));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lb.health(b_addr)["state"], "up");
    assert_eq!(lb.new_flow_backends(), [a.addr.to_string()].into());
    // `vip_list` without [bgp] says so.
    let v = lb.call(json!({"v":1,"op":"vip_list"}));
    assert_eq!(v["result"]["bgp"], false, "{v}");
}
