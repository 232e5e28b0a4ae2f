//! NixOS flake targets: `nix:FLAKEREF#NAME`.
//!
//! The harness never evaluates Nix itself. It runs `nix` with documented commands and
//! reads their documented JSON (Nix manual: `nix3-build`, `nix3-eval`,
//! `nix3-flake-metadata`), through the wrapper flake in the repository's `nix/` folder:
//! the target flake becomes the wrapper's `target` input (`--override-input target
//! FLAKEREF`), and `coldbootTargets.NAME` is the target's `nixosConfigurations.NAME` with
//! the guest adapter added through `extendModules` (`nix/flake.nix`, `lib.withColdboot`).
//!
//! - build: `config.system.build.vm` (NixOS's runner, `bin/run-HOSTNAME-vm`, and its
//!   `system` link: the system that boots, for the evidence and the kernel probe);
//! - eval: `config.coldboot.harness` (gates and faults, `nix/lib/coldboot.nix`);
//! - eval: `config.systemd.units` with `nix/lib/unit-texts.nix` as `--apply`, for
//!   `coldboot analyze` ([`unit_texts`]);
//! - `nix flake metadata --json FLAKEREF`: the locked URL, revision and `narHash`.
//!
//! Argument vectors and parsers are pure and unit-tested from samples recorded with
//! Nix 2.8 in `tests/fixtures/nix/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BootSpec, Fault, GateDecl, Launch, Progress, TargetIdentity, gate};
use crate::error::{infra, usage};
use crate::guest::quote::quote;
use crate::guest::systemd::sources::UnitSources;

pub use super::nix_wrapper::NIX_DIR_ENV;
/// The `nix` program (a name looked up on `PATH`).
pub const NIX: &str = "nix";
/// The `--apply` function that turns `config.systemd.units` into unit texts: the text of
/// `nix/lib/unit-texts.nix`, which the tests also evaluate with `nix-instantiate`.
pub const UNIT_TEXTS_APPLY: &str = include_str!("../../nix/lib/unit-texts.nix");

/// A NixOS configuration of a flake, as the harness names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixTarget {
    /// The flake reference, with a local path made absolute (`./nix` → `/abs/nix`).
    pub flake: String,
    /// The configuration's name under `nixosConfigurations`.
    pub name: String,
}

impl NixTarget {
    /// From the parts of `nix:FLAKEREF#ATTR`; ATTR is `NAME` or `nixosConfigurations.NAME`.
    pub fn new(flake: &str, attr: &str) -> anyhow::Result<NixTarget> {
        let name = attr.strip_prefix("nixosConfigurations.").unwrap_or(attr);
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(usage(format!(
                "nix target {flake}#{attr}: {attr:?} is not a configuration name; write \
                 nix:FLAKEREF#NAME or nix:FLAKEREF#nixosConfigurations.NAME, where NAME has \
                 only letters, digits, - and _"
            )));
        }
        // A target string never reaches the network: a remote or registry flake
        // reference would be fetched by `nix`. Local paths and local git only.
        let local = flake.starts_with('.')
            || flake.starts_with('/')
            || ["path:", "git+file:", "file:"]
                .iter()
                .any(|s| flake.starts_with(s));
        if !local {
            return Err(usage(format!(
                "nix target {flake}#{attr}: {flake:?} is not a local flake; coldboot never \
                 fetches a target from the network. Clone it and give its path, such as \
                 nix:/srv/flake#{name} or nix:git+file:/srv/flake#{name}"
            )));
        }
        let flake = if flake.starts_with('.') || flake.starts_with('/') {
            std::path::absolute(flake)
                .map_err(|e| usage(format!("nix target: flake path {flake:?}: {e}")))?
                .display()
                .to_string()
        } else {
            flake.to_string()
        };
        Ok(NixTarget {
            flake,
            name: name.to_string(),
        })
    }

    /// `WRAPPER#coldbootTargets.NAME.PATH`.
    fn installable(&self, wrapper: &Path, path: &str) -> String {
        format!("{}#coldbootTargets.{}.{path}", wrapper.display(), self.name)
    }
}

