//! One worker's queue pair and the mbufs it lends out.

use std::cell::{Cell, OnceCell};
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dpdk_sys as sys;

use super::device::DeviceInner;
use super::relink::Repair;
use super::wake::{DeviceWake, TapDoorbell};
use super::{error_text, last_errno, DpdkError, MAX_BURST};
use crate::port::{PacketBuf, Port, PortStats};

/// Releases a registered thread's lcore id when the thread exits, so
/// short-lived threads do not use up RTE_MAX_LCORE.
struct ThreadRegistration;

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        // SAFETY: created only after rte_thread_register succeeded on this
        // thread, and dropped on the same thread at its exit.
        unsafe { sys::rte_thread_unregister() };
    }
}

thread_local! {
    static THREAD_REGISTRATION: Cell<Option<ThreadRegistration>> = const { Cell::new(None) };
}

/// One worker's RX/TX queue pair on a [`DpdkDevice`](super::DpdkDevice). `Send` so it can be
/// handed to its worker thread; not `Sync`, because DPDK queues are not safe
/// to poll from two threads at once.
pub struct DpdkPort {
    port_id: u16,
    queue_id: u16,
    pool: NonNull<sys::rte_mempool>,
    stats: PortStats,
    /// Set once registration failed, so the hot path does not retry.
    registration_failed: bool,
    /// What an idle worker sleeps on for this queue.
    wake: QueueWake,
    /// Frames received while arming the wake-up (to see whether any were
    /// waiting), handed out first by the next `rx_burst`.
    stash: Vec<Mbuf>,
    device: Arc<DeviceInner>,
    /// The device is being re-opened: the queue is not touched until the
    /// new one is published (see `relink.rs`).
    parked: bool,
    /// The re-open epoch of `device`.
    epoch: u64,
    /// Times this queue moved to a re-opened device.
    reopens: u64,
}

/// A queue's receive event (see `wake.rs`).
#[derive(Debug)]
enum QueueWake {
    None,
    /// The PMD's own AF_XDP socket: readable while its RX ring has frames.
    Xsk(RawFd),
    /// A doorbell socket on the device's kernel interface (`ifindex`),
    /// opened when the worker first sleeps: a busy-polling worker never
    /// does, and its interface then carries no extra packet tap.
    Tap {
        ifindex: i32,
        bell: OnceCell<Option<TapDoorbell>>,
    },
}

impl QueueWake {
    fn of(device: &DeviceInner, queue_id: u16) -> QueueWake {
        match &device.wake {
            DeviceWake::None => QueueWake::None,
            DeviceWake::Xsk { fds } => fds
                .get(usize::from(queue_id))
                .map_or(QueueWake::None, |&fd| QueueWake::Xsk(fd)),
            DeviceWake::PacketTap { ifindex } => QueueWake::Tap {
                ifindex: *ifindex,
                bell: OnceCell::new(),
            },
        }
    }
}

// SAFETY: the queue pair belongs to this value alone (DpdkDevice::port hands
// each queue out once), so moving it to another thread moves sole use of the
// queue; the pool is MT-safe and never freed.
unsafe impl Send for DpdkPort {}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        if let Some(flag) = self.device.queue_taken.get(usize::from(self.queue_id)) {
            flag.store(false, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort")
            .field("port_id", &self.port_id)
            .field("queue_id", &self.queue_id)
            .field("stats", &self.stats)
            .finish()
    }
}

impl DpdkPort {
    /// The handle for `queue_id`, already marked taken in `device`.
    pub(super) fn new(device: Arc<DeviceInner>, queue_id: u16) -> DpdkPort {
        DpdkPort {
            port_id: device.port_id,
            queue_id,
            pool: device.pool,
            stats: PortStats::default(),
            registration_failed: false,
            wake: QueueWake::of(&device, queue_id),
            stash: Vec::with_capacity(MAX_BURST),
            epoch: device.relink.epoch.load(Ordering::Acquire),
            device,
            parked: false,
            reopens: 0,
        }
    }

