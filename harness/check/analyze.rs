//! Static wait-cycle analysis: the units of a target, read without booting, as a graph
//! of ordering, requirement and gate edges; every cycle with its path; and for each
//! health gate, the units ordered after the gated unit. Pure: the sources come from an
//! image's unit tree (`target::unit_tree`) or a NixOS evaluation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::waitfor::{Cycle, EdgeKind, WaitForGraph};
pub use crate::guest::systemd::sources::{Gate, UnitSources};
use crate::guest::systemd::unitfile::Declared;

/// How many cycles of each kind are listed at most.
const CYCLE_LIMIT: usize = 50;

/// One gate and what is ordered after its unit.
#[derive(Debug, Clone, Serialize)]
pub struct GateFinding {
    /// The declaration.
    pub gate: Gate,
    /// Every unit of the boot ordered after the gated unit, directly or through others:
    /// a change to the gate re-orders these.
    pub ordered_after: Vec<String>,
    /// Whether the unit serving the gate's URL is among them: a health-gate cycle (the
    /// model's pxgate bug, `vm-images/ccci-model/README.md`).
    pub served_after_gated: bool,
}

/// A cycle found statically, with its kind.
#[derive(Debug, Clone, Serialize)]
pub struct StaticCycle {
    /// `wait` (ordering and gate edges: a start that can never finish) or
    /// `requirement` (Requires/Wants/BindsTo/WantedBy).
    pub kind: &'static str,
    /// The path.
    pub cycle: Cycle,
}

/// The result of `coldboot analyze`.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// The target the boot starts (`default.target`, resolved).
    pub default_target: String,
    /// How many units the boot transaction pulls in.
    pub units_in_boot: usize,
    /// Units named by a dependency of the boot but with no unit file (ignored).
    pub missing: Vec<String>,
    /// Units with no unit file but with `.wants`/`.requires`/`.upholds` links (upstream
    /// units a NixOS evaluation does not carry): followed through their links only.
    pub linked_only: Vec<String>,
    /// The declared gates, judged.
    pub gates: Vec<GateFinding>,
    /// Every cycle, wait cycles first.
    pub cycles: Vec<StaticCycle>,
}

