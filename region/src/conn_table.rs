//! The connection table: flow → chosen backend and the POP replies go through. An LRU
//! with a fixed capacity, so a flood of new flows costs memory up to the bound, never
//! more: the least recently used entry is evicted instead.

use std::collections::HashMap;
use std::net::IpAddr;

use anyedge_ccn::Lru;
use anyedge_proto::FlowKey;

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
    open: Lru<FlowKey, Conn>,
    established: Lru<FlowKey, Conn>,
    /// Reply key (backend → client) to the forward key (client → VIP).
    reverse: HashMap<FlowKey, FlowKey, foldhash::fast::RandomState>,
    capacity: usize,
    peak: usize,
    evictions: u64,
    refused: u64,
    /// Half-open TCP flows (TCP flows in `open`) per client source
    /// ([`crate::cidr::source_prefix`] under `source_prefix_v4`).
    half_open: HashMap<IpAddr, usize, foldhash::fast::RandomState>,
    source_prefix_v4: u8,
}

/// Half-open TCP flows one client source (an IPv6 /64, an IPv4 prefix) may hold in a
/// node's table; past it the node refuses that source's new SYNs (`source_cap`). Since
/// client links validate sources, a SYN flood spoofs at most its own /64 or its own
/// block, and without this bound it took the whole open half of the table from everyone
/// else's handshakes.
pub const HALF_OPEN_PER_SOURCE_MAX: usize = 1024;

