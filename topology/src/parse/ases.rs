//! The AS-level internet: `internet.ases`, `internet.ixps`, and each POP's BGP
//! (`upstreams`, `prepend`, `announce_to`, `communities`). Everything a name refers to
//! must exist, no network is its own provider's provider, and every network is joined
//! to a POP by some chain of providers, peers, IXPs and POP upstreams: BGP over a graph
//! that breaks any of these would leave clients without a route for reasons the file
//! does not show.

use std::sync::LazyLock;

use super::*;
use crate::generate::{City, cities};
use anyedge_ccn::delay::Area;

static CITIES: LazyLock<Vec<City>> = LazyLock::new(cities);

/// Most names an "unknown" diagnostic lists.
const NAMES_SHOWN_MAX: usize = 12;

/// An AS as read, before its references are resolved.
struct Read<'a> {
    net: AsNet,
    obj: Obj<'a>,
}

impl Parser {
    /// `internet.ases` and `internet.ixps` (both empty when absent).
    pub(super) fn as_internet(
        &mut self,
        o: &Obj<'_>,
        clients: &[ClientGroup],
        names: &Names<'_>,
    ) -> Option<(Vec<AsNet>, Vec<Ixp>)> {
        let objs = if o.get("ases").is_some() { self.list_of_objs(o, "ases", "as") } else { Vec::new() };
        let mut read = Vec::new();
        for obj in objs {
            if let Some(net) = self.as_net(&obj, clients, names) {
                read.push(Read { net, obj });
            }
        }
        self.check_as_identities(&read);
        let net_names: Vec<String> = read.iter().map(|r| r.net.name.clone()).collect();
        for (i, r) in read.iter_mut().enumerate() {
            r.net.providers = self.as_refs(&r.obj, "providers", &net_names, i);
            r.net.peers = self.as_refs(&r.obj, "peers", &net_names, i);
        }
        self.check_clients_once(&read, clients);
        self.check_provider_loops(&read);
        let ixps = if o.get("ixps").is_some() { self.ixps(o, &net_names, clients, names) } else { Vec::new() };
        if !ixps.is_empty() && read.is_empty() {
            self.err(
                o.get("ixps").map_or(o.map.span(), |n| n.span()),
                &o.field("ixps"),
                "needs `ases`: IXP members are networks of `internet.ases`",
            );
        }
        Some((read.into_iter().map(|r| r.net).collect(), ixps))
    }

    fn as_net(&mut self, o: &Obj<'_>, clients: &[ClientGroup], names: &Names<'_>) -> Option<AsNet> {
        let name = self.name(o);
        let (min, max) = o.spec("asn").int_range().unwrap_or((1, 0));
        // Kept with AS 0 when its number is wrong (already an error), so references to it
        // still resolve.
        let asn = self.req(o, "asn").and_then(|n| self.int(n, &o.field("asn"), min, max)).unwrap_or(0);
        if o.get("at").is_none() && o.get("clients").is_none() {
            self.err(
                o.map.span(),
                &o.path,
                "a network needs `at` (its places), `clients` (the groups it serves) or both",
            );
        }
        let at = match o.get("at") {
            Some(n) => self.places(n, &o.field("at"), clients, names),
            None => Some(Vec::new()),
        };
        let served = match o.get("clients") {
            Some(n) => self.group_refs(n, &o.field("clients"), clients),
            None => Some(Vec::new()),
        };
        let last_mile_ns = match o.get("last_mile") {
            Some(n) if o.get("clients").is_none() => {
                self.err(n.span(), &o.field("last_mile"), "a last mile is an access network's: it needs `clients`");
                None
            }
            Some(n) => self.duration(n, &o.field("last_mile")).map(Some),
            None => Some(None),
        };
        Some(AsNet {
            name: name?,
            asn: u32::try_from(asn).ok()?,
            at: at?,
            providers: Vec::new(),
            peers: Vec::new(),
            clients: served?,
            last_mile_ns: last_mile_ns?,
        })
    }

