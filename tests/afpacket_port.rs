//! AF_PACKET port over a veth pair joining two throwaway network namespaces.
//!
//! Needs root (netns, veth, AF_PACKET): `tests/harness` lists the tests
//! as skipped on a machine without it, and runs them one at a time.
//! Every test builds its own namespaces named with the pid and a random
//! suffix and deletes them in a `Drop` guard, also on panic. Traffic uses
//! 10.200.0.0/16 and never leaves the namespaces.

#[macro_use]
mod harness;

use std::collections::HashSet;
use std::ffi::CString;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sluice::port::afpacket::{AfPacketError, AfPacketPort, RingConfig};
use sluice::port::{PacketBuf, Port};
use sluice::wire::checksum;

const MAGIC: &[u8; 6] = b"SLUICE";
const PORT_IF: &str = "veth0";
const PEER_IF: &str = "veth1";
const PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth (`veth0` in `a`, `veth1` in `b`),
/// deleted on drop.
struct Topology {
    a: String,
    b: String,
}

impl Topology {
    fn new(offloads_off: bool) -> Topology {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tag = format!(
            "sluice-{}-{:08x}-{}",
            std::process::id(),
            nanos ^ 0x5bd1_e995,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let topo = Topology {
            a: format!("{tag}-a"),
            b: format!("{tag}-b"),
        };
        // The guard exists before anything is created, so a failure below
        // still deletes whatever was made.
        for ns in [&topo.a, &topo.b] {
            run(&["ip", "netns", "add", ns]);
            // No IPv6: no router solicitations or MLD reports on the veth.
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        run(&[
            "ip",
            "-n",
            &topo.a,
            "link",
            "add",
            PORT_IF,
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            PEER_IF,
            "address",
            "02:00:00:00:00:02",
            "netns",
            &topo.b,
        ]);
        for (ns, ifname) in [(&topo.a, PORT_IF), (&topo.b, PEER_IF)] {
            if offloads_off {
                run(&[
                    "ip", "netns", "exec", ns, "ethtool", "-K", ifname, "gro", "off", "gso", "off",
                    "tso", "off", "lro", "off",
                ]);
            }
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        topo
    }

    /// Runs `f` on a thread inside namespace `ns`; sockets it opens stay in
    /// that namespace wherever they are used later.
    fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: a valid netns fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    }

    fn open_port(&self, worker: u32, workers: u32, config: RingConfig) -> AfPacketPort {
        Topology::within(&self.a, move || {
            AfPacketPort::open(PORT_IF, worker, workers, config)
        })
        .expect("open AfPacketPort")
    }

    /// Takes back a kept socket as worker 0 of 1 (see `AfPacketPort::adopt`).
    fn adopt_port(&self, fd: OwnedFd, config: RingConfig) -> Result<AfPacketPort, AfPacketError> {
        Topology::within(&self.a, move || {
            AfPacketPort::adopt(fd, PORT_IF, 0, 1, config)
        })
    }

    fn peer_socket(&self) -> RawSocket {
        Topology::within(&self.b, || RawSocket::open(PEER_IF))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it (and the pair).
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A plain AF_PACKET socket: the test's view of "the wire".
struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    fn open(ifname: &str) -> RawSocket {
        // SAFETY: plain syscall.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = CString::new(ifname).expect("name");
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: all-zero sockaddr_ll is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let set = |level: i32, opt: i32, value: i32| {
            // SAFETY: an int option passed by pointer with its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    opt,
                    (&value as *const i32).cast(),
                    size_of::<i32>() as u32,
                )
            };
            assert_eq!(
                rc,
                0,
                "setsockopt {opt}: {}",
                std::io::Error::last_os_error()
            );
        };
        set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
        set(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
        set(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        RawSocket { fd }
    }

    fn send(&self, frame: &[u8]) {
        loop {
            // SAFETY: `frame` is valid for reads of its length.
            let rc =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if rc == frame.len() as isize {
                return;
            }
            let err = std::io::Error::last_os_error();
            assert!(
                err.kind() == std::io::ErrorKind::WouldBlock || rc >= 0,
                "send: {err}"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let rc = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        (rc >= 0).then_some(rc as usize)
    }
}

/// An Ethernet + IPv4 + UDP frame from the peer to the port, tagged with
/// `seq` in the payload and a payload length varying with it.
fn test_frame(seq: u32, src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let payload_len = 16 + (seq as usize * 7) % 200;
    let udp_len = 8 + payload_len;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 200, 0, 2, 10, 200, 0, 1]);
    let csum = checksum::checksum(&f[ip_start..ip_start + 20]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    // Source ports vary so the kernel's flow hash spreads frames on fanout.
    let sport = 10_000 + (seq % 4096) as u16;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&7777u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((0..payload_len - 10).map(|i| (seq as usize + i) as u8));
    f
}

/// The sequence number of one of our test frames, if it is one.
fn seq_of(frame: &[u8]) -> Option<u32> {
    let payload = frame.get(42..)?;
    if payload.get(..6)? != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(payload.get(6..10)?.try_into().ok()?))
}

fn small_ring() -> RingConfig {
    RingConfig {
        frame_count: 256,
        ..RingConfig::default()
    }
}

/// Polls `port` until `want` test frames arrived or 5 s passed; returns
/// their copies (and frees the buffers).
fn receive(port: &mut AfPacketPort, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut burst = Vec::with_capacity(32);
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        if port.rx_burst(&mut burst, 32) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        for buf in burst.drain(..) {
            if seq_of(buf.data()).is_some() {
                got.push(buf.data().to_vec());
            }
            port.free(buf);
        }
    }
    got
}

/// Reads test frames from `sock` until `want` arrived or 5 s passed.
fn drain_socket(sock: &RawSocket, want: usize, got: &mut Vec<Vec<u8>>) {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        match sock.try_recv(&mut buf) {
            Some(n) if seq_of(&buf[..n]).is_some() => got.push(buf[..n].to_vec()),
            Some(_) => {}
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

fn rx_burst_receives_every_frame_intact() {
    let topo = Topology::new(true);
    // Default config: also checks that the offload check passes once the
    // offloads are off.
    let mut port = topo.open_port(0, 1, RingConfig::default());
    let peer = topo.peer_socket();
    for seq in 0..1000 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let got = receive(&mut port, 1000);
    assert_eq!(got.len(), 1000, "frames received");
    for (seq, frame) in got.iter().enumerate() {
        assert_eq!(
            frame,
            &test_frame(seq as u32, PEER_MAC, PORT_MAC),
            "frame {seq}"
        );
    }
    let stats = port.detailed_stats();
    assert!(stats.port.rx_packets >= 1000);
    assert_eq!(stats.rx_kernel_drops, 0);
    assert_eq!(stats.rx_oversize, 0);
}

fn tx_burst_frames_reach_the_peer() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    let peer = topo.peer_socket();
    let mut got = Vec::new();
    let mut burst = Vec::with_capacity(32);
    let mut seq = 0u32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seq < 1000 && Instant::now() < deadline {
        while burst.len() < 32 && seq < 1000 {
            let mut buf = port.alloc().expect("pool buffer");
            let frame = test_frame(seq, PORT_MAC, PEER_MAC);
            buf.extend(frame.len())
                .expect("room")
                .copy_from_slice(&frame);
            burst.push(buf);
            seq += 1;
        }
        // Unsent frames stay in `burst` and go again next round.
        port.tx_burst(&mut burst);
        let mut one = vec![0u8; 4096];
        while let Some(n) = peer.try_recv(&mut one) {
            if seq_of(&one[..n]).is_some() {
                got.push(one[..n].to_vec());
            }
        }
    }
    while !burst.is_empty() && Instant::now() < deadline {
        port.tx_burst(&mut burst);
    }
    drain_socket(&peer, 1000, &mut got);
    assert_eq!(got.len(), 1000, "frames the peer received");
    for (seq, frame) in got.iter().enumerate() {
        assert_eq!(
            frame,
            &test_frame(seq as u32, PORT_MAC, PEER_MAC),
            "frame {seq}"
        );
    }
    let stats = port.detailed_stats();
    assert_eq!(stats.port.tx_packets, 1000);
    assert_eq!(stats.tx_oversize + stats.tx_send_errors, 0);
}

fn received_frames_are_rewritten_in_place_and_sent_back() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    let peer = topo.peer_socket();
    for seq in 0..200 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let mut burst = Vec::with_capacity(32);
    let mut echoed = 0;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while echoed < 200 && Instant::now() < deadline {
        port.rx_burst(&mut burst, 32);
        for buf in burst.iter_mut() {
            assert!(buf.is_ring_frame(), "received frames are lent in place");
            assert!(buf.headroom() >= sluice::port::HEADROOM);
            let data = buf.data_mut();
            data.copy_within(6..12, 0);
            data[6..12].copy_from_slice(&PORT_MAC);
        }
        echoed += burst.len();
        while !burst.is_empty() {
            port.tx_burst(&mut burst);
        }
        let mut one = vec![0u8; 4096];
        while let Some(n) = peer.try_recv(&mut one) {
            if seq_of(&one[..n]).is_some() {
                got.push(one[..n].to_vec());
            }
        }
    }
    drain_socket(&peer, 200, &mut got);
    assert_eq!(got.len(), 200);
    for (seq, frame) in got.iter().enumerate() {
        assert_eq!(
            frame,
            &test_frame(seq as u32, PORT_MAC, PEER_MAC),
            "frame {seq}"
        );
    }
    // The port must not see its own transmissions.
    assert!(receive(&mut port, 1).is_empty(), "own frames looped back");
}

fn frames_dropped_on_other_threads_give_their_slots_back() {
    let topo = Topology::new(true);
    // 64 slots: 1000 frames only get through if slots return to the kernel
    // after their frames die elsewhere.
    let config = RingConfig {
        frame_count: 64,
        ..RingConfig::default()
    };
    let mut port = topo.open_port(0, 1, config);
    let peer = topo.peer_socket();
    let (to_other, from_port) = crossbeam_channel::bounded::<Vec<_>>(1);
    let (done, wait_done) = crossbeam_channel::bounded::<()>(1);
    let other = std::thread::spawn(move || {
        for bufs in from_port {
            drop(bufs);
            done.send(()).expect("ack");
        }
    });
    let mut seen = HashSet::new();
    for wave in 0..20u32 {
        for seq in wave * 50..wave * 50 + 50 {
            peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
        }
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while held.len() < 50 && Instant::now() < deadline {
            let mut burst = Vec::new();
            port.rx_burst(&mut burst, 32);
            for buf in burst {
                if let Some(seq) = seq_of(buf.data()) {
                    assert_eq!(buf.data(), test_frame(seq, PEER_MAC, PORT_MAC).as_slice());
                    assert!(seen.insert(seq), "frame {seq} lent twice");
                    held.push(buf);
                }
            }
        }
        assert_eq!(held.len(), 50, "wave {wave}");
        to_other.send(held).expect("handoff");
        wait_done.recv().expect("ack");
    }
    drop(to_other);
    other.join().expect("other thread");
    assert_eq!(seen.len(), 1000);
    assert_eq!(port.detailed_stats().rx_kernel_drops, 0);
}

fn a_slot_held_across_a_lap_is_not_lent_twice() {
    let topo = Topology::new(true);
    // One allocation block: 32 slots.
    let config = RingConfig {
        frame_count: 32,
        ..RingConfig::default()
    };
    let mut port = topo.open_port(0, 1, config);
    let peer = topo.peer_socket();
    peer.send(&test_frame(0, PEER_MAC, PORT_MAC));
    let mut held = receive_held(&mut port, 1);
    assert_eq!(held.len(), 1);
    // Far more than the 31 other slots hold: the kernel laps back to the
    // held slot, finds it still ours and stops (counting drops), while the
    // port's walk stops there too until it is given back.
    let mut seen = HashSet::from([0u32]);
    for wave in 0..30u32 {
        for seq in 1 + wave * 10..1 + wave * 10 + 10 {
            peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
        }
        std::thread::sleep(Duration::from_millis(3));
        let mut burst = Vec::new();
        while port.rx_burst(&mut burst, 32) > 0 {
            for buf in burst.drain(..) {
                if let Some(seq) = seq_of(buf.data()) {
                    assert!(seen.insert(seq), "frame {seq} lent twice");
                }
            }
        }
    }
    assert_eq!(held[0].data(), test_frame(0, PEER_MAC, PORT_MAC).as_slice());
    assert!(port.detailed_stats().rx_kernel_drops > 0, "the ring froze");
    held.clear();
    // The kernel resumes once the slot is back.
    for seq in 1000..1010 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let late = receive(&mut port, 10);
    assert!(
        !late.is_empty(),
        "reception resumes after the slot is released"
    );
    for frame in &late {
        let seq = seq_of(frame).expect("test frame");
        assert!(seen.insert(seq), "frame {seq} lent twice");
    }
}

/// Polls until `want` test frames arrived (or 5 s) and keeps the buffers.
fn receive_held(port: &mut AfPacketPort, want: usize) -> Vec<sluice::port::afpacket::AfPacketBuf> {
    let mut held = Vec::new();
    let mut burst = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.len() < want && Instant::now() < deadline {
        port.rx_burst(&mut burst, 32);
        held.extend(burst.drain(..).filter(|b| seq_of(b.data()).is_some()));
    }
    held
}

/// A copy of a port's socket, as a service manager's fd store keeps it.
fn kept_copy(port: &AfPacketPort) -> OwnedFd {
    // SAFETY: dup of a live descriptor; the copy is owned here.
    let fd = unsafe { libc::dup(port.raw_fd()) };
    assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn seqs(frames: &[Vec<u8>]) -> Vec<u32> {
    frames.iter().filter_map(|f| seq_of(f)).collect()
}

/// A socket kept across a restart (the fd store) is taken back with its
/// ring: the frames that arrived while no port read it come first, in
/// order, then new ones, across the ring's wrap; a slot the dead port had
/// lent is given back (or the kernel's walk would stop at it). A ring of
/// another size is refused.
fn a_kept_socket_is_taken_back_with_its_ring() {
    let topo = Topology::new(true);
    let config = small_ring();
    let mut port = topo.open_port(0, 1, config);
    let peer = topo.peer_socket();
    for seq in 0..100 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    assert_eq!(seqs(&receive(&mut port, 100)), (0..100).collect::<Vec<_>>());
    let kept = kept_copy(&port);
    let other = kept_copy(&port);
    // The process dies holding one frame.
    peer.send(&test_frame(100, PEER_MAC, PORT_MAC));
    let held = receive_held(&mut port, 1);
    assert_eq!(held.len(), 1);
    std::mem::forget(held);
    drop(port);
    for seq in 101..131 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let bigger = RingConfig {
        frame_count: 512,
        ..config
    };
    let refused = topo.adopt_port(other, bigger).err();
    assert!(refused.is_some(), "a ring of another size was taken");
    let mut port = topo.adopt_port(kept, config).expect("take the socket back");
    assert_eq!(
        seqs(&receive(&mut port, 30)),
        (101..131).collect::<Vec<_>>()
    );
    // Past the ring's 256 slots, through the slot that was lent.
    let mut want = Vec::new();
    for seq in 131..531 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
        want.push(seq);
        if seq % 100 == 0 {
            let got = receive(&mut port, want.len());
            assert_eq!(seqs(&got), want);
            want.clear();
        }
    }
    assert_eq!(seqs(&receive(&mut port, want.len())), want);
}

/// Taken back with nothing unread, the port reads the next frame the
/// kernel writes, and every one after it in order.
fn a_kept_socket_with_nothing_unread_reads_what_comes_next() {
    let topo = Topology::new(true);
    let config = small_ring();
    let mut port = topo.open_port(0, 1, config);
    let peer = topo.peer_socket();
    for seq in 0..150 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    assert_eq!(receive(&mut port, 150).len(), 150);
    let kept = kept_copy(&port);
    drop(port);
    let mut port = topo.adopt_port(kept, config).expect("take the socket back");
    for seq in 150..450 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
        if seq % 50 == 49 {
            let got = receive(&mut port, 50);
            assert_eq!(seqs(&got), (seq - 49..=seq).collect::<Vec<_>>());
        }
    }
}

fn buffers_outlive_their_port() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    let peer = topo.peer_socket();
    for seq in 0..10 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.len() < 10 && Instant::now() < deadline {
        port.rx_burst(&mut held, 32);
    }
    drop(port);
    // The mapping lives until the last lent frame goes.
    let seqs: Vec<_> = held.iter().filter_map(|b| seq_of(b.data())).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    drop(held);
}

