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

    pub(super) fn send_over(&mut self, link: LinkKind, flow: u64, to: Arrival, packet: Vec<u8>) {
        let now = self.q.now_ns();
        let size = match link {
            LinkKind::Backbone(_) => packet.len() + OUTER_HEADER,
            _ => packet.len(),
        };
        let l = match link {
            LinkKind::InetPop(i) => &mut self.inet_pop[i],
            LinkKind::InetDirect(i) => &mut self.inet_direct[i],
            LinkKind::Backbone(i) => &mut self.backbone[i],
        };
        if let LinkOutcome::Deliver(at) = l.transmit(now, size, flow) {
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
