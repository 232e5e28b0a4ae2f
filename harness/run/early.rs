//! Unit waits decided ahead of their turn.
//!
//! A phase's expectations are awaited in file order (see `scenario::expectation`'s Timing
//! note), so while one waits, the units named after it may already have started. A watch
//! over the phase's journal evaluates every plain "unit is active" wait the moment PID 1's
//! entry arrives, and keeps the instant it did so. When that wait's turn comes, the
//! decision already made stands if that start is still PID 1's latest word on the unit
//! (a unit that stopped or failed since is read again); the deadline is judged against
//! the guest's time of the start as usual.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::check;
use crate::scenario::UnitExpectation;

use super::watch::Journal;

/// When a unit was seen active in PID 1's journal, and when the watch decided so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// Guest monotonic µs of PID 1's entry.
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
    /// Watch `journal` for the waits in `waits` (with whether a finished start means
    /// active for each unit), counting PID 1's entries from `floor_us` on.
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
            // Only units whose finished start means active can be decided here.
            let mut open: Vec<UnitExpectation> = waits
                .into_iter()
                .filter(|u| means_active.get(u.unit.as_str()).copied().unwrap_or(false))
                .collect();
            while !open.is_empty() {
                // Counted before the scan: an entry that arrives during it wakes the next.
                let seen = journal.len();
                let now = Instant::now();
                open.retain(|u| {
                    let unit = u.unit.as_str();
                    let active = means_active.get(unit).copied().unwrap_or(false);
                    let hit = journal.scan(|all| {
                        check::units::active_in_journal(
                            u,
                            active,
                            floor_us,
                            all.iter().map(|s| &s.entry),
                        )
                    });
                    match hit {
                        Some(at_us) => {
                            out.lock()
                                .expect("early decisions lock")
                                .entry(unit.to_string())
                                .or_insert(Decided {
                                    at_us,
                                    decided: now,
                                });
                            false
                        }
                        None => true,
                    }
                });
                if !journal.changed_after(seen).await {
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
