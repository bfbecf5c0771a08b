//! The kernel interface under a DPDK virtual device, as `relink.rs` needs
//! it (its index: `port::sys::ifindex`): up flag, the XDP program attached to it (rtnetlink
//! `RTM_GETLINK`), and attaching a program again by id
//! (`BPF_PROG_GET_FD_BY_ID`, `RTM_SETLINK`). Hand-rolled rtnetlink: two
//! requests, no netlink crate.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Whether the interface is up (`IFF_UP`), asked through a datagram socket
/// of the calling thread's namespace.
pub(super) fn if_up(name: &CStr) -> bool {
    // SAFETY: a plain datagram socket, owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::port::sys::if_flags(&fd, name).is_ok_and(|f| f & libc::IFF_UP != 0)
}

// rtnetlink (linux/rtnetlink.h, linux/if_link.h).
const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const RTM_SETLINK: u16 = 19;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
const XDP_FLAGS_HW_MODE: u32 = 8;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;

/// The id of the XDP program attached to interface `index` (0: none) and
/// how (`XDP_ATTACHED_*`), by an `RTM_GETLINK` request on a netlink socket
/// of the caller's namespace.
pub(super) fn xdp_query(index: i32) -> io::Result<(u32, u8)> {
    let mut req = [0u8; NLMSG_HDR + IFINFOMSG];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, type, index, flags, change.
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&index.to_ne_bytes());
    parse_link_reply(&netlink_call(&req)?)
}

/// Sends one rtnetlink request and returns the first reply message.
fn netlink_call(req: &[u8]) -> io::Result<Vec<u8>> {
    // SAFETY: opens a netlink socket, owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sends `req.len()` bytes from a live buffer.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: receives into a live buffer of the given length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// `XDP_FLAGS_*_MODE` for an `XDP_ATTACHED_*` value (0: let the kernel
/// choose).
pub(super) fn attach_flags(attached: u8) -> u32 {
    match attached {
        XDP_ATTACHED_DRV => XDP_FLAGS_DRV_MODE,
        XDP_ATTACHED_SKB => XDP_FLAGS_SKB_MODE,
        XDP_ATTACHED_HW => XDP_FLAGS_HW_MODE,
        _ => 0,
    }
}

/// A descriptor of the BPF program with id `id` (`BPF_PROG_GET_FD_BY_ID`).
pub(super) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // union bpf_attr for BPF_PROG_GET_FD_BY_ID: prog_id, next_id, open_flags.
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: the bpf syscall reads `size_of_val(&attr)` bytes of attr.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_ptr(),
            size_of::<[u32; 3]>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| bad("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches the program `prog` to interface `index` in `mode`, only if the
/// interface has no program (`XDP_FLAGS_UPDATE_IF_NOEXIST`).
pub(super) fn xdp_attach(index: i32, prog: &OwnedFd, mode: u32) -> io::Result<()> {
    let mut req = Vec::with_capacity(NLMSG_HDR + IFINFOMSG + 20);
    req.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    req.extend_from_slice(&RTM_SETLINK.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0u8; 4]); // family, pad, type
    req.extend_from_slice(&index.to_ne_bytes());
    req.extend_from_slice(&[0u8; 8]); // flags, change
    req.extend_from_slice(&20u16.to_ne_bytes());
    req.extend_from_slice(&(IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
    req.extend_from_slice(&8u16.to_ne_bytes());
    req.extend_from_slice(&IFLA_XDP_FD.to_ne_bytes());
    req.extend_from_slice(&prog.as_raw_fd().to_ne_bytes());
    req.extend_from_slice(&8u16.to_ne_bytes());
    req.extend_from_slice(&IFLA_XDP_FLAGS.to_ne_bytes());
    req.extend_from_slice(&(mode | XDP_FLAGS_UPDATE_IF_NOEXIST).to_ne_bytes());
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    let reply = netlink_call(&req)?;
    if u16_at(&reply, 4) != Some(NLMSG_ERROR) {
        return Err(bad("no acknowledgement"));
    }
    match u32_at(&reply, NLMSG_HDR).map(|e| e as i32) {
        Some(0) => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(e.saturating_neg())),
        None => Err(bad("short acknowledgement")),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {what}"))
}

/// The XDP program id in an `RTM_NEWLINK` reply (0 when none is attached)
/// and its `XDP_ATTACHED_*` mode.
fn parse_link_reply(msg: &[u8]) -> io::Result<(u32, u8)> {
    let len = u32_at(msg, 0).ok_or_else(|| bad("short header"))? as usize;
    let kind = u16_at(msg, 4).ok_or_else(|| bad("short header"))?;
    let msg = msg.get(..len).ok_or_else(|| bad("truncated"))?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(msg, NLMSG_HDR).map_or(0, |e| (e as i32).saturating_neg());
        return Err(io::Error::from_raw_os_error(errno));
    }
    if kind != RTM_NEWLINK {
        return Err(bad("not a link message"));
    }
    let attrs = msg
        .get(NLMSG_HDR + IFINFOMSG..)
        .ok_or_else(|| bad("short"))?;
    let Some(xdp) = find_attr(attrs, IFLA_XDP) else {
        return Ok((0, 0));
    };
    let attached = find_attr(xdp, IFLA_XDP_ATTACHED)
        .and_then(|v| v.first().copied())
        .unwrap_or(0);
    // One id when a single mode is attached, one per mode otherwise.
    for kind in [IFLA_XDP_PROG_ID, IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID] {
        if let Some(id) = find_attr(xdp, kind).and_then(|v| u32_at(v, 0)) {
            if id != 0 {
                return Ok((id, attached));
            }
        }
    }
    Ok((0, attached))
}

/// The payload of the first attribute of type `kind` in `attrs`.
fn find_attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let len = usize::from(u16_at(attrs, at)?);
        let ty = u16_at(attrs, at + 2)? & NLA_TYPE_MASK;
        if len < 4 {
            return None;
        }
        let payload = attrs.get(at + 4..at + len)?;
        if ty == kind {
            return Some(payload);
        }
        at += (len + 3) & !3;
    }
    None
}

