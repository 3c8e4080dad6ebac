//! `anyedge calibrate`: fit the delay model to measured round trips from a CSV file and
//! print it as the `delay:` section a topology file takes, with how far it is off — on
//! the pairs it was fitted on and on a third it never saw.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyedge_ccn::delay::{self, Area, DelayModel, ErrorSummary, Measured};
use anyedge_ccn::geo::great_circle_km;
use serde::Serialize;

pub struct Args {
    pub file: PathBuf,
    pub name: String,
    pub source: Option<String>,
    pub holdout: u32,
    pub pairs: bool,
    pub areas: bool,
    pub topology: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

/// Pairs at least this far apart are "long" in the error summary.
const LONG_KM: f64 = 1000.0;
/// Columns a CSV must have; others (names, dates) are carried along and ignored.
const COLUMNS: [&str; 5] = ["a_lat", "a_lon", "b_lat", "b_lon", "rtt_ms"];

/// One row of the file: a measurement and the names the file gives its ends, if any.
#[derive(Debug, Clone)]
pub struct MeasuredPair {
    pub line: usize,
    pub a_name: String,
    pub b_name: String,
    pub m: Measured,
}

/// Reads a measurement CSV. Every bad row is named by its line; any bad row fails the file.
pub fn read_csv(path: &Path, text: &str) -> Result<Vec<MeasuredPair>, Vec<String>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Err(vec![format!("{}: empty file (expected a header with {})", path.display(), COLUMNS.join(","))]);
    };
    let head: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| head.iter().position(|h| *h == name);
    let missing: Vec<_> = COLUMNS.iter().filter(|c| col(c).is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|c| c.to_string()).collect();
        return Err(vec![format!("{}:1: header lacks column(s) {}", path.display(), names.join(", "))]);
    }
    let idx: Vec<usize> = COLUMNS.iter().filter_map(|c| col(c)).collect();
    let (name_a, name_b) = (col("a"), col("b"));
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        match parse_row(&cells, &idx) {
            Ok(m) => {
                let name = |c: Option<usize>| c.and_then(|c| cells.get(c)).map_or(String::new(), |s| s.to_string());
                rows.push(MeasuredPair { line: i + 1, a_name: name(name_a), b_name: name(name_b), m });
            }
            Err(why) => errors.push(format!("{}:{}: {why}", path.display(), i + 1)),
        }
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push(format!("{}: no measurements after the header", path.display()));
    }
    if errors.is_empty() { Ok(rows) } else { Err(errors) }
}

fn parse_row(cells: &[&str], idx: &[usize]) -> Result<Measured, String> {
    let mut v = [0.0; 5];
    for (k, &c) in idx.iter().enumerate() {
        let cell =
            cells.get(c).ok_or_else(|| format!("{}: missing (the row has {} cells)", COLUMNS[k], cells.len()))?;
        v[k] = cell.parse::<f64>().map_err(|_| format!("{}: `{cell}` is not a number", COLUMNS[k]))?;
        if !v[k].is_finite() {
            return Err(format!("{}: `{cell}` is not a finite number", COLUMNS[k]));
        }
    }
    let [a_lat, a_lon, b_lat, b_lon, rtt_ms] = v;
    for (what, lat) in [("a_lat", a_lat), ("b_lat", b_lat)] {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(format!("{what}: {lat} is outside -90–90"));
        }
    }
    for (what, lon) in [("a_lon", a_lon), ("b_lon", b_lon)] {
        if !(-180.0..=180.0).contains(&lon) {
            return Err(format!("{what}: {lon} is outside -180–180"));
        }
    }
    if rtt_ms <= 0.0 || rtt_ms > 10_000.0 {
        return Err(format!("rtt_ms: {rtt_ms} is outside 0–10000 ms"));
    }
    let (a, b) = ([a_lat, a_lon], [b_lat, b_lon]);
    let light_ms = delay::fibre_rtt_ms(great_circle_km(a, b));
    if rtt_ms < light_ms {
        return Err(format!("rtt_ms: {rtt_ms} ms is faster than light in fibre over that distance ({light_ms:.1} ms)"));
    }
    Ok(Measured { a, b, rtt_ms })
}

/// The split: every `holdout`-th row (counting from the second of each `holdout`) is held
/// out of the fit and only measured against; 0 holds nothing out.
fn split(rows: &[MeasuredPair], holdout: u32) -> (Vec<Measured>, Vec<Measured>) {
    let (mut fit, mut test) = (Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        if held_out(i, holdout) { test.push(r.m.clone()) } else { fit.push(r.m.clone()) }
    }
    (fit, test)
}

