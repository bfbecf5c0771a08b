//! Opening, configuring and inspecting one ethdev port.

use std::ffi::{c_int, CStr, CString};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dpdk_sys as sys;

use super::queue::DpdkPort;
use super::relink::Relink;
use super::wake::{self, DeviceWake};
use super::{check, error_text, last_errno, DpdkError, Eal, EAGAIN, ENOTSUP, MAX_BURST, VDEV_BUS};

/// RSS hash key choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssKey {
    /// `0x6d5a` repeated: a 4-tuple and its swap hash alike, so both
    /// directions of an un-NATed flow reach the same queue.
    Symmetric,
    /// Whatever key the PMD uses by default.
    DeviceDefault,
    /// The flow's owner: the client on this side of a packet, hashed with
    /// `crate::rss::KEY` through sluice's redirection table (see
    /// [`super::rss`]); where the PMD cannot, the symmetric key, and one
    /// warning line at open.
    Owner(crate::rss::ClientSide),
}

/// RSS wanted on a device; what is enabled is this intersected with what
/// the device supports (see [`RssState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssConfig {
    /// `SLUICE_ETH_RSS_*` hash types; 0 turns RSS off.
    pub hash_types: u64,
    pub key: RssKey,
}

impl RssConfig {
    /// IPv4/IPv6 addresses plus TCP and UDP ports, symmetric key.
    pub const SYMMETRIC_L4: RssConfig = RssConfig {
        hash_types: sys::SLUICE_ETH_RSS_IP | sys::SLUICE_ETH_RSS_TCP | sys::SLUICE_ETH_RSS_UDP,
        key: RssKey::Symmetric,
    };
    /// No RSS: every packet of a single-queue device lands on queue 0.
    pub const OFF: RssConfig = RssConfig {
        hash_types: 0,
        key: RssKey::DeviceDefault,
    };
}

impl Default for RssConfig {
    fn default() -> Self {
        RssConfig::SYMMETRIC_L4
    }
}

/// RSS as configured on an open device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssState {
    /// Hash types the PMD advertises (`flow_type_rss_offloads`).
    pub supported: u64,
    /// Hash types enabled: requested ∩ supported; 0 means RSS is off.
    pub enabled: u64,
    /// Whether the symmetric key was programmed.
    pub symmetric_key: bool,
    /// Whether the NIC steers each flow to its owner's queue
    /// ([`RssKey::Owner`] on a PMD that can).
    pub owner_steering: bool,
}

impl RssState {
    pub fn is_enabled(&self) -> bool {
        self.enabled != 0
    }
}

/// How to set a device up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// RX and TX queue pairs, one per worker.
    pub queues: u16,
    /// Descriptors per RX queue (the PMD may round to its limits).
    pub rx_descriptors: u16,
    /// Descriptors per TX queue.
    pub tx_descriptors: u16,
    /// Mbufs in the device's pool; 0 sizes it from queues and descriptors.
    pub mbufs: u32,
    /// Per-lcore mempool cache size.
    pub mbuf_cache: u32,
    pub rss: RssConfig,
    /// Receive frames for any MAC (needed on veths and when sluice answers
    /// for VIP MACs that are not the port's own).
    pub promiscuous: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mbufs: 0,
            mbuf_cache: 256,
            rss: RssConfig::default(),
            promiscuous: true,
        }
    }
}

impl DeviceConfig {
    /// Mbufs the pool needs so no queue starves: every RX descriptor filled,
    /// every TX descriptor in flight, a burst in each worker's hands and each
    /// lcore cache full, rounded to 2^k - 1 (the ring's best size).
    pub fn pool_size(&self) -> u32 {
        if self.mbufs != 0 {
            return self.mbufs;
        }
        let per_queue = u32::from(self.rx_descriptors)
            + u32::from(self.tx_descriptors)
            + 2 * MAX_BURST as u32
            + self.mbuf_cache;
        let wanted = per_queue
            .saturating_mul(u32::from(self.queues.max(1)))
            .max(1023);
        wanted
            .saturating_add(1)
            .checked_next_power_of_two()
            .map_or(u32::MAX, |p| p - 1)
    }
}

