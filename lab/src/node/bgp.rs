//! BGP in a POP or transit node: the announce state machine that carries the POP core's
//! decisions to its BIRD speaker (`crate::bird`), the transits' relays, and the
//! speaker's supervision inside the node.

use crate::error::Doing;
use crate::node::NodeError;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyedge_pop::AnnounceChange;
use anyedge_topology::Topology;
use anyedge_topology::bgp::med_us;

use crate::node::relay;
use crate::plan::{Plan, PlanGap, Role};

pub use crate::bird::*;

/// A POP's announcements as its speaker should have them: what the POP core decided
/// (`anyedge_pop::announce`, the rule both drivers follow), carried to the task that
/// runs the speaker and applies it.
pub struct Announcer {
    /// (VIP, announced) for each VIP the POP publishes.
    vips: Vec<(usize, bool)>,
    desired: tokio::sync::watch::Sender<Vec<(usize, bool)>>,
}

impl Announcer {
    /// Starts POP `p`'s speaker (every VIP announced) and the task that keeps it running.
    pub async fn start(
        t: &Topology,
        plan: &Plan,
        p: usize,
        state_dir: &Path,
        (node, drops): (&str, crate::node::drops::Drops),
    ) -> Result<Announcer, NodeError> {
        let config = if t.internet.has_ases() { pop_config_as(t, plan, p)? } else { pop_config(t, plan, p)? };
        let mut speaker = Speaker::start(state_dir, node, &config)?;
        wait_for_socket(&speaker.socket).await?;
        let vips: Vec<(usize, bool)> =
            (0..t.vips.len()).filter(|&k| t.vips[k].pops.contains(&p)).map(|k| (k, true)).collect();
        let families: Vec<(usize, bool)> = vips.iter().map(|&(k, _)| (k, t.vips[k].ipv6.is_some())).collect();
        let (desired, mut wanted) = tokio::sync::watch::channel(vips.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                let revived = tokio::select! {
                    _ = tick.tick() => speaker.revive(),
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        true
                    }
                };
                if revived {
                    // A restarted speaker starts with every VIP announced: tell it what
                    // health says once it listens.
                    let _ = wait_for_socket(&speaker.socket).await;
                    let now: Vec<(usize, bool)> = wanted.borrow_and_update().clone();
                    apply(&speaker.socket, &families, &now).await;
                }
                publish(&speaker, &drops).await;
            }
        });
        Ok(Announcer { vips, desired })
    }

    /// What the core decided, to the speaker: each change names a VIP address, which
    /// stands for its VIP (both families of a VIP share a home region, so they change
    /// together). Returns the VIPs whose announcement changed, with the new state.
    pub fn carry(&mut self, t: &Topology, changes: &[AnnounceChange]) -> Vec<(usize, bool)> {
        let mut changed = Vec::new();
        for change in changes {
            let is = |v: &anyedge_topology::Vip| {
                IpAddr::V4(v.ipv4) == change.vip || v.ipv6.map(IpAddr::V6) == Some(change.vip)
            };
            let Some(k) = t.vips.iter().position(is) else { continue };
            for (vip, on) in self.vips.iter_mut().filter(|(vip, on)| *vip == k && *on != change.announced) {
                *on = change.announced;
                changed.push((*vip, *on));
            }
        }
        if !changed.is_empty() {
            let _ = self.desired.send(self.vips.clone());
        }
        changed
    }
}

/// Enables or disables each VIP's static protocols to match `now`.
async fn apply(socket: &Path, families: &[(usize, bool)], now: &[(usize, bool)]) {
    for &(k, on) in now {
        let v6 = families.iter().any(|&(f, has6)| f == k && has6);
        for proto in std::iter::once(vip_protocol(k, false)).chain(v6.then(|| vip_protocol(k, true))) {
            let verb = if on { "enable" } else { "disable" };
            if let Err(e) = command(socket, &format!("{verb} {proto}")).await {
                tracing::warn!("BGP speaker: {verb} {proto}: {e}");
            }
        }
    }
}

