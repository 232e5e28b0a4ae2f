//! Plans that carry their whole claim (issue 22): each shipped plan's `claims:` names
//! the properties its summary states, and here each property is held to the checks it
//! needs, written once below, independently of the plans. A plan that drops a check
//! (from a scenario, from a claim, or a whole pair) fails here, or already at load with
//! a located error; the copies under a temporary folder show both.
//!
//! Loading checks that a claim's ids exist and that every pair proves something (see
//! `scenario::plan`); this file checks that what is claimed is enough.

mod common;

use std::path::{Path, PathBuf};

use coldboot::scenario::{
    Expectation, ExpectationKind, Expected, LoadedPlan, OrderAnchor, ProbeFrom, TextMatch,
    UnitState, WaitCycleExpectation, load_plan,
};

/// The fixed gate, on which every "passes" property is claimed.
const FIXED: &str = "recipe:vm-images/ccci-model?gate=self";
/// The old gate at cc-ci's real timeout, which M1 reproduces.
const OLD: &str = "recipe:vm-images/ccci-model?gate=dashboard&timeout=900";
/// The After=deploy-proxy consumers, the dashboard first.
const CONSUMERS: [&str; 7] = [
    "deploy-dashboard.service",
    "drone.service",
    "warm-keycloak.service",
    "reports.service",
    "bridge.service",
    "backupbot.service",
    "nightly-sweep.service",
];
const PROXY: &str = "deploy-proxy.service";
const DASHBOARD_URL: &str = "https://ci.commoninternet.net/";

/// One check a property needs: a claimed expectation of a passing pair on the fixed
/// gate (of scenario `on`, when given; in a phase after the first, when `later`) for
/// which `holds` is true.
struct Need {
    what: String,
    on: Option<&'static str>,
    later: bool,
    holds: Box<dyn Fn(&Expectation) -> bool>,
}

fn need(what: impl Into<String>, holds: impl Fn(&Expectation) -> bool + 'static) -> Need {
    Need {
        what: what.into(),
        on: None,
        later: false,
        holds: Box::new(holds),
    }
}

fn unit_is(e: &Expectation, unit: &str, state: UnitState) -> bool {
    matches!(&e.kind, ExpectationKind::Unit(u) if u.unit.as_str() == unit && u.state == state)
}

fn dashboard_through_proxy(e: &Expectation, from: ProbeFrom) -> bool {
    matches!(&e.kind, ExpectationKind::Http(h)
        if h.url == DASHBOARD_URL && h.ca.is_some() && h.from == from && h.body.is_some())
}

fn consumers_after(e: &Expectation, anchor: impl Fn(&Option<OrderAnchor>) -> bool) -> bool {
    matches!(&e.kind, ExpectationKind::Order(o)
        if o.after.as_str() == PROXY
            && anchor(&o.anchor)
            && CONSUMERS.iter().all(|c| o.units.iter().any(|u| u.as_str() == *c)))
}

/// "Converges": every unit up, nothing failed, no wait cycle, within the budget, and
/// the dashboard reachable as a user reaches it.
fn converges() -> Vec<Need> {
    let mut needs: Vec<Need> = std::iter::once(PROXY)
        .chain(CONSUMERS)
        .map(|u| {
            need(format!("{u} active"), move |e| {
                unit_is(e, u, UnitState::Active)
            })
        })
        .collect();
    needs.extend([
        need("no unit failed", |e| {
            matches!(&e.kind, ExpectationKind::NoFailedUnits(n) if n.except.is_empty())
        }),
        need("no wait cycle", |e| {
            matches!(&e.kind, ExpectationKind::WaitCycle(w) if w.expect == WaitCycleExpectation::Absent)
        }),
        need("the boot within its budget", |e| {
            matches!(&e.kind, ExpectationKind::BootBudget(_))
        }),
        need("the proxy's /ping answers", |e| {
            matches!(&e.kind, ExpectationKind::Http(h) if h.url.ends_with("/ping"))
        }),
        need(
            "the dashboard through the proxy on verified TLS, from the guest",
            |e| dashboard_through_proxy(e, ProbeFrom::Guest),
        ),
        need(
            "the dashboard through the proxy on verified TLS, from the host",
            |e| dashboard_through_proxy(e, ProbeFrom::Host),
        ),
        // A state that lasts: a window of 30 s or more over the gate, the proxy, the
        // dashboard and the route through the proxy on verified TLS.
        need(
            "the converged state holds 30 s (units and the route through the proxy)",
            |e| {
                matches!(&e.kind, ExpectationKind::Stable(w)
                if w.window.0 >= std::time::Duration::from_secs(30)
                    && ["deploy-proxy.service", "traefik.service", "deploy-dashboard.service", "drone.service"]
                        .iter()
                        .all(|u| w.units.keys().any(|k| k.as_str() == *u))
                    && w.http.iter().any(|h| h.url.starts_with("https://ci.commoninternet.net") && h.ca.is_some()))
            },
        ),
    ]);
    needs
}

