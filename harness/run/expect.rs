//! Awaiting and evaluating one expectation against a live guest.
//!
//! The decisions themselves are pure (`check::`); this module gathers what they need,
//! from the journal stream, `systemctl`, and probes of the harness's own, and records
//! when the guest says the awaited change happened and when the harness decided.

use std::time::{Duration, Instant};

use crate::check::{self, Evaluation};
use crate::guest::Guest;
use crate::guest::systemd;
use crate::scenario::{CommandExpectation, ExpectationKind, FileExpectation, JournalExpectation};

use super::http_wait::await_http;
pub use super::live::{Awaited, Live};
use super::probe::excerpt;
use super::watch::Entry;

/// How long an order check waits for its anchor's journal entry once PID 1 says the
/// anchor unit's start ended (the journal stream lags PID 1's signals).
const ANCHOR_LAG: Duration = Duration::from_secs(10);
/// Await `kind` until `deadline` (for kinds that wait) and evaluate it.
pub async fn await_expectation(
    live: &Live<'_>,
    kind: &ExpectationKind,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    Ok(match kind {
        ExpectationKind::Unit(u) => super::unit_wait::await_unit(live, u, deadline).await?,
        ExpectationKind::Order(o) => await_order(live, o).await?,
        ExpectationKind::Http(h) => await_http(live, h, deadline).await?,
        ExpectationKind::Journal(j) => await_journal(live, j, deadline).await,
        ExpectationKind::File(f) => Awaited::now(evaluate_file(live.guest, f).await?),
        ExpectationKind::Command(c) => Awaited::now(evaluate_command(live.guest, c).await?),
        ExpectationKind::NoFailedUnits(n) => {
            let units =
                super::units_read::failed_candidates(live.guest, live.recorder.as_ref()).await?;
            let except: Vec<String> = n.except.iter().map(|u| u.as_str().to_string()).collect();
            Awaited::now(check::evaluate_no_failed(&units, &except))
        }
        ExpectationKind::BootBudget(budget) => {
            await_boot_budget(live, budget.0.0, deadline).await?
        }
        ExpectationKind::WaitCycle(w) => await_wait_cycle(live, w, deadline).await,
        ExpectationKind::GateHonest(g) => {
            Awaited::now(super::honesty::await_gate_honest(live, g).await)
        }
        ExpectationKind::Path(p) => {
            // The harness's own check: `test -e` exits 0 when the path exists, 1 when not.
            let quoted = crate::guest::shell::quote(&p.path);
            let out = live.guest.exec(&format!("test -e {quoted}")).await?;
            let (held, seen) = p.judge(out.status, &out.stderr);
            Awaited::now(if held {
                Evaluation::held(seen)
            } else {
                Evaluation::failed(seen)
            })
        }
        ExpectationKind::Stable(s) => super::stable::await_stable(live, s).await?,
    })
}

/// `order:` from the named units' timestamps (and the anchor's moment in the journal,
/// which holds the whole boot).
async fn await_order(
    live: &Live<'_>,
    o: &crate::scenario::OrderExpectation,
) -> anyhow::Result<Awaited> {
    let mut names: Vec<String> = vec![o.after.as_str().to_string()];
    names.extend(o.units.iter().map(|u| u.as_str().to_string()));
    let times = super::units_read::named_states(live.guest, live.recorder.as_ref(), &names).await?;
    let after = o.after.as_str();
    let mut eval = match &o.anchor {
        None => check::evaluate_order(after, &names[1..], &times),
        Some(anchor) => {
            let (what, hit) = anchor_moment(live, anchor, after, &times[0]).await;
            match hit {
                Some(us) => check::ordering::evaluate_order_from(
                    format!("{what} at {:.3}s", us as f64 / 1e6),
                    us,
                    &names[1..],
                    &times,
                ),
                None => Evaluation::failed(format!(
                    "the anchor never happened in this boot: no journal entry where {what}"
                )),
            }
        }
    };
    if eval.held {
        eval = super::honesty::order_honesty(live, o, &times, eval).await;
    }
    // An anchor that never finished starting because it sits on a wait cycle:
    // say so, it is the reason.
    if !eval.held
        && let Some(c) = live.cycles.standing()
        && c.units.contains(o.after.as_str())
    {
        eval.seen = format!("{}; it is on a wait cycle: {}", eval.seen, c.message);
    }
    Ok(Awaited::now(eval))
}

/// The anchor's moment (guest µs) from the journal, which holds the whole boot, and the
/// anchor in words.
async fn anchor_moment(
    live: &Live<'_>,
    anchor: &crate::scenario::OrderAnchor,
    after: &str,
    after_now: &systemd::UnitState,
) -> (String, Option<u64>) {
    use crate::scenario::OrderAnchor;
    let what = match anchor {
        OrderAnchor::StartJob => format!("{after}'s start job ended"),
        OrderAnchor::Journal(p) => format!("{after} logged /{}/", p.0),
    };
    let wanted = |e: &Entry| match anchor {
        OrderAnchor::StartJob => e.ends_start_job_of(after),
        OrderAnchor::Journal(p) => e.unit.as_deref() == Some(after) && p.is_match(&e.message),
    };
    let find = || {
        live.journal.scan(|all| {
            all.iter()
                .find(|s| wanted(&s.entry))
                .map(|s| s.entry.mono_us)
        })
    };
    let mut hit = find();
    // PID 1's signal that decided `after` active arrives ahead of the journal's entry
    // about it: when its start has ended, give the stream a moment to deliver the anchor
    // before calling it missing.
    if hit.is_none()
        && matches!(
            after_now.active_state.as_str(),
            "active" | "reloading" | "deactivating" | "failed"
        )
    {
        let mut from = 0;
        live.journal
            .wait_for(&mut from, Instant::now() + ANCHOR_LAG, wanted)
            .await;
        hit = find();
    }
    (what, hit)
}

