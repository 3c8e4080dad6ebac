//! The simulation report: a JSON document (byte-identical for the same topology and
//! seed) and the table printed on stdout. Run statistics live apart, in `Stats`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub name: String,
    pub seed: u64,
    /// How backbone envelopes were tagged: `fast` (the simulator's keyed hash, the
    /// default) or `real` (the lab's AES-256-GCM, `sim --auth real`). The figures
    /// are the same either way; captures differ in their tags' bytes.
    pub auth: &'static str,
    pub duration_s: f64,
    /// Which delay models produced every round trip below, and what they rest on.
    pub models: ModelsReport,
    pub pops: Vec<PopReport>,
    /// Each region and where it is (for the map).
    pub regions: Vec<RegionReport>,
    pub clients: Vec<ClientReport>,
    pub backends: Vec<BackendReport>,
    pub clb_nodes: Vec<ClbNodeReport>,
    pub security_groups: Vec<SecurityGroupReport>,
    pub faults: Vec<FaultReport>,
    /// The Raft control plane, when the file has `control:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<crate::control::ControlReport>,
    /// Packets a POP or CLB core refused, per node (`pop/NAME`, `clb/REGION/N`) and
    /// reason; nodes that dropped nothing are left out.
    pub drops: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Invariants the run broke (bugs in anyedge, not in the file), each with the
    /// simulated time it was found at; absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
}

/// The delay models a run used: a reader of a "gain" needs to know what it rests on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelsReport {
    /// Clients to POPs and straight to regions; `last_mile_ms` is added at the client's end.
    pub internet: ModelReport,
    pub internet_last_mile_ms: f64,
    /// Where the last mile's figure comes from: an assumption, until an access-network
    /// dataset ships (data/delay/README.md, "The last mile").
    pub internet_last_mile_source: String,
    /// What decided each group's POP: BGP over the file's networks, BGP over the default
    /// internet drawn from the seed, or the nearest live POP (`internet.routing`).
    pub internet_routing: String,
    /// Measured round trips the file pins (`internet.rtt`), used instead of the model's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub internet_pinned: Vec<String>,
    /// Places with no measured server within the per-place model's reach: their internet
    /// round trips come from its distance law alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub internet_beyond_reach: Vec<String>,
    /// POPs, regions and IDCs to each other.
    pub backbone: ModelReport,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    /// `uniform` (one stretch everywhere) or a calibration's name.
    pub name: String,
    /// Where its parameters come from: dataset, date, licence (or that it is not calibrated).
    pub source: String,
}

