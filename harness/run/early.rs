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

use crate::check;
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
                    if let Some((at_us, _)) =
                        super::unit_wait::pid1_word(&journal, u, by_journal, floor_us)
                    {
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
