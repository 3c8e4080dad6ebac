//! Worlds the simulator's tests share.

/// A generated world of `regions` regions (at least three), 30 POPs and 1,500 clients for
/// 2 s, with faults of every kind a partition boundary could cut through: a POP down and
/// back, a CLB node down and back, a backend, a link, a whole region, a migration. Its
/// YAML text.
pub fn partitioned_with_faults(regions: usize) -> String {
    let spec = anyedge_topology::generate::Spec {
        name: "gen".into(),
        pops: 30,
        regions,
        clients: 1500,
        groups: 120,
        web_every: 3,
        clb_nodes: 2,
        duration_s: 2,
        seed: 4,
        internet: false,
    };
    let text = anyedge_topology::generate::generate(&spec).unwrap();
    let t = anyedge_topology::parse_str("gen.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let (pop, far) = (&t.pops[4].name, &t.pops[0].name);
    let (r0, r1, r2) = (&t.regions[0].name, &t.regions[1].name, &t.regions[2].name);
    let backend = t.regions[1].backend_groups[0].backends[0].addr;
    let group = &t.clients[2].name;
    let faults = format!(
        "faults:
  - {{ at: 0.5s, down: pop/{pop} }}
  - {{ at: 0.8s, down: clb/{r2}/1 }}
  - {{ at: 1.0s, down: backend/{backend} }}
  - {{ at: 1.2s, up: pop/{pop} }}
  - {{ at: 1.3s, link: [pop/{far}, region/{r1}], delay: 40ms, for: 300ms }}
  - {{ at: 1.5s, down: region/{r0} }}
  - {{ at: 1.7s, up: clb/{r2}/1 }}
  - {{ at: 1.8s, migrate: client/{group} }}
"
    );
    format!("{text}{faults}")
}
