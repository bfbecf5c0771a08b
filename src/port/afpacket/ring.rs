//! The mapped rings and the buffers that point into them.
//!
//! Ownership protocol of an RX block (TPACKET_V3 hands blocks, not frames,
//! to user space):
//! - the kernel fills a block and flips its `block_status` to
//!   `TP_STATUS_USER`;
//! - when the port starts reading it, it sets the block's hold count to
//!   `frames + 1` (every frame presumed lent, plus the port's own hold while
//!   it walks the block) and takes one `Arc` reference on the mapping for the
//!   block;
//! - every lent [`AfPacketBuf`] gives back 1 when dropped, on whatever thread
//!   it ended up (buffers are `Send` for worker handoff); the port gives back
//!   its own hold plus the frames it skipped when it leaves the block;
//! - whoever brings the count to zero stores `TP_STATUS_KERNEL` (release
//!   ordering, so every write to the block's frames happens before the kernel
//!   reuses it) and drops the block's `Arc` reference.
//!
//! So a burst costs two atomic read-modify-writes per block on the port side
//! and one per frame when the frame is dropped, and no `Arc` clone per
//! packet. The mapping (and the socket) live until the port and every block
//! still lent out are gone, so a buffer outliving its port stays valid.
//!
//! A block held by a slow buffer holds up the ring: the kernel fills blocks
//! in order and stops (counting drops) when it reaches one user space still
//! owns. Workers must not park received buffers for long.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::super::{PacketBuf, HEADROOM};
use super::sys;

/// Offsets in `struct tpacket_block_desc` (linux/if_packet.h).
pub(super) mod block {
    pub const STATUS: usize = 8;
    pub const NUM_PKTS: usize = 12;
    pub const OFFSET_TO_FIRST_PKT: usize = 16;
    pub const SEQ_NUM: usize = 24;
    /// Bytes of the descriptor (the first frame starts after it).
    pub const DESC_LEN: usize = 48;
}

/// Offsets in `struct tpacket3_hdr` and the `sockaddr_ll` after it.
pub(super) mod frame {
    pub const NEXT_OFFSET: usize = 0;
    pub const SNAPLEN: usize = 12;
    pub const LEN: usize = 16;
    pub const STATUS: usize = 20;
    pub const MAC: usize = 24;
    /// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where `sockaddr_ll`
    /// starts.
    pub const HDR_LEN: usize = 48;
    pub const SLL_PKTTYPE: usize = HDR_LEN + 10;
}

/// Bytes of storage behind a pool buffer: headroom plus a 1500-byte MTU
/// frame with a VLAN tag and room to grow, as `mem` buffers.
pub const POOL_BUF_SIZE: usize = 2048;

/// One block's count of outstanding holds, alone on its cache line so
/// workers releasing different blocks do not contend.
#[repr(align(64))]
pub(super) struct BlockHold(AtomicU32);

/// The socket and its mapped rings, shared by the port and every RX block
/// that still has frames lent out.
pub(super) struct RingMap {
    fd: OwnedFd,
    base: NonNull<u8>,
    map_len: usize,
    pub(super) rx_block_size: usize,
    pub(super) rx_blocks: usize,
    holds: Box<[BlockHold]>,
}

// SAFETY: the mapping is plain shared memory; which thread may touch which
// byte is decided by the block protocol above (the hold counts and
// `block_status` are only accessed atomically), not by thread identity.
unsafe impl Send for RingMap {}
// SAFETY: as for `Send`: all shared mutation goes through atomics.
unsafe impl Sync for RingMap {}

impl RingMap {
    pub(super) fn new(
        fd: OwnedFd,
        base: NonNull<u8>,
        map_len: usize,
        rx_block_size: usize,
        rx_blocks: usize,
    ) -> RingMap {
        RingMap {
            fd,
            base,
            map_len,
            rx_block_size,
            rx_blocks,
            holds: (0..rx_blocks)
                .map(|_| BlockHold(AtomicU32::new(0)))
                .collect(),
        }
    }

