//! Control nodes under attack: the messages that took the lab's control plane down
//! (a stranger's heartbeat, a term near `u64::MAX`, forged `MsgTimeoutNow`) replayed on
//! the harness network, and a seeded fuzz of everything a peer could send.

use anyedge_ccn::ComponentRng;
use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

use crate::StepError;
use crate::tests::{Network, backend, initial_table, set_weight};

fn bytes(m: &Message) -> Vec<u8> {
    m.write_to_bytes().unwrap()
}

fn message(kind: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message { from, to, term, ..Default::default() };
    m.set_msg_type(kind);
    m
}

fn refused(result: Result<(), StepError>, reason: &str) {
    match result {
        Err(StepError::Refused(e)) => assert!(e.contains(reason), "refused for another reason: {e}"),
        other => panic!("taken ({other:?}); expected a refusal naming `{reason}`"),
    }
}

#[test]
fn forged_raft_messages_are_refused_and_the_cluster_still_elects_and_commits() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let leader = net.leader().expect("a leader");
    let term = net.node(leader).term();
    let mut others = (1..=3).filter(|&id| id != leader);
    let (a, b) = (others.next().unwrap(), others.next().unwrap());

    // A heartbeat from id 99, no member, with term 2^40 + 1.
    let stranger = message(MessageType::MsgHeartbeat, 99, a, (1 << 40) + 1);
    refused(net.node(a).step(99, &bytes(&stranger)), "not a voter");
    // The same, claiming to be the leader, over another member's connection.
    let impostor = message(MessageType::MsgHeartbeat, leader, a, term);
    refused(net.node(a).step(b, &bytes(&impostor)), "claims to be from");
    // A member's heartbeat with term 2^64 − 2 (raft-rs overflowed and panicked on it).
    let huge = message(MessageType::MsgHeartbeat, b, a, u64::MAX - 1);
    refused(net.node(a).step(b, &bytes(&huge)), "beyond");
    let jump = message(MessageType::MsgRequestVote, b, a, term + crate::TERM_JUMP_MAX + 1);
    refused(net.node(a).step(b, &bytes(&jump)), "beyond");
    // MsgTimeoutNow from a follower, and from the leader's id at another term: each used
    // to make the target campaign at once and take the leadership.
    for (from, t) in [(b, term), (leader, term + 1)] {
        let timeout_now = message(MessageType::MsgTimeoutNow, from, a, t);
        refused(net.node(a).step(from, &bytes(&timeout_now)), "MsgTimeoutNow");
    }
    // Proposals, leadership transfers and membership changes do not come over the wire.
    let transfer = message(MessageType::MsgTransferLeader, b, leader, term);
    refused(net.node(leader).step(b, &bytes(&transfer)), "never sent between control nodes");
    let mut conf = message(MessageType::MsgAppend, leader, a, term);
    conf.index = net.node(a).commit();
    conf.log_term = term;
    let mut e = Entry { index: conf.index + 1, term, ..Default::default() };
    e.set_entry_type(EntryType::EntryConfChange);
    conf.entries.push(e);
    refused(net.node(a).step(leader, &bytes(&conf)), "membership");

    net.tick(30);
    assert_eq!(net.leader(), Some(leader), "the leader kept its place");
    for id in 1..=3 {
        assert_eq!(net.node(id).term(), term, "control/{id}'s term did not move");
        assert_eq!(net.node(id).recovered(), 0);
    }
    let index = net.write(&set_weight(1, 42));
    net.tick(3);
    for id in 1..=3 {
        assert!(net.node(id).applied() >= index, "control/{id} applied the write");
        assert_eq!(net.node(id).table().weight(backend(1)), Some(42));
    }
}

