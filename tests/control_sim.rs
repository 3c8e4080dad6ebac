//! The Raft control plane in the simulator: control nodes crash, restart and split under
//! the seeded network while `set-weight` writes commit through the leader and reach the
//! CLB nodes' data plane; the report's invariants hold and the run replays byte for byte.

use anyedge_sim::Report;
use anyedge_topology::{self as topology, Diagnostic, Topology};

const SMALL: &str = include_str!("../topologies/small.yaml");

/// small.yaml with a control plane and its fault schedule replaced.
fn small_with_control(control: &str, faults: &str) -> Topology {
    let head = SMALL.split("faults:").next().expect("small.yaml has faults");
    let text = format!("{head}control: {control}\nfaults:\n{faults}");
    topology::parse_str("small.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn run(t: &Topology) -> Report {
    anyedge_sim::run(t, |_| {}).unwrap_or_else(|e| panic!("{}", e.0)).report
}

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match topology::parse_str("t.yaml", yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics,
    }
}

/// Each node in turn goes down (one of them leads) with a write while it is away.
const EACH_NODE_DOWN_IN_TURN: &str = "
  - { at: 2s, down: control/1 }
  - { at: 2500ms, set-weight: { backend: \"198.19.20.1:7000\", weight: 11 } }
  - { at: 4s, up: control/1 }
  - { at: 6s, down: control/2 }
  - { at: 6500ms, set-weight: { backend: \"198.19.20.2:7000\", weight: 12 } }
  - { at: 8s, up: control/2 }
  - { at: 10s, down: control/3 }
  - { at: 10500ms, set-weight: { backend: \"198.19.20.3:7000\", weight: 13 } }
  - { at: 12s, up: control/3 }
";

#[test]
fn killing_the_leader_elects_another_and_every_write_still_commits() {
    let report = run(&small_with_control("{ nodes: 3 }", EACH_NODE_DOWN_IN_TURN));
    let c = report.control.expect("a control section");
    assert!(c.leader_changes >= 1, "the leader was among the nodes taken down: {c:?}");
    assert_eq!((c.writes, c.writes_committed), (3, 3), "{c:?}");
    let latency = c.commit_latency_ms.clone().expect("commits were timed");
    // A write waits at most for an election (timeouts 150–300 ms) plus a round trip.
    assert!(latency.max < 1000.0, "{latency:?}");
    assert!(c.invariants.election_safety && c.invariants.committed_never_lost && c.invariants.converged, "{c:?}");
    // Every control node and CLB node ends at the same log index.
    let applied: Vec<Option<u64>> = c.applied.values().copied().collect();
    assert_eq!(applied.len(), 5, "{:?}", c.applied);
    assert!(applied.iter().all(|a| *a == Some(c.commit)), "{:?} vs commit {}", c.applied, c.commit);
}

#[test]
fn five_nodes_survive_two_failures() {
    let faults = "
  - { at: 2s, down: control/1 }
  - { at: 2s, down: control/2 }
  - { at: 3s, set-weight: { backend: \"198.19.20.1:7000\", weight: 40 } }
";
    let report = run(&small_with_control("{ nodes: 5 }", faults));
    let c = report.control.unwrap();
    assert_eq!((c.writes, c.writes_committed), (1, 1), "{c:?}");
    assert_eq!(c.applied["control/1"], None, "a down node reports no index");
}

#[test]
fn an_isolated_leader_cannot_commit_and_the_majority_carries_on() {
    // Find who leads with no faults, then cut exactly that node off.
    let quiet = run(&small_with_control(
        "{ nodes: 3 }",
        "  - { at: 1s, set-weight: { backend: \"198.19.20.1:7000\", weight: 9 } }\n",
    ));
    let leader = quiet.control.unwrap().leader.expect("a leader");
    let others: Vec<String> = (1..=3).map(|i| format!("control/{i}")).filter(|n| *n != leader).collect();
    let faults = format!(
        "  - {{ at: 2s, partition: [[{leader}], [{}]] }}\n  - {{ at: 2500ms, set-weight: {{ backend: \"198.19.20.2:7000\", weight: 3 }} }}\n  - {{ at: 5s, heal: partition }}\n",
        others.join(", ")
    );
    let report = run(&small_with_control("{ nodes: 3 }", &faults));
    let c = report.control.unwrap();
    assert_ne!(c.leader.as_deref(), Some(leader.as_str()), "the majority side elected a new leader: {c:?}");
    assert_eq!(c.writes_committed, 1, "{c:?}");
    assert!(c.invariants.converged, "after the heal the old leader caught up: {c:?}");
}

#[test]
fn a_run_that_ends_partitioned_reports_it_without_calling_it_a_bug() {
    let faults = "
  - { at: 2s, partition: [[control/1], [control/2, control/3]] }
  - { at: 3s, set-weight: { backend: \"198.19.20.1:7000\", weight: 7 } }
";
    let report = run(&small_with_control("{ nodes: 3 }", faults));
    let c = report.control.unwrap();
    assert!(c.invariants.election_safety && c.invariants.committed_never_lost);
    assert!(!c.invariants.converged, "control/1 never heard of the write: {c:?}");
    assert!(c.applied["control/1"] < c.applied["control/2"], "{:?}", c.applied);
}

/// Web (TCP) flows per backend (.10, .11) after `change` at 1 s, and when `migrate`,
/// London and Kyiv move networks at 3 s (every connection starts afresh).
fn web_flows(control: Option<&str>, change: &str, migrate: bool) -> (u64, u64, Report) {
    let head = SMALL.split("faults:").next().unwrap();
    let control = control.map(|c| format!("control: {c}\n")).unwrap_or_default();
    let moves =
        if migrate { "  - { at: 3s, migrate: client/london }\n  - { at: 3s, migrate: client/kyiv }\n" } else { "" };
    let text = format!("{head}{control}faults:\n  - {{ at: 1s, {change} }}\n{moves}");
    let report = run(&topology::parse_str("small.yaml", &text).unwrap_or_else(|e| panic!("{e}")));
    let flows = |a: &str| report.backends.iter().find(|b| b.address == a).map(|b| b.flows).unwrap();
    (flows("198.19.20.10:8080"), flows("198.19.20.11:8080"), report)
}

const DRAIN_11: &str = "set-weight: { backend: \"198.19.20.11:8080\", weight: 0 }";
const UNCHANGED: &str = "set-weight: { backend: \"198.19.20.10:8080\", weight: 10 }";

/// Weight 0 on .11 at 1 s: the connections made at 3 s all go to .10, .11 keeps only
/// those it had (drain), while without the change it takes its share of the new ones.
fn assert_drained(control: Option<&str>) -> Report {
    let (_, initial, _) = web_flows(control, UNCHANGED, false);
    let (_, shared, _) = web_flows(control, UNCHANGED, true);
    let (ten, drained, report) = web_flows(control, DRAIN_11, true);
    assert!(shared > initial + 10, ".11 (weight 30 of 40) takes most new connections: {initial} → {shared}");
    assert_eq!(drained, initial, "with weight 0, .11 got no new connection ({ten} went to .10)");
    report
}

#[test]
fn set_weight_zero_through_the_control_plane_stops_new_flows_to_that_backend() {
    let report = assert_drained(Some("{ nodes: 3 }"));
    assert_eq!(report.control.unwrap().writes_committed, 1);
}

#[test]
fn set_weight_without_a_control_plane_goes_straight_to_the_clbs() {
    assert!(assert_drained(None).control.is_none());
}

#[test]
fn the_same_file_and_seed_replay_the_control_plane_byte_for_byte() {
    let t = small_with_control("{ nodes: 3 }", EACH_NODE_DOWN_IN_TURN);
    let a = anyedge_sim::run(&t, |_| {}).unwrap().report.to_json();
    let b = anyedge_sim::run(&t, |_| {}).unwrap().report.to_json();
    assert_eq!(a, b);
    assert!(a.contains("\"control\""));
}

#[test]
fn control_sections_and_faults_are_validated_with_the_field_named() {
    let head = SMALL.split("faults:").next().unwrap();
    let with = |control: &str, faults: &str| errors(&format!("{head}{control}faults:\n{faults}"));
    let has = |d: &[Diagnostic], field: &str, reason: &str| {
        d.iter().any(|x| x.field.ends_with(field) && x.reason.contains(reason))
    };
    let d = with("control: { nodes: 4 }\n", "");
    assert!(has(&d, "control.nodes", "use 3 or 5"), "{d:#?}");
    let d = with("control: { nodes: 3, sites: [frankfurt, paris] }\n", "");
    assert!(has(&d, "control.sites", "2 sites for 3 nodes"), "{d:#?}");
    let d = with("control: { nodes: 3, sites: [frankfurt, paris, atlantis] }\n", "");
    assert!(has(&d, "control.sites[2]", "neither a region nor a POP"), "{d:#?}");
    let d = with("control: { nodes: 3 }\n", "  - { at: 1s, down: control/4 }\n");
    assert!(has(&d, "faults[0].down", "control/1 … control/3"), "{d:#?}");
    let d = with("", "  - { at: 1s, down: control/1 }\n");
    assert!(has(&d, "faults[0].down", "no `control:` section"), "{d:#?}");
    let d = with("", "  - { at: 1s, partition: [[control/1], [control/2]] }\n");
    assert!(has(&d, "faults[0].partition", "no `control:` section"), "{d:#?}");
    let d = with("control: { nodes: 3 }\n", "  - { at: 1s, partition: [[control/1], [control/1, control/2]] }\n");
    assert!(has(&d, "faults[0].partition[1][0]", "on two sides"), "{d:#?}");
    let d = with("control: { nodes: 3 }\n", "  - { at: 1s, heal: everything }\n");
    assert!(has(&d, "faults[0].heal", "heal: partition"), "{d:#?}");
    let d = with("", "  - { at: 1s, set-weight: { backend: \"198.19.20.99:7000\", weight: 5 } }\n");
    assert!(has(&d, "faults[0].set-weight.backend", "no backend 198.19.20.99:7000"), "{d:#?}");
    let d = with("", "  - { at: 1s, set-weight: { backend: \"198.19.20.1:7000\", weight: 101 } }\n");
    assert!(has(&d, "faults[0].set-weight.weight", "outside 0–100"), "{d:#?}");
    let d = with("control: { nodes: 3 }\n", "  - { at: 1s, unbind: control/1 }\n");
    assert!(has(&d, "faults[0].unbind", "not bound"), "{d:#?}");
}

const CONTROL: &str = include_str!("../topologies/control.yaml");

/// topologies/control.yaml, `duration` and `seed` replaced, with these faults.
fn control_yaml_with(seed: u64, duration: &str, faults: &str) -> Topology {
    let head = CONTROL.split("faults:").next().expect("control.yaml has faults");
    let head = head
        .lines()
        .map(|l| match l.split(':').next() {
            Some("seed") => format!("seed: {seed}"),
            Some("duration") => format!("duration: {duration}"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{head}\nfaults:\n{faults}");
    topology::parse_str("control.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Found by a sweep: with seed 39, control/3 dies and the two survivors drew election
/// timeouts that fire on the same tick; drawn once for life, they split the vote forever.
#[test]
fn survivors_elect_when_their_timeouts_collide() {
    let writes: String = (3..9)
        .map(|s| format!("  - {{ at: {s}s, set-weight: {{ backend: \"198.19.20.1:7000\", weight: {} }} }}\n", 10 + s))
        .collect();
    let t = control_yaml_with(39, "10s", &format!("  - {{ at: 2s, down: control/3 }}\n{writes}"));
    let c = run(&t).control.expect("a control section");
    assert!(c.leader.is_some(), "the survivors elect a leader: {c:?}");
    assert_eq!((c.writes, c.writes_committed), (6, 6), "{c:?}");
}

/// A write sent to a leader that a partition is deposing: the next leader's empty entry
/// takes its index, and the write must be proposed again, not silently dropped.
#[test]
fn a_write_superseded_by_a_new_leaders_entry_is_proposed_again() {
    let text = r#"name: lost-write
seed: 1
duration: 10s
vips:
  - { name: edge, ipv4: 198.18.0.20, home: frankfurt, pops: [paris], listeners: [{ protocol: udp, port: 7000, scheduler: maglev, backends: game }] }
pops: [{ name: paris, location: [48.857, 2.352] }, { name: warsaw, location: [52.230, 21.012] }]
regions:
  - { name: frankfurt, location: [50.110, 8.682], backends: { game: [{ address: 198.19.20.1, port: 7000 }] } }
backbone: { stretch: 1.4, jitter: 0.2ms, loss: 0.001%, bandwidth: 1Gbps }
internet: { stretch: 2.0, last_mile: 5ms, jitter: 2ms, routing: nearest, loss: 0.2% }
clients:
  - { name: rome, location: [41.903, 12.496], count: 1, traffic: game }
traffic:
  game: { vip: edge, protocol: udp, port: 7000, interval: 1s, size: 120 }
control: { nodes: 3, sites: [frankfurt, paris, warsaw] }
faults:
  - { at: 2s, partition: [[control/2], [control/1, control/3]] }
  - { at: 2050ms, set-weight: { backend: "198.19.20.1:7000", weight: 5 } }
  - { at: 4s, heal: partition }
"#;
    let t = topology::parse_str("lost-write.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let c = run(&t).control.expect("a control section");
    assert_eq!((c.writes, c.writes_committed), (1, 1), "{c:?}");
}
