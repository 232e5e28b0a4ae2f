//! The `nix/` modules evaluated with nixpkgs' real module system: `lib.evalModules` from
//! nixpkgs' own `lib` (the tarball named by `COLDBOOT_NIXPKGS_LIB`, see
//! `../shared/nixpkgs-lib/README.md`) under the installed Nix 2.8. That makes the modules'
//! option types, defaults, imports and module deduplication real checks. Without nixpkgs
//! there is no NixOS: the NixOS options the modules set and the few `pkgs` attributes they
//! name are stand-ins (`tests/fixtures/nix/module-stubs.nix`), so no unit file or system
//! is built here.
//!
//! Without `COLDBOOT_NIXPKGS_LIB` every test prints SKIP and passes (`.ci/run` sets it
//! when `../shared/nixpkgs-lib/` is there).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

const LIB_ENV: &str = "COLDBOOT_NIXPKGS_LIB";

/// One nix-instantiate at a time: on a fresh machine the first ones create Nix's
/// database, and two at once fail with "SQLite database ... is busy".
fn nix_lock() -> std::sync::MutexGuard<'static, ()> {
    static NIX: std::sync::Mutex<()> = std::sync::Mutex::new(());
    NIX.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// nixpkgs' `lib/` folder, unpacked once from the tarball `COLDBOOT_NIXPKGS_LIB` names
/// (into cargo's test tmpdir, keyed by the tarball's size and time, so later runs reuse
/// it); `None` when the variable is unset. A set variable that does not lead to a `lib`
/// is a failure, not a skip.
fn nixpkgs_lib() -> Option<&'static Path> {
    static LIB: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIB.get_or_init(|| {
        let tarball = PathBuf::from(std::env::var_os(LIB_ENV)?);
        let meta = std::fs::metadata(&tarball)
            .unwrap_or_else(|e| panic!("{LIB_ENV}={}: {e}", tarball.display()));
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nixpkgs-lib-{}-{mtime}", meta.len()));
        let lib = dir.join("lib");
        if !lib.join("default.nix").is_file() {
            // Unpacked beside it, then renamed: a concurrent run sees all of it or none.
            let part = dir.with_extension(format!("part-{}", std::process::id()));
            std::fs::create_dir_all(&part).unwrap();
            let out = Command::new("tar")
                .arg("-xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(&part)
                .output()
                .expect("tar");
            assert!(
                out.status.success(),
                "{LIB_ENV}={}: tar: {}",
                tarball.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            if std::fs::rename(&part, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&part);
            }
        }
        assert!(
            lib.join("default.nix").is_file(),
            "{LIB_ENV}={}: the tarball has no lib/default.nix (nixpkgs' lib folder)",
            tarball.display()
        );
        Some(lib)
    })
    .as_deref()
}

macro_rules! require_lib {
    () => {
        match nixpkgs_lib() {
            Some(lib) => lib,
            None => {
                eprintln!(
                    "SKIP: no nixpkgs lib to evaluate the modules with (set {LIB_ENV} to ../shared/nixpkgs-lib/nixpkgs-lib-db873391.tar.gz)"
                );
                return;
            }
        }
    };
}

/// `nix-instantiate --eval --strict --json` of `expr`, in which `lib` (nixpkgs' lib),
/// `repo` (this checkout), `tmp` (`tmp_dir`, or the checkout) and
/// `evalWith MODULES` (`lib.evalModules` with the stand-ins, returning `config`) are bound.
fn eval_in(lib: &Path, tmp_dir: &Path, expr: &str) -> Result<Value, String> {
    let program = format!(
        r#"{{ libDir, repoDir, tmpDir }}:
        let
          lib = import (/. + libDir);
          repo = /. + repoDir;
          tmp = /. + tmpDir;
          stubs = repo + "/tests/fixtures/nix/module-stubs.nix";
          evalWith = modules: (lib.evalModules {{ modules = [ stubs ] ++ modules; }}).config;
        in
        {expr}"#
    );
    let arg = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let _one = nix_lock();
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &program])
        .args(["--argstr", "libDir", &arg(lib)])
        .args(["--argstr", "repoDir", &arg(&root())])
        .args(["--argstr", "tmpDir", &arg(tmp_dir)])
        .output()
        .expect("nix-instantiate (scripts/setup installs nix-bin)");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn eval(lib: &Path, expr: &str) -> Result<Value, String> {
    eval_in(lib, &root(), expr)
}

