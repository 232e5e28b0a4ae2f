//! `stable:` windows on a live guest: once the phase has converged (the window is an
//! invariant, so its turn comes after the phase's other expectations), the named units
//! stay in their states and the named probes keep answering for the whole window.
//!
//! Watched by events, not by a read at the end: PID 1's unit signals and journal entries
//! wake the window the moment they arrive (a signal that takes a unit out of its state
//! decides at once; a journal entry about a unit, on a guest without signals, makes the
//! window read that unit), and the probes run in rounds at a steady interval. The units
//! are also read at both ends of the window. The judgement is in `check::stable`.

use std::time::{Duration, Instant};

use crate::check::{self, Evaluation};
use crate::scenario::{HttpExpectation, StableExpectation, StableProbe};

use super::live::{Awaited, Live};

/// How long a failed window waits for PID 1's journal entry about a change its signal
/// announced (the entry comes 250 to 450 ms after the signal), to quote it and the lines
/// up to it.
const ENTRY_GRACE: Duration = Duration::from_secs(2);
/// How long before a change PID 1's entry about the unit may be, to be quoted as its cause.
const CAUSE_BEFORE: Duration = Duration::from_secs(1);
/// How long a failed probe waits for PID 1's signal that a watched unit fell over with
/// it (the signal comes well under a second after the kill, even under TCG).
const CAUSE_GRACE: Duration = Duration::from_millis(1500);

