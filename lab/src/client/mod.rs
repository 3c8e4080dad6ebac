//! What talks to a running lab from outside its nodes: the load client (`probe`), the
//! benchmarks, the control API client and packet capture.

pub mod bench;
pub mod capture;
pub mod ctl;
pub mod drain;
pub mod failover;
pub mod lab;
pub mod probe;
