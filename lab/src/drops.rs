//! A lab node's drop counters: every packet its core refuses, by reason, shared between
//! the forwarding loop and the status socket.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Drops(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl Drops {
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
