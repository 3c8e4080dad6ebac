//! The commands that talk to a running lab: status, a node's own socket, BGP routes,
//! catchments, metrics, exec, capture, kill, freeze and start.

use crate::client::ClientError;
use crate::client::unsuited;
use crate::error::{Doing, SysError};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyedge_topology::{self as topology};
use serde::Serialize;

use crate::io::netns::{self};
use crate::layout::{node_socket, state_dir};
use crate::plan::Role;
use crate::setup::{State, alive, load, read_state, render, spawn_node, stop_node, wait_ready, write_state};

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
    /// Per backend host whose security groups dropped a packet, and per CLB node that kept
    /// a client from a backend by that backend's groups: the last one, and why.
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

pub fn status(file: &Path) -> Result<Status, ClientError> {
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
pub fn deployment_status(dir: &Path) -> Result<Status, ClientError> {
    let mut sockets = Vec::new();
    let mut name = None;
    let entries = std::fs::read_dir(dir).at(dir)?;
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for node_dir in dirs.iter().filter(|d| d.join(render::NODE_FILE).is_file()) {
        let path = node_dir.join(render::NODE_FILE);
        let text = std::fs::read_to_string(&path).at(&path)?;
        let c: render::NodeConfig = serde_json::from_str(&text)
            .map_err(|source| ClientError::Json { what: path.display().to_string(), source })?;
        if name.is_none() {
            let t = topology::load(&node_dir.join(&c.topology))?;
            name = Some(crate::layout::sanitize(&t.name));
        }
        sockets.push((c.node.clone(), node_socket(&c.state, &c.node)));
    }
    let name =
        name.ok_or_else(|| unsuited(format!("{}: no rendered node in it (no DIR/NODE/node.json)", dir.display())))?;
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
pub fn bgp(file: &Path, node: &str) -> Result<Vec<crate::bird::Route>, ClientError> {
    let (t, plan) = load(file)?;
    let n = plan.node(node).ok_or_else(|| ClientError::Unsuited(format!("no node `{node}`")))?;
    read_state(&plan.lab).ok_or_else(|| ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() })?;
    // A route's POP is read off its AS path where each POP has its own transit; over an
    // AS-level internet `lab catchments` follows the routes to it instead.
    let own = match plan.namespaces[n.ns].role {
        Role::Pop(p) | Role::Transit(p) => p,
        Role::Router(_) => 0,
        _ => {
            return Err(unsuited(format!(
                "`{node}` runs no BGP speaker (POPs, transits and routers do: pop/NAME, transit/NAME, router/NETWORK/K)"
            )));
        }
    };
    let socket = crate::bird::speaker_socket(&state_dir(&plan.lab), &n.name);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    let mut routes = rt.block_on(crate::bird::vip_routes(&t, own, &socket))?;
    if matches!(plan.namespaces[n.ns].role, Role::Router(_)) {
        routes.iter_mut().for_each(|r| r.pop = None);
    }
    Ok(routes)
}

/// Each client group's POP as the lab's BGP selects it now, in the shape of the
/// simulator report's `clients` (`name`, `location`, `count`, and `pop`: the POP entered
/// for the group's first traffic class's VIP, `null` without a route), with the transit
/// the group hangs off and its POP for every VIP it sends to. A group with a `catchment:`
/// list is read from its own policy table at that transit.
pub fn catchments(file: &Path) -> Result<serde_json::Value, ClientError> {
    let (t, plan) = load(file)?;
    read_state(&plan.lab).ok_or_else(|| ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() })?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    if t.internet.has_ases() {
        return as_catchments(&t, &plan, &rt);
    }
    let dir = state_dir(&plan.lab);
    let mut clients = Vec::new();
    for (g, group) in t.clients.iter().enumerate() {
        let at = topology::bgp::attach(&t, g)
            .ok_or_else(|| unsuited(format!("client/{}: no POP to attach to", group.name)))?;
        let transit = format!("transit/{}", t.pops[at].name);
        let socket = crate::bird::speaker_socket(&dir, &transit);
        let routes = rt
            .block_on(crate::bird::group_routes(&t, g, &socket))
            .map_err(|e| ClientError::Answered { who: transit.clone(), said: e.to_string() })?;
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

/// [`catchments`] over an AS-level internet: each group's POP and AS path per VIP it
/// sends to, followed from its access router (`router`) along the routes the speakers
/// selected ([`crate::client::routes::way`]).
fn as_catchments(
    t: &topology::Topology,
    plan: &crate::plan::Plan,
    rt: &tokio::runtime::Runtime,
) -> Result<serde_json::Value, ClientError> {
    let net = t.internet.ways.internetwork(t);
    let mut clients = Vec::new();
    for (g, group) in t.clients.iter().enumerate() {
        let mut vips: Vec<usize> = group.traffic.iter().map(|&k| t.traffic[k].vip).collect();
        vips.dedup();
        let mut per_vip = Vec::new();
        for &v in &vips {
            let way = crate::client::routes::way(t, plan, rt, (g, v))?;
            let pop = way.pop.map(|p| t.pops[p].name.clone());
            per_vip.push(serde_json::json!({ "vip": t.vips[v].name, "pop": pop, "as_path": way.as_path }));
        }
        let router = plan.router_node(net.group_router(g).0);
        clients.push(serde_json::json!({
            "name": group.name,
            "location": group.location,
            "count": group.count,
            "pop": per_vip.first().map_or(serde_json::Value::Null, |v| v["pop"].clone()),
            "as_path": per_vip.first().map_or(serde_json::Value::Null, |v| v["as_path"].clone()),
            "router": router,
            "vips": per_vip,
        }));
    }
    Ok(serde_json::json!({ "lab": plan.lab, "clients": clients }))
}

/// Every running node's Prometheus metrics (or one node's), as their control sockets
/// give them.
pub fn metrics(file: &Path, node: Option<&str>) -> Result<String, ClientError> {
    let (_, plan) = load(file)?;
    if read_state(&plan.lab).is_none() {
        return Err(ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() });
    }
    let names: Vec<String> = match node {
        Some(n) => vec![plan.node(n).ok_or_else(|| ClientError::Unsuited(format!("no node `{n}`")))?.name.clone()],
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
pub fn exec(file: &Path, node: &str, command: &[String]) -> Result<i32, ClientError> {
    let (_, plan) = load(file)?;
    // A node name (`pop/paris`) or a namespace without the lab prefix (`client-london`).
    let prefixed = format!("{}-{node}", plan.lab);
    let ns = match plan.node(node) {
        Some(n) => &plan.namespaces[n.ns].name,
        None => match plan.namespaces.iter().find(|ns| ns.name == prefixed) {
            Some(ns) => &ns.name,
            None => {
                let names: Vec<&str> = plan.namespaces.iter().map(|ns| &ns.name[plan.lab.len() + 1..]).collect();
                return Err(unsuited(format!(
                    "no node or namespace `{node}` in lab `{}` (namespaces: {})",
                    plan.lab,
                    names.join(", ")
                )));
            }
        },
    };
    if read_state(&plan.lab).is_none() {
        return Err(ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() });
    }
    let status = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(command)
        // What runs there (`anyedge probe`) finds the lab's CA and client certificate.
        .env("ANYEDGE_LAB_PKI", crate::pki::dir(&state_dir(&plan.lab)))
        .status()
        .doing(|| format!("cannot run {command:?}"))?;
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
) -> Result<(), ClientError> {
    let out = std::path::absolute(out).at(out)?;
    let command = [exe.display().to_string(), "capture-here".into(), "-w".into(), out.display().to_string()]
        .into_iter()
        .chain(["--duration".to_string(), duration.to_string(), "--snaplen".to_string(), snaplen.to_string()])
        .collect::<Vec<String>>();
    match exec(file, node, &command)? {
        0 => Ok(()),
        code => Err(ClientError::Answered { who: node.to_string(), said: format!("capture failed (exit {code})") }),
    }
}

/// Stops one node's process (its namespace stays, like a crashed machine).
pub fn kill(file: &Path, node: &str) -> Result<(), ClientError> {
    let (_, plan) = load(file)?;
    let n = plan.node(node).ok_or_else(|| ClientError::Unsuited(format!("no node `{node}`")))?;
    let mut state =
        read_state(&plan.lab).ok_or_else(|| ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() })?;
    let name = plan.nodes.iter().find(|x| x.ns == n.ns).map(|x| x.name.clone()).unwrap_or_default();
    let pid = state.pids.remove(&name).ok_or_else(|| unsuited(format!("node `{name}` runs no process")))?;
    stop_node(pid, &name, &state_dir(&plan.lab));
    Ok(write_state(&state)?)
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) every process in a node's namespace — the node
/// and its BGP speaker — like a machine that hangs without a word: no session closes, only
/// BFD and timeouts notice. Returns how many processes it signalled.
pub fn freeze(file: &Path, node: &str, frozen: bool) -> Result<usize, ClientError> {
    let (_, plan) = load(file)?;
    let n = plan.node(node).ok_or_else(|| ClientError::Unsuited(format!("no node `{node}`")))?;
    read_state(&plan.lab).ok_or_else(|| ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() })?;
    let ns = &plan.namespaces[n.ns].name;
    let out = Command::new("ip").args(["netns", "pids", ns]).output().map_err(|source| SysError::NotRun {
        program: "ip",
        hint: " (is iproute2 installed?)",
        source,
    })?;
    let signal = if frozen { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
    let pids: Vec<i32> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    for &pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| SysError::Io { what: format!("pid {pid}"), source: e.into() })?;
    }
    Ok(pids.len())
}

