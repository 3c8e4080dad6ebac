//! `anyedge chaos`: the command around `anyedge_sim::chaos` — flags, progress bar, the
//! table of failing seeds with the command that replays each, and `--json`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyedge_sim::chaos::{self, FaultKind, SeedRun};
use serde::Serialize;

pub struct Args {
    pub file: PathBuf,
    pub seeds: u64,
    pub from: u64,
    pub jobs: Option<usize>,
    pub faults: Option<String>,
    pub duration: Option<String>,
    pub json: Option<PathBuf>,
    pub print_schedule: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    file: String,
    from: u64,
    seeds: u64,
    jobs: usize,
    kinds: Vec<&'static str>,
    passed: u64,
    failed: Vec<Failed<'a>>,
    wall_s: f64,
}

#[derive(Serialize)]
struct Failed<'a> {
    #[serde(flatten)]
    run: &'a SeedRun,
    replay: String,
}

fn bad_input(what: String) -> ExitCode {
    eprintln!("chaos: {what}");
    ExitCode::from(2)
}

pub fn run(args: Args) -> ExitCode {
    if args.seeds == 0 {
        return bad_input("--seeds 0: give at least one seed".into());
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
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let total = args.seeds;
    let runs = chaos::sweep(&t, &plan, args.from, args.seeds, jobs, |done, failed| {
        if tty {
            let filled = (done * 25 / total) as usize;
            eprint!("\r[{}{}] {done}/{total} seeds, {failed} failing", "#".repeat(filled), ".".repeat(25 - filled));
            if done == total {
                eprintln!();
            }
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    let replay = |seed: u64| replay_command(&args, seed);
    let failed: Vec<Failed<'_>> =
        runs.iter().filter(|r| !r.failures.is_empty()).map(|run| Failed { run, replay: replay(run.seed) }).collect();
    let kinds: Vec<&'static str> = plan.kinds.iter().map(|k| k.name()).collect();
    println!(
        "chaos {}: {} seeds from {} ({}), {} passed, {} failed, {:.1} s on {jobs} threads",
        args.file.display(),
        total,
        args.from,
        kinds.join(","),
        runs.len() - failed.len(),
        failed.len(),
        wall_s
    );
    if !failed.is_empty() {
        println!("\n{:<8} {:>6}  {:<70} replay", "seed", "faults", "first failure");
        for f in &failed {
            let first = f.run.failures.first().map_or("", String::as_str);
            let first: String = first.chars().take(70).collect();
            println!("{:<8} {:>6}  {:<70} {}", f.run.seed, f.run.faults, first, f.replay);
        }
    }
    if let Some(path) = &args.json {
        let summary = Summary {
            file: args.file.display().to_string(),
            from: args.from,
            seeds: total,
            jobs,
            kinds,
            passed: (runs.len() - failed.len()) as u64,
            failed,
            wall_s,
        };
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("{}: cannot write: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if runs.iter().any(|r| !r.failures.is_empty()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// `pop,clb,…` → kinds; an unknown name is an error listing the known ones.
fn parse_kinds(text: &str) -> Result<Vec<FaultKind>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            FaultKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = chaos::KINDS.iter().map(|k| k.name()).collect();
                format!("--faults {name}: not a fault kind (one of {})", known.join(", "))
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
