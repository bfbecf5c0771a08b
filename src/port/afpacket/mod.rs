//! AF_PACKET `TPACKET_V3` port: the Linux fallback backend, with no
//! dependency beyond libc.
//!
//! One [`AfPacketPort`] is one worker's share of one interface: a packet
//! socket bound to the interface with a memory-mapped RX ring of blocks and
//! a mapped TX ring of frames. Several workers on one interface join one
//! `PACKET_FANOUT` group (flow hash or NIC queue), so each sees a disjoint
//! share of the traffic.
//!
//! - **RX, zero copy.** Received frames are lent in place from the RX ring
//!   ([`AfPacketBuf`] points into the ring block); a block goes back to the
//!   kernel when its last lent frame is dropped, on any thread (atomic
//!   per-block holds; see `ring.rs`). `PACKET_RESERVE` leaves [`HEADROOM`]
//!   in front of every frame for encapsulation.
//! - **TX: one `sendmmsg` per burst** (up to [`RingConfig::tx_batch`]
//!   frames, iovecs pointing at the buffers, so the kernel's copy into the
//!   skb is the only one); `PACKET_QDISC_BYPASS` skips the qdisc layer.
//!   A mapped `TPACKET_V3` TX ring kicked by one `sendto(NULL)` per burst
//!   was built and measured first (echo over veth, 64-byte frames, 4096 in
//!   flight, 64 KiB blocks, three alternating runs on a loaded 2-core
//!   host): TX ring 480k/511k/322k pps, `sendmmsg` 535k/661k/274k pps.
//!   The runs are noisy, but `sendmmsg` was not slower, needs no second
//!   mapping and no slot-status protocol, and a frame it cannot send stays
//!   in the caller's `Vec`. (Both lose some frames at a veth peer whose
//!   backlog overflows; the kernel counts those on the veth, not here.)
//! - **Own transmissions are ignored** (`PACKET_IGNORE_OUTGOING`, and a
//!   check of `sll_pkttype` in case another process sends on the interface):
//!   sluice must not process what it sent.
//! - **Offloads.** GRO/LRO would hand sluice merged super-frames and TSO/GSO
//!   would make the kernel's own view inconsistent, so `open` refuses an
//!   interface with any of them on unless [`RingConfig::allow_offloads`].
//!   Frames the kernel marks `TP_STATUS_CSUMNOTREADY` (checksum left to
//!   hardware, seen when a local stack sends over a veth) get their TCP/UDP
//!   checksum computed before they are lent. Frames longer than the MTU
//!   allows, or truncated by the ring, are dropped and counted.
//!
//! **The kernel still sees every packet.** AF_PACKET taps a copy; the
//! kernel's own stack processes the original too. A data interface must
//! therefore carry no IP address (or an nftables `netdev` ingress drop rule
//! must discard its traffic after the tap), and `net.ipv4.ip_forward` must be
//! off, so that the kernel neither answers (RSTs, ICMP unreachables, ARP)
//! nor forwards sluice's traffic a second time.

mod sys;

pub mod ring;

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ring::{block, frame, release_block, RingMap};
pub use ring::{AfPacketBuf, POOL_BUF_SIZE};

use super::{PacketBuf, Port, PortStats, HEADROOM};
use crate::wire::{ethernet, ipv4, tcp, udp};

/// How the kernel spreads an interface's traffic over the workers' sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutMode {
    /// `PACKET_FANOUT_HASH`: by the kernel's flow hash, which is symmetric
    /// (both directions of a flow meet on one worker).
    Hash,
    /// `PACKET_FANOUT_QM`: by the NIC's RX queue, for NICs whose RSS already
    /// splits flows the way sluice wants.
    QueueMapping,
}

