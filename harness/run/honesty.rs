//! Gate honesty on a live guest: the moments a gated start's honesty is judged on (its
//! end, its logged decision, its consumers' starts), and the watcher's probes of the
//! gate's URL to judge them against (`check::honesty` decides).

use std::time::{Duration, Instant};

use crate::check::Evaluation;
use crate::guest::systemd;

use super::live::Live;

/// How long an order check waits for the watcher's probe of a gate right after the gated
/// start ended.
const GATE_PROBE_WAIT: Duration = Duration::from_secs(10);

/// An order whose anchor unit has a declared health gate, judged against the harness's
/// own probes of the gate's URL (see `check::honesty`): the gated start's end, the gate's
/// logged decision (a `journal:` anchor) and each consumer's start came no earlier than
/// the URL served. A moment the probes cannot place is said, never passed silently.
pub(super) async fn order_honesty(
    live: &Live<'_>,
    o: &crate::scenario::OrderExpectation,
    times: &[systemd::UnitState],
    eval: Evaluation,
) -> Evaluation {
    use crate::check::honesty::{Honesty, judge};
    let after = o.after.as_str();
    let Some((gate, mut probes)) = live.cycles.gate_of(after) else {
        return eval;
    };
    let mut moments: Vec<(String, u64)> = Vec::new();
    let floor = phase_floor(live);
    let ended = start_end(live, after, floor).await.or_else(|| {
        let t = times.first()?;
        let result = if t.active_state == "active" {
            "done"
        } else {
            "failed"
        };
        Some((t.finished_starting_us()?, result.to_string()))
    });
    if let Some((_, result)) = ended.as_ref().filter(|(_, r)| r != "done") {
        // A start that failed claimed no health: there is nothing for the probes to
        // contradict, and consumers after it are ordered after a gate that said no.
        return Evaluation {
            seen: format!(
                "{}; gate honesty not judged: {after}'s start ended `{result}`, so its gate claimed nothing healthy",
                eval.seen
            ),
            ..eval
        };
    }
    if let Some((us, _)) = ended {
        moments.push((format!("{after}'s start ended"), us));
        probes = phase_probes_after(live, after, us, floor).await;
    }
    if let Some(crate::scenario::OrderAnchor::Journal(p)) = &o.anchor
        && let Some(us) = live.journal.scan(|all| {
            all.iter()
                .find(|s| s.entry.unit.as_deref() == Some(after) && p.is_match(&s.entry.message))
                .map(|s| s.entry.mono_us)
        })
    {
        moments.push((format!("{after} logged /{}/", p.0), us));
    }
    for t in times.iter().skip(1) {
        if let Some(us) = t.inactive_exit_us.filter(|us| *us > 0) {
            moments.push((format!("{} started", t.id), us));
        }
    }
    let judged: Vec<Honesty> = moments
        .iter()
        .map(|(what, us)| judge(what, *us, &gate.url, &probes))
        .collect();
    let first_bad = judged.iter().find(|h| !h.holds());
    let seen = match (first_bad, judged.first()) {
        (Some(Honesty::Unhealthy(w)), _) => {
            return Evaluation::failed(format!("{}; but the gate was not serving: {w}", eval.seen));
        }
        (Some(h), _) => format!("{}; gate honesty not checked: {}", eval.seen, h.words()),
        (None, Some(first)) => format!(
            "{}; gate honest by the harness's own probes ({} of its URL): {}, and every moment after it likewise",
            eval.seen,
            probes.len(),
            first.words()
        ),
        (None, None) => format!(
            "{}; gate honesty not checked: no moment to judge",
            eval.seen
        ),
    };
    Evaluation { seen, ..eval }
}

