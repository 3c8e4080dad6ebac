//! Typed indices into the world's tables, so a POP's index can never pick a client: each
//! table is a `Table<Id, Row>` that only its own id indexes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// An index into one kind of table.
pub(super) trait Id: Copy {
    fn from_index(index: usize) -> Self;
    fn index(self) -> usize;
}

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(super) struct $name(pub(super) usize);

        impl Id for $name {
            fn from_index(index: usize) -> Self {
                $name(index)
            }
            fn index(self) -> usize {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}

ids! {
    /// A POP (the same index as the topology's `pops`).
    PopId;
    /// A CLB node, counted across regions (regions' nodes in order).
    ClbId;
    /// One client host, counted across groups.
    ClientId;
    /// A backend host (one per backend IP).
    HostId;
    /// A backend port as the report lists it (per region and group).
    BackendId;
}

impl ClbId {
    /// Node `n` of a region whose first node is `self` (a region's nodes are consecutive).
    pub(super) fn node(self, n: u16) -> ClbId {
        ClbId(self.0 + usize::from(n))
    }
}

/// Rows that only their own kind of id indexes.
pub(super) struct Table<I, T> {
    rows: Vec<T>,
    id: PhantomData<fn(I) -> I>,
}

impl<I: Id, T> Table<I, T> {
    pub(super) fn new() -> Self {
        Table { rows: Vec::new(), id: PhantomData }
    }

    /// Adds a row; its id.
    pub(super) fn push(&mut self, row: T) -> I {
        self.rows.push(row);
        I::from_index(self.rows.len() - 1)
    }

    /// The id the next row will get.
    pub(super) fn next_id(&self) -> I {
        I::from_index(self.rows.len())
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = I> + use<I, T> {
        (0..self.rows.len()).map(I::from_index)
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.rows.iter()
    }

    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.rows.iter_mut()
    }

    pub(super) fn enumerate(&self) -> impl Iterator<Item = (I, &T)> {
        self.rows.iter().enumerate().map(|(i, row)| (I::from_index(i), row))
    }
}

impl<I: Id, T> Index<I> for Table<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        &self.rows[id.index()]
    }
}

impl<I: Id, T> IndexMut<I> for Table<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        &mut self.rows[id.index()]
    }
}

/// Client address → client, as runs of consecutive addresses held by consecutive clients
/// (a group's block, the default pool's stretches): a few runs even for tens of thousands
/// of clients, so a lookup is a binary search through memory that stays in cache, where a
/// hash map of every address misses it on most packets of a large world.
#[derive(Default)]
pub(super) struct AddrRuns {
    /// (first address, its client, how many) sorted by first address, non-overlapping.
    runs: Vec<(AddrKey, ClientId, u128)>,
}

/// An address as one ordered integer per family (IPv4 before IPv6).
type AddrKey = (bool, u128);

