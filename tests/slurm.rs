//! Chaos and sweeps through a real Slurm (root; CI runs it): a one-node cluster without
//! systemd (`contrib/slurm/local-cluster.sh`: munged, slurmctld, slurmd under a
//! temporary directory), a chaos run and a parameter sweep each submitted as a job array
//! with a dependent merge job (`contrib/slurm/submit.sh`), and the merged reports equal
//! to what one process writes; and, in a build with the `mpi` feature, one world over two
//! MPI ranks as a Slurm job (`contrib/slurm/sim-mpi.sbatch`) with the report one process
//! writes. Installs Debian's slurmctld, slurmd, slurm-client and munge when they are
//! missing; stops every daemon it started.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_anyedge")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success())
}

fn install_slurm() {
    if ["munged", "slurmctld", "slurmd", "sbatch"].iter().all(|b| have(b)) {
        return;
    }
    let update = Command::new("apt-get").args(["update", "-qq"]).status().expect("apt-get");
    assert!(update.success(), "apt-get update");
    let install = Command::new("apt-get")
        // Without recommends: the plugins for hdf5, rocm, elasticsearch… are not needed.
        .args(["install", "-y", "-qq", "--no-install-recommends", "slurmctld", "slurmd", "slurm-client", "munge"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get");
    assert!(install.success(), "apt-get install slurmctld slurmd slurm-client munge");
}

/// The cluster for the length of the test: down (daemons stopped, directory removed) on
/// every way out, a failed assertion included.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = std::env::temp_dir().join(format!("anyedge-slurm-{}", std::process::id()));
        let c = Cluster { dir };
        let out = Command::new(repo("contrib/slurm/local-cluster.sh")).arg("up").arg(&c.dir).output().unwrap();
        assert!(
            out.status.success(),
            "slurm up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// `submit.sh` with this cluster and this build; returns the two job ids.
    fn submit(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new(repo("contrib/slurm/submit.sh"))
            .args(args)
            .env("SLURM_CONF", self.conf())
            .env("ANYEDGE", exe())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "submit {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        // "array 3, merge 4"
        text.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    /// Waits until no job of ours is queued or running.
    fn drain(&self, within: Duration) {
        let started = Instant::now();
        loop {
            let out =
                Command::new("squeue").args(["-h", "-o", "%i %T"]).env("SLURM_CONF", self.conf()).output().unwrap();
            let queue = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && queue.trim().is_empty() {
                return;
            }
            assert!(started.elapsed() < within, "jobs still queued after {within:?}: {queue}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo("contrib/slurm/local-cluster.sh")).arg("down").arg(&self.dir).status();
    }
}

/// Submits `contrib/slurm/sim-mpi.sbatch` with two tasks on a generated world of five
/// regions (so it partitions); the file and the job's output directory.
#[cfg(feature = "mpi")]
fn mpi_job(cluster: &Cluster, work: &Path) -> Option<(String, PathBuf)> {
    let file = work.join("world.yaml");
    let gen_args =
        ["generate", "--pops", "30", "--regions", "5", "--clients", "1500", "--groups", "120", "--duration", "2s"];
    let out = Command::new(exe()).args(gen_args).arg("--out").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = work.join("mpi");
    let out = Command::new("sbatch")
        .args(["--ntasks=2", "--cpus-per-task=1"])
        .arg(format!("--output={}", work.join("mpi.out").display()))
        .arg(repo("contrib/slurm/sim-mpi.sbatch"))
        .arg(&file)
        .arg(&dir)
        .env("SLURM_CONF", cluster.conf())
        .env("ANYEDGE", exe())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "sbatch sim-mpi: {}", String::from_utf8_lossy(&out.stderr));
    Some((file.to_string_lossy().to_string(), dir))
}

#[cfg(not(feature = "mpi"))]
fn mpi_job(_: &Cluster, _: &Path) -> Option<(String, PathBuf)> {
    None
}

fn one_process(args: &[&str]) {
    let out = Command::new(exe()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn chaos_and_a_sweep_run_as_slurm_job_arrays_and_merge_to_what_one_process_writes() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs it as root)");
        return;
    }
    install_slurm();
    let work = std::env::temp_dir().join(format!("anyedge-slurm-work-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let at = |name: &str| work.join(name).to_string_lossy().to_string();
    let control = repo("topologies/control.yaml").to_string_lossy().to_string();
    let cluster = Cluster::up();

    let chaos_opts = ["--seeds", "40", "--duration", "12s"];
    let chaos_out = at("chaos");
    let mut args = vec!["chaos", "4", &chaos_out[..], &control];
    args.extend(chaos_opts);
    let chaos_jobs = cluster.submit(&args);
    let sweep_opts = [
        "--set",
        "failover.probe_interval=20ms,50ms",
        "--set",
        "backbone.loss=0%,2%",
        "--seeds",
        "3",
        "--metric",
        "p99,loss,recovery_max",
    ];
    let sweep_out = at("sweep");
    let mut args = vec!["sweep", "3", &sweep_out[..], &control];
    args.extend(sweep_opts);
    let sweep_jobs = cluster.submit(&args);
    assert_eq!(
        (chaos_jobs.len(), sweep_jobs.len()),
        (2, 2),
        "an array and a merge each: {chaos_jobs:?} {sweep_jobs:?}"
    );
    // One world over MPI ranks as a Slurm job (`sim --mpi`, the `mpi` feature).
    let mpi = mpi_job(&cluster, &work);
    cluster.drain(Duration::from_secs(300));
    drop(cluster);
    if let Some((file, out)) = mpi {
        let whole = at("mpi-whole.json");
        one_process(&["sim", "-q", "--threads", "1", &file, "--json", &whole]);
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(read(&out.join("report.json")) == read(Path::new(&whole)), "sim --mpi through Slurm = one process");
        let stats: serde_json::Value = serde_json::from_slice(&read(&out.join("stats.json"))).unwrap();
        assert_eq!((stats["ranks"].as_u64(), stats["partitions"].as_u64()), (Some(2), Some(5)), "{stats}");
    }

    // Every shard wrote its part; the merges wrote the reports one process writes.
    for (dir, shards) in [(&chaos_out, 4), (&sweep_out, 3)] {
        for i in 0..shards {
            assert!(Path::new(dir).join(format!("part-{i}.json")).exists(), "{dir}: part {i}");
        }
    }
    let mut whole = vec!["chaos", &control[..], "--json"];
    let chaos_whole = at("chaos-whole.json");
    whole.push(&chaos_whole);
    whole.extend(chaos_opts);
    one_process(&whole);
    let (sweep_whole, sweep_page) = (at("sweep-whole.json"), at("sweep-whole.html"));
    let mut whole = vec!["sweep", &control[..], "--json", &sweep_whole, "--html", &sweep_page];
    whole.extend(sweep_opts);
    one_process(&whole);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read(&format!("{chaos_out}/report.json")), read(&chaos_whole), "chaos through Slurm = one process");
    assert_eq!(read(&format!("{sweep_out}/report.json")), read(&sweep_whole), "sweep through Slurm = one process");
    assert_eq!(read(&format!("{sweep_out}/report.html")), read(&sweep_page), "the sweep's page too");
    let merged: serde_json::Value = serde_json::from_str(&read(&format!("{chaos_out}/report.json"))).unwrap();
    assert_eq!(merged["passed"], 40, "{merged}");
    let _ = std::fs::remove_dir_all(&work);
}
