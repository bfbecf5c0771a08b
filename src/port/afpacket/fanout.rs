//! Flow ownership on AF_PACKET: a `PACKET_FANOUT_CBPF` group whose classic
//! BPF program computes [`crate::rss::owner_worker`] for each frame, so the
//! kernel delivers every packet to the socket of the worker that owns its
//! flow and nothing crosses a handoff ring.
//!
//! The program reads the client side of an IPv4 TCP or UDP packet (the
//! source address and port on a client-facing interface, the destination
//! on a backend-facing one), computes the Toeplitz hash of those 6 bytes
//! under [`crate::rss::KEY`] unrolled (classic BPF has no loops: for each of
//! the 48 input bits that is set, the 32-bit key window at that bit is
//! XORed in), then `% RETA_SIZE` and `% workers` as the NIC's redirection
//! table does. Anything else (not IPv4, not TCP/UDP, a fragment) goes to
//! socket 0; the worker pipeline hands it on if it belongs elsewhere.
//!
//! The kernel maps the program's result to the group's members in the
//! order they joined, and when a member leaves, the last one takes its
//! place. So the workers must join in worker order ([`join`] one socket
//! at a time, worker 0 first), and a socket re-opened later must join
//! *before* the socket it replaces is closed: it is appended at index
//! `workers`, the program never picks it, and closing the old one moves it
//! into the old one's index.

use std::io;
use std::os::fd::OwnedFd;

use super::sys;
use crate::rss;

pub use crate::rss::ClientSide;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const ST: u16 = 0x02;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
const JEQ: u16 = 0x10;
const JSET: u16 = 0x40;
const K: u16 = 0x00;
const RET_A: u16 = 0x10;
const TAX: u16 = 0x00;

/// Loads relative to the network header (`SKF_NET_OFF`), wherever the
/// kernel's data pointer is when the fanout runs the program.
const NET: u32 = (-0x10_0000i32) as u32;
/// The ancillary load of `skb->protocol` (`SKF_AD_OFF + SKF_AD_PROTOCOL`).
const AD_PROTOCOL: u32 = (-0x1000i32) as u32;

