//! Which Raft messages from the network a control node lets into raft-rs. raft-rs trusts
//! its peers: a message from a stranger, a term near `u64::MAX`, a `MsgTimeoutNow` from
//! anyone or a heartbeat committing past the end of the log makes it change leaders,
//! overflow or panic. Every check here is against the message and this node's own state,
//! nothing else, so the simulator and the lab refuse the same messages for the same reason.

use raft::eraftpb::{EntryType, Message, MessageType};

use crate::table::RouteTable;

/// No message may carry a term this high, whatever the node's own: far beyond any real
/// cluster (one election a millisecond for 8,900 years), far below `u64::MAX`, so raft-rs's
/// `term + 1` never overflows.
pub const TERM_MAX: u64 = 1 << 48;

/// How far one message may move a node's term. A node that was away misses one term per
/// election held without it; 2^20 elections is beyond any outage, and a forged term can
/// no longer jump the cluster to the end of the range in one message.
pub const TERM_JUMP_MAX: u64 = 1 << 20;

/// No log index reaches this either (a write a microsecond for 8,900 years): a message
/// naming one is forged, and raft-rs's index arithmetic stays far from overflow.
pub const INDEX_MAX: u64 = 1 << 48;

/// This node as a message is judged against.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub id: u64,
    pub voters: &'a [u64],
    pub term: u64,
    pub leader: Option<u64>,
    pub last_index: u64,
    pub committed: u64,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Misaddressed {
        to: u64,
    },
    /// The message says it is from `claimed`; its transport proved it is from `from`.
    Impostor {
        claimed: u64,
        from: u64,
    },
    NotMember {
        from: u64,
    },
    /// A kind peers never send each other here (local, proposals, reads, transfers).
    Kind(MessageType),
    Term {
        term: u64,
        limit: u64,
    },
    /// Only the leader of the current term may tell a node to campaign at once.
    TimeoutNow {
        from: u64,
        leader: Option<u64>,
    },
    /// The message contradicts itself or this node's log.
    Inconsistent(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Misaddressed { to } => write!(f, "addressed to control/{to}"),
            Refusal::Impostor { claimed, from } => {
                write!(f, "claims to be from control/{claimed} but control/{from} sent it")
            }
            Refusal::NotMember { from } => write!(f, "from {from}, not a voter of this cluster"),
            Refusal::Kind(kind) => write!(f, "{kind:?} is never sent between control nodes"),
            Refusal::Term { term, limit } => write!(f, "term {term} is beyond {limit}"),
            Refusal::TimeoutNow { from, leader: Some(l) } => {
                write!(f, "MsgTimeoutNow from control/{from}, but control/{l} leads")
            }
            Refusal::TimeoutNow { from, leader: None } => {
                write!(f, "MsgTimeoutNow from control/{from} with no leader known")
            }
            Refusal::Inconsistent(what) => write!(f, "inconsistent message: {what}"),
        }
    }
}

/// Ok when raft-rs may step `m`, which peer `from` sent to `node`.
pub fn admit(node: &NodeView<'_>, from: u64, m: &Message) -> Result<(), Refusal> {
    if m.to != node.id {
        return Err(Refusal::Misaddressed { to: m.to });
    }
    if m.from != from {
        return Err(Refusal::Impostor { claimed: m.from, from });
    }
    if from == node.id || !node.voters.contains(&from) {
        return Err(Refusal::NotMember { from });
    }
    let limit = TERM_MAX.min(node.term.saturating_add(TERM_JUMP_MAX));
    if m.term > limit {
        return Err(Refusal::Term { term: m.term, limit });
    }
    // raft-rs takes term 0 for a message from its own node: peers always stamp theirs.
    if m.term == 0 {
        return Err(Refusal::Inconsistent("term 0 marks a local message"));
    }
    use MessageType::*;
    let kind = m.get_msg_type();
    if !matches!(
        kind,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow
    ) {
        return Err(Refusal::Kind(kind));
    }
    if kind == MsgTimeoutNow && (node.leader != Some(from) || m.term != node.term) {
        return Err(Refusal::TimeoutNow { from, leader: node.leader });
    }
    // raft-rs answers or ignores a message from an earlier term without reading its
    // content (so stale messages from an old leadership are not mistaken for forgeries).
    if m.term < node.term {
        return Ok(());
    }
    consistent(node, m).map_err(Refusal::Inconsistent)
}

/// The shape checks raft-rs leaves to assertions.
fn consistent(node: &NodeView<'_>, m: &Message) -> Result<(), &'static str> {
    use MessageType::*;
    let kind = m.get_msg_type();
    let indices = [m.index, m.commit, m.reject_hint].into_iter().chain(m.entries.iter().map(|e| e.index));
    if indices.into_iter().any(|i| i > INDEX_MAX) {
        return Err("log index out of range");
    }
    if m.log_term > m.term {
        return Err("log term after the message's term");
    }
    if kind != MsgAppend && !m.entries.is_empty() {
        return Err("entries on a message that carries none");
    }
    if kind != MsgSnapshot && m.has_snapshot() {
        return Err("a snapshot on a message that carries none");
    }
    if m.request_snapshot != 0 {
        return Err("snapshot requests are not used here");
    }
    match kind {
        MsgAppend => append_entries(m),
        MsgHeartbeat if m.commit > node.last_index => Err("heartbeat commits past the end of this node's log"),
        MsgAppendResponse if m.index > node.last_index || m.reject_hint > node.last_index => {
            Err("acknowledges entries this node never sent")
        }
        MsgSnapshot => snapshot(node, m),
        _ => Ok(()),
    }
}

fn append_entries(m: &Message) -> Result<(), &'static str> {
    // raft-rs reads term 0 past the end of its log, so a zero log term would "match" an
    // index this node never had and leave a hole in its log.
    if m.index > 0 && m.log_term == 0 {
        return Err("previous entry has term 0");
    }
    let mut term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        if Some(e.index) != m.index.checked_add(1 + i as u64) {
            return Err("entries do not follow the previous index one by one");
        }
        if e.term < term || e.term > m.term {
            return Err("entry terms go backwards or past the message's term");
        }
        if e.get_entry_type() != EntryType::EntryNormal {
            return Err("membership changes are not made over the network here");
        }
        term = e.term;
    }
    let last = m.index.saturating_add(m.entries.len() as u64);
    if m.commit > last {
        return Err("commits past the entries it carries");
    }
    Ok(())
}

fn snapshot(node: &NodeView<'_>, m: &Message) -> Result<(), &'static str> {
    if !m.has_snapshot() {
        return Err("MsgSnapshot without a snapshot");
    }
    let s = m.get_snapshot();
    let meta = s.get_metadata();
    if meta.index == 0 || meta.index > INDEX_MAX || meta.term > m.term || meta.term == 0 {
        return Err("snapshot index or term out of range");
    }
    let cs = meta.get_conf_state();
    let mut voters = cs.voters.clone();
    voters.sort_unstable();
    let mut ours = node.voters.to_vec();
    ours.sort_unstable();
    if voters != ours || !cs.learners.is_empty() || !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() {
        return Err("snapshot names another membership");
    }
    if RouteTable::decode(&s.data).is_none() {
        return Err("snapshot data is not a route table");
    }
    Ok(())
}
