//! `systemd-analyze critical-chain`, rendered on the host from one read of every unit.
//!
//! `systemd-analyze` asks PID 1 for every loaded unit's timestamps, one D-Bus call per
//! unit, then for the `After=` of each unit along the chain: on a TCG guest that took 4
//! to 8 s per boot, on top of the same walk the harness makes for the boot's plot. The
//! plot's read carries `After=` too, so the chain is drawn from it here, following
//! systemd 252's `analyze-critical-chain.c` and `format_timespan()` to the character
//! (checked against the tool's own output recorded on the model guest). Pure.

use std::collections::{BTreeMap, HashMap};

/// The manager's properties the chain needs, from `systemctl show` without a unit.
pub const MANAGER_PROPERTIES: &str = "UserspaceTimestampMonotonic,FinishTimestampMonotonic";

/// The boot's times from PID 1 (µs, monotonic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTimes {
    /// When PID 1 started in userspace.
    pub userspace_us: u64,
    /// When the start-up finished; 0 while it has not.
    pub finish_us: u64,
}

impl BootTimes {
    /// From `systemctl show -p` [`MANAGER_PROPERTIES`].
    pub fn parse(text: &str) -> anyhow::Result<BootTimes> {
        let props = super::parse_properties(text);
        let get = |k: &str| -> anyhow::Result<u64> {
            props
                .get(k)
                .ok_or_else(|| anyhow::anyhow!("systemctl show printed no {k}: {text:?}"))?
                .parse()
                .map_err(|e| anyhow::anyhow!("{k} is not a number: {e}"))
        };
        Ok(BootTimes {
            userspace_us: get("UserspaceTimestampMonotonic")?,
            finish_us: get("FinishTimestampMonotonic")?,
        })
    }
}

/// One unit's start, as `systemd-analyze` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    activating: u64,
    activated: u64,
    /// How long it took to start (or to fail).
    time: u64,
}

/// The units of a `systemctl show` read (with `After`), by `Id`.
#[derive(Debug, PartialEq, Eq)]
pub struct UnitTable {
    times: HashMap<String, Times>,
    after: HashMap<String, Vec<String>>,
}

