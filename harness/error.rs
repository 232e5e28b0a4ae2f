//! Error classes that decide the process exit code.
//!
//! Errors travel as `anyhow::Error`; a marker in the chain says what kind of failure it
//! is, so a deep layer can classify without every caller re-wrapping.

use std::fmt;

/// Bad input from the user: a flag, a target string, a scenario or recipe file. Exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// The harness could not do its job (QEMU, image build, SSH, kernel panic). Exit 3.
///
/// Kept apart from a failing system under test, which is a verdict, not an error.
#[derive(Debug)]
pub struct InfraError(pub String);

impl fmt::Display for InfraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InfraError {}

/// Build an `anyhow::Error` marked as a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Build an `anyhow::Error` marked as an infrastructure error.
pub fn infra(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InfraError(msg.into()))
}

/// Exit codes shared by every command.
pub mod exit {
    /// Every verdict matched the plan.
    pub const OK: i32 = 0;
    /// A verdict did not match the plan.
    pub const MISMATCH: i32 = 1;
    /// Usage, scenario or recipe error.
    pub const USAGE: i32 = 2;
    /// Infrastructure error.
    pub const INFRA: i32 = 3;
}

/// Whose fault an error is. Travels with an error verdict, so a scenario's mistake
/// found inside a pair still exits 2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The user's input (a scenario, a plan, a flag): exit 2.
    Usage,
    /// The harness could not do its job: exit 3 (125 under `--bisect`).
    #[default]
    Infrastructure,
}

impl ErrorClass {
    /// The exit code of this class.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Usage => exit::USAGE,
            ErrorClass::Infrastructure => exit::INFRA,
        }
    }
}

/// The class of an error: usage when the chain holds a [`UsageError`], else infra.
pub fn class(err: &anyhow::Error) -> ErrorClass {
    if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        ErrorClass::Usage
    } else {
        ErrorClass::Infrastructure
    }
}

/// The exit code for an error: usage when the chain holds a [`UsageError`], else infra.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    class(err).exit_code()
}
