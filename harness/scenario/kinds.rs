//! One descriptor per expectation kind: what the kind needs from the rest of the harness
//! (its scenario key, its id, its sentence, how it waits, where its evidence is), in
//! one place. [`ExpectationKind::spec`] is the one match over every kind; everything
//! else asks the descriptor, so a new kind that forgets a piece does not compile.
//!
//! The recipe for a new kind is in docs/internals.md ("Adding an expectation kind").

use std::time::Duration;

use super::expectation::{
    BootBudget, CommandExpectation, ExpectationKind, FileExpectation, HttpExpectation,
    JournalExpectation, NoFailedUnits, OrderExpectation, UnitExpectation, WaitCycleCheck,
    WaitCycleExpectation,
};
use super::names::UnitName;
use crate::evidence::bundle::EvidenceFile;

/// How a kind is awaited within its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Decided once, when its turn comes.
    Once,
    /// Awaited until this much time has passed since the previous decision of the phase
    /// (the first: since the phase began). Reached later by the guest's own clock fails.
    Within(Duration),
    /// An invariant over the whole phase: judged after the phase's other expectations,
    /// in its place in the file's order. It may still need this long to settle, counted
    /// from when its turn comes (the runner adds what its own reads take).
    PhaseEnd(Duration),
}

/// What one expectation kind declares.
pub trait KindSpec {
    /// Its key in the scenario language (`unit`, `http`...).
    fn key(&self) -> &'static str;
    /// The id used when the file gives none, such as `unit:deploy-proxy.service=active`.
    fn derived_id(&self) -> String;
    /// What must hold, in words, for people (reports never parse it).
    fn describe(&self) -> String;
    /// How it waits.
    fn wait(&self) -> Wait;
    /// The run folder's file that shows its evidence.
    fn evidence(&self) -> EvidenceFile;
}

impl ExpectationKind {
    /// This kind's descriptor: the one match that lists every kind.
    pub fn spec(&self) -> &dyn KindSpec {
        match self {
            ExpectationKind::Unit(k) => k,
            ExpectationKind::Order(k) => k,
            ExpectationKind::Http(k) => k,
            ExpectationKind::Journal(k) => k,
            ExpectationKind::File(k) => k,
            ExpectationKind::Command(k) => k,
            ExpectationKind::NoFailedUnits(k) => k,
            ExpectationKind::BootBudget(k) => k,
            ExpectationKind::WaitCycle(k) => k,
        }
    }

    /// The id used when the file gives none, such as `unit:deploy-proxy.service=active`.
    pub fn derived_id(&self) -> String {
        self.spec().derived_id()
    }

    /// What must hold, in words, for reports and failure messages.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }
}

fn names(units: &[UnitName]) -> String {
    units
        .iter()
        .map(UnitName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl KindSpec for UnitExpectation {
    fn key(&self) -> &'static str {
        "unit"
    }
    fn derived_id(&self) -> String {
        format!("unit:{}={}", self.unit, self.state.as_str())
    }
    fn describe(&self) -> String {
        let result = self
            .result
            .map(|r| format!(" with Result={}", r.as_str()))
            .unwrap_or_default();
        let properties: String = self
            .properties
            .iter()
            .map(|(k, v)| format!(", {k}={v}"))
            .collect();
        format!(
            "{} is {}{result}{properties} within {}",
            self.unit,
            self.state.as_str(),
            self.within
        )
    }
    fn wait(&self) -> Wait {
        Wait::Within(self.within.0)
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::PhaseUnits
    }
}

impl KindSpec for OrderExpectation {
    fn key(&self) -> &'static str {
        "order"
    }
    fn derived_id(&self) -> String {
        format!("order:after={}", self.after)
    }
    fn describe(&self) -> String {
        let anchor = match &self.anchor {
            None => format!("{} finished starting", self.after),
            Some(crate::scenario::OrderAnchor::StartJob) => {
                format!("{}'s start job ended", self.after)
            }
            Some(crate::scenario::OrderAnchor::Journal(p)) => {
                format!("{} logged a line matching /{}/", self.after, p.0)
            }
        };
        format!("{} started only after {anchor}", names(&self.units))
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::PhaseUnits
    }
}

