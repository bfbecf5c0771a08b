//! Repairing a DPDK device after a link event that left its queues deaf.
//!
//! A virtual device sits on a kernel interface (`iface=` in its arguments),
//! and some events on that interface leave the PMD receiving nothing, for
//! good, though nothing in DPDK reports an error:
//! - **net_af_xdp**: the XDP program the PMD attached (it redirects each
//!   frame to the queue's AF_XDP socket) is removed, say by `ip link set
//!   dev X xdp off` or a tool cleaning up "stale" programs. Frames then go
//!   to the kernel stack; the socket waits forever.
//! - **net_af_xdp and net_af_packet**: the interface is deleted and created
//!   again under the same name. The PMD's sockets are bound to the old
//!   index and never deliver again.
//!
//! (Down/up and MTU changes, on the interface or its veth peer, are
//! survived by both PMDs without help: tests/e2e_link.rs runs through them.)
//!
//! [`Relink::due`] looks for these, at most every [`CHECK_EVERY`], from
//! whichever worker polls the device first: one `if_nametoindex` and, for
//! net_af_xdp, one netlink `RTM_GETLINK` for the interface's XDP program.
//!
//! **A removed XDP program is attached again** ([`Relink::reattach`]): the
//! PMD still holds the program and its socket map, so the worker that
//! noticed takes a descriptor of it by id and attaches it as it was (only
//! if the interface has no program by then), and the queues receive again
//! at once. A program of someone else's that *replaced* it is not fought:
//! that is logged as an error, and sluice's is attached again once the
//! other is gone.
//!
//! **A re-created interface needs the device re-opened** (also the fallback
//! when the program cannot be attached again). DPDK queues of one device
//! cannot be re-opened one at a time, and a queue must not be polled while
//! its device closes, so the re-open is coordinated across the workers
//! that hold its queues, on a short-lived thread:
//!
//! 1. The finder sets `paused`. Each worker's queue sees it at its next
//!    link check (every idle wake-up, at least every 10 ms, or every few
//!    thousand busy polls), stops touching the queue (bursts return
//!    nothing, sends fail as a full ring, no wake-up descriptor), and
//!    counts itself in `parked`. Its other ports keep forwarding.
//! 2. Once every queue in use is parked the thread stops, closes and
//!    removes the device, waits for the interface to exist and be up, and
//!    probes, configures and starts it again (retrying every
//!    [`RETRY_EVERY`] while that fails). If the workers do not all park
//!    within [`PARK_WAIT`], nothing is closed: the pause is lifted and the
//!    next check tries again.
//! 3. The new device is published with a new `epoch`; each parked queue
//!    takes its queue of the new device at its next check (counted as a
//!    re-open) and polls again.
//!
//! Mbufs the workers still hold come from the device's pool, which outlives
//! every re-open (see the module docs of `port::dpdk`); when the PMD kept
//! the pool's mbufs, the new device gets a new pool (see
//! [`Relink::replace_pool_if_drained`]).
//!
//! Found while building this: after net_af_xdp (DPDK 22.11, kernel 6.18)
//! closes a device whose program was removed, a new AF_XDP socket on the
//! same queue of the same interface fails `bind` with `EBUSY` for as long
//! as we retried (seconds; strace shows the old socket closed), so closing
//! and re-opening the device cannot repair that case. That is why a removed
//! program is attached again instead of the device re-opened.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::device::{DeviceConfig, DeviceInner};
use super::xdp::{attach_flags, if_up, prog_fd_by_id, xdp_attach, xdp_query};
use crate::port::sys::ifindex;

/// How often a device's interface is looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long the re-open waits for every worker to let go of its queue.
const PARK_WAIT: Duration = Duration::from_secs(2);
/// Pools one device may go through (see [`Relink::replace_pool_if_drained`]).
const MAX_POOLS: u32 = 16;
/// Pause between failed attempts to open the device again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// What a device needs after a link event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Repair {
    /// Its XDP program was removed: attach it again (no re-open).
    Reattach,
    /// Close and open it again, for this reason.
    Reopen(String),
}

/// What a device needs to be re-opened, shared by its successive
/// [`DeviceInner`]s and their queues.
pub(super) struct Relink {
    /// The device's name and arguments, as first opened.
    spec: String,
    config: DeviceConfig,
    /// The kernel interface under the device (`iface=`), if any: devices
    /// without one (real NICs, net_ring, ...) are never re-opened.
    iface: Option<CString>,
    /// Whether the PMD steers frames with an XDP program of its own.
    xdp: bool,
    /// The interface's index when the device was last opened.
    ifindex: AtomicI32,
    /// The XDP program the PMD attached, or `u32::MAX` when unknown.
    xdp_prog: AtomicU32,
    /// How it was attached (`XDP_FLAGS_*_MODE`), to attach it again alike.
    xdp_mode: AtomicU32,
    /// A foreign XDP program was reported (once per program).
    foreign_prog: AtomicU32,
    t0: Instant,
    /// Milliseconds since `t0` before which nobody looks again.
    next_check_ms: AtomicU64,
    /// A re-open is under way (its thread runs).
    busy: AtomicBool,
    /// Queues must stop touching the device.
    pub(super) paused: AtomicBool,
    /// Queues that have stopped touching it.
    pub(super) parked: AtomicU32,
    /// Bumped each time a new device is published in `current`.
    pub(super) epoch: AtomicU64,
    /// The re-opened device, until every parked queue has taken it.
    current: Mutex<Option<Arc<DeviceInner>>>,
    /// Which mbuf pool the device takes (see [`Relink::reopen`]).
    pool_generation: AtomicU32,
    /// The pool the last open (or attempt) took.
    pool: AtomicPtr<dpdk_sys::rte_mempool>,
}

