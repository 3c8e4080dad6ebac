//! What faults leave behind: `FaultState` (what a restarted CLB node must not forget, and
//! what restarted cores had counted) and `FaultTracker` (one fault's record: who noticed
//! it when, which flows it touched and how they recovered). Parts, with their fields
//! private where no report reads them; `faults.rs` is what the world does when a fault
//! happens.

use anyedge_region::security::RuleCounters;
use anyedge_topology::Topology;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::world::ids::ClientId;

/// What faults changed that a node restarted later must not forget, and what restarted
/// cores had counted.
pub(super) struct FaultState {
    /// Backends unbound by faults (a restarted CLB node must not forget them).
    unbound: Vec<SocketAddr>,
    /// Weights set by faults without a control plane (a restarted CLB node keeps them).
    weights_set: Vec<(SocketAddr, u8)>,
    /// Per security-group binding: the counters of CLB cores that were restarted.
    retired_sg: Vec<Vec<RuleCounters>>,
}

impl FaultState {
    pub(super) fn new(t: &Topology) -> FaultState {
        FaultState {
            unbound: Vec::new(),
            weights_set: Vec::new(),
            retired_sg: t.security_groups.iter().map(|d| vec![RuleCounters::default(); d.group.rules.len()]).collect(),
        }
    }

    /// A weight a fault set without a control plane: the latest for `addr` is kept.
    pub(super) fn weight_set(&mut self, addr: SocketAddr, weight: u8) {
        self.weights_set.retain(|&(a, _)| a != addr);
        self.weights_set.push((addr, weight));
    }

    /// A backend a fault unbound (`bound` false) or bound again.
    pub(super) fn bound(&mut self, addr: SocketAddr, bound: bool) {
        self.unbound.retain(|&a| a != addr);
        if !bound {
            self.unbound.push(addr);
        }
    }

    /// A restarted core's counters of security-group binding `group`, kept for the report.
    pub(super) fn retire(&mut self, group: usize, counters: &[RuleCounters]) {
        for (ri, c) in counters.iter().enumerate() {
            self.retired_sg[group][ri].matched += c.matched;
            self.retired_sg[group][ri].denied += c.denied;
        }
    }

    /// Per security-group binding: what restarted cores counted.
    pub(super) fn retired_sg(&self) -> &[Vec<RuleCounters>] {
        &self.retired_sg
    }

    /// Another partition's world's retired counters, added to these.
    pub(super) fn absorb(&mut self, other: &FaultState) {
        for (mine, theirs) in self.retired_sg.iter_mut().zip(&other.retired_sg) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.matched += t.matched;
                m.denied += t.denied;
            }
        }
    }

    /// What faults changed, told to a fresh CLB core.
    pub(super) fn replay(&self, core: &mut anyedge_region::Clb) {
        for &addr in &self.unbound {
            core.unbind(addr);
        }
        for &(addr, weight) in &self.weights_set {
            core.set_weight(addr, weight);
        }
    }
}

pub(super) struct FaultTracker {
    /// The fault's index in the file.
    pub(super) fault: usize,
    pub(super) at_ns: u64,
    /// When the first node noticed what it did (probes, health checks).
    pub(super) detected_ns: Option<u64>,
    /// Each node's first notice of it.
    pub(super) noticed: BTreeMap<String, u64>,
    pub(super) what: String,
    pub(super) affected: Vec<(ClientId, usize)>,
    pub(super) before: Vec<Option<SocketAddr>>,
    pub(super) first_reply_ns: Vec<Option<u64>>,
    pub(super) changed: Vec<bool>,
}

impl FaultTracker {
    /// What another partition's world tracked of the same fault: the earlier detection
    /// and notices, and its flows.
    pub(super) fn absorb(&mut self, theirs: &mut FaultTracker) {
        self.detected_ns = match (self.detected_ns, theirs.detected_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (who, &at) in &theirs.noticed {
            let e = self.noticed.entry(who.clone()).or_insert(at);
            *e = (*e).min(at);
        }
        self.affected.append(&mut theirs.affected);
        self.before.append(&mut theirs.before);
        self.first_reply_ns.append(&mut theirs.first_reply_ns);
        self.changed.append(&mut theirs.changed);
    }

    /// Its flows in client order, as one world finds them.
    pub(super) fn sort_by_client(&mut self) {
        let mut rows: Vec<_> = (0..self.affected.len())
            .map(|i| (self.affected[i], self.before[i], self.first_reply_ns[i], self.changed[i]))
            .collect();
        rows.sort_by_key(|r| r.0);
        self.affected = rows.iter().map(|r| r.0).collect();
        self.before = rows.iter().map(|r| r.1).collect();
        self.first_reply_ns = rows.iter().map(|r| r.2).collect();
        self.changed = rows.iter().map(|r| r.3).collect();
    }
}
