//! Interfaces, routes and neighbors: where a packet leaves and to which MAC.

use std::net::Ipv4Addr;

use hashbrown::HashMap;

use crate::hash::FastBuildHasher;
use crate::wire::MacAddr;

/// One interface sluice owns: its MAC, its own address and connected subnet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkSpec {
    pub name: String,
    pub mac: MacAddr,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// A static route: `dest/prefix_len` is reached via `via`, a neighbor on a
/// connected subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteSpec {
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub via: Ipv4Addr,
}

/// The L2/L3 surroundings: interfaces (index = port number), static routes,
/// a default gateway and known neighbors (static or learnt by ARP).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Topology {
    pub links: Vec<LinkSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub neighbors: Vec<(Ipv4Addr, MacAddr)>,
}

/// Where a packet to some address leaves: the port and the next hop's
/// address (the destination itself when it is on a connected subnet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub port: u16,
    pub next_hop: u32,
}

/// Compiled route table: entries sorted by prefix length, longest first, so
/// the first match is the longest-prefix match. Tables are small (a few
/// connected subnets and static routes); a linear scan over a contiguous
/// array beats a trie at that size.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteTable {
    entries: Vec<RouteEntry>,
    /// Next hop address -> its index in `hops`.
    neighbors: HashMap<u32, u32, FastBuildHasher>,
    /// Every resolved next hop: the port it is on and its MAC. A flow keeps
    /// its client's hop index (valid while the flow's generation is
    /// current), so a reply on the fast path reaches its client's next hop
    /// without a route scan or a neighbor probe.
    hops: Vec<(u16, MacAddr)>,
}

/// A hop index that names no hop.
pub const NO_HOP: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct RouteEntry {
    net: u32,
    mask: u32,
    len: u8,
    port: u16,
    /// `None`: connected, the next hop is the destination.
    via: Option<u32>,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// Why a topology was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("link {link}: prefix length {len} is over 32")]
    BadPrefix { link: String, len: u8 },
    #[error("route {dest}/{len}: prefix length over 32")]
    BadRoutePrefix { dest: Ipv4Addr, len: u8 },
    #[error("route {dest}/{len} via {via}: {via} is on no connected subnet; add a link whose subnet contains it")]
    UnreachableVia {
        dest: Ipv4Addr,
        len: u8,
        via: Ipv4Addr,
    },
    #[error("gateway {0} is on no connected subnet; add a link whose subnet contains it")]
    UnreachableGateway(Ipv4Addr),
    #[error("more than 65535 links")]
    TooManyLinks,
}

impl RouteTable {
    pub(crate) fn compile(topo: &Topology) -> Result<RouteTable, TopologyError> {
        if topo.links.len() > usize::from(u16::MAX) {
            return Err(TopologyError::TooManyLinks);
        }
        let mut entries = Vec::new();
        for (i, l) in topo.links.iter().enumerate() {
            if l.prefix_len > 32 {
                return Err(TopologyError::BadPrefix {
                    link: l.name.clone(),
                    len: l.prefix_len,
                });
            }
            let m = mask(l.prefix_len);
            entries.push(RouteEntry {
                net: u32::from(l.addr) & m,
                mask: m,
                len: l.prefix_len,
                port: i as u16,
                via: None,
            });
        }
        let connected = entries.clone();
        let connected_port = |a: Ipv4Addr| {
            let a = u32::from(a);
            connected
                .iter()
                .filter(|e| a & e.mask == e.net)
                .max_by_key(|e| e.len)
                .map(|e| e.port)
        };
        for r in &topo.routes {
            if r.prefix_len > 32 {
                return Err(TopologyError::BadRoutePrefix {
                    dest: r.dest,
                    len: r.prefix_len,
                });
            }
            let port = connected_port(r.via).ok_or(TopologyError::UnreachableVia {
                dest: r.dest,
                len: r.prefix_len,
                via: r.via,
            })?;
            let m = mask(r.prefix_len);
            entries.push(RouteEntry {
                net: u32::from(r.dest) & m,
                mask: m,
                len: r.prefix_len,
                port,
                via: Some(u32::from(r.via)),
            });
        }
        if let Some(gw) = topo.gateway {
            let port = connected_port(gw).ok_or(TopologyError::UnreachableGateway(gw))?;
            entries.push(RouteEntry {
                net: 0,
                mask: 0,
                len: 0,
                port,
                via: Some(u32::from(gw)),
            });
        }
        // Stable sort: among equal lengths, connected subnets (listed first)
        // win over static routes.
        entries.sort_by_key(|e| std::cmp::Reverse(e.len));
        let mut neighbors = HashMap::default();
        let mut hops = Vec::new();
        for &(a, m) in &topo.neighbors {
            // A neighbor on no connected subnet can be no one's next hop.
            let Some(port) = connected_port(a) else {
                continue;
            };
            if neighbors.contains_key(&u32::from(a)) {
                continue;
            }
            neighbors.insert(u32::from(a), hops.len() as u32);
            hops.push((port, m));
        }
        Ok(RouteTable {
            entries,
            neighbors,
            hops,
        })
    }

