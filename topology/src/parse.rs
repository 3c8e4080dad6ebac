//! The walk from a YAML node tree (with positions) to a resolved `Topology`. Every check
//! records a diagnostic at the node it concerns and parsing goes on, so one run reports
//! every problem in the file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use anyedge_ccn::geo::Location;
use anyedge_region::HealthConfig;
use anyedge_region::cidr::SOURCE_PREFIX_V4;
use anyedge_region::config::HealthProtocol;
use anyedge_region::config::{CONN_TABLE_DEFAULT, MAGLEV_TABLE_DEFAULT, WEIGHT_DEFAULT};
use marked_yaml::loader::LoadError;
use marked_yaml::types::{MarkedMappingNode, MarkedSequenceNode};
use marked_yaml::{Node, Span};

use super::values::{Cidr, parse_bandwidth_bps, parse_duration_ns, parse_percent};
use super::*;
use crate::calibrations::{BACKBONE_DELAY_DEFAULT, INTERNET_DELAY_DEFAULT};
use crate::schema;
use anyedge_control::table::{QUIC_SCHEDULERS, SCHEDULERS};

mod delay;
use anyedge_region::security::{Action, Ports, Rule, SecurityGroup};
pub use delay::builtin as builtin_delay;

const MS: u64 = 1_000_000;
/// Simulated clients are addressed from 198.18.64.1 upwards (49,150 addresses to
/// 198.18.255.253, some of which groups' own blocks may take).
pub const CLIENTS_MAX: u64 = 48_000;
/// Each class of a group takes two source-port slots (anycast, direct).
pub const CLASSES_PER_GROUP_MAX: usize = 27;
const S: u64 = 1_000_000_000;

fn ip_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Longest reason a diagnostic quotes; longer ones (a 100 KB value echoed) are cut.
const REASON_MAX: usize = 200;

/// The text as the YAML reader should see it: without a UTF-8 byte-order mark, with
/// CR-only and CRLF line ends as LF; or the first character no topology file holds
/// (NUL and other control characters), and where it is.
fn clean(text: &str) -> Result<String, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    for (i, line) in text.lines().enumerate() {
        if let Some((col, c)) = line.char_indices().find(|&(_, c)| c.is_control() && c != '\t') {
            let what =
                if c == '\0' { "a NUL byte".to_string() } else { format!("control character U+{:04X}", c as u32) };
            let col = line[..col].chars().count() + 1;
            return Err(diag_at(i + 1, col, "file", &format!("{what}: a topology file is text")));
        }
    }
    Ok(text)
}

/// The line of a document marker (`---`, `...`) that starts a second document.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    let mut ended = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        let marker = t == "---" || t.starts_with("--- ") || t == "...";
        if marker && (content || ended) {
            if t == "..." {
                ended = true;
                continue;
            }
            return Some(i + 1);
        }
        let meaningful = !t.trim().is_empty() && !t.trim_start().starts_with('#') && !marker;
        if meaningful && ended {
            return Some(i + 1);
        }
        content |= meaningful;
    }
    None
}

pub(super) fn parse(text: &str, sets: &[crate::Override]) -> Result<Topology, Vec<Diagnostic>> {
    let text = &clean(text).map_err(|d| vec![d])?;
    if let Some(line) = second_document(text) {
        let reason = "a second YAML document: a file holds one topology";
        return Err(vec![diag_at(line, 1, "file", reason)]);
    }
    let lines = text.lines().count().max(1);
    let meaningful = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    });
    if !meaningful {
        return Err(vec![diag_at(
            1,
            1,
            "file",
            "the file is empty: a topology needs name, vips, pops, regions, clients and traffic",
        )]);
    }
    let mut root = match marked_yaml::parse_yaml(0, text) {
        Ok(root) => root,
        Err(e) => return Err(vec![load_error(&e)]),
    };
    for o in sets {
        crate::overrides::apply(&mut root, o).map_err(|reason| vec![diag_at(1, 1, &o.path, &reason)])?;
    }
    let mut p = Parser { diags: Vec::new(), paths: Vec::new() };
    let topology = p.topology(&root);
    match topology {
        Some(t) if p.diags.is_empty() => Ok(t),
        _ => {
            let mut diags = p.diags;
            for d in &mut diags {
                // A mapping that ends the file ends past its last line: point at the last.
                if d.line > lines {
                    (d.line, d.col) = (lines, 1);
                }
                if d.reason.len() > REASON_MAX {
                    let cut = (0..=REASON_MAX).rev().find(|&i| d.reason.is_char_boundary(i)).unwrap_or(0);
                    d.reason = format!("{}…", &d.reason[..cut]);
                }
            }
            diags.sort_by_key(|d| (d.line, d.col));
            diags.dedup();
            if diags.is_empty() {
                diags.push(diag_at(1, 1, "file", "invalid topology"));
            }
            Err(diags)
        }
    }
}

fn diag_at(line: usize, col: usize, field: &str, reason: &str) -> Diagnostic {
    Diagnostic { line, col, field: field.to_string(), reason: reason.to_string() }
}

fn load_error(e: &LoadError) -> Diagnostic {
    let (marker, reason) = match e {
        LoadError::TopLevelMustBeMapping(m) => {
            (*m, "the top level must be a mapping (name: ..., vips: ...)".to_string())
        }
        LoadError::TopLevelMustBeSequence(m) => (*m, "the top level must be a sequence".to_string()),
        LoadError::UnexpectedAnchor(m) => (*m, "YAML anchors are not supported".to_string()),
        LoadError::MappingKeyMustBeScalar(m) => (*m, "mapping keys must be plain scalars".to_string()),
        LoadError::UnexpectedTag(m) => (*m, "YAML tags are not supported".to_string()),
        LoadError::ScanError(m, se) => (*m, format!("YAML syntax error: {}", se.info())),
        LoadError::DuplicateKey(inner) => {
            let span = inner.key.span();
            let (line, col) = span.start().map_or((1, 1), |m| (m.line(), m.column()));
            return Diagnostic { line, col, field: inner.key.as_str().to_string(), reason: "duplicate key".into() };
        }
        #[allow(unreachable_patterns)]
        _ => return diag_at(1, 1, "file", &e.to_string()),
    };
    Diagnostic { line: marker.line(), col: marker.column(), field: "yaml".into(), reason }
}

fn pos(span: &Span) -> (usize, usize) {
    span.start().map_or((1, 1), |m| (m.line(), m.column().max(1)))
}

/// A mapping with the path that leads to it and the schema's description of its kind
/// (its keys, and each field's default and range).
struct Obj<'a> {
    map: &'a MarkedMappingNode,
    path: String,
    schema: &'static schema::Object,
}

