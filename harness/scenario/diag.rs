//! Located diagnostics: every problem in a scenario or plan file names `file:line:col`
//! and says what was expected, whether serde-saphyr found it or a later semantic check did.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in a scenario or plan file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: PathBuf,
    /// 1-based line, or 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column, or 0 when the problem concerns the whole file.
    pub col: u64,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a serde-saphyr location (unknown locations point at the file).
    pub fn at(file: &Path, loc: Location, message: impl Into<String>) -> Diagnostic {
        let (line, col) = if loc == Location::UNKNOWN {
            (0, 0)
        } else {
            (loc.line(), loc.column())
        };
        Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A diagnostic about the whole file (it cannot be read, for example).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(file, Location::UNKNOWN, message)
    }

    /// Turn a serde-saphyr error into a diagnostic, keeping its location and its plain
    /// message (without the trailing "at line L, column C" and without the snippet).
    pub fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> Diagnostic {
        let plain = err.without_snippet().to_string();
        match err.location() {
            Some(loc) if loc != Location::UNKNOWN => {
                let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
                let message = plain.strip_suffix(&suffix).unwrap_or(&plain);
                Diagnostic::at(file, loc, own_words(message))
            }
            _ => Diagnostic::whole_file(file, own_words(&plain)),
        }
    }
}

/// The YAML library's message in the harness's own words: advice for the file's
/// author, not the library's internals (its option names, its budget structs).
pub fn own_words(message: &str) -> String {
    let m = message.trim();
    if let Some(rest) = m.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest)
            .trim();
        return format!("the key `{key}` is given twice in the same mapping: keep one");
    }
    if let Some(rest) = m.strip_prefix("budget breached: ") {
        let what = rest
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or(rest);
        let limit = rest
            .split(|c: char| !c.is_ascii_digit())
            .find(|n| !n.is_empty())
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let why = match what {
            "Nodes" | "Events" => "has too many YAML nodes",
            "Depth" => "is nested too deeply",
            "Aliases" | "AliasExpansions" => "expands too many aliases (`*name`)",
            "Anchors" => "defines too many anchors (`&name`)",
            "InputBytes" | "Bytes" => "is too large",
            "Documents" => "holds too many YAML documents",
            _ => "exceeds a size limit",
        };
        return format!(
            "the file {why} for a coldboot file{limit}: a scenario, plan or recipe is a few hundred lines"
        );
    }
    match m {
        "unexpected end of input" => "the file is empty: it needs a mapping of keys".to_string(),
        "expected mapping start" => "expected a mapping (`key: value` lines) here".to_string(),
        "expected sequence start" => {
            "expected a list here (`- item` lines or `[a, b]`)".to_string()
        }
        "expected string scalar" => {
            "expected a single value here, not a list or a mapping".to_string()
        }
        "recursion limit exceeded" => {
            "the file is nested too deeply for a coldboot file".to_string()
        }
        "tabs disallowed within this context (block indentation)" => {
            "a tab indents this line: YAML indents with spaces".to_string()
        }
        // serde's word for an enum value is not the file author's.
        _ => m.replace("unknown variant", "unknown value"),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// Several diagnostics as one usage error (exit 2), one per line.
pub fn into_usage_error(diags: &[Diagnostic]) -> anyhow::Error {
    let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
    crate::error::usage(text.join("\n"))
}
