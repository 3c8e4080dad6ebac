//! Windows of proxied connections that grow with their path, within the node's memory
//! budget: Linux's autotuning (`tcp_rcv_space_adjust`, `tcp_sndbuf_expand` under
//! `tcp_mem`) for the layer-7 proxy's own sockets.
//!
//! A proxied connection starts with 64 KiB of window on each of its sockets, what every
//! connection had before, and a SYN-ACK that offers window scaling (the scale follows
//! from [`MAX`], the buffers' capacity). It has a [`Grant`] for each direction: upward
//! (the client's socket receiving, the backend's sending) and downward (the backend's
//! receiving, the client's sending). A direction's grant doubles, up to [`MAX`] and at
//! most once a round trip (slow start's pace), when one of its sockets is what holds
//! that direction's sender back; a sending socket's grant goes at once to twice its
//! congestion window ([`Pool::expand_send`], Linux's `tcp_sndbuf_expand`):
//! - receiving: a segment filled the window to its right edge while the proxy had passed
//!   everything before it on, and the other side had taken it (the sender had more to
//!   send; neither the proxy nor the other side was what stopped it);
//! - sending: the proxy has bytes for a socket whose queue is at the grant while the peer
//!   offers as much window (within a segment): a slow reader, whose window is closing,
//!   never grows it.
//!
//! A direction grows only while the other is not backed up at the proxy (nothing waits
//! in the relay toward its sender): a client that pipelines requests and never reads
//! their answers keeps the windows it has, as does a backend that never reads.
//!
//! Growth is drawn from the node's [`Pool`]: both sockets of a direction may hold its
//! grant, so growing by `d` reserves [`SOCKETS`] × `d`; the pool gives at most
//! [`GROWN_MAX`] in all, and only while the node's held bytes with the growth stay within
//! [`crate::l7::PROXIED_BYTES_MAX`]. A connection gives its growth back when it ends.
//! The memory a receive window takes is what waits in it (a compact buffer: storage as
//! large as its contents need); a send buffer is its direction's grant (at most
//! [`SEND_MAX`]), raised as the grant grows, allocated while it holds anything and given
//! back once everything is acknowledged.

use smoltcp::socket::tcp;

use crate::l7::PROXIED_BYTES_MAX;

/// The window every proxied socket starts with (what each had before windows grew).
pub const START: usize = 64 * 1024;
/// The largest window a proxied socket grows to: its buffers' capacity. At 37 ms (the
/// apps lab's London client to its VIP) it carries 113 MB/s.
pub const MAX: usize = 4 << 20;
/// The most a proxied socket queues to send (its send buffer, allocated whole while it
/// holds anything): what is sent and not yet acknowledged stays in it, so it carries a
/// loss's repair round trip too (at the apps lab's 37 ms, 4 MiB keep 113 MB/s going).
pub const SEND_MAX: usize = 4 << 20;
/// The window scale proxied sockets offer: smoltcp's for a receive buffer of [`MAX`].
pub const SHIFT: u8 = shift_for(MAX);
/// Sockets a grant covers: one direction's receiving socket and its sending one.
pub const SOCKETS: usize = 2;
/// Bytes of growth the node grants in all (windows past [`START`], [`SOCKETS`] each).
pub const GROWN_MAX: usize = PROXIED_BYTES_MAX / 4;
/// A segment's worth: a send queue within this of the grant is full.
const SEGMENT: usize = 1_460;

const _: () = assert!(START.is_power_of_two() && MAX.is_power_of_two() && START < MAX);
const _: () = assert!(START <= SEND_MAX && SEND_MAX <= MAX);
const _: () = assert!(SHIFT as usize <= crate::syn_cookie::WINDOW_SCALE_MAX as usize);
const _: () = assert!(2 * SOCKETS * (MAX - START) <= GROWN_MAX, "one connection can grow to the largest windows");
/// The least time between two doublings of a grant whose sockets have no round trip
/// measured yet.
const UNMEASURED_RTT_NS: u64 = 100_000_000;

/// The window scale smoltcp offers for a receive buffer of `capacity` bytes (one more
/// than the bits past 16 of the highest set bit: a 64 KiB buffer offers 1).
pub const fn shift_for(capacity: usize) -> u8 {
    let bits = usize::BITS - capacity.leading_zeros();
    bits.saturating_sub(16) as u8
}

/// One direction's window: what its receiving socket may offer and its sending socket
/// queue.
#[derive(Debug)]
pub struct Grant {
    bytes: usize,
    /// When it last doubled.
    grown_at_ns: Option<u64>,
}

impl Default for Grant {
    fn default() -> Grant {
        Grant { bytes: START, grown_at_ns: None }
    }
}

