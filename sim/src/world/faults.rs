//! The fault schedule: what each fault changes in the world (never what a node knows), the
//! flows it touches and their recovery, and the control plane's events.
use crate::world::World;
use crate::world::events::Ev;
use crate::world::fault_state::FaultTracker;
use crate::world::ids::ClbId;
use crate::world::ids::ClientId;
use crate::world::ids::PopId;
use crate::world::ids::ProberAt;
use anyedge_ccn::Impairment;
use anyedge_topology::FaultAction;
use anyedge_topology::Target;
use std::collections::BTreeMap;

impl<'t> World<'t> {
    pub(super) fn apply_fault(&mut self, index: usize) {
        let action = self.t.faults[index].action;
        let now = self.wire.now();
        self.track_fault(index, now);
        match action {
            FaultAction::Down(Target::Control(_))
            | FaultAction::Up(Target::Control(_))
            | FaultAction::Partition(_)
            | FaultAction::Heal
            | FaultAction::SetWeight { .. } => self.control_fault(action, now),
            FaultAction::Down(Target::Pop(p)) => {
                // The POP stops: its transit and the CLB nodes find out by probing.
                self.pops[PopId(p)].stop();
            }
            FaultAction::Up(Target::Pop(p)) => self.restart_pop(PopId(p)),
            FaultAction::Down(Target::Region(_) | Target::Clb { .. })
            | FaultAction::Up(Target::Region(_) | Target::Clb { .. }) => self.clb_fault(action, now),
            FaultAction::Down(Target::Backend { .. })
            | FaultAction::Up(Target::Backend { .. })
            | FaultAction::Unbind(_)
            | FaultAction::Bind(_) => self.backend_fault(action),
            FaultAction::Migrate(group) => self.edge.migrate(group),
            FaultAction::Link(lo) => {
                for dir in 0..2 {
                    let i = self.wire.link_bb(PopId(lo.pop), lo.region, dir);
                    let link = self.wire.backbone(i);
                    let base = link.model().impairment;
                    link.set_override(Impairment {
                        delay_ns: lo.delay_ns.unwrap_or(base.delay_ns),
                        jitter_mean_ns: lo.jitter_ns.unwrap_or(base.jitter_mean_ns),
                        loss: lo.loss.unwrap_or(base.loss),
                    });
                }
                self.wire.schedule(now + lo.for_ns, Ev::LinkRestore { pop: PopId(lo.pop), region: lo.region });
            }
        }
    }

    /// Starts following fault `index`: the flows it touches, which backend each was on.
    fn track_fault(&mut self, index: usize, now: u64) {
        let fault = &self.t.faults[index];
        // Partitioned, the flows were found at the window's end, with every POP's owner.
        let found = self.wire.take_tracks(index);
        let affected = found.unwrap_or_else(|| self.affected_flows(&fault.action));
        let tr = self.wire.recorded().next_tracker();
        let before = self.edge.watch(tr, &affected);
        let tracked = self.wire.record().track(FaultTracker {
            fault: index,
            at_ns: now,
            detected_ns: None,
            noticed: BTreeMap::new(),
            what: fault.what.clone(),
            first_reply_ns: vec![None; affected.len()],
            changed: vec![false; affected.len()],
            before,
            affected,
        });
        debug_assert_eq!(tracked, tr, "the flows watch the tracker's own index");
    }

    /// A control node stops or starts, the control nodes split or heal, or a weight is
    /// written (through the control plane, or straight to the CLB nodes without one).
    fn control_fault(&mut self, action: FaultAction, now: u64) {
        if let FaultAction::SetWeight { region, addr, weight } = action
            && self.control.is_none()
        {
            self.faults.weight_set(addr, weight);
            self.regions.set_weight(region, addr, weight);
            return;
        }
        let Some(c) = self.control.as_mut() else { return };
        match action {
            FaultAction::Down(Target::Control(n)) => c.down(now, n),
            FaultAction::Up(Target::Control(n)) => c.up(now, n),
            FaultAction::Partition(side_of) => c.partition(now, &side_of),
            FaultAction::Heal => c.heal(now),
            FaultAction::SetWeight { addr, weight, .. } => {
                let events = c.request(now, anyedge_control::Change::SetWeight { backend: addr, weight });
                self.schedule_control(events);
            }
            _ => {}
        }
    }

    /// A restarted node comes back empty: no connection table, fresh health state, every
    /// POP taken to be up until its own probes say otherwise.
    pub(super) fn restart_clb(&mut self, c: ClbId, now: u64) {
        self.regions.restart(c, now, &mut self.faults);
        // With a control plane it catches up from its watch stream instead.
        if let Some(plane) = self.control.as_mut() {
            plane.watcher_restarted(c.0);
        }
        // Its first outputs ask the region's other nodes for their tables.
        self.regions.drain(c, &mut self.wire, &mut self.servers);
        self.probers.restart(ProberAt::Clb(c), &mut self.wire);
    }

