//! Topology files: the one description that drives the simulator, the lab and every
//! node. `load` parses and validates a YAML file and reports every problem as
//! `FILE:LINE:COL: field: reason`; a file that loads is fully resolved (names are
//! indices, units are nanoseconds, bits per second and fractions).

pub mod advice;
pub mod bgp;
mod calibrations;
pub mod catchments;
pub mod default_internet;
pub mod generate;
pub mod internet_text;
pub mod measured;
pub mod nodes;
pub mod overrides;
mod parse;
pub use calibrations::{BACKBONE_DELAY_DEFAULT, BUILTIN_DELAYS, INTERNET_DELAY_DEFAULT};
pub use overrides::Override;
pub use parse::builtin_delay;
pub mod route_table;
pub mod routing;
pub mod schema;
#[cfg(test)]
mod test_worlds;
mod values;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyedge_ccn::delay::DelayModel;
use anyedge_ccn::geo::Location;
use anyedge_proto::Transport;
use anyedge_region::HealthConfig;

pub use parse::CLIENTS_MAX;
pub use values::{Cidr, ValueError, parse_bandwidth_bps, parse_duration_ns, parse_percent};

#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub name: String,
    pub seed: u64,
    pub duration_ns: u64,
    pub vips: Vec<Vip>,
    pub pops: Vec<PopSite>,
    pub regions: Vec<Region>,
    pub idcs: Vec<Idc>,
    pub nat_gateways: Vec<NatGateway>,
    pub backbone: Backbone,
    pub internet: Internet,
    pub clients: Vec<ClientGroup>,
    /// The IPv4 block clients without an `address:` block are numbered from
    /// (`clients_block:`); `None`: the default pool ([`ClientPool::DEFAULT`]).
    pub clients_block: Option<Cidr>,
    pub traffic: Vec<TrafficClass>,
    pub failover: Failover,
    pub faults: Vec<Fault>,
    pub security_groups: Vec<SecurityGroupDef>,
    /// The Raft-replicated control plane (`control:`), when the file has one.
    pub control: Option<Control>,
    pub tls: Tls,
}

/// `tls:` — the certificates anyedge issues for the VIPs' TLS and QUIC listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tls {
    /// The key algorithm of the VIP certificates and of the CA that issues them (a lab's,
    /// a rendered deployment's, the simulator's).
    pub algorithm: anyedge_region::identity::KeyAlgorithm,
}

