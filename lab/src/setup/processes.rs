//! The node processes of a lab: started from their rendered directories, waited on
//! until ready, stopped (only if still ours), and the lab taken down.

use super::*;

pub(super) fn start_nodes(plan: &Plan, state: &mut State, exe: &Path) -> Result<(), SetupError> {
    for node in plan.nodes.iter().filter(|n| !n.name.starts_with("client/")) {
        let pid = spawn_node(plan, exe, &node.name)?;
        state.pids.insert(node.name.clone(), pid);
    }
    Ok(())
}

pub(crate) fn spawn_node(plan: &Plan, exe: &Path, name: &str) -> Result<u32, SetupError> {
    use std::os::unix::process::CommandExt;
    let node = plan.node(name).ok_or_else(|| SetupError::NoSuchNode(name.to_string()))?;
    let ns = &plan.namespaces[node.ns].name;
    let dir = state_dir(&plan.lab);
    // Appended: a restarted node's log keeps what it said before it died.
    let log_path = node_log(&dir, name);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).at(&log_path)?;
    let _ = std::fs::remove_file(ready_marker(&dir, name));
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["node", "--config"])
        .arg(render::node_dir(&render::nodes_dir(&dir), name))
        .stdin(Stdio::null())
        .stdout(log.try_clone().at(&log_path)?)
        .stderr(log)
        // Its own process group: the lab outlives the shell that brought it up.
        .process_group(0)
        .spawn()
        .map_err(|source| SysError::NotRun { program: "ip netns exec", hint: "", source })?;
    Ok(child.id())
}

/// How long `lab up` waits for its nodes: a base, and more per node, as they start on
/// however few cores the host has (each a process, a router's a BGP speaker too).
const READY_WAIT_S: u64 = 20;
const READY_WAIT_PER_NODE_MS: u64 = 250;

pub(crate) fn wait_ready(plan: &Plan, state: &State) -> Result<(), SetupError> {
    let dir = state_dir(&plan.lab);
    let wait =
        Duration::from_secs(READY_WAIT_S) + Duration::from_millis(READY_WAIT_PER_NODE_MS) * state.pids.len() as u32;
    let deadline = Instant::now() + wait;
    loop {
        let missing: Vec<&String> = state.pids.keys().filter(|n| !ready_marker(&dir, n).exists()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (name, &pid) in &state.pids {
            if !alive(pid) {
                let log = std::fs::read_to_string(node_log(&dir, name)).unwrap_or_default();
                return Err(SetupError::NodeExited { node: name.clone(), log: log.trim().to_string() });
            }
        }
        if Instant::now() > deadline {
            let seconds = wait.as_secs();
            return Err(SetupError::NotReady { what: "nodes not ready", seconds, waiting: format!("{missing:?}") });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process that exists and is not a zombie waiting to be reaped (an exited node's
/// parent, `lab up`, is long gone; whoever adopted it may reap it late).
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether `pid` is still this lab's node `name` (its command line says `node --config
/// DIR/nodes/NAME`): a PID the lab recorded may since belong to anyone.
pub(super) fn is_lab_node(pid: u32, name: &str, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let after = |flag: &str| args.windows(2).find(|w| w[0] == flag.as_bytes()).map(|w| w[1]);
    let config = render::node_dir(&render::nodes_dir(dir), name);
    args.contains(&&b"node"[..]) && after("--config") == Some(config.as_os_str().as_encoded_bytes())
}

/// Stops node `name` of the lab at `dir` if `pid` is still it; says so when it is not.
pub(crate) fn stop_node(pid: u32, name: &str, dir: &Path) {
    if is_lab_node(pid, name, dir) {
        stop(pid);
    } else if alive(pid) {
        eprintln!("{name}: PID {pid} is no longer this lab's node; not signalled");
    }
}

pub(super) fn stop(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !alive(pid.as_raw() as u32) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Stops every process and deletes every namespace of a lab.
pub(super) fn teardown(state: &State) {
    let dir = state_dir(&state.lab);
    for (name, &pid) in &state.pids {
        stop_node(pid, name, &dir);
    }
    let mut names = state.namespaces.clone();
    for leftover in netns::list_with_prefix(&format!("{}-", state.lab)) {
        if !names.contains(&leftover) {
            names.push(leftover);
        }
    }
    for ns in names {
        let _ = netns::delete(&ns);
    }
    let _ = std::fs::remove_dir_all(state_dir(&state.lab));
}
