//! `anyedge ctl FILE …`: the control API of a running lab, over each control node's
//! Unix socket — status of every node, the route table, and writes that return once
//! committed (sent to the leader, found by asking; retried across a leader change).

use crate::client::ClientError;
use crate::client::unsuited;
use crate::error::Doing;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyedge_control::Change;
use anyedge_proto::control::control_client::ControlClient;
use anyedge_proto::control::{RoutesRequest, StatusReply, StatusRequest, WriteRequest};
use serde::Serialize;
use tonic::transport::Channel;

use crate::plan::{Plan, Role};

/// How long a write keeps looking for a leader that will commit it.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct CommitMs {
    pub last: f64,
    pub p50: f64,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// The leader, only when it answers itself (a dead leader its followers still name
    /// is no leader).
    pub leader: Option<String>,
    /// The highest term any answering node is in.
    pub term: u64,
    /// Control nodes answering, and whether they are a majority of the members.
    pub answering: usize,
    pub quorum: bool,
    pub commit: u64,
    pub members: Vec<String>,
    /// Applied log index of every control, POP and CLB node (`null`: not answering).
    pub applied: BTreeMap<String, Option<u64>>,
    /// How long writes take from proposal to commit on the leader, in ms: the last one and
    /// the median of its last 64 (`null`: no leader answering, or no write yet).
    pub commit_ms: Option<CommitMs>,
    /// How long the last update each POP and CLB node applied took from its control node
    /// to it, in ms (by the two nodes' clocks: one clock in a lab): the backbone's delay
    /// and the node's own queue. `null`: not answering.
    pub lag_ms: BTreeMap<String, Option<f64>>,
}

async fn connect(path: PathBuf) -> Result<ControlClient<Channel>, ClientError> {
    let shown = path.display().to_string();
    let grpc = |what: String| move |source| ClientError::Grpc { what, source };
    let endpoint = tonic::transport::Endpoint::try_from("http://control.invalid").map_err(grpc(shown.clone()))?;
    let channel = endpoint
        .connect_timeout(Duration::from_millis(500))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(grpc(shown))?;
    Ok(ControlClient::new(channel))
}

fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?)
}

struct Lab {
    plan: Plan,
    state_dir: PathBuf,
    ids: Vec<u8>,
}

fn lab(file: &Path) -> Result<Lab, ClientError> {
    let t = anyedge_topology::load(file)?;
    let c = t
        .control
        .as_ref()
        .ok_or_else(|| unsuited(format!("{}: no `control:` section (the lab has no control plane)", file.display())))?;
    let ids = (1..=c.nodes).collect();
    let plan = Plan::new(&t);
    let state_dir = crate::layout::state_dir(&plan.lab);
    if crate::setup::read_state(&plan.lab).is_none() {
        return Err(ClientError::NotUp { lab: plan.lab.clone(), file: file.to_path_buf() });
    }
    Ok(Lab { plan, state_dir, ids })
}

async fn statuses(lab: &Lab) -> Vec<(u8, Option<StatusReply>)> {
    let mut out = Vec::new();
    for &id in &lab.ids {
        let socket = crate::layout::api_socket(&lab.state_dir, id);
        let reply = match connect(socket).await {
            Ok(mut client) => tokio::time::timeout(Duration::from_millis(500), client.status(StatusRequest {}))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.into_inner()),
            Err(_) => None,
        };
        out.push((id, reply));
    }
    out
}

/// The leader at the highest term, if it answered and says so itself: followers may
/// still name a leader that has died.
fn leader_of(statuses: &[(u8, Option<StatusReply>)]) -> Option<(u64, u64, u64)> {
    statuses
        .iter()
        .filter_map(|(id, s)| s.as_ref().map(|s| (u64::from(*id), s)))
        .filter(|(id, s)| s.leader == *id)
        .max_by_key(|(_, s)| (s.term, s.commit))
        .map(|(_, s)| (s.leader, s.term, s.commit))
}