/// A security group and where it is bound.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroupDef {
    pub group: anyedge_region::security::SecurityGroup,
    pub bind: Vec<SgBinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgBinding {
    /// The backend instance with this address (all its ports).
    Backend(IpAddr),
    /// Every CLB node of a region, or one node.
    Clb { region: usize, index: Option<u16> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vip {
    pub name: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    /// Index into `Topology::regions`.
    pub home: usize,
    /// Indices into `Topology::pops`: the publish domains.
    pub pops: Vec<usize>,
    pub listeners: Vec<Listener>,
    /// The DNS names clients reach it by (`hosts:`), lower-case.
    pub hosts: Vec<String>,
    /// Certificate chains of its own (`certificates:`), paths as the file gives them,
    /// relative to its directory (made absolute by [`load`]); none: the lab's CA issues one.
    pub certificates: Vec<OwnCertificate>,
    /// Per POP index, this VIP's levers there when its `announce:` names the POP (the
    /// POP's own levers, with the fields the entry gives replaced).
    pub announce: std::collections::BTreeMap<usize, Levers>,
}

/// A chain of one's own and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCertificate {
    pub chain: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Vip {
    /// What a certificate for it may name: its hosts and addresses.
    pub fn names(&self) -> Vec<String> {
        let addrs = std::iter::once(self.ipv4.to_string()).chain(self.ipv6.map(|a| a.to_string()));
        self.hosts.iter().cloned().chain(addrs).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    Tcp,
    Udp,
    TcpSsl,
    Quic,
    Http,
    Https,
}

impl ListenerProtocol {
    /// TCP-based listeners share one port space, UDP and QUIC the other.
    pub fn transport(self) -> Transport {
        match self {
            ListenerProtocol::Udp | ListenerProtocol::Quic => Transport::Udp,
            _ => Transport::Tcp,
        }
    }

    /// HTTP and HTTPS: the CLB terminates TCP and speaks HTTP to backends.
    pub fn is_layer7(self) -> bool {
        matches!(self, ListenerProtocol::Http | ListenerProtocol::Https)
    }

    /// HTTPS and TCP SSL: the CLB terminates TLS.
    pub fn has_tls(self) -> bool {
        matches!(self, ListenerProtocol::Https | ListenerProtocol::TcpSsl)
    }

    /// The CLB terminates the client's TCP connection (HTTP, HTTPS, TCP SSL).
    pub fn is_terminated(self) -> bool {
        self.is_layer7() || self.has_tls()
    }

    pub fn from_name(name: &str) -> Option<ListenerProtocol> {
        [
            ListenerProtocol::Tcp,
            ListenerProtocol::Udp,
            ListenerProtocol::TcpSsl,
            ListenerProtocol::Quic,
            ListenerProtocol::Http,
            ListenerProtocol::Https,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Udp => "udp",
            ListenerProtocol::TcpSsl => "tcp-ssl",
            ListenerProtocol::Quic => "quic",
            ListenerProtocol::Http => "http",
            ListenerProtocol::Https => "https",
        }
    }
}

/// Listener schedulers are the CLB core's own.
pub use anyedge_region::SchedulerKind as Scheduler;

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub protocol: ListenerProtocol,
    pub port: u16,
    pub scheduler: Scheduler,
    /// Index into the home region's `backend_groups`.
    pub backend_group: usize,
    pub persistence_ns: Option<u64>,
    /// Clients must present a certificate from the lab's CA (HTTPS, TCP SSL, QUIC only).
    pub mtls: bool,
    /// What a QUIC listener offers in ALPN (`h3`: HTTP/3 terminated; anything else:
    /// streams relayed as bytes); empty for the other protocols.
    pub alpn: Vec<String>,
    /// An HTTPS listener's `alt_svc`: how long (ns) its answers tell clients that HTTP/3
    /// is served on the same port (`ma=`), when the VIP has an `h3` QUIC listener there;
    /// `None`: `off`, and every other protocol.
    pub alt_svc_ns: Option<u64>,
}

/// Whether `listeners` serve HTTP/3 on UDP `port` (a QUIC listener offering `h3`).
pub(crate) fn serves_h3(listeners: &[Listener], port: u16) -> bool {
    listeners.iter().any(|l| l.protocol == ListenerProtocol::Quic && l.port == port && l.alpn.iter().any(|a| a == "h3"))
}

impl Vip {
    /// Whether the VIP serves HTTP/3 on UDP `port` (a QUIC listener offering `h3`).
    pub fn serves_h3_on(&self, port: u16) -> bool {
        serves_h3(&self.listeners, port)
    }

    /// The `Alt-Svc` field value an HTTPS listener of this VIP adds to its answers
    /// (`h3=":443"; ma=86400`), if any.
    pub fn alt_svc(&self, l: &Listener) -> Option<String> {
        let ma_ns = l.alt_svc_ns.filter(|_| l.protocol == ListenerProtocol::Https && self.serves_h3_on(l.port))?;
        Some(format!("h3=\":{}\"; ma={}", l.port, ma_ns / 1_000_000_000))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PopSite {
    pub name: String,
    pub location: Location,
    /// How the POP speaks BGP to the AS-level internet (`internet.ases`): its upstreams
    /// and the operator's levers. Empty when the file has no AS-level internet.
    pub bgp: PopBgp,
}

/// A POP's BGP: who it buys transit from or meets at an IXP, and how it announces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PopBgp {
    pub upstreams: Vec<Upstream>,
    /// How it announces every VIP it publishes, unless the VIP's `announce:` says
    /// otherwise for this POP ([`Topology::levers`]).
    pub levers: Levers,
}

/// The operator's levers on one announcement: what a POP's own fields set for every VIP,
/// and a VIP's `announce:` entry for one POP overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Levers {
    /// Extra copies of the CDN's AS number on the path (AS-path prepending).
    pub prepend: u8,
    /// Announce only to these upstreams (selective announcement); empty: to all.
    pub announce_to: Vec<Upstream>,
    /// RFC 1997 no-export: the upstream keeps the route to itself and its customers' view
    /// of it stops there.
    pub no_export: bool,
    /// A region-only community (`region:AREA`, regional anycast): networks pass the route
    /// on only to routers in that area.
    pub region: Option<anyedge_ccn::delay::Area>,
}

/// A POP's BGP neighbour: a network it buys transit from (or peers with), or an IXP
/// whose members it peers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Upstream {
    /// Index into `Internet::ases`.
    As(usize),
    /// Index into `Internet::ixps`.
    Ixp(usize),
}

/// An AS of the AS-level internet (`internet.ases`): a transit network with its places,
/// or an access network serving client groups.
#[derive(Debug, Clone, PartialEq)]
pub struct AsNet {
    pub name: String,
    pub asn: u32,
    /// Where its routers are, as the file names them (for reports) and located.
    pub at: Vec<Place>,
    /// Indices into `Internet::ases`: the networks it buys transit from.
    pub providers: Vec<usize>,
    /// Indices into `Internet::ases`: settlement-free peers beyond the IXPs'.
    pub peers: Vec<usize>,
    /// Client groups (indices into `Topology::clients`) it is the access network of.
    pub clients: Vec<usize>,
    /// The one-way delay of its clients' last mile, in place of `Internet::last_mile_ns`
    /// for them (`last_mile:` of an access network).
    pub last_mile_ns: Option<u64>,
}

/// A place of the AS-level internet: a name and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub name: String,
    pub location: Location,
}

