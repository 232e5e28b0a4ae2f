//! The wait-for graph: who waits for whom, from systemd's job queue plus dependencies
//! systemd cannot see (a health gate polling a URL another unit serves), and the first
//! cycle in it with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// One job of `systemctl list-jobs --after --before`, with its raw edge lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Job id.
    pub id: u32,
    /// The unit.
    pub unit: String,
    /// start, stop, ...
    pub job_type: String,
    /// running or waiting.
    pub state: String,
    /// Lines `waiting for job N (UNIT/TYPE)` as printed: (N, UNIT).
    pub waiting_for: Vec<(u32, String)>,
    /// Lines `blocking job N (UNIT/TYPE)` as printed: (N, UNIT).
    pub blocking: Vec<(u32, String)>,
}

/// What systemctl's `waiting for`/`blocking` labels mean. Their meaning has changed
/// between systemd releases (issue #24941 on v251, PR #32450 for v256), so the printed
/// words cannot be trusted by version alone. Recorded on Debian 12's v252
/// (tests/fixtures/ccci-model/dashboard-deadlock.list-jobs.txt) they are literal: the
/// running deploy-proxy job is "blocking" the waiting dashboard job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LabelSemantics {
    /// Under job J, "waiting for job X" means J waits for X.
    Literal,
    /// Under job J, "waiting for job X" means X waits for J.
    Swapped,
}

impl LabelSemantics {
    /// Decide from the queue itself: a `running` job waits for nothing, so a running job
    /// printed as "waiting for" another means the labels are swapped, and one printed as
    /// "blocking" others means they are literal. `None` when no running job has an edge.
    pub fn infer(jobs: &[Job]) -> Option<LabelSemantics> {
        let mut verdict = None;
        for j in jobs.iter().filter(|j| j.state == "running") {
            if !j.waiting_for.is_empty() {
                return Some(LabelSemantics::Swapped);
            }
            if !j.blocking.is_empty() {
                verdict = Some(LabelSemantics::Literal);
            }
        }
        verdict
    }

    /// [`LabelSemantics::infer`], or `Literal` (what systemd 252 prints) when the queue
    /// does not tell.
    pub fn detect(jobs: &[Job]) -> LabelSemantics {
        LabelSemantics::infer(jobs).unwrap_or(LabelSemantics::Literal)
    }
}

/// Parse `systemctl list-jobs --after --before` text. Lines that are neither a job nor an
/// edge (the header, "N jobs listed.", "No jobs running.") are skipped.
pub fn parse_list_jobs(text: &str) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start_matches(|c: char| {
            c.is_whitespace() || c == '└' || c == '─' || c == '├' || c == '│'
        });
        if let Some(rest) = trimmed.strip_prefix("waiting for job ") {
            if let (Some(edge), Some(job)) = (parse_edge(rest), jobs.last_mut()) {
                job.waiting_for.push(edge);
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("blocking job ") {
            if let (Some(edge), Some(job)) = (parse_edge(rest), jobs.last_mut()) {
                job.blocking.push(edge);
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [id, unit, job_type, state] = fields[..]
            && let Ok(id) = id.parse::<u32>()
        {
            jobs.push(Job {
                id,
                unit: unit.to_string(),
                job_type: job_type.to_string(),
                state: state.to_string(),
                waiting_for: Vec::new(),
                blocking: Vec::new(),
            });
        }
    }
    jobs
}

/// `N (UNIT/TYPE)   -   -` → (N, UNIT).
fn parse_edge(rest: &str) -> Option<(u32, String)> {
    let (id, tail) = rest.split_once(' ')?;
    let id = id.parse().ok()?;
    let inner = tail.trim_start().strip_prefix('(')?;
    let (inside, _) = inner.split_once(')')?;
    let unit = inside.rsplit_once('/').map_or(inside, |(u, _)| u);
    Some((id, unit.to_string()))
}

/// One "waits for" edge between units, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct WaitEdge {
    /// The unit that waits.
    pub waiter: String,
    /// The unit it waits for.
    pub waited: String,
    /// Why, for the report (`job 13 waits for job 12`, `health gate polls ...`).
    pub reason: String,
}

/// A directed graph of units: edge A → B when A waits for B.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WaitForGraph {
    edges: BTreeSet<WaitEdge>,
}

