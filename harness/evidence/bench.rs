//! `coldboot bench`'s figures, computed from a bundle the benchmark just wrote (and the
//! resource use the command measured around it). Pure: every figure here can be
//! recomputed from a recorded bundle.

use crate::check::timeline::RunEvent;
use std::collections::BTreeMap;

use serde::Serialize;

use super::bundle;
use super::load::Bundle;
use super::timing::Stats;
use crate::check::ExpectationOutcome;
use crate::scenario::Source;

/// One row of the benchmark's table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// The figures over the samples (seconds, or MiB for memory), if any were taken.
    pub stats: Option<Stats>,
    /// The unit the stats are in (`s`, `MiB`).
    pub unit: &'static str,
    /// The target, in words, and whether it is met (`None`: no target, or not measured).
    pub target: String,
    /// Whether the target is met (`None` when there is no target or no sample).
    pub met: Option<bool>,
    /// How the figure was taken, or why it was not.
    pub note: String,
}

/// A decision the runner timed: the guest's time of the change and the harness's.
fn latency(o: &ExpectationOutcome) -> Option<f64> {
    o.latency().map(|d| d.as_secs_f64())
}

/// Where an outcome's decision came from, as its kind declares; `None` for outcomes
/// recorded before schema 3.
fn source(o: &ExpectationOutcome) -> Option<Source> {
    o.kind.as_ref().map(|k| k.spec().source())
}

/// Verdict latency of unit and journal decisions, and of HTTP probes apart.
pub fn latencies(bundle: &Bundle) -> (Vec<f64>, Vec<f64>) {
    let mut systemd = Vec::new();
    let mut http = Vec::new();
    for p in &bundle.pairs {
        for o in &p.report.outcomes {
            let Some(l) = latency(o) else { continue };
            match source(o) {
                Some(Source::Probe) => http.push(l),
                Some(Source::Pid1) => systemd.push(l),
                Some(Source::WaitFor | Source::Read | Source::Window) | None => {}
            }
        }
    }
    (systemd, http)
}

/// Unit and journal decision latencies split by when the change happened: after the
/// journal stream of its boot caught up (the harness was watching live), or while the
/// stream was still replaying the boot's history (no decision could be faster than the
/// replay, nor before SSH was up). A change belongs to the boot whose QEMU started last
/// before it; needs that boot's "journal caught up" event, so a pair recorded without
/// them counts nothing here.
pub fn latencies_live(dir: &std::path::Path, bundle: &Bundle) -> (Vec<f64>, Vec<f64>) {
    let (mut live, mut replaying) = (Vec::new(), Vec::new());
    for p in &bundle.pairs {
        let events = read_timeline(&dir.join(&p.folder).join(super::bundle::TIMELINE));
        // Each boot runs from its QEMU start to the next one's; its stream caught up at
        // the first "journal caught up" within that span.
        let starts: Vec<f64> = p.report.boots.iter().map(|b| b.at_secs).collect();
        let caught: Vec<f64> = events
            .iter()
            .filter(|(e, _)| *e == RunEvent::JournalCaughtUp)
            .map(|(_, t)| *t)
            .collect();
        let caught_up_of = |boot: usize| {
            let from = starts[boot];
            let until = starts.get(boot + 1).copied().unwrap_or(f64::INFINITY);
            caught
                .iter()
                .copied()
                .filter(|c| *c >= from && *c < until)
                .reduce(f64::min)
        };
        for o in &p.report.outcomes {
            let (Some(l), Some(changed)) = (latency(o), o.changed_at) else {
                continue;
            };
            if source(o) != Some(Source::Pid1) {
                continue;
            }
            let changed = changed.as_secs_f64();
            // The boot the change belongs to: the last one QEMU started before it.
            let Some(boot) = starts.iter().rposition(|s| *s <= changed) else {
                continue;
            };
            let Some(caught_up) = caught_up_of(boot) else {
                continue;
            };
            if changed >= caught_up {
                live.push(l);
            } else {
                replaying.push(l);
            }
        }
    }
    (live, replaying)
}

/// The moment an outcome awaited: the guest's change, or for a window the scenario asks
/// the harness to watch (`stable:`) its end, which is planned time, not overhead.
fn awaited_moment(o: &ExpectationOutcome) -> Option<std::time::Duration> {
    match source(o) {
        Some(Source::Window) => o.decided_at,
        _ => o.changed_at,
    }
}