fn two_ports_in_one_fanout_group_share_the_traffic() {
    let topo = Topology::new(true);
    // Every frame is sent before either port reads: room for all of them.
    let roomy = RingConfig {
        frame_count: 1024,
        ..RingConfig::default()
    };
    let mut first = topo.open_port(0, 2, roomy);
    let mut second = topo.open_port(1, 2, roomy);
    let peer = topo.peer_socket();
    for seq in 0..1000 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let mut got_first = Vec::new();
    let mut got_second = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = Vec::new();
    while got_first.len() + got_second.len() < 1000 && Instant::now() < deadline {
        for (port, got) in [(&mut first, &mut got_first), (&mut second, &mut got_second)] {
            port.rx_burst(&mut burst, 32);
            got.extend(burst.drain(..).filter_map(|b| seq_of(b.data())));
        }
    }
    let (a, b) = (got_first.len(), got_second.len());
    // One more look a little later: duplicates would show up here.
    std::thread::sleep(Duration::from_millis(20));
    for (port, got) in [(&mut first, &mut got_first), (&mut second, &mut got_second)] {
        port.rx_burst(&mut burst, 1000);
        got.extend(burst.drain(..).filter_map(|b| seq_of(b.data())));
    }
    assert_eq!(
        (got_first.len(), got_second.len()),
        (a, b),
        "late duplicates"
    );
    println!("fanout split: {a} / {b}");
    assert!(a > 0 && b > 0, "both workers get traffic: {a} / {b}");
    let all: HashSet<u32> = got_first.iter().chain(&got_second).copied().collect();
    assert_eq!(a + b, 1000, "no frame delivered twice or lost");
    assert_eq!(all.len(), 1000);
}

