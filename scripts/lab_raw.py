#!/usr/bin/env python3
"""Raw frames for the lab: malformed input for sluice, forged TCP segments,
and a sniffer to see what reaches a namespace.

    lab_raw.py malformed IFACE DST_MAC SRC_IP VIP VPORT ROUNDS [KIND...]
        Sends ROUNDS of each bad frame kind (or only the KINDs named) out of
        IFACE (AF_PACKET) to DST_MAC; prints {"sent": {kind: n}}.
    lab_raw.py tcp SRC SPORT DST DPORT FLAGS [COUNT]
        Sends a TCP segment (FLAGS like "A", "SA", "PA") through the
        namespace's routing with a raw IP socket; prints {"sent": n}.
    lab_raw.py sniff IFACE SECONDS [PORT...]
        Prints every IPv4/TCP frame seen on IFACE for SECONDS whose source
        or destination port is one of PORTs (all if none), one JSON list:
        [{"src": "a:p", "dst": "a:p", "flags": "SA"}, ...]. Prints
        "ready" on stderr once the socket is open.
    lab_raw.py arp IFACE SRC_IP TARGET_IP
        Broadcasts an ARP request for TARGET_IP and prints the answer's
        sender MAC, {"mac": "02:..."} or {"mac": null} after 2 s.
    lab_raw.py flood IFACE DST_MAC VIP VPORT COUNT SRC_PREFIX
        A spoofed flood: COUNT frames out of IFACE to DST_MAC, alternately
        SYNs and bare ACKs to VIP:VPORT from random addresses under
        SRC_PREFIX (like "198.19", the first two octets) and random ports,
        as fast as the socket takes them; prints
        {"sent": n, "seconds": s, "pps": r}.
"""
import json
import random
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}


def tcp_segment(src, sport, dst, dport, flags, seq=None, payload=b""):
    bits = sum(FLAG_BITS[c] for c in flags)
    seq = random.getrandbits(32) if seq is None else seq
    ack = random.getrandbits(32) if bits & 0x10 else 0
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, bits, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = csum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


def ipv4(src, dst, payload, proto=6, ttl=64, frag=0, ihl=5, total=None):
    total = 20 + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, total, random.getrandbits(16), frag, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def malformed(iface, dst_mac, src_ip, vip, vport, rounds, only):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    src_mac = s.getsockname()[4]
    eth = lambda et: mac(dst_mac) + src_mac + struct.pack("!H", et)  # noqa: E731
    good_tcp = lambda: tcp_segment(src_ip, random.randint(20000, 60000), vip, vport, "S")  # noqa: E731
    kinds = {
        # VLAN tag announced but cut off after the Ethernet header.
        "malformed_ethernet": lambda: eth(0x8100),
        "bad_ihl": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp(), ihl=3),
        "bad_version": lambda: eth(0x0800) + bytes([0x65]) + ipv4(src_ip, vip, good_tcp())[1:],
        "bogus_total_length": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp(), total=1400),
        "truncated_ipv4": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp())[:12],
        "fragment_first": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp(), frag=0x2000),
        "fragment_later": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp(), frag=0x0010),
        "ttl_1": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp(), ttl=1),
        "arp_short": lambda: eth(0x0806) + b"\x00\x01\x08\x00\x06",
        "arp_wrong_hw": lambda: eth(0x0806) + struct.pack("!HHBBH", 7, 0x0800, 6, 4, 1) + bytes(20),
        "tcp_bad_offset": lambda: eth(0x0800) + ipv4(src_ip, vip, good_tcp()[:12] + b"\x20" + good_tcp()[13:]),
        "ipv6": lambda: eth(0x86DD) + bytes(40),
    }
    unknown = set(only) - set(kinds)
    if unknown:
        sys.exit(f"unknown kinds {sorted(unknown)}; known: {sorted(kinds)}")
    sent = {}
    for _ in range(rounds):
        for k, make in kinds.items():
            if only and k not in only:
                continue
            s.send(make())
            sent[k] = sent.get(k, 0) + 1
        time.sleep(0.002)
    print(json.dumps({"sent": sent}))


def send_tcp(src, sport, dst, dport, flags, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    seg = tcp_segment(src, sport, dst, dport, flags, payload=b"forged")
    for _ in range(count):
        s.sendto(ipv4(src, dst, seg), (dst, 0))
        time.sleep(0.01)
    print(json.dumps({"sent": count}))


def sniff(iface, seconds, ports):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.settimeout(0.1)
    print("ready", file=sys.stderr, flush=True)
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            f = s.recv(65535)
        except socket.timeout:
            continue
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 0xF) * 4
        l4 = 14 + ihl
        sport, dport = struct.unpack("!HH", f[l4:l4 + 4])
        if ports and sport not in ports and dport not in ports:
            continue
        flags = "".join(c for c, b in FLAG_BITS.items() if f[l4 + 13] & b)
        seen.append({"src": f"{socket.inet_ntoa(f[26:30])}:{sport}",
                     "dst": f"{socket.inet_ntoa(f[30:34])}:{dport}", "flags": flags})
    print(json.dumps(seen))


def arp(iface, src_ip, target):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0))
    s.settimeout(0.1)
    me = s.getsockname()[4]
    req = (b"\xff" * 6 + me + struct.pack("!HHHBBH", 0x0806, 1, 0x0800, 6, 4, 1) + me
           + socket.inet_aton(src_ip) + bytes(6) + socket.inet_aton(target))
    end = time.monotonic() + 2.0
    answer = None
    while answer is None and time.monotonic() < end:
        s.send(req)
        stop = time.monotonic() + 0.3
        while time.monotonic() < stop:
            try:
                f = s.recv(2048)
            except socket.timeout:
                continue
            if len(f) >= 42 and f[20:22] == b"\x00\x02" and f[28:32] == socket.inet_aton(target):
                answer = ":".join(f"{b:02x}" for b in f[22:28])
                break
    print(json.dumps({"mac": answer}))


def flood(iface, dst_mac, vip, vport, count, prefix):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    eth = mac(dst_mac) + s.getsockname()[4] + b"\x08\x00"
    a, b = (int(x) for x in prefix.split("."))
    frames = []
    for i in range(count):
        src = f"{a}.{b}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        seg = tcp_segment(src, random.randint(1024, 65535), vip, vport, "S" if i % 2 == 0 else "A")
        frames.append(eth + ipv4(src, vip, seg))
    t0 = time.monotonic()
    sent = 0
    for f in frames:
        while True:
            try:
                s.send(f)
                break
            except BlockingIOError:
                time.sleep(0.0005)
        sent += 1
    dt = time.monotonic() - t0
    print(json.dumps({"sent": sent, "seconds": dt, "pps": sent / dt if dt > 0 else 0}))


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if a[0] == "malformed" and len(a) >= 7:
        malformed(a[1], a[2], a[3], a[4], int(a[5]), int(a[6]), a[7:])
    elif a[0] == "tcp" and len(a) in (6, 7):
        send_tcp(a[1], int(a[2]), a[3], int(a[4]), a[5], int(a[6]) if len(a) == 7 else 1)
    elif a[0] == "flood" and len(a) == 7:
        flood(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6])
    elif a[0] == "arp" and len(a) == 4:
        arp(a[1], a[2], a[3])
    elif a[0] == "sniff" and len(a) >= 3:
        sniff(a[1], float(a[2]), {int(p) for p in a[3:]})
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