    /// Names and AS numbers are each unique, and none is the CDN's own AS number.
    fn check_as_identities(&mut self, read: &[Read<'_>]) {
        let names: Vec<(String, &Span, String)> =
            read.iter().map(|r| (r.net.name.clone(), r.obj.map.span(), r.obj.field("name"))).collect();
        self.unique(&names);
        let mut seen = BTreeMap::new();
        for r in read {
            let span = r.obj.get("asn").map_or(r.obj.map.span(), |n| n.span());
            if r.net.asn == 0 {
                continue;
            }
            if r.net.asn == crate::bgp::CDN_ASN {
                self.err(
                    span,
                    &r.obj.field("asn"),
                    format!("{} is the CDN's own AS number, which the POPs announce from", r.net.asn),
                );
            } else if let Some(first) = seen.insert(r.net.asn, r.net.name.clone()) {
                self.err(span, &r.obj.field("asn"), format!("AS{} is `{first}`'s number too", r.net.asn));
            }
        }
    }

    /// The networks `key` of AS `me` names (indices into `names`); itself never.
    fn as_refs(&mut self, o: &Obj<'_>, key: &str, names: &[String], me: usize) -> Vec<usize> {
        let Some(node) = o.get(key) else { return Vec::new() };
        let field = o.field(key);
        let Some(seq) = self.seq(node, &field) else { return Vec::new() };
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(j) = self.as_ref_of(n, &f, names) else { continue };
            if j == me {
                self.err(n.span(), &f, format!("`{}` names itself", names[j]));
            } else if out.contains(&j) {
                self.err(n.span(), &f, format!("`{}` is listed twice", names[j]));
            } else {
                out.push(j);
            }
        }
        out
    }

    fn as_ref_of(&mut self, node: &Node, field: &str, names: &[String]) -> Option<usize> {
        let name = self.str(node, field)?;
        let i = names.iter().position(|n| n == name);
        if i.is_none() {
            self.err(node.span(), field, format!("unknown network `{name}` (internet.ases: {})", shown(names)));
        }
        i
    }

