//! Each client group's POP and AS path as the lab's BGP speakers route it over the
//! file's AS-level internet (`lab catchments`): from the group's access router, hop by
//! hop along the routes each speaker selected (the ones its kernel forwards by), to the
//! POP the packets reach.

use std::net::Ipv4Addr;

use anyedge_topology::Topology;
use anyedge_topology::routing::RouterId;

use crate::bird::{BirdError, command, routes, speaker_socket};
use crate::client::ClientError;
use crate::plan::{Plan, Role};

/// What BIRD says to `show route for` a prefix it has no route for.
const NO_ROUTE: &str = "Network not found";

/// Where a group's packets to one VIP go: the POP (`None`: a router on the way has no
/// route) and the AS path its access router selected, its own AS first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Way {
    pub pop: Option<usize>,
    pub as_path: Vec<u32>,
}

/// Group `g`'s way to VIP `vip` in the running lab.
pub fn way(
    t: &Topology,
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    (g, vip): (usize, usize),
) -> Result<Way, ClientError> {
    let net = t.internet.ways.internetwork(t);
    let prefix = format!("{}/32", t.vips[vip].ipv4);
    let dir = crate::layout::state_dir(&plan.lab);
    let mut at = net.group_router(g);
    let mut way = Way { pop: None, as_path: Vec::new() };
    for hop in 0..=net.graph().routers() {
        let node = plan.router_node(at.0).ok_or(crate::plan::PlanGap("a router without its node"))?.to_string();
        let socket = speaker_socket(&dir, &node);
        let said = match rt.block_on(command(&socket, &format!("show route all for {prefix}"))) {
            Ok(text) => text,
            // BIRD's answer when it has no route for the prefix at all.
            Err(BirdError::Said(e)) if e == NO_ROUTE => return Ok(way),
            Err(e) => return Err(ClientError::Answered { who: node.clone(), said: e.to_string() }),
        };
        let Some(best) = routes(t, 0, &said).into_iter().find(|r| r.best && r.prefix == prefix) else {
            return Ok(way);
        };
        if hop == 0 {
            way.as_path = std::iter::once(net.as_number(net.graph().as_of(at))).chain(best.as_path).collect();
        }
        let Ok(via) = best.via.parse::<Ipv4Addr>() else { return Ok(way) };
        match next_hop(plan, via) {
            Some(Next::Pop(p)) => {
                way.pop = Some(p);
                return Ok(way);
            }
            Some(Next::Router(r)) => at = r,
            None => return Ok(way),
        }
    }
    Ok(way)
}

enum Next {
    Pop(usize),
    Router(RouterId),
}

/// The POP or router whose link address `via` is.
fn next_hop(plan: &Plan, via: Ipv4Addr) -> Option<Next> {
    let on_link = plan.links.iter().find_map(|l| {
        if l.a_addr == via {
            Some(l.a)
        } else if l.b_addr == via {
            Some(l.b)
        } else {
            None
        }
    });
    let on_segment = || plan.segments.iter().flat_map(|s| &s.ports).find(|p| p.addr == via).map(|p| p.ns);
    let ns = on_link.or_else(on_segment)?;
    match plan.namespaces[ns].role {
        Role::Pop(p) => Some(Next::Pop(p)),
        Role::Router(r) => Some(Next::Router(RouterId(r))),
        _ => None,
    }
}
