//! The route table a topology starts with, and the adapters between the table and the
//! cores: a committed change applied to a CLB core, a control node's configuration. The
//! simulator and the lab both use these, so a change means the same thing in each.

use anyedge_control::{
    BackendRoute, Change, ControlConfig, GroupRoute, ListenerRoute, RouteTable, SecurityGroupRoute, VipRoute,
};

use crate::nodes::{ClbAddresses, Identity};
use crate::{Control, Scheduler, SgBinding, Topology};

/// Snapshot the log every this many applied entries.
pub const SNAPSHOT_EVERY: u64 = 256;
/// Heartbeats every this many ticks (30 ms with 10 ms ticks).
pub const HEARTBEAT_TICKS: usize = 3;

/// The route table a topology file starts with.
pub fn route_table(t: &Topology) -> RouteTable {
    let scheduler = |s: Scheduler| match s {
        Scheduler::Wrr => "wrr",
        Scheduler::Wlc => "wlc",
        Scheduler::Hash { .. } => "hash",
        Scheduler::Maglev { .. } => "maglev",
    };
    let vips = t
        .vips
        .iter()
        .map(|v| VipRoute {
            name: v.name.clone(),
            ipv4: v.ipv4.to_string(),
            ipv6: v.ipv6.map(|a| a.to_string()),
            home: t.regions[v.home].name.clone(),
            publish: v.pops.iter().map(|&p| t.pops[p].name.clone()).collect(),
            listeners: v
                .listeners
                .iter()
                .map(|l| ListenerRoute {
                    protocol: l.protocol.name().to_string(),
                    port: l.port,
                    scheduler: scheduler(l.scheduler).to_string(),
                    backends: t.regions[v.home].backend_groups[l.backend_group].name.clone(),
                    persistence_s: l.persistence_ns.map(|ns| (ns / 1_000_000_000) as u32),
                })
                .collect(),
        })
        .collect();
    let backend_groups = t
        .regions
        .iter()
        .flat_map(|r| {
            r.backend_groups.iter().map(|g| GroupRoute {
                region: r.name.clone(),
                name: g.name.clone(),
                backends: g
                    .backends
                    .iter()
                    .map(|b| BackendRoute { addr: b.addr, weight: b.weight, bound: true })
                    .collect(),
            })
        })
        .collect();
    let security_groups = t
        .security_groups
        .iter()
        .map(|sg| SecurityGroupRoute {
            name: sg.group.name.clone(),
            rules: sg.group.rules.iter().map(|r| format!("{} {} {}", r.action.name(), r.source, r.ports)).collect(),
            bind: sg
                .bind
                .iter()
                .map(|b| match b {
                    SgBinding::Backend(ip) => format!("backend/{ip}"),
                    SgBinding::Clb { region, index: None } => format!("clb/{}", t.regions[*region].name),
                    SgBinding::Clb { region, index: Some(i) } => crate::clb_name(&t.regions[*region].name, *i),
                })
                .collect(),
        })
        .collect();
    RouteTable { vips, backend_groups, security_groups }
}

/// Where a CLB core runs: what it needs to build a listener added at run time.
pub struct ClbSite<'a> {
    pub t: &'a Topology,
    pub region: usize,
    pub index: usize,
    pub addresses: ClbAddresses,
    pub identity: &'a Identity,
}

/// A committed change applied to a CLB core, in log order (simulator and lab alike);
/// `table` is the route table with the change applied (a new listener's backends take
/// their current weights and bindings from it).
pub fn apply_to_clb(core: &mut anyedge_region::Clb, site: &ClbSite<'_>, table: &RouteTable, change: &Change) {
    match change {
        Change::SetWeight { backend, weight } => core.set_weight(*backend, *weight),
        Change::Bind { backend } => core.bind(*backend),
        Change::Unbind { backend } => core.unbind(*backend),
        Change::AddListener { vip, listener } => {
            let Some((configs, health)) = added_listener(site, vip, listener) else { return };
            for config in configs {
                core.add_listener(config, &health);
            }
            let group = table.backend_groups.iter().find(|g| {
                g.name == listener.backends && site.t.regions.get(site.region).is_some_and(|r| r.name == g.region)
            });
            for b in group.iter().flat_map(|g| &g.backends) {
                core.set_weight(b.addr, b.weight);
                if !b.bound {
                    core.unbind(b.addr);
                }
            }
        }
        Change::DelListener { vip, protocol, port } => {
            let (Some(v), Some(p)) =
                (site.t.vips.iter().find(|v| &v.name == vip), crate::ListenerProtocol::from_name(protocol))
            else {
                return;
            };
            let addrs = std::iter::once(std::net::IpAddr::V4(v.ipv4)).chain(v.ipv6.map(std::net::IpAddr::V6));
            for addr in addrs {
                core.remove_listener(addr, p.transport(), *port);
            }
        }
    }
}

