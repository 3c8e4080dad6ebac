//! `anyedge bench lab`: how fast the forwarder is on real packets, impairments off — the
//! most round trips a second a windowed load gets through the VIP path (client, POP, CLB,
//! backend) and straight from the client to the backend, and the latency the VIP path
//! adds at a steady 10,000 round trips a second.

use crate::client::{ClientError, unsuited};
use crate::error::{Doing, SysError};
use crate::plan::PlanGap;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::plan::{Plan, Role};
use crate::setup;

#[derive(Debug, Serialize)]
pub struct LabFigures {
    pub pps: f64,
    pub direct_pps: f64,
    pub added_p50_us: i64,
    pub added_p99_us: i64,
    pub added_p999_us: i64,
    /// The latencies the added figures come from, VIP and direct: p50, p99, p99.9, each the
    /// median over the paced rounds. An added figure below zero means that quantile is
    /// machine noise, not the path.
    pub vip_rtt_us: [u64; 3],
    pub direct_rtt_us: [u64; 3],
    /// Nodes and probe ran SCHED_FIFO (both paths alike; see [`crate::io::realtime`]).
    pub realtime: bool,
    /// Queues the POP read its TUN device with.
    pub tun_queues: usize,
    /// `--peer nginx`: the same load through nginx stream UDP proxies (one, or a chain of
    /// `--peer-hops` processes) between the same client and backend, measured in the same
    /// run (absent without `--peer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerFigures>,
    /// `--breakdown`: the time packets spent inside each node of the VIP path during the
    /// paced rounds, from the nodes' own timestamps (empty without `--breakdown`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<HopFigures>,
    /// What the paced rounds cost the host, path by path.
    pub cpu: CpuFigures,
    /// Peak resident memory (`VmHWM`, KiB) of each node on the VIP path and each peer
    /// process, read at the end of the run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peak_rss_kib: BTreeMap<String, u64>,
}

/// The host's CPU during the paced rounds (see [`crate::io::cpu`]), and the kernel's
/// real-time budget the rounds ran under.
#[derive(Debug, Clone, Serialize)]
pub struct CpuFigures {
    pub vip: PathCpu,
    pub direct: PathCpu,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PathCpu>,
    /// `kernel.sched_rt_runtime_us` and `sched_rt_period_us` (-1: no limit; absent where
    /// the kernel does not say).
    pub rt_runtime_us: Option<i64>,
    pub rt_period_us: Option<u64>,
}

/// What one path's paced rounds cost the host; each figure the median over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct PathCpu {
    /// Host CPU time (every core: processes, and the kernel's forwarding in between) per
    /// answered round trip, µs.
    pub per_round_trip_us: f64,
    /// Of that, by process: `probe`, the lab's nodes by role (`pop`, `clb`, `backend`, …;
    /// the kernel's forwarding counts to the process whose send carried the packet), the
    /// peer's processes (`nginx`, in its rounds), and `other` (every other process, and
    /// interrupts on idle cores).
    pub by_process_us: BTreeMap<String, f64>,
    /// How long the nodes of each role (and the peer's processes) were runnable but
    /// waiting for a CPU, per answered round trip, µs (the kernel's real-time stop counts
    /// here).
    pub waited_us: BTreeMap<String, f64>,
    /// The host's busy share over the round (wall time less idle time), all cores, %.
    pub host_busy_pct: f64,
    /// The busiest core's busiest second of the round, % (past the real-time budget the
    /// kernel stops SCHED_FIFO tasks on that core for the rest of the period).
    pub busiest_core_second_pct: f64,
}

