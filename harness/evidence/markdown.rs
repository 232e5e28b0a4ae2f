//! `report.md`: the verdict table, then one section per milestone (as the plans describe
//! them), each claim linking to the file in the bundle that shows it (links are relative
//! to the bundle's top). Everything is read from the outcomes' recorded data (their kinds,
//! ids and figures), never from their sentences.

use std::fmt::Write as _;

use super::bundle;
use super::facts;
use super::junit::expected_word;
use super::load::{Bundle, PairEvidence};
use crate::check::{ExpectationOutcome, Verdict};
use crate::guest::systemd::UnitState;
use crate::scenario::{Layout, OrderExpectation, Section};

/// Render `report.md`. `name` is the bundle's folder name.
pub fn render(bundle: &Bundle, name: &str) -> String {
    let mut s = String::new();
    header(&mut s, bundle, name);
    verdict_table(&mut s, bundle);
    s.push_str(&super::timing::markdown(bundle));
    let _ = writeln!(s, "\n![timeline](timeline.svg)\n");
    let _ = writeln!(
        s,
        "*Each bar runs from when a unit's start began to when it became active or failed, on \
         the guest's monotonic clock of the pair's first boot ([timeline.svg](timeline.svg)).*\n"
    );
    for section in facts::sections(bundle) {
        milestone_section(&mut s, bundle, &section);
    }
    pairs(&mut s, bundle);
    s
}

fn header(s: &mut String, bundle: &Bundle, name: &str) {
    let c = facts::counts(bundle);
    let _ = writeln!(s, "# coldboot report: {name}\n");
    if let Some(inv) = &bundle.invocation {
        let _ = writeln!(
            s,
            "Command: `{}`, on a host with {} cores ({}).\n",
            inv.command, inv.cores, inv.host
        );
    }
    let date = facts::finished_unix(bundle)
        .map(facts::rfc3339)
        .unwrap_or_else(|| "unknown".to_string());
    let _ = writeln!(
        s,
        "Harness {}, accelerator {}{}, finished {date}. {} pairs: {} pass, {} reproduced, {} fail, {} error; \
         **{} as planned, {} not**{}.\n",
        facts::harness_version(bundle),
        facts::accelerator(bundle).unwrap_or("unknown"),
        facts::vcpus(bundle)
            .map(|n| format!(" ({n} virtual CPU(s) per guest)"))
            .unwrap_or_default(),
        c.total,
        c.pass,
        c.reproduced,
        c.fail,
        c.error,
        c.as_planned,
        c.not_as_planned,
        if c.incomplete > 0 {
            format!(" ({} run folders incomplete)", c.incomplete)
        } else {
            String::new()
        }
    );
}

fn verdict_table(s: &mut String, bundle: &Bundle) {
    let scenarios = facts::scenarios(bundle);
    let _ = writeln!(s, "## Verdicts\n");
    let _ = writeln!(
        s,
        "Targets by scenarios. Each cell gives the verdict (✓ as the plan expects, ✗ not), then \
         the scenario's focus unit and the time from QEMU start to its awaited state (or, when it \
         did not get there, to the harness's decision).\n"
    );
    let _ = writeln!(s, "| target | {} |", scenarios.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(scenarios.len()));
    for target in facts::targets(bundle) {
        let cells: Vec<String> = scenarios
            .iter()
            .map(|sc| match facts::pair(bundle, target, sc) {
                Some(p) => cell(p),
                None => "—".to_string(),
            })
            .collect();
        let _ = writeln!(s, "| **{}** | {} |", cell_text(target), cells.join(" | "));
    }
}

fn cell(p: &PairEvidence) -> String {
    let mark = if p.report.matches_plan { "✓" } else { "✗" };
    let mut c = format!(
        "[**{}**]({}) {mark}",
        p.report.verdict.word(),
        p.link(bundle::VERDICT)
    );
    if let Some(a) = facts::awaited(p) {
        let at = a.secs.map(|t| format!(" at {t:.1} s")).unwrap_or_default();
        let _ = write!(c, "<br>{}{at}", cell_text(&a.outcome.seen));
    }
    c
}

/// Text safe inside a table cell.
fn cell_text(t: &str) -> String {
    t.replace('|', "\\|").replace('\n', " ")
}