fn addr_key(addr: std::net::IpAddr) -> AddrKey {
    match addr {
        std::net::IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        std::net::IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl AddrRuns {
    /// Indexes `(address, client)` pairs; a later pair for an address already indexed
    /// replaces the earlier (as a map insert would).
    pub(super) fn new(pairs: impl IntoIterator<Item = (std::net::IpAddr, ClientId)>) -> AddrRuns {
        let mut sorted: std::collections::BTreeMap<AddrKey, ClientId> = Default::default();
        for (addr, c) in pairs {
            sorted.insert(addr_key(addr), c);
        }
        let mut runs: Vec<(AddrKey, ClientId, u128)> = Vec::new();
        for (key, c) in sorted {
            if let Some((start, first, len)) = runs.last_mut()
                && start.0 == key.0
                && start.1.checked_add(*len) == Some(key.1)
                && first.0.checked_add(*len as usize) == Some(c.0)
            {
                *len += 1;
                continue;
            }
            runs.push((key, c, 1));
        }
        AddrRuns { runs }
    }

    pub(super) fn get(&self, addr: std::net::IpAddr) -> Option<ClientId> {
        let key = addr_key(addr);
        let i = self.runs.partition_point(|(start, _, _)| *start <= key).checked_sub(1)?;
        let (start, first, len) = self.runs[i];
        // The run starts at or before the address: in its family, the offset is ≥ 0.
        let offset = key.1.checked_sub(start.1).filter(|_| start.0 == key.0)?;
        (offset < len).then(|| ClientId(first.0 + offset as usize))
    }

    /// The same index from clients' address runs: their runs sorted by address, without a
    /// map of every address (a world of millions of clients built one for each rank);
    /// pair by pair as [`AddrRuns::new`] when runs overlap (a file validation let through).
    pub(super) fn of_clients(addrs: &ClientAddrs) -> AddrRuns {
        let mut runs: Vec<(AddrKey, ClientId, u128)> =
            addrs.runs.iter().map(|&(first, key, len)| (key, ClientId(first), len)).collect();
        runs.sort_unstable_by_key(|&(key, c, _)| (key, c.0));
        let overlap = runs.windows(2).any(|w| w[0].0.0 == w[1].0.0 && w[0].0.1.saturating_add(w[0].2) > w[1].0.1);
        if overlap {
            return AddrRuns::new(addrs.pairs());
        }
        // Runs that touch in both address and client were one run already.
        AddrRuns { runs }
    }

    /// How many runs the addresses make (a handful per group).
    #[cfg(test)]
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }
}

/// Client → address, as runs of consecutive clients at consecutive addresses: every
/// client's address, also of clients whose rows another world holds (a backend's report
/// lists the addresses it saw, whoever ran them).
#[derive(Default)]
pub(super) struct ClientAddrs {
    /// (first client, its address, how many), by first client.
    runs: Vec<(usize, AddrKey, u128)>,
}

impl ClientAddrs {
    /// Client `c`, the next after the last pushed, is at `addr`.
    pub(super) fn push(&mut self, c: ClientId, addr: std::net::IpAddr) {
        let key = addr_key(addr);
        if let Some((first, start, len)) = self.runs.last_mut()
            && *first + *len as usize == c.0
            && start.0 == key.0
            && start.1.checked_add(*len) == Some(key.1)
        {
            *len += 1;
            return;
        }
        debug_assert!(self.runs.last().is_none_or(|r| r.0 + r.2 as usize <= c.0), "clients in order");
        self.runs.push((c.0, key, 1));
    }

    pub(super) fn get(&self, c: ClientId) -> Option<std::net::IpAddr> {
        let i = self.runs.partition_point(|&(first, _, _)| first <= c.0).checked_sub(1)?;
        let (first, key, len) = self.runs[i];
        let offset = (c.0 - first) as u128;
        (offset < len).then(|| addr_of_key((key.0, key.1 + offset)))
    }

    /// Every (address, client), in client order.
    fn pairs(&self) -> impl Iterator<Item = (std::net::IpAddr, ClientId)> + '_ {
        self.runs.iter().flat_map(|&(first, key, len)| {
            (0..len).map(move |i| (addr_of_key((key.0, key.1 + i)), ClientId(first + i as usize)))
        })
    }

    /// How many runs (a handful per group).
    #[cfg(test)]
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }
}

fn addr_of_key((v6, n): AddrKey) -> std::net::IpAddr {
    if v6 {
        std::net::IpAddr::from(std::net::Ipv6Addr::from(n))
    } else {
        std::net::IpAddr::from(std::net::Ipv4Addr::from(n as u32))
    }
}

/// Who runs a prober.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProberAt {
    /// A POP, probing every CLB node (peer i is `ClbId(i)`).
    Pop(PopId),
    /// A CLB node, probing every POP (peer i is `PopId(i)`).
    Clb(ClbId),
    /// A POP's transit router, probing its POP (BFD): it withdraws the POP when dead.
    Transit(PopId),
    /// A region's edge, probing the region's CLB nodes (peer i is node i).
    Region(usize),
}

/// A node that answers probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probed {
    Pop(PopId),
    Clb(ClbId),
}

