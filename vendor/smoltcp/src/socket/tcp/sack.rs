//! anyedge patch: a SACK sender's scoreboard (RFC 6675) for sockets with a congestion
//! controller whose peer sends SACK blocks (RFC 2018).
//!
//! What the receiver said it holds above the cumulative ACK, as sorted, disjoint ranges;
//! from it, which holes count as lost (more than `(DupThresh - 1) * SMSS` bytes, or
//! `DupThresh` ranges, SACKed above them: RFC 6675 §4 `IsLost`), the next hole to send
//! again (`NextSeg` rule 1) and the bytes still in the network (`SetPipe`), so that one
//! round trip repairs every hole of a window instead of one.
//!
//! A path that reorders makes holes that are not losses: a D-SACK (RFC 2883, a block
//! below the cumulative ACK: bytes that arrived twice) says a retransmission was not
//! needed, and the threshold doubles (as Linux raises `tp->reordering` on one), up to
//! [`DUP_THRESH_MAX`] segments.
//!
//! A hole also counts as lost once bytes above it have been SACKed for a reordering
//! window (RACK's time rule, RFC 8985 §6.2: the bytes below were sent before them, so
//! they are late by then): a quarter of the smoothed round trip, times the threshold's
//! growth, at most a round trip (RACK's `reo_wnd`, whose multiplier D-SACKs raise). So
//! a hole near the end of a transfer, with fewer segments above it than a raised
//! threshold, is repaired within a round trip instead of a segment a round trip.

use crate::time::{Duration, Instant};
use crate::wire::TcpSeqNumber;

/// RFC 6675's DupThresh, before any reordering is seen.
const DUP_THRESH: u8 = 3;
/// The most a path's reordering raises it to.
pub(super) const DUP_THRESH_MAX: u8 = 96;

/// The most ranges kept: past it, the highest are forgotten (taken as not received,
/// which costs at most a needless retransmission), so a peer's SACK blocks cannot make a
/// socket hold more than this.
const RANGES_MAX: usize = 32;

#[derive(Debug, Clone)]
pub(super) struct Scoreboard {
    /// SACKed ranges `[left, right)` above the cumulative ACK, sorted and disjoint, and
    /// when the first of their bytes was SACKed.
    ranges: alloc::vec::Vec<(TcpSeqNumber, TcpSeqNumber, Instant)>,
    /// RFC 6675's HighRxt: the highest sequence number sent again. Not reset when a
    /// recovery begins (as RFC 6675 does): holes found late in one recovery are often sent
    /// again before it ends, and the next would send them once more (Linux marks each
    /// segment sent again instead). A hole below it that is lost again waits for the
    /// retransmission timeout; every hole below a lost one counts as lost too, so none is
    /// passed over unsent.
    high_rxt: Option<TcpSeqNumber>,
    /// DupThresh: SACKed segments above a hole (or that many bytes of them, less one
    /// segment) that make it lost; raised by D-SACKs.
    dup_thresh: u8,
    /// Everything not SACKed below this is lost, until the cumulative ACK passes it: after
    /// a retransmission timeout (RFC 6675 §5.1: the scoreboard is kept, and what the
    /// receiver holds is not sent again), below a SACKed tail-loss probe, and below a
    /// range SACKed a reordering window ago.
    lost_below: Option<TcpSeqNumber>,
    /// The cumulative ACK at that timeout: a second timeout with no progress since sends
    /// everything again (a receiver may have dropped what it SACKed, RFC 2018 §8).
    rto_una: Option<TcpSeqNumber>,
    /// The highest sequence number sent when the latest repair went: bytes above it were
    /// sent after every repair, so `DupThresh` segments of them SACKed while a repair's
    /// hole is still open say that repair was lost too (Linux's `tcp_mark_lost_retrans`;
    /// RACK's time order, RFC 8985 §6.2, for what was sent again).
    rxt_mark: Option<TcpSeqNumber>,
    /// When the latest repair went: once any byte sent after it is SACKed and a round
    /// trip and a quarter have passed since, it is lost (RACK's time rule, RFC 8985 §6.2:
    /// a sender whose window the lost repairs fill sends little after them, too little
    /// for DupThresh).
    rxt_at: Option<Instant>,
    /// The tail-loss probe in flight (the last segment sent again): its SACK says every
    /// byte below it not SACKed is lost (it went two round trips after them: RACK's time
    /// rule, RFC 8985 §7.4), and a D-SACK of it is no reordering.
    probe: Option<(TcpSeqNumber, TcpSeqNumber)>,
}