/// Inline code that survives backticks in the text.
fn code(t: &str) -> String {
    let t = t.replace('\n', " ");
    if t.contains('`') {
        format!("`` {t} ``")
    } else {
        format!("`{t}`")
    }
}

/// One milestone's section, laid out as its plan says.
fn milestone_section(s: &mut String, bundle: &Bundle, section: &Section) {
    let pairs = facts::milestone(bundle, &section.milestone);
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(s, "## {}\n", section.title);
    match section.layout {
        Layout::Compare => compare(s, &pairs),
        Layout::Groups => groups(s, &pairs, section),
    }
}

/// One subsection per scenario: what each pair shows, its wait cycles, and its targets
/// side by side.
fn compare(s: &mut String, pairs: &[&PairEvidence]) {
    let scenarios = facts::first_seen(pairs.iter().map(|p| p.report.scenario.as_str()));
    for sc in scenarios {
        let on: Vec<&PairEvidence> = pairs
            .iter()
            .copied()
            .filter(|p| p.report.scenario == sc)
            .collect();
        let _ = writeln!(s, "### {sc}\n");
        for p in &on {
            claim(s, p);
        }
        s.push('\n');
        for p in &on {
            wait_cycle(s, p);
        }
        if on.len() > 1 {
            side_by_side(s, &on);
        } else if let Some(p) = on.first() {
            outcome_list(s, p);
            probes(s, p);
        }
        for p in &on {
            gate_timelines(s, p);
        }
    }
}

/// One sentence on what a pair shows, linking to its evidence.
fn claim(s: &mut String, p: &PairEvidence) {
    let r = &p.report;
    let planned = if r.matches_plan {
        "as the plan expects"
    } else {
        "**not** as the plan expects"
    };
    let what = match &r.verdict {
        Verdict::Reproduced { failing, seen } => {
            let link = r
                .outcomes
                .iter()
                .find(|o| failing.first() == Some(&o.id))
                .and_then(evidence_link)
                .unwrap_or_default();
            format!(
                "reproduces the failure: {} did not hold, the harness saw {}{link}",
                failing
                    .iter()
                    .map(|f| code(f))
                    .collect::<Vec<_>>()
                    .join(", "),
                code(seen)
            )
        }
        Verdict::Pass => match facts::awaited(p) {
            Some(a) => format!(
                "passes: {}{}{}",
                code(&a.outcome.seen),
                a.secs
                    .map(|t| format!(", {t:.1} s after QEMU start"))
                    .unwrap_or_default(),
                evidence_link(a.outcome).unwrap_or_default()
            ),
            None => "passes: every expectation held".to_string(),
        },
        Verdict::Fail {
            expectation,
            expected,
            seen,
            note,
            ..
        } => format!(
            "fails: {} expected {}, saw {}{}",
            code(expectation),
            r.outcomes
                .iter()
                .find(|o| &o.id == expectation)
                .map_or_else(|| expected.clone(), ExpectationOutcome::expected_words),
            code(seen),
            note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        ),
        Verdict::Error { message, class } => format!(
            "could not be decided{}: {}",
            match class {
                crate::error::ErrorClass::Usage => " (a mistake in the scenario)",
                crate::error::ErrorClass::Infrastructure => "",
            },
            code(message)
        ),
    };
    let _ = writeln!(
        s,
        "- **{}** ({}) {what}; {} {planned} ([verdict]({}), [timeline]({})).",
        r.target_name,
        code(&r.target),
        r.verdict.word(),
        p.link(bundle::VERDICT),
        p.link(bundle::TIMELINE)
    );
}

