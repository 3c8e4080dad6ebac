//! `mpirun -np N anyedge sim FILE --mpi` (the `mpi` feature, Open MPI; CI builds with it):
//! the report of N ranks is the bytes of one process, on generated worlds that partition
//! and on the shipped topologies (which run as one partition, on rank 0); ranks that
//! disagree about the build or the file stop together, with an error naming them.
//! Oversubscribed on one machine: the transport is the one real hosts use.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_anyedge")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anyedge-mpi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `mpirun` with what one machine needs: more ranks than cores, and root allowed (CI
/// runs as root).
fn mpirun(args: &[&str]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe"]).args(args);
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    // A hang is a failure: the job is killed after a few minutes.
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("mpirun");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("mpirun {args:?} hung: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One process's table and JSON report of `file`.
fn one_process(file: &Path, dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let json = dir.join("one.json");
    let out = Command::new(exe())
        .args(["sim", "-q", "--threads", "1", "--json"])
        .arg(&json)
        .arg(file)
        .output()
        .expect("anyedge sim");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, std::fs::read(json).unwrap())
}

/// The same bytes from 1, 2, 3 and 4 ranks as from one process; each run's stderr.
fn same_bytes_on_one_to_four_ranks(file: &Path, dir: &Path) -> Vec<String> {
    let (table, json) = one_process(file, dir);
    let mut said = Vec::new();
    for n in 1..=4 {
        let out_json = dir.join(format!("np{n}.json"));
        let (np, j) = (n.to_string(), out_json.display().to_string());
        let f = file.display().to_string();
        let out = mpirun(&["-np", &np, exe(), "sim", &f, "--mpi", "-q", "--threads", "1", "--json", &j]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{f} on {n} ranks: {stderr}");
        assert!(out.stdout == table, "{f} on {n} ranks: the table differs from one process's");
        assert!(std::fs::read(&out_json).unwrap() == json, "{f} on {n} ranks: the JSON report differs");
        for r in 0..n {
            assert!(stderr.contains(&format!("rank {r}: peak memory")), "{f} on {n} ranks: {stderr}");
        }
        said.push(stderr);
    }
    said
}

/// A world of five regions (it partitions) with faults a partition boundary cuts through
/// (`common::worlds`), a CLB node's among them: its flows are found by asking POPs other
/// ranks run.
fn generated_world(dir: &Path) -> PathBuf {
    let file = dir.join("gen.yaml");
    std::fs::write(&file, common::worlds::partitioned_with_faults(5)).unwrap();
    file
}

#[test]
fn a_partitioned_world_on_one_to_four_mpi_ranks_gives_the_report_of_one_process_byte_for_byte() {
    let dir = scratch("gen");
    let file = generated_world(&dir);
    let said = same_bytes_on_one_to_four_ranks(&file, &dir);
    assert!(!said[1].contains("one partition"), "five regions partition: {}", said[1]);
    // The stats say how it went: every rank's memory, the windows, what was exchanged.
    let stats = dir.join("stats.json");
    let (f, s) = (file.display().to_string(), stats.display().to_string());
    let out = mpirun(&["-np", "3", exe(), "sim", &f, "--mpi", "-q", "--threads", "1", "--stats", &s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(v["ranks"], 3);
    assert_eq!(v["partitions"], 5);
    assert_eq!(v["peak_memory_bytes"].as_array().map(Vec::len), Some(3));
    assert!(v["exchanged_bytes"].as_u64().unwrap() > 0 && v["windows"].as_u64().unwrap() > 100, "{v}");
    // Each rank's share as it went, and each partition's events: what a later run shares by.
    let loads = v["rank_loads"].as_array().expect("rank_loads");
    assert_eq!(loads.len(), 3);
    assert!(loads.iter().all(|l| l["events"].as_u64().unwrap() > 0 && l["windows_s"].as_f64().is_some()), "{v}");
    let events = v["partition_events"].as_array().expect("partition_events");
    assert!(events.len() == 5 && events.iter().all(|e| e.as_u64().unwrap() > 0), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rank 2: peak memory") && stderr.contains("s running windows"), "{stderr}");
    // Shared by those measured events instead of the file's expected load: the same bytes.
    let balanced = dir.join("balanced.json");
    let b = balanced.display().to_string();
    let out =
        mpirun(&["-np", "2", exe(), "sim", &f, "--mpi", "-q", "--threads", "1", "--balance-by", &s, "--json", &b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        std::fs::read(&balanced).unwrap() == std::fs::read(dir.join("one.json")).unwrap(),
        "balanced: the report differs"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_shipped_topology_on_one_to_four_mpi_ranks_gives_the_report_of_one_process_byte_for_byte() {
    for name in ["small", "apps", "internet", "control", "reference", "global"] {
        let dir = scratch(name);
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("topologies/{name}.yaml"));
        let said = same_bytes_on_one_to_four_ranks(&file, &dir);
        // One region, or a control plane: one partition, which rank 0 runs whole.
        assert!(said[1].contains("runs as one partition: rank 0 ran it whole"), "{name}: {}", said[1]);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn ranks_given_different_topology_files_stop_together_naming_the_ranks_that_differ() {
    let dir = scratch("mismatch");
    let small = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/small.yaml");
    let mut other = std::fs::read_to_string(&small).unwrap();
    other.push_str("# another file\n");
    let changed = dir.join("changed.yaml");
    std::fs::write(&changed, other).unwrap();
    let (a, b) = (small.display().to_string(), changed.display().to_string());
    let out = mpirun(&["-np", "1", exe(), "sim", &a, "--mpi", "-q", ":", "-np", "1", exe(), "sim", &b, "--mpi", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for rank in 0..2 {
        assert!(
            stderr.contains(&format!("rank {rank}: ranks 1 run another executable, topology file")),
            "rank {rank} says which: {stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "nothing ran: {}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_world_too_large_for_its_ranks_memory_is_refused_up_front_by_every_rank() {
    let dir = scratch("large");
    let file = dir.join("large.yaml");
    // Four million clients, every one with a TCP stack: about 32 KB each, far more than
    // two ranks on this machine hold.
    let out = Command::new(exe())
        .args(["generate", "--clients", "4000000", "--groups", "4000", "--web-every", "1", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = file.display().to_string();
    let started = std::time::Instant::now();
    let out = mpirun(&["-np", "2", exe(), "sim", &f, "--mpi", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for rank in 0..2 {
        assert!(stderr.contains(&format!("rank {rank} of 2 would need about")), "rank {rank} says why: {stderr}");
    }
    assert!(stderr.contains("nothing was run") && out.stdout.is_empty(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "refused before building: {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_rank_that_dies_mid_run_ends_the_job_with_an_error_naming_it_instead_of_a_hang() {
    let dir = scratch("dies");
    let file = dir.join("long.yaml");
    let out = Command::new(exe())
        .args(["generate", "--pops", "30", "--regions", "5", "--clients", "50000", "--groups", "500"])
        .args(["--duration", "60s", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut job = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "2", exe(), "sim"])
        .arg(&file)
        .args(["--mpi", "-q", "--threads", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun");
    // The ranks: this test's file on their command line, and anyedge as the program.
    let ranks = || -> Vec<u32> {
        let mut pids: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.starts_with(exe()) && cmd.contains(&file.display().to_string())
            })
            .collect();
        pids.sort_unstable();
        pids
    };
    let started = std::time::Instant::now();
    while ranks().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "the ranks did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Well into the run: both ranks past the start's checks and exchanging windows.
    std::thread::sleep(Duration::from_secs(3));
    let victim = *ranks().last().expect("a rank");
    let killed = Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    assert!(killed.success());
    let killed_at = std::time::Instant::now();
    loop {
        if job.try_wait().unwrap().is_some() {
            break;
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("the job still runs a minute after a rank died");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("exited on signal 9"), "mpirun names the rank that died: {stderr}");
    assert!(ranks().is_empty(), "no rank is left waiting");
    let _ = std::fs::remove_dir_all(dir);
}