    /// Longest-prefix match.
    #[inline]
    pub(crate) fn lookup(&self, dst: u32) -> Option<Hop> {
        self.entries
            .iter()
            .find(|e| dst & e.mask == e.net)
            .map(|e| Hop {
                port: e.port,
                next_hop: e.via.unwrap_or(dst),
            })
    }

    /// The port and destination MAC for a packet to `dst`: `Err(None)` when no
    /// route matches, `Err(Some(hop))` when the next hop's MAC is unknown.
    #[inline]
    pub(crate) fn resolve(&self, dst: u32) -> Result<(u16, MacAddr), Option<Hop>> {
        let i = self.resolve_hop(dst)?;
        self.hop(i).ok_or(None)
    }

    /// [`RouteTable::resolve`] as a hop index (see `hops`).
    #[inline]
    pub(crate) fn resolve_hop(&self, dst: u32) -> Result<u32, Option<Hop>> {
        let hop = self.lookup(dst).ok_or(None)?;
        match self.neighbors.get(&hop.next_hop) {
            Some(&i) => Ok(i),
            None => Err(Some(hop)),
        }
    }

    /// The port and MAC of hop `i`.
    #[inline(always)]
    pub(crate) fn hop(&self, i: u32) -> Option<(u16, MacAddr)> {
        self.hops.get(i as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology {
            links: vec![
                LinkSpec {
                    name: "client".into(),
                    mac: MacAddr([2, 0, 0, 0, 1, 0xfe]),
                    addr: Ipv4Addr::new(10, 200, 1, 254),
                    prefix_len: 24,
                },
                LinkSpec {
                    name: "backend".into(),
                    mac: MacAddr([2, 0, 0, 0, 2, 0xfe]),
                    addr: Ipv4Addr::new(10, 200, 2, 254),
                    prefix_len: 24,
                },
            ],
            routes: vec![RouteSpec {
                dest: Ipv4Addr::new(10, 200, 64, 0),
                prefix_len: 18,
                via: Ipv4Addr::new(10, 200, 2, 1),
            }],
            gateway: Some(Ipv4Addr::new(10, 200, 1, 1)),
            neighbors: vec![
                (Ipv4Addr::new(10, 200, 1, 1), MacAddr([2, 0, 0, 0, 1, 1])),
                (Ipv4Addr::new(10, 200, 2, 1), MacAddr([2, 0, 0, 0, 2, 1])),
            ],
        }
    }

    #[test]
    fn longest_prefix_wins_and_gateway_catches_the_rest() {
        let t = RouteTable::compile(&topo()).unwrap();
        let ip = |a, b, c, d| u32::from(Ipv4Addr::new(a, b, c, d));
        assert_eq!(
            t.lookup(ip(10, 200, 2, 7)),
            Some(Hop {
                port: 1,
                next_hop: ip(10, 200, 2, 7)
            })
        );
        assert_eq!(
            t.lookup(ip(10, 200, 70, 1)),
            Some(Hop {
                port: 1,
                next_hop: ip(10, 200, 2, 1)
            })
        );
        assert_eq!(
            t.lookup(ip(198, 18, 5, 5)),
            Some(Hop {
                port: 0,
                next_hop: ip(10, 200, 1, 1)
            })
        );
        assert_eq!(
            t.resolve(ip(198, 18, 5, 5)),
            Ok((0, MacAddr([2, 0, 0, 0, 1, 1])))
        );
        assert!(matches!(t.resolve(ip(10, 200, 2, 9)), Err(Some(_))));
    }

    #[test]
    fn no_gateway_means_no_route() {
        let mut tp = topo();
        tp.gateway = None;
        let t = RouteTable::compile(&tp).unwrap();
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 18, 0, 1))), None);
        assert_eq!(
            t.resolve(u32::from(Ipv4Addr::new(198, 18, 0, 1))),
            Err(None)
        );
    }

    #[test]
    fn unreachable_gateway_and_via_are_refused() {
        let mut tp = topo();
        tp.gateway = Some(Ipv4Addr::new(192, 0, 2, 1));
        assert!(matches!(
            RouteTable::compile(&tp),
            Err(TopologyError::UnreachableGateway(_))
        ));
        let mut tp = topo();
        tp.routes[0].via = Ipv4Addr::new(192, 0, 2, 1);
        assert!(matches!(
            RouteTable::compile(&tp),
            Err(TopologyError::UnreachableVia { .. })
        ));
    }
}
