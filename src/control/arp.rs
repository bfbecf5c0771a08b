//! Neighbor resolution (ARP) on the control thread.
//!
//! Workers punt ARP frames; this module answers requests for sluice's own
//! addresses and VIPs, learns neighbors from requests and replies, resolves
//! the next hops the data path needs (backends, gateways) by sending
//! requests through a worker, re-resolves before entries expire, and gives
//! up on silent neighbors after a few tries.
//!
//! Frames the data path could not send for want of a neighbor's MAC wait
//! in a [`HoldQueue`] (a few per neighbor, as the kernel's neighbor queues
//! hold them) until the neighbor answers, and are given back to the data
//! path then; a neighbor that never answers has its frames dropped.
//!
//! Learnt neighbors outlive the process (the control loop saves them); a
//! new instance starts with them ([`Neighbors::restore`]) and revalidates
//! each by ARP at once, forgetting those that do not answer.
//!
//! Pure logic over explicit `now` values: the control loop feeds it frames
//! and ticks and sends what it returns.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::arp::{ArpPacket, ArpRepr, ARP_REPLY, ARP_REQUEST};
use crate::wire::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_ARP};
use crate::wire::MacAddr;

/// Timers of neighbor resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpTimers {
    /// How long a learnt entry is trusted.
    pub reachable: Duration,
    /// Re-resolve this long before an entry expires.
    pub refresh_before: Duration,
    /// Between two requests for the same address.
    pub retry: Duration,
    /// Requests sent before a neighbor counts as unresolved (it is then
    /// retried every `retry * tries`).
    pub tries: u32,
}

impl Default for ArpTimers {
    fn default() -> Self {
        ArpTimers {
            reachable: Duration::from_secs(60),
            refresh_before: Duration::from_secs(10),
            retry: Duration::from_secs(1),
            tries: 3,
        }
    }
}

/// One of sluice's interfaces, as ARP needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpLink {
    pub mac: MacAddr,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Configured: never expires, never asked.
    Static,
    /// Learnt at `at`.
    Reachable { at: Duration },
    /// Being asked: `sent` requests so far, the last at `last`.
    Probing { sent: u32, last: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    mac: Option<MacAddr>,
    port: u16,
    state: State,
    /// When a learnt `mac` stops being trusted (refresh probes keep it
    /// usable until then).
    expires: Duration,
    /// A next hop the data path needs: probed and refreshed. Others (hosts
    /// that asked for one of our addresses) are only remembered until they
    /// expire; they refresh themselves by asking again.
    wanted: bool,
    /// Where the MAC came from.
    source: Source,
    /// When the MAC was last confirmed by the neighbor itself (an ARP
    /// frame from it), if ever.
    confirmed: Option<Duration>,
}

/// Where a neighbor entry's MAC came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The configuration's `neighbors`.
    Config,
    /// An ARP request or reply from the neighbor.
    Arp,
    /// The previous instance's neighbor file (revalidated by ARP).
    Restored,
    /// Nothing yet: being asked.
    Asking,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Arp => "arp",
            Source::Restored => "restored",
            Source::Asking => "-",
        }
    }
}

/// One row of `sluice ctl neighbors`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NeighborView {
    pub ip: Ipv4Addr,
    /// `None` while it is being asked (frames to it wait or drop as
    /// `neighbor_unresolved`).
    pub mac: Option<MacAddr>,
    /// The port (interface index) it lives on.
    pub port: u16,
    /// `static` (configured), `reachable` (confirmed within its lifetime),
    /// `refreshing` (usable, being asked again), `incomplete` (asked, no
    /// answer yet), `failed` (every try unanswered; asked again slowly).
    pub state: String,
    /// Milliseconds since the neighbor last confirmed its MAC (`None`:
    /// never, e.g. configured or restored and not yet re-confirmed).
    pub age_ms: Option<u64>,
    /// `config`, `arp`, `restored`, or `-` (never answered).
    pub source: String,
    /// A next hop the data path needs (probed and refreshed), rather than
    /// a host that asked for one of sluice's addresses.
    pub next_hop: bool,
}

/// A frame for the control thread to send out of `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub port: u16,
    pub frame: Vec<u8>,
}