impl Default for Scoreboard {
    fn default() -> Scoreboard {
        Scoreboard {
            ranges: alloc::vec::Vec::new(),
            high_rxt: None,
            dup_thresh: DUP_THRESH,
            lost_below: None,
            rto_una: None,
            rxt_mark: None,
            rxt_at: None,
            probe: None,
        }
    }
}

impl Scoreboard {
    /// Whether it says anything the sender must heed: SACKed ranges, or losses a
    /// timeout marked.
    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.lost_below.is_none()
    }

    /// Forgets what was SACKed (everything goes again); what the path's reordering
    /// taught is kept.
    pub(super) fn clear(&mut self) {
        self.ranges.clear();
        self.high_rxt = None;
        self.lost_below = None;
        self.rxt_mark = None;
        self.rxt_at = None;
        self.probe = None;
    }

    /// A retransmission timeout with `una` unacknowledged and `snd_max` sent: everything
    /// not SACKed counts as lost and goes again, from `una` on. False (and the scoreboard
    /// forgotten) at a second timeout with no progress since the first: then everything
    /// goes again, SACKed or not.
    pub(super) fn on_rto(&mut self, una: TcpSeqNumber, snd_max: TcpSeqNumber) -> bool {
        if self.rto_una == Some(una) {
            self.clear();
            self.rto_una = None;
            return false;
        }
        self.rto_una = Some(una);
        self.lost_below = Some(snd_max);
        self.high_rxt = None;
        self.rxt_mark = None;
        self.rxt_at = None;
        self.probe = None;
        true
    }


    /// Records an ACK: `una` is the cumulative ACK (after it), `snd_max` the highest
    /// sequence number sent; blocks outside `(una, snd_max]` (D-SACKs, forged or stale
    /// blocks) are ignored.
    ///
    /// A repair that arrived says the repairs sent before it that have not are lost
    /// again (the idea of RACK, RFC 8985, for what was sent again: repairs go in order,
    /// so one overtaken by `DupThresh` segments of later ones did not arrive): HighRxt
    /// goes back to that hole, which goes once more, instead of waiting for a timeout.
    pub(super) fn on_ack(
        &mut self,
        una: TcpSeqNumber,
        snd_max: TcpSeqNumber,
        blocks: &[Option<(u32, u32)>],
        mss: usize,
        (now, srtt): (Instant, Option<Duration>),
    ) {
        self.ranges.retain_mut(|r| {
            r.0 = r.0.max(una);
            r.1 > una
        });
        // A D-SACK: the first block, below the cumulative ACK (and not absurdly far).
        if let Some((left, right)) = blocks.first().copied().flatten() {
            let (left, right) = (TcpSeqNumber(left as i32), TcpSeqNumber(right as i32));
            let probed = self.probe.is_some_and(|(l, r)| l <= left && right <= r);
            if left < right && right <= una && una - right < 1 << 30 && !probed {
                self.dup_thresh = self.dup_thresh.saturating_mul(2).min(DUP_THRESH_MAX);
            }
        }
        let mut repaired: Option<TcpSeqNumber> = None;
        for &(left, right) in blocks.iter().flatten() {
            let (left, right) = (TcpSeqNumber(left as i32), TcpSeqNumber(right as i32));
            if left < una || right <= left || right > snd_max {
                continue;
            }
            if self.insert(left, right, now)
                && let Some(h) = self.high_rxt.filter(|&h| left < h)
            {
                let end = right.min(h);
                repaired = Some(repaired.map_or(end, |r| r.max(end)));
            }
        }
        if self.high_rxt.is_some_and(|h| h <= una) {
            self.high_rxt = None;
            self.rxt_mark = None;
            self.rxt_at = None;
        }
        // Bytes sent after the latest repair SACKed, past DupThresh or a round trip and a
        // quarter (at least a millisecond) after it, while the first hole (below HighRxt,
        // or HighRxt would be gone) is still open: every repair still unacknowledged was
        // lost; the lost holes go again.
        if let (Some(mark), Some(_)) = (self.rxt_mark, self.high_rxt) {
            let past: usize = self.ranges.iter().filter(|r| r.1 > mark).map(|r| r.1 - r.0.max(mark)).sum();
            let waited = match (self.rxt_at, srtt) {
                (Some(at), Some(rtt)) => now >= at + rtt + (rtt / 4).max(Duration::from_millis(1)),
                _ => false,
            };
            if past > (usize::from(self.dup_thresh) - 1) * mss || (past > 0 && waited) {
                self.high_rxt = None;
                self.rxt_mark = None;
                self.rxt_at = None;
            }
        }
        if let (Some(repaired), Some(high)) = (repaired, self.high_rxt) {
            let past = (usize::from(self.dup_thresh) - 1) * mss;
            let mut start = una;
            for r in &self.ranges {
                if start < r.0 && r.0 < high && r.0 + past <= repaired {
                    self.high_rxt = Some(start);
                    break;
                }
                start = r.1;
            }
        }
        // The probe SACKed above a hole: everything below it not SACKed is lost.
        if let Some((left, right)) = self.probe {
            if una >= right {
                self.probe = None;
            } else if una < left && self.ranges.iter().any(|r| r.0 < right && left < r.1) {
                self.lost_below = Some(self.lost_below.map_or(left, |l| l.max(left)));
                self.probe = None;
            }
        }
        if self.lost_below.is_some_and(|l| l <= una) {
            self.lost_below = None;
        }
        if self.rto_una.is_some_and(|u| u < una) {
            self.rto_una = None;
        }
        self.mark_late(now, srtt);
    }

    /// RACK's reordering window: a quarter of the smoothed round trip, times what
    /// D-SACKs raised DupThresh by, at most a round trip, at least a millisecond.
    fn reo_wnd(&self, srtt: Duration) -> Duration {
        let grown = u32::from(self.dup_thresh / DUP_THRESH).max(1);
        (srtt / 4 * grown).min(srtt).max(Duration::from_millis(1))
    }

    /// Every hole below a range SACKed a reordering window ago or more is lost (RACK's
    /// time rule, RFC 8985 §6.2): its bytes went before the range's. Nothing before a
    /// round trip is measured.
    pub(super) fn mark_late(&mut self, now: Instant, srtt: Option<Duration>) {
        let Some(srtt) = srtt else { return };
        let reo = self.reo_wnd(srtt);
        let late = self.ranges.iter().rev().find(|r| r.2 + reo <= now).map(|r| r.0);
        if let Some(left) = late.filter(|&l| self.lost_below.is_none_or(|b| b < l)) {
            self.lost_below = Some(left);
        }
    }

    /// When [`Scoreboard::mark_late`] next finds a hole lost: the earliest a range above
    /// every hole already lost is a reordering window old.
    pub(super) fn late_at(&self, srtt: Option<Duration>) -> Option<Instant> {
        let reo = self.reo_wnd(srtt?);
        let above = |r: &&(TcpSeqNumber, TcpSeqNumber, Instant)| self.lost_below.is_none_or(|b| b < r.0);
        self.ranges.iter().filter(above).map(|r| r.2 + reo).min()
    }

    /// Adds a range SACKed at `now`; whether it told anything new. A range it joins
    /// keeps the earliest time.
    fn insert(&mut self, mut left: TcpSeqNumber, mut right: TcpSeqNumber, now: Instant) -> bool {
        // The first range that ends at or after `left` and the first that starts after
        // `right`: everything between merges with the new one.
        let from = self.ranges.partition_point(|r| r.1 < left);
        let to = self.ranges.partition_point(|r| r.0 <= right);
        let known = self.ranges.get(from).is_some_and(|r| r.0 <= left && right <= r.1);
        let mut at = now;
        if from < to {
            left = left.min(self.ranges[from].0);
            right = right.max(self.ranges[to - 1].1);
            at = self.ranges[from..to].iter().map(|r| r.2).fold(now, Instant::min);
        }
        self.ranges.splice(from..to, core::iter::once((left, right, at)));
        self.ranges.truncate(RANGES_MAX);
        debug_assert!(self.ranges.windows(2).all(|w| w[0].1 < w[1].0), "sorted and disjoint");
        !known
    }

    /// The holes below the highest SACKed byte, in order: `(start, end, lost)`; after a
    /// timeout, the bytes past it up to what was sent then too, lost.
    fn holes(&self, una: TcpSeqNumber, mss: usize) -> impl Iterator<Item = (TcpSeqNumber, TcpSeqNumber, bool)> + '_ {
        let mut above: usize = self.ranges.iter().map(|r| r.1 - r.0).sum();
        let mut start = una;
        let timed_out = self.lost_below;
        let tail = self.ranges.last().map_or(una, |r| r.1.max(una));
        let tail = timed_out.filter(|&end| end > tail).map(|end| (tail, end, true));
        let holes = self.ranges.iter().enumerate().filter_map(move |(i, r)| {
            let hole = (start, r.0);
            start = r.1;
            let thresh = usize::from(self.dup_thresh);
            let lost = above > (thresh - 1) * mss || self.ranges.len() - i >= thresh;
            let lost = lost || timed_out.is_some_and(|end| hole.0 < end);
            above -= r.1 - r.0;
            (hole.0 < hole.1).then_some((hole.0, hole.1, lost))
        });
        holes.chain(tail)
    }

    /// Whether the first unacknowledged byte counts as lost (a recovery may begin
    /// before three duplicate ACKs: RFC 6675 §5 step (C)).
    pub(super) fn una_lost(&self, una: TcpSeqNumber, mss: usize) -> bool {
        self.holes(una, mss).next().is_some_and(|(start, _, lost)| start == una && lost)
    }

    /// The next lost bytes not yet sent again: where they start and how many (the rest
    /// of their hole; the sender takes what one packet carries).
    pub(super) fn next_lost(&self, una: TcpSeqNumber, mss: usize) -> Option<(TcpSeqNumber, usize)> {
        let from = self.high_rxt.map_or(una, |h| h.max(una));
        self.holes(una, mss).find_map(|(start, end, lost)| {
            let start = start.max(from);
            (lost && start < end).then(|| (start, end - start))
        })
    }

    /// Whether the byte at `seq` was sent again.
    pub(super) fn sent_again(&self, seq: TcpSeqNumber) -> bool {
        self.high_rxt.is_some_and(|h| h > seq)
    }

    /// The tail-loss probe went: `[seq, end)` sent again.
    pub(super) fn on_probe(&mut self, seq: TcpSeqNumber, end: TcpSeqNumber) {
        self.probe = Some((seq, end));
    }

    /// Bytes were sent again, up to `end`, while `snd_max` was the highest sent.
    pub(super) fn on_retransmit(&mut self, end: TcpSeqNumber, snd_max: TcpSeqNumber, now: Instant) {
        self.high_rxt = Some(self.high_rxt.map_or(end, |h| h.max(end)));
        self.rxt_mark = Some(self.rxt_mark.map_or(snd_max, |m| m.max(snd_max)));
        self.rxt_at = Some(now);
    }

    /// RFC 6675's pipe: of the bytes in `[una, snd_max)`, those neither SACKed nor lost,
    /// plus those sent again.
    pub(super) fn pipe(&self, una: TcpSeqNumber, snd_max: TcpSeqNumber, mss: usize) -> usize {
        let flight = if snd_max > una { snd_max - una } else { 0 };
        let sacked: usize = self.ranges.iter().map(|r| r.1 - r.0).sum();
        let mut pipe = flight.saturating_sub(sacked);
        for (start, end, lost) in self.holes(una, mss) {
            if lost {
                pipe = pipe.saturating_sub(end - start);
            }
            if let Some(h) = self.high_rxt.filter(|&h| h > start) {
                pipe += h.min(end) - start;
            }
        }
        pipe
    }
}