/// The symmetric key for a device whose key is `len` bytes (40 on most).
fn symmetric_key(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
        .collect()
}

/// Ports opened by this process: a second `DpdkDevice` on one port would
/// reconfigure queues under the first one's workers.
static OPEN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Link state as the PMD reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    /// Mbit/s; 0 when unknown.
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Port-wide counters from `rte_eth_stats_get` (all queues together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the NIC dropped because no RX descriptor was free.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX mbuf allocation failures inside the PMD.
    pub rx_no_mbuf: u64,
}

pub(super) struct DeviceInner {
    pub(super) port_id: u16,
    name: String,
    /// Set when `open` created the vdev, which is then removed on drop.
    created_vdev: Option<CString>,
    queues: u16,
    socket: c_int,
    pub(super) pool: NonNull<sys::rte_mempool>,
    rss: RssState,
    /// One flag per queue: whether a DpdkPort holds it.
    pub(super) queue_taken: Vec<AtomicBool>,
    /// What an idle worker on one of its queues can sleep on.
    pub(super) wake: DeviceWake,
    /// How to open it again after a link event (shared with the devices
    /// that replace it).
    pub(super) relink: Arc<Relink>,
    /// Torn down already (see [`DeviceInner::close`]).
    closed: AtomicBool,
}

// SAFETY: the pool pointer refers to a DPDK mempool, whose get/put are
// multi-producer/multi-consumer safe and which is never freed (see the
// module docs); the remaining fields are plain data and atomics.
unsafe impl Send for DeviceInner {}
// SAFETY: as for Send; shared access only reads immutable fields, calls
// thread-safe ethdev control functions, or uses the atomics.
unsafe impl Sync for DeviceInner {}

impl DeviceInner {
    /// Opens, configures and starts the device `spec` (see
    /// [`DpdkDevice::open`]); a re-open passes the [`Relink`] of the device
    /// it replaces.
    pub(super) fn open(
        spec: &str,
        config: &DeviceConfig,
        relink: Option<Arc<Relink>>,
    ) -> Result<Arc<DeviceInner>, DpdkError> {
        if config.queues == 0 {
            return Err(DpdkError::NoQueues);
        }
        let name = spec.split_once(',').map_or(spec, |(name, _)| name);
        // Taken before any queue exists, to tell this device's AF_XDP
        // sockets from others' afterwards (see `wake`).
        let xsks_before = wake::xsk_fds();
        let c_name = CString::new(name).map_err(|_| DpdkError::ArgHasNul { index: 0 })?;
        let mut created_vdev = None;
        let port_id = match port_by_name(&c_name) {
            Some(port) => port,
            None if name.starts_with("net_") => {
                // EAL's generic hotplug finds the vdev bus from the driver
                // name; rte_vdev_init itself lives in a bus library that
                // pkg-config does not link.
                let devargs = CString::new(spec).map_err(|_| DpdkError::ArgHasNul { index: 0 })?;
                // SAFETY: devargs is NUL-terminated and outlives the call.
                let rc = unsafe { sys::rte_dev_probe(devargs.as_ptr()) };
                if rc < 0 {
                    let code = rc.saturating_neg();
                    return Err(DpdkError::VdevCreate {
                        spec: spec.to_owned(),
                        code,
                        message: error_text(code),
                    });
                }
                created_vdev = Some(c_name.clone());
                port_by_name(&c_name).ok_or_else(|| DpdkError::DeviceNotFound {
                    name: name.to_owned(),
                })?
            }
            None => {
                return Err(DpdkError::DeviceNotFound {
                    name: name.to_owned(),
                })
            }
        };

        {
            let mut open = OPEN_PORTS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if open.contains(&port_id) {
                return Err(DpdkError::DeviceBusy { port: port_id });
            }
            open.push(port_id);
        }
        let claim = PortClaim {
            port_id,
            created_vdev,
            armed: true,
        };
        let relink = relink.unwrap_or_else(|| Arc::new(Relink::new(spec, config)));
        let mut inner = configure_and_start(claim, name, config, relink)?;
        let new_xsks = wake::xsk_fds().difference(&xsks_before).copied().collect();
        inner.wake = wake::for_device(name, spec, config.queues, new_xsks);
        inner.relink.opened();
        Ok(Arc::new(inner))
    }

