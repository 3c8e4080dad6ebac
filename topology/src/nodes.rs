//! How each node of a topology is configured: the one place the simulator and the lab
//! turn a topology file into the POP and CLB cores' configurations.

use std::net::IpAddr;

use anyedge_ccn::auth::{AuthConfig, BackboneSecret, NodeId};
use anyedge_ccn::geo::Location;
use anyedge_ccn::{Impairment, LinkModel};
use anyedge_pop::{PopConfig, Route};
use anyedge_region::gateway::GatewayConfig;
use anyedge_region::identity::VipIdentity;
use anyedge_region::termination::{QuicTermination, TlsTermination};
use anyedge_region::{BackendConfig, ClbConfig, ListenerConfig};

use crate::{Egress, InternetEnd, ListenerProtocol, SgBinding, Site, Topology};

/// A CLB node's own addresses (health probes and, by default, SNAT come from them).
#[derive(Debug, Clone, Copy)]
pub struct ClbAddresses {
    pub address: IpAddr,
    pub address_v6: Option<IpAddr>,
}

impl ClbAddresses {
    /// The addresses CLB node `index` of region `r` speaks from toward backends (health
    /// probes, SNAT, NAT64's other side), in both drivers: outside every link network of
    /// the lab, so backends answer them through their tunnel.
    pub fn of(r: usize, index: usize) -> ClbAddresses {
        let v4 = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 32, 1)) + (r * 64 + index) as u32);
        let v6 = std::net::Ipv6Addr::new(0xfd00, 0x18, 0x32, 0, 0, 0, r as u16, index as u16 + 1);
        ClbAddresses { address: IpAddr::V4(v4), address_v6: Some(IpAddr::V6(v6)) }
    }
}

/// The addresses a layer-7 listener's connections reach backends from: every CLB node's
/// own addresses, every region's SNAT addresses and every NAT gateway's public one. A
/// backend believes `X-Forwarded-For` from these alone (nginx's `set_real_ip_from`);
/// anyone else's is the client's own claim.
pub fn clb_proxy_addresses(t: &Topology) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (r, region) in t.regions.iter().enumerate() {
        for i in 0..usize::from(region.clb_nodes) {
            let own = ClbAddresses::of(r, i);
            out.extend(std::iter::once(own.address).chain(own.address_v6));
        }
        out.extend(region.snat.iter().copied());
    }
    out.extend(t.nat_gateways.iter().map(|g| g.public));
    out.sort_unstable();
    out.dedup();
    out
}

/// The TLS and QUIC identities terminating listeners present, when there are any: one
/// per VIP address (the lab issues a certificate per VIP), else `default`.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub default: Option<VipIdentity>,
    pub vips: Vec<(IpAddr, VipIdentity)>,
}

impl Identity {
    pub fn for_vip(&self, vip: IpAddr) -> Option<&VipIdentity> {
        self.vips.iter().find(|(a, _)| *a == vip).map(|(_, id)| id).or(self.default.as_ref())
    }

    /// What a listener at `vip` terminates TLS with (`mtls`: client certificates required;
    /// `https`: offering HTTP/2 and HTTP/1.1 in ALPN).
    fn tls(&self, vip: IpAddr, mtls: bool, https: bool) -> Option<TlsTermination> {
        let id = self.for_vip(vip)?;
        match (mtls, https) {
            (false, false) => Some(id.tls.clone()),
            (false, true) => Some(id.https.clone()),
            (true, false) => id.tls_mutual.clone(),
            (true, true) => id.https_mutual.clone(),
        }
    }

    /// What a QUIC listener at `vip` terminates with, offering `alpn`.
    fn quic(&self, vip: IpAddr, mtls: bool, alpn: &[String]) -> Option<QuicTermination> {
        let id = self.for_vip(vip)?;
        let base = if mtls { id.quic_mutual.as_ref()? } else { &id.quic };
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Some(base.with_alpn(&alpn))
    }
}

