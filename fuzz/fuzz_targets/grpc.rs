//! Control-plane requests as the gRPC services decode them: bytes through prost into each
//! request message, then where the service hands it on — a Raft frame's message into a
//! control node's `step` (admission, then raft-rs) as from a member, a write's change JSON
//! through the decode `Control::write` uses and into `propose`, a watch request's index into
//! `catch_up`; the backbone's tunnel frame too. Records `[op, len, bytes…]`; op 0 ticks.
//!
//! Oracles: every decoded message survives prost's encode and decode unchanged; a refused
//! Raft message changes nothing the node reports (term, commit, applied, leader, table);
//! a refused write proposes nothing; a catch-up never goes backwards and never past what
//! the node applied unless the watcher said it was further.
#![no_main]

use anyedge_control::{CatchUp, Change, ControlConfig, ControlNode, InMemory, LogStore, StepError};
use anyedge_proto::control::{RaftFrame, WatchRequest, WriteRequest};
use anyedge_proto::grpc::Frame;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn table() -> anyedge_control::RouteTable {
    static TABLE: std::sync::OnceLock<anyedge_control::RouteTable> = std::sync::OnceLock::new();
    TABLE
        .get_or_init(|| {
            let t = anyedge_topology::parse_str("small.yaml", include_str!("../../topologies/small.yaml"))
                .expect("the shipped topology parses");
            anyedge_topology::route_table::route_table(&t)
        })
        .clone()
}

/// Decodes `bytes` as `M`, checking the round trip of whatever decodes.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("prost decodes what it encoded");
    assert_eq!(again, m, "prost round trip");
    Some(m)
}

type Seen = (u64, u64, u64, Option<u64>, anyedge_control::RouteTable);

fn seen(node: &ControlNode) -> Seen {
    (node.term(), node.commit(), node.applied(), node.leader(), node.table().clone())
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, mut rest)) = data.split_first() else { return };
    // One voter (it elects itself, so writes commit) or the first of three.
    let voters: Vec<u64> = if shape & 1 == 0 { vec![1] } else { vec![1, 2, 3] };
    let config = ControlConfig {
        id: 1,
        voters: voters.clone(),
        election_ticks: (10, 20),
        heartbeat_tick: 2,
        snapshot_every: 8,
        seed: 7,
    };
    let store = LogStore::new(&voters, Box::new(InMemory)).expect("an empty store");
    let mut node = ControlNode::new(&config, table(), store).expect("a fresh node");
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        match op % 5 {
            0 => {
                for _ in 0..=(len % 32) {
                    node.tick().expect("ticks never fail in memory");
                }
            }
            1 => {
                let Some(frame) = decode::<RaftFrame>(bytes) else { continue };
                let from = if op & 0x80 == 0 { 2 } else { 3 };
                let before = seen(&node);
                if let Err(StepError::Refused(why)) = node.step(from, &frame.message) {
                    assert_eq!(seen(&node), before, "a refused Raft message changed the node: {why}");
                }
            }
            2 => {
                let Some(write) = decode::<WriteRequest>(bytes) else { continue };
                // As `Control::write` reads it.
                let Ok(change) = serde_json::from_str::<Change>(&write.change_json) else { continue };
                let before = seen(&node);
                if node.propose(&change).is_err() {
                    assert_eq!(seen(&node), before, "a refused write changed the node");
                }
            }
            3 => {
                let Some(watch) = decode::<WatchRequest>(bytes) else { continue };
                match node.catch_up(watch.after) {
                    CatchUp::Changes { changes, upto } => {
                        assert!(upto >= watch.after, "a catch-up went backwards");
                        assert!(upto <= node.applied().max(watch.after), "a catch-up past what was applied");
                        assert!(changes.iter().all(|(i, _)| *i > watch.after && *i <= upto));
                    }
                    CatchUp::Table { index, .. } => assert_eq!(index, node.applied()),
                }
            }
            _ => {
                let _ = decode::<Frame>(bytes);
            }
        }
        while node.poll_output().is_some() {}
    }
});