/// The table is full of established flows: a new one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl ConnTable {
    pub fn new(capacity: usize) -> ConnTable {
        ConnTable {
            // Unbounded + manual cap: allocated as flows arrive.
            open: Lru::new(),
            established: Lru::new(),
            reverse: HashMap::default(),
            capacity: capacity.max(1),
            peak: 0,
            evictions: 0,
            refused: 0,
            half_open: HashMap::default(),
            source_prefix_v4: crate::cidr::SOURCE_PREFIX_V4,
        }
    }

    /// The table counting IPv4 sources by their first `bits` bits.
    pub fn with_source_prefix_v4(mut self, bits: u8) -> ConnTable {
        debug_assert!(self.is_empty(), "sources are counted one way for a table's whole life");
        self.source_prefix_v4 = bits;
        self
    }

    /// Half-open TCP flows from `src`'s source ([`HALF_OPEN_PER_SOURCE_MAX`]).
    pub fn half_open_from(&self, src: IpAddr) -> usize {
        let source = crate::cidr::source_prefix(src, self.source_prefix_v4);
        self.half_open.get(&source).copied().unwrap_or(0)
    }

    /// A TCP flow entered (`+1`) or left `open`: its source's count follows.
    fn count_half_open(&mut self, key: &FlowKey, entered: bool) {
        if key.transport != anyedge_proto::Transport::Tcp {
            return;
        }
        let source = crate::cidr::source_prefix(key.src, self.source_prefix_v4);
        if entered {
            *self.half_open.entry(source).or_default() += 1;
            debug_assert!(self.half_open.values().sum::<usize>() <= self.open.len(), "counted once it is open");
            return;
        }
        let held = self.half_open.get_mut(&source);
        debug_assert!(held.as_ref().is_some_and(|n| **n > 0), "a half-open flow left that its source never held");
        if let Some(n) = held {
            *n -= 1;
            if *n == 0 {
                self.half_open.remove(&source);
            }
        }
    }

    /// Whether the table holds this flow (without marking it used).
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.open.contains(key) || self.established.contains(key)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        // One lookup in each LRU at most (a flow is in one of them), first in the one that
        // most likely holds it: a UDP flow is always open, a TCP flow soon established.
        let (first, second) = match key.transport {
            anyedge_proto::Transport::Tcp => (&mut self.established, &mut self.open),
            _ => (&mut self.open, &mut self.established),
        };
        match first.get_mut(key) {
            Some(conn) => Some(conn),
            None => second.get_mut(key),
        }
    }

    /// Whether the flow is established (never pushed out for a new one).
    pub fn is_established(&self, key: &FlowKey) -> bool {
        self.established.contains(key)
    }

    /// Marks an open flow established: from now on only its own timeout or end removes it.
    pub fn establish(&mut self, key: &FlowKey) {
        if let Some(conn) = self.open.pop(key) {
            self.count_half_open(key, false);
            let pushed_out = self.established.put(*key, conn);
            debug_assert!(pushed_out.is_none(), "a flow is in one table, never both");
        }
        debug_assert!(!self.open.contains(key));
    }

    /// The least recently used open flow that `pred` accepts, among the `scan` least
    /// recently used open flows (never an established one).
    pub fn oldest_open(&mut self, scan: usize, pred: impl Fn(&Conn) -> bool) -> Option<FlowKey> {
        self.open.iter_oldest().take(scan).find(|(_, c)| pred(c)).map(|(k, _)| *k)
    }

    /// The flow whose replies look like `reply` (backend → client), if there is one.
    pub fn reply_owner(&self, reply: &FlowKey) -> Option<FlowKey> {
        self.reverse.get(reply).copied()
    }

    /// The forward key a reply (backend → client) belongs to, and its entry.
    pub fn lookup_reply(&mut self, reply: &FlowKey) -> Option<(FlowKey, &mut Conn)> {
        let key = *self.reverse.get(reply)?;
        let found = self.get_mut(&key).map(|c| (key, c));
        debug_assert!(found.as_ref().is_some_and(|(_, c)| c.reply_key == *reply), "a reply key names its own flow");
        found
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
                Some((old_key, old)) => {
                    self.count_half_open(&old_key, false);
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
        self.open.put(key, conn);
        self.count_half_open(&key, true);
        self.reverse.insert(conn.reply_key, key);
        self.peak = self.peak.max(self.len());
        // The bounds and the maps' agreement (checked in debug builds and under the
        // fuzzer): every flow has its reply key, and nothing else does.
        debug_assert!(self.len() <= self.capacity, "the table stays within its capacity");
        debug_assert_eq!(self.reverse.len(), self.len(), "one reply key per flow");
        debug_assert!(self.half_open.values().sum::<usize>() <= self.open.len(), "half-open counts only open flows");
        Ok(removed)
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        let conn = match self.open.pop(key) {
            Some(conn) => {
                self.count_half_open(key, false);
                conn
            }
            None => self.established.pop(key)?,
        };
        let owner = self.reverse.remove(&conn.reply_key);
        debug_assert_eq!(owner, Some(*key), "a flow's reply key goes with it");
        debug_assert_eq!(self.reverse.len(), self.len());
        Some(conn)
    }

    /// Removes least-recently-used entries idle longer than their timeout, oldest first,
    /// stopping at the first live one of each LRU (entries are in last-use order).
    pub fn expire(&mut self, now_ns: u64, idle_ns: impl Fn(&Conn, bool) -> u64) -> Vec<Conn> {
        let (mut removed, mut left_open) = (Vec::new(), Vec::new());
        for (table, established) in [(&mut self.open, false), (&mut self.established, true)] {
            while let Some((_, conn)) = table.peek_lru() {
                if conn.last_seen_ns + idle_ns(conn, established) > now_ns {
                    break;
                }
                if let Some((key, conn)) = table.pop_lru() {
                    self.reverse.remove(&conn.reply_key);
                    if !established {
                        left_open.push(key);
                    }
                    removed.push(conn);
                }
            }
        }
        for key in left_open {
            self.count_half_open(&key, false);
        }
        debug_assert_eq!(self.reverse.len(), self.len(), "expired flows take their reply keys");
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
    fn a_sources_half_open_count_follows_every_way_a_flow_leaves_open() {
        let src = "198.18.1.1".parse().unwrap();
        let mut table = ConnTable::new(10);
        for port in 0..10u16 {
            table.insert(key(port), conn(key(port))).unwrap();
        }
        assert_eq!(table.half_open_from(src), 10);
        table.establish(&key(0));
        table.remove(&key(1));
        assert_eq!(table.half_open_from(src), 8, "established and removed flows no longer count");
        table.insert(key(100), conn(key(100))).unwrap();
        table.insert(key(101), conn(key(101))).unwrap();
        assert_eq!((table.half_open_from(src), table.evictions()), (9, 1), "one pushed out, one in");
        let udp = FlowKey { transport: Transport::Udp, ..key(200) };
        table.insert(udp, conn(udp)).unwrap();
        assert_eq!(table.half_open_from(src), 8, "a UDP flow is no half-open TCP one (it pushed one out)");
        table.expire(u64::MAX / 2, |_, _| 1);
        assert_eq!((table.half_open_from(src), table.len()), (0, 0));
        // A /24 counts as one source when the node is told so.
        let mut by_24 = ConnTable::new(10).with_source_prefix_v4(24);
        let other = FlowKey { src: "198.18.1.77".parse().unwrap(), ..key(7) };
        by_24.insert(key(1), conn(key(1))).unwrap();
        by_24.insert(other, conn(other)).unwrap();
        assert_eq!(by_24.half_open_from(src), 2);
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
