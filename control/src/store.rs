//! The Raft log of one control node: entries, hard state and the latest snapshot (the
//! route table at some index), served to raft-rs through its `Storage` trait. Reads come
//! from memory; every write also goes to a [`Persist`] backend before the node acts on
//! it — nothing in the simulator, an on-disk database in the real driver — so a
//! restarted node comes back with everything it had acknowledged.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// One durable write, in the order the node makes them.
pub enum StoreWrite<'a> {
    /// Entries from `entries[0].index` on replace whatever the log held from there.
    Append(&'a [Entry]),
    HardState(&'a HardState),
    /// The log now starts after this snapshot.
    Snapshot(&'a Snapshot),
}

/// Why a control node's log could not be kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub enum StoreError {
    /// The disk (a database, a shared stand-in) refused a read or a write.
    #[error("raft log: {0}")]
    Disk(String),
    /// An append that would leave a gap or rewrite what a snapshot holds.
    #[error("append at {at} leaves a gap or rewrites the snapshot (log {first}..={last})")]
    Gap { at: u64, first: u64, last: u64 },
    /// A compaction asked for a term the log does not hold.
    #[error("raft log: no term for index {index}: {why}")]
    NoTerm { index: u64, why: String },
}

/// Where a store's writes go to survive a restart.
pub trait Persist {
    fn save(&mut self, write: StoreWrite<'_>) -> Result<(), StoreError>;
}

/// Writes nothing: the simulator's nodes "restart" with their memory intact, as a
/// process with a disk would.
pub struct InMemory;

impl Persist for InMemory {
    fn save(&mut self, _write: StoreWrite<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What a node has written, as a disk would hold it: the simulator's and the tests'
/// stand-in for the real driver's database. Shared with the writer so a "restarted"
/// node can be rebuilt from it and nothing else.
#[derive(Default, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    pub entries: Vec<Entry>,
}

/// A [`Persist`] writing to a shared [`Disk`].
pub struct DiskWriter(pub std::sync::Arc<std::sync::Mutex<Disk>>);

impl Persist for DiskWriter {
    fn save(&mut self, write: StoreWrite<'_>) -> Result<(), StoreError> {
        let mut d = self.0.lock().map_err(|e| StoreError::Disk(e.to_string()))?;
        match write {
            StoreWrite::Append(new) => {
                if let Some(first) = new.first() {
                    d.entries.retain(|e| e.index < first.index);
                    d.entries.extend_from_slice(new);
                }
            }
            StoreWrite::HardState(hs) => d.hard_state = hs.clone(),
            StoreWrite::Snapshot(s) => {
                let index = s.get_metadata().index;
                d.entries.retain(|e| e.index > index);
                d.snapshot = s.clone();
            }
        }
        Ok(())
    }
}

impl LogStore {
    /// A node brought back from a [`Disk`] (its later writes go to the same disk).
    pub fn from_disk(disk: &std::sync::Arc<std::sync::Mutex<Disk>>) -> Result<LogStore, StoreError> {
        let d = disk.lock().map_err(|e| StoreError::Disk(e.to_string()))?.clone();
        Ok(LogStore::restore(d.hard_state, d.snapshot, d.entries, Box::new(DiskWriter(disk.clone()))))
    }
}

pub struct LogStore {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries after the snapshot's index, consecutive.
    entries: Vec<Entry>,
    persist: Box<dyn Persist + Send>,
}

impl LogStore {
    /// A fresh node of a cluster of `voters`, its log empty. The membership is written
    /// first: a node restarted from its disk must still know it is a voter.
    pub fn new(voters: &[u64], mut persist: Box<dyn Persist + Send>) -> Result<LogStore, StoreError> {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(ConfState::from((voters.to_vec(), Vec::<u64>::new())));
        persist.save(StoreWrite::Snapshot(&snapshot))?;
        Ok(LogStore { hard_state: HardState::default(), snapshot, entries: Vec::new(), persist })
    }

    /// A node coming back with what it persisted.
    pub fn restore(
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Vec<Entry>,
        persist: Box<dyn Persist + Send>,
    ) -> LogStore {
        let from = snapshot.get_metadata().index;
        let entries = entries.into_iter().filter(|e| e.index > from).collect();
        LogStore { hard_state, snapshot, entries, persist }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    pub fn append(&mut self, new: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = new.first() else { return Ok(()) };
        if first.index <= self.snapshot_index() || first.index > self.last() + 1 {
            return Err(StoreError::Gap { at: first.index, first: self.snapshot_index() + 1, last: self.last() });
        }
        self.persist.save(StoreWrite::Append(new))?;
        let keep = (first.index - self.snapshot_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(new);
        debug_assert!(self.contiguous(), "the log stays contiguous after the snapshot");
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), StoreError> {
        debug_assert!(hs.term >= self.hard_state.term, "a term persisted is never taken back");
        self.persist.save(StoreWrite::HardState(&hs))?;
        self.hard_state = hs;
        Ok(())
    }

    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state.clone();
        debug_assert!(commit >= hs.commit && commit <= self.last(), "the commit index moves forward within the log");
        hs.commit = commit;
        self.set_hard_state(hs)
    }

    /// A snapshot from the leader replaces the whole log.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let index = snapshot.get_metadata().index;
        if index <= self.snapshot_index() {
            return Ok(());
        }
        self.persist.save(StoreWrite::Snapshot(&snapshot))?;
        self.entries.retain(|e| e.index > index);
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < snapshot.get_metadata().term {
            self.hard_state.term = snapshot.get_metadata().term;
        }
        self.snapshot = snapshot;
        debug_assert!(self.contiguous() && self.hard_state.commit >= index);
        Ok(())
    }

    /// Whether the entries follow the snapshot with no gap, one index after another.
    fn contiguous(&self) -> bool {
        let base = self.snapshot_index();
        self.entries.iter().enumerate().all(|(i, e)| e.index == base + 1 + i as u64)
    }

    /// Folds the log up to `index` (applied) into a snapshot holding `data`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        if index <= self.snapshot_index() || index > self.last() {
            return Ok(());
        }
        let term = self.term(index).map_err(|e| StoreError::NoTerm { index, why: e.to_string() })?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.snapshot.get_metadata().get_conf_state().clone());
        self.persist.save(StoreWrite::Snapshot(&snapshot))?;
        self.entries.retain(|e| e.index > index);
        self.snapshot = snapshot;
        debug_assert!(self.contiguous(), "compaction keeps the rest of the log in place");
        Ok(())
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.snapshot.get_metadata().get_conf_state().clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let base = self.snapshot_index() + 1;
        debug_assert!(base <= low && high <= base + self.entries.len() as u64);
        let mut out = self.entries[(low - base) as usize..(high - base) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < snap.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - snap.index - 1) as usize) {
            Some(e) => {
                debug_assert_eq!(e.index, idx, "entry i holds index snapshot + 1 + i");
                Ok(e.term)
            }
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}
