//! SSH key material: fingerprints in GitLab's `fingerprint_sha256` form and
//! Ed25519 key generation, all in memory through `ssh-key` (no `ssh-keygen`,
//! no temporary files).

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an OpenSSH public key: {0}")]
    BadPublicKey(String),
    #[error("cannot generate an Ed25519 key: {0}")]
    Generate(String),
}

/// `SHA256:<unpadded base64>` of the key blob, exactly as GitLab reports
/// `fingerprint_sha256` (reference §1.3) and `ssh-keygen -lf` prints it.
pub fn fingerprint_of(openssh_public: &str) -> Result<String, KeyError> {
    let key = PublicKey::from_openssh(openssh_public.trim())
        .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// A freshly generated Ed25519 key pair.
pub struct GeneratedKey {
    /// OpenSSH public key line, `ssh-ed25519 AAAA... comment`.
    pub public_openssh: String,
    /// OpenSSH private key PEM; wiped from memory on drop.
    pub private_openssh: Zeroizing<String>,
    pub fingerprint: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("fingerprint", &self.fingerprint)
            .field("private_openssh", &"<redacted>")
            .finish()
    }
}

/// Generates an Ed25519 key from the OS random number generator.
pub fn generate_ed25519(comment: &str) -> Result<GeneratedKey, KeyError> {
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    key.set_comment(comment);
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(GeneratedKey {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        public_openssh,
        private_openssh: Zeroizing::new(private_openssh.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_ssh_keygen_format() {
        // A fixed key and the fingerprint `ssh-keygen -lf` prints for it.
        let public =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5hh88F3Gy9/e6mU6cIsVL1+G53OxMQQ/Mw7pplXECb demo";
        assert_eq!(
            fingerprint_of(public).unwrap(),
            "SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY"
        );
    }

    #[test]
    fn generated_key_fingerprint_is_that_of_its_public_half() {
        let key = generate_ed25519("glwarden test").unwrap();
        assert!(key.public_openssh.starts_with("ssh-ed25519 "));
        assert_eq!(
            fingerprint_of(&key.public_openssh).unwrap(),
            key.fingerprint
        );
        assert!(!format!("{key:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(fingerprint_of("ssh-rsa not-base64!").is_err());
    }
}