impl ModelReport {
    pub fn of(model: &anyedge_ccn::delay::DelayModel) -> ModelReport {
        ModelReport { name: model.name.clone(), source: model.source.clone() }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecurityGroupReport {
    pub name: String,
    pub rules: Vec<RuleReport>,
}

/// A rule and what it did: packets it was the first match for, and those it dropped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleReport {
    pub source: String,
    pub port: String,
    pub action: &'static str,
    pub matched: u64,
    pub denied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClbNodeReport {
    /// `clb/REGION/N`, N counted from 1 as fault targets name it.
    pub name: String,
    pub region: String,
    pub flows: u64,
    pub conn_table: ConnTableReport,
    /// Connection-table sync with the region's other nodes (absent for a lone node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncReport>,
}

/// A CLB node's connection-table sync traffic, across restarts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SyncReport {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Flows another node scheduled that arrived here and kept their backend.
    pub flows_adopted: u64,
    /// Entries dropped because the send queue was full.
    pub queue_overflow: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ConnTableReport {
    pub capacity: usize,
    pub peak: usize,
    pub evictions: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PopReport {
    pub name: String,
    pub location: [f64; 2],
    pub flows: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionReport {
    pub name: String,
    pub location: [f64; 2],
}

/// Routing moved a group's anycast traffic for a VIP to another POP (or to none).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatchmentChange {
    pub at_s: f64,
    pub vip: String,
    pub pop: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientReport {
    pub name: String,
    pub location: [f64; 2],
    pub count: u32,
    /// POP entered at t=0 (null when the VIP has no live POP for this group).
    pub pop: Option<String>,
    /// Every later move of its anycast traffic (POP failures and returns).
    pub catchment: Vec<CatchmentChange>,
    /// How routing delivers it to `pop` at t=0 (null when it has no route).
    pub route: Option<RouteReport>,
    pub traffic: Vec<TrafficReport>,
}

/// The way a group's anycast traffic takes to its POP at t=0, for the VIP of its first
/// traffic class, and what routing costs it over the nearest POP publishing that VIP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteReport {
    /// AS numbers from the group's access network to the CDN (64500), prepends included.
    pub as_path: Vec<u32>,
    /// The same by network names (`access/GROUP`, `transit/POP` without an AS-level
    /// internet in the file).
    pub as_path_names: Vec<String>,
    /// Round trip of the group↔POP leg alone, before the last mile (the internet model
    /// along the way BGP takes), ms.
    pub rtt_ms: f64,
    /// The POP publishing the VIP with the least round trip straight from the group.
    pub nearest_pop: Option<String>,
    /// That POP's straight round trip, ms.
    pub nearest_rtt_ms: f64,
    /// `rtt_ms - nearest_rtt_ms`: what routing adds over the nearest POP, ms.
    pub inflation_ms: f64,
    /// How much farther the POP entered is than the nearest publishing POP by great
    /// circle, km.
    pub inflation_km: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrafficReport {
    pub name: String,
    pub protocol: String,
    pub anycast: PathReport,
    pub direct: PathReport,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathReport {
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    /// Exact (nearest rank over every round trip), in ms to the microsecond.
    pub rtt_ms: Option<Percentiles>,
    pub jitter_ms: Option<f64>,
    /// Round trips in hdrhistogram's logarithmic buckets from 0.1 ms, each 5 % wider than
    /// the one before: (upper bound ms, count), only the buckets that hold some.
    pub histogram_ms: Vec<(f64, u64)>,
    /// Per second of the run, by when requests left.
    pub series: Vec<SecondReport>,
}

/// One second of a path: requests sent then, those answered, their p50 and p99.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecondReport {
    pub t_s: u64,
    pub sent: u64,
    pub received: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendReport {
    pub region: String,
    pub group: String,
    pub address: String,
    pub weight: u8,
    /// Flows it served: anycast and direct together, then each.
    pub flows: u64,
    pub flows_anycast: u64,
    pub flows_direct: u64,
    /// The first 16 client addresses it saw (lowest first) …
    pub client_addrs_seen: Vec<String>,
    /// … and how many distinct ones it saw in all.
    pub client_addrs_total: u64,
    pub health: Vec<HealthReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthReport {
    pub at_s: f64,
    pub state: &'static str,
    /// Why it went unhealthy, when the world can tell (a security group dropped the
    /// checks: which rule, from which address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultReport {
    pub at_s: f64,
    pub what: String,
    pub flows_affected: u64,
    pub flows_recovered: u64,
    /// From the fault to the first node noticing it (a probe or health check); null for
    /// faults no node detects (weights, links, the control plane, migrations).
    pub detected_ms: Option<f64>,
    /// Each node that noticed it (`pop/NAME`, `clb/REGION/N`, `internet` for the edge that
    /// withdraws POPs, `region/NAME/edge`), and when.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub noticed_ms: BTreeMap<String, f64>,
    pub recovery_ms: Option<Recovery>,
    pub flows_backend_changed: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Recovery {
    pub p50: f64,
    pub max: f64,
}

/// How the run went as a computation, kept out of the report (it varies run to run).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub events: u64,
    pub packets: u64,
    /// Of the packets, liveness probes and their answers (the control traffic that grows
    /// as POPs × CLB nodes).
    pub probe_packets: u64,
    pub wall_s: f64,
    pub events_per_s: f64,
    pub packets_per_s: f64,
    pub sim_s: f64,
    /// Partitions the world ran in (1: one queue), on how many threads, the windows'
    /// length (the lookahead) and how many windows.
    pub partitions: usize,
    pub threads: usize,
    pub lookahead_ms: f64,
    pub windows: u64,
    /// Processes the world ran on (`sim --mpi`: MPI ranks; 1 otherwise), the events
    /// partitions sent each other, and the bytes ranks exchanged for them.
    pub ranks: usize,
    pub crossings: u64,
    pub exchanged_bytes: u64,
    /// Each process's peak resident memory, by rank (one entry without MPI), as the
    /// command line reads it at the end; empty when nothing read it.
    pub peak_memory_bytes: Vec<u64>,
    /// By partition: the events of its own it ran (the same every run of the file and
    /// seed; `sim --balance-by` shares partitions by them). Empty when unpartitioned.
    pub partition_events: Vec<u64>,
    /// By rank (one entry without MPI): how its share of a partitioned run went.
    pub rank_loads: Vec<RankLoad>,
}

/// How one process's share of a partitioned run went: what it ran and where its time went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RankLoad {
    /// Events its worlds ran.
    pub events: u64,
    /// Crossings its partitions sent, and the bytes it sent other ranks for them.
    pub crossings: u64,
    pub exchanged_bytes: u64,
    /// Wall time running windows (the slowest of its threads' worlds, each window).
    pub windows_s: f64,
    /// Wall time between windows: crossings exchanged, sorted and delivered, faults
    /// tracked; over ranks, waiting for the slowest rank's window included.
    pub between_s: f64,
}

/// Rounds to microsecond precision when expressed in milliseconds.
pub fn ms3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Containers this deep (the report is 1, `clients` 2, a group 3 … a path's histogram and
/// series 7) are written on one line.
const INLINE_DEPTH: usize = 7;

/// serde_json's pretty printer (two spaces), except that arrays and objects nested
/// [`INLINE_DEPTH`] deep or deeper are written on one line: a path's percentiles,
/// histogram and seconds are a line each, so a client group costs about 4.5 KB of report
/// instead of 8.7 (a 4,000-group world: 18 MB, not 43).
struct ReportFormatter {
    depth: usize,
    has_value: bool,
}

impl ReportFormatter {
    fn inline(&self) -> bool {
        self.depth >= INLINE_DEPTH
    }

    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.depth {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// `[` or `{`: one level deeper.
    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    /// `]` or `}`: on a line of its own unless the container was empty or inline.
    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        let inline = self.inline();
        self.depth -= 1;
        if self.has_value && !inline {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    /// Before an element or a key: a comma after the first, then a new line, or a space
    /// when inline.
    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if self.inline() {
            return w.write_all(if first { b"" } else { b", " });
        }
        if !first {
            w.write_all(b",")?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for ReportFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

impl Report {
    /// The JSON report: pretty, but for what lies deep in a path (one line each).
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, ReportFormatter { depth: 0, has_value: false });
        let mut s = match serde::Serialize::serialize(self, &mut ser) {
            Ok(()) => String::from_utf8(out).unwrap_or_default(),
            Err(e) => format!("{{\"error\": \"{e}\"}}"),
        };
        s.push('\n');
        s
    }

    /// The human table: per client group and traffic class, anycast against direct.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "anyedge sim: {}  seed {}  {}s simulated", self.name, self.seed, self.duration_s);
        let m = &self.models;
        let pinned = match m.internet_pinned.len() {
            0 => String::new(),
            n => format!(", {n} pinned round trip(s)"),
        };
        let pinned = match m.internet_beyond_reach.len() {
            0 => pinned,
            _ => format!("{pinned}; the distance law alone at {}", m.internet_beyond_reach.join(", ")),
        };
        let _ = writeln!(
            out,
            "delay models: internet `{}` ({}{pinned}) + {} ms last mile ({}); backbone `{}` ({})",
            m.internet.name,
            m.internet.source,
            m.internet_last_mile_ms,
            m.internet_last_mile_source,
            m.backbone.name,
            m.backbone.source
        );
        let _ = writeln!(out, "catchments: {}", m.internet_routing);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:<14} {:>19} {:>7}   {:>19} {:>7}   {:>9}",
            "client", "traffic", "pop", "anycast p50/p99 ms", "loss", "direct p50/p99 ms", "loss", "p50 gain"
        );
        let _ = writeln!(
            out,
            "(round trips in ms: p50/p99 over every reply; loss: requests never answered, % of sent; p50 gain: direct p50 minus anycast p50, positive when anycast is faster)"
        );
        for c in &self.clients {
            for t in &c.traffic {
                let gain = match (&t.anycast.rtt_ms, &t.direct.rtt_ms) {
                    (Some(a), Some(d)) => format!("{:+.1} ms", d.p50 - a.p50),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "{:<14} {:<8} {:<14} {:>19} {:>6.2}%   {:>19} {:>6.2}%   {:>9}",
                    c.name,
                    t.name,
                    c.pop.as_deref().unwrap_or("-"),
                    p50_p99(&t.anycast),
                    t.anycast.loss_pct,
                    p50_p99(&t.direct),
                    t.direct.loss_pct,
                    gain
                );
            }
        }
        self.write_routes(&mut out);
        if !self.faults.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "fault timeline");
            for f in &self.faults {
                let recovery = match f.recovery_ms {
                    Some(r) => format!("recovery p50 {:.0} ms, max {:.0} ms", r.p50, r.max),
                    None => "no recovery".into(),
                };
                let detected = match f.detected_ms {
                    Some(d) => format!("detected {d:.0} ms"),
                    None => "detected -".into(),
                };
                let _ = writeln!(
                    out,
                    "  {:>8.3}s  {:<42} {}, flows {:>4} affected, {:>4} recovered, {}, {} changed backend",
                    f.at_s, f.what, detected, f.flows_affected, f.flows_recovered, recovery, f.flows_backend_changed
                );
            }
        }
        if let Some(c) = &self.control {
            let ok = |b: bool| if b { "ok" } else { "VIOLATED" };
            let latency = match &c.commit_latency_ms {
                Some(l) => format!("commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", l.p50, l.p99, l.max),
                None => "no commits".into(),
            };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "control plane ({} nodes): leader {} (term {}, commit {}), {} leader changes, {}/{} writes committed, {}",
                c.nodes,
                c.leader.as_deref().unwrap_or("none"),
                c.term,
                c.commit,
                c.leader_changes,
                c.writes_committed,
                c.writes,
                latency
            );
            let _ = writeln!(
                out,
                "  invariants: election safety {}, committed never lost {}, converged {}",
                ok(c.invariants.election_safety),
                ok(c.invariants.committed_never_lost),
                ok(c.invariants.converged)
            );
            let _ = writeln!(
                out,
                "  liveness: leader within bound {}, writes commit within bound {}, applied agree {}",
                ok(c.invariants.leader_within_bound),
                ok(c.invariants.writes_commit_within_bound),
                ok(c.invariants.applied_agree)
            );
        }
        if !self.violations.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "INVARIANTS VIOLATED (a bug in anyedge)");
            for v in &self.violations {
                let _ = writeln!(out, "  {v}");
            }
        }
        let explained: Vec<(&BackendReport, &HealthReport)> = self
            .backends
            .iter()
            .flat_map(|b| b.health.iter().filter(|h| h.reason.is_some()).map(move |h| (b, h)))
            .collect();
        if !explained.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "unhealthy backends");
            for (b, h) in explained {
                let reason = h.reason.as_deref().unwrap_or_default();
                let _ = writeln!(out, "  {:<22} at {:.1} s: {reason}", b.address, h.at_s);
            }
        }
        if !self.drops.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "drops");
            for (node, reasons) in &self.drops {
                let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
                let _ = writeln!(out, "  {:<22} {}", node, reasons.join(", "));
            }
        }
        out
    }
}

