//! Live wait-cycle logic (check::live) replayed from a real read: the watcher's own
//! record of the old gate's cold boot on the model (gate=dashboard, TimeoutStartSec=900,
//! systemd 252 under TCG), `tests/fixtures/ccci-model/old-gate-waitfor-boot-1.json`,
//! copied from a `coldboot run` bundle. No VM needed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use coldboot::check::live::{
    self, Confirmed, CycleTracker, PhaseWatch, RecordedRead, evaluate_wait_cycle,
};
use coldboot::scenario::WaitCycleExpectation;

fn recorded() -> RecordedRead {
    let text = std::fs::read_to_string("tests/fixtures/ccci-model/old-gate-waitfor-boot-1.json")
        .expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["confirming_read"].clone()).expect("a recorded read")
}

const PATH: &str = "deploy-proxy.service (start running 90 s; gate https://ci.commoninternet.net/ → timed out ×2) waits for deploy-dashboard.service (start waiting, After=deploy-proxy.service)";

#[test]
fn the_gate_edge_closes_the_cycle_and_its_path_reads_from_the_gate() {
    let read = recorded();
    let snap = read.snapshot();
    let g = live::graph(&snap);
    let cycle = g.find_cycle().expect("a cycle through the gate");
    assert_eq!(
        cycle.units(),
        [
            "deploy-proxy.service",
            "deploy-dashboard.service",
            "deploy-proxy.service"
        ]
    );
    assert_eq!(live::describe(&cycle, &snap), PATH);
    // The dashboard's job (91) was queued before the proxy's (96), so the cycle formed
    // when the proxy's start began, by the guest's clock.
    assert_eq!(live::formed_us(&cycle, &snap), Some(39_750_184));
    assert_eq!(
        live::breaks_at_us(&cycle, &snap),
        Some(("deploy-proxy.service".to_string(), 39_750_184 + 900_000_000))
    );
    // Everything the boot wants is held up behind it.
    let on: BTreeSet<String> = cycle.edges.iter().map(|e| e.waiter.clone()).collect();
    let behind = g.waiting_on(&on);
    for unit in ["drone.service", "backupbot.service", "multi-user.target"] {
        assert!(behind.contains(unit), "{unit} waits on the cycle");
    }
}

#[test]
fn without_the_gate_edge_there_is_no_cycle_but_an_undeclared_wait_is_a_stall() {
    let mut read = recorded();
    // A healthy gate adds no edge: systemd's own queue is acyclic.
    read.gates[0].healthy = true;
    assert!(live::graph(&read.snapshot()).find_cycle().is_none());
    // The same queue with no gate declared: the proxy's start has run 90 s and holds
    // up the dashboard and the consumers. That is a stall, never a cycle.
    read.gates.clear();
    let snap = read.snapshot();
    assert!(live::graph(&snap).find_cycle().is_none());
    let stalls = live::stalls(&snap, Duration::from_secs(10));
    assert_eq!(stalls.len(), 1);
    assert_eq!(stalls[0].unit, "deploy-proxy.service");
    assert_eq!(stalls[0].running_secs, 90);
    assert!(
        stalls[0]
            .blocked
            .contains(&"deploy-dashboard.service".to_string())
    );
    // Below the persistence it is not one yet.
    assert!(live::stalls(&snap, Duration::from_secs(120)).is_empty());
}

#[test]
fn a_cycle_counts_once_read_twice_and_lasting_persist() {
    let t0 = Instant::now();
    let units = || Some(BTreeSet::from(["a".to_string(), "b".to_string()]));
    let mut t = CycleTracker::new(Duration::from_secs(10));
    // Dated by the guest 30 s back: it has lasted, but one read is not enough.
    let formed = Some(t0);
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(t.observe(at(30), units(), formed), None);
    assert_eq!(t.observe(at(32), units(), formed), Some(t0));
    // A read without it starts over; undated, it counts from its first sighting.
    assert_eq!(t.observe(at(34), None, None), None);
    assert_eq!(t.observe(at(36), units(), None), None);
    assert_eq!(t.observe(at(40), units(), None), None);
    assert_eq!(t.observe(at(46), units(), None), Some(at(36)));
    // Another set of units is another cycle.
    let other = Some(BTreeSet::from(["a".to_string(), "c".to_string()]));
    assert_eq!(t.observe(at(48), other, None), None);
}