impl Grant {
    /// The window its receiving socket may offer, and the bytes its sending one may queue.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the proxy may queue into `socket`, this direction's sending socket, now (its
    /// grant, at most [`SEND_MAX`]).
    pub fn send_room(&self, socket: &tcp::Socket) -> usize {
        self.send_buffer().saturating_sub(socket.send_queue())
    }

    /// The send buffer this direction's sending socket has: its grant, at most
    /// [`SEND_MAX`].
    pub fn send_buffer(&self) -> usize {
        self.bytes.min(SEND_MAX)
    }

    /// Whether `socket`, this direction's receiving socket, held its sender back since
    /// last asked (a segment reached its window's right edge; the flag is cleared either
    /// way): `passed_on` says the proxy's relay buffer toward the other side is empty.
    pub fn receive_binds(&self, socket: &mut tcp::Socket, passed_on: bool) -> bool {
        socket.take_window_filled() && socket.recv_queue() == 0 && passed_on
    }

    /// Whether `socket`, this direction's sending socket, holds the sender back: the
    /// proxy has bytes for it (`waiting`) that its queue, full at the grant, did not take
    /// while its peer offers as much window.
    pub fn send_binds(&self, socket: &tcp::Socket, waiting: bool) -> bool {
        let queued = socket.send_queue();
        let full = queued + SEGMENT > self.bytes.min(SEND_MAX);
        waiting && full && self.bytes < SEND_MAX && socket.remote_window() + SEGMENT >= queued
    }

    /// Whether a round trip (`rtt_ms`, the larger of its sockets' smoothed RTTs, when
    /// measured) has passed since it last doubled.
    fn due(&self, now_ns: u64, rtt_ms: Option<u32>) -> bool {
        let rtt_ns = rtt_ms.map_or(UNMEASURED_RTT_NS, |ms| u64::from(ms) * 1_000_000);
        self.grown_at_ns.is_none_or(|at| now_ns >= at.saturating_add(rtt_ns))
    }
}

/// The growth the node has granted its connections.
#[derive(Debug, Default)]
pub struct Pool {
    grown: usize,
}

impl Pool {
    /// Bytes granted past [`START`], [`SOCKETS`] per grant, in all.
    pub fn grown(&self) -> usize {
        self.grown
    }

    /// Doubles `grant` (up to [`MAX`]) when a round trip passed since it last did
    /// (`rtt_ms`: its sockets' larger smoothed RTT, when measured), the pool has room and
    /// `held_bytes` (the node's, this growth included) stays within
    /// [`PROXIED_BYTES_MAX`]; whether it did.
    pub fn grow(&mut self, grant: &mut Grant, held_bytes: usize, now_ns: u64, rtt_ms: Option<u32>) -> bool {
        grant.due(now_ns, rtt_ms) && self.double(grant, held_bytes, now_ns)
    }

    /// Doubles `grant` (up to [`MAX`]) if the pool has room and `held_bytes` with the
    /// growth stays within [`PROXIED_BYTES_MAX`]; whether it did.
    fn double(&mut self, grant: &mut Grant, held_bytes: usize, now_ns: u64) -> bool {
        let next = (grant.bytes * 2).min(MAX);
        let extra = SOCKETS * (next - grant.bytes);
        if extra == 0 || self.grown + extra > GROWN_MAX || held_bytes + extra > PROXIED_BYTES_MAX {
            return false;
        }
        self.grown += extra;
        grant.bytes = next;
        grant.grown_at_ns = Some(now_ns);
        debug_assert!(self.grown <= GROWN_MAX, "the pool never grants past its bound");
        true
    }

    /// Doubles `grant` at once as many times as its send buffer needs to reach twice
    /// `cwnd`, the sending socket's congestion window (up to [`MAX`], within the pool and
    /// [`PROXIED_BYTES_MAX`] as [`Pool::grow`]): Linux's `tcp_sndbuf_expand`, a queue the
    /// controller never waits for. Slow start doubles the window each round trip; a
    /// buffer that also doubled at most once a (smoothed, queue-inflated) round trip
    /// fell behind it. Whether it grew.
    pub fn expand_send(&mut self, grant: &mut Grant, cwnd: usize, held_bytes: usize, now_ns: u64) -> bool {
        let (want, before) = (cwnd.saturating_mul(2).min(SEND_MAX), self.grown);
        // Each doubling counts the ones before it in the node's held bytes.
        while grant.send_buffer() < want && self.double(grant, held_bytes + (self.grown - before), now_ns) {}
        self.grown > before
    }

