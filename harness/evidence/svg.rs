//! `timeline.svg`: one bar per unit of the control plane, from when its start began to
//! when it became active or failed, on the guest's monotonic clock of each pair's first
//! boot. Pairs of the same scenario are stacked, so the old gate's proxy stretching to
//! its timeout sits right above the fixed gate's short one.

use std::fmt::Write as _;

use super::facts;
use super::load::{Bundle, PairEvidence};
use crate::guest::systemd::UnitState;

/// The units drawn for a pair, top to bottom: its focus unit, then every unit its
/// expectations name (a `unit:`'s unit, an `order:`'s anchor and consumers), in the
/// scenario's order. Taken from the outcomes' kind data, so the timeline draws what the
/// scenario is about, not a fixed list.
pub fn units_of(p: &crate::evidence::PairEvidence) -> Vec<String> {
    let mut names: Vec<String> = p.report.focus_unit.iter().cloned().collect();
    let named = p
        .report
        .outcomes
        .iter()
        .flat_map(|o| o.kind.iter())
        .flat_map(|k| k.named_units());
    for n in named {
        if !names.iter().any(|x| x == n.as_str()) {
            names.push(n.as_str().to_string());
        }
    }
    names
}

/// How a unit's start ended, as drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// It became active.
    Active,
    /// It failed (or its start ended without success).
    Failed,
    /// It was still starting when the harness stopped watching.
    StillActivating,
    /// It started and went back to inactive without failing.
    Inactive,
}

/// One unit's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The unit name, without `.service`.
    pub label: String,
    /// Seconds on the guest clock: start began, start ended. `None`: never started.
    pub span: Option<(f64, f64)>,
    /// How the start ended.
    pub kind: BarKind,
    /// Text after the bar.
    pub note: String,
}

/// One pair's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `target · scenario — verdict`.
    pub title: String,
    /// The rows, in [`units_of`] order.
    pub rows: Vec<Row>,
    /// How far (guest seconds) the harness saw into the boot.
    pub observed_until: f64,
}

/// The groups to draw: pairs with unit timestamps for their first boot, ordered by
/// scenario and then target so that each scenario's targets sit together.
pub fn groups(bundle: &Bundle) -> Vec<Group> {
    let mut out = Vec::new();
    for scenario in facts::scenarios(bundle) {
        for target in facts::targets(bundle) {
            if let Some(p) = facts::pair(bundle, target, scenario)
                && let Some(g) = group(p)
            {
                out.push(g);
            }
        }
    }
    out
}

fn group(p: &PairEvidence) -> Option<Group> {
    let first = p.report.boots.first()?;
    let (_, units) = p.phase_units(&first.phase)?;
    let max_stamp = units
        .iter()
        .flat_map(|u| [u.inactive_exit_us, u.active_enter_us, u.inactive_enter_us])
        .flatten()
        .max()
        .unwrap_or(0);
    let observed_us = p
        .journal_end_us
        .get(&first.index)
        .copied()
        .unwrap_or(0)
        .max(max_stamp);
    let observed_until = secs(observed_us);
    let names = units_of(p);
    let rows = names
        .iter()
        .map(|n| {
            let unit = units.iter().find(|u| u.id == *n);
            let mut r = row(n, unit, observed_until);
            let state = unit.map(|u| u.load_state.as_str());
            if r.span.is_none() && state.is_some_and(|s| s != "loaded") {
                r.note = format!("{} for this boot", state.unwrap_or(""));
            }
            r
        })
        .collect();
    let plan = if p.report.matches_plan {
        "as planned"
    } else {
        "NOT as planned"
    };
    Some(Group {
        title: format!(
            "{} · {} — {} ({plan})",
            p.report.target_name,
            p.report.scenario,
            p.report.verdict.word()
        ),
        rows,
        observed_until,
    })
}

