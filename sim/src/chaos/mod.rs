//! `anyedge chaos`: many seeds, each a random fault schedule drawn from the file's world
//! (`schedule.rs`), run in the simulator with every invariant checked — Raft's safety and
//! liveness, committed writes applied everywhere, connection tables within bound, replies
//! only from backends a flow's listener binds — and every client group served again after
//! the last fault. A failing seed replays exactly: the schedule is a function of the seed.

pub mod schedule;

use std::sync::atomic::{AtomicU64, Ordering};

use anyedge_topology::{Topology, TrafficKind};
use serde::Serialize;

pub use schedule::{FaultKind, KINDS, Window, to_yaml};

/// Outages end this long before the run does, so the world can recover in sight: health
/// checks take a dead backend out in about 7 s, routing a dead POP in about 1 s.
pub const SETTLE_NS: u64 = 8_000_000_000;
/// The shortest run chaos draws for: 4 s of faults and the settling time.
pub const DURATION_MIN_NS: u64 = 4_000_000_000 + SETTLE_NS;

/// What a sweep draws: the kinds of fault and the window they fall in.
pub struct ChaosPlan {
    pub kinds: Vec<FaultKind>,
    pub window: Window,
}

/// Why a file's world cannot be swept with chaos.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The run leaves no window for faults and the settling after them.
    #[error(
        "duration {} s is too short for chaos: faults need a window and {} s to settle after it (at least {} s; try --duration)",
        *duration_ns as f64 / 1e9,
        SETTLE_NS / 1_000_000_000,
        DURATION_MIN_NS / 1_000_000_000
    )]
    TooShort { duration_ns: u64 },
    /// A kind asked for (`--faults`) that this world cannot have, and why.
    #[error("--faults {kind}: {why}")]
    Unavailable { kind: &'static str, why: String },
}

/// Checks the file's world against the budget. `requested` kinds must all be possible
/// (an error names the first that is not); without it, every kind the world allows.
pub fn plan(t: &Topology, requested: Option<&[FaultKind]>) -> Result<ChaosPlan, PlanError> {
    if t.duration_ns < DURATION_MIN_NS {
        return Err(PlanError::TooShort { duration_ns: t.duration_ns });
    }
    let kinds = match requested {
        Some(kinds) => {
            if let Some((k, why)) = kinds.iter().find_map(|&k| k.unavailable(t).map(|why| (k, why))) {
                return Err(PlanError::Unavailable { kind: k.name(), why });
            }
            kinds.to_vec()
        }
        None => KINDS.into_iter().filter(|k| k.unavailable(t).is_none()).collect(),
    };
    Ok(ChaosPlan { kinds, window: Window { start_ns: 500_000_000, end_ns: t.duration_ns - SETTLE_NS } })
}

/// One seed's run.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    /// Faults in its schedule.
    pub faults: usize,
    /// Broken invariants and checks; empty when the seed passed.
    pub failures: Vec<String>,
}

/// The topology a seed runs: the file with this seed and its drawn schedule.
pub fn seeded(t: &Topology, plan: &ChaosPlan, seed: u64) -> Topology {
    let mut t = t.clone();
    t.seed = seed;
    t.faults = schedule::draw(&t, seed, &plan.kinds, &plan.window);
    t
}

/// Runs one seed and checks it.
pub fn run_seed(t: &Topology, plan: &ChaosPlan, seed: u64) -> SeedRun {
    let t = seeded(t, plan, seed);
    let faults = t.faults.len();
    let outcome = match crate::run_report(&t, |_| {}) {
        Ok(o) => o,
        Err(e) => return SeedRun { seed, faults, failures: vec![format!("cannot simulate: {}", e.0)] },
    };
    let mut failures = outcome.report.violations.clone();
    let last_fault_ns = t.faults.iter().map(|f| f.at_ns).max().unwrap_or(0);
    for (g, group) in t.clients.iter().enumerate() {
        for (k, &class) in group.traffic.iter().enumerate() {
            if matches!(t.traffic[class].kind, TrafficKind::SynFlood { .. }) {
                continue;
            }
            // Classes the file never gets answered (a security group, say) are not ours.
            if let Some(at) = outcome.last_reply_ns[g][k]
                && at <= last_fault_ns
            {
                failures.push(format!(
                    "client group `{}` ({}): no reply after the last fault at {:.3} s (last at {:.3} s)",
                    group.name,
                    t.traffic[class].name,
                    last_fault_ns as f64 / 1e9,
                    at as f64 / 1e9
                ));
            }
        }
    }
    SeedRun { seed, faults, failures }
}

/// Runs seeds `from..from + seeds` on `jobs` threads; `progress(done, failed)` after each.
/// Results come back in seed order, whatever order the threads finished in.
pub fn sweep(
    t: &Topology,
    plan: &ChaosPlan,
    from: u64,
    seeds: u64,
    jobs: usize,
    progress: impl Fn(u64, u64) + Sync,
) -> Vec<SeedRun> {
    let failed = AtomicU64::new(0);
    crate::parallel::in_order(
        (from, from + seeds),
        jobs,
        |seed| run_seed(t, plan, seed),
        |done, run: &SeedRun| {
            let bad = u64::from(!run.failures.is_empty());
            progress(done, failed.fetch_add(bad, Ordering::Relaxed) + bad);
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Topology {
        anyedge_topology::parse_str("small.yaml", include_str!("../../../topologies/small.yaml")).unwrap()
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_another_seed_another() {
        let t = small();
        let plan = plan(&t, None).unwrap();
        let a = seeded(&t, &plan, 7).faults;
        assert_eq!(a, seeded(&t, &plan, 7).faults);
        assert_ne!(a, seeded(&t, &plan, 8).faults);
        assert!(a.iter().all(|f| f.at_ns < t.duration_ns - SETTLE_NS + 1), "every outage ends before the settle time");
    }

    #[test]
    fn a_drawn_schedule_written_as_yaml_parses_back_to_the_same_faults() {
        let files = [include_str!("../../../topologies/small.yaml"), include_str!("../../../topologies/control.yaml")];
        for (file, seed) in files.iter().flat_map(|f| (1..40).map(move |s| (f, s))) {
            let t = anyedge_topology::parse_str("t.yaml", file).unwrap();
            let plan = plan(&t, None).unwrap();
            let drawn = seeded(&t, &plan, seed);
            let text = file.split("faults:").next().unwrap().to_string() + &to_yaml(&t, &drawn.faults);
            let back = anyedge_topology::parse_str("replay.yaml", &text)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            let actions = |f: &[anyedge_topology::Fault]| f.iter().map(|f| (f.at_ns, f.action)).collect::<Vec<_>>();
            assert_eq!(actions(&back.faults), actions(&drawn.faults), "seed {seed}");
        }
    }

    #[test]
    fn an_impossible_request_names_the_kind_and_why() {
        let mut t = small();
        for v in &mut t.vips {
            v.pops.truncate(1);
        }
        let err = plan(&t, Some(&[FaultKind::Pop])).err().unwrap();
        assert!(matches!(&err, PlanError::Unavailable { kind: "pop", .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.starts_with("--faults pop: ") && err.contains("one POP"), "{err}");
        assert!(!plan(&t, None).unwrap().kinds.contains(&FaultKind::Pop), "left out when not asked for");
    }
}
