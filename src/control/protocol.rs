//! The control protocol: one request enum shared by the socket server and
//! `sluice ctl`, one response shape, newline-delimited JSON, versioned.
//!
//! A request is a JSON object with `"v": 1` and an `"op"` naming the
//! operation; the other fields belong to the operation. A response is
//! `{"v":1,"ok":true,"generation":N,"result":{...}}` or
//! `{"v":1,"ok":false,"generation":N,"error":{"kind":"...","message":"..."}}`.
//! Decoding is done in steps (JSON, version, op, fields) so that a bad request
//! gets an error kind that says which step failed.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::service::{EndpointSpec, HealthState, Protocol, RecyclePolicy, ServiceSpec};

/// The schema version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// An operation on the running load balancer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Adds a service (with its endpoints, if any).
    ServiceAdd { service: ServiceSpec },
    /// Removes a service; its flows get RSTs on their next packet.
    ServiceRemove { name: String },
    /// Every service with its endpoints.
    ServicesList,
    /// Sets a service's recycling of long-lived connections (S2), or turns
    /// it off with `"recycle": null` (or no `recycle`).
    ServiceRecycle {
        service: String,
        #[serde(default)]
        recycle: Option<RecyclePolicy>,
    },
    /// Replaces a service's whole endpoint set at once.
    EndpointsSet {
        service: String,
        endpoints: Vec<EndpointSpec>,
    },
    /// Adds one endpoint.
    EndpointAdd {
        service: String,
        endpoint: EndpointSpec,
    },
    /// Removes one endpoint; its flows get RSTs on their next packet.
    EndpointRemove {
        service: String,
        endpoint: SocketAddrV4,
    },
    /// No new flows; existing flows continue until they end or until the
    /// deadline, when the endpoint is marked down.
    EndpointDrain {
        service: String,
        endpoint: SocketAddrV4,
        #[serde(default)]
        deadline_ms: Option<u64>,
    },
    /// Changes one endpoint's weight.
    EndpointWeight {
        service: String,
        endpoint: SocketAddrV4,
        weight: u32,
    },
    /// Marks an endpoint failed: its flows are reset.
    EndpointDown {
        service: String,
        endpoint: SocketAddrV4,
    },
    /// Marks an endpoint active again (also ends a drain).
    EndpointUp {
        service: String,
        endpoint: SocketAddrV4,
    },
    /// Counters per worker, per service, per endpoint.
    Stats,
    /// Flows in every worker's table.
    FlowsCount,
    /// One flow by its client-side 5-tuple.
    FlowsLookup {
        client: SocketAddrV4,
        vip: SocketAddrV4,
        #[serde(default = "default_protocol")]
        protocol: Protocol,
    },
    /// Up to `limit` flows.
    FlowsDump {
        #[serde(default = "default_dump_limit")]
        limit: usize,
    },
    /// Which service and backend a packet from `client` would get, and why.
    /// Either `service` (by name) or `vip` (with `protocol`) picks the service.
    Explain {
        client: SocketAddrV4,
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        vip: Option<SocketAddrV4>,
        #[serde(default)]
        protocol: Option<Protocol>,
        /// Explain a SYN (new connection) rather than a mid-flow packet.
        #[serde(default = "default_true")]
        syn: bool,
    },
    /// Maglev table digests, per service (or one service).
    Digest {
        #[serde(default)]
        service: Option<String>,
    },
    /// Reloads the configuration file (the one sluice started with, or `path`).
    Reload {
        #[serde(default)]
        path: Option<String>,
    },
    /// The generation number in force.
    Generation,
    /// Whether sluice forwards: every worker runs the generation in force.
    Status,
    /// The neighbor table (ARP): addresses, MACs, states, ages.
    Neighbors,
    /// Announces `vip` (or, with `all`, every VIP) to the routers again
    /// after a `vip_withdraw`: it is announced while it has a healthy
    /// endpoint.
    VipAnnounce {
        #[serde(default)]
        vip: Option<Ipv4Addr>,
        #[serde(default)]
        all: bool,
    },
    /// Withdraws `vip` (or, with `all`, every VIP) from the routers, for
    /// maintenance, until `vip_announce`; sluice keeps forwarding what
    /// still arrives.
    VipWithdraw {
        #[serde(default)]
        vip: Option<Ipv4Addr>,
        #[serde(default)]
        all: bool,
    },
    /// Every VIP, whether the routers are told of it and why, and the BGP
    /// sessions.
    VipList,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