/// Starts a stopped node again.
pub fn start(file: &Path, node: &str, exe: &Path) -> Result<(), ClientError> {
    let (_, plan) = load(file)?;
    let n = plan.node(node).ok_or_else(|| ClientError::Unsuited(format!("no node `{node}`")))?.clone();
    let mut state =
        read_state(&plan.lab).ok_or_else(|| ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() })?;
    if state.pids.get(&n.name).is_some_and(|&p| alive(p)) {
        return Err(unsuited(format!("node `{}` is already running", n.name)));
    }
    let pid = spawn_node(&plan, exe, &n.name)?;
    state.pids.insert(n.name.clone(), pid);
    let single = State { pids: [(n.name.clone(), pid)].into_iter().collect(), ..state.clone() };
    wait_ready(&plan, &single)?;
    Ok(write_state(&state)?)
}

/// Addresses of a lab's clients, for tests and `status`.
pub fn client_address(file: &Path, group: &str) -> Result<IpAddr, ClientError> {
    let (t, plan) = load(file)?;
    let g =
        t.clients.iter().position(|c| c.name == group).ok_or_else(|| unsuited(format!("no client group `{group}`")))?;
    plan.client_sources(g).first().copied().ok_or(crate::plan::PlanGap("a client group without an address").into())
}
