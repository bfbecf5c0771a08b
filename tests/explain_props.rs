//! `sluice ctl explain` is the data path's own decision in words: for random
//! traffic (handshakes, data, closes, resets, reused tuples, UDP) and random
//! endpoint changes (weights, draining, down, removed, emptied), the backend
//! explain names for a packet is the backend the worker forwards that very
//! packet to, and "none" is exactly when the client is refused.

mod common;

use common::*;
use proptest::prelude::*;
use sluice::control::query::explain_with;
use sluice::flow::FlowKey;
use sluice::service::{EndpointSpec, EndpointState, Protocol, ServiceSpec, VipKey};
use sluice::worker::FlowInfo;

#[derive(Clone, Debug)]
enum Event {
    Client { sport: u16, flags: u8, seq: u32 },
    Backend { b: u8, sport: u16, flags: u8 },
    Udp { sport: u16 },
    Publish(u8),
}

const FLAGS: [u8; 8] = [
    SYN,
    SYN,
    ACK,
    ACK | PSH,
    FIN | ACK,
    RST,
    RST | ACK,
    SYN | ACK,
];

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0u16..5, 0usize..FLAGS.len(), 0u32..3).prop_map(
            |(s, f, q)| Event::Client { sport: 3000 + s, flags: FLAGS[f], seq: q * 1000 }
        ),
        3 => (1u8..=4, 0u16..5, prop_oneof![Just(SYN | ACK), Just(ACK), Just(FIN | ACK), Just(RST)])
            .prop_map(|(b, s, flags)| Event::Backend { b, sport: 3000 + s, flags }),
        2 => (0u16..4).prop_map(|s| Event::Udp { sport: 4000 + s }),
        2 => (0u8..8).prop_map(Event::Publish),
    ]
}

fn specs(variant: u8) -> Vec<ServiceSpec> {
    use EndpointState::*;
    let ep = |i: u8| EndpointSpec::new(backend(i), 8080);
    let (tcp, udp) = match variant {
        0 => (vec![ep(1), ep(2), ep(3)], vec![ep(1), ep(2)]),
        1 => (
            vec![ep(1), ep(2).state(Draining), ep(3)],
            vec![ep(1).state(Draining), ep(2)],
        ),
        2 => (
            vec![ep(1), ep(2).state(Down), ep(3)],
            vec![ep(1), ep(2).state(Down)],
        ),
        3 => (vec![ep(1), ep(3)], vec![ep(2)]),
        4 => (
            vec![ep(1).weight(1), ep(2).weight(2), ep(3).weight(3)],
            vec![ep(1), ep(2)],
        ),
        5 => (vec![ep(1), ep(2), ep(3), ep(4)], vec![ep(1), ep(2), ep(3)]),
        6 => (
            vec![ep(1).state(Draining), ep(2).state(Draining)],
            vec![ep(1).state(Draining)],
        ),
        _ => (vec![], vec![]),
    };
    let mut u = ServiceSpec::new("dns", VIP, 80, Protocol::Udp);
    u.endpoints = udp;
    vec![service(Protocol::Tcp, &tcp), u]
}

/// What explain says for the packet `frame` of flow `key`.
fn explained(rig: &Rig, key: &FlowKey, syn: bool) -> Option<std::net::SocketAddrV4> {
    let w = &rig.workers[0];
    let g = w.generation();
    let svc = g
        .service_for(&VipKey {
            addr: key.vip_addr,
            port: key.vip_port,
            proto: key.proto,
        })
        .expect("a service");
    let info = w.flow_entry(key).map(|e| FlowInfo::new(0, key, &e, 0));
    explain_with(g, svc, key, info.as_ref(), syn, 1).backend
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn explain_names_the_backend_the_data_path_forwards_to(
        events in proptest::collection::vec(event(), 1..120)
    ) {
        let mut rig = Rig::new(1, &specs(0));
        let mut isn = std::collections::HashMap::new();
        for (i, e) in events.iter().enumerate() {
            let (frame, key, syn, tcp, rst) = match *e {
                Event::Publish(v) => {
                    rig.publish(&specs(v));
                    rig.poll_all();
                    continue;
                }
                Event::Backend { b, sport, flags } => {
                    rig.send(1, &from_backend(b, sport, flags, 5, 1));
                    continue;
                }
                Event::Client { sport, flags, seq } => {
                    let syn = flags == SYN;
                    let key = FlowKey::new(CLIENT, sport, VIP, 80, 6);
                    // explain explains a new connection's SYN; a SYN that
                    // retransmits the entry's ISN is the retransmission case,
                    // which keeps its entry by design: give SYNs a fresh ISN.
                    let seq = if syn {
                        let n = isn.entry(sport).or_insert(seq);
                        *n = n.wrapping_add(7919);
                        *n
                    } else {
                        seq
                    };
                    (from_client(sport, flags, seq, 1), key, syn, true, flags & RST != 0)
                }
                Event::Udp { sport } => (
                    udp_frame(CLIENT, sport, VIP, 80, b"q"),
                    FlowKey::new(CLIENT, sport, VIP, 80, 17),
                    false,
                    false,
                    false,
                ),
            };
            let want = explained(&rig, &key, syn);
            let out: Vec<_> = rig.send(0, &frame).into_iter().filter(|(_, f)| !is_arp(f)).collect();
            match want {
                Some(b) => {
                    prop_assert_eq!(out.len(), 1, "event {}: {:?}", i, e);
                    prop_assert_eq!(out[0].0, 1, "event {}: forwarded to the backend side", i);
                    let s = inspect(&out[0].1);
                    prop_assert_eq!((s.dst, s.dport), (*b.ip(), b.port()), "event {}: {:?}", i, e);
                }
                None => {
                    // Refused: a TCP client gets a RST, a UDP one an ICMP
                    // error, a RST nothing; never a backend.
                    let expect = usize::from(!rst);
                    prop_assert_eq!(out.len(), expect, "event {}: {:?} {:?}", i, e, out);
                    if let Some((port, f)) = out.first() {
                        prop_assert_eq!(*port, 0);
                        let c = common::oracle::check_ipv4(f).expect("valid answer");
                        prop_assert_eq!(c.proto, if tcp { 6 } else { 1 });
                    }
                }
            }
        }
    }
}
