//! Unit state as `systemctl show -p ...` prints it: one `Key=value` block per unit,
//! blocks separated by a blank line, in the order the units were named. Pure.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The properties [`super::unit_snapshot`] asks for. Keep in sync with [`UnitState`].
pub const PROPERTIES: &[&str] = &[
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "Type",
    "NRestarts",
    "ExecMainCode",
    "ExecMainStatus",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "ActiveExitTimestampMonotonic",
    "InactiveEnterTimestampMonotonic",
    "StateChangeTimestampMonotonic",
    "ExecMainStartTimestampMonotonic",
    "ExecMainExitTimestampMonotonic",
    "TimeoutStartUSec",
    "RemainAfterExit",
];

/// One unit's state at the moment of the snapshot. Timestamps are CLOCK_MONOTONIC in
/// microseconds, `None` when systemd reports 0 (never happened in this boot).
/// Properties a unit type does not have (`Result` on a target) are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    /// Unit name, e.g. `ssh.service`.
    pub id: String,
    /// `loaded`, `not-found`, `masked`, `error`... (empty when not asked for)
    pub load_state: String,
    /// `active`, `activating`, `inactive`, `failed`...
    pub active_state: String,
    /// Type-specific state: `running`, `exited`, `start`, `dead`...
    pub sub_state: String,
    /// Why the unit last stopped: `success`, `timeout`, `exit-code`... (services, mounts...)
    pub result: Option<String>,
    /// Service type: `simple`, `oneshot`, `notify`... (services only)
    pub service_type: Option<String>,
    /// How often the service was restarted automatically.
    pub n_restarts: Option<u32>,
    /// How the main process ended: 1 exited, 2 killed, 3 dumped core (CLD_* codes); 0 none.
    pub exec_main_code: Option<i32>,
    /// Exit status (or signal number) of the main process.
    pub exec_main_status: Option<i32>,
    /// Left inactive: the start job began running.
    pub inactive_exit_us: Option<u64>,
    /// Became active.
    pub active_enter_us: Option<u64>,
    /// Left active: stopping began.
    pub active_exit_us: Option<u64>,
    /// Became inactive (or failed).
    pub inactive_enter_us: Option<u64>,
    /// Last change of ActiveState.
    pub state_change_us: Option<u64>,
    /// The main process was started.
    pub exec_main_start_us: Option<u64>,
    /// The main process exited.
    pub exec_main_exit_us: Option<u64>,
    /// How long a start job may run before systemd gives up (`TimeoutStartUSec`);
    /// `None` for `infinity` or when not asked for.
    #[serde(default)]
    pub timeout_start_us: Option<u64>,
    /// `RemainAfterExit` (services only): whether a oneshot stays active once it exited.
    #[serde(default)]
    pub remain_after_exit: Option<bool>,
}

/// Parse the output of `systemctl show -p <PROPERTIES> UNIT...`.
pub fn parse_show(text: &str) -> anyhow::Result<Vec<UnitState>> {
    let mut units = Vec::new();
    for (index, block) in blocks(text).into_iter().enumerate() {
        units.push(
            unit_from_block(&block)
                .map_err(|e| anyhow::anyhow!("systemctl show output, block {}: {e}", index + 1))?,
        );
    }
    Ok(units)
}

/// `base` (blank-line separated `systemctl show` blocks) with the blocks of the units
/// in `reread` replaced by `fresh`'s: a unit `fresh` has no block for is gone (PID 1 no
/// longer knows it), and `fresh`'s blocks of units `base` lacked are added at the end.
/// Blocks are matched by their `Id`; the text is laid out as both reads lay it out.
pub fn replace_blocks(base: &str, fresh: &str, reread: &[String]) -> String {
    let raw = |text: &str| -> Vec<String> {
        text.split("\n\n")
            .map(|b| b.trim_matches('\n'))
            .filter(|b| !b.is_empty())
            .map(|b| format!("{b}\n"))
            .collect()
    };
    let id = |block: &str| -> Option<String> {
        block
            .lines()
            .find_map(|l| l.strip_prefix("Id="))
            .map(str::to_string)
    };
    let mut fresh: Vec<(Option<String>, String)> =
        raw(fresh).into_iter().map(|b| (id(&b), b)).collect();
    let mut out = Vec::new();
    for block in raw(base) {
        match id(&block) {
            Some(unit) if reread.contains(&unit) => {
                if let Some(i) = fresh.iter().position(|(f, _)| f.as_deref() == Some(&unit)) {
                    out.push(fresh.remove(i).1);
                }
            }
            _ => out.push(block),
        }
    }
    out.extend(fresh.into_iter().map(|(_, b)| b));
    out.join("\n")
}

