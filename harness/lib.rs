//! coldboot: cold-boot a throwaway VM of a control plane, watch systemd while it boots,
//! and give a verdict backed by evidence.
//!
//! The flow runs one way: `scenario` files and a `target` become a boot of one `vm`,
//! reached through the `guest` channel; `check` turns what was seen into verdicts and
//! `evidence` writes them down. Pure logic (parsing, graphs, rendering) never starts a
//! process, so it can be tested from recorded fixtures without a VM.
//!
//! Imports run one way, down this order: `run` → `evidence` → `check` → `targets` →
//! `guest` → `scenario` → `vm`, with `error`, `dirs`, `unix` and `progress` at the
//! ground. A type two layers share lives in the lower one (the schema of `verdict.json`
//! in `check::report`, a target's unit files and gates in `guest::systemd::sources`,
//! target strings in `scenario::target_spec`).

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