/// The wait cycle a pair's watcher confirmed: its path, when it formed and when the
/// harness named it, and the graph.
fn wait_cycle(s: &mut String, p: &PairEvidence) {
    for (boot, c) in &p.wait_cycles {
        let _ = writeln!(
            s,
            "**Wait cycle on {} (boot {boot})**: {}\n",
            p.report.target_name,
            code(&c.message)
        );
        let timing =
            facts::wait_cycle_outcome(p).and_then(|o| Some((o.changed_at?, o.decided_at?)));
        if let Some((formed, named)) = timing {
            let _ = writeln!(
                s,
                "It formed {:.1} s into the pair ({}) and the harness named it {:.1} s later; \
                 the pair's verdict came at {:.1} s, where systemd alone would have waited for \
                 the start timeout.\n",
                formed.as_secs_f64(),
                if c.formed_from_guest {
                    "by the guest's own timestamps"
                } else {
                    "first seen by the harness"
                },
                named.saturating_sub(formed).as_secs_f64(),
                p.report.duration_secs
            );
        }
        if !c.blocked.is_empty() {
            let _ = writeln!(s, "Waiting on it: {}.\n", c.blocked.join(", "));
        }
        let _ = writeln!(
            s,
            "Graph: [waitfor-boot-{boot}.dot]({}) (Graphviz; the cycle in red), \
             [waitfor-boot-{boot}.json]({}) (the reads and the gate probes).\n",
            p.link(&bundle::waitfor_dot(*boot)),
            p.link(&bundle::waitfor_json(*boot))
        );
    }
}

fn evidence_link(o: &ExpectationOutcome) -> Option<String> {
    let e = o.evidence.as_ref()?;
    let file = e.file_name()?.to_str()?;
    Some(format!(" ([{file}]({}))", e.display()))
}

/// Expectations as rows, the pairs of one scenario as columns.
fn side_by_side(s: &mut String, on: &[&PairEvidence]) {
    let heads: Vec<String> = on
        .iter()
        .map(|p| {
            format!(
                "{}: {} {}",
                p.report.target_name,
                p.report.verdict.word(),
                if p.report.matches_plan { "✓" } else { "✗" }
            )
        })
        .collect();
    let _ = writeln!(s, "| expectation | {} |", heads.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(on.len()));
    let ids = facts::first_seen(
        on.iter()
            .flat_map(|p| p.report.outcomes.iter().map(|o| o.id.as_str())),
    );
    for id in ids {
        let what = on
            .iter()
            .find_map(|p| p.report.outcomes.iter().find(|o| o.id == id))
            .map(ExpectationOutcome::expected_words)
            .unwrap_or_default();
        let cells: Vec<String> = on
            .iter()
            .map(|p| match p.report.outcomes.iter().find(|o| o.id == id) {
                Some(o) => format!(
                    "{} {}{}",
                    o.mark(),
                    cell_text(&code(&o.seen)),
                    evidence_link(o).unwrap_or_default()
                ),
                None => "not evaluated".to_string(),
            })
            .collect();
        let _ = writeln!(
            s,
            "| {}<br>{} | {} |",
            cell_text(&code(id)),
            cell_text(&what),
            cells.join(" | ")
        );
    }
    s.push('\n');
}

/// Every expectation of a pair as a claim with its evidence.
fn outcome_list(s: &mut String, p: &PairEvidence) {
    for o in &p.report.outcomes {
        outcome_line(s, o);
    }
    s.push('\n');
}

/// One expectation as a claim: held or not, what had to hold, what was seen, and where.
fn outcome_line(s: &mut String, o: &crate::check::ExpectationOutcome) {
    let _ = writeln!(
        s,
        "- {} {}: {} — saw {}{}",
        o.mark(),
        code(&o.id),
        o.expected_words(),
        code(&o.seen),
        evidence_link(o).unwrap_or_default()
    );
}

/// The probes the harness made, with their times from the pair's start.
fn probes(s: &mut String, p: &PairEvidence) {
    if p.report.probes.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "Probes the harness made ([verdict.json]({})):\n",
        p.link(bundle::VERDICT)
    );
    let _ = writeln!(s, "| t (s) | from | url | status | body |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for pr in &p.report.probes {
        let t = if p.report.started_unix > 0.0 {
            format!("{:.1}", pr.at_unix - p.report.started_unix)
        } else {
            "?".to_string()
        };
        let _ = writeln!(
            s,
            "| {t} | {} | {} | {} | {} |",
            pr.from,
            cell_text(&pr.url),
            pr.status.map(|c| c.to_string()).unwrap_or("—".into()),
            cell_text(&code(pr.excerpt.trim()))
        );
    }
    s.push('\n');
}

