//! A target's units as read without booting it: its unit files ([`UnitSources`]) and
//! the health gates it declares ([`Gate`]). Plain data, so the target layer that reads
//! them and the checks that analyse them share it without importing each other.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::unitfile::{Declared, template_of};

/// A resolved gate: `unit`'s start waits on `url`, which `served_by` serves.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gate {
    /// The gated unit (its start job waits on the URL).
    pub unit: String,
    /// The URL polled.
    pub url: String,
    /// The unit that serves the URL.
    pub served_by: String,
}

/// A target's unit files, as found: what systemd would load, before resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSources {
    /// Unit name → the text of its unit file (the one that wins by precedence).
    pub files: BTreeMap<String, String>,
    /// Unit name → its drop-ins `(file name, text)`, in the order systemd applies them.
    pub dropins: BTreeMap<String, Vec<(String, String)>>,
    /// Alias → the unit it names (symlinks in the unit folders, `default.target`).
    pub aliases: BTreeMap<String, String>,
    /// `(unit, wanted)` from `unit.wants/` folders.
    pub wants: BTreeSet<(String, String)>,
    /// `(unit, required)` from `unit.requires/` folders.
    pub requires: BTreeSet<(String, String)>,
    /// `(unit, upheld)` from `unit.upholds/` folders (`UpheldBy=`, NixOS's `upheldBy`).
    pub upholds: BTreeSet<(String, String)>,
    /// Units masked (linked to /dev/null).
    pub masked: BTreeSet<String>,
}

impl UnitSources {
    /// The name a unit is loaded under (aliases followed).
    pub fn canonical(&self, name: &str) -> String {
        let mut n = name.to_string();
        for _ in 0..8 {
            match self.aliases.get(&n) {
                Some(t) if *t != n => n = t.clone(),
                _ => break,
            }
        }
        n
    }

    /// What `name` declares: its file (or its template's, specialised), then its
    /// drop-ins. `None` for a unit with no file (or a masked one).
    pub fn declared(&self, name: &str) -> Option<Declared> {
        if self.masked.contains(name) {
            return None;
        }
        let template = template_of(name);
        let text = self
            .files
            .get(name)
            .or_else(|| template.as_ref().and_then(|t| self.files.get(t)))?;
        let mut d = Declared::new();
        d.apply(text);
        for key in template.iter().chain(std::iter::once(&name.to_string())) {
            for (_, dropin) in self.dropins.get(key).into_iter().flatten() {
                d.apply(dropin);
            }
        }
        d.specialize(name);
        Some(d)
    }
}
