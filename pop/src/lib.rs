//! The POP edge node as a sans-IO core: takes client packets addressed to an anycast VIP,
//! looks up the VIP's home region, keeps each flow on one CLB node of that region (a
//! bounded flow table), and encapsulates toward it; replies coming back over the
//! backbone are decapsulated and handed to the client. The POP never picks a backend.
//! Everything it sends over the backbone is sealed for its CLB node, and it takes from
//! the backbone only what a CLB node it holds keys for sealed for it (`anyedge_ccn::auth`).

use std::collections::VecDeque;
use std::net::IpAddr;

use anyedge_ccn::Lru;
use anyedge_ccn::auth::{AuthConfig, AuthError, Keyring, NodeId};
use anyedge_ccn::{Dest, Transmit};
use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::inner::mix64;
use anyedge_proto::seal::Kind;
use anyedge_proto::{FlowKey, Transport, inner, offload};

pub mod announce;
pub use announce::{AnnounceChange, Announcements};

/// Where a VIP's traffic goes: its home region and the CLB nodes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub vip: IpAddr,
    pub region: u16,
    /// Number of CLB nodes in the region; flows spread over them by flow hash.
    pub clb_nodes: u16,
    /// UDP ports of QUIC listeners: their packets go to the CLB node their connection ID
    /// names, so a client that changed address still reaches its connection.
    pub quic_ports: Vec<u16>,
    /// The VIP's listeners: only replies from one of them leave toward clients.
    pub ports: Vec<(Transport, u16)>,
}

/// The VIP addresses a POP publishes and where each goes, with an index by address: a
/// packet finds its route in a binary search (a 500-region world's POPs publish 1,000
/// addresses, and walking them was a step of every packet). Shared by the POPs that
/// publish the same VIPs (`Arc`: one table, not one a POP); a POP whose listeners
/// change copies it first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    list: Vec<Route>,
    /// (VIP address, its route's index in `list`), sorted by address.
    by_vip: Vec<(IpAddr, u32)>,
}

impl Routes {
    pub fn new(list: Vec<Route>) -> Routes {
        let mut by_vip: Vec<(IpAddr, u32)> = list.iter().enumerate().map(|(i, r)| (r.vip, i as u32)).collect();
        // The first route of an address wins, as a walk of the list found it.
        by_vip.sort_by_key(|&(vip, i)| (vip, i));
        by_vip.dedup_by_key(|&mut (vip, _)| vip);
        Routes { list, by_vip }
    }

    fn index(&self, vip: IpAddr) -> Option<usize> {
        let at = self.by_vip.binary_search_by(|&(v, _)| v.cmp(&vip)).ok()?;
        Some(self.by_vip[at].1 as usize)
    }

    /// The route of `vip`, if this table has one.
    pub fn get(&self, vip: IpAddr) -> Option<&Route> {
        self.index(vip).map(|i| &self.list[i])
    }

    fn get_mut(&mut self, vip: IpAddr) -> Option<&mut Route> {
        self.index(vip).map(|i| &mut self.list[i])
    }

