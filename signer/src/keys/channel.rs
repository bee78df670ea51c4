//! Per-channel secrets, the shachain of per-commitment secrets, and BOLT 3 key tweaks.
//!
//! A channel's seed (see [`crate::keys::KeyManager::channel_seed`]) expands, as Core
//! Lightning's `derive_basepoints` does, into
//! `HKDF-SHA256(ikm = seed, no salt, info "c-lightning")`, 192 bytes read in this order:
//! funding key, revocation, htlc, payment, delayed-payment basepoint secrets, shachain seed.
//! (Note htlc before payment; the wire order of basepoints is different again: revocation,
//! payment, htlc, delayed_payment.)
//!
//! Per-commitment secret `n` is the BOLT 3 shachain element at index 2^48 - 1 - n.

use crate::memo::Memo;
use secp256k1::{PublicKey, Scalar, SecretKey, SECP256K1};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::LazyLock;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{hkdf, tweak_add, KeyError};

/// The highest commitment number the shachain covers: 2^48 - 1.
pub const MAX_COMMITMENT_NUMBER: u64 = (1 << 48) - 1;

/// A channel's secret keys.
///
/// Guarantees: derived only from the channel seed (so the same seed always gives the same
/// secrets), no derived `Debug` (its `Debug` shows the public basepoints only), and its
/// secrets are erased on drop (the keys best effort, as they are `Copy`).
pub struct ChannelSecrets {
    /// The key of our side of the 2-of-2 funding output.
    pub funding_key: SecretKey,
    /// Secret of the revocation basepoint.
    pub revocation_basepoint_secret: SecretKey,
    /// Secret of the payment basepoint.
    pub payment_basepoint_secret: SecretKey,
    /// Secret of the htlc basepoint.
    pub htlc_basepoint_secret: SecretKey,
    /// Secret of the delayed-payment basepoint.
    pub delayed_payment_basepoint_secret: SecretKey,
    /// Seed of the per-commitment secrets.
    shachain_seed: Zeroizing<[u8; 32]>,
    /// The public side, computed once (five point multiplications).
    basepoints: ChannelBasepoints,
}

/// A channel's public basepoints and funding key, as `get_channel_basepoints_reply` carries
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelBasepoints {
    /// Revocation basepoint.
    pub revocation: PublicKey,
    /// Payment basepoint.
    pub payment: PublicKey,
    /// HTLC basepoint.
    pub htlc: PublicKey,
    /// Delayed-payment basepoint.
    pub delayed_payment: PublicKey,
    /// Our funding public key.
    pub funding_pubkey: PublicKey,
}

impl fmt::Debug for ChannelSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSecrets")
            .field("basepoints", &self.basepoints())
            .finish_non_exhaustive()
    }
}

impl Drop for ChannelSecrets {
    fn drop(&mut self) {
        self.funding_key.non_secure_erase();
        self.revocation_basepoint_secret.non_secure_erase();
        self.payment_basepoint_secret.non_secure_erase();
        self.htlc_basepoint_secret.non_secure_erase();
        self.delayed_payment_basepoint_secret.non_secure_erase();
    }
}

impl ChannelSecrets {
    /// Expands a channel seed as Core Lightning's `derive_basepoints` does.
    ///
    /// # Errors
    /// [`KeyError::Unusable`] if one of the five 32-byte slices is not a valid key.
    pub fn from_seed(seed: &[u8; 32]) -> Result<ChannelSecrets, KeyError> {
        let mut okm = Zeroizing::new([0u8; 192]);
        hkdf(okm.as_mut(), &[], seed, b"c-lightning");
        let key = |i: usize| {
            SecretKey::from_slice(&okm[i * 32..(i + 1) * 32])
                .map_err(|_| KeyError::Unusable("channel secret"))
        };
        let mut shachain_seed = Zeroizing::new([0u8; 32]);
        shachain_seed.copy_from_slice(&okm[160..]);
        let (funding_key, revocation, htlc, payment, delayed) =
            (key(0)?, key(1)?, key(2)?, key(3)?, key(4)?);
        Ok(ChannelSecrets {
            basepoints: ChannelBasepoints {
                revocation: revocation.public_key(SECP256K1),
                payment: payment.public_key(SECP256K1),
                htlc: htlc.public_key(SECP256K1),
                delayed_payment: delayed.public_key(SECP256K1),
                funding_pubkey: funding_key.public_key(SECP256K1),
            },
            funding_key,
            revocation_basepoint_secret: revocation,
            htlc_basepoint_secret: htlc,
            payment_basepoint_secret: payment,
            delayed_payment_basepoint_secret: delayed,
            shachain_seed,
        })
    }

