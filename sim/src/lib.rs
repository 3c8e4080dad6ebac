//! anyedge's deterministic simulator: a topology file in, a report out. The POP and CLB
//! cores it runs are the shipped ones; the simulator supplies clock, links and hosts.

pub mod app;
pub mod chaos;
pub mod control;
pub mod cost;
pub mod html;
pub mod parallel;
pub mod raft_liveness;
pub mod ranks;
pub mod report;
pub mod tls;
pub mod world;

use std::time::Instant;

pub use report::{RankLoad, Report, Stats};
pub use world::SimError;

/// What a run produced.
pub struct Outcome {
    pub report: Report,
    pub stats: Stats,
    /// Per fault (report order), every recovered flow's fault-to-first-reply time.
    pub recoveries_ns: Vec<Vec<u64>>,
    /// QUIC handshakes the CLB nodes accepted.
    pub quic_handshakes: u64,
    /// HTTP/3 requests CLB nodes forwarded to backends.
    pub quic_h3_requests: u64,
    /// [client group][traffic class of the group]: when it last got an anycast reply.
    pub last_reply_ns: Vec<Vec<Option<u64>>>,
}

/// Runs a topology to the end of its duration (plus a drain for in-flight replies); a
/// broken invariant is an error naming the seed.
pub fn run(topology: &anyedge_topology::Topology, progress: impl FnMut(f64)) -> Result<Outcome, SimError> {
    let outcome = run_report(topology, progress)?;
    if !outcome.report.violations.is_empty() {
        return Err(SimError(format!(
            "invariant violated (a bug in anyedge, seed {}):\n  {}",
            topology.seed,
            outcome.report.violations.join("\n  ")
        )));
    }
    Ok(outcome)
}

/// Runs a topology and returns its report even when an invariant broke: then the
/// report's `violations` lists what broke (and the control section's invariants say which).
pub fn run_report(topology: &anyedge_topology::Topology, progress: impl FnMut(f64)) -> Result<Outcome, SimError> {
    run_with(topology, &Options::default(), progress)
}

/// What a run writes besides its report.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A pcap per node of every packet that reaches it, in this directory.
    pub pcap: Option<std::path::PathBuf>,
    /// Which packets the capture keeps, and how much of each.
    pub capture: CaptureFilter,
    /// How backbone envelopes are tagged (`--auth`): the simulator's fast keyed hash, or
    /// the lab's AES-256-GCM (`real`, when captures must carry the lab's bytes).
    pub auth: SimAuth,
    /// Threads to run a partitioned world on (at least 1; the report is the same for
    /// any number).
    pub threads: usize,
    /// Events each partition ran in an earlier run of the file (`--balance-by`, from its
    /// `--stats`): ranks and threads share partitions by them instead of by the file's
    /// expected load. The report is the same either way.
    pub balance: Option<Vec<u64>>,
}

/// `sim --auth`: which tags the run's backbone envelopes carry (the report names it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SimAuth {
    #[default]
    Fast,
    Real,
}

impl SimAuth {
    pub fn tags(self) -> anyedge_ccn::Tags {
        match self {
            SimAuth::Fast => anyedge_ccn::Tags::Fast,
            SimAuth::Real => anyedge_ccn::Tags::Aead,
        }
    }
}

/// A capture sized to the question: the nodes named (names or `*` globs; none: every
/// node), a simulated-time window, and how many bytes of each packet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureFilter {
    pub nodes: Vec<String>,
    /// Packets arriving at or after this simulated time (ns).
    pub from_ns: Option<u64>,
    /// Packets arriving before this simulated time (ns).
    pub to_ns: Option<u64>,
    /// At most this many bytes of each packet (the record keeps its whole length).
    pub snaplen: Option<u32>,
}

impl CaptureFilter {
    /// Whether a packet reaching `node` at `at_ns` is kept.
    pub fn keeps(&self, node: &str, at_ns: u64) -> bool {
        self.from_ns.is_none_or(|f| at_ns >= f)
            && self.to_ns.is_none_or(|t| at_ns < t)
            && (self.nodes.is_empty() || self.nodes.iter().any(|p| anyedge_topology::name_matches(p, node)))
    }

    /// Every name a capture can be of in `t` (what `nodes` must match): POPs, CLB nodes,
    /// backend and internet hosts, egress nodes, client groups, `internet`, `region/NAME`.
    pub fn node_names(t: &anyedge_topology::Topology) -> Vec<String> {
        let mut names: Vec<String> = t.pops.iter().map(|p| format!("pop/{}", p.name)).collect();
        for r in &t.regions {
            names.extend((0..usize::from(r.clb_nodes)).map(|i| anyedge_topology::clb_name(&r.name, i)));
            names.push(format!("region/{}", r.name));
        }
        let hosts = anyedge_topology::nodes::backend_hosts(t);
        names.extend(hosts.iter().map(|(ip, _)| format!("backend/{ip}")));
        for r in &t.regions {
            for b in r.backend_groups.iter().flat_map(|g| &g.backends) {
                names.push(format!("backend/{}", b.addr.ip()));
            }
        }
        names.extend(
            anyedge_topology::nodes::egress_nodes(t)
                .iter()
                .map(|(r, e, _)| anyedge_topology::nodes::egress_name(t, *r, *e)),
        );
        names.extend(t.clients.iter().map(|c| format!("client/{}", c.name)));
        names.push("internet".to_string());
        names.sort();
        names.dedup();
        names
    }