/// Per pair: wall time minus the guest's own time to its last awaited change (on the
/// run clock), the part of the pair that the harness adds.
pub fn overheads(bundle: &Bundle) -> Vec<f64> {
    bundle
        .pairs
        .iter()
        .filter_map(|p| {
            let last = p
                .report
                .outcomes
                .iter()
                .filter_map(awaited_moment)
                .max()?
                .as_secs_f64();
            Some((p.report.duration_secs - last).max(0.0))
        })
        .collect()
}

/// Per pair: the guest's own time to its last awaited change (a watched window's end
/// included); their sum is the floor a
/// plan's wall time can reach on one VM at a time.
pub fn guest_times(bundle: &Bundle) -> Vec<f64> {
    bundle
        .pairs
        .iter()
        .filter_map(|p| {
            p.report
                .outcomes
                .iter()
                .filter_map(awaited_moment)
                .max()
                .map(|d| d.as_secs_f64())
        })
        .collect()
}

/// Per pair's first boot with a recorder: seconds from PID 1 entering userspace to the
/// recorder's relay saying hello, when observation began (`recorder-boot-1.jsonl`'s
/// summary line).
pub fn observation_starts(dir: &std::path::Path, b: &Bundle) -> Vec<f64> {
    b.pairs
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(dir.join(p.link(&bundle::recorder_file(1)))).ok()?;
            crate::check::report::RecorderSummary::of_file(&text)?.observation_start_s()
        })
        .collect()
}

/// Seconds from the wait cycle's formation to its being named, per pair that confirmed one.
pub fn cycle_named(bundle: &Bundle) -> Vec<f64> {
    bundle
        .pairs
        .iter()
        .flat_map(|p| p.report.outcomes.iter())
        .filter(|o| source(o) == Some(Source::WaitFor) && !o.held)
        .filter_map(latency)
        .collect()
}

/// The unit a unit outcome awaited.
fn awaited_unit(o: &ExpectationOutcome) -> Option<&str> {
    o.kind.as_ref()?.awaited().map(|u| u.unit.as_str())
}

/// The same changes timed twice: for every unit outcome whose change the guest dated,
/// the runner's latency and the naive poller's (`baseline-boot-N.json`: unit → when a
/// poll first saw it settled, on the pair's clock). `polls` maps a run folder to the
/// poller's sightings over its boots. Only changes both saw count.
pub fn baseline_pairs(
    bundle: &Bundle,
    polls: &BTreeMap<String, Vec<BTreeMap<String, f64>>>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut ours, mut naive) = (Vec::new(), Vec::new());
    for p in &bundle.pairs {
        let Some(boots) = polls.get(&p.folder) else {
            continue;
        };
        for o in &p.report.outcomes {
            let (Some(unit), Some(changed), Some(l)) = (awaited_unit(o), o.changed_at, latency(o))
            else {
                continue;
            };
            let changed = changed.as_secs_f64();
            let seen = boots
                .iter()
                .filter_map(|b| b.get(unit))
                .copied()
                .filter(|at| *at >= changed)
                .reduce(f64::min);
            if let Some(at) = seen {
                ours.push(l);
                naive.push(at - changed);
            }
        }
    }
    (ours, naive)
}

