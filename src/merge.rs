//! `anyedge merge`: part files of a sharded `chaos` or `sweep` run combined into the
//! report one process would have written (see `shard.rs` for what makes parts belong
//! together).

use anyhow::anyhow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{chaos, shard, sweep};

pub fn run(parts: &[PathBuf], json: &Path, html: Option<&Path>) -> ExitCode {
    let merged = match shard::command_of(parts) {
        Ok(c) if c == "sweep" => shard::gather::<sweep::RunResult>(parts).and_then(|p| sweep::merge(p, json, html)),
        Ok(_) if html.is_some() => Err(anyhow!("--html: only a sweep's merge writes a page")),
        Ok(_) => shard::gather::<chaos::Ran>(parts)
            .and_then(|p| chaos::merge(p, json))
            .map(|failed| if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }),
        Err(e) => Err(e),
    };
    merged.unwrap_or_else(|e| {
        eprintln!("merge: {e}");
        ExitCode::from(2)
    })
}