/// The wrapper flake: `$COLDBOOT_NIX_DIR`, else the copy built into this binary
/// (see [`super::nix_wrapper`]).
pub fn wrapper_dir() -> anyhow::Result<PathBuf> {
    let cache = super::cache::cache_root(None)?;
    Ok(super::nix_wrapper::locate(&cache)?.dir().to_path_buf())
}

/// Options every `nix` call gets: the two experimental features the commands need
/// (harmless where they are already enabled).
fn nix_prefix(subcommand: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        NIX.into(),
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
    ];
    argv.extend(subcommand.iter().map(|s| s.to_string()));
    argv
}

/// The wrapper's input override. `--no-write-lock-file`: the override must not be
/// written into the repository's `nix/flake.lock`.
fn override_args(t: &NixTarget) -> Vec<String> {
    vec![
        "--no-write-lock-file".into(),
        "--override-input".into(),
        "target".into(),
        t.flake.clone(),
    ]
}

/// `nix build --json --no-link ... VM`. Only the VM: the outer configuration's
/// `system.build.toplevel` is another system (the VM's own is `virtualisation.vmVariant`,
/// with other file systems, consoles and network), and building it too would cost a
/// second full system build for nothing that boots.
pub fn build_argv(t: &NixTarget, wrapper: &Path) -> Vec<String> {
    let mut argv = nix_prefix(&["build", "--json", "--no-link"]);
    argv.extend(override_args(t));
    argv.push(t.installable(wrapper, "config.system.build.vm"));
    argv
}

/// `nix eval --json ... config.coldboot.harness` (gates and faults).
pub fn harness_argv(t: &NixTarget, wrapper: &Path) -> Vec<String> {
    let mut argv = nix_prefix(&["eval", "--json"]);
    argv.extend(override_args(t));
    argv.push(t.installable(wrapper, "config.coldboot.harness"));
    argv
}

/// `nix eval --json ... config.systemd.units --apply (nix/lib/unit-texts.nix)`.
pub fn units_argv(t: &NixTarget, wrapper: &Path) -> Vec<String> {
    let mut argv = nix_prefix(&["eval", "--json"]);
    argv.extend(override_args(t));
    argv.push(t.installable(wrapper, "config.systemd.units"));
    argv.push("--apply".into());
    argv.push(UNIT_TEXTS_APPLY.into());
    argv
}

/// `nix flake metadata --json FLAKEREF` (the target's own flake, not the wrapper).
pub fn metadata_argv(t: &NixTarget) -> Vec<String> {
    let mut argv = nix_prefix(&["flake", "metadata", "--json"]);
    argv.push(t.flake.clone());
    argv
}

/// Every command [`prepare`] runs, in order (for `--dry-run`).
pub fn prepare_commands(t: &NixTarget, wrapper: &Path) -> Vec<Vec<String>> {
    vec![
        metadata_argv(t),
        build_argv(t, wrapper),
        harness_argv(t, wrapper),
    ]
}

/// What `nix build --json` printed for the installable of [`build_argv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutputs {
    /// `config.system.build.vm`: holds `bin/run-HOSTNAME-vm` and the `system` link.
    pub vm: PathBuf,
}

#[derive(Deserialize)]
struct BuiltEntry {
    outputs: BTreeMap<String, PathBuf>,
}

/// Parse `nix build --json` output: one entry per installable, in order, each with an
/// `outputs.out` path; the VM is the first.
pub fn parse_build(json: &str) -> anyhow::Result<BuildOutputs> {
    let entries: Vec<BuiltEntry> = serde_json::from_str(json)
        .map_err(|e| infra(format!("nix build --json printed unexpected JSON: {e}")))?;
    let out = |i: usize, what: &str| -> anyhow::Result<PathBuf> {
        entries
            .get(i)
            .and_then(|e| e.outputs.get("out"))
            .cloned()
            .ok_or_else(|| {
                infra(format!(
                    "nix build --json gave no `out` path for {what} (entry {i} of {})",
                    entries.len()
                ))
            })
    };
    Ok(BuildOutputs {
        vm: out(0, "config.system.build.vm")?,
    })
}

