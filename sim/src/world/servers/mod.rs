//! The servers behind the CLB nodes: backend hosts (UDP echo and TCP/HTTP servers on
//! smoltcp, security groups bound to them, what each backend port saw), the links to
//! backends away from their region, and the egress nodes in front of internet backends
//! (`egress`). `Servers`' rows are private to this module; others read them through its
//! accessors and the world hands its methods the wire.

mod egress;

use crate::app;
use crate::world::events::Arrival;
use crate::world::events::Ev;
use crate::world::events::INTRA_REGION_NS;
use crate::world::events::OUTER_HEADER;
use anyedge_ccn::LinkOutcome;

use crate::world::ids::BackendId;
use crate::world::ids::ClbId;
use crate::world::ids::ClientId;
use crate::world::ids::HostId;
use crate::world::ids::Table;
use crate::world::wire::Wire;
use anyedge_ccn::ComponentRng;
use anyedge_ccn::Link;
use anyedge_proto::Transport;
use anyedge_proto::inner;
use anyedge_proto::seal::Kind;
use anyedge_region::clb::PROBE_PORTS;
use anyedge_region::security::Firewall;
use anyedge_region::security::Verdict;
use anyedge_region::tcp_stack::Stack;
use anyedge_region::tcp_stack::TcpStack;
use anyedge_region::tcp_stack::buffer_for;
use anyedge_topology::Site;
use anyedge_topology::Topology;
use anyedge_topology::TrafficKind;
use anyedge_topology::nodes::PeerLists;
use rustc_hash::FxHashMap;
use rustc_hash::FxHashSet;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::SocketAddr;

/// Half-open TCP connections a backend host holds (its SYN backlog, Linux's default
/// `somaxconn`): past it new SYNs are dropped and counted as `syn_backlog_full`. Open
/// connections do not count: a host holds as many of those as clients keep.
pub(in crate::world) const BACKEND_SYN_BACKLOG: usize = 4096;

#[derive(Default)]
pub(in crate::world) struct Serve {
    pub(in crate::world) header: Vec<u8>,
    pub(in crate::world) remaining_req: u64,
    pub(in crate::world) pending_resp: Vec<u8>,
    pub(in crate::world) resp_off: usize,
    /// The peer asked to close after this response (HTTP `Connection: close`).
    pub(in crate::world) close_after: bool,
}

impl Serve {
    /// No request being read, no response waiting to be sent.
    fn is_idle(&self) -> bool {
        self.header.is_empty() && self.remaining_req == 0 && self.resp_off == self.pending_resp.len()
    }

    /// Queues a response behind what is still unsent: moved in whole when nothing is
    /// waiting (no copy), appended otherwise.
    fn queue(&mut self, response: Vec<u8>) {
        self.pending_resp.drain(..self.resp_off);
        self.resp_off = 0;
        if self.pending_resp.is_empty() {
            self.pending_resp = response;
        } else {
            self.pending_resp.extend_from_slice(&response);
        }
    }
}

/// One server-side TCP connection of a backend: its own smoltcp stack, so serving one
/// connection never walks the others (TCP connections are independent anyway).
pub(in crate::world) struct BackendConn {
    /// Parked while no request is being read or answered.
    pub(in crate::world) stack: Stack,
    pub(in crate::world) handle: SocketHandle,
    pub(in crate::world) serve: Serve,
    pub(in crate::world) poll_at: Option<u64>,
    /// Still in the handshake (counted in its host's `half_open`).
    pub(in crate::world) half_open: bool,
    /// The CLB node that last forwarded the peer's packets: the way back (a backbone
    /// host's; an internet host's peers come from its egress node).
    pub(in crate::world) via: Option<ClbId>,
}

pub(in crate::world) struct BackendHost {
    pub(in crate::world) ip: IpAddr,
    /// Ports whose service is down: packets to them vanish.
    pub(in crate::world) down_ports: Vec<u16>,
    pub(in crate::world) tcp_ports: Vec<u16>,
    /// Remote endpoint → its connection.
    /// Boxed: a connection is ~600 bytes, and a table of them inline kept its empty
    /// slots that size too.
    pub(in crate::world) conns: FxHashMap<(IpAddr, u16), Box<BackendConn>>,
    /// How many of `conns` are still in the handshake (the SYN backlog's fill).
    pub(in crate::world) half_open: usize,
    /// Security groups bound to this instance.
    pub(in crate::world) firewall: Option<Firewall>,
    /// Its keys for the CLB nodes of the regions that bind it.
    pub(in crate::world) keys: anyedge_ccn::Keyring,
    /// Packets it refused, by reason.
    pub(in crate::world) drops: BTreeMap<&'static str, u64>,
    /// An internet host: the egress node (index into `Servers::egress_nodes`) it is reached by.
    pub(in crate::world) egress: Option<usize>,
    /// The last packet its security groups dropped: when, its source, and why.
    pub(in crate::world) denied: Option<(u64, IpAddr, String)>,
}

