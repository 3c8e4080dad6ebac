//! A node's clock: nanoseconds since it started, what its sans-IO core takes as `now`.

use std::time::Instant;

pub fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// A wake-up so far away it never comes (a `select!` branch with nothing to wait for).
pub fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
}
