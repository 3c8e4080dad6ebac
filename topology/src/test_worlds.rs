//! Worlds unit tests walk: every shipped topology, and generated ones.
use crate::Topology;

/// Every topology in `topologies/`, by path.
pub(crate) fn shipped() -> Vec<(String, Topology)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut worlds: Vec<(String, Topology)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.display().to_string(), crate::load(&p).unwrap()))
        .collect();
    worlds.sort_by(|a, b| a.0.cmp(&b.0));
    worlds
}

/// The world `anyedge generate` makes of `spec`.
pub(crate) fn generated(spec: &crate::generate::Spec) -> Topology {
    crate::parse_str(&spec.name, &crate::generate::generate(spec).unwrap()).unwrap()
}
