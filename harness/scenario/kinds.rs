//! One descriptor per expectation kind: what the kind needs from the rest of the harness
//! (its id, its sentence, how it waits, its evidence, where its decision comes from, the
//! units it follows), in one place. The `kinds!` list below names every kind once and
//! generates [`ExpectationKind::spec`], the one match over every kind, and
//! `EXPECTATION_KINDS`; everything else asks the descriptor, so a new kind that forgets a
//! piece does not compile.
//!
//! The recipe for a new kind is in docs/internals.md ("Adding an expectation kind").

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::ScenarioDuration;
use super::expectation::{
    BootBudget, CommandExpectation, FileExpectation, HttpExpectation, JournalExpectation,
    NoFailedUnits, OrderExpectation, ProbeFrom, TextMatch, UnitExpectation, UnitState,
    WaitCycleCheck, WaitCycleExpectation,
};
use super::names::UnitName;

/// Which of a run folder's files shows a kind's evidence. The scenario names it;
/// `evidence::bundle` maps it to a file name, so the scenario language does not depend on
/// the bundle's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The units file of the phase it was checked in.
    PhaseUnits,
    /// The journal of the boot it was checked on.
    BootJournal,
    /// The wait-for graph of the boot it was checked on.
    BootWaitFor,
    /// The pair's verdict (the probes the harness made are recorded there).
    Verdict,
    /// The timeline (the harness's own record of what it saw).
    Timeline,
}

/// Where a kind's decision comes from: `bench` times the sources apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// PID 1's word: its unit signals and journal.
    Pid1,
    /// A probe the harness makes itself.
    Probe,
    /// The wait-for graph of the phase.
    WaitFor,
    /// A read when its turn comes, or the boot's end (not timed by `bench`).
    Read,
    /// A window watched over time, from PID 1's word and probes (not timed by `bench`:
    /// a window that holds decides when it ends, not when something changed).
    Window,
}

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
    /// from when its turn comes (the runner adds what its own reads take); a `stable:`
    /// window watches this long from its turn, once the phase has converged.
    PhaseEnd(Duration),
}

/// What one expectation kind declares.
pub trait KindSpec {
    /// The id used when the file gives none, such as `unit:deploy-proxy.service=active`.
    fn derived_id(&self) -> String;
    /// What must hold, in words, for people (reports never parse it).
    fn describe(&self) -> String;
    /// How it waits.
    fn wait(&self) -> Wait;
    /// Whether it only observes: it neither acts on the guest nor waits for an event of
    /// PID 1, so what it sees does not depend on its neighbours in the file having been
    /// decided. The runner checks a run of such expectations side by side, all from the
    /// same turn (the decision before them).
    fn observes(&self) -> bool;
    /// The run folder's file that shows its evidence.
    fn evidence(&self) -> Evidence;
    /// Where its decision comes from.
    fn source(&self) -> Source;
    /// The units whose state it follows, in file order: their signals are recorded and
    /// the timeline draws them. Empty for kinds that judge no unit in particular.
    fn units(&self) -> Vec<&UnitName>;
    /// The unit wait it is, if it is one: the focus unit defaults to the first, and the
    /// phase's watch may decide it before its turn.
    fn awaited(&self) -> Option<&UnitExpectation> {
        None
    }
    /// What is wrong with it beyond its shape (which serde checks), in words; the loader
    /// points each at the expectation's line.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One checked expectation with its stable id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// Explicit `id:` from the file, or derived from the kind (see [`ExpectationKind::derived_id`]).
    pub id: String,
    /// What is checked.
    pub kind: ExpectationKind,
}

