//! From outcomes to one verdict per run, and whether it is the one the plan expects.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::outcome::ExpectationOutcome;
use crate::error::ErrorClass;
use crate::scenario::{Expected, Reproduction};

/// The verdict of one (target, scenario) run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every expectation held.
    Pass,
    /// An expectation did not hold (or a reproduction did not look as the plan says).
    Fail {
        /// The first expectation that explains the failure.
        expectation: String,
        /// What had to hold.
        expected: String,
        /// What was seen instead.
        seen: String,
        /// Why this is a failure when the plan expected a reproduction, if that is the reason.
        note: Option<String>,
        /// Where to look.
        evidence: Option<PathBuf>,
    },
    /// The plan expected this failure and it happened in the expected way.
    Reproduced {
        /// The ids that failed as listed.
        failing: Vec<String>,
        /// What was seen for the first of them.
        seen: String,
    },
    /// The pair could not be decided: the infrastructure failed (QEMU, image build, SSH,
    /// kernel panic, nothing evaluated) or the scenario asked for the impossible (a fault
    /// the target lacks, an action that exits otherwise than it declares).
    Error {
        /// What went wrong.
        message: String,
        /// Whose fault it is, which decides the exit code (absent before schema 3: infra).
        #[serde(default)]
        class: ErrorClass,
    },
}

impl Verdict {
    /// The verdict's word: pass, fail, reproduced, error.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail { .. } => "fail",
            Verdict::Reproduced { .. } => "reproduced",
            Verdict::Error { .. } => "error",
        }
    }

    /// Whether this verdict is the outcome the plan expects. A pass where a reproduction
    /// was expected is a failed reproduction, so it does not match.
    pub fn matches(&self, expected: &Expected) -> bool {
        matches!(
            (self, expected),
            (Verdict::Pass, Expected::Pass) | (Verdict::Reproduced { .. }, Expected::Reproduced(_))
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail {
                expectation,
                expected,
                seen,
                note,
                evidence,
            } => {
                write!(f, "fail: {expectation}: expected {expected}, saw {seen}")?;
                if let Some(n) = note {
                    write!(f, " ({n})")?;
                }
                if let Some(e) = evidence {
                    write!(f, "; see {}", e.display())?;
                }
                Ok(())
            }
            Verdict::Reproduced { failing, seen } => write!(
                f,
                "reproduced: {} failed as expected, saw {seen}",
                failing.join(", ")
            ),
            Verdict::Error { message, class } => match class {
                ErrorClass::Usage => write!(f, "error in the scenario: {message}"),
                ErrorClass::Infrastructure => write!(f, "error: {message}"),
            },
        }
    }
}

/// The verdict for a run's outcomes, judged against what the plan expects.
///
/// Outcomes the runner never evaluated are simply absent. With `Expected::Pass` the
/// first failing outcome gives `Fail`. With `Expected::Reproduced`, the run is
/// `Reproduced` only when every listed id is present and failed, its seen text matches
/// `seen` (if given), and no unlisted outcome failed; a run where all held is `Pass`
/// (which does not match the plan), anything else is `Fail` with a note saying why.
pub fn verdict(outcomes: &[ExpectationOutcome], expected: &Expected) -> Verdict {
    if outcomes.is_empty() {
        return Verdict::Error {
            class: ErrorClass::Infrastructure,
            message: "no expectation was evaluated".to_string(),
        };
    }
    let first_failure = outcomes.iter().find(|o| !o.held);
    match expected {
        Expected::Pass => match first_failure {
            None => Verdict::Pass,
            Some(o) => fail(o, None),
        },
        Expected::Reproduced(r) => match first_failure {
            None => Verdict::Pass,
            Some(_) => judge_reproduction(outcomes, r),
        },
    }
}

fn judge_reproduction(outcomes: &[ExpectationOutcome], r: &Reproduction) -> Verdict {
    if let Some(extra) = outcomes
        .iter()
        .find(|o| !o.held && !r.failing.contains(&o.id))
    {
        return fail(
            extra,
            Some(format!(
                "the plan expects only {} to fail",
                r.failing.join(", ")
            )),
        );
    }
    for id in &r.failing {
        match outcomes.iter().find(|o| &o.id == id) {
            None => {
                return Verdict::Fail {
                    expectation: id.clone(),
                    expected: "to fail, as the plan expects".to_string(),
                    seen: "it was never evaluated".to_string(),
                    note: Some(
                        "a reproduction needs every listed expectation evaluated".to_string(),
                    ),
                    evidence: None,
                };
            }
            Some(o) if o.held => {
                return fail(
                    o,
                    Some(format!(
                        "the plan expects {id} to fail, but it held: a failed reproduction"
                    )),
                );
            }
            Some(o) => {
                if let Some(p) = &r.seen
                    && !p.is_match(&o.seen)
                {
                    return fail(
                        o,
                        Some(format!(
                            "it failed, but what was seen does not match /{p}/ as the plan expects"
                        )),
                    );
                }
            }
        }
    }
    let seen = outcomes
        .iter()
        .find(|o| r.failing.first() == Some(&o.id))
        .map(|o| o.seen.clone())
        .unwrap_or_default();
    Verdict::Reproduced {
        failing: r.failing.clone(),
        seen,
    }
}

fn fail(o: &ExpectationOutcome, note: Option<String>) -> Verdict {
    Verdict::Fail {
        expectation: o.id.clone(),
        expected: o.expected_words(),
        seen: o.seen.clone(),
        note,
        evidence: o.evidence.clone(),
    }
}
