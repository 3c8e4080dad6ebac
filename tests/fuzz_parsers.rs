//! Randomised fuzzing of every packet parser and the cores fed from the wire: random
//! bytes and mutated valid packets must give errors, never panics. Seeded, so a failure
//! replays; the iteration count is sized for CI. The same harness runs coverage-guided
//! under libFuzzer in `fuzz/` (`fuzz/run`).

#[path = "../fuzz/src/harness.rs"]
mod harness;

use anyedge_ccn::ComponentRng;
use harness::{Cores, Sender};

const ITERATIONS: usize = 200_000;

fn mutate(rng: &mut ComponentRng, seed_packets: &[Vec<u8>]) -> Vec<u8> {
    if rng.chance(0.2) {
        let len = rng.below(80) as usize;
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut p = seed_packets[rng.below(seed_packets.len() as u64) as usize].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(3) {
            0 if !p.is_empty() => {
                let i = rng.below(p.len() as u64) as usize;
                p[i] = rng.next_u64() as u8;
            }
            1 => p.truncate(rng.below(p.len() as u64 + 1) as usize),
            _ => p.push(rng.next_u64() as u8),
        }
    }
    p
}

#[test]
fn packet_parsers_never_panic_on_fuzzed_input() {
    let seeds = harness::valid_packets();
    let mut rng = ComponentRng::new(0xf022, "fuzz/parsers");
    for _ in 0..ITERATIONS {
        harness::wire(&mutate(&mut rng, &seeds));
    }
}

#[test]
fn cores_drop_fuzzed_packets_without_panicking() {
    let seeds = harness::valid_packets();
    let mut rng = ComponentRng::new(0xf023, "fuzz/cores");
    let mut cores = Cores::new();
    for i in 0..ITERATIONS as u64 {
        let p = mutate(&mut rng, &seeds);
        // Every sender in turn, sealed half the time.
        for who in 0..8u8 {
            let sealed = if rng.chance(0.5) { 0 } else { 0x80 };
            cores.step(i, Sender::of(who | sealed), &p);
        }
    }
    assert!(cores.through_gateway > 1_000, "garbage reached the gateways' translation ({})", cores.through_gateway);
    assert!(cores.opened > 10_000, "sealed garbage got past the tag check to the parsers ({} times)", cores.opened);
}

/// The fuzzers' checked-in seeds are today's valid packets (`ANYEDGE_WRITE_SEEDS=1`
/// writes them again after a format change).
#[test]
fn the_fuzz_corpus_seeds_are_todays_valid_packets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, name, bytes) in harness::seeds() {
        let path = root.join(target).join(&name);
        if std::env::var_os("ANYEDGE_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(on_disk, bytes, "{} is stale: ANYEDGE_WRITE_SEEDS=1 cargo test --test fuzz_parsers", path.display());
    }
}

/// The cores seed sent straight to the CLB node gets through the layer-7 listener's SYN
/// cookie: its SYN draws a SYN-ACK, its ACK (acknowledgement 0: "what the SYN-ACK said")
/// sets up a proxied connection, so the fuzzer starts past the cookie, in the proxy.
#[test]
fn the_cores_seed_sent_straight_gets_past_the_syn_cookie_into_the_proxy() {
    let mut cores = Cores::new();
    for (i, p) in harness::valid_packets().iter().enumerate() {
        cores.step(i as u64 * 1_000_000, Sender::of(3), p);
    }
    assert_eq!(cores.clb.syn_cookies_sent(), 1, "the SYN to the HTTP listener drew a cookie");
    assert_eq!(cores.clb.proxied_connections(), 1, "the ACK returning it set up the proxied connection");
}

/// A CCN header carrying a super-packet's option word goes through the wire oracles
/// (its round trip re-emits the inner packet from after the option word, not from the
/// end of the fixed header).
#[test]
fn a_super_packets_envelope_goes_through_the_wire_oracles() {
    let packets = harness::valid_packets();
    let segmented = packets.iter().find(|p| p.len() > 16 && p[0] >> 4 == 1 && p[0] & 0x2 != 0);
    let segmented = segmented.expect("the seeds hold a CCN header with a segment option");
    harness::wire(segmented);
}
