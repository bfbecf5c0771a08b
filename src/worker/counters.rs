//! Per-worker counters: plain integers on the hot path, published once per
//! burst into a cache-line-aligned block of atomics the control thread reads
//! without stopping the worker.
//!
//! Every counter is declared once, in the [`counters!`] list below, with its
//! Prometheus family and help text: the struct, its publication, `ctl
//! stats` (human and JSON) and `/metrics` are all generated from that list,
//! so a counter cannot be counted and never shown.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::verdict::DropReason;

/// How one scalar counter is named and exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterInfo {
    /// Field name: the JSON key in `ctl stats --json` and the row in `ctl stats`.
    pub name: &'static str,
    /// Prometheus metric family (`_total` counters).
    pub metric: &'static str,
    /// Extra Prometheus label (`direction="rx"`), or "" for none: several
    /// fields can share one family told apart by it.
    pub label: &'static str,
    /// One line of help, shown by `/metrics` and `ctl stats`.
    pub help: &'static str,
}

/// Defines [`Counters`], the number of scalars, their order and
/// [`Counters::INFO`] from one list.
macro_rules! counters {
    ($( $field:ident => ($metric:literal, $label:literal, $help:literal), )+) => {
        /// Counters a worker owns. Updated with plain adds on the hot path.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct Counters {
            $( #[doc = $help] pub $field: u64, )+
            /// Drops by reason, indexed by [`DropReason`]; a JSON map by reason name.
            #[serde(serialize_with = "ser_drops", deserialize_with = "de_drops", default = "no_drops")]
            pub drops: [u64; DropReason::COUNT],
        }

        /// Number of scalar counters (all fields but `drops`).
        pub const SCALARS: usize = [$(stringify!($field)),+].len();

        impl Counters {
            /// Name, metric and help of every scalar, in publication order.
            pub const INFO: [CounterInfo; SCALARS] = [
                $( CounterInfo { name: stringify!($field), metric: $metric, label: $label, help: $help }, )+
            ];

            /// The scalars in [`Counters::INFO`] order.
            pub fn scalars(&self) -> [u64; SCALARS] {
                [$( self.$field, )+]
            }

            fn from_scalars(s: [u64; SCALARS], drops: [u64; DropReason::COUNT]) -> Counters {
                let mut it = s.into_iter();
                Counters {
                    $( $field: it.next().unwrap_or(0), )+
                    drops,
                }
            }
        }
    };
}

counters! {
    rx_packets => ("sluice_packets_total", "direction=\"rx\"", "Packets received, per worker and direction."),
    rx_bytes => ("sluice_bytes_total", "direction=\"rx\"", "Bytes received, per worker and direction."),
    tx_packets => ("sluice_packets_total", "direction=\"tx\"", "Packets sent, per worker and direction."),
    tx_bytes => ("sluice_bytes_total", "direction=\"tx\"", "Bytes sent, per worker and direction."),
    forwarded => ("sluice_forwarded_packets_total", "", "Client to backend packets forwarded."),
    replies => ("sluice_reply_packets_total", "", "Backend to client packets reverse-translated."),
    answered => ("sluice_answered_packets_total", "", "Packets sluice answered itself: RSTs, ICMP errors, echo replies, ARP it originated."),
    resets => ("sluice_resets_total", "", "TCP RSTs sent to clients whose backend is gone or whose service has no endpoint."),
    icmp_errors => ("sluice_icmp_errors_total", "", "ICMP errors sluice originated (port unreachable for UDP with no backend, time exceeded)."),
    icmp_errors_limited => ("sluice_icmp_errors_limited_total", "", "ICMP errors not sent because the per-worker rate limit was reached."),
    flows_created => ("sluice_flows_created_total", "", "Flows created in the table."),
    flows_assured => ("sluice_flows_assured_total", "", "Flows that became protected from eviction (handshake completed, or replies seen)."),
    flows_untracked => ("sluice_flows_untracked_total", "", "New flows forwarded by Maglev without an entry: the table was full of live protected flows."),
    flows_evicted => ("sluice_flows_evicted_total", "", "Flows evicted to make room in a full table (never a live protected one)."),
    flows_expired => ("sluice_flows_expired_total", "", "Flows removed by aging."),
    table_misses => ("sluice_flow_table_misses_total", "", "Mid-flow packets with no flow entry, sent where Maglev says (S4a)."),
    flows_recycled => ("sluice_flows_recycled_total", "", "Long-lived connections reset both ways at an idle moment by a service's recycling policy (S2)."),
    flows_rescheduled => ("sluice_flows_rescheduled_total", "", "SYNs that reused the tuple of a closed or unusable flow and were scheduled afresh (S3)."),
    handoffs_out => ("sluice_handoffs_total", "direction=\"out\"", "Packets handed to (out) or taken from (in) another worker's ring."),
    handoffs_in => ("sluice_handoffs_total", "direction=\"in\"", "Packets handed to (out) or taken from (in) another worker's ring."),
    punted => ("sluice_punted_total", "", "Frames handed to the control thread (ARP)."),
    port_reopens => ("sluice_port_reopens_total", "", "Ports (this worker's queues) re-opened or repaired after a link event: interface down/up, MTU change, interface re-created, a DPDK port's XDP program removed."),
    polls => ("sluice_polls_total", "", "Polls of every port (empty ones included)."),
    idle_polls => ("sluice_idle_polls_total", "", "Polls that found no packet."),
}

