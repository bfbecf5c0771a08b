//! One EAL round trip through DPDK's `net_ring` virtual device, whose TX
//! queue i is the same ring as its RX queue i, so every sent mbuf comes back.
//!
//! One test per file: `rte_eal_init` succeeds once per process and cargo runs
//! each integration-test file as its own process.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;

use dpdk_sys::*;

const BURST: usize = 8;
const FRAME_LEN: u16 = 64;

fn errno_text() -> String {
    // SAFETY: rte_strerror returns a pointer to a static or per-lcore buffer
    // holding a NUL-terminated message; it is copied out at once.
    unsafe {
        let code = sluice_errno();
        format!(
            "{code}: {}",
            CStr::from_ptr(rte_strerror(code)).to_string_lossy()
        )
    }
}

fn eal_init(args: &[String]) {
    let owned: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).expect("test args have no NUL"))
        .collect();
    // EAL may permute argv, so it gets its own pointer array; the CStrings
    // stay alive (and unmodified) in `owned` for the whole process.
    let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = c_int::try_from(argv.len()).expect("few args");
    // SAFETY: argv holds argc valid NUL-terminated strings that outlive the
    // call; EAL is initialised exactly once in this process.
    let parsed = unsafe { rte_eal_init(argc, argv.as_mut_ptr()) };
    assert!(parsed >= 0, "rte_eal_init failed: {}", errno_text());
    std::mem::forget(owned);
}

#[test]
fn net_ring_loops_a_burst_back() {
    let args: Vec<String> = [
        "dpdk-sys-test",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "-l",
        "0",
        "--log-level",
        "lib.eal:warning",
        "--vdev",
        "net_ring0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "--file-prefix".to_owned(),
        format!("sluice-test-{}", std::process::id()),
    ])
    .collect();
    eal_init(&args);

    let name = CString::new("net_ring0").expect("no NUL");
    let mut port: u16 = 0;
    // SAFETY: name is NUL-terminated, port is a valid out-pointer.
    let rc = unsafe { rte_eth_dev_get_port_by_name(name.as_ptr(), &mut port) };
    assert_eq!(rc, 0, "net_ring0 was not probed");

    // SAFETY: no arguments; valid after EAL init.
    let socket = unsafe { sluice_socket_id() } as c_int;
    let pool_name = CString::new("dpdk_sys_test").expect("no NUL");
    // SAFETY: valid NUL-terminated name; sizes are within DPDK's limits.
    let pool = unsafe {
        rte_pktmbuf_pool_create(
            pool_name.as_ptr(),
            1023,
            32,
            0,
            SLUICE_MBUF_DEFAULT_BUF_SIZE,
            socket,
        )
    };
    assert!(!pool.is_null(), "mempool: {}", errno_text());

    let mut info = rte_eth_dev_info::default();
    // SAFETY: port is a probed port id, info a valid out-pointer.
    let rc = unsafe { rte_eth_dev_info_get(port, &mut info) };
    assert_eq!(rc, 0);
    assert!(info.max_rx_queues >= 1 && info.max_tx_queues >= 1);

    let conf = rte_eth_conf::default();
    // SAFETY: port is valid, conf is an initialised rte_eth_conf; the setup
    // calls follow DPDK's required order (configure, queues, start), and the
    // pool outlives the port.
    unsafe {
        assert_eq!(
            rte_eth_dev_configure(port, 1, 1, &conf),
            0,
            "configure: {}",
            errno_text()
        );
        assert_eq!(
            rte_eth_rx_queue_setup(port, 0, 256, socket as u32, ptr::null(), pool),
            0
        );
        assert_eq!(
            rte_eth_tx_queue_setup(port, 0, 256, socket as u32, ptr::null()),
            0
        );
        assert_eq!(rte_eth_dev_start(port), 0, "start: {}", errno_text());
    }

    let mut tx: [*mut rte_mbuf; BURST] = [ptr::null_mut(); BURST];
    // SAFETY: tx has room for BURST mbuf pointers; pool is a live pktmbuf pool.
    let rc = unsafe { sluice_pktmbuf_alloc_bulk(pool, tx.as_mut_ptr(), BURST as u32) };
    assert_eq!(rc, 0);
    for (i, &m) in tx.iter().enumerate() {
        // SAFETY: m is a freshly allocated, exclusively owned mbuf; append
        // returns either NULL or FRAME_LEN writable bytes inside its buffer.
        unsafe {
            assert_eq!(sluice_pktmbuf_data_len(m), 0);
            assert_eq!(sluice_pktmbuf_headroom(m), SLUICE_PKTMBUF_HEADROOM);
            let data = sluice_pktmbuf_append(m, FRAME_LEN);
            assert!(!data.is_null());
            let frame = std::slice::from_raw_parts_mut(data, usize::from(FRAME_LEN));
            for (j, b) in frame.iter_mut().enumerate() {
                *b = (i * 31 + j) as u8;
            }
            // Exercise the head/tail helpers: 4 bytes on, 4 bytes off, both ends.
            let head = sluice_pktmbuf_prepend(m, 4);
            assert!(!head.is_null());
            assert_eq!(sluice_pktmbuf_data_len(m), FRAME_LEN + 4);
            assert_eq!(sluice_pktmbuf_adj(m, 4), data);
            assert!(!sluice_pktmbuf_append(m, 4).is_null());
            assert_eq!(sluice_pktmbuf_trim(m, 4), 0);
            assert_eq!(sluice_pktmbuf_trim(m, FRAME_LEN + 1), -1);
            assert_eq!(sluice_pktmbuf_pkt_len(m), u32::from(FRAME_LEN));
            assert_eq!(sluice_pktmbuf_mtod(m), data);
        }
    }

    // SAFETY: tx holds BURST owned mbufs; ownership of the first `sent`
    // passes to the driver.
    let sent = usize::from(unsafe { sluice_eth_tx_burst(port, 0, tx.as_mut_ptr(), BURST as u16) });
    assert_eq!(sent, BURST, "net_ring has room for a whole burst");

    let mut rx: [*mut rte_mbuf; BURST] = [ptr::null_mut(); BURST];
    // SAFETY: rx has room for BURST pointers; we own what comes back.
    let got = usize::from(unsafe { sluice_eth_rx_burst(port, 0, rx.as_mut_ptr(), BURST as u16) });
    assert_eq!(got, BURST);
    for (i, &m) in rx[..got].iter().enumerate() {
        // SAFETY: m came from rx_burst, so it is a valid owned mbuf whose
        // first segment holds data_len readable bytes at mtod.
        unsafe {
            assert_eq!(sluice_pktmbuf_nb_segs(m), 1);
            let len = usize::from(sluice_pktmbuf_data_len(m));
            assert_eq!(len, usize::from(FRAME_LEN));
            let frame = std::slice::from_raw_parts(sluice_pktmbuf_mtod(m), len);
            for (j, &b) in frame.iter().enumerate() {
                assert_eq!(b, (i * 31 + j) as u8, "mbuf {i} byte {j}");
            }
            sluice_pktmbuf_free(m);
        }
    }

    // SAFETY: every mbuf went back to the pool, so the pool can be freed
    // after the port that referenced it is closed; EAL is torn down last.
    unsafe {
        assert_eq!(rte_mempool_in_use_count(pool), 0, "every mbuf returned");
        assert_eq!(rte_eth_dev_stop(port), 0);
        assert_eq!(rte_eth_dev_close(port), 0);
        rte_mempool_free(pool);
        assert_eq!(rte_eal_cleanup(), 0);
    }
}
