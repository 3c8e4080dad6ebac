//! Session persistence: which binding a client address of a listener sticks to, until
//! when, and when the region's other nodes were last told. Bounded by construction: the
//! table holds at most its capacity (the connection table's), the least recently used
//! client going first, and allocates as it fills (a bounded cache that took every slot up
//! front would cost the capacity from the start).

use std::net::IpAddr;

use anyedge_ccn::Lru;

/// One client's stickiness on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sticky {
    /// The listener's binding the client goes to.
    pub binding: usize,
    pub expires_ns: u64,
    /// When the region's other nodes were last told of it.
    pub synced_ns: u64,
}

/// (listener, client address) → where the client sticks.
#[derive(Debug)]
pub struct Persistence {
    table: Lru<(usize, IpAddr), Sticky>,
    /// At least one.
    capacity: usize,
}

impl Persistence {
    /// A table of at most `capacity` clients (at least one).
    pub fn new(capacity: usize) -> Persistence {
        Persistence { table: Lru::new(), capacity: capacity.max(1) }
    }

    /// The client's entry on listener `li`, live or not; it becomes the most recently used.
    pub fn get(&mut self, li: usize, client: IpAddr) -> Option<Sticky> {
        self.table.get(&(li, client)).copied()
    }

    /// Sets the client's entry; when the table is full, the least recently used goes.
    pub fn put(&mut self, li: usize, client: IpAddr, sticky: Sticky) {
        debug_assert!(sticky.synced_ns <= sticky.expires_ns, "told of before it expires");
        self.table.put((li, client), sticky);
        if self.table.len() > self.capacity {
            self.table.pop_lru();
        }
        assert!(self.table.len() <= self.capacity, "one put adds at most one entry");
    }

    /// Every entry, live or not.
    pub fn iter(&self) -> impl Iterator<Item = (usize, IpAddr, Sticky)> + '_ {
        self.table.iter().map(|(&(li, client), &sticky)| (li, client, sticky))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_forgets_the_least_recently_used_client() {
        let mut p = Persistence::new(2);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let sticky = |binding| Sticky { binding, expires_ns: 10, synced_ns: 0 };
        p.put(0, ip(1), sticky(0));
        p.put(0, ip(2), sticky(1));
        assert_eq!(p.get(0, ip(1)), Some(sticky(0)));
        p.put(0, ip(3), sticky(1));
        assert_eq!(p.get(0, ip(2)), None, "the least recently used went");
        assert_eq!(p.iter().count(), 2);
    }
}
