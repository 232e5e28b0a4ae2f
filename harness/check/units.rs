//! Unit-state checks that need no process: a unit's state against what was expected,
//! and "no failed units".

use super::outcome::Evaluation;
use crate::scenario::UnitExpectation;

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
