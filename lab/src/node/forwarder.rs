//! What every forwarding role of a node shares: what the process hands a forwarder, its
//! backbone authentication, and its TUN device.

use crate::error::SysError;
use crate::node::NodeError;
use std::path::Path;

use crate::node::drops::Drops;
use crate::plan::TUN_NAME;

/// What a forwarding node (POP, CLB) gets from the process around it.
pub struct Forwarder<'a> {
    pub ready: &'a Path,
    /// Apply the file's link impairments (off for benchmarks).
    pub impair: bool,
    /// The route table's watch stream, when the file has a control plane.
    pub follower: Option<crate::node::watch::Follower>,
    pub drops: Drops,
    /// Its backbone keys and QUIC connection-ID keys (from the lab's PKI).
    pub keys: anyedge_ccn::AuthConfig,
    /// Where it writes at run time (its BGP speaker's files).
    pub state_dir: &'a Path,
    /// Its rendered directory: its certificate (the gRPC backbone) and, on CLB nodes, the
    /// VIPs' certificates.
    pub conf_dir: &'a Path,
    pub name: &'a str,
}

/// Backbone authentication for a core whose clock starts now, with this start's salt.
pub fn auth_from_now(keys: anyedge_ccn::AuthConfig) -> Result<anyedge_ccn::AuthConfig, NodeError> {
    let epoch_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Ok(anyedge_ccn::AuthConfig {
        epoch_ns,
        salt: anyedge_ccn::AuthConfig::random_salt().map_err(crate::pki::PkiError::NoRandomness)?,
        ..keys
    })
}

/// The node's TUN device (one queue).
pub fn open_tun() -> Result<tun::AsyncDevice, NodeError> {
    let mut config = tun::Configuration::default();
    config.tun_name(TUN_NAME).up();
    tun::create_as_async(&config)
        .map_err(|e| SysError::Io { what: format!("cannot open TUN device {TUN_NAME}"), source: e.into() }.into())
}