/// The internet path of client group `g` to a POP or straight to a region: half the
/// round trip the internet model predicts (or the file pins) plus the last mile, jitter,
/// loss.
pub fn access_link(t: &Topology, g: usize, to: InternetEnd) -> LinkModel {
    let delay_ns = t.internet_rtt_ns(g, to) / 2 + t.last_mile_ns(g);
    LinkModel {
        impairment: Impairment { delay_ns, jitter_mean_ns: t.internet.jitter_ns, loss: t.internet.loss },
        bandwidth_bps: None,
        queue_bytes_max: 0,
    }
}

/// The public internet between a region's egress (a NAT gateway, its router) and a
/// backend on the internet, which the file places at the region: the internet's last
/// mile, jitter and loss.
pub fn internet_hop(t: &Topology) -> LinkModel {
    LinkModel {
        impairment: Impairment {
            delay_ns: t.internet.last_mile_ns,
            jitter_mean_ns: t.internet.jitter_ns,
            loss: t.internet.loss,
        },
        bandwidth_bps: None,
        queue_bytes_max: 0,
    }
}

/// A backbone (CCN) link between two places: fiber with the backbone's stretch,
/// jitter, loss, bandwidth and a queue of `queue` worth of bandwidth (at least 64 KiB).
pub fn backbone_link(t: &Topology, a: Location, b: Location) -> LinkModel {
    let bb = &t.backbone;
    let queue_bytes_max = (u128::from(bb.bandwidth_bps) * u128::from(bb.queue_ns) / 8 / 1_000_000_000) as u64;
    LinkModel {
        impairment: Impairment { delay_ns: bb.delay.one_way_ns(a, b), jitter_mean_ns: bb.jitter_ns, loss: bb.loss },
        bandwidth_bps: Some(bb.bandwidth_bps),
        queue_bytes_max: queue_bytes_max.max(64 * 1024),
    }
}

/// POP `p`: a route to the home region of every VIP it publishes (and reaches).
pub fn pop_config(t: &Topology, p: usize) -> PopConfig {
    pop_config_with(t, p, &mut RouteTables::default())
}

/// [`pop_config`], its route table shared through `tables` with the POPs before it that
/// route the same VIPs (every POP of a world whose VIPs are published everywhere: 2,000
/// POPs × 1,000 VIP addresses were a table a POP).
pub fn pop_config_with(t: &Topology, p: usize, tables: &mut RouteTables) -> PopConfig {
    // The VIPs it publishes whose home region it reaches over the backbone.
    let vips: Vec<usize> =
        tables.published.get_or_insert_with(|| published_at(t)).get(p).map_or_else(Vec::new, |vips| {
            vips.iter().copied().filter(|&v| t.backbone.has_link(p, t.vips[v].home)).collect()
        });
    let routes = tables
        .by_vips
        .entry(vips)
        .or_insert_with_key(|vips| std::sync::Arc::new(anyedge_pop::Routes::new(pop_routes(t, vips))))
        .clone();
    // Keys are the driver's to give (`backbone_auth`): from the seed or from the lab's PKI.
    PopConfig { pop_id: p as u16, routes, flow_table_capacity: 1_000_000, auth: AuthConfig::default() }
}

/// Route tables made so far, by the VIPs they route.
#[derive(Default)]
pub struct RouteTables {
    by_vips: std::collections::HashMap<Vec<usize>, std::sync::Arc<anyedge_pop::Routes>>,
    /// Per POP, the VIPs that list it, ascending (read once: each POP searched every
    /// VIP's list of POPs, 2,000 × 500 × 2,000 steps in a world of VIPs published everywhere).
    published: Option<Vec<Vec<usize>>>,
}

/// Per POP, the VIPs that list it, ascending and once each.
fn published_at(t: &Topology) -> Vec<Vec<usize>> {
    let mut at = vec![Vec::new(); t.pops.len()];
    for (v, vip) in t.vips.iter().enumerate() {
        for &p in &vip.pops {
            if let Some(list) = at.get_mut(p)
                && list.last() != Some(&v)
            {
                list.push(v);
            }
        }
    }
    at
}

