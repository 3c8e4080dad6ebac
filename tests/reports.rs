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

/// small.yaml for 3 s without faults, simulated with `--pcap` into a fresh directory.
fn capture(tag: &str) -> std::path::PathBuf {
    capture_with(tag, &[])
}

/// `capture` with further flags (`--pcap-nodes`, `--snaplen`, `--pcap-from`, `--pcap-to`).
fn capture_with(tag: &str, flags: &[&str]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("anyedge-pcap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = include_str!("../topologies/small.yaml").replace("duration: 20s", "duration: 3s");
    let file = dir.join("small3.yaml");
    std::fs::write(&file, text.split("faults:").next().unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .arg("sim")
        .arg(&file)
        .arg("--pcap")
        .arg(dir.join("pcap"))
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// A capture's records: (time ns, bytes kept, the packet's whole length).
fn records(bytes: &[u8]) -> Vec<(u64, Vec<u8>, u32)> {
    let (mut at, mut out) = (24, Vec::new());
    while at + 16 <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        let (t, kept, whole) = (u64::from(word(0)) * 1_000_000_000 + u64::from(word(4)), word(8) as usize, word(12));
        out.push((t, bytes[at + 16..at + 16 + kept].to_vec(), whole));
        at += 16 + kept;
    }
    out
}

#[test]
fn a_capture_keeps_only_the_nodes_window_and_bytes_asked_for() {
    let full = capture("full");
    let cut = capture_with(
        "cut",
        &["--pcap-nodes", "pop/paris,clb/frankfurt/*", "--snaplen", "96", "--pcap-from", "1s", "--pcap-to", "2s"],
    );
    let mut files: Vec<String> =
        std::fs::read_dir(cut.join("pcap")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    files.sort();
    assert_eq!(files, ["clb-frankfurt-1.pcap", "clb-frankfurt-2.pcap", "pop-paris.pcap"], "the nodes named, no other");
    for f in &files {
        let bytes = std::fs::read(cut.join("pcap").join(f)).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 96, "{f}: the header's snap length");
        let kept = records(&bytes);
        // Exactly the full capture's records in [1 s, 2 s), each cut to 96 bytes.
        let want: Vec<(u64, Vec<u8>, u32)> = records(&std::fs::read(full.join("pcap").join(f)).unwrap())
            .into_iter()
            .filter(|(t, _, _)| (1_000_000_000..2_000_000_000).contains(t))
            .map(|(t, b, whole)| (t, b[..b.len().min(96)].to_vec(), whole))
            .collect();
        assert!(!want.is_empty(), "{f}: packets in the window");
        assert!(want.iter().any(|(_, _, whole)| *whole > 96), "{f}: some packets are longer than the cut");
        assert!(kept == want, "{f}: {} records kept, {} wanted", kept.len(), want.len());
    }
    // Options that ask for nothing, or for the impossible, are refused before running.
    let small = full.join("small3.yaml");
    for (flags, says) in [
        (&["--pcap-nodes", "pop/atlantis"][..], "--pcap-nodes: `pop/atlantis` names no node"),
        (&["--pcap-from", "2s", "--pcap-to", "1s"][..], "--pcap-from 2 s is not before --pcap-to 1 s"),
        (&["--snaplen", "0"][..], "--snaplen"),
        (&["--pcap-from", "soon"][..], "--pcap-from"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .arg("sim")
            .arg(&small)
            .arg("--pcap")
            .arg(full.join("refused"))
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let without = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["sim"])
        .arg(&small)
        .args(["--snaplen", "96"])
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2), "--snaplen needs --pcap");
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&cut);
}

