//! The lab's network, computed from a topology file alone so `lab up` and every node
//! process agree on it: one namespace per node, routers for the internet, the backbone
//! and each region, point-to-point veth links, addresses, routes and TUN devices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyedge_topology::Topology;

use crate::layout::{BACKEND_PORT, TUNNEL_PORT, sanitize};

/// Something the lab's plan of a topology lacks where it must have it (a namespace, a
/// link, an address): a plan is made whole from a validated file, so this names a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the lab's plan has {0}")]
pub struct PlanGap(pub &'static str);

/// TUN device that takes VIP packets on a POP, and serves packets on a backend host.
pub const TUN_NAME: &str = "ae0";

/// What a namespace is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The internet's core: the direct path to regions and internet hosts, and every
    /// transit's upstream.
    Internet,
    /// The transit AS upstream of POP `p` (`transit/POP`): a BGP speaker that learns the
    /// VIPs' routes from its POP and the other transits (`anyedge_topology::bgp`); client
    /// groups attach to the transit of their nearest POP.
    Transit(usize),
    /// Over the file's AS-level internet (`internet.ases`), a router of its routing graph
    /// (`anyedge_topology::catchments::Internetwork`; the index of a router of an AS
    /// other than the CDN's, whose routers are the POPs): a BGP speaker with the AS's
    /// relationships and policies. These replace the transits.
    Router(usize),
    /// The CCN backbone between POPs and CLB nodes.
    Backbone,
    /// A region's network between its CLB nodes and backends.
    RegionNet(usize),
    Client(usize),
    Pop(usize),
    Clb {
        region: usize,
        index: usize,
    },
    /// A backend host: every backend port with this address.
    Backend {
        region: usize,
        ip: Ipv4Addr,
    },
    /// A control node, `control/N` (N from 1), on the backbone.
    Control(u8),
    /// An egress node (`nat/NAME`, `router/REGION`): entry `k` of
    /// `anyedge_topology::nodes::egress_nodes`, on its region's network.
    Egress {
        region: usize,
        k: usize,
    },
}

/// One namespace's end of a veth link: its device and address, and the other end's.
#[derive(Debug, Clone)]
pub struct LinkEnds {
    pub dev: String,
    pub local: Ipv4Addr,
    pub peer: Ipv4Addr,
    pub local6: Ipv6Addr,
    pub peer6: Ipv6Addr,
}

#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub role: Role,
}

/// A veth pair between two namespaces: a /30 with .1 on `a` and .2 on `b`, and an
/// IPv6 /64 from fd00::/8 the same way.
#[derive(Debug, Clone)]
pub struct Veth {
    pub a: usize,
    pub a_if: String,
    pub a_addr: Ipv4Addr,
    pub b: usize,
    pub b_if: String,
    pub b_addr: Ipv4Addr,
    pub a_addr6: Ipv6Addr,
    pub b_addr6: Ipv6Addr,
}

/// IPv6 link networks: fd00:ae:POOL:K::/64 (POOL 0 internet, 1 backbone, 2 region).
pub const V6_PREFIX: [u16; 2] = [0xfd00, 0xae];
pub const INTERNET_NET6: &str = "fd00:ae:0::/48";
pub const BACKBONE_NET6: &str = "fd00:ae:1::/48";
pub const REGION_NET6: &str = "fd00:ae:2::/48";

fn link_addrs6(pool: usize, k: usize) -> (Ipv6Addr, Ipv6Addr) {
    let net = |host| Ipv6Addr::new(V6_PREFIX[0], V6_PREFIX[1], pool as u16, k as u16, 0, 0, 0, host);
    (net(1), net(2))
}

/// A network's routers on one shared segment: a bridge (`bridge`) in the internet's
/// namespace, each router on it by a veth of its own (`seg` in the router's namespace,
/// `core_dev` on the bridge). The traffic between its routers crosses it, and their iBGP
/// sessions, each to the network's route reflector (the `internet` node's speaker, at
/// `reflector` on the bridge), which passes every router's routes to the others. A veth
/// and a session per pair of routers was a full mesh: a default internet's tier-1
/// networks, present at tens of places each, made 5,645 links, and two cores could not
/// keep their sessions' hold timers.
#[derive(Debug, Clone)]
pub struct Segment {
    pub bridge: String,
    pub ports: Vec<Port>,
    pub reflector: Ipv4Addr,
    pub reflector6: Ipv6Addr,
}

/// A router's place on a [`Segment`].
#[derive(Debug, Clone)]
pub struct Port {
    pub ns: usize,
    pub core_dev: String,
    pub addr: Ipv4Addr,
    pub addr6: Ipv6Addr,
}

/// The node whose speaker reflects each network's routes among its routers: in the
/// internet's namespace, named as a hosts file names that namespace.
pub const REFLECTOR_NODE: &str = "internet";

