//! PID 1's and the services' journal, as `journalctl -o json` prints it. Pure.
//!
//! Only the fields the runner reads are asked for (journalctl adds the `__` ones), which
//! keeps the replay of a boot short on a slow guest.

use serde::{Deserialize, Serialize};

/// The journal command the watcher runs in the guest.
/// No `stdbuf -oL`: journalctl flushes its output whenever it has caught up and waits
/// for more (checked on systemd 252: an entry reached a file within a second), so the
/// replay of the boot goes out in large writes instead of one SSH packet per line.
/// Only the fields the runner reads are sent (journalctl adds the `__` ones), which keeps
/// the replay of the boot so far short on a slow guest.
pub const JOURNAL_FOLLOW: &str = "journalctl -b -f -n all -o json --no-pager \
    --output-fields=MESSAGE,UNIT,_SYSTEMD_UNIT,_PID,JOB_RESULT,JOB_TYPE,MESSAGE_ID";

/// One journal entry, reduced to what the runner uses.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// `__MONOTONIC_TIMESTAMP`: µs since the guest booted.
    pub mono_us: u64,
    /// `UNIT` (set by PID 1 on unit lifecycle messages), else `_SYSTEMD_UNIT`.
    pub unit: Option<String>,
    /// Whether PID 1 wrote it (a unit or job state change).
    pub from_manager: bool,
    /// `MESSAGE`.
    pub message: String,
    /// `JOB_RESULT`, on job completion messages.
    pub job_result: Option<String>,
    /// `JOB_TYPE` (`start`, `stop`...), on job completion messages.
    pub job_type: Option<String>,
    /// `MESSAGE_ID`, on catalogued messages (such as [`STARTUP_FINISHED`]).
    pub message_id: Option<String>,
}

/// `MESSAGE_ID` of PID 1's "Startup finished in ..." (systemd's catalog).
pub const STARTUP_FINISHED: &str = "b07a249cd024414a82dd00cd181378ff";

impl Entry {
    /// Whether PID 1 wrote this to say the boot finished starting up.
    pub fn finishes_startup(&self) -> bool {
        self.from_manager && self.message_id.as_deref() == Some(STARTUP_FINISHED)
    }

    /// Whether PID 1 wrote this to say `unit`'s start job ended (with any result).
    pub fn ends_start_job_of(&self, unit: &str) -> bool {
        self.from_manager
            && self.unit.as_deref() == Some(unit)
            && self.job_type.as_deref() == Some("start")
            && self.job_result.is_some()
    }
}

impl Entry {
    /// Parse one line of `journalctl -o json`; `None` for a line that is not an entry.
    pub fn parse(line: &str) -> Option<Entry> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let mono_us = field("__MONOTONIC_TIMESTAMP")?.parse().ok()?;
        let from_manager = field("_PID").as_deref() == Some("1");
        let unit = if from_manager {
            field("UNIT").or_else(|| field("_SYSTEMD_UNIT"))
        } else {
            field("_SYSTEMD_UNIT").or_else(|| field("UNIT"))
        };
        // MESSAGE may be an array of bytes when it is not valid UTF-8.
        let message = match v.get("MESSAGE") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(bytes)) => String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => String::new(),
        };
        Some(Entry {
            mono_us,
            unit,
            from_manager,
            message,
            job_result: field("JOB_RESULT"),
            job_type: field("JOB_TYPE"),
            message_id: field("MESSAGE_ID"),
        })
    }
}