    /// Every route, in the order they were given.
    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopConfig {
    pub pop_id: u16,
    pub routes: std::sync::Arc<Routes>,
    pub flow_table_capacity: usize,
    /// Keys for the backbone: one pair per CLB node this POP talks to.
    pub auth: AuthConfig,
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopDrop {
    Packet(anyedge_proto::Error),
    /// The destination is no VIP this POP publishes.
    NoRoute,
    /// A backbone packet that is not a reply (it travels toward a region).
    WrongDirection,
    /// A reply addressed to another POP.
    NotOurs,
    /// Not sealed by a CLB node for this POP, or replayed.
    Auth(AuthError),
    /// A reply whose source is none of this POP's VIPs' listeners.
    NotVip,
}

impl PopDrop {
    /// A stable name for counters and reports.
    pub fn name(&self) -> &'static str {
        match self {
            PopDrop::Packet(e) => e.name(),
            PopDrop::NoRoute => "no_route",
            PopDrop::WrongDirection => "wrong_direction",
            PopDrop::NotOurs => "not_ours",
            PopDrop::Auth(e) => e.name(),
            PopDrop::NotVip => "not_vip",
        }
    }
}

impl From<anyedge_proto::Error> for PopDrop {
    fn from(e: anyedge_proto::Error) -> PopDrop {
        PopDrop::Packet(e)
    }
}

#[derive(Debug)]
pub struct Pop {
    config: PopConfig,
    /// flow → CLB node, so a flow stays on one node.
    flows: Lru<FlowKey, u16>,
    flows_seen: u64,
    outputs: VecDeque<Transmit>,
    /// CLB nodes backbone probing reports dead, as (region, node).
    clbs_down: Vec<(u16, u16)>,
    keys: Keyring,
    /// Each region's cipher for the node byte of its QUIC connection IDs.
    /// By region (sorted, the first key of a region given twice), shared with the POPs
    /// given the same keys ([`cid_ciphers`]).
    cid_ciphers: std::sync::Arc<[(u16, anyedge_ccn::CidCipher)]>,
    /// Outputs dropped for want of a key for their CLB node (a configuration error).
    unsealable: u64,
    /// What this POP announces to the internet, per VIP address.
    announcements: Announcements,
    /// Clients' datagrams larger than their path's MTU, put back together (bounded).
    fragments: anyedge_proto::reassembly::Reassembler,
    /// The identification of the last IPv6 reply this POP fragmented.
    ipv6_fragment_id: u32,
    /// The regions this POP forwarded to since its driver last asked: its prober probes
    /// their CLB nodes while it does.
    demand: anyedge_ccn::Demand,
}

/// The connection-ID ciphers of these keys, by region: the ones a POP of this thread
/// made from the same keys if it still lives (every POP holds every region's keys: 2,000
/// POPs × 500 regions were a million AES key schedules, a quarter of a large world's
/// memory), else new ones.
fn cid_ciphers(keys: &[(u16, anyedge_ccn::auth::KeyBytes)]) -> std::sync::Arc<[(u16, anyedge_ccn::CidCipher)]> {
    type Memo = anyedge_ccn::WeakMemo<Vec<(u16, anyedge_ccn::auth::KeyBytes)>, [(u16, anyedge_ccn::CidCipher)]>;
    thread_local! {
        static MADE: std::cell::RefCell<Memo> = std::cell::RefCell::new(Memo::default());
    }
    let make = || {
        let mut by_region: Vec<(u16, &anyedge_ccn::auth::KeyBytes)> = keys.iter().map(|(r, k)| (*r, k)).collect();
        by_region.sort_by_key(|&(r, _)| r);
        by_region.dedup_by_key(|&mut (r, _)| r);
        by_region.into_iter().map(|(r, k)| (r, anyedge_ccn::CidCipher::new(k))).collect::<std::sync::Arc<[_]>>()
    };
    MADE.with(|memo| memo.borrow_mut().get_or_make(keys, make))
}

impl Pop {
    /// A POP starting at `now_ns` (its backbone sequence numbers start there).
    pub fn new(config: PopConfig, now_ns: u64) -> Pop {
        let keys = config.auth.keyring(NodeId::Pop(config.pop_id), now_ns);
        let cid_ciphers = cid_ciphers(&config.auth.cid_keys);
        let announcements = Announcements::new(config.routes.iter().map(|r| (r.vip, r.region, r.clb_nodes)));
        debug_assert!(
            config.routes.iter().all(|r| r.quic_ports.iter().all(|&p| r.ports.contains(&(Transport::Udp, p)))),
            "a QUIC port is a UDP listener's"
        );
        Pop {
            config,
            flows: Lru::new(),
            flows_seen: 0,
            outputs: VecDeque::new(),
            clbs_down: Vec::new(),
            keys,
            cid_ciphers,
            unsealable: 0,
            fragments: Default::default(),
            ipv6_fragment_id: 0,
            announcements,
            demand: Default::default(),
        }
    }

    /// One health sample of every VIP address this POP publishes, once per probe round:
    /// healthy while its probes find a CLB node of the home region up. `held` (a drain
    /// or stop) withdraws every VIP at once. The announcements that changed, for the
    /// driver to carry to routing (BIRD in the lab, the catchments in the simulator).
    pub fn sample_announcements(&mut self, held: bool) -> Vec<AnnounceChange> {
        self.announcements.sample(&self.clbs_down, held)
    }

    /// Whether this POP announces `vip` now.
    pub fn announces(&self, vip: IpAddr) -> bool {
        self.announcements.announces(vip)
    }

    /// A restarted POP announces every VIP again, until its samples say otherwise.
    pub fn restart_announcements(&mut self) {
        self.announcements.restart();
    }

    /// This POP's backbone keys: drivers seal and open its probes with them.
    pub fn keyring(&mut self) -> &mut Keyring {
        &mut self.keys
    }

    /// Backbone packets this POP could not send for want of a key.
    pub fn unsealable(&self) -> u64 {
        self.unsealable
    }

    /// Clients' fragmented datagrams reassembled and dropped unfinished so far.
    pub fn reassembly(&self) -> anyedge_proto::reassembly::ReassemblyStats {
        self.fragments.stats
    }

    pub fn id(&self) -> u16 {
        self.config.pop_id
    }

    /// Distinct flows that entered through this POP.
    pub fn flows_seen(&self) -> u64 {
        self.flows_seen
    }

