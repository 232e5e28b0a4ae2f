//! Awaiting and evaluating one expectation against a live guest.
//!
//! The decisions themselves are pure (`check::`); this module gathers what they need,
//! from the journal stream, `systemctl`, and probes of the harness's own, and records
//! when the guest says the awaited change happened and when the harness decided.

use std::time::{Duration, Instant};

use crate::check::{self, Evaluation, ProbeRecord};
use crate::guest::Guest;
use crate::guest::systemd;
use crate::scenario::{
    CommandExpectation, ExpectationKind, FileExpectation, HttpExpectation, JournalExpectation,
    ProbeFrom, UnitExpectation,
};
use crate::vm::Vm;

use super::clock::GuestClock;
use super::cycles::Cycles;
use super::watch::Journal;

/// A unit whose state changes without a manager journal entry is re-read at least this
/// often: a safety net, not the way waits end.
const UNIT_RECHECK: Duration = Duration::from_secs(10);
/// Time between two attempts of a probe that has not answered as expected yet.
const PROBE_RETRY: Duration = Duration::from_secs(1);

/// What a live expectation can use.
pub struct Live<'a> {
    /// The VM (host forwards, QMP).
    pub vm: &'a Vm,
    /// The SSH channel.
    pub guest: &'a Guest,
    /// The journal of the current boot, streaming.
    pub journal: Journal,
    /// Guest monotonic time on the host clock, narrowed by what the stream brings
    /// (behind a lock: the phase's observations run side by side).
    pub clock: std::sync::Mutex<GuestClock>,
    /// Where the progress line goes.
    pub status: &'a (dyn Fn(&str) + Send + Sync),
    /// Every probe the harness made, for the evidence.
    pub probes: std::sync::Mutex<Vec<ProbeRecord>>,
    /// The boot's wait-cycle watcher.
    pub cycles: Cycles,
    /// When the phase began (its wait-cycle invariant covers reads from then on).
    pub phase_started: Instant,
    /// When QEMU started this boot (reports time reads from it).
    pub qemu_started: Instant,
    /// Guest time (µs) from which a start in PID 1's journal decides a unit wait: 0 on a
    /// phase that booted and did nothing else, else when the phase's actions ended.
    pub journal_floor_us: u64,
    /// Per unit the scenario awaits, whether PID 1 ending its start job with `done` means
    /// it is active (from its type, read once when the boot's watch began).
    pub start_done_means_active: std::collections::HashMap<String, bool>,
    /// The phase's watch that decides plain "active" waits ahead of their turn.
    pub early: super::early::EarlyDecisions,
    /// The boot's recorder, when it has one: unit states read through it, not over SSH.
    pub recorder: Option<crate::guest::recorder::Recorder>,
}

impl Live<'_> {
    /// The clock, narrowed first by every entry and signal that has arrived.
    pub(super) fn tightened(&self) -> GuestClock {
        let mut clock = self.clock.lock().expect("clock lock");
        self.journal.tighten(&mut clock);
        *clock
    }

    /// The probes made so far, taken for the pair's evidence.
    pub fn take_probes(&self) -> Vec<ProbeRecord> {
        std::mem::take(&mut *self.probes.lock().expect("probes lock"))
    }
}

/// How long a read through the recorder may take before the check asks over SSH.
const RECORDER_READ: Duration = Duration::from_secs(10);

/// The unit types `no_failed_units` looks at.
const NO_FAILED_TYPES: [&str; 6] = ["service", "socket", "mount", "target", "timer", "path"];

/// The states of `names`, in order: through the recorder's connection to PID 1 (about
/// 20 property reads per unit, no process in the guest), else `systemctl show` over SSH.
pub(super) async fn snapshot(
    live: &Live<'_>,
    names: &[String],
) -> anyhow::Result<Vec<systemd::UnitState>> {
    use crate::guest::recorder::units::Scope;
    if let Some(r) = &live.recorder {
        match r.read_units(names, Scope::Named, RECORDER_READ).await {
            Ok(read) => match systemd::parse_show(&read.units) {
                Ok(states) if states.len() == names.len() => return Ok(states),
                Ok(states) => tracing::debug!(
                    "the recorder read {} of {} units; asking systemctl",
                    states.len(),
                    names.len()
                ),
                Err(e) => {
                    tracing::debug!("the recorder's read does not parse ({e:#}); asking systemctl")
                }
            },
            Err(e) => {
                tracing::debug!("no unit states through the recorder ({e}); asking systemctl")
            }
        }
    }
    systemd::unit_snapshot(live.guest, names).await
}

