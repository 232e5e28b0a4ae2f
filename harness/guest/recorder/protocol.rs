//! The host's side of the conversation with PID 1 over the recorder. Pure (sans-I/O):
//! given each decoded message, the [`Event`]s it means and the calls to send next.
//!
//! PID 1 sends every direct (private-socket) connection its signals unasked
//! (`bus_foreach_bus`: "send to all direct buses, unconditionally"): `JobNew`,
//! `JobRemoved`, and `PropertiesChanged` for jobs (their `State`) and units (`ActiveState`,
//! `SubState` and the timestamps of each change, on PID 1's monotonic clock). The queue's
//! "which job waits for which" is not in any signal, so each job is asked once, when it
//! appears: `GetAfter` and `GetBefore`. systemd works out those relations from the units'
//! ordering, which only a reload changes, so asking at creation and dropping a job's
//! relations at its removal keeps them current without re-reading the queue.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::units;
use crate::guest::dbus::{self, Kind, Message, Value};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const JOB: &str = "org.freedesktop.systemd1.Job";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const JOB_PREFIX: &str = "/org/freedesktop/systemd1/job/";
/// The most calls awaiting replies at once (a boot's first `GetAfter`s are a few hundred,
/// a units read up to [`units::WINDOW`]).
const MAX_PENDING: usize = 8192;

/// The unit properties kept from PID 1's change signals (and asked for when a running
/// start job is first seen without them).
/// A service's main process's end is kept too: unit waits decide on PID 1's word from the
/// recorder, and a wait for `failed` with `ExecMainStatus=2` needs it.
pub const UNIT_PROPERTIES: [&str; 12] = [
    "ActiveState",
    "SubState",
    "Result",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "ActiveExitTimestampMonotonic",
    "InactiveEnterTimestampMonotonic",
    "StateChangeTimestampMonotonic",
    "TimeoutStartUSec",
    "ExecMainCode",
    "ExecMainStatus",
    "NRestarts",
];

/// A property's value, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prop {
    /// A string.
    Text(String),
    /// An unsigned integer (timestamps in µs, timeouts in µs).
    Num(u64),
}

/// What one message told about the queue and the units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A job exists (from `ListJobs`, `JobNew` or the job's properties).
    Job {
        /// Job id.
        id: u32,
        /// Its unit.
        unit: String,
        /// `start`, `stop`... (absent until asked).
        #[serde(skip_serializing_if = "Option::is_none")]
        job_type: Option<String>,
        /// `waiting` or `running` (absent until asked).
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<String>,
    },
    /// A job's state changed.
    JobState {
        /// Job id.
        id: u32,
        /// `waiting` or `running`.
        state: String,
    },
    /// A job finished or was removed.
    JobRemoved {
        /// Job id.
        id: u32,
        /// Its unit.
        unit: String,
        /// `done`, `failed`, `timeout`, `canceled`, `dependency`, `skipped`...
        result: String,
    },
    /// `GetAfter(id)` answered: the jobs PID 1 says `id` waits for.
    After {
        /// Job id.
        id: u32,
        /// The other jobs' ids.
        jobs: Vec<u32>,
    },
    /// `GetBefore(id)` answered: the jobs PID 1 says wait for `id`.
    Before {
        /// Job id.
        id: u32,
        /// The other jobs' ids.
        jobs: Vec<u32>,
    },
    /// Unit properties changed (or were read).
    Unit {
        /// The unit.
        unit: String,
        /// Its properties among [`UNIT_PROPERTIES`].
        props: Vec<(String, Prop)>,
    },
    /// PID 1 began (`true`) or finished (`false`) reloading its units: any unit's
    /// properties (its dependencies, for one) may have changed without a state change.
    Reloading {
        /// Began, rather than finished.
        active: bool,
    },
    /// A property of PID 1 itself (`Version`, `UserspaceTimestampMonotonic`).
    Manager {
        /// Property name.
        name: String,
        /// Its value.
        value: Prop,
    },
}

