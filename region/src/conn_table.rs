//! The connection table: flow → chosen backend and the POP replies go through. An LRU
//! with a fixed capacity, so a flood of new flows costs memory up to the bound, never
//! more: the least recently used entry is evicted instead.

use std::collections::HashMap;

use anyedge_proto::FlowKey;
use lru::LruCache;

/// Where a flow entered the region, so replies can leave the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Encapsulated over the backbone by this POP (the latest one the flow came through).
    Pop(u16),
    /// Straight from the internet (the direct baseline).
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub listener: usize,
    pub backend: usize,
    pub ingress: Ingress,
    pub flow_hash: u32,
    /// The tuple replies carry (backend → client), indexed for the way back.
    pub reply_key: FlowKey,
    pub last_seen_ns: u64,
    /// TCP FIN seen from the client / from the backend.
    pub fin_client: bool,
    pub fin_backend: bool,
    /// Closed by RST or FINs both ways: no longer active, kept briefly for stragglers.
    pub closing: bool,
    /// The address and port the backend sees instead of the client's (SNAT, NAT64).
    pub snat: Option<(std::net::IpAddr, u16)>,
    /// When the region's other CLB nodes were last told of this flow.
    pub synced_ns: u64,
}

impl Conn {
    pub fn new(
        listener: usize,
        backend: usize,
        ingress: Ingress,
        flow_hash: u32,
        reply_key: FlowKey,
        now_ns: u64,
    ) -> Conn {
        Conn {
            listener,
            backend,
            ingress,
            flow_hash,
            reply_key,
            last_seen_ns: now_ns,
            fin_client: false,
            fin_backend: false,
            closing: false,
            snat: None,
            synced_ns: now_ns,
        }
    }
}

/// A bounded flow table with a reverse index for replies (backend → client).
#[derive(Debug)]
pub struct ConnTable {
    forward: LruCache<FlowKey, Conn>,
    /// Reply key (backend → client) to the forward key (client → VIP).
    reverse: HashMap<FlowKey, FlowKey>,
    capacity: usize,
    peak: usize,
    evictions: u64,
}

impl ConnTable {
    pub fn new(capacity: usize) -> ConnTable {
        ConnTable {
            // unbounded + manual cap: the lru crate would pre-allocate `capacity` slots.
            forward: LruCache::unbounded(),
            reverse: HashMap::new(),
            capacity: capacity.max(1),
            peak: 0,
            evictions: 0,
        }
    }

    /// Whether the table holds this flow (without marking it used).
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.forward.contains(key)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        self.forward.get_mut(key)
    }

    /// The forward key a reply (backend → client) belongs to, and its entry.
    pub fn lookup_reply(&mut self, reply: &FlowKey) -> Option<(FlowKey, &mut Conn)> {
        let key = *self.reverse.get(reply)?;
        self.forward.get_mut(&key).map(|c| (key, c))
    }

    /// Inserts or replaces a flow, evicting the least recently used beyond capacity.
    /// Returns the entries it pushed out (the replaced one and evicted ones).
    pub fn insert(&mut self, key: FlowKey, conn: Conn) -> Vec<Conn> {
        let mut removed = Vec::new();
        if let Some((old_key, old)) = self.forward.push(key, conn) {
            self.reverse.remove(&old.reply_key);
            if old_key != key {
                self.evictions += 1;
            }
            removed.push(old);
        }
        self.reverse.insert(conn.reply_key, key);
        while self.forward.len() > self.capacity {
            match self.forward.pop_lru() {
                Some((_, old)) => {
                    self.evictions += 1;
                    self.reverse.remove(&old.reply_key);
                    removed.push(old);
                }
                None => break,
            }
        }
        self.peak = self.peak.max(self.forward.len());
        // The bounds and the two maps' agreement (checked in debug builds and under the
        // fuzzer): every flow has its reply key, and nothing else does.
        debug_assert!(self.forward.len() <= self.capacity, "the table stays within its capacity");
        debug_assert_eq!(self.reverse.len(), self.forward.len(), "one reply key per flow");
        removed
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        let conn = self.forward.pop(key)?;
        self.reverse.remove(&conn.reply_key);
        Some(conn)
    }

    /// Removes least-recently-used entries idle longer than their timeout, oldest first,
    /// stopping at the first live one (entries are in last-use order).
    pub fn expire(&mut self, now_ns: u64, idle_ns: impl Fn(&Conn) -> u64) -> Vec<Conn> {
        let mut removed = Vec::new();
        while let Some((_, conn)) = self.forward.peek_lru() {
            if conn.last_seen_ns + idle_ns(conn) > now_ns {
                break;
            }
            if let Some((_, conn)) = self.forward.pop_lru() {
                self.reverse.remove(&conn.reply_key);
                removed.push(conn);
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Every entry, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Conn)> {
        self.forward.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.forward.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_proto::Transport;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            transport: Transport::Tcp,
            src: "198.18.1.1".parse().unwrap(),
            src_port: port,
            dst: "198.18.0.10".parse().unwrap(),
            dst_port: 443,
        }
    }

    fn conn(k: FlowKey) -> Conn {
        let reply_key = FlowKey { src: "198.19.1.1".parse().unwrap(), src_port: 8080, ..k.reversed() };
        Conn::new(0, 0, Ingress::Direct, 0, reply_key, 0)
    }

    #[test]
    fn flood_never_grows_past_capacity() {
        let mut table = ConnTable::new(100);
        for port in 0..10_000u16 {
            table.insert(key(port), conn(key(port)));
        }
        assert_eq!(table.len(), 100);
        assert_eq!(table.peak(), 100);
        assert_eq!(table.evictions(), 9_900);
        assert_eq!(table.reverse.len(), 100, "reverse index is bounded too");
        assert!(table.lookup_reply(&conn(key(9_999)).reply_key).is_some());
        assert!(table.lookup_reply(&conn(key(0)).reply_key).is_none());
    }

    #[test]
    fn idle_entries_expire_oldest_first() {
        let mut table = ConnTable::new(100);
        for port in 0..10u16 {
            let mut c = conn(key(port));
            c.last_seen_ns = u64::from(port) * 1_000;
            table.insert(key(port), c);
        }
        let gone = table.expire(5_500, |_| 1_000);
        assert_eq!(gone.len(), 5, "entries last seen at 0..4 µs are idle for 1 µs+");
        assert_eq!(table.len(), 5);
        assert!(table.remove(&key(9)).is_some());
        assert!(table.lookup_reply(&conn(key(9)).reply_key).is_none());
    }
}
