//! `anyedge sim`: a run of the simulator with its progress bar, the table on stdout and
//! the report, stats, captures and HTML page it was asked for.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyedge_topology::Topology;

use crate::{check_writable, write_file};

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
}

/// `anyedge sim FILE`: the file loaded, its seed replaced by `seed` when one is given,
/// then [`simulate`].
pub fn command(file: &std::path::Path, seed: Option<u64>, outputs: Outputs) -> ExitCode {
    let mut t = match crate::load(file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if let Some(seed) = seed {
        t.seed = seed;
    }
    simulate(file, &t, outputs)
}

/// Runs the simulation, prints the table and writes what `outputs` asks for.
pub fn simulate(file: &std::path::Path, t: &Topology, outputs: Outputs) -> ExitCode {
    let Outputs { report, stats, pcap, capture, html, quiet, auth, threads } = outputs;
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
        if let Err(e) = capture.check(t) {
            eprintln!("{e}; nothing was run");
            return ExitCode::from(2);
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("--pcap {}: cannot create ({e}); nothing was run", dir.display());
            return ExitCode::from(2);
        }
        if let Err(code) = check_writable("--pcap", &dir.join(".anyedge-write-check")) {
            return code;
        }
    }
    let options = anyedge_sim::Options { pcap, capture, auth, threads };
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
