//! `anyedge sim FILE --mpi`: one world over MPI ranks (the `mpi` feature; Open MPI from
//! Debian's `libopenmpi-dev`, through the `mpi` crate). Each rank runs its share of the
//! partitions (`anyedge_sim::run_ranked`); what crosses between ranks goes in one
//! all-to-all exchange per window (counts, then bytes), and rank 0 merges the report and
//! writes everything a one-process run writes.
//!
//! Before anything runs, every rank hashes its executable, the topology file's bytes and
//! the options that change the bytes; ranks that differ stop together with an error
//! naming them. A rank that fails once the run has begun aborts the whole job
//! (`MPI_Abort`): the others would otherwise wait for it at the next exchange.

use std::hash::Hasher;
use std::process::ExitCode;

use anyedge_topology::Topology;
use mpi::Count;
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::sim::Outputs;

/// A line on standard error in one write: the ranks of a job share one terminal (or one
/// log), and `eprintln!` writes a line in pieces, so two ranks' lines would interleave.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// The MPI world's ranks, for the simulator's exchanges. Only the thread that
/// initialized MPI calls it (the windows' steps run there; the rank's world threads do
/// not touch MPI), so MPI runs `MPI_THREAD_FUNNELED`.
struct MpiRanks {
    world: SimpleCommunicator,
}

/// A buffer's length as MPI counts it, or the job stops with what was too large.
fn count(n: usize, what: &str, world: &SimpleCommunicator) -> Count {
    Count::try_from(n).unwrap_or_else(|_| {
        say!("rank {}: {what} of {n} bytes is more than MPI sends at once (2 GiB)", world.rank());
        world.abort(2)
    })
}

fn displacements(counts: &[Count]) -> Vec<Count> {
    counts
        .iter()
        .scan(0, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect()
}

impl anyedge_sim::ranks::Ranks for MpiRanks {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn exchange(&self, to: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let send_counts: Vec<Count> = to.iter().map(|b| count(b.len(), "a window's crossings", &self.world)).collect();
        let mut recv_counts = vec![0 as Count; to.len()];
        self.world.all_to_all_into(&send_counts[..], &mut recv_counts[..]);
        // Never an empty buffer: two empty vectors share one dangling address, and MPI
        // refuses a send buffer that is the receive buffer (MPI_ERR_ARG).
        let mut send: Vec<u8> = to.concat();
        send.push(0);
        let total: usize = recv_counts.iter().map(|&c| c as usize).sum();
        let mut recv = vec![0u8; total + 1];
        let (send_displs, recv_displs) = (displacements(&send_counts), displacements(&recv_counts));
        {
            let out = Partition::new(&send[..], &send_counts[..], &send_displs[..]);
            let mut into = PartitionMut::new(&mut recv[..], &recv_counts[..], &recv_displs[..]);
            self.world.all_to_all_varcount_into(&out, &mut into);
        }
        recv_counts.iter().zip(&recv_displs).map(|(&c, &d)| recv[d as usize..(d + c) as usize].to_vec()).collect()
    }

    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let root = self.world.process_at_rank(0);
        let n = count(bytes.len(), "a rank's part of the report", &self.world);
        let mut bytes = bytes;
        bytes.push(0);
        let bytes = &bytes[..bytes.len() - 1];
        if self.world.rank() != 0 {
            root.gather_into(&n);
            root.gather_varcount_into(bytes);
            return None;
        }
        let mut counts = vec![0 as Count; self.size()];
        root.gather_into_root(&n, &mut counts[..]);
        let displs = displacements(&counts);
        let mut all = vec![0u8; counts.iter().map(|&c| c as usize).sum::<usize>() + 1];
        {
            let mut into = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            root.gather_varcount_into_root(bytes, &mut into);
        }
        Some(counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect())
    }
}

/// What every rank must agree on: this executable, the file's bytes and the options that
/// change the report.
fn inputs_hash(file: &std::path::Path, t: &Topology, outputs: &Outputs) -> Result<u64, String> {
    let exe = std::fs::read("/proc/self/exe").map_err(|e| format!("cannot read its own executable: {e}"))?;
    let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut h = std::hash::DefaultHasher::new();
    h.write(&exe);
    h.write(&text);
    h.write_u64(t.seed);
    h.write(format!("{:?}", outputs.auth).as_bytes());
    // Ranks that shared partitions differently would wait for crossings nobody sends.
    for &events in outputs.balance.iter().flatten() {
        h.write_u64(events);
    }
    Ok(h.finish())
}

