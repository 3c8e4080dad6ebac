//! One direction of a link: propagation delay, non-negative jitter, random loss, and
//! optionally a bandwidth with a bounded FIFO queue (tail drop). Sans-IO: time is an
//! argument, the outcome is a delivery time.
//!
//! Jitter never reorders one flow's packets: like a path of FIFO queues (and ECMP that
//! keeps a flow on one path), a packet is never delivered before an earlier packet of
//! its own flow. Packets of different flows may overtake each other.

use rustc_hash::FxHashMap;

use crate::rng::ComponentRng;

/// The fewest flows a link remembers for ordering before it forgets those already
/// delivered (it sweeps again each time the map doubles past what survived). Small: a
/// world of many slow flows puts a new key in the map for almost every packet, and
/// hundreds of links each holding a thousand-entry table no longer fit in cache (two
/// misses a packet: the table's control bytes and its slot).
const SWEEP_MIN: usize = 64;

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
pub enum LinkOutcome {
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
    /// Latest delivery time per flow, to keep each flow in order. Only deliveries still
    /// ahead of the clock matter; the rest are swept out whenever the map has doubled
    /// since the last sweep, so it stays near the number of flows in flight rather than
    /// every flow the link ever carried (a cache-friendly size as worlds grow).
    last_delivery_ns: FxHashMap<u64, u64>,
    /// Sweep when the map reaches this many entries.
    sweep_at: usize,
    /// No packet handed to the link will ever be delayed less than this: the model's
    /// delay, or less when declared (see [`Link::with_delay_floor`]).
    delay_floor_ns: u64,
}

impl Link {
    pub fn new(model: LinkModel, rng: ComponentRng) -> Link {
        Link {
            model,
            override_impairment: None,
            busy_until_ns: 0,
            rng,
            last_delivery_ns: FxHashMap::default(),
            sweep_at: SWEEP_MIN,
            delay_floor_ns: model.impairment.delay_ns,
        }
    }

    /// Declares the lowest delay any override will set, when it is below the model's.
    /// A packet never crosses the link faster than its floor (the model's delay unless
    /// lowered here). A flow's earlier delivery only holds a later packet back while it is
    /// more than the floor ahead of the clock (a later packet leaves no earlier than now
    /// and takes at least the floor), so the link forgets it then, not when it lands: the
    /// map holds the flows whose jitter is still ahead of the delay, a small fraction of
    /// those in flight, and stays in cache. What is delivered is the same.
    pub fn with_delay_floor(mut self, floor_ns: u64) -> Link {
        self.delay_floor_ns = self.delay_floor_ns.min(floor_ns);
        debug_assert!(self.delay_floor_ns <= self.model.impairment.delay_ns);
        self
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
        debug_assert!(impairment.delay_ns >= self.delay_floor_ns, "an override below the declared delay floor");
        // An undeclared lower delay: order is kept from here on as without a floor.
        self.delay_floor_ns = self.delay_floor_ns.min(impairment.delay_ns);
        self.override_impairment = Some(impairment);
    }

    pub fn clear_override(&mut self) {
        self.override_impairment = None;
    }

    /// Hands a packet of `size_bytes` belonging to `flow` to the link at `now_ns`.
    pub fn transmit(&mut self, now_ns: u64, size_bytes: usize, flow: u64) -> LinkOutcome {
        let loss = self.impairment().loss;
        self.transmit_with_loss(now_ns, size_bytes, flow, loss)
    }

    /// [`Link::transmit`] for an IP datagram of `size_bytes` (its header of
    /// `header_bytes` included: 20 for IPv4, 48 for IPv6 with its Fragment header) over a
    /// path of `mtu_bytes`: past the MTU it travels as fragments (RFC 791, RFC 8200
    /// §4.5), each with its own header on the wire and each meeting the loss on its own,
    /// and it arrives only when every one does. So n fragments are lost with probability
    /// 1 − (1 − p)^n, decided by one draw (and one jitter draw for the delay), and a
    /// datagram within the MTU draws exactly what `transmit` does.
    pub fn transmit_datagram(
        &mut self,
        now_ns: u64,
        (size_bytes, header_bytes): (usize, usize),
        mtu_bytes: usize,
        flow: u64,
    ) -> LinkOutcome {
        let n = fragments(size_bytes, header_bytes, mtu_bytes);
        let loss = self.impairment().loss;
        if n == 1 {
            return self.transmit_with_loss(now_ns, size_bytes, flow, loss);
        }
        let wire_bytes = size_bytes + (n - 1) * header_bytes;
        let all_arrive = (1.0 - loss).powi(i32::try_from(n).unwrap_or(i32::MAX));
        debug_assert!((0.0..=1.0).contains(&all_arrive) && all_arrive <= 1.0 - loss + f64::EPSILON);
        self.transmit_with_loss(now_ns, wire_bytes, flow, 1.0 - all_arrive)
    }

