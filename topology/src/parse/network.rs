//! The backbone and the internet (their delay models, links and impairments), and
//! failover: probing, BFD and route convergence, and whether they fit the backbone.

use super::*;

impl Parser {
    pub(super) fn backbone(&mut self, top: &Obj<'_>, names: &Names<'_>) -> Option<Backbone> {
        let ns = |key| schema::default_of("backbone", key, schema::Field::default_ns);
        let default = Backbone {
            delay: default_backbone_delay(),
            jitter_ns: ns("jitter"),
            loss: schema::default_of("backbone", "loss", schema::Field::default_percent),
            bandwidth_bps: schema::default_of("backbone", "bandwidth", |f| parse_bandwidth_bps(f.default_str()?).ok()),
            queue_ns: ns("queue"),
            transport: BackboneTransport::Udp,
            links: None,
        };
        let Some(node) = top.get("backbone") else {
            return Some(default);
        };
        let o = self.obj(node, "backbone", "backbone")?;
        let delay = self.stretch_or_delay(&o, default_backbone_delay);
        let jitter_ns = self.duration_field(&o, "jitter");
        let loss = self.percent_field(&o, "loss");
        let bandwidth_bps = match o.get("bandwidth") {
            Some(n) => self.with(n, &o.field("bandwidth"), parse_bandwidth_bps),
            None => Some(default.bandwidth_bps),
        };
        let queue_ns = self.duration_field(&o, "queue");
        let transport = match o.get("transport") {
            None => Some(BackboneTransport::Udp),
            Some(n) => match self.str(n, &o.field("transport"))? {
                "udp" => Some(BackboneTransport::Udp),
                "grpc" => Some(BackboneTransport::Grpc),
                other => {
                    self.err(n.span(), &o.field("transport"), format!("`{other}` is not one of udp, grpc"));
                    None
                }
            },
        };
        let links = match o.get("links") {
            None => Some(None),
            Some(n) => self.backbone_links(n, &o.field("links"), names).map(Some),
        };
        Some(Backbone {
            delay: delay?,
            jitter_ns: jitter_ns?,
            loss: loss?,
            bandwidth_bps: bandwidth_bps?,
            queue_ns: queue_ns?,
            transport: transport?,
            links: links?,
        })
    }

    /// With `backbone.links`, every POP a VIP is published at needs a link to the VIP's
    /// home region: without one its clients would get no answer at all.
    pub(super) fn check_backbone_paths(
        &mut self,
        top: &Obj<'_>,
        vips: &[Vip],
        bb: &Backbone,
        pops: &[PopSite],
        regions: &[Region],
    ) {
        let Some(links) = &bb.links else { return };
        let Some(seq) = top.get("vips").and_then(|n| n.as_sequence()) else { return };
        for (i, (vip, node)) in vips.iter().zip(seq.iter()).enumerate() {
            let Some(pops_node) = node.as_mapping().and_then(|m| m.get_node("pops")) else { continue };
            // `pops: all` names no POP one by one: each POP without a way home is reported
            // at the `all`, by name.
            let items: Vec<_> = match pops_node.as_sequence() {
                Some(list) => vip
                    .pops
                    .iter()
                    .zip(list.iter())
                    .enumerate()
                    .map(|(j, (&p, n))| (p, n.span(), format!("vips[{i}].pops[{j}]")))
                    .collect(),
                None => vip.pops.iter().map(|&p| (p, pops_node.span(), format!("vips[{i}].pops"))).collect(),
            };
            // A home or POP that names nothing was refused where it was named; the index
            // it holds is a placeholder, not a site.
            let Some(home) = regions.get(vip.home) else { continue };
            for (p, span, field) in items {
                let Some(pop) = pops.get(p) else { continue };
                if !links.contains(&(p, vip.home)) {
                    let reason = format!(
                        "POP `{}` has no backbone link to region `{}`, the VIP's home (backbone.links lists none): its clients would get no answer",
                        pop.name, home.name
                    );
                    self.err(span, &field, reason);
                }
            }
        }
    }

