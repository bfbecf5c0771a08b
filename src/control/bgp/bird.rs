//! BIRD 2 as sluice's BGP speaker: the configuration sluice writes, the
//! client of BIRD's control socket, and the daemon process.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BgpSettings;

/// Name of the static protocol holding the VIP routes.
pub const VIPS: &str = "sluice_vips";
/// Name of the static protocol holding the peers' extra prefixes.
pub const PREFIXES: &str = "sluice_prefixes";

/// Why talking to BIRD failed.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("BIRD's control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("BIRD refused `{command}`: {message}")]
    Refused { command: String, message: String },
    #[error("BIRD closed its control socket")]
    Closed,
    #[error("cannot start BIRD ({daemon}): {source}; install it (apt-get install bird2) or set bgp.daemon to its path")]
    Spawn {
        daemon: PathBuf,
        source: std::io::Error,
    },
    #[error("BIRD rejected the configuration sluice wrote ({path}): {message}")]
    Config { path: PathBuf, message: String },
    #[error("BIRD exited ({0}) before its control socket answered; its log lines above say why")]
    Exited(std::process::ExitStatus),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// BIRD's configuration for `s`, announcing `vips` and, when `prefixes`
/// is set, the peers' extra prefixes.
///
/// Choices that matter for a load balancer:
/// - `graceful restart off`: a router must drop this instance's routes as
///   soon as its session goes, never keep them as stale while the
///   instance may be dead;
/// - `import none`: sluice needs no routes from the routers;
/// - next hops are set by the export filter (`next hop keep` stops BIRD
///   from replacing them with the session's own address): the next hop is
///   sluice's data-plane address, not the management one BGP runs on;
/// - short connect and error-wait timers, so a restarted instance is back
///   in seconds rather than BIRD's default minute.
pub fn config_text(s: &BgpSettings, vips: &BTreeSet<Ipv4Addr>, prefixes: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Written by sluice from its [bgp] settings and rewritten on every change: do not edit."
    );
    let _ = writeln!(o, "log stderr all;");
    let _ = writeln!(o, "router id {};", s.router_id);
    let _ = writeln!(o, "timeformat protocol iso long;");
    let _ = writeln!(o, "protocol device {{ scan time 10; }}");
    if let Some((interval, mult)) = s.bfd {
        let _ = writeln!(
            o,
            "protocol bfd sluice_bfd {{\n  interface \"*\" {{ interval {interval} ms; multiplier {mult}; }};\n  multihop {{ interval {interval} ms; multiplier {mult}; }};\n}}"
        );
    }
    let _ = writeln!(o, "protocol static {VIPS} {{\n  ipv4;");
    for v in vips {
        let _ = writeln!(o, "  route {v}/32 blackhole;");
    }
    let _ = writeln!(o, "}}");
    let all_prefixes: BTreeSet<(Ipv4Addr, u8)> = s
        .peers
        .iter()
        .flat_map(|p| p.prefixes.iter().copied())
        .collect();
    let _ = writeln!(o, "protocol static {PREFIXES} {{\n  ipv4;");
    if prefixes {
        for (net, len) in &all_prefixes {
            let _ = writeln!(o, "  route {net}/{len} blackhole;");
        }
    }
    let _ = writeln!(o, "}}");
    let keepalive = (s.hold_time / 3).max(1);
    for p in &s.peers {
        let _ = writeln!(o, "protocol bgp {} {{", p.name);
        let _ = writeln!(o, "  description \"sluice\";");
        match p.local_address {
            Some(a) => {
                let _ = writeln!(o, "  local {a} as {};", s.local_as);
            }
            None => {
                let _ = writeln!(o, "  local as {};", s.local_as);
            }
        }
        let port = p.port.map(|x| format!(" port {x}")).unwrap_or_default();
        let _ = writeln!(o, "  neighbor {}{port} as {};", p.address, p.remote_as);
        if let Some(ttl) = p.multihop {
            let _ = writeln!(o, "  multihop {ttl};");
        }
        let _ = writeln!(
            o,
            "  hold time {}; keepalive time {keepalive};",
            s.hold_time
        );
        let _ = writeln!(
            o,
            "  connect delay time 1; connect retry time 2; error wait time 1, 16; error forget time 60;"
        );
        let _ = writeln!(
            o,
            "  graceful restart off; long lived graceful restart off;"
        );
        if s.bfd.is_some() {
            let _ = writeln!(o, "  bfd on;");
        }
        let _ = writeln!(o, "  ipv4 {{\n    import none;\n    export filter {{");
        if let (true, Some(hop)) = (p.vips, p.next_hop) {
            let _ = writeln!(o, "      if proto = \"{VIPS}\" then {{");
            let _ = writeln!(o, "        bgp_next_hop = {hop};");
            for (vip, h) in &s.vip_next_hops {
                let _ = writeln!(o, "        if net = {vip}/32 then bgp_next_hop = {h};");
            }
            let _ = writeln!(o, "        accept;\n      }}");
        }
        if let (false, Some(hop)) = (p.prefixes.is_empty(), p.next_hop) {
            let set: Vec<String> = p.prefixes.iter().map(|(n, l)| format!("{n}/{l}")).collect();
            let _ = writeln!(
                o,
                "      if proto = \"{PREFIXES}\" && net ~ [ {} ] then {{\n        bgp_next_hop = {hop};\n        accept;\n      }}",
                set.join(", ")
            );
        }
        let _ = writeln!(o, "      reject;\n    }};\n    next hop keep;\n  }};\n}}");
    }
    o
}

