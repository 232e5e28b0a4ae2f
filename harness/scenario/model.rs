//! A loaded, validated scenario: what the runner executes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::action::Action;
use super::expectation::Expectation;
use super::names::UnitName;

/// The unit a scenario watches most closely when it names none.
pub const DEFAULT_FOCUS_UNIT: &str = "deploy-proxy.service";

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
    /// The unit the progress line and the report follow.
    pub focus_unit: UnitName,
    /// The phases, in order; the first starts with a cold boot.
    pub phases: Vec<Phase>,
}

impl Scenario {
    /// Every expectation of every phase, in file order.
    pub fn expectations(&self) -> impl Iterator<Item = &Expectation> {
        self.phases.iter().flat_map(|p| p.expect.iter())
    }

    /// The expectation with this id, if any.
    pub fn expectation(&self, id: &str) -> Option<&Expectation> {
        self.expectations().find(|e| e.id == id)
    }
}

/// The milestones of the fix this harness proves, plus the scheduled job.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Milestone {
    /// Controlled reproduction and fix.
    M1,
    /// From-scratch cold-boot proof.
    M2,
    /// The scheduled regression job.
    #[serde(rename = "nightly")]
    Nightly,
}

/// `milestone:` as written: one milestone or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestones(pub Vec<Milestone>);

impl<'de> Deserialize<'de> for Milestones {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Milestones;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("M1, M2, nightly, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Milestones, E> {
                let one = Milestone::deserialize(v.into_deserializer())?;
                Ok(Milestones(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Milestones, A::Error> {
                let mut all = Vec::new();
                while let Some(m) = seq.next_element::<Milestone>()? {
                    if !all.contains(&m) {
                        all.push(m);
                    }
                }
                if all.is_empty() {
                    return Err(de::Error::custom(
                        "empty milestone list: expected M1, M2, nightly, or a list of them",
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
            "description": "M1, M2, nightly, or a list of them",
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
