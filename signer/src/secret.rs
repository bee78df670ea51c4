//! The node's root secret and Core Lightning's `hsm_secret` file formats.
//!
//! Every key the signer uses is derived from one root secret (see [`crate::keys`]). Core
//! Lightning keeps it in a file called `hsm_secret`, whose format its hsmd tells apart by length:
//!
//! | length | format | root secret |
//! |---|---|---|
//! | 32 bytes | plain | the 32 bytes themselves |
//! | 73 bytes | legacy encrypted: libsodium secretstream header (24) + ciphertext (32 + 17) | the 32 decrypted bytes; the key is argon2id of the passphrase |
//! | otherwise (> 32) | mnemonic: 32-byte passphrase check + BIP39 English words | the 64-byte BIP39 seed of the words and the passphrase |
//!
//! In the mnemonic format the first 32 bytes are all zero when there is no passphrase, and
//! otherwise SHA256 of the 64-byte seed, which tells a wrong passphrase from a right one.
//! The passphrase itself is never stored: lightningd passes it in `hsmd_init`.
//!
//! An operator who moves an existing `hsm_secret` to this signer keeps their node id and funds,
//! because [`HsmSecret::from_file_bytes`] accepts exactly what Core Lightning's hsmd accepts.
//!
//! Secrets never appear in `Debug`, `Display` or an error message, and are wiped from memory
//! when dropped.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bitcoin::secp256k1::rand::{thread_rng, RngCore};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

mod legacy;

pub use legacy::legacy_encryption_key;

/// Length of a plain `hsm_secret` file, and of every 32-byte root secret.
pub const PLAIN_SECRET_LEN: usize = 32;
/// Length of a legacy encrypted `hsm_secret` file: header (24) + secret (32) + tag and MAC (17).
pub const ENCRYPTED_FILE_LEN: usize = legacy::HEADER_LEN + PLAIN_SECRET_LEN + legacy::ABYTES;
/// Length of the passphrase check that starts a mnemonic-format `hsm_secret` file.
pub const PASSPHRASE_CHECK_LEN: usize = 32;
/// Length of a BIP39 seed: the root secret of a mnemonic-format `hsm_secret`.
pub const BIP39_SEED_LEN: usize = 64;

/// PBKDF2 rounds of a BIP39 seed.
const BIP39_PBKDF2_ROUNDS: u32 = 2048;
/// Entropy of a newly generated mnemonic: 16 bytes, 12 words, as Core Lightning creates them.
const NEW_MNEMONIC_ENTROPY_LEN: usize = 16;

/// Which format the root secret came from.
///
/// It is reported to lightningd in the `hsm_secret_type` TLV of `hsmd_init_reply_v4`
/// ([`HsmSecretKind::wire_code`]), and decides whether the wallet uses BIP86 keys: only the
/// mnemonic kinds have the 64-byte seed that BIP86 derivation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HsmSecretKind {
    /// 32 raw bytes.
    Plain,
    /// 32 bytes recovered from the legacy 73-byte encrypted file.
    Encrypted,
    /// A BIP39 mnemonic without passphrase.
    Mnemonic,
    /// A BIP39 mnemonic with a passphrase.
    MnemonicWithPassphrase,
}

impl HsmSecretKind {
    /// The `hsm_secret_type` byte of `hsmd_init_reply_v4`, as Core Lightning numbers the kinds:
    /// plain 0, encrypted 1, mnemonic 2, mnemonic with passphrase 3.
    pub fn wire_code(self) -> u8 {
        match self {
            HsmSecretKind::Plain => 0,
            HsmSecretKind::Encrypted => 1,
            HsmSecretKind::Mnemonic => 2,
            HsmSecretKind::MnemonicWithPassphrase => 3,
        }
    }

    /// Whether the root secret is a 64-byte BIP39 seed (and the wallet uses BIP86 keys).
    pub fn is_mnemonic(self) -> bool {
        matches!(
            self,
            HsmSecretKind::Mnemonic | HsmSecretKind::MnemonicWithPassphrase
        )
    }
}