/// A router's device on its network's segment.
pub const SEGMENT_DEV: &str = "seg";

/// Segments take the top of the internet pool, a /26 each (61 routers and the
/// reflector): 64 of them.
const SEGMENT_POOL: Ipv4Addr = Ipv4Addr::new(198, 18, 176, 0);
pub const SEGMENT_PREFIX: u8 = 26;
pub const SEGMENTS_MAX: usize = 64;
pub const SEGMENT_PORTS_MAX: usize = 61;
/// IPv6 pool of the segments: fd00:ae:3:S::/64.
const SEGMENT_POOL6: u16 = 3;
/// How many /30 links each pool holds before the next pool's addresses (the internet's
/// stops where the segments start).
const POOL_LINKS_MAX: [usize; 3] = [
    (SEGMENT_POOL.to_bits() - INTERNET_POOL.to_bits()) as usize / 4,
    (REGION_POOL.to_bits() - BACKBONE_POOL.to_bits()) as usize / 4,
    (1 << (32 - REGION_NET.1)) / 4,
];
const _: () = assert!(SEGMENTS_MAX * (1 << (32 - SEGMENT_PREFIX)) == (1 << 12));
// The numbers `Plan::address_room` names.
const _: () = assert!(POOL_LINKS_MAX[0] == 3072 && POOL_LINKS_MAX[1] == 2048 && POOL_LINKS_MAX[2] == 2048);
// The routers, the reflector, the network and broadcast addresses.
const _: () = assert!(SEGMENT_PORTS_MAX + 3 == 1 << (32 - SEGMENT_PREFIX));

fn segment_addrs(s: usize, m: usize) -> (Ipv4Addr, Ipv6Addr) {
    let v4 = Ipv4Addr::from(u32::from(SEGMENT_POOL) + (s << (32 - SEGMENT_PREFIX)) as u32 + 1 + m as u32);
    let v6 = Ipv6Addr::new(V6_PREFIX[0], V6_PREFIX[1], SEGMENT_POOL6, s as u16, 0, 0, 0, 1 + m as u16);
    (v4, v6)
}

/// A node process: its name as fault targets write it, and where it runs.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub ns: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub lab: String,
    pub namespaces: Vec<Namespace>,
    pub links: Vec<Veth>,
    /// Over an AS-level internet: each network's routers on a segment of their own.
    pub segments: Vec<Segment>,
    /// Links past a pool's room (0: internet, 1: backbone, 2: region), which
    /// [`Plan::address_room`] refuses.
    pub overflow: [usize; 3],
    pub nodes: Vec<Node>,
    /// Internet backend hosts and the egress node (`k`) that reaches each.
    pub internet_hosts: Vec<(Ipv4Addr, usize)>,
    /// Per client group: its `address:` block and the address its namespace sends from
    /// (the block's first host), when the file gives one; else its link address is used.
    pub group_sources: Vec<Option<(anyedge_topology::Cidr, IpAddr)>>,
}

/// Link pools: internet links, backbone links, region links (each a /30).
const INTERNET_POOL: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 0);
const BACKBONE_POOL: Ipv4Addr = Ipv4Addr::new(198, 18, 192, 0);
const REGION_POOL: Ipv4Addr = Ipv4Addr::new(198, 18, 224, 0);
pub const INTERNET_NET: (Ipv4Addr, u8) = (INTERNET_POOL, 18);
pub const BACKBONE_NET: (Ipv4Addr, u8) = (BACKBONE_POOL, 19);
pub const REGION_NET: (Ipv4Addr, u8) = (REGION_POOL, 19);
/// Backend hosts' public addresses (the direct path).
pub const DIRECT_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 112, 0), 20);

fn link_addrs(pool: Ipv4Addr, k: usize) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(pool) + 4 * k as u32;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The links of a lab, numbered per pool (internet, backbone, region): link `k` of a
/// pool is its `k`th /30 and /64.
#[derive(Default)]
struct LinkPools {
    counters: [usize; 3],
    links: Vec<Veth>,
    segments: Vec<Segment>,
}

impl LinkPools {
    /// A segment joining the routers (namespaces) `routers`, the next of the pool.
    fn segment(&mut self, routers: &[usize]) {
        let s = self.segments.len();
        let ports = routers
            .iter()
            .enumerate()
            .map(|(m, &ns)| {
                let (addr, addr6) = segment_addrs(s, m);
                Port { ns, core_dev: format!("g{s}p{m}"), addr, addr6 }
            })
            .collect();
        let (reflector, reflector6) = segment_addrs(s, SEGMENT_PORTS_MAX);
        self.segments.push(Segment { bridge: format!("br{s}"), ports, reflector, reflector6 });
    }

