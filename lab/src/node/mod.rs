//! `anyedge node`: one node of a lab — the shipped sans-IO cores driven by tokio, a TUN
//! device and UDP sockets, on the wall clock. POP: VIP packets from the TUN device are
//! encapsulated toward the home region's CLB node. CLB: decapsulates, schedules, keeps
//! the client's address, and hands packets to backend hosts. Backend: a host with a
//! real kernel stack (its TUN device) and built-in UDP echo and TCP servers.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod backend;
pub mod bgp;
mod clb;
pub mod control;
pub mod drops;
pub mod egress;
pub mod forwarder;
pub mod grpc;
pub mod liveness;
pub mod pop;
pub mod relay;
pub mod reload;
pub mod servers;
pub mod watch;

use crate::error::{Doing, SysError};
use crate::layout::METRICS_PORT;
use crate::node::drops::Drops;
use crate::node::forwarder::Forwarder;
use crate::plan::{Plan, PlanGap, Role};

/// Why a node could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its rendered directory, checked before anything starts.
    #[error(transparent)]
    Config(#[from] crate::setup::SetupError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Bird(#[from] crate::bird::BirdError),
    #[error(transparent)]
    Plan(#[from] PlanGap),
    /// A gRPC endpoint or server (the control plane's, the backbone's).
    #[error("{what}: {source}")]
    Grpc {
        what: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The node is not in the topology it was rendered with, or is one that runs no process.
    #[error("node `{node}` {why}")]
    NotANode { node: String, why: String },
    /// A control node's Raft log could not be written: it cannot go on.
    #[error("{node}: {source}")]
    Store {
        node: String,
        #[source]
        source: anyedge_control::StepError,
    },
    /// The control node's core (its Raft log, its table) refused to go on.
    #[error("the control plane: {0}")]
    Control(#[from] anyedge_control::ControlError),
    /// One of the node's threads panicked.
    #[error("{0} panicked")]
    Panicked(String),
}

/// How long a status client may take to ask and to read the answer.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Status connections served at once; more are closed on arrival.
const STATUS_CONNECTIONS_MAX: usize = 64;

/// Where a node serves `/metrics`: its address on the backbone or on a region's network,
/// which no client routes to (a POP's tunnel address, a CLB node's and a backend host's
/// region side, a control node's backbone address, an egress node's region side); the
/// loopback for the rest (transits carry clients' packets, so clients reach their
/// addresses). `lab metrics` reads every node through its control socket.
pub fn metrics_addr(plan: &Plan, role: &Role) -> std::net::IpAddr {
    let addr = match *role {
        Role::Pop(p) => plan.pop_tunnel(p).map(|a| a.ip()),
        Role::Clb { region, index } => plan.clb_region_addr(region, index).map(std::net::IpAddr::V4),
        Role::Backend { ip, .. } => plan.backend_tunnel(ip).map(|a| a.ip()),
        Role::Control(id) => plan.control_addr(id).map(std::net::IpAddr::V4),
        Role::Egress { k, .. } => plan.egress_tunnel(k).map(|a| a.ip()),
        _ => None,
    };
    addr.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Runs the node rendered in `config` (see [`crate::setup::render`]) until it is killed.
pub fn run(config: &Path) -> Result<(), NodeError> {
    // Its Raft log, sockets and whatever else it writes are root's alone.
    crate::layout::private_files();
    // Levelled logs (RUST_LOG, default info) on stderr: `lab up` points it at the node's
    // log file in the state directory, systemd at the journal.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
    let rendered = crate::setup::render::load_node(config)?;
    let crate::setup::render::Rendered { dir: conf_dir, config, topology: t, plan } = rendered;
    let conf_dir = conf_dir.as_path();
    let state_dir = config.state.as_path();
    crate::layout::private_dir(state_dir)?;
    crate::layout::private_dir(&crate::layout::ready_dir(state_dir))?;
    let not_in = || NodeError::NotANode { node: config.node.clone(), why: "is not in this topology".into() };
    let node = plan.node(&config.node).ok_or_else(not_in)?.clone();
    let name = node.name.as_str();
    let role = plan.namespaces[node.ns].role.clone();
    let ready = crate::layout::ready_marker(state_dir, &node.name);
    let _ = std::fs::remove_file(&ready);
    let impair = config.impairments;
    let tun_queues = config.tun_queues.unwrap_or_else(crate::io::tunq::per_core);
    // Shaped hops release packets by sleeping until they are due: on time, not late by
    // the default 50 µs of timer slack each.
    crate::io::realtime::tight_timers()?;
    if config.realtime {
        crate::io::realtime::enter()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    let control = control_socket(state_dir, &node.name);
    let node_name = node.name.clone();
    rt.block_on(async move {
        // POPs and CLB nodes follow the replicated route table (when the file has one).
        let follower = match role {
            Role::Pop(_) | Role::Clb { .. } => {
                crate::node::watch::follow(&plan, anyedge_topology::route_table::route_table(&t), conf_dir, &node_name)
            }
            _ => None,
        };
        let applied = follower.as_ref().map(|f| (f.applied.clone(), f.lag_us.clone()));
        // …and take their own file's route table again on SIGHUP (`node::reload`).
        let follower = match role {
            Role::Pop(_) | Role::Clb { .. } => Some(crate::node::reload::attach(
                follower,
                conf_dir.to_path_buf(),
                anyedge_topology::route_table::route_table(&t),
                node_name.clone(),
            )),
            _ => follower,
        };
        // The others check their directory on SIGHUP and run on (`node::reload`); a control
        // node's gRPC server then reads its certificate again.
        let reloaded = match role {
            Role::Pop(_) | Role::Clb { .. } => None,
            _ => Some(crate::node::reload::check_on_hangup(conf_dir.to_path_buf(), node_name.clone())),
        };
        let drops = Drops::default();
        // POPs and CLB nodes seal and open backbone traffic with the keys `lab up` gave them.
        let keys = match role {
            Role::Backend { ip, .. } if plan.egress_of(ip).is_some() => anyedge_ccn::AuthConfig::default(),
            Role::Pop(_) | Role::Clb { .. } | Role::Backend { .. } | Role::Egress { .. } => {
                crate::pki::backbone_keys(conf_dir, &node_name)?
            }
            _ => anyedge_ccn::AuthConfig::default(),
        };
        // Control over a Unix socket: nothing of the lab's control plane rides on IP.
        let listener = tokio::net::UnixListener::bind(&control).at(&control)?;
        tokio::spawn(serve_control(listener, node_name.clone(), applied, drops.clone()));
        // Prometheus (`/metrics`) where no client routes to.
        let metrics = tokio::net::TcpListener::bind((metrics_addr(&plan, &role), METRICS_PORT)).await;
        match metrics {
            Ok(m) => {
                tokio::spawn(serve_metrics(m, node_name.clone(), drops.clone()));
            }
            Err(e) => tracing::warn!("{node_name}: no /metrics on port {METRICS_PORT}: {e}"),
        }
        tracing::info!("{node_name} starting ({:?}, pid {})", role, std::process::id());
        // Told to stop (`lab down`): its BGP speaker goes first, reaped.
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::spawn(async move {
                term.recv().await;
                crate::node::bgp::stop_all();
                std::process::exit(0);
            });
        }
        match role {
            Role::Pop(p) => {
                let node =
                    Forwarder { ready: &ready, impair, follower, drops, keys, state_dir, conf_dir, name: &node_name };
                crate::node::pop::run_pop(&t, &plan, p, node, tun_queues).await
            }
            Role::Clb { region, index } => {
                let node =
                    Forwarder { ready: &ready, impair, follower, drops, keys, state_dir, conf_dir, name: &node_name };
                crate::node::clb::ClbDriver::bind(&t, &plan, (region, index), node).await?.run().await
            }
            Role::Backend { ip, .. } => crate::node::backend::run(&t, &plan, ip, impair, &ready, (keys, drops)).await,
            Role::Egress { k, .. } => crate::node::egress::run(&t, &plan, k, &ready, (keys, drops)).await,
            Role::Transit(x) => crate::node::bgp::run_transit(&t, &plan, x, state_dir, (&ready, drops)).await,
            Role::Router(r) => {
                crate::node::bgp::run_router(&t, &plan, r, (&node_name, state_dir), (&ready, drops)).await
            }
            Role::Internet => {
                crate::node::bgp::run_reflector(&t, &plan, (&node_name, state_dir), (&ready, drops)).await
            }
            Role::Control(id) => {
                let reloaded = reloaded.ok_or(PlanGap("a control node without its reload channel"))?;
                crate::node::control::run(&t, &plan, id, (conf_dir, state_dir, impair), (&ready, drops, reloaded)).await
            }
            other => Err(NodeError::NotANode { node: name.to_string(), why: format!("({other:?}) runs no process") }),
        }
    })
}

/// A fresh control socket path for a node (an old socket file is removed).
fn control_socket(state_dir: &Path, node: &str) -> std::path::PathBuf {
    let path = crate::layout::node_socket(state_dir, node);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&path);
    path
}

/// Answers `status` with one JSON line: the node, its process, how long it has run, the
/// route-table log index it has applied and how long the last update took to reach it
/// (`applied_lag_ms`; nodes that follow the table), the packets its
/// core refused by reason (`drops`, POPs and CLB nodes) and the time packets spent inside
/// it (`residence`, forwarders and backend hosts); `reset-residence` starts that afresh.
async fn serve_control(
    listener: tokio::net::UnixListener,
    name: String,
    applied: Option<(Arc<std::sync::atomic::AtomicU64>, Arc<std::sync::atomic::AtomicU64>)>,
    drops: Drops,
) {
    let started = Instant::now();
    // Each connection on its own task with a deadline, a bounded number at once: an idle or
    // slow client cannot keep `lab status` from the node.
    let slots = Arc::new(tokio::sync::Semaphore::new(STATUS_CONNECTIONS_MAX));
    let name: Arc<str> = name.into();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        if !crate::layout::local_peer_allowed(&stream) {
            continue;
        }
        // Over the cap: closed at once.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let (name, applied, drops) = (name.clone(), applied.clone(), drops.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut line = [0u8; 64];
            let read = tokio::time::timeout(STATUS_TIMEOUT, stream.read(&mut line)).await;
            let Ok(Ok(n)) = read else { return };
            if let Some((a, lag_us)) = &applied {
                drops.set_gauge("route_table_applied", a.load(std::sync::atomic::Ordering::SeqCst));
                drops.set_gauge("route_table_lag_us", lag_us.load(std::sync::atomic::Ordering::SeqCst));
            }
            let reply = if line[..n].starts_with(b"metrics") {
                drops.prometheus(&name)
            } else if line[..n].starts_with(b"status") {
                let mut status = serde_json::json!({
                    "node": &*name,
                    "pid": std::process::id(),
                    "uptime_ms": started.elapsed().as_millis() as u64,
                    "drops": drops.to_json(),
                    "residence": drops.residence(),
                });
                for (section, value) in drops.sections() {
                    status[section] = value;
                }
                if let Some(reads) = drops.tun_reads() {
                    status["tun"] = serde_json::json!({ "queues": reads.len(), "packets_read": reads });
                    status["admin"] = drops.admin().name().into();
                    status["client_packets"] = drops.client_packets().into();
                }
                if let Some((a, lag_us)) = &applied {
                    status["applied"] = a.load(std::sync::atomic::Ordering::SeqCst).into();
                    let lag_ms = lag_us.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1000.0;
                    status["applied_lag_ms"] = lag_ms.into();
                }
                format!("{status}\n")
            } else if line[..n].starts_with(b"reset-residence") {
                drops.reset_residence();
                "{\"reset\": \"residence\"}\n".to_string()
            } else if let Some(admin) = admin_command(&line[..n]) {
                if name.starts_with("pop/") {
                    drops.set_admin(admin);
                    tracing::info!("{name}: {} (asked by ctl)", admin.name());
                    format!("{{\"admin\": \"{}\"}}\n", admin.name())
                } else {
                    "{\"error\": \"only a POP drains, stops or serves on request\"}\n".to_string()
                }
            } else {
                "{\"error\": \"unknown command (try status, metrics, reset-residence, drain, stop or undrain)\"}\n"
                    .to_string()
            };
            let _ = tokio::time::timeout(STATUS_TIMEOUT, stream.write_all(reply.as_bytes())).await;
        });
    }
}

