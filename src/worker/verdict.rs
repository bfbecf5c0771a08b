//! One verdict per packet, and the reasons a packet is dropped.

/// Why a packet was dropped. Indexes the per-worker drop counters: every
/// drop is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    MalformedEthernet,
    /// Neither IPv4 nor ARP (IPv6, LLDP, ...).
    UnsupportedEthertype,
    /// ARP that is not Ethernet/IPv4 or is cut short.
    MalformedArp,
    /// IPv4 header fails its checks (version, IHL, total length).
    MalformedIpv4,
    /// IPv4 fragment: fragments after the first carry no ports, so they
    /// cannot be steered consistently with their flow.
    Fragment,
    /// TCP, UDP or ICMP header fails its checks.
    MalformedL4,
    /// IP protocol other than TCP, UDP, ICMP.
    UnsupportedProtocol,
    /// TTL would reach 0.
    TtlExpired,
    /// Matches no service and comes from no backend.
    NoService,
    /// The service has no endpoint that can take the flow (non-TCP; TCP
    /// clients get a RST instead).
    NoBackend,
    /// A non-TCP flow whose backend was removed or failed.
    BackendGone,
    /// The next hop's MAC address is not known (yet).
    NeighborUnresolved,
    /// No route to the destination.
    NoRoute,
    /// A backend packet that belongs to no known flow and no single service.
    ReplyUnknownFlow,
    /// An ICMP message sluice does not handle (or an error about a flow it
    /// cannot place).
    IcmpUnhandled,
    /// The owner worker's handoff ring was full.
    HandoffFull,
    /// The port's TX ring was full.
    TxFull,
    /// The control thread's punt queue was full.
    PuntFull,
    /// A packet sluice had to originate found no buffer.
    NoBuffer,
}

impl DropReason {
    /// Number of reasons (size of the counter array).
    pub const COUNT: usize = DropReason::NoBuffer as usize + 1;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::MalformedEthernet,
        DropReason::UnsupportedEthertype,
        DropReason::MalformedArp,
        DropReason::MalformedIpv4,
        DropReason::Fragment,
        DropReason::MalformedL4,
        DropReason::UnsupportedProtocol,
        DropReason::TtlExpired,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::BackendGone,
        DropReason::NeighborUnresolved,
        DropReason::NoRoute,
        DropReason::ReplyUnknownFlow,
        DropReason::IcmpUnhandled,
        DropReason::HandoffFull,
        DropReason::TxFull,
        DropReason::PuntFull,
        DropReason::NoBuffer,
    ];

    /// Stable snake_case name (stats, metrics labels).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::MalformedEthernet => "malformed_ethernet",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::MalformedArp => "malformed_arp",
            DropReason::MalformedIpv4 => "malformed_ipv4",
            DropReason::Fragment => "fragment",
            DropReason::MalformedL4 => "malformed_l4",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::BackendGone => "backend_gone",
            DropReason::NeighborUnresolved => "neighbor_unresolved",
            DropReason::NoRoute => "no_route",
            DropReason::ReplyUnknownFlow => "reply_unknown_flow",
            DropReason::IcmpUnhandled => "icmp_unhandled",
            DropReason::HandoffFull => "handoff_full",
            DropReason::TxFull => "tx_full",
            DropReason::PuntFull => "punt_full",
            DropReason::NoBuffer => "no_buffer",
        }
    }
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten; send on port `port`.
    Forward { port: u16 },
    /// Turned into an answer in place (RST, echo reply); send back on
    /// port `port`.
    Reply { port: u16 },
    /// Dropped and counted.
    Drop(DropReason),
    /// Belongs to a flow another worker owns; hand it over unchanged.
    Handoff { worker: u32 },
    /// For the control thread (ARP).
    Punt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_counter_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
