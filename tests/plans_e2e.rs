//! End to end through `coldboot run` on the cc-ci model: the reference plans (M1 and M2)
//! give the planned verdicts, the old gate's deadlock reproduces for real, a wrong
//! expectation gives `fail` naming itself, and a malformed file gives exit 2 with its
//! line and column. Real QEMU, real systemd, real SSH.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::run;

/// VM runs in this binary go one at a time (each run may itself use two VMs).
static VM: Mutex<()> = Mutex::new(());

/// The pairs of a bundle's report.json: (id, verdict word, matches plan, whole pair).
fn pairs(bundle: &Path) -> Vec<(String, String, bool, serde_json::Value)> {
    let text = std::fs::read_to_string(bundle.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report.json is JSON");
    report["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            let word = p["verdict_word"].as_str().unwrap_or_default().to_string();
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                word,
                p["matches_plan"].as_bool().unwrap_or(false),
                p.clone(),
            )
        })
        .collect()
}

#[test]
fn reference_plans_give_the_planned_verdicts() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let bundle = tempfile::tempdir().expect("tempdir");
    let b = bundle.path().to_str().expect("utf-8");
    let out = run(&[
        "run",
        "--plan",
        "scenarios/plans/m1.yaml",
        "--plan",
        "scenarios/plans/m2.yaml",
        "--jobs",
        "2",
        "--evidence",
        b,
    ]);
    let got = pairs(bundle.path());
    for (id, word, matches, _) in &got {
        eprintln!("{id}: {word} (as planned: {matches})");
    }
    assert_eq!(out.status.code(), Some(0), "every verdict as planned");
    let verdict_of = |id: &str| {
        got.iter()
            .find(|(i, ..)| i == id)
            .map(|(_, w, ..)| w.clone())
            .unwrap_or_else(|| panic!("no pair {id}"))
    };
    assert_eq!(verdict_of("before/dashboard-held-back"), "reproduced");
    for id in [
        "after/dashboard-held-back",
        "after/broken-traefik",
        "after/broken-traefik-silent",
        "after/consumers-order",
        "after/clean-cold-boot",
    ] {
        assert_eq!(verdict_of(id), "pass", "{id}");
    }
    // One pair that two plans share ran once.
    assert_eq!(got.len(), 6);
}

#[test]
fn the_model_deadlocks_on_the_old_gate_and_rolls_back_after_a_power_cut() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let bundle = tempfile::tempdir().expect("tempdir");
    let b = bundle.path().to_str().expect("utf-8");
    let out = run(&[
        "run",
        "--plan",
        "tests/scenarios/plans/model.yaml",
        "--jobs",
        "2",
        "--evidence",
        b,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let got = pairs(bundle.path());
    assert_eq!(got.len(), 2);
    for (id, word, ..) in &got {
        assert_eq!(word, "pass", "{id} showed as described");
    }
    let seen = |pair: &str, id: &str| {
        let p = &got.iter().find(|(i, ..)| i == pair).expect("pair").3;
        p["outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .find(|o| o["id"] == id)
            .map(|o| o["seen"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert!(
        seen("old/model-deadlock", "unit:deploy-proxy.service=failed").contains("Result=timeout")
    );
    // The second phase ran on a second boot of the same disk.
    let reboot = &got
        .iter()
        .find(|(i, ..)| i == "fixed/model-reboot-broken")
        .expect("pair")
        .3;
    assert_eq!(reboot["boots"].as_array().map(Vec::len), Some(2));
    assert!(seen("fixed/model-reboot-broken", "reboot/rolled-back").contains("decision=rollback"));
}

#[test]
fn a_wrong_expectation_fails_and_says_what_was_seen() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let bundle = tempfile::tempdir().expect("tempdir");
    let b = bundle.path().to_str().expect("utf-8");
    let out = run(&[
        "run",
        "--target",
        "stock=recipe:vm-images/debian-stock",
        "tests/scenarios/wrong-expectation.yaml",
        "--evidence",
        b,
    ]);
    assert_eq!(out.status.code(), Some(1), "a verdict not as planned");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ssh-failed"),
        "names the expectation: {stderr}"
    );
    assert!(
        stderr.contains("ssh.service is active"),
        "says what was seen: {stderr}"
    );
    let got = pairs(bundle.path());
    assert_eq!(got[0].1, "fail");
}

#[test]
fn a_malformed_scenario_is_exit_2_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\nmilestone: M1\nsummary: x\nphases:\n  - name: boot\n    expect:\n      - unit: deploy-proxy.service\n        state: actve\n        within: 10s\n",
    )
    .expect("write");
    let p = path.to_str().expect("utf-8");
    let out = run(&["run", "--target", "t=recipe:vm-images/ccci-model", p]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{p}:8:")),
        "names file and line: {stderr}"
    );
    let out = run(&["check", p]);
    assert_eq!(out.status.code(), Some(2));
}
