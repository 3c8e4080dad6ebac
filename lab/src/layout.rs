//! The lab's fixed layout, in one place every other module imports: the ports nodes
//! listen on, and the files of a lab's state directory (markers, sockets, logs).

use crate::error::{Doing, SysError};
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
pub fn private_dir(dir: &Path) -> Result<(), SysError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).at(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).at(dir)
}

/// Writes `bytes` to `path`, readable by root only (0600 also over an existing file):
/// keys, certificates, rendered configurations.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SysError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).at(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).at(path)?;
    f.write_all(bytes).at(path)
}

/// The folder of ready markers: a node writes its own once it has bound everything.
pub fn ready_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("ready")
}

/// A node's ready marker.
pub fn ready_marker(state_dir: &Path, node: &str) -> PathBuf {
    ready_dir(state_dir).join(sanitize(node))
}

pub fn mark_ready(path: &Path) -> Result<(), SysError> {
    tracing::info!("ready");
    std::fs::write(path, b"ready\n").at(path)
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

/// How far a node trusts a file it reads: a secret (a private key, backbone keys) that
/// nobody but its owner may read; or configuration (node.json, the topology,
/// certificates) that nobody but its owner may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTrust {
    Secret,
    Config,
}

/// The most a node reads of one file: the topology's own bound (keys and certificates
/// are a few KB).
pub const NODE_FILE_BYTES_MAX: u64 = anyedge_topology::FILE_BYTES_MAX;

/// Why a file or directory is not owned as a node's must be: by the user running it, or
/// by root.
fn owner_refused(uid: u32) -> Option<String> {
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    (uid != me && uid != 0).then(|| format!("owned by uid {uid}, not by this user ({me}) or root"))
}

/// Whether the process at the other end of a node's Unix socket (status, control API)
/// may use it: root or the node's own user, from the kernel's credentials of the peer
/// (`SO_PEERCRED`), whatever the socket file's mode ended up being.
pub fn local_peer_allowed(stream: &tokio::net::UnixStream) -> bool {
    stream.peer_cred().is_ok_and(|peer| owner_refused(peer.uid()).is_none())
}

/// Reads one of a node's files, after checking what it is on the opened descriptor (so
/// what is checked is what is read): a regular file (not a FIFO, which would block the
/// node forever, nor a device like /dev/zero, which never ends), at most
/// [`NODE_FILE_BYTES_MAX`], owned by this user or root, writable by nobody else, and for
/// a [`FileTrust::Secret`] readable by nobody else.
pub fn read_node_file(path: &Path, trust: FileTrust) -> Result<String, SysError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let at = |why: String| SysError::bad_file(path, why);
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    if !meta.file_type().is_file() {
        return Err(at("not a regular file".into()));
    }
    if meta.len() > NODE_FILE_BYTES_MAX {
        return Err(at(format!("{} bytes: a node reads at most {NODE_FILE_BYTES_MAX}", meta.len())));
    }
    if let Some(why) = owner_refused(meta.uid()) {
        return Err(at(why));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(at(format!("mode {mode:03o}: writable by group or others (chmod go-w)")));
    }
    if trust == FileTrust::Secret && mode & 0o077 != 0 {
        return Err(at(format!("mode {mode:03o}: a secret must be its owner's alone (chmod 600)")));
    }
    let mut text = String::new();
    file.take(NODE_FILE_BYTES_MAX + 1).read_to_string(&mut text).at(path)?;
    Ok(text)
}

/// A node's directory (its configuration, its keys): a directory owned by this user or
/// root that nobody else may write into (they could swap a file in).
pub fn check_node_dir(dir: &Path) -> Result<(), SysError> {
    use std::os::unix::fs::MetadataExt;
    let at = |why: String| SysError::bad_file(dir, why);
    let meta = std::fs::metadata(dir).at(dir)?;
    if !meta.is_dir() {
        return Err(at("not a directory".into()));
    }
    if let Some(why) = owner_refused(meta.uid()) {
        return Err(at(why));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(at(format!("mode {mode:03o}: writable by group or others (chmod go-w)")));
    }
    Ok(())
}

/// Directories the system owns: a node's state directory (which it fills, and cleans)
/// is never one of them, nor inside the ones that hold the system itself.
const SYSTEM_DIRS: [&str; 21] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc", "/root", "/run",
    "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/tmp",
];
const SYSTEM_TREES: [&str; 9] = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys"];

/// Why `state` cannot be a node's state directory, if it cannot: relative, with `..`,
/// a system directory, or inside one of the system's own trees (`/etc/…`, `/usr/…`
/// are the packages'; `/proc/…`, `/sys/…`, `/dev/…` are the kernel's).
pub fn state_dir_refused(state: &Path) -> Option<String> {
    use std::path::Component;
    if !state.is_absolute() {
        return Some(format!("state `{}` is not an absolute path", state.display()));
    }
    if state.components().any(|c| c == Component::ParentDir) {
        return Some(format!("state `{}` has `..` in it", state.display()));
    }
    let normal: PathBuf = state.components().collect();
    if SYSTEM_DIRS.iter().any(|d| normal == Path::new(d)) {
        return Some(format!("state `{}` is a system directory", state.display()));
    }
    let usr = normal.starts_with("/usr") && !normal.starts_with("/usr/local/var");
    if usr || SYSTEM_TREES.iter().any(|d| normal.starts_with(d)) {
        return Some(format!("state `{}` is inside a system directory", state.display()));
    }
    None
}