/// Sizes of the rings and options for [`AfPacketPort::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per RX block: a multiple of the page size and of `frame_size`.
    pub block_size: u32,
    /// RX blocks in the ring.
    pub block_count: u32,
    /// Nominal RX frame slot (V3 packs frames by their real size; the kernel
    /// wants a slot size for its bookkeeping). A multiple of 16.
    pub frame_size: u32,
    /// Milliseconds after which the kernel hands over a partly filled block,
    /// bounding latency at low rates.
    pub retire_timeout_ms: u32,
    /// Most frames handed to one `sendmmsg`.
    pub tx_batch: u32,
    /// Pool buffers preallocated for `alloc`.
    pub pool_size: u32,
    /// How workers share the interface.
    pub fanout: FanoutMode,
    /// Open even with GRO/LRO/TSO/GSO on (tests over veths, diagnostics).
    pub allow_offloads: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            // 64 blocks of 256 KiB: 16 MiB, about 8 ms of a 10 Gbit/s link;
            // enough blocks that one held a little longer does not stall
            // the kernel.
            block_size: 1 << 18,
            block_count: 64,
            frame_size: 2048,
            retire_timeout_ms: 1,
            tx_batch: 64,
            pool_size: 256,
            fanout: FanoutMode::Hash,
            allow_offloads: false,
        }
    }
}

/// Why an AF_PACKET port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("interface name {0:?} is not valid: it must be 1 to 15 bytes with no NUL")]
    BadName(String),
    #[error("no interface named {0} in this network namespace: check `ip link`")]
    NoSuchInterface(String),
    #[error(
        "opening an AF_PACKET socket on {ifname} needs CAP_NET_RAW: run as root or \
         `setcap cap_net_raw,cap_net_admin+ep` the binary"
    )]
    NeedCapNetRaw { ifname: String },
    #[error("worker {worker} is out of range for {workers} workers")]
    BadWorker { worker: u32, workers: u32 },
    #[error("ring configuration rejected: {0}")]
    BadConfig(String),
    #[error(
        "{ifname} has {offloads} on, so the kernel would hand sluice merged or unsegmented \
         frames: run `ethtool -K {ifname} gro off gso off tso off lro off`"
    )]
    OffloadsOn { ifname: String, offloads: String },
    #[error(
        "the kernel refused a {bytes}-byte ring on {ifname} ({source}): lower block_count or \
         block_size, or raise the locked-memory limit"
    )]
    Ring {
        ifname: String,
        bytes: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "joining fanout group {group:#06x} on {ifname} failed ({source}): another program may \
         use that group id with another mode, or the workers differ in fanout mode"
    )]
    Fanout {
        ifname: String,
        group: u16,
        #[source]
        source: io::Error,
    },
    #[error("{op} on {ifname} failed: {source}")]
    Sys {
        op: &'static str,
        ifname: String,
        #[source]
        source: io::Error,
    },
}

/// Counters of this backend beyond [`PortStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AfPacketStats {
    /// The common counters (`rx_missed` includes `rx_oversize`).
    pub port: PortStats,
    /// Frames longer than the MTU allows or truncated by the ring, dropped.
    pub rx_oversize: u64,
    /// Outgoing frames the kernel still looped back (another sender), ignored.
    pub rx_outgoing: u64,
    /// Frames the kernel dropped because every RX block was held.
    pub rx_kernel_drops: u64,
    /// Frames too long for a TX slot, dropped.
    pub tx_oversize: u64,
    /// `sendmmsg` calls that failed for another reason than a full device
    /// queue (the frames stay with the caller).
    pub tx_send_errors: u64,
}

/// Where the port is in its walk of the RX ring.
struct RxCursor {
    /// Block being walked or waited for.
    block: usize,
    /// Whether the port holds `block` and is lending its frames.
    walking: bool,
    /// Offset of the next frame in the block.
    next_frame: usize,
    /// Frames of the block not yet looked at.
    frames_left: u32,
    /// Frames of the block skipped (not lent): their holds go back with the
    /// port's own when it leaves the block.
    skipped: u32,
    /// Sequence number of the last walk of each block: a block still held
    /// from the previous lap still reads `TP_STATUS_USER` and must not be
    /// walked twice.
    walked_seq: Box<[u64]>,
}

