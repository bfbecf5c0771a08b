//! Shared fixtures for data-path tests: a two-link topology, packet
//! builders, and a rig that drives workers over in-memory ports.
#![allow(dead_code)]

pub mod oracle;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Sender};
use sluice::port::mem::{MemWire, QueuePort};
use sluice::service::{EndpointSpec, Generation, LinkSpec, Protocol, ServiceSpec, Topology};
use sluice::wire::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_IPV4};
use sluice::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use sluice::wire::tcp::{TcpFlags, TcpRepr, TcpSegment};
use sluice::wire::udp::{UdpDatagram, UdpRepr};
use sluice::wire::{MacAddr, IPPROTO_TCP, IPPROTO_UDP};
use sluice::worker::{Counters, Plumbing, SharedCounters, Worker, WorkerConfig};

pub const CLIENT_LINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0xfe]);
pub const BACKEND_LINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 0xfe]);
pub const GATEWAY_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 7);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);

pub fn backend(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 2, 10 + i)
}

pub fn backend_mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 2, 10 + i])
}

/// Client link 0 (10.200.1.254/24, clients behind gateway .1 and on-link),
/// backend link 1 (10.200.2.254/24, backends .11-.19).
pub fn topology() -> Topology {
    let mut neighbors: Vec<(Ipv4Addr, MacAddr)> =
        (1..=9).map(|i| (backend(i), backend_mac(i))).collect();
    neighbors.push((GATEWAY, GATEWAY_MAC));
    neighbors.push((CLIENT, MacAddr([2, 0, 0, 0, 1, 7])));
    Topology {
        links: vec![
            LinkSpec {
                name: "clients".into(),
                mac: CLIENT_LINK_MAC,
                addr: Ipv4Addr::new(10, 200, 1, 254),
                prefix_len: 24,
            },
            LinkSpec {
                name: "backends".into(),
                mac: BACKEND_LINK_MAC,
                addr: Ipv4Addr::new(10, 200, 2, 254),
                prefix_len: 24,
            },
        ],
        routes: vec![],
        gateway: Some(GATEWAY),
        neighbors,
    }
}

pub fn service(proto: Protocol, eps: &[EndpointSpec]) -> ServiceSpec {
    let mut s = ServiceSpec::new("web", VIP, 80, proto);
    s.endpoints = eps.to_vec();
    s
}

pub fn eps(weights: &[u32]) -> Vec<EndpointSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| EndpointSpec::new(backend(i as u8 + 1), 8080).weight(w))
        .collect()
}

/// A TCP segment inside Ethernet + IPv4 with correct checksums.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload.len()];
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: ETHERTYPE_IPV4,
        vlan_tci: None,
    }
    .emit(&mut f[..])
    .expect("room for the header");
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IPPROTO_TCP,
        ttl: 64,
        payload_len: 20 + payload.len(),
        ident: 1,
        dont_fragment: true,
    }
    .emit(&mut f[14..34])
    .expect("room for the header");
    TcpRepr {
        src_port: sport,
        dst_port: dport,
        seq_number: seq,
        ack_number: ack,
        flags: TcpFlags(flags),
        window: 65535,
        payload_len: payload.len(),
    }
    .emit(&mut f[34..], src, dst, payload)
    .expect("room for the segment");
    f
}

pub fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    EthernetRepr {
        src_addr: GATEWAY_MAC,
        dst_addr: CLIENT_LINK_MAC,
        ethertype: ETHERTYPE_IPV4,
        vlan_tci: None,
    }
    .emit(&mut f[..])
    .expect("room for the header");
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IPPROTO_UDP,
        ttl: 64,
        payload_len: 8 + payload.len(),
        ident: 1,
        dont_fragment: false,
    }
    .emit(&mut f[14..34])
    .expect("room for the header");
    UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload_len: payload.len(),
    }
    .emit(&mut f[34..], src, dst, payload)
    .expect("room for the datagram");
    f
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;

/// Client -> VIP segment arriving through the gateway.
pub fn from_client(sport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    tcp_frame(
        GATEWAY_MAC,
        CLIENT_LINK_MAC,
        CLIENT,
        sport,
        VIP,
        80,
        flags,
        seq,
        ack,
        b"",
    )
}

/// Backend -> client segment.
pub fn from_backend(b: u8, sport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    tcp_frame(
        backend_mac(b),
        BACKEND_LINK_MAC,
        backend(b),
        8080,
        CLIENT,
        sport,
        flags,
        seq,
        ack,
        b"",
    )
}

/// What a frame says, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
}