    pub(super) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// First byte of RX block `index` (< `rx_blocks`).
    #[inline]
    pub(super) fn rx_block(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.rx_blocks);
        // SAFETY: the RX ring is the first `rx_block_size * rx_blocks` bytes
        // of the mapping and `index` is in range.
        unsafe { self.base.as_ptr().add(index * self.rx_block_size) }
    }

    /// The block's `block_status` word, shared with the kernel.
    #[inline]
    pub(super) fn block_status(&self, index: usize) -> &AtomicU32 {
        // SAFETY: the word is inside the mapping, 4-byte aligned (blocks are
        // page aligned, offset 8), lives as long as `self`, and both sides
        // only access it as a whole aligned u32.
        unsafe { AtomicU32::from_ptr(self.rx_block(index).add(block::STATUS).cast()) }
    }

    /// Starts the port's walk of a block the kernel handed over: every frame
    /// presumed lent, plus the walk's own hold; the block keeps the mapping
    /// alive through one `Arc` reference until its holds reach zero.
    #[inline]
    pub(super) fn hold_block(this: &Arc<RingMap>, index: usize, frames: u32) {
        this.holds[index].0.fetch_add(frames + 1, Ordering::Relaxed);
        // SAFETY: `this` is a live Arc, so its strong count is at least one.
        unsafe { Arc::increment_strong_count(Arc::as_ptr(this)) };
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: the last `Arc` is gone: the port and every block with lent
        // frames have given theirs back, so nothing points into the mapping.
        unsafe { sys::unmap_rings(self.base, self.map_len) };
    }
}

/// Gives back `count` holds on RX block `index`; the last one returns the
/// block to the kernel and drops the block's reference on the mapping.
///
/// # Safety
/// `map` must come from `Arc::as_ptr` of a `RingMap` on which
/// [`RingMap::hold_block`] was called for this block, and the caller must own
/// `count` of the block's outstanding holds.
#[inline]
pub(super) unsafe fn release_block(map: NonNull<RingMap>, index: usize, count: u32) {
    // SAFETY: the caller owns holds on the block, so the block's Arc
    // reference keeps the mapping alive at least until the fetch_sub.
    let ring = unsafe { map.as_ref() };
    // AcqRel: the last releaser must see every other holder's writes to the
    // block before handing it back.
    if ring.holds[index].0.fetch_sub(count, Ordering::AcqRel) == count {
        ring.block_status(index)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        // SAFETY: this was the block's last hold, so this thread owns the
        // reference taken in `hold_block`; nothing touches `ring` after it.
        unsafe { Arc::decrement_strong_count(map.as_ptr()) };
    }
}

/// Where a buffer's bytes live.
enum Origin {
    /// A frame in an RX block of the mapping.
    Ring { map: NonNull<RingMap>, block: u32 },
    /// A heap allocation of `POOL_BUF_SIZE` bytes (from `alloc`).
    Heap,
}

/// A frame lent by an [`AfPacketPort`](super::AfPacketPort): either a frame
/// of an RX block, used in place (no copy on receive), or a pool buffer with
/// [`HEADROOM`] for frames sluice originates.
///
/// A received frame's headroom is the whole frame slot in front of the
/// Ethernet header (the kernel's frame header, consumed before the buffer
/// is lent, plus `PACKET_RESERVE` = [`HEADROOM`] bytes), so it is at least
/// `HEADROOM`. Its tailroom is only the alignment padding up to the next
/// frame of the block: `extend` on a received frame usually returns `None`.
///
/// Dropping a buffer (on any thread) gives its block back when it was the
/// block's last lent frame.
pub struct AfPacketBuf {
    /// Start of the storage: the frame slot or the heap allocation.
    base: NonNull<u8>,
    start: u32,
    len: u32,
    /// Bytes of storage from `base`.
    cap: u32,
    origin: Origin,
}

// SAFETY: the buffer owns its bytes exclusively (a frame slot of a
// user-owned block, or its heap allocation), and giving back a ring frame
// from another thread is what the atomic hold count is for.
unsafe impl Send for AfPacketBuf {}

impl AfPacketBuf {
    /// A frame of an RX block. Lent only by the port's RX walk.
    ///
    /// # Safety
    /// `[slot, slot + cap)` must lie in RX block `block` of `map`, be owned
    /// by this buffer alone, and `start + len <= cap`; the caller hands the
    /// buffer one of the block's holds.
    #[inline]
    pub(super) unsafe fn from_ring(
        map: NonNull<RingMap>,
        block: u32,
        slot: NonNull<u8>,
        start: u32,
        len: u32,
        cap: u32,
    ) -> AfPacketBuf {
        AfPacketBuf {
            base: slot,
            start,
            len,
            cap,
            origin: Origin::Ring { map, block },
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

    /// Whether the frame is a slot of an RX ring block (received in place).
    pub fn is_ring_frame(&self) -> bool {
        !self.is_heap()
    }
}

impl Drop for AfPacketBuf {
    fn drop(&mut self) {
        match self.origin {
            Origin::Ring { map, block } => {
                // SAFETY: a ring buffer owns one hold on its block (from_ring's
                // contract) and gives it back exactly once, here.
                unsafe { release_block(map, block as usize, 1) }
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
}
