//! Workers on their own threads: generations published and acknowledged,
//! flows and per-endpoint counters queried while they run.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice::control::Dataplane;
use sluice::flow::FlowKey;
use sluice::port::mem::{MemBuf, QueuePort};
use sluice::service::{EndpointState, Generation, Protocol};
use sluice::worker::WorkerConfig;

const T: Duration = Duration::from_secs(5);

fn start(workers: u32) -> (Dataplane<MemBuf>, Vec<Vec<sluice::port::mem::MemWire>>) {
    let gen =
        Generation::build(1, &topology(), &[service(Protocol::Tcp, &eps(&[1, 1, 1]))]).unwrap();
    let mut wires = vec![];
    let ws = (0..workers)
        .map(|i| {
            let (p0, w0) = QueuePort::new(4096);
            let (p1, w1) = QueuePort::new(4096);
            wires.push(vec![w0, w1]);
            let mut c = WorkerConfig::new(i, workers);
            c.flow_capacity = 1 << 14;
            (c, vec![p0, p1])
        })
        .collect();
    (Dataplane::start(ws, gen), wires)
}

/// Collects `n` frames from the wires of every worker on `port`.
fn collect(wires: &[Vec<sluice::port::mem::MemWire>], port: usize, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + T;
    let mut out = vec![];
    while out.len() < n && Instant::now() < deadline {
        for w in wires {
            out.extend(w[port].take_all());
        }
        std::thread::yield_now();
    }
    out
}

#[test]
fn generations_are_acknowledged_and_flows_and_endpoint_counters_are_queryable() {
    let (mut dp, wires) = start(2);
    for i in 0..100u16 {
        let w = sluice::hash::owner_worker(u32::from(CLIENT), 45000 + i, 2) as usize;
        assert!(wires[w][0].inject(&from_client(45000 + i, SYN, 1, 0)));
    }
    let out = collect(&wires, 1, 100);
    assert_eq!(out.len(), 100);

    let key = FlowKey::new(CLIENT, 45007, VIP, 80, 6);
    let info = dp
        .lookup_flow(key, T)
        .unwrap()
        .expect("flow known to its owner");
    assert_eq!(info.client.port(), 45007);
    assert_eq!(info.backend.port(), 8080);
    assert_eq!(dp.dump_flows(1000, T).unwrap().len(), 100);
    assert_eq!(dp.dump_flows(7, T).unwrap().len(), 7);

    let stats = dp.endpoint_stats(T).unwrap();
    assert_eq!(stats.len(), 3);
    let flows: u64 = stats.iter().map(|s| s.counters.active_flows).sum();
    let created: u64 = stats.iter().map(|s| s.counters.flows_created).sum();
    let pkts: u64 = stats.iter().map(|s| s.counters.packets_in).sum();
    assert_eq!((flows, created, pkts), (100, 100, 100));
    assert!(
        stats.iter().all(|s| s.counters.active_flows > 10),
        "{stats:?}"
    );

    // Drain backend 1: counters follow the endpoint across the generation.
    let mut list = eps(&[1, 1, 1]);
    list[0].state = EndpointState::Draining;
    let g = Generation::build(2, &topology(), &[service(Protocol::Tcp, &list)]).unwrap();
    let took = dp.publish(g, T).unwrap();
    assert!(took < T);
    let after = dp.endpoint_stats(T).unwrap();
    assert_eq!(after, stats, "counters carried over by endpoint identity");

    // Remove it: its flows are reset on their next packet, its counters go.
    list.remove(0);
    let g = Generation::build(3, &topology(), &[service(Protocol::Tcp, &list)]).unwrap();
    dp.publish(g, T).unwrap();
    assert_eq!(dp.endpoint_stats(T).unwrap().len(), 2);
    let stale = Generation::build(3, &topology(), &[]).unwrap();
    assert!(
        dp.publish(stale, T).is_err(),
        "generation numbers only go up"
    );
    let c = dp.stop();
    assert_eq!(c.iter().map(|c| c.forwarded).sum::<u64>(), 100);
}

#[test]
fn arp_is_punted_to_control_and_control_frames_are_sent_by_a_worker() {
    use sluice::control::arp::{ArpLink, ArpTimers, Neighbors};
    let (dp, wires) = start(1);
    let mut nb = Neighbors::new(
        vec![ArpLink {
            mac: CLIENT_LINK_MAC,
            addr: std::net::Ipv4Addr::new(10, 200, 1, 254),
            prefix_len: 24,
        }],
        ArpTimers::default(),
    );
    nb.set_vips([VIP]);
    // A client asks who has the VIP.
    let mut req = vec![0u8; 60];
    req[..6].copy_from_slice(&[0xff; 6]);
    req[6..12].copy_from_slice(&GATEWAY_MAC.0);
    req[12..14].copy_from_slice(&[0x08, 0x06]);
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&GATEWAY_MAC.0);
    req[28..32].copy_from_slice(&GATEWAY.octets());
    req[38..42].copy_from_slice(&VIP.octets());
    assert!(wires[0][0].inject(&req));
    let deadline = Instant::now() + T;
    let punted = loop {
        if let Some(p) = dp.take_punted() {
            break p;
        }
        assert!(Instant::now() < deadline, "ARP was not punted");
        std::thread::yield_now();
    };
    assert_eq!(punted.0, 0);
    let (reply, _) = nb.on_frame(punted.0, &punted.1, Duration::ZERO);
    let reply = reply.expect("the VIP is ours");
    assert!(dp.inject(0, reply.port, reply.frame.clone()));
    let out = collect(&wires, 0, 1);
    assert_eq!(out, vec![reply.frame]);
    assert_eq!(&out[0][..6], &GATEWAY_MAC.0);
    dp.stop();
}
