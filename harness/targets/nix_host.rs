//! What this host can do with `nix:` targets, for `coldboot doctor`: which `nix` it has,
//! whether flakes are enabled for it, which store `nix build` reaches, and whether a NixOS
//! system can be built there.
//!
//! [`probe`] runs `nix` and looks at the store's folders; [`report`] is a pure function
//! from those facts to doctor's lines, ending with one line that says what follows:
//! whether a `nix:` target can be evaluated here (what `coldboot analyze` needs) and built
//! (what `boot` and `run` need). Nothing here fails: Nix is optional.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::Access;

use super::nix::{
    NIX, RECENT_NIXPKGS_MIN_NIX, installed_nix_version, parse_nix_version, version_at_least,
};

/// The first Nix with flakes and the `nix` command they need.
pub const FLAKES_MIN_NIX: &str = "2.4";
/// The first Nix with `nix config show`; older ones have `nix show-config` (a deprecated
/// alias of it since).
pub const CONFIG_SHOW_MIN_NIX: &str = "2.20";
/// The system a guest is built for: coldboot boots it with `qemu-system-x86_64`.
pub const GUEST_SYSTEM: &str = "x86_64-linux";
/// A bound on one settings read, so that a wedged `nix` cannot hang doctor.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`probe`] found about the host's `nix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixFacts {
    /// Where `nix` is on `PATH`.
    pub path: Option<PathBuf>,
    /// The first line of `nix --version`, such as `nix (Nix) 2.8.0`.
    pub version: String,
    /// Its effective settings, or why they could not be read.
    pub config: Result<NixConfig, String>,
    /// The store's folders and the daemon's socket.
    pub store: StoreFacts,
    /// The machines file's text, when `builders` is `@FILE` and the file was readable
    /// (Nix ignores a missing one).
    pub machines_file: Option<String>,
}

/// `nix config show` (or `nix show-config`), as `key = value` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NixConfig {
    /// Every setting by name.
    pub settings: BTreeMap<String, String>,
    /// The configuration does not enable `nix-command`: reading it took
    /// `--extra-experimental-features nix-command`, which also shows in
    /// `experimental-features`.
    pub nix_command_added: bool,
}

impl NixConfig {
    fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|v| v.trim())
    }
}

/// The store Nix would open by default (`/nix/store`, `/nix/var/nix` and the daemon's
/// socket, or where `NIX_STORE_DIR`, `NIX_STATE_DIR` and `NIX_DAEMON_SOCKET_PATH` put
/// them, as Nix itself reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFacts {
    /// The store folder.
    pub store_dir: PathBuf,
    /// Nix's state folder (its database and locks).
    pub state_dir: PathBuf,
    /// Whether the state folder exists.
    pub state_dir_exists: bool,
    /// Whether this user may read and write the state folder: Nix's own test for using
    /// the local store directly.
    pub state_dir_writable: bool,
    /// Whether this user may write the store folder.
    pub store_dir_writable: bool,
    /// The daemon's socket.
    pub daemon_socket: PathBuf,
    /// Whether the socket is there for this user.
    pub socket: Socket,
    /// Whether this process runs as root.
    pub root: bool,
}

/// The daemon's socket, as this user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// Not there.
    Absent,
    /// This user may not reach it: no write permission on it, or no search permission
    /// on its folder (then whether it is there is unknown, to Nix too).
    Denied,
    /// There, and this user may connect to it.
    Usable,
}

/// One line of doctor's report: what, and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The left column.
    pub label: &'static str,
    /// The status.
    pub text: String,
}

/// The label of the line that says what follows for `nix:` targets.
pub const SUMMARY_LABEL: &str = "nix: targets";

fn line(label: &'static str, text: impl Into<String>) -> Line {
    Line {
        label,
        text: text.into(),
    }
}

/// The installed Nix's version against what `nix:` targets need.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    /// `nix --version` printed no version this parser understands.
    Unknown,
    /// Older than [`FLAKES_MIN_NIX`]: no flakes.
    NoFlakes,
    /// Flakes, but older than [`RECENT_NIXPKGS_MIN_NIX`]: only older nixpkgs evaluates.
    OlderNixpkgsOnly(String),
    /// Any current nixpkgs.
    Current,
}

