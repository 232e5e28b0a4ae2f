# The coldboot guest adapter as a NixOS module: the same contract as the recipe adapter
# (harness/targets/adapter/, whose scripts are the ones in ../adapter/). At boot it installs the per-run key given on the kernel
# command line (`coldboot.authorized_key=<base64 ed25519 public key blob>`) for root,
# before sshd starts, and the run's SSH host key from QEMU fw_cfg
# (`opt/coldboot/ssh_host_ed25519_key`, readable by root only), which sshd then uses
# alone and the harness checks on connect; sshd lets root in by key only; the console is
# on the serial port; the user-mode NIC gets DHCP; the recorder relays PID 1's private
# D-Bus socket to the harness over a virtio-serial port from early userspace; where the
# target declares `coldboot.secretStubs`, it writes those stand-in secret files. Nothing
# else in the system under test is changed.
#
# `lib.withColdboot` in flake.nix adds it to any NixOS configuration with
# `extendModules`, so a flake's own configuration is used unchanged.
{ config, lib, pkgs, ... }:
let
  coldboot = import ../lib/coldboot.nix;
  # `or { }`: a target's own, older copy of the options module (imported first, so the
  # one used) may not declare it.
  stubs = config.coldboot.secretStubs or { };
  stubUnits = coldboot.secretStubUnits stubs;
in
{
  imports = [ ./coldboot-options.nix ];

  config = {
    # The same script the recipe images run (one contract, one implementation).
    systemd.services.coldboot-authorized-key = {
      description = "coldboot: install the harness SSH key from the kernel command line";
      unitConfig = {
        DefaultDependencies = false;
        ConditionKernelCommandLine = "coldboot.authorized_key";
      };
      after = [ "local-fs.target" ];
      before = [ "sshd.service" "sysinit.target" ];
      wantedBy = [ "sysinit.target" "sshd.service" ];
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${pkgs.runtimeShell} ${../adapter/authorized-key}";
        StandardOutput = "journal+console";
      };
    };

    # The same script as the recipe images: the private host key from fw_cfg.
    systemd.services.coldboot-host-key = {
      description = "coldboot: install the run's SSH host key from QEMU fw_cfg";
      unitConfig.DefaultDependencies = false;
      after = [ "local-fs.target" "systemd-modules-load.service" ];
      before = [ "sshd.service" "sysinit.target" ];
      wantedBy = [ "sysinit.target" "sshd.service" ];
      path = [ pkgs.coreutils pkgs.kmod config.programs.ssh.package ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${pkgs.runtimeShell} ${../adapter/host-key}";
        StandardOutput = "journal+console";
      };
    };
    boot.kernelModules = [ "qemu_fw_cfg" "virtio_console" ];

    # The same recorder as the recipe images: PID 1's private D-Bus socket to the
    # harness over the virtio-serial port org.coldboot.bus, and the guest's TCP
    # connection attempts from the kernel's tracepoints over org.coldboot.net (QEMU_OPTS
    # from the harness adds both), from early userspace, before any network, sshd or
    # dbus-daemon.
    systemd.services.coldboot-recorder = {
      description = "coldboot: relay PID 1's job queue to the harness";
      unitConfig.DefaultDependencies = false;
      before = [ "sysinit.target" "shutdown.target" ];
      conflicts = [ "shutdown.target" ];
      wantedBy = [ "sysinit.target" ];
      # curl: the gate URLs that need TLS or a name, probed before SSH answers.
      path = [ pkgs.kmod pkgs.util-linux pkgs.curl ];
      serviceConfig = {
        Type = "simple";
        # First among the boot's services (PID 1 dispatches by priority, nice
        # included), and not starved while it starts.
        Nice = -20;
        ExecStart = "${pkgs.perl}/bin/perl ${../adapter/recorder}";
        StandardOutput = "journal+console";
      };
    };

    # Stand-ins for the secrets the VM cannot decrypt (coldboot.secretStubs): after the
    # file systems and tmpfiles (whose folders and owners come first), before sysinit.target
    # (so before every unit with default dependencies) and before the units that read them.
    systemd.services.coldboot-secret-stubs = lib.mkIf (stubs != { }) {
      description = "coldboot: stub files for secrets the VM cannot decrypt";
      unitConfig.DefaultDependencies = false;
      after = [ "local-fs.target" "systemd-tmpfiles-setup.service" ];
      before = [ "sysinit.target" ] ++ stubUnits;
      wantedBy = [ "sysinit.target" ] ++ stubUnits;
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${pkgs.writeShellScript "coldboot-secret-stubs" (coldboot.secretStubScript stubs)}";
        StandardOutput = "journal+console";
      };
    };

    services.openssh = {
      enable = true;
      # Only the run's key, so the harness's check means something.
      hostKeys = lib.mkForce [
        { path = "/run/coldboot/ssh_host_ed25519_key"; type = "ed25519"; }
      ];
      settings = {
        PermitRootLogin = "prohibit-password";
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        UseDns = false;
      };
    };

    # Only in the VM that `system.build.vm` makes (virtualisation/build-vm.nix): the
    # qemu-vm options exist there, and the real host's boot is untouched.
    virtualisation.vmVariant = {
      virtualisation.graphics = false;
      virtualisation.qemu.consoles = [ "ttyS0,115200n8" ];
      # The user-mode NIC (QEMU's slirp serves DHCP on 10.0.2.0/24).
      networking.useDHCP = lib.mkDefault true;
    };
  };
}
