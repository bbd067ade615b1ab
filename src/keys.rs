//! SSH key material: which key a GitLab deploy key is ([`KeyDigest`], from
//! the key itself), its `SHA256:` fingerprint, and Ed25519 key generation,
//! all in memory through `ssh-key` (no `ssh-keygen`, no temporary files).
//!
//! GitLab serves `fingerprint_sha256` without the `SHA256:` prefix that
//! `ssh-keygen` prints (`app/models/key.rb`, `generate_fingerprint`; see
//! docs/gitlab-contract.md §1), and its API docs show it with one. Identity
//! is therefore decided on the key material GitLab returns in `key`; the
//! fingerprint field, in either form, is only read when `key` cannot be parsed.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::gitlab::types::DeployKey;

/// The SHA-256 of a public key's blob: equal digests, the same key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of an OpenSSH public key line (`type base64 [comment]`).
    pub fn of_public_key(openssh_public: &str) -> Result<Self, KeyError> {
        let key = PublicKey::from_openssh(openssh_public.trim())
            .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        Self::from_fingerprint(&key.fingerprint(HashAlg::Sha256))
            .ok_or_else(|| KeyError::BadPublicKey("no SHA-256 fingerprint".into()))
    }

    /// A SHA-256 fingerprint in any of the forms met in practice:
    /// `SHA256:<base64>` (ssh-keygen, GitLab's docs) or bare `<base64>`
    /// (GitLab's answers), with or without `=` padding.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let b64 = text.strip_prefix("SHA256:").unwrap_or(text);
        let bytes = STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(b64))
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn from_fingerprint(fp: &ssh_key::Fingerprint) -> Option<Self> {
        Some(Self(fp.sha256()?))
    }
}

impl std::fmt::Display for KeyDigest {
    /// `SHA256:<unpadded base64>`, as `ssh-keygen -lf` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Which key a GitLab deploy key is: from its `key` material when GitLab
/// sent one that parses, else from `fingerprint_sha256` in either form.
pub fn digest_of(key: &DeployKey) -> Option<KeyDigest> {
    KeyDigest::of_public_key(&key.key)
        .ok()
        .or_else(|| key.fingerprint_sha256.as_deref().and_then(KeyDigest::parse))
}

/// Whether GitLab's deploy key is the key whose fingerprint we hold.
pub fn is_same_key(key: &DeployKey, ours: &KeyDigest) -> bool {
    digest_of(key).as_ref() == Some(ours)
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an OpenSSH public key: {0}")]
    BadPublicKey(String),
    #[error("cannot generate an Ed25519 key: {0}")]
    Generate(String),
}

/// `SHA256:<unpadded base64>` of the key blob, as `ssh-keygen -lf` prints it
/// (glwarden's own form for what it stores and shows; GitLab serves the same
/// digest without the prefix).
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

/// Generates an Ed25519 key from the OS random number generator. The
/// comment is made one word (spaces become `-`): GitLab keeps only a
/// comment's first word, and a key whose text differs from GitLab's stored
/// form is not found by GitLab's idempotent add (docs/gitlab-contract.md §2).
pub fn generate_ed25519(comment: &str) -> Result<GeneratedKey, KeyError> {
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    key.set_comment(comment.split_whitespace().collect::<Vec<_>>().join("-"));
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
        assert!(
            key.public_openssh.ends_with(" glwarden-test"),
            "one-word comment"
        );
        assert_eq!(
            fingerprint_of(&key.public_openssh).unwrap(),
            key.fingerprint
        );
        assert!(!format!("{key:?}").contains("PRIVATE KEY"));
    }

    fn gitlab_key(key: &str, fingerprint_sha256: Option<&str>) -> DeployKey {
        serde_json::from_value(serde_json::json!({
            "id": 1, "title": "t", "key": key, "fingerprint_sha256": fingerprint_sha256,
        }))
        .unwrap()
    }

    #[test]
    fn digests_parse_every_fingerprint_form() {
        let ours = KeyDigest::parse("SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY").unwrap();
        for form in [
            // GitLab's answer (app/models/key.rb strips the prefix).
            "kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY",
            // GitLab's API docs and ssh-keygen.
            "SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY",
            // Padded base64.
            "kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY=",
            "SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY=",
        ] {
            assert_eq!(KeyDigest::parse(form), Some(ours), "{form}");
        }
        for bad in [
            "",
            "SHA256:",
            "MD5:aa:bb",
            "kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygod",
            "not base64!",
        ] {
            assert_eq!(KeyDigest::parse(bad), None, "{bad}");
        }
        assert_eq!(
            ours.to_string(),
            "SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY"
        );
    }

    #[test]
    fn identity_comes_from_the_key_material_first() {
        let public =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5hh88F3Gy9/e6mU6cIsVL1+G53OxMQQ/Mw7pplXECb demo";
        let ours = KeyDigest::of_public_key(public).unwrap();
        // GitLab's real form: no prefix (and GitLab keeps only the comment's first word).
        let real = gitlab_key(public, Some("kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY"));
        assert!(is_same_key(&real, &ours));
        // The docs' form.
        let docs = gitlab_key(
            public,
            Some("SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY"),
        );
        assert!(is_same_key(&docs, &ours));
        // A fingerprint field that disagrees with the material: the material wins.
        let odd = gitlab_key(public, Some("something else"));
        assert!(is_same_key(&odd, &ours));
        // No usable material: the fingerprint is the fallback, in either form.
        let bare = gitlab_key("", Some("kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY"));
        assert!(is_same_key(&bare, &ours));
        let other = generate_ed25519("other").unwrap();
        assert!(!is_same_key(
            &gitlab_key(&other.public_openssh, None),
            &ours
        ));
        assert!(!is_same_key(&gitlab_key("", None), &ours));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(fingerprint_of("ssh-rsa not-base64!").is_err());
    }
}
