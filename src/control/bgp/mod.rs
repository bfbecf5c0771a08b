//! VIP announcement over BGP, through BIRD 2.
//!
//! sluice decides (the control thread: `control::announce`), BIRD speaks
//! BGP: sluice starts its own BIRD beside it with a configuration it
//! writes from `[bgp]`, and changes what is announced by rewriting the
//! static routes in that file and asking BIRD to `configure` over its
//! control socket (BIRD re-reads only what changed: the BGP sessions stay
//! up, the withdrawal or announcement goes out at once). Why BIRD, and not
//! FRR or GoBGP, is in the README.
//!
//! - [`BgpSection`] (here): the `[bgp]` table and its checks;
//! - [`bird`]: the configuration text, the control-socket client, the
//!   daemon process;
//! - [`speaker`]: the thread that owns the daemon and applies what the
//!   control thread wants.

pub mod bird;
pub mod speaker;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{parse_prefix, Config, ConfigError};

pub use speaker::{Speaker, SpeakerStatus};

/// `[bgp]`: how sluice announces its VIPs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSection {
    /// sluice's AS number.
    pub local_as: u32,
    /// BGP identifier (usually the management address).
    pub router_id: Ipv4Addr,
    /// Seconds without a message before a peer drops the session and the
    /// routes through this instance; keepalives go every third of it.
    #[serde(default = "default_hold_time")]
    pub hold_time: u32,
    /// Bidirectional Forwarding Detection on every session: the routers
    /// see an instance vanish within `bfd_interval_ms x bfd_multiplier`
    /// instead of the hold time. The routers must run BFD too.
    #[serde(default)]
    pub bfd: bool,
    #[serde(default = "default_bfd_interval_ms")]
    pub bfd_interval_ms: u32,
    #[serde(default = "default_bfd_multiplier")]
    pub bfd_multiplier: u32,
    /// The next hop announced for VIPs: an `[[interface]]` name (its
    /// address, on sluice's data plane) or an IPv4 address.
    #[serde(default)]
    pub next_hop: Option<String>,
    /// On a planned stop, how long sluice keeps forwarding after it
    /// withdrew its VIPs, for the routers to move traffic away.
    #[serde(default = "default_withdraw_wait_ms")]
    pub withdraw_wait_ms: u64,
    /// The BIRD 2 binary (a path, or a name looked up on PATH).
    #[serde(default = "default_daemon")]
    pub daemon: PathBuf,
    /// Where BIRD's configuration and control socket live (default:
    /// beside the control socket, its name with `.bgp`).
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    #[serde(default)]
    pub peer: Vec<PeerSection>,
    #[serde(default)]
    pub vip: Vec<VipSection>,
}

fn default_hold_time() -> u32 {
    9
}

fn default_bfd_interval_ms() -> u32 {
    300
}

fn default_bfd_multiplier() -> u32 {
    3
}

fn default_withdraw_wait_ms() -> u64 {
    3000
}

fn default_daemon() -> PathBuf {
    PathBuf::from("bird")
}

fn default_true() -> bool {
    true
}

/// `[[bgp.peer]]`: a router sluice talks BGP to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// The session's name in logs and `vip list` (default `peer1`, ...).
    #[serde(default)]
    pub name: Option<String>,
    /// The router's address, reached through a kernel (management)
    /// interface: sluice's data interfaces have no kernel address.
    pub address: Ipv4Addr,
    pub remote_as: u32,
    /// sluice's source address for the session (default: the kernel's
    /// choice).
    #[serde(default)]
    pub local_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub port: Option<u16>,
    /// TTL for a router that is not on a connected subnet (eBGP multihop).
    #[serde(default)]
    pub multihop: Option<u8>,
    /// Whether the VIPs are announced to this peer.
    #[serde(default = "default_true")]
    pub vips: bool,
    /// Prefixes also announced to this peer while any VIP is announced,
    /// e.g. the clients' networks to a backend-side router, so that
    /// replies come back through a sluice instance that is in service.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Next hop for what this peer is told (default: `bgp.next_hop`).
    #[serde(default)]
    pub next_hop: Option<String>,
}

/// `[[bgp.vip]]`: a VIP announced with its own next hop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    pub address: Ipv4Addr,
    pub next_hop: String,
}

