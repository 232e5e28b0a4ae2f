//! A read of every unit's state through the recorder's connection to PID 1, rendered as
//! `systemctl show -p ...` prints it, so that the evidence (`units-PHASE.txt`, the plot,
//! the critical chain) reads the same whichever way it was read. Pure: the calls to make
//! and the text of their answers; [`super::protocol::Protocol`] sends and receives.

use crate::guest::dbus::Value;

/// The most property reads awaiting PID 1's replies at once. PID 1 answers one call at a
/// time, so the read's time is its calls' count times PID 1's time per call once the
/// window covers the round trip through the relay; measured on a model boot's 1,829
/// calls: 1.9 s with 256 at once, 1.4 s with all of them.
pub const WINDOW: usize = 2048;
/// The most units a read takes from `ListUnits` (the stream is untrusted input).
pub const MAX_UNITS: usize = 8192;
/// PID 1's start-up times, for the critical chain (as `systemctl show -p` of the manager).
pub const MANAGER_READ: [&str; 2] = ["UserspaceTimestampMonotonic", "FinishTimestampMonotonic"];

const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";

/// What the evidence keeps of every unit (the Unit interface): [`crate::guest::systemd`]'s
/// `PROPERTIES` of that interface, and `After` for the critical chain.
pub const UNIT_READ: [&str; 10] = [
    "Id",
    "After",
    "LoadState",
    "ActiveState",
    "SubState",
    "StateChangeTimestampMonotonic",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "ActiveExitTimestampMonotonic",
    "InactiveEnterTimestampMonotonic",
];

/// What the evidence keeps of a service (the Service interface).
pub const SERVICE_READ: [&str; 9] = [
    "Type",
    "TimeoutStartUSec",
    "RemainAfterExit",
    "Result",
    "NRestarts",
    "ExecMainStartTimestampMonotonic",
    "ExecMainExitTimestampMonotonic",
    "ExecMainCode",
    "ExecMainStatus",
];

/// The type interface of a unit and what is read from it: a service's start, and the
/// `Result` of the other types that have one.
fn type_read(unit: &str) -> (&'static str, &'static [&'static str]) {
    let suffix = unit.rsplit_once('.').map_or("", |(_, s)| s);
    match suffix {
        "service" => (SERVICE, &SERVICE_READ),
        "socket" => ("org.freedesktop.systemd1.Socket", &["Result"]),
        "mount" => ("org.freedesktop.systemd1.Mount", &["Result"]),
        "swap" => ("org.freedesktop.systemd1.Swap", &["Result"]),
        "timer" => ("org.freedesktop.systemd1.Timer", &["Result"]),
        "path" => ("org.freedesktop.systemd1.Path", &["Result"]),
        "automount" => ("org.freedesktop.systemd1.Automount", &["Result"]),
        "scope" => ("org.freedesktop.systemd1.Scope", &["Result"]),
        _ => ("", &[]),
    }
}

/// Which units a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The named units, then every unit PID 1 has loaded, each with every property the
    /// evidence keeps, and PID 1's start-up times: the evidence of a phase's end.
    #[default]
    Every,
    /// Only the named units, each with every property: a check's snapshot.
    Named,
    /// Every loaded unit's id, load, active and sub state, from `ListUnits` alone (one
    /// call): which units failed.
    States,
}

/// One unit's block: where it lives, and each property with its interface, whether it
/// must be asked (`ListUnits` already gave some), and its value once known.
#[derive(Debug)]
struct Block {
    path: String,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Field {
    iface: &'static str,
    name: &'static str,
    ask: bool,
    value: Option<String>,
}

/// A read under way.
#[derive(Debug, Default)]
pub struct Read {
    scope: Scope,
    blocks: Vec<Block>,
    /// Each unit's block, read once however often it is shown.
    by_name: std::collections::HashMap<String, usize>,
    /// The blocks in the order shown: the named units as named, then the listed ones.
    order: Vec<usize>,
    /// The next block and field to ask.
    next: (usize, usize),
    /// Whether `ListUnits` answered (its units are in `blocks`).
    listed: bool,
    /// Property reads awaiting replies.
    pub(super) in_flight: usize,
    /// Manager property reads awaiting replies.
    pub(super) manager_pending: usize,
    /// The manager's answers.
    pub(super) manager: Vec<(&'static str, String)>,
}

/// A finished read, as `systemctl show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitsText {
    /// The manager's block (`UserspaceTimestampMonotonic=...`).
    pub manager: String,
    /// One block per unit, blank-line separated; units that PID 1 did not know at all
    /// (no `Id`) are left out.
    pub units: String,
    /// Blocks in `units`.
    pub count: usize,
    /// Property reads it took.
    pub calls: usize,
}

/// What `ListUnits` gives of each unit (`a(ssssssouso)`: name, description, load,
/// active and sub state, ...), by the property it stands for.
const LISTED: [(&str, usize); 4] = [
    ("Id", 0),
    ("LoadState", 2),
    ("ActiveState", 3),
    ("SubState", 4),
];

impl Read {
    /// A read of `scope` (one without a list has its list already).
    pub fn new(scope: Scope) -> Read {
        Read {
            scope,
            listed: scope == Scope::Named,
            ..Read::default()
        }
    }

