//! The liveness prober both drivers are to run (sans-IO): every `interval` it probes each
//! peer, and from the answers that come back — or do not — it decides when a peer is down
//! (`misses` probes in a row unanswered) and when it is up again (the first answer after).
//! An answer counts whenever it comes back before the peer is declared down, so a path
//! whose round trip is longer than one interval (a POP on another continent) keeps its
//! peer up as long as the round trip is shorter than `misses` intervals.
//! Time comes in as an argument; probes go out as outputs the driver carries (simulated
//! links, UDP sockets), so loss and delay on the way slow detection as they would.

use std::collections::VecDeque;

/// How a prober probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Time between two probes to the same peer.
    pub interval_ns: u64,
    /// Unanswered probes in a row that make a peer down (at least 1).
    pub misses: u32,
}

impl LivenessConfig {
    /// The longest a dead peer can go unnoticed: the probe it missed first may leave up to
    /// one interval after it died, and `misses` intervals must pass without an answer.
    pub fn detect_ns_max(&self) -> u64 {
        self.interval_ns * (u64::from(self.misses.max(1)) + 1)
    }
}

/// What the driver must do, or learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessOutput {
    /// Send probe `seq` to peer `peer`; its answer comes back through `handle_answer`.
    Send { peer: usize, seq: u64 },
    /// The peer stopped answering.
    Down { peer: usize },
    /// The peer answers again.
    Up { peer: usize },
}

#[derive(Debug, Clone)]
struct Peer {
    up: bool,
    /// The newest probe answered (0: none yet; probes count from 1) — or, once the peer
    /// is down, the last probe sent before: only an answer to a later one brings it back.
    answered: u64,
}

/// Probes a fixed set of peers (0..n) and tracks which answer.
#[derive(Debug, Clone)]
pub struct LivenessProber {
    config: LivenessConfig,
    peers: Vec<Peer>,
    next_probe_ns: u64,
    seq: u64,
    outputs: VecDeque<LivenessOutput>,
}

impl LivenessProber {
    /// A prober of `peers` peers, all taken to be up, probing first at `now_ns`.
    pub fn new(peers: usize, config: LivenessConfig, now_ns: u64) -> LivenessProber {
        let config = LivenessConfig { interval_ns: config.interval_ns.max(1), misses: config.misses.max(1) };
        let peer = Peer { up: true, answered: 0 };
        LivenessProber { config, peers: vec![peer; peers], next_probe_ns: now_ns, seq: 0, outputs: VecDeque::new() }
    }

    /// Starts over, as a restarted node does: every peer taken to be up, the first probe
    /// at `now_ns`, nothing remembered.
    pub fn restart(&mut self, now_ns: u64) {
        *self = LivenessProber::new(self.peers.len(), self.config, now_ns);
    }

    pub fn config(&self) -> LivenessConfig {
        self.config
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> u64 {
        self.next_probe_ns
    }

    /// Counts the probes that went unanswered and sends the next round.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        if now_ns < self.next_probe_ns {
            return;
        }
        // Rounds keep to their grid, so a driver that wakes a little late (by varying
        // amounts) gets a round every wake-up; after a pause of more than an interval,
        // one round (bounded work), then the grid restarts from now.
        let interval = self.config.interval_ns;
        self.next_probe_ns =
            if now_ns - self.next_probe_ns < interval { self.next_probe_ns + interval } else { now_ns + interval };
        self.seq += 1;
        debug_assert!(self.next_probe_ns > now_ns, "the next round is in the future");
        for (i, peer) in self.peers.iter_mut().enumerate() {
            // Probes answered..seq-1 went out and none of them came back.
            let missed = (self.seq - 1).saturating_sub(peer.answered);
            if peer.up && missed >= u64::from(self.config.misses) {
                peer.up = false;
                peer.answered = self.seq - 1;
                self.outputs.push_back(LivenessOutput::Down { peer: i });
            }
            debug_assert!(peer.answered < self.seq, "no answer to a probe not yet sent");
            self.outputs.push_back(LivenessOutput::Send { peer: i, seq: self.seq });
        }
    }

    /// An answer to probe `seq` came back from `peer`. Answers older than one already
    /// counted, to probes never sent, or from peers unknown change nothing.
    pub fn handle_answer(&mut self, peer: usize, seq: u64) {
        let Some(p) = self.peers.get_mut(peer) else { return };
        if seq <= p.answered || seq > self.seq {
            return;
        }
        p.answered = seq;
        debug_assert!(p.answered <= self.seq);
        if !p.up {
            p.up = true;
            self.outputs.push_back(LivenessOutput::Up { peer });
        }
    }

    pub fn poll_output(&mut self) -> Option<LivenessOutput> {
        self.outputs.pop_front()
    }

    pub fn is_up(&self, peer: usize) -> bool {
        self.peers.get(peer).is_some_and(|p| p.up)
    }
}

#[cfg(test)]
mod tests {
    //! Two probers' worth of harness: a peer that answers (after a delay, or not at all),
    //! time moving in steps of a millisecond.
    use super::*;

