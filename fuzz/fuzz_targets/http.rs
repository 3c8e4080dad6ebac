//! HTTP/1 request streams through the layer-7 proxy's framer (heads rewritten with the
//! proxy's own X-Forwarded-For, ambiguous framing refused, bodies passed by
//! Content-Length). The first byte picks where the
//! stream is cut into reads: the framer must give the same bytes, or fail the same way,
//! however the stream arrives.
#![no_main]

use std::net::IpAddr;

use anyedge_region::http1::{
    CLIENT_CLAIMS, Framer, NotHttp, http_head_end, http_header, looks_like_http, plain_authority, with_forwarded_for,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let client: IpAddr = "198.18.64.7".parse().unwrap();
    let whole = {
        let (mut f, mut out) = (Framer::new(false), Vec::new());
        f.feed(stream, client, &mut out).map(|()| out)
    };
    let pieces = {
        let (mut f, mut out) = (Framer::new(false), Vec::new());
        let step = usize::from(cut).max(1);
        stream.chunks(step).try_for_each(|c| f.feed(c, client, &mut out)).map(|()| out)
    };
    // Compared by length and result, so a finding prints a line, not the stream.
    let shape = |r: &Result<Vec<u8>, NotHttp>| -> Option<(usize, u64)> {
        r.as_ref().ok().map(|b| (b.len(), b.iter().map(|&x| u64::from(x)).sum()))
    };
    assert!(whole == pieces, "the same stream read {cut} bytes at a time: {:?} against {:?}", shape(&whole), shape(&pieces));
    if let Some(end) = http_head_end(stream) {
        let head = &stream[..end];
        if let Ok((rewritten, _body)) = with_forwarded_for(head, client) {
            // Rewritten, it is one head that names the client once, as the proxy saw it,
            // with nothing else claiming who the client is; and it passes a second time.
            let text = String::from_utf8(rewritten.clone()).expect("a rewritten head is text");
            assert!(text.ends_with("\r\n\r\n"));
            let forwarded = http_header(&text, "x-forwarded-for").expect("the header is there");
            assert_eq!(forwarded, client.to_string());
            let claims = text.split("\r\n").skip(1).filter(|l| {
                let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                CLIENT_CLAIMS.contains(&name.as_str())
            });
            assert_eq!(claims.count(), 1, "only the proxy's own header: {text:?}");
            if let Some(host) = http_header(&text, "host") {
                assert!(plain_authority(host), "a Host passed on is an authority: {host:?}");
            }
            assert_eq!(http_head_end(&rewritten), Some(rewritten.len()), "exactly one head");
            assert!(with_forwarded_for(&rewritten, client).is_ok(), "a rewritten head is plain HTTP/1.x");
        }
    }
    let _ = looks_like_http(stream);
});
