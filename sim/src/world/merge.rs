//! A partitioned world's seams: which partition owns an event, sending across
//! partitions, and merging the worlds' rows into one for the report.

use crate::world::World;
use crate::world::ids::{BackendId, ClbId, HostId, PopId};

impl<'t> World<'t> {
    /// Takes `other`'s rows for the partitions it ran: its nodes, clients, samples and
    /// report rows; sums its counters.
    pub(super) fn absorb(&mut self, mut other: World<'t>) {
        let Some(theirs) = other.wire.scope().map(|s| s.mine.clone()) else { return };
        let owned = |part: u32| theirs[part as usize];
        self.absorb_nodes(&mut other, &owned);
        self.absorb_backends(&mut other, &owned);
        for g in 0..self.edge.groups().len() {
            if owned(self.wire.group_part(g)) {
                self.edge.take_group(g, &mut other.edge);
                self.wire.record().take_group(g, other.wire.record());
            }
        }
        self.absorb_record(&mut other);
    }

    /// The POPs, CLB nodes, backend hosts and egress nodes `other` ran.
    fn absorb_nodes(&mut self, other: &mut World<'t>, owned: &dyn Fn(u32) -> bool) {
        for p in self.pops.ids().collect::<Vec<PopId>>() {
            if owned(self.wire.pop_part(p)) {
                std::mem::swap(&mut self.pops[p], &mut other.pops[p]);
            }
        }
        for c in self.regions.clbs().ids().collect::<Vec<ClbId>>() {
            if owned(self.wire.clb_part(c)) {
                self.regions.take_node(c, &mut other.regions);
            }
        }
        for h in self.servers.hosts.ids().collect::<Vec<HostId>>() {
            if owned(self.wire.host_part(h)) {
                std::mem::swap(&mut self.servers.hosts[h], &mut other.servers.hosts[h]);
            }
        }
        for e in 0..self.servers.egress.len() {
            if owned(self.wire.region_part(self.servers.egress[e].region)) {
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
            if host.is_some_and(|h| owned(self.wire.host_part(h))) {
                let theirs = &mut other.servers.backends[b].addrs_seen;
                std::mem::swap(&mut self.servers.backends[b].addrs_seen, theirs);
            }
        }
    }

    /// Fault trackers (earliest detection, each world's flows), catchment changes,
    /// violations and counters.
    fn absorb_record(&mut self, other: &mut World<'t>) {
        let world_wide = other.wire.scope().map_or(0, |s| s.world_wide);
        let events = other.wire.processed() - world_wide;
        self.wire.record().absorb(other.wire.record(), events);
        self.faults.absorb(&other.faults);
    }

    /// After every world is absorbed: the merged lists in the order one world keeps
    /// them (by time; a fault's flows by client).
    pub(super) fn finish_partitioned(&mut self) {
        self.wire.record().sort_merged();
        self.edge.forget_watches();
    }
}