    pub(super) fn backbone_links(
        &mut self,
        node: &Node,
        field: &str,
        names: &Names<'_>,
    ) -> Option<Vec<(usize, usize)>> {
        let seq = self.seq(node, field)?;
        let mut out = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            if let Some(pair) = self.pop_region_pair(item, &f, names) {
                out.push(pair);
            }
        }
        Some(out)
    }

    /// `[pop/NAME, region/NAME]` in either order.
    pub(super) fn pop_region_pair(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<(usize, usize)> {
        let seq = self.seq(node, field)?;
        if seq.len() != 2 {
            self.err(node.span(), field, "expected [pop/NAME, region/NAME]");
            return None;
        }
        let mut pop = None;
        let mut region = None;
        for (i, end) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match self.target(end, &f, names)? {
                Target::Pop(p) => pop = Some(p),
                Target::Region(r) => region = Some(r),
                Target::Backend { .. } | Target::Clb { .. } | Target::Control(_) => {}
            }
        }
        if pop.is_none() || region.is_none() {
            self.err(node.span(), field, "a backbone link joins one pop/NAME and one region/NAME");
            return None;
        }
        Some((pop?, region?))
    }

    pub(super) fn internet(&mut self, top: &Obj<'_>, clients: &[ClientGroup], names: &Names<'_>) -> Option<Internet> {
        let ns = |key| schema::default_of("internet", key, schema::Field::default_ns);
        let default = Internet {
            delay: default_internet_delay(),
            pinned: Vec::new(),
            last_mile_ns: ns("last_mile"),
            last_mile_source: LAST_MILE_ASSUMED,
            jitter_ns: ns("jitter"),
            loss: schema::default_of("internet", "loss", schema::Field::default_percent),
            ases: Vec::new(),
            ixps: Vec::new(),
            ways: Default::default(),
            routing: Routing::Bgp,
        };
        let Some(node) = top.get("internet") else {
            return Some(default);
        };
        let o = self.obj(node, "internet", "internet")?;
        let pinned = match o.get("rtt") {
            Some(n) => self.pinned_rtts(n, &o.field("rtt"), clients, names),
            None => Some(Vec::new()),
        };
        let delay = self.stretch_or_delay(&o, default_internet_delay);
        let last_mile_ns = self.duration_field(&o, "last_mile");
        let jitter_ns = self.duration_field(&o, "jitter");
        let loss = self.percent_field(&o, "loss");
        let (ases, ixps) = self.as_internet(&o, clients, names)?;
        let routing = self.routing(&o, !ases.is_empty());
        Some(Internet {
            delay: delay?,
            pinned: pinned?,
            last_mile_ns: last_mile_ns?,
            last_mile_source: if o.get("last_mile").is_some() { LAST_MILE_GIVEN } else { LAST_MILE_ASSUMED },
            jitter_ns: jitter_ns?,
            loss: loss?,
            ases,
            ixps,
            ways: Default::default(),
            routing: routing?,
        })
    }

    /// `internet.routing`: `bgp` (the default) or `nearest`, which has no networks.
    fn routing(&mut self, o: &Obj<'_>, has_ases: bool) -> Option<Routing> {
        let Some(n) = o.get("routing") else { return Some(Routing::Bgp) };
        let field = o.field("routing");
        match self.str(n, &field)? {
            "bgp" => Some(Routing::Bgp),
            "nearest" if has_ases => {
                let reason = "`nearest` has no AS-level internet: give `routing: bgp` or remove `ases`";
                self.err(n.span(), &field, reason);
                None
            }
            "nearest" => Some(Routing::Nearest),
            other => {
                self.err(n.span(), &field, format!("`{other}` is not `bgp` or `nearest`"));
                None
            }
        }
    }

    /// `tls:` — the algorithm of the certificates issued for VIPs (default ECDSA P-256).
    pub(super) fn tls(&mut self, top: &Obj<'_>) -> Option<Tls> {
        use anyedge_region::identity::KeyAlgorithm;
        let Some(node) = top.get("tls") else { return Some(Tls::default()) };
        let o = self.obj(node, "tls", "tls")?;
        let Some(n) = o.get("algorithm") else { return Some(Tls::default()) };
        let field = o.field("algorithm");
        let name = self.str(n, &field)?;
        let Some(algorithm) = KeyAlgorithm::from_name(name) else {
            let known: Vec<&str> = KeyAlgorithm::ALL.iter().map(|a| a.name()).collect();
            self.err(n.span(), &field, format!("`{name}` is not one of {}", known.join(", ")));
            return None;
        };
        Some(Tls { algorithm })
    }

    pub(super) fn failover(&mut self, top: &Obj<'_>) -> Option<Failover> {
        let (ns, count) = (
            |key| schema::default_of("failover", key, schema::Field::default_ns),
            |key| schema::default_of("failover", key, schema::Field::default_i64) as u32,
        );
        let default = Failover {
            probe_interval_ns: ns("probe_interval"),
            probe_misses: count("probe_misses"),
            probe_idle_ns: ns("probe_idle"),
            bfd_interval_ns: ns("bfd_interval"),
            bfd_multiplier: count("bfd_multiplier"),
            route_converge_ns: ns("route_converge"),
            route_hop_ns: ns("route_hop"),
            session_setup_ns: ns("session_setup"),
        };
        let Some(node) = top.get("failover") else {
            return Some(default);
        };
        let o = self.obj(node, "failover", "failover")?;
        let interval = self.duration_field(&o, "probe_interval");
        let misses = match o.get("probe_misses") {
            Some(_) => self.int_field(&o, "probe_misses").map(|m| Some(m as u32)),
            None => Some(None),
        };
        let pop_detect = match o.get("pop_detect") {
            Some(n) => self.duration(n, &o.field("pop_detect")).map(|d| Some((d, n))),
            None => Some(None),
        };
        let route_converge_ns = self.duration_field(&o, "route_converge");
        let route_hop_ns = self.duration_field(&o, "route_hop");
        let session_setup_ns = self.duration_field(&o, "session_setup");
        // BIRD takes BFD intervals of 10 ms and up; below that a busy host flaps. `off`:
        // no BFD, only the BGP session's hold timer finds a dead POP.
        let bfd_interval = match o.get("bfd_interval") {
            Some(n) if n.as_scalar().is_some_and(|v| v.as_str() == "off") => Some(0),
            _ => self.duration_within(&o, "bfd_interval", default.bfd_interval_ns, 10 * MS, 10_000 * MS),
        };
        // `off`: every POP probes every CLB node and back, whatever they forward.
        let probe_idle = match o.get("probe_idle") {
            Some(n) if n.as_scalar().is_some_and(|v| v.as_str() == "off") => Some(0),
            _ => self.duration_within(&o, "probe_idle", default.probe_idle_ns, MS, 3_600_000 * MS),
        };
        let bfd_multiplier = self.int_field(&o, "bfd_multiplier").map(|m| m as u32);
        let (bfd_interval_ns, bfd_multiplier) = (bfd_interval?, bfd_multiplier?);
        let (probe_interval_ns, misses, pop_detect, probe_idle_ns) = (interval?, misses?, pop_detect?, probe_idle?);
        let (route_converge_ns, route_hop_ns, session_setup_ns) =
            (route_converge_ns?, route_hop_ns?, session_setup_ns?);
        let probe_misses = match (misses, pop_detect) {
            (Some(_), Some((_, n))) => {
                let reason = "is shorthand for probe_misses × probe_interval; give one or the other";
                self.err(n.span(), &o.field("pop_detect"), reason);
                return None;
            }
            (Some(m), None) => m,
            (None, Some((d, n))) => {
                let m = d.div_ceil(probe_interval_ns);
                if !(1..=100).contains(&m) {
                    let reason = format!(
                        "is {m} probe intervals; it must be 1–100 (probe_interval {})",
                        show_ns(probe_interval_ns)
                    );
                    self.err(n.span(), &o.field("pop_detect"), reason);
                    return None;
                }
                m as u32
            }
            (None, None) => default.probe_misses,
        };
        Some(Failover {
            probe_interval_ns,
            probe_misses,
            probe_idle_ns,
            bfd_interval_ns,
            bfd_multiplier,
            route_converge_ns,
            route_hop_ns,
            session_setup_ns,
        })
    }

    /// A live peer is declared down when its answers take longer than `probe_misses`
    /// intervals: every backbone round trip must fit in that window.
    pub(super) fn check_probe_window(
        &mut self,
        top: &Obj<'_>,
        f: &Failover,
        bb: &Backbone,
        pops: &[PopSite],
        regions: &[Region],
    ) {
        let window_ns = f.detect_ns_min();
        let longest = pops
            .iter()
            .enumerate()
            .flat_map(|(p, pop)| regions.iter().enumerate().map(move |(r, region)| (p, pop, r, region)))
            .filter(|&(p, _, r, _)| bb.has_link(p, r))
            .map(|(_, pop, _, region)| {
                let rtt = 2 * bb.delay.one_way_ns(pop.location, region.location);
                (rtt, pop, region)
            })
            .max_by_key(|&(rtt, ..)| rtt);
        let Some((rtt_ns, pop, region)) = longest else { return };
        if rtt_ns < window_ns {
            return;
        }
        let Some(node) = top.get("failover") else {
            // The defaults do not fit this world: say so where the backbone is described,
            // or (no `backbone:` either) where the regions are.
            let needed = rtt_ns / f.probe_interval_ns.max(1) + 1;
            let reason = format!(
                "the longest backbone round trip, pop/{} ↔ region/{} ({}), does not fit in the default \
                 failover window (probe_interval × probe_misses = {}): set failover.probe_misses to {needed} or more",
                pop.name,
                region.name,
                show_ns(rtt_ns),
                show_ns(window_ns)
            );
            match top.get("backbone") {
                Some(node) => self.err(node.span(), "backbone", reason),
                None => {
                    if let Some(node) = top.get("regions") {
                        self.err(node.span(), "failover", reason);
                    }
                }
            }
            return;
        };
        let reason = format!(
            "probe_interval × probe_misses ({}) must exceed the longest backbone round trip, pop/{} ↔ region/{} ({}): \
             a live node that far would be declared down",
            show_ns(window_ns),
            pop.name,
            region.name,
            show_ns(rtt_ns)
        );
        self.err(node.span(), "failover", reason);
    }
}
