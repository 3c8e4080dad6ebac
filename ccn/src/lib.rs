//! The CCN backbone and the internet around it, as models the simulator and the lab share:
//! geography (great-circle delay), a per-link model (delay, jitter, loss, bandwidth,
//! bounded queue), the discrete-event queue that emulating links needs, seeded
//! per-component randomness, and backbone authentication (keys, tags, replay windows);
//! and the least-recently-used order the nodes' flow tables keep.

pub mod auth;
pub mod delay;
pub mod event_queue;
pub mod geo;
pub mod landmarks;
pub mod link;
pub mod liveness;
pub mod lru;
pub mod memo;
pub mod path;
pub mod rng;
pub mod transmit;

pub use auth::{
    AuthConfig, AuthError, BackboneSecret, CidCipher, DerivedKeys, Keyring, NoRandomness, NodeId, PeerKeys, PeerList,
    Prf, Tags, cid_node,
};
pub use event_queue::EventQueue;
pub use link::{Impairment, Link, LinkModel, LinkOutcome};
pub use liveness::{Demand, LivenessConfig, LivenessOutput, LivenessProber};
pub use lru::Lru;
pub use memo::WeakMemo;
pub use rng::ComponentRng;
pub use transmit::{Dest, Transmit};