fn confirmed(breaks_in: Option<u64>) -> (Confirmed, Instant) {
    let read = recorded();
    let snap = read.snapshot();
    let g = live::graph(&snap);
    let cycle = g.find_cycle().unwrap();
    let now = Instant::now();
    let units: BTreeSet<String> = cycle.edges.iter().map(|e| e.waiter.clone()).collect();
    let c = Confirmed {
        message: live::describe(&cycle, &snap),
        blocked: g
            .waiting_on(&units)
            .into_iter()
            .filter(|u| !units.contains(u))
            .collect(),
        units,
        formed: now,
        formed_from_guest: true,
        confirmed: now,
        breaks: breaks_in.map(|s| {
            (
                "deploy-proxy.service".to_string(),
                now + Duration::from_secs(s),
            )
        }),
        graph: g.clone(),
        cycle,
    };
    (c, now)
}

#[test]
fn units_on_or_behind_a_cycle_are_decided_unless_it_can_break_in_time() {
    let (c, now) = confirmed(Some(800));
    let soon = now + Duration::from_secs(60);
    let late = now + Duration::from_secs(1000);
    // The proxy's own timeout breaks the cycle by failing it: never active.
    let why = c
        .blocks("deploy-proxy.service", true, late)
        .expect("decided");
    assert!(why.contains("only its own start timeout breaks"), "{why}");
    assert!(why.ends_with(PATH), "{why}");
    // It can still reach `failed` once the timeout breaks the cycle, before a late deadline.
    assert!(c.blocks("deploy-proxy.service", false, late).is_none());
    // The dashboard and a consumer cannot start before the break...
    for unit in ["deploy-dashboard.service", "drone.service"] {
        let why = c.blocks(unit, true, soon).expect("decided");
        assert!(why.contains("cannot break before"), "{why}");
    }
    assert!(
        c.blocks("drone.service", true, soon)
            .unwrap()
            .contains("waits on")
    );
    // ...but may after it, so a deadline past the break keeps waiting.
    assert!(c.blocks("deploy-dashboard.service", true, late).is_none());
    // A unit with nothing to do with it is not touched.
    assert!(c.blocks("ssh.service", true, soon).is_none());
    // With no timeout on the cycle nothing breaks it.
    let (forever, _) = confirmed(None);
    assert!(
        forever
            .blocks("deploy-dashboard.service", true, late)
            .unwrap()
            .contains("nothing breaks by itself")
    );
}

#[test]
fn systemds_ordering_cycle_lines_are_read_with_the_job_it_deleted() {
    // PID 1's messages as transaction.c (v252) words them, each prefixed by the unit.
    let lines = [
        (
            100,
            "cyc-a.service: Found ordering cycle on cyc-b.service/start",
        ),
        (
            101,
            "cyc-a.service: Found dependency on cyc-a.service/start",
        ),
        (
            102,
            "cyc-a.service: Found dependency on cyc-b.service/start",
        ),
        (
            103,
            "cyc-a.service: Job cyc-b.service/start deleted to break ordering cycle starting with cyc-a.service/start",
        ),
        (200, "Started Something Else."),
    ];
    let found = live::ordering_cycles(lines);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].units,
        ["cyc-b.service", "cyc-a.service", "cyc-b.service"]
    );
    assert_eq!(found[0].deleted.as_deref(), Some("cyc-b.service/start"));
    assert!(
        found[0]
            .describe()
            .contains("deleted job cyc-b.service/start")
    );
}

#[test]
fn wait_cycle_is_never_a_pass_unchecked_and_says_what_it_covered() {
    let persist = Duration::from_secs(10);
    let unread = PhaseWatch {
        error: Some("no session".into()),
        ..PhaseWatch::default()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &unread);
    assert!(!e.held && e.seen.starts_with("not checked"), "{}", e.seen);

    let quiet = PhaseWatch {
        reads: 4,
        first_read_secs: Some(30.0),
        last_read_secs: Some(40.0),
        gates_declared: 1,
        gate_probes: vec![("deploy-proxy.service".into(), 0)],
        ..PhaseWatch::default()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &quiet);
    assert!(e.held, "{}", e.seen);
    assert!(e.seen.contains("from 30.0 s to 40.0 s"), "{}", e.seen);
    assert!(e.seen.contains("gate not probed"), "{}", e.seen);
    assert!(!evaluate_wait_cycle(WaitCycleExpectation::Expected, persist, &quiet).held);

    // One read is no watch, and a last read that failed is not a clean end.
    let once = PhaseWatch {
        reads: 1,
        last_read_secs: Some(30.0),
        ..quiet.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &once);
    assert!(!e.held && e.seen.contains("read only once"), "{}", e.seen);
    let broken = PhaseWatch {
        error: Some("lost the SSH channel".into()),
        ..quiet.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &broken);
    assert!(
        !e.held && e.seen.contains("not checked to the end"),
        "{}",
        e.seen
    );

    let no_gates = PhaseWatch {
        gates_declared: 0,
        gate_probes: vec![],
        ..quiet.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &no_gates);
    assert!(e.seen.contains("only systemd's own edges"), "{}", e.seen);

    let cycle = PhaseWatch {
        cycle: Some(PATH.into()),
        ..quiet
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &cycle);
    assert!(!e.held && e.seen.contains(PATH), "{}", e.seen);
    assert!(evaluate_wait_cycle(WaitCycleExpectation::Expected, persist, &cycle).held);
}

