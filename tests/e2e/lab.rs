//! The namespace lab around a real sluice process: scripts/netlab.sh for the
//! topology, scripts/lab_*.py for kernel TCP peers and raw frames, the
//! `sluice` binary under test for the data path and `sluice ctl` to steer it.
//!
//! Everything a test creates is owned by a [`Lab`] whose `Drop` removes it
//! (processes, namespaces, files), on success and on panic alike. The
//! tests run under `tests/harness`: skipped (never passed) on a machine
//! without root, one at a time across processes.
// Shared by several end-to-end test files, each using part of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const VIP: &str = "198.18.0.100";
pub const VIP_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;
pub const SLUICE_CLIENT_MAC: &str = "02:00:00:00:01:fe";
pub const SLUICE_BACKEND_MAC: &str = "02:00:00:00:02:fe";

const SBIN: &str = env!("CARGO_BIN_EXE_sluice");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What a lab test needs from the machine (see `tests/harness`).
pub const NEEDS: &[crate::harness::Need] = &[
    crate::harness::Need::Root,
    crate::harness::Need::Tool("ip"),
    crate::harness::Need::Tool("python3"),
    crate::harness::Need::Tool("tcpdump"),
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn script(name: &str) -> String {
    format!("{ROOT}/scripts/{name}")
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Which packet I/O backend sluice runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    AfPacket,
    /// The DPDK port over net_af_packet vdevs.
    #[allow(dead_code)]
    Dpdk,
    /// The DPDK port over net_af_xdp vdevs (the PMD's XDP program on each
    /// interface redirects frames to its AF_XDP sockets).
    #[allow(dead_code)]
    DpdkXdp,
}

pub struct Lab {
    pub id: String,
    dir: PathBuf,
    backend: Backend,
    sluice: Option<Child>,
    /// Whether sluice saves its flows on a stop and restores them on start
    /// (its default); off, a restart starts with empty tables.
    flow_snapshot: bool,
    /// `dataplane.flow_capacity`, if not sluice's default.
    pub flow_capacity: Option<usize>,
    /// Run sluice as this user id with only these capabilities (names like
    /// "net_raw"), through setpriv, instead of as root.
    pub run_as: Option<(u32, Vec<String>)>,
    /// Extra environment for sluice.
    pub env: Vec<(String, String)>,
    /// Run sluice under scripts/lab_supervisor.py (a stand-in for systemd
    /// with a file descriptor store and Restart=always), restarting it
    /// this many milliseconds after it exits.
    pub supervised: Option<u32>,
    /// `dataplane.workers` (and the DPDK vdevs' queue pairs).
    pub workers: usize,
    /// Servers and background clients, killed on drop.
    children: Vec<Child>,
}

impl Lab {
    /// A lab with `backends` backend and `clients` client namespaces, each
    /// backend running an HTTP server that answers with its name ("b1"...).
    pub fn up(backends: usize, clients: usize, backend: Backend) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("e{}n{}r{:04x}", std::process::id(), n, nanos & 0xffff);
        let dir = std::env::temp_dir().join(format!("sluice-e2e-{id}"));
        std::fs::create_dir_all(&dir).expect("create the lab's state directory");
        let mut lab = Lab {
            id,
            dir,
            backend,
            sluice: None,
            flow_snapshot: true,
            flow_capacity: None,
            run_as: None,
            env: Vec::new(),
            supervised: None,
            workers: 1,
            children: Vec::new(),
        };
        let out = Command::new(script("netlab.sh"))
            .args(["up", &lab.id, &backends.to_string(), &clients.to_string()])
            .output()
            .expect("run netlab.sh");
        assert!(
            out.status.success(),
            "netlab.sh up failed: {}",
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

    /// The lab's state directory (configuration, socket, logs).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The pid of the running sluice.
    pub fn sluice_pid(&self) -> Option<u32> {
        self.sluice.as_ref().map(|c| c.id())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sluice.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("sluice.toml")
    }

    pub fn backend_addr(i: usize) -> String {
        format!("10.200.2.{}", 10 + i)
    }

    pub fn client_addr(i: usize) -> String {
        format!("10.200.1.{}", 10 + i)
    }

    fn start_server(&mut self, i: usize) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(&format!("b{i}")), "python3"])
            .arg(script("lab_server.py"))
            .args([
                &format!("b{i}"),
                &Lab::backend_addr(i),
                &BACKEND_PORT.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start an HTTP server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("server stdout");
        let read = BufReader::new(stdout).read_line(&mut line);
        self.children.push(child);
        assert!(
            matches!(read, Ok(n) if n > 0) && line.starts_with("listening"),
            "HTTP server b{i} did not start"
        );
    }

    /// Restarts of this lab's sluice start with empty flow tables (a crash,
    /// or a fresh instance taking over), not from a snapshot.
    pub fn without_flow_snapshot(&mut self) {
        self.flow_snapshot = false;
    }

    /// Writes the configuration: one TCP service "web" on VIP:80 with the
    /// given `(backend index, weight)` endpoints.
    pub fn write_config(&self, endpoints: &[(usize, u32)]) {
        self.write_config_with(endpoints, "");
    }

    /// [`Lab::write_config`] followed by `extra` TOML (more services, ...).
    pub fn write_config_with(&self, endpoints: &[(usize, u32)], extra: &str) {
        let mut c = String::new();
        let sock = self.socket();
        let _ = writeln!(c, "[control]\nsocket = \"{}\"", sock.display());
        if !self.flow_snapshot {
            let _ = writeln!(c, "flow_state = \"\"");
        }
        let _ = writeln!(c);
        let _ = writeln!(
            c,
            "[dataplane]\nbackend = \"{}\"\nworkers = {}\nidle = {{ mode = \"backoff\", spin_polls = 2000, sleep_us = 50 }}",
            match self.backend {
                Backend::AfPacket => "afpacket",
                Backend::Dpdk | Backend::DpdkXdp => "dpdk",
            },
            self.workers
        );
        if let Some(n) = self.flow_capacity {
            let _ = writeln!(c, "flow_capacity = {n}");
        }
        let (if0, if1, mac0, mac1) = match self.backend {
            Backend::AfPacket => (
                "l0".to_string(),
                "l1".to_string(),
                String::new(),
                String::new(),
            ),
            Backend::Dpdk | Backend::DpdkXdp => {
                let _ = writeln!(
                    c,
                    "eal_args = [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--file-prefix\", \"{}\", \"-l\", \"{}\"]",
                    self.id,
                    if self.workers > 1 { "0-1" } else { "0" }
                );
                let q = self.workers;
                let (v0, v1) = if self.backend == Backend::Dpdk {
                    (
                        format!("net_af_packet0,iface=l0,qpairs={q},qdisc_bypass=1"),
                        format!("net_af_packet1,iface=l1,qpairs={q},qdisc_bypass=1"),
                    )
                } else {
                    (
                        format!("net_af_xdp0,iface=l0,start_queue=0,queue_count={q}"),
                        format!("net_af_xdp1,iface=l1,start_queue=0,queue_count={q}"),
                    )
                };
                (
                    v0,
                    v1,
                    format!("mac = \"{SLUICE_CLIENT_MAC}\""),
                    format!("mac = \"{SLUICE_BACKEND_MAC}\""),
                )
            }
        };
        let _ = writeln!(
            c,
            "\n[[interface]]\nname = \"{if0}\"\naddress = \"10.200.1.254/24\"\n{mac0}\n"
        );
        let _ = writeln!(
            c,
            "[[interface]]\nname = \"{if1}\"\naddress = \"10.200.2.254/24\"\n{mac1}\n"
        );
        let _ = writeln!(
            c,
            "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = {VIP_PORT}\nprotocol = \"tcp\"\n"
        );
        for &(i, w) in endpoints {
            let _ = writeln!(
                c,
                "[[service.endpoint]]\naddress = \"{}\"\nport = {BACKEND_PORT}\nweight = {w}\n",
                Lab::backend_addr(i)
            );
        }
        c.push_str(extra);
        std::fs::write(self.config_path(), c).expect("write sluice.toml");
    }

    /// Starts sluice in the lb namespace and waits until its control socket
    /// answers.
    pub fn start_sluice(&mut self) {
        assert!(self.sluice.is_none(), "sluice already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sluice.log"))
            .expect("open sluice.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("lb")]);
        if let Some((uid, caps)) = &self.run_as {
            // The socket (and the flow snapshot beside it) go in the lab's
            // directory: the user must own it.
            let _ = Command::new("chown")
                .arg(format!("{uid}:{uid}"))
                .arg(&self.dir)
                .status();
            let set = std::iter::once("-all".to_string())
                .chain(caps.iter().map(|c| format!("+{c}")))
                .collect::<Vec<_>>()
                .join(",");
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
            ])
            .args(["--clear-groups", &format!("--inh-caps={set}")])
            .args([
                &format!("--ambient-caps={set}"),
                &format!("--bounding-set={set}"),
            ]);
        }
        if let Some(delay) = self.supervised {
            cmd.args(["python3", &script("lab_supervisor.py")])
                .args(["--restart-delay-ms", &delay.to_string(), "--pidfile"])
                .arg(self.dir.join("sluice.pid"))
                .arg("--");
        }
        let child = cmd
            .args([SBIN, "run", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start sluice");
        self.sluice = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(status))) = self.sluice.as_mut().map(|c| c.try_wait()) {
                panic!("sluice exited ({status}):\n{}", self.sluice_log());
            }
            if self.try_ctl(&["generation"]).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sluice's control socket did not answer within 15 s:\n{}",
                self.sluice_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of the sluice process a supervised lab runs now.
    pub fn supervised_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("sluice.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs the supervised sluice process (the supervisor starts it
    /// again) and returns its pid.
    pub fn kill9_supervised(&self) -> u32 {
        let pid = self.supervised_pid().expect("a supervised sluice runs");
        let out = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output()
            .expect("run kill");
        assert!(out.status.success(), "kill -9 {pid}: {out:?}");
        pid
    }

    /// Waits until the supervisor runs a sluice other than `old` and its
    /// control socket answers.
    pub fn wait_restarted(&self, old: u32) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.supervised_pid().is_some_and(|p| p != old)
                && self.try_ctl(&["generation"]).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the supervisor did not restart sluice within 15 s:\n{}",
                self.sluice_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sluice with SIGTERM (a planned stop), SIGKILL after 5 s.
    pub fn stop_sluice(&mut self) {
        let Some(mut child) = self.sluice.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn sluice_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sluice.log")).unwrap_or_default()
    }

    /// Runs `sluice ctl --socket SOCKET ARGS`: its standard output if it
    /// succeeded, else what it printed.
    fn run_ctl(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(SBIN)
            .arg("ctl")
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "sluice ctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out.stdout)
    }

    pub fn try_ctl(&self, args: &[&str]) -> Result<Value, String> {
        let json: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let stdout = self.run_ctl(&json)?;
        serde_json::from_slice(&stdout).map_err(|e| {
            format!(
                "sluice ctl {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&stdout)
            )
        })
    }

    /// `sluice ctl ARGS` as a person runs it: the human-readable output.
    pub fn ctl_text(&self, args: &[&str]) -> String {
        let stdout = self.run_ctl(args).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&stdout).into_owned()
    }

    pub fn ctl(&self, args: &[&str]) -> Value {
        self.try_ctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The `result` of `sluice ctl --json stats`.
    pub fn stats(&self) -> Value {
        let v = self.ctl(&["stats"]);
        v.get("result").cloned().unwrap_or(v)
    }

    /// Starts `tcpdump -vv` in namespace `ns` on `iface` with `filter`,
    /// stopping after `count` packets; [`Capture::text`] reads what it
    /// printed. tcpdump checks IP and TCP/UDP/ICMP checksums itself and
    /// prints `(correct)` or `(incorrect -> ...)`: an oracle independent of
    /// sluice's own parser.
    pub fn capture(&mut self, ns: &str, iface: &str, count: usize, filter: &str) -> Capture {
        let path = self
            .dir
            .join(format!("capture-{ns}-{}.txt", self.children.len()));
        let out = std::fs::File::create(&path).expect("create the capture file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "tcpdump", "-i", iface])
            .args(["-nn", "-vv", "-l", "-c", &count.to_string(), filter])
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        self.children.push(child);
        let idx = self.children.len() - 1;
        // tcpdump says "listening on" once its filter is in place.
        let mut err = BufReader::new(self.children[idx].stderr.take().expect("stderr"));
        let mut line = String::new();
        let _ = err.read_line(&mut line);
        assert!(line.contains("listening"), "tcpdump did not start: {line}");
        Capture { path, idx }
    }

    /// Waits (up to `limit`) for a capture to end; what it printed.
    pub fn capture_text(&mut self, c: &Capture, limit: Duration) -> String {
        let _ = self.wait_child(c.idx, limit);
        std::fs::read_to_string(&c.path).unwrap_or_default()
    }

    /// Runs a command inside namespace `ns` and returns its output.
    pub fn run_in(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Runs a lab Python script in namespace `ns`; its stdout as JSON.
    pub fn py(&self, ns: &str, name: &str, args: &[&str]) -> Value {
        let path = script(name);
        let mut cmd = vec!["python3", path.as_str()];
        cmd.extend_from_slice(args);
        let out = self.run_in(ns, &cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim().lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "{name} {args:?} in {ns}: no JSON ({e}); stdout {text:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Starts a lab Python script in the background; its stdout is piped.
    pub fn py_spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> (usize, ChildStdout) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "python3"])
            .arg(script(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a lab script");
        let out = child.stdout.take().expect("stdout");
        self.children.push(child);
        (self.children.len() - 1, out)
    }

    /// Waits for a background script started by [`Lab::py_spawn`].
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

    /// `count` sequential requests on fresh connections from client `c`.
    pub fn http(&self, c: usize, count: usize) -> Value {
        self.py(
            &format!("c{c}"),
            "lab_client.py",
            &[VIP, &VIP_PORT.to_string(), &count.to_string()],
        )
    }

    /// Waits until client 1 gets answers through the VIP (sluice up, its ARP
    /// answered and the backends resolved).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.py(
                "c1",
                "lab_client.py",
                &[VIP, &VIP_PORT.to_string(), "3", "--timeout", "0.5"],
            );
            if r["errors"] == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no answer through the VIP within 10 s: {r}\n{}",
                self.sluice_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.sluice_log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- sluice log tail ({}):\n{}",
                self.id,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if let Some(mut s) = self.sluice.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Kills whatever still runs inside the namespaces, then removes them
        // (also after a half-finished `up`).
        let _ = Command::new(script("netlab.sh"))
            .args(["down", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.backend != Backend::AfPacket {
            // EAL's runtime directory, named by the --file-prefix we gave it.
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.id));
        }
    }
}

/// A running capture (see [`Lab::capture`]).
pub struct Capture {
    path: PathBuf,
    idx: usize,
}

/// A drop counter from a stats result.
pub fn drops(stats: &Value, reason: &str) -> u64 {
    stats["drops"][reason].as_u64().unwrap_or(0)
}

/// A counter summed over the workers of a stats result.
pub fn worker_sum(stats: &Value, field: &str) -> u64 {
    stats["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w[field].as_u64()).sum())
        .unwrap_or(0)
}

/// Reads JSON lines from a background script's stdout on a thread, so a
/// test can wait for lines with a timeout.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<Value>,
}

impl Lines {
    pub fn new(out: ChildStdout) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Lines { rx }
    }

    pub fn next(&self, limit: Duration) -> Option<Value> {
        self.rx.recv_timeout(limit).ok()
    }
}
