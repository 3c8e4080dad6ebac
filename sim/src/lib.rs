//! anyedge's deterministic simulator and the topology files that drive it.

pub mod topology;
