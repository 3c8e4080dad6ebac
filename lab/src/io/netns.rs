//! Namespaces, links, addresses and routes, made with iproute2 (`ip`), and the one way
//! back: deleting a lab's namespaces takes its links and TUN devices with them.

use crate::error::{Doing, SysError};
use std::process::Command;

/// Runs `ip ARGS`; an error names the command and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), SysError> {
    let out = Command::new("ip").args(args).output().map_err(|source| SysError::NotRun {
        program: "ip",
        hint: " (is iproute2 installed?)",
        source,
    })?;
    if out.status.success() { Ok(()) } else { Err(SysError::refused(format!("ip {}", args.join(" ")), &out.stderr)) }
}

/// `ip` commands gathered to run together, a process per namespace rather than per
/// command: a lab of a few hundred namespaces runs tens of thousands of them, and one
/// `ip` call each took minutes.
#[derive(Debug, Default)]
pub struct IpBatch {
    /// Commands in the host's namespace, in order.
    host: Vec<String>,
    /// Commands in each namespace, in order; namespaces in the order first named.
    inside: Vec<(String, Vec<String>)>,
}

impl IpBatch {
    /// `ip ARGS` in the host's namespace, run before every namespace's commands.
    pub fn host(&mut self, args: &[&str]) {
        self.host.push(args.join(" "));
    }

    /// `ip -n NS ARGS`.
    pub fn inside(&mut self, ns: &str, args: &[&str]) {
        let line = args.join(" ");
        match self.inside.iter_mut().rev().find(|(n, _)| n == ns) {
            Some((_, lines)) => lines.push(line),
            None => self.inside.push((ns.to_string(), vec![line])),
        }
    }

    /// Runs the host's commands, then each namespace's; the first that fails stops it,
    /// and the error names that command and what `ip` said.
    pub fn run(self) -> Result<(), SysError> {
        run_batch(&[], &self.host)?;
        for (ns, lines) in &self.inside {
            run_batch(&["-n", ns], lines)?;
        }
        Ok(())
    }
}

/// `ip [-n NS] -batch -` over `lines`.
fn run_batch(global: &[&str], lines: &[String]) -> Result<(), SysError> {
    use std::io::Write;
    if lines.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("ip")
        .args(global)
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| SysError::NotRun { program: "ip", hint: " (is iproute2 installed?)", source })?;
    let text = lines.join("\n") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).doing(|| format!("ip {} -batch", global.join(" ")))?;
    }
    let out = child.wait_with_output().doing(|| format!("ip {} -batch", global.join(" ")))?;
    if out.status.success() {
        return Ok(());
    }
    // `ip` names the failed line: "Command failed -:N".
    let said = String::from_utf8_lossy(&out.stderr);
    let failed = said
        .split("Command failed -:")
        .nth(1)
        .and_then(|r| r.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok())
        .and_then(|n| lines.get(n.checked_sub(1)?));
    let command =
        format!("ip {}{}", global.iter().map(|g| format!("{g} ")).collect::<String>(), failed.map_or("-batch", |l| l));
    Err(SysError::refused(command, &out.stderr))
}

/// `ip netns exec` could not be started.
fn netns_exec(source: std::io::Error) -> SysError {
    SysError::NotRun { program: "ip netns exec", hint: "", source }
}

/// Runs `ip -n NS ARGS`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<(), SysError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Loads an nftables `ruleset` (nft's own syntax) into namespace `ns`.
pub fn nft_in(ns: &str, ruleset: &str) -> Result<(), SysError> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(netns_exec)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes()).doing(|| format!("nft in {ns}"))?;
    }
    let out = child.wait_with_output().doing(|| format!("nft in {ns}"))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let missing = said.contains("nft") && (said.contains("No such file") || said.contains("not found"));
    let hint = if missing { " (install Debian's nftables: apt-get install nftables)" } else { "" };
    Err(SysError::Refused { command: format!("nft in {ns}"), said: said.trim().to_string(), hint })
}

/// Writes sysctls inside a namespace, in one process (through /proc, no sysctl binary
/// needed).
pub fn sysctls_in(ns: &str, keys: &[(&str, &str)]) -> Result<(), SysError> {
    let script: Vec<String> =
        keys.iter().map(|(key, value)| format!("echo {value} > /proc/sys/{}", key.replace('.', "/"))).collect();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-e", "-c", &script.join("; ")])
        .output()
        .map_err(netns_exec)?;
    if out.status.success() {
        Ok(())
    } else {
        let keys: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Err(SysError::refused(format!("sysctl {} in {ns}", keys.join(" ")), &out.stderr))
    }
}

/// Writes a sysctl inside a namespace.
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<(), SysError> {
    sysctls_in(ns, &[(key, value)])
}

/// Namespaces whose names start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return vec![] };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Deletes a namespace, killing whatever still runs in it first (a BGP speaker whose node
/// was killed outright, say): nothing of a lab outlives it.
pub fn delete(ns: &str) -> Result<(), SysError> {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    ip(&["netns", "del", ns])
}

/// A network namespace of a unit test's own, with its loopback up, removed however the
/// test ends.
#[cfg(test)]
pub struct TestNs(pub String);

#[cfg(test)]
impl TestNs {
    /// `ae-TAG-PID`, made now.
    pub fn new(tag: &str) -> TestNs {
        let ns = TestNs(format!("ae-{tag}-{}", std::process::id()));
        ip(&["netns", "add", &ns.0]).unwrap();
        ip_in(&ns.0, &["link", "set", "lo", "up"]).unwrap();
        ns
    }
}

#[cfg(test)]
impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = delete(&self.0);
    }
}
