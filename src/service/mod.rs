//! Services, endpoints and the immutable generations workers run.
//!
//! The control thread holds the *specs* (what the operator asked for) and
//! compiles them into a [`Generation`]: every table the data path needs,
//! built off the hot path and published whole (Katran's "control computes,
//! the data path only looks up").

mod generation;
pub mod health;
mod route;

use std::net::Ipv4Addr;

pub use generation::{BackendRef, EndpointRt, Generation, GenerationError, ServiceRt, VipKey};
pub use health::{CheckKind, HealthCheck, HealthState};
pub use route::{Hop, LinkSpec, RouteSpec, Topology, NO_HOP};

use crate::maglev::DEFAULT_TABLE_SIZE;

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => crate::wire::IPPROTO_TCP,
            Protocol::Udp => crate::wire::IPPROTO_UDP,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Lifecycle of an endpoint (Kubernetes terms in brackets).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Takes new flows in proportion to its weight [ready].
    #[default]
    Active,
    /// Keeps its established flows, gets no new ones [terminating].
    Draining,
    /// Failed: its flows are reset so clients reconnect at once (S4b).
    Down,
    /// Gone: like `Down`; kept in the spec only until the operator forgets it.
    Removed,
}

impl EndpointState {
    /// Whether existing flows may keep using the endpoint.
    pub fn carries_flows(self) -> bool {
        matches!(self, EndpointState::Active | EndpointState::Draining)
    }
}

/// An endpoint as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointSpec {
    pub addr: Ipv4Addr,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: EndpointState,
}

fn default_weight() -> u32 {
    1
}

impl EndpointSpec {
    /// An active endpoint of weight 1.
    pub fn new(addr: Ipv4Addr, port: u16) -> EndpointSpec {
        EndpointSpec {
            addr,
            port,
            weight: 1,
            state: EndpointState::Active,
        }
    }

    /// The same endpoint with another weight.
    pub fn weight(mut self, weight: u32) -> EndpointSpec {
        self.weight = weight;
        self
    }

    /// The same endpoint in another state.
    pub fn state(mut self, state: EndpointState) -> EndpointSpec {
        self.state = state;
        self
    }
}

/// A service as configured: a VIP, port and protocol, and its endpoints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// Maglev table size, a prime from [`crate::maglev::TABLE_SIZES`].
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Maglev permutation seed. Instances that must agree on backend choice
    /// (S4) need the same seed; the default derives it from the service key.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub hash: crate::hash::HashVersion,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// Active health checks of the endpoints (none by default). The data
    /// path never reads it: the control thread folds probe verdicts into
    /// the endpoint states it compiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Opt-in recycling of long-lived connections (S2); off when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle: Option<RecyclePolicy>,
}

/// Recycling of long-lived TCP connections, per service (S2): a flow older
/// than `max_age_ms` (plus a per-flow share of `jitter_ms`) is reset, both
/// ways and in-window, at the first moment it has been idle in both
/// directions for `idle_gap_ms`, so no request or response in flight is
/// cut; the client's pool opens a new connection, which Maglev places
/// afresh. At most `max_per_sec` flows of the service are recycled per
/// second (split over the workers), so a fleet does not reconnect at once.
/// With `skewed_only`, only flows of a backend holding more than its
/// weight's share of the service's open flows are recycled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecyclePolicy {
    pub max_age_ms: u32,
    pub idle_gap_ms: u32,
    #[serde(default)]
    pub jitter_ms: u32,
    #[serde(default = "default_recycle_rate")]
    pub max_per_sec: u32,
    #[serde(default)]
    pub skewed_only: bool,
}

fn default_recycle_rate() -> u32 {
    RecyclePolicy::DEFAULT_RATE
}

impl RecyclePolicy {
    /// Recycled flows per second per service unless configured.
    pub const DEFAULT_RATE: u32 = 100;

    /// Checks the values, naming the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_age_ms < 100 {
            return Err(format!(
                "recycle.max_age is {} ms; give at least 100 ms (connections live longer than that)",
                self.max_age_ms
            ));
        }
        if self.idle_gap_ms < 10 {
            return Err(format!(
                "recycle.idle_gap is {} ms; give at least 10 ms (a gap shorter than a round trip would cut requests in flight)",
                self.idle_gap_ms
            ));
        }
        if u64::from(self.max_age_ms) + u64::from(self.jitter_ms) >= 1 << 30
            || self.idle_gap_ms >= 1 << 30
        {
            return Err(
                "recycle: max_age + jitter and idle_gap must stay below 12 days (2^30 ms)".into(),
            );
        }
        if self.max_per_sec == 0 {
            return Err("recycle.max_per_sec is 0; give at least 1 (or turn recycling off)".into());
        }
        Ok(())
    }
}

/// Checks a service's recycling policy: valid values, and a TCP service
/// (a UDP flow has no connection to reset).
pub fn check_recycle(s: &ServiceSpec) -> Result<(), String> {
    let Some(r) = &s.recycle else {
        return Ok(());
    };
    if s.protocol != Protocol::Tcp {
        return Err(
            "recycle applies to TCP services only (a UDP flow has no connection to reset)".into(),
        );
    }
    r.validate()
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

impl ServiceSpec {
    /// A TCP or UDP service with default table size and seed, no endpoints.
    pub fn new(name: &str, vip: Ipv4Addr, port: u16, protocol: Protocol) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            vip,
            port,
            protocol,
            table_size: DEFAULT_TABLE_SIZE,
            seed: None,
            hash: Default::default(),
            endpoints: Vec::new(),
            recycle: None,
            health: None,
        }
    }

    /// The service key the data path matches on.
    pub fn key(&self) -> VipKey {
        VipKey::new(self.vip, self.port, self.protocol.number())
    }

    /// The Maglev seed in force: the configured one, or one derived from the
    /// service key alone so every instance computes the same.
    pub fn effective_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let k = self.key();
            crate::hash::hash_words_v1(
                u64::from(k.addr),
                (u64::from(k.port) << 8) | u64::from(k.proto),
                0x6d61_676c_6576,
            )
        })
    }
}
