//! The lab's built-in backend servers: a UDP echo, and on TCP either the probe's own
//! framing or HTTP/1.1. Every reply names the backend that answered and what it learned
//! of the client — the TCP peer, the TOA option the CLB put in the SYN when it had to
//! SNAT (TCP SSL, QUIC), and for HTTP the X-Forwarded-For header — so `anyedge probe`
//! can show a user exactly what a backend sees.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyedge_proto::inner;
use anyedge_region::http1::{http_header, looks_like_http};

use crate::app_wire::{REQUEST_LEN, content_length, read_http_head};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

/// What the backend learned of its client, for the reply's trailer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The client the backend believes in: the first X-Forwarded-For address, else the
    /// TOA option's, else the TCP or UDP peer.
    pub client: Option<SocketAddr>,
    /// The X-Forwarded-For header as received (HTTP).
    pub forwarded_for: Option<String>,
    /// The client the TOA option named (TCP SSL, QUIC, HTTP(S) when the CLB sent one).
    pub toa: Option<SocketAddr>,
}

/// What a built-in server adds to a reply: who answered and what it saw
/// (`|be=ADDR|cl=ADDR[|toa=ADDR][|xff=VALUE]`).
pub fn identity_trailer(backend: SocketAddr, seen: &Seen) -> String {
    let mut t = format!("|be={backend}");
    if let Some(c) = seen.client {
        t.push_str(&format!("|cl={c}"));
    }
    if let Some(toa) = seen.toa {
        t.push_str(&format!("|toa={toa}"));
    }
    if let Some(xff) = &seen.forwarded_for {
        // '|' separates the trailer's fields: keep the header from adding one.
        t.push_str(&format!("|xff={}", xff.replace('|', "%7C")));
    }
    t
}

pub async fn udp_echo(sock: Arc<UdpSocket>, addr: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        let mut reply = buf[..n].to_vec();
        let seen = Seen { client: Some(from), ..Seen::default() };
        reply.extend_from_slice(identity_trailer(addr, &seen).as_bytes());
        let _ = sock.send_to(&reply, from).await;
    }
}

/// TCP peers (a CLB node's translated address and port) → the client the TOA option in
/// their SYN named: what a backend reports as its client when the CLB had to SNAT.
#[derive(Clone, Default)]
pub struct ToaSeen(Arc<std::sync::Mutex<HashMap<SocketAddr, SocketAddr>>>);

/// Connections whose TOA a host remembers at once; more start the table afresh.
const TOA_SEEN_MAX: usize = 65_536;

impl ToaSeen {
    /// Notes the TOA option of an inner packet on its way to the host's kernel.
    pub fn note(&self, packet: &[u8]) {
        let (Ok(info), Some((ip, port))) = (inner::parse(packet), inner::read_toa(packet)) else { return };
        if let Ok(mut seen) = self.0.lock() {
            if seen.len() >= TOA_SEEN_MAX {
                seen.clear();
            }
            seen.insert(SocketAddr::new(info.key.src, info.key.src_port), SocketAddr::new(ip, port));
        }
    }

    /// The client the TOA option of TCP peer `peer` named, if it sent one.
    fn of(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.0.lock().ok().and_then(|s| s.get(&peer).copied())
    }
}

/// Serves TCP on `listener` for backend `addr`: each connection speaks HTTP/1.1 when its
/// first bytes are a request line, the probe's framing otherwise. `X-Forwarded-For` is
/// believed only on a connection from one of the CLB nodes' `proxies` addresses that
/// carried no TOA option: a layer-7 listener's, whose header the node wrote. Through
/// `tcp` the peer is the client itself, and through `tcp-ssl` (TOA) the bytes are the
/// client's own: a header there is a claim, and the TOA or the peer names the client.
pub async fn tcp_server(listener: TcpListener, addr: SocketAddr, toa: ToaSeen, proxies: Arc<Vec<IpAddr>>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let toa = toa.of(peer);
        let trust_forwarded_for = toa.is_none() && proxies.contains(&peer.ip());
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd);
            let http = match rd.fill_buf().await {
                Ok(start) => looks_like_http(start),
                Err(_) => return,
            };
            let seen = Seen { client: Some(toa.unwrap_or(peer)), toa, forwarded_for: None };
            let _ = if http {
                serve_http(&mut rd, &mut wr, addr, seen, trust_forwarded_for).await
            } else {
                serve_framed(&mut rd, &mut wr, addr, &seen).await
            };
        });
    }
}

/// The probe's framing: a fixed-size request; the reply echoes it, then a length-prefixed
/// identity trailer.
async fn serve_framed(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    addr: SocketAddr,
    seen: &Seen,
) -> std::io::Result<()> {
    let mut request = [0u8; REQUEST_LEN];
    let trailer = identity_trailer(addr, seen);
    loop {
        rd.read_exact(&mut request).await?;
        let mut reply = request.to_vec();
        reply.extend_from_slice(&(trailer.len() as u16).to_be_bytes());
        reply.extend_from_slice(trailer.as_bytes());
        wr.write_all(&reply).await?;
    }
}

