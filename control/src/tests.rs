//! Control nodes wired together without I/O (raft-rs's harness network, smaller): messages
//! queue between nodes, links can be cut, nodes isolated, crashed and restarted from what
//! they persisted.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::node::{CatchUp, ControlConfig, ControlNode, Output, ProposeError, WriteFate, write_fate};
use crate::store::{Disk, DiskWriter, LogStore};
use crate::table::{BackendRoute, Change, GroupRoute, RouteTable};

pub(crate) fn backend(i: u8) -> std::net::SocketAddr {
    format!("198.19.20.{i}:7000").parse().unwrap()
}

pub(crate) fn initial_table() -> RouteTable {
    RouteTable {
        backend_groups: vec![GroupRoute {
            region: "frankfurt".into(),
            name: "game".into(),
            backends: (1..=3).map(|i| BackendRoute { addr: backend(i), weight: 10, bound: true }).collect(),
        }],
        ..RouteTable::default()
    }
}

pub(crate) struct Network {
    pub(crate) nodes: Vec<Option<ControlNode>>,
    disks: Vec<Arc<Mutex<Disk>>>,
    in_flight: VecDeque<(u64, u64, Vec<u8>)>,
    cut: BTreeSet<(u64, u64)>,
    applied: Vec<Vec<(u64, Change)>>,
    leaders: Vec<(u64, u64)>,
    /// (index, term) of entries applied with no change in them, by any node.
    applied_nothing: Vec<(u64, u64)>,
    snapshot_every: u64,
    /// Whether a node may refuse a message its peer sent (only after forged ones muddled
    /// the cluster); otherwise a refusal fails the test.
    pub(crate) refusals_allowed: bool,
}

impl Network {
    pub(crate) fn new(n: u64, snapshot_every: u64) -> Network {
        let mut net = Network {
            nodes: Vec::new(),
            disks: Vec::new(),
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: vec![Vec::new(); n as usize],
            leaders: Vec::new(),
            applied_nothing: Vec::new(),
            snapshot_every,
            refusals_allowed: false,
        };
        for id in 1..=n {
            let disk = Arc::new(Mutex::new(Disk::default()));
            let store = LogStore::new(&net.voters(n), Box::new(DiskWriter(disk.clone()))).unwrap();
            net.disks.push(disk);
            net.nodes.push(Some(ControlNode::new(&net.config(id, n), initial_table(), store).unwrap()));
        }
        net
    }

    fn voters(&self, n: u64) -> Vec<u64> {
        (1..=n).collect()
    }

    /// Election timeouts drawn from 10..20 ticks at every reset, each node from its own
    /// seeded RNG (as the simulator and the lab configure them).
    fn config(&self, id: u64, n: u64) -> ControlConfig {
        ControlConfig {
            id,
            voters: self.voters(n),
            election_ticks: (10, 20),
            heartbeat_tick: 2,
            snapshot_every: self.snapshot_every,
            seed: 7,
        }
    }

    pub(crate) fn node(&mut self, id: u64) -> &mut ControlNode {
        self.nodes[id as usize - 1].as_mut().expect("node is up")
    }

    fn drain(&mut self, id: u64) {
        let Some(node) = self.nodes[id as usize - 1].as_mut() else { return };
        while let Some(out) = node.poll_output() {
            match out {
                Output::Message { to, bytes } => self.in_flight.push_back((id, to, bytes)),
                Output::Applied { index, change, .. } => self.applied[id as usize - 1].push((index, change)),
                Output::Leader { leader: Some(l), term } if l == id => self.leaders.push((term, id)),
                Output::Leader { .. } => {}
                Output::AppliedNothing { index, term } => self.applied_nothing.push((index, term)),
            }
        }
    }