/// Counters for `sluice ctl stats` / metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArpStats {
    pub requests_answered: u64,
    pub requests_sent: u64,
    pub learnt: u64,
    pub unresolved: u64,
    pub ignored: u64,
    /// Entries taken from a previous instance (revalidated by ARP).
    pub restored: u64,
}

/// The neighbor table and what it still has to ask.
#[derive(Debug)]
pub struct Neighbors {
    links: Vec<ArpLink>,
    vips: Vec<Ipv4Addr>,
    entries: BTreeMap<Ipv4Addr, Entry>,
    timers: ArpTimers,
    pub stats: ArpStats,
}

fn frame(src: MacAddr, dst: MacAddr, arp: &ArpRepr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: ETHERTYPE_ARP,
        vlan_tci: None,
    }
    .emit(&mut f)
    .expect("42 bytes hold an Ethernet header");
    arp.emit(&mut f[14..]).expect("42 bytes hold an ARP packet");
    // Pad to the 60-byte Ethernet minimum.
    f.resize(60, 0);
    f
}

fn on_link(l: &ArpLink, a: Ipv4Addr) -> bool {
    let m = if l.prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(l.prefix_len.min(32)))
    };
    u32::from(a) & m == u32::from(l.addr) & m
}

impl Neighbors {
    pub fn new(links: Vec<ArpLink>, timers: ArpTimers) -> Neighbors {
        Neighbors {
            links,
            vips: Vec::new(),
            entries: BTreeMap::new(),
            timers,
            stats: ArpStats::default(),
        }
    }

    /// Addresses sluice answers for besides its links' own: the VIPs.
    pub fn set_vips(&mut self, vips: impl IntoIterator<Item = Ipv4Addr>) {
        self.vips = vips.into_iter().collect();
        self.vips.sort();
        self.vips.dedup();
    }

    /// A configured neighbor: used as is, never asked, never expired.
    pub fn add_static(&mut self, addr: Ipv4Addr, mac: MacAddr) {
        let port = self.port_for(addr).unwrap_or(0);
        self.entries.insert(
            addr,
            Entry {
                mac: Some(mac),
                port,
                state: State::Static,
                source: Source::Config,
                confirmed: None,
                expires: Duration::MAX,
                wanted: true,
            },
        );
    }

    fn port_for(&self, a: Ipv4Addr) -> Option<u16> {
        self.links
            .iter()
            .enumerate()
            .filter(|(_, l)| on_link(l, a))
            .max_by_key(|(_, l)| l.prefix_len)
            .map(|(i, _)| i as u16)
    }

    /// Next hops the data path needs: unknown ones start being asked at the
    /// next tick; ones no longer needed are forgotten (static ones stay).
    pub fn want(&mut self, hops: impl IntoIterator<Item = Ipv4Addr>) {
        let wanted: std::collections::BTreeSet<Ipv4Addr> = hops.into_iter().collect();
        // Unwanted probes stop; learnt entries stay until they expire.
        self.entries.retain(|a, e| {
            e.wanted = wanted.contains(a) || e.state == State::Static;
            e.wanted || e.mac.is_some()
        });
        for a in wanted {
            if self.entries.contains_key(&a) {
                continue;
            }
            let Some(port) = self.port_for(a) else {
                continue;
            };
            self.entries.insert(
                a,
                Entry {
                    mac: None,
                    port,
                    state: State::Probing {
                        sent: 0,
                        last: Duration::ZERO,
                    },
                    expires: Duration::ZERO,
                    wanted: true,
                    source: Source::Asking,
                    confirmed: None,
                },
            );
        }
    }

    /// A host the data path just failed to reach (its MAC unknown): ask for
    /// it now. It is remembered like a host that asked us (refreshed while
    /// it answers, forgotten when it stops), not probed forever.
    pub fn solicit(&mut self, addr: Ipv4Addr) {
        if self.entries.contains_key(&addr) {
            return;
        }
        let Some(port) = self.port_for(addr) else {
            return;
        };
        self.entries.insert(
            addr,
            Entry {
                mac: None,
                port,
                state: State::Probing {
                    sent: 0,
                    last: Duration::ZERO,
                },
                expires: Duration::ZERO,
                wanted: false,
                source: Source::Asking,
                confirmed: None,
            },
        );
    }