    /// The next packet to send: a client's, encapsulated and sealed for a CLB node
    /// (`Dest::Node`), or a reply decapsulated for its client (`Dest::Client`).
    pub fn poll_output(&mut self) -> Option<Transmit> {
        self.outputs.pop_front()
    }

    /// Backbone probing says whether a CLB node is reachable. Flows pinned to a dead
    /// node move to a live one on their next packet; other flows stay where they are.
    pub fn set_clb_up(&mut self, region: u16, node: u16, up: bool) {
        self.clbs_down.retain(|&d| d != (region, node));
        if !up {
            self.clbs_down.push((region, node));
        }
        debug_assert_eq!(self.clb_up(region, node), up);
    }

    /// Whether this POP takes the CLB node to be up (its probes have not found it dead).
    pub fn clb_up(&self, region: u16, node: u16) -> bool {
        !self.clbs_down.contains(&(region, node))
    }

    /// The regions this POP forwarded clients' packets to since the last call: its
    /// driver's prober probes every CLB node of each (all of them, so a region's death is
    /// found at once, not node after node as flows move).
    pub fn take_demand(&mut self) -> Vec<u16> {
        self.demand.take()
    }

    /// The CLB node this POP sends a flow to now, if it has seen the flow.
    pub fn node_of(&self, key: &FlowKey) -> Option<u16> {
        self.flows.peek(key).copied()
    }

    fn pick_node(&self, region: u16, nodes: u16, flow_hash: u32) -> u16 {
        let node = rendezvous_node(flow_hash, nodes, |n| !self.clbs_down.contains(&(region, n)));
        debug_assert!(node < nodes.max(1), "a node of the region");
        node
    }

    fn route(&self, vip: IpAddr) -> Option<&Route> {
        self.config.routes.get(vip)
    }

    /// A listener added to (`present`) or removed from a VIP this POP publishes, as the
    /// route table changes: replies from it may leave (or no longer).
    pub fn set_listener(&mut self, vip: IpAddr, transport: Transport, port: u16, quic: bool, present: bool) {
        if self.config.routes.get(vip).is_none() {
            return;
        }
        let Some(route) = std::sync::Arc::make_mut(&mut self.config.routes).get_mut(vip) else { return };
        route.ports.retain(|&p| p != (transport, port));
        route.quic_ports.retain(|&p| !(quic && p == port));
        if present {
            route.ports.push((transport, port));
            if quic {
                route.quic_ports.push(port);
            }
        }
        debug_assert_eq!(route.ports.iter().filter(|&&p| p == (transport, port)).count(), usize::from(present));
    }

    /// A client's packet for a VIP. A fragment is held until its datagram is whole (or
    /// dropped within the reassembler's bounds); the whole datagram goes on as one packet
    /// (the backbone's kernel fragments the envelope, and the backend's kernel takes it
    /// whole), so every fragment follows the flow its ports name.
    pub fn handle_from_client(&mut self, now_ns: u64, packet: &[u8]) -> Result<(), PopDrop> {
        if anyedge_proto::reassembly::is_fragment(packet) {
            return match self.fragments.push(now_ns, packet) {
                Some(whole) => self.forward_client_packet(&whole, 0),
                None => Ok(()),
            };
        }
        self.forward_client_packet(packet, 0)
    }

    /// A client's TCP super-packet (`anyedge_proto::offload`: a TUN device with offloads
    /// reads many segments behind one header) of `segment` payload bytes per segment: one
    /// flow lookup and one envelope (two or more when it is longer than a datagram
    /// carries), whose header says where to cut it again. Segment 0: an ordinary packet.
    pub fn handle_super_from_client(&mut self, now_ns: u64, packet: &[u8], segment: u16) -> Result<(), PopDrop> {
        if segment == 0 {
            return self.handle_from_client(now_ns, packet);
        }
        if packet.len() <= offload::SUPER_PACKET_MAX {
            return self.forward_client_packet(packet, segment);
        }
        for part in offload::fit(packet, segment, offload::SUPER_PACKET_MAX)? {
            self.forward_client_packet(&part, segment)?;
        }
        Ok(())
    }

