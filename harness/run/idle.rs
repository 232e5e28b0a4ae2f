//! The end-of-phase evidence, read at the boot's first idle moment instead of after the
//! last decision.
//!
//! Every unit's state and the boot's journal are the two slow reads of a pair's end
//! (seconds each on a TCG guest). Once the recorder shows PID 1's job queue empty, they
//! are read in the background while the expectations are judged. At a phase's end the
//! units read is used only if the recorder reported no job and no unit change since it
//! began, so it is the state at that end; else the units are read again. The journal
//! read is completed at the end with the entries logged after its last cursor, so it
//! is always whole.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::guest::Guest;
use crate::guest::recorder::Recorder;
use crate::run::clock::GuestClock;

use super::record;
use super::units_read;
use super::units_read::UnitsRead;

/// How long the queue must stay empty before the boot counts as idle: it empties for a
/// moment between jobs now and then while the boot is still going.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Where an idle read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Stage {
    /// Opening its own SSH connection.
    #[default]
    Connecting,
    /// Waiting for the queue to stay empty.
    WaitingForIdle,
    /// Reading since this moment.
    Reading(Instant),
}

/// How long the idle reads' own SSH connection may take to open.
const SESSION_CONNECT: Duration = Duration::from_secs(20);

/// What was read at the idle moment.
pub struct IdleEvidence {
    /// When the reads began (host clock).
    pub began: Instant,
    /// Every unit's state (see [`units_read::every_unit`]).
    pub units: Option<UnitsRead>,
    /// The journal so far, as `journalctl -o json` printed it (not yet capped).
    pub journal: Result<String, String>,
}

/// The background read of one boot, started once its SSH session is up; read again at
/// the next idle moment whenever PID 1 reports a change after a read began.
pub struct IdleRead {
    recorder: Recorder,
    guest: Guest,
    clock: GuestClock,
    named: Vec<String>,
    /// The reads' own SSH connection, once open: kept for the next idle reads.
    own: Arc<Mutex<Option<Guest>>>,
    /// Where the current reads are.
    stage: Arc<Mutex<Stage>>,
    task: Option<tokio::task::JoinHandle<Option<IdleEvidence>>>,
    /// The last reads that completed.
    done: Option<Arc<IdleEvidence>>,
}

impl Drop for IdleRead {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl IdleRead {
    /// Wait in the background for the queue to stay empty for [`SETTLE`], then read.
    /// Nothing is read while the boot is busy, so the reads do not slow it.
    pub fn start(
        recorder: Recorder,
        guest: Guest,
        clock: GuestClock,
        named: Vec<String>,
    ) -> IdleRead {
        let mut idle = IdleRead {
            recorder,
            guest,
            clock,
            named,
            own: Arc::default(),
            stage: Arc::default(),
            task: None,
            done: None,
        };
        idle.spawn();
        idle
    }

    fn spawn(&mut self) {
        let (mut watch, guest, clock) = (self.recorder.clone(), self.guest.clone(), self.clock);
        let bus = self.recorder.clone();
        let named = self.named.clone();
        let own = self.own.clone();
        let stage = Arc::new(Mutex::new(Stage::Connecting));
        let mark = stage.clone();
        self.stage = stage;
        self.task = Some(tokio::spawn(async move {
            // A connection of its own: the main one carries the expectations' commands,
            // and sshd allows ten sessions per connection (MaxSessions). Opened before
            // the boot is idle, so a login it may cause is not a change after the read.
            let kept = own.lock().expect("idle lock").clone();
            let guest = match kept {
                Some(g) => g,
                None => match guest.another_session(SESSION_CONNECT).await {
                    Ok(g) => {
                        *own.lock().expect("idle lock") = Some(g.clone());
                        g
                    }
                    Err(e) => {
                        tracing::debug!("the idle reads use the main SSH connection: {e:#}");
                        guest
                    }
                },
            };
            *mark.lock().expect("idle lock") = Stage::WaitingForIdle;
            let at = wait_idle(&mut watch).await?;
            *mark.lock().expect("idle lock") = Stage::Reading(at);
            // Through the recorder only: when that read fails, the phase's end reads anyway.
            let when = "the boot's idle moment";
            let units = async {
                units_read::by_recorder(&guest, &bus, &clock, &named, when)
                    .await
                    .map_err(|e| tracing::debug!("no idle read of the units: {e}"))
                    .ok()
            };
            let journal = record::journal_head(&guest);
            let (units, journal) = tokio::join!(units, journal);
            Some(IdleEvidence {
                began: at,
                units,
                journal: journal.map_err(|e| format!("{e:#}")),
            })
        }));
    }

