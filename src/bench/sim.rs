//! `bench sim`: the simulator as the world grows (a file's clients multiplied, or worlds
//! `anyedge generate` makes), each run a process of its own (`bench sim-one`).

use anyhow::anyhow;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::{report, round4};

/// One scale of `bench sim`: the world with every group's client count multiplied and
/// each client's rate divided by the same factor, so the packets sent stay the same.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SimScale {
    pub scale: u32,
    #[serde(flatten)]
    pub counts: SimCounts,
    /// Median wall time of the runs.
    pub wall_s: f64,
    pub events_per_s: f64,
    pub deliveries_per_s: f64,
    /// The run's peak resident memory (each run is its own process).
    pub peak_rss_mb: f64,
    /// Peak memory over flows.
    pub kb_per_flow: f64,
    /// What each flow added over the smallest scale: (peak − peak at the smallest
    /// scale) / (flows − its flows); absent at the smallest scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marginal_kb_per_flow: Option<f64>,
    /// Events/s over the smallest scale's events/s.
    pub rate_vs_smallest: f64,
    /// Every run's wall time, in the order they ran (runs interleave the scales).
    pub wall_s_runs: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct SimFigures {
    pub file: String,
    pub runs: usize,
    /// `sim --threads` of every run.
    pub threads: usize,
    pub scales: Vec<SimScale>,
}

/// What a scale of the world is and did (the same in every run of it).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SimCounts {
    pub clients: u64,
    /// Client × traffic class pairs: each is a flow (a UDP source port, a TCP or QUIC
    /// connection).
    pub flows: u64,
    pub tcp_flows: u64,
    pub events: u64,
    /// Packets delivered over modelled links.
    pub deliveries: u64,
    /// Requests clients sent, over both paths (anycast and direct; floods not counted).
    pub requests: u64,
    /// Of them, answered.
    pub answered: u64,
    /// Deliveries that were liveness probes or their answers.
    #[serde(default)]
    pub probe_deliveries: u64,
}

impl SimCounts {
    /// Percent of requests answered: the work a scale did, to hold against the others.
    pub fn answered_pct(&self) -> f64 {
        if self.requests == 0 { 100.0 } else { 100.0 * self.answered as f64 / self.requests as f64 }
    }
}

/// How far (in percentage points) a scale's answered share may stray from the smallest
/// scale's before its rate is not a like-for-like comparison: a world that refuses or
/// loses more of the same requests does less work per packet sent.
pub const ANSWERED_DRIFT_MAX_PCT: f64 = 1.0;

/// The scales whose worlds did not do the smallest scale's work, as warnings to print.
pub fn sim_unlike(f: &SimFigures) -> Vec<String> {
    let Some(base) = f.scales.iter().min_by_key(|r| r.scale) else { return Vec::new() };
    let base_pct = base.counts.answered_pct();
    f.scales
        .iter()
        .filter(|r| (r.counts.answered_pct() - base_pct).abs() > ANSWERED_DRIFT_MAX_PCT)
        .map(|r| {
            format!(
                "warning: at {}× {:.2} % of requests were answered, at {}× {:.2} %: the worlds did different \
                 work, so their rates do not compare (read the scaled world's report: `anyedge bench sim-one` \
                 runs it alone)",
                r.scale,
                r.counts.answered_pct(),
                base.scale,
                base_pct
            )
        })
        .collect()
}

/// What one child process measured (`bench sim-one`): run statistics and its peak memory.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct SimRun {
    #[serde(flatten)]
    pub counts: SimCounts,
    pub wall_s: f64,
    pub peak_rss_bytes: u64,
}

/// Multiplies every client group's count by `scale` and divides each client's rate by
/// it: the same packets from `scale` times as many flows.
pub fn scale_clients(t: &mut anyedge_topology::Topology, scale: u32) {
    use anyedge_topology::TrafficKind;
    for g in &mut t.clients {
        g.count = g.count.saturating_mul(scale);
    }
    // Past the default pool (49,149 addresses), clients are numbered from the block
    // `anyedge generate` uses, as a file would say with `clients_block:`; a world that
    // fits keeps its addresses. (`bench sim --scale 200` on global.yaml was refused.)
    let pooled: u128 = t.clients.iter().filter(|g| g.address.is_none()).map(|g| u128::from(g.count)).sum();
    if t.clients_block.is_none() && pooled > anyedge_topology::ClientPool::DEFAULT.len() {
        t.clients_block =
            Some(anyedge_topology::Cidr { addr: std::net::Ipv4Addr::new(100, 64, 0, 0).into(), prefix: 10 });
    }
    let s = f64::from(scale);
    for class in &mut t.traffic {
        match &mut class.kind {
            TrafficKind::Udp { interval_ns, .. } => *interval_ns = interval_ns.saturating_mul(u64::from(scale)),
            TrafficKind::Tcp { requests_per_s, .. } | TrafficKind::Quic { requests_per_s, .. } => *requests_per_s /= s,
            TrafficKind::SynFlood { rate_per_s } => *rate_per_s /= s,
        }
    }
}

