//! `anyedge bench sim`: the scaling benchmark measures what it says (figures are for
//! notes, not asserted on; these tests check the shape and meaning of its output).

use std::process::Command;

fn anyedge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anyedge"))
}

#[test]
fn bench_sim_multiplies_clients_and_holds_the_packets_sent() {
    let dir = std::env::temp_dir().join(format!("anyedge-bench-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let small = format!("{}/topologies/small.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = anyedge().args(["bench", "sim", &small, "--scale", "1,4", "--json"]).arg(&json).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("events/s") && table.contains("KB/flow"), "{table}");
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let rows = f["scales"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{f}");
    let get = |i: usize, k: &str| rows[i][k].as_f64().unwrap_or_else(|| panic!("{k} missing: {f}"));
    // Four times the clients and flows...
    assert_eq!(get(1, "clients"), 4.0 * get(0, "clients"));
    assert_eq!(get(1, "flows"), 4.0 * get(0, "flows"));
    // ...carrying about the same packets (each client sends a quarter as often; TCP
    // handshakes of the extra connections and different losses make the difference).
    let ratio = get(1, "deliveries") / get(0, "deliveries");
    assert!((0.8..1.25).contains(&ratio), "deliveries at 4x / 1x = {ratio}: {f}");
    // ...and answering them alike: the rates compare like for like.
    let answered = |i: usize| get(i, "answered") / get(i, "requests");
    assert!(get(0, "requests") > 1_000.0 && (answered(0) - answered(1)).abs() < 0.01, "{f}");
    assert!(table.contains("answered") && !table.contains("warning"), "{table}");
    for i in 0..2 {
        assert!(get(i, "events") > 0.0 && get(i, "wall_s") > 0.0 && get(i, "peak_rss_mb") > 1.0, "{f}");
        assert!(
            (get(i, "events_per_s") - get(i, "events") / get(i, "wall_s")).abs() <= 1.0 + get(i, "events_per_s") * 1e-3
        );
    }
    assert_eq!(get(0, "rate_vs_smallest"), 1.0);
    assert!(rows[0].get("marginal_kb_per_flow").is_none() && get(1, "marginal_kb_per_flow").is_finite(), "{f}");
}

#[test]
fn bench_sim_refuses_a_zero_scale_and_a_missing_file() {
    let out = anyedge().args(["bench", "sim", "topologies/small.yaml", "--scale", "1,0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--scale takes factors of 1 or more"));
    let out = anyedge().args(["bench", "sim", "/nonexistent/world.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/world.yaml"));
}

#[test]
fn bench_sim_ladder_runs_generated_worlds_and_prints_the_probe_share() {
    let dir = std::env::temp_dir().join(format!("anyedge-bench-ladder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("ladder.json");
    let out = anyedge()
        .args(["bench", "sim", "--ladder", "400", "--ladder-duration", "1s", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("deliveries/s") && table.contains("peak MB") && table.contains("probe share"), "{table}");
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let rung = &f["rungs"][0];
    assert_eq!(rung["clients"], 400);
    let (probes, all) = (rung["probe_deliveries"].as_u64().unwrap(), rung["deliveries"].as_u64().unwrap());
    // 400 clients' requests (one a second) are outnumbered by the probes that do not
    // wait for traffic — 250 transits' BFD toward their POP, every 50 ms — and those of
    // the POP-region pairs in use (tests/simulation.rs bounds those by the pairs).
    assert!(probes > 0 && probes < all && probes * 2 > all, "{probes} of {all}");
    assert!(rung["peak_rss_mb"].as_f64().unwrap() > 0.0 && rung["answered"].as_u64().unwrap() > 0);
    // A size below the groups a world needs is refused by name.
    let out = anyedge().args(["bench", "sim", "--ladder", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ladder 0"), "{}", String::from_utf8_lossy(&out.stderr));
}
