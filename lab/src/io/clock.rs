//! A node's clock: nanoseconds since it started, what its sans-IO core takes as `now`.

use std::time::Instant;

pub fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// A wake-up so far away it never comes (a `select!` branch with nothing to wait for).
pub fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
}

/// `SIOCGSTAMPNS` (linux/sockios.h, 0x8907): the kernel's receive time of the last
/// datagram read from a socket, as a `timespec` of CLOCK_REALTIME (64-bit layout on the
/// 64-bit targets the lab runs on). Asking once turns the socket's timestamps on.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// A receive time older than this is no datagram just read (a stamp from before a clock
/// step, or none yet): the caller's own clock stands in.
const STAMP_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Turns the kernel's receive times on for `fd` (it takes a moment to switch on: call
/// when the socket is made, before its traffic).
pub fn stamp_receives(fd: std::os::fd::RawFd) {
    let _ = received_ns(fd, Instant::now());
}

/// When the kernel received the last datagram read from `fd`, on the node's clock
/// (ns since `start`); `now_ns(start)` when the socket has no stamp for it. A shaped link
/// that starts its delay there absorbs the node's wake-up and processing, which the
/// simulator's nodes do not have, instead of adding them to the model's delay.
pub fn received_ns(fd: std::os::fd::RawFd, start: Instant) -> u64 {
    let mut stamp = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: SIOCGSTAMPNS writes one timespec into the one we own; a bad fd or no stamp
    // is an error return, nothing else.
    let rc = unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &raw mut stamp) };
    let (now, wall) = (Instant::now(), std::time::SystemTime::now());
    let received = std::time::UNIX_EPOCH + std::time::Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32);
    let age = match wall.duration_since(received) {
        Ok(age) if rc == 0 && stamp.tv_sec > 0 && age < STAMP_AGE_MAX => age,
        _ => std::time::Duration::ZERO,
    };
    now.checked_sub(age).map_or(0, |at| at.saturating_duration_since(start).as_nanos() as u64)
}

/// This host's wall clock in µs since the Unix epoch, the stamp watchers measure their
/// lag against (0 if the clock is before 1970).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_datagrams_receive_time_is_when_the_kernel_took_it_not_when_it_was_read() {
        let start = Instant::now();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The first ask turns stamps on (the kernel may take a moment to switch its
        // timestamping on); the datagrams after it have one.
        let _ = received_ns(rx.as_raw_fd(), start);
        std::thread::sleep(std::time::Duration::from_millis(20));
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let sent_ns = now_ns(start);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut buf = [0u8; 8];
        rx.recv_from(&mut buf).unwrap();
        let read_ns = now_ns(start);
        let received = received_ns(rx.as_raw_fd(), start);
        assert!(received + 25_000_000 <= read_ns, "received at {received} ns, read at {read_ns} ns: not the read time");
        assert!(received + 2_000_000 >= sent_ns, "received at {received} ns, sent at {sent_ns} ns");
    }

    #[test]
    fn a_socket_without_a_stamp_gives_the_time_now() {
        let start = Instant::now();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = now_ns(start);
        let got = received_ns(rx.as_raw_fd(), start);
        assert!(got >= before && got <= now_ns(start), "{before} <= {got}");
    }
}