impl UnitTable {
    /// From `systemctl show` blocks that include the four state timestamps and `After`.
    /// A unit that never left inactive is not in the table, as in `systemd-analyze`.
    pub fn parse(text: &str) -> UnitTable {
        let mut times = HashMap::new();
        let mut after = HashMap::new();
        for block in text.split("\n\n") {
            let props: BTreeMap<String, String> = super::parse_properties(block);
            let Some(id) = props.get("Id") else { continue };
            let ts = |k: &str| {
                props
                    .get(k)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (activating, activated) = (
                ts("InactiveExitTimestampMonotonic"),
                ts("ActiveEnterTimestampMonotonic"),
            );
            let deactivated = ts("InactiveEnterTimestampMonotonic");
            let time = if activated >= activating {
                activated - activating
            } else {
                deactivated.saturating_sub(activating)
            };
            if let Some(a) = props.get("After") {
                after
                    .entry(id.clone())
                    .or_insert_with(|| a.split_whitespace().map(unquote).collect());
            }
            if activating > 0 {
                times.entry(id.clone()).or_insert(Times {
                    activating,
                    activated,
                    time,
                });
            }
        }
        UnitTable { times, after }
    }

    /// Whether the read had `After=` for `unit` (it must, to draw its chain).
    pub fn knows_after(&self, unit: &str) -> bool {
        self.after.contains_key(unit)
    }
}

/// What `systemd-analyze critical-chain UNIT` prints, for the unit whose `Id` is
/// `unit`. A boot that has not finished starting up gets the tool's own refusal.
pub fn render(unit: &str, table: &UnitTable, boot: &BootTimes) -> String {
    if boot.finish_us == 0 {
        return "Bootup is not yet finished \
                (org.freedesktop.systemd1.Manager.FinishTimestampMonotonic=0).\n\
                Please try again later.\n\
                Hint: Use 'systemctl list-jobs' to see active jobs\n"
            .to_string();
    }
    let mut out = String::from(
        "The time when unit became active or started is printed after the \"@\" character.\n\
         The time the unit took to start is printed after the \"+\" character.\n\n",
    );
    if let Some(t) = table.times.get(unit) {
        if t.time > 0 {
            out.push_str(&format!("{unit} +{}\n", timespan(t.time)));
        } else if t.activated > boot.userspace_us {
            out.push_str(&format!(
                "{unit} @{}\n",
                timespan(t.activated - boot.userspace_us)
            ));
        } else {
            out.push_str(&format!("{unit}\n"));
        }
    }
    let mut seen = Vec::new();
    one(unit, 0, 0, table, boot, &mut seen, &mut out);
    out
}

fn in_range(t: Option<&Times>, boot: &BootTimes) -> Option<Times> {
    t.filter(|t| t.activated > 0 && t.activated <= boot.finish_us)
        .copied()
}

/// `list_dependencies_one`: the `After=` units that became active last (no fuzz).
fn one(
    name: &str,
    level: u32,
    branches: u64,
    table: &UnitTable,
    boot: &BootTimes,
    seen: &mut Vec<String>,
    out: &mut String,
) {
    seen.push(name.to_string());
    let mut deps: Vec<&String> = table
        .after
        .get(name)
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    // Latest first; glibc's qsort (a merge sort) keeps ties in the order PID 1 gave.
    let activated = |u: &str| table.times.get(u).map_or(0, |t| t.activated);
    deps.sort_by_key(|u| std::cmp::Reverse(activated(u)));
    let longest = deps
        .iter()
        .filter_map(|u| in_range(table.times.get(*u), boot))
        .map(|t| t.activated)
        .max()
        .unwrap_or(0);
    if longest == 0 {
        return;
    }
    let chosen: Vec<(&String, Times)> = deps
        .iter()
        .filter_map(|u| in_range(table.times.get(*u), boot).map(|t| (*u, t)))
        .filter(|(_, t)| t.activated == longest)
        .collect();
    let mut to_print = chosen.len();
    for (dep, t) in chosen {
        to_print -= 1;
        print(dep, level, branches, to_print == 0, Some(&t), boot, out);
        let deeper = (branches << 1) | u64::from(to_print > 0);
        if seen.iter().any(|s| s == dep) {
            print("...", level + 1, deeper, true, None, boot, out);
            continue;
        }
        one(dep, level + 1, deeper, table, boot, seen, out);
        if to_print == 0 {
            break;
        }
    }
}

/// `list_dependencies_print`.
fn print(
    name: &str,
    level: u32,
    branches: u64,
    last: bool,
    times: Option<&Times>,
    boot: &BootTimes,
    out: &mut String,
) {
    for i in (1..=level).rev() {
        out.push_str(if branches & (1 << (i - 1)) != 0 {
            "│ "
        } else {
            "  "
        });
    }
    out.push_str(if last { "└─" } else { "├─" });
    match times {
        Some(t) if t.time > 0 => out.push_str(&format!(
            "{name} @{} +{}",
            timespan(t.activating.saturating_sub(boot.userspace_us)),
            timespan(t.time)
        )),
        Some(t) if t.activated > boot.userspace_us => out.push_str(&format!(
            "{name} @{}",
            timespan(t.activated - boot.userspace_us)
        )),
        _ => out.push_str(name),
    }
    out.push('\n');
}

/// A unit name as `systemctl show` lists it: names with a backslash come shell-quoted
/// (`"system-serial\\x2dgetty.slice"`).
fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\\", "\\"),
        None => word.to_string(),
    }
}

/// systemd's `format_timespan(t, USEC_PER_MSEC)`: `1min 9.454s`, `32.674s`, `814ms`.
pub fn timespan(t: u64) -> String {
    timespan_to(t, 1_000)
}

