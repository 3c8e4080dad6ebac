//! The node's timers by name, quinn-proto's `TimerTable` shape: one slot per timer, each
//! set from the part that owns it; the earliest is what the driver waits for, and the
//! ones due are what a wake-up runs.

/// What a CLB node wakes up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The connection table's sweep (idle flows end, memory counted), every
    /// `SWEEP_INTERVAL_NS`: the node's own.
    Sweep,
    /// The next health probe or probe timeout (`HealthPlane`).
    Health,
    /// The layer-7 proxy's next deadline (a request head, an idle connection).
    Proxy,
    /// The earliest of the QUIC endpoints' timers.
    Quic,
    /// The connection sync's next batch to peers.
    Sync,
}

impl Timer {
    const ALL: [Timer; 5] = [Timer::Sweep, Timer::Health, Timer::Proxy, Timer::Quic, Timer::Sync];
}

/// When each timer is due (ns), if it is set.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    at_ns: [Option<u64>; Timer::ALL.len()],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at_ns: Option<u64>) {
        self.at_ns[timer as usize] = at_ns;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<u64> {
        self.at_ns[timer as usize]
    }

    /// Whether `timer` is set and due at `now_ns`.
    pub(super) fn is_due(&self, timer: Timer, now_ns: u64) -> bool {
        self.get(timer).is_some_and(|at| at <= now_ns)
    }

    /// The earliest timer set.
    pub(super) fn next(&self) -> Option<u64> {
        self.at_ns.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_set_timer_is_next_and_a_timer_is_due_from_its_time_on() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Sync, Some(30));
        t.set(Timer::Health, Some(20));
        t.set(Timer::Quic, None);
        assert_eq!(t.next(), Some(20));
        assert!(!t.is_due(Timer::Health, 19) && t.is_due(Timer::Health, 20) && !t.is_due(Timer::Quic, 99));
        t.set(Timer::Health, None);
        assert_eq!(t.next(), Some(30), "an unset timer is not waited for");
        assert_eq!(Timer::ALL.iter().map(|&t| t as usize).collect::<Vec<_>>(), [0, 1, 2, 3, 4], "a slot each");
    }
}
