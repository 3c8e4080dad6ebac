//! One direction of a link: propagation delay, non-negative jitter, random loss, and
//! optionally a bandwidth with a bounded FIFO queue (tail drop). Sans-IO: time is an
//! argument, the outcome is a delivery time.

use crate::rng::ComponentRng;

/// Delay, jitter and loss of a path; a fault may override them for a while.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// One-way fixed delay.
    pub delay_ns: u64,
    /// Mean of the exponentially distributed extra delay each packet gets.
    pub jitter_mean_ns: u64,
    /// Probability a packet is lost, 0..=1.
    pub loss: f64,
}

/// What a link is built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    pub impairment: Impairment,
    /// `None`: the link never queues (the internet model).
    pub bandwidth_bps: Option<u64>,
    /// Bytes the queue holds before it drops.
    pub queue_bytes_max: u64,
}

/// What happened to a packet handed to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Arrives at the far end at this time.
    Deliver(u64),
    /// Lost on the wire (random loss).
    Lost,
    /// Dropped at the tail of a full queue.
    QueueFull,
}

/// The state of one direction of a link.
#[derive(Debug, Clone)]
pub struct Link {
    model: LinkModel,
    override_impairment: Option<Impairment>,
    /// When the transmitter finishes serialising what it already accepted.
    busy_until_ns: u64,
    rng: ComponentRng,
}

impl Link {
    pub fn new(model: LinkModel, rng: ComponentRng) -> Link {
        Link { model, override_impairment: None, busy_until_ns: 0, rng }
    }

    pub fn model(&self) -> &LinkModel {
        &self.model
    }

    /// The impairment in force now.
    pub fn impairment(&self) -> Impairment {
        self.override_impairment.unwrap_or(self.model.impairment)
    }

    /// Replaces delay, jitter or loss until `clear_override`.
    pub fn set_override(&mut self, impairment: Impairment) {
        self.override_impairment = Some(impairment);
    }

    pub fn clear_override(&mut self) {
        self.override_impairment = None;
    }

    /// Hands a packet of `size_bytes` to the link at `now_ns`.
    pub fn transmit(&mut self, now_ns: u64, size_bytes: usize) -> Outcome {
        let imp = self.impairment();
        let mut depart_ns = now_ns;
        if let Some(bps) = self.model.bandwidth_bps.filter(|&b| b > 0) {
            let start_ns = self.busy_until_ns.max(now_ns);
            let backlog_bytes = ((start_ns - now_ns) as u128 * bps as u128 / 8 / 1_000_000_000) as u64;
            if backlog_bytes + size_bytes as u64 > self.model.queue_bytes_max {
                return Outcome::QueueFull;
            }
            let serialise_ns = (size_bytes as u128 * 8 * 1_000_000_000).div_ceil(bps as u128) as u64;
            self.busy_until_ns = start_ns + serialise_ns;
            depart_ns = self.busy_until_ns;
        }
        if self.rng.chance(imp.loss) {
            return Outcome::Lost;
        }
        let jitter_ns = self.rng.exponential(imp.jitter_mean_ns as f64) as u64;
        Outcome::Deliver(depart_ns + imp.delay_ns + jitter_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(loss: f64, bandwidth_bps: Option<u64>, queue_bytes_max: u64) -> LinkModel {
        LinkModel { impairment: Impairment { delay_ns: 1_000_000, jitter_mean_ns: 0, loss }, bandwidth_bps, queue_bytes_max }
    }

    #[test]
    fn delivery_is_never_earlier_than_delay() {
        let mut m = model(0.0, None, 0);
        m.impairment.jitter_mean_ns = 500_000;
        let mut link = Link::new(m, ComponentRng::new(1, "l"));
        for i in 0..10_000u64 {
            match link.transmit(i, 100) {
                Outcome::Deliver(at) => assert!(at >= i + 1_000_000),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn loss_rate_matches_configuration() {
        let mut link = Link::new(model(0.05, None, 0), ComponentRng::new(3, "l"));
        let lost = (0..100_000).filter(|_| link.transmit(0, 100) == Outcome::Lost).count();
        assert!((4_500..5_500).contains(&lost), "{lost}");
    }

    #[test]
    fn bandwidth_serialises_and_full_queue_drops() {
        // 8 Mbit/s: 1000 bytes take 1 ms; the queue holds 3000 bytes.
        let mut link = Link::new(model(0.0, Some(8_000_000), 3_000), ComponentRng::new(1, "l"));
        assert_eq!(link.transmit(0, 1000), Outcome::Deliver(2_000_000));
        assert_eq!(link.transmit(0, 1000), Outcome::Deliver(3_000_000));
        assert_eq!(link.transmit(0, 1000), Outcome::Deliver(4_000_000));
        assert_eq!(link.transmit(0, 1000), Outcome::QueueFull);
        assert_eq!(link.transmit(3_000_000, 1000), Outcome::Deliver(5_000_000));
    }

    #[test]
    fn override_changes_loss_until_cleared() {
        let mut link = Link::new(model(0.0, None, 0), ComponentRng::new(1, "l"));
        link.set_override(Impairment { delay_ns: 1_000_000, jitter_mean_ns: 0, loss: 1.0 });
        assert_eq!(link.transmit(0, 10), Outcome::Lost);
        link.clear_override();
        assert_eq!(link.transmit(0, 10), Outcome::Deliver(1_000_000));
    }
}
