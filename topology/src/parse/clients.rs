//! Traffic classes and client groups: what clients send, where they are, and the
//! addresses they take.

use super::*;

impl Parser {
    pub(super) fn traffic(&mut self, top: &Obj<'_>, vips: &[Vip], regions: &[Region]) -> Vec<TrafficClass> {
        let Some(node) = self.req(top, "traffic") else {
            return vec![];
        };
        let Some(map) = node.as_mapping() else {
            self.err(node.span(), "traffic", "expected a mapping of traffic class name to its definition");
            return vec![];
        };
        let mut out = Vec::new();
        for (key, def) in map.iter() {
            let Some(o) = self.obj(def, &format!("traffic.{}", key.as_str()), "traffic_class") else {
                continue;
            };
            if let Some(class) = self.traffic_class(key.as_str(), &o, vips, regions) {
                out.push(class);
            }
        }
        out
    }

    pub(super) fn traffic_class(
        &mut self,
        name: &str,
        o: &Obj<'_>,
        vips: &[Vip],
        regions: &[Region],
    ) -> Option<TrafficClass> {
        let vip = self.req(o, "vip").and_then(|n| {
            let v = self.str(n, &o.field("vip"))?;
            let i = vips.iter().position(|x| x.name == v);
            if i.is_none() {
                self.err(n.span(), &o.field("vip"), format!("unknown VIP `{v}`"));
            }
            i
        });
        let port_node = self.req(o, "port");
        let port = port_node.and_then(|n| self.port(n, &o.field("port")));
        let kind_name = match o.get("kind") {
            None => None,
            Some(n) => Some((self.str(n, &o.field("kind"))?, n)),
        };
        let protocol = match (o.get("protocol"), kind_name) {
            (_, Some(("syn-flood", _))) => "syn-flood",
            (_, Some((other, n))) => {
                self.err(n.span(), &o.field("kind"), format!("`{other}` is not a traffic kind (syn-flood)"));
                return None;
            }
            (Some(n), None) => self.str(n, &o.field("protocol"))?,
            (None, None) => {
                self.req(o, "protocol");
                return None;
            }
        };
        let proto_node = o.get("protocol").or(o.get("kind"))?;
        if protocol == "syn-flood"
            && let Some(n) = o.get("protocol")
            && n.as_scalar().is_none_or(|s| s.as_str() != "tcp")
        {
            self.err(n.span(), &o.field("protocol"), "a SYN flood is TCP");
            return None;
        }
        let kind = match protocol {
            "syn-flood" => {
                let rate = self.req(o, "rate").and_then(|_| self.float_field(o, "rate"));
                TrafficKind::SynFlood { rate_per_s: rate? }
            }
            "udp" => {
                let interval_ns = self.duration_field(o, "interval");
                let size = self.int_field(o, "size").map(|v| v as u32);
                TrafficKind::Udp { interval_ns: interval_ns?, size: size? }
            }
            "tcp" | "quic" => {
                let quic = protocol == "quic";
                let requests_per_s = self.float_field(o, "requests_per_s");
                let request = self.int_field(o, "request").map(|v| v as u32);
                let response = self.int_field(o, "response").map(|v| v as u32);
                let (requests_per_s, request, response) = (requests_per_s?, request?, response?);
                if quic {
                    TrafficKind::Quic { requests_per_s, request, response }
                } else {
                    TrafficKind::Tcp { requests_per_s, request, response }
                }
            }
            other => {
                self.err(proto_node.span(), &o.field("protocol"), format!("`{other}` is not one of udp, tcp, quic"));
                return None;
            }
        };
        let (vip, port) = (vip?, port?);
        let class = TrafficClass { name: name.to_string(), vip, port, kind };
        let listener =
            vips[vip].listeners.iter().find(|l| l.port == port && l.protocol.transport() == class.transport());
        let quic_class = matches!(class.kind, TrafficKind::Quic { .. });
        if let Some(l) = listener
            && (l.protocol == ListenerProtocol::Quic) != quic_class
        {
            let span = proto_node.span();
            let reason = if quic_class {
                format!("port {port} of VIP `{}` is a {} listener, not QUIC", vips[vip].name, l.protocol.name())
            } else {
                format!("port {port} of VIP `{}` is a QUIC listener: use protocol: quic", vips[vip].name)
            };
            self.err(span, &o.field("protocol"), reason);
            return None;
        }
        let served = listener.is_some();
        if !served && !regions.is_empty() {
            let span = port_node.map_or(o.map.span(), |n| n.span());
            let proto = if class.transport() == anyedge_proto::Transport::Udp { "UDP" } else { "TCP" };
            self.err(
                span,
                &o.field("port"),
                format!("VIP `{}` has no {proto} listener on port {port}", vips[vip].name),
            );
            return None;
        }
        Some(class)
    }

