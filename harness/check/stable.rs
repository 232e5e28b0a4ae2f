//! `stable:` windows, judged without a process: which named unit left its state first
//! (by PID 1's signals, or by a read of its state), and the words of a window that held
//! or failed. The runner (`run::stable`) gathers the signals, entries, reads and probes.

use std::collections::BTreeMap;

use crate::guest::systemd::UnitState as ShownState;
use crate::guest::systemd::journal::Entry;
use crate::guest::systemd::signals::UnitChange;
use crate::scenario::{UnitName, UnitState};

/// How many of a unit's journal lines a failed window quotes.
pub const LAST_LINES: usize = 5;

/// A watched unit that is not, or no longer, in the state the window wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The unit.
    pub unit: String,
    /// The state it had to stay in.
    pub wanted: &'static str,
    /// The `ActiveState` it went to.
    pub state: String,
    /// Its `SubState`, when known.
    pub sub_state: Option<String>,
    /// Its `Result`, when known.
    pub result: Option<String>,
    /// Guest time (µs) of the change, when known.
    pub at_us: Option<u64>,
    /// Who said so: PID 1's D-Bus signal, or a read of the unit's state.
    pub by: &'static str,
}

impl Departure {
    /// `traefik.service left active for failed (failed, Result=signal)`.
    pub fn words(&self) -> String {
        let mut detail: Vec<String> = self.sub_state.iter().cloned().collect();
        if let Some(r) = &self.result {
            detail.push(format!("Result={r}"));
        }
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join(", "))
        };
        format!(
            "{} left {} for {}{detail}",
            self.unit, self.wanted, self.state
        )
    }
}

/// The `...TimestampMonotonic` PID 1 sets when a unit enters `state` (an `ActiveState`
/// word), for a signal that carries no `StateChangeTimestampMonotonic`.
fn entered_at(state: &str) -> &'static str {
    match state {
        "active" | "reloading" => "ActiveEnterTimestampMonotonic",
        "deactivating" => "ActiveExitTimestampMonotonic",
        "activating" => "InactiveExitTimestampMonotonic",
        _ => "InactiveEnterTimestampMonotonic",
    }
}

/// The first change among PID 1's unit signals (in arrival order, those that arrived
/// since the window opened) that takes a watched unit out of the state the window wants.
/// A unit's type interface (`Result`...) comes just before its state change, so the
/// properties of every earlier signal of the unit are kept for the words.
pub fn departure_in_signals<'a>(
    wanted: &BTreeMap<UnitName, UnitState>,
    changes: impl IntoIterator<Item = &'a UnitChange>,
) -> Option<Departure> {
    let mut known: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for c in changes {
        let Some((unit, want)) = wanted.iter().find(|(u, _)| u.as_str() == c.unit) else {
            continue;
        };
        let props = known.entry(unit.as_str()).or_default();
        props.extend(c.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if !c.is_state() {
            continue;
        }
        let Some(state) = c.properties.get("ActiveState") else {
            continue;
        };
        if state == want.as_str() {
            continue;
        }
        let at_us = c
            .number("StateChangeTimestampMonotonic")
            .or_else(|| c.number(entered_at(state)))
            .filter(|us| *us > 0);
        return Some(Departure {
            unit: c.unit.clone(),
            wanted: want.as_str(),
            state: state.clone(),
            sub_state: props.get("SubState").map(|s| s.to_string()),
            result: props.get("Result").map(|s| s.to_string()),
            at_us,
            by: "PID 1's D-Bus signal",
        });
    }
    None
}

/// The first watched unit (in the window's order) that a read of the units' states
/// shows out of the state the window wants. A unit the read did not return is out of
/// it too (systemd no longer knows it).
pub fn departure_in_states(
    wanted: &BTreeMap<UnitName, UnitState>,
    states: &[ShownState],
) -> Option<Departure> {
    for (unit, want) in wanted {
        let shown = states.iter().find(|s| s.id == unit.as_str());
        match shown {
            Some(s) if s.active_state == want.as_str() => {}
            Some(s) => {
                return Some(Departure {
                    unit: unit.as_str().to_string(),
                    wanted: want.as_str(),
                    state: s.active_state.clone(),
                    sub_state: Some(s.sub_state.clone()).filter(|x| !x.is_empty()),
                    result: s.result.clone(),
                    at_us: s.state_change_us.filter(|us| *us > 0),
                    by: "a read of its state",
                });
            }
            None => {
                return Some(Departure {
                    unit: unit.as_str().to_string(),
                    wanted: want.as_str(),
                    state: "not loaded".to_string(),
                    sub_state: None,
                    result: None,
                    at_us: None,
                    by: "a read of its state",
                });
            }
        }
    }
    None
}

/// How much of one journal line a failure quotes.
const LINE_CHARS: usize = 160;

/// `[42.712s] message`: one journal line as a failure quotes it (its first
/// [`LINE_CHARS`] characters).
fn line(e: &Entry) -> String {
    let text = e.message.trim_end();
    let text = match text.char_indices().nth(LINE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    };
    format!("[{:.3}s] {text}", e.mono_us as f64 / 1e6)
}

/// The unit's last `n` journal lines (its own output and PID 1's lines about it).
pub fn last_lines<'a>(
    unit: &str,
    entries: impl IntoIterator<Item = &'a Entry>,
    n: usize,
) -> Vec<String> {
    let mine: Vec<&Entry> = entries
        .into_iter()
        .filter(|e| e.unit.as_deref() == Some(unit))
        .collect();
    mine[mine.len().saturating_sub(n)..]
        .iter()
        .map(|e| line(e))
        .collect()
}

