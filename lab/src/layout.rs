//! The lab's fixed layout, in one place every other module imports: the ports nodes
//! listen on, and the files of a lab's state directory (markers, sockets, logs).

use std::path::{Path, PathBuf};

/// CCN tunnel (UDP) on POPs and CLB nodes.
pub const TUNNEL_PORT: u16 = anyedge_proto::pcap::TUNNEL_PORT;
/// CLB node ↔ backend host tunnel (UDP).
pub const BACKEND_PORT: u16 = anyedge_proto::pcap::BACKEND_PORT;
/// Backbone gRPC streams (`backbone.transport: grpc`).
pub const GRPC_PORT: u16 = 6083;
/// Connection-table sync between the CLB nodes of a region (UDP, region network).
pub const SYNC_PORT: u16 = anyedge_proto::pcap::SYNC_PORT;
/// Liveness probes answered by POPs and CLB nodes (`anyedge_proto::liveness`).
pub const HEALTH_PORT: u16 = anyedge_proto::pcap::HEALTH_PORT;
/// Prometheus `/metrics` on every node's namespace.
pub const METRICS_PORT: u16 = 6091;
/// Raft between control nodes and the watch API (gRPC over mutual TLS).
pub const CONTROL_PORT: u16 = 6095;

/// Names a namespace or a state file may carry: letters, digits, `.`, `_`, `-`.
pub fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' }).collect()
}

/// Where labs keep their state: `ANYEDGE_LAB_DIR`, or /run/anyedge/labs.
pub fn labs_dir() -> PathBuf {
    std::env::var_os("ANYEDGE_LAB_DIR").map_or_else(|| PathBuf::from("/run/anyedge/labs"), PathBuf::from)
}

/// One lab's state directory.
pub fn state_dir(lab: &str) -> PathBuf {
    labs_dir().join(lab)
}

/// Makes what this process creates from now on private to root (files 0600, directories
/// 0700): a lab's state, logs, Raft logs, keys and sockets are nobody else's to read.
pub fn private_files() {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and its parents) readable by root only, tightening it if it exists.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes `bytes` to `path`, readable by root only (0600 also over an existing file):
/// keys, certificates, rendered configurations.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The folder of ready markers: a node writes its own once it has bound everything.
pub fn ready_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("ready")
}

/// A node's ready marker.
pub fn ready_marker(state_dir: &Path, node: &str) -> PathBuf {
    ready_dir(state_dir).join(sanitize(node))
}

pub fn mark_ready(path: &Path) -> Result<(), String> {
    tracing::info!("ready");
    std::fs::write(path, b"ready\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// A node's status socket (`status` answers one JSON line).
pub fn node_socket(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("ctl").join(format!("{}.sock", sanitize(node)))
}

/// A node's log file.
pub fn node_log(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join(format!("{}.log", sanitize(node)))
}

/// Control node `id`'s API socket (the control API without TLS, root-only).
pub fn api_socket(state_dir: &Path, id: u8) -> PathBuf {
    state_dir.join("api").join(format!("control-{id}.sock"))
}

/// Where control node `id` keeps its Raft log.
pub fn log_path(state_dir: &Path, id: u8) -> PathBuf {
    state_dir.join(format!("control-{id}.redb"))
}
