//! How an idle worker sleeps without making the next packet wait for a
//! timer: it blocks in `ppoll(2)` on descriptors that turn readable when
//! there is work (each port's receive event, and a [`Doorbell`] the control
//! thread and the other workers ring), so it wakes within a scheduler
//! wake-up (microseconds), not after a fixed nap.
//!
//! A doorbell is an eventfd that is written only while its owner sleeps
//! (it says so with [`Doorbell::arm`]), so ringing one costs a system call
//! only when it wakes someone: a busy worker's queues are fed with no
//! system call at all. The protocol is Dekker's: the ringer publishes its
//! item, then reads the armed flag; the sleeper sets the flag, then looks at
//! its queues once more before it blocks; both with sequentially consistent
//! fences between, so either the sleeper sees the item or the ringer sees
//! the flag and writes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::time::Duration;

/// An eventfd rung by producers, waited on by one consumer that sleeps.
#[derive(Debug)]
pub struct Doorbell {
    /// `None` when the eventfd could not be created (descriptor limit):
    /// the owner then naps for a fixed time instead of blocking.
    fd: Option<OwnedFd>,
    armed: AtomicBool,
}

impl Doorbell {
    /// A doorbell; without an eventfd (the process is out of descriptors)
    /// it still works, as a flag nobody can block on.
    pub fn new() -> Doorbell {
        // SAFETY: plain syscall with constant arguments; no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let fd = if fd >= 0 {
            // SAFETY: a fresh descriptor that nothing else owns.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "no eventfd for a worker's doorbell: it will nap instead of sleeping on events"
            );
            None
        };
        Doorbell {
            fd,
            armed: AtomicBool::new(false),
        }
    }

    /// The descriptor to poll for `POLLIN`, if there is one.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The owner is about to sleep: from now on a ring writes the eventfd.
    /// The owner must look at what it waits for once more after this.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The owner woke up: rings are free again. `rung` says whether its
    /// poll saw the descriptor readable: then the ring is consumed (the
    /// only system call of a disarm).
    pub fn disarm(&self, rung: bool) {
        self.armed.store(false, Ordering::Relaxed);
        if rung {
            self.drain();
        }
    }

    fn drain(&self) {
        let Some(fd) = &self.fd else { return };
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live u64; the fd is non-blocking, so
        // an unrung eventfd answers EAGAIN, which is fine to ignore.
        unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }

    /// Wakes the owner if it sleeps. Call after publishing the work it
    /// should find.
    #[inline]
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) {
            self.write();
        }
    }

    #[cold]
    fn write(&self) {
        let Some(fd) = &self.fd else { return };
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64. EAGAIN (counter at its
        // maximum) still leaves the eventfd readable, which is the point.
        unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell::new()
    }
}

/// Blocks until one of `fds` polls readable (or in error: a port whose
/// link went away must wake its worker too) or `timeout` passes. The
/// descriptors' `revents` are left for the caller. An interrupted wait
/// returns early, which the caller treats like a timeout.
pub fn wait_readable(fds: &mut [libc::pollfd], timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfds and
    // `ts` a valid timespec; no signal mask is passed.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// A `pollfd` waiting for input on `fd`.
pub fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Lets the calling thread's timed sleeps end within `slack` of their
/// deadline instead of the default 50 us (the kernel's timer slack), for
/// the naps of a worker whose ports have nothing to block on.
pub fn set_timer_slack(slack: Duration) {
    let ns = slack.as_nanos().clamp(1, u128::from(u32::MAX)) as libc::c_ulong;
    // SAFETY: PR_SET_TIMERSLACK takes one integer and affects only the
    // calling thread; the other arguments are unused.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn readable_now(d: &Doorbell) -> bool {
        let mut fds = [readable(d.fd().expect("eventfd"))];
        wait_readable(&mut fds, Duration::ZERO);
        fds[0].revents & libc::POLLIN != 0
    }

    #[test]
    fn a_ring_writes_only_while_armed_and_disarm_consumes_it() {
        let d = Doorbell::new();
        d.ring();
        assert!(
            !readable_now(&d),
            "unarmed: no system call, nothing to read"
        );
        d.arm();
        d.ring();
        assert!(readable_now(&d));
        d.disarm(true);
        assert!(!readable_now(&d), "disarm consumed the ring");
    }

    #[test]
    fn a_sleeper_wakes_when_rung_from_another_thread() {
        let d = Arc::new(Doorbell::new());
        d.arm();
        let ringer = {
            let d = d.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                d.ring();
            })
        };
        let start = Instant::now();
        let mut fds = [readable(d.fd().expect("eventfd"))];
        wait_readable(&mut fds, Duration::from_secs(10));
        let waited = start.elapsed();
        ringer.join().expect("ringer");
        assert!(fds[0].revents & libc::POLLIN != 0);
        assert!(
            waited < Duration::from_secs(5),
            "woke by the ring, not the timeout: {waited:?}"
        );
        d.disarm(true);
    }

    #[test]
    fn the_timeout_bounds_the_wait() {
        let d = Doorbell::new();
        let start = Instant::now();
        let mut fds = [readable(d.fd().expect("eventfd"))];
        wait_readable(&mut fds, Duration::from_millis(5));
        assert_eq!(fds[0].revents, 0);
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