async fn await_journal(live: &Live<'_>, j: &JournalExpectation, deadline: Instant) -> Awaited {
    let wanted = |e: &crate::guest::systemd::journal::Entry| {
        j.unit
            .as_ref()
            .is_none_or(|u| e.unit.as_deref() == Some(u.as_str()))
            && j.pattern.is_match(&e.message)
    };
    let mut checked = 0usize;
    loop {
        let fresh = live.journal.since(checked);
        if let Some(hit) = fresh.iter().find(|s| wanted(&s.entry)) {
            let clock = live.tightened();
            let at = clock.to_host(hit.entry.mono_us);
            let seen = Evaluation::held(format!("{:?}", hit.entry.message));
            return Awaited {
                eval: check::late(seen, Some(at), deadline, clock.uncertainty),
                changed: Some(at),
                decided: Instant::now(),
            };
        }
        if Instant::now() >= deadline {
            return Awaited::now(Evaluation::failed(format!(
                "no line matched among {} journal entries",
                live.journal.len()
            )));
        }
        (live.status)(&format!(
            "waiting for a journal line matching /{}/",
            j.pattern
        ));
        // Woken by a matching entry (looked at again above) or by the deadline.
        let mut from = checked;
        live.journal.wait_for(&mut from, deadline, wanted).await;
        checked += fresh.len();
    }
}

async fn evaluate_file(guest: &Guest, f: &FileExpectation) -> anyhow::Result<Evaluation> {
    let out = guest
        .exec(&format!("cat -- {}", crate::guest::shell::quote(&f.path)))
        .await?;
    if out.status != 0 {
        return Ok(Evaluation::failed(format!(
            "cannot read {}: {}",
            f.path,
            out.stderr.trim()
        )));
    }
    let seen = format!("{:?}", excerpt(&out.stdout));
    Ok(if f.content.matches(&out.stdout) {
        Evaluation::held(seen)
    } else {
        Evaluation::failed(seen)
    })
}

async fn evaluate_command(guest: &Guest, c: &CommandExpectation) -> anyhow::Result<Evaluation> {
    let out = guest.exec(&c.run).await?;
    let ok = out.status == c.status
        && c.stdout.as_ref().is_none_or(|m| m.matches(&out.stdout))
        && c.stderr.as_ref().is_none_or(|m| m.matches(&out.stderr));
    let seen = format!(
        "exit {}, stdout {:?}, stderr {:?}",
        out.status,
        excerpt(&out.stdout),
        excerpt(&out.stderr)
    );
    Ok(if ok {
        Evaluation::held(seen)
    } else {
        Evaluation::failed(seen)
    })
}

async fn await_boot_budget(
    live: &Live<'_>,
    budget: Duration,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    // The boot may still be finishing: wait for it, but no longer than the budget allows.
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(budget);
    // PID 1's own "Startup finished" entry, the moment the stream brings it.
    let until = Instant::now() + wait;
    let finished = |e: &systemd::journal::Entry| e.finishes_startup();
    let mut from = 0;
    let found = loop {
        let hit = live.journal.scan(|all| {
            all.iter()
                .find(|s| finished(&s.entry))
                .map(|s| s.entry.clone())
        });
        if hit.is_some() || Instant::now() >= until {
            break hit;
        }
        (live.status)("waiting for the boot to finish");
        live.journal.wait_for(&mut from, until, finished).await;
    };
    // The journal's sentence ends with a full stop; systemd-analyze's does not.
    let (boot, line) = match found {
        Some(entry) => {
            let line = entry.message.trim_end_matches('.').to_string();
            (systemd::parse_boot_time(&line).ok().flatten(), line)
        }
        // Not in the stream (a journal that lost it): ask systemd-analyze.
        None => systemd::boot_time_after(live.guest, Duration::from_secs(1)).await?,
    };
    Ok(Awaited::now(match boot {
        Some(b) if Duration::from_micros(b.total_us) <= budget => Evaluation::held(line),
        Some(_) => Evaluation::failed(line),
        None => Evaluation::failed(format!(
            "the boot did not finish within {}",
            crate::scenario::format_duration(wait)
        )),
    }))
}

/// `wait_cycle:` over the phase so far. An expected cycle may still be forming when the
/// phase's other expectations are done: wait for it until `deadline`.
async fn await_wait_cycle(
    live: &Live<'_>,
    w: &crate::scenario::WaitCycleCheck,
    deadline: Instant,
) -> Awaited {
    let mut cycles = live.cycles.clone();
    while w.expect == crate::scenario::WaitCycleExpectation::Expected
        && cycles.confirmed().is_none()
        && Instant::now() < deadline
    {
        (live.status)("waiting for a wait cycle to persist");
        tokio::select! {
            alive = cycles.next_read() => if !alive { break },
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    // The invariant covers the phase to its end: one more read of the queue now.
    cycles
        .read_now(2 * super::cycles::READ_EVERY + Duration::from_secs(10))
        .await;
    // Waits nobody declared: from the refused connections and who listens now.
    if w.infer {
        live.cycles.infer_now(live.guest).await;
    } else {
        live.cycles
            .no_inference("switched off by the scenario (infer: false)");
    }
    let watch = live
        .cycles
        .phase_watch(live.phase_started, live.qemu_started);
    let eval = check::live::evaluate_wait_cycle(w.expect, w.persist.0, &watch);
    let confirmed = live.cycles.confirmed().filter(|_| watch.cycle.is_some());
    Awaited {
        eval,
        changed: confirmed.as_ref().map(|c| c.formed),
        decided: confirmed.map_or_else(Instant::now, |c| c.confirmed),
    }
}