    fn group_refs(&mut self, node: &Node, field: &str, clients: &[ClientGroup]) -> Option<Vec<usize>> {
        let seq = self.seq(node, field)?;
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let name = self.str(n, &f)?;
            match clients.iter().position(|c| c.name == name) {
                Some(g) => out.push(g),
                None => self.err(n.span(), &f, format!("unknown client group `{name}`")),
            }
        }
        Some(out)
    }

    /// A client group has one access network.
    fn check_clients_once(&mut self, read: &[Read<'_>], clients: &[ClientGroup]) {
        let mut served: BTreeMap<usize, &str> = BTreeMap::new();
        for r in read {
            for (i, &g) in r.net.clients.iter().enumerate() {
                if let Some(first) = served.insert(g, &r.net.name) {
                    let span = r.obj.get("clients").map_or(r.obj.map.span(), |n| n.span());
                    let name = &clients[g].name;
                    let reason = format!("`{name}` already has an access network, `{first}`");
                    self.err(span, &format!("{}[{i}]", r.obj.field("clients")), reason);
                }
            }
        }
    }

    /// No network is, through its providers, its own provider.
    fn check_provider_loops(&mut self, read: &[Read<'_>]) {
        let providers: Vec<&[usize]> = read.iter().map(|r| r.net.providers.as_slice()).collect();
        let mut reported = vec![false; read.len()];
        for start in 0..read.len() {
            let Some(cycle) = provider_cycle(&providers, start) else { continue };
            if cycle.iter().any(|&a| reported[a]) {
                continue;
            }
            for &a in &cycle {
                reported[a] = true;
            }
            let chain: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&a| read[a].net.name.as_str()).collect();
            let obj = &read[start].obj;
            let span = obj.get("providers").map_or(obj.map.span(), |n| n.span());
            self.err(span, &obj.field("providers"), format!("a provider loop: {}", chain.join(" → ")));
        }
    }

    fn ixps(&mut self, o: &Obj<'_>, nets: &[String], clients: &[ClientGroup], names: &Names<'_>) -> Vec<Ixp> {
        let objs = self.list_of_objs(o, "ixps", "ixp");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for obj in &objs {
            let name = self.name(obj);
            let at = self.req(obj, "at").and_then(|n| self.place(n, &obj.field("at"), clients, names));
            let members = self.req(obj, "members").map(|_| self.as_refs(obj, "members", nets, usize::MAX));
            if let (Some(name), Some(at), Some(members)) = (name, at, members) {
                seen.push((name.clone(), obj.map.span(), obj.field("name")));
                out.push(Ixp { name, at, members });
            }
        }
        self.unique(&seen);
        out
    }

    fn places(&mut self, node: &Node, field: &str, clients: &[ClientGroup], names: &Names<'_>) -> Option<Vec<Place>> {
        let seq = self.seq(node, field)?;
        let places: Vec<Option<Place>> =
            seq.iter().enumerate().map(|(i, n)| self.place(n, &format!("{field}[{i}]"), clients, names)).collect();
        places.into_iter().collect()
    }

    /// A place: `[lat, lon]`, `pop/NAME`, `region/NAME`, `client/NAME` or a city.
    fn place(&mut self, node: &Node, field: &str, clients: &[ClientGroup], names: &Names<'_>) -> Option<Place> {
        if let Some(seq) = node.as_sequence() {
            if seq.len() != 2 {
                self.err(node.span(), field, "expected [latitude, longitude] or a place's name");
                return None;
            }
            let lat = self.float(&seq[0], &format!("{field}[0] (latitude)"), -90.0, 90.0);
            let lon = self.float(&seq[1], &format!("{field}[1] (longitude)"), -180.0, 180.0);
            let location = [lat?, lon?];
            return Some(Place { name: format!("[{}, {}]", location[0], location[1]), location });
        }
        let text = self.str(node, field)?;
        let found = match text.split_once('/') {
            Some(("pop", n)) => names.pops.iter().find(|p| p.name == n).map(|p| p.location),
            Some(("region", n)) => names.regions.iter().find(|r| r.name == n).map(|r| r.location),
            Some(("client", n)) => clients.iter().find(|c| c.name == n).map(|c| c.location),
            _ => city(text),
        };
        match found {
            Some(location) => Some(Place { name: text.to_string(), location }),
            None => {
                let reason = match text.split_once('/') {
                    Some((kind @ ("pop" | "region" | "client"), n)) => format!("unknown {kind} `{n}`"),
                    _ => format!(
                        "unknown place `{text}`: not a city of 50,000 people or more by its GeoNames name (`NAME` or `NAME, CC`, data/geo/cities.tsv), nor `pop/`, `region/` or `client/NAME`, nor [latitude, longitude]"
                    ),
                };
                self.err(node.span(), field, reason);
                None
            }
        }
    }

    /// Each POP's BGP, read once the AS-level internet is known; then whether every
    /// network is joined to a POP.
    pub(super) fn pops_bgp(&mut self, top: &Obj<'_>, places: &[Location], internet: &Internet) -> Vec<PopBgp> {
        let pops = places.len();
        let mut out = vec![PopBgp::default(); pops];
        let Some(seq) = top.get("pops").and_then(|n| n.as_sequence()) else { return out };
        let objs = seq.iter().enumerate().filter_map(|(i, n)| {
            n.as_mapping().map(|map| Obj { map, path: format!("pops[{i}]"), schema: schema::object("pop") })
        });
        for (p, obj) in objs.enumerate().take(pops) {
            out[p] = self.pop_bgp(&obj, places[p], internet);
        }
        if internet.has_ases() {
            self.check_connected(top, &out, internet);
            self.check_no_catchment_lists(top);
        }
        out
    }

    /// Over an AS-level internet BGP decides every group's POP: a group's own `catchment:`
    /// list would be a second, contradicting answer.
    fn check_no_catchment_lists(&mut self, top: &Obj<'_>) {
        let Some(groups) = top.get("clients").and_then(|n| n.as_sequence()) else { return };
        for (i, g) in groups.iter().enumerate() {
            if let Some(n) = g.as_mapping().and_then(|m| m.get_node("catchment")) {
                let reason = "not with `internet.ases`: BGP over the AS-level internet decides which POP a group enters; move it with the POPs' `prepend`, `announce_to` and `communities`";
                self.err(n.span(), &format!("clients[{i}].catchment"), reason);
            }
        }
    }

    fn pop_bgp(&mut self, o: &Obj<'_>, at: Location, internet: &Internet) -> PopBgp {
        if !internet.has_ases() {
            for key in ["upstreams", "prepend", "announce_to", "communities"] {
                if let Some(n) = o.get(key) {
                    self.err(n.span(), &o.field(key), "needs `internet.ases`: the networks a POP announces to");
                }
            }
            return PopBgp::default();
        }
        let upstreams = match o.get("upstreams") {
            Some(n) => self.upstreams(n, &o.field("upstreams"), internet),
            None => Vec::new(),
        };
        let levers = self.levers(o, &Levers::default(), (&upstreams, at), internet);
        PopBgp { upstreams, levers }
    }

    /// The levers a mapping's `prepend`, `announce_to` and `communities` give, each field
    /// it leaves out taken from `base`, for the POP with these upstreams at this place.
    fn levers(
        &mut self,
        o: &Obj<'_>,
        base: &Levers,
        (upstreams, at): (&[Upstream], Location),
        internet: &Internet,
    ) -> Levers {
        let mut out = base.clone();
        if let Some(n) = o.get("announce_to") {
            out.announce_to = self.upstreams(n, &o.field("announce_to"), internet);
            for (i, u) in out.announce_to.iter().enumerate().filter(|(_, u)| !upstreams.contains(u)) {
                let f = format!("{}[{i}]", o.field("announce_to"));
                let span = n.as_sequence().and_then(|s| s.get(i)).map_or(n.span(), |item| item.span());
                self.err(span, &f, format!("`{}` is not one of the POP's `upstreams`", upstream_name(*u, internet)));
            }
        }
        if o.get("prepend").is_some() {
            out.prepend = self.int_field(o, "prepend").and_then(|v| u8::try_from(v).ok()).unwrap_or(0);
        }
        if let Some(n) = o.get("communities") {
            (out.no_export, out.region) = self.communities(n, &o.field("communities")).unwrap_or_default();
            if let Some(want) = out.region.filter(|&a| a != Area::of(at)) {
                let reason = format!(
                    "`region:{}` on a POP in {}: its upstreams meet it there, outside the scope, so none would pass the route on",
                    want.name(),
                    Area::of(at).name()
                );
                self.err(n.span(), &o.field("communities"), reason);
            }
        }
        out
    }

    /// A `communities` list: whether it holds no-export, and its region-only scope.
    fn communities(&mut self, node: &Node, field: &str) -> Option<(bool, Option<Area>)> {
        let seq = self.seq(node, field)?;
        let (mut no_export, mut region) = (false, None);
        for (i, n) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(c) = self.str(n, &f) else { continue };
            let area = c.strip_prefix("region:").map(|a| (a, Area::parse(a)));
            match area {
                _ if c == "no-export" => no_export = true,
                Some((_, Some(a))) if region.is_none_or(|r| r == a) => region = Some(a),
                Some((_, Some(_))) => {
                    self.err(n.span(), &f, "a second region: an announcement has one region-only scope")
                }
                Some((a, None)) => {
                    let known: Vec<&str> = Area::ALL.iter().map(|a| a.name()).collect();
                    self.err(n.span(), &f, format!("unknown area `{a}` (areas: {})", known.join(", ")));
                }
                None => self.err(
                    n.span(),
                    &f,
                    format!("unknown community `{c}` (expected: no-export, or region:AREA such as region:europe)"),
                ),
            }
        }
        Some((no_export, region))
    }

    /// Each VIP's `announce:` entries: its levers at the POPs it names, over theirs.
    pub(super) fn vips_announce(&mut self, top: &Obj<'_>, vips: &mut [Vip], pops: &[PopSite], internet: &Internet) {
        let Some(seq) = top.get("vips").and_then(|n| n.as_sequence()) else { return };
        for (v, node) in seq.iter().enumerate().take(vips.len()) {
            let Some(entries) = node.as_mapping().and_then(|m| m.get_node("announce")) else { continue };
            let field = format!("vips[{v}].announce");
            if !internet.has_ases() {
                self.err(entries.span(), &field, "needs `internet.ases`: the networks a POP announces to");
                continue;
            }
            let Some(map) = entries.as_mapping() else {
                self.err(entries.span(), &field, "expected a mapping of POP names to levers");
                continue;
            };
            for (name, entry) in map.iter() {
                let f = format!("{field}.{}", name.as_str());
                let Some(p) = pops.iter().position(|p| p.name == name.as_str()) else {
                    self.err(name.span(), &f, format!("unknown POP `{}`", name.as_str()));
                    continue;
                };
                if !vips[v].pops.contains(&p) {
                    let reason = format!("`{}` does not publish this VIP (its `pops`)", name.as_str());
                    self.err(name.span(), &f, reason);
                    continue;
                }
                let Some(o) = self.obj(entry, &f, "announce") else { continue };
                let pop = (&pops[p].bgp.upstreams[..], pops[p].location);
                let levers = self.levers(&o, &pops[p].bgp.levers, pop, internet);
                vips[v].announce.insert(p, levers);
            }
        }
    }

    fn upstreams(&mut self, node: &Node, field: &str, internet: &Internet) -> Vec<Upstream> {
        let Some(seq) = self.seq(node, field) else { return Vec::new() };
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(text) = self.str(n, &f) else { continue };
            let found = match text.strip_prefix("ixp/") {
                Some(ixp) => internet.ixps.iter().position(|x| x.name == ixp).map(Upstream::Ixp),
                None => internet.ases.iter().position(|a| a.name == text).map(Upstream::As),
            };
            match found {
                Some(u) if out.contains(&u) => self.err(n.span(), &f, format!("`{text}` is listed twice")),
                Some(u) => out.push(u),
                None if text.starts_with("ixp/") => {
                    let known: Vec<String> = internet.ixps.iter().map(|x| x.name.clone()).collect();
                    self.err(n.span(), &f, format!("unknown IXP `{text}` (internet.ixps: {})", shown(&known)));
                }
                None => {
                    let known: Vec<String> = internet.ases.iter().map(|a| a.name.clone()).collect();
                    self.err(n.span(), &f, format!("unknown network `{text}` (internet.ases: {})", shown(&known)));
                }
            }
        }
        out
    }

    /// Every network of `internet.ases` is joined to a POP.
    fn check_connected(&mut self, top: &Obj<'_>, pops: &[PopBgp], internet: &Internet) {
        let joined = joined_to_pops(pops, internet);
        let ases = top.get("internet").and_then(|n| n.as_mapping()).and_then(|m| m.get_node("ases"));
        let items = ases.and_then(|n| n.as_sequence());
        for (i, net) in internet.ases.iter().enumerate().filter(|&(i, _)| !joined[i]) {
            let span = items.and_then(|s| s.get(i)).or(ases).map_or(top.map.span(), |n| n.span());
            let reason = format!(
                "`{}` is not connected to any POP: no chain of providers, peers, IXPs and POP upstreams joins it to one",
                net.name
            );
            self.err(span, &format!("internet.ases[{i}]"), reason);
        }
    }
}

