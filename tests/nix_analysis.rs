//! NixOS unit texts, as `nix eval` gives them, read into unit sources and analysed:
//! the static wait-cycle analysis over a flake's units, from recorded evaluations
//! (tests/fixtures/nix/), without nix.

use std::path::Path;

use coldboot::check::analyze::analyze;
use coldboot::targets::Gate;
use coldboot::targets::nix::{parse_unit_texts, unit_sources};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nix")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn unit_texts_recorded_with_nix_2_8() {
    let units = parse_unit_texts(&fixture("eval-units.json")).unwrap();
    assert_eq!(
        units.keys().collect::<Vec<_>>(),
        ["deploy-dashboard.service", "deploy-proxy.service"]
    );
    let dash = &units["deploy-dashboard.service"];
    assert!(dash.text.contains("After=deploy-proxy.service"));
    assert_eq!(dash.wanted_by, ["multi-user.target"]);
    assert!(parse_unit_texts(r#"{"a.service":"[Unit]\n"}"#).is_err());
    // As analyze sees them: the model's two units, the gate closes the cycle.
    let src = unit_sources(&units, "multi-user.target");
    assert_eq!(
        src.canonical("dashboard.service"),
        "deploy-dashboard.service"
    );
    let gate = Gate {
        unit: "deploy-proxy.service".into(),
        url: "https://ci.commoninternet.net/".into(),
        served_by: "deploy-dashboard.service".into(),
    };
    let a = analyze(&src, &[gate]);
    assert_eq!(a.cycles.len(), 1, "{}", a.render("nix"));
    assert!(a.gates[0].served_after_gated);
}

/// Texts as current nixpkgs writes them (`[Install]` `WantedBy=`) and an `upheldBy`:
/// `eval-units-current.json` is shaped after nixpkgs' systemd-lib.nix, since no NixOS
/// evaluation runs here (tests/fixtures/nix/README.md).
#[test]
fn unit_texts_with_install_sections_and_upheld_by() {
    let units = parse_unit_texts(&fixture("eval-units-current.json")).unwrap();
    let proxy = &units["deploy-proxy.service"];
    assert!(
        proxy
            .text
            .ends_with("[Install]\nWantedBy=multi-user.target\n")
    );
    assert_eq!(units["traefik.service"].upheld_by, ["deploy-proxy.service"]);
    let src = unit_sources(&units, "multi-user.target");
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    // One link per list entry; the [Install] lines add none.
    assert_eq!(
        src.wants,
        [
            pair("multi-user.target", "deploy-dashboard.service"),
            pair("multi-user.target", "deploy-proxy.service"),
        ]
        .into()
    );
    assert_eq!(
        src.upholds,
        [pair("deploy-proxy.service", "traefik.service")].into()
    );
    // The [Install] sections change nothing in the analysis: the same result as the
    // same texts without them.
    let mut stripped = src.clone();
    for text in stripped.files.values_mut() {
        if let Some(at) = text.find("\n[Install]\n") {
            text.truncate(at + 1);
        }
    }
    assert_ne!(stripped.files, src.files);
    let old_gate = Gate {
        unit: "deploy-proxy.service".into(),
        url: "https://ci.commoninternet.net/".into(),
        served_by: "deploy-dashboard.service".into(),
    };
    let a = analyze(&src, std::slice::from_ref(&old_gate));
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(analyze(&stripped, &[old_gate])).unwrap()
    );
    assert_eq!(
        a.cycles.iter().map(|c| c.kind).collect::<Vec<_>>(),
        ["wait"],
        "{}",
        a.render("nix")
    );
    // traefik reaches the boot only through deploy-proxy.upholds/: a traefik ordered
    // after deploy-proxy, gating deploy-proxy, is a wait cycle, found through the link.
    let new_gate = Gate {
        unit: "deploy-proxy.service".into(),
        url: "http://127.0.0.1:8082/ping".into(),
        served_by: "traefik.service".into(),
    };
    let mut late = src.clone();
    late.dropins.insert(
        "traefik.service".into(),
        vec![(
            "late.conf".into(),
            "[Unit]\nAfter=deploy-proxy.service\n".into(),
        )],
    );
    let found = analyze(&late, std::slice::from_ref(&new_gate));
    assert_eq!(found.cycles.len(), 1, "{}", found.render("nix"));
    assert!(found.cycles[0].cycle.units().contains(&"traefik.service"));
    late.upholds.clear();
    let without = analyze(&late, &[new_gate]);
    assert!(!without.has_cycle(), "{}", without.render("nix"));
    assert_eq!(without.units_in_boot + 1, found.units_in_boot);
}
