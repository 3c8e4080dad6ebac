//! The Debian package (root; CI runs it): built with cargo-deb from this build, installed
//! with `dpkg -i` into a root of its own (`dpkg --root`: nothing of the host changes),
//! and then used as a user would: `anyedge --version` from the installed binary, the
//! systemd template unit checked by `systemd-analyze verify`, the man pages where `man`
//! looks, and a topology rendered and its nodes checked with the installed binary.
//! Installs cargo-deb (cargo install) and systemd (for `systemd-analyze`) when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn have(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A scratch directory removed on every way out.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The .deb of this build: cargo-deb packages the binary this test suite was built with
/// (the `test` profile's, stripped), so the package holds the code under test.
fn build_deb(out: &Path) -> PathBuf {
    if !Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success()) {
        run(Command::new("cargo").args(["install", "cargo-deb", "--locked", "--quiet"]));
    }
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_anyedge"));
    let profile_dir = exe.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    let profile = if profile_dir == "debug" { "dev".to_string() } else { profile_dir };
    run(Command::new("cargo")
        .current_dir(repo(""))
        .args(["deb", "--no-build", "--fast", "--profile", &profile, "--output"])
        .arg(out));
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb wrote a .deb")
}

#[test]
fn the_debian_package_installs_a_binary_a_unit_and_man_pages_that_run_a_rendered_node() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs it as root)");
        return;
    }
    let tmp = Scratch(std::env::temp_dir().join(format!("anyedge-package-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).unwrap();
    let deb = build_deb(&tmp.0);

    // What the package says it is and holds.
    let info = text(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    assert!(info.contains("Package: anyedge") && info.contains("Section: net"), "{info}");
    let contents = text(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    for path in [
        "./usr/bin/anyedge",
        "./lib/systemd/system/anyedge-node@.service",
        "./usr/share/man/man1/anyedge.1.gz",
        "./usr/share/man/man1/anyedge-node.1.gz",
        "./usr/share/man/man1/anyedge-render.1.gz",
    ] {
        assert!(contents.contains(path), "{path} not in the package:\n{contents}");
    }

    // dpkg -i into a root of its own: a dpkg database there, the host's untouched.
    let root = tmp.0.join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // libc is the host's; the private database does not know it.
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-script-chrootless", "--log=/dev/null", "-i"])
        .arg(&deb));
    let listed = text(&run(Command::new("dpkg").arg(format!("--root={}", root.display())).args(["-s", "anyedge"])));
    assert!(listed.contains("Status: install ok installed"), "{listed}");
    let bin = root.join("usr/bin/anyedge");
    let version = text(&run(Command::new(&bin).arg("--version")));
    assert_eq!(version.trim(), format!("anyedge {}", env!("CARGO_PKG_VERSION")));
    let page = root.join("usr/share/man/man1/anyedge-render.1.gz");
    assert!(std::fs::metadata(&page).is_ok_and(|m| m.len() > 200), "{}", page.display());

    // The unit as installed, checked for an instance: no unknown key, no bad value.
    if !have("systemd-analyze") {
        run(Command::new("apt-get").args(["update", "-qq"]));
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "systemd"])
            .env("DEBIAN_FRONTEND", "noninteractive"));
    }
    let units = tmp.0.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/anyedge-node@.service")).unwrap();
    // The installed binary where the unit looks for it: /usr/bin is the host's.
    let instance = units.join("anyedge-node@pop-paris.service");
    std::fs::write(&instance, unit.replace("/usr/bin/anyedge", &bin.display().to_string())).unwrap();
    let verify = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&instance).output().unwrap();
    let said = text(&verify);
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for want in
        ["CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE", "PrivateTmp=yes", "ProtectSystem=strict"]
    {
        assert!(unit.contains(want), "the unit lacks {want}");
    }
    assert!(unit.contains("Restart=on-failure") && unit.contains("StateDirectory=anyedge/%i"));

    // The installed binary renders a topology and every node's directory checks out; one
    // edited after rendering is refused with exit 2 and the reason.
    let out = tmp.0.join("deploy");
    let said = text(&run(Command::new(&bin).arg("render").arg(repo("topologies/control.yaml")).arg("--out").arg(&out)));
    assert!(said.contains("nodes rendered into"), "{said}");
    let pop = out.join("pop-paris");
    let checked = text(&run(Command::new(&bin).args(["node", "--check", "--config"]).arg(&pop)));
    assert!(checked.contains("ok (pop/paris, state in /var/lib/anyedge/pop-paris)"), "{checked}");
    std::fs::remove_file(pop.join("pki/pop-paris.keys")).unwrap();
    let refused = Command::new(&bin).args(["node", "--check", "--config"]).arg(&pop).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("pop-paris.keys"), "{}", text(&refused));
}
