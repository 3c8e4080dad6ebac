//! POPs and CLB nodes follow the route table: a watch stream (gRPC, server streaming)
//! from a control node, resumed from the last applied index on another control node when
//! the one it follows goes away. While no control node answers, the node keeps
//! forwarding with the table it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyedge_control::{Change, RouteTable};
use anyedge_proto::control::WatchRequest;
use anyedge_proto::control::control_client::ControlClient;
use tokio::sync::mpsc;

use crate::layout::CONTROL_PORT;
use crate::plan::Plan;

/// Changes to apply, in log order, each with the table after it, the log index
/// applied so far and how long its update took to arrive.
pub struct Follower {
    pub changes: mpsc::Receiver<(Change, RouteTable)>,
    pub applied: Arc<AtomicU64>,
    /// µs from the control node handing on the last applied update to this node taking
    /// it, by the two nodes' clocks (one clock in a lab; NTP's offset between hosts).
    pub lag_us: Arc<AtomicU64>,
    /// Bumped each time the node's rendered directory was read again and accepted
    /// (SIGHUP, `node::reload`): CLB nodes then take the VIP certificates in it.
    pub reloaded: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Starts following the table (`None` when the lab has no control plane).
pub fn follow(plan: &Plan, initial: RouteTable, conf_dir: &std::path::Path, node: &str) -> Option<Follower> {
    let addrs = plan.control_addrs();
    if addrs.is_empty() {
        return None;
    }
    // Mutual TLS: this node's certificate from `lab up`; without it nothing is watched.
    let tls: Vec<_> = addrs.iter().filter_map(|&(_, a)| crate::pki::client(conf_dir, node, a.into()).ok()).collect();
    if tls.len() != addrs.len() {
        tracing::warn!("{node}: no certificate to follow the route table with");
        return None;
    }
    let (tx, changes) = mpsc::channel(4096);
    let applied = Arc::new(AtomicU64::new(0));
    let index = applied.clone();
    let lag_us = Arc::new(AtomicU64::new(0));
    let lag = lag_us.clone();
    let (conf_dir, node) = (conf_dir.to_path_buf(), node.to_string());
    tokio::spawn(async move {
        let mut table = initial;
        for k in 0.. {
            let (_, addr) = addrs[k % addrs.len()];
            // The certificate read again at every connection: one renewed in the node's
            // directory (and reloaded with SIGHUP) is presented from the next one on.
            let tls =
                crate::pki::client(&conf_dir, &node, addr.into()).unwrap_or_else(|_| tls[k % addrs.len()].clone());
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}:{CONTROL_PORT}"))
                .and_then(|e| e.tls_config(tls));
            let Ok(endpoint) = endpoint else { return };
            let Ok(channel) = endpoint.connect_timeout(Duration::from_millis(300)).connect().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let after = index.load(Ordering::SeqCst);
            let Ok(response) = ControlClient::new(channel).watch(WatchRequest { after }).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(u)) = stream.message().await {
                if u.index <= index.load(Ordering::SeqCst) {
                    continue;
                }
                // Each change goes with the table after it (a new listener's backends).
                let batch: Vec<(Change, RouteTable)> = if !u.table_json.is_empty() {
                    let Ok(new) = serde_json::from_str::<RouteTable>(&u.table_json) else { continue };
                    let changes = table.changes_to(&new);
                    table = new;
                    changes.into_iter().map(|c| (c, table.clone())).collect()
                } else if u.change_json.is_empty() {
                    // Only the index moved (an entry that changes nothing).
                    Vec::new()
                } else {
                    let Ok(change) = serde_json::from_str::<Change>(&u.change_json) else { continue };
                    let _ = table.apply(&change);
                    vec![(change, table.clone())]
                };
                for pair in batch {
                    if tx.send(pair).await.is_err() {
                        return;
                    }
                }
                if u.sent_unix_us != 0 {
                    lag.store(crate::io::clock::unix_us().saturating_sub(u.sent_unix_us), Ordering::SeqCst);
                }
                index.store(u.index, Ordering::SeqCst);
            }
            // The stream ended (its control node went away): resume on the next one.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Some(Follower { changes, applied, lag_us, reloaded: None })
}

/// The next change to apply and the table after it (never, without a control plane).
/// What a follower brings a CLB node: a change, or word that the node's directory was
/// read again and accepted.
pub enum Followed {
    Change(Change, RouteTable),
    Reloaded,
}

/// The next change or reload (never, without a follower).
pub async fn next_followed(follower: &mut Option<Follower>) -> Option<Followed> {
    let Some(Follower { changes, reloaded, .. }) = follower.as_mut() else {
        return std::future::pending().await;
    };
    let Some(reloaded) = reloaded.as_mut() else {
        return changes.recv().await.map(|(c, t)| Followed::Change(c, t));
    };
    tokio::select! {
        c = changes.recv() => c.map(|(c, t)| Followed::Change(c, t)),
        Ok(()) = reloaded.changed() => Some(Followed::Reloaded),
    }
}

pub async fn next_change(follower: &mut Option<Follower>) -> Option<(Change, RouteTable)> {
    match follower.as_mut() {
        Some(f) => f.changes.recv().await,
        None => std::future::pending().await,
    }
}
