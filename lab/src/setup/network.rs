//! A lab's network on the host: namespaces' links and addresses (veth within a host,
//! the backbone routed through each host's namespace, VXLAN across hosts) and every
//! route, closed to the host's external interface.

use super::*;

/// The lab's namespaces, links and routes: every one (`placed` is `None`: one host), or
/// host `me`'s part of them (its namespaces, veths between them, and its end of each link
/// to a namespace on another host: the backbone's routed over the underlay, any other a
/// VXLAN device). The namespaces made are noted in `state`.
pub(super) fn network(
    t: &Topology,
    plan: &Plan,
    state: &mut State,
    placed: Option<(&hosts::Placement, usize)>,
) -> Result<(), SetupError> {
    let local: Option<std::collections::BTreeSet<String>> = placed.map(|(p, me)| {
        plan.namespaces.iter().enumerate().filter(|&(i, _)| p.host_of[i] == me).map(|(_, ns)| ns.name.clone()).collect()
    });
    let local = local.as_ref();
    let mine: Vec<&crate::plan::Namespace> =
        plan.namespaces.iter().filter(|ns| local.is_none_or(|l| l.contains(&ns.name))).collect();
    let mut made = IpBatch::default();
    for ns in &mine {
        made.host(&["netns", "add", &ns.name]);
        // Noted before it is made: a failure part way removes what was.
        state.namespaces.push(ns.name.clone());
    }
    made.run()?;
    for ns in &mine {
        sysctls_in(&ns.name, &namespace_sysctls(&ns.role))?;
    }
    let mut batch = IpBatch::default();
    for ns in &mine {
        batch.inside(&ns.name, &["link", "set", "lo", "up"]);
    }
    // Whether this host has made the backbone's uplink to its own namespace yet.
    let mut uplink = false;
    for (k, l) in plan.links.iter().enumerate() {
        let (a, b) = (&plan.namespaces[l.a].name, &plan.namespaces[l.b].name);
        let here = |ns: &String| local.is_none_or(|s| s.contains(ns));
        match (here(a), here(b), placed) {
            (true, true, _) | (_, _, None) => {
                veth(&mut batch, k, l, (a, b));
                continue;
            }
            (true, false, Some((p, me))) => {
                if is_backbone(plan, l) {
                    if !uplink {
                        backbone_uplink(plan, p, me, a)?;
                        uplink = true;
                    }
                    route_to_remote_node(p, me, l, a)?;
                    continue;
                }
                vxlan_end(p, (me, p.host_of[l.b]), k, (a, &l.a_if))?;
                link_addrs(a, &l.a_if, l.a_addr, l.a_addr6)?;
                continue;
            }
            (false, true, Some((p, me))) => {
                if is_backbone(plan, l) {
                    routed_node_end(plan, p, (me, p.host_of[l.a]), k, l)?;
                } else {
                    vxlan_end(p, (me, p.host_of[l.a]), k, (b, &l.b_if))?;
                }
                link_addrs(b, &l.b_if, l.b_addr, l.b_addr6)?;
                continue;
            }
            (false, false, Some(_)) => continue,
        }
    }
    if !plan.segments.is_empty() {
        let core_ns = plan.ns_index(&Role::Internet).ok_or(PlanGap("segments without the internet's namespace"))?;
        for (s, segment) in plan.segments.iter().enumerate() {
            segment_up(&mut batch, plan, (s, segment), core_ns, placed)?;
        }
    }
    batch.run()?;
    routes(t, plan, local)
}

/// Segment `s` on this host: its bridge where the internet's namespace is, and each
/// router's port whose router is here, with the lab's MACs (a router on another host
/// reaches the bridge over VXLAN), its addresses, and every other router of the segment
/// as a permanent neighbour (see [`veth`]).
fn segment_up(
    batch: &mut IpBatch,
    plan: &Plan,
    (s, segment): (usize, &crate::plan::Segment),
    core_ns: usize,
    placed: Option<(&hosts::Placement, usize)>,
) -> Result<(), SysError> {
    let host = |ns: usize| placed.map_or(0, |(p, _)| p.host_of[ns]);
    let me = placed.map_or(0, |(_, me)| me);
    let core = &plan.namespaces[core_ns].name;
    let bridge_mac = mac(SEGMENT_MACS, port_key(s, BRIDGE_PORT), 0);
    if host(core_ns) == me {
        let br = segment.bridge.as_str();
        batch.inside(core, &["link", "add", br, "address", &bridge_mac, "type", "bridge", "stp_state", "0"]);
        let v4 = format!("{}/{}", segment.reflector, crate::plan::SEGMENT_PREFIX);
        batch.inside(core, &["addr", "add", &v4, "dev", br]);
        batch.inside(core, &["addr", "add", &format!("{}/64", segment.reflector6), "dev", br, "nodad"]);
        batch.inside(core, &["link", "set", br, "up"]);
        for (m, port) in segment.ports.iter().enumerate() {
            let (their_mac, ll) = (mac(SEGMENT_MACS, port_key(s, m), 0), eui64(SEGMENT_MACS, port_key(s, m), 0));
            for addr in [port.addr.to_string(), port.addr6.to_string(), ll.to_string()] {
                batch.inside(core, &["neigh", "replace", &addr, "lladdr", &their_mac, "dev", br, "nud", "permanent"]);
            }
        }
    }
    for (m, port) in segment.ports.iter().enumerate() {
        let ns = &plan.namespaces[port.ns].name;
        let (mine, bridge_here) = (host(port.ns) == me, host(core_ns) == me);
        let (router_mac, core_mac) = (mac(SEGMENT_MACS, port_key(s, m), 0), mac(SEGMENT_MACS, port_key(s, m), 1));
        let vni = plan.links.len() + port_key(s, m);
        match (mine, bridge_here, placed) {
            (true, true, _) | (_, _, None) => batch.host(&[
                "link",
                "add",
                crate::plan::SEGMENT_DEV,
                "netns",
                ns,
                "address",
                &router_mac,
                "type",
                "veth",
                "peer",
                "name",
                &port.core_dev,
                "netns",
                core,
                "address",
                &core_mac,
            ]),
            (false, true, Some((p, _))) => vxlan_end(p, (me, host(port.ns)), vni, (core, &port.core_dev))?,
            (true, false, Some((p, _))) => {
                vxlan_end(p, (me, host(core_ns)), vni, (ns, crate::plan::SEGMENT_DEV))?;
                ip_in(ns, &["link", "set", crate::plan::SEGMENT_DEV, "address", &router_mac])?;
            }
            (false, false, Some(_)) => continue,
        }
        if bridge_here {
            batch.inside(core, &["link", "set", &port.core_dev, "master", &segment.bridge, "up"]);
        }
        if mine {
            port_addrs(batch, plan, s, m, segment);
        }
    }
    Ok(())
}