/// Analyse the boot that starts `default.target`.
pub fn analyze(sources: &UnitSources, gates: &[Gate]) -> Analysis {
    let default_target = sources.canonical("default.target");
    let (boot, implicit, missing, linked_only) = boot_transaction(sources, &default_target);
    let mut waits = WaitForGraph::default();
    let mut needs = WaitForGraph::default();
    // systemd adds default dependencies by rules of its own, and drops some of them to
    // avoid loops; those edges order units (what runs after a gate) but are not trusted
    // to close a cycle.
    let mut ordered = WaitForGraph::default();
    for (name, d) in &implicit {
        let in_boot = |u: &String| boot.contains_key(&sources.canonical(u));
        for u in d.after.iter().filter(|u| in_boot(u)) {
            let u = sources.canonical(u);
            ordered.add(
                name,
                &u,
                EdgeKind::Ordering,
                format!("{name}: After={u} (default)"),
            );
        }
        for u in d.before.iter().filter(|u| in_boot(u)) {
            let u = sources.canonical(u);
            ordered.add(
                &u,
                name,
                EdgeKind::Ordering,
                format!("{name}: Before={u} (default)"),
            );
        }
    }
    for (name, d) in &boot {
        let in_boot = |u: &String| boot.contains_key(&sources.canonical(u));
        for u in d.after.iter().filter(|u| in_boot(u)) {
            let u = sources.canonical(u);
            waits.add(name, &u, EdgeKind::Ordering, format!("{name}: After={u}"));
        }
        for u in d.before.iter().filter(|u| in_boot(u)) {
            let u = sources.canonical(u);
            waits.add(&u, name, EdgeKind::Ordering, format!("{name}: Before={u}"));
        }
        for (key, list) in [
            ("Requires", &d.requires),
            ("Wants", &d.wants),
            ("BindsTo", &d.binds_to),
            ("Requisite", &d.requisite),
            ("Upholds", &d.upholds),
        ] {
            for u in list.iter().filter(|u| in_boot(u)) {
                let u = sources.canonical(u);
                needs.add(
                    name,
                    &u,
                    EdgeKind::Requirement,
                    format!("{name}: {key}={u}"),
                );
            }
        }
    }
    for (dir_key, install_key, links) in [
        ("wants", "WantedBy", &sources.wants),
        ("requires", "RequiredBy", &sources.requires),
        ("upholds", "UpheldBy", &sources.upholds),
    ] {
        for (unit, other) in links {
            let (unit, other) = (sources.canonical(unit), sources.canonical(other));
            if boot.contains_key(&unit) && boot.contains_key(&other) {
                let why = format!("{other} in {unit}.{dir_key}/ ({install_key}={unit})");
                needs.add(&unit, &other, EdgeKind::Requirement, why);
            }
        }
    }
    for e in waits.edges() {
        ordered.add(&e.waiter, &e.waited, e.kind, e.reason.clone());
    }
    let gates: Vec<Gate> = gates
        .iter()
        .map(|g| Gate {
            unit: sources.canonical(&g.unit),
            served_by: sources.canonical(&g.served_by),
            url: g.url.clone(),
        })
        .collect();
    for g in &gates {
        waits.add(
            &g.unit,
            &g.served_by,
            EdgeKind::Gate,
            format!(
                "{}'s start polls {}, served by {}",
                g.unit, g.url, g.served_by
            ),
        );
    }
    let gates = gates
        .iter()
        .map(|g| {
            let ordered_after: Vec<String> = ordered
                .waiting_on(&BTreeSet::from([g.unit.clone()]))
                .into_iter()
                .filter(|u| *u != g.unit)
                .collect();
            GateFinding {
                served_after_gated: ordered_after.contains(&g.served_by),
                ordered_after,
                gate: g.clone(),
            }
        })
        .collect();
    let mut cycles: Vec<StaticCycle> = waits
        .all_cycles(CYCLE_LIMIT)
        .into_iter()
        .map(|cycle| StaticCycle {
            kind: "wait",
            cycle,
        })
        .collect();
    cycles.extend(
        needs
            .all_cycles(CYCLE_LIMIT)
            .into_iter()
            .map(|cycle| StaticCycle {
                kind: "requirement",
                cycle,
            }),
    );
    Analysis {
        default_target,
        units_in_boot: boot.len(),
        missing,
        linked_only,
        gates,
        cycles,
    }
}

/// The units a boot of `start` pulls in (Requires/Wants/BindsTo/Upholds and the `.wants`/
/// `.requires`/`.upholds` folders, transitively), each with what it declares, and apart from that
/// the default dependencies systemd adds.
type Units = BTreeMap<String, Declared>;

fn boot_transaction(
    sources: &UnitSources,
    start: &str,
) -> (Units, Units, Vec<String>, Vec<String>) {
    let mut boot: Units = BTreeMap::new();
    let mut implicit: Units = BTreeMap::new();
    let mut linked_only = Vec::new();
    let mut missing = BTreeSet::new();
    let mut queue = vec![start.to_string()];
    while let Some(name) = queue.pop() {
        let name = sources.canonical(&name);
        if boot.contains_key(&name) || missing.contains(&name) {
            continue;
        }
        let linked = || {
            sources
                .wants
                .iter()
                .chain(&sources.requires)
                .chain(&sources.upholds)
                .any(|(unit, _)| sources.canonical(unit) == name)
        };
        let mut d = match sources.declared(&name) {
            Some(d) => d,
            None if !sources.masked.contains(&name) && linked() => {
                linked_only.push(name.clone());
                Declared::new()
            }
            None => {
                // A masked unit is not started at all: nothing to wait for.
                if !sources.masked.contains(&name) {
                    missing.insert(name);
                }
                continue;
            }
        };
        for (unit, other) in sources.wants.iter().chain(&sources.requires) {
            if sources.canonical(unit) == name {
                d.wants.insert(other.clone());
            }
        }
        for (unit, other) in &sources.upholds {
            if sources.canonical(unit) == name {
                d.upholds.insert(other.clone());
            }
        }
        let mut defaults = Declared::new();
        add_default_dependencies(&name, &d, &mut defaults);
        queue.extend(d.requires.iter().cloned());
        queue.extend(d.wants.iter().cloned());
        queue.extend(d.binds_to.iter().cloned());
        queue.extend(d.upholds.iter().cloned());
        queue.extend(defaults.requires.iter().cloned());
        boot.insert(name.clone(), d);
        implicit.insert(name, defaults);
    }
    (boot, implicit, missing.into_iter().collect(), linked_only)
}

