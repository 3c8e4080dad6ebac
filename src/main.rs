//! The `anyedge` command, one binary for both drivers:
//!
//! - `sim FILE [--seed N] [--report F] [--stats F]` replays a topology file in the
//!   deterministic simulator and prints per-city latency, loss and failover;
//! - `validate FILE` checks a topology file and names every problem (FILE:LINE:COL);
//! - `lab up|down|status|exec|kill|start FILE …` brings the same file up as network
//!   namespaces with real packets and manages it (root);
//! - `render FILE --out DIR [--ca DIR]` writes each node's configuration, keys and
//!   certificates into a directory of its own, for the host that runs it;
//! - `node --config DIR [--check]` runs (or checks) one rendered node: on a host, or in
//!   a lab namespace (`lab up` renders its nodes and starts them this way);
//! - `probe --target VIP:PORT …` loads a VIP from inside a client namespace and reports
//!   HDR round-trip percentiles;
//! - `ctl FILE status|routes|set-weight|bind|unbind|add-listener|del-listener` is the
//!   control API of a running lab (its file has `control:`);
//! - `chaos FILE --seeds N [--from S] [--jobs J] [--faults KINDS] [--json F]` runs many
//!   seeded random fault schedules in the simulator and checks every invariant;
//!   `--shard I/N` runs one block of the seeds and writes a part file;
//! - `sweep FILE --set PATH=V1,V2 … --seeds N` compares a design's variants over seeds;
//! - `merge PARTS… --json F` combines part files into the report one process writes;
//! - `calibrate MEASURED.csv` fits the delay model to measured round trips;
//! - `delay A B` prints the model's round trip between two places and what it rests on;
//! - `bench lab|control|maglev` are the benchmarks that print figures.

mod alloc;
mod anycast_fit;
mod bench;
mod calibrate;
mod capture;
mod catchments;
mod chaos;
mod ctl;
mod delay;
mod deploy;
mod generate;
mod lab;
mod man;
mod merge;
#[cfg(feature = "mpi")]
mod mpi_ranks;
mod probe;
mod reference;
mod report;
mod shard;
mod sim;
mod sweep;
mod validate;

/// mimalloc instead of the system allocator: every simulated packet is a buffer
/// allocated and freed, and glibc's malloc was a tenth of a simulation's time. Packet-size
/// blocks go through a per-thread cache first (`alloc.rs`).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

use std::path::PathBuf;
use std::process::ExitCode;

use anyedge_topology::{self as topology, Topology};
use clap::{Parser, Subcommand};

#[derive(Subcommand)]
enum HostCommand {
    /// Build host NAME's namespaces, links and routes (nodes are started apart).
    Up {
        /// The directory `anyedge render --hosts` wrote.
        dir: PathBuf,
        #[arg(long, value_name = "NAME")]
        host: String,
    },
    /// Remove host NAME's namespaces (and what runs in them).
    Down {
        dir: PathBuf,
        #[arg(long, value_name = "NAME")]
        host: String,
    },
}

