//! `anyedge lab up|down|status|exec|kill|start`: bring a topology up as namespaces with
//! real node processes, look at it, and take it all down again — also after a crash,
//! from the state kept on disk.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_topology::{self as topology, Topology};
use serde::{Deserialize, Serialize};

use crate::io::netns::{self, ip, ip_in, sysctl_in};
use crate::layout::{node_log, node_socket, ready_dir, ready_marker, state_dir};
pub mod hosts;
pub mod render;

use crate::plan::{BACKBONE_NET, INTERNET_NET, Plan, REGION_NET, Role, TUN_NAME};

/// What a running lab is made of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub lab: String,
    pub topology: PathBuf,
    pub namespaces: Vec<String>,
    /// Node name → process id.
    pub pids: BTreeMap<String, u32>,
}

pub(crate) fn load(file: &Path) -> Result<(Topology, Plan), String> {
    let t = topology::load(file).map_err(|e| e.to_string())?;
    let plan = Plan::new(&t);
    Ok((t, plan))
}

pub fn read_state(lab: &str) -> Option<State> {
    let text = std::fs::read_to_string(state_dir(lab).join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(state: &State) -> Result<(), String> {
    let dir = state_dir(&state.lab);
    crate::layout::private_files();
    crate::layout::private_dir(&dir)?;
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("state.json"), text).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Brings a topology up; on any failure everything made so far is taken down again.
pub fn up(file: &Path, exe: &Path) -> Result<State, String> {
    up_with(file, exe, LabOptions::default())
}

/// How a lab runs beyond what its topology file says.
#[derive(Debug, Clone, Copy)]
pub struct LabOptions {
    /// The file's delay, jitter, loss and bandwidth (off: benchmarks time the forwarder alone).
    pub impairments: bool,
    /// Node processes run SCHED_FIFO (see [`crate::io::realtime`]).
    pub realtime: bool,
    /// Queues each POP reads its TUN device with (None: one per core; see [`crate::io::tunq`]).
    pub tun_queues: Option<usize>,
}

impl Default for LabOptions {
    fn default() -> LabOptions {
        LabOptions { impairments: true, realtime: false, tun_queues: None }
    }
}

/// `up`, with [`LabOptions`].
/// An error naming the privilege `what` needs, unless this process runs as root.
pub fn require_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(format!(
            "{what} needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN: network namespaces, veth links, TUN devices): run it with sudo"
        ))
    }
}

