//! A CLB node's two tables: backend ports (health and binding are per IP:port, shared by
//! every listener that binds it) and listeners, each row owning its bindings.

use std::net::{IpAddr, SocketAddr};
use std::ops::{Index, IndexMut};

use anyedge_proto::{FlowKey, Transport};

use crate::config::{BackendConfig, HealthConfig, HealthProtocol, ListenerConfig};
use crate::quic_listener::QuicListener;
use crate::scheduler::{Maglev, Wrr};

/// A backend port's row in the `BackendTable` (also its index in the health checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub usize);

/// One backend IP:port.
#[derive(Debug)]
pub struct BackendPort {
    pub addr: SocketAddr,
    /// Unbound: nothing is forwarded to it, and nothing of its passes back.
    pub unbound: bool,
    /// How its health probes are made.
    pub probe: HealthProtocol,
}

/// Every backend port this node knows, across listeners.
#[derive(Debug, Default)]
pub struct BackendTable {
    rows: Vec<BackendPort>,
}

impl BackendTable {
    pub fn find(&self, addr: SocketAddr) -> Option<PortId> {
        self.rows.iter().position(|b| b.addr == addr).map(PortId)
    }

    /// The port of `addr`, added (bound, probed by `probe`) when it is new; true when new.
    pub fn insert(&mut self, addr: SocketAddr, probe: HealthProtocol) -> (PortId, bool) {
        match self.find(addr) {
            Some(id) => (id, false),
            None => {
                self.rows.push(BackendPort { addr, unbound: false, probe });
                debug_assert_eq!(self.find(addr), Some(PortId(self.rows.len() - 1)), "one row per backend port");
                (PortId(self.rows.len() - 1), true)
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &BackendPort> {
        self.rows.iter()
    }

    /// Ports known; every `PortId` handed out is below it.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl Index<PortId> for BackendTable {
    type Output = BackendPort;
    fn index(&self, id: PortId) -> &BackendPort {
        &self.rows[id.0]
    }
}

impl IndexMut<PortId> for BackendTable {
    fn index_mut(&mut self, id: PortId) -> &mut BackendPort {
        &mut self.rows[id.0]
    }
}

/// A listener's binding of one backend port.
#[derive(Debug)]
pub struct Binding {
    /// Weight, SNAT, health override, as configured (weights change at run time).
    pub backend: BackendConfig,
    pub port: PortId,
    /// The scheduler's name for it (its address).
    pub name: String,
    /// Active (open, not closing) flows, for WLC: each `acquire` is matched by one
    /// `release`.
    active: u32,
}

impl Binding {
    /// Active (open, not closing) flows on this binding.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// A flow (or proxied connection) was bound here.
    pub fn acquire(&mut self) {
        debug_assert!(self.active < u32::MAX, "fewer flows than u32::MAX");
        self.active = self.active.saturating_add(1);
    }

    /// A flow on this binding closed or left the table: it held one.
    pub fn release(&mut self) {
        debug_assert!(self.active > 0, "binding {} released a flow it never held", self.name);
        self.active = self.active.saturating_sub(1);
    }
}

/// One listener: what it serves and the backends it binds.
#[derive(Debug)]
pub struct ListenerState {
    /// Its configuration; `config.backends` is empty, the backends live in `bindings`.
    pub config: ListenerConfig,
    pub bindings: Vec<Binding>,
    pub wrr: Wrr,
    /// The lookup table of `maglev` (5-tuple) and `hash` (source IP) listeners.
    pub table: Option<Maglev>,
    /// Its QUIC endpoint, for QUIC listeners.
    pub quic: Option<QuicListener>,
    /// Deleted at run time: matches no packet, its flows end (indices stay stable).
    pub removed: bool,
}

impl ListenerState {
    /// A listener from its configuration, binding each backend to its row in `ports`;
    /// also the health checks of the ports it added (`default` unless a backend has its
    /// own), in the order they were added.
    pub fn new(
        mut config: ListenerConfig,
        ports: &mut BackendTable,
        default: &HealthConfig,
    ) -> (ListenerState, Vec<HealthConfig>) {
        let mut added = Vec::new();
        let bindings: Vec<Binding> = std::mem::take(&mut config.backends)
            .into_iter()
            .map(|backend| {
                let health = backend.health.clone().unwrap_or_else(|| default.clone());
                let (port, new) = ports.insert(backend.addr, health.protocol.clone());
                if new {
                    added.push(health);
                }
                Binding { name: backend.addr.to_string(), port, active: 0, backend }
            })
            .collect();
        debug_assert!(bindings.iter().all(|b| b.port.0 < ports.len()), "every binding names a row of the table");
        debug_assert!(added.len() <= bindings.len());
        let listener =
            ListenerState { wrr: Wrr::new(bindings.len()), bindings, config, table: None, quic: None, removed: false };
        (listener, added)
    }

    /// Whether it serves this VIP, transport and port now.
    pub fn serves(&self, vip: IpAddr, transport: Transport, port: u16) -> bool {
        !self.removed && self.config.vip == vip && self.config.port == port && self.config.transport == transport
    }
}

/// Every listener of this node, in configuration order (then added ones).
#[derive(Debug, Default)]
pub struct ListenerTable {
    rows: Vec<ListenerState>,
}

impl ListenerTable {
    /// The listener a client packet is for.
    pub fn find(&self, key: &FlowKey) -> Option<usize> {
        self.find_vip(key.dst, key.transport, key.dst_port)
    }

    /// The listener serving this VIP, transport and port.
    pub fn find_vip(&self, vip: IpAddr, transport: Transport, port: u16) -> Option<usize> {
        self.rows.iter().position(|l| l.serves(vip, transport, port))
    }

    pub fn push(&mut self, listener: ListenerState) {
        let c = &listener.config;
        debug_assert!(
            self.find_vip(c.vip, c.transport, c.port).is_none(),
            "one live listener per VIP, transport and port"
        );
        self.rows.push(listener);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ListenerState> {
        self.rows.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut ListenerState> {
        self.rows.iter_mut()
    }
}

impl Index<usize> for ListenerTable {
    type Output = ListenerState;
    fn index(&self, li: usize) -> &ListenerState {
        &self.rows[li]
    }
}

impl IndexMut<usize> for ListenerTable {
    fn index_mut(&mut self, li: usize) -> &mut ListenerState {
        &mut self.rows[li]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerKind;

    fn listener(port: u16, transport: Transport, backends: &[&str]) -> ListenerConfig {
        ListenerConfig {
            vip: "198.18.0.20".parse().unwrap(),
            transport,
            port,
            scheduler: SchedulerKind::Wrr,
            backends: backends.iter().map(|a| BackendConfig::direct(a.parse().unwrap(), 10)).collect(),
            persistence_ns: None,
            layer7: false,
            http: false,
            tls: None,
            quic: None,
            alt_svc: None,
        }
    }

    #[test]
    fn a_backend_port_bound_by_two_listeners_is_one_row_with_one_health_check() {
        let health = HealthConfig::tcp(1_000_000_000, 500_000_000, 2, 2);
        let mut ports = BackendTable::default();
        let (udp, added_udp) = ListenerState::new(
            listener(7000, Transport::Udp, &["198.19.20.1:7000", "198.19.20.2:7000"]),
            &mut ports,
            &health,
        );
        let (tcp, added_tcp) = ListenerState::new(
            listener(7000, Transport::Tcp, &["198.19.20.2:7000", "198.19.20.3:7000"]),
            &mut ports,
            &health,
        );
        assert_eq!((added_udp.len(), added_tcp.len()), (2, 1), "the shared port is checked once");
        assert_eq!(udp.bindings[1].port, tcp.bindings[0].port, "198.19.20.2:7000 is one row");
        assert_eq!(ports.iter().count(), 3);
        assert!(udp.config.backends.is_empty() && tcp.bindings.len() == 2, "bindings own the backends");
        ports[tcp.bindings[0].port].unbound = true;
        assert!(ports[udp.bindings[1].port].unbound, "unbinding a port unbinds it for every listener");
    }

    #[test]
    fn a_removed_listener_matches_no_packet() {
        let health = HealthConfig::tcp(1_000_000_000, 500_000_000, 2, 2);
        let mut ports = BackendTable::default();
        let mut table = ListenerTable::default();
        for transport in [Transport::Udp, Transport::Tcp] {
            table.push(ListenerState::new(listener(7000, transport, &["198.19.20.1:7000"]), &mut ports, &health).0);
        }
        let key = |transport| FlowKey {
            transport,
            src: "198.18.64.7".parse().unwrap(),
            src_port: 4000,
            dst: "198.18.0.20".parse().unwrap(),
            dst_port: 7000,
        };
        assert_eq!((table.find(&key(Transport::Udp)), table.find(&key(Transport::Tcp))), (Some(0), Some(1)));
        table[0].removed = true;
        assert_eq!(table.find(&key(Transport::Udp)), None);
        assert_eq!(table.find(&key(Transport::Tcp)), Some(1), "the TCP listener on the same port stays");
    }
}
