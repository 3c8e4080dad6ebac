//! What a CLB node is told: its listeners, their backends, health checking, limits.

use std::net::{IpAddr, SocketAddr};

use anyedge_proto::Transport;

/// Default Maglev lookup table size (prime).
pub const MAGLEV_TABLE_DEFAULT: usize = 65_537;
/// Default backend weight.
pub const WEIGHT_DEFAULT: u8 = 10;
/// Highest backend weight.
pub const WEIGHT_MAX: u8 = 100;
/// Default connection-table capacity per CLB node.
pub const CONN_TABLE_DEFAULT: usize = 1_000_000;
/// Idle time after which a UDP flow is forgotten.
pub const UDP_IDLE_NS: u64 = 60_000_000_000;
/// Idle time after which an open TCP connection is forgotten.
pub const TCP_IDLE_NS: u64 = 900_000_000_000;
/// Idle time after which a TCP flow that never got established (no client packet past
/// the SYN after the backend answered: a spoofed SYN, a backend that never answers) is
/// forgotten. A real client's SYN retransmissions (1, 3, 7 s) each renew it.
pub const HALF_OPEN_NS: u64 = 10_000_000_000;
/// How long a closed TCP connection's entry lingers for stragglers.
pub const CLOSED_LINGER_NS: u64 = 10_000_000_000;
/// How often idle entries are swept.
pub const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Weighted round robin over new flows: share of new flows ∝ weight.
    Wrr,
    /// Weighted least connections: the fewest active flows per unit of weight.
    Wlc,
    /// Source-IP hash over a weighted lookup table: one client IP, one backend.
    Hash { table_size: usize },
    /// Maglev consistent hashing of the 5-tuple with a prime table size.
    Maglev { table_size: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub addr: SocketAddr,
    /// 0..=100; 0 takes no new flows, existing ones continue.
    pub weight: u8,
    /// Health checking of this port when it differs from the node's default.
    pub health: Option<HealthConfig>,
    /// Reached through SNAT (an on-premises backend): it sees an address the CLB owns;
    /// TCP backends get the client address in a TOA option.
    pub snat: bool,
    /// Reached through a NAT gateway that translates the source on the way: the backend
    /// cannot see the client's address, so TCP names it in a TOA option.
    pub behind_nat: bool,
    /// The security groups bound to this backend's instance (with their index in the
    /// topology). Its host enforces them on what reaches it; what the CLB sends it from an
    /// address of its own (a translated flow, a layer-7 or QUIC listener's connection)
    /// would pass them as the CLB, so the CLB judges the client's own address by them
    /// first ([`crate::security::BackendGuard`]).
    pub security_groups: Vec<(usize, crate::security::SecurityGroup)>,
}

impl BackendConfig {
    /// A backend reached directly: no health check of its own, no SNAT, no NAT gateway.
    pub fn direct(addr: SocketAddr, weight: u8) -> BackendConfig {
        BackendConfig { addr, weight, health: None, snat: false, behind_nat: false, security_groups: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub vip: IpAddr,
    pub transport: Transport,
    pub port: u16,
    pub scheduler: SchedulerKind,
    pub backends: Vec<BackendConfig>,
    /// Session persistence by client IP (WRR only).
    pub persistence_ns: Option<u64>,
    /// HTTP(S) and TCP SSL: the node terminates the client's TCP and relays over a
    /// connection of its own.
    pub layer7: bool,
    /// HTTP(S): requests are parsed and carry X-Forwarded-For. Otherwise (TCP SSL) bytes
    /// pass as they are and the backend learns the client from a TOA option.
    pub http: bool,
    /// HTTPS and TCP SSL: the TLS identity the node terminates with.
    pub tls: Option<crate::termination::TlsTermination>,
    /// QUIC: the node terminates QUIC with this identity and relays streams over TCP.
    pub quic: Option<crate::termination::QuicTermination>,
    /// HTTPS: the `Alt-Svc` field value its answers carry (`h3=":443"; ma=86400`), naming
    /// the VIP's HTTP/3 on the same port, as browsers discover it.
    pub alt_svc: Option<std::sync::Arc<str>>,
}

/// Health checking of a backend port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub protocol: HealthProtocol,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    /// Consecutive successes that make an unhealthy port healthy.
    pub healthy: u32,
    /// Consecutive failures that make a healthy port unhealthy.
    pub unhealthy: u32,
}

impl HealthConfig {
    /// TCP-connect checking with these timings.
    pub fn tcp(interval_ns: u64, timeout_ns: u64, healthy: u32, unhealthy: u32) -> HealthConfig {
        HealthConfig { protocol: HealthProtocol::Tcp, interval_ns, timeout_ns, healthy, unhealthy }
    }
}

/// How a probe asks a backend port whether it is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProtocol {
    /// A SYN answered by SYN-ACK (then reset): the port accepts connections.
    Tcp,
    /// A datagram answered by a datagram from the port.
    Udp,
    /// `GET path` over TCP; the status must fall in one of the `expect` ranges.
    Http { path: String, expect: Vec<(u16, u16)> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClbConfig {
    /// The node's own address: health probes to IPv4 backends come from it.
    pub address: IpAddr,
    /// The node's IPv6 address, for IPv6 backends.
    pub address_v6: Option<IpAddr>,
    /// The region this node belongs to (its backbone id is `clb#region/node_index`).
    pub region: u16,
    pub node_index: u16,
    /// Nodes in the region: SNAT ports are split between them.
    pub node_count: u16,
    /// Addresses this node translates to for SNAT and NAT64 (one per family is enough).
    pub snat: Vec<IpAddr>,
    /// Security groups bound to this node, in order, with their index in the topology.
    /// Empty: no filtering.
    pub security_groups: Vec<(usize, crate::security::SecurityGroup)>,
    pub listeners: Vec<ListenerConfig>,
    pub health: HealthConfig,
    pub conn_table_capacity: usize,
    /// Leading bits of an IPv4 client address that name one source for the per-source
    /// limits (layer-7 connections, QUIC handshakes and connections); IPv6 sources are
    /// /64s ([`crate::cidr::SOURCE_PREFIX_V6`]).
    pub source_prefix_v4: u8,
    /// Where the POPs are and which the region has links to: a reply whose POP is down
    /// leaves through the nearest live one (any POP can hand a reply to the client over
    /// the internet).
    pub pop_fallback: PopPlaces,
    /// Keys for the backbone (every POP) and the region network (the region's other
    /// nodes, backend hosts).
    pub auth: anyedge_ccn::auth::AuthConfig,
    /// The id of each backend host this node sends to, by address: its packets to a
    /// backend are sealed for that host, and a host speaks only for its own address.
    pub backend_hosts: Vec<(IpAddr, anyedge_ccn::auth::NodeId)>,
}

/// Where the POPs are (shared by every node) and which of them this node's region has a
/// backbone link to: what the fallback order is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PopPlaces {
    /// Each POP's [latitude, longitude], by POP id.
    pub places: std::sync::Arc<[[f64; 2]]>,
    /// By POP id: the region has a backbone link to it (a fallback must).
    pub linked: Vec<bool>,
}
