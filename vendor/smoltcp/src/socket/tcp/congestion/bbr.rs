//! anyedge patch: a model-based congestion controller after BBR (Cardwell et al., "BBR:
//! Congestion-Based Congestion Control", ACM Queue 14(5), 2016; draft-ietf-ccwg-bbr):
//! the window follows the path's measured bottleneck bandwidth times its round-trip
//! propagation delay, not loss. A loss-based controller on a path that drops 0.2 % of
//! packets at random (as the internet model does) keeps its window at a few tens of
//! segments whatever the bandwidth; BBR's window does not shrink for a random loss.
//!
//! What is kept of BBR: the bandwidth estimate as the largest delivery rate of the last
//! [`BW_ROUNDS`] rounds (a round ends when the bytes in flight at its start have been
//! acknowledged), the delay as the least round duration of ten seconds (smoltcp's own
//! estimate is smoothed, counts queueing, and its first sample can be a spliced
//! handshake's, near zero), a startup that doubles the window each round, up to 2.89
//! bandwidth-delay products, until the estimate stops growing by a quarter for three
//! rounds that were not application-limited or a round loses more than [`STARTUP_LOSS_PERCENT`] of what it delivers (BBRv2's
//! startup exit: the internet model's random 0.2 % does not end it), then a window of
//! [`CWND_GAIN`] × bandwidth × delay. Data is paced (the socket spaces its segments at
//! [`Controller::pacing_rate`]): in startup at the startup gain times the larger of the
//! estimate and the window over the least round trip (so the first rounds, before any
//! estimate, are spread too, as Linux's BBR starts from the window), then at the estimate
//! times BBR's gain cycle (1.25 for a round to probe for more, 0.75 for one to drain
//! what that queued, 1 for six), and never slower than 1.2 windows a least round trip
//! (Linux's pacing for every controller), so a window leaves spread over a round trip
//! instead of as one burst into the bottleneck's queue, and an estimate left low does
//! not hold the sender below what its window lets out. Tested through anyedge's
//! proxied connections (`region/src/clb/l7_front.rs`, `region/src/tcp_stack.rs`): this
//! copy of smoltcp builds without its dev-dependencies.

use crate::{socket::tcp::RttEstimator, time::Instant};

use super::Controller;

const DEFAULT_MSS: usize = 1024;
/// Rounds the bandwidth estimate remembers its largest sample for.
pub const BW_ROUNDS: usize = 10;
/// The window, in bandwidth-delay products, once the pipe is full (BBR's `cwnd_gain`).
pub const CWND_GAIN: u64 = 2;
/// Startup ends when the estimate has grown less than a quarter this many rounds running.
const FULL_BW_ROUNDS: u8 = 3;
/// The startup's window, in bandwidth-delay products at most (BBR's startup gain, 2.89).
const STARTUP_GAIN_PERCENT: u64 = 289;
/// Startup ends at a round whose losses (segments found lost) pass this share of the
/// bytes it delivered (BBRv2's `loss_thresh`).
pub const STARTUP_LOSS_PERCENT: u64 = 2;
/// How long the least round-trip time stands before a newer one replaces it.
const MIN_RTT_WINDOW_US: u64 = 10_000_000;
/// BBR's pacing gains once the pipe is full, a round each, in percent: probe for more
/// bandwidth, drain the queue that made, then cruise (BBR's ProbeBW cycle).
const PACING_CYCLE: [u64; 8] = [125, 75, 100, 100, 100, 100, 100, 100];
/// The least pacing rate once the pipe is full, in percent of the window over the least
/// round trip (Linux's `tcp_pacing_ca_ratio`).
const WINDOW_PACING_PERCENT: u64 = 120;

