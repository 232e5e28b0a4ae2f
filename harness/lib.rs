//! coldboot: cold-boot a throwaway VM of a control plane, watch systemd while it boots,
//! and give a verdict backed by evidence.
//!
//! The flow runs one way: `scenario` files and a `target` become a boot of one `vm`,
//! reached through the `guest` channel; `check` turns what was seen into verdicts and
//! `evidence` writes them down. Pure logic (parsing, graphs, rendering) never starts a
//! process, so it can be tested from recorded fixtures without a VM.

pub mod check;
pub mod dirs;
pub mod error;
pub mod evidence;
pub mod guest;
pub mod progress;
pub mod run;
pub mod scenario;
pub mod targets;
pub mod unix;
pub mod vm;
