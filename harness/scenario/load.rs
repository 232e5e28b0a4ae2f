//! Reading a scenario file: serde-saphyr for the shape, then the semantic checks that
//! need several fields at once, each pointing at the line it is about.

use std::collections::BTreeMap;
use std::path::Path;

use serde_saphyr::Spanned;

use super::action::Action;
use super::diag::{Diagnostic, into_usage_error};
use super::expectation::UnitExpectation;
use super::kinds::Expectation;
use super::kinds::{EXPECTATION_KINDS, ExpectationKind};
use super::model::{BootOptions, FaultRef, Phase, PhaseStart, Scenario};
use super::names::is_plain_name;
use super::raw::{RawExpectation, RawPhase, RawScenario};

/// Read and validate a scenario file. Errors are usage errors naming `file:line:col`.
pub fn load_scenario(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        into_usage_error(&[Diagnostic::whole_file(
            path,
            format!("cannot read scenario: {e}"),
        )])
    })?;
    parse_scenario(path, &text).map_err(|d| into_usage_error(&d))
}

/// Parse and validate scenario text; `path` names the file in diagnostics and is kept
/// in [`Scenario::path`].
pub fn parse_scenario(path: &Path, text: &str) -> Result<Scenario, Vec<Diagnostic>> {
    let raw: RawScenario =
        serde_saphyr::from_str(text).map_err(|e| vec![Diagnostic::from_yaml(path, &e)])?;
    let mut diags = Vec::new();
    let scenario = resolve(path, raw, &mut diags);
    if diags.is_empty() {
        Ok(scenario)
    } else {
        Err(diags)
    }
}

fn resolve(path: &Path, raw: RawScenario, diags: &mut Vec<Diagnostic>) -> Scenario {
    let name = raw.name.value.clone();
    if !is_plain_name(&name) {
        diags.push(Diagnostic::at(
            path,
            raw.name.referenced,
            format!("invalid scenario name {name:?}: expected letters, digits, '-', '_' or '.' (it names evidence folders)"),
        ));
    }
    if raw.phases.value.is_empty() {
        diags.push(Diagnostic::at(
            path,
            raw.phases.referenced,
            "a scenario needs at least one phase",
        ));
    }
    let mut phase_names: BTreeMap<String, ()> = BTreeMap::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut phases = Vec::new();
    let mut written_expectations = 0;
    for (index, phase) in raw.phases.value.into_iter().enumerate() {
        let phase = phase.value;
        if phase_names.insert(phase.name.value.clone(), ()).is_some() {
            diags.push(Diagnostic::at(
                path,
                phase.name.referenced,
                format!(
                    "duplicate phase name {:?}: phase names must be unique",
                    phase.name.value
                ),
            ));
        }
        if !is_plain_name(&phase.name.value) {
            diags.push(Diagnostic::at(
                path,
                phase.name.referenced,
                format!(
                    "invalid phase name {:?}: expected letters, digits, '-', '_' or '.'",
                    phase.name.value
                ),
            ));
        }
        written_expectations += phase.expect.len();
        phases.push(resolve_phase(path, index, phase, &mut ids, diags));
    }
    if !phases.is_empty() && written_expectations == 0 {
        diags.push(Diagnostic::at(
            path,
            raw.phases.referenced,
            "the scenario expects nothing: add an `expect:` list to at least one phase",
        ));
    }
    let report = match raw.report {
        Some(hints) => {
            check_hints(path, &hints, &ids, diags);
            hints.value
        }
        None => Default::default(),
    };
    // No focus unit named: follow the first unit the scenario waits for.
    let focus_unit = raw.focus_unit.or_else(|| {
        phases
            .iter()
            .flat_map(|p: &Phase| p.expect.iter())
            .find_map(|e| e.kind.awaited().map(|u| u.unit.clone()))
    });
    Scenario {
        name,
        path: path.to_path_buf(),
        milestones: raw.milestone.0,
        summary: raw.summary,
        focus_unit,
        report,
        phases,
    }
}

/// `report:` must name a non-empty group and highlight only ids the scenario has.
fn check_hints(
    path: &Path,
    hints: &Spanned<crate::scenario::model::ReportHints>,
    ids: &BTreeMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) {
    let at = hints.referenced;
    if hints
        .value
        .group
        .as_deref()
        .is_some_and(|g| g.trim().is_empty())
    {
        diags.push(Diagnostic::at(
            path,
            at,
            "`report.group` is empty: give the heading of the group this scenario's pairs join",
        ));
    }
    if let Some(h) = &hints.value.highlight {
        if h.title.trim().is_empty() {
            diags.push(Diagnostic::at(path, at, "`report.highlight.title` is empty: give the title shown above the highlighted expectations"));
        }
        if h.ids.is_empty() {
            diags.push(Diagnostic::at(
                path,
                at,
                "`report.highlight.ids` is empty: list expectation ids of this scenario",
            ));
        }
        for id in &h.ids {
            if !ids.contains_key(id) {
                let known: Vec<&str> = ids.keys().map(String::as_str).collect();
                diags.push(Diagnostic::at(
                    path,
                    at,
                    format!("`report.highlight.ids` names {id:?}, which is no expectation id of this scenario (its ids: {})", known.join(", ")),
                ));
            }
        }
    }
}

