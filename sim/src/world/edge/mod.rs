//! The client side: client groups and their clients, built whole with their first
//! requests scheduled, and everything they do — send over UDP, TCP and QUIC, take replies
//! and record them, hear BGP, migrate. `Edge`'s rows are private to this module; its
//! files (`clients`, `quic_client`) are the methods that change them, and the world hands
//! them an `EdgeCx`: the wire, each traffic class's facts, the clients' TLS and QUIC
//! settings and the backends' record of which flows reached them.

mod clients;
mod quic_client;
mod rows;

use crate::SimError;
use crate::world::classes::ClassInfo;
use crate::world::client::Client;
use crate::world::client::ClientTcp;
use crate::world::client::Group;
use crate::world::client::GroupVip;
use crate::world::client::{BgpChoices, PopOrder};
use crate::world::edge::rows::ClientRows;
use crate::world::events::Ev;
use crate::world::flows::Flow;
use crate::world::flows::TcpFlow;
use crate::world::ids::AddrRuns;
use crate::world::ids::ClientAddrs;
use crate::world::ids::ClientId;
use crate::world::ids::PopId;
use crate::world::pki::Pki;
use crate::world::quic_flow::QuicFlow;
use crate::world::servers::Servers;
use crate::world::wire::Wire;
use anyedge_ccn::ComponentRng;
use anyedge_ccn::EventQueue;
use anyedge_ccn::geo::fiber_delay_ns;
use anyedge_region::tcp_stack::Stack;
use anyedge_region::tcp_stack::TcpStack;
use anyedge_topology::Topology;
use anyedge_topology::TrafficKind;
use std::net::IpAddr;
use std::sync::Arc;

/// The addresses clients without an `address:` block get, in order: their pool
/// (`clients_block:`, or 198.18.64.1 up to 198.18.255.253), skipping the groups' own
/// blocks and VIP and backend addresses inside it. Linear in the pool's stretch used: the
/// groups' blocks are stepped over as ranges, not searched per address.
fn default_pool_hosts(t: &Topology) -> impl Iterator<Item = IpAddr> + '_ {
    let pool = t.client_pool();
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => i128::from(u32::from(a)),
        IpAddr::V6(_) => -1,
    };
    // Host i of the pool is its network address + 1 + i.
    let first_host = v4(pool.block.network()) + 1;
    let end = pool.end as i128;
    // Groups' own IPv4 blocks as host-index ranges of the pool [from, to), sorted.
    let mut skip: Vec<(u128, u128)> = t
        .clients
        .iter()
        .filter_map(|g| g.address)
        .filter(|c| c.addr.is_ipv4())
        .filter_map(|c| {
            let from = v4(c.network()) - first_host;
            let to = from + c.span() as i128;
            let (from, to) = (from.clamp(0, end), to.clamp(0, end));
            (to > from).then_some((from as u128, to as u128))
        })
        .collect();
    skip.sort_unstable();
    let reserved: std::collections::HashSet<IpAddr> = t
        .vips
        .iter()
        .map(|v| IpAddr::V4(v.ipv4))
        .chain(
            t.regions.iter().flat_map(|r| r.backend_groups.iter().flat_map(|g| g.backends.iter().map(|b| b.addr.ip()))),
        )
        .collect();
    let mut i = pool.first;
    let mut next_skip = 0;
    std::iter::from_fn(move || {
        loop {
            while let Some(&(from, to)) = skip.get(next_skip) {
                if to <= i {
                    next_skip += 1;
                } else if from <= i {
                    i = to;
                    next_skip += 1;
                } else {
                    break;
                }
            }
            if i >= pool.end {
                return None;
            }
            let a = pool.block.host(i);
            i += 1;
            if !reserved.contains(&a) {
                return Some(a);
            }
        }
    })
}

/// What the client side may touch: the wire, each traffic class's facts, the clients'
/// TLS and QUIC settings, and the backends' record of which flows reached them.
pub(in crate::world) struct EdgeCx<'a, 't> {
    pub(in crate::world) wire: &'a mut Wire<'t>,
    pub(in crate::world) classes: &'a [ClassInfo],
    pub(in crate::world) pki: &'a Pki,
    pub(in crate::world) servers: &'a mut Servers,
}

/// Client groups and their clients, built whole with their first requests scheduled.
pub(in crate::world) struct Edge {
    /// The rows of the clients this world runs.
    clients: ClientRows,
    /// Every client's address, also of those another world runs.
    addrs: ClientAddrs,
    groups: Vec<Group>,
    /// Each group's first client (groups' clients are consecutive).
    group_start: Vec<usize>,
}

