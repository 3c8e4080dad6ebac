//! The `anyedge` command: `sim` replays a topology file in the deterministic simulator,
//! `validate` checks one.

mod bench;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyedge_sim::topology::{self, Topology};
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
        /// Write the JSON report here (byte-identical for the same file and seed).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write run statistics (events, packets, wall time, rates) here as JSON.
        #[arg(long)]
        stats: Option<PathBuf>,
    },
    /// Check a topology file; print every problem as FILE:LINE:COL: field: reason.
    Validate {
        /// Topology file (YAML).
        file: PathBuf,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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

/// Draws a progress bar on stderr when it is a terminal.
fn progress_bar() -> impl FnMut(f64) {
    let tty = std::io::stderr().is_terminal();
    let mut last = usize::MAX;
    move |done: f64| {
        if !tty {
            return;
        }
        let pct = (done * 100.0).round() as usize;
        if pct != last {
            last = pct;
            let filled = pct / 4;
            eprint!("\r[{}{}] {pct:>3}%", "#".repeat(filled), ".".repeat(25 - filled.min(25)));
            if pct >= 100 {
                eprint!("\r{}\r", " ".repeat(40));
            }
        }
    }
}

fn simulate(file: &std::path::Path, t: &Topology, report: Option<PathBuf>, stats: Option<PathBuf>) -> ExitCode {
    let outcome = match anyedge_sim::run(t, progress_bar()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{}: cannot simulate: {}", file.display(), e.0);
            eprintln!("replay: anyedge sim {} --seed {}", file.display(), t.seed);
            return ExitCode::from(2);
        }
    };
    print!("{}", outcome.report.table());
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
    ExitCode::SUCCESS
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
        Command::Bench { which: BenchCommand::Maglev { backends, table, json } } => {
            let figures = match bench::maglev(backends, table) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("bench maglev: {e}");
                    return ExitCode::from(2);
                }
            };
            println!(
                "maglev N={} M={}: max/avg {:.4}, disruption {:.3}% (ideal {:.3}%), build {:.3} ms",
                figures.backends,
                figures.table,
                figures.max_over_avg,
                figures.disruption_pct,
                figures.ideal_disruption_pct,
                figures.build_ms
            );
            if let Some(path) = json
                && let Err(e) = bench::write_json(&path, &figures)
            {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Sim { file, seed, report, stats } => {
            let mut t = match load(&file) {
                Ok(t) => t,
                Err(code) => return code,
            };
            if let Some(seed) = seed {
                t.seed = seed;
            }
            simulate(&file, &t, report, stats)
        }
    }
}
