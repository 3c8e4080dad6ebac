//! Control-plane writes as the control node decodes them (`ctl` sends a change as JSON;
//! the Raft log carries the same bytes): one change a line, checked and applied to the
//! route table of `topologies/small.yaml`. A refused change changes nothing; a watcher
//! catching up from the whole table (`changes_to`) arrives at the same table; the table
//! survives its snapshot encoding.
#![no_main]

use std::sync::OnceLock;

use anyedge_control::{Change, RouteTable};
use libfuzzer_sys::fuzz_target;

fn start() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let t = anyedge_topology::parse_str("small.yaml", include_str!("../../topologies/small.yaml"))
            .expect("the shipped topology parses");
        anyedge_topology::route_table::route_table(&t)
    })
}

fuzz_target!(|data: &[u8]| {
    let start = start();
    let mut table = start.clone();
    for line in data.split(|&b| b == b'\n') {
        let Some(change) = Change::decode(line) else { continue };
        let before = table.clone();
        if table.apply(&change).is_err() {
            assert_eq!(table, before, "a refused change changes nothing: {change:?}");
        }
    }
    let mut caught_up = start.clone();
    for change in start.changes_to(&table) {
        caught_up.apply(&change).unwrap_or_else(|e| panic!("catch-up change {change:?} refused: {e:?}"));
    }
    assert_eq!(caught_up, table, "a watcher catching up from the table holds the same table");
    assert_eq!(RouteTable::decode(&table.encode()).as_ref(), Some(&table), "snapshot round trip");
});
