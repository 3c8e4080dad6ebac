//! An egress node: how a region's CLB nodes reach backends on the public internet by
//! their public address. A NAT gateway translates the source to its public address
//! (SNAT, keeping the source port when it is free); a router (a route-table entry whose
//! next hop is a router) forwards untranslated. Either way it remembers, per flow, which
//! CLB node sent it, so replies go back to that node; from the internet it takes only
//! replies to flows it carries (what a stateful NAT does), and only from the backends
//! behind it. Toward the CLB nodes it is the backend host of those backends: the backend
//! leg is sealed both ways. Sans-IO: packets and time in, packets out.

use std::collections::HashMap;
use std::net::IpAddr;

use anyedge_ccn::auth::{AuthConfig, AuthError, Keyring, NodeId};
use anyedge_ccn::{Dest, Transmit};
use anyedge_proto::seal::Kind;
use anyedge_proto::{FlowKey, Transport, inner, offload};

/// Flows one gateway carries at once; the least recently used gives way past this.
pub const GATEWAY_FLOWS_MAX: usize = 262_144;
/// Ports a NAT gateway translates to.
const NAT_PORTS: std::ops::RangeInclusive<u16> = 1024..=65_535;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This node on the backbone.
    pub me: NodeId,
    /// `Some(public)`: a NAT gateway translating to `public`; `None`: a router.
    pub public: Option<IpAddr>,
    /// The internet backends behind it: the only destinations it carries, the only
    /// sources it takes replies from.
    pub backends: Vec<IpAddr>,
    pub auth: AuthConfig,
    pub capacity: usize,
}

/// Why the gateway refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayDrop {
    /// Failed authentication on the backend leg.
    Auth(AuthError),
    /// Sealed by a node that is not a CLB node.
    NotClb,
    /// Not an IP packet it can read.
    Malformed,
    /// To or from an address that is not a backend behind this gateway.
    NotCarried,
    /// From the internet, and not a reply to a flow it carries.
    Unsolicited,
    /// No free public port for a new flow.
    NoPort,
}

impl GatewayDrop {
    pub fn name(&self) -> &'static str {
        match self {
            GatewayDrop::Auth(e) => e.name(),
            GatewayDrop::NotClb => "not_clb",
            GatewayDrop::Malformed => "malformed",
            GatewayDrop::NotCarried => "not_carried",
            GatewayDrop::Unsolicited => "unsolicited",
            GatewayDrop::NoPort => "no_port",
        }
    }
}

/// (transport, address, port, address, port): a flow seen from one side.
type Tuple = (Transport, IpAddr, u16, IpAddr, u16);

#[derive(Debug, Clone, Copy)]
struct Mapping {
    /// The source the backend sees (the public address and port, or the original).
    seen: (IpAddr, u16),
    clb: NodeId,
}

pub struct Gateway {
    config: GatewayConfig,
    keys: Keyring,
    /// The CLB's view (source → backend) → the mapping; least recently used first out.
    flows: anyedge_ccn::Lru<Tuple, Mapping>,
    /// Flows it carries at most (allocated as they arrive).
    capacity: usize,
    /// The internet's view (backend → seen source) → the CLB's view.
    replies: HashMap<Tuple, Tuple>,
    /// Where the next port search starts when a source port is taken.
    cursor: u16,
    outputs: std::collections::VecDeque<Transmit>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("me", &self.config.me).field("flows", &self.flows.len()).finish()
    }
}

impl Gateway {
    pub fn new(config: GatewayConfig, now_ns: u64) -> Gateway {
        let keys = config.auth.keyring(config.me, now_ns);
        let capacity = config.capacity.clamp(1, GATEWAY_FLOWS_MAX);
        Gateway {
            config,
            keys,
            flows: anyedge_ccn::Lru::new(),
            capacity,
            replies: HashMap::new(),
            cursor: *NAT_PORTS.start(),
            outputs: Default::default(),
        }
    }

    /// Flows it carries now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// A sealed packet from a CLB node, for a backend behind the gateway.
    pub fn handle_from_clb(&mut self, _now_ns: u64, sealed: &[u8]) -> Result<(), GatewayDrop> {
        let (clb, packet) = self.keys.open(Kind::Backend, sealed).map_err(GatewayDrop::Auth)?;
        if !matches!(clb, NodeId::Clb { .. }) {
            return Err(GatewayDrop::NotClb);
        }
        // A super-packet leaves for the internet as the segments it stands for.
        let (segment, packet) = offload::unshim(packet).map_err(|_| GatewayDrop::Malformed)?;
        if segment > 0 {
            for part in offload::cut(packet, usize::from(segment)).map_err(|_| GatewayDrop::Malformed)? {
                self.carry(clb, &part)?;
            }
            return Ok(());
        }
        self.carry(clb, packet)
    }

