//! The regional CLB as a sans-IO core: listeners, schedulers (WRR, Maglev), a bounded
//! LRU connection table, TCP health checks, and the NAT that keeps the client's source
//! address. Packets, timers and `now` come in; packets to send and events come out.

pub mod cidr;
pub mod clb;
pub mod config;
pub mod conn_table;
pub mod health;
pub mod l7;
pub mod probe;
pub mod quic;
pub mod quic_listener;
pub mod scheduler;
pub mod security;
pub mod tcp_stack;

pub use clb::{Clb, Event, Output};
pub use config::{BackendConfig, ClbConfig, HealthConfig, ListenerConfig, SchedulerKind};
