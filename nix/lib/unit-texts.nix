# `config.systemd.units` -> { "<unit name>" = { text; wantedBy; requiredBy; aliases; }; }
#
# The harness passes this file's text verbatim as `nix eval --json --apply` on
# `config.systemd.units` (harness/target/nix.rs, UNIT_TEXTS_APPLY), so it may use only
# builtins. NixOS writes no [Install] section into a unit's text: it links the unit into
# `X.wants/` for each `wantedBy`, so those lists come along for `coldboot analyze` to
# know what the boot pulls in. Disabled units and units without generated text
# (upstream units that NixOS only enables) are left out: there is no unit file to parse.
units:
builtins.mapAttrs
  (name: unit: {
    inherit (unit) text;
    wantedBy = unit.wantedBy or [ ];
    requiredBy = unit.requiredBy or [ ];
    aliases = unit.aliases or [ ];
  })
  (
    builtins.removeAttrs units (
      builtins.filter
        (name: !(units.${name}.enable or true) || (units.${name}.text or null) == null)
        (builtins.attrNames units)
    )
  )
