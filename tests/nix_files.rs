//! The `nix/` folder, checked with the Nix that these machines have (Debian's nix-bin,
//! Nix 2.8): every `.nix` file parses (`nix-instantiate --parse`), and every pure
//! function is evaluated with `nix-instantiate --eval --strict --json` on inputs written
//! here. The modules themselves need nixpkgs, which is not here, so NixOS is not
//! evaluated; `flake.nix`'s outputs are, with stand-ins for nixpkgs and the target.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One nix-instantiate at a time: on a fresh machine the first ones create Nix's
/// database, and two at once fail with "SQLite database ... is busy".
fn nix_lock() -> std::sync::MutexGuard<'static, ()> {
    static NIX: std::sync::Mutex<()> = std::sync::Mutex::new(());
    NIX.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why nix-instantiate cannot run, if it cannot.
fn no_nix() -> Option<String> {
    match Command::new("nix-instantiate").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("nix-instantiate is not installed (scripts/setup installs nix-bin)".into()),
    }
}

macro_rules! require_nix {
    () => {
        if let Some(why) = no_nix() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == ".venv" || name == "evidence" {
            continue;
        }
        if path.is_dir() {
            nix_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "nix") {
            out.push(path);
        }
    }
}

/// `nix-instantiate --eval --strict --json -E EXPR`, run in `nix/`; Ok(json) or Err(stderr).
fn eval(expr: &str) -> Result<serde_json::Value, String> {
    let _one = nix_lock();
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
        .current_dir(root().join("nix"))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[test]
fn every_nix_file_parses() {
    require_nix!();
    let mut files = Vec::new();
    nix_files(&root(), &mut files);
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let _one = nix_lock();
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn harness_info_is_the_json_the_harness_reads() {
    require_nix!();
    let got = eval(
        r#"(import ./lib/coldboot.nix).harnessInfo {
          gates."deploy-proxy.service" = { url = "http://127.0.0.1:8082/ping"; servedBy = "traefik.service"; };
          faults.traefik-broken = { doc = "latest is broken"; run = "ccci-model-set-latest broken-crash"; };
        }"#,
    )
    .unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "gates": {"deploy-proxy.service": {"url": "http://127.0.0.1:8082/ping", "servedBy": "traefik.service"}},
            "faults": {"traefik-broken": {"doc": "latest is broken", "run": "ccci-model-set-latest broken-crash"}}
        })
    );
    // The harness's own types read it (deny_unknown_fields on both sides).
    let gates: std::collections::BTreeMap<String, coldboot::targets::GateDecl> =
        serde_json::from_value(got["gates"].clone()).unwrap();
    assert_eq!(gates["deploy-proxy.service"].served_by, "traefik.service");
    let faults: std::collections::BTreeMap<String, coldboot::targets::Fault> =
        serde_json::from_value(got["faults"].clone()).unwrap();
    assert_eq!(faults.len(), 1);
    assert_eq!(
        eval("(import ./lib/coldboot.nix).harnessInfo { }").unwrap(),
        serde_json::json!({"gates": {}, "faults": {}})
    );
}

#[test]
fn bad_declarations_stop_the_evaluation_with_the_option_path() {
    require_nix!();
    for (input, says) in [
        (
            r#"gates.deploy-proxy = { url = "http://x/"; servedBy = "traefik.service"; }"#,
            "is not a systemd unit name",
        ),
        (
            r#"gates."a.service" = { url = "http://x/"; servedBy = "traefik"; }"#,
            "coldboot.gates.a.service.servedBy",
        ),
        (
            r#"gates."a.service" = { url = "ftp://x/"; servedBy = "b.service"; }"#,
            "is not an http(s) URL",
        ),
        (
            r#"faults.Bad_Name = { doc = ""; run = "true"; }"#,
            "is not a fault name",
        ),
        (
            r#"faults.ok = { doc = ""; run = ""; }"#,
            "coldboot.faults.ok.run is empty",
        ),
    ] {
        let err = eval(&format!(
            "(import ./lib/coldboot.nix).harnessInfo {{ {input}; }}"
        ))
        .unwrap_err();
        assert!(err.contains(says), "{input}: {err}");
    }
}

