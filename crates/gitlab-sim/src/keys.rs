//! SSH public key parsing and GitLab's two fingerprints (GitLab still
//! exposes the MD5 `fingerprint` next to `fingerprint_sha256`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// A validated OpenSSH public key: its stored text plus its decoded blob.
pub(crate) struct ParsedKey {
    /// As GitLab stores it: `<type> <base64>` and the comment's first word
    /// only (`Gitlab::SSHPublicKey.sanitize`, docs/gitlab-contract.md §1).
    pub text: String,
    pub blob: Vec<u8>,
}

/// Parses `<type> <base64> [comment]` after stripping whitespace, as GitLab
/// does, and checks that ssh-key accepts it.
pub(crate) fn parse(openssh: &str) -> Option<ParsedKey> {
    let trimmed = openssh.trim();
    let mut parts = trimmed.split_whitespace();
    let kind = parts.next()?;
    let b64 = parts.next()?;
    let blob = STANDARD.decode(b64).ok()?;
    ssh_key::PublicKey::from_openssh(&format!("{kind} {b64}")).ok()?;
    let text = match parts.next() {
        Some(comment) => format!("{kind} {b64} {comment}"),
        None => format!("{kind} {b64}"),
    };
    Some(ParsedKey { text, blob })
}

/// Unpadded base64 of sha256(blob), *without* `SHA256:`: GitLab strips the
/// prefix before storing (`app/models/key.rb`, `generate_fingerprint`) and
/// reads the 32 bytes back unpadded (`sha256_attribute`), whatever its API
/// docs' example shows (docs/gitlab-contract.md §1).
pub fn fingerprint_sha256(blob: &[u8]) -> String {
    STANDARD_NO_PAD.encode(Sha256::digest(blob))
}

/// MD5 of the blob as colon-separated lowercase hex.
pub fn fingerprint_md5(blob: &[u8]) -> String {
    md5::Md5::digest(blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc1321_vectors() {
        assert_eq!(
            fingerprint_md5(b""),
            "d4:1d:8c:d9:8f:00:b2:04:e9:80:09:98:ec:f8:42:7e"
        );
        assert_eq!(
            fingerprint_md5(b"The quick brown fox jumps over the lazy dog"),
            "9e:10:7d:9d:37:2b:b6:82:6b:d8:1d:35:42:a4:19:d6"
        );
    }
}