/// Per backend port, as the report shows it.
pub(in crate::world) struct BackendRecord {
    pub(in crate::world) region: usize,
    pub(in crate::world) group: String,
    pub(in crate::world) addr: SocketAddr,
    pub(in crate::world) weight: u8,
    pub(in crate::world) flows: std::collections::BTreeSet<(ClientId, usize)>,
    /// Flows it served to other ranks' clients, by path (`sim --mpi`, on rank 0: each
    /// rank counts its own clients' flows, so the sets are disjoint and counts add).
    pub(in crate::world) flows_elsewhere: [u64; 2],
    /// (when, healthy, why it went unhealthy when the world can tell).
    pub(in crate::world) health: Vec<(u64, bool, Option<String>)>,
    /// Every source address the backend saw on client traffic (the report sorts them,
    /// lists the lowest 16 and counts all).
    pub(in crate::world) addrs_seen: SeenAddrs,
}

/// The addresses a backend saw: clients' as a bit per client (a few KB that stay in cache
/// where a set of every address would miss it on most packets of a large world), any
/// other (a NAT's, say) in a set.
#[derive(Default)]
pub(in crate::world) struct SeenAddrs {
    clients: Vec<u64>,
    others: FxHashSet<IpAddr>,
}

impl SeenAddrs {
    fn insert_client(&mut self, c: ClientId) {
        let (word, bit) = (c.0 / 64, c.0 % 64);
        if word >= self.clients.len() {
            self.clients.resize(word + 1, 0);
        }
        self.clients[word] |= 1 << bit;
    }

