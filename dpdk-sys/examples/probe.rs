//! Prints what each DPDK port can do, RSS above all.
//!
//! `cargo run -p dpdk-sys --example probe -- --no-huge -m 512 --no-pci \
//!     --vdev net_af_packet0,iface=lo --vdev net_ring0`
//!
//! Arguments are EAL arguments; a unique --file-prefix is added.

use std::ffi::{c_char, c_int, CStr, CString};

use dpdk_sys::*;

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    args.push("--file-prefix".to_owned());
    args.push(format!("sluice-probe-{}", std::process::id()));
    let owned: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).expect("argument without NUL"))
        .collect();
    let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = c_int::try_from(argv.len()).expect("few arguments");
    // SAFETY: argv points at argc NUL-terminated strings kept alive in
    // `owned` until the process exits; EAL is initialised once.
    let rc = unsafe { rte_eal_init(argc, argv.as_mut_ptr()) };
    if rc < 0 {
        // SAFETY: rte_strerror returns a NUL-terminated static message.
        let msg = unsafe { CStr::from_ptr(rte_strerror(sluice_errno())) };
        eprintln!("rte_eal_init failed: {}", msg.to_string_lossy());
        std::process::exit(1);
    }
    for port in 0..RTE_MAX_ETHPORTS as u16 {
        // SAFETY: any port id may be asked about.
        if unsafe { rte_eth_dev_is_valid_port(port) } == 0 {
            continue;
        }
        let mut info = rte_eth_dev_info::default();
        // SAFETY: port is valid; info is an out-pointer.
        if unsafe { rte_eth_dev_info_get(port, &mut info) } != 0 {
            println!("port {port}: rte_eth_dev_info_get failed");
            continue;
        }
        let mut name = [0 as c_char; 64];
        // SAFETY: name has room for RTE_ETH_NAME_MAX_LEN (64) bytes.
        unsafe { rte_eth_dev_get_name_by_port(port, name.as_mut_ptr()) };
        // SAFETY: both strings are NUL-terminated (the driver name is static).
        let (name, driver) = unsafe {
            (
                CStr::from_ptr(name.as_ptr()),
                CStr::from_ptr(info.driver_name),
            )
        };
        println!(
            "port {port} {} (driver {}): max queues rx {} tx {}, flow_type_rss_offloads {:#x}, \
             hash_key_size {}, reta_size {}, rx RSS_HASH offload {}",
            name.to_string_lossy(),
            driver.to_string_lossy(),
            info.max_rx_queues,
            info.max_tx_queues,
            info.flow_type_rss_offloads,
            info.hash_key_size,
            info.reta_size,
            info.rx_offload_capa & SLUICE_ETH_RX_OFFLOAD_RSS_HASH != 0,
        );
    }
    // SAFETY: no DPDK object is in use any more.
    unsafe { rte_eal_cleanup() };
}
