//! `anyedge sim`: a run of the simulator with its progress bar, the table on stdout and
//! the report, stats, captures and HTML page it was asked for.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyedge_topology::Topology;

use crate::{check_writable, write_file};

/// Draws a progress bar on stderr when it is a terminal (and not `--quiet`): simulated
/// time, wall time so far and the time left at the pace so far.
pub(crate) fn progress_bar(quiet: bool, sim_s: f64) -> impl FnMut(f64) {
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

/// What `sim` writes besides the table.
pub struct Outputs {
    pub quiet: bool,
    pub report: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    pub pcap: Option<PathBuf>,
    /// What the capture keeps (`--pcap-nodes`, `--snaplen`, `--pcap-from`, `--pcap-to`).
    pub capture: anyedge_sim::CaptureFilter,
    pub html: Option<PathBuf>,
    /// How backbone envelopes are tagged (`--auth`).
    pub auth: anyedge_sim::SimAuth,
    /// `--threads`.
    pub threads: usize,
    /// `--mpi`: this process is one rank of an MPI job.
    pub mpi: bool,
    /// `--balance-by`: each partition's events from an earlier run's stats.
    pub balance: Option<Vec<u64>>,
}

/// `anyedge sim FILE`: the file loaded, its seed replaced by `seed` when one is given,
/// the partitions' measured events read from `balance_by`, then [`simulate`].
pub fn command(
    file: &std::path::Path,
    seed: Option<u64>,
    balance_by: Option<&std::path::Path>,
    mut outputs: Outputs,
) -> ExitCode {
    let mut t = match crate::load(file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if let Some(seed) = seed {
        t.seed = seed;
    }
    if let Some(stats) = balance_by {
        match read_balance(stats, &t) {
            Ok(events) => outputs.balance = Some(events),
            Err(why) => {
                eprintln!("--balance-by {}: {why}; nothing was run", stats.display());
                return ExitCode::from(2);
            }
        }
    }
    simulate(file, &t, outputs)
}

/// Each partition's events from an earlier run's `--stats` file, checked against the
/// partitions `t` runs in.
fn read_balance(stats: &std::path::Path, t: &Topology) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(stats).map_err(|e| format!("cannot read ({e})"))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("not JSON ({e}): give the file `anyedge sim --stats` wrote"))?;
    let Some(list) = value.get("partition_events").and_then(|v| v.as_array()) else {
        return Err("no `partition_events`: give the file `anyedge sim --stats` wrote".into());
    };
    let events: Vec<u64> = list
        .iter()
        .enumerate()
        .map(|(i, v)| v.as_u64().ok_or_else(|| format!("partition_events[{i}] is {v}, not a count")))
        .collect::<Result<_, _>>()?;
    let partitions = anyedge_sim::partitions(t);
    if events.is_empty() {
        return Err("the run it records ran as one partition: it measured nothing to share".into());
    }
    if partitions < 2 {
        return Err("this world runs as one partition: there is nothing to share".into());
    }
    if events.len() != partitions {
        return Err(format!(
            "it measured {} partitions; this world has {partitions}: was it written by a run of another file?",
            events.len()
        ));
    }
    Ok(events)
}

/// Runs the simulation, prints the table and writes what `outputs` asks for.
pub fn simulate(file: &std::path::Path, t: &Topology, outputs: Outputs) -> ExitCode {
    if outputs.mpi {
        return simulate_mpi(file, t, outputs);
    }
    if let Err(code) = prepare(file, t, &outputs) {
        return code;
    }
    let options = anyedge_sim::Options {
        pcap: outputs.pcap.clone(),
        capture: outputs.capture.clone(),
        auth: outputs.auth,
        threads: outputs.threads,
        balance: outputs.balance.clone(),
    };
    let progress = progress_bar(outputs.quiet, t.duration_ns as f64 / 1e9);
    let mut outcome = match anyedge_sim::run_with(t, &options, progress) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{}: cannot simulate: {}", file.display(), e.0);
            eprintln!("replay: anyedge sim {} --seed {}", file.display(), t.seed);
            return ExitCode::from(2);
        }
    };
    outcome.stats.peak_memory_bytes = vec![peak_memory_bytes()];
    deliver(file, t, outcome, outputs)
}

#[cfg(feature = "mpi")]
fn simulate_mpi(file: &std::path::Path, t: &Topology, outputs: Outputs) -> ExitCode {
    crate::mpi_ranks::simulate(file, t, outputs)
}

#[cfg(not(feature = "mpi"))]
fn simulate_mpi(file: &std::path::Path, _: &Topology, _: Outputs) -> ExitCode {
    eprintln!(
        "{}: --mpi: this anyedge was built without MPI; build it with `cargo build --release --features mpi` (needs libopenmpi-dev and libclang-dev) and run it under mpirun",
        file.display()
    );
    ExitCode::from(2)
}

/// Before a run: what the simulator refuses up front, and whether every file it is to
/// write can be written (nothing runs otherwise).
pub(crate) fn prepare(file: &std::path::Path, t: &Topology, outputs: &Outputs) -> Result<(), ExitCode> {
    // Over MPI each rank judges its own share (`mpi_ranks`).
    if let Some(why) = anyedge_sim::cost::refuse(t).filter(|_| !outputs.mpi) {
        eprintln!("{}: {why}", file.display());
        return Err(ExitCode::from(2));
    }
    for (flag, path) in [("--json", &outputs.report), ("--stats", &outputs.stats), ("--html", &outputs.html)] {
        if let Some(path) = path {
            check_writable(flag, path)?;
        }
    }
    if let Some(dir) = &outputs.pcap {
        if outputs.mpi {
            eprintln!("--pcap writes every node's file from one process: run it without --mpi; nothing was run");
            return Err(ExitCode::from(2));
        }
        if let Err(e) = outputs.capture.check(t) {
            eprintln!("{e}; nothing was run");
            return Err(ExitCode::from(2));
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("--pcap {}: cannot create ({e}); nothing was run", dir.display());
            return Err(ExitCode::from(2));
        }
        check_writable("--pcap", &dir.join(".anyedge-write-check"))?;
    }
    Ok(())
}

/// The peak memory (resident) of this process so far, in bytes (`VmHWM`).
pub(crate) fn peak_memory_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// After a run: the table on stdout, the files asked for, and the exit code (failure when
/// an invariant broke).
pub(crate) fn deliver(
    file: &std::path::Path,
    t: &Topology,
    outcome: anyedge_sim::Outcome,
    outputs: Outputs,
) -> ExitCode {
    let Outputs { report, stats, html, .. } = outputs;
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
