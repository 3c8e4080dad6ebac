//! anyedge's lab: a topology brought up as network namespaces, veth links and TUN
//! devices, with the shipped cores running on tokio in real node processes. Three rooms:
//! `node/` is what `anyedge node` runs inside a namespace (one driver per role), `setup/`
//! brings a lab up and down on the host, `client/` talks to a running lab (probe, bench,
//! ctl, capture); `io/` is the I/O they share, and `plan`, `layout` and `pki` describe a
//! lab to all of them.

pub mod app_wire;
pub mod bird;
pub mod client;
pub mod error;
pub mod io;
pub mod layout;
pub mod node;
pub mod pki;
pub mod plan;
pub mod setup;

// The paths the binary and the tests have always used.
pub use client::{bench, bulk, capture, ctl, drain, failover, l7, probe};
pub use io::tunq;
pub use node::bgp;
