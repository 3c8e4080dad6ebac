//! SIGHUP: a POP or CLB node reads its rendered directory again and, when everything in
//! it checks out (as at start: `setup::render::load_node`), applies what changed in the
//! topology's route table — weights, bindings, listeners — to its running core, the way
//! a change from the control plane is applied: flow tables, connections and keys stay.
//! A directory that does not check out is refused with the reason in the log, and the
//! node runs on as it was. Where the file has a control plane, the route table is the
//! control plane's: a reload then only re-reads certificates (the watch stream presents
//! the new one at its next connection). Either way a CLB node's listeners terminate TLS
//! and QUIC with the VIP certificates of the directory read from then on: new
//! connections handshake with them, open ones keep their session (`Clb::replace_identity`).
//!
//! Every node's gRPC server (a control node's Raft and API, a CLB node's gRPC backbone)
//! likewise presents its directory's certificate to new connections after a reload
//! ([`server_tls_on_reload`], on the same checked reload); open streams keep theirs. Nodes with nothing else to
//! reload (backend hosts, egress nodes, transits, control nodes) still check their
//! directory on SIGHUP and say so, and run on: a SIGHUP never stops a node.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyedge_control::{Change, RouteTable};
use tokio::sync::mpsc;

use crate::node::watch::Follower;

/// The changes a POP or CLB node applies: its control plane's (`follower`, when the file
/// has one) and, without one, its own file's on every SIGHUP.
pub fn attach(follower: Option<Follower>, conf_dir: PathBuf, initial: RouteTable, name: String) -> Follower {
    let (reloads, reloaded) = tokio::sync::watch::channel(0u64);
    match follower {
        Some(mut f) => {
            tokio::spawn(on_hangup(conf_dir, None, reloads, name));
            f.reloaded = Some(reloaded);
            f
        }
        None => {
            let (tx, changes) = mpsc::channel(4096);
            tokio::spawn(on_hangup(conf_dir, Some((initial, tx)), reloads, name));
            Follower {
                changes,
                applied: Arc::new(AtomicU64::new(0)),
                lag_us: Arc::new(AtomicU64::new(0)),
                reloaded: Some(reloaded),
            }
        }
    }
}

/// Waits for SIGHUP, again and again; with `table`, sends the changes from it to the
/// reloaded file's table.
async fn on_hangup(
    conf_dir: PathBuf,
    mut table: Option<(RouteTable, mpsc::Sender<(Change, RouteTable)>)>,
    reloads: tokio::sync::watch::Sender<u64>,
    name: String,
) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("{name}: no SIGHUP handler: reload by restarting");
        return;
    };
    while hangup.recv().await.is_some() {
        let rendered = match crate::setup::render::load_node(&conf_dir) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{name}: reload refused, running on as before: {e}");
                continue;
            }
        };
        reloads.send_modify(|n| *n += 1);
        let Some((current, tx)) = table.as_mut() else {
            tracing::info!("{name}: reloaded {}: the route table is the control plane's", conf_dir.display());
            continue;
        };
        let new = anyedge_topology::route_table::route_table(&rendered.topology);
        let changes = current.changes_to(&new);
        tracing::info!("{name}: reloaded {}: {} route-table changes", conf_dir.display(), changes.len());
        for change in changes {
            if tx.send((change, new.clone())).await.is_err() {
                return;
            }
        }
        *current = new;
    }
}

/// After every reload that checked out (`reloaded` changes): `node`'s gRPC server takes
/// the certificate and key of its directory for the connections that arrive from then on.
pub fn server_tls_on_reload(
    conf_dir: PathBuf,
    node: String,
    tls: crate::io::tls::ServerTls,
    mut reloaded: tokio::sync::watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        while reloaded.changed().await.is_ok() {
            match crate::pki::server(&conf_dir, &node) {
                Ok(config) => {
                    tls.replace(config);
                    tracing::info!("{node}: gRPC certificate read again: new connections are offered it");
                }
                Err(e) => tracing::warn!("{node}: gRPC certificate kept: {e}"),
            }
        }
    });
}

/// SIGHUP for a node that applies nothing of its directory while it runs but its gRPC
/// certificate (control nodes): the directory is checked, the outcome said, and the node
/// runs on. The returned receiver changes after each reload that checked out.
pub fn check_on_hangup(conf_dir: PathBuf, name: String) -> tokio::sync::watch::Receiver<u64> {
    let (reloads, reloaded) = tokio::sync::watch::channel(0u64);
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("{name}: no SIGHUP handler: reload by restarting");
        return reloaded;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match crate::setup::render::load_node(&conf_dir) {
                Ok(_) => {
                    reloads.send_modify(|n| *n += 1);
                    tracing::info!("{name}: reloaded {}: nothing else to apply while running", conf_dir.display());
                }
                Err(e) => tracing::warn!("{name}: reload refused, running on as before: {e}"),
            }
        }
    });
    reloaded
}
