//! Unit files as systemd reads them (`systemd.syntax(7)`, `systemd.unit(5)`). Pure.
//!
//! Only what dependency analysis needs: sections, `Key=value` assignments with `#`/`;`
//! comments and `\` continuations, and the dependency keys. An empty dependency
//! assignment does nothing: systemd.unit(5) says dependencies cannot be reset, only added.

use std::collections::BTreeSet;

/// One `Key=value` line with its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// `Unit`, `Service`, `Install`...
    pub section: String,
    /// The key.
    pub key: String,
    /// The value, continuations joined with a space.
    pub value: String,
}

/// Parse unit file text into its assignments, in order. Lines outside a section and
/// lines without `=` are skipped, as systemd does (it only warns).
pub fn parse_assignments(text: &str) -> Vec<Assignment> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        let joined = match pending.take() {
            Some(mut p) => {
                if line.starts_with('#') || line.starts_with(';') {
                    pending = Some(p);
                    continue;
                }
                p.push(' ');
                p.push_str(line);
                p
            }
            None => {
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                line.to_string()
            }
        };
        if let Some(body) = joined.strip_suffix('\\') {
            pending = Some(body.trim_end().to_string());
            continue;
        }
        if joined.starts_with('[') && joined.ends_with(']') {
            section = joined[1..joined.len() - 1].trim().to_string();
            continue;
        }
        if let Some((k, v)) = joined.split_once('=') {
            out.push(Assignment {
                section: section.clone(),
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            });
        }
    }
    if let Some(p) = pending
        && let Some((k, v)) = p.split_once('=')
    {
        out.push(Assignment {
            section,
            key: k.trim().to_string(),
            value: v.trim().to_string(),
        });
    }
    out
}

/// The dependencies one unit declares, after its main file and drop-ins are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// `After=`: this unit starts after these.
    pub after: BTreeSet<String>,
    /// `Before=`: these start after this unit.
    pub before: BTreeSet<String>,
    /// `Requires=`.
    pub requires: BTreeSet<String>,
    /// `Wants=`.
    pub wants: BTreeSet<String>,
    /// `BindsTo=`.
    pub binds_to: BTreeSet<String>,
    /// `Requisite=`.
    pub requisite: BTreeSet<String>,
    /// `Upholds=`: pulled in like `Wants=`, and restarted while this unit is up.
    pub upholds: BTreeSet<String>,
    /// `[Install] WantedBy=` (effective only once enabled; see the `.wants` folders).
    pub wanted_by: BTreeSet<String>,
    /// `[Install] RequiredBy=`.
    pub required_by: BTreeSet<String>,
    /// `[Install] Alias=`.
    pub alias: BTreeSet<String>,
    /// `DefaultDependencies=` (default yes).
    pub default_dependencies: bool,
}

impl Declared {
    /// Nothing declared yet, with systemd's default `DefaultDependencies=yes`.
    pub fn new() -> Declared {
        Declared {
            default_dependencies: true,
            ..Declared::default()
        }
    }

    /// Apply one file's text (the main file, then each drop-in in order).
    pub fn apply(&mut self, text: &str) {
        for a in parse_assignments(text) {
            let list = match (a.section.as_str(), a.key.as_str()) {
                ("Unit", "After") => &mut self.after,
                ("Unit", "Before") => &mut self.before,
                ("Unit", "Requires") => &mut self.requires,
                ("Unit", "Wants") => &mut self.wants,
                ("Unit", "BindsTo") => &mut self.binds_to,
                ("Unit", "Requisite") => &mut self.requisite,
                ("Unit", "Upholds") => &mut self.upholds,
                ("Install", "WantedBy") => &mut self.wanted_by,
                ("Install", "RequiredBy") => &mut self.required_by,
                ("Install", "Alias") => &mut self.alias,
                ("Unit", "DefaultDependencies") => {
                    self.default_dependencies = parse_bool(&a.value).unwrap_or(true);
                    continue;
                }
                _ => continue,
            };
            if a.value.is_empty() {
                // systemd.unit(5): dependencies cannot be reset to an empty list, so a
                // drop-in can only add them. Install lists can be cleared.
                if a.section == "Install" {
                    list.clear();
                }
            } else {
                list.extend(a.value.split_whitespace().map(str::to_string));
            }
        }
    }

    /// Replace `%i`, `%I`, `%n`, `%N`, `%p` and `%%` in every name (template instances).
    pub fn specialize(&mut self, name: &str) {
        for list in [
            &mut self.after,
            &mut self.before,
            &mut self.requires,
            &mut self.wants,
            &mut self.binds_to,
            &mut self.requisite,
            &mut self.upholds,
            &mut self.wanted_by,
            &mut self.required_by,
        ] {
            *list = list.iter().map(|v| specifiers(v, name)).collect();
        }
    }
}

/// systemd's booleans: 1/yes/y/true/t/on and 0/no/n/false/f/off.
fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Expand the name specifiers of `systemd.unit(5)` for unit `name` (`foo@bar.service`).
pub fn specifiers(value: &str, name: &str) -> String {
    let (stem, _) = name.rsplit_once('.').unwrap_or((name, ""));
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i' | 'I') => out.push_str(instance),
            Some('n') => out.push_str(name),
            Some('N') => out.push_str(stem),
            Some('p' | 'P') => out.push_str(prefix),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The template of an instance name: `getty@tty1.service` → `getty@.service`.
pub fn template_of(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_and_continuations() {
        let text = "# c\n[Unit]\nDescription=x\nAfter=a.service \\\n  b.service\n; no\n[Install]\nWantedBy=multi-user.target\n";
        let a = parse_assignments(text);
        assert_eq!(a.len(), 3);
        assert_eq!(
            (
                a[1].section.as_str(),
                a[1].key.as_str(),
                a[1].value.as_str()
            ),
            ("Unit", "After", "a.service b.service")
        );
        assert_eq!(a[2].section, "Install");
    }

    #[test]
    fn drop_ins_add_and_cannot_reset_dependencies() {
        let mut d = Declared::new();
        d.apply(
            "[Unit]\nAfter=a.service b.service\nRequires=c.service\n[Install]\nWantedBy=x.target\n",
        );
        d.apply("[Unit]\nAfter=\nAfter=z.service\nDefaultDependencies=no\n[Install]\nWantedBy=\n");
        assert_eq!(
            d.after,
            BTreeSet::from(["a.service".into(), "b.service".into(), "z.service".into()])
        );
        assert!(d.wanted_by.is_empty(), "install lists can be cleared");
        assert!(d.requires.contains("c.service"));
        assert!(!d.default_dependencies);
    }

    #[test]
    fn instances_and_specifiers() {
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("getty@.service"), None);
        assert_eq!(template_of("ssh.service"), None);
        assert_eq!(
            specifiers(
                "dev-%i.device x-%p.target %n %%",
                "serial-getty@ttyS0.service"
            ),
            "dev-ttyS0.device x-serial-getty.target serial-getty@ttyS0.service %"
        );
    }
}
