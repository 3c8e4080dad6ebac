//! One world in partitions, advanced in windows on threads, with the same bytes for any
//! number of threads (ARCHITECTURE.md, "One world on many cores").
//!
//! A partition is a region (its CLB nodes, region edge, backend hosts and egress nodes),
//! the POPs nearest it on the backbone and the client groups nearest it. Which partition
//! owns what depends on the file alone, never on the thread count. Each thread runs one
//! `World` that owns a set of partitions: every world builds the whole topology, but only
//! its own partitions' entities start, send and keep state that matters (another
//! partition's clients are built idle, with no stacks).
//!
//! Partitions meet only by packets over modelled links (and BGP updates, after the
//! convergence time), each with a delay floor: the **lookahead** is the smallest floor of
//! any link between two partitions. Time advances in windows no longer than it: what a
//! partition sends another during a window is due after the window ends, so it waits in
//! the sender's outbox; at the window's end every outbox is sorted by (due time, sending
//! partition, that partition's count of crossings, receiving partition) and put into the
//! receivers' queues. A partition's own events keep their queue order; a crossing enters
//! at the same point of its receiver's history whichever thread runs what, so the report
//! is the same for 1 or N threads. Faults are scheduled in every world and change only
//! what each owns; the flows a fault touches are found at the window's end before it,
//! where every world can be read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyedge_topology::Topology;

use crate::world::World;
use crate::world::ids::{ClientId, Id, PopId};
use crate::world::partitioning::{Crossing, Partitioning, Scope};

/// How a partitioned run went, for the stats.
pub struct PartitionStats {
    pub partitions: usize,
    pub threads: usize,
    pub lookahead_ns: u64,
    pub windows: u64,
    pub crossings: u64,
}

/// Runs `t` partitioned on `threads` threads (at most one per partition); the worlds
/// merged into one whose report is the run's, and how it went. `None` when the world
/// does not partition ([`Partitioning::of`]).
pub(crate) fn run<'t>(
    t: &'t Topology,
    tags: anyedge_ccn::Tags,
    threads: usize,
    capture: Option<(std::path::PathBuf, crate::CaptureFilter)>,
    mut progress: impl FnMut(f64),
) -> Result<Option<(World<'t>, PartitionStats)>, crate::SimError> {
    let Some(parts) = Partitioning::of(t) else { return Ok(None) };
    let parts = Arc::new(parts);
    // A capture writes one file per node from one world.
    let n = if capture.is_some() { 1 } else { threads.clamp(1, parts.count) };
    let mut worlds = build_worlds(t, tags, &parts, n)?;
    if let Some((dir, filter)) = capture {
        worlds[0].capture_into(dir, filter)?;
    }
    let mut windows = Windows::new(t, &parts, worlds[0].end_ns, n);
    let worlds: Vec<Mutex<World<'t>>> = worlds.into_iter().map(Mutex::new).collect();
    run_windows(&worlds, &mut |worlds| match windows.step(t, worlds) {
        Some(start) => {
            progress(start as f64 / windows.end_ns as f64);
            true
        }
        None => false,
    });
    progress(1.0);
    let mut worlds = worlds.into_iter().map(|w| w.into_inner().unwrap_or_else(|e| e.into_inner()));
    let mut merged = worlds.next().ok_or_else(|| crate::SimError("no world".into()))?;
    for other in worlds {
        merged.absorb(other);
    }
    merged.finish_partitioned();
    Ok(Some((merged, windows.stats)))
}

/// One world per share of the partitions, built on threads of their own.
fn build_worlds<'t>(
    t: &'t Topology,
    tags: anyedge_ccn::Tags,
    parts: &Arc<Partitioning>,
    n: usize,
) -> Result<Vec<World<'t>>, crate::SimError> {
    let built: Vec<Result<World<'t>, crate::SimError>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .shares(n)
            .into_iter()
            .map(|mine| {
                let parts = parts.clone();
                s.spawn(move || World::with_scope(t, tags, Some(Box::new(Scope::new(parts, mine)))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(crate::SimError("a world's build panicked".into()))))
            .collect()
    });
    built.into_iter().collect()
}

