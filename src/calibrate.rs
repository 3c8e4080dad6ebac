//! `anyedge calibrate`: fit a delay model to measured round trips from a CSV file and
//! print it as the `delay:` section a topology file takes, with how far it is off — on
//! the pairs it was fitted on and on pairs it never saw. The per-place model (the
//! default) is scored on servers held out whole: each server's every pair left out of
//! the fit in turn, which says how it does at a city it never saw.

use anyhow::anyhow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyedge_ccn::delay::{self, Area, DelayModel, ErrorSummary, Measured};
use anyedge_ccn::geo::great_circle_km;
use anyedge_ccn::landmarks::{self, LandmarkModel};
use anyedge_topology::measured::{MeasuredPair, read_csv};
use serde::Serialize;

/// Which model `calibrate` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Per place: each pair from the measured pairs of the servers near its two ends.
    Landmarks,
    /// Per pair of areas: a stretch, an overhead and a hub for each (the backbone's).
    Areas,
}

pub struct Args {
    pub file: PathBuf,
    pub name: String,
    pub source: Option<String>,
    pub kind: Kind,
    pub holdout: Option<u32>,
    pub pairs: bool,
    pub areas: bool,
    pub topology: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

/// Pairs at least this far apart are "long" in the error summary.
const LONG_KM: f64 = 1000.0;
/// The area model's default split: every third row held out.
const HOLDOUT_DEFAULT: u32 = 3;

/// A fitted model and its predictions of every row: by the fit that saw the row (NaN
/// for a row held out of it) and by a fit that never saw it (NaN where there is none).
struct Scored {
    model: DelayModel,
    fitted_ms: Vec<f64>,
    held_ms: Vec<f64>,
    /// How rows were held out, for the first line.
    how: String,
    /// The per-place fit's short-path law floor and each server's direct short pairs.
    floors: Option<(delay::PathParams, Vec<usize>)>,
}

/// The area model, every `holdout`-th row (counting from the second) held out of the fit.
fn fit_areas(name: &str, source: &str, rows: &[MeasuredPair], holdout: u32) -> Scored {
    let fit: Vec<Measured> =
        rows.iter().enumerate().filter(|(i, _)| !held_out(*i, holdout)).map(|(_, r)| r.m.clone()).collect();
    let model = delay::fit(name, source, &fit);
    let predict = |r: &MeasuredPair| model.rtt_ms(r.m.a, r.m.b);
    let (mut fitted_ms, mut held_ms) = (Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        let (seen, unseen) = if held_out(i, holdout) { (f64::NAN, predict(r)) } else { (predict(r), f64::NAN) };
        fitted_ms.push(seen);
        held_ms.push(unseen);
    }
    Scored { model, fitted_ms, held_ms, how: format!("every {holdout}th held out of the fit"), floors: None }
}

/// Whether row `i` is one of those held out of the area fit.
fn held_out(i: usize, holdout: u32) -> bool {
    holdout > 1 && i % holdout as usize == 1
}

/// The per-place model, every server held out in turn.
fn fit_landmarks(name: &str, source: &str, path: &Path, rows: &[MeasuredPair]) -> anyhow::Result<Scored> {
    let data = anyedge_topology::measured::dataset(path, rows).map_err(anyhow::Error::msg)?;
    let fitted = landmarks::fit(&data);
    let how = format!("{} servers; each server's pairs held out of the fit in turn", data.sites.len());
    let floors = Some((fitted.model.law.short.clone(), fitted.direct_pairs));
    let model = DelayModel {
        name: name.into(),
        source: source.into(),
        default: fitted.model.law.long.clone(),
        pairs: BTreeMap::new(),
        landmarks: Some(Arc::new(fitted.model)),
    };
    let fitted_ms = rows.iter().map(|r| model.rtt_ms(r.m.a, r.m.b)).collect();
    Ok(Scored { model, fitted_ms, held_ms: fitted.held_out_ms, how, floors })
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
    measured_ms: f64,
    /// By the fit that saw the pair (absent for a pair held out of an area fit).
    #[serde(skip_serializing_if = "Option::is_none")]
    fitted_ms: Option<f64>,
    /// By a fit that never saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_out_ms: Option<f64>,
}

#[derive(Serialize)]
struct JsonOut {
    file: String,
    model: String,
    fitted: [Summary; 2],
    held_out: [Summary; 2],
    pairs: Vec<PairRow>,
}

/// Errors on long (≥ 1,000 km) and short pairs of the rows `predicted` has a figure for.
fn by_length(rows: &[&MeasuredPair], predicted: &[f64]) -> [ErrorSummary; 2] {
    let (mut long, mut short) = (Vec::new(), Vec::new());
    for (r, &p) in rows.iter().zip(predicted).filter(|(_, p)| !p.is_nan()) {
        let err = (p - r.m.rtt_ms) / r.m.rtt_ms;
        if great_circle_km(r.m.a, r.m.b) >= LONG_KM { long.push(err) } else { short.push(err) }
    }
    [ErrorSummary::of(long), ErrorSummary::of(short)]
}

/// One pair of areas' parameters as the model's YAML writes them.
fn to_params(p: &delay::PathParams) -> String {
    let via = p.via.as_deref().map_or(String::new(), |h| format!(", via: {h}"));
    format!("stretch: {}, overhead: {}us{via}", p.stretch, us(p.overhead_ms))
}

fn us(ms: f64) -> u64 {
    (ms * 1000.0).round() as u64
}

/// The model as the `delay:` section of a topology file (what `BUILTIN` calibrations are).
pub fn to_yaml(model: &DelayModel, measured: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "delay:");
    let _ = writeln!(out, "  name: {}", model.name);
    let _ = writeln!(out, "  source: \"{}\"", model.source.replace('"', "'"));
    let _ = writeln!(out, "  default: {{ {} }}", to_params(&model.default));
    if !model.pairs.is_empty() {
        let _ = writeln!(out, "  pairs:");
        for ((a, b), p) in &model.pairs {
            let _ = writeln!(out, "    - {{ between: [{a}, {b}], {} }}", to_params(p));
        }
    }
    if let Some(l) = &model.landmarks {
        landmarks_yaml(&mut out, l, measured);
    }
    out
}

