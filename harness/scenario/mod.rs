//! The scenario language: scenario files, plans, and their validation with
//! `file:line:col` diagnostics.
//!
//! serde-saphyr checks the shape (unknown keys, bad values, durations, unit names,
//! regular expressions) and reports where; `load` then checks what needs several fields
//! at once, pointing at the spans it kept.
//!
//! Files:
//! - `action`: what a phase does after its boot
//! - `diag`: located diagnostics
//! - `duration`: durations as scenario authors write them
//! - `expectation`: what must hold in a phase
//! - `files`: `coldboot check FILE...` and `coldboot schema`
//! - `kinds`: one descriptor per expectation kind
//! - `load`: reading a scenario file
//! - `model`: a loaded, validated scenario
//! - `names`: validated strings
//! - `order`: the order pairs start in, when several run at once
//! - `plan`: plans
//! - `raw`: the file formats exactly as serde-saphyr reads them, spans kept
//! - `shard`: `--shard I/N`
//! - `target_spec`: the target string a user writes

pub mod action;
pub mod diag;
pub mod duration;
pub mod expectation;
pub mod files;
pub mod kinds;
pub mod load;
pub mod model;
pub mod names;
pub mod order;
pub mod plan;
mod raw;
pub mod shard;
pub mod target_spec;

pub use action::{Action, LinkState, RestartAction, RunAction, WriteAction};
pub use diag::Diagnostic;
pub use duration::{ScenarioDuration, format_duration, parse_duration};
pub use expectation::{
    BootBudget, CommandExpectation, DEFAULT_PERSIST, FileExpectation, HttpExpectation,
    JournalExpectation, NoFailedUnits, OrderAnchor, OrderExpectation, ProbeFrom, TextMatch,
    UnitExpectation, UnitResult, UnitState, WaitCycleCheck, WaitCycleExpectation,
};
pub use files::{FileCheck, FileKind, check_file, check_files, json_schema};
pub use kinds::{
    Evidence, Expectation, ExpectationKind, GateHonestExpectation, KindSpec, Source,
    StableExpectation, StableProbe, Wait,
};
pub use load::{load_scenario, parse_scenario};
pub use model::{
    BootOptions, Highlight, Layout, Milestone, Phase, PhaseStart, PlanReport, ReportHints,
    Scenario, Section,
};
pub use names::{Pattern, UnitName};
pub use plan::{
    Claim, Expected, LoadedPlan, Plan, PlanRun, Proof, Reproduction, RunPair, TargetFlag,
    adhoc_pairs, load_plan, parse_plan, parse_target_flag,
};
pub use shard::{Shard, parse_shard, shard};
pub use target_spec::TargetSpec;