/// A unit's row from its timestamps.
pub fn row(unit: &str, t: Option<&UnitState>, observed_until: f64) -> Row {
    let label = unit.trim_end_matches(".service").to_string();
    let Some((t, began)) = t.and_then(|t| Some((t, t.inactive_exit_us?))) else {
        let why = match t.map(|t| t.active_state.as_str()) {
            None => "not recorded",
            Some(_) => "never started",
        };
        return Row {
            label,
            span: None,
            kind: BarKind::Inactive,
            note: why.to_string(),
        };
    };
    let start = secs(began);
    let result = t.result_str();
    let failed = t.active_state == "failed" || (!result.is_empty() && result != "success");
    // systemd keeps the last ActiveEnter: a unit restarted since (its new start failed or
    // still runs) has one from before this start, which does not end it.
    let (end, kind, note) = if let Some(active) = t.active_enter_us.filter(|a| *a >= began) {
        let kind = if t.active_state == "failed" {
            BarKind::Failed
        } else {
            BarKind::Active
        };
        let end = secs(active);
        (end, kind, format!("active after {:.1} s", end - start))
    } else if let Some(ended) = t.inactive_enter_us.filter(|e| *e > began) {
        let end = secs(ended);
        let kind = if failed {
            BarKind::Failed
        } else {
            BarKind::Inactive
        };
        (
            end,
            kind,
            format!(
                "{} (Result={}) after {:.1} s",
                t.active_state,
                result,
                end - start
            ),
        )
    } else {
        let end = observed_until.max(start);
        (
            end,
            BarKind::StillActivating,
            format!("still {} after {:.1} s", t.active_state, end - start),
        )
    };
    Row {
        label,
        span: Some((start, end)),
        kind,
        note,
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 150.0;
const NOTE_W: f64 = 230.0;
const ROW_H: f64 = 16.0;
const HEAD_H: f64 = 26.0;
const TOP: f64 = 62.0;

/// A boot's plot: one row per unit that started in the boot, in the order the starts
/// began (what `systemd-analyze plot` shows, drawn from `systemctl show` timestamps).
/// `observed_until` is the guest time of the read: a start not ended by then is drawn
/// as still activating up to it.
pub fn boot_plot(title: &str, states: &[UnitState], observed_until: f64) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut started: Vec<&UnitState> = states
        .iter()
        .filter(|u| u.inactive_exit_us.is_some() && seen.insert(u.id.as_str()))
        .collect();
    started.sort_by_key(|u| (u.inactive_exit_us, u.id.as_str()));
    let rows: Vec<Row> = started
        .iter()
        .map(|u| {
            let mut r = row(&u.id, Some(u), observed_until);
            r.label = short_label(&u.id);
            if r.label != u.id {
                r.note = format!("{}: {}", u.id, r.note);
            }
            r
        })
        .collect();
    let group = Group {
        title: format!("{} units started", rows.len()),
        rows,
        observed_until,
    };
    render_titled(title, &[group], BOOT_LABEL_W)
}

/// The boot plot's label column: unit names of every type, up to 41 characters whole.
const BOOT_LABEL_W: f64 = 270.0;

/// A unit name that fits the boot plot's label column: longer ones (devices) keep both
/// ends.
fn short_label(id: &str) -> String {
    const KEEP: usize = 20;
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 2 * KEEP + 1 {
        return id.to_string();
    }
    let head: String = chars[..KEEP].iter().collect();
    let tail: String = chars[chars.len() - KEEP..].iter().collect();
    format!("{head}…{tail}")
}

/// Render the groups as a standalone SVG document.
pub fn render(groups: &[Group]) -> String {
    render_titled(
        "Unit start times on each pair's first boot (guest monotonic clock)",
        groups,
        LABEL_W,
    )
}

/// Render the groups under `title`, with a label column `label_w` wide (the plot area
/// keeps its width: the picture grows with the column).
fn render_titled(title: &str, groups: &[Group], label_w: f64) -> String {
    let width = WIDTH - LABEL_W + label_w;
    let max_t = groups
        .iter()
        .flat_map(|g| {
            g.rows
                .iter()
                .filter_map(|r| r.span.map(|s| s.1))
                .chain([g.observed_until])
        })
        .fold(10.0_f64, f64::max);
    let step = tick_step(max_t);
    let max_t = (max_t / step).ceil() * step;
    let plot_w = width - label_w - NOTE_W;
    let x = |t: f64| label_w + t / max_t * plot_w;
    let body_h: f64 = groups
        .iter()
        .map(|g| HEAD_H + g.rows.len() as f64 * ROW_H + 8.0)
        .sum();
    let height = TOP + body_h + 34.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">"##
    );
    s.push_str(
        r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f9a825"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c17900" stroke-width="3"/></pattern></defs>
<rect width="100%" height="100%" fill="#ffffff"/>
"##,
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"##,
        esc(title)
    );
    legend(&mut s, 10.0, 40.0);

    // Grid and axis.
    let bottom = TOP + body_h;
    let mut t = 0.0;
    while t <= max_t + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
            x = x(t),
            ty = bottom + 14.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">seconds since the guest kernel started</text>"##,
        label_w + plot_w / 2.0,
        bottom + 28.0
    );

    let mut y = TOP;
    for g in groups {
        let _ = writeln!(
            s,
            r##"<text x="10" y="{:.1}" font-weight="bold">{}</text>"##,
            y + 17.0,
            esc(&g.title)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#777" stroke-dasharray="3,3"><title>the harness stopped watching this boot at {:.1} s</title></line>"##,
            y + HEAD_H - 4.0,
            y + HEAD_H + g.rows.len() as f64 * ROW_H,
            g.observed_until,
            x = x(g.observed_until)
        );
        y += HEAD_H;
        for r in &g.rows {
            draw_row(&mut s, r, y, &x);
            y += ROW_H;
        }
        y += 8.0;
    }
    s.push_str("</svg>\n");
    s
}

