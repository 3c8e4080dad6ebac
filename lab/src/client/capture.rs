//! `anyedge lab capture FILE NODE -w out.pcap`: every packet a node's namespace sends or
//! receives, on every interface (its links, its TUN device), as IP packets with wall-clock
//! time stamps — the same pcap framing as `anyedge sim --pcap`, so the same dissector
//! (`tools/wireshark/anyedge.lua`) reads the backbone's envelopes on the lab's ports.

use crate::client::ClientError;
use crate::error::{Doing, last_os_error};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Captures in the calling process's network namespace for `duration` into `out`,
/// keeping at most `snaplen` bytes of each packet; returns the packets written.
pub fn capture_here(out: &Path, duration: Duration, snaplen: u32) -> Result<u64, ClientError> {
    const ETH_P_ALL: u16 = 0x0003;
    // SAFETY: plain socket(2); the descriptor is owned below and closed on every path.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(ETH_P_ALL.to_be())) };
    if fd < 0 {
        return Err(last_os_error("packet socket (capturing needs root)").into());
    }
    let result = capture_fd(fd, out, duration, snaplen);
    // SAFETY: fd is the socket opened above, closed once.
    unsafe { libc::close(fd) };
    result
}

fn capture_fd(fd: i32, out: &Path, duration: Duration, snaplen: u32) -> Result<u64, ClientError> {
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    // SAFETY: setsockopt with a valid timeval of the size given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(last_os_error("packet socket timeout").into());
    }
    let file = std::fs::File::create(out).at(out)?;
    let mut w = BufWriter::new(file);
    w.write_all(&anyedge_proto::pcap::file_header_snap(snaplen)).at(out)?;
    let mut buf = vec![0u8; 65_536];
    let (start, mut packets) = (Instant::now(), 0u64);
    while start.elapsed() < duration {
        // SAFETY: recv into a buffer of the length given.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue; // the 100 ms timeout, or an interrupted call: look at the clock again
        }
        let packet = &buf[..n as usize];
        // IP packets only (SOCK_DGRAM strips link headers; ARP and the like are left out).
        if !matches!(packet.first().map(|b| b >> 4), Some(4 | 6)) {
            continue;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        anyedge_proto::pcap::write_record_snap(&mut w, now, packet, snaplen).at(out)?;
        packets += 1;
    }
    w.flush().at(out)?;
    Ok(packets)
}