/// The one list of kinds: each variant of [`ExpectationKind`] with its doc, its
/// descriptor's type and its key in the scenario language. It generates the enum, the one
/// match over every kind ([`ExpectationKind::spec`]) and `EXPECTATION_KINDS`.
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $key:literal),* $(,)?) => {
        /// The kinds of expectation a scenario can state. Serialized (in `verdict.json`
        /// and report.json) as `{KIND: PARAMETERS}`, so reports can read what was checked
        /// as data.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum ExpectationKind {
            $($(#[$doc])* #[serde(rename = $key)] $variant($ty),)*
        }

        /// The kind keys of an expectation, in the order the messages list them.
        pub const EXPECTATION_KINDS: &[&str] = &[$($key),*];

        impl ExpectationKind {
            /// This kind's descriptor: the one match that lists every kind.
            pub fn spec(&self) -> &dyn KindSpec {
                match self {
                    $(ExpectationKind::$variant(k) => k as &$ty,)*
                }
            }

            /// Its key in the scenario language (`unit`, `http`...).
            pub fn key(&self) -> &'static str {
                match self {
                    $(ExpectationKind::$variant(_) => $key,)*
                }
            }
        }
    };
}

kinds! {
    /// `unit: U, state: S, within: D[, result: R]` — U reaches S within D (see Timing in
    /// `scenario::expectation`).
    Unit(UnitExpectation) = "unit",
    /// `order: {after: A, units: [..]}` — each unit left `inactive` only after A finished
    /// starting.
    Order(OrderExpectation) = "order",
    /// `http: {...}` — a probe made by the harness itself.
    Http(HttpExpectation) = "http",
    /// `journal: {unit?, pattern, within}` — a journal line of this boot matches.
    Journal(JournalExpectation) = "journal",
    /// `file: {path, content}` — a guest file's content.
    File(FileExpectation) = "file",
    /// `command: {run, status, stdout?, stderr?}` — a command's status and output.
    Command(CommandExpectation) = "command",
    /// `no_failed_units: {except: [..]}` — no unit is `failed` but the listed ones.
    NoFailedUnits(NoFailedUnits) = "no_failed_units",
    /// `boot_budget: 5m` — systemd reported `Startup finished` within this time.
    BootBudget(BootBudget) = "boot_budget",
    /// `wait_cycle: absent|expected[, persist: D]` — whether a wait-for cycle (job queue
    /// plus declared gates) persists for D during the phase; an invariant over the phase.
    WaitCycle(WaitCycleCheck) = "wait_cycle",
    /// `path: {path, exists}` — a path in the guest exists, or does not, when its turn
    /// comes.
    Path(PathExpectation) = "path",
    /// `gate_honest: {unit: U}` — U's latest start ended no earlier than the harness's own
    /// probe saw U's declared gate URL healthy (see `check::honesty`).
    GateHonest(GateHonestExpectation) = "gate_honest",
    /// `stable: {for: D, units: {U: S}, http: [..]}` — once the phase has converged, the
    /// units stay in their states and the probes keep answering for D.
    Stable(StableExpectation) = "stable",
}

impl ExpectationKind {
    /// The id used when the file gives none, such as `unit:deploy-proxy.service=active`.
    pub fn derived_id(&self) -> String {
        self.spec().derived_id()
    }

    /// What must hold, in words, for reports and failure messages.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }

    /// The unit wait it is, if it is one (see [`KindSpec::awaited`]).
    pub fn awaited(&self) -> Option<&UnitExpectation> {
        self.spec().awaited()
    }