#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bbr {
    cwnd: usize,
    mss: usize,
    rwnd: usize,
    /// Bytes sent and acknowledged since the connection began.
    sent: u64,
    delivered: u64,
    /// The round: when it began and what was acknowledged then; it ends when a byte sent
    /// after it began is acknowledged (BBR's packet-timed round trip), `delivered` past
    /// `round_end`.
    round_start: Option<(Instant, u64)>,
    round_end: u64,
    /// Delivery rates (bytes/s) of the last rounds, the newest at `next % BW_ROUNDS`.
    rates: [u64; BW_ROUNDS],
    next: usize,
    /// The least round duration (µs) of the last ten seconds, and when it was seen: a
    /// round lasts the time its window takes to be acknowledged, a round trip.
    min_rtt: Option<(u64, Instant)>,
    /// Startup: the estimate when it last grew a quarter, and rounds since.
    full_bw: u64,
    full_bw_rounds: u8,
    filled: bool,
    /// Losses found in this round (each recovery's first), for startup's exit.
    round_losses: u64,
    /// Bytes that duplicate ACKs said left the network since the last ACK of new data:
    /// the window lets as many new bytes out (Reno's window inflation in fast recovery),
    /// since smoltcp counts everything past a hole as in flight until the hole is filled.
    inflation: usize,
    /// After a timeout: the window grows back by what is acknowledged (doubling each
    /// round, as slow start) until it reaches the model's again.
    recovering: bool,
    /// The sender ran out of data with room in its window during this round: the round's
    /// rate says what the application gave, so it does not count toward startup's end
    /// (BBR's `is_app_limited` samples; a TLS handshake and a proxy's first request are
    /// three such rounds, and ended startup before the bulk began).
    app_limited: bool,
    /// Rounds since the pipe was full: where in [`PACING_CYCLE`] the pacing gain is.
    cycle: usize,
}

impl Bbr {
    pub fn new() -> Bbr {
        Bbr {
            cwnd: DEFAULT_MSS * 10,
            mss: DEFAULT_MSS,
            rwnd: 64 * DEFAULT_MSS,
            sent: 0,
            delivered: 0,
            round_start: None,
            round_end: 0,
            rates: [0; BW_ROUNDS],
            next: 0,
            min_rtt: None,
            full_bw: 0,
            full_bw_rounds: 0,
            filled: false,
            round_losses: 0,
            inflation: 0,
            recovering: false,
            app_limited: false,
            cycle: 0,
        }
    }

    /// The bandwidth estimate, bytes a second.
    pub fn bandwidth(&self) -> u64 {
        self.rates.iter().copied().max().unwrap_or(0)
    }

    /// The bandwidth-delay product the model measures, `percent` of it, at least four
    /// segments; `None` while nothing is measured yet.
    fn bdp(&self, percent: u64) -> Option<usize> {
        let (rtt_us, _) = self.min_rtt?;
        let bdp = self.bandwidth().checked_mul(rtt_us)? / 1_000_000;
        (bdp > 0).then(|| (bdp.saturating_mul(percent) / 100) as usize).map(|w| w.max(4 * self.mss))
    }

    /// Ends the round once a byte sent after it began is acknowledged: its delivery rate
    /// joins the estimate, its duration the least RTT's, and startup checks whether the
    /// pipe is full.
    fn round(&mut self, now: Instant) {
        let Some((start, delivered_then)) = self.round_start else {
            // The first round begins now, with what was sent so far in flight.
            self.round_start = Some((now, self.delivered));
            self.round_end = self.sent;
            return;
        };
        if self.delivered <= self.round_end {
            return;
        }
        let elapsed_us = (now - start).total_micros().max(1);
        let rate = (self.delivered - delivered_then).saturating_mul(1_000_000) / elapsed_us;
        self.rates[self.next % BW_ROUNDS] = rate;
        self.next = self.next.wrapping_add(1);
        let stale = self.min_rtt.is_none_or(|(r, at)| elapsed_us <= r || (now - at).total_micros() > MIN_RTT_WINDOW_US);
        if stale {
            self.min_rtt = Some((elapsed_us, now));
        }
        self.round_start = Some((now, self.delivered));
        self.round_end = self.sent;
        let lost = core::mem::take(&mut self.round_losses).saturating_mul(self.mss as u64);
        if lost.saturating_mul(100) > (self.delivered - delivered_then).saturating_mul(STARTUP_LOSS_PERCENT) {
            self.filled = true;
        }
        if self.filled {
            self.cycle = self.cycle.wrapping_add(1);
        }
        let app_limited = core::mem::take(&mut self.app_limited);
        if !self.filled && !app_limited {
            let bw = self.bandwidth();
            if bw >= self.full_bw.saturating_add(self.full_bw / 4) {
                (self.full_bw, self.full_bw_rounds) = (bw, 0);
            } else {
                self.full_bw_rounds += 1;
                self.filled = self.full_bw_rounds >= FULL_BW_ROUNDS;
            }
        }
    }
}

