# Pure functions of the coldboot NixOS modules. They use builtins only (no nixpkgs), so
# `nix-instantiate --eval --strict --json` evaluates them with inputs written in a test
# (tests/nix_files.rs), on hosts that have no nixpkgs.
let
  # The unit types systemd knows (systemd.unit(5)); a gate names units, not services.
  unitSuffixes = [
    "service" "socket" "target" "device" "mount" "automount"
    "swap" "timer" "path" "slice" "scope"
  ];

  isUnitName = name:
    let parts = builtins.match "([A-Za-z0-9:_.@\\\\-]+)\\.([a-z]+)" name;
    in parts != null && builtins.elem (builtins.elemAt parts 1) unitSuffixes;

  isHttpUrl = url: builtins.match "https?://[^ ]+" url != null;

  checkGate = unit: gate:
    if !isUnitName unit then
      throw "coldboot.gates: ${builtins.toJSON unit} is not a systemd unit name"
    else if !isUnitName gate.servedBy then
      throw "coldboot.gates.${unit}.servedBy: ${builtins.toJSON gate.servedBy} is not a systemd unit name"
    else if !isHttpUrl gate.url then
      throw "coldboot.gates.${unit}.url: ${builtins.toJSON gate.url} is not an http(s) URL"
    else { inherit (gate) url servedBy; };

  checkFault = name: fault:
    if builtins.match "[a-z0-9][a-z0-9-]*" name == null then
      throw "coldboot.faults: ${builtins.toJSON name} is not a fault name (lower case, digits and -)"
    else if fault.run == "" then
      throw "coldboot.faults.${name}.run is empty"
    else { inherit (fault) doc run; };
in
{
  inherit isUnitName;

  # What the harness reads with `nix eval --json`:
  #   { gates = { "<unit>" = { url; servedBy; }; }; faults = { "<name>" = { doc; run; }; }; }
  # `gates` deserialises into the harness's BTreeMap<String, GateDecl>, `faults` into
  # BTreeMap<String, Fault>. Only the declared fields are passed on (the harness rejects
  # unknown fields), and a bad declaration stops the evaluation with its option path.
  harnessInfo = { gates ? { }, faults ? { } }: {
    gates = builtins.mapAttrs checkGate gates;
    faults = builtins.mapAttrs checkFault faults;
  };

  # The gate a ccci-model `gate` value gives deploy-proxy: the same data as the recipe's
  # `variants.gate.gates` in vm-images/ccci-model/recipe.yaml.
  ccciModelGates = gate:
    if gate == "self" then {
      "deploy-proxy.service" = { url = "http://127.0.0.1:8082/ping"; servedBy = "traefik.service"; };
    } else if gate == "dashboard" then {
      "deploy-proxy.service" = { url = "https://ci.commoninternet.net/"; servedBy = "deploy-dashboard.service"; };
    } else throw "ccciModel.gate: ${builtins.toJSON gate} is neither \"self\" nor \"dashboard\"";

  # The authorized_keys line the guest adapter writes for a `coldboot.authorized_key=`
  # value, or null when the value is not base64 (the same rule as the recipe adapter's
  # harness/target/adapter/authorized-key).
  authorizedKeyLine = blob:
    if blob != "" && builtins.match "[A-Za-z0-9+/=]+" blob != null
    then "ssh-ed25519 ${blob} coldboot-harness"
    else null;
}