/// "In order": every consumer after deploy-proxy's start job and after the gate's
/// decision line.
fn in_order() -> Vec<Need> {
    vec![
        need("every consumer after deploy-proxy's start job ended", |e| {
            consumers_after(e, |a| matches!(a, Some(OrderAnchor::StartJob)))
        }),
        need(
            "every consumer after the health gate's decision line",
            |e| {
                consumers_after(
                    e,
                    |a| matches!(a, Some(OrderAnchor::Journal(p)) if p.is_match("decision=commit")),
                )
            },
        ),
        // The order checks also judge consumers against the harness's probes, but on a
        // cold boot the gated start may end before SSH answers; a redeploy is watched
        // whole, so gate honesty is proven there.
        need(
            "deploy-proxy's start ends only once the harness's own probe saw its gate healthy",
            |e| matches!(&e.kind, ExpectationKind::GateHonest(g) if g.unit.as_str() == PROXY),
        ),
    ]
}

/// "Rolls back", for each broken proxy: the rollback logged, deploy-proxy failed with
/// status 2, v1 serving and still last-good, all after the fault.
fn rolls_back() -> Vec<Need> {
    let mut needs = Vec::new();
    for on in ["broken-traefik", "broken-traefik-silent"] {
        let later = |what: &str, holds: Box<dyn Fn(&Expectation) -> bool>| Need {
            what: format!("{on}: {what}"),
            on: Some(on),
            later: true,
            holds,
        };
        needs.extend([
            later(
                "deploy-proxy logs its rollback to v1",
                Box::new(|e| {
                    matches!(&e.kind, ExpectationKind::Journal(j)
                    if j.unit.as_ref().is_some_and(|u| u.as_str() == PROXY)
                        && j.pattern.as_str().contains("decision=rollback")
                        && j.pattern.as_str().contains("to=v1"))
                }),
            ),
            later(
                "deploy-proxy fails with status 2",
                Box::new(|e| {
                    matches!(&e.kind, ExpectationKind::Unit(u)
                    if u.unit.as_str() == PROXY && u.state == UnitState::Failed
                        && u.properties.get("ExecMainStatus").map(String::as_str) == Some("2"))
                }),
            ),
            later(
                "v1 serves",
                Box::new(|e| {
                    matches!(&e.kind, ExpectationKind::Http(h)
                    if h.url.ends_with("/version") && h.body == Some(TextMatch::Equals("v1".into())))
                }),
            ),
            later(
                "v1 keeps serving and deploy-proxy stays failed for a window",
                Box::new(|e| {
                    matches!(&e.kind, ExpectationKind::Stable(w)
                    if w.units.get(&coldboot::scenario::UnitName::parse(PROXY).expect("a unit name"))
                        == Some(&UnitState::Failed)
                        && !w.http.is_empty())
                }),
            ),
            later(
                "v1 stays last-good",
                Box::new(|e| {
                    matches!(&e.kind, ExpectationKind::File(f)
                    if f.path.ends_with("/last-good") && f.content == TextMatch::Equals("v1".into()))
                }),
            ),
        ]);
    }
    needs
}

