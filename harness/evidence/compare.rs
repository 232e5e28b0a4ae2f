//! `coldboot compare OLD NEW`: what got worse between two bundles of a plan (the nightly
//! job runs it against the previous night's bundle).
//!
//! A regression is a pair that was as planned in every repetition and is not now (a
//! failure, an error or a flaky result), a pair of the old bundle that the new one did
//! not run, or a unit whose p50 or p95 time to active grew by more than both thresholds
//! (relative and absolute, so that noise on a fast unit or a small drift on a slow one
//! does not count). Pure, on loaded bundles.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::load::Bundle;
use super::timing::{Repeated, Stats, repeated};

/// How much slower a time to active may get before it counts as a regression: both must
/// be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Percent of the old figure.
    pub pct: f64,
    /// Seconds.
    pub secs: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            pct: 20.0,
            secs: 2.0,
        }
    }
}

/// A pair whose verdicts differ between the bundles.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerdictChange {
    /// The pair id (without repetition).
    pub id: String,
    /// Old verdict words, one per repetition (`not as planned` marked).
    pub old: Vec<String>,
    /// New verdict words.
    pub new: Vec<String>,
    /// Whether this change is a regression.
    pub regression: bool,
}

/// A unit whose time to active moved beyond the thresholds, either way.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimeChange {
    /// The pair id.
    pub id: String,
    /// `"PHASE UNIT"`.
    pub unit: String,
    /// `p50` or `p95`.
    pub figure: &'static str,
    /// Old seconds.
    pub old: f64,
    /// New seconds.
    pub new: f64,
    /// Whether it got slower (a regression) or faster.
    pub regression: bool,
}

/// Where a bundle ran, as far as its `run.json` says: a time to active is only
/// comparable between runs on like hosts under like load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Host {
    /// Cores, OS and kernel (`run.json`).
    pub host: Option<String>,
    /// The 1-minute load average when the run started.
    pub load_avg: Option<f64>,
    /// The accelerator the pairs ran on.
    pub accelerator: Option<String>,
    /// The guests' virtual CPUs (`-smp`).
    pub vcpus: Option<String>,
}

impl Host {
    fn of(b: &Bundle) -> Host {
        Host {
            host: b
                .invocation
                .as_ref()
                .map(|i| format!("{} cores, {}", i.cores, i.host)),
            load_avg: b.invocation.as_ref().and_then(|i| i.load_avg),
            accelerator: super::facts::accelerator(b).map(str::to_string),
            vcpus: super::facts::vcpus(b).map(str::to_string),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}; accelerator {}; {} virtual CPU(s) per guest; load average {} at the start",
            self.host.as_deref().unwrap_or("host not recorded"),
            self.accelerator.as_deref().unwrap_or("not recorded"),
            self.vcpus.as_deref().unwrap_or("not recorded"),
            self.load_avg
                .map_or("not recorded".to_string(), |l| format!("{l:.1}"))
        )
    }
}

/// Everything `compare` found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// The thresholds used.
    pub thresholds: Thresholds,
    /// Where the old bundle ran.
    pub old_host: Host,
    /// Where the new bundle ran.
    pub new_host: Host,
    /// Why the times may not be comparable (different accelerators, hosts or load), if so.
    pub caveats: Vec<String>,
    /// Pairs compared (in both bundles).
    pub compared: usize,
    /// Pairs whose verdicts changed.
    pub verdicts: Vec<VerdictChange>,
    /// Units that got slower or faster beyond the thresholds.
    pub times: Vec<TimeChange>,
    /// Pairs only the old bundle has: not run now, so a regression.
    pub only_old: Vec<String>,
    /// Pairs only the new bundle has.
    pub only_new: Vec<String>,
    /// How many regressions (exit 1 when any).
    pub regressions: usize,
}

fn words(g: &Repeated) -> Vec<String> {
    g.runs
        .iter()
        .map(|r| match r.as_planned {
            true => r.verdict.clone(),
            false => format!("{} (not as planned)", r.verdict),
        })
        .collect()
}

/// Whether `new` is slower than `old` by more than both thresholds.
pub fn slower(old: f64, new: f64, t: Thresholds) -> bool {
    new - old > t.secs && new > old * (1.0 + t.pct / 100.0)
}

