//! Live wait-cycle detection, pure: from one read of the guest (the job queue, the
//! states of the units with jobs, the harness's own probes of the declared gates) to a
//! wait-for graph, the words for a cycle's path, when it formed and when it can break;
//! a tracker that confirms a cycle once it has lasted `persist`; stalls; and systemd's
//! own "ordering cycle" journal entries. The runner (`run/cycles.rs`) does the reading.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::outcome::Evaluation;
use super::waitfor::{Cycle, EdgeKind, WaitForGraph};
use crate::guest::systemd::sources::Gate;
use crate::guest::systemd::{Job, UnitState};
use crate::scenario::WaitCycleExpectation;

/// What the harness's own probes of one gate URL saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSeen {
    /// The declaration.
    pub gate: Gate,
    /// The last answer: an HTTP status, `refused`, `timed out`, or curl's error.
    pub last: String,
    /// Whether the last answer was a 2xx status.
    pub healthy: bool,
    /// How many answers in a row were not healthy.
    pub unhealthy_streak: u32,
}

impl GateSeen {
    /// Record one more probe answer.
    pub fn record(&mut self, answer: String, healthy: bool) {
        self.unhealthy_streak = if healthy {
            0
        } else {
            self.unhealthy_streak + 1
        };
        self.last = answer;
        self.healthy = healthy;
    }
}

/// One read of the guest, owned: what the evidence records, and what tests replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedRead {
    /// The job queue.
    pub jobs: Vec<Job>,
    /// States of the units with running jobs.
    pub units: Vec<UnitState>,
    /// The gates and what their probes saw.
    pub gates: Vec<GateSeen>,
    /// Guest monotonic µs at the read.
    pub now_us: u64,
}

impl RecordedRead {
    /// The read as a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            jobs: &self.jobs,
            units: &self.units,
            gates: &self.gates,
            now_us: self.now_us,
        }
    }
}

/// One read of the guest.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The job queue, relations the right way round.
    pub jobs: &'a [Job],
    /// States of the units that have jobs (start times, timeouts).
    pub units: &'a [UnitState],
    /// The declared gates with what the harness's probes saw.
    pub gates: &'a [GateSeen],
    /// The guest's monotonic clock at the read (µs).
    pub now_us: u64,
}

impl Snapshot<'_> {
    fn job_of(&self, unit: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.unit == unit)
    }

    fn unit(&self, unit: &str) -> Option<&UnitState> {
        self.units.iter().find(|u| u.id == unit)
    }

    /// Whether `unit` has a start job that is running.
    pub fn start_running(&self, unit: &str) -> bool {
        self.job_of(unit)
            .is_some_and(|j| j.job_type == "start" && j.state == "running")
    }

    /// How long `unit`'s running start job has run, from its `InactiveExitTimestamp`.
    fn running_for_us(&self, unit: &str) -> Option<u64> {
        let began = self.unit(unit)?.inactive_exit_us?;
        Some(self.now_us.saturating_sub(began))
    }
}

/// The wait-for graph of a read: systemd's job edges, plus a gate edge for each gated
/// unit whose start job is running while the harness's probe of its URL is not healthy.
pub fn graph(s: &Snapshot) -> WaitForGraph {
    let mut g = WaitForGraph::from_jobs(s.jobs);
    for seen in s.gates {
        // A gate not probed yet is not evidence of anything.
        if !seen.healthy && seen.unhealthy_streak > 0 && s.start_running(&seen.gate.unit) {
            g.add(
                &seen.gate.unit,
                &seen.gate.served_by,
                EdgeKind::Gate,
                format!(
                    "gate {} → {} ×{}, served by {}",
                    seen.gate.url, seen.last, seen.unhealthy_streak, seen.gate.served_by
                ),
            );
        }
    }
    g
}