    /// The public basepoints and funding key.
    pub fn basepoints(&self) -> ChannelBasepoints {
        self.basepoints
    }

    /// Per-commitment secret `n` (the shachain element 2^48 - 1 - n). Revealing it revokes
    /// commitment `n`; callers must only do so once `n` is superseded.
    ///
    /// # Errors
    /// [`KeyError::CommitmentNumberTooLarge`] for `n` > [`MAX_COMMITMENT_NUMBER`].
    pub fn per_commitment_secret(&self, n: u64) -> Result<[u8; 32], KeyError> {
        if n > MAX_COMMITMENT_NUMBER {
            return Err(KeyError::CommitmentNumberTooLarge(n));
        }
        Ok(shachain_from_seed(
            &self.shachain_seed,
            MAX_COMMITMENT_NUMBER - n,
        ))
    }

    /// Per-commitment point `n`: the public key of [`ChannelSecrets::per_commitment_secret`].
    ///
    /// # Errors
    /// [`KeyError::CommitmentNumberTooLarge`] for `n` > [`MAX_COMMITMENT_NUMBER`], and
    /// [`KeyError::Unusable`] if the secret is not a valid key (probability ~2^-128).
    ///
    /// Remembered per (channel, `n`) in a bounded table (the channel named by its revocation
    /// basepoint, public): a commitment round asks for the same points several times, and each
    /// costs up to 48 hashes and a point multiplication. Only public points are kept.
    pub fn per_commitment_point(&self, n: u64) -> Result<PublicKey, KeyError> {
        static MEMO: LazyLock<Memo<(PublicKey, u64), Result<PublicKey, KeyError>>> =
            LazyLock::new(|| Memo::new(crate::bolt3::MEMO_CAPACITY));
        if n > MAX_COMMITMENT_NUMBER {
            return Err(KeyError::CommitmentNumberTooLarge(n));
        }
        MEMO.get_or((self.basepoints.revocation, n), || {
            let secret = Zeroizing::new(self.per_commitment_secret(n)?);
            SecretKey::from_slice(secret.as_ref())
                .map(|k| k.public_key(SECP256K1))
                .map_err(|_| KeyError::Unusable("per-commitment secret"))
        })
    }

    /// Whether `suggested` is per-commitment secret `n` (`check_future_secret`), compared in
    /// constant time.
    ///
    /// # Errors
    /// [`KeyError::CommitmentNumberTooLarge`] for `n` > [`MAX_COMMITMENT_NUMBER`].
    pub fn is_per_commitment_secret(&self, n: u64, suggested: &[u8; 32]) -> Result<bool, KeyError> {
        let secret = Zeroizing::new(self.per_commitment_secret(n)?);
        Ok(bool::from(secret.ct_eq(suggested)))
    }
}

/// BOLT 3 `generate_from_seed`: the shachain element at `index` (only its low 48 bits count).
pub fn shachain_from_seed(seed: &[u8; 32], index: u64) -> [u8; 32] {
    let mut p = *seed;
    for bit in (0..48).rev() {
        if index & (1 << bit) != 0 {
            p[bit / 8] ^= 1 << (bit % 8);
            p = Sha256::digest(p).into();
        }
    }
    p
}

/// BOLT 3 key tweak `SHA256(per_commitment_point ‖ basepoint)`.
fn simple_tweak(basepoint: &PublicKey, per_commitment_point: &PublicKey) -> [u8; 32] {
    let mut sha = Sha256::new();
    sha.update(per_commitment_point.serialize());
    sha.update(basepoint.serialize());
    sha.finalize().into()
}

