//! The `sluice` command.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice::control::client::Client;
use sluice::control::protocol::{Outcome, Request};
use sluice::service::{EndpointSpec, EndpointState, Protocol, ServiceSpec};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kernel-bypass L4 service load balancer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the load balancer on the ports, services and control socket the
    /// configuration file describes, until SIGINT or SIGTERM.
    Run {
        /// TOML configuration (see config/demo.toml).
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Drive the real worker loop over the in-memory port with synthetic
    /// traffic, then the rx/MAC-swap/tx baseline on the same ports.
    Bench {
        /// Active flows (split over the workers).
        #[arg(long, default_value_t = 1_000_000)]
        flows: usize,
        /// Fraction of packets that open a new connection (0..=1).
        #[arg(long, default_value_t = 0.0)]
        new_ratio: f64,
        /// Worker threads (pinned one per core, wrapping).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Measured seconds per phase (after warm-up).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Endpoints behind the benchmark's VIP.
        #[arg(long, default_value_t = 16)]
        backends: usize,
        /// Flow-table capacity per worker (default: twice its flows).
        #[arg(long)]
        flow_capacity: Option<usize>,
        /// Share of established-flow packets that are backend -> client
        /// replies (0..=1).
        #[arg(long, default_value_t = 0.5)]
        reply_ratio: f64,
        /// VIPs (services), each with --backends endpoints.
        #[arg(long, default_value_t = 1)]
        services: usize,
        /// Which worker's port receives a frame: "owner" (RSS on the
        /// client-side address and port, as sluice programs it) or "tuple"
        /// (a hash of the frame's own tuple; mismatches are handed over).
        #[arg(long, default_value = "owner", value_parser = parse_spread)]
        spread: sluice::bench::Spread,
        /// Frames written a ring of 32,768 ahead (headers from the LLC, as
        /// after DMA), not just before they are read.
        #[arg(long)]
        cold: bool,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Instead of timing: process exactly this many packets after
        /// warm-up on the calling thread (for instruction counting).
        #[arg(long)]
        packets: Option<u64>,
        /// With --packets: run the rx/MAC-swap/tx baseline instead.
        #[arg(long, requires = "packets")]
        baseline: bool,
    },
    /// Talk to a running sluice through its control socket.
    Ctl {
        /// Control socket path.
        #[arg(long, default_value = sluice::control::config::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the raw JSON reply (one line) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        op: CtlOp,
    },
    /// Endpoint changes through the control socket while workers forward
    /// generator traffic: changes per second and request->applied latency.
    BenchControl {
        #[arg(long, default_value_t = 1000)]
        services: usize,
        #[arg(long, default_value_t = 100)]
        endpoints: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Clients in the throughput phase.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Requests each client keeps in flight.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Distinct services the changes touch (default: all, at random).
        #[arg(long)]
        spread: Option<usize>,
        #[arg(long, default_value_t = sluice::maglev::DEFAULT_TABLE_SIZE)]
        table_size: u32,
        #[arg(long, default_value_t = 10_000)]
        flows: usize,
        /// TCP health checks of every endpoint at this interval (ms); needs
        /// 10.200.0.0/16 local (scripts/bench_health.sh runs it so).
        #[arg(long)]
        health_interval_ms: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CtlOp {
    /// services list
    Services {
        #[command(subcommand)]
        op: ServicesOp,
    },
    /// service add | remove
    Service {
        #[command(subcommand)]
        op: ServiceOp,
    },
    /// endpoints set SERVICE ADDR:PORT[=WEIGHT]...
    Endpoints {
        #[command(subcommand)]
        op: EndpointsOp,
    },
    /// endpoint add | remove | drain | weight | down | up
    Endpoint {
        #[command(subcommand)]
        op: EndpointOp,
    },
    /// Counters per worker, per service, per endpoint.
    Stats,
    /// flows count | lookup | dump
    Flows {
        #[command(subcommand)]
        op: FlowsOp,
    },
    /// Which backend a packet from CLIENT gets, and why.
    Explain {
        /// Service name (or use --vip).
        service: Option<String>,
        /// Client address:port.
        client: Option<SocketAddrV4>,
        #[arg(long)]
        vip: Option<SocketAddrV4>,
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<Protocol>,
        /// Explain a mid-flow packet instead of a SYN.
        #[arg(long)]
        mid_flow: bool,
    },
    /// Maglev table digests (compare instances).
    Digest { service: Option<String> },
    /// Reload the configuration file.
    Reload { path: Option<PathBuf> },
    /// The generation number in force.
    Generation,
    /// Whether sluice forwards (every worker runs the generation in force).
    Status,
    /// The neighbor table: IP, MAC, state, age, where it was learnt (why
    /// packets drop as neighbor_unresolved).
    Neighbors,
    /// Wait until sluice forwards: the control socket answers and every
    /// worker runs the configuration. Exit status 0 when ready, 1 at the
    /// timeout.
    Wait {
        /// Wait for readiness (the only condition so far; the default).
        #[arg(long, default_value_t = true)]
        ready: bool,
        /// Give up after this long (e.g. 10s, 500ms).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        timeout: Duration,
    },
    /// vip list | announce | withdraw: VIP announcements over BGP.
    Vip {
        #[command(subcommand)]
        op: VipOp,
    },
    /// Live view: per-worker Mpps, per-backend share of flows and packets.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ServicesOp {
    List,
}

#[derive(Subcommand)]
enum ServiceOp {
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        vip: Ipv4Addr,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp", value_parser = parse_protocol)]
        protocol: Protocol,
        #[arg(long)]
        table_size: Option<u32>,
        /// ADDR:PORT[=WEIGHT], repeatable.
        #[arg(long = "endpoint", value_parser = parse_endpoint)]
        endpoints: Vec<EndpointSpec>,
    },
    Remove {
        name: String,
    },
    /// Recycle long-lived connections (S2): reset a flow older than
    /// --max-age (plus its share of --jitter) once it has been idle both
    /// ways for --idle-gap; --off turns it off.
    Recycle {
        name: String,
        #[arg(long, value_parser = parse_duration, required_unless_present = "off")]
        max_age: Option<Duration>,
        #[arg(long, value_parser = parse_duration, required_unless_present = "off")]
        idle_gap: Option<Duration>,
        #[arg(long, value_parser = parse_duration)]
        jitter: Option<Duration>,
        /// Recycled flows per second, whole service.
        #[arg(long, default_value_t = sluice::service::RecyclePolicy::DEFAULT_RATE)]
        max_per_sec: u32,
        /// Only flows of backends above their weight's share of open flows.
        #[arg(long)]
        skewed_only: bool,
        #[arg(long, conflicts_with_all = ["max_age", "idle_gap", "jitter", "skewed_only"])]
        off: bool,
    },
}

#[derive(Subcommand)]
enum EndpointsOp {
    /// Replace the endpoint set in one generation. An endpoint in force
    /// that is not listed is removed (its open flows get a RST on their
    /// next packet): list it as ADDR:PORT@draining to let it drain.
    Set {
        service: String,
        /// ADDR:PORT[=WEIGHT][@active|draining|down]...
        #[arg(value_parser = parse_endpoint)]
        endpoints: Vec<EndpointSpec>,
    },
}

#[derive(Subcommand)]
enum EndpointOp {
    Add {
        service: String,
        #[arg(value_parser = parse_endpoint)]
        endpoint: EndpointSpec,
    },
    Remove {
        service: String,
        endpoint: SocketAddrV4,
    },
    Drain {
        service: String,
        endpoint: SocketAddrV4,
        /// Mark it down after this long (e.g. 30s, 500ms, 2m).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<Duration>,
    },
    Weight {
        service: String,
        endpoint: SocketAddrV4,
        weight: u32,
    },
    Down {
        service: String,
        endpoint: SocketAddrV4,
    },
    Up {
        service: String,
        endpoint: SocketAddrV4,
    },
}

#[derive(Subcommand)]
enum VipOp {
    /// Each VIP, whether the routers are told of it and why; BGP sessions.
    List,
    /// Announce again after a withdraw (while a healthy endpoint remains).
    Announce {
        /// The VIP (or --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        vip: Option<Ipv4Addr>,
        #[arg(long)]
        all: bool,
    },
    /// Withdraw from the routers for maintenance, until `vip announce`.
    Withdraw {
        /// The VIP (or --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        vip: Option<Ipv4Addr>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum FlowsOp {
    Count,
    Lookup {
        client: SocketAddrV4,
        vip: SocketAddrV4,
        #[arg(long, default_value = "tcp", value_parser = parse_protocol)]
        protocol: Protocol,
    },
    Dump {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

fn parse_endpoint(s: &str) -> Result<EndpointSpec, String> {
    let (s, state) = match s.split_once('@') {
        Some((a, st)) => (
            a,
            match st {
                "active" => EndpointState::Active,
                "draining" => EndpointState::Draining,
                "down" => EndpointState::Down,
                _ => return Err(format!("state {st:?}: write @active, @draining or @down")),
            },
        ),
        None => (s, EndpointState::Active),
    };
    let (addr, weight) = match s.split_once('=') {
        Some((a, w)) => (
            a,
            w.parse::<u32>()
                .map_err(|_| format!("weight {w:?} is not a number"))?,
        ),
        None => (s, 1),
    };
    let a: SocketAddrV4 = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not ADDR:PORT (e.g. 10.200.2.11:8080)"))?;
    Ok(EndpointSpec::new(*a.ip(), a.port())
        .weight(weight)
        .state(state))
}

fn parse_spread(s: &str) -> Result<sluice::bench::Spread, String> {
    match s {
        "owner" => Ok(sluice::bench::Spread::Owner),
        "tuple" => Ok(sluice::bench::Spread::Tuple),
        _ => Err(format!("{s:?}: spread must be owner or tuple")),
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("{s:?}: protocol must be tcp or udp")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn ctl_request(op: CtlOp) -> Result<Request, String> {
    Ok(match op {
        CtlOp::Services {
            op: ServicesOp::List,
        } => Request::ServicesList,
        CtlOp::Service {
            op:
                ServiceOp::Add {
                    name,
                    vip,
                    port,
                    protocol,
                    table_size,
                    endpoints,
                },
        } => {
            let mut s = ServiceSpec::new(&name, vip, port, protocol);
            if let Some(t) = table_size {
                s.table_size = t;
            }
            s.endpoints = endpoints;
            Request::ServiceAdd { service: s }
        }
        CtlOp::Service {
            op: ServiceOp::Remove { name },
        } => Request::ServiceRemove { name },
        CtlOp::Service {
            op:
                ServiceOp::Recycle {
                    name,
                    max_age,
                    idle_gap,
                    jitter,
                    max_per_sec,
                    skewed_only,
                    off,
                },
        } => {
            let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
            let recycle = match (off, max_age, idle_gap) {
                (true, _, _) => None,
                (false, Some(a), Some(g)) => Some(sluice::service::RecyclePolicy {
                    max_age_ms: ms(a),
                    idle_gap_ms: ms(g),
                    jitter_ms: jitter.map_or(0, ms),
                    max_per_sec,
                    skewed_only,
                }),
                _ => return Err("give --max-age and --idle-gap, or --off".into()),
            };
            Request::ServiceRecycle {
                service: name,
                recycle,
            }
        }
        CtlOp::Endpoints {
            op: EndpointsOp::Set { service, endpoints },
        } => Request::EndpointsSet { service, endpoints },
        CtlOp::Endpoint { op } => match op {
            EndpointOp::Add { service, endpoint } => Request::EndpointAdd { service, endpoint },
            EndpointOp::Remove { service, endpoint } => {
                Request::EndpointRemove { service, endpoint }
            }
            EndpointOp::Drain {
                service,
                endpoint,
                deadline,
            } => Request::EndpointDrain {
                service,
                endpoint,
                deadline_ms: deadline.map(|d| d.as_millis() as u64),
            },
            EndpointOp::Weight {
                service,
                endpoint,
                weight,
            } => Request::EndpointWeight {
                service,
                endpoint,
                weight,
            },
            EndpointOp::Down { service, endpoint } => Request::EndpointDown { service, endpoint },
            EndpointOp::Up { service, endpoint } => Request::EndpointUp { service, endpoint },
        },
        CtlOp::Stats | CtlOp::Top { .. } => Request::Stats,
        CtlOp::Flows { op } => match op {
            FlowsOp::Count => Request::FlowsCount,
            FlowsOp::Lookup {
                client,
                vip,
                protocol,
            } => Request::FlowsLookup {
                client,
                vip,
                protocol,
            },
            FlowsOp::Dump { limit } => Request::FlowsDump { limit },
        },
        CtlOp::Explain {
            service,
            client,
            vip,
            protocol,
            mid_flow,
        } => {
            // `explain web 10.0.0.1:4000` or `explain --vip V:P 10.0.0.1:4000`.
            let (service, client) = match (service, client, vip) {
                (Some(s), Some(c), _) => (Some(s), c),
                (Some(s), None, Some(_)) => (
                    None,
                    s.parse()
                        .map_err(|_| format!("{s:?} is not a client ADDR:PORT"))?,
                ),
                _ => {
                    return Err(
                        "usage: explain SERVICE CLIENT_ADDR:PORT, or explain --vip VIP:PORT CLIENT_ADDR:PORT"
                            .into(),
                    )
                }
            };
            Request::Explain {
                client,
                service,
                vip,
                protocol,
                syn: !mid_flow,
            }
        }
        CtlOp::Digest { service } => Request::Digest { service },
        CtlOp::Reload { path } => Request::Reload {
            path: path.map(|p| p.display().to_string()),
        },
        CtlOp::Generation => Request::Generation,
        CtlOp::Status | CtlOp::Wait { .. } => Request::Status,
        CtlOp::Neighbors => Request::Neighbors,
        CtlOp::Vip { op } => match op {
            VipOp::List => Request::VipList,
            VipOp::Announce { vip, all } => Request::VipAnnounce { vip, all },
            VipOp::Withdraw { vip, all } => Request::VipWithdraw { vip, all },
        },
    })
}

/// `ctl wait --ready`: polls `status` (connecting again as needed: the
/// socket may not exist yet) until every worker runs the configuration.
fn wait_ready(socket: &std::path::Path, timeout: Duration, json: bool) -> std::process::ExitCode {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("the control socket did not answer");
    loop {
        match Client::connect(socket).and_then(|mut c| c.call(&Request::Status)) {
            Ok(resp) => {
                if let Some(Outcome::Status(st)) = &resp.result {
                    if st.ready {
                        if json {
                            print!("{}", resp.to_line());
                        } else {
                            print!("{}", sluice::control::render::response(&resp));
                        }
                        return std::process::ExitCode::SUCCESS;
                    }
                    last = format!(
                        "{}/{} workers run generation {}",
                        st.workers_ready, st.workers, st.generation
                    );
                }
            }
            Err(e) => last = e.to_string(),
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("error: not ready after {timeout:?}: {last}");
            return std::process::ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What an `endpoints set` will remove that is in force now: a script
/// that meant to keep an endpoint draining learns it must list it as
/// ADDR:PORT@draining. Read before the change (the change itself is one
/// generation).
fn endpoints_set_removes(client: &mut Client, req: &Request) -> Vec<String> {
    let Request::EndpointsSet { service, endpoints } = req else {
        return Vec::new();
    };
    let Ok(resp) = client.call(&Request::ServicesList) else {
        return Vec::new();
    };
    let Some(Outcome::Services { services }) = resp.result else {
        return Vec::new();
    };
    services
        .iter()
        .filter(|s| &s.name == service)
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| {
            e.state.carries_flows()
                && !endpoints
                    .iter()
                    .any(|n| n.addr == e.addr && n.port == e.port)
        })
        .map(|e| format!("{}:{} ({:?})", e.addr, e.port, e.state).to_lowercase())
        .collect()
}

fn ctl(socket: PathBuf, json: bool, op: CtlOp) -> std::process::ExitCode {
    if let CtlOp::Wait { timeout, .. } = op {
        return wait_ready(&socket, timeout, json);
    }
    let top = match op {
        CtlOp::Top { interval, count } => Some((interval, count)),
        _ => None,
    };
    let req = match ctl_request(op) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut client = match Client::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let removes = endpoints_set_removes(&mut client, &req);
    let mut shown = 0u64;
    loop {
        let resp = match client.call(&req) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(3);
            }
        };
        if json {
            print!("{}", resp.to_line());
        } else if let Some(e) = &resp.error {
            eprintln!("error ({:?}): {}", e.kind, e.message);
        } else if top.is_some() {
            // Clear the screen and home the cursor: one frame per refresh.
            print!("\x1b[2J\x1b[H");
            if let Some(Outcome::Stats(s)) = &resp.result {
                println!(
                    "sluice top  generation {}  (rates over {:.1} s)",
                    resp.generation, s.interval_s
                );
            }
            print!("{}", sluice::control::render::top(&resp));
        } else {
            print!("{}", sluice::control::render::response(&resp));
        }
        if !resp.ok {
            return std::process::ExitCode::from(1);
        }
        if !removes.is_empty() {
            eprintln!(
                "removed {}: their open flows get a RST on their next packet \
                 (list an endpoint as ADDR:PORT@draining to let it drain)",
                removes.join(", ")
            );
        }
        let Some((interval, count)) = top else {
            return std::process::ExitCode::SUCCESS;
        };
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return std::process::ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs_f64(interval.max(0.1)));
    }
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: not in a file or journald.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => match sluice::run::run(&config) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                // Config errors already name the file.
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Cmd::Bench {
            flows,
            new_ratio,
            workers,
            seconds,
            backends,
            flow_capacity,
            reply_ratio,
            services,
            spread,
            cold,
            json,
            packets,
            baseline,
        } => {
            if !(0.0..=1.0).contains(&reply_ratio) {
                eprintln!("error: --reply-ratio must be between 0 and 1, got {reply_ratio}");
                return std::process::ExitCode::from(2);
            }
            if services == 0 || services > 1000 {
                eprintln!("error: --services must be 1 to 1000");
                return std::process::ExitCode::from(2);
            }
            if !(0.0..=1.0).contains(&new_ratio) {
                eprintln!("error: --new-ratio must be between 0 and 1, got {new_ratio}");
                return std::process::ExitCode::from(2);
            }
            if workers == 0 || flows == 0 || backends == 0 || !seconds.is_finite() || seconds <= 0.0
            {
                eprintln!("error: --workers, --flows, --backends and --seconds must be positive");
                return std::process::ExitCode::from(2);
            }
            if backends > 60_000 {
                eprintln!("error: --backends is at most 60000");
                return std::process::ExitCode::from(2);
            }
            let cfg = sluice::bench::BenchConfig {
                flows,
                new_ratio,
                reply_ratio,
                services,
                workers,
                seconds,
                backends,
                flow_capacity,
                spread,
                cold,
            };
            if let Some(n) = packets {
                let c = sluice::bench::run_counted(&cfg, n, baseline);
                println!("{}", serde_json::to_string(&c).expect("counters serialise"));
                return std::process::ExitCode::SUCCESS;
            }
            let r = sluice::bench::run(&cfg);
            if json {
                println!("{}", serde_json::to_string(&r).expect("report serialises"));
            } else {
                println!(
                    "workers {}  flows {}  new-ratio {}  capacity/worker {}",
                    r.workers, r.flows, r.new_ratio, r.flow_capacity
                );
                println!(
                    "pipeline  {:7.2} Mpps/worker  {:6.1} ns/packet",
                    r.mpps_per_worker, r.ns_per_packet
                );
                println!(
                    "baseline  {:7.2} Mpps/worker  {:6.1} ns/packet  (rx + MAC swap + tx)",
                    r.baseline_mpps_per_worker, r.baseline_ns_per_packet
                );
                println!(
                    "ratio {:.3}  created {}  evicted {}  misses {}  drops {}",
                    r.ratio_to_baseline, r.flows_created, r.flows_evicted, r.table_misses, r.drops
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Cmd::Ctl { socket, json, op } => ctl(socket, json, op),
        Cmd::BenchControl {
            services,
            endpoints,
            workers,
            seconds,
            clients,
            window,
            spread,
            table_size,
            flows,
            health_interval_ms,
            json,
        } => {
            if services == 0 || endpoints == 0 || workers == 0 || clients == 0 || window == 0 {
                eprintln!("error: --services, --endpoints, --workers, --clients and --window must be positive");
                return std::process::ExitCode::from(2);
            }
            if endpoints > 60_000 || services > 60_000 {
                eprintln!("error: --endpoints and --services are at most 60000");
                return std::process::ExitCode::from(2);
            }
            let cfg = sluice::control::bench::ControlBenchConfig {
                services,
                endpoints,
                workers,
                seconds,
                clients,
                window,
                spread: spread.unwrap_or(services),
                table_size,
                flows,
                health_interval_ms,
            };
            match sluice::control::bench::run(&cfg) {
                Ok(r) if json => {
                    println!("{}", serde_json::to_string(&r).expect("report serialises"));
                    std::process::ExitCode::SUCCESS
                }
                Ok(r) => {
                    println!("{r:#?}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
