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
