//! The topology file's format as data: every mapping the file holds, its fields, their
//! types, units, defaults and ranges. One source of truth for two readers: the parser
//! takes each mapping's allowed keys from here (an unknown field is refused by the same
//! list the schema shows), and `anyedge schema` prints it as a JSON Schema (draft
//! 2020-12) that editors' YAML language servers use for completion, hover help and
//! errors as you type (`schema/topology.schema.json`; a test fails when they drift).
//!
//! What a schema cannot say (a name that must refer to something defined elsewhere in the
//! file, a prime table size, a timeout no longer than its interval) the parser checks,
//! and `anyedge validate` reports with line and column.

use std::sync::LazyLock;

use anyedge_ccn::delay::{Area, HUBS};
use anyedge_ccn::landmarks::NEIGHBOURS_MAX;
use anyedge_region::cidr::SOURCE_PREFIX_V4;
use anyedge_region::config::{CONN_TABLE_DEFAULT, MAGLEV_TABLE_DEFAULT, WEIGHT_DEFAULT, WEIGHT_MAX};
use serde_json::{Map, Value, json};

use anyedge_control::table::SCHEDULERS;

use crate::calibrations::{BACKBONE_DELAY_DEFAULT, INTERNET_DELAY_DEFAULT};
use crate::{UDP_PAYLOAD_MAX, UDP_PAYLOAD_MIN};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const HOUR: u64 = 3_600 * SEC;

