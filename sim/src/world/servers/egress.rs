//! Egress nodes in the simulator: each region's NAT gateways and router run the shared
//! gateway core (`anyedge_region::gateway`) between the region's CLB nodes (the sealed
//! backend leg, inside the region) and the backends on the public internet (one
//! internet hop each way).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::world::events::Arrival;
use crate::world::events::INTRA_REGION_NS;
use crate::world::ids::HostId;
use crate::world::servers::Servers;
use crate::world::wire::Wire;
use anyedge_ccn::{Dest, Link, LinkOutcome, NodeId};
use anyedge_region::gateway::Gateway;

pub(in crate::world) struct EgressNode {
    pub(in crate::world) core: Gateway,
    pub(in crate::world) region: usize,
    pub(in crate::world) name: String,
    /// The gateway's public address (NAT), or none (a router).
    pub(in crate::world) public: Option<IpAddr>,
    /// Per internet host behind it: [toward the host, back].
    pub(in crate::world) links: HashMap<HostId, [Link; 2]>,
    pub(in crate::world) drops: BTreeMap<&'static str, u64>,
}

impl Servers {
    /// Whether `ip` is the public address of a NAT gateway (what health checks come from).
    pub(in crate::world) fn is_gateway_public(&self, ip: IpAddr) -> bool {
        self.egress.iter().any(|e| e.public == Some(ip))
    }

    /// A sealed packet from a CLB node reaches egress node `e` (inside the region).
    pub(in crate::world) fn egress_from_clb(&mut self, e: usize, sealed: Vec<u8>, wire: &mut Wire<'_>) {
        let now = wire.now();
        let node = &mut self.egress[e];
        if let Err(reason) = node.core.handle_from_clb(now, &sealed) {
            *node.drops.entry(reason.name()).or_default() += 1;
        }
        self.drain_egress(e, wire);
    }

    /// A packet from the internet reaches egress node `e`.
    pub(in crate::world) fn egress_from_internet(&mut self, e: usize, packet: Vec<u8>, wire: &mut Wire<'_>) {
        let now = wire.now();
        let node = &mut self.egress[e];
        if let Err(reason) = node.core.handle_from_internet(now, &packet) {
            *node.drops.entry(reason.name()).or_default() += 1;
        }
        self.drain_egress(e, wire);
    }

    fn drain_egress(&mut self, e: usize, wire: &mut Wire<'_>) {
        while let Some(out) = self.egress[e].core.poll_output() {
            let flow = out.flow();
            match out.dest {
                Dest::Backend(backend) => {
                    let Some(&host) = self.host_by_ip.get(&backend.ip()) else { continue };
                    self.internet_hop(e, host, 0, flow, out.bytes, wire);
                }
                Dest::Node(NodeId::Clb { region, node }) => {
                    let (region, node) = (usize::from(region), node);
                    if region != self.egress[e].region || node >= wire.t().regions[region].clb_nodes {
                        continue;
                    }
                    let clb = wire.places().clb(region, node);
                    wire.hop(wire.now() + INTRA_REGION_NS, Arrival::ClbFromBackend(clb), out.bytes);
                }
                Dest::Node(_) | Dest::Client(_) => {}
            }
        }
    }

    /// A packet crosses the internet between egress node `e` and internet host `host`:
    /// `dir` 0 toward the host, 1 back.
    pub(in crate::world) fn internet_hop(
        &mut self,
        e: usize,
        host: HostId,
        dir: usize,
        flow: u64,
        packet: Vec<u8>,
        wire: &mut Wire<'_>,
    ) {
        let now = wire.now();
        let Some(links) = self.egress[e].links.get_mut(&host) else { return };
        if let LinkOutcome::Deliver(at) = links[dir].transmit(now, packet.len(), flow) {
            let to = if dir == 0 { Arrival::InternetHost(host) } else { Arrival::EgressFromInternet(e) };
            wire.hop(at, to, packet);
        }
    }
}
