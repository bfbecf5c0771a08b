//! The TOML configuration file: control socket and metrics, data-path
//! backend and workers, interfaces, routes, neighbors, timeouts, services.
//!
//! Every section refuses unknown fields, and every check names the field and
//! the fix, because a typo in a load balancer's config should fail loudly at
//! start or reload, never run with a default the operator did not mean.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::flow::Timeouts;
use crate::service::{
    EndpointSpec, EndpointState, LinkSpec, Protocol, RouteSpec, ServiceSpec, Topology,
};
use crate::wire::MacAddr;
use crate::worker::IdlePolicy;

/// Where the control socket lives unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sluice/sluice.sock";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub control: ControlSection,
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(default)]
    pub interface: Vec<InterfaceSection>,
    #[serde(default)]
    pub route: Vec<RouteSection>,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub service: Vec<ServiceSection>,
    /// `[bgp]`: VIPs announced to routers (none when absent).
    #[serde(default)]
    pub bgp: Option<super::bgp::BgpSection>,
}

/// `[control]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Prometheus listener; off when absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Allows a non-loopback metrics address.
    #[serde(default)]
    pub metrics_public: bool,
    /// Scheduling of the control thread: `"realtime"` (the default) lets
    /// it preempt busy-polling workers (see `control::sched`); `"normal"`
    /// leaves it time-shared.
    #[serde(default)]
    pub priority: super::ControlPriority,
    /// Where the flow tables are saved on a planned stop and restored from
    /// on the next start (S4c). Default: beside the socket, with the
    /// extension `.flows`; `""` turns saving and restoring off.
    #[serde(default)]
    pub flow_state: Option<PathBuf>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            socket: default_socket(),
            metrics: None,
            metrics_public: false,
            priority: super::ControlPriority::default(),
            flow_state: None,
        }
    }
}

impl ControlSection {
    /// The flow snapshot's path, `None` when turned off.
    pub fn flow_state_path(&self) -> Option<PathBuf> {
        match &self.flow_state {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(self.socket.with_extension("flows")),
        }
    }
}

/// Which packet I/O backend the workers use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Afpacket,
    Dpdk,
    Mem,
}

/// `[dataplane]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneSection {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default)]
    pub cores: Option<Vec<usize>>,
    #[serde(default = "default_flow_capacity")]
    pub flow_capacity: usize,
    #[serde(default)]
    pub idle: IdleSection,
    #[serde(default)]
    pub eal_args: Vec<String>,
}

fn default_workers() -> usize {
    1
}

fn default_flow_capacity() -> usize {
    1 << 20
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            backend: Backend::default(),
            workers: default_workers(),
            cores: None,
            flow_capacity: default_flow_capacity(),
            idle: IdleSection::default(),
            eal_args: Vec::new(),
        }
    }
}

/// `idle = { mode = "backoff", spin_polls = 50, sleep_us = 50 }` or
/// `idle = { mode = "busy" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum IdleSection {
    Busy,
    Backoff {
        #[serde(default = "default_spin_polls")]
        spin_polls: u32,
        #[serde(default = "default_sleep_us")]
        sleep_us: u32,
    },
}

/// About 10 us of empty polls on the project's VM: a worker woken from its
/// sleep costs about as much, so spinning longer buys no latency, and on a
/// machine whose clients and backends share the cores (measured with
/// scripts/bench_latency.sh) 2,000 polls kept the worker spinning between
/// frames of a busy service and took the CPU its peers needed: 1,200
/// short connections/s instead of 25,000.
fn default_spin_polls() -> u32 {
    50
}

fn default_sleep_us() -> u32 {
    50
}

impl Default for IdleSection {
    fn default() -> Self {
        IdleSection::Backoff {
            spin_polls: default_spin_polls(),
            sleep_us: default_sleep_us(),
        }
    }
}

impl IdleSection {
    pub fn policy(self) -> IdlePolicy {
        match self {
            IdleSection::Busy => IdlePolicy::BusyPoll,
            IdleSection::Backoff {
                spin_polls,
                sleep_us,
            } => IdlePolicy::Backoff {
                spin_polls,
                sleep_us,
            },
        }
    }
}

