//! The DPDK backend (cargo feature `dpdk`): real NICs bound to vfio-pci with
//! hugepages, or DPDK's virtual devices (`net_af_packet`, `net_af_xdp`,
//! `net_tap`, `net_pcap`, `net_ring`, `net_null`).
//!
//! Three layers, each owning what it sets up:
//! - [`Eal`]: proof that the Environment Abstraction Layer is running. DPDK
//!   initialises once per process, so [`Eal::init`] runs `rte_eal_init` at
//!   most once and later calls get the same handle (or an error when the
//!   arguments differ).
//! - [`DpdkDevice`]: one ethdev port, configured with one RX and one TX queue
//!   per worker, one mbuf pool on the port's NUMA socket, and RSS with the
//!   symmetric key when the device can hash.
//! - [`DpdkPort`]: one worker's queue pair, implementing [`Port`](super::Port); its
//!   buffers are [`Mbuf`]s, lent to the worker without a copy.
//!
//! # RSS on virtual devices
//! What a PMD can hash is what it advertises in
//! `rte_eth_dev_info.flow_type_rss_offloads`; [`DpdkDevice::rss`] reports it
//! and the hash types actually enabled. Queried on DPDK 22.11.11 (Debian 12)
//! with `cargo run -p dpdk-sys --example probe`:
//! - `net_ring`, `net_pcap`: 0, no RSS (`net_ring` has up to 16 queue pairs,
//!   queue i looping TX to RX; `net_pcap` one).
//! - `net_af_packet`: 0, and as many queues as its `qpairs=` argument. Its
//!   queues are sockets in one `PACKET_FANOUT` hash group (from the PMD and
//!   kernel sources, not measured here): the kernel spreads flows by its
//!   symmetric flow hash, so both directions of an un-NATed flow share a
//!   queue, but the hash is not Toeplitz and no key can steer it.
//! - `net_af_xdp`: 0, one queue unless `queue_count=` says more; queues are
//!   the NIC's own, so the kernel driver's RSS (`ethtool -X`) places flows.
//! - `net_null`: advertises `0x2003ffffc` (IPv4/IPv6/TCP/UDP/SCTP...) with a
//!   128-entry RETA but no key and computes no hash: RSS "enables" and does
//!   nothing.
//! - `net_tap`: advertises `0x3afbc` with a 40-byte key, but hashes through
//!   an eBPF program attached by `rte_flow` RSS rules, which needs the
//!   `multiq` qdisc (missing on this kernel, where tap disables rte_flow).
//!
//! That is why sluice never trusts queue placement for correctness: a packet
//! that reaches a worker other than its flow's owner is handed over in
//! software (see DESIGN.md), and RSS only saves that hop.
//!
//! # Threads
//! Workers are ordinary threads, not EAL lcores. DPDK gives such a thread no
//! per-lcore mempool cache, so every mbuf alloc and free would take the
//! shared ring. [`DpdkPort::register_thread`] makes the calling thread an
//! lcore (`rte_thread_register`) and releases the id when the thread exits;
//! `rx_burst` and `alloc` call it lazily, so a worker that forgets still gets
//! the cache from its first burst on.
//!
//! # Lifetimes
//! Mempools are never freed: an [`Mbuf`] may outlive the device it came
//! from (a worker still holding a frame at shutdown), and freeing its pool
//! under it would be a use-after-free. Reopening a device reuses its pool;
//! the memory goes back to the system when the process exits.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

use dpdk_sys as sys;

use super::HEADROOM;

mod device;
mod queue;
mod relink;
pub mod rss;
mod wake;
mod xdp;

pub use device::{DeviceConfig, DeviceStats, DpdkDevice, LinkStatus, RssConfig, RssKey, RssState};
pub use queue::{DpdkPort, Mbuf};

/// Largest burst handed to the PMD in one call; bigger requests loop.
const MAX_BURST: usize = 64;

// Linux errno values DPDK reports (as `-errno` returns or in `rte_errno`).
const EINVAL: i32 = 22;
const EAGAIN: i32 = 11;
const ENOTSUP: i32 = 95;

/// The EAL bus of virtual devices, for hotplug removal.
const VDEV_BUS: &CStr = c"vdev";