/// Why a root secret could not be loaded, made or stored.
///
/// No variant carries secret material: neither bytes of the file, nor words, nor the
/// passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file is shorter than any format (hsmd calls this an invalid format).
    #[error("hsm_secret is {len} bytes, shorter than any known format (32 bytes or more)")]
    TooShort {
        /// The file's length.
        len: usize,
    },
    /// The file needs a passphrase (legacy encrypted, or a mnemonic with passphrase) and none
    /// was given.
    #[error("hsm_secret is protected by a passphrase, and none was given")]
    PassphraseRequired,
    /// A passphrase was given for a mnemonic that has none (hsmd refuses this too, so that a
    /// mistyped setup does not silently produce another node).
    #[error("a passphrase was given, but the hsm_secret mnemonic has none")]
    PassphraseNotNeeded,
    /// The passphrase does not match: the mnemonic's check hash differs, or the encrypted
    /// secret does not authenticate under it.
    #[error("wrong passphrase for hsm_secret")]
    WrongPassphrase,
    /// The mnemonic part is not English BIP39 words with a valid checksum, separated by single
    /// spaces.
    #[error("hsm_secret does not hold a valid English BIP39 mnemonic")]
    InvalidMnemonic,
    /// A secret that was decrypted from the legacy format cannot be written back (that would
    /// store it unencrypted, or need the passphrase again).
    #[error("an hsm_secret decrypted from the legacy encrypted format cannot be written back")]
    CannotWriteEncrypted,
    /// argon2 refused to run (for example, it could not allocate its 256 MiB).
    #[error("could not derive the hsm_secret encryption key from the passphrase: {0}")]
    KeyDerivation(String),
    /// The file exists already; an `hsm_secret` is never overwritten.
    #[error("{} exists already; refusing to overwrite an hsm_secret", path.display())]
    AlreadyExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// Reading or writing the file failed.
    #[error("hsm_secret file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// The node's root secret: 32 bytes, or the 64-byte seed of a BIP39 mnemonic.
///
/// Guarantees: it has no derived `Debug` (the one it has prints only the kind), it is wiped
/// from memory on drop, and its bytes are reachable only inside this crate (by
/// [`crate::keys`]).
pub struct HsmSecret {
    kind: HsmSecretKind,
    /// 32 bytes (plain, encrypted) or the 64-byte BIP39 seed (mnemonic kinds).
    seed: Zeroizing<Vec<u8>>,
    /// The words, for the mnemonic kinds, in canonical form (single spaces).
    mnemonic: Option<Zeroizing<String>>,
}

