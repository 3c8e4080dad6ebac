//! The example topologies' reports are byte-identical to the ones recorded in
//! `tests/reports/` before the house was reorganised (the topology crate, the world split
//! by concern, the CLB's tables): moving code changed no figure. The only field added
//! since is `drops`, left out of the comparison.
//!
//! When a change is meant to move figures, record again with
//! `anyedge sim topologies/NAME.yaml --report tests/reports/NAME.json` and say why in the
//! commit.

use anyedge_topology as topology;

/// The report text without its `drops` field (the last one, when present).
fn without_drops(report: &str) -> String {
    match report.find(",\n  \"drops\": ") {
        Some(at) => format!("{}\n}}\n", &report[..at]),
        None => report.to_string(),
    }
}

fn assert_report_unchanged(name: &str) {
    let file = format!("{}/topologies/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let recorded = std::fs::read_to_string(format!("{}/tests/reports/{name}.json", env!("CARGO_MANIFEST_DIR")))
        .expect("recorded report");
    let t = topology::load(std::path::Path::new(&file)).unwrap_or_else(|e| panic!("{e}"));
    let now = anyedge_sim::run(&t, |_| {}).unwrap_or_else(|e| panic!("{}", e.0)).report.to_json();
    assert!(now.contains(",\n  \"drops\": "), "the report has a drops field, last");
    let (now, recorded) = (without_drops(&now), without_drops(&recorded));
    if now != recorded {
        let line = now.lines().zip(recorded.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{name}: report differs from tests/reports/{name}.json at line {}:\n  now:      {}\n  recorded: {}",
            line + 1,
            now.lines().nth(line).unwrap_or("(end)"),
            recorded.lines().nth(line).unwrap_or("(end)")
        );
    }
}

#[test]
fn small_report_is_byte_identical_to_the_recorded_one() {
    assert_report_unchanged("small");
}

#[test]
fn control_report_is_byte_identical_to_the_recorded_one() {
    assert_report_unchanged("control");
}

#[test]
fn global_report_is_byte_identical_to_the_recorded_one() {
    assert_report_unchanged("global");
}

#[test]
fn the_comparison_ignores_drops_and_nothing_else() {
    let with = "{\n  \"name\": \"x\",\n  \"drops\": {\n    \"pop/a\": {\n      \"no_route\": 1\n    }\n  }\n}\n";
    assert_eq!(without_drops(with), "{\n  \"name\": \"x\"\n}\n");
    let other = "{\n  \"name\": \"y\",\n  \"drops\": {}\n}\n";
    assert_ne!(without_drops(with), without_drops(other), "a changed figure still shows");
}