/// The routes of these VIPs: each address of each (IPv4, then IPv6), to its home region.
fn pop_routes(t: &Topology, vips: &[usize]) -> Vec<Route> {
    vips.iter()
        .map(|&v| &t.vips[v])
        .flat_map(|v| {
            let (region, clb_nodes) = (v.home as u16, t.regions[v.home].clb_nodes);
            let quic_ports: Vec<u16> =
                v.listeners.iter().filter(|l| l.protocol == ListenerProtocol::Quic).map(|l| l.port).collect();
            let ports: Vec<_> = v.listeners.iter().map(|l| (l.protocol.transport(), l.port)).collect();
            let route =
                |vip: IpAddr| Route { vip, region, clb_nodes, quic_ports: quic_ports.clone(), ports: ports.clone() };
            let v6 = v.ipv6.map(|a| route(IpAddr::V6(a)));
            std::iter::once(route(IpAddr::V4(v.ipv4))).chain(v6)
        })
        .collect()
}

/// POP `p` on the backbone.
pub fn pop_node(p: usize) -> NodeId {
    NodeId::Pop(p as u16)
}

/// CLB node `index` of region `r` on the backbone.
pub fn clb_node(r: usize, index: usize) -> NodeId {
    NodeId::Clb { region: r as u16, node: index as u16 }
}

/// Every node that holds backbone keys: POPs, then each region's CLB nodes, then the
/// backend hosts.
pub fn backbone_nodes(t: &Topology) -> Vec<NodeId> {
    let pops = (0..t.pops.len()).map(pop_node);
    let clbs = clb_nodes(t);
    let mut hosts: Vec<NodeId> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, id) in backend_hosts(t) {
        // A gateway stands for every internet backend behind it: once.
        if seen.insert(id) {
            hosts.push(id);
        }
    }
    pops.chain(clbs).chain(hosts).collect()
}

/// Every region's CLB nodes, region by region.
fn clb_nodes(t: &Topology) -> impl Iterator<Item = NodeId> + '_ {
    t.regions.iter().enumerate().flat_map(|(r, region)| (0..usize::from(region.clb_nodes)).map(move |i| clb_node(r, i)))
}

/// Host numbers (12 bits on the wire) of egress nodes: NAT gateway `g` is
/// `GATEWAY_HOST_BASE + g` among its
/// region's backbone hosts, the region's router `ROUTER_HOST`.
pub const GATEWAY_HOST_BASE: u16 = 0xF00;
pub const ROUTER_HOST: u16 = 0xFFF;

/// The backbone node that carries a CLB node's packets to the internet: NAT gateway `g`,
/// or region `r`'s router. To the CLB it is the backend host of every internet backend
/// behind it (it seals and opens the backend leg).
pub fn egress_node(t: &Topology, r: usize, egress: Egress) -> NodeId {
    match egress {
        Egress::Nat(g) => {
            NodeId::Backend { region: t.nat_gateways[g].region as u16, host: GATEWAY_HOST_BASE + g as u16 }
        }
        Egress::Router => NodeId::Backend { region: r as u16, host: ROUTER_HOST },
    }
}

/// Every egress node (NAT gateways, region routers) carrying a backend, with its region,
/// the egress and the internet backends' addresses behind it, in file order.
pub fn egress_nodes(t: &Topology) -> Vec<(usize, Egress, Vec<IpAddr>)> {
    let mut out: Vec<(usize, Egress, Vec<IpAddr>)> = Vec::new();
    for (r, region) in t.regions.iter().enumerate() {
        for b in region.backend_groups.iter().flat_map(|g| &g.backends) {
            let Site::Internet(e) = b.site else { continue };
            let ip = b.addr.ip();
            match out.iter_mut().find(|(rr, ee, _)| *rr == r && *ee == e) {
                Some((_, _, ips)) if ips.contains(&ip) => {}
                Some((_, _, ips)) => ips.push(ip),
                None => out.push((r, e, vec![ip])),
            }
        }
    }
    out
}