    const MS: u64 = 1_000_000;

    /// Runs a prober of one peer until `until_ns`; the peer answers each probe
    /// `rtt_ns` later while `alive(now)` holds, and `lost(seq)` drops some. Returns when
    /// Down and Up came out.
    fn run(
        config: LivenessConfig,
        until_ns: u64,
        rtt_ns: u64,
        alive: impl Fn(u64) -> bool,
        lost: impl Fn(u64) -> bool,
    ) -> (Vec<u64>, Vec<u64>) {
        let mut p = LivenessProber::new(1, config, 0);
        let mut in_flight: Vec<(u64, u64)> = Vec::new();
        let (mut downs, mut ups) = (Vec::new(), Vec::new());
        let mut now = 0;
        while now <= until_ns {
            p.handle_timeout(now);
            in_flight.retain(|&(at, seq)| {
                if at <= now {
                    p.handle_answer(0, seq);
                    false
                } else {
                    true
                }
            });
            while let Some(out) = p.poll_output() {
                match out {
                    LivenessOutput::Send { seq, .. } if alive(now) && !lost(seq) => in_flight.push((now + rtt_ns, seq)),
                    LivenessOutput::Send { .. } => {}
                    LivenessOutput::Down { .. } => downs.push(now),
                    LivenessOutput::Up { .. } => ups.push(now),
                }
            }
            now += MS;
        }
        (downs, ups)
    }

    #[test]
    fn a_dead_peer_is_down_within_the_configured_bound_and_up_at_its_first_answer() {
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 3 };
        let died = 1_020 * MS;
        let back = 3_000 * MS;
        let (downs, ups) = run(config, 4_000 * MS, 10 * MS, |t| t < died || t >= back, |_| false);
        assert_eq!(downs.len(), 1, "{downs:?}");
        let detect = downs[0] - died;
        assert!(detect <= config.detect_ns_max() && detect >= 2 * config.interval_ns, "detected after {detect} ns");
        assert_eq!(ups.len(), 1);
        assert!(ups[0] >= back && ups[0] - back <= config.interval_ns + 10 * MS, "up at {}", ups[0]);
    }

    #[test]
    fn a_live_peer_on_a_lossy_path_is_not_declared_down_by_scattered_losses() {
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 3 };
        // Every fourth probe lost: never three in a row.
        let (downs, _) = run(config, 10_000 * MS, 10 * MS, |_| true, |seq| seq % 4 == 0);
        assert!(downs.is_empty(), "{downs:?}");
    }

    #[test]
    fn answers_slower_than_the_whole_window_count_as_misses() {
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 3 };
        let (downs, _) = run(config, 2_000 * MS, 200 * MS, |_| true, |_| false);
        assert!(!downs.is_empty(), "a peer whose answers come after 3 intervals is as good as dead");
        assert_eq!(downs[0], 150 * MS, "down at the round that found three probes unanswered");
    }

    #[test]
    fn a_far_peer_whose_round_trip_exceeds_one_interval_stays_up_and_is_still_detected() {
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 6 };
        let (downs, _) = run(config, 5_000 * MS, 180 * MS, |_| true, |_| false);
        assert!(downs.is_empty(), "a 180 ms round trip fits in 6 × 50 ms: {downs:?}");
        let died = 2_010 * MS;
        let (downs, _) = run(config, 5_000 * MS, 180 * MS, |t| t < died, |_| false);
        assert_eq!(downs.len(), 1);
        assert!(downs[0] - died <= config.detect_ns_max(), "detected after {} ns", downs[0] - died);
    }

    #[test]
    fn a_driver_ticking_on_a_fixed_grid_with_varying_lateness_gets_a_round_every_tick() {
        // A real driver (a tokio interval) wakes a little late, by varying amounts: each
        // wake-up must still send a round, or probing runs at half speed.
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 6 };
        let mut p = LivenessProber::new(1, config, 0);
        let mut rounds = 0;
        for k in 0..100u64 {
            let late = if k % 2 == 0 { 300_000 } else { 100_000 };
            p.handle_timeout(k * 50 * MS + late);
            while let Some(out) = p.poll_output() {
                rounds += u64::from(matches!(out, LivenessOutput::Send { .. }));
            }
        }
        assert_eq!(rounds, 100);
    }

    #[test]
    fn stray_and_stale_answers_change_nothing() {
        let mut p = LivenessProber::new(2, LivenessConfig { interval_ns: 10, misses: 1 }, 0);
        p.handle_timeout(0);
        p.handle_answer(7, 1);
        p.handle_answer(0, 99);
        p.handle_timeout(10);
        assert!(!p.is_up(0) && !p.is_up(1), "neither answered probe 1");
        p.handle_answer(0, 1);
        assert!(!p.is_up(0), "an answer to an old probe does not bring a peer back");
        p.handle_answer(0, 2);
        assert!(p.is_up(0));
    }
}
