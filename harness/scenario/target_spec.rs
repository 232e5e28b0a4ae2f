//! The target string a user writes: `recipe:DIR?K=V&K=V`, `image:PATH[?kernel=..&initrd=..]`
//! or `nix:REF#ATTR`. Parsing is pure; bad strings are usage errors that quote the string.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::usage;

/// Which bootable system to use, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// An image built from a recipe folder, with the user's variant choices (not yet resolved).
    Recipe {
        /// The recipe folder.
        dir: PathBuf,
        /// `K=V` choices from the query string.
        variants: BTreeMap<String, String>,
    },
    /// A prebuilt disk image, booted directly when a kernel is given.
    Image {
        /// The disk (any format QEMU reads; qcow2 expected).
        path: PathBuf,
        /// Kernel for direct boot; without one QEMU boots the disk's own bootloader.
        kernel: Option<PathBuf>,
        /// Initrd for direct boot.
        initrd: Option<PathBuf>,
        /// The `root=` argument for direct boot (default `LABEL=root`).
        root: Option<String>,
    },
    /// A NixOS configuration from a flake (parsed, not yet supported by `prepare`).
    Nix {
        /// The flake reference (a path or URL).
        flake: String,
        /// The attribute, such as `nixosConfigurations.host`.
        attr: String,
    },
}

const HELP: &str = "write recipe:DIR[?KEY=VALUE&...], image:PATH[?kernel=FILE&initrd=FILE&root=DEV] or nix:FLAKEREF#ATTR";

impl TargetSpec {
    /// Parse a target string. Errors quote the whole string and say what was expected.
    pub fn parse(s: &str) -> anyhow::Result<TargetSpec> {
        let bad = |why: &str| usage(format!("invalid target {s:?}: {why}; {HELP}"));
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("no kind prefix (recipe:, image: or nix:)"))?;
        match kind {
            "recipe" => {
                let (dir, query) = split_query(rest);
                if dir.is_empty() {
                    return Err(bad("the recipe folder is empty"));
                }
                let variants = parse_query(query).map_err(|w| bad(&w))?;
                Ok(TargetSpec::Recipe {
                    dir: PathBuf::from(dir),
                    variants,
                })
            }
            "image" => {
                let (path, query) = split_query(rest);
                if path.is_empty() {
                    return Err(bad("the image path is empty"));
                }
                let mut opts = parse_query(query).map_err(|w| bad(&w))?;
                let kernel = opts.remove("kernel").map(PathBuf::from);
                let initrd = opts.remove("initrd").map(PathBuf::from);
                let root = opts.remove("root");
                if let Some(k) = opts.keys().next() {
                    return Err(bad(&format!(
                        "unknown image option {k:?} (known: kernel, initrd, root)"
                    )));
                }
                if kernel.is_none() && (initrd.is_some() || root.is_some()) {
                    return Err(bad("initrd= and root= need kernel="));
                }
                Ok(TargetSpec::Image {
                    path: PathBuf::from(path),
                    kernel,
                    initrd,
                    root,
                })
            }
            "nix" => {
                let (flake, attr) = rest
                    .split_once('#')
                    .ok_or_else(|| bad("a nix target needs #ATTR after the flake reference"))?;
                if flake.is_empty() || attr.is_empty() {
                    return Err(bad(
                        "both the flake reference and the attribute must be non-empty",
                    ));
                }
                Ok(TargetSpec::Nix {
                    flake: flake.to_string(),
                    attr: attr.to_string(),
                })
            }
            other => Err(bad(&format!("unknown kind {other:?}"))),
        }
    }
}

/// Split `PATH?QUERY` at the first `?`.
fn split_query(s: &str) -> (&str, &str) {
    s.split_once('?').unwrap_or((s, ""))
}

/// Parse `K=V&K=V`; empty keys, missing `=` and repeated keys are errors.
fn parse_query(q: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} has no '=' (write KEY=VALUE)"))?;
        if k.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("{k:?} is given twice"));
        }
    }
    Ok(out)
}

/// Parse one `--variant K=V` flag.
pub fn parse_variant_arg(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(usage(format!("invalid --variant {s:?}: write KEY=VALUE"))),
    }
}

