//! `coldboot doctor`'s Nix lines, from the built binary: with no `nix` on `PATH`, and with
//! a stand-in `nix` (its second line says so) that prints a version and settings the way
//! Nix 2.8 and Nix 2.24 do. `PATH` holds only a temporary folder of links to the tools
//! doctor looks for besides Nix, so the host's own Nix never answers; `NIX_STORE_DIR`,
//! `NIX_STATE_DIR` and `NIX_DAEMON_SOCKET_PATH` (read as Nix reads them) point at
//! temporary folders, so the store facts are the test's. No VM boots (`--accel tcg`
//! skips the KVM probe).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::coldboot;

/// The tools doctor runs besides `nix`.
const OTHER_TOOLS: [&str; 4] = ["qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4"];

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A `bin/` with links to the host's other tools (those it has), and folders for a store.
struct Host {
    dir: tempfile::TempDir,
    /// Every other tool was found, so doctor has no reason to fail at all.
    complete: bool,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("coldboot-doctor-")
            .tempdir()
            .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let mut complete = true;
        for tool in OTHER_TOOLS {
            match on_path(tool) {
                Some(p) => std::os::unix::fs::symlink(p, bin.join(tool)).unwrap(),
                None => complete = false,
            }
        }
        for d in ["store", "var/nix", "cache"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Host { dir, complete }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Put a stand-in `nix` into `bin/`.
    fn stand_in_nix(&self, script: &str) {
        let nix = self.path("bin/nix");
        std::fs::write(&nix, script).unwrap();
        std::fs::set_permissions(&nix, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.path("nix-calls.log")).unwrap_or_default()
    }

    /// `coldboot doctor --accel tcg` on this host: (exit code, stdout, stderr).
    fn doctor(&self) -> (Option<i32>, String, String) {
        let mut cmd = coldboot();
        cmd.args(["doctor", "--accel", "tcg"])
            .env("PATH", self.path("bin"))
            .env("COLDBOOT_CACHE_DIR", self.path("cache"))
            .env("NIX_STORE_DIR", self.path("store"))
            .env("NIX_STATE_DIR", self.path("var/nix"))
            .env("NIX_DAEMON_SOCKET_PATH", self.path("no-daemon/socket"));
        for var in ["NIX_STORE", "NIX_CONFIG", "NIX_REMOTE", "COLDBOOT_ACCEL"] {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("coldboot runs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!(
            "$ coldboot doctor --accel tcg\nexit {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
            out.status.code()
        );
        (out.status.code(), stdout, stderr)
    }

    /// Nix never makes doctor fail: exit 0 when every other tool is there, and otherwise
    /// a refusal that names only other reasons.
    fn assert_not_failed_by_nix(&self, code: Option<i32>, stderr: &str) {
        let refusal = stderr
            .lines()
            .find(|l| l.starts_with("a run is impossible here"));
        if let Some(refusal) = refusal {
            assert!(!refusal.contains("nix"), "{stderr}");
            assert!(!self.complete || refusal.contains("GiB"), "{stderr}");
            assert_eq!(code, Some(3), "{stderr}");
        } else {
            assert_eq!(code, Some(0), "{stderr}");
        }
    }
}

/// The status of doctor's line labelled `label` (the label is padded to 14 columns).
fn status<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| {
            let (head, rest) = l.split_at_checked(15)?;
            (head.trim_end() == label).then_some(rest)
        })
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
}

#[test]
fn without_nix_the_nix_lines_say_so_and_doctor_does_not_fail() {
    let host = Host::new();
    let (code, stdout, stderr) = host.doctor();
    assert_eq!(
        status(&stdout, "nix"),
        "not found on PATH (only nix: targets need it)"
    );
    assert!(
        status(&stdout, "nix: targets").starts_with(
            "cannot evaluate or build here: no nix on PATH (recipe: and image: targets do \
             not need it"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("not supported"), "{stdout}");
    for absent in ["nix flakes", "nix store", "nix builds"] {
        assert!(
            !stdout.lines().any(|l| l.starts_with(absent)),
            "{absent}: {stdout}"
        );
    }
    host.assert_not_failed_by_nix(code, &stderr);
}

/// Debian 12's nix-bin 2.8: `nix show-config` (no `nix config show`), and `nix-command`
/// not enabled in nix.conf, so the read takes `--extra-experimental-features`.
#[test]
fn debians_nix_2_8_with_a_writable_store_can_evaluate_and_build() {
    let host = Host::new();
    host.stand_in_nix(&format!(
        r#"#!/bin/sh
# STAND-IN for nix, not Nix: answers coldboot doctor's calls as Debian 12's nix-bin 2.8 (tests/doctor.rs)
echo "$*" >> {log}
case "$*" in
--version) echo "nix (Nix) 2.8.0" ;;
"--extra-experimental-features nix-command show-config")
    printf '%s\n' "builders = @{machines}" "experimental-features = nix-command" \
        "extra-platforms = i686-linux" "max-jobs = 1" "nix-path = " "store = auto" \
        "substituters = https://cache.nixos.org/" "system = x86_64-linux" ;;
show-config)
    echo "error: experimental Nix feature 'nix-command' is disabled; use '--extra-experimental-features nix-command' to override" >&2
    exit 1 ;;
*)
    echo "error: 'config' is not a recognised command" >&2; exit 1 ;;
