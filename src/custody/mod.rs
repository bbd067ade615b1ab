//! Key custody: private deploy keys, webhook secrets and OAuth token pairs
//! are sealed with XChaCha20-Poly1305 before they reach SQLite, bound to
//! their owner (project and kind, or connection and token) as associated
//! data: a sealed value copied to another row or column does not open. The
//! master key comes from a credential file (systemd `LoadCredential=`).
//! Without one, glwarden refuses to store project secrets unless the
//! configuration explicitly allows plaintext; OAuth pairs are then stored
//! in plaintext, as before custody.
//!
//! Sealed format: `1 || nonce(24) || ciphertext+tag`; plaintext format:
//! `0 || bytes`. The leading byte lets a later master key (or plaintext
//! opt-out) read what an earlier setting wrote, or refuse it clearly. Once
//! a master key is configured, the store seals what is still plaintext in
//! place, once ([`Custody::reseal`], store/sealing.rs); after that a
//! plaintext value is refused.

mod project;

pub use project::{Keeper, KeeperError};

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

const SEALED: u8 = 1;
const PLAIN: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error(
        "no master key is configured (custody.master_key_file or custody.master_key_credential), \
         and custody.allow_plaintext is false: glwarden will not store secrets"
    )]
    NoMasterKey,
    #[error("master key {0}")]
    BadMasterKey(String),
    /// `owner` is the [`Owner`]'s description (no secret in it).
    #[error("the stored {owner} cannot be opened: {reason}")]
    Open { owner: String, reason: String },
}

/// Which kind of secret, part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    DeployKey,
    HookToken,
}

impl SecretKind {
    fn label(self) -> &'static str {
        match self {
            SecretKind::DeployKey => "deploy_key",
            SecretKind::HookToken => "hook_token",
        }
    }
}

/// Which token of a connection's OAuth pair, part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthToken {
    Access,
    Refresh,
}

/// What a stored secret belongs to. Its associated data binds a sealed
/// value to it, so that a value moved to another row or column (another
/// project, another connection, access swapped with refresh) does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A project's secret, by its row id in the store.
    Project(i64, SecretKind),
    /// A token of an OAuth connection, by the connection's name.
    Connection(&'a str, OAuthToken),
    /// The access token a connection's token was rotated into, by the
    /// connection's name.
    RotatedToken(&'a str),
}

impl Owner<'_> {
    /// The associated data. A project's is what glwarden has always written
    /// (values sealed before OAuth pairs were must still open); a token's
    /// label differs from every project kind's, and the connection's name
    /// is the whole rest of the text, so no two owners share one.
    fn aad(self) -> Vec<u8> {
        match self {
            Owner::Project(project, kind) => {
                format!("glwarden:v1:{}:{project}", kind.label()).into_bytes()
            }
            Owner::Connection(name, token) => {
                let label = match token {
                    OAuthToken::Access => "oauth_access",
                    OAuthToken::Refresh => "oauth_refresh",
                };
                format!("glwarden:v1:{label}:{name}").into_bytes()
            }
            Owner::RotatedToken(name) => format!("glwarden:v1:rotated_token:{name}").into_bytes(),
        }
    }

    /// Whether it may be stored in plaintext without a master key even when
    /// `custody.allow_plaintext` is false. An OAuth pair must be stored to
    /// survive GitLab's rotation (the configured refresh token is dead after
    /// the first refresh), and OAuth worked without a master key before
    /// custody: without one, the pair stays plaintext in the 0600 database.
    fn always_storable(self) -> bool {
        // A rotated token likewise: the configured one is revoked by then.
        matches!(self, Owner::Connection(..) | Owner::RotatedToken(..))
    }
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Project(project, kind) => {
                write!(f, "{} of project row {project}", kind.label())
            }
            Owner::Connection(name, OAuthToken::Access) => {
                write!(f, "OAuth access token of connection `{name}`")
            }
            Owner::Connection(name, OAuthToken::Refresh) => {
                write!(f, "OAuth refresh token of connection `{name}`")
            }
            Owner::RotatedToken(name) => {
                write!(f, "rotated access token of connection `{name}`")
            }
        }
    }
}

