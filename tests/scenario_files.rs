//! Scenario and plan files: the shipped ones parse, the fixtures parse as intended, and
//! malformed files give the golden `file:line:col` messages stored next to them.
//! Run with `BLESS=1` to rewrite the golden `.err` files after a deliberate change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coldboot::scenario::{
    Action, ExpectationKind, Expected, FileKind, Milestone, PhaseStart, ProbeFrom, UnitState,
    check_file, check_files, json_schema, load_plan, load_scenario, parse_scenario,
};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn shipped_scenarios_and_plans_all_check() {
    let mut files = yaml_files("scenarios");
    let plans = yaml_files("scenarios/plans");
    assert!(files.len() >= 5 && plans.len() >= 3, "{files:?} {plans:?}");
    files.extend(plans);
    for check in check_files(&files) {
        match &check.result {
            Ok(summary) => println!("{}: {summary}", check.path.display()),
            Err(d) => panic!("{}: {d:?}", check.path.display()),
        }
        let in_plans = check.path.parent().unwrap().ends_with("plans");
        assert_eq!(
            check.kind == FileKind::Plan,
            in_plans,
            "{}",
            check.path.display()
        );
    }
}

#[test]
fn m1_plan_pairs_reproduction_with_passes() {
    let plan = load_plan(Path::new("scenarios/plans/m1.yaml")).unwrap();
    let pairs = plan.pairs();
    let ids: Vec<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids[0], "before/old-gate-cold-boot");
    assert_eq!(ids[1], "after/old-gate-cold-boot");
    assert!(ids.contains(&"after/dashboard-held-back"));
    let before = &pairs[0];
    // cc-ci's real timeout: the wait cycle, not the timeout, ends the pair.
    assert_eq!(
        before.target,
        "recipe:vm-images/ccci-model?gate=dashboard&timeout=900"
    );
    assert!(
        before.scenario.phases[0].boot.mask.is_empty(),
        "a plain cold boot"
    );
    let Expected::Reproduced(r) = &before.expected else {
        panic!("{:?}", before.expected)
    };
    assert_eq!(r.failing[0], "wait_cycle=absent");
    for id in &r.failing {
        assert!(before.scenario.expectation(id).is_some(), "{id}");
    }
    let seen = r.seen.as_ref().unwrap();
    assert!(seen.is_match(
        "wait cycle lasting 10 s: deploy-proxy.service (start running 41 s; gate https://ci.commoninternet.net/ → 502 ×12) waits for deploy-dashboard.service (start waiting, After=deploy-proxy.service)"
    ));
    assert!(!seen.is_match("deploy-proxy.service is failed (failed) with Result=timeout"));
    for p in &pairs[1..] {
        assert_eq!(p.expected, Expected::Pass, "{}", p.id);
        assert_eq!(p.target, "recipe:vm-images/ccci-model?gate=self");
    }
}

#[test]
fn dashboard_held_back_outlasts_the_old_gate() {
    // The nightly plan keeps the seed's controlled reproduction with a short timeout, to
    // watch systemd give up.
    let plan = load_plan(Path::new("scenarios/plans/nightly.yaml")).unwrap();
    let pairs = plan.pairs();
    let before = pairs
        .iter()
        .find(|p| p.id == "before-timeout/dashboard-held-back")
        .expect("the timeout variant");
    assert_eq!(before.scenario.name, "dashboard-held-back");
    let s = &before.scenario;
    assert_eq!(
        s.phases[0].boot.mask[0].as_str(),
        "deploy-dashboard.service"
    );
    assert_eq!(
        s.phases[0].boot.kernel_cmdline(),
        ["systemd.mask=deploy-dashboard.service"]
    );
    let ExpectationKind::Unit(u) = &s.phases[0].expect[0].kind else {
        panic!()
    };
    // The expectation (counted from QEMU start) waits longer than the before-target's
    // TimeoutStartSec plus a slow boot, so the old gate shows what it does: it fails with
    // Result=timeout, and the runner decides then (a failed unit with no job left).
    let timeout: u64 = before
        .target
        .split("timeout=")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        u.within.0 > Duration::from_secs(timeout + 60),
        "{} vs {timeout}s",
        u.within
    );
    let Expected::Reproduced(r) = &before.expected else {
        panic!()
    };
    let seen = r.seen.as_ref().unwrap();
    assert!(seen.is_match(
        "deploy-proxy.service is failed (failed) with Result=timeout, and no job will start it again"
    ));
    assert!(
        seen.is_match("deploy-proxy.service is activating (start) with Result=success after 5m")
    );
    assert!(!seen.is_match("deploy-proxy.service is active (exited) with Result=success"));
}

