//! The fuzz targets' logic, one module each (the files in `fuzz_targets/`
//! only call `run`), and what they share: a worker rig on the in-memory
//! port and an Internet checksum written here, independent of sluice's, so
//! a frame is judged by code that did not build it.

use std::net::Ipv4Addr;

use sluice::service::{EndpointSpec, EndpointState, LinkSpec, Protocol, ServiceSpec, Topology};
use sluice::wire::MacAddr;

/// The Internet checksum (RFC 1071) and what to run it over, from scratch.
pub mod csum {
    /// One's-complement sum of `bytes` (odd length padded with zero) added to `acc`.
    pub fn sum(bytes: &[u8], mut acc: u64) -> u64 {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u64::from(*last) << 8;
        }
        acc
    }

    /// Folds a sum to 16 bits.
    pub fn fold(mut acc: u64) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// The pseudo-header sum of TCP and UDP.
    pub fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u64 {
        sum(&src, 0) + sum(&dst, 0) + u64::from(proto) + len as u64
    }

    /// Where a frame's IPv4 header starts (after an optional 802.1Q tag),
    /// if it is IPv4.
    pub fn ipv4_at(frame: &[u8]) -> Option<usize> {
        match frame.get(12..14)? {
            [0x08, 0x00] => Some(14),
            [0x81, 0x00] if frame.get(16..18)? == [0x08, 0x00] => Some(18),
            _ => None,
        }
    }

    /// The IPv4 packet of `frame`: (header start, header length, end of the
    /// packet), if the header holds together.
    pub fn ipv4_bounds(frame: &[u8]) -> Option<(usize, usize, usize)> {
        let l3 = ipv4_at(frame)?;
        let vihl = *frame.get(l3)?;
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([
            *frame.get(l3 + 2)?,
            *frame.get(l3 + 3)?,
        ]));
        let end = l3 + total;
        if total < ihl || end > frame.len() {
            return None;
        }
        Some((l3, ihl, end))
    }

    /// The L4 checksum of an unfragmented packet whose IPv4 header spans
    /// `l3..l3 + ihl` and which ends at `end`: its protocol, the checksum's
    /// offset in the L4 bytes and the sum it starts from (the pseudo-header,
    /// none for ICMP); `None` when there is nothing to check.
    fn l4_checksum(frame: &[u8], l3: usize, ihl: usize, end: usize) -> Option<(u8, usize, u64)> {
        if u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]) & 0x3fff != 0 {
            return None;
        }
        let len = end - l3 - ihl;
        let addr = |at: usize| [frame[at], frame[at + 1], frame[at + 2], frame[at + 3]];
        let (src, dst) = (addr(l3 + 12), addr(l3 + 16));
        match frame[l3 + 9] {
            6 if len >= 20 => Some((6, 16, pseudo(src, dst, 6, len))),
            17 if len >= 8 => Some((17, 6, pseudo(src, dst, 17, len))),
            1 if len >= 8 => Some((1, 2, 0)),
            _ => None,
        }
    }

    /// Whether every checksum of `frame` that can be checked verifies: the
    /// IPv4 header's, and TCP's, UDP's (unless zero: none) or ICMP's over the
    /// packet's length for an unfragmented packet. Frames that are not IPv4,
    /// or whose lengths do not hold together, have nothing to check.
    pub fn verifies(frame: &[u8]) -> bool {
        let Some((l3, ihl, end)) = ipv4_bounds(frame) else {
            return true;
        };
        if fold(sum(&frame[l3..l3 + ihl], 0)) != 0xffff {
            return false;
        }
        let Some((proto, at, base)) = l4_checksum(frame, l3, ihl, end) else {
            return true;
        };
        let l4 = &frame[l3 + ihl..end];
        (proto == 17 && l4[at..at + 2] == [0, 0]) || fold(sum(l4, base)) == 0xffff
    }

    /// Rewrites every checksum of `frame` that [`verifies`] checks so that
    /// it verifies (the fuzzer's mutations break them; half the inputs are
    /// repaired so that the forwarding paths see well-formed packets).
    pub fn repair(frame: &mut [u8]) {
        let Some((l3, ihl, end)) = ipv4_bounds(frame) else {
            return;
        };
        frame[l3 + 10..l3 + 12].fill(0);
        let c = !fold(sum(&frame[l3..l3 + ihl], 0));
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        let Some((proto, at, base)) = l4_checksum(frame, l3, ihl, end) else {
            return;
        };
        let l4 = &mut frame[l3 + ihl..end];
        l4[at..at + 2].fill(0);
        let mut c = !fold(sum(l4, base));
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

pub const CLIENT_LINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 0xfe]);
pub const BACKEND_LINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 2, 0xfe]);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 7);

