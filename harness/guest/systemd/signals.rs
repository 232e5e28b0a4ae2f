//! PID 1's unit signals on the system bus, as `busctl monitor --json=short` prints them.
//!
//! PID 1 announces every change of a unit with `PropertiesChanged` signals (first the
//! type's interface, `...systemd1.Service`, then `...systemd1.Unit` with `ActiveState`
//! and its timestamps) when a client has subscribed; logind subscribes on every target
//! the harness runs. They reach a monitor within milliseconds of the change, while PID
//! 1's journal entry about it reaches `journalctl -f` 250 to 450 ms later (journald
//! batches its change notifications), so unit waits decide from these first.

use std::collections::BTreeMap;

use serde::Serialize;

/// The command that follows PID 1's signals about `units` (none: `None`). One match per
/// unit's object path: PID 1 signals every unit's every change, each a few KiB of JSON,
/// and on a booting TCG guest printing them all fell a quarter of a second behind.
pub fn follow_command<S: AsRef<str>>(units: &[S]) -> Option<String> {
    if units.is_empty() {
        return None;
    }
    let matches: Vec<String> = units
        .iter()
        .map(|u| {
            let rule = format!(
                "type='signal',sender='org.freedesktop.systemd1',\
                 interface='org.freedesktop.DBus.Properties',path='{UNIT_PATH}{}'",
                escape_label(u.as_ref())
            );
            crate::guest::shell::quote(&format!("--match={rule}"))
        })
        .collect();
    Some(format!("busctl monitor --json=short {}", matches.join(" ")))
}

/// The interface whose `PropertiesChanged` carries a unit's `ActiveState`.
pub const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// Prefix of a unit's object path.
const UNIT_PATH: &str = "/org/freedesktop/systemd1/unit/";

/// One `PropertiesChanged` of a unit: the properties PID 1 sent with their values, as
/// `systemctl show` prints them (booleans `yes`/`no`, numbers in decimal). Properties of
/// other types (arrays, structures) and invalidated ones are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitChange {
    /// The unit, from the signal's object path.
    pub unit: String,
    /// The D-Bus interface the properties belong to.
    pub interface: String,
    /// Property name → value.
    pub properties: BTreeMap<String, String>,
}

impl UnitChange {
    /// Parse one line of `busctl monitor --json=short`; `None` for anything that is not a
    /// unit's `PropertiesChanged`.
    pub fn parse(line: &str) -> Option<UnitChange> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("member")?.as_str()? != "PropertiesChanged" {
            return None;
        }
        let unit = unescape_label(v.get("path")?.as_str()?.strip_prefix(UNIT_PATH)?)?;
        let data = v.get("payload")?.get("data")?.as_array()?;
        let interface = data.first()?.as_str()?.to_string();
        let mut properties = BTreeMap::new();
        for (name, variant) in data.get(1)?.as_object()? {
            let value = variant.get("data")?;
            let shown = match variant.get("type")?.as_str()? {
                "s" | "o" => value.as_str()?.to_string(),
                "b" => if value.as_bool()? { "yes" } else { "no" }.to_string(),
                "y" | "n" | "q" | "i" | "u" | "x" | "t" => value.as_number()?.to_string(),
                _ => continue,
            };
            properties.insert(name.clone(), shown);
        }
        Some(UnitChange {
            unit,
            interface,
            properties,
        })
    }

    /// Whether this is the change that carries the unit's `ActiveState`.
    pub fn is_state(&self) -> bool {
        self.interface == UNIT_INTERFACE
    }

    /// A property as an integer (a `...TimestampMonotonic`, say).
    pub fn number(&self, name: &str) -> Option<u64> {
        self.properties.get(name)?.parse().ok()
    }
}