/// Parses an output frame and checks every checksum by full recomputation.
pub fn inspect(f: &[u8]) -> Seen {
    let eth = EthernetFrame::new_checked(f).expect("ethernet");
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert!(ip.verify_checksum(), "IP checksum");
    let (sport, dport, flags, seq, ack) = match ip.protocol() {
        IPPROTO_TCP => {
            let t = TcpSegment::new_checked(ip.payload()).expect("tcp");
            assert!(
                t.verify_checksum(ip.src_addr(), ip.dst_addr()),
                "TCP checksum"
            );
            (
                t.src_port(),
                t.dst_port(),
                t.flags().0,
                t.seq_number(),
                t.ack_number(),
            )
        }
        IPPROTO_UDP => {
            let u = UdpDatagram::new_checked(ip.payload()).expect("udp");
            assert!(
                u.verify_checksum(ip.src_addr(), ip.dst_addr()),
                "UDP checksum"
            );
            (u.src_port(), u.dst_port(), 0, 0, 0)
        }
        _ => (0, 0, 0, 0, 0),
    };
    Seen {
        src_mac: eth.src_addr(),
        dst_mac: eth.dst_addr(),
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        sport,
        dport,
        ttl: ip.ttl(),
        flags,
        seq,
        ack,
    }
}

/// Workers over in-memory ports, driven by `poll_once` from the test thread
/// (deterministic: no timing, no threads).
pub struct Rig {
    pub workers: Vec<Worker<QueuePort>>,
    /// wires[worker][port]
    pub wires: Vec<Vec<MemWire>>,
    pub gen_tx: Vec<Sender<Arc<Generation>>>,
    pub shared: Vec<Arc<SharedCounters>>,
    pub number: u64,
}

impl Rig {
    pub fn new(n: u32, specs: &[ServiceSpec]) -> Rig {
        Rig::with_capacity(n, specs, 1 << 16)
    }

    pub fn with_capacity(n: u32, specs: &[ServiceSpec], capacity: usize) -> Rig {
        Rig::with_config(n, specs, capacity, |_| {})
    }

    /// A rig whose workers' configuration `tune` adjusts.
    pub fn with_config(
        n: u32,
        specs: &[ServiceSpec],
        capacity: usize,
        tune: impl Fn(&mut WorkerConfig),
    ) -> Rig {
        let gen = Arc::new(Generation::build(1, &topology(), specs).expect("valid specs"));
        let plumbing = Plumbing::new(n as usize, 1024);
        let epoch = Instant::now();
        let mut rig = Rig {
            workers: vec![],
            wires: vec![],
            gen_tx: vec![],
            shared: vec![],
            number: 1,
        };
        for i in 0..n {
            let (p0, w0) = QueuePort::new(4096);
            let (p1, w1) = QueuePort::new(4096);
            let (tx, rx) = bounded(4);
            let shared = Arc::new(SharedCounters::default());
            let mut cfg = WorkerConfig::new(i, n);
            cfg.flow_capacity = capacity;
            tune(&mut cfg);
            rig.workers.push(Worker::new(
                cfg,
                vec![p0, p1],
                gen.clone(),
                rx,
                shared.clone(),
                plumbing.clone(),
                epoch,
            ));
            rig.wires.push(vec![w0, w1]);
            rig.gen_tx.push(tx);
            rig.shared.push(shared);
        }
        rig
    }

    /// Publishes new specs to every worker (applied at their next poll).
    pub fn publish(&mut self, specs: &[ServiceSpec]) {
        self.number += 1;
        let g = Arc::new(Generation::build(self.number, &topology(), specs).expect("valid specs"));
        for tx in &self.gen_tx {
            tx.send(g.clone()).expect("worker alive");
        }
    }

    /// Injects `frame` on `port` of worker `w`, polls every worker until
    /// quiet, returns (worker, port, frame) for everything sent.
    pub fn send_to(&mut self, w: usize, port: usize, frame: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
        assert!(self.wires[w][port].inject(frame));
        self.poll_all()
    }

    /// Single-worker shorthand: what came out, as (port, frame).
    pub fn send(&mut self, port: usize, frame: &[u8]) -> Vec<(usize, Vec<u8>)> {
        self.send_to(0, port, frame)
            .into_iter()
            .map(|(_, p, f)| (p, f))
            .collect()
    }

    pub fn poll_all(&mut self) -> Vec<(usize, usize, Vec<u8>)> {
        for _ in 0..4 {
            for w in self.workers.iter_mut() {
                w.poll_once();
            }
        }
        let mut out = vec![];
        for (w, ports) in self.wires.iter().enumerate() {
            for (p, wire) in ports.iter().enumerate() {
                for f in wire.take_all() {
                    out.push((w, p, f));
                }
            }
        }
        out
    }

    pub fn counters(&self, w: usize) -> Counters {
        *self.workers[w].counters()
    }
}

/// The backend index (1-based, as in `backend(i)`) a frame was sent to.
pub fn backend_index(s: &Seen) -> u8 {
    s.dst.octets()[3] - 10
}

/// sluice's own ARP frames (announcements at start, neighbor requests):
/// tests that count data frames skip them.
pub fn is_arp(f: &[u8]) -> bool {
    f.get(12..14) == Some(&[0x08, 0x06][..])
}
