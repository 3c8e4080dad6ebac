//! The liveness prober both drivers are to run (sans-IO): every `interval` it probes each
//! peer, and from the answers that come back — or do not — it decides when a peer is down
//! (`misses` probes in a row unanswered) and when it is up again (the first answer after).
//! An answer counts whenever it comes back before the peer is declared down, so a path
//! whose round trip is longer than one interval (a POP on another continent) keeps its
//! peer up as long as the round trip is shorter than `misses` intervals.
//! Time comes in as an argument; probes go out as outputs the driver carries (simulated
//! links, UDP sockets), so loss and delay on the way slow detection as they would.
//!
//! **On demand** (BFD's demand mode, RFC 5880 §6.6, in spirit): a prober made with
//! [`LivenessProber::on_demand`] probes only the peers its node forwarded to within the
//! last `idle_ns` (the driver says so with [`LivenessProber::handle_use`], from the
//! core's [`Demand`]) and the peers it takes to be down (until they answer). A peer that
//! starts carrying traffic again is probed from the next round with its misses counted
//! afresh, so a dead one is found within [`LivenessConfig::detect_ns_max`] of its first
//! use — the bound a peer probed all along has from its death. Probes then grow with what
//! a node forwards to, not with every node it could.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    up: bool,
    /// The newest probe answered (0: none yet; probes count from 1) — or, once the peer
    /// is down, the last probe sent before: only an answer to a later one brings it back.
    answered: u64,
    /// On demand: when the node last forwarded to the peer, and whether it is probed.
    used_ns: u64,
    probed: bool,
}

/// A peer nothing has happened to: taken to be up, never answered, used or probed.
const UNTOUCHED: Peer = Peer { up: true, answered: 0, used_ns: 0, probed: false };

/// The peers' states: all of them when every peer is probed; on demand, only those a use,
/// an answer or a round touched, the rest [`UNTOUCHED`] (a POP of a world of 1,000 CLB
/// nodes forwards to a few, and every thread's world held every node's prober). Nothing
/// walks the map: rounds walk the probed list.
#[derive(Debug, Clone)]
enum Peers {
    All(Vec<Peer>),
    Touched { len: usize, touched: rustc_hash::FxHashMap<u32, Peer> },
}

impl Peers {
    fn new(len: usize, on_demand: bool) -> Peers {
        if on_demand {
            Peers::Touched { len, touched: Default::default() }
        } else {
            Peers::All(vec![Peer { probed: true, ..UNTOUCHED }; len])
        }
    }

    fn len(&self) -> usize {
        match self {
            Peers::All(all) => all.len(),
            Peers::Touched { len, .. } => *len,
        }
    }