pub fn backend(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 2, 10 + i)
}

/// Two links (clients behind a gateway and on-link, backends on-link),
/// static neighbors for all backends but 4, whose frames wait for ARP.
pub fn topology() -> Topology {
    let mut neighbors: Vec<(Ipv4Addr, MacAddr)> = [1, 2, 3, 5, 6]
        .into_iter()
        .map(|i| (backend(i), MacAddr([2, 0, 0, 0, 2, 10 + i])))
        .collect();
    neighbors.push((Ipv4Addr::new(10, 200, 1, 1), MacAddr([2, 0, 0, 0, 1, 1])));
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
        gateway: Some(Ipv4Addr::new(10, 200, 1, 1)),
        neighbors,
    }
}

/// Backend `i`'s endpoint on `port`, in `state`.
fn ep(i: u8, port: u16, state: EndpointState) -> EndpointSpec {
    let mut e = EndpointSpec::new(backend(i), port);
    e.state = state;
    e
}

/// A TCP service with active, draining, down, removed and unresolved
/// endpoints, a UDP service, and a TCP service with no endpoint (small
/// Maglev tables).
pub fn services() -> Vec<ServiceSpec> {
    let mut web = ServiceSpec::new("web", VIP, 80, Protocol::Tcp);
    web.table_size = 251;
    web.endpoints = vec![
        ep(1, 8080, EndpointState::Active).weight(2),
        ep(2, 8080, EndpointState::Draining),
        ep(3, 8080, EndpointState::Down),
        ep(4, 8080, EndpointState::Active),
        ep(6, 8080, EndpointState::Removed),
    ];
    let mut dns = ServiceSpec::new("dns", VIP, 53, Protocol::Udp);
    dns.table_size = 251;
    dns.endpoints = vec![
        ep(1, 5353, EndpointState::Active),
        ep(2, 5353, EndpointState::Active),
    ];
    let mut empty = ServiceSpec::new("empty", EMPTY_VIP, 80, Protocol::Tcp);
    empty.table_size = 251;
    vec![web, dns, empty]
}

/// The generations the pipeline target switches through, built as the
/// control store builds them (`Generation::rebuild` over the previous one:
/// endpoint indices kept, deleted endpoints left as holes). 1: [`services`].
/// 2: web's draining endpoint removed, its down one active again, the
/// unresolved one deleted and a new one added; dns's second endpoint
/// deleted and its first draining; the empty service deleted and a UDP
/// service on its address. 3: web with every endpoint down or removed, dns
/// with both endpoints back, one on another port.
pub fn generations() -> &'static [std::sync::Arc<sluice::service::Generation>; 3] {
    use std::sync::{Arc, OnceLock};

    use sluice::service::Generation;
    static GENS: OnceLock<[Arc<Generation>; 3]> = OnceLock::new();
    GENS.get_or_init(|| {
        let one = services();
        let g1 = Generation::build(1, &topology(), &one).expect("valid");
        let (mut web, mut dns) = (one[0].clone(), one[1].clone());
        web.endpoints = vec![
            ep(1, 8080, EndpointState::Active).weight(2),
            ep(2, 8080, EndpointState::Removed),
            ep(3, 8080, EndpointState::Active),
            ep(5, 8080, EndpointState::Active),
            ep(6, 8080, EndpointState::Removed),
        ];
        dns.endpoints = vec![ep(1, 5353, EndpointState::Draining)];
        let mut dns2 = ServiceSpec::new("dns2", EMPTY_VIP, 53, Protocol::Udp);
        dns2.table_size = 251;
        dns2.endpoints = vec![ep(3, 53, EndpointState::Active)];
        let two: Vec<Arc<ServiceSpec>> = [web.clone(), dns.clone(), dns2.clone()]
            .into_iter()
            .map(Arc::new)
            .collect();
        let g2 = Generation::rebuild(&g1, 2, &two).expect("valid");
        for e in &mut web.endpoints {
            if e.state == EndpointState::Active {
                e.state = EndpointState::Down;
            }
        }
        dns.endpoints = vec![
            ep(1, 5354, EndpointState::Active),
            ep(2, 5353, EndpointState::Active),
        ];
        let three: Vec<Arc<ServiceSpec>> = [web, dns, dns2].into_iter().map(Arc::new).collect();
        let g3 = Generation::rebuild(&g2, 3, &three).expect("valid");
        [Arc::new(g1), Arc::new(g2), Arc::new(g3)]
    })
}