esac
"#,
        log = host.path("nix-calls.log").display(),
        machines = host.path("machines").display(),
    ));
    let (code, stdout, stderr) = host.doctor();
    let nix = host.path("bin/nix");
    assert_eq!(
        status(&stdout, "nix"),
        format!(
            "nix (Nix) 2.8.0 at {}: older than 2.18, which nixpkgs from after August 2025 \
             requires; nix: targets on such a flake stop with nixpkgs' own message (the \
             wrapper's pinned nixos-24.05 needs 2.3)",
            nix.display()
        )
    );
    assert!(
        status(&stdout, "nix flakes").starts_with(
            "not enabled in nix.conf (experimental-features = none); coldboot passes \
             --extra-experimental-features 'nix-command flakes' on each call"
        ),
        "{stdout}"
    );
    assert_eq!(
        status(&stdout, "nix store"),
        format!(
            "local: this user can write {} and {}",
            host.path("store").display(),
            host.path("var/nix").display()
        )
    );
    assert_eq!(
        status(&stdout, "nix builds"),
        "local: yes (max-jobs = 1, system = x86_64-linux); remote builders: none; \
         substituters: https://cache.nixos.org/ (not contacted)"
    );
    assert_eq!(
        status(&stdout, "nix: targets"),
        "can evaluate and build; only flakes whose nixpkgs accepts Nix 2.8.0 (nixpkgs from \
         after August 2025 needs 2.18); the network that fetches nixpkgs and substitutes is \
         not checked"
    );
    assert_eq!(
        host.calls(),
        "--version\nshow-config\n--extra-experimental-features nix-command show-config\n",
        "2.8 is asked show-config first, then again with nix-command for the read alone"
    );
    host.assert_not_failed_by_nix(code, &stderr);
}

/// A newer Nix has `nix config show`; flakes enabled, but no build slots and no builder.
#[test]
fn a_nix_with_no_build_slots_can_evaluate_but_not_build() {
    let host = Host::new();
    std::fs::write(host.path("machines"), "# no builders yet\n").unwrap();
    host.stand_in_nix(&format!(
        r#"#!/bin/sh
# STAND-IN for nix, not Nix: answers coldboot doctor's calls as Nix 2.24 would (tests/doctor.rs)
echo "$*" >> {log}
case "$*" in
--version) echo "nix (Nix) 2.24.9" ;;
"config show")
    printf '%s\n' "builders = @{machines}" "experimental-features = flakes nix-command" \
        "max-jobs = 0" "store = auto" "substituters = https://cache.nixos.org/" \
        "system = x86_64-linux" ;;
*) echo "stand-in nix: unexpected: $*" >&2; exit 1 ;;
esac
"#,
        log = host.path("nix-calls.log").display(),
        machines = host.path("machines").display(),
    ));
    let (code, stdout, stderr) = host.doctor();
    assert_eq!(
        status(&stdout, "nix"),
        format!(
            "nix (Nix) 2.24.9 at {} (any current nixpkgs)",
            host.path("bin/nix").display()
        )
    );
    assert_eq!(
        status(&stdout, "nix flakes"),
        "enabled (experimental-features = flakes nix-command)"
    );
    assert_eq!(
        status(&stdout, "nix builds"),
        "local: no (max-jobs = 0); remote builders: none; substituters: \
         https://cache.nixos.org/ (not contacted)"
    );
    assert_eq!(
        status(&stdout, "nix: targets"),
        "can evaluate (coldboot analyze works), cannot build here (max-jobs = 0, and no \
         remote builder; coldboot boot and run need a build); the network that fetches \
         nixpkgs and substitutes is not checked"
    );
    assert_eq!(host.calls(), "--version\nconfig show\n");
    host.assert_not_failed_by_nix(code, &stderr);
}

/// A `nix` that runs but whose settings cannot be read still leaves doctor whole.
#[test]
fn unreadable_settings_are_quoted_and_do_not_fail_doctor() {
    let host = Host::new();
    host.stand_in_nix(
        "#!/bin/sh\n# STAND-IN for nix, not Nix (tests/doctor.rs)\n\
         [ \"$1\" = --version ] && { echo 'nix (Nix) 2.18.1'; exit 0; }\n\
         echo 'error: cannot open nix.conf: Permission denied' >&2; exit 1\n",
    );
    let (code, stdout, stderr) = host.doctor();
    assert!(
        status(&stdout, "nix flakes").starts_with("cannot tell: nix's settings could not be read"),
        "{stdout}"
    );
    assert!(
        status(&stdout, "nix flakes").contains("error: cannot open nix.conf: Permission denied"),
        "{stdout}"
    );
    assert!(
        status(&stdout, "nix: targets")
            .starts_with("can evaluate; cannot tell whether it can build here"),
        "{stdout}"
    );
    host.assert_not_failed_by_nix(code, &stderr);
}
