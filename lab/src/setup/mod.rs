//! `anyedge lab up|down|status|exec|kill|start`: bring a topology up as namespaces with
//! real node processes, look at it, and take it all down again — also after a crash,
//! from the state kept on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_topology::{self as topology, Topology};
use serde::{Deserialize, Serialize};

use crate::io::netns::{self, IpBatch, ip, ip_in, sysctl_in, sysctls_in};
use crate::layout::{node_log, ready_dir, ready_marker, state_dir};
mod converge;
pub mod hosts;
mod network;
mod processes;
pub mod render;
mod state;

use converge::*;
use network::*;
use processes::*;
pub(crate) use processes::{alive, spawn_node, stop_node, wait_ready};
pub use state::*;

use crate::error::{Doing, SysError};
use crate::plan::{BACKBONE_NET, INTERNET_NET, Plan, PlanGap, REGION_NET, Role, TUN_NAME};

/// Why a lab (or a host's part of a deployment) could not be brought up, reloaded or
/// taken down. Nothing is left half made: `up` takes down what it made before returning one.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Bird(#[from] crate::bird::BirdError),
    #[error(transparent)]
    Plan(#[from] PlanGap),
    /// `what` needs root.
    #[error(
        "{what} needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN: network namespaces, veth links, TUN devices): run it with sudo"
    )]
    NotRoot { what: String },
    /// The file's AS-level internet has more routers than a lab runs.
    #[error(
        "{}: its AS-level internet has {routers} routers, and a lab runs at most {max} (each is a namespace and a BGP speaker); `anyedge catchments` and `sim` take the file, and a lab takes one that names fewer places per network in `internet.ases`",
        file.display()
    )]
    AsInternetTooLarge { file: PathBuf, routers: usize, max: usize },
    /// The lab's address plan has no room for the file's links or networks.
    #[error("{}: {why}; `anyedge catchments` and `sim` take the file", file.display())]
    NoAddressRoom { file: PathBuf, why: &'static str },
    /// The lab named in `file` is up already, or its namespaces were left behind.
    #[error("lab `{lab}` is already up (or was left behind): run `anyedge lab down {}`", file.display())]
    AlreadyUp { lab: String, file: PathBuf },
    /// A host's part of a deployment is up already.
    #[error("host `{host}` is already up (namespace {namespace} exists): `anyedge host down` first")]
    HostUp { host: String, namespace: String },
    /// No lab of that name is running.
    #[error("lab `{0}` is not up")]
    NotUp(String),
    /// `lab reload` with a file whose nodes, addresses or links are not the running lab's.
    #[error(
        "{}: its nodes, addresses or links are not the running lab's: `lab reload` changes the route table only (lab down, then up)",
        file.display()
    )]
    NotTheRunningLab { file: PathBuf },
    /// A deployment directory rendered without `--hosts`.
    #[error("{}: not rendered with --hosts (no {})", dir.display(), missing.display())]
    NotRendered { dir: PathBuf, missing: PathBuf },
    /// A hosts file (`render --hosts`) that does not place the topology: where and what.
    #[error("{file}: {why}")]
    Hosts { file: String, why: String },
    /// No host of that name in the deployment's hosts file.
    #[error("no host `{host}` (hosts: {hosts})")]
    NoSuchHost { host: String, hosts: String },
    /// A node's rendered directory that does not hold what the node needs.
    #[error("{}: {why}", path.display())]
    NodeConfig { path: PathBuf, why: String },
    /// A JSON file of the lab's (the state, a node's configuration) that could not be written or read.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A TUN queue count out of range (`--tun-queues`, or a node's `tun_queues`).
    #[error("{at}: {source}")]
    Queues {
        at: String,
        #[source]
        source: crate::io::tunq::NotAQueueCount,
    },
    /// More of something than a lab holds.
    #[error("a lab holds at most {max} {what}")]
    TooMany { what: &'static str, max: usize },
    /// A namespace without a link the plan gives it.
    #[error("{namespace} has no link to {toward}")]
    NoLink { namespace: String, toward: &'static str },
    /// No node of that name in the lab.
    #[error("no node `{0}` in this lab")]
    NoSuchNode(String),
    /// A node process exited before it was ready; the end of its log.
    #[error("node {node} exited while starting:\n{log}")]
    NodeExited { node: String, log: String },
    /// Something the lab waits for did not come in time.
    #[error("{what} after {seconds} s: {waiting}")]
    NotReady { what: &'static str, seconds: u64, waiting: String },
    /// `lab down` could not remove these namespaces.
    #[error("namespaces left behind: {0:?}")]
    LeftBehind(Vec<String>),
}

/// Brings a topology up; on any failure everything made so far is taken down again.
pub fn up(file: &Path, exe: &Path) -> Result<State, SetupError> {
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

/// The most routers of an AS-level internet a lab runs, as measured on two cores:
/// `topologies/internet.yaml`'s 42 come up in 8–11 s; the default internet `anyedge
/// generate --internet` draws for 4 POPs and 10 groups (382 routers under the shape
/// fitted before the current one, the tier-1 networks at up to 36 places each; 243 now)
/// comes up in 86 s with another process busy on one of the
/// cores, its catchments the simulator's (`tests/lab_internet.rs`), and goes down in 14 s. Larger
/// labs were held back, in turn, by the kernel's neighbour tables (1,024 resolved entries
/// shared by every namespace: every neighbour is now permanent), by links one `ip` call
/// at a time (now a batch per namespace), by a link per pair of a network's routers that
/// outgrew the address pool (5,645 of them: now a segment per network), and by as many
/// iBGP sessions, whose keepalives and status queries kept two cores so busy that hold
/// timers expired (now one session per router, to its network's reflector).
pub const LAB_ROUTERS_MAX: usize = 450;

pub fn up_with(file: &Path, exe: &Path, options: LabOptions) -> Result<State, SetupError> {
    require_root("lab up")?;
    crate::bird::check_installed()?;
    let file = std::fs::canonicalize(file).at(file)?;
    let (t, plan) = load(&file)?;
    let routers = plan.namespaces.iter().filter(|n| matches!(n.role, Role::Router(_))).count();
    if routers > LAB_ROUTERS_MAX {
        return Err(SetupError::AsInternetTooLarge { file, routers, max: LAB_ROUTERS_MAX });
    }
    plan.address_room().map_err(|why| SetupError::NoAddressRoom { file: file.clone(), why })?;
    let prefix = format!("{}-", plan.lab);
    if read_state(&plan.lab).is_some() || !netns::list_with_prefix(&prefix).is_empty() {
        return Err(SetupError::AlreadyUp { lab: plan.lab.clone(), file });
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

fn build(t: &Topology, plan: &Plan, state: &mut State, exe: &Path, options: LabOptions) -> Result<(), SetupError> {
    let dir = state_dir(&plan.lab);
    // Everything under the state directory is root's alone: keys, logs, Raft logs, sockets.
    crate::layout::private_files();
    crate::layout::private_dir(&dir)?;
    std::fs::create_dir_all(ready_dir(&dir)).at(&dir)?;
    if let Some(n) = options.tun_queues {
        crate::io::tunq::check_count(n).map_err(|source| SetupError::Queues { at: "--tun-queues".into(), source })?;
    }
    network(t, plan, state, None)?;
    // Every node rendered as `anyedge render` renders it (its keys, certificates and
    // options, in the state directory), and started from that.
    let text = std::fs::read_to_string(&state.topology).at(&state.topology)?;
    let opts = render::RenderOptions {
        ca: None,
        state: Some(dir.clone()),
        no_impairments: !options.impairments,
        realtime: options.realtime,
        tun_queues: options.tun_queues,
        hosts: None,
    };
    let base = state.topology.parent().unwrap_or(Path::new("."));
    render::render_lab((t, base), &text, plan, &dir, &opts)?;
    start_nodes(plan, state, exe)?;
    wait_ready(plan, state)?;
    wait_converged(t, plan)
}

/// `lab reload FILE`: the running lab takes FILE's route table (weights, bindings,
/// listeners) without a restart: every node's rendered directory gets the file, then
/// every node a SIGHUP (`node::reload`); POPs and CLB nodes apply the difference to their
/// running cores, flows staying where they are, and gRPC servers take their directory's
/// certificate for new connections. A file whose nodes, addresses or links differ
/// from the running lab's is refused, and nothing changes. Returns the nodes signalled.
pub fn reload(file: &Path, new_vip_certificates: bool, new_node_certificates: bool) -> Result<Vec<String>, SetupError> {
    require_root("lab reload")?;
    let (t, plan) = load(file)?;
    let state = read_state(&plan.lab).ok_or_else(|| SetupError::NotUp(plan.lab.clone()))?;
    let dir = state_dir(&plan.lab);
    // What the nodes run now: the copy rendered for them.
    let running = running_topology(&dir, &plan)?;
    let (_, old) = load(&running)?;
    let shape = |p: &Plan| {
        let ns: Vec<String> = p.namespaces.iter().map(|n| format!("{} {:?}", n.name, n.role)).collect();
        (ns, format!("{:?}", p.links))
    };
    if shape(&old) != shape(&plan) {
        return Err(SetupError::NotTheRunningLab { file: file.to_path_buf() });
    }
    let text = std::fs::read_to_string(file).at(file)?;
    render::rerender_lab(&text, &plan, &dir)?;
    if new_vip_certificates {
        render::renew_vip_certificates((&t, file.parent().unwrap_or(Path::new("."))), &plan, &dir)?;
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
fn running_topology(dir: &Path, plan: &Plan) -> Result<PathBuf, SetupError> {
    let node = render::process_nodes(plan).into_iter().next().ok_or(PlanGap("no nodes"))?;
    Ok(render::node_dir(&render::nodes_dir(dir), &node).join(render::TOPOLOGY_FILE))
}

/// `anyedge host up DIR --host NAME`: host NAME's part of the deployment `render --hosts`
/// wrote into DIR — its namespaces, the veths between them, its ends of the links to other
/// hosts (the backbone routed over the underlay through the host's own namespace, other
/// links VXLAN), and its namespaces' routes. Nodes are not started: on
/// each host, `ip netns exec NS anyedge node --config DIR/NODE` (or systemd) runs them.
/// Anything made is removed again when a step fails. Returns the namespaces made.
pub fn host_up(dir: &Path, host: &str) -> Result<Vec<String>, SetupError> {
    require_root("host up")?;
    let (t, plan, placement) = deployment(dir)?;
    let me = placement.host(host)?;
    let mine: Vec<String> = (0..plan.namespaces.len())
        .filter(|&i| placement.host_of[i] == me)
        .map(|i| plan.namespaces[i].name.clone())
        .collect();
    let there = netns::list_with_prefix(&format!("{}-", plan.lab));
    if let Some(ns) = mine.iter().find(|ns| there.contains(ns)) {
        return Err(SetupError::HostUp { host: host.to_string(), namespace: ns.clone() });
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
pub fn host_down(dir: &Path, host: &str) -> Result<Vec<String>, SetupError> {
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
fn deployment(dir: &Path) -> Result<(Topology, Plan, hosts::Placement), SetupError> {
    let (t, plan) = load(&dir.join(render::TOPOLOGY_FILE))?;
    let file = dir.join(render::HOSTS_FILE);
    if !file.exists() {
        return Err(SetupError::NotRendered { dir: dir.to_path_buf(), missing: file });
    }
    let placement = hosts::load(&file, &t, &plan)?;
    Ok((t, plan, placement))
}

/// Takes a lab down: its processes, namespaces, links, devices and state.
pub fn down(file: &Path) -> Result<(), SetupError> {
    let (_, plan) = load(file)?;
    let state = read_state(&plan.lab).unwrap_or(State {
        lab: plan.lab.clone(),
        topology: file.to_path_buf(),
        namespaces: Vec::new(),
        pids: BTreeMap::new(),
    });
    teardown(&state);
    let left = netns::list_with_prefix(&format!("{}-", plan.lab));
    if left.is_empty() { Ok(()) } else { Err(SetupError::LeftBehind(left)) }
}
