//! `anyedge sweep`: a design's variants compared over seeds — the grid of every
//! combination of the `--set PATH=V1,V2,…` values, each variant run for N seeds in the
//! simulator, and per variant the chosen metrics as the median and spread over seeds; a
//! table, a JSON report and an HTML page with one plot per metric against each varied
//! parameter. Sharded (`--shard I/N`) it writes a part file for `anyedge merge`.

use anyhow::anyhow;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyedge_sim::report::Report;
use anyedge_topology::{Override, Topology};
use serde::{Deserialize, Serialize};

use crate::shard::{self, Origin, Part};

mod page;
use page::page;

pub struct Args {
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub seeds: u64,
    pub from: u64,
    pub metrics: Option<String>,
    pub jobs: Option<usize>,
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub shard: Option<String>,
}

/// The most runs (variants × seeds) one sweep holds.
const RUNS_MAX: u64 = 10_000_000;

/// One varied field and its values, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub path: String,
    pub values: Vec<String>,
}

/// `PATH=V1,V2,…`.
/// `V1,V2,…` at commas outside brackets: a value may be a list, `[ntt, cogent]`.
fn split_values(text: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_set(text: &str) -> anyhow::Result<Param> {
    let (path, values) = text.split_once('=').ok_or_else(|| anyhow!("--set {text}: write it as PATH=V1,V2,…"))?;
    let values: Vec<String> = split_values(values).into_iter().map(|v| v.trim().to_string()).collect();
    if path.trim().is_empty() || values.iter().any(String::is_empty) {
        return Err(anyhow!("--set {text}: a path and one or more values, none empty"));
    }
    let mut seen = values.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != values.len() {
        return Err(anyhow!("--set {text}: a value is given twice"));
    }
    Ok(Param { path: path.trim().to_string(), values })
}

/// What a sweep measures in each run, from the run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    pub kind: MetricKind,
    /// `@GROUP`: that client group only (its worst traffic class); else the worst group.
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    P50,
    P99,
    Loss,
    RecoveryP50,
    RecoveryMax,
    DetectedMs,
    BackendChanged,
    FalseDowns,
}

const KINDS: [(MetricKind, &str, &str); 8] = [
    (MetricKind::P50, "p50", "anycast round trip p50, ms (the highest of any client group and class)"),
    (MetricKind::P99, "p99", "anycast round trip p99, ms (the highest of any client group and class)"),
    (MetricKind::Loss, "loss", "anycast loss, % (the highest of any client group and class)"),
    (
        MetricKind::RecoveryP50,
        "recovery_p50",
        "a fault's affected flows' median wait for a reply, ms (the longest fault)",
    ),
    (MetricKind::RecoveryMax, "recovery_max", "a fault's longest wait for a reply, ms (the longest fault)"),
    (MetricKind::DetectedMs, "detected_ms", "fault to the first node noticing it, ms (the slowest fault)"),
    (MetricKind::BackendChanged, "backend_changed", "flows that moved to another backend (all faults)"),
    (MetricKind::FalseDowns, "false_downs", "backends marked unhealthy that no fault names"),
];

impl Metric {
    pub fn name(&self) -> String {
        let base = KINDS.iter().find(|k| k.0 == self.kind).map_or("?", |k| k.1);
        match &self.group {
            Some(g) => format!("{base}@{g}"),
            None => base.to_string(),
        }
    }

    fn parse(text: &str, t: &Topology) -> anyhow::Result<Metric> {
        let (base, group) = match text.split_once('@') {
            Some((b, g)) => (b, Some(g.to_string())),
            None => (text, None),
        };
        let known = || KINDS.iter().map(|k| k.1).collect::<Vec<_>>().join(", ");
        let kind = KINDS
            .iter()
            .find(|k| k.1 == base)
            .map(|k| k.0)
            .ok_or_else(|| anyhow!("--metric {text}: not a metric (one of {})", known()))?;
        let per_group = matches!(kind, MetricKind::P50 | MetricKind::P99 | MetricKind::Loss);
        match &group {
            Some(_) if kind == MetricKind::FalseDowns => {
                return Err(anyhow!("--metric {text}: false_downs counts every backend, it takes no @"));
            }
            Some(g) if per_group && !t.clients.iter().any(|c| &c.name == g) => {
                return Err(anyhow!("--metric {text}: the file has no client group `{g}`"));
            }
            Some(f) if !per_group && !t.faults.iter().any(|x| x.what.contains(f.as_str())) => {
                return Err(anyhow!(
                    "--metric {text}: no fault of the file is `{f}` (e.g. `@pop/paris` picks `down pop/paris`)"
                ));
            }
            _ => {}
        }
        Ok(Metric { kind, group })
    }