/// BOLT 3 `localpubkey`/`htlcpubkey`/`delayedpubkey` secret:
/// `basepoint_secret + SHA256(per_commitment_point ‖ basepoint)`.
///
/// # Errors
/// [`KeyError::Unusable`] if the tweak is out of range or cancels the key.
pub fn derive_simple_privkey(
    basepoint_secret: &SecretKey,
    per_commitment_point: &PublicKey,
) -> Result<SecretKey, KeyError> {
    let basepoint = basepoint_secret.public_key(SECP256K1);
    tweak_add(
        *basepoint_secret,
        simple_tweak(&basepoint, per_commitment_point),
        "BOLT 3 key tweak",
    )
}

/// BOLT 3 public key of [`derive_simple_privkey`]:
/// `basepoint + SHA256(per_commitment_point ‖ basepoint)·G`.
///
/// # Errors
/// [`KeyError::Unusable`] if the tweak is out of range or cancels the point.
pub fn derive_simple_pubkey(
    basepoint: &PublicKey,
    per_commitment_point: &PublicKey,
) -> Result<PublicKey, KeyError> {
    static MEMO: LazyLock<Memo<(PublicKey, PublicKey), Result<PublicKey, KeyError>>> =
        LazyLock::new(|| Memo::new(crate::bolt3::MEMO_CAPACITY));
    MEMO.get_or((*basepoint, *per_commitment_point), || {
        compute_simple_pubkey(basepoint, per_commitment_point)
    })
}

fn compute_simple_pubkey(
    basepoint: &PublicKey,
    per_commitment_point: &PublicKey,
) -> Result<PublicKey, KeyError> {
    let tweak = Scalar::from_be_bytes(simple_tweak(basepoint, per_commitment_point))
        .map_err(|_| KeyError::Unusable("BOLT 3 key tweak"))?;
    basepoint
        .add_exp_tweak(SECP256K1, &tweak)
        .map_err(|_| KeyError::Unusable("BOLT 3 key tweak"))
}