/// Whether row `i` is one of those held out of the fit.
fn held_out(i: usize, holdout: u32) -> bool {
    holdout > 1 && i % holdout as usize == 1
}

#[derive(Serialize)]
struct Summary {
    pairs: usize,
    median_pct: f64,
    p90_pct: f64,
    bias_pct: f64,
}

impl From<ErrorSummary> for Summary {
    fn from(e: ErrorSummary) -> Summary {
        Summary { pairs: e.pairs, median_pct: pct(e.median), p90_pct: pct(e.p90), bias_pct: pct(e.bias) }
    }
}

fn pct(v: f64) -> f64 {
    (v * 1000.0).round() / 10.0
}

#[derive(Serialize)]
struct PairRow {
    line: usize,
    a: String,
    b: String,
    km: f64,
    areas: String,
    held_out: bool,
    measured_ms: f64,
    predicted_ms: f64,
    error_pct: f64,
}

#[derive(Serialize)]
struct JsonOut {
    file: String,
    model: String,
    fitted: [Summary; 2],
    held_out: [Summary; 2],
    pairs: Vec<PairRow>,
}

/// Errors on long (≥ 1,000 km) and short pairs.
fn by_length(model: &DelayModel, rows: &[Measured]) -> [ErrorSummary; 2] {
    let (long, short): (Vec<Measured>, Vec<Measured>) =
        rows.iter().cloned().partition(|m| great_circle_km(m.a, m.b) >= LONG_KM);
    [delay::errors(model, &long), delay::errors(model, &short)]
}

/// One pair of areas' parameters as the model's YAML writes them.
fn to_params(p: &delay::PathParams) -> String {
    let via = p.via.as_deref().map_or(String::new(), |h| format!(", via: {h}"));
    format!("stretch: {}, overhead: {}us{via}", p.stretch, (p.overhead_ms * 1000.0).round() as u64)
}

/// The model as the `delay:` section of a topology file (what `BUILTIN` calibrations are).
pub fn to_yaml(model: &DelayModel) -> String {
    let mut out = String::new();
    let params = to_params;
    let _ = writeln!(out, "delay:");
    let _ = writeln!(out, "  name: {}", model.name);
    let _ = writeln!(out, "  source: \"{}\"", model.source.replace('"', "'"));
    let _ = writeln!(out, "  default: {{ {} }}", params(&model.default));
    if !model.pairs.is_empty() {
        let _ = writeln!(out, "  pairs:");
        for ((a, b), p) in &model.pairs {
            let _ = writeln!(out, "    - {{ between: [{a}, {b}], {} }}", params(p));
        }
    }
    out
}

fn summary_comment(out: &mut String, what: &str, s: &[ErrorSummary; 2]) {
    for (len, e) in ["≥ 1000 km", "< 1000 km"].iter().zip(s) {
        let _ = writeln!(
            out,
            "#   {what:<9} {len}: {:>4} pairs, median error {:>5.1} %, p90 {:>5.1} %, bias {:>+5.1} %",
            e.pairs,
            pct(e.median),
            pct(e.p90),
            pct(e.bias)
        );
    }
}

