//! Real-time scheduling for the forwarder and the probe: on a machine where ten node
//! processes share two cores, a woken forwarder otherwise waits behind whatever runs,
//! and those waits, not the forwarding, make the latency tail. Data-plane daemons are
//! run this way in production (a real-time class or dedicated cores); the lab offers it
//! for benchmarks (`bench lab` uses it on both paths alike, `lab up --realtime`).
//! The kernel's real-time throttling (sched_rt_runtime_us) keeps a share of every
//! second for ordinary processes, so a runaway node cannot take the machine. Its price:
//! a load that fills a core is stopped there for up to 50 ms of each second, which
//! `bench lab` measures and says (see [`crate::io::cpu`]).

use crate::error::{SysError, last_os_error};

/// The SCHED_FIFO priority nodes and probes run at: above every ordinary process,
/// well below the kernel's own real-time threads (which run at 50 and up).
pub const PRIORITY: i32 = 10;

/// Moves the calling thread, and every thread it starts afterwards, to SCHED_FIFO at
/// [`PRIORITY`]. Call before starting a runtime so its threads inherit the policy.
pub fn enter() -> Result<(), SysError> {
    let param = libc::sched_param { sched_priority: PRIORITY };
    // SAFETY: sched_setscheduler reads one sched_param we own; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_os_error(format!("cannot run at real-time priority (SCHED_FIFO {PRIORITY})")))
    }
}

/// Moves process `pid` (a benchmark's peer or endpoint it just started) to SCHED_FIFO at
/// [`PRIORITY`], as the nodes it is measured beside run; what it starts afterwards
/// inherits it. `false` if the kernel refused (the figures then say less, not wrongly).
pub fn make_fifo(pid: u32) -> bool {
    let param = libc::sched_param { sched_priority: PRIORITY };
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: sched_setscheduler reads one sched_param we own, for a pid we started.
    unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) == 0 }
}

/// Whether the calling thread runs SCHED_FIFO.
pub fn active() -> bool {
    // SAFETY: sched_getscheduler takes a pid and returns the policy; no memory involved.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_FIFO }
}

/// Timer slack the shaper's sleeps get: 1 ns, the least the kernel takes. An ordinary
/// thread's is 50 µs — the kernel may wake it that late to batch wake-ups — which every
/// shaped hop adds to the model's delay (a real-time thread's is always 0).
const TIMER_SLACK_NS: libc::c_ulong = 1;

/// Asks the kernel to wake the calling thread, and every thread it starts afterwards, on
/// time rather than up to 50 µs late. Call before starting a runtime.
pub fn tight_timers() -> Result<(), SysError> {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS) };
    if rc == 0 { Ok(()) } else { Err(last_os_error("cannot set the timer slack")) }
}

/// The calling thread's timer slack, in ns.
pub fn timer_slack_ns() -> u64 {
    // SAFETY: prctl(PR_GET_TIMERSLACK) takes no pointer and returns the slack.
    unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) as u64 }
}
