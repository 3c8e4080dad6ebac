//! What a lab leaves on disk while it runs (its state file), and the checks before one
//! starts: its topology read and planned, the right to make namespaces.

use super::*;

/// What a running lab is made of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub lab: String,
    pub topology: PathBuf,
    pub namespaces: Vec<String>,
    /// Node name → process id.
    pub pids: BTreeMap<String, u32>,
}

pub(crate) fn load(file: &Path) -> Result<(Topology, Plan), String> {
    let t = topology::load(file).map_err(|e| e.to_string())?;
    let plan = Plan::new(&t);
    Ok((t, plan))
}

pub fn read_state(lab: &str) -> Option<State> {
    let text = std::fs::read_to_string(state_dir(lab).join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn write_state(state: &State) -> Result<(), String> {
    let dir = state_dir(&state.lab);
    crate::layout::private_files();
    crate::layout::private_dir(&dir)?;
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("state.json"), text).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `up`, with [`LabOptions`].
/// An error naming the privilege `what` needs, unless this process runs as root.
pub fn require_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(format!(
            "{what} needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN: network namespaces, veth links, TUN devices): run it with sudo"
        ))
    }
}