/// The cycle's path in words, each unit with its job and why it waits for the next:
/// `deploy-proxy.service (start running 41 s; gate https://ci.commoninternet.net/ → 502 ×12)
/// waits for deploy-dashboard.service (start waiting, After=deploy-proxy.service)`.
pub fn describe(cycle: &Cycle, s: &Snapshot) -> String {
    let mut parts = Vec::new();
    for e in &cycle.edges {
        let unit = e.waiter.as_str();
        let job = match s.job_of(unit) {
            Some(j) if j.state == "running" => match s.running_for_us(unit) {
                Some(us) => format!("{} running {} s", j.job_type, us / 1_000_000),
                None => format!("{} running", j.job_type),
            },
            Some(j) => format!("{} {}", j.job_type, j.state),
            None => "no job".to_string(),
        };
        let why = match e.kind {
            EdgeKind::Gate => s
                .gates
                .iter()
                .find(|g| g.gate.unit == unit)
                .map(|g| format!("gate {} → {} ×{}", g.gate.url, g.last, g.unhealthy_streak))
                .unwrap_or_else(|| e.reason.clone()),
            EdgeKind::Job => format!("After={}", e.waited),
            _ => e.reason.clone(),
        };
        let sep = if e.kind == EdgeKind::Gate { "; " } else { ", " };
        parts.push(format!("{unit} ({job}{sep}{why})"));
    }
    parts.join(" waits for ")
}

/// When the cycle formed, in guest µs: the latest moment one of its running start jobs
/// began. That is exact only when every job on the cycle was queued before the running
/// ones began, which job ids show (systemd numbers jobs in the order it queues them);
/// otherwise `None`, and the caller dates the cycle from its first sighting.
pub fn formed_us(cycle: &Cycle, s: &Snapshot) -> Option<u64> {
    let units: Vec<&str> = cycle.edges.iter().map(|e| e.waiter.as_str()).collect();
    let jobs: Vec<&Job> = units.iter().filter_map(|u| s.job_of(u)).collect();
    let running: Vec<&Job> = jobs
        .iter()
        .copied()
        .filter(|j| j.state == "running")
        .collect();
    let newest_running = running.iter().map(|j| j.id).max()?;
    if jobs.iter().any(|j| j.id > newest_running) {
        return None;
    }
    running
        .iter()
        .map(|j| s.unit(&j.unit).and_then(|u| u.inactive_exit_us))
        .collect::<Option<Vec<u64>>>()?
        .into_iter()
        .max()
}

/// The earliest moment the cycle can break by itself: a running start job on it hitting
/// its `TimeoutStartSec`. `(unit, guest µs)`, or `None` when no job on it has a timeout.
pub fn breaks_at_us(cycle: &Cycle, s: &Snapshot) -> Option<(String, u64)> {
    cycle
        .edges
        .iter()
        .map(|e| e.waiter.as_str())
        .filter(|u| s.start_running(u))
        .filter_map(|u| {
            let st = s.unit(u)?;
            Some((u.to_string(), st.inactive_exit_us? + st.timeout_start_us?))
        })
        .min_by_key(|(_, at)| *at)
}

/// A cycle the harness has seen often and long enough to call it one.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmed {
    /// The cycle.
    pub cycle: Cycle,
    /// Its path in words ([`describe`]), at confirmation.
    pub message: String,
    /// The units on it.
    pub units: BTreeSet<String>,
    /// Units whose jobs wait on it (they cannot start before it breaks).
    pub blocked: BTreeSet<String>,
    /// When it formed, by the guest's clock when it can be dated (else first sighting).
    #[serde(skip)]
    pub formed: Instant,
    /// Whether `formed` comes from the guest's own timestamps.
    pub formed_from_guest: bool,
    /// When the harness confirmed it.
    #[serde(skip)]
    pub confirmed: Instant,
    /// The unit whose start timeout breaks it first, and when.
    #[serde(skip)]
    pub breaks: Option<(String, Instant)>,
    /// The whole graph at confirmation.
    pub graph: WaitForGraph,
}

impl Confirmed {
    /// Why `unit` cannot become active (`wants_active`) or failed before `deadline`, or
    /// `None` when it still can. A unit on the cycle or waiting on it cannot finish a
    /// start before the cycle breaks; the unit whose timeout breaks it ends failed, never
    /// active. Call it only for a unit not yet in the wanted state, while the cycle stands.
    pub fn blocks(&self, unit: &str, wants_active: bool, deadline: Instant) -> Option<String> {
        let on = self.units.contains(unit);
        if !on && !self.blocked.contains(unit) {
            return None;
        }
        let place = if on { "is on" } else { "waits on" };
        match &self.breaks {
            None => Some(format!(
                "{unit} {place} a wait cycle that nothing breaks by itself: {}",
                self.message
            )),
            Some((breaker, _)) if wants_active && breaker == unit => Some(format!(
                "{unit} {place} a wait cycle that only its own start timeout breaks, which fails it: {}",
                self.message
            )),
            Some((breaker, at)) if *at > deadline => Some(format!(
                "{unit} {place} a wait cycle that cannot break before {breaker}'s start timeout, {:.0} s after the deadline: {}",
                at.saturating_duration_since(deadline).as_secs_f64(),
                self.message
            )),
            Some(_) => None,
        }
    }
}