    /// The table as `sluice ctl neighbors` shows it, at `now` on the same
    /// clock as the other calls.
    pub fn view(&self, now: Duration) -> Vec<NeighborView> {
        let tries = self.timers.tries;
        self.entries
            .iter()
            .map(|(a, e)| {
                let state = match e.state {
                    State::Static => "static",
                    State::Reachable { .. } if e.mac.is_some() => "reachable",
                    State::Probing { .. } if e.mac.is_some() => "refreshing",
                    State::Probing { sent, .. } if sent >= tries => "failed",
                    _ => "incomplete",
                };
                NeighborView {
                    ip: *a,
                    mac: e.mac,
                    port: e.port,
                    state: state.into(),
                    age_ms: e
                        .confirmed
                        .map(|at| now.saturating_sub(at).as_millis() as u64),
                    source: e.source.name().into(),
                    next_hop: e.wanted,
                }
            })
            .collect()
    }

    /// The resolved neighbors, for the next generation.
    pub fn resolved(&self) -> Vec<(Ipv4Addr, MacAddr)> {
        self.entries
            .iter()
            .filter_map(|(a, e)| e.mac.map(|m| (*a, m)))
            .collect()
    }

    /// The neighbors learnt (not configured) with a known MAC, and the port
    /// each lives on: what a later instance may start from.
    pub fn learnt(&self) -> Vec<(Ipv4Addr, MacAddr, u16)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.state != State::Static)
            .filter_map(|(a, e)| e.mac.map(|m| (*a, m, e.port)))
            .collect()
    }

    /// Neighbors a previous instance learnt: usable at once (the data path
    /// needs them before anyone re-asks), and each asked for again at the
    /// next tick; one that does not answer within `tries` requests is
    /// forgotten. Entries on no link of this configuration, or already
    /// known, are skipped. Returns how many were taken.
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = (Ipv4Addr, MacAddr)>,
        now: Duration,
    ) -> usize {
        let mut taken = 0;
        for (addr, mac) in entries {
            if self.entries.contains_key(&addr) || mac.is_multicast() {
                continue;
            }
            let Some(port) = self.port_for(addr) else {
                continue;
            };
            self.entries.insert(
                addr,
                Entry {
                    mac: Some(mac),
                    port,
                    state: State::Probing {
                        sent: 0,
                        last: Duration::ZERO,
                    },
                    expires: now + self.timers.retry * self.timers.tries,
                    wanted: false,
                    source: Source::Restored,
                    confirmed: None,
                },
            );
            taken += 1;
        }
        self.stats.restored += taken as u64;
        taken
    }

    /// Next hops asked `tries` times without an answer.
    pub fn unresolved(&self) -> Vec<Ipv4Addr> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                e.mac.is_none()
                    && matches!(e.state, State::Probing { sent, .. } if sent >= self.timers.tries)
            })
            .map(|(a, _)| *a)
            .collect()
    }

    fn request(&mut self, port: u16, target: Ipv4Addr) -> Option<Outgoing> {
        let l = *self.links.get(usize::from(port))?;
        self.stats.requests_sent += 1;
        Some(Outgoing {
            port,
            frame: frame(
                l.mac,
                MacAddr::BROADCAST,
                &ArpRepr {
                    operation: ARP_REQUEST,
                    sender_hw_addr: l.mac,
                    sender_proto_addr: l.addr,
                    target_hw_addr: MacAddr([0; 6]),
                    target_proto_addr: target,
                },
            ),
        })
    }

    /// Gratuitous ARP: every link's own address and every VIP, announced on
    /// every link, so neighbors (and switches) learn where they live.
    pub fn announce(&mut self) -> Vec<Outgoing> {
        let mut out = vec![];
        for (i, l) in self.links.iter().enumerate() {
            let addrs = std::iter::once(l.addr).chain(self.vips.iter().copied());
            for a in addrs {
                out.push(Outgoing {
                    port: i as u16,
                    frame: frame(
                        l.mac,
                        MacAddr::BROADCAST,
                        &ArpRepr {
                            operation: ARP_REQUEST,
                            sender_hw_addr: l.mac,
                            sender_proto_addr: a,
                            target_hw_addr: MacAddr([0; 6]),
                            target_proto_addr: a,
                        },
                    ),
                });
            }
        }
        out
    }

    /// Timers: requests for next hops being probed or about to expire.
    /// Returns the frames to send and whether the resolved set changed
    /// (an entry expired).
    pub fn tick(&mut self, now: Duration) -> (Vec<Outgoing>, bool) {
        let t = self.timers;
        let mut out = vec![];
        let mut changed = false;
        let mut ask = vec![];
        // Hosts we only learnt (not next hops we need) that stopped
        // answering are forgotten.
        let tries = t.tries;
        self.entries.retain(|_, e| {
            e.wanted
                || e.mac.is_some()
                || !matches!(e.state, State::Probing { sent, .. } if sent >= tries)
        });
        for (a, e) in self.entries.iter_mut() {
            if e.state != State::Static && e.mac.is_some() && now >= e.expires {
                e.mac = None;
                changed = true;
            }
            match e.state {
                State::Static => {}
                State::Reachable { at } => {
                    let age = now.saturating_sub(at);
                    if e.mac.is_none() {
                        e.state = State::Probing { sent: 1, last: now };
                        ask.push((e.port, *a));
                    } else if age + t.refresh_before >= t.reachable {
                        // Refresh while still usable: the data path never
                        // sees the entry go away if the neighbor answers.
                        e.state = State::Probing { sent: 0, last: now };
                        ask.push((e.port, *a));
                    }
                }
                State::Probing { sent, .. } if sent >= t.tries && !e.wanted => {
                    // Gave up: removed at the next tick unless it answers.
                }
                State::Probing { sent, last } => {
                    let wait = if sent >= t.tries {
                        t.retry * t.tries
                    } else {
                        t.retry
                    };
                    if sent == 0 || now.saturating_sub(last) >= wait {
                        if sent + 1 == t.tries {
                            self.stats.unresolved += 1;
                        }
                        e.state = State::Probing {
                            sent: sent.saturating_add(1),
                            last: now,
                        };
                        ask.push((e.port, *a));
                    }
                }
            }
        }
        for (port, a) in ask {
            out.extend(self.request(port, a));
        }
        (out, changed)
    }

    /// A punted ARP frame that arrived on `port`. Returns the reply to send
    /// (if it asked for one of our addresses) and whether the resolved set
    /// changed.
    pub fn on_frame(&mut self, port: u16, bytes: &[u8], now: Duration) -> (Option<Outgoing>, bool) {
        let Ok(eth) = EthernetFrame::new_checked(bytes) else {
            self.stats.ignored += 1;
            return (None, false);
        };
        let Ok(arp) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) else {
            self.stats.ignored += 1;
            return (None, false);
        };
        let Some(link) = self.links.get(usize::from(port)).copied() else {
            self.stats.ignored += 1;
            return (None, false);
        };
        let sender = arp.sender_proto_addr;
        let mut changed = false;
        // Learn the sender if we want it (RFC 826: update an existing entry).
        if let Some(e) = self.entries.get_mut(&sender) {
            if e.state != State::Static && !arp.sender_hw_addr.is_multicast() {
                changed = e.mac != Some(arp.sender_hw_addr);
                e.mac = Some(arp.sender_hw_addr);
                e.port = port;
                e.state = State::Reachable { at: now };
                e.expires = now + self.timers.reachable;
                e.source = Source::Arp;
                e.confirmed = Some(now);
                self.stats.learnt += 1;
            }
        }
        let target = arp.target_proto_addr;
        let ours = target == link.addr || self.vips.contains(&target);
        // RFC 826: the target of a request records the sender (replies to
        // that host will need its address, e.g. an on-link client).
        if ours
            && sender != target
            && !sender.is_unspecified()
            && !arp.sender_hw_addr.is_multicast()
            && on_link(&link, sender)
            && !self.entries.contains_key(&sender)
        {
            self.entries.insert(
                sender,
                Entry {
                    mac: Some(arp.sender_hw_addr),
                    port,
                    state: State::Reachable { at: now },
                    expires: now + self.timers.reachable,
                    wanted: false,
                    source: Source::Arp,
                    confirmed: Some(now),
                },
            );
            self.stats.learnt += 1;
            changed = true;
        }
        let reply = if arp.operation == ARP_REQUEST && ours && sender != target {
            self.stats.requests_answered += 1;
            Some(Outgoing {
                port,
                frame: frame(
                    link.mac,
                    arp.sender_hw_addr,
                    &ArpRepr {
                        operation: ARP_REPLY,
                        sender_hw_addr: link.mac,
                        sender_proto_addr: target,
                        target_hw_addr: arp.sender_hw_addr,
                        target_proto_addr: sender,
                    },
                ),
            })
        } else {
            None
        };
        (reply, changed)
    }
}