/// One subsection per group of scenarios (`report.group:`), each pair's claim with its
/// highlighted expectations first; then the ordering tables and the base image.
fn groups(s: &mut String, pairs: &[&PairEvidence], section: &Section) {
    let group_of = |p: &PairEvidence| -> String {
        p.report
            .report
            .group
            .clone()
            .unwrap_or_else(|| p.report.scenario.clone())
    };
    let present: Vec<String> = pairs.iter().map(|p| group_of(p)).collect();
    let names: Vec<String> = section
        .groups
        .iter()
        .filter(|g| present.contains(g))
        .cloned()
        .chain(present.iter().cloned())
        .fold(Vec::new(), |mut acc, g| {
            if !acc.contains(&g) {
                acc.push(g);
            }
            acc
        });
    for name in names {
        let _ = writeln!(s, "### {name}\n");
        for p in pairs.iter().filter(|p| group_of(p) == name) {
            claim(s, p);
            s.push('\n');
            if let Some(h) = &p.report.report.highlight {
                let shown: Vec<&ExpectationOutcome> = h
                    .ids
                    .iter()
                    .filter_map(|id| p.report.outcomes.iter().find(|o| &o.id == id))
                    .collect();
                if !shown.is_empty() {
                    let _ = writeln!(s, "{}:\n", h.title);
                    for o in shown {
                        outcome_line(s, o);
                    }
                    s.push('\n');
                    let _ = writeln!(s, "Every expectation:\n");
                }
            }
            outcome_list(s, p);
            probes(s, p);
            if facts::order_outcome(p).is_none() {
                gate_timelines(s, p);
            }
        }
    }
    let ordered: Vec<&PairEvidence> = pairs
        .iter()
        .copied()
        .filter(|p| facts::order_outcome(p).is_some())
        .collect();
    if !ordered.is_empty() {
        let _ = writeln!(
            s,
            "### {}\n",
            section.order_title.as_deref().unwrap_or("Ordering")
        );
        for p in ordered {
            ordering(s, p);
            gate_timelines(s, p);
        }
    }
    base_image(s, pairs);
}

