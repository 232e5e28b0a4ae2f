//! What one read of the job queue means for a boot's watch: its wait-for graph, cycle
//! and stalls ([`assess`]), folded into the watch's state ([`absorb`]), and the
//! ordering cycles PID 1 logs while it loads units ([`OrderingWatch`]).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::check::live::{self, Confirmed, CycleTracker, RecordedRead, Stall};
use crate::check::{ProbeRecord, WaitForGraph};

use super::clock::GuestClock;
use super::watch::Journal;
use super::watch_state::{WatchSetup, WatchState};

/// Journal lines kept per stalled unit.
const STALL_LINES: usize = 5;

/// systemd's own ordering cycles, from PID 1's lines so far.
#[derive(Default)]
pub(super) struct OrderingWatch {
    pub(super) seen_entries: usize,
    pub(super) lines: Vec<(u64, String)>,
}

impl OrderingWatch {
    pub(super) fn update(&mut self, journal: &Journal, state: &Mutex<WatchState>) {
        let fresh = journal.since(self.seen_entries);
        self.seen_entries += fresh.len();
        self.lines.extend(
            fresh
                .iter()
                .filter(|x| {
                    x.entry.from_manager
                        && (x.entry.message.contains("ordering cycle")
                            || x.entry.message.contains("Found dependency on"))
                })
                .map(|x| (x.entry.mono_us, x.entry.message.clone())),
        );
        let ordering = live::ordering_cycles(self.lines.iter().map(|(t, m)| (*t, m.as_str())));
        if !ordering.is_empty() {
            state.lock().expect("cycle watch lock").ordering = ordering;
        }
    }
}

/// What judging a read needs of the watch's setup.
pub(super) struct Judge<'a> {
    /// The boot's journal (a stalled unit's last lines).
    pub journal: &'a Journal,
    /// How long a cycle must last to count.
    pub persist: Duration,
    /// Where progress lines go.
    pub status: &'a (dyn Fn(&str) + Send + Sync),
}

impl WatchSetup {
    /// What judging a read needs of it.
    pub(super) fn judge(&self) -> Judge<'_> {
        Judge {
            journal: &self.journal,
            persist: self.persist,
            status: self.status.as_ref(),
        }
    }
}

/// Fold one read into what the watcher has seen; a line for the user when a cycle forms
/// or is confirmed.
pub(super) fn absorb(
    state: &Mutex<WatchState>,
    tracker: &mut CycleTracker,
    read: Read,
    judge: &Judge<'_>,
) {
    let mut s = state.lock().expect("cycle watch lock");
    s.reads.push(read.at);
    s.probes.extend(read.probes.iter().cloned());
    for u in &read.recorded.units {
        if read
            .recorded
            .jobs
            .iter()
            .any(|j| j.unit == u.id && j.job_type == "start" && j.state == "running")
            && let Some(us) = u.inactive_exit_us
        {
            s.starts.insert(u.id.clone(), us);
        }
    }
    let now_us = read.recorded.now_us;
    for w in read.recorded.jobs.iter().filter(|j| j.state == "waiting") {
        for on in &w.waiting_for {
            let running_start = read
                .recorded
                .jobs
                .iter()
                .any(|j| j.id == on.id && j.job_type == "start" && j.state == "running");
            if running_start {
                s.waits
                    .entry((on.unit.clone(), w.unit.clone()))
                    .and_modify(|(_, to)| *to = now_us)
                    .or_insert((now_us, now_us));
            }
        }
    }
    s.last_graph = read.graph.clone();
    s.last_read = read.recorded.clone();
    for stall in read.stalls.iter().cloned() {
        // The unit's last lines scan the whole journal: at most once every 2 s of the
        // stall, not at every read (the recorder makes hundreds in a boot).
        match s.stalls.iter_mut().find(|x| x.unit == stall.unit) {
            Some(x) if stall.running_secs < x.running_secs + 2 => {
                x.running_secs = x.running_secs.max(stall.running_secs);
                x.blocked = stall.blocked;
            }
            Some(x) => {
                *x = Stall {
                    last_lines: last_lines(judge.journal, &stall.unit),
                    ..stall
                }
            }
            None => s.stalls.push(Stall {
                last_lines: last_lines(judge.journal, &stall.unit),
                ..stall
            }),
        }
    }
    let mut say = None;
    match (
        &read.cycle,
        tracker.observe(read.at, read.cycle_units(), read.formed),
    ) {
        (Some(found), Some(formed)) => match &s.confirmed {
            None => {
                tracing::info!("wait cycle confirmed: {}", found.message);
                say = Some(format!("wait cycle: {}", found.message));
                s.confirmed = Some(Confirmed {
                    formed,
                    confirmed: read.at,
                    ..found.clone()
                });
                s.confirming_read = Some(read.recorded.clone());
                s.cycle_last_seen = Some(read.at);
            }
            Some(c) if c.units == found.units => s.cycle_last_seen = Some(read.at),
            Some(_) => {}
        },
        (Some(found), None) => {
            if let Some(c) = &s.confirmed
                && c.units == found.units
            {
                s.cycle_last_seen = Some(read.at);
            }
            say = Some(format!(
                "wait cycle forming: {} (confirmed after {:.0} s)",
                found.cycle.units().join(" → "),
                judge.persist.as_secs_f64()
            ));
        }
        _ => {}
    }
    drop(s);
    if let Some(line) = say {
        (judge.status)(&line);
    }
}

