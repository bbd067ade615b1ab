//! SSH public key parsing and GitLab's two fingerprints. MD5 is implemented
//! here (RFC 1321) because the crate has no MD5 dependency and GitLab still
//! exposes the MD5 `fingerprint` next to `fingerprint_sha256`.

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
    md5(blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32), computed instead of tabulated.
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());

    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
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