    /// Stops, closes and (if `open` created it) removes the device, once:
    /// at the last drop, or earlier by a re-open while every queue is
    /// parked.
    pub(super) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: called from drop (every DpdkPort holds an Arc to this, so
        // no worker polls the queues any more) or by a re-open once every
        // queue is parked; stop, close, remove is DPDK's teardown order.
        let results = unsafe {
            [
                ("rte_eth_dev_stop", sys::rte_eth_dev_stop(self.port_id)),
                ("rte_eth_dev_close", sys::rte_eth_dev_close(self.port_id)),
                match &self.created_vdev {
                    Some(name) => (
                        "rte_eal_hotplug_remove",
                        sys::rte_eal_hotplug_remove(VDEV_BUS.as_ptr(), name.as_ptr()),
                    ),
                    None => ("", 0),
                },
            ]
        };
        // Drop cannot return an error; say what failed instead of hiding it.
        for (op, rc) in results {
            if let Err(err) = check(self.port_id, op, rc) {
                tracing::warn!(port = self.port_id, name = %self.name, %err, "DPDK port teardown");
            }
        }
        if let Ok(mut open) = OPEN_PORTS.lock() {
            open.retain(|&p| p != self.port_id);
        }
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        self.close();
    }
}

/// One DPDK ethdev port, started, with `queues` RX/TX queue pairs. Cloning
/// shares it; the port stops when the last clone and the last of its
/// [`DpdkPort`]s are dropped.
#[derive(Clone)]
pub struct DpdkDevice {
    inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for DpdkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkDevice")
            .field("port_id", &self.inner.port_id)
            .field("name", &self.inner.name)
            .field("queues", &self.inner.queues)
            .field("socket", &self.inner.socket)
            .field("rss", &self.inner.rss)
            .finish()
    }
}

impl DpdkDevice {
    /// Opens, configures and starts a port.
    ///
    /// `device` is a port name known to the EAL (a `--vdev` name such as
    /// `net_ring0`, or a PCI address such as `0000:01:00.0`), or a virtual
    /// device with arguments (`net_af_packet0,iface=veth0`), created here if
    /// no port has that name yet and removed again when the device drops.
    pub fn open(_eal: &Eal, device: &str, config: &DeviceConfig) -> Result<DpdkDevice, DpdkError> {
        Ok(DpdkDevice {
            inner: DeviceInner::open(device, config, None)?,
        })
    }

