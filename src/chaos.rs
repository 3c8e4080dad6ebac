//! `anyedge chaos`: the command around `anyedge_sim::chaos` — flags, progress bar, the
//! table of failing seeds with the command that replays each, and `--json`.

use anyhow::anyhow;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyedge_sim::chaos::{self, FaultKind};
use serde::{Deserialize, Serialize};

use crate::shard::{self, Origin, Part, Shard};

pub struct Args {
    pub file: PathBuf,
    pub seeds: u64,
    pub from: u64,
    pub jobs: Option<usize>,
    pub faults: Option<String>,
    pub duration: Option<String>,
    pub json: Option<PathBuf>,
    pub print_schedule: bool,
    /// `I/N`: run the I-th of N blocks of the seeds and write a part for `anyedge merge`.
    pub shard: Option<String>,
}

/// The report `--json` writes: a function of the file, the build and the options only
/// (no wall time, no thread count), so shards merged give the same bytes as one process.
#[derive(Serialize)]
struct Summary {
    file: String,
    from: u64,
    seeds: u64,
    kinds: Vec<String>,
    passed: u64,
    failed: Vec<Ran>,
}

/// One seed as reports and parts keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ran {
    seed: u64,
    /// Faults in its schedule.
    faults: usize,
    /// Broken invariants and checks; empty when the seed passed.
    failures: Vec<String>,
    /// The command that replays it exactly.
    replay: String,
}

/// The options a chaos part records (a merge refuses parts whose options differ).
#[derive(Serialize, Deserialize)]
struct Options {
    from: u64,
    seeds: u64,
    faults: Option<String>,
    duration: Option<String>,
    kinds: Vec<String>,
}

fn bad_input(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("chaos: {what}");
    ExitCode::from(2)
}

