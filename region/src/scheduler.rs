//! Backend schedulers: smooth weighted round robin and weighted Maglev hashing.
//! Both see only eligible backends (healthy, weight > 0); weight 0 means no new flows.

use anyedge_proto::inner::{Fnv, mix64};

/// A backend as a scheduler sees it: a stable name and its weight (0 = ineligible).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub weight: u32,
}

/// Smooth weighted round robin (nginx's): over any window the picks follow the weights,
/// interleaved rather than in bursts.
#[derive(Debug, Clone, Default)]
pub struct Wrr {
    current: Vec<i64>,
}

impl Wrr {
    pub fn new(backends: usize) -> Wrr {
        Wrr { current: vec![0; backends] }
    }

    /// Index of the next backend, or `None` when no candidate has weight.
    pub fn pick(&mut self, candidates: &[Candidate<'_>]) -> Option<usize> {
        self.current.resize(candidates.len(), 0);
        let total: i64 = candidates.iter().map(|c| i64::from(c.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if c.weight == 0 {
                continue;
            }
            self.current[i] += i64::from(c.weight);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        debug_assert!(candidates[chosen].weight > 0, "a weightless candidate is never picked");
        Some(chosen)
    }
}

const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table: every node that builds it from the same backends gets the same
/// table, so every node maps a flow hash to the same backend.
#[derive(Debug, Clone)]
pub struct Maglev {
    /// Shared between the nodes of a thread that built it from the same backends (a
    /// region's CLB nodes in the simulator): tables are large (65,537 slots) and never
    /// change once built.
    table: std::sync::Arc<[u32]>,
}

/// The tables this thread built, by what they were built from, while someone holds them.
type TableKey = (Vec<(String, u32)>, usize);

thread_local! {
    static TABLES: std::cell::RefCell<std::collections::HashMap<TableKey, std::sync::Weak<[u32]>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn name_hash(name: &str, salt: u8) -> u64 {
    let mut h = Fnv::new();
    h.byte(salt);
    h.bytes(name.as_bytes());
    mix64(h.finish())
}

impl Maglev {
    /// Builds the table (size should be prime). Backends fill it in proportion to weight.
    /// A table this thread already holds for the same backends, weights and size is
    /// shared, not built again (the same slots either way).
    pub fn build(candidates: &[Candidate<'_>], table_size: usize) -> Maglev {
        let key: TableKey = (candidates.iter().map(|c| (c.name.to_string(), c.weight)).collect(), table_size);
        if let Some(table) = TABLES.with(|t| t.borrow().get(&key).and_then(std::sync::Weak::upgrade)) {
            return Maglev { table };
        }
        let table: std::sync::Arc<[u32]> = Maglev::fill(candidates, table_size).into();
        TABLES.with(|t| {
            let mut t = t.borrow_mut();
            // Forget tables nobody holds any more before the map grows.
            if t.len() >= 1024 {
                t.retain(|_, w| w.strong_count() > 0);
            }
            t.insert(key, std::sync::Arc::downgrade(&table));
        });
        Maglev { table }
    }

    fn fill(candidates: &[Candidate<'_>], table_size: usize) -> Vec<u32> {
        let m = table_size as u64;
        let mut table = vec![EMPTY; table_size];
        let live: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].weight > 0).collect();
        if live.is_empty() || table_size == 0 {
            return table;
        }
        let offset: Vec<u64> = live.iter().map(|&i| name_hash(candidates[i].name, 1) % m).collect();
        let skip: Vec<u64> = live.iter().map(|&i| name_hash(candidates[i].name, 2) % (m - 1).max(1) + 1).collect();
        let max_weight = live.iter().map(|&i| u64::from(candidates[i].weight)).max().unwrap_or(1);
        let mut next = vec![0u64; live.len()];
        let mut credit = vec![0u64; live.len()];
        let mut filled = 0usize;
        'fill: loop {
            for (j, &i) in live.iter().enumerate() {
                credit[j] += u64::from(candidates[i].weight);
                if credit[j] < max_weight {
                    continue;
                }
                credit[j] -= max_weight;
                let mut slot = (offset[j] + next[j] * skip[j]) % m;
                while table[slot as usize] != EMPTY {
                    next[j] += 1;
                    slot = (offset[j] + next[j] * skip[j]) % m;
                }
                debug_assert!(next[j] < m, "a prime table gives every backend a free slot within m tries");
                table[slot as usize] = i as u32;
                next[j] += 1;
                filled += 1;
                if filled == table_size {
                    break 'fill;
                }
            }
        }
        debug_assert!(table.iter().all(|&s| s != EMPTY && candidates[s as usize].weight > 0), "full of live backends");
        table
    }

    /// The backend index for a flow hash, or `None` when the table is empty.
    pub fn lookup(&self, flow_hash: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let slot = self.table[flow_hash as usize % self.table.len()];
        (slot != EMPTY).then_some(slot as usize)
    }

    /// Share of table slots each backend index holds.
    pub fn slot_counts(&self, backends: usize) -> Vec<usize> {
        let mut counts = vec![0; backends];
        for &s in self.table.iter() {
            if let Some(c) = counts.get_mut(s as usize) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("198.19.1.{i}:7000")).collect()
    }

    #[test]
    fn wrr_shares_follow_weights() {
        let ns = names(3);
        let cands = [
            Candidate { name: &ns[0], weight: 10 },
            Candidate { name: &ns[1], weight: 10 },
            Candidate { name: &ns[2], weight: 20 },
        ];
        let mut wrr = Wrr::new(3);
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[wrr.pick(&cands).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 200]);
    }

    #[test]
    fn wrr_weight_zero_gets_nothing() {
        let ns = names(2);
        let cands = [Candidate { name: &ns[0], weight: 10 }, Candidate { name: &ns[1], weight: 0 }];
        let mut wrr = Wrr::new(2);
        assert!((0..50).all(|_| wrr.pick(&cands) == Some(0)));
        let none = [Candidate { name: &ns[0], weight: 0 }];
        assert_eq!(wrr.pick(&none), None);
    }

    #[test]
    fn maglev_fills_in_proportion_to_weight() {
        let ns = names(3);
        let cands = [
            Candidate { name: &ns[0], weight: 10 },
            Candidate { name: &ns[1], weight: 10 },
            Candidate { name: &ns[2], weight: 20 },
        ];
        let counts = Maglev::build(&cands, 65_537).slot_counts(3);
        assert_eq!(counts.iter().sum::<usize>(), 65_537);
        let share2 = counts[2] as f64 / 65_537.0;
        assert!((share2 - 0.5).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn maglev_removal_moves_few_flows() {
        let ns = names(10);
        let all: Vec<Candidate> = ns.iter().map(|n| Candidate { name: n, weight: 10 }).collect();
        let mut less = all.clone();
        less[3].weight = 0;
        let a = Maglev::build(&all, 65_537);
        let b = Maglev::build(&less, 65_537);
        let moved = (0..65_537u32).filter(|&h| a.lookup(h) != Some(3) && a.lookup(h) != b.lookup(h)).count();
        assert!(moved < 65_537 / 50, "moved {moved}");
        assert!((0..65_537u32).all(|h| b.lookup(h) != Some(3)));
    }
}
