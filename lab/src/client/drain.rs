//! `anyedge ctl FILE drain pop/NAME`: a POP taken out of service on purpose, withdraw first
//! and stop last. The POP withdraws every VIP at once (whatever its health) and keeps
//! serving whatever still reaches it; the command waits until no transit selects its route
//! any more (gone everywhere), then until no client packet has reached it for a while (its
//! flows ended or moved) or the timeout passes, and only then stops it: a stopped POP
//! drops client packets (`drained` in its status). `undrain` puts it back: announcements
//! follow health again, from withdrawn, after the usual rise samples.

use crate::client::ClientError;
use crate::client::unsuited;
use crate::error::Doing;
use std::path::Path;
use std::time::{Duration, Instant};

use anyedge_topology::Topology;

use crate::client::failover::{selecting, transit_sockets};
use crate::plan::{Plan, Role};
use crate::setup;

/// No client packet for this long: the POP's flows are over (or moved with the route).
pub const IDLE: Duration = Duration::from_secs(1);
/// The route must be gone from every transit within this long of the withdraw.
const WITHDRAW_LIMIT: Duration = Duration::from_secs(10);
/// After `undrain`, the POP's own transit must select its route again within this long.
const ANNOUNCE_LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug, serde::Serialize)]
pub struct DrainFigures {
    pub pop: String,
    /// Command → no transit selects the POP's route for any VIP.
    pub withdrawn_everywhere_ms: f64,
    /// Client packets the POP served between the command and its route's disappearance.
    pub packets_while_withdrawing: u64,
    /// Command → the last client packet the POP served (`null`: none after the command).
    pub last_client_packet_ms: Option<f64>,
    /// Command → stopped.
    pub stopped_ms: f64,
    /// Stopped because the timeout passed while clients still sent to it.
    pub timed_out: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct UndrainFigures {
    pub pop: String,
    /// Command → the POP's own transit selects its route again.
    pub announced_ms: f64,
}

/// The lab's topology and plan, checked: up, and `node` one of its POPs.
fn pop_of(file: &Path, node: &str) -> Result<(Topology, Plan, usize), ClientError> {
    let (t, plan) = setup::load(file)?;
    setup::read_state(&plan.lab)
        .ok_or_else(|| ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() })?;
    let pops = || t.pops.iter().map(|p| format!("pop/{}", p.name)).collect::<Vec<_>>().join(", ");
    let p = match plan.node(node).map(|n| &plan.namespaces[n.ns].role) {
        Some(Role::Pop(p)) => *p,
        _ => return Err(unsuited(format!("`{node}` is not a POP of this lab (its POPs: {})", pops()))),
    };
    Ok((t, plan, p))
}

/// Sends `command` to the POP's node and checks it took it.
fn tell(lab: &str, pop: &str, command: &str, want: &str) -> Result<(), ClientError> {
    let reply = crate::client::lab::node_command(lab, pop, command).doing(|| format!("{pop} does not answer"))?;
    let answered = |said: String| ClientError::Answered { who: pop.to_string(), said };
    let v: serde_json::Value =
        serde_json::from_str(reply.trim()).map_err(|_| answered(format!("`{}`", reply.trim())))?;
    if v["admin"] == want { Ok(()) } else { Err(answered(format!("refused `{command}`: {}", reply.trim()))) }
}

fn client_packets(lab: &str, pop: &str) -> Result<u64, ClientError> {
    crate::client::lab::ask_node(lab, pop)
        .and_then(|s| s["client_packets"].as_u64())
        .ok_or_else(|| unsuited(format!("{pop} does not answer its status")))
}

pub fn drain(file: &Path, node: &str, timeout: Duration) -> Result<DrainFigures, ClientError> {
    let (t, plan, p) = pop_of(file, node)?;
    let pop = format!("pop/{}", t.pops[p].name);
    let transits = transit_sockets(&t, &plan);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    let before = client_packets(&plan.lab, &pop)?;
    let at = Instant::now();
    let ms = |i: Instant| i.duration_since(at).as_secs_f64() * 1000.0;
    tell(&plan.lab, &pop, "drain", "draining")?;
    // Withdraw first: until no transit's selected route leads here.
    loop {
        match rt.block_on(selecting(&t, &transits, &pop)) {
            None => break,
            Some(x) if at.elapsed() > WITHDRAW_LIMIT => {
                return Err(ClientError::NotInTime(format!(
                    "{pop} withdrew, but transit/{} still selects its route after {WITHDRAW_LIMIT:?}; it keeps serving (draining)",
                    t.pops[x].name
                )));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    let withdrawn = Instant::now();
    let at_withdrawal = client_packets(&plan.lab, &pop)?;
    // Serve what still comes until it has been quiet for `IDLE`, or the timeout.
    let (mut seen, mut last, mut quiet_since) =
        (at_withdrawal, (at_withdrawal > before).then_some(withdrawn), withdrawn);
    let timed_out = loop {
        if quiet_since.elapsed() >= IDLE {
            break false;
        }
        if at.elapsed() >= timeout {
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
        let now = client_packets(&plan.lab, &pop)?;
        if now != seen {
            (seen, last, quiet_since) = (now, Some(Instant::now()), Instant::now());
        }
    };
    tell(&plan.lab, &pop, "stop", "stopped")?;
    Ok(DrainFigures {
        pop,
        withdrawn_everywhere_ms: ms(withdrawn),
        packets_while_withdrawing: at_withdrawal - before,
        last_client_packet_ms: last.map(ms),
        stopped_ms: ms(Instant::now()),
        timed_out,
    })
}

pub fn undrain(file: &Path, node: &str) -> Result<UndrainFigures, ClientError> {
    let (t, plan, p) = pop_of(file, node)?;
    let pop = format!("pop/{}", t.pops[p].name);
    let transits = transit_sockets(&t, &plan);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    let at = Instant::now();
    tell(&plan.lab, &pop, "undrain", "serving")?;
    // Its own transit prefers it (the shortest AS path) once it announces again.
    let own = std::slice::from_ref(&transits[p]);
    while rt.block_on(selecting(&t, own, &pop)).is_none() {
        if at.elapsed() > ANNOUNCE_LIMIT {
            return Err(ClientError::NotInTime(format!(
                "{pop} serves again, but transit/{} does not select its route after {ANNOUNCE_LIMIT:?} (is a CLB node of its VIPs' regions up?)",
                t.pops[p].name
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(UndrainFigures { pop, announced_ms: at.elapsed().as_secs_f64() * 1000.0 })
}