/// Split into `Key=value` maps at blank lines.
fn blocks(text: &str) -> Vec<HashMap<&str, &str>> {
    let mut out = Vec::new();
    let mut current = HashMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            current.insert(k, v);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn unit_from_block(b: &HashMap<&str, &str>) -> anyhow::Result<UnitState> {
    let text = |k: &str| b.get(k).filter(|v| !v.is_empty()).map(|v| (*v).to_owned());
    let required = |k: &str| text(k).ok_or_else(|| anyhow::anyhow!("no {k}="));
    let id = required("Id")?;
    let number = |k: &str| -> anyhow::Result<Option<i64>> {
        match b.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{id}: {k}={v} is not a number")),
        }
    };
    let int = |k: &str| -> anyhow::Result<Option<i32>> {
        number(k)?
            .map(|n| i32::try_from(n).map_err(|_| anyhow::anyhow!("{id}: {k}={n} is out of range")))
            .transpose()
    };
    let stamp = |k: &str| -> anyhow::Result<Option<u64>> {
        match b.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(anyhow::anyhow!("{id}: {k}={v} is not a timestamp")),
            },
        }
    };
    Ok(UnitState {
        // Recordings made with a shorter `-p` list may lack these two.
        load_state: text("LoadState").unwrap_or_default(),
        active_state: required("ActiveState")?,
        sub_state: text("SubState").unwrap_or_default(),
        result: text("Result"),
        service_type: text("Type"),
        n_restarts: int("NRestarts")?.map(|n| n.max(0) as u32),
        exec_main_code: int("ExecMainCode")?,
        exec_main_status: int("ExecMainStatus")?,
        inactive_exit_us: stamp("InactiveExitTimestampMonotonic")?,
        active_enter_us: stamp("ActiveEnterTimestampMonotonic")?,
        active_exit_us: stamp("ActiveExitTimestampMonotonic")?,
        inactive_enter_us: stamp("InactiveEnterTimestampMonotonic")?,
        state_change_us: stamp("StateChangeTimestampMonotonic")?,
        exec_main_start_us: stamp("ExecMainStartTimestampMonotonic")?,
        exec_main_exit_us: stamp("ExecMainExitTimestampMonotonic")?,
        timeout_start_us: match b.get("TimeoutStartUSec").filter(|v| !v.is_empty()) {
            None | Some(&"infinity") => None,
            Some(v) => Some(
                super::analyze::parse_timespan(v)
                    .map_err(|e| anyhow::anyhow!("{id}: TimeoutStartUSec={v}: {e}"))?,
            ),
        },
        remain_after_exit: text("RemainAfterExit").map(|v| v == "yes"),
        id,
    })
}

impl UnitState {
    /// When the unit finished starting: when it became active, or, for a start that
    /// failed, when it left `activating` (became failed or inactive after its start began).
    pub fn finished_starting_us(&self) -> Option<u64> {
        match (
            self.active_enter_us,
            self.inactive_exit_us,
            self.inactive_enter_us,
        ) {
            (Some(active), _, _) => Some(active),
            (None, Some(began), Some(ended)) if ended > began => Some(ended),
            _ => None,
        }
    }

    /// When the unit's start began (it left inactive), if it did in this boot.
    pub fn started_us(&self) -> Option<u64> {
        self.inactive_exit_us
    }

