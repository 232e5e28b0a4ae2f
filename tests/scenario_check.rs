//! The verdict logic, ordering from monotonic timestamps, no-failed-units and the
//! wait-for graph, all without a VM.

use std::path::Path;

use coldboot::check::{
    Evaluation, ExpectationOutcome, Verdict, WaitForGraph, evaluate_no_failed, evaluate_order,
    evaluate_unit, verdict,
};
use coldboot::guest::systemd::{self, jobs};
use coldboot::scenario::{Expected, Pattern, Reproduction};

fn outcome(id: &str, held: bool, seen: &str) -> ExpectationOutcome {
    ExpectationOutcome::new(
        id,
        format!("{id} holds"),
        Evaluation {
            held,
            seen: seen.to_string(),
            not_checked: false,
        },
    )
}

fn reproduced(ids: &[&str], seen: Option<&str>) -> Expected {
    Expected::Reproduced(Reproduction {
        failing: ids.iter().map(|s| s.to_string()).collect(),
        seen: seen.map(|s| Pattern::parse(s).unwrap()),
    })
}

const PROXY: &str = "unit:deploy-proxy.service=active";
const PING: &str = "http:guest:http://127.0.0.1:8082/ping";

#[test]
fn verdict_table() {
    let all_held = [
        outcome(PROXY, true, "active"),
        outcome(PING, true, "200 OK"),
    ];
    let proxy_stuck = [
        outcome(
            PROXY,
            false,
            "deploy-proxy.service is activating (Result=success)",
        ),
        outcome(PING, true, "200 OK"),
    ];
    let both_failed = [
        outcome(PROXY, false, "activating"),
        outcome(PING, false, "connection refused"),
    ];
    let repro = reproduced(&[PROXY], Some("activating"));
    // (outcomes, expected, verdict word, matches the plan)
    let table: Vec<(&[ExpectationOutcome], Expected, &str, bool)> = vec![
        (&all_held, Expected::Pass, "pass", true),
        (&proxy_stuck, Expected::Pass, "fail", false),
        (&proxy_stuck, repro.clone(), "reproduced", true),
        // A before-target that unexpectedly passes is a failed reproduction.
        (&all_held, repro.clone(), "pass", false),
        // Failing in an unlisted expectation too is not the reproduction the plan describes.
        (&both_failed, repro.clone(), "fail", false),
        // Failing as listed but seen differently is not it either.
        (
            &proxy_stuck,
            reproduced(&[PROXY], Some("Result=timeout")),
            "fail",
            false,
        ),
        // A listed expectation that was never evaluated cannot be reproduced.
        (
            &proxy_stuck[..1],
            reproduced(&[PROXY, PING], None),
            "fail",
            false,
        ),
        (&[], Expected::Pass, "error", false),
    ];
    for (i, (outcomes, expected, word, matches)) in table.into_iter().enumerate() {
        let v = verdict(outcomes, &expected);
        assert_eq!(
            (v.word(), v.matches(&expected)),
            (word, matches),
            "row {i}: {v}"
        );
    }
}

#[test]
fn fail_names_the_expectation_and_what_was_seen() {
    let outcomes = [outcome(
        PROXY,
        false,
        "deploy-proxy.service is activating (Result=success)",
    )];
    let v = verdict(&outcomes, &Expected::Pass);
    let text = v.to_string();
    assert!(
        text.contains(PROXY) && text.contains("is activating"),
        "{text}"
    );
    let wrong_way = reproduced(&[PROXY], Some("Result=timeout"));
    let Verdict::Fail {
        expectation, note, ..
    } = verdict(&outcomes, &wrong_way)
    else {
        panic!()
    };
    assert_eq!(expectation, PROXY);
    assert!(note.unwrap().contains("/Result=timeout/"));
}

/// Timestamps as `systemctl show -p SHOW_PROPERTIES` prints them (µs since boot), shaped
/// like a gate=self boot of the model: proxy active at 21.9 s, consumers after it.
const SHOW_GOOD: &str = "\
Id=deploy-proxy.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
InactiveExitTimestampMonotonic=19402113
ActiveEnterTimestampMonotonic=21934551
ActiveExitTimestampMonotonic=0
InactiveEnterTimestampMonotonic=0
ExecMainStartTimestampMonotonic=19405020

Id=drone.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
InactiveExitTimestampMonotonic=21940002
ActiveEnterTimestampMonotonic=21951230
ActiveExitTimestampMonotonic=0
InactiveEnterTimestampMonotonic=0
ExecMainStartTimestampMonotonic=21945001

Id=reports.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
InactiveExitTimestampMonotonic=21941877
ActiveEnterTimestampMonotonic=21960000
ActiveExitTimestampMonotonic=0
InactiveEnterTimestampMonotonic=0
ExecMainStartTimestampMonotonic=21950000
";

