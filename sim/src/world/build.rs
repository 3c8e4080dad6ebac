//! Building the world from a topology: links, POP and CLB cores, backend hosts, client
//! groups and their clients, and the first events.

use super::*;

/// The default pool clients without an `address` block draw from: 198.18.64.1 up to
/// 198.18.255.254, clear of VIPs (198.18.0.x) and CLB nodes (198.18.32.x).
pub(super) fn default_pool() -> (Cidr, u128) {
    (Cidr { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), prefix: 16 }, 64 * 256)
}

/// The addresses clients without an `address:` block get, in order: the default pool
/// up to 198.18.255.253 (.254 is the hosts' default gateway, .255 broadcast), skipping the
/// groups' own blocks and VIP and backend addresses inside it.
fn default_pool_hosts(t: &Topology) -> impl Iterator<Item = IpAddr> + '_ {
    let (pool, first) = default_pool();
    let explicit: Vec<Cidr> = t.clients.iter().filter_map(|g| g.address).collect();
    let reserved: std::collections::HashSet<IpAddr> = t
        .vips
        .iter()
        .map(|v| IpAddr::V4(v.ipv4))
        .chain(
            t.regions.iter().flat_map(|r| r.backend_groups.iter().flat_map(|g| g.backends.iter().map(|b| b.addr.ip()))),
        )
        .collect();
    // host(i) is the network address + 1 + i.
    (first..pool.span() - 3)
        .map(move |i| pool.host(i))
        .filter(move |a| !explicit.iter().any(|e| e.contains(*a)) && !reserved.contains(a))
}

/// The protocol of the TCP listener a traffic class reaches.
pub(super) fn class_listener(t: &Topology, class: &anyedge_topology::TrafficClass) -> Option<ListenerProtocol> {
    let tcp = class.transport() == Transport::Tcp;
    t.vips[class.vip]
        .listeners
        .iter()
        .find(|l| l.port == class.port && (l.protocol.transport() == Transport::Tcp) == tcp)
        .map(|l| l.protocol)
}

/// The backend ports a traffic class may be answered by: those its listener binds.
pub(super) fn class_backends(t: &Topology, class: &anyedge_topology::TrafficClass) -> Vec<SocketAddr> {
    let tcp = class.transport() == Transport::Tcp;
    let vip = &t.vips[class.vip];
    let listener =
        vip.listeners.iter().find(|l| l.port == class.port && (l.protocol.transport() == Transport::Tcp) == tcp);
    let group = listener.map(|l| &t.regions[vip.home].backend_groups[l.backend_group]);
    group.map(|g| g.backends.iter().map(|b| b.addr).collect()).unwrap_or_default()
}