fn classify(version: &str) -> Version {
    let need = |v: &str| parse_nix_version(v).unwrap_or_default();
    match parse_nix_version(version) {
        None => Version::Unknown,
        Some(have) if !version_at_least(&have, &need(FLAKES_MIN_NIX)) => Version::NoFlakes,
        Some(have) if !version_at_least(&have, &need(RECENT_NIXPKGS_MIN_NIX)) => {
            Version::OlderNixpkgsOnly(dotted(&have))
        }
        Some(_) => Version::Current,
    }
}

fn dotted(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Which store `nix build` would reach, decided as Nix decides for `store = auto`: the
/// local store when this user may write Nix's state folder, else the daemon when its
/// socket is there, else (Linux, not root, no state folder) a chroot store in the home.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreAccess {
    Local,
    Daemon,
    DaemonDenied,
    Chroot,
    /// No store this user can use, and why.
    Unusable(String),
    /// A store named in the settings that doctor does not probe.
    Other(String),
}

fn store_access(setting: &str, s: &StoreFacts) -> StoreAccess {
    let local = s.state_dir_writable && s.store_dir_writable;
    let cannot_write = || {
        if !s.state_dir_exists {
            format!("{} does not exist", s.state_dir.display())
        } else if !s.state_dir_writable {
            format!("this user cannot write {}", s.state_dir.display())
        } else {
            format!("this user cannot write {}", s.store_dir.display())
        }
    };
    let no_daemon = || format!("no daemon socket at {}", s.daemon_socket.display());
    match setting {
        "" | "auto" if local => StoreAccess::Local,
        "" | "auto" => match s.socket {
            Socket::Usable => StoreAccess::Daemon,
            Socket::Denied => StoreAccess::DaemonDenied,
            Socket::Absent if !s.state_dir_exists && !s.root => StoreAccess::Chroot,
            Socket::Absent => {
                StoreAccess::Unusable(format!("{}, and {}", cannot_write(), no_daemon()))
            }
        },
        "local" if local => StoreAccess::Local,
        "local" => StoreAccess::Unusable(format!("store = local, but {}", cannot_write())),
        "daemon" => match s.socket {
            Socket::Usable => StoreAccess::Daemon,
            Socket::Denied => StoreAccess::DaemonDenied,
            Socket::Absent => StoreAccess::Unusable(format!("store = daemon, but {}", no_daemon())),
        },
        other => StoreAccess::Other(other.to_string()),
    }
}

/// The machines of a `builders` setting: `@FILE` stands for the file's text (given, as
/// [`probe`] read it); machines are separated by `;` or new lines, `#` starts a comment.
pub fn builder_machines(builders: &str, machines_file: Option<&str>) -> Vec<String> {
    let text = match builders.trim().strip_prefix('@') {
        Some(_) => machines_file.unwrap_or(""),
        None => builders,
    };
    text.split(['\n', ';'])
        .map(|m| m.split('#').next().unwrap_or("").trim())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// `key = value` lines, as `nix config show` and `nix show-config` print them (a value
/// may be empty, or hold `=` itself, as `nix-path` does).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
        .collect()
}

/// The commands that print the settings, the one this version has first.
pub fn config_commands(version: &str) -> [&'static [&'static str]; 2] {
    const NEW: &[&str] = &["config", "show"];
    const OLD: &[&str] = &["show-config"];
    let need = parse_nix_version(CONFIG_SHOW_MIN_NIX).unwrap_or_default();
    match parse_nix_version(version) {
        Some(have) if version_at_least(&have, &need) => [NEW, OLD],
        _ => [OLD, NEW],
    }
}

