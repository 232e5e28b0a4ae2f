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
    let anchor_text = format!(
        "{anchor} finished starting at {} ({})",
        secs(done),
        a.active_state
    );
    evaluate_order_from(anchor_text, done, consumers, times)
}

/// Whether every unit in `consumers` started at or after `done` (µs, guest clock), the
/// anchor's moment as `anchor_text` describes it.
pub fn evaluate_order_from(
    anchor_text: String,
    done: u64,
    consumers: &[String],
    times: &[UnitState],
) -> Evaluation {
    let find = |name: &str| times.iter().find(|t| t.id == name);
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
    if problems.is_empty() {
        Evaluation::held(format!("{anchor_text}; after it: {}", fine.join(", ")))
    } else {
        Evaluation::failed(format!("{anchor_text}; {}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::systemd::journal::Entry;
    use crate::guest::systemd::parse_show;

    fn recorded() -> (Vec<Entry>, Vec<UnitState>) {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference-run/after__clean-cold-boot"
        );
        let journal = std::fs::read_to_string(format!("{dir}/journal-boot-1.json")).unwrap();
        let units = std::fs::read_to_string(format!("{dir}/units-cold-boot.txt")).unwrap();
        (
            journal.lines().filter_map(Entry::parse).collect(),
            parse_show(&units).unwrap(),
        )
    }

    const CONSUMERS: [&str; 3] = [
        "deploy-dashboard.service",
        "drone.service",
        "bridge.service",
    ];

    #[test]
    fn anchored_on_the_gate_decision_and_the_start_job_in_a_recorded_boot() {
        let (entries, units) = recorded();
        let consumers: Vec<String> = CONSUMERS.iter().map(|s| s.to_string()).collect();
        let decided = entries
            .iter()
            .find(|e| {
                e.unit.as_deref() == Some("deploy-proxy.service")
                    && e.message.contains("decision=commit")
            })
            .expect("the gate's decision is recorded")
            .mono_us;
        let job_end = entries
            .iter()
            .find(|e| e.ends_start_job_of("deploy-proxy.service"))
            .expect("the start job's end is recorded")
            .mono_us;
        assert!(
            decided <= job_end,
            "the gate decides before its unit's job ends"
        );
        for at in [decided, job_end] {
            let e = evaluate_order_from("anchor".into(), at, &consumers, &units);
            assert!(e.held, "{}", e.seen);
        }
        // An anchor after the consumers started (multi-user.target's job end) fails, and
        // says by how much.
        let late = entries
            .iter()
            .find(|e| e.ends_start_job_of("multi-user.target"))
            .expect("recorded")
            .mono_us;
        let e = evaluate_order_from("late".into(), late, &consumers, &units);
        assert!(!e.held && e.seen.contains("early"), "{}", e.seen);
    }
}