/// systemd's `format_timespan(t, 0)`, exact to the microsecond, as `systemctl show`
/// prints `...USec` properties: `15min`, `1min 30.500001s`.
pub fn timespan_exact(t: u64) -> String {
    timespan_to(t, 1)
}

fn timespan_to(t: u64, accuracy: u64) -> String {
    const TABLE: [(&str, u64); 9] = [
        ("y", 31_557_600_000_000),
        ("month", 2_629_800_000_000),
        ("w", 604_800_000_000),
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("min", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ];
    if t == 0 {
        return "0".to_string();
    }
    let mut out = String::new();
    let mut t = t;
    let mut something = false;
    for (suffix, unit) in TABLE {
        if t == 0 || (t < accuracy && something) {
            break;
        }
        if t < unit {
            continue;
        }
        let sep = if out.is_empty() { "" } else { " " };
        let a = t / unit;
        let mut b = t % unit;
        let mut done = false;
        if t < 60_000_000 && b > 0 {
            let mut j: i32 = 0;
            let mut cc = unit;
            while cc > 1 {
                j += 1;
                cc /= 10;
            }
            let mut cc = accuracy;
            while cc > 1 {
                b /= 10;
                j -= 1;
                cc /= 10;
            }
            if j > 0 {
                out.push_str(&format!("{sep}{a}.{b:0w$}{suffix}", w = j as usize));
                t = 0;
                done = true;
            }
        }
        if !done {
            out.push_str(&format!("{sep}{a}{suffix}"));
            t = b;
        }
        something = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded read: the manager's times, every unit (with `After`), and
    /// `systemd-analyze critical-chain` for several units, all on one quiet model guest.
    fn recorded() -> (BootTimes, UnitTable, Vec<(String, String)>) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/guest/critical-chain-model.txt"
        ))
        .expect("recorded");
        let mut sections: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("@@") {
                sections.push((name.to_string(), String::new()));
            } else if let Some((_, body)) = sections.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        let get = |k: &str| {
            sections
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, b)| b.clone())
                .expect(k)
        };
        let boot = BootTimes::parse(&get("manager")).expect("manager times");
        let table = UnitTable::parse(&get("units"));
        let chains = sections
            .into_iter()
            .filter_map(|(n, b)| n.strip_prefix("chain").map(|u| (u.trim().to_string(), b)))
            .collect();
        (boot, table, chains)
    }

    #[test]
    fn every_recorded_chain_is_drawn_line_for_line() {
        let (boot, table, chains) = recorded();
        assert!(chains.len() >= 6);
        for (unit, want) in chains {
            // No unit named: the default target, whose Id the read's first block gives.
            let id = match unit.as_str() {
                "" | "default.target" => "graphical.target".to_string(),
                u => u.to_string(),
            };
            assert!(table.knows_after(&id), "{id}");
            assert_eq!(render(&id, &table, &boot), want, "the chain of {unit:?}");
        }
    }

    #[test]
    fn an_unfinished_boot_gets_the_tools_refusal() {
        let (boot, table, _) = recorded();
        let unfinished = BootTimes {
            finish_us: 0,
            ..boot
        };
        let text = render("deploy-proxy.service", &table, &unfinished);
        assert!(text.starts_with("Bootup is not yet finished"), "{text}");
    }

    #[test]
    fn timespans_read_as_systemd_writes_them() {
        for (us, text) in [
            (32_674_123, "32.674s"),
            (69_454_999, "1min 9.454s"),
            (814_000, "814ms"),
            (814_999, "814ms"),
            (32_000_000, "32s"),
            (32_000_400, "32.000s"),
            (120_000_000, "2min"),
            (999, "999us"),
            (0, "0"),
        ] {
            assert_eq!(timespan(us), text, "{us}");
        }
    }
}
