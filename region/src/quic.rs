//! QUIC with quinn-proto on the caller's clock: an endpoint and its connections driven
//! by packets in and `now` — the same sans-IO shape as the rest of the cores. The CLB's
//! QUIC listeners and the simulator's QUIC clients both use it. Server connection IDs
//! carry the issuing CLB node, so POPs can route a migrated client back to its node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_proto::inner::mix64;
use bytes::BytesMut;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, ConnectionId, ConnectionIdGenerator, DatagramEvent, Endpoint,
    EndpointConfig, Event, ServerConfig,
};

pub use anyedge_proto::quic::{CID_LEN, CID_MARKER, cid_node};

/// Issues `CID_MARKER, node, 6 bytes` connection IDs.
struct NodeCids {
    node: u8,
    state: u64,
}

impl ConnectionIdGenerator for NodeCids {
    fn generate_cid(&mut self) -> ConnectionId {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let r = mix64(self.state).to_be_bytes();
        let bytes = [CID_MARKER, self.node, r[0], r[1], r[2], r[3], r[4], r[5]];
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A datagram to send: destination, the source address to send from, the bytes.
pub type QuicTransmit = (SocketAddr, Option<IpAddr>, Vec<u8>);

/// An endpoint and its connections.
pub struct QuicHost {
    endpoint: Endpoint,
    conns: BTreeMap<ConnectionHandle, Connection>,
    epoch: Instant,
    server: Option<Arc<ServerConfig>>,
    /// Connection events for the application: (connection, event).
    events: Vec<(ConnectionHandle, Event)>,
    handshakes: u64,
}

impl std::fmt::Debug for QuicHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicHost").field("connections", &self.conns.len()).finish()
    }
}

fn seed32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix64(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9)).to_be_bytes());
    }
    out
}

impl QuicHost {
    /// A server endpoint whose connection IDs name `node`.
    pub fn server(config: Arc<ServerConfig>, node: u8, seed: u64) -> QuicHost {
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config.cid_generator(move || Box::new(NodeCids { node, state: seed }));
        QuicHost::new(endpoint_config, Some(config), seed)
    }

    /// A client endpoint.
    pub fn client(seed: u64) -> QuicHost {
        QuicHost::new(EndpointConfig::default(), None, seed)
    }

    fn new(config: EndpointConfig, server: Option<Arc<ServerConfig>>, seed: u64) -> QuicHost {
        // The epoch only anchors quinn's `Instant`s: behaviour depends on differences.
        let endpoint = Endpoint::new(Arc::new(config), server.clone(), false, Some(seed32(seed)));
        QuicHost { endpoint, conns: BTreeMap::new(), epoch: Instant::now(), server, events: Vec::new(), handshakes: 0 }
    }

    fn at(&self, now_ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(now_ns)
    }

    /// Opens a connection.
    pub fn connect(
        &mut self,
        now_ns: u64,
        config: ClientConfig,
        remote: SocketAddr,
        name: &str,
    ) -> Option<ConnectionHandle> {
        let (ch, conn) = self.endpoint.connect(self.at(now_ns), config, remote, name).ok()?;
        self.conns.insert(ch, conn);
        self.handshakes += 1;
        Some(ch)
    }

    /// Connections opened or accepted so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    pub fn conn(&mut self, ch: ConnectionHandle) -> Option<&mut Connection> {
        self.conns.get_mut(&ch)
    }

    /// The application events connections raised since the last call.
    pub fn take_events(&mut self) -> Vec<(ConnectionHandle, Event)> {
        std::mem::take(&mut self.events)
    }

    /// A datagram from `remote` to `local_ip`. Servers accept new connections.
    /// Returns the connection it belongs to, if any.
    pub fn receive(
        &mut self,
        now_ns: u64,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        payload: &[u8],
        out: &mut Vec<QuicTransmit>,
    ) -> Option<ConnectionHandle> {
        let now = self.at(now_ns);
        let mut buf = Vec::new();
        let event = self.endpoint.handle(now, remote, local_ip, None, BytesMut::from(payload), &mut buf)?;
        match event {
            DatagramEvent::ConnectionEvent(ch, event) => {
                if let Some(conn) = self.conns.get_mut(&ch) {
                    conn.handle_event(event);
                }
                Some(ch)
            }
            DatagramEvent::NewConnection(incoming) => {
                match self.endpoint.accept(incoming, now, &mut buf, self.server.clone()) {
                    Ok((ch, conn)) => {
                        self.conns.insert(ch, conn);
                        self.handshakes += 1;
                        Some(ch)
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
                        }
                        None
                    }
                }
            }
            DatagramEvent::Response(t) => {
                out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
                None
            }
        }
    }

    /// Runs timers, exchanges endpoint events, collects application events and datagrams.
    pub fn drive(&mut self, now_ns: u64, out: &mut Vec<QuicTransmit>) {
        let now = self.at(now_ns);
        let mut drained = Vec::new();
        loop {
            let mut endpoint_events = Vec::new();
            for (&ch, conn) in self.conns.iter_mut() {
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
                while let Some(ev) = conn.poll_endpoint_events() {
                    endpoint_events.push((ch, ev));
                }
                while let Some(ev) = conn.poll() {
                    self.events.push((ch, ev));
                }
                let mut buf = Vec::new();
                while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                    out.push((t.destination, t.src_ip, buf[..t.size].to_vec()));
                    buf.clear();
                }
                if conn.is_drained() {
                    drained.push(ch);
                }
            }
            if endpoint_events.is_empty() {
                break;
            }
            for (ch, ev) in endpoint_events {
                if let Some(back) = self.endpoint.handle_event(ch, ev)
                    && let Some(conn) = self.conns.get_mut(&ch)
                {
                    conn.handle_event(back);
                }
            }
        }
        for ch in drained {
            self.conns.remove(&ch);
        }
    }

    /// When a connection next needs `drive`, in the caller's nanoseconds.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        let t = self.conns.values_mut().filter_map(|c| c.poll_timeout()).min()?;
        Some(t.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_connection_ids_route_to_their_node() {
        let mut g = NodeCids { node: 3, state: 7 };
        let cid = g.generate_cid();
        let mut short = vec![0x40u8];
        short.extend_from_slice(&cid);
        short.extend_from_slice(&[0; 20]);
        assert_eq!(cid_node(&short, 4), Some(3));
        let mut long = vec![0xc0u8, 0, 0, 0, 1, CID_LEN as u8];
        long.extend_from_slice(&cid);
        assert_eq!(cid_node(&long, 4), Some(3));
        let random_initial = [0xc0u8, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(cid_node(&random_initial, 4), None);
        assert_eq!(cid_node(&[], 4), None);
    }
}