/// The whole worker pipeline on the in-memory port.
///
/// Input: records of `[control][len hi][len lo][frame...]`; `control` bit
/// 0 is the port (clients or backends), bit 1 repairs the frame's
/// checksums first, bits 2-7 advance the worker clock by that many times
/// 512 ms (so flows age, expire and get evicted); the top bit of the length
/// publishes the next of [`generations`] before the frame (endpoints
/// drained, removed, deleted, added under live flows). Checks, after every
/// frame: each frame got exactly one verdict (the counters add up); a
/// frame whose checksums verified comes out (forwarded or answered) with
/// checksums that verify from scratch; a TCP or UDP packet sent on to a
/// backend (source not a VIP) goes to an endpoint of the running
/// generation that carries flows (active or draining), never to a down,
/// removed or deleted one; the flow table's occupancy is its entry count,
/// within capacity, and every entry pinned under the running generation
/// names an endpoint that exists (not a hole) with the entry's address.
pub mod pipeline {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Instant;

    use sluice::port::mem::QueuePort;
    use sluice::service::Generation;
    use sluice::worker::{Counters, Plumbing, SharedCounters, Worker, WorkerConfig};

    use super::csum;

    fn verdicts(c: &Counters) -> u64 {
        c.forwarded + c.replies + c.answered + c.punted + c.drops.iter().sum::<u64>()
    }

    /// Runs one input; returns the worker's counters (for the tests below).
    pub fn run(mut data: &[u8]) -> Counters {
        let gens = super::generations();
        let mut next_gen = 1;
        let (p0, w0) = QueuePort::new(64);
        let (p1, w1) = QueuePort::new(64);
        let wires = [w0, w1];
        let (gen_tx, gen_rx) = crossbeam_channel::bounded::<Arc<Generation>>(1);
        let mut cfg = WorkerConfig::new(0, 1);
        cfg.flow_capacity = 64;
        let mut worker = Worker::new(
            cfg,
            vec![p0, p1],
            gens[0].clone(),
            gen_rx,
            Arc::new(SharedCounters::default()),
            Plumbing::new(1, 64),
            Instant::now(),
        );
        let mut now = 0u64;
        let mut injected = 0u64;
        while data.len() >= 3 {
            let ctl = data[0];
            let len = u16::from_be_bytes([data[1], data[2]]);
            if len & 0x8000 != 0 && next_gen < gens.len() {
                gen_tx
                    .try_send(gens[next_gen].clone())
                    .expect("one at a time");
                next_gen += 1;
            }
            let len = usize::from(len & 0x7fff) % 1600;
            data = &data[3..];
            let take = len.min(data.len());
            let mut frame = data[..take].to_vec();
            data = &data[take..];
            if ctl & 2 != 0 {
                csum::repair(&mut frame);
            }
            let valid = csum::verifies(&frame);
            now += u64::from(ctl >> 2) * 512;
            let before = *worker.counters();
            if wires[usize::from(ctl & 1)].inject(&frame) {
                injected += 1;
            }
            worker.poll_at(now as _);
            let after = *worker.counters();
            assert_eq!(
                after.rx_packets, injected,
                "a frame was lost or counted twice"
            );
            assert_eq!(
                verdicts(&after) - verdicts(&before),
                after.rx_packets - before.rx_packets,
                "each frame gets exactly one verdict: {before:?} -> {after:?}"
            );
            for w in &wires {
                for out in w.take_all() {
                    check_destination(&worker, &out);
                    if valid {
                        assert!(
                            csum::verifies(&out),
                            "a well-formed frame came out with a bad checksum:\n in {frame:02x?}\nout {out:02x?}"
                        );
                    }
                }
            }
            check_flows(&worker);
        }
        *worker.counters()
    }