/// `gate_honest:`: the unit's latest start in this phase (from its floor on) against the
/// harness's probes of its declared gate, once the probe right after that start's end
/// is in.
pub(super) async fn await_gate_honest(
    live: &Live<'_>,
    g: &crate::scenario::GateHonestExpectation,
) -> Evaluation {
    let unit = g.unit.as_str();
    let Some((gate, _)) = live.cycles.gate_of(unit) else {
        return Evaluation::not_checked(format!("the target declares no gate for {unit}"));
    };
    let floor = phase_floor(live);
    let Some((end, result)) = start_end(live, unit, floor).await else {
        return Evaluation::failed(format!("{unit}'s start job never ended in this phase"));
    };
    if result != "done" {
        return Evaluation::held(format!(
            "{unit}'s start ended `{result}` at {:.3}s: its gate claimed nothing healthy, so no probe can contradict it",
            end as f64 / 1e6
        ));
    }
    let probes = phase_probes_after(live, unit, end, floor).await;
    let h = crate::check::honesty::judge(&format!("{unit}'s start ended"), end, &gate.url, &probes);
    match h {
        crate::check::honesty::Honesty::SeenHealthy(w)
        | crate::check::honesty::Honesty::Bracketed(w) => Evaluation::held(w),
        crate::check::honesty::Honesty::Unhealthy(w) => Evaluation::failed(w),
        crate::check::honesty::Honesty::NotSeen(w) => Evaluation::not_checked(w),
    }
}

/// Guest time (µs) of the phase's start: a restart action ends its start before the
/// phase's checks begin, and a probe from before it says nothing of the proxy after.
fn phase_floor(live: &Live<'_>) -> u64 {
    live.tightened().to_guest_us(live.phase_started)
}

/// When `unit`'s latest start job at or after `floor` ended (guest µs), and how
/// (`done`, `failed`, `timeout`...), from PID 1's journal entry. PID 1's signal that
/// decided the unit's wait comes ahead of that entry: a missing one is waited for, up to
/// [`GATE_PROBE_WAIT`].
async fn start_end(live: &Live<'_>, unit: &str, floor: u64) -> Option<(u64, String)> {
    let ends =
        |e: &crate::guest::systemd::journal::Entry| e.mono_us >= floor && e.ends_start_job_of(unit);
    let find = || {
        live.journal.scan(|all| {
            all.iter().rev().find(|s| ends(&s.entry)).map(|s| {
                let result = s.entry.job_result.clone().unwrap_or_default();
                (s.entry.mono_us, result)
            })
        })
    };
    if find().is_none() {
        let mut from = 0;
        live.journal
            .wait_for(&mut from, Instant::now() + GATE_PROBE_WAIT, ends)
            .await;
    }
    find()
}

/// This phase's probes of `unit`'s gate (sent at or after `floor`), once the one the
/// watcher makes right after the start that ended at `us` is in: it is the probe that
/// shows whether the gate let go too early.
async fn phase_probes_after(
    live: &Live<'_>,
    unit: &str,
    us: u64,
    floor: u64,
) -> Vec<crate::check::honesty::GateProbe> {
    let mut probes = gate_probes_after(live, unit, us).await;
    probes.retain(|p| p.sent_us >= floor);
    probes
}

/// The watcher's probes of `unit`'s gate, once one sent at or after `us` is among them
/// (the probe it makes right after the gated start ends), or after [`GATE_PROBE_WAIT`].
async fn gate_probes_after(
    live: &Live<'_>,
    unit: &str,
    us: u64,
) -> Vec<crate::check::honesty::GateProbe> {
    let probes = || {
        live.cycles
            .gate_of(unit)
            .map(|(_, p)| p)
            .unwrap_or_default()
    };
    let until = Instant::now() + GATE_PROBE_WAIT;
    let mut cycles = live.cycles.clone();
    let mut got = probes();
    while !got.iter().any(|p| p.sent_us >= us) && Instant::now() < until {
        tokio::select! {
            alive = cycles.next_read() => if !alive { break },
            _ = tokio::time::sleep_until(until.into()) => break,
        }
        got = probes();
    }
    got
}
