//! Surviving link events: an interface taken down and up, its MTU changed,
//! or deleted and re-created under the same name.
//!
//! The kernel keeps a packet socket across most of these, but not in the
//! state sluice opened it in: after a down the socket carries a pending
//! `ENETDOWN` (which polls as an error at every idle sleep until read), a
//! larger MTU no longer fits the ring's slots (every full-size frame is
//! dropped as oversize), and a re-created interface has a new index the old
//! socket is not bound to (it never delivers again). [`LinkState::check`]
//! notices each of these, at most every [`CHECK_EVERY`] (three syscalls:
//! `SO_ERROR`, `SIOCGIFINDEX`, `SIOCGIFMTU`, and `SIOCGIFFLAGS` while a
//! re-open is due, all answered in the socket's own network namespace), and the
//! port is re-opened: a new socket, ring and fanout membership.
//!
//! **Who re-opens.** Opening a ring waits for an RCU grace period in the
//! kernel (10-15 ms here), too long to stall a worker whose other ports
//! keep forwarding. The open runs on a short-lived thread the port starts;
//! the worker keeps polling the old socket (and its other ports) and swaps
//! the new one in at a later check. Frames still lent from the old ring
//! keep it mapped until they are dropped (see `ring.rs`). The thread enters
//! the old socket's network namespace first. Known gap: while frames from
//! the old ring are still lent (a frame held for an unresolved neighbor),
//! the old socket stays open and, with several workers, a member of the
//! fanout group, so the kernel steers part of the interface's traffic into
//! a ring nobody reads until they come back. An interface that
//! is down is not re-opened (joining a fanout group needs a running
//! socket): the check waits for it to come back up.

use std::ffi::CString;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{sys, AfPacketError, AfPacketPort, RingConfig};

/// How often a worker looks at the link of each AF_PACKET port.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// What a port needs to re-open itself, and the re-open under way.
pub(super) struct LinkState {
    worker: u32,
    workers: u32,
    config: RingConfig,
    ifindex: i32,
    mtu: u32,
    /// Why a re-open is due (logged with it), until one succeeds.
    due: Option<String>,
    pending: Option<JoinHandle<Result<AfPacketPort, AfPacketError>>>,
    last_check: Instant,
    /// Re-opens done so far.
    pub(super) reopens: u64,
}

impl LinkState {
    pub(super) fn new(
        worker: u32,
        workers: u32,
        config: RingConfig,
        ifindex: i32,
        mtu: u32,
    ) -> LinkState {
        LinkState {
            worker,
            workers,
            config,
            ifindex,
            mtu,
            due: None,
            pending: None,
            last_check: Instant::now(),
            reopens: 0,
        }
    }
}

impl LinkState {
    pub(super) fn worker(&self) -> u32 {
        self.worker
    }

    pub(super) fn workers(&self) -> u32 {
        self.workers
    }
}

