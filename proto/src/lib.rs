//! anyedge wire formats: the CCN encapsulation header and the inner-packet views the
//! cores use (flow keys, address rewriting). Every parser returns a typed error; none
//! panics on any input (fuzzed by `tests/fuzz_parsers.rs`).

pub mod ccn;
pub mod inner;

/// The backbone's gRPC service (tonic), generated from `proto/anyedge.proto`.
#[cfg(feature = "grpc")]
pub mod grpc {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("anyedge.ccn");
}

/// The control plane's gRPC services (Raft between control nodes, the control API),
/// generated from `proto/control.proto`.
#[cfg(feature = "grpc")]
pub mod control {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("anyedge.control");
}
pub mod liveness;
pub mod offload;
pub mod pcap;
pub mod quic;
pub mod reassembly;
pub mod seal;
pub mod sync;

pub use ccn::{Direction, Packet as CcnPacket, Repr as CcnRepr};
pub use inner::{FlowKey, Transport};

use std::fmt;

/// Why bytes could not be read as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header or than the length the header declares.
    Truncated,
    /// A field holds a value this version does not know.
    Malformed(&'static str),
    /// A protocol the cores do not carry (neither TCP nor UDP).
    Unsupported(&'static str),
}

impl Error {
    /// A stable name for drop counters: `truncated`, `malformed`, `unsupported`.
    pub fn name(&self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::Malformed(_) => "malformed",
            Error::Unsupported(_) => "unsupported",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "packet truncated"),
            Error::Malformed(what) => write!(f, "malformed {what}"),
            Error::Unsupported(what) => write!(f, "unsupported {what}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
