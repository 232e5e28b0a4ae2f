//! What a command run in the guest left behind: the type every way of running one
//! ([`super::ssh`], [`super::recorded`]) answers with.

use serde::{Deserialize, Serialize};

/// What a finished command left behind. A non-zero status is data, not an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit status; 128 + N when the command died of signal N (as a shell reports it).
    pub status: i32,
    /// The signal name (`KILL`, `TERM`...) when the command died of a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Everything the command wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything the command wrote to stderr (lossy UTF-8).
    pub stderr: String,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}