impl fmt::Debug for HsmSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmSecret")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl HsmSecret {
    /// A plain secret from its 32 bytes.
    pub fn from_plain(bytes: [u8; PLAIN_SECRET_LEN]) -> HsmSecret {
        let mut bytes = bytes;
        let seed = Zeroizing::new(bytes.to_vec());
        bytes.zeroize();
        HsmSecret {
            kind: HsmSecretKind::Plain,
            seed,
            mnemonic: None,
        }
    }

    /// A mnemonic secret from its words (English, single spaces, as the file holds them) and
    /// optional passphrase.
    ///
    /// `Some(b"")` is a passphrase (an empty one), as it is for hsmd: the result's kind is
    /// [`HsmSecretKind::MnemonicWithPassphrase`].
    ///
    /// # Errors
    /// [`SecretError::InvalidMnemonic`] when the words are not a valid English BIP39 mnemonic
    /// in canonical form.
    pub fn from_mnemonic(words: &str, passphrase: Option<&[u8]>) -> Result<HsmSecret, SecretError> {
        let mnemonic = parse_canonical_mnemonic(words)?;
        let seed = bip39_seed(&mnemonic, passphrase.unwrap_or_default());
        let kind = match passphrase {
            None => HsmSecretKind::Mnemonic,
            Some(_) => HsmSecretKind::MnemonicWithPassphrase,
        };
        Ok(HsmSecret {
            kind,
            seed,
            mnemonic: Some(mnemonic),
        })
    }

    /// Reads the contents of an `hsm_secret` file, exactly as Core Lightning's hsmd does.
    ///
    /// 32 bytes are a plain secret (a passphrase, if given, is ignored, as hsmd ignores it);
    /// 73 bytes are the legacy encrypted format (the passphrase is required); anything longer is
    /// the mnemonic format.
    ///
    /// # Errors
    /// [`SecretError::TooShort`], [`SecretError::PassphraseRequired`],
    /// [`SecretError::PassphraseNotNeeded`], [`SecretError::WrongPassphrase`],
    /// [`SecretError::InvalidMnemonic`], [`SecretError::KeyDerivation`]: each names one way the
    /// file and the passphrase do not fit.
    pub fn from_file_bytes(
        bytes: &[u8],
        passphrase: Option<&[u8]>,
    ) -> Result<HsmSecret, SecretError> {
        match bytes.len() {
            len if len < PLAIN_SECRET_LEN => Err(SecretError::TooShort { len }),
            PLAIN_SECRET_LEN => {
                let mut plain = [0u8; PLAIN_SECRET_LEN];
                plain.copy_from_slice(bytes);
                Ok(HsmSecret::from_plain(plain))
            }
            ENCRYPTED_FILE_LEN => {
                let passphrase = passphrase.ok_or(SecretError::PassphraseRequired)?;
                let key = legacy_encryption_key(passphrase)?;
                HsmSecret::from_encrypted_file_bytes(bytes, &key)
            }
            _ => from_mnemonic_file(bytes, passphrase),
        }
    }

    /// Decrypts a legacy 73-byte encrypted `hsm_secret` with its 32-byte encryption key
    /// (argon2id of the passphrase, see [`legacy_encryption_key`]; older lightningd sent this
    /// key in `hsmd_init`'s `hsm_encryption_key`).
    ///
    /// # Errors
    /// [`SecretError::WrongPassphrase`] when the secret does not authenticate under the key;
    /// [`SecretError::TooShort`] (or not 73 bytes) when `bytes` is not an encrypted file.
    pub fn from_encrypted_file_bytes(
        bytes: &[u8],
        key: &[u8; 32],
    ) -> Result<HsmSecret, SecretError> {
        if bytes.len() != ENCRYPTED_FILE_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        let plain =
            legacy::secretstream_decrypt_one(bytes, key).ok_or(SecretError::WrongPassphrase)?;
        Ok(HsmSecret {
            kind: HsmSecretKind::Encrypted,
            seed: Zeroizing::new(plain.to_vec()),
            mnemonic: None,
        })
    }

    /// Reads the `hsm_secret` file at `path` (see [`HsmSecret::from_file_bytes`]).
    ///
    /// # Errors
    /// [`SecretError::Io`] when it cannot be read, or any error of
    /// [`HsmSecret::from_file_bytes`].
    pub fn load(path: &Path, passphrase: Option<&[u8]>) -> Result<HsmSecret, SecretError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| SecretError::Io {
            path: path.into(),
            source,
        })?);
        HsmSecret::from_file_bytes(&bytes, passphrase)
    }

    /// A new random plain secret (32 bytes from the operating system's generator).
    pub fn generate_plain() -> HsmSecret {
        let mut bytes = [0u8; PLAIN_SECRET_LEN];
        thread_rng().fill_bytes(&mut bytes);
        HsmSecret::from_plain(bytes)
    }

    /// A new random 12-word BIP39 mnemonic secret, with an optional passphrase.
    ///
    /// Show the operator [`HsmSecret::mnemonic`] to write down; the passphrase is not stored
    /// anywhere and must be given again on every start.
    pub fn generate_mnemonic(passphrase: Option<&[u8]>) -> HsmSecret {
        let mut entropy = Zeroizing::new([0u8; NEW_MNEMONIC_ENTROPY_LEN]);
        thread_rng().fill_bytes(entropy.as_mut());
        let words = Zeroizing::new(
            bip39::Mnemonic::from_entropy(entropy.as_ref())
                .expect("16 bytes is a valid BIP39 entropy length")
                .to_string(),
        );
        HsmSecret::from_mnemonic(&words, passphrase)
            .expect("a mnemonic made by bip39 is canonical and valid")
    }

    /// What kind of secret this is.
    pub fn kind(&self) -> HsmSecretKind {
        self.kind
    }

    /// The mnemonic words (single spaces), for the mnemonic kinds: what the operator writes down
    /// as a backup. Treat the result as the secret it is.
    pub fn mnemonic(&self) -> Option<&str> {
        self.mnemonic.as_deref().map(String::as_str)
    }

    /// The root secret's bytes: 32 for plain and encrypted, the 64-byte BIP39 seed for the
    /// mnemonic kinds. Only key derivation may see them.
    pub(crate) fn seed_bytes(&self) -> &[u8] {
        &self.seed
    }

    /// The exact bytes of the `hsm_secret` file for this secret, as Core Lightning writes it:
    /// 32 raw bytes, or the passphrase check followed by the words.
    ///
    /// # Errors
    /// [`SecretError::CannotWriteEncrypted`] for a secret decrypted from the legacy format.
    pub fn to_file_bytes(&self) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        match (self.kind, &self.mnemonic) {
            (HsmSecretKind::Plain, _) => Ok(self.seed.clone()),
            (HsmSecretKind::Encrypted, _) => Err(SecretError::CannotWriteEncrypted),
            (kind, Some(words)) => {
                let mut file =
                    Zeroizing::new(Vec::with_capacity(PASSPHRASE_CHECK_LEN + words.len()));
                if kind == HsmSecretKind::MnemonicWithPassphrase {
                    file.extend_from_slice(&Sha256::digest(self.seed.as_slice()));
                } else {
                    file.extend_from_slice(&[0u8; PASSPHRASE_CHECK_LEN]);
                }
                file.extend_from_slice(words.as_bytes());
                Ok(file)
            }
            (_, None) => unreachable!("mnemonic kinds are only built with their words"),
        }
    }

    /// Creates the `hsm_secret` file at `path` (mode 0600), holding [`HsmSecret::to_file_bytes`].
    ///
    /// Never overwrites: if `path` exists (even as a dangling link) nothing is written. The data
    /// is synced to disk before this returns.
    ///
    /// # Errors
    /// [`SecretError::AlreadyExists`], [`SecretError::CannotWriteEncrypted`], or
    /// [`SecretError::Io`].
    pub fn write_new(&self, path: &Path) -> Result<(), SecretError> {
        let bytes = self.to_file_bytes()?;
        let io_err = |source| SecretError::Io {
            path: path.into(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => SecretError::AlreadyExists { path: path.into() },
                _ => io_err(source),
            })?;
        file.write_all(&bytes).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
}

