//! In-memory ports: rings for tests and a traffic generator for benchmarks.
//!
//! Both lend [`MemBuf`]s, heap frames with [`HEADROOM`] in front, and recycle
//! them through a per-port free list so steady state allocates nothing.

use std::os::fd::RawFd;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::wait::Doorbell;
use super::{PacketBuf, Port, PortStats, HEADROOM};

/// Bytes of storage behind every [`MemBuf`] (headroom + a full 1500-byte
/// MTU frame with VLAN tag + room to grow).
pub const BUF_SIZE: usize = 2048;

/// A frame in an in-memory port.
pub struct MemBuf {
    storage: Box<[u8; BUF_SIZE]>,
    start: u16,
    len: u16,
}

impl MemBuf {
    /// An empty frame with the standard headroom.
    pub fn new() -> MemBuf {
        MemBuf {
            storage: Box::new([0; BUF_SIZE]),
            start: HEADROOM as u16,
            len: 0,
        }
    }

    /// A frame holding a copy of `bytes` (truncated to what fits).
    pub fn from_bytes(bytes: &[u8]) -> MemBuf {
        let mut b = MemBuf::new();
        b.set_frame(bytes);
        b
    }

    /// Resets the frame to the standard headroom and copies `bytes` in.
    pub fn set_frame(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(BUF_SIZE - HEADROOM);
        self.start = HEADROOM as u16;
        self.storage[HEADROOM..HEADROOM + n].copy_from_slice(&bytes[..n]);
        self.len = n as u16;
    }

    /// Resets the frame to `len` bytes at the standard headroom and returns
    /// them for writing (used by generators, which write the frame in place).
    pub fn reset(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(BUF_SIZE - HEADROOM);
        self.start = HEADROOM as u16;
        self.len = n as u16;
        &mut self.storage[HEADROOM..HEADROOM + n]
    }
}

impl Default for MemBuf {
    fn default() -> Self {
        MemBuf::new()
    }
}

impl std::fmt::Debug for MemBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemBuf")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl PacketBuf for MemBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let s = self.start as usize;
        &self.storage[s..s + self.len as usize]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let s = self.start as usize;
        &mut self.storage[s..s + self.len as usize]
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u16;
        }
    }

    fn extend(&mut self, extra: usize) -> Option<&mut [u8]> {
        let end = self.start as usize + self.len as usize;
        if end + extra > BUF_SIZE {
            return None;
        }
        self.len += extra as u16;
        Some(&mut self.storage[end..end + extra])
    }

    fn headroom(&self) -> usize {
        self.start as usize
    }

    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start as usize {
            return None;
        }
        self.start -= n as u16;
        self.len += n as u16;
        let s = self.start as usize;
        Some(&mut self.storage[s..s + n])
    }

    #[inline]
    fn len(&self) -> usize {
        self.len as usize
    }
}

/// A free list of buffers, so a port recycles what it sends or drops.
#[derive(Default)]
struct Pool {
    free: Vec<MemBuf>,
}

impl Pool {
    fn with_buffers(n: usize) -> Pool {
        Pool {
            free: (0..n).map(|_| MemBuf::new()).collect(),
        }
    }

    /// An empty frame with the standard headroom.
    #[inline]
    fn get(&mut self) -> MemBuf {
        match self.free.pop() {
            Some(mut b) => {
                b.start = HEADROOM as u16;
                b.len = 0;
                b
            }
            None => MemBuf::new(),
        }
    }

    #[inline]
    fn put(&mut self, b: MemBuf) {
        // Buffers migrate between workers on handoff; keep each pool bounded
        // so a one-way migration cannot grow memory without limit.
        if self.free.len() < 4096 {
            self.free.push(b);
        }
    }
}

/// The far end of a [`QueuePort`]: what a test uses as "the wire".
#[derive(Clone)]
pub struct MemWire {
    rx: Arc<ArrayQueue<MemBuf>>,
    tx: Arc<ArrayQueue<MemBuf>>,
    /// Rung after each injected frame: the port's receive event, so a
    /// worker sleeping on it wakes as it would for a NIC's.
    bell: Arc<Doorbell>,
}

