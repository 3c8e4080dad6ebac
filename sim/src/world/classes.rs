//! Per traffic class, the facts its clients and the report read: which backend ports may
//! answer it, and whether it talks HTTP and TLS. A leaf, read from the topology alone.

use std::net::SocketAddr;

use anyedge_proto::Transport;
use anyedge_topology::ListenerProtocol;
use anyedge_topology::Topology;

/// A traffic class: the backend ports that may answer it, and how it talks.
pub(super) struct ClassInfo {
    /// The backend ports its listener binds (no other may answer it).
    pub(super) backends: Vec<SocketAddr>,
    /// It talks HTTP (its listener is layer 7).
    pub(super) http: bool,
    /// Over TLS (HTTPS).
    pub(super) tls: bool,
}

impl ClassInfo {
    pub(super) fn of(t: &Topology, class: &anyedge_topology::TrafficClass) -> ClassInfo {
        let listener = class_listener(t, class);
        ClassInfo {
            backends: class_backends(t, class),
            http: listener.is_some_and(|p| p.is_layer7()),
            tls: listener.is_some_and(|p| p.has_tls()),
        }
    }
}

/// The protocol of the TCP listener a traffic class reaches.
pub(super) fn class_listener(t: &Topology, class: &anyedge_topology::TrafficClass) -> Option<ListenerProtocol> {
    let tcp = class.transport() == Transport::Tcp;
    t.vips[class.vip]
        .listeners
        .iter()
        .find(|l| l.port == class.port && (l.protocol.transport() == Transport::Tcp) == tcp)
        .map(|l| l.protocol)
}

/// The backend ports a traffic class may be answered by: those its listener binds.
pub(super) fn class_backends(t: &Topology, class: &anyedge_topology::TrafficClass) -> Vec<SocketAddr> {
    let tcp = class.transport() == Transport::Tcp;
    let vip = &t.vips[class.vip];
    let listener =
        vip.listeners.iter().find(|l| l.port == class.port && (l.protocol.transport() == Transport::Tcp) == tcp);
    let group = listener.map(|l| &t.regions[vip.home].backend_groups[l.backend_group]);
    group.map(|g| g.backends.iter().map(|b| b.addr).collect()).unwrap_or_default()
}