/// systemd's object-path label escaping (`bus_label_escape`): letters stay, digits stay
/// unless first, anything else is `_` and two hex digits.
pub(crate) fn escape_label(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// systemd's object-path label escaping undone: `_2d` is `-`, `_2e` is `.`.
pub(crate) fn unescape_label(label: &str) -> Option<String> {
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// PID 1's signals recorded on the model guest (a restart of reports.service, a
/// transient unit failing with status 2), parsed: the tests' data.
#[cfg(test)]
pub(crate) fn recorded() -> Vec<UnitChange> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/guest/busctl-monitor-systemd1.jsonl"
    ))
    .expect("recorded busctl monitor output");
    text.lines().filter_map(UnitChange::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_come_from_the_escaped_path() {
        let cmd = follow_command(&["deploy-proxy.service"]).expect("a command");
        assert!(
            cmd.contains("/org/freedesktop/systemd1/unit/deploy_2dproxy_2eservice"),
            "{cmd}"
        );
        assert_eq!(follow_command::<&str>(&[]), None);
        assert_eq!(
            unescape_label("deploy_2dproxy_2eservice").as_deref(),
            Some("deploy-proxy.service")
        );
        assert_eq!(
            unescape_label("system_2dgetty_2eslice").as_deref(),
            Some("system-getty.slice")
        );
        for name in [
            "deploy-proxy.service",
            "getty@tty1.service",
            "2fast.target",
            "a_b.mount",
        ] {
            assert_eq!(unescape_label(&escape_label(name)).as_deref(), Some(name));
        }
        assert_eq!(escape_label("2fast.target"), "_32fast_2etarget");
        assert_eq!(unescape_label("bad_2"), None);
        assert_eq!(unescape_label("bad_zz"), None);
    }

    #[test]
    fn a_recorded_restart_reads_as_states_in_order() {
        let changes = recorded();
        assert!(!changes.is_empty());
        let states: Vec<&str> = changes
            .iter()
            .filter(|c| c.unit == "reports.service" && c.is_state())
            .filter_map(|c| c.properties.get("ActiveState").map(String::as_str))
            .collect();
        // systemctl restart: the stop, then the start (a second "active" as its job ends).
        assert_eq!(states, ["inactive", "activating", "active", "active"]);
        // The type's interface comes with Result and the main process's status.
        let service = changes
            .iter()
            .find(|c| c.unit == "reports.service" && !c.is_state())
            .expect("a Service change");
        assert_eq!(service.interface, "org.freedesktop.systemd1.Service");
        assert!(service.properties.contains_key("ExecMainStatus"));
        assert_eq!(
            service.properties.get("Result").map(String::as_str),
            Some("success")
        );
    }

    #[test]
    fn a_failed_unit_carries_its_result_before_its_state() {
        let changes = recorded();
        let probe: Vec<&UnitChange> = changes
            .iter()
            .filter(|c| c.unit == "failing-probe.service")
            .collect();
        let failed = probe
            .iter()
            .position(|c| c.properties.get("ActiveState").map(String::as_str) == Some("failed"))
            .expect("recorded: the transient unit failed");
        assert!(probe[failed].number("InactiveEnterTimestampMonotonic") > Some(0));
        let service = probe[..failed]
            .iter()
            .rev()
            .find(|c| !c.is_state())
            .expect("the Service change before it");
        assert_eq!(
            service.properties.get("Result").map(String::as_str),
            Some("exit-code")
        );
        assert_eq!(
            service.properties.get("ExecMainStatus").map(String::as_str),
            Some("2")
        );
        // Booleans read as systemctl prints them; arrays are left out.
        assert_eq!(
            probe[failed]
                .properties
                .get("ConditionResult")
                .map(String::as_str),
            Some("yes")
        );
        assert!(!probe[failed].properties.contains_key("Job"));
    }

    #[test]
    fn other_lines_are_not_changes() {
        assert_eq!(UnitChange::parse("Monitoring bus message stream."), None);
        assert_eq!(UnitChange::parse("{\"member\":\"JobRemoved\"}"), None);
        assert_eq!(UnitChange::parse("{"), None);
    }
}
