//! BGP in a POP or transit node: the announce state machine that carries the POP core's
//! decisions to its BIRD speaker (`crate::bird`), the transits' relays, and the
//! speaker's supervision inside the node.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyedge_pop::AnnounceChange;
use anyedge_topology::Topology;
use anyedge_topology::bgp::med_us;

use crate::node::relay;
use crate::plan::{Plan, Role};

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
    ) -> Result<Announcer, String> {
        let mut speaker = Speaker::start(state_dir, node, &pop_config(t, plan, p)?)?;
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
) -> Result<(), String> {
    let name = format!("transit/{}", t.pops[x].name);
    relay::start(relay_peers(t, plan, x)?, relay_families(t)).await?;
    let mut speaker = Speaker::start(state_dir, &name, &transit_config(t, plan, x)?)?;
    wait_for_socket(&speaker.socket).await?;
    std::fs::write(ready, b"ready\n").map_err(|e| e.to_string())?;
    supervise(&mut speaker, &drops).await
}

/// Transit `x`'s relays: one per other transit, delaying by the model's one-way delay
/// between the two sites (half the round trip its MED carries).
fn relay_peers(t: &Topology, plan: &Plan, x: usize) -> Result<Vec<relay::Peer>, String> {
    let ns = plan.ns_index(&Role::Transit(x)).ok_or("no transit namespace")?;
    (0..t.pops.len())
        .filter(|&y| y != x)
        .map(|y| {
            let peer_ns = plan.ns_index(&Role::Transit(y)).ok_or("no transit namespace")?;
            let link = plan.link_between(ns, peer_ns).ok_or("transits without a link")?;
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

/// Revives the speaker when it dies and publishes its sessions (`bgp` in `status`) and
/// restarts (`bgp_speaker_restarts`), every 250 ms, for ever.
pub async fn supervise(speaker: &mut Speaker, drops: &crate::node::drops::Drops) -> Result<(), String> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        speaker.revive();
        publish(speaker, drops).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transit_takes_from_its_pop_only_the_vips_that_pop_publishes_over_ttl_security() {
        // reference.yaml: `edge` (198.18.0.20) on every POP, `api` (198.18.0.30) on paris.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/reference.yaml");
        let t = anyedge_topology::load(&path).unwrap();
        let plan = Plan::new(&t);
        let session = |x: usize| {
            let config = transit_config(&t, &plan, x).unwrap();
            config.lines().find(|l| l.starts_with("protocol bgp pop4")).unwrap().to_string()
        };
        let (paris, warsaw) = (session(0), session(1));
        assert!(paris.contains("198.18.0.20/32") && paris.contains("198.18.0.30/32"), "{paris}");
        assert!(warsaw.contains("198.18.0.20/32") && !warsaw.contains("198.18.0.30"), "{warsaw}");
        assert!(paris.contains("ttl security yes") && warsaw.contains("ttl security yes"));
        let pop = pop_config(&t, &plan, 1).unwrap();
        assert!(pop.lines().filter(|l| l.starts_with("protocol bgp")).all(|l| l.contains("ttl security yes")), "{pop}");
    }

    #[test]
    fn reply_lines_split_into_code_and_text() {
        assert_eq!(split_reply("0001 BIRD 2.0.12 ready."), (Some(1), ' ', "BIRD 2.0.12 ready."));
        assert_eq!(split_reply("2002-Name       Proto"), (Some(2002), '-', "Name       Proto"));
        assert_eq!(split_reply(" continued"), (None, '-', "continued"));
        assert_eq!(split_reply("8001 Protocol not found"), (Some(8001), ' ', "Protocol not found"));
    }

    #[test]
    fn routes_come_from_show_route_all_with_the_pop_that_announced_them() {
        let t = anyedge_topology::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topologies/small.yaml"
        )))
        .unwrap();
        // A second route of the same prefix is indented to the header's width.
        let text = [
            "Table master4:",
            "198.18.0.20/32       unicast [pop4 21:09:00.498] * (100) [AS64500i]",
            "\tvia 198.18.128.14 on l3",
            "\tBGP.as_path: 64500",
            "\tBGP.med: 0",
            "                     unicast [t1_4 21:09:00.546] (100) [AS64500i]",
            "\tvia 198.18.128.30 on l7",
            "\tBGP.as_path: 4200000001 64500",
            "\tBGP.med: 26770",
        ]
        .join("\n");
        let r = routes(&t, 0, &text);
        assert_eq!(r.len(), 2);
        assert!(r[0].best && !r[1].best);
        assert_eq!((r[0].pop.as_deref(), r[1].pop.as_deref()), (Some("pop/paris"), Some("pop/warsaw")));
        assert_eq!((r[1].via.as_str(), r[1].med, r[1].from.as_str()), ("198.18.128.30", Some(26770), "t1_4"));
        assert_eq!(r[1].prefix, "198.18.0.20/32");
    }

    #[test]
    fn sessions_come_from_show_protocols() {
        let text = "Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     12:00:00.000  \n\
pop4       BGP        ---        up     12:00:01.000  Established   \n\
t1_4       BGP        ---        start  12:00:01.000  Active        Socket: Connection refused\n";
        let s = sessions(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].state.as_str(), s[0].bgp.as_str()), ("pop4", "up", "Established"));
        assert_eq!((s[1].name.as_str(), s[1].bgp.as_str()), ("t1_4", "Active"));
    }

    #[test]
    fn show_protocols_all_adds_each_sessions_prefix_counts() {
        // As BIRD 2.0.12 answers on its control socket (one leading space stripped).
        let text = "Name       Proto      Table      State  Since         Info\n\
vip4_0     Static     master4    up     06:35:15.875  \n \
 Channel ipv4\n    Routes:         1 imported, 0 exported, 1 preferred\n\
transit4   BGP        ---        up     06:35:16.681  Established   \n \
 BGP state:          Established\n    Neighbor AS:      4200000000\n \
 Channel ipv4\n    State:          UP\n    Routes:         0 imported, 1 exported, 0 preferred\n\
t2_4       BGP        ---        up     06:35:16.700  Established   \n \
 Channel ipv4\n    Routes:         2 imported, 1 filtered, 3 exported, 1 preferred\n";
        let s = sessions(text);
        assert_eq!(s.len(), 2, "the static protocol is no session: {s:?}");
        assert_eq!((s[0].name.as_str(), s[0].imported, s[0].exported), ("transit4", 0, 1));
        assert_eq!((s[1].name.as_str(), s[1].imported, s[1].exported), ("t2_4", 2, 3));
    }
}
