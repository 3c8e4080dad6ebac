//! The I/O every room shares: batched sockets, TUN queues, the user-space link shaper,
//! connection limits, the gRPC servers' TLS, namespaces, real-time scheduling, the node clock
//! and the CPU accounting `bench lab` reports.

pub mod batch;
pub mod clock;
pub mod cpu;
pub mod limits;
pub mod netns;
pub mod realtime;
pub mod shaper;
pub mod timer;
pub mod tls;
pub mod tunq;
