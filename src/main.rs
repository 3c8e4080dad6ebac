//! The `anyedge` command, one binary for both drivers:
//!
//! - `sim FILE [--seed N] [--report F] [--stats F]` replays a topology file in the
//!   deterministic simulator and prints per-city latency, loss and failover;
//! - `validate FILE` checks a topology file and names every problem (FILE:LINE:COL);
//! - `lab up|down|status|exec|kill|start FILE …` brings the same file up as network
//!   namespaces with real packets and manages it (root);
//! - `node --topology F --name N --state-dir D` is one lab node's process (`lab up`
//!   starts these inside their namespaces);
//! - `probe --target VIP:PORT …` loads a VIP from inside a client namespace and reports
//!   HDR round-trip percentiles;
//! - `ctl FILE status|routes|set-weight|bind|unbind|add-listener|del-listener` is the
//!   control API of a running lab (its file has `control:`);
//! - `chaos FILE --seeds N [--from S] [--jobs J] [--faults KINDS] [--json F]` runs many
//!   seeded random fault schedules in the simulator and checks every invariant;
//! - `calibrate MEASURED.csv` fits the delay model to measured round trips;
//! - `bench lab|control|maglev` are the benchmarks that print figures.

mod bench;
mod calibrate;
mod chaos;
mod probe;