/// Port `m`'s router end of segment `s`: its addresses, up, and the segment's other
/// routers and its reflector as permanent neighbours.
fn port_addrs(batch: &mut IpBatch, plan: &Plan, s: usize, m: usize, segment: &crate::plan::Segment) {
    let (port, dev) = (&segment.ports[m], crate::plan::SEGMENT_DEV);
    let ns = &plan.namespaces[port.ns].name;
    batch.inside(ns, &["addr", "add", &format!("{}/{}", port.addr, crate::plan::SEGMENT_PREFIX), "dev", dev]);
    batch.inside(ns, &["addr", "add", &format!("{}/64", port.addr6), "dev", dev, "nodad"]);
    batch.inside(ns, &["link", "set", dev, "up"]);
    let others = segment.ports.iter().enumerate().filter(|&(n, _)| n != m).map(|(n, o)| (n, o.addr, o.addr6));
    for (n, v4, v6) in others.chain([(BRIDGE_PORT, segment.reflector, segment.reflector6)]) {
        let (their_mac, link_local) = (mac(SEGMENT_MACS, port_key(s, n), 0), eui64(SEGMENT_MACS, port_key(s, n), 0));
        for addr in [v4.to_string(), v6.to_string(), link_local.to_string()] {
            batch.inside(ns, &["neigh", "replace", &addr, "lladdr", &their_mac, "dev", dev, "nud", "permanent"]);
        }
    }
}

/// The sysctls of a namespace in role `role`: forwarding where it routes, no reverse-path
/// filter, no duplicate address detection.
fn namespace_sysctls(role: &Role) -> Vec<(&'static str, &'static str)> {
    let forwards = matches!(
        role,
        Role::Internet | Role::Transit(_) | Role::Router(_) | Role::Backbone | Role::RegionNet(_) | Role::Pop(_)
    );
    let mut keys = Vec::new();
    if forwards {
        keys.extend([("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")]);
    }
    keys.extend([("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")]);
    // No duplicate address detection on any device made here, link-local addresses
    // included: every address is ours, and a tentative link-local address holds up
    // neighbour discovery (IPv6 answers took seconds for the first moments of a lab).
    keys.extend([("net.ipv6.conf.all.accept_dad", "0"), ("net.ipv6.conf.default.accept_dad", "0")]);
    keys
}

/// Link `k` between namespaces `a` and `b` on this host: a veth pair with the lab's MACs,
/// each end's addresses, and the other end as its permanent neighbour (its IPv4, IPv6 and
/// link-local addresses). The kernel's neighbour tables are shared by every namespace and
/// hold 1,024 resolved entries by default: a lab of a few hundred links overflowed them,
/// and connections on the links past that never completed. Permanent entries are not
/// counted against that bound, and nothing has to be resolved.
fn veth(batch: &mut IpBatch, k: usize, l: &crate::plan::Veth, (a, b): (&str, &str)) {
    let (mac_a, mac_b) = (link_mac(k, 0), link_mac(k, 1));
    batch.host(&[
        "link", "add", &l.a_if, "netns", a, "address", &mac_a, "type", "veth", "peer", "name", &l.b_if, "netns", b,
        "address", &mac_b,
    ]);
    for (ns, dev, (v4, v6), them, their_side) in [
        (a, &l.a_if, (l.a_addr, l.a_addr6), (l.b_addr, l.b_addr6), 1),
        (b, &l.b_if, (l.b_addr, l.b_addr6), (l.a_addr, l.a_addr6), 0),
    ] {
        end_addrs(batch, ns, dev, (v4, v6));
        let their_mac = link_mac(k, their_side);
        for addr in [them.0.to_string(), them.1.to_string(), link_local(k, their_side).to_string()] {
            batch.inside(ns, &["neigh", "replace", &addr, "lladdr", &their_mac, "dev", dev, "nud", "permanent"]);
        }
    }
}