/// The system a NixOS VM boots: the target of its `system` link (qemu-vm.nix writes
/// `ln -s ${config.system.build.toplevel} $out/system` for the VM's own configuration).
pub fn vm_system(vm: &Path) -> anyhow::Result<PathBuf> {
    let link = vm.join("system");
    std::fs::canonicalize(&link).map_err(|e| {
        infra(format!(
            "the built VM {} has no usable system link ({}: {e}); NixOS's \
             system.build.vm writes one (nixos/modules/virtualisation/qemu-vm.nix), so this \
             is not a VM that coldboot knows how to identify",
            vm.display(),
            link.display()
        ))
    })
}

/// The target flake's identity, from `nix flake metadata --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlakeIdentity {
    /// The locked URL (`url`, spelled `lockedUrl` in some manuals).
    pub locked_url: String,
    /// The commit, when the flake is a clean git tree.
    pub revision: Option<String>,
    /// The `narHash` of the locked source.
    pub nar_hash: Option<String>,
    /// Seconds since the epoch of the last commit.
    pub last_modified: Option<u64>,
}

#[derive(Deserialize)]
struct Metadata {
    url: Option<String>,
    #[serde(rename = "lockedUrl")]
    locked_url: Option<String>,
    revision: Option<String>,
    #[serde(rename = "lastModified")]
    last_modified: Option<u64>,
    locked: Option<Locked>,
}

#[derive(Deserialize)]
struct Locked {
    #[serde(rename = "narHash")]
    nar_hash: Option<String>,
}

/// Parse `nix flake metadata --json`.
pub fn parse_metadata(json: &str) -> anyhow::Result<FlakeIdentity> {
    let m: Metadata = serde_json::from_str(json).map_err(|e| {
        infra(format!(
            "nix flake metadata --json printed unexpected JSON: {e}"
        ))
    })?;
    let locked_url = m
        .locked_url
        .or(m.url)
        .ok_or_else(|| infra("nix flake metadata --json has no locked URL (url/lockedUrl)"))?;
    Ok(FlakeIdentity {
        locked_url,
        revision: m.revision,
        nar_hash: m.locked.and_then(|l| l.nar_hash),
        last_modified: m.last_modified,
    })
}

/// What `config.coldboot.harness` evaluates to (`nix/lib/coldboot.nix`, `harnessInfo`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarnessInfo {
    /// `coldboot.gates`: unit → `{ url, servedBy }`.
    #[serde(default)]
    pub gates: BTreeMap<String, GateDecl>,
    /// `coldboot.faults`: name → `{ doc, run }`.
    #[serde(default)]
    pub faults: BTreeMap<String, Fault>,
}

/// Parse the `nix eval --json` of `config.coldboot.harness`.
pub fn parse_harness(json: &str) -> anyhow::Result<HarnessInfo> {
    serde_json::from_str(json).map_err(|e| {
        infra(format!(
            "nix eval of config.coldboot.harness printed unexpected JSON: {e}"
        ))
    })
}

/// One unit of `config.systemd.units`, as `nix/lib/unit-texts.nix` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NixUnit {
    /// The generated unit file. Recent nixpkgs (PR #266370) ends it with `[Install]`
    /// `WantedBy=`, the same list as `wanted_by`; systemd does not read [Install] at boot,
    /// and analyze takes the edges from the links alone.
    pub text: String,
    /// Targets it is linked into as `X.wants/`.
    #[serde(default)]
    pub wanted_by: Vec<String>,
    /// Targets it is linked into as `X.requires/`.
    #[serde(default)]
    pub required_by: Vec<String>,
    /// Units it is linked into as `X.upholds/` (absent from older nixpkgs).
    #[serde(default)]
    pub upheld_by: Vec<String>,
    /// Other names it is linked under.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Parse the `nix eval --json` of [`units_argv`]: unit name → unit.
pub fn parse_unit_texts(json: &str) -> anyhow::Result<BTreeMap<String, NixUnit>> {
    serde_json::from_str(json).map_err(|e| {
        infra(format!(
            "nix eval of config.systemd.units printed unexpected JSON: {e}"
        ))
    })
}