    pub(crate) fn deliver(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.drain(id);
        }
        while let Some((from, to, bytes)) = self.in_flight.pop_front() {
            if self.cut.contains(&(from, to)) {
                continue;
            }
            if let Some(node) = self.nodes[to as usize - 1].as_mut() {
                match node.step(from, &bytes) {
                    Err(crate::StepError::Refused(_)) if self.refusals_allowed => {}
                    result => result.unwrap(),
                }
                self.drain(to);
            }
        }
    }

    pub(crate) fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for node in self.nodes.iter_mut().flatten() {
                node.tick().unwrap();
            }
            self.deliver();
        }
    }

    pub(crate) fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self.nodes.iter().flatten().filter(|n| n.is_leader()).map(|n| n.id()).collect();
        // Several nodes may think they lead only across terms (a deposed one not yet told).
        leaders.into_iter().max_by_key(|&id| self.nodes[id as usize - 1].as_ref().map(|n| n.term()))
    }

    pub(crate) fn isolate(&mut self, id: u64) {
        for other in 1..=self.nodes.len() as u64 {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    pub(crate) fn crash(&mut self, id: u64) {
        self.nodes[id as usize - 1] = None;
    }

    /// Brings a crashed node back with what its disk holds, nothing more.
    pub(crate) fn restart(&mut self, id: u64) {
        let n = self.nodes.len() as u64;
        let store = LogStore::from_disk(&self.disks[id as usize - 1]).unwrap();
        let node = ControlNode::new(&self.config(id, n), initial_table(), store).unwrap();
        self.nodes[id as usize - 1] = Some(node);
        self.applied[id as usize - 1].clear();
        self.drain(id);
    }

    pub(crate) fn write(&mut self, change: &Change) -> u64 {
        let leader = self.leader().expect("a leader");
        let index = self.node(leader).propose(change).unwrap();
        self.deliver();
        index
    }
}

pub(crate) fn set_weight(i: u8, weight: u8) -> Change {
    Change::SetWeight { backend: backend(i), weight }
}

#[test]
fn three_nodes_elect_one_leader_and_every_node_applies_a_committed_write() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let leader = net.leader().expect("elected within 30 ticks");
    let index = net.write(&set_weight(1, 0));
    net.tick(3);
    for id in 1..=3 {
        let node = net.node(id);
        assert!(node.commit() >= index && node.applied() >= index, "node {id} applied {}", node.applied());
        assert_eq!(node.table().weight(backend(1)), Some(0), "node {id}");
        assert_eq!(node.leader(), Some(leader));
    }
    let terms: BTreeSet<u64> = net.leaders.iter().map(|&(t, _)| t).collect();
    assert_eq!(terms.len(), net.leaders.len(), "one leader per term: {:?}", net.leaders);
}

#[test]
fn followers_refuse_to_propose_and_name_the_leader() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let leader = net.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let err = net.node(follower).propose(&set_weight(1, 5)).unwrap_err();
    assert_eq!(err, ProposeError::NotLeader { leader: Some(leader) });
}

#[test]
fn an_invalid_change_is_refused_before_it_is_proposed_and_changes_nothing() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let leader = net.leader().unwrap();
    let before = net.node(leader).commit();
    let err = net.node(leader).propose(&set_weight(1, 101)).unwrap_err();
    let ProposeError::Invalid(e) = err else { panic!("{err:?}") };
    assert_eq!(e.field, "weight");
    let err = net.node(leader).propose(&Change::Unbind { backend: backend(9) }).unwrap_err();
    assert!(matches!(err, ProposeError::Invalid(ref e) if e.field == "backend"), "{err:?}");
    net.tick(5);
    assert_eq!(net.node(leader).commit(), before, "nothing reached the log");
    assert_eq!(net.node(leader).table(), &initial_table());
}