/// A link's addresses on its end `dev` in namespace `ns`, and the link up.
pub(super) fn link_addrs(ns: &str, dev: &str, v4: std::net::Ipv4Addr, v6: std::net::Ipv6Addr) -> Result<(), SysError> {
    let mut batch = IpBatch::default();
    end_addrs(&mut batch, ns, dev, (v4, v6));
    batch.run()
}

/// What [`link_addrs`] does, added to `batch`. No duplicate-address detection: the lab's
/// addresses are unique by construction.
fn end_addrs(batch: &mut IpBatch, ns: &str, dev: &str, (v4, v6): (std::net::Ipv4Addr, std::net::Ipv6Addr)) {
    batch.inside(ns, &["addr", "add", &format!("{v4}/30"), "dev", dev]);
    batch.inside(ns, &["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
    batch.inside(ns, &["link", "set", dev, "up"]);
}

/// What a MAC of the lab's is on: a link (`02:ae:…`) or a segment's port (`02:af:…`).
const LINK_MACS: u8 = 0xae;
const SEGMENT_MACS: u8 = 0xaf;

/// The MAC address of end `side` (0: a, 1: b) of link `k`: locally administered, unique in
/// the lab, so each end knows its peer's without asking.
pub(super) fn link_mac(k: usize, side: u8) -> String {
    mac(LINK_MACS, k, side)
}

/// The link-local address the kernel gives end `side` of link `k` (EUI-64 of its MAC).
pub(super) fn link_local(k: usize, side: u8) -> std::net::Ipv6Addr {
    eui64(LINK_MACS, k, side)
}

/// Port `m` of segment `s` as a number of 24 bits for [`mac`]: its router's end is side 0,
/// the bridge's side 1. The bridge's own (the reflector's address) is port 255.
fn port_key(s: usize, m: usize) -> usize {
    (s << 8) | m
}
const BRIDGE_PORT: usize = 255;
const _: () = assert!(crate::plan::SEGMENT_PORTS_MAX < BRIDGE_PORT);

fn mac(what: u8, k: usize, side: u8) -> String {
    let [_, hi, mid, lo] = (k as u32).to_be_bytes();
    format!("02:{what:02x}:{hi:02x}:{mid:02x}:{lo:02x}:{side:02x}")
}

fn eui64(what: u8, k: usize, side: u8) -> std::net::Ipv6Addr {
    let [_, hi, mid, lo] = (k as u32).to_be_bytes();
    // The MAC's first byte, 0x02, with its universal/local bit flipped: 0x00.
    let m = [0x00u8, what, hi, mid, lo, side];
    std::net::Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0], m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Whether link `l` is the backbone's: the backbone router's link to a POP, a CLB node
/// or a control node. Between hosts it is routed over the underlay, not bridged.
pub(super) fn is_backbone(plan: &Plan, l: &crate::plan::Veth) -> bool {
    plan.namespaces[l.a].role == Role::Backbone
}

/// `ip` in host `h`'s own namespace: the one holding its underlay (a real host's own).
pub(super) fn host_ip(h: &hosts::Host, args: &[&str]) -> Result<(), SysError> {
    match &h.netns {
        Some(u) => ip_in(u, args),
        None => ip(args),
    }
}

/// A sysctl in host `h`'s own namespace.
pub(super) fn host_sysctl(h: &hosts::Host, key: &str, value: &str) -> Result<(), SysError> {
    match &h.netns {
        Some(u) => sysctl_in(u, key, value),
        None => {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).doing(|| format!("sysctl {key}={value}: {path}"))
        }
    }
}

/// A device name in a host's own namespace, unique to this deployment (two labs can share
/// a host): `ae`, four hex digits of the lab's name, then `what`.
pub(super) fn host_dev(plan: &Plan, what: &str) -> String {
    let tag = plan.lab.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("ae{:04x}{what}", tag & 0xffff)
}

/// The backbone namespace's side of its uplink to its host.
const UPLINK: &str = "underlay";

/// Between hosts the backbone is routed over the underlay without encapsulation: a
/// backbone datagram crosses between hosts as the plain UDP it is, addressed node to
/// node. On the host of the backbone's namespace (`ccn`), one veth joins that namespace
/// (`underlay`) to the host's own; each end answers ARP for what lies behind it (proxy
/// ARP), the host forwards between it and the underlay and routes the backbone's
/// addresses into it. Every route is symmetric, so strict reverse-path filtering on a
/// real host passes. Its MTU is the smallest underlay's.
pub(super) fn backbone_uplink(plan: &Plan, p: &hosts::Placement, me: usize, ccn: &str) -> Result<(), SysError> {
    let host = &p.hosts[me];
    let (dev, mtu) = (host_dev(plan, "bb"), p.hosts.iter().map(hosts::Host::mtu).min().unwrap_or(1500).to_string());
    host_ip(host, &["link", "add", &dev, "type", "veth", "peer", "name", UPLINK, "netns", ccn])?;
    ip_in(ccn, &["link", "set", UPLINK, "mtu", &mtu, "up"])?;
    sysctl_in(ccn, &format!("net.ipv4.conf.{UPLINK}.proxy_arp"), "1")?;
    sysctl_in(ccn, &format!("net.ipv4.neigh.{UPLINK}.proxy_delay"), "0")?;
    host_ip(host, &["link", "set", &dev, "mtu", &mtu, "up"])?;
    host_sysctl(host, "net.ipv4.ip_forward", "1")?;
    host_sysctl(host, &format!("net.ipv4.conf.{dev}.proxy_arp"), "1")?;
    // Proxy answers at once (a broadcast request would wait up to 0.8 s).
    host_sysctl(host, &format!("net.ipv4.neigh.{dev}.proxy_delay"), "0")?;
    host_ip(host, &["route", "replace", &net(BACKBONE_NET), "dev", &dev])
}

/// On the backbone's host: node `l.b` (on another host) is reached over the underlay,
/// from the backbone's namespace through the uplink. The link's own /30 is not made
/// here: the node's host answers for its router end.
pub(super) fn route_to_remote_node(
    p: &hosts::Placement,
    me: usize,
    l: &crate::plan::Veth,
    ccn: &str,
) -> Result<(), SysError> {
    let node = format!("{}/32", l.b_addr);
    ip_in(ccn, &["route", "add", &node, "dev", UPLINK])?;
    host_ip(&p.hosts[me], &["route", "replace", &node, "via", &p.hosts[p.host_of[l.b]].address.to_string()])
}

/// On a node's host: its end of backbone link `k` (`l`), the backbone being on host
/// `other`. A veth joins the node's namespace (its device and addresses as on one host,
/// so its routes are too) to the host's own, which routes the node's address into it,
/// answers ARP on it for the rest of the backbone (proxy ARP) and routes the backbone to
/// the backbone's host. Both ends take the smaller underlay's MTU: an envelope of up to
/// that size crosses whole (VXLAN would take 50 bytes of it).
pub(super) fn routed_node_end(
    plan: &Plan,
    p: &hosts::Placement,
    (me, other): (usize, usize),
    k: usize,
    l: &crate::plan::Veth,
) -> Result<(), SysError> {
    let (mine, theirs) = (&p.hosts[me], &p.hosts[other]);
    let (ns, dev) = (&plan.namespaces[l.b].name, &l.b_if);
    let (host_if, mtu) = (host_dev(plan, &format!("n{}", k + 1)), mine.mtu().min(theirs.mtu()).to_string());
    host_ip(mine, &["link", "add", &host_if, "type", "veth", "peer", "name", dev, "netns", ns])?;
    ip_in(ns, &["link", "set", dev, "mtu", &mtu])?;
    host_ip(mine, &["link", "set", &host_if, "mtu", &mtu, "up"])?;
    host_sysctl(mine, "net.ipv4.ip_forward", "1")?;
    host_sysctl(mine, &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
    host_sysctl(mine, &format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0")?;
    host_ip(mine, &["route", "replace", &format!("{}/32", l.b_addr), "dev", &host_if])?;
    host_ip(mine, &["route", "replace", &net(BACKBONE_NET), "via", &theirs.address.to_string()])
}

/// Removes what [`routed_node_end`], [`backbone_uplink`] and [`route_to_remote_node`] put
/// in host `me`'s own namespace: its veth ends (their peers and device routes go with
/// them, at once, not when the namespaces' last process has gone) and its routes over the
/// underlay. Best effort: each may be gone already.
pub(super) fn unroute_host(plan: &Plan, p: &hosts::Placement, me: usize) {
    let mine = &p.hosts[me];
    let mut uplink = false;
    for (k, l) in plan.links.iter().enumerate().filter(|(_, l)| is_backbone(plan, l)) {
        let (ha, hb) = (p.host_of[l.a], p.host_of[l.b]);
        if ha == hb {
            continue;
        }
        if ha == me {
            if !uplink {
                let _ = host_ip(mine, &["link", "del", &host_dev(plan, "bb")]);
                uplink = true;
            }
            let via = p.hosts[hb].address.to_string();
            let _ = host_ip(mine, &["route", "del", &format!("{}/32", l.b_addr), "via", &via]);
        } else if hb == me {
            let _ = host_ip(mine, &["link", "del", &host_dev(plan, &format!("n{}", k + 1))]);
            let _ = host_ip(mine, &["route", "del", &net(BACKBONE_NET), "via", &p.hosts[ha].address.to_string()]);
        }
    }
}

/// This host's end of link `k` to a namespace on host `other`: a VXLAN device (VNI k + 1)
/// made where the host's underlay is, from its address to the other host's, then moved
/// into namespace `ns` as `dev`, with the underlay's MTU less VXLAN's.
pub(super) fn vxlan_end(
    p: &hosts::Placement,
    (me, other): (usize, usize),
    k: usize,
    (ns, dev): (&str, &str),
) -> Result<(), SysError> {
    let (mine, theirs) = (&p.hosts[me], &p.hosts[other]);
    // A name of its own while it sits in the underlay's namespace beside other links' ends.
    let tmp = format!("aevx{}", k + 1);
    let (vni, port) = ((k + 1).to_string(), hosts::VXLAN_PORT.to_string());
    let (local, remote) = (mine.address.to_string(), theirs.address.to_string());
    let add = ["link", "add", &tmp, "type", "vxlan", "id", &vni, "local", &local, "remote", &remote, "dstport", &port];
    let mv = ["link", "set", &tmp, "netns", ns];
    match &mine.netns {
        Some(u) => ip_in(u, &add).and_then(|()| ip_in(u, &mv))?,
        None => ip(&add).and_then(|()| ip(&mv))?,
    }
    ip_in(ns, &["link", "set", &tmp, "name", dev])?;
    ip_in(ns, &["link", "set", dev, "mtu", &p.link_mtu(me, other).to_string()])
}

pub(super) fn net(n: (std::net::Ipv4Addr, u8)) -> String {
    format!("{}/{}", n.0, n.1)
}

/// A namespace's way to each of its routers: the router's address on their link.
pub(super) struct Gateways<'a> {
    plan: &'a Plan,
    /// The namespace, by index and name.
    i: usize,
    name: &'a str,
    /// The namespaces this host builds (`None`: every one, a single-host lab).
    local: Option<&'a std::collections::BTreeSet<String>>,
}

impl Gateways<'_> {
    /// `ip` in namespace `ns` when this host builds it; a route another host's namespace
    /// needs is that host's to add.
    fn ip(&self, ns: &str, args: &[&str]) -> Result<(), SysError> {
        if self.here(ns) { ip_in(ns, args) } else { Ok(()) }
    }

    /// An nftables ruleset in namespace `ns`, when this host builds it.
    fn nft(&self, ns: &str, ruleset: &str) -> Result<(), SysError> {
        if self.here(ns) { crate::io::netns::nft_in(ns, ruleset) } else { Ok(()) }
    }

    /// A sysctl in namespace `ns`, when this host builds it.
    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), SysError> {
        if self.here(ns) { sysctl_in(ns, key, value) } else { Ok(()) }
    }

    fn here(&self, ns: &str) -> bool {
        self.local.is_none_or(|l| l.contains(ns))
    }

    fn v4(&self, router: usize) -> Result<String, SetupError> {
        self.plan
            .gateway(self.i, router)
            .map(|a| a.to_string())
            .ok_or_else(|| SetupError::NoLink { namespace: self.name.to_string(), toward: "its router" })
    }

    fn v6(&self, router: usize) -> Result<String, SetupError> {
        self.plan
            .addr6_toward(self.i, router)
            .map(|(_, g)| g.to_string())
            .ok_or_else(|| SetupError::NoLink { namespace: self.name.to_string(), toward: "its router over IPv6" })
    }
}

