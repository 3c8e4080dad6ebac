//! The topology file's JSON Schema (`anyedge schema`, shipped as
//! `schema/topology.schema.json`): it is what the code generates, every shipped topology
//! points at it and is valid against it, and an independent validator (python-jsonschema,
//! installed by `.ci/run`) refuses the structural mistakes the parser refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ANYEDGE: &str = env!("CARGO_BIN_EXE_anyedge");
/// Debian's Python, where `.ci/run` installs python3-jsonschema and python3-yaml.
const PYTHON: &str = "/usr/bin/python3";
const MODELINE: &str = "# yaml-language-server: $schema=../schema/topology.schema.json";

fn shipped_topologies() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("topologies"))
        .expect("topologies/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the shipped topologies: {files:?}");
    files
}

/// Runs tests/schema/check.py; its output, and whether it passed.
fn check(args: &[&str], files: &[PathBuf]) -> (bool, String) {
    let ready = Command::new(PYTHON).args(["-c", "import jsonschema, yaml"]).status();
    assert!(
        ready.is_ok_and(|s| s.success()),
        "{PYTHON} cannot import jsonschema and yaml: install python3-jsonschema and python3-yaml (.ci/run does)"
    );
    let out = Command::new(PYTHON)
        .arg(Path::new(ROOT).join("tests/schema/check.py"))
        .args(args)
        .args(files)
        .output()
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_shipped_schema_is_what_anyedge_schema_prints() {
    let out = Command::new(ANYEDGE).arg("schema").output().expect("anyedge schema runs");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("schema/topology.schema.json")).expect("shipped schema");
    assert!(
        printed == shipped,
        "schema/topology.schema.json differs from `anyedge schema`: run `cargo run -- schema > schema/topology.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    // Every field a person can hover over says what it is.
    for (name, def) in v["$defs"].as_object().expect("$defs").iter().chain([(&"topology".to_string(), &v)]) {
        for (key, field) in def["properties"].as_object().expect("properties") {
            let doc = field["description"].as_str().unwrap_or("");
            assert!(doc.len() > 10, "{name}.{key} has no description");
        }
    }
}

#[test]
fn every_shipped_topology_names_the_schema_on_its_first_line_and_is_valid_against_it() {
    let files = shipped_topologies();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        assert_eq!(text.lines().next(), Some(MODELINE), "{} does not open with the schema modeline", f.display());
        let out = Command::new(ANYEDGE).arg("validate").arg(f).output().expect("validate runs");
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
    let schema = Path::new(ROOT).join("schema/topology.schema.json");
    let (ok, text) = check(&["valid", schema.to_str().expect("UTF-8 path")], &files);
    assert!(ok, "python-jsonschema refuses a shipped topology:\n{text}");
    assert_eq!(text.matches(": valid").count(), files.len(), "{text}");
}

#[test]
fn the_schema_refuses_every_structural_mistake_the_parser_refuses_and_offers_only_words_it_knows() {
    let files = shipped_topologies();
    let schema = Path::new(ROOT).join("schema/topology.schema.json");
    let (ok, text) = check(&["agree", schema.to_str().expect("UTF-8 path"), ANYEDGE], &files);
    assert!(ok, "the schema and the parser disagree:\n{text}");
    // Hundreds of mistakes, one per kind, mapping and key (reference.yaml has them all).
    let tried: usize =
        text.lines().last().and_then(|l| l.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(tried >= 300, "too few mistakes tried: {text}");
}

#[test]
fn a_schema_that_drifted_from_the_parser_is_caught() {
    // The check above must be able to fail: a schema that forgets a required field,
    // allows unknown fields on POPs and offers a scheduler the parser does not know.
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("schema/topology.schema.json")).expect("schema");
    let mut v: serde_json::Value = serde_json::from_str(&shipped).expect("JSON");
    v["$defs"]["vip"]["required"] = serde_json::json!(["name", "ipv4", "pops", "listeners"]);
    v["$defs"]["pop"]["additionalProperties"] = serde_json::json!(true);
    v["$defs"]["listener"]["properties"]["scheduler"]["enum"].as_array_mut().expect("enum").push("random".into());
    let dir = std::env::temp_dir().join(format!("anyedge-schema-drift-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let drifted = dir.join("drifted.schema.json");
    std::fs::write(&drifted, serde_json::to_string(&v).expect("JSON")).expect("write");
    let small = vec![Path::new(ROOT).join("topologies/small.yaml")];
    let (ok, text) = check(&["agree", drifted.to_str().expect("UTF-8"), ANYEDGE], &small);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "a drifted schema passed:\n{text}");
    assert!(text.contains("optional `home` removed: the parser calls it required"), "{text}");
    assert!(text.contains("pop at /pops/0: unknown field: the schema accepted it"), "{text}");
    assert!(text.contains("the schema offers `scheduler: random`"), "{text}");
}

/// yaml-language-server, pinned, installed with npm into target/ on first use.
fn language_server() -> PathBuf {
    const VERSION: &str = "2.0.0";
    let dir = Path::new(ROOT).join("target/yaml-language-server");
    let bin = dir.join("node_modules/.bin/yaml-language-server");
    let installed = std::fs::read_to_string(dir.join("node_modules/yaml-language-server/package.json"))
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{VERSION}\"")));
    if !installed {
        std::fs::create_dir_all(&dir).expect("target/yaml-language-server");
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("yaml-language-server@{VERSION}"))
            .output()
            .expect("npm runs (Debian: nodejs npm; .ci/run installs them)");
        assert!(out.status.success(), "npm install yaml-language-server: {}", String::from_utf8_lossy(&out.stderr));
    }
    bin
}

#[test]
fn an_editor_reading_the_modeline_flags_mistakes_explains_fields_and_completes_them() {
    let server = language_server();
    let out = Command::new(PYTHON)
        .arg(Path::new(ROOT).join("tests/schema/editor.py"))
        .arg(&server)
        .arg(Path::new(ROOT).join("topologies/small.yaml"))
        .output()
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "yaml-language-server did not use the schema:\n{text}");
    assert!(text.contains("Property colour is not allowed"), "{text}");
    assert!(text.contains("hover on scheduler: #### anyedge topology"), "{text}");
}
