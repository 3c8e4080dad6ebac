//! The fuzz targets' shared harness (also run, seeded, by `tests/fuzz_parsers.rs`).

pub mod harness;