/// The `sendmmsg` vectors, allocated once; their pointers are set per burst
/// and mean nothing between bursts.
struct TxBatch {
    iov: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

/// One worker's queue on one interface, over an AF_PACKET socket.
pub struct AfPacketPort {
    map: Arc<RingMap>,
    rx: RxCursor,
    tx: TxBatch,
    pool: Vec<AfPacketBuf>,
    pool_cap: usize,
    /// Longest frame accepted: MTU + Ethernet header + one VLAN tag.
    max_frame_len: usize,
    ifname: String,
    stats: AfPacketStats,
    /// `PACKET_STATISTICS` resets on read, so reads accumulate here.
    kernel_drops: Cell<u64>,
}

// SAFETY: the port owns its RX walk exclusively; the pointers in its
// `sendmmsg` vectors are only meaningful during one `tx_burst` call; nothing
// in the port is tied to the thread that opened it (the socket stays in the
// network namespace it was created in).
unsafe impl Send for AfPacketPort {}

impl AfPacketPort {
    /// Opens worker `worker`'s share (of `workers`) of interface `ifname`.
    ///
    /// The socket belongs to the calling thread's network namespace.
    pub fn open(
        ifname: &str,
        worker: u32,
        workers: u32,
        config: RingConfig,
    ) -> Result<AfPacketPort, AfPacketError> {
        if worker >= workers {
            return Err(AfPacketError::BadWorker { worker, workers });
        }
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
            return Err(AfPacketError::BadName(ifname.to_owned()));
        }
        let name = CString::new(ifname).map_err(|_| AfPacketError::BadName(ifname.to_owned()))?;
        let page = sys::page_size();
        let layout = RingLayout::new(&config, page).map_err(AfPacketError::BadConfig)?;