impl KindSpec for HttpExpectation {
    fn key(&self) -> &'static str {
        "http"
    }
    fn derived_id(&self) -> String {
        format!("http:{}:{}", self.from.as_str(), self.url)
    }
    fn describe(&self) -> String {
        let body = self
            .body
            .as_ref()
            .map(|b| format!(" and a body that {b}"))
            .unwrap_or_default();
        let tls = match (&self.ca, self.url.starts_with("https://")) {
            (Some(ca), _) => format!(", its certificate verified against {ca},"),
            (None, true) => ", its certificate verified,".to_string(),
            (None, false) => String::new(),
        };
        format!(
            "GET {} from the {}{tls} answers {}{body} within {}",
            self.url,
            self.from.as_str(),
            self.status,
            self.within
        )
    }
    fn wait(&self) -> Wait {
        Wait::Within(self.within.0)
    }
    fn evidence(&self) -> EvidenceFile {
        // The probes are recorded in the pair's verdict.json.
        EvidenceFile::Verdict
    }
}

impl KindSpec for JournalExpectation {
    fn key(&self) -> &'static str {
        "journal"
    }
    fn derived_id(&self) -> String {
        match &self.unit {
            Some(u) => format!("journal:{u}:{}", self.pattern),
            None => format!("journal:{}", self.pattern),
        }
    }
    fn describe(&self) -> String {
        let unit = self
            .unit
            .as_ref()
            .map(|u| format!(" of {u}"))
            .unwrap_or_default();
        format!(
            "a journal line{unit} matches /{}/ within {}",
            self.pattern, self.within
        )
    }
    fn wait(&self) -> Wait {
        Wait::Within(self.within.0)
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::BootJournal
    }
}

impl KindSpec for FileExpectation {
    fn key(&self) -> &'static str {
        "file"
    }
    fn derived_id(&self) -> String {
        format!("file:{}", self.path)
    }
    fn describe(&self) -> String {
        format!("{} {}", self.path, self.content)
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::Timeline
    }
}

impl KindSpec for CommandExpectation {
    fn key(&self) -> &'static str {
        "command"
    }
    fn derived_id(&self) -> String {
        format!("command:{}", self.run)
    }
    fn describe(&self) -> String {
        let mut s = format!("`{}` exits {}", self.run, self.status);
        if let Some(m) = &self.stdout {
            s.push_str(&format!(", stdout {m}"));
        }
        if let Some(m) = &self.stderr {
            s.push_str(&format!(", stderr {m}"));
        }
        s
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::Timeline
    }
}

impl KindSpec for NoFailedUnits {
    fn key(&self) -> &'static str {
        "no_failed_units"
    }
    fn derived_id(&self) -> String {
        "no_failed_units".to_string()
    }
    fn describe(&self) -> String {
        if self.except.is_empty() {
            "no unit is failed".to_string()
        } else {
            format!("no unit is failed except {}", names(&self.except))
        }
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::PhaseUnits
    }
}

impl KindSpec for BootBudget {
    fn key(&self) -> &'static str {
        "boot_budget"
    }
    fn derived_id(&self) -> String {
        "boot_budget".to_string()
    }
    fn describe(&self) -> String {
        format!("the boot finishes within {}", self.0)
    }
    fn wait(&self) -> Wait {
        // The boot may still be finishing: wait for it, up to the budget.
        Wait::Within(self.0.0)
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::Timeline
    }
}

impl KindSpec for WaitCycleCheck {
    fn key(&self) -> &'static str {
        "wait_cycle"
    }
    fn derived_id(&self) -> String {
        format!("wait_cycle={}", wait_word(self.expect))
    }
    fn describe(&self) -> String {
        format!(
            "a wait-for cycle lasting {} is {} during the phase{}",
            self.persist,
            wait_word(self.expect),
            if self.infer {
                ""
            } else {
                " (declared gates only: inference switched off)"
            }
        )
    }
    fn wait(&self) -> Wait {
        // An expected cycle may still be forming when the rest of the phase is done.
        Wait::PhaseEnd(self.persist.0)
    }
    fn evidence(&self) -> EvidenceFile {
        EvidenceFile::BootWaitFor
    }
}

fn wait_word(w: WaitCycleExpectation) -> &'static str {
    match w {
        WaitCycleExpectation::Absent => "absent",
        WaitCycleExpectation::Expected => "expected",
    }
}
