//! Redaction of secrets in the evidence bundle.
//!
//! A [`Redactor`] holds the `redact:` patterns of the plan and the recipe, and the
//! harness's own key material (the per-run SSH client key and guest host key), and
//! replaces every match with [`MARK`], counting replacements. It is pure.
//!
//! The registry below makes a redactor reachable from `bundle::write_atomic`
//! without threading it through every writer: a run registers one for the bundle's
//! root and one per pair folder, and each write uses the redactor of the longest
//! registered folder that holds the file, and adds its count to that file. Files the
//! harness does not write whole (the timeline, QEMU's serial log and stderr) are
//! filtered in place by [`finish_folder`] when the pair ends.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regex::bytes::Regex;

/// What a secret is replaced with.
pub const MARK: &str = "[REDACTED]";

/// The per-pair record of replacements: file name → count.
pub const REDACTIONS: &str = "redactions.json";

/// Patterns and literal secrets to replace with [`MARK`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Applied in order: literal secrets (longest first) before the user's patterns, so
    /// a whole key block is one replacement rather than one per line.
    literals: Vec<Regex>,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// A redactor for `patterns` (Rust `regex` syntax). They were checked when the plan
    /// or recipe was read; a pattern that does not compile here is an error all the same.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> anyhow::Result<Redactor> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Regex::new(p.as_ref()).map_err(|e| {
                    crate::error::usage(format!(
                        "redact: invalid regular expression {:?}: {e}",
                        p.as_ref()
                    ))
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Redactor {
            literals: Vec::new(),
            patterns,
        })
    }

    /// Also replace every occurrence of `secret` (ignored when shorter than 12 bytes:
    /// a short literal would hit ordinary text, and no key form is that short).
    pub fn add_literal(&mut self, secret: &str) {
        if secret.len() < 12 {
            return;
        }
        if let Ok(re) = Regex::new(&regex::escape(secret)) {
            self.literals.push(re);
            // Longest first, so a block goes before the lines it is made of.
            self.literals
                .sort_by_key(|r| std::cmp::Reverse(r.as_str().len()));
        }
    }

    /// Also replace every form of the run's private keys (see [`crate::guest::SshKey`]).
    pub fn add_key(&mut self, key: &crate::guest::SshKey) {
        for secret in key.secret_forms() {
            self.add_literal(&secret);
        }
    }

    /// Whether there is nothing to replace.
    pub fn is_empty(&self) -> bool {
        self.literals.is_empty() && self.patterns.is_empty()
    }

    /// `bytes` with every secret replaced, and how many replacements were made.
    pub fn redact<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, [u8]>, usize) {
        let mut out = Cow::Borrowed(bytes);
        let mut count = 0;
        for re in self.literals.iter().chain(&self.patterns) {
            let n = re.find_iter(&out).filter(|m| !m.is_empty()).count();
            if n == 0 {
                continue;
            }
            count += n;
            let replaced = re
                .replace_all(&out, |c: &regex::bytes::Captures<'_>| {
                    // An empty match (a pattern like `x*`) replaces nothing.
                    if c[0].is_empty() {
                        Vec::new()
                    } else {
                        MARK.as_bytes().to_vec()
                    }
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        (out, count)
    }
}

struct Entry {
    root: PathBuf,
    redactor: Arc<Redactor>,
    /// Path → replacements, for every file filtered under `root`.
    counts: BTreeMap<PathBuf, usize>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Filter every file written under `root` with `redactor` (replacing a redactor
/// registered there before, keeping its counts).
pub fn register(root: &Path, redactor: Redactor) {
    let mut reg = registry();
    let redactor = Arc::new(redactor);
    match reg.iter_mut().find(|e| e.root == root) {
        Some(e) => e.redactor = redactor,
        None => reg.push(Entry {
            root: root.to_path_buf(),
            redactor,
            counts: BTreeMap::new(),
        }),
    }
}

/// Add the run's keys to the redactor registered for `root` (no-op when none is).
pub fn add_key(root: &Path, key: &crate::guest::SshKey) {
    let mut reg = registry();
    if let Some(e) = reg.iter_mut().find(|e| e.root == root) {
        let mut r = (*e.redactor).clone();
        r.add_key(key);
        e.redactor = Arc::new(r);
    }
}

/// Forget the redactor of `root` and its counts.
pub fn unregister(root: &Path) {
    registry().retain(|e| e.root != root);
}

/// The redactor of the longest registered folder holding `path`.
fn redactor_for(path: &Path) -> Option<(PathBuf, Arc<Redactor>)> {
    registry()
        .iter()
        .filter(|e| path.starts_with(&e.root))
        .max_by_key(|e| e.root.components().count())
        .map(|e| (e.root.clone(), e.redactor.clone()))
}

fn record(root: &Path, path: &Path, n: usize) {
    if let Some(e) = registry().iter_mut().find(|e| e.root == root) {
        *e.counts.entry(path.to_path_buf()).or_default() += n;
    }
}

/// `bytes` as they may be written to `path`: filtered when a registered folder holds
/// it (the count is recorded), unchanged otherwise. Called by `write_atomic`.
pub fn filter<'a>(path: &Path, bytes: &'a [u8]) -> Cow<'a, [u8]> {
    let Some((root, redactor)) = redactor_for(path) else {
        return Cow::Borrowed(bytes);
    };
    let (out, n) = redactor.redact(bytes);
    record(&root, path, n);
    out
}

/// `text` as the redactor of the folder holding `path` would write it, without counting
/// (for what the harness prints on the terminal, which a CI log keeps).
pub fn redact_text(path: &Path, text: &str) -> String {
    match redactor_for(path) {
        Some((_, r)) => String::from_utf8_lossy(&r.redact(text.as_bytes()).0).into_owned(),
        None => text.to_string(),
    }
}

/// Files never filtered in place: disk images (the overlay kept with `--keep`), which
/// are large, binary, and not evidence anyone reads as text.
fn skipped(name: &str) -> bool {
    name.ends_with(".qcow2") || name.ends_with(".sock")
}

/// At the end of a pair: filter in place every file of `dir` that was not written
/// through `write_atomic` (the timeline, serial logs, QEMU's stderr), write
/// `redactions.json` (file name → replacements, every file of the folder) and forget
/// the folder's redactor. Returns the counts.
pub fn finish_folder(dir: &Path) -> anyhow::Result<BTreeMap<String, usize>> {
    let Some((root, redactor)) = redactor_for(dir) else {
        return Ok(BTreeMap::new());
    };
    let seen: BTreeMap<PathBuf, usize> = registry()
        .iter()
        .find(|e| e.root == root)
        .map(|e| e.counts.clone())
        .unwrap_or_default();
    let mut counts = BTreeMap::new();
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .filter(|(n, _)| n != REDACTIONS && !skipped(n))
        .collect();
    names.sort();
    for (name, path) in names {
        let n = match seen.get(&path) {
            Some(n) => *n,
            None => filter_in_place(&redactor, &path)?,
        };
        counts.insert(name, n);
    }
    if root == dir {
        unregister(dir);
    }
    let mut bytes = serde_json::to_vec_pretty(&counts)?;
    bytes.push(b'\n');
    // As `bundle::write_atomic` writes it (filtered, then replaced whole), without
    // importing the bundle module, which imports this one.
    let path = dir.join(REDACTIONS);
    replace(&path, &filter(&path, &bytes))?;
    Ok(counts)
}

/// Filter one file where it lies (atomically, keeping it as it was when nothing
/// matched). Returns the replacements made.
pub fn filter_in_place(redactor: &Redactor, path: &Path) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path)?;
    let (out, n) = redactor.redact(&bytes);
    if n > 0 {
        replace(path, &out)?;
    }
    Ok(n)
}

