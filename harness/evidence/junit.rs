//! `junit.xml`: one testsuite per target, one testcase per (target, scenario). A verdict
//! the plan expected is a success (a planned `reproduced` included); a system under test
//! that misbehaved is a failure; an infrastructure problem is an error, kept apart.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::facts;
use super::load::{Bundle, PairEvidence};
use crate::check::Verdict;
use crate::scenario::Expected;

/// Render `junit.xml`. `name` names the report (the bundle's folder name).
pub fn render(bundle: &Bundle, name: &str) -> anyhow::Result<String> {
    let mut report = Report::new(format!("coldboot {name}"));
    for target in facts::targets(bundle) {
        let mut suite = TestSuite::new(target);
        let mut time = 0.0;
        for p in bundle
            .pairs
            .iter()
            .filter(|p| p.report.target_name == target)
        {
            time += p.report.duration_secs;
            suite.add_test_case(case(p));
        }
        if let Some(t) = bundle
            .pairs
            .iter()
            .find(|p| p.report.target_name == target && !p.report.target.is_empty())
        {
            suite.add_property(Property::new("target", t.report.target.as_str()));
        }
        suite.set_time(secs(time));
        report.add_test_suite(suite);
    }
    let mut xml = report.to_string()?;
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(xml)
}

fn case(p: &PairEvidence) -> TestCase {
    let r = &p.report;
    let status = match status(p) {
        None => TestCaseStatus::success(),
        Some((kind, ty, message)) => {
            let mut s = TestCaseStatus::non_success(kind);
            s.set_type(ty).set_message(message);
            s.set_description(r.verdict.to_string());
            s
        }
    };
    let mut case = TestCase::new(r.scenario.as_str(), status);
    case.set_classname(format!("{}.{}", r.target_name, r.scenario));
    case.set_time(secs(r.duration_secs));
    case.add_property(Property::new("verdict", r.verdict.word()));
    case.add_property(Property::new("expected", expected_word(&r.expected)));
    let mut out = format!(
        "run folder: {} (inside the evidence bundle)\nverdict: {}\n",
        p.folder, r.verdict
    );
    if let Some(a) = facts::awaited(p) {
        out.push_str(&format!("{}: {}\n", a.outcome.id, a.outcome.seen));
    }
    case.set_system_out(out);
    case
}

/// `None` for a success; otherwise the kind, a type word and the message.
fn status(p: &PairEvidence) -> Option<(NonSuccessKind, &'static str, String)> {
    let r = &p.report;
    if let Verdict::Error { message, .. } = &r.verdict {
        let ty = if p.complete {
            "infrastructure"
        } else {
            "incomplete"
        };
        return Some((NonSuccessKind::Error, ty, message.clone()));
    }
    if r.matches_plan {
        return None;
    }
    let message = match (&r.verdict, &r.expected) {
        (
            Verdict::Fail {
                expectation,
                expected,
                seen,
                note,
                ..
            },
            _,
        ) => {
            let mut m = format!("{expectation}: expected {expected}, saw {seen}");
            if let Some(n) = note {
                m.push_str(&format!(" ({n})"));
            }
            m
        }
        (Verdict::Pass, Expected::Reproduced(rep)) => format!(
            "failed reproduction: the plan expects {} to fail, but every expectation held",
            rep.failing.join(", ")
        ),
        (v, _) => format!(
            "verdict {} where the plan expects {}",
            v.word(),
            expected_word(&r.expected)
        ),
    };
    Some((NonSuccessKind::Failure, "not as planned", message))
}

/// The plan's expectation in one word or phrase.
pub fn expected_word(e: &Expected) -> String {
    match e {
        Expected::Pass => "pass".to_string(),
        Expected::Reproduced(r) => format!("reproduced ({})", r.failing.join(", ")),
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}
