//! Unit-state checks that need no process: a unit's state against what was expected,
//! and "no failed units".

use super::outcome::Evaluation;
use crate::guest::systemd::journal::Entry;
use crate::guest::systemd::signals::UnitChange;
use crate::scenario::UnitExpectation;

/// Whether PID 1's journal can decide `expect` alone: a plain "active" wait (result
/// success or none, no property to read).
pub fn decidable_by_journal(expect: &UnitExpectation) -> bool {
    expect.state == crate::scenario::UnitState::Active
        && expect.result.is_none_or(|r| r.as_str() == "success")
        && expect.properties.is_empty()
}

/// What PID 1's own journal entries say of a unit expectation, without asking systemctl:
/// the guest time (µs) at which the unit became active, when the latest manager entry
/// about it among `entries` ended its start job with `done` at or after `floor_us`, and
/// that means active for the unit (`start_done_means_active`, from its type). `None`
/// means the journal alone does not decide it, and systemctl is asked: another state or
/// result is awaited, a property must be read, a later entry (a stop, a failure)
/// followed the start, or the start came before the floor (before the phase's actions,
/// which may have changed the unit in ways the stream has not delivered yet).
///
/// The entries arrive within milliseconds of being written, while a `systemctl show`
/// round trip costs seconds on a busy TCG guest; this is how a unit wait decides at once.
pub fn active_in_journal<'a>(
    expect: &UnitExpectation,
    start_done_means_active: bool,
    floor_us: u64,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Option<u64> {
    if !decidable_by_journal(expect) || !start_done_means_active {
        return None;
    }
    let unit = expect.unit.as_str();
    let latest = entries
        .into_iter()
        .filter(|e| e.from_manager && e.unit.as_deref() == Some(unit))
        .last()?;
    (latest.ends_start_job_of(unit)
        && latest.job_result.as_deref() == Some("done")
        && latest.mono_us >= floor_us)
        .then_some(latest.mono_us)
}

/// The `...TimestampMonotonic` property PID 1 sets when a unit enters `state`.
fn entered_at(state: crate::scenario::UnitState) -> &'static str {
    use crate::scenario::UnitState;
    match state {
        UnitState::Active => "ActiveEnterTimestampMonotonic",
        UnitState::Failed | UnitState::Inactive => "InactiveEnterTimestampMonotonic",
        UnitState::Activating => "InactiveExitTimestampMonotonic",
    }
}