/// Every loaded unit of [`NO_FAILED_TYPES`] with its `ActiveState`: PID 1's `ListUnits`
/// through the recorder (one call), else `systemctl list-units` over SSH.
async fn failed_candidates(live: &Live<'_>) -> anyhow::Result<Vec<(String, String)>> {
    use crate::guest::recorder::units::Scope;
    if let Some(r) = &live.recorder {
        match r.read_units(&[], Scope::States, RECORDER_READ).await {
            Ok(read) if read.count > 0 => {
                let states = systemd::parse_show(&read.units)?;
                return Ok(states
                    .into_iter()
                    .filter(|u| {
                        u.id.rsplit_once('.')
                            .is_some_and(|(_, t)| NO_FAILED_TYPES.contains(&t))
                    })
                    .map(|u| (u.id, u.active_state))
                    .collect());
            }
            Ok(_) => tracing::debug!("the recorder listed no unit; asking systemctl"),
            Err(e) => tracing::debug!("no unit list through the recorder ({e}); asking systemctl"),
        }
    }
    systemd::list_units(live.guest, &NO_FAILED_TYPES.join(",")).await
}

/// The result of awaiting one expectation: the evaluation, and the host instants of the
/// change (as the guest timestamped it) and of the decision.
pub struct Awaited {
    /// Whether it held, and what was seen.
    pub eval: Evaluation,
    /// When the guest says the awaited state was reached.
    pub changed: Option<Instant>,
    /// When the harness decided.
    pub decided: Instant,
}

impl Awaited {
    pub(super) fn now(eval: Evaluation) -> Awaited {
        Awaited {
            eval,
            changed: None,
            decided: Instant::now(),
        }
    }
}

/// Await `kind` until `deadline` (for kinds that wait) and evaluate it.
pub async fn await_expectation(
    live: &Live<'_>,
    kind: &ExpectationKind,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    Ok(match kind {
        ExpectationKind::Unit(u) => await_unit(live, u, deadline).await?,
        ExpectationKind::Order(o) => {
            let mut names: Vec<String> = vec![o.after.as_str().to_string()];
            names.extend(o.units.iter().map(|u| u.as_str().to_string()));
            let times = snapshot(live, &names).await?;
            let after = o.after.as_str();
            let mut eval = match &o.anchor {
                None => check::evaluate_order(after, &names[1..], &times),
                Some(anchor) => {
                    // The anchor's moment from the journal, which holds the whole boot.
                    let (what, hit) = match anchor {
                        crate::scenario::OrderAnchor::StartJob => (
                            format!("{after}'s start job ended"),
                            live.journal
                                .since(0)
                                .iter()
                                .find(|s| s.entry.ends_start_job_of(after))
                                .map(|s| s.entry.mono_us),
                        ),
                        crate::scenario::OrderAnchor::Journal(p) => (
                            format!("{after} logged /{}/", p.0),
                            live.journal
                                .since(0)
                                .iter()
                                .find(|s| {
                                    s.entry.unit.as_deref() == Some(after)
                                        && p.is_match(&s.entry.message)
                                })
                                .map(|s| s.entry.mono_us),
                        ),
                    };
                    match hit {
                        Some(us) => check::ordering::evaluate_order_from(
                            format!("{what} at {:.3}s", us as f64 / 1e6),
                            us,
                            &names[1..],
                            &times,
                        ),
                        None => Evaluation::failed(format!(
                            "the anchor never happened in this boot: no journal entry where {what}"
                        )),
                    }
                }
            };
            // An anchor that never finished starting because it sits on a wait cycle:
            // say so, it is the reason.
            if !eval.held
                && let Some(c) = live.cycles.standing()
                && c.units.contains(o.after.as_str())
            {
                eval.seen = format!("{}; it is on a wait cycle: {}", eval.seen, c.message);
            }
            Awaited::now(eval)
        }
        ExpectationKind::Http(h) => await_http(live, h, deadline).await?,
        ExpectationKind::Journal(j) => await_journal(live, j, deadline).await,
        ExpectationKind::File(f) => Awaited::now(evaluate_file(live.guest, f).await?),
        ExpectationKind::Command(c) => Awaited::now(evaluate_command(live.guest, c).await?),
        ExpectationKind::NoFailedUnits(n) => {
            let units = failed_candidates(live).await?;
            let except: Vec<String> = n.except.iter().map(|u| u.as_str().to_string()).collect();
            Awaited::now(check::evaluate_no_failed(&units, &except))
        }
        ExpectationKind::BootBudget(budget) => {
            await_boot_budget(live, budget.0.0, deadline).await?
        }
        ExpectationKind::WaitCycle(w) => await_wait_cycle(live, w, deadline).await,
        ExpectationKind::Path(p) => {
            // The harness's own check: `test -e` exits 0 when the path exists, 1 when not.
            let quoted = crate::guest::shell::quote(&p.path);
            let out = live.guest.exec(&format!("test -e {quoted}")).await?;
            let (held, seen) = p.judge(out.status, &out.stderr);
            Awaited::now(if held {
                Evaluation::held(seen)
            } else {
                Evaluation::failed(seen)
            })
        }
        ExpectationKind::Stable(s) => super::stable::await_stable(live, s).await?,
    })
}