pub(super) fn routes(
    t: &Topology,
    plan: &Plan,
    local: Option<&std::collections::BTreeSet<String>>,
) -> Result<(), SetupError> {
    let inet = plan.ns_index(&Role::Internet).ok_or(PlanGap("no internet namespace"))?;
    let ccn = plan.ns_index(&Role::Backbone).ok_or(PlanGap("no backbone namespace"))?;
    let region_net = |region| plan.ns_index(&Role::RegionNet(region)).ok_or(PlanGap("no region namespace"));
    for (i, ns) in plan.namespaces.iter().enumerate() {
        let name = &ns.name;
        let gw = Gateways { plan, i, name, local };
        match ns.role {
            Role::Client(g) => client_routes(plan, g, &gw, inet)?,
            Role::Pop(p) => pop_routes(t, p, &gw, (plan.upstream(i).ok_or(PlanGap("POP without a transit"))?, ccn))?,
            Role::Transit(_) | Role::Router(_) => transit_routes(t, plan, &gw, inet)?,
            Role::Clb { region, .. } => {
                gw.ip(name, &["route", "add", &net(BACKBONE_NET), "via", &gw.v4(ccn)?])?;
                gw.ip(name, &["route", "add", &net(REGION_NET), "via", &gw.v4(region_net(region)?)?])?;
            }
            Role::Backend { region, ip: host } => {
                backend_routes(plan, host, &gw, region_net(region)?)?;
                direct_security_groups(t, plan, host, &gw, region_net(region)?)?;
            }
            Role::RegionNet(r) => region_routes(t, plan, r, &gw, inet)?,
            Role::Control(_) => gw.ip(name, &["route", "add", &net(BACKBONE_NET), "via", &gw.v4(ccn)?])?,
            Role::Egress { region, .. } => {
                gw.ip(name, &["route", "add", &net(REGION_NET), "via", &gw.v4(region_net(region)?)?])?;
            }
            Role::Internet | Role::Backbone => {}
        }
    }
    Ok(())
}

