//! The fast path (mid-flow packets of known flows, one pass) is an
//! optimisation, never a second opinion: the same traffic through a worker
//! with it and one without gives the same frames, byte for byte, and the
//! same counters, whatever the mix of handshakes, closes, resets, reused
//! tuples, TTL expiry, replies and endpoint changes in between.

mod common;

use common::*;
use proptest::prelude::*;
use sluice::service::{EndpointSpec, EndpointState, Protocol, ServiceSpec};

#[derive(Clone, Debug)]
enum Event {
    Client {
        sport: u16,
        flags: u8,
        seq: u32,
        ttl1: bool,
    },
    Backend {
        b: u8,
        sport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
    },
    Publish(u8),
    Poll,
}

const FLAGS: [u8; 7] = [0x02, 0x10, 0x18, 0x11, 0x04, 0x12, 0x14];

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (0u16..6, 0usize..FLAGS.len(), 0u32..3, proptest::bool::weighted(0.05)).prop_map(
            |(s, f, q, ttl1)| Event::Client { sport: 1000 + s, flags: FLAGS[f], seq: q * 1000, ttl1 }
        ),
        3 => (1u8..=4, 0u16..6, 0usize..FLAGS.len())
            .prop_map(|(b, s, f)| Event::Backend { b, sport: 1000 + s, flags: FLAGS[f] }),
        1 => (0u16..4).prop_map(|s| Event::Udp { sport: 2000 + s }),
        1 => (0u8..6).prop_map(Event::Publish),
        3 => Just(Event::Poll),
    ]
}

fn specs(variant: u8) -> Vec<ServiceSpec> {
    use EndpointState::*;
    let ep = |i: u8| EndpointSpec::new(backend(i), 8080);
    let tcp_eps = match variant {
        0 => vec![ep(1), ep(2), ep(3)],
        1 => vec![ep(1), ep(2).state(Draining), ep(3)],
        2 => vec![ep(1), ep(2).state(Down), ep(3)],
        3 => vec![ep(1), ep(3)],
        4 => vec![ep(1).weight(1), ep(2).weight(2), ep(3).weight(3)],
        _ => vec![ep(1), ep(2), ep(3), ep(4)],
    };
    let mut udp = ServiceSpec::new("dns", VIP, 80, Protocol::Udp);
    udp.endpoints = vec![ep(1), ep(2)];
    vec![service(Protocol::Tcp, &tcp_eps), udp]
}

fn frame(e: &Event) -> Option<(usize, Vec<u8>)> {
    match *e {
        Event::Client {
            sport,
            flags,
            seq,
            ttl1,
        } => {
            let mut f = from_client(sport, flags, seq, 1);
            if ttl1 {
                f[22] = 1;
            }
            Some((0, f))
        }
        Event::Backend { b, sport, flags } => {
            Some((1, from_backend(b, sport, flags, 5, seq_ack(flags))))
        }
        Event::Udp { sport } => Some((0, udp_frame(CLIENT, sport, VIP, 80, b"query"))),
        _ => None,
    }
}

fn seq_ack(flags: u8) -> u32 {
    u32::from(flags) * 7
}

/// Runs `events` through a worker with the fast path and one without, both
/// with flow tables of `capacity` slots, and requires the same frames after
/// every poll and the same counters and occupancy at the end.
fn agree(events: &[Event], capacity: usize) -> Result<(), TestCaseError> {
    let mut fast = Rig::with_config(1, &specs(0), capacity, |_| {});
    let mut general = Rig::with_config(1, &specs(0), capacity, |c| c.fast_path = false);
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Publish(v) => {
                // Workers take generations at their next poll; polling
                // here keeps the rig's bounded channel from filling.
                fast.publish(&specs(*v));
                general.publish(&specs(*v));
                prop_assert_eq!(fast.poll_all(), general.poll_all(), "after event {}", i);
            }
            Event::Poll => {
                prop_assert_eq!(fast.poll_all(), general.poll_all(), "after event {}", i);
            }
            e => {
                let (port, f) = frame(e).expect("a packet event");
                prop_assert!(fast.wires[0][port].inject(&f));
                prop_assert!(general.wires[0][port].inject(&f));
            }
        }
    }
    prop_assert_eq!(fast.poll_all(), general.poll_all());
    prop_assert_eq!(fast.counters(0), general.counters(0));
    prop_assert_eq!(
        fast.workers[0].flow_count(),
        general.workers[0].flow_count()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Tables small enough to stay in cache: the fast path looks each
    /// packet up on its own.
    #[test]
    fn fast_and_general_paths_agree(events in proptest::collection::vec(event(), 1..160)) {
        agree(&events, 1 << 12)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Tables of 2^17 slots and more (the production default is 2^20): a
    /// burst's flows are looked up together in a first pass, whose answers
    /// hold only until a packet of the burst changes the table. Bursts
    /// here mix handshakes, closes, replies and generation switches so
    /// that the first pass's answers go stale within a burst.
    #[test]
    fn fast_and_general_paths_agree_on_batched_lookups(
        events in proptest::collection::vec(event(), 1..240)
    ) {
        agree(&events, 1 << 17)?;
    }
}
