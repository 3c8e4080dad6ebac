//! One path's law, what the backbone's area model and the internet's per-place model
//! both rest on: a round trip is a fixed overhead plus a stretch times the fibre round
//! trip over the route, straight or through the hub where the networks of two areas meet.

use crate::geo::{FIBER_KM_PER_S, Location, great_circle_km};

/// The exchange points a detour may pass through: where the networks of areas without
/// direct peering meet.
pub const HUBS: [(&str, Location); 12] = [
    ("london", [51.507, -0.128]),
    ("frankfurt", [50.110, 8.682]),
    ("amsterdam", [52.370, 4.895]),
    ("marseille", [43.296, 5.370]),
    ("ashburn", [39.044, -77.487]),
    ("miami", [25.762, -80.192]),
    ("los-angeles", [34.052, -118.244]),
    ("singapore", [1.352, 103.820]),
    ("hong-kong", [22.319, 114.169]),
    ("tokyo", [35.690, 139.692]),
    ("mumbai", [19.076, 72.878]),
    ("dubai", [25.205, 55.271]),
];

pub fn hub_location(name: &str) -> Option<Location> {
    HUBS.iter().find(|(n, _)| *n == name).map(|&(_, at)| at)
}

/// How one pair of areas is reached: round trip = `overhead_ms` + `stretch` × the fibre
/// round trip over the path (straight, or through the hub `via`).
#[derive(Debug, Clone, PartialEq)]
pub struct PathParams {
    pub stretch: f64,
    pub overhead_ms: f64,
    /// A hub's name (one of `HUBS`).
    pub via: Option<String>,
}

impl PathParams {
    pub fn direct(stretch: f64, overhead_ms: f64) -> PathParams {
        PathParams { stretch, overhead_ms, via: None }
    }

    /// Path length in km between `a` and `b`, through the hub when there is one.
    pub(crate) fn path_km(&self, a: Location, b: Location) -> f64 {
        match self.via.as_deref().and_then(hub_location) {
            Some(hub) => great_circle_km(a, hub) + great_circle_km(hub, b),
            None => great_circle_km(a, b),
        }
    }

    pub(crate) fn rtt_ms(&self, a: Location, b: Location) -> f64 {
        self.overhead_ms + self.stretch * fibre_rtt_ms(self.path_km(a, b))
    }
}

/// The fibre round trip over `km` at stretch 1, in ms.
pub fn fibre_rtt_ms(km: f64) -> f64 {
    2.0 * km / FIBER_KM_PER_S * 1e3
}
