//! The systemd notification protocol (`sd_notify(3)`), without libsystemd:
//! a datagram to the Unix socket named by `$NOTIFY_SOCKET`. With
//! `Type=notify` (config/sluice.service) systemd considers sluice started
//! only once it says `READY=1`, which it does when every worker runs the
//! configuration and the control socket answers: units ordered after it,
//! and `systemctl start` itself, wait for a forwarding data path.

//!
//! **The file descriptor store** (`FDSTORE=1`, systemd's
//! `FileDescriptorStoreMax=`): sluice hands the manager a copy of each
//! AF_PACKET socket it opens, named for what it is ([`fd_name`]). The
//! manager keeps them while sluice dies and is restarted, so the sockets
//! stay members of their interfaces' fanout groups and their rings keep
//! receiving; the new process gets them back (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`: [`take_listen_fds`]) and reads on where the old one
//! stopped, so a frame that arrives meanwhile is late, not lost.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// The manager's socket, if sluice runs under one.
fn manager() -> Option<OsString> {
    std::env::var_os("NOTIFY_SOCKET")
}

/// Sends `state` with `fds` attached (`SCM_RIGHTS`) to `path`.
fn send(path: &OsString, state: &str, fds: &[RawFd]) -> io::Result<()> {
    let s = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // sockaddr_un: a path, or an abstract name after a NUL byte ("@name").
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (name, offset) = match bytes.strip_prefix(b"@") {
        Some(name) => (name, 1),
        None => (bytes, 0),
    };
    if name.len() + offset >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET too long",
        ));
    }
    for (d, &b) in addr.sun_path[offset..].iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    let addr_len =
        std::mem::size_of::<libc::sa_family_t>() + offset + name.len() + usize::from(offset == 0);
    let mut iov = libc::iovec {
        iov_base: state.as_ptr() as *mut libc::c_void,
        iov_len: state.len(),
    };
    // Room for the fds' control message, 8-byte aligned.
    let mut control = vec![0u64; 2 + fds.len().div_ceil(2) + 2];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = addr_len as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `space` writable, aligned bytes, so
        // the first header and its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
    }
    // SAFETY: msg and everything it points to live across the call.
    let rc = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `state` (e.g. "READY=1") to the service manager, if sluice runs
/// under one; does nothing otherwise. A manager that cannot be reached is
/// logged, never fatal: sluice forwards regardless.
pub fn notify(state: &str) {
    let Some(path) = manager() else {
        return;
    };
    if let Err(e) = send(&path, state, &[]) {
        tracing::warn!(socket = ?path, error = %e, "could not notify the service manager");
    }
}

/// The store name of worker `worker`'s (of `workers`) AF_PACKET socket on
/// `ifname` with `frames` ring slots of `frame_size` bytes: what a socket
/// must match to be taken back after a restart.
pub fn fd_name(
    ifname: &str,
    worker: u32,
    workers: u32,
    frames: usize,
    frame_size: usize,
) -> String {
    format!(
        "{}{frames}x{frame_size}",
        fd_name_prefix(ifname, worker, workers)
    )
}

/// What [`fd_name`] starts with for a socket of this interface and worker,
/// whatever its ring.
pub fn fd_name_prefix(ifname: &str, worker: u32, workers: u32) -> String {
    // FDNAME allows no ':' (LISTEN_FDNAMES separates names with it), and
    // interface names may hold one.
    let ifname: String = ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("afpacket-{ifname}-w{worker}of{workers}-")
}

/// Hands `fd` to the service manager's store under `name`, replacing what
/// it stored under that name; nothing without a manager.
pub fn store_fd(name: &str, fd: RawFd) {
    let Some(path) = manager() else {
        return;
    };
    let done = send(&path, &format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[])
        .and_then(|()| send(&path, &format!("FDSTORE=1\nFDNAME={name}"), &[fd]));
    if let Err(e) = done {
        tracing::warn!(socket = ?path, name, error = %e,
            "could not store the socket with the service manager: a restart will lose frames");
    }
}

/// Drops what the manager stored under `name`.
pub fn remove_fd(name: &str) {
    if let Some(path) = manager() {
        let _ = send(&path, &format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]);
    }
}

/// The descriptors the service manager passed to this process
/// (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, from descriptor 3 on),
/// with their names; taken once (the variables are cleared).
pub fn take_listen_fds() -> Vec<(String, OwnedFd)> {
    let var = |k: &str| std::env::var(k).ok();
    let ours = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let n = var("LISTEN_FDS")
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let names = var("LISTEN_FDNAMES").unwrap_or_default();
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    if !ours || !(1..=4096).contains(&n) {
        return Vec::new();
    }
    let mut names = names.split(':');
    (0..n)
        .filter_map(|i| {
            let fd = 3 + i;
            let name = names.next().unwrap_or("unknown").to_string();
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return None;
            }
            // SAFETY: F_SETFD on an open descriptor; it is ours from now on
            // (passed to this process for it to take).
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: the manager passed it to us alone; nothing else in the
            // process knows this number.
            Some((name, unsafe { OwnedFd::from_raw_fd(fd) }))
        })
        .collect()
}

/// Tells the service manager sluice forwards now.
pub fn ready(status: &str) {
    notify(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ));
}

/// Tells the service manager sluice is stopping.
pub fn stopping() {
    notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_fdname_safe_and_tell_layouts_apart() {
        let a = fd_name("eth0", 1, 2, 4096, 2048);
        assert_eq!(a, "afpacket-eth0-w1of2-4096x2048");
        assert_ne!(a, fd_name("eth0", 1, 2, 4096, 4096));
        assert_ne!(a, fd_name("eth0", 1, 4, 4096, 2048));
        let odd = fd_name("a:b c", 0, 1, 1, 1);
        assert!(!odd.contains(':') && !odd.contains(' '), "{odd}");
    }

    #[test]
    fn ready_reaches_the_socket_in_notify_socket() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        // The variable is process-wide: this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready("forwarding");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=forwarding\nMAINPID="),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
