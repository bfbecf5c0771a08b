//! The DPDK backend through the `Port` trait, on DPDK's `net_ring` virtual
//! device (TX queue i is RX queue i's ring, so sent frames come back) and
//! `net_null` (RX makes frames out of nothing).
//!
//! One test function: the EAL initialises once per process, and the steps
//! share it in a fixed order.
#![cfg(feature = "dpdk")]

use sluice::port::dpdk::{DeviceConfig, DpdkDevice, DpdkError, DpdkPort, Eal, Mbuf, RssConfig};
use sluice::port::{PacketBuf, Port, HEADROOM};

const FRAME_LEN: usize = 60;

fn eal_args() -> Vec<String> {
    [
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "-l",
        "0",
        "--log-level",
        "*:error",
        "--vdev",
        "net_ring0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "--file-prefix".to_owned(),
        format!("sluice-port-test-{}", std::process::id()),
    ])
    .collect()
}

/// The CPUs the calling thread may run on, as /proc shows them.
fn thread_cpus() -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .expect("read /proc/thread-self/status")
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| {
            l.trim_start_matches("Cpus_allowed_list:")
                .trim()
                .to_string()
        })
        .expect("Cpus_allowed_list")
}

/// A frame whose every byte says which frame and offset it is.
fn fill(buf: &mut Mbuf, tag: u8) {
    let data = buf
        .extend(FRAME_LEN)
        .expect("a fresh mbuf has room for a small frame");
    for (i, b) in data.iter_mut().enumerate() {
        *b = tag.wrapping_mul(37).wrapping_add(i as u8);
    }
}

fn expected(tag: u8) -> Vec<u8> {
    (0..FRAME_LEN)
        .map(|i| tag.wrapping_mul(37).wrapping_add(i as u8))
        .collect()
}