impl AfPacketPort {
    /// Looks at the link (at most every [`CHECK_EVERY`] unless `now`), starts
    /// a re-open when the socket no longer matches the interface, and swaps
    /// a finished one in. Returns `true` when the port was re-opened.
    pub fn relink(&mut self, now: bool) -> bool {
        if let Some(h) = &self.link.pending {
            if !h.is_finished() {
                return false;
            }
            let h = self.link.pending.take().expect("checked above");
            match h.join() {
                Ok(Ok(new)) => {
                    self.swap_in(new);
                    return true;
                }
                Ok(Err(e)) => {
                    tracing::warn!(ifname = %self.ifname, error = %e, "re-opening the port failed; retrying");
                }
                Err(_) => {
                    tracing::warn!(ifname = %self.ifname, "re-opening the port panicked; retrying");
                }
            }
        }
        if !now && self.link.last_check.elapsed() < CHECK_EVERY {
            return false;
        }
        self.link.last_check = Instant::now();
        if let Some(why) = self.link_problem() {
            if self.link.due.is_none() {
                tracing::warn!(ifname = %self.ifname, worker = self.link.worker, reason = %why, "link event: the port will be re-opened");
            }
            self.link.due = Some(why);
        }
        if self.link.due.is_some() && self.interface_up() {
            let (name, l) = (self.ifname.clone(), &self.link);
            let (worker, workers, config) = (l.worker, l.workers, l.config);
            // The new socket goes where the old one is, whichever namespace
            // the calling thread is in.
            let ns = match sys::netns_of(self.map.fd()) {
                Ok(ns) => ns,
                Err(e) => {
                    tracing::warn!(ifname = %self.ifname, error = %e, "the port's network namespace is unknown; retrying");
                    return false;
                }
            };
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-reopen-w{worker}"))
                .spawn(move || {
                    sys::enter_netns(&ns).map_err(|source| AfPacketError::Sys {
                        op: "setns",
                        ifname: name.clone(),
                        source,
                    })?;
                    AfPacketPort::open(&name, worker, workers, config)
                });
            match spawned {
                Ok(h) => self.link.pending = Some(h),
                Err(e) => tracing::warn!(error = %e, "no thread to re-open the port; retrying"),
            }
        }
        false
    }

    /// Why the socket no longer matches the interface, if it does not.
    fn link_problem(&self) -> Option<String> {
        match sys::take_error(self.map.raw_fd()) {
            Ok(0) => {}
            Ok(e) => {
                return Some(format!(
                    "socket error: {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            }
            Err(e) => return Some(format!("SO_ERROR failed: {e}")),
        }
        let name = CString::new(self.ifname.as_str()).ok()?;
        match sys::ifindex_of(self.map.fd(), &name) {
            // Gone for now: nothing to re-open onto until it comes back.
            None => return None,
            Some(i) if i != self.link.ifindex => {
                return Some(format!(
                    "interface re-created (index {} -> {i})",
                    self.link.ifindex
                ))
            }
            Some(_) => {}
        }
        match sys::mtu(self.map.fd(), &name) {
            Ok(m) if m != self.link.mtu => Some(format!("MTU {} -> {m}", self.link.mtu)),
            _ => None,
        }
    }

    fn interface_up(&self) -> bool {
        let Ok(name) = CString::new(self.ifname.as_str()) else {
            return false;
        };
        sys::ifindex_of(self.map.fd(), &name).is_some()
            && crate::port::sys::if_flags(self.map.fd(), &name).is_ok_and(|f| f & libc::IFF_UP != 0)
    }

    /// Replaces the socket and ring with `new`'s, keeping the counters and
    /// the pool; the old ring stays mapped while frames from it are lent.
    fn swap_in(&mut self, new: AfPacketPort) {
        let mut new = new;
        let why = self.link.due.take().unwrap_or_default();
        // Counters of the old socket's kernel drops are read before it goes.
        let kept = self.detailed_stats();
        let stored = self.store_name();
        std::mem::swap(&mut self.map, &mut new.map);
        self.rx_next = new.rx_next;
        self.max_frame_len = new.max_frame_len;
        self.link.ifindex = new.link.ifindex;
        self.link.mtu = new.link.mtu;
        self.link.reopens += 1;
        self.kernel_drops.set(kept.rx_kernel_drops);
        // A service manager keeping the old socket would keep it in the
        // fanout group across a restart: it keeps the new one instead.
        // (store_fd replaces what is stored under the new name; a new MTU
        // renames the socket, and the old name goes too.)
        let name = self.store_name();
        if name != stored {
            crate::notify::remove_fd(&stored);
        }
        crate::notify::store_fd(&name, self.raw_fd());
        tracing::info!(
            ifname = %self.ifname,
            worker = self.link.worker,
            reason = %why,
            mtu = self.link.mtu,
            reopens = self.link.reopens,
            "port re-opened"
        );
    }
}