fn landmarks_yaml(out: &mut String, l: &LandmarkModel, measured: &str) {
    let _ = writeln!(out, "  landmarks:");
    let _ = writeln!(out, "    measured: {measured}");
    let _ = writeln!(out, "    stretch: {}", l.stretch);
    let _ = writeln!(out, "    short: {{ {} }}", to_params(&l.law.short));
    let _ = writeln!(out, "    neighbours: {}", l.reach.neighbours);
    let _ = writeln!(out, "    power: {}", l.reach.power);
    let _ = writeln!(out, "    reach_km: {}", l.reach.reach_km);
    let _ = writeln!(out, "    prior: {}", l.reach.prior);
    let _ = writeln!(out, "    heights:");
    for m in &l.landmarks {
        let _ = writeln!(out, "      - {{ server: {}, height: {}us }}", m.name, us(m.height_ms));
    }
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

/// The short-path floor: what a 0 km path costs, by the law over every short pair and, per
/// area, at its servers (both ends' heights) that have direct short pairs of their own.
fn floors_comment(out: &mut String, l: &LandmarkModel, law: &delay::PathParams, direct_pairs: &[usize]) {
    let _ = writeln!(
        out,
        "# short-path floor at 0 km: {:.1} ms by the law over every pair under {} km (rtt = floor + {} × fibre);",
        law.overhead_ms,
        landmarks::SHORT_KM,
        law.stretch
    );
    let _ = writeln!(
        out,
        "#   at servers with direct short pairs (2 × height; median [quartiles]), the rest take the law's:"
    );
    let mut by_area: BTreeMap<Area, (Vec<f64>, usize)> = BTreeMap::new();
    for (m, &pairs) in l.landmarks.iter().zip(direct_pairs) {
        let entry = by_area.entry(Area::of(m.at)).or_default();
        if pairs > 0 { entry.0.push(2.0 * m.height_ms) } else { entry.1 += 1 }
    }
    for (area, (mut floors, rest)) in by_area {
        let own = floors.len();
        let [q1, q2, q3] = [0.25, 0.5, 0.75].map(|q| delay::quantile(&mut floors, q));
        let figure = if own == 0 { format!("{:>16}", "-") } else { format!("{q2:>5.1} ms [{q1:.1}–{q3:.1}]") };
        let _ = writeln!(out, "#   {:<15} {figure:<18} {own:>3} servers, {rest} on the law", area.name());
    }
    let _ = writeln!(out, "# base stretch {}; reach, chosen on the held-out servers: {}", l.stretch, l.reach);
}

fn read(path: &Path) -> Result<Vec<MeasuredPair>, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("error: {}: {e}", path.display())])?;
    read_csv(path, &text)
}

