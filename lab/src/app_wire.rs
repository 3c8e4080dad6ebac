//! What the load client (`anyedge probe`) and the backends' built-in servers say to each
//! other, in one place both sides read: the probe's request framing and the bounded
//! HTTP/1.x head and body reading.

use tokio::io::AsyncBufReadExt;

use anyedge_region::http1::http_header;

/// Bytes of a probe request: magic, sequence number, send time (µs since start).
pub const REQUEST_LEN: usize = 20;

/// The largest UDP request `--size` asks for (an IPv6 UDP payload that still fits).
pub const REQUEST_MAX: usize = 65_000;

/// Longest HTTP request head the built-in server reads (the CLB's own limit).
pub const HTTP_HEAD_MAX: usize = anyedge_region::http1::HEAD_MAX;
/// Longest HTTP request body the built-in server reads.
pub const HTTP_BODY_MAX: u64 = 64 * 1024;

/// Reads one HTTP/1.x head (through its blank line), at most `HTTP_HEAD_MAX` bytes.
/// `Ok(None)` at a clean end of the stream before a request.
pub async fn read_http_head(rd: &mut (impl AsyncBufReadExt + Unpin)) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    loop {
        let buf = rd.fill_buf().await?;
        if buf.is_empty() {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        // A line at a time, never more than the bound: a head without line ends cannot grow.
        let line_end = buf.iter().position(|&b| b == b'\n').map(|i| i + 1);
        let take = line_end.unwrap_or(buf.len()).min(HTTP_HEAD_MAX + 1 - head.len());
        head.extend_from_slice(&buf[..take]);
        rd.consume(take);
        if head.len() > HTTP_HEAD_MAX {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head too long"));
        }
        if head.ends_with(b"\r\n\r\n") {
            return String::from_utf8(head)
                .map(Some)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "head is not UTF-8"));
        }
    }
}

/// A head's Content-Length (0 when absent); an error past `HTTP_BODY_MAX` or unreadable.
pub fn content_length(head: &str) -> std::io::Result<u64> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    match http_header(head, "content-length") {
        None => Ok(0),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= HTTP_BODY_MAX => Ok(n),
            Ok(_) => Err(bad("body too long")),
            Err(_) => Err(bad("bad Content-Length")),
        },
    }
}