        let sys_err = |op: &'static str| {
            let ifname = ifname.to_owned();
            move |source| AfPacketError::Sys { op, ifname, source }
        };
        let fd = sys::packet_socket().map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => AfPacketError::NeedCapNetRaw {
                ifname: ifname.to_owned(),
            },
            _ => AfPacketError::Sys {
                op: "socket(AF_PACKET)",
                ifname: ifname.to_owned(),
                source: e,
            },
        })?;
        let ifindex =
            sys::ifindex(&name).ok_or_else(|| AfPacketError::NoSuchInterface(ifname.to_owned()))?;
        let mtu = sys::mtu(&fd, &name).map_err(sys_err("SIOCGIFMTU"))?;
        if !config.allow_offloads {
            let on = sys::offloads_on(&fd, &name).map_err(sys_err("SIOCETHTOOL"))?;
            if !on.is_empty() {
                return Err(AfPacketError::OffloadsOn {
                    ifname: ifname.to_owned(),
                    offloads: on.join("/"),
                });
            }
        }

        let set = |opt: i32, value: i32, op: &'static str| {
            sys::set_option(&fd, libc::SOL_PACKET, opt, &value).map_err(sys_err(op))
        };
        set(
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V3 as i32,
            "PACKET_VERSION",
        )?;
        set(libc::PACKET_RESERVE, HEADROOM as i32, "PACKET_RESERVE")?;
        set(libc::PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS")?;
        set(libc::PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")?;
        let ring_err = |bytes| {
            let ifname = ifname.to_owned();
            move |source| AfPacketError::Ring {
                ifname,
                bytes,
                source,
            }
        };
        let rx_req = libc::tpacket_req3 {
            tp_block_size: config.block_size,
            tp_block_nr: config.block_count,
            tp_frame_size: config.frame_size,
            tp_frame_nr: layout.rx_frames,
            tp_retire_blk_tov: config.retire_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sys::set_option(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
            .map_err(ring_err(layout.rx_bytes))?;
        let map_len = layout.rx_bytes;
        let base = sys::map_rings(&fd, map_len).map_err(ring_err(map_len))?;

        // Between bind and joining the fanout group the socket would get
        // every frame of the interface (duplicates of other workers' share):
        // a drop-all filter covers that window.
        let group = fanout_group(ifindex, config.fanout);
        let map = Arc::new(RingMap::new(
            fd,
            base,
            map_len,
            config.block_size as usize,
            config.block_count as usize,
        ));
        let fd = map.fd();
        if workers > 1 {
            sys::attach_drop_all(fd).map_err(sys_err("SO_ATTACH_FILTER"))?;
        }
        sys::bind_all(fd, ifindex).map_err(sys_err("bind"))?;
        if workers > 1 {
            let mode = match config.fanout {
                FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
                FanoutMode::QueueMapping => libc::PACKET_FANOUT_QM,
            };
            let arg = (mode << 16) | u32::from(group);
            sys::set_option(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).map_err(|source| {
                AfPacketError::Fanout {
                    ifname: ifname.to_owned(),
                    group,
                    source,
                }
            })?;
            sys::detach_filter(fd).map_err(sys_err("SO_DETACH_FILTER"))?;
        }

        let mut pool = Vec::with_capacity(config.pool_size as usize * 2);
        pool.extend((0..config.pool_size).map(|_| AfPacketBuf::new_heap()));
        Ok(AfPacketPort {
            rx: RxCursor {
                block: 0,
                walking: false,
                next_frame: 0,
                frames_left: 0,
                skipped: 0,
                walked_seq: vec![u64::MAX; config.block_count as usize].into_boxed_slice(),
            },
            tx: TxBatch {
                // SAFETY: iovec and mmsghdr are plain C structs for which
                // all-zero (null pointers, zero lengths) is valid.
                iov: (0..config.tx_batch)
                    .map(|_| unsafe { std::mem::zeroed() })
                    .collect(),
                // SAFETY: as above.
                msgs: (0..config.tx_batch)
                    .map(|_| unsafe { std::mem::zeroed() })
                    .collect(),
            },
            map,
            pool,
            pool_cap: config.pool_size as usize * 2,
            max_frame_len: mtu as usize + ethernet::HEADER_LEN + 4,
            ifname: ifname.to_owned(),
            stats: AfPacketStats::default(),
            kernel_drops: Cell::new(0),
        })
    }

    /// The interface this port reads and writes.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// All counters of this backend, including the kernel's drop count
    /// (one `getsockopt`, so not for the per-packet path).
    pub fn detailed_stats(&self) -> AfPacketStats {
        // A failed read leaves the previous total: the counters are
        // diagnostics and the socket cannot have gone away under `&self`.
        if let Ok(s) = sys::packet_statistics(self.map.raw_fd()) {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(s.tp_drops));
        }
        let mut stats = self.stats;
        stats.rx_kernel_drops = self.kernel_drops.get();
        stats.port.rx_missed = stats.rx_kernel_drops + stats.rx_oversize;
        stats
    }

    /// Starts walking the current block if the kernel has handed it over.
    #[inline]
    fn enter_block(&mut self) -> bool {
        let index = self.rx.block;
        let status = self.map.block_status(index).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return false;
        }
        let desc = self.map.rx_block(index);
        // SAFETY: the acquire load saw TP_STATUS_USER, so the kernel has
        // finished the block and its descriptor is ours to read.
        let (seq, frames, first) = unsafe {
            (
                desc.add(block::SEQ_NUM).cast::<u64>().read(),
                desc.add(block::NUM_PKTS).cast::<u32>().read(),
                desc.add(block::OFFSET_TO_FIRST_PKT).cast::<u32>().read(),
            )
        };
        if seq == self.rx.walked_seq[index] {
            // Still held by frames lent on the previous lap.
            return false;
        }
        self.rx.walked_seq[index] = seq;
        RingMap::hold_block(&self.map, index, frames);
        self.rx.walking = true;
        self.rx.next_frame = first as usize;
        self.rx.frames_left = frames;
        self.rx.skipped = 0;
        true
    }

    /// Gives back the walk's hold and the skipped frames' holds, and moves
    /// to the next block.
    #[inline]
    fn leave_block(&mut self) {
        let held = self.rx.skipped + self.rx.frames_left + 1;
        // SAFETY: `enter_block` took `frames + 1` holds; lent frames own one
        // each, and the rest (walk, skipped, not looked at) are returned here
        // exactly once.
        unsafe { release_block(NonNull::from(&*self.map), self.rx.block, held) };
        self.rx.walking = false;
        self.rx.frames_left = 0;
        self.rx.skipped = 0;
        self.rx.block = (self.rx.block + 1) % self.map.rx_blocks;
    }

    /// The next frame of the walked block as a buffer, or `None` if it is
    /// skipped (counted) or the block is done.
    #[inline]
    fn next_frame(&mut self) -> Option<Option<AfPacketBuf>> {
        if self.rx.frames_left == 0 {
            return None;
        }
        let block_size = self.map.rx_block_size;
        let offset = self.rx.next_frame;
        // The kernel lays frames out; a bad offset would be a kernel bug, but
        // reading past the block would be undefined behaviour, so check.
        if offset < block::DESC_LEN || offset + frame::SLL_PKTTYPE + 1 > block_size {
            self.rx.skipped += self.rx.frames_left;
            self.rx.frames_left = 0;
            return None;
        }
        let block_ptr = self.map.rx_block(self.rx.block);
        // SAFETY: `offset` is inside the user-owned block (checked above).
        let slot = unsafe { block_ptr.add(offset) };
        // SAFETY: the frame header lies inside the block (checked above);
        // the kernel wrote it before handing the block over.
        let (next, snaplen, len, status, mac, pkttype) = unsafe {
            (
                slot.add(frame::NEXT_OFFSET).cast::<u32>().read(),
                slot.add(frame::SNAPLEN).cast::<u32>().read(),
                slot.add(frame::LEN).cast::<u32>().read(),
                slot.add(frame::STATUS).cast::<u32>().read(),
                slot.add(frame::MAC).cast::<u16>().read(),
                slot.add(frame::SLL_PKTTYPE).read(),
            )
        };
        self.rx.frames_left -= 1;
        let cap = if next == 0 {
            block_size - offset
        } else {
            (next as usize).min(block_size - offset)
        };
        self.rx.next_frame = offset + next as usize;
        let (mac, snaplen) = (mac as usize, snaplen as usize);
        if mac + snaplen > cap {
            self.rx.skipped += 1;
            self.stats.rx_oversize += 1;
            return Some(None);
        }
        if pkttype == libc::PACKET_OUTGOING {
            self.rx.skipped += 1;
            self.stats.rx_outgoing += 1;
            return Some(None);
        }
        if snaplen < len as usize || snaplen > self.max_frame_len {
            self.rx.skipped += 1;
            self.stats.rx_oversize += 1;
            return Some(None);
        }
        // SAFETY: the slot `[offset, offset + cap)` lies in the block and
        // belongs to this frame alone; `mac + snaplen <= cap`; the frame
        // carries one of the holds taken in `enter_block`.
        let mut buf = unsafe {
            AfPacketBuf::from_ring(
                NonNull::from(&*self.map),
                self.rx.block as u32,
                NonNull::new_unchecked(slot),
                mac as u32,
                snaplen as u32,
                cap as u32,
            )
        };
        if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
            finish_l4_checksum(buf.data_mut());
        }
        Some(Some(buf))
    }

    #[inline]
    fn recycle(&mut self, mut buf: AfPacketBuf) {
        // Pool buffers migrate between workers on handoff; a bounded pool
        // keeps a one-way migration from growing memory without limit.
        if buf.is_heap() && self.pool.len() < self.pool_cap {
            buf.reset();
            self.pool.push(buf);
        }
    }
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        if self.rx.walking {
            self.leave_block();
        }
        // The `Arc` goes with the port; lent frames keep the mapping.
    }
}