/// An egress node's name, as nodes and reports show it: `nat/NAME` or `router/REGION`.
pub fn egress_name(t: &Topology, r: usize, egress: Egress) -> String {
    match egress {
        Egress::Nat(g) => format!("nat/{}", t.nat_gateways[g].name),
        Egress::Router => format!("router/{}", t.regions[r].name),
    }
}

/// The core of egress node `k` (of [`egress_nodes`]), its keys from `auth` (given its id).
pub fn gateway_config(t: &Topology, k: usize, auth: impl FnOnce(NodeId) -> AuthConfig) -> Option<GatewayConfig> {
    let (r, egress, backends) = egress_nodes(t).into_iter().nth(k)?;
    let me = egress_node(t, r, egress);
    let public = match egress {
        Egress::Nat(g) => Some(t.nat_gateways[g].public),
        Egress::Router => None,
    };
    Some(GatewayConfig { me, public, backends, auth: auth(me), capacity: anyedge_region::gateway::GATEWAY_FLOWS_MAX })
}

/// Every backend host (a distinct backend address) and its id: numbered per region, in
/// the order the file first binds them.
pub fn backend_hosts(t: &Topology) -> Vec<(IpAddr, NodeId)> {
    let mut hosts: Vec<(IpAddr, NodeId)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (r, region) in t.regions.iter().enumerate() {
        let mut n = 0u16;
        for b in region.backend_groups.iter().flat_map(|g| &g.backends) {
            if !seen.insert(b.addr.ip()) {
                continue;
            }
            if let Site::Internet(e) = b.site {
                hosts.push((b.addr.ip(), egress_node(t, r, e)));
            } else {
                hosts.push((b.addr.ip(), NodeId::Backend { region: r as u16, host: n }));
                n += 1;
            }
        }
    }
    hosts
}

/// The security groups bound to the backend instance at `ip`, in file order, with their
/// index in the topology: what its host filters inbound traffic with.
pub fn backend_security_groups(t: &Topology, ip: IpAddr) -> Vec<(usize, anyedge_region::security::SecurityGroup)> {
    t.security_groups
        .iter()
        .enumerate()
        .filter(|(_, d)| d.bind.contains(&SgBinding::Backend(ip)))
        .map(|(gi, d)| (gi, d.group.clone()))
        .collect()
}

/// Whether region `r` binds a backend on host `ip`.
fn region_binds(t: &Topology, r: usize, ip: IpAddr) -> bool {
    t.regions[r].backend_groups.iter().flat_map(|g| &g.backends).any(|b| b.addr.ip() == ip)
}

/// The peers `me` holds keys for: a POP, every CLB node (it may carry any region's VIP);
/// a CLB node, every POP, its region's other nodes (table sync) and the hosts of the
/// backends its region binds; a backend host, the CLB nodes of every region binding it.
pub fn backbone_peers(t: &Topology, me: NodeId) -> Vec<NodeId> {
    if let NodeId::Pop(_) = me {
        // Every CLB node, in node order: no need to walk the hosts (this runs per POP).
        return clb_nodes(t).collect();
    }
    // Each host's first address (a gateway stands for several), found by hashing: this
    // runs for every node of the world.
    let mut first_ip = std::collections::HashMap::new();
    for (ip, id) in backend_hosts(t) {
        first_ip.entry(id).or_insert(ip);
    }
    let ip_of = |id: NodeId| first_ip.get(&id).copied();
    backbone_nodes(t)
        .into_iter()
        .filter(|&peer| match (me, peer) {
            (NodeId::Pop(_), NodeId::Clb { .. }) | (NodeId::Clb { .. }, NodeId::Pop(_)) => true,
            (NodeId::Clb { region: a, node: i }, NodeId::Clb { region: b, node: j }) => a == b && i != j,
            (NodeId::Clb { region, .. }, host @ NodeId::Backend { .. })
            | (host @ NodeId::Backend { .. }, NodeId::Clb { region, .. }) => {
                ip_of(host).is_some_and(|ip| region_binds(t, usize::from(region), ip))
            }
            _ => false,
        })
        .collect()
}

