//! The recipe file (`vm-images/NAME/recipe.yaml`): its types, loading with
//! `file:line:col` errors, validation, and variant resolution.
//!
//! Everything here is pure except [`Recipe::load`], which only reads one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::gate::{Gate, GateDecl, check_decl, gates_from};
use crate::error::usage;

/// The package every recipe must install: the harness reaches the guest over SSH.
pub const REQUIRED_PACKAGE: &str = "openssh-server";

/// Disk size used when a recipe does not give `disk_size`.
pub const DEFAULT_DISK_SIZE: &str = "2G";

/// One named variant: a choice the user makes with `K=V`, written into files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// What the choice means, shown in error messages and `--help` style listings.
    #[serde(default)]
    pub doc: String,
    /// The value used when the user does not choose one.
    pub default: String,
    /// The allowed values (an allow-list); empty when `integer` is set.
    #[serde(default)]
    pub values: Vec<String>,
    /// Accept an integer instead of an allow-list.
    #[serde(default)]
    pub integer: bool,
    /// The smallest integer accepted (only with `integer: true`).
    #[serde(default)]
    pub min: Option<i64>,
    /// The largest integer accepted (only with `integer: true`).
    #[serde(default)]
    pub max: Option<i64>,
    /// Guest path → content; `{value}` in the content is replaced by the chosen value.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Value → the health gates the image has with that value (unit → gate). They
    /// add to, and per unit replace, the recipe's top-level `gates`.
    #[serde(default)]
    pub gates: BTreeMap<String, BTreeMap<String, GateDecl>>,
}

/// A named fault that scenarios may inject; the target decides how.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What the fault does, for reports.
    pub doc: String,
    /// Shell command run in the guest as root to inject the fault.
    pub run: String,
}

/// The file as written, with source locations kept for validation errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    description: String,
    suite: Spanned<String>,
    packages: Spanned<Vec<String>>,
    #[serde(default)]
    enable: Vec<Spanned<String>>,
    #[serde(default)]
    disk_size: Option<Spanned<String>>,
    #[serde(default)]
    kernel_args: Vec<String>,
    #[serde(default)]
    variants: BTreeMap<String, Spanned<Variant>>,
    #[serde(default)]
    faults: BTreeMap<String, Fault>,
    #[serde(default)]
    gates: Option<Spanned<BTreeMap<String, GateDecl>>>,
    /// Regular expressions whose matches are redacted from the evidence (checked as the
    /// file is read, so a bad one is reported at its line and column).
    #[serde(default)]
    redact: Vec<crate::scenario::names::Pattern>,
    /// More overlay folders, relative to the recipe folder, copied after `overlay/`.
    #[serde(default)]
    overlays: Vec<Spanned<String>>,
}

/// A validated recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The recipe folder (as given; the cache key uses its content, not this path).
    pub dir: PathBuf,
    /// One-line description.
    pub description: String,
    /// Debian suite for mmdebstrap.
    pub suite: String,
    /// Packages to install, as written.
    pub packages: Vec<String>,
    /// Units to enable in the image.
    pub enable: Vec<String>,
    /// Size of the ext4 root filesystem in bytes.
    pub disk_size_bytes: u64,
    /// Extra kernel arguments appended to the base command line.
    pub kernel_args: Vec<String>,
    /// Variants by name.
    pub variants: BTreeMap<String, Variant>,
    /// Faults by name.
    pub faults: BTreeMap<String, Fault>,
    /// Health gates every variant has (unit → gate); see [`super::gate`].
    pub gates: BTreeMap<String, GateDecl>,
    /// `redact:` patterns: what the evidence of this target's runs must not show.
    pub redact: Vec<String>,
    /// `overlays:` folders copied onto the image after `overlay/`, in order, resolved
    /// against the recipe folder. They let files the recipe shares with another
    /// consumer (the NixOS model in `nix/model/`) live in one place.
    pub overlays: Vec<PathBuf>,
}

/// The path of the recipe file inside a recipe folder.
pub fn recipe_file(dir: &Path) -> PathBuf {
    dir.join("recipe.yaml")
}

impl Recipe {
    /// Read and validate `DIR/recipe.yaml`. Every error is a usage error naming the file.
    pub fn load(dir: &Path) -> anyhow::Result<Recipe> {
        let file = recipe_file(dir);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            usage(format!(
                "cannot read recipe {}: {e} (a recipe folder must contain recipe.yaml)",
                file.display()
            ))
        })?;
        Recipe::parse(dir, &file, &text)
    }

    /// Parse and validate recipe text; `file` is only used in messages.
    pub fn parse(dir: &Path, file: &Path, text: &str) -> anyhow::Result<Recipe> {
        let raw: RawRecipe = serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?;
        validate(dir, file, raw)
    }
}

