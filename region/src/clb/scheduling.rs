//! How a CLB node picks a backend for a new flow: a live persistence entry first, then
//! the listener's scheduler over the weights of the backends that serve now.

use anyedge_proto::FlowKey;
use anyedge_proto::inner::{Fnv, mix64};
use std::net::IpAddr;

use super::Clb;
use super::persistence::Sticky;
use crate::config::SchedulerKind;
use crate::tables::PortId;

/// The hash `hash` listeners schedule by: the client's address alone.
fn source_hash(src: IpAddr) -> u32 {
    let mut h = Fnv::new();
    h.addr(src);
    (mix64(h.finish()) >> 32) as u32
}

impl Clb {
    /// Weights as schedulers see them: 0 for unhealthy or unbound ports.
    fn effective_weights(&self, li: usize) -> Vec<u32> {
        let live = |p: PortId| self.health.is_healthy(p) && !self.backends[p].unbound;
        self.listeners[li]
            .bindings()
            .iter()
            .map(|b| if live(b.port) { u32::from(b.backend.weight) } else { 0 })
            .collect()
    }

    /// Whether an existing flow may stay on its backend (weight 0 does not matter).
    pub(super) fn serves_existing(&self, li: usize, binding: usize) -> bool {
        if self.listeners[li].is_removed() {
            return false;
        }
        let p = self.listeners[li].bindings()[binding].port;
        self.health.is_healthy(p) && !self.backends[p].unbound
    }

    /// Whether a new flow may go to this binding.
    fn eligible(&self, li: usize, binding: usize) -> bool {
        let l = &self.listeners[li];
        l.bindings().get(binding).is_some_and(|b| b.backend.weight > 0) && self.serves_existing(li, binding)
    }

    /// Picks a binding for a new flow: a live persistence entry first, then the scheduler.
    pub(super) fn pick(&mut self, li: usize, key: &FlowKey, now_ns: u64) -> Option<usize> {
        let persistence_ns = self.listeners[li].config().persistence_ns;
        if let Some(ttl_ns) = persistence_ns
            && let Some(sticky) = self.persistence.get(li, key.src)
            && sticky.expires_ns > now_ns
            && self.eligible(li, sticky.binding)
        {
            let renew = now_ns.saturating_sub(sticky.synced_ns) >= ttl_ns / 4;
            let synced_ns = if renew { now_ns } else { sticky.synced_ns };
            self.persistence.put(li, key.src, Sticky { expires_ns: now_ns + ttl_ns, synced_ns, ..sticky });
            if renew {
                self.sync_persistence(now_ns, li, key.src, sticky.binding, ttl_ns);
            }
            return Some(sticky.binding);
        }
        let binding = self.schedule(li, key)?;
        debug_assert!(self.effective_weights(li)[binding] > 0, "a scheduler picks only a live, weighted binding");
        if let Some(ttl_ns) = persistence_ns {
            self.persistence.put(li, key.src, Sticky { binding, expires_ns: now_ns + ttl_ns, synced_ns: now_ns });
            self.sync_persistence(now_ns, li, key.src, binding, ttl_ns);
        }
        Some(binding)
    }

    /// The listener's scheduler's choice.
    fn schedule(&mut self, li: usize, key: &FlowKey) -> Option<usize> {
        match self.listeners[li].config().scheduler {
            SchedulerKind::Wrr => {
                let weights = self.effective_weights(li);
                self.listeners.pick_wrr(li, &weights)
            }
            SchedulerKind::Wlc => self.least_connections(li),
            SchedulerKind::Hash { .. } => self.listeners[li].table()?.lookup(source_hash(key.src)),
            SchedulerKind::Maglev { .. } => self.listeners[li].table()?.lookup(key.flow_hash()),
        }
    }

    /// The binding with the fewest active flows per unit of weight; ties go to the
    /// heavier, then the first.
    fn least_connections(&self, li: usize) -> Option<usize> {
        let weights = self.effective_weights(li);
        let bindings = self.listeners[li].bindings();
        let active = |i: usize| bindings[i].active();
        let mut best: Option<usize> = None;
        for (i, &w) in weights.iter().enumerate().filter(|(_, w)| **w > 0) {
            best = match best {
                None => Some(i),
                Some(b) => {
                    // active[i]/w < active[b]/weights[b], without division.
                    let lhs = u64::from(active(i)) * u64::from(weights[b]);
                    let rhs = u64::from(active(b)) * u64::from(w);
                    if lhs < rhs || (lhs == rhs && w > weights[b]) { Some(i) } else { Some(b) }
                }
            };
        }
        best
    }

    /// The lookup tables of `maglev` and `hash` listeners, from today's weights.
    pub(super) fn rebuild_tables(&mut self) {
        for li in 0..self.listeners.len() {
            let table_size = match self.listeners[li].config().scheduler {
                SchedulerKind::Maglev { table_size } | SchedulerKind::Hash { table_size } => table_size,
                SchedulerKind::Wrr | SchedulerKind::Wlc => continue,
            };
            let weights = self.effective_weights(li);
            self.listeners.rebuild_table(li, &weights, table_size);
        }
    }
}