/// Confirms a cycle once the same one has been read at least twice and has lasted
/// `persist` since it formed.
#[derive(Debug, Clone)]
pub struct CycleTracker {
    persist: Duration,
    candidate: Option<Candidate>,
}

#[derive(Debug, Clone)]
struct Candidate {
    units: BTreeSet<String>,
    formed: Instant,
    reads: u32,
}

impl CycleTracker {
    /// A tracker with this persistence.
    pub fn new(persist: Duration) -> CycleTracker {
        CycleTracker {
            persist,
            candidate: None,
        }
    }

    /// The persistence.
    pub fn persist(&self) -> Duration {
        self.persist
    }

    /// Feed one read at `now`: the cycle's units (if any) and, when the guest dates it,
    /// when it formed. Returns the formation instant when the cycle counts as of now.
    pub fn observe(
        &mut self,
        now: Instant,
        units: Option<BTreeSet<String>>,
        formed: Option<Instant>,
    ) -> Option<Instant> {
        let Some(units) = units else {
            self.candidate = None;
            return None;
        };
        let c = match &mut self.candidate {
            Some(c) if c.units == units => {
                c.reads += 1;
                c
            }
            _ => self.candidate.insert(Candidate {
                units,
                formed: formed.unwrap_or(now).min(now),
                reads: 1,
            }),
        };
        (c.reads >= 2 && now.saturating_duration_since(c.formed) >= self.persist)
            .then_some(c.formed)
    }
}

/// A start job that holds others up for longer than `persist`, declared gate or not.
/// Never called a cycle on its own: it says what the start held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    /// The unit whose start job runs.
    pub unit: String,
    /// How long it had run at the read, in seconds.
    pub running_secs: u64,
    /// The units whose jobs wait for it.
    pub blocked: Vec<String>,
    /// Its last journal lines, filled in by the runner.
    #[serde(default)]
    pub last_lines: Vec<String>,
}

/// The stalls in a read: running start jobs with jobs waiting on them, running longer
/// than `persist`, whether or not a gate is declared for the unit (a declared gate is
/// what pxgate lacked; a declared one can stall all the same).
pub fn stalls(s: &Snapshot, persist: Duration) -> Vec<Stall> {
    s.jobs
        .iter()
        .filter(|j| j.job_type == "start" && j.state == "running" && !j.blocking.is_empty())
        .filter_map(|j| {
            let running = s.running_for_us(&j.unit)?;
            (running > persist.as_micros() as u64).then(|| Stall {
                unit: j.unit.clone(),
                running_secs: running / 1_000_000,
                blocked: j.blocking.iter().map(|b| b.unit.clone()).collect(),
                last_lines: Vec::new(),
            })
        })
        .collect()
}

/// systemd's own report of an ordering cycle in a transaction: the units it names and
/// the job it deleted to break it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderingCycle {
    /// Guest µs of the first line.
    pub at_us: u64,
    /// The units along the cycle, as systemd lists them.
    pub units: Vec<String>,
    /// The job deleted to break it (`unit/type`), if systemd says.
    pub deleted: Option<String>,
}

impl OrderingCycle {
    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "systemd found an ordering cycle: {}{}",
            self.units.join(" → "),
            self.deleted
                .as_ref()
                .map(|d| format!("; it deleted job {d} to break it"))
                .unwrap_or_else(|| "; it could not break it".to_string())
        )
    }
}