fn resolve_phase(
    path: &Path,
    index: usize,
    phase: RawPhase,
    ids: &mut BTreeMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) -> Phase {
    let start = match (&phase.start, index) {
        (None, 0) => PhaseStart::ColdBoot,
        (None, _) => PhaseStart::Continue,
        (Some(s), 0) if s.value != PhaseStart::ColdBoot => {
            diags.push(Diagnostic::at(
                path,
                s.referenced,
                "the first phase must start with `cold-boot` (there is no running guest yet)",
            ));
            s.value
        }
        (Some(s), _) => s.value,
    };
    let boot_at = phase.boot.as_ref().map(|b| b.referenced);
    let boot = match phase.boot {
        Some(b) => {
            if start == PhaseStart::Continue && !b.value.is_empty() {
                diags.push(Diagnostic::at(
                    path,
                    b.referenced,
                    "boot options need a boot: give this phase `start: reboot`, `power-cycle` or `cold-boot`",
                ));
            }
            check_boot(path, &b, diags);
            b.value
        }
        None => BootOptions::default(),
    };
    // Where each fault is named, so that a target that lacks one can point at the line.
    let mut fault_refs: Vec<FaultRef> = boot
        .faults
        .iter()
        .map(|name| FaultRef::at(name, boot_at))
        .collect();
    for a in &phase.actions {
        if let Action::Fault(name) = &a.value {
            fault_refs.push(FaultRef::at(name, Some(a.referenced)));
        }
    }
    let mut expect = Vec::new();
    for e in phase.expect {
        if let Some(resolved) = resolve_expectation(path, e, &phase.name.value, ids, diags) {
            expect.push(resolved);
        }
    }
    Phase {
        name: phase.name.value,
        start,
        boot,
        actions: phase.actions.into_iter().map(|a| a.value).collect(),
        expect,
        fault_refs,
    }
}

fn check_boot(path: &Path, boot: &Spanned<BootOptions>, diags: &mut Vec<Diagnostic>) {
    for key in boot.value.setenv.keys() {
        let ok = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            diags.push(Diagnostic::at(
                path,
                boot.referenced,
                format!("invalid setenv name {key:?}: expected an environment variable name (letters, digits, '_')"),
            ));
        }
    }
    for (k, v) in &boot.value.setenv {
        if v.contains(char::is_whitespace) {
            diags.push(Diagnostic::at(
                path,
                boot.referenced,
                format!("setenv {k}: value {v:?} contains whitespace, which the kernel command line would split"),
            ));
        }
    }
    for arg in &boot.value.kernel_args {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            diags.push(Diagnostic::at(
                path,
                boot.referenced,
                format!("invalid kernel argument {arg:?}: expected one word per list item"),
            ));
        }
    }
}

fn resolve_expectation(
    path: &Path,
    e: Spanned<RawExpectation>,
    phase: &str,
    ids: &mut BTreeMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Expectation> {
    let Spanned {
        value: mut raw,
        referenced: at,
        ..
    } = e;
    let kinds = raw.kinds();
    if kinds.len() != 1 {
        let found = if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        };
        diags.push(Diagnostic::at(
            path,
            at,
            format!(
                "an expectation needs exactly one of {} (found: {found})",
                EXPECTATION_KINDS.join(", ")
            ),
        ));
        return None;
    }
    // Companions of `wait_cycle:` belong to it alone.
    for (key, given) in [
        ("persist", raw.persist.is_some()),
        ("infer", raw.infer.is_some()),
    ] {
        if given && raw.wait_cycle.is_none() {
            diags.push(Diagnostic::at(
                path,
                at,
                format!(
                    "`{key}` belongs to a `wait_cycle:` expectation, not to `{}`",
                    kinds[0]
                ),
            ));
            return None;
        }
    }
    let kind = match raw.unit.take() {
        Some(unit) => {
            let (Some(state), Some(within)) = (raw.state, raw.within) else {
                diags.push(Diagnostic::at(
                    path,
                    at,
                    format!("expectation `unit: {unit}` needs `state:` (active, failed, inactive, activating) and `within:` (such as 90s)"),
                ));
                return None;
            };
            let properties = raw.properties.unwrap_or_default();
            for name in properties.keys() {
                let ok = name.starts_with(|c: char| c.is_ascii_uppercase())
                    && name.chars().all(|c| c.is_ascii_alphanumeric());
                if !ok {
                    diags.push(Diagnostic::at(
                        path,
                        at,
                        format!("`properties` of `unit: {unit}`: {name:?} is not a systemd property name (such as ExecMainStatus, Type, RemainAfterExit)"),
                    ));
                }
            }
            ExpectationKind::Unit(UnitExpectation {
                unit,
                state,
                within,
                result: raw.result,
                properties,
            })
        }
        None => {
            if raw.state.is_some()
                || raw.within.is_some()
                || raw.result.is_some()
                || raw.properties.is_some()
            {
                diags.push(Diagnostic::at(
                    path,
                    at,
                    format!("`state`, `within`, `result` and `properties` belong to a `unit:` expectation, not to `{}` (put `within` inside it)", kinds[0]),
                ));
                return None;
            }
            let kind = raw.take_kind()?;
            for problem in kind.spec().problems() {
                diags.push(Diagnostic::at(path, at, problem));
            }
            kind
        }
    };
    let (id, id_at) = match raw.id {
        Some(id) => (id.value, id.referenced),
        None => (kind.derived_id(), at),
    };
    if id.trim().is_empty() {
        diags.push(Diagnostic::at(
            path,
            id_at,
            "an expectation id must not be empty",
        ));
    }
    if let Some(other) = ids.insert(id.clone(), phase.to_string()) {
        diags.push(Diagnostic::at(
            path,
            id_at,
            format!("duplicate expectation id {id:?} (also in phase {other:?}): give one of them an explicit `id:`"),
        ));
    }
    Some(Expectation { id, kind })
}