/// Copy the files of `nix/` that the options module needs into `dir` (a coldboot checkout
/// at another path: another store path, as a target flake's own coldboot input is).
fn copy_options_module(dir: &Path, edit: impl Fn(String) -> String) {
    for rel in ["modules/coldboot-options.nix", "lib/coldboot.nix"] {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let text = std::fs::read_to_string(root().join("nix").join(rel)).unwrap();
        std::fs::write(to, edit(text)).unwrap();
    }
}

#[test]
fn the_options_module_declares_gates_and_faults() {
    let lib = require_lib!();
    let got = eval(
        lib,
        r#"(evalWith [
          (repo + "/nix/modules/coldboot-options.nix")
          {
            coldboot.gates."deploy-proxy.service" = { url = "http://127.0.0.1:8082/ping"; servedBy = "traefik.service"; };
            coldboot.faults.traefik-broken.run = "ccci-model-set-latest broken-crash";
          }
        ]).coldboot.harness"#,
    )
    .unwrap();
    assert_eq!(
        got,
        json!({
            "gates": {"deploy-proxy.service": {"url": "http://127.0.0.1:8082/ping", "servedBy": "traefik.service"}},
            "faults": {"traefik-broken": {"doc": "", "run": "ccci-model-set-latest broken-crash"}}
        })
    );
    // Nothing declared: empty, and the harness reads that.
    let empty = eval(
        lib,
        r#"(evalWith [ (repo + "/nix/modules/coldboot-options.nix") ]).coldboot.harness"#,
    )
    .unwrap();
    assert_eq!(empty, json!({"gates": {}, "faults": {}}));
    // The types are checked: a gate without its URL, a value of the wrong type, an
    // option that does not exist, and harness being read-only.
    for (module, says) in [
        (
            r#"{ coldboot.gates."a.service".servedBy = "b.service"; }"#,
            "coldboot.gates.\"a.service\".url' is used but not defined",
        ),
        (
            r#"{ coldboot.faults.x = { run = 1; }; }"#,
            "is not of type `string'",
        ),
        (
            r#"{ coldboot.gate."a.service" = { }; }"#,
            "coldboot.gate' does not exist",
        ),
        (r#"{ coldboot.harness = { }; }"#, "read-only"),
    ] {
        let err = eval(
            lib,
            &format!(
                r#"(evalWith [ (repo + "/nix/modules/coldboot-options.nix") {module} ]).coldboot.harness"#
            ),
        )
        .unwrap_err();
        assert!(err.contains(says), "{module}: {err}");
    }
}

/// Issue 20, item 1: a target's own coldboot input and the harness's checkout are two
/// copies of the options module at different paths; both imported, they are one.
#[test]
fn two_copies_of_the_options_module_are_one_declaration() {
    let lib = require_lib!();
    let tmp = tempfile::tempdir().unwrap();
    let key_line = "  key = \"coldboot-options\";\n";
    copy_options_module(&tmp.path().join("a"), |t| t);
    copy_options_module(&tmp.path().join("b"), |t| t);
    // The same copies without the key: what the module system does without it.
    let options = std::fs::read_to_string(root().join("nix/modules/coldboot-options.nix"));
    assert!(options.unwrap().contains(key_line), "no `key` line");
    let strip = |t: String| t.replace(key_line, "");
    copy_options_module(&tmp.path().join("a-nokey"), strip);
    copy_options_module(&tmp.path().join("b-nokey"), strip);
    let both = |a: &str, b: &str| {
        eval_in(
            lib,
            tmp.path(),
            &format!(
                r#"(evalWith [
                  (tmp + "/{a}/modules/coldboot-options.nix")
                  (tmp + "/{b}/modules/coldboot-options.nix")
                  {{ coldboot.gates."deploy-proxy.service" = {{ url = "http://127.0.0.1:8082/ping"; servedBy = "traefik.service"; }}; }}
                ]).coldboot.harness"#
            ),
        )
    };
    assert_eq!(
        both("a", "b").unwrap()["gates"]["deploy-proxy.service"]["servedBy"],
        "traefik.service"
    );
    let err = both("a-nokey", "b-nokey").unwrap_err();
    assert!(err.contains("is already declared in"), "{err}");
}