    /// This metric in one run's report (None: nothing to measure, e.g. no fault).
    fn of(&self, r: &Report) -> Option<f64> {
        let paths = || {
            r.clients
                .iter()
                .filter(|c| self.group.as_ref().is_none_or(|g| &c.name == g))
                .flat_map(|c| &c.traffic)
                .map(|t| &t.anycast)
        };
        let highest =
            |xs: &mut dyn Iterator<Item = f64>| xs.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        // `@TEXT` on a fault metric: the faults whose description holds TEXT.
        let faults = || r.faults.iter().filter(|f| self.group.as_ref().is_none_or(|g| f.what.contains(g.as_str())));
        match self.kind {
            MetricKind::P50 => highest(&mut paths().filter_map(|p| p.rtt_ms.as_ref().map(|q| q.p50))),
            MetricKind::P99 => highest(&mut paths().filter_map(|p| p.rtt_ms.as_ref().map(|q| q.p99))),
            MetricKind::Loss => highest(&mut paths().filter(|p| p.sent > 0).map(|p| p.loss_pct)),
            MetricKind::RecoveryP50 => highest(&mut faults().filter_map(|f| f.recovery_ms.as_ref().map(|x| x.p50))),
            MetricKind::RecoveryMax => highest(&mut faults().filter_map(|f| f.recovery_ms.as_ref().map(|x| x.max))),
            MetricKind::DetectedMs => highest(&mut faults().filter_map(|f| f.detected_ms)),
            MetricKind::BackendChanged => Some(faults().map(|f| f.flows_backend_changed as f64).sum()),
            MetricKind::FalseDowns => Some(
                r.backends
                    .iter()
                    .filter(|b| !r.faults.iter().any(|f| f.what.contains(&b.address)))
                    .map(|b| b.health.iter().filter(|h| h.state == "unhealthy").count() as f64)
                    .sum(),
            ),
        }
    }
}

const DEFAULT_METRICS: &str = "p50,p99,loss,recovery_max,detected_ms,false_downs";

/// One run of one variant with one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub variant: usize,
    pub seed: u64,
    /// One per metric, in `--metric` order; null when the run had nothing to measure.
    pub values: Vec<Option<f64>>,
    /// Invariants the run broke (empty when none).
    pub failures: Vec<String>,
}

/// The options a sweep part records (parts with other options do not merge).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Options {
    params: Vec<Param>,
    metrics: Vec<String>,
    from: u64,
    seeds: u64,
}

/// The report: a function of the file, the build and the options (no wall time), so a
/// merge of shards writes the same bytes as one process.
#[derive(Serialize)]
struct SweepReport {
    file: String,
    from: u64,
    seeds: u64,
    params: Vec<Param>,
    metrics: Vec<MetricInfo>,
    variants: Vec<VariantReport>,
}

#[derive(Serialize)]
struct MetricInfo {
    name: String,
    means: String,
}

#[derive(Serialize)]
struct VariantReport {
    /// The value of each parameter, in `params` order.
    set: Vec<String>,
    metrics: Vec<Spread>,
    failed: Vec<FailedRun>,
}

/// One metric of one variant over its seeds.
#[derive(Serialize, Clone)]
struct Spread {
    name: String,
    /// Seeds that had something to measure.
    runs: usize,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Serialize)]
struct FailedRun {
    seed: u64,
    failures: Vec<String>,
    replay: String,
}