/// A committed change applied to a POP core: listeners added or removed change which
/// replies may leave toward clients (nothing else a POP does depends on the table).
pub fn apply_to_pop(core: &mut anyedge_pop::Pop, t: &Topology, change: &Change) {
    let (vip, protocol, port, present) = match change {
        Change::AddListener { vip, listener } => (vip, listener.protocol.as_str(), listener.port, true),
        Change::DelListener { vip, protocol, port } => (vip, protocol.as_str(), *port, false),
        _ => return,
    };
    let (Some(v), Some(p)) = (t.vips.iter().find(|v| &v.name == vip), crate::ListenerProtocol::from_name(protocol))
    else {
        return;
    };
    let quic = p == crate::ListenerProtocol::Quic;
    let addrs = std::iter::once(std::net::IpAddr::V4(v.ipv4)).chain(v.ipv6.map(std::net::IpAddr::V6));
    for addr in addrs {
        core.set_listener(addr, p.transport(), port, quic, present);
    }
}

/// The listener configurations (IPv4, and IPv6 when the VIP has one) and health checks
/// a CLB node serves for a listener added through the control plane: the file's rules for
/// a listener written there (NAT64, backend sites, TLS identities), for VIPs homed here.
fn added_listener(
    site: &ClbSite<'_>,
    vip: &str,
    route: &ListenerRoute,
) -> Option<(Vec<anyedge_region::config::ListenerConfig>, anyedge_region::HealthConfig)> {
    let t = site.t;
    let v = t.vips.iter().position(|x| x.name == vip && x.home == site.region)?;
    let protocol = crate::ListenerProtocol::from_name(&route.protocol)?;
    let table_size = anyedge_region::config::MAGLEV_TABLE_DEFAULT;
    let scheduler = match route.scheduler.as_str() {
        "wrr" => Scheduler::Wrr,
        "wlc" => Scheduler::Wlc,
        "hash" => Scheduler::Hash { table_size },
        "maglev" => Scheduler::Maglev { table_size },
        _ => return None,
    };
    let backend_group = t.regions[site.region].backend_groups.iter().position(|g| g.name == route.backends)?;
    let mut only = t.clone();
    let mut one = t.vips[v].clone();
    one.listeners = vec![crate::Listener {
        protocol,
        port: route.port,
        scheduler,
        backend_group,
        persistence_ns: route.persistence_s.map(|s| u64::from(s) * 1_000_000_000),
        mtls: false,
        // A route carries no ALPN: a QUIC listener made from one offers the default.
        alpn: if protocol == crate::ListenerProtocol::Quic {
            crate::schema::default_of("listener", "alpn", crate::schema::Field::default_strs)
        } else {
            Vec::new()
        },
        alt_svc_ns: (protocol == crate::ListenerProtocol::Https)
            .then(|| crate::schema::default_of("listener", "alt_svc", crate::schema::Field::default_ns)),
    }];
    // Alt-Svc names the VIP's HTTP/3, which this one listener alone would not show.
    let alt_svc = t.vips[v].alt_svc(&one.listeners[0]).map(std::sync::Arc::from);
    only.vips = vec![one];
    let mut config = crate::nodes::clb_config(&only, site.region, site.index, site.addresses, site.identity);
    for l in &mut config.listeners {
        l.alt_svc = alt_svc.clone();
    }
    Some((config.listeners, config.health))
}

/// The file's election-timeout range in ticks of `c.tick_ns`: `min..max`, at least one
/// tick wide and above the heartbeat.
pub fn election_ticks(c: &Control) -> (usize, usize) {
    let lo = ((c.election_ns.0 / c.tick_ns) as usize).max(HEARTBEAT_TICKS + 1);
    let hi = ((c.election_ns.1 / c.tick_ns) as usize).max(lo + 1);
    (lo, hi)
}

/// A control node's configuration (ticks of `c.tick_ns`).
pub fn control_config(t: &Topology, c: &Control, id: u8) -> ControlConfig {
    ControlConfig {
        id: u64::from(id),
        voters: (1..=u64::from(c.nodes)).collect(),
        // Every node draws afresh at each election from its own seeded RNG (the simulator
        // and the lab alike): a timeout fixed for life lets two nodes split the vote forever.
        election_ticks: election_ticks(c),
        heartbeat_tick: HEARTBEAT_TICKS,
        snapshot_every: SNAPSHOT_EVERY,
        seed: t.seed,
    }
}
