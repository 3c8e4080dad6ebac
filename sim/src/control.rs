//! The control plane under the simulator: `control/N` nodes (the shipped `ControlNode`,
//! raft-rs inside) tick on the virtual clock, their messages cross the seeded backbone
//! links between their sites, faults crash, restart and partition them, and every
//! committed change streams to the CLB nodes that follow the table. Raft's safety
//! properties are checked on every step; a broken one is a violation with the seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyedge_ccn::geo::Location;
use anyedge_ccn::{ComponentRng, Link, LinkOutcome};
use anyedge_control::{
    CatchUp, Change, ControlConfig, ControlNode, Disk, DiskWriter, LogStore, Output, ProposeError, RouteTable,
    StepError, WriteFate, write_fate,
};
use anyedge_topology::nodes::backbone_link;
use anyedge_topology::route_table::{control_config, route_table};
use anyedge_topology::{Control, Topology};

use crate::raft_liveness::{Liveness, Snapshot};
use hdrhistogram::Histogram;
use serde::Serialize;

/// A control plane that was whole this long before the end must have converged.
const SETTLE_NS: u64 = 3_000_000_000;

/// What the world schedules for the control plane.
pub enum ControlEv {
    Tick,
    /// A Raft message from node `from` arriving at node `to` (1-based).
    Message {
        from: u8,
        to: u8,
        bytes: Vec<u8>,
    },
    /// Table updates arriving at a watcher.
    /// (Boxed: a whole table is large, and every event in the queue is as large as the
    /// largest kind; table updates are rare, packets are not.)
    Watch {
        watcher: usize,
        update: Box<CatchUp>,
    },
}

/// A node that follows the table (a CLB node): where it is, what it has applied.
pub struct Watcher {
    /// The table as this watcher has it.
    table: RouteTable,
    pub location: Location,
    /// The control node it streams from (1-based).
    following: u8,
    /// The log index it has applied, and the index its stream has been sent up to.
    pub applied: u64,
    sent: u64,
    pub live: bool,
}

/// A change a watcher must apply to its core, and its table after it.
pub struct WatchChange {
    pub watcher: usize,
    pub change: Change,
    pub table: RouteTable,
}

struct Member {
    node: Option<ControlNode>,
    disk: Arc<Mutex<Disk>>,
    config: ControlConfig,
    location: Location,
}