    /// Whether the read asks PID 1 for its list of units.
    pub fn lists(&self) -> bool {
        self.scope != Scope::Named
    }

    /// Show `unit`'s block (at `path`), reading it unless it is already read.
    pub fn add(&mut self, unit: &str, path: &str) {
        let index = self.block(unit, path, &[], true);
        self.order.push(index);
    }

    fn block(
        &mut self,
        unit: &str,
        path: &str,
        known: &[(&'static str, String)],
        ask: bool,
    ) -> usize {
        if let Some(&i) = self.by_name.get(unit) {
            return i;
        }
        let (iface, names) = type_read(unit);
        let fields = names
            .iter()
            .map(|n| (iface, *n))
            .chain(UNIT_READ.iter().map(|n| (UNIT, *n)))
            .map(|(iface, name)| {
                let value = known
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone());
                Field {
                    iface,
                    name,
                    ask: ask && value.is_none(),
                    value,
                }
            })
            .collect();
        self.blocks.push(Block {
            path: path.to_string(),
            fields,
        });
        self.by_name.insert(unit.to_string(), self.blocks.len() - 1);
        self.blocks.len() - 1
    }

    /// `ListUnits`' rows: a block for each unit, sorted as `systemctl list-units` sorts
    /// them (by type, then name), with the states the row gives; the other properties
    /// are asked unless the read is of [`Scope::States`].
    pub fn listed(&mut self, rows: &[Value]) -> Result<(), String> {
        let ask = self.scope != Scope::States;
        if rows.len() > MAX_UNITS {
            return Err(format!(
                "PID 1 listed {} units, more than the {MAX_UNITS} a read takes",
                rows.len()
            ));
        }
        let mut units: Vec<Vec<(&'static str, String)>> = rows
            .iter()
            .filter_map(|r| match r {
                Value::Struct(f) => LISTED
                    .iter()
                    .map(|(name, i)| Some((*name, f.get(*i)?.as_str()?.to_string())))
                    .collect::<Option<Vec<_>>>(),
                _ => None,
            })
            .collect();
        let kind = |n: &str| n.rsplit_once('.').map_or("", |(_, s)| s).to_string();
        units.sort_by(|a, b| kind(&a[0].1).cmp(&kind(&b[0].1)).then(a[0].1.cmp(&b[0].1)));
        for known in units {
            let name = known[0].1.clone();
            // The path from the name, not the row: an object path PID 1 did not make
            // must not reach it.
            let index = self.block(&name, &crate::guest::dbus::unit_path(&name), &known, ask);
            self.order.push(index);
        }
        self.listed = true;
        Ok(())
    }

    /// The next property to ask: (block, object path, interface, property).
    pub fn next_call(&mut self) -> Option<(usize, String, &'static str, &'static str)> {
        let (mut b, mut f) = self.next;
        while let Some(block) = self.blocks.get(b) {
            while let Some(field) = block.fields.get(f) {
                f += 1;
                if field.ask {
                    self.next = (b, f);
                    return Some((b, block.path.clone(), field.iface, field.name));
                }
            }
            (b, f) = (b + 1, 0);
        }
        self.next = (b, f);
        None
    }

    /// Keep `name`'s answer for block `block`.
    pub fn set(&mut self, block: usize, name: &str, text: String) {
        if let Some(b) = self.blocks.get_mut(block)
            && let Some(field) = b.fields.iter_mut().find(|f| f.name == name)
        {
            field.value = Some(text);
        }
    }

    /// Every answer is in: the list, the manager's times and every property.
    pub fn finished(&self) -> bool {
        self.listed
            && self.in_flight == 0
            && self.manager_pending == 0
            && self.next.0 >= self.blocks.len()
    }

    /// The read as `systemctl show` prints it.
    pub fn render(self) -> UnitsText {
        let calls = self
            .blocks
            .iter()
            .flat_map(|b| &b.fields)
            .filter(|f| f.ask)
            .count();
        let mut manager = String::new();
        for name in MANAGER_READ {
            if let Some((_, v)) = self.manager.iter().find(|(n, _)| *n == name) {
                manager.push_str(&format!("{name}={v}\n"));
            }
        }
        let mut units = Vec::new();
        for &i in &self.order {
            let b = &self.blocks[i];
            if !b.fields.iter().any(|f| f.name == "Id" && f.value.is_some()) {
                continue;
            }
            let mut text = String::new();
            for f in &b.fields {
                if let Some(v) = &f.value {
                    text.push_str(&format!("{}={v}\n", f.name));
                }
            }
            units.push(text);
        }
        UnitsText {
            manager,
            count: units.len(),
            units: units.join("\n"),
            calls,
        }
    }
}

/// A property's value as `systemctl show` prints it, or `None` for a type it does not
/// print this way (left out of the block).
pub fn render(name: &str, v: &Value) -> Option<String> {
    let number: Option<i128> = match *v {
        Value::Byte(n) => Some(n.into()),
        Value::I16(n) => Some(n.into()),
        Value::U16(n) => Some(n.into()),
        Value::I32(n) => Some(n.into()),
        Value::U32(n) => Some(n.into()),
        Value::I64(n) => Some(n.into()),
        Value::U64(n) => Some(n.into()),
        _ => None,
    };
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(" ")),
        Value::U64(n) if name.ends_with("USec") => Some(if *n == u64::MAX {
            "infinity".to_string()
        } else {
            crate::guest::systemd::chain::timespan_exact(*n)
        }),
        _ => number.map(|n| n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_the_evidence_parses_is_read_from_a_service() {
        let mut read = Read::default();
        read.add("a.service", "/p");
        let asked: Vec<&str> = read.blocks[0].fields.iter().map(|f| f.name).collect();
        for p in crate::guest::systemd::PROPERTIES.iter().chain(&["After"]) {
            assert!(asked.contains(p), "{p} is not read");
        }
    }

    #[test]
    fn values_print_as_systemctl_show_prints_them() {
        assert_eq!(
            render("TimeoutStartUSec", &Value::U64(900_000_000)).unwrap(),
            "15min"
        );
        assert_eq!(
            render("TimeoutStartUSec", &Value::U64(u64::MAX)).unwrap(),
            "infinity"
        );
        assert_eq!(
            render("TimeoutStartUSec", &Value::U64(90_500_001)).unwrap(),
            "1min 30.500001s"
        );
        assert_eq!(
            render("ActiveEnterTimestampMonotonic", &Value::U64(16_539_403)).unwrap(),
            "16539403"
        );
        assert_eq!(render("ExecMainStatus", &Value::I32(-1)).unwrap(), "-1");
        assert_eq!(
            render("RemainAfterExit", &Value::Bool(true)).unwrap(),
            "yes"
        );
        let after = Value::Array(vec![
            Value::Str("a.target".into()),
            Value::Str("b.mount".into()),
        ]);
        assert_eq!(render("After", &after).unwrap(), "a.target b.mount");
        assert_eq!(render("After", &Value::Array(vec![])).unwrap(), "");
        assert_eq!(render("X", &Value::Double(1.0)), None);
    }

    #[test]
    fn a_list_past_the_cap_is_refused_and_names_are_sorted_by_type() {
        let row = |n: &str| {
            let s = |t: &str| Value::Str(t.into());
            Value::Struct(vec![s(n), s(""), s("loaded"), s("active"), s("running")])
        };
        let mut read = Read::default();
        assert!(read.listed(&vec![row("x.service"); MAX_UNITS + 1]).is_err());
        let mut read = Read::default();
        read.add("b.service", "/b");
        read.add("b.service", "/b");
        read.listed(&[row("b.service"), row("a.target"), row("a.service")])
            .unwrap();
        // Sorted by type then name: a.service, b.service, a.target.
        assert_eq!(
            read.order,
            [0, 0, 1, 0, 2],
            "b read once, shown three times"
        );
        // The listed states are not asked again; the named unit's are.
        let mut asked = Vec::new();
        while let Some((b, _, _, name)) = read.next_call() {
            asked.push((b, name));
        }
        assert!(asked.contains(&(0, "ActiveState")) && !asked.contains(&(1, "ActiveState")));
        assert!(
            read.blocks[2].path.ends_with("a_2etarget"),
            "{:?}",
            read.blocks[2]
        );
    }
}
