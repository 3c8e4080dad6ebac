//! A BIRD speaker process: where its directory and control socket are, started and
//! restarted with the node that owns it, every one stopped on exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{BIRD, BirdError, check_installed, command};
use crate::error::{Doing, SysError};

/// Where node `node`'s speaker keeps its configuration and control socket.
pub fn speaker_dir(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("bgp").join(crate::layout::sanitize(node))
}

/// Node `node`'s speaker's control socket.
pub fn speaker_socket(state_dir: &Path, node: &str) -> PathBuf {
    speaker_dir(state_dir, node).join("bird.ctl")
}

/// A BIRD process this node runs, restarted when it dies.
pub struct Speaker {
    config: PathBuf,
    pub socket: PathBuf,
    child: Child,
    /// Times it died and was started again.
    pub restarts: u64,
}

impl Speaker {
    /// Writes the configuration under the node's state, has BIRD check it, and starts it.
    pub fn start(state_dir: &Path, node: &str, config: &str) -> Result<Speaker, BirdError> {
        check_installed()?;
        let dir = speaker_dir(state_dir, node);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join("bird.conf");
        std::fs::write(&path, config).at(&path)?;
        let parsed = Command::new(BIRD).arg("-p").arg("-c").arg(&path).output().map_err(not_run)?;
        if !parsed.status.success() {
            let said = String::from_utf8_lossy(&parsed.stderr).trim().to_string();
            return Err(BirdError::Configuration { path, said });
        }
        let socket = speaker_socket(state_dir, node);
        let child = spawn(&path, &socket)?;
        Ok(Speaker { config: path, socket, child, restarts: 0 })
    }

    /// Starts the speaker again if it has died; true when it did.
    pub fn revive(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(None) => false,
            Ok(Some(status)) => {
                tracing::warn!("BGP speaker exited ({status}); starting it again");
                match spawn(&self.config, &self.socket) {
                    Ok(child) => {
                        self.child = child;
                        self.restarts += 1;
                        true
                    }
                    Err(e) => {
                        tracing::warn!("BGP speaker: {e}");
                        false
                    }
                }
            }
            Err(_) => false,
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every speaker process this node has started (for [`stop_all`]).
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Stops this node's speakers and reaps them (the node is told to stop): BIRD closes its
/// sessions, and no process of the lab is left behind, not even a zombie.
pub fn stop_all() {
    let pids = RUNNING.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
    for pid in pids {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// BIRD in the foreground (its log on the node's stderr), killed when this process dies.
/// BIRD could not be started.
fn not_run(source: std::io::Error) -> SysError {
    SysError::NotRun { program: BIRD, hint: " (Debian's bird2)", source }
}

fn spawn(config: &Path, socket: &Path) -> Result<Child, SysError> {
    use std::os::unix::process::CommandExt;
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new(BIRD);
    cmd.arg("-f").arg("-c").arg(config).arg("-s").arg(socket).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; the closure only calls it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(not_run)?;
    if let Ok(mut running) = RUNNING.lock() {
        running.push(child.id());
    }
    Ok(child)
}

/// Waits until a new speaker answers on its control socket.
pub async fn wait_for_socket(socket: &Path) -> Result<(), BirdError> {
    // Long enough for hundreds of speakers starting at once on two cores.
    const SOCKET_WAIT_S: u64 = 30;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(SOCKET_WAIT_S);
    while tokio::time::Instant::now() < deadline {
        if command(socket, "show status").await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BirdError::Silent { socket: socket.to_path_buf(), seconds: SOCKET_WAIT_S })
}
