//! The event queue: a virtual clock and events ordered by (time, insertion order), so
//! two events at the same instant always run in the order they were scheduled.
//! The heap holds small keys; events wait in a slab, so sifting moves 24 bytes, not
//! whole events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A discrete-event queue with its own clock.
pub struct EventQueue<E> {
    /// (time, insertion number, slab slot), earliest first.
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    now_ns: u64,
    seq: u64,
    processed: u64,
}

impl<E> EventQueue<E> {
    pub fn new() -> EventQueue<E> {
        EventQueue { heap: BinaryHeap::new(), slab: Vec::new(), free: Vec::new(), now_ns: 0, seq: 0, processed: 0 }
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
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(event);
                slot
            }
            None => {
                self.slab.push(Some(event));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((at_ns, self.seq, slot)));
    }

    /// The next event no later than `until_ns`, advancing the clock to it.
    pub fn pop_until(&mut self, until_ns: u64) -> Option<E> {
        let &Reverse((at_ns, _, _)) = self.heap.peek()?;
        if at_ns > until_ns {
            return None;
        }
        let Reverse((at_ns, _, slot)) = self.heap.pop()?;
        debug_assert!(at_ns >= self.now_ns, "time never runs backwards");
        self.now_ns = at_ns;
        self.processed += 1;
        self.free.push(slot);
        self.slab[slot as usize].take()
    }

    /// When the earliest waiting event is due.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
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
