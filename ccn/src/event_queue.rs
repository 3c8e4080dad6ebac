//! The event queue: a virtual clock and events ordered by (time, insertion order), so
//! two events at the same instant always run in the order they were scheduled.
//!
//! A radix heap (Ahuja, Mehlhorn, Orlin, Tarjan 1990) over 4-bit digits, which fits a
//! discrete-event clock: times never go below the last one taken. An event waits in the
//! bucket of (the highest digit in which its time differs from the last time taken, its
//! value there); those due at exactly that time wait in "now", first scheduled first.
//! Buckets order by digit position, then value, so the earliest waiting time lies in the
//! first non-empty one. Scheduling appends to a bucket (no sifting through a heap as large
//! as every pending event); when "now" is empty, taking the next event finds the first
//! non-empty bucket's earliest time and spreads the bucket, in order, over the buckets
//! below, so each event moves at most once per digit of its distance from the clock (a
//! 50 ms timer: 7 digits; it was 26 bits with a bucket per bit, and those moves were the
//! queue's cost). A binary heap's cost per event grew with the number of pending events.
//!
//! Insertion order needs no sequence number: two events due at the same time always sit
//! in the same bucket (a bucket is a function of the time and the last time taken), each
//! bucket keeps the order events entered it, and spreading a bucket keeps its order.
//!
//! Each bucket also remembers its earliest entry, so the queue always knows the event
//! after the one it hands out; it asks the CPU to fetch that event and the memory its
//! payload points at (a packet in flight for milliseconds has long left the cache) while
//! the current one runs. A prefetch is a hint: what runs, and when, never depends on it.

/// Times are taken in digits of this many bits: a bucket per digit value and level.
const DIGIT_BITS: u32 = 4;
const DIGITS: usize = 1 << DIGIT_BITS;
/// Levels: one per digit of the 64-bit time.
const LEVELS: usize = 64 / DIGIT_BITS as usize;
/// A bucket emptied by spreading keeps its allocation up to this many entries.
const BUCKET_KEPT_MAX: usize = 4096;

/// What the buckets move around: a time, where its event waits and where its payload
/// lies. Events stay put in `slots` (they are large and moved once each way); only these
/// 24 bytes move between buckets.
#[derive(Clone, Copy)]
struct Scheduled {
    at_ns: u64,
    slot: u32,
    /// The address of the event's payload ([`EventQueue::with_payload`]), 0 for none.
    payload: usize,
    /// Its length in bytes.
    payload_len: u32,
}

const NONE: Scheduled = Scheduled { at_ns: u64::MAX, slot: u32::MAX, payload: 0, payload_len: 0 };
/// Bytes of a payload prefetched at most (a full-size packet and its envelope).
const PAYLOAD_PREFETCH_MAX: usize = 1_600;
const CACHE_LINE: usize = 64;

/// Asks the CPU to bring the cache line at `addr` in; never faults, whatever the address.
#[inline]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault, for any
    // address; SSE is part of every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// A discrete-event queue with its own clock.
pub struct EventQueue<E> {
    /// Due now, first scheduled first; entries before `head` were taken already.
    now: Vec<Scheduled>,
    head: usize,
    /// Bucket `level * DIGITS + d`: entries whose highest digit differing from `last` is
    /// digit `level`, and whose value there is `d`.
    buckets: Vec<Vec<Scheduled>>,
    /// Each bucket's earliest entry, the first scheduled of those at its time (kept as
    /// entries arrive: no scan to find it).
    mins: Vec<Scheduled>,
    /// Per level, bit d set when that level's bucket d is not empty.
    occupied: [u16; LEVELS],
    /// Bit `level` set when a bucket of that level is not empty.
    levels: u16,
    /// The time of the last event taken (every waiting time is at least this).
    last: u64,
    /// The waiting events, by slot; `free` lists the empty slots.
    slots: Vec<Option<E>>,
    free: Vec<u32>,
    len: usize,
    processed: u64,
    /// Where an event's payload lies and how long it is, to prefetch before it runs.
    payload: fn(&E) -> (usize, u32),
}

impl<E> EventQueue<E> {
    pub fn new() -> EventQueue<E> {
        EventQueue {
            now: Vec::new(),
            head: 0,
            buckets: (0..LEVELS * DIGITS).map(|_| Vec::new()).collect(),
            mins: vec![NONE; LEVELS * DIGITS],
            occupied: [0; LEVELS],
            levels: 0,
            last: 0,
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            processed: 0,
            payload: |_| (0, 0),
        }
    }

    /// A queue that prefetches the memory `payload` names (an event's packet bytes, say)
    /// one event ahead.
    pub fn with_payload(payload: fn(&E) -> (usize, u32)) -> EventQueue<E> {
        EventQueue { payload, ..EventQueue::new() }
    }

    pub fn now_ns(&self) -> u64 {
        self.last
    }

    /// Events taken off the queue so far.
    pub fn processed(&self) -> u64 {
        self.processed
    }

    fn put(&mut self, entry: Scheduled) {
        debug_assert!(entry.at_ns >= self.last, "nothing is put in the past");
        let differ = entry.at_ns ^ self.last;
        if differ == 0 {
            self.now.push(entry);
            return;
        }
        let level = (63 - differ.leading_zeros()) / DIGIT_BITS;
        let digit = (entry.at_ns >> (level * DIGIT_BITS)) as usize & (DIGITS - 1);
        debug_assert!(digit > (self.last >> (level * DIGIT_BITS)) as usize & (DIGITS - 1), "a later digit");
        self.occupied[level as usize] |= 1 << digit;
        self.levels |= 1 << level;
        let b = level as usize * DIGITS + digit;
        if entry.at_ns < self.mins[b].at_ns {
            self.mins[b] = entry;
        }
        self.buckets[b].push(entry);
    }