/// `DefaultDependencies=yes` as `systemd.service(5)` and `systemd.target(5)` describe it:
/// services start after `sysinit.target` and `basic.target` (and need sysinit); a target
/// is ordered after the units it wants or requires.
fn add_default_dependencies(name: &str, d: &Declared, out: &mut Declared) {
    if !d.default_dependencies {
        return;
    }
    if name.ends_with(".target") {
        let pulled: Vec<String> = d
            .wants
            .iter()
            .chain(&d.requires)
            .chain(&d.binds_to)
            .filter(|u| !d.before.contains(*u))
            .cloned()
            .collect();
        out.after.extend(pulled);
    } else if name.ends_with(".service") || name.ends_with(".socket") {
        for t in ["sysinit.target", "basic.target"] {
            if name.ends_with(".socket") && t == "basic.target" {
                out.before.insert("sockets.target".into());
                continue;
            }
            out.after.insert(t.into());
        }
        out.requires.insert("sysinit.target".into());
    }
}

impl Analysis {
    /// Whether any cycle was found.
    pub fn has_cycle(&self) -> bool {
        !self.cycles.is_empty()
    }

    /// The report for a terminal.
    pub fn render(&self, target: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "target: {target}");
        let _ = writeln!(
            s,
            "boot: {} units pulled in by {}",
            self.units_in_boot, self.default_target
        );
        if self.gates.is_empty() {
            let _ = writeln!(
                s,
                "gates: none declared, so only systemd's own edges were checked"
            );
        }
        for g in &self.gates {
            let _ = writeln!(
                s,
                "gate: {}'s start polls {}, served by {}",
                g.gate.unit, g.gate.url, g.gate.served_by
            );
            let _ = writeln!(
                s,
                "  ordered after {} ({}): {}",
                g.gate.unit,
                g.ordered_after.len(),
                if g.ordered_after.is_empty() {
                    "none".to_string()
                } else {
                    g.ordered_after.join(", ")
                }
            );
            if g.served_after_gated {
                let _ = writeln!(
                    s,
                    "  health-gate cycle: the gate's URL is served by {}, which is ordered after {}: on a cold boot {} waits for a unit that waits for it, until its start times out",
                    g.gate.served_by, g.gate.unit, g.gate.unit
                );
            }
        }
        if self.cycles.is_empty() {
            let _ = writeln!(
                s,
                "cycles: none (explicit dependencies and gates; systemd's default dependencies order units but are not used to close a cycle)"
            );
        }
        for c in &self.cycles {
            let _ = writeln!(s, "{} cycle: {}", c.kind, c.cycle);
        }
        if !self.linked_only.is_empty() {
            let _ = writeln!(
                s,
                "no unit file, followed through their .wants/.requires/.upholds links only: {}",
                self.linked_only.join(", ")
            );
        }
        if !self.missing.is_empty() {
            let _ = writeln!(
                s,
                "not found (named by a dependency, no unit file; ignored): {}",
                self.missing.join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> UnitSources {
        let mut s = UnitSources::default();
        for (name, text) in files {
            s.files.insert(name.to_string(), text.to_string());
        }
        s.aliases
            .insert("default.target".into(), "multi-user.target".into());
        s
    }

    fn gate(unit: &str, by: &str) -> Gate {
        Gate {
            unit: unit.into(),
            url: "http://x/".into(),
            served_by: by.into(),
        }
    }

    fn paths(a: &Analysis) -> Vec<String> {
        a.cycles
            .iter()
            .map(|c| format!("{} {}", c.kind, c.cycle.units().join(" > ")))
            .collect()
    }

    #[test]
    fn a_pure_after_cycle_is_found() {
        let s = sources(&[
            ("multi-user.target", "[Unit]\nWants=a.service b.service\n"),
            ("a.service", "[Unit]\nAfter=b.service\n"),
            ("b.service", "[Unit]\nAfter=a.service\n"),
        ]);
        let a = analyze(&s, &[]);
        assert_eq!(paths(&a), ["wait a.service > b.service > a.service"]);
        assert!(a.has_cycle() && a.render("t").contains("gates: none declared"));
    }

    #[test]
    fn a_requires_cycle_through_a_drop_in_is_found() {
        let mut s = sources(&[
            ("multi-user.target", "[Unit]\nWants=a.service\n"),
            ("a.service", "[Unit]\nRequires=b.service\n"),
            ("b.service", "[Unit]\nDescription=b\n"),
        ]);
        s.dropins.insert(
            "b.service".into(),
            vec![("10-back.conf".into(), "[Unit]\nRequires=a.service\n".into())],
        );
        assert_eq!(
            paths(&analyze(&s, &[])),
            ["requirement a.service > b.service > a.service"]
        );
        // A later drop-in cannot clear a dependency (systemd.unit(5)): the cycle stays.
        s.dropins
            .get_mut("b.service")
            .unwrap()
            .push(("20-clear.conf".into(), "[Unit]\nRequires=\n".into()));
        assert!(analyze(&s, &[]).has_cycle());
    }

    #[test]
    fn upheld_units_are_in_the_boot() {
        // b only through a's Upholds=, c only through a.upholds/ (UpheldBy=a.service).
        let mut s = sources(&[
            ("multi-user.target", "[Unit]\nWants=a.service\n"),
            ("a.service", "[Unit]\nUpholds=b.service\n"),
            ("b.service", "[Unit]\nAfter=c.service\n"),
            ("c.service", "[Unit]\nAfter=b.service\n"),
        ]);
        s.upholds.insert(("a.service".into(), "c.service".into()));
        let both = analyze(&s, &[]);
        assert_eq!(paths(&both), ["wait b.service > c.service > b.service"]);
        // Without the link, c is not started (b's After= does not pull it in).
        s.upholds.clear();
        let a = analyze(&s, &[]);
        assert!(!a.has_cycle(), "{}", a.render("t"));
        assert_eq!(a.units_in_boot + 1, both.units_in_boot);
    }

    #[test]
    fn aliases_and_template_instances_are_resolved() {
        let mut s = sources(&[
            (
                "multi-user.target",
                "[Unit]\nWants=web.service worker@blue.service\n",
            ),
            ("nginx.service", "[Unit]\nAfter=worker@blue.service\n"),
            (
                "worker@.service",
                "[Unit]\nAfter=%i-cache.service web.service\n",
            ),
            ("blue-cache.service", "[Unit]\n"),
            ("sysinit.target", "[Unit]\n"),
        ]);
        s.aliases
            .insert("web.service".into(), "nginx.service".into());
        let a = analyze(&s, &[]);
        assert_eq!(
            paths(&a),
            ["wait nginx.service > worker@blue.service > nginx.service"],
            "the alias web.service is nginx.service, and %i is expanded"
        );
        assert!(a.missing.is_empty(), "{:?}", a.missing);
    }

    #[test]
    fn a_gate_served_by_a_unit_ordered_after_the_gated_one_is_a_health_gate_cycle() {
        let s = sources(&[
            (
                "multi-user.target",
                "[Unit]\nWants=proxy.service dash.service traefik.service\n",
            ),
            ("proxy.service", "[Unit]\n"),
            ("dash.service", "[Unit]\nAfter=proxy.service\n"),
            ("traefik.service", "[Unit]\n"),
        ]);
        let old = analyze(&s, &[gate("proxy.service", "dash.service")]);
        assert_eq!(
            paths(&old),
            ["wait proxy.service > dash.service > proxy.service"]
        );
        assert!(old.gates[0].served_after_gated);
        assert!(old.render("t").contains("health-gate cycle"));
        let fixed = analyze(&s, &[gate("proxy.service", "traefik.service")]);
        assert!(!fixed.has_cycle());
        assert!(!fixed.gates[0].served_after_gated);
        // The target's default After= on what it wants puts it after the proxy too.
        assert_eq!(
            fixed.gates[0].ordered_after,
            ["dash.service", "multi-user.target"]
        );
    }
}
