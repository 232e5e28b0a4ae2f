//! Redaction (issue 12): a real guest leaks secrets into its journal, a unit's
//! environment and a failed command's output, and its own private SSH host key into the
//! journal and a command's output. Run through `coldboot run` with a plan declaring
//! `redact:`, no file of the bundle (run folder, report.md, report.json, junit.xml
//! included) holds any of them, and the reports state how many were replaced. One boot.

mod common;

use std::path::{Path, PathBuf};

use common::run;

const SECRETS: [&str; 3] = ["SECRET-0123abcd", "SECRET-4567ef01", "SECRET-89abcdef"];

/// Every OpenSSH private key's base64 starts with this ("openssh-key-v1\0").
const OPENSSH_PRIVATE_B64: &str = "b3BlbnNzaC1rZXktdjE";

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_file_of_the_bundle_holds_a_secret() {
    require_vm!();
    let bundle = tempfile::tempdir().expect("tempdir");
    let out = run(&[
        "run",
        "--plan",
        "tests/scenarios/redaction/plan.yaml",
        "--evidence",
        bundle.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "the run is as planned");

    let mut all = Vec::new();
    files(bundle.path(), &mut all);
    let names: Vec<String> = all.iter().map(|p| p.display().to_string()).collect();
    for top in ["report.md", "report.json", "junit.xml"] {
        assert!(bundle.path().join(top).is_file(), "{top} in {names:?}");
    }
    let mut marked = 0;
    for path in &all {
        let bytes = std::fs::read(path).expect("read");
        for s in SECRETS.iter().chain([&OPENSSH_PRIVATE_B64]) {
            assert!(!contains(&bytes, s), "{} holds {s}", path.display());
        }
        if contains(&bytes, "[REDACTED]") {
            marked += 1;
        }
    }
    assert!(marked > 0, "no file shows a replacement: {names:?}");

    // The secrets were there to redact: the guest's journal and the failed command's
    // output each had some, and the counts say so.
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.path().join("report.json")).expect("report.json"),
    )
    .expect("JSON");
    let pair = &report["pairs"][0];
    let counts = pair["redactions"]
        .as_object()
        .expect("redactions in report.json");
    let count = |f: &str| counts.get(f).and_then(|n| n.as_u64()).unwrap_or(0);
    // Token + the key's base64 at least.
    assert!(count("journal-boot-1.json") >= 2, "{counts:?}");
    // The command's output: password, unit environment, the key block.
    assert!(count("verdict.json") >= 3, "{counts:?}");
    let md = std::fs::read_to_string(bundle.path().join("report.md")).expect("report.md");
    let line = md
        .lines()
        .find(|l| l.starts_with("- stock/leaks: "))
        .unwrap_or_else(|| panic!("no Redactions line in report.md:\n{md}"));
    assert!(md.contains("## Redactions"), "{md}");
    assert!(line.contains(" replaced ("), "{line}");
    assert!(line.contains("journal-boot-1.json"), "{line}");
}