/// Ordering cycles from PID 1's messages `(guest µs, text)`, in order. systemd v252
/// (`transaction.c`, recorded in tests/fixtures/guest/journal-ordering-cycle.jsonl) logs
/// `U: Found ordering cycle on A/start`, one `U: Found dependency on B/start` per step,
/// then `U: Job B/start deleted to break ordering cycle starting with A/start`. Later
/// versions put the path on one line (`Found ordering cycle: A/start after B/start ...`;
/// not recorded here), so that form is read too, and a deletion with no cycle open still
/// counts as one.
pub fn ordering_cycles<'a>(
    messages: impl IntoIterator<Item = (u64, &'a str)>,
) -> Vec<OrderingCycle> {
    let unit_of = |job: &str| {
        let job = job.trim().trim_end_matches('.');
        job.rsplit_once('/').map_or(job, |(u, _)| u).to_string()
    };
    let mut out: Vec<OrderingCycle> = Vec::new();
    let mut open = false;
    for (at_us, text) in messages {
        if let Some((_, path)) = text.split_once("Found ordering cycle: ") {
            let path = path.split(" - ").next().unwrap_or(path);
            out.push(OrderingCycle {
                at_us,
                units: path.split(" after ").map(unit_of).collect(),
                deleted: None,
            });
            open = true;
        } else if let Some((_, job)) = text.split_once("Found ordering cycle on ") {
            out.push(OrderingCycle {
                at_us,
                units: vec![unit_of(job)],
                deleted: None,
            });
            open = true;
        } else if let (true, Some((_, job))) = (open, text.split_once("Found dependency on ")) {
            if let Some(c) = out.last_mut() {
                c.units.push(unit_of(job));
            }
        } else if text.contains(" to break ordering cycle") {
            let deleted = text
                .split_once("Job ")
                .and_then(|(_, r)| r.split_once(" deleted"))
                .map(|(j, _)| j.to_string());
            if !open {
                out.push(OrderingCycle {
                    at_us,
                    units: deleted.iter().map(|j| unit_of(j)).collect(),
                    deleted: None,
                });
            }
            if let Some(c) = out.last_mut() {
                c.deleted = deleted;
            }
            open = false;
        }
    }
    out
}

/// What the watcher saw over a phase: the facts `wait_cycle:` is judged on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseWatch {
    /// Where the reads came from: `recorder` (PID 1's changes from early userspace) or
    /// `ssh` (`systemctl list-jobs` once SSH answered).
    pub source: String,
    /// Seconds since QEMU started when userspace began, if the guest said.
    pub userspace_secs: Option<f64>,
    /// The units whose start the judgement rests on (each declared gate's, each stalled
    /// one's), with when their latest start job began, if it was seen running.
    pub starts: Vec<(String, Option<f64>)>,
    /// When the recorder's stream ended (seconds since QEMU started) and why, if it did.
    pub recorder_ended: Option<(f64, String)>,
    /// Cycles through an inferred edge (see [`super::infer`]): in words, and how long
    /// each lasted (seconds).
    pub inferred: Vec<(String, f64)>,
    /// Why no inference was made, if none could be.
    pub inference_gap: Option<String>,
    /// Declared gates that disagree with what was inferred, in words.
    pub disagreements: Vec<String>,
    /// Reads of the job queue during the phase.
    pub reads: u32,
    /// Seconds since QEMU started of the first and last read.
    pub first_read_secs: Option<f64>,
    /// See `first_read_secs`.
    pub last_read_secs: Option<f64>,
    /// How many gates the target declares.
    pub gates_declared: usize,
    /// Per declared gate (by gated unit): how many times the harness probed its URL
    /// during the phase (only while the gated unit's start job ran).
    pub gate_probes: Vec<(String, usize)>,
    /// A cycle confirmed during the phase, in words.
    pub cycle: Option<String>,
    /// Stalls seen during the phase.
    pub stalls: Vec<Stall>,
    /// systemd's own ordering cycles in this boot's journal.
    pub ordering: Vec<OrderingCycle>,
    /// Why the queue could not be read, if it could not.
    pub error: Option<String>,
}

