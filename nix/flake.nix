{
  description = "coldboot: the guest adapter for any NixOS configuration, the cc-ci model as NixOS configurations, and the wrapper the harness builds through";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";
    # The flake under test. The harness always replaces it:
    #   nix build --override-input target FLAKEREF PATH/nix#coldbootTargets.NAME...
    # Its default follows nixpkgs, which has no nixosConfigurations, so the wrapper is
    # empty until a target is given.
    target.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, target, ... }:
    let
      system = "x86_64-linux";

      # What a bootable configuration needs outside a VM. `system.build.vm` replaces the
      # file systems with its own disk (qemu-vm.nix, virtualisation.fileSystems).
      base = {
        fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
        boot.loader.grub.device = "nodev";
        networking.hostName = "ccci-model";
        system.stateVersion = "24.05";
      };

      model = settings: nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [ self.nixosModules.ccci-model base { ccciModel = settings; } ];
      };
    in
    {
      nixosModules = {
        coldboot-guest = ./modules/coldboot-guest.nix;
        coldboot-options = ./modules/coldboot-options.nix;
        ccci-model = ./modules/ccci-model.nix;
      };

      # The model of cc-ci before and after the pxgate fix. `before` has the old gate at
      # cc-ci's real TimeoutStartSec=900, as scenarios/plans/m1.yaml gives the recipe's
      # before-target: coldboot names the wait cycle instead of waiting for it.
      nixosConfigurations = {
        ccci-model-before = model { gate = "dashboard"; timeout = 900; };
        ccci-model-after = model { gate = "self"; };
      };

      lib = {
        # Any NixOS configuration (the result of nixosSystem), with the coldboot guest
        # adapter added. The configuration's own modules are not touched.
        withColdboot = configuration:
          configuration.extendModules { modules = [ self.nixosModules.coldboot-guest ]; };

        # The pure functions the modules use (no nixpkgs needed).
        coldboot = import ./lib/coldboot.nix;
      };

      # What the harness builds and evaluates: every configuration of the target flake,
      # with the adapter added. For example
      #   coldbootTargets.NAME.config.system.build.vm   (bin/run-HOSTNAME-vm)
      #   coldbootTargets.NAME.config.coldboot.harness  (gates and faults, as JSON)
      #   coldbootTargets.NAME.config.systemd.units     (unit texts, for `coldboot analyze`)
      coldbootTargets = builtins.mapAttrs (name: self.lib.withColdboot)
        (target.nixosConfigurations or { });
    };
}