/// The largest `__MONOTONIC_TIMESTAMP` among `journalctl -o json` lines (0 if none):
/// how far into a boot a recorded journal reaches.
pub fn last_monotonic_us(journal: &str) -> u64 {
    #[derive(Deserialize)]
    struct Stamp {
        #[serde(rename = "__MONOTONIC_TIMESTAMP")]
        monotonic: Option<String>,
    }
    journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Stamp>(l).ok())
        .filter_map(|e| e.monotonic?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Per unit, when PID 1 logged its first successful start job in a recorded boot
/// (`JOB_TYPE=start`, `JOB_RESULT=done`): µs on the guest's monotonic clock, which starts
/// with the kernel. This is "time to active" by the guest's own account, free of the
/// harness's polling and of the host's load on the SSH round trip.
pub fn start_jobs_done(journal: &str) -> std::collections::BTreeMap<String, u64> {
    #[derive(Deserialize)]
    struct Done {
        #[serde(rename = "__MONOTONIC_TIMESTAMP")]
        monotonic: Option<String>,
        #[serde(rename = "_PID")]
        pid: Option<String>,
        #[serde(rename = "UNIT")]
        unit: Option<String>,
        #[serde(rename = "JOB_TYPE")]
        job_type: Option<String>,
        #[serde(rename = "JOB_RESULT")]
        job_result: Option<String>,
    }
    let mut done = std::collections::BTreeMap::new();
    for line in journal.lines() {
        let Ok(e) = serde_json::from_str::<Done>(line) else {
            continue;
        };
        if e.pid.as_deref() != Some("1")
            || e.job_type.as_deref() != Some("start")
            || e.job_result.as_deref() != Some("done")
        {
            continue;
        }
        if let (Some(unit), Some(us)) = (e.unit, e.monotonic.and_then(|m| m.parse().ok())) {
            done.entry(unit).or_insert(us);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_end_is_the_largest_monotonic_stamp() {
        let j = "{\"__MONOTONIC_TIMESTAMP\":\"900\"}\nnot json\n{\"__MONOTONIC_TIMESTAMP\":\"1200\"}\n{\"MESSAGE\":\"x\"}\n";
        assert_eq!(last_monotonic_us(j), 1200);
        assert_eq!(last_monotonic_us(""), 0);
    }

    #[test]
    fn start_jobs_done_reads_a_recorded_boot() {
        let journal = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/reference-run/after__clean-cold-boot/journal-boot-1.json"
        ))
        .expect("the reference run is in the repository");
        let done = start_jobs_done(&journal);
        // Recorded: deploy-proxy's start job finished after traefik's and sysinit's.
        let proxy = done["deploy-proxy.service"];
        assert!(done["sysinit.target"] < done["traefik.service"]);
        assert!(done["traefik.service"] < proxy, "{done:?}");
        assert!(proxy > 10_000_000 && proxy < 120_000_000, "{proxy}");
        // A failed or a stop job is not a start that finished.
        let lines = concat!(
            r#"{"__MONOTONIC_TIMESTAMP":"5","_PID":"1","UNIT":"a.service","JOB_TYPE":"start","JOB_RESULT":"failed"}"#,
            "\n",
            r#"{"__MONOTONIC_TIMESTAMP":"6","_PID":"1","UNIT":"b.service","JOB_TYPE":"stop","JOB_RESULT":"done"}"#,
            "\n",
            r#"{"__MONOTONIC_TIMESTAMP":"7","_PID":"9","UNIT":"c.service","JOB_TYPE":"start","JOB_RESULT":"done"}"#,
            "\n",
            r#"{"__MONOTONIC_TIMESTAMP":"8","_PID":"1","UNIT":"d.service","JOB_TYPE":"start","JOB_RESULT":"done"}"#,
            "\n",
            r#"{"__MONOTONIC_TIMESTAMP":"9","_PID":"1","UNIT":"d.service","JOB_TYPE":"start","JOB_RESULT":"done"}"#,
        );
        let done = start_jobs_done(lines);
        assert_eq!(
            done.into_iter().collect::<Vec<_>>(),
            [("d.service".to_string(), 8)]
        );
    }

    #[test]
    fn parses_a_manager_entry() {
        let line = r#"{"__MONOTONIC_TIMESTAMP":"23456789","_PID":"1","UNIT":"deploy-proxy.service","MESSAGE":"deploy-proxy.service: Failed with result 'timeout'.","JOB_RESULT":"timeout","_SYSTEMD_UNIT":"init.scope"}"#;
        let e = Entry::parse(line).expect("an entry");
        assert_eq!(e.mono_us, 23_456_789);
        assert!(e.from_manager);
        assert_eq!(e.unit.as_deref(), Some("deploy-proxy.service"));
        assert_eq!(e.job_result.as_deref(), Some("timeout"));
    }

    #[test]
    fn service_output_is_attributed_to_its_unit() {
        let line = r#"{"__MONOTONIC_TIMESTAMP":"5","_PID":"812","_SYSTEMD_UNIT":"deploy-proxy.service","MESSAGE":[104,105]}"#;
        let e = Entry::parse(line).expect("an entry");
        assert!(!e.from_manager);
        assert_eq!(e.unit.as_deref(), Some("deploy-proxy.service"));
        assert_eq!(e.message, "hi");
        assert!(Entry::parse("not json").is_none());
    }
}
