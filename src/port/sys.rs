//! Small interface and socket queries shared by the port backends
//! (AF_PACKET, and the DPDK port's watch on the kernel interface under a
//! virtual device).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The interface's index, or `None` if there is no such interface in the
/// calling thread's network namespace.
pub(crate) fn ifindex(name: &CStr) -> Option<i32> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    i32::try_from(index).ok().filter(|&i| i != 0)
}

/// An `ifreq` naming the interface; a name longer than `IFNAMSIZ - 1` is
/// cut (callers check names when they accept them).
pub(crate) fn ifreq(name: &CStr) -> libc::ifreq {
    // SAFETY: ifreq is plain data for which all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let room = req.ifr_name.len() - 1;
    for (dst, &src) in req
        .ifr_name
        .iter_mut()
        .zip(name.to_bytes().iter().take(room))
    {
        *dst = src as libc::c_char;
    }
    req
}

/// The interface's flags (`SIOCGIFFLAGS`, asked through any socket `fd` of
/// the namespace to look in): `IFF_UP`, `IFF_RUNNING`, ...
pub(crate) fn if_flags(fd: &OwnedFd, name: &CStr) -> io::Result<i32> {
    let mut req = ifreq(name);
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel writes
    // the flags into its union.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// An `int` socket option of `fd` (`getsockopt`); a descriptor that is not
/// a socket, or is closed, is an error.
pub(crate) fn int_option(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value = 0i32;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: reads an int option into a live i32 of the given length.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
