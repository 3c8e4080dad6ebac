//! One world over several processes: what the partitioned run needs of them, whatever
//! carries it. `anyedge sim --mpi` carries it over MPI (the binary's `mpi` feature);
//! [`LocalRanks`] carries it between threads of one process, so the same code is tested
//! without MPI. Every call is collective: every rank makes the same calls in the same
//! order, or the run stops.

use std::sync::{Arc, Barrier, Mutex};

/// The ranks of a run and the collectives the partitioned simulator uses.
pub trait Ranks {
    /// This process's rank, 0 to `size() - 1`.
    fn rank(&self) -> usize;
    /// How many ranks run the world.
    fn size(&self) -> usize;
    /// Sends `to[r]` to rank `r` (every rank one buffer, empty ones too); returns what
    /// each rank sent this one, by rank.
    fn exchange(&self, to: Vec<Vec<u8>>) -> Vec<Vec<u8>>;
    /// Every rank's `bytes`, by rank, at rank 0; `None` on the others.
    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>>;
}

/// One process, the whole run: what `sim` is without `--mpi`.
pub struct One;

impl Ranks for One {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn exchange(&self, to: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        to
    }

    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        Some(vec![bytes])
    }
}

/// Ranks that are threads of one process, joined by a barrier: the MPI run's logic,
/// tested where there is no MPI.
pub struct LocalRanks {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    /// [from][to]: what is on its way.
    mail: Mutex<Vec<Vec<Vec<u8>>>>,
}

impl LocalRanks {
    /// `size` ranks, one for each thread that will run one.
    pub fn new(size: usize) -> Vec<LocalRanks> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            mail: Mutex::new(vec![vec![Vec::new(); size]; size]),
        });
        (0..size).map(|rank| LocalRanks { rank, shared: shared.clone() }).collect()
    }

    fn mail(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Vec<u8>>>> {
        self.shared.mail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ranks for LocalRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn exchange(&self, to: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        self.mail()[self.rank] = to;
        self.shared.barrier.wait();
        let got = {
            let mut mail = self.mail();
            (0..self.shared.size).map(|from| std::mem::take(&mut mail[from][self.rank])).collect()
        };
        self.shared.barrier.wait();
        got
    }

    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let mut to = vec![Vec::new(); self.shared.size];
        to[0] = bytes;
        let got = self.exchange(to);
        (self.rank == 0).then_some(got)
    }
}

#[cfg(test)]
mod tests {
    use super::{LocalRanks, Ranks};

    #[test]
    fn local_ranks_deliver_each_buffer_to_its_rank_and_gather_at_rank_zero() {
        let ranks = LocalRanks::new(3);
        type Seen = (Vec<Vec<u8>>, Option<Vec<Vec<u8>>>);
        let out: Vec<Seen> = std::thread::scope(|s| {
            let hs: Vec<_> = ranks
                .iter()
                .map(|r| {
                    s.spawn(move || {
                        let me = r.rank() as u8;
                        let got = r.exchange((0..3u8).map(|to| vec![me, to]).collect());
                        (got, r.gather(vec![me; usize::from(me) + 1]))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, (got, gathered)) in out.iter().enumerate() {
            assert_eq!(got, &(0..3u8).map(|from| vec![from, rank as u8]).collect::<Vec<_>>());
            assert_eq!(gathered.is_some(), rank == 0);
        }
        assert_eq!(out[0].1.as_ref().unwrap(), &vec![vec![0], vec![1, 1], vec![2, 2, 2]]);
    }
}
