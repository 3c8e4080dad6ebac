//! Impairments in user space (the kernel here has no netem): packets wait in a queue
//! until the `ccn` link model says they arrive — the same model, and the same numbers,
//! as the simulator's links. Lost packets never leave.
//!
//! A link's delay starts when the packet reached the node (the kernel's receive time, or
//! when the link before it in this node delivered it), not when the node got round to
//! it: the wake-up and processing that the simulator's nodes do not have are absorbed
//! into the modelled delay instead of added to it. And a thread asked to wake at a time
//! wakes some tens of µs after it: the shaper aims early by how late its wake-ups have
//! been coming (a running average, at most [`LEAD_MAX_NS`]), so packets leave on time on
//! average rather than late every time.

use std::time::{Duration, Instant};

use anyedge_ccn::EventQueue;
use anyedge_ccn::{Link, LinkOutcome};

/// The most a shaper aims early: a wake-up later than this is the host being busy, which
/// aiming earlier would not cure.
pub const LEAD_MAX_NS: u64 = 200_000;

/// A packet a link delivered: where it goes, its bytes, and when it was due (ns on the
/// node's clock) — the time the next link in the node starts from.
pub type Due<D> = (D, Vec<u8>, u64);

/// Packets on their way, each with where it goes once due.
pub struct Shaper<D> {
    queue: EventQueue<Due<D>>,
    start: Instant,
    /// Off: links add nothing (benchmarks of the forwarder itself).
    enabled: bool,
    /// Packets to send at once (no link, or links off): no timer in their way.
    ready: Vec<Due<D>>,
    /// How early the shaper aims its wake-ups: the running average (weight 1/8) of how
    /// late they came, in ns, at most [`LEAD_MAX_NS`].
    lead_ns: u64,
}

impl<D> Shaper<D> {
    pub fn new(start: Instant, enabled: bool) -> Shaper<D> {
        Shaper { queue: EventQueue::new(), start, enabled, ready: Vec::new(), lead_ns: 0 }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// When the node's clock started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The node's clock, ns since its start: what a packet that has no receive time of
    /// its own arrived at.
    pub fn now(&self) -> u64 {
        self.now_ns()
    }

    /// Hands a packet that reached this node at `arrived_ns` to `link`; it comes out of
    /// `due` when the link delivers it, `arrived_ns` + the link's delay (no earlier than
    /// now: a node slower than the link is late, never early).
    pub fn push(&mut self, link: &mut Link, flow: u64, dest: D, packet: Vec<u8>, arrived_ns: u64) {
        if !self.enabled {
            return self.pass(dest, packet, arrived_ns);
        }
        let arrived_ns = arrived_ns.min(self.now_ns());
        if let LinkOutcome::Deliver(at) = link.transmit(arrived_ns, packet.len(), flow) {
            self.queue.schedule(at, (dest, packet, at));
        }
    }

    /// Sends a packet without delay (no link applies to it); `at_ns` is when it reached
    /// the node.
    pub fn pass(&mut self, dest: D, packet: Vec<u8>, at_ns: u64) {
        self.ready.push((dest, packet, at_ns));
    }

    /// Packets to send now, without waiting for a timer.
    pub fn take_ready(&mut self) -> Vec<Due<D>> {
        std::mem::take(&mut self.ready)
    }

    /// When to wake for the next packet: its due time less the lead (for the node's
    /// [`PreciseTimer`](crate::io::timer::PreciseTimer)).
    pub fn wake_at(&self) -> Option<Instant> {
        let at = self.queue.next_at()?;
        Some(self.start + Duration::from_nanos(at.saturating_sub(self.lead_ns)))
    }

    /// The packets due now, when the timer set for [`wake_at`](Self::wake_at) fired: how
    /// late it fired teaches the lead.
    pub fn due(&mut self) -> Vec<Due<D>> {
        if let Some(at) = self.queue.next_at() {
            let (aimed, now) = (at.saturating_sub(self.lead_ns), self.now_ns());
            if aimed <= now {
                self.learn_lateness(now - aimed);
            }
        }
        self.due_now()
    }

    /// One wake-up came `late_ns` after it was asked for.
    pub fn learn_lateness(&mut self, late_ns: u64) {
        let late_ns = late_ns.min(LEAD_MAX_NS);
        self.lead_ns = (self.lead_ns * 7 + late_ns) / 8;
        debug_assert!(self.lead_ns <= LEAD_MAX_NS, "the lead stays within its bound");
    }

    /// The packets due now (within the lead), without waiting.
    pub fn due_now(&mut self) -> Vec<Due<D>> {
        let until = self.now_ns() + self.lead_ns;
        let mut out = std::mem::take(&mut self.ready);
        while let Some(item) = self.queue.pop_until(until) {
            out.push(item);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_ccn::{ComponentRng, Impairment, LinkModel};

    fn link(delay_ns: u64) -> Link {
        let model = LinkModel {
            impairment: Impairment { delay_ns, jitter_mean_ns: 0, loss: 0.0 },
            bandwidth_bps: None,
            queue_bytes_max: u64::MAX,
        };
        Link::new(model, ComponentRng::new(1, "test-link"))
    }

    #[test]
    fn a_links_delay_starts_when_the_packet_reached_the_node_not_when_it_was_pushed() {
        let mut shaper: Shaper<u8> = Shaper::new(Instant::now(), true);
        let mut l = link(30_000_000);
        std::thread::sleep(Duration::from_millis(20));
        // Reached the node at its start (its receive time), handed over 20 ms later.
        shaper.push(&mut l, 1, 7, vec![1], 0);
        std::thread::sleep(shaper.wake_at().unwrap().saturating_duration_since(Instant::now()));
        let got = shaper.due();
        let left = shaper.now();
        assert_eq!(got[0].2, 30_000_000, "due at arrival + delay");
        assert!(left < 45_000_000, "left {left} ns after start: not at push + delay (50 ms)");
    }

    #[test]
    fn the_lead_follows_the_lateness_of_wake_ups_within_its_bound() {
        let mut shaper: Shaper<u8> = Shaper::new(Instant::now(), true);
        for _ in 0..100 {
            shaper.learn_lateness(40_000);
        }
        assert!((39_000..=40_000).contains(&shaper.lead_ns), "{}", shaper.lead_ns);
        for _ in 0..100 {
            shaper.learn_lateness(10_000_000);
        }
        let lead = shaper.lead_ns;
        assert!(lead <= LEAD_MAX_NS && lead > LEAD_MAX_NS * 9 / 10, "a busy host's lateness is not chased: {lead}");
    }
}