/// A transit (or a router of an AS-level internet): its clients and its POP on links of
/// their own; everything else through the internet's core, which routes their link
/// networks back here. Its VIP routes come from BGP (its speaker installs them).
pub(super) fn transit_routes(t: &Topology, plan: &Plan, gw: &Gateways<'_>, inet: usize) -> Result<(), SetupError> {
    let name = gw.name;
    gw.ip(name, &["route", "add", "default", "via", &gw.v4(inet)?])?;
    gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(inet)?])?;
    let core = &plan.namespaces[inet].name;
    let up = plan.link_between(gw.i, inet).ok_or(PlanGap("transit without a link to the core"))?;
    let (via, via6) = (up.local.to_string(), up.local6.to_string());
    let mut client_links = Vec::new();
    for l in plan.links.iter().filter(|l| l.a == gw.i && l.b_if == "inet") {
        let net4 = std::net::Ipv4Addr::from(u32::from(l.a_addr) & !3);
        let net6 = std::net::Ipv6Addr::from(u128::from(l.a_addr6) & !u128::from(u64::MAX));
        gw.ip(core, &["route", "add", &format!("{net4}/30"), "via", &via])?;
        gw.ip(core, &["-6", "route", "add", &format!("{net6}/64"), "via", &via6])?;
        // Strict reverse-path filtering where clients attach: a client can only send
        // from its own address.
        if let Role::Client(g) = plan.namespaces[l.b].role {
            gw.sysctl(name, &format!("net.ipv4.conf.{}.rp_filter", l.a_if), "1")?;
            client_v6_sources_only(t, plan, g, gw, (&l.a_if, net6))?;
            client_links.push(l.a_if.clone());
            // A group with a `catchment:` list: its packets go by its own table, where the
            // speaker ranks the VIP routes by the list; what that table has no route for
            // (anything but the VIPs) falls through to the main table.
            if t.clients[g].catchment.is_some() {
                let table = topology::bgp::catchment_table(g).to_string();
                let priority = (10_000 + g).to_string();
                for family in ["-4", "-6"] {
                    let rule = ["rule", "add", "iif", &l.a_if, "lookup", &table, "priority", &priority];
                    gw.ip(name, &[&[family][..], &rule[..]].concat())?;
                }
            }
        }
    }
    Ok(routing_closed_to_clients(gw, &client_links)?)
}

