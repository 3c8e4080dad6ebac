//! The regional CLB as a sans-IO core: listeners, schedulers (WRR, Maglev), a bounded
//! LRU connection table, TCP health checks, and the NAT that keeps the client's source
//! address. Packets, timers and `now` come in; packets to send and events come out.

pub mod cidr;
pub mod clb;
pub mod config;
pub mod conn_table;
pub mod gateway;
pub mod h2;
pub mod h3;
pub mod health;
pub mod health_check;
pub mod http1;
pub mod identity;
pub mod l7;
pub mod quic;
pub mod quic_listener;
pub mod scheduler;
pub mod security;
pub mod syn_cookie;
pub mod sync;
pub mod tables;
pub mod tcp_stack;
pub mod termination;
pub mod window;

pub use clb::{Clb, ClbDrop, Event};

/// A server configuration shared by pointer (TLS and QUIC configs cannot be compared):
/// two are equal when they are the same one.
pub struct Shared<T>(pub std::sync::Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared<{}>", std::any::type_name::<T>())
    }
}

impl<T> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for Shared<T> {}
pub use config::{BackendConfig, ClbConfig, HealthConfig, ListenerConfig, SchedulerKind};