/// PID 1's first journal entry about `unit` at or after guest time `from_us`: what it
/// said of the change.
pub fn pid1_entry<'a>(
    unit: &str,
    from_us: u64,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Option<&'a Entry> {
    entries
        .into_iter()
        .find(|e| e.from_manager && e.unit.as_deref() == Some(unit) && e.mono_us >= from_us)
}

/// Seconds, as the messages print them.
fn secs(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// When, in the window that opened at guest time `start_us`: `at guest 42.712s, 12.3 s
/// into the window`, or before it opened (a unit found out of its state by the first read).
fn moment(at_us: Option<u64>, start_us: u64) -> String {
    match at_us {
        Some(at) if at >= start_us => format!(
            "at guest {}, {:.1} s into the window",
            secs(at),
            (at - start_us) as f64 / 1e6
        ),
        Some(at) => format!(
            "at guest {}, {:.1} s before the window opened",
            secs(at),
            (start_us - at) as f64 / 1e6
        ),
        None => "at a moment PID 1 did not say".to_string(),
    }
}

/// A failed window's words for a unit that left its state: the moment, the cause (PID
/// 1's entry about the change, when it has come) and the unit's last journal lines.
pub fn unit_failure(
    d: &Departure,
    start_us: u64,
    pid1: Option<&Entry>,
    lines: &[String],
) -> String {
    let mut text = format!("{} {} by {}", d.words(), moment(d.at_us, start_us), d.by);
    match pid1 {
        Some(e) => text.push_str(&format!("; PID 1: {:?} at {}", e.message, secs(e.mono_us))),
        None => text.push_str("; no journal entry of PID 1 about it yet"),
    }
    if lines.is_empty() {
        text.push_str("; no journal line of its own");
    } else {
        text.push_str(&format!("; its last journal lines: {}", lines.join(" | ")));
    }
    text
}

/// A failed window's words for a probe that did not answer as described.
pub fn probe_failure(probe: &str, answer: &str, at_us: u64, start_us: u64) -> String {
    format!(
        "{probe}: it answered {answer} {}",
        moment(Some(at_us), start_us)
    )
}

/// What a window watched, for the words of one that held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    /// Guest time (µs) the window opened and closed.
    pub start_us: u64,
    /// Guest time (µs) the window closed.
    pub end_us: u64,
    /// The units and the state each stayed in.
    pub units: Vec<(String, &'static str)>,
    /// PID 1's signals and journal entries about them during the window.
    pub pid1_words: usize,
    /// Rounds of probes made, and how many probes per round.
    pub rounds: usize,
    /// Probes per round.
    pub probes: usize,
}

/// A held window's words: how long it watched, what stayed, how many probes answered.
pub fn held(w: &Watched) -> String {
    let mut parts = vec![format!(
        "watched {:.1} s (guest {} to {})",
        w.end_us.saturating_sub(w.start_us) as f64 / 1e6,
        secs(w.start_us),
        secs(w.end_us)
    )];
    if !w.units.is_empty() {
        let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (u, s) in &w.units {
            by_state.entry(s).or_default().push(u);
        }
        let stayed: Vec<String> = by_state
            .iter()
            .map(|(s, us)| format!("{} stayed {s}", us.join(", ")))
            .collect();
        let between = match w.pid1_words {
            0 => "PID 1 said nothing of them in between".to_string(),
            n => format!(
                "{n} signal{} or entries of PID 1 about them in between, none a change of state",
                if n == 1 { "" } else { "s" }
            ),
        };
        parts.push(format!(
            "{} (read at both ends; {between})",
            stayed.join("; ")
        ));
    }
    if w.probes > 0 {
        parts.push(format!(
            "{} probe{} answered as expected in each of {} rounds ({} probes)",
            w.probes,
            if w.probes == 1 { "" } else { "s" },
            w.rounds,
            w.probes * w.rounds
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::systemd::signals::recorded as recorded_signals;

    fn wanted(pairs: &[(&str, UnitState)]) -> BTreeMap<UnitName, UnitState> {
        pairs
            .iter()
            .map(|(u, s)| (UnitName::parse(u).expect("a unit name"), *s))
            .collect()
    }

    fn change(unit: &str, interface: &str, props: &[(&str, &str)]) -> UnitChange {
        UnitChange {
            unit: unit.to_string(),
            interface: interface.to_string(),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn entry(us: u64, unit: &str, manager: bool, message: &str) -> Entry {
        Entry {
            mono_us: us,
            unit: Some(unit.to_string()),
            from_manager: manager,
            message: message.to_string(),
            job_result: None,
            job_type: None,
            message_id: None,
        }
    }

    const UNIT: &str = crate::guest::systemd::signals::UNIT_INTERFACE;
    const SERVICE: &str = "org.freedesktop.systemd1.Service";

    #[test]
    fn a_unit_that_exits_is_named_with_its_moment_and_result() {
        let w = wanted(&[
            ("traefik.service", UnitState::Active),
            ("deploy-proxy.service", UnitState::Active),
        ]);
        let changes = [
            // Another unit's change, and a watched unit's change that keeps it active.
            change("ssh.service", UNIT, &[("ActiveState", "failed")]),
            change(
                "deploy-proxy.service",
                UNIT,
                &[("ActiveState", "active"), ("SubState", "exited")],
            ),
            // The type's properties come first, then the state.
            change(
                "traefik.service",
                SERVICE,
                &[("Result", "signal"), ("ExecMainStatus", "9")],
            ),
            change(
                "traefik.service",
                UNIT,
                &[
                    ("ActiveState", "failed"),
                    ("SubState", "failed"),
                    ("StateChangeTimestampMonotonic", "42712000"),
                ],
            ),
        ];
        let d = departure_in_signals(&w, &changes).expect("traefik left");
        assert_eq!(
            d.words(),
            "traefik.service left active for failed (failed, Result=signal)"
        );
        assert_eq!(d.at_us, Some(42_712_000));
        // Without the state change, nothing left.
        assert_eq!(departure_in_signals(&w, &changes[..3]), None);

        let entries = [
            entry(30_000_000, "traefik.service", false, "serving"),
            entry(41_000_000, "traefik.service", false, "{\"level\":\"info\"}"),
            entry(
                42_714_000,
                "traefik.service",
                true,
                "traefik.service: Main process exited, code=killed, status=9/KILL",
            ),
            entry(
                42_715_000,
                "traefik.service",
                true,
                "traefik.service: Failed with result 'signal'.",
            ),
            entry(42_716_000, "drone.service", false, "another unit"),
        ];
        let pid1 = pid1_entry("traefik.service", 42_712_000, &entries);
        let long = entry(29_000_000, "traefik.service", false, &"x".repeat(500));
        assert_eq!(
            last_lines("traefik.service", [&long], 3),
            [format!("[29.000s] {}…", "x".repeat(LINE_CHARS))]
        );
        let lines = last_lines("traefik.service", &entries, 3);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "[41.000s] {\"level\":\"info\"}");
        let text = unit_failure(&d, 30_400_000, pid1, &lines);
        assert!(
            text.starts_with(
                "traefik.service left active for failed (failed, Result=signal) at guest 42.712s, 12.3 s into the window by PID 1's D-Bus signal; PID 1: \"traefik.service: Main process exited, code=killed, status=9/KILL\" at 42.714s; its last journal lines: [41.000s]"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("[42.715s] traefik.service: Failed with result 'signal'."),
            "{text}"
        );
    }

    #[test]
    fn a_failed_unit_that_must_stay_failed_leaves_by_restarting() {
        let w = wanted(&[("deploy-proxy.service", UnitState::Failed)]);
        let changes = [
            change("deploy-proxy.service", UNIT, &[("ActiveState", "failed")]),
            change(
                "deploy-proxy.service",
                UNIT,
                &[
                    ("ActiveState", "activating"),
                    ("InactiveExitTimestampMonotonic", "50000000"),
                ],
            ),
        ];
        let d = departure_in_signals(&w, &changes).expect("it restarted");
        assert_eq!(d.state, "activating");
        assert_eq!(d.at_us, Some(50_000_000));
    }

    #[test]
    fn recorded_signals_of_a_unit_that_fails_after_starting() {
        // Recorded busctl output: failing-probe.service goes active, then fails.
        let changes = recorded_signals();
        let w = wanted(&[
            ("failing-probe.service", UnitState::Active),
            ("reports.service", UnitState::Active),
        ]);
        let active = |unit: &str| {
            changes
                .iter()
                .rposition(|c| {
                    c.unit == unit
                        && c.properties.get("ActiveState").map(String::as_str) == Some("active")
                })
                .expect("recorded")
        };
        // A window opened once both were active sees failing-probe fail, with its Result.
        let opened = active("failing-probe.service").max(active("reports.service")) + 1;
        let d = departure_in_signals(&w, &changes[opened..]).expect("it failed");
        assert_eq!(d.unit, "failing-probe.service");
        assert_eq!(d.state, "failed");
        assert_eq!(d.result.as_deref(), Some("exit-code"));
        assert!(d.at_us.is_some_and(|us| us > 0), "{d:?}");
        // Only what came after the window opened counts: from the boot's start, the
        // first change named is a start, not the failure.
        let from_boot = departure_in_signals(&w, &changes).expect("a change");
        assert_ne!(from_boot.state, "failed");
    }

    #[test]
    fn a_read_names_the_first_unit_out_of_its_state() {
        let w = wanted(&[
            ("a.service", UnitState::Active),
            ("b.service", UnitState::Failed),
            ("c.service", UnitState::Active),
        ]);
        let shown = |id: &str, state: &str| {
            let text = format!(
                "Id={id}\nActiveState={state}\nSubState=dead\nResult=exit-code\nStateChangeTimestampMonotonic=7000000\n"
            );
            crate::guest::systemd::parse_show(&text)
                .expect("systemctl show output")
                .remove(0)
        };
        let states = [shown("a.service", "active"), shown("b.service", "failed")];
        let d = departure_in_states(&w, &states).expect("c is not there");
        assert_eq!(
            (d.unit.as_str(), d.state.as_str()),
            ("c.service", "not loaded")
        );
        let states = [
            shown("a.service", "inactive"),
            shown("b.service", "failed"),
            shown("c.service", "active"),
        ];
        let d = departure_in_states(&w, &states).expect("a stopped");
        assert_eq!(
            d.words(),
            "a.service left active for inactive (dead, Result=exit-code)"
        );
        assert_eq!(
            unit_failure(&d, 9_000_000, None, &[]),
            "a.service left active for inactive (dead, Result=exit-code) at guest 7.000s, 2.0 s before the window opened by a read of its state; no journal entry of PID 1 about it yet; no journal line of its own"
        );
        let states = [
            shown("a.service", "active"),
            shown("b.service", "failed"),
            shown("c.service", "active"),
        ];
        assert_eq!(departure_in_states(&w, &states), None);
    }

    #[test]
    fn a_window_that_held_says_how_long_it_watched() {
        let w = Watched {
            start_us: 30_400_000,
            end_us: 60_450_000,
            units: vec![
                ("deploy-proxy.service".into(), "failed"),
                ("traefik.service".into(), "active"),
                ("drone.service".into(), "active"),
            ],
            pid1_words: 0,
            rounds: 16,
            probes: 2,
        };
        assert_eq!(
            held(&w),
            "watched 30.1 s (guest 30.400s to 60.450s); traefik.service, drone.service stayed active; deploy-proxy.service stayed failed (read at both ends; PID 1 said nothing of them in between); 2 probes answered as expected in each of 16 rounds (32 probes)"
        );
        assert_eq!(
            probe_failure(
                "GET http://x/ping from the guest answers 200",
                "no answer: curl exit 7",
                41_000_000,
                30_000_000
            ),
            "GET http://x/ping from the guest answers 200: it answered no answer: curl exit 7 at guest 41.000s, 11.0 s into the window"
        );
    }
}