    /// The HTTP probes it makes (an `http:` expectation's, a `stable:` window's): the
    /// runner forwards the guest ports of those made from the host.
    pub fn probes(&self) -> Vec<HttpExpectation> {
        match self {
            ExpectationKind::Http(h) => vec![h.clone()],
            ExpectationKind::Stable(s) => s.http.iter().map(StableProbe::as_http).collect(),
            _ => Vec::new(),
        }
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
    fn observes(&self) -> bool {
        false
    }
    fn evidence(&self) -> Evidence {
        Evidence::PhaseUnits
    }
    fn source(&self) -> Source {
        Source::Pid1
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![&self.unit]
    }
    fn awaited(&self) -> Option<&UnitExpectation> {
        Some(self)
    }
}

impl KindSpec for OrderExpectation {
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
    fn observes(&self) -> bool {
        true
    }
    fn evidence(&self) -> Evidence {
        Evidence::PhaseUnits
    }
    fn source(&self) -> Source {
        Source::Pid1
    }
    fn units(&self) -> Vec<&UnitName> {
        std::iter::once(&self.after).chain(&self.units).collect()
    }
    fn problems(&self) -> Vec<String> {
        if self.units.is_empty() {
            vec![
                "`order.units` is empty: list the units that must start after `order.after`"
                    .to_string(),
            ]
        } else {
            vec![]
        }
    }
}

impl KindSpec for HttpExpectation {
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
    fn observes(&self) -> bool {
        true
    }
    fn evidence(&self) -> Evidence {
        // The probes are recorded in the pair's verdict.json.
        Evidence::Verdict
    }
    fn source(&self) -> Source {
        Source::Probe
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![]
    }
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let https = self.url.starts_with("https://");
        if !(self.url.starts_with("http://") || https) {
            problems.push(format!(
                "invalid url {:?}: expected http://HOST[:PORT]/PATH",
                self.url
            ));
        }
        if let Some(ca) = &self.ca {
            if !https {
                problems.push(format!(
                    "`ca: {ca}` verifies TLS, but {:?} is not an https:// URL",
                    self.url
                ));
            } else if !ca.starts_with('/') {
                problems.push(format!(
                    "`ca: {ca}`: expected an absolute path of a PEM file in the guest"
                ));
            }
        }
        problems
    }
}

impl KindSpec for JournalExpectation {
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
    fn observes(&self) -> bool {
        false
    }
    fn evidence(&self) -> Evidence {
        Evidence::BootJournal
    }
    fn source(&self) -> Source {
        Source::Pid1
    }
    fn units(&self) -> Vec<&UnitName> {
        // Its unit is matched in the journal, not followed.
        vec![]
    }
}

impl KindSpec for FileExpectation {
    fn derived_id(&self) -> String {
        format!("file:{}", self.path)
    }
    fn describe(&self) -> String {
        format!("{} {}", self.path, self.content)
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn observes(&self) -> bool {
        true
    }
    fn evidence(&self) -> Evidence {
        Evidence::Timeline
    }
    fn source(&self) -> Source {
        Source::Read
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![]
    }
}

impl KindSpec for CommandExpectation {
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
    fn observes(&self) -> bool {
        false
    }
    fn evidence(&self) -> Evidence {
        Evidence::Timeline
    }
    fn source(&self) -> Source {
        Source::Read
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![]
    }
}

impl KindSpec for NoFailedUnits {
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
    fn observes(&self) -> bool {
        true
    }
    fn evidence(&self) -> Evidence {
        Evidence::PhaseUnits
    }
    fn source(&self) -> Source {
        Source::Read
    }
    fn units(&self) -> Vec<&UnitName> {
        // Judges every unit; the exceptions are not followed.
        vec![]
    }
}

impl KindSpec for BootBudget {
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
    fn observes(&self) -> bool {
        // It awaits PID 1's "Startup finished", which later expectations may count on.
        false
    }
    fn evidence(&self) -> Evidence {
        Evidence::Timeline
    }
    fn source(&self) -> Source {
        Source::Read
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![]
    }
}

impl KindSpec for WaitCycleCheck {
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
    fn observes(&self) -> bool {
        false
    }
    fn evidence(&self) -> Evidence {
        Evidence::BootWaitFor
    }
    fn source(&self) -> Source {
        Source::WaitFor
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![]
    }
}

fn wait_word(w: WaitCycleExpectation) -> &'static str {
    match w {
        WaitCycleExpectation::Absent => "absent",
        WaitCycleExpectation::Expected => "expected",
    }
}

/// `path:` expectation: a path in the guest exists (or does not) when its turn comes, as
/// the harness's own `test -e` over SSH finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathExpectation {
    /// Absolute path in the guest.
    pub path: String,
    /// Whether it must exist (default true) or must not.
    #[serde(default = "exists_by_default")]
    pub exists: bool,
}

