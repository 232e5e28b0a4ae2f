//! Plans: named targets × scenarios, each with the outcome the plan expects, and their
//! expansion into the ordered list of runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_saphyr::Location;

use super::diag::{Diagnostic, into_usage_error};
use super::kinds::Expectation;
use super::load::parse_scenario;
use super::model::{Milestone, PlanReport, Scenario, Section};
use super::names::{Pattern, is_plain_name};
use super::raw::{RawClaim, RawExpected, RawPlan};

/// The outcome a plan expects for one (target, scenario) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Every expectation holds.
    Pass,
    /// The listed expectations fail in the described way, and no other fails.
    Reproduced(Reproduction),
}

/// What a reproduction must look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reproduction {
    /// Ids of the expectations that must fail.
    pub failing: Vec<String>,
    /// Regular expression the seen text of each failing expectation must match.
    pub seen: Option<Pattern>,
}

/// A validated plan, its scenario paths resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Short name.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// One paragraph for reports.
    pub summary: String,
    /// Target name → target string.
    pub targets: BTreeMap<String, String>,
    /// The entries, in file order.
    pub runs: Vec<PlanRun>,
    /// The report's milestone sections, in order (`report.sections:`).
    pub sections: Vec<Section>,
    /// `redact:` patterns: what no file of the evidence may show.
    pub redact: Vec<String>,
    /// `claims:`: the properties the summary names, each with the pairs and expectations
    /// that prove it (empty for a plan that does not list them).
    pub claims: Vec<Claim>,
}

/// A property a plan claims (`claims:`), named in its summary, and what proves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// The property, in the summary's words (such as `converges`).
    pub property: String,
    /// The pairs and expectations that prove it, in file order.
    pub proven_by: Vec<Proof>,
}

/// One pair's share of a claim's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proof {
    /// The pair id, `TARGET/SCENARIO_NAME`, a pair of the same plan.
    pub run: String,
    /// Ids of expectations of that pair's scenario.
    pub ids: Vec<String>,
}

/// One entry of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRun {
    /// A key of [`Plan::targets`].
    pub target: String,
    /// The scenario file, as found on disk.
    pub scenario: PathBuf,
    /// The outcome the plan expects.
    pub expected: Expected,
}

impl RunPair {
    /// The id without its repetition: the same for every repetition of one pair.
    pub fn base_id(&self) -> &str {
        base_id(&self.id, self.repetition)
    }
}

/// `id` without the `/rep-K` suffix that `--repeat` adds.
pub fn base_id(id: &str, repetition: Option<u32>) -> &str {
    match repetition {
        Some(k) => id.strip_suffix(&format!("/rep-{k}")).unwrap_or(id),
        None => id,
    }
}

/// `--repeat N`: each pair `n` times in a row, ids `ID/rep-1` ... `ID/rep-N` (so each
/// repetition has its own evidence folder and shards deal them out like any pair).
/// `n` of 1 leaves the pairs as they are.
pub fn repeat(pairs: Vec<RunPair>, n: u32) -> Vec<RunPair> {
    if n <= 1 {
        return pairs;
    }
    pairs
        .into_iter()
        .flat_map(|p| {
            (1..=n).map(move |k| RunPair {
                id: format!("{}/rep-{k}", p.id),
                repetition: Some(k),
                ..p.clone()
            })
        })
        .collect()
}

/// A plan with every scenario it names loaded.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    /// The plan.
    pub plan: Plan,
    /// Scenario file → scenario.
    pub scenarios: BTreeMap<PathBuf, Scenario>,
}

/// One (target, scenario) pair to run, with the outcome expected of it.
#[derive(Debug, Clone, Serialize)]
pub struct RunPair {
    /// Stable id, `TARGET_NAME/SCENARIO_NAME` (such as `before/dashboard-held-back`);
    /// names the evidence folder and decides the shard.
    pub id: String,
    /// The plan's name for the target.
    pub target_name: String,
    /// The target string (`recipe:...`, `image:...`, `nix:...`).
    pub target: String,
    /// The scenario to run.
    pub scenario: Scenario,
    /// The outcome the plan expects.
    pub expected: Expected,
    /// Which repetition this is under `--repeat N` (1-based), `None` when run once.
    pub repetition: Option<u32>,
}

