//! Expectations and verdicts, with no processes: the runner collects what the guest
//! showed, and these functions decide. Everything here is tested from recorded data.
//! `report` is the schema of `verdict.json`, which the runner writes and the renderers read;
//! `timeline` is that of `timeline.jsonl`.
//!
//! Files:
//! - `analyze`: static wait-cycle analysis
//! - `honesty`: gate honesty, against the harness's own probes of the gate's URL
//! - `infer`: waits nobody declared, inferred from what the guest did
//! - `live`: live wait-cycle detection, pure
//! - `ordering`: ordering from the guest's monotonic timestamps
//! - `outcome`: what the runner learnt about one expectation
//! - `report`: the schema of `verdict.json`
//! - `timeline`: the schema of `timeline.jsonl`, the one list of run events
//! - `stable`: `stable:` windows, which unit left its state first and in what words
//! - `units`: unit-state checks that need no process
//! - `verdict`: from outcomes to one verdict per run, and whether it is the one the
//!   plan expects
//! - `waitfor`: the wait-for graph

pub mod analyze;
pub mod honesty;
pub mod infer;
pub mod live;
pub mod ordering;
pub mod outcome;
pub mod report;
pub mod stable;
pub mod timeline;
pub mod units;
pub mod verdict;
pub mod waitfor;

pub use ordering::evaluate_order;
pub use outcome::{Evaluation, ExpectationOutcome, late};
pub use report::{BootRecord, PairReport, ProbeRecord};
pub use units::{evaluate_no_failed, evaluate_unit};
pub use verdict::{Verdict, verdict};
pub use waitfor::{Cycle, EdgeKind, WaitEdge, WaitForGraph};
