//! The evidence bundle's layout, in one place: the name of every file a run folder or the
//! bundle's top holds, the version of report.json's shape, and the one point through
//! which the harness writes a whole file into a bundle ([`write_atomic`]). `run/` writes
//! through it and `evidence/` reads and renders by it; a filter on what is written (such
//! as redaction) belongs in [`write_atomic`].

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::scenario::Evidence;

/// Version of `report.json`'s shape; bump on any incompatible change.
/// 3: outcomes carry `kind` (the expectation as data), `focus_unit` may be null, pairs
/// carry the scenario's `report` hints, and an error verdict its `class`.
pub const SCHEMA_VERSION: u32 = 3;

/// A pair's report, in its run folder.
pub const VERDICT: &str = "verdict.json";
/// The harness's own timeline of a pair, one JSON object a line.
pub const TIMELINE: &str = "timeline.jsonl";
/// The QEMU command line, accelerator and harness version of a pair.
pub const VM: &str = "vm.json";
/// The target's identity and the base image's checksums of a pair.
pub const IDENTITY: &str = "identity.json";
/// At the bundle's top: run folder names in the plan's order.
pub const ORDER: &str = "order.json";
/// At the bundle's top: the command line, the machine and the report's sections.
pub const RUN: &str = "run.json";
/// At the bundle's top: the report for people.
pub const REPORT_MD: &str = "report.md";
/// At the bundle's top: the machine-readable report.
pub const REPORT_JSON: &str = "report.json";
/// At the bundle's top: the JUnit report.
pub const JUNIT: &str = "junit.xml";
/// At the bundle's top: the unit timeline drawing.
pub const TIMELINE_SVG: &str = "timeline.svg";
/// Files that make a folder a run folder (any one of them).
pub const RUN_FOLDER_MARKERS: [&str; 3] = [VERDICT, TIMELINE, VM];
/// The prefix of a phase's unit-state file.
pub const UNITS_PREFIX: &str = "units-";
/// The suffix of a phase's unit-state file.
pub const UNITS_SUFFIX: &str = ".txt";

/// `units-PHASE.txt`: unit states at the end of a phase.
pub fn units_file(phase: &str) -> String {
    format!("{UNITS_PREFIX}{}{UNITS_SUFFIX}", file_safe(phase))
}

/// Whether `name` is a phase's unit-state file.
pub fn is_units_file(name: &str) -> bool {
    name.starts_with(UNITS_PREFIX) && name.ends_with(UNITS_SUFFIX)
}

/// `journal-boot-N.json`: a boot's whole journal.
pub fn journal_file(boot: u32) -> String {
    format!("journal-boot-{boot}.json")
}

/// `signals-boot-N.jsonl`: PID 1's unit signals about the scenario's units in a boot.
pub fn signals_file(boot: u32) -> String {
    format!("signals-boot-{boot}.jsonl")
}

/// `recorder-boot-N.jsonl`: what the recorder brought from PID 1 in a boot, then its
/// summary line (`check::report::RecorderSummary`).
pub fn recorder_file(boot: u32) -> String {
    format!("recorder-boot-{boot}.jsonl")
}

/// `connections-boot-N.jsonl`: the guest's TCP connection attempts in a boot.
pub fn connections_file(boot: u32) -> String {
    format!("connections-boot-{boot}.jsonl")
}

/// `critical-chain-boot-N.txt`: the focus unit's critical chain in a boot.
pub fn critical_chain_file(boot: u32) -> String {
    format!("critical-chain-boot-{boot}.txt")
}

/// `plot-boot-N.svg`: a boot's plot, drawn from every unit's timestamps.
pub fn plot_file(boot: u32) -> String {
    format!("plot-boot-{boot}.svg")
}

/// `waitfor-boot-N.json`: the wait-cycle watcher's reads in a boot.
pub fn waitfor_json(boot: u32) -> String {
    format!("waitfor-boot-{boot}.json")
}

/// `waitfor-boot-N.dot`: the wait-for graph of a boot.
pub fn waitfor_dot(boot: u32) -> String {
    format!("waitfor-boot-{boot}.dot")
}

/// The run folder's name for a pair id (`target/scenario` → `target__scenario`).
pub fn pair_folder(id: &str) -> String {
    file_safe(&id.replace('/', "__"))
}

/// The run folder's file that shows an expectation's evidence, as its kind declares it
/// (`KindSpec::evidence`), for a phase on a boot.
pub fn evidence_file(tag: Evidence, phase: &str, boot: u32) -> String {
    match tag {
        Evidence::PhaseUnits => units_file(phase),
        Evidence::BootJournal => journal_file(boot),
        Evidence::BootWaitFor => waitfor_json(boot),
        Evidence::Verdict => VERDICT.to_string(),
        Evidence::Timeline => TIMELINE.to_string(),
    }
}

/// A name safe to use in a file name.
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write `bytes` to `path` atomically (a temporary file, then a rename), so an
/// interrupted run never leaves half a file. Every whole file of a bundle is written here,
/// and filtered by the redactor registered for its folder ([`super::redact`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let bytes = super::redact::filter(path, bytes);
    let bytes: &[u8] = &bytes;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path)?;
    Ok(())
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_layout() {
        assert_eq!(units_file("good boot"), "units-good_boot.txt");
        assert!(is_units_file(&units_file("p")));
        assert!(!is_units_file(VERDICT));
        assert_eq!(pair_folder("before/old-gate"), "before__old-gate");
        assert_eq!(
            evidence_file(Evidence::BootWaitFor, "p", 2),
            "waitfor-boot-2.json"
        );
        assert_eq!(evidence_file(Evidence::PhaseUnits, "p", 2), "units-p.txt");
    }

    #[test]
    fn the_registry_filters_by_the_longest_folder_and_counts() {
        use super::super::redact::{Redactor, finish_folder, read_counts, register, unregister};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pair = root.join("t__s");
        register(&root, Redactor::new(&["TOP-[0-9]+"]).unwrap());
        register(&pair, Redactor::new(&["PAIR-[0-9]+"]).unwrap());
        write_atomic(&pair.join("a.txt"), b"PAIR-1 PAIR-2 TOP-1").unwrap();
        std::fs::write(pair.join("serial-1.log"), "x PAIR-3 y").unwrap();
        std::fs::write(pair.join("overlay.qcow2"), "PAIR-4").unwrap();
        let counts = finish_folder(&pair).unwrap();
        assert_eq!(counts["a.txt"], 2);
        assert_eq!(counts["serial-1.log"], 1);
        assert!(!counts.contains_key("overlay.qcow2"));
        assert_eq!(
            std::fs::read_to_string(pair.join("serial-1.log")).unwrap(),
            "x [REDACTED] y"
        );
        assert_eq!(read_counts(&pair), counts);
        // The pair's redactor is gone; the root's still applies.
        write_atomic(&pair.join("b.txt"), b"PAIR-5 TOP-2").unwrap();
        assert_eq!(
            std::fs::read_to_string(pair.join("b.txt")).unwrap(),
            "PAIR-5 [REDACTED]"
        );
        unregister(&root);
    }
}