fn draw_row(s: &mut String, r: &Row, y: f64, x: &dyn Fn(f64) -> f64) {
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
        x(0.0) - 6.0,
        y + 12.0,
        esc(&r.label)
    );
    let (note_x, fill) = match r.span {
        Some((a, b)) => {
            let x0 = x(a);
            let w = (x(b) - x0).max(2.0);
            let _ = writeln!(
                s,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}" stroke="#333" stroke-width="0.5"><title>{}: {a:.1}–{b:.1} s, {}</title></rect>"##,
                y + 2.0,
                ROW_H - 4.0,
                fill(r.kind),
                esc(&r.label),
                esc(&r.note)
            );
            (x0 + w + 4.0, "#222")
        }
        None => (x(0.0) + 4.0, "#999"),
    };
    let _ = writeln!(
        s,
        r##"<text x="{note_x:.1}" y="{:.1}" fill="{fill}">{}</text>"##,
        y + 12.0,
        esc(&r.note)
    );
}

fn fill(kind: BarKind) -> &'static str {
    match kind {
        BarKind::Active => "#43a047",
        BarKind::Failed => "#e53935",
        BarKind::StillActivating => "url(#hatch)",
        BarKind::Inactive => "#bdbdbd",
    }
}

fn legend(s: &mut String, x0: f64, y: f64) {
    let items = [
        (BarKind::Active, "start → active"),
        (BarKind::Failed, "start → failed"),
        (
            BarKind::StillActivating,
            "still activating when watching stopped",
        ),
        (BarKind::Inactive, "start → inactive"),
    ];
    let mut x = x0;
    for (kind, text) in items {
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="14" height="10" fill="{}" stroke="#333" stroke-width="0.5"/><text x="{:.1}" y="{:.1}">{text}</text>"##,
            y - 9.0,
            fill(kind),
            x + 18.0,
            y
        );
        x += 18.0 + text.len() as f64 * 6.0 + 16.0;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#777" stroke-dasharray="3,3"/><text x="{:.1}" y="{y:.1}">end of observation</text>"##,
        y - 10.0,
        y + 1.0,
        x + 5.0
    );
}

/// A tick step giving about 6 to 12 ticks.
fn tick_step(max_t: f64) -> f64 {
    [5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| max_t / s <= 12.0)
        .unwrap_or(1200.0)
}

