//! The wait-for graph: who waits for whom, from systemd's job queue plus dependencies
//! systemd cannot see (a health gate polling a URL another unit serves), and the first
//! cycle in it with its path. The queue comes from the one systemd reader,
//! [`crate::guest::systemd`], with its relations already the right way round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::guest::systemd::Job;

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
    /// The graph of a job queue: an edge for every job that waits for another job.
    pub fn from_jobs(jobs: &[Job]) -> WaitForGraph {
        let mut g = WaitForGraph::default();
        let unit_of: BTreeMap<u32, &str> = jobs.iter().map(|j| (j.id, j.unit.as_str())).collect();
        for j in jobs {
            for other in &j.waiting_for {
                let unit = unit_of.get(&other.id).copied().unwrap_or(&other.unit);
                g.add(
                    &j.unit,
                    unit,
                    format!(
                        "job {} ({}) waits for job {} ({unit})",
                        j.id, j.unit, other.id
                    ),
                );
            }
            for other in &j.blocking {
                let unit = unit_of.get(&other.id).copied().unwrap_or(&other.unit);
                g.add(
                    unit,
                    &j.unit,
                    format!(
                        "job {} ({unit}) waits for job {} ({})",
                        other.id, j.id, j.unit
                    ),
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
