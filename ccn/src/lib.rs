//! The CCN backbone and the internet around it, as models the simulator and the lab share:
//! geography (great-circle delay), a per-link model (delay, jitter, loss, bandwidth,
//! bounded queue), the discrete-event queue that emulating links needs, and seeded
//! per-component randomness.

pub mod event_queue;
pub mod geo;
pub mod link;
pub mod liveness;
pub mod rng;

pub use event_queue::EventQueue;
pub use link::{Impairment, Link, LinkModel, Outcome};
pub use liveness::{ProbeConfig, ProbeOutput, Prober};
pub use rng::ComponentRng;
