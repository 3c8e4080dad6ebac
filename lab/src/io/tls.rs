//! The TLS of the nodes' gRPC servers (the control plane's Raft and API, the gRPC
//! backbone), done here rather than inside tonic so the certificate can change while the
//! server runs: each connection's handshake takes the configuration current when it
//! arrives. After a reload, new connections are offered the new certificate, and open
//! ones keep their session. tonic still sees each peer's certificate chain
//! (`Request::peer_certs`): it reads it from the TLS stream it is handed.

use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};

use crate::io::limits::{Counted, HANDSHAKE_TIMEOUT, limited};

/// A server's TLS configuration, replaceable while it serves.
#[derive(Clone)]
pub struct ServerTls(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl ServerTls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls(Arc::new(RwLock::new(config)))
    }

    /// Connections that arrive from now on handshake with `config`.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        match self.0.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The connections `listener` accepts (within [`limited`]'s caps), each once its TLS
/// handshake is done: handshakes run side by side, and one not done within
/// [`HANDSHAKE_TIMEOUT`] is dropped, so a slow peer holds up no one.
pub fn incoming(listener: TcpListener, tls: ServerTls) -> impl Stream<Item = std::io::Result<TlsStream<Counted>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(limited(listener));
        while let Some(conn) = accepted.next().await {
            let Ok(conn) = conn else { continue };
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx) = (tokio_rustls::TlsAcceptor::from(tls.current()), tx.clone());
            tokio::spawn(async move {
                if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