    /// A link from `router` (device `lN`) to `node` (device `b_if`, else the pool's name).
    fn add(&mut self, pool: usize, router: usize, node: usize, b_if: Option<String>) {
        let base = [INTERNET_POOL, BACKBONE_POOL, REGION_POOL][pool];
        let (a_addr, b_addr) = link_addrs(base, self.counters[pool]);
        let (a_addr6, b_addr6) = link_addrs6(pool, self.counters[pool]);
        self.counters[pool] += 1;
        let name = ["inet", "ccn", "rgn"][pool];
        // Past its room a link would take the next pool's addresses: counted, refused.
        self.links.push(Veth {
            a: router,
            a_if: format!("l{}", self.links.len()),
            a_addr,
            b: node,
            b_if: b_if.unwrap_or_else(|| name.into()),
            b_addr,
            a_addr6,
            b_addr6,
        });
    }
}

/// The internet: each client group on the transit of its nearest POP, each POP on its
/// own transit, every transit on the core (`core`) and on every other (`mN`).
fn internet_links(
    t: &Topology,
    pools: &mut LinkPools,
    core: usize,
    (clients, pops, transits): (&[usize], &[usize], &[usize]),
) {
    for (g, &c) in clients.iter().enumerate() {
        let upstream = anyedge_topology::bgp::attach(t, g).map_or(core, |p| transits[p]);
        pools.add(0, upstream, c, None);
    }
    for (p, &n) in pops.iter().enumerate() {
        pools.add(0, transits[p], n, None);
    }
    for &x in transits {
        pools.add(0, core, x, Some("core".into()));
    }
    for (i, &x) in transits.iter().enumerate() {
        for &y in &transits[i + 1..] {
            let b_if = format!("m{}", pools.links.len());
            pools.add(0, x, y, Some(b_if));
        }
    }
}

/// Each namespace's index by what it is for, as [`Plan::new`] makes them: what the links
/// and the node list are drawn from.
struct Rooms {
    internet: usize,
    backbone: usize,
    region_nets: Vec<usize>,
    clients: Vec<usize>,
    pops: Vec<usize>,
    /// One transit per POP, when the file has no AS-level internet.
    transits: Vec<usize>,
    /// (router, its node's name, namespace), over an AS-level internet.
    routers: Vec<(usize, String, usize)>,
    clbs: Vec<((usize, usize), usize)>,
    controls: Vec<(u8, usize)>,
    hosts: Vec<(usize, Ipv4Addr, usize)>,
    egress: Vec<(usize, String, usize)>,
    internet_hosts: Vec<(Ipv4Addr, usize)>,
}

impl Rooms {
    /// The lab's namespaces, in a fixed order, and where each kind is among them.
    fn new(t: &Topology, lab: &str) -> (Vec<Namespace>, Rooms) {
        let mut namespaces = Vec::new();
        let mut ns = |role: Role, name: String| {
            namespaces.push(Namespace { name: format!("{lab}-{}", sanitize(&name)), role });
            namespaces.len() - 1
        };
        let internet = ns(Role::Internet, "inet".into());
        let backbone = ns(Role::Backbone, "ccn".into());
        let region_nets: Vec<usize> =
            (0..t.regions.len()).map(|r| ns(Role::RegionNet(r), format!("rg-{}", t.regions[r].name))).collect();
        let clients: Vec<usize> =
            (0..t.clients.len()).map(|g| ns(Role::Client(g), format!("client-{}", t.clients[g].name))).collect();
        let pops: Vec<usize> = (0..t.pops.len()).map(|p| ns(Role::Pop(p), format!("pop-{}", t.pops[p].name))).collect();
        let as_level = t.internet.has_ases();
        let transits: Vec<usize> = (0..t.pops.len())
            .filter(|_| !as_level)
            .map(|p| ns(Role::Transit(p), format!("as-{}", t.pops[p].name)))
            .collect();
        let routers: Vec<(usize, String, usize)> = if as_level {
            let net = t.internet.ways.internetwork(t);
            router_names(net)
                .into_iter()
                .map(|(r, name)| (r, name.clone(), ns(Role::Router(r), name.replace('/', "-"))))
                .collect()
        } else {
            Vec::new()
        };
        let clb_nodes: Vec<(usize, usize)> =
            (0..t.regions.len()).flat_map(|r| (0..usize::from(t.regions[r].clb_nodes)).map(move |i| (r, i))).collect();
        let clbs: Vec<((usize, usize), usize)> = clb_nodes
            .into_iter()
            .map(|(r, i)| {
                ((r, i), ns(Role::Clb { region: r, index: i }, anyedge_topology::clb_slug(&t.regions[r].name, i)))
            })
            .collect();
        let controls: Vec<(u8, usize)> = (1..=t.control.as_ref().map_or(0, |c| c.nodes))
            .map(|n| (n, ns(Role::Control(n), format!("control-{n}"))))
            .collect();
        let hosts: Vec<(usize, Ipv4Addr, usize)> = backend_hosts(t)
            .into_iter()
            .map(|(r, ip)| (r, ip, ns(Role::Backend { region: r, ip }, format!("be-{ip}"))))
            .collect();
        let mut internet_hosts = Vec::new();
        let mut egress = Vec::new();
        for (k, (r, e, ips)) in anyedge_topology::nodes::egress_nodes(t).into_iter().enumerate() {
            let name = anyedge_topology::nodes::egress_name(t, r, e);
            egress.push((r, name.clone(), ns(Role::Egress { region: r, k }, name.replace('/', "-"))));
            internet_hosts.extend(ips.into_iter().filter_map(|ip| match ip {
                IpAddr::V4(ip) => Some((ip, k)),
                IpAddr::V6(_) => None,
            }));
        }
        let rooms = Rooms {
            internet,
            backbone,
            region_nets,
            clients,
            pops,
            transits,
            routers,
            clbs,
            controls,
            hosts,
            egress,
            internet_hosts,
        };
        (namespaces, rooms)
    }