/// How many frames may wait for neighbors, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldLimits {
    /// Frames per neighbor (the oldest goes when a new one comes).
    pub per_neighbor: usize,
    /// Frames in all.
    pub total: usize,
    /// A frame older than this is dropped: its neighbor did not answer.
    pub max_age: Duration,
}

impl Default for HoldLimits {
    fn default() -> Self {
        HoldLimits {
            // Enough for the first packets of a few connections; the kernel
            // holds up to 101 (unres_qlen), but frames held longer than a
            // retransmission timeout only duplicate what the sender re-sends.
            per_neighbor: 16,
            total: 1024,
            max_age: Duration::from_secs(3),
        }
    }
}

/// Counters of a [`HoldQueue`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HoldStats {
    pub held: u64,
    pub released: u64,
    /// Dropped because a queue was full or the neighbor never answered.
    pub dropped: u64,
}

/// Frames waiting for their next hop's MAC, by next hop (`None`: a next
/// hop the control thread cannot name from the frame, such as a backend
/// chosen by the data path; those go back at every change of neighbors).
#[derive(Debug)]
pub struct HoldQueue<T> {
    queues: BTreeMap<Option<Ipv4Addr>, std::collections::VecDeque<(Duration, T)>>,
    total: usize,
    limits: HoldLimits,
    pub stats: HoldStats,
}

