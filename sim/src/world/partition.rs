//! One world in partitions, advanced in windows on threads, with the same bytes for any
//! number of threads (ARCHITECTURE.md, "One world on many cores").
//!
//! A partition is a region (its CLB nodes, region edge, backend hosts and egress nodes),
//! the POPs nearest it on the backbone and the client groups nearest it. Which partition
//! owns what depends on the file alone, never on the thread count. Each thread runs one
//! `World` that owns a set of partitions: every world builds the topology's nodes, but
//! only its own partitions' entities start, send and keep state that matters, and only
//! its own partitions' clients have rows (another partition's are an address in a run).
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
use crate::world::forwarding::PopView;
use crate::world::ids::{ClientId, Id, PopId};
use crate::world::partitioning::{Crossing, Partitioning, Scope};
use crate::world::rank_wire::{self, Writer};
use anyedge_topology::{FaultAction, Target};
use rustc_hash::FxHashMap;

/// How a partitioned run went, for the stats.
pub struct PartitionStats {
    pub partitions: usize,
    pub threads: usize,
    /// Processes the world ran on (`sim --mpi`; 1 otherwise).
    pub ranks: usize,
    pub lookahead_ns: u64,
    pub windows: u64,
    /// This rank's share: its crossings (all of them, in one process), bytes it sent
    /// other ranks, its time (its events are the caller's to fill).
    pub load: crate::report::RankLoad,
    /// [partition]: events it ran (zero for other ranks' partitions).
    pub partition_events: Vec<u64>,
}

/// Runs `t` partitioned on `threads` threads (at most one per partition) in each of
/// `ranks`' processes; this rank's worlds merged into one, and how it went. `None` when
/// the world does not partition ([`Partitioning::of`]).
pub(crate) fn run<'t>(
    t: &'t Topology,
    tags: anyedge_ccn::Tags,
    (threads, ranks): (usize, &dyn crate::ranks::Ranks),
    (balance, capture): (Option<&[u64]>, Option<(std::path::PathBuf, crate::CaptureFilter)>),
    mut progress: impl FnMut(f64),
) -> Result<Option<(World<'t>, PartitionStats)>, crate::SimError> {
    let Some(parts) = Partitioning::of(t) else { return Ok(None) };
    let parts = Arc::new(parts.weighed_by(balance)?);
    let rank_of = parts.owners(ranks.size());
    let mine: Vec<bool> = rank_of.iter().map(|&r| r == ranks.rank()).collect();
    let own = mine.iter().filter(|&&m| m).count();
    // A capture writes one file per node from one world.
    let n = if capture.is_some() { 1 } else { threads.clamp(1, own.max(1)) };
    let mut worlds = build_worlds(t, tags, &parts, parts.shares(Some(&mine), n))?;
    if let Some((dir, filter)) = capture {
        worlds[0].capture_into(dir, filter)?;
    }
    let mut windows = Windows::new(t, &parts, worlds[0].end_ns, (n, ranks.size()));
    let worlds: Vec<Mutex<World<'t>>> = worlds.into_iter().map(Mutex::new).collect();
    let ranked = Ranked { ranks, rank_of: &rank_of };
    let started = std::time::Instant::now();
    run_windows(&worlds, &mut |worlds| match windows.step(t, worlds, &ranked) {
        Some(start) => {
            progress(start as f64 / windows.end_ns as f64);
            true
        }
        None => false,
    });
    progress(1.0);
    let load = &mut windows.stats.load;
    load.windows_s = (started.elapsed().as_secs_f64() - load.between_s).max(0.0);
    let worlds: Vec<World<'t>> =
        worlds.into_iter().map(|w| w.into_inner().unwrap_or_else(|e| e.into_inner())).collect();
    for w in &worlds {
        let ran = w.wire.scope().map(|s| s.events.as_slice()).unwrap_or_default();
        for (sum, &n) in windows.stats.partition_events.iter_mut().zip(ran) {
            *sum += n;
        }
    }
    let mut worlds = worlds.into_iter();
    let mut merged = worlds.next().ok_or_else(|| crate::SimError("no world".into()))?;
    for other in worlds {
        merged.absorb(other);
    }
    merged.finish_partitioned();
    Ok(Some((merged, windows.stats)))
}

/// The rank that runs each client group when `t` runs over `ranks` processes, as
/// [`run`] shares them (by `balance`, when given and it fits); `None` when the world does
/// not partition.
pub(crate) fn rank_of_groups(t: &Topology, ranks: usize, balance: Option<&[u64]>) -> Option<Vec<usize>> {
    let parts = Partitioning::of(t)?;
    let parts = parts.weighed_by(balance).ok()?;
    let owner = parts.owners(ranks.max(1));
    Some(parts.group.iter().map(|&p| owner[p as usize]).collect())
}

