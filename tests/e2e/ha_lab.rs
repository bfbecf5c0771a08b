//! The high-availability lab around several real sluice processes:
//! scripts/netlab_ha.sh for the topology (two routers running BIRD with
//! ECMP, instances, clients, backends), the `sluice` binary under test in
//! each instance namespace (each starting its own BIRD), kernel TCP peers
//! from scripts/lab_*.py. The independent witnesses are the routers'
//! kernel FIBs (`ip route`) and the clients' own errors.
//!
//! Everything a test creates is owned by an [`HaLab`] whose `Drop` removes
//! it (processes, daemons, namespaces, files), on success and on panic.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::lab::{script, Lines};

const SBIN: &str = env!("CARGO_BIN_EXE_sluice");
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What an HA lab test needs from the machine (see `tests/harness`): the
/// lab's needs, BIRD and nftables.
pub const NEEDS: &[crate::harness::Need] = &[
    crate::harness::Need::Root,
    crate::harness::Need::Tool("ip"),
    crate::harness::Need::Tool("python3"),
    crate::harness::Need::Tool("tcpdump"),
    crate::harness::Need::Tool("bird"),
    crate::harness::Need::Tool("nft"),
];

pub struct HaLab {
    pub id: String,
    dir: PathBuf,
    /// sluice per instance (index k-1).
    instances: Vec<Option<Child>>,
    /// HTTP servers per backend (index i-1).
    servers: Vec<Option<Child>>,
    /// Background clients, killed on drop.
    children: Vec<Child>,
    backends: usize,
    /// A `[service.health]` table for every instance's service.
    health: String,
}

