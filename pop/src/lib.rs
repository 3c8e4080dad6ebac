//! The POP edge node as a sans-IO core: takes client packets addressed to an anycast VIP,
//! looks up the VIP's home region, keeps each flow on one CLB node of that region (a
//! bounded flow table), and encapsulates toward it; replies coming back over the
//! backbone are decapsulated and handed to the client. The POP never picks a backend.

use std::collections::VecDeque;
use std::net::IpAddr;

use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::{FlowKey, inner};
use lru::LruCache;

/// Where a VIP's traffic goes: its home region and the CLB nodes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub vip: IpAddr,
    pub region: u16,
    /// Number of CLB nodes in the region; flows spread over them by flow hash.
    pub clb_nodes: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopConfig {
    pub pop_id: u16,
    pub routes: Vec<Route>,
    pub flow_table_capacity: usize,
}

/// Something the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An encapsulated packet for CLB node `node` of `region`, over the backbone.
    ToClb { region: u16, node: u16, bytes: Vec<u8> },
    /// A decapsulated reply for the client (an IP packet from the VIP).
    ToClient { bytes: Vec<u8> },
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Packet(anyedge_proto::Error),
    /// The destination is no VIP this POP publishes.
    NoRoute,
    WrongDirection,
    NotOurs,
}

impl From<anyedge_proto::Error> for Drop {
    fn from(e: anyedge_proto::Error) -> Drop {
        Drop::Packet(e)
    }
}

#[derive(Debug)]
pub struct Pop {
    config: PopConfig,
    /// flow → CLB node, so a flow stays on one node.
    flows: LruCache<FlowKey, u16>,
    flows_seen: u64,
    outputs: VecDeque<Output>,
}

impl Pop {
    pub fn new(config: PopConfig) -> Pop {
        Pop { config, flows: LruCache::unbounded(), flows_seen: 0, outputs: VecDeque::new() }
    }

    pub fn id(&self) -> u16 {
        self.config.pop_id
    }

    /// Distinct flows that entered through this POP.
    pub fn flows_seen(&self) -> u64 {
        self.flows_seen
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn route(&self, vip: IpAddr) -> Option<&Route> {
        self.config.routes.iter().find(|r| r.vip == vip)
    }

    /// A client's packet for a VIP.
    pub fn handle_from_client(&mut self, _now_ns: u64, packet: &[u8]) -> Result<(), Drop> {
        let info = inner::parse(packet)?;
        let route = self.route(info.key.dst).ok_or(Drop::NoRoute)?;
        let (region, nodes) = (route.region, route.clb_nodes.max(1));
        let flow_hash = info.key.flow_hash();
        let node = match self.flows.get(&info.key) {
            Some(&node) if node < nodes => node,
            _ => {
                let node = (flow_hash % u32::from(nodes)) as u16;
                self.flows.put(info.key, node);
                self.flows_seen += 1;
                while self.flows.len() > self.config.flow_table_capacity.max(1) {
                    self.flows.pop_lru();
                }
                node
            }
        };
        let bytes = ccn::encapsulate(Direction::ToRegion, self.config.pop_id, flow_hash, packet)?;
        self.outputs.push_back(Output::ToClb { region, node, bytes });
        Ok(())
    }

    /// An encapsulated reply from a CLB node.
    pub fn handle_from_clb(&mut self, _now_ns: u64, bytes: &[u8]) -> Result<(), Drop> {
        let (repr, packet) = ccn::decapsulate(bytes)?;
        if repr.direction != Direction::ToPop {
            return Err(Drop::WrongDirection);
        }
        if repr.pop_id != self.config.pop_id {
            return Err(Drop::NotOurs);
        }
        inner::parse(packet)?;
        self.outputs.push_back(Output::ToClient { bytes: packet.to_vec() });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop() -> Pop {
        let routes = vec![Route { vip: "198.18.0.10".parse().unwrap(), region: 3, clb_nodes: 2 }];
        Pop::new(PopConfig { pop_id: 5, routes, flow_table_capacity: 16 })
    }

    fn client_packet(port: u16) -> Vec<u8> {
        inner::build_udp(("198.18.40.1".parse().unwrap(), port), ("198.18.0.10".parse().unwrap(), 7000), b"x").unwrap()
    }

    #[test]
    fn client_packet_is_encapsulated_toward_home_region() {
        let mut p = pop();
        p.handle_from_client(0, &client_packet(4000)).unwrap();
        let Some(Output::ToClb { region, node, bytes }) = p.poll_output() else { panic!("no output") };
        assert_eq!(region, 3);
        assert!(node < 2);
        let (repr, inner_bytes) = ccn::decapsulate(&bytes).unwrap();
        assert_eq!(repr.pop_id, 5);
        assert_eq!(repr.direction, Direction::ToRegion);
        assert_eq!(inner_bytes, &client_packet(4000)[..]);
    }

    #[test]
    fn a_flow_stays_on_one_clb_node() {
        let mut p = pop();
        let mut nodes = vec![];
        for _ in 0..5 {
            p.handle_from_client(0, &client_packet(4001)).unwrap();
            if let Some(Output::ToClb { node, .. }) = p.poll_output() {
                nodes.push(node);
            }
        }
        assert_eq!(nodes.len(), 5);
        assert!(nodes.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(p.flows_seen(), 1);
    }

    #[test]
    fn unknown_vip_has_no_route() {
        let mut p = pop();
        let pkt = inner::build_udp(("198.18.40.1".parse().unwrap(), 1), ("198.18.0.99".parse().unwrap(), 7000), b"x")
            .unwrap();
        assert_eq!(p.handle_from_client(0, &pkt), Err(Drop::NoRoute));
    }

    #[test]
    fn reply_for_another_pop_is_refused() {
        let mut p = pop();
        let bytes = ccn::encapsulate(Direction::ToPop, 9, 1, &client_packet(1)).unwrap();
        assert_eq!(p.handle_from_clb(0, &bytes), Err(Drop::NotOurs));
        let bytes = ccn::encapsulate(Direction::ToPop, 5, 1, &client_packet(1)).unwrap();
        assert_eq!(p.handle_from_clb(0, &bytes), Ok(()));
        assert_eq!(p.poll_output(), Some(Output::ToClient { bytes: client_packet(1) }));
    }
}