    /// A stopped POP comes back believing every CLB node up, as its fresh prober does;
    /// the edge announces it again at its first answer.
    fn restart_pop(&mut self, p: PopId) {
        if self.pops[p].is_up() || !self.wire.owns(self.wire.pop_part(p)) {
            return;
        }
        let clbs = self.regions.clbs().iter().map(|n| (n.region() as u16, n.index() as u16));
        self.pops[p].restart(clbs);
        self.probers.restart(ProberAt::Pop(p), &mut self.wire);
    }

    /// A region's CLB nodes, or one of them, stop or start.
    fn clb_fault(&mut self, action: FaultAction, now: u64) {
        let nodes: Vec<ClbId> = match action {
            FaultAction::Down(Target::Region(r)) | FaultAction::Up(Target::Region(r)) => {
                self.regions.of_region(r).collect()
            }
            FaultAction::Down(Target::Clb { region, index }) | FaultAction::Up(Target::Clb { region, index }) => {
                vec![self.wire.places().clb(region, index)]
            }
            _ => return,
        };
        let down = matches!(action, FaultAction::Down(_));
        for c in nodes {
            if down {
                self.regions.stop(c);
                if let Some(plane) = self.control.as_mut() {
                    plane.watcher_down(c.0);
                }
            } else if !self.regions.clbs()[c].is_up() && self.wire.owns(self.wire.clb_part(c)) {
                self.restart_clb(c, now);
            }
        }
    }

    /// A backend port stops or starts (its host stops answering on it), or is unbound or
    /// bound again on every CLB node of its region.
    fn backend_fault(&mut self, action: FaultAction) {
        match action {
            FaultAction::Unbind(Target::Backend { region, addr })
            | FaultAction::Bind(Target::Backend { region, addr }) => {
                let bound = matches!(action, FaultAction::Bind(_));
                self.faults.bound(addr, bound);
                self.regions.bind(region, addr, bound);
            }
            FaultAction::Down(Target::Backend { addr, .. }) => self.servers.port_up(addr, false),
            FaultAction::Up(Target::Backend { addr, .. }) => self.servers.port_up(addr, true),
            _ => {}
        }
    }

    /// Anycast flows a fault touches: those entering the POP, crossing the link, homed in
    /// the region, on the CLB node, or served by the backend it names.
    pub(super) fn affected_flows(&self, action: &FaultAction) -> Vec<(ClientId, usize)> {
        self.affected_flows_with(action, &crate::world::forwarding::Cores(|p| self.pops[p].core()))
    }

    /// The same, of this world's clients, with each POP's core as `pop` gives it (its
    /// owner's, when the world runs partitioned).
    pub(super) fn affected_flows_with(
        &self,
        action: &FaultAction,
        view: &dyn crate::world::forwarding::PopView,
    ) -> Vec<(ClientId, usize)> {
        self.edge.affected_flows(action, (view, &self.pops), &self.wire)
    }

    /// Per fault, each recovered flow's time from the fault to its first reply.
    pub fn recoveries_ns(&self) -> Vec<Vec<u64>> {
        self.wire
            .recorded()
            .trackers()
            .iter()
            .map(|tr| tr.first_reply_ns.iter().flatten().map(|&at| at - tr.at_ns).collect())
            .collect()
    }

    pub(super) fn collect_control_violations(&mut self) {
        let found = self.control.as_mut().map(|c| c.take_violations()).unwrap_or_default();
        for v in found {
            self.wire.violation(v);
        }
    }

    pub(super) fn schedule_control(&mut self, events: Vec<(u64, crate::control::ControlEv)>) {
        for (at, ev) in events {
            self.wire.schedule(at, Ev::Control(ev));
        }
    }

    pub(super) fn control_event(&mut self, ev: crate::control::ControlEv) {
        use crate::control::ControlEv;
        let now = self.wire.now();
        let Some(plane) = self.control.as_mut() else { return };
        let events = match ev {
            ControlEv::Tick => plane.tick(now),
            ControlEv::Message { from, to, bytes } => plane.deliver(now, (from, to), &bytes),
            ControlEv::Watch { watcher, update } => {
                let clbs = self.regions.clbs().len();
                for wc in plane.watch_arrived(watcher, *update) {
                    match wc.watcher.checked_sub(clbs) {
                        None => {
                            let change = (&wc.table, &wc.change);
                            self.regions.apply_route_change(ClbId(wc.watcher), self.t, &self.pki, change)
                        }
                        Some(p) => self.pops[PopId(p)].apply_route_change(self.t, &wc.change),
                    }
                }
                Vec::new()
            }
        };
        self.schedule_control(events);
        self.collect_control_violations();
    }
}
