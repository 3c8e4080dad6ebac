//! `anyedge chaos` in CI: hundreds of seeded random fault schedules over the control
//! topologies (3 and 5 control nodes), every invariant checked, none may fail; and bad
//! input refused with exit 2 before anything runs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_anyedge")
}

fn chaos(args: &[&str]) -> Output {
    Command::new(exe()).arg("chaos").args(args).output().expect("runs")
}

fn topology(name: &str) -> String {
    format!("{}/topologies/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A copy of topologies/control.yaml with `from` replaced by `to`, in a file of its own.
fn variant(tag: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(topology("control.yaml")).unwrap();
    assert!(text.contains(from), "control.yaml still has `{from}`");
    let path = std::env::temp_dir().join(format!("anyedge-chaos-{tag}-{}.yaml", std::process::id()));
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

fn assert_every_seed_passes(file: &str, seeds: u64) {
    let json = std::env::temp_dir().join(format!("anyedge-chaos-{}.json", std::process::id() ^ seeds as u32));
    let (seeds_text, json_text) = (seeds.to_string(), json.to_string_lossy().to_string());
    let out = chaos(&[file, "--seeds", &seeds_text, "--jobs", "2", "--duration", "12s", "--json", &json_text]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{file}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["passed"], seeds, "{summary}");
    assert_eq!(summary["failed"], serde_json::json!([]));
    let kinds: Vec<&str> = summary["kinds"].as_array().unwrap().iter().filter_map(|k| k.as_str()).collect();
    for kind in ["pop", "clb", "backend", "control", "partition", "link", "write"] {
        assert!(kinds.contains(&kind), "{kind} faults drawn: {kinds:?}");
    }
    let _ = std::fs::remove_file(json);
}

#[test]
fn two_hundred_chaos_seeds_pass_on_three_control_nodes() {
    assert_every_seed_passes(&topology("control.yaml"), 200);
}

#[test]
fn two_hundred_chaos_seeds_pass_on_five_control_nodes() {
    let five = variant(
        "five",
        "control: { nodes: 3, sites: [frankfurt, paris, warsaw] }",
        "control: { nodes: 5, sites: [frankfurt, paris, warsaw, frankfurt, warsaw] }",
    );
    assert_every_seed_passes(five.to_str().unwrap(), 200);
    let _ = std::fs::remove_file(five);
}

#[test]
fn bad_input_is_refused_with_exit_2_and_a_reason() {
    let control = topology("control.yaml");
    let zero = chaos(&[&control, "--seeds", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--seeds 0"));
    let missing = chaos(&["/nonexistent/anyedge.yaml", "--seeds", "5"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/anyedge.yaml"));
    let unknown = chaos(&[&control, "--seeds", "5", "--faults", "pop,meteor"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--faults meteor"));
    // One POP only: killing it would leave the VIP's clients nowhere.
    let one_pop = variant("one-pop", "pops: [paris, warsaw]", "pops: [paris]");
    let refused = chaos(&[one_pop.to_str().unwrap(), "--seeds", "5", "--faults", "pop"]);
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stdout));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("--faults pop") && why.contains("one POP"), "{why}");
    let garbled = chaos(&[&control, "--seeds", "5", "--duration", "soon"]);
    assert_eq!(garbled.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&garbled.stderr).contains("--duration soon"));
    let short = chaos(&[&control, "--seeds", "5", "--duration", "5s"]);
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("too short"));
    let _ = std::fs::remove_file(one_pop);
}

#[test]
fn a_file_without_control_skips_the_raft_kinds() {
    let out = chaos(&[&topology("small.yaml"), "--seeds", "20", "--jobs", "2", "--duration", "12s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("20 passed") && !stdout.contains("control") && !stdout.contains("partition"), "{stdout}");
}
