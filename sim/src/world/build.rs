//! Building the world from a topology: each part is built whole by its own builder
//! (`Network`, `Pki`, the POPs, `Regions`, `Servers`, `Edge`, `Recorder`, `FaultState`,
//! `Probers`), then the first events are scheduled in a fixed order.
use crate::SimError;
use crate::world::World;
use crate::world::classes::ClassInfo;
use crate::world::edge::Edge;
use crate::world::events::DRAIN_NS;
use crate::world::events::Ev;
use crate::world::events::SLOTS_MAX;
use crate::world::fault_state::FaultState;
use crate::world::forwarding::Regions;
use crate::world::forwarding::build_pops;
use crate::world::liveness::Probers;
use crate::world::pki::Pki;
use crate::world::servers::Servers;
use crate::world::wire::Places;
use crate::world::wire::Wire;
use anyedge_ccn::EventQueue;
use anyedge_topology::Topology;

/// What the simulator can hold, beyond what validation checks.
fn check_limits(t: &Topology) -> Result<(), SimError> {
    let total: u64 = t.clients.iter().map(|c| u64::from(c.count)).sum();
    if total > anyedge_topology::CLIENTS_MAX {
        let most = anyedge_topology::CLIENTS_MAX;
        return Err(SimError(format!("{total} clients: the simulator addresses at most {most}")));
    }
    if let Some(g) = t.clients.iter().find(|g| g.traffic.len() * 2 > SLOTS_MAX) {
        return Err(SimError(format!("client group `{}` has more than {} traffic classes", g.name, SLOTS_MAX / 2)));
    }
    Ok(())
}

impl<'t> World<'t> {
    /// The world of a topology, each part whole, with its first events scheduled: CLB
    /// timers, client traffic, probe rounds, the CLB nodes' first outputs, faults and
    /// the control plane's first tick, in that order.
    /// The world of `t`, its backbone envelopes tagged with `tags`.
    pub fn new(t: &'t Topology, tags: anyedge_ccn::Tags) -> Result<World<'t>, SimError> {
        World::with_scope(t, tags, None)
    }

    /// The world of `t`, or the copy of it that runs the partitions `scope` names: every
    /// part is built, but only those partitions' clients get their stacks, and only their
    /// entities get first events.
    pub(super) fn with_scope(
        t: &'t Topology,
        tags: anyedge_ccn::Tags,
        scope: Option<Box<crate::world::partitioning::Scope>>,
    ) -> Result<World<'t>, SimError> {
        check_limits(t)?;
        let pki = Pki::new(t, tags)?;
        let mut q = EventQueue::with_payload(Ev::payload_addr);
        let mine = |part: u32| scope.as_ref().is_none_or(|s| s.mine[part as usize]);
        // Every node's backbone peers, from one reading of which region binds which host.
        let mut peers = anyedge_topology::nodes::PeerLists::default();
        let regions = Regions::build(t, &pki, &mut q, &|r| mine(r as u32), &mut peers);
        let group_mine = |g: usize| scope.as_ref().is_none_or(|s| s.mine[s.parts.group[g] as usize]);
        let (edge, client_by_addr) = Edge::build(t, &mut q, &group_mine)?;
        let pops = build_pops(t, tags, &mut peers);
        let servers = Servers::build(t, tags, &mut peers);
        let places = Places::new(
            t,
            (regions.clbs().iter().map(|n| n.region()).collect(), regions.clb_by_addr()),
            (edge.group_starts().to_vec(), client_by_addr),
            servers.egress_nodes().iter().map(|e| e.region).collect(),
        );
        let wire = Wire::new(t, q, scope, places, servers.hosts().iter().map(|h| h.ip));
        let mut w = World {
            t,
            end_ns: t.duration_ns + DRAIN_NS,
            wire,
            edge,
            classes: t.traffic.iter().map(|c| ClassInfo::of(t, c)).collect(),
            pops,
            regions,
            servers,
            faults: FaultState::new(t),
            probers: Probers::new(t),
            control: None,
            capture: None,
            pki,
        };
        let (probers, mut cx) = w.probe_cx();
        probers.start(&mut cx);
        // Each CLB node's first outputs ask its peers for their tables (empty at start).
        for c in w.regions.clbs().ids().collect::<Vec<_>>() {
            if w.wire.owns(w.wire.clb_part(c)) {
                w.regions.drain(c, &mut w.wire, &mut w.servers);
            }
        }
        for (index, f) in t.faults.iter().enumerate() {
            w.wire.schedule(f.at_ns, Ev::Fault { index });
        }
        if let Some(c) = &t.control {
            // CLB nodes, then POPs (a POP follows the listeners its replies may come from).
            let clbs = w.regions.clbs().iter().map(|n| t.regions[n.region()].location);
            let watchers: Vec<_> = clbs.chain(t.pops.iter().map(|p| p.location)).collect();
            w.control = Some(crate::control::ControlPlane::new(t, c, &watchers).map_err(|e| SimError(e.to_string()))?);
            w.wire.schedule(0, Ev::Control(crate::control::ControlEv::Tick));
        }
        Ok(w)
    }
}
