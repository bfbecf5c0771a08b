//! The control socket end to end: a real control thread over workers on
//! in-memory ports, driven through the Unix socket.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sluice::control::client::{Client, ClientError};
use sluice::control::protocol::ErrorKind;
use sluice::control::server::ServerError;
use sluice::control::{
    ControlHandle, ControlPriority, ControlServer, Dataplane, Limits, Outcome, Request,
    ServerOptions, Store,
};
use sluice::port::mem::{MemBuf, MemWire, QueuePort};
use sluice::service::{EndpointState, Generation, Protocol, ServiceSpec};
use sluice::worker::WorkerConfig;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Lb {
    handle: Option<ControlHandle<MemBuf>>,
    wires: Vec<Vec<MemWire>>,
    socket: PathBuf,
}

impl Lb {
    fn start(name: &str, workers: u32, specs: Vec<ServiceSpec>) -> Lb {
        Lb::start_with(name, workers, specs, Limits::default(), None)
    }

    fn start_with(
        name: &str,
        workers: u32,
        specs: Vec<ServiceSpec>,
        limits: Limits,
        metrics: Option<std::net::SocketAddr>,
    ) -> Lb {
        Lb::start_full(name, workers, specs, limits, metrics, None)
    }

    fn start_full(
        name: &str,
        workers: u32,
        specs: Vec<ServiceSpec>,
        limits: Limits,
        metrics: Option<std::net::SocketAddr>,
        flow_state: Option<PathBuf>,
    ) -> Lb {
        let socket = temp_dir(name).join("ctl.sock");
        let mut wires = vec![];
        let ws = (0..workers)
            .map(|i| {
                let (p0, w0) = QueuePort::new(8192);
                let (p1, w1) = QueuePort::new(8192);
                wires.push(vec![w0, w1]);
                let mut c = WorkerConfig::new(i, workers);
                c.flow_capacity = 1 << 14;
                (c, vec![p0, p1])
            })
            .collect();
        let dp = Dataplane::start(ws, Generation::empty());
        let store = Store::new(topology(), specs.into_iter().map(Arc::new).collect()).unwrap();
        let handle = ControlServer::spawn_with(
            ServerOptions {
                socket: socket.clone(),
                metrics,
                limits,
                priority: ControlPriority::Realtime,
                flow_state,
            },
            store,
            dp,
        )
        .unwrap();
        Lb {
            handle: Some(handle),
            wires,
            socket,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).unwrap()
    }

    fn call(&self, v: Value) -> Value {
        let mut c = self.client();
        raw(&mut c, &v)
    }

    fn generation(&self) -> u64 {
        self.call(json!({"v":1,"op":"generation"}))["generation"]
            .as_u64()
            .unwrap()
    }

    fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            if let Some(dp) = h.shutdown() {
                dp.stop();
            }
        }
    }
}

fn raw(c: &mut Client, v: &Value) -> Value {
    let r = c.send_line(&format!("{v}\n")).unwrap();
    serde_json::to_value(r).unwrap()
}

fn web() -> ServiceSpec {
    service(Protocol::Tcp, &eps(&[1, 1, 1]))
}

fn ep(i: u8) -> String {
    format!("{}:8080", backend(i))
}

fn assert_err(r: &Value, kind: &str, needle: &str) {
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["kind"], kind, "{r}");
    let m = r["error"]["message"].as_str().unwrap();
    assert!(m.contains(needle), "{m:?} should mention {needle:?}");
}

