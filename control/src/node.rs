//! One control node: raft-rs's `RawNode` with the route table as its state machine,
//! sans-IO. Its driver calls [`ControlNode::tick`] on a fixed period, hands it the
//! messages peers sent ([`ControlNode::step`]) and proposals ([`ControlNode::propose`]),
//! and sends out what [`ControlNode::poll_output`] returns. No clock, no socket, no
//! thread RNG: whenever raft-rs resets its election timer (a new term, a new role, an
//! election started or a leader heard from), the node draws a fresh timeout from its own
//! seeded RNG, so elections converge (two nodes cannot keep timing out together) and the
//! simulator still replays them exactly.

use std::collections::VecDeque;

use anyedge_ccn::ComponentRng;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, StateRole};
use serde::Serialize;

use crate::store::{LogStore, StoreError};
use crate::table::{Change, ChangeError, RouteTable};

/// Applied changes a node keeps for watchers catching up; older ones come as a table.
pub const HISTORY_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This node's Raft id (1-based, as `control/N`).
    pub id: u64,
    /// Every voter's id, this node's included.
    pub voters: Vec<u64>,
    /// Ticks without a leader before a follower campaigns: a fresh draw from
    /// `min..max` at every reset of the election timer.
    pub election_ticks: (usize, usize),
    pub heartbeat_tick: usize,
    /// Fold the log into a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// The root seed the node's election-timeout draws come from (with its id).
    pub seed: u64,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send these bytes to peer `to`.
    Message { to: u64, bytes: Vec<u8> },
    /// A committed entry was applied to the table (`result` says whether it still fit).
    Applied { index: u64, term: u64, change: Change, result: Result<(), ChangeError> },
    /// A committed entry that carries no change was applied (a new leader's empty entry,
    /// a membership change): its index is taken, and a write proposed there lost.
    AppliedNothing { index: u64, term: u64 },
    /// This node saw a new leader (or lost it: `None`).
    Leader { leader: Option<u64>, term: u64 },
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ProposeError {
    /// Only the leader proposes; this is who it is, if known.
    NotLeader { leader: Option<u64> },
    /// The change does not fit the table; nothing was proposed.
    Invalid(ChangeError),
    /// raft-rs refused it (e.g. a leadership transfer is under way).
    Refused(String),
    /// The log could not be written.
    Store(StoreError),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(l) } => write!(f, "not the leader (control/{l} is)"),
            ProposeError::NotLeader { leader: None } => write!(f, "no leader yet"),
            ProposeError::Invalid(e) => write!(f, "{e}"),
            ProposeError::Refused(e) => write!(f, "refused: {e}"),
            ProposeError::Store(e) => write!(f, "log store: {e}"),
        }
    }
}

/// Why a control node could not be made (or made again after a failed step).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// raft-rs refused the configuration or the log (its own words).
    #[error("raft: {0}")]
    Raft(String),
    /// raft-rs panicked reading the log back.
    #[error("the log store cannot be loaded")]
    Unloadable,
}

/// Why a message from the network was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Garbage, misaddressed or refused by Raft: changes nothing (the network's noise).
    Refused(String),
    /// The log could not be written (or the node made again): the node cannot go on.
    Store(ControlError),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Refused(e) => write!(f, "refused: {e}"),
            StepError::Store(e) => write!(f, "log store: {e}"),
        }
    }
}

impl std::error::Error for StepError {}

/// What a watcher (POP, CLB node) needs to follow the table from `after`.
#[derive(Debug, Clone, PartialEq)]
pub enum CatchUp {
    /// The changes after `after`, in log order, and the index they bring the watcher to
    /// (entries that change nothing, like a new leader's empty one, count too).
    Changes { changes: Vec<(u64, Change)>, upto: u64 },
    /// Too far behind (or new): the whole table as of `index`.
    Table { index: u64, table: RouteTable },
}