/// Which networks a chain of relationships joins to a POP (union of components).
fn joined_to_pops(pops: &[PopBgp], internet: &Internet) -> Vec<bool> {
    let n = internet.ases.len();
    let cdn = n;
    let mut parent: Vec<usize> = (0..=n).collect();
    fn root(parent: &mut [usize], mut a: usize) -> usize {
        while parent[a] != a {
            parent[a] = parent[parent[a]];
            a = parent[a];
        }
        a
    }
    let mut join = |a: usize, b: usize| {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    };
    for (a, net) in internet.ases.iter().enumerate() {
        for &b in net.providers.iter().chain(&net.peers) {
            join(a, b);
        }
    }
    for ixp in &internet.ixps {
        for w in ixp.members.windows(2) {
            join(w[0], w[1]);
        }
    }
    for bgp in pops {
        for u in &bgp.upstreams {
            match *u {
                Upstream::As(a) => join(cdn, a),
                Upstream::Ixp(x) => internet.ixps[x].members.iter().for_each(|&m| join(cdn, m)),
            }
        }
    }
    let top = root(&mut parent, cdn);
    (0..n).map(|a| root(&mut parent, a) == top).collect()
}

/// A cycle through providers from `start` back to it, when there is one.
fn provider_cycle(providers: &[&[usize]], start: usize) -> Option<Vec<usize>> {
    // Depth-first with the path kept; each network entered once per search.
    let mut path = vec![start];
    let mut next = vec![0usize];
    let mut seen = vec![false; providers.len()];
    seen[start] = true;
    while let Some(&at) = path.last() {
        let i = next.last_mut()?;
        let Some(&p) = providers[at].get(*i) else {
            path.pop();
            next.pop();
            continue;
        };
        *i += 1;
        if p == start {
            return Some(path);
        }
        if !seen[p] {
            seen[p] = true;
            path.push(p);
            next.push(0);
        }
    }
    None
}

/// A city by its GeoNames name, the largest of that name, or `NAME, CC`.
pub(crate) fn city(text: &str) -> Option<Location> {
    let (name, country) = match text.rsplit_once(", ") {
        Some((n, cc)) if cc.len() == 2 && cc.chars().all(|c| c.is_ascii_uppercase()) => (n, Some(cc)),
        _ => (text, None),
    };
    CITIES
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name) && country.is_none_or(|cc| c.country == cc))
        .map(|c| c.location)
}

fn upstream_name(u: Upstream, internet: &Internet) -> String {
    match u {
        Upstream::As(a) => internet.ases[a].name.clone(),
        Upstream::Ixp(x) => format!("ixp/{}", internet.ixps[x].name),
    }
}

fn shown(names: &[String]) -> String {
    if names.is_empty() {
        return "none defined".to_string();
    }
    let mut s = names.iter().take(NAMES_SHOWN_MAX).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > NAMES_SHOWN_MAX {
        s.push_str(&format!(", … {} more", names.len() - NAMES_SHOWN_MAX));
    }
    s
}