    /// Every link and segment: the internet's (per POP transit, or the AS-level
    /// internet's routers), the direct path to each region, the backbone, the regions'.
    fn links(&self, t: &Topology) -> LinkPools {
        let mut pools = LinkPools::default();
        if t.internet.has_ases() {
            let router_ns = self.routers.iter().map(|(r, _, n)| (*r, *n)).collect();
            as_internet_links(t, &mut pools, self.internet, (&self.clients, &self.pops), &router_ns);
        } else {
            internet_links(t, &mut pools, self.internet, (&self.clients, &self.pops, &self.transits));
        }
        // The direct path: the internet reaches each region (the baseline without anycast).
        for &rg in &self.region_nets {
            pools.add(0, self.internet, rg, None);
        }
        let on_backbone =
            self.pops.iter().chain(self.clbs.iter().map(|(_, c)| c)).chain(self.controls.iter().map(|(_, c)| c));
        for &n in on_backbone {
            pools.add(1, self.backbone, n, None);
        }
        for &((r, _), c) in &self.clbs {
            pools.add(2, self.region_nets[r], c, None);
        }
        for &(r, _, h) in &self.hosts {
            pools.add(2, self.region_nets[r], h, None);
        }
        for &(r, _, e) in &self.egress {
            pools.add(2, self.region_nets[r], e, None);
        }
        pools
    }

    /// Every node that runs a process, by the name users give it (`pop/paris`); the
    /// internet's route reflector when the plan has segments.
    fn nodes(&self, t: &Topology, reflector: bool) -> Vec<Node> {
        let named = |name: String, ns: usize| Node { name, ns };
        self.transits
            .iter()
            .enumerate()
            .map(|(p, &n)| named(format!("transit/{}", t.pops[p].name), n))
            .chain(self.routers.iter().map(|(_, name, n)| named(name.clone(), *n)))
            .chain(self.clients.iter().enumerate().map(|(g, &n)| named(format!("client/{}", t.clients[g].name), n)))
            .chain(self.pops.iter().enumerate().map(|(p, &n)| named(format!("pop/{}", t.pops[p].name), n)))
            .chain(self.clbs.iter().map(|&((r, i), n)| named(anyedge_topology::clb_name(&t.regions[r].name, i), n)))
            .chain(self.hosts.iter().map(|&(_, ip, n)| named(format!("backend/{ip}"), n)))
            .chain(self.controls.iter().map(|&(id, n)| named(format!("control/{id}"), n)))
            .chain(self.egress.iter().map(|(_, name, n)| named(name.clone(), *n)))
            .chain(reflector.then(|| named(REFLECTOR_NODE.into(), self.internet)))
            .collect()
    }
}

/// Every router of an AS-level internet but the POPs, with its node name:
/// `router/NETWORK/K`, its network's `K`th router (from 0).
pub fn router_names(net: &anyedge_topology::catchments::Internetwork) -> Vec<(usize, String)> {
    let g = net.graph();
    (0..g.ases())
        .map(anyedge_topology::routing::AsId)
        .filter(|&a| a != net.cdn())
        .flat_map(|a| {
            g.routers_of(a).iter().enumerate().map(move |(k, r)| (r.0, format!("router/{}/{k}", net.as_name(a))))
        })
        .collect()
}

