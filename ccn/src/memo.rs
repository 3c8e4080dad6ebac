//! What a pure function made, shared while someone holds it: nodes of one thread that
//! ask for the same thing (POPs publishing the same VIPs, a region's CLB nodes building
//! the same Maglev table, POPs holding the same connection-ID keys) get one copy, and a
//! copy nobody holds any more is made again when next asked. A cache: what comes back is
//! what `make` would make, so nothing a driver does depends on it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

/// Forget entries nobody holds once the memo has this many (and twice the live ones).
const SWEEP_MIN: usize = 1024;

pub struct WeakMemo<K, V: ?Sized> {
    made: HashMap<K, Weak<V>>,
    sweep_at: usize,
}

impl<K: Hash + Eq, V: ?Sized> Default for WeakMemo<K, V> {
    fn default() -> Self {
        WeakMemo { made: HashMap::new(), sweep_at: SWEEP_MIN }
    }
}

impl<K: Hash + Eq, V: ?Sized> WeakMemo<K, V> {
    /// What was made for `key` if someone still holds it, else `make()`, kept for the next
    /// caller.
    pub fn get_or_make<Q>(&mut self, key: &Q, make: impl FnOnce() -> Arc<V>) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(made) = self.made.get(key).and_then(Weak::upgrade) {
            return made;
        }
        if self.made.len() >= self.sweep_at {
            self.made.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (2 * self.made.len()).max(SWEEP_MIN);
        }
        let made = make();
        self.made.insert(key.to_owned(), Arc::downgrade(&made));
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thing_held_is_shared_and_one_let_go_is_made_again() {
        let mut memo: WeakMemo<Vec<u8>, [u32]> = WeakMemo::default();
        let mut made = 0;
        let mut get = |memo: &mut WeakMemo<Vec<u8>, [u32]>, key: &[u8]| {
            memo.get_or_make(key, || {
                made += 1;
                key.iter().map(|&b| u32::from(b) * 2).collect()
            })
        };
        let a = get(&mut memo, &[1, 2]);
        let b = get(&mut memo, &[1, 2]);
        assert!(Arc::ptr_eq(&a, &b), "held: shared");
        assert_eq!(&*get(&mut memo, &[3]), &[6]);
        drop((a, b));
        assert_eq!(&*get(&mut memo, &[1, 2]), &[2, 4], "let go: made again, the same");
        assert_eq!(made, 3);
        // Thousands of keys nobody holds: the memo forgets them as it grows.
        for k in 0..5_000u32 {
            memo.get_or_make(&k.to_le_bytes()[..], || Arc::from([k]));
        }
        assert!(memo.made.len() <= 2 * SWEEP_MIN, "{} entries kept", memo.made.len());
    }
}
