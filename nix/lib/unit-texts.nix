# `config.systemd.units` -> { "<unit name>" = "<generated unit file text>"; }
#
# The harness passes this file's text verbatim as `nix eval --json --apply` on
# `config.systemd.units` (harness/target/nix.rs, UNIT_TEXTS_APPLY), so it may use only
# builtins. Disabled units and units without generated text (upstream units that NixOS
# only enables) are left out: there is no unit file to parse for them.
units:
builtins.mapAttrs (name: unit: unit.text) (
  builtins.removeAttrs units (
    builtins.filter
      (name: !(units.${name}.enable or true) || (units.${name}.text or null) == null)
      (builtins.attrNames units)
  )
)