impl<'t> World<'t> {
    pub fn new(t: &'t Topology) -> Result<World<'t>, SimError> {
        let total: u64 = t.clients.iter().map(|c| u64::from(c.count)).sum();
        if total > anyedge_topology::CLIENTS_MAX {
            let most = anyedge_topology::CLIENTS_MAX;
            return Err(SimError(format!("{total} clients: the simulator addresses at most {most}")));
        }
        if let Some(g) = t.clients.iter().find(|g| g.traffic.len() * 2 > SLOTS_MAX) {
            return Err(SimError(format!("client group `{}` has more than {} traffic classes", g.name, SLOTS_MAX / 2)));
        }
        let seed = t.seed;
        let (np, nr, ng) = (t.pops.len(), t.regions.len(), t.clients.len());
        let mut inet_pop = Vec::with_capacity(ng * np * 2);
        for g in 0..ng {
            for p in 0..np {
                let model = anyedge_topology::nodes::access_link(t, g, anyedge_topology::InternetEnd::Pop(p));
                for dir in 0..2 {
                    let rng = ComponentRng::new(seed, &format!("inet/{g}/pop/{p}/{dir}"));
                    inet_pop.push(Link::new(model, rng));
                }
            }
        }
        let mut inet_direct = Vec::with_capacity(ng * nr * 2);
        for g in 0..ng {
            for r in 0..nr {
                let model = anyedge_topology::nodes::access_link(t, g, anyedge_topology::InternetEnd::Region(r));
                for dir in 0..2 {
                    let rng = ComponentRng::new(seed, &format!("inet/{g}/region/{r}/{dir}"));
                    inet_direct.push(Link::new(model, rng));
                }
            }
        }
        let mut backbone = Vec::with_capacity(np * nr * 2);
        for p in 0..np {
            for r in 0..nr {
                let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[r].location);
                // A fault may set a lower delay than the link's: the link is told.
                let floor = t
                    .faults
                    .iter()
                    .filter_map(|f| match &f.action {
                        FaultAction::Link(lo) if lo.pop == p && lo.region == r => lo.delay_ns,
                        _ => None,
                    })
                    .fold(model.impairment.delay_ns, u64::min);
                for dir in 0..2 {
                    let rng = ComponentRng::new(seed, &format!("backbone/{p}/{r}/{dir}"));
                    backbone.push(Link::new(model, rng).with_delay_floor(floor));
                }
            }
        }
        let mut w = World {
            t,
            q: EventQueue::new(),
            end_ns: t.duration_ns + DRAIN_NS,
            clients: Table::new(),
            groups: Vec::new(),
            pops: Table::new(),
            clbs: Table::new(),
            clb_base: Vec::new(),
            clb_by_addr: FxHashMap::default(),
            hosts: Table::new(),
            host_by_ip: FxHashMap::default(),
            inet_pop,
            inet_direct,
            cid_ciphers: {
                let secret = anyedge_ccn::BackboneSecret::from_seed(t.seed);
                (0..t.regions.len() as u16).map(|r| anyedge_ccn::CidCipher::new(&secret.cid_key(r))).collect()
            },
            backbone,
            hist: Vec::new(),
            samples: Vec::new(),
            trackers: Vec::new(),
            backends: Table::new(),
            backend_index: FxHashMap::default(),
            packets: 0,
            violations: Vec::new(),
            unbound: Vec::new(),
            client_by_addr: AddrRuns::default(),
            group_start: Vec::new(),
            class_backends: t.traffic.iter().map(|c| class_backends(t, c)).collect(),
            last_reply_ns: t.clients.iter().map(|g| vec![None; g.traffic.len()]).collect(),
            class_http: t.traffic.iter().map(|c| class_listener(t, c).is_some_and(|p| p.is_layer7())).collect(),
            class_tls: t.traffic.iter().map(|c| class_listener(t, c).is_some_and(|p| p.has_tls())).collect(),
            vip_identity: None,
            tls_client: None,
            quic_client: None,
            site_links: FxHashMap::default(),
            retired_sg: t.security_groups.iter().map(|d| vec![RuleCounters::default(); d.group.rules.len()]).collect(),
            control: None,
            weights_set: Vec::new(),
            probers: None,
            egress: Vec::new(),
            egress_by_ip: FxHashMap::default(),
            capture: None,
            tcp_messages_max: t.traffic.iter().fold([0, 0], |[q, r], class| match class.kind {
                TrafficKind::Tcp { request, response, .. } => {
                    [q.max(u64::from(request)), r.max(u64::from(response).max(app::ID_LEN as u64))]
                }
                _ => [q, r],
            }),
            catchments: Vec::new(),
        };
        let listeners = || t.vips.iter().flat_map(|v| &v.listeners);
        let https = listeners().any(|l| l.protocol.has_tls() || l.protocol == ListenerProtocol::Quic);
        if https {
            let names: Vec<IpAddr> =
                t.vips.iter().flat_map(|v| [Some(IpAddr::V4(v.ipv4)), v.ipv6.map(IpAddr::V6)]).flatten().collect();
            let (identity, client) = crate::tls::vip_pki(&names).map_err(SimError)?;
            if listeners().any(|l| l.protocol == ListenerProtocol::Quic) {
                w.quic_client = Some(crate::tls::quic_client(&client).map_err(SimError)?);
            }
            w.vip_identity = Some(identity);
            w.tls_client = Some(client);
        }
        w.build_pops();
        w.build_regions();
        w.build_egress();
        w.build_groups();
        w.build_clients()?;
        w.build_probers();
        // Each CLB node's first outputs ask its peers for their tables (empty at start).
        for c in w.clbs.ids().collect::<Vec<_>>() {
            w.drain_clb(c);
        }
        for (index, f) in t.faults.iter().enumerate() {
            w.q.schedule(f.at_ns, Ev::Fault { index });
        }
        if let Some(c) = &t.control {
            // CLB nodes, then POPs (a POP follows the listeners its replies may come from).
            let clbs = w.clbs.iter().map(|n| t.regions[n.region].location);
            let watchers: Vec<_> = clbs.chain(t.pops.iter().map(|p| p.location)).collect();
            w.control = Some(crate::control::ControlPlane::new(t, c, &watchers).map_err(SimError)?);
            w.q.schedule(0, Ev::Control(crate::control::ControlEv::Tick));
        }
        Ok(w)
    }

