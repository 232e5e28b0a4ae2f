//! The wrapper flake (`nix/`) away from its git checkout, through the real Nix these
//! machines have (Debian's Nix 2.8) in pure evaluation, as an operator's host would use
//! it: a copy in a plain folder and the copy built into `coldboot` both lock offline,
//! evaluate their harness JSON and reach every file their modules read; the dry run of
//! M1 against such a copy names no remote flake and builds only the VM.
//!
//! nixpkgs itself is not here (no network, no binary cache): the evaluations replace it
//! with `tests/fixtures/nix/nixpkgs-shim/`, nixpkgs' real `lib` (the tarball named by
//! `$COLDBOOT_NIXPKGS_LIB`, which `.ci/run` sets) with `nixosSystem` as the real
//! `lib.evalModules` over stub NixOS options.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nix_cmd() -> Command {
    let mut c = Command::new("nix");
    c.args(["--extra-experimental-features", "nix-command flakes"]);
    c.stdin(std::process::Stdio::null());
    c
}

/// Why `nix` cannot run, if it cannot.
fn no_nix() -> Option<String> {
    match nix_cmd().arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`nix` is not installed (scripts/setup installs nix-bin)".into()),
    }
}

/// The nixpkgs-lib tarball, or why the real-lib evaluation is skipped.
fn nixpkgs_lib() -> Result<PathBuf, String> {
    match std::env::var_os("COLDBOOT_NIXPKGS_LIB").filter(|v| !v.is_empty()) {
        Some(p) if Path::new(&p).is_file() => Ok(PathBuf::from(p)),
        Some(p) => Err(format!(
            "COLDBOOT_NIXPKGS_LIB={} is not a file",
            p.to_string_lossy()
        )),
        None => Err("COLDBOOT_NIXPKGS_LIB is not set (.ci/run sets it to \
             ../shared/nixpkgs-lib/nixpkgs-lib-db873391.tar.gz when that exists)"
            .into()),
    }
}

/// `nix/` copied into a plain folder (no `.git` anywhere above it).
fn plain_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("coldboot-nix");
    common::copy_dir(&root().join("nix"), &copy);
    assert!(!copy.join(".git").exists());
    copy
}

/// The nixpkgs stand-in: the shim's flake with the real lib unpacked next to it.
fn shim(dir: &Path, tarball: &Path) -> PathBuf {
    let shim = dir.join("nixpkgs-shim");
    common::copy_dir(&root().join("tests/fixtures/nix/nixpkgs-shim"), &shim);
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&shim)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(shim.join("lib/default.nix").is_file());
    shim
}

