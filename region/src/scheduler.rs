//! Backend schedulers: smooth weighted round robin and weighted Maglev hashing.
//! Both see only eligible backends (healthy, weight > 0); weight 0 means no new flows.

use std::sync::Arc;

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
    table: Arc<Slots>,
}

/// A table's slots: backend indices as `u16` while every index fits (half the memory:
/// a world of 500 regions held 500 tables of 65,537 slots), as `u32` past that; an
/// empty slot is the type's largest value.
#[derive(Debug)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Slots {
    /// The narrowest slots that hold `table`'s indices (`EMPTY` stays empty).
    fn of(table: Vec<u32>, backends: usize) -> Slots {
        if backends < usize::from(u16::MAX) {
            Slots::Narrow(table.iter().map(|&s| if s == EMPTY { u16::MAX } else { s as u16 }).collect())
        } else {
            Slots::Wide(table.into())
        }
    }

    fn len(&self) -> usize {
        match self {
            Slots::Narrow(t) => t.len(),
            Slots::Wide(t) => t.len(),
        }
    }

    /// The backend index in slot `i`; `None` when it is empty.
    fn get(&self, i: usize) -> Option<usize> {
        match self {
            Slots::Narrow(t) => t.get(i).filter(|&&s| s != u16::MAX).map(|&s| usize::from(s)),
            Slots::Wide(t) => t.get(i).filter(|&&s| s != EMPTY).map(|&s| s as usize),
        }
    }
}

/// The tables this thread built, by what they were built from, while someone holds them.
type TableKey = (Vec<(String, u32)>, usize);

thread_local! {
    static TABLES: std::cell::RefCell<anyedge_ccn::WeakMemo<TableKey, Slots>> = Default::default();
}

fn name_hash(name: &str, salt: u8) -> u64 {
    let mut h = Fnv::new();
    h.byte(salt);
    h.bytes(name.as_bytes());
    mix64(h.finish())
}

/// Each live backend's permutation of a table's slots (its first choice and its step),
/// and the largest weight: what a fill starts from.
struct Permutations {
    live: Vec<usize>,
    offset: Vec<u64>,
    skip: Vec<u64>,
    max_weight: u64,
}

impl Permutations {
    /// `None` when there is nothing to fill: no live backend, or no slot.
    fn of(candidates: &[Candidate<'_>], table_size: usize) -> Option<Permutations> {
        let m = table_size as u64;
        let live: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].weight > 0).collect();
        if live.is_empty() || table_size == 0 {
            return None;
        }
        let offset = live.iter().map(|&i| name_hash(candidates[i].name, 1) % m).collect();
        let skip = live.iter().map(|&i| name_hash(candidates[i].name, 2) % (m - 1).max(1) + 1).collect();
        let max_weight = live.iter().map(|&i| u64::from(candidates[i].weight)).max().unwrap_or(1);
        Some(Permutations { live, offset, skip, max_weight })
    }
}