#[test]
fn dpdk_port_round_trips_frames_through_net_ring() {
    let args = eal_args();
    let cpus_before = thread_cpus();
    let eal = Eal::init(&args).expect("EAL init with --no-huge");
    // EAL pinned this thread to its main lcore (`-l 0`); sluice puts the
    // thread's CPUs back, or every thread it starts would share CPU 0.
    assert_eq!(thread_cpus(), cpus_before, "the EAL left the caller pinned");
    // Once per process: the same arguments give the running EAL back,
    // different ones are refused with an explanation.
    assert!(Eal::init(&args).is_ok());
    assert!(Eal::running().is_some());
    assert_eq!(eal.args(), args.as_slice());
    let mut other = args.clone();
    other.push("--in-memory".to_owned());
    match Eal::init(&other) {
        Err(DpdkError::EalAlreadyInitialised { .. }) => {}
        res => panic!("second init with other arguments: {res:?}"),
    }

    let config = DeviceConfig {
        queues: 2,
        rx_descriptors: 256,
        tx_descriptors: 256,
        mbufs: 2047,
        mbuf_cache: 32,
        ..DeviceConfig::default()
    };
    let device = DpdkDevice::open(&eal, "net_ring0", &config).expect("open net_ring0");
    assert_eq!(device.queues(), 2);
    // net_ring hashes nothing, so RSS stays off whatever was asked.
    assert_eq!(device.rss().supported, 0);
    assert!(!device.rss().is_enabled());
    assert!(device.link_up(), "net_ring reports link up once started");
    assert!(matches!(
        DpdkDevice::open(&eal, "net_ring0", &config),
        Err(DpdkError::DeviceBusy { .. })
    ));
    assert!(matches!(
        DpdkDevice::open(&eal, "no_such_port", &config),
        Err(DpdkError::DeviceNotFound { .. })
    ));

    let mut port0 = device.port(0).expect("queue 0");
    assert!(matches!(
        device.port(0),
        Err(DpdkError::QueueTaken { queue: 0, .. })
    ));
    assert!(matches!(
        device.port(2),
        Err(DpdkError::QueueOutOfRange {
            queue: 2,
            queues: 2
        })
    ));

    // Buffer operations over the mbuf's data area.
    let mut buf = port0.alloc().expect("pool has mbufs");
    assert!(buf.is_empty());
    assert!(buf.headroom() >= HEADROOM);
    fill(&mut buf, 1);
    assert_eq!(buf.len(), FRAME_LEN);
    let room = buf.headroom();
    buf.prepend(4)
        .expect("headroom")
        .copy_from_slice(&[0xaa; 4]);
    assert_eq!(buf.headroom(), room - 4);
    assert_eq!(&buf.data()[..5], &[0xaa, 0xaa, 0xaa, 0xaa, expected(1)[0]]);
    assert!(
        buf.prepend(room).is_none(),
        "cannot prepend past the buffer start"
    );
    buf.truncate(10);
    assert_eq!(buf.len(), 10);
    buf.truncate(1000);
    assert_eq!(buf.len(), 10, "truncate never grows");
    assert!(buf.extend(1 << 20).is_none());
    buf.data_mut()[0] = 0x55;
    assert_eq!(buf.data()[0], 0x55);
    port0.free(buf);

    // Round trip on queue 0: alloc, write, tx, rx, compare, free.
    let mut tx: Vec<Mbuf> = Vec::with_capacity(64);
    let mut rx: Vec<Mbuf> = Vec::with_capacity(64);
    for tag in 0..32u8 {
        let mut buf = port0.alloc().expect("pool has mbufs");
        fill(&mut buf, tag);
        tx.push(buf);
    }
    assert_eq!(port0.tx_burst(&mut tx), 32);
    assert!(tx.is_empty(), "accepted frames leave the Vec");
    assert_eq!(port0.rx_burst(&mut rx, 64), 32);
    for (tag, buf) in rx.iter().enumerate() {
        assert_eq!(buf.data(), expected(tag as u8).as_slice(), "frame {tag}");
        assert!(buf.headroom() >= HEADROOM);
        assert_eq!(buf.rss_hash(), None, "net_ring stores no hash");
    }
    rx.drain(..).for_each(|buf| port0.free(buf));
    assert_eq!(port0.rx_burst(&mut rx, 64), 0);

    let stats = port0.stats();
    assert_eq!((stats.tx_packets, stats.rx_packets), (32, 32));
    assert_eq!(
        (stats.tx_bytes, stats.rx_bytes),
        (32 * FRAME_LEN as u64, 32 * FRAME_LEN as u64)
    );
    assert_eq!(stats.tx_full, 0);

    // Queue 1 on a worker thread: it registers itself as an lcore on its
    // first burst and its frames stay on queue 1.
    let port1 = device.port(1).expect("queue 1");
    let (port1, lcore) = std::thread::spawn(move || {
        let mut port1: DpdkPort = port1;
        let mut tx = Vec::with_capacity(8);
        for tag in 100..108u8 {
            let mut buf = port1.alloc().expect("pool has mbufs");
            fill(&mut buf, tag);
            tx.push(buf);
        }
        let lcore = DpdkPort::register_thread().expect("registered by alloc already");
        assert_eq!(port1.tx_burst(&mut tx), 8);
        let mut rx = Vec::with_capacity(8);
        assert_eq!(port1.rx_burst(&mut rx, 8), 8);
        for (i, buf) in rx.iter().enumerate() {
            assert_eq!(buf.data(), expected(100 + i as u8).as_slice());
        }
        (port1, lcore)
    })
    .join()
    .expect("worker thread");
    assert_ne!(lcore, u32::MAX, "the worker got a real lcore id");
    assert_eq!(
        port0.rx_burst(&mut rx, 64),
        0,
        "queue 1's frames did not leak to queue 0"
    );
    drop(port1);

    // A full TX ring: refused frames stay with the caller and are counted.
    let mut sent = 0;
    for round in 0..64 {
        for tag in 0..32u8 {
            match port0.alloc() {
                Some(mut buf) => {
                    fill(&mut buf, tag);
                    tx.push(buf);
                }
                None => break,
            }
        }
        sent += port0.tx_burst(&mut tx);
        if !tx.is_empty() {
            assert!(round > 0, "the ring takes at least one burst");
            break;
        }
    }
    assert!(!tx.is_empty(), "net_ring's ring filled up");
    assert_eq!(port0.stats().tx_full, tx.len() as u64);
    tx.drain(..).for_each(|buf| port0.free(buf));
    let mut drained = 0;
    loop {
        let got = port0.rx_burst(&mut rx, 64);
        rx.drain(..).for_each(|buf| port0.free(buf));
        if got == 0 {
            break;
        }
        drained += got;
    }
    assert_eq!(drained, sent);

    let xstats = device.xstats().expect("xstats");
    let get = |name: &str| xstats.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
    assert_eq!(get("tx_good_packets"), Some(32 + 8 + sent as u64));
    let device_stats = device.stats().expect("stats");
    assert_eq!(device_stats.tx_packets, 32 + 8 + sent as u64);

    // A virtual device created from its arguments at open time.
    let null_config = DeviceConfig {
        queues: 1,
        rss: RssConfig::OFF,
        ..config
    };
    let null = DpdkDevice::open(&eal, "net_null0,size=64", &null_config).expect("net_null vdev");
    let mut null_port = null.port(0).expect("queue 0");
    let mut frames = Vec::with_capacity(16);
    assert_eq!(
        null_port.rx_burst(&mut frames, 16),
        16,
        "net_null always has frames"
    );
    assert!(frames.iter().all(|f| f.len() == 64));
    frames.drain(..).for_each(|f| null_port.free(f));

    drop(port0);
    drop(null_port);
    drop(null);
    drop(device);
}
