//! The job queue as `systemctl list-jobs --after --before --no-legend` prints it. Pure.
//!
//! Each job row (`ID UNIT TYPE STATE`) is followed by relation rows such as
//! `└─ waiting for job 124 (b.service/start)` or `└─ blocking job 123 (a.service/start)`.
//!
//! **The labels are not trustworthy across versions.** systemd issue #24941 (v251) and
//! PR #32450 (merged for v256) both report them swapped: the jobs that wait for J printed
//! under "waiting for" and the jobs J waits for under "blocking". Yet Debian 12's v252
//! prints them the right way round: recorded in `tests/fixtures/guest/list-jobs-after-before.txt`,
//! where `cb-after.service` (`After=cb-slow.service`) is shown "waiting for" cb-slow.
//! The meaning changed back and forth in PID 1's `GetJobAfter`/`GetJobBefore` as well as
//! in systemctl, so a version number alone is a guess. The queue tells instead
//! ([`labels_swapped`]): a `running` job waits for nothing, so a relation printed under
//! a running job can only be one that waits for it. Only a queue with no such relation
//! falls back to [`labels_swapped_for_version`].
//! [`Job::waiting_for`] is always what J waits for, [`Job::blocking`] what waits for J.

use serde::{Deserialize, Serialize};

/// Fallback guess when the queue cannot calibrate itself: true when `version` is known or
/// reported to print the labels swapped (v252 measured correct, v256+ fixed upstream).
pub fn labels_swapped_for_version(version: u32) -> bool {
    version != 252 && version < 256
}

/// Another job, as named in a relation row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// Job id.
    pub id: u32,
    /// Unit the job is for.
    pub unit: String,
    /// `start`, `stop`, `restart`...
    pub job_type: String,
}

/// One queued job and the ordering relations systemd reports for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: u32,
    /// Unit the job is for.
    pub unit: String,
    /// `start`, `stop`, `restart`, `verify-active`...
    pub job_type: String,
    /// `running` or `waiting`.
    pub state: String,
    /// Jobs that must finish before this one may run.
    pub waiting_for: Vec<JobRef>,
    /// Jobs that wait for this one to finish.
    pub blocking: Vec<JobRef>,
}

/// Whether the labels of a queue parsed with `swapped = false` are swapped, judged
/// from the queue itself: a running job waits for nothing, so one printed "waiting for"
/// another means swapped, and one printed only "blocking" others means true. `None`
/// when no running job has a relation, or when running jobs disagree.
pub fn labels_swapped(jobs: &[Job]) -> Option<bool> {
    let mut swapped = false;
    let mut literal = false;
    for j in jobs.iter().filter(|j| j.state == "running") {
        swapped |= !j.waiting_for.is_empty();
        literal |= !j.blocking.is_empty() && j.waiting_for.is_empty();
    }
    // Running jobs that disagree (one shown waiting, another only blocking) prove
    // nothing either way.
    match (swapped, literal) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// The true relations of a queue parsed with `swapped = false`: swapped back when
/// [`labels_swapped`] says so, or, when the queue cannot tell, when `version` is known to
/// print them swapped.
pub fn orient(mut jobs: Vec<Job>, version: u32) -> Vec<Job> {
    if labels_swapped(&jobs).unwrap_or_else(|| labels_swapped_for_version(version)) {
        swap_relations(&mut jobs);
    }
    jobs
}

/// Swap every job's `waiting_for` and `blocking` lists.
pub fn swap_relations(jobs: &mut [Job]) {
    for job in jobs {
        std::mem::swap(&mut job.waiting_for, &mut job.blocking);
    }
}

/// Parse `list-jobs --after --before --no-legend` output; `swapped` says the printed
/// labels mean the opposite of what they say (see the module notes).
pub fn parse_jobs(text: &str, swapped: bool) -> anyhow::Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| anyhow::anyhow!("systemctl list-jobs output, line {}: {e}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with("No jobs") || is_legend(line) {
            continue;
        }
        if let Some((label, rest)) = relation(line) {
            let other = job_ref(rest).map_err(at)?;
            let job = jobs
                .last_mut()
                .ok_or_else(|| at(format!("relation before any job: {line:?}")))?;
            let waits_for_other = (label == Label::WaitingFor) != swapped;
            if waits_for_other {
                job.waiting_for.push(other);
            } else {
                job.blocking.push(other);
            }
            continue;
        }
        jobs.push(job_row(line).map_err(at)?);
    }
    Ok(jobs)
}

/// The header (`JOB UNIT TYPE STATE`) and footer (`11 jobs listed.`) that
/// `list-jobs` prints without `--no-legend`.
fn is_legend(line: &str) -> bool {
    line.split_whitespace().collect::<Vec<_>>() == ["JOB", "UNIT", "TYPE", "STATE"]
        || (line.ends_with(" listed.") && line.contains(" job"))
}