/// Every combination of the values, the last parameter varying fastest.
fn grid(params: &[Param]) -> Vec<Vec<String>> {
    let mut rows = vec![Vec::new()];
    for p in params {
        rows = rows
            .into_iter()
            .flat_map(|row| {
                p.values.iter().map(move |v| {
                    let mut r = row.clone();
                    r.push(v.clone());
                    r
                })
            })
            .collect();
    }
    rows
}

fn bad_input(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("sweep: {what}");
    ExitCode::from(2)
}

/// Everything checked before a run: the grid's worlds and the metrics.
struct Plan {
    options: Options,
    metrics: Vec<Metric>,
    worlds: Vec<Topology>,
}

fn plan(args: &Args) -> anyhow::Result<Plan> {
    if args.seeds == 0 {
        return Err(anyhow!("--seeds 0: give at least one seed"));
    }
    let text = std::fs::read_to_string(&args.file).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let file = args.file.display().to_string();
    let base = anyedge_topology::parse_str(&file, &text).map_err(|e| anyhow!("{e}"))?;
    let params: Vec<Param> = args.sets.iter().map(|s| parse_set(s)).collect::<Result<_, _>>()?;
    if let Some(p) = params.iter().enumerate().find(|(i, p)| params[..*i].iter().any(|q| q.path == p.path)) {
        return Err(anyhow!("--set {}: the path is set twice", p.1.path));
    }
    let metrics_text = args.metrics.as_deref().unwrap_or(DEFAULT_METRICS);
    let metrics: Vec<Metric> = metrics_text
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| Metric::parse(m, &base))
        .collect::<Result<_, _>>()?;
    if metrics.is_empty() {
        return Err(anyhow!("--metric: name at least one metric"));
    }
    let rows = grid(&params);
    let runs = (rows.len() as u64).saturating_mul(args.seeds);
    if runs > RUNS_MAX {
        return Err(anyhow!("{} variants × {} seeds is {runs} runs: at most {RUNS_MAX}", rows.len(), args.seeds));
    }
    let mut worlds = Vec::with_capacity(rows.len());
    for row in &rows {
        let sets: Vec<Override> =
            params.iter().zip(row).map(|(p, v)| Override { path: p.path.clone(), value: v.clone() }).collect();
        let t = anyedge_topology::parse_with(&file, &text, &sets)
            .map_err(|e| anyhow!("variant {}: {e}", describe(&params, row)))?;
        worlds.push(t);
    }
    let names = metrics.iter().map(Metric::name).collect();
    Ok(Plan { options: Options { params, metrics: names, from: args.from, seeds: args.seeds }, metrics, worlds })
}

/// `path=value path=value`.
fn describe(params: &[Param], row: &[String]) -> String {
    params.iter().zip(row).map(|(p, v)| format!("{}={v}", p.path)).collect::<Vec<_>>().join(" ")
}