/// `sim FILE --mpi`, on every rank: rank 0 prints and writes what `sim` does; the others
/// print only their errors.
pub fn simulate(file: &std::path::Path, t: &Topology, outputs: Outputs) -> ExitCode {
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        say!("--mpi: MPI is already initialized in this process");
        return ExitCode::from(2);
    };
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    // Every rank the same build, file and options, or none runs.
    let mine = match inputs_hash(file, t, &outputs) {
        Ok(h) => h,
        Err(e) => {
            say!("rank {rank}: {e}");
            world.abort(2)
        }
    };
    let mut all = vec![0u64; size as usize];
    world.all_gather_into(&mine, &mut all[..]);
    let differ: Vec<String> = (0..size).filter(|&r| all[r as usize] != all[0]).map(|r| r.to_string()).collect();
    if !differ.is_empty() {
        say!(
            "rank {rank}: ranks {} run another executable, topology file or --seed/--auth/--balance-by than rank 0: every rank must run the same build on the same file; nothing was run",
            differ.join(", ")
        );
        return ExitCode::from(2);
    }
    // Rank 0 checks what it will write; every rank learns whether to go on.
    let ready = if rank == 0 { crate::sim::prepare(file, t, &outputs).err() } else { None };
    let mut refused = 0u8;
    let code = u8::from(ready.is_some());
    world.all_reduce_into(&code, &mut refused, SystemOperation::max());
    if refused != 0 {
        return ready.unwrap_or(ExitCode::from(2));
    }
    // Each rank's share against its machine's memory (the ranks sharing a machine
    // together), before anything is built: refused up front, not killed by the kernel.
    let own = anyedge_sim::cost::estimate_rank(t, (size as usize, rank as usize), outputs.balance.as_deref());
    let host = world.split_shared(rank);
    let mut here = 0f64;
    host.all_reduce_into(&own.bytes, &mut here, SystemOperation::sum());
    let why = anyedge_sim::cost::refuse_rank(t, (size as usize, rank as usize), own, here);
    if let Some(why) = &why {
        say!("{}: {why}; nothing was run", file.display());
    }
    let mut refused = 0u8;
    world.all_reduce_into(&u8::from(why.is_some()), &mut refused, SystemOperation::max());
    if refused != 0 {
        return ExitCode::from(2);
    }
    let options = anyedge_sim::Options {
        pcap: outputs.pcap.clone(),
        capture: outputs.capture.clone(),
        auth: outputs.auth,
        threads: outputs.threads,
        balance: outputs.balance.clone(),
    };
    let ranks = MpiRanks { world };
    let progress = crate::sim::progress_bar(outputs.quiet || rank != 0, t.duration_ns as f64 / 1e9);
    let outcome = match anyedge_sim::run_ranked(t, &options, &ranks, progress) {
        Ok(o) => o,
        Err(e) => {
            say!("{}: rank {rank} of {size}: cannot simulate: {}", file.display(), e.0);
            say!("replay: mpirun -np {size} anyedge sim {} --seed {} --mpi", file.display(), t.seed);
            ranks.world.abort(2)
        }
    };
    // Each rank's peak memory and what it estimated up front, for rank 0 to print.
    let mine = [crate::sim::peak_memory_bytes(), own.bytes as u64];
    let root = ranks.world.process_at_rank(0);
    let Some(mut outcome) = outcome else {
        root.gather_into(&mine[..]);
        return ExitCode::SUCCESS;
    };
    let mut both = vec![0u64; 2 * size as usize];
    root.gather_into_root(&mine[..], &mut both[..]);
    let peaks: Vec<u64> = both.chunks(2).map(|c| c[0]).collect();
    let estimates: Vec<u64> = both.chunks(2).map(|c| c[1]).collect();
    if outcome.stats.ranks == 1 && size > 1 {
        say!(
            "{}: the world runs as one partition: rank 0 ran it whole, ranks 1–{} had nothing to run",
            file.display(),
            size - 1
        );
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    for (r, (&peak, &estimate)) in peaks.iter().zip(&estimates).enumerate() {
        let (peak, estimate) = (mib(peak), mib(estimate));
        match outcome.stats.rank_loads.get(r) {
            Some(l) => say!(
                "rank {r}: peak memory {peak:.1} MiB (estimated {estimate:.0}); {} events, {:.1} s running windows, {:.1} s between them",
                l.events,
                l.windows_s,
                l.between_s
            ),
            None => say!("rank {r}: peak memory {peak:.1} MiB (estimated {estimate:.0})"),
        }
    }
    outcome.stats.peak_memory_bytes = peaks;
    crate::sim::deliver(file, t, outcome, outputs)
}
