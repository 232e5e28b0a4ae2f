//! Ordering from the guest's monotonic timestamps: did each consumer start only after
//! the anchor finished starting?

use super::outcome::Evaluation;
use crate::guest::systemd::UnitState;

/// Seconds with millisecond precision, for messages.
fn secs(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// Whether every unit in `consumers` started (left inactive) at or after the moment
/// `anchor` finished starting. A consumer that never started, or an anchor that never
/// finished starting, does not hold: the order cannot be shown.
pub fn evaluate_order(anchor: &str, consumers: &[String], times: &[UnitState]) -> Evaluation {
    let find = |name: &str| times.iter().find(|t| t.id == name);
    let Some(a) = find(anchor) else {
        return Evaluation::failed(format!("no timestamps for {anchor}"));
    };
    let Some(done) = a.finished_starting_us() else {
        return Evaluation::failed(format!(
            "{anchor} never finished starting (ActiveState={}, InactiveExit={}, ActiveEnter={})",
            a.active_state,
            secs(a.inactive_exit_us.unwrap_or(0)),
            secs(a.active_enter_us.unwrap_or(0))
        ));
    };
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for c in consumers {
        match find(c).and_then(UnitState::started_us) {
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
