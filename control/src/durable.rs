//! The real driver's log on disk (redb): entries, hard state and the latest snapshot,
//! each write committed (fsync) before the node sends anything that depends on it.
//! A node restarted on the same file comes back with everything it acknowledged.

use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};
use redb::{Database, ReadableTable, TableDefinition};

use crate::store::{LogStore, Persist, StoreError, StoreWrite};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A control node's database.
pub struct RedbDisk {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Disk(e.to_string())
}

impl RedbDisk {
    /// Opens (or creates) the log at `path`. A new log is given `voters` as its
    /// membership; an existing one keeps what it holds.
    pub fn open(path: &Path, voters: &[u64]) -> Result<LogStore, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Disk(format!("{}: {e}", path.display())))?;
        let (hard_state, snapshot, entries) = load(&db)?;
        let disk = Box::new(RedbDisk { db });
        match snapshot {
            Some(snapshot) => Ok(LogStore::restore(hard_state, snapshot, entries, disk)),
            None => LogStore::new(voters, disk),
        }
    }
}

fn load(db: &Database) -> Result<(HardState, Option<Snapshot>, Vec<Entry>), StoreError> {
    let txn = db.begin_read().map_err(err)?;
    let meta = match txn.open_table(META) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(err(e)),
    };
    let mut hard_state = HardState::default();
    let mut snapshot = None;
    if let Some(meta) = meta {
        if let Some(v) = meta.get("hard_state").map_err(err)? {
            hard_state = HardState::parse_from_bytes(v.value()).map_err(err)?;
        }
        if let Some(v) = meta.get("snapshot").map_err(err)? {
            snapshot = Some(Snapshot::parse_from_bytes(v.value()).map_err(err)?);
        }
    }
    let mut entries = Vec::new();
    match txn.open_table(ENTRIES) {
        Ok(t) => {
            for row in t.iter().map_err(err)? {
                let (_, v) = row.map_err(err)?;
                entries.push(Entry::parse_from_bytes(v.value()).map_err(err)?);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(err(e)),
    }
    Ok((hard_state, snapshot, entries))
}

impl Persist for RedbDisk {
    fn save(&mut self, write: StoreWrite<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            match write {
                StoreWrite::Append(new) => {
                    if let Some(first) = new.first() {
                        let stale: Vec<u64> =
                            entries.range(first.index..).map_err(err)?.flatten().map(|(k, _)| k.value()).collect();
                        for k in stale {
                            entries.remove(k).map_err(err)?;
                        }
                        for e in new {
                            entries.insert(e.index, e.write_to_bytes().map_err(err)?.as_slice()).map_err(err)?;
                        }
                    }
                }
                StoreWrite::HardState(hs) => {
                    meta.insert("hard_state", hs.write_to_bytes().map_err(err)?.as_slice()).map_err(err)?;
                }
                StoreWrite::Snapshot(s) => {
                    let index = s.get_metadata().index;
                    let folded: Vec<u64> =
                        entries.range(..=index).map_err(err)?.flatten().map(|(k, _)| k.value()).collect();
                    for k in folded {
                        entries.remove(k).map_err(err)?;
                    }
                    meta.insert("snapshot", s.write_to_bytes().map_err(err)?.as_slice()).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ControlConfig, ControlNode};
    use crate::table::{BackendRoute, Change, GroupRoute, RouteTable};

    fn table() -> RouteTable {
        RouteTable {
            backend_groups: vec![GroupRoute {
                region: "r".into(),
                name: "g".into(),
                backends: vec![BackendRoute { addr: "198.19.20.1:7000".parse().unwrap(), weight: 10, bound: true }],
            }],
            ..RouteTable::default()
        }
    }

    #[test]
    fn a_node_reopened_on_its_redb_file_has_every_committed_write() {
        let dir = std::env::temp_dir().join(format!("anyedge-redb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.redb");
        let config = ControlConfig {
            id: 1,
            voters: vec![1],
            election_ticks: (5, 6),
            heartbeat_tick: 1,
            snapshot_every: 3,
            seed: 1,
        };
        let backend = "198.19.20.1:7000".parse().unwrap();
        {
            let mut node = ControlNode::new(&config, table(), RedbDisk::open(&path, &[1]).unwrap()).unwrap();
            for _ in 0..10 {
                node.tick().unwrap();
            }
            assert!(node.is_leader());
            for w in 1..=7 {
                node.propose(&Change::SetWeight { backend, weight: w }).unwrap();
            }
            assert_eq!(node.table().weight(backend), Some(7));
        }
        // Reopened: the snapshot (every 3 entries) plus the entries after it.
        let node = ControlNode::new(&config, table(), RedbDisk::open(&path, &[1]).unwrap()).unwrap();
        assert_eq!(node.table().weight(backend), Some(7));
        assert!(node.applied() >= 8, "applied {}", node.applied());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