/// One reply of BIRD's control protocol: its closing code and every line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<(u16, String)>,
}

impl Reply {
    /// Codes 8000 and up are errors (runtime and syntax).
    pub fn is_error(&self) -> bool {
        self.code >= 8000 || self.lines.iter().any(|(c, _)| *c >= 8000)
    }

    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|(_, l)| l.as_str())
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// How a reply line reads: `DDDD-text` (more follow), `DDDD text` (the
/// last), ` text` (continues the previous code), `+DDDD text` (an
/// asynchronous message, not part of the reply).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    More(u16, String),
    Last(u16, String),
    Continued(String),
    Async,
}

fn parse_line(line: &str) -> Option<Line> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.starts_with('+') {
        return Some(Line::Async);
    }
    if let Some(rest) = line.strip_prefix(' ') {
        return Some(Line::Continued(rest.to_string()));
    }
    let code: u16 = line.get(..4)?.parse().ok()?;
    let text = line.get(5..).unwrap_or("").to_string();
    match line.as_bytes().get(4) {
        Some(b'-') => Some(Line::More(code, text)),
        Some(b' ') | None => Some(Line::Last(code, text)),
        _ => None,
    }
}

/// A connection to BIRD's control socket.
pub struct BirdCtl {
    path: PathBuf,
    stream: BufReader<UnixStream>,
}

impl BirdCtl {
    /// Connects and reads BIRD's greeting.
    pub fn connect(path: &Path, timeout: Duration) -> Result<BirdCtl, BirdError> {
        let sock_err = |source| BirdError::Socket {
            path: path.to_path_buf(),
            source,
        };
        let s = UnixStream::connect(path).map_err(sock_err)?;
        s.set_read_timeout(Some(timeout)).map_err(sock_err)?;
        s.set_write_timeout(Some(timeout)).map_err(sock_err)?;
        let mut c = BirdCtl {
            path: path.to_path_buf(),
            stream: BufReader::new(s),
        };
        c.read_reply()?;
        Ok(c)
    }

    /// Sends one command and reads its whole reply.
    pub fn call(&mut self, command: &str) -> Result<Reply, BirdError> {
        self.stream
            .get_mut()
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|source| BirdError::Socket {
                path: self.path.clone(),
                source,
            })?;
        let r = self.read_reply()?;
        if r.is_error() {
            return Err(BirdError::Refused {
                command: command.to_string(),
                message: r.text(),
            });
        }
        Ok(r)
    }

    fn read_reply(&mut self) -> Result<Reply, BirdError> {
        let mut lines = Vec::new();
        let mut last = 0;
        loop {
            let mut line = String::new();
            let n = self
                .stream
                .read_line(&mut line)
                .map_err(|source| BirdError::Socket {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(BirdError::Closed);
            }
            match parse_line(&line) {
                Some(Line::More(c, t)) => {
                    last = c;
                    lines.push((c, t));
                }
                Some(Line::Continued(t)) => lines.push((last, t)),
                Some(Line::Last(c, t)) => {
                    lines.push((c, t));
                    return Ok(Reply { code: c, lines });
                }
                Some(Line::Async) | None => {}
            }
        }
    }
}