    /// Moves this queue to the same queue of a re-opened device.
    fn rebind(&mut self, device: Arc<DeviceInner>, epoch: u64) {
        if let Some(flag) = device.queue_taken.get(usize::from(self.queue_id)) {
            flag.store(true, Ordering::Release);
        }
        if let Some(flag) = self.device.queue_taken.get(usize::from(self.queue_id)) {
            flag.store(false, Ordering::Release);
        }
        self.port_id = device.port_id;
        self.pool = device.pool;
        self.wake = QueueWake::of(&device, self.queue_id);
        self.device = device;
        self.epoch = epoch;
    }

    /// One burst straight from the PMD into `out`.
    fn receive(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let mut raw = [ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        let mut taken = 0;
        while taken < max {
            let want = (max - taken).min(MAX_BURST);
            // SAFETY: raw has room for `want` pointers; this value is the
            // queue's only user; received mbufs become ours.
            let got = usize::from(unsafe {
                sys::sluice_eth_rx_burst(self.port_id, self.queue_id, raw.as_mut_ptr(), want as u16)
            });
            for &m in &raw[..got] {
                let Some(m) = NonNull::new(m) else { continue };
                let mbuf = Mbuf(m);
                // Scatter RX is never enabled, so chained mbufs are not
                // expected; one would break the single-segment view, so it
                // is dropped and counted rather than half-exposed.
                if mbuf.raw().nb_segs != 1 {
                    self.stats.rx_missed += 1;
                    continue;
                }
                self.stats.rx_bytes += u64::from(mbuf.raw().data_len);
                out.push(mbuf);
                taken += 1;
            }
            if got < want {
                break;
            }
        }
        self.stats.rx_packets += taken as u64;
        taken
    }

    /// Makes the calling thread a DPDK lcore (`rte_thread_register`) so its
    /// mbuf allocs and frees use a per-lcore cache; returns its lcore id.
    /// A no-op for EAL lcores and already-registered threads. The id is
    /// released when the thread exits.
    pub fn register_thread() -> Result<u32, DpdkError> {
        // SAFETY: reads a thread-local.
        let lcore = unsafe { sys::sluice_lcore_id() };
        if lcore != sys::SLUICE_LCORE_ID_ANY {
            return Ok(lcore);
        }
        // SAFETY: registers the calling thread only; before EAL init (or with
        // multi-process in use) DPDK refuses with -1 and rte_errno set.
        if unsafe { sys::rte_thread_register() } != 0 {
            let code = last_errno();
            return Err(DpdkError::ThreadRegister {
                code,
                message: error_text(code),
            });
        }
        THREAD_REGISTRATION.with(|slot| slot.set(Some(ThreadRegistration)));
        // SAFETY: reads a thread-local.
        Ok(unsafe { sys::sluice_lcore_id() })
    }

    /// Registers the thread on its first burst. One TLS read per burst; on
    /// failure the port keeps working through the shared pool ring.
    #[inline]
    fn ensure_thread_registered(&mut self) {
        // SAFETY: reads a thread-local.
        if self.registration_failed || unsafe { sys::sluice_lcore_id() } != sys::SLUICE_LCORE_ID_ANY
        {
            return;
        }
        if let Err(err) = Self::register_thread() {
            self.registration_failed = true;
            tracing::warn!(port = self.port_id, queue = self.queue_id, %err,
                "worker thread not registered with DPDK; mbufs bypass the per-lcore cache");
        }
    }

    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue_id
    }
}