    pub(super) fn build_pops(&mut self) {
        for p in 0..self.t.pops.len() {
            let mut config = anyedge_topology::nodes::pop_config(self.t, p);
            config.auth = self.backbone_auth(anyedge_topology::nodes::pop_node(p));
            let core = Pop::new(config, 0);
            self.pops.push(PopNode { core, up: true, announced: true, drops: BTreeMap::new() });
        }
    }

    pub(super) fn clb_config(&self, r: usize, index: usize) -> ClbConfig {
        let addresses = anyedge_topology::nodes::ClbAddresses::of(r, index);
        let identity = anyedge_topology::nodes::Identity { default: self.vip_identity.clone(), vips: Vec::new() };
        let mut config = anyedge_topology::nodes::clb_config(self.t, r, index, addresses, &identity);
        config.auth = self.backbone_auth(anyedge_topology::nodes::clb_node(r, index));
        config
    }

    /// A node's backbone keys: from the seed, the same derivation `lab up` makes from its
    /// random secret. The simulator's clock starts at 0.
    fn backbone_auth(&self, me: anyedge_ccn::NodeId) -> anyedge_ccn::AuthConfig {
        let secret = anyedge_ccn::BackboneSecret::from_seed(self.t.seed);
        anyedge_topology::nodes::backbone_auth(self.t, &secret, me, 0)
    }

    pub(super) fn build_regions(&mut self) {
        let t = self.t;
        for (r, region) in t.regions.iter().enumerate() {
            self.clb_base.push(self.clbs.next_id());
            for index in 0..usize::from(region.clb_nodes) {
                let config = self.clb_config(r, index);
                let core = Clb::new(config.clone(), 0);
                self.clb_by_addr.insert(config.address, self.clbs.next_id());
                if let Some(v6) = config.address_v6 {
                    self.clb_by_addr.insert(v6, self.clbs.next_id());
                }
                self.clbs.push(ClbNode {
                    region: r,
                    index,
                    core,
                    config,
                    up: true,
                    known_up: true,
                    timer_at: None,
                    flows_before: 0,
                    peak_before: 0,
                    evictions_before: 0,
                    sync_before: Default::default(),
                    drops: BTreeMap::new(),
                });
            }
            for group in &region.backend_groups {
                for b in &group.backends {
                    self.backend_index.entry(b.addr).or_insert(self.backends.next_id());
                    self.backends.push(BackendRecord {
                        region: r,
                        group: group.name.clone(),
                        addr: b.addr,
                        weight: b.weight,
                        flows: Default::default(),
                        health: vec![(0, true, None)],
                        addrs_seen: Default::default(),
                    });
                    self.ensure_host(b.addr, r, b.site);
                }
            }
        }
        for c in self.clbs.ids() {
            self.arm_clb_timer(c);
        }
    }

    pub(super) fn build_groups(&mut self) {
        let t = self.t;
        for (gi, g) in t.clients.iter().enumerate() {
            let order: Vec<Vec<PopId>> =
                (0..t.vips.len()).map(|v| t.pop_order(gi, v).into_iter().map(PopId).collect()).collect();
            let route = order.iter().map(|o| o.first().copied()).collect();
            let floor_ns = t
                .vips
                .iter()
                .map(|v| {
                    let to_pop = v.pops.iter().map(|&p| fiber_delay_ns(g.location, t.pops[p].location, 1.0)).min();
                    let to_region = fiber_delay_ns(g.location, t.regions[v.home].location, 1.0);
                    [2 * to_pop.unwrap_or(0), 2 * to_region]
                })
                .collect();
            self.groups.push(Group { order, route, floor_ns });
        }
    }