/// IPv6 has no `rp_filter`: on a transit's link to client group `g` (device `dev`, link
/// network `/64`), packets from the link's /64 or the group's own IPv6 block go on to the
/// rules after (the group's catchment table, else the main table); any other source is
/// blackholed, so a client can no more forge an IPv6 source than an IPv4 one.
pub(super) fn client_v6_sources_only(
    t: &Topology,
    plan: &Plan,
    g: usize,
    gw: &Gateways<'_>,
    (dev, link6): (&str, std::net::Ipv6Addr),
) -> Result<(), SetupError> {
    let mut allowed = vec![format!("{link6}/64")];
    if let Some((block, own)) = plan.group_sources.get(g).copied().flatten()
        && own.is_ipv6()
    {
        allowed.push(block.to_string());
    }
    if SOURCE_CHECK_PRIORITY + 2 * g + 1 >= 10_000 {
        return Err(SetupError::TooMany { what: "client groups", max: (10_000 - SOURCE_CHECK_PRIORITY) / 2 });
    }
    let check = (SOURCE_CHECK_PRIORITY + 2 * g).to_string();
    let drop = (SOURCE_CHECK_PRIORITY + 2 * g + 1).to_string();
    let next = if t.clients[g].catchment.is_some() { 10_000 + g } else { MAIN_RULE_PRIORITY }.to_string();
    for from in &allowed {
        gw.ip(gw.name, &["-6", "rule", "add", "priority", &check, "iif", dev, "from", from, "goto", &next])?;
    }
    Ok(gw.ip(gw.name, &["-6", "rule", "add", "priority", &drop, "iif", dev, "blackhole"])?)
}

/// A transit's BGP (TCP 179) and BFD (UDP 3784, 3785, 4784) are for its POP and its
/// peers: packets to them from its client links are dropped in its kernel, before its
/// speaker sees them (it logged a line per refused connect: 1 MB per 10,000).
pub(super) fn routing_closed_to_clients(gw: &Gateways<'_>, client_links: &[String]) -> Result<(), SysError> {
    if client_links.is_empty() {
        return Ok(());
    }
    let links = client_links.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
    let ruleset = format!(
        "table inet anyedge_routing {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\
         \t\tiifname {{ {links} }} tcp dport 179 counter drop\n\
         \t\tiifname {{ {links} }} udp dport {{ 3784, 3785, 4784 }} counter drop\n\t}}\n}}\n"
    );
    gw.nft(gw.name, &ruleset)
}

/// Where a transit's IPv6 source checks sit among its policy rules: after the local
/// table's (0), before the catchment tables' (10,000 + group) and the main table's.
const SOURCE_CHECK_PRIORITY: usize = 5_000;
/// The kernel's own rule that looks up the main table.
const MAIN_RULE_PRIORITY: usize = 32_766;

/// A client group's default routes to the internet, through its transit; with an
/// `address:` block, its namespace sends from the block's first host, as the simulator's
/// clients do, and the transit and the core route the block back.
pub(super) fn client_routes(plan: &Plan, g: usize, gw: &Gateways<'_>, inet: usize) -> Result<(), SetupError> {
    let name = gw.name;
    let transit =
        plan.upstream(gw.i).ok_or_else(|| SetupError::NoLink { namespace: name.to_string(), toward: "a transit" })?;
    let Some((cidr, own)) = plan.group_sources.get(g).copied().flatten() else {
        gw.ip(name, &["route", "add", "default", "via", &gw.v4(transit)?])?;
        return Ok(gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(transit)?])?);
    };
    let router = &plan.namespaces[transit].name;
    let core = &plan.namespaces[inet].name;
    let up = plan.link_between(transit, inet).ok_or(PlanGap("transit without a link to the core"))?;
    let block = cidr.to_string();
    if own.is_ipv4() {
        let link = plan.client_addr(g).ok_or(PlanGap("client without an address"))?.to_string();
        gw.ip(name, &["addr", "add", &format!("{own}/32"), "dev", "lo"])?;
        gw.ip(name, &["route", "add", "default", "via", &gw.v4(transit)?, "src", &own.to_string()])?;
        gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(transit)?])?;
        gw.ip(router, &["route", "add", &block, "via", &link])?;
        Ok(gw.ip(core, &["route", "add", &block, "via", &up.local.to_string()])?)
    } else {
        let link6 = plan.client_addr6(g).ok_or(PlanGap("client without an IPv6 address"))?.to_string();
        gw.ip(name, &["-6", "addr", "add", &format!("{own}/128"), "dev", "lo", "nodad"])?;
        gw.ip(name, &["route", "add", "default", "via", &gw.v4(transit)?])?;
        gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(transit)?, "src", &own.to_string()])?;
        gw.ip(router, &["-6", "route", "add", &block, "via", &link6])?;
        Ok(gw.ip(core, &["-6", "route", "add", &block, "via", &up.local6.to_string()])?)
    }
}