struct Pending {
    /// The write's number (1-based, in request order).
    id: u64,
    change: Change,
    requested_ns: u64,
    proposed: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControlReport {
    pub nodes: u8,
    pub leader: Option<String>,
    pub term: u64,
    pub commit: u64,
    pub leader_changes: u64,
    /// The majority's leader and its term from each change on (none: no leader).
    pub leaders: Vec<LeaderSpan>,
    pub writes: u64,
    pub writes_committed: u64,
    pub commit_latency_ms: Option<LatencyMs>,
    /// Every control node's and CLB node's applied log index (`null`: down).
    pub applied: BTreeMap<String, Option<u64>>,
    pub invariants: Invariants,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaderSpan {
    pub at_s: f64,
    pub leader: Option<String>,
    pub term: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyMs {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Invariants {
    pub election_safety: bool,
    pub committed_never_lost: bool,
    /// The live control nodes hold the same table now (false at the end of a run that
    /// ends partitioned is a state, not a violation; a settled run must converge).
    pub converged: bool,
    /// With a majority up and connected, a leader within the bound (10× the longest
    /// election timeout).
    pub leader_within_bound: bool,
    /// Every write commits within the bound (the leader's plus 1 s) once a majority is
    /// up and connected.
    pub writes_commit_within_bound: bool,
    /// A settled run (whole for its last 3 s) ends with every live control node and CLB
    /// watcher at the same applied index.
    pub applied_agree: bool,
}

pub struct ControlPlane {
    /// (when, the majority's leader, its term) at every change, for the report's timeline.
    leaders: Vec<(u64, Option<u8>, u64)>,
    members: Vec<Member>,
    /// [from][to] backbone links between the nodes' sites.
    links: Vec<Vec<Link>>,
    side_of: Option<Vec<u8>>,
    pub watchers: Vec<Watcher>,
    pending: Vec<Pending>,
    leaders_by_term: BTreeMap<u64, u8>,
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Request → commit, microseconds.
    commit_hist: Histogram<u64>,
    writes: u64,
    writes_committed: u64,
    election_safety: bool,
    committed_never_lost: bool,
    /// When the control plane was last disturbed (a fault touching it).
    last_disturbed_ns: u64,
    pub tick_ns: u64,
    violations: Vec<String>,
    liveness: Liveness,
    applied_agree: bool,
    delay_to_watcher: Vec<Vec<u64>>,
    initial: RouteTable,
}

fn delay_ns(t: &Topology, a: Location, b: Location) -> u64 {
    backbone_link(t, a, b).impairment.delay_ns.max(100_000)
}

/// Why the control plane could not be built: a node's log store or its Raft node refused
/// its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ControlSetupError {
    #[error("a control node's log store: {0}")]
    Store(#[from] anyedge_control::StoreError),
    #[error("a control node: {0}")]
    Node(#[from] anyedge_control::ControlError),
}

impl ControlPlane {
    /// The control nodes of `c`, and `watchers` (CLB node locations) following them.
    pub fn new(t: &Topology, c: &Control, watchers: &[Location]) -> Result<ControlPlane, ControlSetupError> {
        let initial = route_table(t);
        let voters: Vec<u64> = (1..=u64::from(c.nodes)).collect();
        let mut members = Vec::new();
        for id in 1..=c.nodes {
            let config = control_config(t, c, id);
            let disk = Arc::new(Mutex::new(Disk::default()));
            let store = LogStore::new(&voters, Box::new(DiskWriter(disk.clone())))?;
            let node = ControlNode::new(&config, initial.clone(), store)?;
            let location = c.sites[usize::from(id) - 1].1;
            members.push(Member { node: Some(node), disk, config, location });
        }
        let links = members
            .iter()
            .enumerate()
            .map(|(i, a)| {
                members
                    .iter()
                    .enumerate()
                    .map(|(j, b)| {
                        let mut model = backbone_link(t, a.location, b.location);
                        model.impairment.delay_ns = model.impairment.delay_ns.max(100_000);
                        Link::new(model, ComponentRng::new(t.seed, &format!("control/link/{}/{}", i + 1, j + 1)))
                    })
                    .collect()
            })
            .collect();
        let delay_to_watcher =
            members.iter().map(|m| watchers.iter().map(|&w| delay_ns(t, m.location, w)).collect()).collect();
        let mut plane = ControlPlane {
            leaders: Vec::new(),
            members,
            links,
            side_of: None,
            watchers: Vec::new(),
            pending: Vec::new(),
            leaders_by_term: BTreeMap::new(),
            committed: BTreeMap::new(),
            commit_hist: Histogram::new(3).expect("3 significant figures is within hdrhistogram's 0..=5"),
            writes: 0,
            writes_committed: 0,
            election_safety: true,
            committed_never_lost: true,
            last_disturbed_ns: 0,
            tick_ns: c.tick_ns,
            violations: Vec::new(),
            liveness: Liveness::new(10 * c.election_ns.1, 10 * c.election_ns.1 + 1_000_000_000),
            applied_agree: true,
            delay_to_watcher,
            initial,
        };
        for (w, &location) in watchers.iter().enumerate() {
            let following = plane.nearest_live(w).unwrap_or(1);
            let table = plane.initial.clone();
            plane.watchers.push(Watcher { table, location, following, applied: 0, sent: 0, live: true });
        }
        Ok(plane)
    }

    fn nearest_live(&self, watcher: usize) -> Option<u8> {
        (0..self.members.len())
            .filter(|&m| self.members[m].node.is_some())
            .min_by_key(|&m| (self.delay_to_watcher[m][watcher], m))
            .map(|m| m as u8 + 1)
    }

    pub fn take_violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }

    fn reachable(&self, from: u8, to: u8) -> bool {
        match &self.side_of {
            None => true,
            Some(sides) => sides[usize::from(from) - 1] == sides[usize::from(to) - 1],
        }
    }

    /// One tick of every live node; proposals waiting for a leader try again; watchers
    /// of a dead node move to a live one. Returns events to schedule.
    pub fn tick(&mut self, now: u64) -> Vec<(u64, ControlEv)> {
        let mut out = vec![(now + self.tick_ns, ControlEv::Tick)];
        for m in 0..self.members.len() {
            if let Some(node) = self.members[m].node.as_mut()
                && let Err(e) = node.tick()
            {
                self.violations.push(format!("control/{}: {e}", m + 1));
            }
            self.drain(m, now, &mut out);
        }
        self.propose_pending(now, &mut out);
        self.refresh_watchers(now, &mut out);
        self.check_liveness(now);
        out
    }

    /// The live nodes that can reach each other, when they are a majority.
    fn connected_majority(&self) -> Option<Vec<usize>> {
        let live = (0..self.members.len()).filter(|&m| self.members[m].node.is_some());
        let mut sides: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for m in live {
            let side = self.side_of.as_ref().map_or(0, |s| s[m]);
            sides.entry(side).or_default().push(m);
        }
        sides.into_values().find(|group| group.len() * 2 > self.members.len())
    }

    fn check_liveness(&mut self, now: u64) {
        let majority = self.connected_majority();
        let leader = majority.as_ref().and_then(|group| {
            let nodes = group.iter().filter_map(|&m| self.members[m].node.as_ref().map(|n| (m, n)));
            nodes.filter(|(_, n)| n.is_leader()).max_by_key(|(_, n)| n.term()).map(|(m, _)| m as u8 + 1)
        });
        let pending: Vec<(u64, u64)> = self.pending.iter().map(|p| (p.id, p.requested_ns)).collect();
        let snapshot = Snapshot { now_ns: now, majority_connected: majority.is_some(), leader, pending: &pending };
        self.liveness.observe(&snapshot, &mut self.violations);
        let term = leader.and_then(|l| self.members[usize::from(l) - 1].node.as_ref()).map_or(0, |n| n.term());
        if self.leaders.last().is_none_or(|&(_, l, t)| (l, t) != (leader, term)) {
            self.leaders.push((now, leader, term));
        }
    }

    pub fn deliver(&mut self, now: u64, (from, to): (u8, u8), bytes: &[u8]) -> Vec<(u64, ControlEv)> {
        let mut out = Vec::new();
        let m = usize::from(to) - 1;
        if let Some(node) = self.members.get_mut(m).and_then(|x| x.node.as_mut()) {
            // Every message here is an honest peer's: a refusal means the admission checks
            // would turn away real traffic, and a log that cannot be written is a bug.
            match node.step(u64::from(from), bytes) {
                Ok(()) => {}
                Err(StepError::Refused(e)) => {
                    self.violations.push(format!("control/{to} refused a message from control/{from}: {e}"))
                }
                Err(e @ StepError::Store(_)) => self.violations.push(format!("control/{to}: {e}")),
            }
            self.drain(m, now, &mut out);
            self.propose_pending(now, &mut out);
        }
        out
    }

    /// A write requested at `now` (a `set-weight` fault): committed through the leader,
    /// retried while there is none.
    pub fn request(&mut self, now: u64, change: Change) -> Vec<(u64, ControlEv)> {
        self.writes += 1;
        self.pending.push(Pending { id: self.writes, change, requested_ns: now, proposed: None });
        let mut out = Vec::new();
        self.propose_pending(now, &mut out);
        out
    }

    fn leader(&self) -> Option<usize> {
        // The live leader with the highest term (a deposed one may not know yet).
        (0..self.members.len())
            .filter(|&m| self.members[m].node.as_ref().is_some_and(|n| n.is_leader()))
            .max_by_key(|&m| self.members[m].node.as_ref().map(|n| n.term()))
    }

    fn propose_pending(&mut self, now: u64, out: &mut Vec<(u64, ControlEv)>) {
        let Some(l) = self.leader() else { return };
        let Some(node) = self.members[l].node.as_mut() else { return };
        let violations = &mut self.violations;
        self.pending.retain_mut(|p| {
            if p.proposed.is_some() {
                return true;
            }
            match node.propose(&p.change) {
                Ok(index) => p.proposed = Some((index, node.term())),
                // The file's writes were validated when it was loaded and no change
                // removes what they name: a refusal here is a bug.
                Err(ProposeError::Invalid(e)) => {
                    violations.push(format!("write {:?} refused: {e}", p.change));
                    return false;
                }
                // No leader after all (stepping down): the next tick tries again.
                Err(_) => {}
            }
            true
        });
        self.drain(l, now, out);
    }

    fn drain(&mut self, m: usize, now: u64, out: &mut Vec<(u64, ControlEv)>) {
        let from = m as u8 + 1;
        while let Some(output) = self.members[m].node.as_mut().and_then(|n| n.poll_output()) {
            match output {
                Output::Message { to, bytes } => {
                    let to = to as u8;
                    if to == 0 || usize::from(to) > self.members.len() || !self.reachable(from, to) {
                        continue;
                    }
                    let link = &mut self.links[m][usize::from(to) - 1];
                    if let LinkOutcome::Deliver(at) = link.transmit(now, bytes.len(), u64::from(to)) {
                        out.push((at, ControlEv::Message { from, to, bytes }));
                    }
                }
                Output::Leader { leader: Some(l), term } if l == u64::from(from) => {
                    if let Some(&other) = self.leaders_by_term.get(&term)
                        && other != from
                    {
                        self.election_safety = false;
                        self.violations
                            .push(format!("election safety: control/{other} and control/{from} both lead term {term}"));
                    }
                    self.leaders_by_term.insert(term, from);
                }
                Output::Leader { .. } => {}
                Output::Applied { index, term, change, .. } => self.applied(m, now, index, term, Some(&change), out),
                Output::AppliedNothing { index, term } => self.applied(m, now, index, term, None, out),
            }
        }
    }

    /// Node `m` applied the entry at `index` (`change`: what it carried, if anything).
    fn applied(
        &mut self,
        m: usize,
        now: u64,
        index: u64,
        term: u64,
        change: Option<&Change>,
        out: &mut Vec<(u64, ControlEv)>,
    ) {
        let bytes = change.map(Change::encode).unwrap_or_default();
        match self.committed.get(&index) {
            Some((t, b)) if *t != term || *b != bytes => {
                self.committed_never_lost = false;
                self.violations.push(format!(
                    "committed entry {index} changed: control/{} applied term {term}, first applied as term {t}",
                    m + 1
                ));
            }
            Some(_) => {}
            None => {
                self.committed.insert(index, (term, bytes));
            }
        }
        let (hist, committed) = (&mut self.commit_hist, &mut self.writes_committed);
        self.pending.retain_mut(|p| match p.proposed.map(|proposed| write_fate(proposed, (index, term))) {
            Some(WriteFate::Committed) => {
                let _ = hist.record(((now - p.requested_ns) / 1000).max(1));
                *committed += 1;
                false
            }
            Some(WriteFate::Lost) => {
                // Superseded before it committed (its leader lost): propose again.
                p.proposed = None;
                true
            }
            Some(WriteFate::Open) | None => true,
        });
        if change.is_none() {
            return;
        }
        // Watchers following this node get what they have not been sent yet, this change
        // included, at once: a watcher that has just (re)started is sent its catch-up
        // first, as the lab's watch stream does, never a change with a gap before it.
        let from = m as u8 + 1;
        let Some(node) = self.members[m].node.as_ref() else { return };
        for w in 0..self.watchers.len() {
            let watcher = &mut self.watchers[w];
            if watcher.live && watcher.following == from && index > watcher.sent {
                let update = Box::new(node.catch_up(watcher.sent));
                watcher.sent = index.max(node.applied());
                out.push((now + self.delay_to_watcher[m][w], ControlEv::Watch { watcher: w, update }));
            }
        }
    }

    /// Watchers whose node died follow the nearest live one, which sends what they miss.
    fn refresh_watchers(&mut self, now: u64, out: &mut Vec<(u64, ControlEv)>) {
        for w in 0..self.watchers.len() {
            if !self.watchers[w].live {
                continue;
            }
            let following = usize::from(self.watchers[w].following) - 1;
            if self.members[following].node.is_none() {
                let Some(next) = self.nearest_live(w) else { continue };
                self.watchers[w].following = next;
                self.watchers[w].sent = self.watchers[w].applied;
            }
            let m = usize::from(self.watchers[w].following) - 1;
            let Some(node) = self.members[m].node.as_ref() else { continue };
            if node.applied() > self.watchers[w].sent {
                let update = Box::new(node.catch_up(self.watchers[w].sent));
                self.watchers[w].sent = node.applied();
                out.push((now + self.delay_to_watcher[m][w], ControlEv::Watch { watcher: w, update }));
            }
        }
    }

    /// A watch update arrives: the changes the watcher has not applied yet, in order.
    pub fn watch_arrived(&mut self, watcher: usize, update: CatchUp) -> Vec<WatchChange> {
        let w = &mut self.watchers[watcher];
        if !w.live {
            return Vec::new();
        }
        match update {
            CatchUp::Changes { changes, upto } => {
                let mut out = Vec::new();
                for (i, change) in changes {
                    if i > w.applied {
                        let skipped = self.committed.range(w.applied + 1..i).find(|(_, (_, bytes))| !bytes.is_empty());
                        if let Some((&lost, _)) = skipped {
                            self.violations.push(format!(
                                "watch_in_order: CLB watcher {watcher} applied entry {i} without entry {lost} before it"
                            ));
                        }
                        w.applied = i;
                        let _ = w.table.apply(&change);
                        out.push(WatchChange { watcher, change, table: w.table.clone() });
                    }
                }
                w.applied = w.applied.max(upto);
                out
            }
            CatchUp::Table { index, table } if index > w.applied => {
                w.applied = index;
                let changes = w.table.changes_to(&table);
                w.table = table;
                changes.into_iter().map(|change| WatchChange { watcher, change, table: w.table.clone() }).collect()
            }
            CatchUp::Table { .. } => Vec::new(),
        }
    }

    /// A watcher restarted: it comes back with the table its file gave it and catches up.
    pub fn watcher_restarted(&mut self, watcher: usize) {
        let w = &mut self.watchers[watcher];
        w.table = self.initial.clone();
        w.live = true;
        w.applied = 0;
        w.sent = 0;
    }

    pub fn watcher_down(&mut self, watcher: usize) {
        self.watchers[watcher].live = false;
    }

    pub fn down(&mut self, now: u64, id: u8) {
        self.last_disturbed_ns = now;
        if let Some(m) = self.members.get_mut(usize::from(id) - 1) {
            m.node = None;
        }
    }

    /// A node restarts from what it wrote to disk.
    pub fn up(&mut self, now: u64, id: u8) {
        self.last_disturbed_ns = now;
        let initial = self.initial.clone();
        let Some(m) = self.members.get_mut(usize::from(id) - 1) else { return };
        if m.node.is_some() {
            return;
        }
        let node = LogStore::from_disk(&m.disk)
            .map_err(anyedge_control::ControlError::from)
            .and_then(|store| ControlNode::new(&m.config, initial, store));
        match node {
            Ok(n) => m.node = Some(n),
            Err(e) => self.violations.push(format!("control/{id} cannot restart from its log: {e}")),
        }
    }

    pub fn partition(&mut self, now: u64, side_of: &[u8]) {
        self.last_disturbed_ns = now;
        self.side_of = Some(side_of[..self.members.len()].to_vec());
    }

    pub fn heal(&mut self, now: u64) {
        self.last_disturbed_ns = now;
        self.side_of = None;
    }

    /// Whether every live control node holds the same table.
    fn converged(&self) -> bool {
        let mut tables = self.members.iter().filter_map(|m| m.node.as_ref()).map(|n| n.table());
        let Some(first) = tables.next() else { return true };
        tables.all(|t| t == first)
    }

    /// Every live control node's and live watcher's applied index, when they differ.
    fn applied_disagree(&self) -> Option<String> {
        let nodes = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(m, x)| Some((format!("control/{}", m + 1), x.node.as_ref()?.applied())));
        let watchers =
            self.watchers.iter().enumerate().filter(|(_, w)| w.live).map(|(w, x)| (format!("watcher {w}"), x.applied));
        let all: Vec<(String, u64)> = nodes.chain(watchers).collect();
        let agree = all.windows(2).all(|w| w[0].1 == w[1].1);
        // Watchers apply changes in log order: at the same index, the same table.
        let table = self.members.iter().find_map(|m| m.node.as_ref()).map(|n| n.table());
        let tables_agree = self.watchers.iter().filter(|w| w.live).all(|w| table.is_none_or(|t| &w.table == t));
        if agree && !tables_agree {
            return Some("a CLB watcher whose table differs from the control nodes' at the same index".into());
        }
        (!agree).then(|| all.iter().map(|(n, a)| format!("{n} at {a}")).collect::<Vec<_>>().join(", "))
    }

    /// At the end of the run: a control plane left whole long enough must have converged
    /// and every live node and watcher must agree on the applied index.
    pub fn finish(&mut self, end_ns: u64) {
        self.check_liveness(end_ns);
        let settled = self.side_of.is_none() && end_ns.saturating_sub(self.last_disturbed_ns) >= SETTLE_NS;
        if !self.converged() && settled {
            self.violations.push("converged: live control nodes ended with different tables".into());
        }
        if let Some(which) = self.applied_disagree().filter(|_| settled) {
            self.applied_agree = false;
            self.violations.push(format!("applied_agree: a settled control plane ended with {which}"));
        }
    }

    pub fn report(&self, watcher_names: &[String]) -> ControlReport {
        let converged = self.converged();
        let leader = self.leader();
        let latency = (!self.commit_hist.is_empty()).then(|| LatencyMs {
            p50: self.commit_hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99: self.commit_hist.value_at_quantile(0.99) as f64 / 1000.0,
            max: self.commit_hist.max() as f64 / 1000.0,
        });
        let mut applied = BTreeMap::new();
        for (i, m) in self.members.iter().enumerate() {
            applied.insert(format!("control/{}", i + 1), m.node.as_ref().map(|n| n.applied()));
        }
        for (w, name) in self.watchers.iter().zip(watcher_names) {
            applied.insert(name.clone(), w.live.then_some(w.applied));
        }
        // With no leader, the highest term and commit any live node has reached.
        let live = || self.members.iter().filter_map(|m| m.node.as_ref());
        let (term, commit) = match leader.and_then(|l| self.members[l].node.as_ref()) {
            Some(n) => (n.term(), n.commit()),
            None => (live().map(|n| n.term()).max().unwrap_or(0), live().map(|n| n.commit()).max().unwrap_or(0)),
        };
        ControlReport {
            nodes: self.members.len() as u8,
            leader: leader.map(|l| format!("control/{}", l + 1)),
            term,
            commit,
            leader_changes: self.liveness.leader_changes,
            leaders: self
                .leaders
                .iter()
                .map(|&(at, l, term)| LeaderSpan {
                    at_s: (at as f64 / 1e6).round() / 1e3,
                    leader: l.map(|l| format!("control/{l}")),
                    term,
                })
                .collect(),
            writes: self.writes,
            writes_committed: self.writes_committed,
            commit_latency_ms: latency,
            applied,
            invariants: Invariants {
                election_safety: self.election_safety,
                committed_never_lost: self.committed_never_lost,
                converged,
                leader_within_bound: self.liveness.leader_within_bound,
                writes_commit_within_bound: self.liveness.writes_commit_within_bound,
                applied_agree: self.applied_agree,
            },
        }
    }

    /// The table of a live node (tests, `routes`).
    pub fn table(&self, id: u8) -> Option<&RouteTable> {
        self.members.get(usize::from(id).checked_sub(1)?)?.node.as_ref().map(|n| n.table())
    }
}