#[test]
fn ordering_holds_when_consumers_start_after_the_anchor() {
    let times = systemd::parse_show(SHOW_GOOD).unwrap();
    assert_eq!(times.len(), 3);
    let consumers = ["drone.service".to_string(), "reports.service".to_string()];
    let e = evaluate_order("deploy-proxy.service", &consumers, &times);
    assert!(e.held, "{}", e.seen);
    assert!(e.seen.contains("21.935s"), "{}", e.seen);
}

#[test]
fn ordering_names_early_and_missing_units_with_times() {
    let mut times = systemd::parse_show(SHOW_GOOD).unwrap();
    times[1].inactive_exit_us = Some(20_000_000); // drone started before the proxy finished
    let consumers = ["drone.service".to_string(), "bridge.service".to_string()];
    let e = evaluate_order("deploy-proxy.service", &consumers, &times);
    assert!(!e.held);
    assert!(
        e.seen
            .contains("drone.service started at 20.000s (1.935s early)"),
        "{}",
        e.seen
    );
    assert!(
        e.seen.contains("bridge.service never started"),
        "{}",
        e.seen
    );
}

#[test]
fn a_failed_oneshot_finishes_starting_when_it_leaves_activating() {
    // gate=dashboard with TimeoutStartSec=120: the proxy never becomes active; it fails at
    // 139.4 s and only then does the dashboard start.
    let show = "\
Id=deploy-proxy.service
LoadState=loaded
ActiveState=failed
SubState=failed
Result=timeout
InactiveExitTimestampMonotonic=19402113
ActiveEnterTimestampMonotonic=0
InactiveEnterTimestampMonotonic=139410222

Id=deploy-dashboard.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
InactiveExitTimestampMonotonic=139420001
ActiveEnterTimestampMonotonic=139800000
";
    let times = systemd::parse_show(show).unwrap();
    let e = evaluate_order(
        "deploy-proxy.service",
        &["deploy-dashboard.service".to_string()],
        &times,
    );
    assert!(e.held, "{}", e.seen);
    assert!(e.seen.contains("139.410s (failed)"), "{}", e.seen);
    // Still activating: the order cannot be shown.
    let mut stuck = times.clone();
    stuck[0].inactive_enter_us = None;
    stuck[0].active_state = "activating".into();
    let e = evaluate_order(
        "deploy-proxy.service",
        &["deploy-dashboard.service".to_string()],
        &stuck,
    );
    assert!(
        !e.held && e.seen.contains("never finished starting"),
        "{}",
        e.seen
    );
}

#[test]
fn unit_state_and_no_failed_units() {
    let s =
        coldboot::scenario::load_scenario(Path::new("scenarios/dashboard-held-back.yaml")).unwrap();
    let coldboot::scenario::ExpectationKind::Unit(u) = &s.phases[0].expect[0].kind else {
        panic!()
    };
    assert!(evaluate_unit(u, "active", "success").held);
    let stuck = evaluate_unit(u, "activating", "success");
    assert!(!stuck.held && stuck.seen.contains("activating"));
    assert!(!evaluate_unit(u, "active", "exit-code").held);

    let units = vec![
        ("deploy-proxy.service".to_string(), "failed".to_string()),
        ("drone.service".to_string(), "active".to_string()),
    ];
    let e = evaluate_no_failed(&units, &[]);
    assert!(!e.held && e.seen.contains("deploy-proxy.service"));
    assert!(evaluate_no_failed(&units, &["deploy-proxy.service".to_string()]).held);
}

/// Recorded on the model with gate=dashboard during the deadlock (systemd 252).
const RECORDED_DEADLOCK: &str = "tests/fixtures/ccci-model/dashboard-deadlock.list-jobs.txt";

const CONSUMERS: [&str; 7] = [
    "deploy-dashboard.service",
    "drone.service",
    "warm-keycloak.service",
    "reports.service",
    "bridge.service",
    "backupbot.service",
    "nightly-sweep.service",
];

