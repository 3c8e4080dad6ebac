//! What happens in the world: the events its queue holds (`Ev`), where a packet arrives
//! (`Arrival`), and the constants every part shares. A leaf: it imports only the typed
//! ids, so every part can name an event without importing the world.

use std::net::IpAddr;

use crate::world::ids::ClbId;
use crate::world::ids::ClientId;
use crate::world::ids::HostId;
use crate::world::ids::PopId;
use crate::world::ids::Probed;
use crate::world::ids::ProberAt;

/// Replies still arriving after the last request are collected for this long.
pub const DRAIN_NS: u64 = 3_000_000_000;

/// One-way delay between a CLB node and a backend in its region.
pub const INTRA_REGION_NS: u64 = 50_000;

/// Outer IPv4 + UDP header the backbone adds around the CCN header.
pub(super) const OUTER_HEADER: usize = 28;

/// Most traffic slots (class × path) a client group may have.
pub const SLOTS_MAX: usize = 55;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    Anycast = 0,
    Direct = 1,
}

pub(super) const PATHS: [Path; 2] = [Path::Anycast, Path::Direct];

#[derive(Debug, Clone, Copy)]
pub(super) enum Arrival {
    PopFromClient(PopId),
    PopFromClb(PopId),
    ClbFromPop(ClbId),
    ClbDirect(ClbId),
    /// A client's packet on the direct path reaches its region's edge, which picks the
    /// CLB node (ECMP on the flow's hash, or the node a QUIC connection ID names) with
    /// what the edge's own probes know, and hands it over at once.
    RegionEdge {
        region: u32,
        hash: u32,
        quic: bool,
    },
    ClbFromBackend(ClbId),
    /// Connection-table sync from another CLB node of the region.
    ClbFromPeer(ClbId),
    Backend {
        host: HostId,
        via_clb: ClbId,
    },
    /// A CLB node's sealed packet reaches an egress node (NAT gateway, router).
    EgressFromClb(usize),
    /// An internet host's packet reaches its egress node.
    EgressFromInternet(usize),
    /// An egress node's packet reaches a host on the internet.
    InternetHost(HostId),
    Client(ClientId),
    /// A liveness probe reaches the node it probes, or its answer the prober.
    ProbeRequest {
        to: Probed,
        from: ProberAt,
    },
    ProbeAnswer {
        at: ProberAt,
    },
}

pub(super) enum Ev {
    UdpSend {
        client: ClientId,
        k: usize,
    },
    FloodSend {
        client: ClientId,
        k: usize,
    },
    QuicIssue {
        client: ClientId,
        k: usize,
    },
    ClientQuicPoll {
        client: ClientId,
        slot: usize,
    },
    TcpIssue {
        client: ClientId,
        k: usize,
    },
    ClientTcpPoll {
        client: ClientId,
    },
    BackendTcpPoll {
        host: HostId,
        remote: (IpAddr, u16),
    },
    Arrive {
        to: Arrival,
        packet: Vec<u8>,
    },
    ClbTimer {
        clb: ClbId,
    },
    Fault {
        index: usize,
    },
    /// A liveness prober's round is due.
    ProbeTick {
        at: ProberAt,
        epoch: u32,
    },
    /// A POP's announcements (per VIP: routed or not) reach the internet: BGP moves the
    /// groups whose best route changed. Carried as the POP sent them, not read from it.
    RouteUpdate {
        pop: PopId,
        routes: Vec<bool>,
        /// The partition whose groups it moves (0 in a world of one).
        part: u32,
    },
    /// The BGP session of POP `pop`'s transit, set up when it found the POP alive again
    /// (`epoch`), is established: the POP is announced, unless a later finding overtook it.
    SessionUp {
        pop: PopId,
        epoch: u32,
    },
    /// A POP's update has crossed the internet to where group `group` hears BGP
    /// (`RouteUpdate` ran where the POP's own transit is): the group moves to `route` for
    /// VIP `vip`, unless a later update leads elsewhere.
    GroupHears {
        group: usize,
        vip: usize,
        route: Option<PopId>,
    },
    LinkRestore {
        pop: PopId,
        region: usize,
    },
    Control(crate::control::ControlEv),
}

impl Ev {
    /// Where a packet's bytes lie and how many, for the queue to prefetch before it
    /// arrives.
    pub(super) fn payload_addr(&self) -> (usize, u32) {
        match self {
            Ev::Arrive { packet, .. } => (packet.as_ptr() as usize, packet.len() as u32),
            _ => (0, 0),
        }
    }
}