#[test]
fn sim_pcap_writes_a_capture_per_node_in_simulated_time_and_the_same_bytes_every_run() {
    let (a, b) = (capture("a"), capture("b"));
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join("pcap"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        v.sort();
        v
    };
    let files = names(&a);
    for node in
        ["pop-paris.pcap", "pop-warsaw.pcap", "clb-frankfurt-1.pcap", "backend-198.19.20.1.pcap", "client-london.pcap"]
    {
        assert!(files.contains(&node.to_string()), "{node} in {files:?}");
    }
    assert_eq!(files, names(&b));
    for f in &files {
        let bytes = std::fs::read(a.join("pcap").join(f)).unwrap();
        assert_eq!(bytes, std::fs::read(b.join("pcap").join(f)).unwrap(), "{f}: same seed, same bytes");
        // Nanosecond pcap, raw IP; records in time order, none past the run (3 s + drain).
        assert_eq!(&bytes[..4], &0xa1b2_3c4du32.to_le_bytes(), "{f}");
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 101, "{f}");
        let (mut at, mut last, mut records) = (24, 0u64, 0);
        while at + 16 <= bytes.len() {
            let word = |i: usize| u64::from(u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap()));
            let t = word(0) * 1_000_000_000 + word(4);
            assert!(t >= last && t < 10_000_000_000, "{f}: record at {t} ns after {last}");
            last = t;
            at += 16 + word(8) as usize;
            records += 1;
        }
        assert_eq!(at, bytes.len(), "{f}: whole records");
        assert!(records > 0, "{f}");
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn tshark_reads_a_simulated_capture_through_the_repositorys_dissector() {
    let tshark = std::process::Command::new("tshark").arg("--version").output();
    if tshark.is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs tshark (.ci/run): it must be here");
        return;
    }
    let dir = capture("tshark");
    let out = std::process::Command::new("tshark")
        .arg("-X")
        .arg(format!("lua_script:{}/tools/wireshark/anyedge.lua", env!("CARGO_MANIFEST_DIR")))
        .arg("-r")
        .arg(dir.join("pcap").join("clb-frankfurt-1.pcap"))
        .args(["-Y", "anyedge.ccn.pop_id", "-T", "fields", "-e", "anyedge.sender_name", "-e", "anyedge.ccn.pop_id"])
        .args(["-e", "ip.dst"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 100, "CCN data decoded: {} lines", lines.len());
    // From a POP, with the CCN header's POP id, and the client's packet to the VIP inside.
    assert!(
        lines.iter().any(|l| l.starts_with("pop#0\t0\t") && l.contains("198.18.0.20")),
        "{}",
        &text[..text.len().min(2000)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_html_report_is_one_self_contained_page_with_every_section_and_report_renders_a_json_report_alike() {
    let dir = std::env::temp_dir().join(format!("anyedge-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (html, json, again) = (dir.join("r.html"), dir.join("r.json"), dir.join("again.html"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["sim", "topologies/control.yaml", "--html"])
        .arg(&html)
        .arg("--report")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    for part in [
        "<h2>Map</h2>",
        "RTT CDF",
        "over time",
        "<h2 id=health>Backend health</h2>",
        "Raft leader and term",
        "<h2>Faults</h2>",
        "<pre>",
        // What the figures rest on: control.yaml keeps one stretch for each.
        "Delay models: internet <b>uniform</b> (stretch 2 everywhere, not calibrated) plus 5.0 ms of last mile (set in the topology file); backbone <b>uniform</b>",
    ] {
        assert!(page.contains(part), "the page has {part}");
    }
    // Plots are inline SVG; nothing is fetched when it opens.
    assert!(page.matches("<svg ").count() >= 12, "{} plots", page.matches("<svg ").count());
    for outside in ["<script", "<link", "<img", "@import", "url("] {
        assert!(!page.contains(outside), "no {outside} in a self-contained page");
    }
    let without_svg_ns = page.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_svg_ns.contains("http://") && !without_svg_ns.contains("https://"), "no links out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .arg("report")
        .arg(&json)
        .arg("--html")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered = std::fs::read_to_string(&again).unwrap();
    // The same page but for the terminal table, which only `sim` has.
    let cut = |p: &str| p.split("<h2>Report</h2>").next().unwrap().trim_end_matches("</body></html>\n").to_string();
    assert_eq!(cut(&rendered), cut(&page));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_world_of_many_groups_renders_sums_by_class_and_pop_and_its_worst_groups_over_the_land() {
    let dir = std::env::temp_dir().join(format!("anyedge-html-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (file, html, json) = (dir.join("gen.yaml"), dir.join("r.html"), dir.join("r.json"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let at = |p: &std::path::Path| p.to_str().unwrap().to_string();
    run(&[
        "generate",
        "--pops",
        "40",
        "--regions",
        "4",
        "--clients",
        "4000",
        "--groups",
        "300",
        "--duration",
        "3s",
        "--out",
        &at(&file),
    ]);
    run(&["sim", &at(&file), "-q", "--html", &at(&html), "--json", &at(&json)]);
    let page = std::fs::read_to_string(&html).unwrap();
    for part in
        ["<h3>By traffic class</h3>", "<h3>By POP</h3>", "<h3>The worst groups</h3>", "300 groups, 4000 clients"]
    {
        assert!(page.contains(part), "the page has {part}");
    }
    // Four regions: a game and a web class each, a summed CDF for each class.
    assert_eq!(page.matches("RTT CDF, all its groups").count(), 8);
    // The worst 10 by p99 and the 10 by loss (some may be both): one CDF and one time plot each.
    let worst = page.matches(": over time").count();
    assert!((10..=20).contains(&worst), "{worst} groups in full");
    // The land is drawn under the map (Natural Earth's rings, clipped to the map).
    let map = page.split("<h2>Map</h2>").nth(1).unwrap().split("</svg>").next().unwrap();
    assert!(map.matches("<polygon").count() >= 20, "{} rings of land", map.matches("<polygon").count());
    // No group is named on the map: 300 names would cover it.
    assert!(!map.contains("(13)") && !map.contains("shanghai-cn ("));
    let (page_kb, json_kb) = (page.len() / 1024, std::fs::metadata(&json).unwrap().len() / 1024);
    assert!(page_kb < 2048, "{page_kb} KB of HTML");
    // Sparse histograms, and a path's figures a line each: a group costs a few KB of JSON
    // (1.7 KB here, 3 s; 4.5 KB for 20 s).
    assert!(json_kb < 300 * 3, "{json_kb} KB of JSON for 300 groups");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"histogram_ms\": [["), "buckets on one line");
    assert!(text.contains("\"series\": [{\"t_s\": 0, "), "seconds on one line");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_paths_per_second_series_and_histogram_add_up_to_its_totals() {
    let t = topology::parse_str("small.yaml", include_str!("../topologies/small.yaml")).unwrap();
    let r = anyedge_sim::run(&t, |_| {}).unwrap().report;
    for c in &r.clients {
        for tr in &c.traffic {
            for p in [&tr.anycast, &tr.direct] {
                let sent: u64 = p.series.iter().map(|s| s.sent).sum();
                let received: u64 = p.series.iter().map(|s| s.received).sum();
                assert_eq!((sent, received), (p.sent, p.received), "{} {}", c.name, tr.name);
                let bucketed: u64 = p.histogram_ms.iter().map(|b| b.1).sum();
                assert_eq!(bucketed, p.received, "every round trip in a bucket");
                if let Some(q) = p.rtt_ms {
                    assert!(q.p50 <= q.p90 && q.p90 <= q.p99 && q.p99 <= q.p999 && q.p999 <= q.max);
                }
            }
        }
    }
}

#[test]
fn a_file_on_the_default_internet_names_the_calibrated_model_its_dataset_and_the_assumed_last_mile() {
    let dir = std::env::temp_dir().join(format!("anyedge-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let small = std::fs::read_to_string(format!("{}/topologies/small.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let line = small.lines().find(|l| l.starts_with("internet:")).expect("an internet line");
    let file = dir.join("default-internet.yaml");
    std::fs::write(&file, small.replace(line, "internet: { jitter: 2ms, loss: 0.2%, routing: nearest }")).unwrap();
    let (html, json) = (dir.join("r.html"), dir.join("r.json"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["sim", "-q"])
        .arg(&file)
        .arg("--html")
        .arg(&html)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let second = table.lines().nth(1).expect("a second line");
    for part in ["internet `wondernetwork-2020-07` (WonderNetwork", "+ 5 ms last mile (assumed, not measured)"] {
        assert!(second.contains(part), "the models line has `{part}`: {second}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let models = &report["models"];
    assert_eq!(models["internet"]["name"], "wondernetwork-2020-07");
    assert!(models["internet"]["source"].as_str().unwrap().contains("WonderProxy"), "{models}");
    assert_eq!(models["internet_last_mile_source"], "assumed, not measured");
    let nearest = "each group at the nearest live POP by the delay model";
    assert!(table.lines().nth(2).is_some_and(|l| l.starts_with("catchments: ") && l.contains(nearest)), "{table}");
    assert!(models["internet_routing"].as_str().is_some_and(|r| r.starts_with(nearest)), "{models}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("internet <b>wondernetwork-2020-07</b> (WonderNetwork"), "the page names the model");
    assert!(page.contains("5.0 ms of last mile (assumed, not measured)"), "the page says the last mile is assumed");
    assert!(page.contains(&format!("Catchments: {nearest}")), "the page says what decided the catchments");
    let _ = std::fs::remove_dir_all(&dir);
}
