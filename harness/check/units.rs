//! Unit-state checks that need no process: a unit's state against what was expected,
//! and "no failed units".

use super::outcome::Evaluation;
use crate::scenario::{UnitExpectation, WaitCycleExpectation};

/// Whether a unit's observed `ActiveState` (and `Result`) is what the expectation wants.
pub fn evaluate_unit(expect: &UnitExpectation, active_state: &str, result: &str) -> Evaluation {
    let seen = format!("{} is {active_state} (Result={result})", expect.unit);
    let state_ok = active_state == expect.state.as_str();
    let result_ok = expect.result.is_none_or(|r| r.as_str() == result);
    Evaluation {
        held: state_ok && result_ok,
        seen,
    }
}

/// Whether no unit is `failed` except the allowed ones. `units` is (unit, ActiveState).
pub fn evaluate_no_failed(units: &[(String, String)], except: &[String]) -> Evaluation {
    let failed: Vec<&str> = units
        .iter()
        .filter(|(u, s)| s == "failed" && !except.contains(u))
        .map(|(u, _)| u.as_str())
        .collect();
    if failed.is_empty() {
        let allowed: Vec<&str> = units
            .iter()
            .filter(|(u, s)| s == "failed" && except.contains(u))
            .map(|(u, _)| u.as_str())
            .collect();
        if allowed.is_empty() {
            Evaluation::held(format!("no failed unit among {}", units.len()))
        } else {
            Evaluation::held(format!("failed only as allowed: {}", allowed.join(", ")))
        }
    } else {
        Evaluation::failed(format!("failed: {}", failed.join(", ")))
    }
}

/// The wait-cycle expectation when the job queue was not examined (until live wait-for
/// detection is wired in): `absent` holds trivially and says so; `expected` cannot hold.
pub fn evaluate_wait_cycle_unchecked(expect: WaitCycleExpectation) -> Evaluation {
    match expect {
        WaitCycleExpectation::Absent => Evaluation::held(
            "not checked: live wait-cycle detection is not wired in yet, so `absent` holds trivially",
        ),
        WaitCycleExpectation::Expected => Evaluation::failed(
            "not checked: live wait-cycle detection is not wired in yet, so an expected cycle cannot be shown",
        ),
    }
}

/// The wait-cycle expectation against what the job queue showed: `cycle` is the
/// rendered cycle path when one was found.
pub fn evaluate_wait_cycle_observed(
    expect: WaitCycleExpectation,
    cycle: Option<&str>,
) -> Evaluation {
    match (expect, cycle) {
        (WaitCycleExpectation::Absent, None) => {
            Evaluation::held("no wait-for cycle in the job queue")
        }
        (WaitCycleExpectation::Absent, Some(c)) => {
            Evaluation::failed(format!("wait-for cycle: {c}"))
        }
        (WaitCycleExpectation::Expected, Some(c)) => {
            Evaluation::held(format!("wait-for cycle: {c}"))
        }
        (WaitCycleExpectation::Expected, None) => {
            Evaluation::failed("no wait-for cycle in the job queue")
        }
    }
}
