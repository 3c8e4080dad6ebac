//! anyedge's deterministic simulator: a topology file in, a report out. The POP and CLB
//! cores it runs are the shipped ones; the simulator supplies clock, links and hosts.

pub mod app;
pub mod chaos;
pub mod control;
pub mod cost;
pub mod html;
pub mod parallel;
pub mod raft_liveness;
pub mod report;
pub mod tls;
pub mod world;

use std::time::Instant;

pub use report::{Report, Stats};
pub use world::SimError;

/// What a run produced.
pub struct Outcome {
    pub report: Report,
    pub stats: Stats,
    /// Per fault (report order), every recovered flow's fault-to-first-reply time.
    pub recoveries_ns: Vec<Vec<u64>>,
    /// QUIC handshakes the CLB nodes accepted.
    pub quic_handshakes: u64,
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
}

/// `run_report`, with captures and the like.
pub fn run_with(
    topology: &anyedge_topology::Topology,
    options: &Options,
    progress: impl FnMut(f64),
) -> Result<Outcome, SimError> {
    let started = Instant::now();
    let mut world = world::World::new(topology)?;
    if let Some(dir) = &options.pcap {
        world.capture_into(dir.clone())?;
    }
    world.run(progress);
    world.finish_capture()?;
    let report = world.report();
    let wall_s = started.elapsed().as_secs_f64();
    let (events, packets) = (world.events(), world.packets());
    let stats = Stats {
        events,
        packets,
        wall_s,
        events_per_s: events as f64 / wall_s.max(1e-9),
        packets_per_s: packets as f64 / wall_s.max(1e-9),
        sim_s: world.sim_s(),
    };
    Ok(Outcome {
        report,
        stats,
        recoveries_ns: world.recoveries_ns(),
        quic_handshakes: world.quic_handshakes(),
        last_reply_ns: world.last_reply_ns(),
    })
}