    fn get(&self, i: usize) -> Option<Peer> {
        match self {
            Peers::All(all) => all.get(i).copied(),
            Peers::Touched { len, touched } => {
                (i < *len).then(|| touched.get(&(i as u32)).copied().unwrap_or(UNTOUCHED))
            }
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Peer> {
        match self {
            Peers::All(all) => all.get_mut(i),
            Peers::Touched { len, touched } => (i < *len).then(|| touched.entry(i as u32).or_insert(UNTOUCHED)),
        }
    }
}

/// Probes a fixed set of peers (0..n) and tracks which answer.
#[derive(Debug, Clone)]
pub struct LivenessProber {
    config: LivenessConfig,
    peers: Peers,
    /// On demand: how long a peer stays probed after its last use (`None`: every peer,
    /// always).
    idle_ns: Option<u64>,
    /// On demand: the peers probed (in ascending order once `sorted`).
    probed: Vec<u32>,
    sorted: bool,
    next_probe_ns: u64,
    seq: u64,
    outputs: VecDeque<LivenessOutput>,
}

impl LivenessProber {
    /// A prober of `peers` peers, all taken to be up and all probed every round, the
    /// first at `now_ns`.
    pub fn new(peers: usize, config: LivenessConfig, now_ns: u64) -> LivenessProber {
        Self::with_idle(peers, config, None, now_ns)
    }

    /// A prober of `peers` peers, all taken to be up, that probes a peer only while its
    /// node forwards to it (used within the last `idle_ns`) or takes it to be down.
    pub fn on_demand(peers: usize, config: LivenessConfig, idle_ns: u64, now_ns: u64) -> LivenessProber {
        Self::with_idle(peers, config, Some(idle_ns), now_ns)
    }

    fn with_idle(peers: usize, config: LivenessConfig, idle_ns: Option<u64>, now_ns: u64) -> LivenessProber {
        let config = LivenessConfig { interval_ns: config.interval_ns.max(1), misses: config.misses.max(1) };
        LivenessProber {
            config,
            peers: Peers::new(peers, idle_ns.is_some()),
            idle_ns,
            probed: Vec::new(),
            sorted: true,
            next_probe_ns: now_ns,
            seq: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Starts over, as a restarted node does: every peer taken to be up (and, on demand,
    /// unused), the first probe at `now_ns`, nothing remembered.
    pub fn restart(&mut self, now_ns: u64) {
        *self = LivenessProber::with_idle(self.peers.len(), self.config, self.idle_ns, now_ns);
    }

    /// On demand: the node forwarded to `peer` at `now_ns`. A peer not probed until now is
    /// probed from the next round, its misses counted from there.
    pub fn handle_use(&mut self, peer: usize, now_ns: u64) {
        let Some(p) = self.peers.get_mut(peer) else { return };
        p.used_ns = p.used_ns.max(now_ns);
        if self.idle_ns.is_some() && !p.probed {
            debug_assert!(p.up, "a peer taken to be down is probed until it answers");
            p.probed = true;
            p.answered = self.seq;
            self.probed.push(peer as u32);
            self.sorted = false;
        }
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
        let Some(idle_ns) = self.idle_ns else {
            for i in 0..self.peers.len() {
                self.probe(i);
            }
            return;
        };
        if !self.sorted {
            // Rounds probe in peer order, whatever order the uses came in.
            self.probed.sort_unstable();
            self.sorted = true;
        }
        let mut kept = 0;
        for k in 0..self.probed.len() {
            let i = self.probed[k] as usize;
            self.count_misses(i);
            let Some(peer) = self.peers.get_mut(i) else { continue };
            if peer.up && now_ns.saturating_sub(peer.used_ns) > idle_ns {
                // Idle and answering: no more probes until it is used again.
                peer.probed = false;
                continue;
            }
            self.probed[kept] = i as u32;
            kept += 1;
            self.send(i);
        }
        self.probed.truncate(kept);
        debug_assert!(self.probed.iter().all(|&i| self.peers.get(i as usize).is_some_and(|p| p.probed)));
    }

    /// One peer's part of a round: its misses counted, its probe sent.
    fn probe(&mut self, i: usize) {
        self.count_misses(i);
        self.send(i);
    }

    /// A peer whose last `misses` probes (those before this round's) went unanswered is
    /// down.
    fn count_misses(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i) else { return };
        // Probes answered..seq-1 went out and none of them came back.
        let missed = (self.seq - 1).saturating_sub(peer.answered);
        if peer.up && missed >= u64::from(self.config.misses) {
            peer.up = false;
            peer.answered = self.seq - 1;
            self.outputs.push_back(LivenessOutput::Down { peer: i });
        }
    }

    fn send(&mut self, i: usize) {
        debug_assert!(self.peers.get(i).is_some_and(|p| p.answered < self.seq), "no answer to a probe not yet sent");
        self.outputs.push_back(LivenessOutput::Send { peer: i, seq: self.seq });
    }

    /// An answer to probe `seq` came back from `peer`. Answers older than one already
    /// counted, to probes never sent, or from peers unknown change nothing.
    pub fn handle_answer(&mut self, peer: usize, seq: u64) {
        // Looked at first: an answer that changes nothing leaves an untouched peer so.
        if self.peers.get(peer).is_none_or(|p| seq <= p.answered || seq > self.seq) {
            return;
        }
        let Some(p) = self.peers.get_mut(peer) else { return };
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

/// What a node forwarded to since its driver last asked: the core marks each peer (a
/// region, a POP) as it sends to it, and once a round the driver hands the marks to its
/// on-demand prober ([`LivenessProber::handle_use`]). A mark costs a bit test.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    bits: Vec<u64>,
    marked: Vec<u16>,
}

impl Demand {
    pub fn mark(&mut self, id: u16) {
        let (word, bit) = (usize::from(id) / 64, id % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & 1 << bit == 0 {
            self.bits[word] |= 1 << bit;
            self.marked.push(id);
        }
    }

    /// Each id marked since the last call, once, in the order first marked; the marks
    /// cleared.
    pub fn take(&mut self) -> Vec<u16> {
        for &id in &self.marked {
            self.bits[usize::from(id) / 64] &= !(1 << (id % 64));
        }
        debug_assert!(self.bits.iter().all(|&w| w == 0), "every mark cleared");
        std::mem::take(&mut self.marked)
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

    /// Rounds of an on-demand prober of `n` peers, one every 50 ms from 0 to `until`;
    /// `used(peer, now)` says which the node forwarded to before each round, `alive(peer,
    /// now)` which answer (at once). The probes sent, as (round time, peer), and the
    /// Down/Up changes, as (time, peer, up).
    type Rounds = (Vec<(u64, usize)>, Vec<(u64, usize, bool)>);
    fn on_demand(
        n: usize,
        until: u64,
        used: impl Fn(usize, u64) -> bool,
        alive: impl Fn(usize, u64) -> bool,
    ) -> Rounds {
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 3 };
        let mut p = LivenessProber::on_demand(n, config, 500 * MS, 0);
        let (mut sent, mut changes) = (Vec::new(), Vec::new());
        let mut now = 0;
        while now <= until {
            for peer in (0..n).filter(|&i| used(i, now)) {
                p.handle_use(peer, now);
            }
            p.handle_timeout(now);
            while let Some(out) = p.poll_output() {
                match out {
                    LivenessOutput::Send { peer, seq } => {
                        sent.push((now, peer));
                        if alive(peer, now) {
                            p.handle_answer(peer, seq);
                        }
                    }
                    LivenessOutput::Down { peer } => changes.push((now, peer, false)),
                    LivenessOutput::Up { peer } => changes.push((now, peer, true)),
                }
            }
            now += 50 * MS;
        }
        (sent, changes)
    }

    #[test]
    fn on_demand_a_prober_probes_only_peers_in_use_and_stops_once_they_idle() {
        // Peer 1 carries traffic from 1 s to 2 s; peer 0 and 2 never do.
        let (sent, changes) =
            on_demand(3, 5_000 * MS, |i, t| i == 1 && (1_000 * MS..2_000 * MS).contains(&t), |_, _| true);
        assert!(changes.is_empty(), "{changes:?}");
        assert!(sent.iter().all(|&(_, peer)| peer == 1), "only the peer in use: {sent:?}");
        let (first, last) = (sent[0].0, sent[sent.len() - 1].0);
        assert_eq!(first, 1_000 * MS, "probed from the round of its first use");
        // Last used at 1.95 s; idle once 500 ms have passed without a use.
        assert_eq!(last, 2_450 * MS, "probed until it has been idle for idle_ns");
        assert_eq!(sent.len(), 30);
    }

    #[test]
    fn on_demand_a_peer_dead_while_idle_is_found_within_the_bound_from_its_first_use() {
        let config = LivenessConfig { interval_ns: 50 * MS, misses: 3 };
        // Peer 0 dies at 1 s while nothing uses it; the node forwards to it from 3 s on.
        let (sent, changes) = on_demand(1, 5_000 * MS, |_, t| t >= 3_000 * MS, |_, t| t < 1_000 * MS);
        assert_eq!(sent[0].0, 3_000 * MS);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (at, _, up) = changes[0];
        assert!(!up && at - 3_000 * MS <= config.detect_ns_max(), "down at {at}");
        assert_eq!(at, 3_150 * MS, "three unanswered rounds after its first use");
    }

    #[test]
    fn on_demand_a_peer_found_down_is_probed_after_its_traffic_stops_until_it_answers() {
        // Used until 1 s, dead from 0.5 s to 3 s: found down, then probed while down
        // (its node sends it nothing now) until it answers again.
        let (sent, changes) =
            on_demand(1, 5_000 * MS, |_, t| t < 1_000 * MS, |_, t| !(500 * MS..3_000 * MS).contains(&t));
        assert_eq!(changes, vec![(650 * MS, 0, false), (3_000 * MS, 0, true)]);
        let last = sent[sent.len() - 1].0;
        assert_eq!(last, 3_000 * MS, "up again and unused for two seconds, it is probed no more");
    }

    #[test]
    fn demand_hands_each_peer_marked_since_the_last_take_once() {
        let mut d = Demand::default();
        for id in [7, 300, 7, 0, 300, 65_535] {
            d.mark(id);
        }
        assert_eq!(d.take(), vec![7, 300, 0, 65_535]);
        assert!(d.take().is_empty());
        d.mark(300);
        assert_eq!(d.take(), vec![300]);
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

    /// An on-demand prober holding only the peers touched behaves as one holding every
    /// peer: random uses, answers (stray, stale and late among them) and rounds, with
    /// peers dying and coming back.
    #[test]
    fn on_demand_a_prober_keeping_only_touched_peers_acts_as_one_keeping_all() {
        let config = LivenessConfig { interval_ns: 10 * MS, misses: 3 };
        let n = 50;
        let mut sparse = LivenessProber::on_demand(n, config, 40 * MS, 0);
        let mut dense = sparse.clone();
        dense.peers = Peers::All(vec![UNTOUCHED; n]);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut draw = |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let (mut outputs, mut downs) = (0, 0);
        for ms in 0..20_000u64 {
            let now = ms * MS;
            // Peers 0..10 die for a while every few seconds.
            let alive = |peer: u64| peer >= 10 || (ms / 3_000) % 2 == 0;
            if draw(4) == 0 {
                let peer = draw(n as u64 + 2) as usize;
                sparse.handle_use(peer, now);
                dense.handle_use(peer, now);
            }
            if draw(3) == 0 {
                let (peer, seq) = (draw(n as u64 + 2), draw(sparse.seq + 3));
                if alive(peer) || draw(10) == 0 {
                    sparse.handle_answer(peer as usize, seq);
                    dense.handle_answer(peer as usize, seq);
                }
            }
            sparse.handle_timeout(now);
            dense.handle_timeout(now);
            loop {
                let (a, b) = (sparse.poll_output(), dense.poll_output());
                assert_eq!(a, b, "at {ms} ms");
                let Some(out) = a else { break };
                outputs += 1;
                downs += usize::from(matches!(out, LivenessOutput::Down { .. }));
            }
            for peer in 0..n + 2 {
                assert_eq!(sparse.is_up(peer), dense.is_up(peer), "peer {peer} at {ms} ms");
            }
        }
        let Peers::Touched { touched, .. } = &sparse.peers else { panic!("on demand keeps the touched") };
        assert!(
            touched.len() <= n && outputs > 1_000 && downs > 10,
            "{} touched, {outputs} outputs, {downs} downs",
            touched.len()
        );
    }
}
