//! A partitioned world's seams: which partition owns an event, sending across
//! partitions, and merging the worlds' rows into one for the report.

use crate::world::World;
use crate::world::ids::{ClbId, PopId};

impl<'t> World<'t> {
    /// Takes `other`'s rows for the partitions it ran: its nodes, clients, samples and
    /// report rows; sums its counters.
    pub(super) fn absorb(&mut self, mut other: World<'t>) {
        let Some(theirs) = other.wire.scope().map(|s| s.mine.clone()) else { return };
        let owned = |part: u32| theirs[part as usize];
        self.absorb_nodes(&mut other, &owned);
        for g in 0..self.edge.groups().len() {
            if owned(self.wire.group_part(g)) {
                self.edge.take_group(g, &mut other.edge);
                self.wire.record().take_group(g, other.wire.record());
            }
        }
        self.absorb_record(&mut other);
        // The merged world holds their partitions now (what a rank's part reports).
        if let Some(s) = self.wire.scope_mut() {
            for (m, &t) in s.mine.iter_mut().zip(&theirs) {
                *m |= t;
            }
        }
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
        let wire = &self.wire;
        let regions = |r: usize| owned(wire.region_part(r));
        self.servers.absorb(&mut other.servers, (&|h| owned(wire.host_part(h)), &regions));
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