/// What a node noticed, for the fault report's `detected_ms` and `noticed_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notice {
    Pop { pop: PopId, up: bool },
    Clb { clb: ClbId, up: bool },
    Backend { addr: std::net::SocketAddr, healthy: bool },
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{AddrRuns, ClientAddrs, ClientId};

    #[test]
    fn client_addresses_are_found_as_a_map_would_find_them() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut pairs: Vec<(IpAddr, ClientId)> = Vec::new();
        // A pool stretch, a group's block elsewhere, and the pool again after a gap.
        for i in 0..300u32 {
            pairs.push((IpAddr::V4((0xC612_4001 + i).into()), ClientId(i as usize)));
        }
        for i in 0..50u32 {
            pairs.push((IpAddr::V4((0x0A00_0001 + i).into()), ClientId(300 + i as usize)));
        }
        for i in 0..10u32 {
            pairs.push((IpAddr::V4((0xC612_4200 + i).into()), ClientId(350 + i as usize)));
        }
        pairs.push((v4("fd00:b::1"), ClientId(360)));
        pairs.push((v4("fd00:b::2"), ClientId(361)));
        let runs = AddrRuns::new(pairs.clone());
        assert_eq!(runs.runs(), 4, "one run per stretch, IPv6 its own");
        let map: std::collections::HashMap<IpAddr, ClientId> = pairs.into_iter().collect();
        for (addr, c) in &map {
            assert_eq!(runs.get(*addr), Some(*c), "{addr}");
        }
        for absent in
            ["198.18.64.0", "198.18.65.45", "10.0.0.0", "10.0.0.51", "0.0.0.0", "fd00:b::3", "::", "255.255.255.255"]
        {
            assert_eq!(runs.get(v4(absent)), map.get(&v4(absent)).copied(), "{absent}");
            assert_eq!(runs.get(v4(absent)), None, "{absent}");
        }
    }

    #[test]
    fn every_clients_address_is_found_from_runs_and_runs_sorted_by_address_find_every_client() {
        let mut addrs = ClientAddrs::default();
        let mut pairs: Vec<(IpAddr, ClientId)> = Vec::new();
        // A pool stretch, a group's block below it, the pool again, IPv6 last.
        let v4 = |n: u32| IpAddr::V4(n.into());
        let blocks: [(u32, usize); 3] = [(0xC612_4001, 300), (0x0A00_0001, 50), (0xC612_412D, 10)];
        for (start, n) in blocks {
            for i in 0..n {
                pairs.push((v4(start + i as u32), ClientId(pairs.len())));
            }
        }
        pairs.push(("fd00:b::1".parse().unwrap(), ClientId(360)));
        for &(addr, c) in &pairs {
            addrs.push(c, addr);
        }
        assert_eq!(addrs.runs(), 4, "runs by client: the pool stretch, the block, the pool again, IPv6");
        let by_addr = AddrRuns::of_clients(&addrs);
        assert_eq!(by_addr.runs(), 4);
        for &(addr, c) in &pairs {
            assert_eq!(addrs.get(c), Some(addr), "client {}", c.0);
            assert_eq!(by_addr.get(addr), Some(c), "{addr}");
        }
        assert_eq!(addrs.get(ClientId(361)), None);
    }

    #[test]
    fn overlapping_runs_index_as_a_map_would_the_later_client_wins() {
        let mut addrs = ClientAddrs::default();
        let a = |n: u32| IpAddr::V4(n.into());
        for i in 0..4 {
            addrs.push(ClientId(i), a(100 + i as u32));
        }
        for i in 4..6 {
            addrs.push(ClientId(i), a(98 + i as u32));
        }
        let by_addr = AddrRuns::of_clients(&addrs);
        assert_eq!(by_addr.get(a(101)), Some(ClientId(1)));
        assert_eq!(by_addr.get(a(102)), Some(ClientId(4)));
        assert_eq!(by_addr.get(a(103)), Some(ClientId(5)));
    }
}