/// Compare two loaded bundles.
pub fn compare(old: &Bundle, new: &Bundle, t: Thresholds) -> Comparison {
    let old_groups: BTreeMap<String, Repeated> = repeated(old)
        .into_iter()
        .map(|g| (g.id.clone(), g))
        .collect();
    let new_list = repeated(new);
    let (old_host, new_host) = (Host::of(old), Host::of(new));
    let mut caveats = Vec::new();
    if old_host.accelerator != new_host.accelerator {
        caveats.push("the accelerators differ: times to active are not comparable".to_string());
    }
    if old_host.vcpus != new_host.vcpus {
        caveats.push(format!(
            "the guests' virtual CPUs differ ({} against {}; `--jobs` decides them under TCG): times to active are not comparable",
            old_host.vcpus.as_deref().unwrap_or("not recorded"),
            new_host.vcpus.as_deref().unwrap_or("not recorded")
        ));
    }
    if old_host.host != new_host.host {
        caveats.push("the hosts differ".to_string());
    }
    if let (Some(a), Some(b)) = (old_host.load_avg, new_host.load_avg)
        && (a - b).abs() > 1.0
        && (a.max(b) / a.min(b).max(0.1)) > 1.5
    {
        caveats.push(format!(
            "the host's load differed ({a:.1} and {b:.1}): under TCG a guest runs at the \
             host's pace, so every time moves with it"
        ));
    }
    let mut c = Comparison {
        thresholds: t,
        old_host,
        new_host,
        caveats,
        compared: 0,
        verdicts: Vec::new(),
        times: Vec::new(),
        only_old: Vec::new(),
        only_new: Vec::new(),
        regressions: 0,
    };
    for n in &new_list {
        let Some(o) = old_groups.get(&n.id) else {
            c.only_new.push(n.id.clone());
            continue;
        };
        c.compared += 1;
        let (ow, nw) = (words(o), words(n));
        let mut ow_sorted = ow.clone();
        let mut nw_sorted = nw.clone();
        ow_sorted.sort();
        nw_sorted.sort();
        if ow_sorted != nw_sorted {
            c.verdicts.push(VerdictChange {
                id: n.id.clone(),
                old: ow,
                new: nw,
                regression: o.all_as_planned() && !n.all_as_planned(),
            });
        }
        for (unit, ns) in &n.units {
            let Some(os) = o.units.get(unit) else {
                continue;
            };
            for (figure, of, nf) in figures(os, ns) {
                let regression = slower(of, nf, t);
                if regression || slower(nf, of, t) {
                    c.times.push(TimeChange {
                        id: n.id.clone(),
                        unit: unit.clone(),
                        figure,
                        old: of,
                        new: nf,
                        regression,
                    });
                }
            }
        }
    }
    c.only_old = old_groups
        .keys()
        .filter(|id| !new_list.iter().any(|n| &n.id == *id))
        .cloned()
        .collect();
    c.regressions = c.verdicts.iter().filter(|v| v.regression).count()
        + c.times.iter().filter(|x| x.regression).count()
        + c.only_old.len();
    c
}

fn figures(o: &Stats, n: &Stats) -> [(&'static str, f64, f64); 2] {
    [("p50", o.p50, n.p50), ("p95", o.p95, n.p95)]
}

/// A section listing pair ids, when there are any.
fn id_list(s: &mut String, title: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let _ = writeln!(s, "{title}\n");
    for id in ids {
        let _ = writeln!(s, "- `{id}`");
    }
    s.push('\n');
}

/// `compare.md`: the tables a reader of the nightly job's summary needs.
pub fn markdown(c: &Comparison, old_name: &str, new_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# coldboot compare: `{old_name}` → `{new_name}`\n\n**{}** — {} pairs compared; \
         thresholds: slower by more than {}% and more than {} s.\n",
        match c.regressions {
            0 => "no regression".to_string(),
            n => format!("{n} regression(s)"),
        },
        c.compared,
        c.thresholds.pct,
        c.thresholds.secs
    );
    let _ = writeln!(
        s,
        "- before: {}\n- now: {}\n",
        c.old_host.describe(),
        c.new_host.describe()
    );
    for caveat in &c.caveats {
        let _ = writeln!(s, "> **Caveat:** {caveat}.\n");
    }
    if !c.verdicts.is_empty() {
        let _ = writeln!(
            s,
            "## Verdicts that changed\n\n| pair | before | now | |\n|---|---|---|---|"
        );
        for v in &c.verdicts {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} |",
                v.id,
                v.old.join(", "),
                v.new.join(", "),
                if v.regression { "**regression**" } else { "" }
            );
        }
        s.push('\n');
    }
    id_list(
        &mut s,
        "## Not run now (a regression: not checked)",
        &c.only_old,
    );
    id_list(&mut s, "## New pairs", &c.only_new);
    if !c.times.is_empty() {
        let _ = writeln!(
            s,
            "## Time to active beyond the thresholds\n\n| pair | phase, unit | figure | before | now | change | |\n|---|---|---|---|---|---|---|"
        );
        for x in &c.times {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {:.1} s | {:.1} s | {:+.1} s ({:+.0}%) | {} |",
                x.id,
                x.unit,
                x.figure,
                x.old,
                x.new,
                x.new - x.old,
                if x.old > 0.0 {
                    (x.new / x.old - 1.0) * 100.0
                } else {
                    0.0
                },
                if x.regression { "**slower**" } else { "faster" }
            );
        }
        s.push('\n');
    }
    if c.verdicts.is_empty() && c.times.is_empty() && c.only_old.is_empty() {
        s.push_str("Same verdicts, and no unit's time to active moved beyond the thresholds.\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slower_needs_both_thresholds() {
        let t = Thresholds::default();
        assert!(!slower(1.0, 2.5, t), "150% but only 1.5 s");
        assert!(!slower(30.0, 33.0, t), "3 s but only 10%");
        assert!(slower(30.0, 37.0, t));
        assert!(!slower(37.0, 30.0, t));
    }
}
