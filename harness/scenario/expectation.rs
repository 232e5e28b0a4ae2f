//! What each kind of expectation checks: the payloads of [`super::kinds::ExpectationKind`]
//! (which, with the stable id plans and reports name, is an [`super::kinds::Expectation`]).
//!
//! **Timing.** A phase's expectations are awaited in file order. Each `within` counts
//! from the moment the previous expectation of the phase was decided; the first counts
//! from the phase's start (QEMU start for a cold boot or power-cycle, the reboot request
//! for a reboot, the end of the last action for `continue`). So `unit: A, within: 120s`
//! followed by `http: {..., within: 10s}` means "A by 120 s, then the probe answers
//! within 10 s of that". How each kind waits is its descriptor's `wait()`
//! (`scenario/kinds.rs`).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::ScenarioDuration;
use super::names::{Pattern, UnitName};

/// A unit's `ActiveState` as systemd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Started (or, for a oneshot with RemainAfterExit, finished well).
    Active,
    /// Ended in failure.
    Failed,
    /// Not running.
    Inactive,
    /// Its start job is running.
    Activating,
}

impl UnitState {
    /// The word systemd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Active => "active",
            UnitState::Failed => "failed",
            UnitState::Inactive => "inactive",
            UnitState::Activating => "activating",
        }
    }
}

/// A service's `Result` property as systemd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UnitResult {
    /// Ended or runs without error.
    Success,
    /// Protocol violation (for example a PID file never written).
    Protocol,
    /// Out of resources (fork failed).
    Resources,
    /// A timeout (`TimeoutStartSec` for a start) ran out.
    Timeout,
    /// The main process exited with a non-zero status.
    ExitCode,
    /// The main process was killed by a signal.
    Signal,
    /// The main process dumped core.
    CoreDump,
    /// The watchdog fired.
    Watchdog,
    /// The start rate limit was hit.
    StartLimitHit,
    /// The OOM killer ended it.
    OomKill,
    /// An `ExecCondition=` command failed.
    ExecCondition,
}

impl UnitResult {
    /// The word systemd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitResult::Success => "success",
            UnitResult::Protocol => "protocol",
            UnitResult::Resources => "resources",
            UnitResult::Timeout => "timeout",
            UnitResult::ExitCode => "exit-code",
            UnitResult::Signal => "signal",
            UnitResult::CoreDump => "core-dump",
            UnitResult::Watchdog => "watchdog",
            UnitResult::StartLimitHit => "start-limit-hit",
            UnitResult::OomKill => "oom-kill",
            UnitResult::ExecCondition => "exec-condition",
        }
    }
}

/// `unit:` expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitExpectation {
    /// The unit watched.
    pub unit: UnitName,
    /// The `ActiveState` it must reach.
    pub state: UnitState,
    /// How long it may take (see the module's Timing note).
    pub within: ScenarioDuration,
    /// The `Result` it must have when it gets there, if given.
    pub result: Option<UnitResult>,
    /// systemd properties it must show once it gets there, as `systemctl show -p NAME
    /// --value` prints them (such as `ExecMainStatus: "2"`, `Type: oneshot`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// `order:` expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderExpectation {
    /// The anchor, which must have finished starting first (active, or a failed oneshot
    /// that left `activating`).
    pub after: UnitName,
    /// The units that must have started (left `inactive`) only after that.
    pub units: Vec<UnitName>,
    /// What "finished starting" means for the anchor (default: it became active, or a
    /// failed oneshot left `activating`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<OrderAnchor>,
}

/// The moment the consumers of an `order:` must start after, on the guest's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OrderAnchor {
    /// PID 1's entry that the anchor's start job ended (`JOB_TYPE=start`, any result):
    /// what systemd orders `After=` on, whatever the unit's type makes of "active".
    StartJob,
    /// The first journal line of the anchor matching this regular expression, such as
    /// a health gate's decision line: the consumers must start after the gate decided.
    Journal(crate::scenario::Pattern),
}

/// Where an HTTP probe is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeFrom {
    /// Inside the guest (curl over the guest channel).
    Guest,
    /// From the host, through a port forward the harness adds for the URL's port.
    Host,
}

impl ProbeFrom {
    /// `guest` or `host`, as written in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeFrom::Guest => "guest",
            ProbeFrom::Host => "host",
        }
    }
}

