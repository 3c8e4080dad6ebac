//! Regions: their CLB nodes, health checks, SNAT addresses, backend groups and backends
//! (where each lives, how it is reached).

use super::*;

impl Parser {
    pub(super) fn regions(&mut self, top: &Obj<'_>, idcs: &[Idc], nat_gateways: &[NatGateway]) -> Vec<Region> {
        let objs = self.list_of_objs(top, "regions", "region");
        // Names first: a backend may live in a region defined further down.
        let region_names = Self::region_names(top);
        let sites = Sites { regions: &region_names, idcs, nat_gateways };
        let mut regions = Vec::new();
        let mut seen = Vec::new();
        for (ri, o) in objs.iter().enumerate() {
            let name = self.name(o);
            let location = self.location(o);
            let clb_nodes = self.int_field(o, "clb_nodes").map(|v| v as u16);
            let conn_table = self.int_field(o, "conn_table").map(|v| v as usize);
            let source_prefix_v4 = self.int_field(o, "source_prefix_v4").map(|v| v as u8);
            let health = self.health(o, &Self::schema_health());
            let region_index =
                region_names.iter().position(|n| o.map.get_scalar("name").is_some_and(|x| x.as_str() == n));
            let groups = self.backend_groups(o, &sites, region_index.unwrap_or(ri), health.as_ref());
            let snat = self.snat(o, &groups);
            // Kept when other fields are bad (already errors) so references still resolve.
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                let (location, clb_nodes) = (location.unwrap_or([0.0, 0.0]), clb_nodes.unwrap_or(1));
                let health = health.unwrap_or(HealthConfig::tcp(S, S, 1, 1));
                let conn_table = conn_table.unwrap_or(CONN_TABLE_DEFAULT);
                let source_prefix_v4 = source_prefix_v4.unwrap_or(SOURCE_PREFIX_V4);
                let backend_groups = groups;
                regions.push(Region {
                    name,
                    location,
                    clb_nodes,
                    conn_table,
                    source_prefix_v4,
                    snat,
                    health,
                    backend_groups,
                });
            }
        }
        self.unique(&seen);
        regions
    }

    /// Health checks as the schema's defaults describe them (a region without `health:`).
    pub(super) fn schema_health() -> HealthConfig {
        let ns = |key| schema::default_of("health", key, schema::Field::default_ns);
        let count = |key| schema::default_of("health", key, schema::Field::default_i64) as u32;
        debug_assert_eq!(schema::default_of("health", "protocol", |f| f.default_str().map(str::to_string)), "tcp");
        HealthConfig::tcp(ns("interval"), ns("timeout"), count("healthy"), count("unhealthy"))
    }

    /// `health:` of `owner` (a region, or a backend group overriding it), over `base`.
    pub(super) fn health(&mut self, owner: &Obj<'_>, base: &HealthConfig) -> Option<HealthConfig> {
        let Some(node) = owner.get("health") else {
            return Some(base.clone());
        };
        let o = self.obj(node, &owner.field("health"), "health")?;
        let protocol = self.health_protocol(&o, &base.protocol);
        let interval_ns = self.duration_or(&o, "interval", base.interval_ns);
        let timeout_ns = self.duration_or(&o, "timeout", base.timeout_ns);
        let threshold = |p: &mut Parser, key: &str, d: u32| match o.get(key) {
            Some(_) => p.int_field(&o, key).map(|v| v as u32),
            None => Some(d),
        };
        let healthy = threshold(self, "healthy", base.healthy);
        let unhealthy = threshold(self, "unhealthy", base.unhealthy);
        if let (Some(i), Some(t)) = (interval_ns, timeout_ns)
            && (t == 0 || t > i)
        {
            let span = o.get("timeout").map_or(o.map.span(), |n| n.span());
            self.err(span, &o.field("timeout"), "must be longer than 0s and no longer than the interval");
            return None;
        }
        Some(HealthConfig {
            protocol: protocol?,
            interval_ns: interval_ns?,
            timeout_ns: timeout_ns?,
            healthy: healthy?,
            unhealthy: unhealthy?,
        })
    }

    pub(super) fn health_protocol(&mut self, o: &Obj<'_>, base: &HealthProtocol) -> Option<HealthProtocol> {
        let name = match o.get("protocol") {
            Some(p) => self.str(p, &o.field("protocol"))?,
            None => match base {
                HealthProtocol::Tcp => "tcp",
                HealthProtocol::Udp => "udp",
                HealthProtocol::Http { .. } => "http",
            },
        };
        let (base_path, base_expect) = match base {
            HealthProtocol::Http { path, expect } => (path.clone(), expect.clone()),
            _ => ("/".to_string(), vec![(200, 299)]),
        };
        if name != "http" {
            for key in ["path", "expect"] {
                if let Some(n) = o.get(key) {
                    self.err(n.span(), &o.field(key), "only http health checks take a path and an expected status");
                }
            }
        }
        match name {
            "tcp" => Some(HealthProtocol::Tcp),
            "udp" => Some(HealthProtocol::Udp),
            "http" => {
                let path = match o.get("path") {
                    Some(n) => {
                        let p = self.str(n, &o.field("path"))?;
                        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                            self.err(
                                n.span(),
                                &o.field("path"),
                                format!("`{p}` is not an HTTP path (it starts with /)"),
                            );
                            return None;
                        }
                        p.to_string()
                    }
                    None => base_path,
                };
                let expect = match o.get("expect") {
                    Some(n) => self.with(n, &o.field("expect"), parse_status_ranges)?,
                    None => base_expect,
                };
                Some(HealthProtocol::Http { path, expect })
            }
            other => {
                let span = o.get("protocol").map_or(o.map.span(), |n| n.span());
                self.err(span, &o.field("protocol"), format!("`{other}` is not one of tcp, udp, http"));
                None
            }
        }
    }

    /// SNAT addresses: required, in each family, when IDC backends are bound.
    pub(super) fn snat(&mut self, region: &Obj<'_>, groups: &[BackendGroup]) -> Vec<IpAddr> {
        let field = region.field("snat");
        let mut out = Vec::new();
        if let Some(node) = region.get("snat")
            && let Some(seq) = self.seq(node, &field)
        {
            for (i, n) in seq.iter().enumerate() {
                if let Some(ip) = self.parsed::<IpAddr>(n, &format!("{field}[{i}]"), "an IP address") {
                    out.push(ip);
                }
            }
        }
        for b in groups.iter().flat_map(|g| &g.backends).filter(|b| matches!(b.site, Site::Idc(_))) {
            if !out.iter().any(|a| a.is_ipv4() == b.addr.is_ipv4()) {
                let span = region.get("snat").map_or(region.map.span(), |n| n.span());
                let family = if b.addr.is_ipv4() { "IPv4" } else { "IPv6" };
                self.err(
                    span,
                    &field,
                    format!("IDC backend {} is reached through SNAT: declare an {family} snat address", b.addr),
                );
                break;
            }
        }
        out
    }

    pub(super) fn backend_groups(
        &mut self,
        region: &Obj<'_>,
        sites: &Sites<'_>,
        region_index: usize,
        region_health: Option<&HealthConfig>,
    ) -> Vec<BackendGroup> {
        let field = region.field("backends");
        // A region may hold no backends of its own (it hosts other regions' members).
        let Some(node) = region.get("backends") else {
            return vec![];
        };
        let Some(map) = node.as_mapping() else {
            self.err(node.span(), &field, "expected a mapping of group name to a list of backends");
            return vec![];
        };
        let mut groups = Vec::new();
        for (key, value) in map.iter() {
            let gfield = format!("{field}.{}", key.as_str());
            // A group is a list of backends, or { health: {...}, app: ..., members: [...] }.
            let (list, health, group_app, list_field) = match value.as_mapping() {
                Some(_) => {
                    let Some(g) = self.obj(value, &gfield, "backend_group") else { continue };
                    let base = region_health.cloned().unwrap_or(HealthConfig::tcp(2 * S, S, 3, 3));
                    let health = if g.get("health").is_some() { self.health(&g, &base) } else { None };
                    let app = self.app(&g);
                    let Some(members) = self.req(&g, "members") else { continue };
                    (members, health, app, format!("{gfield}.members"))
                }
                None => (value, None, None, gfield.clone()),
            };
            let gfield = list_field;
            let Some(seq) = self.seq(list, &gfield) else { continue };
            let mut backends: Vec<Backend> = Vec::new();
            for (i, item) in seq.iter().enumerate() {
                let bfield = format!("{gfield}[{i}]");
                let Some(o) = self.obj(item, &bfield, "backend") else {
                    continue;
                };
                if let Some(b) = self.backend(&o, sites, region_index, group_app) {
                    if backends.iter().any(|x| x.addr == b.addr) {
                        self.err(item.span(), &bfield, format!("backend {} is bound twice in this group", b.addr));
                    }
                    self.one_way_there(&b, (item, &o, &bfield), sites, region_index);
                    self.one_server_per_port(&b, (item, &o, &bfield));
                    backends.push(b);
                }
            }
            if seq.is_empty() {
                self.err(list.span(), &gfield, "a backend group needs at least one backend");
            }
            groups.push(BackendGroup { name: key.as_str().to_string(), backends, health });
        }
        groups
    }

    /// One address, one way there: a host is either on the internet through one egress,
    /// or not on it. (An internet backend is bound from one region: its egress node is
    /// the way back for every flow to it.)
    fn one_way_there(
        &mut self,
        b: &Backend,
        (item, o, bfield): (&Node, &Obj<'_>, &str),
        sites: &Sites<'_>,
        region: usize,
    ) {
        let egress = match b.site {
            Site::Internet(e) => Some((e, region)),
            _ => None,
        };
        let ip = b.addr.ip();
        match self.paths.iter().find(|(a, _)| *a == ip).map(|&(_, e)| e) {
            Some(before) if before != egress => {
                let say = |e: Option<(Egress, usize)>| match e {
                    Some((Egress::Nat(g), _)) => format!("via nat/{}", sites.nat_gateways[g].name),
                    Some((Egress::Router, r)) => format!("via router in region `{}`", sites.regions[r]),
                    None => "without via".to_string(),
                };
                let reason = format!("{ip} is bound {} elsewhere: one host, one way to reach it", say(before));
                let span = o.get("via").map_or(item.span(), |n| n.span());
                self.err(span, &format!("{bfield}.via"), reason);
            }
            Some(_) => {}
            None => self.paths.push((ip, egress)),
        }
    }

    /// One port, one server: a backend bound in several groups is the same application
    /// in each, ours or the user's.
    fn one_server_per_port(&mut self, b: &Backend, (item, o, bfield): (&Node, &Obj<'_>, &str)) {
        match self.apps.iter().find(|(a, _)| *a == b.addr).map(|&(_, app)| app) {
            Some(before) if before != b.app => {
                let reason = format!(
                    "{} is bound as `app: {}` elsewhere: one port, one server (say the same `app` in every group)",
                    b.addr,
                    before.name()
                );
                let span = o.get("app").map_or(item.span(), |n| n.span());
                self.err(span, &format!("{bfield}.app"), reason);
            }
            Some(_) => {}
            None => self.apps.push((b.addr, b.app)),
        }
    }

    /// `app:` of a backend or a backend group, if given.
    fn app(&mut self, o: &Obj<'_>) -> Option<App> {
        let n = o.get("app")?;
        match self.str(n, &o.field("app"))? {
            "builtin" => Some(App::Builtin),
            "external" => Some(App::External),
            other => {
                self.err(n.span(), &o.field("app"), format!("`{other}` is not `builtin` or `external`"));
                None
            }
        }
    }

    /// A backend's `via:` — `nat/NAME` (a NAT gateway of region `region`) or `router`.
    pub(super) fn egress(
        &mut self,
        n: &Node,
        field: &str,
        sites: &Sites<'_>,
        region: usize,
        ip: Option<IpAddr>,
    ) -> Option<Egress> {
        let via = self.str(n, field)?;
        if ip.is_some_and(|ip| !ip.is_ipv4()) {
            self.err(n.span(), field, "public-internet backends are IPv4 addresses");
            return None;
        }
        if via == "router" {
            return Some(Egress::Router);
        }
        let Some(name) = via.strip_prefix("nat/") else {
            self.err(n.span(), field, format!("`{via}` is not `router` or `nat/NAME` (a NAT gateway)"));
            return None;
        };
        let Some(g) = sites.nat_gateways.iter().position(|g| g.name == name) else {
            self.err(n.span(), field, format!("no NAT gateway `{name}` (declare it under nat_gateways)"));
            return None;
        };
        let home = sites.nat_gateways[g].region;
        if home != region {
            let (theirs, ours) = (&sites.regions[home], sites.regions.get(region).map_or("", String::as_str));
            let reason = format!(
                "NAT gateway `{name}` is in region `{theirs}`: region `{ours}` reaches the internet only through its own gateways"
            );
            self.err(n.span(), field, reason);
            return None;
        }
        Some(Egress::Nat(g))
    }

    pub(super) fn backend(
        &mut self,
        o: &Obj<'_>,
        sites: &Sites<'_>,
        region: usize,
        group_app: Option<App>,
    ) -> Option<Backend> {
        let addr_node = self.req(o, "address");
        let port_node = self.req(o, "port");
        let ip = addr_node.and_then(|n| self.parsed::<IpAddr>(n, &o.field("address"), "an IP address"));
        let port = port_node.and_then(|n| self.port(n, &o.field("port")));
        let weight = self.int_field(o, "weight").map(|w| w as u8);
        let site = match (o.get("region"), o.get("idc")) {
            _ if o.get("via").is_some() => {
                let n = o.get("via")?;
                if let Some(other) = ["region", "idc"].into_iter().find(|k| o.get(k).is_some()) {
                    self.err(
                        n.span(),
                        &o.field("via"),
                        format!("a public-internet backend lives on the internet, not in {other}:"),
                    );
                }
                self.egress(n, &o.field("via"), sites, region, ip).map_or(Site::Local, Site::Internet)
            }
            (Some(_), Some(n)) => {
                self.err(n.span(), &o.field("idc"), "a backend lives in a region or an IDC, not both");
                Site::Local
            }
            (Some(n), None) => {
                let name = self.str(n, &o.field("region")).unwrap_or("");
                match sites.regions.iter().position(|r| r == name) {
                    Some(r) => Site::Region(r),
                    None => {
                        self.err(n.span(), &o.field("region"), format!("unknown region `{name}`"));
                        Site::Local
                    }
                }
            }
            (None, Some(n)) => {
                let name = self.str(n, &o.field("idc")).unwrap_or("");
                match sites.idcs.iter().position(|i| i.name == name) {
                    Some(i) => Site::Idc(i),
                    None => {
                        self.err(n.span(), &o.field("idc"), format!("unknown IDC `{name}` (declare it under idcs)"));
                        Site::Local
                    }
                }
            }
            (None, None) => Site::Local,
        };
        // A bad weight is recorded; the address still names the backend for references.
        let app = self.app(o).or(group_app).unwrap_or_default();
        Some(Backend { addr: SocketAddr::new(ip?, port?), weight: weight.unwrap_or(WEIGHT_DEFAULT), site, app })
    }
}
