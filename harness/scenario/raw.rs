//! The file formats exactly as serde-saphyr reads them, with spans kept where a later
//! semantic check needs to point at a line. The JSON Schema is derived from these types,
//! so it describes what the parser accepts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::action::Action;
use super::duration::ScenarioDuration;
use super::expectation::{
    BootBudget, CommandExpectation, DEFAULT_PERSIST, FileExpectation, HttpExpectation,
    JournalExpectation, NoFailedUnits, OrderExpectation, UnitResult, UnitState, WaitCycleCheck,
    WaitCycleExpectation,
};
use super::kinds::{
    EXPECTATION_KINDS, ExpectationKind, GateHonestExpectation, PathExpectation, StableExpectation,
};
use super::model::{BootOptions, Milestones, PhaseStart, ReportHints};
use super::names::{Pattern, UnitName};

/// A scenario file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Scenario")]
pub(crate) struct RawScenario {
    /// Short name (letters, digits, `-`, `_`, `.`), used in run ids and evidence folders.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A milestone name (such as `M1` or `nightly`), or a list of them.
    pub milestone: Milestones,
    /// One paragraph for reports.
    pub summary: String,
    /// The unit the progress line and the report follow (default: the unit of the first
    /// `unit:` expectation).
    #[serde(default)]
    pub focus_unit: Option<UnitName>,
    /// How reports present this scenario's pairs.
    #[serde(default)]
    #[schemars(with = "Option<ReportHints>")]
    pub report: Option<Spanned<ReportHints>>,
    /// The phases, in order.
    #[schemars(with = "Vec<RawPhase>", length(min = 1))]
    pub phases: Spanned<Vec<Spanned<RawPhase>>>,
}

/// One phase of a scenario.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Phase")]
pub(crate) struct RawPhase {
    /// Name, unique within the scenario.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// How the phase begins: the first phase is a cold boot; later phases default to `continue`.
    #[serde(default)]
    #[schemars(with = "Option<PhaseStart>")]
    pub start: Option<Spanned<PhaseStart>>,
    /// Options for the boot that starts the phase.
    #[serde(default)]
    #[schemars(with = "BootOptions")]
    pub boot: Option<Spanned<BootOptions>>,
    /// Steps, in order.
    #[serde(default)]
    #[schemars(with = "Vec<Action>")]
    pub actions: Vec<Spanned<Action>>,
    /// What must hold at the end of the phase.
    #[serde(default)]
    #[schemars(with = "Vec<RawExpectation>")]
    pub expect: Vec<Spanned<RawExpectation>>,
}

/// An expectation as written: an optional `id` and exactly one kind key. `state`,
/// `within` and `result` go with `unit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpectation {
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    #[serde(default)]
    pub unit: Option<UnitName>,
    #[serde(default)]
    pub state: Option<UnitState>,
    #[serde(default)]
    pub within: Option<ScenarioDuration>,
    #[serde(default)]
    pub result: Option<UnitResult>,
    #[serde(default)]
    pub properties: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub order: Option<OrderExpectation>,
    #[serde(default)]
    pub http: Option<HttpExpectation>,
    #[serde(default)]
    pub journal: Option<JournalExpectation>,
    #[serde(default)]
    pub file: Option<FileExpectation>,
    #[serde(default)]
    pub command: Option<CommandExpectation>,
    #[serde(default)]
    pub no_failed_units: Option<NoFailedUnits>,
    #[serde(default)]
    pub boot_budget: Option<ScenarioDuration>,
    #[serde(default)]
    pub wait_cycle: Option<WaitCycleExpectation>,
    #[serde(default)]
    pub path: Option<PathExpectation>,
    #[serde(default)]
    pub gate_honest: Option<GateHonestExpectation>,
    pub stable: Option<StableExpectation>,
    #[serde(default)]
    pub persist: Option<ScenarioDuration>,
    #[serde(default)]
    pub infer: Option<bool>,
}