/// Format a serde-saphyr error as `path:line:col: message`, then the snippet.
fn yaml_error(file: &Path, err: &serde_saphyr::Error) -> anyhow::Error {
    let raw = err.without_snippet().to_string();
    let name = file.display().to_string();
    let mut options = serde_saphyr::RenderOptions::default();
    options.source_name = Some(&name);
    let (at, library) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
            (
                format!("{name}:{}:{}", loc.line(), loc.column()),
                raw.strip_suffix(&suffix).unwrap_or(&raw).trim().to_string(),
            )
        }
        None => (name.clone(), raw.trim().to_string()),
    };
    // The harness's words, in the message and under the snippet's caret alike.
    let plain = crate::scenario::diag::own_words(&library);
    let full = err.render_with_options(options).replace(&library, &plain);
    usage(format!(
        "{at}: invalid recipe: {plain}{}",
        snippet(&full, &plain)
    ))
}

/// The rendered snippet on its own lines (without its own repeat of the message), or
/// nothing when it adds nothing.
fn snippet(full: &str, plain: &str) -> String {
    let body = match full.split_once('\n') {
        Some((first, rest)) if first.starts_with("error:") => rest,
        _ => full,
    };
    if body.trim().is_empty() || body.trim() == plain.trim() {
        String::new()
    } else {
        format!("\n{}", body.trim_end())
    }
}

/// `path:line:col` for a spanned value (or just the path when the location is unknown).
fn at(file: &Path, loc: Location) -> String {
    if loc == Location::UNKNOWN {
        file.display().to_string()
    } else {
        format!("{}:{}:{}", file.display(), loc.line(), loc.column())
    }
}

fn validate(dir: &Path, file: &Path, raw: RawRecipe) -> anyhow::Result<Recipe> {
    let suite = raw.suite.value.trim().to_string();
    if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(usage(format!(
            "{}: field `suite`: {:?} is not a Debian suite name (for example bookworm)",
            at(file, raw.suite.referenced),
            raw.suite.value
        )));
    }
    let packages = raw.packages.value.clone();
    for p in &packages {
        if !is_package_name(p) {
            return Err(usage(format!(
                "{}: field `packages`: {p:?} is not a Debian package name",
                at(file, raw.packages.referenced)
            )));
        }
    }
    if !packages.iter().any(|p| p == REQUIRED_PACKAGE) {
        return Err(usage(format!(
            "{}: field `packages` must include {REQUIRED_PACKAGE}: the harness reaches the guest over SSH",
            at(file, raw.packages.referenced)
        )));
    }
    let mut enable = Vec::new();
    for unit in raw.enable {
        if !is_unit_name(&unit.value) {
            return Err(usage(format!(
                "{}: field `enable`: {:?} is not a systemd unit name (like foo.service)",
                at(file, unit.referenced),
                unit.value
            )));
        }
        enable.push(unit.value);
    }
    let disk_size_bytes = match &raw.disk_size {
        None => parse_size(DEFAULT_DISK_SIZE).unwrap_or(2 << 30),
        Some(s) => parse_size(&s.value).ok_or_else(|| {
            usage(format!(
                "{}: field `disk_size`: {:?} is not a size (write a number with K, M, G or T, like 2G; at least 64M)",
                at(file, s.referenced),
                s.value
            ))
        })?,
    };
    let mut variants = BTreeMap::new();
    for (name, spanned) in raw.variants {
        let where_ = at(file, spanned.referenced);
        let v = spanned.value;
        check_variant_decl(&name, &v)
            .map_err(|m| usage(format!("{where_}: variant `{name}`: {m}")))?;
        variants.insert(name, v);
    }
    let gates = match raw.gates {
        None => BTreeMap::new(),
        Some(g) => {
            for (unit, d) in &g.value {
                if let Some(why) = check_decl(unit, d, is_unit_name) {
                    return Err(usage(format!(
                        "{}: field `gates`: {why}",
                        at(file, g.referenced)
                    )));
                }
            }
            g.value
        }
    };
    let mut overlays = Vec::new();
    for o in raw.overlays {
        let rel = Path::new(&o.value);
        if o.value.is_empty() || rel.is_absolute() {
            return Err(usage(format!(
                "{}: field `overlays`: {:?} must be a folder path relative to the recipe folder",
                at(file, o.referenced),
                o.value
            )));
        }
        let full = dir.join(rel);
        if !full.is_dir() {
            return Err(usage(format!(
                "{}: field `overlays`: {} is not a folder (the path is relative to the recipe folder {})",
                at(file, o.referenced),
                full.display(),
                dir.display()
            )));
        }
        overlays.push(full);
    }
    Ok(Recipe {
        dir: dir.to_path_buf(),
        description: raw.description,
        suite,
        packages,
        enable,
        disk_size_bytes,
        kernel_args: raw.kernel_args,
        variants,
        faults: raw.faults,
        gates,
        redact: raw.redact.into_iter().map(|p| p.0).collect(),
        overlays,
    })
}

