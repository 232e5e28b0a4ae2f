//! `coldboot check FILE...` and `coldboot schema`: validate files without booting, and
//! describe both formats for editors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;

use super::diag::Diagnostic;
use super::load::parse_scenario;
use super::plan::parse_plan;
use super::raw::{RawPlan, RawScenario};

/// Which format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A scenario file.
    Scenario,
    /// A plan file.
    Plan,
}

/// The result of checking one file.
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// The file as named.
    pub path: PathBuf,
    /// The format it was checked as.
    pub kind: FileKind,
    /// A one-line summary when valid (`scenario NAME: 2 phases, 5 expectations`), or the problems.
    pub result: Result<String, Vec<Diagnostic>>,
}

impl FileCheck {
    /// Whether the file is valid.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Check every file; each gets its own result, so one bad file does not hide the others.
pub fn check_files(paths: &[PathBuf]) -> Vec<FileCheck> {
    paths.iter().map(|p| check_file(p)).collect()
}

/// Check one file, deciding its kind from its location or its top-level keys.
pub fn check_file(path: &Path) -> FileCheck {
    let fail = |d: Diagnostic| FileCheck {
        path: path.to_path_buf(),
        kind: kind_from_location(path).unwrap_or(FileKind::Scenario),
        result: Err(vec![d]),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(Diagnostic::whole_file(path, format!("cannot read: {e}"))),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // Point at the first byte that is not UTF-8.
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let col = good.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
            return fail(Diagnostic {
                file: path.to_path_buf(),
                line,
                col,
                message: "the file is not UTF-8 text".to_string(),
            });
        }
    };
    let kind = kind_from_location(path).unwrap_or_else(|| kind_from_keys(&text));
    let result = match kind {
        FileKind::Scenario => parse_scenario(path, &text).map(|s| {
            format!(
                "scenario {}: {} phase(s), {} expectation(s)",
                s.name,
                s.phases.len(),
                s.expectations().count()
            )
        }),
        FileKind::Plan => parse_plan(path, &text).map(|p| {
            format!(
                "plan {}: {} target(s), {} run(s)",
                p.plan.name,
                p.plan.targets.len(),
                p.plan.runs.len()
            )
        }),
    };
    FileCheck {
        path: path.to_path_buf(),
        kind,
        result,
    }
}

fn kind_from_location(path: &Path) -> Option<FileKind> {
    let in_plans = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "plans");
    in_plans.then_some(FileKind::Plan)
}

/// A file with `runs` or `targets` at the top is a plan; anything else is read as a
/// scenario (which then reports what is wrong with it).
fn kind_from_keys(text: &str) -> FileKind {
    match serde_saphyr::from_str::<BTreeMap<String, IgnoredAny>>(text) {
        Ok(keys) if keys.contains_key("runs") || keys.contains_key("targets") => FileKind::Plan,
        _ => FileKind::Scenario,
    }
}

/// The JSON Schema (draft 2020-12) of both formats: `$defs/Scenario` and `$defs/Plan`,
/// with the document itself accepting either.
pub fn json_schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let scenario = generator.subschema_for::<RawScenario>();
    let plan = generator.subschema_for::<RawPlan>();
    let defs: serde_json::Map<String, serde_json::Value> = generator.take_definitions(true);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "coldboot scenario or plan file",
        "description": "Scenario files (scenarios/*.yaml) and plans (scenarios/plans/*.yaml) for coldboot.",
        "anyOf": [scenario.to_value(), plan.to_value()],
        "$defs": defs,
    })
}
