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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// The certificate (DER) the server at `addr` offers a new connection from a holder
    /// of `client`'s certificate in `dir`; the connection, kept open.
    async fn offered(
        dir: &std::path::Path,
        client: &str,
        addr: std::net::SocketAddr,
    ) -> (Vec<u8>, tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let pki = crate::pki::dir(dir);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pki.join("ca.pem")).unwrap()).unwrap();
        let name = crate::layout::sanitize(client);
        let cert = CertificateDer::from_pem_file(pki.join(format!("{name}.pem"))).unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.join(format!("{name}.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server, tcp).await.unwrap();
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        (der, tls)
    }

    #[test]
    fn a_replaced_certificate_is_offered_to_new_connections_and_open_ones_stay() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("anyedge-tls-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let nodes = [("control/1".to_string(), Some(local)), ("pop/paris".to_string(), None)];
            let ca = crate::pki::Ca::generate(Default::default()).unwrap();
            crate::pki::issue_with(&dir, &ca, &nodes, &[]).unwrap();
            let file = |dir: &std::path::Path| std::fs::read(crate::pki::dir(dir).join("control-1.pem")).unwrap();
            let (first, tls) = (file(&dir), ServerTls::new(crate::pki::server(&dir, "control/1").unwrap()));
            let listener = TcpListener::bind((local, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut accepted = Box::pin(incoming(listener, tls.clone()));
            let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(Ok(s)) = accepted.next().await {
                    let _ = held_tx.send(s);
                }
            });
            let (old_der, mut old_conn) = offered(&dir, "pop/paris", addr).await;
            let mut old_server = held.recv().await.unwrap();
            // A new certificate from the same CA, read again as a reload does.
            crate::pki::issue_nodes(&dir, &ca, &nodes).unwrap();
            assert_ne!(file(&dir), first);
            tls.replace(crate::pki::server(&dir, "control/1").unwrap());
            let (new_der, _new_conn) = offered(&dir, "pop/paris", addr).await;
            let _new_server = held.recv().await.unwrap();
            assert_ne!(old_der, new_der, "the new connection is offered the new certificate");
            let pem = |der: &[u8]| {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                CertificateDer::from_pem_slice(der).unwrap().to_vec()
            };
            assert_eq!(old_der, pem(&first), "the first one was the old file's");
            assert_eq!(new_der, pem(&file(&dir)), "the new one is the new file's");
            // The connection opened before the replacement still carries data both ways.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            old_conn.write_all(b"still here").await.unwrap();
            let mut got = [0u8; 10];
            old_server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"still here");
            old_server.write_all(b"ok").await.unwrap();
            let mut back = [0u8; 2];
            old_conn.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"ok");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