/// Seals and opens secrets for the store.
pub struct Custody {
    cipher: Option<XChaCha20Poly1305>,
    allow_plaintext: bool,
}

impl std::fmt::Debug for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custody")
            .field("encrypted", &self.cipher.is_some())
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

impl Custody {
    /// `master_key` is 32 bytes written as 64 hex digits or as base64.
    pub fn new(
        master_key: Option<&SecretString>,
        allow_plaintext: bool,
    ) -> Result<Self, CustodyError> {
        let cipher = match master_key {
            Some(text) => {
                let bytes = decode_key(text.expose_secret().trim())?;
                Some(
                    XChaCha20Poly1305::new_from_slice(&bytes)
                        .map_err(|_| CustodyError::BadMasterKey("has the wrong length".into()))?,
                )
            }
            None => None,
        };
        Ok(Self {
            cipher,
            allow_plaintext,
        })
    }

    /// Whether secrets can be stored at all.
    pub fn can_store(&self) -> bool {
        self.cipher.is_some() || self.allow_plaintext
    }

    /// Whether values are sealed (a master key is configured).
    pub fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// Seals a project's secret (see [`Custody::seal_for`]).
    pub fn seal(
        &self,
        project: i64,
        kind: SecretKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CustodyError> {
        self.seal_for(Owner::Project(project, kind), plaintext)
    }

    /// Opens a project's secret (see [`Custody::open_for`]).
    pub fn open(
        &self,
        project: i64,
        kind: SecretKind,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        self.open_for(Owner::Project(project, kind), stored)
    }

    /// The stored form of `plaintext`: sealed under the master key, else
    /// plaintext where allowed.
    pub fn seal_for(&self, owner: Owner<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        match &self.cipher {
            Some(cipher) => {
                let mut nonce = [0u8; 24];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                let aad = owner.aad();
                let sealed = cipher
                    .encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: plaintext,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| CustodyError::BadMasterKey("cannot encrypt".into()))?;
                let mut out = Vec::with_capacity(1 + 24 + sealed.len());
                out.push(SEALED);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            None if self.allow_plaintext || owner.always_storable() => {
                let mut out = Vec::with_capacity(1 + plaintext.len());
                out.push(PLAIN);
                out.extend_from_slice(plaintext);
                Ok(out)
            }
            None => Err(CustodyError::NoMasterKey),
        }
    }

    /// [`Custody::open_for`] for a secret that is text (a token).
    pub fn open_text(
        &self,
        owner: Owner<'_>,
        stored: &[u8],
    ) -> Result<secrecy::SecretString, CustodyError> {
        let bytes = self.open_for(owner, stored)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CustodyError::Open {
            owner: owner.to_string(),
            reason: "it is not UTF-8 text".into(),
        })?;
        Ok(secrecy::SecretString::from(text.to_owned()))
    }

    pub fn open_for(
        &self,
        owner: Owner<'_>,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let fail = |reason: &str| CustodyError::Open {
            owner: owner.to_string(),
            reason: reason.to_owned(),
        };
        match stored.split_first() {
            // With a master key every value glwarden writes is sealed, and
            // what an earlier setting left in plaintext is sealed once at
            // start: a plaintext one was planted (a tampered row, an old
            // backup) and would be sent to GitLab as ours. Refused.
            Some((&PLAIN, _)) if self.cipher.is_some() => Err(fail(
                "it is stored unencrypted although a master key is configured; \
                 glwarden never writes such a value, so it is refused",
            )),
            Some((&PLAIN, rest)) => Ok(Zeroizing::new(rest.to_vec())),
            Some((&SEALED, rest)) if rest.len() > 24 => {
                let cipher = self
                    .cipher
                    .as_ref()
                    .ok_or_else(|| fail("it is encrypted and no master key is configured"))?;
                let (nonce, sealed) = rest.split_at(24);
                let aad = owner.aad();
                cipher
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: sealed,
                            aad: &aad,
                        },
                    )
                    .map(Zeroizing::new)
                    .map_err(|_| {
                        fail("wrong master key, or the value was moved from another row or column")
                    })
            }
            _ => Err(fail("unknown format")),
        }
    }

    /// The sealed form of a value stored in plaintext; `None` for any other
    /// value (sealed already, or not ours to judge here: opening it says
    /// what is wrong). Only the store's one-time sealing calls this:
    /// [`Custody::open_for`] refuses plaintext once a master key is set.
    pub fn reseal(&self, owner: Owner<'_>, stored: &[u8]) -> Result<Option<Vec<u8>>, CustodyError> {
        if self.cipher.is_none() {
            return Err(CustodyError::NoMasterKey);
        }
        match stored.split_first() {
            Some((&PLAIN, rest)) => self.seal_for(owner, rest).map(Some),
            _ => Ok(None),
        }
    }
}