/// What PID 1's unit signals (in arrival order) say of `expect`: the guest time (µs) the
/// unit entered the awaited state, and what was seen, when they show it there with the
/// result and every property the expectation names. `None` leaves the decision to the
/// journal or systemctl: signals only ever decide that an expectation held, never that
/// it failed, because a property PID 1 does not send with its changes is simply absent.
///
/// Taken only when the unit's latest signal is its `ActiveState` change: PID 1 sends the
/// type's properties (`Result`, `ExecMainStatus`) just before it, so a later type change
/// alone means the next state is on its way. The state must have been entered at or
/// after `floor_us`, as for the journal.
pub fn held_by_signals<'a>(
    expect: &UnitExpectation,
    floor_us: u64,
    changes: impl IntoIterator<Item = &'a UnitChange>,
) -> Option<(u64, Evaluation)> {
    let unit = expect.unit.as_str();
    let mut known = std::collections::BTreeMap::<&str, &str>::new();
    let mut latest_is_state = false;
    for c in changes.into_iter().filter(|c| c.unit == unit) {
        latest_is_state = c.is_state();
        known.extend(c.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    let state = expect.state.as_str();
    if !latest_is_state || known.get("ActiveState") != Some(&state) {
        return None;
    }
    let at_us: u64 = known.get(entered_at(expect.state))?.parse().ok()?;
    if at_us == 0 || at_us < floor_us {
        return None;
    }
    let result = known.get("Result").copied();
    if expect.result.is_some_and(|r| Some(r.as_str()) != result) {
        return None;
    }
    let mut seen = vec![format!(
        "{unit} is {state} (Result={})",
        result.unwrap_or("not sent")
    )];
    for (name, want) in &expect.properties {
        if known.get(name.as_str()) != Some(&want.as_str()) {
            return None;
        }
        seen.push(format!("{name}={want}"));
    }
    Some((
        at_us,
        Evaluation::held(format!(
            "{} by PID 1's D-Bus signal at {:.3}s",
            seen.join(", "),
            at_us as f64 / 1e6
        )),
    ))
}

/// Whether a unit's observed `ActiveState` (and `Result`) is what the expectation wants.
pub fn evaluate_unit(expect: &UnitExpectation, active_state: &str, result: &str) -> Evaluation {
    let seen = format!("{} is {active_state} (Result={result})", expect.unit);
    let state_ok = active_state == expect.state.as_str();
    let result_ok = expect.result.is_none_or(|r| r.as_str() == result);
    Evaluation {
        held: state_ok && result_ok,
        seen,
        not_checked: false,
    }
}

/// Whether `unit` shows every property the expectation names, with the value it names.
/// `shown` is what `systemctl show -p ...` printed; a property it did not print fails.
pub fn evaluate_properties(
    expect: &UnitExpectation,
    shown: &std::collections::BTreeMap<String, String>,
) -> Evaluation {
    let mut wrong = Vec::new();
    let mut seen = Vec::new();
    for (name, want) in &expect.properties {
        match shown.get(name) {
            Some(v) if v == want => seen.push(format!("{name}={v}")),
            Some(v) => wrong.push(format!("{name}={v} (expected {want})")),
            None => wrong.push(format!("{name} not shown by systemd (expected {want})")),
        }
    }
    if wrong.is_empty() {
        Evaluation::held(seen.join(", "))
    } else {
        Evaluation::failed(wrong.join(", "))
    }
}

/// Whether no unit is `failed` except the allowed ones. `units` is (unit, ActiveState).
pub fn evaluate_no_failed(units: &[(String, String)], except: &[String]) -> Evaluation {
    let failed: Vec<&str> = units
        .iter()
        .filter(|(u, s)| s == "failed" && !except.contains(u))
        .map(|(u, _)| u.as_str())
        .collect();
    if failed.is_empty() {
        let allowed: Vec<&str> = units
            .iter()
            .filter(|(u, s)| s == "failed" && except.contains(u))
            .map(|(u, _)| u.as_str())
            .collect();
        if allowed.is_empty() {
            Evaluation::held(format!("no failed unit among {}", units.len()))
        } else {
            Evaluation::held(format!("failed only as allowed: {}", allowed.join(", ")))
        }
    } else {
        Evaluation::failed(format!("failed: {}", failed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded journal of the reference run's clean cold boot, as the follower
    /// parses it.
    fn recorded_boot() -> Vec<Entry> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference-run/after__clean-cold-boot/journal-boot-1.json"
        ))
        .expect("the reference run is in the repository");
        text.lines().filter_map(Entry::parse).collect()
    }

    fn expectation(yaml: &str) -> UnitExpectation {
        serde_saphyr::from_str(yaml).expect("a unit expectation")
    }

    #[test]
    fn the_journal_decides_a_start_that_ended_done() {
        let boot = recorded_boot();
        let active =
            expectation("{unit: deploy-proxy.service, state: active, within: 5m, result: success}");
        let at = active_in_journal(&active, true, 0, &boot).expect("decided from the journal");
        // Recorded: PID 1's "Started" entry for deploy-proxy, ~19.3 s into the boot.
        let started = boot
            .iter()
            .find(|e| e.ends_start_job_of("deploy-proxy.service"))
            .expect("recorded");
        assert_eq!(at, started.mono_us);
        // deploy-proxy is a oneshot that remains after exit: PID 1 says "Finished".
        assert!(
            started.message.starts_with("Finished"),
            "{}",
            started.message
        );
        // The entry is the state change itself: within 50 ms of the ActiveEnterTimestamp
        // that systemctl recorded for the unit on the same boot.
        let shown = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference-run/after__clean-cold-boot/units-cold-boot.txt"
        ))
        .expect("recorded");
        let proxy = crate::guest::systemd::parse_show(&shown)
            .expect("systemctl show output")
            .into_iter()
            .find(|u| u.id == "deploy-proxy.service")
            .expect("deploy-proxy recorded");
        let entered = proxy.active_enter_us.expect("it became active");
        assert!(at.abs_diff(entered) < 50_000, "{at} {entered}");
        // Before that entry arrived, the journal did not decide it.
        let before: Vec<&Entry> = boot.iter().filter(|e| e.mono_us < at).collect();
        assert_eq!(active_in_journal(&active, true, 0, before), None);
        // A floor just past the start leaves it to systemctl.
        assert_eq!(active_in_journal(&active, true, at + 1, &boot), None);
        // A oneshot without RemainAfterExit is not active once started: systemctl decides.
        assert_eq!(active_in_journal(&active, false, 0, &boot), None);
        // Other states, results and properties are read from systemctl.
        for other in [
            "{unit: deploy-proxy.service, state: failed, within: 5m}",
            "{unit: deploy-proxy.service, state: active, within: 5m, result: exit-code}",
            "{unit: deploy-proxy.service, state: active, within: 5m, properties: {Type: oneshot}}",
        ] {
            assert_eq!(
                active_in_journal(&expectation(other), true, 0, &boot),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn a_later_manager_entry_leaves_the_decision_to_systemctl() {
        let mut boot = recorded_boot();
        let active = expectation("{unit: deploy-proxy.service, state: active, within: 5m}");
        let last = boot.last().expect("entries").mono_us;
        boot.push(Entry {
            mono_us: last + 1,
            unit: Some("deploy-proxy.service".into()),
            from_manager: true,
            message: "Stopping deploy-proxy.service...".into(),
            job_result: None,
            job_type: None,
            message_id: None,
        });
        assert_eq!(active_in_journal(&active, true, 0, &boot), None);
        // The service's own output after its start is not PID 1's word: it still decides.
        boot.pop();
        boot.push(Entry {
            mono_us: last + 1,
            unit: Some("deploy-proxy.service".into()),
            from_manager: false,
            message: "decision=commit".into(),
            job_result: None,
            job_type: None,
            message_id: None,
        });
        assert!(active_in_journal(&active, true, 0, &boot).is_some());
        // A start before the floor (the phase's actions) is not taken on the journal's word.
        assert_eq!(active_in_journal(&active, true, last + 2, &boot), None);
    }

    use crate::guest::systemd::signals::recorded as recorded_signals;

    #[test]
    fn signals_decide_a_start_and_a_failure_with_its_status() {
        let changes = recorded_signals();
        let active = expectation("{unit: reports.service, state: active, within: 30s}");
        let (at, eval) = held_by_signals(&active, 0, &changes).expect("decided");
        let last_start = changes
            .iter()
            .filter(|c| c.unit == "reports.service")
            .filter_map(|c| c.number("ActiveEnterTimestampMonotonic"))
            .max()
            .expect("recorded");
        assert_eq!(at, last_start);
        assert!(eval.held && eval.seen.contains("by PID 1's D-Bus signal"));
        // The restart's start is after the floor only if the floor is before it.
        assert_eq!(held_by_signals(&active, at + 1, &changes), None);

        let failed = expectation(
            "{unit: failing-probe.service, state: failed, within: 30s, result: exit-code, properties: {ExecMainStatus: '2'}}",
        );
        let (_, eval) = held_by_signals(&failed, 0, &changes).expect("decided");
        assert!(
            eval.seen.starts_with(
                "failing-probe.service is failed (Result=exit-code), ExecMainStatus=2"
            ),
            "{}",
            eval.seen
        );
        // Anything not as named, or not sent with the changes, is left to systemctl.
        for other in [
            "{unit: failing-probe.service, state: failed, within: 30s, properties: {ExecMainStatus: '1'}}",
            "{unit: failing-probe.service, state: failed, within: 30s, result: timeout}",
            "{unit: failing-probe.service, state: failed, within: 30s, properties: {Type: simple}}",
            "{unit: failing-probe.service, state: active, within: 30s}",
            "{unit: never-seen.service, state: active, within: 30s}",
        ] {
            assert_eq!(
                held_by_signals(&expectation(other), 0, &changes),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn signals_wait_for_the_state_that_follows_a_type_change() {
        let changes = recorded_signals();
        let failed_at = changes
            .iter()
            .position(|c| {
                c.unit == "failing-probe.service"
                    && c.properties.get("ActiveState").map(String::as_str) == Some("failed")
            })
            .expect("recorded");
        // Up to the Service change (Result=exit-code) before the state: still "active"
        // as far as the signals go, and not yet failed.
        let before = &changes[..failed_at];
        let failed = expectation("{unit: failing-probe.service, state: failed, within: 30s}");
        assert_eq!(held_by_signals(&failed, 0, before), None);
        let active = expectation("{unit: failing-probe.service, state: active, within: 30s}");
        assert_eq!(held_by_signals(&active, 0, before), None);
        assert!(held_by_signals(&failed, 0, &changes[..=failed_at]).is_some());
    }

    use crate::guest::systemd::parse_properties;

    /// deploy-proxy's block of a `systemctl show` recorded after the model's rollback.
    fn recorded_proxy() -> std::collections::BTreeMap<String, String> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference-run/after__broken-traefik/units-broken-latest.txt"
        ))
        .expect("the reference run is in the repository");
        let block = text
            .split("\n\n")
            .find(|b| b.lines().any(|l| l == "Id=deploy-proxy.service"))
            .expect("deploy-proxy is recorded");
        parse_properties(block)
    }

    fn expect(props: &[(&str, &str)]) -> UnitExpectation {
        let yaml = format!(
            "name: t\nmilestone: M2\nsummary: s\nphases:\n  - name: p\n    expect:\n      - unit: deploy-proxy.service\n        state: failed\n        within: 1s\n        properties: {{{}}}\n",
            props
                .iter()
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let s =
            crate::scenario::parse_scenario(std::path::Path::new("t.yaml"), &yaml).expect("parses");
        let kind = &s.phases[0].expect[0].kind;
        kind.awaited().unwrap_or_else(|| panic!("{kind:?}")).clone()
    }

    #[test]
    fn the_rollback_contract_reads_from_a_recorded_show() {
        let shown = recorded_proxy();
        let held = evaluate_properties(
            &expect(&[("ExecMainStatus", "2"), ("Type", "oneshot")]),
            &shown,
        );
        assert!(held.held, "{}", held.seen);
        assert_eq!(held.seen, "ExecMainStatus=2, Type=oneshot");
        let wrong = evaluate_properties(&expect(&[("ExecMainStatus", "1")]), &shown);
        assert!(!wrong.held);
        assert_eq!(wrong.seen, "ExecMainStatus=2 (expected 1)");
        let absent = evaluate_properties(&expect(&[("NoSuchThing", "x")]), &shown);
        assert!(!absent.held && absent.seen.contains("not shown"));
    }

    #[test]
    fn property_names_are_checked_at_load() {
        let yaml = "name: t\nmilestone: M2\nsummary: s\nphases:\n  - name: p\n    expect:\n      - unit: a.service\n        state: active\n        within: 1s\n        properties: {exec-main-status: \"2\"}\n";
        let err = crate::scenario::parse_scenario(std::path::Path::new("t.yaml"), yaml)
            .expect_err("a bad property name");
        let msg: String = err.iter().map(|d| d.to_string()).collect();
        assert!(
            msg.contains("t.yaml:7:9:") && msg.contains("not a systemd property name"),
            "{msg}"
        );
    }

    /// The recorder's unit events of a real boot
    /// (`tests/fixtures/run/old-gate-timeout45.recorder.jsonl`: the model with the old
    /// gate, whose deploy-proxy never finishes starting), as the waits see them.
    fn recorder_changes() -> Vec<crate::guest::systemd::signals::UnitChange> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/run/old-gate-timeout45.recorder.jsonl");
        std::fs::read_to_string(path)
            .expect("the recorded stream")
            .lines()
            .filter_map(|l| serde_json::from_str::<crate::guest::recorder::Event>(l).ok())
            .filter_map(|e| e.unit_change())
            .collect()
    }

    #[test]
    fn the_recorders_unit_events_decide_waits_as_pid1s_signals_do() {
        let changes = recorder_changes();
        // traefik became active at 34.598361 s by PID 1's own timestamp.
        let traefik = expectation("{unit: traefik.service, state: active, within: 60s}");
        let (at, eval) = held_by_signals(&traefik, 0, &changes).expect("decided");
        assert_eq!(at, 34_598_361);
        assert!(
            eval.seen.contains("by PID 1's D-Bus signal"),
            "{}",
            eval.seen
        );
        // ... and not from a floor after it (a later phase's wait).
        assert_eq!(held_by_signals(&traefik, at + 1, &changes), None);
        // deploy-proxy, deadlocked, never became active.
        let proxy = expectation("{unit: deploy-proxy.service, state: active, within: 60s}");
        assert_eq!(held_by_signals(&proxy, 0, &changes), None);
        // A Service-interface change (its Result, alone) carries no state.
        let result = changes
            .iter()
            .find(|c| c.properties.contains_key("Result"))
            .expect("a Result change");
        assert!(!result.is_state());
    }
}
