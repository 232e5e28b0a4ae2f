//! Health gates a target declares: the dependency systemd cannot see.
//!
//! A gated unit's start job does not finish until a URL answers; another unit serves
//! that URL. systemd knows nothing of this edge, so a cycle through it (the old
//! pxgate: deploy-proxy polls the dashboard, the dashboard is `After=deploy-proxy`)
//! is invisible to every tool that reads only the job queue. The declaration is data a
//! reviewer can check: recipes write it in `recipe.yaml` (per variant value), NixOS
//! targets in `coldboot.gates.<unit> = { url; servedBy; }`. The harness never guesses it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::guest::systemd::sources::Gate;

/// One gate as written under a unit name: `{ url, served_by }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GateDecl {
    /// The URL the unit's start polls until it answers healthy.
    pub url: String,
    /// The unit that serves `url` (`servedBy` in the NixOS option).
    #[serde(alias = "servedBy")]
    pub served_by: String,
}

/// Gates from a `unit → declaration` map, sorted by unit.
pub fn gates_from(decls: &BTreeMap<String, GateDecl>) -> Vec<Gate> {
    decls
        .iter()
        .map(|(unit, d)| Gate {
            unit: unit.clone(),
            url: d.url.clone(),
            served_by: d.served_by.clone(),
        })
        .collect()
}

/// Why a declaration is unusable, or `None`. `is_unit` checks a unit name.
pub fn check_decl(unit: &str, d: &GateDecl, is_unit: impl Fn(&str) -> bool) -> Option<String> {
    if !is_unit(unit) {
        return Some(format!("{unit:?} is not a systemd unit name"));
    }
    if !is_unit(&d.served_by) {
        return Some(format!(
            "served_by {:?} is not a systemd unit name",
            d.served_by
        ));
    }
    match reqwest::Url::parse(&d.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => None,
        Ok(u) => Some(format!(
            "url {:?}: scheme {:?} is not http or https",
            d.url,
            u.scheme()
        )),
        Err(e) => Some(format!("url {:?} is not a URL: {e}", d.url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(u: &str) -> bool {
        u.ends_with(".service")
    }

    #[test]
    fn nix_spelling_is_accepted() {
        let json = r#"{"deploy-proxy.service":{"url":"http://127.0.0.1:8082/ping","servedBy":"traefik.service"}}"#;
        let decls: BTreeMap<String, GateDecl> = serde_json::from_str(json).unwrap();
        assert_eq!(
            gates_from(&decls),
            [Gate {
                unit: "deploy-proxy.service".into(),
                url: "http://127.0.0.1:8082/ping".into(),
                served_by: "traefik.service".into(),
            }]
        );
    }

    #[test]
    fn bad_declarations_say_why() {
        let d = |url: &str, by: &str| GateDecl {
            url: url.into(),
            served_by: by.into(),
        };
        assert_eq!(
            check_decl("a.service", &d("http://x/", "b.service"), unit),
            None
        );
        assert!(
            check_decl("a", &d("http://x/", "b.service"), unit)
                .unwrap()
                .contains("not a systemd unit")
        );
        assert!(
            check_decl("a.service", &d("ftp://x/", "b.service"), unit)
                .unwrap()
                .contains("scheme")
        );
        assert!(
            check_decl("a.service", &d("nope", "b.service"), unit)
                .unwrap()
                .contains("not a URL")
        );
    }
}