fn default_dump_limit() -> usize {
    1000
}

fn default_true() -> bool {
    true
}

/// Every op name, for "unknown op" messages.
pub const OPS: &[&str] = &[
    "service_add",
    "service_remove",
    "services_list",
    "service_recycle",
    "endpoints_set",
    "endpoint_add",
    "endpoint_remove",
    "endpoint_drain",
    "endpoint_weight",
    "endpoint_down",
    "endpoint_up",
    "stats",
    "flows_count",
    "flows_lookup",
    "flows_dump",
    "explain",
    "digest",
    "reload",
    "generation",
    "status",
    "neighbors",
    "vip_announce",
    "vip_withdraw",
    "vip_list",
];

impl Request {
    /// Whether the request changes configuration (and so is answered only
    /// once every worker runs the resulting generation).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Request::ServiceAdd { .. }
                | Request::ServiceRemove { .. }
                | Request::ServiceRecycle { .. }
                | Request::EndpointsSet { .. }
                | Request::EndpointAdd { .. }
                | Request::EndpointRemove { .. }
                | Request::EndpointDrain { .. }
                | Request::EndpointWeight { .. }
                | Request::EndpointDown { .. }
                | Request::EndpointUp { .. }
        )
    }

    /// The request as one line of JSON (with the version), newline included.
    pub fn to_line(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("v".into(), PROTOCOL_VERSION.into());
        }
        let mut s = v.to_string();
        s.push('\n');
        s
    }

    /// Decodes one request line (without its newline).
    pub fn decode(line: &[u8]) -> Result<Request, ErrorBody> {
        let value: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| ErrorBody::new(ErrorKind::BadJson, format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(ErrorBody::new(
                ErrorKind::BadJson,
                "a request must be a JSON object like {\"v\":1,\"op\":\"generation\"}",
            ));
        };
        match map.remove("v") {
            None => {
                return Err(ErrorBody::new(
                    ErrorKind::MissingField,
                    format!("missing field `v`: add \"v\":{PROTOCOL_VERSION} (the protocol version)"),
                ))
            }
            Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
            Some(v) => {
                return Err(ErrorBody::new(
                    ErrorKind::UnsupportedVersion,
                    format!("protocol version {v} is not supported; this sluice speaks version {PROTOCOL_VERSION}"),
                ))
            }
        }
        match map.get("op") {
            None => {
                return Err(ErrorBody::new(
                    ErrorKind::MissingField,
                    format!("missing field `op`: one of {}", OPS.join(", ")),
                ))
            }
            Some(serde_json::Value::String(op)) if !OPS.contains(&op.as_str()) => {
                return Err(ErrorBody::new(
                    ErrorKind::UnknownOp,
                    format!("unknown op {op:?}: expected one of {}", OPS.join(", ")),
                ))
            }
            Some(serde_json::Value::String(_)) => {}
            Some(other) => {
                return Err(ErrorBody::new(
                    ErrorKind::WrongType,
                    format!("field `op` must be a string, got {other}"),
                ))
            }
        }
        let keys: Vec<String> = map.keys().cloned().collect();
        let req: Request = serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
            let msg = e.to_string();
            let kind = if msg.starts_with("missing field") {
                ErrorKind::MissingField
            } else if msg.starts_with("unknown field") {
                ErrorKind::UnknownField
            } else {
                ErrorKind::WrongType
            };
            ErrorBody::new(kind, format!("bad request: {msg}"))
        })?;
        // serde ignores extra fields of unit variants even with
        // `deny_unknown_fields`: compare with what the request serialises to.
        let known = serde_json::to_value(&req).unwrap_or(serde_json::Value::Null);
        if let Some(extra) = keys
            .iter()
            .find(|k| known.get(k.as_str()).is_none() && k.as_str() != "op")
        {
            return Err(ErrorBody::new(
                ErrorKind::UnknownField,
                format!(
                    "bad request: unknown field `{extra}` for op {:?}",
                    keys_op(&known)
                ),
            ));
        }
        Ok(req)
    }
}