    pub fn port_id(&self) -> u16 {
        self.inner.port_id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn queues(&self) -> u16 {
        self.inner.queues
    }

    /// NUMA socket of the port and its mbuf pool.
    pub fn socket(&self) -> i32 {
        self.inner.socket
    }

    /// What RSS the device supports and what was enabled.
    pub fn rss(&self) -> RssState {
        self.inner.rss
    }

    /// The worker handle for `queue`; each queue can be taken once.
    pub fn port(&self, queue: u16) -> Result<DpdkPort, DpdkError> {
        let taken =
            self.inner
                .queue_taken
                .get(usize::from(queue))
                .ok_or(DpdkError::QueueOutOfRange {
                    queue,
                    queues: self.inner.queues,
                })?;
        if taken.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::QueueTaken {
                port: self.inner.port_id,
                queue,
            });
        }
        Ok(DpdkPort::new(Arc::clone(&self.inner), queue))
    }

    /// Whether the link is up, without waiting for autonegotiation.
    pub fn link_up(&self) -> bool {
        self.link().up
    }

    pub fn link(&self) -> LinkStatus {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: the port is valid while `inner` lives; link is an out-pointer.
        let rc = unsafe { sys::rte_eth_link_get_nowait(self.inner.port_id, &mut link) };
        if rc < 0 {
            return LinkStatus {
                up: false,
                speed_mbps: 0,
                full_duplex: false,
            };
        }
        LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        }
    }

    /// The port's MAC address.
    pub fn mac_address(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: the port is valid; addr is an out-pointer.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.inner.port_id, &mut addr) };
        check(self.inner.port_id, "rte_eth_macaddr_get", rc)?;
        Ok(addr.addr_bytes)
    }

    /// Port-wide basic counters.
    pub fn stats(&self) -> Result<DeviceStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: the port is valid; s is an out-pointer.
        let rc = unsafe { sys::rte_eth_stats_get(self.inner.port_id, &mut s) };
        check(self.inner.port_id, "rte_eth_stats_get", rc)?;
        Ok(DeviceStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        })
    }

    /// The PMD's extended statistics as (name, value); control path only
    /// (it allocates).
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let port = self.inner.port_id;
        // The count can change between calls (a PMD adding queue stats), so
        // retry a few times until names and values agree.
        for _ in 0..4 {
            // SAFETY: a NULL array with size 0 asks only for the count.
            let count = unsafe { sys::rte_eth_xstats_get_names(port, ptr::null_mut(), 0) };
            check(port, "rte_eth_xstats_get_names", count)?;
            let n = usize::try_from(count).unwrap_or(0);
            let size = u32::try_from(n).unwrap_or(u32::MAX);
            let mut names = vec![sys::rte_eth_xstat_name::default(); n];
            let mut values = vec![sys::rte_eth_xstat::default(); n];
            // SAFETY: both arrays hold `size` elements.
            let got_names =
                unsafe { sys::rte_eth_xstats_get_names(port, names.as_mut_ptr(), size) };
            // SAFETY: as above.
            let got_values = unsafe { sys::rte_eth_xstats_get(port, values.as_mut_ptr(), size) };
            check(port, "rte_eth_xstats_get_names", got_names)?;
            check(port, "rte_eth_xstats_get", got_values)?;
            if got_names != count || got_values != count {
                continue;
            }
            return Ok(values
                .iter()
                .filter_map(|v| {
                    let name = names.get(usize::try_from(v.id).ok()?)?;
                    // SAFETY: DPDK NUL-terminates names within the 64-byte array.
                    let text = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                    Some((text.to_string_lossy().into_owned(), v.value))
                })
                .collect());
        }
        Err(DpdkError::Device {
            port,
            op: "rte_eth_xstats_get",
            code: EAGAIN,
            message: "the number of xstats kept changing".to_owned(),
        })
    }
}

/// A port reserved in `OPEN_PORTS` during `open`; released if setup fails.
struct PortClaim {
    port_id: u16,
    created_vdev: Option<CString>,
    armed: bool,
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(name) = &self.created_vdev {
            // SAFETY: the vdev was created by this open and nothing uses it.
            unsafe { sys::rte_eal_hotplug_remove(VDEV_BUS.as_ptr(), name.as_ptr()) };
        }
        if let Ok(mut open) = OPEN_PORTS.lock() {
            open.retain(|&p| p != self.port_id);
        }
    }
}

fn port_by_name(name: &CStr) -> Option<u16> {
    let mut port = 0u16;
    // SAFETY: name is NUL-terminated; port is an out-pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut port) };
    (rc == 0).then_some(port)
}

