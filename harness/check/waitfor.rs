//! The wait-for graph: who waits for whom, from systemd's job queue plus dependencies
//! systemd cannot see (a health gate polling a URL another unit serves), and the first
//! cycle in it with its path. The queue comes from the one systemd reader,
//! [`crate::guest::systemd`], with its relations already the right way round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::guest::systemd::Job;

/// Why one unit waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// A queued job waits for another job (systemd's own queue).
    Job,
    /// A start polls a URL that another unit serves (a declared health gate).
    Gate,
    /// `After=`/`Before=` in the unit files (static analysis).
    Ordering,
    /// `Requires=`/`Wants=`/`BindsTo=`/`WantedBy=` in the unit files (static analysis).
    Requirement,
}

impl EdgeKind {
    /// The word used in reports and dot files.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Job => "job",
            EdgeKind::Gate => "gate",
            EdgeKind::Ordering => "ordering",
            EdgeKind::Requirement => "requirement",
        }
    }
}

/// One "waits for" edge between units, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct WaitEdge {
    /// The unit that waits.
    pub waiter: String,
    /// The unit it waits for.
    pub waited: String,
    /// What kind of dependency.
    pub kind: EdgeKind,
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
                    EdgeKind::Job,
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
                    EdgeKind::Job,
                    format!(
                        "job {} ({unit}) waits for job {} ({})",
                        other.id, j.id, j.unit
                    ),
                );
            }
        }
        g
    }

    /// Add an edge, such as one systemd cannot see (a health gate that polls a URL
    /// another unit serves). The first edge between two units stays.
    pub fn add(&mut self, waiter: &str, waited: &str, kind: EdgeKind, reason: impl Into<String>) {
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
            kind,
            reason,
        });
    }

    /// All edges, sorted.
    pub fn edges(&self) -> impl Iterator<Item = &WaitEdge> {
        self.edges.iter()
    }

    /// Units that wait, directly or through others, for any unit of `targets`
    /// (the targets themselves not included unless they wait on each other).
    pub fn waiting_on(&self, targets: &BTreeSet<String>) -> BTreeSet<String> {
        let mut found: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<&str> = targets.iter().map(String::as_str).collect();
        while let Some(node) = frontier.pop() {
            for e in self.edges.iter().filter(|e| e.waited == node) {
                if found.insert(e.waiter.clone()) {
                    frontier.push(&e.waiter);
                }
            }
        }
        found
    }

    /// The graph in Graphviz dot, edges styled by kind and those of `highlight` in red.
    pub fn to_dot(&self, name: &str, highlight: Option<&Cycle>) -> String {
        let mut out = format!(
            "digraph {:?} {{\n  rankdir=LR;\n  node [shape=box];\n",
            name
        );
        for e in &self.edges {
            let on_cycle = highlight.is_some_and(|c| {
                c.edges
                    .iter()
                    .any(|x| x.waiter == e.waiter && x.waited == e.waited)
            });
            let style = match e.kind {
                EdgeKind::Job => "solid",
                EdgeKind::Gate => "dashed",
                EdgeKind::Ordering => "solid",
                EdgeKind::Requirement => "dotted",
            };
            let color = if on_cycle { "red" } else { "black" };
            out.push_str(&format!(
                "  {:?} -> {:?} [label={:?}, style={style}, color={color}];\n",
                e.waiter,
                e.waited,
                format!("{}: {}", e.kind.as_str(), e.reason)
            ));
        }
        out.push_str("}\n");
        out
    }

    /// Every elementary cycle, each once, at most `limit` of them (sorted by their
    /// smallest unit). A cycle is found from its smallest unit, through larger ones only.
    pub fn all_cycles(&self, limit: usize) -> Vec<Cycle> {
        let mut out: BTreeMap<&str, Vec<&WaitEdge>> = BTreeMap::new();
        for e in &self.edges {
            out.entry(e.waiter.as_str()).or_default().push(e);
        }
        // Only edges inside a strongly connected component can be on a cycle; keeping to
        // them keeps the search from walking every path of a large acyclic graph.
        let scc = components(&out);
        out.iter_mut()
            .for_each(|(n, es)| es.retain(|e| scc.get(*n) == scc.get(e.waited.as_str())));
        let mut found = Vec::new();
        let starts: Vec<&str> = out.keys().copied().collect();
        for start in starts {
            let mut path: Vec<&WaitEdge> = Vec::new();
            let mut on_path: BTreeSet<&str> = BTreeSet::from([start]);
            elementary(
                start,
                start,
                &out,
                &mut path,
                &mut on_path,
                &mut found,
                limit,
            );
            if found.len() >= limit {
                break;
            }
        }
        found
    }

    /// The first cycle (in sorted unit order, so the same graph gives the same answer),
    /// as the edges along it, starting from a gate edge if it has one, else from its
    /// smallest unit.
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
        return Some(Cycle::new(
            path[pos..].iter().map(|e| (*e).clone()).collect(),
        ));
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

/// Tarjan's strongly connected components: node → component number.
fn components<'a>(out: &BTreeMap<&'a str, Vec<&'a WaitEdge>>) -> BTreeMap<&'a str, usize> {
    struct T<'a, 'g> {
        out: &'g BTreeMap<&'a str, Vec<&'a WaitEdge>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        comp: BTreeMap<&'a str, usize>,
        next: usize,
        comps: usize,
    }
    impl<'a> T<'a, '_> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            let edges: Vec<&'a str> = self
                .out
                .get(v)
                .map(|es| es.iter().map(|e| e.waited.as_str()).collect())
                .unwrap_or_default();
            for w in edges {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    self.comp.insert(w, self.comps);
                    if w == v {
                        break;
                    }
                }
                self.comps += 1;
            }
        }
    }
    let mut t = T {
        out,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        comp: BTreeMap::new(),
        next: 0,
        comps: 0,
    };
    for v in out.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.comp
}

fn elementary<'a>(
    start: &'a str,
    node: &'a str,
    out: &BTreeMap<&'a str, Vec<&'a WaitEdge>>,
    path: &mut Vec<&'a WaitEdge>,
    on_path: &mut BTreeSet<&'a str>,
    found: &mut Vec<Cycle>,
    limit: usize,
) {
    for e in out.get(node).map(Vec::as_slice).unwrap_or(&[]) {
        if found.len() >= limit {
            return;
        }
        let next = e.waited.as_str();
        if next == start {
            path.push(e);
            found.push(Cycle::new(path.iter().map(|e| (*e).clone()).collect()));
            path.pop();
        } else if next > start && !on_path.contains(next) {
            path.push(e);
            on_path.insert(next);
            elementary(start, next, out, path, on_path, found, limit);
            on_path.remove(next);
            path.pop();
        }
    }
}

/// A wait-for cycle: edges e0..en with e[i].waited == e[i+1].waiter and back to e0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cycle {
    /// The edges along the cycle.
    pub edges: Vec<WaitEdge>,
}

impl Cycle {
    /// A cycle from its edges in order, rotated to start from the edge systemd cannot
    /// see (a gate), which is where a reader looks first, else from the smallest unit,
    /// so one cycle always reads the same way.
    pub fn new(mut edges: Vec<WaitEdge>) -> Cycle {
        let first = edges
            .iter()
            .enumerate()
            .min_by(|a, b| {
                (a.1.kind != EdgeKind::Gate, &a.1.waiter)
                    .cmp(&(b.1.kind != EdgeKind::Gate, &b.1.waiter))
            })
            .map_or(0, |(i, _)| i);
        edges.rotate_left(first);
        Cycle { edges }
    }

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
