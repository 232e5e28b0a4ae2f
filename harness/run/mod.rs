//! The executor: bringing targets up, running scenario phases, and verdicts.

pub mod boot;