impl fmt::Display for TargetSpec {
    /// The canonical string form; parsing it gives the same spec back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query = |pairs: Vec<(&str, String)>| {
            let q: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            }
        };
        match self {
            TargetSpec::Recipe { dir, variants } => {
                let pairs = variants
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                write!(f, "recipe:{}{}", dir.display(), query(pairs))
            }
            TargetSpec::Image {
                path,
                kernel,
                initrd,
                root,
            } => {
                let mut pairs = Vec::new();
                if let Some(k) = kernel {
                    pairs.push(("kernel", k.display().to_string()));
                }
                if let Some(i) = initrd {
                    pairs.push(("initrd", i.display().to_string()));
                }
                if let Some(r) = root {
                    pairs.push(("root", r.clone()));
                }
                write!(f, "image:{}{}", path.display(), query(pairs))
            }
            TargetSpec::Nix { flake, attr } => write!(f, "nix:{flake}#{attr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        TargetSpec::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn recipe_with_variants() {
        let spec = TargetSpec::parse("recipe:vm-images/ccci-model?gate=self&delay=3").unwrap();
        let TargetSpec::Recipe { dir, variants } = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(dir, &PathBuf::from("vm-images/ccci-model"));
        assert_eq!(variants["gate"], "self");
        assert_eq!(variants["delay"], "3");
        assert_eq!(
            spec.to_string(),
            "recipe:vm-images/ccci-model?delay=3&gate=self"
        );
    }

    #[test]
    fn recipe_without_variants_and_empty_value() {
        let spec = TargetSpec::parse("recipe:./x").unwrap();
        assert_eq!(
            spec,
            TargetSpec::Recipe {
                dir: "./x".into(),
                variants: BTreeMap::new()
            }
        );
        let spec = TargetSpec::parse("recipe:x?k=").unwrap();
        let TargetSpec::Recipe { variants, .. } = spec else {
            panic!()
        };
        assert_eq!(variants["k"], "");
    }

    #[test]
    fn image_with_and_without_kernel() {
        let spec = TargetSpec::parse("image:/a/disk.qcow2").unwrap();
        assert_eq!(
            spec,
            TargetSpec::Image {
                path: "/a/disk.qcow2".into(),
                kernel: None,
                initrd: None,
                root: None
            }
        );
        let s = "image:d.qcow2?kernel=/b/vmlinuz&initrd=/b/initrd.img&root=/dev/vda1";
        let spec = TargetSpec::parse(s).unwrap();
        assert_eq!(TargetSpec::parse(&spec.to_string()).unwrap(), spec);
        let TargetSpec::Image { kernel, root, .. } = spec else {
            panic!()
        };
        assert_eq!(kernel, Some("/b/vmlinuz".into()));
        assert_eq!(root.as_deref(), Some("/dev/vda1"));
    }

    #[test]
    fn nix_ref_and_attr() {
        let spec = TargetSpec::parse("nix:.#nixosConfigurations.cc-ci").unwrap();
        assert_eq!(
            spec,
            TargetSpec::Nix {
                flake: ".".into(),
                attr: "nixosConfigurations.cc-ci".into()
            }
        );
        assert_eq!(spec.to_string(), "nix:.#nixosConfigurations.cc-ci");
    }

    #[test]
    fn bad_strings_quote_the_input() {
        for (s, why) in [
            ("vm-images/x", "no kind prefix"),
            ("docker:x", "unknown kind \"docker\""),
            ("recipe:", "folder is empty"),
            ("recipe:x?gate", "has no '='"),
            ("recipe:x?=3", "empty key"),
            ("recipe:x?a=1&a=2", "given twice"),
            ("image:?kernel=k", "path is empty"),
            ("image:d?colour=red", "unknown image option \"colour\""),
            ("image:d?initrd=i", "need kernel="),
            ("nix:flake", "needs #ATTR"),
            ("nix:#attr", "non-empty"),
        ] {
            let msg = err(s);
            assert!(msg.contains(&format!("{s:?}")), "{msg}");
            assert!(msg.contains(why), "{s}: {msg}");
        }
    }

    #[test]
    fn bad_strings_are_usage_errors() {
        let e = TargetSpec::parse("nope").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::exit::USAGE);
    }

    #[test]
    fn variant_flag() {
        assert_eq!(
            parse_variant_arg("gate=self").unwrap(),
            ("gate".into(), "self".into())
        );
        assert!(parse_variant_arg("gate").is_err());
        assert!(parse_variant_arg("=x").is_err());
    }
}