impl HaLab {
    /// The lab with `instances` instance namespaces (none started),
    /// `backends` HTTP backends (started) and `clients` clients.
    pub fn up(instances: usize, backends: usize, clients: usize) -> HaLab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("h{}n{}r{:04x}", std::process::id(), n, nanos & 0xffff);
        let dir = std::env::temp_dir().join(format!("sluice-ha-{id}"));
        std::fs::create_dir_all(&dir).expect("create the lab's state directory");
        let mut lab = HaLab {
            id,
            dir,
            instances: (0..instances).map(|_| None).collect(),
            servers: (0..backends).map(|_| None).collect(),
            children: Vec::new(),
            backends,
            health: String::new(),
        };
        let out = Command::new(script("netlab_ha.sh"))
            .args([
                "up",
                &lab.id,
                &instances.to_string(),
                &backends.to_string(),
                &clients.to_string(),
            ])
            .env("NETLAB_STATE", lab.dir.join("netlab"))
            .output()
            .expect("run netlab_ha.sh");
        assert!(
            out.status.success(),
            "netlab_ha.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 1..=backends {
            lab.start_server(i);
        }
        lab
    }

    pub fn ns(&self, suffix: &str) -> String {
        format!("sl-{}-{}", self.id, suffix)
    }

    pub fn socket(&self, k: usize) -> PathBuf {
        self.dir.join(format!("lb{k}.sock"))
    }

    fn config_path(&self, k: usize) -> PathBuf {
        self.dir.join(format!("lb{k}.toml"))
    }

    fn log_path(&self, k: usize) -> PathBuf {
        self.dir.join(format!("lb{k}.log"))
    }

    pub fn backend_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, 2, 10 + i as u8)
    }

    /// Instance k's address on the front (client-side) segment: the next
    /// hop the client-side router uses for it.
    pub fn front_hop(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, 3, 10 + k as u8)
    }

    /// Instance k's address on the back segment.
    pub fn back_hop(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, 4, 10 + k as u8)
    }

    /// Every instance's service gets this `[service.health]` table.
    pub fn set_health(&mut self, toml: &str) {
        self.health = toml.to_string();
    }

    pub fn start_server(&mut self, i: usize) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(&format!("b{i}")), "python3"])
            .arg(script("lab_server.py"))
            .args([
                &format!("b{i}"),
                &HaLab::backend_addr(i).to_string(),
                "8080",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start an HTTP server");
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("server stdout")).read_line(&mut line);
        self.servers[i - 1] = Some(child);
        assert!(
            matches!(read, Ok(n) if n > 0) && line.starts_with("listening"),
            "HTTP server b{i} did not start"
        );
    }

    /// Kills backend i's HTTP server (its kernel then refuses connections).
    pub fn stop_server(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Backend i's host goes silent: its kernel drops every TCP segment it
    /// receives (a hung or unplugged server), or answers again.
    pub fn silence_backend(&self, i: usize, silent: bool) {
        let ns = self.ns(&format!("b{i}"));
        let rules = if silent {
            "add table inet sluice_lab\nadd chain inet sluice_lab input { type filter hook input priority 0; policy accept; }\nadd rule inet sluice_lab input tcp dport 8080 drop\n"
        } else {
            "delete table inet sluice_lab\n"
        };
        let path = self.dir.join(format!("nft-b{i}"));
        std::fs::write(&path, rules).expect("write nft rules");
        let out = self.run_in_ns(&ns, &["nft", "-f", path.to_str().unwrap_or("")]);
        assert!(out.status.success(), "nft in {ns}: {out:?}");
    }

    /// Starts instance k and waits until its control socket answers.
    pub fn start(&mut self, k: usize) {
        assert!(self.instances[k - 1].is_none(), "lb{k} already running");
        let out = Command::new(script("netlab_ha.sh"))
            .args(["sluice-config", &self.id, &k.to_string(), &self.health])
            .env("NETLAB_STATE", self.dir.join("netlab"))
            .env("SOCK", self.socket(k))
            .env("NB", self.backends.to_string())
            .env("WITHDRAW_WAIT_MS", "1500")
            .output()
            .expect("netlab_ha.sh sluice-config");
        assert!(out.status.success(), "{out:?}");
        std::fs::write(self.config_path(k), &out.stdout).expect("write the config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(k))
            .expect("open the log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(&format!("lb{k}")),
                SBIN,
                "run",
                "--config",
            ])
            .arg(self.config_path(k))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start sluice");
        self.instances[k - 1] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(status))) = self.instances[k - 1].as_mut().map(|c| c.try_wait()) {
                panic!("lb{k} exited ({status}):\n{}", self.log(k));
            }
            if self.try_ctl(k, &["generation"]).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "lb{k} did not answer:\n{}",
                self.log(k)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM to instance k without waiting (the caller watches the
    /// routers meanwhile); [`HaLab::reap`] waits for it.
    pub fn terminate(&mut self, k: usize) {
        if let Some(c) = self.instances[k - 1].as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits for instance k to exit after [`HaLab::terminate`]; whether it
    /// did within `limit`.
    pub fn reap(&mut self, k: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.instances[k - 1].as_mut().map(|c| c.try_wait()) {
                self.instances[k - 1] = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The instance dies without warning: the switch stops carrying any
    /// frame from or to it (so not even a TCP FIN or a BFD "down" from its
    /// dying BGP speaker reaches the routers) and the process is killed.
    /// Frames are dropped by a filter on the switch rather than by taking
    /// its ports down: a port going down flushes the switch's MAC table,
    /// and the flooded unicast that follows would reach the surviving
    /// instance, which is not what a failover test may rely on.
    pub fn kill(&mut self, k: usize) {
        self.isolate(k);
        if let Some(mut c) = self.instances[k - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Drops, on the switch, every frame from or to instance k's three
    /// interfaces (front, back, management).
    pub fn isolate(&self, k: usize) {
        let mut rules = format!(
            "add table bridge sluice_lab_lb{k}\nadd chain bridge sluice_lab_lb{k} cut {{ type filter hook forward priority 0; policy accept; }}\n"
        );
        for seg in [3, 4, 9] {
            let mac = format!("02:00:00:00:{seg:02x}:{:02x}", 10 + k);
            rules.push_str(&format!(
                "add rule bridge sluice_lab_lb{k} cut ether saddr {mac} drop\nadd rule bridge sluice_lab_lb{k} cut ether daddr {mac} drop\n"
            ));
        }
        let path = self.dir.join(format!("nft-lb{k}"));
        std::fs::write(&path, rules).expect("write nft rules");
        let out = self.run_in_ns(&self.ns("sw"), &["nft", "-f", path.to_str().unwrap_or("")]);
        assert!(out.status.success(), "nft on the switch: {out:?}");
    }

    pub fn log(&self, k: usize) -> String {
        std::fs::read_to_string(self.log_path(k)).unwrap_or_default()
    }

    fn run_ctl(&self, k: usize, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(SBIN)
            .arg("ctl")
            .arg("--socket")
            .arg(self.socket(k))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "lb{k}: sluice ctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out.stdout)
    }

    pub fn try_ctl(&self, k: usize, args: &[&str]) -> Result<Value, String> {
        let json: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let out = self.run_ctl(k, &json)?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        Ok(v.get("result").cloned().unwrap_or(v))
    }

    pub fn ctl(&self, k: usize, args: &[&str]) -> Value {
        self.try_ctl(k, args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn ctl_text(&self, k: usize, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run_ctl(k, args).unwrap_or_else(|e| panic!("{e}")))
            .into_owned()
    }

    fn run_in_ns(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    pub fn run_in(&self, ns: &str, cmd: &[&str]) -> Output {
        self.run_in_ns(&self.ns(ns), cmd)
    }

    /// The next hops a router's kernel FIB holds for `dest`
    /// ("rc": the client side's VIP route; "rb": the return route).
    pub fn next_hops(&self, router: &str, dest: &str) -> Vec<Ipv4Addr> {
        let out = self.run_in(router, &["ip", "-j", "route", "show", dest]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mut hops = Vec::new();
        for r in v.as_array().into_iter().flatten() {
            if let Some(g) = r["gateway"].as_str().and_then(|g| g.parse().ok()) {
                hops.push(g);
            }
            for n in r["nexthops"].as_array().into_iter().flatten() {
                if let Some(g) = n["gateway"].as_str().and_then(|g| g.parse().ok()) {
                    hops.push(g);
                }
            }
        }
        hops.sort();
        hops
    }

    /// Waits until `router` holds `dest` via exactly `hops`; how long that
    /// took.
    pub fn wait_hops(
        &self,
        router: &str,
        dest: &str,
        hops: &[Ipv4Addr],
        limit: Duration,
    ) -> Duration {
        let t = Instant::now();
        let mut want = hops.to_vec();
        want.sort();
        loop {
            let got = self.next_hops(router, dest);
            if got == want {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "{router}: {dest} via {got:?}, not {want:?}, after {limit:?}"
            );
            // Each look is an `ip` process: looking more often would take
            // the CPU from the clients being measured.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Which next hop the client-side router's ECMP picks for a client's
    /// connection to the VIP (its kernel's own answer, hash policy 3).
    pub fn forward_hop(&self, client: &str) -> Ipv4Addr {
        let (addr, port) = client.split_once(':').expect("addr:port");
        self.route_get(
            "rc",
            &[
                "198.18.0.100",
                "from",
                addr,
                "iif",
                "c0",
                "ipproto",
                "tcp",
                "sport",
                port,
                "dport",
                "80",
            ],
        )
    }

    /// Which next hop the backend-side router picks for the replies of a
    /// client's connection served by backend `b`.
    pub fn return_hop(&self, client: &str, b: usize) -> Ipv4Addr {
        let (addr, port) = client.split_once(':').expect("addr:port");
        let from = HaLab::backend_addr(b).to_string();
        self.route_get(
            "rb",
            &[
                addr, "from", &from, "iif", "b0", "ipproto", "tcp", "sport", "8080", "dport", port,
            ],
        )
    }

    fn route_get(&self, router: &str, args: &[&str]) -> Ipv4Addr {
        let mut cmd = vec!["ip", "-j", "route", "get"];
        cmd.extend_from_slice(args);
        let out = self.run_in(router, &cmd);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0]["gateway"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("{router}: ip route get {args:?}: {v} {out:?}"))
    }

    /// Starts a lab Python script in namespace `ns`; its stdout is piped.
    pub fn py_spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> (usize, ChildStdout) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "python3"])
            .arg(script(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a lab script");
        let out = child.stdout.take().expect("stdout");
        self.children.push(child);
        (self.children.len() - 1, out)
    }

    /// Waits for a script started by [`HaLab::py_spawn`]; whether it
    /// succeeded in time.
    pub fn wait_child(&mut self, idx: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.children[idx].try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A stream of new connections from client `c` for `seconds`.
    pub fn stream(&mut self, c: usize, seconds: f64) -> (usize, Lines) {
        let (i, out) = self.py_spawn(
            &format!("c{c}"),
            "lab_stream.py",
            &["198.18.0.100", "80", &seconds.to_string(), "--timeout", "6"],
        );
        (i, Lines::new(out))
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for k in 1..=self.instances.len() {
                let log = self.log(k);
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!(
                    "--- lb{k} log tail ({}):\n{}",
                    self.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        for c in self
            .instances
            .iter_mut()
            .chain(self.servers.iter_mut())
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Kills whatever still runs in the namespaces (the routers' BIRDs
        // included), removes them and the routers' state.
        let _ = Command::new(script("netlab_ha.sh"))
            .args(["down", &self.id])
            .env("NETLAB_STATE", self.dir.join("netlab"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
