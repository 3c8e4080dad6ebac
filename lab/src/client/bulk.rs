//! `anyedge bench bulk`: bulk TCP through the forwarder, measured by iperf3 (a tool
//! nobody here wrote) — from a client through a TCP listener of the VIP to an
//! `app: external` backend running `iperf3 -s`, and from the same client straight to the
//! same host — with impairments off, so the figures are the forwarder's and the kernels'
//! alone. It prints both rates, their ratio, the retransmissions, and the most memory
//! each node on the path held (its peak resident set).
//!
//! With `--peer nginx` the same client also sends through nginx's stream module (a
//! chain of `--peer-hops` processes in the region router's namespace, the last proxying
//! to the same host's direct address) in the same run: the user-space proxy the VIP path
//! is judged against.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyedge_topology::{App, ListenerProtocol, Topology};
use serde::Serialize;

use crate::client::{ClientError, Server, unsuited};
use crate::error::{Doing, SysError};
use crate::plan::{Plan, PlanGap, Role};
use crate::setup;

/// What `bench bulk` measured.
#[derive(Debug, Serialize)]
pub struct BulkFigures {
    /// The TCP listener the VIP path went through, and the backend behind it.
    pub listener: SocketAddr,
    pub backend: SocketAddr,
    /// The direct path's target: the same host's region address, same port.
    pub direct: SocketAddr,
    /// The client group whose namespace ran `iperf3 -c`.
    pub client: String,
    /// Seconds each iperf3 run lasted.
    pub seconds: u64,
    /// Whether every process on the measured paths ran SCHED_FIFO — the nodes, the peer's
    /// processes and iperf3 at both ends (`bench bulk`'s default, as `bench lab`'s:
    /// data-plane daemons run so in production, and so each figure is what the processes'
    /// CPU allows, not how soon the ordinary scheduler woke each stage of a pipeline).
    pub realtime: bool,
    /// iperf3's own version line.
    pub iperf3: String,
    pub vip: Transfer,
    pub direct_path: Transfer,
    /// VIP rate over direct rate.
    pub ratio: f64,
    /// Peak resident memory of each node the VIP path crosses, KiB (`VmHWM`).
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// The peer proxy measured in the same run (`--peer`).
    pub peer: Option<PeerBulk>,
}

/// Bulk TCP through a peer proxy in the same lab and run.
#[derive(Debug, Serialize)]
pub struct PeerBulk {
    pub name: String,
    /// Its processes chained one after another.
    pub hops: usize,
    /// What ran (version, where, chain), or why nothing did.
    pub what: String,
    /// What iperf3 measured through it (none when it did not run).
    pub through: Option<Transfer>,
    /// Its rate over the direct rate.
    pub ratio: Option<f64>,
    /// Peak resident memory of each of its processes, KiB.
    pub peak_rss_kib: BTreeMap<String, u64>,
}

/// One iperf3 run, as its receiver counted it.
#[derive(Debug, Serialize)]
pub struct Transfer {
    pub gbit_per_s: f64,
    pub bytes: u64,
    /// Segments the sender sent again.
    pub retransmits: u64,
}

/// Where `bench bulk` sends: the first TCP listener (or the one on `port`) whose backend
/// group is one IPv4 `app: external` backend — iperf3's control and data connections
/// must meet the same server — that backend, and the first client group.
struct Target {
    listener: SocketAddr,
    backend: SocketAddr,
    client: usize,
}

fn target(t: &Topology, port: Option<u16>) -> Result<Target, ClientError> {
    if t.clients.is_empty() {
        return Err(unsuited("bench bulk needs a client group".into()));
    }
    let client = 0;
    for vip in &t.vips {
        for l in vip.listeners.iter().filter(|l| l.protocol == ListenerProtocol::Tcp) {
            if port.is_some_and(|p| p != l.port) {
                continue;
            }
            let group = &t.regions[vip.home].backend_groups[l.backend_group];
            let [b] = group.backends.as_slice() else { continue };
            if b.app != App::External || !b.addr.is_ipv4() {
                continue;
            }
            let listener = SocketAddr::new(IpAddr::V4(vip.ipv4), l.port);
            return Ok(Target { listener, backend: b.addr, client });
        }
    }
    let which = port.map_or("a TCP listener".to_string(), |p| format!("a TCP listener on port {p}"));
    Err(unsuited(format!(
        "bench bulk needs {which} whose backend group is one IPv4 `app: external` backend (iperf3 -s runs there, and its control and data connections must meet it): see topologies/apps.yaml"
    )))
}

/// Time an iperf3 run may take past its `-t` (connecting, ending) before it is stopped.
const IPERF3_GRACE: Duration = Duration::from_secs(15);