    fn forward_client_packet(&mut self, packet: &[u8], segment: u16) -> Result<(), PopDrop> {
        let info = inner::parse(packet)?;
        // A SYN asks the backend for segments that must fit the tunnel whole.
        let clamped = info.tcp.is_some_and(|f| f.syn).then(|| clamped_syn(packet)).flatten();
        let packet = clamped.as_deref().unwrap_or(packet);
        let route = self.route(info.key.dst).ok_or(PopDrop::NoRoute)?;
        let (region, nodes) = (route.region, route.clb_nodes.max(1));
        let quic = info.key.transport == anyedge_proto::Transport::Udp && route.quic_ports.contains(&info.key.dst_port);
        let flow_hash = info.key.flow_hash();
        let by_cid = quic
            .then(|| {
                let cipher =
                    self.cid_ciphers.binary_search_by_key(&region, |(r, _)| *r).ok().map(|i| &self.cid_ciphers[i].1);
                anyedge_ccn::cid_node(inner::transport_payload(packet), nodes, cipher)
            })
            .flatten()
            .filter(|n| !self.clbs_down.contains(&(region, *n)));
        let pinned = self.flows.get(&info.key).copied();
        let live = |n: u16| n < nodes && !self.clbs_down.contains(&(region, n));
        let node = match (by_cid, pinned) {
            (Some(node), Some(p)) if p == node => node,
            (None, Some(node)) if live(node) => node,
            (cid, known) => {
                let node = cid.unwrap_or_else(|| self.pick_node(region, nodes, flow_hash));
                self.flows.put(info.key, node);
                if known.is_none() {
                    self.flows_seen += 1;
                }
                while self.flows.len() > self.config.flow_table_capacity.max(1) {
                    self.flows.pop_lru();
                }
                debug_assert!(self.flows.len() <= self.config.flow_table_capacity.max(1), "flow table bound");
                node
            }
        };
        debug_assert!(node < nodes, "the POP sends only to a node its region has");
        let ccn = ccn::Repr::around(Direction::ToRegion, self.config.pop_id, flow_hash, packet)?.with_segment(segment);
        let (header, len) = ccn.header();
        let sealed = self.keys.seal_parts(NodeId::Clb { region, node }, Kind::Data, &header[..len], packet);
        self.demand.mark(region);
        match sealed {
            Some(bytes) => {
                self.outputs.push_back(Transmit::new(Dest::Node(NodeId::Clb { region, node }), flow_hash, bytes))
            }
            None => self.unsealable += 1,
        }
        Ok(())
    }

