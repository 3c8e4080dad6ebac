//! Topology text as `anyedge validate`, `sim` and `lab up` read it: parsing and validation
//! must answer every input with a topology or errors naming line and field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = anyedge_topology::parse_str("fuzz.yaml", text) {
            // Every error says where.
            assert!(!e.diagnostics.is_empty(), "an error without a diagnostic");
        }
    }
});
