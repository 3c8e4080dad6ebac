//! Where the host's CPU goes while `bench lab` measures: each core's idle time
//! (`/proc/stat`), each node process's time on a CPU and time spent waiting for one
//! (`/proc/PID/task/*/schedstat`), the probe's time (`getrusage` of the children the
//! benchmark waited for), and the kernel's real-time budget (`kernel.sched_rt_runtime_us`
//! of `sched_rt_period_us`).
//!
//! A core's busy time is its wall time less its idle (and stolen) time: `/proc/stat`'s
//! busy columns are sampled at the timer tick, which a tickless kernel stops while a core
//! idles, so a load of short bursts (a forwarder at 10 k/s) shows there as a fraction of
//! what it is.
//!
//! The budget matters to a benchmark that runs its nodes SCHED_FIFO: once real-time tasks
//! have used `runtime` of a core's `period`, the kernel stops them on that core for the
//! rest of the period (up to 50 ms of every second by default), even with the core
//! otherwise idle. A load that keeps a core that busy has a p99 of that pause.

use crate::error::{Doing, SysError};
use std::time::{Duration, Instant};

/// Each core's time not running this host's work (idle, iowait, and steal: the hypervisor
/// running someone else) from `/proc/stat`, in clock ticks: `[0]` the whole host, then
/// each core.
pub fn parse_proc_stat(text: &str) -> Result<Vec<u64>, SysError> {
    let bad = |why: String| SysError::bad_file(std::path::Path::new("/proc/stat"), why);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next().filter(|n| n.starts_with("cpu")) else { continue };
        let values: Result<Vec<u64>, _> = fields.take(8).map(str::parse::<u64>).collect();
        let v = values.map_err(|e| bad(format!("line {}: {name}: {e}", i + 1)))?;
        if v.len() < 5 {
            return Err(bad(format!("line {}: {name}: {} fields, expected at least 5", i + 1, v.len())));
        }
        out.push(v[3] + v[4] + v.get(7).copied().unwrap_or(0));
    }
    if out.len() < 2 {
        return Err(bad("no per-core cpu lines".into()));
    }
    Ok(out)
}

/// The host's idle times at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSample {
    pub at: Instant,
    /// `[0]` the whole host, then each core (see [`parse_proc_stat`]).
    pub idle: Vec<u64>,
}

impl HostSample {
    pub fn now() -> Result<HostSample, SysError> {
        let text = std::fs::read_to_string("/proc/stat").doing(|| "/proc/stat".into())?;
        Ok(HostSample { at: Instant::now(), idle: parse_proc_stat(&text)? })
    }

    /// Cores.
    pub fn cores(&self) -> usize {
        self.idle.len().saturating_sub(1)
    }
}

/// Busy share of core `i` (0: the whole host) between two samples, %: its wall time less
/// its idle time.
pub fn busy_pct(a: &HostSample, b: &HostSample, i: usize, tps: u64) -> f64 {
    let cores = if i == 0 { a.cores().max(1) } else { 1 };
    let wall = b.at.saturating_duration_since(a.at).as_secs_f64() * tps as f64 * cores as f64;
    let (Some(x), Some(y)) = (a.idle.get(i), b.idle.get(i)) else { return 0.0 };
    if wall <= 0.0 {
        return 0.0;
    }
    (100.0 * (wall - y.saturating_sub(*x) as f64) / wall).clamp(0.0, 100.0)
}

/// A process's time on a CPU and time runnable but waiting for one (every thread's,
/// from `/proc/PID/task/*/schedstat`), ns; `None` once it is gone, or where the kernel
/// keeps no such figures (built without `CONFIG_SCHED_INFO`).
pub fn process_sched(pid: u32) -> Option<(u64, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total: Option<(u64, u64)> = None;
    for task in tasks.flatten() {
        if let Some((run, wait)) =
            std::fs::read_to_string(task.path().join("schedstat")).ok().as_deref().and_then(parse_schedstat)
        {
            let (r, w) = total.unwrap_or_default();
            total = Some((r + run, w + wait));
        }
    }
    total
}

/// `/proc/…/schedstat`: time on a CPU, time waiting for one (ns), timeslices.
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_ascii_whitespace().map(str::parse::<u64>);
    Some((f.next()?.ok()?, f.next()?.ok()?))
}

/// Clock ticks per second (`/proc/stat`'s unit).
pub fn ticks_per_s() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; no memory involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// CPU time of every child process this process has waited for, so far.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage fills one rusage we own.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// The kernel's real-time budget: (`sched_rt_runtime_us`, `sched_rt_period_us`); a
/// runtime of -1 means no limit. `None` where the kernel does not say.
pub fn rt_budget() -> Option<(i64, u64)> {
    let read = |k: &str| std::fs::read_to_string(format!("/proc/sys/kernel/{k}")).ok()?.trim().parse::<i64>().ok();
    let (runtime, period) = (read("sched_rt_runtime_us")?, read("sched_rt_period_us")?);
    Some((runtime, period.max(1) as u64))
}