impl Report {
    /// Each group's way to its POP at t=0: the AS path, the round trip of the leg alone,
    /// and its inflation over the nearest POP.
    fn write_routes(&self, out: &mut String) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<14} {:<14} {:>7}   {:<14} {:>7}   {:>9} {:>9}   AS path",
            "catchment", "pop", "rtt ms", "nearest pop", "rtt ms", "infl. ms", "infl. km"
        );
        let _ = writeln!(
            out,
            "(at t=0 for each group's first VIP; rtt: the client↔POP leg alone, before the last mile; inflation: over the nearest POP publishing the VIP)"
        );
        for c in &self.clients {
            let Some(r) = &c.route else {
                let _ = writeln!(out, "{:<14} {:<14} (no route)", c.name, "-");
                continue;
            };
            // A way a hair shorter than the straight model's prints as 0, not -0.
            let inflation_ms = if r.inflation_ms.abs() < 0.05 { 0.0 } else { r.inflation_ms };
            let _ = writeln!(
                out,
                "{:<14} {:<14} {:>7.1}   {:<14} {:>7.1}   {:>+9.1} {:>9.0}   {}",
                c.name,
                c.pop.as_deref().unwrap_or("-"),
                r.rtt_ms,
                r.nearest_pop.as_deref().unwrap_or("-"),
                r.nearest_rtt_ms,
                inflation_ms,
                r.inflation_km,
                r.as_path_names.join(" ")
            );
        }
    }
}

fn p50_p99(p: &PathReport) -> String {
    match &p.rtt_ms {
        Some(r) => format!("{:.1} / {:.1}", r.p50, r.p99),
        None => "-".into(),
    }
}

/// A backend's health change read back (`sim --mpi` ranks send backends' rows): the
/// state is one of the two words the report writes.
impl<'de> Deserialize<'de> for HealthReport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HealthReport, D::Error> {
        #[derive(Deserialize)]
        struct Read {
            at_s: f64,
            state: String,
            reason: Option<String>,
        }
        let r = Read::deserialize(d)?;
        let state = match r.state.as_str() {
            "healthy" => "healthy",
            "unhealthy" => "unhealthy",
            other => return Err(serde::de::Error::custom(format!("health `{other}`: healthy or unhealthy"))),
        };
        Ok(HealthReport { at_s: r.at_s, state, reason: r.reason })
    }
}