/// One world per share of the partitions, built on threads of their own.
fn build_worlds<'t>(
    t: &'t Topology,
    tags: anyedge_ccn::Tags,
    parts: &Arc<Partitioning>,
    shares: Vec<Vec<bool>>,
) -> Result<Vec<World<'t>>, crate::SimError> {
    let built: Vec<Result<World<'t>, crate::SimError>> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
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

/// The processes a run spans and which one runs each partition.
struct Ranked<'a> {
    ranks: &'a dyn crate::ranks::Ranks,
    rank_of: &'a [usize],
}

impl Ranked<'_> {
    fn others(&self) -> bool {
        self.ranks.size() > 1
    }

    fn here(&self, part: u32) -> bool {
        self.rank_of.get(part as usize) == Some(&self.ranks.rank())
    }
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
    fn new(t: &Topology, parts: &Partitioning, end_ns: u64, (threads, ranks): (usize, usize)) -> Windows {
        let mut fault_times: Vec<u64> = t.faults.iter().map(|f| f.at_ns).collect();
        fault_times.sort_unstable();
        fault_times.dedup();
        let lookahead_ns = parts.lookahead_ns;
        let stats = PartitionStats {
            partitions: parts.count,
            threads,
            ranks,
            lookahead_ns,
            windows: 0,
            load: Default::default(),
            partition_events: vec![0; parts.count],
        };
        Windows { end_ns, lookahead_ns, fault_times, stats }
    }

    /// Between windows: what crossed is delivered, faults due now are tracked, and the
    /// next window is set; its start, or `None` when the run is over. Every rank steps
    /// together: the same windows everywhere.
    fn step<'t>(&mut self, t: &'t Topology, worlds: &[Mutex<World<'t>>], ranked: &Ranked<'_>) -> Option<u64> {
        let between = std::time::Instant::now();
        let mut guards: Vec<_> = worlds.iter().map(lock).collect();
        let start = self.exchange(&mut guards, ranked);
        if start > self.end_ns {
            self.stats.load.between_s += between.elapsed().as_secs_f64();
            return None;
        }
        if self.fault_times.binary_search(&start).is_ok() {
            track_faults(t, &mut guards, start, ranked);
        }
        self.stats.load.between_s += between.elapsed().as_secs_f64();
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
    /// canonical order (time, sender, sequence, receiver) whatever the thread or rank
    /// count: crossings for other ranks go out as bytes, theirs come in, all in one
    /// exchange, each buffer led by its sender's earliest event (its queues' and its
    /// crossings'). Returns the earliest event anywhere: where the next window starts.
    fn exchange(&mut self, guards: &mut [std::sync::MutexGuard<'_, World<'_>>], ranked: &Ranked<'_>) -> u64 {
        let mut crossings: Vec<Crossing> = Vec::new();
        for g in guards.iter_mut() {
            if let Some(s) = g.wire.scope_mut() {
                crossings.append(&mut s.outbox);
            }
        }
        self.stats.load.crossings += crossings.len() as u64;
        let queued = guards.iter().filter_map(|g| g.wire.next_at()).min().unwrap_or(u64::MAX);
        let mut earliest = crossings.iter().map(|c| c.at).min().unwrap_or(u64::MAX).min(queued);
        if ranked.others() {
            let mut out: Vec<Writer> = (0..ranked.ranks.size()).map(|_| Writer::default()).collect();
            for (r, w) in out.iter_mut().enumerate() {
                if r != ranked.ranks.rank() {
                    w.u64(earliest);
                }
            }
            crossings.retain(|c| {
                let stays = ranked.here(c.to);
                if !stays {
                    out[ranked.rank_of[c.to as usize]].crossing(c);
                }
                stays
            });
            self.stats.load.exchanged_bytes += out.iter().map(|w| w.out.len() as u64).sum::<u64>();
            let got = ranked.ranks.exchange(out.into_iter().map(|w| w.out).collect());
            for (from, bytes) in got.iter().enumerate().filter(|&(from, _)| from != ranked.ranks.rank()) {
                let mut r = rank_wire::Reader::new(bytes);
                let theirs = r.u64().map_err(|e| format!("no earliest event: {e}")).and_then(|at| {
                    earliest = earliest.min(at);
                    rank_wire::crossings(r.rest())
                });
                match theirs {
                    Ok(mut theirs) => crossings.append(&mut theirs),
                    Err(e) => {
                        if let Some(g) = guards.first_mut() {
                            g.wire.violation(format!(
                                "rank {from}'s crossings do not read on rank {} ({e}): are the ranks one build?",
                                ranked.ranks.rank()
                            ));
                        }
                    }
                }
            }
        }
        crossings.sort_by_key(|c| (c.at, c.from, c.seq, c.to));
        for c in crossings {
            if let Some(g) = guards.iter_mut().find(|g| g.wire.scope().is_some_and(|s| s.mine[c.to as usize])) {
                g.wire.schedule(c.at, c.ev.into_ev());
            }
        }
        earliest
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
/// Over ranks, what a CLB node's fault asks of POPs another rank runs goes there and the
/// answers come back: two exchanges, at such faults only.
fn track_faults(t: &Topology, worlds: &mut [std::sync::MutexGuard<'_, World<'_>>], at: u64, ranked: &Ranked<'_>) {
    for (index, f) in t.faults.iter().enumerate().filter(|(_, f)| f.at_ns == at) {
        let found: Vec<Vec<(ClientId, usize)>> = {
            let worlds: &[std::sync::MutexGuard<'_, World<'_>>] = worlds;
            let part_of = |p: PopId| worlds[0].wire.scope().map_or(0, |s| s.parts.pop[p.index()]);
            let local = |p: PopId| {
                let part = part_of(p) as usize;
                worlds.iter().find(|w| w.wire.scope().is_some_and(|s| s.mine[part])).map(|w| w.pops[p].core())
            };
            let asks_pops =
                matches!(f.action, FaultAction::Down(Target::Clb { .. }) | FaultAction::Up(Target::Clb { .. }));
            let answers = if ranked.others() && asks_pops {
                let asking = RankView { local: &local, asked: Some(Default::default()), answers: Answers::default() };
                for w in worlds.iter() {
                    w.affected_flows_with(&f.action, &asking);
                }
                let asked = asking.asked.map(|a| a.into_inner()).unwrap_or_default();
                ask_owners(asked, &|p| ranked.rank_of[part_of(p) as usize], ranked.ranks, &local)
            } else {
                Answers::default()
            };
            let view = RankView { local: &local, asked: None, answers };
            worlds.iter().map(|w| w.affected_flows_with(&f.action, &view)).collect()
        };
        for (w, flows) in found.into_iter().enumerate() {
            if let Some(s) = worlds[w].wire.scope_mut() {
                s.tracks.insert(index, flows);
            }
        }
    }
}

/// A question for a POP's core.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Ask {
    NodeOf(PopId, anyedge_proto::FlowKey),
    Up(PopId, u16, u16),
}

/// What other ranks' POPs answered.
#[derive(Default)]
struct Answers {
    node_of: FxHashMap<(usize, anyedge_proto::FlowKey), Option<u16>>,
    up: FxHashMap<(usize, u16, u16), bool>,
}

/// POPs as this rank can see them: its own worlds' cores; another rank's, by the
/// answers it gave, or (while `asked` records the questions) a stand-in that lets every
/// question be asked.
struct RankView<'a, 'p> {
    local: &'a dyn Fn(PopId) -> Option<&'p anyedge_pop::Pop>,
    asked: Option<std::cell::RefCell<Vec<Ask>>>,
    answers: Answers,
}

impl PopView for RankView<'_, '_> {
    fn node_of(&self, pop: PopId, key: &anyedge_proto::FlowKey) -> Option<u16> {
        if let Some(core) = (self.local)(pop) {
            return core.node_of(key);
        }
        match &self.asked {
            Some(asked) => {
                asked.borrow_mut().push(Ask::NodeOf(pop, *key));
                Some(0)
            }
            None => self.answers.node_of.get(&(pop.index(), *key)).copied().flatten(),
        }
    }

    fn clb_up(&self, pop: PopId, region: u16, node: u16) -> bool {
        if let Some(core) = (self.local)(pop) {
            return core.clb_up(region, node);
        }
        match &self.asked {
            Some(asked) => {
                asked.borrow_mut().push(Ask::Up(pop, region, node));
                true
            }
            None => self.answers.up.get(&(pop.index(), region, node)).copied().unwrap_or(true),
        }
    }
}

/// Sends each question to the rank that runs its POP, answers the questions others sent
/// about this rank's POPs, and returns the answers to this rank's.
fn ask_owners<'p>(
    mut asked: Vec<Ask>,
    owner: &dyn Fn(PopId) -> usize,
    ranks: &dyn crate::ranks::Ranks,
    local: &dyn Fn(PopId) -> Option<&'p anyedge_pop::Pop>,
) -> Answers {
    let mut seen = rustc_hash::FxHashSet::default();
    asked.retain(|a| seen.insert(a.clone()));
    let mut to: Vec<Vec<Ask>> = vec![Vec::new(); ranks.size()];
    for a in asked {
        let pop = match &a {
            Ask::NodeOf(p, _) | Ask::Up(p, _, _) => *p,
        };
        to[owner(pop).min(ranks.size() - 1)].push(a);
    }
    let questions = ranks.exchange(to.iter().map(|asks| write_asks(asks)).collect());
    let replies = questions.iter().map(|bytes| answer(bytes, local)).collect();
    let answered = ranks.exchange(replies);
    let mut answers = Answers::default();
    for (asks, bytes) in to.iter().zip(answered) {
        let mut r = rank_wire::Reader::new(&bytes);
        for a in asks {
            match a {
                Ask::NodeOf(p, key) => {
                    let node = match (r.u8(), r.u32()) {
                        (Ok(1), Ok(n)) => u16::try_from(n).ok(),
                        _ => None,
                    };
                    answers.node_of.insert((p.index(), *key), node);
                }
                Ask::Up(p, region, node) => {
                    answers.up.insert((p.index(), *region, *node), !r.u8().is_ok_and(|b| b == 0));
                }
            }
        }
    }
    answers
}