/// PID 1's own word on `u`, without asking systemctl: its unit signals first (any
/// expectation they show held), then its journal (a plain "active" wait whose start
/// ended `done`, when `by_journal`). The guest time (µs) of the change, and what was seen.
pub(super) fn pid1_word(
    journal: &Journal,
    u: &UnitExpectation,
    by_journal: bool,
    floor: u64,
) -> Option<(u64, Evaluation)> {
    let signalled = journal
        .scan_changes(|all| check::units::held_by_signals(u, floor, all.iter().map(|c| &c.change)));
    if signalled.is_some() {
        return signalled;
    }
    if !by_journal {
        return None;
    }
    let us = journal.scan(|all| {
        check::units::active_in_journal(u, true, floor, all.iter().map(|s| &s.entry))
    })?;
    let eval = check::units::evaluate_unit(u, "active", "success");
    let seen = format!(
        "{} by PID 1's journal at {:.3}s",
        eval.seen,
        us as f64 / 1e6
    );
    Some((us, Evaluation { seen, ..eval }))
}

/// PID 1's decision of `u`, if it has one now, and when it was decided (by the phase's
/// watch, ahead of its turn, or now).
fn pid1_decided(
    live: &Live<'_>,
    u: &UnitExpectation,
    by_journal: bool,
    floor: u64,
) -> Option<(u64, Instant, Evaluation)> {
    let (now, eval) = pid1_word(&live.journal, u, by_journal, floor)?;
    // The phase's watch decided it earlier only if that change is still PID 1's latest
    // word on the unit: a unit that started and then stopped or failed before this
    // wait's turn is read again, as the file order of the phase says.
    let decided = live
        .early
        .get(u.unit.as_str())
        .filter(|d| d.at_us == now)
        .map_or_else(Instant::now, |d| d.decided);
    Some((now, decided, eval))
}