/// The keys of node `me` derived from `secret`, for a core whose clock's zero is
/// `epoch_ns` in wall-clock nanoseconds: the simulator derives them from the seed at
/// every run, `lab up` from a fresh secret into each node's key file.
pub fn backbone_auth(t: &Topology, secret: &BackboneSecret, me: NodeId, epoch_ns: u64) -> AuthConfig {
    // The AEAD: what the lab and deployments seal with (the simulator may choose `Fast`).
    AuthConfig {
        keys: secret.keys_for(me, &backbone_peers(t, me)),
        derived: None,
        epoch_ns,
        salt: 0,
        cid_keys: cid_keys(t, secret, me),
        tags: Default::default(),
    }
}

/// Peer lists shared between nodes that talk with the same peers: every POP's are every
/// CLB node (made once, not once a POP: 2,000 POPs × 1,000 CLB nodes were a large
/// world's set-up). Other nodes' lists are their own, made from which region binds which
/// host, worked out once (walking every node and backend for each node was quadratic in
/// the file). Each list has the peers [`backbone_peers`] names (a unit test holds them
/// equal), in a [`anyedge_ccn::PeerList`]'s order.
#[derive(Default)]
pub struct PeerLists {
    pops: Option<std::sync::Arc<anyedge_ccn::PeerList>>,
    bindings: Option<Bindings>,
    /// Every POP's connection-ID keys (every region's), derived once.
    pop_cid_keys: Option<Vec<(u16, anyedge_ccn::auth::KeyBytes)>>,
}

/// Which backend hosts each region binds (by the host's first address, as
/// [`backbone_peers`] decides), and which regions bind each host.
struct Bindings {
    hosts_of: Vec<Vec<NodeId>>,
    regions_of: std::collections::HashMap<NodeId, Vec<usize>>,
}

impl Bindings {
    fn of(t: &Topology) -> Bindings {
        let mut first_ip = std::collections::HashMap::new();
        for (ip, id) in backend_hosts(t) {
            first_ip.entry(id).or_insert(ip);
        }
        let host_at: std::collections::HashMap<IpAddr, NodeId> =
            first_ip.into_iter().map(|(id, ip)| (ip, id)).collect();
        let mut hosts_of = vec![Vec::new(); t.regions.len()];
        let mut regions_of: std::collections::HashMap<NodeId, Vec<usize>> = std::collections::HashMap::new();
        for (r, region) in t.regions.iter().enumerate() {
            for b in region.backend_groups.iter().flat_map(|g| &g.backends) {
                if let Some(&host) = host_at.get(&b.addr.ip()) {
                    hosts_of[r].push(host);
                    let regions = regions_of.entry(host).or_default();
                    if regions.last() != Some(&r) {
                        regions.push(r);
                    }
                }
            }
        }
        Bindings { hosts_of, regions_of }
    }
}

impl PeerLists {
    pub fn of(&mut self, t: &Topology, me: NodeId) -> std::sync::Arc<anyedge_ccn::PeerList> {
        let nodes_of = |r: usize| (0..usize::from(t.regions[r].clb_nodes)).map(move |i| clb_node(r, i));
        match me {
            NodeId::Pop(_) => {
                self.pops.get_or_insert_with(|| anyedge_ccn::PeerList::new(backbone_peers(t, me))).clone()
            }
            NodeId::Clb { region, node } => {
                let b = self.bindings.get_or_insert_with(|| Bindings::of(t));
                let r = usize::from(region);
                let pops = (0..t.pops.len()).map(pop_node);
                let siblings = nodes_of(r).filter(|&n| n != clb_node(r, usize::from(node)));
                anyedge_ccn::PeerList::new(pops.chain(siblings).chain(b.hosts_of[r].iter().copied()))
            }
            NodeId::Backend { .. } => {
                let b = self.bindings.get_or_insert_with(|| Bindings::of(t));
                let regions = b.regions_of.get(&me).map_or(&[][..], Vec::as_slice);
                anyedge_ccn::PeerList::new(regions.iter().flat_map(|&r| nodes_of(r)))
            }
        }
    }
}

