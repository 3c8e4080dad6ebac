//! The backbone over gRPC (`backbone.transport: grpc`): a tonic bidirectional stream per
//! POP and CLB node, over mutual TLS with the lab's CA — a CLB node takes streams only
//! from holders of a POP's certificate. Each frame carries one sealed, encapsulated
//! packet (the cores check it as they do UDP's); impairments are applied before a frame
//! enters the stream, as for UDP.

use crate::error::Doing;
use crate::node::NodeError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use anyedge_proto::grpc::Frame;
use anyedge_proto::grpc::backbone_client::BackboneClient;
use anyedge_proto::grpc::backbone_server::{Backbone, BackboneServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Port of the gRPC backbone on CLB nodes.
/// Frames a stream buffers before the sender waits.
const DEPTH: usize = 4096;

/// A packet from a POP and the way to send replies down that POP's stream.
pub type Upstream = (Vec<u8>, mpsc::Sender<Vec<u8>>);

struct Tunnel {
    to_node: mpsc::Sender<Upstream>,
}

/// Ok when the peer's certificate is a POP's.
fn check_pop<T>(request: &Request<T>) -> Result<(), Status> {
    let chain = request.peer_certs().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = chain.first().ok_or_else(|| Status::unauthenticated("empty certificate chain"))?;
    let who = crate::pki::peer_identity(leaf.as_ref()).map_err(|e| Status::permission_denied(e.to_string()))?;
    if who.role != crate::pki::Role::Pop {
        static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if crate::node::control::worth_logging(n) {
            tracing::warn!("backbone: refused a stream from {}: no POP ({n} refused so far)", who.name);
        }
        return Err(Status::permission_denied(format!("{} is no POP", who.name)));
    }
    Ok(())
}

#[tonic::async_trait]
impl Backbone for Tunnel {
    type TunnelStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

    async fn tunnel(&self, request: Request<Streaming<Frame>>) -> Result<Response<Self::TunnelStream>, Status> {
        check_pop(&request)?;
        let mut inbound = request.into_inner();
        let (down_tx, down_rx) = mpsc::channel::<Vec<u8>>(DEPTH);
        let to_node = self.to_node.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = inbound.next().await {
                if to_node.send((frame.packet, down_tx.clone())).await.is_err() {
                    break;
                }
            }
        });
        let out = ReceiverStream::new(down_rx).map(|packet| Ok(Frame { packet }));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Serves the backbone on a CLB node behind `tls` (its certificate, POP certificates
/// required, replaceable while it serves): frames from every POP arrive on the returned
/// channel.
pub async fn serve(addr: SocketAddr, tls: crate::io::tls::ServerTls) -> Result<mpsc::Receiver<Upstream>, NodeError> {
    let listener = tokio::net::TcpListener::bind(addr).await.doing(|| format!("bind {addr}"))?;
    let (to_node, from_pops) = mpsc::channel(DEPTH);
    // Bounded connections, TCP_NODELAY on each (small frames must not wait for Nagle),
    // TLS with the certificate of the moment (a reload changes it for new connections).
    let incoming = crate::io::tls::incoming(listener, tls);
    let server = tonic::transport::Server::builder().add_service(BackboneServer::new(Tunnel { to_node }));
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!("backbone gRPC server: {e}");
        }
    });
    Ok(from_pops)
}

/// Keeps a stream open from a POP to one CLB node over mutual TLS (reconnecting when it
/// breaks): packets sent on the returned sender go up; replies come out on `down`. The
/// POP's certificate is read from `conf_dir` again at every connection (one renewed and
/// reloaded is presented from the next on), else `tls`, the one it started with.
pub fn connect(
    clb: SocketAddr,
    (tls, conf_dir, pop): (tonic::transport::ClientTlsConfig, std::path::PathBuf, String),
    down: mpsc::Sender<Vec<u8>>,
) -> mpsc::Sender<Vec<u8>> {
    let (up_tx, mut up_rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    tokio::spawn(async move {
        let uri = format!("https://{clb}");
        loop {
            let tls = crate::pki::client(&conf_dir, &pop, clb.ip()).unwrap_or_else(|_| tls.clone());
            let endpoint = tonic::transport::Endpoint::from_shared(uri.clone()).and_then(|e| e.tls_config(tls));
            let Ok(endpoint) = endpoint else { return };
            let Ok(channel) = endpoint.tcp_nodelay(true).connect().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (inner_tx, inner_rx) = mpsc::channel::<Vec<u8>>(DEPTH);
            let frames = ReceiverStream::new(inner_rx).map(|packet| Frame { packet });
            let Ok(response) = BackboneClient::new(channel).tunnel(frames).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut replies = response.into_inner();
            loop {
                tokio::select! {
                    up = up_rx.recv() => match up {
                        Some(packet) => {
                            if inner_tx.send(packet).await.is_err() {
                                break;
                            }
                        }
                        None => return,
                    },
                    reply = replies.message() => match reply {
                        Ok(Some(frame)) => {
                            let _ = down.send(frame.packet).await;
                        }
                        _ => break,
                    },
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    up_tx
}
