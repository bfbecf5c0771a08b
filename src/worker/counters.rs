//! Per-worker counters: plain integers on the hot path, published once per
//! burst into a cache-line-aligned block of atomics the control thread reads
//! without stopping the worker.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::verdict::DropReason;

/// Counters a worker owns. Updated with plain adds on the hot path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Client->backend packets forwarded.
    pub forwarded: u64,
    /// Backend->client packets reverse-NATed.
    pub replies: u64,
    /// Packets sluice answered itself (RSTs, echo replies).
    pub answered: u64,
    /// RSTs sent to clients whose backend is gone (S4b).
    pub resets: u64,
    pub flows_created: u64,
    /// Flows evicted to make room in a full table.
    pub flows_evicted: u64,
    /// Flows removed by aging.
    pub flows_expired: u64,
    /// Mid-flow packets with no table entry, sent where Maglev says (S4a).
    pub table_misses: u64,
    /// SYNs that reused the tuple of a closed or unusable flow and were
    /// scheduled afresh (S3).
    pub flows_rescheduled: u64,
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub punted: u64,
    /// Bursts polled (empty ones included).
    pub polls: u64,
    pub idle_polls: u64,
    #[serde(serialize_with = "ser_drops")]
    pub drops: [u64; DropReason::COUNT],
}

fn ser_drops<S: serde::Serializer>(d: &[u64; DropReason::COUNT], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(DropReason::COUNT))?;
    for r in DropReason::ALL {
        m.serialize_entry(r.name(), &d[r as usize])?;
    }
    m.end()
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
}

/// Number of scalar counters published (all fields but `drops`).
const SCALARS: usize = 18;

/// What the control thread can read of a worker while it runs.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct SharedCounters {
    scalars: [AtomicU64; SCALARS],
    drops: [AtomicU64; DropReason::COUNT],
    /// Flow-table occupancy.
    pub flows_active: AtomicU64,
    /// The generation number the worker runs (its acknowledgement).
    pub generation: AtomicU64,
}

impl Counters {
    fn scalars(&self) -> [u64; SCALARS] {
        [
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.tx_bytes,
            self.forwarded,
            self.replies,
            self.answered,
            self.resets,
            self.flows_created,
            self.flows_evicted,
            self.flows_expired,
            self.table_misses,
            self.flows_rescheduled,
            self.handoffs_out,
            self.handoffs_in,
            self.punted,
            self.polls,
            self.idle_polls,
        ]
    }

    fn from_scalars(s: [u64; SCALARS], drops: [u64; DropReason::COUNT]) -> Counters {
        Counters {
            rx_packets: s[0],
            rx_bytes: s[1],
            tx_packets: s[2],
            tx_bytes: s[3],
            forwarded: s[4],
            replies: s[5],
            answered: s[6],
            resets: s[7],
            flows_created: s[8],
            flows_evicted: s[9],
            flows_expired: s[10],
            table_misses: s[11],
            flows_rescheduled: s[12],
            handoffs_out: s[13],
            handoffs_in: s[14],
            punted: s[15],
            polls: s[16],
            idle_polls: s[17],
            drops,
        }
    }
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
}