    /// Takes back what a finished connection's grant had grown.
    pub fn release(&mut self, grant: &Grant) {
        let grown = SOCKETS * (grant.bytes - START);
        debug_assert!(self.grown >= grown, "a grant gives back only what it was given");
        self.grown -= grown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_offered_is_smoltcps_for_the_buffers_capacity() {
        assert_eq!(shift_for(64 * 1024), 1);
        assert_eq!(shift_for(65_535), 0);
        assert_eq!(SHIFT, 7);
        let mut stack = crate::tcp_stack::TcpStack::new("198.18.0.20".parse().unwrap(), 1, 0);
        let h = stack.new_growing_socket(START, START);
        assert_eq!(shift_for(stack.socket(h).recv_capacity()), SHIFT);
        assert_eq!(stack.socket(h).window_limit(), START);
    }

    #[test]
    fn grants_double_to_the_largest_window_and_the_pool_bounds_their_sum() {
        let mut pool = Pool::default();
        let mut grant = Grant::default();
        let mut steps = 0;
        let mut now = 0;
        while pool.grow(&mut grant, 0, now, Some(1)) {
            steps += 1;
            now += 1_000_000;
        }
        assert_eq!((grant.bytes(), steps), (MAX, 6), "64 KiB doubled six times is 4 MiB");
        assert_eq!(pool.grown(), SOCKETS * (MAX - START));
        // Grants grow until the pool is spent; then a new one keeps its start.
        let mut grants: Vec<Grant> = Vec::new();
        loop {
            let mut g = Grant::default();
            let mut at = 0;
            while pool.grow(&mut g, 0, at, None) {
                at += UNMEASURED_RTT_NS;
            }
            if g.bytes() == START {
                break;
            }
            grants.push(g);
        }
        assert!(pool.grown() <= GROWN_MAX && GROWN_MAX - pool.grown() < SOCKETS * START, "no room for one step");
        assert!(grants.len() >= GROWN_MAX / (SOCKETS * MAX), "{} grants grew", grants.len());
        for g in &grants {
            pool.release(g);
        }
        pool.release(&grant);
        assert_eq!(pool.grown(), 0, "every grant gave its growth back");
    }

    #[test]
    fn a_grant_doubles_at_most_once_a_round_trip() {
        let mut pool = Pool::default();
        let mut grant = Grant::default();
        let ms = 1_000_000;
        assert!(pool.grow(&mut grant, 0, 5 * ms, Some(28)), "the first doubling needs no wait");
        assert!(!pool.grow(&mut grant, 0, 32 * ms, Some(28)), "27 ms later: within the round trip");
        assert_eq!(grant.bytes(), 2 * START);
        assert!(pool.grow(&mut grant, 0, 33 * ms, Some(28)), "28 ms later: a round trip on");
        assert!(!pool.grow(&mut grant, 0, 132 * ms, None), "no round trip measured: 100 ms");
        assert!(pool.grow(&mut grant, 0, 133 * ms, None));
        assert_eq!(grant.bytes(), 8 * START);
        assert_eq!(pool.grown(), SOCKETS * (8 * START - START));
    }

    #[test]
    fn a_send_buffer_follows_twice_the_congestion_window_at_once_within_the_budget() {
        let mut pool = Pool::default();
        let mut grant = Grant::default();
        assert!(!pool.expand_send(&mut grant, START / 2, 0, 0), "a 32 KiB window fits 64 KiB");
        // A window of 300 KB wants 600 KB: four doublings in one go, 1 MiB.
        assert!(pool.expand_send(&mut grant, 300_000, 0, 1));
        assert_eq!(grant.send_buffer(), 1 << 20);
        assert_eq!(pool.grown(), SOCKETS * ((1 << 20) - START));
        // ... and a round trip's wait does not apply to the next step either.
        assert!(pool.expand_send(&mut grant, 600_000, 0, 2));
        assert_eq!(grant.send_buffer(), 2 << 20);
        assert!(pool.expand_send(&mut grant, 64 << 20, 0, 3), "a huge window stops at the largest buffer");
        assert_eq!(grant.send_buffer(), SEND_MAX);
        // A node near its budget stops where the next doubling would pass it.
        let mut other = Grant::default();
        let near = PROXIED_BYTES_MAX - SOCKETS * START;
        assert!(pool.expand_send(&mut other, 1 << 20, near, 4));
        assert_eq!(other.send_buffer(), 2 * START, "one doubling fitted, the next did not");
        pool.release(&grant);
        pool.release(&other);
        assert_eq!(pool.grown(), 0);
    }

    #[test]
    fn a_node_near_its_memory_budget_grows_no_window() {
        let mut pool = Pool::default();
        let mut grant = Grant::default();
        assert!(!pool.grow(&mut grant, PROXIED_BYTES_MAX - SOCKETS * START + 1, 0, None));
        assert_eq!((grant.bytes(), pool.grown()), (START, 0));
        assert!(pool.grow(&mut grant, PROXIED_BYTES_MAX - SOCKETS * START, 0, None));
    }
}
