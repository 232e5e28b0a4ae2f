//! A phase checked in turns against a guest played back from a real boot, with no VM:
//! the model's broken-traefik pair, its `good-boot` phase. The journal
//! (`tests/fixtures/run/good-boot-journal.jsonl`) is replayed through the runner's own
//! stream code, and every command is answered from what the guest answered in that run
//! (`good-boot-commands.jsonl`, recorded with `COLDBOOT_RECORD_COMMANDS`): three
//! `systemctl show` reads while deploy-proxy was activating, one once it was active, the
//! `/version` probe and the `last-good` read. A command the run never sent has no answer,
//! and fails the test.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::guest::recorded::Answers;
use crate::guest::ssh::Guest;
use crate::run::clock::GuestClock;
use crate::run::early::EarlyDecisions;
use crate::run::watch::{Journal, Replay};
use crate::scenario::Phase;

/// deploy-proxy's start job ended `done` here in the recorded boot (guest µs).
const START_DONE: u64 = 16_353_878;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/run")
        .join(name)
}

fn journal_lines() -> Vec<String> {
    std::fs::read_to_string(fixture("good-boot-journal.jsonl"))
        .expect("the recorded journal")
        .lines()
        .map(str::to_string)
        .collect()
}

fn played() -> Guest {
    let answers = Answers::load(&fixture("good-boot-commands.jsonl")).expect("the recording");
    Guest::recorded(answers).expect("a played-back guest")
}

/// The shipped scenario's first phase, with `edit` applied to its text.
fn good_boot(edit: impl Fn(String) -> String) -> Phase {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/broken-traefik.yaml");
    let text = edit(std::fs::read_to_string(&path).expect("the scenario"));
    let s = crate::scenario::load::parse_scenario(&path, &text).unwrap_or_else(|d| panic!("{d:?}"));
    s.phases[0].clone()
}

/// The phase's checks on the played guest, as the runner's phase sets them up: the
/// guest's clock put where the recorded boot's last entry is just past, deploy-proxy's
/// finished start taken as active (it is `Type=oneshot`, `RemainAfterExit=yes`).
async fn check(phase: &Phase, guest: &Guest, journal: Journal) -> Vec<(usize, Awaited)> {
    let last_us = 17_000_000;
    let now = Instant::now();
    let zero = now - Duration::from_micros(last_us);
    let means_active = HashMap::from([("deploy-proxy.service".to_string(), true)]);
    let waits = phase
        .expect
        .iter()
        .filter_map(|e| e.kind.awaited().cloned())
        .collect();
    let status = |_: &str| {};
    let live = Live {
        vm: None,
        guest,
        journal: journal.clone(),
        clock: Mutex::new(GuestClock::from_sample(zero, 0, Duration::ZERO)),
        status: &status,
        probes: Mutex::default(),
        cycles: cycles::Cycles::idle(Duration::from_secs(10)),
        phase_started: zero,
        qemu_started: zero,
        journal_floor_us: 0,
        start_done_means_active: means_active.clone(),
        early: EarlyDecisions::watch(journal, waits, means_active, 0),
        recorder: None,
    };
    let mut got = Vec::new();
    check_phase(&live, phase, now, &mut |i, a| got.push((i, a.clone())))
        .await
        .expect("every check answered from the recording");
    got
}

fn asked(guest: &Guest) -> Vec<String> {
    guest.played().expect("played").asked()
}

#[tokio::test]
async fn a_replayed_start_decides_the_wait_and_the_observations_share_a_turn() {
    let mut replay = Replay::new();
    for l in journal_lines() {
        replay.line(&l, false);
    }
    let guest = played();
    let phase = good_boot(|t| t);
    let got = check(&phase, &guest, replay.journal()).await;
    assert_eq!(got.len(), 3);
    for (i, a) in &got {
        assert!(a.eval.held, "{}: {}", phase.expect[*i].id, a.eval.seen);
    }
    // PID 1's journal decided the unit wait: no `systemctl show` round trip; the two
    // observations asked once each.
    let asked = asked(&guest);
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .any(|c| c.ends_with("http://127.0.0.1:8082/version"))
    );
    assert!(
        asked
            .iter()
            .any(|c| c == "cat -- /var/lib/ccci-model/last-good")
    );
    let unit = &got.iter().find(|(i, _)| *i == 0).expect("the unit wait").1;
    assert!(
        unit.eval.seen.contains("by PID 1's journal at 16.354s"),
        "{}",
        unit.eval.seen
    );
}

#[tokio::test]
async fn a_wait_read_before_the_start_ended_is_decided_when_the_stream_brings_it() {
    let lines = journal_lines();
    let done = lines
        .iter()
        .position(|l| l.contains(&format!("\"__MONOTONIC_TIMESTAMP\":\"{START_DONE}\"")))
        .or_else(|| {
            lines.iter().position(|l| {
                l.contains("Finished deploy-proxy.service") && l.contains("\"_PID\":\"1\"")
            })
        })
        .expect("the entry that ended the start");
    let mut replay = Replay::new();
    for l in &lines[..done] {
        replay.line(l, false);
    }
    let guest = played();
    let phase = good_boot(|t| t);
    let journal = replay.journal();
    let checking = check(&phase, &guest, journal);
    let rest = async {
        // Until the wait has read the unit (activating, as recorded), the rest waits.
        while asked(&guest).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for l in &lines[done..] {
            replay.line(l, false);
        }
    };
    let (got, ()) = tokio::join!(checking, rest);
    let unit = &got.iter().find(|(i, _)| *i == 0).expect("the unit wait").1;
    assert!(unit.eval.held, "{}", unit.eval.seen);
    let asked = asked(&guest);
    assert!(asked[0].starts_with("systemctl show"), "{asked:?}");
    // Decided by the entry the stream brought, not by polling systemctl to "active".
    let shows = asked
        .iter()
        .filter(|c| c.starts_with("systemctl show"))
        .count();
    assert!(shows < 4, "{asked:?}");
}

#[tokio::test]
async fn an_observation_that_does_not_hold_says_what_the_guest_answered() {
    let mut replay = Replay::new();
    for l in journal_lines() {
        replay.line(&l, false);
    }
    let guest = played();
    let phase = good_boot(|t| {
        t.replacen(
            "file: {path: /var/lib/ccci-model/last-good, content: {equals: \"v1\"}}",
            "file: {path: /var/lib/ccci-model/last-good, content: {equals: \"v2\"}}",
            1,
        )
    });
    let got = check(&phase, &guest, replay.journal()).await;
    let file = &got.iter().find(|(i, _)| *i == 2).expect("the file check").1;
    assert!(!file.eval.held);
    assert!(file.eval.seen.contains("v1"), "{}", file.eval.seen);
}