/// Escape text for XML.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(
        unit: &str,
        state: &str,
        result: &str,
        exit: u64,
        active: u64,
        inact: u64,
    ) -> UnitState {
        let stamp = |v: u64| (v > 0).then_some(v);
        UnitState {
            id: unit.into(),
            load_state: "loaded".into(),
            active_state: state.into(),
            sub_state: String::new(),
            result: (!result.is_empty()).then(|| result.into()),
            service_type: None,
            n_restarts: None,
            exec_main_code: None,
            exec_main_status: None,
            inactive_exit_us: stamp(exit),
            active_enter_us: stamp(active),
            active_exit_us: None,
            inactive_enter_us: stamp(inact),
            state_change_us: None,
            exec_main_start_us: None,
            exec_main_exit_us: None,
            timeout_start_us: None,
            remain_after_exit: None,
        }
    }

    #[test]
    fn rows_follow_the_timestamps() {
        let up = times("a.service", "active", "success", 10_000_000, 12_500_000, 0);
        let r = row("a.service", Some(&up), 99.0);
        assert_eq!((r.kind, r.span), (BarKind::Active, Some((10.0, 12.5))));

        let timed_out = times("p.service", "failed", "timeout", 5_000_000, 0, 65_000_000);
        let r = row("p.service", Some(&timed_out), 99.0);
        assert_eq!((r.kind, r.span), (BarKind::Failed, Some((5.0, 65.0))));
        assert!(r.note.contains("Result=timeout"), "{}", r.note);

        let stuck = times("p.service", "activating", "success", 20_000_000, 0, 0);
        let r = row("p.service", Some(&stuck), 140.0);
        assert_eq!(
            (r.kind, r.span),
            (BarKind::StillActivating, Some((20.0, 140.0)))
        );

        // Active once, restarted at 100 s, and that start failed at 160 s.
        let restarted = times(
            "p.service",
            "failed",
            "exit-code",
            100_000_000,
            21_000_000,
            160_000_000,
        );
        let r = row("p.service", Some(&restarted), 200.0);
        assert_eq!((r.kind, r.span), (BarKind::Failed, Some((100.0, 160.0))));
        assert!(r.note.contains("Result=exit-code"), "{}", r.note);

        let masked = times("d.service", "inactive", "success", 0, 0, 0);
        assert_eq!(row("d.service", Some(&masked), 1.0).span, None);
        assert_eq!(row("x.service", None, 1.0).note, "not recorded");
    }

    /// Every unit's state at the end of a clean cold boot of the model (recorded).
    const EVERY_UNIT: &str =
        include_str!("../../tests/fixtures/guest/units-every-unit-clean-boot.txt");

    #[test]
    fn the_boot_plot_draws_each_started_unit_once_in_start_order() {
        let states = crate::guest::systemd::parse_show(EVERY_UNIT).unwrap();
        let started: std::collections::BTreeSet<&str> = states
            .iter()
            .filter(|u| u.inactive_exit_us.is_some())
            .map(|u| u.id.as_str())
            .collect();
        let svg = boot_plot("Boot 1 <x>", &states, 25.8);
        assert!(svg.contains("Boot 1 &lt;x&gt;"));
        assert!(svg.contains(&format!("{} units started", started.len())));
        // The named units come first in the file and again among every unit: one row.
        let proxy = svg.matches(">deploy-proxy.service</text>").count();
        assert_eq!(proxy, 1, "deploy-proxy.service drawn {proxy} times");
        // Rows follow the starts: the root mount before the proxy, the proxy before the
        // dashboard it orders after.
        let at = |unit: &str| {
            svg.find(&format!(">{}</text>", short_label(unit)))
                .unwrap_or_else(|| panic!("no row for {unit}"))
        };
        assert!(at("-.mount") < at("deploy-proxy.service"));
        assert!(at("deploy-proxy.service") < at("deploy-dashboard.service"));
        // A long device name keeps both ends, and its full name is in its note.
        let long = "sys-subsystem-net-devices-ens2.device";
        assert!(started.contains(long));
        assert!(
            svg.contains(&format!(">{long}</text>")),
            "up to 41 characters fit whole"
        );
        let device = "sys-devices-pci0000:00-0000:00:02.0-virtio0-net-ens2.device";
        assert!(started.contains(device));
        assert!(svg.contains(">sys-devices-pci0000:…tio0-net-ens2.device</text>"));
        assert!(svg.contains(&format!("{device}: active after")));
    }

    #[test]
    fn bars_scale_onto_the_plot() {
        let g = Group {
            title: "before · s — fail <x>".into(),
            rows: vec![row(
                "p.service",
                Some(&times("p.service", "activating", "", 500_000, 0, 0)),
                100.0,
            )],
            observed_until: 100.0,
        };
        let svg = render(&[g]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("fail &lt;x&gt;"));
        assert!(svg.contains("url(#hatch)"));
        // 100 s on a 10 s step: ticks up to 100s, and the bar ends at the plot's right edge.
        assert!(svg.contains(">100s</text>"));
        assert!(svg.contains(&format!(
            "width=\"{:.1}\"",
            (WIDTH - LABEL_W - NOTE_W) * 0.995
        )));
    }
}
