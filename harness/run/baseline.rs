//! The naive baseline `coldboot bench` measures the runner against: poll
//! `systemctl is-active UNIT...` every second over SSH, as the NixOS test driver's
//! `wait_for_unit` does, on its own session beside the runner, and note when each unit
//! was first seen active or failed. It decides nothing; it only times the same changes
//! the runner decides on (`run --baseline-poll`, off unless asked for).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::guest::Guest;

/// The NixOS test driver's retry interval.
pub const EVERY: Duration = Duration::from_secs(1);

/// When the poller first saw a unit settled.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Seen {
    /// `active` or `failed`.
    pub state: String,
    /// Seconds on the pair's clock when the poll that saw it returned.
    pub at_secs: f64,
}

/// A running poller; dropping it stops the polling.
pub struct Baseline {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    polls: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Baseline {
    /// Start polling `units` on a session of its own, timed from `origin`.
    pub fn start(guest: &Guest, units: Vec<String>, origin: Instant) -> Baseline {
        let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let polls: Arc<Mutex<u32>> = Arc::default();
        let (s, p) = (seen.clone(), polls.clone());
        let main = guest.clone();
        let task = tokio::spawn(async move {
            let Ok(session) = main.another_session(Duration::from_secs(60)).await else {
                return;
            };
            let cmd = format!("systemctl is-active {}", units.join(" "));
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Ok(out) = session.exec_timeout(&cmd, Duration::from_secs(30)).await else {
                    continue;
                };
                let at_secs = origin.elapsed().as_secs_f64();
                *p.lock().expect("baseline lock") += 1;
                let mut seen = s.lock().expect("baseline lock");
                for (unit, state) in units.iter().zip(out.stdout.lines()) {
                    let state = state.trim();
                    if (state == "active" || state == "failed") && !seen.contains_key(unit) {
                        seen.insert(
                            unit.clone(),
                            Seen {
                                state: state.to_string(),
                                at_secs,
                            },
                        );
                    }
                }
            }
        });
        Baseline { seen, polls, task }
    }

    /// What the poller saw so far, as `baseline-boot-N.json` holds it.
    pub fn evidence(&self) -> serde_json::Value {
        serde_json::json!({
            "interval_secs": EVERY.as_secs_f64(),
            "polls": *self.polls.lock().expect("baseline lock"),
            "seen": &*self.seen.lock().expect("baseline lock"),
        })
    }
}
