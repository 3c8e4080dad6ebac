//! `anyedge validate`: a topology file checked, its advice printed as warnings, and a
//! one-line summary of what it holds.

use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path) -> ExitCode {
    let t = match crate::load(file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    for advice in anyedge_topology::advice::advice(&t) {
        eprintln!("{}: warning: {advice}", file.display());
    }
    println!(
        "{}: ok ({} VIPs, {} POPs, {} regions, {} client groups, {} faults)",
        file.display(),
        t.vips.len(),
        t.pops.len(),
        t.regions.len(),
        t.clients.len(),
        t.faults.len()
    );
    ExitCode::SUCCESS
}
