//! Unit waits decided ahead of their turn.
//!
//! A phase's expectations are awaited in file order (see `scenario::expectation`'s Timing
//! note), so while one waits, the units named after it may already have started. A watch
//! over the phase's journal and PID 1's unit signals evaluates every plain "unit is
//! active" wait the moment PID 1's word arrives, and keeps the instant it did so. When that wait's turn comes, the
//! decision already made stands if that start is still PID 1's latest word on the unit
//! (a unit that stopped or failed since is read again); the deadline is judged against
//! the guest's time of the start as usual.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::check::{self, Evaluation};
use crate::scenario::UnitExpectation;

use super::watch::Journal;

/// When a unit was seen active by PID 1's word, and when the watch decided so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// Guest monotonic µs of the change.
    pub at_us: u64,
    /// The host instant the watch evaluated it.
    pub decided: Instant,
}

/// The decisions of a phase's watch, by unit; the watch stops when this is dropped.
pub struct EarlyDecisions {
    decided: Arc<Mutex<HashMap<String, Decided>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for EarlyDecisions {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl EarlyDecisions {
    /// Watch `journal` (and its unit signals) for the waits in `waits` (with whether a
    /// finished start means active for each unit), counting PID 1's word from `floor_us` on.
    pub fn watch(
        journal: Journal,
        waits: Vec<UnitExpectation>,
        means_active: HashMap<String, bool>,
        floor_us: u64,
    ) -> EarlyDecisions {
        let decided: Arc<Mutex<HashMap<String, Decided>>> = Arc::default();
        let out = decided.clone();
        let task = tokio::spawn(async move {
            let mut journal = journal;
            if waits.is_empty() {
                return;
            }
            // Every wait stays watched: a unit that restarts after it was decided is
            // decided again, at its new start, so the decision at its turn is still PID
            // 1's latest word (the turn compares the change's guest time).
            loop {
                // Counted before the scan: an arrival during it wakes the next.
                let seen = journal.arrived();
                let now = Instant::now();
                for u in &waits {
                    let unit = u.unit.as_str();
                    // The journal decides only units whose finished start means active.
                    let by_journal = means_active.get(unit).copied().unwrap_or(false)
                        && check::units::decidable_by_journal(u);
                    if let Some((at_us, _)) = pid1_word(&journal, u, by_journal, floor_us) {
                        let mut all = out.lock().expect("early decisions lock");
                        let decided = match all.get(unit) {
                            Some(d) if d.at_us == at_us => continue,
                            // The same start, first seen in the journal (stamped when
                            // journald received PID 1's entry, after the start), then
                            // in a signal (the start's own time): decided at the first.
                            // A new start is always later than the last one's entry.
                            Some(d) if at_us < d.at_us => d.decided,
                            _ => now,
                        };
                        all.insert(unit.to_string(), Decided { at_us, decided });
                    }
                }
                if !journal.arrived_after(seen).await {
                    break;
                }
            }
        });
        EarlyDecisions {
            decided,
            task: Some(task),
        }
    }

    /// The decision already made for `unit`'s plain "active" wait, if any.
    pub fn get(&self, unit: &str) -> Option<Decided> {
        self.decided
            .lock()
            .expect("early decisions lock")
            .get(unit)
            .copied()
    }
}

/// PID 1's own word on `u`, without asking systemctl: its unit signals first (any
/// expectation they show held), then its journal (a plain "active" wait whose start
/// ended `done`, when `by_journal`). The guest time (µs) of the change, and what was seen.
pub(super) fn pid1_word(
    journal: &Journal,
    u: &UnitExpectation,
    by_journal: bool,
    floor: u64,
) -> Option<(u64, Evaluation)> {
    let signalled = journal
        .scan_changes(|all| check::units::held_by_signals(u, floor, all.iter().map(|c| &c.change)));
    if signalled.is_some() {
        return signalled;
    }
    if !by_journal {
        return None;
    }
    let us = journal.scan(|all| {
        check::units::active_in_journal(u, true, floor, all.iter().map(|s| &s.entry))
    })?;
    let eval = check::units::evaluate_unit(u, "active", "success");
    let seen = format!(
        "{} by PID 1's journal at {:.3}s",
        eval.seen,
        us as f64 / 1e6
    );
    Some((us, Evaluation { seen, ..eval }))
}

#[cfg(test)]
mod tests {
    //! The phase's watch against a journal replayed line by line as the guest's stream
    //! brought it: `tests/fixtures/run/broken-traefik-journal.jsonl`, PID 1's entries and
    //! deploy-proxy's own from a real run of the model's broken-traefik pair (deploy-proxy
    //! starts and commits v1, is restarted onto a broken version, and fails after its
    //! rollback).
    use super::*;
    use crate::run::watch::Replay;
    use std::time::Duration;

    /// deploy-proxy's first start ended `done` here (guest µs).
    const FIRST_START_DONE: u64 = 42_613_218;
    /// The restart's new start job began here (guest µs).
    const RESTART_BEGAN: u64 = 47_882_273;

    fn lines() -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/run/broken-traefik-journal.jsonl");
        std::fs::read_to_string(path)
            .expect("the recorded journal")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `unit: U, state: active`, as a scenario states it.
    fn active(unit: &str) -> UnitExpectation {
        let text = format!(
            "name: t\nmilestone: [nightly]\nsummary: s\nphases:\n  - name: p\n    expect:\n\
             \x20     - unit: {unit}\n        state: active\n        within: 300s\n"
        );
        let s = crate::scenario::load::parse_scenario(std::path::Path::new("t.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d:?}"));
        s.phases[0].expect[0]
            .kind
            .awaited()
            .expect("a unit wait")
            .clone()
    }

    fn index_of(lines: &[String], mono_us: u64) -> usize {
        lines
            .iter()
            .position(|l| l.contains(&format!("\"__MONOTONIC_TIMESTAMP\":\"{mono_us}\"")))
            .expect("the entry is in the recording")
    }

    /// The watch's decision for `unit`, once it has one (the watch runs on its own task).
    async fn decision(early: &EarlyDecisions, unit: &str) -> Option<Decided> {
        for _ in 0..200 {
            if let Some(d) = early.get(unit) {
                return Some(d);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    fn watch(journal: &Journal, u: &UnitExpectation, floor_us: u64) -> EarlyDecisions {
        let means_active = HashMap::from([(u.unit.as_str().to_string(), true)]);
        EarlyDecisions::watch(journal.clone(), vec![u.clone()], means_active, floor_us)
    }

    #[tokio::test]
    async fn a_start_is_decided_while_the_stream_is_still_replaying() {
        let lines = lines();
        let (mut replay, u) = (Replay::new(), active("deploy-proxy.service"));
        let early = watch(&replay.journal(), &u, 0);
        let done = index_of(&lines, FIRST_START_DONE);
        for l in &lines[..=done] {
            assert!(replay.line(l, false), "{l}");
        }
        let decided = decision(&early, "deploy-proxy.service")
            .await
            .expect("decided from the entry that ended the start");
        assert_eq!(decided.at_us, FIRST_START_DONE);
        // The rest of the recording arrives after the decision.
        let rest_began = Instant::now();
        assert!(decided.decided <= rest_began);
        for l in &lines[done + 1..] {
            replay.line(l, false);
        }
    }

    #[tokio::test]
    async fn a_unit_that_restarts_and_fails_before_its_turn_is_not_taken_as_active() {
        let lines = lines();
        let (mut replay, u) = (Replay::new(), active("deploy-proxy.service"));
        let journal = replay.journal();
        let early = watch(&journal, &u, 0);
        let done = index_of(&lines, FIRST_START_DONE);
        for l in &lines[..=done] {
            replay.line(l, false);
        }
        let seen = decision(&early, "deploy-proxy.service").await;
        assert_eq!(seen.map(|d| d.at_us), Some(FIRST_START_DONE));
        for l in &lines[done + 1..] {
            replay.line(l, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The watch saw the first start end, but at the wait's turn PID 1's latest word on
        // the unit is the failed restart: the journal no longer decides it (systemctl is
        // asked, and sees it failed), and no later start was decided instead.
        assert_eq!(
            early.get("deploy-proxy.service").map(|d| d.at_us),
            Some(FIRST_START_DONE)
        );
        assert_eq!(super::pid1_word(&journal, &u, true, 0), None);
        // The dashboard, whose start ended once and stayed, is still decided.
        let dashboard = active("deploy-dashboard.service");
        assert!(super::pid1_word(&journal, &dashboard, true, 0).is_some());
    }

    #[tokio::test]
    async fn after_an_action_a_start_logged_before_it_decides_nothing() {
        // The restart action ended when its new start began: the phase's floor. The only
        // start that ended `done` came before it, so it is stale for this phase.
        let lines = lines();
        let (mut replay, u) = (Replay::new(), active("deploy-proxy.service"));
        let journal = replay.journal();
        let early = watch(&journal, &u, RESTART_BEGAN);
        let done = index_of(&lines, FIRST_START_DONE);
        for l in &lines[..=done] {
            replay.line(l, false);
        }
        assert!(decision(&early, "deploy-proxy.service").await.is_none());
        assert_eq!(super::pid1_word(&journal, &u, true, RESTART_BEGAN), None);
        // The same entries with no action before the phase decide it.
        assert_eq!(
            super::pid1_word(&journal, &u, true, 0).map(|(us, _)| us),
            Some(FIRST_START_DONE)
        );
    }
}
