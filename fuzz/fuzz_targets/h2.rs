//! HTTP/2 at an HTTPS listener (`anyedge_region::h2`): arbitrary client bytes after the
//! connection preface (frames of any type, on any stream, in any order: floods of
//! HEADERS, CONTINUATION, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, malformed frames)
//! and arbitrary backend answers, with time passing. Nothing panics, a session that sent
//! GOAWAY takes no more requests to the backend, and the request bytes it holds stay
//! within their bound.
//!
//! Input: records of [kind, flags, len, bytes…]; kind 0 feeds the client's bytes, kind 1
//! the backend's bytes to lane `flags >> 5` of the session's (flags bit 0: the backend
//! closed), whether or not a request is at it (a backend that answers twice, or unasked),
//! kind 2 lets `len` × 10 ms pass and applies the deadlines (streams that never end,
//! connections kept alive by PINGs). Flags bit 1 opens that lane again, bit 2 adds a lane
//! when the session wants one, bit 3 answers every waiting request 503 (no backend took
//! it). A backend connection that carried bytes after an answer is never reused, and the
//! lanes never pass `LANES_MAX`.
#![no_main]

use anyedge_region::h2::{H2Session, HELD_BOUND, LANES_MAX, PREFACE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut session = H2Session::new("198.18.128.2".parse().unwrap());
    session.feed(PREFACE, 0);
    let (mut rest, mut now_ns) = (data, 0u64);
    while let [kind, flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = if kind % 3 == 2 { (&tail[..0], tail) } else { tail.split_at(n) };
        rest = next;
        match kind % 3 {
            0 => session.feed(bytes, now_ns),
            1 => {
                let lane = usize::from(flags >> 5) % session.lanes();
                let asked = session.at_backend(lane);
                let room = if asked { session.backend_room(lane).max(1) } else { bytes.len() };
                session.backend_bytes(lane, &bytes[..bytes.len().min(room)], flags & 1 == 1);
                if !asked && !bytes.is_empty() {
                    assert!(!session.backend_reusable(lane), "bytes nobody asked for: the connection is not reused");
                }
            }
            _ => {
                now_ns += u64::from(*len) * 10_000_000;
                session.expire(now_ns);
            }
        }
        if flags & 4 == 4 && session.lanes_wanted() > 0 {
            session.add_lane();
        }
        if flags & 8 == 8 {
            session.answer_waiting(503);
        }
        assert!(session.lanes() <= LANES_MAX, "at most LANES_MAX lanes");
        let closed = session.closed().is_some();
        for lane in 0..session.lanes() {
            let sent = session.next_request(lane);
            assert!(!(closed && sent.is_some()), "nothing goes to the backend after GOAWAY");
        }
        if flags & 2 == 2 {
            // The backend was reset and opened again.
            session.backend_reopened(usize::from(flags >> 5) % session.lanes());
        }
        let _ = session.take_output();
        assert!(session.held() <= HELD_BOUND, "held request bytes within their bound: {}", session.held());
    }
});
