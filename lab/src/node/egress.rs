//! An egress node in the lab (`nat/NAME`, `router/REGION`): the shared gateway core on a
//! UDP socket on its region's network. CLB nodes send it sealed packets for the internet
//! backends behind it; it hands them, translated (NAT) or not (router), to those hosts as
//! plain IP packets — the internet leg, unsealed — and seals their replies back to the
//! CLB node each flow came from.

use crate::error::Doing;
use crate::node::NodeError;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use anyedge_ccn::{Dest, NodeId};
use anyedge_region::gateway::Gateway;
use anyedge_topology::Topology;

use crate::layout::{BACKEND_PORT, mark_ready};
use crate::node::drops::Drops;
use crate::plan::{Plan, PlanGap};

pub async fn run(
    t: &Topology,
    plan: &Plan,
    k: usize,
    ready: &Path,
    (keys, drops): (anyedge_ccn::AuthConfig, Drops),
) -> Result<(), NodeError> {
    let bind = plan.egress_tunnel(k).ok_or(PlanGap("egress node without a region address"))?;
    // Batched both ways: a CLB node's envelope of a super-packet comes in pieces.
    let mut sock = crate::io::batch::BatchSocket::bind(bind).await?;
    sock.count_into(drops.backbone_losses());
    let auth = crate::node::forwarder::auth_from_now(keys)?;
    let config = anyedge_topology::nodes::gateway_config(t, k, |_| auth).ok_or(PlanGap("no such egress node"))?;
    let start = Instant::now();
    let mut core = Gateway::new(config, 0);
    // The internet hosts behind it, by tunnel address (their packets come unsealed).
    let hosts: HashMap<SocketAddr, IpAddr> = plan
        .internet_hosts
        .iter()
        .filter(|&&(_, e)| e == k)
        .filter_map(|&(ip, _)| plan.backend_tunnel(ip).map(|a| (a, IpAddr::V4(ip))))
        .collect();
    mark_ready(ready)?;
    let mut leaving = Vec::new();
    loop {
        sock.recv().await.doing(|| format!("the tunnel socket {bind}"))?;
        for (from, datagram) in sock.datagrams() {
            drops.packet_in();
            let now = start.elapsed().as_nanos() as u64;
            let result = match hosts.get(&from) {
                Some(_) => core.handle_from_internet(now, datagram),
                None => core.handle_from_clb(now, datagram),
            };
            drops.count(result);
            leaving.extend(std::iter::from_fn(|| core.poll_output()));
        }
        for out in leaving.drain(..) {
            let to = match out.dest {
                Dest::Backend(SocketAddr::V4(backend)) => plan.backend_tunnel(*backend.ip()),
                Dest::Node(NodeId::Clb { region, node }) => {
                    let addr = plan.clb_region_addr(usize::from(region), usize::from(node));
                    addr.map(|a| SocketAddr::new(IpAddr::V4(a), BACKEND_PORT))
                }
                _ => continue,
            };
            if let Some(to) = to {
                drops.packet_out();
                sock.queue(to, out.bytes);
            }
        }
        sock.flush().await;
    }
}
