//! The report of a world run over several processes (`sim --mpi`): each rank sends rank 0
//! the rows of what it ran (the partitions it owns: their POPs, CLB nodes, client groups,
//! backends' health and addresses) with its share of what is summed (flows per backend,
//! security-group counters, drops, packets) and its fault trackers' flows; rank 0 puts
//! each row where its owner's belongs and merges the trackers as threads' worlds are
//! merged (`merge.rs`), so the report is the bytes one process writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Report;
use crate::report::{BackendReport, ClbNodeReport, ClientReport, HealthReport};
use crate::world::World;
use crate::world::fault_state::FaultTracker;
use crate::world::ids::{ClientId, PopId};

/// What one rank ran, for rank 0.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct RankPart {
    /// POP index → flows its core saw.
    pops: Vec<(usize, u64)>,
    /// Group index → its section.
    clients: Vec<(usize, ClientReport)>,
    /// Group index → when each of its classes last got an anycast reply.
    last_reply_ns: Vec<(usize, Vec<Option<u64>>)>,
    /// Row (the report's order) → that backend's share.
    backends: Vec<(usize, BackendPart)>,
    /// Row → the node's section.
    clb_nodes: Vec<(usize, ClbNodeReport)>,
    /// [group][rule]: (matched, denied) this rank counted.
    security_groups: Vec<Vec<(u64, u64)>>,
    drops: BTreeMap<String, BTreeMap<String, u64>>,
    violations: Vec<String>,
    trackers: Vec<TrackerPart>,
    /// Events beyond the world-wide ones (faults run on every rank, counted once).
    events: u64,
    packets: u64,
    probe_packets: u64,
    quic_handshakes: u64,
    quic_h3_requests: u64,
    /// How its share went, and its partitions' events (for the stats).
    pub(crate) load: crate::report::RankLoad,
    pub(crate) partition_events: Vec<u64>,
}

/// A backend's row as one rank saw it: the flows it served there; its health when the
/// rank runs its region; its client addresses when the rank runs its host.
#[derive(Serialize, Deserialize)]
struct BackendPart {
    /// How many of this rank's clients' flows it served, by path (anycast, direct): a
    /// flow is counted only where its client runs, so ranks' counts add up (a list of
    /// the flows would have grown rank 0 by every client's flows).
    flows: [u64; 2],
    health: Option<Vec<HealthReport>>,
    addrs: Option<(Vec<String>, u64)>,
}

/// A fault tracker's share: what this rank's nodes noticed, its clients' flows.
#[derive(Serialize, Deserialize)]
struct TrackerPart {
    detected_ns: Option<u64>,
    noticed: Vec<(String, u64)>,
    affected: Vec<(usize, usize)>,
    before: Vec<Option<SocketAddr>>,
    first_reply_ns: Vec<Option<u64>>,
    changed: Vec<bool>,
}

/// What rank 0 adds to its own outcome from the others'.
#[derive(Default)]
pub(crate) struct Sums {
    pub(crate) quic_handshakes: u64,
    pub(crate) quic_h3_requests: u64,
}

impl RankPart {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn from_bytes(rank: usize, bytes: &[u8]) -> Result<RankPart, crate::SimError> {
        serde_json::from_slice(bytes).map_err(|e| {
            crate::SimError(format!("rank {rank}'s part of the report does not read ({e}): are the ranks one build?"))
        })
    }
}

impl<'t> World<'t> {
    /// This rank's part: the rows of what it owns, from `report` (its own world's).
    pub(crate) fn rank_part(&self, report: &Report) -> RankPart {
        let w = &self.wire;
        let owned_groups = (0..report.clients.len()).filter(|&g| w.owns(w.group_part(g)));
        let last = self.last_reply_ns();
        let backends = self.servers.backends().iter().enumerate().map(|(i, b)| {
            let row = &report.backends[i];
            let host_owned = self.servers.host_at(b.addr.ip()).is_some_and(|h| w.owns(w.host_part(h)));
            let part = BackendPart {
                flows: [0, 1].map(|path| b.flows.iter().filter(|&&(_, slot)| slot % 2 == path).count() as u64),
                health: w.owns(w.region_part(b.region)).then(|| row.health.clone()),
                addrs: host_owned.then(|| (row.client_addrs_seen.clone(), row.client_addrs_total)),
            };
            (i, part)
        });
        let world_wide = w.scope().map_or(0, |s| s.world_wide);
        RankPart {
            pops: (0..report.pops.len())
                .filter(|&p| w.owns(w.pop_part(PopId(p))))
                .map(|p| (p, report.pops[p].flows))
                .collect(),
            clients: owned_groups.clone().map(|g| (g, report.clients[g].clone())).collect(),
            last_reply_ns: owned_groups.map(|g| (g, last[g].clone())).collect(),
            backends: backends.collect(),
            clb_nodes: self
                .regions
                .clbs()
                .ids()
                .enumerate()
                .filter(|&(_, c)| w.owns(w.clb_part(c)))
                .map(|(i, _)| (i, report.clb_nodes[i].clone()))
                .collect(),
            security_groups: report
                .security_groups
                .iter()
                .map(|g| g.rules.iter().map(|r| (r.matched, r.denied)).collect())
                .collect(),
            drops: report
                .drops
                .iter()
                .map(|(node, d)| (node.clone(), d.iter().map(|(k, &v)| (k.to_string(), v)).collect()))
                .collect(),
            violations: report.violations.clone(),
            trackers: w.recorded().trackers().iter().map(TrackerPart::of).collect(),
            events: self.events() - world_wide,
            packets: self.packets(),
            probe_packets: self.probe_packets(),
            quic_handshakes: self.quic_handshakes(),
            quic_h3_requests: self.quic_h3_requests(),
            load: Default::default(),
            partition_events: Vec::new(),
        }
    }