    fn transmit_with_loss(&mut self, now_ns: u64, size_bytes: usize, flow: u64, loss: f64) -> LinkOutcome {
        let imp = self.impairment();
        let mut depart_ns = now_ns;
        if let Some(bps) = self.model.bandwidth_bps.filter(|&b| b > 0) {
            let start_ns = self.busy_until_ns.max(now_ns);
            let backlog_bytes = ((start_ns - now_ns) as u128 * bps as u128 / 8 / 1_000_000_000) as u64;
            if backlog_bytes + size_bytes as u64 > self.model.queue_bytes_max {
                return LinkOutcome::QueueFull;
            }
            let serialise_ns = (size_bytes as u128 * 8 * 1_000_000_000).div_ceil(bps as u128) as u64;
            self.busy_until_ns = start_ns + serialise_ns;
            depart_ns = self.busy_until_ns;
        }
        if self.rng.chance(loss) {
            return LinkOutcome::Lost;
        }
        let jitter_ns = self.rng.exponential(imp.jitter_mean_ns as f64) as u64;
        let mut at_ns = depart_ns + imp.delay_ns + jitter_ns;
        debug_assert!(at_ns >= now_ns + self.delay_floor_ns, "nothing crosses faster than the floor");
        if imp.jitter_mean_ns > 0 {
            if self.last_delivery_ns.len() >= self.sweep_at {
                // What no later packet can arrive before (it leaves at `now_ns` or later
                // and takes the floor at least) can never hold one back.
                let horizon = now_ns.saturating_add(self.delay_floor_ns);
                self.last_delivery_ns.retain(|_, &mut t| t > horizon);
                self.sweep_at = (2 * self.last_delivery_ns.len()).max(SWEEP_MIN);
                // A table stays as large as it ever grew: give back what a burst left.
                if self.last_delivery_ns.capacity() > 4 * self.sweep_at {
                    self.last_delivery_ns.shrink_to(self.sweep_at);
                }
            }
            let last = self.last_delivery_ns.entry(flow).or_insert(0);
            at_ns = at_ns.max(*last);
            *last = at_ns;
            debug_assert!(self.last_delivery_ns.len() <= self.sweep_at.max(SWEEP_MIN) + 1);
        }
        LinkOutcome::Deliver(at_ns)
    }
}