pub fn run(args: Args) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let rows = match read_csv(&args.file, &text) {
        Ok(rows) => rows,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let source = args.source.unwrap_or_else(|| format!("fitted on {}", args.file.display()));
    let (fit_rows, test_rows) = split(&rows, args.holdout);
    let model = delay::fit(&args.name, &source, &fit_rows);
    let fitted = by_length(&model, &fit_rows);
    let held = by_length(&model, &test_rows);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# anyedge calibrate {} ({} pairs; every {}th held out of the fit)",
        args.file.display(),
        rows.len(),
        args.holdout
    );
    summary_comment(&mut out, "fitted", &fitted);
    if !test_rows.is_empty() {
        summary_comment(&mut out, "held out", &held);
    }
    let _ = writeln!(out, "# Put under `internet:` or `backbone:` in a topology file.");
    out.push_str(&to_yaml(&model));
    print!("{out}");

    let table: Vec<PairRow> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let predicted = model.rtt_ms(r.m.a, r.m.b);
            PairRow {
                line: r.line,
                a: r.a_name.clone(),
                b: r.b_name.clone(),
                km: great_circle_km(r.m.a, r.m.b).round(),
                areas: format!("{}/{}", Area::of(r.m.a), Area::of(r.m.b)),
                held_out: held_out(i, args.holdout),
                measured_ms: r.m.rtt_ms,
                predicted_ms: (predicted * 10.0).round() / 10.0,
                error_pct: pct((predicted - r.m.rtt_ms) / r.m.rtt_ms),
            }
        })
        .collect();
    if args.pairs {
        println!(
            "\n{:>5}  {:<24} {:<24} {:>6} {:<30} {:>9} {:>9} {:>7}",
            "line", "a", "b", "km", "areas", "measured", "predicted", "error"
        );
        for p in &table {
            let held = if p.held_out { " (held out)" } else { "" };
            println!(
                "{:>5}  {:<24} {:<24} {:>6} {:<30} {:>9.1} {:>9.1} {:>+6.1}%{held}",
                p.line, p.a, p.b, p.km, p.areas, p.measured_ms, p.predicted_ms, p.error_pct
            );
        }
    }
    if args.areas {
        print!("{}", area_table(&model, &rows, args.holdout));
    }
    if let Some(path) = &args.topology
        && let Err(e) = print_topology_pairs(path, &model)
    {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    if let Some(path) = &args.json {
        let out = JsonOut {
            file: args.file.display().to_string(),
            model: to_yaml(&model),
            fitted: fitted.map(Summary::from),
            held_out: held.map(Summary::from),
            pairs: table,
        };
        let text = serde_json::to_string_pretty(&out).expect("plain data serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// The error per pair of areas on the pairs held out of the fit (all pairs when nothing
/// is held out), long and short apart, with the parameters the pair of areas got.
fn area_table(model: &DelayModel, rows: &[MeasuredPair], holdout: u32) -> String {
    let mut by_area: std::collections::BTreeMap<(Area, Area), Vec<Measured>> = Default::default();
    for (i, r) in rows.iter().enumerate() {
        if holdout <= 1 || held_out(i, holdout) {
            by_area.entry(delay::area_key(Area::of(r.m.a), Area::of(r.m.b))).or_default().push(r.m.clone());
        }
    }
    let mut out = String::new();
    let what = if holdout > 1 { "held-out" } else { "all" };
    let _ = writeln!(out, "\nerror per pair of areas ({what} pairs; median / p90 / bias, %)");
    let _ = writeln!(
        out,
        "{:<32} {:>6} {:>22} {:>6} {:>22}   model",
        "areas", "≥1000", "km: med/p90/bias", "<1000", "km: med/p90/bias"
    );
    for ((a, b), measured) in &by_area {
        let [long, short] = by_length(model, measured);
        let cell = |e: &ErrorSummary| match e.pairs {
            0 => format!("{:>6} {:>22}", 0, "-"),
            n => format!("{n:>6} {:>6.1} {:>6.1} {:>+7.1}", pct(e.median), pct(e.p90), pct(e.bias)),
        };
        let own = model.pairs.contains_key(&(*a, *b));
        let params = to_params(model.params(*a, *b));
        let params = if own { params } else { format!("{params} (default)") };
        let _ = writeln!(out, "{:<32} {} {}   {params}", format!("{a}/{b}"), cell(&long), cell(&short));
    }
    out
}

/// For a topology: each client group's round trip to each POP and to each VIP's home
/// region, as the file's internet model has it and as the fitted one would.
fn print_topology_pairs(path: &Path, model: &DelayModel) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("error: {}: {e}", path.display()))?;
    let t = anyedge_topology::parse_str(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    println!(
        "\n{}: client round trips, internet model `{}` against the fitted `{}` (no last mile)",
        path.display(),
        t.internet.delay.name,
        model.name
    );
    println!("{:<16} {:<16} {:>10} {:>10}", "client", "to", "file ms", "fitted ms");
    for c in &t.clients {
        let places = t.pops.iter().map(|p| (format!("pop/{}", p.name), p.location));
        let homes = t.regions.iter().map(|r| (format!("region/{}", r.name), r.location));
        for (name, at) in places.chain(homes) {
            println!(
                "{:<16} {:<16} {:>10.1} {:>10.1}",
                c.name,
                name,
                t.internet.delay.rtt_ms(c.location, at),
                model.rtt_ms(c.location, at)
            );
        }
    }
    Ok(())
}
