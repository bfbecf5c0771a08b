//! AF_PACKET `TPACKET_V2` port: the Linux fallback backend, with no
//! dependency beyond libc.
//!
//! One [`AfPacketPort`] is one worker's share of one interface: a packet
//! socket bound to the interface with a memory-mapped RX ring of frame
//! slots. Several workers on one interface join one `PACKET_FANOUT` group
//! (flow hash or NIC queue), so each sees a disjoint share of the traffic.
//!
//! - **RX, zero copy, frame by frame.** Received frames are lent in place
//!   from the RX ring ([`AfPacketBuf`] points into the slot); a slot goes
//!   back to the kernel when its buffer is dropped, on any thread (see
//!   `ring.rs`). `PACKET_RESERVE` leaves [`HEADROOM`] in front of every
//!   frame for encapsulation.
//! - **Why `TPACKET_V2`, not V3.** V3 packs frames into blocks and hands a
//!   block over only when it is full or its retire timer fires (1 ms at
//!   best, and the timer runs in jiffies: 4 ms at HZ=250), and it wakes a
//!   sleeping reader only then. At the rates a service sees most of the
//!   time a block is never full, so every frame waited for the timer:
//!   measured through sluice with `scripts/bench_latency.sh`, one hop took
//!   0.48 ms (median) against 0.03 ms through nftables. V2 hands over, and
//!   wakes a `poll(2)`er on, every frame (`rx_event_fd`), which is what
//!   libpcap's immediate mode does for the same reason. Forwarding
//!   throughput did not drop (`scripts/bench_forward.sh`, same run, see
//!   docs/LATENCY.md).
//! - **TX: one `sendmmsg` per burst** (up to [`RingConfig::tx_batch`]
//!   frames, iovecs pointing at the buffers, so the kernel's copy into the
//!   skb is the only one); `PACKET_QDISC_BYPASS` skips the qdisc layer.
//!   A mapped TX ring kicked by one `sendto(NULL)` per burst was built and
//!   measured first (echo over veth, 64-byte frames, 4096 in flight, three
//!   alternating runs on a loaded 2-core host): TX ring 480k/511k/322k pps,
//!   `sendmmsg` 535k/661k/274k pps. The runs are noisy, but `sendmmsg` was
//!   not slower, needs no second mapping and no slot-status protocol, and a
//!   frame it cannot send stays in the caller's `Vec`. (Both lose some
//!   frames at a veth peer whose backlog overflows; the kernel counts those
//!   on the veth, not here.)
//! - **Own transmissions are ignored** (`PACKET_IGNORE_OUTGOING`, and a
//!   check of `sll_pkttype` in case another process sends on the interface):
//!   sluice must not process what it sent.
//! - **Offloads.** GRO/LRO would hand sluice merged super-frames and TSO/GSO
//!   would make the kernel's own view inconsistent, so `open` refuses an
//!   interface with any of them on unless [`RingConfig::allow_offloads`].
//!   Frames the kernel marks `TP_STATUS_CSUMNOTREADY` (checksum left to
//!   hardware, seen when a local stack sends over a veth) get their TCP/UDP
//!   checksum computed before they are lent; a VLAN tag the NIC stripped
//!   (`TP_STATUS_VLAN_VALID`) is put back in front of the frame, so sluice
//!   sees the frame as it was on the wire. Frames longer than the MTU
//!   allows, or truncated by the ring, are dropped and counted. The slot
//!   size follows the MTU: a port opened on (or re-opened after a change
//!   to) a larger MTU gets larger slots.
//!
//! **The kernel still sees every packet.** AF_PACKET taps a copy; the
//! kernel's own stack processes the original too. A data interface must
//! therefore carry no IP address (or an nftables `netdev` ingress drop rule
//! must discard its traffic after the tap), and `net.ipv4.ip_forward` must be
//! off, so that the kernel neither answers (RSTs, ICMP unreachables, ARP)
//! nor forwards sluice's traffic a second time.

mod link;
mod sys;

