//! `anyedge man --out DIR`: the man pages, generated from the command line's own
//! definition (clap_mangen): `anyedge.1` and `anyedge-COMMAND.1` for every command a user
//! runs. `man/` in the repository holds them as generated (a test fails when they drift)
//! and the Debian package installs them.

use anyhow::anyhow;
use std::path::Path;

use clap::CommandFactory;

/// Writes every page into `out`; returns how many.
pub fn write_all(out: &Path) -> anyhow::Result<usize> {
    write_pages(out, &pages())
}

/// Writes generated pages (file name, contents) into `out`, made if missing; how many.
pub fn write_pages<T: AsRef<[u8]>>(out: &Path, pages: &[(String, T)]) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    for (name, text) in pages {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    Ok(pages.len())
}

/// (file name, roff) of every page: the command, then each visible subcommand.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    let cmd = crate::Cli::command();
    let mut out = vec![("anyedge.1".to_string(), render(cmd.clone()))];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("anyedge-{}", sub.get_name());
        // clap names commands with static strings; a page's name lives as long as this run.
        let page = sub.clone().name(&*Box::leak(name.clone().into_boxed_str())).version(env!("CARGO_PKG_VERSION"));
        out.push((format!("{name}.1"), render(page)));
    }
    out
}

fn render(cmd: clap::Command) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd).render(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    /// `man/` holds exactly what `anyedge man` generates: a flag added, changed or removed
    /// without regenerating the pages fails here (regenerate: `anyedge man --out man`).
    #[test]
    fn the_shipped_man_pages_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let pages = super::pages();
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        shipped.sort();
        let mut names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(shipped, names, "man/ holds a page per command: regenerate with `anyedge man --out man`");
        for (name, text) in pages {
            let on_disk = std::fs::read(dir.join(&name)).unwrap();
            assert!(
                on_disk == text,
                "man/{name} differs from what `anyedge man` generates: regenerate with `anyedge man --out man`"
            );
        }
        assert!(names.contains(&"anyedge-render.1".to_string()) && names.contains(&"anyedge-node.1".to_string()));
    }
}