/// Runs a transit: its speaker, restarted when it dies, and its sessions in `status`.
pub async fn run_transit(
    t: &Topology,
    plan: &Plan,
    x: usize,
    state_dir: &Path,
    (ready, drops): (&Path, crate::node::drops::Drops),
) -> Result<(), NodeError> {
    let name = format!("transit/{}", t.pops[x].name);
    relay::start(relay_peers(t, plan, x)?, relay_families(t)).await?;
    let mut speaker = Speaker::start(state_dir, &name, &transit_config(t, plan, x)?)?;
    wait_for_socket(&speaker.socket).await?;
    std::fs::write(ready, b"ready\n").at(ready)?;
    supervise(&mut speaker, &drops).await
}

/// Router `r` of the file's AS-level internet: its speaker, kept running.
pub async fn run_router(
    t: &Topology,
    plan: &Plan,
    r: usize,
    (name, state_dir): (&str, &Path),
    (ready, drops): (&Path, crate::node::drops::Drops),
) -> Result<(), NodeError> {
    let mut speaker = Speaker::start(state_dir, name, &router_config(t, plan, r)?)?;
    wait_for_socket(&speaker.socket).await?;
    std::fs::write(ready, b"ready\n").at(ready)?;
    supervise(&mut speaker, &drops).await
}

/// The route reflector of an AS-level internet's networks: its speaker, kept running.
pub async fn run_reflector(
    t: &Topology,
    plan: &Plan,
    (name, state_dir): (&str, &Path),
    (ready, drops): (&Path, crate::node::drops::Drops),
) -> Result<(), NodeError> {
    let mut speaker = Speaker::start(state_dir, name, &crate::bird::reflector_config(t, plan)?)?;
    wait_for_socket(&speaker.socket).await?;
    std::fs::write(ready, b"ready\n").at(ready)?;
    supervise(&mut speaker, &drops).await
}

/// Transit `x`'s relays: one per other transit, delaying by the model's one-way delay
/// between the two sites (half the round trip its MED carries).
fn relay_peers(t: &Topology, plan: &Plan, x: usize) -> Result<Vec<relay::Peer>, NodeError> {
    let ns = plan.ns_index(&Role::Transit(x)).ok_or(PlanGap("no transit namespace"))?;
    (0..t.pops.len())
        .filter(|&y| y != x)
        .map(|y| {
            let peer_ns = plan.ns_index(&Role::Transit(y)).ok_or(PlanGap("no transit namespace"))?;
            let link = plan.link_between(ns, peer_ns).ok_or(PlanGap("transits without a link"))?;
            Ok(relay::Peer { y, link, one_way: Duration::from_micros(u64::from(med_us(t, x, y)) / 2) })
        })
        .collect()
}

/// The families transits exchange routes in: 0 (IPv4) always, 1 (IPv6) when a VIP has
/// an IPv6 address.
fn relay_families(t: &Topology) -> Vec<usize> {
    let (_, set6) = prefix_sets(t);
    if set6.is_empty() { vec![0] } else { vec![0, 1] }
}

/// Revives the speaker when it dies (looked at every 250 ms) and publishes its sessions
/// (`bgp` in `status`) and restarts (`bgp_speaker_restarts`) every second and after a
/// restart, for ever. Asking BIRD for every session's state is not free: 436 speakers
/// asking four times a second kept two cores busy, and sessions lost their hold timers.
pub async fn supervise(speaker: &mut Speaker, drops: &crate::node::drops::Drops) -> Result<(), NodeError> {
    const TICKS_PER_PUBLISH: u32 = 4;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    for n in 0u32.. {
        tick.tick().await;
        if speaker.revive() || n % TICKS_PER_PUBLISH == 0 {
            publish(speaker, drops).await;
        }
    }
    Ok(())
}

/// The speaker's sessions and restarts into the node's status.
pub async fn publish(speaker: &Speaker, drops: &crate::node::drops::Drops) {
    drops.set_gauge("bgp_speaker_restarts", speaker.restarts);
    if let Ok(text) = command(&speaker.socket, "show protocols all").await {
        let list = sessions(&text);
        let established = list.iter().filter(|s| s.bgp == "Established").count();
        drops.set_gauge("bgp_sessions_established", established as u64);
        drops.set_section("bgp", serde_json::json!({ "sessions": list, "speaker_restarts": speaker.restarts }));
    }
}