/// The AS-level internet's links: one per eBGP session (a POP's are its `inet`
/// link, the first, and `uN`), a full mesh inside each network (`iN`, its iBGP), each
/// group on its access network's router at its place, and every router on the core
/// (`core`: the direct path, and replies to clients, which BGP does not carry).
fn as_internet_links(
    t: &Topology,
    pools: &mut LinkPools,
    core: usize,
    (clients, pops): (&[usize], &[usize]),
    router_ns: &std::collections::BTreeMap<usize, usize>,
) {
    let at = |r: usize| router_ns.get(&r).copied();
    use anyedge_topology::routing::{AsId, SessionId};
    let net = t.internet.ways.internetwork(t);
    let g = net.graph();
    let pop_of = |r: usize| (0..t.pops.len()).find(|&p| net.pop_router(p).0 == r);
    let mut pop_links = vec![0usize; t.pops.len()];
    for s in 0..g.sessions() {
        let session = g.session(SessionId(s));
        match (pop_of(session.a.0), at(session.a.0), at(session.b.0)) {
            (Some(p), _, Some(b)) => {
                let b_if = if pop_links[p] == 0 { "inet".to_string() } else { format!("u{}", pools.links.len()) };
                pop_links[p] += 1;
                pools.add(0, b, pops[p], Some(b_if));
            }
            (None, Some(a), Some(b)) => {
                let b_if = format!("s{}", pools.links.len());
                pools.add(0, a, b, Some(b_if));
            }
            _ => {}
        }
    }
    for a in (0..g.ases()).map(AsId).filter(|&a| a != net.cdn()) {
        let mine: Vec<usize> = g.routers_of(a).iter().filter_map(|r| at(r.0)).collect();
        if mine.len() > 1 {
            pools.segment(&mine);
        }
    }
    for (gr, &c) in clients.iter().enumerate() {
        if let Some(r) = at(net.group_router(gr).0) {
            pools.add(0, r, c, None);
        }
    }
    for r in (0..g.routers()).filter_map(at) {
        pools.add(0, core, r, Some("core".into()));
    }
}

/// Backend hosts of a topology: (region, IPv4 address), in file order (the numbering
/// their backbone ids follow).
pub fn backend_hosts(t: &Topology) -> Vec<(usize, Ipv4Addr)> {
    anyedge_topology::nodes::backend_hosts(t)
        .into_iter()
        .filter_map(|(ip, id)| match (ip, id) {
            (IpAddr::V4(ip), anyedge_ccn::NodeId::Backend { region, .. }) => Some((usize::from(region), ip)),
            _ => None,
        })
        .collect()
}

impl Plan {
    pub fn new(t: &Topology) -> Plan {
        let lab = sanitize(&t.name);
        let (namespaces, rooms) = Rooms::new(t, &lab);
        let pools = rooms.links(t);
        let nodes = rooms.nodes(t, !pools.segments.is_empty());
        let overflow = [0, 1, 2].map(|k| pools.counters[k].saturating_sub(POOL_LINKS_MAX[k]));
        Plan {
            lab,
            namespaces,
            links: pools.links,
            segments: pools.segments,
            overflow,
            nodes,
            internet_hosts: rooms.internet_hosts,
            group_sources: group_sources(t),
        }
    }

    /// The node that runs router `r`'s speaker (`router/NETWORK/K`), over an AS-level
    /// internet.
    pub fn router_node(&self, r: usize) -> Option<&str> {
        let ns = self.ns_index(&Role::Router(r))?;
        self.nodes.iter().find(|n| n.ns == ns).map(|n| n.name.as_str())
    }

    pub fn ns_index(&self, role: &Role) -> Option<usize> {
        self.namespaces.iter().position(|n| n.role == *role)
    }

    /// The address a namespace has on its link toward `router_role`.
    fn addr_toward(&self, ns: usize, router: usize) -> Option<Ipv4Addr> {
        self.links.iter().find(|l| l.b == ns && l.a == router).map(|l| l.b_addr)
    }

    /// The router's end of a namespace's link toward it (its gateway).
    pub fn gateway(&self, ns: usize, router: usize) -> Option<Ipv4Addr> {
        self.links.iter().find(|l| l.b == ns && l.a == router).map(|l| l.a_addr)
    }

    /// The IPv6 address a namespace has on its link toward `router`, and the router's end.
    pub fn addr6_toward(&self, ns: usize, router: usize) -> Option<(Ipv6Addr, Ipv6Addr)> {
        self.links.iter().find(|l| l.b == ns && l.a == router).map(|l| (l.b_addr6, l.a_addr6))
    }

    /// The router a client group or POP reaches the internet through (its transit).
    pub fn upstream(&self, ns: usize) -> Option<usize> {
        self.links.iter().find(|l| l.b == ns && l.b_if == "inet").map(|l| l.a)
    }

    pub fn client_addr6(&self, g: usize) -> Option<Ipv6Addr> {
        let ns = self.ns_index(&Role::Client(g))?;
        self.addr6_toward(ns, self.upstream(ns)?).map(|(a, _)| a)
    }