/// One read's result.
pub(super) struct Read {
    pub(super) at: Instant,
    pub(super) busy: bool,
    pub(super) graph: WaitForGraph,
    pub(super) cycle: Option<Confirmed>,
    pub(super) formed: Option<Instant>,
    pub(super) stalls: Vec<Stall>,
    pub(super) probes: Vec<ProbeRecord>,
    pub(super) recorded: RecordedRead,
}

impl Read {
    fn cycle_units(&self) -> Option<BTreeSet<String>> {
        self.cycle.as_ref().map(|c| c.units.clone())
    }
}

/// One read over SSH: the queue, the states of the units whose jobs run, and a probe of
/// each gate whose start runs.
/// The wait-for graph of a read, its cycle (dated from the guest's clock) and stalls.
pub(super) fn assess(
    recorded: RecordedRead,
    at: Instant,
    clock: &GuestClock,
    persist: Duration,
) -> Read {
    let snap = recorded.snapshot();
    let graph = live::graph(&snap);
    let cycle = graph.find_cycle().map(|cycle| {
        let units: BTreeSet<String> = cycle.edges.iter().map(|e| e.waiter.clone()).collect();
        let blocked: BTreeSet<String> = graph
            .waiting_on(&units)
            .into_iter()
            .filter(|u| !units.contains(u))
            .collect();
        Confirmed {
            message: live::describe(&cycle, &snap),
            breaks: live::breaks_at_us(&cycle, &snap).map(|(u, us)| (u, clock.to_host(us))),
            formed: at,
            formed_from_guest: live::formed_us(&cycle, &snap).is_some(),
            confirmed: at,
            units,
            blocked,
            graph: graph.clone(),
            cycle,
        }
    });
    let formed = cycle
        .as_ref()
        .and_then(|c| live::formed_us(&c.cycle, &snap))
        .map(|us| clock.to_host(us));
    let busy = recorded
        .jobs
        .iter()
        .any(|j| j.job_type == "start" && j.state == "running");
    let stalls = live::stalls(&snap, persist);
    Read {
        at,
        busy,
        stalls,
        graph,
        cycle,
        formed,
        probes: Vec::new(),
        recorded,
    }
}

/// The unit's last journal lines (its own output, not PID 1's).
pub(super) fn last_lines(journal: &Journal, unit: &str) -> Vec<String> {
    let all = journal.since(0);
    let mut lines: Vec<String> = all
        .iter()
        .rev()
        .filter(|s| !s.entry.from_manager && s.entry.unit.as_deref() == Some(unit))
        .take(STALL_LINES)
        .map(|s| s.entry.message.clone())
        .collect();
    lines.reverse();
    lines
}
