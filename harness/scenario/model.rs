//! A loaded, validated scenario: what the runner executes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::action::Action;
use super::kinds::Expectation;
use super::names::UnitName;

/// A scenario: a situation to put the system in, and what must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Short name, used in run ids and evidence folders.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Which milestones it belongs to.
    pub milestones: Vec<Milestone>,
    /// One paragraph for reports.
    pub summary: String,
    /// The unit the progress line and the report follow: `focus_unit:` from the file,
    /// else the unit of its first `unit:` expectation, else none.
    pub focus_unit: Option<UnitName>,
    /// How reports present the scenario's pairs (`report:` in the file).
    pub report: ReportHints,
    /// The phases, in order; the first starts with a cold boot.
    pub phases: Vec<Phase>,
}

/// What one phase that boots, or acts on the guest, is taken to cost when pairs are
/// ranked for scheduling: about a cold boot of the model under TCG.
const PHASE_ESTIMATE: std::time::Duration = std::time::Duration::from_secs(40);

impl Scenario {
    /// A rough cost of one run of the scenario, only to rank pairs so that the longest
    /// start first (with several at once, a long pair started last would finish alone):
    /// [`PHASE_ESTIMATE`] per phase that boots or acts, plus every `stable:` window and
    /// `sleep:` it states. Not a prediction of its duration.
    pub fn expected_cost(&self) -> std::time::Duration {
        let mut cost = std::time::Duration::ZERO;
        for phase in &self.phases {
            if phase.start != PhaseStart::Continue || !phase.actions.is_empty() {
                cost += PHASE_ESTIMATE;
            }
            for a in &phase.actions {
                if let crate::scenario::Action::Sleep(d) = a {
                    cost += d.0;
                }
            }
            for e in &phase.expect {
                if let crate::scenario::ExpectationKind::Stable(w) = &e.kind {
                    cost += w.window.0;
                }
            }
        }
        cost
    }

    /// Every expectation of every phase, in file order.
    pub fn expectations(&self) -> impl Iterator<Item = &Expectation> {
        self.phases.iter().flat_map(|p| p.expect.iter())
    }

    /// The expectation with this id, if any.
    pub fn expectation(&self, id: &str) -> Option<&Expectation> {
        self.expectations().find(|e| e.id == id)
    }

    /// The units the scenario names (its focus, then each expectation's
    /// units, as its kind's descriptor names them), in file order.
    pub fn named_units(&self) -> Vec<String> {
        let expected = self.expectations().flat_map(|e| e.kind.spec().units());
        self.focus_unit
            .iter()
            .chain(expected)
            .map(|u| u.as_str().to_string())
            .collect()
    }
}

/// A milestone a scenario belongs to, such as `M1` or `nightly`: a plain name that
/// plans and reports group pairs by. Which milestones exist, and how a report presents
/// them, is up to the scenario and plan files, not the harness.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Milestone(pub String);

impl Milestone {
    /// A milestone from a plain name (letters, digits, `-`, `_`, `.`).
    pub fn parse(name: &str) -> Result<Milestone, String> {
        if super::names::is_plain_name(name) {
            Ok(Milestone(name.to_string()))
        } else {
            Err(format!(
                "invalid milestone {name:?}: expected a name of letters, digits, '-', '_' or '.' (such as M1 or nightly)"
            ))
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Milestone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `report:` in a scenario file: how a report presents its pairs in a milestone section
/// laid out by groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportHints {
    /// The heading of the group this scenario's pairs join (default: the scenario's name).
    #[serde(default)]
    pub group: Option<String>,
    /// Expectations to show first, under their own title.
    #[serde(default)]
    pub highlight: Option<Highlight>,
}

/// Expectations a report shows first, under a title of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Highlight {
    /// The title, such as "Last-good, before and after the broken version".
    pub title: String,
    /// Expectation ids of this scenario.
    pub ids: Vec<String>,
}

/// `milestone:` as written: one milestone or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestones(pub Vec<Milestone>);

impl<'de> Deserialize<'de> for Milestones {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Milestones;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a milestone name (such as M1 or nightly), or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Milestones, E> {
                Ok(Milestones(vec![Milestone::parse(v).map_err(E::custom)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Milestones, A::Error> {
                let mut all = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    let m = Milestone::parse(&name).map_err(de::Error::custom)?;
                    if !all.contains(&m) {
                        all.push(m);
                    }
                }
                if all.is_empty() {
                    return Err(de::Error::custom(
                        "empty milestone list: expected a milestone name (such as M1 or nightly), or a list of them",
                    ));
                }
                Ok(Milestones(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Milestones {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Milestones".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = g.subschema_for::<Milestone>();
        schemars::json_schema!({
            "description": "a milestone name (such as M1 or nightly), or a list of them",
            "anyOf": [one, {"type": "array", "items": one, "minItems": 1}],
        })
    }
}

/// How a phase begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseStart {
    /// Start QEMU on a fresh overlay (the first phase always does).
    ColdBoot,
    /// Reboot the running guest cleanly.
    Reboot,
    /// Cut the power and cold-boot again on the same disk.
    PowerCycle,
    /// Go on in the running guest without booting (the default after the first phase).
    Continue,
}

/// One phase: a boot (or none), actions, then expectations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phase {
    /// Name, unique within the scenario.
    pub name: String,
    /// How the phase begins.
    pub start: PhaseStart,
    /// Options for the boot that starts the phase (empty for `continue`).
    pub boot: BootOptions,
    /// Steps run in order before the expectations are checked.
    pub actions: Vec<Action>,
    /// What must hold.
    pub expect: Vec<Expectation>,
    /// Every fault the phase names (boot faults, then fault actions), with where.
    pub fault_refs: Vec<FaultRef>,
}

/// A fault named in a scenario file, and where, so that a target lacking it is reported
/// at the line that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultRef {
    /// The fault's name.
    pub name: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub col: u64,
}

impl FaultRef {
    /// A reference at a parser location, if known.
    pub fn at(name: &str, loc: Option<serde_saphyr::Location>) -> FaultRef {
        let (line, col) = match loc {
            Some(l) if l != serde_saphyr::Location::UNKNOWN => (l.line(), l.column()),
            _ => (0, 0),
        };
        FaultRef {
            name: name.to_string(),
            line,
            col,
        }
    }
}

/// Options that apply to one boot only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootOptions {
    /// Units masked for this boot (`systemd.mask=` on the kernel command line).
    #[serde(default)]
    pub mask: Vec<UnitName>,
    /// Extra kernel arguments.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Manager environment for this boot (`systemd.setenv=K=V`).
    #[serde(default)]
    pub setenv: BTreeMap<String, String>,
    /// Named faults (defined by the target) that must be in effect for this boot; the
    /// runner injects them before the phase's reboot or power-cycle.
    #[serde(default)]
    pub faults: Vec<String>,
}

impl BootOptions {
    /// Whether these options change nothing.
    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
            && self.kernel_args.is_empty()
            && self.setenv.is_empty()
            && self.faults.is_empty()
    }