    /// A TCP or UDP packet sluice sends on to a backend (its source is not
    /// one of sluice's VIPs: replies and answers come from a VIP) must go to
    /// an endpoint of the running generation that may carry flows.
    fn check_destination(worker: &Worker<QueuePort>, out: &[u8]) {
        let Some((l3, ihl, end)) = csum::ipv4_bounds(out) else {
            return;
        };
        let proto = out[l3 + 9];
        if !matches!(proto, 6 | 17) || end < l3 + ihl + 4 {
            return;
        }
        let src = Ipv4Addr::new(out[l3 + 12], out[l3 + 13], out[l3 + 14], out[l3 + 15]);
        if src == super::VIP || src == super::EMPTY_VIP {
            return;
        }
        let dst = u32::from_be_bytes([out[l3 + 16], out[l3 + 17], out[l3 + 18], out[l3 + 19]]);
        let dport = u16::from_be_bytes([out[l3 + ihl + 2], out[l3 + ihl + 3]]);
        let gen = worker.generation();
        let ok = gen.endpoints().any(|ep| {
            !ep.is_hole() && ep.addr == dst && ep.port == dport && ep.state.carries_flows()
        });
        assert!(
            ok,
            "sent to {}:{dport}, not a live endpoint of generation {}:\n{out:02x?}",
            Ipv4Addr::from(dst),
            gen.number
        );
    }

    fn check_flows(worker: &Worker<QueuePort>) {
        let table = worker.flow_table();
        let entries = table.iter().count();
        assert_eq!(table.len(), entries, "occupancy is not the entry count");
        assert!(entries <= table.capacity());
        let gen = worker.generation();
        for (_, _, e) in table.iter() {
            if u64::from(e.generation) != gen.number {
                continue;
            }
            assert!(
                (e.endpoint as usize) < gen.endpoint_count(),
                "entry points past the endpoints: {e:?}"
            );
            let ep = gen.endpoint(e.endpoint);
            assert!(!ep.is_hole(), "entry points at a deleted endpoint: {e:?}");
            assert_eq!(
                (ep.addr, ep.port),
                (e.backend_addr, e.backend_port),
                "entry and endpoint disagree: {e:?}"
            );
        }
    }
}

/// Every wire view's `new_checked` and getters on arbitrary bytes, and the
/// `Repr`s' parse -> emit -> parse round trips.
pub mod wire {
    use std::net::Ipv4Addr;

    use sluice::wire::arp::{ArpPacket, ArpRepr};
    use sluice::wire::ethernet::{EthernetFrame, EthernetRepr};
    use sluice::wire::icmp::{IcmpPacket, IcmpRepr};
    use sluice::wire::ipv4::{Ipv4Packet, Ipv4Repr};
    use sluice::wire::tcp::{TcpRepr, TcpSegment};
    use sluice::wire::udp::{UdpDatagram, UdpRepr};