    pub fn pop_internet_addr6(&self, p: usize) -> Option<Ipv6Addr> {
        let ns = self.ns_index(&Role::Pop(p))?;
        self.addr6_toward(ns, self.upstream(ns)?).map(|(a, _)| a)
    }

    /// A CLB node's IPv6 address toward backends (probes, NAT64's other side).
    pub fn clb_inner_addr6(&self, region: usize, index: usize) -> Ipv6Addr {
        match anyedge_topology::nodes::ClbAddresses::of(region, index).address_v6 {
            Some(IpAddr::V6(a)) => a,
            _ => Ipv6Addr::UNSPECIFIED,
        }
    }

    pub fn client_addr(&self, g: usize) -> Option<Ipv4Addr> {
        let ns = self.ns_index(&Role::Client(g))?;
        self.addr_toward(ns, self.upstream(ns)?)
    }

    /// Every source address client group `g`'s packets may carry: its link addresses and,
    /// with an `address:` block, the block's first host, which it sends from.
    pub fn client_sources(&self, g: usize) -> Vec<IpAddr> {
        let own = self.group_sources.get(g).copied().flatten().map(|(_, a)| a);
        let v4 = self.client_addr(g).map(IpAddr::V4);
        let v6 = self.client_addr6(g).map(IpAddr::V6);
        own.into_iter().chain(v4).chain(v6).collect()
    }

    pub fn pop_internet_addr(&self, p: usize) -> Option<Ipv4Addr> {
        let ns = self.ns_index(&Role::Pop(p))?;
        self.addr_toward(ns, self.upstream(ns)?)
    }

    /// Namespace `ns`'s end of its link with `peer` (a BGP session's two addresses).
    pub fn link_between(&self, ns: usize, peer: usize) -> Option<LinkEnds> {
        self.links.iter().find_map(|l| {
            if l.a == ns && l.b == peer {
                Some(LinkEnds {
                    dev: l.a_if.clone(),
                    local: l.a_addr,
                    peer: l.b_addr,
                    local6: l.a_addr6,
                    peer6: l.b_addr6,
                })
            } else if l.b == ns && l.a == peer {
                Some(LinkEnds {
                    dev: l.b_if.clone(),
                    local: l.b_addr,
                    peer: l.a_addr,
                    local6: l.b_addr6,
                    peer6: l.a_addr6,
                })
            } else {
                None
            }
        })
    }

    /// Router namespace `ns`'s place on its network's segment, and the segment.
    pub fn port_of(&self, ns: usize) -> Option<(&Segment, &Port)> {
        self.segments.iter().find_map(|s| Some((s, s.ports.iter().find(|p| p.ns == ns)?)))
    }

    /// Router namespace `ns`'s end of its session with its network's reflector.
    pub fn to_reflector(&self, ns: usize) -> Option<LinkEnds> {
        let (s, me) = self.port_of(ns)?;
        Some(LinkEnds {
            dev: SEGMENT_DEV.to_string(),
            local: me.addr,
            peer: s.reflector,
            local6: me.addr6,
            peer6: s.reflector6,
        })
    }

