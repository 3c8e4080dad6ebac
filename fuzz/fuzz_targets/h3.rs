//! HTTP/3 at a QUIC listener (`anyedge_region::h3`): arbitrary bytes on the client's
//! streams (request streams, its control and QPACK streams, and streams of any kind) and
//! arbitrary backend answers, in arbitrary order. Nothing panics, a session that closed
//! takes no more input, and the session never holds more requests than its bound.
//!
//! Input: records of [kind, stream, flags, len, bytes…]; kind 0 feeds a client stream,
//! kind 1 feeds the backend's answer to a request stream.
#![no_main]

use anyedge_region::h3::{H3Session, REQUESTS_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((mut session, _first)) = H3Session::new("198.18.128.2".parse().unwrap(), [3, 7, 11]) else { return };
    let mut rest = data;
    while let [kind, stream, flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        // Client streams: bidirectional 0, 4, 8…; unidirectional 2, 6, 10…
        let id = u64::from(*stream);
        let fin = flags & 1 == 1;
        if kind & 1 == 0 {
            if session.feed(id, bytes, fin).is_err() {
                return;
            }
        } else {
            session.backend_bytes(id, bytes, fin);
        }
        while session.take_request().is_some() {}
        for s in session.writable() {
            while let Some((out, end)) = session.take_output(s) {
                if out.is_empty() || end {
                    break;
                }
            }
        }
        let _ = session.take_resets();
        assert!(session.requests() <= REQUESTS_MAX, "the exchange table's bound");
    }
});