fn ser_drops<S: serde::Serializer>(d: &[u64; DropReason::COUNT], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(DropReason::COUNT))?;
    for r in DropReason::ALL {
        m.serialize_entry(r.name(), &d[r as usize])?;
    }
    m.end()
}

fn de_drops<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u64; DropReason::COUNT], D::Error> {
    let m: std::collections::BTreeMap<String, u64> = serde::Deserialize::deserialize(d)?;
    let mut out = [0; DropReason::COUNT];
    for (name, n) in m {
        // A reason this build does not know (a newer sluice) is left out
        // rather than failing the whole reply.
        if let Some(r) = DropReason::ALL.iter().find(|r| r.name() == name) {
            out[*r as usize] = n;
        }
    }
    Ok(out)
}

fn no_drops() -> [u64; DropReason::COUNT] {
    [0; DropReason::COUNT]
}

impl Counters {
    #[inline(always)]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Total drops over every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Field-wise sum (aggregating workers).
    pub fn add(&mut self, o: &Counters) {
        *self = self.zip_with(o, u64::wrapping_add);
    }

    /// What happened since `before` (a snapshot of the same worker).
    pub fn since(&self, before: &Counters) -> Counters {
        self.zip_with(before, u64::saturating_sub)
    }

    /// `f` applied field by field, through the one list of fields that
    /// publishing uses too.
    fn zip_with(&self, o: &Counters, f: impl Fn(u64, u64) -> u64) -> Counters {
        let (a, b) = (self.scalars(), o.scalars());
        Counters::from_scalars(
            std::array::from_fn(|i| f(a[i], b[i])),
            std::array::from_fn(|i| f(self.drops[i], o.drops[i])),
        )
    }

    /// Every counter as (name, help, value): the scalars in list order,
    /// then one `drop_<reason>` per drop reason. What `ctl stats` prints.
    pub fn rows(&self) -> impl Iterator<Item = (String, &'static str, u64)> + '_ {
        Counters::INFO
            .iter()
            .zip(self.scalars())
            .map(|(i, v)| (i.name.to_string(), i.help, v))
            .chain(DropReason::ALL.into_iter().map(|r| {
                (
                    format!("drop_{}", r.name()),
                    "Packets dropped for this reason.",
                    self.drops[r as usize],
                )
            }))
    }
}

/// What the control thread can read of a worker while it runs.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct SharedCounters {
    scalars: [AtomicU64; SCALARS],
    drops: [AtomicU64; DropReason::COUNT],
    /// Flow-table occupancy.
    pub flows_active: AtomicU64,
    /// Flow-table capacity (set once at start).
    pub flow_capacity: AtomicU64,
    /// The generation number the worker runs (its acknowledgement).
    pub generation: AtomicU64,
}

impl SharedCounters {
    /// Publishes the worker's counters. Single writer: plain stores, no
    /// read-modify-write.
    pub fn publish(&self, c: &Counters) {
        for (a, v) in self.scalars.iter().zip(c.scalars()) {
            a.store(v, Relaxed);
        }
        for (a, v) in self.drops.iter().zip(c.drops) {
            a.store(v, Relaxed);
        }
    }

    /// A snapshot (fields individually consistent, not across fields).
    pub fn snapshot(&self) -> Counters {
        let s = std::array::from_fn(|i| self.scalars[i].load(Relaxed));
        let d = std::array::from_fn(|i| self.drops[i].load(Relaxed));
        Counters::from_scalars(s, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_snapshot_round_trip_every_field() {
        let mut c = Counters::default();
        let s: [u64; SCALARS] = std::array::from_fn(|i| i as u64 + 1);
        c = Counters::from_scalars(s, c.drops);
        c.drop(DropReason::Fragment);
        c.drop(DropReason::NoBuffer);
        let sh = SharedCounters::default();
        sh.publish(&c);
        assert_eq!(sh.snapshot(), c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.rx_packets, 2);
        assert_eq!(sum.total_drops(), 4);
        assert_eq!(sum.idle_polls, 2 * SCALARS as u64);
    }

    #[test]
    fn json_round_trips_with_drops_by_name() {
        let mut c = Counters {
            flows_untracked: 7,
            ..Counters::default()
        };
        c.drop(DropReason::NoBackend);
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["flows_untracked"], 7);
        assert_eq!(v["drops"]["no_backend"], 1);
        let back: Counters = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_field_is_listed_once_with_help_and_a_metric() {
        let v = serde_json::to_value(Counters::default()).unwrap();
        let keys = v.as_object().unwrap();
        // Every serialised scalar is in INFO, and nothing else is.
        assert_eq!(keys.len(), SCALARS + 1);
        let mut names = std::collections::HashSet::new();
        let mut series = std::collections::HashSet::new();
        for i in Counters::INFO {
            assert!(keys.contains_key(i.name), "{}", i.name);
            assert!(names.insert(i.name), "{} twice", i.name);
            assert!(
                series.insert((i.metric, i.label)),
                "{} {} twice",
                i.metric,
                i.label
            );
            assert!(i.metric.starts_with("sluice_") && i.metric.ends_with("_total"));
            assert!(!i.help.is_empty());
        }
        assert_eq!(
            Counters::default().rows().count(),
            SCALARS + DropReason::COUNT
        );
    }
}
