//! The harness of the tests that need the machine itself: root, network
//! namespaces, veth pairs, the tools a lab runs (`ip`, `python3`, ...).
//!
//! The standard harness cannot decide at run time that a test is skipped:
//! a test that returned early because it could not run was reported as
//! passed. Here each such test is registered with what it needs; on a
//! machine that lacks it the test is listed as *ignored*, which `cargo
//! test` reports as ignored and nextest as skipped, never as passed. Asked
//! to run anyway (`--include-ignored`), it fails with the reason.
//!
//! These tests also share one machine-wide lock (an `flock`), so that two
//! test processes (nextest runs each test in its own) never run labs at
//! once: sluice's workers poll, the machine may have two cores, and the
//! tests measure time.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode, Stdio};

use libtest_mimic::{Arguments, Failed, Trial};

/// What a test needs from the machine.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root: network namespaces, veth, raw sockets.
    Root,
    /// A program on the PATH.
    Tool(&'static str),
}

/// Why this machine cannot run a test that needs `needs`, if it cannot.
pub fn unmet(needs: &[Need]) -> Option<String> {
    for n in needs {
        match n {
            Need::Root => {
                // SAFETY: geteuid has no preconditions and cannot fail.
                if unsafe { libc::geteuid() } != 0 {
                    return Some("needs root (network namespaces, veth, raw sockets)".into());
                }
            }
            Need::Tool(t) => {
                let found = Command::new("sh")
                    .args(["-c", &format!("command -v {t}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !found {
                    return Some(format!("needs `{t}` on the PATH"));
                }
            }
        }
    }
    None
}

/// Held while a machine test runs: an exclusive `flock` on a file every
/// test process opens, released when the process exits or the guard drops.
pub struct MachineLock(std::fs::File);

pub fn machine_lock() -> MachineLock {
    let dir = if std::path::Path::new("/run/lock").is_dir() {
        "/run/lock"
    } else {
        "/tmp"
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{dir}/sluice-machine-tests.lock"))
        .expect("open the machine tests' lock file");
    loop {
        // SAFETY: flock on a descriptor this function owns; it blocks until
        // the lock is free and touches no memory.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return MachineLock(f);
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "flock the machine tests' lock: {e}"
        );
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_string())
}

/// Runs `tests` (name, function, ignored by design), each needing `needs`,
/// as libtest does: same arguments, same output, nextest-compatible
/// listing. A test ignored by design (a measurement) runs only when asked
/// for, as `#[ignore]` does.
pub fn run(needs: &'static [Need], tests: Vec<(&'static str, fn(), bool)>) -> ExitCode {
    let args = Arguments::from_args();
    let skip = unmet(needs);
    let trials = tests
        .into_iter()
        .map(|(name, f, measurement)| {
            Trial::test(name, move || {
                if let Some(why) = unmet(needs) {
                    return Err(Failed::from(format!("cannot run on this machine: {why}")));
                }
                let _lock = machine_lock();
                std::panic::catch_unwind(f).map_err(|p| Failed::from(panic_text(p)))
            })
            .with_ignored_flag(measurement || skip.is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// `main` for a file of machine tests: `machine_tests!(NEEDS; a, b,
/// #[cfg(feature = "dpdk")] c; ignored: m)` registers each function under
/// its own name (attributes such as `cfg` apply to its entry); those after
/// `ignored:` are measurements, run only when asked for.
#[macro_export]
macro_rules! machine_tests {
    ($needs:expr; $( $(#[$attr:meta])* $name:ident ),+ $(,)? $(; ignored: $( $ign:ident ),+ $(,)? )?) => {
        #[allow(clippy::vec_init_then_push)]
        fn main() -> std::process::ExitCode {
            #[allow(unused_mut)]
            let mut tests: Vec<(&'static str, fn(), bool)> = Vec::new();
            $(
                $(#[$attr])*
                tests.push((stringify!($name), $name, false));
            )+
            $( $( tests.push((stringify!($ign), $ign, true)); )+ )?
            harness::run($needs, tests)
        }
    };
}