impl Port for AfPacketPort {
    type Buf = AfPacketBuf;

    fn rx_burst(&mut self, out: &mut Vec<AfPacketBuf>, max: usize) -> usize {
        let mut received = 0;
        let mut bytes = 0;
        while received < max {
            if !self.rx.walking && !self.enter_block() {
                break;
            }
            match self.next_frame() {
                Some(Some(buf)) => {
                    bytes += buf.len() as u64;
                    out.push(buf);
                    received += 1;
                }
                Some(None) => {}
                None => self.leave_block(),
            }
        }
        // Hand a finished block back now rather than on the next burst.
        if self.rx.walking && self.rx.frames_left == 0 {
            self.leave_block();
        }
        self.stats.port.rx_packets += received as u64;
        self.stats.port.rx_bytes += bytes;
        received
    }

    fn tx_burst(&mut self, bufs: &mut Vec<AfPacketBuf>) -> usize {
        // Frames the device could never take would block the front of the
        // Vec forever: drop and count them.
        let mut dropped = 0;
        while bufs.first().is_some_and(|b| b.len() > self.max_frame_len) {
            let buf = bufs.remove(0);
            self.stats.tx_oversize += 1;
            self.recycle(buf);
            dropped += 1;
        }
        let mut batch = 0;
        for (buf, (iov, msg)) in bufs
            .iter()
            .zip(self.tx.iov.iter_mut().zip(self.tx.msgs.iter_mut()))
        {
            if buf.len() > self.max_frame_len {
                break;
            }
            let data = buf.data();
            iov.iov_base = data.as_ptr() as *mut libc::c_void;
            iov.iov_len = data.len();
            // No address: the socket is bound to the interface.
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            batch += 1;
        }
        if batch == 0 {
            return dropped;
        }
        let sent = match sys::send_batch(self.map.raw_fd(), &mut self.tx.msgs[..batch]) {
            Ok(sent) => sent,
            Err(e) => {
                // A full device queue is backpressure, anything else an error;
                // either way the frames stay with the caller.
                if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                    self.stats.tx_send_errors += 1;
                }
                0
            }
        };
        let mut bytes = 0;
        for buf in bufs.drain(..sent) {
            bytes += buf.len() as u64;
            self.recycle(buf);
        }
        self.stats.port.tx_full += bufs.len() as u64;
        self.stats.port.tx_packets += sent as u64;
        self.stats.port.tx_bytes += bytes;
        sent + dropped
    }

    fn alloc(&mut self) -> Option<AfPacketBuf> {
        // Allocating past the pool is rare (buffers that migrated to other
        // workers) and only on the originate path (ARP, RST, ICMP).
        Some(self.pool.pop().unwrap_or_else(AfPacketBuf::new_heap))
    }

    fn free(&mut self, buf: AfPacketBuf) {
        self.recycle(buf);
    }

    fn stats(&self) -> PortStats {
        self.detailed_stats().port
    }
}

