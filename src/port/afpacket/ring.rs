//! The mapped RX ring and the buffers that point into it.
//!
//! `TPACKET_V2` hands frames, one at a time, to user space: each frame slot
//! starts with a `tpacket2_hdr` whose `tp_status` word says who owns it.
//! Ownership protocol of a slot:
//! - the kernel fills a slot whose status is `TP_STATUS_KERNEL` (0) and
//!   flips it to `TP_STATUS_USER`, then wakes pollers of the socket;
//! - the port lends the frame in place and marks the slot [`LENT`] (the
//!   `USER` bit cleared but not 0, so neither the kernel nor the port's next
//!   lap takes it);
//! - the buffer, dropped on whatever thread it ended up (buffers are `Send`
//!   for worker handoff), stores `TP_STATUS_KERNEL` with release ordering,
//!   so every write to the frame happens before the kernel reuses it.
//!
//! The kernel fills slots in ring order and stops (counting drops) at one
//! user space still owns, and the port walks in the same order, so both
//! stay in step; a buffer held a long time holds up the ring behind it.
//! Workers must not park received buffers.
//!
//! The mapping (and the socket) must outlive every lent frame: the port
//! holds one `Arc` on it, and the lent frames together hold one more while
//! any is out (a count of lent frames: one atomic add per burst on the
//! port, one atomic subtract per frame when it is dropped; whoever takes
//! the count to zero gives the frames' reference back). No `Arc` clone per
//! packet, and a buffer outliving its port stays valid.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::super::{PacketBuf, HEADROOM};
use super::sys;

/// Offsets in `struct tpacket2_hdr` and the `sockaddr_ll` after it
/// (linux/if_packet.h).
pub(super) mod frame {
    pub const STATUS: usize = 0;
    pub const LEN: usize = 4;
    pub const SNAPLEN: usize = 8;
    pub const MAC: usize = 12;
    /// `tp_sec`, `tp_nsec`: when the kernel received the frame.
    pub const SEC: usize = 16;
    pub const NSEC: usize = 20;
    pub const VLAN_TCI: usize = 24;
    pub const VLAN_TPID: usize = 26;
    /// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where `sockaddr_ll`
    /// starts, and the bytes of the slot a lent buffer must never touch
    /// (the status word lives there until the frame goes back).
    pub const HDR_LEN: usize = 32;
    pub const SLL_PKTTYPE: usize = HDR_LEN + 10;
}

/// Status of a slot lent out by the port: the `TP_STATUS_USER` bit clear
/// (the port's walk stops at it) but not `TP_STATUS_KERNEL` (the kernel
/// does not refill it). Bit 28 is used by no `TP_STATUS_*` flag.
pub(super) const LENT: u32 = 1 << 28;

/// Bytes of storage behind a pool buffer: headroom plus a 1500-byte MTU
/// frame with a VLAN tag and room to grow, as `mem` buffers.
pub const POOL_BUF_SIZE: usize = 2048;

/// The socket and its mapped RX ring, shared by the port and its lent
/// frames.
pub(super) struct RingMap {
    fd: OwnedFd,
    base: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    frames_per_block: usize,
    pub(super) frame_size: usize,
    pub(super) frames: usize,
    /// Frames lent out and not yet given back.
    lent: AtomicU32,
}

// SAFETY: the mapping is plain shared memory; which thread may touch which
// byte is decided by the slot protocol above (status words and the lent
// count are only accessed atomically), not by thread identity.
unsafe impl Send for RingMap {}
// SAFETY: as for `Send`: all shared mutation goes through atomics.
unsafe impl Sync for RingMap {}

impl RingMap {
    pub(super) fn new(
        fd: OwnedFd,
        base: NonNull<u8>,
        map_len: usize,
        block_size: usize,
        frame_size: usize,
        frames: usize,
    ) -> RingMap {
        RingMap {
            fd,
            base,
            map_len,
            block_size,
            frames_per_block: block_size / frame_size,
            frame_size,
            frames,
            lent: AtomicU32::new(0),
        }
    }

    pub(super) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// First byte of frame slot `index` (< `frames`).
    #[inline]
    pub(super) fn slot(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.frames);
        let offset = (index / self.frames_per_block) * self.block_size
            + (index % self.frames_per_block) * self.frame_size;
        // SAFETY: blocks of `block_size` bytes each hold `frames_per_block`
        // whole slots, and `index` is in range, so the slot lies inside the
        // `map_len` bytes mapped.
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// The `tp_status` word of the slot at `slot`, shared with the kernel.
    ///
    /// # Safety
    /// `slot` must be a slot of this ring (from [`RingMap::slot`]).
    #[inline]
    pub(super) unsafe fn status(&self, slot: *mut u8) -> &AtomicU32 {
        // SAFETY: slots are 16-byte aligned inside the mapping (the kernel
        // requires it of frame sizes), the word lives as long as `self`,
        // and both sides only access it as a whole aligned u32.
        unsafe { AtomicU32::from_ptr(slot.add(frame::STATUS).cast()) }
    }