    /// Rank 0: the other ranks' trackers, violations and counters into this world's
    /// record, in the order one world keeps them. Then [`World::report`] and
    /// [`World::take_rows`].
    pub(crate) fn absorb_ranks(&mut self, parts: &mut [RankPart]) -> Sums {
        let mut sums = Sums::default();
        for part in parts.iter_mut() {
            for (i, b) in part.backends.iter() {
                self.servers.absorb_flows(*i, b.flows);
            }
        }
        let record = self.wire.record();
        for part in parts.iter_mut() {
            let trackers = std::mem::take(&mut part.trackers);
            for (mine, theirs) in record.trackers_mut().iter_mut().zip(trackers) {
                mine.absorb(&mut theirs.into_tracker(mine));
            }
            record.absorb_counts(std::mem::take(&mut part.violations), (part.packets, part.probe_packets, part.events));
            sums.quic_handshakes += part.quic_handshakes;
            sums.quic_h3_requests += part.quic_h3_requests;
        }
        record.sort_merged();
        sums
    }

    /// Rank 0: each row of `report` from the rank that ran it; sums summed (flows served
    /// were merged into the backends' records by [`World::absorb_ranks`]).
    pub(crate) fn take_rows(&self, report: &mut Report, parts: Vec<RankPart>, last_reply: &mut [Vec<Option<u64>>]) {
        for part in parts {
            for (p, flows) in part.pops {
                if let Some(row) = report.pops.get_mut(p) {
                    row.flows = flows;
                }
            }
            for (g, row) in part.clients {
                if let Some(mine) = report.clients.get_mut(g) {
                    *mine = row;
                }
            }
            for (g, last) in part.last_reply_ns {
                if let Some(mine) = last_reply.get_mut(g) {
                    *mine = last;
                }
            }
            for (i, b) in part.backends {
                if let Some(row) = report.backends.get_mut(i) {
                    b.onto(row);
                }
            }
            for (i, row) in part.clb_nodes {
                if let Some(mine) = report.clb_nodes.get_mut(i) {
                    *mine = row;
                }
            }
            for (group, counts) in report.security_groups.iter_mut().zip(part.security_groups) {
                for (rule, (matched, denied)) in group.rules.iter_mut().zip(counts) {
                    rule.matched += matched;
                    rule.denied += denied;
                }
            }
            for (node, drops) in part.drops {
                let mine = report.drops.entry(node).or_default();
                for (reason, n) in drops {
                    *mine.entry(reason_name(reason)).or_default() += n;
                }
            }
        }
    }
}

impl BackendPart {
    fn onto(self, row: &mut BackendReport) {
        if let Some(health) = self.health {
            row.health = health;
        }
        if let Some((seen, total)) = self.addrs {
            row.client_addrs_seen = seen;
            row.client_addrs_total = total;
        }
    }
}

impl TrackerPart {
    fn of(tr: &FaultTracker) -> TrackerPart {
        TrackerPart {
            detected_ns: tr.detected_ns,
            noticed: tr.noticed.iter().map(|(k, &v)| (k.clone(), v)).collect(),
            affected: tr.affected.iter().map(|&(c, slot)| (c.0, slot)).collect(),
            before: tr.before.clone(),
            first_reply_ns: tr.first_reply_ns.clone(),
            changed: tr.changed.clone(),
        }
    }

    /// As a tracker of the same fault as `like`.
    fn into_tracker(self, like: &FaultTracker) -> FaultTracker {
        FaultTracker {
            fault: like.fault,
            at_ns: like.at_ns,
            detected_ns: self.detected_ns,
            noticed: self.noticed.into_iter().collect(),
            what: like.what.clone(),
            affected: self.affected.into_iter().map(|(c, slot)| (ClientId(c), slot)).collect(),
            before: self.before,
            first_reply_ns: self.first_reply_ns,
            changed: self.changed,
        }
    }
}

/// A drop reason read back as the name its core gives it (the report's keys are the
/// cores' static names; each distinct one is kept once for the process's life).
fn reason_name(reason: String) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = names.iter().find(|&&n| n == reason) {
        return n;
    }
    let n: &'static str = Box::leak(reason.into_boxed_str());
    names.push(n);
    n
}