/// A variant must have exactly one rule, a default that obeys it, and absolute file paths.
fn check_variant_decl(name: &str, v: &Variant) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("a variant name uses only letters, digits, '-' and '_'".into());
    }
    match (v.integer, v.values.is_empty()) {
        (true, false) => return Err("give either `values` or `integer: true`, not both".into()),
        (false, true) => return Err("give `values` (an allow-list) or `integer: true`".into()),
        _ => {}
    }
    if !v.integer && (v.min.is_some() || v.max.is_some()) {
        return Err("`min` and `max` bound an integer variant: add `integer: true`".into());
    }
    if let (Some(lo), Some(hi)) = (v.min, v.max)
        && lo > hi
    {
        return Err(format!("`min` ({lo}) is above `max` ({hi})"));
    }
    check_value(v, &v.default).map_err(|m| format!("field `default`: {m}"))?;
    for (value, gates) in &v.gates {
        check_value(v, value).map_err(|m| format!("field `gates`: {m}"))?;
        for (unit, d) in gates {
            if let Some(why) = check_decl(unit, d, is_unit_name) {
                return Err(format!("field `gates`, value {value:?}: {why}"));
            }
        }
    }
    for path in v.files.keys() {
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") || path.ends_with('/') {
            return Err(format!(
                "field `files`: {path:?} must be an absolute file path in the guest without `..`"
            ));
        }
    }
    Ok(())
}

/// Whether `value` is allowed for this variant; the error says what is allowed.
fn check_value(v: &Variant, value: &str) -> Result<(), String> {
    if v.integer {
        let range = match (v.min, v.max) {
            (Some(lo), Some(hi)) => format!("an integer from {lo} to {hi}"),
            (Some(lo), None) => format!("an integer of at least {lo}"),
            (None, Some(hi)) => format!("an integer of at most {hi}"),
            (None, None) => "an integer".to_string(),
        };
        let Ok(n) = value.parse::<i64>() else {
            return Err(format!("{value:?} is not an integer (expected {range})"));
        };
        if v.min.is_some_and(|lo| n < lo) || v.max.is_some_and(|hi| n > hi) {
            return Err(format!("{n} is out of range (expected {range})"));
        }
    } else if !v.values.iter().any(|x| x == value) {
        return Err(format!(
            "{value:?} is not one of the allowed values: {}",
            v.values.join(", ")
        ));
    }
    Ok(())
}

impl Recipe {
    /// Fill in defaults and check the user's choices. Unknown keys and bad values are
    /// usage errors that name the key and list what is known or allowed.
    pub fn resolve_variants(
        &self,
        chosen: &BTreeMap<String, String>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        for key in chosen.keys() {
            if !self.variants.contains_key(key) {
                let known = if self.variants.is_empty() {
                    "this recipe has no variants".to_string()
                } else {
                    format!(
                        "known variants: {}",
                        self.variants.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                return Err(usage(format!(
                    "recipe {} has no variant {key:?}; {known}",
                    self.dir.display()
                )));
            }
        }
        let mut resolved = BTreeMap::new();
        for (name, v) in &self.variants {
            let value = chosen.get(name).unwrap_or(&v.default);
            check_value(v, value).map_err(|m| {
                usage(format!(
                    "recipe {}: variant {name}={value}: {m}",
                    self.dir.display()
                ))
            })?;
            resolved.insert(name.clone(), value.clone());
        }
        Ok(resolved)
    }

    /// The files the resolved variants write: guest path → content with `{value}` replaced.
    pub fn variant_files(&self, resolved: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, v) in &self.variants {
            let Some(value) = resolved.get(name) else {
                continue;
            };
            for (path, content) in &v.files {
                out.insert(path.clone(), content.replace("{value}", value));
            }
        }
        out
    }
}

impl Recipe {
    /// The health gates of the image with these resolved variants: the top-level
    /// declarations, then each variant's for its chosen value (per unit, the variant wins).
    pub fn gates(&self, resolved: &BTreeMap<String, String>) -> Vec<Gate> {
        let mut all = self.gates.clone();
        for (name, v) in &self.variants {
            if let Some(per_value) = resolved.get(name).and_then(|value| v.gates.get(value)) {
                all.extend(per_value.iter().map(|(u, d)| (u.clone(), d.clone())));
            }
        }
        gates_from(&all)
    }
}

/// Debian package names: lowercase letters, digits, `+ - .`, at least two characters.
fn is_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A plain unit file name such as `foo.service` or `foo@bar.service`.
pub(crate) fn is_unit_name(u: &str) -> bool {
    const KINDS: [&str; 8] = [
        ".service", ".socket", ".target", ".timer", ".path", ".mount", ".swap", ".slice",
    ];
    KINDS.iter().any(|k| u.len() > k.len() && u.ends_with(k))
        && !u.contains('/')
        && u.chars().all(|c| c.is_ascii_graphic())
}

/// Parse `2G`, `512M`, `1048576` (bytes). Suffixes are powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num.parse().ok()?;
    let bytes = n.checked_mul(mult)?;
    (bytes >= 64 << 20).then_some(bytes)
}

#[cfg(test)]
#[path = "recipe_tests.rs"]
mod tests;