/// The fragments a datagram of `size_bytes` (a header of `header_bytes` included) takes
/// over a path of `mtu_bytes`: each carries the header and a multiple of 8 bytes of the
/// rest (the last one what is left).
pub fn fragments(size_bytes: usize, header_bytes: usize, mtu_bytes: usize) -> usize {
    if size_bytes <= mtu_bytes {
        return 1;
    }
    let per_fragment = (mtu_bytes.saturating_sub(header_bytes) & !7).max(8);
    debug_assert!(per_fragment.is_multiple_of(8), "fragment offsets count 8-byte units");
    let n = size_bytes.saturating_sub(header_bytes).div_ceil(per_fragment);
    debug_assert!(n >= 2 || mtu_bytes < header_bytes + 8, "a datagram past the MTU takes two fragments at least");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(loss: f64, bandwidth_bps: Option<u64>, queue_bytes_max: u64) -> LinkModel {
        LinkModel {
            impairment: Impairment { delay_ns: 1_000_000, jitter_mean_ns: 0, loss },
            bandwidth_bps,
            queue_bytes_max,
        }
    }

    #[test]
    fn delivery_is_never_earlier_than_delay() {
        let mut m = model(0.0, None, 0);
        m.impairment.jitter_mean_ns = 500_000;
        let mut link = Link::new(m, ComponentRng::new(1, "l"));
        for i in 0..10_000u64 {
            match link.transmit(i, 100, i) {
                LinkOutcome::Deliver(at) => assert!(at >= i + 1_000_000),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A declared delay floor changes what the link remembers, never what it delivers:
    /// the same packets get the same times with and without it, through an override
    /// that stays above the floor, while the floored map holds far fewer flows.
    #[test]
    fn a_delay_floor_forgets_sooner_and_delivers_the_same() {
        let mut m = model(0.01, None, 0);
        m.impairment = Impairment { delay_ns: 30_000_000, jitter_mean_ns: 4_000_000, loss: 0.01 };
        let mut plain = Link::new(m, ComponentRng::new(3, "l")).with_delay_floor(0);
        let mut floored = Link::new(m, ComponentRng::new(3, "l"));
        let (mut plain_max, mut floored_max) = (0, 0);
        for i in 0..200_000u64 {
            if i == 100_000 {
                let slower = Impairment { delay_ns: 35_000_000, jitter_mean_ns: 9_000_000, loss: 0.0 };
                plain.set_override(slower);
                floored.set_override(slower);
            }
            // 20 µs apart: two busy flows, 40 flows a packet every 3.2 ms (as far apart
            // as jitter reaches), and 5,000 slow ones.
            let flow = match i % 4 {
                0 => i % 8,
                1 => 10_000 + (i / 4) % 40,
                _ => (i * 7919) % 5_000,
            };
            let now = i * 20_000;
            assert_eq!(plain.transmit(now, 200, flow), floored.transmit(now, 200, flow), "packet {i}");
            if i < 100_000 {
                plain_max = plain_max.max(plain.last_delivery_ns.len());
                floored_max = floored_max.max(floored.last_delivery_ns.len());
            }
        }
        // Before the override the floor is the delay: only jitter's excess is remembered.
        assert!(floored_max * 4 < plain_max, "floored {floored_max}, plain {plain_max} flows remembered");
    }

    #[test]
    fn jitter_never_reorders_a_flow() {
        let mut m = model(0.0, None, 0);
        m.impairment.jitter_mean_ns = 4_000_000;
        let mut link = Link::new(m, ComponentRng::new(9, "l"));
        let mut last = [0u64; 2];
        let mut overtakes = 0;
        for i in 0..10_000u64 {
            let flow = i % 2;
            let LinkOutcome::Deliver(at) = link.transmit(i * 10_000, 100, flow) else { panic!() };
            assert!(at >= last[flow as usize], "flow {flow} reordered");
            if at < last[(1 - flow) as usize] {
                overtakes += 1;
            }
            last[flow as usize] = at;
        }
        assert!(overtakes > 0, "different flows may still overtake each other");
    }

    #[test]
    fn loss_rate_matches_configuration() {
        let mut link = Link::new(model(0.05, None, 0), ComponentRng::new(3, "l"));
        let lost = (0..100_000).filter(|_| link.transmit(0, 100, 0) == LinkOutcome::Lost).count();
        assert!((4_500..5_500).contains(&lost), "{lost}");
    }

    #[test]
    fn a_datagram_past_the_mtu_is_lost_when_any_of_its_fragments_is() {
        // 3,000 bytes of IPv4 over 1,500: 3 fragments (1,480 + 1,480 + 20 bytes of data).
        assert_eq!(fragments(3_000, 20, 1_500), 3);
        assert_eq!(fragments(1_500, 20, 1_500), 1);
        assert_eq!(fragments(9_000, 48, 1_500), 7, "IPv6: 1,448 bytes a fragment");
        let mut link = Link::new(model(0.05, None, 0), ComponentRng::new(3, "l"));
        let lost =
            (0..100_000).filter(|_| link.transmit_datagram(0, (3_000, 20), 1_500, 0) == LinkOutcome::Lost).count();
        // 1 - 0.95^3 = 14.3 %.
        assert!((13_800..14_800).contains(&lost), "{lost}");
        // Within the MTU, the same draws as a packet.
        let (mut a, mut b) = (
            Link::new(model(0.05, None, 0), ComponentRng::new(4, "l")),
            Link::new(model(0.05, None, 0), ComponentRng::new(4, "l")),
        );
        for i in 0..1_000 {
            assert_eq!(a.transmit(i, 1_400, 0), b.transmit_datagram(i, (1_400, 20), 1_500, 0));
        }
        // Serialised with a header per fragment: 3,040 bytes at 8 Mbit/s.
        let mut slow = Link::new(model(0.0, Some(8_000_000), 100_000), ComponentRng::new(1, "l"));
        assert_eq!(slow.transmit_datagram(0, (3_000, 20), 1_500, 0), LinkOutcome::Deliver(1_000_000 + 3_040_000));
    }

    #[test]
    fn bandwidth_serialises_and_full_queue_drops() {
        // 8 Mbit/s: 1000 bytes take 1 ms; the queue holds 3000 bytes.
        let mut link = Link::new(model(0.0, Some(8_000_000), 3_000), ComponentRng::new(1, "l"));
        assert_eq!(link.transmit(0, 1000, 0), LinkOutcome::Deliver(2_000_000));
        assert_eq!(link.transmit(0, 1000, 0), LinkOutcome::Deliver(3_000_000));
        assert_eq!(link.transmit(0, 1000, 0), LinkOutcome::Deliver(4_000_000));
        assert_eq!(link.transmit(0, 1000, 0), LinkOutcome::QueueFull);
        assert_eq!(link.transmit(3_000_000, 1000, 0), LinkOutcome::Deliver(5_000_000));
    }

    #[test]
    fn override_changes_loss_until_cleared() {
        let mut link = Link::new(model(0.0, None, 0), ComponentRng::new(1, "l"));
        link.set_override(Impairment { delay_ns: 1_000_000, jitter_mean_ns: 0, loss: 1.0 });
        assert_eq!(link.transmit(0, 10, 0), LinkOutcome::Lost);
        link.clear_override();
        assert_eq!(link.transmit(0, 10, 0), LinkOutcome::Deliver(1_000_000));
    }
}
