//! The nightly job's merge and compare steps, run as the example workflow runs them
//! (`examples/nightly/merge-and-compare.sh`), on bundles recorded from real runs:
//!
//! - `tests/fixtures/nightly/shard-1`, `shard-2`: `coldboot run --plan
//!   scenarios/plans/clean-boot.yaml --repeat 2 --shard I/2` (one repetition each);
//! - `regressed`: the same plan with its `after` target on the old gate
//!   (`gate=dashboard&timeout=120`), the regression a nightly job exists to catch.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nightly")
        .join(name)
}

/// Copy a fixture bundle to `dir/name` (the merge writes nothing into its inputs, but a
/// compare writes compare.md into NEW).
fn copy(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    common::copy_dir(&fixture(name), &to);
    to
}

fn script(shards: &Path, previous: &Path, out: &Path) -> Output {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nightly/merge-and-compare.sh"),
    )
    .arg(env!("CARGO_BIN_EXE_coldboot"))
    .args([shards, previous, out])
    .output()
    .expect("the script runs");
    eprintln!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn schema_errors(report: &serde_json::Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn first_night_merges_the_shards_into_one_report_with_repetitions() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-1", &shards);
    copy("shard-2", &shards);
    let merged = tmp.path().join("merged");
    let out = script(&shards, &tmp.path().join("previous"), &merged);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("first night"));

    let report = json(&merged.join("report.json"));
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    let ids: Vec<&str> = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["after/clean-cold-boot/rep-1", "after/clean-cold-boot/rep-2"]
    );
    let reps = &report["repetitions"][0];
    assert_eq!(reps["id"], "after/clean-cold-boot");
    assert_eq!(reps["flaky"], false);
    assert_eq!(reps["runs"].as_array().unwrap().len(), 2);
    let proxy = &reps["units"]["cold-boot deploy-proxy.service"];
    assert_eq!(proxy["n"], 2, "{reps:#}");
    let (p50, p95) = (
        proxy["p50"].as_f64().unwrap(),
        proxy["p95"].as_f64().unwrap(),
    );
    assert!(p50 > 5.0 && p50 <= p95 && p95 < 300.0, "{proxy}");
    assert!(report.get("not_run").is_none());

    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(md.contains("## Repetitions"), "{md}");
    assert!(md.contains("`after/clean-cold-boot` × 2"));
    assert!(md.contains("| `cold-boot deploy-proxy.service` | 2 |"));
    let run = json(&merged.join("run.json"));
    assert_eq!(run["plan"]["name"], "clean-boot");
    assert!(run["plan"].get("shard").is_none(), "{run}");
}

#[test]
fn a_missing_shard_is_reported_and_fails_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-2", &shards);
    let merged = tmp.path().join("merged");
    let out = script(&shards, &tmp.path().join("previous"), &merged);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after/clean-cold-boot/rep-1"));
    let report = json(&merged.join("report.json"));
    assert_eq!(
        report["not_run"],
        serde_json::json!(["after/clean-cold-boot/rep-1"])
    );
    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(md.contains("## Not run") && md.contains("- `after/clean-cold-boot/rep-1`"));
}

#[test]
fn shards_that_do_not_belong_together_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let one = copy("shard-1", tmp.path());
    // The same shard twice.
    let out = common::run(&[
        "report",
        one.to_str().unwrap(),
        one.to_str().unwrap(),
        "--into",
        tmp.path().join("m1").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than one shard"));
    // A bundle of another plan (regressed ran clean-boot with a --target override: the
    // same plan name and pairs, so it merges; the reference run is M1+M2).
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference-run");
    let out = common::run(&[
        "report",
        one.to_str().unwrap(),
        reference.to_str().unwrap(),
        "--into",
        tmp.path().join("m2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reference-run") && err.contains("different plans"),
        "{err}"
    );
    // A bundle from before run.json recorded its plan cannot be placed: refused.
    let old = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/evidence/m1-dashboard-held-back");
    let out = common::run(&[
        "report",
        one.to_str().unwrap(),
        old.to_str().unwrap(),
        "--into",
        tmp.path().join("m3").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("m1-dashboard-held-back") && err.contains("which plan"),
        "{err}"
    );
    // Several bundles without --into.
    let out = common::run(&["report", one.to_str().unwrap(), one.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("m1").join("report.md").exists());
}

#[test]
fn compare_flags_the_old_gate_coming_back() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-1", &shards);
    copy("shard-2", &shards);
    let previous = tmp.path().join("previous");
    assert_eq!(
        script(&shards, &tmp.path().join("none"), &previous)
            .status
            .code(),
        Some(0)
    );

    // Tonight: the old gate is back.
    let regressed = copy("regressed", tmp.path());
    let out = common::run(&[
        "compare",
        previous.to_str().unwrap(),
        regressed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let c = json(&regressed.join("compare.json"));
    assert_eq!(c["compared"], 1);
    let v = &c["verdicts"][0];
    assert_eq!(v["id"], "after/clean-cold-boot");
    assert_eq!(v["regression"], true);
    assert_eq!(v["old"], serde_json::json!(["pass", "pass"]));
    assert_ne!(v["new"][0], "pass");
    let md = std::fs::read_to_string(regressed.join("compare.md")).unwrap();
    assert!(md.contains("## Verdicts that changed") && md.contains("**regression**"));

    // The other way round, the fix: not a regression; and a bundle against itself.
    let out = common::run(&[
        "compare",
        regressed.to_str().unwrap(),
        previous.to_str().unwrap(),
        "--out",
        tmp.path().join("back").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let out = common::run(&[
        "compare",
        previous.to_str().unwrap(),
        previous.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no regression"));
}

#[test]
fn compare_times_move_one_way_only() {
    // With zero thresholds every unit whose recorded time grew is "slower" one way and
    // "faster" the other, never both.
    let tmp = tempfile::tempdir().unwrap();
    let a = copy("shard-1", tmp.path());
    let b = copy("shard-2", tmp.path());
    let slower = |old: &Path, new: &Path, out: &str| {
        let o = common::run(&[
            "compare",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--threshold-pct",
            "0",
            "--threshold-secs",
            "0",
            "--out",
            tmp.path().join(out).to_str().unwrap(),
        ]);
        let c = json(&tmp.path().join(out).join("compare.json"));
        let list = |regression: bool| -> Vec<(String, String)> {
            c["times"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["regression"] == regression)
                .map(|t| {
                    (
                        t["unit"].as_str().unwrap().into(),
                        t["figure"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        (o.status.code(), list(true), list(false))
    };
    let (code_ab, slower_ab, faster_ab) = slower(&a, &b, "ab");
    let (code_ba, slower_ba, faster_ba) = slower(&b, &a, "ba");
    assert_eq!(slower_ab, faster_ba);
    assert_eq!(faster_ab, slower_ba);
    assert!(
        !slower_ab.is_empty() && !faster_ab.is_empty(),
        "two real boots differ somewhere"
    );
    assert_eq!((code_ab, code_ba), (Some(1), Some(1)));
    // Bad thresholds are usage errors naming the flag.
    let o = common::run(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--threshold-pct=-5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--threshold-pct"));
}