/// A message of any kind a peer (or a stranger) might send, near this node's state or far
/// from it, with entries and snapshots that make sense or do not.
fn random_message(rng: &mut ComponentRng, net: &mut Network) -> (u64, u64, Message) {
    let to = 1 + rng.below(3);
    let node = net.node(to);
    let (term, last, commit) = (node.term(), node.commit(), node.commit());
    let near = |rng: &mut ComponentRng, x: u64| match rng.below(6) {
        0 => 0,
        1 => x.saturating_sub(1 + rng.below(3)),
        2 => x + rng.below(3),
        3 => u64::MAX - rng.below(3),
        4 => rng.next_u64(),
        _ => x,
    };
    let ids = [1, 2, 3, 1, 2, 3, 0, 99];
    let from = ids[rng.below(ids.len() as u64) as usize];
    let sender = if rng.chance(0.9) { from } else { ids[rng.below(ids.len() as u64) as usize] };
    let mut m = Message {
        from,
        to: if rng.chance(0.95) { to } else { rng.below(5) },
        term: near(rng, term),
        log_term: near(rng, term),
        index: near(rng, last),
        commit: near(rng, commit),
        reject: rng.chance(0.3),
        reject_hint: near(rng, last),
        request_snapshot: if rng.chance(0.05) { rng.next_u64() } else { 0 },
        ..Default::default()
    };
    let kinds = MessageType::values();
    m.set_msg_type(kinds[rng.below(kinds.len() as u64) as usize]);
    if rng.chance(0.4) {
        for i in 0..rng.below(4) {
            let mut e = Entry {
                index: if rng.chance(0.8) { m.index.wrapping_add(1 + i) } else { near(rng, last) },
                term: if rng.chance(0.8) { m.term } else { near(rng, term) },
                data: if rng.chance(0.5) {
                    set_weight(2, rng.below(101) as u8).encode().into()
                } else {
                    vec![7].into()
                },
                ..Default::default()
            };
            let types = EntryType::values();
            e.set_entry_type(if rng.chance(0.8) { EntryType::EntryNormal } else { types[rng.below(3) as usize] });
            m.entries.push(e);
        }
    }
    if rng.chance(0.1) {
        let mut s = Snapshot::default();
        s.mut_metadata().index = near(rng, last);
        s.mut_metadata().term = near(rng, term);
        let voters = if rng.chance(0.7) { vec![1, 2, 3] } else { vec![1, 99] };
        s.mut_metadata().set_conf_state(ConfState::from((voters, vec![])));
        s.data = if rng.chance(0.7) { initial_table().encode().into() } else { vec![1, 2, 3].into() };
        m.set_snapshot(s);
    }
    (sender, to, m)
}

#[test]
fn no_message_a_peer_or_stranger_sends_panics_a_control_node_and_the_cluster_goes_on() {
    let mut rng = ComponentRng::new(12, "control/fuzz");
    let mut net = Network::new(3, 16);
    net.tick(30);
    // Forged messages make honest nodes answer things their peers never asked.
    net.refusals_allowed = true;
    let mut taken = 0;
    for round in 0..200_000 {
        let (sender, to, m) = random_message(&mut rng, &mut net);
        let raw = bytes(&m);
        // Truncated or corrupted frames too.
        let raw = if rng.chance(0.05) { raw[..rng.below(raw.len() as u64 + 1) as usize].to_vec() } else { raw };
        let before = net.node(to).recovered();
        let result = net.node(to).step(sender, &raw);
        assert_eq!(net.node(to).recovered(), before, "round {round}: raft-rs gave up on {m:?} from {sender}");
        match result {
            Ok(()) => taken += 1,
            Err(StepError::Refused(_)) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
        if round % 16 == 0 {
            net.tick(1);
        }
        if round % 500 == 0 {
            let _ = net.leader().map(|l| net.node(l).propose(&set_weight(3, (round % 100) as u8)));
        }
    }
    for id in 1..=3 {
        assert_eq!(net.node(id).recovered(), 0, "control/{id}: every message raft-rs cannot take was refused first");
    }
    assert!(taken > 100, "the fuzz reached raft-rs ({taken} messages taken)");
    net.tick(200);
    let leader = net.leader().expect("the cluster elects after the fuzz");
    let index = net.node(leader).propose(&set_weight(1, 77)).expect("the leader takes a write");
    net.tick(10);
    let applied = (1..=3).filter(|&id| net.node(id).applied() >= index).count();
    assert!(applied >= 2, "a majority applied the write after the fuzz");
}

#[test]
fn a_message_raft_rs_gives_up_on_rebuilds_the_node_from_its_log_and_it_keeps_up() {
    let mut net = Network::new(3, 64);
    net.tick(30);
    let leader = net.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    net.write(&set_weight(1, 5));
    net.tick(3);
    let (term, applied) = (net.node(follower).term(), net.node(follower).applied());
    // Committing past the end of its log is one of raft-rs's assertions.
    let mut m = message(MessageType::MsgHeartbeat, leader, follower, term);
    m.commit = applied + 100;
    refused(net.node(follower).step(leader, &bytes(&m)), "past the end");
    refused(net.node(follower).step_unchecked(leader, m), "rebuilt from the log store");
    assert_eq!(net.node(follower).recovered(), 1);
    assert_eq!(net.node(follower).applied(), applied, "what it had applied stays applied");
    assert_eq!(net.node(follower).table().weight(backend(1)), Some(5));
    let index = net.write(&set_weight(2, 6));
    net.tick(5);
    assert!(net.node(follower).applied() >= index, "the rebuilt node follows the leader again");
    assert_eq!(net.node(follower).table().weight(backend(2)), Some(6));
}
