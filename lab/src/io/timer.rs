//! The shaper's timer: a timerfd in tokio's reactor, so a packet due at a given
//! microsecond is released then, by the kernel's high-resolution timers, while the node
//! keeps serving its sockets. tokio's own timer counts whole milliseconds: a deadline in
//! the current millisecond fires at the next one, which released one packet in ten up to
//! a millisecond late; a thread sleep for the last stretch blocked the node meanwhile.

use crate::error::{SysError, last_os_error};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
    /// When the timerfd is set to fire, if it is.
    armed: Option<Instant>,
}

impl PreciseTimer {
    /// A disarmed timer on the calling thread's runtime.
    pub fn new() -> Result<PreciseTimer, SysError> {
        // SAFETY: timerfd_create takes two flags and returns a new descriptor or -1.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(last_os_error("timerfd_create"));
        }
        // SAFETY: `raw` is a descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the timer owns `fd`, which stays open and the same file for as long as
        // it is registered (it is only closed when the AsyncFd drops it).
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| SysError::Io { what: "timerfd".into(), source: e.into_parts().1 })?;
        Ok(PreciseTimer { fd, armed: None })
    }

    /// Returns at `at` (at once when it has passed); never when `at` is `None`.
    /// Cancel-safe: dropped before it fires, the timer stays set and the next wait sets it
    /// again.
    pub async fn wait_until(&mut self, at: Option<Instant>) {
        let Some(at) = at else { return std::future::pending().await };
        loop {
            let now = Instant::now();
            if at <= now {
                return;
            }
            if self.armed != Some(at) {
                self.arm(at - now);
                self.armed = Some(at);
            }
            let Ok(mut ready) = self.fd.readable().await else { return };
            let mut expirations = [0u8; 8];
            // SAFETY: read writes at most 8 bytes into the array we own.
            let n = unsafe { libc::read(self.fd.get_ref().as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            if n < 0 {
                ready.clear_ready();
            } else {
                self.armed = None;
            }
        }
    }

    /// Fires once, `after` from now.
    fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as _ },
        };
        // SAFETY: timerfd_settime reads the itimerspec we own; the old value is not asked for.
        unsafe { libc::timerfd_settime(self.fd.get_ref().as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_at_its_time_to_well_under_a_millisecond_and_a_past_time_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut timer = PreciseTimer::new().unwrap();
            let mut late = Vec::new();
            for k in 0..20u64 {
                let at = Instant::now() + Duration::from_micros(300 + 37 * k);
                timer.wait_until(Some(at)).await;
                late.push(Instant::now().duration_since(at));
            }
            late.sort();
            assert!(late[10] < Duration::from_micros(300), "median lateness {:?}", late[10]);
            let started = Instant::now();
            timer.wait_until(Some(started - Duration::from_millis(1))).await;
            assert!(started.elapsed() < Duration::from_millis(1), "a time that passed returns at once");
            // Dropped while waiting (another branch of a select won), it still serves the next.
            let _ = tokio::time::timeout(
                Duration::from_micros(100),
                timer.wait_until(Some(started + Duration::from_secs(5))),
            )
            .await;
            let at = Instant::now() + Duration::from_micros(500);
            timer.wait_until(Some(at)).await;
            assert!(Instant::now() >= at);
        });
    }
}
