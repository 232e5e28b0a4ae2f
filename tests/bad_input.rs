//! Malformed scenario, plan and recipe files (tests/fixtures/bad/): each gives exit 2
//! with `file:line:col` and the message beside it (`NAME.expected`, or `expected` in a
//! recipe folder), in the harness's own words, and none panics. No VM needed.

mod common;

use std::path::{Path, PathBuf};

use common::run;

fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad")
}

/// The first line of stderr names the file with a line and a column (both from 1) and
/// holds `expected`.
fn check(args: &[&str], file: &str, expected: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(2), "{file}: {text}");
    assert!(!text.contains("panicked"), "{file}: {text}");
    let at = text
        .split(&format!("{file}:"))
        .nth(1)
        .unwrap_or_else(|| panic!("{file} is not named: {text}"));
    let mut numbers = at.splitn(3, ':');
    let line: u64 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let col: u64 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(
        line >= 1 && col >= 1,
        "{file}: no line and column in {text}"
    );
    assert!(
        text.contains(expected),
        "{file}: expected {expected:?} in {text}"
    );
    for internal in ["DuplicateKeyPolicy", "budget breached", "Nodes {"] {
        assert!(!text.contains(internal), "{file}: library words in {text}");
    }
}

fn expected_beside(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn every_bad_scenario_and_plan_is_exit_2_at_its_line_and_column() {
    let mut count = 0;
    for dir in [bad_dir(), bad_dir().join("plans")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let expected = expected_beside(&f.with_extension("expected"));
            let shown = f.to_str().unwrap();
            check(&["check", shown], shown, &expected);
            count += 1;
        }
    }
    assert!(count >= 30, "only {count} bad files");
}

#[test]
fn every_bad_recipe_is_exit_2_at_its_line_and_column() {
    let dir = bad_dir().join("recipes");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let recipe = entry.unwrap().path();
        let expected = expected_beside(&recipe.join("expected"));
        let file = recipe.join("recipe.yaml");
        check(
            &["image", "build", recipe.to_str().unwrap()],
            file.to_str().unwrap(),
            &expected,
        );
        count += 1;
    }
    assert!(count >= 4);
}

#[test]
fn a_huge_file_is_refused_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut text = String::from("name: huge\nmilestone: M1\nsummary: s\nphases:\n");
    for i in 0..60_000 {
        text.push_str(&format!(
            "  - {{name: p{i}, expect: [{{wait_cycle: absent}}, {{wait_cycle: absent}}]}}\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    let shown = path.to_str().unwrap();
    check(&["check", shown], shown, "too many YAML nodes");
}

/// Exit 2, nothing started, and the message names the target and says what is wrong.
fn refused(args: &[&str], says: &[&str]) {
    let out = run(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    assert!(
        !text.contains("qemu-system") && !text.contains("would write evidence"),
        "{args:?}: something ran or was listed: {text}"
    );
    for s in says {
        assert!(text.contains(s), "{args:?}: expected {s:?} in {text}");
    }
}

#[test]
fn targets_are_checked_before_anything_runs_dry_run_included() {
    let scenario = "scenarios/clean-cold-boot.yaml";
    for (target, says) in [
        (
            "recipe:/nonexistent",
            &["target t = recipe:/nonexistent", "cannot read recipe"][..],
        ),
        (
            "image:/etc/passwd",
            &["target t = image:/etc/passwd", "not a qcow2 disk image"],
        ),
        (
            "recipe:vm-images/ccci-model?gate=bogus",
            &[
                "gate=bogus",
                "not one of the allowed values: self, dashboard",
            ],
        ),
        (
            "recipe:vm-images/ccci-model?timeout=-1",
            &[
                "timeout=-1",
                "out of range (expected an integer from 1 to 3600)",
            ],
        ),
        (
            "recipe:vm-images/ccci-model?colour=red",
            &["no variant \"colour\""],
        ),
    ] {
        let flag = format!("t={target}");
        refused(&["run", "--dry-run", "--target", &flag, scenario], says);
    }
    // A plan's target is checked the same way, before the dry run prints anything.
    refused(
        &[
            "run",
            "--dry-run",
            "--plan",
            "scenarios/plans/m1.yaml",
            "--target",
            "after=recipe:vm-images/ccci-model?gate=bogus",
        ],
        &["target after = recipe:vm-images/ccci-model?gate=bogus"],
    );
}

#[test]
fn image_build_refuses_a_variant_outside_its_range() {
    refused(
        &[
            "image",
            "build",
            "vm-images/ccci-model",
            "--variant",
            "timeout=-1",
        ],
        &["variant timeout=-1", "out of range"],
    );
    refused(
        &[
            "image",
            "build",
            "vm-images/ccci-model",
            "--variant",
            "timeout=0",
        ],
        &["variant timeout=0", "from 1 to 3600"],
    );
}

#[test]
fn gc_refuses_a_bad_or_too_short_unused_for_and_image_flags_alone() {
    refused(
        &["gc", "--images", "--unused-for", "3x"],
        &["--unused-for", "3x", "invalid duration"],
    );
    refused(
        &["gc", "--images", "--unused-for", "30m"],
        &["--unused-for", "\"30m\" is shorter than 1h"],
    );
    refused(&["gc", "--unused-for", "24h"], &["--images"]);
    refused(&["gc", "--dry-run"], &["--images"]);
}

#[test]
fn booting_something_that_is_not_a_disk_is_a_usage_error() {
    refused(
        &["boot", "image:/etc/passwd", "--", "true"],
        &["image:/etc/passwd", "not a qcow2 disk image"],
    );
    refused(
        &["boot", "image:/nonexistent.qcow2", "--", "true"],
        &["does not exist"],
    );
}

/// A fault the target does not define is the scenario's mistake, found once the target is
/// known: exit 2 with the file, line and column, also under `--bisect` (where an
/// infrastructure error would be 125), and before any VM boots.
#[test]
fn an_unknown_fault_is_a_usage_error_at_its_line() {
    if let Some(why) = common::cannot_boot() {
        common::skip(&why);
        return;
    }
    let file = "tests/scenarios/unknown-fault.yaml";
    for bisect in [false, true] {
        let evidence = tempfile::tempdir().unwrap();
        let mut args = vec![
            "run",
            "--target",
            "after=recipe:vm-images/ccci-model?gate=self",
            "--accel",
            "tcg",
            "--evidence",
            evidence.path().to_str().unwrap(),
            file,
        ];
        if bisect {
            args.push("--bisect");
        }
        check(&args, file, "no-such-fault");
        // Nothing booted: no run folder has a QEMU command line.
        let booted = walk(evidence.path())
            .into_iter()
            .any(|p| p.ends_with("vm.json"));
        assert!(!booted, "a VM booted before the fault was checked");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
