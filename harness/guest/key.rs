//! The per-run SSH keys: generated in memory for each run. The client key is handed
//! to the guest on the kernel command line (public half only); the guest's host key is
//! handed to it through QEMU's fw_cfg, which only root in the guest can read, so the
//! harness can check on connect that it talks to the guest it started.
//!
//! A fresh key per run means no long-lived secret exists anywhere; the private client
//! key never touches a run folder or the evidence. The private host key exists on the
//! host only in a 0600 temporary file outside the run folder while the VM lives (QEMU
//! reads fw_cfg files at start, and again at each power cycle).

use std::fmt;
use std::ops::Deref;

use anyhow::Context as _;
use base64::Engine as _;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, rand_core::OsRng};

/// Kernel command line parameter read by the guest's `coldboot-authorized-key.service`.
pub const KERNEL_PARAM: &str = "coldboot.authorized_key";

/// The fw_cfg entry that carries the guest's private host key (OpenSSH format), read by
/// the guest's `coldboot-host-key.service` from
/// `/sys/firmware/qemu_fw_cfg/by_name/opt/coldboot/ssh_host_ed25519_key/raw`.
pub const HOST_KEY_FW_CFG: &str = "opt/coldboot/ssh_host_ed25519_key";

/// Comment the guest puts after the key in `/root/.ssh/authorized_keys`.
pub const KEY_COMMENT: &str = "coldboot";

/// The per-run keys: the client key the harness logs in with, and the host key the
/// guest must present (both ed25519, in memory; the private keys zeroize on drop).
#[derive(Clone)]
pub struct SshKey {
    private: PrivateKey,
    host: PrivateKey,
    host_key_required: bool,
}

impl SshKey {
    /// Generate a fresh ed25519 key from the OS random source.
    pub fn generate() -> anyhow::Result<Self> {
        let mut private = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .map_err(|e| crate::error::infra(format!("cannot generate an ed25519 key: {e}")))?;
        private.set_comment(KEY_COMMENT);
        let mut host = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .map_err(|e| crate::error::infra(format!("cannot generate an ed25519 key: {e}")))?;
        host.set_comment("coldboot-guest");
        Ok(SshKey {
            private,
            host,
            host_key_required: true,
        })
    }

    /// Whether the guest must present this run's host key (the default). Targets whose
    /// image may lack the coldboot adapter (`image:`) set `false`: the harness still
    /// offers the key, records whether the guest took it, and says so when it did not.
    pub fn require_host_key(mut self, required: bool) -> Self {
        self.host_key_required = required;
        self
    }

    /// See [`SshKey::require_host_key`].
    pub fn host_key_required(&self) -> bool {
        self.host_key_required
    }

    /// The guest's host public key blob (SSH wire format), as the server sends it.
    pub fn host_public_blob(&self) -> Vec<u8> {
        self.host.public_key().to_bytes().unwrap_or_default()
    }