impl<T> HoldQueue<T> {
    pub fn new(limits: HoldLimits) -> HoldQueue<T> {
        HoldQueue {
            queues: BTreeMap::new(),
            total: 0,
            limits,
            stats: HoldStats::default(),
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Holds `item` for `hop`. A full queue drops its oldest frame (the
    /// newest says most about what the sender still waits for).
    pub fn hold(&mut self, hop: Option<Ipv4Addr>, item: T, now: Duration) {
        if self.total >= self.limits.total {
            self.stats.dropped += 1;
            return;
        }
        let q = self.queues.entry(hop).or_default();
        if q.len() >= self.limits.per_neighbor {
            q.pop_front();
            self.total -= 1;
            self.stats.dropped += 1;
        }
        q.push_back((now, item));
        self.total += 1;
        self.stats.held += 1;
    }

    /// Takes the frames whose next hop `resolved` now knows, and those
    /// whose next hop is unnamed, oldest first.
    pub fn release(&mut self, resolved: impl Fn(Ipv4Addr) -> bool) -> Vec<T> {
        self.release_where(|h| h.map_or(true, &resolved))
    }

    /// Takes only the frames whose (named) next hop `resolved` knows.
    pub fn release_named(&mut self, resolved: impl Fn(Ipv4Addr) -> bool) -> Vec<T> {
        self.release_where(|h| h.is_some_and(&resolved))
    }

    fn release_where(&mut self, take: impl Fn(Option<Ipv4Addr>) -> bool) -> Vec<T> {
        let ready: Vec<Option<Ipv4Addr>> =
            self.queues.keys().filter(|&&h| take(h)).copied().collect();
        let mut out = Vec::new();
        for h in ready {
            if let Some(q) = self.queues.remove(&h) {
                self.total -= q.len();
                out.extend(q.into_iter().map(|(_, t)| t));
            }
        }
        self.stats.released += out.len() as u64;
        out
    }

    /// Drops frames older than the limit; returns how many.
    pub fn expire(&mut self, now: Duration) -> usize {
        let max_age = self.limits.max_age;
        let mut gone = 0;
        self.queues.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) > max_age)
            {
                q.pop_front();
                gone += 1;
            }
            !q.is_empty()
        });
        self.total -= gone;
        self.stats.dropped += gone as u64;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: MacAddr = MacAddr([2, 0, 0, 0, 2, 0xfe]);
    const B1: MacAddr = MacAddr([2, 0, 0, 0, 2, 11]);

    fn nb() -> Neighbors {
        let mut n = Neighbors::new(
            vec![ArpLink {
                mac: LB,
                addr: Ipv4Addr::new(10, 200, 2, 254),
                prefix_len: 24,
            }],
            ArpTimers::default(),
        );
        n.set_vips([Ipv4Addr::new(198, 18, 0, 100)]);
        n
    }