impl Edge {
    /// Only groups `mine` says get rows, stacks and first requests (the rest only their
    /// addresses). With the clients' addresses, for the world's directory.
    pub(in crate::world) fn build(
        t: &Topology,
        q: &mut EventQueue<Ev>,
        mine: &dyn Fn(usize) -> bool,
    ) -> Result<(Edge, AddrRuns), SimError> {
        let total = t.clients.iter().map(|g| g.count as usize).sum();
        let held = t.clients.iter().enumerate().filter(|&(g, _)| mine(g)).map(|(_, g)| g.count as usize).sum();
        let mut edge = Edge {
            clients: ClientRows::with_capacity(total, held),
            addrs: ClientAddrs::default(),
            groups: {
                let mut orders = Orders {
                    by_attach: Default::default(),
                    attacher: anyedge_topology::bgp::Attacher::new(t),
                    bgp: t.internet.has_ases().then(Default::default),
                };
                (0..t.clients.len()).map(|g| Group::new(t, g, &mut orders)).collect()
            },
            group_start: Vec::with_capacity(t.clients.len()),
        };
        let mut pool = default_pool_hosts(t);
        let mut next = 0;
        for (g, group) in t.clients.iter().enumerate() {
            edge.group_start.push(next);
            let mut rng = ComponentRng::new(t.seed, &format!("clients/{}", group.name));
            let live = mine(g);
            for i in 0..group.count {
                let c = ClientId(next);
                next += 1;
                let addr = match group.address {
                    Some(cidr) => cidr.host(u128::from(i)),
                    None => pool.next().ok_or_else(|| pool_exhausted(t))?,
                };
                edge.addrs.push(c, addr);
                if !live {
                    continue;
                }
                edge.clients.insert(c, Client::new(t, g, c, addr, &mut rng));
                for (k, &class) in group.traffic.iter().enumerate() {
                    let (start, ev) = first_request(&t.traffic[class].kind, c, k, &mut rng);
                    q.schedule(start, ev);
                }
            }
        }
        let by_addr = AddrRuns::of_clients(&edge.addrs);
        debug_assert_eq!(edge.group_start.len(), edge.groups.len());
        Ok((edge, by_addr))
    }
}

/// Why clients without an `address:` block found no address.
fn pool_exhausted(t: &Topology) -> SimError {
    let wanted: u64 = t.clients.iter().filter(|g| g.address.is_none()).map(|g| u64::from(g.count)).sum();
    let (first, last) = t.client_pool().bounds();
    SimError(format!(
        "{wanted} clients without `address:` do not fit their pool {first}–{last} beside the groups' own blocks: set `clients_block:` to a larger block or give groups `address:` blocks outside it"
    ))
}

/// When a client's class `k` first sends (a seeded phase within its period), and the event.
fn first_request(kind: &TrafficKind, client: ClientId, k: usize, rng: &mut ComponentRng) -> (u64, Ev) {
    let period = match *kind {
        TrafficKind::Udp { interval_ns, .. } => interval_ns,
        TrafficKind::Tcp { requests_per_s, .. } => (1e9 / requests_per_s) as u64,
        TrafficKind::SynFlood { rate_per_s } => (1e9 / rate_per_s) as u64,
        TrafficKind::Quic { requests_per_s, .. } => (1e9 / requests_per_s) as u64,
    };
    let start = rng.below(period.max(1));
    let ev = match kind {
        TrafficKind::Udp { .. } => Ev::UdpSend { client, k },
        TrafficKind::Tcp { .. } => Ev::TcpIssue { client, k },
        TrafficKind::SynFlood { .. } => Ev::FloodSend { client, k },
        TrafficKind::Quic { .. } => Ev::QuicIssue { client, k },
    };
    (start, ev)
}

/// POP preference orders shared between groups: groups that attach at the same POP
/// (BGP's selection at their transit) and talk to the same VIP share one order.
struct Orders<'t> {
    by_attach: std::collections::HashMap<(usize, usize), Arc<PopOrder>>,
    /// Where each group attaches (BGP's nearest POP), asked of the model for few POPs.
    attacher: anyedge_topology::bgp::Attacher<'t>,
    /// Over the file's AS-level internet: BGP's catchments, shared by every group.
    bgp: Option<Arc<BgpChoices>>,
}

