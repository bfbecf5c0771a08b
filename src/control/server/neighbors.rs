//! The control loop's side of neighbor resolution: punted ARP frames
//! answered, next hops the endpoints need asked for and learnt ones
//! published, frames held for unresolved neighbors given back once they
//! answer, and the learnt neighbors kept in a file beside the control
//! socket for the next instance. Split from the loop itself to keep it
//! readable.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Loop;
use crate::control::arp::{Neighbors, Outgoing};
use crate::control::store::Store;
use crate::service::Generation;
use crate::wire::MacAddr;
use crate::worker::Held;

/// First line of the neighbor file: the format's name and version.
const NEIGHBOR_FILE_HEADER: &str = "# sluice neighbors v1";

/// Where the learnt neighbors of the instance serving `socket` are kept.
pub(super) fn neighbor_file(socket: &Path) -> PathBuf {
    socket.with_extension("neighbors")
}

/// Writes `learnt` to `path` atomically (a temporary file renamed over it),
/// owner-only. The file must survive the process being killed, so it is
/// written whenever the learnt set changes, which is rare.
fn save_neighbors(path: &Path, learnt: &[(Ipv4Addr, MacAddr, u16)]) -> std::io::Result<()> {
    let tmp = path.with_extension("neighbors.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut text = String::with_capacity(48 * (learnt.len() + 1));
    text.push_str(NEIGHBOR_FILE_HEADER);
    text.push('\n');
    for (addr, mac, port) in learnt {
        text.push_str(&format!("{addr} {mac} {port}\n"));
    }
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The entries of a neighbor file; lines it cannot read are skipped and
/// counted (a file from another version must not stop a start).
fn parse_neighbors(text: &str) -> (Vec<(Ipv4Addr, MacAddr)>, usize) {
    let mut lines = text.lines();
    if lines.next() != Some(NEIGHBOR_FILE_HEADER) {
        return (Vec::new(), text.lines().count());
    }
    let mut out = Vec::new();
    let mut bad = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        match (
            f.next().and_then(|a| a.parse::<Ipv4Addr>().ok()),
            f.next().and_then(|m| m.parse::<MacAddr>().ok()),
        ) {
            (Some(a), Some(m)) => out.push((a, m)),
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// Starts `neighbors` from the file a previous instance left at `path`, if
/// any, and gives them to `store` for the first generation it publishes,
/// so the data path can use them from its first packet (frames a restart
/// left waiting in a kept ring are forwarded at once); each is asked for
/// again at the first ARP tick and forgotten if it does not answer.
pub(super) fn restore_neighbors(path: &Path, neighbors: &mut Neighbors, store: &mut Store) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the neighbor file");
            return;
        }
    };
    let (entries, bad) = parse_neighbors(&text);
    let taken = neighbors.restore(entries, Duration::ZERO);
    if taken > 0 {
        store.preset_learnt_neighbors(neighbors.resolved());
    }
    tracing::info!(path = %path.display(), restored = taken, unreadable = bad, "neighbors restored");
}

/// The IPv4 destination of an Ethernet frame (no VLAN tag: sluice holds
/// frames as they arrived on an untagged port).
fn ipv4_dst(frame: &[u8]) -> Option<u32> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let d = frame.get(30..34)?;
    Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

impl<B: Send + 'static> Loop<B> {
    /// Punted ARP frames answered, neighbors asked and learnt; a new
    /// generation when what the data path can reach changed.
    pub(super) fn arp_step(&mut self) {
        let g = self.dp.current().clone();
        if self
            .arp_seen
            .as_ref()
            .map_or(true, |s| s.number != g.number)
        {
            if !self
                .arp_seen
                .as_ref()
                .is_some_and(|s| s.same_service_keys(&g))
            {
                self.arp.set_vips(
                    g.services()
                        .map(|(_, s)| Ipv4Addr::from(s.key.addr))
                        .filter(|a| !a.is_unspecified()),
                );
            }
            if self.count_hops(&g) {
                let topo = self.store.topology();
                let mut hops: Vec<Ipv4Addr> = self.arp_hops.keys().copied().collect();
                hops.extend(topo.gateway);
                hops.extend(topo.routes.iter().map(|r| r.via));
                hops.sort();
                hops.dedup();
                self.arp.want(hops);
            }
            self.arp_seen = Some(g.clone());
        }
        let now = self.arp_epoch.elapsed();
        let mut out = Vec::new();
        let mut changed = false;
        for _ in 0..1024 {
            let Some((port, frame)) = self.dp.take_punted() else {
                break;
            };
            match frame.get(12..14) {
                // Headers of a packet the data path dropped for want of a
                // neighbor: resolve its next hop.
                Some([0x08, 0x00]) => {
                    if let Some(hop) = frame
                        .get(30..34)
                        .and_then(|d| g.next_hop(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
                    {
                        self.arp.solicit(Ipv4Addr::from(hop.next_hop));
                    }
                }
                _ => {
                    let (reply, c) = self.arp.on_frame(port, &frame, now);
                    out.extend(reply);
                    changed |= c;
                }
            }
        }
        self.take_held(&g, now);
        let (asks, c) = self.arp.tick(now);
        out.extend(asks);
        changed |= c;
        self.send_arp(out);
        if changed {
            let learnt = self.arp.resolved();
            match self.store.set_learnt_neighbors(&mut self.dp, learnt) {
                Ok(a) => {
                    // Only neighbors changed: the next hops stay as counted.
                    self.arp_seen = Some(self.dp.current().clone());
                    tracing::info!(generation = a.generation, "neighbors changed");
                    // Every worker runs the generation with the new
                    // neighbors: what waited for them can go.
                    self.release_held();
                }
                Err(e) => tracing::warn!(error = %e, "publishing learnt neighbors failed"),
            }
            if let Err(e) = save_neighbors(&self.neighbor_file, &self.arp.learnt()) {
                tracing::warn!(path = %self.neighbor_file.display(), error = %e,
                    "saving the learnt neighbors failed; a restart will learn them again");
            }
        }
        let expired = self.holds.expire(now);
        if expired > 0 {
            tracing::debug!(
                expired,
                "held frames dropped: their neighbor did not answer"
            );
        }
    }

    /// Frames the workers hold for a neighbor: queued by next hop, whose
    /// resolution starts now. A frame for a VIP (a client's packet whose
    /// backend has no MAC yet) names no next hop here; it goes back at the
    /// next change of neighbors.
    fn take_held(&mut self, g: &Generation, now: Duration) {
        for _ in 0..1024 {
            let Some(h) = self.dp.take_held() else { break };
            let hop = ipv4_dst(&h.frame)
                .filter(|&d| !g.services().any(|(_, s)| s.key.addr == d))
                .and_then(|d| g.next_hop(d))
                .map(|hop| Ipv4Addr::from(hop.next_hop));
            if let Some(a) = hop {
                self.arp.solicit(a);
            }
            self.holds.hold(hop, h, now);
        }
        // A worker may hold a frame for a neighbor the control thread has
        // already published (it ran the generation before): it goes back
        // at once instead of waiting for the next change of neighbors.
        let known: HashSet<Ipv4Addr> = self.arp.resolved().iter().map(|(a, _)| *a).collect();
        let ready = self.holds.release_named(|a| known.contains(&a));
        self.give_back(ready);
    }

    /// Sends released frames back to the workers that held them.
    fn give_back(&mut self, frames: Vec<Held>) {
        for Held {
            worker,
            port,
            frame,
        } in frames
        {
            if !self.dp.reinject(worker as usize, port, frame) {
                self.holds.stats.dropped += 1;
            }
        }
    }

    /// Gives back to their workers the held frames whose next hop is known.
    fn release_held(&mut self) {
        if self.holds.is_empty() {
            return;
        }
        let known: HashSet<Ipv4Addr> = self.arp.resolved().iter().map(|(a, _)| *a).collect();
        let ready = self.holds.release(|a| known.contains(&a));
        self.give_back(ready);
    }

    /// Brings `arp_hops` to `g`'s endpoints; whether the set of hops changed.
    fn count_hops(&mut self, g: &Generation) -> bool {
        let hop = |g: &Generation, i: u32| {
            let e = g.endpoint(i);
            if e.is_hole() {
                None
            } else {
                g.next_hop(e.addr).map(|h| Ipv4Addr::from(h.next_hop))
            }
        };
        let hops = &mut self.arp_hops;
        match &self.arp_seen {
            Some(old) if old.same_routes(g) => {
                let mut changed = false;
                for r in g.changed_endpoints(old) {
                    for i in r {
                        if (i as usize) < old.endpoint_count() {
                            if let Some(h) = hop(old, i) {
                                if let Some(n) = hops.get_mut(&h) {
                                    *n -= 1;
                                    if *n == 0 {
                                        hops.remove(&h);
                                        changed = true;
                                    }
                                }
                            }
                        }
                        if (i as usize) < g.endpoint_count() {
                            if let Some(h) = hop(g, i) {
                                let n = hops.entry(h).or_insert(0);
                                changed |= *n == 0;
                                *n += 1;
                            }
                        }
                    }
                }
                changed
            }
            _ => {
                hops.clear();
                for i in 0..g.endpoint_count() as u32 {
                    if let Some(h) = hop(g, i) {
                        *hops.entry(h).or_insert(0) += 1;
                    }
                }
                true
            }
        }
    }

    pub(super) fn send_arp(&mut self, frames: Vec<Outgoing>) {
        for o in frames {
            // Any worker can send on any port; worker 0 always exists.
            if !self.dp.inject(0, o.port, o.frame) {
                tracing::warn!(
                    port = o.port,
                    "ARP frame dropped: worker 0's inject queue is full"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_neighbor_file_round_trips_and_skips_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("sluice-nbr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = neighbor_file(&dir.join("sluice.sock"));
        assert_eq!(path, dir.join("sluice.neighbors"));
        let learnt = vec![
            (
                Ipv4Addr::new(10, 200, 1, 11),
                MacAddr([2, 0, 0, 0, 1, 11]),
                0,
            ),
            (
                Ipv4Addr::new(10, 200, 2, 12),
                MacAddr([2, 0, 0, 0, 2, 12]),
                1,
            ),
        ];
        save_neighbors(&path, &learnt).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (got, bad) = parse_neighbors(&text);
        assert_eq!(bad, 0);
        assert_eq!(
            got,
            learnt.iter().map(|(a, m, _)| (*a, *m)).collect::<Vec<_>>()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let damaged = format!("{text}garbage line\n10.0.0.1 not-a-mac 0\n");
        assert_eq!(parse_neighbors(&damaged), (got, 2));
        assert_eq!(
            parse_neighbors("# another format\n10.0.0.1 02:00:00:00:00:01 0\n").0,
            vec![]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_ipv4_frames_name_a_destination() {
        let mut f = vec![0u8; 34];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[30..34].copy_from_slice(&[10, 200, 1, 11]);
        assert_eq!(ipv4_dst(&f), Some(u32::from(Ipv4Addr::new(10, 200, 1, 11))));
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(ipv4_dst(&f), None);
        assert_eq!(ipv4_dst(&f[..20]), None);
    }
}
