//! A unit wait: PID 1's own word first (its D-Bus signals, then its journal), racing a
//! `systemctl show` read; a unit on a standing wait cycle, or failed with no job to start
//! it again, is decided at once instead of at its deadline.

use std::time::{Duration, Instant};

use crate::check::{self, Evaluation};
use crate::guest::systemd;
use crate::scenario::UnitExpectation;

use super::live::{Awaited, Live};

/// A unit whose state changes without a manager journal entry is re-read at least this
/// often: a safety net, not the way waits end.
const UNIT_RECHECK: Duration = Duration::from_secs(10);

/// PID 1's decision of `u`, if it has one now, and when it was decided (by the phase's
/// watch, ahead of its turn, or now).
fn pid1_decided(
    live: &Live<'_>,
    u: &UnitExpectation,
    by_journal: bool,
    floor: u64,
) -> Option<(u64, Instant, Evaluation)> {
    let (now, eval) = super::early::pid1_word(&live.journal, u, by_journal, floor)?;
    // The phase's watch decided it earlier only if that change is still PID 1's latest
    // word on the unit: a unit that started and then stopped or failed before this
    // wait's turn is read again, as the file order of the phase says.
    let decided = live
        .early
        .get(u.unit.as_str())
        .filter(|d| d.at_us == now)
        .map_or_else(Instant::now, |d| d.decided);
    Some((now, decided, eval))
}

/// Wait until PID 1's word decides `u` (forever when it cannot).
async fn pid1_decides(
    live: &Live<'_>,
    u: &UnitExpectation,
    by_journal: bool,
    floor: u64,
) -> (u64, Instant, Evaluation) {
    let mut at = live.journal.cursor();
    loop {
        if let Some(hit) = pid1_decided(live, u, by_journal, floor) {
            return hit;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        live.journal.wait_about(u.unit.as_str(), &mut at, far).await;
    }
}

pub(super) async fn await_unit(
    live: &Live<'_>,
    u: &UnitExpectation,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    let unit = u.unit.as_str();
    // Read when the boot's watch began; a unit not read then is left to systemctl.
    let means_active = live
        .start_done_means_active
        .get(unit)
        .copied()
        .unwrap_or(false);
    let wait = UnitWait {
        live,
        u,
        unit,
        names: u.properties.keys().map(String::as_str).collect(),
        by_journal: means_active && check::units::decidable_by_journal(u),
        floor: live.journal_floor_us,
        deadline,
    };
    loop {
        // What arrives during the read below must still wake the wait after it.
        let mut at = live.journal.cursor();
        let (now, shown) = match wait.read().await? {
            Ok(read) => read,
            Err(word) => return Ok(wait.by_pid1(word)),
        };
        let eval = check::units::evaluate_unit(u, &now.active_state, now.result_str());
        if eval.held {
            return Ok(wait.held(&now, &shown, eval));
        }
        if let Some(done) = wait.cannot_get_there(&now).await? {
            return Ok(done);
        }
        (live.status)(&format!(
            "waiting for {unit} {} ({} {})",
            u.state.as_str(),
            now.active_state,
            now.sub_state
        ));
        wait.sleep(&mut at).await;
    }
}

/// The properties read with a unit's state, by name.
type Properties = std::collections::BTreeMap<String, String>;

/// PID 1's word on a unit: the guest time (µs) of the change, when it was decided, and
/// what was seen.
type Word = (u64, Instant, Evaluation);

/// One unit wait in progress.
struct UnitWait<'a> {
    live: &'a Live<'a>,
    u: &'a UnitExpectation,
    unit: &'a str,
    /// The properties the scenario names, read with the state.
    names: Vec<&'a str>,
    /// Whether PID 1's journal alone decides it (see [`super::early::pid1_word`]).
    by_journal: bool,
    /// Guest time (µs) before which PID 1's word does not decide it.
    floor: u64,
    deadline: Instant,
}