/// How long packets going one way spent inside one node of the VIP path: from the
/// wake-up that read them to the send that let them go (a batch's packets all count the
/// batch's whole pass). Each quantile is the median over the paced rounds; the node is
/// the busiest of its role in each round.
#[derive(Debug, Clone, Serialize)]
pub struct HopFigures {
    /// `pop`, `clb` or `backend` (the backend host's tunnel end).
    pub hop: &'static str,
    /// `request` (toward the backend) or `reply` (toward the client).
    pub way: &'static str,
    /// The node, as in the busiest round's status.
    pub node: String,
    pub packets: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// What `bench lab` runs beside its defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabBench<'a> {
    /// Nodes and probes SCHED_FIFO.
    pub realtime: bool,
    pub tun_queues: Option<usize>,
    pub peer: Option<&'a str>,
    /// nginx processes chained one after another (`--peer-hops`; 1 when 0): three is as
    /// many user-space passes each way as the VIP path's POP, CLB node and tunnel end.
    pub peer_hops: usize,
    /// Per-hop residence (`--breakdown`).
    pub breakdown: bool,
}

/// A peer proxy measured beside anyedge, or why it could not be.
#[derive(Debug, Serialize)]
pub struct PeerFigures {
    pub name: String,
    /// Peer processes a round trip crosses each way (chained, each its own process).
    pub hops: usize,
    /// What ran (e.g. `nginx/1.22.1, stream module, 1 worker`), or why nothing did.
    pub what: String,
    pub measured: bool,
    pub pps: f64,
    /// Round trips at 10,000/s through the peer: p50, p99, p99.9 (median of the rounds).
    pub rtt_us: [u64; 3],
    /// The peer's latency over the direct path's at the same quantiles.
    pub added_p50_us: i64,
    pub added_p99_us: i64,
    pub added_p999_us: i64,
}

/// The peers `bench lab --peer` knows.
pub const PEERS: [&str; 1] = ["nginx"];

/// Load phases: seconds of windowed load, and of paced load.
const PHASE: Duration = Duration::from_secs(3);
/// Paced phases per path for the latency figures (their median is reported).
const LATENCY_ROUNDS: usize = 3;

/// The median of each quantile over several phases.
fn median_each(rounds: &[[u64; 3]]) -> [u64; 3] {
    std::array::from_fn(|i| {
        let mut xs: Vec<u64> = rounds.iter().map(|r| r[i]).collect();
        xs.sort_unstable();
        xs.get(xs.len() / 2).copied().unwrap_or(0)
    })
}

pub fn run(file: &Path, exe: &Path, options: LabBench<'_>) -> Result<LabFigures, ClientError> {
    let LabBench { realtime, tun_queues, peer, peer_hops, breakdown } = options;
    let peer_hops = peer_hops.max(1);
    if peer_hops > MAX_PEER_HOPS {
        return Err(unsuited(format!("--peer-hops {peer_hops}: at most {MAX_PEER_HOPS}")));
    }
    if let Some(p) = peer.filter(|p| !PEERS.contains(p)) {
        return Err(unsuited(format!("--peer {p}: the peers are {}", PEERS.join(", "))));
    }
    let t = anyedge_topology::load(file)?;
    let plan = Plan::new(&t);
    let (client_ns, vip, direct) = targets(&t, &plan)?;
    let state = setup::up_with(file, exe, setup::LabOptions { impairments: false, realtime, tun_queues })?;
    // The peer runs in the direct path's region router namespace, on its internet-facing
    // address: client → nginx → backend, one hop, the same client and backend.
    let nginx = peer.map(|_| Nginx::start(&t, &plan, (direct, Stream::Udp), realtime, peer_hops));
    let queues = tun_queues.unwrap_or_else(crate::io::tunq::per_core);
    let hops = breakdown.then(|| path_nodes(&plan));
    let result = measure(
        &plan,
        exe,
        &client_ns,
        (vip, direct),
        (realtime, queues),
        nginx.as_ref(),
        (hops.as_ref(), &state.pids),
    );
    // The most memory each forwarding node and peer process held, before they stop.
    let on_path = |name: &str| ["pop/", "clb/", "backend/"].iter().any(|p| name.starts_with(p));
    let mut peak: BTreeMap<String, u64> = state
        .pids
        .iter()
        .filter(|(n, _)| on_path(n))
        .filter_map(|(n, &pid)| Some((n.clone(), crate::client::bulk::peak_rss_kib(pid)?)))
        .collect();
    if let Some(n) = nginx.as_ref() {
        let pids = n.pids().into_iter().enumerate();
        peak.extend(pids.filter_map(|(i, pid)| Some((format!("nginx/{i}"), crate::client::bulk::peak_rss_kib(pid)?))));
    }
    drop(nginx);
    let down = setup::down(file);
    let mut figures = result?;
    down?;
    figures.peak_rss_kib = peak;
    Ok(figures)
}