/// One `iperf3 -c` run from `ns` to `to`, stopped if it outlasts its time.
/// One `iperf3 -c` run from `ns` to `to`, SCHED_FIFO when `realtime` (as the server and
/// the processes between them are, so no end is starved by the path it measures).
fn transfer(ns: &str, to: SocketAddr, seconds: u64, realtime: bool) -> Result<Transfer, ClientError> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-J", "-c", &to.ip().to_string(), "-p", &to.port().to_string()])
        .args(["-t", &seconds.to_string(), "--connect-timeout", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| SysError::NotRun { program: "ip netns exec iperf3", hint: "", source })?;
    if realtime {
        crate::io::realtime::make_fifo(child.id());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds) + IPERF3_GRACE;
    while child.try_wait().doing(|| "iperf3 -c".to_string())?.is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClientError::NotInTime(format!(
                "iperf3 -c {to} still running after {seconds} s and {} s more",
                IPERF3_GRACE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().doing(|| "iperf3 -c".to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let run: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ClientError::Json { what: format!("iperf3 -c {to}"), source })?;
    if let Some(e) = run["error"].as_str() {
        return Err(ClientError::Answered { who: format!("iperf3 -c {to}"), said: e.to_string() });
    }
    let end = &run["end"];
    Ok(Transfer {
        gbit_per_s: end["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// A process's peak resident set (`VmHWM`), KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `bench bulk`: through the VIP, straight to the host, and through `peer_hops` nginx
/// processes when asked (`Some(hops)`).
pub fn run(
    file: &Path,
    exe: &Path,
    port: Option<u16>,
    seconds: u64,
    peer_hops: Option<usize>,
    realtime: bool,
) -> Result<BulkFigures, ClientError> {
    let t = anyedge_topology::load(file)?;
    let plan = Plan::new(&t);
    let Target { listener, backend, client } = target(&t, port)?;
    let IpAddr::V4(host) = backend.ip() else { return Err(PlanGap("an IPv4 backend").into()) };
    let ns_of = |role: &Role| plan.ns_index(role).map(|i| plan.namespaces[i].name.clone());
    let client_ns = ns_of(&Role::Client(client)).ok_or(PlanGap("no client namespace"))?;
    let backend_ns = plan.node(&format!("backend/{host}")).map(|n| plan.namespaces[n.ns].name.clone());
    let backend_ns = backend_ns.ok_or(PlanGap("no backend host namespace"))?;
    let direct = plan.backend_direct_addr(host).ok_or(PlanGap("backend without a region address"))?;
    let direct = SocketAddr::new(IpAddr::V4(direct), backend.port());
    let version = Command::new("iperf3")
        .arg("--version")
        .output()
        .doing(|| "iperf3 --version (Debian: apt-get install iperf3)".to_string())?;
    let iperf3 = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("iperf3").trim().to_string();
    let options = setup::LabOptions { impairments: false, realtime, tun_queues: None };
    let state = setup::up_with(file, exe, options)?;
    let measured = (|| {
        // Listening, or it said why not (not installed, the port taken).
        let port = backend.port().to_string();
        let server = Server::start(&backend_ns, "iperf3", &["-s", "-p", &port], " (Debian: apt-get install iperf3)")?;
        if realtime {
            crate::io::realtime::make_fifo(server.pid());
        }
        let vip = transfer(&client_ns, listener, seconds, realtime)?;
        let direct_path = transfer(&client_ns, direct, seconds, realtime)?;
        let peer = match peer_hops {
            Some(hops) => Some(through_nginx(&t, &plan, (&client_ns, direct), seconds, (hops, realtime))?),
            None => None,
        };
        Ok::<_, ClientError>((vip, direct_path, peer))
    })();
    let on_path =
        |name: &str| name.starts_with("pop/") || name.starts_with("clb/") || *name == format!("backend/{host}");
    let peak_rss_kib = state
        .pids
        .iter()
        .filter(|(n, _)| on_path(n))
        .filter_map(|(n, &pid)| Some((n.clone(), peak_rss_kib(pid)?)))
        .collect();
    let down = setup::down(file);
    let (vip, direct_path, mut peer) = measured?;
    down?;
    let over_direct = |gbit: f64| if direct_path.gbit_per_s > 0.0 { gbit / direct_path.gbit_per_s } else { 0.0 };
    let ratio = over_direct(vip.gbit_per_s);
    if let Some(p) = peer.as_mut() {
        p.ratio = p.through.as_ref().map(|x| over_direct(x.gbit_per_s));
    }
    Ok(BulkFigures {
        listener,
        backend,
        direct,
        client: t.clients[client].name.clone(),
        seconds,
        realtime,
        iperf3,
        vip,
        direct_path,
        ratio,
        peak_rss_kib,
        peer,
    })
}

/// `hops` nginx stream TCP proxies chained in the region router's namespace, the last
/// proxying to `direct`, SCHED_FIFO when `realtime` as the nodes are; one iperf3 run from
/// `client_ns` through them.
fn through_nginx(
    t: &Topology,
    plan: &Plan,
    (client_ns, direct): (&str, SocketAddr),
    seconds: u64,
    (hops, realtime): (usize, bool),
) -> Result<PeerBulk, ClientError> {
    use crate::client::bench::{Nginx, Stream};
    let nginx = Nginx::start(t, plan, (direct, Stream::Tcp), realtime, hops);
    let (through, what) = match nginx.running() {
        Ok((listen, what)) => (Some(transfer(client_ns, listen, seconds, realtime)?), what.to_string()),
        Err(why) => (None, why.to_string()),
    };
    let pids = nginx.pids();
    let peak_rss_kib =
        pids.iter().enumerate().filter_map(|(i, &pid)| Some((format!("nginx/{i}"), peak_rss_kib(pid)?))).collect();
    Ok(PeerBulk { name: "nginx".into(), hops, what, through, ratio: None, peak_rss_kib })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies").join(name);
        anyedge_topology::load(&path).expect("a shipped topology")
    }

    #[test]
    fn bench_bulk_takes_a_tcp_listener_of_one_external_backend_and_says_why_it_refuses_others() {
        let apps = shipped("apps.yaml");
        let t = target(&apps, None).expect("apps.yaml has one");
        assert_eq!((t.listener.port(), t.backend.to_string().as_str()), (5201, "198.19.20.40:5201"));
        // Port 8000 is nginx's TCP listener: two backends, so iperf3's connections could part.
        let refused = target(&apps, Some(8000)).err().expect("refused").to_string();
        assert!(
            refused.contains("a TCP listener on port 8000 whose backend group is one IPv4 `app: external` backend")
        );
        let small = target(&shipped("small.yaml"), None).err().expect("refused").to_string();
        assert!(small.contains("see topologies/apps.yaml"), "{small}");
    }
}