pub fn up_with(file: &Path, exe: &Path, options: LabOptions) -> Result<State, String> {
    require_root("lab up")?;
    crate::node::bgp::check_installed()?;
    let file = std::fs::canonicalize(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (t, plan) = load(&file)?;
    let prefix = format!("{}-", plan.lab);
    if read_state(&plan.lab).is_some() || !netns::list_with_prefix(&prefix).is_empty() {
        return Err(format!(
            "lab `{}` is already up (or was left behind): run `anyedge lab down {}`",
            plan.lab,
            file.display()
        ));
    }
    let mut state =
        State { lab: plan.lab.clone(), topology: file.clone(), namespaces: Vec::new(), pids: BTreeMap::new() };
    let result = build(&t, &plan, &mut state, exe, options);
    match result {
        Ok(()) => {
            write_state(&state)?;
            Ok(state)
        }
        Err(e) => {
            teardown(&state);
            Err(e)
        }
    }
}

fn build(t: &Topology, plan: &Plan, state: &mut State, exe: &Path, options: LabOptions) -> Result<(), String> {
    let dir = state_dir(&plan.lab);
    // Everything under the state directory is root's alone: keys, logs, Raft logs, sockets.
    crate::layout::private_files();
    crate::layout::private_dir(&dir)?;
    std::fs::create_dir_all(ready_dir(&dir)).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(n) = options.tun_queues {
        crate::io::tunq::check_count(n).map_err(|e| format!("--tun-queues: {e}"))?;
    }
    network(t, plan, state, None)?;
    // Every node rendered as `anyedge render` renders it (its keys, certificates and
    // options, in the state directory), and started from that.
    let text = std::fs::read_to_string(&state.topology).map_err(|e| format!("{}: {e}", state.topology.display()))?;
    let opts = render::RenderOptions {
        ca: None,
        state: Some(dir.clone()),
        no_impairments: !options.impairments,
        realtime: options.realtime,
        tun_queues: options.tun_queues,
        hosts: None,
    };
    render::render_lab(t, &text, plan, &dir, &opts)?;
    start_nodes(plan, state, exe)?;
    wait_ready(plan, state)?;
    wait_converged(t, plan)
}

/// The lab's namespaces, links and routes: every one (`placed` is `None`: one host), or
/// host `me`'s part of them (its namespaces, veths between them, and its end of each link
/// to a namespace on another host: the backbone's routed over the underlay, any other a
/// VXLAN device). The namespaces made are noted in `state`.
fn network(
    t: &Topology,
    plan: &Plan,
    state: &mut State,
    placed: Option<(&hosts::Placement, usize)>,
) -> Result<(), String> {
    let local: Option<std::collections::BTreeSet<String>> = placed.map(|(p, me)| {
        plan.namespaces.iter().enumerate().filter(|&(i, _)| p.host_of[i] == me).map(|(_, ns)| ns.name.clone()).collect()
    });
    let local = local.as_ref();
    for ns in plan.namespaces.iter().filter(|ns| local.is_none_or(|l| l.contains(&ns.name))) {
        ip(&["netns", "add", &ns.name])?;
        state.namespaces.push(ns.name.clone());
        ip_in(&ns.name, &["link", "set", "lo", "up"])?;
        let forwards =
            matches!(ns.role, Role::Internet | Role::Transit(_) | Role::Backbone | Role::RegionNet(_) | Role::Pop(_));
        if forwards {
            sysctl_in(&ns.name, "net.ipv4.ip_forward", "1")?;
            sysctl_in(&ns.name, "net.ipv6.conf.all.forwarding", "1")?;
        }
        for key in ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"] {
            sysctl_in(&ns.name, key, "0")?;
        }
        // No duplicate address detection on any device made here, link-local addresses
        // included: every address is ours, and a tentative link-local address holds up
        // neighbour discovery (IPv6 answers took seconds for the first moments of a lab).
        for key in ["net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"] {
            sysctl_in(&ns.name, key, "0")?;
        }
    }
    // Whether this host has made the backbone's uplink to its own namespace yet.
    let mut uplink = false;
    for (k, l) in plan.links.iter().enumerate() {
        let (a, b) = (&plan.namespaces[l.a].name, &plan.namespaces[l.b].name);
        let here = |ns: &String| local.is_none_or(|s| s.contains(ns));
        match (here(a), here(b), placed) {
            (true, true, _) | (_, _, None) => {
                ip(&["link", "add", &l.a_if, "netns", a, "type", "veth", "peer", "name", &l.b_if, "netns", b])?;
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
        link_addrs(a, &l.a_if, l.a_addr, l.a_addr6)?;
        link_addrs(b, &l.b_if, l.b_addr, l.b_addr6)?;
    }
    routes(t, plan, local)
}

/// A link's addresses on its end `dev` in namespace `ns`, and the link up.
fn link_addrs(ns: &str, dev: &str, v4: std::net::Ipv4Addr, v6: std::net::Ipv6Addr) -> Result<(), String> {
    ip_in(ns, &["addr", "add", &format!("{v4}/30"), "dev", dev])?;
    // No duplicate-address detection: the lab's addresses are unique by construction.
    ip_in(ns, &["-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
    ip_in(ns, &["link", "set", dev, "up"])
}

/// Whether link `l` is the backbone's: the backbone router's link to a POP, a CLB node
/// or a control node. Between hosts it is routed over the underlay, not bridged.
fn is_backbone(plan: &Plan, l: &crate::plan::Veth) -> bool {
    plan.namespaces[l.a].role == Role::Backbone
}

/// `ip` in host `h`'s own namespace: the one holding its underlay (a real host's own).
fn host_ip(h: &hosts::Host, args: &[&str]) -> Result<(), String> {
    match &h.netns {
        Some(u) => ip_in(u, args),
        None => ip(args),
    }
}

/// A sysctl in host `h`'s own namespace.
fn host_sysctl(h: &hosts::Host, key: &str, value: &str) -> Result<(), String> {
    match &h.netns {
        Some(u) => sysctl_in(u, key, value),
        None => {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {path}: {e}"))
        }
    }
}

/// A device name in a host's own namespace, unique to this deployment (two labs can share
/// a host): `ae`, four hex digits of the lab's name, then `what`.
fn host_dev(plan: &Plan, what: &str) -> String {
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
fn backbone_uplink(plan: &Plan, p: &hosts::Placement, me: usize, ccn: &str) -> Result<(), String> {
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
fn route_to_remote_node(p: &hosts::Placement, me: usize, l: &crate::plan::Veth, ccn: &str) -> Result<(), String> {
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
fn routed_node_end(
    plan: &Plan,
    p: &hosts::Placement,
    (me, other): (usize, usize),
    k: usize,
    l: &crate::plan::Veth,
) -> Result<(), String> {
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
fn unroute_host(plan: &Plan, p: &hosts::Placement, me: usize) {
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
fn vxlan_end(
    p: &hosts::Placement,
    (me, other): (usize, usize),
    k: usize,
    (ns, dev): (&str, &str),
) -> Result<(), String> {
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

/// Waits until every BGP session of every speaker is established (they open after
/// BIRD's one-second connect delay) and every client group's transit has a route to each
/// VIP its traffic goes to.
fn wait_converged(t: &Topology, plan: &Plan) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let dir = state_dir(&plan.lab);
    let speakers: Vec<std::path::PathBuf> = plan
        .nodes
        .iter()
        .filter(|n| matches!(plan.namespaces[n.ns].role, Role::Pop(_) | Role::Transit(_)))
        .map(|n| crate::node::bgp::speaker_socket(&dir, &n.name))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut waiting = speakers;
    while !waiting.is_empty() {
        waiting.retain(|socket| {
            // A speaker with no sessions (a POP that publishes no VIP) has nothing to wait for.
            match rt.block_on(crate::node::bgp::command(socket, "show protocols")) {
                Ok(text) => crate::node::bgp::sessions(&text).iter().any(|s| s.bgp != "Established"),
                Err(_) => true,
            }
        });
        if Instant::now() > deadline {
            return Err(format!("BGP sessions not established after 30 s: {waiting:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut wanted = Vec::new();
    for g in 0..t.clients.len() {
        let Some(ns) = plan.ns_index(&Role::Client(g)).and_then(|c| plan.upstream(c)) else { continue };
        for &k in &t.clients[g].traffic {
            let vip = &t.vips[t.traffic[k].vip];
            if t.pop_order(g, t.traffic[k].vip).is_empty() {
                continue;
            }
            wanted.push((plan.namespaces[ns].name.clone(), format!("{}/32", vip.ipv4)));
            if let Some(v6) = vip.ipv6 {
                wanted.push((plan.namespaces[ns].name.clone(), format!("{v6}/128")));
            }
        }
    }
    wanted.sort();
    wanted.dedup();
    loop {
        wanted.retain(|(ns, prefix)| {
            let family = if prefix.contains(':') { "-6" } else { "-4" };
            let out = Command::new("ip").args(["-n", ns, family, "route", "show", prefix]).output();
            !out.is_ok_and(|o| !o.stdout.is_empty())
        });
        if wanted.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("BGP has not converged after 30 s: no route yet for {wanted:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_every_route(t, plan, &rt, deadline)
}

/// Waits until every transit holds a route from every POP that publishes each VIP, in
/// each of its families: the sessions between transits are delayed (the model's one-way
/// delay), so the far POPs' routes arrive last.
fn wait_every_route(t: &Topology, plan: &Plan, rt: &tokio::runtime::Runtime, deadline: Instant) -> Result<(), String> {
    let dir = state_dir(&plan.lab);
    let mut waiting: Vec<usize> = (0..t.pops.len()).collect();
    loop {
        waiting.retain(|&x| {
            let socket = crate::node::bgp::speaker_socket(&dir, &format!("transit/{}", t.pops[x].name));
            let routes = rt.block_on(crate::node::bgp::vip_routes(t, x, &socket)).unwrap_or_default();
            let prefixes = t.vips.iter().flat_map(|v| {
                let v6 = v.ipv6.map(|a| format!("{a}/128"));
                std::iter::once(format!("{}/32", v.ipv4)).chain(v6).map(move |prefix| (v, prefix))
            });
            let complete = prefixes.into_iter().all(|(v, prefix)| {
                v.pops.iter().all(|&p| {
                    let pop = format!("pop/{}", t.pops[p].name);
                    routes.iter().any(|r| r.prefix == prefix && r.pop.as_deref() == Some(pop.as_str()))
                })
            });
            !complete
        });
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<String> = waiting.iter().map(|&x| format!("transit/{}", t.pops[x].name)).collect();
            return Err(format!("BGP has not converged after 30 s: {} lack a POP's route", names.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn net(n: (std::net::Ipv4Addr, u8)) -> String {
    format!("{}/{}", n.0, n.1)
}

/// A namespace's way to each of its routers: the router's address on their link.
struct Gateways<'a> {
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
    fn ip(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        if self.here(ns) { ip_in(ns, args) } else { Ok(()) }
    }

    /// An nftables ruleset in namespace `ns`, when this host builds it.
    fn nft(&self, ns: &str, ruleset: &str) -> Result<(), String> {
        if self.here(ns) { crate::io::netns::nft_in(ns, ruleset) } else { Ok(()) }
    }

    /// A sysctl in namespace `ns`, when this host builds it.
    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        if self.here(ns) { sysctl_in(ns, key, value) } else { Ok(()) }
    }

    fn here(&self, ns: &str) -> bool {
        self.local.is_none_or(|l| l.contains(ns))
    }

    fn v4(&self, router: usize) -> Result<String, String> {
        self.plan
            .gateway(self.i, router)
            .map(|a| a.to_string())
            .ok_or(format!("{} has no link to its router", self.name))
    }

    fn v6(&self, router: usize) -> Result<String, String> {
        self.plan
            .addr6_toward(self.i, router)
            .map(|(_, g)| g.to_string())
            .ok_or(format!("{} has no IPv6 link to its router", self.name))
    }
}

fn routes(t: &Topology, plan: &Plan, local: Option<&std::collections::BTreeSet<String>>) -> Result<(), String> {
    let inet = plan.ns_index(&Role::Internet).ok_or("no internet namespace")?;
    let ccn = plan.ns_index(&Role::Backbone).ok_or("no backbone namespace")?;
    let region_net = |region| plan.ns_index(&Role::RegionNet(region)).ok_or("no region namespace");
    for (i, ns) in plan.namespaces.iter().enumerate() {
        let name = &ns.name;
        let gw = Gateways { plan, i, name, local };
        match ns.role {
            Role::Client(g) => client_routes(plan, g, &gw, inet)?,
            Role::Pop(p) => pop_routes(t, p, &gw, (plan.upstream(i).ok_or("POP without a transit")?, ccn))?,
            Role::Transit(_) => transit_routes(t, plan, &gw, inet)?,
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

/// A transit: its clients and its POP on links of their own; everything else through the
/// internet's core, which routes their link networks back here. Its VIP routes come from
/// BGP (its speaker installs them).
fn transit_routes(t: &Topology, plan: &Plan, gw: &Gateways<'_>, inet: usize) -> Result<(), String> {
    let name = gw.name;
    gw.ip(name, &["route", "add", "default", "via", &gw.v4(inet)?])?;
    gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(inet)?])?;
    let core = &plan.namespaces[inet].name;
    let up = plan.link_between(gw.i, inet).ok_or("transit without a link to the core")?;
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
    routing_closed_to_clients(gw, &client_links)
}

/// IPv6 has no `rp_filter`: on a transit's link to client group `g` (device `dev`, link
/// network `/64`), packets from the link's /64 or the group's own IPv6 block go on to the
/// rules after (the group's catchment table, else the main table); any other source is
/// blackholed, so a client can no more forge an IPv6 source than an IPv4 one.
fn client_v6_sources_only(
    t: &Topology,
    plan: &Plan,
    g: usize,
    gw: &Gateways<'_>,
    (dev, link6): (&str, std::net::Ipv6Addr),
) -> Result<(), String> {
    let mut allowed = vec![format!("{link6}/64")];
    if let Some((block, own)) = plan.group_sources.get(g).copied().flatten()
        && own.is_ipv6()
    {
        allowed.push(block.to_string());
    }
    if SOURCE_CHECK_PRIORITY + 2 * g + 1 >= 10_000 {
        return Err(format!("a lab holds at most {} client groups", (10_000 - SOURCE_CHECK_PRIORITY) / 2));
    }
    let check = (SOURCE_CHECK_PRIORITY + 2 * g).to_string();
    let drop = (SOURCE_CHECK_PRIORITY + 2 * g + 1).to_string();
    let next = if t.clients[g].catchment.is_some() { 10_000 + g } else { MAIN_RULE_PRIORITY }.to_string();
    for from in &allowed {
        gw.ip(gw.name, &["-6", "rule", "add", "priority", &check, "iif", dev, "from", from, "goto", &next])?;
    }
    gw.ip(gw.name, &["-6", "rule", "add", "priority", &drop, "iif", dev, "blackhole"])
}

/// A transit's BGP (TCP 179) and BFD (UDP 3784, 3785, 4784) are for its POP and its
/// peers: packets to them from its client links are dropped in its kernel, before its
/// speaker sees them (it logged a line per refused connect: 1 MB per 10,000).
fn routing_closed_to_clients(gw: &Gateways<'_>, client_links: &[String]) -> Result<(), String> {
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
fn client_routes(plan: &Plan, g: usize, gw: &Gateways<'_>, inet: usize) -> Result<(), String> {
    let name = gw.name;
    let transit = plan.upstream(gw.i).ok_or(format!("{name} has no transit"))?;
    let Some((cidr, own)) = plan.group_sources.get(g).copied().flatten() else {
        gw.ip(name, &["route", "add", "default", "via", &gw.v4(transit)?])?;
        return gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(transit)?]);
    };
    let router = &plan.namespaces[transit].name;
    let core = &plan.namespaces[inet].name;
    let up = plan.link_between(transit, inet).ok_or("transit without a link to the core")?;
    let block = cidr.to_string();
    if own.is_ipv4() {
        let link = plan.client_addr(g).ok_or("client without an address")?.to_string();
        gw.ip(name, &["addr", "add", &format!("{own}/32"), "dev", "lo"])?;
        gw.ip(name, &["route", "add", "default", "via", &gw.v4(transit)?, "src", &own.to_string()])?;
        gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(transit)?])?;
        gw.ip(router, &["route", "add", &block, "via", &link])?;
        gw.ip(core, &["route", "add", &block, "via", &up.local.to_string()])
    } else {
        let link6 = plan.client_addr6(g).ok_or("client without an IPv6 address")?.to_string();
        gw.ip(name, &["-6", "addr", "add", &format!("{own}/128"), "dev", "lo", "nodad"])?;
        gw.ip(name, &["route", "add", "default", "via", &gw.v4(transit)?])?;
        gw.ip(name, &["-6", "route", "add", "default", "via", &gw.v6(transit)?, "src", &own.to_string()])?;
        gw.ip(router, &["-6", "route", "add", &block, "via", &link6])?;
        gw.ip(core, &["-6", "route", "add", &block, "via", &up.local6.to_string()])
    }
}

/// A POP: the internet, the backbone, and its VIPs into its multi-queue TUN device (the
/// POP reads it with a queue per core).
fn pop_routes(t: &Topology, p: usize, gw: &Gateways<'_>, (inet, ccn): (usize, usize)) -> Result<(), String> {
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
    gw.sysctl(name, &format!("net.ipv4.conf.{TUN_NAME}.rp_filter"), "0")
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
fn backend_routes(plan: &Plan, host: std::net::Ipv4Addr, gw: &Gateways<'_>, rg: usize) -> Result<(), String> {
    let name = gw.name;
    gw.ip(name, &["route", "add", &net(REGION_NET), "via", &gw.v4(rg)?])?;
    gw.ip(name, &["addr", "add", &format!("{host}/32"), "dev", "lo"])?;
    gw.ip(name, &["tuntap", "add", "dev", TUN_NAME, "mode", "tun"])?;
    gw.ip(name, &["link", "set", TUN_NAME, "up"])?;
    gw.ip(name, &["route", "add", "default", "dev", TUN_NAME])?;
    gw.ip(name, &["-6", "route", "add", "default", "dev", TUN_NAME])?;
    gw.sysctl(name, &format!("net.ipv4.conf.{TUN_NAME}.rp_filter"), "0")?;
    let own = plan.backend_direct_addr(host).ok_or("backend without a public address")?;
    gw.ip(name, &["addr", "add", &format!("{own}/32"), "dev", "lo"])?;
    gw.ip(name, &["rule", "add", "from", &format!("{own}/32"), "lookup", "200", "priority", "1000"])?;
    gw.ip(name, &["route", "add", "default", "via", &gw.v4(rg)?, "table", "200"])
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

fn direct_security_groups(
    t: &Topology,
    plan: &Plan,
    host: std::net::Ipv4Addr,
    gw: &Gateways<'_>,
    rg: usize,
) -> Result<(), String> {
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
    let mut add = |selector: &[&str], action: Action| -> Result<(), String> {
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
fn region_routes(t: &Topology, plan: &Plan, r: usize, gw: &Gateways<'_>, inet: usize) -> Result<(), String> {
    let name = gw.name;
    gw.ip(name, &["route", "add", &net(INTERNET_NET), "via", &gw.v4(inet)?])?;
    for (cidr, _) in plan.group_sources.iter().flatten() {
        if cidr.addr.is_ipv4() {
            gw.ip(name, &["route", "add", &cidr.to_string(), "via", &gw.v4(inet)?])?;
        } else {
            gw.ip(name, &["-6", "route", "add", &cidr.to_string(), "via", &gw.v6(inet)?])?;
        }
    }
    let via = plan.region_internet_addr(r).ok_or("region without an internet link")?.to_string();
    let router = &plan.namespaces[inet].name;
    for (_, host) in crate::plan::backend_hosts(t).into_iter().filter(|&(hr, _)| hr == r) {
        let direct = plan.backend_direct_addr(host).ok_or("backend without a public address")?;
        let link = plan.backend_tunnel(host).ok_or("backend without a region address")?.ip().to_string();
        gw.ip(name, &["route", "add", &format!("{direct}/32"), "via", &link])?;
        gw.ip(router, &["route", "add", &format!("{direct}/32"), "via", &via])?;
    }
    Ok(())
}

fn start_nodes(plan: &Plan, state: &mut State, exe: &Path) -> Result<(), String> {
    for node in plan.nodes.iter().filter(|n| !n.name.starts_with("client/")) {
        let pid = spawn_node(plan, exe, &node.name)?;
        state.pids.insert(node.name.clone(), pid);
    }
    Ok(())
}

fn spawn_node(plan: &Plan, exe: &Path, name: &str) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    let node = plan.node(name).ok_or(format!("no node `{name}` in this lab"))?;
    let ns = &plan.namespaces[node.ns].name;
    let dir = state_dir(&plan.lab);
    // Appended: a restarted node's log keeps what it said before it died.
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(node_log(&dir, name)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(ready_marker(&dir, name));
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["node", "--config"])
        .arg(render::node_dir(&render::nodes_dir(&dir), name))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: the lab outlives the shell that brought it up.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(child.id())
}

fn wait_ready(plan: &Plan, state: &State) -> Result<(), String> {
    let dir = state_dir(&plan.lab);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing: Vec<&String> = state.pids.keys().filter(|n| !ready_marker(&dir, n).exists()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (name, &pid) in &state.pids {
            if !alive(pid) {
                let log = std::fs::read_to_string(node_log(&dir, name)).unwrap_or_default();
                return Err(format!("node {name} exited while starting:\n{}", log.trim()));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("nodes not ready after 20 s: {missing:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process that exists and is not a zombie waiting to be reaped (an exited node's
/// parent, `lab up`, is long gone; whoever adopted it may reap it late).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether `pid` is still this lab's node `name` (its command line says `node --config
/// DIR/nodes/NAME`): a PID the lab recorded may since belong to anyone.
fn is_lab_node(pid: u32, name: &str, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let after = |flag: &str| args.windows(2).find(|w| w[0] == flag.as_bytes()).map(|w| w[1]);
    let config = render::node_dir(&render::nodes_dir(dir), name);
    args.contains(&&b"node"[..]) && after("--config") == Some(config.as_os_str().as_encoded_bytes())
}

/// Stops node `name` of the lab at `dir` if `pid` is still it; says so when it is not.
fn stop_node(pid: u32, name: &str, dir: &Path) {
    if is_lab_node(pid, name, dir) {
        stop(pid);
    } else if alive(pid) {
        eprintln!("{name}: PID {pid} is no longer this lab's node; not signalled");
    }
}

fn stop(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !alive(pid.as_raw() as u32) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Stops every process and deletes every namespace of a lab.
fn teardown(state: &State) {
    let dir = state_dir(&state.lab);
    for (name, &pid) in &state.pids {
        stop_node(pid, name, &dir);
    }
    let mut names = state.namespaces.clone();
    for leftover in netns::list_with_prefix(&format!("{}-", state.lab)) {
        if !names.contains(&leftover) {
            names.push(leftover);
        }
    }
    for ns in names {
        let _ = netns::delete(&ns);
    }
    let _ = std::fs::remove_dir_all(state_dir(&state.lab));
}

/// `lab reload FILE`: the running lab takes FILE's route table (weights, bindings,
/// listeners) without a restart: every node's rendered directory gets the file, then
/// every node a SIGHUP (`node::reload`); POPs and CLB nodes apply the difference to their
/// running cores, flows staying where they are, and gRPC servers take their directory's
/// certificate for new connections. A file whose nodes, addresses or links differ
/// from the running lab's is refused, and nothing changes. Returns the nodes signalled.
pub fn reload(file: &Path, new_vip_certificates: bool, new_node_certificates: bool) -> Result<Vec<String>, String> {
    require_root("lab reload")?;
    let (t, plan) = load(file)?;
    let state = read_state(&plan.lab).ok_or(format!("lab `{}` is not up", plan.lab))?;
    let dir = state_dir(&plan.lab);
    // What the nodes run now: the copy rendered for them.
    let running = running_topology(&dir, &plan)?;
    let (_, old) = load(&running)?;
    let shape = |p: &Plan| {
        let ns: Vec<String> = p.namespaces.iter().map(|n| format!("{} {:?}", n.name, n.role)).collect();
        (ns, format!("{:?}", p.links))
    };
    if shape(&old) != shape(&plan) {
        return Err(format!(
            "{}: its nodes, addresses or links are not the running lab's: `lab reload` changes the route table only (lab down, then up)",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    render::rerender_lab(&text, &plan, &dir)?;
    if new_vip_certificates {
        render::renew_vip_certificates(&t, &plan, &dir)?;
    }
    if new_node_certificates {
        render::renew_node_certificates(&plan, &dir)?;
    }
    let mut signalled = Vec::new();
    for (name, &pid) in &state.pids {
        if is_lab_node(pid, name, &dir) {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).is_ok() {
                signalled.push(name.clone());
            }
        }
    }
    Ok(signalled)
}

/// The topology copy a running lab's nodes were rendered with.
fn running_topology(dir: &Path, plan: &Plan) -> Result<PathBuf, String> {
    let node = render::process_nodes(plan).into_iter().next().ok_or("a lab without nodes")?;
    Ok(render::node_dir(&render::nodes_dir(dir), &node).join(render::TOPOLOGY_FILE))
}

/// `anyedge host up DIR --host NAME`: host NAME's part of the deployment `render --hosts`
/// wrote into DIR — its namespaces, the veths between them, its ends of the links to other
/// hosts (the backbone routed over the underlay through the host's own namespace, other
/// links VXLAN), and its namespaces' routes. Nodes are not started: on
/// each host, `ip netns exec NS anyedge node --config DIR/NODE` (or systemd) runs them.
/// Anything made is removed again when a step fails. Returns the namespaces made.
pub fn host_up(dir: &Path, host: &str) -> Result<Vec<String>, String> {
    require_root("host up")?;
    let (t, plan, placement) = deployment(dir)?;
    let me = placement.host(host)?;
    let mine: Vec<String> = (0..plan.namespaces.len())
        .filter(|&i| placement.host_of[i] == me)
        .map(|i| plan.namespaces[i].name.clone())
        .collect();
    let there = netns::list_with_prefix(&format!("{}-", plan.lab));
    if let Some(ns) = mine.iter().find(|ns| there.contains(ns)) {
        return Err(format!("host `{host}` is already up (namespace {ns} exists): `anyedge host down` first"));
    }
    let mut state = State {
        lab: plan.lab.clone(),
        topology: dir.join(render::TOPOLOGY_FILE),
        namespaces: Vec::new(),
        pids: BTreeMap::new(),
    };
    match network(&t, &plan, &mut state, Some((&placement, me))) {
        Ok(()) => Ok(state.namespaces),
        Err(e) => {
            unroute_host(&plan, &placement, me);
            for ns in &state.namespaces {
                let _ = netns::delete(ns);
            }
            Err(e)
        }
    }
}

/// `anyedge host down DIR --host NAME`: removes host NAME's namespaces (what runs in them
/// first) and with them its links' ends. Returns the namespaces removed.
pub fn host_down(dir: &Path, host: &str) -> Result<Vec<String>, String> {
    require_root("host down")?;
    let (_, plan, placement) = deployment(dir)?;
    let me = placement.host(host)?;
    let there = netns::list_with_prefix(&format!("{}-", plan.lab));
    let mine: Vec<String> = (0..plan.namespaces.len())
        .filter(|&i| placement.host_of[i] == me)
        .map(|i| plan.namespaces[i].name.clone())
        .filter(|ns| there.contains(ns))
        .collect();
    unroute_host(&plan, &placement, me);
    for ns in &mine {
        netns::delete(ns)?;
    }
    Ok(mine)
}

/// A deployment rendered with `--hosts`: its topology, plan and placement.
fn deployment(dir: &Path) -> Result<(Topology, Plan, hosts::Placement), String> {
    let (t, plan) = load(&dir.join(render::TOPOLOGY_FILE))?;
    let file = dir.join(render::HOSTS_FILE);
    if !file.exists() {
        return Err(format!("{}: not rendered with --hosts (no {})", dir.display(), file.display()));
    }
    let placement = hosts::load(&file, &t, &plan)?;
    Ok((t, plan, placement))
}

/// Takes a lab down: its processes, namespaces, links, devices and state.
pub fn down(file: &Path) -> Result<(), String> {
    let (_, plan) = load(file)?;
    let state = read_state(&plan.lab).unwrap_or(State {
        lab: plan.lab.clone(),
        topology: file.to_path_buf(),
        namespaces: Vec::new(),
        pids: BTreeMap::new(),
    });
    teardown(&state);
    let left = netns::list_with_prefix(&format!("{}-", plan.lab));
    if left.is_empty() { Ok(()) } else { Err(format!("namespaces left behind: {left:?}")) }
}

/// Node name → running or not, and the lab's namespaces.
#[derive(Debug, Serialize)]
pub struct Status {
    pub lab: String,
    pub up: bool,
    pub nodes: BTreeMap<String, &'static str>,
    pub namespaces: Vec<String>,
    /// Packets each running POP and CLB core refused, by reason (as the simulator's report
    /// has them); nodes that dropped nothing are left out.
    pub drops: BTreeMap<String, BTreeMap<String, u64>>,
    /// Each running CLB node's connection-table sync with its region's other nodes
    /// (messages and bytes each way, flows adopted, queue overflow).
    pub sync: BTreeMap<String, BTreeMap<String, u64>>,
    /// Each running CLB node's QUIC connections now and handshakes it has accepted (a
    /// migrating client adds none).
    pub quic: BTreeMap<String, BTreeMap<String, u64>>,
    /// Each running CLB node's view of its backends' health (backends whose health
    /// changed; the rest are healthy).
    pub health: BTreeMap<String, BTreeMap<String, String>>,
    /// Per backend host whose security groups dropped a packet: the last one, and why.
    pub denied: BTreeMap<String, String>,
    /// Each running POP's TUN device: its queues, and the packets read from each.
    pub tun: BTreeMap<String, TunStatus>,
    /// How long packets spent inside each running forwarder and backend host, per way
    /// (`request`, `reply`): packets, `p50_ns`, `p99_ns`, `p999_ns`, `max_ns` (nodes that
    /// forwarded nothing are left out).
    pub residence: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    /// Each running POP's and transit's BGP speaker: its sessions (name, state, BGP
    /// state, since when) and how often the node restarted it.
    pub bgp: BTreeMap<String, serde_json::Value>,
    /// Each running POP's administrative state: `serving`, or `draining` / `stopped`
    /// after `ctl drain`.
    pub admin: BTreeMap<String, String>,
}

/// A POP's TUN device as its node reports it.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct TunStatus {
    pub queues: usize,
    pub packets_read: Vec<u64>,
}

pub fn status(file: &Path) -> Result<Status, String> {
    let (_, plan) = load(file)?;
    let state = read_state(&plan.lab);
    let dir = state_dir(&plan.lab);
    let sockets: Vec<(String, PathBuf)> = plan
        .nodes
        .iter()
        .filter(|n| !n.name.starts_with("client/"))
        .map(|n| (n.name.clone(), node_socket(&dir, &n.name)))
        .collect();
    let namespaces = netns::list_with_prefix(&format!("{}-", plan.lab));
    Ok(status_of(&plan.lab, state.is_some(), &sockets, namespaces))
}

/// `lab status --deployment DIR`: the nodes `render` wrote into `DIR` (every `DIR/*/node.json`),
/// each asked over the control socket in its own state directory. `up` when every node
/// answers.
pub fn deployment_status(dir: &Path) -> Result<Status, String> {
    let mut sockets = Vec::new();
    let mut name = None;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for node_dir in dirs.iter().filter(|d| d.join(render::NODE_FILE).is_file()) {
        let path = node_dir.join(render::NODE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: render::NodeConfig = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if name.is_none() {
            let t = topology::load(&node_dir.join(&c.topology)).map_err(|e| e.to_string())?;
            name = Some(crate::layout::sanitize(&t.name));
        }
        sockets.push((c.node.clone(), node_socket(&c.state, &c.node)));
    }
    let name = name.ok_or_else(|| format!("{}: no rendered node in it (no DIR/NODE/node.json)", dir.display()))?;
    let mut s = status_of(&name, false, &sockets, Vec::new());
    s.up = s.nodes.values().all(|&state| state == "running");
    Ok(s)
}

/// What the nodes at `sockets` say of themselves.
fn status_of(lab: &str, up: bool, sockets: &[(String, PathBuf)], namespaces: Vec<String>) -> Status {
    let mut nodes = BTreeMap::new();
    let mut drops = BTreeMap::new();
    let mut sync = BTreeMap::new();
    let mut quic = BTreeMap::new();
    let mut health = BTreeMap::new();
    let mut denied = BTreeMap::new();
    let mut tun = BTreeMap::new();
    let mut residence = BTreeMap::new();
    let mut bgp = BTreeMap::new();
    let mut admin = BTreeMap::new();
    for (name, socket) in sockets {
        let answer = ask_socket(socket);
        let counts: BTreeMap<String, u64> =
            answer.as_ref().and_then(|a| serde_json::from_value(a["drops"].clone()).ok()).unwrap_or_default();
        if !counts.is_empty() {
            drops.insert(name.clone(), counts);
        }
        let synced: Option<BTreeMap<String, u64>> =
            answer.as_ref().and_then(|a| serde_json::from_value(a["sync"].clone()).ok());
        if let Some(synced) = synced {
            sync.insert(name.clone(), synced);
        }
        let held: Option<BTreeMap<String, u64>> =
            answer.as_ref().and_then(|a| serde_json::from_value(a["quic"].clone()).ok());
        if let Some(held) = held {
            quic.insert(name.clone(), held);
        }
        let seen: Option<BTreeMap<String, String>> =
            answer.as_ref().and_then(|a| serde_json::from_value(a["health"].clone()).ok());
        if let Some(seen) = seen {
            health.insert(name.clone(), seen);
        }
        if let Some(t) = answer.as_ref().and_then(|a| serde_json::from_value::<TunStatus>(a["tun"].clone()).ok()) {
            tun.insert(name.clone(), t);
        }
        let inside: Option<BTreeMap<String, BTreeMap<String, u64>>> =
            answer.as_ref().and_then(|a| serde_json::from_value(a["residence"].clone()).ok());
        if let Some(inside) = inside.filter(|r| !r.is_empty()) {
            residence.insert(name.clone(), inside);
        }
        if let Some(speaker) = answer.as_ref().map(|a| a["bgp"].clone()).filter(|b| !b.is_null()) {
            bgp.insert(name.clone(), speaker);
        }
        if let Some(why) = answer.as_ref().and_then(|a| a["denied"].as_str()) {
            denied.insert(name.clone(), why.to_string());
        }
        if let Some(state) = answer.as_ref().and_then(|a| a["admin"].as_str()) {
            admin.insert(name.clone(), state.to_string());
        }
        nodes.insert(name.clone(), if answer.is_some() { "running" } else { "stopped" });
    }
    Status {
        lab: lab.to_string(),
        up,
        nodes,
        drops,
        sync,
        quic,
        health,
        denied,
        tun,
        residence,
        bgp,
        admin,
        namespaces,
    }
}

/// Asks a node over its control socket how it is; `None` when it does not answer.
pub fn ask_node(lab: &str, node: &str) -> Option<serde_json::Value> {
    ask_socket(&node_socket(&state_dir(lab), node))
}

/// Asks the node at control socket `socket` how it is; `None` when it does not answer.
pub fn ask_socket(socket: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(socket_command(socket, "status").ok()?.trim()).ok()
}

/// Sends a command (`status`, `metrics`, `reset-residence`) to a node's control socket
/// and returns its answer.
pub fn node_command(lab: &str, node: &str, command: &str) -> std::io::Result<String> {
    socket_command(&node_socket(&state_dir(lab), node), command)
}

fn socket_command(socket: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// A POP's or transit's BGP routes for the VIP prefixes, from its speaker, each with the
/// POP that announced it and whether BGP selected it.
pub fn bgp(file: &Path, node: &str) -> Result<Vec<crate::node::bgp::Route>, String> {
    let (t, plan) = load(file)?;
    let n = plan.node(node).ok_or(format!("no node `{node}`"))?;
    read_state(&plan.lab).ok_or(format!("lab `{}` is not up", plan.lab))?;
    let own = match plan.namespaces[n.ns].role {
        Role::Pop(p) | Role::Transit(p) => p,
        _ => return Err(format!("`{node}` runs no BGP speaker (POPs and transits do: pop/NAME, transit/NAME)")),
    };
    let socket = crate::node::bgp::speaker_socket(&state_dir(&plan.lab), &n.name);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(crate::node::bgp::vip_routes(&t, own, &socket))
}

/// Each client group's POP as the lab's BGP selects it now, in the shape of the
/// simulator report's `clients` (`name`, `location`, `count`, and `pop`: the POP entered
/// for the group's first traffic class's VIP, `null` without a route), with the transit
/// the group hangs off and its POP for every VIP it sends to. A group with a `catchment:`
/// list is read from its own policy table at that transit.
pub fn catchments(file: &Path) -> Result<serde_json::Value, String> {
    let (t, plan) = load(file)?;
    read_state(&plan.lab).ok_or(format!("lab `{}` is not up", plan.lab))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let dir = state_dir(&plan.lab);
    let mut clients = Vec::new();
    for (g, group) in t.clients.iter().enumerate() {
        let at = topology::bgp::attach(&t, g).ok_or(format!("client/{}: no POP to attach to", group.name))?;
        let transit = format!("transit/{}", t.pops[at].name);
        let socket = crate::node::bgp::speaker_socket(&dir, &transit);
        let routes =
            rt.block_on(crate::node::bgp::group_routes(&t, g, &socket)).map_err(|e| format!("{transit}: {e}"))?;
        let pop_for = |v: usize| {
            let prefix = format!("{}/32", t.vips[v].ipv4);
            let best = routes.iter().find(|r| r.best && r.prefix == prefix)?;
            best.pop.as_deref().map(|p| p.trim_start_matches("pop/").to_string())
        };
        let mut vips: Vec<usize> = group.traffic.iter().map(|&k| t.traffic[k].vip).collect();
        vips.dedup();
        clients.push(serde_json::json!({
            "name": group.name,
            "location": group.location,
            "count": group.count,
            "pop": vips.first().and_then(|&v| pop_for(v)),
            "transit": transit,
            "vips": vips.iter().map(|&v| serde_json::json!({ "vip": t.vips[v].name, "pop": pop_for(v) })).collect::<Vec<_>>(),
        }));
    }
    Ok(serde_json::json!({ "lab": plan.lab, "clients": clients }))
}

/// Every running node's Prometheus metrics (or one node's), as their control sockets
/// give them.
pub fn metrics(file: &Path, node: Option<&str>) -> Result<String, String> {
    let (_, plan) = load(file)?;
    if read_state(&plan.lab).is_none() {
        return Err(format!("lab `{}` is not up", plan.lab));
    }
    let names: Vec<String> = match node {
        Some(n) => vec![plan.node(n).ok_or(format!("no node `{n}`"))?.name.clone()],
        None => plan.nodes.iter().filter(|n| !n.name.starts_with("client/")).map(|n| n.name.clone()).collect(),
    };
    let mut out = String::new();
    for name in names {
        match node_command(&plan.lab, &name, "metrics") {
            Ok(text) => out.push_str(&text),
            Err(_) => out.push_str(&format!("# {name}: not running\n")),
        }
    }
    Ok(out)
}

/// Runs a command inside a node's namespace; returns its exit code.
pub fn exec(file: &Path, node: &str, command: &[String]) -> Result<i32, String> {
    let (_, plan) = load(file)?;
    // A node name (`pop/paris`) or a namespace without the lab prefix (`client-london`).
    let prefixed = format!("{}-{node}", plan.lab);
    let ns = match plan.node(node) {
        Some(n) => &plan.namespaces[n.ns].name,
        None => match plan.namespaces.iter().find(|ns| ns.name == prefixed) {
            Some(ns) => &ns.name,
            None => {
                let names: Vec<&str> = plan.namespaces.iter().map(|ns| &ns.name[plan.lab.len() + 1..]).collect();
                return Err(format!(
                    "no node or namespace `{node}` in lab `{}` (namespaces: {})",
                    plan.lab,
                    names.join(", ")
                ));
            }
        },
    };
    if read_state(&plan.lab).is_none() {
        return Err(format!("lab `{}` is not up", plan.lab));
    }
    let status = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(command)
        // What runs there (`anyedge probe`) finds the lab's CA and client certificate.
        .env("ANYEDGE_LAB_PKI", crate::pki::dir(&state_dir(&plan.lab)))
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    Ok(status.code().unwrap_or(1))
}

/// Captures `duration` of a node's traffic into `out` (see [`crate::client::capture`]): runs
/// this binary's hidden `capture-here` inside the node's namespace.
pub fn capture(
    file: &Path,
    node: &str,
    out: &Path,
    (duration, snaplen): (&str, u32),
    exe: &Path,
) -> Result<(), String> {
    let out = std::path::absolute(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let command = [exe.display().to_string(), "capture-here".into(), "-w".into(), out.display().to_string()]
        .into_iter()
        .chain(["--duration".to_string(), duration.to_string(), "--snaplen".to_string(), snaplen.to_string()])
        .collect::<Vec<String>>();
    match exec(file, node, &command)? {
        0 => Ok(()),
        code => Err(format!("capture in {node} failed (exit {code})")),
    }
}

/// Stops one node's process (its namespace stays, like a crashed machine).
pub fn kill(file: &Path, node: &str) -> Result<(), String> {
    let (_, plan) = load(file)?;
    let n = plan.node(node).ok_or(format!("no node `{node}`"))?;
    let mut state = read_state(&plan.lab).ok_or(format!("lab `{}` is not up", plan.lab))?;
    let name = plan.nodes.iter().find(|x| x.ns == n.ns).map(|x| x.name.clone()).unwrap_or_default();
    let pid = state.pids.remove(&name).ok_or(format!("node `{name}` runs no process"))?;
    stop_node(pid, &name, &state_dir(&plan.lab));
    write_state(&state)
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) every process in a node's namespace — the node
/// and its BGP speaker — like a machine that hangs without a word: no session closes, only
/// BFD and timeouts notice. Returns how many processes it signalled.
pub fn freeze(file: &Path, node: &str, frozen: bool) -> Result<usize, String> {
    let (_, plan) = load(file)?;
    let n = plan.node(node).ok_or(format!("no node `{node}`"))?;
    read_state(&plan.lab).ok_or(format!("lab `{}` is not up", plan.lab))?;
    let ns = &plan.namespaces[n.ns].name;
    let out = Command::new("ip").args(["netns", "pids", ns]).output().map_err(|e| e.to_string())?;
    let signal = if frozen { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
    let pids: Vec<i32> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    for &pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| format!("pid {pid}: {e}"))?;
    }
    Ok(pids.len())
}

/// Starts a stopped node again.
pub fn start(file: &Path, node: &str, exe: &Path) -> Result<(), String> {
    let (_, plan) = load(file)?;
    let n = plan.node(node).ok_or(format!("no node `{node}`"))?.clone();
    let mut state = read_state(&plan.lab).ok_or(format!("lab `{}` is not up", plan.lab))?;
    if state.pids.get(&n.name).is_some_and(|&p| alive(p)) {
        return Err(format!("node `{}` is already running", n.name));
    }
    let pid = spawn_node(&plan, exe, &n.name)?;
    state.pids.insert(n.name.clone(), pid);
    let single = State { pids: [(n.name.clone(), pid)].into_iter().collect(), ..state.clone() };
    wait_ready(&plan, &single)?;
    write_state(&state)
}

/// Addresses of a lab's clients, for tests and `status`.
pub fn client_address(file: &Path, group: &str) -> Result<IpAddr, String> {
    let (t, plan) = load(file)?;
    let g = t.clients.iter().position(|c| c.name == group).ok_or(format!("no client group `{group}`"))?;
    plan.client_sources(g).first().copied().ok_or("no address".into())
}
