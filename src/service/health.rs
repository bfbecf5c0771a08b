//! Active health checks of a service's endpoints, as the operator
//! configures them (`[service.health]`), and the health an endpoint can be
//! in. The probing itself is the control plane's (`control::health`); the
//! data path only ever sees the outcome, as an endpoint state.

use serde::{Deserialize, Serialize};

/// How an endpoint is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connection to the endpoint's address and port completes.
    Tcp,
    /// An HTTP/1.0 GET of `path` on the endpoint's address and port
    /// answers with status `expect`.
    Http,
}

/// A service's health check: what to ask each endpoint, how often, and
/// how many answers in a row change its health (keepalived's and
/// HAProxy's `inter`, `timeout`, `rise`, `fall`).
///
/// Probes go to the endpoint's own address and port, the ones the data
/// path forwards to: a backend that answers nothing but its service port
/// is checked where it serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// HTTP only: the path to GET (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP only: the status that means healthy (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<u16>,
    /// HTTP only: the Host header (default: the endpoint's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Time between the starts of two probes of one endpoint.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    /// A probe that has not succeeded this long after it started failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Successes in a row that bring a down endpoint back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failures in a row that take an endpoint down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_interval_ms() -> u32 {
    2000
}

fn default_timeout_ms() -> u32 {
    1000
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

/// Bounds on the timing fields, in milliseconds.
pub const MIN_INTERVAL_MS: u32 = 50;
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// Bound on `rise` and `fall`.
pub const MAX_COUNT: u32 = 100;

impl HealthCheck {
    /// A check of `kind` with the default timing (2 s interval, 1 s
    /// timeout, rise 2, fall 3).
    pub fn new(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            path: None,
            expect: None,
            host: None,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }

    /// The path an HTTP check asks for.
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    /// The status an HTTP check wants.
    pub fn http_expect(&self) -> u16 {
        self.expect.unwrap_or(200)
    }

    /// Checks the fields, naming the one at fault (relative to the
    /// service's `health` table) and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(format!(
                "health.interval_ms: {} is out of range; use {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}",
                self.interval_ms
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return Err(format!(
                "health.timeout_ms: {} must be 1 to interval_ms ({}): a probe must end before the next one starts",
                self.timeout_ms, self.interval_ms
            ));
        }
        for (name, v) in [("rise", self.rise), ("fall", self.fall)] {
            if v == 0 || v > MAX_COUNT {
                return Err(format!(
                    "health.{name}: {v} is out of range; use 1 to {MAX_COUNT}"
                ));
            }
        }
        match self.kind {
            CheckKind::Tcp => {
                for (name, set) in [
                    ("path", self.path.is_some()),
                    ("expect", self.expect.is_some()),
                    ("host", self.host.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "health.{name}: only used by kind = \"http\"; remove it or change the kind"
                        ));
                    }
                }
            }
            CheckKind::Http => {
                let path = self.http_path();
                // The path and host go into the request line and headers as
                // they are: nothing that could end a line or a field.
                if !path.starts_with('/')
                    || path.len() > 1024
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!(
                        "health.path: {path:?} must start with / and hold no spaces or control characters (at most 1024 bytes)"
                    ));
                }
                if !(100..=599).contains(&self.http_expect()) {
                    return Err(format!(
                        "health.expect: {} is not an HTTP status; use 100 to 599 (e.g. 200)",
                        self.http_expect()
                    ));
                }
                if let Some(h) = &self.host {
                    if h.is_empty()
                        || h.len() > 255
                        || !h
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
                    {
                        return Err(format!(
                            "health.host: {h:?} is not a host name (letters, digits, '-', '.', ':', '_', '[', ']')"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What probes say of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// No verdict yet (just added, or its check just changed). The data
    /// path keeps the operator's state meanwhile, as Envoy and HAProxy
    /// treat hosts they have not checked yet.
    #[default]
    Unknown,
    /// Answering its check.
    Up,
    /// Failed `fall` checks in a row: taken out of service (its flows get
    /// RSTs, as for an endpoint the operator marked down).
    Down,
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::Unknown => "unknown",
            HealthState::Up => "up",
            HealthState::Down => "down",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_name_the_field() {
        assert_eq!(HealthCheck::new(CheckKind::Tcp).validate(), Ok(()));
        let mut h = HealthCheck::new(CheckKind::Http);
        assert_eq!(h.validate(), Ok(()));
        assert_eq!((h.http_path(), h.http_expect()), ("/", 200));
        h.timeout_ms = 5000;
        assert!(h.validate().unwrap_err().starts_with("health.timeout_ms"));
        h.timeout_ms = 100;
        h.path = Some("/a b".into());
        assert!(h.validate().unwrap_err().starts_with("health.path"));
        h.path = Some("/x\r\nX-Injected: 1".into());
        assert!(h.validate().unwrap_err().starts_with("health.path"));
        h.path = Some("/healthz".into());
        h.expect = Some(42);
        assert!(h.validate().unwrap_err().starts_with("health.expect"));
        h.expect = Some(204);
        h.host = Some("web\r\n".into());
        assert!(h.validate().unwrap_err().starts_with("health.host"));
        h.host = Some("web.example".into());
        assert_eq!(h.validate(), Ok(()));
        h.rise = 0;
        assert!(h.validate().unwrap_err().starts_with("health.rise"));
        let mut t = HealthCheck::new(CheckKind::Tcp);
        t.path = Some("/".into());
        assert!(t.validate().unwrap_err().starts_with("health.path"));
        t.path = None;
        t.interval_ms = 10;
        assert!(t.validate().unwrap_err().starts_with("health.interval_ms"));
    }
}