#[test]
fn every_operation_answers_and_changes_take_effect_on_every_worker() {
    let lb = Lb::start("ops", 2, vec![web()]);
    let g0 = lb.generation();
    assert!(g0 >= 1);

    let r = lb.call(json!({"v":1,"op":"service_add","service":{"name":"dns","vip":"198.18.0.53","port":53,"protocol":"udp","table_size":251,"endpoints":[{"addr":"10.200.2.14","port":53}]}}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["generation"], g0 + 1);
    assert_eq!(r["result"]["type"], "applied");

    let r = lb.call(json!({"v":1,"op":"services_list"}));
    let names: Vec<&str> = r["result"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dns", "web"]);

    let set = json!({"v":1,"op":"endpoints_set","service":"dns","endpoints":[
        {"addr":"10.200.2.15","port":53,"weight":2},{"addr":"10.200.2.16","port":53}]});
    assert_eq!(lb.call(set)["ok"], true);
    let add = json!({"v":1,"op":"endpoint_add","service":"dns","endpoint":{"addr":"10.200.2.17","port":53}});
    assert_eq!(lb.call(add)["ok"], true);
    for op in [
        json!({"v":1,"op":"endpoint_weight","service":"dns","endpoint":"10.200.2.16:53","weight":5}),
        json!({"v":1,"op":"endpoint_drain","service":"dns","endpoint":"10.200.2.15:53"}),
        json!({"v":1,"op":"endpoint_down","service":"dns","endpoint":"10.200.2.17:53"}),
        json!({"v":1,"op":"endpoint_up","service":"dns","endpoint":"10.200.2.17:53"}),
        json!({"v":1,"op":"endpoint_remove","service":"dns","endpoint":"10.200.2.17:53"}),
    ] {
        let r = lb.call(op.clone());
        assert_eq!(r["ok"], true, "{op} -> {r}");
    }
    let r = lb.call(json!({"v":1,"op":"services_list"}));
    let dns = &r["result"]["services"][0];
    assert_eq!(dns["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(dns["endpoints"][0]["state"], "draining");
    assert_eq!(dns["endpoints"][1]["weight"], 5);
    let g = lb.generation();
    assert_eq!(g, g0 + 8, "one generation per change");

    // Traffic, then the read-only operations.
    for i in 0..40u16 {
        let w = sluice::hash::owner_worker(u32::from(CLIENT), 41000 + i, 2) as usize;
        assert!(lb.wires[w][0].inject(&from_client(41000 + i, SYN, 7, 0)));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = 0;
    while out < 40 && Instant::now() < deadline {
        out += lb
            .wires
            .iter()
            .map(|w| w[1].take_all().iter().filter(|f| !is_arp(f)).count())
            .sum::<usize>();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(out, 40);

    let r = lb.call(json!({"v":1,"op":"flows_count"}));
    assert_eq!(r["result"]["total"], 40, "{r}");
    let r = lb.call(json!({"v":1,"op":"flows_dump","limit":5}));
    assert_eq!(r["result"]["flows"].as_array().unwrap().len(), 5);
    let r = lb.call(json!({"v":1,"op":"flows_lookup","client":format!("{CLIENT}:41003"),"vip":format!("{VIP}:80")}));
    let flow = &r["result"]["flow"];
    assert_eq!(flow["client"], format!("{CLIENT}:41003"), "{r}");
    let pinned = flow["backend"].as_str().unwrap().to_string();

    let r =
        lb.call(json!({"v":1,"op":"explain","service":"web","client":format!("{CLIENT}:41003")}));
    let x = &r["result"];
    assert_eq!(x["backend"], pinned.as_str(), "{r}");
    assert!(
        x["reason"].as_str().unwrap().contains("flow table hit"),
        "{r}"
    );
    let r = lb.call(
        json!({"v":1,"op":"explain","vip":format!("{VIP}:80"),"client":format!("{CLIENT}:50000")}),
    );
    let x = &r["result"];
    assert!(x["reason"].as_str().unwrap().contains("Maglev slot"), "{r}");
    assert_eq!(x["backend"], x["new_flow_backend"]);
    assert!(x["slot"].as_u64().unwrap() < 65537);

    let r = lb.call(json!({"v":1,"op":"stats"}));
    let s = &r["result"];
    assert_eq!(s["workers"].as_array().unwrap().len(), 2);
    let web_stats = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap();
    assert_eq!(web_stats["active_flows"], 40, "{web_stats}");
    let per_ep: u64 = web_stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["packets_in"].as_u64().unwrap())
        .sum();
    assert_eq!(per_ep, 40);

    let r = lb.call(json!({"v":1,"op":"digest"}));
    let d = r["result"]["digests"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    // The same endpoint set elsewhere gives the same digest.
    let g = Generation::build(1, &topology(), &[web()]).unwrap();
    let want = format!("{:016x}", g.digest(0));
    assert_eq!(d[1]["service"], "web");
    assert_eq!(d[1]["digest"], want.as_str());

    let r = lb.call(json!({"v":1,"op":"service_remove","name":"dns"}));
    assert_eq!(r["ok"], true);
    lb.stop();
}

#[test]
fn malformed_requests_get_named_errors_and_change_nothing() {
    let lb = Lb::start_with(
        "malformed",
        1,
        vec![web()],
        Limits {
            max_line: 4096,
            ..Limits::default()
        },
        None,
    );
    let g = lb.generation();
    let mut c = lb.client();
    let cases = [
        ("{\"v\":1,\"op\":", "bad_json", "not valid JSON"),
        ("{\"v\":1,\"op\":\"explode\"}", "unknown_op", "explode"),
        ("{\"v\":3,\"op\":\"generation\"}", "unsupported_version", "version 3"),
        ("{\"op\":\"generation\"}", "missing_field", "`v`"),
        ("{\"v\":1,\"op\":\"endpoint_weight\",\"service\":\"web\",\"endpoint\":\"10.200.2.11:8080\"}", "missing_field", "weight"),
        ("{\"v\":1,\"op\":\"endpoint_weight\",\"service\":\"web\",\"endpoint\":\"10.200.2.11:8080\",\"weight\":\"heavy\"}", "wrong_type", "invalid type"),
        ("{\"v\":1,\"op\":\"endpoint_weight\",\"service\":\"web\",\"endpoint\":\"nowhere\",\"weight\":1}", "wrong_type", "address"),
        ("{\"v\":1,\"op\":\"endpoint_weight\",\"service\":\"api\",\"endpoint\":\"10.200.2.11:8080\",\"weight\":1}", "unknown_service", "\"api\""),
        ("{\"v\":1,\"op\":\"endpoint_down\",\"service\":\"web\",\"endpoint\":\"10.200.2.99:8080\"}", "unknown_endpoint", "10.200.2.99:8080"),
        ("{\"v\":1,\"op\":\"endpoint_add\",\"service\":\"web\",\"endpoint\":{\"addr\":\"10.200.2.11\",\"port\":8080}}", "invalid", "listed twice"),
        ("{\"v\":1,\"op\":\"endpoint_add\",\"service\":\"web\",\"endpoint\":{\"addr\":\"10.200.2.30\",\"port\":0}}", "invalid", "port must be 1-65535"),
        ("{\"v\":1,\"op\":\"service_add\",\"service\":{\"name\":\"dup\",\"vip\":\"198.18.0.100\",\"port\":80,\"protocol\":\"tcp\"}}", "invalid", "already used by service \"web\""),
        ("{\"v\":1,\"op\":\"service_add\",\"service\":{\"name\":\"t\",\"vip\":\"198.18.0.1\",\"port\":80,\"protocol\":\"tcp\",\"table_size\":1000}}", "invalid", "prime"),
        ("{\"v\":1,\"op\":\"generation\",\"surprise\":true}", "unknown_field", "surprise"),
        ("{\"v\":1,\"op\":\"explain\",\"client\":\"10.0.0.1:1\"}", "missing_field", "service"),
    ];
    for (line, kind, needle) in cases {
        let r = serde_json::to_value(c.send_line(&format!("{line}\n")).unwrap()).unwrap();
        assert_err(&r, kind, needle);
        assert_eq!(r["generation"], g, "{line}");
    }
    // The connection survives bad requests.
    assert_eq!(raw(&mut c, &json!({"v":1,"op":"generation"}))["ok"], true);

    // An over-long line: an error, then the connection is closed.
    let mut s = UnixStream::connect(&lb.socket).unwrap();
    s.write_all(&vec![b'x'; 10_000]).unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    let r: Value = serde_json::from_str(&reply).unwrap();
    assert_err(&r, "line_too_long", "4096");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // A client that disconnects mid-request: nothing is applied.
    let mut s = UnixStream::connect(&lb.socket).unwrap();
    s.write_all(br#"{"v":1,"op":"endpoint_down","service":"web","endpoint":"10.200.2.11:8080""#)
        .unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(lb.generation(), g, "a half-sent request changes nothing");
    let r = lb.call(json!({"v":1,"op":"services_list"}));
    assert_eq!(
        r["result"]["services"][0]["endpoints"][0]["state"],
        "active"
    );
    lb.stop();
}

#[test]
fn the_socket_is_owner_only_and_never_shared_between_instances() {
    let lb = Lb::start("perm", 1, vec![web()]);
    let mode = std::fs::metadata(&lb.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // A second instance on the same path is refused while the first lives.
    let dp = Dataplane::<MemBuf>::start(
        vec![(WorkerConfig::new(0, 1), vec![QueuePort::new(16).0])],
        Generation::empty(),
    );
    let store = Store::new(topology(), vec![]).unwrap();
    let opts = ServerOptions {
        socket: lb.socket.clone(),
        metrics: None,
        limits: Limits::default(),
        priority: ControlPriority::Normal,
        flow_state: None,
    };
    let err = ControlServer::spawn_with(opts.clone(), store, dp)
        .err()
        .expect("refused");
    assert!(matches!(err, ServerError::InUse(_)), "{err}");
    assert!(err.to_string().contains("another sluice"), "{err}");
    // The first instance still serves.
    assert!(lb.generation() >= 1);
    let path = lb.socket.clone();
    lb.stop();
    assert!(!path.exists(), "socket removed at shutdown");

    // A stale socket left by a crashed run is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    assert!(path.exists());
    let dp = Dataplane::<MemBuf>::start(
        vec![(WorkerConfig::new(0, 1), vec![QueuePort::new(16).0])],
        Generation::empty(),
    );
    let h = ControlServer::spawn_with(opts.clone(), Store::new(topology(), vec![]).unwrap(), dp)
        .unwrap();
    let mut c = Client::connect(&path).unwrap();
    assert!(c.call(&Request::Generation).unwrap().ok);
    h.shutdown().unwrap().stop();

    // A regular file is never deleted.
    std::fs::write(&path, b"precious").unwrap();
    let dp = Dataplane::<MemBuf>::start(
        vec![(WorkerConfig::new(0, 1), vec![QueuePort::new(16).0])],
        Generation::empty(),
    );
    let err = ControlServer::spawn_with(opts, Store::new(topology(), vec![]).unwrap(), dp)
        .err()
        .expect("refused");
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // The client explains what is wrong.
    std::fs::remove_file(&path).unwrap();
    let e = Client::connect(&path).err().unwrap();
    assert!(matches!(e, ClientError::NotRunning(_)), "{e}");
    assert!(e.to_string().contains("not running"));
}

#[test]
fn concurrent_clients_are_all_answered_and_a_stuck_one_blocks_no_one() {
    let lb = Lb::start_with(
        "concurrent",
        2,
        vec![web()],
        Limits {
            max_connections: 12,
            ..Limits::default()
        },
        None,
    );
    let g0 = lb.generation();
    // A stuck client: half a request, never finished, never read.
    let mut stuck = UnixStream::connect(&lb.socket).unwrap();
    stuck.write_all(br#"{"v":1,"op":"#).unwrap();
    // Another floods requests and never reads its replies.
    let mut flood = UnixStream::connect(&lb.socket).unwrap();
    flood.set_nonblocking(true).unwrap();
    let line = Request::Generation.to_line();
    for _ in 0..2000 {
        if flood.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    let socket = lb.socket.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).unwrap();
                let mut last = 0;
                for i in 0..50u32 {
                    let r = c
                        .call(&Request::EndpointWeight {
                            service: "web".into(),
                            endpoint: format!("{}:8080", backend((t % 3) as u8 + 1))
                                .parse()
                                .unwrap(),
                            weight: 1 + (i % 7),
                        })
                        .unwrap();
                    assert!(r.ok, "{r:?}");
                    assert!(r.generation > last, "generations only go up per client");
                    last = r.generation;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let g1 = lb.generation();
    assert!(
        g1 > g0 && g1 <= g0 + 400,
        "{g0} -> {g1}: group commit may merge changes"
    );
    // Connection limit: the 13th concurrent connection is refused politely.
    // (The stuck and the flooding clients hold two; fill the other ten with
    // clients proven live by a round trip.)
    std::thread::sleep(Duration::from_millis(200));
    let extra: Vec<Client> = (0..10)
        .map(|_| {
            let mut c = Client::connect(&socket).unwrap();
            assert!(c.call(&Request::Generation).unwrap().ok);
            c
        })
        .collect();
    let mut over = UnixStream::connect(&socket).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    BufReader::new(&mut over).read_line(&mut reply).unwrap();
    assert!(reply.contains("too many control connections"), "{reply}");
    drop(extra);
    drop(stuck);
    drop(flood);
    lb.stop();
}

#[test]
fn reload_runs_a_valid_file_and_an_invalid_one_keeps_the_old_config() {
    let dir = temp_dir("reload");
    let lb = Lb::start("reload-srv", 1, vec![web()]);
    let file = dir.join("sluice.toml");
    let base = format!(
        r#"
[dataplane]
backend = "mem"
[[interface]]
name = "clients"
mac = "02:00:00:00:01:fe"
address = "10.200.1.254/24"
[[interface]]
name = "backends"
mac = "02:00:00:00:02:fe"
address = "10.200.2.254/24"
[network]
gateway = "10.200.1.1"
neighbors = [{{ ip = "10.200.2.11", mac = "02:00:00:00:02:0b" }}]
[[service]]
name = "api"
vip = "{VIP}"
port = 443
protocol = "tcp"
table_size = 251
[[service.endpoint]]
address = "10.200.2.11"
port = 8443
"#
    );
    std::fs::write(&file, &base).unwrap();
    let r = lb.call(json!({"v":1,"op":"reload","path":file.display().to_string()}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["services"], 1);
    let g = lb.generation();
    let names = |lb: &Lb| -> Vec<String> {
        lb.call(json!({"v":1,"op":"services_list"}))["result"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&lb), ["api"]);
    for (bad, needle) in [
        (
            base.replace("port = 8443", "port = 0"),
            "port must be 1-65535",
        ),
        (
            base.replace("table_size = 251", "table_size = 252"),
            "prime",
        ),
        (
            base.replace("protocol = \"tcp\"", "protocol = \"sctp\""),
            "sctp",
        ),
        (base.clone() + "\nbogus = 1\n", "bogus"),
    ] {
        std::fs::write(&file, bad).unwrap();
        let r = lb.call(json!({"v":1,"op":"reload","path":file.display().to_string()}));
        assert_err(&r, "config", needle);
        assert_eq!(lb.generation(), g);
        assert_eq!(names(&lb), ["api"]);
    }
    let r =
        lb.call(json!({"v":1,"op":"reload","path":dir.join("missing.toml").display().to_string()}));
    assert_err(&r, "config", "cannot read");
    // The interfaces a file names are the ports opened at start: renamed or
    // added ones are refused, and nothing changes.
    let renamed = base.replace("name = \"backends\"", "name = \"servers\"");
    std::fs::write(&file, renamed).unwrap();
    let r = lb.call(json!({"v":1,"op":"reload","path":file.display().to_string()}));
    assert_err(&r, "invalid", "restart sluice");
    assert_eq!(lb.generation(), g);
    // An AF_PACKET file may leave `mac` out (read from the interface at
    // start): a reload keeps the MACs sluice runs with.
    let no_mac: String = base
        .replace("backend = \"mem\"", "backend = \"afpacket\"")
        .lines()
        .filter(|l| !l.starts_with("mac = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, no_mac).unwrap();
    let r = lb.call(json!({"v":1,"op":"reload","path":file.display().to_string()}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(lb.generation(), g + 1);
    lb.stop();
}

#[test]
fn a_drain_deadline_marks_the_endpoint_down() {
    let lb = Lb::start("deadline", 1, vec![web()]);
    let r = lb.call(
        json!({"v":1,"op":"endpoint_drain","service":"web","endpoint":ep(1),"deadline_ms":1000}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let state = |lb: &Lb| {
        lb.call(json!({"v":1,"op":"services_list"}))["result"]["services"][0]["endpoints"][0]
            ["state"]
            .clone()
    };
    assert_eq!(state(&lb), "draining");
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&lb) != "down" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&lb), "down");
    // A drain ended by `up` before its deadline is not acted on later.
    lb.call(
        json!({"v":1,"op":"endpoint_drain","service":"web","endpoint":ep(2),"deadline_ms":100}),
    );
    lb.call(json!({"v":1,"op":"endpoint_up","service":"web","endpoint":ep(2)}));
    std::thread::sleep(Duration::from_millis(300));
    let r = lb.call(json!({"v":1,"op":"services_list"}));
    assert_eq!(
        r["result"]["services"][0]["endpoints"][1]["state"],
        "active"
    );
    lb.stop();
}

#[test]
fn metrics_are_served_in_prometheus_text_on_loopback() {
    let lb = Lb::start_with(
        "metrics",
        2,
        vec![web()],
        Limits::default(),
        Some("127.0.0.1:0".parse().unwrap()),
    );
    let addr = lb.handle.as_ref().unwrap().metrics_addr().unwrap();
    assert!(lb.wires[0][0].inject(&from_client(40000, SYN, 1, 0)));
    assert!(lb.wires[1][0].inject(&from_client(40001, SYN, 1, 0)));
    std::thread::sleep(Duration::from_millis(100));
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    for needle in [
        "sluice_packets_total{worker=\"0\",direction=\"rx\"}",
        "sluice_drops_total{worker=\"0\",reason=\"no_service\"}",
        "sluice_flows_untracked_total{worker=\"1\"}",
        "sluice_handoffs_total{worker=\"0\",direction=\"in\"}",
        "sluice_endpoint_packets_total{service=\"web\",endpoint=\"10.200.2.11:8080\",direction=\"in\"}",
        "sluice_flows_active{worker=\"1\"}",
        "# TYPE sluice_generation gauge",
    ] {
        assert!(body.contains(needle), "missing {needle}");
    }
    let forwarded: u64 = body
        .lines()
        .filter(|l| l.starts_with("sluice_endpoint_packets_total") && l.contains("\"in\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(forwarded, 2);
    assert!(get("/other").starts_with("HTTP/1.0 404"));
    lb.stop();
}

#[test]
fn outcome_types_are_what_the_cli_expects() {
    let lb = Lb::start("typed", 1, vec![web()]);
    let mut c = lb.client();
    let r = c.call(&Request::FlowsCount).unwrap();
    assert!(
        matches!(r.result, Some(Outcome::FlowCount { total: 0, .. })),
        "{r:?}"
    );
    let r = c
        .call(&Request::EndpointDrain {
            service: "web".into(),
            endpoint: ep(3).parse().unwrap(),
            deadline_ms: None,
        })
        .unwrap();
    assert!(matches!(r.result, Some(Outcome::Applied { .. })), "{r:?}");
    let r = c.call(&Request::ServicesList).unwrap();
    let Some(Outcome::Services { services }) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(services[0].endpoints[2].state, EndpointState::Draining);
    let r = c.call(&Request::Explain {
        client: "10.0.0.1:1".parse().unwrap(),
        service: Some("nope".into()),
        vip: None,
        protocol: None,
        syn: true,
    });
    let e = r.unwrap().error.unwrap();
    assert_eq!(e.kind, ErrorKind::UnknownService);
    lb.stop();
}

#[test]
fn endpoint_changes_under_traffic_lose_and_misroute_nothing() {
    let lb = Lb::start("traffic", 2, vec![web()]);
    let wires: Vec<Vec<MemWire>> = lb.wires.iter().map(|w| w.to_vec()).collect();
    const FLOWS: u16 = 200;
    let owner = |port: u16| sluice::hash::owner_worker(u32::from(CLIENT), port, 2) as usize;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let traffic = std::thread::spawn(move || {
        let mut sent = 0u64;
        let mut pinned: std::collections::HashMap<u16, std::net::Ipv4Addr> = Default::default();
        let mut received = 0u64;
        let mut misrouted = 0u64;
        let drain = |pinned: &mut std::collections::HashMap<u16, std::net::Ipv4Addr>,
                     received: &mut u64,
                     misrouted: &mut u64| {
            for w in &wires {
                for f in w[1].take_all() {
                    if is_arp(&f) {
                        continue;
                    }
                    let s = inspect(&f);
                    *received += 1;
                    let b = *pinned.entry(s.sport).or_insert(s.dst);
                    if b != s.dst {
                        *misrouted += 1;
                    }
                }
            }
        };
        let mut round = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) || round < 3 {
            for i in 0..FLOWS {
                let port = 30000 + i;
                let (flags, seq) = if round == 0 {
                    (SYN, 1)
                } else {
                    (ACK, 2 + round)
                };
                let f = from_client(port, flags, seq, 0);
                while !wires[owner(port)][0].inject(&f) {
                    drain(&mut pinned, &mut received, &mut misrouted);
                    std::thread::yield_now();
                }
                sent += 1;
            }
            drain(&mut pinned, &mut received, &mut misrouted);
            round += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while received < sent && Instant::now() < deadline {
            drain(&mut pinned, &mut received, &mut misrouted);
            std::thread::sleep(Duration::from_millis(1));
        }
        (sent, received, misrouted)
    });
    let mut c = lb.client();
    let changes = [
        json!({"v":1,"op":"endpoint_add","service":"web","endpoint":{"addr":"10.200.2.14","port":8080}}),
        json!({"v":1,"op":"endpoint_weight","service":"web","endpoint":ep(2),"weight":4}),
        json!({"v":1,"op":"endpoint_drain","service":"web","endpoint":ep(1)}),
        json!({"v":1,"op":"endpoints_set","service":"web","endpoints":[
            {"addr":"10.200.2.11","port":8080,"state":"draining"},
            {"addr":"10.200.2.12","port":8080,"weight":2},
            {"addr":"10.200.2.13","port":8080},
            {"addr":"10.200.2.14","port":8080},
            {"addr":"10.200.2.15","port":8080}]}),
        json!({"v":1,"op":"endpoint_up","service":"web","endpoint":ep(1)}),
        json!({"v":1,"op":"service_add","service":{"name":"other","vip":"198.18.0.7","port":80,"protocol":"tcp","table_size":251}}),
    ];
    for _ in 0..5 {
        for ch in &changes {
            let r = raw(&mut c, ch);
            // Repeats of an add are refused (already there) and change nothing.
            let repeat = ch["op"] == "service_add" || ch["op"] == "endpoint_add";
            assert!(r["ok"] == true || repeat, "{ch} -> {r}");
            std::thread::sleep(Duration::from_millis(5));
        }
        raw(&mut c, &json!({"v":1,"op":"service_remove","name":"other"}));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, received, misrouted) = traffic.join().unwrap();
    assert!(sent > 1000, "{sent}");
    assert_eq!(received, sent, "no packet lost");
    assert_eq!(misrouted, 0, "established flows keep their backend");
    let r = lb.call(json!({"v":1,"op":"stats"}));
    assert!(r["result"]["drops"].as_object().unwrap().is_empty(), "{r}");
    lb.stop();
}

#[test]
fn the_ctl_command_prints_tables_json_and_clear_errors() {
    let lb = Lb::start("cli", 1, vec![web()]);
    let bin = env!("CARGO_BIN_EXE_sluice");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("ctl")
            .arg("--socket")
            .arg(&lb.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = run(&["services", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("web") && out.contains("198.18.0.100:80") && out.contains("10.200.2.12:8080"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "endpoints",
        "set",
        "web",
        "10.200.2.11:8080=2",
        "10.200.2.12:8080",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("runs on every worker"), "{out}");
    let (code, out, _) = run(&[
        "endpoint",
        "drain",
        "web",
        "10.200.2.11:8080",
        "--deadline",
        "30s",
    ]);
    assert_eq!(code, Some(0), "{out}");
    // The neighbor table: the configured neighbors, on their interfaces.
    let (code, out, err) = run(&["neighbors"]);
    assert_eq!(code, Some(0), "{out} {err}");
    let b1 = out
        .lines()
        .find(|l| l.starts_with("10.200.2.11 "))
        .unwrap_or_else(|| panic!("no row for 10.200.2.11: {out}"));
    for col in ["02:00:00:00:02:0b", "backends", "static", "config"] {
        assert!(b1.contains(col), "{col} missing: {b1}");
    }
    let (code, out, _) = run(&["--json", "neighbors"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let rows = v["result"]["neighbors"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["ip"] == "10.200.1.1" && r["interface"] == "clients"),
        "the gateway: {v}"
    );
    let (code, out, _) = run(&["--json", "services", "list"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["result"]["services"][0]["endpoints"][0]["state"],
        "draining"
    );
    assert_eq!(
        v["result"]["services"][0]["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, out, _) = run(&["explain", "web", "10.200.1.7:40000"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("10.200.2.12:8080") && out.contains("Maglev slot"),
        "{out}"
    );
    let (code, out, _) = run(&["stats"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("WORKER") && out.contains("SHARE"), "{out}");
    let (code, out, _) = run(&["top", "--count", "2", "--interval", "0.1"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("sluice top"), "{out}");
    let (code, _, err) = run(&["endpoint", "weight", "api", "10.200.2.11:8080", "3"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no service named \"api\""), "{err}");
    for args in [
        &["digest"][..],
        &["generation"],
        &["flows", "count"],
        &["flows", "dump"],
    ] {
        assert_eq!(run(args).0, Some(0), "{args:?}");
    }
    let socket = lb.socket.clone();
    lb.stop();
    let out = std::process::Command::new(bin)
        .args(["ctl", "--socket"])
        .arg(&socket)
        .arg("generation")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("sluice is not running"), "{err}");
}

/// Sends one client frame per source port (to the worker that owns it) and
/// returns the backend each was forwarded to.
fn forward_each(lb: &Lb, workers: u32, ports: &[u16], flags: u8) -> Vec<(u16, Ipv4Addr)> {
    for &p in ports {
        let w = sluice::hash::owner_worker(u32::from(CLIENT), p, workers) as usize;
        assert!(lb.wires[w][0].inject(&from_client(p, flags, 7, 9)));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.len() < ports.len() && Instant::now() < deadline {
        for w in &lb.wires {
            for f in w[1].take_all().iter().filter(|f| !is_arp(f)) {
                let s = inspect(f);
                seen.push((s.sport, s.dst));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen.len(), ports.len(), "not every frame was forwarded");
    seen.sort();
    seen
}

/// S4c: a planned restart keeps every flow on its backend although the
/// endpoint set grew from 2 to 6 while sluice was down, and the worker count
/// went from 2 to 1. The snapshot written at the stop is read once at the
/// start; mid-flow packets follow it, not Maglev's choice over the new set
/// (which would have moved most of them and broken those connections).
#[test]
fn planned_restart_keeps_flows_on_their_backends_across_a_changed_endpoint_set() {
    let dir = temp_dir("snapshot");
    let state = dir.join("flows");
    let ports: Vec<u16> = (0..100).map(|i| 42_000 + i).collect();
    let two = vec![service(Protocol::Tcp, &eps(&[1, 1]))];
    let lb = Lb::start_full(
        "restart-a",
        2,
        two,
        Limits::default(),
        None,
        Some(state.clone()),
    );
    let pinned = forward_each(&lb, 2, &ports, SYN);
    forward_each(&lb, 2, &ports, ACK);
    lb.stop();
    assert!(state.exists(), "no snapshot at {}", state.display());

    let six = vec![service(Protocol::Tcp, &eps(&[1, 1, 1, 1, 1, 1]))];
    let lb = Lb::start_full(
        "restart-b",
        1,
        six.clone(),
        Limits::default(),
        None,
        Some(state.clone()),
    );
    assert!(!state.exists(), "a snapshot is used once");
    let r = lb.call(json!({"v":1,"op":"flows_count"}));
    assert_eq!(r["result"]["total"], 100, "{r}");
    let after = forward_each(&lb, 1, &ports, ACK | PSH);
    assert_eq!(after, pinned, "a restored flow changed backend");
    // The restore is what kept them: Maglev over the new set moves most.
    let g = Generation::build(1, &topology(), &six).unwrap();
    let moved = pinned
        .iter()
        .filter(|(p, b)| {
            let key = sluice::flow::FlowKey {
                client_addr: u32::from(CLIENT),
                vip_addr: u32::from(VIP),
                client_port: *p,
                vip_port: 80,
                proto: 6,
            };
            let ep = g
                .choose_existing(0, key.hash_v1(g.service(0).seed))
                .unwrap();
            g.endpoint(ep).addr != u32::from(*b)
        })
        .count();
    assert!(moved > 30, "only {moved} of 100 flows would have moved");
    // Open flows are counted for their backends again.
    let s = lb.call(json!({"v":1,"op":"stats"}));
    let open: u64 = s["result"]["services"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["active_flows"].as_u64().unwrap())
        .sum();
    assert_eq!(open, 100, "{s}");
    lb.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A snapshot that cannot be trusted is reported and ignored: sluice starts
/// with empty tables and serves as usual.
#[test]
fn damaged_snapshot_is_ignored_and_sluice_starts() {
    let dir = temp_dir("bad-snapshot");
    let state = dir.join("flows");
    std::fs::write(&state, b"SLUICEFS\0\0\0\x01\0\0\0\0\0\0\0\x05truncated").unwrap();
    let specs = vec![service(Protocol::Tcp, &eps(&[1, 1]))];
    let lb = Lb::start_full(
        "bad-snapshot",
        1,
        specs,
        Limits::default(),
        None,
        Some(state),
    );
    let r = lb.call(json!({"v":1,"op":"flows_count"}));
    assert_eq!(r["result"]["total"], 0, "{r}");
    assert_eq!(forward_each(&lb, 1, &[43_000], SYN).len(), 1);
    lb.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