impl Relink {
    pub(super) fn new(spec: &str, config: &DeviceConfig) -> Relink {
        let name = spec.split_once(',').map_or(spec, |(name, _)| name);
        let iface = spec
            .split(',')
            .skip(1)
            .find_map(|kv| kv.strip_prefix("iface="))
            .and_then(|i| CString::new(i).ok());
        Relink {
            spec: spec.to_owned(),
            config: config.clone(),
            iface,
            xdp: name.starts_with("net_af_xdp"),
            ifindex: AtomicI32::new(0),
            xdp_prog: AtomicU32::new(u32::MAX),
            xdp_mode: AtomicU32::new(0),
            foreign_prog: AtomicU32::new(0),
            t0: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            parked: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            current: Mutex::new(None),
            pool_generation: AtomicU32::new(0),
            pool: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Records the interface as the (re-)opened device found it.
    pub(super) fn opened(&self) {
        let Some(iface) = &self.iface else { return };
        let index = ifindex(iface).unwrap_or(0);
        self.ifindex.store(index, Ordering::Relaxed);
        let (prog, mode) = if self.xdp && index > 0 {
            match xdp_query(index) {
                Ok((0, _)) | Err(_) => (u32::MAX, 0),
                Ok((id, attached)) => (id, attach_flags(attached)),
            }
        } else {
            (u32::MAX, 0)
        };
        self.xdp_prog.store(prog, Ordering::Relaxed);
        self.xdp_mode.store(mode, Ordering::Relaxed);
    }

    /// What the device needs after a link event, if anything; rate-limited
    /// to one look per [`CHECK_EVERY`] across all its queues unless `now`.
    pub(super) fn due(&self, now: bool) -> Option<Repair> {
        self.iface.as_ref()?;
        let t = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_check_ms.load(Ordering::Relaxed);
        if !now && t < next {
            return None;
        }
        let every = u64::try_from(CHECK_EVERY.as_millis()).unwrap_or(100);
        if self
            .next_check_ms
            .compare_exchange(next, t + every, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        self.problem()
    }

    /// What is wrong with the interface under the device, if anything.
    fn problem(&self) -> Option<Repair> {
        let iface = self.iface.as_ref()?;
        let name = iface.to_string_lossy();
        let was = self.ifindex.load(Ordering::Relaxed);
        let Some(index) = ifindex(iface) else {
            return Some(Repair::Reopen(format!("interface {name} is gone")));
        };
        if index != was {
            return Some(Repair::Reopen(format!(
                "interface {name} was re-created (index {was} -> {index})"
            )));
        }
        let prog = self.xdp_prog.load(Ordering::Relaxed);
        if self.xdp && prog != u32::MAX {
            match xdp_query(index) {
                Ok((0, _)) => return Some(Repair::Reattach),
                Ok((id, _))
                    if id != prog && self.foreign_prog.swap(id, Ordering::Relaxed) != id =>
                {
                    tracing::error!(interface = %name, ours = prog, theirs = id,
                        "another XDP program replaced the one of the DPDK port: its frames no \
                         longer reach sluice; it is attached again once that program is removed");
                }
                _ => {}
            }
        }
        None
    }

    /// Attaches the PMD's XDP program to the interface again, as it was,
    /// if no other program took its place meanwhile. Its map still holds
    /// the queues' AF_XDP sockets, so they receive again at once.
    pub(super) fn reattach(&self) -> bool {
        let (Some(iface), prog) = (&self.iface, self.xdp_prog.load(Ordering::Relaxed)) else {
            return false;
        };
        let index = self.ifindex.load(Ordering::Relaxed);
        let mode = self.xdp_mode.load(Ordering::Relaxed);
        let done = prog_fd_by_id(prog).and_then(|fd| xdp_attach(index, &fd, mode));
        match done {
            Ok(()) => {
                tracing::warn!(device = %self.spec, interface = %iface.to_string_lossy(), prog,
                    "link event: the XDP program of the DPDK port was removed; attached it again");
                self.foreign_prog.store(0, Ordering::Relaxed);
                true
            }
            Err(e) => {
                // The program is gone for good (its last holder closed it):
                // the caller re-opens the device, which loads a new one.
                tracing::warn!(device = %self.spec, prog, error = %e,
                    "the XDP program of the DPDK port was removed and cannot be attached again");
                false
            }
        }
    }

    /// Which mbuf pool the device opens with: 0 is the first.
    pub(super) fn pool_generation(&self) -> u32 {
        self.pool_generation.load(Ordering::Relaxed)
    }

    /// The pool an open (or an attempt) took.
    pub(super) fn note_pool(&self, pool: NonNull<dpdk_sys::rte_mempool>) {
        self.pool.store(pool.as_ptr(), Ordering::Relaxed);
    }

    /// After a close or a failed attempt: net_af_xdp (22.11) does not give
    /// back the mbufs it put in its fill ring when it closes, nor those it
    /// took for a queue whose socket it then failed to create. A pool short
    /// by a ring's worth cannot fill the next queue's ring, so the device
    /// moves to a new pool (a pool's memory per such event, at most
    /// [`MAX_POOLS`] per device; the lost one keeps serving the mbufs the
    /// workers still hold).
    fn replace_pool_if_drained(&self) {
        let Some(pool) = NonNull::new(self.pool.load(Ordering::Relaxed)) else {
            return;
        };
        let lost = pool_in_use(pool);
        if lost < u32::from(self.config.rx_descriptors) / 2 {
            return;
        }
        let g = self.pool_generation.load(Ordering::Relaxed);
        if g + 1 >= MAX_POOLS {
            tracing::error!(device = %self.spec, mbufs = lost, pools = g + 1,
                "the device lost its pool's mbufs again and has used its last pool: restart sluice");
            return;
        }
        self.pool_generation.store(g + 1, Ordering::Relaxed);
        self.pool.store(std::ptr::null_mut(), Ordering::Relaxed);
        tracing::warn!(device = %self.spec, mbufs = lost, pool_generation = g + 1,
            "the closed device kept its pool's mbufs; the next open takes a new pool");
    }

    /// The device published by the last re-open, for a parked queue.
    pub(super) fn current(&self) -> Option<Arc<DeviceInner>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A parked queue took the new device (or resumed the old one): when it
    /// was the last, the published device is let go.
    pub(super) fn unpark(&self) {
        if self.parked.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
    }

    /// Starts re-opening `old` on a thread of its own; `false` when one is
    /// already under way or no thread could be started.
    pub(super) fn start(self: &Arc<Relink>, why: String, old: Arc<DeviceInner>) -> bool {
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        tracing::warn!(device = %self.spec, reason = %why, "link event: the device will be re-opened");
        self.paused.store(true, Ordering::Release);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("sluice-relink".into())
            .spawn(move || me.reopen(old));
        if let Err(e) = spawned {
            tracing::warn!(device = %self.spec, error = %e, "no thread to re-open the device");
            self.paused.store(false, Ordering::Release);
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    fn reopen(self: Arc<Relink>, old: Arc<DeviceInner>) {
        let started = Instant::now();
        let users = || {
            old.queue_taken
                .iter()
                .filter(|t| t.load(Ordering::Acquire))
                .count() as u32
        };
        while self.parked.load(Ordering::Acquire) < users() {
            if started.elapsed() > PARK_WAIT {
                tracing::warn!(device = %self.spec, parked = self.parked.load(Ordering::Relaxed),
                    queues = users(), "workers did not let go of the device; not re-opened, will retry");
                self.paused.store(false, Ordering::Release);
                self.busy.store(false, Ordering::Release);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        old.close();
        drop(old);
        self.replace_pool_if_drained();
        let mut attempts = 0u32;
        loop {
            if let Some(iface) = &self.iface {
                if ifindex(iface).is_none() || !if_up(iface) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
            attempts += 1;
            match DeviceInner::open(&self.spec, &self.config, Some(Arc::clone(&self))) {
                Ok(new) => {
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    self.paused.store(false, Ordering::Release);
                    self.busy.store(false, Ordering::Release);
                    tracing::info!(device = %self.spec, attempts,
                        ms = started.elapsed().as_secs_f64() * 1e3, "device re-opened");
                    return;
                }
                Err(e) => {
                    self.replace_pool_if_drained();
                    if attempts == 1 || attempts % 20 == 0 {
                        tracing::warn!(device = %self.spec, error = %e, attempts,
                            "re-opening the device failed; retrying");
                    }
                    std::thread::sleep(RETRY_EVERY);
                }
            }
        }
    }
}

/// Mbufs of `pool` not in the pool (held by a queue, a worker or lost).
fn pool_in_use(pool: NonNull<dpdk_sys::rte_mempool>) -> u32 {
    // SAFETY: device pools are never freed; the count is a read.
    unsafe { dpdk_sys::rte_mempool_in_use_count(pool.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_devices_on_an_interface_are_watched() {
        let r = Relink::new("net_ring0", &DeviceConfig::default());
        assert!(r.iface.is_none() && r.due(true).is_none());
        let r = Relink::new(
            "net_af_xdp0,iface=l0,queue_count=2",
            &DeviceConfig::default(),
        );
        assert_eq!(r.iface.as_deref(), Some(c"l0"));
        assert!(r.xdp);
        let r = Relink::new(
            "net_af_packet1,iface=veth3,qpairs=2",
            &DeviceConfig::default(),
        );
        assert_eq!(r.iface.as_deref(), Some(c"veth3"));
        assert!(!r.xdp);
    }
}
