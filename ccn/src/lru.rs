//! The least-recently-used order of the nodes' flow tables (a POP's flows, a CLB node's
//! connections and what its peers told it, persistence, tracked replies): a hash table
//! whose entries carry the time they were last used, instead of a linked list.
//!
//! A linked LRU (the `lru` crate) keeps each entry in its own allocation and moves it to
//! the front of a list on every use, which touches the entry, its two neighbours and the
//! list's head: four places in memory for one lookup, on a path every packet takes. Here
//! a use writes a counter (a *stamp*) in the entry, which lies in the table itself. The
//! order is needed only by what asks for the oldest entry (an eviction, an idle sweep),
//! so it is built when asked: a list of (stamp, hash) records sorted by stamp. A record
//! is current while its entry still carries that stamp (stamps are never reused, so a
//! record names at most one entry); one whose entry was used again or removed is skipped.
//! Every entry not recorded was used after the list was built, so the first current
//! record is the oldest entry of all. The list is built again when none is current or
//! more than half are stale: an entry is recorded at most once per build, and a build
//! follows as many uses as there are entries, so each use costs its share of one sort.
//!
//! Iteration hands entries out by stamp (most recent first), so nothing the hash order
//! decides reaches an output.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

struct Entry<K, V> {
    key: K,
    value: V,
    stamp: u64,
}

/// A table ordered by last use, without a bound of its own (its owner evicts with
/// [`Lru::pop_lru`]); it allocates as it fills.
pub struct Lru<K, V> {
    table: HashTable<Entry<K, V>>,
    hasher: foldhash::fast::RandomState,
    /// The last stamp handed out.
    clock: u64,
    /// (stamp, hash) of every entry last used at or before `built_at`, oldest first, and
    /// stale records.
    order: VecDeque<(u64, u64)>,
    built_at: u64,
    /// Entries whose stamp is at most `built_at` (each has exactly one current record).
    recorded: usize,
}

impl<K: Hash + Eq, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru::new()
    }
}

impl<K: Hash + Eq, V> Lru<K, V> {
    pub fn new() -> Lru<K, V> {
        Lru {
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            clock: 0,
            order: VecDeque::new(),
            built_at: 0,
            recorded: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// A stamp later than every one handed out, for `entry`, whose record (if it had one)
    /// is stale from now on.
    fn restamp(clock: &mut u64, built_at: u64, recorded: &mut usize, stamp: &mut u64) {
        if *stamp <= built_at {
            *recorded -= 1;
        }
        *clock += 1;
        *stamp = *clock;
    }

    pub fn contains(&self, key: &K) -> bool {
        self.peek(key).is_some()
    }

    /// The value, without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.table.find(self.hash(key), |e| e.key == *key).map(|e| &e.value)
    }

    /// The value, marked used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.get_mut(key).map(|v| &*v)
    }

    /// The value, marked used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hash = self.hash(key);
        let entry = self.table.find_mut(hash, |e| e.key == *key)?;
        Self::restamp(&mut self.clock, self.built_at, &mut self.recorded, &mut entry.stamp);
        Some(&mut entry.value)
    }

    /// Inserts `key`, or replaces its value (returned); either way it is the most recently
    /// used.
    pub fn put(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        if let Some(entry) = self.table.find_mut(hash, |e| e.key == key) {
            Self::restamp(&mut self.clock, self.built_at, &mut self.recorded, &mut entry.stamp);
            return Some(std::mem::replace(&mut entry.value, value));
        }
        self.clock += 1;
        let stamp = self.clock;
        self.table.insert_unique(hash, Entry { key, value, stamp }, |e| hasher.hash_one(&e.key));
        None
    }

    /// Removes `key`, returning its value.
    pub fn pop(&mut self, key: &K) -> Option<V> {
        let hash = self.hash(key);
        let (entry, _) = self.table.find_entry(hash, |e| e.key == *key).ok()?.remove();
        if entry.stamp <= self.built_at {
            self.recorded -= 1;
        }
        Some(entry.value)
    }

    /// Drops stale records from the front, and builds the order again when no record is
    /// current or most are stale; afterwards the front record, if any, is the oldest
    /// entry's.
    fn prune(&mut self) {
        let stale = self.order.len() - self.recorded;
        if (self.recorded == 0 && !self.table.is_empty()) || stale > self.recorded + 64 {
            self.rebuild();
        }
        while let Some(&(stamp, hash)) = self.order.front() {
            if self.table.find(hash, |e| e.stamp == stamp).is_some() {
                break;
            }
            self.order.pop_front();
        }
        debug_assert_eq!(self.order.is_empty(), self.table.is_empty(), "every entry is recorded or newer");
    }

    fn rebuild(&mut self) {
        let mut records: Vec<(u64, u64)> = self.table.iter().map(|e| (e.stamp, self.hasher.hash_one(&e.key))).collect();
        records.sort_unstable();
        self.order = records.into();
        self.built_at = self.clock;
        self.recorded = self.table.len();
    }

    /// The least recently used entry.
    pub fn peek_lru(&mut self) -> Option<(&K, &V)> {
        self.prune();
        let &(stamp, hash) = self.order.front()?;
        self.table.find(hash, |e| e.stamp == stamp).map(|e| (&e.key, &e.value))
    }

    /// Removes the least recently used entry.
    pub fn pop_lru(&mut self) -> Option<(K, V)> {
        self.prune();
        let (stamp, hash) = self.order.pop_front()?;
        let (entry, _) = self.table.find_entry(hash, |e| e.stamp == stamp).ok()?.remove();
        self.recorded -= 1;
        Some((entry.key, entry.value))
    }

    /// Entries least recently used first, read lazily: a caller that stops after a few
    /// pays for a few (plus, past the recorded ones, one sort of the rest).
    pub fn iter_oldest(&mut self) -> impl Iterator<Item = (&K, &V)> {
        self.prune();
        let (table, built_at) = (&self.table, self.built_at);
        let recorded = self.order.iter().filter_map(move |&(stamp, hash)| table.find(hash, |e| e.stamp == stamp));
        let newer = std::iter::once(()).flat_map(move |()| {
            let mut rest: Vec<&Entry<K, V>> = table.iter().filter(|e| e.stamp > built_at).collect();
            rest.sort_unstable_by_key(|e| e.stamp);
            rest
        });
        recorded.chain(newer).map(|e| (&e.key, &e.value))
    }

    /// Entries most recently used first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        let mut all: Vec<&Entry<K, V>> = self.table.iter().collect();
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.stamp));
        all.into_iter().map(|e| (&e.key, &e.value))
    }
}

