//! Moving packets over the modelled links: the internet (client ↔ POP, client ↔ region),
//! the backbone (POP ↔ region) and the region's own (CLB node ↔ backend).

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum LinkKind {
    InetPop(usize),
    InetDirect(usize),
    Backbone(usize),
}

impl<'t> World<'t> {
    pub(super) fn link_pop(&self, g: usize, p: PopId, dir: usize) -> usize {
        (g * self.t.pops.len() + p.0) * 2 + dir
    }

    pub(super) fn link_direct(&self, g: usize, r: usize, dir: usize) -> usize {
        (g * self.t.regions.len() + r) * 2 + dir
    }

    pub(super) fn link_bb(&self, p: PopId, r: usize, dir: usize) -> usize {
        (p.0 * self.t.regions.len() + r) * 2 + dir
    }

    /// A packet over one of the modelled links. On the internet's (clients' links, 1,500
    /// bytes) a datagram past the MTU travels as fragments and is lost with any of them,
    /// as in the lab, where the POP shapes each fragment; the backbone carries its
    /// envelope whole (the lab's shaper sees the envelope before the kernel fragments it).
    pub(super) fn send_over(&mut self, link: LinkKind, flow: u64, to: Arrival, packet: Vec<u8>) {
        let now = self.q.now_ns();
        let header = if packet.first().is_some_and(|b| b >> 4 == 6) { 48 } else { 20 };
        let mtu = anyedge_pop::CLIENT_LINK_MTU;
        let outcome = match link {
            LinkKind::InetPop(i) => self.inet_pop[i].transmit_datagram(now, (packet.len(), header), mtu, flow),
            LinkKind::InetDirect(i) => self.inet_direct[i].transmit_datagram(now, (packet.len(), header), mtu, flow),
            LinkKind::Backbone(i) => self.backbone[i].transmit(now, packet.len() + OUTER_HEADER, flow),
        };
        if let LinkOutcome::Deliver(at) = outcome {
            self.packets += 1;
            self.q.schedule(at, Ev::Arrive { to, packet });
        }
    }

    /// A packet of flow `flow` between CLB node `clb` and backend host `host`, inside the
    /// region or over the site's links when the backend lives elsewhere (another region,
    /// an IDC): `dir` 0 is the CLB's (its core sealed it), 1 the host's (sealed here with
    /// the host's keys).
    pub(super) fn send_clb_backend(&mut self, clb: ClbId, host: HostId, dir: usize, flow: u64, packet: Vec<u8>) {
        let packet = if dir == 0 {
            packet
        } else {
            let to = anyedge_topology::nodes::clb_node(self.clbs[clb].region, self.clbs[clb].index);
            match self.hosts[host].keys.seal(to, anyedge_proto::seal::Kind::Backend, &packet) {
                Some(sealed) => sealed,
                None => return,
            }
        };
        let to = if dir == 0 { Arrival::Backend { host, via_clb: clb } } else { Arrival::ClbFromBackend(clb) };
        let region = self.clbs[clb].region;
        let now = self.q.now_ns();
        let at = match self.site_links.get_mut(&(region, host)) {
            None => Some(now + INTRA_REGION_NS),
            Some(links) => match links[dir].transmit(now, packet.len() + OUTER_HEADER, flow) {
                LinkOutcome::Deliver(at) => Some(at),
                LinkOutcome::Lost | LinkOutcome::QueueFull => None,
            },
        };
        if let Some(at) = at {
            self.packets += 1;
            self.q.schedule(at, Ev::Arrive { to, packet });
        }
    }
}