/// A `--target NAME=TARGET` flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetFlag {
    /// The name (a plan's target name, or any name for a run without a plan).
    pub name: String,
    /// The target string.
    pub target: String,
}

/// Target kinds a target string may start with.
const TARGET_KINDS: [&str; 3] = ["recipe:", "image:", "nix:"];

/// Read a plan and every scenario it names. Errors are usage errors naming `file:line:col`.
pub fn load_plan(path: &Path) -> anyhow::Result<LoadedPlan> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        into_usage_error(&[Diagnostic::whole_file(
            path,
            format!("cannot read plan: {e}"),
        )])
    })?;
    parse_plan(path, &text).map_err(|d| into_usage_error(&d))
}

/// Parse and validate plan text; scenario paths are resolved against `path` and read.
pub fn parse_plan(path: &Path, text: &str) -> Result<LoadedPlan, Vec<Diagnostic>> {
    let raw: RawPlan =
        serde_saphyr::from_str(text).map_err(|e| vec![Diagnostic::from_yaml(path, &e)])?;
    let mut diags = Vec::new();
    if !is_plain_name(&raw.name.value) {
        diags.push(Diagnostic::at(
            path,
            raw.name.referenced,
            format!(
                "invalid plan name {:?}: expected letters, digits, '-', '_' or '.'",
                raw.name.value
            ),
        ));
    }
    for (name, target) in &raw.targets {
        if !is_plain_name(name) {
            diags.push(Diagnostic::at(
                path,
                target.referenced,
                format!("invalid target name {name:?}: expected letters, digits, '-', '_' or '.' (it names run ids)"),
            ));
        }
        if let Err(why) = check_target_string(&target.value) {
            diags.push(Diagnostic::at(path, target.referenced, why));
        }
    }
    if raw.runs.value.is_empty() {
        diags.push(Diagnostic::at(
            path,
            raw.runs.referenced,
            "a plan needs at least one entry in `runs`",
        ));
    }
    let mut scenarios: BTreeMap<PathBuf, Scenario> = BTreeMap::new();
    let mut runs = Vec::new();
    // Pair id → its scenario file and where the run names it (for `claims:`).
    let mut pair_ids: BTreeMap<String, (PathBuf, Location)> = BTreeMap::new();
    // A run whose scenario could not be read has no pair id: claims are not checked then.
    let mut every_scenario_read = true;
    for run in raw.runs.value {
        let run = run.value;
        if !raw.targets.contains_key(&run.target.value) {
            let known: Vec<&str> = raw.targets.keys().map(String::as_str).collect();
            diags.push(Diagnostic::at(
                path,
                run.target.referenced,
                format!(
                    "unknown target {:?}: expected one of the plan's targets ({})",
                    run.target.value,
                    known.join(", ")
                ),
            ));
        }
        let Some(file) = resolve_scenario_path(path, &run.scenario.value) else {
            every_scenario_read = false;
            diags.push(Diagnostic::at(
                path,
                run.scenario.referenced,
                format!(
                    "scenario file {:?} not found: expected a path relative to the plan ({}) or to the scenarios folder above plans/",
                    run.scenario.value,
                    path.parent().map(|p| p.display().to_string()).unwrap_or_default()
                ),
            ));
            continue;
        };
        if !scenarios.contains_key(&file) {
            let loaded = std::fs::read_to_string(&file)
                .map_err(|e| {
                    vec![Diagnostic::whole_file(
                        &file,
                        format!("cannot read scenario: {e}"),
                    )]
                })
                .and_then(|text| parse_scenario(&file, &text));
            match loaded {
                Ok(s) => {
                    scenarios.insert(file.clone(), s);
                }
                Err(inner) => {
                    every_scenario_read = false;
                    diags.extend(inner);
                    diags.push(Diagnostic::at(
                        path,
                        run.scenario.referenced,
                        format!(
                            "scenario {:?} is not valid (see the errors above)",
                            run.scenario.value
                        ),
                    ));
                    continue;
                }
            }
        }
        let scenario = &scenarios[&file];
        let pair_id = format!("{}/{}", run.target.value, scenario.name);
        if pair_ids
            .insert(pair_id.clone(), (file.clone(), run.scenario.referenced))
            .is_some()
        {
            diags.push(Diagnostic::at(
                path,
                run.scenario.referenced,
                format!(
                    "run {pair_id:?} is listed twice: each (target, scenario) pair may appear once"
                ),
            ));
        }
        let expected = match run.expect.value {
            RawExpected::Pass => Expected::Pass,
            RawExpected::Reproduced(r) => {
                for id in &r.failing {
                    if scenario.expectation(&id.value).is_none() {
                        let known: Vec<&str> =
                            scenario.expectations().map(|e| e.id.as_str()).collect();
                        diags.push(Diagnostic::at(
                            path,
                            id.referenced,
                            format!(
                                "scenario {} has no expectation {:?}: expected one of {}",
                                scenario.name,
                                id.value,
                                known.join(", ")
                            ),
                        ));
                    }
                }
                if r.failing.is_empty() {
                    diags.push(Diagnostic::at(
                        path,
                        run.expect.referenced,
                        "`reproduced.failing` is empty: list the expectation ids that must fail",
                    ));
                }
                Expected::Reproduced(Reproduction {
                    failing: r.failing.into_iter().map(|s| s.value).collect(),
                    seen: r.seen,
                })
            }
        };
        runs.push(PlanRun {
            target: run.target.value,
            scenario: file,
            expected,
        });
    }
    let sections = match raw.report {
        Some(r) => check_sections(path, r, &mut diags),
        None => Vec::new(),
    };
    let claims = if every_scenario_read {
        check_claims(
            path,
            &raw.summary,
            raw.claims,
            &pair_ids,
            &scenarios,
            &mut diags,
        )
    } else {
        Vec::new()
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    let plan = Plan {
        name: raw.name.value,
        path: path.to_path_buf(),
        summary: raw.summary,
        targets: raw.targets.into_iter().map(|(k, v)| (k, v.value)).collect(),
        runs,
        sections,
        redact: raw.redact.into_iter().map(|p| p.0).collect(),
        claims,
    };
    Ok(LoadedPlan { plan, scenarios })
}

/// `claims:`: each property named in the summary and given once; each proof names a
/// pair of this plan, once per claim, and ids its scenario has; and, when the plan lists
/// claims at all, every pair proves at least one.
fn check_claims(
    path: &Path,
    summary: &str,
    raw: Vec<serde_saphyr::Spanned<RawClaim>>,
    pairs: &BTreeMap<String, (PathBuf, Location)>,
    scenarios: &BTreeMap<PathBuf, Scenario>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Claim> {
    let words = |t: &str| {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let summary_words = words(summary);
    let mut claims: Vec<Claim> = Vec::new();
    let mut proving: Vec<&str> = Vec::new();
    for claim in raw {
        let claim = claim.value;
        let property = claim.property.value.trim().to_string();
        let at = claim.property.referenced;
        if property.is_empty() {
            diags.push(Diagnostic::at(
                path,
                at,
                "a claim's `property` is empty: name the property, in the summary's words",
            ));
        } else if !summary_words.contains(&words(&property)) {
            diags.push(Diagnostic::at(
                path,
                at,
                format!(
                    "claim {property:?} is not named in the plan's summary: the summary must say which property each pair proves"
                ),
            ));
        }
        if claims.iter().any(|c| c.property == property) {
            diags.push(Diagnostic::at(
                path,
                at,
                format!("claim {property:?} is given twice: keep one, with all its proofs"),
            ));
        }
        if claim.proven_by.value.is_empty() {
            diags.push(Diagnostic::at(
                path,
                claim.proven_by.referenced,
                format!(
                    "claim {property:?} has an empty `proven_by`: list the pairs and the expectation ids that prove it"
                ),
            ));
        }
        let mut proven_by: Vec<Proof> = Vec::new();
        for proof in claim.proven_by.value {
            let proof = proof.value;
            let run = proof.run.value;
            if proven_by.iter().any(|p| p.run == run) {
                diags.push(Diagnostic::at(
                    path,
                    proof.run.referenced,
                    format!(
                        "claim {property:?} names run {run:?} twice: list all its ids under one entry"
                    ),
                ));
            }
            match pairs.get_key_value(&run) {
                None => {
                    let known: Vec<&str> = pairs.keys().map(String::as_str).collect();
                    diags.push(Diagnostic::at(
                        path,
                        proof.run.referenced,
                        format!(
                            "claim {property:?}: the plan has no run {run:?}: expected TARGET/SCENARIO_NAME, one of {}",
                            known.join(", ")
                        ),
                    ));
                }
                Some((key, (file, _))) => {
                    proving.push(key.as_str());
                    let scenario = &scenarios[file];
                    if proof.ids.value.is_empty() {
                        diags.push(Diagnostic::at(
                            path,
                            proof.ids.referenced,
                            format!(
                                "claim {property:?}: no ids for run {run:?}: list the expectations of {} that prove it",
                                scenario.name
                            ),
                        ));
                    }
                    for id in &proof.ids.value {
                        if scenario.expectation(&id.value).is_none() {
                            let known: Vec<&str> =
                                scenario.expectations().map(|e| e.id.as_str()).collect();
                            diags.push(Diagnostic::at(
                                path,
                                id.referenced,
                                format!(
                                    "claim {property:?} needs expectation {:?} of run {run}, but scenario {} has none: expected one of {}",
                                    id.value,
                                    scenario.name,
                                    known.join(", ")
                                ),
                            ));
                        }
                    }
                }
            }
            proven_by.push(Proof {
                run,
                ids: proof.ids.value.into_iter().map(|i| i.value).collect(),
            });
        }
        claims.push(Claim {
            property,
            proven_by,
        });
    }
    if !claims.is_empty() {
        let mut idle: Vec<(&String, Location)> = pairs
            .iter()
            .filter(|(id, _)| !proving.contains(&id.as_str()))
            .map(|(id, (_, at))| (id, *at))
            .collect();
        idle.sort_by_key(|(_, at)| (at.line(), at.column()));
        for (id, at) in idle {
            diags.push(Diagnostic::at(
                path,
                at,
                format!(
                    "run {id:?} proves none of the plan's claims: name it, with the ids it proves, under a claim's `proven_by`, or drop the run"
                ),
            ));
        }
    }
    claims
}

/// `report.sections`: valid milestone names, non-empty titles, each milestone once.
fn check_sections(
    path: &Path,
    report: serde_saphyr::Spanned<PlanReport>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Section> {
    let at = report.referenced;
    let mut seen: Vec<&Milestone> = Vec::new();
    for s in &report.value.sections {
        if let Err(why) = Milestone::parse(s.milestone.as_str()) {
            diags.push(Diagnostic::at(path, at, format!("report.sections: {why}")));
        }
        if s.title.trim().is_empty() {
            diags.push(Diagnostic::at(
                path,
                at,
                format!(
                    "report.sections: the section of milestone {} has an empty title",
                    s.milestone
                ),
            ));
        }
        if s.order_title
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            diags.push(Diagnostic::at(
                path,
                at,
                format!(
                    "report.sections: the section of milestone {} has an empty order_title",
                    s.milestone
                ),
            ));
        }
        if seen.contains(&&s.milestone) {
            diags.push(Diagnostic::at(
                path,
                at,
                format!(
                    "report.sections: milestone {} has two sections: keep one",
                    s.milestone
                ),
            ));
        }
        seen.push(&s.milestone);
    }
    report.value.sections
}

/// Where a plan's `scenario:` points: relative to the plan's folder, then (for a plan in
/// a `plans/` folder) to the folder above; `.yaml` may be left out.
pub fn resolve_scenario_path(plan: &Path, written: &str) -> Option<PathBuf> {
    let dir = plan.parent().unwrap_or(Path::new(""));
    let mut bases = vec![dir.to_path_buf()];
    if dir.file_name().is_some_and(|n| n == "plans") {
        bases.push(dir.parent().unwrap_or(Path::new("")).to_path_buf());
    }
    let written_path = Path::new(written);
    let mut names = vec![written_path.to_path_buf()];
    if written_path.extension().is_none() {
        names.push(PathBuf::from(format!("{written}.yaml")));
    }
    bases
        .iter()
        .flat_map(|b| names.iter().map(move |n| b.join(n)))
        .find(|p| p.is_file())
}

fn check_target_string(target: &str) -> Result<(), String> {
    let ok = TARGET_KINDS
        .iter()
        .any(|k| target.strip_prefix(k).is_some_and(|rest| !rest.is_empty()));
    if ok {
        // The whole syntax (query keys, `#ATTR`); whether the files are there and the
        // variants resolve is checked before a run (`targets::check`).
        super::TargetSpec::parse(target)
            .map(drop)
            .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "invalid target {target:?}: expected recipe:DIR[?KEY=VALUE&...], image:PATH or nix:FLAKEREF#ATTR"
        ))
    }
}

impl LoadedPlan {
    /// The claim of this property, if the plan makes it.
    pub fn claim(&self, property: &str) -> Option<&Claim> {
        self.plan.claims.iter().find(|c| c.property == property)
    }

    /// The expectations a claim names, each with its pair id, in the claim's order
    /// (empty when the plan does not make the claim).
    pub fn claimed(&self, property: &str) -> Vec<(&str, &Expectation)> {
        let Some(claim) = self.claim(property) else {
            return Vec::new();
        };
        claim
            .proven_by
            .iter()
            .flat_map(|proof| {
                let scenario = self
                    .plan
                    .runs
                    .iter()
                    .map(|r| &self.scenarios[&r.scenario])
                    .zip(&self.plan.runs)
                    .find(|(s, r)| format!("{}/{}", r.target, s.name) == proof.run)
                    .map(|(s, _)| s);
                proof.ids.iter().filter_map(move |id| {
                    scenario
                        .and_then(|s| s.expectation(id))
                        .map(|e| (proof.run.as_str(), e))
                })
            })
            .collect()
    }

    /// The runs in plan order, each with its scenario and stable id.
    pub fn pairs(&self) -> Vec<RunPair> {
        self.plan
            .runs
            .iter()
            .map(|run| {
                let scenario = self.scenarios[&run.scenario].clone();
                RunPair {
                    id: format!("{}/{}", run.target, scenario.name),
                    target_name: run.target.clone(),
                    target: self.plan.targets[&run.target].clone(),
                    scenario,
                    expected: run.expected.clone(),
                    repetition: None,
                }
            })
            .collect()
    }

    /// Replace targets by `--target NAME=TARGET` flags. A name the plan does not have is
    /// a usage error that lists the plan's names.
    pub fn override_targets(&mut self, flags: &[TargetFlag]) -> anyhow::Result<()> {
        for flag in flags {
            let Some(slot) = self.plan.targets.get_mut(&flag.name) else {
                let known: Vec<&str> = self.plan.targets.keys().map(String::as_str).collect();
                return Err(crate::error::usage(format!(
                    "--target {}={}: plan {} has no target {:?} (it has: {})",
                    flag.name,
                    flag.target,
                    self.plan.path.display(),
                    flag.name,
                    known.join(", ")
                )));
            };
            slot.clone_from(&flag.target);
        }
        Ok(())
    }
}

/// Pairs for a run without a plan: every target × every scenario, each expected to pass,
/// targets outermost (so all scenarios of one target sit together).
pub fn adhoc_pairs(targets: &[TargetFlag], scenarios: &[Scenario]) -> Vec<RunPair> {
    targets
        .iter()
        .flat_map(|t| {
            scenarios.iter().map(move |s| RunPair {
                id: format!("{}/{}", t.name, s.name),
                target_name: t.name.clone(),
                target: t.target.clone(),
                scenario: s.clone(),
                expected: Expected::Pass,
                repetition: None,
            })
        })
        .collect()
}

/// Parse a `--target NAME=TARGET` value.
pub fn parse_target_flag(value: &str) -> anyhow::Result<TargetFlag> {
    let bad = |why: String| {
        crate::error::usage(format!(
            "--target {value:?}: {why}; expected NAME=TARGET, such as after=recipe:vm-images/debian-stock"
        ))
    };
    let (name, target) = value
        .split_once('=')
        .ok_or_else(|| bad("no '=' between the name and the target".to_string()))?;
    if !is_plain_name(name) {
        return Err(bad(format!(
            "invalid name {name:?} (letters, digits, '-', '_' or '.')"
        )));
    }
    check_target_string(target).map_err(bad)?;
    Ok(TargetFlag {
        name: name.to_string(),
        target: target.to_string(),
    })
}