/// The mnemonic format: passphrase check, then words. The checks run in the order
/// passphrase presence, words, passphrase check; hsmd compares the passphrase before it
/// validates the words, so for a file with broken words and a passphrase check it says
/// "wrong passphrase" where this says [`SecretError::InvalidMnemonic`].
fn from_mnemonic_file(bytes: &[u8], passphrase: Option<&[u8]>) -> Result<HsmSecret, SecretError> {
    let (check, words) = bytes.split_at(PASSPHRASE_CHECK_LEN);
    let has_passphrase = check.iter().any(|&b| b != 0);
    match (has_passphrase, passphrase) {
        (true, None) => return Err(SecretError::PassphraseRequired),
        (false, Some(_)) => return Err(SecretError::PassphraseNotNeeded),
        _ => {}
    }
    let words = std::str::from_utf8(words).map_err(|_| SecretError::InvalidMnemonic)?;
    let secret = HsmSecret::from_mnemonic(words, passphrase)?;
    if has_passphrase {
        let computed = Sha256::digest(secret.seed.as_slice());
        if !bool::from(computed.as_slice().ct_eq(check)) {
            return Err(SecretError::WrongPassphrase);
        }
    }
    Ok(secret)
}

/// Parses English BIP39 words and insists on the canonical spelling (lower case, single
/// spaces, no surrounding blanks), because the seed is computed over the text itself.
fn parse_canonical_mnemonic(words: &str) -> Result<Zeroizing<String>, SecretError> {
    let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, words)
        .map_err(|_| SecretError::InvalidMnemonic)?;
    let canonical = Zeroizing::new(mnemonic.to_string());
    if canonical.as_str() != words {
        return Err(SecretError::InvalidMnemonic);
    }
    Ok(canonical)
}

