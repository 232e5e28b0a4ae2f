//! What the runner learnt about one expectation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::{Expectation, ExpectationKind};

/// Whether a check held, and what was seen, before it is tied to an expectation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Whether the expectation held.
    pub held: bool,
    /// What was seen, in words (quoted in failure messages and matched by `reproduced.seen`).
    pub seen: String,
    /// The harness could not check it (it did not watch what the expectation is about):
    /// never held, and counted apart from failures in reports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_checked: bool,
}

impl Evaluation {
    /// A held evaluation.
    pub fn held(seen: impl Into<String>) -> Evaluation {
        Evaluation {
            held: true,
            seen: seen.into(),
            not_checked: false,
        }
    }
    /// A failed evaluation.
    pub fn failed(seen: impl Into<String>) -> Evaluation {
        Evaluation {
            held: false,
            seen: seen.into(),
            not_checked: false,
        }
    }
    /// An expectation the harness could not check: not held, and said so.
    pub fn not_checked(seen: impl Into<String>) -> Evaluation {
        Evaluation {
            held: false,
            seen: seen.into(),
            not_checked: true,
        }
    }
}

/// The rule for a change the harness saw in time but the guest dates after the deadline:
/// it was reached late, so it fails. `at` is the guest's own time of the change on the
/// host clock, `uncertainty` how far that mapping may be off (a change within it counts
/// as in time).
pub fn late(
    eval: Evaluation,
    at: Option<std::time::Instant>,
    deadline: std::time::Instant,
    uncertainty: Duration,
) -> Evaluation {
    match at {
        Some(at) if eval.held && at > deadline + uncertainty => Evaluation::failed(format!(
            "{} only {:.1}s after the deadline",
            eval.seen,
            (at - deadline).as_secs_f64()
        )),
        _ => eval,
    }
}

/// The outcome of one expectation in one run.
///
/// Reports read `kind` (the expectation's kind and parameters as data) and the figures
/// (`changed_at`, `decided_at`, `evidence`), never the sentences: `expected` is for
/// people, and rewording it changes no section of any report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationOutcome {
    /// The expectation's stable id.
    pub id: String,
    /// Whether it held.
    pub held: bool,
    /// What was checked, as data: the kind and its parameters (unit, state, result, URL,
    /// status, pattern, the ordering's anchor and units...). Absent in bundles written
    /// before report.json schema 3, and in outcomes made without an expectation.
    #[serde(default)]
    pub kind: Option<ExpectationKind>,
    /// What had to hold, in words (`ExpectationKind::describe()`), for people only.
    pub expected: String,
    /// What was seen.
    pub seen: String,
    /// Not checked (see [`Evaluation::not_checked`]): not held, and not a failure seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_checked: bool,
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
            kind: None,
            expected: expected.into(),
            seen: eval.seen,
            not_checked: eval.not_checked,
            changed_at: None,
            decided_at: None,
            evidence: None,
        }
    }

    /// The outcome of `exp`, recording its kind and parameters as data.
    pub fn of(exp: &Expectation, eval: Evaluation) -> ExpectationOutcome {
        let mut o = ExpectationOutcome::new(exp.id.clone(), exp.kind.describe(), eval);
        o.kind = Some(exp.kind.clone());
        o
    }

    /// What had to hold, in words: from the recorded kind when there is one, so that a
    /// report always words it as this harness does.
    pub fn expected_words(&self) -> String {
        self.kind
            .as_ref()
            .map_or_else(|| self.expected.clone(), ExpectationKind::describe)
    }

    /// Its mark in reports: ✓ held, ✗ failed, or "not checked".
    pub fn mark(&self) -> &'static str {
        match (self.held, self.not_checked) {
            (true, _) => "✓",
            (false, true) => "not checked",
            (false, false) => "✗",
        }
    }

    /// Verdict latency: the harness's decision minus the guest's own time of the change.
    pub fn latency(&self) -> Option<Duration> {
        Some(self.decided_at?.saturating_sub(self.changed_at?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reached_after_the_deadline_by_the_guest_clock_fails() {
        let deadline = Instant::now();
        let slack = Duration::from_millis(50);
        let held = || Evaluation::held("active");
        let late_by = |d: u64| {
            late(
                held(),
                Some(deadline + Duration::from_secs(d)),
                deadline,
                slack,
            )
        };
        assert!(!late_by(2).held);
        assert!(
            late_by(2)
                .seen
                .starts_with("active only 2.0s after the deadline")
        );
        assert!(late(held(), Some(deadline), deadline, slack).held);
        assert!(late(held(), None, deadline, slack).held);
        // A failure stays a failure, worded as it was.
        let failed = late(
            Evaluation::failed("x"),
            Some(deadline + Duration::from_secs(9)),
            deadline,
            slack,
        );
        assert_eq!(failed.seen, "x");
    }
}