/// Doctor's lines about Nix, from the facts [`probe`] found (`None`: no `nix` runs).
/// The last line, labelled [`SUMMARY_LABEL`], says what follows for `nix:` targets.
pub fn report(nix: Option<&NixFacts>) -> Vec<Line> {
    let Some(f) = nix else {
        return vec![
            line("nix", "not found on PATH (only nix: targets need it)"),
            line(
                SUMMARY_LABEL,
                "cannot evaluate or build here: no nix on PATH (recipe: and image: targets \
                 do not need it; nix: targets need Nix with flakes, see nix/README.md)",
            ),
        ];
    };
    let at = f
        .path
        .as_ref()
        .map(|p| format!(" at {}", p.display()))
        .unwrap_or_default();
    let version = classify(&f.version);
    let mut lines = vec![line(
        "nix",
        match &version {
            Version::Unknown => format!("{}{at} (version not understood)", f.version),
            Version::NoFlakes => format!(
                "{}{at}: older than {FLAKES_MIN_NIX}, so it has no flakes",
                f.version
            ),
            Version::OlderNixpkgsOnly(_) => format!(
                "{}{at}: older than {RECENT_NIXPKGS_MIN_NIX}, which nixpkgs from after August \
                 2025 requires; nix: targets on such a flake stop with nixpkgs' own message \
                 (the wrapper's pinned nixos-24.05 needs 2.3)",
                f.version
            ),
            Version::Current => format!("{}{at} (any current nixpkgs)", f.version),
        },
    )];
    if version == Version::NoFlakes {
        lines.push(line(
            SUMMARY_LABEL,
            format!(
                "cannot evaluate or build here: this Nix has no flakes (install Nix >= \
                 {RECENT_NIXPKGS_MIN_NIX})"
            ),
        ));
        return lines;
    }

    let config = f.config.as_ref();
    lines.push(line("nix flakes", flakes_text(config)));

    let setting = config.ok().and_then(|c| c.get("store")).unwrap_or("auto");
    let access = store_access(setting, &f.store);
    lines.push(line("nix store", store_text(&access, &f.store)));

    let builds = config.ok().map(|c| builds(c, f.machines_file.as_deref()));
    if let Some(b) = &builds
        && !matches!(access, StoreAccess::Unusable(_) | StoreAccess::DaemonDenied)
    {
        let mut text = b.text.clone();
        if access == StoreAccess::Daemon {
            text.push_str(" (as this user's nix reads them; the daemon builds with its own)");
        }
        lines.push(line("nix builds", text));
    }

    let mut summary = match (&access, &builds) {
        (StoreAccess::Unusable(why), _) => {
            format!("cannot evaluate or build here: no store this user can use ({why})")
        }
        (StoreAccess::DaemonDenied, _) => format!(
            "cannot evaluate or build here: this user may not reach the daemon's socket {}",
            f.store.daemon_socket.display()
        ),
        (_, None) => "can evaluate; cannot tell whether it can build here (nix's settings \
                      could not be read)"
            .to_string(),
        (StoreAccess::Chroot, Some(_)) => {
            "can evaluate; builds would go to a chroot store in ~/.local/share/nix/root \
             (user namespaces not checked)"
                .to_string()
        }
        (_, Some(b)) => match &b.cannot {
            None => "can evaluate and build".to_string(),
            Some(why) => format!(
                "can evaluate (coldboot analyze works), cannot build here ({why}; coldboot \
                 boot and run need a build)"
            ),
        },
    };
    if let StoreAccess::Other(store) = &access {
        summary.push_str(&format!(" (store = {store}, not probed)"));
    }
    let evaluates = !matches!(access, StoreAccess::Unusable(_) | StoreAccess::DaemonDenied);
    if evaluates {
        if let Version::OlderNixpkgsOnly(have) = &version {
            summary.push_str(&format!(
                "; only flakes whose nixpkgs accepts Nix {have} (nixpkgs from after August \
                 2025 needs {RECENT_NIXPKGS_MIN_NIX})"
            ));
        }
        if builds
            .as_ref()
            .is_some_and(|b| b.cannot.is_none() && b.substituters.is_empty())
        {
            summary.push_str("; with no substituter, all of the system is built from source");
        }
        // Doctor stays offline: say so, rather than let "can build" promise a download.
        summary.push_str("; the network that fetches nixpkgs and substitutes is not checked");
    }
    lines.push(line(SUMMARY_LABEL, summary));
    lines
}

fn flakes_text(config: Result<&NixConfig, &String>) -> String {
    let c = match config {
        Ok(c) => c,
        Err(e) => return format!("cannot tell: nix's settings could not be read ({e})"),
    };
    let features: Vec<&str> = c
        .get("experimental-features")
        .unwrap_or("")
        .split_whitespace()
        // Present only because reading the settings asked for it.
        .filter(|f| !(c.nix_command_added && *f == "nix-command"))
        .collect();
    let shown = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(" ")
    };
    if features.contains(&"flakes") && features.contains(&"nix-command") {
        format!("enabled (experimental-features = {shown})")
    } else {
        format!(
            "not enabled in nix.conf (experimental-features = {shown}); coldboot passes \
             --extra-experimental-features 'nix-command flakes' on each call, so nix: \
             targets do not need them"
        )
    }
}