/// The busiest core's busiest window, %: for every pair of samples `window` apart, each
/// core's busy share; the highest (0 with too few samples).
pub fn busiest_window_pct(samples: &[HostSample], window: usize, tps: u64) -> f64 {
    let window = window.max(1);
    let mut best: f64 = 0.0;
    for (a, b) in samples.iter().zip(samples.iter().skip(window)) {
        for core in 1..=a.cores() {
            best = best.max(busy_pct(a, b, core, tps));
        }
    }
    best
}

/// How often [`Sampler`] reads the host's times.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Reads the host's times every [`SAMPLE_EVERY`] on a thread of its own until stopped.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<HostSample>>>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(h) = HostSample::now() {
                    samples.push(h);
                }
                next += SAMPLE_EVERY;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            samples.extend(HostSample::now().ok());
            samples
        });
        Sampler { stop, thread: Some(thread) }
    }

    /// Stops sampling; the samples, first to last.
    pub fn finish(mut self) -> Vec<HostSample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  3816073 0 347849 2405692 19079 0 44695 19385 0 0\n\
cpu0 1721785 0 165969 1402427 4818 0 21887 9789 0 0\n\
cpu1 2094530 0 182179 1004772 14261 0 22942 9599 0 0\n\
intr 1 2 3\nctxt 42\nbtime 1700000000\n";

    #[test]
    fn proc_stat_gives_the_idle_time_of_the_host_then_of_each_core() {
        let idle = vec![2405692 + 19079 + 19385, 1402427 + 4818 + 9789, 1004772 + 14261 + 9599];
        assert_eq!(parse_proc_stat(STAT).unwrap(), idle);
        // A kernel too old to report steal: idle and iowait.
        assert_eq!(parse_proc_stat("cpu  1 2 3 4 5\ncpu0 1 2 3 4 5\n").unwrap(), vec![9, 9]);
    }

    #[test]
    fn malformed_proc_stat_is_refused_with_the_line() {
        let e = parse_proc_stat("cpu  1 2 x 4 5 6 7\ncpu0 1 2 3 4 5\n").unwrap_err();
        assert!(matches!(e, SysError::BadFile { ref path, .. } if path.ends_with("/proc/stat")), "{e}");
        let e = e.to_string();
        assert!(e.contains("line 1") && e.contains("cpu"), "{e}");
        let e = parse_proc_stat("cpu  1 2 3 4 5\ncpu0 1 2 3\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
        assert!(parse_proc_stat("cpu  1 2 3 4 5\nintr 1 2\n").is_err(), "no core");
    }

    #[test]
    fn a_cores_busy_share_is_its_wall_time_less_its_idle_time() {
        let t = Instant::now();
        let a = HostSample { at: t, idle: vec![0, 0, 0] };
        // One second at 100 ticks/s: core 1 idled 25 ticks, core 2 all 100.
        let b = HostSample { at: t + Duration::from_secs(1), idle: vec![125, 25, 100] };
        assert_eq!(busy_pct(&a, &b, 1, 100), 75.0);
        assert_eq!(busy_pct(&a, &b, 2, 100), 0.0);
        assert_eq!(busy_pct(&a, &b, 0, 100), 37.5, "the host: two cores' wall time");
        assert_eq!(busy_pct(&a, &a, 1, 100), 0.0, "no time passed");
    }

    #[test]
    fn the_busiest_window_is_the_busiest_core_over_samples_that_far_apart() {
        let t = Instant::now();
        let at = |s: u64, idle: [u64; 2]| HostSample {
            at: t + Duration::from_secs(s),
            idle: vec![idle[0] + idle[1], idle[0], idle[1]],
        };
        // Core 1 idles half of every second; core 2 idles all of the first, then none.
        let samples = vec![at(0, [0, 0]), at(1, [50, 100]), at(2, [100, 100]), at(3, [150, 100])];
        assert_eq!(busiest_window_pct(&samples, 1, 100), 100.0);
        assert_eq!(busiest_window_pct(&samples, 3, 100), 200.0 / 3.0);
        assert_eq!(busiest_window_pct(&samples, 4, 100), 0.0, "fewer samples than the window");
    }

    #[test]
    fn schedstat_gives_time_on_a_cpu_and_time_waiting_for_one() {
        assert_eq!(parse_schedstat("183681714 16120745 838\n"), Some((183681714, 16120745)));
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn this_process_time_on_a_cpu_grows_with_the_work_it_does() {
        let (before, _) = process_sched(std::process::id()).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let (after, _) = process_sched(std::process::id()).unwrap();
        assert!(after > before, "50 ms of work left the time at {before} ns");
        assert!(process_sched(u32::MAX).is_none(), "no such process");
    }
}
