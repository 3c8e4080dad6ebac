//! Report files as `anyedge report FILE --html OUT` reads them back: any JSON, shaped like
//! a report or not, renders a page or nothing, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let page = anyedge_sim::html::render(&value, None);
        assert!(page.starts_with("<!doctype html>"), "a page");
    }
});