pub struct ControlNode {
    raw: RawNode<LogStore>,
    table: RouteTable,
    applied: u64,
    snapshot_every: u64,
    history: VecDeque<(u64, Change)>,
    outputs: VecDeque<Output>,
    leader_seen: (Option<u64>, u64),
    /// The election timer as last seen (term, role, ticks elapsed): a change means
    /// raft-rs reset it, and a fresh timeout is drawn.
    timer_seen: (u64, StateRole, usize),
    election_ticks: (usize, usize),
    rng: ComponentRng,
    voters: Vec<u64>,
    /// What raft-rs was configured with (a rebuild uses it again).
    raft_config: Config,
    recovered: u64,
}

/// What became of a write proposed at (index, term), now that (index, term) of an applied
/// entry is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFate {
    /// Its own entry was applied.
    Committed,
    /// Another entry took its index, or a later term's entry committed before it: it can
    /// never commit. Propose it again (or tell the caller to).
    Lost,
    /// Not decided yet.
    Open,
}

/// The fate of a write proposed at `proposed` once the entry at `applied` is applied
/// (both `(index, term)`). Log terms never decrease along the log, so an entry of a later
/// term at an earlier index means the write's index will hold a later term too.
pub fn write_fate(proposed: (u64, u64), applied: (u64, u64)) -> WriteFate {
    let ((index, term), (at, at_term)) = (proposed, applied);
    debug_assert!(index > 0 && at > 0, "log indices count from 1");
    if at == index && at_term == term {
        WriteFate::Committed
    } else if at == index || (at < index && at_term > term) {
        WriteFate::Lost
    } else {
        WriteFate::Open
    }
}

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl ControlNode {
    /// A node with `store` (fresh, or restored from disk) whose table before any entry
    /// is `initial` — unless the store holds a snapshot, which wins.
    pub fn new(config: &ControlConfig, initial: RouteTable, store: LogStore) -> Result<ControlNode, ControlError> {
        let snapshot = store.latest_snapshot().clone();
        let (table, applied) = match RouteTable::decode(snapshot.get_data()) {
            Some(t) if snapshot.get_metadata().index > 0 => (t, snapshot.get_metadata().index),
            _ => (initial, snapshot.get_metadata().index),
        };
        let (lo, hi) = config.election_ticks;
        let (lo, hi) = (lo.max(config.heartbeat_tick + 1), hi.max(lo.max(config.heartbeat_tick + 1) + 1));
        let raft_config = Config {
            id: config.id,
            election_tick: lo,
            min_election_tick: lo,
            max_election_tick: hi,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            max_inflight_msgs: 256,
            max_size_per_msg: 1 << 20,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let raw =
            RawNode::new(&raft_config, store, &discard_logger()).map_err(|e| ControlError::Raft(e.to_string()))?;
        let boot_term = raw.raft.term;
        let mut node = ControlNode {
            raw,
            table,
            applied,
            snapshot_every: config.snapshot_every.max(1),
            history: VecDeque::new(),
            outputs: VecDeque::new(),
            leader_seen: (None, 0),
            timer_seen: (0, StateRole::Follower, 0),
            election_ticks: (lo, hi),
            // The term it boots in names the draws too: a restarted node does not replay
            // the timeouts of its last life.
            rng: ComponentRng::new(config.seed, &format!("control/{}/election/{boot_term}", config.id)),
            voters: config.voters.clone(),
            raft_config,
            recovered: 0,
        };
        node.draw_election_timeout();
        // A restarted node re-applies what it had committed after its snapshot.
        node.process_ready()?;
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn tick(&mut self) -> Result<(), StoreError> {
        self.raw.tick();
        self.process_ready()
    }

    /// The election timeout (ticks) drawn at the timer's last reset.
    pub fn election_timeout(&self) -> usize {
        self.raw.raft.randomized_election_timeout()
    }

    fn draw_election_timeout(&mut self) {
        let (lo, hi) = self.election_ticks;
        let ticks = lo + self.rng.below((hi - lo) as u64) as usize;
        debug_assert!((lo..hi).contains(&ticks), "raft-rs's own range: [min, max)");
        self.raw.raft.set_randomized_election_timeout(ticks);
        let r = &self.raw.raft;
        self.timer_seen = (r.term, r.state, r.election_elapsed);
    }

    /// raft-rs draws a new timeout from the thread RNG at some resets and at none when a
    /// pre-vote campaign starts; either way the node overwrites it with its own draw
    /// before the next tick, whenever the timer was reset.
    fn redraw_if_timer_reset(&mut self) {
        let r = &self.raw.raft;
        let (term, role, elapsed) = self.timer_seen;
        if r.term != term || r.state != role || r.election_elapsed < elapsed {
            self.draw_election_timeout();
        } else {
            self.timer_seen.2 = r.election_elapsed;
        }
        debug_assert!(self.raw.raft.term >= term, "terms never go back");
    }

    /// A message from peer `from` (the identity its transport proved: the sender's
    /// certificate in the lab, the link in the simulator), as bytes off the wire. Whatever
    /// arrives, nothing panics: garbage, messages for another node, from a non-member, or
    /// claiming another sender, absurd terms, message kinds peers never send each other
    /// and messages that contradict this node's log are refused with the reason and change
    /// nothing. Should raft-rs still give up on a message, the node is rebuilt from its log
    /// store (what a restart would do) and goes on; [`ControlNode::recovered`] counts those.
    pub fn step(&mut self, from: u64, bytes: &[u8]) -> Result<(), StepError> {
        let msg =
            Message::parse_from_bytes(bytes).map_err(|e| StepError::Refused(format!("not a Raft message: {e}")))?;
        crate::admission::admit(&self.admission(), from, &msg).map_err(|e| StepError::Refused(e.to_string()))?;
        self.step_admitted(from, msg)
    }

    /// Steps a message admission let through; if raft-rs panics on it after all, the node
    /// is rebuilt from its store.
    fn step_admitted(&mut self, from: u64, msg: Message) -> Result<(), StepError> {
        let raw = &mut self.raw;
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| raw.step(msg)));
        match stepped {
            Ok(result) => result.map_err(|e| StepError::Refused(e.to_string()))?,
            Err(_) => {
                let applied = self.applied;
                self.rebuild().map_err(StepError::Store)?;
                debug_assert_eq!(self.applied, applied, "a rebuild keeps what was applied");
                return Err(StepError::Refused(format!(
                    "raft-rs gave up on a message from control/{from}; rebuilt from the log store"
                )));
            }
        }
        self.process_ready().map_err(|e| StepError::Store(e.into()))
    }

    /// A message handed to raft-rs without admission: how a test makes raft-rs panic.
    #[cfg(test)]
    pub(crate) fn step_unchecked(&mut self, from: u64, msg: Message) -> Result<(), StepError> {
        self.step_admitted(from, msg)
    }

    /// What [`crate::admission::admit`] checks a message against: this node as it is now.
    fn admission(&self) -> crate::admission::NodeView<'_> {
        let r = &self.raw.raft;
        crate::admission::NodeView {
            id: r.id,
            voters: &self.voters,
            term: r.term,
            leader: self.leader(),
            last_index: r.raft_log.last_index(),
            committed: r.raft_log.committed,
        }
    }

    /// Times raft-rs gave up on a message and the node was rebuilt from its log store.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// A fresh raft-rs node on this node's log store, as after a restart: what was
    /// persisted stays, whatever a failed step left half done in memory is gone. The
    /// table and the applied index are this node's own (everything applied was committed
    /// and persisted first).
    fn rebuild(&mut self) -> Result<(), ControlError> {
        self.recovered += 1;
        let placeholder = LogStore::new(&self.voters, Box::new(crate::store::InMemory))?;
        let store = std::mem::replace(&mut self.raw.raft.raft_log.store, placeholder);
        let mut config = self.raft_config.clone();
        config.applied = self.applied;
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            RawNode::new(&config, store, &discard_logger()).map_err(|e| ControlError::Raft(e.to_string()))
        }));
        self.raw = built.map_err(|_| ControlError::Unloadable)??;
        debug_assert!(self.raw.raft.raft_log.committed >= self.applied, "what was applied was committed and persisted");
        self.draw_election_timeout();
        Ok(())
    }

    /// Proposes `change` (leader only, checked against the table first). Returns the log
    /// index it will commit at.
    pub fn propose(&mut self, change: &Change) -> Result<u64, ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader() });
        }
        self.table.check(change).map_err(ProposeError::Invalid)?;
        self.raw.propose(Vec::new(), change.encode()).map_err(|e| ProposeError::Refused(e.to_string()))?;
        let index = self.raw.raft.raft_log.last_index();
        debug_assert!(index > self.commit(), "a new proposal lies past the commit index");
        self.process_ready().map_err(ProposeError::Store)?;
        Ok(index)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&l| l != raft::INVALID_ID)
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The committed entry at `index`, if this node still has it in its log.
    pub fn committed_entry(&self, index: u64) -> Option<(u64, Vec<u8>)> {
        if index == 0 || index > self.commit() {
            return None;
        }
        let e = self.raw.raft.raft_log.entries(index, 1, raft::GetEntriesContext::empty(false)).ok()?;
        debug_assert!(e.first().is_none_or(|e| e.index == index && e.term <= self.term()));
        e.first().map(|e| (e.term, e.data.to_vec()))
    }

    /// What a watcher that has applied up to `after` needs next.
    pub fn catch_up(&self, after: u64) -> CatchUp {
        let oldest = self.history.front().map_or(self.applied + 1, |(i, _)| *i);
        debug_assert!(
            self.history.back().is_none_or(|(i, _)| *i <= self.applied),
            "history holds applied changes only"
        );
        if after.saturating_add(1) >= oldest || after >= self.applied {
            let changes: Vec<_> = self.history.iter().filter(|(i, _)| *i > after).cloned().collect();
            debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0), "changes in log order");
            CatchUp::Changes { changes, upto: self.applied.max(after) }
        } else {
            CatchUp::Table { index: self.applied, table: self.table.clone() }
        }
    }

    /// Runs one raft-rs Ready cycle: persist, send, apply (the order raft-rs requires).
    fn process_ready(&mut self) -> Result<(), StoreError> {
        self.redraw_if_timer_reset();
        self.note_leader();
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.raw.mut_store().apply_snapshot(snapshot.clone())?;
            self.install(&snapshot);
        }
        self.apply(ready.take_committed_entries());
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.raw.mut_store().set_hard_state(hs.clone())?;
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        debug_assert!(self.applied <= self.commit(), "nothing is applied before it commits");
        self.maybe_compact()?;
        self.note_leader();
        Ok(())
    }

    fn note_leader(&mut self) {
        let now = (self.leader(), self.term());
        if now != self.leader_seen {
            self.leader_seen = now;
            self.outputs.push_back(Output::Leader { leader: now.0, term: now.1 });
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for m in messages {
            if let Ok(bytes) = m.write_to_bytes() {
                self.outputs.push_back(Output::Message { to: m.to, bytes });
            }
        }
    }

    fn install(&mut self, snapshot: &Snapshot) {
        if let Some(table) = RouteTable::decode(snapshot.get_data()) {
            debug_assert!(snapshot.get_metadata().index >= self.applied, "a snapshot moves the table forward");
            self.table = table;
            self.applied = snapshot.get_metadata().index;
            self.history.clear();
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            self.applied = e.index;
            let change = (e.get_entry_type() == EntryType::EntryNormal).then(|| Change::decode(&e.data)).flatten();
            let Some(change) = change else {
                self.outputs.push_back(Output::AppliedNothing { index: e.index, term: e.term });
                continue;
            };
            let result = self.table.apply(&change);
            if self.history.len() == HISTORY_MAX {
                self.history.pop_front();
            }
            debug_assert!(self.history.back().is_none_or(|(i, _)| *i < e.index), "applied in log order");
            self.history.push_back((e.index, change.clone()));
            debug_assert!(self.history.len() <= HISTORY_MAX);
            self.outputs.push_back(Output::Applied { index: e.index, term: e.term, change, result });
        }
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        let snap_index = self.raw.store().latest_snapshot().get_metadata().index;
        if self.applied >= snap_index + self.snapshot_every {
            debug_assert!(self.applied <= self.commit(), "only committed entries are compacted away");
            let data = self.table.encode();
            self.raw.mut_store().compact(self.applied, data)?;
        }
        Ok(())
    }
}
