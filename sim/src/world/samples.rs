//! Every round trip a client group's traffic class took on each path, kept whole: the
//! report's percentiles are exact (nearest rank, to the microsecond), not the top of a
//! histogram bucket, and its per-second series (sent, received, p50, p99 by the second
//! a request left) come from the same samples.
use crate::world::fault_state::FaultTracker;
use crate::world::ids::PopId;
use anyedge_topology::Topology;
use hdrhistogram::Histogram;

#[derive(Debug, Default)]
pub(super) struct Samples {
    /// Round trips in half microseconds, by the second their request left: 4 bytes a
    /// sample (it was 8, the second stored beside each; a million clients' 20 s held
    /// hundreds of MB of them). Every reader sorts or counts, so order within a second
    /// is free. The report's figures are in whole microseconds two ways, both exact
    /// from halves: percentiles and series round (`(h + 1) / 2`), the histogram's
    /// buckets truncate (`h / 2`), as hdrhistogram was fed while the run went on.
    /// Rounding and truncating are monotone, so the nearest-rank quantile of the stored
    /// values is the quantile of the nanoseconds, rounded. (A histogram a path, 188 KB
    /// each, was half the memory of a 40,000-client world; it is built at report time.)
    by_second: Vec<Vec<u32>>,
    /// Requests sent, per second of the run.
    sent: Vec<u64>,
}

fn second_of(at_ns: u64) -> u32 {
    (at_ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32
}

/// A round trip stored: nanoseconds in half microseconds (floor), at most u32::MAX (35
/// minutes; a client gives a request up long before).
fn ns_half_us(ns: u64) -> u32 {
    u32::try_from(ns / 500).unwrap_or(u32::MAX)
}

/// Half microseconds as whole ones, rounded half up: `(ns + 500) / 1000`.
fn rounded_us(half: u32) -> u64 {
    u64::from(half).div_ceil(2)
}

impl Samples {
    pub(super) fn sent(&mut self, at_ns: u64) {
        let s = second_of(at_ns) as usize;
        if self.sent.len() <= s {
            self.sent.resize(s + 1, 0);
        }
        self.sent[s] += 1;
    }

    pub(super) fn replied(&mut self, sent_ns: u64, rtt_ns: u64) {
        let s = second_of(sent_ns) as usize;
        if self.by_second.len() <= s {
            self.by_second.resize_with(s + 1, Vec::new);
        }
        self.by_second[s].push(ns_half_us(rtt_ns));
    }

    /// Every stored round trip (half microseconds), second by second.
    fn halves(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_second.iter().flatten().copied()
    }

    /// Exact percentiles of every round trip (nearest rank), in ms to the microsecond.
    pub(super) fn percentiles(&self) -> Option<crate::report::Percentiles> {
        let mut all: Vec<u64> = self.halves().map(rounded_us).collect();
        all.sort_unstable();
        let at = |q: f64| us_ms(nearest_rank(&all, q));
        (!all.is_empty()).then(|| crate::report::Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: us_ms(*all.last().unwrap_or(&0)),
        })
    }

    /// Every round trip in `hist` (cleared first), in whole microseconds truncated, at
    /// least 1.
    pub(super) fn histogram(&self, hist: &mut Histogram<u64>) {
        hist.reset();
        for half in self.halves() {
            let _ = hist.record((u64::from(half) / 2).max(1));
        }
    }

    /// Per second of the run (by when requests left): sent, answered, p50 and p99.
    pub(super) fn series(&self) -> Vec<crate::report::SecondReport> {
        let seconds = self.sent.len().max(self.by_second.len());
        (0..seconds)
            .map(|s| self.by_second.get(s).map_or_else(Vec::new, |h| h.iter().map(|&r| rounded_us(r)).collect()))
            .enumerate()
            .map(|(s, mut rtts)| {
                rtts.sort_unstable();
                crate::report::SecondReport {
                    t_s: s as u64,
                    sent: self.sent.get(s).copied().unwrap_or(0),
                    received: rtts.len() as u64,
                    p50_ms: (!rtts.is_empty()).then(|| us_ms(nearest_rank(&rtts, 0.5))),
                    p99_ms: (!rtts.is_empty()).then(|| us_ms(nearest_rank(&rtts, 0.99))),
                }
            })
            .collect()
    }
}

/// The nearest-rank `q` quantile of sorted values (0 when empty).
pub(super) fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The histogram the report's buckets come from: microseconds, 1 µs to an hour, three
/// significant digits (one, reused path after path).
pub(super) fn report_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// Microseconds as milliseconds.
fn us_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One path of one traffic class of one client group: its round trips.
pub(super) struct PathRecord {
    /// Every round trip, and requests sent per second.
    pub(super) samples: Samples,
}

