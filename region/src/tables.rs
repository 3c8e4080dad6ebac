//! A CLB node's two tables: backend ports (health and binding are per IP:port, shared by
//! every listener that binds it) and listeners, each row owning its bindings. A listener's
//! row is read through its accessors and changed only through [`ListenerTable`]'s methods,
//! which check the row's invariants after every change ([`ListenerState::check`]).

use std::net::{IpAddr, SocketAddr};
use std::ops::{Index, IndexMut};

use anyedge_proto::{FlowKey, Transport};

use crate::config::{BackendConfig, HealthConfig, HealthProtocol, ListenerConfig, WEIGHT_MAX};
use crate::identity::VipIdentity;
use crate::quic_listener::QuicListener;
use crate::scheduler::{Candidate, Maglev, Wrr};

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
    config: ListenerConfig,
    bindings: Vec<Binding>,
    wrr: Wrr,
    /// The lookup table of `maglev` (5-tuple) and `hash` (source IP) listeners.
    table: Option<Maglev>,
    /// Its QUIC endpoint, for QUIC listeners (exactly those whose configuration has a
    /// QUIC termination).
    quic: Option<QuicListener>,
    /// Deleted at run time: matches no packet, its flows end (indices stay stable).
    removed: bool,
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

    /// The same listener with its QUIC endpoint (`make` builds it from the configuration;
    /// only a listener that terminates QUIC gets one).
    pub fn with_quic(mut self, make: impl FnOnce(&ListenerConfig) -> Option<QuicListener>) -> ListenerState {
        self.quic = make(&self.config);
        self.check();
        self
    }

    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The lookup table of a `maglev` or `hash` listener, once built.
    pub fn table(&self) -> Option<&Maglev> {
        self.table.as_ref()
    }

    pub fn quic(&self) -> Option<&QuicListener> {
        self.quic.as_ref()
    }

    /// Deleted at run time.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// What every change leaves true of a row.
    fn check(&self) {
        debug_assert!(self.config.backends.is_empty(), "the bindings own the backends");
        debug_assert_eq!(self.quic.is_some(), self.config.quic.is_some(), "a QUIC endpoint exactly for QUIC");
        debug_assert!(
            self.table.as_ref().is_none_or(|t| t.names_only_below(self.bindings.len())),
            "a lookup table over the listener's bindings"
        );
        debug_assert!(self.bindings.iter().all(|b| b.backend.weight <= WEIGHT_MAX), "weights in range");
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
        listener.check();
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

    /// A flow (or proxied connection, or relayed stream) was bound to `binding` of
    /// listener `li`.
    pub fn acquire(&mut self, li: usize, binding: usize) {
        self.rows[li].bindings[binding].acquire();
    }

    /// A flow bound to `binding` of listener `li` ended: it held one.
    pub fn release(&mut self, li: usize, binding: usize) {
        self.rows[li].bindings[binding].release();
    }

    /// `backend`'s weight on every listener that binds it (at most [`WEIGHT_MAX`]).
    pub fn set_weight(&mut self, backend: SocketAddr, weight: u8) {
        for l in self.rows.iter_mut() {
            for b in l.bindings.iter_mut().filter(|b| b.backend.addr == backend) {
                b.backend.weight = weight.min(WEIGHT_MAX);
            }
            l.check();
        }
    }

    /// Deletes the listener on this VIP, transport and port: it matches nothing from now on.
    pub fn remove(&mut self, vip: IpAddr, transport: Transport, port: u16) {
        for l in self.rows.iter_mut().filter(|l| l.serves(vip, transport, port)) {
            l.removed = true;
        }
        debug_assert!(self.find_vip(vip, transport, port).is_none(), "a removed listener serves nothing");
    }

    /// Listener `li`'s next binding by smooth weighted round robin over `weights` (its
    /// bindings' as the scheduler sees them).
    pub fn pick_wrr(&mut self, li: usize, weights: &[u32]) -> Option<usize> {
        let ListenerState { bindings, wrr, .. } = &mut self.rows[li];
        wrr.pick(&candidates(bindings, weights))
    }

    /// Listener `li`'s lookup table made again over `weights`, `table_size` slots.
    pub fn rebuild_table(&mut self, li: usize, weights: &[u32], table_size: usize) {
        let l = &mut self.rows[li];
        l.table = Some(Maglev::build(&candidates(&l.bindings, weights), table_size));
        l.check();
    }

    /// Listener `li`'s QUIC endpoint, for what moves its connections.
    pub fn quic_mut(&mut self, li: usize) -> Option<&mut QuicListener> {
        self.rows[li].quic.as_mut()
    }

    /// Every QUIC endpoint.
    pub fn quics_mut(&mut self) -> impl Iterator<Item = &mut QuicListener> {
        self.rows.iter_mut().filter_map(|l| l.quic.as_mut())
    }

    /// A VIP's certificate rotated: listeners that terminate TLS or QUIC with `from`'s
    /// certificate terminate with `to`'s from now on (a QUIC listener keeps its ALPN
    /// offer, and its endpoint takes the new termination). How many listeners changed.
    pub fn replace_identity(&mut self, from: &VipIdentity, to: &VipIdentity) -> usize {
        let mut changed = 0;
        for l in self.rows.iter_mut() {
            let tls = [(Some(&from.tls), Some(&to.tls)), (from.tls_mutual.as_ref(), to.tls_mutual.as_ref())];
            let https = [(Some(&from.https), Some(&to.https)), (from.https_mutual.as_ref(), to.https_mutual.as_ref())];
            let quic = [(Some(&from.quic), Some(&to.quic)), (from.quic_mutual.as_ref(), to.quic_mutual.as_ref())];
            let tls = swap(&mut l.config.tls, tls) || swap(&mut l.config.tls, https);
            let quic = quic.into_iter().any(|(old, new)| {
                let (Some(old), Some(new), Some(now)) = (old, new, l.config.quic.as_mut()) else { return false };
                let same = now.same_identity(old);
                if same {
                    *now = new.with_alpn(now.alpn());
                }
                same
            });
            if let (true, Some(endpoint), Some(termination)) = (quic, l.quic.as_mut(), l.config.quic.as_ref()) {
                endpoint.set_termination(termination);
            }
            l.check();
            changed += usize::from(tls || quic);
        }
        changed
    }
}