fn store_text(access: &StoreAccess, s: &StoreFacts) -> String {
    match access {
        StoreAccess::Local => format!(
            "local: this user can write {} and {}",
            s.store_dir.display(),
            s.state_dir.display()
        ),
        StoreAccess::Daemon => format!("the Nix daemon, through {}", s.daemon_socket.display()),
        StoreAccess::DaemonDenied => format!(
            "none usable: this user may not reach the daemon's socket {} (no permission on \
             it or its folder; often: not in its group)",
            s.daemon_socket.display()
        ),
        StoreAccess::Chroot => format!(
            "{} does not exist and no daemon listens: nix uses a chroot store in \
             ~/.local/share/nix/root",
            s.state_dir.display()
        ),
        StoreAccess::Unusable(why) => format!("none usable: {why}"),
        StoreAccess::Other(store) => format!("store = {store} (not probed)"),
    }
}

/// Where builds can run, from the settings.
struct Builds {
    /// The `nix builds` line.
    text: String,
    /// Why no NixOS system can be built, if none can.
    cannot: Option<String>,
    substituters: Vec<String>,
}

fn builds(c: &NixConfig, machines_file: Option<&str>) -> Builds {
    // `auto` is one job per core; Nix refuses anything but a number or `auto`.
    let max_jobs = c.get("max-jobs").unwrap_or("1");
    let system = c.get("system").unwrap_or("unknown");
    let extra = c.get("extra-platforms").unwrap_or("");
    let runs_guest = system == GUEST_SYSTEM || extra.split_whitespace().any(|p| p == GUEST_SYSTEM);
    let machines = builder_machines(c.get("builders").unwrap_or(""), machines_file);
    let substituters: Vec<String> = c
        .get("substituters")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();

    let (local, local_why) = if max_jobs == "0" {
        (false, "max-jobs = 0".to_string())
    } else if !runs_guest {
        (
            false,
            format!("system = {system} without {GUEST_SYSTEM} in extra-platforms"),
        )
    } else {
        (true, String::new())
    };
    let local_text = if local {
        format!("local: yes (max-jobs = {max_jobs}, system = {system})")
    } else {
        format!("local: no ({local_why})")
    };
    let remote_text = if machines.is_empty() {
        "remote builders: none".to_string()
    } else {
        let hosts: Vec<&str> = machines
            .iter()
            .filter_map(|m| m.split_whitespace().next())
            .collect();
        format!("remote builders: {}", hosts.join(", "))
    };
    let subst_text = if substituters.is_empty() {
        "substituters: none".to_string()
    } else {
        format!("substituters: {} (not contacted)", substituters.join(" "))
    };
    let cannot =
        (!local && machines.is_empty()).then(|| format!("{local_why}, and no remote builder"));
    Builds {
        text: format!("{local_text}; {remote_text}; {subst_text}"),
        cannot,
        substituters,
    }
}