#[test]
fn every_form_of_the_language_parses() {
    let s = load_scenario(Path::new("tests/fixtures/scenario/good/every-kind.yaml")).unwrap();
    assert_eq!(
        s.milestones,
        ["M1", "M2", "nightly"].map(|m| Milestone::parse(m).unwrap())
    );
    assert_eq!(s.focus_unit.as_ref().unwrap().as_str(), "traefik.service");
    assert_eq!(
        s.phases.iter().map(|p| p.start).collect::<Vec<_>>(),
        [
            PhaseStart::ColdBoot,
            PhaseStart::Reboot,
            PhaseStart::Continue
        ]
    );
    let first = &s.phases[0];
    assert_eq!(
        first.boot.kernel_cmdline(),
        [
            "systemd.mask=deploy-dashboard.service",
            "systemd.setenv=CCCI_MODE=test",
            "quiet",
            "loglevel=3"
        ]
    );
    assert_eq!(first.actions.len(), 10);
    assert!(matches!(&first.actions[0], Action::Run(r) if r.cmd == "true" && r.status == 0));
    assert!(matches!(&first.actions[1], Action::Run(r) if r.status == 3));
    assert!(matches!(&first.actions[2], Action::Write(w) if w.mode == Some(0o644)));
    assert!(
        matches!(&first.actions[5], Action::Restart(r) if r.no_block && r.unit.as_str() == "traefik.service")
    );
    assert!(matches!(&first.actions[8], Action::Sleep(d) if d.0 == Duration::from_millis(500)));
    assert_eq!(s.phases[1].actions, [Action::Reboot, Action::PowerCycle]);
    assert_eq!(s.phases[1].boot.faults, ["traefik-broken-silent"]);
    let ids: Vec<&str> = s.expectations().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "unit:deploy-proxy.service=failed",
            "consumers-after-proxy",
            "http:host:http://127.0.0.1:8082/ping",
            "http:guest:http://127.0.0.1:8082/version",
            "journal:deploy-proxy.service:decision=(commit|rollback)",
            "journal:Startup finished",
            "file:/var/lib/ccci-model/last-good",
            "command:systemctl is-active drone.service",
            "command:false",
            "no_failed_units",
            "boot_budget",
            "wait_cycle=expected",
            "second/no-failed",
            "proxy-up-again",
        ]
    );
    let ExpectationKind::Http(h) = &s.phases[0].expect[3].kind else {
        panic!()
    };
    assert_eq!(
        (h.from, h.status, h.within.0),
        (ProbeFrom::Guest, 200, Duration::from_secs(30))
    );
    let ExpectationKind::Unit(u) = &s.phases[0].expect[0].kind else {
        panic!()
    };
    assert_eq!(u.state, UnitState::Failed);
    assert_eq!(u.within.0, Duration::from_secs(5400));
}

#[test]
fn fixture_plan_resolves_scenarios_beside_and_above_plans() {
    let plan = load_plan(Path::new("tests/fixtures/scenario/good/plans/plan.yaml")).unwrap();
    let ids: Vec<String> = plan.pairs().into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["before/minimal", "after/minimal", "after/every-kind"]);
}

#[test]
fn path_kind_parses_with_exists_by_default() {
    let yaml = "name: t\nmilestone: M1\nsummary: s\nphases:\n  - name: p\n    expect:\n      - path: {path: /run/ready}\n      - path: {path: /run/gone, exists: false}\n";
    let s = parse_scenario(Path::new("t.yaml"), yaml).unwrap();
    let ids: Vec<&str> = s.phases[0].expect.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["path:/run/ready=exists", "path:/run/gone=absent"]);
    let ExpectationKind::Path(p) = &s.phases[0].expect[1].kind else {
        panic!()
    };
    assert_eq!((p.path.as_str(), p.exists), ("/run/gone", false));
}

/// The golden messages: each bad file's diagnostics, one per line, in `NAME.err`.
#[test]
fn malformed_files_give_golden_located_errors() {
    let mut files = yaml_files("tests/fixtures/scenario/bad");
    files.extend(yaml_files("tests/fixtures/scenario/bad/plans"));
    assert!(files.len() >= 10);
    let bless = std::env::var_os("BLESS").is_some();
    let mut mismatches = Vec::new();
    for file in files {
        let check = check_file(&file);
        let diags = check
            .result
            .expect_err(&format!("{} should be rejected", file.display()));
        let text: String = diags.iter().map(|d| format!("{d}\n")).collect();
        for d in &diags {
            assert!(d.line > 0 && d.col > 0, "no location: {d}");
            assert!(
                d.to_string().starts_with("tests/fixtures/scenario/bad/"),
                "{d}"
            );
        }
        let golden = file.with_extension("err");
        if bless {
            std::fs::write(&golden, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        if want != text {
            mismatches.push(format!("{}:\n want: {want}\n got:  {text}", file.display()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn load_errors_are_usage_errors_with_locations() {
    let err =
        load_scenario(Path::new("tests/fixtures/scenario/bad/bad-duration.yaml")).unwrap_err();
    assert_eq!(
        coldboot::error::exit_code(&err),
        coldboot::error::exit::USAGE
    );
    assert!(
        err.to_string()
            .starts_with("tests/fixtures/scenario/bad/bad-duration.yaml:9:17: "),
        "{err}"
    );
    let err = load_scenario(Path::new("tests/fixtures/scenario/no-such.yaml")).unwrap_err();
    assert_eq!(
        coldboot::error::exit_code(&err),
        coldboot::error::exit::USAGE
    );
}

#[test]
fn schema_covers_both_formats_and_every_kind() {
    let schema = json_schema();
    let defs = schema["$defs"].as_object().unwrap();
    for name in [
        "Scenario",
        "Plan",
        "Phase",
        "Expectation",
        "Action",
        "Duration",
        "ExpectedOutcome",
    ] {
        assert!(
            defs.contains_key(name),
            "no $defs/{name}: {:?}",
            defs.keys().collect::<Vec<_>>()
        );
    }
    let kinds = defs["Expectation"]["oneOf"].as_array().unwrap();
    assert_eq!(
        kinds.len(),
        coldboot::scenario::kinds::EXPECTATION_KINDS.len()
    );
    assert_eq!(defs["Scenario"]["additionalProperties"], false);
    let scenario_keys: Vec<&String> = defs["Scenario"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        scenario_keys,
        [
            "focus_unit",
            "milestone",
            "name",
            "phases",
            "report",
            "summary"
        ]
    );
}
