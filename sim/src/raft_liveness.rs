//! Raft's liveness as the simulator checks it: whenever a majority of control nodes is up
//! and mutually connected, a leader exists within a bound, and every write commits within
//! a bound. Safety (one leader a term, committed entries never change) is checked where
//! the entries are seen, in `control.rs`.

use std::collections::BTreeSet;

/// What the control plane looks like at one instant.
pub struct Snapshot<'a> {
    pub now_ns: u64,
    /// A majority of control nodes is up and can reach each other.
    pub majority_connected: bool,
    /// The leader that majority follows (1-based), if it has one.
    pub leader: Option<u8>,
    /// Writes not committed yet: (write number, when requested).
    pub pending: &'a [(u64, u64)],
}

pub struct Liveness {
    leader_bound_ns: u64,
    write_bound_ns: u64,
    /// Since when a majority has been up and connected (now: if it is).
    majority_since: Option<u64>,
    leaderless_since: Option<u64>,
    overdue: BTreeSet<u64>,
    leader: Option<u8>,
    elected_once: bool,
    /// Times the plane's leader went away (lost, or replaced by another).
    pub leader_changes: u64,
    pub leader_within_bound: bool,
    pub writes_commit_within_bound: bool,
}

impl Liveness {
    /// Bounds: a leader within `leader_bound_ns` of a majority being up and connected; a
    /// write within `write_bound_ns` of being requested (or of the majority returning).
    pub fn new(leader_bound_ns: u64, write_bound_ns: u64) -> Liveness {
        Liveness {
            leader_bound_ns,
            write_bound_ns,
            majority_since: None,
            leaderless_since: None,
            overdue: BTreeSet::new(),
            leader: None,
            elected_once: false,
            leader_changes: 0,
            leader_within_bound: true,
            writes_commit_within_bound: true,
        }
    }

    pub fn leader_bound_ns(&self) -> u64 {
        self.leader_bound_ns
    }

    pub fn write_bound_ns(&self) -> u64 {
        self.write_bound_ns
    }

    /// Looks at the plane now; a broken bound becomes a violation (once each).
    pub fn observe(&mut self, s: &Snapshot<'_>, violations: &mut Vec<String>) {
        if self.leader.is_some() && s.leader != self.leader {
            self.leader_changes += 1;
        }
        self.elected_once |= s.leader.is_some();
        self.leader = s.leader;
        if !s.majority_connected {
            self.majority_since = None;
            self.leaderless_since = None;
            return;
        }
        let since = *self.majority_since.get_or_insert(s.now_ns);
        if s.leader.is_some() {
            self.leaderless_since = None;
        } else {
            let from = *self.leaderless_since.get_or_insert(s.now_ns.max(since));
            if s.now_ns - from > self.leader_bound_ns && self.leader_within_bound {
                self.leader_within_bound = false;
                violations.push(format!(
                    "leader_within_bound: no leader for {} ms while a majority of control nodes was up and connected (bound {} ms)",
                    (s.now_ns - from) / 1_000_000,
                    self.leader_bound_ns / 1_000_000
                ));
            }
        }
        for &(write, requested_ns) in s.pending {
            let from = requested_ns.max(since);
            if s.now_ns.saturating_sub(from) > self.write_bound_ns && self.overdue.insert(write) {
                self.writes_commit_within_bound = false;
                violations.push(format!(
                    "writes_commit_within_bound: write #{write} not committed {} ms after a majority could take it (bound {} ms)",
                    (s.now_ns - from) / 1_000_000,
                    self.write_bound_ns / 1_000_000
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at(now_ms: u64, majority_connected: bool, leader: Option<u8>, pending: &[(u64, u64)]) -> Snapshot<'_> {
        Snapshot { now_ns: now_ms * MS, majority_connected, leader, pending }
    }

    #[test]
    fn no_leader_past_the_bound_with_a_connected_majority_is_a_violation() {
        let mut l = Liveness::new(3000 * MS, 4000 * MS);
        let mut v = Vec::new();
        l.observe(&at(0, true, Some(1), &[]), &mut v);
        l.observe(&at(1000, true, None, &[]), &mut v);
        l.observe(&at(3900, true, None, &[]), &mut v);
        assert!(v.is_empty() && l.leader_within_bound);
        l.observe(&at(4100, true, None, &[]), &mut v);
        assert!(!l.leader_within_bound && v.len() == 1, "{v:?}");
        assert_eq!(l.leader_changes, 1, "the leader was lost once");
    }

    #[test]
    fn a_partitioned_minute_is_no_violation_and_the_clock_starts_when_the_majority_returns() {
        let mut l = Liveness::new(3000 * MS, 4000 * MS);
        let mut v = Vec::new();
        let pending = [(1, 0)];
        l.observe(&at(0, false, None, &pending), &mut v);
        l.observe(&at(60_000, false, None, &pending), &mut v);
        l.observe(&at(61_000, true, None, &pending), &mut v);
        l.observe(&at(63_900, true, None, &pending), &mut v);
        assert!(v.is_empty(), "{v:?}");
        l.observe(&at(65_100, true, Some(2), &pending), &mut v);
        assert!(l.leader_within_bound && !l.writes_commit_within_bound, "{v:?}");
    }
}
