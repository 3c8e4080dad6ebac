//! `anyedge report`: a JSON report (`sim --report`) rendered as an HTML page with plots.

use std::path::Path;
use std::process::ExitCode;

pub fn run(json: &Path, html: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(json) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", json.display());
            return ExitCode::from(2);
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}: not a report ({e})", json.display());
            return ExitCode::from(2);
        }
    };
    match crate::write_file(html, &anyedge_sim::html::render(&value, None)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