#[test]
fn isolating_the_leader_elects_another_that_commits_and_nothing_committed_is_lost() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let old = net.leader().unwrap();
    let first = net.write(&set_weight(1, 20));
    net.tick(2);
    net.isolate(old);
    // The isolated leader still takes a proposal; it can never commit.
    let doomed = net.node(old).propose(&set_weight(2, 99)).unwrap();
    net.tick(60);
    let new = (1..=3).filter(|&id| id != old).find(|&id| net.node(id).is_leader()).expect("the majority elected");
    let second = net.node(new).propose(&set_weight(3, 0)).unwrap();
    net.tick(3);
    assert!(net.node(new).commit() >= second);
    net.heal();
    net.tick(30);
    for id in 1..=3 {
        let node = net.node(id);
        assert_eq!(node.table().weight(backend(1)), Some(20), "node {id} kept the first write");
        assert_eq!(node.table().weight(backend(3)), Some(0), "node {id} has the second write");
        assert_eq!(node.table().weight(backend(2)), Some(10), "the minority's write at {doomed} never committed");
        assert!(node.applied() >= second && first < second);
    }
    // Entries are the same on every node that applied them (committed never changes).
    for i in 0..3 {
        for (index, change) in &net.applied[i] {
            for j in 0..3 {
                if let Some((_, other)) = net.applied[j].iter().find(|(x, _)| x == index) {
                    assert_eq!(other, change, "entry {index} differs between nodes {} and {}", i + 1, j + 1);
                }
            }
        }
    }
}

#[test]
fn a_restarted_node_replays_its_own_log_then_catches_up_from_its_peers() {
    let mut net = Network::new(3, 1000);
    net.tick(30);
    let leader = net.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    net.write(&set_weight(1, 1));
    net.write(&set_weight(2, 2));
    net.tick(3);
    net.crash(follower);
    net.write(&set_weight(3, 3));
    net.tick(3);
    net.restart(follower);
    // Before hearing from anyone it has re-applied what it had committed.
    assert_eq!(net.node(follower).table().weight(backend(2)), Some(2), "replayed from its own log");
    assert_eq!(net.node(follower).table().weight(backend(3)), Some(10), "not yet told of the third write");
    net.tick(20);
    assert_eq!(net.node(follower).table().weight(backend(3)), Some(3), "caught up from the leader");
}

#[test]
fn a_node_far_behind_is_sent_a_snapshot_of_the_table() {
    let mut net = Network::new(3, 4);
    net.tick(30);
    let leader = net.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    net.crash(follower);
    for w in 0..20 {
        net.write(&set_weight(1 + w % 3, w));
        net.tick(1);
    }
    net.restart(follower);
    net.tick(30);
    let want = net.node(leader).table().clone();
    assert_eq!(net.node(follower).table(), &want);
    assert!(net.node(follower).applied() >= 20);
    match net.node(leader).catch_up(0) {
        CatchUp::Table { table, .. } => assert_eq!(table, want),
        CatchUp::Changes { changes, .. } => panic!("history starts late, a watcher at 0 needs the table: {changes:?}"),
    }
    let applied = net.node(leader).applied();
    assert_eq!(net.node(leader).catch_up(applied), CatchUp::Changes { changes: Vec::new(), upto: applied });
}

/// Seen while writing the `grpc` fuzz target: a watch request's `after` is the watcher's word, and
/// `u64::MAX` overflowed `after + 1` (a panic in debug builds, a wrapped index in release).
#[test]
fn a_watcher_claiming_the_highest_index_waits_for_it_without_a_panic() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let leader = net.leader().unwrap();
    net.write(&set_weight(1, 5));
    let node = net.node(leader);
    assert_eq!(node.catch_up(u64::MAX), CatchUp::Changes { changes: Vec::new(), upto: u64::MAX });
    assert_eq!(node.catch_up(u64::MAX - 1), CatchUp::Changes { changes: Vec::new(), upto: u64::MAX - 1 });
}

