//! Measured round-trip files: the CSV `anyedge calibrate` reads (one row a pair of
//! places), and the datasets that ship for the per-place delay model to rest on.

use std::path::Path;

use anyedge_ccn::delay::{Measured, fibre_rtt_ms};
use anyedge_ccn::geo::great_circle_km;
use anyedge_ccn::landmarks::Dataset;

/// Columns a CSV must have; others (names, dates) are carried along and ignored.
pub const COLUMNS: [&str; 5] = ["a_lat", "a_lon", "b_lat", "b_lon", "rtt_ms"];
/// The longest round trip a row may give: ten seconds is no internet path.
const RTT_MS_MAX: f64 = 10_000.0;

/// One row of the file: a measurement and the names the file gives its ends, if any.
#[derive(Debug, Clone)]
pub struct MeasuredPair {
    pub line: usize,
    pub a_name: String,
    pub b_name: String,
    pub m: Measured,
}

/// Reads a measurement CSV. Every bad row is named by file, line and field; any bad row
/// fails the file.
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

// String: the reason of one line of the CSV's error list (`read` collects them all).
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
    let (a, b) = check_place("a", a_lat, a_lon).and_then(|a| Ok((a, check_place("b", b_lat, b_lon)?)))?;
    if rtt_ms <= 0.0 || rtt_ms > RTT_MS_MAX {
        return Err(format!("rtt_ms: {rtt_ms} is outside 0–{RTT_MS_MAX} ms"));
    }
    let light_ms = fibre_rtt_ms(great_circle_km(a, b));
    if rtt_ms < light_ms {
        return Err(format!("rtt_ms: {rtt_ms} ms is faster than light in fibre over that distance ({light_ms:.1} ms)"));
    }
    Ok(Measured { a, b, rtt_ms })
}

/// A place from a latitude and longitude, or which of the two is out of range, named
/// `{end}_lat` / `{end}_lon`.
// String: a reason that its callers put after a file and line, or a place on the command line.
pub fn check_place(end: &str, lat: f64, lon: f64) -> Result<[f64; 2], String> {
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("{end}_lat: {lat} is outside -90–90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("{end}_lon: {lon} is outside -180–180"));
    }
    Ok([lat, lon])
}

/// The rows as a dataset of named servers; a name given two places is named by its line.
// String: FILE:LINE and the reason, for `calibrate` to print; nothing matches on it.
pub fn dataset(path: &Path, rows: &[MeasuredPair]) -> Result<Dataset, String> {
    let tuples = rows.iter().map(|r| (r.a_name.as_str(), r.m.a, r.b_name.as_str(), r.m.b, r.m.rtt_ms));
    Dataset::new(tuples).map_err(|(row, why)| format!("{}:{}: {why}", path.display(), rows[row].line))
}

/// Measured datasets that ship: file name (as a `landmarks.measured:` names it), text.
pub const SHIPPED: &[(&str, &str)] =
    &[("wondernetwork-2020-07-pairs.csv", include_str!("../../data/delay/wondernetwork-2020-07-pairs.csv"))];

/// A shipped dataset by file name, read and indexed (once a process).
pub fn shipped(name: &str) -> Option<&'static Dataset> {
    static READ: std::sync::OnceLock<Vec<Option<Dataset>>> = std::sync::OnceLock::new();
    let all = READ.get_or_init(|| {
        SHIPPED
            .iter()
            .map(|(file, text)| {
                let path = Path::new(file);
                read_csv(path, text).ok().and_then(|rows| dataset(path, &rows).ok())
            })
            .collect()
    });
    let k = SHIPPED.iter().position(|(file, _)| *file == name)?;
    all[k].as_ref()
}
