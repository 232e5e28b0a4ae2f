//! The `stable:` window against a system that converges and then falls over: a copy of
//! the cc-ci model (made here from vm-images/ccci-model, so it stays a faithful copy)
//! with one change, a proxy that is killed 20 s after deploy-proxy committed it, with
//! no restart. M2's clean cold boot, which passed on it before the window existed (every
//! other expectation is decided within seconds of deploy-proxy becoming active), exits
//! 1 on its stable window, which names traefik, the moment and PID 1's words. The
//! shipped model passes the same scenario in tests/plans_e2e.rs (M2).
//! Real QEMU, real systemd, real SSH.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::run;

/// VM runs in this binary go one at a time.
static VM: Mutex<()> = Mutex::new(());

/// How long after deploy-proxy's commit the copy's proxy falls over.
const FALLS_AFTER_SECS: u32 = 20;

/// A copy of vm-images/ccci-model whose proxy falls over `FALLS_AFTER_SECS` after
/// deploy-proxy converged: a drop-in whose `ExecStartPost=` (run once the reconciler
/// committed and exited 0) leaves a process behind that SIGKILLs traefik.service then.
/// traefik has no `Restart=`, so it stays failed.
fn falling_model(dir: &Path) -> std::path::PathBuf {
    // The recipe's `overlays: [../../nix/model]` keeps its meaning in the copy.
    let recipe = dir.join("vm-images/ccci-model-falls-over");
    common::copy_dir(Path::new("vm-images/ccci-model"), &recipe);
    common::copy_dir(Path::new("nix/model"), &dir.join("nix/model"));
    let dropin = recipe.join("overlay/etc/systemd/system/deploy-proxy.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("falls-over.conf"),
        format!(
            "# The one change of this copy: the proxy falls over {FALLS_AFTER_SECS} s after it converged.\n\
             [Service]\n\
             ExecStartPost=/bin/sh -c '(sleep {FALLS_AFTER_SECS}; systemctl kill --signal=SIGKILL traefik.service) >/dev/null 2>&1 &'\n"
        ),
    )
    .unwrap();
    recipe
}

#[test]
fn a_proxy_that_falls_over_after_converging_fails_the_stable_window() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = falling_model(dir.path());
    let bundle = tempfile::tempdir().expect("tempdir");
    let target = format!("after=recipe:{}?gate=self", recipe.display());
    let out = run(&[
        "run",
        "--target",
        &target,
        "scenarios/clean-cold-boot.yaml",
        "--evidence",
        bundle.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "the plan's pass is not met");

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.path().join("report.json")).expect("report.json"),
    )
    .expect("JSON");
    let pair = &report["pairs"][0];
    assert_eq!(pair["verdict_word"], "fail", "{pair}");
    let outcomes = pair["outcomes"].as_array().expect("outcomes");
    let stable = outcomes
        .iter()
        .find(|o| o["id"] == "cold-boot/stays-up")
        .unwrap_or_else(|| panic!("no stable outcome: {pair}"));
    assert_eq!(stable["held"], false, "{stable}");
    let seen = stable["seen"].as_str().unwrap_or_default();
    // The unit, the state it left, the moment and who said so.
    assert!(
        seen.starts_with("traefik.service left active for failed")
            && seen.contains("Result=signal")
            && seen.contains("s into the window by PID 1's D-Bus signal"),
        "{seen}"
    );
    // PID 1's entry (what it did to the unit: the kill) and the unit's last journal
    // lines, down to its end.
    assert!(
        seen.contains("; PID 1: \"traefik.service: Sent signal SIGKILL to main process")
            && seen.contains("; its last journal lines: [")
            && seen.contains("] traefik.service: Main process exited, code=killed, status=9/KILL"),
        "{seen}"
    );
    // The moment: 20 s after deploy-proxy became active, by the guest's clock.
    let at: f64 = seen
        .split("at guest ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no guest time in {seen}"));
    let proxy = outcomes
        .iter()
        .find(|o| o["id"] == "unit:deploy-proxy.service=active")
        .expect("the proxy's wait");
    assert_eq!(proxy["held"], true, "{proxy}");
    let proxy_seen = proxy["seen"].as_str().unwrap_or_default();
    let active: f64 = proxy_seen
        .rsplit(" at ")
        .next()
        .and_then(|r| r.strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no guest time in {proxy_seen}"));
    let after = at - active;
    assert!(
        (f64::from(FALLS_AFTER_SECS)..f64::from(FALLS_AFTER_SECS) + 5.0).contains(&after),
        "traefik fell {after:.1} s after deploy-proxy became active: {seen}"
    );
    // The window failed at the fall, not at its end: decided within seconds of it.
    let secs = |d: &serde_json::Value| {
        d["secs"].as_f64().expect("a duration") + d["nanos"].as_f64().expect("a duration") / 1e9
    };
    let changed = secs(&stable["changed_at"]);
    let decided = secs(&stable["decided_at"]);
    assert!(decided - changed < 5.0, "{stable}");
    // report.md says it in the pair's outcomes.
    let md = std::fs::read_to_string(bundle.path().join("report.md")).expect("report.md");
    assert!(
        md.contains("✗ `cold-boot/stays-up`")
            && md.contains("traefik.service left active for failed"),
        "{md}"
    );
}