/// Ring sizes derived from a [`RingConfig`].
struct RingLayout {
    rx_frames: u32,
    rx_bytes: usize,
}

impl RingLayout {
    fn new(c: &RingConfig, page: usize) -> Result<RingLayout, String> {
        let block = c.block_size as usize;
        if block == 0 || block % page != 0 {
            return Err(format!(
                "block_size {} must be a non-zero multiple of the page size {page}",
                c.block_size
            ));
        }
        if c.frame_size < 128 || c.frame_size % 16 != 0 || c.block_size % c.frame_size != 0 {
            return Err(format!(
                "frame_size {} must be a multiple of 16, at least 128, dividing block_size",
                c.frame_size
            ));
        }
        if c.block_count == 0 {
            return Err("block_count must be at least 1".into());
        }
        if c.tx_batch == 0 || c.tx_batch > 1024 {
            return Err(format!("tx_batch {} must be 1 to 1024", c.tx_batch));
        }
        let rx_bytes = block
            .checked_mul(c.block_count as usize)
            .filter(|&b| b <= u32::MAX as usize)
            .ok_or("the RX ring must be under 4 GiB")?;
        Ok(RingLayout {
            rx_frames: (c.block_size / c.frame_size) * c.block_count,
            rx_bytes,
        })
    }
}