/// What `needs` lacks among the expectations `plan` claims for `property`: only
/// passing pairs on the fixed gate count.
fn gaps(plan: &LoadedPlan, property: &str, needs: &[Need]) -> Vec<String> {
    if plan.claim(property).is_none() {
        return vec![format!("no claim {property:?}")];
    }
    let pairs = plan.pairs();
    let claimed: Vec<(&str, usize, &Expectation)> = plan
        .claimed(property)
        .into_iter()
        .filter_map(|(run, e)| {
            let pair = pairs.iter().find(|p| p.id == run)?;
            if pair.target != FIXED || pair.expected != Expected::Pass {
                return None;
            }
            let phase = pair
                .scenario
                .phases
                .iter()
                .position(|ph| ph.expect.iter().any(|x| x.id == e.id))?;
            Some((pair.scenario.name.as_str(), phase, e))
        })
        .collect();
    needs
        .iter()
        .filter(|n| {
            !claimed.iter().any(|(scenario, phase, e)| {
                n.on.is_none_or(|on| on == *scenario) && (!n.later || *phase > 0) && (n.holds)(e)
            })
        })
        .map(|n| n.what.clone())
        .collect()
}

fn properties(plan: &LoadedPlan) -> Vec<&str> {
    plan.plan
        .claims
        .iter()
        .map(|c| c.property.as_str())
        .collect()
}

#[test]
fn m2_claims_converges_in_order_and_rolls_back_with_every_check_they_need() {
    let plan = load_plan(Path::new("scenarios/plans/m2.yaml")).unwrap();
    assert_eq!(properties(&plan), ["converges", "in order", "rolls back"]);
    assert_eq!(gaps(&plan, "converges", &converges()), Vec::<String>::new());
    assert_eq!(gaps(&plan, "in order", &in_order()), Vec::<String>::new());
    assert_eq!(
        gaps(&plan, "rolls back", &rolls_back()),
        Vec::<String>::new()
    );
}

#[test]
fn m1_claims_the_reproduction_and_the_whole_cold_boot_proof_on_the_fix() {
    let plan = load_plan(Path::new("scenarios/plans/m1.yaml")).unwrap();
    assert_eq!(
        properties(&plan),
        [
            "the old gate deadlocks",
            "the fix passes the same boot",
            "the fix passes the whole cold-boot proof",
            "holds with the dashboard held back",
            "still rolls back broken proxies",
        ]
    );
    // The reproduction: the old gate's pair, each claimed id among those the plan
    // expects to fail, the wait cycle first, with the shape of what must be seen.
    let pairs = plan.pairs();
    let deadlock = plan.claim("the old gate deadlocks").unwrap();
    assert_eq!(deadlock.proven_by.len(), 1);
    let before = pairs
        .iter()
        .find(|p| p.id == deadlock.proven_by[0].run)
        .unwrap();
    assert_eq!(before.target, OLD);
    let Expected::Reproduced(r) = &before.expected else {
        panic!("{:?}", before.expected)
    };
    assert_eq!(r.failing[0], "wait_cycle=absent");
    assert!(r.seen.is_some());
    for id in &deadlock.proven_by[0].ids {
        assert!(
            r.failing.contains(id),
            "{id} is claimed but not expected to fail"
        );
    }
    // The same boot passes on the fix.
    let same = [
        need("no wait cycle", |e| {
            matches!(&e.kind, ExpectationKind::WaitCycle(w) if w.expect == WaitCycleExpectation::Absent)
        }),
        need("deploy-proxy active", |e| {
            unit_is(e, PROXY, UnitState::Active)
        }),
        need("the dashboard active", |e| {
            unit_is(e, "deploy-dashboard.service", UnitState::Active)
        }),
    ]
    .map(|mut n| {
        n.on = Some("old-gate-cold-boot");
        n
    });
    assert_eq!(
        gaps(&plan, "the fix passes the same boot", &same),
        Vec::<String>::new()
    );
    // The whole cold-boot proof: what M2's "converges" and "in order" need, on M1's
    // after-target (the dashboard through the proxy on verified TLS among it).
    let mut whole = converges();
    whole.extend(in_order());
    assert_eq!(
        gaps(&plan, "the fix passes the whole cold-boot proof", &whole),
        Vec::<String>::new()
    );
    let held_back = [
        need("deploy-proxy active", |e| {
            unit_is(e, PROXY, UnitState::Active)
        }),
        need("the dashboard not started", |e| {
            unit_is(e, "deploy-dashboard.service", UnitState::Inactive)
        }),
    ]
    .map(|mut n| {
        n.on = Some("dashboard-held-back");
        n
    });
    assert_eq!(
        gaps(&plan, "holds with the dashboard held back", &held_back),
        Vec::<String>::new()
    );
    assert_eq!(
        gaps(&plan, "still rolls back broken proxies", &rolls_back()),
        Vec::<String>::new()
    );
}