/// Judge `wait_cycle:` over a phase. Not having watched is never a pass: a watch that
/// began after a gated or stalled start began, or that ended before the phase did, gives
/// "not checked", counted apart from failures.
pub fn evaluate_wait_cycle(
    expect: WaitCycleExpectation,
    persist: Duration,
    w: &PhaseWatch,
) -> Evaluation {
    let secs = persist.as_secs_f64();
    let found: Vec<String> = w
        .cycle
        .iter()
        .cloned()
        .chain(w.ordering.iter().map(OrderingCycle::describe))
        .chain(
            w.inferred
                .iter()
                .filter(|(_, lasted)| *lasted >= secs)
                .map(|(text, lasted)| format!("{text}, for {lasted:.0} s")),
        )
        .collect();
    let stalls = if w.stalls.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = w
            .stalls
            .iter()
            .map(|s| {
                format!(
                    "{} ran its start for {} s holding up {}",
                    s.unit,
                    s.running_secs,
                    s.blocked.join(", ")
                )
            })
            .collect();
        format!("; stalls seen (not cycles): {}", list.join("; "))
    };
    let disagree = if w.disagreements.is_empty() {
        String::new()
    } else {
        format!("; {}", w.disagreements.join("; "))
    };
    if !found.is_empty() {
        let seen = format!(
            "wait cycle lasting {secs:.0} s: {}{stalls}{disagree}",
            found.join("; ")
        );
        return match expect {
            WaitCycleExpectation::Absent => Evaluation::failed(seen),
            WaitCycleExpectation::Expected => Evaluation::held(seen),
        };
    }
    let (Some(from), Some(to)) = (w.first_read_secs, w.last_read_secs) else {
        return Evaluation::not_checked(format!(
            "not checked: the job queue was never read ({})",
            w.error
                .as_deref()
                .unwrap_or("the phase ended before the first read")
        ));
    };
    // Absence needs the watch to have lasted: two reads at least, the last one good.
    if let Some(e) = &w.error {
        return Evaluation::not_checked(format!(
            "not checked to the end: the last read failed ({e}); {} reads from {from:.1} s to {to:.1} s found no cycle",
            w.reads
        ));
    }
    if w.reads < 2 {
        return Evaluation::not_checked(format!(
            "not checked: the job queue was read only once, at {from:.1} s after QEMU started"
        ));
    }
    let window = match (w.source.as_str(), w.userspace_secs) {
        ("recorder", Some(u)) => format!(
            "job queue watched by the recorder from {:.1} s after userspace began ({from:.1} s after QEMU started) to {to:.1} s, {} reads",
            from - u,
            w.reads
        ),
        ("recorder", None) => format!(
            "job queue watched by the recorder from {from:.1} s to {to:.1} s after QEMU started, {} reads",
            w.reads
        ),
        _ => format!(
            "job queue read over SSH {} times from {from:.1} s to {to:.1} s after QEMU started",
            w.reads
        ),
    };
    let mut gaps = Vec::new();
    if let Some((at, why)) = &w.recorder_ended {
        gaps.push(format!("the recorder stopped at {at:.1} s ({why})"));
    }
    let mut covered = Vec::new();
    for (unit, began) in &w.starts {
        match began {
            Some(b) if *b >= from => covered.push(format!("{unit}'s whole start job (began {b:.1} s)")),
            Some(b) => gaps.push(format!("{unit}'s start job began at {b:.1} s, before the watch")),
            None if w.source == "recorder" => {
                covered.push(format!("{unit} (no start job of it ran while watched)"))
            }
            None => gaps.push(format!(
                "{unit}'s start job was never seen running: it ran before the watch began, or not at all"
            )),
        }
    }
    if !gaps.is_empty() {
        return Evaluation::not_checked(format!(
            "not checked over the whole boot: {}; {window} found no cycle",
            gaps.join("; ")
        ));
    }
    let edges = if w.gates_declared == 0 {
        "the target declares no gates, so only systemd's own edges were checked".to_string()
    } else {
        let probed: Vec<String> = w
            .gate_probes
            .iter()
            .map(|(unit, n)| match n {
                0 => {
                    format!("{unit}'s gate not probed (its start job was not running when probed)")
                }
                n => format!("{unit}'s gate probed {n} times"),
            })
            .collect();
        format!(
            "systemd's job edges and the declared gates ({})",
            probed.join("; ")
        )
    };
    let covering = if covered.is_empty() {
        String::new()
    } else {
        format!(", covering {}", covered.join(", "))
    };
    let inferred = match (&w.inference_gap, w.inferred.is_empty()) {
        (Some(gap), _) => format!("; no waits inferred ({gap})"),
        (None, true) => "; no undeclared wait inferred from refused connections".to_string(),
        (None, false) => format!(
            "; inferred waits shorter than {secs:.0} s: {}",
            w.inferred
                .iter()
                .map(|(t, l)| format!("{t}, for {l:.1} s"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let seen = format!(
        "no wait cycle lasted {secs:.0} s: {window}{covering}, with {edges}{stalls}{inferred}{disagree}"
    );
    match expect {
        WaitCycleExpectation::Absent => Evaluation::held(seen),
        WaitCycleExpectation::Expected => Evaluation::failed(seen),
    }
}
