//! Real image builds: debian-stock through both stages and back out of the cache, and
//! concurrent builds of a tiny fixture recipe.
//!
//! Needs root and mmdebstrap (plus network access to a Debian mirror the first time);
//! skips with a printed reason otherwise. Uses the normal cache (`$COLDBOOT_CACHE_DIR` or
//! `~/.cache/coldboot`) so the slow stage 1 runs once per machine, not once per test run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coldboot::targets::{self, PrepareOptions, Progress, TargetIdentity, TargetSpec};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Why this machine cannot build images, if it cannot.
fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (unpacking the rootfs must keep file owners)".into());
    }
    for tool in ["mmdebstrap", "mkfs.ext4", "qemu-img", "tar"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn opts() -> PrepareOptions {
    PrepareOptions {
        progress: Progress::new(|m| eprintln!("progress: {m}")),
        ..PrepareOptions::default()
    }
}

#[tokio::test]
async fn debian_stock_builds_then_hits_the_cache() {
    if let Some(why) = skip_reason() {
        common::skip(&format!("debian_stock_builds_then_hits_the_cache: {why}"));
        return;
    }
    let dir = repo("vm-images/debian-stock");
    let first = targets::build_recipe(&dir, &BTreeMap::new(), &opts())
        .await
        .unwrap();
    eprintln!(
        "first: hit={} in {:.1}s -> {}",
        first.cache_hit,
        first.elapsed.as_secs_f64(),
        first.disk.display()
    );
    for f in [
        &first.disk,
        &first.kernel,
        &first.initrd,
        &first.dir.join("build.log"),
    ] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    assert_eq!(first.meta.disk_sha256.len(), 64);
    let info = std::process::Command::new("qemu-img")
        .arg("info")
        .arg(&first.disk)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("file format: qcow2"));

    let second = targets::build_recipe(&dir, &BTreeMap::new(), &opts())
        .await
        .unwrap();
    assert!(second.cache_hit, "second build must come from the cache");
    assert!(
        second.elapsed < Duration::from_millis(500),
        "cache hit took {:?}",
        second.elapsed
    );
    assert_eq!(second.id, first.id);
    assert_eq!(second.meta, first.meta);

    let spec = TargetSpec::parse(&format!("recipe:{}", dir.display())).unwrap();
    let started = Instant::now();
    let boot = targets::prepare(&spec, &opts()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(boot.cmdline, ["root=LABEL=root", "rw", "console=ttyS0"]);
    assert_eq!(boot.base_disk(), Some(first.disk.as_path()));
    let TargetIdentity::Recipe {
        hash, image_sha256, ..
    } = &boot.identity
    else {
        panic!("{:?}", boot.identity)
    };
    assert_eq!((hash, image_sha256), (&first.id, &first.meta.disk_sha256));
    std::fs::write(
        "/tmp/target-status.txt",
        format!("{}\n", first.disk.display()),
    )
    .ok();
}

/// Two variants built at once give two images; the same variant built twice at once
/// gives one build and one cache hit, and neither is corrupt.
#[tokio::test]
async fn concurrent_builds_of_a_tiny_recipe() {
    if let Some(why) = skip_reason() {
        common::skip(&format!("concurrent_builds_of_a_tiny_recipe: {why}"));
        return;
    }
    // A fresh image cache (so stage 2 really runs) that shares the real stage-1 tarballs
    // and their locks.
    let shared = targets::cache::cache_root(None).unwrap();
    std::fs::create_dir_all(shared.join("rootfs")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(shared.join("locks")).unwrap();
    for shared_dir in ["rootfs", "locks"] {
        std::os::unix::fs::symlink(shared.join(shared_dir), cache.path().join(shared_dir)).unwrap();
    }
    let opts = PrepareOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..opts()
    };
    let dir = repo("tests/fixtures/target/tiny");
    let choose = |v: &str| BTreeMap::from([("mark".to_string(), v.to_string())]);
    let (a, b, default) = (choose("alpha"), choose("beta"), BTreeMap::new());
    let (alpha, beta, alpha2) = tokio::join!(
        targets::build_recipe(&dir, &a, &opts),
        targets::build_recipe(&dir, &b, &opts),
        targets::build_recipe(&dir, &default, &opts),
    );
    let (alpha, beta, alpha2) = (alpha.unwrap(), beta.unwrap(), alpha2.unwrap());
    assert_ne!(alpha.id, beta.id);
    assert_eq!(alpha.id, alpha2.id, "the default is alpha");
    assert!(
        alpha.cache_hit != alpha2.cache_hit,
        "one built alpha, the other waited and hit"
    );
    assert!(!beta.cache_hit);
    for img in [&alpha, &beta] {
        let check = std::process::Command::new("qemu-img")
            .arg("check")
            .arg(&img.disk)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(
            targets::cache::sha256_file(&img.disk).unwrap(),
            img.meta.disk_sha256
        );
    }
    let log = std::fs::read_to_string(beta.dir.join("build.log")).unwrap();
    assert!(
        log.contains("variant file: /etc/coldboot-fixture/mark"),
        "{log}"
    );
    assert!(
        log.contains(
            "enabled: /etc/systemd/system/multi-user.target.wants/coldboot-fixture.service"
        )
    );
    assert_eq!(beta.meta.variants["mark"], "beta");
    let spec = beta.boot_spec();
    assert_eq!(spec.cmdline.last().map(String::as_str), Some("quiet"));
    assert_eq!(
        spec.faults["stop-fixture"].run,
        "systemctl stop coldboot-fixture.service"
    );
    let entries = std::fs::read_dir(cache.path().join("images"))
        .unwrap()
        .flatten()
        .count();
    assert_eq!(
        entries, 2,
        "two finished entries and no leftover temporary folders"
    );
}

#[tokio::test]
async fn unknown_variant_and_nix_are_usage_errors() {
    let dir = repo("tests/fixtures/target/tiny");
    let bad = BTreeMap::from([("colour".to_string(), "red".to_string())]);
    let err = targets::build_recipe(&dir, &bad, &PrepareOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        coldboot::error::exit_code(&err),
        coldboot::error::exit::USAGE
    );
    assert!(err.to_string().contains("known variants: mark"), "{err}");
    // A nix target that names something other than a NixOS configuration.
    let nix = TargetSpec::parse("nix:.#packages.x86_64-linux.vm").unwrap();
    let err = targets::prepare(&nix, &PrepareOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a configuration name"),
        "{err}"
    );
    assert_eq!(
        coldboot::error::exit_code(&err),
        coldboot::error::exit::USAGE
    );
}

/// `coldboot analyze` on the model, read from the image's unit tree without booting: the
/// old gate's cycle is found and named as the pxgate bug (exit 1); the fix has none
/// (exit 0); a prebuilt image cannot be analysed (exit 2).
#[test]
fn analyze_finds_the_old_gates_cycle_and_none_on_the_fix() {
    if let Some(why) = skip_reason() {
        common::skip(&format!(
            "analyze_finds_the_old_gates_cycle_and_none_on_the_fix: {why}"
        ));
        return;
    }
    let analyze = |target: &str, json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coldboot"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["analyze", target]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("coldboot runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = analyze("recipe:vm-images/ccci-model?gate=dashboard", false);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("wait cycle: deploy-proxy.service → deploy-dashboard.service"),
        "{out}"
    );
    assert!(out.contains("health-gate cycle"), "{out}");
    assert!(
        out.contains("deploy-dashboard.service: After=deploy-proxy.service"),
        "the cycle names the line that orders it: {out}"
    );

    let (code, out, err) = analyze("recipe:vm-images/ccci-model?gate=self", true);
    assert_eq!(code, Some(0), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("--json is JSON");
    assert_eq!(report["cycles"].as_array().map(Vec::len), Some(0));
    let gate = &report["gates"][0];
    assert_eq!(gate["gate"]["served_by"], "traefik.service");
    assert_eq!(gate["served_after_gated"], false);
    let after: Vec<&str> = gate["ordered_after"]
        .as_array()
        .expect("ordered_after")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for unit in [
        "deploy-dashboard.service",
        "drone.service",
        "nightly-sweep.service",
    ] {
        assert!(
            after.contains(&unit),
            "{unit} is ordered after deploy-proxy: {after:?}"
        );
    }

    let (code, _, err) = analyze("image:/nonexistent.qcow2", false);
    assert_eq!(code, Some(2), "{err}");
}