    fn arp_of(o: &Outgoing) -> ArpRepr {
        let eth = EthernetFrame::new_checked(&o.frame[..]).unwrap();
        ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap()
    }

    fn reply_from(ip: [u8; 4], mac: MacAddr) -> Vec<u8> {
        frame(
            mac,
            LB,
            &ArpRepr {
                operation: ARP_REPLY,
                sender_hw_addr: mac,
                sender_proto_addr: Ipv4Addr::from(ip),
                target_hw_addr: LB,
                target_proto_addr: Ipv4Addr::new(10, 200, 2, 254),
            },
        )
    }

    #[test]
    fn resolves_wanted_next_hops_and_learns_the_reply() {
        let mut n = nb();
        let b1 = Ipv4Addr::new(10, 200, 2, 11);
        n.want([b1, Ipv4Addr::new(192, 0, 2, 1)]); // second: on no link, ignored
        let (out, _) = n.tick(Duration::from_secs(1));
        assert_eq!(out.len(), 1);
        let req = arp_of(&out[0]);
        assert_eq!((req.operation, req.target_proto_addr), (ARP_REQUEST, b1));
        assert_eq!(&out[0].frame[..6], &[0xff; 6]);
        let (r, changed) = n.on_frame(0, &reply_from([10, 200, 2, 11], B1), Duration::from_secs(1));
        assert!(r.is_none() && changed);
        assert_eq!(n.resolved(), vec![(b1, B1)]);
    }

    #[test]
    fn answers_requests_for_own_address_and_vips_only() {
        let mut n = nb();
        for (target, answered) in [
            ([10, 200, 2, 254], true),
            ([198, 18, 0, 100], true),
            ([10, 200, 2, 99], false),
        ] {
            let req = frame(
                B1,
                MacAddr::BROADCAST,
                &ArpRepr {
                    operation: ARP_REQUEST,
                    sender_hw_addr: B1,
                    sender_proto_addr: Ipv4Addr::new(10, 200, 2, 11),
                    target_hw_addr: MacAddr([0; 6]),
                    target_proto_addr: Ipv4Addr::from(target),
                },
            );
            let (r, _) = n.on_frame(0, &req, Duration::ZERO);
            assert_eq!(r.is_some(), answered, "{target:?}");
            if let Some(r) = r {
                let a = arp_of(&r);
                assert_eq!(a.operation, ARP_REPLY);
                assert_eq!(
                    (a.sender_hw_addr, a.sender_proto_addr),
                    (LB, Ipv4Addr::from(target))
                );
                assert_eq!(a.target_hw_addr, B1);
                assert_eq!(&r.frame[..6], &B1.0);
            }
        }
        assert_eq!(n.stats.requests_answered, 2);
        // The asker was learnt (RFC 826), is refreshed before it expires,
        // and forgotten once it stops answering.
        assert_eq!(n.resolved(), vec![(Ipv4Addr::new(10, 200, 2, 11), B1)]);
        assert!(n.tick(Duration::from_secs(30)).0.is_empty());
        assert_eq!(n.tick(Duration::from_secs(51)).0.len(), 1, "refresh probe");
        for s in 52..70 {
            n.tick(Duration::from_secs(s));
        }
        assert!(n.resolved().is_empty());
        assert!(n.entries.is_empty(), "forgotten, not probed forever");
    }

    #[test]
    fn entries_are_refreshed_then_expire_and_silent_neighbors_count_as_unresolved() {
        let mut n = nb();
        let b1 = Ipv4Addr::new(10, 200, 2, 11);
        n.want([b1]);
        n.tick(Duration::from_secs(0));
        n.on_frame(0, &reply_from([10, 200, 2, 11], B1), Duration::from_secs(0));
        // Before the refresh window: nothing to send.
        assert!(n.tick(Duration::from_secs(30)).0.is_empty());
        // In the refresh window: asked again, still usable.
        let (out, changed) = n.tick(Duration::from_secs(51));
        assert_eq!(out.len(), 1);
        assert!(!changed);
        assert_eq!(n.resolved().len(), 1);
        // It never answers: asked until `tries`, then it expires.
        n.tick(Duration::from_secs(52));
        n.tick(Duration::from_secs(53));
        let (_, changed) = n.tick(Duration::from_secs(61));
        assert!(changed, "expired at learn + reachable");
        assert!(n.resolved().is_empty());
        // Keeps asking, slower, and is reported unresolved.
        for s in 62..80 {
            n.tick(Duration::from_secs(s));
        }
        assert!(n.resolved().is_empty());
        assert_eq!(n.unresolved(), vec![b1]);
        assert!(n.stats.unresolved >= 1);
    }

