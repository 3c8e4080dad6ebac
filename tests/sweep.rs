//! `anyedge sweep`: a grid of variants over seeds, what each variant measured, the page
//! of plots, shards merged to the same bytes, and bad input refused before anything runs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_anyedge")
}

fn anyedge(args: &[&str]) -> Output {
    let mut cmd = Command::new(exe());
    for k in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "JOB_COMPLETION_INDEX"] {
        cmd.env_remove(k);
    }
    cmd.args(args).output().expect("runs")
}

fn control() -> String {
    format!("{}/topologies/control.yaml", env!("CARGO_MANIFEST_DIR"))
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("anyedge-sweep-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn at(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two probe intervals × two backbone losses × two probe miss counts, 2 seeds each.
const GRID: [&str; 10] = [
    "--set",
    "failover.probe_interval=20ms,50ms",
    "--set",
    "backbone.loss=0%,2%",
    "--set",
    "failover.probe_misses=4,6",
    "--seeds",
    "2",
    "--metric",
    "p50,loss,loss@london,detected_ms@pop/paris,false_downs",
];

#[test]
fn a_sweep_runs_every_variant_and_each_measures_its_own_world() {
    let dir = Dir::new("grid");
    let file = control();
    let (json, html) = (dir.at("r.json"), dir.at("r.html"));
    let mut argv: Vec<&str> = vec!["sweep", &file];
    argv.extend(GRID);
    argv.extend(["--json", &json, "--html", &html]);
    let out = anyedge(&argv);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("8 variants × 2 seeds from 1"), "{table}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let variants = r["variants"].as_array().unwrap();
    let sets: Vec<Vec<&str>> =
        variants.iter().map(|v| v["set"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()).collect();
    assert_eq!(
        sets,
        [
            ["20ms", "0%", "4"],
            ["20ms", "0%", "6"],
            ["20ms", "2%", "4"],
            ["20ms", "2%", "6"],
            ["50ms", "0%", "4"],
            ["50ms", "0%", "6"],
            ["50ms", "2%", "4"],
            ["50ms", "2%", "6"]
        ],
        "every combination once, the last parameter fastest"
    );
    let metric = |v: &serde_json::Value, name: &str| -> serde_json::Value {
        v["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {v}"))
            .clone()
    };
    for v in variants {
        let p50 = metric(v, "p50");
        assert_eq!(p50["runs"], 2, "both seeds measured: {v}");
        let (lo, med, hi) =
            (p50["min"].as_f64().unwrap(), p50["median"].as_f64().unwrap(), p50["max"].as_f64().unwrap());
        assert!(lo <= med && med <= hi && lo > 0.0, "{p50}");
        assert_eq!(v["failed"], serde_json::json!([]), "no invariant broken: {v}");
    }
    // The varied field reached the simulated world: 2 % backbone loss loses more.
    let loss = |i: usize, name: &str| metric(&variants[i], name)["median"].as_f64().unwrap();
    for (lossless, lossy) in [(0, 2), (1, 3), (4, 6), (5, 7)] {
        assert!(loss(lossy, "loss") > loss(lossless, "loss"), "{} vs {}", loss(lossy, "loss"), loss(lossless, "loss"));
        assert!(loss(lossy, "loss@london") > loss(lossless, "loss@london"));
    }
    // The page: one plot per metric and varied parameter, and the table.
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<figure>").count(), 5 * 3, "5 metrics × 3 parameters");
    assert!(page.contains("<h2>loss@london</h2>") && page.contains("backbone.loss=2%"), "legend names the lines");
    assert_eq!(page.matches("<tr>").count(), 1 + 8, "a header and one row per variant");
}

#[test]
fn sweep_shards_merged_give_the_same_report_and_page_and_another_grid_is_refused() {
    let dir = Dir::new("shards");
    let file = control();
    let run = |extra: &[&str]| {
        let mut argv: Vec<&str> = vec!["sweep", &file];
        argv.extend(GRID);
        argv.extend(extra);
        let out = anyedge(&argv);
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["--json", &dir.at("whole.json"), "--html", &dir.at("whole.html"), "--jobs", "2"]);
    for i in 0..3 {
        run(&["--shard", &format!("{i}/3"), "--json", &dir.at(&format!("p{i}.json")), "--jobs", "1"]);
    }
    let (merged, page) = (dir.at("merged.json"), dir.at("merged.html"));
    let parts = [dir.at("p1.json"), dir.at("p2.json"), dir.at("p0.json")];
    let mut argv: Vec<&str> = vec!["merge"];
    argv.extend(parts.iter().map(String::as_str));
    argv.extend(["--json", &merged, "--html", &page]);
    let out = anyedge(&argv);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&merged).unwrap(), std::fs::read_to_string(dir.at("whole.json")).unwrap());
    assert_eq!(std::fs::read_to_string(&page).unwrap(), std::fs::read_to_string(dir.at("whole.html")).unwrap());
    // A shard of another grid (one more value) does not belong.
    let mut argv: Vec<&str> = vec!["sweep", &file, "--set", "failover.probe_interval=20ms,50ms,100ms"];
    argv.extend(&GRID[2..]);
    let other = dir.at("other.json");
    argv.extend(["--shard", "2/3", "--json", &other]);
    assert!(anyedge(&argv).status.success());
    let out = anyedge(&["merge", &dir.at("p0.json"), &dir.at("p1.json"), &other, "--json", &dir.at("bad.json")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the options"), "{}", String::from_utf8_lossy(&out.stderr));
    // A chaos part and a sweep part do not merge.
    let chaos = dir.at("chaos.json");
    let c = anyedge(&["chaos", &file, "--seeds", "3", "--duration", "12s", "--shard", "2/3", "--json", &chaos]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let out = anyedge(&["merge", &dir.at("p0.json"), &dir.at("p1.json"), &chaos, "--json", &dir.at("bad.json")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the command"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.0.join("bad.json").exists(), "a refused merge writes nothing");
}

#[test]
fn bad_paths_values_and_metrics_are_refused_before_anything_runs_naming_them() {
    let file = control();
    for (args, says) in [
        (&["--set", "failover.probe_intervall=20ms"][..], "failover.probe_intervall: unknown field"),
        (&["--set", "failover.probe_interval=20ms,soon"][..], "variant failover.probe_interval=soon"),
        (&["--set", "vips[7].name=x"][..], "`vips` holds 1 item, [7] is past its end"),
        (&["--set", "clients[atlantis].count=1"][..], "no item of `clients` is named `atlantis`"),
        (&["--set", "backbone.loss"][..], "PATH=V1,V2"),
        (&["--set", "backbone.loss=1%,1%"][..], "twice"),
        (&["--set", "backbone.loss=1%", "--set", "backbone.loss=2%"][..], "set twice"),
        (&["--metric", "p42"][..], "--metric p42: not a metric"),
        (&["--metric", "detected_ms@pop/atlantis"][..], "no fault of the file is `pop/atlantis`"),
        (&["--metric", "false_downs@london"][..], "takes no @"),
        (&["--metric", "p99@atlantis"][..], "no client group `atlantis`"),
        (&["--shard", "0/2"][..], "--json PART"),
        (&["--shard", "3/2", "--json", "/tmp/x.json"][..], "--shard 3/2"),
    ] {
        let mut argv: Vec<&str> = vec!["sweep", &file, "--seeds", "2"];
        argv.extend(args);
        let out = anyedge(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} names {says}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
}