pub fn run(args: Args) -> ExitCode {
    let plan = match plan(&args) {
        Ok(p) => p,
        Err(e) => return bad_input(e),
    };
    let shard = match shard::chosen(args.shard.as_deref()) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    if shard.is_some() && (args.json.is_none() || args.html.is_some()) {
        return bad_input("a shard writes a part file: give --json PART and no --html (`anyedge merge` writes both)");
    }
    let total = plan.worlds.len() as u64 * args.seeds;
    let (start, end) = shard.map_or((0, total), |s| s.block(total));
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let started = std::time::Instant::now();
    let results = run_items(&plan, args.from, args.seeds, (start, end), jobs);
    let wall_s = started.elapsed().as_secs_f64();
    let file = args.file.display().to_string();
    match shard {
        Some(s) => {
            let options = serde_json::to_value(&plan.options).unwrap_or_default();
            let origin = match Origin::new("sweep", &args.file, options) {
                Ok(o) => o,
                Err(e) => return bad_input(e),
            };
            let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
            println!(
                "sweep {file} (shard {}/{}: {}): {} runs, {failed} broke an invariant, {wall_s:.1} s on {jobs} threads",
                s.index,
                s.count,
                if end > start { format!("runs {start} to {}", end - 1) } else { "no runs".into() },
                results.len()
            );
            let part = Part { anyedge_part: shard::PART_VERSION, origin, shard: s, items: (start, end), results };
            if let Err(e) = part.write(args.json.as_deref().unwrap_or(Path::new("part.json"))) {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        None => {
            eprintln!("sweep: {} runs in {wall_s:.1} s on {jobs} threads", results.len());
            finish(&file, &plan.options, results, args.json.as_deref(), args.html.as_deref())
        }
    }
}

/// Runs items `start..end` (see [`item`]) on `jobs`
/// threads; results in item order.
fn run_items(plan: &Plan, from: u64, seeds: u64, (start, end): (u64, u64), jobs: usize) -> Vec<RunResult> {
    let tty = std::io::stderr().is_terminal();
    let results = anyedge_sim::parallel::in_order(
        (start, end),
        jobs,
        |k| {
            let (variant, seed) = item(from, seeds, k);
            run_one(plan, variant, seed)
        },
        |n, _| {
            if tty {
                eprint!("\r{n}/{} runs", end - start);
            }
        },
    );
    if tty && end > start {
        eprintln!();
    }
    results
}

/// Item `k` of a sweep: variant `k / seeds` with seed `from + k % seeds`.
fn item(from: u64, seeds: u64, k: u64) -> (usize, u64) {
    ((k / seeds) as usize, from + k % seeds)
}

fn run_one(plan: &Plan, variant: usize, seed: u64) -> RunResult {
    let mut t = plan.worlds[variant].clone();
    t.seed = seed;
    match anyedge_sim::run_report(&t, |_| {}) {
        Ok(o) => RunResult {
            variant,
            seed,
            values: plan.metrics.iter().map(|m| m.of(&o.report).map(anyedge_sim::report::ms3)).collect(),
            failures: o.report.violations.clone(),
        },
        Err(e) => RunResult {
            variant,
            seed,
            values: vec![None; plan.metrics.len()],
            failures: vec![format!("cannot simulate: {}", e.0)],
        },
    }
}

/// The nearest-rank median (the lower middle) of sorted values.
fn spread(name: &str, mut xs: Vec<f64>) -> Spread {
    xs.sort_by(f64::total_cmp);
    Spread {
        name: name.to_string(),
        runs: xs.len(),
        median: xs.get(xs.len().saturating_sub(1) / 2).copied(),
        min: xs.first().copied(),
        max: xs.last().copied(),
    }
}

/// The report of every run: printed as a table, written as JSON and HTML. The same for
/// one process and for a merge of its shards.
fn finish(file: &str, o: &Options, results: Vec<RunResult>, json: Option<&Path>, html: Option<&Path>) -> ExitCode {
    let rows = grid(&o.params);
    let mut variants: Vec<VariantReport> = Vec::with_capacity(rows.len());
    for (v, row) in rows.iter().enumerate() {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.variant == v).collect();
        let metrics = o
            .metrics
            .iter()
            .enumerate()
            .map(|(m, name)| spread(name, runs.iter().filter_map(|r| r.values.get(m).copied().flatten()).collect()))
            .collect();
        let failed = runs
            .iter()
            .filter(|r| !r.failures.is_empty())
            .map(|r| FailedRun {
                seed: r.seed,
                failures: r.failures.clone(),
                replay: replay(file, &o.params, row, r.seed),
            })
            .collect();
        variants.push(VariantReport { set: row.clone(), metrics, failed });
    }
    let metrics = o
        .metrics
        .iter()
        .map(|name| {
            let (base, group) = name.split_once('@').map_or((name.as_str(), None), |(b, g)| (b, Some(g)));
            let means = KINDS.iter().find(|k| k.1 == base).map_or("", |k| k.2);
            let means = match group {
                Some(f) if !matches!(base, "p50" | "p99" | "loss") => {
                    format!("{} (faults `{f}`)", means.split(" (").next().unwrap_or(means))
                }
                // "… (the highest of any client group and class)" → this group's classes.
                Some(g) => format!(
                    "{} (client group {g}, its highest of any traffic class)",
                    means.split(" (").next().unwrap_or(means)
                ),
                None => means.to_string(),
            };
            MetricInfo { name: name.clone(), means }
        })
        .collect();
    let report = SweepReport {
        file: file.to_string(),
        from: o.from,
        seeds: o.seeds,
        params: o.params.clone(),
        metrics,
        variants,
    };
    print!("{}", table(&report));
    let failed: usize = report.variants.iter().map(|v| v.failed.len()).sum();
    let json = json.map(|p| (p, serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"));
    for (path, text) in json.into_iter().chain(html.map(|p| (p, page(&report)))) {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("{}: cannot write: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The command that runs one variant with one seed again.
fn replay(file: &str, params: &[Param], row: &[String], seed: u64) -> String {
    let sets: String = params.iter().zip(row).map(|(p, v)| format!(" --set {}={v}", p.path)).collect();
    format!("anyedge sweep {file}{sets} --from {seed} --seeds 1")
}

fn fmt(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// One row per variant: its values, then each metric as `median [min–max]`.
fn table(r: &SweepReport) -> String {
    let mut head: Vec<String> = r.params.iter().map(|p| p.path.clone()).collect();
    head.extend(r.metrics.iter().map(|m| m.name.clone()));
    head.push("failed".into());
    let mut rows: Vec<Vec<String>> = vec![head];
    for v in &r.variants {
        let mut row = v.set.clone();
        row.extend(v.metrics.iter().map(|s| format!("{} [{}–{}]", fmt(s.median), fmt(s.min), fmt(s.max))));
        row.push(v.failed.len().to_string());
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!("sweep {}: {} variants × {} seeds from {}\n", r.file, r.variants.len(), r.seeds, r.from);
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    for v in &r.variants {
        for f in &v.failed {
            out += &format!("broke an invariant: seed {}: {} — {}\n", f.seed, f.failures.join("; "), f.replay);
        }
    }
    out
}

/// `anyedge merge` for sweep parts: the report one process would have written.
pub fn merge(parts: Vec<Part<RunResult>>, json: &Path, html: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (origin, o, results) = shard::join(
        parts,
        |o: &Options| grid(&o.params).len() as u64 * o.seeds,
        |o: &Options, k| item(o.from, o.seeds, k),
        |r: &RunResult| (r.variant, r.seed),
    )?;
    Ok(finish(&origin.file, &o, results, Some(json), html))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_may_be_a_list_whose_commas_do_not_split_the_values() {
        let p = parse_set("pops[madrid].announce_to=[ntt],[ntt, cogent]").expect("parses");
        assert_eq!(p.values, vec!["[ntt]", "[ntt, cogent]"]);
        assert_eq!(parse_set("a=1,2").expect("parses").values, vec!["1", "2"]);
        assert!(parse_set("a=[x],[x]").is_err(), "a value given twice");
    }

    #[test]
    fn the_grid_holds_every_combination_once_the_last_parameter_fastest() {
        let p =
            |path: &str, vs: &[&str]| Param { path: path.into(), values: vs.iter().map(|v| v.to_string()).collect() };
        let g = grid(&[p("a", &["1", "2"]), p("b", &["x", "y", "z"])]);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], ["1", "x"]);
        assert_eq!(g[1], ["1", "y"]);
        assert_eq!(g[5], ["2", "z"]);
        assert_eq!(grid(&[]), vec![Vec::<String>::new()], "no --set: the file itself, one variant");
    }

    #[test]
    fn a_set_is_a_path_and_distinct_values() {
        assert_eq!(parse_set("backbone.loss=0%,1%").unwrap().values, ["0%", "1%"]);
        for bad in ["backbone.loss", "=1,2", "a=1,,2", "a=1,1"] {
            assert!(parse_set(bad).unwrap_err().to_string().contains(bad), "{bad}");
        }
    }

    #[test]
    fn the_median_is_the_lower_middle_and_empty_is_nothing() {
        let s = spread("p99", vec![5.0, 1.0, 3.0, 4.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (Some(3.0), Some(1.0), Some(5.0), 4));
        let e = spread("p99", vec![]);
        assert_eq!((e.median, e.min, e.max, e.runs), (None, None, None, 0));
    }
}