    /// The earliest non-empty bucket, and its earliest time: buckets order by level, then
    /// digit (every time in a lower one is earlier).
    fn earliest_above_now(&self) -> Option<(usize, u64)> {
        let b = self.earliest_bucket()?;
        let min = self.mins[b].at_ns;
        debug_assert_eq!(Some(min), self.buckets[b].iter().map(|e| e.at_ns).min(), "the bucket's earliest");
        debug_assert!(min > self.last, "above bucket 0 lies only the future");
        Some((b, min))
    }

    /// The earliest non-empty bucket.
    fn earliest_bucket(&self) -> Option<usize> {
        if self.levels == 0 {
            return None;
        }
        let level = self.levels.trailing_zeros() as usize;
        let digit = self.occupied[level].trailing_zeros() as usize;
        Some(level * DIGITS + digit)
    }

    /// Schedules `event` at `at_ns`; a time in the past runs at the current time.
    pub fn schedule(&mut self, at_ns: u64, event: E) {
        let at_ns = at_ns.max(self.last);
        let (payload, payload_len) = (self.payload)(&event);
        self.len += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                // More than 2^32 events waiting at once would not fit in memory anyway.
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 waiting events");
                self.slots.push(Some(event));
                slot
            }
        };
        self.put(Scheduled { at_ns, slot, payload, payload_len });
        debug_assert_eq!(self.len, self.slots.len() - self.free.len(), "every waiting event holds one slot");
    }

    /// The next event no later than `until_ns`, advancing the clock to it.
    pub fn pop_until(&mut self, until_ns: u64) -> Option<E> {
        if self.head == self.now.len() {
            let (b, min) = self.earliest_above_now()?;
            if min > until_ns {
                return None;
            }
            // Every entry of bucket b now differs from `min` only in lower digits: spread
            // them, in order; those due at `min` are due now.
            let (level, digit) = (b / DIGITS, b % DIGITS);
            self.occupied[level] &= !(1 << digit);
            if self.occupied[level] == 0 {
                self.levels &= !(1 << level);
            }
            self.last = min;
            self.mins[b] = NONE;
            self.now.clear();
            self.head = 0;
            let mut bucket = std::mem::take(&mut self.buckets[b]);
            for e in bucket.drain(..) {
                self.put(e);
            }
            // Keep a small bucket's allocation for later; a large one (a high digit's,
            // holding the next quarter-second of a million clients' timers) goes back,
            // or every bucket would keep the most it ever held.
            if self.buckets[b].is_empty() && bucket.capacity() <= BUCKET_KEPT_MAX {
                self.buckets[b] = bucket;
            }
        } else if self.last > until_ns {
            return None;
        }
        let entry = self.now[self.head];
        self.head += 1;
        self.processed += 1;
        self.len -= 1;
        self.free.push(entry.slot);
        debug_assert_eq!(entry.at_ns, self.last, "events leave in time order");
        let event = self.slots[entry.slot as usize].take();
        debug_assert!(event.is_some(), "a scheduled slot holds its event until it runs");
        self.prefetch_next();
        event
    }

    /// The entry of the event `pop_until` hands out next.
    fn next_entry(&self) -> Option<Scheduled> {
        match self.now.get(self.head) {
            Some(&entry) => Some(entry),
            None => self.earliest_bucket().map(|b| self.mins[b]),
        }
    }

    /// Brings the next event and its payload towards the cache while this one runs.
    fn prefetch_next(&self) {
        let Some(next) = self.next_entry() else { return };
        if let Some(slot) = self.slots.get(next.slot as usize) {
            // An event may straddle two lines.
            let at = slot as *const Option<E> as usize;
            prefetch(at);
            prefetch(at + std::mem::size_of::<Option<E>>() - 1);
        }
        if next.payload != 0 {
            let end = next.payload + (next.payload_len as usize).min(PAYLOAD_PREFETCH_MAX);
            let mut line = next.payload & !(CACHE_LINE - 1);
            while line < end {
                prefetch(line);
                line += CACHE_LINE;
            }
        }
    }

    /// When the earliest waiting event is due.
    pub fn next_at(&self) -> Option<u64> {
        if self.head < self.now.len() {
            return Some(self.last);
        }
        self.earliest_above_now().map(|(_, min)| min)
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
    /// interleaved with taking them off, with peeks that must not disturb anything. The
    /// entry the queue prefetches is always the next event's.
    #[test]
    fn takes_events_in_exactly_the_order_a_binary_heap_over_time_and_insertion_does() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut q = EventQueue::with_payload(|&seq: &u64| (seq as usize, 1));
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
                let until = match r % 16 {
                    7 => now,
                    9 => now + r % 2_000_000,
                    _ => u64::MAX,
                };
                assert_eq!(q.next_at(), heap.peek().map(|Reverse((at, _))| *at));
                let first = heap.peek().map(|&Reverse((_, s))| s as usize);
                assert_eq!(q.next_entry().map(|e| e.payload), first, "the prefetched event runs next");
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