/// M2's consumer order and M1's whole cold-boot proof reuse pairs the other plan runs:
/// the main job still boots seven pairs.
#[test]
fn the_main_job_runs_each_shared_pair_once() {
    let out = common::run(&[
        "run",
        "--plan",
        "scenarios/plans/m1.yaml",
        "--plan",
        "scenarios/plans/m2.yaml",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("before/") || l.starts_with("after/"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        ids,
        [
            "before/old-gate-cold-boot",
            "after/old-gate-cold-boot",
            "after/dashboard-held-back",
            "after/broken-traefik",
            "after/broken-traefik-silent",
            "after/consumers-order",
            "after/clean-cold-boot",
        ]
    );
}

/// The shipped scenarios and plans, copied for a test to break.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scenarios");
    common::copy_dir(Path::new("scenarios"), &dir);
    (tmp, dir)
}

/// Remove from `file` the YAML item that starts with the line `first` (which must be
/// there once), with every line indented under it.
fn drop_item(file: &Path, first: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == first).collect();
    assert_eq!(at.len(), 1, "{first:?} in {}", file.display());
    let indent = |l: &str| l.len() - l.trim_start().len();
    let depth = indent(first);
    let end = (at[0] + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && indent(lines[i]) <= depth)
        .unwrap_or(lines.len());
    let kept: Vec<&str> = lines[..at[0]]
        .iter()
        .chain(&lines[end..])
        .copied()
        .collect();
    std::fs::write(file, kept.join("\n") + "\n").unwrap();
}

/// Where `line` is in `file` (1-based line, and the column its text starts at).
fn position(file: &Path, line: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(file).unwrap();
    let n = text.lines().position(|l| l == line).expect("the line") + 1;
    let col = line.len() - line.trim_start().len() + 1;
    (n, col)
}

