//! The internet router: plays BGP for the lab. It probes every POP, and when one stops
//! answering for `failover.pop_detect` it withdraws it, moving the clients it served to
//! their next POP `failover.route_converge` later (policy routes in its namespace).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyedge_topology::Topology;
use tokio::net::UdpSocket;

use crate::layout::HEALTH_PORT;
use crate::plan::Plan;

/// How often POPs are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Liveness of a set of peers from their answers: a peer is down once it has not
/// answered for `detect_ns`, up again as soon as it answers.
pub struct Watch {
    last: Vec<u64>,
    up: Vec<bool>,
    detect_ns: u64,
}

impl Watch {
    pub fn new(peers: usize, detect_ns: u64) -> Watch {
        Watch { last: vec![0; peers], up: vec![true; peers], detect_ns }
    }

    pub fn answered(&mut self, peer: usize, now_ns: u64) {
        if let Some(t) = self.last.get_mut(peer) {
            *t = now_ns;
        }
    }

    pub fn is_up(&self, peer: usize) -> bool {
        self.up.get(peer).copied().unwrap_or(false)
    }

    /// Peers whose state changed: (peer, now up).
    pub fn changes(&mut self, now_ns: u64) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        for (p, up) in self.up.iter_mut().enumerate() {
            let alive = now_ns.saturating_sub(self.last[p]) < self.detect_ns;
            if alive != *up {
                *up = alive;
                out.push((p, alive));
            }
        }
        out
    }
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

pub async fn run(t: &Topology, plan: &Plan, ready: &Path) -> Result<(), String> {
    let pops: Vec<SocketAddr> = (0..t.pops.len())
        .filter_map(|p| plan.pop_internet_addr(p).map(|a| SocketAddr::new(IpAddr::V4(a), HEALTH_PORT)))
        .collect();
    let sock = UdpSocket::bind("0.0.0.0:0").await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut watch = Watch::new(pops.len(), t.failover.pop_detect_ns);
    // What routing shows now, and what it converges to (time it takes effect).
    let mut announced = vec![true; pops.len()];
    let mut pending: Vec<(u64, usize, bool)> = Vec::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let mut buf = [0u8; 64];
    std::fs::write(ready, b"ready\n").map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for to in &pops {
                    let _ = sock.send_to(b"anyedge-router-probe", *to).await;
                }
                let now = now_ns(start);
                for (p, up) in watch.changes(now) {
                    pending.push((now + t.failover.route_converge_ns, p, up));
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
            r = sock.recv_from(&mut buf) => {
                if let Ok((_, from)) = r
                    && let Some(p) = pops.iter().position(|a| a.ip() == from.ip())
                {
                    watch.answered(p, now_ns(start));
                }
            }
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
                eprintln!("router: cannot point group {g} at POP {p}");
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