/// Name put in front of the EAL arguments as `argv[0]`.
const EAL_PROGRAM_NAME: &str = "sluice";

// Frames handed to the worker promise `HEADROOM` bytes in front; DPDK's
// build-time headroom must cover it.
const _: () = assert!(sys::SLUICE_PKTMBUF_HEADROOM as usize >= HEADROOM);

/// What went wrong setting DPDK up. Hot-path calls do not return errors:
/// they count (see [`PortStats`](super::PortStats)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL argument {index} contains a NUL byte")]
    ArgHasNul { index: usize },
    #[error(
        "rte_eal_init failed ({code}: {message}); check the EAL arguments, that hugepages \
         are reserved (scripts/hugepages.sh) or --no-huge -m 512 is given, and that \
         --file-prefix is unique to this process"
    )]
    EalInit { code: i32, message: String },
    #[error(
        "EAL initialises once per process and already runs with {first:?}; reuse that Eal \
         handle (Eal::running) instead of initialising again with {requested:?}"
    )]
    EalAlreadyInitialised {
        first: Vec<String>,
        requested: Vec<String>,
    },
    #[error("an earlier Eal::init in this process failed and DPDK cannot retry: {0}")]
    EalInitFailedEarlier(Box<DpdkError>),
    #[error(
        "no DPDK port named {name:?}: pass `--vdev {name}` or a PCI allow-list (-a) to \
         Eal::init, or open a virtual device with its arguments (\"net_af_packet0,iface=eth0\")"
    )]
    DeviceNotFound { name: String },
    #[error("creating virtual device {spec:?} failed ({code}: {message})")]
    VdevCreate {
        spec: String,
        code: i32,
        message: String,
    },
    #[error("port {port} is already open in this process; share its DpdkDevice instead")]
    DeviceBusy { port: u16 },
    #[error("asked for {requested} queues but port {port} has at most {max_rx} RX and {max_tx} TX queues")]
    TooManyQueues {
        port: u16,
        requested: u16,
        max_rx: u16,
        max_tx: u16,
    },
    #[error("a device needs at least one queue (one per worker)")]
    NoQueues,
    #[error("queue {queue} does not exist: the device was opened with {queues} queues")]
    QueueOutOfRange { queue: u16, queues: u16 },
    #[error(
        "queue {queue} of port {port} already has a DpdkPort; each queue belongs to one worker"
    )]
    QueueTaken { port: u16, queue: u16 },
    #[error(
        "mbuf pool {name} ({mbufs} mbufs on socket {socket}) could not be created \
         ({code}: {message}); reserve more hugepages or raise -m"
    )]
    Mempool {
        name: String,
        mbufs: u32,
        socket: i32,
        code: i32,
        message: String,
    },
    #[error("{op} on port {port} failed ({code}: {message})")]
    Device {
        port: u16,
        op: &'static str,
        code: i32,
        message: String,
    },
    #[error(
        "rte_thread_register failed ({code}: {message}): more threads than RTE_MAX_LCORE, \
         or EAL multi-process is in use"
    )]
    ThreadRegister { code: i32, message: String },
}

/// Text for a DPDK error code (positive errno or DPDK's own codes).
fn error_text(code: i32) -> String {
    // SAFETY: rte_strerror accepts any code and returns a NUL-terminated
    // string that stays valid until the next call on this thread; it is
    // copied out immediately.
    unsafe { CStr::from_ptr(sys::rte_strerror(code)) }
        .to_string_lossy()
        .into_owned()
}

/// The current `rte_errno`, for calls that report failure through it.
fn last_errno() -> i32 {
    // SAFETY: reads a thread-local integer.
    unsafe { sys::sluice_errno() }
}

/// Turns a DPDK `-errno` return into a typed error.
fn check(port: u16, op: &'static str, rc: c_int) -> Result<(), DpdkError> {
    if rc >= 0 {
        return Ok(());
    }
    let code = rc.saturating_neg();
    Err(DpdkError::Device {
        port,
        op,
        code,
        message: error_text(code),
    })
}