impl RawExpectation {
    /// The kind keys present, in [`EXPECTATION_KINDS`] order.
    pub fn kinds(&self) -> Vec<&'static str> {
        // Destructured in full, so that a new field does not compile until it is placed
        // here: a kind key (in EXPECTATION_KINDS's order) or a companion of one.
        let RawExpectation {
            id: _,
            unit,
            state: _,
            within: _,
            result: _,
            properties: _,
            order,
            http,
            journal,
            file,
            command,
            no_failed_units,
            boot_budget,
            wait_cycle,
            path,
            gate_honest,
            stable,
            persist: _,
            infer: _,
        } = self;
        let present = [
            unit.is_some(),
            order.is_some(),
            http.is_some(),
            journal.is_some(),
            file.is_some(),
            command.is_some(),
            no_failed_units.is_some(),
            boot_budget.is_some(),
            wait_cycle.is_some(),
            path.is_some(),
            gate_honest.is_some(),
            stable.is_some(),
        ];
        EXPECTATION_KINDS
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The kind of an expectation that is not `unit:` (which needs its companions, see
    /// `load`), taken out of its field; `None` when no such kind key is present.
    pub fn take_kind(&mut self) -> Option<ExpectationKind> {
        let persist = self.persist.unwrap_or(ScenarioDuration(DEFAULT_PERSIST));
        let infer = self.infer.unwrap_or(true);
        [
            self.order.take().map(ExpectationKind::Order),
            self.http.take().map(ExpectationKind::Http),
            self.journal.take().map(ExpectationKind::Journal),
            self.file.take().map(ExpectationKind::File),
            self.command.take().map(ExpectationKind::Command),
            self.no_failed_units
                .take()
                .map(ExpectationKind::NoFailedUnits),
            self.boot_budget
                .take()
                .map(|v| ExpectationKind::BootBudget(BootBudget(v))),
            self.wait_cycle.take().map(|expect| {
                ExpectationKind::WaitCycle(WaitCycleCheck {
                    expect,
                    persist,
                    infer,
                })
            }),
            self.path.take().map(ExpectationKind::Path),
            self.gate_honest.take().map(ExpectationKind::GateHonest),
            self.stable.take().map(ExpectationKind::Stable),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

// The schema spells out each accepted shape, which the flat struct cannot express:
// one kind key, an optional id, and for `unit` its companions.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UnitShape {
    id: Option<String>,
    /// The unit watched.
    unit: UnitName,
    /// The ActiveState it must reach.
    state: UnitState,
    /// How long it may take.
    within: ScenarioDuration,
    /// The systemd Result it must have.
    result: Option<UnitResult>,
    /// systemd properties it must show once there (`systemctl show -p NAME --value`).
    properties: Option<std::collections::BTreeMap<String, String>>,
}

macro_rules! shape {
    ($name:ident, $key:ident, $ty:ty) => {
        #[derive(JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct $name {
            id: Option<String>,
            $key: $ty,
        }
    };
}
shape!(OrderShape, order, OrderExpectation);
shape!(HttpShape, http, HttpExpectation);
shape!(JournalShape, journal, JournalExpectation);
shape!(FileShape, file, FileExpectation);
shape!(CommandShape, command, CommandExpectation);
shape!(NoFailedShape, no_failed_units, NoFailedUnits);
shape!(BootBudgetShape, boot_budget, ScenarioDuration);
shape!(PathShape, path, PathExpectation);
shape!(GateHonestShape, gate_honest, GateHonestExpectation);
shape!(StableShape, stable, StableExpectation);

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct WaitCycleShape {
    id: Option<String>,
    /// Whether a wait-for cycle may form during the phase.
    wait_cycle: WaitCycleExpectation,
    /// How long a cycle must last to count (default 10s).
    persist: Option<ScenarioDuration>,
    /// Infer waits nobody declared from refused connections (default true); the
    /// outcome says when it was switched off.
    infer: Option<bool>,
}

impl JsonSchema for RawExpectation {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Expectation".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let shapes = [
            g.subschema_for::<UnitShape>(),
            g.subschema_for::<OrderShape>(),
            g.subschema_for::<HttpShape>(),
            g.subschema_for::<JournalShape>(),
            g.subschema_for::<FileShape>(),
            g.subschema_for::<CommandShape>(),
            g.subschema_for::<NoFailedShape>(),
            g.subschema_for::<BootBudgetShape>(),
            g.subschema_for::<WaitCycleShape>(),
            g.subschema_for::<PathShape>(),
            g.subschema_for::<GateHonestShape>(),
            g.subschema_for::<StableShape>(),
        ];
        let description = format!(
            "one expectation: an optional id and exactly one of {}",
            EXPECTATION_KINDS.join(", ")
        );
        schemars::json_schema!({
            "description": description,
            "oneOf": shapes,
        })
    }
}