fn exists_by_default() -> bool {
    true
}

impl PathExpectation {
    /// Judge the exit status of `test -e PATH` in the guest (and its standard error, for a failed test): whether
    /// the expectation held, and what was seen.
    pub fn judge(&self, status: i32, stderr: &str) -> (bool, String) {
        let found = match status {
            0 => true,
            1 => false,
            // `test` itself failed: neither answer is known.
            _ => {
                return (
                    false,
                    format!(
                        "cannot test {}: exit {status}: {}",
                        self.path,
                        stderr.trim()
                    ),
                );
            }
        };
        (found == self.exists, exists_word(&self.path, found))
    }
}

fn exists_word(path: &str, exists: bool) -> String {
    if exists {
        format!("{path} exists")
    } else {
        format!("{path} does not exist")
    }
}

impl KindSpec for PathExpectation {
    fn derived_id(&self) -> String {
        let word = if self.exists { "exists" } else { "absent" };
        format!("path:{}={word}", self.path)
    }
    fn describe(&self) -> String {
        exists_word(&self.path, self.exists)
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn observes(&self) -> bool {
        true
    }
    fn evidence(&self) -> Evidence {
        // What `test -e` found is the outcome's `seen`, recorded in verdict.json.
        Evidence::Verdict
    }
    fn source(&self) -> Source {
        Source::Read
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![]
    }
    fn problems(&self) -> Vec<String> {
        if self.path.starts_with('/') {
            vec![]
        } else {
            vec![format!(
                "`path: {}`: expected an absolute path in the guest",
                self.path
            )]
        }
    }
}

/// `gate_honest:` expectation: a gated unit's latest start (in its phase) ended no
/// earlier than the harness's own probe of its declared gate URL found it healthy. A gate
/// that ends its start, or logs its decision, before its proxy serves fails it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateHonestExpectation {
    /// The gated unit (the target declares its gate).
    pub unit: UnitName,
}

impl KindSpec for GateHonestExpectation {
    fn derived_id(&self) -> String {
        format!("gate_honest:{}", self.unit)
    }
    fn describe(&self) -> String {
        format!(
            "{}'s start ended no earlier than the harness's own probe saw its gate healthy",
            self.unit
        )
    }
    fn wait(&self) -> Wait {
        Wait::Once
    }
    fn observes(&self) -> bool {
        true
    }
    fn evidence(&self) -> Evidence {
        // The harness's probes of the gate are recorded in verdict.json.
        Evidence::Verdict
    }
    fn source(&self) -> Source {
        Source::Probe
    }
    fn units(&self) -> Vec<&UnitName> {
        vec![&self.unit]
    }
}

/// `stable:` expectation: a window over which the named units stay in their states and
/// the named probes keep answering, watched by events (PID 1's signals and journal) and
/// by probes at a steady interval. It is an invariant of its phase: its window opens
/// once the phase's other expectations have been decided, so once the phase converged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StableExpectation {
    /// How long the window lasts.
    #[serde(rename = "for")]
    pub window: ScenarioDuration,
    /// Each unit and the state (`ActiveState`) it must stay in for the whole window.
    #[serde(default)]
    pub units: std::collections::BTreeMap<UnitName, UnitState>,
    /// Probes that must answer as described every time they are made.
    #[serde(default)]
    pub http: Vec<StableProbe>,
    /// Time between two rounds of probes (default 2s); the first round opens the window
    /// and one more closes it.
    #[serde(default = "default_every")]
    pub every: ScenarioDuration,
}

/// How often a window's probes are made unless the scenario says otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(2);

fn default_every() -> ScenarioDuration {
    ScenarioDuration(DEFAULT_EVERY)
}

