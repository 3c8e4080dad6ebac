//! Every wire parser (CCN header, seal envelope, inner IPv4/IPv6 with TCP options, TOA,
//! NAT and NAT64 rewrites, liveness probes, sync messages) on arbitrary bytes, with the
//! round-trip oracles of `harness::wire`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| anyedge_fuzz::harness::wire(data));