/// Look at this host's Nix: `nix --version`, its settings, its store. `None` when no
/// `nix` runs. Never fails: whatever cannot be read is recorded as such.
pub async fn probe() -> Option<NixFacts> {
    let version = installed_nix_version().await?;
    let config = read_config(&version).await;
    let machines_file = config
        .as_ref()
        .ok()
        .and_then(|c| c.get("builders"))
        .and_then(|b| b.strip_prefix('@'))
        .and_then(|file| std::fs::read_to_string(file.trim()).ok());
    Some(NixFacts {
        path: on_path(NIX),
        version,
        config,
        store: probe_store(),
        machines_file,
    })
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The store's folders and socket, where Nix itself would look for them.
fn probe_store() -> StoreFacts {
    let env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let store_dir = env("NIX_STORE_DIR")
        .or_else(|| env("NIX_STORE"))
        .unwrap_or_else(|| PathBuf::from("/nix/store"));
    let state_dir = env("NIX_STATE_DIR").unwrap_or_else(|| PathBuf::from("/nix/var/nix"));
    let daemon_socket = env("NIX_DAEMON_SOCKET_PATH")
        .unwrap_or_else(|| state_dir.join("daemon-socket").join("socket"));
    let may = |p: &Path, a: Access| rustix::fs::access(p, a).is_ok();
    let socket = match std::fs::metadata(&daemon_socket) {
        // Connecting to a Unix socket takes write permission on it.
        Ok(_) if may(&daemon_socket, Access::WRITE_OK) => Socket::Usable,
        Ok(_) => Socket::Denied,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Socket::Denied,
        Err(_) => Socket::Absent,
    };
    StoreFacts {
        state_dir_exists: state_dir.is_dir(),
        state_dir_writable: may(&state_dir, Access::READ_OK | Access::WRITE_OK),
        store_dir_writable: may(&store_dir, Access::WRITE_OK),
        store_dir,
        state_dir,
        daemon_socket,
        socket,
        root: rustix::process::geteuid().is_root(),
    }
}

/// The settings, by whichever command this Nix has; with `nix-command` enabled for the
/// read alone when the configuration does not enable it.
async fn read_config(version: &str) -> Result<NixConfig, String> {
    let mut last = String::new();
    for command in config_commands(version) {
        let err = match nix_stdout(command, false).await {
            Ok(text) => {
                return Ok(NixConfig {
                    settings: parse_config(&text),
                    nix_command_added: false,
                });
            }
            Err(e) => e,
        };
        last = if err.contains("nix-command") {
            match nix_stdout(command, true).await {
                Ok(text) => {
                    return Ok(NixConfig {
                        settings: parse_config(&text),
                        nix_command_added: true,
                    });
                }
                Err(e) => e,
            }
        } else {
            err
        };
    }
    Err(last)
}

/// One `nix` call's stdout, or what went wrong in one line.
async fn nix_stdout(command: &[&str], add_nix_command: bool) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(NIX);
    if add_nix_command {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd.args(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = format!("nix {}", command.join(" "));
    let out = match tokio::time::timeout(CONFIG_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("`{shown}` gave no answer in {CONFIG_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run `{shown}`: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("error:"))
        .or_else(|| stderr.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .unwrap_or("no message");
    Err(format!("`{shown}` failed ({}): {said}", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nix --extra-experimental-features nix-command show-config` printed on the
    /// Debian 12 host with nix-bin 2.8.0 (the lines that matter, and some around them).
    const DEBIAN_2_8: &str = "allowed-users = *\nbuild-users-group = nixbld\n\
        builders = @/etc/nix/machines\nbuilders-use-substitutes = false\n\
        experimental-features = nix-command\n\
        extra-platforms = i686-linux x86_64-v1-linux x86_64-v2-linux\nmax-jobs = 1\n\
        nix-path = \nstore = auto\nsubstituters = https://cache.nixos.org/\n\
        system = x86_64-linux\n\
        trusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n";

    fn writable_store() -> StoreFacts {
        StoreFacts {
            store_dir: "/nix/store".into(),
            state_dir: "/nix/var/nix".into(),
            state_dir_exists: true,
            state_dir_writable: true,
            store_dir_writable: true,
            daemon_socket: "/nix/var/nix/daemon-socket/socket".into(),
            socket: Socket::Absent,
            root: true,
        }
    }

    /// This host: Debian's Nix 2.8, `nix-command` not in nix.conf, root, no daemon.
    fn debian_host() -> NixFacts {
        NixFacts {
            path: Some("/usr/bin/nix".into()),
            version: "nix (Nix) 2.8.0".into(),
            config: Ok(NixConfig {
                settings: parse_config(DEBIAN_2_8),
                nix_command_added: true,
            }),
            store: writable_store(),
            machines_file: None,
        }
    }

    fn text<'a>(lines: &'a [Line], label: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.label == label)
            .map(|l| l.text.as_str())
            .unwrap_or_else(|| panic!("no {label} line in {lines:#?}"))
    }

    fn summary(lines: &[Line]) -> &str {
        assert_eq!(
            lines.last().map(|l| l.label),
            Some(SUMMARY_LABEL),
            "{lines:#?}"
        );
        text(lines, SUMMARY_LABEL)
    }

    fn with_settings(mut f: NixFacts, pairs: &[(&str, &str)]) -> NixFacts {
        let c = f.config.as_mut().expect("settings");
        for (k, v) in pairs {
            c.settings.insert(k.to_string(), v.to_string());
        }
        f
    }

    #[test]
    fn a_host_without_nix_can_neither_evaluate_nor_build() {
        let lines = report(None);
        assert_eq!(
            text(&lines, "nix"),
            "not found on PATH (only nix: targets need it)"
        );
        assert!(
            summary(&lines).starts_with("cannot evaluate or build here: no nix on PATH"),
            "{lines:#?}"
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn debians_nix_2_8_as_root_can_evaluate_and_build_with_older_nixpkgs() {
        let lines = report(Some(&debian_host()));
        let nix = text(&lines, "nix");
        assert!(
            nix.starts_with("nix (Nix) 2.8.0 at /usr/bin/nix: older than 2.18"),
            "{nix}"
        );
        assert!(!nix.contains("not supported"), "{nix}");
        assert!(
            text(&lines, "nix flakes").starts_with(
                "not enabled in nix.conf (experimental-features = none); coldboot passes"
            ),
            "nix-command was only there because the read asked for it: {lines:#?}"
        );
        assert_eq!(
            text(&lines, "nix store"),
            "local: this user can write /nix/store and /nix/var/nix"
        );
        assert_eq!(
            text(&lines, "nix builds"),
            "local: yes (max-jobs = 1, system = x86_64-linux); remote builders: none; \
             substituters: https://cache.nixos.org/ (not contacted)"
        );
        assert_eq!(
            summary(&lines),
            "can evaluate and build; only flakes whose nixpkgs accepts Nix 2.8.0 (nixpkgs \
             from after August 2025 needs 2.18); the network that fetches nixpkgs and \
             substitutes is not checked"
        );
    }

    #[test]
    fn flakes_enabled_in_the_settings_are_reported_as_enabled() {
        let mut f = with_settings(
            debian_host(),
            &[("experimental-features", "flakes nix-command")],
        );
        f.version = "nix (Nix) 2.24.9".into();
        f.config.as_mut().unwrap().nix_command_added = false;
        let lines = report(Some(&f));
        assert_eq!(
            text(&lines, "nix flakes"),
            "enabled (experimental-features = flakes nix-command)"
        );
        assert_eq!(
            text(&lines, "nix"),
            "nix (Nix) 2.24.9 at /usr/bin/nix (any current nixpkgs)"
        );
        assert_eq!(
            summary(&lines),
            "can evaluate and build; the network that fetches nixpkgs and substitutes is not \
             checked"
        );
    }

    #[test]
    fn no_writable_store_and_no_daemon_cannot_evaluate() {
        let mut f = debian_host();
        f.store.state_dir_writable = false;
        f.store.store_dir_writable = false;
        f.store.root = false;
        let lines = report(Some(&f));
        let why = "this user cannot write /nix/var/nix, and no daemon socket at \
                   /nix/var/nix/daemon-socket/socket";
        assert_eq!(text(&lines, "nix store"), format!("none usable: {why}"));
        assert_eq!(
            summary(&lines),
            format!("cannot evaluate or build here: no store this user can use ({why})")
        );
        assert!(lines.iter().all(|l| l.label != "nix builds"), "{lines:#?}");
    }

    #[test]
    fn a_socket_this_user_may_not_use_is_named() {
        let mut f = debian_host();
        f.store.state_dir_writable = false;
        f.store.socket = Socket::Denied;
        let lines = report(Some(&f));
        assert_eq!(
            text(&lines, "nix store"),
            "none usable: this user may not reach the daemon's socket \
             /nix/var/nix/daemon-socket/socket (no permission on it or its folder; often: \
             not in its group)"
        );
        assert_eq!(
            summary(&lines),
            "cannot evaluate or build here: this user may not reach the daemon's socket \
             /nix/var/nix/daemon-socket/socket"
        );
    }

    #[test]
    fn the_daemon_with_no_build_slots_can_evaluate_but_not_build() {
        let mut f = with_settings(debian_host(), &[("max-jobs", "0")]);
        f.store.state_dir_writable = false;
        f.store.socket = Socket::Usable;
        let lines = report(Some(&f));
        assert_eq!(
            text(&lines, "nix store"),
            "the Nix daemon, through /nix/var/nix/daemon-socket/socket"
        );
        assert!(
            text(&lines, "nix builds").ends_with("the daemon builds with its own)"),
            "{lines:#?}"
        );
        assert!(
            summary(&lines).starts_with(
                "can evaluate (coldboot analyze works), cannot build here (max-jobs = 0, and \
                 no remote builder; coldboot boot and run need a build)"
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_remote_builder_from_the_machines_file_builds_what_the_host_cannot() {
        let mut f = with_settings(
            debian_host(),
            &[
                ("system", "aarch64-linux"),
                ("extra-platforms", ""),
                ("substituters", ""),
            ],
        );
        f.version = "nix (Nix) 2.24.9".into();
        let lines = report(Some(&f));
        assert_eq!(
            summary(&lines),
            "can evaluate (coldboot analyze works), cannot build here (system = \
             aarch64-linux without x86_64-linux in extra-platforms, and no remote builder; \
             coldboot boot and run need a build); the network that fetches nixpkgs and \
             substitutes is not checked"
        );
        f.machines_file =
            Some("# the builders\nssh://builder x86_64-linux /root/.ssh/id 4\n\n".into());
        let lines = report(Some(&f));
        assert_eq!(
            text(&lines, "nix builds"),
            "local: no (system = aarch64-linux without x86_64-linux in extra-platforms); \
             remote builders: ssh://builder; substituters: none"
        );
        assert_eq!(
            summary(&lines),
            "can evaluate and build; with no substituter, all of the system is built from \
             source; the network that fetches nixpkgs and substitutes is not checked"
        );
    }

    #[test]
    fn no_state_folder_as_a_user_means_a_chroot_store() {
        let mut f = debian_host();
        f.store.state_dir_exists = false;
        f.store.state_dir_writable = false;
        f.store.root = false;
        let lines = report(Some(&f));
        assert!(
            text(&lines, "nix store").contains("chroot store"),
            "{lines:#?}"
        );
        assert!(summary(&lines).starts_with("can evaluate; builds would go to a chroot store"));
    }

    #[test]
    fn unreadable_settings_leave_the_build_undecided() {
        let mut f = debian_host();
        f.config = Err("`nix show-config` failed (exit status: 1): error: boom".into());
        let lines = report(Some(&f));
        assert!(
            text(&lines, "nix flakes").contains("error: boom"),
            "{lines:#?}"
        );
        assert!(
            summary(&lines).starts_with("can evaluate; cannot tell whether it can build here"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_nix_without_flakes_cannot_evaluate() {
        let mut f = debian_host();
        f.version = "nix-env (Nix) 2.3.16".into();
        let lines = report(Some(&f));
        assert!(text(&lines, "nix").ends_with("older than 2.4, so it has no flakes"));
        assert_eq!(
            summary(&lines),
            "cannot evaluate or build here: this Nix has no flakes (install Nix >= 2.18)"
        );
    }

    #[test]
    fn another_store_setting_is_not_probed() {
        let mut f = with_settings(debian_host(), &[("store", "ssh-ng://builder")]);
        f.store.state_dir_writable = false;
        let lines = report(Some(&f));
        assert_eq!(
            text(&lines, "nix store"),
            "store = ssh-ng://builder (not probed)"
        );
        assert!(
            summary(&lines)
                .starts_with("can evaluate and build (store = ssh-ng://builder, not probed)"),
            "{lines:#?}"
        );
    }

    #[test]
    fn settings_parse_with_empty_values_and_equals_signs() {
        let s = parse_config(DEBIAN_2_8);
        assert_eq!(s["builders"], "@/etc/nix/machines");
        assert_eq!(s["nix-path"], "");
        assert_eq!(
            s["trusted-public-keys"],
            "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
        );
        assert!(parse_config("warning: something = odd\n").is_empty());
    }

    #[test]
    fn the_settings_command_follows_the_version() {
        assert_eq!(config_commands("nix (Nix) 2.8.0")[0], &["show-config"]);
        assert_eq!(config_commands("nix (Nix) 2.20.0")[0], &["config", "show"]);
        assert_eq!(config_commands("nix (Nix) 2.24.9")[1], &["show-config"]);
        assert_eq!(config_commands("garbage")[0], &["show-config"]);
    }

    #[test]
    fn builders_inline_and_from_a_file() {
        assert_eq!(
            builder_machines("ssh://a x86_64-linux; ssh://b", None),
            ["ssh://a x86_64-linux", "ssh://b"]
        );
        assert!(builder_machines("@/etc/nix/machines", None).is_empty());
        assert_eq!(
            builder_machines(" @/etc/nix/machines", Some("ssh://c # fast\n#off\n")),
            ["ssh://c"]
        );
        assert!(builder_machines("", None).is_empty());
    }
}
