//! Waiting for a lab to converge: every BGP session up and every route in place.

use super::*;

const CONVERGE_WAIT_S: u64 = 30;

/// Waits until every BGP session of every speaker is established (they open after
/// BIRD's one-second connect delay) and every client group's transit has a route to each
/// VIP its traffic goes to.
pub(super) fn wait_converged(t: &Topology, plan: &Plan) -> Result<(), SetupError> {
    let dir = state_dir(&plan.lab);
    let speakers: Vec<std::path::PathBuf> = plan
        .nodes
        .iter()
        .filter(|n| {
            matches!(plan.namespaces[n.ns].role, Role::Pop(_) | Role::Transit(_) | Role::Router(_) | Role::Internet)
        })
        .map(|n| crate::bird::speaker_socket(&dir, &n.name))
        .collect();
    // A base, and more per speaker: hundreds of them open their sessions on few cores.
    let wait = Duration::from_secs(CONVERGE_WAIT_S) + Duration::from_millis(100) * speakers.len() as u32;
    let deadline = Instant::now() + wait;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().doing(|| "a runtime".into())?;
    let mut waiting = speakers;
    while !waiting.is_empty() {
        waiting.retain(|socket| {
            // A speaker with no sessions (a POP that publishes no VIP) has nothing to wait for.
            match rt.block_on(crate::bird::command(socket, "show protocols")) {
                Ok(text) => crate::bird::sessions(&text).iter().any(|s| s.bgp != "Established"),
                Err(_) => true,
            }
        });
        if Instant::now() > deadline {
            return Err(SetupError::NotReady {
                what: "BGP sessions not established",
                seconds: wait.as_secs(),
                waiting: format!("{waiting:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if t.internet.has_ases() {
        return wait_settled(t, plan, &rt, (deadline, wait.as_secs()));
    }
    let mut wanted = Vec::new();
    for g in 0..t.clients.len() {
        let Some(ns) = plan.ns_index(&Role::Client(g)).and_then(|c| plan.upstream(c)) else { continue };
        for &k in &t.clients[g].traffic {
            let vip = &t.vips[t.traffic[k].vip];
            if t.pop_order(g, t.traffic[k].vip).is_empty() {
                continue;
            }
            wanted.push((plan.namespaces[ns].name.clone(), format!("{}/32", vip.ipv4)));
            if let Some(v6) = vip.ipv6 {
                wanted.push((plan.namespaces[ns].name.clone(), format!("{v6}/128")));
            }
        }
    }
    wanted.sort();
    wanted.dedup();
    loop {
        wanted.retain(|(ns, prefix)| {
            let family = if prefix.contains(':') { "-6" } else { "-4" };
            let out = Command::new("ip").args(["-n", ns, family, "route", "show", prefix]).output();
            !out.is_ok_and(|o| !o.stdout.is_empty())
        });
        if wanted.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(SetupError::NotReady {
                what: "BGP has not converged",
                seconds: wait.as_secs(),
                waiting: format!("no route yet for {wanted:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_every_route(t, plan, &rt, (deadline, wait.as_secs()))
}

/// Waits until every transit holds a route from every POP that publishes each VIP, in
/// each of its families: the sessions between transits are delayed (the model's one-way
/// delay), so the far POPs' routes arrive last.
pub(super) fn wait_every_route(
    t: &Topology,
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    (deadline, seconds): (Instant, u64),
) -> Result<(), SetupError> {
    let dir = state_dir(&plan.lab);
    let mut waiting: Vec<usize> = (0..t.pops.len()).collect();
    loop {
        waiting.retain(|&x| {
            let socket = crate::bird::speaker_socket(&dir, &format!("transit/{}", t.pops[x].name));
            let routes = rt.block_on(crate::bird::vip_routes(t, x, &socket)).unwrap_or_default();
            let prefixes = t.vips.iter().flat_map(|v| {
                let v6 = v.ipv6.map(|a| format!("{a}/128"));
                std::iter::once(format!("{}/32", v.ipv4)).chain(v6).map(move |prefix| (v, prefix))
            });
            let complete = prefixes.into_iter().all(|(v, prefix)| {
                v.pops.iter().all(|&p| {
                    let pop = format!("pop/{}", t.pops[p].name);
                    routes.iter().any(|r| r.prefix == prefix && r.pop.as_deref() == Some(pop.as_str()))
                })
            });
            !complete
        });
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<String> = waiting.iter().map(|&x| format!("transit/{}", t.pops[x].name)).collect();
            return Err(SetupError::NotReady {
                what: "BGP has not converged",
                seconds,
                waiting: format!("{} lack a POP's route", names.join(", ")),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Over an AS-level internet: waits until every router's routes to the VIPs have not
/// changed for [`SETTLED_MS`] (BGP has converged: no update is still on its way). Which
/// routes those are is BGP's business, not the wait's: `lab catchments` shows them.
pub(super) fn wait_settled(
    t: &Topology,
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    (deadline, seconds): (Instant, u64),
) -> Result<(), SetupError> {
    let dir = state_dir(&plan.lab);
    let sockets: Vec<std::path::PathBuf> = plan
        .nodes
        .iter()
        .filter(|n| matches!(plan.namespaces[n.ns].role, Role::Router(_)))
        .map(|n| crate::bird::speaker_socket(&dir, &n.name))
        .collect();
    let v6 = t.vips.iter().filter_map(|v| v.ipv6.map(|a| format!("{a}/128")));
    let prefixes: Vec<String> = t.vips.iter().map(|v| format!("{}/32", v.ipv4)).chain(v6).collect();
    // The routes, not BIRD's text: it shows when a route arrived converted from its
    // monotonic clock at each asking, a millisecond apart from one asking to the next.
    let snapshot = || -> Vec<Vec<crate::bird::Route>> {
        let mut all = Vec::new();
        for socket in &sockets {
            for prefix in &prefixes {
                let said = rt.block_on(crate::bird::command(socket, &format!("show route all for {prefix}")));
                all.push(said.map(|text| crate::bird::routes(t, 0, &text)).unwrap_or_default());
            }
        }
        all
    };
    let mut last = snapshot();
    let mut since = Instant::now();
    let mut changing = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = snapshot();
        if now != last {
            changing =
                (0..now.len()).filter(|&i| now[i] != last[i]).map(|i| sockets[i / prefixes.len()].clone()).collect();
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(SETTLED_MS) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<String> = changing
                .iter()
                .filter_map(|s| s.parent()?.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(SetupError::NotReady {
                what: "BGP has not converged",
                seconds,
                waiting: format!("routes still changing at {}", names.join(", ")),
            });
        }
    }
}

/// How long the routes must stay the same for BGP to count as converged: several of
/// BIRD's update rounds.
pub(super) const SETTLED_MS: u64 = 1_000;