    /// Whether PID 1 ending this unit's start job with `done` means it is active: true
    /// except for a oneshot service without `RemainAfterExit`, which is inactive again
    /// once its start is done.
    pub fn start_done_means_active(&self) -> bool {
        self.service_type.as_deref() != Some("oneshot") || self.remain_after_exit == Some(true)
    }

    /// `Result`, or the empty string for unit types that have none.
    pub fn result_str(&self) -> &str {
        self.result.as_deref().unwrap_or("")
    }
}

/// `(unit, ActiveState)` from `systemctl list-units --plain --no-legend`.
pub fn parse_list_units(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let unit = f.next()?;
            let _load = f.next()?;
            let active = f.next()?;
            Some((unit.to_string(), active.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Type=oneshot
Result=timeout
ExecMainStartTimestampMonotonic=5000
ExecMainExitTimestampMonotonic=0
ExecMainCode=2
ExecMainStatus=15
TimeoutStartUSec=1min 30s
Id=a.service
LoadState=loaded
ActiveState=failed
SubState=failed
StateChangeTimestampMonotonic=9000

Id=b.target
LoadState=not-found
ActiveState=inactive
SubState=dead
InactiveExitTimestampMonotonic=0
";

    #[test]
    fn blocks_become_units_in_order() {
        let units = parse_show(SAMPLE).unwrap();
        assert_eq!(units.len(), 2);
        let a = &units[0];
        assert_eq!(a.id, "a.service");
        assert_eq!(a.result.as_deref(), Some("timeout"));
        assert_eq!(a.exec_main_status, Some(15));
        assert_eq!(a.exec_main_start_us, Some(5000));
        assert_eq!(a.exec_main_exit_us, None);
        assert_eq!(a.state_change_us, Some(9000));
        assert_eq!(a.timeout_start_us, Some(90_000_000));
        let b = &units[1];
        assert_eq!(
            (b.id.as_str(), b.load_state.as_str()),
            ("b.target", "not-found")
        );
        assert_eq!((b.result.clone(), b.inactive_exit_us), (None, None));
    }

    #[test]
    fn bad_numbers_name_the_unit_and_property() {
        let err = parse_show("Id=x.service\nLoadState=loaded\nActiveState=active\nSubState=running\nExecMainStatus=abc\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("x.service: ExecMainStatus=abc"),
            "{err}"
        );
    }

    #[test]
    fn missing_id_or_active_state_is_an_error() {
        let err = parse_show("LoadState=loaded\n").unwrap_err();
        assert!(err.to_string().contains("block 1: no Id="), "{err}");
        let err = parse_show("Id=a.service\nLoadState=loaded\n").unwrap_err();
        assert!(err.to_string().contains("no ActiveState="), "{err}");
    }

    #[test]
    fn list_units_lines() {
        let text = "deploy-proxy.service loaded failed failed deploy traefik\nssh.service loaded active running OpenBSD Secure Shell server\n";
        assert_eq!(
            parse_list_units(text),
            vec![
                ("deploy-proxy.service".to_string(), "failed".to_string()),
                ("ssh.service".to_string(), "active".to_string())
            ]
        );
    }

    #[test]
    fn empty_output_is_no_units() {
        assert!(parse_show("\n").unwrap().is_empty());
    }

    #[test]
    fn replace_blocks_rereads_only_the_changed_units() {
        let base = "Id=a.service\nActiveState=active\n\nId=b.service\nActiveState=activating\n\nId=c.service\nActiveState=active\n";
        let fresh = "Id=b.service\nActiveState=active\n\nId=d.service\nActiveState=failed\n";
        let reread = ["b.service", "c.service", "d.service"].map(String::from);
        let merged = replace_blocks(base, fresh, &reread);
        assert_eq!(
            merged,
            "Id=a.service\nActiveState=active\n\nId=b.service\nActiveState=active\n\nId=d.service\nActiveState=failed\n"
        );
        // Nothing re-read: the base as it was.
        assert_eq!(replace_blocks(base, "", &[]), base);
        let states = parse_show(&merged).unwrap();
        assert_eq!(states.len(), 3);
    }
}