fn configure_and_start(
    mut claim: PortClaim,
    name: &str,
    config: &DeviceConfig,
    relink: Arc<Relink>,
) -> Result<DeviceInner, DpdkError> {
    let port = claim.port_id;
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: port is a valid port id; info is an out-pointer.
    check(port, "rte_eth_dev_info_get", unsafe {
        sys::rte_eth_dev_info_get(port, &mut info)
    })?;
    if config.queues > info.max_rx_queues || config.queues > info.max_tx_queues {
        return Err(DpdkError::TooManyQueues {
            port,
            requested: config.queues,
            max_rx: info.max_rx_queues,
            max_tx: info.max_tx_queues,
        });
    }

    // SAFETY: port is valid.
    let mut socket = unsafe { sys::rte_eth_dev_socket_id(port) };
    if socket < 0 {
        // Virtual devices have no socket; put their pool where EAL runs.
        // SAFETY: reads the calling thread's socket.
        socket = unsafe { sys::sluice_socket_id() } as c_int;
    }
    let pool = mbuf_pool(port, socket, config, relink.pool_generation())?;
    relink.note_pool(pool);

    let mut conf = sys::rte_eth_conf::default();
    let supported = info.flow_type_rss_offloads;
    let enabled = config.rss.hash_types & supported;
    let key_len = if info.hash_key_size == 0 {
        40
    } else {
        usize::from(info.hash_key_size)
    };
    // Outlives rte_eth_dev_configure, which copies the key.
    let mut key = symmetric_key(key_len);
    let mut enabled = enabled;
    let mut symmetric = enabled != 0 && config.rss.key == RssKey::Symmetric;
    let mut owner = false;
    if let (RssKey::Owner(side), true) = (config.rss.key, config.queues > 1) {
        match super::rss::plan(supported, info.hash_key_size, info.reta_size, side) {
            Ok(hf) => {
                enabled = hf;
                key = crate::rss::KEY.to_vec();
                owner = true;
            }
            Err(why) => {
                tracing::warn!(
                    device = name,
                    ?side,
                    "cannot steer flows to their owner's queue: {why}; symmetric hash instead, \
                     packets of other workers' flows cross the handoff ring"
                );
                symmetric = enabled != 0;
            }
        }
    }
    if enabled != 0 {
        conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = enabled;
        if symmetric || owner {
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = u8::try_from(key_len).unwrap_or(40);
        }
        // Lets workers read the hash from the mbuf instead of recomputing it.
        conf.rxmode.offloads |= info.rx_offload_capa & sys::SLUICE_ETH_RX_OFFLOAD_RSS_HASH;
    }
    let queues = config.queues;
    // SAFETY: conf is a fully initialised rte_eth_conf and the key buffer
    // it points to lives until after the call.
    check(port, "rte_eth_dev_configure", unsafe {
        sys::rte_eth_dev_configure(port, queues, queues, &conf)
    })?;

    let (mut rx_desc, mut tx_desc) = (config.rx_descriptors, config.tx_descriptors);
    // SAFETY: port is configured; both are in/out pointers to u16.
    check(port, "rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
        sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut rx_desc, &mut tx_desc)
    })?;
    let socket_u = u32::try_from(socket).unwrap_or(0);
    for queue in 0..queues {
        // SAFETY: port is configured with `queues` queues; NULL confs select
        // the PMD's defaults; the pool is never freed, so it outlives the queue.
        check(port, "rte_eth_rx_queue_setup", unsafe {
            sys::rte_eth_rx_queue_setup(port, queue, rx_desc, socket_u, ptr::null(), pool.as_ptr())
        })?;
        // SAFETY: as above.
        check(port, "rte_eth_tx_queue_setup", unsafe {
            sys::rte_eth_tx_queue_setup(port, queue, tx_desc, socket_u, ptr::null())
        })?;
    }
    if config.promiscuous {
        // SAFETY: port is configured. Some PMDs (net_ring, net_null) have no
        // filter to open and answer ENOTSUP, which means "already receives all".
        let rc = unsafe { sys::rte_eth_promiscuous_enable(port) };
        if rc != -ENOTSUP {
            check(port, "rte_eth_promiscuous_enable", rc)?;
        }
    }
    // SAFETY: every queue is set up.
    check(port, "rte_eth_dev_start", unsafe {
        sys::rte_eth_dev_start(port)
    })?;
    // After start: every PMD that has a table takes updates then.
    if owner {
        if let Err(e) = super::rss::program_reta(port, info.reta_size, queues) {
            tracing::warn!(
                device = name,
                "cannot program the redirection table ({e}): packets of other workers' flows \
                 cross the handoff ring"
            );
            owner = false;
        } else {
            tracing::info!(device = name, "NIC steers each flow to its owner's queue");
        }
    }

    claim.armed = false;
    Ok(DeviceInner {
        port_id: port,
        name: name.to_owned(),
        created_vdev: claim.created_vdev.take(),
        queues,
        socket,
        pool,
        rss: RssState {
            supported,
            enabled,
            symmetric_key: symmetric,
            owner_steering: owner,
        },
        queue_taken: (0..queues).map(|_| AtomicBool::new(false)).collect(),
        wake: DeviceWake::None,
        relink,
        closed: AtomicBool::new(false),
    })
}

