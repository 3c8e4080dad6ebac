//! What a forwarding core hands its driver to send: where to, the flow it belongs to,
//! and the bytes. The POP, the CLB node and the egress gateway all emit this one type,
//! and the core computes the flow hash once, as it makes the packet, so no driver parses
//! (sealed) bytes again to route them or to keep a flow on one queue, jitter draw or
//! TUN queue.

use std::net::{IpAddr, SocketAddr};

use crate::auth::NodeId;

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// A node of the backbone, sealed for it: a CLB node (a POP's client packet, another
    /// CLB node's connection sync, an egress gateway's reply), or a POP (a CLB node's
    /// encapsulated reply).
    Node(NodeId),
    /// A backend, by its address: sealed for its host when the core holds the host's
    /// keys (the backend leg), a plain IP packet when it crosses the internet (from an
    /// egress gateway).
    Backend(SocketAddr),
    /// A client at this address: a plain IP packet from the VIP (a POP's decapsulated
    /// reply, a CLB node's reply to a client that came straight in).
    Client(IpAddr),
}

/// One packet a core emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    /// The hash of the flow the packet carries (`FlowKey::flow_hash` of the inner packet
    /// as the core made it; for a backbone packet, the hash its CCN header carries).
    /// Zero for what belongs to no one flow (connection-sync batches).
    pub flow_hash: u32,
    pub bytes: Vec<u8>,
    /// A TCP super-packet's segment size (`anyedge_proto::offload`): the payload bytes of
    /// each segment the kernel cuts it into where it leaves (a POP's reply to a client,
    /// written into its TUN device). 0 for an ordinary packet, and for every sealed one
    /// (its envelope carries the size).
    pub segment: u16,
}

impl Transmit {
    pub fn new(dest: Dest, flow_hash: u32, bytes: Vec<u8>) -> Transmit {
        Transmit { dest, flow_hash, bytes, segment: 0 }
    }

    /// The same, a super-packet of `segment` bytes per segment.
    pub fn segmented(self, segment: u16) -> Transmit {
        Transmit { segment, ..self }
    }

    /// The flow hash widened for link models and queue choice.
    pub fn flow(&self) -> u64 {
        u64::from(self.flow_hash)
    }
}