    pub(super) fn build_clients(&mut self) -> Result<(), SimError> {
        let t = self.t;
        let mut next = 0usize;
        let mut pool = default_pool_hosts(t);
        for (g, group) in t.clients.iter().enumerate() {
            self.group_start.push(next);
            self.hist.push(
                group
                    .traffic
                    .iter()
                    .map(|_| {
                        let h =
                            || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid");
                        [h(), h()]
                    })
                    .collect(),
            );
            self.samples.push(group.traffic.iter().map(|_| Default::default()).collect());
            let mut rng = ComponentRng::new(t.seed, &format!("clients/{}", group.name));
            for i in 0..group.count {
                let c = ClientId(next);
                next += 1;
                let addr = match group.address {
                    Some(cidr) => cidr.host(u128::from(i)),
                    None => pool.next().ok_or_else(|| {
                        let wanted: u64 = t.clients.iter().filter(|g| g.address.is_none()).map(|g| u64::from(g.count)).sum();
                        SimError(format!(
                            "{wanted} clients without `address:` do not fit the default pool 198.18.64.1–198.18.255.253 beside the groups' own blocks: give groups `address:` blocks outside it"
                        ))
                    })?,
                };
                let has_tcp = group.traffic.iter().any(|&k| matches!(t.traffic[k].kind, TrafficKind::Tcp { .. }));
                let tcp = has_tcp.then(|| Box::new(TcpStack::new(addr, rng.next_u64(), 0)));
                let slots = group.traffic.len() * 2;
                self.clients.push(Client {
                    group: g,
                    addr,
                    flows: (0..slots).map(|_| Flow::default()).collect(),
                    tcp,
                    tcp_flows: (0..slots).map(|_| TcpFlow::default()).collect(),
                    tcp_poll_at: None,
                    // Only a flooding client draws: the rest are smaller without one.
                    rng: group
                        .traffic
                        .iter()
                        .any(|&k| matches!(t.traffic[k].kind, TrafficKind::SynFlood { .. }))
                        .then(|| Box::new(ComponentRng::new(t.seed, &format!("client/{c}")))),
                    quic_flows: (0..slots)
                        .map(|slot| {
                            let class = &t.traffic[group.traffic[slot / 2]];
                            matches!(class.kind, TrafficKind::Quic { .. }).then(|| {
                                Box::new(QuicFlow {
                                    host: anyedge_region::quic::QuicHost::client(
                                        ComponentRng::new(t.seed, &format!("quic/{c}/{slot}")).next_u64(),
                                    ),
                                    conn: None,
                                    connected: false,
                                    pending: VecDeque::new(),
                                    stream: None,
                                    to_send: Vec::new(),
                                    got: 0,
                                    head: Vec::new(),
                                    poll_at: None,
                                })
                            })
                        })
                        .collect(),
                });
                for (k, &class) in group.traffic.iter().enumerate() {
                    let period = match t.traffic[class].kind {
                        TrafficKind::Udp { interval_ns, .. } => interval_ns,
                        TrafficKind::Tcp { requests_per_s, .. } => (1e9 / requests_per_s) as u64,
                        TrafficKind::SynFlood { rate_per_s } => (1e9 / rate_per_s) as u64,
                        TrafficKind::Quic { requests_per_s, .. } => (1e9 / requests_per_s) as u64,
                    };
                    let start = rng.below(period.max(1));
                    let ev = match t.traffic[class].kind {
                        TrafficKind::Udp { .. } => Ev::UdpSend { client: c, k },
                        TrafficKind::Tcp { .. } => Ev::TcpIssue { client: c, k },
                        TrafficKind::SynFlood { .. } => Ev::FloodSend { client: c, k },
                        TrafficKind::Quic { .. } => Ev::QuicIssue { client: c, k },
                    };
                    self.q.schedule(start, ev);
                }
            }
        }
        self.client_by_addr = AddrRuns::new(self.clients.enumerate().map(|(c, client)| (client.addr, c)));
        Ok(())
    }
}