fn lock<'a, 't>(w: &'a Mutex<World<'t>>) -> std::sync::MutexGuard<'a, World<'t>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The coordinator's state between windows: when the run ends, where faults fall, how
/// far a window may reach, and the figures of how it went.
struct Windows {
    end_ns: u64,
    lookahead_ns: u64,
    /// Every fault's time, once each, in order: a window never spans one.
    fault_times: Vec<u64>,
    stats: PartitionStats,
}

impl Windows {
    fn new(t: &Topology, parts: &Partitioning, end_ns: u64, threads: usize) -> Windows {
        let mut fault_times: Vec<u64> = t.faults.iter().map(|f| f.at_ns).collect();
        fault_times.sort_unstable();
        fault_times.dedup();
        let lookahead_ns = parts.lookahead_ns;
        let stats = PartitionStats { partitions: parts.count, threads, lookahead_ns, windows: 0, crossings: 0 };
        Windows { end_ns, lookahead_ns, fault_times, stats }
    }

    /// Between windows: what crossed is delivered, faults due now are tracked, and the
    /// next window is set; its start, or `None` when the run is over.
    fn step<'t>(&mut self, t: &'t Topology, worlds: &[Mutex<World<'t>>]) -> Option<u64> {
        let mut guards: Vec<_> = worlds.iter().map(lock).collect();
        self.exchange(&mut guards);
        let start = guards.iter().filter_map(|g| g.wire.next_at()).min().filter(|&s| s <= self.end_ns)?;
        if self.fault_times.binary_search(&start).is_ok() {
            track_faults(t, &mut guards, start);
        }
        let next_fault = self.fault_times.iter().copied().find(|&f| f > start).unwrap_or(u64::MAX);
        let window_end = start.saturating_add(self.lookahead_ns).min(next_fault).min(self.end_ns + 1);
        for g in guards.iter_mut() {
            if let Some(s) = g.wire.scope_mut() {
                s.window_end = window_end;
            }
        }
        self.stats.windows += 1;
        Some(start)
    }

    /// Every world's outbox into the queue of the world that owns each event, in one
    /// canonical order (time, sender, sequence, receiver) whatever the thread count.
    fn exchange(&mut self, guards: &mut [std::sync::MutexGuard<'_, World<'_>>]) {
        let mut crossings: Vec<Crossing> = Vec::new();
        for g in guards.iter_mut() {
            if let Some(s) = g.wire.scope_mut() {
                crossings.append(&mut s.outbox);
            }
        }
        crossings.sort_by_key(|c| (c.at, c.from, c.seq, c.to));
        self.stats.crossings += crossings.len() as u64;
        for c in crossings {
            if let Some(g) = guards.iter_mut().find(|g| g.wire.scope().is_some_and(|s| s.mine[c.to as usize])) {
                g.wire.schedule(c.at, c.ev);
            }
        }
    }
}

/// Each world runs its window, all together (one thread each), then `step` runs between
/// windows on this thread, until it says the run is over.
fn run_windows<'t>(worlds: &[Mutex<World<'t>>], step: &mut dyn FnMut(&[Mutex<World<'t>>]) -> bool) {
    let run_window = |w: &Mutex<World<'t>>| {
        let mut g = lock(w);
        let end = g.wire.scope().map_or(0, |s| s.window_end);
        g.run_until(end.saturating_sub(1));
    };
    if worlds.len() == 1 {
        while step(worlds) {
            run_window(&worlds[0]);
        }
        return;
    }
    let barrier = SpinBarrier::new(worlds.len());
    let go = std::sync::atomic::AtomicBool::new(step(worlds));
    std::thread::scope(|s| {
        for w in &worlds[1..] {
            let (barrier, go) = (&barrier, &go);
            s.spawn(move || {
                loop {
                    barrier.wait();
                    if !go.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    run_window(w);
                    barrier.wait();
                }
            });
        }
        loop {
            barrier.wait();
            if !go.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            run_window(&worlds[0]);
            barrier.wait();
            go.store(step(worlds), std::sync::atomic::Ordering::Release);
        }
    });
}