pub fn run(args: Args) -> ExitCode {
    if args.seeds == 0 {
        return bad_input("--seeds 0: give at least one seed");
    }
    let mut t = match anyedge_topology::load(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = &args.duration {
        match anyedge_topology::parse_duration_ns(d) {
            Ok(ns) if ns <= 24 * 3600 * 1_000_000_000 => t.duration_ns = ns,
            Ok(_) => return bad_input(format!("--duration {d}: at most 24h")),
            Err(e) => return bad_input(format!("--duration {d}: {e}")),
        }
    }
    let requested = match args.faults.as_deref().map(parse_kinds).transpose() {
        Ok(k) => k,
        Err(e) => return bad_input(e),
    };
    let plan = match chaos::plan(&t, requested.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad_input(format!("{}: {e}", args.file.display())),
    };
    if args.print_schedule {
        for seed in args.from..args.from.saturating_add(args.seeds) {
            let drawn = chaos::seeded(&t, &plan, seed);
            println!("# seed {seed}: run with `anyedge sim FILE --seed {seed}` after these faults replace the file's");
            print!("{}", chaos::to_yaml(&drawn, &drawn.faults));
        }
        return ExitCode::SUCCESS;
    }
    let shard = match shard::chosen(args.shard.as_deref()) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    if shard.is_some() && args.json.is_none() {
        return bad_input("a shard writes a part file: give --json PART (then `anyedge merge PARTS… --json OUT`)");
    }
    let kinds: Vec<String> = plan.kinds.iter().map(|k| k.name().to_string()).collect();
    let options = Options {
        from: args.from,
        seeds: args.seeds,
        faults: args.faults.clone(),
        duration: args.duration.clone(),
        kinds: kinds.clone(),
    };
    let origin =
        match shard.map(|_| Origin::new("chaos", &args.file, serde_json::to_value(&options).unwrap_or_default())) {
            Some(Err(e)) => return bad_input(e),
            Some(Ok(o)) => Some(o),
            None => None,
        };
    let (start, end) = shard.map_or((0, args.seeds), |s| s.block(args.seeds));
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let total = end - start;
    let runs = chaos::sweep(&t, &plan, args.from + start, total, jobs, |done, failed| {
        if tty && total > 0 {
            let filled = (done * 25 / total) as usize;
            eprint!("\r[{}{}] {done}/{total} seeds, {failed} failing", "#".repeat(filled), ".".repeat(25 - filled));
            if done == total {
                eprintln!();
            }
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    let ran: Vec<Ran> = runs
        .into_iter()
        .map(|r| Ran { seed: r.seed, faults: r.faults, failures: r.failures, replay: replay_command(&args, r.seed) })
        .collect();
    let what = match shard {
        Some(Shard { index, count }) if end > start => {
            format!(" (shard {index}/{count}: seeds {} to {})", args.from + start, args.from + end - 1)
        }
        Some(Shard { index, count }) => format!(" (shard {index}/{count}: no seeds)"),
        None => String::new(),
    };
    let failed = print_outcome(
        &args.file.display().to_string(),
        &options,
        &ran,
        &format!("{what}, {wall_s:.1} s on {jobs} threads"),
    );
    let written = match (&args.json, origin, shard) {
        (Some(path), Some(origin), Some(shard)) => {
            Part { anyedge_part: shard::PART_VERSION, origin, shard, items: (start, end), results: ran }.write(path)
        }
        (Some(path), ..) => write_summary(path, &args.file.display().to_string(), &options, ran),
        _ => Ok(()),
    };
    if let Err(e) = written {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Prints the one-line outcome and the table of failing seeds; true when one failed.
fn print_outcome(file: &str, o: &Options, ran: &[Ran], tail: &str) -> bool {
    let failed: Vec<&Ran> = ran.iter().filter(|r| !r.failures.is_empty()).collect();
    println!(
        "chaos {file}: {} seeds from {} ({}), {} passed, {} failed{tail}",
        ran.len(),
        ran.first().map_or(o.from, |r| r.seed),
        o.kinds.join(","),
        ran.len() - failed.len(),
        failed.len(),
    );
    if !failed.is_empty() {
        println!("\n{:<8} {:>6}  {:<70} replay", "seed", "faults", "first failure");
        for f in &failed {
            let first = f.failures.first().map_or("", String::as_str);
            let first: String = first.chars().take(70).collect();
            println!("{:<8} {:>6}  {:<70} {}", f.seed, f.faults, first, f.replay);
        }
    }
    !failed.is_empty()
}

/// Writes the report of every seed: one process's, or the merge of its shards'.
fn write_summary(path: &Path, file: &str, o: &Options, ran: Vec<Ran>) -> anyhow::Result<()> {
    let passed = ran.iter().filter(|r| r.failures.is_empty()).count() as u64;
    let summary = Summary {
        file: file.to_string(),
        from: o.from,
        seeds: o.seeds,
        kinds: o.kinds.clone(),
        passed,
        failed: ran.into_iter().filter(|r| !r.failures.is_empty()).collect(),
    };
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
    std::fs::write(path, text).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
}

/// `anyedge merge` for chaos parts: the report one process would have written for the
/// same seeds, or why the parts do not make one run.
pub fn merge(parts: Vec<Part<Ran>>, json: &Path) -> anyhow::Result<bool> {
    let (origin, options, ran) =
        shard::join(parts, |o: &Options| o.seeds, |o: &Options, k| o.from + k, |r: &Ran| r.seed)?;
    let failed = print_outcome(&origin.file, &options, &ran, " (merged)");
    write_summary(json, &origin.file, &options, ran)?;
    Ok(failed)
}

/// `pop,clb,…` → kinds; an unknown name is an error listing the known ones.
fn parse_kinds(text: &str) -> anyhow::Result<Vec<FaultKind>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            FaultKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = chaos::KINDS.iter().map(|k| k.name()).collect();
                anyhow!("--faults {name}: not a fault kind (one of {})", known.join(", "))
            })
        })
        .collect()
}

/// The command that replays one seed exactly (its schedule is drawn from the seed).
fn replay_command(args: &Args, seed: u64) -> String {
    let mut cmd = format!("anyedge chaos {} --from {seed} --seeds 1", shown(&args.file));
    if args.duration.is_none() && args.faults.is_none() {
        return cmd;
    }
    if let Some(f) = &args.faults {
        cmd += &format!(" --faults {f}");
    }
    if let Some(d) = &args.duration {
        cmd += &format!(" --duration {d}");
    }
    cmd
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}