/// What a field's value is.
#[derive(Debug, Clone)]
pub enum Ty {
    /// Letters, digits, `-` and `_`.
    Name,
    /// Any text.
    Text,
    /// A number and a unit: `300ms`, `2s` (ns, us, ms, s, m, h).
    Duration,
    /// A duration within `min_ns..=max_ns`.
    DurationIn {
        min_ns: u64,
        max_ns: u64,
    },
    /// A duration, or the word given.
    DurationOr(&'static str),
    /// A number and `%`: `0.3%`.
    Percent,
    /// A number and bps, Kbps, Mbps or Gbps: `10Gbps`.
    Bandwidth,
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    /// One of these words.
    Enum(Vec<&'static str>),
    /// One of these integers.
    IntEnum(Vec<i64>),
    Ipv4,
    Ipv6,
    Ip,
    /// `IP:PORT` (`[IPv6]:PORT`).
    SocketAddr,
    /// `ADDRESS/PREFIX`.
    Cidr,
    /// `[latitude, longitude]` in degrees.
    Location,
    /// Text matching a regular expression (a reference such as `pop/NAME`).
    Pattern(&'static str),
    /// A list of at least `min` items.
    List(Box<Ty>, usize),
    /// A list of exactly these items, in order.
    Tuple(Vec<Ty>),
    /// A mapping defined in `FORMAT` by name.
    Obj(&'static str),
    /// A mapping of names to values.
    MapOf(Box<Ty>),
    /// Any one of these.
    AnyOf(Vec<Ty>),
    /// This, or nothing (`key:` with no value).
    Nullable(Box<Ty>),
}

/// One key of a mapping.
#[derive(Debug, Clone)]
pub struct Field {
    pub key: &'static str,
    pub required: bool,
    pub ty: Ty,
    /// Meaning, unit, default and range, for a person.
    pub doc: String,
    /// The value taken when the key is absent, as the file would write it.
    pub default: Option<Value>,
}

/// One kind of mapping in the file.
#[derive(Debug, Clone)]
pub struct Object {
    pub name: &'static str,
    pub doc: String,
    pub fields: Vec<Field>,
    /// Exactly one of these keys must be present (a fault's kind).
    pub exactly_one: Vec<&'static str>,
    /// At least one of these keys must be present.
    pub at_least_one: Vec<&'static str>,
    /// Pairs of keys that must not both be present.
    pub not_both: Vec<(&'static str, &'static str)>,
    /// (A, B): when A is present, B is required (a link fault's `for`).
    pub requires: Vec<(&'static str, &'static str)>,
    /// Every allowed key, in order (what the parser checks against).
    pub keys: Vec<&'static str>,
}

impl Object {
    fn new(name: &'static str, doc: impl Into<String>, fields: Vec<Field>) -> Object {
        let keys = fields.iter().map(|f| f.key).collect();
        Object {
            name,
            doc: doc.into(),
            fields,
            exactly_one: vec![],
            at_least_one: vec![],
            not_both: vec![],
            requires: vec![],
            keys,
        }
    }

    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }
}

fn req(key: &'static str, ty: Ty, doc: impl Into<String>) -> Field {
    Field { key, required: true, ty, doc: doc.into(), default: None }
}

fn opt(key: &'static str, ty: Ty, doc: impl Into<String>) -> Field {
    Field { key, required: false, ty, doc: doc.into(), default: None }
}

impl Field {
    fn default(mut self, value: Value) -> Field {
        self.default = Some(value);
        self
    }

    /// The bounds of an integer field.
    pub fn int_range(&self) -> Option<(i64, i64)> {
        match self.ty {
            Ty::Int { min, max } => Some((min, max)),
            _ => None,
        }
    }

    /// The bounds of a number field.
    pub fn float_range(&self) -> Option<(f64, f64)> {
        match self.ty {
            Ty::Float { min, max } => Some((min, max)),
            _ => None,
        }
    }

    /// The bounds of a duration field in nanoseconds (any length when it has none).
    pub fn duration_range(&self) -> (u64, u64) {
        match self.ty {
            Ty::DurationIn { min_ns, max_ns } => (min_ns, max_ns),
            _ => (0, u64::MAX),
        }
    }

    pub fn default_i64(&self) -> Option<i64> {
        self.default.as_ref()?.as_i64()
    }

    pub fn default_f64(&self) -> Option<f64> {
        self.default.as_ref()?.as_f64()
    }

    pub fn default_bool(&self) -> Option<bool> {
        self.default.as_ref()?.as_bool()
    }

    pub fn default_str(&self) -> Option<&str> {
        self.default.as_ref()?.as_str()
    }

    /// A list of strings' default.
    pub fn default_strs(&self) -> Option<Vec<String>> {
        self.default.as_ref()?.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect()
    }

    /// A duration default in nanoseconds, as the file writes it (`50ms`).
    pub fn default_ns(&self) -> Option<u64> {
        crate::parse_duration_ns(self.default_str()?).ok()
    }

    /// A percentage default as a fraction (`0.3%` is 0.003).
    pub fn default_percent(&self) -> Option<f64> {
        crate::parse_percent(self.default_str()?).ok()
    }
}

/// The default of field `key` of mapping `object`, as the parser takes it: `read` turns
/// the schema's value into the parser's; a field the schema gives no default (or one
/// `read` cannot take) is a bug in this file, which the agreement test finds.
pub fn default_of<T>(object: &str, key: &str, read: impl Fn(&Field) -> Option<T>) -> T {
    let field = self::object(object).field(key).unwrap_or_else(|| panic!("no field `{key}` in `{object}`"));
    read(field).unwrap_or_else(|| panic!("`{object}.{key}` has no default of the parser's type in the schema"))
}

/// A DNS name of two labels or more, each of letters, digits and `-` (the parser also
/// keeps `-` off a label's ends).
pub const HOST_NAME: &str = r"^([A-Za-z0-9-]{1,63}\.)+[A-Za-z0-9-]{1,63}$";
/// An ALPN protocol ID as a file writes one: 1–255 printable ASCII characters, no spaces.
pub const ALPN_ID: &str = r"^[!-~]{1,255}$";

/// References by kind, as the file writes them.
const POP_REF: &str = r"^pop/[A-Za-z0-9_-]+$";
const REGION_REF: &str = r"^region/[A-Za-z0-9_-]+$";
const CLIENT_REF: &str = r"^client/[A-Za-z0-9_-]+$";
const BACKEND_REF: &str = r"^backend/([0-9.]+|\[[0-9A-Fa-f:.]+\]):[0-9]+$";
const CONTROL_REF: &str = r"^control/[0-9]+$";
const IXP_REF: &str = r"^ixp/[A-Za-z0-9_-]+$";
const NODE_PLACE_REF: &str = r"^(pop|region|client)/[A-Za-z0-9_-]+$";
/// The most copies of its AS number a POP may prepend.
pub const PREPEND_MAX: i64 = 10;
const TARGET: &str = r"^(pop/[A-Za-z0-9_-]+|region/[A-Za-z0-9_-]+|clb/[A-Za-z0-9_-]+/[0-9]+|backend/([0-9.]+|\[[0-9A-Fa-f:.]+\]):[0-9]+|control/[0-9]+)$";

/// The communities a POP may put on its announcements: no-export, and a region-only
/// scope per area (`region:AREA`, [`Area::ALL`] by name; a test keeps the two equal).
pub const COMMUNITIES: [&str; 12] = [
    "no-export",
    "region:north-america",
    "region:south-america",
    "region:europe",
    "region:africa",
    "region:middle-east",
    "region:south-asia",
    "region:east-asia",
    "region:southeast-asia",
    "region:oceania",
    "region:china",
    "region:other",
];

/// The operator's levers on an announcement: a POP's own (for every VIP it publishes),
/// or a VIP's at one POP (`per_vip`), whose absent fields stay the POP's.
fn lever_fields(per_vip: bool) -> Vec<Field> {
    let (who, defaults) = if per_vip {
        ("the POP for this VIP", ["Default: the POP's."; 3])
    } else {
        ("this POP", ["Default 0.", "Default: to all of them.", "Default: none."])
    };
    let prepend = opt(
        "prepend",
        Ty::Int { min: 0, max: PREPEND_MAX },
        format!(
            "AS-path prepending: extra copies of the CDN's AS number on the routes {who} announces, 0–{PREPEND_MAX} (a longer path draws fewer clients). {}",
            defaults[0]
        ),
    );
    vec![
        if per_vip { prepend } else { prepend.default(json!(0)) },
        opt(
            "announce_to",
            Ty::List(Box::new(Ty::AnyOf(vec![Ty::Name, Ty::Pattern(IXP_REF)])), 1),
            format!("Selective announcement: announce only to these of the POP's `upstreams`. {}", defaults[1]),
        ),
        opt(
            "communities",
            Ty::List(Box::new(Ty::Enum(COMMUNITIES.to_vec())), 1),
            format!(
                "BGP communities on the announcements. no-export (RFC 1997): an upstream keeps the route and passes it to no other AS, so the POP serves that network's own clients only. region:AREA (regional anycast, as transits offer it): networks pass the route on only to their routers in that area, which must be the POP's own (areas as `internet.delay.areas` names them). {}",
                defaults[2]
            ),
        ),
    ]
}

fn pop_region_pair() -> Ty {
    let end = Ty::AnyOf(vec![Ty::Pattern(POP_REF), Ty::Pattern(REGION_REF)]);
    Ty::Tuple(vec![end.clone(), end])
}

fn name_list() -> Ty {
    Ty::List(Box::new(Ty::Name), 1)
}

/// A place of the AS-level internet: a location, a node's place, or a city.
fn place() -> Ty {
    Ty::AnyOf(vec![Ty::Location, Ty::Pattern(NODE_PLACE_REF), Ty::Text])
}

const PLACE_DOC: &str = "`[latitude, longitude]`, `pop/NAME`, `region/NAME` or `client/NAME` (that one's place), or a city of 50,000 people or more by its GeoNames name, `NAME` (the largest of that name) or `NAME, CC` with its country code (data/geo/cities.tsv).";

fn location_doc(what: &str) -> String {
    format!(
        "Where {what} is: [latitude, longitude] in degrees (−90–90, −180–180). Delays follow great-circle distance."
    )
}

fn delay_model() -> Ty {
    let builtin: Vec<&'static str> = crate::calibrations::BUILTIN.iter().map(|(name, _)| *name).collect();
    Ty::AnyOf(vec![Ty::Enum(builtin), Ty::Obj("delay_model")])
}

/// The format, built once.
pub static FORMAT: LazyLock<Vec<Object>> = LazyLock::new(build);

/// A mapping of the format by name; every name the parser asks for exists.
pub fn object(name: &str) -> &'static Object {
    FORMAT.iter().find(|o| o.name == name).unwrap_or_else(|| panic!("no `{name}` in the topology format"))
}

/// The keys a mapping allows.
pub fn keys(name: &str) -> &'static [&'static str] {
    &object(name).keys
}

fn build() -> Vec<Object> {
    let areas: Vec<&'static str> = Area::ALL.iter().map(|a| a.name()).collect();
    let hubs: Vec<&'static str> = HUBS.iter().map(|(h, _)| *h).collect();
    let mut out = vec![
        Object::new(
            "topology",
            "An anyedge topology: anycast VIPs published at POPs, regions of CLB nodes and backends, the backbone (CCN) and internet between them, clients, their traffic and faults over time. `anyedge sim FILE` simulates it; `anyedge lab up FILE` runs it with real packets.",
            vec![
                req("name", Ty::Name, "The topology's name (letters, digits, - and _): labs, reports and node names carry it."),
                opt("seed", Ty::Int { min: 0, max: i64::MAX }, "Root seed of every random choice (jitter, loss, client start times). Same file, same seed: same report, byte for byte. `--seed` overrides it. Default 1.").default(json!(1)),
                opt("duration", Ty::DurationIn { min_ns: MS, max_ns: 24 * HOUR }, "Simulated time, 1ms–24h. Default 60s.").default(json!("60s")),
                req("vips", Ty::List(Box::new(Ty::Obj("vip")), 1), "Anycast virtual IPs: where each is published and which listeners it serves."),
                req("pops", Ty::List(Box::new(Ty::Obj("pop")), 1), "Points of presence: where client traffic enters the edge network."),
                req("regions", Ty::List(Box::new(Ty::Obj("region")), 1), "Regions: CLB nodes (the regional load balancer) and their backends."),
                opt("idcs", Ty::List(Box::new(Ty::Obj("idc")), 1), "On-premises data centres that hold backends a region reaches over the backbone (through SNAT)."),
                opt("nat_gateways", Ty::List(Box::new(Ty::Obj("nat_gateway")), 1), "NAT gateways through which a region reaches backends on the public internet (`via: nat/NAME`)."),
                opt("backbone", Ty::Obj("backbone"), "The private backbone (CCN) between POPs and regions. Defaults: the `azure-2025-06` delay calibration, jitter 0.3ms, loss 0.001%, 10Gbps, UDP."),
                opt("internet", Ty::Obj("internet"), "The public internet: clients to POPs, and the direct path to the region that anycast is compared with. Defaults: the `wondernetwork-2020-07` delay calibration, last mile 5ms (assumed), jitter 4ms, loss 0.3%."),
                req("clients", Ty::List(Box::new(Ty::Obj("client_group")), 1), "Groups of clients at one place each, and the traffic classes they send."),
                opt("clients_block", Ty::Cidr, "The IPv4 block clients without an `address:` are numbered from, in file order (e.g. 100.64.0.0/10: 4,194,302 clients); groups' own blocks and VIP and backend addresses inside it are skipped. Default: 198.18.64.1–198.18.255.253 (49,149 addresses). The simulator's; a lab gives each group one address."),
                req("traffic", Ty::MapOf(Box::new(Ty::Obj("traffic_class"))), "Traffic classes by name: what a client sends, to which VIP and port, how often."),
                opt("failover", Ty::Obj("failover"), "How fast failures are found: probes between POPs and CLB nodes, BFD toward a POP's transit, route convergence."),
                opt("faults", Ty::Nullable(Box::new(Ty::List(Box::new(Ty::Obj("fault")), 0))), "Events over simulated time: nodes and backends down or up, link impairments, client migrations, control-plane partitions, weight changes."),
                opt("security_groups", Ty::List(Box::new(Ty::Obj("security_group")), 1), "Stateful allow/drop rules bound to backends or CLB nodes, first match wins."),
                opt("control", Ty::Nullable(Box::new(Ty::Obj("control"))), "A Raft-replicated control plane (3 or 5 nodes) that holds the route table every node follows."),
                opt("tls", Ty::Obj("tls"), "The certificates anyedge issues for the VIPs' HTTPS, TCP SSL and QUIC listeners. Default: ECDSA P-256."),
            ],
        ),
        Object::new(
            "tls",
            "The certificates anyedge issues for the VIPs' TLS and QUIC listeners: in a lab and a rendered deployment from their CA, in the simulator from one it makes for the run.",
            vec![
                opt("algorithm", Ty::Enum(anyedge_region::identity::KeyAlgorithm::ALL.iter().map(|a| a.name()).collect()), "The key algorithm of the VIP certificates and of the CA that issues them. ecdsa-p256, ecdsa-p384 and rsa-2048 are what browsers verify; ed25519 is taken by curl and aioquic but by no browser. The nodes' own control-plane certificates stay Ed25519. Default ecdsa-p256.").default(json!("ecdsa-p256")),
            ],
        ),
        Object::new(
            "pop",
            "A point of presence: it takes client traffic for the VIPs published there and tunnels it over the backbone to the VIP's home region.",
            vec![
                req("name", Ty::Name, "The POP's name; its node is `pop/NAME`."),
                req("location", Ty::Location, location_doc("the POP")),
                opt("upstreams", Ty::List(Box::new(Ty::AnyOf(vec![Ty::Name, Ty::Pattern(IXP_REF)])), 1), "With `internet.ases`: the networks the POP buys transit from (an AS's name) and the IXPs it peers at (`ixp/NAME`), where it announces its VIPs. Without any, no client reaches the POP (`validate` warns)."),
            ]
            .into_iter()
            .chain(lever_fields(false))
            .collect(),
        ),
        Object::new(
            "announce",
            "A VIP's levers at one of its POPs (`vips[].announce.POP`): each field given replaces the POP's own for this VIP only; the others stay the POP's.",
            lever_fields(true),
        ),
        Object::new(
            "idc",
            "An on-premises data centre holding backends (`idc: NAME` on a backend).",
            vec![
                req("name", Ty::Name, "The data centre's name."),
                req("location", Ty::Location, location_doc("the data centre")),
            ],
        ),
        Object::new(
            "nat_gateway",
            "A NAT gateway: a region's way to backends on the public internet.",
            vec![
                req("name", Ty::Name, "The gateway's name; backends name it as `via: nat/NAME`."),
                req("region", Ty::Name, "The region it belongs to (a region's name)."),
                req("public", Ty::Ipv4, "Its public IPv4 address: what internet backends see as the source."),
            ],
        ),
        Object::new(
            "region",
            "A region: CLB nodes (the regional load balancer) that take the backbone's traffic and spread it over backends.",
            vec![
                req("name", Ty::Name, "The region's name; its CLB nodes are `clb/NAME/1` … `clb/NAME/N`."),
                req("location", Ty::Location, location_doc("the region")),
                opt("clb_nodes", Ty::Int { min: 1, max: 64 }, "CLB nodes in the region (1–64). POPs spread flows over them by rendezvous hashing. Default 1.").default(json!(1)),
                opt("conn_table", Ty::Int { min: 1, max: 100_000_000 }, format!("Connections each CLB node tracks (1–100,000,000); the least recently used is evicted when full. Default {CONN_TABLE_DEFAULT}.")).default(json!(CONN_TABLE_DEFAULT)),
                opt("source_prefix_v4", Ty::Int { min: 8, max: 32 }, format!("Leading bits of an IPv4 client address that count as one source for the CLB nodes' per-source limits (256 layer-7 connections, 256 QUIC connections, 8 unvalidated QUIC handshakes): 32 counts each address, 24 a whole /24 (clients that share a network). IPv6 sources are /64s. Default {SOURCE_PREFIX_V4}.")).default(json!(SOURCE_PREFIX_V4)),
                opt("snat", Ty::List(Box::new(Ty::Ip), 0), "Source addresses the CLB nodes use toward IDC backends; one per address family those backends use (required when IDC backends are bound)."),
                opt("health", Ty::Obj("health"), "Health checks of the region's backends. Default: TCP connect every 2s, timeout 1s, 3 to turn healthy or unhealthy."),
                opt("backends", Ty::MapOf(Box::new(Ty::AnyOf(vec![Ty::List(Box::new(Ty::Obj("backend")), 1), Ty::Obj("backend_group")]))), "Backend groups by name: a list of backends, or { health, app, members } to check this group its own way or to say that your own application answers on its ports. Listeners name a group."),
            ],
        ),
        Object::new(
            "health",
            "How CLB nodes check a backend's health.",
            vec![
                opt("protocol", Ty::Enum(vec!["tcp", "udp", "http"]), "tcp: a connection opens; udp: an echo comes back; http: a GET of `path` answers with a status in `expect`. Default tcp.").default(json!("tcp")),
                opt("path", Ty::Pattern(r"^/\S*$"), "HTTP checks only: the path to GET (starts with /). Default /.").default(json!("/")),
                opt("expect", Ty::AnyOf(vec![Ty::Int { min: 100, max: 599 }, Ty::Pattern(r"^\s*[0-9]{3}(\s*-\s*[0-9]{3})?(\s*,\s*[0-9]{3}(\s*-\s*[0-9]{3})?)*\s*$")]), "HTTP checks only: statuses that mean healthy, e.g. 200, 200-299 or 200,301-302. Default 200-299.").default(json!("200-299")),
                opt("interval", Ty::DurationIn { min_ns: 10 * MS, max_ns: HOUR }, "Time between checks, 10ms–1h. Default 2s.").default(json!("2s")),
                opt("timeout", Ty::Duration, "How long a check waits for its answer: more than 0s and no longer than the interval. Default 1s.").default(json!("1s")),
                opt("healthy", Ty::Int { min: 1, max: 10 }, "Passed checks in a row that bring a backend back (1–10). Default 3.").default(json!(3)),
                opt("unhealthy", Ty::Int { min: 1, max: 10 }, "Failed checks in a row that take a backend out (1–10). Default 3.").default(json!(3)),
            ],
        ),
        Object::new(
            "backend_group",
            "A backend group with settings of its own: its health checks, and what answers on its members' ports.",
            vec![
                opt("health", Ty::Obj("health"), "This group's health checks, over the region's (fields not given are the region's)."),
                opt("app", Ty::Enum(vec!["builtin", "external"]), "What answers on its members' ports, unless a member says otherwise: see a backend's `app`. Default builtin.").default(json!("builtin")),
                req("members", Ty::List(Box::new(Ty::Obj("backend")), 1), "The group's backends."),
            ],
        ),
        Object::new(
            "backend",
            "A backend: an address and port the CLB nodes send flows to. It lives in the region unless `region`, `idc` or `via` says otherwise.",
            vec![
                req("address", Ty::Ip, "The backend's IP address (IPv4 or IPv6)."),
                req("port", Ty::Int { min: 1, max: 65_535 }, "The port it serves (1–65535)."),
                opt("weight", Ty::Int { min: 0, max: i64::from(WEIGHT_MAX) }, format!("Its share of new flows against the group's other backends (0–{WEIGHT_MAX}; 0 takes none). Default {WEIGHT_DEFAULT}.")).default(json!(WEIGHT_DEFAULT)),
                opt("region", Ty::Name, "Another region it lives in (a region's name): reached over the backbone."),
                opt("idc", Ty::Name, "An IDC it lives in (a name under `idcs`): reached over the backbone through SNAT."),
                opt("via", Ty::AnyOf(vec![Ty::Enum(vec!["router"]), Ty::Pattern(r"^nat/[A-Za-z0-9_-]+$")]), "A public-internet backend (IPv4): reached through `router` (the region's own) or `nat/NAME` (a NAT gateway of the region)."),
                opt("app", Ty::Enum(vec!["builtin", "external"]), "What answers on the port. builtin: anyedge's own servers (UDP echo, TCP, HTTP), run by the host's node, for tests and labs. external: your own application; the host's node runs only the tunnel end and binds nothing, so the service on the host (in a lab, started with `anyedge lab exec FILE backend/IP -- CMD`) answers, and the region's health checks probe it. The simulator models both the same way. Default builtin.").default(json!("builtin")),
            ],
        ),
        Object::new(
            "vip",
            "An anycast virtual IP: every POP that publishes it answers clients for it, and its home region serves it.",
            vec![
                req("name", Ty::Name, "The VIP's name; traffic classes name it."),
                req("ipv4", Ty::Ipv4, "Its IPv4 address (routable unicast, not a backend's)."),
                opt("ipv6", Ty::Ipv6, "Its IPv6 address, if IPv6 clients reach it (IPv4 backends are reached through NAT64)."),
                req("home", Ty::Name, "The region that serves it (a region's name)."),
                req("pops", Ty::AnyOf(vec![Ty::Enum(vec!["all"]), name_list()]), "Where it is published: `all`, or a list of POP names."),
                req("listeners", Ty::List(Box::new(Ty::Obj("listener")), 1), "Protocols and ports it serves, each with its scheduler and backend group."),
                opt("hosts", Ty::List(Box::new(Ty::Pattern(HOST_NAME)), 1), "The DNS names clients reach it by (shop.example.com): what its `certificates` must name."),
                opt("announce", Ty::MapOf(Box::new(Ty::Obj("announce"))), "With `internet.ases`: per POP name (one of `pops`), how that POP announces this VIP, over its own `prepend`, `announce_to` and `communities` (selective announcement and prepending per VIP)."),
                opt("certificates", Ty::List(Box::new(Ty::Obj("certificate")), 1), "Certificate chains of your own (any CA's: an ACME one, your company's) that its HTTPS, TCP SSL and QUIC listeners present instead of the one the lab's CA issues; the one that names the host a client asks for (SNI), else the first. Checked when a lab or deployment is rendered and when a node loads them."),
            ],
        ),
        Object::new(
            "certificate",
            "A certificate chain of your own and its key, PEM files (paths relative to the topology file): rendering copies them into the CLB nodes' directories, and `lab reload --new-vip-certificates` copies them again (after a renewal).",
            vec![
                req("chain", Ty::Text, "The full chain: the VIP's certificate first, then each intermediate (what ACME clients write as fullchain.pem). Each must be signed by the next and valid now, and the first must name one of the VIP's hosts or addresses."),
                req("key", Ty::Text, "The first certificate's private key (ECDSA P-256 or P-384, Ed25519, or RSA)."),
            ],
        ),
        Object::new(
            "listener",
            "A listener: one protocol and port of a VIP, served by one backend group of the home region.",
            vec![
                req("protocol", Ty::Enum(vec!["tcp", "udp", "tcp-ssl", "quic", "http", "https"]), "tcp and udp: forwarded at layer 4; tcp-ssl: TLS terminated; quic: QUIC connections by connection ID; http and https: layer 7 (a request line and headers)."),
                req("port", Ty::Int { min: 1, max: 65_535 }, "The port (1–65535). TCP-based listeners share one port space, UDP and QUIC another."),
                opt("scheduler", Ty::Enum(SCHEDULERS.to_vec()), "How a new flow picks its backend: weighted round robin, weighted least connections, consistent hash of the 5-tuple, or Maglev hashing. QUIC takes wrr or wlc. Default wrr.").default(json!("wrr")),
                req("backends", Ty::Name, "The backend group of the home region that serves it."),
                opt("persistence", Ty::DurationIn { min_ns: 30 * SEC, max_ns: HOUR }, "Session persistence: a client goes back to its backend for this long, 30s–3600s (wrr only; not on QUIC). Default off."),
                opt("table", Ty::Int { min: 3, max: 1_000_003 }, format!("Lookup table size of the hash and maglev schedulers: a prime, 3–1,000,003. Default {MAGLEV_TABLE_DEFAULT}.")).default(json!(MAGLEV_TABLE_DEFAULT)),
                opt("mtls", Ty::Bool, "Require client certificates (https, tcp-ssl and quic listeners). Default false.").default(json!(false)),
                opt("alt_svc", Ty::DurationOr("off"), "https listeners: how long clients may take the VIP's HTTP/3 on the same port as this one's alternative (1s–365 days), said in an `Alt-Svc: h3=\":PORT\"; ma=SECONDS` field of every answer, as browsers discover HTTP/3, when the VIP has a quic listener offering h3 on that port; `off`: no field. Default 24h.").default(json!("24h")),
                opt("alpn", Ty::List(Box::new(Ty::Pattern(ALPN_ID)), 1), "What a quic listener offers in ALPN, in its order of preference (quic listeners only; a client whose offer shares none is refused at the handshake). h3: HTTP/3, each request forwarded to the backend as HTTP/1.1 with X-Forwarded-For, as https does; any other value: each stream relayed to a backend TCP connection as bytes, a TOA option naming the client. Default [h3].").default(json!(["h3"])),
            ],
        ),
        {
            let mut o = Object::new(
                "backbone",
                "The private backbone (CCN): a link from every POP to every region (or those `links` lists), with delay, jitter, loss, bandwidth and a queue.",
                vec![
                    opt("stretch", Ty::Float { min: 1.0, max: 10.0 }, "One stretch everywhere: delay = great-circle distance × stretch at light's speed in fibre (1–10). Not with `delay`."),
                    opt("delay", delay_model(), "A calibrated delay model: the name of one that ships, or one written out as `anyedge calibrate` prints it. Not with `stretch`. Default azure-2025-06.").default(json!(BACKBONE_DELAY_DEFAULT)),
                    opt("jitter", Ty::Duration, "Mean of the exponential extra delay per packet (a flow is never reordered). Default 0.3ms.").default(json!("0.3ms")),
                    opt("loss", Ty::Percent, "Random loss per packet, 0–100%. Default 0.001%.").default(json!("0.001%")),
                    opt("bandwidth", Ty::Bandwidth, "Each link's rate: bps, Kbps, Mbps or Gbps. Default 10Gbps.").default(json!("10Gbps")),
                    opt("queue", Ty::Duration, "The link's queue, as the time it takes to drain at the link's rate; a full queue drops. Default 10ms.").default(json!("10ms")),
                    opt("transport", Ty::Enum(vec!["udp", "grpc"]), "udp: each packet in its own sealed envelope (GUE-style); grpc: a tonic bidirectional stream per POP–CLB pair. Default udp.").default(json!("udp")),
                    opt("links", Ty::List(Box::new(pop_region_pair()), 0), "Only these POP–region links exist, each [pop/NAME, region/NAME]. Default: every POP to every region."),
                ],
            );
            o.not_both = vec![("stretch", "delay")];
            o
        },
        Object::new(
            "delay_model",
            "A delay model written out: per place (`landmarks`: the measured round trips between the servers near each end) or per pair of areas (`pairs`: a stretch over the great circle, a fixed overhead and an optional hub it goes through); `default` is the path where neither applies.",
            vec![
                opt("name", Ty::Text, "The model's name, for reports. Default custom."),
                opt("source", Ty::Text, "Where its numbers come from (a dataset, a date). Default: given in the topology file."),
                req("default", Ty::Obj("path_params"), "The path between areas no pair names; with `landmarks`, the distance law where a place has no server within reach."),
                opt("pairs", Ty::List(Box::new(Ty::Obj("area_pair")), 0), "Paths between two areas. Not with `landmarks`."),
                opt("landmarks", Ty::Obj("landmarks"), "The per-place model: the round trip between two places from the measured pairs of the servers nearest each (`anyedge delay A B` shows which). Not with `pairs`."),
            ],
        ),
        Object::new(
            "landmarks",
            "The per-place model as `anyedge calibrate` fits it: rtt(A, B) = floor(A) + floor(B) + stretch × fibre(A, B) + the measured detour of the server pairs around A and B, weighed against the distance law.",
            vec![
                req("measured", Ty::Enum(crate::measured::SHIPPED.iter().map(|(n, _)| *n).collect()), "The measured dataset that ships (data/delay/) whose servers are the landmarks."),
                req("stretch", Ty::Float { min: 1.0, max: 10.0 }, "The base's route length over the great circle (1–10)."),
                req("short", Ty::Obj("path_params"), "The distance law's short-path line (fitted on pairs under 1,000 km); `default` is its long-haul line, and the law is the lesser of the two."),
                req("neighbours", Ty::Int { min: 1, max: NEIGHBOURS_MAX as i64 }, "How many of the nearest servers a place rests on."),
                req("power", Ty::Float { min: 0.0, max: 8.0 }, "A server's weight is 1 / distance^power."),
                req("reach_km", Ty::Int { min: 1, max: 20_000 }, "Servers farther than this are no place's neighbours; a place with none takes the distance law."),
                req("prior", Ty::Float { min: 0.0, max: 100.0 }, "The distance law weighs as much as a pair of servers this many times the pair of places' length (at least 100 km) away from it (at each end and in length): places far from every server for their distance lean on the law."),
                req("heights", Ty::List(Box::new(Ty::Obj("landmark_height")), 1), "Each server's height: half of what a 0 km path at it costs, the short-path floor (not the last mile)."),
            ],
        ),
        Object::new(
            "landmark_height",
            "One server's height.",
            vec![
                req("server", Ty::Text, "The server's name in the measured dataset."),
                req("height", Ty::DurationIn { min_ns: 0, max_ns: 500 * MS }, "Half of a 0 km path's round trip at the server, 0–500ms."),
            ],
        ),
        Object::new(
            "path_params",
            "A path's shape: stretch over the great circle, overhead, and a hub it goes through.",
            vec![
                req("stretch", Ty::Float { min: 1.0, max: 10.0 }, "Route length over the great-circle distance (1–10: nothing beats light in fibre)."),
                opt("overhead", Ty::DurationIn { min_ns: 0, max_ns: 500 * MS }, "Fixed round-trip time added to the path, 0–500ms. Default 0s.").default(json!("0s")),
                opt("via", Ty::Enum(hubs.clone()), "A hub the path goes through (the great circle is measured through it)."),
            ],
        ),
        Object::new(
            "area_pair",
            "The path between two areas.",
            vec![
                req("between", Ty::Tuple(vec![Ty::Enum(areas.clone()), Ty::Enum(areas)]), "The two areas, [AREA, AREA], either order."),
                req("stretch", Ty::Float { min: 1.0, max: 10.0 }, "Route length over the great-circle distance (1–10)."),
                opt("overhead", Ty::DurationIn { min_ns: 0, max_ns: 500 * MS }, "Fixed round-trip time added to the path, 0–500ms. Default 0s.").default(json!("0s")),
                opt("via", Ty::Enum(hubs), "A hub the path goes through."),
            ],
        ),
        {
            let mut o = Object::new(
                "internet",
                "The public internet: from each client group to the POPs (the anycast path's first leg) and straight to the regions (the direct path anycast is compared with).",
                vec![
                    opt("stretch", Ty::Float { min: 1.0, max: 10.0 }, "One stretch everywhere: delay = great-circle distance × stretch at light's speed in fibre (1–10), not calibrated. Not with `delay`."),
                    opt("delay", delay_model(), "A calibrated delay model: the name of one that ships, or one written out as `anyedge calibrate` prints it. Not with `stretch`. Default wondernetwork-2020-07 (measured between servers on the public internet; data/delay/README.md).").default(json!(INTERNET_DELAY_DEFAULT)),
                    opt("rtt", Ty::List(Box::new(Ty::Obj("pinned_rtt")), 0), "Measured round trips that replace the model's for a client group and a POP or region."),
                    opt("last_mile", Ty::Duration, "One-way delay of the client's access network, added to every internet path. Default 5ms, an assumption (no access-network dataset ships: data/delay/README.md).").default(json!("5ms")),
                    opt("jitter", Ty::Duration, "Mean of the exponential extra delay per packet. Default 4ms.").default(json!("4ms")),
                    opt("loss", Ty::Percent, "Random loss per packet, 0–100%. Default 0.3%.").default(json!("0.3%")),
                    opt("ases", Ty::List(Box::new(Ty::Obj("as")), 1), "The AS-level internet: transit and access networks, their places and relationships. With it, BGP over these networks (Gao–Rexford preference, valley-free export, shortest AS path, hot potato) decides which POP each client group enters, and the round trip is the delay model's legs along the chosen path. Without it, each POP has a transit of its own and a group enters its nearest POP."),
                    opt("ixps", Ty::List(Box::new(Ty::Obj("ixp")), 1), "Internet exchange points: their members peer with each other at the IXP's place. Needs `ases`."),
                    opt("routing", Ty::Enum(vec!["bgp", "nearest"]), "How a client group's POP is decided. bgp: BGP over `ases`, or, when the file names no networks, over the default internet drawn from the seed (the tier-1 networks and exchanges of data/internet/, fitted on public measurements: data/anycast/README.md); a file whose groups carry `catchment:` lists keeps them. nearest: no AS-level internet, each group at the nearest live POP by the delay model (the latency-ideal catchment, and a lab without hundreds of routers). Not `nearest` with `ases`. Default bgp.").default(json!("bgp")),
                ],
            );
            o.not_both = vec![("stretch", "delay")];
            o
        },
        {
            let mut o = Object::new(
                "as",
                "An autonomous system of the AS-level internet: a transit network present at places, or the access network of client groups.",
                vec![
                    req("name", Ty::Name, "The network's name; `providers`, `peers`, IXP `members` and POP `upstreams` name it."),
                    req("asn", Ty::Int { min: 1, max: i64::from(u32::MAX - 1) }, "Its AS number, unique in the file and not the CDN's own (64500)."),
                    opt("at", Ty::List(Box::new(place()), 1), format!("Where it has routers: {PLACE_DOC} An access network also has a router at each of its client groups.")),
                    opt("providers", name_list(), "Networks it buys transit from (names of `ases`): it takes all their routes and passes its own and its customers' routes to them. A provider's provider may not be its customer (no provider loop)."),
                    opt("peers", name_list(), "Networks it exchanges its own and its customers' routes with, settlement-free, beyond the IXPs' members (one side naming the other is enough). The tier-1 networks, which buy from nobody, peer with each other: write that clique out."),
                    opt("clients", name_list(), "Client groups (names of `clients`) this is the access network of. A group no network lists gets an access network of its own, a customer of the network with a router nearest it."),
                    opt("last_mile", Ty::Duration, "One-way delay of this access network's last mile, for its `clients` in place of `internet.last_mile`. Needs `clients`. The default internet draws one per access network (data/anycast/README.md)."),
                ],
            );
            o.at_least_one = vec!["at", "clients"];
            o
        },
        Object::new(
            "ixp",
            "An internet exchange point: its members peer with each other at its place (through its route server), each with a router there.",
            vec![
                req("name", Ty::Name, "The IXP's name; POP `upstreams` name it as `ixp/NAME`."),
                req("at", place(), format!("Where it is: {PLACE_DOC}")),
                req("members", name_list(), "Its member networks (names of `ases`); POPs join it through their `upstreams`."),
            ],
        ),
        Object::new(
            "pinned_rtt",
            "A measured round trip between a client group and a POP or region.",
            vec![
                req("between", Ty::Tuple(vec![Ty::Pattern(CLIENT_REF), Ty::AnyOf(vec![Ty::Pattern(POP_REF), Ty::Pattern(REGION_REF)])]), "[client/NAME, pop/NAME] or [client/NAME, region/NAME]."),
                req("rtt", Ty::DurationIn { min_ns: 1, max_ns: 10 * SEC }, "The round trip, 1ns–10s; never faster than light in fibre over the distance."),
            ],
        ),
        {
            let mut o = Object::new(
                "traffic_class",
                "What a client sends: UDP datagrams at an interval, TCP or QUIC requests at a rate, or a SYN flood.",
                vec![
                    req("vip", Ty::Name, "The VIP it goes to (a VIP's name)."),
                    opt("protocol", Ty::Enum(vec!["udp", "tcp", "quic"]), "udp: a datagram every `interval`, echoed; tcp: requests over a kept-alive connection (HTTP or HTTPS when the listener is); quic: requests over QUIC. Required unless `kind` is given."),
                    opt("kind", Ty::Enum(vec!["syn-flood"]), "syn-flood: spoofed SYNs at `rate` per client (an attack; the CLB's SYN proxy answers them)."),
                    opt("rate", Ty::Float { min: 0.1, max: 100_000.0 }, "SYN floods: SYNs per second per client (0.1–100,000)."),
                    req("port", Ty::Int { min: 1, max: 65_535 }, "The VIP's port (a listener on it must serve this protocol)."),
                    opt("interval", Ty::DurationIn { min_ns: MS, max_ns: 60 * SEC }, "UDP: time between a client's datagrams, 1ms–60s. Default 50ms.").default(json!("50ms")),
                    opt("size", Ty::Int { min: UDP_PAYLOAD_MIN as i64, max: UDP_PAYLOAD_MAX as i64 }, format!("UDP: payload bytes ({UDP_PAYLOAD_MIN}–{UDP_PAYLOAD_MAX}). Past the clients' 1,500-byte MTU a datagram travels as fragments and is lost with any of them. Default 120.")).default(json!(120)),
                    opt("requests_per_s", Ty::Float { min: 0.01, max: 1000.0 }, "TCP and QUIC: requests per second per client (0.01–1000). Default 1.").default(json!(1)),
                    opt("request", Ty::Int { min: 16, max: 10_000_000 }, "TCP and QUIC: request bytes (16–10,000,000). Default 500.").default(json!(500)),
                    opt("response", Ty::Int { min: 16, max: 10_000_000 }, "TCP and QUIC: response bytes (16–10,000,000). Default 20000.").default(json!(20000)),
                ],
            );
            o.at_least_one = vec!["protocol", "kind"];
            o.requires = vec![("kind", "rate")];
            o
        },
        Object::new(
            "client_group",
            "Clients at one place: they reach the VIP through the POP routing delivers them to (anycast) and straight to its region (direct).",
            vec![
                req("name", Ty::Name, "The group's name; reports and faults (`client/NAME`) name it."),
                req("location", Ty::Location, location_doc("the clients")),
                opt("count", Ty::Int { min: 1, max: 1 << 24 }, "Clients in the group (1–16,777,216, as many in a file). Those without `address:` are numbered from `clients_block` and must fit it. Default 1.").default(json!(1)),
                req("traffic", Ty::AnyOf(vec![Ty::Name, name_list()]), "The traffic class it sends, or a list of them (names under `traffic`)."),
                opt("catchment", name_list(), "BGP's preference order of POPs for this group (POP names), instead of the nearest."),
                opt("address", Ty::Cidr, "The block its clients' addresses come from (e.g. 198.18.66.0/24, or IPv6 for IPv6 clients). Default: numbered from `clients_block`."),
            ],
        ),
        {
            let mut o = Object::new(
                "failover",
                "How failures are found: POPs and CLB nodes probe each other over the backbone; a POP's transit runs BFD toward it and withdraws its routes when it goes silent.",
                vec![
                    opt("probe_interval", Ty::DurationIn { min_ns: MS, max_ns: 10 * SEC }, "Time between probes, 1ms–10s. Default 50ms.").default(json!("50ms")),
                    opt("probe_misses", Ty::Int { min: 1, max: 100 }, "Unanswered probes in a row that mark a peer down (1–100). Not with `pop_detect`. Default 6.").default(json!(6)),
                    // Probes grow with what a node forwards to: a POP probes a region's CLB
                    // nodes, a CLB node a POP, only within this long of its last packet to
                    // it (and while it takes the peer to be down). A peer used again is found
                    // dead within the same bound from its first packet.
                    opt("probe_idle", Ty::DurationOr("off"), "How long a POP keeps probing a region's CLB nodes after it last forwarded to the region (and a CLB node a POP after its last reply through it), 1ms–1h; peers taken to be down are probed until they answer. `off`: every POP probes every CLB node and back all the time. Default 1s.").default(json!("1s")),
                    // 50 ms × 3 had no false resets with 8 busy processes on this project's
                    // 2-core hosts; 10 ms × 3 had some.
                    opt("bfd_interval", Ty::DurationOr("off"), "BFD interval between a POP and its transit, 10ms–10s, or `off` (only the BGP hold timer finds a dead POP). Default 50ms.").default(json!("50ms")),
                    opt("bfd_multiplier", Ty::Int { min: 1, max: 255 }, "Silent BFD intervals that declare the POP dead (1–255). Default 3.").default(json!(3)),
                    // Measured in the lab with BIRD (BFD down in the transit's log to the new
                    // route in its kernel table, `ip -ts monitor route`): 0.2–1.0 ms, median
                    // 0.8 ms, over 5 freezes of pop/paris in `topologies/small.yaml` (README,
                    // "Anycast and BGP"). The lab's BGP messages cross no delay and BIRD has no
                    // MRAI; the public internet takes seconds.
                    opt("route_converge", Ty::Duration, "From a withdrawal to clients on their new POP (measured in the lab with BIRD: 1ms; the public internet takes seconds). Without an AS-level internet, groups on another POP's transit hear it the model's one-way delay between the two sites later, as the lab's relays hold it. Default 1ms.").default(json!("1ms")),
                    // Measured in the lab with BIRD over topologies/internet.yaml, each
                    // router's route changes timed by `ip -ts monitor route` (`sudo anyedge
                    // bench failover topologies/internet.yaml --kills 12 --fault kill`): a
                    // withdrawal from paris's upstream router to london's and manchester's
                    // access routers (5 speakers each), 24 ways, 0.67–1.27 ms per speaker,
                    // p50 0.88 ms (docs/src/routing.md).
                    opt("route_hop", Ty::Duration, "Over an AS-level internet (`internet.ases`): how long each BGP speaker past a POP's upstream router takes to pass the POP's update on (a network's route reflector counts as one), so a group hears it route_converge + speakers × route_hop after its upstream router's session to the POP went down. Measured in the lab with BIRD: 0.9ms; on the public internet an advertisement interval (MRAI) holds updates for up to 30s per speaker. Default 0.9ms.").default(json!("0.9ms")),
                    // Measured in the lab with BIRD (`sudo anyedge bench failover
                    // topologies/internet.yaml --kills 12 --fault kill`): pop/paris started
                    // again → its first upstream router's kernel route to the VIP, 855–1182
                    // ms, p50 1.02 s over 12 starts. The simulator counts from its transit's
                    // first answered probe, up to one BFD interval after the start.
                    opt("session_setup", Ty::Duration, "How long after its transit (or upstream router) finds a POP alive again the BGP session is back and the POP's routes go out: BIRD waits its connect delay (1s) before it connects. Measured in the lab with BIRD: 1s (a POP started again → its upstream's route, p50 1.02s). Default 1s.").default(json!("1s")),
                    opt("pop_detect", Ty::Duration, "Shorthand for probe_misses × probe_interval. Not with `probe_misses`."),
                ],
            );
            o.not_both = vec![("probe_misses", "pop_detect")];
            o
        },
        {
            let mut o = Object::new(
                "fault",
                "An event at a simulated time: exactly one of down, up, unbind, bind, migrate, link, partition, heal, set-weight.",
                vec![
                    req("at", Ty::Duration, "When it happens (before the end of `duration`)."),
                    opt("down", Ty::Pattern(TARGET), "Takes a node down: pop/NAME, region/NAME, clb/REGION/N, backend/IP:PORT or control/N."),
                    opt("up", Ty::Pattern(TARGET), "Brings a node back: pop/NAME, region/NAME, clb/REGION/N, backend/IP:PORT or control/N."),
                    opt("unbind", Ty::Pattern(BACKEND_REF), "Removes a backend from its groups: backend/IP:PORT."),
                    opt("bind", Ty::Pattern(BACKEND_REF), "Puts an unbound backend back: backend/IP:PORT."),
                    opt("migrate", Ty::Pattern(CLIENT_REF), "Moves a client group's traffic to new source addresses (as a mobile client does): client/NAME."),
                    opt("link", pop_region_pair(), "Impairs a backbone link, [pop/NAME, region/NAME], for `for`, with `loss`, `delay` or `jitter`."),
                    opt("for", Ty::Duration, "Link faults: how long the impairment lasts."),
                    opt("loss", Ty::Percent, "Link faults: the link's loss meanwhile, 0–100%."),
                    opt("delay", Ty::Duration, "Link faults: the link's one-way delay meanwhile."),
                    opt("jitter", Ty::Duration, "Link faults: the link's jitter meanwhile."),
                    opt("partition", Ty::List(Box::new(Ty::List(Box::new(Ty::Pattern(CONTROL_REF)), 0)), 2), "Splits the control nodes into sides that cannot reach each other: [[control/1, control/2], [control/3]]."),
                    opt("heal", Ty::Enum(vec!["partition"]), "Ends a partition: `heal: partition`."),
                    opt("set-weight", Ty::Obj("set_weight"), "Writes a backend's weight through the control plane."),
                ],
            );
            o.exactly_one = vec!["down", "up", "unbind", "bind", "migrate", "link", "partition", "heal", "set-weight"];
            o.requires = vec![("link", "for")];
            o
        },
        Object::new(
            "set_weight",
            "A weight written to the replicated route table.",
            vec![
                req("backend", Ty::SocketAddr, "The backend, IP:PORT (bound in some group)."),
                req("weight", Ty::Int { min: 0, max: 100 }, "Its new weight (0–100)."),
            ],
        ),
        Object::new(
            "security_group",
            "Stateful rules for new flows to what it is bound to; replies of allowed flows pass. The first matching rule decides; no match drops.",
            vec![
                req("name", Ty::Name, "The group's name."),
                req("bind", Ty::List(Box::new(Ty::AnyOf(vec![Ty::Pattern(BACKEND_REF), Ty::Pattern(r"^clb/[A-Za-z0-9_-]+(/[0-9]+)?$")])), 0), "What it guards: backend/IP:PORT, clb/REGION (every CLB node) or clb/REGION/N."),
                req("rules", Ty::List(Box::new(Ty::Obj("rule")), 1), "Rules, in order."),
            ],
        ),
        Object::new(
            "rule",
            "One rule of a security group.",
            vec![
                req("source", Ty::Cidr, "Source addresses it matches (a CIDR block, e.g. 0.0.0.0/0)."),
                req("port", Ty::AnyOf(vec![Ty::Int { min: 1, max: 65_535 }, Ty::Pattern(r"^\s*(any|[0-9]+(\s*-\s*[0-9]+)?)\s*$")]), "Destination ports it matches: a port, a range such as 8000-8100, or any."),
                req("action", Ty::Enum(vec!["allow", "drop"]), "What a match does."),
            ],
        ),
        Object::new(
            "control",
            "The control plane: Raft nodes (raft-rs) holding the route table; POPs and CLB nodes follow it.",
            vec![
                req("nodes", Ty::IntEnum(vec![3, 5]), "Control nodes: 3 or 5 (a majority survives one or two failures)."),
                opt("sites", name_list(), "Where each node runs: one region or POP name per node. Default: the regions, then the POPs, in file order."),
            ],
        ),
    ];
    // `delay:` in a shipped calibration file is the same mapping as `backbone.delay`.
    out.push(Object::new(
        "calibration_file",
        "A calibration as `anyedge calibrate` writes it.",
        vec![req(
            "delay",
            Ty::Obj("delay_model"),
            "The fitted delay model, as a topology file writes it under `delay:`.",
        )],
    ));
    out
}

fn ty_schema(ty: &Ty) -> Value {
    match ty {
        Ty::Name => json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}),
        // Any scalar: the parser reads `name: 2025` as the text "2025".
        Ty::Text => json!({"type": ["string", "number", "boolean"]}),
        Ty::Duration | Ty::DurationIn { .. } => {
            json!({"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]*)?\s*(ns|us|µs|ms|s|m|min|h)\s*$"})
        }
        Ty::DurationOr(word) => json!({"anyOf": [ty_schema(&Ty::Duration), {"const": word}]}),
        Ty::Percent => json!({"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]*)?\s*%\s*$"}),
        Ty::Bandwidth => json!({"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]*)?\s*([KkMmGg])?[Bb][Pp][Ss]\s*$"}),
        Ty::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        Ty::Float { min, max } => json!({"type": "number", "minimum": min, "maximum": max}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Enum(words) => json!({"type": "string", "enum": words}),
        Ty::IntEnum(values) => json!({"type": "integer", "enum": values}),
        Ty::Ipv4 => json!({"type": "string", "format": "ipv4", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$"}),
        Ty::Ipv6 => json!({"type": "string", "format": "ipv6", "pattern": "^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$"}),
        Ty::Ip => json!({"anyOf": [ty_schema(&Ty::Ipv4), ty_schema(&Ty::Ipv6)]}),
        Ty::SocketAddr => json!({"type": "string", "pattern": r"^([0-9.]+|\[[0-9A-Fa-f:.]+\]):[0-9]+$"}),
        Ty::Cidr => json!({"type": "string", "pattern": r"^\s*[0-9A-Fa-f:.]+/[0-9]{1,3}\s*$"}),
        Ty::Location => json!({
            "type": "array",
            "prefixItems": [
                {"type": "number", "minimum": -90, "maximum": 90, "description": "latitude, degrees"},
                {"type": "number", "minimum": -180, "maximum": 180, "description": "longitude, degrees"}
            ],
            "minItems": 2,
            "maxItems": 2
        }),
        Ty::Pattern(p) => json!({"type": "string", "pattern": p}),
        Ty::List(of, min) => {
            let mut s = json!({"type": "array", "items": ty_schema(of)});
            if *min > 0 {
                s["minItems"] = json!(min);
            }
            s
        }
        Ty::Tuple(items) => {
            let items: Vec<Value> = items.iter().map(ty_schema).collect();
            json!({"type": "array", "prefixItems": items, "minItems": items.len(), "maxItems": items.len()})
        }
        Ty::Obj(name) => json!({"$ref": format!("#/$defs/{name}")}),
        Ty::MapOf(of) => json!({
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
            "additionalProperties": ty_schema(of),
            "minProperties": 1
        }),
        Ty::AnyOf(options) => json!({"anyOf": options.iter().map(ty_schema).collect::<Vec<_>>()}),
        Ty::Nullable(of) => json!({"anyOf": [ty_schema(of), {"type": "null"}]}),
    }
}

fn object_schema(o: &Object) -> Value {
    let mut properties = Map::new();
    for f in &o.fields {
        let mut s = ty_schema(&f.ty);
        let fields = s.as_object_mut().expect("a type's schema is an object");
        fields.insert("description".into(), json!(f.doc));
        if let Some(d) = &f.default {
            fields.insert("default".into(), d.clone());
        }
        properties.insert(f.key.into(), s);
    }
    let required: Vec<&str> = o.fields.iter().filter(|f| f.required).map(|f| f.key).collect();
    let mut s = json!({
        "type": "object",
        "description": o.doc,
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    let mut all_of = Vec::new();
    if !o.exactly_one.is_empty() {
        let one: Vec<Value> = o.exactly_one.iter().map(|k| json!({"required": [k]})).collect();
        all_of.push(json!({"oneOf": one}));
    }
    if !o.at_least_one.is_empty() {
        let any: Vec<Value> = o.at_least_one.iter().map(|k| json!({"required": [k]})).collect();
        all_of.push(json!({"anyOf": any}));
    }
    for (a, b) in &o.not_both {
        all_of.push(json!({"not": {"required": [a, b]}}));
    }
    if !all_of.is_empty() {
        s["allOf"] = json!(all_of);
    }
    if !o.requires.is_empty() {
        let deps: Map<String, Value> = o.requires.iter().map(|(a, b)| (a.to_string(), json!([b]))).collect();
        s["dependentRequired"] = Value::Object(deps);
    }
    s
}

/// The topology format as a JSON Schema (draft 2020-12), pretty-printed with a final
/// newline: what `anyedge schema` prints and `schema/topology.schema.json` holds.
pub fn json_schema() -> String {
    let top = object("topology");
    let mut root = object_schema(top);
    let defs: Map<String, Value> =
        FORMAT.iter().filter(|o| o.name != "topology").map(|o| (o.name.to_string(), object_schema(o))).collect();
    let root_fields = root.as_object_mut().expect("an object");
    let mut out = Map::new();
    out.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
    out.insert("$id".into(), json!("https://anyedge.dev/schema/topology.schema.json"));
    out.insert("title".into(), json!("anyedge topology"));
    out.append(root_fields);
    out.insert("$defs".into(), Value::Object(defs));
    let mut text = serde_json::to_string_pretty(&Value::Object(out)).expect("a schema serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_area_has_its_region_only_community() {
        let regions: Vec<String> = Area::ALL.iter().map(|a| format!("region:{}", a.name())).collect();
        assert_eq!(COMMUNITIES[0], "no-export");
        assert_eq!(COMMUNITIES[1..].iter().map(|c| c.to_string()).collect::<Vec<_>>(), regions);
    }

    fn refs(ty: &Ty, out: &mut Vec<&'static str>) {
        match ty {
            Ty::Obj(name) => out.push(name),
            Ty::List(of, _) | Ty::MapOf(of) | Ty::Nullable(of) => refs(of, out),
            Ty::Tuple(items) | Ty::AnyOf(items) => items.iter().for_each(|t| refs(t, out)),
            _ => {}
        }
    }

    #[test]
    fn every_mapping_the_format_names_is_defined_once_and_every_field_is_documented() {
        let mut names: Vec<&str> = FORMAT.iter().map(|o| o.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a mapping is defined twice");
        for o in FORMAT.iter() {
            assert!(!o.doc.is_empty(), "{} has no description", o.name);
            let mut keys = o.keys.clone();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), o.fields.len(), "{} lists a key twice", o.name);
            for f in &o.fields {
                assert!(f.doc.len() > 10, "{}.{} has no description", o.name, f.key);
                let mut r = Vec::new();
                refs(&f.ty, &mut r);
                for name in r {
                    assert!(names.contains(&name), "{}.{} refers to undefined `{name}`", o.name, f.key);
                }
            }
            let pairs = o.not_both.iter().chain(&o.requires).flat_map(|(a, b)| [a, b]);
            for k in o.exactly_one.iter().chain(&o.at_least_one).chain(pairs) {
                assert!(o.keys.contains(k), "{} constrains unknown key {k}", o.name);
            }
        }
    }

    #[test]
    fn the_schema_is_draft_2020_12_json_with_every_mapping_closed() {
        let v: Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(v["required"], json!(["name", "vips", "pops", "regions", "clients", "traffic"]));
        for (name, def) in v["$defs"].as_object().unwrap() {
            assert_eq!(def["additionalProperties"], json!(false), "{name} allows unknown fields");
        }
        let listener = &v["$defs"]["listener"]["properties"]["scheduler"];
        assert_eq!(listener["enum"], json!(["wrr", "wlc", "hash", "maglev"]));
        assert_eq!(listener["default"], json!("wrr"));
    }
}
