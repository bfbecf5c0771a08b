//! Writes the seed corpora (`fuzz/seeds/TARGET/`): well-formed frames and
//! whole conversations for the pipeline, each kind of header for the wire
//! views, one line of every control op, the example configurations, and a
//! flow snapshot. `cargo run --manifest-path fuzz/Cargo.toml --example seeds`
//! from the repository's root.

use std::net::Ipv4Addr;
use std::path::Path;

use sluice::flow::{save, FlowKey, FlowState, SavedFlow};
use sluice::wire::MacAddr;
use sluice_fuzz::{backend, csum, BACKEND_LINK_MAC, CLIENT, CLIENT_LINK_MAC, EMPTY_VIP, VIP};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn eth(dst: MacAddr, src: MacAddr, vlan: bool, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 packet in Ethernet, checksums filled by the independent code.
#[allow(clippy::too_many_arguments)]
fn ip(
    to_lb: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    ip_opts: &[u8],
    l4: &[u8],
    vlan: bool,
) -> Vec<u8> {
    let mut f = eth(to_lb, MacAddr([2, 0, 0, 0, 9, 9]), vlan, 0x0800);
    let ihl = 20 + ip_opts.len();
    let total = (ihl + l4.len()) as u16;
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, ttl, proto, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(ip_opts);
    f.extend_from_slice(l4);
    csum::repair(&mut f);
    f
}

fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, opts: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push((((20 + opts.len()) / 4) as u8) << 4);
    s.push(flags);
    s.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(opts);
    s.extend_from_slice(data);
    s
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(data);
    d
}

fn client_tcp(sport: u16, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let seg = tcp(sport, 80, seq, ack, flags, &[], data);
    ip(CLIENT_LINK_MAC, CLIENT, VIP, 6, 64, &[], &seg, false)
}