impl MemWire {
    /// Puts a frame on the wire towards sluice; `false` if the ring is full.
    pub fn inject(&self, frame: &[u8]) -> bool {
        let ok = self.rx.push(MemBuf::from_bytes(frame)).is_ok();
        self.bell.ring();
        ok
    }

    /// Takes one frame sluice sent, if any.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.tx.pop().map(|b| b.data().to_vec())
    }

    /// Takes every frame sluice has sent so far.
    pub fn take_all(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.take()).collect()
    }

    /// Frames waiting for sluice to poll.
    pub fn pending_rx(&self) -> usize {
        self.rx.len()
    }
}

/// An in-memory port whose "wire" is a pair of lock-free rings, fed and
/// drained by another thread (tests, the control thread's simulations).
pub struct QueuePort {
    wire: MemWire,
    pool: Pool,
    stats: PortStats,
}

impl QueuePort {
    /// A port with rings of `depth` frames and the wire to drive it.
    pub fn new(depth: usize) -> (QueuePort, MemWire) {
        let wire = MemWire {
            rx: Arc::new(ArrayQueue::new(depth)),
            tx: Arc::new(ArrayQueue::new(depth)),
            bell: Arc::new(Doorbell::new()),
        };
        let port = QueuePort {
            wire: wire.clone(),
            pool: Pool::default(),
            stats: PortStats::default(),
        };
        (port, wire)
    }
}

impl Port for QueuePort {
    type Buf = MemBuf;