/// `http:` expectation. The URL is written as seen from inside the guest; for `from: host`
/// the harness forwards its port and rewrites host and port (so a host probe only reaches a
/// service that listens on the guest's network interface, not one bound to 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpExpectation {
    /// Where the probe is made from.
    #[serde(default = "default_from")]
    pub from: ProbeFrom,
    /// `http://HOST[:PORT]/PATH` as seen from the guest.
    pub url: String,
    /// The HTTP status the answer must have (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// What the body must hold, if anything.
    #[serde(default)]
    pub body: Option<TextMatch>,
    /// Keep probing until this time has passed (default 30s).
    #[serde(default = "default_within")]
    pub within: ScenarioDuration,
    /// For an `https://` URL: a PEM file in the guest holding the CA that the server's
    /// certificate must chain to (such as the proxy's internal root). Without it, the
    /// prober's own trust store. Verification is never turned off: a proxy whose
    /// certificate does not verify is not serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// `journal:` expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalExpectation {
    /// Only lines of this unit (`_SYSTEMD_UNIT` or `UNIT`), if given.
    #[serde(default)]
    pub unit: Option<UnitName>,
    /// Regular expression searched in each MESSAGE of this boot.
    pub pattern: Pattern,
    /// Keep watching until this time has passed (default 30s).
    #[serde(default = "default_within")]
    pub within: ScenarioDuration,
}

/// `file:` expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileExpectation {
    /// Absolute path in the guest.
    pub path: String,
    /// What its content must hold.
    pub content: TextMatch,
}

/// `command:` expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandExpectation {
    /// Shell command line, run by `sh -c` in the guest as root.
    pub run: String,
    /// The exit status it must return (default 0).
    #[serde(default)]
    pub status: i32,
    /// What its standard output must hold, if anything.
    #[serde(default)]
    pub stdout: Option<TextMatch>,
    /// What its standard error must hold, if anything.
    #[serde(default)]
    pub stderr: Option<TextMatch>,
}

/// `no_failed_units:` expectation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFailedUnits {
    /// Units allowed to be failed.
    #[serde(default)]
    pub except: Vec<UnitName>,
}

/// `boot_budget:` expectation: the boot finishes within this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct BootBudget(pub ScenarioDuration);

/// `wait_cycle:` expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitCycleExpectation {
    /// No wait-for cycle may appear.
    Absent,
    /// A wait-for cycle must appear (the before-target of a reproduction).
    Expected,
}

/// How long a cycle must last before it counts, unless the scenario says `persist:`.
pub const DEFAULT_PERSIST: Duration = Duration::from_secs(10);

/// A `wait_cycle:` expectation with its persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitCycleCheck {
    /// Absent or expected.
    pub expect: WaitCycleExpectation,
    /// How long a cycle must last to count (default [`DEFAULT_PERSIST`]).
    pub persist: ScenarioDuration,
    /// Whether waits nobody declared are inferred from refused connections (`infer:`,
    /// default true; see `crate::check::infer`).
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub infer: bool,
}

fn yes() -> bool {
    true
}

/// How a text (HTTP body, file content, command output) is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TextMatch {
    /// The text contains this string.
    Contains(String),
    /// The text equals this string (one trailing newline on either side is ignored).
    Equals(String),
    /// The regular expression is found in the text.
    Regex(Pattern),
}

impl TextMatch {
    /// Whether `text` satisfies this match.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            TextMatch::Contains(s) => text.contains(s.as_str()),
            TextMatch::Equals(s) => {
                text.strip_suffix('\n').unwrap_or(text) == s.strip_suffix('\n').unwrap_or(s)
            }
            TextMatch::Regex(p) => p.is_match(text),
        }
    }
}

impl fmt::Display for TextMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextMatch::Contains(s) => write!(f, "contains {s:?}"),
            TextMatch::Equals(s) => write!(f, "equals {s:?}"),
            TextMatch::Regex(p) => write!(f, "matches /{p}/"),
        }
    }
}

fn default_from() -> ProbeFrom {
    ProbeFrom::Guest
}
fn default_status() -> u16 {
    200
}
/// Default `within` for HTTP probes and journal matches.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(30);
fn default_within() -> ScenarioDuration {
    ScenarioDuration(DEFAULT_WITHIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches() {
        assert!(TextMatch::Contains("ok".into()).matches("it is ok\n"));
        assert!(TextMatch::Equals("v2".into()).matches("v2\n"));
        assert!(!TextMatch::Equals("v2".into()).matches("v21"));
        assert!(TextMatch::Regex(Pattern::parse("^v[0-9]$").unwrap()).matches("v3"));
        assert!(!TextMatch::Regex(Pattern::parse("^v[0-9]$").unwrap()).matches("x"));
    }
}