/// Test frames of many clients, the client in the source (`to_backend`
/// false) or, swapped, in the destination (a backend's reply).
fn client_frame(seq: u32, reply: bool) -> Vec<u8> {
    let mut f = test_frame(seq, PEER_MAC, PORT_MAC);
    // Vary the client address too (the IPv4 checksum stays right: the
    // address words are swapped with the server's below or adjusted here).
    f[28] = (seq / 4096) as u8;
    let csum = checksum::checksum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&csum.to_be_bytes());
    if reply {
        let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
        f[26..30].copy_from_slice(&dst);
        f[30..34].copy_from_slice(&src);
        let (sp, dp) = (f[34..36].to_vec(), f[36..38].to_vec());
        f[34..36].copy_from_slice(&dp);
        f[36..38].copy_from_slice(&sp);
    }
    f
}

/// The client (address, port) of a frame made by [`client_frame`].
fn client_of(frame: &[u8], reply: bool) -> (u32, u16) {
    let (a, p) = if reply { (30, 36) } else { (26, 34) };
    (
        u32::from_be_bytes(frame[a..a + 4].try_into().unwrap()),
        u16::from_be_bytes(frame[p..p + 2].try_into().unwrap()),
    )
}

/// With the owner fanout program, every frame reaches the socket of the
/// worker `rss::owner_worker` names (3 workers, so a wrong join order or a
/// `% 2` slip shows), on a client-facing and on a backend-facing group,
/// and still after one worker's socket is replaced by a new one.
fn owner_fanout_delivers_every_flow_to_its_owner() {
    use sluice::port::afpacket::fanout::ClientSide;
    use sluice::port::afpacket::FanoutMode;
    const WORKERS: u32 = 3;
    const FRAMES: u32 = 3000;
    for (side, reply) in [(ClientSide::Source, false), (ClientSide::Destination, true)] {
        let topo = Topology::new(true);
        let ring = RingConfig {
            frame_count: 4096,
            fanout: FanoutMode::Owner(side),
            ..RingConfig::default()
        };
        let join = |topo: &Topology, port: AfPacketPort| -> AfPacketPort {
            Topology::within(&topo.a, move || {
                port.join_owner_fanout(side, WORKERS).expect("join");
                port
            })
        };
        let mut ports: Vec<AfPacketPort> = (0..WORKERS)
            .map(|w| topo.open_port(w, WORKERS, ring))
            .collect();
        ports = ports.into_iter().map(|p| join(&topo, p)).collect();
        let peer = topo.peer_socket();
        for round in 0..2 {
            if round == 1 {
                // A re-opened worker 1: joins before the old socket goes.
                let fresh = join(&topo, topo.open_port(1, WORKERS, ring));
                let old = std::mem::replace(&mut ports[1], fresh);
                drop(old);
            }
            for seq in 0..FRAMES {
                peer.send(&client_frame(seq, reply));
            }
            let mut got = vec![Vec::new(); WORKERS as usize];
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut burst = Vec::new();
            while got.iter().map(Vec::len).sum::<usize>() < FRAMES as usize
                && Instant::now() < deadline
            {
                for (w, port) in ports.iter_mut().enumerate() {
                    port.rx_burst(&mut burst, 64);
                    for b in burst.drain(..) {
                        if seq_of(b.data()).is_some() {
                            got[w].push(client_of(b.data(), reply));
                        }
                    }
                }
            }
            let total: usize = got.iter().map(Vec::len).sum();
            let misplaced: usize = got
                .iter()
                .enumerate()
                .map(|(w, g)| {
                    g.iter()
                        .filter(|&&(a, p)| sluice::rss::owner_worker(a, p, WORKERS) != w as u32)
                        .count()
                })
                .sum();
            let split: Vec<usize> = got.iter().map(Vec::len).collect();
            println!(
                "{side:?} round {round}: split {split:?}, {misplaced} of {total} on a worker \
                 that does not own the flow ({:.2}%)",
                100.0 * misplaced as f64 / total.max(1) as f64
            );
            assert_eq!(total, FRAMES as usize, "every frame arrives once");
            assert!(split.iter().all(|&n| n > 0), "{split:?}");
            assert_eq!(misplaced, 0, "{side:?} round {round}");
        }
    }
}

