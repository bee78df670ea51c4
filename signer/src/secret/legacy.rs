//! Core Lightning's legacy encrypted `hsm_secret`: 73 bytes, the 32-byte secret sealed with
//! libsodium's `crypto_secretstream_xchacha20poly1305` under a key that is argon2id of the
//! operator's passphrase. Core Lightning no longer creates these files but still reads them,
//! so this does too (it never writes them).

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use poly1305::universal_hash::KeyInit;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::{SecretError, PLAIN_SECRET_LEN};

/// libsodium `crypto_secretstream_xchacha20poly1305_HEADERBYTES`.
pub(super) const HEADER_LEN: usize = 24;
/// libsodium `crypto_secretstream_xchacha20poly1305_ABYTES`: one tag byte and a 16-byte MAC.
pub(super) const ABYTES: usize = 17;
/// The argon2 salt Core Lightning uses for the legacy encryption key.
const SALT: &[u8; 16] = b"c-lightning\0\0\0\0\0";
/// libsodium `crypto_pwhash_argon2id_OPSLIMIT_MODERATE`.
const ARGON2_PASSES: u32 = 3;
/// libsodium `crypto_pwhash_argon2id_MEMLIMIT_MODERATE` (256 MiB), in KiB as argon2 counts.
const ARGON2_MEMORY_KIB: u32 = 256 * 1024;

/// The key that encrypts a legacy 73-byte `hsm_secret`: argon2id (v1.3, 3 passes, 256 MiB,
/// one lane) of the passphrase with Core Lightning's salt, as libsodium's `crypto_pwhash`
/// computes it with the MODERATE limits.
///
/// This takes about a second and 256 MiB of memory, on purpose.
///
/// # Errors
/// [`SecretError::KeyDerivation`] when argon2 cannot run.
pub fn legacy_encryption_key(passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32))
        .map_err(|e| SecretError::KeyDerivation(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, SALT, key.as_mut())
        .map_err(|e| SecretError::KeyDerivation(e.to_string()))?;
    Ok(key)
}

/// libsodium `crypto_secretstream_xchacha20poly1305` pull of the one 32-byte message that a
/// legacy `hsm_secret` holds (no additional data). `None` when the MAC does not verify.
pub(super) fn secretstream_decrypt_one(file: &[u8], key: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let (header, rest) = file.split_at(HEADER_LEN);
    let (tag_and_cipher, mac) = rest.split_at(1 + PLAIN_SECRET_LEN);
    // init_pull: the stream key is HChaCha20 of the first 16 header bytes; the nonce is a
    // 32-bit little-endian counter starting at 1, then the last 8 header bytes.
    let mut derived =
        chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), header[..16].into());
    let mut subkey = Zeroizing::new([0u8; 32]);
    subkey.copy_from_slice(&derived);
    derived.as_mut_slice().zeroize();
    let mut nonce = [0u8; 12];
    nonce[0] = 1;
    nonce[4..].copy_from_slice(&header[16..]);
    let stream_at = |block: u64| {
        let mut cipher = chacha20::ChaCha20::new((&*subkey).into(), (&nonce).into());
        cipher.seek(block * 64);
        cipher
    };
    // Block 0 keys Poly1305; block 1 encrypts the tag byte (padded to 64 bytes), and the MAC
    // covers that whole block; blocks 2.. encrypt the message.
    let mut poly_key = Zeroizing::new([0u8; 64]);
    stream_at(0).apply_keystream(poly_key.as_mut());
    let mut tag_block = Zeroizing::new([0u8; 64]);
    tag_block[0] = tag_and_cipher[0];
    stream_at(1).apply_keystream(tag_block.as_mut());
    tag_block[0] = tag_and_cipher[0];
    let cipher = &tag_and_cipher[1..];
    let mut authenticated = Vec::with_capacity(64 + PLAIN_SECRET_LEN + 16);
    authenticated.extend_from_slice(tag_block.as_ref());
    authenticated.extend_from_slice(cipher);
    // Both parts are multiples of 16, so no padding; then adlen (0) and 64 + mlen, LE.
    authenticated.extend_from_slice(&0u64.to_le_bytes());
    authenticated.extend_from_slice(&((64 + PLAIN_SECRET_LEN) as u64).to_le_bytes());
    let expected = poly1305::Poly1305::new(poly_key[..32].into()).compute_unpadded(&authenticated);
    if !bool::from(expected.as_slice().ct_eq(mac)) {
        return None;
    }
    let mut plain = Zeroizing::new([0u8; 32]);
    plain.copy_from_slice(cipher);
    stream_at(2).apply_keystream(plain.as_mut());
    Some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{HsmSecret, HsmSecretKind};

    /// Made with libsodium 1.0.18: `crypto_pwhash` (argon2id13, MODERATE limits, salt
    /// "c-lightning" padded to 16 bytes) of this passphrase, then
    /// `crypto_secretstream_xchacha20poly1305` init_push + push of the secret 0x40..0x5f.
    const LEGACY_PASSPHRASE: &[u8] = b"correct horse battery staple";
    const LEGACY_KEY: &str = "c41d2deebfb5b1094758af1b7149f3703980ff382f4e023623cb256013feed31";
    const LEGACY_FILE: &str = "9ab07286598aa352ba397f0009724c05f0fd8cefe6e28813633562b431d81efd\
        049d8dac3b58f91761d1e21beabc668ca5047673d146855907864ee8085be8e1e2241ad14428ed640e";
    const LEGACY_SECRET: &str = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";

    fn key_from_hex(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn secretstream_decrypts_libsodium_output() {
        let file = hex::decode(LEGACY_FILE).unwrap();
        let secret =
            HsmSecret::from_encrypted_file_bytes(&file, &key_from_hex(LEGACY_KEY)).unwrap();
        assert_eq!(secret.kind(), HsmSecretKind::Encrypted);
        assert_eq!(hex::encode(secret.seed_bytes()), LEGACY_SECRET);
        assert!(matches!(
            secret.to_file_bytes(),
            Err(SecretError::CannotWriteEncrypted)
        ));
    }

    #[test]
    fn secretstream_refuses_wrong_key_and_tampering() {
        let file = hex::decode(LEGACY_FILE).unwrap();
        let mut key = key_from_hex(LEGACY_KEY);
        key[0] ^= 1;
        assert!(matches!(
            HsmSecret::from_encrypted_file_bytes(&file, &key),
            Err(SecretError::WrongPassphrase)
        ));
        for i in [0, 23, 24, 30, 60, 72] {
            let mut bad = file.clone();
            bad[i] ^= 0x80;
            assert!(
                HsmSecret::from_encrypted_file_bytes(&bad, &key_from_hex(LEGACY_KEY)).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    /// The full path with argon2 (256 MiB; several seconds in a debug build).
    #[test]
    fn encrypted_file_opens_with_passphrase() {
        let file = hex::decode(LEGACY_FILE).unwrap();
        let key = legacy_encryption_key(LEGACY_PASSPHRASE).unwrap();
        assert_eq!(hex::encode(&key[..]), LEGACY_KEY);
        let secret = HsmSecret::from_file_bytes(&file, Some(LEGACY_PASSPHRASE)).unwrap();
        assert_eq!(hex::encode(secret.seed_bytes()), LEGACY_SECRET);
    }

    #[test]
    fn encrypted_file_needs_passphrase() {
        let file = hex::decode(LEGACY_FILE).unwrap();
        assert!(matches!(
            HsmSecret::from_file_bytes(&file, None),
            Err(crate::secret::SecretError::PassphraseRequired)
        ));
    }
}