#[test]
fn recorded_deadlock_queue_closes_a_cycle_through_the_gate_edge() {
    let text = std::fs::read_to_string(RECORDED_DEADLOCK).unwrap();
    let jobs = jobs::parse_jobs(&text, false).unwrap();
    assert_eq!(jobs.len(), 11, "the file says: 11 jobs listed");
    let proxy = jobs
        .iter()
        .find(|j| j.unit == "deploy-proxy.service")
        .unwrap();
    assert_eq!((proxy.id, proxy.state.as_str()), (91, "running"));
    assert_eq!(proxy.blocking.len(), 8);
    // The running proxy job "blocks" others: on 252 the labels are literal.
    assert_eq!(jobs::labels_swapped(&jobs), Some(false));

    let mut g = WaitForGraph::from_jobs(&jobs::orient(jobs, 252));
    for c in CONSUMERS {
        assert!(
            g.edges()
                .any(|e| e.waiter == c && e.waited == "deploy-proxy.service"),
            "{c} should wait for deploy-proxy"
        );
    }
    assert!(
        !g.edges().any(|e| e.waiter == "deploy-proxy.service"),
        "a running job waits for no job"
    );
    assert!(g.find_cycle().is_none(), "systemd's own queue is acyclic");

    g.add(
        "deploy-proxy.service",
        "deploy-dashboard.service",
        coldboot::check::EdgeKind::Gate,
        "health gate polls https://ci.commoninternet.net/, served by deploy-dashboard",
    );
    let cycle = g.find_cycle().expect("the gate edge closes the cycle");
    assert_eq!(
        cycle.units(),
        [
            "deploy-proxy.service",
            "deploy-dashboard.service",
            "deploy-proxy.service"
        ],
        "the path starts at the gate, the edge systemd cannot see"
    );
    let text = cycle.to_string();
    assert!(
        text.contains("job 82 (deploy-dashboard.service) waits for job 91"),
        "{text}"
    );
    assert!(text.contains("health gate polls"), "{text}");
}

/// The pre-v256 layout quoted in systemd PR #32450: running jobs printed as "waiting for"
/// the target that in truth waits for them.
const SWAPPED_SAMPLE: &str = "\
JOB UNIT                                              TYPE  STATE
93  check-oil.service                                 start running
└─      waiting for job 94 (engine-ready.target/start)   -     -
94  engine-ready.target                               start waiting
└─      waiting for job 111 (start-engine.service/start) -     -
└─      blocking job 93 (check-oil.service/start)        -     -
111 start-engine.service                              start waiting
└─      blocking job 94 (engine-ready.target/start)      -     -

3 jobs listed.
";

#[test]
fn swapped_labels_are_recognised_from_job_states() {
    let printed = jobs::parse_jobs(SWAPPED_SAMPLE, false).unwrap();
    assert_eq!(jobs::labels_swapped(&printed), Some(true));
    let g = WaitForGraph::from_jobs(&jobs::orient(printed.clone(), 257));
    let edges: Vec<(&str, &str)> = g
        .edges()
        .map(|e| (e.waiter.as_str(), e.waited.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("engine-ready.target", "check-oil.service"),
            ("start-engine.service", "engine-ready.target")
        ]
    );
    // Read literally, the same text would claim the running job waits.
    let wrong = WaitForGraph::from_jobs(&printed);
    assert!(wrong.edges().any(|e| e.waiter == "check-oil.service"));
}

#[test]
fn empty_queue_parses_to_nothing() {
    assert!(
        jobs::parse_jobs("No jobs running.\n", false)
            .unwrap()
            .is_empty()
    );
    assert_eq!(jobs::labels_swapped(&[]), None);
    assert!(WaitForGraph::default().find_cycle().is_none());
}

/// Recorded `systemctl show` after the gate=dashboard deadlock timed out (TimeoutStartSec=60):
/// the proxy failed with Result=timeout, and every consumer started only afterwards.
#[test]
fn recorded_after_timeout_show() {
    let text =
        std::fs::read_to_string("tests/fixtures/ccci-model/dashboard-t60-after-timeout.show.txt")
            .unwrap();
    let times = systemd::parse_show(&text).unwrap();
    let proxy = times
        .iter()
        .find(|t| t.id == "deploy-proxy.service")
        .unwrap();
    assert_eq!(
        (proxy.active_state.as_str(), proxy.result_str()),
        ("failed", "timeout")
    );
    assert_eq!(proxy.active_enter_us, None);
    let consumers: Vec<String> = CONSUMERS.iter().map(|s| s.to_string()).collect();
    // This recording lacks InactiveEnterTimestampMonotonic, so when the failed proxy left
    // `activating` is unknown and the order cannot be shown (the reader asks for it).
    let e = evaluate_order("deploy-proxy.service", &consumers, &times);
    assert!(
        !e.held && e.seen.contains("never finished starting"),
        "{}",
        e.seen
    );
    // With the time the journal recorded for the failure (125.815620 s), it can.
    let mut completed = times.clone();
    for t in completed
        .iter_mut()
        .filter(|t| t.id == "deploy-proxy.service")
    {
        t.inactive_enter_us = Some(125_815_620);
    }
    let e = evaluate_order("deploy-proxy.service", &consumers, &completed);
    assert!(e.held, "{}", e.seen);
    // traefik.service became active at 90.591 s, long before the consumers: a true order.
    assert!(evaluate_order("traefik.service", &consumers, &times).held);
    // …and the consumers did not wait for the dashboard, so this order must not hold.
    let e = evaluate_order("deploy-dashboard.service", &consumers[1..], &times);
    assert!(!e.held && e.seen.contains("early"), "{}", e.seen);
}