/// A POP: the internet, the backbone, and its VIPs into its multi-queue TUN device (the
/// POP reads it with a queue per core).
pub(super) fn pop_routes(
    t: &Topology,
    p: usize,
    gw: &Gateways<'_>,
    (inet, ccn): (usize, usize),
) -> Result<(), SetupError> {
    let name = gw.name;
    gw.ip(name, &["route", "add", "default", "via", &gw.v4(inet)?])?;
    gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(inet)?])?;
    gw.ip(name, &["route", "add", &net(BACKBONE_NET), "via", &gw.v4(ccn)?])?;
    gw.ip(name, &["tuntap", "add", "dev", TUN_NAME, "mode", "tun", "multi_queue"])?;
    gw.ip(name, &["link", "set", TUN_NAME, "up"])?;
    for v in t.vips.iter().filter(|v| v.pops.contains(&p)) {
        gw.ip(name, &["route", "add", &format!("{}/32", v.ipv4), "dev", TUN_NAME])?;
        if let Some(v6) = v.ipv6 {
            gw.ip(name, &["-6", "route", "add", &format!("{v6}/128"), "dev", TUN_NAME])?;
        }
    }
    gw.nft(name, ROUTING_FROM_THE_LINK_ONLY)?;
    Ok(gw.sysctl(name, &format!("net.ipv4.conf.{TUN_NAME}.rp_filter"), "0")?)
}

/// A POP's BGP and BFD take packets sent with TTL (hop limit) 255 only, which only its
/// transit, on the link itself, can send (GTSM, RFC 5082; BIRD's `ttl security` covers
/// established sessions, this also the listening port): a client's packets cross the
/// transit and arrive with less, and are dropped in the kernel before BIRD logs them.
const ROUTING_FROM_THE_LINK_ONLY: &str = "table inet anyedge_routing {\n\
    \tchain input {\n\
    \t\ttype filter hook input priority 0; policy accept;\n\
    \t\ttcp dport 179 ip ttl != 255 counter drop\n\
    \t\ttcp dport 179 ip6 hoplimit != 255 counter drop\n\
    \t\tudp dport { 3784, 3785, 4784 } ip ttl != 255 counter drop\n\
    \t\tudp dport { 3784, 3785, 4784 } ip6 hoplimit != 255 counter drop\n\
    \t}\n\
}\n";

/// A backend host: everything that is not the region goes back through the CLB tunnel
/// (its TUN device), but answers from the host's public address take the direct path.
pub(super) fn backend_routes(
    plan: &Plan,
    host: std::net::Ipv4Addr,
    gw: &Gateways<'_>,
    rg: usize,
) -> Result<(), SetupError> {
    let name = gw.name;
    gw.ip(name, &["route", "add", &net(REGION_NET), "via", &gw.v4(rg)?])?;
    gw.ip(name, &["addr", "add", &format!("{host}/32"), "dev", "lo"])?;
    // Multi-queue as a POP's, so the host attaches to it the same way (one queue).
    gw.ip(name, &["tuntap", "add", "dev", TUN_NAME, "mode", "tun", "multi_queue"])?;
    gw.ip(name, &["link", "set", TUN_NAME, "up"])?;
    gw.ip(name, &["route", "add", "default", "dev", TUN_NAME])?;
    gw.ip(name, &["-6", "route", "add", "default", "dev", TUN_NAME])?;
    gw.sysctl(name, &format!("net.ipv4.conf.{TUN_NAME}.rp_filter"), "0")?;
    let own = plan.backend_direct_addr(host).ok_or(PlanGap("backend without a public address"))?;
    gw.ip(name, &["addr", "add", &format!("{own}/32"), "dev", "lo"])?;
    gw.ip(name, &["rule", "add", "from", &format!("{own}/32"), "lookup", "200", "priority", "1000"])?;
    Ok(gw.ip(name, &["route", "add", "default", "via", &gw.v4(rg)?, "table", "200"])?)
}

/// The security groups bound to a backend host, on its public (direct-path) address too:
/// packets the CLB brings pass the host's node (`node/backend.rs`), but the direct path
/// reaches the host's kernel straight from the region's network, so the same rules go
/// in as policy-routing rules on that link, in order (allow: the local table; drop:
/// blackhole; no match: blackhole), ahead of the local table (moved from 0 to 999).
/// An nftables table whose one rule uses conntrack, which turns on defragmentation at
/// prerouting in its namespace; it counts what conntrack finds invalid and drops nothing.
const REASSEMBLE_BEFORE_ROUTING: &str = "table inet anyedge_reassemble {\n\
    \tchain prerouting {\n\
    \t\ttype filter hook prerouting priority -150; policy accept;\n\
    \t\tct state invalid counter\n\
    \t}\n\
}\n";

