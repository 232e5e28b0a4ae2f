//! The guest channel: talking to a booted guest over SSH with a per-run key.
//!
//! `key` makes the key and the kernel argument that authorizes it, `quote` quotes one
//! word for a shell, `ssh` runs commands
//! (ssh2 is blocking, so every call runs on a blocking thread), `stream` follows
//! long-running watchers line by line, and `systemd` reads unit and job state through a
//! [`Guest`]. Parsers are pure and tested from recorded fixtures.
//!
//! Files:
//! - `dbus`: the D-Bus wire format, as much as the recorder needs to talk to PID 1
//! - `exec`: what a command run in the guest left behind
//! - `key`: the per-run SSH keys
//! - `listeners`: which unit listens on which TCP port
//! - `pump`: reading a channel's stdout and stderr together without deadlock
//! - `quote`: quoting one word for a POSIX shell
//! - `recorded`: commands recorded from a real guest and played back, for tests
//! - `shell`: a command line from words, and the interactive shell of `coldboot boot
//!   TARGET` (the quoter is `quote`'s)
//! - `ssh`: one SSH connection to a guest, as root, with the per-run key
//! - `stream`: long-lived commands whose stdout is read line by line as it arrives
//! - `recorder/`: the recorder's stream: PID 1's job queue and unit changes from early
//!   userspace
//! - `systemd/`: reading systemd state, and parsing what systemd prints

pub mod dbus;
pub mod exec;
pub mod key;
pub mod listeners;
mod pump;
pub mod quote;
pub mod recorded;
pub mod recorder;
pub mod shell;
pub mod ssh;
pub mod stream;
pub mod systemd;

pub use key::SshKey;
pub use ssh::{ExecOutput, Guest, HostKey};
pub use stream::{LineStream, StreamEnd};
