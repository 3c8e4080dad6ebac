//! Impairments in user space (the kernel here has no netem): packets wait in a queue
//! until the `ccn` link model says they arrive — the same model, and the same numbers,
//! as the simulator's links. Lost packets never leave.

use std::time::{Duration, Instant};

use anyedge_ccn::EventQueue;
use anyedge_ccn::{Link, LinkOutcome};

/// Packets on their way, each with where it goes once due.
pub struct Shaper<D> {
    queue: EventQueue<(D, Vec<u8>)>,
    start: Instant,
    /// Off: links add nothing (benchmarks of the forwarder itself).
    enabled: bool,
    /// Packets to send at once (no link, or links off): no timer in their way.
    ready: Vec<(D, Vec<u8>)>,
}

impl<D> Shaper<D> {
    pub fn new(start: Instant, enabled: bool) -> Shaper<D> {
        Shaper { queue: EventQueue::new(), start, enabled, ready: Vec::new() }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Hands a packet to `link`; it comes out of `due` when the link delivers it.
    pub fn push(&mut self, link: &mut Link, flow: u64, dest: D, packet: Vec<u8>) {
        if !self.enabled {
            return self.pass(dest, packet);
        }
        let now = self.now_ns();
        if let LinkOutcome::Deliver(at) = link.transmit(now, packet.len(), flow) {
            self.queue.schedule(at, (dest, packet));
        }
    }

    /// Sends a packet without delay (no link applies to it).
    pub fn pass(&mut self, dest: D, packet: Vec<u8>) {
        self.ready.push((dest, packet));
    }

    /// Packets to send now, without waiting for a timer.
    pub fn take_ready(&mut self) -> Vec<(D, Vec<u8>)> {
        std::mem::take(&mut self.ready)
    }

    /// When the next packet is due, as a tokio instant one millisecond early (tokio's
    /// timer has millisecond steps; `due` waits out the rest precisely).
    pub fn wake_at(&self) -> Option<tokio::time::Instant> {
        let at = self.queue.next_at()?;
        let due = self.start + Duration::from_nanos(at);
        Some(tokio::time::Instant::from_std(due.checked_sub(Duration::from_millis(1)).unwrap_or(due)))
    }

    /// How long until the earliest packet is due, when that is within a millisecond (the
    /// rest of the wait after [`Shaper::wake_at`]); zero otherwise.
    pub fn until_due(&self) -> Duration {
        match self.queue.next_at() {
            Some(at) => {
                let now = self.now_ns();
                if at > now && at - now <= 1_000_000 { Duration::from_nanos(at - now) } else { Duration::ZERO }
            }
            None => Duration::ZERO,
        }
    }

    /// The packets due now, waiting out up to a millisecond for the earliest one.
    pub fn due(&mut self) -> Vec<(D, Vec<u8>)> {
        std::thread::sleep(self.until_due());
        self.due_now()
    }

    /// The packets due now, without waiting.
    pub fn due_now(&mut self) -> Vec<(D, Vec<u8>)> {
        let now = self.now_ns();
        let mut out = std::mem::take(&mut self.ready);
        while let Some(item) = self.queue.pop_until(now) {
            out.push(item);
        }
        out
    }
}