#[test]
fn bytes_that_are_not_a_raft_message_for_this_node_are_refused() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let before = net.node(1).term();
    assert!(net.node(1).step(3, b"\xff\xff\xff garbage").is_err());
    // A well-formed message addressed to node 2 does not move node 1.
    let mut m = raft::eraftpb::Message { to: 2, from: 3, term: before + 5, ..Default::default() };
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    let bytes = protobuf::Message::write_to_bytes(&m).unwrap();
    assert!(net.node(1).step(3, &bytes).is_err());
    assert_eq!(net.node(1).term(), before);
}

#[test]
fn a_cluster_restarted_from_its_disks_elects_a_leader_and_keeps_every_committed_write() {
    let mut net = Network::new(3, 1000);
    net.tick(30);
    for w in 0..6 {
        net.write(&set_weight(1 + w % 3, 50 + w));
        net.tick(1);
    }
    net.tick(5);
    let before = net.node(1).table().clone();
    for id in 1..=3 {
        net.crash(id);
    }
    for id in 1..=3 {
        net.restart(id);
    }
    net.tick(60);
    let leader = net.leader().expect("restarted voters still vote and lead");
    assert_eq!(net.node(leader).table(), &before, "nothing committed was lost");
    net.write(&set_weight(1, 0));
    net.tick(3);
    for id in 1..=3 {
        assert_eq!(net.node(id).table().weight(backend(1)), Some(0), "node {id}");
    }
}

#[test]
fn every_election_draws_a_fresh_timeout_and_a_leader_always_follows() {
    let mut net = Network::new(3, 64);
    let mut timeouts = BTreeSet::new();
    // Kill the leader 30 times: the survivors must elect within a bound every time.
    for round in 0..30 {
        let mut waited = 0;
        while net.leader().is_none() {
            net.tick(1);
            waited += 1;
            assert!(waited <= 200, "round {round}: no leader after 200 ticks (10× the longest timeout)");
            for node in net.nodes.iter().flatten() {
                let t = node.election_timeout();
                assert!((10..20).contains(&t), "drawn from the configured range: {t}");
                timeouts.insert((node.id(), t));
            }
        }
        let leader = net.leader().unwrap();
        net.crash(leader);
        net.tick(1);
        net.restart(leader);
    }
    for id in 1..=3 {
        let drawn = timeouts.iter().filter(|(n, _)| *n == id).count();
        assert!(drawn >= 4, "node {id} drew only {drawn} distinct timeouts: {timeouts:?}");
    }
}

#[test]
fn a_write_whose_index_a_new_leader_takes_is_known_lost() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let old = net.leader().unwrap();
    let term = net.node(old).term();
    // Proposed, then the leader is cut off before anyone hears of it.
    net.isolate(old);
    let index = net.node(old).propose(&set_weight(1, 3)).unwrap();
    net.tick(60);
    let new = net.leader().unwrap();
    assert_ne!(new, old);
    net.heal();
    net.tick(30);
    // The new leader's empty entry took the index: the old leader applied it too.
    let taken = net.applied_nothing.iter().find(|&&(i, _)| i == index).copied();
    let (_, new_term) = taken.unwrap_or_else(|| panic!("nothing applied at {index}: {:?}", net.applied_nothing));
    assert!(new_term > term);
    assert_eq!(write_fate((index, term), (index, new_term)), WriteFate::Lost);
    assert_eq!(net.node(old).table().weight(backend(1)), Some(10), "the write never applied");
}

#[test]
fn write_fate_follows_the_log() {
    assert_eq!(write_fate((7, 2), (7, 2)), WriteFate::Committed);
    assert_eq!(write_fate((7, 2), (7, 3)), WriteFate::Lost, "another entry at its index");
    assert_eq!(write_fate((7, 2), (5, 3)), WriteFate::Lost, "a later term before it: its index holds term ≥ 3");
    assert_eq!(write_fate((7, 2), (5, 2)), WriteFate::Open, "its own term, earlier: still coming");
    assert_eq!(write_fate((7, 2), (6, 1)), WriteFate::Open);
}
