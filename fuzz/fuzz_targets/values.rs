//! The value parsers topology files and the CLI share: durations (`--duration`,
//! `--migrate-at`, `interval:`), percentages (`loss:`) and bandwidths (`bandwidth:`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ns) = anyedge_topology::parse_duration_ns(text) {
        // A duration printed back in nanoseconds reads as the same duration.
        assert_eq!(anyedge_topology::parse_duration_ns(&format!("{ns}ns")), Ok(ns), "{text:?}");
    }
    if let Ok(p) = anyedge_topology::parse_percent(text) {
        assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{text:?} gave {p}");
    }
    let _ = anyedge_topology::parse_bandwidth_bps(text);
});