    /// The filter, checked against `t`: every pattern names a node, the window is not
    /// empty, the snap length is at least 1. The error names the option.
    // String: a command-line option's complaint, printed as it is and never matched on.
    pub fn check(&self, t: &anyedge_topology::Topology) -> Result<(), String> {
        let names = CaptureFilter::node_names(t);
        for p in &self.nodes {
            if !names.iter().any(|n| anyedge_topology::name_matches(p, n)) {
                return Err(format!(
                    "--pcap-nodes: `{p}` names no node (nodes: pop/NAME, clb/REGION/N, backend/IP, client/NAME, region/NAME, internet)"
                ));
            }
        }
        if let (Some(f), Some(to)) = (self.from_ns, self.to_ns)
            && f >= to
        {
            return Err(format!("--pcap-from {} s is not before --pcap-to {} s", f as f64 / 1e9, to as f64 / 1e9));
        }
        if self.snaplen == Some(0) {
            return Err("--snaplen: 0 keeps nothing of a packet (at least 1)".to_string());
        }
        Ok(())
    }
}

/// `run_report`, with captures and the like.
pub fn run_with(
    topology: &anyedge_topology::Topology,
    options: &Options,
    progress: impl FnMut(f64),
) -> Result<Outcome, SimError> {
    run_ranked(topology, options, &ranks::One, progress)?
        .ok_or_else(|| SimError("a run of one process made no report".into()))
}

/// The partitions `t` runs in (1: it runs as one).
pub fn partitions(t: &anyedge_topology::Topology) -> usize {
    world::partitioning::Partitioning::of(t).map_or(1, |p| p.count)
}

/// The run of one world over `ranks` (processes: `sim --mpi`), each running its share of
/// the partitions; the outcome on rank 0, `None` on the others. A world that does not
/// partition runs whole on rank 0 while the others end at once. The report is the same
/// bytes for any number of ranks and threads.
pub fn run_ranked(
    topology: &anyedge_topology::Topology,
    options: &Options,
    ranks: &dyn ranks::Ranks,
    progress: impl FnMut(f64),
) -> Result<Option<Outcome>, SimError> {
    let started = Instant::now();
    let capture = match &options.pcap {
        Some(_) if ranks.size() > 1 => {
            return Err(SimError("--pcap writes every node's file from one process: run it without --mpi".into()));
        }
        Some(dir) => {
            options.capture.check(topology).map_err(SimError)?;
            Some((dir.clone(), options.capture.clone()))
        }
        None => None,
    };
    let tags = options.auth.tags();
    let mut progress = progress;
    let (mut world, parts) = match world::partition::run(
        topology,
        tags,
        (options.threads, ranks),
        (options.balance.as_deref(), capture.clone()),
        &mut progress,
    )? {
        Some((world, parts)) => (world, Some(parts)),
        None if ranks.rank() != 0 => return Ok(None),
        None => {
            let mut world = world::World::new(topology, tags)?;
            if let Some((dir, filter)) = capture {
                world.capture_into(dir, filter)?;
            }
            world.run(&mut progress);
            (world, None)
        }
    };
    world.finish_capture()?;
    let mut loads = Vec::new();
    let mut partition_events = Vec::new();
    if let Some(p) = &parts {
        loads.push(crate::report::RankLoad { events: world.events(), ..p.load.clone() });
        partition_events = p.partition_events.clone();
    }
    let mut sums = world::rank_merge::Sums::default();
    let mut last_reply_ns = world.last_reply_ns();
    let report = if parts.is_some() && ranks.size() > 1 {
        let mut part = world.rank_part(&world.report());
        part.load = loads[0].clone();
        part.partition_events = partition_events.clone();
        let Some(all) = ranks.gather(part.to_bytes()) else { return Ok(None) };
        let mut others = Vec::new();
        for (rank, bytes) in all.iter().enumerate().skip(1) {
            others.push(world::rank_merge::RankPart::from_bytes(rank, bytes)?);
        }
        for other in &others {
            loads.push(other.load.clone());
            for (sum, &n) in partition_events.iter_mut().zip(&other.partition_events) {
                *sum += n;
            }
        }
        sums = world.absorb_ranks(&mut others);
        let mut report = world.report();
        last_reply_ns = world.last_reply_ns();
        world.take_rows(&mut report, others, &mut last_reply_ns);
        report
    } else {
        world.report()
    };
    let wall_s = started.elapsed().as_secs_f64();
    let (events, packets) = (world.events(), world.packets());
    let stats = Stats {
        events,
        packets,
        probe_packets: world.probe_packets(),
        wall_s,
        events_per_s: events as f64 / wall_s.max(1e-9),
        packets_per_s: packets as f64 / wall_s.max(1e-9),
        sim_s: world.sim_s(),
        partitions: parts.as_ref().map_or(1, |p| p.partitions),
        threads: parts.as_ref().map_or(1, |p| p.threads),
        lookahead_ms: parts.as_ref().map_or(0.0, |p| p.lookahead_ns as f64 / 1e6),
        windows: parts.as_ref().map_or(0, |p| p.windows),
        ranks: parts.as_ref().map_or(1, |p| p.ranks),
        crossings: loads.iter().map(|l| l.crossings).sum(),
        exchanged_bytes: loads.iter().map(|l| l.exchanged_bytes).sum(),
        peak_memory_bytes: Vec::new(),
        partition_events,
        rank_loads: loads,
    };
    Ok(Some(Outcome {
        report,
        stats,
        recoveries_ns: world.recoveries_ns(),
        quic_handshakes: world.quic_handshakes() + sums.quic_handshakes,
        quic_h3_requests: world.quic_h3_requests() + sums.quic_h3_requests,
        last_reply_ns,
    }))
}