    fn rx_burst(&mut self, out: &mut Vec<MemBuf>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.wire.rx.pop() {
                Some(b) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += b.len() as u64;
                    out.push(b);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    fn tx_burst(&mut self, bufs: &mut Vec<MemBuf>) -> usize {
        // This port is the ring's only producer, so the room seen here cannot
        // shrink before the pushes below.
        let room = self.wire.tx.capacity() - self.wire.tx.len();
        let sent = room.min(bufs.len());
        for b in bufs.drain(..sent) {
            self.stats.tx_bytes += b.len() as u64;
            if let Err(b) = self.wire.tx.push(b) {
                self.stats.tx_full += 1;
                self.pool.put(b);
            }
        }
        self.stats.tx_packets += sent as u64;
        sent
    }

    fn alloc(&mut self) -> Option<MemBuf> {
        Some(self.pool.get())
    }

    fn free(&mut self, buf: MemBuf) {
        self.pool.put(buf);
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn rx_event_fd(&self) -> Option<RawFd> {
        self.wire.bell.fd()
    }

    fn arm_rx_event(&mut self) -> bool {
        self.wire.bell.arm();
        // A frame injected before the bell was armed rang nobody.
        self.wire.rx.is_empty()
    }

    fn disarm_rx_event(&mut self) {
        // Consumes a ring if there was one (one read of a non-blocking
        // eventfd; this port is for tests).
        self.wire.bell.disarm(true);
    }
}

/// Something that writes synthetic frames (the benchmark's traffic).
pub trait FrameSource: Send {
    /// Writes the next frame into `buf` (via [`MemBuf::reset`]).
    fn next_frame(&mut self, buf: &mut MemBuf);
}

/// An in-memory port that receives an endless stream from a [`FrameSource`]
/// and counts and recycles whatever is sent: a NIC with an ideal wire, so a
/// benchmark measures the data path, not I/O.
pub struct GenPort<S> {
    source: S,
    pool: Pool,
    /// Cold mode: frames written ahead, received oldest first.
    ahead: Option<std::collections::VecDeque<MemBuf>>,
    stats: PortStats,
}

impl<S: FrameSource> GenPort<S> {
    /// A generator port with a pool of buffers preallocated. Frames are
    /// written just before they are received, into a small LIFO pool: their
    /// headers are in L1 when the worker reads them.
    pub fn new(source: S) -> GenPort<S> {
        GenPort {
            source,
            pool: Pool::with_buffers(256),
            ahead: None,
            stats: PortStats::default(),
        }
    }

    /// A generator port whose frames are written `frames` receptions ahead
    /// (a FIFO ring of buffers, each rewritten as soon as it comes back),
    /// so a frame's header has left the inner caches by the time the
    /// worker reads it, as after a NIC's DMA into the last-level cache.
    pub fn cold(mut source: S, frames: usize) -> GenPort<S> {
        let ahead = (0..frames.max(1))
            .map(|_| {
                let mut b = MemBuf::new();
                source.next_frame(&mut b);
                b
            })
            .collect();
        GenPort {
            source,
            pool: Pool::with_buffers(0),
            ahead: Some(ahead),
            stats: PortStats::default(),
        }
    }

    /// A buffer back from the worker: in cold mode it is written with a
    /// future frame at once and queued behind the others.
    #[inline]
    fn recycle(&mut self, mut b: MemBuf) {
        match &mut self.ahead {
            Some(q) => {
                self.source.next_frame(&mut b);
                q.push_back(b);
            }
            None => self.pool.put(b),
        }
    }
}

impl<S: FrameSource> Port for GenPort<S> {
    type Buf = MemBuf;

    #[inline]
    fn rx_burst(&mut self, out: &mut Vec<MemBuf>, max: usize) -> usize {
        for _ in 0..max {
            // Cold: the oldest frame written ahead; when buffers have
            // migrated to other workers (handoffs) and the ring runs dry,
            // a frame written now.
            let b = match self.ahead.as_mut().and_then(|q| q.pop_front()) {
                Some(b) => b,
                None => {
                    let mut b = self.pool.get();
                    self.source.next_frame(&mut b);
                    b
                }
            };
            self.stats.rx_bytes += b.len() as u64;
            out.push(b);
        }
        self.stats.rx_packets += max as u64;
        max
    }

    #[inline]
    fn tx_burst(&mut self, bufs: &mut Vec<MemBuf>) -> usize {
        let n = bufs.len();
        for b in bufs.drain(..) {
            self.stats.tx_bytes += b.len() as u64;
            self.recycle(b);
        }
        self.stats.tx_packets += n as u64;
        n
    }

    fn alloc(&mut self) -> Option<MemBuf> {
        Some(self.pool.get())
    }

    fn free(&mut self, buf: MemBuf) {
        self.recycle(buf);
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_port_round_trip_keeps_order_and_counts() {
        let (mut port, wire) = QueuePort::new(8);
        assert!(wire.inject(&[1, 2, 3]));
        assert!(wire.inject(&[4, 5]));
        let mut burst = Vec::new();
        assert_eq!(port.rx_burst(&mut burst, 32), 2);
        assert_eq!(burst[0].data(), &[1, 2, 3]);
        assert_eq!(port.tx_burst(&mut burst), 2);
        assert!(burst.is_empty());
        assert_eq!(wire.take_all(), vec![vec![1, 2, 3], vec![4, 5]]);
        let s = port.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bytes), (2, 2, 5));
    }

    #[test]
    fn queue_port_leaves_unsent_frames_to_the_caller() {
        let (mut port, _wire) = QueuePort::new(2);
        let mut burst: Vec<MemBuf> = (0..3).map(|i| MemBuf::from_bytes(&[i])).collect();
        assert_eq!(port.tx_burst(&mut burst), 2);
        assert_eq!(burst.len(), 1);
        assert_eq!(burst[0].data(), &[2]);
    }

    #[test]
    fn allocated_buffers_are_empty_even_when_recycled() {
        let (mut port, _wire) = QueuePort::new(2);
        port.free(MemBuf::from_bytes(&[1; 60]));
        let b = port.alloc().unwrap();
        assert_eq!((b.len(), b.headroom()), (0, HEADROOM));
    }

    #[test]
    fn buffers_have_headroom_and_can_grow_both_ways() {
        let mut b = MemBuf::from_bytes(&[9; 60]);
        assert_eq!(b.headroom(), HEADROOM);
        let front = b.prepend(20).expect("headroom");
        front.fill(7);
        assert_eq!(b.len(), 80);
        assert_eq!(b.data()[0], 7);
        assert_eq!(b.data()[20], 9);
        assert!(b.prepend(HEADROOM).is_none());
        assert!(b.extend(BUF_SIZE).is_none());
        b.extend(4).expect("tailroom").fill(1);
        assert_eq!(b.len(), 84);
        b.truncate(10);
        assert_eq!(b.len(), 10);
    }
}