/// `drain`, `stop` or `undrain` on a node's control socket: what `ctl drain` asks of a POP.
fn admin_command(line: &[u8]) -> Option<crate::node::drops::Admin> {
    use crate::node::drops::Admin;
    let word = line.split(|b| b.is_ascii_whitespace()).next()?;
    match word {
        b"drain" => Some(Admin::Draining),
        b"stop" => Some(Admin::Stopped),
        b"undrain" => Some(Admin::Serving),
        _ => None,
    }
}

/// Serves `GET /metrics` (Prometheus text) on the node's namespace: one request per
/// connection, bounded like the status socket.
async fn serve_metrics(listener: tokio::net::TcpListener, name: String, drops: Drops) {
    let slots = Arc::new(tokio::sync::Semaphore::new(STATUS_CONNECTIONS_MAX));
    let name: Arc<str> = name.into();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let (name, drops) = (name.clone(), drops.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut head = [0u8; 1024];
            let read = tokio::time::timeout(STATUS_TIMEOUT, stream.read(&mut head)).await;
            let Ok(Ok(n)) = read else { return };
            let reply = if head[..n].starts_with(b"GET /metrics ") {
                let body = drops.prometheus(&name);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = tokio::time::timeout(STATUS_TIMEOUT, stream.write_all(reply.as_bytes())).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_status_connections_do_not_keep_others_from_an_answer() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("anyedge-status-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("node.sock");
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            tokio::spawn(serve_control(listener, "pop/paris".into(), None, Drops::default()));
            // Idle clients that never ask, more than the node serves at once.
            let mut idle = Vec::new();
            for _ in 0..STATUS_CONNECTIONS_MAX + 10 {
                idle.push(tokio::net::UnixStream::connect(&path).await.unwrap());
            }
            // Once their deadline passes, a real question gets its answer.
            tokio::time::sleep(STATUS_TIMEOUT + std::time::Duration::from_millis(200)).await;
            let asked = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
                s.write_all(b"status\n").await.unwrap();
                let mut reply = String::new();
                s.read_to_string(&mut reply).await.unwrap();
                reply
            });
            let reply = asked.await.expect("answered while idle connections stay open");
            let status: serde_json::Value = serde_json::from_str(reply.trim()).unwrap();
            assert_eq!(status["node"], "pop/paris");
            drop(idle);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    /// What `python3`, run as uid 65534 (nobody), reads from the socket at `path` after
    /// asking `status`: the empty string when the node closed without an answer.
    fn status_as_nobody(path: &std::path::Path) -> String {
        use std::os::unix::process::CommandExt;
        // A closed connection may also show as a broken pipe or a reset: no answer either way.
        let script = r"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
try:
    s.sendall(b'status\n')
    print(s.recv(4096).decode(), end='')
except (BrokenPipeError, ConnectionResetError):
    pass
";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3 (CI installs it)");
        assert!(out.status.success(), "nobody connected: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    #[test]
    fn a_status_socket_anyone_may_open_still_answers_only_root_and_its_own_user() {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to run a client as another user (CI runs it as root)");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("anyedge-status-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.sock");
        // The worst a deployment could leave: everyone may reach and open the socket.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let listener = rt.block_on(async { tokio::net::UnixListener::bind(&path) }).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        rt.spawn(serve_control(listener, "pop/paris".into(), None, Drops::default()));
        // The client blocks on its own thread while the node's task runs on this one.
        let asked = path.clone();
        let nobody =
            rt.block_on(async { tokio::task::spawn_blocking(move || status_as_nobody(&asked)).await }).unwrap();
        assert_eq!(nobody, "", "nobody gets no answer");
        let root = rt.block_on(async {
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            s.write_all(b"status\n").await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        });
        assert!(root.contains("\"node\":\"pop/paris\""), "root is answered: {root}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