impl Port for DpdkPort {
    type Buf = Mbuf;

    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        self.ensure_thread_registered();
        if !self.stash.is_empty() {
            let n = self.stash.len().min(max);
            out.extend(self.stash.drain(..n));
            return n;
        }
        if self.parked {
            return 0;
        }
        self.receive(out, max)
    }

    fn tx_burst(&mut self, bufs: &mut Vec<Mbuf>) -> usize {
        if self.parked {
            self.stats.tx_full += bufs.len() as u64;
            return 0;
        }
        let mut raw = [ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        let mut lens = [0u16; MAX_BURST];
        let mut sent_total = 0;
        while !bufs.is_empty() {
            let chunk = bufs.len().min(MAX_BURST);
            for (i, buf) in bufs[..chunk].iter().enumerate() {
                raw[i] = buf.0.as_ptr();
                // Read now: once sent, the mbuf is the driver's.
                lens[i] = buf.raw().data_len;
            }
            // SAFETY: raw holds `chunk` owned, single-segment mbufs; the
            // first `sent` pass to the driver and are forgotten below.
            let sent = usize::from(unsafe {
                sys::sluice_eth_tx_burst(
                    self.port_id,
                    self.queue_id,
                    raw.as_mut_ptr(),
                    chunk as u16,
                )
            });
            bufs.drain(..sent).for_each(std::mem::forget);
            self.stats.tx_bytes += lens[..sent].iter().map(|&l| u64::from(l)).sum::<u64>();
            sent_total += sent;
            if sent < chunk {
                self.stats.tx_full += bufs.len() as u64;
                break;
            }
        }
        self.stats.tx_packets += sent_total as u64;
        sent_total
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.ensure_thread_registered();
        // SAFETY: the pool is a live pktmbuf pool (never freed).
        let m = unsafe { sys::sluice_pktmbuf_alloc(self.pool.as_ptr()) };
        match NonNull::new(m) {
            Some(m) => Some(Mbuf(m)),
            None => {
                self.stats.alloc_failed += 1;
                None
            }
        }
    }

    fn free(&mut self, buf: Mbuf) {
        drop(buf);
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn rx_event_fd(&self) -> Option<RawFd> {
        if self.parked {
            return None;
        }
        match &self.wake {
            QueueWake::None => None,
            QueueWake::Xsk(fd) => Some(*fd),
            QueueWake::Tap { ifindex, bell } => bell
                .get_or_init(|| match TapDoorbell::open(*ifindex) {
                    Ok(d) => Some(d),
                    Err(err) => {
                        tracing::warn!(port = self.port_id, queue = self.queue_id, %err,
                            "no doorbell socket for this queue: its idle worker naps instead");
                        None
                    }
                })
                .as_ref()
                .map(TapDoorbell::fd),
        }
    }

    fn arm_rx_event(&mut self) -> bool {
        if self.parked {
            return true;
        }
        match &self.wake {
            // Level-triggered on the PMD's ring: a frame already there
            // polls readable.
            QueueWake::None | QueueWake::Xsk(_) => true,
            QueueWake::Tap { bell, .. } => {
                if let Some(Some(d)) = bell.get() {
                    d.arm();
                }
                // Frames that reached the PMD's ring before the filter
                // swap rang nothing: look (they wait in the stash).
                let mut stash = std::mem::take(&mut self.stash);
                let quiet = self.receive(&mut stash, MAX_BURST) == 0;
                self.stash = stash;
                quiet
            }
        }
    }

    /// Takes part in a re-open of the device after a link event (see
    /// `relink.rs`): looks for a reason to start one, parks the queue while
    /// one runs, and moves to the re-opened device once it is published.
    fn check_link(&mut self, now: bool) -> bool {
        let relink = Arc::clone(&self.device.relink);
        if self.parked {
            let epoch = relink.epoch.load(Ordering::Acquire);
            if epoch != self.epoch {
                if let Some(device) = relink.current() {
                    self.rebind(device, epoch);
                    self.parked = false;
                    self.reopens += 1;
                    relink.unpark();
                    return true;
                }
            } else if !relink.paused.load(Ordering::Acquire) {
                // The re-open gave up before closing anything.
                self.parked = false;
                relink.unpark();
            }
            return false;
        }
        let park = relink.paused.load(Ordering::Acquire)
            || match relink.due(now) {
                None => false,
                Some(Repair::Reattach) => {
                    if relink.reattach() {
                        self.reopens += 1;
                        return true;
                    }
                    let why = "its XDP program was removed and could not be attached again";
                    relink.start(why.into(), Arc::clone(&self.device))
                }
                Some(Repair::Reopen(why)) => relink.start(why, Arc::clone(&self.device)),
            };
        if park {
            self.parked = true;
            relink.parked.fetch_add(1, Ordering::AcqRel);
        }
        false
    }

    fn reopens(&self) -> u64 {
        self.reopens
    }
}

/// One single-segment DPDK packet buffer, owned: dropping it returns it to
/// its pool. Its bytes are the mbuf's data area, lent without a copy.
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is the sole owner of its rte_mbuf (refcount 1, never
// cloned), and mempool puts are MT-safe, so it may be used and freed on any
// thread.
unsafe impl Send for Mbuf {}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nobody uses it after this.
        unsafe { sys::sluice_pktmbuf_free(self.0.as_ptr()) };
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .finish()
    }
}

