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

  # A plain absolute path: no empty, `.` or `..` component, no trailing `/`, one line.
  isPlainAbsolutePath = path:
    builtins.match "(/[^/\n]+)+" path != null
    && builtins.match "(.*/)?\\.\\.?(/.*)?" path == null;

  # A single-quoted sh word.
  shellQuote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  checkSecretStub = path: stub:
    let where = "coldboot.secretStubs.${builtins.toJSON path}"; in
    if !isPlainAbsolutePath path then
      throw "${where}: not a plain absolute path (/dir/file, no . or .. components)"
    else if builtins.match "[0-7]{3,4}" stub.mode == null then
      throw "${where}.mode: ${builtins.toJSON stub.mode} is not an octal mode such as 0400"
    else if builtins.match "[^:[:space:]]+" stub.owner == null || builtins.match "[^:[:space:]]+" stub.group == null then
      throw "${where}: owner and group must be user and group names or ids"
    else if !builtins.all isUnitName stub.before then
      throw "${where}.before: ${builtins.toJSON stub.before} names something that is not a systemd unit"
    else stub;

  # A stub's line of the script: `stub PATH CONTENT OWNER:GROUP MODE`.
  stubCall = path: stub:
    "stub ${shellQuote path} ${shellQuote stub.content} ${shellQuote "${stub.owner}:${stub.group}"} ${stub.mode}\n";
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

  # `coldboot.secretStubs` -> the sh script that writes every stub file (the adapter runs
  # it before the units that read them). A bad declaration stops the evaluation with its
  # option path. A file already there (a real secret) is left alone; `rm -f` first, as a
  # secret manager may have left a link to nothing. One stub that cannot be written does
  # not keep the others from being written; the script then exits 1.
  secretStubScript = stubs:
    let checked = builtins.mapAttrs checkSecretStub stubs; in
    ''
      set -u
      failed=0
      stub() {
        if [ -e "$1" ]; then
          echo "coldboot: $1 exists, not stubbed"
          return 0
        fi
        rm -f "$1" &&
          (umask 022 && mkdir -p "$(dirname "$1")") &&
          (umask 077 && printf '%s' "$2" > "$1") &&
          chown "$3" "$1" && chmod "$4" "$1" &&
          echo "coldboot: stub at $1" ||
          { echo "coldboot: could not write the stub at $1" >&2; failed=1; }
      }
    ''
    + builtins.concatStringsSep "" (
      map (path: stubCall path checked.${path}) (builtins.attrNames checked)
    )
    + "exit $failed\n";

  # The units that read a stubbed secret (each stub's `before`), each once.
  secretStubUnits = stubs:
    builtins.foldl' (acc: u: if builtins.elem u acc then acc else acc ++ [ u ]) [ ]
      (builtins.concatMap (path: stubs.${path}.before) (builtins.attrNames stubs));

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
  # harness/targets/adapter/authorized-key).
  authorizedKeyLine = blob:
    if blob != "" && builtins.match "[A-Za-z0-9+/=]+" blob != null
    then "ssh-ed25519 ${blob} coldboot-harness"
    else null;
}