/// An internet exchange point: its members peer with each other through its route
/// server, at its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Ixp {
    pub name: String,
    pub at: Place,
    /// Indices into `Internet::ases` (POPs name the IXP in their `upstreams`).
    pub members: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: String,
    pub location: Location,
    pub clb_nodes: u16,
    /// Connection-table capacity of each CLB node.
    pub conn_table: usize,
    /// Leading bits of an IPv4 client address that count as one source for per-source
    /// limits.
    pub source_prefix_v4: u8,
    /// Addresses the region's CLB nodes own for SNAT (IDC backends, NAT64).
    pub snat: Vec<IpAddr>,
    pub health: HealthConfig,
    pub backend_groups: Vec<BackendGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendGroup {
    pub name: String,
    pub backends: Vec<Backend>,
    /// Health checking of this group when it differs from the region's.
    pub health: Option<HealthConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u8,
    pub site: Site,
    /// What answers on its port.
    pub app: App,
}

/// What answers on a backend's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum App {
    /// anyedge's own servers (UDP echo, TCP and HTTP), which the backend host's node runs
    /// on the port: what tests and labs use.
    #[default]
    Builtin,
    /// The user's own application: the host's node runs only the tunnel end and binds
    /// nothing on the port, so the service running on the host answers.
    External,
}

impl App {
    /// The name the topology file uses.
    pub fn name(self) -> &'static str {
        match self {
            App::Builtin => "builtin",
            App::External => "external",
        }
    }
}

/// Where a backend lives relative to the region that binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// In the region itself.
    Local,
    /// In another region (index into `regions`), reached over the backbone.
    Region(usize),
    /// In an on-premises IDC (index into `idcs`), over the backbone through SNAT.
    Idc(usize),
    /// On the public internet, reached by its public address.
    Internet(Egress),
}

/// How a CLB node reaches a backend on the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Through a NAT gateway (index into `nat_gateways`) of the binding region: the
    /// backend sees the gateway's public address (TCP names the client in a TOA option).
    Nat(usize),
    /// Through the region's router (a route-table entry whose next hop is a router), no
    /// translation: the backend sees the client's address, and the CLB node's for
    /// health checks.
    Router,
}

/// A NAT gateway of a region (`nat_gateways:`): CLB nodes reach public-internet backends
/// through it, translated to its public address.
#[derive(Debug, Clone, PartialEq)]
pub struct NatGateway {
    pub name: String,
    /// Index into `Topology::regions`.
    pub region: usize,
    pub public: IpAddr,
}