/// `[[interface]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: String,
    /// Optional with afpacket (read from the interface by `sluice run`).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// `address/prefix`, e.g. `10.200.1.254/24`.
    pub address: String,
    /// Which side of the flows arrives here; inferred from the topology
    /// when absent (see [`Config::interface_roles`]).
    #[serde(default)]
    pub role: Option<InterfaceRole>,
}

/// Which packets of a flow arrive on an interface, and so which side of
/// them holds the client the flow's owner is computed from: the source on
/// a client-facing interface, the destination on a backend-facing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceRole {
    /// Clients' packets to VIPs arrive here.
    Client,
    /// Backends' replies arrive here.
    Backend,
    /// Both: a port can steer only one of the two to the owner (the
    /// clients' packets); replies cross the handoff ring.
    Both,
}

/// `[[route]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// `network/prefix`.
    pub dest: String,
    pub via: Ipv4Addr,
}

/// `[network]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub neighbors: Vec<NeighborSection>,
}

/// One static neighbor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborSection {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// `[timeouts]`, in seconds; absent ones keep conntrack's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    pub syn_sent: Option<u32>,
    pub syn_recv: Option<u32>,
    pub established: Option<u32>,
    pub fin_wait: Option<u32>,
    pub close_wait: Option<u32>,
    pub last_ack: Option<u32>,
    pub time_wait: Option<u32>,
    pub closed: Option<u32>,
    pub udp: Option<u32>,
    pub udp_stream: Option<u32>,
    pub unassured: Option<u32>,
}

/// `[[service]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u32,
    pub protocol: Protocol,
    #[serde(default)]
    pub table_size: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub endpoint: Vec<EndpointSection>,
    /// `[service.health]`: active checks of the endpoints; none when absent.
    #[serde(default)]
    pub health: Option<crate::service::HealthCheck>,
    /// `[service.recycle]`: opt-in recycling of long-lived connections.
    #[serde(default)]
    pub recycle: Option<RecycleSection>,
}

/// `[service.recycle]`: durations as strings with a unit ("200ms", "5s",
/// "10m", "1h").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecycleSection {
    pub max_age: String,
    pub idle_gap: String,
    #[serde(default)]
    pub jitter: Option<String>,
    #[serde(default)]
    pub max_per_sec: Option<u32>,
    #[serde(default)]
    pub skewed_only: bool,
}

/// A duration written with a unit (`ms`, `s`, `m`, `h`; decimals allowed,
/// e.g. "1.5s"), in milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => {
            return Err(format!(
                "{text:?} is not a duration; write a number and a unit: \"200ms\", \"5s\", \"10m\", \"1h\""
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("{text:?} is not a duration; write a number and a unit, e.g. \"5s\"")
    })?;
    let ms = (n * factor).round();
    if !(0.0..=f64::from(u32::MAX)).contains(&ms) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(ms as u32)
}

/// `[[service.endpoint]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    pub address: Ipv4Addr,
    pub port: u32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: EndpointState,
}

fn default_weight() -> u32 {
    1
}

/// `a.b.c.d/len` with len <= 32.
pub(crate) fn parse_prefix(s: &str, what: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let bad = || {
        invalid(format!(
            "{what}: {s:?} is not an IPv4 prefix; write it as address/length, e.g. 10.200.1.254/24"
        ))
    };
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.trim().parse().map_err(|_| bad())?;
    let len: u8 = len.trim().parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((addr, len))
}

