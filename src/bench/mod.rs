//! `anyedge bench`: benchmarks that print figures (never tests that fail on timing), one
//! file each; this file is the command line and what they share (the summary line and
//! the JSON).

use anyhow::anyhow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

mod bulk;
mod control;
mod failover;
mod l7;
mod lab;
mod maglev;
mod sim;

pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| anyhow!("{e}"))? + "\n";
    std::fs::write(path, text).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
}

/// Prints a benchmark's summary line and writes its figures as JSON; exit 2 when it
/// could not run, 1 when the JSON could not be written.
pub fn report<F: Serialize>(
    name: &str,
    figures: Result<F, impl std::fmt::Display>,
    json: Option<std::path::PathBuf>,
    summary: impl Fn(&F) -> String,
) -> std::process::ExitCode {
    let f = match figures {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bench {name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!("{}", summary(&f));
    if let Some(path) = json
        && let Err(e) = write_json(&path, &f)
    {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

/// p50/p99/p99.9 as `a/b/c µs`.
pub(crate) fn quantiles_us(q: [u64; 3]) -> String {
    format!("{}/{}/{} µs", q[0], q[1], q[2])
}

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The lab forwarder's throughput and added latency on real packets (root).
    Lab {
        /// Topology file (the lab is brought up and down by the benchmark).
        file: PathBuf,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run nodes and probes in the ordinary scheduling class instead of SCHED_FIFO.
        #[arg(long)]
        no_realtime: bool,
        /// Queues the POP reads its TUN device with (default: one per core).
        #[arg(long, value_name = "N", value_parser = anyedge_lab::tunq::parse_count)]
        tun_queues: Option<usize>,
        /// Also measure a peer proxy in the same lab and run: `nginx` (its stream module as
        /// a one-hop UDP proxy between the same client and backend).
        #[arg(long, value_parser = ["nginx"])]
        peer: Option<String>,
        /// Peer processes chained one after another (with `--peer`): 3 crosses as many
        /// user-space processes each way as the VIP path (POP, CLB node, tunnel end).
        #[arg(long, value_name = "N", default_value_t = 1, requires = "peer",
              value_parser = clap::value_parser!(u8).range(1..=anyedge_lab::bench::MAX_PEER_HOPS as i64))]
        peer_hops: u8,
        /// Also show where the time goes: how long packets spend inside the POP, the CLB
        /// node and the backend host's tunnel end, from timestamps the nodes take.
        #[arg(long)]
        breakdown: bool,
    },
    /// Bulk TCP through the lab forwarder, measured by iperf3 (root): through a TCP listener
    /// to an `app: external` backend running `iperf3 -s`, and straight to the same host,
    /// impairments off; Gbit/s both ways, their ratio, retransmissions and each node's
    /// peak memory.
    Bulk {
        /// Topology file with a TCP listener whose backends are `app: external`
        /// (topologies/apps.yaml has one; the lab is brought up and down).
        file: PathBuf,
        /// The TCP listener's port (default: the first such listener).
        #[arg(long)]
        port: Option<u16>,
        /// Seconds each iperf3 run lasts.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run nodes, the peer's processes and iperf3 in the ordinary scheduling class
        /// instead of SCHED_FIFO.
        #[arg(long)]
        no_realtime: bool,
        /// Also measure a peer proxy in the same lab and run: `nginx` (its stream module
        /// as a TCP proxy between the same client and host).
        #[arg(long, value_parser = ["nginx"])]
        peer: Option<String>,
        /// Peer processes chained one after another (with `--peer`): 3 crosses as many
        /// user-space processes as the VIP path (POP, CLB node, tunnel end).
        #[arg(long, value_name = "N", default_value_t = 1, requires = "peer",
              value_parser = clap::value_parser!(u8).range(1..=anyedge_lab::bench::MAX_PEER_HOPS as i64))]
        peer_hops: u8,
    },
    /// HTTP/2 through the lab's HTTPS listener, measured by h2load (root): many streams on
    /// each connection to `app: external` backends running nginx, impairments off;
    /// requests/s, p50/p99, CPU per request and each node's peak memory.
    L7 {
        /// Topology file with an HTTPS listener whose backends are `app: external`
        /// (topologies/apps.yaml has one; the lab is brought up and down).
        file: PathBuf,
        /// The HTTPS listener's port (default: the first such listener).
        #[arg(long)]
        port: Option<u16>,
        /// Requests in all (h2load -n).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
        requests: u32,
        /// Client connections (h2load -c).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        connections: u32,
        /// Streams at a time on each connection (h2load -m).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
        streams: u32,
        /// Also measure a peer proxy in the same lab and run: `haproxy` (HTTP/2 over TLS
        /// in front, HTTP/1.1 to the same nginx).
        #[arg(long, value_parser = ["haproxy"])]
        peer: Option<String>,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Control-plane failover in a lab (root): kill the leader, time the first committed write.
    Control {
        /// Topology file with a `control:` section (the lab is brought up and down).
        file: PathBuf,
        /// Leader kills (each followed by a restart).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// BGP failover in a lab (root): a POP dies under load, `--kills` times (each followed
    /// by its recovery); detection (its transit's session down), withdrawal (no transit
    /// selects it) and each affected flow's longest wait for a reply.
    Failover {
        /// Topology file (the lab is brought up and down).
        file: PathBuf,
        /// The POP to kill (default: the first a client group enters).
        #[arg(long)]
        pop: Option<String>,
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// `freeze` (node and speaker hang: BFD finds it) or `kill` (the node stops, its
        /// speaker closes the session).
        #[arg(long, value_parser = ["freeze", "kill"], default_value = "freeze")]
        fault: String,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The simulator as the world grows: the file with every client count multiplied and
    /// each client's rate divided (the same packets from more flows), per scale wall time,
    /// events/s, deliveries/s, peak memory and memory per flow. Each run is a process.
    Sim {
        /// Topology file.
        #[arg(default_value = "topologies/global.yaml")]
        file: PathBuf,
        /// Client-count factors, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
        scale: Vec<u32>,
        /// Runs per scale (figures are medians; runs interleave the scales).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Instead of FILE: worlds `anyedge generate` makes (250 POPs, 25 regions, up to
        /// 4,000 groups) of these client counts, e.g. 10000,100000,1000000; prints wall
        /// time, deliveries/s, peak memory and the share of deliveries that are probes.
        #[arg(long, value_delimiter = ',', value_name = "CLIENTS")]
        ladder: Vec<u64>,
        /// Simulated time of each ladder world.
        #[arg(long, value_name = "TIME", default_value = "20s", value_parser = crate::duration_ns)]
        ladder_duration: u64,
        /// `sim --threads` for every run (default and most: the machine's cores).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One scale of `bench sim` in this process; prints its figures as JSON.
    #[command(hide = true)]
    SimOne {
        file: PathBuf,
        #[arg(long)]
        scale: u32,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Maglev table balance, disruption when one backend goes, and build time.
    Maglev {
        /// Number of backends.
        #[arg(long, default_value_t = 100)]
        backends: usize,
        /// Lookup table size (prime).
        #[arg(long, default_value_t = 65_537)]
        table: usize,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Runs a `bench` subcommand and prints its figures.
pub fn command(which: BenchCommand) -> ExitCode {
    match which {
        BenchCommand::Lab { file, json, no_realtime, tun_queues, peer, peer_hops, breakdown } => {
            let options = anyedge_lab::bench::LabBench {
                realtime: !no_realtime,
                tun_queues,
                peer: peer.as_deref(),
                peer_hops: peer_hops.into(),
                breakdown,
            };
            lab::run(&file, options, json)
        }
        BenchCommand::Bulk { file, port, seconds, json, no_realtime, peer, peer_hops } => {
            bulk::run(&file, port, seconds, json, peer.map(|_| usize::from(peer_hops)), !no_realtime)
        }
        BenchCommand::L7 { file, port, requests, connections, streams, peer, json } => {
            let load = anyedge_lab::l7::Load { requests, connections, streams };
            l7::run(&file, port, load, peer.is_some(), json)
        }
        BenchCommand::Failover { file, pop, kills, fault, json } => {
            failover::run(&file, pop.as_deref(), kills, &fault, json)
        }
        BenchCommand::Control { file, rounds, json } => control::run(&file, rounds, json),
        BenchCommand::Sim { ladder: sizes, ladder_duration, runs, json, threads, .. } if !sizes.is_empty() => {
            sim::ladder_command(&sizes, ladder_duration, runs, crate::threads_or_cores(threads), json)
        }
        BenchCommand::Sim { file, scale, runs, json, threads, .. } => {
            sim::run(&file, &scale, runs, crate::threads_or_cores(threads), json)
        }
        BenchCommand::SimOne { file, scale, threads } => sim::one(&file, scale, threads),
        BenchCommand::Maglev { backends, table, json } => maglev::run(backends, table, json),
    }
}

/// This program, which lab benchmarks start nodes and probes with.
fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"))
}