/// `nix eval --json` of `coldbootTargets.NAME.ATTR` in `wrapper`, with the wrapper as its
/// own target (the model configurations) and nixpkgs replaced by the shim everywhere.
fn eval(wrapper: &Path, shim: &Path, name: &str, attr: &str) -> Result<serde_json::Value, String> {
    let w = format!("path:{}", wrapper.display());
    let s = format!("path:{}", shim.display());
    let out = nix_cmd()
        .args(["eval", "--json", "--no-write-lock-file"])
        .args(["--override-input", "nixpkgs", &s])
        .args(["--override-input", "target", &w])
        .args(["--override-input", "target/nixpkgs", &s])
        .arg(format!("{w}#coldbootTargets.{name}.config.{attr}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// Everything the wrapper's modules read from its folder, forced: the adapter's three
/// scripts and the model's files are copied into the store, which fails in pure
/// evaluation when a path reaches out of the folder (the old `../../harness/...`).
fn check_wrapper(wrapper: &Path, shim: &Path) {
    for (name, served_by) in [
        ("ccci-model-before", "deploy-dashboard.service"),
        ("ccci-model-after", "traefik.service"),
    ] {
        let harness = eval(wrapper, shim, name, "coldboot.harness").unwrap();
        assert_eq!(
            harness["gates"]["deploy-proxy.service"]["servedBy"], served_by,
            "{name}: {harness}"
        );
        assert!(harness["faults"]["traefik-broken"]["run"].is_string());
    }
    for unit in [
        "coldboot-authorized-key",
        "coldboot-host-key",
        "coldboot-recorder",
        "deploy-proxy",
    ] {
        let exec = eval(
            wrapper,
            shim,
            "ccci-model-before",
            &format!("systemd.services.{unit}.serviceConfig.ExecStart"),
        )
        .unwrap_or_else(|e| panic!("{unit}: {e}"));
        assert!(
            exec.as_str().unwrap().contains("/nix/store/"),
            "{unit}: {exec}"
        );
    }
}

#[test]
fn the_wrapper_in_a_plain_folder_evaluates_with_the_real_module_system() {
    if let Some(why) = no_nix() {
        common::skip(&why);
        return;
    }
    let tarball = match nixpkgs_lib() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let shim = shim(dir.path(), &tarball);
    check_wrapper(&plain_copy(dir.path()), &shim);
    // The copy that an installed coldboot uses: written from the binary into the cache.
    let cache = dir.path().join("cache");
    let built_in = coldboot::targets::nix_wrapper::materialize(&cache).unwrap();
    check_wrapper(&built_in, &shim);
}

/// The committed lock pins nixpkgs (revision and hash), so the wrapper's inputs resolve
/// with no network and the same nixpkgs for every target. Without the lock Nix asks
/// api.github.com for the branch head (`--no-update-lock-file` would then fail).
#[test]
fn the_lock_file_pins_the_inputs_offline() {
    if let Some(why) = no_nix() {
        common::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for wrapper in [
        plain_copy(dir.path()),
        coldboot::targets::nix_wrapper::materialize(&dir.path().join("cache")).unwrap(),
    ] {
        let out = nix_cmd()
            .args(["flake", "metadata", "--json", "--no-update-lock-file"])
            .arg(format!("path:{}", wrapper.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let nodes = &meta["locks"]["nodes"];
        let nixpkgs = &nodes["nixpkgs"]["locked"];
        assert_eq!(nixpkgs["type"], "github", "{meta}");
        assert_eq!(nixpkgs["rev"].as_str().unwrap().len(), 40, "{meta}");
        assert!(
            nixpkgs["narHash"].as_str().unwrap().starts_with("sha256-"),
            "{meta}"
        );
        assert_eq!(
            nodes["root"]["inputs"]["target"],
            serde_json::json!(["nixpkgs"])
        );
    }
}

/// The issue's acceptance: M1 against the model configurations of a plain copy of
/// `nix/`, printed: no remote flake reference, no outer toplevel, and the wrapper is
/// the copy built into coldboot.
#[test]
fn dry_run_against_a_plain_copy_names_no_remote_flake_and_no_toplevel() {
    let dir = tempfile::tempdir().unwrap();
    let copy = plain_copy(dir.path());
    let cache = dir.path().join("cache");
    let out = common::coldboot()
        .env_remove("COLDBOOT_NIX_DIR")
        .env("COLDBOOT_CACHE_DIR", &cache)
        .args([
            "run",
            "--dry-run",
            "--plan",
            "scenarios/plans/m1.yaml",
            "--target",
            &format!("before=nix:{}#ccci-model-before", copy.display()),
            "--target",
            &format!("after=nix:{}#ccci-model-after", copy.display()),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let built_in = coldboot::targets::nix_wrapper::materialize(&cache).unwrap();
    let nix_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("$ nix "))
        .collect();
    assert_eq!(nix_lines.len(), 6, "3 commands per target: {nix_lines:#?}");
    for line in &nix_lines {
        for remote in ["github:", "gitlab:", "https:", "http:", "git+ssh", "flake:"] {
            assert!(!line.contains(remote), "{remote} in {line}");
        }
        assert!(!line.contains("toplevel"), "{line}");
    }
    let builds: Vec<&&str> = nix_lines.iter().filter(|l| l.contains(" build ")).collect();
    assert_eq!(builds.len(), 2);
    for b in builds {
        assert!(
            b.contains(&format!(
                "--override-input target {} {}#coldbootTargets.",
                copy.display(),
                built_in.display()
            )),
            "{b}"
        );
        assert!(b.ends_with(".config.system.build.vm"), "{b}");
    }
    assert!(
        text.contains("the copy of nix/ built into coldboot"),
        "{text}"
    );
}

/// `$COLDBOOT_NIX_DIR` must name a copy of `nix/`: a folder without the lock file is a
/// usage error before any `nix` runs.
#[test]
fn a_wrapper_folder_without_its_lock_is_refused_early() {
    let dir = tempfile::tempdir().unwrap();
    let copy = plain_copy(dir.path());
    std::fs::remove_file(copy.join("flake.lock")).unwrap();
    let out = common::coldboot()
        .env("COLDBOOT_NIX_DIR", &copy)
        .args([
            "run",
            "--dry-run",
            "--target",
            "after=nix:./nix#ccci-model-after",
            "scenarios/clean-cold-boot.yaml",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("COLDBOOT_NIX_DIR=") && stderr.contains("no flake.lock there"),
        "{stderr}"
    );
}

/// A flake whose nixpkgs is newer than the installed Nix: nixpkgs' own version check
/// stops the evaluation (the stand-in nixpkgs aborts as nixpkgs' default.nix does, with
/// 2.18 as today's nixpkgs requires). That is a usage error (exit 2) that quotes
/// nixpkgs and names the installed Nix, not an infrastructure failure. Real Nix, no
/// network: the wrapper's pinned nixpkgs is never fetched when the target has its own.
#[test]
fn a_nixpkgs_too_new_for_the_installed_nix_is_a_usage_error() {
    if let Some(why) = no_nix() {
        common::skip(&why);
        return;
    }
    let have = String::from_utf8(nix_cmd().arg("--version").output().unwrap().stdout).unwrap();
    let have = coldboot::targets::nix::parse_nix_version(&have).unwrap();
    if coldboot::targets::nix::version_at_least(&have, &[2, 18]) {
        eprintln!("SKIPPED: the installed Nix {have:?} is not older than 2.18");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nixpkgs, target) = (dir.path().join("nixpkgs"), dir.path().join("cc-ci"));
    std::fs::create_dir_all(&nixpkgs).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(
        nixpkgs.join("flake.nix"),
        r#"{
  outputs = { self }: {
    lib.nixosSystem = args:
      let requiredVersion = "2.18"; in
      if builtins.compareVersions requiredVersion builtins.nixVersion == 1 then
        abort ''

          This version of Nixpkgs requires Nix >= ${requiredVersion}, please upgrade:
        ''
      else throw "not reached";
  };
}
"#,
    )
    .unwrap();
    std::fs::write(
        target.join("flake.nix"),
        format!(
            r#"{{
  inputs.nixpkgs.url = "path:{}";
  outputs = {{ self, nixpkgs }}: {{
    nixosConfigurations.cc-ci = nixpkgs.lib.nixosSystem {{ system = "x86_64-linux"; modules = [ ]; }};
  }};
}}
"#,
            nixpkgs.display()
        ),
    )
    .unwrap();
    let out = common::coldboot()
        .env_remove("COLDBOOT_NIX_DIR")
        .env("COLDBOOT_CACHE_DIR", dir.path().join("cache"))
        .args([
            "run",
            "--target",
            &format!("after=nix:{}#cc-ci", target.display()),
            "scenarios/clean-cold-boot.yaml",
            "--evidence",
            dir.path().join("evidence").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for said in [
        "requires Nix >= 2.18",
        "installed Nix is nix (Nix) ",
        "\"This version of Nixpkgs requires Nix >= 2.18, please upgrade:\"",
    ] {
        assert!(stderr.contains(said), "{said:?} in {stderr}");
    }
}
