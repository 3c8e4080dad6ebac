//! Sites and names: the control plane's nodes, POPs, IDCs and NAT gateways, and
//! references to POPs by name.

use super::*;

impl Parser {
    /// `control: { nodes: 3|5, sites: [REGION|POP, …] }`. Sites default to the regions,
    /// then the POPs, in file order.
    pub(super) fn control(&mut self, top: &Obj<'_>, pops: &[PopSite], regions: &[Region]) -> Option<Control> {
        let node = top.get("control").filter(|n| !is_null(n))?;
        let o = self.obj(node, "control", "control")?;
        let count = self.req(&o, "nodes").and_then(|n| self.int(n, &o.field("nodes"), 1, 9));
        let count = match count {
            Some(c @ (3 | 5)) => c as u8,
            Some(c) => {
                let n = o.get("nodes")?;
                self.err(
                    n.span(),
                    &o.field("nodes"),
                    format!("{c} control nodes: use 3 or 5 (a majority must survive one or two failures)"),
                );
                return None;
            }
            None => return None,
        };
        let known: Vec<(String, Location)> = regions
            .iter()
            .map(|r| (r.name.clone(), r.location))
            .chain(pops.iter().map(|p| (p.name.clone(), p.location)))
            .collect();
        if known.is_empty() {
            self.err(
                node.span(),
                "control",
                "no region or POP for the control nodes to run at (sites are regions or POPs)",
            );
            return None;
        }
        let sites = match o.get("sites") {
            None => (0..usize::from(count)).map(|i| known[i % known.len()].clone()).collect(),
            Some(n) => {
                let seq = self.seq(n, &o.field("sites"))?;
                if seq.len() != usize::from(count) {
                    self.err(
                        n.span(),
                        &o.field("sites"),
                        format!("{} sites for {count} nodes: give one per node", seq.len()),
                    );
                    return None;
                }
                let mut sites = Vec::new();
                for (i, item) in seq.iter().enumerate() {
                    let field = format!("{}[{i}]", o.field("sites"));
                    let name = self.str(item, &field)?;
                    match known.iter().find(|(k, _)| k == name) {
                        Some(site) => sites.push(site.clone()),
                        None => {
                            self.err(item.span(), &field, format!("`{name}` is neither a region nor a POP"));
                            return None;
                        }
                    }
                }
                sites
            }
        };
        if sites.is_empty() {
            return None;
        }
        Some(Control { nodes: count, sites, election_ns: (150 * MS, 300 * MS), tick_ns: 10 * MS })
    }

    pub(super) fn pops(&mut self, top: &Obj<'_>) -> Vec<PopSite> {
        let objs = self.list_of_objs(top, "pops", "pop");
        let mut pops = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let (name, location) = (self.name(o), self.location(o));
            // Kept with a bad location (already an error) so references still resolve.
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                pops.push(PopSite { name, location: location.unwrap_or([0.0, 0.0]), bgp: PopBgp::default() });
            }
        }
        self.unique(&seen);
        pops
    }

    pub(super) fn idcs(&mut self, top: &Obj<'_>) -> Vec<Idc> {
        if top.get("idcs").is_none() {
            return vec![];
        }
        let objs = self.list_of_objs(top, "idcs", "idc");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let (name, location) = (self.name(o), self.location(o));
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                out.push(Idc { name, location: location.unwrap_or([0.0, 0.0]) });
            }
        }
        self.unique(&seen);
        out
    }

    /// The regions' names as written, before the regions are parsed: what `region:`
    /// references resolve against.
    pub(super) fn region_names(top: &Obj<'_>) -> Vec<String> {
        let Some(seq) = top.get("regions").and_then(|n| n.as_sequence()) else { return vec![] };
        seq.iter()
            .filter_map(|r| r.as_mapping().and_then(|m| m.get_scalar("name")).map(|n| n.as_str().to_string()))
            .collect()
    }

    /// `nat_gateways: [{ name, region, public }]`.
    pub(super) fn nat_gateways(&mut self, top: &Obj<'_>) -> Vec<NatGateway> {
        if top.get("nat_gateways").is_none() {
            return vec![];
        }
        let region_names = Self::region_names(top);
        let objs = self.list_of_objs(top, "nat_gateways", "nat_gateway");
        let mut out: Vec<NatGateway> = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let name = self.name(o);
            let region = self.req(o, "region").and_then(|n| {
                let r = self.str(n, &o.field("region"))?;
                let i = region_names.iter().position(|x| x == r);
                if i.is_none() {
                    self.err(n.span(), &o.field("region"), format!("unknown region `{r}`"));
                }
                i
            });
            let public = self.req(o, "public").and_then(|n| {
                let ip = self.parsed::<Ipv4Addr>(n, &o.field("public"), "an IPv4 address")?;
                if let Some(other) = out.iter().find(|g| g.public == IpAddr::V4(ip)) {
                    let reason = format!("{ip} is already the public address of NAT gateway `{}`", other.name);
                    self.err(n.span(), &o.field("public"), reason);
                }
                Some(IpAddr::V4(ip))
            });
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                if let (Some(region), Some(public)) = (region, public) {
                    out.push(NatGateway { name, region, public });
                }
            }
        }
        self.unique(&seen);
        out
    }

    pub(super) fn pop_ref(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<usize> {
        let name = self.str(node, field)?;
        let i = names.pops.iter().position(|p| p.name == name);
        if i.is_none() {
            self.err(node.span(), field, format!("unknown POP `{name}`"));
        }
        i
    }
}