/// The flows each world's clients have that the faults due at `at` touch, judged with
/// the POPs as their owners hold them (a POP's view of its CLB nodes picks a flow's node).
fn track_faults(t: &Topology, worlds: &mut [std::sync::MutexGuard<'_, World<'_>>], at: u64) {
    let owner_of_pop = |p: PopId, worlds: &[std::sync::MutexGuard<'_, World<'_>>]| {
        let part = worlds[0].wire.scope().map_or(0, |s| s.parts.pop[p.index()]);
        worlds.iter().position(|w| w.wire.scope().is_some_and(|s| s.mine[part as usize])).unwrap_or(0)
    };
    for (index, f) in t.faults.iter().enumerate().filter(|(_, f)| f.at_ns == at) {
        let found: Vec<Vec<(ClientId, usize)>> = (0..worlds.len())
            .map(|w| {
                let view = |p: PopId| worlds[owner_of_pop(p, worlds)].pops[p].core();
                worlds[w].affected_flows_with(&f.action, &view)
            })
            .collect();
        for (w, flows) in found.into_iter().enumerate() {
            if let Some(s) = worlds[w].wire.scope_mut() {
                s.tracks.insert(index, flows);
            }
        }
    }
}

/// A barrier that spins a while before yielding: a window is often under a millisecond,
/// and a sleeping thread's wake-up would cost a good part of it.
struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    fn new(threads: usize) -> SpinBarrier {
        SpinBarrier { threads, arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0) }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 20_000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Partitioning, Scope};
    use crate::world::World;
    use crate::world::events::Arrival;
    use crate::world::ids::PopId;
    use anyedge_topology::Topology;

    fn generated(regions: usize) -> Topology {
        let spec = anyedge_topology::generate::Spec {
            name: "gen".into(),
            pops: 12,
            regions,
            clients: 200,
            groups: 20,
            web_every: 0,
            clb_nodes: 2,
            duration_s: 1,
            seed: 3,
            internet: false,
        };
        let text = anyedge_topology::generate::generate(&spec).unwrap();
        anyedge_topology::parse_str("gen.yaml", &text).unwrap()
    }

    #[test]
    fn the_lookahead_is_the_smallest_delay_between_partitions_and_no_link_between_two_is_shorter() {
        let t = generated(3);
        let parts = Partitioning::of(&t).expect("three regions partition");
        assert_eq!(parts.count, 3);
        assert!(parts.lookahead_ns >= crate::world::partitioning::LOOKAHEAD_MIN_NS);
        // Every backbone pair a VIP uses across partitions is at least the lookahead long,
        // and one of them (or an internet leg, or BGP) is exactly it.
        let mut floors = vec![t.failover.route_converge_ns];
        for v in &t.vips {
            for &p in &v.pops {
                if parts.pop[p] as usize != v.home {
                    let link =
                        anyedge_topology::nodes::backbone_link(&t, t.pops[p].location, t.regions[v.home].location);
                    floors.push(link.impairment.delay_ns);
                }
            }
        }
        assert!(floors.iter().all(|&f| f >= parts.lookahead_ns), "{floors:?} < {}", parts.lookahead_ns);
        // Each partition runs in exactly one world, however many.
        for worlds in 1..=4 {
            let shares = parts.shares(worlds);
            for p in 0..3 {
                assert_eq!(shares.iter().filter(|m| m[p]).count(), 1, "{worlds} worlds, partition {p}");
            }
        }
        // One region, or a control plane: one queue.
        assert!(Partitioning::of(&generated(1)).is_none());
    }

    #[test]
    fn a_crossing_due_inside_its_window_is_an_invariant_violation() {
        let t = generated(2);
        let parts = Arc::new(Partitioning::of(&t).unwrap());
        let scope = Scope::new(parts.clone(), vec![true, false]);
        let mut w = World::with_scope(&t, anyedge_ccn::Tags::Fast, Some(Box::new(scope))).unwrap();
        let far = (0..t.pops.len()).find(|&p| parts.pop[p] == 1).expect("a POP of partition 1");
        w.wire.scope_mut().unwrap().window_end = 10_000_000;
        w.wire.deliver(12_000_000, 0, Arrival::PopFromClient(PopId(far)), vec![0x45; 20]);
        assert!(w.violations().is_empty(), "due after the window: waits in the outbox");
        w.wire.deliver(9_000_000, 0, Arrival::PopFromClient(PopId(far)), vec![0x45; 20]);
        assert_eq!(w.wire.scope().unwrap().outbox.len(), 2);
        assert!(w.violations().len() == 1 && w.violations()[0].contains("inside the window"), "{:?}", w.violations());
    }
}