pub mod fanout;
pub mod ring;

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ring::{frame, RingMap, LENT};
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
    /// `PACKET_FANOUT_CBPF` computing [`crate::rss::owner_worker`] of the
    /// client on the given side (see [`fanout`]): every packet reaches the
    /// worker that owns its flow. `open` leaves the socket out of the group
    /// (dropping everything); [`AfPacketPort::join_owner_fanout`] joins it,
    /// one worker after the other in worker order.
    Owner(fanout::ClientSide),
}

/// Sizes of the rings and options for [`AfPacketPort::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Smallest RX slot in bytes (kernel header, [`HEADROOM`], the frame): a
    /// power of two from 512 to 65536. `open` doubles it until a frame of
    /// the interface's MTU fits.
    pub frame_size: u32,
    /// RX slots in the ring (rounded up to whole allocation blocks).
    pub frame_count: u32,
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
            // 4096 slots of 2 KiB: 8 MiB per worker and interface, 4096
            // frames of slack (about 0.3 ms of 64-byte frames at 10 Gbit/s,
            // 5 ms of full-size ones) before the kernel drops. Small enough
            // that the kernel zeroes and maps it in a few milliseconds at
            // start and frees it as fast when the process dies.
            frame_size: 2048,
            frame_count: 4096,
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
        "the kernel refused a {bytes}-byte ring on {ifname} ({source}): lower frame_count, \
         or raise the locked-memory limit"
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
    /// Frames the kernel dropped because the next RX slot was still lent.
    pub rx_kernel_drops: u64,
    /// Frames too long for a TX slot, dropped.
    pub tx_oversize: u64,
    /// `sendmmsg` calls that failed for another reason than a full device
    /// queue (the frames stay with the caller).
    pub tx_send_errors: u64,
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
    /// Next RX slot to look at.
    rx_next: usize,
    /// A socket taken over from a previous process whose ring held no
    /// unread frame: where the kernel writes next is unknown, so empty
    /// polls look for the first filled slot anywhere (see [`Self::adopt`]).
    hunting: bool,
    /// Empty polls while hunting (the whole ring is scanned every
    /// [`HUNT_EVERY`]th).
    hunt_polls: u32,
    tx: TxBatch,
    pool: Vec<AfPacketBuf>,
    pool_cap: usize,
    /// Longest frame accepted: MTU + Ethernet header + one VLAN tag.
    max_frame_len: usize,
    ifname: String,
    stats: AfPacketStats,
    /// `PACKET_STATISTICS` resets on read, so reads accumulate here.
    kernel_drops: Cell<u64>,
    /// Link events and re-opens (`link.rs`).
    link: link::LinkState,
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
        let name = checked_name(ifname, worker, workers)?;
        let sys_err = |op| sys_err(ifname, op);
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
        let ifindex = crate::port::sys::ifindex(&name)
            .ok_or_else(|| AfPacketError::NoSuchInterface(ifname.to_owned()))?;
        let (mtu, layout) = ring_layout(&fd, &name, ifname, &config)?;
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
            libc::tpacket_versions::TPACKET_V2 as i32,
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
        let rx_req = libc::tpacket_req {
            tp_block_size: layout.block_size as u32,
            tp_block_nr: layout.blocks as u32,
            tp_frame_size: layout.frame_size as u32,
            tp_frame_nr: layout.frames as u32,
        };
        sys::set_option(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
            .map_err(ring_err(layout.bytes))?;
        let base = sys::map_rings(&fd, layout.bytes).map_err(ring_err(layout.bytes))?;

        // Between bind and joining the fanout group the socket would get
        // every frame of the interface (duplicates of other workers' share):
        // a drop-all filter covers that window.
        let group = fanout_group(ifindex, config.fanout);
        let map = layout.map(fd, base);
        let fd = map.fd();
        if workers > 1 {
            sys::attach_drop_all(fd).map_err(sys_err("SO_ATTACH_FILTER"))?;
        }
        sys::bind_all(fd, ifindex).map_err(sys_err("bind"))?;
        if workers > 1 && !matches!(config.fanout, FanoutMode::Owner(_)) {
            let mode = match config.fanout {
                FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
                FanoutMode::QueueMapping | FanoutMode::Owner(_) => libc::PACKET_FANOUT_QM,
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

        Ok(AfPacketPort::assemble(
            map,
            ifname,
            (worker, workers),
            config,
            (ifindex, mtu),
        ))
    }

    /// The port around a mapped ring (its socket bound and in its group).
    fn assemble(
        map: Arc<RingMap>,
        ifname: &str,
        (worker, workers): (u32, u32),
        config: RingConfig,
        (ifindex, mtu): (i32, u32),
    ) -> AfPacketPort {
        let mut pool = Vec::with_capacity(config.pool_size as usize * 2);
        pool.extend((0..config.pool_size).map(|_| AfPacketBuf::new_heap()));
        AfPacketPort {
            rx_next: 0,
            hunting: false,
            hunt_polls: 0,
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
            max_frame_len: max_frame_len(mtu),
            ifname: ifname.to_owned(),
            stats: AfPacketStats::default(),
            kernel_drops: Cell::new(0),
            link: link::LinkState::new(worker, workers, config, ifindex, mtu),
        }
    }

    /// Takes over `fd`, worker `worker`'s socket on `ifname` from a
    /// previous sluice process (kept by the service manager across its
    /// restart, see `notify.rs`): same interface, TPACKET_V2, a ring of the
    /// size `config` and the interface's MTU give (`mmap` refuses any other
    /// size). The socket is still bound and in its fanout group, and its
    /// ring kept receiving while no process read it: the frames there are
    /// read first, oldest first. Slots the dead process had lent out are
    /// given back to the kernel (a slot not marked free stops the kernel's
    /// walk: the ring would look full). With no unread frame, reading
    /// starts after the slot the kernel filled last (slot headers keep
    /// their receive time after they are read); should that be wrong (a
    /// clock step), every [`HUNT_EVERY`]th empty poll scans the ring for
    /// the oldest filled slot until a frame is read.
    pub fn adopt(
        fd: OwnedFd,
        ifname: &str,
        worker: u32,
        workers: u32,
        config: RingConfig,
    ) -> Result<AfPacketPort, AfPacketError> {
        let name = checked_name(ifname, worker, workers)?;
        let sys_err = |op| sys_err(ifname, op);
        if !sys::is_packet_v2(&fd).map_err(sys_err("getsockopt"))? {
            return Err(AfPacketError::BadConfig(
                "not an AF_PACKET socket with a TPACKET_V2 ring".into(),
            ));
        }
        let ifindex = crate::port::sys::ifindex(&name)
            .ok_or_else(|| AfPacketError::NoSuchInterface(ifname.to_owned()))?;
        let bound = sys::bound_ifindex(&fd).map_err(sys_err("getsockname"))?;
        if bound != ifindex {
            return Err(AfPacketError::BadConfig(format!(
                "bound to interface index {bound}, {ifname} is {ifindex}"
            )));
        }
        let (mtu, layout) = ring_layout(&fd, &name, ifname, &config)?;
        let base = sys::map_rings(&fd, layout.bytes).map_err(|source| AfPacketError::Ring {
            ifname: ifname.to_owned(),
            bytes: layout.bytes,
            source,
        })?;
        let map = layout.map(fd, base);
        let found = scan(&map, true);
        let frames = map.frames;
        let mut port =
            AfPacketPort::assemble(map, ifname, (worker, workers), config, (ifindex, mtu));
        // The oldest unread frame; with none, the slot after the one the
        // kernel filled last, where it writes next.
        port.rx_next = found
            .oldest_unread
            .or(found.newest.map(|i| (i + 1) % frames))
            .unwrap_or(0);
        port.hunting = found.oldest_unread.is_none();
        let (unread, released) = (found.unread, found.released);
        tracing::info!(
            ifname,
            worker,
            unread,
            released,
            "took over the socket of the previous process"
        );
        Ok(port)
    }

    /// The name this port's socket is kept under by the service manager.
    pub fn store_name(&self) -> String {
        crate::notify::fd_name(
            &self.ifname,
            self.link.worker(),
            self.link.workers(),
            self.map.frames,
            self.map.frame_size,
        )
    }

    /// The socket, for the service manager's store.
    pub fn raw_fd(&self) -> RawFd {
        self.map.raw_fd()
    }

    /// Where the kernel writes next, once it has written: the oldest
    /// filled slot, looked for every [`HUNT_EVERY`]th call (see
    /// [`Self::adopt`]).
    #[cold]
    fn hunt(&mut self) -> bool {
        self.hunt_polls = self.hunt_polls.wrapping_add(1);
        if self.hunt_polls % HUNT_EVERY != 0 {
            return false;
        }
        match scan(&self.map, false).oldest_unread {
            Some(i) => {
                self.rx_next = i;
                self.hunting = false;
                true
            }
            None => false,
        }
    }

    /// Joins this socket to the interface's owner fanout group (mode
    /// [`FanoutMode::Owner`]) and lifts the drop-all filter `open` left on
    /// it. Call it for each worker's port of one interface in worker order,
    /// each after the previous one returned; a port re-opened later must
    /// join before the port it replaces is dropped (see [`fanout`]).
    pub fn join_owner_fanout(
        &self,
        side: fanout::ClientSide,
        workers: u32,
    ) -> Result<(), AfPacketError> {
        let fd = self.map.fd();
        let ifindex = CString::new(self.ifname.as_str())
            .ok()
            .and_then(|n| crate::port::sys::ifindex(&n))
            .ok_or_else(|| AfPacketError::NoSuchInterface(self.ifname.clone()))?;
        let group = fanout_group(ifindex, FanoutMode::Owner(side));
        fanout::join(fd, group, side, workers).map_err(|source| AfPacketError::Fanout {
            ifname: self.ifname.clone(),
            group,
            source,
        })?;
        sys::detach_filter(fd).map_err(|source| AfPacketError::Sys {
            op: "SO_DETACH_FILTER",
            ifname: self.ifname.clone(),
            source,
        })
    }

    /// The interface this port reads and writes.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Bytes of one RX slot (grows with the MTU).
    pub fn frame_size(&self) -> usize {
        self.map.frame_size
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

/// While a taken-over ring's read position is unsure (see
/// [`AfPacketPort::adopt`]), every this many empty polls scan the ring.
const HUNT_EVERY: u32 = 256;

/// What [`scan`] found in a ring.
struct Scan {
    /// The oldest frame the kernel filled and nobody read (by the kernel's
    /// receive time).
    oldest_unread: Option<usize>,
    /// The slot the kernel filled last, read or not: it writes the next
    /// frame into the slot after it.
    newest: Option<usize>,
    unread: usize,
    /// Slots marked lent (by a process that is gone) given back.
    released: usize,
}

/// Looks at every slot's status and receive time; with `release_lent`,
/// gives slots marked lent back to the kernel.
fn scan(map: &RingMap, release_lent: bool) -> Scan {
    let mut oldest: Option<((u32, u32), usize)> = None;
    let mut newest: Option<((u32, u32), usize)> = None;
    let (mut unread, mut released) = (0, 0);
    for i in 0..map.frames {
        let slot = map.slot(i);
        // SAFETY: `slot` is a slot of this ring.
        let status = unsafe { map.status(slot) };
        let st = status.load(Ordering::Acquire);
        if release_lent && st == ring::LENT {
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            released += 1;
        }
        // SAFETY: the header lies inside the slot. A slot the kernel owns
        // may be written meanwhile: volatile reads, and a torn time only
        // misplaces where reading starts (the hunt in `rx_burst` corrects
        // it).
        let when = unsafe {
            (
                slot.add(ring::frame::SEC).cast::<u32>().read_volatile(),
                slot.add(ring::frame::NSEC).cast::<u32>().read_volatile(),
            )
        };
        if when != (0, 0) && newest.map_or(true, |(t, _)| when > t) {
            newest = Some((when, i));
        }
        if st & libc::TP_STATUS_USER != 0 {
            unread += 1;
            if oldest.map_or(true, |(t, _)| when < t) {
                oldest = Some((when, i));
            }
        }
    }
    Scan {
        oldest_unread: oldest.map(|(_, i)| i),
        newest: newest.map(|(_, i)| i),
        unread,
        released,
    }
}

/// The frame in `slot` of `map` (its status `status`, owned by user space)
/// as a buffer, or `None` if it is skipped (counted in `stats`; the caller
/// gives the slot back).
#[inline]
fn lend_frame(
    map: &Arc<RingMap>,
    stats: &mut AfPacketStats,
    max_frame_len: usize,
    slot: *mut u8,
    status: u32,
) -> Option<AfPacketBuf> {
    // SAFETY: the slot's header was written by the kernel before it set
    // TP_STATUS_USER, which the caller's acquire load saw; the header
    // lies inside the slot.
    let (len, snaplen, mac, pkttype, tci, tpid) = unsafe {
        (
            slot.add(frame::LEN).cast::<u32>().read(),
            slot.add(frame::SNAPLEN).cast::<u32>().read(),
            slot.add(frame::MAC).cast::<u16>().read(),
            slot.add(frame::SLL_PKTTYPE).read(),
            slot.add(frame::VLAN_TCI).cast::<u16>().read(),
            slot.add(frame::VLAN_TPID).cast::<u16>().read(),
        )
    };
    let (mac, snaplen) = (usize::from(mac), snaplen as usize);
    if pkttype == libc::PACKET_OUTGOING {
        stats.rx_outgoing += 1;
        return None;
    }
    // The kernel lays the frame out; a bad offset would be a kernel bug,
    // but reading past the slot would be undefined behaviour, so check.
    // A stripped VLAN tag goes back in front: 4 bytes of headroom.
    let tagged = status & libc::TP_STATUS_VLAN_VALID != 0;
    let front = frame::HDR_LEN + HEADROOM + if tagged { 4 } else { 0 };
    if mac < front
        || mac + snaplen > map.frame_size
        || snaplen < len as usize
        || snaplen + if tagged { 4 } else { 0 } > max_frame_len
        || snaplen < ethernet::HEADER_LEN
    {
        stats.rx_oversize += 1;
        return None;
    }
    let cap = (map.frame_size - frame::HDR_LEN) as u32;
    let start = (mac - frame::HDR_LEN) as u32;
    // SAFETY: the slot is user-owned (status USER), about to be marked
    // LENT and counted by the caller; `HDR_LEN + start + snaplen <=
    // frame_size` was checked above.
    let mut buf = unsafe {
        AfPacketBuf::from_ring(
            NonNull::from(&**map),
            NonNull::new_unchecked(slot),
            start,
            snaplen as u32,
            cap,
        )
    };
    if tagged {
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            tpid
        } else {
            ethernet::ETHERTYPE_VLAN
        };
        reinsert_vlan_tag(&mut buf, tpid, tci);
    }
    if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
        finish_l4_checksum(buf.data_mut());
    }
    Some(buf)
}

/// Puts back the 802.1Q tag the NIC stripped into the frame's metadata:
/// the MAC addresses move 4 bytes into the headroom (`lend_frame` checked
/// there is room) and the tag goes between them and the ethertype.
fn reinsert_vlan_tag(buf: &mut AfPacketBuf, tpid: u16, tci: u16) {
    if buf.prepend(4).is_none() {
        return;
    }
    let data = buf.data_mut();
    data.copy_within(4..16, 0);
    data[12..14].copy_from_slice(&tpid.to_be_bytes());
    data[14..16].copy_from_slice(&tci.to_be_bytes());
}

impl Port for AfPacketPort {
    type Buf = AfPacketBuf;

    fn rx_burst(&mut self, out: &mut Vec<AfPacketBuf>, max: usize) -> usize {
        let mut received = 0;
        let mut bytes = 0;
        let map = &self.map;
        let frames = map.frames;
        while received < max {
            let slot = map.slot(self.rx_next);
            // SAFETY: `slot` is a slot of this ring.
            let status_word = unsafe { map.status(slot) };
            // Acquire: the frame's bytes are the kernel's until it publishes
            // TP_STATUS_USER.
            let status = status_word.load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                // Not filled yet, or still lent from the previous lap.
                break;
            }
            self.rx_next = if self.rx_next + 1 == frames {
                0
            } else {
                self.rx_next + 1
            };
            match lend_frame(map, &mut self.stats, self.max_frame_len, slot, status) {
                Some(buf) => {
                    // The slot is ours until the buffer gives it back.
                    status_word.store(LENT, Ordering::Relaxed);
                    bytes += buf.len() as u64;
                    out.push(buf);
                    received += 1;
                }
                None => status_word.store(libc::TP_STATUS_KERNEL, Ordering::Release),
            }
        }
        if received > 0 {
            // Before any of them can be dropped: they leave with `out`.
            RingMap::lend(&self.map, received as u32);
            self.hunting = false;
        } else if self.hunting && self.hunt() {
            return self.rx_burst(out, max);
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

    fn rx_event_fd(&self) -> Option<RawFd> {
        // The kernel wakes a poller of a TPACKET_V2 socket after every
        // frame it puts in the ring, and polls it readable while the frame
        // before its next slot is still user space's.
        Some(self.map.raw_fd())
    }

    fn check_link(&mut self, now: bool) -> bool {
        self.relink(now)
    }

    fn reopens(&self) -> u64 {
        self.link.reopens
    }
}

/// Longest frame a port takes on an interface of this MTU: the MTU, the
/// Ethernet header and one VLAN tag.
fn max_frame_len(mtu: u32) -> usize {
    mtu as usize + ethernet::HEADER_LEN + 4
}

/// `ifname` as a C string, once the worker and the name are checked.
fn checked_name(ifname: &str, worker: u32, workers: u32) -> Result<CString, AfPacketError> {
    if worker >= workers {
        return Err(AfPacketError::BadWorker { worker, workers });
    }
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(AfPacketError::BadName(ifname.to_owned()));
    }
    CString::new(ifname).map_err(|_| AfPacketError::BadName(ifname.to_owned()))
}

/// The error of system call `op` on `ifname`'s socket.
fn sys_err(ifname: &str, op: &'static str) -> impl FnOnce(io::Error) -> AfPacketError {
    let ifname = ifname.to_owned();
    move |source| AfPacketError::Sys { op, ifname, source }
}

/// The interface's MTU and the ring `config` gives for it.
fn ring_layout(
    fd: &OwnedFd,
    name: &CString,
    ifname: &str,
    config: &RingConfig,
) -> Result<(u32, RingLayout), AfPacketError> {
    let mtu = sys::mtu(fd, name).map_err(sys_err(ifname, "SIOCGIFMTU"))?;
    let layout = RingLayout::new(config, sys::page_size(), max_frame_len(mtu))
        .map_err(AfPacketError::BadConfig)?;
    Ok((mtu, layout))
}

/// Ring sizes derived from a [`RingConfig`] and the longest frame.
#[derive(Debug, PartialEq, Eq)]
struct RingLayout {
    frame_size: usize,
    frames: usize,
    block_size: usize,
    blocks: usize,
    bytes: usize,
}

/// Where the kernel puts the Ethernet header in a `TPACKET_V2` slot:
/// `TPACKET_ALIGN(TPACKET2_HDRLEN + 16) + PACKET_RESERVE - 14`. A slot must
/// hold that, the frame, and the 4 bytes of a VLAN tag sluice may put back.
const FRAME_PREFIX: usize = 80 + HEADROOM - ethernet::HEADER_LEN;

/// Allocation blocks of the ring: the kernel allocates each block as one
/// run of contiguous pages, so small blocks are cheap to find and zero.
const BLOCK_BYTES: usize = 64 << 10;

impl RingLayout {
    /// The ring of this layout, mapped at `base` from `fd`.
    fn map(&self, fd: OwnedFd, base: NonNull<u8>) -> Arc<RingMap> {
        Arc::new(RingMap::new(
            fd,
            base,
            self.bytes,
            self.block_size,
            self.frame_size,
            self.frames,
        ))
    }

    fn new(c: &RingConfig, page: usize, max_frame_len: usize) -> Result<RingLayout, String> {
        if !c.frame_size.is_power_of_two() || !(512..=65536).contains(&c.frame_size) {
            return Err(format!(
                "frame_size {} must be a power of two from 512 to 65536",
                c.frame_size
            ));
        }
        if c.frame_count == 0 {
            return Err("frame_count must be at least 1".into());
        }
        if c.tx_batch == 0 || c.tx_batch > 1024 {
            return Err(format!("tx_batch {} must be 1 to 1024", c.tx_batch));
        }
        let needed = FRAME_PREFIX + max_frame_len + 4;
        let frame_size = (c.frame_size as usize).max(needed.next_power_of_two());
        if frame_size > 65536 {
            return Err(format!(
                "frames of {max_frame_len} bytes (the interface's MTU) do not fit a 64 KiB slot"
            ));
        }
        // Powers of two: the block is a multiple of both page and slot.
        let block_size = BLOCK_BYTES.max(page).max(frame_size);
        let per_block = block_size / frame_size;
        let blocks = (c.frame_count as usize).div_ceil(per_block);
        let bytes = block_size
            .checked_mul(blocks)
            .filter(|&b| b <= u32::MAX as usize)
            .ok_or("the RX ring must be under 4 GiB")?;
        Ok(RingLayout {
            frame_size,
            frames: blocks * per_block,
            block_size,
            blocks,
            bytes,
        })
    }
}

/// The fanout group id every worker of this process on `ifindex` joins:
/// derived from the interface and the process so two sluice instances (or
/// another program) on one host do not land in each other's group.
fn fanout_group(ifindex: i32, mode: FanoutMode) -> u16 {
    let pid = u64::from(std::process::id());
    let mode = match mode {
        FanoutMode::Hash => 0,
        FanoutMode::QueueMapping => 1,
        FanoutMode::Owner(_) => 2,
    };
    let h = crate::hash::hash_words_v1(pid, ifindex as u64, mode);
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
    fn default_layout_is_accepted_and_slots_grow_with_the_mtu() {
        let l = RingLayout::new(&RingConfig::default(), 4096, 1518).expect("default config");
        assert_eq!(
            l,
            RingLayout {
                frame_size: 2048,
                frames: 4096,
                block_size: 64 << 10,
                blocks: 128,
                bytes: 8 << 20,
            }
        );
        // A 9000-byte MTU needs 16 KiB slots; the ring keeps its frame count.
        let jumbo = RingLayout::new(&RingConfig::default(), 4096, 9018).expect("jumbo");
        assert_eq!((jumbo.frame_size, jumbo.frames), (16384, 4096));
        assert_eq!(jumbo.bytes, 64 << 20);
        // A count that does not fill the last block is rounded up.
        let odd = RingConfig {
            frame_count: 33,
            ..RingConfig::default()
        };
        let l = RingLayout::new(&odd, 4096, 1518).expect("odd count");
        assert_eq!((l.frames, l.blocks), (64, 2));
        // The frame, its prefix and a re-inserted tag fit the slot.
        const { assert!(FRAME_PREFIX + 1518 + 4 <= 2048) };
    }

    #[test]
    fn bad_layouts_are_refused_with_reasons() {
        let base = RingConfig::default();
        for bad in [
            RingConfig {
                frame_size: 3000,
                ..base
            },
            RingConfig {
                frame_size: 256,
                ..base
            },
            RingConfig {
                frame_count: 0,
                ..base
            },
            RingConfig {
                tx_batch: 0,
                ..base
            },
        ] {
            assert!(RingLayout::new(&bad, 4096, 1518).is_err(), "{bad:?}");
        }
        assert!(
            RingLayout::new(&base, 4096, 70_000).is_err(),
            "64 KiB frames"
        );
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