    /// Every address seen, sorted, each once.
    pub(in crate::world) fn sorted(&self, addr_of: impl Fn(ClientId) -> Option<IpAddr>) -> Vec<IpAddr> {
        let ids = self.clients.iter().enumerate().flat_map(|(word, &bits)| {
            (0..64).filter(move |bit| bits & (1 << bit) != 0).map(move |bit| ClientId(word * 64 + bit))
        });
        let mut all: Vec<IpAddr> = ids.filter_map(addr_of).chain(self.others.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// How many client addresses a backend's report lists.
pub(in crate::world) const ADDRS_SEEN_MAX: usize = 16;

/// Reads request bytes and queues responses on one server-side connection.
/// HTTP clients it answered (as the server sees them) go to `http_clients`.
pub(in crate::world) fn serve_connection(
    s: &mut tcp::Socket<'static>,
    serve: &mut Serve,
    ip: IpAddr,
    http_clients: &mut Vec<IpAddr>,
) {
    while s.can_recv() {
        let mut chunk = [0u8; 4096];
        let n = s.recv_slice(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut data = &chunk[..n];
        while !data.is_empty() {
            let http = app::looks_like_http(&serve.header) || serve.header.is_empty() && app::looks_like_http(data);
            let took = match (serve.remaining_req, http) {
                (0, true) => http_request(s, serve, data, http_clients),
                (0, false) => tcp_request(s, serve, ip, data),
                (remaining, _) => {
                    let take = (remaining as usize).min(data.len());
                    serve.remaining_req -= take as u64;
                    Some(take)
                }
            };
            let Some(took) = took else { return };
            debug_assert!(took <= data.len());
            data = &data[took..];
        }
    }
    send_responses(s, serve);
}

/// The socket's two ends as the server sees them.
fn endpoints(s: &tcp::Socket<'static>) -> Option<(SocketAddr, SocketAddr)> {
    let remote = s.remote_endpoint().map(|e| SocketAddr::new(e.addr.into(), e.port))?;
    let local = s.local_endpoint().map(|e| SocketAddr::new(e.addr.into(), e.port))?;
    Some((remote, local))
}

/// HTTP: reads the head, answers it, skips any body. The bytes of `data` taken; none
/// when the connection is over (a head past the limit is aborted).
fn http_request(
    s: &mut tcp::Socket<'static>,
    serve: &mut Serve,
    data: &[u8],
    http_clients: &mut Vec<IpAddr>,
) -> Option<usize> {
    let before = serve.header.len();
    let take = (app::HTTP_HEAD_MAX - before).min(data.len());
    serve.header.extend_from_slice(&data[..take]);
    let Some(end) = app::http_head_end(&serve.header) else {
        if serve.header.len() >= app::HTTP_HEAD_MAX {
            s.abort();
            return None;
        }
        return Some(take);
    };
    let (remote, local) = endpoints(s)?;
    let answer = app::http_answer(&serve.header[..end], local, remote);
    http_clients.push(answer.client);
    serve.header.clear();
    serve.queue(answer.response);
    serve.remaining_req = answer.body_len;
    serve.close_after |= answer.close;
    Some(end - before)
}

/// The simulator's own TCP request: a fixed header naming the request and response
/// sizes, then the request's body. The bytes of `data` taken; none when the header is
/// bad (the connection is aborted).
fn tcp_request(s: &mut tcp::Socket<'static>, serve: &mut Serve, ip: IpAddr, data: &[u8]) -> Option<usize> {
    let take = (app::TCP_REQUEST_HEADER - serve.header.len()).min(data.len());
    serve.header.extend_from_slice(&data[..take]);
    if serve.header.len() < app::TCP_REQUEST_HEADER {
        return Some(take);
    }
    let Some((req_len, resp_len)) = app::parse_tcp_request_header(&serve.header) else {
        s.abort();
        return None;
    };
    serve.header.clear();
    let mut resp = vec![0u8; (resp_len as usize).clamp(app::ID_LEN, 16 << 20)];
    if let Some((remote, local)) = endpoints(s) {
        debug_assert_eq!(local.ip(), ip);
        app::stamp_identity(&mut resp, 0, local, remote);
    }
    serve.queue(resp);
    serve.remaining_req = u64::from(req_len) - app::TCP_REQUEST_HEADER as u64;
    Some(take)
}

/// Queued responses onto the socket; an idle connection gives its buffers back.
fn send_responses(s: &mut tcp::Socket<'static>, serve: &mut Serve) {
    while serve.resp_off < serve.pending_resp.len() && s.can_send() {
        let n = s.send_slice(&serve.pending_resp[serve.resp_off..]).unwrap_or(0);
        if n == 0 {
            break;
        }
        serve.resp_off += n;
    }
    if serve.resp_off == serve.pending_resp.len() {
        // Freed, not kept: an idle connection holds no response-sized buffer (thousands
        // of idle connections held 20 KB each).
        serve.pending_resp = Vec::new();
        serve.resp_off = 0;
        if serve.close_after {
            s.close();
        }
        // Request read and response acknowledged: the idle connection holds no buffers.
        if serve.header.is_empty() && serve.remaining_req == 0 {
            serve.header = Vec::new();
            s.release_idle_buffers();
        }
    }
}

/// The world's backend side, built whole from the topology: every backend host (one
/// per address, its ports, keys and security groups), the record of every backend port
/// the report shows, the links of hosts away from their region, and the egress nodes
/// (NAT gateways, routers) in front of internet backends.
pub(in crate::world) struct Servers {
    /// How the hosts' and egress nodes' envelopes are tagged.
    tags: anyedge_ccn::Tags,
    hosts: Table<HostId, BackendHost>,
    host_by_ip: FxHashMap<IpAddr, HostId>,
    backends: Table<BackendId, BackendRecord>,
    /// Backend address → its first record in `backends`.
    backend_index: FxHashMap<SocketAddr, BackendId>,
    /// (region, backend host) → [to the backend, back] for backends away from the region.
    site_links: FxHashMap<(usize, HostId), [Link; 2]>,
    /// NAT gateways and routers that carry internet backends.
    egress: Vec<egress::EgressNode>,
    /// Internet backend address → its egress node.
    egress_by_ip: FxHashMap<IpAddr, usize>,
    /// [request, response]: the largest of any TCP class (backends size sockets by them).
    tcp_messages_max: [u64; 2],
}

impl Servers {
    pub(in crate::world) fn hosts(&self) -> &Table<HostId, BackendHost> {
        &self.hosts
    }

    pub(in crate::world) fn backends(&self) -> &Table<BackendId, BackendRecord> {
        &self.backends
    }

    pub(in crate::world) fn egress_nodes(&self) -> &[egress::EgressNode] {
        &self.egress
    }

    /// Flows another rank's clients had backend row `row` serve, by path (`sim --mpi`).
    pub(in crate::world) fn absorb_flows(&mut self, row: usize, by_path: [u64; 2]) {
        if let Some(b) = self.backends.iter_mut().nth(row) {
            b.flows_elsewhere[0] += by_path[0];
            b.flows_elsewhere[1] += by_path[1];
        }
    }

    /// The backend host with address `ip`.
    pub(in crate::world) fn host_at(&self, ip: IpAddr) -> Option<HostId> {
        self.host_by_ip.get(&ip).copied()
    }

    /// The egress node in front of the internet backend with address `ip`.
    pub(in crate::world) fn egress_at(&self, ip: IpAddr) -> Option<usize> {
        self.egress_by_ip.get(&ip).copied()
    }

    /// Client `client`'s flow in slot `slot` reached backend `addr`: kept on the backend's
    /// record for the report.
    pub(in crate::world) fn record_flow(&mut self, addr: SocketAddr, client: ClientId, slot: usize) {
        if let Some(&b) = self.backend_index.get(&addr) {
            self.backends[b].flows.insert((client, slot));
        }
    }

    /// Region `region`'s health checks found backend `backend` healthy or not: its
    /// records there note when, and why not when the backend's security groups dropped
    /// the checks.
    pub(in crate::world) fn health_changed(
        &mut self,
        backend: SocketAddr,
        region: usize,
        healthy: bool,
        wire: &Wire<'_>,
    ) {
        let now = wire.now();
        let mine = |r: &BackendRecord| r.addr == backend && r.region == region;
        let since = self.backends.iter().filter(|r| mine(r)).find_map(|r| r.health.last().map(|h| h.0)).unwrap_or(0);
        let reason = if healthy { None } else { self.unhealthy_reason(backend, since, wire) };
        for rec in self.backends.iter_mut().filter(|r| mine(r)) {
            rec.health.push((now, healthy, reason.clone()));
        }
    }

    /// Takes from another partition's world what it ran: the hosts `host_owned` says, the
    /// egress nodes and backend health of the regions `region_owned` says, the addresses a
    /// backend saw where its host is owned; every world's flows (a union).
    pub(in crate::world) fn absorb(
        &mut self,
        other: &mut Servers,
        (host_owned, region_owned): (&dyn Fn(HostId) -> bool, &dyn Fn(usize) -> bool),
    ) {
        for h in self.hosts.ids().collect::<Vec<HostId>>() {
            if host_owned(h) {
                std::mem::swap(&mut self.hosts[h], &mut other.hosts[h]);
            }
        }
        for (mine, theirs) in self.egress.iter_mut().zip(other.egress.iter_mut()) {
            if region_owned(mine.region) {
                std::mem::swap(mine, theirs);
            }
        }
        for b in self.backends.ids().collect::<Vec<BackendId>>() {
            let (mine, theirs) = (&mut self.backends[b], &mut other.backends[b]);
            if region_owned(mine.region) {
                std::mem::swap(&mut mine.health, &mut theirs.health);
            }
            mine.flows.append(&mut theirs.flows);
            mine.flows_elsewhere[0] += theirs.flows_elsewhere[0];
            mine.flows_elsewhere[1] += theirs.flows_elsewhere[1];
            if self.host_by_ip.get(&mine.addr.ip()).is_some_and(|&h| host_owned(h)) {
                std::mem::swap(&mut mine.addrs_seen, &mut theirs.addrs_seen);
            }
        }
    }
}

impl Servers {
    /// Every region's backends in file order (a host's id is the order its address first
    /// appears), then the egress nodes.
    pub(in crate::world) fn build(t: &Topology, tags: anyedge_ccn::Tags, peers: &mut PeerLists) -> Servers {
        // Each host's backbone id, found once (not a walk of every host per host).
        let ids: FxHashMap<IpAddr, anyedge_ccn::NodeId> =
            anyedge_topology::nodes::backend_hosts(t).into_iter().collect();
        let mut servers = Servers {
            tags,
            hosts: Table::new(),
            host_by_ip: FxHashMap::default(),
            backends: Table::new(),
            backend_index: FxHashMap::default(),
            site_links: FxHashMap::default(),
            egress: Vec::new(),
            egress_by_ip: FxHashMap::default(),
            tcp_messages_max: t.traffic.iter().fold([0, 0], |[q, r], class| match class.kind {
                TrafficKind::Tcp { request, response, .. } => {
                    [q.max(u64::from(request)), r.max(u64::from(response).max(app::ID_LEN as u64))]
                }
                _ => [q, r],
            }),
        };
        for (r, region) in t.regions.iter().enumerate() {
            for group in &region.backend_groups {
                for b in &group.backends {
                    servers.backend_index.entry(b.addr).or_insert(servers.backends.next_id());
                    servers.backends.push(BackendRecord {
                        region: r,
                        group: group.name.clone(),
                        addr: b.addr,
                        weight: b.weight,
                        flows: Default::default(),
                        flows_elsewhere: [0; 2],
                        health: vec![(0, true, None)],
                        addrs_seen: Default::default(),
                    });
                    servers.ensure_host(t, b.addr, r, b.site, &ids, peers);
                }
            }
        }
        servers.build_egress(t, peers);
        debug_assert_eq!(servers.hosts.len(), servers.host_by_ip.len(), "one host per address");
        servers
    }

    /// Backend `addr`'s host answers on its port again (`up`), or stops answering.
    pub(in crate::world) fn port_up(&mut self, addr: SocketAddr, up: bool) {
        let Some(&h) = self.host_by_ip.get(&addr.ip()) else { return };
        let ports = &mut self.hosts[h].down_ports;
        if up {
            ports.retain(|&p| p != addr.port());
        } else {
            ports.push(addr.port());
        }
    }

    fn ensure_host(
        &mut self,
        t: &Topology,
        addr: SocketAddr,
        region: usize,
        site: Site,
        ids: &FxHashMap<IpAddr, anyedge_ccn::NodeId>,
        peers: &mut PeerLists,
    ) {
        let h = self.host(t, addr, ids, peers);
        let location = match site {
            // In the region, or on the internet behind an egress node (its own links).
            Site::Local | Site::Internet(_) => return,
            Site::Region(r) => t.regions[r].location,
            Site::Idc(i) => t.idcs[i].location,
        };
        if self.site_links.contains_key(&(region, h)) {
            return;
        }
        // A backend away from its region is reached over the backbone.
        let model = anyedge_topology::nodes::backbone_link(t, t.regions[region].location, location);
        let link = |dir: usize| {
            let rng = ComponentRng::new(t.seed, &format!("site/{region}/{}/{dir}", addr.ip()));
            Link::new(model, rng)
        };
        self.site_links.insert((region, h), [link(0), link(1)]);
    }

    /// The host at `addr`'s address, made on first sight; every backend port also
    /// listens on TCP, so TCP health checks find it.
    fn host(
        &mut self,
        t: &Topology,
        addr: SocketAddr,
        ids: &FxHashMap<IpAddr, anyedge_ccn::NodeId>,
        peers: &mut PeerLists,
    ) -> HostId {
        let h = match self.host_by_ip.get(&addr.ip()) {
            Some(&h) => h,
            None => {
                let h = self.hosts.next_id();
                let id = ids.get(&addr.ip()).copied();
                self.hosts.push(BackendHost::new(t, addr.ip(), id, self.tags, peers));
                self.host_by_ip.insert(addr.ip(), h);
                h
            }
        };
        if !self.hosts[h].tcp_ports.contains(&addr.port()) {
            self.hosts[h].tcp_ports.push(addr.port());
        }
        h
    }
}

impl BackendHost {
    /// A host at `ip` with its backbone keys and security groups, serving nothing yet.
    fn new(
        t: &Topology,
        ip: IpAddr,
        id: Option<anyedge_ccn::NodeId>,
        tags: anyedge_ccn::Tags,
        peers: &mut PeerLists,
    ) -> BackendHost {
        let id = id.unwrap_or(anyedge_ccn::NodeId::Backend { region: u16::MAX, host: 0 });
        let keys = crate::world::pki::backbone_auth(t, id, tags, peers).keyring(id, 0);
        let groups = anyedge_topology::nodes::backend_security_groups(t, ip);
        BackendHost {
            keys,
            drops: BTreeMap::new(),
            ip,
            down_ports: Vec::new(),
            tcp_ports: Vec::new(),
            conns: FxHashMap::default(),
            half_open: 0,
            firewall: (!groups.is_empty()).then(|| Firewall::new(groups)),
            egress: None,
            denied: None,
        }
    }
}

impl Servers {
    /// A packet of flow `flow` between CLB node `clb` and backend host `host`, inside the
    /// region or over the site's links when the backend lives elsewhere (another region,
    /// an IDC): `dir` 0 is the CLB's (its core sealed it), 1 the host's (sealed here with
    /// the host's keys).
    pub(in crate::world) fn send_clb_backend(
        &mut self,
        clb: ClbId,
        host: HostId,
        dir: usize,
        flow: u64,
        packet: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let packet = if dir == 0 {
            packet
        } else {
            let to = wire.places().clb_node_id(clb);
            match self.hosts[host].keys.seal(to, anyedge_proto::seal::Kind::Backend, &packet) {
                Some(sealed) => sealed,
                None => return,
            }
        };
        let to = if dir == 0 { Arrival::Backend { host, via_clb: clb } } else { Arrival::ClbFromBackend(clb) };
        let region = wire.places().clb_region(clb);
        let now = wire.now();
        let at = match self.site_links.get_mut(&(region, host)) {
            None => Some(now + INTRA_REGION_NS),
            Some(links) => match links[dir].transmit(now, packet.len() + OUTER_HEADER, flow) {
                LinkOutcome::Deliver(at) => Some(at),
                LinkOutcome::Lost | LinkOutcome::QueueFull => None,
            },
        };
        if let Some(at) = at {
            wire.record().delivered();
            let from = if dir == 0 { wire.clb_part(clb) } else { wire.host_part(host) };
            wire.deliver(at, from, to, packet);
        }
    }

    /// A sealed packet from CLB node `via_clb` reached backend host `host`.
    pub(in crate::world) fn backend_receive(
        &mut self,
        host: HostId,
        via_clb: ClbId,
        sealed: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let clb = wire.places().clb_node_id(via_clb);
        let h = &mut self.hosts[host];
        if h.egress.is_some() {
            // An internet host takes nothing from the backbone.
            return *h.drops.entry("not_sender").or_default() += 1;
        }
        let packet = match h.keys.open(Kind::Backend, &sealed) {
            Ok((from, bytes)) if from == clb => bytes.to_vec(),
            Ok(_) => return *h.drops.entry("not_sender").or_default() += 1,
            Err(e) => return *h.drops.entry(e.name()).or_default() += 1,
        };
        self.host_receive(host, Some(via_clb), packet, wire);
    }

    /// A packet reaches host `host`'s stack: from CLB node `via_clb` (unsealed), or from
    /// the internet (an internet host, from its egress node).
    pub(in crate::world) fn host_receive(
        &mut self,
        host: HostId,
        via_clb: Option<ClbId>,
        packet: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let Ok(info) = inner::parse(&packet) else { return };
        let h = &mut self.hosts[host];
        if info.key.dst != h.ip || h.down_ports.contains(&info.key.dst_port) {
            return;
        }
        if let Some(fw) = h.firewall.as_mut()
            && fw.inbound(&info.key) == Verdict::Drop
        {
            let why = fw.explain_drop(&info.key);
            h.denied = Some((wire.now(), info.key.src, why));
            return;
        }
        let from_clb = wire.places().clb_at(info.key.src).is_some() || self.is_gateway_public(info.key.src);
        let probe = from_clb && PROBE_PORTS.contains(&info.key.src_port);
        let new_flow = info.tcp.is_none_or(|f| f.syn && !f.ack);
        let port = SocketAddr::new(info.key.dst, info.key.dst_port);
        if !probe
            && new_flow
            && let Some(&b) = self.backend_index.get(&port)
        {
            // What the server would report as its peer: the TOA address when there is one.
            let peer = inner::read_toa(&packet).map_or(info.key.src, |(ip, _)| ip);
            self.note_client_seen(b, peer, wire);
        }
        match info.key.transport {
            Transport::Udp => self.host_udp(host, via_clb, &info, packet, wire),
            Transport::Tcp => self.host_tcp(host, via_clb, &info, packet, wire),
        }
    }

    /// A UDP datagram to a host's echo service: answered with the host's stamp.
    fn host_udp(
        &mut self,
        host: HostId,
        via_clb: Option<ClbId>,
        info: &inner::Inner,
        mut packet: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let payload_start = packet.len() - info.payload_len;
        let mut payload = packet.split_off(payload_start);
        let backend = SocketAddr::new(info.key.dst, info.key.dst_port);
        let client_seen = SocketAddr::new(info.key.src, info.key.src_port);
        app::stamp_identity(&mut payload, app::UDP_STAMP_LEN, backend, client_seen);
        let src = (info.key.dst, info.key.dst_port);
        let dst = (info.key.src, info.key.src_port);
        if let Some(reply) = inner::build_udp(src, dst, &payload) {
            self.host_send(host, via_clb, reply, wire);
        }
    }

    /// A TCP segment to a host: into its connection's stack, a SYN to a listening port
    /// opening one (within the SYN backlog); anything else is answered with a reset.
    fn host_tcp(
        &mut self,
        host: HostId,
        via_clb: Option<ClbId>,
        info: &inner::Inner,
        packet: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let h = &mut self.hosts[host];
        let remote = (info.key.src, info.key.src_port);
        let flags = info.tcp.unwrap_or_default();
        if !h.conns.contains_key(&remote) {
            if h.half_open >= BACKEND_SYN_BACKLOG && flags.syn && !flags.ack {
                return *h.drops.entry("syn_backlog_full").or_default() += 1;
            }
            if !(flags.syn && !flags.ack && h.tcp_ports.contains(&info.key.dst_port)) {
                // No connection and no listener for it: the host answers RST.
                if let Some(rst) = inner::tcp_reset_for(&packet) {
                    self.host_send(host, via_clb, rst, wire);
                }
                return;
            }
            let conn = self.backend_listen(host, remote, info.key.dst_port, wire);
            let h = &mut self.hosts[host];
            h.half_open += 1;
            h.conns.insert(remote, conn);
        }
        let h = &mut self.hosts[host];
        if let Some(conn) = h.conns.get_mut(&remote) {
            conn.via = via_clb.or(conn.via);
            conn.stack.live(&[h.ip]).receive(packet);
        }
        self.backend_tcp_service(host, remote, wire);
    }

    /// A new server-side connection of host `host` for `remote`, listening on `port`.
    fn backend_listen(&self, host: HostId, remote: (IpAddr, u16), port: u16, wire: &Wire<'_>) -> Box<BackendConn> {
        let ip = self.hosts[host].ip;
        let seed = ComponentRng::new(wire.t().seed, &format!("backend/{ip}/{remote:?}")).next_u64();
        let mut stack = TcpStack::new(ip, seed, wire.now());
        // Requests in, responses out: each fits whole (the largest of any class).
        let [request, response] = self.tcp_messages_max;
        let handle = stack.new_socket_sized(buffer_for(request), buffer_for(response));
        let socket = stack.socket(handle);
        // Like a server with TCP_NODELAY: a response's tail is not held back.
        socket.set_nagle_enabled(false);
        // Half-open or silent peers are given up on, as a kernel would.
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(10)));
        let _ = socket.listen(port);
        let stack = Stack::new(stack);
        Box::new(BackendConn { stack, handle, serve: Serve::default(), poll_at: None, half_open: true, via: None })
    }

    /// A packet host `host` sends: an internet host's all go to its egress node over the
    /// internet; a backbone host's back through CLB node `via` (sealed).
    pub(in crate::world) fn host_send(
        &mut self,
        host: HostId,
        via: Option<ClbId>,
        packet: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let flow = || inner::parse(&packet).map_or(0, |i| u64::from(i.key.flow_hash()));
        match (self.hosts[host].egress, via) {
            (Some(e), _) => {
                let flow = flow();
                self.internet_hop(e, host, 1, flow, packet, wire);
            }
            (None, Some(c)) => {
                let flow = flow();
                self.send_clb_backend(c, host, 1, flow, packet, wire)
            }
            (None, None) => {}
        }
    }

    /// Why backend `addr`'s health checks failed, when its host's security groups dropped
    /// checks since `since`: the rule, and for a NAT gateway's address, whose it is.
    pub(in crate::world) fn unhealthy_reason(&self, addr: SocketAddr, since: u64, wire: &Wire<'_>) -> Option<String> {
        let &host = self.host_by_ip.get(&addr.ip())?;
        let (at, src, why) = self.hosts[host].denied.as_ref()?;
        let checker = wire.places().clb_at(*src).is_some() || self.is_gateway_public(*src);
        if *at < since || !checker {
            return None;
        }
        let whose = match self.egress.iter().find(|e| e.public == Some(*src)) {
            Some(e) => format!(" — the public address of {} that health checks and traffic come from", e.name),
            None => " — the CLB node's address that health checks come from".to_string(),
        };
        Some(format!("health checks dropped: {why}{whose}; allow it"))
    }

    pub(in crate::world) fn note_client_seen(&mut self, backend: BackendId, client: IpAddr, wire: &Wire<'_>) {
        // Every distinct client is kept (the report lists the first 16 and counts them all).
        match wire.places().client_at(client) {
            Some(c) => self.backends[backend].addrs_seen.insert_client(c),
            None => {
                self.backends[backend].addrs_seen.others.insert(client);
            }
        }
    }

    /// A backend connection's poll, when it is the one last armed.
    pub(in crate::world) fn backend_tcp_poll(&mut self, host: HostId, remote: (IpAddr, u16), wire: &mut Wire<'_>) {
        let now = wire.now();
        if let Some(conn) = self.hosts[host].conns.get_mut(&remote)
            && conn.poll_at == Some(now)
        {
            conn.poll_at = None;
            self.backend_tcp_service(host, remote, wire);
        }
    }

    /// Serves one TCP connection: read requests, answer with the response size asked for.
    pub(in crate::world) fn backend_tcp_service(&mut self, host: HostId, remote: (IpAddr, u16), wire: &mut Wire<'_>) {
        let now = wire.now();
        let h = &mut self.hosts[host];
        let ip = h.ip;
        let Some(conn) = h.conns.get_mut(&remote) else { return };
        let stack = conn.stack.live(&[ip]);
        stack.poll(now);
        let s = stack.socket(conn.handle);
        let mut http_clients = Vec::new();
        if !matches!(s.state(), tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed) {
            serve_connection(s, &mut conn.serve, ip, &mut http_clients);
            if s.state() == tcp::State::CloseWait && conn.serve.pending_resp.len() == conn.serve.resp_off {
                s.close();
            }
        }
        stack.poll(now);
        let out: Vec<Vec<u8>> = stack.drain_tx().collect();
        let local_port = stack.socket(conn.handle).local_endpoint().map(|e| e.port);
        let via = conn.via;
        // Back to Listen (a reset handshake, e.g. a health probe) or done: forget it.
        let state = stack.socket(conn.handle).state();
        let finished = matches!(state, tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait);
        let next = if finished { None } else { stack.poll_at_ns(now) };
        // Between requests a kept-alive connection is a few hundred bytes: its stack parks.
        if !finished && conn.serve.is_idle() {
            conn.stack.park_if_idle();
        }
        if conn.half_open && (finished || state != tcp::State::SynReceived) {
            conn.half_open = false;
            h.half_open -= 1;
        }
        if finished {
            h.conns.remove(&remote);
        }
        if let Some(&b) = local_port.and_then(|p| self.backend_index.get(&SocketAddr::new(ip, p))) {
            for client in http_clients {
                self.note_client_seen(b, client, wire);
            }
        }
        for packet in out {
            let Ok(info) = inner::parse(&packet) else { continue };
            let via = match wire.places().clb_at(info.key.dst) {
                Some(c) => Some(c),
                // Every packet a connection sends goes to its one peer.
                None => via,
            };
            self.host_send(host, via, packet, wire);
        }
        if let Some(at) = next {
            let at = at.max(now);
            if let Some(conn) = self.hosts[host].conns.get_mut(&remote)
                && conn.poll_at.is_none_or(|t| at < t)
            {
                conn.poll_at = Some(at);
                wire.schedule(at, Ev::BackendTcpPoll { host, remote });
            }
        }
    }
}

impl Servers {
    /// One egress node per NAT gateway or router that carries a backend, with its links
    /// to each host; each internet backend's host knows its way out.
    pub(in crate::world) fn build_egress(&mut self, t: &Topology, peers: &mut anyedge_topology::nodes::PeerLists) {
        for (k, (r, egress, backends)) in anyedge_topology::nodes::egress_nodes(t).into_iter().enumerate() {
            let auth = |me| crate::world::pki::backbone_auth(t, me, self.tags, peers);
            let Some(config) = anyedge_topology::nodes::gateway_config(t, k, auth) else { continue };
            let name = anyedge_topology::nodes::egress_name(t, r, egress);
            let mut links = std::collections::HashMap::new();
            for ip in &backends {
                let Some(&host) = self.host_by_ip.get(ip) else { continue };
                self.hosts[host].egress = Some(k);
                self.egress_by_ip.insert(*ip, k);
                let model = anyedge_topology::nodes::internet_hop(t);
                let link = |dir: usize| {
                    let rng = ComponentRng::new(t.seed, &format!("{name}/{ip}/{dir}"));
                    Link::new(model, rng)
                };
                links.insert(host, [link(0), link(1)]);
            }
            self.egress.push(egress::EgressNode {
                public: config.public,
                core: anyedge_region::gateway::Gateway::new(config, 0),
                region: r,
                name,
                links,
                drops: BTreeMap::new(),
            });
        }
    }
}
