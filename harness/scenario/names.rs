//! Validated strings: systemd unit names and regular expressions. Their `Deserialize`
//! checks them, so a bad one is reported by serde-saphyr at its own line and column.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// Unit types systemd knows; a name must end in one of them.
pub const UNIT_SUFFIXES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "timer",
    "mount",
    "automount",
    "path",
    "device",
    "slice",
    "scope",
    "swap",
];

/// A systemd unit name such as `nginx.service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(
    transparent,
    extend("pattern" = r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|timer|mount|automount|path|device|slice|scope|swap)$")
)]
pub struct UnitName(pub String);

impl UnitName {
    /// Check a unit name: allowed characters and a known unit-type suffix.
    pub fn parse(text: &str) -> Result<UnitName, String> {
        let ok_chars = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-".contains(c));
        let suffix_ok = text
            .rsplit_once('.')
            .is_some_and(|(stem, suffix)| !stem.is_empty() && UNIT_SUFFIXES.contains(&suffix));
        if ok_chars && suffix_ok {
            Ok(UnitName(text.to_string()))
        } else {
            Err(format!(
                "invalid unit name {text:?}: expected a systemd unit name such as nginx.service (ending in .{})",
                UNIT_SUFFIXES.join(", .")
            ))
        }
    }

    /// The name as systemd writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UnitName::parse(&text).map_err(de::Error::custom)
    }
}

/// A regular expression (Rust `regex` syntax), checked when the file is read.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Pattern(pub String);

impl Pattern {
    /// Check that `text` compiles as a regular expression.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        regex::Regex::new(text)
            .map(|_| Pattern(text.to_string()))
            .map_err(|e| {
                // regex renders a multi-line diagram; its last line says what is wrong.
                let full = e.to_string();
                let why = full
                    .lines()
                    .last()
                    .unwrap_or(&full)
                    .trim_start_matches("error: ")
                    .to_string();
                format!("invalid regular expression {text:?}: {why}")
            })
    }

    /// Whether the pattern is found anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        // The pattern compiled when it was parsed; a pattern built by hand that does not
        // compile matches nothing rather than panicking.
        regex::Regex::new(&self.0).is_ok_and(|re| re.is_match(text))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Pattern {}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::parse(&text).map_err(de::Error::custom)
    }
}

/// Whether `name` is usable in run ids and evidence folder names.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert!(UnitName::parse("deploy-proxy.service").is_ok());
        assert!(UnitName::parse("getty@tty1.service").is_ok());
        assert!(UnitName::parse("multi-user.target").is_ok());
        for bad in [
            "deploy-proxy",
            "deploy proxy.service",
            ".service",
            "x.servic",
            "",
        ] {
            let err = UnitName::parse(bad).unwrap_err();
            assert!(err.contains("such as nginx.service"), "{bad}: {err}");
        }
    }

    #[test]
    fn patterns() {
        assert!(
            Pattern::parse("Result=(timeout|exit-code)")
                .unwrap()
                .is_match("Result=timeout")
        );
        assert!(Pattern::parse("a(").unwrap_err().contains("\"a(\""));
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name("dashboard-held-back"));
        assert!(!is_plain_name("a/b"));
        assert!(!is_plain_name(".hidden"));
        assert!(!is_plain_name(""));
    }
}