/// An on-premises data centre that backends may live in.
#[derive(Debug, Clone, PartialEq)]
pub struct Idc {
    pub name: String,
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackboneTransport {
    Udp,
    Grpc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backbone {
    /// Propagation delay between two places (POP, region, IDC).
    pub delay: DelayModel,
    pub jitter_ns: u64,
    /// Fraction 0..=1.
    pub loss: f64,
    pub bandwidth_bps: u64,
    /// How long the link queue may take to drain before it drops.
    pub queue_ns: u64,
    pub transport: BackboneTransport,
    /// (pop, region) pairs that have a backbone link; `None` is a full mesh.
    pub links: Option<Vec<(usize, usize)>>,
}

impl Backbone {
    pub fn has_link(&self, pop: usize, region: usize) -> bool {
        self.links.as_ref().is_none_or(|l| l.contains(&(pop, region)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Internet {
    /// Round trips between two places on the public internet, before the last mile.
    pub delay: DelayModel,
    /// Measured round trips (`rtt:`) that replace the model's for their pair.
    pub pinned: Vec<PinnedRtt>,
    pub last_mile_ns: u64,
    /// Where `last_mile_ns` comes from, for reports: the file, or the assumed default.
    pub last_mile_source: &'static str,
    pub jitter_ns: u64,
    pub loss: f64,
    /// The AS-level internet (`ases:`); empty: each POP has a transit of its own
    /// ([`bgp`]'s rule).
    pub ases: Vec<AsNet>,
    /// Internet exchange points (`ixps:`).
    pub ixps: Vec<Ixp>,
    /// The AS-level internet's graph and ways, worked out as needed.
    pub ways: catchments::Ways,
    /// How a group's POP is decided (`routing:`), and whether `ases` were drawn.
    pub routing: Routing,
}

/// How the internet decides which POP a client group enters (`internet.routing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// BGP over the file's networks (`ases`).
    #[default]
    Bgp,
    /// BGP over the default internet, drawn from the seed because the file names no
    /// networks ([`default_internet`]).
    BgpDrawn,
    /// No AS-level internet: each POP has a transit of its own and a group enters the
    /// nearest live POP by the delay model, or the first live one of its `catchment:`
    /// list (`routing: nearest`, or a file whose groups carry `catchment:` lists).
    Nearest,
}

impl Routing {
    /// What the report says drew the catchments.
    pub fn text(self, seed: u64) -> String {
        match self {
            Routing::Bgp => "BGP over the file's networks (internet.ases)".into(),
            Routing::BgpDrawn => format!(
                "BGP over the default internet drawn from seed {seed} (topology/src/default_internet.rs; its shape fitted on RIPE Atlas pings to anycast services, data/anycast/README.md)"
            ),
            Routing::Nearest => {
                "each group at the nearest live POP by the delay model, or its catchment list (no AS-level internet)"
                    .into()
            }
        }
    }
}

impl Internet {
    /// Whether the file describes the AS-level internet, so BGP over it decides each
    /// group's POP ([`catchments`]).
    pub fn has_ases(&self) -> bool {
        !self.ases.is_empty()
    }
}

/// Where a client group's internet path ends: a POP (anycast) or a region (direct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternetEnd {
    Pop(usize),
    Region(usize),
}

/// A measured round trip between a client group and a POP or region (`internet.rtt`),
/// which the simulator uses instead of the model's (the last mile is still added).
#[derive(Debug, Clone, PartialEq)]
pub struct PinnedRtt {
    pub client: usize,
    pub to: InternetEnd,
    pub rtt_ns: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientGroup {
    pub name: String,
    pub location: Location,
    pub count: u32,
    /// Indices into `Topology::traffic`.
    pub traffic: Vec<usize>,
    /// BGP's preference order (indices into `pops`) instead of nearest.
    pub catchment: Option<Vec<usize>>,
    /// Where the group's source addresses come from; `None`: the default pool.
    pub address: Option<Cidr>,
}

/// Where clients without an `address:` block get their addresses, in order: hosts
/// `first..end` of `block` (host `i` is the network address + 1 + `i`), skipping groups'
/// own blocks and VIP and backend addresses inside it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientPool {
    pub block: Cidr,
    pub first: u128,
    pub end: u128,
}

impl ClientPool {
    /// Without `clients_block:`: 198.18.64.1–198.18.255.253 (49,149 addresses), clear of
    /// VIPs (198.18.0.x) and CLB nodes (198.18.32.x); .254 is the lab hosts' gateway.
    pub const DEFAULT: ClientPool = ClientPool {
        block: Cidr { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), prefix: 16 },
        first: 64 * 256,
        end: 65_536 - 3,
    };

    /// The pool of a `clients_block:` (every host address of it), or the default.
    pub fn of(block: Option<Cidr>) -> ClientPool {
        match block {
            Some(block) => ClientPool { block, first: 0, end: block.hosts() },
            None => ClientPool::DEFAULT,
        }
    }

    /// Addresses it numbers from.
    pub fn len(&self) -> u128 {
        self.end - self.first
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.first
    }

    /// Its first and last addresses.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        (self.block.host(self.first), self.block.host(self.end.saturating_sub(1).max(self.first)))
    }
}

/// How long a client waits on a TCP connection that makes no progress (no connection
/// made, no answer completed) while it has a request outstanding, before it gives the
/// connection up, counts that request lost and connects again. The lab's probe waits as
/// long (`lab/src/client/probe.rs`), so a silent connection costs the same in both drivers.
pub const CLIENT_WAIT_NS: u64 = 5_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrafficKind {
    /// Request/response datagrams: one every `interval_ns`, `size` bytes of payload.
    Udp { interval_ns: u64, size: u32 },
    /// A TCP connection carrying requests at `requests_per_s`, each answered by
    /// `response` bytes.
    Tcp { requests_per_s: f64, request: u32, response: u32 },
    /// TCP SYNs from random source ports, never completed: `rate_per_s` per client.
    SynFlood { rate_per_s: f64 },
    /// A QUIC connection carrying requests, one bidirectional stream each.
    Quic { requests_per_s: f64, request: u32, response: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrafficClass {
    pub name: String,
    pub vip: usize,
    pub port: u16,
    pub kind: TrafficKind,
}

impl TrafficClass {
    pub fn transport(&self) -> Transport {
        match self.kind {
            TrafficKind::Udp { .. } | TrafficKind::Quic { .. } => Transport::Udp,
            TrafficKind::Tcp { .. } | TrafficKind::SynFlood { .. } => Transport::Tcp,
        }
    }
}

/// `failover: { probe_interval, probe_misses, probe_idle, bfd_interval, bfd_multiplier,
/// route_converge, route_hop, session_setup }`: how the liveness prober both drivers run (POPs ↔ CLB nodes over the
/// backbone) finds a dead node — probing only the peers a node forwarded to within
/// `probe_idle` (and those it takes to be down); how BFD between a POP and its transit finds a dead POP
/// (the lab's BIRD sessions use these timers; the simulator's internet edge probes with
/// them); how long BGP takes to move clients once a POP is withdrawn: at its upstream
/// routers, and over an AS-level internet at each speaker past them; and how long a POP
/// found alive again waits for its session. `pop_detect: D`
/// is shorthand for `probe_misses: D / probe_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    pub probe_interval_ns: u64,
    pub probe_misses: u32,
    /// How long a POP keeps probing a region's CLB nodes (a CLB node a POP) after it last
    /// forwarded to it; 0: every peer, always (`probe_idle: off`).
    pub probe_idle_ns: u64,
    /// 0: no BFD (`bfd_interval: off`).
    pub bfd_interval_ns: u64,
    pub bfd_multiplier: u32,
    pub route_converge_ns: u64,
    /// Over an AS-level internet: how long each BGP speaker past the POP's upstream router
    /// takes to pass its update on ([`catchments::Catchment::hops`]).
    pub route_hop_ns: u64,
    /// How long after its transit finds a POP alive again the BGP session is back and
    /// the POP announced.
    pub session_setup_ns: u64,
}

impl Failover {
    /// The prober's settings.
    pub fn probe(&self) -> anyedge_ccn::LivenessConfig {
        anyedge_ccn::LivenessConfig { interval_ns: self.probe_interval_ns, misses: self.probe_misses }
    }

    /// A POP's or CLB node's prober of its backbone peers: on demand (only those it
    /// forwarded to within `probe_idle`, and those it takes to be down) unless
    /// `probe_idle: off`.
    pub fn backbone_prober(&self, peers: usize, now_ns: u64) -> anyedge_ccn::LivenessProber {
        match self.probe_idle_ns {
            0 => anyedge_ccn::LivenessProber::new(peers, self.probe(), now_ns),
            idle => anyedge_ccn::LivenessProber::on_demand(peers, self.probe(), idle, now_ns),
        }
    }

    /// Whether BFD runs between POPs and their transits (`bfd_interval: off`: it does not).
    pub fn bfd_on(&self) -> bool {
        self.bfd_interval_ns > 0
    }

    /// How a transit finds its POP dead, as a prober: BFD, down after `bfd_multiplier`
    /// silent intervals; with BFD off, the BGP session's hold timer: a keepalive every
    /// [`bgp::KEEPALIVE_S`], the session down [`bgp::HOLD_S`] after the last one came,
    /// so (hold − keepalive, hold] after the POP died, where a prober missing `m` in a row
    /// finds it (m, m + 1] intervals after: m = hold / keepalive − 1. Measured in the lab
    /// (`bench failover` on small.yaml with `bfd_interval: off`, 10 freezes): detected
    /// 1995–2715 ms, p50 2301 ms; the simulator finds it in 2 s and a few ms.
    pub fn bfd(&self) -> anyedge_ccn::LivenessConfig {
        if self.bfd_on() {
            anyedge_ccn::LivenessConfig { interval_ns: self.bfd_interval_ns, misses: self.bfd_multiplier }
        } else {
            let keepalive_ns = u64::from(bgp::KEEPALIVE_S) * 1_000_000_000;
            anyedge_ccn::LivenessConfig {
                interval_ns: keepalive_ns,
                misses: (bgp::HOLD_S / bgp::KEEPALIVE_S - 1).max(1),
            }
        }
    }

    /// The shortest time a dead peer takes to be noticed: `probe_misses` intervals.
    pub fn detect_ns_min(&self) -> u64 {
        self.probe_interval_ns * u64::from(self.probe_misses)
    }

    /// The longest a dead peer can go unnoticed on a loss-free path.
    pub fn detect_ns_max(&self) -> u64 {
        self.probe().detect_ns_max()
    }
}

/// `control: { nodes: 3, sites: [...] }`: control nodes `control/1` … `control/N`.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// 3 or 5 voters.
    pub nodes: u8,
    /// Where each node runs (a region's or POP's name and location), node 1 first.
    pub sites: Vec<(String, Location)>,
    /// Election timeouts are drawn per node from this range (raft-rs ticks of `tick_ns`).
    pub election_ns: (u64, u64),
    pub tick_ns: u64,
}

/// Most control nodes a file may have: 5 (the 3 or 5 voters).
pub const CONTROL_NODES_MAX: u8 = 5;

/// Smallest UDP request a traffic class may send: the simulator's echo stamps 16 bytes of
/// sequence and send time and the reply names backend and client in 36 more.
pub const UDP_PAYLOAD_MIN: usize = 52;
/// The largest UDP payload a topology's traffic sends: past the clients' 1,500-byte MTU a
/// datagram travels as fragments (the POP reassembles them; the simulator loses it with
/// any of them). 30,000 bytes is the largest the lab was measured with (96 of 100
/// answered through the VIP; `tests/lab.rs` checks 3,000 and 9,000).
pub const UDP_PAYLOAD_MAX: usize = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Pop(usize),
    Region(usize),
    /// One CLB node of a region: `index` counts from 0 here; its name, `clb/REGION/N`,
    /// counts from 1 like `control/N` (see [`clb_name`]).
    Clb {
        region: usize,
        index: u16,
    },
    Backend {
        region: usize,
        addr: SocketAddr,
    },
    /// `control/N`, N counted from 1.
    Control(u8),
}

/// Whether node `name` matches `pattern`, where `*` matches any run of characters
/// (`pop/*`, `clb/frankfurt/*`, `*`): how hosts files and capture filters name nodes.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// A CLB node's name as users write and read it: `clb/REGION/N`, N counted from 1 like
/// `control/N` (the node at `index` 0 is `clb/REGION/1`). The one place names are made.
pub fn clb_name(region: &str, index: impl Into<usize>) -> String {
    format!("clb/{region}/{}", index.into() + 1)
}

/// A CLB node's network namespace suffix in the lab: `clb-REGION-N`, numbered as its name.
pub fn clb_slug(region: &str, index: impl Into<usize>) -> String {
    format!("clb-{region}-{}", index.into() + 1)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkOverride {
    pub pop: usize,
    pub region: usize,
    pub for_ns: u64,
    pub loss: Option<f64>,
    pub delay_ns: Option<u64>,
    pub jitter_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAction {
    Down(Target),
    Up(Target),
    /// Unbind a backend: forwarding to it stops at once (only backend targets).
    Unbind(Target),
    /// Bind an unbound backend again.
    Bind(Target),
    /// Every client of a group changes its source port (4G to Wi-Fi): QUIC connections
    /// migrate, other flows start afresh. Index into `clients`.
    Migrate(usize),
    Link(LinkOverride),
    /// Control nodes split into sides that cannot reach each other: the side of each
    /// node (`control/1` first); nodes the file did not list share one more side.
    Partition([u8; CONTROL_NODES_MAX as usize]),
    /// Every control node reaches every other again.
    Heal,
    /// A backend's weight changes through the control plane (committed, then applied by
    /// every CLB node that binds it; straight to the CLBs when the file has no `control:`).
    SetWeight {
        region: usize,
        addr: SocketAddr,
        weight: u8,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at_ns: u64,
    pub action: FaultAction,
    /// As written, e.g. `down pop/tokyo`.
    pub what: String,
}

impl Topology {
    /// Where clients without an `address:` block are numbered from.
    pub fn client_pool(&self) -> ClientPool {
        ClientPool::of(self.clients_block)
    }

    /// The POPs client group `g` may enter for VIP `vip`, in routing's preference: its
    /// `catchment` when it has one, else BGP's selection at the transit the group
    /// attaches to (`bgp`: its nearest POP first, then the POPs nearest that one).
    pub fn pop_order(&self, g: usize, vip: usize) -> Vec<usize> {
        self.pop_order_attached(g, vip, bgp::attach(self, g))
    }

    /// [`Topology::pop_order`] for a group known to attach at `attach` ([`bgp::attach`]).
    pub fn pop_order_attached(&self, g: usize, vip: usize, attach: Option<usize>) -> Vec<usize> {
        let group = &self.clients[g];
        let publish = &self.vips[vip].pops;
        match (&group.catchment, attach) {
            (Some(order), _) => order.iter().copied().filter(|p| publish.contains(p)).collect(),
            (None, Some(at)) => bgp::selection_order(self, at, publish),
            (None, None) => Vec::new(),
        }
    }

    /// How POP `p` announces VIP `vip`: the VIP's `announce:` entry for it, else the
    /// POP's own levers.
    pub fn levers(&self, vip: usize, p: usize) -> &Levers {
        self.vips[vip].announce.get(&p).unwrap_or(&self.pops[p].bgp.levers)
    }

    /// Where an internet path's far end is.
    pub fn internet_end_location(&self, to: InternetEnd) -> Location {
        match to {
            InternetEnd::Pop(p) => self.pops[p].location,
            InternetEnd::Region(r) => self.regions[r].location,
        }
    }

    /// Client group `g`'s last mile (one way): its access network's when that has one
    /// (`last_mile:` of a network that lists it), else the internet's.
    pub fn last_mile_ns(&self, g: usize) -> u64 {
        let access = self.internet.ases.iter().filter(|a| a.last_mile_ns.is_some()).find(|a| a.clients.contains(&g));
        access.and_then(|a| a.last_mile_ns).unwrap_or(self.internet.last_mile_ns)
    }

    /// Every client group's last mile at once ([`Topology::last_mile_ns`] for each).
    pub fn last_miles_ns(&self) -> Vec<u64> {
        let mut each = vec![self.internet.last_mile_ns; self.clients.len()];
        // Backwards, so the first network that lists a group has the last word (as
        // `last_mile_ns` finds it).
        for a in self.internet.ases.iter().rev().filter(|a| a.last_mile_ns.is_some()) {
            for &g in &a.clients {
                each[g] = a.last_mile_ns.unwrap_or(self.internet.last_mile_ns);
            }
        }
        each
    }

    /// The least last mile of any client group: no internet path is shorter.
    pub fn last_mile_min_ns(&self) -> u64 {
        let own = self.internet.ases.iter().filter(|a| !a.clients.is_empty()).filter_map(|a| a.last_mile_ns);
        own.chain([self.internet.last_mile_ns]).min().unwrap_or(self.internet.last_mile_ns)
    }

    /// Client group `g`'s internet round trip to a POP or region, before the last mile:
    /// measured when the file pins it (`internet.rtt`); to a POP over an AS-level
    /// internet, the model's along the group's BGP way to that POP
    /// ([`catchments::Ways::rtt_ns`]); else the model's straight between the two places.
    pub fn internet_rtt_ns(&self, g: usize, to: InternetEnd) -> u64 {
        let way = match to {
            InternetEnd::Pop(p) if self.internet.has_ases() && !self.is_pinned(g, to) => {
                self.internet.ways.rtt_ns(self, g, p)
            }
            _ => None,
        };
        way.unwrap_or_else(|| self.straight_rtt_ns(g, to))
    }

    /// Client group `g`'s round trip to a POP or region straight between the two places
    /// (the model's, or the pinned one): what a POP's inflation is measured against.
    pub fn straight_rtt_ns(&self, g: usize, to: InternetEnd) -> u64 {
        match self.internet.pinned.iter().find(|p| p.client == g && p.to == to) {
            Some(p) => p.rtt_ns,
            None => 2 * self.internet.delay.one_way_ns(self.clients[g].location, self.internet_end_location(to)),
        }
    }

    fn is_pinned(&self, g: usize, to: InternetEnd) -> bool {
        self.internet.pinned.iter().any(|p| p.client == g && p.to == to)
    }

    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }

    pub fn pop_index(&self, name: &str) -> Option<usize> {
        self.pops.iter().position(|p| p.name == name)
    }

    /// The VIP address a client at `client` reaches for a traffic class: IPv6 clients
    /// use the VIP's IPv6 address (validation makes sure it has one).
    pub fn vip_addr(&self, class: &TrafficClass, client: IpAddr) -> IpAddr {
        let vip = &self.vips[class.vip];
        match (client, vip.ipv6) {
            (IpAddr::V6(_), Some(v6)) => IpAddr::V6(v6),
            _ => IpAddr::V4(vip.ipv4),
        }
    }
}

/// One problem in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    /// Path of the field, e.g. `vips[0].listeners[1].port`.
    pub field: String,
    pub reason: String,
}

/// Every problem found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}: {}", self.file, d.line, d.col, d.field, d.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyError {}

/// Reads and validates a topology file.
pub fn load(path: &std::path::Path) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    // Refused unread: reading a 50 MB file took 4.5 GB of YAML nodes.
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > FILE_BYTES_MAX
    {
        let reason = format!(
            "{:.1} MB: a topology file holds at most {} MB",
            meta.len() as f64 / 1e6,
            FILE_BYTES_MAX / 1_000_000
        );
        return Err(single(&file, 1, 1, "file", reason));
    }
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_str(&file, &text).map(|t| resolved_against(t, path)),
            Err(e) => Err(single(&file, 1, 1, "file", format!("not UTF-8 text ({e})"))),
        },
        Err(e) => Err(single(&file, 1, 1, "file", format!("cannot read: {e}"))),
    }
}

