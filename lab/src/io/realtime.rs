//! Real-time scheduling for the forwarder and the probe: on a machine where ten node
//! processes share two cores, a woken forwarder otherwise waits behind whatever runs,
//! and those waits, not the forwarding, make the latency tail. Data-plane daemons are
//! run this way in production (a real-time class or dedicated cores); the lab offers it
//! for benchmarks (`bench lab` uses it on both paths alike, `lab up --realtime`).
//! The kernel's real-time throttling (sched_rt_runtime_us) keeps a share of every
//! second for ordinary processes, so a runaway node cannot take the machine. Its price:
//! a load that fills a core is stopped there for up to 50 ms of each second, which
//! `bench lab` measures and says (see [`crate::io::cpu`]).

/// The SCHED_FIFO priority nodes and probes run at: above every ordinary process,
/// well below the kernel's own real-time threads (which run at 50 and up).
pub const PRIORITY: i32 = 10;

/// Moves the calling thread, and every thread it starts afterwards, to SCHED_FIFO at
/// [`PRIORITY`]. Call before starting a runtime so its threads inherit the policy.
pub fn enter() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: PRIORITY };
    // SAFETY: sched_setscheduler reads one sched_param we own; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("cannot run at real-time priority (SCHED_FIFO {PRIORITY}): {}", std::io::Error::last_os_error()))
    }
}

/// Whether the calling thread runs SCHED_FIFO.
pub fn active() -> bool {
    // SAFETY: sched_getscheduler takes a pid and returns the policy; no memory involved.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_FIFO }
}
