//! Windows of proxied connections that grow with their path, within the node's memory
//! budget: Linux's autotuning (`tcp_rcv_space_adjust`, `tcp_sndbuf_expand` under
//! `tcp_mem`) for the layer-7 proxy's own sockets.
//!
//! A proxied connection starts with 64 KiB of window on each of its sockets, what every
//! connection had before, and a SYN-ACK that offers window scaling (the scale follows
//! from [`MAX`], the buffers' capacity). Its [`Grant`] doubles, up to [`MAX`], when one of
//! its sockets is what holds a sender back:
//! - receiving: a segment filled the window to its right edge while the proxy had passed
//!   on everything before it (the sender had more to send; the other side was not what
//!   stopped it);
//! - sending: the proxy has bytes for a socket whose queue is at the grant while the peer
//!   offers as much window (within a segment): a slow reader, whose window is closing,
//!   never grows it.
//!
//! Growth is drawn from the node's [`Pool`]: every socket of a connection may hold its
//! grant, so growing by `d` reserves [`SOCKETS`] × `d`; the pool gives at most
//! [`GROWN_MAX`] in all, and only while the node's held bytes with the growth stay within
//! [`crate::l7::PROXIED_BYTES_MAX`]. A connection gives its growth back when it ends.
//! The memory a receive window takes is what waits in it (a compact buffer: storage as
//! large as its contents need); a send buffer is [`SEND_MAX`], allocated while it holds
//! anything and given back once everything is acknowledged.

use smoltcp::socket::tcp;

use crate::l7::PROXIED_BYTES_MAX;

/// The window every proxied socket starts with (what each had before windows grew).
pub const START: usize = 64 * 1024;
/// The largest window a proxied socket grows to: its buffers' capacity. At 37 ms (the
/// apps lab's London client to its VIP) it carries 113 MB/s.
pub const MAX: usize = 4 << 20;
/// The most a proxied socket queues to send (its send buffer, allocated whole while it
/// holds anything): at the apps lab's 28 ms round trip, 37 MB/s.
pub const SEND_MAX: usize = 1 << 20;
/// The window scale proxied sockets offer: smoltcp's for a receive buffer of [`MAX`].
pub const SHIFT: u8 = shift_for(MAX);
/// Sockets a grant covers: each of a connection's two sockets, receiving and sending.
pub const SOCKETS: usize = 4;
/// Bytes of growth the node grants in all (windows past [`START`], [`SOCKETS`] each).
pub const GROWN_MAX: usize = PROXIED_BYTES_MAX / 4;
/// A segment's worth: a send queue within this of the grant is full.
const SEGMENT: usize = 1_460;

const _: () = assert!(START.is_power_of_two() && MAX.is_power_of_two() && START < MAX);
const _: () = assert!(START <= SEND_MAX && SEND_MAX <= MAX);
const _: () = assert!(SHIFT as usize <= crate::syn_cookie::WINDOW_SCALE_MAX as usize);
const _: () = assert!(SOCKETS * (MAX - START) <= GROWN_MAX, "one connection can grow to the largest window");

/// The window scale smoltcp offers for a receive buffer of `capacity` bytes (one more
/// than the bits past 16 of the highest set bit: a 64 KiB buffer offers 1).
pub const fn shift_for(capacity: usize) -> u8 {
    let bits = usize::BITS - capacity.leading_zeros();
    bits.saturating_sub(16) as u8
}

/// One connection's window: what each of its sockets may offer and queue.
#[derive(Debug)]
pub struct Grant {
    bytes: usize,
}

impl Default for Grant {
    fn default() -> Grant {
        Grant { bytes: START }
    }
}

impl Grant {
    /// The window each socket may offer, and the bytes each may queue to send.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the proxy may queue into `socket` now (its grant, at most [`SEND_MAX`]).
    pub fn send_room(&self, socket: &tcp::Socket) -> usize {
        self.bytes.min(SEND_MAX).saturating_sub(socket.send_queue())
    }

    /// Whether `socket` held its sender back since last asked (see the module's doc):
    /// `waiting` says the proxy has bytes for it that did not fit.
    pub fn binds(&self, socket: &mut tcp::Socket, waiting: bool) -> bool {
        let receive_bound = socket.take_window_filled() && socket.recv_queue() == 0;
        let queued = socket.send_queue();
        let full = queued + SEGMENT > self.bytes.min(SEND_MAX);
        let send_bound = waiting && full && self.bytes < SEND_MAX && socket.remote_window() + SEGMENT >= queued;
        receive_bound || send_bound
    }
}

/// The growth the node has granted its connections.
#[derive(Debug, Default)]
pub struct Pool {
    grown: usize,
}

impl Pool {
    /// Bytes granted past [`START`], [`SOCKETS`] per connection, in all.
    pub fn grown(&self) -> usize {
        self.grown
    }

    /// Doubles `grant` (up to [`MAX`]) when the pool has room and `held_bytes` (the
    /// node's, this growth included) stays within [`PROXIED_BYTES_MAX`]; whether it did.
    pub fn grow(&mut self, grant: &mut Grant, held_bytes: usize) -> bool {
        let next = (grant.bytes * 2).min(MAX);
        let extra = SOCKETS * (next - grant.bytes);
        if extra == 0 || self.grown + extra > GROWN_MAX || held_bytes + extra > PROXIED_BYTES_MAX {
            return false;
        }
        self.grown += extra;
        grant.bytes = next;
        debug_assert!(self.grown <= GROWN_MAX, "the pool never grants past its bound");
        true
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
        let h = stack.new_growing_socket(START);
        assert_eq!(shift_for(stack.socket(h).recv_capacity()), SHIFT);
        assert_eq!(stack.socket(h).window_limit(), START);
    }

    #[test]
    fn grants_double_to_the_largest_window_and_the_pool_bounds_their_sum() {
        let mut pool = Pool::default();
        let mut grant = Grant::default();
        let mut steps = 0;
        while pool.grow(&mut grant, 0) {
            steps += 1;
        }
        assert_eq!((grant.bytes(), steps), (MAX, 6), "64 KiB doubled six times is 4 MiB");
        assert_eq!(pool.grown(), SOCKETS * (MAX - START));
        // Connections grow until the pool is spent; then a new one keeps its start.
        let mut grants: Vec<Grant> = Vec::new();
        loop {
            let mut g = Grant::default();
            while pool.grow(&mut g, 0) {}
            if g.bytes() == START {
                break;
            }
            grants.push(g);
        }
        assert!(pool.grown() <= GROWN_MAX && GROWN_MAX - pool.grown() < SOCKETS * START, "no room for one step");
        assert!(grants.len() >= GROWN_MAX / (SOCKETS * MAX), "{} connections grew", grants.len());
        for g in &grants {
            pool.release(g);
        }
        pool.release(&grant);
        assert_eq!(pool.grown(), 0, "every connection gave its growth back");
    }

    #[test]
    fn a_node_near_its_memory_budget_grows_no_window() {
        let mut pool = Pool::default();
        let mut grant = Grant::default();
        assert!(!pool.grow(&mut grant, PROXIED_BYTES_MAX - SOCKETS * START + 1));
        assert_eq!((grant.bytes(), pool.grown()), (START, 0));
        assert!(pool.grow(&mut grant, PROXIED_BYTES_MAX - SOCKETS * START));
    }
}