/// Where a pair's time goes, per phase of its first boot, in seconds: one list of
/// samples per phase, in the order a pair lives them, over every pair of the bundle
/// that recorded the phase. Read from each pair's `timeline.jsonl` (the harness's
/// clock), its boot records, and PID 1's "Startup finished" entry in the boot's journal
/// (the guest's own account of kernel, initrd and userspace).
pub fn phases(dir: &std::path::Path, bundle: &Bundle) -> Vec<(&'static str, Vec<f64>)> {
    let names = [
        "pair start → QEMU start (base image checksum)",
        "QEMU start → SSH up",
        "  guest: kernel",
        "  guest: initrd",
        "  guest: userspace to the default target",
        "SSH up → watching (clock, journal replay, unit types)",
        "watching → last decision",
        "last decision → evidence collected",
        "evidence collected → verdict (teardown, base image checksum)",
    ];
    let mut out: Vec<(&'static str, Vec<f64>)> = names.iter().map(|n| (*n, Vec::new())).collect();
    for p in &bundle.pairs {
        let folder = dir.join(&p.folder);
        let events = read_timeline(&folder.join(super::bundle::TIMELINE));
        let first = |event: RunEvent| events.iter().find(|(e, _)| *e == event).map(|(_, t)| *t);
        let mut put = |i: usize, v: Option<f64>| {
            if let Some(v) = v.filter(|v| *v >= 0.0) {
                out[i].1.push(v);
            }
        };
        let boot = p.report.boots.first();
        put(0, boot.map(|b| b.at_secs));
        put(1, boot.map(|b| b.to_ssh_secs));
        if let Some(t) = startup_finished(&folder.join(super::bundle::journal_file(1))) {
            put(2, t.kernel_us.map(|us| us as f64 / 1e6));
            put(3, t.initrd_us.map(|us| us as f64 / 1e6));
            put(4, t.userspace_us.map(|us| us as f64 / 1e6));
        }
        let ssh = first(RunEvent::SshUp);
        let watching = first(RunEvent::Watching);
        put(5, ssh.zip(watching).map(|(a, b)| b - a));
        // The first boot's last decision: before a second boot's QEMU start, if any.
        let second = p.report.boots.get(1).map_or(f64::INFINITY, |b| b.at_secs);
        let last = p
            .report
            .outcomes
            .iter()
            .filter_map(|o| o.decided_at)
            .map(|d| d.as_secs_f64())
            .filter(|d| *d < second)
            .reduce(f64::max);
        put(6, watching.zip(last).map(|(a, b)| b - a));
        let collected = events
            .iter()
            .rev()
            .find(|(e, _)| *e == RunEvent::EvidenceCollected)
            .map(|(_, t)| *t);
        put(7, last.zip(collected).map(|(a, b)| b - a));
        put(8, collected.map(|c| p.report.duration_secs - c));
    }
    out
}

/// `(event, t_secs)` of a pair's `timeline.jsonl`; unreadable lines, and events this
/// version does not know, are skipped.
fn read_timeline(path: &std::path::Path) -> Vec<(RunEvent, f64)> {
    crate::check::timeline::parse(&std::fs::read_to_string(path).unwrap_or_default())
        .into_iter()
        .filter_map(|e| Some((e.event?, e.t_secs)))
        .collect()
}

/// PID 1's "Startup finished in ..." in a recorded boot journal, parsed.
fn startup_finished(path: &std::path::Path) -> Option<crate::guest::systemd::BootTime> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(crate::guest::systemd::journal::Entry::parse)
        .find(|e| e.finishes_startup())
        .and_then(|e| {
            // The journal's sentence ends with a full stop; systemd-analyze's does not.
            crate::guest::systemd::parse_boot_time(e.message.trim_end_matches('.'))
                .ok()
                .flatten()
        })
}

/// The phase table, as Markdown.
pub fn phases_markdown(phases: &[(&'static str, Vec<f64>)]) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "\n## Where a pair's time goes (first boot)\n\n| phase | n | median | worst |\n|---|---|---|---|\n",
    );
    for (name, samples) in phases {
        match Stats::of(samples) {
            Some(st) => {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {:.2} s | {:.2} s |",
                    st.n, st.p50, st.max
                );
            }
            None => {
                let _ = writeln!(s, "| {name} | 0 | not recorded | — |");
            }
        }
    }
    s
}

/// A figure with a "median at most X" target.
pub fn figure(
    name: &str,
    samples: &[f64],
    unit: &'static str,
    target: Option<(&str, f64)>,
    note: &str,
) -> Figure {
    let stats = Stats::of(samples);
    let met = match (target, stats) {
        (Some((_, limit)), Some(s)) => Some(s.p50 <= limit),
        _ => None,
    };
    Figure {
        name: name.to_string(),
        stats,
        unit,
        target: target.map(|(t, _)| t.to_string()).unwrap_or_default(),
        met,
        note: note.to_string(),
    }
}

/// A figure with both a median and a 95th-percentile target (nearest rank: with fewer
/// than 20 samples the 95th percentile is the worst).
pub fn figure_p95(
    name: &str,
    samples: &[f64],
    unit: &'static str,
    target: (&str, f64, f64),
    note: &str,
) -> Figure {
    let (words, p50, p95) = target;
    let mut f = figure(name, samples, unit, Some((words, p50)), note);
    f.met = f.stats.map(|s| s.p50 <= p50 && s.p95 <= p95);
    f
}