fn offloads_on_are_refused_with_the_ethtool_fix() {
    let topo = Topology::new(false);
    let err = Topology::within(&topo.a, || {
        AfPacketPort::open(PORT_IF, 0, 1, small_ring()).map(|_| ())
    })
    .expect_err("veth has TSO/GSO on by default");
    assert!(matches!(err, AfPacketError::OffloadsOn { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ethtool -K veth0 gro off gso off tso off lro off"),
        "{message}"
    );
    let allowed = RingConfig {
        allow_offloads: true,
        ..small_ring()
    };
    Topology::within(&topo.a, move || AfPacketPort::open(PORT_IF, 0, 1, allowed))
        .expect("allow_offloads opens anyway");
}

fn bad_arguments_are_refused() {
    let topo = Topology::new(true);
    let errs = Topology::within(&topo.a, || {
        [
            AfPacketPort::open("nosuchif0", 0, 1, small_ring()).err(),
            AfPacketPort::open(PORT_IF, 2, 2, small_ring()).err(),
            AfPacketPort::open("a-name-far-too-long", 0, 1, small_ring()).err(),
        ]
        .map(|e| e.map(|e| e.to_string()))
    });
    assert!(errs[0]
        .as_deref()
        .is_some_and(|m| m.contains("no interface named nosuchif0")));
    assert!(errs[1]
        .as_deref()
        .is_some_and(|m| m.contains("out of range")));
    assert!(errs[2].as_deref().is_some_and(|m| m.contains("not valid")));
}

fn locally_sent_datagrams_arrive_with_a_complete_checksum() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    // The peer's own IP stack sends with checksum offload (veth default), so
    // the frame crosses the veth as CHECKSUM_PARTIAL (TP_STATUS_CSUMNOTREADY).
    run(&[
        "ip",
        "-n",
        &topo.b,
        "addr",
        "add",
        "10.200.7.2/24",
        "dev",
        PEER_IF,
    ]);
    run(&[
        "ip",
        "-n",
        &topo.b,
        "neigh",
        "add",
        "10.200.7.1",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        PEER_IF,
    ]);
    Topology::within(&topo.b, || {
        let sock = std::net::UdpSocket::bind("10.200.7.2:0").expect("bind");
        sock.send_to(b"checksum me", "10.200.7.1:9999")
            .expect("send");
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = Vec::new();
    let frame = loop {
        assert!(Instant::now() < deadline, "datagram never arrived");
        port.rx_burst(&mut burst, 32);
        if let Some(b) = burst
            .drain(..)
            .find(|b| b.data().len() >= 42 && b.data()[23] == 17)
        {
            break b.data().to_vec();
        }
    };
    let udp = &frame[34..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
    let pseudo = checksum::pseudo_header_v4(
        Ipv4Addr::new(10, 200, 7, 2),
        Ipv4Addr::new(10, 200, 7, 1),
        17,
        udp_len,
    );
    let folded = checksum::fold(pseudo + checksum::sum(&udp[..usize::from(udp_len)]));
    assert_eq!(folded, 0xffff, "UDP checksum verifies");
}

/// A lone frame is ready at once, not when a timer hands it over (with
/// TPACKET_V3 it waited for its block's retire timeout: 1 ms at best, 4 ms
/// at HZ=250), and the socket polls readable as soon as it lands, so a
/// sleeping worker wakes for it.
fn a_lone_frame_is_ready_at_once_and_wakes_a_poller() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    let peer = topo.peer_socket();
    let fd = port
        .rx_event_fd()
        .expect("the AF_PACKET port has an event fd");
    let poll_readable = |timeout_ms: i32| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
        p.revents & libc::POLLIN != 0
    };
    assert!(!poll_readable(50), "readable with an empty ring");
    let mut waits = Vec::new();
    let mut burst = Vec::new();
    for seq in 0..21 {
        let sent = Instant::now();
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
        // The frame lands in the ring within the send call on a veth, so
        // the poll answers at once; the generous timeout only bounds a
        // failure.
        assert!(poll_readable(1000), "frame {seq} did not wake a poller");
        let got = loop {
            if port.rx_burst(&mut burst, 32) > 0 {
                break Instant::now();
            }
            assert!(
                sent.elapsed() < Duration::from_secs(1),
                "frame {seq} never came"
            );
        };
        waits.push(got - sent);
        for b in burst.drain(..) {
            assert_eq!(seq_of(b.data()), Some(seq));
        }
        assert!(
            !poll_readable(0),
            "readable again after the frame was taken"
        );
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    println!(
        "send -> received: median {median:?}, max {:?}",
        waits[waits.len() - 1]
    );
    assert!(
        median < Duration::from_micros(900),
        "frames wait for something: median {median:?}"
    );
}

/// A VLAN tag is stripped into metadata by the kernel before packet taps
/// see the frame; the port puts it back, so sluice sees the wire's bytes.
fn a_stripped_vlan_tag_is_put_back() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    let peer = topo.peer_socket();
    let plain = test_frame(7, PEER_MAC, PORT_MAC);
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x20, 0x2a]); // priority 1, VLAN 42
    tagged.extend_from_slice(&plain[12..]);
    peer.send(&tagged);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = Vec::new();
    let got = loop {
        assert!(Instant::now() < deadline, "tagged frame never arrived");
        port.rx_burst(&mut burst, 32);
        if let Some(b) = burst.drain(..).find(|b| b.len() == tagged.len()) {
            assert!(b.headroom() >= sluice::port::HEADROOM);
            break b.data().to_vec();
        }
    };
    assert_eq!(got, tagged);
}

