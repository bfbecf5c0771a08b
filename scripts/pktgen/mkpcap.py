#!/usr/bin/env python3
"""Write a pcap of N distinct established TCP flows (one ACK frame each) for
pktgen's pcap replay (flow_sweep.lua): the same geometry as common.lua's
range mode (VIPS VIPs x A client addresses x P client ports, stepped in
lockstep, A and P odd and coprime), so a pcap point and a range-mode point
with the same count send the same flows.

  mkpcap.py OUT.pcap FLOWS [--flag ack|syn] [--size 64] [--vips 4]
            [--vip-base 198.18.0.100] [--client-base 198.19.0.1]
            [--dst-mac 02:00:00:00:01:fe] [--src-mac 02:00:00:00:01:01]

Checksums (IPv4 and TCP) are computed, so a kernel peer accepts the frames.
"""
import argparse
import ipaddress
import math
import struct
import sys


def geometry(flows, vips):
    per_vip = max(1, math.ceil(flows / vips))
    a = max(1, math.ceil(per_vip / 60000))
    if a % 2 == 0:
        a += 1
    p = max(1, math.ceil(per_vip / a))
    if p % 2 == 0:
        p += 1
    while math.gcd(a, p) != 1:
        p += 2
    return a, p, vips * a * p


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac(s):
    b = bytes(int(x, 16) for x in s.split(":"))
    if len(b) != 6:
        raise ValueError("bad MAC " + s)
    return b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("flows", type=int)
    ap.add_argument("--flag", choices=["ack", "syn"], default="ack")
    ap.add_argument("--size", type=int, default=64, help="frame size with FCS, as pktgen counts (>= 64)")
    ap.add_argument("--vips", type=int, default=4)
    ap.add_argument("--vip-base", default="198.18.0.100")
    ap.add_argument("--client-base", default="198.19.0.1")
    ap.add_argument("--dst-mac", default="02:00:00:00:01:fe")
    ap.add_argument("--src-mac", default="02:00:00:00:01:01")
    o = ap.parse_args()
    if o.flows < 1 or o.size < 64 or o.vips < 1:
        sys.exit("mkpcap: flows >= 1, size >= 64, vips >= 1")
    a, p, n = geometry(o.flows, o.vips)
    vip0 = int(ipaddress.IPv4Address(o.vip_base))
    cl0 = int(ipaddress.IPv4Address(o.client_base))
    eth = mac(o.dst_mac) + mac(o.src_mac) + b"\x08\x00"
    flags = 0x10 if o.flag == "ack" else 0x02
    payload = b"\0" * (o.size - 4 - 14 - 20 - 20)
    with open(o.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k in range(n):
            src = struct.pack("!I", cl0 + k % a)
            dst = struct.pack("!I", vip0 + k % o.vips)
            sport = 1024 + k % p
            tot = 20 + 20 + len(payload)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, k & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
            ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
            tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
            pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
            tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
            frame = eth + ip + tcp
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)))
            f.write(frame)
    print(f"mkpcap: {o.out}: {n} flows ({o.vips} VIPs x {a} clients x {p} ports), {o.flag}, {o.size}-byte frames")


if __name__ == "__main__":
    main()
