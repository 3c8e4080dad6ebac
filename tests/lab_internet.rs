//! A default internet in the lab, at full size: hundreds of BIRD speakers. Its own test
//! binary, which cargo runs after every other lab test's: tearing down 449 namespaces
//! leaves the kernel work to do, and a lab test right after it once lost 80 % of its
//! probes.

mod common;

use common::*;
use std::time::Duration;

/// A default internet in the lab: `anyedge generate --internet` for 4 POPs and 10 groups
/// writes out the 243 routers the default internet draws (the tier-1 networks present at
/// up to tens of places each). They come up, each network's routers on a segment of their own
/// with a route reflector, and every group takes the POP and AS path the simulator gives
/// it, before and after a POP dies.
#[test]
fn a_default_internet_of_hundreds_of_routers_routes_every_group_in_the_lab_as_in_the_simulator() {
    if !may_run() {
        return;
    }
    let _one = serial();
    let spec = anyedge_topology::generate::Spec::drawn_internet("drawn", 4, 10);
    let text = anyedge_topology::generate::generate(&spec).unwrap();
    let lab = Lab::up_topology("dflt", &text, |t| t, &[]);
    let t = anyedge_topology::load(&lab.file).unwrap();
    let plan = anyedge_lab::plan::Plan::new(&t);
    let routers = plan.namespaces.iter().filter(|n| matches!(n.role, anyedge_lab::plan::Role::Router(_))).count();
    assert!(routers > 200, "{routers} routers");
    let before = sim_ways(&lab.file, &[]);
    assert_eq!(lab_ways(&lab), before, "every group's POP and AS path with every POP up");
    let victim = t.pops.iter().map(|p| p.name.clone()).max_by_key(|p| before.iter().filter(|(x, _)| x == p).count());
    let victim = victim.expect("a POP");
    assert!(lab.anyedge(&["lab", "kill", &format!("pop/{victim}")]).status.success());
    let want = sim_ways(&lab.file, &[victim.as_str()]);
    assert_ne!(want, before, "{victim}'s withdrawal moves someone");
    let got = poll_until_equal(&want, Duration::from_secs(20), Duration::from_millis(250), || lab_ways(&lab));
    assert_eq!(got, want, "every group's POP and AS path with {victim} withdrawn");
    let moved = (0..t.clients.len()).find(|&g| before[g].0 == victim).expect("a group of the victim's");
    let target = format!("{}:7000", t.vips[0].ipv4);
    let r = lab.probe(&t.clients[moved].name, &target, "udp", 2);
    assert!(r["received"].as_u64().unwrap_or(0) > 0, "{} answered through its new POP: {r}", t.clients[moved].name);
}
