//! The `sluice` command.

use clap::{Parser, Subcommand};

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
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bench {
            flows,
            new_ratio,
            workers,
            seconds,
            backends,
            flow_capacity,
            json,
            packets,
            baseline,
        } => {
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
            if let Some(n) = packets {
                let c = sluice::bench::run_counted(flows, new_ratio, n, baseline);
                println!("{}", serde_json::to_string(&c).expect("counters serialise"));
                return std::process::ExitCode::SUCCESS;
            }
            let cfg = sluice::bench::BenchConfig {
                flows,
                new_ratio,
                workers,
                seconds,
                backends,
                flow_capacity,
            };
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
    }
}