/// BOLT 3 `revocationprivkey`:
/// `revocation_basepoint_secret · SHA256(revocation_basepoint ‖ per_commitment_point)
///  + per_commitment_secret · SHA256(per_commitment_point ‖ revocation_basepoint)`.
///
/// # Errors
/// [`KeyError::Unusable`] if a factor is out of range or the sum is zero.
pub fn derive_revocation_privkey(
    revocation_basepoint_secret: &SecretKey,
    per_commitment_secret: &SecretKey,
) -> Result<SecretKey, KeyError> {
    let basepoint = revocation_basepoint_secret
        .public_key(SECP256K1)
        .serialize();
    let point = per_commitment_secret.public_key(SECP256K1).serialize();
    let factor = |first: &[u8], second: &[u8]| {
        let hash: [u8; 32] = Sha256::new()
            .chain_update(first)
            .chain_update(second)
            .finalize()
            .into();
        Scalar::from_be_bytes(hash).map_err(|_| KeyError::Unusable("revocation key factor"))
    };
    let unusable = |_| KeyError::Unusable("revocation key");
    let from_base = revocation_basepoint_secret
        .mul_tweak(&factor(&basepoint, &point)?)
        .map_err(unusable)?;
    let from_point = per_commitment_secret
        .mul_tweak(&factor(&point, &basepoint)?)
        .map_err(unusable)?;
    from_base
        .add_tweak(&Scalar::from(from_point))
        .map_err(unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// BOLT 3 Appendix D, "Generation Tests".
    #[test]
    fn shachain_matches_bolt3_vectors() {
        let zeros = [0u8; 32];
        let ones = [0xffu8; 32];
        let cases: [(&[u8; 32], u64, &str); 4] = [
            (
                &zeros,
                281474976710655,
                "02a40c85b6f28da08dfdbe0926c53fab2de6d28c10301f8f7c4073d5e42e3148",
            ),
            (
                &ones,
                281474976710655,
                "7cc854b54e3e0dcdb010d7a3fee464a9687be6e8db3be6854c475621e007a5dc",
            ),
            (
                &ones,
                0xaaaaaaaaaaa,
                "56f4008fb007ca9acf0e15b054d5c9fd12ee06cea347914ddbaed70d1c13a528",
            ),
            (
                &ones,
                0x555555555555,
                "9015daaeb06dba4ccc05b91b2f73bd54405f2be9f217fbacd3c5ac2e62327d31",
            ),
        ];
        for (seed, index, expected) in cases {
            assert_eq!(
                hex::encode(shachain_from_seed(seed, index)),
                expected,
                "index {index:#x}"
            );
        }
        assert_eq!(
            hex::encode(shachain_from_seed(&[1u8; 32], 1)),
            "915c75942a26bb3a433a8ce2cb0427c29ec6c1775cfc78328b57f6ba7bfeaa9c"
        );
    }

    /// BOLT 3 Appendix E, "Key Derivation Test Vectors".
    #[test]
    fn key_tweaks_match_bolt3_vectors() {
        let base_secret = SecretKey::from_slice(&bytes32(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ))
        .unwrap();
        let per_commitment_secret = SecretKey::from_slice(&bytes32(
            "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100",
        ))
        .unwrap();
        let per_commitment_point = per_commitment_secret.public_key(SECP256K1);
        assert_eq!(
            per_commitment_point.to_string(),
            "025f7117a78150fe2ef97db7cfc83bd57b2e2c0d0dd25eaf467a4a1c2a45ce1486"
        );
        let basepoint = base_secret.public_key(SECP256K1);
        assert_eq!(
            basepoint.to_string(),
            "036d6caac248af96f6afa7f904f550253a0f3ef3f5aa2fe6838a95b216691468e2"
        );

        let local = derive_simple_privkey(&base_secret, &per_commitment_point).unwrap();
        assert_eq!(
            hex::encode(local.secret_bytes()),
            "cbced912d3b21bf196a766651e436aff192362621ce317704ea2f75d87e7be0f"
        );
        let local_pub = derive_simple_pubkey(&basepoint, &per_commitment_point).unwrap();
        assert_eq!(
            local_pub.to_string(),
            "0235f2dbfaa89b57ec7b055afe29849ef7ddfeb1cefdb9ebdc43f5494984db29e5"
        );
        assert_eq!(local_pub, local.public_key(SECP256K1));

        let revocation = derive_revocation_privkey(&base_secret, &per_commitment_secret).unwrap();
        assert_eq!(
            hex::encode(revocation.secret_bytes()),
            "d09ffff62ddb2297ab000cc85bcb4283fdeb6aa052affbc9dddcf33b61078110"
        );
        assert_eq!(
            revocation.public_key(SECP256K1).to_string(),
            "02916e326636d19c33f13e8c0c3a03dd157f332f3e99c317c141dd865eb01f8ff0"
        );
    }

    #[test]
    fn commitment_numbers_beyond_the_shachain_are_refused() {
        let secrets = ChannelSecrets::from_seed(&[9u8; 32]).unwrap();
        assert!(secrets.per_commitment_point(MAX_COMMITMENT_NUMBER).is_ok());
        assert_eq!(
            secrets.per_commitment_secret(MAX_COMMITMENT_NUMBER + 1),
            Err(KeyError::CommitmentNumberTooLarge(
                MAX_COMMITMENT_NUMBER + 1
            ))
        );
        let secret = secrets.per_commitment_secret(7).unwrap();
        assert!(secrets.is_per_commitment_secret(7, &secret).unwrap());
        assert!(!secrets.is_per_commitment_secret(8, &secret).unwrap());
    }

    #[test]
    fn debug_shows_no_secret() {
        let secrets = ChannelSecrets::from_seed(&[9u8; 32]).unwrap();
        let shown = format!("{secrets:?}");
        assert!(!shown.contains(&hex::encode(secrets.funding_key.secret_bytes())));
        assert!(!shown.contains(&hex::encode(secrets.per_commitment_secret(0).unwrap())));
    }
}