/// One probe of a `stable:` window: an `http:` probe without `within` (it must answer as
/// described every time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StableProbe {
    /// Where the probe is made from (default guest).
    #[serde(default = "probe_from_guest")]
    pub from: ProbeFrom,
    /// `http://HOST[:PORT]/PATH` as seen from the guest.
    pub url: String,
    /// The HTTP status the answer must have (default 200).
    #[serde(default = "status_ok")]
    pub status: u16,
    /// What the body must hold, if anything.
    #[serde(default)]
    pub body: Option<TextMatch>,
    /// For an `https://` URL: a PEM file in the guest holding the CA the server's
    /// certificate must chain to (as for `http:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

fn probe_from_guest() -> ProbeFrom {
    ProbeFrom::Guest
}

fn status_ok() -> u16 {
    200
}

impl StableProbe {
    /// The same probe as an `http:` expectation decided by one attempt.
    pub fn as_http(&self) -> HttpExpectation {
        HttpExpectation {
            from: self.from,
            url: self.url.clone(),
            status: self.status,
            body: self.body.clone(),
            within: ScenarioDuration(Duration::ZERO),
            ca: self.ca.clone(),
        }
    }

    /// The probe in words: `GET URL from the guest answers 200 and a body that ...`.
    pub fn describe(&self) -> String {
        let body = self
            .body
            .as_ref()
            .map(|b| format!(" and a body that {b}"))
            .unwrap_or_default();
        let tls = match &self.ca {
            Some(ca) => format!(" (TLS verified against {ca})"),
            None => String::new(),
        };
        format!(
            "GET {} from the {}{tls} answers {}{body}",
            self.url,
            self.from.as_str(),
            self.status
        )
    }
}

impl KindSpec for StableExpectation {
    fn derived_id(&self) -> String {
        format!("stable:for={}", self.window)
    }
    fn describe(&self) -> String {
        let mut held = Vec::new();
        if !self.units.is_empty() {
            let units: Vec<String> = self
                .units
                .iter()
                .map(|(u, s)| format!("{u} {}", s.as_str()))
                .collect();
            held.push(format!("{} stay so", units.join(", ")));
        }
        if !self.http.is_empty() {
            let probes: Vec<String> = self.http.iter().map(StableProbe::describe).collect();
            held.push(format!("every {} {}", self.every, probes.join(", and ")));
        }
        format!(
            "for {} once the phase has converged, {}",
            self.window,
            held.join("; ")
        )
    }
    fn wait(&self) -> Wait {
        // Judged after the phase's other expectations: the window opens once the phase
        // has converged, and lasts this long.
        Wait::PhaseEnd(self.window.0)
    }
    fn observes(&self) -> bool {
        // It awaits PID 1's events for the whole window.
        false
    }
    fn evidence(&self) -> Evidence {
        // A unit that left its state is in the boot's journal (its probes are in
        // verdict.json).
        Evidence::BootJournal
    }
    fn source(&self) -> Source {
        Source::Window
    }
    fn units(&self) -> Vec<&UnitName> {
        self.units.keys().collect()
    }
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.units.is_empty() && self.http.is_empty() {
            problems.push(
                "`stable` watches nothing: name `units` (unit: state) or `http` probes".to_string(),
            );
        }
        if self.window.0.is_zero() {
            problems.push("`stable.for` is 0: give the window a length".to_string());
        }
        if self.every.0.is_zero() {
            problems.push("`stable.every` is 0: probes need an interval".to_string());
        } else if !self.http.is_empty() && self.every.0 > self.window.0 {
            problems.push(format!(
                "`stable.every: {}` is longer than the window ({}): the probes would run only at its ends",
                self.every, self.window
            ));
        }
        for p in &self.http {
            problems.extend(p.as_http().problems());
        }
        problems
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    fn path(p: &str, exists: bool) -> PathExpectation {
        PathExpectation {
            path: p.to_string(),
            exists,
        }
    }

