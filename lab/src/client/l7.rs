//! `anyedge bench l7`: HTTP/2 requests through the VIP's HTTPS listener, measured by
//! h2load (a client nobody here wrote) with many streams on each connection, to
//! `app: external` backends running nginx — and, with `--peer haproxy`, the same load
//! through HAProxy (Debian's package: HTTP/2 over TLS in front, HTTP/1.1 to the same
//! nginx, connections to them kept alive) in the same run. Impairments are off, so the
//! figures are the proxies' and the kernels' alone. It prints requests/s, the latency
//! of a request (p50, p99, from h2load's per-request log), the CPU each request cost
//! the processes on each path, and the most memory each of them held.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_topology::{App, ListenerProtocol, Topology};
use serde::Serialize;

use crate::client::bulk::peak_rss_kib;
use crate::client::{ClientError, Server, unsuited};
use crate::error::Doing;
use crate::plan::{Plan, PlanGap, Role};
use crate::setup;

/// The load: `requests` in all, over `connections`, `streams` at a time on each.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    pub requests: u32,
    pub connections: u32,
    pub streams: u32,
}

/// What `bench l7` measured.
#[derive(Debug, Serialize)]
pub struct L7Figures {
    /// The HTTPS listener the VIP path went through, and the backends behind it.
    pub listener: SocketAddr,
    pub backends: Vec<SocketAddr>,
    /// The client group whose namespace ran h2load.
    pub client: String,
    /// h2load's and nginx's own version lines.
    pub h2load: String,
    pub nginx: String,
    pub load: Load,
    pub vip: L7Run,
    /// Peak resident memory of each node the VIP path crosses, KiB (`VmHWM`).
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// The peer proxy measured in the same run (`--peer`).
    pub peer: Option<PeerL7>,
}

/// One h2load run.
#[derive(Debug, Serialize)]
pub struct L7Run {
    /// The application protocol h2load negotiated (`h2`).
    pub protocol: String,
    pub requests_per_s: f64,
    pub succeeded: u64,
    pub failed: u64,
    /// Time from a request's start to its response's end, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU time the path's processes spent per succeeded request, microseconds, and by
    /// role (`pop`, `clb`, `backend` — the tunnel end —, `haproxy`); nginx and h2load are
    /// the same on both paths and not counted.
    pub cpu_us_per_request: f64,
    pub cpu_by_role_us: BTreeMap<String, f64>,
}

/// The same load through a peer proxy.
#[derive(Debug, Serialize)]
pub struct PeerL7 {
    pub name: String,
    /// What ran (version, where, threads), or why nothing did.
    pub what: String,
    pub through: Option<L7Run>,
    pub peak_rss_kib: BTreeMap<String, u64>,
}

/// Where `bench l7` sends: an HTTPS listener whose backends are all IPv4 `app: external`.
struct Target {
    vip: usize,
    listener: SocketAddr,
    backends: Vec<SocketAddr>,
}

fn target(t: &Topology, port: Option<u16>) -> Result<Target, ClientError> {
    if t.clients.is_empty() {
        return Err(unsuited("bench l7 needs a client group".into()));
    }
    for (vi, vip) in t.vips.iter().enumerate() {
        for l in vip.listeners.iter().filter(|l| l.protocol == ListenerProtocol::Https) {
            if port.is_some_and(|p| p != l.port) {
                continue;
            }
            let group = &t.regions[vip.home].backend_groups[l.backend_group];
            let external = |b: &&anyedge_topology::Backend| b.app == App::External && b.addr.is_ipv4();
            if group.backends.is_empty() || !group.backends.iter().all(|b| external(&b)) {
                continue;
            }
            let listener = SocketAddr::new(IpAddr::V4(vip.ipv4), l.port);
            return Ok(Target { vip: vi, listener, backends: group.backends.iter().map(|b| b.addr).collect() });
        }
    }
    let which = port.map_or("an HTTPS listener".to_string(), |p| format!("an HTTPS listener on port {p}"));
    Err(unsuited(format!(
        "bench l7 needs {which} whose backends are all IPv4 `app: external` (nginx runs there): see topologies/apps.yaml"
    )))
}

