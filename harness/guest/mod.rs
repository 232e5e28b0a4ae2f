//! The guest channel: talking to a booted guest over SSH with a per-run key.
//!
//! `key` makes the key and the kernel argument that authorizes it, `quote` quotes one
//! word for a shell, `ssh` runs commands
//! (ssh2 is blocking, so every call runs on a blocking thread), `stream` follows
//! long-running watchers line by line, and `systemd` reads unit and job state through a
//! [`Guest`]. Parsers are pure and tested from recorded fixtures.

pub mod dbus;
pub mod key;
mod pump;
pub mod quote;
pub mod recorder;
pub mod shell;
pub mod ssh;
pub mod stream;
pub mod systemd;

pub use key::SshKey;
pub use ssh::{ExecOutput, Guest, HostKey};
pub use stream::{LineStream, StreamEnd};