/// `t` with the files it names (the VIPs' own certificate chains and keys) as paths from
/// `path`'s directory, made absolute: whoever reads them later (the simulator, a lab's
/// render) finds them whatever its working directory.
fn resolved_against(mut t: Topology, path: &std::path::Path) -> Topology {
    let dir = path.parent().unwrap_or(std::path::Path::new(""));
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    for c in t.vips.iter_mut().flat_map(|v| &mut v.certificates) {
        c.chain = dir.join(&c.chain);
        c.key = dir.join(&c.key);
    }
    t
}

/// Largest topology file `load` reads (a world of 40,000 client groups is about 3 MB).
pub const FILE_BYTES_MAX: u64 = 16_000_000;

/// Parses and validates topology text; `file` names it in errors.
pub fn parse_str(file: &str, text: &str) -> Result<Topology, TopologyError> {
    parse_with(file, text, &[])
}

/// Parses topology text with fields changed first (see [`overrides`]), then validates
/// the result as a file; a path that does not fit is an error naming it.
pub fn parse_with(file: &str, text: &str, sets: &[Override]) -> Result<Topology, TopologyError> {
    parse::parse(text, sets).map_err(|diagnostics| TopologyError { file: file.to_string(), diagnostics })
}

fn single(file: &str, line: usize, col: usize, field: &str, reason: String) -> TopologyError {
    TopologyError {
        file: file.to_string(),
        diagnostics: vec![Diagnostic { line, col, field: field.to_string(), reason }],
    }
}
