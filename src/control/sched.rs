//! Scheduling of the control thread against busy-polling workers.
//!
//! Workers busy-poll pinned one per core, so on a box with as many cores as
//! workers a time-sharing control thread woken by a request waits for a
//! scheduler slice behind a worker that never sleeps: milliseconds per
//! wake-up, several wake-ups per change. The lowest real-time priority
//! (SCHED_FIFO 1) lets it preempt a worker the moment a request or an
//! acknowledgement is due, and nothing else on the box: it still yields to
//! every other real-time thread, and the kernel's real-time throttling
//! (95% by default) bounds what a runaway control thread could take.
//! A FIFO thread must never spin waiting for a worker on its own core
//! (`sched_yield` only yields to its own priority): waits sleep instead
//! ([`Wait`]).

use serde::{Deserialize, Serialize};

/// `control.priority`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlPriority {
    /// SCHED_FIFO at priority 1, when the process may (root or
    /// CAP_SYS_NICE); otherwise a warning and `normal`.
    #[default]
    Realtime,
    /// The default time-sharing class (SCHED_OTHER).
    Normal,
}

impl std::fmt::Display for ControlPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ControlPriority::Realtime => "realtime",
            ControlPriority::Normal => "normal",
        })
    }
}

/// How a control-side wait for workers passes time between checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// `sched_yield`: right for a time-sharing thread, which stays runnable
    /// and so is not re-queued behind a whole slice.
    #[default]
    Yield,
    /// Short sleeps: a real-time thread that yielded would keep the core
    /// from the very worker it waits for.
    Sleep,
}

impl Wait {
    /// One pause of a wait loop, after `spins` earlier ones.
    pub fn pause(self, spins: u32) {
        if spins < 64 {
            std::hint::spin_loop();
            return;
        }
        match self {
            Wait::Yield => std::thread::yield_now(),
            // Long enough for a worker to finish a burst and switch; short
            // enough that the acknowledgement is seen within tens of us.
            Wait::Sleep => std::thread::sleep(std::time::Duration::from_micros(20)),
        }
    }
}

/// Why the calling thread keeps its scheduling class.
#[derive(Debug, thiserror::Error)]
#[error("cannot change the thread's scheduling class: {0}; a control thread left time-shared may wait behind busy-polling workers (run as root or grant CAP_SYS_NICE, or set control.priority = \"normal\")")]
pub struct PriorityError(std::io::Error);

/// Puts the calling thread in `p`'s class; the wait policy that class
/// needs.
pub fn set_current_thread(p: ControlPriority) -> Result<Wait, PriorityError> {
    // Leaving a real-time class is always allowed; entering one may be
    // refused (no CAP_SYS_NICE, RLIMIT_RTPRIO).
    let (policy, priority, wait) = match p {
        ControlPriority::Normal => (libc::SCHED_OTHER, 0, Wait::Yield),
        ControlPriority::Realtime => (libc::SCHED_FIFO, 1, Wait::Sleep),
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `pthread_self` names the calling thread, which is alive for
    // the call; `param` is a valid, initialised `sched_param` the call only
    // reads.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
    if rc == 0 {
        Ok(wait)
    } else {
        Err(PriorityError(std::io::Error::from_raw_os_error(rc)))
    }
}

/// Applies `p` to the calling thread, falling back to time-sharing with a
/// logged warning when refused; the wait policy in force.
pub fn apply_or_warn(p: ControlPriority) -> Wait {
    match set_current_thread(p) {
        Ok(w) => {
            tracing::debug!(priority = %p, "control thread scheduling set");
            w
        }
        Err(e) => {
            tracing::warn!(error = %e, "control.priority not applied");
            Wait::Yield
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_always_applies_and_realtime_either_applies_or_explains() {
        assert_eq!(
            set_current_thread(ControlPriority::Normal).unwrap(),
            Wait::Yield
        );
        // In a thread of its own: the test harness's thread keeps its class.
        let r = std::thread::spawn(|| set_current_thread(ControlPriority::Realtime))
            .join()
            .unwrap();
        match r {
            Ok(w) => assert_eq!(w, Wait::Sleep),
            Err(e) => assert!(e.to_string().contains("control.priority"), "{e}"),
        }
    }

    #[test]
    fn priority_parses_from_lowercase_names() {
        #[derive(Deserialize)]
        struct T {
            p: ControlPriority,
        }
        let t: T = toml::from_str("p = \"normal\"").unwrap();
        assert_eq!(t.p, ControlPriority::Normal);
        assert!(toml::from_str::<T>("p = \"fifo\"").is_err());
    }
}