fn scored(args: &Args, rows: &[MeasuredPair]) -> anyhow::Result<Scored> {
    let source = args.source.clone().unwrap_or_else(|| format!("fitted on {}", args.file.display()));
    match (args.kind, args.holdout) {
        (Kind::Areas, holdout) => Ok(fit_areas(&args.name, &source, rows, holdout.unwrap_or(HOLDOUT_DEFAULT))),
        (Kind::Landmarks, None) => fit_landmarks(&args.name, &source, &args.file, rows),
        (Kind::Landmarks, Some(_)) => Err(anyhow!(
            "error: --holdout splits rows for `--model areas`; the per-place model holds out whole servers"
        )),
    }
}

pub fn run(args: Args) -> ExitCode {
    let rows = match read(&args.file) {
        Ok(rows) => rows,
        Err(errors) => {
            errors.iter().for_each(|e| eprintln!("{e}"));
            return ExitCode::from(2);
        }
    };
    let s = match scored(&args, &rows) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", model_text(&args, &rows, &s));
    if args.pairs {
        print!("{}", pair_table(&rows, &s));
    }
    if args.areas {
        print!("{}", area_table(&rows, &s));
    }
    let wrote = args.topology.as_deref().map_or(Ok(()), |path| print_topology_pairs(path, &s.model));
    let wrote = wrote.and_then(|()| args.json.as_deref().map_or(Ok(()), |path| write_json(path, &args, &rows, &s)));
    match wrote {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// The fitted model as YAML, behind comments saying how far it is off.
fn model_text(args: &Args, rows: &[MeasuredPair], s: &Scored) -> String {
    let all: Vec<&MeasuredPair> = rows.iter().collect();
    let mut out = String::new();
    let _ = writeln!(out, "# anyedge calibrate {} ({} pairs; {})", args.file.display(), rows.len(), s.how);
    let seen = if s.model.landmarks.is_some() { "in sample" } else { "fitted" };
    summary_comment(&mut out, seen, &by_length(&all, &s.fitted_ms));
    if s.held_ms.iter().any(|p| !p.is_nan()) {
        summary_comment(&mut out, "held out", &by_length(&all, &s.held_ms));
    }
    if let (Some(l), Some((law, direct))) = (&s.model.landmarks, &s.floors) {
        floors_comment(&mut out, l, law, direct);
    }
    let _ = writeln!(out, "# Put under `internet:` or `backbone:` in a topology file.");
    out + &to_yaml(&s.model, &file_name(&args.file))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn rounded(ms: f64) -> Option<f64> {
    (!ms.is_nan()).then(|| (ms * 10.0).round() / 10.0)
}

fn pair_rows(rows: &[MeasuredPair], s: &Scored) -> Vec<PairRow> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| PairRow {
            line: r.line,
            a: r.a_name.clone(),
            b: r.b_name.clone(),
            km: great_circle_km(r.m.a, r.m.b).round(),
            areas: format!("{}/{}", Area::of(r.m.a), Area::of(r.m.b)),
            measured_ms: r.m.rtt_ms,
            fitted_ms: rounded(s.fitted_ms[i]),
            held_out_ms: rounded(s.held_ms[i]),
        })
        .collect()
}

fn pair_table(rows: &[MeasuredPair], s: &Scored) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:>5}  {:<24} {:<24} {:>6} {:<30} {:>9} {:>9} {:>9}",
        "line", "a", "b", "km", "areas", "measured", "fitted", "held out"
    );
    let cell = |v: Option<f64>| v.map_or(format!("{:>9}", "-"), |v| format!("{v:>9.1}"));
    for p in pair_rows(rows, s) {
        let _ = writeln!(
            out,
            "{:>5}  {:<24} {:<24} {:>6} {:<30} {:>9.1} {} {}",
            p.line,
            p.a,
            p.b,
            p.km,
            p.areas,
            p.measured_ms,
            cell(p.fitted_ms),
            cell(p.held_out_ms)
        );
    }
    out
}