/// Replace `path` with `bytes` atomically (a temporary file beside it, then a rename).
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)?;
    Ok(())
}

/// Read a run folder's `redactions.json` (empty when absent: a bundle from before
/// redaction, or a pair that did not finish).
pub fn read_counts(dir: &Path) -> BTreeMap<String, usize> {
    std::fs::read(dir.join(REDACTIONS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_lines_get_the_folder_redaction_without_counting() {
        let root = std::path::PathBuf::from("/nonexistent/coldboot-redact-text-test");
        register(&root, Redactor::new(&["SECRET-[0-9]+"]).unwrap());
        let pair = root.join("after__x");
        assert_eq!(
            redact_text(&pair, "fail: saw SECRET-42 in the log"),
            "fail: saw [REDACTED] in the log"
        );
        assert_eq!(
            redact_text(Path::new("/elsewhere"), "SECRET-42"),
            "SECRET-42"
        );
        assert!(
            registry()
                .iter()
                .find(|e| e.root == root)
                .is_some_and(|e| e.counts.is_empty())
        );
        unregister(&root);
    }

    use super::*;

    #[test]
    fn patterns_and_literals_are_replaced_and_counted() {
        let mut r = Redactor::new(&["SECRET-[0-9a-f]+"]).unwrap();
        r.add_literal("hunter2hunter2");
        let (out, n) = r.redact(b"a SECRET-00ff b hunter2hunter2 c SECRET-1 SECRET-x");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "a [REDACTED] b [REDACTED] c [REDACTED] SECRET-x"
        );
        assert_eq!(n, 3);
        let (out, n) = r.redact(b"nothing here");
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(n, 0);
    }

    #[test]
    fn an_empty_match_replaces_nothing() {
        let r = Redactor::new(&["x*"]).unwrap();
        let (out, n) = r.redact(b"abxxc");
        assert_eq!(&*out, b"ab[REDACTED]c");
        assert_eq!(n, 1);
    }

    #[test]
    fn a_bad_pattern_is_a_usage_error() {
        let e = Redactor::new(&["(unclosed"]).unwrap_err();
        assert_eq!(crate::error::class(&e), crate::error::ErrorClass::Usage);
    }

    #[test]
    fn every_form_of_the_keys_is_replaced() {
        let key = crate::guest::SshKey::generate().unwrap();
        let mut r = Redactor::default();
        r.add_key(&key);
        for secret in key.secret_forms() {
            let text = format!("before {} after", secret.as_str());
            let (out, n) = r.redact(text.as_bytes());
            assert!(n >= 1, "{secret:?}");
            assert_eq!(String::from_utf8_lossy(&out), "before [REDACTED] after");
        }
        // The PEM as JSON quotes it (newlines escaped): each base64 line still goes.
        let pem = key.private_openssh().unwrap();
        let json = serde_json::to_string(pem.as_str()).unwrap();
        let (out, _) = r.redact(json.as_bytes());
        let out = String::from_utf8_lossy(&out);
        assert!(!out.contains("b3BlbnNzaC1rZXktdjE"), "{out}");
    }
}
