//! `anyedge render`, `node --config [--check]` and `host up|down`: nodes from their
//! rendered directories, on a host or in a lab's namespace (see `anyedge_lab::setup`).

use std::path::Path;
use std::process::ExitCode;

use anyedge_lab::setup::{self, render};

use crate::HostCommand;

/// Runs the node rendered in `config`, or (`check`) only checks its directory: exit 2
/// with the reason when it could not start from it.
pub fn node(config: &Path, check: bool) -> ExitCode {
    if check {
        return match render::load_node(config) {
            Ok(r) => {
                println!("{}: ok ({}, state in {})", config.display(), r.config.node, r.config.state.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    match anyedge_lab::node::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node {}: {e}", config.display());
            ExitCode::FAILURE
        }
    }
}

/// Builds or removes one host's part of a deployment rendered with `--hosts`.
pub fn host(action: &HostCommand) -> ExitCode {
    let (done, what, host) = match action {
        HostCommand::Up { dir, host } => (setup::host_up(dir, host), "up", host),
        HostCommand::Down { dir, host } => (setup::host_down(dir, host), "down", host),
    };
    match done {
        Ok(namespaces) => {
            println!("host {host} is {what}: {} namespaces", namespaces.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("host {host}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Renders every node of `file` into `out`.
pub fn render(file: &Path, out: &Path, opts: &render::RenderOptions) -> ExitCode {
    match render::render(file, out, opts) {
        Ok(nodes) => {
            println!("{}: {} nodes rendered into {}", file.display(), nodes.len(), out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