#[derive(Parser)]
#[command(name = "anyedge", version, about = "Anycast edge network: simulator and forwarder")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a topology file in the deterministic simulator and print per-city latency.
    Sim {
        /// Topology file (YAML).
        file: PathBuf,
        /// Root seed; overrides the file's `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// Write the JSON report to this file (byte-identical for the same file and seed;
        /// `--report` is its older name).
        #[arg(long = "json", alias = "report", value_name = "FILE")]
        report: Option<PathBuf>,
        /// No progress bar (there is none either when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
        /// Write run statistics (events, packets, wall time, rates) here as JSON.
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Write the report as one self-contained HTML page with plots here.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Write a pcap per node (NODE.pcap, simulated time stamps) into this directory;
        /// tools/wireshark/anyedge.lua dissects the backbone's envelopes.
        #[arg(long, value_name = "DIR")]
        pcap: Option<PathBuf>,
        /// How backbone envelopes are tagged: fast (a keyed hash, about a tenth of the
        /// work) or real (the lab's AES-256-GCM, so captures carry its exact
        /// bytes). The figures are the same; the report names which.
        #[arg(long, value_parser = ["fast", "real"], default_value = "fast")]
        auth: String,
        /// Threads to run the world on (default and most: the machine's cores). A world of
        /// two or more regions runs in partitions, one per region, whichever the count: the
        /// report is the same bytes for any N.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// Run as one rank of an MPI job (`mpirun -np N anyedge sim FILE --mpi`): each rank
        /// runs its share of the partitions (and --threads of its own), crossings go between
        /// ranks at each window, rank 0 prints and writes the report: the same bytes as one
        /// process. Needs a build with `--features mpi`
        #[arg(long)]
        mpi: bool,
        /// Share partitions among ranks and threads by the events each ran in an earlier
        /// run of the same file (its `--stats` JSON, `partition_events`) instead of by the
        /// file's expected load: for worlds whose load the file misjudges. The report is
        /// the same bytes either way; only the wall time changes
        #[arg(long, value_name = "STATS")]
        balance_by: Option<PathBuf>,
        /// Capture only these nodes: names and globs, comma-separated
        /// (pop/paris,clb/frankfurt/*,backend/*,client/london,region/NAME,internet).
        #[arg(long, value_name = "NODES", requires = "pcap", value_delimiter = ',')]
        pcap_nodes: Vec<String>,
        /// Keep at most N bytes of each packet (the record says its whole length).
        #[arg(long, value_name = "N", requires = "pcap", value_parser = clap::value_parser!(u32).range(1..=65_535))]
        snaplen: Option<u32>,
        /// Capture from this simulated time on (10s, 1500ms).
        #[arg(long, value_name = "TIME", requires = "pcap", value_parser = duration_ns)]
        pcap_from: Option<u64>,
        /// Capture until this simulated time.
        #[arg(long, value_name = "TIME", requires = "pcap", value_parser = duration_ns)]
        pcap_to: Option<u64>,
    },
    /// Write a topology of N POPs, R regions and C clients at real cities (GeoNames, CC BY
    /// 4.0, data/geo/): POPs and regions at large metros spread apart, client groups at
    /// the largest cities sharing the clients by population, each sending one UDP request
    /// a second to its nearest region's VIP, some also browsing over TCP. The same
    /// arguments give the same bytes.
    Generate(generate::Args),
    /// Check a topology file; print every problem as FILE:LINE:COL: field: reason, and
    /// advice on a valid one as FILE: warning: … (exit 0).
    Validate {
        /// Topology file (YAML).
        file: PathBuf,
    },
    /// Where BGP sends each client group, in seconds and without a simulation: per group
    /// and VIP the POP, the AS path, the round trip of the group↔POP leg alone, and the
    /// inflation over the nearest announcing POP (ms and km). Over the file's AS-level
    /// internet (`internet.ases`) when it has one.
    Catchments {
        /// Topology file (YAML).
        file: PathBuf,
        /// Change a value first, as `sweep --set` does (one value each):
        /// pops[paris].prepend=2, pops[madrid].announce_to=[ntt].
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Withdraw a POP's announcements first (repeatable): where groups go when it fails.
        #[arg(long, value_name = "POP")]
        down: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The guide's reference chapters (every command and topology field), generated into
    /// DIR (what docs/src/reference/ ships).
    #[command(hide = true)]
    Reference {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Capture in this network namespace (what `lab capture` runs inside a node's).
    #[command(hide = true)]
    CaptureHere {
        #[arg(short = 'w')]
        out: PathBuf,
        #[arg(long)]
        duration: String,
        #[arg(long, default_value_t = 65_535, value_parser = clap::value_parser!(u32).range(1..=65_535))]
        snaplen: u32,
    },
    /// Render a JSON report (`sim --report`) as an HTML page with plots.
    Report {
        /// The JSON report.
        json: PathBuf,
        /// The HTML page to write.
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
    },
    /// Run one node from the directory `render` made for it (on a host, or in a lab's
    /// namespace: `lab up` starts its nodes this way).
    Node {
        /// The node's rendered directory (node.json, topology.yaml, pki/).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Check the directory (configuration, topology, keys, certificates) and exit:
        /// 0 when the node could start from it, 2 with the reason when not.
        #[arg(long)]
        check: bool,
    },
    /// Write every node's configuration (addresses, keys, certificates) into a directory
    /// of its own under DIR, for `anyedge node --config DIR/NODE` on the host that runs it.
    Render {
        /// Topology file (YAML).
        file: PathBuf,
        /// Where the node directories go (made 0700); the CA and the backbone secret are
        /// kept in DIR/ca, the operator's certificates in DIR/operator.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA (ca.pem, ca.key, backbone.secret) of an earlier render: nodes rendered
        /// now join the nodes rendered then.
        #[arg(long, value_name = "DIR")]
        ca: Option<PathBuf>,
        /// Each node's run-time directory (default /var/lib/anyedge/NODE).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Nodes leave out the file's delay, jitter and loss (benchmarks).
        #[arg(long)]
        no_impairments: bool,
        /// Nodes run SCHED_FIFO (needs CAP_SYS_NICE).
        #[arg(long)]
        realtime: bool,
        /// Queues each POP reads its TUN device with (default: one per core of its host).
        #[arg(long, value_name = "N", value_parser = anyedge_lab::tunq::parse_count)]
        tun_queues: Option<usize>,
        /// Place the nodes on hosts (name, underlay address, the nodes and networks on
        /// it); each host then builds its part with `anyedge host up DIR --host NAME`.
        #[arg(long, value_name = "HOSTS.yaml")]
        hosts: Option<PathBuf>,
    },
    /// One host's part of a deployment rendered with --hosts: its namespaces and links; to
    /// other hosts, the backbone routed over the underlay and other links as VXLAN (root).
    Host {
        #[command(subcommand)]
        action: HostCommand,
    },
    /// Bring a topology up as network namespaces with real packets, and manage it.
    Lab {
        #[command(subcommand)]
        action: lab::LabCommand,
    },
    /// The control API of a running lab (its file has `control:`): status, routes, writes.
    Ctl {
        /// Topology file of the lab.
        file: PathBuf,
        #[command(subcommand)]
        action: ctl::CtlCommand,
    },
    /// Load a VIP from inside a client namespace and report round trips.
    Probe(probe::Args),
    /// Many seeds, each a random fault schedule drawn from the file's world, every
    /// invariant checked; failing seeds are listed with the command that replays them.
    Chaos {
        /// Topology file (YAML).
        file: PathBuf,
        /// How many seeds to run.
        #[arg(long)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Fault kinds to draw, comma-separated: pop, clb, region, backend, control,
        /// partition, link, write (default: every kind the world has room for).
        #[arg(long)]
        faults: Option<String>,
        /// Run each seed this long instead of the file's duration (at least 12s).
        #[arg(long)]
        duration: Option<String>,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print each seed's drawn fault schedule as topology-file `faults:` lines instead
        /// of running it (a failing seed, written out as a file for `anyedge sim`).
        #[arg(long)]
        print_schedule: bool,
        /// Run only block I of N of the seeds (I from 0) and write a part file to --json,
        /// for `anyedge merge`. Default inside a Slurm job array: its task id and count; in
        /// a Kubernetes Indexed Job: JOB_COMPLETION_INDEX of ANYEDGE_SHARDS.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
    },
    /// Compare a design's variants: every combination of the `--set` values, each run
    /// over `--seeds` seeds; per variant each metric's median and range over the seeds, as
    /// a table, JSON and an HTML page of plots.
    Sweep {
        /// Topology file (YAML).
        file: PathBuf,
        /// PATH=V1,V2,…: a field of the file and the values to try (repeat for more).
        /// PATH is keys joined by dots, with [N] or [NAME] for list items:
        /// failover.probe_interval, backbone.loss, vips[0].listeners[1].scheduler,
        /// clients[london].count.
        #[arg(long = "set", value_name = "PATH=V1,V2,…")]
        sets: Vec<String>,
        /// Seeds per variant.
        #[arg(long)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Metrics, comma-separated: p50, p99, loss (the worst client group; NAME@GROUP
        /// for one group), recovery_p50, recovery_max, detected_ms, backend_changed (the
        /// slowest fault, or all; NAME@TEXT for the faults whose description holds TEXT,
        /// e.g. detected_ms@pop/paris), false_downs (default:
        /// p50,p99,loss,recovery_max,detected_ms,false_downs).
        #[arg(long = "metric", value_name = "METRICS")]
        metrics: Option<String>,
        /// Threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Write the report (or, with a shard, the part) here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the HTML page of plots here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Run only block I of N of the runs (variants × seeds) and write a part file to
        /// --json; defaults as for `chaos --shard`.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
    },
    /// Combine the part files of a sharded run (`chaos` or `sweep` with `--shard`) into the report one
    /// process would have written for the same seeds; parts from another build, topology
    /// file or options are refused.
    Merge {
        /// Part files, one per shard, in any order.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        /// Write the merged report here.
        #[arg(long)]
        json: PathBuf,
        /// Also write a sweep's HTML page here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// The delay model's round trip between two places (no last mile), the distance, and
    /// what it rests on: the measured server pairs near the two places, with their weights.
    /// Places are cities of data/geo/cities.tsv (NAME, or NAME/CC for a country's) or
    /// coordinates (LAT,LON).
    Delay {
        #[arg(allow_hyphen_values = true)]
        a: String,
        #[arg(allow_hyphen_values = true)]
        b: String,
        /// A calibration that ships.
        #[arg(long, default_value = anyedge_topology::INTERNET_DELAY_DEFAULT)]
        model: String,
        /// How many of the measured pairs to list, the heaviest first.
        #[arg(long, default_value_t = 8)]
        pairs: usize,
    },
    /// Fit the delay model to measured round trips (CSV with a_lat,a_lon,b_lat,b_lon,rtt_ms)
    /// and print it as a topology file's `delay:` section, with its error on held-out pairs.
    Calibrate {
        file: PathBuf,
        /// The calibration's name, as reports will show it.
        #[arg(long, default_value = "custom")]
        name: String,
        /// Where the measurements come from (dataset, date, licence), as reports will show it.
        #[arg(long)]
        source: Option<String>,
        /// The model: `landmarks`, per place (each pair from the measured pairs of the
        /// servers near its ends; scored with each server held out whole), or `areas`, a
        /// stretch, overhead and hub per pair of areas.
        #[arg(long = "model", value_enum, default_value = "landmarks")]
        kind: calibrate::Kind,
        /// With `--model areas`: hold every Nth pair out of the fit and report the error on
        /// those (0: none; default 3).
        #[arg(long)]
        holdout: Option<u32>,
        /// Print each pair's measured and predicted round trip.
        #[arg(long)]
        pairs: bool,
        /// Print the error per pair of areas (held-out pairs, long and short): where the
        /// model is off, and by how much.
        #[arg(long)]
        areas: bool,
        /// Also print a topology's client round trips under its own model and the fitted one.
        #[arg(long)]
        topology: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
        /// FILE is a directory of anycast measurements (sites.csv, pings.csv, as in
        /// data/anycast): compare each service's measured round trips with BGP over the
        /// default internet's, at p50, p90 and p99.
        #[arg(long)]
        anycast: bool,
        /// With `--anycast`: search the default internet's shape that fits the services
        /// marked `fit` best, and print it.
        #[arg(long, requires = "anycast")]
        fit: bool,
        /// With `--anycast`: how many seeds of the default internet each figure pools.
        #[arg(long, default_value_t = 3, requires = "anycast")]
        seeds: u64,
        /// With `--anycast`: also write each vantage point's measured and simulated round
        /// trips to this CSV file (seed 1).
        #[arg(long, requires = "anycast")]
        vantages: Option<PathBuf>,
        /// With `--anycast`: change a number of the default internet's shape for this run
        /// (`--shape last_mile_ms=1.5`; repeat for more): what is compared, or where
        /// `--fit` starts. The names are `Shape`'s fields (topology/src/default_internet.rs).
        #[arg(long, requires = "anycast")]
        shape: Vec<String>,
    },
    /// Shell completions for anyedge, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The topology file's JSON Schema (draft 2020-12), on stdout: what
    /// schema/topology.schema.json ships, for editors' YAML language servers (completion,
    /// field help and errors as you type). Files point at it with a first line
    /// `# yaml-language-server: $schema=PATH`.
    Schema,
    /// Man pages: anyedge.1 and one page per command (anyedge-sim.1, anyedge-lab.1 …),
    /// written into DIR (what `man/` in the repository and the Debian package ship).
    Man {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

fn load(file: &std::path::Path) -> Result<Topology, ExitCode> {
    topology::load(file).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), ExitCode> {
    std::fs::write(path, text).map_err(|e| {
        eprintln!("{}: cannot write: {e}", path.display());
        ExitCode::FAILURE
    })
}

/// Refuses an output path that cannot be written, before any work: created (and
/// removed again when it did not exist) to find out.
fn check_writable(flag: &str, path: &std::path::Path) -> Result<(), ExitCode> {
    let existed = path.exists();
    match std::fs::OpenOptions::new().append(true).create(true).open(path) {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("{flag} {}: cannot write ({e}); nothing was run", path.display());
            Err(ExitCode::from(2))
        }
    }
}

/// What a generator of files (`man`, `reference`) says when it is done.
fn wrote(result: anyhow::Result<usize>, what: &str, out: &std::path::Path) -> ExitCode {
    match result {
        Ok(n) => {
            println!("{n} {what} in {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    quiet_when_stdout_closes();
    let cli = Cli::parse();
    // The documentation's tests check that every command line they show still parses
    // (a renamed flag fails them) without running it.
    if std::env::var_os("ANYEDGE_PARSE_ONLY").is_some() {
        return ExitCode::SUCCESS;
    }
    // The commands that simulate allocate and free packet buffers by the million.
    if matches!(
        cli.command,
        Command::Sim { .. } | Command::Chaos { .. } | Command::Sweep { .. } | Command::Bench { .. }
    ) {
        alloc::keep_freed_memory();
    }
    run(cli.command)
}

/// Each command, handed to the file that runs it.
fn run(command: Command) -> ExitCode {
    match command {
        Command::Generate(args) => generate::run(args),
        Command::Validate { file } => validate::run(&file),
        Command::Catchments { file, sets, down, json } => catchments::run(catchments::Args { file, sets, down, json }),
        Command::Bench { which } => bench::command(which),
        Command::Node { config, check } => deploy::node(&config, check),
        Command::Host { action } => deploy::host(&action),
        Command::Render { file, out, ca, state, no_impairments, realtime, tun_queues, hosts } => {
            let opts =
                anyedge_lab::setup::render::RenderOptions { ca, state, no_impairments, realtime, tun_queues, hosts };
            deploy::render(&file, &out, &opts)
        }
        Command::Lab { action } => lab::run(action),
        Command::Completions { shell } => completions(shell),
        Command::Schema => {
            print!("{}", topology::schema::json_schema());
            ExitCode::SUCCESS
        }
        Command::Reference { out } => wrote(reference::write_all(&out), "reference chapters", &out),
        Command::Man { out } => wrote(man::write_all(&out), "man pages", &out),
        Command::CaptureHere { out, duration, snaplen } => capture::here(&out, &duration, snaplen),
        Command::Ctl { file, action } => ctl::run(file, action),
        Command::Probe(args) => probe::run(args),
        Command::Delay { a, b, model, pairs } => delay::run(delay::Args { a, b, model, terms: pairs }),
        Command::Calibrate { file, anycast: true, fit, seeds, vantages, shape, .. } => {
            anycast_fit::run(anycast_fit::Args { dir: file, fit, seeds, vantages, shape })
        }
        Command::Calibrate { file, name, source, kind, holdout, pairs, areas, topology, json, .. } => {
            calibrate::run(calibrate::Args { file, name, source, kind, holdout, pairs, areas, topology, json })
        }
        Command::Chaos { file, seeds, from, jobs, faults, duration, json, print_schedule, shard } => {
            chaos::run(chaos::Args { file, seeds, from, jobs, faults, duration, json, print_schedule, shard })
        }
        Command::Sweep { file, sets, seeds, from, metrics, jobs, json, html, shard } => {
            sweep::run(sweep::Args { file, sets, seeds, from, metrics, jobs, json, html, shard })
        }
        Command::Merge { parts, json, html } => merge::run(&parts, &json, html.as_deref()),
        Command::Report { json, html } => report::run(&json, &html),
        Command::Sim {
            file,
            seed,
            report,
            stats,
            pcap,
            pcap_nodes,
            snaplen,
            pcap_from,
            pcap_to,
            html,
            quiet,
            auth,
            threads,
            mpi,
            balance_by,
        } => {
            let capture = anyedge_sim::CaptureFilter { nodes: pcap_nodes, from_ns: pcap_from, to_ns: pcap_to, snaplen };
            let auth = if auth == "real" { anyedge_sim::SimAuth::Real } else { anyedge_sim::SimAuth::Fast };
            let threads = threads_or_cores(threads);
            let outputs = sim::Outputs { report, stats, pcap, capture, html, quiet, auth, threads, mpi, balance: None };
            sim::command(&file, seed, balance_by.as_deref(), outputs)
        }
    }
}

/// `anyedge completions SHELL`: the shell's completion script on standard output.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "anyedge", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// A time on the command line (`10s`, `1500ms`), as topology files write it.
pub(crate) fn duration_ns(text: &str) -> anyhow::Result<u64> {
    anyedge_topology::parse_duration_ns(text).map_err(anyhow::Error::msg)
}

/// `--threads N`, or the machine's cores; never more than the cores (each thread's world
/// is a copy of the topology's tables: more threads than cores would only cost memory).
fn threads_or_cores(threads: Option<u16>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads.map_or(cores, |n| usize::from(n).min(cores))
}

/// A reader that stops early (`anyedge lab status | head`) ends the output quietly, as for
/// any Unix tool, with SIGPIPE's exit status (141). Printing to the closed pipe panics in
/// Rust (which ignores SIGPIPE); SIGPIPE itself stays ignored, because its default action
/// would kill a node or a probe that writes to a socket its peer closed (a control node
/// answering `ctl status` over its Unix socket died that way). Only the panics of writing
/// to stdout are caught; every other panic is reported as always.
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let stdout =
            text.starts_with("failed printing to stdout") || text.starts_with("failed to write completion file");
        if stdout && (text.contains("Broken pipe") || text.contains("BrokenPipe")) {
            std::process::exit(141);
        }
        default(info);
    }));
}
