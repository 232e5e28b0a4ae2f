//! What the runner learnt about one expectation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether a check held, and what was seen, before it is tied to an expectation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Whether the expectation held.
    pub held: bool,
    /// What was seen, in words (quoted in failure messages and matched by `reproduced.seen`).
    pub seen: String,
}

impl Evaluation {
    /// A held evaluation.
    pub fn held(seen: impl Into<String>) -> Evaluation {
        Evaluation {
            held: true,
            seen: seen.into(),
        }
    }
    /// A failed evaluation.
    pub fn failed(seen: impl Into<String>) -> Evaluation {
        Evaluation {
            held: false,
            seen: seen.into(),
        }
    }
}

/// The outcome of one expectation in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationOutcome {
    /// The expectation's stable id.
    pub id: String,
    /// Whether it held.
    pub held: bool,
    /// What had to hold, in words (`Expectation::kind.describe()`).
    pub expected: String,
    /// What was seen.
    pub seen: String,
    /// When the guest says the awaited change happened, on the run's clock, if known.
    pub changed_at: Option<Duration>,
    /// When the harness decided, on the run's clock, if recorded.
    pub decided_at: Option<Duration>,
    /// Where to look: a path inside the run folder.
    pub evidence: Option<PathBuf>,
}

impl ExpectationOutcome {
    /// An outcome from an evaluation, without timing or evidence.
    pub fn new(
        id: impl Into<String>,
        expected: impl Into<String>,
        eval: Evaluation,
    ) -> ExpectationOutcome {
        ExpectationOutcome {
            id: id.into(),
            held: eval.held,
            expected: expected.into(),
            seen: eval.seen,
            changed_at: None,
            decided_at: None,
            evidence: None,
        }
    }

    /// Verdict latency: the harness's decision minus the guest's own time of the change.
    pub fn latency(&self) -> Option<Duration> {
        Some(self.decided_at?.saturating_sub(self.changed_at?))
    }
}