impl Controller for Bbr {
    fn window(&self) -> usize {
        self.cwnd.saturating_add(self.inflation)
    }

    fn on_dup_ack(&mut self, _now: Instant, len: usize, _in_flight: usize) {
        // At most another window's worth: what the receiver holds past the holes.
        self.inflation = self.inflation.saturating_add(len).min(self.cwnd);
    }

    fn on_ack(&mut self, now: Instant, len: usize, _in_flight: usize, _rtt: &RttEstimator) {
        if len == 0 {
            return;
        }
        self.delivered = self.delivered.saturating_add(len as u64);
        // What this ACK covers includes the bytes the duplicates announced.
        self.inflation = self.inflation.saturating_sub(len);
        self.round(now);
        let grown = self.cwnd.saturating_add(len);
        let target = self.bdp(CWND_GAIN * 100);
        self.cwnd = match target {
            None => grown,
            Some(target) if self.recovering => {
                self.recovering = grown < target;
                grown.min(target)
            }
            Some(target) if self.filled => target,
            // Startup: a window that doubles each round, as slow start's does, while it is
            // below the startup gain's share of what the path has shown it carries; never
            // lowered by it (BBR's startup: an application-limited round, a TLS
            // handshake's, measures little and cut a 11 kB window to 5 kB in the lab).
            Some(_) => match self.bdp(STARTUP_GAIN_PERCENT) {
                Some(cap) if self.cwnd >= cap => self.cwnd,
                _ => grown,
            },
        };
        self.cwnd = self.cwnd.min(self.rwnd.max(4 * self.mss)).max(self.mss);
    }

    fn on_loss(&mut self, _now: Instant, _in_flight: usize) {
        // Losses past a share of a round say the pipe is full (BBRv2's startup exit);
        // a random loss does not, nor does it ever shrink the window.
        self.round_losses = self.round_losses.saturating_add(1);
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: usize) {
        self.filled = true;
        // The lost segment goes alone, and the window grows back to the model's (which
        // a timeout does not change) as slow start would: everything after the segment
        // goes again (smoltcp goes back to it), and a whole window at once would meet
        // the receiver's reassembly with the holes it has.
        self.cwnd = self.mss;
        self.inflation = 0;
        self.recovering = true;
    }

    fn post_transmit(&mut self, _now: Instant, len: usize) {
        self.sent = self.sent.saturating_add(len as u64);
    }

    fn set_mss(&mut self, mss: usize) {
        self.mss = mss;
    }

    fn on_app_limited(&mut self) {
        self.app_limited = true;
    }

    fn pacing_rate(&self) -> Option<u64> {
        let (rtt_us, _) = self.min_rtt?;
        let bw = self.bandwidth();
        let window_rate = (self.cwnd as u64).saturating_mul(1_000_000) / rtt_us.max(1);
        let rate = if self.filled {
            // Never slower than the window over the round trip, and a fifth more (Linux's
            // pacing for every controller, 120 %): an estimate that application-limited
            // rounds or an early timeout left low would otherwise hold the sender at it,
            // gaining a quarter every eight rounds.
            let model = bw.saturating_mul(PACING_CYCLE[self.cycle % PACING_CYCLE.len()]) / 100;
            model.max(window_rate.saturating_mul(WINDOW_PACING_PERCENT) / 100)
        } else {
            bw.max(window_rate).saturating_mul(STARTUP_GAIN_PERCENT) / 100
        };
        (rate > 0).then_some(rate)
    }

    fn set_remote_window(&mut self, remote_window: usize) {
        if self.rwnd < remote_window {
            self.rwnd = remote_window;
        }
    }
}
