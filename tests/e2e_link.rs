//! Ports survive link events, end to end: with sluice forwarding real TCP
//! connections, an interface of its namespace (or the veth peer of one, in
//! the switch namespace) is taken down and up or has its MTU changed. After
//! each event new connections through the VIP succeed again within a bound,
//! and where the event reaches sluice's own socket (its interface went down,
//! or its MTU changed) the port was re-opened and counted (`port_reopens`).

#[macro_use]
mod harness;
#[path = "e2e/lab.rs"]
mod lab;

use std::time::{Duration, Instant};

use lab::{worker_sum, Backend, Lab};

/// How long new connections may fail after a link event.
const RECOVERY: Duration = Duration::from_secs(3);

/// Runs `cmd` and panics with its stderr when it fails.
fn sh(cmd: &[&str]) {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The name, in the switch namespace, of the veth peer of `iface` (in the
/// lb namespace): `ip link` shows `iface@ifN`, N being the peer's index.
fn peer_of(lab: &Lab, iface: &str) -> String {
    let out = lab.run_in("lb", &["ip", "-o", "link", "show", iface]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let index = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.split("@if").nth(1))
        .map(|n| n.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no peer index in {text:?}"));
    let out = lab.run_in("sw", &["ip", "-o", "link"]);
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    all.lines()
        .find(|l| l.starts_with(&format!("{index}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|n| {
            n.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or(n)
                .to_string()
        })
        .unwrap_or_else(|| panic!("no link {index} in the switch namespace: {all}"))
}

/// Waits until a new connection through the VIP succeeds; returns how long
/// that took, or panics after [`RECOVERY`].
fn recovered(lab: &Lab, event: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = lab.http(1, 1);
        if r["ok"] == 1 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < RECOVERY,
            "{event}: no connection succeeded within {RECOVERY:?}: {r}\n{}",
            lab.sluice_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One event, then: new connections succeed within the bound, 50 more on
/// fresh connections all succeed, and `port_reopens` rose by `reopens`
/// (waited for: the re-open may finish just after the first success).
fn event(lab: &Lab, name: &str, cmds: &[&[&str]], reopens: u64) {
    let before = worker_sum(&lab.stats(), "port_reopens");
    for c in cmds {
        sh(c);
    }
    let took = recovered(lab, name);
    let r = lab.http(1, 50);
    assert_eq!(r["ok"], 50, "{name}: requests failed after recovery: {r}");
    let deadline = Instant::now() + RECOVERY;
    let mut after = worker_sum(&lab.stats(), "port_reopens");
    while after < before + reopens && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = worker_sum(&lab.stats(), "port_reopens");
    }
    eprintln!(
        "{name}: connections succeed again after {:.0} ms; port_reopens {before} -> {after}",
        took.as_secs_f64() * 1e3
    );
    assert!(
        after >= before + reopens,
        "{name}: port_reopens {before} -> {after}, expected +{reopens}\n{}",
        lab.sluice_log()
    );
}

fn link_events(backend: Backend) {
    let mut lab = Lab::up(2, 1, backend);
    lab.write_config(&[(1, 1), (2, 1)]);
    lab.start_sluice();
    lab.wait_ready();
    let (lb, sw) = (lab.ns("lb"), lab.ns("sw"));
    let peer = peer_of(&lab, "l0");
    // Events on sluice's own interfaces reach its sockets: the AF_PACKET
    // port re-opens (one worker: one queue per interface); both DPDK PMDs
    // ride them out.
    let own = u64::from(backend == Backend::AfPacket);
    let ip = |ns: &str, args: &[&str]| -> Vec<String> {
        ["ip", "-n", ns]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |name: &str, steps: Vec<Vec<String>>, reopens: u64| {
        let owned: Vec<Vec<&str>> = steps
            .iter()
            .map(|s| s.iter().map(String::as_str).collect())
            .collect();
        let refs: Vec<&[&str]> = owned.iter().map(Vec::as_slice).collect();
        event(&lab, name, &refs, reopens);
    };
    run(
        "MTU of the client-side veth peer 1500 -> 1400",
        vec![ip(&sw, &["link", "set", &peer, "mtu", "1400"])],
        0,
    );
    run(
        "client-side veth peer down and up",
        vec![
            ip(&sw, &["link", "set", &peer, "down"]),
            ip(&sw, &["link", "set", &peer, "up"]),
        ],
        0,
    );
    run(
        "own client-side interface down and up",
        vec![
            ip(&lb, &["link", "set", "l0", "down"]),
            ip(&lb, &["link", "set", "l0", "up"]),
        ],
        own,
    );
    run(
        "own backend-side interface MTU 1500 -> 4000",
        vec![ip(&lb, &["link", "set", "l1", "mtu", "4000"])],
        own,
    );
    // Deleted and created again under the same name: every port kind's
    // sockets are bound to the old index and must be re-opened.
    let netlab = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netlab.sh").to_string();
    run(
        "own client-side interface deleted and re-created",
        vec![vec![
            netlab.clone(),
            "replug".into(),
            lab.id.clone(),
            "l0".into(),
        ]],
        1,
    );
    run(
        "own backend-side interface deleted and re-created",
        vec![vec![netlab, "replug".into(), lab.id.clone(), "l1".into()]],
        1,
    );
    if backend == Backend::DpdkXdp {
        // Without the PMD's program the interface's frames go to the kernel
        // stack and the AF_XDP socket waits forever: the port attaches its
        // program again (counted as a re-open).
        for side in ["l0", "l1"] {
            run(
                &format!("XDP program removed from own interface {side}"),
                vec![ip(&lb, &["link", "set", "dev", side, "xdp", "off"])],
                1,
            );
        }
        run(
            "XDP program removed from l0 a second time",
            vec![ip(&lb, &["link", "set", "dev", "l0", "xdp", "off"])],
            1,
        );
        foreign_program(&lab, &lb);
    }
}

/// Someone else's XDP program (XDP_PASS, assembled here) replaces the
/// PMD's on l0: sluice does not fight it (no re-open, an error logged,
/// connections through l0 fail since its frames go to the kernel), and
/// attaches its own again once that program is removed.
fn foreign_program(lab: &Lab, lb: &str) {
    let dir = std::env::temp_dir().join(format!("sluice-xdp-{}", lab.id));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (src, obj) = (dir.join("pass.s"), dir.join("pass.o"));
    std::fs::write(
        &src,
        "\t.section xdp,\"ax\",@progbits\n\t.globl xdp_pass\n\t.type xdp_pass,@function\n\
         xdp_pass:\n\tr0 = 2\n\texit\n.Lend:\n\t.size xdp_pass, .Lend-xdp_pass\n\
         \t.section license,\"aw\",@progbits\n\t.globl _license\n_license:\n\t.asciz \"GPL\"\n\
         \t.size _license, 4\n",
    )
    .expect("write pass.s");
    let (src, obj) = (src.to_string_lossy(), obj.to_string_lossy());
    sh(&[
        "llvm-mc",
        "-triple",
        "bpf",
        "-filetype=obj",
        "-o",
        &obj,
        &src,
    ]);
    let before = worker_sum(&lab.stats(), "port_reopens");
    sh(&[
        "ip", "-force", "-n", lb, "link", "set", "dev", "l0", "xdp", "obj", &obj, "sec", "xdp",
    ]);
    // Several link checks pass (every 100 ms) and nothing is re-attached.
    std::thread::sleep(Duration::from_millis(500));
    let r = lab.http(1, 1);
    assert_eq!(
        r["ok"], 0,
        "a connection succeeded through a foreign program: {r}"
    );
    assert_eq!(
        worker_sum(&lab.stats(), "port_reopens"),
        before,
        "sluice fought the program"
    );
    assert!(
        lab.sluice_log().contains("another XDP program replaced"),
        "no error logged for the foreign program:\n{}",
        lab.sluice_log()
    );
    let link = lab.run_in("lb", &["ip", "link", "show", "l0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("xdp_pass"),
        "the foreign program is no longer attached"
    );
    event(
        lab,
        "the foreign XDP program removed from l0",
        &[&["ip", "-n", lb, "link", "set", "dev", "l0", "xdp", "off"]],
        1,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The AF_PACKET port through each event.
fn link_events_afpacket() {
    link_events(Backend::AfPacket);
}

/// The DPDK port on net_af_packet through each event (no re-open of its
/// own: the test shows whether connections recover).
#[cfg(feature = "dpdk")]
fn link_events_dpdk_af_packet() {
    link_events(Backend::Dpdk);
}

/// The DPDK port on net_af_xdp through each event, its XDP program removed
/// (attached again) and replaced by someone else's (left alone until gone).
#[cfg(feature = "dpdk")]
fn link_events_dpdk_af_xdp() {
    link_events(Backend::DpdkXdp);
}

/// The lab's tools, and llvm-mc to assemble the foreign XDP program.
const NEEDS: &[harness::Need] = &[
    harness::Need::Root,
    harness::Need::Tool("ip"),
    harness::Need::Tool("python3"),
    harness::Need::Tool("tcpdump"),
    harness::Need::Tool("llvm-mc"),
];

machine_tests!(NEEDS;
    link_events_afpacket,
    #[cfg(feature = "dpdk")]
    link_events_dpdk_af_packet,
    #[cfg(feature = "dpdk")]
    link_events_dpdk_af_xdp,
);