fn keys_op(v: &serde_json::Value) -> &str {
    v.get("op").and_then(|o| o.as_str()).unwrap_or("?")
}

/// What went wrong, for scripts to branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadJson,
    UnsupportedVersion,
    UnknownOp,
    MissingField,
    UnknownField,
    WrongType,
    LineTooLong,
    /// The change is not valid (a name or address that does not exist, a
    /// duplicate, a value out of range).
    Invalid,
    UnknownService,
    UnknownEndpoint,
    /// The configuration file could not be read or is not valid.
    Config,
    /// Workers did not apply or answer in time.
    Dataplane,
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// One reply per request, in request order per connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    /// The generation in force when the reply was made (for a change: the
    /// one that carries it, which every worker runs).
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(generation: u64, result: Outcome) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            ok: true,
            generation,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(generation: u64, error: ErrorBody) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            ok: false,
            generation,
            result: None,
            error: Some(error),
        }
    }

    /// The response as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"v\":{PROTOCOL_VERSION},\"ok\":false,\"generation\":{},\"error\":{{\"kind\":\"dataplane\",\"message\":\"reply not serialisable: {e}\"}}}}",
                self.generation
            )
        });
        s.push('\n');
        s
    }
}

/// The result of a successful request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// A change is in effect on every worker.
    Applied {
        /// Microseconds from the change's commit to every worker running it.
        apply_us: u64,
    },
    Services {
        services: Vec<ServiceSpec>,
    },
    Stats(Stats),
    FlowCount {
        per_worker: Vec<u64>,
        total: u64,
    },
    Flow {
        flow: Option<FlowView>,
    },
    Flows {
        flows: Vec<FlowView>,
    },
    Explain(Explanation),
    Digests {
        digests: Vec<DigestView>,
    },
    Reloaded {
        path: String,
        services: usize,
    },
    Generation,
    Vips(VipReport),
    Status(Status),
    Neighbors {
        neighbors: Vec<NeighborRow>,
    },
}

/// One neighbor, as `neighbors` reports it: the ARP entry with its
/// interface's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborRow {
    #[serde(flatten)]
    pub entry: crate::control::arp::NeighborView,
    pub interface: String,
}

/// The answer to `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Every worker runs the generation in force: sluice forwards with the
    /// configuration it reports.
    pub ready: bool,
    pub generation: u64,
    pub workers: u32,
    /// Workers that acknowledged `generation`.
    pub workers_ready: u32,
    pub services: usize,
}

/// One worker's counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: u32,
    /// The generation this worker runs (its acknowledgement).
    pub generation: u64,
    /// Flow-table occupancy: every entry, closed ones waiting to expire
    /// included.
    pub flows_active: u64,
    pub flow_capacity: u64,
    /// Received packets per second since the previous sample.
    pub rx_pps: f64,
    /// Flows created per second since the previous sample: a SYN flood
    /// shows here first.
    pub new_flows_per_s: f64,
    /// Every counter the worker keeps (`worker::Counters`: one list for
    /// this, the human table and /metrics), drops by reason as a map.
    #[serde(flatten)]
    pub counters: crate::worker::Counters,
}

/// One endpoint's counters, summed over workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub endpoint: SocketAddrV4,
    pub weight: u32,
    pub state: crate::service::EndpointState,
    /// Open flows to this endpoint (closed ones waiting to time out are not
    /// counted).
    pub active_flows: u64,
    pub flows_created: u64,
    /// New flows per second since the previous sample.
    pub new_flows_per_s: f64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Packets (both directions) per second since the previous sample.
    pub packets_per_s: f64,
    /// Connections recycled (reset at an idle moment by the service's
    /// recycling policy, S2).
    #[serde(default)]
    pub flows_recycled: u64,
    /// What health checks say (absent when the service has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<EndpointHealthView>,
}

