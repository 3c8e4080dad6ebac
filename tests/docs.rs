//! The README and the guide (docs/, an mdBook) cannot rot: every internal link leads to a
//! file and heading that exist, every command line they show still parses (a renamed flag
//! fails here), the example topologies validate, and the output a page shows under
//! `<!-- output: COMMAND -->` is what COMMAND prints, line for line, in order.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ANYEDGE: &str = env!("CARGO_BIN_EXE_anyedge");

/// README.md and every page of the guide.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![Path::new(ROOT).join("README.md")];
    let mut dirs = vec![Path::new(ROOT).join("docs/src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("docs/src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 14, "README and the guide's pages: {out:?}");
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// mdBook's anchor for a heading: lower case, spaces to `-`, only letters, digits, `-`
/// and `_` kept.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn headings(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every `[text](target)` outside code, with its line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_internal_link_of_the_readme_and_the_guide_leads_somewhere() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        // No stray fence: every code block that opens closes, and opens at a line's start.
        let fences = text.lines().filter(|l| l.trim_start().starts_with("```")).count();
        assert!(fences % 2 == 0, "{}: an odd number of ``` fences ({fences})", page.display());
        assert!(
            text.lines().all(|l| !l.trim_start().starts_with("```") || l.starts_with("```")),
            "{}: an indented fence",
            page.display()
        );
        for (line, target) in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if file.is_empty() { page.clone() } else { page.parent().expect("dir").join(file) };
            if !dest.exists() {
                broken.push(format!("{}:{line}: {target}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty()
                && dest.extension().is_some_and(|x| x == "md")
                && !headings(&read(&dest)).contains(&anchor.to_string())
            {
                broken.push(format!("{}:{line}: {target}: no heading #{anchor} there", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 60, "only {checked} links checked");
    // Every page of the guide is in its table of contents.
    let summary = read(&Path::new(ROOT).join("docs/src/SUMMARY.md"));
    for page in pages().iter().filter(|p| p.starts_with(Path::new(ROOT).join("docs/src"))) {
        let rel = page.strip_prefix(Path::new(ROOT).join("docs/src")).expect("under docs/src");
        let rel = rel.to_string_lossy();
        assert!(rel == "SUMMARY.md" || summary.contains(&format!("({rel})")), "{rel} is not in SUMMARY.md");
    }
}

/// The command lines of the `sh` blocks: continuations joined, comments cut, `sudo` and
/// the binary's path dropped. Lines with placeholders of alternatives or optional parts
/// (`[…]`, `a|b`, `…`) are left out.
fn shown_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            pending.clear();
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        let code = code.trim_end();
        if let Some(more) = code.strip_suffix('\\') {
            pending.push_str(more);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let cmd = std::mem::take(&mut pending);
        // A redirection is the shell's, not the command's.
        let cmd = cmd.split(" > ").next().unwrap_or_default();
        let cmd = cmd.trim().trim_start_matches("sudo ").trim();
        let cmd = cmd.strip_prefix("./target/release/").unwrap_or(cmd);
        if let Some(args) = cmd.strip_prefix("anyedge ")
            && !args.contains('[')
            && !args.contains('|')
            && !args.contains('…')
        {
            out.push(args.to_string());
        }
    }
    out
}

#[test]
fn every_command_line_the_readme_and_the_guide_show_still_parses() {
    let mut checked = 0;
    let mut refused = Vec::new();
    for page in pages() {
        for args in shown_commands(&read(&page)) {
            let words: Vec<&str> = args.split_whitespace().map(|w| w.trim_matches('\'')).collect();
            let out = Command::new(ANYEDGE)
                .args(&words)
                .env("ANYEDGE_PARSE_ONLY", "1")
                .current_dir(ROOT)
                .output()
                .expect("anyedge runs");
            checked += 1;
            if !out.status.success() {
                refused.push(format!("{}: anyedge {args}\n{}", page.display(), String::from_utf8_lossy(&out.stderr)));
            }
        }
    }
    assert!(refused.is_empty(), "command lines that no longer parse:\n{}", refused.join("\n"));
    assert!(checked >= 20, "only {checked} command lines checked");
}

#[test]
fn the_guides_example_topologies_validate_and_point_at_the_schema() {
    let dir = Path::new(ROOT).join("docs/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("docs/examples") {
        let p = e.expect("entry").path();
        let text = read(&p);
        assert!(
            text.starts_with("# yaml-language-server: $schema=../../schema/topology.schema.json\n"),
            "{}",
            p.display()
        );
        let out = Command::new(ANYEDGE).arg("validate").arg(&p).output().expect("validate");
        assert!(out.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
        // What the chapter shows of the file is the file.
        let chapter = read(&Path::new(ROOT).join("docs/src/writing-a-topology.md"));
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        assert!(chapter.contains(&format!("docs/examples/{name}")), "the chapter names {name}");
        n += 1;
    }
    assert!(n >= 2);
    let chapter = read(&Path::new(ROOT).join("docs/src/writing-a-topology.md"));
    let first = read(&dir.join("one-city.yaml"));
    let body: String = first.lines().skip(2).collect::<Vec<_>>().join("\n");
    assert!(chapter.contains(&body), "the chapter shows one-city.yaml whole, as it is");
}

#[test]
fn the_output_the_guide_shows_is_what_its_commands_print() {
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(cmd) = line.trim().strip_prefix("<!-- output: ").and_then(|l| l.strip_suffix(" -->")) else {
                // Output shown without the command that prints it could rot unseen (the
                // reference's usage lines are generated, and checked by their own test).
                let generated = page.starts_with(Path::new(ROOT).join("docs/src/reference"));
                let marked = i > 0 && lines[i - 1].starts_with("<!-- output: ");
                assert!(
                    line.trim() != "```text" || generated || marked,
                    "{}:{}: a text block with no <!-- output: COMMAND --> above it",
                    page.display(),
                    i + 1
                );
                continue;
            };
            let args =
                cmd.strip_prefix("anyedge ").unwrap_or_else(|| panic!("{}: `{cmd}` is not anyedge", page.display()));
            assert_eq!(lines.get(i + 1).map(|l| l.trim()), Some("```text"), "{}: a text block follows", page.display());
            let shown: Vec<&str> = lines[i + 2..].iter().take_while(|l| !l.starts_with("```")).copied().collect();
            let out = Command::new(ANYEDGE).args(args.split_whitespace()).current_dir(ROOT).output().expect("runs");
            let printed = String::from_utf8_lossy(&out.stdout).into_owned();
            let printed: Vec<&str> = printed.lines().map(str::trim_end).collect();
            let mut at = 0;
            for want in shown.iter().map(|l| l.trim_end()) {
                match printed[at..].iter().position(|got| *got == want) {
                    Some(k) => at += k + 1,
                    None => panic!(
                        "{}: `{cmd}` no longer prints (in this order):\n{want}\nIt printed:\n{}",
                        page.display(),
                        printed.join("\n")
                    ),
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} outputs checked");
}

#[test]
fn the_lab_chapters_first_session_runs_as_written() {
    if !common::may_run() {
        return;
    }
    let _one = common::serial();
    let page = Path::new(ROOT).join("docs/src/lab.md");
    let text = read(&page);
    let at = text.find("<!-- session: root").expect("lab.md marks its first session");
    let block = &text[at..];
    let block = &block[block.find("```sh\n").expect("a sh block") + 6..];
    let block = &block[..block.find("```").expect("closed")];
    // The lab's own copy of small.yaml, named for this run (labs are named by their file);
    // every other word of every line is the page's.
    let name = format!("t-docs-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("small.yaml");
    let small = common::SMALL.replace("name: small-europe", &format!("name: {name}"));
    std::fs::write(&file, small.split("faults:").next().expect("text")).expect("write");
    let pcap = dir.join("warsaw.pcap");
    // The lab tests' guard: `lab down` and the directory removed, whatever happens.
    let _down = common::Lab { file: file.clone(), dir: dir.clone() };
    let mut ran = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let args = line.trim().strip_prefix("sudo anyedge ").unwrap_or_else(|| panic!("`{line}` is not sudo anyedge"));
        let args = args
            .replace("topologies/small.yaml", &file.to_string_lossy())
            .replace("/tmp/warsaw.pcap", &pcap.to_string_lossy());
        let out = Command::new(ANYEDGE).args(args.split_whitespace()).output().expect("anyedge runs");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "`{}` failed after {ran:?}:\n{said}", line.trim());
        ran.push(args.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        if args.contains(" probe ") {
            assert!(said.contains("198.18.0.20:7000"), "the probe's table names its target: {said}");
        }
    }
    assert_eq!(ran.first().map(String::as_str), Some("lab up"));
    assert_eq!(ran.last().map(String::as_str), Some("lab down"));
    assert!(ran.len() >= 8, "{ran:?}");
    let capture = std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    assert!(capture > 24, "the capture at warsaw holds packets: {capture} bytes");
    assert!(common::namespaces_with(&format!("{name}-")).is_empty(), "lab down left namespaces");
}
