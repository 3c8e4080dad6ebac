//! A partitioned world's seams: which partition owns an event, sending across
//! partitions, and merging the worlds' rows into one for the report.

use crate::world::Arrival;
use crate::world::Ev;
use crate::world::World;
use crate::world::ids::{BackendId, ClbId, ClientId, HostId, Id, PopId};
use crate::world::liveness::{Probed, ProberAt};
use crate::world::partition::Crossing;

impl<'t> World<'t> {
    /// Whether this world runs partition `part` (always, unpartitioned).
    pub(super) fn owns(&self, part: u32) -> bool {
        self.scope.as_ref().is_none_or(|s| s.mine[part as usize])
    }

    pub(super) fn group_part(&self, g: usize) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.parts.group[g])
    }

    pub(super) fn pop_part(&self, p: PopId) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.parts.pop[p.index()])
    }

    pub(super) fn clb_part(&self, c: ClbId) -> u32 {
        self.region_part(self.regions.clbs[c].region)
    }

    pub(super) fn region_part(&self, r: usize) -> u32 {
        if self.scope.is_some() { r as u32 } else { 0 }
    }

    pub(super) fn host_part(&self, h: HostId) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.host.get(h.index()).copied().unwrap_or(0))
    }

    pub(super) fn client_part(&self, c: ClientId) -> u32 {
        self.group_part(self.group_of(c))
    }

    pub(super) fn prober_part(&self, at: ProberAt) -> u32 {
        match at {
            ProberAt::Pop(p) | ProberAt::Transit(p) => self.pop_part(p),
            ProberAt::Clb(c) => self.clb_part(c),
            ProberAt::Region(r) => self.region_part(r),
        }
    }

    /// The partition whose entity a packet reaches.
    pub(super) fn arrival_part(&self, to: &Arrival) -> u32 {
        match *to {
            Arrival::PopFromClient(p) | Arrival::PopFromClb(p) => self.pop_part(p),
            Arrival::ClbFromPop(c) | Arrival::ClbDirect(c) | Arrival::ClbFromBackend(c) | Arrival::ClbFromPeer(c) => {
                self.clb_part(c)
            }
            Arrival::RegionEdge { region, .. } => self.region_part(region as usize),
            Arrival::Backend { host, .. } | Arrival::InternetHost(host) => self.host_part(host),
            Arrival::EgressFromClb(e) | Arrival::EgressFromInternet(e) => {
                self.region_part(self.servers.egress[e].region)
            }
            Arrival::Client(c) => self.client_part(c),
            Arrival::ProbeRequest { to: Probed::Pop(p), .. } => self.pop_part(p),
            Arrival::ProbeRequest { to: Probed::Clb(c), .. } => self.clb_part(c),
            Arrival::ProbeAnswer { at } => self.prober_part(at),
        }
    }

    /// The partition an event belongs to; `None` for what every world runs (faults, the
    /// end of a link fault, the control plane's).
    pub(super) fn owner(&self, ev: &Ev) -> Option<u32> {
        Some(match ev {
            Ev::UdpSend { client, .. }
            | Ev::FloodSend { client, .. }
            | Ev::QuicIssue { client, .. }
            | Ev::ClientQuicPoll { client, .. }
            | Ev::TcpIssue { client, .. }
            | Ev::ClientTcpPoll { client } => self.client_part(*client),
            Ev::BackendTcpPoll { host, .. } => self.host_part(*host),
            Ev::Arrive { to, .. } => self.arrival_part(to),
            Ev::ClbTimer { clb } => self.clb_part(*clb),
            Ev::ProbeTick { at, .. } => self.prober_part(*at),
            Ev::RouteUpdate { part, .. } => *part,
            Ev::Fault { .. } | Ev::LinkRestore { .. } | Ev::Control(_) => return None,
        })
    }

    /// A packet partition `from` sent reaches `to` at `at`: into this world's queue when
    /// the receiver is the sender's partition, else into the outbox until the window
    /// ends. A crossing due inside the window would mean the lookahead is wrong: an
    /// invariant violation.
    pub(super) fn deliver(&mut self, at: u64, from: u32, to: Arrival, packet: Vec<u8>) {
        if self.scope.is_none() {
            self.q.schedule(at, Ev::Arrive { to, packet });
            return;
        }
        let dest = self.arrival_part(&to);
        if dest == from {
            self.q.schedule(at, Ev::Arrive { to, packet });
        } else {
            self.cross(at, from, dest, Ev::Arrive { to, packet });
        }
    }

    fn cross(&mut self, at: u64, from: u32, to: u32, ev: Ev) {
        let Some(s) = self.scope.as_mut() else { return };
        let early = at < s.window_end;
        let (window_end, lookahead) = (s.window_end, s.parts.lookahead_ns);
        s.sent[from as usize] += 1;
        let seq = s.sent[from as usize];
        s.outbox.push(Crossing { at, from, seq, to, ev });
        if early {
            self.violation(format!(
                "partition {from} sent partition {to} an event due at {at} ns, inside the window ending {window_end} ns (lookahead {lookahead} ns)"
            ));
        }
    }

    /// POP `pop`'s BGP update, due at `at` wherever client groups are: one copy per
    /// partition, each moving that partition's groups.
    pub(super) fn broadcast_routes(&mut self, at: u64, pop: PopId, routes: Vec<bool>) {
        let Some(count) = self.scope.as_ref().map(|s| s.parts.count) else {
            self.q.schedule(at, Ev::RouteUpdate { pop, routes, part: 0 });
            return;
        };
        let from = self.pop_part(pop);
        for part in 0..count as u32 {
            self.cross(at, from, part, Ev::RouteUpdate { pop, routes: routes.clone(), part });
        }
    }

    /// Takes `other`'s rows for the partitions it ran: its nodes, clients, samples and
    /// report rows; sums its counters.
    pub(super) fn absorb(&mut self, mut other: World<'t>) {
        let Some(theirs) = other.scope.as_ref().map(|s| s.mine.clone()) else { return };
        let owned = |part: u32| theirs[part as usize];
        self.absorb_nodes(&mut other, &owned);
        self.absorb_backends(&mut other, &owned);
        for g in 0..self.edge.groups.len() {
            if owned(self.group_part(g)) {
                let first = self.edge.group_start[g];
                for c in first..first + self.t.clients[g].count as usize {
                    std::mem::swap(&mut self.edge.clients[ClientId(c)], &mut other.edge.clients[ClientId(c)]);
                }
                self.record.take_group(g, &mut other.record);
            }
        }
        self.absorb_record(&mut other);
    }

    /// The POPs, CLB nodes, backend hosts and egress nodes `other` ran.
    fn absorb_nodes(&mut self, other: &mut World<'t>, owned: &dyn Fn(u32) -> bool) {
        for p in self.pops.ids().collect::<Vec<PopId>>() {
            if owned(self.pop_part(p)) {
                std::mem::swap(&mut self.pops[p], &mut other.pops[p]);
            }
        }
        for c in self.regions.clbs.ids().collect::<Vec<ClbId>>() {
            if owned(self.clb_part(c)) {
                std::mem::swap(&mut self.regions.clbs[c], &mut other.regions.clbs[c]);
            }
        }
        for h in self.servers.hosts.ids().collect::<Vec<HostId>>() {
            if owned(self.host_part(h)) {
                std::mem::swap(&mut self.servers.hosts[h], &mut other.servers.hosts[h]);
            }
        }
        for e in 0..self.servers.egress.len() {
            if owned(self.region_part(self.servers.egress[e].region)) {
                std::mem::swap(&mut self.servers.egress[e], &mut other.servers.egress[e]);
            }
        }
    }

    /// Backend records: health is the region's, the addresses seen the host's, flows
    /// each client's (a union).
    fn absorb_backends(&mut self, other: &mut World<'t>, owned: &dyn Fn(u32) -> bool) {
        let ids: Vec<BackendId> = self.servers.backends.ids().collect();
        for b in ids {
            let (mine, theirs) = (&mut self.servers.backends[b], &mut other.servers.backends[b]);
            if owned(mine.region as u32) {
                std::mem::swap(&mut mine.health, &mut theirs.health);
            }
            mine.flows.append(&mut theirs.flows);
            let host = self.servers.host_by_ip.get(&self.servers.backends[b].addr.ip()).copied();
            if host.is_some_and(|h| owned(self.host_part(h))) {
                let theirs = &mut other.servers.backends[b].addrs_seen;
                std::mem::swap(&mut self.servers.backends[b].addrs_seen, theirs);
            }
        }
    }

    /// Fault trackers (earliest detection, each world's flows), catchment changes,
    /// violations and counters.
    fn absorb_record(&mut self, other: &mut World<'t>) {
        let world_wide = other.scope.as_ref().map_or(0, |s| s.world_wide);
        self.record.absorb(&mut other.record, other.q.processed() - world_wide);
        for (mine, theirs) in self.faults.retired_sg.iter_mut().zip(&other.faults.retired_sg) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.matched += t.matched;
                m.denied += t.denied;
            }
        }
    }

    /// After every world is absorbed: the merged lists in the order one world keeps
    /// them (by time; a fault's flows by client).
    pub(super) fn finish_partitioned(&mut self) {
        self.record.sort_merged();
        for c in self.edge.clients.iter_mut() {
            // Positions in the trackers moved: nothing watches after the run.
            for f in c.flows.iter_mut() {
                f.watching = None;
            }
        }
    }
}