/// Wait until PID 1's word decides `u` (forever when it cannot).
async fn pid1_decides(
    live: &Live<'_>,
    u: &UnitExpectation,
    by_journal: bool,
    floor: u64,
) -> (u64, Instant, Evaluation) {
    let mut at = live.journal.cursor();
    loop {
        if let Some(hit) = pid1_decided(live, u, by_journal, floor) {
            return hit;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        live.journal.wait_about(u.unit.as_str(), &mut at, far).await;
    }
}

async fn await_unit(
    live: &Live<'_>,
    u: &UnitExpectation,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    let unit = u.unit.as_str();
    // Only a start's end (active, or failed) waits on a cycle; other states do not.
    let start_end = match u.state {
        crate::scenario::UnitState::Active => Some(true),
        crate::scenario::UnitState::Failed => Some(false),
        _ => None,
    };
    let names: Vec<&str> = u.properties.keys().map(String::as_str).collect();
    // Read when the boot's watch began; a unit not read then is left to systemctl.
    let means_active = live
        .start_done_means_active
        .get(unit)
        .copied()
        .unwrap_or(false);
    let by_journal = means_active && check::units::decidable_by_journal(u);
    let floor = live.journal_floor_us;

    loop {
        // PID 1's own word, the moment the stream brings it: no round trip. The phase's
        // watch may have decided it already, while an earlier expectation was awaited;
        // otherwise it races the systemctl read below.
        // What arrives during the read below must still wake the wait after it.
        let mut at = live.journal.cursor();
        let hit = pid1_decided(live, u, by_journal, floor);
        let read = async {
            match hit {
                Some(hit) => Ok(Err(hit)),
                None => {
                    let read = systemd::unit_state_with(live.guest, unit, &names);
                    tokio::select! {
                        r = read => r.map(Ok),
                        hit = pid1_decides(live, u, by_journal, floor) => Ok(Err(hit)),
                    }
                }
            }
        };
        let (now, shown) = match read.await? {
            Ok(read) => read,
            Err((us, decided, eval)) => {
                let clock = live.tightened();
                let changed = clock.to_host(us);
                let eval = check::late(eval, Some(changed), deadline, clock.uncertainty);
                return Ok(Awaited {
                    eval,
                    changed: Some(changed),
                    decided,
                });
            }
        };
        let eval = check::units::evaluate_unit(u, &now.active_state, now.result_str());
        // A unit on a standing wait cycle, or waiting on one, cannot get there before the
        // cycle breaks: decide now instead of at the deadline.
        if !eval.held
            && let Some(wants_active) = start_end
            && let Some(why) = live
                .cycles
                .standing()
                .and_then(|c| c.blocks(unit, wants_active, deadline))
        {
            return Ok(Awaited::now(Evaluation::failed(why)));
        }
        (live.status)(&format!(
            "waiting for {unit} {} ({} {})",
            u.state.as_str(),
            now.active_state,
            now.sub_state
        ));
        if eval.held {
            let clock = live.tightened();
            let changed = now.state_change_us.map(|us| clock.to_host(us));
            // The state is there; the properties the scenario names must be too, read in
            // the same call (a property that is not as named will not become so by
            // waiting: ExecMainStatus is set when the state is).
            let eval = if u.properties.is_empty() {
                eval
            } else {
                let props = check::units::evaluate_properties(u, &shown);
                Evaluation {
                    held: props.held,
                    seen: format!("{}, {}", eval.seen, props.seen),
                    not_checked: false,
                }
            };
            // Seen late is not the same as reached late: judge by the guest's timestamp.
            let eval = check::late(eval, changed, deadline, clock.uncertainty);
            return Ok(Awaited {
                eval,
                changed,
                decided: Instant::now(),
            });
        }
        // A failed unit with no job queued stays failed: nothing will start it again by
        // itself (an automatic restart shows as activating, not failed). Decide now
        // rather than at the deadline.
        if now.active_state == "failed"
            && u.state != crate::scenario::UnitState::Failed
            && !systemd::has_job(live.guest, unit).await?
        {
            let seen = format!(
                "{unit} is failed ({}) with Result={}, and no job will start it again",
                now.sub_state,
                now.result_str()
            );
            return Ok(Awaited::now(Evaluation::failed(seen)));
        }
        if Instant::now() >= deadline {
            let seen = format!(
                "{unit} is {} ({}) with Result={} after {}",
                now.active_state,
                now.sub_state,
                now.result_str(),
                crate::scenario::format_duration(u.within.0)
            );
            return Ok(Awaited::now(Evaluation::failed(seen)));
        }
        // Sleep until PID 1 says something about this unit, the re-check interval
        // passes, or the deadline.
        let wake = (Instant::now() + UNIT_RECHECK).min(deadline);
        let mut cycles = live.cycles.clone();
        let standing = async {
            while cycles.next_read().await {
                if cycles.standing().is_some() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = live.journal.wait_about(unit, &mut at, wake) => {}
            _ = standing => {}
        }
    }
}

pub(super) async fn await_http(
    live: &Live<'_>,
    h: &HttpExpectation,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    loop {
        (live.status)(&format!("probing {} from the {}", h.url, h.from.as_str()));
        let attempt = match h.from {
            ProbeFrom::Guest => probe_from_guest(live.guest, &h.url, h.ca.as_deref()).await?,
            ProbeFrom::Host => probe_from_host(live.vm, live.guest, &h.url, h.ca.as_deref()).await,
        };
        let record = ProbeRecord {
            at_unix: crate::unix::now(),
            from: h.from.as_str().to_string(),
            gate_of: None,
            url: h.url.clone(),
            status: attempt.as_ref().ok().map(|(s, _)| *s),
            excerpt: match &attempt {
                Ok((_, body)) => excerpt(body),
                Err(e) => e.clone(),
            },
        };
        live.probes.lock().expect("probes lock").push(record);
        let eval = match &attempt {
            Ok((status, body)) => {
                let body_ok = h.body.as_ref().is_none_or(|m| m.matches(body));
                let seen = format!("status {status}, body {:?}", excerpt(body));
                if *status == h.status && body_ok {
                    Evaluation::held(seen)
                } else {
                    Evaluation::failed(seen)
                }
            }
            Err(e) => Evaluation::failed(format!("no answer: {e}")),
        };
        if eval.held || Instant::now() + PROBE_RETRY > deadline {
            let mut done = Awaited::now(eval);
            if done.eval.held {
                done.changed = Some(done.decided);
            }
            return Ok(done);
        }
        let mut from = live.journal.len();
        let retry = (Instant::now() + PROBE_RETRY).min(deadline);
        live.journal.wait_for(&mut from, retry, |_| false).await;
    }
}

/// Probe with curl inside the guest. Transport errors come back as `Err(text)`.
async fn probe_from_guest(
    guest: &Guest,
    url: &str,
    ca: Option<&str>,
) -> anyhow::Result<Result<(u16, String), String>> {
    // curl verifies certificates unless told not to; `--cacert` names the only CA.
    let ca = ca
        .map(|c| format!(" --cacert {}", crate::guest::shell::quote(c)))
        .unwrap_or_default();
    let cmd = format!(
        "curl -sS --max-time 5{ca} -w '\\n%{{http_code}}' {}",
        crate::guest::shell::quote(url)
    );
    let out = guest.exec(&cmd).await?;
    if out.status != 0 {
        return Ok(Err(format!(
            "curl exit {}: {}",
            out.status,
            out.stderr.trim()
        )));
    }
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .unwrap_or(("", out.stdout.as_str()));
    match code.trim().parse::<u16>() {
        Ok(c) => Ok(Ok((c, body.to_string()))),
        Err(_) => Ok(Err(format!("curl printed no status: {:?}", out.stdout))),
    }
}

/// Probe from the host through the loopback forward the harness made for the URL's port.
/// An error with its causes, so a refused certificate says why ("invalid peer
/// certificate: UnknownIssuer"), not only "error sending request".
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn probe_from_host(
    vm: &Vm,
    guest: &Guest,
    url: &str,
    ca: Option<&str>,
) -> Result<(u16, String), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{url} has no port"))?;
    let fwd = vm
        .forward_addr(port)
        .ok_or_else(|| format!("guest port {port} is not forwarded"))?;
    let host = parsed.host_str().unwrap_or("guest").to_string();
    let mut via = parsed.clone();
    via.set_port(Some(fwd.port()))
        .map_err(|_| "cannot set the port".to_string())?;
    // A name resolves to the forward; an IP literal is replaced by it.
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .resolve(&host, fwd);
    if let Some(ca) = ca {
        // The CA is read from the guest, where the proxy made it.
        let pem = guest
            .exec_checked(&format!("cat {}", crate::guest::shell::quote(ca)))
            .await
            .map_err(|e| format!("cannot read the CA {ca} in the guest: {e:#}"))?
            .stdout;
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("{ca} in the guest is not a PEM certificate: {e}"))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    if host.parse::<std::net::IpAddr>().is_ok() {
        via.set_host(Some("127.0.0.1")).map_err(|e| e.to_string())?;
    }
    let resp = client.get(via).send().await.map_err(|e| causes(&e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

async fn await_journal(live: &Live<'_>, j: &JournalExpectation, deadline: Instant) -> Awaited {
    let wanted = |e: &crate::guest::systemd::journal::Entry| {
        j.unit
            .as_ref()
            .is_none_or(|u| e.unit.as_deref() == Some(u.as_str()))
            && j.pattern.is_match(&e.message)
    };
    let mut checked = 0usize;
    loop {
        let fresh = live.journal.since(checked);
        if let Some(hit) = fresh.iter().find(|s| wanted(&s.entry)) {
            let clock = live.tightened();
            let at = clock.to_host(hit.entry.mono_us);
            let seen = Evaluation::held(format!("{:?}", hit.entry.message));
            return Awaited {
                eval: check::late(seen, Some(at), deadline, clock.uncertainty),
                changed: Some(at),
                decided: Instant::now(),
            };
        }
        if Instant::now() >= deadline {
            return Awaited::now(Evaluation::failed(format!(
                "no line matched among {} journal entries",
                live.journal.len()
            )));
        }
        (live.status)(&format!(
            "waiting for a journal line matching /{}/",
            j.pattern
        ));
        // Woken by a matching entry (looked at again above) or by the deadline.
        let mut from = checked;
        live.journal.wait_for(&mut from, deadline, wanted).await;
        checked += fresh.len();
    }
}

async fn evaluate_file(guest: &Guest, f: &FileExpectation) -> anyhow::Result<Evaluation> {
    let out = guest
        .exec(&format!("cat -- {}", crate::guest::shell::quote(&f.path)))
        .await?;
    if out.status != 0 {
        return Ok(Evaluation::failed(format!(
            "cannot read {}: {}",
            f.path,
            out.stderr.trim()
        )));
    }
    let seen = format!("{:?}", excerpt(&out.stdout));
    Ok(if f.content.matches(&out.stdout) {
        Evaluation::held(seen)
    } else {
        Evaluation::failed(seen)
    })
}

async fn evaluate_command(guest: &Guest, c: &CommandExpectation) -> anyhow::Result<Evaluation> {
    let out = guest.exec(&c.run).await?;
    let ok = out.status == c.status
        && c.stdout.as_ref().is_none_or(|m| m.matches(&out.stdout))
        && c.stderr.as_ref().is_none_or(|m| m.matches(&out.stderr));
    let seen = format!(
        "exit {}, stdout {:?}, stderr {:?}",
        out.status,
        excerpt(&out.stdout),
        excerpt(&out.stderr)
    );
    Ok(if ok {
        Evaluation::held(seen)
    } else {
        Evaluation::failed(seen)
    })
}

async fn await_boot_budget(
    live: &Live<'_>,
    budget: Duration,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    // The boot may still be finishing: wait for it, but no longer than the budget allows.
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(budget);
    // PID 1's own "Startup finished" entry, the moment the stream brings it.
    let until = Instant::now() + wait;
    let finished = |e: &systemd::journal::Entry| e.finishes_startup();
    let mut from = 0;
    let found = loop {
        let hit = live.journal.scan(|all| {
            all.iter()
                .find(|s| finished(&s.entry))
                .map(|s| s.entry.clone())
        });
        if hit.is_some() || Instant::now() >= until {
            break hit;
        }
        (live.status)("waiting for the boot to finish");
        live.journal.wait_for(&mut from, until, finished).await;
    };
    // The journal's sentence ends with a full stop; systemd-analyze's does not.
    let (boot, line) = match found {
        Some(entry) => {
            let line = entry.message.trim_end_matches('.').to_string();
            (systemd::parse_boot_time(&line).ok().flatten(), line)
        }
        // Not in the stream (a journal that lost it): ask systemd-analyze.
        None => systemd::boot_time_after(live.guest, Duration::from_secs(1)).await?,
    };
    Ok(Awaited::now(match boot {
        Some(b) if Duration::from_micros(b.total_us) <= budget => Evaluation::held(line),
        Some(_) => Evaluation::failed(line),
        None => Evaluation::failed(format!(
            "the boot did not finish within {}",
            crate::scenario::format_duration(wait)
        )),
    }))
}

/// `wait_cycle:` over the phase so far. An expected cycle may still be forming when the
/// phase's other expectations are done: wait for it until `deadline`.
async fn await_wait_cycle(
    live: &Live<'_>,
    w: &crate::scenario::WaitCycleCheck,
    deadline: Instant,
) -> Awaited {
    let mut cycles = live.cycles.clone();
    while w.expect == crate::scenario::WaitCycleExpectation::Expected
        && cycles.confirmed().is_none()
        && Instant::now() < deadline
    {
        (live.status)("waiting for a wait cycle to persist");
        tokio::select! {
            alive = cycles.next_read() => if !alive { break },
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    // The invariant covers the phase to its end: one more read of the queue now.
    cycles
        .read_now(2 * super::cycles::READ_EVERY + Duration::from_secs(10))
        .await;
    // Waits nobody declared: from the refused connections and who listens now.
    if w.infer {
        live.cycles.infer_now(live.guest).await;
    } else {
        live.cycles
            .no_inference("switched off by the scenario (infer: false)");
    }
    let watch = live
        .cycles
        .phase_watch(live.phase_started, live.qemu_started);
    let eval = check::live::evaluate_wait_cycle(w.expect, w.persist.0, &watch);
    let confirmed = live.cycles.confirmed().filter(|_| watch.cycle.is_some());
    Awaited {
        eval,
        changed: confirmed.as_ref().map(|c| c.formed),
        decided: confirmed.map_or_else(Instant::now, |c| c.confirmed),
    }
}

/// The first 200 characters of a body, for messages and evidence.
pub fn excerpt(body: &str) -> String {
    let trimmed = body.trim_end();
    match trimmed.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &trimmed[..i]),
        None => trimmed.to_string(),
    }
}