/// One traffic class of one client group, as the report shows it.
pub(super) struct ClassRecord {
    /// [anycast, direct].
    pub(super) paths: [PathRecord; 2],
    /// When the class last got an anycast reply.
    pub(super) last_reply_ns: Option<u64>,
}

/// What the report is made of, gathered while the world runs. Its fields are its own:
/// the world tells it what happened (a request sent, a reply, a packet delivered, a
/// catchment moved, a violation) and reads what the report needs.
pub(super) struct Recorder {
    /// [group][k]: each client group's traffic classes.
    groups: Vec<Vec<ClassRecord>>,
    trackers: Vec<FaultTracker>,
    /// (when, group, VIP, its POP now) each time routing moved a group's anycast traffic.
    catchments: Vec<(u64, usize, usize, Option<PopId>)>,
    /// Invariants found broken while running (bugs, not input): reported with the seed.
    violations: Vec<String>,
    /// Packets delivered over links.
    packets: u64,
    /// Of those, liveness probes and their answers (POPs ↔ CLB nodes, edges).
    probe_packets: u64,
    /// Events the other worlds of a partitioned run processed (merged in).
    merged_events: u64,
}

/// Violations a run keeps (the first; a broken invariant repeats).
const VIOLATIONS_KEPT: usize = 16;

impl Recorder {
    pub(super) fn new(t: &Topology) -> Recorder {
        let path = || PathRecord { samples: Samples::default() };
        let class = |_| ClassRecord { paths: [path(), path()], last_reply_ns: None };
        Recorder {
            groups: t.clients.iter().map(|g| g.traffic.iter().map(class).collect()).collect(),
            trackers: Vec::new(),
            catchments: Vec::new(),
            violations: Vec::new(),
            packets: 0,
            probe_packets: 0,
            merged_events: 0,
        }
    }

    /// The record of `group`'s class of `slot` on the slot's path.
    fn path(&mut self, group: usize, slot: usize) -> &mut PathRecord {
        &mut self.groups[group][slot / 2].paths[slot % 2]
    }

    /// A request of `group`'s `slot` left at `now`.
    pub(super) fn sent(&mut self, group: usize, slot: usize, now: u64) {
        self.path(group, slot).samples.sent(now);
    }

    /// A reply to a request of `group`'s `slot` sent at `sent_ns` came at `now`, after
    /// `rtt_ns`; `anycast`: on the anycast path (the class's last anycast reply is now).
    pub(super) fn replied(&mut self, group: usize, slot: usize, sent_ns: u64, rtt_ns: u64, now: u64, anycast: bool) {
        if anycast {
            self.groups[group][slot / 2].last_reply_ns = Some(now);
        }
        self.path(group, slot).samples.replied(sent_ns, rtt_ns);
    }

    /// `group`'s class `k`, as the report reads it.
    pub(super) fn class(&self, group: usize, k: usize) -> &ClassRecord {
        &self.groups[group][k]
    }

    /// [group][k]: when each class last got an anycast reply.
    pub(super) fn last_reply_ns(&self) -> Vec<Vec<Option<u64>>> {
        self.groups.iter().map(|g| g.iter().map(|c| c.last_reply_ns).collect()).collect()
    }

    /// A packet crossed a link.
    pub(super) fn delivered(&mut self) {
        self.packets += 1;
    }

    /// `n` packets already counted were liveness probes or their answers.
    pub(super) fn count_probes(&mut self, n: u64) {
        self.probe_packets += n;
        debug_assert!(self.probe_packets <= self.packets, "probes are among the packets");
    }

    pub(super) fn packets(&self) -> u64 {
        self.packets
    }

    pub(super) fn probe_packets(&self) -> u64 {
        self.probe_packets
    }

    pub(super) fn merged_events(&self) -> u64 {
        self.merged_events
    }

    /// A broken invariant, at `now` (the first [`VIOLATIONS_KEPT`] are kept).
    pub(super) fn violation(&mut self, now: u64, what: String) {
        if self.violations.len() < VIOLATIONS_KEPT {
            self.violations.push(format!("t={now} ns: {what}"));
        }
    }

    pub(super) fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Routing moved `group`'s anycast traffic for VIP `vip` to `pop` at `now`.
    pub(super) fn catchment_moved(&mut self, now: u64, group: usize, vip: usize, pop: Option<PopId>) {
        self.catchments.push((now, group, vip, pop));
    }

    /// Every catchment change: (when, group, VIP, its POP then).
    pub(super) fn catchments(&self) -> &[(u64, usize, usize, Option<PopId>)] {
        &self.catchments
    }

    /// A fault's tracker starts; its index.
    pub(super) fn track(&mut self, tracker: FaultTracker) -> usize {
        self.trackers.push(tracker);
        self.trackers.len() - 1
    }