/// Proof that the EAL runs in this process; every DPDK object needs one.
#[derive(Clone, Copy, Debug)]
pub struct Eal {
    _running: (),
}

/// The outcome of the process's one `rte_eal_init`: the arguments it ran
/// with, or why it failed (DPDK cannot be initialised a second time).
static EAL: OnceLock<Result<Vec<String>, DpdkError>> = OnceLock::new();

impl Eal {
    /// Initialises DPDK's EAL with `args` (without the program name; sluice
    /// supplies `argv[0]`), once per process.
    ///
    /// A second call with the same arguments returns the running EAL; with
    /// different arguments it fails with [`DpdkError::EalAlreadyInitialised`],
    /// because DPDK cannot re-initialise (even after `rte_eal_cleanup`).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        let mut ran_here = false;
        let outcome = EAL.get_or_init(|| {
            ran_here = true;
            eal_init_once(args).map(|()| args.to_vec())
        });
        match outcome {
            Ok(first) if first.as_slice() == args => Ok(Eal { _running: () }),
            Ok(first) => Err(DpdkError::EalAlreadyInitialised {
                first: first.clone(),
                requested: args.to_vec(),
            }),
            Err(err) if ran_here => Err(err.clone()),
            Err(err) => Err(DpdkError::EalInitFailedEarlier(Box::new(err.clone()))),
        }
    }

    /// The running EAL, if an earlier [`Eal::init`] succeeded.
    pub fn running() -> Option<Eal> {
        matches!(EAL.get(), Some(Ok(_))).then_some(Eal { _running: () })
    }

    /// The arguments the EAL was initialised with.
    pub fn args(&self) -> &'static [String] {
        match EAL.get() {
            Some(Ok(args)) => args,
            // An `Eal` exists only after a successful init.
            _ => &[],
        }
    }
}

/// The calling thread's CPU affinity.
fn thread_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (rc == 0).then_some(set)
}

/// Sets the calling thread's CPU affinity; a failure is logged.
fn set_thread_cpus(set: &libc::cpu_set_t) {
    // SAFETY: reads a whole cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(),
            "could not restore the thread's CPUs after DPDK's EAL pinned it: every sluice thread shares EAL's main lcore");
    }
}

fn eal_init_once(args: &[String]) -> Result<(), DpdkError> {
    let mut owned = Vec::with_capacity(args.len() + 1);
    owned.push(CString::new(EAL_PROGRAM_NAME).map_err(|_| DpdkError::ArgHasNul { index: 0 })?);
    for (index, arg) in args.iter().enumerate() {
        owned.push(CString::new(arg.as_str()).map_err(|_| DpdkError::ArgHasNul { index })?);
    }
    // EAL may keep pointers into argv (device arguments are parsed later,
    // at probe time), so the strings live as long as the process.
    let owned: &'static [CString] = Vec::leak(owned);
    let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = c_int::try_from(argv.len()).map_err(|_| DpdkError::EalInit {
        code: EINVAL,
        message: "too many EAL arguments".to_owned(),
    })?;
    // EAL pins the calling thread to its main lcore (`-l`'s first core),
    // and every thread started after would inherit that one CPU: sluice's
    // workers (which pin themselves only when `dataplane.cores` says so)
    // and its control thread would all share it. The caller's CPUs are
    // put back afterwards; EAL's own threads keep theirs.
    let cpus = thread_cpus();
    // SAFETY: argv holds argc pointers to NUL-terminated strings that live
    // for the rest of the process; EAL may permute the pointer array, which
    // is ours. OnceLock guarantees this runs once per process.
    let parsed = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    if let Some(cpus) = cpus {
        set_thread_cpus(&cpus);
    }
    if parsed < 0 {
        let code = last_errno();
        return Err(DpdkError::EalInit {
            code,
            message: error_text(code),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_explain_the_fix() {
        let err = DpdkError::EalAlreadyInitialised {
            first: vec!["--no-huge".into()],
            requested: vec!["--in-memory".into()],
        };
        assert!(err.to_string().contains("once per process"));
        let err = DpdkError::DeviceNotFound {
            name: "net_ring9".into(),
        };
        assert!(err.to_string().contains("--vdev net_ring9"));
    }
}