    #[test]
    fn judges_tests_status() {
        let must = path("/run/x", true);
        assert_eq!(must.judge(0, ""), (true, "/run/x exists".to_string()));
        assert_eq!(
            must.judge(1, ""),
            (false, "/run/x does not exist".to_string())
        );
        let must_not = path("/run/x", false);
        assert_eq!(
            must_not.judge(1, ""),
            (true, "/run/x does not exist".to_string())
        );
        assert_eq!(must_not.judge(0, ""), (false, "/run/x exists".to_string()));
        // A test that could not run holds neither way.
        let (held, seen) = must_not.judge(2, "test: bad\n");
        assert!(!held);
        assert_eq!(seen, "cannot test /run/x: exit 2: test: bad");
    }

    #[test]
    fn names_itself() {
        let k = ExpectationKind::Path(path("/run/x", false));
        assert_eq!(k.key(), "path");
        assert_eq!(k.derived_id(), "path:/run/x=absent");
        assert_eq!(k.describe(), "/run/x does not exist");
        assert!(EXPECTATION_KINDS.contains(&"path"));
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            serde_json::json!({"path": {"path": "/run/x", "exists": false}})
        );
    }
}

#[cfg(test)]
mod stable_tests {
    use super::*;

    fn parse(expect: &str) -> ExpectationKind {
        let text = format!(
            "name: t\nmilestone: [M2]\nsummary: s\nphases:\n  - name: p\n    expect:\n{expect}"
        );
        let scenario = crate::scenario::parse_scenario(std::path::Path::new("t.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d:?}"));
        scenario.phases[0].expect[0].kind.clone()
    }

    #[test]
    fn a_window_names_its_units_probes_and_interval() {
        let k = parse(
            "      - stable:\n          for: 20s\n          units: {deploy-proxy.service: failed, traefik.service: active}\n          http:\n            - {url: \"http://127.0.0.1:8082/version\", body: {equals: v1}}\n",
        );
        let ExpectationKind::Stable(s) = &k else {
            panic!("{k:?}")
        };
        assert_eq!(s.window.0, Duration::from_secs(20));
        assert_eq!(s.every.0, DEFAULT_EVERY);
        assert_eq!(k.key(), "stable");
        assert_eq!(k.derived_id(), "stable:for=20s");
        assert_eq!(
            k.describe(),
            "for 20s once the phase has converged, deploy-proxy.service failed, traefik.service active stay so; every 2s GET http://127.0.0.1:8082/version from the guest answers 200 and a body that equals \"v1\""
        );
        // An invariant of its phase: judged after the others, for its whole window.
        assert_eq!(s.wait(), Wait::PhaseEnd(Duration::from_secs(20)));
        assert!(!s.observes());
        assert_eq!(s.source(), Source::Window);
        let units: Vec<&str> = s.units().into_iter().map(UnitName::as_str).collect();
        assert_eq!(units, ["deploy-proxy.service", "traefik.service"]);
        assert_eq!(k.probes().len(), 1);
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            serde_json::json!({"stable": {
                "for": "20s",
                "units": {"deploy-proxy.service": "failed", "traefik.service": "active"},
                "http": [{"from": "guest", "url": "http://127.0.0.1:8082/version", "status": 200,
                          "body": {"equals": "v1"}}],
                "every": "2s"
            }})
        );
        // What report.json carries reads back.
        let back: ExpectationKind = serde_json::from_value(serde_json::to_value(&k).unwrap())
            .expect("a stable kind reads back");
        assert_eq!(back, k);
    }

    #[test]
    fn a_window_with_bad_intervals_or_probes_is_refused() {
        let window = |body: &str| StableExpectation {
            window: ScenarioDuration(Duration::from_secs(10)),
            units: Default::default(),
            http: vec![serde_saphyr::from_str(body).expect("a probe")],
            every: ScenarioDuration(Duration::from_secs(30)),
        };
        let problems = window("{url: 'ftp://x/', ca: /ca.pem}").problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("longer than the window"),
            "{problems:?}"
        );
        assert!(problems[1].contains("invalid url"), "{problems:?}");
        assert!(
            problems[2].contains("is not an https:// URL"),
            "{problems:?}"
        );
    }
}