/// Port the first nginx peer listens on (the region router's address); the next in a
/// chain listens on the next port.
const NGINX_PORT: u16 = 7_990;
/// The longest nginx chain `--peer-hops` runs.
pub const MAX_PEER_HOPS: usize = 8;

/// What an nginx stream proxy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Udp,
    Tcp,
}

/// nginx stream proxies (UDP for `bench lab`, TCP for `bench bulk`) for the length of a
/// benchmark (stopped when dropped), or the reason they could not start.
pub(crate) enum Nginx {
    Running {
        children: Vec<std::process::Child>,
        listen: SocketAddr,
        hops: usize,
        what: String,
        dir: std::path::PathBuf,
    },
    Missing {
        hops: usize,
        why: String,
    },
}

impl Nginx {
    /// `hops` nginx processes chained in the region router's namespace, the last proxying
    /// to `backend` over `stream`.
    pub(crate) fn start(
        t: &anyedge_topology::Topology,
        plan: &Plan,
        backend: (SocketAddr, Stream),
        realtime: bool,
        hops: usize,
    ) -> Nginx {
        let dir = crate::layout::state_dir(&plan.lab).join("nginx");
        let mut children = Vec::new();
        match Nginx::try_start(t, plan, backend, realtime, hops, &dir, &mut children) {
            Ok((listen, what)) => Nginx::Running { children, listen, hops, what, dir },
            Err(why) => {
                stop_all(&mut children, &dir);
                Nginx::Missing { hops, why: why.to_string() }
            }
        }
    }

    /// Starts `hops` nginx processes, the last proxying to `backend` and each other one to
    /// the next; returns where the first listens and what ran.
    fn try_start(
        t: &anyedge_topology::Topology,
        plan: &Plan,
        (backend, stream): (SocketAddr, Stream),
        realtime: bool,
        hops: usize,
        dir: &Path,
        children: &mut Vec<std::process::Child>,
    ) -> Result<(SocketAddr, String), ClientError> {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or(ClientError::Unsuited(
                "nginx is not installed (Debian: apt-get install nginx-light libnginx-mod-stream)".into(),
            ))?;
        let version = Command::new(bin).arg("-V").output().doing(|| format!("{bin} -V"))?;
        let built = String::from_utf8_lossy(&version.stderr).to_string();
        let name = built.lines().next().unwrap_or("nginx").trim_start_matches("nginx version: ").to_string();
        // The stream module: built in, or a dynamic module to load.
        let module = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/local/nginx/modules/ngx_stream_module.so"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let load = match (built.contains("--with-stream "), built.contains("--with-stream=dynamic"), module) {
            (true, _, _) => String::new(),
            (_, _, Some(m)) => format!("load_module {m};\n"),
            _ => {
                return Err(unsuited(format!(
                    "{name} has no stream module (Debian: apt-get install libnginx-mod-stream)"
                )));
            }
        };
        let region = t.vips.first().map(|v| v.home).ok_or(ClientError::Unsuited("no VIP".into()))?;
        let addr = plan
            .region_internet_addr(region)
            .ok_or(ClientError::Unsuited("the region router has no internet address".into()))?;
        let ns = plan.ns_index(&Role::RegionNet(region)).map(|i| plan.namespaces[i].name.clone());
        let ns = ns.ok_or(PlanGap("no region router namespace"))?;
        let listen_at = |i: usize| SocketAddr::new(IpAddr::V4(addr), NGINX_PORT + i as u16);
        // The last first, so each process's upstream listens before it starts.
        for i in (0..hops).rev() {
            let upstream = if i + 1 == hops { backend } else { listen_at(i + 1) };
            let d = dir.join(i.to_string());
            let to = (listen_at(i), upstream, stream);
            children.push(Nginx::spawn(bin, &load, &ns, &d, to, &name, realtime)?);
        }
        let chain = if hops == 1 { "1 process".to_string() } else { format!("{hops} processes chained") };
        let what = format!("{name}, stream module, 1 worker each, {chain}, in {ns} at {} → {backend}", listen_at(0));
        Ok((listen_at(0), what))
    }

    /// The port the first of the chain listens on and what ran, or why nothing did.
    pub(crate) fn running(&self) -> Result<(SocketAddr, &str), &str> {
        match self {
            Nginx::Running { listen, what, .. } => Ok((*listen, what)),
            Nginx::Missing { why, .. } => Err(why),
        }
    }

    /// The pids of its processes, first of the chain first.
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            Nginx::Running { children, .. } => children.iter().rev().map(std::process::Child::id).collect(),
            Nginx::Missing { .. } => Vec::new(),
        }
    }

    /// One nginx process proxying `stream` from `listen` to `upstream`, started and running.
    fn spawn(
        bin: &str,
        load: &str,
        ns: &str,
        dir: &Path,
        (listen, upstream, stream): (SocketAddr, SocketAddr, Stream),
        name: &str,
        realtime: bool,
    ) -> Result<std::process::Child, ClientError> {
        std::fs::create_dir_all(dir).at(dir)?;
        let udp = if stream == Stream::Udp { " udp" } else { "" };
        let conf = format!(
            "{load}worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             stream {{\n  upstream backend {{ server {upstream}; }}\n  \
             server {{ listen {listen}{udp}; proxy_pass backend; proxy_timeout 30s; }}\n}}\n",
            d = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).at(&conf_path)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, bin, "-p"]).arg(dir).arg("-c").arg(&conf_path);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().doing(|| format!("cannot start {bin}"))?;
        // Listening, or it said why not.
        super::started(&mut child, name, "")?;
        if realtime {
            // Same scheduling as the nodes it is compared with.
            crate::io::realtime::make_fifo(child.id());
        }
        Ok(child)
    }
}