/// A plan file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Plan")]
pub(crate) struct RawPlan {
    /// Short name.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// One paragraph for reports.
    pub summary: String,
    /// Target names and the target strings they stand for (recipe:, image: or nix:).
    #[schemars(with = "BTreeMap<String, String>")]
    pub targets: BTreeMap<String, Spanned<String>>,
    /// The (target, scenario, expected outcome) entries, run in this order.
    #[schemars(with = "Vec<RawRun>", length(min = 1))]
    pub runs: Spanned<Vec<Spanned<RawRun>>>,
    /// How report.md presents the milestones.
    #[serde(default)]
    #[schemars(with = "Option<super::model::PlanReport>")]
    pub report: Option<Spanned<super::model::PlanReport>>,
    /// Regular expressions whose matches are replaced with `[REDACTED]` in every file of
    /// the evidence bundle (the harness's own keys always are).
    #[serde(default)]
    pub redact: Vec<super::names::Pattern>,
    /// The properties the plan claims (each named in `summary`), and for each, the pairs
    /// and expectations that prove it. When given, every run must prove at least one.
    #[serde(default)]
    #[schemars(with = "Vec<RawClaim>")]
    pub claims: Vec<Spanned<RawClaim>>,
}

/// One property a plan claims, and what proves it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Claim")]
pub(crate) struct RawClaim {
    /// The property, in the words the plan's `summary` uses for it (such as `converges`).
    #[schemars(with = "String")]
    pub property: Spanned<String>,
    /// The pairs, and the expectations of each, that prove it.
    #[schemars(with = "Vec<RawProof>", length(min = 1))]
    pub proven_by: Spanned<Vec<Spanned<RawProof>>>,
}

/// A pair of the plan and the expectations of its scenario that prove a claim.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ClaimProof")]
pub(crate) struct RawProof {
    /// A pair of this plan, `TARGET/SCENARIO_NAME` (such as `after/clean-cold-boot`).
    #[schemars(with = "String")]
    pub run: Spanned<String>,
    /// Ids of expectations of that pair's scenario (explicit or derived, such as
    /// `unit:deploy-proxy.service=active`).
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub ids: Spanned<Vec<Spanned<String>>>,
}

/// One entry of a plan.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PlanRun")]
pub(crate) struct RawRun {
    /// A name from `targets`.
    #[schemars(with = "String")]
    pub target: Spanned<String>,
    /// Scenario file, relative to the plan file or to the scenarios folder above `plans/`.
    #[schemars(with = "String")]
    pub scenario: Spanned<String>,
    /// `pass`, or `reproduced: {failing: [ids], seen: REGEX}`.
    #[schemars(with = "RawExpected")]
    pub expect: Spanned<RawExpected>,
}

/// The expected outcome of a plan entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "ExpectedOutcome")]
pub(crate) enum RawExpected {
    /// Every expectation holds.
    Pass,
    /// The listed expectations fail, in the way `seen` describes, and no other does.
    Reproduced(RawReproduction),
}

/// What a reproduction must look like.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Reproduction")]
pub(crate) struct RawReproduction {
    /// Ids of the expectations that must fail.
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub failing: Vec<Spanned<String>>,
    /// Regular expression that what was seen for each failing expectation must match.
    #[serde(default)]
    pub seen: Option<Pattern>,
}