/// `[bgp]` checked and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpSettings {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u32,
    /// `(interval ms, multiplier)` when BFD is on.
    pub bfd: Option<(u32, u32)>,
    pub withdraw_wait: Duration,
    pub daemon: PathBuf,
    pub runtime_dir: PathBuf,
    pub peers: Vec<Peer>,
    /// VIPs announced with a next hop of their own.
    pub vip_next_hops: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// Run BIRD in the real-time class (SCHED_FIFO 1), as the control
    /// thread with `control.priority = "realtime"`: on a box whose workers
    /// busy-poll every core, a time-shared BIRD can miss BFD's deadlines
    /// (tens of ms) and the routers would drop a healthy instance.
    pub realtime: bool,
}

/// A peer, checked and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: Ipv4Addr,
    pub remote_as: u32,
    pub local_address: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub multihop: Option<u8>,
    pub vips: bool,
    pub prefixes: Vec<(Ipv4Addr, u8)>,
    /// Next hop of what this peer is told.
    pub next_hop: Option<Ipv4Addr>,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// AS_TRANS (RFC 6793): a placeholder, never a real AS.
const AS_TRANS: u32 = 23456;

fn check_as(field: &str, v: u32) -> Result<(), ConfigError> {
    if v == 0 || v == AS_TRANS {
        return Err(invalid(format!(
            "{field}: {v} is not a usable AS number; use 1-4294967295 (private: 64512-65534 or 4200000000-4294967294)"
        )));
    }
    Ok(())
}