    /// `ctl neighbors`: each entry's state, age and source as it moves
    /// from asked to learnt to refreshing to failed.
    #[test]
    fn the_view_tells_state_age_and_source() {
        let mut n = nb();
        let (b1, b2, gw) = (
            Ipv4Addr::new(10, 200, 2, 11),
            Ipv4Addr::new(10, 200, 2, 12),
            Ipv4Addr::new(10, 200, 2, 1),
        );
        n.add_static(gw, MacAddr([2, 0, 0, 0, 2, 1]));
        n.restore([(b2, MacAddr([2, 0, 0, 0, 2, 12]))], Duration::ZERO);
        n.want([b1, gw]);
        n.tick(Duration::from_secs(1));
        let row = |n: &Neighbors, a: Ipv4Addr, now: u64| {
            n.view(Duration::from_secs(now))
                .into_iter()
                .find(|r| r.ip == a)
                .map(|r| (r.state, r.age_ms, r.source, r.mac.is_some(), r.next_hop))
        };
        let s = |x: &str| x.to_string();
        assert_eq!(
            row(&n, gw, 1),
            Some((s("static"), None, s("config"), true, true))
        );
        assert_eq!(
            row(&n, b1, 1),
            Some((s("incomplete"), None, s("-"), false, true))
        );
        assert_eq!(
            row(&n, b2, 1),
            Some((s("refreshing"), None, s("restored"), true, false))
        );
        n.on_frame(0, &reply_from([10, 200, 2, 11], B1), Duration::from_secs(2));
        assert_eq!(
            row(&n, b1, 5),
            Some((s("reachable"), Some(3000), s("arp"), true, true))
        );
        // Never answers again: refreshing, then expired and failed.
        for t in 50..75 {
            n.tick(Duration::from_secs(t));
        }
        assert_eq!(
            row(&n, b1, 75),
            Some((s("failed"), Some(73_000), s("arp"), false, true))
        );
    }

    #[test]
    fn hosts_the_data_path_cannot_reach_are_solicited_once_and_learnt() {
        let mut n = nb();
        let client = Ipv4Addr::new(10, 200, 2, 50);
        n.solicit(client);
        n.solicit(client);
        n.solicit(Ipv4Addr::new(192, 0, 2, 1)); // on no link: ignored
        let (out, _) = n.tick(Duration::from_secs(1));
        assert_eq!(out.len(), 1);
        assert_eq!(arp_of(&out[0]).target_proto_addr, client);
        let (_, changed) = n.on_frame(0, &reply_from([10, 200, 2, 50], B1), Duration::from_secs(1));
        assert!(changed);
        assert_eq!(n.resolved(), vec![(client, B1)]);
        // Still in use and answering: kept past the first expiry.
        n.tick(Duration::from_secs(52));
        n.on_frame(
            0,
            &reply_from([10, 200, 2, 50], B1),
            Duration::from_secs(52),
        );
        n.tick(Duration::from_secs(70));
        assert_eq!(n.resolved(), vec![(client, B1)]);
    }

    #[test]
    fn static_entries_are_never_asked_nor_overwritten_and_garbage_is_ignored() {
        let mut n = nb();
        let gw = Ipv4Addr::new(10, 200, 2, 1);
        n.add_static(gw, B1);
        n.want([gw]);
        assert!(n.tick(Duration::from_secs(1000)).0.is_empty());
        let spoof = reply_from([10, 200, 2, 1], MacAddr([2, 9, 9, 9, 9, 9]));
        n.on_frame(0, &spoof, Duration::ZERO);
        assert_eq!(n.resolved(), vec![(gw, B1)]);
        for junk in [&[][..], &[0u8; 20][..], &[0xffu8; 60][..]] {
            assert_eq!(n.on_frame(0, junk, Duration::ZERO), (None, false));
        }
        assert_eq!(n.stats.ignored, 3);
    }