/// The same keys for the same peers, derived from `secret` as each peer is first used
/// rather than listed: the simulator's, whose nodes may each talk with thousands of peers
/// and talk with a few (a clock starting at 0).
pub fn backbone_auth_derived(t: &Topology, secret: &BackboneSecret, me: NodeId, lists: &mut PeerLists) -> AuthConfig {
    let derived = anyedge_ccn::DerivedKeys { secret: secret.clone(), me, peers: lists.of(t, me) };
    // Every POP holds every region's connection-ID keys: derived once, not once a POP.
    let cid_keys = match me {
        NodeId::Pop(_) => lists.pop_cid_keys.get_or_insert_with(|| cid_keys(t, secret, me)).clone(),
        _ => cid_keys(t, secret, me),
    };
    AuthConfig { keys: Vec::new(), derived: Some(derived), cid_keys, ..Default::default() }
}

/// QUIC connection-ID keys: a POP reads every region's IDs, a CLB node writes its own.
fn cid_keys(t: &Topology, secret: &BackboneSecret, me: NodeId) -> Vec<(u16, anyedge_ccn::auth::KeyBytes)> {
    match me {
        NodeId::Pop(_) => (0..t.regions.len() as u16).map(|r| (r, secret.cid_key(r))).collect(),
        NodeId::Clb { region, .. } => vec![(region, secret.cid_key(region))],
        NodeId::Backend { .. } => Vec::new(),
    }
}

/// CLB node `index` of region `r`.
/// Every POP's place, by POP id, shared by the CLB nodes that take it (one allocation a
/// caller that keeps it, not one a node).
pub fn pop_places(t: &Topology) -> std::sync::Arc<[[f64; 2]]> {
    t.pops.iter().map(|p| p.location).collect()
}

/// What every CLB node's configuration reads of the whole world: read once for a world's
/// nodes ([`clb_config_with`]), not once a node (a world of 500 regions read every
/// backend and every POP a thousand times).
pub struct ClbFacts {
    places: std::sync::Arc<[[f64; 2]]>,
    hosts: Vec<(IpAddr, NodeId)>,
}

impl ClbFacts {
    pub fn of(t: &Topology) -> ClbFacts {
        ClbFacts { places: pop_places(t), hosts: backend_hosts(t) }
    }
}

pub fn clb_config(t: &Topology, r: usize, index: usize, own: ClbAddresses, identity: &Identity) -> ClbConfig {
    clb_config_with(t, &ClbFacts::of(t), r, index, own, identity)
}