/// HTTP/1.1, kept alive: each request's body comes back as the response body, followed
/// by the identity trailer; the first X-Forwarded-For address is whom the backend takes
/// for its client.
async fn serve_http(
    rd: &mut (impl AsyncBufReadExt + Unpin),
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    addr: SocketAddr,
    conn: Seen,
    trust_forwarded_for: bool,
) -> std::io::Result<()> {
    while let Some(head) = read_http_head(rd).await? {
        let mut body = vec![0u8; content_length(&head)? as usize];
        rd.read_exact(&mut body).await?;
        let forwarded_for = http_header(&head, "x-forwarded-for").map(str::to_string);
        let believed = forwarded_for
            .as_deref()
            .filter(|_| trust_forwarded_for)
            .and_then(|v| v.split(',').next())
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 0));
        let seen = Seen { client: believed.or(conn.client), forwarded_for, toa: conn.toa };
        body.extend_from_slice(identity_trailer(addr, &seen).as_bytes());
        let close = http_header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Anyedge-Backend: {addr}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        wr.write_all(response.as_bytes()).await?;
        wr.write_all(&body).await?;
        if close {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_wire::{HTTP_BODY_MAX, HTTP_HEAD_MAX};

    /// A built-in server that takes 127.0.0.1 for a CLB node's proxy address.
    async fn server() -> SocketAddr {
        server_trusting(&["127.0.0.1"]).await
    }

    async fn server_trusting(proxies: &[&str]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxies = Arc::new(proxies.iter().map(|p| p.parse().unwrap()).collect());
        tokio::spawn(tcp_server(listener, addr, ToaSeen::default(), proxies));
        addr
    }

    #[test]
    fn a_forwarded_for_from_anyone_but_a_clb_proxy_address_is_reported_and_not_believed() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // The client reached the backend itself (a `tcp` listener keeps its address).
            let addr = server_trusting(&["198.18.32.1"]).await;
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = "POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 2\r\n\r\nhi";
            s.write_all(req.as_bytes()).await.unwrap();
            let mut rd = BufReader::new(s);
            let head = read_http_head(&mut rd).await.unwrap().unwrap();
            let mut body = vec![0u8; content_length(&head).unwrap() as usize];
            rd.read_exact(&mut body).await.unwrap();
            let body = String::from_utf8(body).unwrap();
            assert!(body.contains("|cl=127.0.0.1:") && !body.contains("|cl=6.6.6.6"), "the peer is the client: {body}");
            assert!(body.ends_with("|xff=6.6.6.6"), "the header is still shown as received: {body}");
        });
    }

    #[test]
    fn http_requests_get_their_body_back_with_the_forwarded_for_the_backend_received() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let addr = server().await;
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd);
            for (xff, believed) in [("198.18.64.7, 10.0.0.1", "198.18.64.7:0"), ("", "")] {
                let header = if xff.is_empty() { String::new() } else { format!("X-Forwarded-For: {xff}\r\n") };
                let req = format!("POST /probe HTTP/1.1\r\nHost: x\r\n{header}Content-Length: 5\r\n\r\nhello");
                wr.write_all(req.as_bytes()).await.unwrap();
                let head = read_http_head(&mut rd).await.unwrap().unwrap();
                assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
                let mut body = vec![0u8; content_length(&head).unwrap() as usize];
                rd.read_exact(&mut body).await.unwrap();
                let body = String::from_utf8(body).unwrap();
                assert!(body.starts_with(&format!("hello|be={addr}|cl=")), "{body}");
                if xff.is_empty() {
                    // No proxy: the peer is the client, and no header is reported.
                    assert!(body.contains("|cl=127.0.0.1:") && !body.contains("xff="), "{body}");
                } else {
                    assert!(
                        body.contains(&format!("|cl={believed}")) && body.ends_with(&format!("|xff={xff}")),
                        "{body}"
                    );
                }
            }
        });
    }

    #[test]
    fn the_probes_framing_still_works_on_the_same_port() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let addr = server().await;
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = [7u8; REQUEST_LEN];
            s.write_all(&request).await.unwrap();
            let mut echo = [0u8; REQUEST_LEN + 2];
            s.read_exact(&mut echo).await.unwrap();
            assert_eq!(echo[..REQUEST_LEN], request);
            let len = usize::from(u16::from_be_bytes([echo[20], echo[21]]));
            let mut trailer = vec![0u8; len];
            s.read_exact(&mut trailer).await.unwrap();
            assert!(String::from_utf8(trailer).unwrap().starts_with(&format!("|be={addr}|cl=127.0.0.1:")));
        });
    }

    #[test]
    fn an_oversized_or_malformed_http_head_ends_the_connection_without_an_answer() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let addr = server().await;
            for req in [
                format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(HTTP_HEAD_MAX)),
                "POST / HTTP/1.1\r\nContent-Length: banana\r\n\r\n".to_string(),
                format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", HTTP_BODY_MAX + 1),
            ] {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let _ = s.write_all(req.as_bytes()).await;
                let mut got = Vec::new();
                let read = tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut got)).await;
                assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "closed, not left hanging");
                assert!(got.is_empty(), "no answer to a bad request: {:?}", String::from_utf8_lossy(&got));
            }
        });
    }
}
