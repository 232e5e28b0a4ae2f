//! PID 1's job queue and the units' states, folded from the recorder's [`Event`]s. Pure:
//! the live watcher and a replay of a recorded stream fold the same events the same way.

use std::collections::{BTreeMap, BTreeSet};

use super::protocol::{Event, Prop};
use crate::guest::systemd::UnitState;
use crate::guest::systemd::jobs::{self, Job, JobRef};

#[derive(Debug, Clone, PartialEq, Eq)]
struct QueuedJob {
    unit: String,
    job_type: String,
    state: String,
}

/// The queue and the units as the events so far describe them.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    jobs: BTreeMap<u32, QueuedJob>,
    /// `(a, b)`: PID 1 says job `a` waits for job `b` (its `GetAfter`/`GetBefore` as
    /// labelled; see [`Queue::jobs`] for the orientation).
    waits: BTreeSet<(u32, u32)>,
    units: BTreeMap<String, BTreeMap<String, Prop>>,
    /// PID 1's version number (`Version`'s leading number).
    pub version: Option<u32>,
    /// When userspace began, on the guest's monotonic clock (µs).
    pub userspace_us: Option<u64>,
}

impl Queue {
    /// Fold one event in.
    pub fn apply(&mut self, e: &Event) {
        match e {
            Event::Job {
                id,
                unit,
                job_type,
                state,
            } => {
                let j = self.jobs.entry(*id).or_insert_with(|| QueuedJob {
                    unit: unit.clone(),
                    job_type: String::new(),
                    state: String::new(),
                });
                if let Some(t) = job_type {
                    j.job_type = t.clone();
                }
                if let Some(s) = state {
                    j.state = s.clone();
                }
            }
            Event::JobState { id, state } => {
                if let Some(j) = self.jobs.get_mut(id) {
                    j.state = state.clone();
                }
            }
            Event::JobRemoved { id, .. } => {
                self.jobs.remove(id);
                self.waits.retain(|(a, b)| a != id && b != id);
            }
            Event::After { id, jobs } => {
                if self.jobs.contains_key(id) {
                    self.waits.extend(jobs.iter().map(|b| (*id, *b)));
                }
            }
            Event::Before { id, jobs } => {
                if self.jobs.contains_key(id) {
                    self.waits.extend(jobs.iter().map(|a| (*a, *id)));
                }
            }
            Event::Unit { unit, props } => {
                let known = self.units.entry(unit.clone()).or_default();
                for (k, v) in props {
                    known.insert(k.clone(), v.clone());
                }
            }
            Event::Manager { name, value } => match (name.as_str(), value) {
                ("Version", Prop::Text(v)) => {
                    self.version = v
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|n| n.parse().ok())
                }
                ("UserspaceTimestampMonotonic", Prop::Num(us)) => self.userspace_us = Some(*us),
                _ => {}
            },
            Event::Reloading { .. } => {}
        }
    }

    /// Whether any job is queued.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The queue as `systemctl list-jobs --after --before` would give it, relations the
    /// right way round (calibrated from the queue itself, as for systemctl's labels: a
    /// running job waits for nothing). Jobs whose type is not known yet are left out.
    pub fn jobs(&self) -> Vec<Job> {
        let reference = |id: &u32| {
            self.jobs.get(id).map(|j| JobRef {
                id: *id,
                unit: j.unit.clone(),
                job_type: j.job_type.clone(),
            })
        };
        // One pass over the relations (the stream is untrusted: no quadratic walks).
        let mut waiting_for: BTreeMap<u32, Vec<JobRef>> = BTreeMap::new();
        let mut blocking: BTreeMap<u32, Vec<JobRef>> = BTreeMap::new();
        for (a, b) in &self.waits {
            if let (Some(ra), Some(rb)) = (reference(a), reference(b)) {
                waiting_for.entry(*a).or_default().push(rb);
                blocking.entry(*b).or_default().push(ra);
            }
        }
        let list: Vec<Job> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.job_type.is_empty() && !j.state.is_empty())
            .map(|(id, j)| Job {
                id: *id,
                unit: j.unit.clone(),
                job_type: j.job_type.clone(),
                state: j.state.clone(),
                waiting_for: waiting_for.remove(id).unwrap_or_default(),
                blocking: blocking.remove(id).unwrap_or_default(),
            })
            .collect();
        jobs::orient(list, self.version.unwrap_or(0))
    }

    /// Whether `unit` has a start job that is running.
    pub fn start_running(&self, unit: &str) -> bool {
        self.jobs
            .values()
            .any(|j| j.unit == unit && j.job_type == "start" && j.state == "running")
    }

    /// What is known of `unit`'s state, if anything.
    pub fn unit_state(&self, unit: &str) -> Option<UnitState> {
        let p = self.units.get(unit)?;
        let text = |k: &str| match p.get(k) {
            Some(Prop::Text(s)) => Some(s.clone()),
            _ => None,
        };
        // systemd's timestamps are 0 when the change never happened.
        let us = |k: &str| match p.get(k) {
            Some(Prop::Num(n)) if *n > 0 => Some(*n),
            _ => None,
        };
        Some(UnitState {
            id: unit.to_string(),
            load_state: String::new(),
            active_state: text("ActiveState").unwrap_or_default(),
            sub_state: text("SubState").unwrap_or_default(),
            result: text("Result"),
            service_type: None,
            n_restarts: None,
            exec_main_code: None,
            exec_main_status: None,
            inactive_exit_us: us("InactiveExitTimestampMonotonic"),
            active_enter_us: us("ActiveEnterTimestampMonotonic"),
            active_exit_us: us("ActiveExitTimestampMonotonic"),
            inactive_enter_us: us("InactiveEnterTimestampMonotonic"),
            state_change_us: us("StateChangeTimestampMonotonic"),
            exec_main_start_us: None,
            exec_main_exit_us: None,
            // u64::MAX is systemd's "infinity".
            timeout_start_us: us("TimeoutStartUSec").filter(|t| *t != u64::MAX),
            remain_after_exit: None,
        })
    }
}