/// The device's pool, reused when the port is opened again (pools are kept
/// for the life of the process, see the module docs), unless a re-open
/// moved to a new `generation` because the PMD kept the old pool's mbufs.
fn mbuf_pool(
    port: u16,
    socket: c_int,
    config: &DeviceConfig,
    generation: u32,
) -> Result<NonNull<sys::rte_mempool>, DpdkError> {
    let name = match generation {
        0 => format!("sluice_p{port}_s{socket}"),
        g => format!("sluice_p{port}_s{socket}_g{g}"),
    };
    let c_name = CString::new(name.as_str()).map_err(|_| DpdkError::ArgHasNul { index: 0 })?;
    // SAFETY: c_name is NUL-terminated.
    if let Some(pool) = NonNull::new(unsafe { sys::rte_mempool_lookup(c_name.as_ptr()) }) {
        return Ok(pool);
    }
    let mbufs = config.pool_size();
    // DPDK caps the cache at RTE_MEMPOOL_CACHE_MAX_SIZE and at n / 1.5.
    let cache = config.mbuf_cache.min(512).min(mbufs * 2 / 3);
    // SAFETY: c_name is NUL-terminated; sizes are within DPDK's limits.
    let pool = unsafe {
        sys::rte_pktmbuf_pool_create(
            c_name.as_ptr(),
            mbufs,
            cache,
            0,
            sys::SLUICE_MBUF_DEFAULT_BUF_SIZE,
            socket,
        )
    };
    NonNull::new(pool).ok_or_else(|| {
        let code = last_errno();
        DpdkError::Mempool {
            name,
            mbufs,
            socket,
            code,
            message: error_text(code),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_key_matches_dpdk_sys_for_40_bytes_and_extends() {
        assert_eq!(symmetric_key(40), sys::SYMMETRIC_RSS_KEY.to_vec());
        let long = symmetric_key(52);
        assert_eq!(long.len(), 52);
        assert!(long.chunks(2).all(|pair| pair == [0x6d, 0x5a]));
    }

    #[test]
    fn pool_size_is_a_power_of_two_minus_one_and_covers_every_queue() {
        let config = DeviceConfig {
            queues: 4,
            ..DeviceConfig::default()
        };
        let n = config.pool_size();
        assert!((n + 1).is_power_of_two());
        let per_queue = 1024 + 1024 + 2 * MAX_BURST as u32 + 256;
        assert!(n >= 4 * per_queue);
        assert_eq!(
            DeviceConfig {
                mbufs: 4095,
                ..config.clone()
            }
            .pool_size(),
            4095
        );
        let tiny = DeviceConfig {
            rx_descriptors: 1,
            tx_descriptors: 1,
            mbuf_cache: 0,
            ..config
        };
        assert_eq!(tiny.pool_size(), 1023, "never below 1023");
    }

    #[test]
    fn rss_presets() {
        assert_eq!(RssConfig::default(), RssConfig::SYMMETRIC_L4);
        assert_eq!(RssConfig::OFF.hash_types, 0);
        let l4 = RssConfig::SYMMETRIC_L4.hash_types;
        assert_ne!(l4 & sys::SLUICE_ETH_RSS_NONFRAG_IPV4_TCP, 0);
        assert_ne!(l4 & sys::SLUICE_ETH_RSS_NONFRAG_IPV6_UDP, 0);
    }
}
