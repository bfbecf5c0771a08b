//! Packet I/O backends behind one trait.
//!
//! A [`Port`] value is one worker's handle on one queue pair of one
//! interface: nothing in it is shared with another worker, so no method
//! takes a lock. Received buffers are lent to the worker as owned
//! [`PacketBuf`]s, rewritten in place and handed back to `tx_burst` without
//! a copy (a DPDK mbuf, a frame of an AF_PACKET ring, a `mem` buffer). sluice
//! originates few packets (ARP, RST, ICMP); those come from `alloc`.
//!
//! Bursts are passed as `Vec`s that the worker allocates once and reuses:
//! no allocation per burst, and the `Vec` keeps ownership explicit (a buffer
//! left in the `Vec` after `tx_burst` was not sent and is the caller's to free
//! and count).

pub mod afpacket;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod mem;
pub(crate) mod sys;
pub mod wait;

use std::os::fd::RawFd;

/// Room kept in front of every received or allocated frame so that a later
/// encapsulation mode (IP-in-IP, GUE) can prepend headers without a copy.
pub const HEADROOM: usize = 128;

/// A frame owned by the data path.
pub trait PacketBuf: Send {
    /// The frame's bytes, from the Ethernet header on.
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable in place.
    fn data_mut(&mut self) -> &mut [u8];
    /// Shortens the frame to `len` bytes (no-op if it is not longer).
    fn truncate(&mut self, len: usize);
    /// Grows the frame at the end by `extra` bytes (zeroed not guaranteed);
    /// `None` if the buffer has no room.
    fn extend(&mut self, extra: usize) -> Option<&mut [u8]>;
    /// Bytes available in front of the frame.
    fn headroom(&self) -> usize;
    /// Grows the frame at the front by `n` bytes taken from the headroom and
    /// returns them; `None` if there is not enough headroom.
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]>;
    /// Frame length in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the frame has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters a backend keeps about its own queue (what the NIC or kernel
/// dropped before sluice saw it, what it could not send).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the backend could not hand to the wire (ring full).
    pub tx_full: u64,
    /// Frames the backend or the NIC dropped before sluice polled them.
    pub rx_missed: u64,
    /// `alloc` calls that found no buffer.
    pub alloc_failed: u64,
}

/// One worker's queue pair on one interface.
pub trait Port {
    /// The buffer type this backend lends out.
    type Buf: PacketBuf;

    /// Appends up to `max` received frames to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<Self::Buf>, max: usize) -> usize;

    /// Sends frames from the front of `bufs`, removing those accepted; the
    /// rest stay in `bufs` for the caller to retry or free. Returns how many
    /// were accepted.
    fn tx_burst(&mut self, bufs: &mut Vec<Self::Buf>) -> usize;

    /// A fresh, empty frame with [`HEADROOM`] in front, for packets sluice
    /// originates; `None` when the backend's pool is exhausted.
    fn alloc(&mut self) -> Option<Self::Buf>;

    /// Returns a frame that will not be sent (a dropped packet).
    fn free(&mut self, buf: Self::Buf);

    /// Backend counters for this queue.
    fn stats(&self) -> PortStats;

    /// A descriptor that polls readable once this queue has frames for
    /// `rx_burst` (or fails), for an idle worker to sleep on until traffic
    /// returns; `None` when the backend has none, and the worker naps for a
    /// fixed time instead (see `IdlePolicy`). Asked before every sleep: a
    /// re-opened queue may have a new one.
    fn rx_event_fd(&self) -> Option<RawFd> {
        None
    }

    /// The worker is about to sleep on [`Port::rx_event_fd`]: a backend
    /// whose event costs something while nobody waits (an interrupt, a
    /// doorbell socket) turns it on here. Returns `false` when frames are
    /// already waiting (the worker then polls instead of sleeping): a frame
    /// that arrived between the worker's last poll and this call may have
    /// raised no event.
    fn arm_rx_event(&mut self) -> bool {
        true
    }

    /// The worker woke up: turn the event off again, consume it.
    fn disarm_rx_event(&mut self) {}

    /// Checks that the queue still matches its interface after link events
    /// (down/up, MTU change, interface re-created) and re-opens it when it
    /// does not, without blocking the caller for long. Called by the worker
    /// after every idle sleep and every few thousand polls; a backend
    /// rate-limits its own checks unless `now` (the queue's event polled as
    /// an error). Returns `true` when the queue was re-opened.
    fn check_link(&mut self, now: bool) -> bool {
        let _ = now;
        false
    }

    /// Times this queue was re-opened after a link event.
    fn reopens(&self) -> u64 {
        0
    }
}