/// [`clb_config`] with the world's `facts` read already.
pub fn clb_config_with(
    t: &Topology,
    facts: &ClbFacts,
    r: usize,
    index: usize,
    own: ClbAddresses,
    identity: &Identity,
) -> ClbConfig {
    let region = &t.regions[r];
    let mut listeners = Vec::new();
    for vip in t.vips.iter().filter(|v| v.home == r) {
        for l in &vip.listeners {
            let group = &region.backend_groups[l.backend_group];
            let backends = |v6_vip: bool| {
                // An IPv4 VIP reaches IPv4 backends; an IPv6 VIP reaches IPv6 ones
                // directly and IPv4 ones through NAT64.
                group
                    .backends
                    .iter()
                    .filter(|b| v6_vip || b.addr.is_ipv4())
                    .map(|b| BackendConfig {
                        addr: b.addr,
                        weight: b.weight,
                        health: group.health.clone(),
                        snat: matches!(b.site, Site::Idc(_)),
                        behind_nat: matches!(b.site, Site::Internet(Egress::Nat(_))),
                        security_groups: backend_security_groups(t, b.addr.ip()),
                    })
                    .collect()
            };
            let alt_svc = vip.alt_svc(l).map(std::sync::Arc::from);
            let listener = |vip: IpAddr| ListenerConfig {
                vip,
                transport: l.protocol.transport(),
                port: l.port,
                scheduler: l.scheduler,
                backends: backends(vip.is_ipv6()),
                persistence_ns: l.persistence_ns,
                layer7: l.protocol.is_terminated(),
                http: l.protocol.is_layer7(),
                tls: l.protocol.has_tls().then(|| identity.tls(vip, l.mtls, l.protocol.is_layer7())).flatten(),
                quic: (l.protocol == ListenerProtocol::Quic).then(|| identity.quic(vip, l.mtls, &l.alpn)).flatten(),
                alt_svc: alt_svc.clone(),
            };
            listeners.push(listener(IpAddr::V4(vip.ipv4)));
            if let Some(v6) = vip.ipv6 {
                listeners.push(listener(IpAddr::V6(v6)));
            }
        }
    }
    let snat = if region.snat.is_empty() {
        std::iter::once(own.address).chain(own.address_v6).collect()
    } else {
        region.snat.clone()
    };
    let security_groups = t
        .security_groups
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.bind.iter().any(|b| {
                matches!(*b, SgBinding::Clb { region, index: i } if region == r && i.is_none_or(|i| usize::from(i) == index))
            })
        })
        .map(|(gi, d)| (gi, d.group.clone()))
        .collect();
    ClbConfig {
        security_groups,
        address: own.address,
        address_v6: own.address_v6,
        node_count: region.clb_nodes,
        snat,
        region: r as u16,
        node_index: index as u16,
        listeners,
        health: region.health.clone(),
        conn_table_capacity: region.conn_table,
        source_prefix_v4: region.source_prefix_v4,
        pop_fallback: anyedge_region::config::PopPlaces {
            places: facts.places.clone(),
            linked: (0..t.pops.len()).map(|q| t.backbone.has_link(q, r)).collect(),
        },
        auth: AuthConfig::default(),
        backend_hosts: {
            let bound: Vec<IpAddr> =
                region.backend_groups.iter().flat_map(|g| &g.backends).map(|b| b.addr.ip()).collect();
            facts.hosts.iter().copied().filter(|(ip, _)| bound.contains(ip)).collect()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node's shared or indexed peer list names the peers `backbone_peers` does
    /// (the rule, read node by node), on every shipped topology and a generated world.
    #[test]
    fn peer_lists_made_from_the_bindings_name_the_peers_the_rule_does() {
        let mut worlds = crate::test_worlds::shipped();
        let spec = crate::generate::Spec {
            name: "peers".into(),
            pops: 40,
            regions: 8,
            clients: 2000,
            groups: 100,
            web_every: 3,
            clb_nodes: 3,
            duration_s: 1,
            seed: 3,
            internet: false,
        };
        worlds.push(("generated".into(), crate::test_worlds::generated(&spec)));
        assert!(worlds.len() >= 6, "the shipped topologies and a generated one");
        for (name, t) in &worlds {
            let mut lists = PeerLists::default();
            let mut hosts_with_peers = 0;
            for me in backbone_nodes(t) {
                let rule = anyedge_ccn::PeerList::new(backbone_peers(t, me));
                let made = lists.of(t, me);
                assert_eq!(*made, *rule, "{name}: {me:?}'s peers");
                hosts_with_peers += usize::from(matches!(me, NodeId::Backend { .. }) && !made.is_empty());
            }
            assert!(hosts_with_peers > 0, "{name}: backend hosts have CLB peers");
        }
    }
}