/// Watch `s` from now for its whole window, or until something leaves its state.
pub(super) async fn await_stable(
    live: &Live<'_>,
    s: &StableExpectation,
) -> anyhow::Result<Awaited> {
    let start = Instant::now();
    let end = start + s.window.0;
    let start_us = live.tightened().to_guest_us(start);
    let names: Vec<String> = s.units.keys().map(|u| u.as_str().to_string()).collect();
    let probes: Vec<HttpExpectation> = s.http.iter().map(StableProbe::as_http).collect();

    // What PID 1 says from here on is looked at: counted before the first read, so that
    // nothing between the read and the watch is missed.
    let entries_from = live.journal.len();
    let changes_from = live.journal.scan_changes(<[_]>::len);
    let mut entries_seen = entries_from;

    if !names.is_empty() {
        let states =
            super::units_read::named_states(live.guest, live.recorder.as_ref(), &names).await?;
        if let Some(d) = check::stable::departure_in_states(&s.units, &states) {
            return Ok(unit_failed(live, d, start_us).await);
        }
    }

    let mut rounds = 0usize;
    let mut next_round = start;
    let mut watcher = live.journal.clone();
    loop {
        // Counted before the looks below: an arrival during them wakes the next turn.
        let arrived = watcher.arrived();
        // PID 1's signals since the window opened: a state change decides at once.
        let signalled = live.journal.scan_changes(|all| {
            let fresh = all.get(changes_from..).unwrap_or_default();
            check::stable::departure_in_signals(&s.units, fresh.iter().map(|c| &c.change))
        });
        if let Some(d) = signalled {
            return Ok(unit_failed(live, d, start_us).await);
        }
        if let Some(failed) = reread_mentioned(live, s, &names, &mut entries_seen, start_us).await?
        {
            return Ok(failed);
        }

        let now = Instant::now();
        if now >= end {
            break;
        }
        if !probes.is_empty() && now >= next_round {
            if let Some(failed) = probe_round(live, s, &probes, start_us, changes_from).await {
                return Ok(failed);
            }
            rounds += 1;
            next_round += s.every.0;
            while next_round <= Instant::now() {
                // A round that took longer than the interval: the next one starts now.
                next_round += s.every.0;
            }
            continue;
        }
        (live.status)(&format!(
            "watching a stable window: {:.0} s of {}",
            now.saturating_duration_since(start).as_secs_f64(),
            s.window
        ));
        let wake = if probes.is_empty() {
            end
        } else {
            next_round.min(end)
        };
        tokio::select! {
            alive = watcher.arrived_after(arrived) => if !alive {
                // The stream ended (the guest went away): the lost-guest guard says why.
                tokio::time::sleep_until(wake.into()).await;
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }

    close(
        live,
        s,
        (&names, &probes),
        (start_us, entries_from, changes_from),
        rounds,
    )
    .await
}

/// PID 1's journal entries about a watched unit since `entries_seen`: those units read
/// again (a guest without signals decides here; with them, the read confirms). The
/// failed window, if one left its state.
async fn reread_mentioned(
    live: &Live<'_>,
    s: &StableExpectation,
    names: &[String],
    entries_seen: &mut usize,
    start_us: u64,
) -> anyhow::Result<Option<Awaited>> {
    // PID 1's journal entries about a watched unit: read those units again (a guest
    // without signals decides here; with them, the read confirms).
    let mentioned: Vec<String> = live.journal.scan(|all| {
        let fresh = all.get(*entries_seen..).unwrap_or_default();
        *entries_seen = all.len();
        let mut units: Vec<String> = Vec::new();
        for e in fresh.iter().filter(|e| e.entry.from_manager) {
            if let Some(u) = &e.entry.unit
                && names.contains(u)
                && !units.contains(u)
            {
                units.push(u.clone());
            }
        }
        units
    });
    if !mentioned.is_empty() {
        let states =
            super::units_read::named_states(live.guest, live.recorder.as_ref(), &mentioned).await?;
        let wanted = s
            .units
            .iter()
            .filter(|(u, _)| mentioned.iter().any(|m| m == u.as_str()))
            .map(|(u, st)| (u.clone(), *st))
            .collect();
        if let Some(d) = check::stable::departure_in_states(&wanted, &states) {
            return Ok(Some(unit_failed(live, d, start_us).await));
        }
    }
    Ok(None)
}

/// The window's end: one more round of probes and one more read of the units, then
/// what was watched, in words.
async fn close(
    live: &Live<'_>,
    s: &StableExpectation,
    (names, probes): (&[String], &[HttpExpectation]),
    (start_us, entries_from, changes_from): (u64, usize, usize),
    mut rounds: usize,
) -> anyhow::Result<Awaited> {
    if !probes.is_empty() {
        if let Some(failed) = probe_round(live, s, probes, start_us, changes_from).await {
            return Ok(failed);
        }
        rounds += 1;
    }
    if !names.is_empty() {
        let states =
            super::units_read::named_states(live.guest, live.recorder.as_ref(), names).await?;
        if let Some(d) = check::stable::departure_in_states(&s.units, &states) {
            return Ok(unit_failed(live, d, start_us).await);
        }
    }
    let end_us = live.tightened().to_guest_us(Instant::now());
    let pid1_words = live.journal.scan(|all| {
        all.get(entries_from..)
            .unwrap_or_default()
            .iter()
            .filter(|e| {
                e.entry.from_manager && e.entry.unit.as_ref().is_some_and(|u| names.contains(u))
            })
            .count()
    }) + live.journal.scan_changes(|all| {
        all.get(changes_from..)
            .unwrap_or_default()
            .iter()
            .filter(|c| names.contains(&c.change.unit))
            .count()
    });
    let watched = check::stable::Watched {
        start_us,
        end_us,
        units: s
            .units
            .iter()
            .map(|(u, st)| (u.as_str().to_string(), st.as_str()))
            .collect(),
        pid1_words,
        rounds,
        probes: probes.len(),
    };
    Ok(Awaited::now(Evaluation::held(check::stable::held(
        &watched,
    ))))
}

/// One round of the window's probes, side by side, each recorded with the pair's probes.
/// The failed window, if one did not answer as described: PID 1's word on a unit that
/// left its state comes first (it is the cause), else the probe's answer.
async fn probe_round(
    live: &Live<'_>,
    s: &StableExpectation,
    probes: &[HttpExpectation],
    start_us: u64,
    changes_from: usize,
) -> Option<Awaited> {
    // One attempt each: a deadline of now leaves no time for a retry.
    let answers = futures::future::join_all(
        probes
            .iter()
            .map(|h| super::http_wait::await_http(live, h, Instant::now())),
    )
    .await;
    let failed = probes.iter().zip(s.http.iter()).zip(answers).find_map(
        |((_, probe), answer)| match answer {
            Ok(a) if a.eval.held => None,
            Ok(a) => Some((probe, a.eval.seen, a.decided)),
            Err(e) => Some((probe, format!("no answer: {e:#}"), Instant::now())),
        },
    )?;
    let (probe, answer, at) = failed;
    let mut failed = match fell_over(live, s, changes_from).await {
        Some(d) => unit_failed(live, d, start_us).await,
        None => Awaited::now(Evaluation::failed(String::new())),
    };
    let clock = live.tightened();
    let at_us = clock.to_guest_us(at);
    let words = check::stable::probe_failure(&probe.describe(), &answer, at_us, start_us);
    failed.eval.seen = if failed.eval.seen.is_empty() {
        failed.changed = Some(at);
        words
    } else {
        format!("{}; and {words}", failed.eval.seen)
    };
    Some(failed)
}

/// After a probe failed: the watched unit that fell over with it, if one did. A kill
/// can break the probe's connection before PID 1's signal about it reaches the host (a
/// curl "Broken pipe" a few hundred ms ahead of the signal), so the signal is awaited
/// for [`CAUSE_GRACE`]; a guest without signals gets one read of the units instead.
async fn fell_over(
    live: &Live<'_>,
    s: &StableExpectation,
    changes_from: usize,
) -> Option<check::stable::Departure> {
    if s.units.is_empty() {
        return None;
    }
    let signalled = || {
        live.journal.scan_changes(|all| {
            let fresh = all.get(changes_from..).unwrap_or_default();
            check::stable::departure_in_signals(&s.units, fresh.iter().map(|c| &c.change))
        })
    };
    let until = Instant::now() + CAUSE_GRACE;
    let mut watcher = live.journal.clone();
    loop {
        let arrived = watcher.arrived();
        if let Some(d) = signalled() {
            return Some(d);
        }
        tokio::select! {
            alive = watcher.arrived_after(arrived) => if !alive { break },
            _ = tokio::time::sleep_until(until.into()) => break,
        }
    }
    let names: Vec<String> = s.units.keys().map(|u| u.as_str().to_string()).collect();
    let states = super::units_read::named_states(live.guest, live.recorder.as_ref(), &names)
        .await
        .ok()?;
    signalled().or_else(|| check::stable::departure_in_states(&s.units, &states))
}

/// The failed window for a unit that left its state: waits briefly for PID 1's journal
/// entry about the change (its signal comes first), then names the moment, the cause and
/// the unit's last journal lines.
async fn unit_failed(live: &Live<'_>, d: check::stable::Departure, start_us: u64) -> Awaited {
    // PID 1's words from a moment before the change: what it did to the unit (a kill
    // on client request, say) comes just before the state it left to.
    let from_us = d.at_us.map_or(start_us, |us| {
        us.saturating_sub(CAUSE_BEFORE.as_micros() as u64)
    });
    // Its journal entry about the change itself (at or after it) comes a few hundred
    // milliseconds after the signal: wait for it, so the lines quoted reach the change.
    let change_us = d.at_us.unwrap_or(start_us);
    let about = |e: &crate::guest::systemd::journal::Entry| {
        e.from_manager && e.unit.as_deref() == Some(d.unit.as_str()) && e.mono_us >= change_us
    };
    if !live.journal.scan(|all| all.iter().any(|s| about(&s.entry))) {
        let mut from = 0;
        live.journal
            .wait_for(&mut from, Instant::now() + ENTRY_GRACE, about)
            .await;
    }
    let (pid1, lines) = live.journal.scan(|all| {
        let entries = all.iter().map(|s| &s.entry);
        (
            check::stable::pid1_entry(&d.unit, from_us, entries.clone()).cloned(),
            check::stable::last_lines(&d.unit, entries, check::stable::LAST_LINES),
        )
    });
    let seen = check::stable::unit_failure(&d, start_us, pid1.as_ref(), &lines);
    let changed = d.at_us.map(|us| live.tightened().to_host(us));
    Awaited {
        changed,
        ..Awaited::now(Evaluation::failed(seen))
    }
}