/// The units as [`UnitSources`] for `coldboot analyze`: texts, the `.wants`/`.requires`/
/// `.upholds` links NixOS makes from `wantedBy`/`requiredBy`/`upheldBy`, aliases, and
/// `default.target` naming `default_unit` (NixOS's `systemd.defaultUnit`,
/// `multi-user.target` unless set).
pub fn unit_sources(units: &BTreeMap<String, NixUnit>, default_unit: &str) -> UnitSources {
    let mut src = UnitSources::default();
    for (name, u) in units {
        src.files.insert(name.clone(), u.text.clone());
        for t in &u.wanted_by {
            src.wants.insert((t.clone(), name.clone()));
        }
        for t in &u.required_by {
            src.requires.insert((t.clone(), name.clone()));
        }
        for t in &u.upheld_by {
            src.upholds.insert((t.clone(), name.clone()));
        }
        for a in &u.aliases {
            src.aliases.insert(a.clone(), name.clone());
        }
    }
    src.aliases
        .entry("default.target".into())
        .or_insert_with(|| default_unit.to_string());
    src
}

/// The runner in a `system.build.vm` output: the one `bin/run-*-vm`.
pub fn find_runner(vm: &Path) -> anyhow::Result<PathBuf> {
    let bin = vm.join("bin");
    let entries = std::fs::read_dir(&bin).map_err(|e| {
        infra(format!(
            "the built VM {} has no bin/ folder: {e}",
            vm.display()
        ))
    })?;
    let mut runners: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("run-") && n.ends_with("-vm"))
        })
        .collect();
    runners.sort();
    match runners.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(infra(format!(
            "the built VM {} has no bin/run-*-vm runner",
            bin.display()
        ))),
        many => Err(infra(format!(
            "the built VM has several runners, cannot choose: {many:?}"
        ))),
    }
}

/// The first line of `nix --version`, if it runs.
pub async fn installed_nix_version() -> Option<String> {
    let out = tokio::process::Command::new(NIX)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}