    /// `n` frames are about to be lent: the first of a lent set takes the
    /// set's reference on the mapping.
    #[inline]
    pub(super) fn lend(this: &Arc<RingMap>, n: u32) {
        if this.lent.fetch_add(n, Ordering::Relaxed) == 0 {
            // SAFETY: `this` is a live Arc, so its strong count is at least one.
            unsafe { Arc::increment_strong_count(Arc::as_ptr(this)) };
        }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: the last `Arc` is gone: the port and every lent frame have
        // given theirs back, so nothing points into the mapping.
        unsafe { sys::unmap_rings(self.base, self.map_len) };
    }
}

/// Gives the frame at `slot` back to the kernel, and with the last lent
/// frame, the lent set's reference on the mapping.
///
/// # Safety
/// `map` must come from `Arc::as_ptr` of the `RingMap` that lent the frame
/// at `slot` (counted by [`RingMap::lend`]), and the caller must own it.
#[inline]
unsafe fn give_back(map: NonNull<RingMap>, slot: *mut u8) {
    // SAFETY: the lent set's Arc reference keeps the mapping alive at least
    // until the fetch_sub below, which only this frame's owner can do.
    let ring = unsafe { map.as_ref() };
    // SAFETY: `slot` is a slot of this ring (the caller's contract).
    unsafe { ring.status(slot) }.store(libc::TP_STATUS_KERNEL, Ordering::Release);
    // AcqRel: the last one must see the others' returns before unmapping.
    if ring.lent.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: this was the last lent frame, so this thread owns the
        // reference taken in `lend`; nothing touches `ring` after it.
        unsafe { Arc::decrement_strong_count(map.as_ptr()) };
    }
}

/// Where a buffer's bytes live.
enum Origin {
    /// A frame slot of the RX ring (`base` is the slot plus its header).
    Ring { map: NonNull<RingMap> },
    /// A heap allocation of `POOL_BUF_SIZE` bytes (from `alloc`).
    Heap,
}

/// A frame lent by an [`AfPacketPort`](super::AfPacketPort): either a frame
/// of the RX ring, used in place (no copy on receive), or a pool buffer with
/// [`HEADROOM`] for frames sluice originates.
///
/// A received frame's storage is its ring slot after the kernel's
/// `tpacket2_hdr` (whose status word stays the kernel's and port's): its
/// headroom is the rest of the header area plus `PACKET_RESERVE` =
/// [`HEADROOM`] bytes, so at least `HEADROOM`; its tailroom runs to the end
/// of the slot.
///
/// Dropping a ring buffer (on any thread) gives its slot back.
pub struct AfPacketBuf {
    /// Start of the storage: the slot past its header, or the heap block.
    base: NonNull<u8>,
    start: u32,
    len: u32,
    /// Bytes of storage from `base`.
    cap: u32,
    origin: Origin,
}

// SAFETY: the buffer owns its bytes exclusively (a lent slot, or its heap
// allocation), and giving back a slot from another thread is what the
// atomic status word and lent count are for.
unsafe impl Send for AfPacketBuf {}

impl AfPacketBuf {
    /// A frame of the RX ring. Lent only by the port's RX walk.
    ///
    /// # Safety
    /// `slot` must be a slot of `map`'s ring marked [`LENT`] and owned by
    /// this buffer alone, counted by [`RingMap::lend`]; `frame::HDR_LEN +
    /// start + len <= cap + frame::HDR_LEN <= frame_size`.
    #[inline]
    pub(super) unsafe fn from_ring(
        map: NonNull<RingMap>,
        slot: NonNull<u8>,
        start: u32,
        len: u32,
        cap: u32,
    ) -> AfPacketBuf {
        AfPacketBuf {
            // SAFETY: the header lies inside the slot (caller's contract).
            base: unsafe { NonNull::new_unchecked(slot.as_ptr().add(frame::HDR_LEN)) },
            start,
            len,
            cap,
            origin: Origin::Ring { map },
        }
    }