/// Stops every started peer process and removes their files.
fn stop_all(children: &mut Vec<std::process::Child>, dir: &Path) {
    for mut child in children.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Nginx::Running { children, dir, .. } = self {
            stop_all(children, dir);
        }
    }
}

/// The first client group, its first UDP traffic class's VIP, and a backend of it.
fn targets(t: &anyedge_topology::Topology, plan: &Plan) -> Result<(String, SocketAddr, SocketAddr), ClientError> {
    let class = t
        .traffic
        .iter()
        .find(|c| matches!(c.kind, anyedge_topology::TrafficKind::Udp { .. }))
        .ok_or(ClientError::Unsuited("bench lab needs a UDP traffic class".into()))?;
    let g = t.clients.iter().position(|c| c.traffic.contains(&t.traffic.iter().position(|x| x == class).unwrap_or(0)));
    let g = g.ok_or(ClientError::Unsuited("no client group sends the UDP traffic class".into()))?;
    let ns = plan.ns_index(&Role::Client(g)).ok_or(PlanGap("no client namespace"))?;
    let vip = &t.vips[class.vip];
    let listener =
        vip.listeners.iter().find(|l| l.port == class.port).ok_or(ClientError::Unsuited("no listener".into()))?;
    let backend = t.regions[vip.home].backend_groups[listener.backend_group]
        .backends
        .first()
        .ok_or(ClientError::Unsuited("no backend".into()))?;
    let IpAddr::V4(host) = backend.addr.ip() else {
        return Err(ClientError::Unsuited("bench lab needs an IPv4 backend".into()));
    };
    let direct = plan.backend_direct_addr(host).ok_or(PlanGap("backend without a region address"))?;
    Ok((
        plan.namespaces[ns].name.clone(),
        SocketAddr::new(IpAddr::V4(vip.ipv4), class.port),
        SocketAddr::new(IpAddr::V4(direct), backend.addr.port()),
    ))
}