/// An endpoint's health as `stats` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealthView {
    pub state: HealthState,
    /// Seconds in this state.
    pub for_s: f64,
    /// Times it went down, and came back up.
    pub went_down: u64,
    pub came_up: u64,
    /// Why the probe that took it down failed (while it is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to `vip_list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipReport {
    /// Whether sluice announces VIPs at all (a `[bgp]` section).
    pub bgp: bool,
    /// The routing daemon: running, starting, or why it is not.
    pub daemon: String,
    pub vips: Vec<VipView>,
    pub peers: Vec<PeerView>,
}

/// One VIP's announcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipView {
    pub vip: Ipv4Addr,
    /// Whether sluice wants it announced.
    pub wanted: bool,
    /// Whether the routing daemon announces it (it applied the last
    /// change).
    pub announced: bool,
    /// Why it is wanted or not, in words.
    pub reason: String,
    /// The services on this VIP.
    pub services: Vec<String>,
}

/// One BGP session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub name: String,
    pub address: Ipv4Addr,
    /// The BGP state (Established, Active, Connect, Idle, ...).
    pub state: String,
    pub established: bool,
    /// The daemon's last word on the session (an error, if any).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub info: String,
}

/// One service's counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    pub vip: SocketAddrV4,
    pub protocol: Protocol,
    pub active_flows: u64,
    pub new_flows_per_s: f64,
    pub packets: u64,
    pub bytes: u64,
    /// Connections recycled (S2), all endpoints.
    #[serde(default)]
    pub flows_recycled: u64,
    /// The recycling policy in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle: Option<crate::service::RecyclePolicy>,
    /// Maglev slots per endpoint that takes new flows: the table's occupancy.
    pub table_size: u32,
    pub endpoints: Vec<EndpointStats>,
}

/// Everything `stats` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds covered by the rates (0 for the first sample).
    pub interval_s: f64,
    pub workers: Vec<WorkerStats>,
    /// Drops by reason, summed over workers (only reasons seen).
    pub drops: std::collections::BTreeMap<String, u64>,
    pub services: Vec<ServiceStats>,
}

/// A flow as reported to operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    pub worker: u32,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub protocol: u8,
    pub backend: SocketAddrV4,
    pub state: String,
    pub age_ms: u32,
    pub idle_ms: u32,
    pub generation: u32,
    /// Protected from eviction: a handshake completed, or replies seen.
    #[serde(default)]
    pub assured: bool,
}

impl From<crate::worker::FlowInfo> for FlowView {
    fn from(f: crate::worker::FlowInfo) -> FlowView {
        let state = serde_json::to_value(f.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", f.state));
        FlowView {
            worker: f.worker,
            client: f.client,
            vip: f.vip,
            protocol: f.protocol,
            backend: f.backend,
            state,
            age_ms: f.age_ms,
            idle_ms: f.idle_ms,
            generation: f.generation,
            assured: f.assured,
        }
    }
}

/// The answer to `explain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub service: String,
    pub vip: SocketAddrV4,
    pub protocol: Protocol,
    pub client: SocketAddrV4,
    /// Worker that owns the flow (by client address and port).
    pub owner_worker: u32,
    /// The flow-table entry, if the flow is known.
    pub flow: Option<FlowView>,
    /// The 5-tuple's Maglev hash under the service's seed.
    pub maglev_hash: u64,
    /// Slot of the new-flow table the hash falls in.
    pub slot: u32,
    pub table_size: u32,
    /// What the new-flow table says (endpoints taking new flows).
    pub new_flow_backend: Option<SocketAddrV4>,
    /// What a mid-flow packet that misses the flow table gets (draining
    /// endpoints included).
    pub mid_flow_backend: Option<SocketAddrV4>,
    /// The backend the packet goes to.
    pub backend: Option<SocketAddrV4>,
    /// The data path's decision: `keep` (the flow's entry holds), `new`
    /// (a new connection placed by Maglev), `rescheduled` (a SYN whose
    /// entry was unfit to keep, placed anew), `pickup` (a mid-flow packet
    /// with no entry), `gone` (its backend left: RST or ICMP unreachable),
    /// `no_backend` (no endpoint can take it).
    pub decision: String,
    /// How that was decided, in words.
    pub reason: String,
    /// When the flow becomes a candidate for recycling (S2), if the service
    /// recycles connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle: Option<String>,
}