impl BgpSection {
    /// Checks every field against the rest of `config` (interfaces for
    /// next hops and subnets, services for VIPs) and resolves names.
    pub fn settings(&self, config: &Config) -> Result<BgpSettings, ConfigError> {
        check_as("bgp.local_as", self.local_as)?;
        let id = self.router_id;
        if id.is_unspecified() || id.is_broadcast() || id.is_multicast() {
            return Err(invalid(format!(
                "bgp.router_id: {id} cannot identify a BGP speaker; use one of this instance's own addresses (e.g. the management one)"
            )));
        }
        if !(3..=65535).contains(&self.hold_time) {
            return Err(invalid(format!(
                "bgp.hold_time: {} is out of range; use 3 to 65535 seconds (RFC 4271; sluice does not turn keepalives off)",
                self.hold_time
            )));
        }
        if !(10..=10_000).contains(&self.bfd_interval_ms) {
            return Err(invalid(format!(
                "bgp.bfd_interval_ms: {} is out of range; use 10 to 10000",
                self.bfd_interval_ms
            )));
        }
        if !(1..=255).contains(&self.bfd_multiplier) {
            return Err(invalid(format!(
                "bgp.bfd_multiplier: {} is out of range; use 1 to 255",
                self.bfd_multiplier
            )));
        }
        if self.withdraw_wait_ms > 600_000 {
            return Err(invalid(format!(
                "bgp.withdraw_wait_ms: {} is more than 10 minutes; use 0 to 600000",
                self.withdraw_wait_ms
            )));
        }
        if self.daemon.as_os_str().is_empty() {
            return Err(invalid(
                "bgp.daemon: empty; the BIRD 2 binary, e.g. \"bird\" or \"/usr/sbin/bird\"",
            ));
        }
        let links = data_links(config)?;
        let resolve = |field: &str, v: &str| -> Result<Ipv4Addr, ConfigError> {
            if let Some((_, addr, _)) = links.iter().find(|(n, _, _)| n == v) {
                return Ok(*addr);
            }
            v.trim().parse().map_err(|_| {
                invalid(format!(
                    "{field}: {v:?} is neither an [[interface]] name nor an IPv4 address; name the data interface whose address routers should send VIP traffic to"
                ))
            })
        };
        let default_hop = self
            .next_hop
            .as_deref()
            .map(|v| resolve("bgp.next_hop", v))
            .transpose()?;
        if self.peer.is_empty() {
            return Err(invalid(
                "bgp.peer: no peer; add [[bgp.peer]] with the router's address and remote_as",
            ));
        }
        let mut peers = Vec::with_capacity(self.peer.len());
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, p) in self.peer.iter().enumerate() {
            let name = p.name.clone().unwrap_or_else(|| format!("peer{}", i + 1));
            let field = format!("bgp.peer {name:?}");
            // The name becomes a BIRD protocol name: a plain identifier,
            // which also keeps anything else out of BIRD's configuration.
            let ok = name.len() <= 32
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("sluice_");
            if !ok {
                return Err(invalid(format!(
                    "{field}: name must be a letter then letters, digits or _ (at most 32, not starting with sluice_)"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(format!("{field}: two peers have this name")));
            }
            let a = p.address;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                return Err(invalid(format!("{field}: address {a} is not a router's")));
            }
            if !addrs.insert(a) {
                return Err(invalid(format!("{field}: {a} is listed twice")));
            }
            if let Some((n, net, len)) = links
                .iter()
                .find(|(_, net, len)| same_subnet(*net, a, *len))
            {
                return Err(invalid(format!(
                    "{field}: {a} is on data interface {n:?}'s subnet {}/{len}, which sluice owns (the kernel has no address there to speak BGP from); peer over a management interface",
                    masked(*net, *len)
                )));
            }
            check_as(&format!("{field}: remote_as"), p.remote_as)?;
            if p.multihop == Some(0) {
                return Err(invalid(format!(
                    "{field}: multihop must be 1-255 (or left out for a directly connected router)"
                )));
            }
            if p.multihop.is_some() && self.bfd && p.local_address.is_none() {
                return Err(invalid(format!(
                    "{field}: multihop with bfd = true needs local_address (multihop BFD runs between two fixed addresses)"
                )));
            }
            if p.port == Some(0) {
                return Err(invalid(format!("{field}: port must be 1-65535")));
            }
            let next_hop = match &p.next_hop {
                Some(v) => Some(resolve(&format!("{field}: next_hop"), v)?),
                None => default_hop,
            };
            let mut prefixes = Vec::with_capacity(p.prefixes.len());
            for s in &p.prefixes {
                let (net, len) = parse_prefix(s, &format!("{field}: prefixes"))?;
                if masked(net, len) != net {
                    return Err(invalid(format!(
                        "{field}: prefixes: {s} has host bits set; write {}/{len}",
                        masked(net, len)
                    )));
                }
                prefixes.push((net, len));
            }
            if next_hop.is_none() && (p.vips || !prefixes.is_empty()) {
                return Err(invalid(format!(
                    "{field}: no next hop; set bgp.next_hop (or this peer's next_hop) to the data interface routers should send traffic to"
                )));
            }
            if !p.vips && prefixes.is_empty() {
                return Err(invalid(format!(
                    "{field}: announces nothing (vips = false and no prefixes); remove the peer or give it something to announce"
                )));
            }
            peers.push(Peer {
                name,
                address: a,
                remote_as: p.remote_as,
                local_address: p.local_address,
                port: p.port,
                multihop: p.multihop,
                vips: p.vips,
                prefixes,
                next_hop,
            });
        }
        let service_vips: BTreeSet<Ipv4Addr> = config.service.iter().map(|s| s.vip).collect();
        let mut vip_next_hops = BTreeMap::new();
        for v in &self.vip {
            let field = format!("bgp.vip {}", v.address);
            if !service_vips.contains(&v.address) {
                return Err(invalid(format!(
                    "{field}: no [[service]] has this VIP; fix the address or remove the entry"
                )));
            }
            let hop = resolve(&format!("{field}: next_hop"), &v.next_hop)?;
            if vip_next_hops.insert(v.address, hop).is_some() {
                return Err(invalid(format!("{field}: listed twice")));
            }
        }
        let runtime_dir = self
            .runtime_dir
            .clone()
            .unwrap_or_else(|| config.control.socket.with_extension("bgp"));
        Ok(BgpSettings {
            local_as: self.local_as,
            router_id: id,
            hold_time: self.hold_time,
            bfd: self
                .bfd
                .then_some((self.bfd_interval_ms, self.bfd_multiplier)),
            withdraw_wait: Duration::from_millis(self.withdraw_wait_ms),
            daemon: self.daemon.clone(),
            runtime_dir,
            peers,
            vip_next_hops,
            realtime: config.control.priority == super::ControlPriority::Realtime,
        })
    }
}

/// Every data interface: name, address, prefix length.
fn data_links(config: &Config) -> Result<Vec<(String, Ipv4Addr, u8)>, ConfigError> {
    config
        .interface
        .iter()
        .map(|l| {
            let (a, len) = parse_prefix(&l.address, &format!("interface {:?}: address", l.name))?;
            Ok((l.name.clone(), a, len))
        })
        .collect()
}