    /// One packet from CLB node `clb` out to its backend on the internet.
    fn carry(&mut self, clb: NodeId, packet: &[u8]) -> Result<(), GatewayDrop> {
        let info = inner::parse(packet).map_err(|_| GatewayDrop::Malformed)?;
        let k = info.key;
        if !self.config.backends.contains(&k.dst) {
            return Err(GatewayDrop::NotCarried);
        }
        let tuple = (k.transport, k.src, k.src_port, k.dst, k.dst_port);
        let mapping = match self.flows.get_mut(&tuple) {
            Some(m) => {
                // The flow may move to another CLB node (one died): replies follow it.
                m.clb = clb;
                *m
            }
            None => {
                let seen = match self.config.public {
                    Some(public) => (public, self.free_port(k.transport, public, (k.dst, k.dst_port), k.src_port)?),
                    None => (k.src, k.src_port),
                };
                let m = Mapping { seen, clb };
                if self.flows.len() >= self.capacity
                    && let Some((old, gone)) = self.flows.pop_lru()
                {
                    let (t, _, _, dst, dst_port) = old;
                    self.replies.remove(&(t, dst, dst_port, gone.seen.0, gone.seen.1));
                }
                self.flows.put(tuple, m);
                debug_assert!(self.flows.len() <= self.capacity, "the gateway's flows stay within its bound");
                let before = self.replies.insert((k.transport, k.dst, k.dst_port, seen.0, seen.1), tuple);
                debug_assert!(before.is_none(), "a public port serves one flow toward a remote");
                debug_assert!(self.replies.len() <= self.flows.len(), "a way back per flow carried");
                m
            }
        };
        let bytes = match self.config.public {
            Some(_) => {
                inner::translate(packet, mapping.seen, (k.dst, k.dst_port)).map_err(|_| GatewayDrop::Malformed)?
            }
            None => packet.to_vec(),
        };
        let seen = FlowKey { src: mapping.seen.0, src_port: mapping.seen.1, ..k };
        let backend = std::net::SocketAddr::new(k.dst, k.dst_port);
        self.outputs.push_back(Transmit::new(Dest::Backend(backend), seen.flow_hash(), bytes));
        Ok(())
    }

    /// A packet from the internet: a backend's reply to a flow the gateway carries.
    pub fn handle_from_internet(&mut self, _now_ns: u64, packet: &[u8]) -> Result<(), GatewayDrop> {
        let info = inner::parse(packet).map_err(|_| GatewayDrop::Malformed)?;
        let k = info.key;
        if !self.config.backends.contains(&k.src) {
            return Err(GatewayDrop::NotCarried);
        }
        let reply = (k.transport, k.src, k.src_port, k.dst, k.dst_port);
        let tuple = *self.replies.get(&reply).ok_or(GatewayDrop::Unsolicited)?;
        let mapping = *self.flows.get(&tuple).ok_or(GatewayDrop::Unsolicited)?;
        let (_, src, src_port, _, _) = tuple;
        debug_assert_eq!((tuple.3, tuple.4), (k.src, k.src_port), "a reply comes from the flow's remote");
        let bytes = match self.config.public {
            Some(_) => {
                inner::translate(packet, (k.src, k.src_port), (src, src_port)).map_err(|_| GatewayDrop::Malformed)?
            }
            None => packet.to_vec(),
        };
        let sealed = self.keys.seal(mapping.clb, Kind::Backend, &bytes).ok_or(GatewayDrop::NotClb)?;
        let back = FlowKey { dst: src, dst_port: src_port, ..k };
        self.outputs.push_back(Transmit::new(Dest::Node(mapping.clb), back.flow_hash(), sealed));
        Ok(())
    }

    /// The next packet to send: an IP packet for a backend on the internet
    /// (`Dest::Backend`), or a reply sealed for the CLB node its flow came from
    /// (`Dest::Node`).
    pub fn poll_output(&mut self) -> Option<Transmit> {
        self.outputs.pop_front()
    }

