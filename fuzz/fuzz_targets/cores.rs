//! The POP, CLB and egress cores stepped with a fuzzer-chosen sequence of packets from
//! each of their peers, sealed with real keys (or not), with time advancing. Input: records
//! of `[selector, length, bytes…]`; the selector's low 3 bits name the sender, bit 7 sends
//! it unsealed, bits 3–6 advance the clock by that many milliseconds first.
#![no_main]

use anyedge_fuzz::harness::{Cores, Sender};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cores = Cores::new();
    let mut now = 0u64;
    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        now += u64::from(selector >> 3 & 0x0f) * 1_000_000;
        cores.step(now, Sender::of(*selector), &tail[..n]);
        rest = &tail[n..];
    }
});
