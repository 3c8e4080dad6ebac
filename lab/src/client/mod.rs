//! What talks to a running lab from outside its nodes: the load client (`probe`), the
//! benchmarks, the control API client and packet capture.

pub mod bench;
pub mod bulk;
pub mod capture;
pub mod ctl;
pub mod drain;
pub mod failover;
pub mod l7;
pub mod lab;
pub mod probe;
pub mod route_watch;
pub mod routes;

use crate::error::SysError;
use crate::plan::PlanGap;

/// Why a command that talks to a running lab (status, probe, bench, drain, ctl, capture)
/// could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The lab itself: its file, its state, its rendered nodes.
    #[error(transparent)]
    Lab(#[from] crate::setup::SetupError),
    #[error(transparent)]
    Topology(#[from] anyedge_topology::TopologyError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Bird(#[from] crate::bird::BirdError),
    #[error(transparent)]
    Plan(#[from] PlanGap),
    /// The lab of `file` is not running.
    #[error("lab `{lab}` is not up (anyedge lab up {})", file.display())]
    NotUp { lab: String, file: std::path::PathBuf },
    /// What was asked does not fit the lab or the command (a node, a POP, a group or a
    /// class it does not have; options that do not go together).
    #[error("{0}")]
    Unsuited(String),
    /// A node or a tool answered, but not as it must (a refusal, a failed run).
    #[error("{who}: {said}")]
    Answered { who: String, said: String },
    /// Something waited for did not happen in time.
    #[error("{0}")]
    NotInTime(String),
    /// A report or reply that is not the JSON it must be.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// TLS set-up (the probe's client configuration, its handshake).
    #[error("{what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    /// The control API's gRPC endpoint.
    #[error("{what}: {source}")]
    Grpc {
        what: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A QUIC connection of the probe's.
    #[error("{what}: {source}")]
    Quic {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What was asked does not fit the lab: `why`.
fn unsuited(why: String) -> ClientError {
    ClientError::Unsuited(why)
}

/// A server process in a namespace for the length of a benchmark (nginx, `iperf3 -s`,
/// HAProxy), stopped when dropped.
pub(crate) struct Server(pub(crate) std::process::Child);

impl Server {
    /// `program args` in namespace `ns`, listening, or an error with what it said and `hint`.
    pub(crate) fn start(ns: &str, program: &str, args: &[&str], hint: &str) -> Result<Server, ClientError> {
        use crate::error::Doing;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .doing(|| format!("ip netns exec {ns} {program}"))?;
        started(&mut child, program, hint)?;
        Ok(Server(child))
    }
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server a benchmark just started (nginx, `iperf3 -s`), given a moment to listen: an
/// error with what it said on stderr, and `hint`, if it exited instead.
fn started(child: &mut std::process::Child, who: &str, hint: &str) -> Result<(), ClientError> {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let Ok(Some(status)) = child.try_wait() else { return Ok(()) };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    Err(ClientError::Answered { who: who.to_string(), said: format!("exited ({status}): {}{hint}", err.trim()) })
}