    /// A public port for a new flow toward `remote`: its own source port when no other
    /// flow to that remote uses it (port-preserving, as Linux's masquerade), else the
    /// next free one.
    fn free_port(
        &mut self,
        t: Transport,
        public: IpAddr,
        remote: (IpAddr, u16),
        want: u16,
    ) -> Result<u16, GatewayDrop> {
        let taken = |p: u16| self.replies.contains_key(&(t, remote.0, remote.1, public, p));
        if NAT_PORTS.contains(&want) && !taken(want) {
            return Ok(want);
        }
        let span = u32::from(NAT_PORTS.end() - NAT_PORTS.start()) + 1;
        for _ in 0..span {
            let p = self.cursor;
            debug_assert!(NAT_PORTS.contains(&p), "the cursor stays in the NAT range");
            self.cursor = if p == *NAT_PORTS.end() { *NAT_PORTS.start() } else { p + 1 };
            if !taken(p) {
                return Ok(p);
            }
        }
        Err(GatewayDrop::NoPort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_ccn::auth::BackboneSecret;

    const GW: NodeId = NodeId::Backend { region: 0, host: 0xF00 };
    const CLB0: NodeId = NodeId::Clb { region: 0, node: 0 };
    const CLB1: NodeId = NodeId::Clb { region: 0, node: 1 };
    const POP: NodeId = NodeId::Pop(0);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn keyring(me: NodeId) -> Keyring {
        let secret = BackboneSecret::from_seed(7);
        let all = [GW, CLB0, CLB1, POP];
        let peers: Vec<NodeId> = all.into_iter().filter(|&p| p != me).collect();
        AuthConfig { keys: secret.keys_for(me, &peers), ..AuthConfig::default() }.keyring(me, 0)
    }

    fn gateway(public: Option<&str>) -> Gateway {
        let secret = BackboneSecret::from_seed(7);
        let auth = AuthConfig { keys: secret.keys_for(GW, &[CLB0, CLB1, POP]), ..AuthConfig::default() };
        let config =
            GatewayConfig { me: GW, public: public.map(ip), backends: vec![ip("198.51.100.7")], auth, capacity: 1024 };
        Gateway::new(config, 0)
    }

    fn udp(src: (&str, u16), dst: (&str, u16)) -> Vec<u8> {
        inner::build_udp((ip(src.0), src.1), (ip(dst.0), dst.1), b"hello").unwrap()
    }

    fn to_internet(g: &mut Gateway) -> Vec<u8> {
        match g.poll_output() {
            Some(Transmit { dest: Dest::Backend(to), flow_hash, bytes, .. }) => {
                let k = inner::parse(&bytes).unwrap().key;
                assert_eq!((to, flow_hash), (std::net::SocketAddr::new(k.dst, k.dst_port), k.flow_hash()));
                bytes
            }
            other => panic!("expected a packet for the internet, got {other:?}"),
        }
    }

    #[test]
    fn a_nat_gateway_shows_its_public_address_and_sends_replies_to_the_clb_node_that_sent() {
        let mut g = gateway(Some("203.0.113.5"));
        let mut clb1 = keyring(CLB1);
        let out = udp(("198.18.64.7", 4000), ("198.51.100.7", 8080));
        g.handle_from_clb(0, &clb1.seal(GW, Kind::Backend, &out).unwrap()).unwrap();
        let sent = to_internet(&mut g);
        let k = inner::parse(&sent).unwrap().key;
        // The backend sees the public address, with the client's port kept.
        assert_eq!((k.src, k.src_port, k.dst, k.dst_port), (ip("203.0.113.5"), 4000, ip("198.51.100.7"), 8080));
        let reply = udp(("198.51.100.7", 8080), ("203.0.113.5", 4000));
        g.handle_from_internet(0, &reply).unwrap();
        let Some(Transmit { dest: Dest::Node(node), bytes, .. }) = g.poll_output() else {
            panic!("a reply for a CLB node")
        };
        assert_eq!(node, CLB1, "back to the node that sent the flow");
        let (from, inside) = clb1.open(Kind::Backend, &bytes).unwrap();
        assert_eq!(from, GW);
        let k = inner::parse(inside).unwrap().key;
        assert_eq!((k.src, k.dst, k.dst_port), (ip("198.51.100.7"), ip("198.18.64.7"), 4000), "translated back");
        assert_eq!(inner::transport_payload(inside), b"hello");
    }

    #[test]
    fn two_sources_with_the_same_port_get_different_public_ports() {
        let mut g = gateway(Some("203.0.113.5"));
        let mut clb = keyring(CLB0);
        let mut ports = Vec::new();
        for src in ["198.18.64.7", "198.18.64.8"] {
            let out = udp((src, 4000), ("198.51.100.7", 8080));
            g.handle_from_clb(0, &clb.seal(GW, Kind::Backend, &out).unwrap()).unwrap();
            ports.push(inner::parse(&to_internet(&mut g)).unwrap().key.src_port);
        }
        assert_eq!(ports[0], 4000);
        assert_ne!(ports[0], ports[1], "{ports:?}");
        // Each reply finds its own source.
        for (port, src) in ports.iter().zip(["198.18.64.7", "198.18.64.8"]) {
            g.handle_from_internet(0, &udp(("198.51.100.7", 8080), ("203.0.113.5", *port))).unwrap();
            let Some(Transmit { dest: Dest::Node(_), bytes, .. }) = g.poll_output() else { panic!() };
            let (_, inside) = clb.open(Kind::Backend, &bytes).unwrap();
            assert_eq!(inner::parse(inside).unwrap().key.dst, ip(src));
        }
    }

    #[test]
    fn a_router_forwards_untranslated_and_remembers_the_way_back() {
        let mut g = gateway(None);
        let mut clb = keyring(CLB0);
        let out = udp(("198.18.64.7", 4000), ("198.51.100.7", 8080));
        g.handle_from_clb(0, &clb.seal(GW, Kind::Backend, &out).unwrap()).unwrap();
        assert_eq!(to_internet(&mut g), out, "the backend sees the client's own address");
        g.handle_from_internet(0, &udp(("198.51.100.7", 8080), ("198.18.64.7", 4000))).unwrap();
        assert!(matches!(g.poll_output(), Some(Transmit { dest: Dest::Node(CLB0), .. })));
    }

    #[test]
    fn the_internet_gets_nothing_in_unasked_and_clbs_reach_only_the_backends_behind_it() {
        let mut g = gateway(Some("203.0.113.5"));
        let reply = udp(("198.51.100.7", 8080), ("203.0.113.5", 4000));
        assert_eq!(g.handle_from_internet(0, &reply), Err(GatewayDrop::Unsolicited));
        let stranger = udp(("192.0.2.1", 8080), ("203.0.113.5", 4000));
        assert_eq!(g.handle_from_internet(0, &stranger), Err(GatewayDrop::NotCarried));
        assert_eq!(g.handle_from_internet(0, b"\x45garbage"), Err(GatewayDrop::Malformed));
        let mut clb = keyring(CLB0);
        let elsewhere = udp(("198.18.64.7", 4000), ("192.0.2.1", 80));
        let sealed = clb.seal(GW, Kind::Backend, &elsewhere).unwrap();
        assert_eq!(g.handle_from_clb(0, &sealed), Err(GatewayDrop::NotCarried), "not an open relay");
        let mut pop = keyring(POP);
        let sealed = pop.seal(GW, Kind::Backend, &udp(("198.18.64.7", 4000), ("198.51.100.7", 8080))).unwrap();
        assert_eq!(g.handle_from_clb(0, &sealed), Err(GatewayDrop::NotClb));
        let forged = udp(("198.18.64.7", 4000), ("198.51.100.7", 8080));
        assert!(matches!(g.handle_from_clb(0, &forged), Err(GatewayDrop::Auth(_))));
        assert_eq!(g.poll_output(), None, "nothing left the gateway");
        assert_eq!(g.flows(), 0);
    }

    #[test]
    fn a_full_table_forgets_its_oldest_flow_and_its_way_back() {
        let mut g = gateway(Some("203.0.113.5"));
        g.capacity = 2;
        let mut clb = keyring(CLB0);
        for port in [4000, 4001, 4002] {
            let out = udp(("198.18.64.7", port), ("198.51.100.7", 8080));
            g.handle_from_clb(0, &clb.seal(GW, Kind::Backend, &out).unwrap()).unwrap();
            to_internet(&mut g);
        }
        assert_eq!((g.flows(), g.replies.len()), (2, 2));
        let first = udp(("198.51.100.7", 8080), ("203.0.113.5", 4000));
        assert_eq!(g.handle_from_internet(0, &first), Err(GatewayDrop::Unsolicited));
        let last = udp(("198.51.100.7", 8080), ("203.0.113.5", 4002));
        assert_eq!(g.handle_from_internet(0, &last), Ok(()));
    }
}