/// Echo rate over the veth: a generator port in namespace `b` keeps a window
/// of frames in flight; the port under test in `a` echoes each burst back
/// with its MACs swapped in place. Prints packets per second.
///
/// `SLUICE_BENCH_WINDOW` (frames in flight, default 4096) and
/// `SLUICE_BENCH_FRAMES` (RX slots, default 4096).
fn bench_echo_pps_over_veth() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let window = env("SLUICE_BENCH_WINDOW", 4096);
    let config = RingConfig {
        frame_count: env("SLUICE_BENCH_FRAMES", 4096) as u32,
        ..RingConfig::default()
    };
    let topo = Topology::new(true);
    let mut dut = topo.open_port(0, 1, config);
    let mut generator =
        Topology::within(&topo.b, move || AfPacketPort::open(PEER_IF, 0, 1, config))
            .expect("generator port");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_dut = stop.clone();
    let dut_thread = std::thread::spawn(move || {
        let mut burst = Vec::with_capacity(32);
        while !stop_dut.load(Ordering::Relaxed) {
            if dut.rx_burst(&mut burst, 32) == 0 {
                continue;
            }
            for buf in burst.iter_mut() {
                let data = buf.data_mut();
                let mut dst = [0u8; 6];
                dst.copy_from_slice(&data[..6]);
                data.copy_within(6..12, 0);
                data[6..12].copy_from_slice(&dst);
            }
            dut.tx_burst(&mut burst);
            for buf in burst.drain(..) {
                dut.free(buf);
            }
        }
        dut.detailed_stats()
    });
    let frame = test_frame(1, PEER_MAC, PORT_MAC)[..64].to_vec();
    let (mut in_flight, mut lost_windows) = (0u64, 0u32);
    let mut idle_polls = 0u32;
    let mut out = Vec::with_capacity(32);
    let mut back = Vec::with_capacity(64);
    let duration = Duration::from_secs(3);
    let start = Instant::now();
    while start.elapsed() < duration {
        while in_flight + (out.len() as u64) < window && out.len() < 32 {
            let mut buf = generator.alloc().expect("buffer");
            buf.extend(frame.len())
                .expect("room")
                .copy_from_slice(&frame);
            out.push(buf);
        }
        let before = out.len();
        generator.tx_burst(&mut out);
        in_flight += (before - out.len()) as u64;
        let n = generator.rx_burst(&mut back, 64) as u64;
        back.clear();
        in_flight = in_flight.saturating_sub(n);
        if n == 0 {
            idle_polls += 1;
            // Frames lost on the way would shrink the window for good.
            if idle_polls > 100_000 {
                in_flight = 0;
                lost_windows += 1;
                idle_polls = 0;
            }
        } else {
            idle_polls = 0;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let dut_stats = dut_thread.join().expect("dut");
    let generator_stats = generator.detailed_stats();
    println!(
        "echo over veth: {:.0} pps ({} frames echoed in {secs:.2} s, window {window}, {} slots, \
         {lost_windows} window resets)\n  dut: {dut_stats:?}\n  generator: {generator_stats:?}",
        generator_stats.port.rx_packets as f64 / secs,
        generator_stats.port.rx_packets,
        config.frame_count,
    );
}

/// Calls `check_link` until the port re-opens (5 s at most).
fn until_reopened(port: &mut AfPacketPort) -> Duration {
    let start = Instant::now();
    while !port.check_link(true) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the port was not re-opened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// Link events on the port's interface: an MTU raised past the ring's slot
/// size and a down/up each re-open the port (checked from a thread outside
/// the port's namespace, as a worker of another namespace would); frames
/// lent from the old ring stay readable, and afterwards frames arrive
/// intact, the large ones too.
fn link_events_reopen_the_port() {
    let topo = Topology::new(true);
    let mut port = topo.open_port(0, 1, small_ring());
    let peer = topo.peer_socket();
    assert!(!port.check_link(true), "nothing happened yet");
    peer.send(&test_frame(1, PEER_MAC, PORT_MAC));
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.is_empty() && Instant::now() < deadline {
        port.rx_burst(&mut held, 1);
    }
    assert_eq!(held.len(), 1, "a frame before the events");
    let slot = port.frame_size();
    for ns_if in [(&topo.a, PORT_IF), (&topo.b, PEER_IF)] {
        run(&["ip", "-n", ns_if.0, "link", "set", ns_if.1, "mtu", "3000"]);
    }
    let took = until_reopened(&mut port);
    eprintln!("MTU 1500 -> 3000: re-opened after {took:?}");
    assert_eq!(port.reopens(), 1);
    assert!(port.frame_size() > slot, "slots grew with the MTU");
    let mut big = test_frame(2, PEER_MAC, PORT_MAC);
    big.resize(2800, 0xab);
    peer.send(&big);
    peer.send(&test_frame(3, PEER_MAC, PORT_MAC));
    let got = receive(&mut port, 2);
    assert_eq!(got, vec![big, test_frame(3, PEER_MAC, PORT_MAC)]);
    assert_eq!(port.detailed_stats().rx_oversize, 0);
    assert_eq!(held[0].data(), &test_frame(1, PEER_MAC, PORT_MAC)[..]);

    run(&["ip", "-n", &topo.a, "link", "set", PORT_IF, "down"]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!port.check_link(true), "not re-opened while down");
    run(&["ip", "-n", &topo.a, "link", "set", PORT_IF, "up"]);
    let took = until_reopened(&mut port);
    eprintln!("down/up: re-opened after {took:?}");
    assert_eq!(port.reopens(), 2);
    // The peer may take a moment to see the carrier again.
    std::thread::sleep(Duration::from_millis(100));
    for seq in 10..20 {
        peer.send(&test_frame(seq, PEER_MAC, PORT_MAC));
    }
    let got = receive(&mut port, 10);
    assert_eq!(got.len(), 10, "frames after down/up");
    drop(held);
}

machine_tests!(&[harness::Need::Root, harness::Need::Tool("ip")];
    a_kept_socket_is_taken_back_with_its_ring,
    a_kept_socket_with_nothing_unread_reads_what_comes_next,
    rx_burst_receives_every_frame_intact,
    tx_burst_frames_reach_the_peer,
    received_frames_are_rewritten_in_place_and_sent_back,
    frames_dropped_on_other_threads_give_their_slots_back,
    a_slot_held_across_a_lap_is_not_lent_twice,
    buffers_outlive_their_port,
    two_ports_in_one_fanout_group_share_the_traffic,
    owner_fanout_delivers_every_flow_to_its_owner,
    offloads_on_are_refused_with_the_ethtool_fix,
    bad_arguments_are_refused,
    locally_sent_datagrams_arrive_with_a_complete_checksum,
    a_lone_frame_is_ready_at_once_and_wakes_a_poller,
    a_stripped_vlan_tag_is_put_back,
    link_events_reopen_the_port;
    ignored: bench_echo_pps_over_veth
);