#[test]
fn a_plan_missing_a_check_its_claim_needs_is_caught() {
    // 1. The check is gone from the scenario, the claim still names it: both plans fail
    //    to load, the error naming the plan's file, line and column.
    let (_tmp, dir) = copy();
    drop_item(
        &dir.join("clean-cold-boot.yaml"),
        "      - id: cold-boot/dashboard-through-proxy",
    );
    for plan in ["m1", "m2"] {
        let file = dir.join(format!("plans/{plan}.yaml"));
        let err = load_plan(&file).unwrap_err().to_string();
        let id_line = "          - cold-boot/dashboard-through-proxy";
        let (line, col) = position(&file, id_line);
        let at = format!("{}:{line}:{}: ", file.display(), col + 2);
        assert!(err.contains(&at), "{at} in {err}");
        assert!(
            err.contains(
                "needs expectation \"cold-boot/dashboard-through-proxy\" of run after/clean-cold-boot, but scenario clean-cold-boot has none"
            ),
            "{err}"
        );
    }

    // 2. ... and gone from the claim too: the plan loads, and the coverage check names
    //    what the claim lacks.
    let m2 = dir.join("plans/m2.yaml");
    drop_item(&m2, "          - cold-boot/dashboard-through-proxy");
    let plan = load_plan(&m2).unwrap();
    assert_eq!(
        gaps(&plan, "converges", &converges()),
        ["the dashboard through the proxy on verified TLS, from the guest"]
    );

    // 3. M2 without the consumer-ordering pair (run and proof both dropped): "in order"
    //    lacks the gate's decision.
    let (_tmp, dir) = copy();
    let m2 = dir.join("plans/m2.yaml");
    let text = std::fs::read_to_string(&m2).unwrap();
    let run = "  - target: after\n    scenario: consumers-order.yaml\n    expect: pass\n";
    assert_eq!(text.matches(run).count(), 1);
    std::fs::write(&m2, text.replace(run, "")).unwrap();
    drop_item(&m2, "      - run: after/consumers-order");
    let plan = load_plan(&m2).unwrap();
    assert_eq!(
        gaps(&plan, "in order", &in_order()),
        [
            "every consumer after the health gate's decision line",
            "deploy-proxy's start ends only once the harness's own probe saw its gate healthy"
        ]
    );

    // 4. M1 without the clean cold boot on its after-target: the whole cold-boot proof
    //    lacks, among others, the dashboard through the proxy on verified TLS.
    let (_tmp, dir) = copy();
    let m1 = dir.join("plans/m1.yaml");
    let text = std::fs::read_to_string(&m1).unwrap();
    let run = "  - target: after\n    scenario: clean-cold-boot.yaml\n    expect: pass\n";
    assert_eq!(text.matches(run).count(), 1);
    std::fs::write(&m1, text.replace(run, "")).unwrap();
    drop_item(&m1, "      - run: after/clean-cold-boot");
    let plan = load_plan(&m1).unwrap();
    let mut whole = converges();
    whole.extend(in_order());
    let lacks = gaps(&plan, "the fix passes the whole cold-boot proof", &whole);
    for what in [
        "the dashboard through the proxy on verified TLS, from the guest",
        "the dashboard through the proxy on verified TLS, from the host",
        "no unit failed",
        "drone.service active",
    ] {
        assert!(lacks.iter().any(|l| l == what), "{what} in {lacks:?}");
    }

    // 5. A pair no claim names: the plan does not say what it proves, a located error.
    let (_tmp, dir) = copy();
    let m2 = dir.join("plans/m2.yaml");
    drop_item(&m2, "      - run: after/broken-traefik-silent");
    let err = load_plan(&m2).unwrap_err().to_string();
    let (line, col) = position(&m2, "    scenario: broken-traefik-silent.yaml");
    let at = format!("{}:{line}:{}: ", m2.display(), col + 10);
    assert!(err.contains(&at), "{at} in {err}");
    assert!(
        err.contains("run \"after/broken-traefik-silent\" proves none of the plan's claims"),
        "{err}"
    );
    // ... and the rollback claim then lacks the silent proxy.
    let (_tmp, dir) = copy();
    let m2 = dir.join("plans/m2.yaml");
    drop_item(&m2, "      - run: after/broken-traefik-silent");
    let text = std::fs::read_to_string(&m2).unwrap();
    let run = "  - target: after\n    scenario: broken-traefik-silent.yaml\n    expect: pass\n";
    std::fs::write(&m2, text.replace(run, "")).unwrap();
    let plan = load_plan(&m2).unwrap();
    assert_eq!(
        gaps(&plan, "rolls back", &rolls_back()),
        [
            "broken-traefik-silent: deploy-proxy logs its rollback to v1",
            "broken-traefik-silent: deploy-proxy fails with status 2",
            "broken-traefik-silent: v1 serves",
            "broken-traefik-silent: v1 keeps serving and deploy-proxy stays failed for a window",
            "broken-traefik-silent: v1 stays last-good",
        ]
    );
}