fn ordering(s: &mut String, p: &PairEvidence) {
    let Some((o, order)) = facts::order_outcome(p) else {
        return;
    };
    let _ = writeln!(
        s,
        "**{} · {}**: {} {} — {}{}\n",
        p.report.target_name,
        p.report.scenario,
        o.mark(),
        o.expected_words(),
        code(&o.seen),
        evidence_link(o).unwrap_or_default()
    );
    let OrderExpectation {
        after,
        units: consumers,
        anchor: _,
    } = order;
    let anchor = after.as_str();
    let file = o
        .evidence
        .as_ref()
        .and_then(|e| e.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let Some(units) = p.units.get(file) else {
        return;
    };
    let find = |n: &str| units.iter().find(|u| u.id == n);
    let Some(done) = find(anchor).and_then(UnitState::finished_starting_us) else {
        return;
    };
    let _ = writeln!(
        s,
        "From [{file}]({}), guest monotonic seconds; {anchor} finished starting at {:.3} s.\n",
        p.link(file),
        done as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "| unit | start began | after {anchor} finished | became active | state |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for c in consumers.iter().map(|u| u.as_str()) {
        let Some(t) = find(c) else {
            let _ = writeln!(s, "| {c} | not recorded | | | |");
            continue;
        };
        let start = t.started_us();
        let _ = writeln!(
            s,
            "| {c} | {} | {} | {} | {} (Result={}) |",
            start
                .map(|v| format!("{:.3} s", v as f64 / 1e6))
                .unwrap_or("never".into()),
            start
                .map(|v| format!("{:+.3} s", (v as f64 - done as f64) / 1e6))
                .unwrap_or_default(),
            t.active_enter_us
                .map(|v| format!("{:.3} s", v as f64 / 1e6))
                .unwrap_or("—".into()),
            t.active_state,
            t.result_str()
        );
    }
    s.push('\n');
}

/// The harness's probes of each gate beside the gated unit's journal lines: what the
/// gate-honesty checks judged, for the reader to judge too.
fn gate_timelines(s: &mut String, p: &PairEvidence) {
    use super::gate_timeline::RowKind;
    for (boot, timelines) in &p.gate_timelines {
        for t in timelines {
            let _ = writeln!(
                s,
                "Gate of {} on {}, boot {boot}: the harness's probes of {} beside the unit's \
                 journal, guest monotonic seconds ([{w}]({}), [{j}]({})):\n",
                code(&t.unit),
                p.report.target_name,
                code(&t.url),
                p.link(&bundle::waitfor_json(*boot)),
                p.link(&bundle::journal_file(*boot)),
                w = bundle::waitfor_json(*boot),
                j = bundle::journal_file(*boot),
            );
            let _ = writeln!(s, "| guest s | harness probe | {} journal |", t.unit);
            let _ = writeln!(s, "|---|---|---|");
            for (i, r) in t.rows.iter().enumerate() {
                if t.left_out > 0 && i == super::gate_timeline::MAX_ROWS / 2 {
                    let _ = writeln!(s, "| … | {} rows left out | |", t.left_out);
                }
                let at = r.at_us as f64 / 1e6;
                let _ = match &r.what {
                    RowKind::Probe {
                        answered_us,
                        answer,
                        healthy,
                    } => writeln!(
                        s,
                        "| {at:.3} | {} {} (answered {:.3}) | |",
                        if *healthy {
                            "healthy"
                        } else {
                            "**not healthy**"
                        },
                        cell_text(&code(answer)),
                        *answered_us as f64 / 1e6
                    ),
                    RowKind::Journal {
                        from_manager,
                        message,
                    } => writeln!(
                        s,
                        "| {at:.3} | | {}{} |",
                        if *from_manager { "systemd: " } else { "" },
                        cell_text(&code(message))
                    ),
                };
            }
            s.push('\n');
        }
    }
}

fn base_image(s: &mut String, pairs: &[&PairEvidence]) {
    let _ = writeln!(s, "### The base image is unchanged\n");
    for p in pairs {
        let id = p.identity.as_ref();
        let get = |k: &str| id.and_then(|v| v.get(k)).and_then(|v| v.as_str());
        match (get("base_sha256_before"), get("base_sha256_after")) {
            (Some(b), Some(a)) => {
                let _ = writeln!(
                    s,
                    "- **{} · {}**: base image sha256 {} before and {} after the run: {} ([identity.json]({})).",
                    p.report.target_name,
                    p.report.scenario,
                    code(b),
                    code(a),
                    if a == b { "unchanged" } else { "**CHANGED**" },
                    p.link(bundle::IDENTITY)
                );
            }
            _ => {
                let through_overlay = p.files.contains(bundle::VM);
                let _ = writeln!(
                    s,
                    "- **{} · {}**: the bundle records no base image checksum (no identity.json).{}",
                    p.report.target_name,
                    p.report.scenario,
                    if through_overlay {
                        format!(
                            " Every boot ran on a throwaway overlay: see the `-drive` argument in [vm.json]({}).",
                            p.link(bundle::VM)
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    s.push('\n');
}

fn pairs(s: &mut String, bundle: &Bundle) {
    let _ = writeln!(s, "## Pairs\n");
    let _ = writeln!(
        s,
        "| pair | target | expected | verdict | as planned | duration | run folder |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for p in &bundle.pairs {
        let r = &p.report;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} s | [{}]({}/) |",
            cell_text(&r.id),
            cell_text(&code(&r.target)),
            cell_text(&expected_word(&r.expected)),
            r.verdict.word(),
            if r.matches_plan { "yes" } else { "**no**" },
            r.duration_secs,
            p.folder,
            p.folder
        );
    }
    s.push('\n');
    for p in bundle.pairs.iter().filter(|p| !p.report.matches_plan) {
        let _ = writeln!(
            s,
            "- **{}**: {}",
            p.report.id,
            cell_text(&p.report.verdict.to_string())
        );
    }
    redactions(s, bundle);
}

/// Secrets replaced per pair and file (`redactions.json`), when the bundle records them.
fn redactions(s: &mut String, bundle: &Bundle) {
    let recorded: Vec<_> = bundle
        .pairs
        .iter()
        .filter_map(|p| Some((p, p.redactions.as_ref()?)))
        .collect();
    if recorded.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Redactions\n");
    for (p, counts) in recorded {
        let hit: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| format!("{n} in [{f}]({})", p.link(f)))
            .collect();
        let total: usize = counts.values().sum();
        if hit.is_empty() {
            let _ = writeln!(s, "- {}: none", cell_text(&p.report.id));
        } else {
            let _ = writeln!(
                s,
                "- {}: {total} replaced ({})",
                cell_text(&p.report.id),
                hit.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_survive_backticks() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("`x` y"), "`` `x` y ``");
    }
}
