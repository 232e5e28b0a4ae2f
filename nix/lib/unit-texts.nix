# `config.systemd.units` ->
#   { "<unit name>" = { text; wantedBy; requiredBy; upheldBy; aliases; }; }
#
# The harness passes this file's text verbatim as `nix eval --json --apply` on
# `config.systemd.units` (harness/targets/nix.rs, UNIT_TEXTS_APPLY), so it may use only
# builtins. What the boot pulls in is the links NixOS makes (systemd-lib.nix,
# generateUnits): `X.wants/` for each `wantedBy`, `X.requires/` for each `requiredBy`,
# `X.upholds/` for each `upheldBy`, so those lists come along for `coldboot analyze`.
# Recent nixpkgs (PR #266370) also writes `[Install]` with `WantedBy=` into the text;
# systemd does not read [Install] at boot, and neither does analyze, so an edge is never
# counted twice. `or [ ]`: older nixpkgs has no `upheldBy`. Disabled units and units
# without generated text (upstream units that NixOS only enables) are left out: there is
# no unit file to parse.
units:
builtins.mapAttrs
  (name: unit: {
    inherit (unit) text;
    wantedBy = unit.wantedBy or [ ];
    requiredBy = unit.requiredBy or [ ];
    upheldBy = unit.upheldBy or [ ];
    aliases = unit.aliases or [ ];
  })
  (
    builtins.removeAttrs units (
      builtins.filter
        (name: !(units.${name}.enable or true) || (units.${name}.text or null) == null)
        (builtins.attrNames units)
    )
  )