/// The ```nix block of nix/README.md whose first line is `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme = std::fs::read_to_string(root().join("nix/README.md")).unwrap();
    let start = readme
        .find(&format!("```nix\n{first_line}\n"))
        .unwrap_or_else(|| panic!("nix/README.md has no nix block starting {first_line:?}"));
    let body = &readme[start + "```nix\n".len()..];
    body[..body.find("\n```").unwrap() + 1].to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Flakes' outputs as the harness evaluates them, without Nix's flake machinery: nixpkgs
/// is a stand-in whose `lib.nixosSystem` is the real `lib.evalModules` with the stand-ins,
/// and a flake's `self` is its own outputs.
const FLAKES: &str = r#"
  nixosSystem = args: lib.evalModules { modules = args.modules ++ [ stubs ]; };
  nixpkgs = { lib.nixosSystem = nixosSystem; };
  outputsOf = dir: inputs:
    let outputs = (import (dir + "/flake.nix")).outputs (inputs // { self = outputs; });
    in outputs;
"#;

/// Issue 20, item 2: nix/README.md's override blocks, written to a cc-ci flake as they
/// stand, with the coldboot input a copy of `nix/` at another path; the harness's wrapper
/// (this checkout's `nix/`) adds its adapter, and `config.coldboot.harness` evaluates.
#[test]
fn the_readme_override_snippet_evaluates_under_the_wrapper() {
    let lib = require_lib!();
    let tmp = tempfile::tempdir().unwrap();
    let flake = readme_block("# cc-ci/flake.nix");
    let overrides = readme_block("# cc-ci/nix/coldboot-overrides.nix");
    std::fs::create_dir_all(tmp.path().join("cc-ci/nix")).unwrap();
    std::fs::write(tmp.path().join("cc-ci/flake.nix"), &flake).unwrap();
    std::fs::write(
        tmp.path().join("cc-ci/nix/coldboot-overrides.nix"),
        &overrides,
    )
    .unwrap();
    copy_dir(&root().join("nix"), &tmp.path().join("coldboot-input"));
    let got = eval_in(
        lib,
        tmp.path(),
        &format!(
            r#"let
              {FLAKES}
              # cc-ci's own configuration, as its flake has it (a stand-in: one service and
              # one sops-nix secret, its fields given as sops-nix's defaults would fill them).
              host = nixosSystem {{ modules = [ {{
                networking.hostName = "cc-ci";
                systemd.services.backupbot.wantedBy = [ "multi-user.target" ];
                sops.secrets.drone-rpc-secret = {{
                  path = "/run/secrets/drone-rpc-secret"; mode = "0440";
                  owner = "drone"; group = "drone"; restartUnits = [ "drone.service" ];
                }};
              }} ]; }};
              coldbootInput = outputsOf (tmp + "/coldboot-input") {{ inherit nixpkgs; target = {{ }}; }};
              ccci =
                let outputs = (import (tmp + "/cc-ci/flake.nix")).outputs {{
                      self = ccci; inherit nixpkgs; coldboot = coldbootInput;
                    }};
                in outputs // {{ nixosConfigurations = outputs.nixosConfigurations // {{ cc-ci = host; }}; }};
              wrapper = outputsOf (repo + "/nix") {{ inherit nixpkgs; target = ccci; }};
              config = wrapper.coldbootTargets.cc-ci-coldboot.config;
            in {{
              inherit (config.coldboot) harness secretStubs;
              stubService = config.systemd.services.coldboot-secret-stubs.before;
              inherit (config.security) acme;
              backupbot = config.systemd.services.backupbot;
              hosts = config.networking.extraHosts;
            }}"#
        ),
    )
    .unwrap();
    assert_eq!(
        got["harness"],
        json!({
            "gates": {"deploy-proxy.service": {"url": "http://127.0.0.1:8082/ping", "servedBy": "traefik.service"}},
            "faults": {"traefik-broken": {
                "doc": "latest traefik recipe version does not start",
                "run": "warm-reconcile set-latest traefik broken"
            }}
        })
    );
    // sops-nix's secrets become stubs, written before the units that read them.
    assert_eq!(
        got["secretStubs"],
        json!({"/run/secrets/drone-rpc-secret": {
            "content": "coldboot-stub\n", "mode": "0440", "owner": "drone", "group": "drone",
            "before": ["drone.service"]
        }})
    );
    assert_eq!(
        got["stubService"],
        json!(["sysinit.target", "drone.service"])
    );
    // The rest of the snippet is in the same configuration.
    assert_eq!(got["acme"]["preliminarySelfsigned"], true);
    assert_eq!(got["backupbot"]["enable"], false);
    assert!(
        got["hosts"]
            .as_str()
            .unwrap()
            .contains("ci.commoninternet.net")
    );
}

/// The `timeout=` of scenarios/plans/m1.yaml's before-target.
fn m1_before_timeout() -> u64 {
    let plan = std::fs::read_to_string(root().join("scenarios/plans/m1.yaml")).unwrap();
    let before = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("before: "))
        .expect("m1.yaml has a before target");
    let at = before
        .find("timeout=")
        .expect("m1's before target sets timeout=")
        + 8;
    before[at..]
        .trim_end_matches('"')
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The wrapper flake's own model configurations through `coldbootTargets` (what the
/// harness evaluates for `nix:./nix#NAME`): ccci-model.nix with the adapter added by
/// `lib.withColdboot`'s `extendModules`, for both gate values.
#[test]
fn the_model_with_the_adapter_declares_each_gate() {
    let lib = require_lib!();
    let got = eval(
        lib,
        &format!(
            r#"let
              {FLAKES}
              flake = outputsOf (repo + "/nix") {{ inherit nixpkgs; target = flake; }};
            in builtins.mapAttrs (name: _:
              let
                config = flake.coldbootTargets.${{name}}.config;
                bare = flake.nixosConfigurations.${{name}}.config;
              in {{
                inherit (config.coldboot) harness;
                bareHarness = bare.coldboot.harness;
                hostName = config.networking.hostName;
                gate = config.environment.etc."ccci-model/gate".text;
                timeout = config.systemd.services.deploy-proxy.serviceConfig.TimeoutStartSec;
                services = builtins.attrNames config.systemd.services;
                bareServices = builtins.attrNames bare.systemd.services;
                hostKeys = config.services.openssh.hostKeys;
                kernelModules = config.boot.kernelModules;
              }}) flake.nixosConfigurations"#
        ),
    )
    .unwrap();
    let gate = |url: &str, by: &str| json!({"deploy-proxy.service": {"url": url, "servedBy": by}});
    let before = &got["ccci-model-before"];
    let after = &got["ccci-model-after"];
    assert_eq!(
        before["harness"]["gates"],
        gate("https://ci.commoninternet.net/", "deploy-dashboard.service")
    );
    assert_eq!(
        after["harness"]["gates"],
        gate("http://127.0.0.1:8082/ping", "traefik.service")
    );
    assert_eq!(
        (before["gate"].as_str(), after["gate"].as_str()),
        (Some("dashboard\n"), Some("self\n"))
    );
    for c in [before, after] {
        assert_eq!(
            c["harness"], c["bareHarness"],
            "the adapter changes no gate"
        );
        let faults = c["harness"]["faults"].as_object().unwrap();
        assert_eq!(
            faults.keys().collect::<Vec<_>>(),
            [
                "traefik-broken",
                "traefik-broken-crash",
                "traefik-broken-silent"
            ]
        );
        assert_eq!(
            c["hostName"], "ccci-model",
            "the configuration's own modules stay"
        );
        let services = c["services"].as_array().unwrap();
        for unit in [
            "coldboot-authorized-key",
            "coldboot-host-key",
            "coldboot-recorder",
        ] {
            assert!(services.contains(&json!(unit)), "{unit}: {services:?}");
            assert!(!c["bareServices"].as_array().unwrap().contains(&json!(unit)));
        }
        assert_eq!(
            c["hostKeys"],
            json!([{"path": "/run/coldboot/ssh_host_ed25519_key", "type": "ed25519"}]),
            "mkForce: the run's host key only"
        );
        assert!(
            c["kernelModules"]
                .as_array()
                .unwrap()
                .contains(&json!("qemu_fw_cfg"))
        );
    }
    // The old gate at cc-ci's real timeout, as M1 gives the recipe's before-target.
    assert_eq!(before["timeout"], m1_before_timeout());
    assert_eq!(after["timeout"], 900);
}

/// Issue 20, item 8: the model's drone reads a secret the VM cannot decrypt; the model
/// declares a stub for it and the adapter writes it in a service ordered before drone.
#[test]
fn the_adapter_writes_the_model_secret_stub_before_drone() {
    let lib = require_lib!();
    let got = eval(
        lib,
        &format!(
            r#"let
              {FLAKES}
              flake = outputsOf (repo + "/nix") {{ inherit nixpkgs; target = flake; }};
              system = flake.coldbootTargets.ccci-model-after;
              inherit (system) config;
              bare = flake.nixosConfigurations.ccci-model-after.config;
              coldboot = import (repo + "/nix/lib/coldboot.nix");
            in {{
              inherit (config.coldboot) secretStubs;
              service = config.systemd.services.coldboot-secret-stubs;
              # The script the service should run: the pure function's, through the same
              # stand-in builder (its path is a hash of the text).
              script = system._module.args.pkgs.writeShellScript "coldboot-secret-stubs"
                (coldboot.secretStubScript config.coldboot.secretStubs);
              drone = config.systemd.services.drone.serviceConfig.ExecStartPre;
              bareHasIt = bare.systemd.services ? coldboot-secret-stubs;
            }}"#
        ),
    )
    .unwrap();
    let path = "/run/secrets/drone-rpc-secret";
    assert_eq!(
        got["secretStubs"],
        json!({path: {
            "content": "coldboot-stub\n", "mode": "0400", "owner": "root", "group": "root",
            "before": ["drone.service"]
        }})
    );
    assert!(
        got["drone"].as_str().unwrap().contains(path),
        "{}",
        got["drone"]
    );
    let service = &got["service"];
    assert_eq!(service["unitConfig"]["DefaultDependencies"], false);
    assert_eq!(
        service["before"],
        json!(["sysinit.target", "drone.service"])
    );
    assert_eq!(service["wantedBy"], service["before"]);
    assert_eq!(
        service["after"],
        json!(["local-fs.target", "systemd-tmpfiles-setup.service"])
    );
    assert_eq!(service["serviceConfig"]["Type"], "oneshot");
    assert_eq!(service["serviceConfig"]["ExecStart"], got["script"]);
    assert_eq!(got["bareHasIt"], false, "only the adapter writes stubs");
}

/// Without stubs the adapter adds no stub service; bad stub declarations are refused by
/// the option types.
#[test]
fn secret_stub_option_types() {
    let lib = require_lib!();
    let adapter = r#"(repo + "/nix/modules/coldboot-guest.nix")"#;
    let none = eval(
        lib,
        &format!(r#"(evalWith [ {adapter} ]).systemd.services ? coldboot-secret-stubs"#),
    )
    .unwrap();
    assert_eq!(none, false);
    for (def, says) in [
        (r#"mode = "rw";"#, "string matching the pattern [0-7]{3,4}"),
        (
            r#"before = "drone.service";"#,
            "is not of type `list of string'",
        ),
        (r#"contents = "x";"#, "contents' does not exist"),
    ] {
        let err = eval(
            lib,
            &format!(
                r#"(evalWith [ {adapter} {{ coldboot.secretStubs."/run/secrets/x" = {{ {def} }}; }} ]).coldboot.secretStubs"#
            ),
        )
        .unwrap_err();
        assert!(err.contains(says), "{def}: {err}");
    }
    // A path the option type cannot check is refused when the service is evaluated.
    let err = eval(
        lib,
        &format!(
            r#"(evalWith [ {adapter} {{ coldboot.secretStubs."run/x" = {{ }}; }} ]).systemd.services.coldboot-secret-stubs.serviceConfig.ExecStart"#
        ),
    )
    .unwrap_err();
    assert!(err.contains("not a plain absolute path"), "{err}");
}
