//! Zero-copy packet views (Ethernet, ARP, IPv4, TCP, UDP, ICMP) and checksums.
