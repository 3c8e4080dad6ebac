//! Independent runs on a few threads, results in the order asked: what `chaos` and
//! `sweep` both do with seeds and variants (each run its own world, so threads share
//! nothing but the counter of the next item).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// `run(k)` for every `k` in `start..end` on `jobs` threads; `done(n, &result)` after each
/// (n: how many have finished). Results come back in `k` order, whatever order the
/// threads finished in.
pub fn in_order<T: Send>(
    (start, end): (u64, u64),
    jobs: usize,
    run: impl Fn(u64) -> T + Sync,
    done: impl Fn(u64, &T) + Sync,
) -> Vec<T> {
    let next = AtomicU64::new(start);
    let finished = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= end {
                        break;
                    }
                    let r = run(k);
                    done(finished.fetch_add(1, Ordering::Relaxed) + 1, &r);
                    if let Ok(mut all) = results.lock() {
                        all.push((k, r));
                    }
                }
            });
        }
    });
    let mut all = results.into_inner().unwrap_or_default();
    all.sort_by_key(|(k, _)| *k);
    all.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_runs_once_and_comes_back_in_order() {
        let calls = std::sync::atomic::AtomicU64::new(0);
        let out = super::in_order(
            (5, 105),
            4,
            |k| k * 2,
            |_, _| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        );
        assert_eq!(out, (5..105).map(|k| k * 2).collect::<Vec<_>>());
        assert_eq!(calls.into_inner(), 100);
        assert!(super::in_order((3, 3), 2, |k| k, |_, _| {}).is_empty());
    }
}
