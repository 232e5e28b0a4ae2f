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

/// Whether `unit` shows every property the expectation names, with the value it names.
/// `shown` is what `systemctl show -p ...` printed; a property it did not print fails.
pub fn evaluate_properties(
    expect: &UnitExpectation,
    shown: &std::collections::BTreeMap<String, String>,
) -> Evaluation {
    let mut wrong = Vec::new();
    let mut seen = Vec::new();
    for (name, want) in &expect.properties {
        match shown.get(name) {
            Some(v) if v == want => seen.push(format!("{name}={v}")),
            Some(v) => wrong.push(format!("{name}={v} (expected {want})")),
            None => wrong.push(format!("{name} not shown by systemd (expected {want})")),
        }
    }
    if wrong.is_empty() {
        Evaluation::held(seen.join(", "))
    } else {
        Evaluation::failed(wrong.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::systemd::parse_properties;

    /// deploy-proxy's block of a `systemctl show` recorded after the model's rollback.
    fn recorded_proxy() -> std::collections::BTreeMap<String, String> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference-run/after__broken-traefik/units-broken-latest.txt"
        ))
        .expect("the reference run is in the repository");
        let block = text
            .split("\n\n")
            .find(|b| b.lines().any(|l| l == "Id=deploy-proxy.service"))
            .expect("deploy-proxy is recorded");
        parse_properties(block)
    }

    fn expect(props: &[(&str, &str)]) -> UnitExpectation {
        let yaml = format!(
            "name: t\nmilestone: M2\nsummary: s\nphases:\n  - name: p\n    expect:\n      - unit: deploy-proxy.service\n        state: failed\n        within: 1s\n        properties: {{{}}}\n",
            props
                .iter()
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let s =
            crate::scenario::parse_scenario(std::path::Path::new("t.yaml"), &yaml).expect("parses");
        match &s.phases[0].expect[0].kind {
            crate::scenario::ExpectationKind::Unit(u) => u.clone(),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn the_rollback_contract_reads_from_a_recorded_show() {
        let shown = recorded_proxy();
        let held = evaluate_properties(
            &expect(&[("ExecMainStatus", "2"), ("Type", "oneshot")]),
            &shown,
        );
        assert!(held.held, "{}", held.seen);
        assert_eq!(held.seen, "ExecMainStatus=2, Type=oneshot");
        let wrong = evaluate_properties(&expect(&[("ExecMainStatus", "1")]), &shown);
        assert!(!wrong.held);
        assert_eq!(wrong.seen, "ExecMainStatus=2 (expected 1)");
        let absent = evaluate_properties(&expect(&[("NoSuchThing", "x")]), &shown);
        assert!(!absent.held && absent.seen.contains("not shown"));
    }

    #[test]
    fn property_names_are_checked_at_load() {
        let yaml = "name: t\nmilestone: M2\nsummary: s\nphases:\n  - name: p\n    expect:\n      - unit: a.service\n        state: active\n        within: 1s\n        properties: {exec-main-status: \"2\"}\n";
        let err = crate::scenario::parse_scenario(std::path::Path::new("t.yaml"), yaml)
            .expect_err("a bad property name");
        let msg: String = err.iter().map(|d| d.to_string()).collect();
        assert!(
            msg.contains("t.yaml:7:9:") && msg.contains("not a systemd property name"),
            "{msg}"
        );
    }
}