/// The table, as Markdown.
pub fn markdown(figures: &[Figure], context: &BTreeMap<String, String>) -> String {
    use std::fmt::Write;
    let mut s = String::from("# coldboot bench\n\n");
    for (k, v) in context {
        let _ = writeln!(s, "- {k}: {v}");
    }
    s.push_str(
        "\n| figure | n | median | p95 | worst | target | met | how |\n|---|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let (n, p50, p95, max) = match &f.stats {
            Some(st) => (
                st.n.to_string(),
                format!("{:.2} {}", st.p50, f.unit),
                format!("{:.2} {}", st.p95, f.unit),
                format!("{:.2} {}", st.max, f.unit),
            ),
            None => ("0".into(), "not measured".into(), "—".into(), "—".into()),
        };
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            s,
            "| {} | {n} | {p50} | {p95} | {max} | {} | {met} | {} |",
            f.name, f.target, f.note
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_the_reference_run() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference-run");
        let bundle = super::super::load_bundle(&dir).expect("the reference run loads");
        let (systemd, http) = latencies(&bundle);
        assert!(systemd.len() >= 10, "{systemd:?}");
        assert!(!http.is_empty());
        assert!(systemd.iter().all(|l| *l >= 0.0 && *l < 60.0));
        let named = cycle_named(&bundle);
        assert_eq!(named.len(), 1, "the before pair's cycle");
        assert!(named[0] > 5.0 && named[0] < 60.0, "{named:?}");
        let over = overheads(&bundle);
        assert_eq!(over.len(), bundle.pairs.len());
        let guest = guest_times(&bundle);
        for ((o, g), p) in over.iter().zip(&guest).zip(&bundle.pairs) {
            assert!((o + g - p.report.duration_secs).abs() < 1e-6);
        }
        // Every pair's first boot had the recorder: relay up a few seconds into userspace.
        let starts = observation_starts(&dir, &bundle);
        assert_eq!(starts.len(), bundle.pairs.len());
        assert!(starts.iter().all(|s| *s > 0.5 && *s < 30.0), "{starts:?}");
        let f = figure("x", &[0.1, 0.3, 0.2], "s", Some(("≤ 0.2 s", 0.2)), "");
        assert_eq!(f.met, Some(true));
        let f = figure("x", &[], "s", Some(("≤ 0.2 s", 0.2)), "");
        assert_eq!((f.met, f.stats), (None, None));
        assert!(markdown(&[f], &BTreeMap::new()).contains("not measured"));
    }

    #[test]
    fn phases_of_the_reference_run() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference-run");
        let bundle = super::super::load_bundle(&dir).expect("the reference run loads");
        let phases = phases(&dir, &bundle);
        let get = |prefix: &str| {
            &phases
                .iter()
                .find(|(n, _)| n.starts_with(prefix))
                .expect("a phase")
                .1
        };
        let n = bundle.pairs.len();
        assert_eq!(get("QEMU start → SSH up").len(), n);
        assert_eq!(get("SSH up → watching").len(), n);
        // The guest's own account: every pair whose boot finished starting up (the
        // deadlocked before pair's did not).
        let kernel = get("  guest: kernel");
        assert!(!kernel.is_empty() && kernel.len() < n, "{kernel:?}");
        assert!(kernel.iter().all(|k| *k > 0.5 && *k < 60.0), "{kernel:?}");
        // The guest reached its default target before SSH answered... or soon after.
        for (to_ssh, user) in get("QEMU start → SSH up")
            .iter()
            .zip(get("  guest: userspace"))
        {
            assert!(*user < to_ssh + 60.0, "{user} {to_ssh}");
        }
        // Every decision is either on a change watched live or on one the stream was
        // still replaying (recorded with the "journal caught up" events).
        let (live, replaying) = latencies_live(&dir, &bundle);
        assert_eq!(live.len() + replaying.len(), latencies(&bundle).0.len());
        assert!(!live.is_empty(), "{live:?} {replaying:?}");
        let md = phases_markdown(&phases);
        assert!(md.contains("| watching → last decision |"), "{md}");
    }
}