impl<K, V> std::fmt::Debug for Lru<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru").field("len", &self.table.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    /// The order a linked list keeps, as the reference: most recently used at the back.
    struct Model(Vec<(u32, u32)>);

    impl Model {
        fn take(&mut self, k: u32) -> Option<u32> {
            let i = self.0.iter().position(|&(key, _)| key == k)?;
            Some(self.0.remove(i).1)
        }
    }

    /// A random mix of every operation, on small key ranges (so keys come back), against
    /// a list: the same values, the same victims, the same order.
    #[test]
    fn evicts_and_lists_in_exactly_the_order_a_linked_lru_does() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for keys in [4u64, 50, 1_000] {
            let (mut lru, mut model) = (Lru::new(), Model(Vec::new()));
            for step in 0..60_000u32 {
                let k = next(keys) as u32;
                match next(10) {
                    0..=2 => {
                        let old = model.take(k);
                        model.0.push((k, step));
                        assert_eq!(lru.put(k, step), old);
                    }
                    3 | 4 => {
                        let got = lru.get_mut(&k).map(|v| *v);
                        let want = model.take(k);
                        if let Some(v) = want {
                            model.0.push((k, v));
                        }
                        assert_eq!(got, want);
                    }
                    5 => assert_eq!(lru.peek(&k).copied(), model.0.iter().find(|e| e.0 == k).map(|e| e.1)),
                    6 => assert_eq!(lru.pop(&k), model.take(k)),
                    7 => {
                        let want = (!model.0.is_empty()).then(|| model.0.remove(0));
                        assert_eq!(lru.pop_lru(), want, "step {step}");
                    }
                    8 => {
                        assert_eq!(lru.peek_lru().map(|(k, v)| (*k, *v)), model.0.first().copied());
                        let n = next(5) as usize;
                        let oldest: Vec<(u32, u32)> = lru.iter_oldest().take(n).map(|(k, v)| (*k, *v)).collect();
                        assert_eq!(oldest, model.0.iter().take(n).copied().collect::<Vec<_>>());
                    }
                    _ => {
                        let newest: Vec<(u32, u32)> = lru.iter().map(|(k, v)| (*k, *v)).collect();
                        assert_eq!(newest, model.0.iter().rev().copied().collect::<Vec<_>>());
                    }
                }
                assert_eq!(lru.len(), model.0.len());
            }
        }
    }

    /// Sweeping the oldest entry while every entry is used again between sweeps (a CLB
    /// node's idle sweep over flows that send every second) keeps the order's records
    /// within a few times the table.
    #[test]
    fn the_order_stays_near_the_size_of_the_table_under_steady_use() {
        let mut lru = Lru::new();
        for k in 0..1_000u32 {
            lru.put(k, ());
        }
        for _ in 0..50 {
            for k in 0..1_000u32 {
                lru.get_mut(&k);
            }
            assert_eq!(lru.peek_lru().map(|(k, _)| *k), Some(0));
            assert!(lru.order.len() <= 2 * lru.len() + 64, "{} records", lru.order.len());
        }
    }
}
