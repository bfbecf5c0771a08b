//! An idle worker sleeps on events, not on a timer: a frame, a handed-over
//! packet, a generation or a stop wakes it within a scheduler wake-up. The
//! workers run on their own threads over in-memory ports whose wire rings
//! the port's receive event, under a back-off whose fixed nap (1 s) would
//! show in every figure if anything waited for it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice::control::Dataplane;
use sluice::port::mem::{MemBuf, MemWire, QueuePort};
use sluice::service::{Generation, Protocol};
use sluice::worker::{IdlePolicy, WorkerConfig};

/// Longer than any wake-up here may take: the nap a timer-driven worker
/// would sleep between polls.
const NAP_US: u32 = 1_000_000;

fn start(workers: u32) -> (Dataplane<MemBuf>, Vec<Vec<MemWire>>) {
    let gen = Generation::build(1, &topology(), &[service(Protocol::Udp, &eps(&[1, 1]))]).unwrap();
    let mut wires = vec![];
    let ws = (0..workers)
        .map(|i| {
            let (p0, w0) = QueuePort::new(1024);
            let (p1, w1) = QueuePort::new(1024);
            wires.push(vec![w0, w1]);
            let mut c = WorkerConfig::new(i, workers);
            c.flow_capacity = 1 << 12;
            c.idle = IdlePolicy::Backoff {
                spin_polls: 50,
                sleep_us: NAP_US,
            };
            (c, vec![p0, p1])
        })
        .collect();
    (Dataplane::start(ws, gen), wires)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits for one frame on `wire`, up to 5 s; when it came (to within
/// 20 us). It naps rather than spins: the worker is woken from this thread
/// and the scheduler tends to run it on this thread's CPU, where a spinning
/// waiter would hold it off until the next scheduler tick (4 ms at HZ=250),
/// which is what this test would then measure.
fn first_frame(wire: &MemWire) -> Instant {
    sluice::port::wait::set_timer_slack(Duration::from_micros(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if wire.take().is_some() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "no frame forwarded within 5 s");
        std::thread::sleep(Duration::from_micros(20));
    }
}

#[test]
fn a_frame_wakes_a_sleeping_worker_at_once() {
    let (dp, wires) = start(1);
    let mut waits = vec![];
    for i in 0..25u16 {
        // Long enough for the worker to spin out and sleep.
        std::thread::sleep(Duration::from_millis(20));
        let sent = Instant::now();
        assert!(wires[0][0].inject(&udp_frame(CLIENT, 40000 + i, VIP, 80, b"x")));
        waits.push(first_frame(&wires[0][1]) - sent);
    }
    let c = dp.counters()[0];
    dp.stop();
    let m = median(waits);
    println!("frame -> forwarded after a sleep: median {m:?}");
    // Woken by the event, not by the nap (0.5 s median). How fast is the
    // latency benchmark's to say (scripts/bench_latency.sh): a bound of a
    // few milliseconds here would fail on a loaded machine.
    assert!(m < Duration::from_millis(100), "median wake-up {m:?}");
    assert!(c.idle_polls > 0);
}

#[test]
fn a_handed_over_packet_wakes_its_sleeping_owner() {
    let (dp, wires) = start(2);
    let mut waits = vec![];
    let mut sport = 40000u16;
    for _ in 0..20 {
        // A flow owned by worker 1, delivered to worker 0's port.
        while sluice::hash::owner_worker(u32::from(CLIENT), sport, 2) != 1 {
            sport += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
        let sent = Instant::now();
        assert!(wires[0][0].inject(&udp_frame(CLIENT, sport, VIP, 80, b"x")));
        waits.push(first_frame(&wires[1][1]) - sent);
        sport += 1;
    }
    let c = dp.counters();
    dp.stop();
    assert_eq!(c[0].handoffs_out, 20);
    let m = median(waits);
    println!("frame -> handed over -> forwarded: median {m:?}");
    assert!(m < Duration::from_millis(100), "median wake-up {m:?}");
}

#[test]
fn generations_and_stop_wake_sleeping_workers() {
    let (mut dp, _wires) = start(2);
    let mut waits = vec![];
    for n in 2..12u64 {
        std::thread::sleep(Duration::from_millis(20));
        let g =
            Generation::build(n, &topology(), &[service(Protocol::Udp, &eps(&[1, 1]))]).unwrap();
        waits.push(dp.publish(g, Duration::from_secs(5)).expect("applied"));
    }
    let m = median(waits);
    println!("publish -> every sleeping worker runs it: median {m:?}");
    assert!(m < Duration::from_millis(100), "median {m:?}");
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    dp.stop();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "stop took {:?}",
        t.elapsed()
    );
}
