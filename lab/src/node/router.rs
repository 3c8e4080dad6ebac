//! The internet router: plays BGP for the lab. It probes every POP with the shared
//! liveness core, and when one misses `failover.probe_misses` probes in a row it withdraws it, moving the clients it served to
//! their next POP `failover.route_converge` later (policy routes in its namespace).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyedge_topology::Topology;

use crate::layout::HEALTH_PORT;
use crate::node::liveness::{UdpLiveness, probe_config};
use crate::plan::Plan;

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

pub async fn run(t: &Topology, plan: &Plan, ready: &Path) -> Result<(), String> {
    // (POP, its health address) for every POP on the internet.
    let pops: Vec<(usize, SocketAddr)> = (0..t.pops.len())
        .filter_map(|p| plan.pop_internet_addr(p).map(|a| (p, SocketAddr::new(IpAddr::V4(a), HEALTH_PORT))))
        .collect();
    let start = Instant::now();
    let local = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let addrs = pops.iter().map(|&(_, a)| a).collect();
    let mut prober = UdpLiveness::bind(local, addrs, None, probe_config(t), now_ns(start)).await?;
    // What routing shows now, and what it converges to (time it takes effect).
    let mut announced = vec![true; t.pops.len()];
    let mut pending: Vec<(u64, usize, bool)> = Vec::new();
    let mut buf = [0u8; 64];
    std::fs::write(ready, b"ready\n").map_err(|e| e.to_string())?;
    loop {
        // Wake for the next probe round or the next route change to take effect.
        let converge = pending.iter().map(|&(at, ..)| at).min();
        let wake = match converge {
            Some(at) => prober.wake_at(start).min(tokio::time::Instant::from_std(start + Duration::from_nanos(at))),
            None => prober.wake_at(start),
        };
        let changes = tokio::select! {
            _ = tokio::time::sleep_until(wake) => prober.tick(now_ns(start)).await,
            r = prober.sock.recv_from(&mut buf) => match r {
                Ok((n, _)) => prober.answered(&buf[..n]),
                Err(_) => Vec::new(),
            },
        };
        let now = now_ns(start);
        for (peer, up) in changes {
            tracing::info!("internet: pop/{} {}", t.pops[pops[peer].0].name, if up { "up" } else { "withdrawn" });
            pending.push((now + t.failover.route_converge_ns, pops[peer].0, up));
        }
        let due: Vec<(u64, usize, bool)> = pending.iter().copied().filter(|&(at, _, _)| at <= now).collect();
        pending.retain(|&(at, _, _)| at > now);
        if !due.is_empty() {
            for (_, p, up) in due {
                announced[p] = up;
            }
            reroute(t, plan, &announced);
        }
    }
}

/// Points every client group at the first announced POP of its order, per VIP.
fn reroute(t: &Topology, plan: &Plan, announced: &[bool]) {
    for (g, group) in t.clients.iter().enumerate() {
        for &k in &group.traffic {
            let vip = t.traffic[k].vip;
            let Some(p) = t.pop_order(g, vip).into_iter().find(|&p| announced[p]) else { continue };
            let Some(via) = plan.pop_internet_addr(p) else { continue };
            let route = format!("{}/32", t.vips[vip].ipv4);
            let table = (100 + g).to_string();
            let status = std::process::Command::new("ip")
                .args(["route", "replace", &route, "via", &via.to_string(), "table", &table])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                tracing::warn!("router: cannot point group {g} at POP {p}");
            }
            if let (Some(v6), Some(via6)) = (t.vips[vip].ipv6, plan.pop_internet_addr6(p)) {
                let route6 = format!("{v6}/128");
                let _ = std::process::Command::new("ip")
                    .args(["-6", "route", "replace", &route6, "via", &via6.to_string(), "table", &table])
                    .status();
            }
        }
    }
}