/// mimalloc instead of the system allocator: every simulated packet is a buffer
/// allocated and freed, and glibc's malloc was a tenth of a simulation's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyedge_topology::{self as topology, Topology};
use clap::{Parser, Subcommand};

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
    },
    /// Check a topology file; print every problem as FILE:LINE:COL: field: reason.
    Validate {
        /// Topology file (YAML).
        file: PathBuf,
    },
    /// Capture in this network namespace (what `lab capture` runs inside a node's).
    #[command(hide = true)]
    CaptureHere {
        #[arg(short = 'w')]
        out: PathBuf,
        #[arg(long)]
        duration: String,
    },
    /// Render a JSON report (`sim --report`) as an HTML page with plots.
    Report {
        /// The JSON report.
        json: PathBuf,
        /// The HTML page to write.
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
    },
    /// Run one node of a lab (inside its namespace; `lab up` starts these).
    #[command(hide = true)]
    Node {
        #[arg(long)]
        topology: PathBuf,
        /// The node, named as fault targets name it: pop/paris, clb/frankfurt/1, backend/IP.
        #[arg(long)]
        name: String,
        /// The lab's state directory (readiness markers).
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Bring a topology up as network namespaces with real packets, and manage it.
    Lab {
        #[command(subcommand)]
        action: LabCommand,
    },
    /// The control API of a running lab (its file has `control:`): status, routes, writes.
    Ctl {
        /// Topology file of the lab.
        file: PathBuf,
        #[command(subcommand)]
        action: CtlCommand,
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
        /// Hold every Nth pair out of the fit and report the error on those (0: none).
        #[arg(long, default_value_t = 3)]
        holdout: u32,
        /// Print each pair's measured and predicted round trip.
        #[arg(long)]
        pairs: bool,
        /// Also print a topology's client round trips under its own model and the fitted one.
        #[arg(long)]
        topology: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Shell completions for anyedge, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Leader, term, commit, members, and the applied index of every control, POP and CLB node.
    Status {
        /// A table, or JSON on stdout.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
        /// Same as `--output json` (older spelling).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// The replicated route table.
    Routes {
        /// A table, or JSON on stdout.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
        /// Same as `--output json` (older spelling).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Set a backend's weight (0–100; 0 drains). Returns once committed.
    SetWeight {
        backend: String,
        /// 0–100.
        #[arg(allow_hyphen_values = true)]
        weight: String,
    },
    /// Bind a backend again.
    Bind { backend: String },
    /// Unbind a backend: forwarding to it stops at once.
    Unbind { backend: String },
    /// Add a listener to a VIP.
    AddListener {
        vip: String,
        /// tcp, udp, tcp-ssl, quic, http or https.
        protocol: String,
        port: u16,
        #[arg(long, default_value = "wrr")]
        scheduler: String,
        /// Backend group of the VIP's home region.
        #[arg(long)]
        backends: String,
        /// Session persistence, as in the file (30s–3600s, e.g. 60s or 5m; wrr only).
        #[arg(long)]
        persistence: Option<String>,
    },
    /// Remove a listener from a VIP.
    DelListener { vip: String, protocol: String, port: u16 },
}

/// What a route-table change does, for the user who asked for it.
fn describe(change: &anyedge_control::Change) -> String {
    use anyedge_control::Change;
    match change {
        Change::SetWeight { backend, weight } => format!("backend {backend}: weight set to {weight}"),
        Change::Bind { backend } => format!("backend {backend}: bound"),
        Change::Unbind { backend } => format!("backend {backend}: unbound (forwarding to it stopped)"),
        Change::AddListener { vip, listener } => format!(
            "VIP {vip}: {} listener on port {} added ({} over group {}{})",
            listener.protocol,
            listener.port,
            listener.scheduler,
            listener.backends,
            listener.persistence_s.map_or(String::new(), |p| format!(", persistence {p}s"))
        ),
        Change::DelListener { vip, protocol, port } => format!("VIP {vip}: {protocol} listener on port {port} removed"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// `ctl routes` as a table: VIPs and their listeners, then groups and their backends.
fn routes_table(r: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let _ = writeln!(out, "route table at index {} (from {})", r["index"], s(&r["from"]));
    let t = &r["table"];
    for v in t["vips"].as_array().into_iter().flatten() {
        let pops: Vec<String> = v["publish"].as_array().into_iter().flatten().map(s).collect();
        let _ = writeln!(out, "VIP {} home {} published at {}", s(&v["name"]), s(&v["home"]), pops.join(", "));
        for l in v["listeners"].as_array().into_iter().flatten() {
            let persist = l["persistence_s"].as_u64().map_or(String::new(), |p| format!("  persistence {p}s"));
            let _ = writeln!(
                out,
                "  {:<8} {:>5}  {:<7} -> {}{persist}",
                s(&l["protocol"]),
                l["port"],
                s(&l["scheduler"]),
                s(&l["backends"])
            );
        }
    }
    for g in t["backend_groups"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "group {}/{}", s(&g["region"]), s(&g["name"]));
        for b in g["backends"].as_array().into_iter().flatten() {
            let bound = if b["bound"].as_bool().unwrap_or(true) { "" } else { "  (unbound)" };
            let _ = writeln!(out, "  {:<24} weight {:>3}{bound}", s(&b["addr"]), b["weight"]);
        }
    }
    out
}

/// `IP:PORT` or `backend/IP:PORT`.
fn backend_arg(text: &str) -> Result<std::net::SocketAddr, String> {
    let bare = text.strip_prefix("backend/").unwrap_or(text);
    bare.parse().map_err(|_| format!("backend: `{text}` is not IP:PORT"))
}

fn ctl(file: PathBuf, action: CtlCommand) -> ExitCode {
    use anyedge_control::{Change, ListenerRoute};
    use anyedge_lab::ctl;
    let change = match action {
        CtlCommand::Status { output, json } => {
            return match ctl::status(&file) {
                Ok(s) if json || output == "json" => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    let quorum =
                        if s.quorum { String::new() } else { " — no quorum: writes cannot commit".to_string() };
                    println!(
                        "leader {} (term {}, commit {}), members {}, {} of {} answering{quorum}",
                        s.leader.as_deref().unwrap_or("none"),
                        s.term,
                        s.commit,
                        s.members.join(" "),
                        s.answering,
                        s.members.len()
                    );
                    for (node, applied) in &s.applied {
                        let shown = applied.map_or("not answering".to_string(), |a| format!("applied {a}"));
                        println!("  {node:<24} {shown}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ctl status: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        CtlCommand::Routes { output, json } => {
            return match ctl::routes(&file) {
                Ok(r) if json || output == "json" => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{}", routes_table(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ctl routes: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        CtlCommand::SetWeight { backend, weight } => match weight.parse::<u8>() {
            Ok(w) if w <= 100 => backend_arg(&backend).map(|b| Change::SetWeight { backend: b, weight: w }),
            _ => Err(format!("weight: `{weight}` is not a whole number from 0 to 100 (0 drains)")),
        },
        CtlCommand::Bind { backend } => backend_arg(&backend).map(|b| Change::Bind { backend: b }),
        CtlCommand::Unbind { backend } => backend_arg(&backend).map(|b| Change::Unbind { backend: b }),
        CtlCommand::AddListener { vip, protocol, port, scheduler, backends, persistence } => {
            // A VIP by name, or by one of its addresses.
            let vip = match vip.parse::<std::net::IpAddr>() {
                Ok(ip) => match anyedge_topology::load(&file).ok().and_then(|t| {
                    t.vips
                        .iter()
                        .find(|v| std::net::IpAddr::V4(v.ipv4) == ip || v.ipv6.map(std::net::IpAddr::V6) == Some(ip))
                        .map(|v| v.name.clone())
                }) {
                    Some(name) => name,
                    None => {
                        eprintln!("ctl: no VIP has the address {ip}");
                        return ExitCode::from(2);
                    }
                },
                Err(_) => vip,
            };
            let persistence_s = match persistence.as_deref().map(anyedge_topology::parse_duration_ns).transpose() {
                Ok(ns) => Ok(ns.map(|ns| (ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32)),
                Err(e) => Err(format!("--persistence: {e}")),
            };
            persistence_s.map(|persistence_s| Change::AddListener {
                vip,
                listener: ListenerRoute { protocol, port, scheduler, backends, persistence_s },
            })
        }
        CtlCommand::DelListener { vip, protocol, port } => Ok(Change::DelListener { vip, protocol, port }),
    };
    let change = match change {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let what = describe(&change);
    match ctl::write(&file, &change) {
        Ok(index) => {
            println!("{what}: committed at index {index}");
            ExitCode::SUCCESS
        }
        Err(ctl::WriteError::Invalid(e)) => {
            eprintln!("ctl: refused, nothing changed: {e}");
            ExitCode::from(2)
        }
        Err(ctl::WriteError::Unavailable(e)) => {
            eprintln!("ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum LabCommand {
    /// Make the namespaces, links and devices, start every node, return when all are ready.
    Up {
        file: PathBuf,
        /// Leave the file's delay, jitter, loss and bandwidth out (to time the forwarder by hand).
        #[arg(long)]
        no_impairments: bool,
        /// Run node processes SCHED_FIFO, as data-plane daemons are run in production.
        #[arg(long)]
        realtime: bool,
        /// Queues each POP reads its TUN device with, each on a thread of its own
        /// (default: one per core).
        #[arg(long, value_name = "N", value_parser = anyedge_lab::tunq::parse_count)]
        tun_queues: Option<usize>,
    },
    /// Remove every namespace, link, device and process of the lab.
    Down { file: PathBuf },
    /// Which nodes run.
    Status {
        file: PathBuf,
        /// A table, or JSON on stdout.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
        /// Same as `--output json` (older spelling).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Run a command inside a node's namespace.
    Exec {
        file: PathBuf,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a node's process (its namespace stays, like a crashed machine).
    Kill { file: PathBuf, node: String },
    /// Start a stopped node again.
    Start { file: PathBuf, node: String },
    /// Every node's Prometheus metrics (each also serves them at http://NODE:6091/metrics
    /// inside the lab).
    Metrics { file: PathBuf, node: Option<String> },
    /// Capture a node's packets (every interface of its namespace) into a pcap file.
    Capture {
        file: PathBuf,
        node: String,
        /// The pcap file to write.
        #[arg(short = 'w', value_name = "FILE")]
        out: PathBuf,
        /// How long to capture, e.g. 5s.
        #[arg(long, default_value = "5s")]
        duration: String,
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

/// Draws a progress bar on stderr when it is a terminal (and not `--quiet`): simulated
/// time, wall time so far and the time left at the pace so far.
fn progress_bar(quiet: bool, sim_s: f64) -> impl FnMut(f64) {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let started = std::time::Instant::now();
    let mut last = usize::MAX;
    move |done: f64| {
        if !tty {
            return;
        }
        let pct = (done * 100.0).round() as usize;
        if pct != last {
            last = pct;
            let filled = pct / 4;
            let elapsed = started.elapsed().as_secs_f64();
            let eta = if done > 0.0 { elapsed * (1.0 - done) / done } else { 0.0 };
            eprint!(
                "\r[{}{}] {pct:>3}%  {:.1}/{sim_s:.0} s simulated  {elapsed:.1} s elapsed  ETA {eta:.0} s   ",
                "#".repeat(filled),
                ".".repeat(25 - filled.min(25)),
                done * sim_s
            );
            if pct >= 100 {
                eprint!("\r{}\r", " ".repeat(100));
            }
        }
    }
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

/// What `sim` writes besides the table.
struct Outputs {
    quiet: bool,
    report: Option<PathBuf>,
    stats: Option<PathBuf>,
    pcap: Option<PathBuf>,
    html: Option<PathBuf>,
}

fn simulate(file: &std::path::Path, t: &Topology, outputs: Outputs) -> ExitCode {
    let Outputs { report, stats, pcap, html, quiet } = outputs;
    if let Some(why) = anyedge_sim::cost::refuse(t) {
        eprintln!("{}: {why}", file.display());
        return ExitCode::from(2);
    }
    for (flag, path) in [("--json", &report), ("--stats", &stats), ("--html", &html)] {
        if let Some(path) = path
            && let Err(code) = check_writable(flag, path)
        {
            return code;
        }
    }
    if let Some(dir) = &pcap {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("--pcap {}: cannot create ({e}); nothing was run", dir.display());
            return ExitCode::from(2);
        }
        if let Err(code) = check_writable("--pcap", &dir.join(".anyedge-write-check")) {
            return code;
        }
    }
    let options = anyedge_sim::Options { pcap };
    let outcome = match anyedge_sim::run_with(t, &options, progress_bar(quiet, t.duration_ns as f64 / 1e9)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{}: cannot simulate: {}", file.display(), e.0);
            eprintln!("replay: anyedge sim {} --seed {}", file.display(), t.seed);
            return ExitCode::from(2);
        }
    };
    let table = outcome.report.table();
    print!("{table}");
    if let Some(path) = html {
        let value = serde_json::to_value(&outcome.report).unwrap_or_default();
        if let Err(code) = write_file(&path, &anyedge_sim::html::render(&value, Some(&table))) {
            return code;
        }
    }
    if let Some(path) = report
        && let Err(code) = write_file(&path, &outcome.report.to_json())
    {
        return code;
    }
    if let Some(path) = stats {
        let text = serde_json::to_string_pretty(&outcome.stats).unwrap_or_default() + "\n";
        if let Err(code) = write_file(&path, &text) {
            return code;
        }
    }
    if !outcome.report.violations.is_empty() {
        // The report is written all the same: it shows which invariant broke.
        eprintln!("{}: invariant violated (a bug in anyedge, seed {}):", file.display(), t.seed);
        for v in &outcome.report.violations {
            eprintln!("  {v}");
        }
        eprintln!("replay: anyedge sim {} --seed {}", file.display(), t.seed);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn lab(action: LabCommand) -> ExitCode {
    use anyedge_lab::setup;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
    // Whether the lab is up, as far as `status` found out (other commands leave it true).
    let mut up = true;
    let result = match action {
        LabCommand::Up { file, no_impairments, realtime, tun_queues } => {
            let options = setup::Options { impairments: !no_impairments, realtime, tun_queues };
            setup::up_with(&file, &exe, options).map(|s| {
                println!("lab {} is up: {} namespaces, {} node processes", s.lab, s.namespaces.len(), s.pids.len());
            })
        }
        LabCommand::Down { file } => {
            setup::require_root("lab down").and_then(|()| setup::down(&file)).map(|()| println!("lab is down"))
        }
        LabCommand::Status { file, output, json } => setup::status(&file).map(|s| {
            up = s.up;
            if json || output == "json" {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("lab {}: {}", s.lab, if s.up { "up" } else { "down" });
                for (node, state) in &s.nodes {
                    println!("  {node:<32} {state}");
                }
                for (node, reasons) in &s.drops {
                    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
                    println!("  {node:<32} drops: {}", reasons.join(", "));
                }
                for (node, c) in &s.sync {
                    let n = |k: &str| c.get(k).copied().unwrap_or(0);
                    println!(
                        "  {node:<32} sync: sent {} msgs / {} B, received {} msgs / {} B, {} flows adopted",
                        n("messages_sent"),
                        n("bytes_sent"),
                        n("messages_received"),
                        n("bytes_received"),
                        n("flows_adopted")
                    );
                }
                for (node, q) in s.quic.iter().filter(|(_, q)| q.values().any(|&v| v > 0)) {
                    let n = |k: &str| q.get(k).copied().unwrap_or(0);
                    println!("  {node:<32} quic: {} connections, {} handshakes", n("connections"), n("handshakes"));
                }
                for (node, backends) in &s.health {
                    for (backend, state) in backends.iter().filter(|(_, s)| *s != "healthy") {
                        println!("  {node:<32} sees backend {backend} {state}");
                    }
                }
                for (node, why) in &s.denied {
                    println!("  {node:<32} last dropped: {why}");
                }
                for (node, t) in &s.tun {
                    let reads: Vec<String> = t.packets_read.iter().map(u64::to_string).collect();
                    println!("  {node:<32} TUN: {} queue(s), packets read {}", t.queues, reads.join(" / "));
                }
            }
        }),
        LabCommand::Exec { file, node, mut command } => {
            // `anyedge` is this very binary (sudo resets PATH, and a checkout's build is
            // not on it anyway).
            if command.first().is_some_and(|c| c == "anyedge") {
                command[0] = exe.display().to_string();
            }
            match setup::require_root("lab exec").and_then(|()| setup::exec(&file, &node, &command)) {
                Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => Err(e),
            }
        }
        LabCommand::Kill { file, node } => setup::require_root("lab kill")
            .and_then(|()| setup::kill(&file, &node))
            .map(|()| println!("{node}: stopped (its namespace stays, like a crashed machine's)")),
        LabCommand::Metrics { file, node } => setup::metrics(&file, node.as_deref()).map(|text| print!("{text}")),
        LabCommand::Capture { file, node, out, duration } => {
            if let Err(e) = anyedge_topology::parse_duration_ns(&duration) {
                eprintln!("--duration: {e}");
                return ExitCode::from(2);
            }
            setup::require_root("lab capture").and_then(|()| setup::capture(&file, &node, &out, &duration, &exe))
        }
        LabCommand::Start { file, node } => setup::require_root("lab start")
            .and_then(|()| setup::start(&file, &node, &exe))
            .map(|()| println!("{node}: started")),
    };
    match result {
        // `lab status` of a lab that is not up.
        Ok(()) if !up => ExitCode::from(3),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => match load(&file) {
            Ok(t) => {
                println!(
                    "{}: ok ({} VIPs, {} POPs, {} regions, {} client groups, {} faults)",
                    file.display(),
                    t.vips.len(),
                    t.pops.len(),
                    t.regions.len(),
                    t.clients.len(),
                    t.faults.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Bench { which } => bench::command(which),
        Command::Node { topology, name, state_dir } => match anyedge_lab::node::run(&topology, &name, &state_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node {name}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Lab { action } => lab(action),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "anyedge", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::CaptureHere { out, duration } => {
            let duration = match anyedge_topology::parse_duration_ns(&duration) {
                Ok(ns) => std::time::Duration::from_nanos(ns),
                Err(e) => {
                    eprintln!("--duration: {e}");
                    return ExitCode::from(2);
                }
            };
            match anyedge_lab::capture::capture_here(&out, duration) {
                Ok(n) => {
                    println!("{n} packets captured into {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("capture: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ctl { file, action } => ctl(file, action),
        Command::Probe(args) => probe::run(args),
        Command::Calibrate { file, name, source, holdout, pairs, topology, json } => {
            calibrate::run(calibrate::Args { file, name, source, holdout, pairs, topology, json })
        }
        Command::Chaos { file, seeds, from, jobs, faults, duration, json, print_schedule } => {
            chaos::run(chaos::Args { file, seeds, from, jobs, faults, duration, json, print_schedule })
        }
        Command::Report { json, html } => {
            let text = match std::fs::read_to_string(&json) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: {e}", json.display());
                    return ExitCode::from(2);
                }
            };
            let value: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{}: not a report ({e})", json.display());
                    return ExitCode::from(2);
                }
            };
            match write_file(&html, &anyedge_sim::html::render(&value, None)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        Command::Sim { file, seed, report, stats, pcap, html, quiet } => {
            let mut t = match load(&file) {
                Ok(t) => t,
                Err(code) => return code,
            };
            if let Some(seed) = seed {
                t.seed = seed;
            }
            simulate(&file, &t, Outputs { report, stats, pcap, html, quiet })
        }
    }
}
