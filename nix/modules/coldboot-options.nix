# The coldboot options a target declares: its health gates and its named faults.
# Declarations only: importing this module changes nothing in the system. Both the guest
# adapter (coldboot-guest.nix) and a target's own modules (ccci-model.nix) import it, so a
# target can declare its gates and faults whether or not the adapter is added.
#
# `key` makes the module system import it once however many copies are imported: a
# target flake's own coldboot input and the harness's checkout are different store paths,
# and two declarations of one option fail ("already declared"). The first copy imported
# wins, so both should be the same coldboot revision.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  coldboot = import ../lib/coldboot.nix;
in
{
  key = "coldboot-options";

  options.coldboot = {
    gates = mkOption {
      default = { };
      description = ''
        Health gates: `coldboot.gates."<unit>" = { url; servedBy; }` says that the start
        job of <unit> does not finish until `url` answers, and that unit `servedBy`
        serves it. systemd cannot see this dependency; coldboot's wait-cycle checks
        (live, and `coldboot analyze`) read it from here.
      '';
      type = types.attrsOf (types.submodule {
        options = {
          url = mkOption { type = types.str; description = "The URL the unit's start polls until it answers healthy."; };
          servedBy = mkOption { type = types.str; description = "The unit that serves the URL."; };
        };
      });
    };

    faults = mkOption {
      default = { };
      description = ''
        Named faults a scenario may inject (`fault: NAME`):
        `coldboot.faults."<name>" = { doc; run; }`, where `run` is a shell command run
        in the guest as root before the boot that needs it.
      '';
      type = types.attrsOf (types.submodule {
        options = {
          doc = mkOption { type = types.str; default = ""; description = "What the fault does."; };
          run = mkOption { type = types.str; description = "The command that injects it."; };
        };
      });
    };

    secretStubs = mkOption {
      default = { };
      example = { "/run/secrets/drone-rpc-secret".before = [ "drone.service" ]; };
      description = ''
        Stand-ins for secrets the VM cannot decrypt (it has no sops-nix or agenix key):
        `coldboot.secretStubs."<absolute path>" = { content; mode; owner; group; before; }`.
        The guest adapter writes each file, unless a file is already there, in a oneshot
        service that runs before sysinit.target (so before every unit with default
        dependencies) and before the units in `before`, which also pull it in. Only the
        adapter acts on it: without the adapter, declaring stubs changes nothing.
      '';
      type = types.attrsOf (types.submodule {
        options = {
          content = mkOption { type = types.str; default = "coldboot-stub\n"; description = "What the file holds."; };
          mode = mkOption { type = types.strMatching "[0-7]{3,4}"; default = "0400"; description = "Its octal mode."; };
          owner = mkOption { type = types.str; default = "root"; description = "The user that owns it (a name or a uid)."; };
          group = mkOption { type = types.str; default = "root"; description = "Its group (a name or a gid)."; };
          before = mkOption {
            type = types.listOf types.str;
            default = [ ];
            description = "The units that read it: each starts after the stub is written, and pulls it in.";
          };
        };
      });
    };

    harness = mkOption {
      internal = true;
      readOnly = true;
      type = types.unspecified;
      description = "What the harness reads with `nix eval --json` (gates and faults).";
    };
  };

  config.coldboot.harness = coldboot.harnessInfo {
    inherit (config.coldboot) gates faults;
  };
}
