//! The event queue: a virtual clock and events ordered by (time, insertion order), so
//! two events at the same instant always run in the order they were scheduled.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Scheduled<E> {
    at_ns: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.seq) == (other.at_ns, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        (other.at_ns, other.seq).cmp(&(self.at_ns, self.seq))
    }
}

/// A discrete-event queue with its own clock.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    now_ns: u64,
    seq: u64,
    processed: u64,
}

impl<E> EventQueue<E> {
    pub fn new() -> EventQueue<E> {
        EventQueue { heap: BinaryHeap::new(), now_ns: 0, seq: 0, processed: 0 }
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Events taken off the queue so far.
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// Schedules `event` at `at_ns`; a time in the past runs at the current time.
    pub fn schedule(&mut self, at_ns: u64, event: E) {
        let at_ns = at_ns.max(self.now_ns);
        self.seq += 1;
        self.heap.push(Scheduled { at_ns, seq: self.seq, event });
    }

    /// The next event no later than `until_ns`, advancing the clock to it.
    pub fn pop_until(&mut self, until_ns: u64) -> Option<E> {
        if self.heap.peek()?.at_ns > until_ns {
            return None;
        }
        let next = self.heap.pop()?;
        debug_assert!(next.at_ns >= self.now_ns, "time never runs backwards");
        self.now_ns = next.at_ns;
        self.processed += 1;
        Some(next.event)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
        assert_eq!(q.pop_until(100), Some("c"));
        assert_eq!(q.now_ns(), 20);
    }
}
