//! `anyedge bench`: benchmarks that print figures (never tests that fail on timing).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyedge_lab::failover::Fault;
use anyedge_region::scheduler::{Candidate, Maglev};
use serde::Serialize;

/// What `bench maglev` measures for removing one of N backends.
#[derive(Debug, Serialize)]
pub struct MaglevFigures {
    pub backends: usize,
    pub table: usize,
    /// The fullest backend's slots over the mean: 1.0 is perfect balance.
    pub max_over_avg: f64,
    /// Share of table slots whose backend changed when one backend was removed.
    pub disruption_pct: f64,
    /// The least any scheme can move: the removed backend's share.
    pub ideal_disruption_pct: f64,
    /// Median wall time of one table build.
    pub build_ms: f64,
}

pub fn maglev(backends: usize, table: usize) -> Result<MaglevFigures, String> {
    if backends < 2 {
        return Err("--backends must be at least 2 (one is removed)".into());
    }
    if table < backends || !(2..).take_while(|d| d * d <= table).all(|d| !table.is_multiple_of(d)) {
        return Err(format!("--table {table} must be a prime no smaller than --backends"));
    }
    let names: Vec<String> = (0..backends).map(|i| format!("198.19.{}.{}:8080", i / 250, i % 250 + 1)).collect();
    let all: Vec<Candidate> = names.iter().map(|n| Candidate { name: n, weight: 10 }).collect();
    let mut build_ns: Vec<u128> = (0..7)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(Maglev::build(std::hint::black_box(&all), table));
            start.elapsed().as_nanos()
        })
        .collect();
    build_ns.sort_unstable();
    let before = Maglev::build(&all, table);
    let counts = before.slot_counts(backends);
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let avg = table as f64 / backends as f64;
    let removed = backends / 2;
    let mut less = all.clone();
    less[removed].weight = 0;
    let after = Maglev::build(&less, table);
    let moved = (0..table as u32).filter(|&h| before.lookup(h) != after.lookup(h)).count();
    Ok(MaglevFigures {
        backends,
        table,
        max_over_avg: round4(max / avg),
        disruption_pct: round4(100.0 * moved as f64 / table as f64),
        ideal_disruption_pct: round4(100.0 * counts[removed] as f64 / table as f64),
        build_ms: round4(build_ns[build_ns.len() / 2] as f64 / 1e6),
    })
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n";
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// Prints a benchmark's summary line and writes its figures as JSON; exit 2 when it
/// could not run, 1 when the JSON could not be written.
pub fn report<F: Serialize>(
    name: &str,
    figures: Result<F, impl std::fmt::Display>,
    json: Option<std::path::PathBuf>,
    summary: impl Fn(&F) -> String,
) -> std::process::ExitCode {
    let f = match figures {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bench {name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!("{}", summary(&f));
    if let Some(path) = json
        && let Err(e) = write_json(&path, &f)
    {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

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
pub fn sim_one(file: &Path, scale: u32, threads: usize) -> Result<SimRun, String> {
    let mut t = anyedge_topology::load(file).map_err(|e| e.to_string())?;
    scale_clients(&mut t, scale);
    if let Some(why) = anyedge_sim::cost::refuse(&t) {
        return Err(format!("--scale {scale}: {why}"));
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
    let outcome = anyedge_sim::run_with(&t, &options, |_| {}).map_err(|e| e.0)?;
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
) -> Result<SimFigures, String> {
    if scales.is_empty() || scales.contains(&0) {
        return Err("--scale takes factors of 1 or more, e.g. 1,10,50".into());
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    anyedge_topology::load(file).map_err(|e| e.to_string())?;
    let mut measured: Vec<Vec<SimRun>> = scales.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (i, &scale) in scales.iter().enumerate() {
            progress(&format!("run {}/{runs}, scale {scale}×", run + 1));
            let out = std::process::Command::new(exe)
                .args(["bench", "sim-one"])
                .arg(file)
                .args(["--scale", &scale.to_string(), "--threads", &threads.to_string()])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(format!("scale {scale}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            let r: SimRun = serde_json::from_slice(&out.stdout).map_err(|e| format!("scale {scale}: {e}"))?;
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
) -> Result<LadderFigures, String> {
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
        };
        let text = anyedge_topology::generate::generate(&spec).map_err(|e| format!("--ladder {clients}: {e}"))?;
        let file = dir.join(format!("ladder-{clients}.yaml"));
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
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

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The lab forwarder's throughput and added latency on real packets (root).
    Lab {
        /// Topology file (the lab is brought up and down by the benchmark).
        file: PathBuf,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run nodes and probes in the ordinary scheduling class instead of SCHED_FIFO.
        #[arg(long)]
        no_realtime: bool,
        /// Queues the POP reads its TUN device with (default: one per core).
        #[arg(long, value_name = "N", value_parser = anyedge_lab::tunq::parse_count)]
        tun_queues: Option<usize>,
        /// Also measure a peer proxy in the same lab and run: `nginx` (its stream module as
        /// a one-hop UDP proxy between the same client and backend).
        #[arg(long, value_parser = ["nginx"])]
        peer: Option<String>,
        /// Peer processes chained one after another (with `--peer`): 3 crosses as many
        /// user-space processes each way as the VIP path (POP, CLB node, tunnel end).
        #[arg(long, value_name = "N", default_value_t = 1, requires = "peer",
              value_parser = clap::value_parser!(u8).range(1..=anyedge_lab::bench::MAX_PEER_HOPS as i64))]
        peer_hops: u8,
        /// Also show where the time goes: how long packets spend inside the POP, the CLB
        /// node and the backend host's tunnel end, from timestamps the nodes take.
        #[arg(long)]
        breakdown: bool,
    },
    /// Bulk TCP through the lab forwarder, measured by iperf3 (root): through a TCP listener
    /// to an `app: external` backend running `iperf3 -s`, and straight to the same host,
    /// impairments off; Gbit/s both ways, their ratio, retransmissions and each node's
    /// peak memory.
    Bulk {
        /// Topology file with a TCP listener whose backends are `app: external`
        /// (topologies/apps.yaml has one; the lab is brought up and down).
        file: PathBuf,
        /// The TCP listener's port (default: the first such listener).
        #[arg(long)]
        port: Option<u16>,
        /// Seconds each iperf3 run lasts.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Control-plane failover in a lab (root): kill the leader, time the first committed write.
    Control {
        /// Topology file with a `control:` section (the lab is brought up and down).
        file: PathBuf,
        /// Leader kills (each followed by a restart).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// BGP failover in a lab (root): a POP dies under load, `--kills` times (each followed
    /// by its recovery); detection (its transit's session down), withdrawal (no transit
    /// selects it) and each affected flow's longest wait for a reply.
    Failover {
        /// Topology file (the lab is brought up and down).
        file: PathBuf,
        /// The POP to kill (default: the first a client group enters).
        #[arg(long)]
        pop: Option<String>,
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// `freeze` (node and speaker hang: BFD finds it) or `kill` (the node stops, its
        /// speaker closes the session).
        #[arg(long, value_parser = ["freeze", "kill"], default_value = "freeze")]
        fault: String,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The simulator as the world grows: the file with every client count multiplied and
    /// each client's rate divided (the same packets from more flows), per scale wall time,
    /// events/s, deliveries/s, peak memory and memory per flow. Each run is a process.
    Sim {
        /// Topology file.
        #[arg(default_value = "topologies/global.yaml")]
        file: PathBuf,
        /// Client-count factors, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
        scale: Vec<u32>,
        /// Runs per scale (figures are medians; runs interleave the scales).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Instead of FILE: worlds `anyedge generate` makes (250 POPs, 25 regions, up to
        /// 4,000 groups) of these client counts, e.g. 10000,100000,1000000; prints wall
        /// time, deliveries/s, peak memory and the share of deliveries that are probes.
        #[arg(long, value_delimiter = ',', value_name = "CLIENTS")]
        ladder: Vec<u64>,
        /// Simulated time of each ladder world.
        #[arg(long, value_name = "TIME", default_value = "20s", value_parser = crate::duration_ns)]
        ladder_duration: u64,
        /// `sim --threads` for every run (default and most: the machine's cores).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One scale of `bench sim` in this process; prints its figures as JSON.
    #[command(hide = true)]
    SimOne {
        file: PathBuf,
        #[arg(long)]
        scale: u32,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Maglev table balance, disruption when one backend goes, and build time.
    Maglev {
        /// Number of backends.
        #[arg(long, default_value_t = 100)]
        backends: usize,
        /// Lookup table size (prime).
        #[arg(long, default_value_t = 65_537)]
        table: usize,
        /// Write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Runs a `bench` subcommand and prints its figures.
/// `bench sim --ladder`: the worlds generated into a scratch directory (removed after),
/// progress on a terminal, the table and JSON.
fn ladder_command(sizes: &[u64], duration_ns: u64, runs: usize, threads: usize, json: Option<PathBuf>) -> ExitCode {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
    let tty = std::io::stderr().is_terminal();
    let dir = std::env::temp_dir().join(format!("anyedge-ladder-{}", std::process::id()));
    let figures = std::fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|()| {
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

pub fn command(which: BenchCommand) -> ExitCode {
    match which {
        BenchCommand::Lab { file, json, no_realtime, tun_queues, peer, peer_hops, breakdown } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
            let options = anyedge_lab::bench::LabBench {
                realtime: !no_realtime,
                tun_queues,
                peer: peer.as_deref(),
                peer_hops: peer_hops.into(),
                breakdown,
            };
            let figures = anyedge_lab::bench::run(&file, &exe, options);
            report("lab", figures, json, lab_text)
        }
        BenchCommand::Bulk { file, port, seconds, json } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
            let figures = anyedge_lab::bulk::run(&file, &exe, port, seconds);
            report("bulk", figures, json, bulk_text)
        }
        BenchCommand::Failover { file, pop, kills, fault, json } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
            let fault = if fault == "kill" { Fault::Kill } else { Fault::Freeze };
            let figures = anyedge_lab::failover::failover(&file, &exe, pop.as_deref(), kills, fault);
            report("failover", figures, json, |f| {
                format!(
                    "failover: {} {} {} times under load from {}: detected p50 {:.0} ms (max {:.0}), withdrawn \
                     everywhere p50 {:.0} ms (max {:.0}; {:.1} ms after detection), gone from every transit p50 \
                     {:.0} ms (max {:.0}), replies resumed p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms over {} flows",
                    f.pop,
                    if f.fault == Fault::Kill { "killed" } else { "frozen" },
                    f.kills,
                    f.groups.join(", "),
                    f.detect_ms_p50,
                    f.detect_ms_max,
                    f.withdrawn_ms_p50,
                    f.withdrawn_ms_max,
                    f.converge_ms_p50,
                    f.propagated_ms_p50,
                    f.propagated_ms_max,
                    f.resume_ms_p50,
                    f.resume_ms_p90,
                    f.resume_ms_max,
                    f.resume_ms.len()
                )
            })
        }
        BenchCommand::Control { file, rounds, json } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
            let figures = anyedge_lab::bench::control(&file, &exe, rounds);
            report("control", figures, json, |f| {
                format!(
                    "control: leader killed → first committed write: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms over {} rounds, \
                 {} without a commit (election timeouts {}–{} ms); write → commit with a leader: median {:.0} ms",
                    f.failover_ms_median,
                    f.failover_ms_p90,
                    f.failover_ms_max,
                    f.rounds,
                    f.failed_rounds,
                    f.election_timeout_ms[0],
                    f.election_timeout_ms[1],
                    f.commit_ms_median
                )
            })
        }
        BenchCommand::Sim { ladder: sizes, ladder_duration, runs, json, threads, .. } if !sizes.is_empty() => {
            ladder_command(&sizes, ladder_duration, runs, crate::threads_or_cores(threads), json)
        }
        BenchCommand::Sim { file, scale, runs, json, threads, .. } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("anyedge"));
            let tty = std::io::stderr().is_terminal();
            let figures = sim(&exe, &file, &scale, runs, crate::threads_or_cores(threads), |what| {
                if tty {
                    eprint!("\r\x1b[2Kbench sim: {what}");
                }
            });
            if tty {
                eprint!("\r\x1b[2K");
            }
            report("sim", figures, json, |f| sim_table(f).trim_end().to_string())
        }
        BenchCommand::SimOne { file, scale, threads } => match sim_one(&file, scale, threads) {
            Ok(run) => {
                println!("{}", serde_json::to_string(&run).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        BenchCommand::Maglev { backends, table, json } => report("maglev", maglev(backends, table), json, |f| {
            format!(
                "maglev N={} M={}: max/avg {:.4}, disruption {:.3}% (ideal {:.3}%), build {:.3} ms",
                f.backends, f.table, f.max_over_avg, f.disruption_pct, f.ideal_disruption_pct, f.build_ms
            )
        }),
    }
}

/// p50/p99/p99.9 as `a/b/c µs`.
fn quantiles_us(q: [u64; 3]) -> String {
    format!("{}/{}/{} µs", q[0], q[1], q[2])
}

/// `bench bulk`'s figures as the lines it prints.
fn bulk_text(f: &anyedge_lab::bulk::BulkFigures) -> String {
    let mut s = format!(
        "bulk TCP, {} from client/{}, {} s each, impairments off:\n  through the VIP ({} → {}): {:.2} Gbit/s, {} retransmits\n  direct ({}): {:.2} Gbit/s, {} retransmits\n  VIP / direct: {:.2}x\n  peak memory:",
        f.iperf3,
        f.client,
        f.seconds,
        f.listener,
        f.backend,
        f.vip.gbit_per_s,
        f.vip.retransmits,
        f.direct,
        f.direct_path.gbit_per_s,
        f.direct_path.retransmits,
        f.ratio,
    );
    for (node, kib) in &f.peak_rss_kib {
        s.push_str(&format!(" {node} {:.1} MiB", *kib as f64 / 1024.0));
    }
    s.push('\n');
    s
}

/// `bench lab`'s figures as the lines it prints.
fn lab_text(f: &anyedge_lab::bench::LabFigures) -> String {
    let mut line = format!(
        "lab{}, POP TUN queues {}: {:.0} round trips/s through the VIP (two hops: POP, CLB), {:.0} direct ({:.2}x); added latency at 10k/s p50 {} µs, p99 {} µs, p99.9 {} µs (round trips p50/p99/p99.9: VIP {}, direct {}; an added figure below zero is noise in that quantile)",
        if f.realtime { " (SCHED_FIFO)" } else { "" },
        f.tun_queues,
        f.pps,
        f.direct_pps,
        f.pps / f.direct_pps.max(1.0),
        f.added_p50_us,
        f.added_p99_us,
        f.added_p999_us,
        quantiles_us(f.vip_rtt_us),
        quantiles_us(f.direct_rtt_us)
    );
    if let Some(p) = &f.peer {
        if p.measured {
            line += &format!(
                "\n{}: {:.0} round trips/s through {} ({:.2}x direct); added latency at 10k/s p50 {} µs, p99 {} µs, p99.9 {} µs (round trips {}; {})",
                p.name,
                p.pps,
                if p.hops == 1 { "one hop".to_string() } else { format!("{} hops", p.hops) },
                p.pps / f.direct_pps.max(1.0),
                p.added_p50_us,
                p.added_p99_us,
                p.added_p999_us,
                quantiles_us(p.rtt_us),
                p.what
            );
        } else {
            line += &format!("\n{}: {}", p.name, p.what);
        }
    }
    line += &cpu_text(f);
    if !f.breakdown.is_empty() {
        line += "\ninside each node of the VIP path at 10k/s (wake-up to send; p50 / p99 / p99.9 / max, µs):";
        for h in &f.breakdown {
            let us = |ns: u64| ns as f64 / 1000.0;
            line += &format!(
                "\n  {:<8} {:<8} {:>8.1} {:>8.1} {:>8.1} {:>9.1}  {} packets, {}",
                h.hop,
                h.way,
                us(h.p50_ns),
                us(h.p99_ns),
                us(h.p999_ns),
                us(h.max_ns),
                h.packets,
                h.node
            );
        }
    }
    line
}

/// What the paced rounds cost the host, and, when the VIP rounds kept a core past the
/// kernel's real-time budget with the nodes SCHED_FIFO, what that does to the tail.
fn cpu_text(f: &anyedge_lab::bench::LabFigures) -> String {
    let path = |name: &str, c: &anyedge_lab::bench::PathCpu| {
        let parts: Vec<String> = c.by_process_us.iter().map(|(k, us)| format!("{k} {us:.0}")).collect();
        format!("{name} {:.0} ({})", c.per_round_trip_us, parts.join(", "))
    };
    let waits = |c: &anyedge_lab::bench::PathCpu| {
        if c.waited_us.is_empty() {
            return "not measured (this kernel keeps no schedstat)".to_string();
        }
        c.waited_us.iter().map(|(k, us)| format!("{k} {us:.1}")).collect::<Vec<_>>().join(", ")
    };
    let mut paths = vec![path("VIP", &f.cpu.vip), path("direct", &f.cpu.direct)];
    let mut busy = vec![
        format!(
            "VIP {:.0} % (busiest core-second {:.0} %)",
            f.cpu.vip.host_busy_pct, f.cpu.vip.busiest_core_second_pct
        ),
        format!("direct {:.0} % ({:.0} %)", f.cpu.direct.host_busy_pct, f.cpu.direct.busiest_core_second_pct),
    ];
    if let (Some(c), Some(p)) = (&f.cpu.peer, &f.peer) {
        paths.push(path(&p.name, c));
        busy.push(format!("{} {:.0} % ({:.0} %)", p.name, c.host_busy_pct, c.busiest_core_second_pct));
    }
    let mut text = format!(
        "\nhost CPU per round trip at 10k/s, µs (by process; the kernel's forwarding counts to the sender): {}\nhost busy at 10k/s: {}\nnodes waiting for a CPU per round trip at 10k/s, µs: VIP {}; direct {}",
        paths.join("; "),
        busy.join(", "),
        waits(&f.cpu.vip),
        waits(&f.cpu.direct)
    );
    if let Some(note) = rt_budget_note(f) {
        text += "\n";
        text += &note;
    }
    text
}

/// Within this many points of the real-time budget, a core's busy second counts as at it
/// (the samples are 100 ms apart and not aligned with the kernel's period).
const RT_BUDGET_MARGIN_PCT: f64 = 5.0;

/// The warning for VIP rounds that ran a core into the kernel's real-time budget.
fn rt_budget_note(f: &anyedge_lab::bench::LabFigures) -> Option<String> {
    let (Some(runtime), Some(period)) = (f.cpu.rt_runtime_us, f.cpu.rt_period_us) else { return None };
    if !f.realtime || runtime < 0 || runtime as u64 >= period {
        return None;
    }
    let budget_pct = 100.0 * runtime as f64 / period as f64;
    let busiest = f.cpu.vip.busiest_core_second_pct;
    (busiest >= budget_pct - RT_BUDGET_MARGIN_PCT).then(|| {
        format!(
            "note: in the VIP rounds a core was {busiest:.0} % busy for a second. The kernel stops SCHED_FIFO tasks on a core once they have run {runtime} of every {period} µs there (kernel.sched_rt_runtime_us), for the rest of the period (up to {} ms), even with the core idle: a p99 of milliseconds here is that stop, not a queue in the forwarder. To see the forwarder's own tail, lift the limit for the run (sysctl -w kernel.sched_rt_runtime_us=-1, and set it back to {runtime} after) or measure on a host with more cores.",
            (period - runtime as u64) / 1000
        )
    })
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

    fn lab_figures(realtime: bool, busiest: f64, rt_runtime_us: i64) -> anyedge_lab::bench::LabFigures {
        use anyedge_lab::bench::{CpuFigures, LabFigures, PathCpu};
        let path = |us: f64, busiest: f64| PathCpu {
            per_round_trip_us: us,
            by_process_us: [("pop".to_string(), us / 2.0), ("probe".to_string(), us / 2.0)].into(),
            waited_us: [("pop".to_string(), us / 100.0)].into(),
            host_busy_pct: busiest - 5.0,
            busiest_core_second_pct: busiest,
        };
        LabFigures {
            pps: 30_000.0,
            direct_pps: 60_000.0,
            added_p50_us: 200,
            added_p99_us: 12_000,
            added_p999_us: 20_000,
            vip_rtt_us: [250, 12_100, 20_500],
            direct_rtt_us: [50, 100, 500],
            realtime,
            tun_queues: 2,
            peer: None,
            breakdown: Vec::new(),
            cpu: CpuFigures {
                vip: path(190.0, busiest),
                direct: path(80.0, 50.0),
                peer: None,
                rt_runtime_us: Some(rt_runtime_us),
                rt_period_us: Some(1_000_000),
            },
        }
    }

    #[test]
    fn bench_lab_shows_the_cpu_per_round_trip_and_warns_when_the_vip_rounds_reach_the_real_time_budget() {
        let text = lab_text(&lab_figures(true, 97.0, 950_000));
        assert!(text.contains("host CPU per round trip at 10k/s, µs"), "{text}");
        assert!(text.contains("VIP 190 (pop 95, probe 95); direct 80 (pop 40, probe 40)"), "{text}");
        assert!(text.contains("host busy at 10k/s: VIP 92 % (busiest core-second 97 %), direct 45 % (50 %)"), "{text}");
        assert!(
            text.contains("nodes waiting for a CPU per round trip at 10k/s, µs: VIP pop 1.9; direct pop 0.8"),
            "{text}"
        );
        assert!(text.contains("run 950000 of every 1000000 µs") && text.contains("up to 50 ms"), "{text}");
        assert!(text.contains("sysctl -w kernel.sched_rt_runtime_us=-1"), "{text}");
        // Below the budget, without SCHED_FIFO, or with the limit lifted: no warning.
        for quiet in [lab_figures(true, 80.0, 950_000), lab_figures(false, 97.0, 950_000), lab_figures(true, 100.0, -1)]
        {
            let text = lab_text(&quiet);
            assert!(text.contains("host busy at 10k/s") && !text.contains("note:"), "{text}");
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