pub fn status(file: &Path) -> Result<ClusterStatus, ClientError> {
    let lab = lab(file)?;
    runtime()?.block_on(async {
        let all = statuses(&lab).await;
        let leader = leader_of(&all);
        let (mut applied, mut lag_ms) = (BTreeMap::new(), BTreeMap::new());
        for (id, s) in &all {
            applied.insert(format!("control/{id}"), s.as_ref().map(|s| s.applied));
        }
        for n in &lab.plan.nodes {
            let follows = matches!(lab.plan.namespaces[n.ns].role, Role::Pop(_) | Role::Clb { .. });
            if follows {
                let answer = crate::client::lab::ask_node(&lab.plan.lab, &n.name);
                applied.insert(n.name.clone(), answer.as_ref().and_then(|a| a["applied"].as_u64()));
                lag_ms.insert(n.name.clone(), answer.and_then(|a| a["applied_lag_ms"].as_f64()));
            }
        }
        let commit = all.iter().filter_map(|(_, s)| s.as_ref()).map(|s| s.commit).max().unwrap_or(0);
        let answering = all.iter().filter(|(_, s)| s.is_some()).count();
        let term = all.iter().filter_map(|(_, s)| s.as_ref()).map(|s| s.term).max().unwrap_or(0);
        let commit_ms = leader
            .and_then(|(l, _, _)| all.iter().find(|(id, _)| u64::from(*id) == l))
            .and_then(|(_, s)| s.as_ref())
            .filter(|s| s.commit_p50_us > 0)
            .map(|s| CommitMs { last: s.last_commit_us as f64 / 1000.0, p50: s.commit_p50_us as f64 / 1000.0 });
        Ok(ClusterStatus {
            leader: leader.map(|(l, _, _)| format!("control/{l}")),
            term,
            answering,
            quorum: answering * 2 > lab.ids.len(),
            commit,
            members: lab.ids.iter().map(|id| format!("control/{id}")).collect(),
            applied,
            commit_ms,
            lag_ms,
        })
    })
}

/// The route table as the leader has it (else any answering node), with its index.
pub fn routes(file: &Path) -> Result<serde_json::Value, ClientError> {
    let lab = lab(file)?;
    runtime()?.block_on(async {
        let all = statuses(&lab).await;
        let mut order: Vec<u8> = all.iter().filter(|(_, s)| s.is_some()).map(|(id, _)| *id).collect();
        if let Some((l, _, _)) = leader_of(&all) {
            order.sort_by_key(|&id| u64::from(id) != l);
        }
        for id in order {
            let Ok(mut client) = connect(crate::layout::api_socket(&lab.state_dir, id)).await else { continue };
            if let Ok(r) = client.routes(RoutesRequest {}).await {
                let r = r.into_inner();
                let table: serde_json::Value = serde_json::from_str(&r.table_json)
                    .map_err(|source| ClientError::Json { what: format!("control/{id}'s table"), source })?;
                return Ok(serde_json::json!({ "index": r.index, "from": format!("control/{id}"), "table": table }));
            }
        }
        Err(ClientError::NotInTime("no control node answers".into()))
    })
}

/// Why a write did not commit.
#[derive(Debug)]
pub enum WriteError {
    /// Refused before it was proposed; nothing changed. Names the field.
    Invalid(String),
    /// No leader committed it in time.
    Unavailable(String),
}

/// Proposes `change` at the leader and returns the index it committed at.
pub fn write(file: &Path, change: &Change) -> Result<u64, WriteError> {
    let lab = lab(file).map_err(|e| WriteError::Unavailable(e.to_string()))?;
    let rt = runtime().map_err(|e| WriteError::Unavailable(e.to_string()))?;
    let change_json = serde_json::to_string(change).map_err(|e| WriteError::Invalid(e.to_string()))?;
    rt.block_on(async {
        let started = Instant::now();
        let mut last = "no leader".to_string();
        while started.elapsed() < WRITE_DEADLINE {
            let all = statuses(&lab).await;
            if let Some((leader, _, _)) = leader_of(&all)
                && let Ok(mut client) = connect(crate::layout::api_socket(&lab.state_dir, leader as u8)).await
            {
                match client.write(WriteRequest { change_json: change_json.clone() }).await {
                    Ok(r) => return Ok(r.into_inner().index),
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        return Err(WriteError::Invalid(s.message().to_string()));
                    }
                    Err(s) => last = s.message().to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(WriteError::Unavailable(format!("not committed within {} s: {last}", WRITE_DEADLINE.as_secs())))
    })
}