fn write_json(path: &Path, args: &Args, rows: &[MeasuredPair], s: &Scored) -> anyhow::Result<()> {
    let all: Vec<&MeasuredPair> = rows.iter().collect();
    let out = JsonOut {
        file: args.file.display().to_string(),
        model: to_yaml(&s.model, &file_name(&args.file)),
        fitted: by_length(&all, &s.fitted_ms).map(Summary::from),
        held_out: by_length(&all, &s.held_ms).map(Summary::from),
        pairs: pair_rows(rows, s),
    };
    let text = serde_json::to_string_pretty(&out).expect("plain data serializes");
    std::fs::write(path, text + "\n").map_err(|e| anyhow!("error: {}: {e}", path.display()))
}

/// The error per pair of areas: pairs a fit never saw, long and short apart, and the
/// pairs it saw; for the area model, the parameters each pair of areas got.
fn area_table(rows: &[MeasuredPair], s: &Scored) -> String {
    let mut by_area: BTreeMap<(Area, Area), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_area.entry(delay::area_key(Area::of(r.m.a), Area::of(r.m.b))).or_default().push(i);
    }
    let mut out = String::new();
    let _ = writeln!(out, "\nerror per pair of areas (held-out pairs, then the fitted; median / p90 / bias, %)");
    let _ = writeln!(
        out,
        "{:<32} {:>6} {:>22} {:>6} {:>22} {:>6} {:>22}   model",
        "areas", "≥1000", "km held out", "<1000", "km held out", "fitted", "all lengths"
    );
    let cell = |e: &ErrorSummary| match e.pairs {
        0 => format!("{:>6} {:>22}", 0, "-"),
        n => format!("{n:>6} {:>6.1} {:>6.1} {:>+7.1}", pct(e.median), pct(e.p90), pct(e.bias)),
    };
    for ((a, b), idx) in &by_area {
        let members: Vec<&MeasuredPair> = idx.iter().map(|&i| &rows[i]).collect();
        let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let [long, short] = by_length(&members, &pick(&s.held_ms));
        let fitted = ErrorSummary::of(merge(&members, &pick(&s.fitted_ms)));
        let params = area_params(&s.model, *a, *b);
        let _ =
            writeln!(out, "{:<32} {} {} {}   {params}", format!("{a}/{b}"), cell(&long), cell(&short), cell(&fitted));
    }
    out
}

/// Signed relative errors of the rows with a prediction.
fn merge(rows: &[&MeasuredPair], predicted: &[f64]) -> Vec<f64> {
    rows.iter().zip(predicted).filter(|(_, p)| !p.is_nan()).map(|(r, p)| (p - r.m.rtt_ms) / r.m.rtt_ms).collect()
}

fn area_params(model: &DelayModel, a: Area, b: Area) -> String {
    if model.landmarks.is_some() {
        return "per place".into();
    }
    let params = to_params(model.params(a, b));
    if model.pairs.contains_key(&(a, b)) { params } else { format!("{params} (default)") }
}

/// For a topology: each client group's round trip to each POP and to each VIP's home
/// region, as the file's internet model has it and as the fitted one would.
fn print_topology_pairs(path: &Path, model: &DelayModel) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("error: {}: {e}", path.display()))?;
    let t = anyedge_topology::parse_str(&path.display().to_string(), &text).map_err(|e| anyhow!("{e}"))?;
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
