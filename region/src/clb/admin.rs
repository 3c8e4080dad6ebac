//! What the control plane changes in a running node (committed route-table changes and
//! reloads): weights, bindings, listeners added and deleted, a VIP's certificate rotated.
//! Each goes through the table that owns the state ([`crate::tables::ListenerTable`],
//! [`crate::tables::BackendTable`]) and then remakes what depends on it.

use std::net::{IpAddr, SocketAddr};

use anyedge_proto::Transport;

use super::Clb;
use crate::config::ListenerConfig;
use crate::tables::{ListenerState, PortId};

impl Clb {
    /// Changes a backend's weight on every listener that binds it. Weight 0 drains: no
    /// new flows, existing ones continue.
    pub fn set_weight(&mut self, backend: SocketAddr, weight: u8) {
        self.listeners.set_weight(backend, weight);
        self.rebuild_tables();
    }

    /// Unbinds a backend port: from now on nothing is forwarded to it or from it, and its
    /// flows move to other backends on their next packet.
    pub fn unbind(&mut self, backend: SocketAddr) {
        if let Some(p) = self.backends.find(backend) {
            self.backends[p].unbound = true;
            self.rebuild_tables();
        }
    }

    /// Binds an unbound backend port again.
    pub fn bind(&mut self, backend: SocketAddr) {
        if let Some(p) = self.backends.find(backend) {
            self.backends[p].unbound = false;
            self.rebuild_tables();
        }
    }

    /// Adds a listener at run time (a committed route-table change). Its backends get
    /// health checks of `health` unless already checked for another listener. A listener
    /// already serving the same VIP, port and transport is left as it is.
    pub fn add_listener(&mut self, config: ListenerConfig, health: &crate::HealthConfig) {
        if self.has_listener(config.vip, config.transport, config.port) {
            return;
        }
        let (listener, added) = ListenerState::new(config, &mut self.backends, health);
        let first_new = self.backends.len() - added.len();
        for (i, h) in added.into_iter().enumerate() {
            self.health.add_port(PortId(first_new + i), h, self.now_ns);
        }
        let prefix = self.l7.proxy().source_prefix_v4();
        self.listeners.push(listener.with_quic(|c| self.node.quic_endpoint(c, prefix)));
        self.rebuild_tables();
    }

    /// A VIP's certificate rotated: listeners that terminate TLS or QUIC with `from`'s
    /// certificate terminate with `to`'s from now on. New connections handshake with the
    /// new one; connections already open keep their session and their backend. Returns
    /// how many listeners changed.
    pub fn replace_identity(
        &mut self,
        from: &crate::identity::VipIdentity,
        to: &crate::identity::VipIdentity,
    ) -> usize {
        self.listeners.replace_identity(from, to)
    }

    /// Deletes the listener on this VIP, port and transport: new packets to it match
    /// nothing, and its existing flows end.
    pub fn remove_listener(&mut self, vip: IpAddr, transport: Transport, port: u16) {
        self.listeners.remove(vip, transport, port);
    }

    /// Whether a listener serves this VIP, port and transport now.
    pub fn has_listener(&self, vip: IpAddr, transport: Transport, port: u16) -> bool {
        self.listeners.find_vip(vip, transport, port).is_some()
    }
}
