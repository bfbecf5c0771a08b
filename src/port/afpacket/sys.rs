//! Thin wrappers over the libc calls the AF_PACKET port makes at open, per
//! TX burst and at stats time: socket options, interface ioctls, the mmap of
//! the RX ring, `sendmmsg`.
//!
//! Every `unsafe` block of the backend outside the ring protocol lives here.

use std::ffi::CString;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::port::sys::{ifreq, int_option};

/// `SIOCETHTOOL` sub-commands (linux/ethtool.h); libc does not carry them.
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_GGRO: u32 = 0x2b;
/// `ETH_FLAG_LRO` in the `ETHTOOL_GFLAGS` word.
const ETH_FLAG_LRO: u32 = 1 << 15;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Opens an AF_PACKET raw socket that receives nothing until it is bound
/// with a protocol: opening it with `ETH_P_ALL` would let frames of every
/// interface into the ring before `bind` narrows it to one.
pub(super) fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; no pointers.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt` with a `T` passed by reference and its exact size.
pub(super) fn set_option<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` for the duration of the call and the
    // length passed is exactly its size; the kernel only reads it.
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

/// Reads and resets the socket's receive counters (`PACKET_STATISTICS`).
pub(super) fn packet_statistics(fd: i32) -> io::Result<libc::tpacket_stats> {
    let mut stats = MaybeUninit::<libc::tpacket_stats>::zeroed();
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` is writable for `len` bytes and `len` is a valid
    // in/out pointer; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised plain integers, partly overwritten by the kernel.
    Ok(unsafe { stats.assume_init() })
}

/// Binds the socket to `ifindex` for every protocol (`ETH_P_ALL`).
pub(super) fn bind_all(fd: &OwnedFd, ifindex: i32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data for which all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex;
    // SAFETY: `addr` is a valid sockaddr_ll and the length is its size.
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
    Ok(())
}

/// The interface MTU (`SIOCGIFMTU`).
pub(super) fn mtu(fd: &OwnedFd, name: &CString) -> io::Result<u32> {
    let mut req = ifreq(name);
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel writes
    // the MTU into its union.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// One `SIOCETHTOOL` get command returning an `ethtool_value`.
fn ethtool_value(fd: &OwnedFd, name: &CString, cmd: u32) -> io::Result<u32> {
    let mut value = EthtoolValue { cmd, data: 0 };
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: `req` names the interface and points at `value`, which lives
    // across the call; every get command used here writes one ethtool_value.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// The names of the offloads that are on and would hand sluice merged or
/// unsegmented frames (GRO, LRO on receive; TSO, GSO on send).
pub(super) fn offloads_on(fd: &OwnedFd, name: &CString) -> io::Result<Vec<&'static str>> {
    let mut on = Vec::new();
    for (cmd, label) in [
        (ETHTOOL_GGRO, "gro"),
        (ETHTOOL_GGSO, "gso"),
        (ETHTOOL_GTSO, "tso"),
    ] {
        match ethtool_value(fd, name, cmd) {
            Ok(0) => {}
            Ok(_) => on.push(label),
            // A driver without the hook cannot have the offload.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => return Err(e),
        }
    }
    match ethtool_value(fd, name, ETHTOOL_GFLAGS) {
        Ok(flags) if flags & ETH_FLAG_LRO != 0 => on.push("lro"),
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
        Err(e) => return Err(e),
    }
    Ok(on)
}

/// Shared read-write mapping of the socket's RX ring.
pub(super) fn map_rings(fd: &OwnedFd, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh mapping chosen by the kernel; nothing else is mapped
    // over. MAP_POPULATE faults the ring in now rather than on the hot path.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))
}

/// Undoes [`map_rings`].
///
/// # Safety
/// `ptr`/`len` must be a live mapping from `map_rings` that nothing reads or
/// writes any more.
pub(super) unsafe fn unmap_rings(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller; a failure could only mean a bad
    // argument, and there is nothing useful to do about it in a destructor.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len);
    }
}

/// Sends a batch of prepared messages without waiting; returns how many
/// the kernel took (a prefix of `msgs`).
#[inline]
pub(super) fn send_batch(fd: i32, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: every message points at one iovec describing a live buffer
    // (set up by the caller for this call); the kernel only reads them and
    // writes `msg_len`.
    let rc = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// A classic BPF program that accepts nothing.
pub(super) fn attach_drop_all(fd: &OwnedFd) -> io::Result<()> {
    let mut insn = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insn.as_mut_ptr(),
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Removes the filter set by [`attach_drop_all`].
pub(super) fn detach_filter(fd: &OwnedFd) -> io::Result<()> {
    set_option(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &0i32)
}

/// The kernel's page size (ring blocks must be multiples of it).
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// Takes the socket's pending error (`SO_ERROR`, which clears it): the
/// kernel sets `ENETDOWN` on a packet socket whose interface went down.
pub(super) fn take_error(fd: i32) -> io::Result<i32> {
    int_option(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// `SIOCGIFINDEX` and `SIOCGSKNS` from `linux/sockios.h` (not in libc for
/// every target).
const SIOCGIFINDEX: libc::c_ulong = 0x8933;
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// The index of the interface named `name` in the socket's network
/// namespace (which need not be the calling thread's), or `None`.
pub(super) fn ifindex_of(fd: &OwnedFd, name: &CString) -> Option<i32> {
    let mut req = ifreq(name);
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel writes
    // the index into its union.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGIFINDEX as _, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: SIOCGIFINDEX filled the `ifru_ifindex` member of the union.
    Some(unsafe { req.ifr_ifru.ifru_ifindex })
}

/// A descriptor of the socket's network namespace (`SIOCGSKNS`), for a
/// thread that must open sockets there.
pub(super) fn netns_of(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS as _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `rc` is a new descriptor this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

/// Moves the calling thread into the network namespace `ns`.
pub(super) fn enter_netns(ns: &OwnedFd) -> io::Result<()> {
    // SAFETY: a namespace descriptor; only the calling thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is an AF_PACKET socket with a TPACKET_V2 ring version.
pub(super) fn is_packet_v2(fd: &OwnedFd) -> io::Result<bool> {
    let fd = fd.as_raw_fd();
    if int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? != libc::AF_PACKET {
        return Ok(false);
    }
    Ok(int_option(fd, libc::SOL_PACKET, libc::PACKET_VERSION)?
        == libc::tpacket_versions::TPACKET_V2 as i32)
}

/// The interface index a packet socket is bound to.
pub(super) fn bound_ifindex(fd: &OwnedFd) -> io::Result<i32> {
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `addr`.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.sll_ifindex)
}
