//! The client rows a world holds, by client id: every client's when the world runs them
//! all, only its own groups' when it runs a share of the partitions (`--threads`, `sim
//! --mpi`), so a world's memory grows with the clients it runs, not with the file's. A
//! world that holds a share pays 4 bytes an id for the map from ids to rows.

use crate::world::client::Client;
use crate::world::ids::ClientId;
use std::ops::Index;
use std::ops::IndexMut;
use std::ops::Range;

/// The row of a client this world does not hold.
const NOT_HELD: u32 = u32::MAX;
const _: () = assert!(anyedge_topology::CLIENTS_MAX < NOT_HELD as u64, "every client id's row fits a u32");

pub(in crate::world) struct ClientRows {
    rows: Vec<Client>,
    /// Client id → its row, when the world does not hold every client (`None`: the row
    /// is the id).
    row_of: Option<Vec<u32>>,
    /// How many clients the file has (ids `0..total`).
    total: usize,
}

impl ClientRows {
    /// Rows for a file of `total` clients, `held` of which this world holds.
    pub(in crate::world) fn with_capacity(total: usize, held: usize) -> ClientRows {
        let row_of = (held < total).then(|| vec![NOT_HELD; total]);
        ClientRows { rows: Vec::with_capacity(held), row_of, total }
    }

    /// Holds client `c`'s row (a whole world's come in id order).
    pub(in crate::world) fn insert(&mut self, c: ClientId, row: Client) {
        assert!(c.0 < self.total, "client {} of {}", c.0, self.total);
        if self.row_of.is_none() && c.0 != self.rows.len() {
            let held = self.rows.len();
            self.row_of = Some((0..self.total).map(|i| if i < held { i as u32 } else { NOT_HELD }).collect());
        }
        if let Some(row_of) = &mut self.row_of {
            assert_eq!(row_of[c.0], NOT_HELD, "client {} held twice", c.0);
            row_of[c.0] = self.rows.len() as u32;
        }
        self.rows.push(row);
    }

    /// How many clients the file has.
    pub(in crate::world) fn total(&self) -> usize {
        self.total
    }

    /// How many rows this world holds.
    #[cfg(test)]
    pub(in crate::world) fn held(&self) -> usize {
        self.rows.len()
    }

    fn row(&self, c: ClientId) -> Option<usize> {
        match &self.row_of {
            None => (c.0 < self.rows.len()).then_some(c.0),
            Some(row_of) => row_of.get(c.0).copied().filter(|&r| r != NOT_HELD).map(|r| r as usize),
        }
    }

    /// The held clients among `ids`, in id order.
    pub(in crate::world) fn range(&self, ids: Range<usize>) -> impl Iterator<Item = (ClientId, &Client)> {
        ids.filter_map(|c| self.row(ClientId(c)).map(|r| (ClientId(c), &self.rows[r])))
    }

    /// Every held client, in id order.
    pub(in crate::world) fn enumerate(&self) -> impl Iterator<Item = (ClientId, &Client)> {
        self.range(0..self.total)
    }

    /// Every held row (in no particular order).
    #[cfg(test)]
    pub(in crate::world) fn iter(&self) -> std::slice::Iter<'_, Client> {
        self.rows.iter()
    }

    pub(in crate::world) fn iter_mut(&mut self) -> std::slice::IterMut<'_, Client> {
        self.rows.iter_mut()
    }

    /// Takes the rows of clients `ids` that `other` holds (another share's world, which
    /// ran them); `other` keeps an empty row in their place.
    pub(in crate::world) fn take(&mut self, ids: Range<usize>, other: &mut ClientRows) {
        for c in ids.map(ClientId) {
            let Some(from) = other.row(c) else { continue };
            let theirs = &mut other.rows[from];
            match self.row(c) {
                Some(to) => std::mem::swap(&mut self.rows[to], theirs),
                None => {
                    let row = std::mem::replace(theirs, Client::empty(theirs.group, theirs.addr));
                    self.insert(c, row);
                }
            }
        }
    }
}

impl Index<ClientId> for ClientRows {
    type Output = Client;
    fn index(&self, c: ClientId) -> &Client {
        match self.row(c) {
            Some(r) => &self.rows[r],
            None => panic!("client {} is not held by this world", c.0),
        }
    }
}

impl IndexMut<ClientId> for ClientRows {
    fn index_mut(&mut self, c: ClientId) -> &mut Client {
        match self.row(c) {
            Some(r) => &mut self.rows[r],
            None => panic!("client {} is not held by this world", c.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(g: usize) -> Client {
        Client::empty(g, std::net::IpAddr::from([198, 18, 64, g as u8]))
    }

    #[test]
    fn a_world_holding_a_share_has_rows_for_its_clients_only_and_finds_them_by_id() {
        let mut rows = ClientRows::with_capacity(10, 3);
        for c in [2, 3, 7] {
            rows.insert(ClientId(c), client(c));
        }
        assert_eq!(rows.held(), 3);
        assert_eq!(rows[ClientId(7)].group, 7);
        let ids: Vec<usize> = rows.enumerate().map(|(c, _)| c.0).collect();
        assert_eq!(ids, [2, 3, 7]);
        assert_eq!(rows.range(3..8).count(), 2);
    }

    #[test]
    fn rows_taken_from_another_share_join_in_id_order() {
        let mut mine = ClientRows::with_capacity(6, 2);
        let mut theirs = ClientRows::with_capacity(6, 4);
        for c in [0, 1] {
            mine.insert(ClientId(c), client(c));
        }
        for c in [2, 3, 4, 5] {
            theirs.insert(ClientId(c), client(c));
        }
        mine.take(4..6, &mut theirs);
        mine.take(2..4, &mut theirs);
        let ids: Vec<(usize, usize)> = mine.enumerate().map(|(c, row)| (c.0, row.group)).collect();
        assert_eq!(ids, [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
    }

    #[test]
    fn a_whole_worlds_rows_need_no_map_until_one_comes_out_of_order() {
        let mut rows = ClientRows::with_capacity(4, 4);
        rows.insert(ClientId(0), client(0));
        rows.insert(ClientId(1), client(1));
        assert!(rows.row_of.is_none());
        rows.insert(ClientId(3), client(3));
        assert_eq!(rows[ClientId(3)].group, 3);
        assert_eq!(rows[ClientId(1)].group, 1);
        assert!(rows.range(2..3).next().is_none());
    }

    #[test]
    #[should_panic(expected = "not held")]
    fn asking_for_a_client_another_share_runs_is_an_invariant_broken_not_a_wrong_row() {
        let mut rows = ClientRows::with_capacity(4, 1);
        rows.insert(ClientId(2), client(2));
        let _ = &rows[ClientId(1)];
    }
}
