//! Ordering from the guest's monotonic timestamps: did each consumer start only after
//! the anchor finished starting?

use serde::{Deserialize, Serialize};

use super::outcome::Evaluation;

/// A unit's state and monotonic timestamps (microseconds since the guest booted, as
/// `systemctl show -p ...TimestampMonotonic` prints them; 0 means "never").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTimes {
    /// The unit name.
    pub unit: String,
    /// `ActiveState`.
    pub active_state: String,
    /// `Result` (success, timeout, exit-code, ...).
    pub result: String,
    /// `InactiveExitTimestampMonotonic`: it left inactive (its start began).
    pub inactive_exit_us: u64,
    /// `ActiveEnterTimestampMonotonic`: it became active (its start finished well).
    pub active_enter_us: u64,
    /// `ActiveExitTimestampMonotonic`: it left active.
    pub active_exit_us: u64,
    /// `InactiveEnterTimestampMonotonic`: it became inactive or failed.
    pub inactive_enter_us: u64,
    /// `ExecMainStartTimestampMonotonic`: its main process started.
    pub exec_main_start_us: u64,
}

/// The `systemctl show` properties [`UnitTimes::from_show`] reads.
pub const SHOW_PROPERTIES: &str = "Id,ActiveState,Result,InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic,ActiveExitTimestampMonotonic,InactiveEnterTimestampMonotonic,ExecMainStartTimestampMonotonic";

impl UnitTimes {
    /// Parse `systemctl show -p PROPS UNIT...` output: `KEY=VALUE` lines, one blank line
    /// between units. Unknown keys are ignored; a unit without `Id=` is skipped.
    pub fn from_show(text: &str) -> Vec<UnitTimes> {
        let mut out = Vec::new();
        for block in text.split("\n\n") {
            let mut t = UnitTimes::default();
            for line in block.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let us = || v.trim().parse::<u64>().unwrap_or(0);
                match k.trim() {
                    "Id" => t.unit = v.trim().to_string(),
                    "ActiveState" => t.active_state = v.trim().to_string(),
                    "Result" => t.result = v.trim().to_string(),
                    "InactiveExitTimestampMonotonic" => t.inactive_exit_us = us(),
                    "ActiveEnterTimestampMonotonic" => t.active_enter_us = us(),
                    "ActiveExitTimestampMonotonic" => t.active_exit_us = us(),
                    "InactiveEnterTimestampMonotonic" => t.inactive_enter_us = us(),
                    "ExecMainStartTimestampMonotonic" => t.exec_main_start_us = us(),
                    _ => {}
                }
            }
            if !t.unit.is_empty() {
                out.push(t);
            }
        }
        out
    }

    /// When the unit finished starting: when it became active, or, for a start that
    /// failed, when it left `activating` (entered failed/inactive after its start began).
    pub fn finished_starting_us(&self) -> Option<u64> {
        if self.active_enter_us > 0 {
            Some(self.active_enter_us)
        } else if self.inactive_exit_us > 0 && self.inactive_enter_us > self.inactive_exit_us {
            Some(self.inactive_enter_us)
        } else {
            None
        }
    }

    /// When the unit's start began (it left inactive), if it did.
    pub fn started_us(&self) -> Option<u64> {
        (self.inactive_exit_us > 0).then_some(self.inactive_exit_us)
    }
}

/// Seconds with millisecond precision, for messages.
fn secs(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// Whether every unit in `consumers` started (left inactive) at or after the moment
/// `anchor` finished starting. A consumer that never started, or an anchor that never
/// finished starting, does not hold: the order cannot be shown.
pub fn evaluate_order(anchor: &str, consumers: &[String], times: &[UnitTimes]) -> Evaluation {
    let find = |name: &str| times.iter().find(|t| t.unit == name);
    let Some(a) = find(anchor) else {
        return Evaluation::failed(format!("no timestamps for {anchor}"));
    };
    let Some(done) = a.finished_starting_us() else {
        return Evaluation::failed(format!(
            "{anchor} never finished starting (ActiveState={}, InactiveExit={}, ActiveEnter={})",
            a.active_state,
            secs(a.inactive_exit_us),
            secs(a.active_enter_us)
        ));
    };
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for c in consumers {
        match find(c).and_then(UnitTimes::started_us) {
            None => problems.push(format!("{c} never started")),
            Some(s) if s < done => problems.push(format!(
                "{c} started at {} ({} early)",
                secs(s),
                secs(done - s)
            )),
            Some(s) => fine.push(format!("{c} +{}", secs(s - done))),
        }
    }
    let anchor_text = format!(
        "{anchor} finished starting at {} ({})",
        secs(done),
        a.active_state
    );
    if problems.is_empty() {
        Evaluation::held(format!("{anchor_text}; after it: {}", fine.join(", ")))
    } else {
        Evaluation::failed(format!("{anchor_text}; {}", problems.join("; ")))
    }
}