    /// Whether every link and segment has addresses of its own: a pool has room for so
    /// many links, and the segments for so many networks of so many routers.
    pub fn address_room(&self) -> Result<(), &'static str> {
        if self.overflow.iter().any(|&o| o > 0) {
            return Err(
                "the lab has more links than its address pools hold (3,072 internet, 2,048 backbone, 2,048 region)",
            );
        }
        if self.segments.len() > SEGMENTS_MAX {
            return Err("the lab has more networks of several routers than it has segments (64)");
        }
        if self.segments.iter().any(|s| s.ports.len() > SEGMENT_PORTS_MAX) {
            return Err("a network has more routers than a lab's segment holds (62)");
        }
        Ok(())
    }

    /// Where a POP's tunnel endpoint listens.
    pub fn pop_tunnel(&self, p: usize) -> Option<SocketAddr> {
        let ns = self.ns_index(&Role::Pop(p))?;
        let a = self.addr_toward(ns, self.ns_index(&Role::Backbone)?)?;
        Some(SocketAddr::new(IpAddr::V4(a), TUNNEL_PORT))
    }

    /// Where a CLB node's tunnel endpoint (from POPs) listens.
    pub fn clb_tunnel(&self, region: usize, index: usize) -> Option<SocketAddr> {
        let ns = self.ns_index(&Role::Clb { region, index })?;
        let a = self.addr_toward(ns, self.ns_index(&Role::Backbone)?)?;
        Some(SocketAddr::new(IpAddr::V4(a), TUNNEL_PORT))
    }

    /// A control node's backbone address (Raft, the watch streams).
    pub fn control_addr(&self, id: u8) -> Option<Ipv4Addr> {
        let ns = self.ns_index(&Role::Control(id))?;
        self.addr_toward(ns, self.ns_index(&Role::Backbone)?)
    }

    /// Every control node's backbone address, control/1 first.
    pub fn control_addrs(&self) -> Vec<(u8, Ipv4Addr)> {
        self.namespaces
            .iter()
            .filter_map(|n| match n.role {
                Role::Control(id) => self.control_addr(id).map(|a| (id, a)),
                _ => None,
            })
            .collect()
    }

    /// A CLB node's address in its region: backends see it (health probes, its tunnel).
    pub fn clb_region_addr(&self, region: usize, index: usize) -> Option<Ipv4Addr> {
        let ns = self.ns_index(&Role::Clb { region, index })?;
        self.addr_toward(ns, self.ns_index(&Role::RegionNet(region))?)
    }

    /// The address a CLB node's core speaks from toward backends (health probes, SNAT):
    /// outside every link network, so backends answer it through their tunnel.
    pub fn clb_inner_addr(&self, region: usize, index: usize) -> Ipv4Addr {
        match anyedge_topology::nodes::ClbAddresses::of(region, index).address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// Where a backend host's tunnel endpoint listens.
    pub fn backend_tunnel(&self, ip: Ipv4Addr) -> Option<SocketAddr> {
        let (ns, region) = self.namespaces.iter().enumerate().find_map(|(i, n)| match n.role {
            Role::Backend { region, ip: h } if h == ip => Some((i, region)),
            _ => None,
        })?;
        let a = self.addr_toward(ns, self.ns_index(&Role::RegionNet(region))?)?;
        Some(SocketAddr::new(IpAddr::V4(a), BACKEND_PORT))
    }

    /// Where egress node `k` takes the CLB nodes' sealed packets and its internet hosts'
    /// replies (its region address).
    pub fn egress_tunnel(&self, k: usize) -> Option<SocketAddr> {
        let (ns, region) = self.namespaces.iter().enumerate().find_map(|(i, n)| match n.role {
            Role::Egress { region, k: e } if e == k => Some((i, region)),
            _ => None,
        })?;
        let a = self.addr_toward(ns, self.ns_index(&Role::RegionNet(region))?)?;
        Some(SocketAddr::new(IpAddr::V4(a), BACKEND_PORT))
    }

    /// The egress node that reaches internet backend host `ip`, if it is one.
    pub fn egress_of(&self, ip: Ipv4Addr) -> Option<usize> {
        self.internet_hosts.iter().find(|(h, _)| *h == ip).map(|&(_, k)| k)
    }

    /// Where a CLB node sends a backend's packets: its host's tunnel, or for a backend on
    /// the internet, its egress node.
    pub fn backend_leg(&self, ip: Ipv4Addr) -> Option<SocketAddr> {
        match self.egress_of(ip) {
            Some(k) => self.egress_tunnel(k),
            None => self.backend_tunnel(ip),
        }
    }

    /// A backend host's public address: the direct path (no VIP, no tunnel) reaches its
    /// servers there. It lies outside every link network — the internet routes it to the
    /// region's router, which routes it to the host — so no client reaches a tunnel or
    /// region address.
    pub fn backend_direct_addr(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        let k = self
            .namespaces
            .iter()
            .filter(|n| matches!(n.role, Role::Backend { .. }))
            .position(|n| matches!(n.role, Role::Backend { ip: h, .. } if h == ip))?;
        Some(Ipv4Addr::from(u32::from(DIRECT_NET.0) + 1 + k as u32))
    }

    /// The region router's address on its link to the internet's core.
    pub fn region_internet_addr(&self, region: usize) -> Option<Ipv4Addr> {
        let ns = self.ns_index(&Role::RegionNet(region))?;
        self.addr_toward(ns, self.ns_index(&Role::Internet)?)
    }

    /// The node named like a fault target (`pop/paris`, `clb/frankfurt/1`,
    /// `backend/198.19.20.1:7000` or `backend/198.19.20.1`, `client/rome`).
    pub fn node(&self, name: &str) -> Option<&Node> {
        let host_form = name.strip_prefix("backend/").and_then(|rest| rest.parse::<SocketAddr>().ok());
        let name = host_form.map_or(name.to_string(), |a| format!("backend/{}", a.ip()));
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Each client group's `address:` block and the host its namespace sends from (the
/// block's first, as the simulator's clients do).
fn group_sources(t: &Topology) -> Vec<Option<(anyedge_topology::Cidr, IpAddr)>> {
    t.clients.iter().map(|g| g.address.map(|c| (c, c.host(0)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Topology {
        anyedge_topology::parse_str("small.yaml", include_str!("../../topologies/small.yaml")).unwrap()
    }

    #[test]
    fn every_node_has_a_namespace_and_links_do_not_share_addresses() {
        let plan = Plan::new(&small());
        // Transits (one per POP), clients, POPs, CLB nodes, backend hosts.
        assert_eq!(plan.nodes.len(), 2 + 3 + 2 + 2 + 5);
        let mut addrs: Vec<Ipv4Addr> = plan.links.iter().flat_map(|l| [l.a_addr, l.b_addr]).collect();
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n);
        assert!(plan.namespaces.iter().all(|ns| ns.name.starts_with("small-europe-")));
        assert!(plan.node("backend/198.19.20.3:7000").is_some());
        assert!(plan.clb_tunnel(0, 1).is_some() && plan.pop_tunnel(1).is_some());
    }

    /// A default internet drawn for 4 POPs and 10 groups: 243 routers, the tier-1
    /// networks present at up to tens of places each (382 under the shape fitted before).
    fn drawn_internet() -> Topology {
        let spec = anyedge_topology::generate::Spec::drawn_internet("drawn", 4, 10);
        let text = anyedge_topology::generate::generate(&spec).unwrap();
        anyedge_topology::parse_str("big.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_default_internets_lab_gives_every_link_and_segment_its_own_addresses() {
        let t = drawn_internet();
        let plan = Plan::new(&t);
        let routers = plan.namespaces.iter().filter(|n| matches!(n.role, Role::Router(_))).count();
        assert!(routers > 200, "{routers} routers");
        let mut v4: Vec<Ipv4Addr> = plan.links.iter().flat_map(|l| [l.a_addr, l.b_addr]).collect();
        let mut v6: Vec<Ipv6Addr> = plan.links.iter().flat_map(|l| [l.a_addr6, l.b_addr6]).collect();
        v4.extend(plan.segments.iter().flat_map(|s| s.ports.iter().map(|m| m.addr).chain([s.reflector])));
        v6.extend(plan.segments.iter().flat_map(|s| s.ports.iter().map(|m| m.addr6).chain([s.reflector6])));
        let (n4, n6) = (v4.len(), v6.len());
        v4.sort();
        v4.dedup();
        v6.sort();
        v6.dedup();
        assert_eq!((v4.len(), v6.len()), (n4, n6), "an address used twice");
        let internet_v4 = |a: &Ipv4Addr| {
            (u32::from(*a) >> (32 - INTERNET_NET.1)) == (u32::from(INTERNET_NET.0) >> (32 - INTERNET_NET.1))
        };
        let inet_links = plan.links.iter().filter(|l| l.a_addr6.segments()[2] == 0);
        assert!(
            inet_links.clone().all(|l| internet_v4(&l.a_addr) && internet_v4(&l.b_addr)),
            "internet links stay in {INTERNET_NET:?}"
        );
        assert!(plan.segments.iter().flat_map(|s| &s.ports).all(|m| internet_v4(&m.addr)));
        // Routers of one network meet on one segment, not a link per pair.
        let big = plan.segments.iter().max_by_key(|s| s.ports.len()).expect("a segment");
        assert!(big.ports.len() > 10, "{} routers on the largest segment", big.ports.len());
        let (a, b) = (&big.ports[0], &big.ports[1]);
        let ends = plan.to_reflector(a.ns).expect("a router of a network of several reaches its reflector");
        assert_eq!((ends.dev.as_str(), ends.local, ends.peer), (SEGMENT_DEV, a.addr, big.reflector));
        assert!(plan.link_between(a.ns, b.ns).is_none(), "no link per pair of routers");
        let reflector = plan.node(REFLECTOR_NODE).expect("a reflector node");
        assert_eq!(plan.namespaces[reflector.ns].role, Role::Internet);
        assert_eq!(plan.address_room(), Ok(()));
        assert!(
            plan.segments.iter().flat_map(|s| &s.ports).all(|p| matches!(plan.namespaces[p.ns].role, Role::Router(_)))
        );
    }

    #[test]
    fn clients_hang_off_their_nearest_pops_transit_and_transits_peer_in_a_full_mesh() {
        let t = small();
        let plan = Plan::new(&t);
        let transit = |p| plan.ns_index(&Role::Transit(p)).unwrap();
        // london and rome are nearest paris, kyiv warsaw.
        for (g, p) in [(0, 0), (1, 0), (2, 1)] {
            assert_eq!(plan.upstream(plan.ns_index(&Role::Client(g)).unwrap()), Some(transit(p)));
        }
        assert_eq!(plan.upstream(plan.ns_index(&Role::Pop(1)).unwrap()), Some(transit(1)));
        assert!(plan.link_between(transit(0), transit(1)).is_some());
        let core = plan.ns_index(&Role::Internet).unwrap();
        assert!(plan.link_between(transit(0), core).is_some_and(|l| l.dev == "core"));
    }
}