#[test]
fn a_watch_that_did_not_cover_a_gated_start_is_not_checked_and_says_its_window() {
    let persist = Duration::from_secs(10);
    // The SSH watch of session 6's clean cold boot: deploy-proxy's start job ran from
    // 22.9 s, the first read came at 40.1 s.
    let ssh = PhaseWatch {
        source: "ssh".into(),
        reads: 3,
        first_read_secs: Some(40.1),
        last_read_secs: Some(47.1),
        gates_declared: 1,
        gate_probes: vec![("deploy-proxy.service".into(), 0)],
        starts: vec![("deploy-proxy.service".into(), Some(22.9))],
        ..PhaseWatch::default()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &ssh);
    assert!(!e.held && e.not_checked, "{}", e.seen);
    assert!(
        e.seen
            .contains("deploy-proxy.service's start job began at 22.9 s, before the watch"),
        "{}",
        e.seen
    );
    // A gated start never seen running over SSH ran before the watch, or not at all.
    let unseen = PhaseWatch {
        starts: vec![("deploy-proxy.service".into(), None)],
        ..ssh.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &unseen);
    assert!(
        e.not_checked && e.seen.contains("never seen running"),
        "{}",
        e.seen
    );

    // The recorder's watch from early userspace covers the whole start: a real check.
    let recorder = PhaseWatch {
        source: "recorder".into(),
        userspace_secs: Some(9.5),
        first_read_secs: Some(19.1),
        starts: vec![("deploy-proxy.service".into(), Some(28.1))],
        ..ssh.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &recorder);
    assert!(e.held && !e.not_checked, "{}", e.seen);
    assert!(
        e.seen
            .contains("watched by the recorder from 9.6 s after userspace began")
            && e.seen
                .contains("covering deploy-proxy.service's whole start job (began 28.1 s)"),
        "{}",
        e.seen
    );
    // A recorder that stopped mid-boot leaves a window, never a pass.
    let stopped = PhaseWatch {
        recorder_ended: Some((30.2, "the guest's end of the channel closed".into())),
        ..recorder
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &stopped);
    assert!(e.not_checked, "{}", e.seen);
    assert!(
        e.seen.contains("the recorder stopped at 30.2 s") && e.seen.contains("from 9.6 s"),
        "{}",
        e.seen
    );
}

