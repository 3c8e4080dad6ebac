//! A lab node's drop counters: every packet its core refuses, by reason, shared between
//! the forwarding loop and the status socket.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Drops(Arc<Mutex<BTreeMap<&'static str, u64>>>, Sections);

/// Further sections of a node's status (`sync`, `quic`), by name.
type Sections = Arc<Mutex<BTreeMap<&'static str, serde_json::Value>>>;

impl Drops {
    /// A CLB node's connection-table sync counters, for `status`.
    pub fn set_sync(&self, stats: &anyedge_region::sync::SyncStats) {
        self.set_section(
            "sync",
            serde_json::json!({
                "messages_sent": stats.messages_sent,
                "bytes_sent": stats.bytes_sent,
                "messages_received": stats.messages_received,
                "bytes_received": stats.bytes_received,
                "flows_adopted": stats.flows_adopted,
                "queue_overflow": stats.queue_overflow,
            }),
        );
    }

    /// A CLB node's QUIC connections now and handshakes so far, for `status`.
    pub fn set_quic(&self, (connections, handshakes): (usize, u64)) {
        self.set_section("quic", serde_json::json!({ "connections": connections, "handshakes": handshakes }));
    }

    /// A backend host's last packet its security groups dropped, and why (`status`).
    pub fn set_denied(&self, why: &str) {
        self.set_section("denied", serde_json::Value::String(why.to_string()));
    }

    /// A CLB node's view of its backends' health (`status`).
    pub fn set_health(&self, health: &std::collections::BTreeMap<String, &'static str>) {
        self.set_section("health", serde_json::json!(health));
    }

    fn set_section(&self, name: &'static str, value: serde_json::Value) {
        if let Ok(mut s) = self.1.lock() {
            s.insert(name, value);
        }
    }

    /// The status sections set so far.
    pub fn sections(&self) -> BTreeMap<&'static str, serde_json::Value> {
        self.1.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Counts a core's refusal, if it refused.
    pub fn count<E: Reason>(&self, result: Result<(), E>) {
        if let Err(reason) = result
            && let Ok(mut counts) = self.0.lock()
        {
            *counts.entry(reason.name()).or_default() += 1;
        }
    }

    /// The counts so far, as a JSON object (`{"no_route": 3}`).
    pub fn to_json(&self) -> serde_json::Value {
        let counts = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        serde_json::json!(counts)
    }
}

/// A core's drop reason, by its stable name.
pub trait Reason {
    fn name(&self) -> &'static str;
}

impl Reason for anyedge_pop::DropReason {
    fn name(&self) -> &'static str {
        anyedge_pop::DropReason::name(self)
    }
}

impl Reason for anyedge_region::DropReason {
    fn name(&self) -> &'static str {
        anyedge_region::DropReason::name(self)
    }
}

impl Reason for anyedge_region::gateway::GatewayDrop {
    fn name(&self) -> &'static str {
        anyedge_region::gateway::GatewayDrop::name(self)
    }
}

impl Reason for anyedge_ccn::AuthError {
    fn name(&self) -> &'static str {
        anyedge_ccn::AuthError::name(self)
    }
}
