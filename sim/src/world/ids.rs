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

    /// A table with room for `rows` rows (a million clients' table grown by doubling
    /// held up to twice their bytes).
    pub(super) fn with_capacity(rows: usize) -> Self {
        Table { rows: Vec::with_capacity(rows), id: PhantomData }
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

    /// How many runs the addresses make (a handful per group).
    #[cfg(test)]
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
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

    use super::{AddrRuns, ClientId};

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
}