impl Maglev {
    /// Builds the table (size should be prime). Backends fill it in proportion to weight.
    /// A table this thread already holds for the same backends, weights and size is
    /// shared, not built again (the same slots either way).
    pub fn build(candidates: &[Candidate<'_>], table_size: usize) -> Maglev {
        let key: TableKey = (candidates.iter().map(|c| (c.name.to_string(), c.weight)).collect(), table_size);
        let table = TABLES.with(|memo| {
            memo.borrow_mut()
                .get_or_make(&key, || Arc::new(Slots::of(Maglev::fill(candidates, table_size), candidates.len())))
        });
        Maglev { table }
    }

    fn fill(candidates: &[Candidate<'_>], table_size: usize) -> Vec<u32> {
        let m = table_size as u64;
        let mut table = vec![EMPTY; table_size];
        let Some(Permutations { live, offset, skip, max_weight }) = Permutations::of(candidates, table_size) else {
            return table;
        };
        // Backend j's n-th choice is (offset + n * skip) % m, stepped by adding skip
        // (at most m) and taking m off once: no division a step.
        let mut choice = offset.clone();
        let mut tries = vec![0u64; live.len()];
        let mut credit = vec![0u64; live.len()];
        let mut filled = 0usize;
        let step = |slot: &mut u64, skip: u64| {
            *slot += skip;
            if *slot >= m {
                *slot -= m;
            }
        };
        'fill: loop {
            for (j, &i) in live.iter().enumerate() {
                credit[j] += u64::from(candidates[i].weight);
                if credit[j] < max_weight {
                    continue;
                }
                credit[j] -= max_weight;
                while table[choice[j] as usize] != EMPTY {
                    step(&mut choice[j], skip[j]);
                    tries[j] += 1;
                }
                debug_assert!(tries[j] < m, "a prime table gives every backend a free slot within m tries");
                debug_assert_eq!(choice[j], (offset[j] + tries[j] * skip[j]) % m, "the permutation's next choice");
                table[choice[j] as usize] = i as u32;
                step(&mut choice[j], skip[j]);
                tries[j] += 1;
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
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        self.table.get(flow_hash as usize % len)
    }

    /// Whether every slot names one of the first `backends` backends.
    pub fn names_only_below(&self, backends: usize) -> bool {
        (0..self.table.len()).filter_map(|i| self.table.get(i)).all(|s| s < backends)
    }

    /// Share of table slots each backend index holds.
    pub fn slot_counts(&self, backends: usize) -> Vec<usize> {
        let mut counts = vec![0; backends];
        for s in (0..self.table.len()).filter_map(|i| self.table.get(i)) {
            if let Some(c) = counts.get_mut(s) {
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

    /// The fill as the Maglev paper writes it: backend j's n-th choice computed as
    /// (offset + n * skip) % m each time.
    fn fill_by_division(candidates: &[Candidate<'_>], table_size: usize) -> Vec<u32> {
        let m = table_size as u64;
        let mut table = vec![EMPTY; table_size];
        let Some(Permutations { live, offset, skip, max_weight }) = Permutations::of(candidates, table_size) else {
            return table;
        };
        let (mut next, mut credit, mut filled) = (vec![0u64; live.len()], vec![0u64; live.len()], 0);
        loop {
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
                table[slot as usize] = i as u32;
                next[j] += 1;
                filled += 1;
                if filled == table_size {
                    return table;
                }
            }
        }
    }

    #[test]
    fn maglev_fills_the_slots_the_papers_division_does() {
        let ns = names(40);
        for (backends, size) in [(1, 1), (1, 7), (3, 7), (10, 251), (40, 65_537), (7, 65_537)] {
            for weights in [1u32, 3] {
                let cands: Vec<Candidate> = ns[..backends]
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Candidate {
                        name: n,
                        weight: if i % 4 == 3 { 0 } else { 1 + (i as u32 % weights) * 7 },
                    })
                    .collect();
                assert_eq!(
                    Maglev::fill(&cands, size),
                    fill_by_division(&cands, size),
                    "{backends} backends, {size} slots"
                );
            }
        }
    }

    #[test]
    fn maglev_tables_name_the_same_backends_in_narrow_and_wide_slots() {
        let ns = names(10);
        let mut cands: Vec<Candidate> = ns.iter().map(|n| Candidate { name: n, weight: 10 }).collect();
        cands[4].weight = 0;
        let narrow = Maglev::build(&cands, 65_537);
        assert!(matches!(*narrow.table, Slots::Narrow(_)), "ten backends take u16 slots");
        let wide = Maglev { table: Arc::new(Slots::Wide(Maglev::fill(&cands, 65_537).into())) };
        assert!((0..65_537u32).all(|h| narrow.lookup(h) == wide.lookup(h) && narrow.lookup(h) != Some(4)));
        assert_eq!(narrow.slot_counts(10), wide.slot_counts(10));
        assert_eq!(Maglev::build(&[], 7).lookup(3), None, "no backend, no answer");
    }

    #[test]
    fn maglev_tables_of_more_backends_than_u16_indices_reach_every_index() {
        let ns: Vec<String> = (0..70_000).map(|i| format!("backend-{i}")).collect();
        let cands: Vec<Candidate> = ns.iter().map(|n| Candidate { name: n, weight: 1 }).collect();
        let m = Maglev::build(&cands, 140_009);
        assert!(matches!(*m.table, Slots::Wide(_)), "70,000 backends need u32 slots");
        let counts = m.slot_counts(70_000);
        assert_eq!(counts.iter().sum::<usize>(), 140_009, "every slot names a backend");
        assert!(counts.iter().all(|&c| c >= 1), "each backend holds a slot, those past index 65,535 too");
    }
}