#[test]
fn model_gates_match_the_recipe() {
    require_nix!();
    let recipe = std::fs::read_to_string(root().join("vm-images/ccci-model/recipe.yaml")).unwrap();
    for (gate, url, by) in [
        ("self", "http://127.0.0.1:8082/ping", "traefik.service"),
        (
            "dashboard",
            "https://ci.commoninternet.net/",
            "deploy-dashboard.service",
        ),
    ] {
        let got = eval(&format!(
            "(import ./lib/coldboot.nix).ccciModelGates \"{gate}\""
        ))
        .unwrap();
        assert_eq!(
            got,
            serde_json::json!({"deploy-proxy.service": {"url": url, "servedBy": by}})
        );
        assert!(
            recipe.contains(url) && recipe.contains(by),
            "recipe.yaml disagrees on {gate}"
        );
    }
    assert!(eval(r#"(import ./lib/coldboot.nix).ccciModelGates "other""#).is_err());
}

#[test]
fn unit_texts_keep_enabled_units_with_text() {
    require_nix!();
    let got = eval(
        r#"(import ./lib/unit-texts.nix) {
          "deploy-proxy.service" = { enable = true; text = "[Unit]\nDescription=x\n"; wantedBy = [ "multi-user.target" ]; };
          "traefik.service" = { enable = true; text = "[Unit]\n"; upheldBy = [ "deploy-proxy.service" ]; };
          "off.service" = { enable = false; text = "[Unit]\n"; };
          "upstream.target" = { enable = true; text = null; };
        }"#,
    )
    .unwrap();
    assert_eq!(
        got,
        serde_json::json!({"deploy-proxy.service": {
            "text": "[Unit]\nDescription=x\n",
            "wantedBy": ["multi-user.target"],
            "requiredBy": [],
            "upheldBy": [],
            "aliases": []
        }, "traefik.service": {
            "text": "[Unit]\n",
            "wantedBy": [],
            "requiredBy": [],
            "upheldBy": ["deploy-proxy.service"],
            "aliases": []
        }})
    );
    // The harness passes the same file's text as --apply.
    assert_eq!(
        coldboot::targets::nix::UNIT_TEXTS_APPLY,
        std::fs::read_to_string(root().join("nix/lib/unit-texts.nix")).unwrap()
    );
}

#[test]
fn authorized_key_line_follows_the_recipe_adapter() {
    require_nix!();
    let f = |blob: &str| {
        eval(&format!(
            "(import ./lib/coldboot.nix).authorizedKeyLine \"{blob}\""
        ))
    };
    assert_eq!(
        f("AAAAC3NzaC1lZDI1NTE5AAAAIB+/=").unwrap(),
        serde_json::json!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+/= coldboot-harness")
    );
    assert_eq!(f("not base64!").unwrap(), serde_json::Value::Null);
    assert_eq!(f("").unwrap(), serde_json::Value::Null);
}

/// flake.nix's outputs, with stand-ins for nixpkgs (never forced) and the target flake.
#[test]
fn flake_outputs_add_the_adapter_through_extend_modules() {
    require_nix!();
    let got = eval(
        r#"let
          flake = import ./flake.nix;
          configuration = { extendModules = args: { extendedWith = map toString args.modules; }; };
          outputs = flake.outputs {
            self = outputs;
            nixpkgs.lib.nixosSystem = throw "nixpkgs is not here";
            target.nixosConfigurations.host = configuration;
          };
        in {
          inputs = flake.inputs;
          targets = outputs.coldbootTargets;
          withColdboot = outputs.lib.withColdboot configuration;
          configurations = builtins.attrNames outputs.nixosConfigurations;
          modules = builtins.mapAttrs (n: toString) outputs.nixosModules;
        }"#,
    )
    .unwrap();
    let adapter = root()
        .join("nix/modules/coldboot-guest.nix")
        .display()
        .to_string();
    assert_eq!(
        got["targets"]["host"]["extendedWith"],
        serde_json::json!([adapter])
    );
    assert_eq!(
        got["withColdboot"]["extendedWith"],
        serde_json::json!([adapter])
    );
    assert_eq!(
        got["configurations"],
        serde_json::json!(["ccci-model-after", "ccci-model-before"])
    );
    assert_eq!(got["inputs"]["target"]["follows"], "nixpkgs");
    assert!(
        got["modules"]["ccci-model"]
            .as_str()
            .unwrap()
            .ends_with("nix/modules/ccci-model.nix")
    );
    // With nixpkgs' own outputs as the target (the default), there is nothing to build.
    let empty = eval(
        r#"let flake = import ./flake.nix;
               outputs = flake.outputs { self = outputs; nixpkgs = { }; target = { }; };
           in outputs.coldbootTargets"#,
    )
    .unwrap();
    assert_eq!(empty, serde_json::json!({}));
}

/// `coldboot.secretStubs`' script, evaluated and run by `sh` on paths under a temporary
/// folder: each stub written with its content, mode and owner; a file already there kept;
/// a dangling link replaced.
#[test]
fn secret_stub_script_writes_each_stub() {
    require_nix!();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display().to_string();
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (user, group) = (id("-un"), id("-gn"));
    std::fs::create_dir_all(tmp.path().join("keep")).unwrap();
    std::fs::write(tmp.path().join("keep/real"), "real secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let real_mode = mode_of(&tmp.path().join("keep/real"));
    std::fs::create_dir_all(tmp.path().join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", tmp.path().join("link/s")).unwrap();
    let script = eval(&format!(
        r#"(import ./lib/coldboot.nix).secretStubScript {{
          "{t}/run/secrets/a" = {{ content = "it's\n"; mode = "0440"; owner = "{user}"; group = "{group}"; before = [ "a.service" ]; }};
          "{t}/deep/er/b" = {{ content = "coldboot-stub\n"; mode = "0400"; owner = "{user}"; group = "{group}"; before = [ ]; }};
          "{t}/keep/real" = {{ content = "stub"; mode = "0400"; owner = "{user}"; group = "{group}"; before = [ ]; }};
          "{t}/link/s" = {{ content = "stub"; mode = "0600"; owner = "{user}"; group = "{group}"; before = [ ]; }};
        }}"#
    ))
    .unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script.as_str().unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |rel: &str| {
        let p = tmp.path().join(rel);
        (std::fs::read_to_string(&p).unwrap(), mode_of(&p))
    };
    assert_eq!(file("run/secrets/a"), ("it's\n".into(), 0o440));
    assert_eq!(file("deep/er/b"), ("coldboot-stub\n".into(), 0o400));
    assert_eq!(file("keep/real"), ("real secret".into(), real_mode));
    assert_eq!(file("link/s"), ("stub".into(), 0o600));
    assert!(said.contains("keep/real exists, not stubbed"), "{said}");
    // Folders it makes are readable by the owner of a secret that is not root.
    assert_eq!(mode_of(&tmp.path().join("deep/er")), 0o755);

    // Bad declarations stop the evaluation with the option path.
    for (path, fields, says) in [
        (
            "run/x",
            r#"mode = "0400"; before = [ ];"#,
            "not a plain absolute path",
        ),
        (
            "/run/../x",
            r#"mode = "0400"; before = [ ];"#,
            "not a plain absolute path",
        ),
        (
            "/run/x/",
            r#"mode = "0400"; before = [ ];"#,
            "not a plain absolute path",
        ),
        (
            "/run/x",
            r#"mode = "rw"; before = [ ];"#,
            "is not an octal mode",
        ),
        (
            "/run/x",
            r#"mode = "0400"; before = [ "drone" ];"#,
            "is not a systemd unit",
        ),
    ] {
        let err = eval(&format!(
            r#"(import ./lib/coldboot.nix).secretStubScript {{
              "{path}" = {{ content = ""; owner = "root"; group = "root"; {fields} }};
            }}"#
        ))
        .unwrap_err();
        assert!(
            err.contains("coldboot.secretStubs") && err.contains(says),
            "{path}: {err}"
        );
    }
    assert_eq!(
        eval(
            r#"(import ./lib/coldboot.nix).secretStubUnits {
              "/a".before = [ "x.service" "y.service" ]; "/b".before = [ "x.service" ];
            }"#
        )
        .unwrap(),
        serde_json::json!(["x.service", "y.service"])
    );
}
