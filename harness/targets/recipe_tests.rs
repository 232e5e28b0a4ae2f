use super::*;

const GOOD: &str = r#"description: "test recipe"
suite: bookworm
packages: [systemd-sysv, openssh-server, dbus]
enable: [demo.service]
disk_size: 1G
kernel_args: [quiet]
variants:
  gate:
    doc: "which URL the gate polls"
    default: self
    values: [self, dashboard]
    files:
      /etc/demo/gate: "{value}\n"
  delay:
    default: "5"
    integer: true
    files:
      /etc/demo/delay: "DELAY={value}\n"
faults:
  broken:
    doc: "break it"
    run: "demo-break"
"#;

fn parse(text: &str) -> anyhow::Result<Recipe> {
    Recipe::parse(
        Path::new("vm-images/demo"),
        Path::new("vm-images/demo/recipe.yaml"),
        text,
    )
}

fn chosen(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn good_recipe_parses() {
    let r = parse(GOOD).unwrap();
    assert_eq!(r.suite, "bookworm");
    assert_eq!(r.packages, ["systemd-sysv", "openssh-server", "dbus"]);
    assert_eq!(r.enable, ["demo.service"]);
    assert_eq!(r.disk_size_bytes, 1 << 30);
    assert_eq!(r.kernel_args, ["quiet"]);
    assert_eq!(r.variants["gate"].values, ["self", "dashboard"]);
    assert!(r.variants["delay"].integer);
    assert_eq!(r.faults["broken"].run, "demo-break");
}

#[test]
fn defaults_apply_when_optional_fields_are_missing() {
    let r = parse("suite: bookworm\npackages: [openssh-server]\n").unwrap();
    assert_eq!(r.disk_size_bytes, 2 << 30);
    assert!(r.enable.is_empty() && r.variants.is_empty() && r.faults.is_empty());
}

#[test]
fn unknown_field_names_file_line_column_and_field() {
    let text = "suite: bookworm\npackages: [openssh-server]\n  \nextra_thing: 3\n";
    let msg = parse(text).unwrap_err().to_string();
    assert!(msg.starts_with("vm-images/demo/recipe.yaml:4:1:"), "{msg}");
    assert!(msg.contains("extra_thing"), "{msg}");
}

#[test]
fn unknown_field_inside_a_variant_is_located() {
    let text = GOOD.replace(
        "    default: self\n",
        "    default: self\n    colour: red\n",
    );
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.starts_with("vm-images/demo/recipe.yaml:11:5:"), "{msg}");
    assert!(msg.contains("colour"), "{msg}");
}

