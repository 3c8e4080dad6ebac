//! anyedge's control plane: the route table (VIPs, listeners, publish sets, backends and
//! weights, security groups) replicated with Raft — raft-rs's `RawNode`, driven sans-IO
//! like every other core here. The simulator moves its messages over the seeded network;
//! the lab moves them over mutual-TLS gRPC and keeps the log on disk.
//!
//! ```
//! use anyedge_control::{ControlConfig, ControlNode, LogStore, InMemory, RouteTable};
//! let config =
//!     ControlConfig { id: 1, voters: vec![1], election_ticks: (10, 20), heartbeat_tick: 2, snapshot_every: 64, seed: 1 };
//! let mut node = ControlNode::new(&config, RouteTable::default(), LogStore::new(&[1], Box::new(InMemory)).unwrap()).unwrap();
//! // A single voter elects itself once its election timeout (10 to 19 ticks) passes.
//! for _ in 0..20 { node.tick().unwrap(); }
//! assert!(node.is_leader());
//! ```

pub mod admission;
#[cfg(feature = "durable")]
pub mod durable;
pub mod node;
pub mod store;
pub mod table;

pub use admission::{Refusal, TERM_JUMP_MAX, TERM_MAX};
pub use node::{
    CatchUp, ControlConfig, ControlError, ControlNode, Output, ProposeError, StepError, WriteFate, write_fate,
};
pub use store::{Disk, DiskWriter, InMemory, LogStore, Persist, StoreError, StoreWrite};
pub use table::{
    BackendRoute, Change, ChangeError, GroupRoute, ListenerRoute, RouteTable, SecurityGroupRoute, VipRoute,
};

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
