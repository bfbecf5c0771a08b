//! The control loop's side of neighbor resolution: punted ARP frames
//! answered, next hops the endpoints need asked for and learnt ones
//! published. Split from the loop itself to keep it readable.

use std::net::Ipv4Addr;

use super::Loop;
use crate::control::arp::Outgoing;
use crate::service::Generation;

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
                }
                Err(e) => tracing::warn!(error = %e, "publishing learnt neighbors failed"),
            }
        }
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