fn probe(
    plan: &Plan,
    exe: &Path,
    ns: &str,
    target: SocketAddr,
    load: &[String],
) -> Result<serde_json::Value, ClientError> {
    let report = crate::layout::state_dir(&plan.lab).join(format!("bench-{}.json", target.port()));
    let secs = format!("{}s", PHASE.as_secs());
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["probe", "--target", &target.to_string(), "--protocol", "udp", "--duration", &secs])
        .args(load)
        .arg("--json")
        .arg(&report)
        .output()
        .map_err(|source| SysError::NotRun { program: "ip netns exec", hint: "", source })?;
    if !out.status.success() {
        return Err(ClientError::Answered { who: "probe".into(), said: String::from_utf8_lossy(&out.stderr).into() });
    }
    let text = std::fs::read_to_string(&report).at(&report)?;
    serde_json::from_str(&text).map_err(|source| ClientError::Json { what: report.display().to_string(), source })
}

fn measure(
    plan: &Plan,
    exe: &Path,
    ns: &str,
    (vip, direct): (SocketAddr, SocketAddr),
    (realtime, tun_queues): (bool, usize),
    nginx: Option<&Nginx>,
    (hops, pids): (Option<&Hops>, &BTreeMap<String, u32>),
) -> Result<LabFigures, ClientError> {
    let args = |load: &[&str]| -> Vec<String> {
        load.iter().map(|s| s.to_string()).chain(realtime.then(|| "--realtime".to_string())).collect()
    };
    let windowed = args(&["--window", "32", "--flows", "8"]);
    let pps = |r: &serde_json::Value| r["received"].as_f64().unwrap_or(0.0) / PHASE.as_secs_f64();
    let vip_max = probe(plan, exe, ns, vip, &windowed)?;
    let direct_max = probe(plan, exe, ns, direct, &windowed)?;
    let peer_at = match nginx {
        Some(Nginx::Running { listen, .. }) => Some(*listen),
        _ => None,
    };
    // The peer's rounds count its processes as `nginx`, beside the nodes.
    let mut peer_pids = pids.clone();
    if let Some(Nginx::Running { children, .. }) = nginx {
        for (i, c) in children.iter().enumerate() {
            peer_pids.insert(format!("nginx/{i}"), c.id());
        }
    }
    let peer_max = match peer_at {
        Some(at) => Some(probe(plan, exe, ns, at, &windowed)?),
        None => None,
    };
    let paced = args(&["--rate", "10000", "--flows", "16"]);
    // Tails on 2 shared cores swing from one phase to the next: alternate the two paths
    // LATENCY_ROUNDS times and keep each quantile's median over the rounds.
    let q = |r: &serde_json::Value| ["p50", "p99", "p999"].map(|k| r["rtt_us"][k].as_u64().unwrap_or(0));
    let (mut vs, mut ds, mut ps, mut rs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut vc, mut dc, mut pc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..LATENCY_ROUNDS {
        if let Some(hops) = hops {
            reset_residence(plan, hops);
        }
        let (r, c) = costed(pids, || probe(plan, exe, ns, vip, &paced))?;
        vs.push(q(&r));
        vc.push(c);
        if let Some(hops) = hops {
            rs.push(residence(plan, hops));
        }
        let (r, c) = costed(pids, || probe(plan, exe, ns, direct, &paced))?;
        ds.push(q(&r));
        dc.push(c);
        if let Some(at) = peer_at {
            let (r, c) = costed(&peer_pids, || probe(plan, exe, ns, at, &paced))?;
            ps.push(q(&r));
            pc.push(c);
        }
    }
    let budget = crate::io::cpu::rt_budget();
    let cpu = CpuFigures {
        vip: median_cpu(&vc),
        direct: median_cpu(&dc),
        peer: (!pc.is_empty()).then(|| median_cpu(&pc)),
        rt_runtime_us: budget.map(|b| b.0),
        rt_period_us: budget.map(|b| b.1),
    };
    let (v, d) = (median_each(&vs), median_each(&ds));
    let peer = nginx.map(|n| match n {
        Nginx::Running { what, hops, .. } => {
            let p = median_each(&ps);
            PeerFigures {
                name: "nginx".into(),
                hops: *hops,
                what: what.clone(),
                measured: true,
                pps: peer_max.as_ref().map(|r| pps(r).round()).unwrap_or(0.0),
                rtt_us: p,
                added_p50_us: p[0] as i64 - d[0] as i64,
                added_p99_us: p[1] as i64 - d[1] as i64,
                added_p999_us: p[2] as i64 - d[2] as i64,
            }
        }
        Nginx::Missing { hops, why } => PeerFigures {
            name: "nginx".into(),
            hops: *hops,
            what: format!("not measured: {why}"),
            measured: false,
            pps: 0.0,
            rtt_us: [0; 3],
            added_p50_us: 0,
            added_p99_us: 0,
            added_p999_us: 0,
        },
    });
    Ok(LabFigures {
        pps: pps(&vip_max).round(),
        direct_pps: pps(&direct_max).round(),
        added_p50_us: v[0] as i64 - d[0] as i64,
        added_p99_us: v[1] as i64 - d[1] as i64,
        added_p999_us: v[2] as i64 - d[2] as i64,
        vip_rtt_us: v,
        direct_rtt_us: d,
        realtime,
        tun_queues,
        peer,
        breakdown: breakdown_of(&rs),
        cpu,
        peak_rss_kib: BTreeMap::new(),
    })
}

/// Runs one probe (a child process the closure waits for) and measures what it cost the
/// host: all cores' busy time, the lab's nodes' time on a CPU and waiting for one, by
/// role, and the probe's, per answered round trip.
fn costed(
    pids: &BTreeMap<String, u32>,
    run: impl FnOnce() -> Result<serde_json::Value, ClientError>,
) -> Result<(serde_json::Value, PathCpu), ClientError> {
    use crate::io::cpu;
    let role = |node: &str| node.split('/').next().unwrap_or(node).to_string();
    let nodes_before: Vec<(String, u32, (u64, u64))> =
        pids.iter().filter_map(|(n, &pid)| Some((role(n), pid, cpu::process_sched(pid)?))).collect();
    let children_before = cpu::children_cpu();
    let sampler = cpu::Sampler::start();
    let report = run();
    let samples = sampler.finish();
    let report = report?;
    let probe_us = (cpu::children_cpu().saturating_sub(children_before)).as_secs_f64() * 1e6;
    let answered = report["received"].as_f64().unwrap_or(0.0).max(1.0);
    let (mut by_process, mut waited) = (BTreeMap::<String, f64>::new(), BTreeMap::<String, f64>::new());
    for (r, pid, before) in nodes_before {
        if let Some(after) = cpu::process_sched(pid) {
            *by_process.entry(r.clone()).or_default() += after.0.saturating_sub(before.0) as f64 / 1e3 / answered;
            *waited.entry(r).or_default() += after.1.saturating_sub(before.1) as f64 / 1e3 / answered;
        }
    }
    // Nodes off the path (a second POP, a transit) did next to nothing: under 1 µs a round trip.
    by_process.retain(|_, us| *us >= 1.0);
    waited.retain(|r, _| by_process.contains_key(r));
    by_process.insert("probe".into(), probe_us / answered);
    let tps = cpu::ticks_per_s();
    let (host_busy_pct, per_round_trip_us) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => {
            let busy = cpu::busy_pct(a, b, 0, tps);
            let cpu_s = busy / 100.0 * b.at.saturating_duration_since(a.at).as_secs_f64() * a.cores() as f64;
            (busy, cpu_s * 1e6 / answered)
        }
        _ => (0.0, 0.0),
    };
    let listed: f64 = by_process.values().sum();
    by_process.insert("other".into(), (per_round_trip_us - listed).max(0.0));
    let window = (Duration::from_secs(1).as_millis() / cpu::SAMPLE_EVERY.as_millis()) as usize;
    Ok((
        report,
        PathCpu {
            per_round_trip_us,
            by_process_us: by_process,
            waited_us: waited,
            host_busy_pct,
            busiest_core_second_pct: cpu::busiest_window_pct(&samples, window, tps),
        },
    ))
}