impl Mbuf {
    #[inline]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer is valid and exclusively ours while self lives.
        unsafe { self.0.as_ref() }
    }

    /// The mbuf pointer, still owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.0.as_ptr()
    }

    /// Gives up ownership, for handing the mbuf to DPDK directly.
    pub fn into_raw(self) -> *mut sys::rte_mbuf {
        let m = self.0.as_ptr();
        std::mem::forget(self);
        m
    }

    /// Takes ownership of `m`.
    ///
    /// # Safety
    /// `m` must be a valid, single-segment mbuf with refcount 1 that nothing
    /// else will use or free.
    pub unsafe fn from_raw(m: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// The hash the NIC computed, when RSS is on and the PMD reports it.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        if m.ol_flags & sys::SLUICE_MBUF_F_RX_RSS_HASH == 0 {
            return None;
        }
        // SAFETY: with RX_RSS_HASH set the hash union holds the RSS value.
        Some(unsafe { m.__bindgen_anon_2.hash.rss })
    }

    /// The port the frame arrived on.
    pub fn in_port(&self) -> u16 {
        self.raw().port
    }

    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        let m = self.raw();
        // buf_addr + data_off is rte_pktmbuf_mtod, done here to stay inline.
        m.buf_addr
            .cast::<u8>()
            .wrapping_add(usize::from(m.data_off))
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        // SAFETY: a single-segment mbuf holds data_len initialised bytes at
        // buf_addr + data_off, inside its buffer, owned by self.
        unsafe { std::slice::from_raw_parts(self.data_ptr(), usize::from(self.raw().data_len)) }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.raw().data_len);
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), len) }
    }

    fn truncate(&mut self, len: usize) {
        let cur = self.raw().data_len;
        let Ok(len) = u16::try_from(len) else { return };
        if len < cur {
            // SAFETY: owned single-segment mbuf; cur - len <= data_len, so
            // the trim cannot fail.
            unsafe { sys::sluice_pktmbuf_trim(self.0.as_ptr(), cur - len) };
        }
    }

    fn extend(&mut self, extra: usize) -> Option<&mut [u8]> {
        let n = u16::try_from(extra).ok()?;
        // SAFETY: owned single-segment mbuf; append returns NULL (and
        // changes nothing) when tailroom is short.
        let tail = unsafe { sys::sluice_pktmbuf_append(self.0.as_ptr(), n) };
        if tail.is_null() {
            return None;
        }
        // SAFETY: append returned n writable bytes inside this mbuf's buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(tail, extra) })
    }

    #[inline]
    fn headroom(&self) -> usize {
        usize::from(self.raw().data_off)
    }

    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let len = u16::try_from(n).ok()?;
        // SAFETY: owned single-segment mbuf; prepend returns NULL (and
        // changes nothing) when headroom is short.
        let head = unsafe { sys::sluice_pktmbuf_prepend(self.0.as_ptr(), len) };
        if head.is_null() {
            return None;
        }
        // SAFETY: prepend returned n writable bytes inside this mbuf's buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(head, n) })
    }

    #[inline]
    fn len(&self) -> usize {
        usize::from(self.raw().data_len)
    }
}