#[derive(Debug, PartialEq, Eq)]
enum Label {
    WaitingFor,
    Blocking,
}

/// A relation row: its label and the text after `job `.
fn relation(line: &str) -> Option<(Label, &str)> {
    for (marker, label) in [
        ("waiting for job ", Label::WaitingFor),
        ("blocking job ", Label::Blocking),
    ] {
        if let Some(at) = line.find(marker) {
            return Some((label, &line[at + marker.len()..]));
        }
    }
    None
}

/// `124 (b.service/start)` possibly followed by table filler (`-     -`).
fn job_ref(text: &str) -> Result<JobRef, String> {
    let (id, rest) = text
        .split_once(' ')
        .ok_or_else(|| format!("no job id in {text:?}"))?;
    let id = id.parse().map_err(|_| format!("bad job id {id:?}"))?;
    let inner = rest
        .trim_start()
        .strip_prefix('(')
        .and_then(|r| r.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or_else(|| format!("no (unit/type) in {text:?}"))?;
    let (unit, job_type) = inner
        .rsplit_once('/')
        .ok_or_else(|| format!("no unit/type in {inner:?}"))?;
    Ok(JobRef {
        id,
        unit: unit.to_owned(),
        job_type: job_type.to_owned(),
    })
}

/// `123 a.service start running`.
fn job_row(line: &str) -> Result<Job, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, unit, job_type, state] = fields.as_slice() else {
        return Err(format!("expected `ID UNIT TYPE STATE`, got {line:?}"));
    };
    Ok(Job {
        id: id
            .parse()
            .map_err(|_| format!("bad job id {id:?} in {line:?}"))?,
        unit: (*unit).to_owned(),
        job_type: (*job_type).to_owned(),
        state: (*state).to_owned(),
        waiting_for: Vec::new(),
        blocking: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape from systemd's own PR #32450 description (pre-fix labels): check-oil is
    /// `Before=engine-ready.target`, so engine-ready waits for check-oil.
    const PRE_FIX: &str = "\
93  check-oil.service                                 start running
└─      waiting for job 94 (engine-ready.target/start)   -     -
94  engine-ready.target                               start waiting
└─      blocking job 93 (check-oil.service/start)        -     -
";

    fn r(id: u32, unit: &str) -> JobRef {
        JobRef {
            id,
            unit: unit.into(),
            job_type: "start".into(),
        }
    }

    #[test]
    fn swapped_labels_are_turned_into_the_true_relation() {
        let jobs = parse_jobs(PRE_FIX, true).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].id, jobs[0].state.as_str()), (93, "running"));
        assert_eq!(jobs[0].blocking, [r(94, "engine-ready.target")]);
        assert!(jobs[0].waiting_for.is_empty());
        assert_eq!(jobs[1].waiting_for, [r(93, "check-oil.service")]);
        assert!(jobs[1].blocking.is_empty());
    }

    #[test]
    fn true_labels_are_taken_as_written_and_swap_back() {
        let mut jobs = parse_jobs(PRE_FIX, false).unwrap();
        assert_eq!(jobs[0].waiting_for, [r(94, "engine-ready.target")]);
        assert_eq!(jobs[1].blocking, [r(93, "check-oil.service")]);
        swap_relations(&mut jobs);
        assert_eq!(jobs, parse_jobs(PRE_FIX, true).unwrap());
    }

    #[test]
    fn a_running_job_printed_waiting_means_swapped() {
        let jobs = parse_jobs(PRE_FIX, false).unwrap();
        assert_eq!(labels_swapped(&jobs), Some(true));
        let oriented = orient(jobs, 252);
        assert_eq!(oriented, parse_jobs(PRE_FIX, true).unwrap());
        assert_eq!(labels_swapped(&oriented), Some(false));
        assert_eq!(labels_swapped(&[]), None);
    }

    #[test]
    fn version_fallback() {
        assert!(labels_swapped_for_version(251));
        assert!(!labels_swapped_for_version(252));
        assert!(labels_swapped_for_version(255));
        assert!(!labels_swapped_for_version(257));
    }

    #[test]
    fn empty_queue_is_no_jobs() {
        assert!(parse_jobs("", false).unwrap().is_empty());
        assert!(parse_jobs("No jobs running.\n", false).unwrap().is_empty());
    }

    #[test]
    fn garbage_names_the_line() {
        let err = parse_jobs("1 a.service start running\nwhat is this\n", false).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_jobs("└─ waiting for job 5 (x.service/start)\n", false).unwrap_err();
        assert!(err.to_string().contains("relation before any job"), "{err}");
    }
}