    /// The reads, when PID 1 reported no job and no unit change since they began (reads
    /// under way are waited for then); else why not, and the caller reads now.
    pub async fn if_unchanged(&mut self) -> Result<Arc<IdleEvidence>, String> {
        let changes = |r: &Recorder, t: Instant| r.changes_since(t);
        if let Some(task) = self.task.take() {
            let stage = *self.stage.lock().expect("idle lock");
            match stage {
                // Still waiting for the boot to go idle: keep waiting, for later phases.
                Stage::Connecting | Stage::WaitingForIdle if !task.is_finished() => {
                    self.task = Some(task);
                    let jobs = self.recorder.with(|l| l.queue.jobs().len());
                    return Err(if stage == Stage::Connecting {
                        "the idle reads' SSH connection was still opening".to_string()
                    } else {
                        format!(
                            "the boot had not been idle for {:.1} s (PID 1's queue holds {jobs} jobs)",
                            SETTLE.as_secs_f64()
                        )
                    });
                }
                // Changed while reading: wait for the next idle moment.
                Stage::Reading(t)
                    if !task.is_finished() && changes(&self.recorder, t) != Some(0) =>
                {
                    task.abort();
                    self.spawn();
                    return Err(changed(changes(&self.recorder, t)));
                }
                _ => match task.await {
                    Ok(Some(done)) => self.done = Some(Arc::new(done)),
                    Ok(None) => return Err("the recorder stopped before the boot went idle".into()),
                    Err(e) => return Err(format!("the idle reads stopped: {e}")),
                },
            }
        }
        let Some(done) = self.done.clone() else {
            return Err("no idle read".into());
        };
        match changes(&self.recorder, done.began) {
            Some(0) => Ok(done),
            Some(n) => {
                // Read again at the next idle moment.
                self.spawn();
                Err(changed(Some(n)))
            }
            None => Err(changed(None)),
        }
    }

    /// The last completed read of every unit and the units PID 1 reported changed since
    /// it began (their jobs and state changes, from the recorder): re-reading those alone
    /// brings it up to date. `None` without a completed read, when the recorder stopped
    /// (no change can be ruled out), or after PID 1 reloaded its units (any unit's
    /// dependencies may have changed without a state change).
    pub fn changed_since_read(&self) -> Option<(UnitsRead, Vec<String>)> {
        use crate::guest::recorder::Event;
        let done = self.done.as_ref()?;
        let units = done.units.clone()?;
        let changed = self.recorder.with(|l| {
            if l.ended.is_some() || l.connected.is_none() {
                return None;
            }
            let mut names = std::collections::BTreeSet::new();
            for (_, e) in l.events.iter().rev().take_while(|(at, _)| *at > done.began) {
                match e {
                    Event::Reloading { .. } => return None,
                    Event::Unit { unit, .. }
                    | Event::Job { unit, .. }
                    | Event::JobRemoved { unit, .. } => {
                        names.insert(unit.clone());
                    }
                    _ => {}
                }
            }
            Some(names.into_iter().collect())
        })?;
        Some((units, changed))
    }

    /// The journal of the last completed reads, whatever changed since (the caller
    /// adds what was logged after it).
    pub fn journal(&self) -> Option<&str> {
        self.done.as_ref()?.journal.as_deref().ok()
    }
}

/// Wait, at most `limit`, for PID 1's job queue to be empty (the recorder still up);
/// whether it is. A pair that ends while its boot still starts units waits here so
/// that its last evidence (the plot, the critical chain) is of the boot's end, not of a
/// moment in its middle.
pub async fn queue_empty(recorder: &mut Recorder, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if recorder.queue_empty_since().is_some() {
            return true;
        }
        if recorder.with(|l| l.ended.is_some()) || Instant::now() >= until {
            return false;
        }
        recorder.wait_news(until).await;
    }
}

/// The moment the queue has been empty for [`SETTLE`] (the recorder still up), or
/// `None` when the stream ends first.
async fn wait_idle(recorder: &mut Recorder) -> Option<Instant> {
    loop {
        if recorder.with(|l| l.ended.is_some()) {
            return None;
        }
        let now = Instant::now();
        match recorder.queue_empty_since() {
            Some(t) if now >= t + SETTLE => return Some(now),
            Some(t) => recorder.wait_news(t + SETTLE).await,
            None => recorder.wait_news(now + Duration::from_secs(5)).await,
        }
    }
}

fn changed(n: Option<usize>) -> String {
    match n {
        Some(n) => format!("PID 1 reported {n} job or unit changes since the idle read began"),
        None => "the recorder stopped, so no change since the idle read can be ruled out".into(),
    }
}