fn write_asks(asks: &[Ask]) -> Vec<u8> {
    let mut w = Writer::default();
    for a in asks {
        match a {
            Ask::NodeOf(p, key) => {
                w.u8(0);
                w.u64(p.index() as u64);
                w.flow_key(key);
            }
            Ask::Up(p, region, node) => {
                w.u8(1);
                w.u64(p.index() as u64);
                w.u32(u32::from(*region));
                w.u32(u32::from(*node));
            }
        }
    }
    w.out
}

/// This rank's POPs' answers to `bytes` of questions, in their order (an unreadable
/// question ends the answers: the asker takes the stand-in's "no node" for the rest).
fn answer<'p>(bytes: &[u8], local: &dyn Fn(PopId) -> Option<&'p anyedge_pop::Pop>) -> Vec<u8> {
    let mut r = rank_wire::Reader::new(bytes);
    let mut w = Writer::default();
    let index = |r: &mut rank_wire::Reader<'_>| r.u64().ok().and_then(|p| usize::try_from(p).ok()).map(PopId);
    while !r.is_empty() {
        match r.u8() {
            Ok(0) => {
                let (Some(p), Ok(key)) = (index(&mut r), r.flow_key()) else { break };
                match local(p).and_then(|core| core.node_of(&key)) {
                    Some(n) => {
                        w.u8(1);
                        w.u32(u32::from(n));
                    }
                    None => {
                        w.u8(0);
                        w.u32(0);
                    }
                }
            }
            Ok(1) => {
                let (Some(p), Ok(region), Ok(node)) = (index(&mut r), r.u32(), r.u32()) else { break };
                let (region, node) = (region as u16, node as u16);
                w.u8(u8::from(local(p).is_none_or(|core| core.clb_up(region, node))));
            }
            _ => break,
        }
    }
    w.out
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
            let shares = parts.shares(None, worlds);
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

    #[test]
    fn a_world_running_a_share_of_the_partitions_holds_rows_for_its_own_clients_only() {
        let t = generated(3);
        let parts = Arc::new(Partitioning::of(&t).unwrap());
        let total: usize = t.clients.iter().map(|g| g.count as usize).sum();
        let mut held = 0;
        for p in 0..3u32 {
            let mine: Vec<bool> = (0..3u32).map(|q| q == p).collect();
            let own: usize =
                t.clients.iter().zip(&parts.group).filter(|&(_, &g)| g == p).map(|(c, _)| c.count as usize).sum();
            let w = World::with_scope(&t, anyedge_ccn::Tags::Fast, Some(Box::new(Scope::new(parts.clone(), mine))))
                .unwrap();
            assert_eq!(w.edge.held(), own, "partition {p}'s world: its clients' rows, no others");
            // Every client's address is still known, whoever runs it.
            assert!((0..total).all(|c| w.edge.addr_of(crate::world::ids::ClientId(c)).is_some()));
            held += own;
        }
        assert_eq!(held, total, "every client in exactly one world");
    }
}