/// nginx in a backend host: one worker, `port` on every address, a short answer to
/// every request, connections kept alive for many requests.
fn nginx_conf(dir: &Path, port: u16) -> String {
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n  \
         server {{ listen {port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
        d = dir.display()
    )
}

/// Port HAProxy listens on (the region router's address).
const HAPROXY_PORT: u16 = 7_443;

/// HAProxy as Debian ships it: HTTP/2 and HTTP/1.1 over TLS in front (the VIP's own
/// certificate), HTTP/1.1 to `backends` round robin, `X-Forwarded-For` added, idle
/// server connections reused between requests (`http-reuse safe`, its default).
fn haproxy_conf(listen: SocketAddr, pem: &Path, backends: &[SocketAddr]) -> String {
    let servers: String =
        backends.iter().enumerate().map(|(i, b)| format!("  server s{i} {b} maxconn 1000\n")).collect();
    format!(
        "global\n  maxconn 5000\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
         timeout server 30s\n  option forwardfor\n  http-reuse safe\n\n\
         frontend vip\n  bind {listen} ssl crt {} alpn h2,http/1.1\n  default_backend site\n\n\
         backend site\n  balance roundrobin\n{servers}",
        pem.display()
    )
}

/// Time a measured h2load run may take before it is stopped.
const H2LOAD_LIMIT: Duration = Duration::from_secs(300);
/// ... and a warm-up run (requests wait while no backend has passed its checks).
const WARM_LIMIT: Duration = Duration::from_secs(3);

/// One h2load run from `ns` to `url`, stopped after `limit`, with the CPU the processes
/// `pids` (by role) spent.
fn h2load(
    ns: &str,
    url: &str,
    (load, limit): (Load, Duration),
    log: &Path,
    pids: &BTreeMap<String, u32>,
) -> Result<L7Run, ClientError> {
    use crate::io::cpu;
    let role = |node: &str| node.split('/').next().unwrap_or(node).to_string();
    let before: Vec<(String, u32, u64)> =
        pids.iter().filter_map(|(n, &pid)| Some((role(n), pid, cpu::process_sched(pid)?.0))).collect();
    let _ = std::fs::remove_file(log);
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "h2load", "-n", &load.requests.to_string()])
        .args(["-c", &load.connections.to_string(), "-m", &load.streams.to_string()])
        .arg("--log-file")
        .arg(log)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .doing(|| "ip netns exec h2load".to_string())?;
    let deadline = Instant::now() + limit;
    while child.try_wait().doing(|| "h2load".to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClientError::NotInTime(format!("h2load {url} still running after {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cpu_by_role_us = BTreeMap::<String, f64>::new();
    for (r, pid, was) in before {
        if let Some((now, _)) = cpu::process_sched(pid) {
            *cpu_by_role_us.entry(r).or_default() += now.saturating_sub(was) as f64 / 1e3;
        }
    }
    let out = child.wait_with_output().doing(|| "h2load".to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let run = parse_h2load(&text).ok_or_else(|| ClientError::Answered {
        who: format!("h2load {url}"),
        said: format!("{}{}", text.trim(), String::from_utf8_lossy(&out.stderr).trim()),
    })?;
    let log_text = std::fs::read_to_string(log).at(log)?;
    let mut ms: Vec<f64> = log_text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.get(1)?.parse::<u16>().ok()? / 100 == 2).then_some(cols.get(2)?.parse::<f64>().ok()? / 1e3)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let per = run.succeeded.max(1) as f64;
    cpu_by_role_us.retain(|_, us| *us >= 1.0);
    for us in cpu_by_role_us.values_mut() {
        *us /= per;
    }
    Ok(L7Run {
        p50_ms: crate::client::bench::quantile(&ms, 0.50),
        p99_ms: crate::client::bench::quantile(&ms, 0.99),
        p999_ms: crate::client::bench::quantile(&ms, 0.999),
        max_ms: ms.last().copied().unwrap_or(0.0),
        cpu_us_per_request: cpu_by_role_us.values().sum(),
        cpu_by_role_us,
        ..run
    })
}

/// h2load's summary: its protocol, requests/s and counts (latency and CPU left at zero).
fn parse_h2load(text: &str) -> Option<L7Run> {
    let protocol = text.lines().find_map(|l| l.strip_prefix("Application protocol: "))?.trim().to_string();
    let finished = text.lines().find(|l| l.starts_with("finished in "))?;
    let requests_per_s = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
    let counts = text.lines().find(|l| l.starts_with("requests: "))?;
    let count = |what: &str| -> Option<u64> {
        counts.split(", ").find_map(|part| part.trim_start_matches("requests: ").strip_suffix(what)?.parse().ok())
    };
    Some(L7Run {
        protocol,
        requests_per_s,
        succeeded: count(" succeeded")?,
        failed: count(" failed")?,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        cpu_us_per_request: 0.0,
        cpu_by_role_us: BTreeMap::new(),
    })
}

/// A program's version line (`args` ask for it; some print it on stderr).
fn version(program: &str, args: &[&str], hint: &str) -> Result<String, ClientError> {
    let out = Command::new(program).args(args).output().doing(|| format!("{program} ({hint})"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(text.lines().next().unwrap_or(program).trim().to_string())
}

/// Time the backends have to pass the CLB's health checks after nginx starts.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// `bench l7`: `load` through the VIP's HTTPS listener (on `port`, or the first that
/// fits), and through HAProxy when `peer` asks.
pub fn run(file: &Path, exe: &Path, port: Option<u16>, load: Load, peer: bool) -> Result<L7Figures, ClientError> {
    let t = anyedge_topology::load(file)?;
    let plan = Plan::new(&t);
    let Target { vip, listener, backends } = target(&t, port)?;
    let h2load_version = version("h2load", &["--version"], "Debian: apt-get install nghttp2-client")?;
    let nginx_version = version("nginx", &["-v"], "Debian: apt-get install nginx-light")?;
    let client_ns = plan.ns_index(&Role::Client(0)).map(|i| plan.namespaces[i].name.clone());
    let client_ns = client_ns.ok_or(PlanGap("no client namespace"))?;
    let mut hosts = Vec::new();
    for b in &backends {
        let IpAddr::V4(host) = b.ip() else { return Err(PlanGap("an IPv4 backend").into()) };
        let ns = plan.node(&format!("backend/{host}")).map(|n| plan.namespaces[n.ns].name.clone());
        let direct = plan.backend_direct_addr(host).ok_or(PlanGap("backend without a region address"))?;
        hosts.push((host, ns.ok_or(PlanGap("no backend host namespace"))?, SocketAddr::new(direct.into(), b.port())));
    }
    let options = setup::LabOptions { impairments: false, realtime: false, tun_queues: None };
    let state = setup::up_with(file, exe, options)?;
    let dir = crate::layout::state_dir(&plan.lab).join("bench-l7");
    let on_vip_path = |name: &str| {
        name.starts_with("pop/")
            || name.starts_with("clb/")
            || hosts.iter().any(|(h, _, _)| name == format!("backend/{h}"))
    };
    let vip_pids: BTreeMap<String, u32> =
        state.pids.iter().filter(|(n, _)| on_vip_path(n)).map(|(n, &p)| (n.clone(), p)).collect();
    let measured = (|| {
        let mut servers = Vec::new();
        for (i, (_, ns, _)) in hosts.iter().enumerate() {
            let d = dir.join(format!("nginx-{i}"));
            std::fs::create_dir_all(&d).at(&d)?;
            let conf = d.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&d, backends[i].port())).at(&conf)?;
            let conf = conf.display().to_string();
            let prefix = format!("{}/", d.display());
            let args = ["-p", &prefix, "-e", "error.log", "-c", &conf];
            servers.push(Server::start(ns, "nginx", &args, " (Debian: apt-get install nginx-light)")?);
        }
        let url = format!("https://{listener}/");
        // The backends pass the CLB's health checks: a short run answers every request.
        let warm = Load { requests: 100, connections: 1, streams: 10 };
        let began = Instant::now();
        loop {
            let run = h2load(&client_ns, &url, (warm, WARM_LIMIT), &dir.join("warm.log"), &BTreeMap::new());
            if run.as_ref().is_ok_and(|r| r.succeeded == u64::from(warm.requests)) {
                break;
            }
            if began.elapsed() > HEALTHY_WITHIN {
                let said = run.map_or_else(|e| e.to_string(), |r| format!("{} of 100 succeeded", r.succeeded));
                return Err(ClientError::NotInTime(format!(
                    "the backends did not answer through {url} within {HEALTHY_WITHIN:?}: {said}"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let vip_run = h2load(&client_ns, &url, (load, H2LOAD_LIMIT), &dir.join("vip.log"), &vip_pids)?;
        let peer = match peer {
            true => Some(through_haproxy(&t, &plan, vip, &dir, &client_ns, load, &hosts)?),
            false => None,
        };
        drop(servers);
        Ok::<_, ClientError>((vip_run, peer))
    })();
    let peak_rss_kib = vip_pids.iter().filter_map(|(n, &pid)| Some((n.clone(), peak_rss_kib(pid)?))).collect();
    let down = setup::down(file);
    let _ = std::fs::remove_dir_all(&dir);
    let (vip_run, peer) = measured?;
    down?;
    Ok(L7Figures {
        listener,
        backends,
        client: t.clients[0].name.clone(),
        h2load: h2load_version,
        nginx: nginx_version,
        load,
        vip: vip_run,
        peak_rss_kib,
        peer,
    })
}

/// HAProxy in the region router's namespace (its internet-facing address, as `bench
/// bulk`'s nginx peer), in front of the backends' direct addresses; the same load
/// through it.
fn through_haproxy(
    t: &Topology,
    plan: &Plan,
    vip: usize,
    dir: &Path,
    client_ns: &str,
    load: Load,
    hosts: &[(std::net::Ipv4Addr, String, SocketAddr)],
) -> Result<PeerL7, ClientError> {
    let name = "haproxy".to_string();
    let bin = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].into_iter().find(|p| Path::new(p).exists());
    let Some(bin) = bin else {
        let what = "HAProxy is not installed (Debian: apt-get install haproxy)".to_string();
        return Ok(PeerL7 { name, what, through: None, peak_rss_kib: BTreeMap::new() });
    };
    let region = t.vips[vip].home;
    let addr = plan.region_internet_addr(region).ok_or(PlanGap("the region router has no internet address"))?;
    let ns = plan.ns_index(&Role::RegionNet(region)).map(|i| plan.namespaces[i].name.clone());
    let ns = ns.ok_or(PlanGap("no region router namespace"))?;
    let listen = SocketAddr::new(IpAddr::V4(addr), HAPROXY_PORT);
    // The VIP's own certificate and key, in one file as HAProxy takes them.
    let state_dir = crate::layout::state_dir(&plan.lab);
    let cert = crate::pki::vip_cert_path(&state_dir, &t.vips[vip].name);
    let key = cert.with_extension("key");
    let pem: PathBuf = dir.join("haproxy.pem");
    let both = format!("{}{}", std::fs::read_to_string(&cert).at(&cert)?, std::fs::read_to_string(&key).at(&key)?);
    std::fs::write(&pem, both).at(&pem)?;
    let directs: Vec<SocketAddr> = hosts.iter().map(|(_, _, d)| *d).collect();
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, haproxy_conf(listen, &pem, &directs)).at(&conf)?;
    let version = version(bin, &["-v"], "Debian: apt-get install haproxy")?;
    let conf_arg = conf.display().to_string();
    let server = Server::start(&ns, bin, &["-db", "-f", &conf_arg], " (its configuration is in the lab's state)")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let what = format!(
        "{version}, {threads} threads (its default: one a core), in {ns} at {listen} → {}",
        directs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );
    let pids = BTreeMap::from([("haproxy".to_string(), server.0.id())]);
    // `ip netns exec` runs HAProxy in its own process: its pid is the child's.
    let url = format!("https://{listen}/");
    let through = h2load(client_ns, &url, (load, H2LOAD_LIMIT), &dir.join("haproxy.log"), &pids)?;
    let peak_rss_kib = pids.iter().filter_map(|(n, &pid)| Some((n.clone(), peak_rss_kib(pid)?))).collect();
    drop(server);
    Ok(PeerL7 { name, what, through: Some(through), peak_rss_kib })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies").join(name);
        anyedge_topology::load(&path).expect("a shipped topology")
    }

    #[test]
    fn bench_l7_takes_an_https_listener_of_external_backends_and_says_why_it_refuses_others() {
        let apps = shipped("apps.yaml");
        let t = target(&apps, None).expect("apps.yaml has one");
        assert_eq!(t.listener.to_string(), "198.18.0.20:443");
        assert_eq!(t.backends.len(), 2, "both nginx hosts");
        let refused = target(&apps, Some(80)).err().expect("port 80 is http, not https").to_string();
        assert!(refused.contains("an HTTPS listener on port 80 whose backends are all IPv4 `app: external`"));
        let small = target(&shipped("small.yaml"), None).err().expect("refused").to_string();
        assert!(small.contains("see topologies/apps.yaml"), "{small}");
    }

    #[test]
    fn h2loads_summary_is_read_and_one_that_is_not_its_is_refused() {
        let text = "starting benchmark...\nApplication protocol: h2\n\nfinished in 1.52s, 1312.33 req/s, 51.40KB/s\n\
                    requests: 2000 total, 2000 started, 2000 done, 1998 succeeded, 2 failed, 0 errored, 0 timeout\n";
        let run = parse_h2load(text).expect("h2load's summary");
        assert_eq!((run.protocol.as_str(), run.requests_per_s), ("h2", 1312.33));
        assert_eq!((run.succeeded, run.failed), (1998, 2));
        assert!(parse_h2load("connect: Connection refused\n").is_none());
    }
}