    pub(super) fn clients(&mut self, top: &Obj<'_>, traffic: &[String], names: &Names<'_>) -> Vec<ClientGroup> {
        let objs = self.list_of_objs(top, "clients", "client_group");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let name = self.name(o);
            let location = self.location(o);
            let count = self.int_field(o, "count").map(|v| v as u32);
            let classes = self.req(o, "traffic").and_then(|n| self.traffic_refs(n, &o.field("traffic"), traffic));
            let catchment = match o.get("catchment") {
                None => Some(None),
                Some(n) => {
                    let field = o.field("catchment");
                    self.seq(n, &field).and_then(|seq| {
                        let refs: Vec<Option<usize>> = seq
                            .iter()
                            .enumerate()
                            .map(|(i, p)| self.pop_ref(p, &format!("{field}[{i}]"), names))
                            .collect();
                        if seq.is_empty() {
                            self.err(n.span(), &field, "must name at least one POP");
                            return None;
                        }
                        refs.into_iter().collect::<Option<Vec<_>>>().map(Some)
                    })
                }
            };
            let address = match o.get("address") {
                None => Some(None),
                Some(n) => self.with(n, &o.field("address"), Cidr::parse).map(Some),
            };
            if let (Some(name), Some(location), Some(count), Some(traffic), Some(catchment), Some(address)) =
                (name, location, count, classes, catchment, address)
            {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                out.push(ClientGroup { name, location, count, traffic, catchment, address });
            }
        }
        self.unique(&seen);
        let total: u64 = out.iter().map(|g| u64::from(g.count)).sum();
        if total > CLIENTS_MAX
            && let Some(node) = top.get("clients")
        {
            let reason = format!("{total} clients in all; a file holds at most {CLIENTS_MAX}");
            self.err(node.span(), "clients", reason);
        }
        for (o, g) in objs.iter().zip(&out) {
            if g.traffic.len() > CLASSES_PER_GROUP_MAX {
                let span = o.get("traffic").map_or(o.map.span(), |n| n.span());
                let reason =
                    format!("{} traffic classes; a client group has at most {CLASSES_PER_GROUP_MAX}", g.traffic.len());
                self.err(span, &o.field("traffic"), reason);
            }
        }
        out
    }

    /// Client address blocks: big enough, disjoint, clear of VIPs and backends, and IPv6
    /// only where every VIP the group talks to has an IPv6 address.
    pub(super) fn check_client_addresses(
        &mut self,
        top: &Obj<'_>,
        clients: &[ClientGroup],
        vips: &[Vip],
        traffic: &[TrafficClass],
        regions: &[Region],
        pool: crate::ClientPool,
    ) {
        let Some(seq) = top.get("clients").and_then(|n| n.as_sequence()) else { return };
        // (A set, not a search per node: 40,000 groups took 2 s to match up.)
        let names: std::collections::BTreeSet<&str> = clients.iter().map(|c| c.name.as_str()).collect();
        let nodes: Vec<&Node> = seq
            .iter()
            .filter(|n| {
                let name = n.as_mapping().and_then(|m| m.get_scalar("name")).map(|s| s.as_str());
                name.is_some_and(|name| names.contains(name))
            })
            .collect();
        // Earlier groups' blocks: (IPv6?, first address) → (last address, group).
        let mut blocks: BTreeMap<(bool, u128), (u128, usize)> = BTreeMap::new();
        for (i, (g, node)) in clients.iter().zip(nodes).enumerate() {
            let Some(cidr) = g.address else { continue };
            let Some(n) = node.as_mapping().and_then(|m| m.get_node("address")) else { continue };
            let field = format!("clients[{i}].address");
            let mut problems = Vec::new();
            if u128::from(g.count) > cidr.hosts() {
                problems.push(format!("{cidr} holds {} hosts, fewer than count {}", cidr.hosts(), g.count));
            }
            // Blocks nest or are apart: an earlier one overlaps this one when it starts at or
            // before it and reaches it, or starts inside it (ordered, not a scan per group).
            let key = |c: &Cidr| (c.addr.is_ipv6(), ip_u128(c.network()));
            let start = key(&cidr);
            let end = (start.0, start.1.saturating_add(cidr.span() - 1));
            let before = blocks.range(..=start).next_back().filter(|((v6, _), (e, _))| *v6 == start.0 && *e >= start.1);
            let inside = blocks.range(start..=end).next();
            if let Some((_, &(_, other))) = before.or(inside) {
                problems.push(format!("{cidr} overlaps the addresses of client group `{}`", clients[other].name));
            }
            blocks.entry(start).or_insert((end.1, i));
            let taken = vips
                .iter()
                .flat_map(|v| [Some(IpAddr::V4(v.ipv4)), v.ipv6.map(IpAddr::V6)])
                .flatten()
                .chain(
                    regions
                        .iter()
                        .flat_map(|r| r.backend_groups.iter().flat_map(|b| b.backends.iter().map(|b| b.addr.ip()))),
                )
                .find(|a| cidr.contains(*a));
            if let Some(a) = taken {
                problems.push(format!("{cidr} contains {a}, a VIP or backend address"));
            }
            if cidr.addr.is_ipv6() {
                for &k in &g.traffic {
                    let vip = traffic.get(k).map(|c| &vips[c.vip]);
                    if let Some(v) = vip.filter(|v| v.ipv6.is_none()) {
                        problems.push(format!("IPv6 clients, but VIP `{}` has no ipv6 address", v.name));
                    }
                }
            }
            for p in problems {
                self.err(n.span(), &field, p);
            }
        }
        self.check_client_pool(seq, clients, vips, regions, pool);
    }

    /// `clients_block:`: an IPv4 block. `None`: it is wrong; `Some(None)`: absent.
    pub(super) fn clients_block(&mut self, top: &Obj<'_>) -> Option<Option<Cidr>> {
        let Some(n) = top.get("clients_block") else { return Some(None) };
        let cidr = self.with(n, "clients_block", Cidr::parse)?;
        if !cidr.addr.is_ipv4() || cidr.hosts() == 0 {
            let reason =
                format!("{cidr}: must be an IPv4 block with host addresses (IPv6 clients take a group's `address:`)");
            self.err(n.span(), "clients_block", reason);
            return None;
        }
        Some(Some(cidr))
    }

    /// Groups without `address:` are numbered through `pool` (skipping groups' own blocks
    /// and VIP and backend addresses): they must fit, and no VIP, backend or CLB node
    /// address may sit where they land.
    fn check_client_pool(
        &mut self,
        seq: &[Node],
        clients: &[ClientGroup],
        vips: &[Vip],
        regions: &[Region],
        pool: crate::ClientPool,
    ) {
        let defaults: u64 = clients.iter().filter(|c| c.address.is_none()).map(|c| u64::from(c.count)).sum();
        let Some(i) = clients.iter().position(|c| c.address.is_none()).filter(|_| defaults > 0) else { return };
        let Some(node) = seq.get(i) else { return };
        let field = format!("clients[{i}]");
        let (first, last) = pool.bounds();
        let start = ip_u128(first);
        // Addresses groups' own blocks take inside the pool (blocks are disjoint).
        let own: u128 = clients
            .iter()
            .filter_map(|c| c.address)
            .filter(|c| c.addr.is_ipv4())
            .map(|c| {
                let (a, b) = (ip_u128(c.network()), ip_u128(c.network()) + c.span() - 1);
                let (lo, hi) = (a.max(start), b.min(ip_u128(last)));
                if lo <= hi { hi - lo + 1 } else { 0 }
            })
            .sum();
        let room = pool.len().saturating_sub(own);
        if u128::from(defaults) > room {
            let reason = format!(
                "{defaults} clients without `address:`, but their pool {first}–{last} holds {room} beside the groups' own blocks: set `clients_block:` to a larger IPv4 block (100.64.0.0/10 holds 4,194,302) or give groups `address:` blocks"
            );
            self.err(node.span(), &field, reason);
            return;
        }
        let (low, high) = (start, start + u128::from(defaults));
        let clb_nodes = regions.iter().enumerate().flat_map(|(r, region)| {
            (0..usize::from(region.clb_nodes)).map(move |n| crate::nodes::ClbAddresses::of(r, n).address)
        });
        let taken = vips
            .iter()
            .map(|v| IpAddr::V4(v.ipv4))
            .chain(
                regions
                    .iter()
                    .flat_map(|r| r.backend_groups.iter().flat_map(|b| b.backends.iter().map(|b| b.addr.ip()))),
            )
            .chain(clb_nodes)
            .find(|a| a.is_ipv4() && (low..=high).contains(&ip_u128(*a)));
        if let Some(a) = taken {
            let reason = format!(
                "clients without `address:` are numbered from {first} to {}, which holds {a}, a VIP, backend or CLB node address: give the group an `address:` block, or set `clients_block:` elsewhere",
                pool.block.host(pool.first + u128::from(defaults))
            );
            self.err(node.span(), &field, reason);
        }
    }

    pub(super) fn traffic_refs(&mut self, node: &Node, field: &str, traffic: &[String]) -> Option<Vec<usize>> {
        let items: Vec<(&Node, String)> = match node.as_sequence() {
            Some(seq) => seq.iter().enumerate().map(|(i, n)| (n, format!("{field}[{i}]"))).collect(),
            None => vec![(node, field.to_string())],
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (n, f) in items {
            let Some(name) = self.str(n, &f) else {
                ok = false;
                continue;
            };
            match traffic.iter().position(|t| t == name) {
                Some(i) => out.push(i),
                None => {
                    self.err(n.span(), &f, format!("unknown traffic class `{name}`"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}