    pub fn run(data: &[u8]) {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        if let Ok(f) = EthernetFrame::new_checked(data) {
            let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan_tci());
            let _ = (f.vlan_id(), f.header_len(), f.payload().len());
            if let Ok(r) = EthernetRepr::parse(&f) {
                let mut buf = vec![0u8; r.header_len()];
                r.emit(&mut buf).expect("room for the header");
                let again = EthernetRepr::parse(&EthernetFrame::new_checked(&buf[..]).unwrap());
                assert_eq!(again, Ok(r));
            }
        }
        if let Ok(p) = Ipv4Packet::new_checked(data) {
            let _ = (
                p.version(),
                p.header_len(),
                p.dscp_ecn(),
                p.total_len(),
                p.ident(),
            );
            let _ = (
                p.dont_fragment(),
                p.more_fragments(),
                p.frag_offset(),
                p.is_fragment(),
            );
            let _ = (
                p.ttl(),
                p.protocol(),
                p.checksum(),
                p.src_addr(),
                p.dst_addr(),
            );
            let _ = (
                p.header().len(),
                p.options().len(),
                p.payload().len(),
                p.verify_checksum(),
            );
            if let Ok(r) = Ipv4Repr::parse(&p) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut buf).expect("room");
                buf[r.header_len()..].copy_from_slice(p.payload());
                let again = Ipv4Repr::parse(&Ipv4Packet::new_checked(&buf[..]).unwrap());
                assert_eq!(again, Ok(r));
            }
        }
        if let Ok(s) = TcpSegment::new_checked(data) {
            let _ = (s.src_port(), s.dst_port(), s.seq_number(), s.ack_number());
            let _ = (
                s.header_len(),
                s.flags(),
                s.window(),
                s.checksum(),
                s.urgent(),
            );
            let _ = (s.options().len(), s.payload().len());
            if let Ok(r) = TcpRepr::parse(&s, src, dst) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut buf, src, dst, s.payload()).expect("room");
                let again = TcpRepr::parse(&TcpSegment::new_checked(&buf[..]).unwrap(), src, dst);
                assert_eq!(again, Ok(r));
            }
        }
        if let Ok(u) = UdpDatagram::new_checked(data) {
            let _ = (
                u.src_port(),
                u.dst_port(),
                u.length(),
                u.checksum(),
                u.payload().len(),
            );
            if let Ok(r) = UdpRepr::parse(&u, src, dst) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut buf, src, dst, u.payload()).expect("room");
                let again = UdpRepr::parse(&UdpDatagram::new_checked(&buf[..]).unwrap(), src, dst);
                assert_eq!(again, Ok(r));
            }
        }
        if let Ok(i) = IcmpPacket::new_checked(data) {
            let _ = (i.msg_type(), i.code(), i.checksum(), i.rest_of_header());
            let _ = (
                i.echo_ident(),
                i.echo_seq(),
                i.next_hop_mtu(),
                i.payload().len(),
            );
            let _ = (i.verify_checksum(), i.is_error());
            if let Ok(e) = i.embedded() {
                let _ = (e.header_len(), e.total_len(), e.frag_offset(), e.protocol());
                let _ = (e.checksum(), e.src_addr(), e.dst_addr(), e.header().len());
                let _ = (e.src_port(), e.dst_port(), e.verify_checksum());
            }
            if let Ok(r) = IcmpRepr::parse(&i) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut buf, i.payload()).expect("room");
                let again = IcmpRepr::parse(&IcmpPacket::new_checked(&buf[..]).unwrap());
                assert_eq!(again, Ok(r));
            }
        }
        if let Ok(a) = ArpPacket::new_checked(data) {
            let _ = (
                a.hardware_type(),
                a.protocol_type(),
                a.hardware_len(),
                a.protocol_len(),
            );
            let _ = (a.operation(), a.sender_hw_addr(), a.sender_proto_addr());
            let _ = (a.target_hw_addr(), a.target_proto_addr());
            if let Ok(r) = ArpRepr::parse(&a) {
                let mut buf = vec![0u8; r.buffer_len()];
                r.emit(&mut buf).expect("room");
                let again = ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap());
                assert_eq!(again, Ok(r));
            }
        }
    }
}

/// The control protocol: any line through the request decoder; a decoded
/// change applied to a store over a running data plane. A change that is
/// refused must leave the generation and the store as they were.
pub mod control {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use sluice::control::{Dataplane, Request, Store};
    use sluice::port::mem::{MemBuf, QueuePort};
    use sluice::service::{Generation, ServiceSpec};
    use sluice::worker::WorkerConfig;