/// The bindings as a scheduler sees them, each with its weight in `weights`.
fn candidates<'a>(bindings: &'a [Binding], weights: &[u32]) -> Vec<Candidate<'a>> {
    debug_assert_eq!(weights.len(), bindings.len(), "a weight per binding");
    bindings.iter().zip(weights).map(|(b, &w)| Candidate { name: &b.name, weight: w }).collect()
}

/// The old and the new termination of one kind (one-way, mutual), when there is one.
type Pair<'a, T> = (Option<&'a crate::Shared<T>>, Option<&'a crate::Shared<T>>);

/// `now` replaced by the new termination of the pair whose old one it is; whether it was.
fn swap<T>(now: &mut Option<crate::Shared<T>>, pairs: [Pair<'_, T>; 2]) -> bool {
    let Some(current) = now.as_ref() else { return false };
    for (old, new) in pairs {
        if let (Some(old), Some(new)) = (old, new)
            && std::sync::Arc::ptr_eq(&old.0, &current.0)
        {
            *now = Some(new.clone());
            return true;
        }
    }
    false
}

impl Index<usize> for ListenerTable {
    type Output = ListenerState;
    fn index(&self, li: usize) -> &ListenerState {
        &self.rows[li]
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
        table.remove("198.18.0.20".parse().unwrap(), Transport::Udp, 7000);
        assert_eq!(table.find(&key(Transport::Udp)), None);
        assert_eq!(table.find(&key(Transport::Tcp)), Some(1), "the TCP listener on the same port stays");
    }
}