/// One service's Maglev table digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestView {
    pub service: String,
    pub table_size: u32,
    /// Hex digest of slot -> endpoint identity; equal digests mean the same
    /// backend choice for every flow.
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &str) -> ErrorKind {
        Request::decode(line.as_bytes()).unwrap_err().kind
    }

    #[test]
    fn round_trips_every_shape_through_a_line() {
        let reqs = vec![
            Request::Generation,
            Request::EndpointDrain {
                service: "web".into(),
                endpoint: "10.0.0.1:80".parse().unwrap(),
                deadline_ms: Some(3000),
            },
            Request::ServiceAdd {
                service: ServiceSpec::new("web", "198.18.0.1".parse().unwrap(), 80, Protocol::Tcp),
            },
        ];
        for r in reqs {
            let line = r.to_line();
            assert!(line.ends_with('\n') && line.contains("\"v\":1"), "{line}");
            assert_eq!(Request::decode(line.trim_end().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn each_decoding_step_has_its_error_kind() {
        assert_eq!(kind("{nope"), ErrorKind::BadJson);
        assert_eq!(kind("[1]"), ErrorKind::BadJson);
        assert_eq!(kind(r#"{"op":"generation"}"#), ErrorKind::MissingField);
        assert_eq!(
            kind(r#"{"v":2,"op":"generation"}"#),
            ErrorKind::UnsupportedVersion
        );
        assert_eq!(kind(r#"{"v":1,"op":"explode"}"#), ErrorKind::UnknownOp);
        assert_eq!(kind(r#"{"v":1,"op":7}"#), ErrorKind::WrongType);
        assert_eq!(
            kind(r#"{"v":1,"op":"service_remove"}"#),
            ErrorKind::MissingField
        );
        assert_eq!(
            kind(
                r#"{"v":1,"op":"endpoint_weight","service":"w","endpoint":"1.2.3.4:5","weight":"x"}"#
            ),
            ErrorKind::WrongType
        );
        assert_eq!(
            kind(r#"{"v":1,"op":"generation","extra":1}"#),
            ErrorKind::UnknownField
        );
        let e = Request::decode(br#"{"v":1,"op":"explode"}"#).unwrap_err();
        assert!(e.message.contains("explode") && e.message.contains("services_list"));
    }

    #[test]
    fn vip_requests_decode_with_a_vip_or_all() {
        let r = Request::decode(br#"{"v":1,"op":"vip_withdraw","vip":"198.18.0.100"}"#).unwrap();
        assert_eq!(
            r,
            Request::VipWithdraw {
                vip: Some("198.18.0.100".parse().unwrap()),
                all: false
            }
        );
        let r = Request::decode(br#"{"v":1,"op":"vip_announce","all":true}"#).unwrap();
        assert_eq!(
            r,
            Request::VipAnnounce {
                vip: None,
                all: true
            }
        );
        assert_eq!(
            Request::decode(r.to_line().trim_end().as_bytes()).unwrap(),
            r
        );
        assert_eq!(
            kind(r#"{"v":1,"op":"vip_withdraw","vip":"nope"}"#),
            ErrorKind::WrongType
        );
        assert_eq!(
            kind(r#"{"v":1,"op":"vip_list","vip":"198.18.0.1"}"#),
            ErrorKind::UnknownField
        );
        assert!(
            !r.is_mutation(),
            "answered on the query path, no generation"
        );
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::ok(7, Outcome::Applied { apply_us: 12 });
        let back: Response = serde_json::from_str(r.to_line().trim_end()).unwrap();
        assert_eq!(back, r);
        let e = Response::err(
            7,
            ErrorBody::new(ErrorKind::UnknownService, "no service \"x\""),
        );
        let back: Response = serde_json::from_str(e.to_line().trim_end()).unwrap();
        assert_eq!(back, e);
    }
}