impl Group {
    /// Group `g`'s POP preference for each VIP it talks to (none for the others), its
    /// first route, and the round trips no reply can beat.
    fn new(t: &Topology, g: usize, orders: &mut Orders) -> Group {
        let location = t.clients[g].location;
        let used: std::collections::BTreeSet<usize> = t.clients[g].traffic.iter().map(|&k| t.traffic[k].vip).collect();
        let attach = match (&t.clients[g].catchment, &orders.bgp) {
            (None, None) => orders.attacher.attach(g),
            _ => None,
        };
        let vips = used
            .into_iter()
            .map(|v| {
                let order = match (&orders.bgp, attach) {
                    (Some(choices), _) => Arc::new(PopOrder::bgp(t, choices.clone(), g, v)),
                    (None, Some(at)) => orders
                        .by_attach
                        .entry((at, v))
                        .or_insert_with(|| Arc::new(PopOrder::attached(t, at, v)))
                        .clone(),
                    (None, None) => {
                        let whole = t.pop_order_attached(g, v, None).into_iter().map(PopId).collect::<Arc<[PopId]>>();
                        Arc::new(PopOrder::whole(whole))
                    }
                };
                let vip = &t.vips[v];
                let nearest = orders.attacher.nearest_by_great_circle(location, &vip.pops);
                let to_pop = nearest.iter().map(|&p| fiber_delay_ns(location, t.pops[p].location, 1.0)).min();
                let to_region = fiber_delay_ns(location, t.regions[vip.home].location, 1.0);
                let floor_ns = [2 * to_pop.unwrap_or(0), 2 * to_region];
                GroupVip { vip: v, route: order.first(), heading: order.first(), order, floor_ns }
            })
            .collect();
        let hears_at = if orders.bgp.is_some() { None } else { orders.attacher.attach(g).map(PopId) };
        Group { vips, hears_at }
    }
}

impl Client {
    /// A client without flows or stacks: the place a row moved out of leaves.
    pub(in crate::world) fn empty(g: usize, addr: IpAddr) -> Client {
        Client { group: g, addr, flows: Box::default(), tcp: None, rng: None, quic_flows: Box::default() }
    }

    /// Client `c` of group `g` at `addr`: a TCP stack when a class speaks TCP, a QUIC
    /// host per QUIC slot, its own draws when it floods.
    fn new(t: &Topology, g: usize, c: ClientId, addr: IpAddr, rng: &mut ComponentRng) -> Client {
        let group = &t.clients[g];
        let kinds = || group.traffic.iter().map(|&k| &t.traffic[k].kind);
        let has_tcp = kinds().any(|k| matches!(k, TrafficKind::Tcp { .. }));
        let stack = has_tcp.then(|| Stack::new(TcpStack::new(addr, rng.next_u64(), 0)));
        let slots = group.traffic.len() * 2;
        let is_tcp = |slot: usize| matches!(t.traffic[group.traffic[slot / 2]].kind, TrafficKind::Tcp { .. });
        let mut flows: Vec<Flow> = (0..slots).map(|_| Flow::default()).collect();
        let mut tcp_flows = Vec::with_capacity((0..slots).filter(|&slot| is_tcp(slot)).count());
        for (_, flow) in flows.iter_mut().enumerate().filter(|&(slot, _)| is_tcp(slot)) {
            flow.tcp = u16::try_from(tcp_flows.len()).ok();
            tcp_flows.push(TcpFlow::default());
        }
        let quic_flow = |slot: usize| {
            let class = &t.traffic[group.traffic[slot / 2]];
            matches!(class.kind, TrafficKind::Quic { .. }).then(|| {
                let seed = ComponentRng::new(t.seed, &format!("quic/{c}/{slot}")).next_u64();
                Box::new(QuicFlow::new(anyedge_region::quic::QuicHost::client(seed)))
            })
        };
        let tcp = stack.map(|stack| Box::new(ClientTcp { stack, flows: tcp_flows.into_boxed_slice(), poll_at: None }));
        Client {
            group: g,
            addr,
            flows: flows.into_boxed_slice(),
            tcp,
            // Only a flooding client draws: the rest are smaller without one.
            rng: kinds()
                .any(|k| matches!(k, TrafficKind::SynFlood { .. }))
                .then(|| Box::new(ComponentRng::new(t.seed, &format!("client/{c}")))),
            // A slot each when a class speaks QUIC; nothing for the rest.
            quic_flows: if kinds().any(|k| matches!(k, TrafficKind::Quic { .. })) {
                (0..slots).map(quic_flow).collect()
            } else {
                Box::default()
            },
        }
    }
}