    #[test]
    fn announces_own_addresses_and_vips_on_every_link() {
        let mut n = nb();
        let out = n.announce();
        let targets: Vec<Ipv4Addr> = out.iter().map(|o| arp_of(o).target_proto_addr).collect();
        assert_eq!(
            targets,
            vec![
                Ipv4Addr::new(10, 200, 2, 254),
                Ipv4Addr::new(198, 18, 0, 100)
            ]
        );
        assert!(out
            .iter()
            .all(|o| arp_of(o).sender_proto_addr == arp_of(o).target_proto_addr));
    }

    #[test]
    fn restored_neighbors_are_usable_at_once_revalidated_and_forgotten_if_silent() {
        let mut n = nb();
        let (b1, b2) = (Ipv4Addr::new(10, 200, 2, 11), Ipv4Addr::new(10, 200, 2, 12));
        let b2_mac = MacAddr([2, 0, 0, 0, 2, 12]);
        let taken = n.restore(
            [
                (b1, B1),
                (b2, b2_mac),
                (Ipv4Addr::new(192, 0, 2, 1), B1), // on no link
                (Ipv4Addr::new(10, 200, 2, 13), MacAddr::BROADCAST),
            ],
            Duration::ZERO,
        );
        assert_eq!(taken, 2);
        assert_eq!(n.resolved(), vec![(b1, B1), (b2, b2_mac)]);
        // Both asked for at the first tick.
        let (out, _) = n.tick(Duration::from_millis(1));
        let asked: Vec<Ipv4Addr> = out.iter().map(|o| arp_of(o).target_proto_addr).collect();
        assert_eq!(asked, vec![b1, b2]);
        // b1 answers; b2 stays silent and is forgotten after its tries.
        n.on_frame(
            0,
            &reply_from([10, 200, 2, 11], B1),
            Duration::from_millis(2),
        );
        for s in 1..5 {
            n.tick(Duration::from_secs(s));
        }
        assert_eq!(n.resolved(), vec![(b1, B1)]);
        assert_eq!(n.learnt(), vec![(b1, B1, 0)]);
        assert_eq!(n.stats.restored, 2);
    }

    #[test]
    fn learnt_leaves_out_configured_neighbors() {
        let mut n = nb();
        n.add_static(Ipv4Addr::new(10, 200, 2, 1), B1);
        n.want([Ipv4Addr::new(10, 200, 2, 11)]);
        n.tick(Duration::ZERO);
        n.on_frame(0, &reply_from([10, 200, 2, 11], B1), Duration::ZERO);
        assert_eq!(n.learnt(), vec![(Ipv4Addr::new(10, 200, 2, 11), B1, 0)]);
    }

    #[test]
    fn held_frames_wait_for_their_neighbor_within_bounds() {
        let limits = HoldLimits {
            per_neighbor: 2,
            total: 3,
            max_age: Duration::from_secs(3),
        };
        let mut q = HoldQueue::new(limits);
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        q.hold(Some(a), 1, Duration::ZERO);
        q.hold(Some(a), 2, Duration::ZERO);
        q.hold(Some(a), 3, Duration::ZERO); // a's oldest (1) goes
        q.hold(Some(b), 4, Duration::from_secs(2));
        q.hold(None, 5, Duration::from_secs(2)); // over the total: dropped
        assert_eq!(q.len(), 3);
        assert_eq!(q.stats.dropped, 2);
        // b resolves: its frame, not a's.
        assert_eq!(q.release(|h| h == b), vec![4]);
        q.hold(None, 6, Duration::from_secs(2));
        // Unnamed next hops go back at any release.
        assert_eq!(q.release(|_| false), vec![6]);
        // a never answers: its frames age out.
        assert_eq!(q.expire(Duration::from_secs(3)), 0);
        assert_eq!(q.expire(Duration::from_millis(3001)), 2);
        assert!(q.is_empty());
        assert_eq!(q.stats.released, 2);
        assert_eq!(q.stats.held, 5);
        // Only named next hops: an unnamed one stays for the next change.
        q.hold(Some(b), 7, Duration::ZERO);
        q.hold(None, 8, Duration::ZERO);
        assert_eq!(q.release_named(|h| h == b), vec![7]);
        assert_eq!(q.release_named(|_| true), Vec::<i32>::new());
        assert_eq!(q.len(), 1);
    }
}
