//! What a listener terminates TLS and QUIC with: the server configurations a VIP's
//! identity ([`crate::identity`]) makes and listeners hold, QUIC's windows, and the
//! helpers that move bytes through a TLS session. It imports nothing else of the crate
//! but [`crate::Shared`]: every layer above may read it.

use std::io::{Read, Write};

/// Why a listener's TLS or QUIC configuration could not be made (rustls's or quinn's own
/// words: a key it cannot sign with, a chain that is not the key's, no TLS 1.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminationError {
    #[error("TLS identity: {0}")]
    Tls(String),
    #[error("QUIC identity: {0}")]
    Quic(String),
}

/// The TLS identity an HTTPS listener presents.
pub type TlsTermination = crate::Shared<rustls::ServerConfig>;

/// The peer broke the TLS protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBroken(pub String);

/// Feeds ciphertext into a TLS session and appends the plaintext it yields to `out`.
pub fn tls_read<D>(
    tls: &mut rustls::ConnectionCommon<D>,
    mut ciphertext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TlsBroken> {
    while !ciphertext.is_empty() {
        tls.read_tls(&mut ciphertext).map_err(|e| TlsBroken(e.to_string()))?;
        tls.process_new_packets().map_err(|e| TlsBroken(e.to_string()))?;
        let mut buf = [0u8; 4096];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break, // WouldBlock: no more plaintext yet
            }
        }
    }
    Ok(())
}

/// Encrypts `plaintext` (may be empty) and appends all pending TLS records to `wire`.
/// rustls takes at most its buffer limit (64 KiB by default) of plaintext at a time: the
/// records are moved to `wire` between writes, so all of it goes; anything rustls would
/// not take stays in `plaintext` (it dropped silently past 64 KiB once).
pub fn tls_write<D>(tls: &mut rustls::ConnectionCommon<D>, plaintext: &mut Vec<u8>, wire: &mut Vec<u8>) {
    let mut written = 0;
    loop {
        while tls.wants_write() {
            if tls.write_tls(wire).is_err() {
                break;
            }
        }
        if written == plaintext.len() || tls.is_handshaking() {
            break;
        }
        match tls.writer().write(&plaintext[written..]) {
            Ok(n) if n > 0 => written += n,
            _ => break,
        }
    }
    plaintext.drain(..written);
}

/// What quinn may hold of a client's unread data: per stream (the credit each stream
/// gets, MAX_STREAM_DATA) and per connection (MAX_DATA); quinn's defaults (1.25 MB a
/// stream, no connection limit) let 100 streams hold 125 MB of one connection.
pub const STREAM_WINDOW: u32 = 128 * 1024;
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// What quinn holds of the node's own data unacknowledged per connection (its default:
/// 10 MB).
pub const SEND_WINDOW: u64 = 1024 * 1024;
const _: () = assert!(STREAM_WINDOW as usize <= CONNECTION_WINDOW as usize);

/// The QUIC server identity of a listener: quinn's configuration, made from a TLS
/// configuration (the certificate) with the application protocols the listener offers.
#[derive(Clone)]
pub struct QuicTermination {
    pub server: std::sync::Arc<quinn_proto::ServerConfig>,
    /// The TLS configuration it was made from, before ALPN: what a rotation matches.
    tls: std::sync::Arc<rustls::ServerConfig>,
    alpn: Vec<Vec<u8>>,
}

impl std::fmt::Debug for QuicTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alpn: Vec<String> = self.alpn.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        f.debug_struct("QuicTermination").field("alpn", &alpn).finish()
    }
}

/// The same termination: one quinn configuration (as `Shared` compares).
impl PartialEq for QuicTermination {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.server, &other.server)
    }
}

impl Eq for QuicTermination {}

impl QuicTermination {
    /// QUIC with `tls`'s certificate (and client verification), offering `alpn` (none:
    /// clients that offer no ALPN only; rustls refuses a QUIC client whose offer shares
    /// nothing with a non-empty list).
    pub fn new(
        tls: std::sync::Arc<rustls::ServerConfig>,
        alpn: &[Vec<u8>],
    ) -> Result<QuicTermination, TerminationError> {
        let mut with_alpn = (*tls).clone();
        with_alpn.alpn_protocols = alpn.to_vec();
        let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(std::sync::Arc::new(with_alpn))
            .map_err(|e| TerminationError::Quic(e.to_string()))?;
        let mut transport = quinn_proto::TransportConfig::default();
        transport
            .stream_receive_window(quinn_proto::VarInt::from_u32(STREAM_WINDOW))
            .receive_window(quinn_proto::VarInt::from_u32(CONNECTION_WINDOW))
            .send_window(SEND_WINDOW);
        let mut server = quinn_proto::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
        server.transport_config(std::sync::Arc::new(transport));
        let server = std::sync::Arc::new(server);
        Ok(QuicTermination { server, tls, alpn: alpn.to_vec() })
    }

    /// The same identity offering `alpn`.
    pub fn with_alpn(&self, alpn: &[Vec<u8>]) -> QuicTermination {
        QuicTermination::new(self.tls.clone(), alpn).unwrap_or_else(|_| self.clone())
    }

    /// What the listener offers in ALPN.
    pub fn alpn(&self) -> &[Vec<u8>] {
        &self.alpn
    }

    /// Made from the same certificate and client verification as `other`.
    pub fn same_identity(&self, other: &QuicTermination) -> bool {
        std::sync::Arc::ptr_eq(&self.tls, &other.tls)
    }
}