/// Runs one scale in this process and measures it (the child side of `bench sim`).
pub fn sim_one(file: &Path, scale: u32, threads: usize) -> anyhow::Result<SimRun> {
    let mut t = anyedge_topology::load(file).map_err(|e| anyhow!("{e}"))?;
    scale_clients(&mut t, scale);
    if let Some(why) = anyedge_sim::cost::refuse(&t) {
        return Err(anyhow!("--scale {scale}: {why}"));
    }
    let clients: u64 = t.clients.iter().map(|g| u64::from(g.count)).sum();
    let flows: u64 = t.clients.iter().map(|g| u64::from(g.count) * g.traffic.len() as u64).sum();
    let tcp_flows: u64 = t
        .clients
        .iter()
        .map(|g| {
            let tcp =
                g.traffic.iter().filter(|&&k| matches!(t.traffic[k].kind, anyedge_topology::TrafficKind::Tcp { .. }));
            u64::from(g.count) * tcp.count() as u64
        })
        .sum();
    let options = anyedge_sim::Options { threads, ..Default::default() };
    let outcome = anyedge_sim::run_with(&t, &options, |_| {}).map_err(|e| anyhow!("{}", e.0))?;
    let (mut requests, mut answered) = (0, 0);
    for (group, client) in t.clients.iter().zip(&outcome.report.clients) {
        for (&k, traffic) in group.traffic.iter().zip(&client.traffic) {
            if matches!(t.traffic[k].kind, anyedge_topology::TrafficKind::SynFlood { .. }) {
                continue;
            }
            requests += traffic.anycast.sent + traffic.direct.sent;
            answered += traffic.anycast.received + traffic.direct.received;
        }
    }
    Ok(SimRun {
        counts: SimCounts {
            clients,
            flows,
            tcp_flows,
            events: outcome.stats.events,
            deliveries: outcome.stats.packets,
            requests,
            answered,
            probe_deliveries: outcome.stats.probe_packets,
        },
        wall_s: outcome.stats.wall_s,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// This process's peak resident set (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

/// `bench sim`: every scale `runs` times, each run in a fresh process (so peak memory is
/// the run's own), scales interleaved so the machine's drift touches them alike.
pub fn sim(
    exe: &Path,
    file: &Path,
    scales: &[u32],
    runs: usize,
    threads: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SimFigures> {
    if scales.is_empty() || scales.contains(&0) {
        return Err(anyhow!("--scale takes factors of 1 or more, e.g. 1,10,50"));
    }
    if runs == 0 {
        return Err(anyhow!("--runs must be at least 1"));
    }
    anyedge_topology::load(file).map_err(|e| anyhow!("{e}"))?;
    let mut measured: Vec<Vec<SimRun>> = scales.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (i, &scale) in scales.iter().enumerate() {
            progress(&format!("run {}/{runs}, scale {scale}×", run + 1));
            let out = std::process::Command::new(exe)
                .args(["bench", "sim-one"])
                .arg(file)
                .args(["--scale", &scale.to_string(), "--threads", &threads.to_string()])
                .output()
                .map_err(|e| anyhow!("cannot run {}: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(anyhow!("scale {scale}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            let r: SimRun = serde_json::from_slice(&out.stdout).map_err(|e| anyhow!("scale {scale}: {e}"))?;
            measured[i].push(r);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rows: Vec<SimScale> = Vec::new();
    for (i, &scale) in scales.iter().enumerate() {
        let rs = &measured[i];
        let wall_s = median(rs.iter().map(|r| r.wall_s).collect());
        let peak = median(rs.iter().map(|r| r.peak_rss_bytes as f64).collect());
        let counts = rs[0].counts.clone();
        let (events, deliveries, flows) = (counts.events, counts.deliveries, counts.flows);
        rows.push(SimScale {
            scale,
            counts,
            wall_s: round4(wall_s),
            events_per_s: (events as f64 / wall_s).round(),
            deliveries_per_s: (deliveries as f64 / wall_s).round(),
            peak_rss_mb: round4(peak / 1e6),
            kb_per_flow: round4(peak / 1e3 / flows.max(1) as f64),
            marginal_kb_per_flow: None,
            rate_vs_smallest: 0.0,
            wall_s_runs: rs.iter().map(|r| round4(r.wall_s)).collect(),
        });
    }
    let smallest = (0..rows.len()).min_by_key(|&i| rows[i].scale).unwrap_or(0);
    let (base_rate, base_peak, base_flows) =
        (rows[smallest].events_per_s, rows[smallest].peak_rss_mb * 1e6, rows[smallest].counts.flows);
    for row in &mut rows {
        row.rate_vs_smallest = round4(row.events_per_s / base_rate.max(1.0));
        if row.counts.flows > base_flows {
            let extra = row.peak_rss_mb * 1e6 - base_peak;
            row.marginal_kb_per_flow = Some(round4(extra / 1e3 / (row.counts.flows - base_flows) as f64));
        }
    }
    Ok(SimFigures { file: file.display().to_string(), runs, threads, scales: rows })
}

/// `bench sim --ladder`: generated worlds (`anyedge generate`: 250 POPs, 25 regions,
/// 4,000 groups) of each client count, one scale each.
#[derive(Debug, Serialize)]
pub struct LadderFigures {
    pub duration_s: u64,
    pub runs: usize,
    pub threads: usize,
    pub rungs: Vec<SimScale>,
}

/// Runs the ladder: each size generated into `dir`, then measured as `bench sim` does.
pub fn ladder(
    exe: &Path,
    sizes: &[u64],
    duration_s: u64,
    runs: usize,
    threads: usize,
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<LadderFigures> {
    let mut rungs = Vec::new();
    for &clients in sizes {
        let spec = anyedge_topology::generate::Spec {
            name: format!("ladder-{clients}"),
            pops: 250,
            regions: 25,
            clients,
            groups: 4_000.min(clients as usize),
            web_every: 10,
            clb_nodes: 2,
            duration_s,
            seed: 1,
            internet: false,
        };
        let text = anyedge_topology::generate::generate(&spec).map_err(|e| anyhow!("--ladder {clients}: {e}"))?;
        let file = dir.join(format!("ladder-{clients}.yaml"));
        std::fs::write(&file, text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        let figures = sim(exe, &file, &[1], runs, threads, |what| progress(&format!("{clients} clients: {what}")))?;
        rungs.extend(figures.scales);
    }
    Ok(LadderFigures { duration_s, runs, threads, rungs })
}

/// "N threads" (or "1 thread").
fn threads_of(threads: usize) -> String {
    format!("{threads} thread{}", if threads == 1 { "" } else { "s" })
}

/// "medians of N runs" (or "of 1 run").
fn medians_of(runs: usize) -> String {
    format!("medians of {runs} run{}", if runs == 1 { "" } else { "s" })
}

/// The ladder's table: per size, wall time, deliveries/s, peak memory, probe share.
pub fn ladder_table(f: &LadderFigures) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "bench sim --ladder: generated worlds (250 POPs, 25 regions, up to 4,000 groups), {} s simulated on {}; {}\n",
        f.duration_s,
        threads_of(f.threads),
        medians_of(f.runs)
    );
    let _ = writeln!(
        s,
        "{:>9} {:>11} {:>9} {:>8} {:>12} {:>9} {:>10} {:>12}",
        "clients", "deliveries", "answered", "wall s", "deliveries/s", "peak MB", "KB/client", "probe share"
    );
    for r in &f.rungs {
        let c = &r.counts;
        let share = 100.0 * c.probe_deliveries as f64 / c.deliveries.max(1) as f64;
        let _ = writeln!(
            s,
            "{:>9} {:>11} {:>8.2}% {:>8.2} {:>11.3}M {:>9.0} {:>10.2} {:>11.1}%",
            c.clients,
            c.deliveries,
            c.answered_pct(),
            r.wall_s,
            r.deliveries_per_s / 1e6,
            r.peak_rss_mb,
            r.peak_rss_mb * 1e3 / c.clients.max(1) as f64,
            share
        );
    }
    s
}

/// `bench sim`'s table.
pub fn sim_table(f: &SimFigures) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "bench sim {} (client counts × scale, each client's rate ÷ scale; {}; {})\n",
        f.file,
        threads_of(f.threads),
        medians_of(f.runs)
    );
    let _ = writeln!(
        s,
        "{:>6} {:>8} {:>8} {:>11} {:>11} {:>9} {:>8} {:>10} {:>12} {:>6} {:>9} {:>10} {:>9}",
        "scale",
        "clients",
        "flows",
        "events",
        "deliveries",
        "answered",
        "wall s",
        "events/s",
        "deliveries/s",
        "vs 1st",
        "peak MB",
        "KB/flow",
        "+KB/flow"
    );
    for r in &f.scales {
        let _ = writeln!(
            s,
            "{:>5}× {:>8} {:>8} {:>11} {:>11} {:>8.2}% {:>8.2} {:>9.2}M {:>11.2}M {:>6.2} {:>9.0} {:>10.1} {:>9}",
            r.scale,
            r.counts.clients,
            r.counts.flows,
            r.counts.events,
            r.counts.deliveries,
            r.counts.answered_pct(),
            r.wall_s,
            r.events_per_s / 1e6,
            r.deliveries_per_s / 1e6,
            r.rate_vs_smallest,
            r.peak_rss_mb,
            r.kb_per_flow,
            r.marginal_kb_per_flow.map(|k| format!("{k:.1}")).unwrap_or_else(|| "-".into()),
        );
    }
    s.push_str(
        "answered: requests answered, both paths; vs 1st: events/s over the first scale's; +KB/flow: peak memory \
         each flow added over the smallest scale\n",
    );
    for w in sim_unlike(f) {
        s.push_str(&w);
        s.push('\n');
    }
    s
}

/// `bench sim FILE`: every scale, progress on a terminal, the table and JSON.
pub fn run(file: &Path, scales: &[u32], runs: usize, threads: usize, json: Option<PathBuf>) -> ExitCode {
    let tty = std::io::stderr().is_terminal();
    let figures = sim(&super::exe(), file, scales, runs, threads, |what| {
        if tty {
            eprint!("\r\x1b[2Kbench sim: {what}");
        }
    });
    if tty {
        eprint!("\r\x1b[2K");
    }
    report("sim", figures, json, |f| sim_table(f).trim_end().to_string())
}

/// `bench sim-one`: one scale in this process, its figures as JSON on standard output.
pub fn one(file: &Path, scale: u32, threads: usize) -> ExitCode {
    match sim_one(file, scale, threads) {
        Ok(run) => {
            println!("{}", serde_json::to_string(&run).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `bench sim --ladder`: the worlds generated into a scratch directory (removed after),
/// progress on a terminal, the table and JSON.
pub fn ladder_command(sizes: &[u64], duration_ns: u64, runs: usize, threads: usize, json: Option<PathBuf>) -> ExitCode {
    let exe = super::exe();
    let tty = std::io::stderr().is_terminal();
    let dir = std::env::temp_dir().join(format!("anyedge-ladder-{}", std::process::id()));
    let figures = std::fs::create_dir_all(&dir).map_err(|e| anyhow!("{e}")).and_then(|()| {
        ladder(&exe, sizes, (duration_ns / 1_000_000_000).max(1), runs, threads, &dir, |what| {
            if tty {
                eprint!("\r\x1b[2Kbench sim: {what}");
            }
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    if tty {
        eprint!("\r\x1b[2K");
    }
    report("sim", figures, json, |f| ladder_table(f).trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_scaled_past_the_default_client_pool_numbers_its_clients_from_a_larger_block() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/global.yaml");
        let mut fits = anyedge_topology::load(&file).unwrap();
        scale_clients(&mut fits, 50);
        assert_eq!(fits.clients_block, None, "42,500 clients fit the default pool: their addresses stay");
        let mut large = anyedge_topology::load(&file).unwrap();
        scale_clients(&mut large, 200);
        assert_eq!(large.clients_block.map(|b| b.to_string()), Some("100.64.0.0/10".to_string()));
        assert!(large.client_pool().len() >= 170_000);
    }

    fn scale(scale: u32, requests: u64, answered: u64) -> SimScale {
        SimScale {
            scale,
            counts: SimCounts {
                clients: 1,
                flows: 1,
                tcp_flows: 0,
                events: 1,
                deliveries: 1,
                requests,
                answered,
                probe_deliveries: 0,
            },
            wall_s: 1.0,
            events_per_s: 1.0,
            deliveries_per_s: 1.0,
            peak_rss_mb: 1.0,
            kb_per_flow: 1.0,
            marginal_kb_per_flow: None,
            rate_vs_smallest: 1.0,
            wall_s_runs: vec![1.0],
        }
    }

    #[test]
    fn bench_sim_warns_when_a_scaled_world_answers_fewer_requests_than_the_smallest() {
        let figures = |rows| SimFigures { file: "w.yaml".into(), runs: 1, threads: 1, scales: rows };
        let same = figures(vec![scale(1, 10_000, 9_400), scale(50, 10_000, 9_350)]);
        assert!(sim_unlike(&same).is_empty(), "half a point apart is the same work");
        assert!(!sim_table(&same).contains("warning"));
        let broken = figures(vec![scale(1, 10_000, 9_400), scale(10, 10_000, 9_390), scale(50, 10_000, 2_860)]);
        let warnings = sim_unlike(&broken);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("at 50× 28.60 % of requests were answered, at 1× 94.00 %"), "{}", warnings[0]);
        assert!(sim_table(&broken).contains(&warnings[0]));
    }
}