impl WaitForGraph {
    /// The graph of a job queue, reading the labels with `semantics`.
    pub fn from_jobs(jobs: &[Job], semantics: LabelSemantics) -> WaitForGraph {
        let mut g = WaitForGraph::default();
        let unit_of: BTreeMap<u32, &str> = jobs.iter().map(|j| (j.id, j.unit.as_str())).collect();
        for j in jobs {
            let (j_waits, waits_on_j) = match semantics {
                LabelSemantics::Literal => (&j.waiting_for, &j.blocking),
                LabelSemantics::Swapped => (&j.blocking, &j.waiting_for),
            };
            for (other, unit) in j_waits {
                let unit = unit_of.get(other).copied().unwrap_or(unit);
                g.add(
                    &j.unit,
                    unit,
                    format!("job {} ({}) waits for job {other} ({unit})", j.id, j.unit),
                );
            }
            for (other, unit) in waits_on_j {
                let unit = unit_of.get(other).copied().unwrap_or(unit);
                g.add(
                    unit,
                    &j.unit,
                    format!("job {other} ({unit}) waits for job {} ({})", j.id, j.unit),
                );
            }
        }
        g
    }

    /// Add an edge systemd cannot see, such as a health gate that polls a URL another
    /// unit serves: `add("deploy-proxy.service", "deploy-dashboard.service", "gate polls ...")`.
    pub fn add(&mut self, waiter: &str, waited: &str, reason: impl Into<String>) {
        let reason = reason.into();
        // One edge per (waiter, waited): the first reason stays (both sides of a job pair
        // print the same edge).
        if self
            .edges
            .iter()
            .any(|e| e.waiter == waiter && e.waited == waited)
        {
            return;
        }
        self.edges.insert(WaitEdge {
            waiter: waiter.to_string(),
            waited: waited.to_string(),
            reason,
        });
    }

    /// All edges, sorted.
    pub fn edges(&self) -> impl Iterator<Item = &WaitEdge> {
        self.edges.iter()
    }

    /// The first cycle (in sorted unit order, so the same graph gives the same answer),
    /// as the edges along it, starting from its smallest unit.
    pub fn find_cycle(&self) -> Option<Cycle> {
        let mut out: BTreeMap<&str, Vec<&WaitEdge>> = BTreeMap::new();
        for e in &self.edges {
            out.entry(e.waiter.as_str()).or_default().push(e);
        }
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let starts: Vec<&str> = out.keys().copied().collect();
        for start in starts {
            let mut path: Vec<&WaitEdge> = Vec::new();
            if let Some(c) = dfs(start, &out, &mut path, &mut done) {
                return Some(c);
            }
        }
        None
    }
}

fn dfs<'a>(
    node: &'a str,
    out: &BTreeMap<&'a str, Vec<&'a WaitEdge>>,
    path: &mut Vec<&'a WaitEdge>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Cycle> {
    if done.contains(node) {
        return None;
    }
    if let Some(pos) = path.iter().position(|e| e.waiter == node) {
        let mut edges: Vec<WaitEdge> = path[pos..].iter().map(|e| (*e).clone()).collect();
        let min = edges
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.waiter.cmp(&b.1.waiter))
            .map_or(0, |(i, _)| i);
        edges.rotate_left(min);
        return Some(Cycle { edges });
    }
    for e in out.get(node).map(Vec::as_slice).unwrap_or(&[]) {
        path.push(e);
        if let Some(c) = dfs(&e.waited, out, path, done) {
            return Some(c);
        }
        path.pop();
    }
    done.insert(node);
    None
}

/// A wait-for cycle: edges e0..en with e[i].waited == e[i+1].waiter and back to e0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cycle {
    /// The edges along the cycle.
    pub edges: Vec<WaitEdge>,
}

impl Cycle {
    /// The units along the cycle, the first repeated at the end.
    pub fn units(&self) -> Vec<&str> {
        let mut u: Vec<&str> = self.edges.iter().map(|e| e.waiter.as_str()).collect();
        if let Some(first) = self.edges.first() {
            u.push(first.waiter.as_str());
        }
        u
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.edges.first() else {
            return Ok(());
        };
        write!(f, "{}", first.waiter)?;
        for e in &self.edges {
            write!(f, " → {} [{}]", e.waited, e.reason)?;
        }
        Ok(())
    }
}