const _: () = assert!(size_of::<libc::nlmsghdr>() == NLMSG_HDR);

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn reply(attrs: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR + IFINFOMSG];
        m.extend_from_slice(attrs);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m
    }

    #[test]
    fn the_xdp_program_id_is_read_from_a_link_reply() {
        let mut attrs = attr(3, b"l0\0");
        let mut xdp = attr(2, &[1]);
        xdp.extend(attr(IFLA_XDP_PROG_ID, &77u32.to_ne_bytes()));
        attrs.extend(attr(IFLA_XDP | 0x8000, &xdp));
        assert_eq!(parse_link_reply(&reply(&attrs)).unwrap(), (77, 1));
        // Several modes attached: the per-mode ids.
        let mut xdp = attr(2, &[4]);
        xdp.extend(attr(IFLA_XDP_SKB_PROG_ID, &9u32.to_ne_bytes()));
        assert_eq!(
            parse_link_reply(&reply(&attr(IFLA_XDP, &xdp))).unwrap(),
            (9, 4)
        );
        // Nothing attached.
        assert_eq!(
            parse_link_reply(&reply(&attr(IFLA_XDP, &attr(2, &[0])))).unwrap(),
            (0, 0)
        );
        assert_eq!(parse_link_reply(&reply(&attr(3, b"l0\0"))).unwrap(), (0, 0));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        assert!(parse_link_reply(&[]).is_err());
        assert!(parse_link_reply(&[200, 0, 0, 0, 16, 0]).is_err());
        let mut err = vec![0u8; NLMSG_HDR + 4];
        err[0] = err.len() as u8;
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[NLMSG_HDR..].copy_from_slice(&(-19i32).to_ne_bytes());
        assert_eq!(parse_link_reply(&err).unwrap_err().raw_os_error(), Some(19));
        // An attribute claiming more than is there.
        let mut m = reply(&[]);
        m.extend_from_slice(&[64, 0, 43, 0, 1, 2]);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_link_reply(&m).unwrap(), (0, 0));
    }

    #[test]
    fn loopback_has_no_xdp_program_and_a_missing_index_is_an_error() {
        let lo = crate::port::sys::ifindex(c"lo").expect("loopback");
        assert!(lo > 0);
        assert_eq!(xdp_query(lo).unwrap().0, 0);
        assert!(if_up(c"lo"));
        assert!(xdp_query(i32::MAX).is_err());
        assert!(prog_fd_by_id(u32::MAX).is_err());
    }
}