    /// The index the next tracker will have.
    pub(super) fn next_tracker(&self) -> usize {
        self.trackers.len()
    }

    pub(super) fn trackers(&self) -> &[FaultTracker] {
        &self.trackers
    }

    pub(super) fn trackers_mut(&mut self) -> &mut [FaultTracker] {
        &mut self.trackers
    }

    /// `group`'s classes taken from `other` (the world of the partition that ran it).
    pub(super) fn take_group(&mut self, group: usize, other: &mut Recorder) {
        std::mem::swap(&mut self.groups[group], &mut other.groups[group]);
    }

    /// What `other` (another partition's world) recorded of everything but its groups:
    /// trackers (the earliest detection, each world's flows), catchment changes,
    /// violations, counters, and the events it ran beyond the world-wide ones.
    pub(super) fn absorb(&mut self, other: &mut Recorder, other_events: u64) {
        self.catchments.append(&mut other.catchments);
        for (mine, theirs) in self.trackers.iter_mut().zip(other.trackers.iter_mut()) {
            mine.absorb(theirs);
        }
        self.violations.append(&mut other.violations);
        self.packets += other.packets;
        self.probe_packets += other.probe_packets;
        self.merged_events += other_events + other.merged_events;
    }

    /// Another rank's violations and counters (`sim --mpi`): (packets, probe packets,
    /// events beyond the world-wide ones).
    pub(super) fn absorb_counts(&mut self, mut violations: Vec<String>, (packets, probes, events): (u64, u64, u64)) {
        self.violations.append(&mut violations);
        self.packets += packets;
        self.probe_packets += probes;
        self.merged_events += events;
    }

    /// After every world is absorbed: the merged lists in the order one world keeps
    /// them (by time; a fault's flows by client).
    pub(super) fn sort_merged(&mut self) {
        self.catchments.sort_by_key(|&(at, g, _, _)| (at, g));
        let at = |v: &String| v.strip_prefix("t=").and_then(|s| s.split(' ').next()?.parse::<u64>().ok());
        self.violations.sort_by_key(at);
        self.violations.truncate(VIOLATIONS_KEPT);
        for tr in self.trackers.iter_mut() {
            tr.sort_by_client();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Samples, nearest_rank, ns_half_us, rounded_us, us_ms};

    #[test]
    fn nearest_rank_picks_a_sample_never_a_bucket_top() {
        let v: Vec<u64> = (1..=1000).map(|i| 300_000_000 + i * 1000).collect();
        assert_eq!(nearest_rank(&v, 0.5), 300_500_000);
        assert_eq!(nearest_rank(&v, 0.99), 300_990_000);
        assert_eq!(nearest_rank(&v, 1.0), 301_000_000);
        assert_eq!(nearest_rank(&[7], 0.5), 7);
        assert_eq!(us_ms(rounded_us(ns_half_us(300_123_456))), 300.123);
        assert_eq!(us_ms(rounded_us(ns_half_us(300_123_500))), 300.124);
    }

    #[test]
    fn samples_kept_in_microseconds_give_the_quantiles_of_the_nanoseconds_rounded() {
        // Rounding is monotone: the rank-th rounded value is the rank-th value rounded.
        let mut rng = anyedge_ccn::ComponentRng::new(7, "samples");
        let mut kept = Samples::default();
        let mut ns: Vec<u64> = Vec::new();
        for _ in 0..10_000 {
            let rtt = 1_000 + rng.below(400_000_000) + if rng.chance(0.5) { 500 } else { 0 };
            kept.replied(0, rtt);
            ns.push(rtt);
        }
        ns.sort_unstable();
        let exact = |q: f64| ((nearest_rank(&ns, q) + 500) / 1000) as f64 / 1000.0;
        let p = kept.percentiles().unwrap();
        assert_eq!([p.p50, p.p90, p.p99, p.p999, p.max], [0.5, 0.9, 0.99, 0.999, 1.0].map(exact));
        // Every stored half rounds and truncates as the nanoseconds do, at the edges too.
        for ns in [0, 1, 499, 500, 999, 1_000, 1_499, 1_500, 1_999, 2_000, 123_456_789, 300_123_500] {
            assert_eq!(rounded_us(ns_half_us(ns)), (ns + 500) / 1000, "{ns} ns rounded");
            assert_eq!(u64::from(ns_half_us(ns)) / 2, ns / 1000, "{ns} ns truncated");
        }
        // The histogram built at report time is the one recording as the run went made.
        let mut live = super::report_histogram();
        for &n in &ns {
            live.record((n / 1000).max(1)).unwrap();
        }
        let mut built = super::report_histogram();
        kept.histogram(&mut built);
        assert_eq!(built, live);
    }
}