impl Config {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax(m) => ConfigError::Syntax(format!("{}: {m}", path.display())),
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what TOML types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(m) = self.control.metrics {
            if !m.ip().is_loopback() && !self.control.metrics_public {
                return Err(invalid(format!(
                    "control.metrics: {m} is not a loopback address; use 127.0.0.1:PORT, or set metrics_public = true to expose metrics on the network"
                )));
            }
        }
        if self.control.socket.as_os_str().is_empty() {
            return Err(invalid(
                "control.socket: empty path; e.g. /run/sluice/sluice.sock",
            ));
        }
        let d = &self.dataplane;
        if d.workers == 0 || d.workers > 1024 {
            return Err(invalid(format!(
                "dataplane.workers: {} is out of range; use 1 to 1024 (one per core)",
                d.workers
            )));
        }
        if let Some(cores) = &d.cores {
            if cores.len() != d.workers {
                return Err(invalid(format!(
                    "dataplane.cores: {} cores listed for {} workers; list one core per worker",
                    cores.len(),
                    d.workers
                )));
            }
        }
        if d.flow_capacity == 0 || d.flow_capacity > crate::flow::MAX_CAPACITY {
            return Err(invalid(format!(
                "dataplane.flow_capacity: {} is out of range; use 1 to {}",
                d.flow_capacity,
                crate::flow::MAX_CAPACITY
            )));
        }
        if !d.eal_args.is_empty() && d.backend != Backend::Dpdk {
            return Err(invalid(
                "dataplane.eal_args: only used with backend = \"dpdk\"; remove it or change the backend",
            ));
        }
        for (i, l) in self.interface.iter().enumerate() {
            if l.name.is_empty() {
                return Err(invalid(format!("interface #{}: name is empty", i + 1)));
            }
            parse_prefix(&l.address, &format!("interface {:?}: address", l.name))?;
            if l.mac.is_none() && d.backend != Backend::Afpacket {
                return Err(invalid(format!(
                    "interface {:?}: mac is required with backend {:?} (only afpacket reads it from the interface)",
                    l.name, d.backend
                )));
            }
        }
        for r in &self.route {
            parse_prefix(&r.dest, &format!("route via {}: dest", r.via))?;
        }
        self.timeouts()?;
        let mut names = std::collections::HashSet::new();
        for s in &self.service {
            s.spec()?;
            if !names.insert(s.name.as_str()) {
                return Err(invalid(format!(
                    "service {:?} is defined twice; service names must be unique",
                    s.name
                )));
            }
        }
        if let Some(b) = &self.bgp {
            b.settings(self)?;
        }
        Ok(())
    }

    /// The flow timeouts, in milliseconds.
    pub fn timeouts(&self) -> Result<Timeouts, ConfigError> {
        let mut t = Timeouts::default();
        let s = &self.timeouts;
        for (slot, v) in [
            (&mut t.syn_sent, s.syn_sent),
            (&mut t.syn_recv, s.syn_recv),
            (&mut t.established, s.established),
            (&mut t.fin_wait, s.fin_wait),
            (&mut t.close_wait, s.close_wait),
            (&mut t.last_ack, s.last_ack),
            (&mut t.time_wait, s.time_wait),
            (&mut t.closed, s.closed),
            (&mut t.udp, s.udp),
            (&mut t.udp_stream, s.udp_stream),
            (&mut t.unassured, s.unassured),
        ] {
            if let Some(secs) = v {
                *slot = secs.saturating_mul(1000);
            }
        }
        t.validate()
            .map_err(|e| invalid(format!("timeouts: {e} (values here are in seconds)")))?;
        Ok(t)
    }

    /// Each interface's role: the one set, or else inferred. An interface
    /// is backend-facing when an endpoint is on its subnet or reached by a
    /// route through it; client-facing when the default gateway is on its
    /// subnet, a route to a network with no endpoint goes through it, or it
    /// has no endpoint while another interface has; both otherwise (a
    /// one-interface load balancer).
    pub fn interface_roles(&self) -> Vec<InterfaceRole> {
        let within = |a: Ipv4Addr, net: Ipv4Addr, len: u8| {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(net) & mask
        };
        let endpoints: Vec<Ipv4Addr> = self
            .service
            .iter()
            .flat_map(|s| s.endpoint.iter().map(|e| e.address))
            .collect();
        let routes: Vec<(Ipv4Addr, u8, Ipv4Addr)> = self
            .route
            .iter()
            .filter_map(|r| {
                parse_prefix(&r.dest, "route")
                    .ok()
                    .map(|(n, l)| (n, l, r.via))
            })
            .collect();
        let evidence: Vec<Option<(bool, bool)>> = self
            .interface
            .iter()
            .map(|i| {
                let (net, len) = parse_prefix(&i.address, "interface").ok()?;
                let mut backend = endpoints.iter().any(|&e| within(e, net, len));
                let mut client = self.network.gateway.is_some_and(|g| within(g, net, len));
                for &(dest, dlen, via) in &routes {
                    if within(via, net, len) {
                        if endpoints.iter().any(|&e| within(e, dest, dlen)) {
                            backend = true;
                        } else {
                            client = true;
                        }
                    }
                }
                Some((client, backend))
            })
            .collect();
        // An interface with no endpoint behind it, beside one that has
        // them, faces the clients (clients on a directly attached subnet).
        let backends_elsewhere = evidence.iter().any(|e| matches!(e, Some((_, true))));
        self.interface
            .iter()
            .zip(evidence)
            .map(|(i, e)| match (i.role, e) {
                (Some(r), _) => r,
                (None, Some((true, false))) => InterfaceRole::Client,
                (None, Some((false, false))) if backends_elsewhere => InterfaceRole::Client,
                (None, Some((false, true))) => InterfaceRole::Backend,
                _ => InterfaceRole::Both,
            })
            .collect()
    }

    /// Links, routes, gateway and neighbors. Interfaces without a MAC must
    /// have had it filled in (from the interface) before this is called.
    pub fn topology(&self) -> Result<Topology, ConfigError> {
        let mut links = Vec::with_capacity(self.interface.len());
        for l in &self.interface {
            let (addr, prefix_len) =
                parse_prefix(&l.address, &format!("interface {:?}: address", l.name))?;
            let mac = l.mac.ok_or_else(|| {
                invalid(format!(
                    "interface {:?}: mac unknown; set mac = \"02:..\" or let the afpacket backend read it",
                    l.name
                ))
            })?;
            links.push(LinkSpec {
                name: l.name.clone(),
                mac,
                addr,
                prefix_len,
            });
        }
        let mut routes = Vec::with_capacity(self.route.len());
        for r in &self.route {
            let (dest, prefix_len) = parse_prefix(&r.dest, &format!("route via {}: dest", r.via))?;
            routes.push(RouteSpec {
                dest,
                prefix_len,
                via: r.via,
            });
        }
        let topo = Topology {
            links,
            routes,
            gateway: self.network.gateway,
            neighbors: self
                .network
                .neighbors
                .iter()
                .map(|n| (n.ip, n.mac))
                .collect(),
        };
        // Route checks (gateway and vias on a connected subnet) belong to the
        // route table compiler; run it here so a bad file is refused as a
        // config error, before any generation is built.
        crate::service::Generation::build(0, &topo, &[]).map_err(|e| invalid(e.to_string()))?;
        Ok(topo)
    }

    /// The services as specs.
    pub fn services(&self) -> Result<Vec<Arc<ServiceSpec>>, ConfigError> {
        self.service
            .iter()
            .map(|s| s.spec().map(Arc::new))
            .collect()
    }
}

