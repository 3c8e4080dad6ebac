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
    /// The backend has answered (a reply passed through this node).
    pub answered: bool,
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
            answered: false,
        }
    }
}

/// A bounded flow table with a reverse index for replies (backend → client).
///
/// Flows live in one of two LRUs: `open` (TCP flows not yet established — no client
/// packet past the handshake after the backend answered — and every UDP flow) and
/// `established` (TCP flows that are). A new flow beyond capacity pushes out the least
/// recently used open flow, never an established one; with no open flow left it is
/// refused ([`TableFull`]). So spoofed SYNs, which never complete a handshake, can only
/// push out each other, and established flows keep going under a flood.
#[derive(Debug)]
pub struct ConnTable {
    open: LruCache<FlowKey, Conn>,
    established: LruCache<FlowKey, Conn>,
    /// Reply key (backend → client) to the forward key (client → VIP).
    reverse: HashMap<FlowKey, FlowKey, foldhash::fast::RandomState>,
    capacity: usize,
    peak: usize,
    evictions: u64,
    refused: u64,
}

/// The table is full of established flows: a new one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl ConnTable {
    pub fn new(capacity: usize) -> ConnTable {
        ConnTable {
            // unbounded + manual cap: the lru crate would pre-allocate `capacity` slots.
            open: LruCache::unbounded(),
            established: LruCache::unbounded(),
            reverse: HashMap::default(),
            capacity: capacity.max(1),
            peak: 0,
            evictions: 0,
            refused: 0,
        }
    }

    /// Whether the table holds this flow (without marking it used).
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.open.contains(key) || self.established.contains(key)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        // One lookup in each LRU at most (a flow is in one of them).
        match self.open.get_mut(key) {
            Some(conn) => Some(conn),
            None => self.established.get_mut(key),
        }
    }

    /// Whether the flow is established (never pushed out for a new one).
    pub fn is_established(&self, key: &FlowKey) -> bool {
        self.established.contains(key)
    }

    /// Marks an open flow established: from now on only its own timeout or end removes it.
    pub fn establish(&mut self, key: &FlowKey) {
        if let Some(conn) = self.open.pop(key) {
            self.established.push(*key, conn);
        }
    }

    /// The least recently used open flow that `pred` accepts, among the `scan` least
    /// recently used open flows (never an established one).
    pub fn oldest_open(&self, scan: usize, pred: impl Fn(&Conn) -> bool) -> Option<FlowKey> {
        self.open.iter().rev().take(scan).find(|(_, c)| pred(c)).map(|(k, _)| *k)
    }

    /// The flow whose replies look like `reply` (backend → client), if there is one.
    pub fn reply_owner(&self, reply: &FlowKey) -> Option<FlowKey> {
        self.reverse.get(reply).copied()
    }

    /// The forward key a reply (backend → client) belongs to, and its entry.
    pub fn lookup_reply(&mut self, reply: &FlowKey) -> Option<(FlowKey, &mut Conn)> {
        let key = *self.reverse.get(reply)?;
        self.get_mut(&key).map(|c| (key, c))
    }

    /// Inserts or replaces a flow (as open). Beyond capacity the least recently used open
    /// flow goes; with none, the new flow is refused and nothing changes. Returns the
    /// entries it pushed out (the replaced one and the evicted one).
    pub fn insert(&mut self, key: FlowKey, conn: Conn) -> Result<Vec<Conn>, TableFull> {
        let mut removed = Vec::new();
        if let Some(old) = self.remove(&key) {
            removed.push(old);
        } else if self.len() >= self.capacity {
            match self.open.pop_lru() {
                Some((_, old)) => {
                    self.evictions += 1;
                    self.reverse.remove(&old.reply_key);
                    removed.push(old);
                }
                None => {
                    self.refused += 1;
                    return Err(TableFull);
                }
            }
        }
        self.open.push(key, conn);
        self.reverse.insert(conn.reply_key, key);
        self.peak = self.peak.max(self.len());
        // The bounds and the maps' agreement (checked in debug builds and under the
        // fuzzer): every flow has its reply key, and nothing else does.
        debug_assert!(self.len() <= self.capacity, "the table stays within its capacity");
        debug_assert_eq!(self.reverse.len(), self.len(), "one reply key per flow");
        Ok(removed)
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        let conn = self.open.pop(key).or_else(|| self.established.pop(key))?;
        self.reverse.remove(&conn.reply_key);
        Some(conn)
    }

    /// Removes least-recently-used entries idle longer than their timeout, oldest first,
    /// stopping at the first live one of each LRU (entries are in last-use order).
    pub fn expire(&mut self, now_ns: u64, idle_ns: impl Fn(&Conn, bool) -> u64) -> Vec<Conn> {
        let mut removed = Vec::new();
        for (table, established) in [(&mut self.open, false), (&mut self.established, true)] {
            while let Some((_, conn)) = table.peek_lru() {
                if conn.last_seen_ns + idle_ns(conn, established) > now_ns {
                    break;
                }
                if let Some((_, conn)) = table.pop_lru() {
                    self.reverse.remove(&conn.reply_key);
                    removed.push(conn);
                }
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.open.len() + self.established.len()
    }

    /// Established flows, then open ones, each most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Conn)> {
        self.established.iter().chain(self.open.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// New flows refused because every entry was an established flow.
    pub fn refused(&self) -> u64 {
        self.refused
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
            table.insert(key(port), conn(key(port))).unwrap();
        }
        assert_eq!(table.len(), 100);
        assert_eq!(table.peak(), 100);
        assert_eq!(table.evictions(), 9_900);
        assert_eq!(table.reverse.len(), 100, "reverse index is bounded too");
        assert!(table.lookup_reply(&conn(key(9_999)).reply_key).is_some());
        assert!(table.lookup_reply(&conn(key(0)).reply_key).is_none());
    }

    #[test]
    fn a_syn_flood_pushes_out_only_open_flows_and_is_refused_when_none_are_left() {
        let mut table = ConnTable::new(100);
        // Eight established flows (the victims), then a flood of half-open ones.
        for port in 0..8u16 {
            table.insert(key(port), conn(key(port))).unwrap();
            table.establish(&key(port));
        }
        for port in 1_000..46_000u16 {
            table.insert(key(port), conn(key(port))).unwrap();
        }
        assert_eq!(table.len(), 100);
        for port in 0..8u16 {
            assert!(table.is_established(&key(port)), "established flow {port} survives the flood");
            assert!(table.lookup_reply(&conn(key(port)).reply_key).is_some());
        }
        assert_eq!(table.evictions(), 45_000 - 92);
        // A table of established flows only: a new flow is refused and nothing moves.
        let mut full = ConnTable::new(4);
        for port in 0..4u16 {
            full.insert(key(port), conn(key(port))).unwrap();
            full.establish(&key(port));
        }
        assert_eq!(full.insert(key(9), conn(key(9))), Err(TableFull));
        assert_eq!((full.len(), full.refused(), full.evictions()), (4, 1, 0));
        assert!(!full.contains(&key(9)) && full.lookup_reply(&conn(key(9)).reply_key).is_none());
        // Replacing a flow it holds is not a new flow.
        assert!(full.insert(key(2), conn(key(2))).is_ok_and(|old| old.len() == 1));
    }

    #[test]
    fn half_open_and_established_flows_expire_by_their_own_timeouts() {
        let mut table = ConnTable::new(100);
        for port in 0..4u16 {
            table.insert(key(port), conn(key(port))).unwrap();
        }
        table.establish(&key(0));
        // Half-open: 10 µs; established: 1,000 µs.
        let gone = table.expire(20_000, |_, established| if established { 1_000_000 } else { 10_000 });
        assert_eq!(gone.len(), 3);
        assert!(table.is_established(&key(0)) && table.len() == 1);
    }

    #[test]
    fn idle_entries_expire_oldest_first() {
        let mut table = ConnTable::new(100);
        for port in 0..10u16 {
            let mut c = conn(key(port));
            c.last_seen_ns = u64::from(port) * 1_000;
            table.insert(key(port), c).unwrap();
        }
        let gone = table.expire(5_500, |_, _| 1_000);
        assert_eq!(gone.len(), 5, "entries last seen at 0..4 µs are idle for 1 µs+");
        assert_eq!(table.len(), 5);
        assert!(table.remove(&key(9)).is_some());
        assert!(table.lookup_reply(&conn(key(9)).reply_key).is_none());
    }
}