impl<'a> Obj<'a> {
    /// The schema's field `key` of this mapping's kind: every key the parser reads is in it.
    fn spec(&self, key: &str) -> &'static schema::Field {
        self.schema.field(key).unwrap_or_else(|| panic!("`{}` has no field `{key}` in the schema", self.schema.name))
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn get(&self, key: &str) -> Option<&'a Node> {
        self.map.get_node(key)
    }
}

struct Parser {
    diags: Vec<Diagnostic>,
    /// Each backend address bound so far and whether (and how) it is on the internet.
    paths: Vec<(IpAddr, Option<(Egress, usize)>)>,
}

/// Places a backend may live, for resolving `region:` and `idc:`.
struct Sites<'t> {
    regions: &'t [String],
    idcs: &'t [Idc],
    nat_gateways: &'t [NatGateway],
}

/// Names found so far, for resolving references.
struct Names<'t> {
    pops: &'t [PopSite],
    regions: &'t [Region],
    control_nodes: u8,
}

impl Parser {
    fn err(&mut self, span: &Span, field: &str, reason: impl Into<String>) {
        let (line, col) = pos(span);
        self.diags.push(Diagnostic { line, col, field: field.to_string(), reason: reason.into() });
    }

    /// The mapping at `node`, a `kind` of the schema: a key the schema does not list for
    /// it is refused.
    fn obj<'a>(&mut self, node: &'a Node, path: &str, kind: &str) -> Option<Obj<'a>> {
        let Some(map) = node.as_mapping() else {
            self.err(node.span(), path, "expected a mapping (key: value)");
            return None;
        };
        let schema = schema::object(kind);
        let allowed = &schema.keys;
        let obj = Obj { map, path: path.to_string(), schema };
        for (key, _) in map.iter() {
            if !allowed.contains(&key.as_str()) {
                self.err(
                    key.span(),
                    &obj.field(key.as_str()),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(obj)
    }

    fn req<'a>(&mut self, obj: &Obj<'a>, key: &str) -> Option<&'a Node> {
        let node = obj.get(key);
        if node.is_none() {
            // A block mapping's own span starts after its first key; point at that key.
            let span = obj.map.iter().next().map_or(obj.map.span(), |(k, _)| k.span());
            self.err(span, &obj.field(key), "missing (required)");
        }
        node
    }

    fn str<'a>(&mut self, node: &'a Node, field: &str) -> Option<&'a str> {
        match node.as_scalar() {
            Some(s) => Some(s.as_str()),
            None => {
                self.err(node.span(), field, "expected a single value");
                None
            }
        }
    }

    fn seq<'a>(&mut self, node: &'a Node, field: &str) -> Option<&'a MarkedSequenceNode> {
        match node.as_sequence() {
            Some(s) => Some(s),
            None => {
                self.err(node.span(), field, "expected a list");
                None
            }
        }
    }

    fn name(&mut self, obj: &Obj<'_>) -> Option<String> {
        let node = self.req(obj, "name")?;
        let name = self.str(node, &obj.field("name"))?;
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            self.err(node.span(), &obj.field("name"), format!("`{name}` must be letters, digits, - or _"));
            return None;
        }
        Some(name.to_string())
    }

    fn parsed<T: FromStr>(&mut self, node: &Node, field: &str, what: &str) -> Option<T> {
        let text = self.str(node, field)?;
        match text.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(node.span(), field, format!("`{text}` is not {what}"));
                None
            }
        }
    }

    fn int(&mut self, node: &Node, field: &str, min: i64, max: i64) -> Option<i64> {
        let v: i64 = self.parsed(node, field, "an integer")?;
        if v < min || v > max {
            self.err(node.span(), field, format!("{v} is outside {min}–{max}"));
            return None;
        }
        Some(v)
    }

    fn float(&mut self, node: &Node, field: &str, min: f64, max: f64) -> Option<f64> {
        let v: f64 = self.parsed(node, field, "a number")?;
        if !v.is_finite() || v < min || v > max {
            self.err(node.span(), field, format!("{v} is outside {min}–{max}"));
            return None;
        }
        Some(v)
    }

    fn with<T>(&mut self, node: &Node, field: &str, f: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let text = self.str(node, field)?;
        match f(text) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.err(node.span(), field, reason);
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, field: &str) -> Option<u64> {
        self.with(node, field, parse_duration_ns)
    }

    /// An optional duration that must lie within [min_ns, max_ns].
    fn duration_within(&mut self, obj: &Obj<'_>, key: &str, default: u64, min_ns: u64, max_ns: u64) -> Option<u64> {
        let Some(node) = obj.get(key) else { return Some(default) };
        let ns = self.duration(node, &obj.field(key))?;
        if !(min_ns..=max_ns).contains(&ns) {
            let reason = format!("must lie within {} – {}", show_ns(min_ns), show_ns(max_ns));
            self.err(node.span(), &obj.field(key), reason);
            return None;
        }
        Some(ns)
    }

    fn opt_percent(&mut self, obj: &Obj<'_>, key: &str, default: f64) -> Option<f64> {
        match obj.get(key) {
            Some(n) => self.with(n, &obj.field(key), parse_percent),
            None => Some(default),
        }
    }

    /// An integer of `o` within the schema's range for it; when absent, the schema's
    /// default (none for a field without one).
    fn int_field(&mut self, o: &Obj<'_>, key: &str) -> Option<i64> {
        let spec = o.spec(key);
        let (min, max) = spec.int_range().unwrap_or_else(|| panic!("`{key}` is an integer in the schema"));
        match o.get(key) {
            Some(n) => self.int(n, &o.field(key), min, max),
            None => spec.default_i64(),
        }
    }

    /// A number of `o` within the schema's range for it; when absent, the schema's default.
    fn float_field(&mut self, o: &Obj<'_>, key: &str) -> Option<f64> {
        let spec = o.spec(key);
        let (min, max) = spec.float_range().unwrap_or_else(|| panic!("`{key}` is a number in the schema"));
        match o.get(key) {
            Some(n) => self.float(n, &o.field(key), min, max),
            None => spec.default_f64(),
        }
    }

    /// A duration of `o` within the schema's range for it; when absent, `default` (the
    /// schema's, or an enclosing mapping's value it inherits).
    fn duration_or(&mut self, o: &Obj<'_>, key: &str, default: u64) -> Option<u64> {
        let (min_ns, max_ns) = o.spec(key).duration_range();
        self.duration_within(o, key, default, min_ns, max_ns)
    }

    /// [`Parser::duration_or`] with the schema's default.
    fn duration_field(&mut self, o: &Obj<'_>, key: &str) -> Option<u64> {
        let default = o.spec(key).default_ns().unwrap_or_else(|| panic!("`{key}` has a duration default"));
        self.duration_or(o, key, default)
    }

    /// A percentage of `o`; when absent, the schema's default.
    fn percent_field(&mut self, o: &Obj<'_>, key: &str) -> Option<f64> {
        let default = o.spec(key).default_percent().unwrap_or_else(|| panic!("`{key}` has a percent default"));
        self.opt_percent(o, key, default)
    }

    fn port(&mut self, node: &Node, field: &str) -> Option<u16> {
        self.int(node, field, 1, 65_535).map(|p| p as u16)
    }

    fn location(&mut self, obj: &Obj<'_>) -> Option<Location> {
        let field = obj.field("location");
        let node = self.req(obj, "location")?;
        let seq = self.seq(node, &field)?;
        if seq.len() != 2 {
            self.err(node.span(), &field, "expected [latitude, longitude]");
            return None;
        }
        let lat = self.float(&seq[0], &format!("{field}[0] (latitude)"), -90.0, 90.0);
        let lon = self.float(&seq[1], &format!("{field}[1] (longitude)"), -180.0, 180.0);
        Some([lat?, lon?])
    }

    fn list_of_objs<'a>(&mut self, obj: &Obj<'a>, key: &str, kind: &str) -> Vec<Obj<'a>> {
        let field = obj.field(key);
        let Some(node) = self.req(obj, key) else { return vec![] };
        let Some(seq) = self.seq(node, &field) else {
            return vec![];
        };
        if seq.is_empty() {
            self.err(node.span(), &field, "must not be empty");
        }
        seq.iter().enumerate().filter_map(|(i, n)| self.obj(n, &format!("{field}[{i}]"), kind)).collect()
    }

    fn unique(&mut self, items: &[(String, &Span, String)]) {
        let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
        for (name, span, field) in items {
            if seen.insert(name.as_str(), ()).is_some() {
                self.err(span, field, format!("`{name}` is defined twice"));
            }
        }
    }

    fn topology(&mut self, root: &Node) -> Option<Topology> {
        let top = self.obj(root, "", "topology")?;
        let name = self.name(&top);
        let seed = match top.get("seed") {
            Some(n) => self.parsed::<u64>(n, "seed", "a non-negative integer"),
            None => top.spec("seed").default_i64().map(|s| s as u64),
        };
        let duration_ns = self.duration_field(&top, "duration");
        let pops = self.pops(&top);
        let idcs = self.idcs(&top);
        let nat_gateways = self.nat_gateways(&top);
        let regions = self.regions(&top, &idcs, &nat_gateways);
        let control = self.control(&top, &pops, &regions);
        let names = Names { pops: &pops, regions: &regions, control_nodes: control.as_ref().map_or(0, |c| c.nodes) };
        let vips = self.vips(&top, &names);
        let backbone = self.backbone(&top, &names);
        if let Some(bb) = &backbone {
            self.check_backbone_paths(&top, &vips, bb, &pops, &regions);
        }
        let traffic = self.traffic(&top, &vips, &regions);
        let traffic_names: Vec<String> = match top.get("traffic").and_then(|n| n.as_mapping()) {
            Some(m) => m.keys().map(|k| k.as_str().to_string()).collect(),
            None => vec![],
        };
        let clients = self.clients(&top, &traffic_names, &names);
        self.check_client_addresses(&top, &clients, &vips, &traffic, &regions);
        let internet = self.internet(&top, &clients, &names);
        let failover = self.failover(&top);
        if let (Some(f), Some(bb)) = (failover.as_ref(), backbone.as_ref()) {
            self.check_probe_window(&top, f, bb, &pops, &regions);
        }
        let client_names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
        let faults = self.faults(&top, &names, &client_names, duration_ns.unwrap_or(u64::MAX));
        let security_groups = self.security_groups(&top, &names);
        Some(Topology {
            name: name?,
            seed: seed?,
            duration_ns: duration_ns?,
            vips,
            pops,
            regions,
            idcs,
            nat_gateways,
            backbone: backbone?,
            internet: internet?,
            clients,
            traffic,
            failover: failover?,
            faults,
            security_groups,
            control,
        })
    }

    /// `control: { nodes: 3|5, sites: [REGION|POP, …] }`. Sites default to the regions,
    /// then the POPs, in file order.
    fn control(&mut self, top: &Obj<'_>, pops: &[PopSite], regions: &[Region]) -> Option<Control> {
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

    fn pops(&mut self, top: &Obj<'_>) -> Vec<PopSite> {
        let objs = self.list_of_objs(top, "pops", "pop");
        let mut pops = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let (name, location) = (self.name(o), self.location(o));
            // Kept with a bad location (already an error) so references still resolve.
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                pops.push(PopSite { name, location: location.unwrap_or([0.0, 0.0]) });
            }
        }
        self.unique(&seen);
        pops
    }

    fn idcs(&mut self, top: &Obj<'_>) -> Vec<Idc> {
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
    fn region_names(top: &Obj<'_>) -> Vec<String> {
        let Some(seq) = top.get("regions").and_then(|n| n.as_sequence()) else { return vec![] };
        seq.iter()
            .filter_map(|r| r.as_mapping().and_then(|m| m.get_scalar("name")).map(|n| n.as_str().to_string()))
            .collect()
    }

    /// `nat_gateways: [{ name, region, public }]`.
    fn nat_gateways(&mut self, top: &Obj<'_>) -> Vec<NatGateway> {
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

    fn regions(&mut self, top: &Obj<'_>, idcs: &[Idc], nat_gateways: &[NatGateway]) -> Vec<Region> {
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
    fn schema_health() -> HealthConfig {
        let ns = |key| schema::default_of("health", key, schema::Field::default_ns);
        let count = |key| schema::default_of("health", key, schema::Field::default_i64) as u32;
        debug_assert_eq!(schema::default_of("health", "protocol", |f| f.default_str().map(str::to_string)), "tcp");
        HealthConfig::tcp(ns("interval"), ns("timeout"), count("healthy"), count("unhealthy"))
    }

    /// `health:` of `owner` (a region, or a backend group overriding it), over `base`.
    fn health(&mut self, owner: &Obj<'_>, base: &HealthConfig) -> Option<HealthConfig> {
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

    fn health_protocol(&mut self, o: &Obj<'_>, base: &HealthProtocol) -> Option<HealthProtocol> {
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
    fn snat(&mut self, region: &Obj<'_>, groups: &[BackendGroup]) -> Vec<IpAddr> {
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

    fn backend_groups(
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
            // A group is a list of backends, or { health: {...}, members: [...] }.
            let (list, health, list_field) = match value.as_mapping() {
                Some(_) => {
                    let Some(g) = self.obj(value, &gfield, "backend_group") else { continue };
                    let base = region_health.cloned().unwrap_or(HealthConfig::tcp(2 * S, S, 3, 3));
                    let health = if g.get("health").is_some() { self.health(&g, &base) } else { None };
                    let Some(members) = self.req(&g, "members") else { continue };
                    (members, health, format!("{gfield}.members"))
                }
                None => (value, None, gfield.clone()),
            };
            let gfield = list_field;
            let Some(seq) = self.seq(list, &gfield) else { continue };
            let mut backends: Vec<Backend> = Vec::new();
            for (i, item) in seq.iter().enumerate() {
                let bfield = format!("{gfield}[{i}]");
                let Some(o) = self.obj(item, &bfield, "backend") else {
                    continue;
                };
                if let Some(b) = self.backend(&o, sites, region_index) {
                    if backends.iter().any(|x| x.addr == b.addr) {
                        self.err(item.span(), &bfield, format!("backend {} is bound twice in this group", b.addr));
                    }
                    // One address, one way there: a host is either on the internet through
                    // one egress, or not on it.
                    // (An internet backend is bound from one region: its egress node is the
                    // way back for every flow to it.)
                    let egress = match b.site {
                        Site::Internet(e) => Some((e, region_index)),
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
                            let reason =
                                format!("{ip} is bound {} elsewhere: one host, one way to reach it", say(before));
                            let span = o.get("via").map_or(item.span(), |n| n.span());
                            self.err(span, &format!("{bfield}.via"), reason);
                        }
                        Some(_) => {}
                        None => self.paths.push((ip, egress)),
                    }
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

    /// A backend's `via:` — `nat/NAME` (a NAT gateway of region `region`) or `router`.
    fn egress(
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

    fn backend(&mut self, o: &Obj<'_>, sites: &Sites<'_>, region: usize) -> Option<Backend> {
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
        Some(Backend { addr: SocketAddr::new(ip?, port?), weight: weight.unwrap_or(WEIGHT_DEFAULT), site })
    }

    fn pop_ref(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<usize> {
        let name = self.str(node, field)?;
        let i = names.pops.iter().position(|p| p.name == name);
        if i.is_none() {
            self.err(node.span(), field, format!("unknown POP `{name}`"));
        }
        i
    }

    fn vips(&mut self, top: &Obj<'_>, names: &Names<'_>) -> Vec<Vip> {
        let objs = self.list_of_objs(top, "vips", "vip");
        let mut vips = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let name = self.name(o);
            let ipv4 =
                self.req(o, "ipv4").and_then(|n| self.parsed::<Ipv4Addr>(n, &o.field("ipv4"), "an IPv4 address"));
            if let (Some(ip), Some(n)) = (ipv4, o.get("ipv4")) {
                let kind = if ip.is_loopback() {
                    Some("loopback")
                } else if ip.is_unspecified() {
                    Some("unspecified")
                } else if ip.is_multicast() {
                    Some("multicast")
                } else if ip.is_broadcast() {
                    Some("broadcast")
                } else if ip.is_link_local() {
                    Some("link-local")
                } else {
                    None
                };
                if let Some(kind) = kind {
                    self.err(n.span(), &o.field("ipv4"), format!("{ip} is not a routable unicast address ({kind})"));
                }
                let backend = names
                    .regions
                    .iter()
                    .flat_map(|r| &r.backend_groups)
                    .flat_map(|g| &g.backends)
                    .find(|b| b.addr.ip() == IpAddr::V4(ip));
                if let Some(b) = backend {
                    self.err(
                        n.span(),
                        &o.field("ipv4"),
                        format!("{ip} is also a backend ({}): a VIP needs an address of its own", b.addr),
                    );
                }
            }
            let ipv6 = match o.get("ipv6") {
                Some(n) => self.parsed::<Ipv6Addr>(n, &o.field("ipv6"), "an IPv6 address"),
                None => None,
            };
            let home = self.req(o, "home").and_then(|n| {
                let region = self.str(n, &o.field("home"))?;
                let i = names.regions.iter().position(|r| r.name == region);
                if i.is_none() {
                    self.err(n.span(), &o.field("home"), format!("unknown region `{region}`"));
                }
                i
            });
            let pops = self.publish_set(o, names).unwrap_or_default();
            let listeners = self.listeners(o, home.map(|h| &names.regions[h]));
            // Kept even when a field is wrong (the error is recorded and the file fails),
            // so references to this VIP do not add errors of their own.
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                let ipv4 = ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED);
                vips.push(Vip { name, ipv4, ipv6, home: home.unwrap_or(0), pops, listeners });
            }
        }
        self.unique(&seen);
        vips
    }

    fn publish_set(&mut self, o: &Obj<'_>, names: &Names<'_>) -> Option<Vec<usize>> {
        let field = o.field("pops");
        let node = self.req(o, "pops")?;
        if let Some(s) = node.as_scalar() {
            if s.as_str() == "all" {
                return Some((0..names.pops.len()).collect());
            }
            self.err(node.span(), &field, "expected `all` or a list of POP names");
            return None;
        }
        let seq = self.seq(node, &field)?;
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            if let Some(p) = self.pop_ref(n, &format!("{field}[{i}]"), names) {
                out.push(p);
            }
        }
        if out.is_empty() && !seq.is_empty() {
            return None;
        }
        if seq.is_empty() {
            self.err(node.span(), &field, "a VIP must be published at one POP at least");
            return None;
        }
        Some(out)
    }

    fn listeners(&mut self, vip: &Obj<'_>, home: Option<&Region>) -> Vec<Listener> {
        let objs = self.list_of_objs(vip, "listeners", "listener");
        let mut out: Vec<Listener> = Vec::new();
        // Without an ipv6 address, a VIP never reaches IPv6 backends (no NAT46).
        let v4_only = vip.get("ipv6").is_none();
        for o in &objs {
            let Some(l) = self.listener(o, home) else { continue };
            if v4_only
                && let (Some(region), Some(n)) = (home, o.get("backends"))
                && let Some(b) = region
                    .backend_groups
                    .get(l.backend_group)
                    .and_then(|g| g.backends.iter().find(|b| b.addr.is_ipv6()))
            {
                let reason = format!(
                    "backend {} is IPv6 and this VIP has no ipv6 address: it would never be reached (give the VIP an ipv6 address)",
                    b.addr
                );
                self.err(n.span(), &o.field("backends"), reason);
            }
            let clash = out.iter().position(|x| x.port == l.port && x.protocol.transport() == l.protocol.transport());
            if let Some(j) = clash {
                let span = o.get("port").map_or(o.map.span(), |n| n.span());
                let space = match l.protocol.transport() {
                    anyedge_proto::Transport::Tcp => "TCP, TCP SSL, HTTP and HTTPS listeners share one port space",
                    anyedge_proto::Transport::Udp => "UDP and QUIC listeners share one port space",
                };
                let reason = format!("port {} is already used by {}.listeners[{j}] ({space})", l.port, vip.path);
                self.err(span, &o.field("port"), reason);
                continue;
            }
            out.push(l);
        }
        out
    }

    /// A listener with protocol and port; other fields fall back after recording an error.
    fn listener(&mut self, o: &Obj<'_>, home: Option<&Region>) -> Option<Listener> {
        let protocol = self.req(o, "protocol").and_then(|n| {
            let p = self.str(n, &o.field("protocol"))?;
            let proto = match p {
                "tcp" => ListenerProtocol::Tcp,
                "udp" => ListenerProtocol::Udp,
                "tcp-ssl" => ListenerProtocol::TcpSsl,
                "quic" => ListenerProtocol::Quic,
                "http" => ListenerProtocol::Http,
                "https" => ListenerProtocol::Https,
                other => {
                    self.err(
                        n.span(),
                        &o.field("protocol"),
                        format!("`{other}` is not one of tcp, udp, tcp-ssl, quic, http, https"),
                    );
                    return None;
                }
            };
            Some(proto)
        });
        let port = self.req(o, "port").and_then(|n| self.port(n, &o.field("port")));
        let scheduler = self.scheduler(o);
        let backend_group = self.req(o, "backends").and_then(|n| {
            let g = self.str(n, &o.field("backends"))?;
            let home = home?;
            let i = home.backend_groups.iter().position(|x| x.name == g);
            if i.is_none() {
                self.err(
                    n.span(),
                    &o.field("backends"),
                    format!("unknown backend group `{g}` in region `{}`", home.name),
                );
            }
            i
        });
        let persistence_ns = match o.get("persistence") {
            None => Some(None),
            Some(n) => self.persistence(n, &o.field("persistence"), protocol, scheduler),
        };
        if protocol == Some(ListenerProtocol::Quic)
            && let Some(Scheduler::Hash { .. } | Scheduler::Maglev { .. }) = scheduler
            && let Some(n) = o.get("scheduler")
        {
            let reason = format!("QUIC listeners schedule with {}", QUIC_SCHEDULERS.join(" or "));
            self.err(n.span(), &o.field("scheduler"), reason);
        }
        // QUIC listeners take IPv4 and IPv6-NAT64 VIPs: their backends are IPv4.
        if protocol == Some(ListenerProtocol::Quic)
            && let (Some(g), Some(home)) = (backend_group, home)
            && let Some(b) = home.backend_groups[g].backends.iter().find(|b| b.addr.is_ipv6())
            && let Some(n) = o.get("backends")
        {
            let reason = format!("QUIC listeners reach IPv4 backends only (IPv4 or NAT64 VIPs), not {}", b.addr);
            self.err(n.span(), &o.field("backends"), reason);
        }
        let mtls = match o.get("mtls") {
            None => schema::default_of("listener", "mtls", schema::Field::default_bool),
            Some(n) => {
                let on = self.parsed::<bool>(n, &o.field("mtls"), "true or false").unwrap_or(false);
                if on && protocol.is_some_and(|p| !(p.has_tls() || p == ListenerProtocol::Quic)) {
                    let reason = "mutual TLS needs a listener that terminates TLS (https, tcp-ssl or quic)";
                    self.err(n.span(), &o.field("mtls"), reason);
                }
                on
            }
        };
        Some(Listener {
            protocol: protocol?,
            port: port?,
            scheduler: scheduler.unwrap_or(Scheduler::Wrr),
            backend_group: backend_group.unwrap_or(0),
            persistence_ns: persistence_ns.flatten(),
            mtls,
        })
    }

    fn scheduler(&mut self, o: &Obj<'_>) -> Option<Scheduler> {
        let table = match o.get("table") {
            Some(n) => {
                let t = self.int_field(o, "table")? as usize;
                if !is_prime(t) {
                    self.err(
                        n.span(),
                        &o.field("table"),
                        format!("{t} is not prime (Maglev needs a prime table size)"),
                    );
                    return None;
                }
                Some(t)
            }
            None => None,
        };
        let scheduler = match o.get("scheduler") {
            None => Scheduler::Wrr,
            Some(n) => match self.str(n, &o.field("scheduler"))? {
                "wrr" => Scheduler::Wrr,
                "wlc" => Scheduler::Wlc,
                "hash" => Scheduler::Hash { table_size: table.unwrap_or(MAGLEV_TABLE_DEFAULT) },
                "maglev" => Scheduler::Maglev { table_size: table.unwrap_or(MAGLEV_TABLE_DEFAULT) },
                other => {
                    self.err(
                        n.span(),
                        &o.field("scheduler"),
                        format!("`{other}` is not one of {}", SCHEDULERS.join(", ")),
                    );
                    return None;
                }
            },
        };
        if let (Some(n), Scheduler::Wrr | Scheduler::Wlc) = (o.get("table"), scheduler) {
            self.err(n.span(), &o.field("table"), "a lookup table applies only to the maglev and hash schedulers");
            return None;
        }
        Some(scheduler)
    }

    fn persistence(
        &mut self,
        n: &Node,
        field: &str,
        protocol: Option<ListenerProtocol>,
        scheduler: Option<Scheduler>,
    ) -> Option<Option<u64>> {
        let ttl = self.duration(n, field)?;
        if !(30 * S..=3600 * S).contains(&ttl) {
            let text = n.as_scalar().map_or("", |s| s.as_str()).to_string();
            self.err(n.span(), field, format!("{text} is outside 30s–3600s"));
            return None;
        }
        if protocol == Some(ListenerProtocol::Quic) {
            self.err(n.span(), field, "session persistence is not available on QUIC listeners");
            return None;
        }
        if scheduler.is_some_and(|s| s != Scheduler::Wrr) {
            self.err(n.span(), field, "session persistence works only with the wrr scheduler");
            return None;
        }
        Some(Some(ttl))
    }

    fn backbone(&mut self, top: &Obj<'_>, names: &Names<'_>) -> Option<Backbone> {
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
    fn check_backbone_paths(
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

    fn backbone_links(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<Vec<(usize, usize)>> {
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
    fn pop_region_pair(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<(usize, usize)> {
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

    fn internet(&mut self, top: &Obj<'_>, clients: &[ClientGroup], names: &Names<'_>) -> Option<Internet> {
        let ns = |key| schema::default_of("internet", key, schema::Field::default_ns);
        let default = Internet {
            delay: default_internet_delay(),
            pinned: Vec::new(),
            last_mile_ns: ns("last_mile"),
            last_mile_source: LAST_MILE_ASSUMED,
            jitter_ns: ns("jitter"),
            loss: schema::default_of("internet", "loss", schema::Field::default_percent),
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
        Some(Internet {
            delay: delay?,
            pinned: pinned?,
            last_mile_ns: last_mile_ns?,
            last_mile_source: if o.get("last_mile").is_some() { LAST_MILE_GIVEN } else { LAST_MILE_ASSUMED },
            jitter_ns: jitter_ns?,
            loss: loss?,
        })
    }

    fn traffic(&mut self, top: &Obj<'_>, vips: &[Vip], regions: &[Region]) -> Vec<TrafficClass> {
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

    fn traffic_class(&mut self, name: &str, o: &Obj<'_>, vips: &[Vip], regions: &[Region]) -> Option<TrafficClass> {
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

    fn clients(&mut self, top: &Obj<'_>, traffic: &[String], names: &Names<'_>) -> Vec<ClientGroup> {
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
            let reason = format!("{total} clients in all; at most {CLIENTS_MAX} are addressable");
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
    fn check_client_addresses(
        &mut self,
        top: &Obj<'_>,
        clients: &[ClientGroup],
        vips: &[Vip],
        traffic: &[TrafficClass],
        regions: &[Region],
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
        // Groups without `address:` are numbered from 198.18.64.0 upwards (the simulator's
        // default pool): no VIP or backend may sit where they land.
        let defaults: u32 = clients.iter().filter(|c| c.address.is_none()).map(|c| c.count).sum();
        let first = clients.iter().position(|c| c.address.is_none());
        if let (Some(i), true) = (first, defaults > 0) {
            let (low, high) =
                (u32::from(Ipv4Addr::new(198, 18, 64, 0)), u32::from(Ipv4Addr::new(198, 18, 64, 0)) + defaults);
            let inside = |a: &IpAddr| matches!(a, IpAddr::V4(v) if (low..=high).contains(&u32::from(*v)));
            let taken = vips
                .iter()
                .map(|v| IpAddr::V4(v.ipv4))
                .chain(
                    regions
                        .iter()
                        .flat_map(|r| r.backend_groups.iter().flat_map(|b| b.backends.iter().map(|b| b.addr.ip()))),
                )
                .find(inside);
            if let (Some(a), Some(node)) = (taken, seq.get(i)) {
                let reason = format!(
                    "clients without `address:` are numbered from 198.18.64.0 to {}, which holds {a}, a VIP or backend address: give the group an `address:` block",
                    Ipv4Addr::from(high)
                );
                self.err(node.span(), &format!("clients[{i}]"), reason);
            }
        }
    }

    fn traffic_refs(&mut self, node: &Node, field: &str, traffic: &[String]) -> Option<Vec<usize>> {
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

    fn failover(&mut self, top: &Obj<'_>) -> Option<Failover> {
        let (ns, count) = (
            |key| schema::default_of("failover", key, schema::Field::default_ns),
            |key| schema::default_of("failover", key, schema::Field::default_i64) as u32,
        );
        let default = Failover {
            probe_interval_ns: ns("probe_interval"),
            probe_misses: count("probe_misses"),
            bfd_interval_ns: ns("bfd_interval"),
            bfd_multiplier: count("bfd_multiplier"),
            route_converge_ns: ns("route_converge"),
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
        // BIRD takes BFD intervals of 10 ms and up; below that a busy host flaps. `off`:
        // no BFD, only the BGP session's hold timer finds a dead POP.
        let bfd_interval = match o.get("bfd_interval") {
            Some(n) if n.as_scalar().is_some_and(|v| v.as_str() == "off") => Some(0),
            _ => self.duration_within(&o, "bfd_interval", default.bfd_interval_ns, 10 * MS, 10_000 * MS),
        };
        let bfd_multiplier = self.int_field(&o, "bfd_multiplier").map(|m| m as u32);
        let (bfd_interval_ns, bfd_multiplier) = (bfd_interval?, bfd_multiplier?);
        let (probe_interval_ns, misses, pop_detect, route_converge_ns) =
            (interval?, misses?, pop_detect?, route_converge_ns?);
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
        Some(Failover { probe_interval_ns, probe_misses, bfd_interval_ns, bfd_multiplier, route_converge_ns })
    }

    /// A live peer is declared down when its answers take longer than `probe_misses`
    /// intervals: every backbone round trip must fit in that window.
    fn check_probe_window(&mut self, top: &Obj<'_>, f: &Failover, bb: &Backbone, pops: &[PopSite], regions: &[Region]) {
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
            // The defaults do not fit this world: say so where the backbone is described.
            if let Some(node) = top.get("backbone") {
                let reason = format!(
                    "the longest backbone round trip, pop/{} ↔ region/{} ({}), does not fit in the default \
                     failover window (probe_interval × probe_misses = {}): set failover.probe_misses",
                    pop.name,
                    region.name,
                    show_ns(rtt_ns),
                    show_ns(window_ns)
                );
                self.err(node.span(), "backbone", reason);
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

    /// `pop/NAME`, `region/NAME`, `clb/REGION/N` or `backend/IP:PORT`.
    fn target(&mut self, node: &Node, field: &str, names: &Names<'_>) -> Option<Target> {
        let text = self.str(node, field)?;
        let (kind, rest) = text.split_once('/').unwrap_or((text, ""));
        let found = match kind {
            "pop" => names.pops.iter().position(|p| p.name == rest).map(Target::Pop),
            "region" => names.regions.iter().position(|r| r.name == rest).map(Target::Region),
            "clb" => {
                let (region, number) = rest.rsplit_once('/').unwrap_or((rest, ""));
                let Ok(number) = number.parse::<u16>() else {
                    self.err(node.span(), field, format!("`{text}` is not clb/REGION/N"));
                    return None;
                };
                let r = names.regions.iter().position(|r| r.name == region);
                if let Some(r) = r.filter(|&r| !(1..=names.regions[r].clb_nodes).contains(&number)) {
                    let n = names.regions[r].clb_nodes;
                    let reason = format!(
                        "`{text}`: CLB nodes are numbered from 1, like control nodes: clb/{region}/1 … clb/{region}/{n}"
                    );
                    self.err(node.span(), field, reason);
                    return None;
                }
                r.map(|region| Target::Clb { region, index: number - 1 })
            }
            "backend" => {
                let Ok(addr) = rest.parse::<SocketAddr>() else {
                    self.err(node.span(), field, format!("`{rest}` is not IP:PORT"));
                    return None;
                };
                names
                    .regions
                    .iter()
                    .position(|r| r.backend_groups.iter().any(|g| g.backends.iter().any(|b| b.addr == addr)))
                    .map(|region| Target::Backend { region, addr })
            }
            "control" => match rest.parse::<u8>() {
                Ok(n) if (1..=names.control_nodes).contains(&n) => Some(Target::Control(n)),
                _ if names.control_nodes == 0 => {
                    self.err(node.span(), field, format!("`{text}`: the file has no `control:` section"));
                    return None;
                }
                _ => {
                    let reason = format!("`{text}` is not control/1 … control/{}", names.control_nodes);
                    self.err(node.span(), field, reason);
                    return None;
                }
            },
            _ => {
                let reason =
                    format!("`{text}` is not pop/NAME, region/NAME, clb/REGION/N, backend/IP:PORT or control/N");
                self.err(node.span(), field, reason);
                return None;
            }
        };
        if found.is_none() {
            self.err(node.span(), field, format!("unknown fault target `{text}`"));
        }
        found
    }

    fn security_groups(&mut self, top: &Obj<'_>, names: &Names<'_>) -> Vec<SecurityGroupDef> {
        if top.get("security_groups").is_none() {
            return vec![];
        }
        let objs = self.list_of_objs(top, "security_groups", "security_group");
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for o in &objs {
            let name = self.name(o);
            let bind = self.sg_bindings(o, names);
            let rules: Vec<Rule> =
                self.list_of_objs(o, "rules", "rule").iter().filter_map(|r| self.sg_rule(r)).collect();
            if let Some(name) = name {
                seen.push((name.clone(), o.map.span(), o.field("name")));
                out.push(SecurityGroupDef { group: SecurityGroup { name, rules }, bind });
            }
        }
        self.unique(&seen);
        out
    }

    fn sg_bindings(&mut self, o: &Obj<'_>, names: &Names<'_>) -> Vec<SgBinding> {
        let field = o.field("bind");
        let Some(node) = self.req(o, "bind") else { return vec![] };
        let Some(seq) = self.seq(node, &field) else { return vec![] };
        let mut out = Vec::new();
        for (i, n) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(text) = self.str(n, &f) else { continue };
            let binding = match text.split_once('/') {
                Some(("clb", rest)) => {
                    let (region, number) = match rest.split_once('/') {
                        Some((r, i)) => (r, Some(i.parse::<u16>().ok())),
                        None => (rest, None),
                    };
                    names.regions.iter().position(|r| r.name == region).and_then(|r| {
                        // `clb/REGION/N` counts from 1, as everywhere users name a node.
                        let index = match number {
                            None => None,
                            Some(Some(n)) if (1..=names.regions[r].clb_nodes).contains(&n) => Some(n - 1),
                            Some(_) => return None,
                        };
                        Some(SgBinding::Clb { region: r, index })
                    })
                }
                Some(("backend", rest)) => {
                    let addr: Option<SocketAddr> = rest.parse().ok();
                    addr.filter(|a| {
                        names
                            .regions
                            .iter()
                            .flat_map(|r| &r.backend_groups)
                            .flat_map(|g| &g.backends)
                            .any(|b| b.addr == *a)
                    })
                    .map(|a| SgBinding::Backend(a.ip()))
                }
                _ => {
                    self.err(n.span(), &f, format!("`{text}` is not backend/IP:PORT or clb/REGION"));
                    continue;
                }
            };
            match binding {
                Some(b) => out.push(b),
                None => self.err(n.span(), &f, format!("unknown binding target `{text}`")),
            }
        }
        out
    }

    fn sg_rule(&mut self, r: &Obj<'_>) -> Option<Rule> {
        let source = self.req(r, "source").and_then(|n| self.with(n, &r.field("source"), Cidr::parse));
        let ports = self.req(r, "port").and_then(|n| {
            self.with(n, &r.field("port"), |t| {
                let t = t.trim();
                let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p >= 1);
                if t == "any" {
                    return Ok(Ports::Any);
                }
                let (lo, hi) = t.split_once('-').unwrap_or((t, t));
                match (port(lo), port(hi)) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(Ports::Range(lo, hi)),
                    _ => Err(format!("`{t}` is not a port 1–65535, a range like 8000-8100, or any")),
                }
            })
        });
        let action = self.req(r, "action").and_then(|n| {
            self.with(n, &r.field("action"), |t| match t {
                "allow" => Ok(Action::Allow),
                "drop" => Ok(Action::Drop),
                other => Err(format!("`{other}` is not allow or drop")),
            })
        });
        Some(Rule { source: source?, ports: ports?, action: action? })
    }

    fn faults(&mut self, top: &Obj<'_>, names: &Names<'_>, clients: &[String], duration_ns: u64) -> Vec<Fault> {
        let Some(node) = top.get("faults").filter(|n| !is_null(n)) else { return vec![] };
        let Some(seq) = self.seq(node, "faults") else {
            return vec![];
        };
        let mut out = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            let Some(o) = self.obj(item, &format!("faults[{i}]"), "fault") else {
                continue;
            };
            if let Some(f) = self.fault(&o, names, clients, duration_ns) {
                out.push(f);
            }
        }
        out.sort_by_key(|f| f.at_ns);
        out
    }

    fn fault(&mut self, o: &Obj<'_>, names: &Names<'_>, clients: &[String], duration_ns: u64) -> Option<Fault> {
        let at_node = self.req(o, "at")?;
        let at_ns = self.duration(at_node, &o.field("at"))?;
        if at_ns >= duration_ns {
            self.err(at_node.span(), &o.field("at"), "is at or after the end of the simulation (duration)");
            return None;
        }
        let all_kinds = &crate::schema::object("fault").exactly_one;
        let kinds: Vec<&str> = all_kinds.iter().copied().filter(|k| o.get(k).is_some()).collect();
        if kinds.len() != 1 {
            self.err(o.map.span(), &o.path, format!("a fault needs exactly one of {}", all_kinds.join(", ")));
            return None;
        }
        let key = kinds[0];
        let node = o.get(key)?;
        let field = o.field(key);
        if key == "migrate" {
            let text = self.str(node, &field)?;
            let group = text.strip_prefix("client/").and_then(|g| clients.iter().position(|c| c == g));
            let Some(group) = group else {
                self.err(node.span(), &field, format!("`{text}` is not client/NAME of a client group"));
                return None;
            };
            return Some(Fault { at_ns, action: FaultAction::Migrate(group), what: format!("migrate {text}") });
        }
        if matches!(key, "partition" | "heal" | "set-weight") {
            let action = self.control_fault(key, node, &field, names)?;
            return Some(Fault { at_ns, action, what: describe_control_fault(&action, names) });
        }
        if key != "link" {
            for extra in ["for", "loss", "delay", "jitter"] {
                if let Some(n) = o.get(extra) {
                    self.err(n.span(), &o.field(extra), format!("only link faults take `{extra}`"));
                }
            }
            let target = self.target(node, &field, names)?;
            let text = self.str(node, &field)?;
            let action = match key {
                "down" => FaultAction::Down(target),
                "up" => FaultAction::Up(target),
                _ if matches!(target, Target::Control(_)) => {
                    self.err(
                        node.span(),
                        &field,
                        format!("control nodes go down and up, they are not bound: `{text}`"),
                    );
                    return None;
                }
                _ if !matches!(target, Target::Backend { .. }) => {
                    self.err(node.span(), &field, format!("only backends are bound and unbound, not `{text}`"));
                    return None;
                }
                "unbind" => FaultAction::Unbind(target),
                _ => FaultAction::Bind(target),
            };
            return Some(Fault { at_ns, action, what: format!("{key} {text}") });
        }
        let (pop, region) = self.pop_region_pair(node, &field, names)?;
        let for_ns = self.req(o, "for").and_then(|n| self.duration(n, &o.field("for")));
        let loss = o.get("loss").map(|n| self.with(n, &o.field("loss"), parse_percent));
        let delay_ns = o.get("delay").map(|n| self.duration(n, &o.field("delay")));
        let jitter_ns = o.get("jitter").map(|n| self.duration(n, &o.field("jitter")));
        if loss.is_none() && delay_ns.is_none() && jitter_ns.is_none() {
            self.err(o.map.span(), &o.path, "a link fault needs one of loss, delay, jitter");
            return None;
        }
        let lo = LinkOverride {
            pop,
            region,
            for_ns: for_ns?,
            loss: loss.map_or(Some(None), |v| v.map(Some))?,
            delay_ns: delay_ns.map_or(Some(None), |v| v.map(Some))?,
            jitter_ns: jitter_ns.map_or(Some(None), |v| v.map(Some))?,
        };
        let what = format!("link pop/{}-region/{}", names.pops[pop].name, names.regions[region].name);
        Some(Fault { at_ns, action: FaultAction::Link(lo), what })
    }
}

impl Parser {
    /// `partition: [[control/1, control/2], [control/3]]`, `heal: partition`,
    /// `set-weight: { backend: IP:PORT, weight: W }`.
    fn control_fault(&mut self, key: &str, node: &Node, field: &str, names: &Names<'_>) -> Option<FaultAction> {
        match key {
            "heal" => {
                let text = self.str(node, field)?;
                if text != "partition" {
                    self.err(node.span(), field, format!("`{text}`: only `heal: partition` exists"));
                    return None;
                }
                Some(FaultAction::Heal)
            }
            "partition" => {
                if names.control_nodes == 0 {
                    self.err(
                        node.span(),
                        field,
                        "a partition splits control nodes: the file has no `control:` section",
                    );
                    return None;
                }
                let sides = self.seq(node, field)?;
                let mut side_of = [u8::MAX; CONTROL_NODES_MAX as usize];
                for (s, side) in sides.iter().enumerate() {
                    let side_field = format!("{field}[{s}]");
                    let members = self.seq(side, &side_field)?;
                    for (m, member) in members.iter().enumerate() {
                        let member_field = format!("{side_field}[{m}]");
                        let Some(Target::Control(n)) = self.target(member, &member_field, names) else {
                            self.err(member.span(), &member_field, "a partition lists control/N nodes only");
                            return None;
                        };
                        let slot = &mut side_of[usize::from(n) - 1];
                        if *slot != u8::MAX {
                            self.err(member.span(), &member_field, format!("control/{n} is on two sides"));
                            return None;
                        }
                        *slot = s as u8;
                    }
                }
                if sides.len() < 2 {
                    self.err(node.span(), field, "a partition needs at least two sides");
                    return None;
                }
                Some(FaultAction::Partition(side_of))
            }
            _ => {
                let o = self.obj(node, field, "set_weight")?;
                let backend = self.req(&o, "backend");
                let weight = self.req(&o, "weight").and_then(|_| self.int_field(&o, "weight"));
                let addr = self.parsed::<SocketAddr>(backend?, &o.field("backend"), "IP:PORT")?;
                let region = names
                    .regions
                    .iter()
                    .position(|r| r.backend_groups.iter().any(|g| g.backends.iter().any(|b| b.addr == addr)));
                let Some(region) = region else {
                    self.err(backend?.span(), &o.field("backend"), format!("no backend {addr} is bound in any group"));
                    return None;
                };
                Some(FaultAction::SetWeight { region, addr, weight: weight? as u8 })
            }
        }
    }
}

fn describe_control_fault(action: &FaultAction, names: &Names<'_>) -> String {
    match action {
        FaultAction::Heal => "heal partition".into(),
        FaultAction::Partition(side_of) => {
            let mut sides: BTreeMap<u8, Vec<String>> = BTreeMap::new();
            for n in 0..names.control_nodes {
                sides.entry(side_of[usize::from(n)]).or_default().push(format!("control/{}", n + 1));
            }
            let shown: Vec<String> = sides.into_values().map(|s| s.join(",")).collect();
            format!("partition {}", shown.join(" | "))
        }
        FaultAction::SetWeight { addr, weight, .. } => format!("set-weight backend/{addr} {weight}"),
        _ => String::new(),
    }
}

/// A duration as a topology file would write it.
fn show_ns(ns: u64) -> String {
    match ns {
        n if n >= 3600 * S && n % (3600 * S) == 0 => format!("{}h", n / (3600 * S)),
        n if n >= S && n % S == 0 => format!("{}s", n / S),
        n => format!("{}ms", n / MS),
    }
}

/// `200`, `2xx`, `200,301-302,3xx` → inclusive status ranges.
fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let bad = || format!("`{part}` is not a status (200), class (2xx) or range (200-299)");
        let code = |t: &str| t.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
        let range = if let Some(class) = part.strip_suffix("xx") {
            let c = class.parse::<u16>().ok().filter(|c| (1..=5).contains(c)).ok_or_else(bad)?;
            (c * 100, c * 100 + 99)
        } else if let Some((lo, hi)) = part.split_once('-') {
            match (code(lo), code(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                _ => return Err(bad()),
            }
        } else {
            let c = code(part).ok_or_else(bad)?;
            (c, c)
        };
        out.push(range);
    }
    Ok(out)
}

/// `key:` with nothing after it (YAML null).
fn is_null(node: &Node) -> bool {
    node.as_scalar().is_some_and(|s| matches!(s.as_str(), "" | "~" | "null"))
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// What a report says of the default last mile: no access-network dataset ships, so
/// 5 ms one way is an assumption (data/delay/README.md, "The last mile").
const LAST_MILE_ASSUMED: &str = "assumed, not measured";
/// What a report says of a last mile the file sets.
const LAST_MILE_GIVEN: &str = "set in the topology file";

fn default_internet_delay() -> DelayModel {
    // The shipped calibration parses (a test holds it to that); the old uniform 2.1 otherwise.
    delay::builtin(INTERNET_DELAY_DEFAULT).unwrap_or_else(|| DelayModel::uniform(2.1))
}

fn default_backbone_delay() -> DelayModel {
    // The shipped calibration parses (a test holds it to that); a uniform 1.4 otherwise.
    delay::builtin(BACKBONE_DELAY_DEFAULT).unwrap_or_else(|| DelayModel::uniform(1.4))
}