fn masked(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Ipv4Addr::from(u32::from(a) & m)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    masked(a, len) == masked(b, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const BASE: &str = r#"
[control]
socket = "/tmp/sluice-bgp-test/sluice.sock"

[dataplane]
backend = "mem"

[[interface]]
name = "l0"
mac = "02:00:00:00:01:fe"
address = "10.200.3.11/24"

[[interface]]
name = "l1"
mac = "02:00:00:00:02:fe"
address = "10.200.4.11/24"

[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"

[bgp]
local_as = 65001
router_id = "10.200.9.11"
hold_time = 3
bfd = true
bfd_interval_ms = 100
next_hop = "l0"

[[bgp.peer]]
name = "front"
address = "10.200.9.1"
remote_as = 65000

[[bgp.peer]]
name = "back"
address = "10.200.9.2"
remote_as = 65000
vips = false
prefixes = ["10.200.1.0/24"]
next_hop = "l1"
"#;

    fn settings(text: &str) -> Result<BgpSettings, String> {
        Config::parse(text)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.bgp
                    .as_ref()
                    .expect("[bgp]")
                    .settings(&c)
                    .map_err(|e| e.to_string())
            })
    }

    #[test]
    fn a_full_section_resolves_interfaces_to_addresses() {
        let s = settings(BASE).unwrap();
        assert_eq!(s.hold_time, 3);
        assert_eq!(s.bfd, Some((100, 3)));
        assert_eq!(s.peers[0].next_hop, Some("10.200.3.11".parse().unwrap()));
        assert_eq!(s.peers[1].next_hop, Some("10.200.4.11".parse().unwrap()));
        assert_eq!(s.peers[1].prefixes, [("10.200.1.0".parse().unwrap(), 24)]);
        assert!(!s.peers[1].vips);
        assert_eq!(
            s.runtime_dir,
            PathBuf::from("/tmp/sluice-bgp-test/sluice.bgp")
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let cases = [
            ("local_as = 65001", "local_as = 0", "bgp.local_as"),
            ("local_as = 65001", "local_as = 23456", "bgp.local_as"),
            (
                "router_id = \"10.200.9.11\"",
                "router_id = \"0.0.0.0\"",
                "bgp.router_id",
            ),
            ("hold_time = 3", "hold_time = 1", "bgp.hold_time"),
            (
                "bfd_interval_ms = 100",
                "bfd_interval_ms = 1",
                "bgp.bfd_interval_ms",
            ),
            ("next_hop = \"l0\"", "next_hop = \"eth9\"", "bgp.next_hop"),
            ("next_hop = \"l0\"", "", "bgp.peer \"front\": no next hop"),
            (
                "address = \"10.200.9.1\"",
                "address = \"10.200.3.1\"",
                "data interface \"l0\"",
            ),
            (
                "name = \"front\"",
                "name = \"front-1\"",
                "bgp.peer \"front-1\": name",
            ),
            ("name = \"back\"", "name = \"front\"", "two peers"),
            (
                "remote_as = 65000\n\n[[bgp.peer]]",
                "remote_as = 0\n\n[[bgp.peer]]",
                "remote_as",
            ),
            ("10.200.1.0/24", "10.200.1.7/24", "host bits"),
            ("10.200.1.0/24", "10.200.1.0/33", "prefixes"),
            ("hold_time = 3", "hold_time = 3\ncolour = 1", "colour"),
            (
                "name = \"back\"",
                "name = \"back\"\nmultihop = 2",
                "local_address",
            ),
        ];
        for (from, to, want) in cases {
            let text = BASE.replacen(from, to, 1);
            assert_ne!(text, BASE, "{from}");
            let e = settings(&text).expect_err(to);
            assert!(e.contains(want), "{to}: {e}");
        }
        let vip = format!("{BASE}\n[[bgp.vip]]\naddress = \"198.18.0.9\"\nnext_hop = \"l0\"\n");
        assert!(settings(&vip).unwrap_err().contains("bgp.vip 198.18.0.9"));
        let vip = format!(
            "{BASE}\n[[bgp.vip]]\naddress = \"198.18.0.100\"\nnext_hop = \"10.200.3.21\"\n"
        );
        assert_eq!(
            settings(&vip).unwrap().vip_next_hops[&"198.18.0.100".parse().unwrap()],
            "10.200.3.21".parse::<Ipv4Addr>().unwrap()
        );
        let none = BASE.replace("prefixes = [\"10.200.1.0/24\"]\n", "");
        assert!(settings(&none).unwrap_err().contains("announces nothing"));
    }
}