    /// A sealed, encapsulated reply from a CLB node.
    pub fn handle_from_clb(&mut self, _now_ns: u64, bytes: &[u8]) -> Result<(), PopDrop> {
        let (from, bytes) = self.keys.open(Kind::Data, bytes).map_err(PopDrop::Auth)?;
        if !matches!(from, NodeId::Clb { .. }) {
            return Err(PopDrop::Auth(AuthError::UnknownPeer));
        }
        let (repr, packet) = ccn::decapsulate(bytes)?;
        if repr.direction != Direction::ToPop {
            return Err(PopDrop::WrongDirection);
        }
        if repr.pop_id != self.config.pop_id {
            return Err(PopDrop::NotOurs);
        }
        // Only a VIP's listeners speak to clients through a POP.
        let info = inner::parse(packet)?;
        let key = info.key;
        // A SYN-ACK asks the client for segments that must fit the tunnel whole.
        let clamped = info.tcp.is_some_and(|f| f.syn).then(|| clamped_syn(packet)).flatten();
        let packet = clamped.as_deref().unwrap_or(packet);
        let listener = self.route(key.src).is_some_and(|r| r.ports.contains(&(key.transport, key.src_port)));
        if !listener {
            return Err(PopDrop::NotVip);
        }
        // A super-packet goes whole to the driver, which hands it to its kernel to cut.
        if repr.segment > 0 {
            let out = Transmit::new(Dest::Client(key.dst), key.flow_hash(), packet.to_vec());
            self.outputs.push_back(out.segmented(repr.segment));
            return Ok(());
        }
        // The POP speaks for the VIP, the replies' source: an IPv6 reply larger than the
        // clients' links is cut here, as its source must (IPv6 routers never fragment);
        // an IPv4 one the kernel fragments on its way.
        self.ipv6_fragment_id = self.ipv6_fragment_id.wrapping_add(1);
        let id = self.ipv6_fragment_id;
        for part in anyedge_proto::reassembly::fragment_ipv6(packet, CLIENT_LINK_MTU, id) {
            debug_assert!(part.len() <= CLIENT_LINK_MTU || packet.first().is_some_and(|b| b >> 4 == 4));
            self.outputs.push_back(Transmit::new(Dest::Client(key.dst), key.flow_hash(), part));
        }
        Ok(())
    }
}

/// The MTU of the links toward clients (Ethernet's).
pub const CLIENT_LINK_MTU: usize = 1_500;
/// The MTU of the backbone's links (the lab's, and Ethernet's).
pub const BACKBONE_LINK_MTU: usize = 1_500;
/// What the backbone's envelope adds to a client packet: the outer IPv4 and UDP headers,
/// the seal's header and tag, the CCN header (76 bytes).
pub const ENVELOPE_LEN: usize = 20 + 8 + anyedge_proto::seal::OVERHEAD + ccn::HEADER_LEN;
/// The largest TCP segment payload a client's connection may carry so that its packets
/// cross the backbone whole (IPv4 and TCP headers inside the envelope): a POP lowers the
/// MSS option of every SYN and SYN-ACK it passes to this (IPv6's headers take 20 more).
pub const TUNNEL_MSS_V4: u16 = (BACKBONE_LINK_MTU - ENVELOPE_LEN - 20 - 20) as u16;
pub const TUNNEL_MSS_V6: u16 = TUNNEL_MSS_V4 - 20;
const _: () = assert!(ENVELOPE_LEN == 76 && TUNNEL_MSS_V4 == 1_384 && TUNNEL_MSS_V6 >= 1_220);

/// A copy of a SYN or SYN-ACK whose MSS option asked for more than crosses the backbone
/// whole, lowered to what does (none when it asked for no more).
fn clamped_syn(packet: &[u8]) -> Option<Vec<u8>> {
    let max = if packet.first()? >> 4 == 6 { TUNNEL_MSS_V6 } else { TUNNEL_MSS_V4 };
    let mut copy = packet.to_vec();
    inner::clamp_mss(&mut copy, max).ok()?.then_some(copy)
}

/// Rendezvous hashing of a flow over a region's live CLB nodes: when a node dies only
/// its flows move, spread over the survivors. Node 0 when none is live.
pub fn rendezvous_node(flow_hash: u32, nodes: u16, is_live: impl Fn(u16) -> bool) -> u16 {
    let score = |n: u16| mix64(u64::from(flow_hash) << 16 | u64::from(n));
    let node = (0..nodes).filter(|&n| is_live(n)).max_by_key(|&n| (score(n), n)).unwrap_or(0);
    debug_assert!(node == 0 || (node < nodes && is_live(node)), "a live node, or 0 when none is");
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    use anyedge_ccn::auth::BackboneSecret;

    const CLBS: [NodeId; 2] = [NodeId::Clb { region: 3, node: 0 }, NodeId::Clb { region: 3, node: 1 }];

    fn auth(pop_id: u16) -> AuthConfig {
        let secret = BackboneSecret::from_seed(1);
        let cid_keys = vec![(0, secret.cid_key(0))];
        AuthConfig { keys: secret.keys_for(NodeId::Pop(pop_id), &CLBS), cid_keys, ..AuthConfig::default() }
    }

    /// CLB node `node` of region 3, holding keys for POPs 0..10.
    fn clb_keys(node: u16) -> Keyring {
        let pops: Vec<NodeId> = (0..10).map(NodeId::Pop).collect();
        AuthConfig {
            keys: BackboneSecret::from_seed(1).keys_for(CLBS[usize::from(node)], &pops),
            ..AuthConfig::default()
        }
        .keyring(CLBS[usize::from(node)], 0)
    }

    fn pop_with(capacity: usize) -> Pop {
        let ports = vec![(Transport::Udp, 7000)];
        let routes =
            vec![Route { vip: "198.18.0.10".parse().unwrap(), region: 3, clb_nodes: 2, quic_ports: vec![], ports }];
        Pop::new(
            PopConfig {
                pop_id: 5,
                routes: std::sync::Arc::new(Routes::new(routes)),
                flow_table_capacity: capacity,
                auth: auth(5),
            },
            0,
        )
    }

    fn pop() -> Pop {
        pop_with(16)
    }

    #[test]
    fn pops_given_the_same_connection_id_keys_share_one_set_of_ciphers_by_region() {
        let secret = anyedge_ccn::BackboneSecret::from_seed(9);
        let keys: Vec<(u16, anyedge_ccn::auth::KeyBytes)> = (0..8u16).rev().map(|r| (r, secret.cid_key(r))).collect();
        let (a, b) = (cid_ciphers(&keys), cid_ciphers(&keys));
        assert!(std::sync::Arc::ptr_eq(&a, &b), "made once");
        assert_eq!(a.iter().map(|(r, _)| *r).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>(), "by region");
        for (r, cipher) in a.iter() {
            let own = anyedge_ccn::CidCipher::new(&secret.cid_key(*r));
            assert_eq!(cipher.reset_key(), own.reset_key(), "region {r}'s own key");
            assert_eq!(cipher.mask(&[r.to_be_bytes()[1]; 16]), own.mask(&[r.to_be_bytes()[1]; 16]));
        }
        let other: Vec<_> = keys.iter().map(|&(r, k)| (r, if r == 3 { [7; 32] } else { k })).collect();
        assert!(!std::sync::Arc::ptr_eq(&a, &cid_ciphers(&other)), "other keys, other ciphers");
    }

    #[test]
    fn a_route_table_finds_each_address_and_a_pop_that_changes_a_shared_one_changes_only_its_own() {
        let route = |vip: &str, region: u16| Route {
            vip: vip.parse().unwrap(),
            region,
            clb_nodes: 2,
            quic_ports: vec![],
            ports: vec![(Transport::Udp, 7000)],
        };
        let list: Vec<Route> = (0..300).map(|i| route(&format!("198.18.{}.{}", i / 200, 1 + i % 200), i)).collect();
        let mut with_repeat = list.clone();
        with_repeat.push(route("198.18.0.7", 999));
        with_repeat.push(route("2001:db8::7", 5));
        let table = Routes::new(with_repeat);
        for r in &list {
            assert_eq!(table.get(r.vip), Some(r), "{}", r.vip);
        }
        assert_eq!(table.get("198.18.0.7".parse().unwrap()).map(|r| r.region), Some(6), "the first of a repeat");
        assert_eq!(table.get("2001:db8::7".parse().unwrap()).map(|r| r.region), Some(5));
        assert_eq!(table.get("198.18.9.9".parse().unwrap()), None);
        assert_eq!(table.len(), 302);
        // Two POPs sharing one table: a listener added at one leaves the other's as it was.
        let shared = std::sync::Arc::new(table);
        let config = |pop_id| PopConfig { pop_id, routes: shared.clone(), flow_table_capacity: 16, auth: auth(pop_id) };
        let (mut a, b) = (Pop::new(config(1), 0), Pop::new(config(2), 0));
        let vip: IpAddr = "198.18.0.9".parse().unwrap();
        a.set_listener(vip, Transport::Tcp, 443, false, true);
        assert!(a.route(vip).unwrap().ports.contains(&(Transport::Tcp, 443)));
        assert!(!b.route(vip).unwrap().ports.contains(&(Transport::Tcp, 443)), "b's table is its own");
        assert!(std::sync::Arc::ptr_eq(&b.config.routes, &shared), "b still shares the table");
    }

    /// What CLB node `node` receives when the POP sends `bytes`.
    fn opened(node: u16, bytes: &[u8]) -> Vec<u8> {
        let mut keys = clb_keys(node);
        let (from, payload) = keys.open(Kind::Data, bytes).expect("sealed for this CLB node");
        assert_eq!(from, NodeId::Pop(5));
        payload.to_vec()
    }

    fn client_packet(port: u16) -> Vec<u8> {
        inner::build_udp(("198.18.40.1".parse().unwrap(), port), ("198.18.0.10".parse().unwrap(), 7000), b"x").unwrap()
    }

    /// A reply from `src` to the client.
    fn reply_from(src: (&str, u16)) -> Vec<u8> {
        inner::build_udp((src.0.parse().unwrap(), src.1), ("198.18.40.1".parse().unwrap(), 4000), b"y").unwrap()
    }

    #[test]
    fn client_packet_is_encapsulated_toward_home_region() {
        let mut p = pop();
        p.handle_from_client(0, &client_packet(4000)).unwrap();
        let Some(Transmit { dest: Dest::Node(NodeId::Clb { region, node }), flow_hash, bytes, .. }) = p.poll_output()
        else {
            panic!("no output")
        };
        assert_eq!(region, 3);
        assert!(node < 2);
        let bytes = opened(node, &bytes);
        let (repr, inner_bytes) = ccn::decapsulate(&bytes).unwrap();
        assert_eq!(repr.pop_id, 5);
        assert_eq!(repr.flow_hash, flow_hash, "the driver's flow hash is the one the CCN header carries");
        assert_eq!(flow_hash, inner::parse(&client_packet(4000)).unwrap().key.flow_hash());
        assert_eq!(repr.direction, Direction::ToRegion);
        assert_eq!(inner_bytes, &client_packet(4000)[..]);
    }

    #[test]
    fn a_flow_stays_on_one_clb_node() {
        let mut p = pop();
        let mut nodes = vec![];
        for _ in 0..5 {
            p.handle_from_client(0, &client_packet(4001)).unwrap();
            if let Some(Transmit { dest: Dest::Node(NodeId::Clb { node, .. }), .. }) = p.poll_output() {
                nodes.push(node);
            }
        }
        assert_eq!(nodes.len(), 5);
        assert!(nodes.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(p.flows_seen(), 1);
    }

    #[test]
    fn a_dead_clb_node_moves_only_its_flows() {
        let mut p = pop_with(1000);
        let node_of = |p: &mut Pop, port: u16| {
            p.handle_from_client(0, &client_packet(port)).unwrap();
            match p.poll_output() {
                Some(Transmit { dest: Dest::Node(NodeId::Clb { node, .. }), .. }) => node,
                other => panic!("{other:?}"),
            }
        };
        let before: Vec<u16> = (0..200).map(|i| node_of(&mut p, 5000 + i)).collect();
        assert!(before.contains(&0) && before.contains(&1));
        p.set_clb_up(3, 1, false);
        let after: Vec<u16> = (0..200).map(|i| node_of(&mut p, 5000 + i)).collect();
        assert!(after.iter().all(|&n| n == 0), "nothing goes to the dead node");
        assert!(before.iter().zip(&after).all(|(b, a)| *b == 1 || a == b), "flows on node 0 stay");
        assert_eq!(p.flows_seen(), 200, "a moved flow is not a new flow");
    }

    #[test]
    fn unknown_vip_has_no_route() {
        let mut p = pop();
        let pkt = inner::build_udp(("198.18.40.1".parse().unwrap(), 1), ("198.18.0.99".parse().unwrap(), 7000), b"x")
            .unwrap();
        assert_eq!(p.handle_from_client(0, &pkt), Err(PopDrop::NoRoute));
    }

    #[test]
    fn reply_for_another_pop_is_refused() {
        let mut p = pop();
        let mut clb = clb_keys(0);
        let reply = reply_from(("198.18.0.10", 7000));
        let bytes = ccn::encapsulate(Direction::ToPop, 9, 1, &reply).unwrap();
        let sealed = clb.seal(NodeId::Pop(5), Kind::Data, &bytes).unwrap();
        assert_eq!(p.handle_from_clb(0, &sealed), Err(PopDrop::NotOurs));
        let bytes = ccn::encapsulate(Direction::ToPop, 5, 1, &reply).unwrap();
        let sealed = clb.seal(NodeId::Pop(5), Kind::Data, &bytes).unwrap();
        assert_eq!(p.handle_from_clb(0, &sealed), Ok(()));
        let client = "198.18.40.1".parse().unwrap();
        let hash = inner::parse(&reply).unwrap().key.flow_hash();
        assert_eq!(p.poll_output(), Some(Transmit::new(Dest::Client(client), hash, reply)));
    }

    #[test]
    fn syns_each_way_ask_for_segments_that_cross_the_backbone_whole() {
        use smoltcp::wire::TcpControl;
        let mut p = pop();
        p.set_listener("198.18.0.10".parse().unwrap(), Transport::Tcp, 443, false, true);
        let (client, vip): (IpAddr, IpAddr) = ("198.18.40.1".parse().unwrap(), "198.18.0.10".parse().unwrap());
        let segment = |(src, sport): (IpAddr, u16), (dst, dport): (IpAddr, u16), ack: Option<u32>, mss: u16| {
            inner::build_tcp(src, dst, &inner::bare_tcp(sport, dport, TcpControl::Syn, 7, ack, Some(mss))).unwrap()
        };
        // In: the client's SYN, as the CLB node receives it (a packet built with the
        // clamped MSS, byte for byte: its checksum is right too). One that asks for
        // less than fits passes untouched.
        for (asked, arrives) in [(1460, TUNNEL_MSS_V4), (1200, 1200)] {
            p.handle_from_client(0, &segment((client, 4000), (vip, 443), None, asked)).unwrap();
            let Some(Transmit { dest: Dest::Node(NodeId::Clb { node, .. }), bytes, .. }) = p.poll_output() else {
                panic!("no output")
            };
            let bytes = opened(node, &bytes);
            let (_, inner_bytes) = ccn::decapsulate(&bytes).unwrap();
            assert_eq!(inner_bytes, &segment((client, 4000), (vip, 443), None, arrives)[..], "asked {asked}");
        }
        // Out: the SYN-ACK toward the client.
        let mut clb = clb_keys(0);
        let syn_ack = segment((vip, 443), (client, 4000), Some(8), 1460);
        let bytes = ccn::encapsulate(Direction::ToPop, 5, 1, &syn_ack).unwrap();
        p.handle_from_clb(0, &clb.seal(NodeId::Pop(5), Kind::Data, &bytes).unwrap()).unwrap();
        let out = p.poll_output().expect("toward the client").bytes;
        assert_eq!(out, segment((vip, 443), (client, 4000), Some(8), TUNNEL_MSS_V4));
    }

    #[test]
    fn only_replies_from_a_vips_listener_leave_toward_clients() {
        let mut p = pop();
        let mut clb = clb_keys(0);
        let mut deliver = |p: &mut Pop, src: (&str, u16)| {
            let bytes = ccn::encapsulate(Direction::ToPop, 5, 1, &reply_from(src)).unwrap();
            p.handle_from_clb(0, &clb.seal(NodeId::Pop(5), Kind::Data, &bytes).unwrap())
        };
        assert_eq!(deliver(&mut p, ("198.18.77.77", 53)), Err(PopDrop::NotVip), "not a VIP");
        assert_eq!(deliver(&mut p, ("198.18.0.10", 443)), Err(PopDrop::NotVip), "a VIP, no listener there");
        assert!(p.poll_output().is_none(), "nothing left toward clients");
        assert_eq!(deliver(&mut p, ("198.18.0.10", 7000)), Ok(()));
        // A listener the route table adds speaks at once; one it removes falls silent.
        p.set_listener("198.18.0.10".parse().unwrap(), Transport::Udp, 443, false, true);
        assert_eq!(deliver(&mut p, ("198.18.0.10", 443)), Ok(()));
        p.set_listener("198.18.0.10".parse().unwrap(), Transport::Udp, 7000, false, false);
        assert_eq!(deliver(&mut p, ("198.18.0.10", 7000)), Err(PopDrop::NotVip));
    }

    #[test]
    fn replies_not_sealed_by_a_clb_node_for_this_pop_are_refused_by_reason() {
        let mut p = pop();
        let bytes = ccn::encapsulate(Direction::ToPop, 5, 1, &reply_from(("198.18.0.10", 7000))).unwrap();
        assert_eq!(p.handle_from_clb(0, &bytes), Err(PopDrop::Auth(AuthError::Malformed)), "bare CCN");
        let mut clb = clb_keys(1);
        let sealed = clb.seal(NodeId::Pop(5), Kind::Data, &bytes).unwrap();
        let mut forged = sealed.clone();
        forged[30] ^= 1;
        assert_eq!(p.handle_from_clb(0, &forged), Err(PopDrop::Auth(AuthError::BadTag)));
        let for_other_pop = clb.seal(NodeId::Pop(6), Kind::Data, &bytes).unwrap();
        assert_eq!(p.handle_from_clb(0, &for_other_pop), Err(PopDrop::Auth(AuthError::Misdirected)));
        assert_eq!(p.handle_from_clb(0, &sealed), Ok(()));
        assert_eq!(p.handle_from_clb(0, &sealed), Err(PopDrop::Auth(AuthError::Replayed)));
        assert_eq!(PopDrop::Auth(AuthError::Replayed).name(), "auth_replayed");
    }

    /// A client's super-packet goes in one envelope whose CCN header carries its segment
    /// size; one longer than a datagram carries goes in two, each whole segments, and
    /// every envelope fits a datagram. A super-packet reply leaves whole, marked for the
    /// kernel to cut.
    #[test]
    fn super_packets_cross_in_as_few_envelopes_as_fit_a_datagram_and_leave_whole() {
        use smoltcp::wire::{TcpControl, TcpRepr};
        let mut p = pop();
        p.set_listener("198.18.0.10".parse().unwrap(), Transport::Tcp, 443, false, true);
        let (client, vip): (IpAddr, IpAddr) = ("198.18.40.1".parse().unwrap(), "198.18.0.10".parse().unwrap());
        let tcp = |(src, sport): (IpAddr, u16), (dst, dport): (IpAddr, u16), len: usize| {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let repr = inner::bare_tcp(sport, dport, TcpControl::Psh, 1, Some(1), None);
            inner::build_tcp(src, dst, &TcpRepr { payload: &data, ..repr }).unwrap()
        };
        let envelopes = |p: &mut Pop| {
            std::iter::from_fn(|| p.poll_output())
                .map(|t| {
                    let Dest::Node(NodeId::Clb { node, .. }) = t.dest else { panic!("{t:?}") };
                    assert!(t.bytes.len() <= offload::DATAGRAM_MAX, "fits a datagram: {}", t.bytes.len());
                    let opened = opened(node, &t.bytes);
                    let (repr, packet) = ccn::decapsulate(&opened).unwrap();
                    (repr.segment, inner::parse(packet).unwrap().payload_len)
                })
                .collect::<Vec<_>>()
        };
        p.handle_super_from_client(0, &tcp((client, 4000), (vip, 443), 30_000), 1_448).unwrap();
        assert_eq!(envelopes(&mut p), [(1_448, 30_000)]);
        p.handle_super_from_client(0, &tcp((client, 4000), (vip, 443), 65_450), 1_448).unwrap();
        assert_eq!(envelopes(&mut p), [(1_448, 45 * 1_448), (1_448, 65_450 - 45 * 1_448)]);
        let mut clb = clb_keys(0);
        let reply = tcp((vip, 443), (client, 4000), 40_000);
        let repr = ccn::Repr::around(Direction::ToPop, 5, 1, &reply).unwrap().with_segment(1_448);
        let mut bytes = vec![0u8; repr.buffer_len()];
        repr.emit_with(&mut bytes, &reply);
        p.handle_from_clb(0, &clb.seal(NodeId::Pop(5), Kind::Data, &bytes).unwrap()).unwrap();
        let out = p.poll_output().expect("toward the client");
        assert_eq!((out.dest, out.segment, out.bytes.len()), (Dest::Client(client), 1_448, reply.len()));
        assert!(p.poll_output().is_none(), "whole, not cut");
    }
}
