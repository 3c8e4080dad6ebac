//! `anyedge generate`: a world of the size asked for, as topology text (a file, or
//! standard output).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::duration_ns;

#[derive(clap::Args)]
pub struct Args {
    /// POPs (1–2,000).
    #[arg(long, default_value_t = 250)]
    pub pops: usize,
    /// Regions (1–500, at most --pops), each with its own VIP published at every POP.
    #[arg(long, default_value_t = 25)]
    pub regions: usize,
    /// Clients in all (--groups to 4,194,302), numbered from 100.64.0.0/10.
    #[arg(long, default_value_t = 40_000)]
    pub clients: u64,
    /// Client groups, one at each of the largest cities (1–8,551).
    #[arg(long, default_value_t = 4_000)]
    pub groups: usize,
    /// Every N-th group (by size) also browses over TCP (0: none).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub web_every: usize,
    /// CLB nodes per region (1–8).
    #[arg(long, default_value_t = 2)]
    pub clb_nodes: u16,
    /// Simulated time (whole seconds: 20s, 2m).
    #[arg(long, value_name = "TIME", default_value = "20s", value_parser = duration_ns)]
    pub duration: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the default AS-level internet drawn for the world into the file (tier-1
    /// networks and exchanges, an access network per group, each POP's upstreams), to read
    /// and edit. Without it the file names no networks and the same internet is drawn
    /// from its seed when it is read: BGP over it decides each group's POP either way, in
    /// `sim`, `catchments` and the lab.
    #[arg(long)]
    pub internet: bool,
    /// The topology's name.
    #[arg(long, default_value = "generated")]
    pub name: String,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Writes the world `args` describe to `--out` (none: standard output).
pub fn run(args: Args) -> ExitCode {
    let spec = anyedge_topology::generate::Spec {
        name: args.name,
        pops: args.pops,
        regions: args.regions,
        clients: args.clients,
        groups: args.groups,
        web_every: args.web_every,
        clb_nodes: args.clb_nodes,
        duration_s: args.duration / 1_000_000_000,
        seed: args.seed,
        internet: args.internet,
    };
    write(&spec, args.duration.is_multiple_of(1_000_000_000), args.out.as_deref())
}

/// Writes the world `spec` describes to `out` (none: standard output); `whole`: the
/// duration asked for is whole seconds, as the generator writes it.
fn write(spec: &anyedge_topology::generate::Spec, whole: bool, out: Option<&Path>) -> ExitCode {
    let written = anyedge_topology::generate::generate(spec).and_then(|text| {
        if !whole {
            return Err("--duration: whole seconds (20s, 2m)".to_string());
        }
        match out {
            Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display())),
            None => std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()).map_err(|e| e.to_string()),
        }
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anyedge generate: {e}");
            ExitCode::from(2)
        }
    }
}