/// Run one `nix` command and return its stdout. A failure is an infra error that
/// quotes the end of nix's stderr.
async fn run_nix(argv: &[String], progress: &Progress) -> anyhow::Result<String> {
    let shown = shell_words(argv);
    progress.report(&format!("running {}", short_command(argv)));
    tracing::debug!("running {shown}");
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            infra(format!(
                "cannot run {} (is Nix installed, with flakes? see nix/README.md): {e}",
                argv[0]
            ))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if nixpkgs_version_check(&stderr).is_some() {
            let installed = installed_nix_version().await;
            if let Some(e) =
                too_old_for_nixpkgs(&short_command(argv), &stderr, installed.as_deref())
            {
                return Err(e);
            }
        }
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(infra(format!(
            "{} failed ({}):\n{}",
            short_command(argv),
            out.status,
            tail.join("\n")
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| infra(format!("nix printed non-UTF-8: {e}")))
}

/// The Nix that recent nixpkgs requires: nixpkgs from after August 2025 refuses to
/// evaluate on older Nix (Debian 12's nix-bin is 2.8).
pub const RECENT_NIXPKGS_MIN_NIX: &str = "2.18";

/// The version numbers in `nix --version` output (`nix (Nix) 2.8.0` → `[2, 8, 0]`).
pub fn parse_nix_version(text: &str) -> Option<Vec<u64>> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let parts: Vec<u64> = word
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then_some(parts)
}

/// Whether version `have` is at least `need` (missing parts count as 0).
pub fn version_at_least(have: &[u64], need: &[u64]) -> bool {
    let n = have.len().max(need.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..n)
        .map(|i| at(have, i).cmp(&at(need, i)))
        .find(|o| o.is_ne())
        .is_none_or(|o| o.is_gt())
}

/// nixpkgs' own minimum-Nix check, when that is what stopped an evaluation: the
/// version it requires and the line that says so. nixpkgs aborts with "This version of
/// Nixpkgs requires Nix >= X, please upgrade" (its default.nix, from lib/minver.nix).
pub fn nixpkgs_version_check(stderr: &str) -> Option<(Vec<u64>, String)> {
    let re = regex::Regex::new(
        r"(?i)requires\s+nix\s*(?:version\s*)?(?:>=|at least)\s*([0-9]+(?:\.[0-9]+)*)",
    )
    .expect("a valid pattern");
    stderr.lines().find_map(|line| {
        let caps = re.captures(line)?;
        let need = parse_nix_version(caps.get(1)?.as_str())?;
        let said = line
            .trim()
            .trim_start_matches("error: evaluation aborted with the following error message: '")
            .trim();
        Some((need, said.to_string()))
    })
}

/// A failed `nix` call that nixpkgs' version check explains, as a usage error: the
/// flake cannot be evaluated with the installed Nix, whatever coldboot does.
fn too_old_for_nixpkgs(
    command: &str,
    stderr: &str,
    installed: Option<&str>,
) -> Option<anyhow::Error> {
    let (need, said) = nixpkgs_version_check(stderr)?;
    let have = installed.and_then(parse_nix_version);
    if have.as_deref().is_some_and(|h| version_at_least(h, &need)) {
        return None;
    }
    let need_text = need
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    Some(usage(format!(
        "{command}: the flake's nixpkgs requires Nix >= {need_text}, and the installed Nix is \
         {} (`nix --version`). nixpkgs says: \"{said}\". Install a newer Nix (Debian 12's \
         nix-bin is 2.8; see https://nixos.org/download), or give a target whose nixpkgs this \
         Nix can evaluate",
        installed.unwrap_or("unknown: `nix --version` printed nothing")
    )))
}

/// `nix build` / `nix eval` / `nix flake metadata`, for messages.
fn short_command(argv: &[String]) -> String {
    argv.iter()
        .skip(3)
        .take_while(|a| !a.starts_with('-'))
        .fold(String::from("nix"), |acc, a| acc + " " + a)
}

/// `argv` as one shell-quoted line, as a user would paste it.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Build the target's VM, read its identity, gates and faults.
pub async fn prepare(t: &NixTarget, progress: &Progress) -> anyhow::Result<BootSpec> {
    let wrapper = wrapper_dir()?;
    let flake = parse_metadata(&run_nix(&metadata_argv(t), progress).await?)?;
    let built = parse_build(&run_nix(&build_argv(t, &wrapper), progress).await?)?;
    let runner = find_runner(&built.vm)?;
    let system = vm_system(&built.vm)?;
    let info = parse_harness(&run_nix(&harness_argv(t, &wrapper), progress).await?)?;
    for (unit, decl) in &info.gates {
        if let Some(why) = gate::check_decl(unit, decl, super::recipe::is_unit_name) {
            return Err(usage(format!(
                "nix:{}#{}: coldboot.gates: {why}",
                t.flake, t.name
            )));
        }
    }
    // The VM's system holds the kernel the runner boots: the accelerator probe uses it.
    let kernel = system.join("kernel");
    Ok(BootSpec {
        launch: Launch::NixRunner {
            runner: runner.clone(),
            probe_kernel: kernel.is_file().then_some(kernel),
        },
        // The runner writes the system's own kernel parameters; ours go after them
        // through QEMU_KERNEL_PARAMS.
        cmdline: Vec::new(),
        identity: TargetIdentity::Nix {
            flake: t.flake.clone(),
            name: t.name.clone(),
            locked_url: flake.locked_url,
            revision: flake.revision,
            nar_hash: flake.nar_hash,
            last_modified: flake.last_modified,
            system,
            vm: built.vm,
            runner,
        },
        faults: info.faults,
        gates: gate::gates_from(&info.gates),
        redact: Vec::new(),
    })
}

/// The unit files and gates of a flake's configuration, for `coldboot analyze`: from
/// `nix eval --json` of `config.systemd.units` (see [`units_argv`]) and of
/// `config.coldboot.harness`. Nothing is built.
pub async fn analyze_inputs(
    flake: &str,
    attr: &str,
    progress: &Progress,
) -> anyhow::Result<(UnitSources, Vec<gate::Gate>)> {
    let t = NixTarget::new(flake, attr)?;
    let wrapper = wrapper_dir()?;
    let units = parse_unit_texts(&run_nix(&units_argv(&t, &wrapper), progress).await?)?;
    let info = parse_harness(&run_nix(&harness_argv(&t, &wrapper), progress).await?)?;
    Ok((
        unit_sources(&units, "multi-user.target"),
        gate::gates_from(&info.gates),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/nix")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn target() -> NixTarget {
        NixTarget::new("git+file:/srv/cc-ci?rev=abc", "nixosConfigurations.cc-ci").unwrap()
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(target().name, "cc-ci");
        assert_eq!(NixTarget::new("./x", "host").unwrap().name, "host");
        for remote in [
            "github:coopcloud/cc-ci",
            "git+https://git.example/cc-ci",
            "https://x/y.tar.gz",
            "nixpkgs",
            "flake:cc-ci",
        ] {
            let e = NixTarget::new(remote, "host").unwrap_err().to_string();
            assert!(e.contains("never fetches a target from the network"), "{e}");
        }
        let local = NixTarget::new("./nix", "ccci-model-after").unwrap();
        assert!(local.flake.starts_with('/') && local.flake.ends_with("/nix"));
        for bad in [
            "",
            "packages.x86_64-linux.vm",
            "a b",
            "nixosConfigurations.",
        ] {
            let e = NixTarget::new(".", bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), crate::error::exit::USAGE);
            assert!(e.to_string().contains("not a configuration name"), "{e}");
        }
    }

    #[test]
    fn argument_vectors() {
        let t = target();
        let w = Path::new("/src/coldboot/nix");
        let prefix = ["nix", "--extra-experimental-features", "nix-command flakes"];
        let over = [
            "--no-write-lock-file",
            "--override-input",
            "target",
            "git+file:/srv/cc-ci?rev=abc",
        ];
        let expect = |sub: &[&str], tail: &[&str]| -> Vec<String> {
            prefix
                .iter()
                .chain(sub)
                .chain(over.iter())
                .chain(tail)
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(
            build_argv(&t, w),
            expect(
                &["build", "--json", "--no-link"],
                &["/src/coldboot/nix#coldbootTargets.cc-ci.config.system.build.vm"]
            )
        );
        assert_eq!(
            harness_argv(&t, w),
            expect(
                &["eval", "--json"],
                &["/src/coldboot/nix#coldbootTargets.cc-ci.config.coldboot.harness"]
            )
        );
        assert_eq!(
            units_argv(&t, w),
            expect(
                &["eval", "--json"],
                &[
                    "/src/coldboot/nix#coldbootTargets.cc-ci.config.systemd.units",
                    "--apply",
                    UNIT_TEXTS_APPLY
                ]
            )
        );
        assert_eq!(
            metadata_argv(&t),
            [
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "flake",
                "metadata",
                "--json",
                "git+file:/srv/cc-ci?rev=abc"
            ]
        );
        assert_eq!(short_command(&build_argv(&t, w)), "nix build");
        assert_eq!(short_command(&metadata_argv(&t)), "nix flake metadata");
        assert_eq!(
            shell_words(&metadata_argv(&t)),
            "nix --extra-experimental-features 'nix-command flakes' flake metadata --json 'git+file:/srv/cc-ci?rev=abc'"
        );
    }

    #[test]
    fn build_json_recorded_with_nix_2_8() {
        let out = parse_build(&fixture("build.json")).unwrap();
        assert_eq!(
            out.vm,
            PathBuf::from("/nix/store/q2afr2qgx12kwzb9ivbcmfwpnh3x4zqw-coldboot-a")
        );
        let one = r#"[{"drvPath":"/nix/store/x.drv","outputs":{"out":"/nix/store/x"}}]"#;
        assert_eq!(parse_build(one).unwrap().vm, PathBuf::from("/nix/store/x"));
        let e = parse_build("[]").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::exit::INFRA);
        assert!(e.to_string().contains("config.system.build.vm"), "{e}");
        assert!(parse_build("warning: x").is_err());
    }

    #[test]
    fn nix_versions() {
        assert_eq!(parse_nix_version("nix (Nix) 2.8.0"), Some(vec![2, 8, 0]));
        assert_eq!(
            parse_nix_version("nix (Nix) 2.24.10pre"),
            Some(vec![2, 24, 10])
        );
        assert_eq!(parse_nix_version("nix (Nix)"), None);
        assert!(!version_at_least(&[2, 8, 0], &[2, 18]));
        assert!(version_at_least(&[2, 18], &[2, 18, 0]));
        assert!(version_at_least(&[2, 24, 1], &[2, 18]));
        assert!(!version_at_least(&[1, 99], &[2, 3]));
    }

    /// Nix 2.8's own stderr when nixpkgs' version check aborts (recorded from the flake
    /// in tests/nix_wrapper.rs, `a_nixpkgs_too_new_for_the_installed_nix_...`).
    #[test]
    fn nixpkgs_version_check_recorded_with_nix_2_8() {
        let stderr = fixture("nixpkgs-requires-newer-nix.stderr");
        let (need, said) = nixpkgs_version_check(&stderr).unwrap();
        assert_eq!(need, vec![2, 18]);
        assert_eq!(
            said,
            "This version of Nixpkgs requires Nix >= 2.18, please upgrade:"
        );
        let e = too_old_for_nixpkgs("nix build", &stderr, Some("nix (Nix) 2.8.0")).unwrap();
        assert_eq!(crate::error::exit_code(&e), crate::error::exit::USAGE);
        assert!(
            e.to_string().contains("installed Nix is nix (Nix) 2.8.0"),
            "{e}"
        );
        // A Nix new enough is not told to upgrade: the failure is something else.
        assert!(too_old_for_nixpkgs("nix build", &stderr, Some("nix (Nix) 2.18.1")).is_none());
        assert!(nixpkgs_version_check("error: attribute 'vm' missing").is_none());
    }

    #[test]
    fn flake_metadata_recorded_with_nix_2_8() {
        let id = parse_metadata(&fixture("flake-metadata.json")).unwrap();
        assert_eq!(
            id,
            FlakeIdentity {
                locked_url: "git+file:///tmp/nixrec/flake?ref=master&rev=14fe575fa13f91a2571d5397c2a5bc4008b43b6a".into(),
                revision: Some("14fe575fa13f91a2571d5397c2a5bc4008b43b6a".into()),
                nar_hash: Some("sha256-IXRmxLa4gzAGiDg6HbQj3L1JY60fg2nJS78LPmWDDOI=".into()),
                last_modified: Some(1795951074),
            }
        );
        // A dirty tree has no revision; the manual's `lockedUrl` spelling is read too.
        let dirty = r#"{"lockedUrl":"path:/x?narHash=sha256-A","locked":{"narHash":"sha256-A"}}"#;
        let id = parse_metadata(dirty).unwrap();
        assert_eq!(id.revision, None);
        assert_eq!(id.locked_url, "path:/x?narHash=sha256-A");
    }

    #[test]
    fn harness_json_recorded_with_nix_2_8() {
        let info = parse_harness(&fixture("eval-harness.json")).unwrap();
        assert_eq!(
            gate::gates_from(&info.gates),
            [gate::Gate {
                unit: "deploy-proxy.service".into(),
                url: "http://127.0.0.1:8082/ping".into(),
                served_by: "traefik.service".into(),
            }]
        );
        assert_eq!(
            info.faults["traefik-broken"].run,
            "ccci-model-set-latest broken-crash"
        );
        assert!(parse_harness(r#"{"gates":{},"extra":1}"#).is_err());
        assert_eq!(parse_harness("{}").unwrap().faults.len(), 0);
    }

    #[test]
    fn runner_is_found_in_bin() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_runner(dir.path()).is_err());
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/other"), "").unwrap();
        assert!(
            find_runner(dir.path())
                .unwrap_err()
                .to_string()
                .contains("no bin/run-*-vm")
        );
        std::fs::write(dir.path().join("bin/run-ccci-model-vm"), "").unwrap();
        assert_eq!(
            find_runner(dir.path()).unwrap(),
            dir.path().join("bin/run-ccci-model-vm")
        );
    }
}