/// Scratch memory slots the program uses.
const M_ADDR: u32 = 0;
const M_PORT: u32 = 1;
const M_HASH: u32 = 2;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The 32 key bits starting at input bit `bit` (what a set input bit XORs
/// into the hash).
fn key_window(bit: usize) -> u32 {
    let mut input = [0u8; 6];
    input[bit / 8] = 0x80 >> (bit % 8);
    rss::toeplitz(&input)
}

/// The classic BPF program that returns the owning worker (of `workers`)
/// of each frame, reading the client from `side`.
pub fn owner_program(side: ClientSide, workers: u32) -> Vec<libc::sock_filter> {
    let workers = workers.max(1);
    let (addr_off, port_off) = match side {
        ClientSide::Source => (12, 0),
        ClientSide::Destination => (16, 2),
    };
    let mut p = vec![
        // 0: IPv4 only.
        stmt(LD | H | ABS, AD_PROTOCOL),
        jump(JMP | JEQ | K, 0x0800, 0, 5),
        // 2: TCP or UDP only.
        stmt(LD | B | ABS, NET + 9),
        jump(JMP | JEQ | K, 6, 1, 0),
        jump(JMP | JEQ | K, 17, 0, 2),
        // 5: no fragments (MF set or a fragment offset).
        stmt(LD | H | ABS, NET + 6),
        jump(JMP | JSET | K, 0x3fff, 0, 1),
        // 7: everything refused above.
        stmt(RET | K, 0),
        // 8: X = IP header length.
        stmt(LD | B | ABS, NET),
        stmt(ALU | AND | K, 0x0f),
        stmt(ALU | LSH | K, 2),
        stmt(MISC | TAX, 0),
        stmt(LD | W | ABS, NET + addr_off),
        stmt(ST, M_ADDR),
        stmt(LD | H | IND, NET + port_off),
        stmt(ST, M_PORT),
        stmt(LD | IMM, 0),
        stmt(ST, M_HASH),
    ];
    for bit in 0..48usize {
        let (slot, mask) = if bit < 32 {
            (M_ADDR, 0x8000_0000u32 >> bit)
        } else {
            (M_PORT, 0x8000u32 >> (bit - 32))
        };
        p.push(stmt(LD | MEM, slot));
        p.push(jump(JMP | JSET | K, mask, 0, 3));
        p.push(stmt(LD | MEM, M_HASH));
        p.push(stmt(ALU | XOR | K, key_window(bit)));
        p.push(stmt(ST, M_HASH));
    }
    p.push(stmt(LD | MEM, M_HASH));
    p.push(stmt(ALU | AND | K, rss::RETA_SIZE - 1));
    p.push(stmt(ALU | MOD | K, workers));
    p.push(stmt(RET | RET_A, 0));
    p
}

/// Joins `fd` (bound to the interface, not yet in any fanout group) to the
/// owner fanout group `group` and sets the group's program. Call it for
/// one worker's socket at a time, in worker order; see the module's notes
/// for re-opened sockets.
pub fn join(fd: &OwnedFd, group: u16, side: ClientSide, workers: u32) -> io::Result<()> {
    const PACKET_FANOUT_CBPF: u32 = 6;
    const PACKET_FANOUT_DATA: i32 = 22;
    let arg = (PACKET_FANOUT_CBPF << 16) | u32::from(group);
    sys::set_option(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
    let mut prog = owner_program(side, workers);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    sys::set_option(fd, libc::SOL_PACKET, PACKET_FANOUT_DATA, &fprog)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A classic BPF interpreter for the instructions [`owner_program`]
    /// uses, with the kernel's semantics: `packet` starts at the network
    /// header, a load past its end ends the program with 0.
    pub(crate) fn run(prog: &[libc::sock_filter], protocol: u16, packet: &[u8]) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem = [0u32; 16];
        let mut pc = 0usize;
        let load = |off: u32, size: usize| -> Option<u32> {
            if off == AD_PROTOCOL {
                return Some(u32::from(protocol));
            }
            let rel = off.wrapping_sub(NET) as usize;
            let bytes = packet.get(rel..rel + size)?;
            Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let size = match i.code & 0x18 {
                W => 4,
                H => 2,
                _ => 1,
            };
            match i.code & 0x07 {
                LD => match i.code & 0xe0 {
                    IMM => a = i.k,
                    ABS => match load(i.k, size) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    IND => match load(i.k.wrapping_add(x), size) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    MEM => a = mem[i.k as usize],
                    m => panic!("load mode {m:#x}"),
                },
                ST => mem[i.k as usize] = a,
                ALU => match i.code & 0xf0 {
                    AND => a &= i.k,
                    LSH => a <<= i.k,
                    MOD => a %= i.k,
                    XOR => a ^= i.k,
                    op => panic!("alu {op:#x}"),
                },
                JMP => {
                    let taken = match i.code & 0xf0 {
                        JEQ => a == i.k,
                        JSET => a & i.k != 0,
                        op => panic!("jump {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => return if i.code & 0x18 == RET_A { a } else { i.k },
                MISC => x = a,
                c => panic!("class {c:#x}"),
            }
        }
    }

    /// An IPv4 header (with `options` 32-bit words of options) and the
    /// first 4 bytes of an L4 header.
    pub(crate) fn packet(
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        options: usize,
    ) -> Vec<u8> {
        let mut p = vec![0u8; 20 + options * 4];
        p[0] = 0x40 | (5 + options as u8);
        p[9] = proto;
        p[12..16].copy_from_slice(&src.to_be_bytes());
        p[16..20].copy_from_slice(&dst.to_be_bytes());
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn the_program_computes_owner_worker_on_either_side() {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        for workers in [2u32, 3, 4, 7] {
            let src = owner_program(ClientSide::Source, workers);
            let dst = owner_program(ClientSide::Destination, workers);
            assert!(src.len() < 4096);
            for n in 0..3_000 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let (client, cport) = (s as u32, (s >> 32) as u16);
                let (other, oport) = ((s >> 17) as u32, (s >> 48) as u16);
                let want = rss::owner_worker(client, cport, workers);
                let proto = if n % 2 == 0 { 6 } else { 17 };
                let options = n % 3;
                let fwd = packet(proto, client, cport, other, oport, options);
                assert_eq!(run(&src, 0x0800, &fwd), want, "{client:#x}:{cport}");
                let back = packet(proto, other, oport, client, cport, options);
                assert_eq!(run(&dst, 0x0800, &back), want, "{client:#x}:{cport}");
            }
        }
    }

    #[test]
    fn everything_else_goes_to_worker_zero() {
        let prog = owner_program(ClientSide::Source, 4);
        // Pick a client that some other worker owns.
        let port = (1024u16..)
            .find(|&p| rss::owner_worker(0x0ac8_0001, p, 4) != 0)
            .unwrap();
        let tcp = packet(6, 0x0ac8_0001, port, 0xc612_0064, 80, 0);
        assert_ne!(run(&prog, 0x0800, &tcp), 0);
        // ICMP, IPv6 (by protocol), a first fragment, a later fragment,
        // a frame cut short of its ports.
        assert_eq!(
            run(&prog, 0x0800, &packet(1, 0x0ac8_0001, port, 1, 80, 0)),
            0
        );
        assert_eq!(run(&prog, 0x86dd, &tcp), 0);
        let mut frag = tcp.clone();
        frag[6] = 0x20;
        assert_eq!(run(&prog, 0x0800, &frag), 0);
        frag[6] = 0;
        frag[7] = 0x10;
        assert_eq!(run(&prog, 0x0800, &frag), 0);
        assert_eq!(run(&prog, 0x0800, &tcp[..21]), 0);
    }
}