/// Each figure's median over the rounds.
fn median_cpu(rounds: &[PathCpu]) -> PathCpu {
    let med = |f: &dyn Fn(&PathCpu) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    // A map's median, key by key over every key any round has (0 where a round lacks it).
    let med_map = |of: fn(&PathCpu) -> &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        let keys: std::collections::BTreeSet<&String> = rounds.iter().flat_map(|r| of(r).keys()).collect();
        keys.into_iter().map(|k| (k.clone(), med(&|r| of(r).get(k).copied().unwrap_or(0.0)))).collect()
    };
    PathCpu {
        per_round_trip_us: med(&|r| r.per_round_trip_us),
        by_process_us: med_map(|r| &r.by_process_us),
        waited_us: med_map(|r| &r.waited_us),
        host_busy_pct: med(&|r| r.host_busy_pct),
        busiest_core_second_pct: med(&|r| r.busiest_core_second_pct),
    }
}

/// Nodes of the VIP path with their hop names (`pop`, `clb`, `backend`).
type Hops = Vec<(&'static str, String)>;

/// The nodes a VIP round trip can cross, with their hop names: every POP, CLB node and
/// backend host (the busiest of each role in a round is the one on the path).
fn path_nodes(plan: &Plan) -> Hops {
    plan.nodes
        .iter()
        .filter_map(|n| match plan.namespaces[n.ns].role {
            Role::Pop(_) => Some(("pop", n.name.clone())),
            Role::Clb { .. } => Some(("clb", n.name.clone())),
            Role::Backend { .. } => Some(("backend", n.name.clone())),
            _ => None,
        })
        .collect()
}

fn reset_residence(plan: &Plan, hops: &[(&'static str, String)]) {
    for (_, node) in hops {
        let _ = crate::client::lab::node_command(&plan.lab, node, "reset-residence");
    }
}

/// One round's residence: for each hop and way, the busiest node's figures.
fn residence(plan: &Plan, hops: &[(&'static str, String)]) -> Vec<HopFigures> {
    let mut busiest: Vec<HopFigures> = Vec::new();
    for (hop, node) in hops {
        let Some(status) = crate::client::lab::ask_node(&plan.lab, node) else { continue };
        for way in ["request", "reply"] {
            let r = &status["residence"][way];
            let ns = |k: &str| r[k].as_u64().unwrap_or(0);
            let figures = HopFigures {
                hop,
                way,
                node: node.clone(),
                packets: ns("packets"),
                p50_ns: ns("p50_ns"),
                p99_ns: ns("p99_ns"),
                p999_ns: ns("p999_ns"),
                max_ns: ns("max_ns"),
            };
            match busiest.iter_mut().find(|b| b.hop == *hop && b.way == way) {
                Some(b) if b.packets >= figures.packets => {}
                Some(b) => *b = figures,
                None => busiest.push(figures),
            }
        }
    }
    busiest
}

/// Each hop and way's median figures over the rounds (the node of the busiest round).
fn breakdown_of(rounds: &[Vec<HopFigures>]) -> Vec<HopFigures> {
    let Some(first) = rounds.first() else { return Vec::new() };
    let mut out = Vec::new();
    for h in first {
        let same: Vec<&HopFigures> =
            rounds.iter().filter_map(|r| r.iter().find(|x| x.hop == h.hop && x.way == h.way)).collect();
        let med = |f: fn(&HopFigures) -> u64| {
            let mut xs: Vec<u64> = same.iter().map(|x| f(x)).collect();
            xs.sort_unstable();
            xs.get(xs.len() / 2).copied().unwrap_or(0)
        };
        let node = same.iter().max_by_key(|x| x.packets).map_or_else(String::new, |x| x.node.clone());
        out.push(HopFigures {
            hop: h.hop,
            way: h.way,
            node,
            packets: med(|x| x.packets),
            p50_ns: med(|x| x.p50_ns),
            p99_ns: med(|x| x.p99_ns),
            p999_ns: med(|x| x.p999_ns),
            max_ns: med(|x| x.max_ns),
        });
    }
    out
}

/// `anyedge bench control`: how long the control plane is without a leader — from killing
/// the leader to the first write committed under the next one — over several rounds.
#[derive(Debug, Serialize)]
pub struct ControlFigures {
    pub rounds: usize,
    /// Kill → first committed write, per round (the write is retried from the moment of the
    /// kill); `null` for a round whose write never committed (within `ctl`'s 10 s).
    pub failover_ms: Vec<Option<f64>>,
    /// Rounds whose first write after the kill did not commit.
    pub failed_rounds: usize,
    pub failover_ms_median: f64,
    pub failover_ms_p90: f64,
    pub failover_ms_max: f64,
    /// Write → commit with a live leader, per round (the `ctl` path: find the leader, propose, commit).
    pub commit_ms_median: f64,
    pub election_timeout_ms: [u64; 2],
}

fn median(xs: &[f64]) -> f64 {
    quantile(xs, 0.5)
}

/// The nearest-rank quantile `q` of `xs` (0 when empty).
pub(crate) fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0.0)
}

pub fn control(file: &Path, exe: &Path, rounds: usize) -> Result<ControlFigures, ClientError> {
    let t = anyedge_topology::load(file)?;
    let c = t
        .control
        .clone()
        .ok_or(ClientError::Unsuited("bench control needs a topology with a `control:` section".into()))?;
    let backend = t
        .regions
        .iter()
        .flat_map(|r| &r.backend_groups)
        .flat_map(|g| &g.backends)
        .next()
        .map(|b| b.addr)
        .ok_or(ClientError::Unsuited("no backend to write weights for".into()))?;
    setup::up_with(file, exe, setup::LabOptions { impairments: false, realtime: false, tun_queues: None })?;
    let result = control_rounds(file, exe, backend, rounds.max(1));
    let down = setup::down(file);
    let (failover, commit) = result?;
    down?;
    let committed: Vec<f64> = failover.iter().flatten().copied().collect();
    Ok(ControlFigures {
        rounds: failover.len(),
        failed_rounds: failover.iter().filter(|f| f.is_none()).count(),
        failover_ms_median: median(&committed),
        failover_ms_p90: quantile(&committed, 0.9),
        failover_ms_max: committed.iter().copied().fold(0.0, f64::max),
        failover_ms: failover,
        commit_ms_median: median(&commit),
        election_timeout_ms: [c.election_ns.0 / 1_000_000, c.election_ns.1 / 1_000_000],
    })
}

type Rounds = (Vec<Option<f64>>, Vec<f64>);

fn control_rounds(file: &Path, exe: &Path, backend: SocketAddr, rounds: usize) -> Result<Rounds, ClientError> {
    use std::time::Instant;
    let settle = |what: &str| -> Result<crate::client::ctl::ClusterStatus, ClientError> {
        let started = Instant::now();
        loop {
            let s = crate::client::ctl::status(file)?;
            let all_caught_up = s.applied.values().all(|a| *a == Some(s.commit));
            if s.leader.is_some() && all_caught_up {
                return Ok(s);
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(ClientError::NotInTime(format!("control plane did not settle ({what}): {s:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let write = |w: u8| -> Result<f64, ClientError> {
        let started = Instant::now();
        crate::client::ctl::write(file, &anyedge_control::Change::SetWeight { backend, weight: w })
            .map_err(|e| ClientError::Answered { who: "the control plane".into(), said: format!("{e:?}") })?;
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    let (mut failover, mut commit) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let leader = settle("before the kill")?.leader.ok_or(ClientError::Unsuited("no leader".into()))?;
        commit.push(write(10 + (round % 50) as u8)?);
        crate::client::lab::kill(file, &leader)?;
        // A write that does not commit is the finding, not the end of the benchmark.
        let after_kill = write(60 + (round % 40) as u8);
        if let Err(e) = &after_kill {
            eprintln!("round {}: the first write after killing {leader} did not commit: {e}", round + 1);
        }
        failover.push(after_kill.ok());
        crate::client::lab::start(file, &leader, exe)?;
    }
    settle("at the end")?;
    Ok((failover, commit))
}