fn backend_tcp(b: u8, dport: u16, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let seg = tcp(8080, dport, seq, ack, flags, &[], data);
    ip(
        BACKEND_LINK_MAC,
        backend(b),
        CLIENT,
        6,
        64,
        &[],
        &seg,
        false,
    )
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(
        MacAddr::BROADCAST,
        MacAddr([2, 0, 0, 0, 1, 7]),
        false,
        0x0806,
    );
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[2, 0, 0, 0, 1, 7]);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// One pipeline record: port, repair bit set, `wait` clock steps.
fn record(port: u8, wait: u8, frame: &[u8]) -> Vec<u8> {
    let mut r = vec![(wait << 2) | 2 | (port & 1)];
    r.extend_from_slice(&(frame.len() as u16).to_be_bytes());
    r.extend_from_slice(frame);
    r
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("syn", client_tcp(40000, 1000, 0, SYN, &[])),
        ("synack", backend_tcp(1, 40000, 5000, 1001, SYN | ACK, &[])),
        (
            "data",
            client_tcp(40000, 1001, 5001, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n"),
        ),
        ("fin", client_tcp(40000, 1019, 5001, ACK | FIN, &[])),
        ("rst", client_tcp(40000, 1019, 5001, RST, &[])),
        (
            "syn_options_vlan",
            ip(
                CLIENT_LINK_MAC,
                CLIENT,
                VIP,
                6,
                64,
                &[1, 1, 1, 0],
                &tcp(40001, 80, 7, 0, SYN, &[2, 4, 5, 0xb4, 1, 1, 4, 2], &[]),
                true,
            ),
        ),
        (
            "syn_empty",
            ip(
                CLIENT_LINK_MAC,
                CLIENT,
                EMPTY_VIP,
                6,
                64,
                &[],
                &tcp(40002, 80, 1, 0, SYN, &[], &[]),
                false,
            ),
        ),
        (
            "syn_ttl1",
            ip(
                CLIENT_LINK_MAC,
                CLIENT,
                VIP,
                6,
                1,
                &[],
                &tcp(40003, 80, 1, 0, SYN, &[], &[]),
                false,
            ),
        ),
        (
            "udp",
            ip(
                CLIENT_LINK_MAC,
                CLIENT,
                VIP,
                17,
                64,
                &[],
                &udp(5353, 53, b"query"),
                false,
            ),
        ),
        (
            "udp_reply",
            ip(
                BACKEND_LINK_MAC,
                backend(1),
                CLIENT,
                17,
                64,
                &[],
                &udp(5353, 5353, b"answer"),
                false,
            ),
        ),
        (
            "echo",
            ip(
                CLIENT_LINK_MAC,
                CLIENT,
                VIP,
                1,
                64,
                &[],
                &[8, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g'],
                false,
            ),
        ),
        ("arp", arp_request(Ipv4Addr::new(10, 200, 1, 254))),
    ];
    for (name, f) in &frames {
        write(&root.join("wire"), name, f);
        // The L3 and L4 headers on their own too, for the views that start there.
        if let Some(l3) = csum::ipv4_at(f) {
            write(&root.join("wire"), &format!("{name}_ip"), &f[l3..]);
            let ihl = usize::from(f[l3] & 0xf) * 4;
            write(&root.join("wire"), &format!("{name}_l4"), &f[l3 + ihl..]);
        }
    }
    // Pipeline: single frames, then whole conversations.
    for (name, f) in &frames {
        let port = u8::from(name.contains("reply") || name.contains("synack"));
        write(&root.join("pipeline"), name, &record(port, 0, f));
    }
    let mut conv = Vec::new();
    conv.extend(record(0, 0, &client_tcp(41000, 100, 0, SYN, &[])));
    for b in 1..=4 {
        conv.extend(record(
            1,
            0,
            &backend_tcp(b, 41000, 900, 101, SYN | ACK, &[]),
        ));
    }
    conv.extend(record(0, 0, &client_tcp(41000, 101, 901, ACK, &[])));
    conv.extend(record(
        0,
        1,
        &client_tcp(41000, 101, 901, ACK | PSH, b"hello"),
    ));
    for b in 1..=4 {
        conv.extend(record(
            1,
            0,
            &backend_tcp(b, 41000, 901, 106, ACK | PSH, b"world"),
        ));
    }
    conv.extend(record(0, 63, &client_tcp(41000, 106, 906, ACK | FIN, &[])));
    conv.extend(record(0, 0, &client_tcp(41000, 5000, 0, SYN, &[])));
    write(&root.join("pipeline"), "conversation", &conv);
    // Flows to every web and dns endpoint, then each later generation
    // published under them (the length's top bit), the same packets again.
    let mut live = Vec::new();
    for sport in 42000..42008u16 {
        live.extend(record(0, 0, &client_tcp(sport, 100, 0, SYN, &[])));
        live.extend(record(0, 0, &client_tcp(sport, 101, 901, ACK, &[])));
    }
    let queries: Vec<Vec<u8>> = (42000..42004u16)
        .map(|sport| {
            let d = udp(sport, 53, b"query");
            ip(CLIENT_LINK_MAC, CLIENT, VIP, 17, 64, &[], &d, false)
        })
        .collect();
    for q in &queries {
        live.extend(record(0, 0, q));
    }
    for _ in 0..2 {
        let mut first = record(0, 1, &client_tcp(42000, 101, 901, ACK | PSH, b"again"));
        first[1] |= 0x80;
        live.extend(first);
        for sport in 42001..42008u16 {
            live.extend(record(0, 0, &client_tcp(sport, 101, 901, ACK, &[])));
        }
        for q in &queries {
            live.extend(record(0, 0, q));
        }
    }
    write(&root.join("pipeline"), "generations", &live);
    let mut flood = Vec::new();
    for i in 0..80u16 {
        let seg = tcp(
            1024 + i,
            80,
            u32::from(i),
            0,
            if i % 2 == 0 { SYN } else { ACK },
            &[],
            &[],
        );
        let src = Ipv4Addr::new(10, 200, 1, 20 + (i % 200) as u8);
        flood.extend(record(
            0,
            0,
            &ip(CLIENT_LINK_MAC, src, VIP, 6, 64, &[], &seg, false),
        ));
    }
    write(&root.join("pipeline"), "flood", &flood);

    // Control: one line per op, valid and not.
    let lines = [
        r#"{"v":1,"op":"generation"}"#,
        r#"{"v":1,"op":"status"}"#,
        r#"{"v":1,"op":"neighbors"}"#,
        r#"{"v":1,"op":"services_list"}"#,
        r#"{"v":1,"op":"stats"}"#,
        r#"{"v":1,"op":"service_add","service":{"name":"api","vip":"198.18.0.102","port":443,"protocol":"tcp","endpoints":[{"addr":"10.200.2.11","port":8443,"weight":1,"state":"active"}]}}"#,
        r#"{"v":1,"op":"service_remove","service":"dns"}"#,
        r#"{"v":1,"op":"service_recycle","service":"web","recycle":{"max_age_ms":600000,"idle_gap_ms":200}}"#,
        r#"{"v":1,"op":"endpoints_set","service":"web","endpoints":[{"addr":"10.200.2.11","port":8080,"weight":2,"state":"active"},{"addr":"10.200.2.12","port":8080,"weight":1,"state":"draining"}]}"#,
        r#"{"v":1,"op":"endpoint_add","service":"web","endpoint":"10.200.2.15:8080","weight":3}"#,
        r#"{"v":1,"op":"endpoint_remove","service":"web","endpoint":"10.200.2.11:8080"}"#,
        r#"{"v":1,"op":"endpoint_drain","service":"web","endpoint":"10.200.2.11:8080","deadline_ms":3000}"#,
        r#"{"v":1,"op":"endpoint_weight","service":"web","endpoint":"10.200.2.11:8080","weight":0}"#,
        r#"{"v":1,"op":"endpoint_down","service":"web","endpoint":"10.200.2.13:8080"}"#,
        r#"{"v":1,"op":"endpoint_up","service":"nope","endpoint":"10.200.2.13:8080"}"#,
        r#"{"v":1,"op":"flows_lookup","client":"10.200.1.7:40000","vip":"198.18.0.100:80","protocol":"tcp"}"#,
        r#"{"v":1,"op":"explain","client":"10.200.1.7:40000","service":"web"}"#,
        r#"{"v":1,"op":"reload","path":"/nonexistent"}"#,
        r#"{"v":1,"op":"vip_withdraw","all":true}"#,
    ];
    for (i, l) in lines.iter().enumerate() {
        write(&root.join("control"), &format!("op{i:02}"), l.as_bytes());
    }
    write(&root.join("control"), "all", lines.join("\n").as_bytes());

    // Config: the shipped examples.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["demo.toml", "baremetal.toml", "ha.toml"] {
        if let Ok(text) = std::fs::read(repo.join("config").join(name)) {
            write(&root.join("config"), name, &text);
        }
    }

    // Snapshot: a few flows of each state.
    let flows: Vec<SavedFlow> = (0..4u16)
        .map(|i| SavedFlow {
            key: FlowKey::new(CLIENT, 40000 + i, VIP, 80, sluice::flow::ip_proto::TCP),
            backend_addr: u32::from(backend(1 + i as u8)),
            backend_port: 8080,
            state: [
                FlowState::Established,
                FlowState::SynSent,
                FlowState::FinWait,
                FlowState::TimeWait,
            ][usize::from(i)],
            age_ms: 1000 * u32::from(i),
            idle_ms: 10 * u32::from(i),
            client_isn: 77 + u32::from(i),
            assured: i % 2 == 0,
            client_next: 1000,
            backend_next: 5000,
        })
        .collect();
    write(&root.join("snapshot"), "flows", &save::encode(&flows));
}