/// The inference on a real run's recorded inputs (tests/fixtures/infer/README.md).
fn recorded_inference_inputs() -> (
    Vec<coldboot::check::infer::WaitSeen>,
    Vec<coldboot::guest::recorder::net::Connection>,
    Vec<coldboot::check::infer::Listener>,
) {
    let dir = std::path::Path::new("tests/fixtures/infer");
    let waits = serde_json::from_str(
        &std::fs::read_to_string(dir.join("old-gate-undeclared.waits.json")).unwrap(),
    )
    .unwrap();
    let conns = std::fs::read_to_string(dir.join("old-gate-undeclared.connections.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listeners = coldboot::check::infer::parse_listeners(
        &std::fs::read_to_string(dir.join("old-gate-undeclared.listeners.txt")).unwrap(),
    );
    (waits, conns, listeners)
}

#[test]
fn an_undeclared_gate_is_inferred_from_refused_connections_and_who_listens_later() {
    use coldboot::check::infer::infer;
    let (waits, conns, listeners) = recorded_inference_inputs();
    let edges = infer(&waits, &conns, &listeners);
    assert_eq!(edges.len(), 1, "{edges:#?}");
    let e = &edges[0];
    assert_eq!(
        (e.from.as_str(), e.to.as_str(), e.port),
        ("deploy-proxy.service", "deploy-dashboard.service", 8080)
    );
    // Through the local reverse proxy: traefik's connections to the backend port.
    assert_eq!(e.who, vec!["traefik.service (caddy)".to_string()]);
    assert!(e.refused >= 5, "{e:?}");
    assert!(e.cycle_us() > 20_000_000, "{e:?}");
    let words = e.describe();
    assert!(
        words.contains("deploy-dashboard.service listens on 8080"),
        "{words}"
    );

    // Each of the three conditions is needed.
    let nobody_listens: Vec<_> = listeners
        .iter()
        .filter(|l| l.port != 8080)
        .cloned()
        .collect();
    assert!(infer(&waits, &conns, &nobody_listens).is_empty());
    let nothing_refused: Vec<_> = conns
        .iter()
        .filter(|c| c.kind != coldboot::guest::recorder::net::Attempt::Reset)
        .cloned()
        .collect();
    assert!(infer(&waits, &nothing_refused, &listeners).is_empty());
    let not_queued: Vec<_> = waits
        .iter()
        .filter(|w| w.waiter != "deploy-dashboard.service")
        .cloned()
        .collect();
    assert!(infer(&not_queued, &conns, &listeners).is_empty());
}

#[test]
fn an_inferred_cycle_that_lasted_fails_wait_cycle_absent_and_a_short_one_is_only_told() {
    let persist = Duration::from_secs(10);
    let base = PhaseWatch {
        source: "recorder".into(),
        reads: 40,
        first_read_secs: Some(12.0),
        last_read_secs: Some(70.0),
        ..PhaseWatch::default()
    };
    let long = PhaseWatch {
        inferred: vec![("deploy-proxy.service (start running) waits for deploy-dashboard.service (inferred: ...)".into(), 34.0)],
        ..base.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &long);
    assert!(
        !e.held && !e.not_checked && e.seen.contains("inferred"),
        "{}",
        e.seen
    );
    let short = PhaseWatch {
        inferred: vec![("a (start running) waits for b (inferred: ...)".into(), 3.0)],
        ..base.clone()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &short);
    assert!(
        e.held && e.seen.contains("inferred waits shorter than 10 s"),
        "{}",
        e.seen
    );
    let gap = PhaseWatch {
        inference_gap: Some("the netwatch never spoke".into()),
        ..base
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, persist, &gap);
    assert!(
        e.seen
            .contains("no waits inferred (the netwatch never spoke)"),
        "{}",
        e.seen
    );
}

#[test]
fn infer_false_is_a_wait_cycle_switch_and_nothing_else_takes_it() {
    use coldboot::scenario::{ExpectationKind, parse_scenario};
    let file = std::path::Path::new("/nonexistent/s.yaml");
    let text = "name: s\nmilestone: M1\nsummary: x\nphases:\n  - name: p\n    expect:\n      - wait_cycle: absent\n        infer: false\n";
    let s = parse_scenario(file, text).expect("parses");
    let ExpectationKind::WaitCycle(w) = &s.phases[0].expect[0].kind else {
        panic!("a wait_cycle")
    };
    assert!(!w.infer);
    assert!(
        s.phases[0].expect[0]
            .kind
            .describe()
            .contains("inference switched off")
    );
    let on = text.replace("        infer: false\n", "");
    let s = parse_scenario(file, &on).expect("parses");
    let ExpectationKind::WaitCycle(w) = &s.phases[0].expect[0].kind else {
        panic!("a wait_cycle")
    };
    assert!(w.infer, "inference is on unless switched off");
    let misplaced = "name: s\nmilestone: M1\nsummary: x\nphases:\n  - name: p\n    expect:\n      - unit: a.service\n        state: active\n        infer: false\n";
    let diags = parse_scenario(file, misplaced).expect_err("refused");
    let shown = format!("{diags:?}");
    assert!(
        shown.contains("`infer` belongs to a `wait_cycle:` expectation"),
        "{shown}"
    );
}

#[test]
fn a_declared_gate_that_disagrees_with_what_was_inferred_is_reported() {
    let w = PhaseWatch {
        source: "recorder".into(),
        reads: 10,
        first_read_secs: Some(12.0),
        last_read_secs: Some(40.0),
        disagreements: vec!["the declared gate says deploy-proxy.service's start waits on http://127.0.0.1:8082/ping (served by traefik.service), but its refused connections point to deploy-dashboard.service (port 8080)".into()],
        ..PhaseWatch::default()
    };
    let e = evaluate_wait_cycle(WaitCycleExpectation::Absent, Duration::from_secs(10), &w);
    assert!(
        e.seen
            .contains("the declared gate says deploy-proxy.service's start waits on"),
        "{}",
        e.seen
    );
}
