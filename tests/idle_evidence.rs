//! The end-of-phase evidence read at the boot's idle moment (harness/run/idle.rs), on a
//! real guest: one debian-stock boot, three phases (tests/scenarios/idle-evidence.yaml).
//!
//! - A unit started after the idle read (a transient unit: a job and a unit change
//!   PID 1 reports) makes the harness read every unit again at that phase's end: the
//!   phase's units file has the new unit.
//! - A later phase that changes no unit keeps the read made at the next idle moment.
//! - A line logged after that read still reaches `journal-boot-1.json`, from the read
//!   after its last cursor, with no entry twice

mod common;

use std::path::Path;

fn timeline(pair: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(pair.join("timeline.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["event"].as_str().unwrap().to_string(),
                v["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The guest time (s) in "every unit's state read at guest 28.5 s, unchanged to the end
/// of phase PHASE".
fn idle_read_at(events: &[(String, String)], phase: &str) -> Option<f64> {
    events.iter().find_map(|(e, d)| {
        if e != "units read at the idle moment" || !d.ends_with(&format!("of phase {phase}")) {
            return None;
        }
        d.strip_prefix("every unit's state read at guest ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

#[test]
fn idle_reads_are_kept_only_while_nothing_changed_and_the_journal_is_completed() {
    require_vm!();
    let evidence = tempfile::tempdir().unwrap();
    let out = common::run(&[
        "run",
        "--target",
        "stock=recipe:vm-images/debian-stock",
        "tests/scenarios/idle-evidence.yaml",
        "--evidence",
        evidence.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let pair = evidence.path().join("stock__idle-evidence");
    // Both `path:` expectations were judged (and held: the run passed).
    let verdict = std::fs::read_to_string(pair.join("verdict.json")).unwrap();
    assert!(
        verdict.contains("/run/coldboot-idle-path exists"),
        "{verdict}"
    );
    assert!(verdict.contains("/run/coldboot-idle-no-such-path does not exist"));
    let events = timeline(&pair);

    // The transient unit came after any idle read: read again at that phase's end.
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "units read at the phase's end"
                && d.contains("job or unit changes since the idle read began")),
        "{events:#?}"
    );
    let restarted = std::fs::read_to_string(pair.join("units-restarted.txt")).unwrap();
    assert!(
        restarted.contains("Id=coldboot-idle-probe.service"),
        "the phase's units file misses the unit started in the phase"
    );

    // Nothing changed in the last phase: the read of the next idle moment is kept...
    let read_at = idle_read_at(&events, "logged").expect("the last phase kept an idle read");
    let logged = std::fs::read_to_string(pair.join("units-logged.txt")).unwrap();
    assert!(logged.contains("Id=coldboot-idle-probe.service"));
    // Read through the recorder's connection to PID 1, not with systemctl over SSH.
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "units read at the idle moment"
                && d.contains("PID 1's properties (read through the recorder)")),
        "{events:#?}"
    );
    let plot = std::fs::read_to_string(pair.join("plot-boot-1.svg")).unwrap();
    assert!(
        plot.contains("read through the recorder"),
        "the plot's read"
    );

    // ...and the line logged after it is in the journal, once, in order.
    let journal = std::fs::read_to_string(pair.join("journal-boot-1.json")).unwrap();
    let entries: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let marks: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["MESSAGE"] == "MARK-AFTER-IDLE")
        .collect();
    assert_eq!(marks.len(), 1, "the line logged after the idle read");
    let mono = |e: &serde_json::Value| -> u64 {
        e["__MONOTONIC_TIMESTAMP"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        mono(marks[0]) as f64 / 1e6 > read_at,
        "the mark ({} µs) was logged after the read began ({read_at} s), so it came from the \
         read after the cursor",
        mono(marks[0])
    );
    let cursors: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["__CURSOR"].as_str().unwrap())
        .collect();
    assert_eq!(cursors.len(), entries.len(), "an entry appears twice");

    // A daemon-reload changes no unit's state, yet may change their properties: PID 1's
    // Reloading signal is recorded, and the last phase's units are read at its end.
    let recorded = std::fs::read_to_string(pair.join("recorder-boot-1.jsonl")).unwrap();
    assert!(
        recorded.contains(r#""event":"reloading""#),
        "no Reloading signal recorded"
    );
    let last_end = events
        .iter()
        .rev()
        .find(|(e, _)| e.starts_with("units read at"))
        .unwrap();
    assert_eq!(last_end.0, "units read at the phase's end", "{last_end:?}");
}