impl UnitWait<'_> {
    /// PID 1's own word, the moment the stream brings it (no round trip), else a
    /// `systemctl show` read raced against that word. The phase's watch may have decided
    /// it already, while an earlier expectation was awaited.
    async fn read(&self) -> anyhow::Result<Result<(systemd::UnitState, Properties), Word>> {
        let (live, u) = (self.live, self.u);
        if let Some(hit) = pid1_decided(live, u, self.by_journal, self.floor) {
            return Ok(Err(hit));
        }
        let read = systemd::unit_state_with(live.guest, self.unit, &self.names);
        tokio::select! {
            r = read => r.map(Ok),
            hit = pid1_decides(live, u, self.by_journal, self.floor) => Ok(Err(hit)),
        }
    }

    /// Decided by PID 1's word; late by the guest's own timestamp fails.
    fn by_pid1(&self, (us, decided, eval): Word) -> Awaited {
        let clock = self.live.tightened();
        let changed = clock.to_host(us);
        let eval = check::late(eval, Some(changed), self.deadline, clock.uncertainty);
        Awaited {
            eval,
            changed: Some(changed),
            decided,
        }
    }

    /// The state is there; the properties the scenario names must be too, read in the
    /// same call (a property that is not as named will not become so by waiting:
    /// ExecMainStatus is set when the state is).
    fn held(&self, now: &systemd::UnitState, shown: &Properties, eval: Evaluation) -> Awaited {
        let clock = self.live.tightened();
        let changed = now.state_change_us.map(|us| clock.to_host(us));
        let eval = if self.u.properties.is_empty() {
            eval
        } else {
            let props = check::units::evaluate_properties(self.u, shown);
            Evaluation {
                held: props.held,
                seen: format!("{}, {}", eval.seen, props.seen),
                not_checked: false,
            }
        };
        // Seen late is not the same as reached late: judge by the guest's timestamp.
        Awaited {
            eval: check::late(eval, changed, self.deadline, clock.uncertainty),
            changed,
            decided: Instant::now(),
        }
    }

    /// A failure decided before the deadline when the unit cannot get there: it is on a
    /// standing wait cycle (or waits on one), or it failed and no job will start it
    /// again; and the deadline itself.
    async fn cannot_get_there(&self, now: &systemd::UnitState) -> anyhow::Result<Option<Awaited>> {
        let (u, unit) = (self.u, self.unit);
        // Only a start's end (active, or failed) waits on a cycle; other states do not.
        let start_end = match u.state {
            crate::scenario::UnitState::Active => Some(true),
            crate::scenario::UnitState::Failed => Some(false),
            _ => None,
        };
        if let Some(wants_active) = start_end
            && let Some(why) = self
                .live
                .cycles
                .standing()
                .and_then(|c| c.blocks(unit, wants_active, self.deadline))
        {
            return Ok(Some(Awaited::now(Evaluation::failed(why))));
        }
        // A failed unit with no job queued stays failed: nothing will start it again by
        // itself (an automatic restart shows as activating, not failed).
        if now.active_state == "failed"
            && u.state != crate::scenario::UnitState::Failed
            && !systemd::has_job(self.live.guest, unit).await?
        {
            let seen = format!(
                "{unit} is failed ({}) with Result={}, and no job will start it again",
                now.sub_state,
                now.result_str()
            );
            return Ok(Some(Awaited::now(Evaluation::failed(seen))));
        }
        if Instant::now() >= self.deadline {
            let seen = format!(
                "{unit} is {} ({}) with Result={} after {}",
                now.active_state,
                now.sub_state,
                now.result_str(),
                crate::scenario::format_duration(u.within.0)
            );
            return Ok(Some(Awaited::now(Evaluation::failed(seen))));
        }
        Ok(None)
    }

    /// Sleep until PID 1 says something about this unit, a wait cycle comes to stand,
    /// the re-check interval passes, or the deadline.
    async fn sleep(&self, at: &mut super::watch::Cursor) {
        let wake = (Instant::now() + UNIT_RECHECK).min(self.deadline);
        let mut cycles = self.live.cycles.clone();
        let standing = async {
            while cycles.next_read().await {
                if cycles.standing().is_some() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = self.live.journal.wait_about(self.unit, at, wake) => {}
            _ = standing => {}
        }
    }
}
