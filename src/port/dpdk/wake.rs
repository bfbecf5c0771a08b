//! What an idle worker on a DPDK queue sleeps on, per kind of device.
//!
//! DPDK polls; a PMD that supports Rx interrupts hands out an event fd, but
//! the virtual devices sluice runs on without a NIC do not (22.11's
//! net_af_packet and net_af_xdp have no `rx_queue_intr_enable`). Both sit
//! on a kernel interface, though, and the kernel can tell when a frame
//! arrives:
//! - **net_af_xdp**: the PMD's AF_XDP socket polls readable while its RX
//!   ring holds frames, and the kernel wakes pollers when it fills the ring.
//!   The PMD keeps the descriptor to itself, so sluice finds it by taking
//!   stock of the process's AF_XDP sockets before and after setting the
//!   device's queues up (the PMD creates one per queue, in queue order).
//!   Polling it takes nothing from the PMD: readiness is the ring's state.
//! - **net_af_packet**: a doorbell socket of sluice's own, bound to the
//!   same interface, whose filter keeps one byte of each frame and whose
//!   receive buffer holds a couple of them: it polls readable, and wakes
//!   a sleeper, when a frame arrives. While the worker is busy the queue is
//!   full and the kernel's tap drops each frame after the filter (tens of
//!   nanoseconds); before sleeping the worker empties it. Nothing happens
//!   on the way from a wake-up to the worker's first poll.
//!
//! Other devices (real NICs, net_ring, ...) get no event: their workers
//! nap for `sleep_us` between polls, or busy-poll.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How a device's queues wake an idle worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum DeviceWake {
    /// Nothing to block on.
    #[default]
    None,
    /// Each queue opens a doorbell socket on this kernel interface.
    PacketTap { ifindex: i32 },
    /// The PMD's AF_XDP socket of each queue, by queue id.
    Xsk { fds: Vec<RawFd> },
}

/// `AF_XDP` (linux/socket.h); libc does not export it on every target.
const AF_XDP: i32 = 44;

/// The AF_XDP sockets the process has open now.
pub(super) fn xsk_fds() -> BTreeSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| socket_domain(fd) == Some(AF_XDP))
        .collect()
}

fn socket_domain(fd: RawFd) -> Option<i32> {
    crate::port::sys::int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()
}

/// The wake-up of a device named `name` (driver prefix) opened with
/// `devargs`, given the AF_XDP sockets that appeared while its queues were
/// set up.
pub(super) fn for_device(
    name: &str,
    devargs: &str,
    queues: u16,
    new_xsks: BTreeSet<RawFd>,
) -> DeviceWake {
    if name.starts_with("net_af_xdp") {
        if new_xsks.len() == usize::from(queues) {
            return DeviceWake::Xsk {
                fds: new_xsks.into_iter().collect(),
            };
        }
        tracing::warn!(
            device = name,
            found = new_xsks.len(),
            queues,
            "could not tell the AF_XDP sockets of this device's queues: idle workers nap instead"
        );
        return DeviceWake::None;
    }
    if name.starts_with("net_af_packet") {
        let iface = devargs
            .split(',')
            .find_map(|kv| kv.strip_prefix("iface="))
            .and_then(|i| CString::new(i).ok());
        // SAFETY: a valid NUL-terminated name.
        let ifindex = iface.map_or(0, |i| unsafe { libc::if_nametoindex(i.as_ptr()) });
        if ifindex != 0 {
            return DeviceWake::PacketTap {
                ifindex: ifindex as i32,
            };
        }
    }
    DeviceWake::None
}

/// A packet socket on the device's interface that polls readable once a
/// frame arrives while it is armed.
#[derive(Debug)]
pub(super) struct TapDoorbell {
    fd: OwnedFd,
}

/// Classic BPF: accept nothing / accept one byte of every frame.
fn filter(keep: u32) -> [libc::sock_filter; 1] {
    [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: keep,
    }]
}

fn set_filter(fd: &OwnedFd, keep: u32) -> io::Result<()> {
    let mut insns = filter(keep);
    let prog = libc::sock_fprog {
        len: 1,
        filter: insns.as_mut_ptr(),
    };
    set_int_like(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

fn set_int_like<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T and the length passed is its size; the
    // kernel only reads it (a filter program is copied in).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl TapDoorbell {
    /// Opens the doorbell on `ifindex`.
    pub(super) fn open(ifindex: i32) -> io::Result<TapDoorbell> {
        // SAFETY: plain syscall; protocol 0 receives nothing until bound.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_filter(&fd, 1)?;
        // Own transmissions (the PMD's) must not ring; a handful of queued
        // one-byte frames is all a wake-up needs.
        set_int_like(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32)?;
        set_int_like(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &1i32)?;
        // SAFETY: sockaddr_ll is plain data for which all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: a valid sockaddr_ll and its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TapDoorbell { fd })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Empties the queue, so that from now on only a new frame makes the
    /// socket readable.
    pub(super) fn arm(&self) {
        let mut byte = [0u8; 1];
        // Bounded by the tiny receive buffer: a few frames at most.
        for _ in 0..64 {
            // SAFETY: receives at most 1 byte into a live buffer; the socket
            // is non-blocking.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    byte.as_mut_ptr().cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_get_the_wake_up_their_driver_allows() {
        assert_eq!(
            for_device(
                "net_af_xdp0",
                "net_af_xdp0,iface=l0",
                1,
                BTreeSet::from([9])
            ),
            DeviceWake::Xsk { fds: vec![9] }
        );
        // One socket per queue or nothing: a wrong guess would wake the
        // wrong worker.
        assert_eq!(
            for_device(
                "net_af_xdp0",
                "net_af_xdp0,iface=l0",
                2,
                BTreeSet::from([9])
            ),
            DeviceWake::None
        );
        assert_eq!(
            for_device(
                "net_af_packet0",
                "net_af_packet0,iface=lo",
                1,
                BTreeSet::new()
            ),
            DeviceWake::PacketTap {
                ifindex: 1 // loopback is interface 1 in every network namespace
            }
        );
        assert_eq!(
            for_device(
                "net_af_packet0",
                "net_af_packet0,iface=nosuch0",
                1,
                BTreeSet::new()
            ),
            DeviceWake::None
        );
        assert_eq!(
            for_device("net_ring0", "net_ring0", 1, BTreeSet::new()),
            DeviceWake::None
        );
    }

    #[test]
    fn the_process_s_af_xdp_sockets_are_found_by_domain() {
        // No AF_XDP socket here; a UDP socket is not one.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        assert!(!xsk_fds().contains(&udp.as_raw_fd()));
        assert_eq!(socket_domain(udp.as_raw_fd()), Some(libc::AF_INET));
    }
}