    /// The kernel arguments these options add: masks, setenv, then the extra arguments.
    pub fn kernel_cmdline(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .mask
            .iter()
            .map(|u| format!("systemd.mask={u}"))
            .collect();
        args.extend(
            self.setenv
                .iter()
                .map(|(k, v)| format!("systemd.setenv={k}={v}")),
        );
        args.extend(self.kernel_args.iter().cloned());
        args
    }
}

/// `report:` in a plan file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanReport {
    /// The milestone sections of report.md, in order. Without them, each milestone of the
    /// plan's scenarios gets a section titled with its name, laid out to compare targets.
    #[serde(default)]
    pub sections: Vec<Section>,
}

/// One milestone section of report.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The milestone whose pairs the section shows (a scenario's `milestone:`).
    pub milestone: Milestone,
    /// The section's heading, such as "M1: reproduction and fix".
    pub title: String,
    /// How its pairs are laid out.
    #[serde(default)]
    pub layout: Layout,
    /// For `groups`: the heading above the ordering tables (default "Ordering").
    #[serde(default)]
    pub order_title: Option<String>,
    /// For `groups`: the groups that come first, in this order (the others follow as
    /// their pairs come).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// How a milestone section lays out its pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One subsection per scenario, its targets side by side (before and after a fix).
    #[default]
    Compare,
    /// One subsection per scenario group (`report.group:` in the scenario), then the
    /// ordering tables and the base image's checksums.
    Groups,
}

impl Section {
    /// The section a milestone gets when no plan describes it.
    pub fn default_for(m: &Milestone) -> Section {
        Section {
            milestone: m.clone(),
            title: m.to_string(),
            layout: Layout::Compare,
            order_title: None,
            groups: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn named_units_are_the_focus_then_each_expectations_units_in_file_order() {
        let yaml = "name: t\nmilestone: nightly\nfocus_unit: a.service\nsummary: s\nphases:\n  - name: p\n    expect:\n      - unit: b.service\n        state: active\n        within: 5s\n      - journal: {unit: j.service, pattern: x, within: 5s}\n      - order: {after: a.service, units: [c.service, d.service]}\n      - no_failed_units: {except: [e.service]}\n";
        let s = super::super::parse_scenario(std::path::Path::new("t.yaml"), yaml).expect("parses");
        assert_eq!(
            s.named_units(),
            [
                "a.service",
                "b.service",
                "a.service",
                "c.service",
                "d.service"
            ]
        );
    }

    #[test]
    fn the_rollback_pairs_rank_first_then_the_clean_boot_with_its_window() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let cost = |name: &str| {
            crate::scenario::load_scenario(&root.join(name))
                .expect("a shipped scenario")
                .expected_cost()
        };
        // Two phases that act, and a 20 s window after the rollback.
        assert_eq!(
            cost("broken-traefik.yaml"),
            std::time::Duration::from_secs(100)
        );
        assert!(cost("broken-traefik-silent.yaml") > cost("clean-cold-boot.yaml"));
        // One boot and a 30 s window, above a plain cold boot.
        assert_eq!(
            cost("clean-cold-boot.yaml"),
            std::time::Duration::from_secs(70)
        );
        // A boot, then a redeploy: two phases that boot or act, above the clean boot.
        assert_eq!(
            cost("consumers-order.yaml"),
            std::time::Duration::from_secs(80)
        );
        for plain in ["old-gate-cold-boot.yaml", "dashboard-held-back.yaml"] {
            assert_eq!(cost(plain), std::time::Duration::from_secs(40), "{plain}");
        }
    }
}
