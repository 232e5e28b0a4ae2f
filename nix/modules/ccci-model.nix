# The cc-ci control-plane model as a NixOS module: the same unit names, gate variants,
# recipe versions, faults and decision lines as vm-images/ccci-model (see its README).
# The scripts and Caddyfiles live in ../model/ (the recipe copies the same folder into
# its image through `overlays:`), installed at the paths they expect. They are inside
# nix/ because Nix copies only this folder: a path out of it fails in pure evaluation
# whenever nix/ is not part of a whole git checkout.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.ccciModel;
  coldboot = import ../lib/coldboot.nix;
  overlay = ../model;

  # The model's file tree, as a store path the units and tmpfiles point at.
  files = pkgs.runCommand "ccci-model-files" { } ''
    mkdir -p $out/lib $out/bin $out/share
    cp -r ${overlay}/usr/share/ccci-model $out/share/ccci-model
    cp -r ${overlay}/usr/lib/ccci-model $out/lib/ccci-model
    install -m 0755 ${overlay}/usr/local/bin/ccci-model-set-latest $out/bin/ccci-model-set-latest
  '';

  caddyEnv = name: [
    "HOME=/var/lib/ccci-model/${name}"
    "XDG_DATA_HOME=/var/lib/ccci-model/${name}/data"
    "XDG_CONFIG_HOME=/var/lib/ccci-model/${name}/config"
  ];

  consumers = [ "drone" "warm-keycloak" "reports" "bridge" "backupbot" "nightly-sweep" ];
  droneSecret = "/run/secrets/drone-rpc-secret";
in
{
  imports = [ ./coldboot-options.nix ];

  options.ccciModel = {
    gate = mkOption {
      type = types.enum [ "self" "dashboard" ];
      default = "self";
      description = "What deploy-proxy's gate polls: self = the proxy's own /ping (the fix), dashboard = https://ci.commoninternet.net/ (the old gate).";
    };
    timeout = mkOption {
      type = types.ints.positive;
      default = 900;
      description = "deploy-proxy.service TimeoutStartSec in seconds (cc-ci: 900).";
    };
    window = mkOption {
      type = types.ints.positive;
      default = 60;
      description = "Seconds the gate=self health gate polls before it rolls back.";
    };
  };

  config = {
    environment.systemPackages = [ files pkgs.curl pkgs.caddy ];
    environment.etc."ccci-model/gate".text = "${cfg.gate}\n";
    environment.etc."ccci-model/window".text = "${toString cfg.window}\n";

    # The scripts use the recipe's absolute paths; link them in place.
    systemd.tmpfiles.rules = [
      "L+ /usr/share/ccci-model - - - - ${files}/share/ccci-model"
      "L+ /usr/lib/ccci-model - - - - ${files}/lib/ccci-model"
      "d /var/lib/ccci-model 0755 root root -"
      "f /var/lib/ccci-model/latest 0644 root root - v1"
    ];

    # The control plane's public names resolve to this guest (the recipe's /etc/hosts).
    networking.extraHosts = "127.0.0.1 ci.commoninternet.net traefik.ci.commoninternet.net";

    systemd.services = {
      deploy-proxy = {
        description = "Deploy the traefik proxy (reconcile latest, health-gate, commit or roll back)";
        wantedBy = [ "multi-user.target" ];
        path = [ pkgs.coreutils pkgs.curl pkgs.systemd ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${pkgs.runtimeShell} ${files}/lib/ccci-model/reconcile-proxy";
          SyslogIdentifier = "reconcile-proxy";
          TimeoutStartSec = cfg.timeout;
        };
      };
      # Only deploy-proxy's reconciler starts it (no wantedBy), as in the recipe.
      traefik = {
        description = "traefik stand-in (Caddy), started only by deploy-proxy's reconciler";
        serviceConfig = {
          Type = "exec";
          ExecStart = "${pkgs.caddy}/bin/caddy run --config /run/ccci-model/traefik/Caddyfile --adapter caddyfile";
          Environment = caddyEnv "traefik";
          TimeoutStopSec = 5;
        };
      };
      deploy-dashboard = {
        description = "cc-ci dashboard (serves ci.commoninternet.net behind the proxy)";
        after = [ "deploy-proxy.service" ];
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          Type = "notify";
          ExecStart = "${pkgs.caddy}/bin/caddy run --config ${files}/share/ccci-model/dashboard/Caddyfile --adapter caddyfile";
          Environment = caddyEnv "dashboard";
          TimeoutStopSec = 5;
        };
      };
    } // lib.genAttrs consumers (name: {
      description = "cc-ci ${name} (model consumer, After=deploy-proxy)";
      after = [ "deploy-proxy.service" ];
      wantedBy = [ "multi-user.target" ];
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "exec";
        ExecStart = "${pkgs.runtimeShell} ${files}/lib/ccci-model/consumer ${name}";
      } // lib.optionalAttrs (name == "drone") {
        # A CI server reads its RPC secret, which a real control plane decrypts at boot
        # (sops-nix, agenix), and does not start without it. NixOS model only: the
        # Debian recipe has no secret.
        ExecStartPre = "${pkgs.runtimeShell} -c 'cat ${droneSecret} > /dev/null'";
      };
    });

    # The VM has no key to decrypt it: the adapter writes a stand-in first.
    coldboot.secretStubs.${droneSecret}.before = [ "drone.service" ];

    coldboot.gates = coldboot.ccciModelGates cfg.gate;
    coldboot.faults = {
      traefik-broken-crash = {
        doc = "latest proxy recipe version is broken-crash: its configuration does not load, nothing listens";
        run = "ccci-model-set-latest broken-crash";
      };
      traefik-broken-silent = {
        doc = "latest proxy recipe version is broken-silent: it listens on the same ports but /ping answers 503 and nothing routes";
        run = "ccci-model-set-latest broken-silent";
      };
      traefik-broken = {
        doc = "alias of traefik-broken-crash (the generic name scenarios use)";
        run = "ccci-model-set-latest broken-crash";
      };
    };
  };
}
