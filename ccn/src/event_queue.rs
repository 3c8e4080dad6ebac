//! The event queue: a virtual clock and events ordered by (time, insertion order), so
//! two events at the same instant always run in the order they were scheduled.
//!
//! A radix heap (Ahuja, Mehlhorn, Orlin, Tarjan 1990), which fits a discrete-event clock:
//! keys never go below the last one taken. Each event's key is (time, insertion number)
//! as one 128-bit number; bucket `b` holds the keys whose highest bit differing from the
//! last key taken is bit `b − 1`. Scheduling appends to a bucket (no sifting through a
//! heap as large as every pending event); taking the next event scans the lowest
//! non-empty bucket and spreads it over the buckets below, so each event moves at most
//! once per bit of its distance from the clock, and mostly through memory in order. A
//! binary heap's cost per event grew with the number of pending events (one per flow
//! and more), and its random accesses were most of a large world's run time.

/// Buckets: one per bit of the 128-bit key, plus bucket 0 (unused: keys are unique).
const BUCKETS: usize = 129;

/// A discrete-event queue with its own clock.
pub struct EventQueue<E> {
    /// Bucket b: (key, event) with `128 − (key ^ last).leading_zeros() == b`.
    buckets: Vec<Vec<(u128, E)>>,
    /// Bit b set when bucket b is not empty.
    occupied: u128,
    occupied_top: bool,
    /// The key of the last event taken (every waiting key is larger).
    last: u128,
    len: usize,
    now_ns: u64,
    seq: u64,
    processed: u64,
}

fn key(at_ns: u64, seq: u64) -> u128 {
    (u128::from(at_ns) << 64) | u128::from(seq)
}

fn time_of(key: u128) -> u64 {
    (key >> 64) as u64
}

impl<E> EventQueue<E> {
    pub fn new() -> EventQueue<E> {
        EventQueue {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            occupied: 0,
            occupied_top: false,
            last: 0,
            len: 0,
            now_ns: 0,
            seq: 0,
            processed: 0,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Events taken off the queue so far.
    pub fn processed(&self) -> u64 {
        self.processed
    }

    fn bucket_of(&self, key: u128) -> usize {
        128 - (key ^ self.last).leading_zeros() as usize
    }

    fn put(&mut self, key: u128, event: E) {
        let b = self.bucket_of(key);
        if b == 128 {
            self.occupied_top = true;
        } else {
            self.occupied |= 1 << b;
        }
        self.buckets[b].push((key, event));
    }

    /// The lowest non-empty bucket.
    fn first_bucket(&self) -> Option<usize> {
        if self.occupied != 0 {
            Some(self.occupied.trailing_zeros() as usize)
        } else if self.occupied_top {
            Some(128)
        } else {
            None
        }
    }

    /// Where the smallest key of the lowest non-empty bucket is.
    fn min_in(&self, b: usize) -> (usize, u128) {
        let mut best = (0, u128::MAX);
        for (i, &(k, _)) in self.buckets[b].iter().enumerate() {
            if k < best.1 {
                best = (i, k);
            }
        }
        best
    }

    /// Schedules `event` at `at_ns`; a time in the past runs at the current time.
    pub fn schedule(&mut self, at_ns: u64, event: E) {
        let at_ns = at_ns.max(self.now_ns);
        self.seq += 1;
        self.len += 1;
        self.put(key(at_ns, self.seq), event);
    }

    /// The next event no later than `until_ns`, advancing the clock to it.
    pub fn pop_until(&mut self, until_ns: u64) -> Option<E> {
        let b = self.first_bucket()?;
        let (i, min) = self.min_in(b);
        if time_of(min) > until_ns {
            return None;
        }
        let mut bucket = std::mem::take(&mut self.buckets[b]);
        let (_, event) = bucket.swap_remove(i);
        if b == 128 {
            self.occupied_top = false;
        } else {
            self.occupied &= !(1 << b);
        }
        // Every other key of the bucket now differs from `min` below bit b − 1.
        self.last = min;
        for (k, e) in bucket.drain(..) {
            self.put(k, e);
        }
        // Keep the bucket's allocation for later.
        if self.buckets[b].is_empty() {
            self.buckets[b] = bucket;
        }
        debug_assert!(time_of(min) >= self.now_ns, "time never runs backwards");
        self.now_ns = time_of(min);
        self.processed += 1;
        self.len -= 1;
        Some(event)
    }

    /// When the earliest waiting event is due.
    pub fn next_at(&self) -> Option<u64> {
        let b = self.first_bucket()?;
        Some(time_of(self.min_in(b).1))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn events_run_in_time_then_insertion_order() {
        let mut q = EventQueue::new();
        q.schedule(20, "c");
        q.schedule(10, "a");
        q.schedule(10, "b");
        assert_eq!(q.pop_until(100), Some("a"));
        assert_eq!(q.pop_until(100), Some("b"));
        assert_eq!(q.now_ns(), 10);
        assert_eq!(q.pop_until(15), None);
        assert_eq!(q.next_at(), Some(20));
        assert_eq!(q.pop_until(100), Some("c"));
        assert_eq!(q.now_ns(), 20);
        assert!(q.is_empty());
    }

    #[test]
    fn a_time_in_the_past_runs_now_after_what_is_already_due_now() {
        let mut q = EventQueue::new();
        q.schedule(50, 1);
        q.schedule(50, 2);
        assert_eq!(q.pop_until(u64::MAX), Some(1));
        q.schedule(10, 3);
        assert_eq!(q.pop_until(u64::MAX), Some(2));
        assert_eq!(q.pop_until(u64::MAX), Some(3));
        assert_eq!(q.now_ns(), 50);
    }

    /// The same order as a binary heap over (time, insertion number), for a simulator's
    /// mix: events scheduled from the clock to far ahead, many at the same instant,
    /// interleaved with taking them off, with peeks that must not disturb anything.
    #[test]
    fn takes_events_in_exactly_the_order_a_binary_heap_over_time_and_insertion_does() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut q = EventQueue::new();
        let mut heap = BinaryHeap::new();
        let (mut seq, mut now, mut taken) = (0u64, 0u64, 0);
        for _ in 0..200_000 {
            let r = next();
            if r % 8 < 5 {
                let ahead = match r % 5 {
                    0 => 0,
                    1 => r % 1_000,
                    2 => r % 1_000_000,
                    3 => r % 10_000_000_000,
                    _ => u64::MAX / 4 + r % 7,
                };
                let at = now.saturating_add(ahead);
                seq += 1;
                heap.push(Reverse((at, seq)));
                q.schedule(at, seq);
            } else {
                let until = if r % 16 == 7 { now } else { u64::MAX };
                assert_eq!(q.next_at(), heap.peek().map(|Reverse((at, _))| *at));
                let want = match heap.peek() {
                    Some(&Reverse((at, s))) if at <= until => {
                        heap.pop();
                        now = at;
                        Some(s)
                    }
                    _ => None,
                };
                assert_eq!(q.pop_until(until), want);
                assert_eq!(q.now_ns(), now);
                taken += usize::from(want.is_some());
            }
            assert_eq!(q.len(), heap.len());
        }
        while let Some(Reverse((_, s))) = heap.pop() {
            assert_eq!(q.pop_until(u64::MAX), Some(s));
        }
        assert_eq!(q.pop_until(u64::MAX), None);
        assert!(taken > 10_000, "the mix took {taken} events before draining");
    }
}