    /// A fresh pool buffer with [`HEADROOM`] and no bytes.
    pub(super) fn new_heap() -> AfPacketBuf {
        let storage: Box<[u8; POOL_BUF_SIZE]> = Box::new([0; POOL_BUF_SIZE]);
        let base = NonNull::from(Box::leak(storage)).cast::<u8>();
        AfPacketBuf {
            base,
            start: HEADROOM as u32,
            len: 0,
            cap: POOL_BUF_SIZE as u32,
            origin: Origin::Heap,
        }
    }

    /// Whether the buffer is a pool buffer (recyclable by any port).
    #[inline]
    pub(super) fn is_heap(&self) -> bool {
        matches!(self.origin, Origin::Heap)
    }

    /// Empties a pool buffer for reuse by `alloc`.
    #[inline]
    pub(super) fn reset(&mut self) {
        self.start = HEADROOM as u32;
        self.len = 0;
    }

    /// Whether the frame is a slot of an RX ring (received in place).
    pub fn is_ring_frame(&self) -> bool {
        !self.is_heap()
    }
}

impl Drop for AfPacketBuf {
    fn drop(&mut self) {
        match self.origin {
            Origin::Ring { map } => {
                // SAFETY: a ring buffer owns its lent slot, whose start lies
                // `HDR_LEN` before `base` (from_ring's contract), and gives
                // it back exactly once, here.
                unsafe { give_back(map, self.base.as_ptr().sub(frame::HDR_LEN)) }
            }
            Origin::Heap => {
                // SAFETY: `base` came from `Box::leak` of a
                // `[u8; POOL_BUF_SIZE]` in `new_heap` and is freed once, here.
                drop(unsafe { Box::from_raw(self.base.as_ptr().cast::<[u8; POOL_BUF_SIZE]>()) });
            }
        }
    }
}

impl std::fmt::Debug for AfPacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketBuf")
            .field("ring", &self.is_ring_frame())
            .field("start", &self.start)
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl PacketBuf for AfPacketBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        // SAFETY: `start + len <= cap` is kept by every method, and the
        // buffer owns `cap` bytes from `base` exclusively.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(self.start as usize),
                self.len as usize,
            )
        }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(self.start as usize),
                self.len as usize,
            )
        }
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u32;
        }
    }

    fn extend(&mut self, extra: usize) -> Option<&mut [u8]> {
        let end = self.start as usize + self.len as usize;
        if extra > self.cap as usize - end {
            return None;
        }
        self.len += extra as u32;
        // SAFETY: `end + extra <= cap`, checked above; exclusive via `&mut`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(end), extra) })
    }

    #[inline]
    fn headroom(&self) -> usize {
        self.start as usize
    }

    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start as usize {
            return None;
        }
        self.start -= n as u32;
        self.len += n as u32;
        // SAFETY: `start + n` is the old start, within `cap`; exclusive.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(self.start as usize), n)
        })
    }

    #[inline]
    fn len(&self) -> usize {
        self.len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_buffers_have_headroom_and_grow_both_ways() {
        let mut b = AfPacketBuf::new_heap();
        assert!(b.is_empty());
        assert_eq!(b.headroom(), HEADROOM);
        b.extend(60).expect("tailroom").fill(9);
        b.prepend(20).expect("headroom").fill(7);
        assert_eq!(b.len(), 80);
        assert_eq!(b.data()[0], 7);
        assert_eq!(b.data()[20], 9);
        assert!(b.prepend(HEADROOM).is_none());
        assert!(b.extend(POOL_BUF_SIZE).is_none());
        b.truncate(10);
        assert_eq!(b.len(), 10);
        b.reset();
        assert_eq!((b.len(), b.headroom()), (0, HEADROOM));
    }

    #[test]
    fn pool_buffers_are_send() {
        fn is_send<T: Send>() {}
        is_send::<AfPacketBuf>();
    }

    #[test]
    fn lent_marks_a_slot_neither_side_takes() {
        assert_eq!(LENT & libc::TP_STATUS_USER, 0);
        assert_ne!(LENT, libc::TP_STATUS_KERNEL);
        for flag in [
            libc::TP_STATUS_COPY,
            libc::TP_STATUS_LOSING,
            libc::TP_STATUS_CSUMNOTREADY,
            libc::TP_STATUS_VLAN_VALID,
            libc::TP_STATUS_VLAN_TPID_VALID,
            libc::TP_STATUS_CSUM_VALID,
            libc::TP_STATUS_TS_SOFTWARE,
            libc::TP_STATUS_TS_RAW_HARDWARE,
        ] {
            assert_eq!(LENT & flag, 0, "{flag:#x}");
        }
    }
}
