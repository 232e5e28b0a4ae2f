//! What a phase does after its boot: run, write, restart, inject a fault, cut the link,
//! settle, reboot or power-cycle.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Serialize};

use super::duration::ScenarioDuration;
use super::names::UnitName;

/// One step of a phase, run in order after the phase's boot (or straight away for a
/// `continue` phase). Written as a one-key map (`- run: CMD`) or a bare word (`- reboot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Run a shell command in the guest as root: `run: CMD` or `run: {cmd, status}`.
    Run(RunAction),
    /// Write a file in the guest: `write: {path, content, mode}`.
    Write(WriteAction),
    /// Restart a unit: `restart: UNIT` or `restart: {unit, no_block}`.
    Restart(RestartAction),
    /// Inject a named fault. The target defines what the name does; the scenario only names it.
    Fault(String),
    /// Set the guest's network link up or down (QMP `set_link`).
    Link(LinkState),
    /// Wait a fixed time. Discouraged (prefer an expectation with `within`), allowed for settling.
    Sleep(ScenarioDuration),
    /// Reboot the guest cleanly (`systemctl reboot`) and wait for it to come back.
    Reboot,
    /// Cut the power and cold-boot again on the same disk.
    #[serde(rename = "power-cycle")]
    PowerCycle,
}

/// `run:` — a command and the exit status it must end with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunAction {
    /// Shell command line, run by `sh -c` in the guest.
    pub cmd: String,
    /// Exit status the command must return (default 0); another status fails the phase.
    pub status: i32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RunActionFull")]
struct RunFull {
    /// Shell command line, run by `sh -c` in the guest.
    cmd: String,
    /// Exit status the command must return.
    #[serde(default)]
    status: i32,
}

/// `restart:` — a unit, and whether to return without waiting for the restart job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartAction {
    /// The unit to restart.
    pub unit: UnitName,
    /// `systemctl --no-block`: queue the job and go on (expectations then wait for it).
    pub no_block: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RestartActionFull")]
struct RestartFull {
    /// The unit to restart.
    unit: UnitName,
    /// Queue the restart job and go on without waiting for it.
    #[serde(default)]
    no_block: bool,
}

/// `write:` — a file written in the guest, replacing any old content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteAction {
    /// Absolute path in the guest.
    pub path: String,
    /// The whole new content.
    pub content: String,
    /// Octal permission bits written as a quoted string, such as "0644".
    #[serde(default, deserialize_with = "octal_mode")]
    #[schemars(with = "Option<String>", regex(pattern = r"^0?[0-7]{3,4}$"))]
    pub mode: Option<u32>,
}

/// State of the guest's network link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Link restored.
    Up,
    /// Link cut.
    Down,
}

/// Accept a short string form or the full map form of an action's argument.
fn short_or_full<'de, D, F, T>(
    d: D,
    short: fn(String) -> Result<T, String>,
    full: fn(F) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: Deserialize<'de>,
{
    struct V<F, T> {
        short: fn(String) -> Result<T, String>,
        full: fn(F) -> T,
    }
    impl<'de, F: Deserialize<'de>, T> Visitor<'de> for V<F, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a map")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.short)(v.to_string()).map_err(E::custom)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            F::deserialize(MapAccessDeserializer::new(map)).map(self.full)
        }
    }
    d.deserialize_any(V { short, full })
}

impl<'de> Deserialize<'de> for RunAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        short_or_full(
            d,
            |cmd| Ok(RunAction { cmd, status: 0 }),
            |f: RunFull| RunAction {
                cmd: f.cmd,
                status: f.status,
            },
        )
    }
}

impl<'de> Deserialize<'de> for RestartAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        short_or_full(
            d,
            |unit| {
                Ok(RestartAction {
                    unit: UnitName::parse(&unit)?,
                    no_block: false,
                })
            },
            |f: RestartFull| RestartAction {
                unit: f.unit,
                no_block: f.no_block,
            },
        )
    }
}

fn string_or<T: JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
    doc: &str,
) -> schemars::Schema {
    let full = generator.subschema_for::<T>();
    schemars::json_schema!({
        "description": doc,
        "anyOf": [{"type": "string"}, full],
    })
}

impl JsonSchema for RunAction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RunAction".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_or::<RunFull>(generator, "a command line, or {cmd, status}")
    }
}

impl JsonSchema for RestartAction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RestartAction".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut s = string_or::<RestartFull>(generator, "a unit name, or {unit, no_block}");
        let unit = generator.subschema_for::<UnitName>();
        if let Some(any) = s.get_mut("anyOf").and_then(|v| v.as_array_mut()) {
            any[0] = unit.to_value();
        }
        s
    }
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an octal mode as a quoted string, such as \"0644\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let digits = v.strip_prefix("0o").unwrap_or(v);
            match u32::from_str_radix(digits, 8) {
                Ok(m) if (3..=4).contains(&digits.len()) && m <= 0o7777 => Ok(Some(m)),
                _ => Err(E::custom(format!(
                    "invalid mode {v:?}: expected an octal mode such as \"0644\""
                ))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "invalid mode {v}: write the mode as a quoted octal string, such as \"0644\" (YAML reads an unquoted 0644 as a number)"
            )))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_u64(v.unsigned_abs())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "invalid mode {v}: write the mode as a quoted octal string, such as \"0644\" (YAML reads an unquoted 0644 as a number)"
            )))
        }
    }
    d.deserialize_any(V)
}