#[test]
fn wrong_type_is_located() {
    let msg = parse("suite: bookworm\npackages: openssh-server\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("vm-images/demo/recipe.yaml:2:"), "{msg}");
}

#[test]
fn missing_openssh_server_is_an_error_at_packages() {
    let err = parse("suite: bookworm\npackages: [dbus]\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("vm-images/demo/recipe.yaml:2:11:"), "{msg}");
    assert!(
        msg.contains("openssh-server") && msg.contains("`packages`"),
        "{msg}"
    );
    assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
}

#[test]
fn bad_default_and_bad_rules_are_rejected() {
    let bad_default = GOOD.replace("default: self", "default: other");
    let msg = parse(&bad_default).unwrap_err().to_string();
    assert!(
        msg.contains("variant `gate`") && msg.contains("\"other\""),
        "{msg}"
    );
    let both = GOOD.replace("integer: true", "integer: true\n    values: [\"1\"]");
    assert!(parse(&both).unwrap_err().to_string().contains("not both"));
    let relative = GOOD.replace("/etc/demo/gate:", "etc/demo/gate:");
    assert!(
        parse(&relative)
            .unwrap_err()
            .to_string()
            .contains("absolute")
    );
}

#[test]
fn bad_unit_and_size_are_rejected() {
    let unit = GOOD.replace("[demo.service]", "[demo]");
    assert!(parse(&unit).unwrap_err().to_string().contains("`enable`"));
    let size = GOOD.replace("disk_size: 1G", "disk_size: huge");
    let msg = parse(&size).unwrap_err().to_string();
    assert!(msg.starts_with("vm-images/demo/recipe.yaml:5:"), "{msg}");
}

#[test]
fn variants_resolve_with_defaults() {
    let r = parse(GOOD).unwrap();
    let all = r.resolve_variants(&BTreeMap::new()).unwrap();
    assert_eq!(all, chosen(&[("delay", "5"), ("gate", "self")]));
    let some = r
        .resolve_variants(&chosen(&[("gate", "dashboard")]))
        .unwrap();
    assert_eq!(some, chosen(&[("delay", "5"), ("gate", "dashboard")]));
    let num = r.resolve_variants(&chosen(&[("delay", "-30")])).unwrap();
    assert_eq!(num["delay"], "-30");
}

#[test]
fn unknown_variant_key_names_it_and_lists_known_ones() {
    let r = parse(GOOD).unwrap();
    let err = r
        .resolve_variants(&chosen(&[("gaet", "self")]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"gaet\"") && msg.contains("known variants: delay, gate"),
        "{msg}"
    );
    assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
}

#[test]
fn variant_values_are_checked() {
    let r = parse(GOOD).unwrap();
    let msg = r
        .resolve_variants(&chosen(&[("gate", "x")]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("gate=x") && msg.contains("self, dashboard"),
        "{msg}"
    );
    let msg = r
        .resolve_variants(&chosen(&[("delay", "soon")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not an integer"), "{msg}");
}

#[test]
fn variant_files_substitute_value() {
    let r = parse(GOOD).unwrap();
    let resolved = r
        .resolve_variants(&chosen(&[("gate", "dashboard")]))
        .unwrap();
    let files = r.variant_files(&resolved);
    assert_eq!(files["/etc/demo/gate"], "dashboard\n");
    assert_eq!(files["/etc/demo/delay"], "DELAY=5\n");
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("2G"), Some(2 << 30));
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size("1k"), None, "too small");
    assert_eq!(parse_size("G"), None);
    assert_eq!(parse_size("99999999999T"), None);
}

#[test]
fn the_model_declares_its_gate_per_variant_value() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-images/ccci-model");
    let recipe = Recipe::load(&dir).unwrap();
    let gate_for = |value: &str| {
        let resolved = recipe
            .resolve_variants(&chosen(&[("gate", value)]))
            .unwrap();
        recipe.gates(&resolved)
    };
    let old = gate_for("dashboard");
    assert_eq!(old.len(), 1);
    assert_eq!(
        (
            old[0].unit.as_str(),
            old[0].url.as_str(),
            old[0].served_by.as_str()
        ),
        (
            "deploy-proxy.service",
            "https://ci.commoninternet.net/",
            "deploy-dashboard.service"
        )
    );
    let fixed = gate_for("self");
    assert_eq!(
        (fixed[0].url.as_str(), fixed[0].served_by.as_str()),
        ("http://127.0.0.1:8082/ping", "traefik.service")
    );
}

#[test]
fn gates_for_an_unknown_value_or_with_a_bad_url_are_located() {
    let text = GOOD.replace(
        "      /etc/demo/gate: \"{value}\\n\"\n",
        "      /etc/demo/gate: \"{value}\\n\"\n    gates:\n      sideways:\n        a.service: {url: \"http://x/\", served_by: b.service}\n",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("recipe.yaml:") && err.contains("\"sideways\""),
        "{err}"
    );
    let text = format!("{GOOD}gates:\n  a.service: {{url: \"not a url\", served_by: b.service}}\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("recipe.yaml:") && err.contains("not a URL"),
        "{err}"
    );
}

#[test]
fn integer_variants_take_a_range() {
    let ranged = GOOD.replace("integer: true", "integer: true\n    min: 1\n    max: 60");
    let r = parse(&ranged).unwrap();
    assert_eq!(
        (r.variants["delay"].min, r.variants["delay"].max),
        (Some(1), Some(60))
    );
    r.resolve_variants(&chosen(&[("delay", "60")])).unwrap();
    for bad in ["-1", "0", "61", "99999999999999999999"] {
        let msg = r
            .resolve_variants(&chosen(&[("delay", bad)]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("delay={bad}")) && msg.contains("from 1 to 60"),
            "{bad}: {msg}"
        );
    }
    let only_min = GOOD.replace("integer: true", "integer: true\n    min: 1");
    let msg = parse(&only_min)
        .unwrap()
        .resolve_variants(&chosen(&[("delay", "-1")]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("out of range (expected an integer of at least 1)"),
        "{msg}"
    );
}

#[test]
fn a_range_must_make_sense() {
    let upside_down = GOOD.replace("integer: true", "integer: true\n    min: 10\n    max: 2");
    let msg = parse(&upside_down).unwrap_err().to_string();
    assert!(msg.contains("`min` (10) is above `max` (2)"), "{msg}");
    let default_outside = GOOD.replace("integer: true", "integer: true\n    min: 10");
    let msg = parse(&default_outside).unwrap_err().to_string();
    assert!(msg.contains("field `default`: 5 is out of range"), "{msg}");
    let not_integer = GOOD.replace(
        "values: [self, dashboard]",
        "values: [self, dashboard]\n    max: 3",
    );
    let msg = parse(&not_integer).unwrap_err().to_string();
    assert!(msg.contains("add `integer: true`"), "{msg}");
}

#[test]
fn the_model_bounds_its_timeout() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-images/ccci-model");
    let r = Recipe::load(&dir).unwrap();
    for bad in ["-1", "0"] {
        assert!(
            r.resolve_variants(&chosen(&[("timeout", bad)])).is_err(),
            "{bad}"
        );
    }
    r.resolve_variants(&chosen(&[("timeout", "90")])).unwrap();
    r.resolve_variants(&chosen(&[("timeout", "900")])).unwrap();
}

#[test]
fn overlays_must_be_folders_relative_to_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("vm-images/demo");
    std::fs::create_dir_all(&recipe).unwrap();
    let file = recipe.join("recipe.yaml");
    let with = |overlays: &str| {
        let text = GOOD.replace("enable:", &format!("overlays: {overlays}\nenable:"));
        Recipe::parse(&recipe, &file, &text)
    };
    let e = with("[../../shared]").unwrap_err().to_string();
    assert!(
        e.contains("recipe.yaml:4:")
            && e.contains("field `overlays`")
            && e.contains("not a folder"),
        "{e}"
    );
    let e = with("[/etc]").unwrap_err().to_string();
    assert!(e.contains("relative to the recipe folder"), "{e}");
    std::fs::create_dir_all(dir.path().join("shared/usr")).unwrap();
    let r = with("[../../shared]").unwrap();
    assert_eq!(r.overlays, vec![recipe.join("../../shared")]);
}

#[test]
fn a_shared_overlay_is_part_of_the_image_key_under_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("vm-images/demo");
    let shared = dir.path().join("shared/usr/lib");
    std::fs::create_dir_all(&recipe).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    let text = GOOD.replace("enable:", "overlays: [../../shared]\nenable:");
    std::fs::write(recipe.join("recipe.yaml"), &text).unwrap();
    std::fs::write(shared.join("tool"), "v1").unwrap();
    let key = || {
        let r = Recipe::load(&recipe).unwrap();
        let entries = crate::targets::image_entries(&r).unwrap();
        let rels: Vec<String> = entries.iter().map(|e| e.rel.clone()).collect();
        (
            crate::targets::cache::image_key("R", &entries, &BTreeMap::new()),
            rels,
        )
    };
    let (before, rels) = key();
    assert!(
        rels.contains(&"overlays/0/usr/lib/tool".to_string()),
        "{rels:?}"
    );
    std::fs::write(shared.join("tool"), "v2").unwrap();
    assert_ne!(
        key().0,
        before,
        "a change in the shared folder makes a new image"
    );
}

#[test]
fn the_model_takes_its_scripts_from_the_nix_folder() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-images/ccci-model");
    let recipe = Recipe::load(&dir).unwrap();
    assert_eq!(recipe.overlays, vec![dir.join("../../nix/model")]);
    let entries = crate::targets::image_entries(&recipe).unwrap();
    for script in [
        "overlays/0/usr/lib/ccci-model/reconcile-proxy",
        "overlays/0/usr/local/bin/ccci-model-set-latest",
        "overlays/0/usr/share/ccci-model/dashboard/Caddyfile",
    ] {
        assert!(entries.iter().any(|e| e.rel == script), "{script}");
    }
}
