//! What leaves a CLB node, and the keys it leaves with: packets toward POPs, backends,
//! peers and clients, sealed for their receiver, and the events worth recording. The
//! same keyring opens what arrives.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use anyedge_ccn::auth::{AuthError, Keyring, NodeId};
use anyedge_ccn::{Dest, Transmit};
use anyedge_proto::FlowKey;
use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::seal::Kind;
use anyedge_proto::{inner, offload};

use super::Event;
use crate::conn_table::Ingress;

/// An output waiting for `poll_output`: sealed there, or already sealed (replies toward
/// a POP are encapsulated and sealed in one copy as they are made).
#[derive(Debug)]
enum Queued {
    ToSeal(Transmit),
    Ready(Transmit),
}

/// A node's outputs in the order made, its events, and its backbone keys.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Queued>,
    events: VecDeque<Event>,
    keys: Keyring,
    /// The backend hosts this node seals for, by address.
    backend_hosts: Vec<(IpAddr, NodeId)>,
    /// Outputs dropped for want of a key for their peer (a configuration error).
    unsealable: u64,
    /// The POPs replies went to since the driver last asked: its prober probes them.
    demand: anyedge_ccn::Demand,
}

impl Outbox {
    pub fn new(keys: Keyring, backend_hosts: Vec<(IpAddr, NodeId)>) -> Outbox {
        debug_assert!(backend_hosts.iter().all(|(_, id)| matches!(id, NodeId::Backend { .. })));
        Outbox {
            queue: VecDeque::new(),
            events: VecDeque::new(),
            keys,
            backend_hosts,
            unsealable: 0,
            demand: Default::default(),
        }
    }

    /// Opens a sealed packet of `kind`: its sealer and its payload.
    pub fn open<'a>(&mut self, kind: Kind, bytes: &'a [u8]) -> Result<(NodeId, &'a [u8]), AuthError> {
        self.keys.open(kind, bytes)
    }

    /// The node's backbone keys: drivers seal and open its probes with them.
    pub fn keyring(&mut self) -> &mut Keyring {
        &mut self.keys
    }

    /// The backend host at `ip`.
    pub fn host_id(&self, ip: IpAddr) -> Option<NodeId> {
        self.backend_hosts.iter().find(|(a, _)| *a == ip).map(|&(_, id)| id)
    }

    /// An IP packet for a backend (a client's, a health check), sealed for its host when
    /// polled; its flow hash is taken here, from the packet as made.
    pub fn send_to_backend(&mut self, backend: SocketAddr, bytes: Vec<u8>) {
        let flow_hash = inner::parse(&bytes).map_or(0, |i| i.key.flow_hash());
        self.queue.push_back(Queued::ToSeal(Transmit::new(Dest::Backend(backend), flow_hash, bytes)));
    }

    /// The same, for a packet whose flow key the caller knows (it rewrote the packet to
    /// it): no second parse on the forwarding path. A super-packet (`segment` > 0) is
    /// sealed behind the shim that tells the host where to cut it.
    pub fn send_to_backend_as(&mut self, backend: SocketAddr, key: FlowKey, bytes: Vec<u8>, segment: u16) {
        debug_assert_eq!(inner::parse(&bytes).map(|i| i.key).ok(), Some(key), "the key the packet carries");
        let out = Transmit::new(Dest::Backend(backend), key.flow_hash(), bytes).segmented(segment);
        self.queue.push_back(Queued::ToSeal(out));
    }

    /// Connection-sync batches for the region's CLB nodes, sealed when polled.
    pub fn send_to_peers(&mut self, region: u16, batches: impl IntoIterator<Item = (u16, Vec<u8>)>) {
        for (node, bytes) in batches {
            self.queue.push_back(Queued::ToSeal(Transmit::new(Dest::Node(NodeId::Clb { region, node }), 0, bytes)));
        }
    }

    /// A reply to a client through POP `pop_id` (encapsulated and sealed in one copy),
    /// or straight out when it came straight in.
    /// A super-packet (`segment` > 0) goes whole in its envelope (cut to what one carries)
    /// with its segment size in the CCN header; straight out, it is cut into segments.
    pub fn send_to_client(
        &mut self,
        via: Ingress,
        flow_hash: u32,
        packet: Vec<u8>,
        segment: u16,
    ) -> anyedge_proto::Result<()> {
        // Straight out, as the segments it stands for; toward a POP, in as few envelopes
        // as carry it.
        let parts = match via {
            Ingress::Direct if segment > 0 => Some((offload::cut(&packet, usize::from(segment))?, 0)),
            Ingress::Pop(_) if segment > 0 && packet.len() > offload::SUPER_PACKET_MAX => {
                Some((offload::fit(&packet, segment, offload::SUPER_PACKET_MAX)?, segment))
            }
            _ => None,
        };
        if let Some((parts, segment)) = parts {
            return parts.into_iter().try_for_each(|part| self.send_to_client(via, flow_hash, part, segment));
        }
        let Ingress::Pop(pop_id) = via else {
            let key = inner::parse(&packet)?.key;
            self.queue.push_back(Queued::Ready(Transmit::new(Dest::Client(key.dst), key.flow_hash(), packet)));
            return Ok(());
        };
        let ccn = ccn::Repr::around(Direction::ToPop, pop_id, flow_hash, &packet)?.with_segment(segment);
        self.demand.mark(pop_id);
        debug_assert_eq!(ccn.buffer_len(), ccn.header_len() + packet.len());
        let (header, len) = ccn.header();
        match self.keys.seal_parts(NodeId::Pop(pop_id), Kind::Data, &header[..len], &packet) {
            Some(bytes) => {
                let out = Transmit::new(Dest::Node(NodeId::Pop(pop_id)), flow_hash, bytes);
                self.queue.push_back(Queued::Ready(out));
            }
            None => self.unsealable += 1,
        }
        Ok(())
    }

    /// The POPs replies went to since the last call.
    pub fn take_demand(&mut self) -> Vec<u16> {
        self.demand.take()
    }

    pub fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next packet to send, sealed for its receiver; what cannot be sealed is counted
    /// and skipped.
    pub fn poll_output(&mut self) -> Option<Transmit> {
        loop {
            let mut out = match self.queue.pop_front()? {
                Queued::Ready(out) => return Some(out),
                Queued::ToSeal(out) => out,
            };
            let (to, kind) = match out.dest {
                Dest::Node(node @ NodeId::Pop(_)) => (node, Kind::Data),
                Dest::Node(node) => (node, Kind::Sync),
                Dest::Backend(backend) => match self.host_id(backend.ip()) {
                    Some(host) => (host, Kind::Backend),
                    None => {
                        self.unsealable += 1;
                        continue;
                    }
                },
                Dest::Client(_) => return Some(out),
            };
            let shim = if kind == Kind::Backend { offload::shim(out.segment) } else { None };
            let sealed = match shim {
                // A super-packet for its host, behind the shim that says where to cut it.
                Some(shim) => self.keys.seal_parts(to, kind, &shim, &out.bytes),
                None => self.keys.seal(to, kind, &out.bytes),
            };
            let Some(sealed) = sealed else {
                self.unsealable += 1;
                continue;
            };
            debug_assert_eq!(
                sealed.len(),
                out.bytes.len() + shim.map_or(0, |s| s.len()) + anyedge_proto::seal::OVERHEAD,
                "sealing adds the envelope (and a super-packet's shim) only"
            );
            out.bytes = sealed;
            out.segment = 0;
            return Some(out);
        }
    }

    /// Packets this node could not send for want of a key.
    pub fn unsealable(&self) -> u64 {
        self.unsealable
    }
}