/// One protocol's row of `show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolRow {
    pub name: String,
    pub proto: String,
    /// BIRD's protocol state (up, start, down, ...).
    pub state: String,
    /// For BGP: the session state word (Established, Active, Idle, ...).
    pub bgp_state: String,
    /// What follows it (an error, if any).
    pub info: String,
}

/// The rows of a `show protocols` reply (written with `timeformat
/// protocol iso long`, so the Since column is two words).
pub fn protocol_rows(r: &Reply) -> Vec<ProtocolRow> {
    r.lines
        .iter()
        .filter(|(c, _)| *c == 1002)
        .filter_map(|(_, l)| {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 4 || t[0] == "Name" {
                return None;
            }
            let rest: Vec<&str> = t.iter().skip(6).copied().collect();
            let bgp_state = rest.first().copied().unwrap_or("").to_string();
            Some(ProtocolRow {
                name: t[0].to_string(),
                proto: t[1].to_string(),
                state: t[3].to_string(),
                bgp_state,
                info: rest.iter().skip(1).copied().collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// Writes `text` to `path` atomically (a reader sees the old or the new
/// file, never half of one).
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("conf.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Checks a configuration file with BIRD's own parser (`bird -p`).
pub fn check_config(daemon: &Path, conf: &Path) -> Result<(), BirdError> {
    let out = Command::new(daemon)
        .arg("-p")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BirdError::Spawn {
            daemon: daemon.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(BirdError::Config {
        path: conf.to_path_buf(),
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Starts BIRD in the foreground as a child that dies with the thread
/// that started it: when sluice dies, so does BIRD, its BGP sessions
/// close, and the routers drop this instance's routes at once instead of
/// forwarding to a dead instance until a timer says so.
///
/// With `realtime`, BIRD (and every thread it starts) runs SCHED_FIFO 1
/// (see [`BgpSettings::realtime`]); if the kernel refuses, it time-shares.
pub fn spawn(
    daemon: &Path,
    conf: &Path,
    socket: &Path,
    realtime: bool,
) -> Result<Child, BirdError> {
    let parent = std::process::id();
    let mut cmd = Command::new(daemon);
    cmd.arg("-f")
        .arg("-c")
        .arg(conf)
        .arg("-s")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only async-signal-safe functions (prctl, getppid, _exit,
    // sched_setscheduler); it touches no memory of the parent's other
    // threads, and `param` lives on the child's own stack.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would
            // ever kill this BIRD.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            if realtime {
                let param = libc::sched_param { sched_priority: 1 };
                // Refused (no CAP_SYS_NICE): BIRD time-shares.
                let _ = libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| BirdError::Spawn {
        daemon: daemon.to_path_buf(),
        source,
    })
}

/// Waits for BIRD's control socket to answer.
pub fn wait_ready(child: &mut Child, socket: &Path, limit: Duration) -> Result<BirdCtl, BirdError> {
    let deadline = Instant::now() + limit;
    loop {
        match BirdCtl::connect(socket, Duration::from_secs(5)) {
            Ok(c) => return Ok(c),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BirdError::Exited(status));
                }
                if Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::bgp::Peer;

    fn settings() -> BgpSettings {
        BgpSettings {
            local_as: 65001,
            router_id: "10.200.9.11".parse().unwrap(),
            hold_time: 3,
            bfd: Some((100, 3)),
            withdraw_wait: Duration::from_secs(1),
            daemon: "bird".into(),
            runtime_dir: "/tmp/x".into(),
            peers: vec![
                Peer {
                    name: "front".into(),
                    address: "10.200.9.1".parse().unwrap(),
                    remote_as: 65000,
                    local_address: Some("10.200.9.11".parse().unwrap()),
                    port: None,
                    multihop: None,
                    vips: true,
                    prefixes: vec![],
                    next_hop: Some("10.200.3.11".parse().unwrap()),
                },
                Peer {
                    name: "back".into(),
                    address: "10.200.9.2".parse().unwrap(),
                    remote_as: 65000,
                    local_address: Some("10.200.9.11".parse().unwrap()),
                    port: Some(1179),
                    multihop: Some(2),
                    vips: false,
                    prefixes: vec![("10.200.1.0".parse().unwrap(), 24)],
                    next_hop: Some("10.200.4.11".parse().unwrap()),
                },
            ],
            realtime: false,
            vip_next_hops: [(
                "198.18.0.101".parse().unwrap(),
                "10.200.3.21".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn the_configuration_announces_what_is_wanted_with_data_plane_next_hops() {
        let vips: BTreeSet<Ipv4Addr> = [
            "198.18.0.100".parse().unwrap(),
            "198.18.0.101".parse().unwrap(),
        ]
        .into_iter()
        .collect();
        let c = config_text(&settings(), &vips, true);
        for want in [
            "router id 10.200.9.11;",
            "route 198.18.0.100/32 blackhole;",
            "route 198.18.0.101/32 blackhole;",
            "route 10.200.1.0/24 blackhole;",
            "local 10.200.9.11 as 65001;",
            "neighbor 10.200.9.2 port 1179 as 65000;",
            "multihop 2;",
            "hold time 3; keepalive time 1;",
            "graceful restart off;",
            "bfd on;",
            "bgp_next_hop = 10.200.3.11;",
            "if net = 198.18.0.101/32 then bgp_next_hop = 10.200.3.21;",
            "net ~ [ 10.200.1.0/24 ]",
            "bgp_next_hop = 10.200.4.11;",
            "interval 100 ms; multiplier 3;",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        // Withdrawn: no route left, the sessions stay configured.
        let c = config_text(&settings(), &BTreeSet::new(), false);
        assert!(!c.contains("blackhole"), "{c}");
        assert!(c.contains("protocol bgp front") && c.contains("protocol bgp back"));
    }

    /// BIRD's own parser accepts what sluice writes (when BIRD is
    /// installed; the end-to-end tests need it anyway).
    #[test]
    fn bird_parses_the_configuration() {
        if Command::new("bird").arg("--version").output().is_err() {
            eprintln!("skipped: bird not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("sluice-bird-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("bird.conf");
        let vips = ["198.18.0.100".parse().unwrap()].into_iter().collect();
        for (vips, prefixes) in [(vips, true), (BTreeSet::new(), false)] {
            write_atomic(&conf, &config_text(&settings(), &vips, prefixes)).unwrap();
            let r = check_config(Path::new("bird"), &conf);
            assert!(
                r.is_ok(),
                "{r:?}\n{}",
                std::fs::read_to_string(&conf).unwrap()
            );
        }
        std::fs::write(&conf, "protocol bgp {").unwrap();
        assert!(matches!(
            check_config(Path::new("bird"), &conf),
            Err(BirdError::Config { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replies_are_read_to_their_last_line() {
        let lines = [
            "2002-Name       Proto      Table      State  Since         Info",
            "1002-device1    Device     ---        up     2026-12-05 12:34:42  ",
            " front      BGP        ---        up     2026-12-05 12:34:42  Established   ",
            " back       BGP        ---        start  2026-12-05 12:34:42  Idle          Error: BFD session down",
            "0000 ",
        ];
        let mut reply = Reply {
            code: 0,
            lines: vec![],
        };
        let mut last = 0;
        for l in lines {
            match parse_line(l).unwrap() {
                Line::More(c, t) => {
                    last = c;
                    reply.lines.push((c, t))
                }
                Line::Continued(t) => reply.lines.push((last, t)),
                Line::Last(c, t) => {
                    reply.code = c;
                    reply.lines.push((c, t))
                }
                Line::Async => {}
            }
        }
        assert_eq!(reply.code, 0);
        assert!(!reply.is_error());
        let rows = protocol_rows(&reply);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[1].name, "front");
        assert_eq!(rows[1].bgp_state, "Established");
        assert_eq!(rows[2].bgp_state, "Idle");
        assert_eq!(rows[2].info, "Error: BFD session down");
        assert_eq!(
            parse_line("9001 syntax error, unexpected CF_SYM_UNDEFINED\n"),
            Some(Line::Last(
                9001,
                "syntax error, unexpected CF_SYM_UNDEFINED".into()
            ))
        );
        assert_eq!(parse_line("+0008 Already disabled"), Some(Line::Async));
    }
}
