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

use super::values::{Cidr, ValueError, parse_bandwidth_bps, parse_duration_ns, parse_percent};
use super::*;
use crate::calibrations::{BACKBONE_DELAY_DEFAULT, INTERNET_DELAY_DEFAULT};
use crate::schema;
use anyedge_control::table::{QUIC_SCHEDULERS, SCHEDULERS};

mod ases;
mod clients;
mod delay;
mod faults;
mod network;
mod regions;
mod security;
mod sites;
mod vips;
use anyedge_region::security::{Action, Ports, Rule, SecurityGroup};
pub(crate) use ases::city;

/// Where a last mile given by the file says it comes from (the default internet keeps it).
pub(crate) use self::LAST_MILE_GIVEN as LAST_MILE_FROM_FILE;
pub use delay::builtin as builtin_delay;

const MS: u64 = 1_000_000;
/// Clients in a file, all groups together (a /8's worth); those without an `address:`
/// block must also fit their pool (`clients_block:`, or 198.18.64.1 up).
pub const CLIENTS_MAX: u64 = 1 << 24;
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
    let mut p = Parser { diags: Vec::new(), paths: Vec::new(), apps: Vec::new() };
    let topology = p.topology(&root);
    match topology {
        Some(mut t) if p.diags.is_empty() => {
            draw_internet(&mut t);
            Ok(t)
        }
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

/// A valid file that names no networks and asks for BGP gets the default internet,
/// drawn from its seed; one whose groups carry `catchment:` lists keeps them (each POP a
/// transit of its own, as `routing: nearest`).
fn draw_internet(t: &mut Topology) {
    if t.internet.routing != crate::Routing::Bgp || t.internet.has_ases() {
        return;
    }
    if t.clients.iter().any(|g| g.catchment.is_some()) {
        t.internet.routing = crate::Routing::Nearest;
        return;
    }
    crate::default_internet::apply(t, &crate::default_internet::Shape::FITTED);
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
    /// Each backend port bound so far and what answers on it.
    apps: Vec<(SocketAddr, App)>,
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

    fn with<T, E: std::fmt::Display>(
        &mut self,
        node: &Node,
        field: &str,
        f: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        let text = self.str(node, field)?;
        match f(text) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.err(node.span(), field, reason.to_string());
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
        let mut pops = self.pops(&top);
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
        let clients_block = self.clients_block(&top);
        let pool = crate::ClientPool::of(clients_block.flatten());
        self.check_client_addresses(&top, &clients, &vips, &traffic, &regions, pool);
        let internet = self.internet(&top, &clients, &names);
        let failover = self.failover(&top);
        if let (Some(f), Some(bb)) = (failover.as_ref(), backbone.as_ref()) {
            self.check_probe_window(&top, f, bb, &pops, &regions);
        }
        let client_names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
        let faults = self.faults(&top, &names, &client_names, duration_ns.unwrap_or(u64::MAX));
        let security_groups = self.security_groups(&top, &names);
        let tls = self.tls(&top);
        let mut vips = vips;
        if let Some(internet) = &internet {
            let places: Vec<Location> = pops.iter().map(|p| p.location).collect();
            let bgp = self.pops_bgp(&top, &places, internet);
            for (pop, bgp) in pops.iter_mut().zip(bgp) {
                pop.bgp = bgp;
            }
            self.vips_announce(&top, &mut vips, &pops, internet);
        }
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
            clients_block: clients_block?,
            traffic,
            failover: failover?,
            faults,
            security_groups,
            control,
            tls: tls?,
        })
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
fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, ValueError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let bad = || ValueError::NotStatus(part.to_string());
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
pub(crate) const LAST_MILE_GIVEN: &str = "set in the topology file";

fn default_internet_delay() -> DelayModel {
    // The shipped calibration parses (a test holds it to that); the old uniform 2.1 otherwise.
    delay::builtin(INTERNET_DELAY_DEFAULT).unwrap_or_else(|| DelayModel::uniform(2.1))
}

pub(crate) fn default_backbone_delay() -> DelayModel {
    // The shipped calibration parses (a test holds it to that); a uniform 1.4 otherwise.
    delay::builtin(BACKBONE_DELAY_DEFAULT).unwrap_or_else(|| DelayModel::uniform(1.4))
}