    /// SHA-256 fingerprint of the guest's host key (`SHA256:...`).
    pub fn host_fingerprint(&self) -> String {
        self.host
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The guest's private host key in OpenSSH format, for the fw_cfg file only.
    pub(crate) fn host_private_openssh(
        &self,
    ) -> anyhow::Result<impl Deref<Target = String> + use<>> {
        self.host
            .to_openssh(LineEnding::LF)
            .context("cannot encode the per-run host key")
    }

    /// The public key blob (SSH wire format), as it appears base64-encoded in
    /// `authorized_keys`.
    pub fn public_blob(&self) -> Vec<u8> {
        // Encoding an ed25519 public key into a Vec cannot fail (fixed 51 bytes).
        self.private.public_key().to_bytes().unwrap_or_default()
    }

    /// The public key in OpenSSH one-line format: `ssh-ed25519 AAAA... coldboot`.
    pub fn public_openssh(&self) -> String {
        format!(
            "{} {} {KEY_COMMENT}",
            Algorithm::Ed25519.as_str(),
            self.public_blob_base64()
        )
    }

    /// The kernel argument that authorizes this key for root in the guest:
    /// `coldboot.authorized_key=<base64 blob>` (no spaces, so it is one argument).
    pub fn kernel_arg(&self) -> String {
        format!("{KERNEL_PARAM}={}", self.public_blob_base64())
    }

    /// SHA-256 fingerprint of the public key (`SHA256:...`), safe to record as evidence.
    pub fn fingerprint(&self) -> String {
        self.private
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The private key in OpenSSH PEM format. Kept inside the crate: callers hand it to
    /// libssh2 in memory or to a short-lived 0600 file in a 0700 temporary folder.
    /// The returned buffer is zeroized when dropped.
    pub(crate) fn private_openssh(&self) -> anyhow::Result<impl Deref<Target = String> + use<>> {
        self.private
            .to_openssh(LineEnding::LF)
            .context("cannot encode the per-run private key")
    }

    /// Every form in which this run's private keys could show up in text: each key's
    /// OpenSSH PEM block, each base64 line of it and the whole base64 body on one line,
    /// and the raw ed25519 secret (the 32-byte seed and the 64-byte keypair) in base64,
    /// padded or not. The evidence redactor replaces all of them.
    pub(crate) fn secret_forms(&self) -> Vec<String> {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        let mut forms = Vec::new();
        for key in [&self.private, &self.host] {
            if let Ok(pem) = key.to_openssh(LineEnding::LF) {
                let body: Vec<&str> = pem
                    .lines()
                    .filter(|l| !l.starts_with("-----") && !l.is_empty())
                    .collect();
                forms.push(body.concat());
                forms.extend(body.iter().map(|l| l.to_string()));
                forms.push(pem.trim_end().to_string());
            }
            if let Some(kp) = key.key_data().ed25519() {
                let seed = kp.private.to_bytes();
                let pair = kp.to_bytes();
                for bytes in [&seed[..], &pair[..]] {
                    forms.push(STANDARD.encode(bytes));
                    forms.push(STANDARD_NO_PAD.encode(bytes));
                }
            }
        }
        forms
    }

    fn public_blob_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public_blob())
    }
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKey")
            .field("public", &self.public_openssh())
            .field("private", &"<redacted>")
            .field("host", &self.host_fingerprint())
            .field("host_key_required", &self.host_key_required)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_arg_is_one_word_with_the_public_blob() {
        let key = SshKey::generate().unwrap();
        let arg = key.kernel_arg();
        assert!(!arg.contains(char::is_whitespace), "{arg}");
        let b64 = arg.strip_prefix("coldboot.authorized_key=").unwrap();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let parsed = ssh_key::PublicKey::from_bytes(&blob).unwrap();
        assert_eq!(parsed.algorithm(), Algorithm::Ed25519);
        assert_eq!(parsed.key_data(), key.private.public_key().key_data());
    }

    #[test]
    fn public_openssh_matches_what_the_guest_writes() {
        let key = SshKey::generate().unwrap();
        let line = key.public_openssh();
        let b64 = key.kernel_arg().split_once('=').unwrap().1.to_owned();
        assert_eq!(line, format!("ssh-ed25519 {b64} coldboot"));
        let parsed = ssh_key::PublicKey::from_openssh(&line).unwrap();
        assert_eq!(
            parsed.fingerprint(HashAlg::Sha256).to_string(),
            key.fingerprint()
        );
    }

    #[test]
    fn each_key_is_fresh() {
        let a = SshKey::generate().unwrap();
        let b = SshKey::generate().unwrap();
        assert_ne!(a.public_blob(), b.public_blob());
    }

    #[test]
    fn the_host_key_is_its_own_and_fresh() {
        let a = SshKey::generate().unwrap();
        let b = SshKey::generate().unwrap();
        assert_ne!(a.host_public_blob(), a.public_blob());
        assert_ne!(a.host_public_blob(), b.host_public_blob());
        let pem = a.host_private_openssh().unwrap();
        let parsed = PrivateKey::from_openssh(pem.as_bytes()).unwrap();
        assert_eq!(
            parsed.public_key().to_bytes().unwrap(),
            a.host_public_blob()
        );
        assert!(a.host_key_required());
        assert!(!a.require_host_key(false).host_key_required());
    }

    #[test]
    fn debug_redacts_the_private_key() {
        let key = SshKey::generate().unwrap();
        let pem = key.private_openssh().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("PRIVATE KEY"));
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!shown.contains(&body));
        let host = key.host_private_openssh().unwrap();
        let body: String = host.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!shown.contains(&body));
    }
}
