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

pub(crate) fn load(file: &Path) -> Result<(Topology, Plan), SetupError> {
    let t = topology::load(file)?;
    let plan = Plan::new(&t);
    Ok((t, plan))
}

pub fn read_state(lab: &str) -> Option<State> {
    let text = std::fs::read_to_string(state_dir(lab).join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn write_state(state: &State) -> Result<(), SetupError> {
    let dir = state_dir(&state.lab);
    crate::layout::private_files();
    crate::layout::private_dir(&dir)?;
    let path = dir.join("state.json");
    let text = serde_json::to_string_pretty(state).map_err(|source| SetupError::Json { path: path.clone(), source })?;
    Ok(std::fs::write(&path, text).at(&path)?)
}

/// `up`, with [`LabOptions`].
/// An error naming the privilege `what` needs, unless this process runs as root.
pub fn require_root(what: &str) -> Result<(), SetupError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 { Ok(()) } else { Err(SetupError::NotRoot { what: what.to_string() }) }
}