impl ServiceSection {
    /// The spec, checked field by field.
    pub fn spec(&self) -> Result<ServiceSpec, ConfigError> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 128
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(format!(
                "service {name:?}: name must be 1-128 characters without spaces"
            )));
        }
        let port = u16::try_from(self.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| {
                invalid(format!(
                    "service {name:?}: port {} must be 1-65535",
                    self.port
                ))
            })?;
        let mut spec = ServiceSpec::new(name, self.vip, port, self.protocol);
        if let Some(size) = self.table_size {
            crate::maglev::validate_table_size(size).map_err(|e| {
                invalid(format!(
                    "service {name:?}: table_size: {e}; use a prime such as 65537 (the default), 16381 or 251"
                ))
            })?;
            spec.table_size = size;
        }
        spec.seed = self.seed;
        if let Some(h) = &self.health {
            h.validate()
                .map_err(|e| invalid(format!("service {name:?}: {e}")))?;
            spec.health = Some(h.clone());
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.endpoint {
            let port = u16::try_from(e.port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "service {name:?}: endpoint {}:{}: port must be 1-65535",
                        e.address, e.port
                    ))
                })?;
            if !seen.insert((e.address, port)) {
                return Err(invalid(format!(
                    "service {name:?}: endpoint {}:{port} is listed twice; list each endpoint once",
                    e.address
                )));
            }
            spec.endpoints.push(EndpointSpec {
                addr: e.address,
                port,
                weight: e.weight,
                state: e.state,
            });
        }
        if let Some(r) = &self.recycle {
            let field = |what: &str, v: &str| {
                parse_duration_ms(v)
                    .map_err(|e| invalid(format!("service {name:?}: recycle.{what}: {e}")))
            };
            let policy = crate::service::RecyclePolicy {
                max_age_ms: field("max_age", &r.max_age)?,
                idle_gap_ms: field("idle_gap", &r.idle_gap)?,
                jitter_ms: match &r.jitter {
                    Some(j) => field("jitter", j)?,
                    None => 0,
                },
                max_per_sec: r
                    .max_per_sec
                    .unwrap_or(crate::service::RecyclePolicy::DEFAULT_RATE),
                skewed_only: r.skewed_only,
            };
            spec.recycle = Some(policy);
            crate::service::check_recycle(&spec)
                .map_err(|e| invalid(format!("service {name:?}: {e}")))?;
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[control]
socket = "/tmp/sluice-test.sock"
metrics = "127.0.0.1:9100"

[dataplane]
backend = "mem"
workers = 2
cores = [0, 1]
idle = { mode = "busy" }

[[interface]]
name = "lb0"
mac = "02:00:00:00:01:fe"
address = "10.200.1.254/24"

[[route]]
dest = "198.51.100.0/24"
via = "10.200.1.1"

[network]
gateway = "10.200.1.1"
neighbors = [{ ip = "10.200.1.11", mac = "02:00:00:00:02:0b" }]

[timeouts]
established = 3600

[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"
table_size = 251

[[service.endpoint]]
address = "10.200.1.11"
port = 8080
weight = 2
"#;

    #[test]
    fn interface_roles_are_set_or_inferred_from_the_topology() {
        // One interface carrying the gateway and the endpoints: both.
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.interface_roles(), vec![InterfaceRole::Both]);
        // The gateway on one, the endpoints on the other.
        let two = GOOD.replace(
            "[[route]]",
            "[[interface]]\nname = \"lb1\"\nmac = \"02:00:00:00:01:fd\"\naddress = \"10.200.9.254/24\"\n\n[[route]]",
        );
        let two = two
            .replace("10.200.1.1\"\nneighbors", "10.200.9.1\"\nneighbors")
            .replace("via = \"10.200.1.1\"", "via = \"10.200.9.1\"");
        let c = Config::parse(&two).unwrap();
        assert_eq!(
            c.interface_roles(),
            vec![InterfaceRole::Backend, InterfaceRole::Client]
        );
        // Set by hand.
        let set = two.replace(
            "address = \"10.200.9.254/24\"",
            "address = \"10.200.9.254/24\"\nrole = \"both\"",
        );
        let c = Config::parse(&set).unwrap();
        assert_eq!(
            c.interface_roles(),
            vec![InterfaceRole::Backend, InterfaceRole::Both]
        );
        assert!(Config::parse(&set.replace("\"both\"", "\"north\"")).is_err());
    }

    #[test]
    fn a_full_file_parses_into_topology_services_and_timeouts() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dataplane.workers, 2);
        assert_eq!(c.dataplane.idle.policy(), IdlePolicy::BusyPoll);
        let t = c.topology().unwrap();
        assert_eq!(t.links[0].prefix_len, 24);
        assert_eq!(t.routes[0].prefix_len, 24);
        let s = c.services().unwrap();
        assert_eq!(s[0].endpoints[0].weight, 2);
        assert_eq!(s[0].table_size, 251);
        assert_eq!(c.timeouts().unwrap().established, 3_600_000);
        // The control thread preempts busy-polling workers unless told not to.
        assert_eq!(
            c.control.priority,
            crate::control::ControlPriority::Realtime
        );
        let normal = GOOD.replace("[control]\n", "[control]\npriority = \"normal\"\n");
        assert_ne!(normal, GOOD);
        assert_eq!(
            Config::parse(&normal).unwrap().control.priority,
            crate::control::ControlPriority::Normal
        );
        let bad = GOOD.replace("[control]\n", "[control]\npriority = \"urgent\"\n");
        assert!(refused(&bad).contains("priority"), "{}", refused(&bad));
    }

    #[test]
    fn flow_snapshot_defaults_beside_the_socket_and_can_be_moved_or_turned_off() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            c.control.flow_state_path(),
            Some(c.control.socket.with_extension("flows"))
        );
        let moved = GOOD.replace(
            "[control]\n",
            "[control]\nflow_state = \"/var/lib/sluice/flows\"\n",
        );
        assert_eq!(
            Config::parse(&moved).unwrap().control.flow_state_path(),
            Some(PathBuf::from("/var/lib/sluice/flows"))
        );
        let off = GOOD.replace("[control]\n", "[control]\nflow_state = \"\"\n");
        assert_eq!(Config::parse(&off).unwrap().control.flow_state_path(), None);
    }

    fn refused(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration_ms("200ms"), Ok(200));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms(" 1h "), Ok(3_600_000));
        assert!(parse_duration_ms("5")
            .unwrap_err()
            .contains("a number and a unit"));
        assert!(parse_duration_ms("5 parsecs").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("9999999h")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn recycle_sections_parse_and_bad_ones_name_the_field() {
        let with = |r: &str| format!("{GOOD}\n[service.recycle]\n{r}\n");
        let c = Config::parse(&with(
            "max_age = \"10m\"\nidle_gap = \"200ms\"\njitter = \"1m\"\nmax_per_sec = 20",
        ))
        .unwrap();
        let spec = c.services().unwrap()[0].clone();
        assert_eq!(
            spec.recycle,
            Some(crate::service::RecyclePolicy {
                max_age_ms: 600_000,
                idle_gap_ms: 200,
                jitter_ms: 60_000,
                max_per_sec: 20,
                skewed_only: false,
            })
        );
        let m = refused(&with("max_age = \"10\"\nidle_gap = \"200ms\""));
        assert!(m.contains("recycle.max_age") && m.contains("unit"), "{m}");
        let m = refused(&with("max_age = \"10m\"\nidle_gap = \"1ms\""));
        assert!(m.contains("recycle.idle_gap"), "{m}");
        let m = refused(&with(
            "max_age = \"10m\"\nidle_gap = \"1s\"\nmax_per_sec = 0",
        ));
        assert!(m.contains("max_per_sec"), "{m}");
        let m = refused(&with("max_age = \"10m\""));
        assert!(m.contains("idle_gap"), "{m}");
    }

    #[test]
    fn mistakes_are_refused_naming_the_field_and_the_fix() {
        let m = refused(&GOOD.replace("port = 8080", "port = 0"));
        assert!(
            m.contains("service \"web\": endpoint 10.200.1.11:0: port must be 1-65535"),
            "{m}"
        );
        let m = refused(&GOOD.replace("weight = 2", "weight = 2\ncolour = 1"));
        assert!(m.contains("colour"), "{m}");
        let m = refused(&GOOD.replace("127.0.0.1:9100", "0.0.0.0:9100"));
        assert!(m.contains("metrics_public"), "{m}");
        let m = refused(&GOOD.replace("table_size = 251", "table_size = 250"));
        assert!(m.contains("table_size") && m.contains("prime"), "{m}");
        let m = refused(
            &GOOD
                .replace("/24\"\nmac", "/40\"\nmac")
                .replace("10.200.1.254/24", "10.200.1.254/40"),
        );
        assert!(m.contains("address/length"), "{m}");
        let m = refused(&GOOD.replace("cores = [0, 1]", "cores = [0]"));
        assert!(m.contains("dataplane.cores"), "{m}");
        let m = refused(&format!("{GOOD}\n[[service]]\nname = \"web\"\nvip = \"198.18.0.1\"\nport = 81\nprotocol = \"tcp\"\n"));
        assert!(m.contains("defined twice"), "{m}");
        let m = refused("[dataplane]\nbackend = \"xdp\"\n");
        assert!(m.contains("xdp"), "{m}");
        let c = Config::parse(&GOOD.replace("via = \"10.200.1.1\"", "via = \"10.9.9.9\"")).unwrap();
        let m = c.topology().unwrap_err().to_string();
        assert!(m.contains("10.9.9.9"), "{m}");
    }

    #[test]
    fn the_shipped_examples_parse() {
        for f in [
            "config/demo.toml",
            "config/baremetal.toml",
            "config/ha.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let c = Config::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!c.service.is_empty(), "{f}");
        }
    }
}