pub(super) fn direct_security_groups(
    t: &Topology,
    plan: &Plan,
    host: std::net::Ipv4Addr,
    gw: &Gateways<'_>,
    rg: usize,
) -> Result<(), SysError> {
    use anyedge_region::security::{Action, Ports};
    let groups = anyedge_topology::nodes::backend_security_groups(t, std::net::IpAddr::V4(host));
    if groups.is_empty() {
        return Ok(());
    }
    let name = gw.name;
    // A host with no public address has no direct path to guard.
    let (Some(own), Some(link)) = (plan.backend_direct_addr(host), plan.link_between(gw.i, rg)) else {
        return Ok(());
    };
    // A fragment carries no port, so port rules cannot see it (the kernel reassembles
    // local datagrams only after the routing decision): conntrack's defragmentation, on
    // in this namespace once a rule uses it, reassembles before routing, within the
    // kernel's bounds (net.ipv4.ipfrag_high_thresh bytes, ipfrag_time seconds), and the
    // rules below then judge whole datagrams.
    gw.nft(name, REASSEMBLE_BEFORE_ROUTING)?;
    let (dev, to) = (link.dev, format!("{own}/32"));
    let mut pref = 100u32;
    let mut add = |selector: &[&str], action: Action| -> Result<(), SysError> {
        let p = pref.to_string();
        let mut args = vec!["rule", "add", "priority", &p, "iif", &dev, "to", &to];
        args.extend_from_slice(selector);
        match action {
            Action::Allow => args.extend(["lookup", "local"]),
            Action::Drop => args.push("blackhole"),
        }
        pref += 1;
        gw.ip(name, &args)
    };
    for (_, group) in &groups {
        for rule in group.rules.iter().filter(|r| r.source.addr.is_ipv4()) {
            let from = rule.source.to_string();
            match rule.ports {
                Ports::Any => add(&["from", &from], rule.action)?,
                Ports::Range(lo, hi) => {
                    let ports = if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
                    for proto in ["tcp", "udp"] {
                        add(&["from", &from, "ipproto", proto, "dport", &ports], rule.action)?;
                    }
                }
            }
        }
    }
    add(&[], Action::Drop)?;
    gw.ip(name, &["rule", "add", "priority", "999", "lookup", "local"])?;
    gw.ip(name, &["rule", "del", "priority", "0"])
}

/// A region's network: clients reach its hosts' public addresses through the internet
/// router (client groups with an `address:` block are on the internet too); nothing
/// routes them to the region network itself.
pub(super) fn region_routes(
    t: &Topology,
    plan: &Plan,
    r: usize,
    gw: &Gateways<'_>,
    inet: usize,
) -> Result<(), SetupError> {
    let name = gw.name;
    gw.ip(name, &["route", "add", &net(INTERNET_NET), "via", &gw.v4(inet)?])?;
    for (cidr, _) in plan.group_sources.iter().flatten() {
        if cidr.addr.is_ipv4() {
            gw.ip(name, &["route", "add", &cidr.to_string(), "via", &gw.v4(inet)?])?;
        } else {
            gw.ip(name, &["-6", "route", "add", &cidr.to_string(), "via", &gw.v6(inet)?])?;
        }
    }
    let via = plan.region_internet_addr(r).ok_or(PlanGap("region without an internet link"))?.to_string();
    let router = &plan.namespaces[inet].name;
    for (_, host) in crate::plan::backend_hosts(t).into_iter().filter(|&(hr, _)| hr == r) {
        let direct = plan.backend_direct_addr(host).ok_or(PlanGap("backend without a public address"))?;
        let link = plan.backend_tunnel(host).ok_or(PlanGap("backend without a region address"))?.ip().to_string();
        gw.ip(name, &["route", "add", &format!("{direct}/32"), "via", &link])?;
        gw.ip(router, &["route", "add", &format!("{direct}/32"), "via", &via])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::netns::TestNs;

    /// The permanent neighbours name the peer's link-local address: it must be the one
    /// the kernel forms from the MAC the lab gives it.
    #[test]
    fn a_links_link_local_address_is_the_one_the_kernel_gives_its_mac() {
        let ns = TestNs::new("mac");
        for (k, side) in [(0, 0), (7, 1), (70_000, 1)] {
            let (a, b) = (format!("x{k}a"), format!("x{k}b"));
            let (mac_a, mac_b) = (link_mac(k, side), link_mac(k, 1 - side));
            ip_in(
                &ns.0,
                &["link", "add", &a, "address", &mac_a, "type", "veth", "peer", "name", &b, "address", &mac_b],
            )
            .unwrap();
            for dev in [&a, &b] {
                ip_in(&ns.0, &["link", "set", dev, "up"]).unwrap();
            }
            let out =
                std::process::Command::new("ip").args(["-n", &ns.0, "-6", "addr", "show", "dev", &a]).output().unwrap();
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(shown.contains(&format!("{}/64", link_local(k, side))), "{mac_a}: {shown}");
        }
    }
}