/// The fanout group id every worker of this process on `ifindex` joins:
/// derived from the interface and the process so two sluice instances (or
/// another program) on one host do not land in each other's group.
fn fanout_group(ifindex: i32, mode: FanoutMode) -> u16 {
    let pid = u64::from(std::process::id());
    let h = crate::hash::hash_words_v1(pid, ifindex as u64, mode as u64);
    (h & 0xffff) as u16
}

/// Completes the TCP or UDP checksum of an IPv4 frame the kernel left for
/// hardware to finish (`CHECKSUM_PARTIAL`): recomputed whole, since the
/// field holds only the pseudo-header seed. Anything else is left alone.
fn finish_l4_checksum(frame: &mut [u8]) {
    let Ok(mut eth) = ethernet::EthernetFrame::new_checked(&mut *frame) else {
        return;
    };
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return;
    }
    let Ok(mut ip) = ipv4::Ipv4Packet::new_checked(eth.payload_mut()) else {
        return;
    };
    if ip.is_fragment() {
        return;
    }
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
    let l4_len = usize::from(ip.total_len()).saturating_sub(ip.header_len());
    let Some(l4) = ip.payload_mut().get_mut(..l4_len) else {
        return;
    };
    fill_l4_checksum(l4, src, dst, proto);
}

fn fill_l4_checksum(l4: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8) {
    match proto {
        6 => {
            if let Ok(mut seg) = tcp::TcpSegment::new_checked(l4) {
                seg.fill_checksum(src, dst);
            }
        }
        17 => {
            if let Ok(mut dgram) = udp::UdpDatagram::new_checked(l4) {
                dgram.fill_checksum(src, dst);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_accepted() {
        let l = RingLayout::new(&RingConfig::default(), 4096).expect("default config");
        assert_eq!(l.rx_bytes, (1 << 18) * 64);
        assert_eq!(l.rx_frames, 128 * 64);
    }

    #[test]
    fn bad_layouts_are_refused_with_reasons() {
        let base = RingConfig::default();
        for bad in [
            RingConfig {
                block_size: 5000,
                ..base
            },
            RingConfig {
                frame_size: 100,
                ..base
            },
            RingConfig {
                block_count: 0,
                ..base
            },
            RingConfig {
                tx_batch: 0,
                ..base
            },
        ] {
            assert!(RingLayout::new(&bad, 4096).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fanout_group_is_stable_per_interface() {
        assert_eq!(
            fanout_group(3, FanoutMode::Hash),
            fanout_group(3, FanoutMode::Hash)
        );
        assert_ne!(
            fanout_group(3, FanoutMode::Hash),
            fanout_group(4, FanoutMode::Hash)
        );
    }

    #[test]
    fn partial_checksums_are_completed() {
        // Ethernet + IPv4 + UDP with an arbitrary seed in the checksum field.
        let mut frame = vec![0u8; 14 + 20 + 8 + 4];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut frame[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&32u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 200, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 200, 0, 2]);
        let udp_bytes = &mut frame[34..];
        udp_bytes[0..2].copy_from_slice(&1234u16.to_be_bytes());
        udp_bytes[2..4].copy_from_slice(&80u16.to_be_bytes());
        udp_bytes[4..6].copy_from_slice(&12u16.to_be_bytes());
        udp_bytes[6..8].copy_from_slice(&0xbeefu16.to_be_bytes());
        udp_bytes[8..12].copy_from_slice(b"ping");
        finish_l4_checksum(&mut frame);
        let mut expect = frame.clone();
        let (s, d) = (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2));
        udp::UdpDatagram::new_checked(&mut expect[34..])
            .expect("udp")
            .fill_checksum(s, d);
        assert_eq!(frame, expect);
        assert_ne!(&frame[40..42], &0xbeefu16.to_be_bytes());
    }
}