/// BIP39 seed: PBKDF2-HMAC-SHA512, 2048 rounds, salt "mnemonic" || passphrase, over the words
/// as given. The passphrase is used as raw bytes (no Unicode normalisation), as libwally does.
fn bip39_seed(words: &str, passphrase: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut salt = Zeroizing::new(Vec::with_capacity(8 + passphrase.len()));
    salt.extend_from_slice(b"mnemonic");
    salt.extend_from_slice(passphrase);
    let mut seed = Zeroizing::new(vec![0u8; BIP39_SEED_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha512>(words.as_bytes(), &salt, BIP39_PBKDF2_ROUNDS, &mut seed);
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_file_is_the_secret() {
        let secret = HsmSecret::from_file_bytes(&[7u8; 32], None).unwrap();
        assert_eq!(secret.kind(), HsmSecretKind::Plain);
        assert_eq!(secret.seed_bytes(), &[7u8; 32]);
        assert_eq!(secret.to_file_bytes().unwrap().as_slice(), &[7u8; 32]);
        // hsmd ignores a passphrase for a plain file.
        assert!(HsmSecret::from_file_bytes(&[7u8; 32], Some(b"x")).is_ok());
    }

    #[test]
    fn short_file_is_refused() {
        assert!(matches!(
            HsmSecret::from_file_bytes(&[1u8; 31], None),
            Err(SecretError::TooShort { len: 31 })
        ));
    }

    #[test]
    fn debug_and_errors_show_no_secret() {
        let secret = HsmSecret::from_plain([0xab; 32]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        let words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let mnemonic = HsmSecret::from_mnemonic(words, None).unwrap();
        assert!(!format!("{mnemonic:?}").contains("abandon"));
        let mut file = vec![0u8; 32];
        file.extend_from_slice(b"abandon abandon zebra");
        let err = HsmSecret::from_file_bytes(&file, None).unwrap_err();
        assert!(!err.to_string().contains("abandon"));
    }

    /// BIP39 reference vector (trezor's vectors.json, passphrase "TREZOR").
    #[test]
    fn bip39_seed_matches_reference_vector() {
        let words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let secret = HsmSecret::from_mnemonic(words, Some(b"TREZOR")).unwrap();
        assert_eq!(
            hex::encode(secret.seed_bytes()),
            "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
        );
    }

    #[test]
    fn mnemonic_file_round_trips_and_checks_passphrase() {
        let with = HsmSecret::generate_mnemonic(Some(b"hunter2"));
        assert_eq!(with.kind(), HsmSecretKind::MnemonicWithPassphrase);
        let file = with.to_file_bytes().unwrap();
        assert_ne!(&file[..32], &[0u8; 32]);
        let again = HsmSecret::from_file_bytes(&file, Some(b"hunter2")).unwrap();
        assert_eq!(again.seed_bytes(), with.seed_bytes());
        assert_eq!(again.kind(), HsmSecretKind::MnemonicWithPassphrase);
        assert!(matches!(
            HsmSecret::from_file_bytes(&file, Some(b"hunter3")),
            Err(SecretError::WrongPassphrase)
        ));
        assert!(matches!(
            HsmSecret::from_file_bytes(&file, None),
            Err(SecretError::PassphraseRequired)
        ));

        let without = HsmSecret::generate_mnemonic(None);
        let file = without.to_file_bytes().unwrap();
        assert_eq!(&file[..32], &[0u8; 32]);
        assert_eq!(without.mnemonic().unwrap().split(' ').count(), 12);
        let again = HsmSecret::from_file_bytes(&file, None).unwrap();
        assert_eq!(again.kind(), HsmSecretKind::Mnemonic);
        assert_eq!(again.seed_bytes(), without.seed_bytes());
        assert!(matches!(
            HsmSecret::from_file_bytes(&file, Some(b"x")),
            Err(SecretError::PassphraseNotNeeded)
        ));
    }

    #[test]
    fn bad_mnemonics_are_refused() {
        let good = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let bad_checksum = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon";
        let double_space = good.replacen(' ', "  ", 1);
        let trailing_newline = format!("{good}\n");
        for words in [
            bad_checksum,
            &double_space,
            &trailing_newline,
            "not words at all",
        ] {
            let mut file = vec![0u8; 32];
            file.extend_from_slice(words.as_bytes());
            assert!(
                matches!(
                    HsmSecret::from_file_bytes(&file, None),
                    Err(SecretError::InvalidMnemonic)
                ),
                "{words:?}"
            );
        }
        let mut file = vec![0u8; 32];
        file.extend_from_slice(&[0xff, 0xfe, 0x20, 0x41]);
        assert!(matches!(
            HsmSecret::from_file_bytes(&file, None),
            Err(SecretError::InvalidMnemonic)
        ));
    }

    #[test]
    fn write_new_creates_0600_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("signer-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hsm_secret");
        let _ = std::fs::remove_file(&path);

        let secret = HsmSecret::generate_plain();
        secret.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = HsmSecret::load(&path, None).unwrap();
        assert_eq!(loaded.seed_bytes(), secret.seed_bytes());

        let other = HsmSecret::generate_plain();
        assert!(matches!(
            other.write_new(&path),
            Err(SecretError::AlreadyExists { .. })
        ));
        assert_eq!(
            HsmSecret::load(&path, None).unwrap().seed_bytes(),
            secret.seed_bytes()
        );

        assert!(matches!(
            HsmSecret::load(&dir.join("missing"), None),
            Err(SecretError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wire_codes_match_cln() {
        assert_eq!(HsmSecretKind::Plain.wire_code(), 0);
        assert_eq!(HsmSecretKind::Encrypted.wire_code(), 1);
        assert_eq!(HsmSecretKind::Mnemonic.wire_code(), 2);
        assert_eq!(HsmSecretKind::MnemonicWithPassphrase.wire_code(), 3);
    }
}
