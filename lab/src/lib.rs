//! anyedge's lab: a topology brought up as network namespaces, veth links and TUN
//! devices, with the shipped cores running on tokio in real node processes.

pub mod backend_host;
pub mod batch;
pub mod bench;
pub mod capture;
mod clb_driver;
pub mod control_node;
pub mod ctl;
pub mod drops;
pub mod egress;
pub mod grpc;
pub mod layout;
pub mod limits;
pub mod netns;
pub mod node;
pub mod pki;
pub mod plan;
pub mod pop;
pub mod probe;
pub mod probing;
pub mod realtime;
pub mod router;
pub mod servers;
pub mod setup;
pub mod shaper;
pub mod tunq;
pub mod watch;