    fn dataplane() -> &'static Mutex<Dataplane<MemBuf>> {
        static DP: OnceLock<Mutex<Dataplane<MemBuf>>> = OnceLock::new();
        DP.get_or_init(|| {
            let gen = Generation::build(1, &super::topology(), &super::services()).expect("valid");
            let ports = vec![QueuePort::new(16).0, QueuePort::new(16).0];
            Mutex::new(Dataplane::start(
                vec![(WorkerConfig::new(0, 1), ports)],
                gen,
            ))
        })
    }

    fn snapshot(store: &Store) -> Vec<ServiceSpec> {
        let mut v: Vec<ServiceSpec> = store.services().map(|s| (**s).clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn run(data: &[u8]) {
        let mut dp = dataplane().lock().unwrap_or_else(|p| p.into_inner());
        let specs = super::services().into_iter().map(Arc::new).collect();
        let Ok(mut store) = Store::new(super::topology(), specs) else {
            return;
        };
        store.set_publish_timeout(Duration::from_secs(5));
        for line in data.split(|&b| b == b'\n') {
            let Ok(req) = Request::decode(line) else {
                continue;
            };
            // What a client sends back must decode to the same request.
            let again = Request::decode(req.to_line().trim_end().as_bytes());
            assert_eq!(again.as_ref().ok(), Some(&req), "{}", req.to_line());
            if !req.is_mutation() {
                continue;
            }
            let number = dp.current().number;
            let before = snapshot(&store);
            let result = store.apply_batch(&mut dp, &[&req], Instant::now());
            if let Some(Err(e)) = result.first() {
                assert_eq!(
                    dp.current().number,
                    number,
                    "a refused change published: {e}"
                );
                assert_eq!(
                    snapshot(&store),
                    before,
                    "a refused change altered the store: {e}"
                );
            }
        }
    }
}

/// The configuration file: parser, validator and everything derived from
/// a valid file (timeouts, topology, services); errors, never panics.
pub mod config {
    use sluice::control::Config;

    pub fn run(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(c) = Config::parse(text) else {
            return;
        };
        if c.validate().is_ok() {
            let _ = c.timeouts();
            let _ = c.topology();
            let _ = c.services();
        }
    }
}

/// The flow snapshot file: the reader on arbitrary bytes; what it accepts
/// encodes back to bytes that read the same.
pub mod snapshot {
    use sluice::flow::save;

    pub fn run(data: &[u8]) {
        if let Ok(flows) = save::decode(data) {
            let again = save::decode(&save::encode(&flows)).expect("its own encoding reads");
            assert_eq!(again, flows);
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice::worker::DropReason;

    fn seed(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds/pipeline")
            .join(name);
        std::fs::read(path).expect("seed (cargo run --example seeds writes it)")
    }

    /// The rig reaches what the pipeline target claims to check: the
    /// generations seed forwards under the first generation, then packets
    /// of flows whose endpoint was removed or downed by a later one are
    /// refused or reset rather than sent on.
    #[test]
    fn generations_seed_reaches_removed_endpoints() {
        let c = super::pipeline::run(&seed("generations"));
        assert!(c.forwarded > 0, "{c:?}");
        let gone = c.drops[DropReason::BackendGone as usize] + c.resets;
        assert!(gone > 0, "nothing met a removed endpoint: {c:?}");
    }

    #[test]
    fn checksum_repair_verifies() {
        for name in ["syn", "data", "udp", "echo"] {
            let rec = seed(name);
            let mut frame = rec[3..].to_vec();
            assert!(super::csum::verifies(&frame), "{name}");
            let l3 = super::csum::ipv4_at(&frame).unwrap();
            frame[l3 + 10] ^= 0x55;
            assert!(!super::csum::verifies(&frame), "{name}");
            super::csum::repair(&mut frame);
            assert!(super::csum::verifies(&frame), "{name}");
        }
    }
}