impl Event {
    /// A unit event as a unit signal (`busctl monitor`'s), for the waits that decide on
    /// PID 1's word: the change that carries the unit's `ActiveState` is the Unit
    /// interface's (PID 1 sends the Service interface's apart, without it); `None` for
    /// other events.
    pub fn unit_change(&self) -> Option<crate::guest::systemd::signals::UnitChange> {
        use crate::guest::systemd::signals::{UNIT_INTERFACE, UnitChange};
        let Event::Unit { unit, props } = self else {
            return None;
        };
        let state = props.iter().any(|(k, _)| k == "ActiveState");
        Some(UnitChange {
            unit: unit.clone(),
            interface: if state { UNIT_INTERFACE } else { SERVICE }.to_string(),
            properties: props
                .iter()
                .map(|(k, v)| {
                    let shown = match v {
                        Prop::Text(t) => t.clone(),
                        Prop::Num(n) => n.to_string(),
                    };
                    (k.clone(), shown)
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone)]
enum Pending {
    ListJobs,
    JobProps(u32),
    After(u32),
    Before(u32),
    UnitProp(String, &'static str),
    Manager(&'static str),
    /// A units read's `ListUnits`.
    ReadList(u64),
    /// A units read's `Get` of a manager property.
    ReadManager(u64, &'static str),
    /// A units read's `Get` of one unit's property: the read, the unit's block, the name.
    ReadProp(u64, usize, &'static str),
}

/// The conversation's state: the calls awaiting replies.
#[derive(Debug, Default)]
pub struct Protocol {
    serial: u32,
    pending: HashMap<u32, Pending>,
    removed: HashSet<u32>,
    /// Units whose start timestamps or timeouts were asked for.
    asked: HashSet<(String, &'static str)>,
    /// Job ids whose unit is known, for the timestamps of running ones.
    unit_of: HashMap<u32, String>,
    /// Units reads under way, by id.
    reads: HashMap<u64, units::Read>,
    /// Units reads complete and not yet taken.
    done: Vec<(u64, Result<units::UnitsText, String>)>,
}

impl Protocol {
    /// The bytes that open the conversation once the relay said hello: authentication as
    /// uid 0 (the relay's own, which PID 1 checks against the claim), then the first
    /// calls. sd-bus reads the lines in order, so they need not wait for `OK`.
    pub fn opening(&mut self) -> Vec<u8> {
        let mut out = b"\0AUTH EXTERNAL 30\r\nBEGIN\r\n".to_vec();
        out.extend(self.call(MANAGER_PATH, MANAGER, "ListJobs", &[], Pending::ListJobs));
        for name in ["Version", "UserspaceTimestampMonotonic"] {
            out.extend(self.call(
                MANAGER_PATH,
                PROPERTIES,
                "Get",
                &[MANAGER, name],
                Pending::Manager(name),
            ));
        }
        out
    }

    /// Calls awaiting replies.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn call(
        &mut self,
        path: &str,
        interface: &str,
        member: &str,
        args: &[&str],
        pending: Pending,
    ) -> Vec<u8> {
        // A guest that floods signals gets no more questions than this outstanding.
        if self.pending.len() >= MAX_PENDING {
            return Vec::new();
        }
        self.serial += 1;
        self.pending.insert(self.serial, pending);
        dbus::method_call(self.serial, DEST, path, interface, member, args)
    }

    /// What `m` means, appended to `events`; the bytes of the calls to send next.
    pub fn on_message(&mut self, m: &Message, events: &mut Vec<Event>) -> Vec<u8> {
        let mut out = Vec::new();
        match m.kind {
            Kind::Signal => self.on_signal(m, events, &mut out),
            Kind::Return | Kind::Error => {
                let Some(pending) = m.reply_serial.and_then(|s| self.pending.remove(&s)) else {
                    return out;
                };
                match pending {
                    Pending::ReadList(..) | Pending::ReadManager(..) | Pending::ReadProp(..) => {
                        self.on_read_reply(pending, m, &mut out)
                    }
                    _ if m.kind == Kind::Return => self.on_reply(pending, m, events, &mut out),
                    _ => {}
                }
            }
            Kind::Call => {}
        }
        out
    }

    fn on_signal(&mut self, m: &Message, events: &mut Vec<Event>, out: &mut Vec<u8>) {
        let member = m.member.as_deref().unwrap_or_default();
        match (m.interface.as_deref(), member, m.body.as_slice()) {
            (Some(MANAGER), "JobNew", [id, path, unit]) => {
                let (Some(id), Some(path), Some(unit)) =
                    (id.as_u64(), path.as_str(), unit.as_str())
                else {
                    return;
                };
                let Ok(id) = u32::try_from(id) else { return };
                self.unit_of.insert(id, unit.to_string());
                events.push(Event::Job {
                    id,
                    unit: unit.to_string(),
                    job_type: None,
                    state: None,
                });
                let path = path.to_string();
                out.extend(self.call(&path, PROPERTIES, "GetAll", &[JOB], Pending::JobProps(id)));
                out.extend(self.call(&path, JOB, "GetAfter", &[], Pending::After(id)));
                out.extend(self.call(&path, JOB, "GetBefore", &[], Pending::Before(id)));
                self.ask_timeout(unit, out);
            }
            (Some(MANAGER), "JobRemoved", [id, _, unit, result]) => {
                let (Some(id), Some(unit), Some(result)) =
                    (id.as_u64(), unit.as_str(), result.as_str())
                else {
                    return;
                };
                let Ok(id) = u32::try_from(id) else { return };
                self.removed.insert(id);
                self.unit_of.remove(&id);
                events.push(Event::JobRemoved {
                    id,
                    unit: unit.to_string(),
                    result: result.to_string(),
                });
            }
            (Some(MANAGER), "Reloading", [Value::Bool(active)]) => {
                events.push(Event::Reloading { active: *active });
            }
            (Some(PROPERTIES), "PropertiesChanged", [iface, Value::Dict(changed), ..]) => {
                let path = m.path.as_deref().unwrap_or_default();
                if let Some(id) = path
                    .strip_prefix(JOB_PREFIX)
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    if iface.as_str() == Some(JOB)
                        && let Some(state) = lookup(changed, "State").and_then(Value::as_str)
                    {
                        events.push(Event::JobState {
                            id,
                            state: state.to_string(),
                        });
                    }
                } else if let Some(unit) = dbus::unit_of_path(path) {
                    let props = kept(changed);
                    if !props.is_empty() {
                        events.push(Event::Unit { unit, props });
                    }
                }
            }
            _ => {}
        }
    }

    fn on_reply(
        &mut self,
        pending: Pending,
        m: &Message,
        events: &mut Vec<Event>,
        out: &mut Vec<u8>,
    ) {
        let first = m.body.first();
        match pending {
            Pending::ListJobs => {
                let Some(Value::Array(rows)) = first else {
                    return;
                };
                for row in rows {
                    let Some((id, unit, job_type, state, path)) = job_row(row) else {
                        continue;
                    };
                    self.unit_of.insert(id, unit.clone());
                    events.push(Event::Job {
                        id,
                        unit: unit.clone(),
                        job_type: Some(job_type.clone()),
                        state: Some(state.clone()),
                    });
                    out.extend(self.call(&path, JOB, "GetAfter", &[], Pending::After(id)));
                    self.ask_timeout(&unit, out);
                    if state == "running" {
                        // Its start began before the recorder connected: no change signal
                        // will bring the time, so ask.
                        self.ask_unit(&unit, UNIT, "InactiveExitTimestampMonotonic", out);
                    }
                }
            }
            Pending::JobProps(id) => {
                let Some(Value::Dict(props)) = first else {
                    return;
                };
                if self.removed.contains(&id) {
                    return;
                }
                let text = |k: &str| lookup(props, k).and_then(Value::as_str).map(str::to_string);
                let unit = lookup(props, "Unit")
                    .and_then(|v| match v {
                        Value::Struct(f) => f.first().and_then(Value::as_str),
                        _ => None,
                    })
                    .map(str::to_string)
                    .or_else(|| self.unit_of.get(&id).cloned());
                if let Some(unit) = unit {
                    events.push(Event::Job {
                        id,
                        unit,
                        job_type: text("JobType"),
                        state: text("State"),
                    });
                }
            }
            Pending::After(id) | Pending::Before(id) => {
                let Some(Value::Array(rows)) = first else {
                    return;
                };
                let jobs: Vec<u32> = rows.iter().filter_map(job_row).map(|r| r.0).collect();
                if self.removed.contains(&id) {
                    return;
                }
                events.push(match pending {
                    Pending::After(_) => Event::After { id, jobs },
                    _ => Event::Before { id, jobs },
                });
            }
            Pending::UnitProp(unit, name) => {
                if let Some(v) = first.map(Value::unwrap_variant).and_then(prop) {
                    events.push(Event::Unit {
                        unit,
                        props: vec![(name.to_string(), v)],
                    });
                }
            }
            Pending::Manager(name) => {
                if let Some(value) = first.map(Value::unwrap_variant).and_then(prop) {
                    events.push(Event::Manager {
                        name: name.to_string(),
                        value,
                    });
                }
            }
            Pending::ReadList(..) | Pending::ReadManager(..) | Pending::ReadProp(..) => {}
        }
    }

    /// Begin read `id` of units' states, as `scope` says: the `named` units first (each
    /// named block as often as it is named, like `systemctl show`), then (for
    /// [`units::Scope::Every`]) every unit PID 1 has loaded, sorted by name, and PID 1's
    /// start-up times. Plain `Get`s of the properties
    /// the evidence keeps, never `GetAll`: the Unit interface's `GetAll` computes each
    /// unit's file state, which costs PID 1 a walk of the unit paths per unit the first
    /// time (measured: about 12 ms per unit on a TCG guest, 5 s for a model boot's
    /// units). The result is taken with [`Protocol::take_reads`].
    pub fn read_units(&mut self, id: u64, named: &[String], scope: units::Scope) -> Vec<u8> {
        let mut read = units::Read::new(scope);
        for unit in named {
            read.add(unit, &dbus::unit_path(unit));
        }
        if !read.lists() {
            self.reads.insert(id, read);
            let mut out = Vec::new();
            self.pump(id, &mut out);
            return out;
        }
        self.reads.insert(id, read);
        let mut out = self.call(
            MANAGER_PATH,
            MANAGER,
            "ListUnits",
            &[],
            Pending::ReadList(id),
        );
        if out.is_empty() {
            self.reads.remove(&id);
            self.done
                .push((id, Err("too many calls awaiting PID 1's replies".into())));
            return out;
        }
        let manager = if scope == units::Scope::Every {
            &units::MANAGER_READ[..]
        } else {
            &[]
        };
        for &name in manager {
            out.extend(self.call(
                MANAGER_PATH,
                PROPERTIES,
                "Get",
                &[MANAGER, name],
                Pending::ReadManager(id, name),
            ));
            if let Some(r) = self.reads.get_mut(&id) {
                r.manager_pending += 1;
            }
        }
        self.pump(id, &mut out);
        out
    }

    /// Reads complete since the last call: the manager's and the units' `Key=value`
    /// blocks as `systemctl show` prints them, or why the read failed.
    pub fn take_reads(&mut self) -> Vec<(u64, Result<units::UnitsText, String>)> {
        std::mem::take(&mut self.done)
    }

    fn on_read_reply(&mut self, pending: Pending, m: &Message, out: &mut Vec<u8>) {
        let value = (m.kind == Kind::Return)
            .then(|| m.body.first())
            .flatten()
            .map(Value::unwrap_variant);
        let id = match pending {
            Pending::ReadList(id) => {
                let Some(read) = self.reads.get_mut(&id) else {
                    return;
                };
                match value {
                    Some(Value::Array(rows)) => {
                        if let Err(e) = read.listed(rows) {
                            self.reads.remove(&id);
                            self.done.push((id, Err(e)));
                            return;
                        }
                    }
                    _ => {
                        self.reads.remove(&id);
                        let why = m
                            .error_name
                            .clone()
                            .unwrap_or_else(|| "no unit list".into());
                        self.done
                            .push((id, Err(format!("ListUnits failed: {why}"))));
                        return;
                    }
                }
                id
            }
            Pending::ReadManager(id, name) => {
                let Some(read) = self.reads.get_mut(&id) else {
                    return;
                };
                read.manager_pending -= 1;
                if let Some(text) = value.and_then(|v| units::render(name, v)) {
                    read.manager.push((name, text));
                }
                id
            }
            Pending::ReadProp(id, block, name) => {
                let Some(read) = self.reads.get_mut(&id) else {
                    return;
                };
                read.in_flight -= 1;
                if let Some(text) = value.and_then(|v| units::render(name, v)) {
                    read.set(block, name, text);
                }
                id
            }
            _ => return,
        };
        self.pump(id, out);
    }

    /// Send the read's next calls, at most [`units::WINDOW`] awaiting replies; finish
    /// it when nothing is left to ask.
    fn pump(&mut self, id: u64, out: &mut Vec<u8>) {
        loop {
            let Some(read) = self.reads.get_mut(&id) else {
                return;
            };
            if read.in_flight >= units::WINDOW || self.pending.len() >= MAX_PENDING {
                return;
            }
            let Some((block, path, iface, name)) = read.next_call() else {
                if read.finished() {
                    let read = self.reads.remove(&id).expect("the read");
                    self.done.push((id, Ok(read.render())));
                }
                return;
            };
            read.in_flight += 1;
            out.extend(self.call(
                &path,
                PROPERTIES,
                "Get",
                &[iface, name],
                Pending::ReadProp(id, block, name),
            ));
        }
    }

    /// A service's start timeout, once per unit: it says when a cycle can break.
    fn ask_timeout(&mut self, unit: &str, out: &mut Vec<u8>) {
        if unit.ends_with(".service") {
            self.ask_unit(unit, SERVICE, "TimeoutStartUSec", out);
        }
    }

    fn ask_unit(&mut self, unit: &str, iface: &'static str, name: &'static str, out: &mut Vec<u8>) {
        if !self.asked.insert((unit.to_string(), name)) {
            return;
        }
        let path = dbus::unit_path(unit);
        out.extend(self.call(
            &path,
            PROPERTIES,
            "Get",
            &[iface, name],
            Pending::UnitProp(unit.to_string(), name),
        ));
    }
}

/// `(id, unit, type, state, job path)` from a `(usssoo)` row of `ListJobs`/`GetAfter`.
fn job_row(row: &Value) -> Option<(u32, String, String, String, String)> {
    let Value::Struct(f) = row else { return None };
    let id = u32::try_from(f.first()?.as_u64()?).ok()?;
    let s = |i: usize| f.get(i).and_then(Value::as_str).map(str::to_string);
    Some((id, s(1)?, s(2)?, s(3)?, s(4)?))
}

fn lookup<'a>(dict: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    dict.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v.unwrap_variant())
}

fn prop(v: &Value) -> Option<Prop> {
    // Signed numbers (a main process's exit status is `i`) as systemctl prints them.
    let signed = |n: i64| u64::try_from(n).map_or_else(|_| Prop::Text(n.to_string()), Prop::Num);
    match v {
        Value::Str(s) => Some(Prop::Text(s.clone())),
        Value::I16(n) => Some(signed((*n).into())),
        Value::I32(n) => Some(signed((*n).into())),
        Value::I64(n) => Some(signed(*n)),
        v => v.as_u64().map(Prop::Num),
    }
}

fn kept(changed: &[(Value, Value)]) -> Vec<(String, Prop)> {
    changed
        .iter()
        .filter_map(|(k, v)| {
            let k = k.as_str()?;
            UNIT_PROPERTIES
                .contains(&k)
                .then(|| Some((k.to_string(), prop(v.unwrap_variant())?)))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_numbers_are_kept_as_systemctl_prints_them() {
        assert_eq!(prop(&Value::I32(2)), Some(Prop::Num(2)));
        assert_eq!(prop(&Value::I32(-1)), Some(Prop::Text("-1".into())));
        assert_eq!(prop(&Value::Bool(true)), None);
    }
}