/// The 32 key bytes, wiped from memory when dropped.
fn decode_key(text: &str) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
    use base64::Engine;
    let bytes = Zeroizing::new(
        if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| CustodyError::BadMasterKey("is not hex".into()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| {
                    CustodyError::BadMasterKey("is neither 64 hex digits nor base64".into())
                })?
        },
    );
    if bytes.len() != 32 {
        return Err(CustodyError::BadMasterKey(format!(
            "must be 32 bytes, got {} (make one with `openssl rand -hex 32`)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Writes `contents` to `dir/name` with mode 0600, atomically: a temporary
/// file in the same directory, flushed, then renamed over the old one, so a
/// reader never sees half a key.
pub fn write_private_file(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // Directories glwarden makes are its own (0700), whatever the umask.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".glwarden-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    let target = dir.join(name);
    tmp.persist(&target).map_err(|e| e.error)?;
    // The rename is durable only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(target)
}

/// Where a project's private key file lives under `key_dir`: one folder per
/// connection, so two GitLab instances' project 42 never share a file.
pub fn key_file_path(key_dir: &Path, connection: &str, gitlab_id: i64) -> PathBuf {
    key_dir.join(connection).join(gitlab_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretString {
        SecretString::from(
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".to_owned(),
        )
    }

    #[test]
    fn a_plaintext_value_is_refused_when_a_master_key_is_configured() {
        let plain = Custody::new(None, true).unwrap();
        let planted = plain
            .seal(7, SecretKind::HookToken, b"attacker-token")
            .unwrap();
        assert_eq!(
            &*plain.open(7, SecretKind::HookToken, &planted).unwrap(),
            b"attacker-token"
        );
        let sealed = Custody::new(Some(&key()), false).unwrap();
        let err = sealed.open(7, SecretKind::HookToken, &planted).unwrap_err();
        assert!(err.to_string().contains("stored unencrypted"), "{err}");
        assert!(!err.to_string().contains("attacker-token"));
    }

    #[test]
    fn sealed_secrets_open_only_for_their_project_and_kind() {
        let c = Custody::new(Some(&key()), false).unwrap();
        let sealed = c
            .seal(
                7,
                SecretKind::DeployKey,
                b"-----BEGIN OPENSSH PRIVATE KEY-----",
            )
            .unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == b"BEGIN"),
            "ciphertext, not plaintext"
        );
        assert_eq!(
            &*c.open(7, SecretKind::DeployKey, &sealed).unwrap(),
            b"-----BEGIN OPENSSH PRIVATE KEY-----"
        );
        assert!(
            c.open(8, SecretKind::DeployKey, &sealed).is_err(),
            "another project's row"
        );
        assert!(
            c.open(7, SecretKind::HookToken, &sealed).is_err(),
            "another kind"
        );
        let other = Custody::new(Some(&SecretString::from("ff".repeat(32))), false).unwrap();
        assert!(
            other.open(7, SecretKind::DeployKey, &sealed).is_err(),
            "another master key"
        );
    }

    #[test]
    fn oauth_tokens_open_only_for_their_connection_and_token() {
        let c = Custody::new(Some(&key()), false).unwrap();
        let access = Owner::Connection("main", OAuthToken::Access);
        let sealed = c.seal_for(access, b"oat-SECRET").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"SECRET"));
        assert_eq!(&*c.open_for(access, &sealed).unwrap(), b"oat-SECRET");
        for (other, why) in [
            (
                Owner::Connection("other", OAuthToken::Access),
                "another connection",
            ),
            (
                Owner::Connection("main", OAuthToken::Refresh),
                "the other token",
            ),
            (
                Owner::Connection("mai", OAuthToken::Access),
                "a prefix of the name",
            ),
            (
                Owner::Project(7, SecretKind::HookToken),
                "a project's secret",
            ),
        ] {
            let err = c.open_for(other, &sealed).unwrap_err().to_string();
            assert!(err.contains("moved from another row"), "{why}: {err}");
        }
        let err = c
            .open_for(Owner::Connection("other", OAuthToken::Refresh), &sealed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OAuth refresh token of connection `other`"),
            "the error names the connection and token: {err}"
        );
        assert!(!err.contains("oat-SECRET"));
    }

    #[test]
    fn without_a_master_key_oauth_tokens_are_stored_in_plaintext_even_when_secrets_are_not() {
        let refuse = Custody::new(None, false).unwrap();
        let owner = Owner::Connection("main", OAuthToken::Refresh);
        let stored = refuse.seal_for(owner, b"ort").unwrap();
        assert_eq!(stored, b"\0ort");
        assert_eq!(&*refuse.open_for(owner, &stored).unwrap(), b"ort");
        // A pair sealed earlier is not readable without the key, and says whose it is.
        let sealed = Custody::new(Some(&key()), false)
            .unwrap()
            .seal_for(owner, b"ort")
            .unwrap();
        let err = refuse.open_for(owner, &sealed).unwrap_err().to_string();
        assert!(err.contains("connection `main`"), "{err}");
        assert!(err.contains("no master key"), "{err}");
    }

    #[test]
    fn reseal_seals_plaintext_and_leaves_everything_else() {
        let plain = Custody::new(None, true).unwrap();
        let owner = Owner::Project(7, SecretKind::DeployKey);
        let stored = plain.seal_for(owner, b"private").unwrap();
        assert!(matches!(
            plain.reseal(owner, &stored),
            Err(CustodyError::NoMasterKey)
        ));
        let c = Custody::new(Some(&key()), false).unwrap();
        let sealed = c.reseal(owner, &stored).unwrap().expect("sealed");
        assert_eq!(&*c.open_for(owner, &sealed).unwrap(), b"private");
        assert!(
            c.open_for(Owner::Project(8, SecretKind::DeployKey), &sealed)
                .is_err(),
            "bound to its owner"
        );
        assert_eq!(c.reseal(owner, &sealed).unwrap(), None, "sealed already");
        assert_eq!(c.reseal(owner, b"").unwrap(), None, "not ours to judge");
        // What reseal would seal, open refuses.
        assert!(c.open_for(owner, &stored).is_err());
    }

    #[test]
    fn without_a_master_key_secrets_are_refused_unless_plaintext_is_allowed() {
        let refuse = Custody::new(None, false).unwrap();
        assert!(!refuse.can_store());
        assert!(matches!(
            refuse.seal(1, SecretKind::HookToken, b"x"),
            Err(CustodyError::NoMasterKey)
        ));
        let plain = Custody::new(None, true).unwrap();
        let stored = plain.seal(1, SecretKind::HookToken, b"token").unwrap();
        assert_eq!(
            &*plain.open(1, SecretKind::HookToken, &stored).unwrap(),
            b"token"
        );
        // An encrypted value cannot be read without the key, and says why.
        let sealed = Custody::new(Some(&key()), false)
            .unwrap()
            .seal(1, SecretKind::HookToken, b"t")
            .unwrap();
        let err = plain
            .open(1, SecretKind::HookToken, &sealed)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no master key"), "{err}");
    }

    #[test]
    fn master_keys_must_be_32_bytes() {
        assert!(Custody::new(Some(&SecretString::from("abcd".to_owned())), false).is_err());
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(Custody::new(Some(&SecretString::from(b64)), false).is_ok());
        assert!(!format!("{:?}", Custody::new(Some(&key()), false).unwrap()).contains("0011"));
    }

    #[test]
    fn key_files_are_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write_private_file(dir.path(), "42", b"first").unwrap();
        write_private_file(dir.path(), "42", b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary files left"
        );
    }
}
