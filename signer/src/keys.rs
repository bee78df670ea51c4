//! Key derivation, exactly as Core Lightning's hsmd derives keys from its root secret.
//!
//! An operator who moves an `hsm_secret` from Core Lightning to this signer keeps their node
//! id, wallet and channels, because every key here comes out of the same derivation:
//!
//! | key | derivation (HKDF is HKDF-SHA256, RFC 5869) |
//! |---|---|
//! | node key | HKDF(ikm = secret\[..32\], salt = u32 LE counter from 0, info "nodeid"), the first valid key |
//! | BIP32 master | BIP32 master of HKDF(ikm = whole secret, salt = u32 LE counter, info "bip32 seed") |
//! | wallet base | master m/0/0; wallet key i = m/0/0/i (i < 2^31) |
//! | bolt12 base | master m/9735' |
//! | BIP86 base (mnemonic only) | BIP32 master of the 64-byte BIP39 seed itself, m/86'/0'/0'; key i = base/0/i |
//! | `derive_secret(info)` | HKDF(ikm = HKDF(ikm = whole secret, info "derived secrets"), info) |
//! | channel seed | HKDF(ikm = HKDF(ikm = secret\[..32\], info "peer seed"), salt = peer id (33) ‖ dbid (u64 LE), info "per-peer seed") |
//! | channel secrets | see [`channel`] |
//!
//! "Whole secret" is 32 bytes for a plain secret and the 64-byte BIP39 seed for a mnemonic
//! one; "secret\[..32\]" is its first 32 bytes either way.

use bitcoin::bip32::{ChildNumber, Xpriv, Xpub};
use bitcoin::NetworkKind;
use hkdf::Hkdf;
use secp256k1::{ecdh::SharedSecret, Keypair, PublicKey, Scalar, SecretKey, SECP256K1};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

use crate::secret::{HsmSecret, HsmSecretKind};

pub mod channel;
#[cfg(test)]
pub(crate) mod corpus;
#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod vls_recorded_tests;

pub use channel::{ChannelBasepoints, ChannelSecrets};

/// BIP32 version bytes of a mainnet extended public key (`xpub`).
pub const BIP32_MAINNET_PUBLIC: u32 = 0x0488_B21E;
/// BIP32 version bytes of a mainnet extended private key (`xprv`).
pub const BIP32_MAINNET_PRIVATE: u32 = 0x0488_ADE4;
/// BIP32 version bytes of a testnet/regtest/signet extended public key (`tpub`).
pub const BIP32_TESTNET_PUBLIC: u32 = 0x0435_87CF;
/// BIP32 version bytes of a testnet/regtest/signet extended private key (`tprv`).
pub const BIP32_TESTNET_PRIVATE: u32 = 0x0435_8394;

/// The child index of the bolt12 base key under the BIP32 master: 9735' (⚡).
const BOLT12_CHILD: u32 = 9735;
/// BIP86 purpose.
const BIP86_PURPOSE: u32 = 86;

/// Why a key could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `hsmd_init` named BIP32 version bytes that are neither mainnet nor testnet.
    #[error("unknown BIP32 key version (public {public:#010x}, private {private:#010x})")]
    UnknownBip32Version {
        /// The public version bytes asked for.
        public: u32,
        /// The private version bytes asked for.
        private: u32,
    },
    /// A wallet index of 2^31 or more (hardened) was asked for; hsmd treats this as fatal.
    #[error("wallet key index {0} too great (must be below 2^31)")]
    IndexTooGreat(u32),
    /// A BIP86 key was asked for, but the root secret is not a mnemonic (only a 64-byte BIP39
    /// seed has a BIP86 tree).
    #[error("BIP86 keys need a mnemonic hsm_secret")]
    NoBip86,
    /// A commitment number of 2^48 or more: the shachain has no secret for it.
    #[error("commitment number {0} out of range (must be below 2^48)")]
    CommitmentNumberTooLarge(u64),
    /// A derivation produced an invalid key or tweak. This happens with probability about
    /// 2^-128 for honest input, or when a peer supplies a point crafted to cancel ours out.
    #[error("key derivation produced an unusable key: {0}")]
    Unusable(&'static str),
}

/// Which BIP32 version bytes the extended keys carry: chosen by `hsmd_init`'s
/// `bip32_key_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bip32Version {
    /// `xpub` / `xprv`.
    Mainnet,
    /// `tpub` / `tprv` (testnet, signet, regtest).
    Testnet,
}

impl Bip32Version {
    /// The version named by `hsmd_init`'s (public, private) version bytes.
    ///
    /// Each must be a known mainnet or testnet value. hsmd serialises the public key with the
    /// network of the *private* version (libwally's rule), so a mixed pair is accepted and the
    /// private version decides.
    ///
    /// # Errors
    /// [`KeyError::UnknownBip32Version`] when either value is unknown.
    pub fn from_init(public: u32, private: u32) -> Result<Bip32Version, KeyError> {
        let known_public = matches!(public, BIP32_MAINNET_PUBLIC | BIP32_TESTNET_PUBLIC);
        match private {
            BIP32_MAINNET_PRIVATE if known_public => Ok(Bip32Version::Mainnet),
            BIP32_TESTNET_PRIVATE if known_public => Ok(Bip32Version::Testnet),
            _ => Err(KeyError::UnknownBip32Version { public, private }),
        }
    }

    /// The rust-bitcoin network kind with these version bytes.
    pub fn network_kind(self) -> NetworkKind {
        match self {
            Bip32Version::Mainnet => NetworkKind::Main,
            Bip32Version::Testnet => NetworkKind::Test,
        }
    }
}

/// Every long-lived key of the node, derived once from the root secret.
///
/// Guarantees: each method returns the key Core Lightning's hsmd would use for the same
/// secret and arguments, the same value every time (nothing here has state); it derives no
/// `Debug` (its `Debug` shows only the node id), and it erases its secrets on drop (best
/// effort for secp256k1 keys, which are `Copy`: copies handed out are the caller's to erase).
pub struct KeyManager {
    kind: HsmSecretKind,
    node_secret: SecretKey,
    node_id: PublicKey,
    /// m/0/0 of the HKDF-derived BIP32 master.
    bip32_base: Xpriv,
    /// m/9735' of the same master.
    bolt12_base: SecretKey,
    /// m/86'/0'/0' of the BIP39 seed; mnemonic secrets only.
    bip86_base: Option<Xpriv>,
    /// Base of `derive_secret` and the bolt12 alias keys.
    derived_secret: Zeroizing<[u8; 32]>,
    /// Base of every channel seed.
    channel_seed_base: Zeroizing<[u8; 32]>,
    /// Channel secrets already derived (an HKDF and five point multiplications each), at most
    /// [`CHANNEL_CACHE`]; emptied when full.
    channels: std::sync::Mutex<ChannelCache>,
}

/// Derived channel secrets by (peer id, dbid).
type ChannelCache = std::collections::HashMap<([u8; 33], u64), std::sync::Arc<ChannelSecrets>>;

/// How many channels' secrets [`KeyManager`] keeps derived.
const CHANNEL_CACHE: usize = 4096;

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("kind", &self.kind)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for KeyManager {
    fn drop(&mut self) {
        self.node_secret.non_secure_erase();
        self.bolt12_base.non_secure_erase();
        self.bip32_base.private_key.non_secure_erase();
        if let Some(base) = self.bip86_base.as_mut() {
            base.private_key.non_secure_erase();
        }
    }
}

impl KeyManager {
    /// Derives every key from `secret`; extended keys carry `version`'s version bytes.
    ///
    /// # Errors
    /// [`KeyError::Unusable`] if a BIP32 derivation fails (probability about 2^-127; hsmd
    /// exits in that case).
    pub fn new(secret: &HsmSecret, version: Bip32Version) -> Result<KeyManager, KeyError> {
        let whole = secret.seed_bytes();
        let first32 = &whole[..32];
        let network = version.network_kind();

        let node_secret = first_valid(
            |salt, out| hkdf(out, salt, first32, b"nodeid"),
            |k| SecretKey::from_slice(k).ok(),
        );
        let mut master = first_valid(
            |salt, out| hkdf(out, salt, whole, b"bip32 seed"),
            |seed| Xpriv::new_master(network, seed).ok(),
        );
        let bip32_base = master
            .derive_priv(SECP256K1, &[normal(0), normal(0)])
            .map_err(|_| KeyError::Unusable("BIP32 m/0/0"))?;
        let bolt12_base = master
            .derive_priv(SECP256K1, &[hardened(BOLT12_CHILD)])
            .map_err(|_| KeyError::Unusable("BIP32 m/9735'"))?
            .private_key;
        let bip86_base = if secret.kind().is_mnemonic() {
            let bip86_path = [hardened(BIP86_PURPOSE), hardened(0), hardened(0)];
            let unusable = |_| KeyError::Unusable("BIP86 m/86'/0'/0'");
            let mut master86 = Xpriv::new_master(network, whole).map_err(unusable)?;
            let base = master86
                .derive_priv(SECP256K1, &bip86_path)
                .map_err(unusable);
            master86.private_key.non_secure_erase();
            Some(base?)
        } else {
            None
        };
        master.private_key.non_secure_erase();
        let mut derived_secret = Zeroizing::new([0u8; 32]);
        hkdf(derived_secret.as_mut(), &[], whole, b"derived secrets");
        let mut channel_seed_base = Zeroizing::new([0u8; 32]);
        hkdf(channel_seed_base.as_mut(), &[], first32, b"peer seed");

        Ok(KeyManager {
            kind: secret.kind(),
            node_id: node_secret.public_key(SECP256K1),
            node_secret,
            bip32_base,
            bolt12_base,
            bip86_base,
            derived_secret,
            channel_seed_base,
            channels: Default::default(),
        })
    }

    /// The kind of root secret the keys come from.
    pub fn secret_kind(&self) -> HsmSecretKind {
        self.kind
    }

    /// The node's secret key (the key of [`KeyManager::node_id`]).
    pub fn node_secret_key(&self) -> &SecretKey {
        &self.node_secret
    }

    /// The node key as a keypair, for BIP340 signatures (bolt12).
    pub fn node_keypair(&self) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &self.node_secret)
    }

    /// The node id: the public key of the node key.
    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }

    /// ECDH with the node key, as `hsmd_ecdh_req` answers it: SHA256 of the compressed shared
    /// point (libsecp256k1's default).
    pub fn ecdh(&self, point: &PublicKey) -> [u8; 32] {
        SharedSecret::new(point, &self.node_secret).secret_bytes()
    }

    /// The wallet base m/0/0 (private).
    pub fn bip32_base(&self) -> &Xpriv {
        &self.bip32_base
    }

    /// The wallet base m/0/0 as the extended public key of `hsmd_init_reply_v4`.
    /// [`Xpub::encode`] gives its 78 wire bytes.
    pub fn bip32_base_xpub(&self) -> Xpub {
        Xpub::from_priv(SECP256K1, &self.bip32_base)
    }

    /// The wallet key m/0/0/`index` (what `check_pubkey` checks).
    ///
    /// # Errors
    /// [`KeyError::IndexTooGreat`] for `index` >= 2^31.
    pub fn wallet_key(&self, index: u32) -> Result<SecretKey, KeyError> {
        let child =
            ChildNumber::from_normal_idx(index).map_err(|_| KeyError::IndexTooGreat(index))?;
        self.bip32_base
            .derive_priv(SECP256K1, &[child])
            .map(|k| k.private_key)
            .map_err(|_| KeyError::Unusable("BIP32 wallet key"))
    }

    /// The BIP86 account m/86'/0'/0' as an extended public key (coin type 0' on every network,
    /// version bytes of the init request), for the `bip86_base` TLV of `hsmd_init_reply_v4`.
    /// `None` unless the root secret is a mnemonic.
    pub fn bip86_base_xpub(&self) -> Option<Xpub> {
        self.bip86_base
            .as_ref()
            .map(|base| Xpub::from_priv(SECP256K1, base))
    }

    /// The BIP86 key m/86'/0'/0'/0/`index` (untweaked; what `check_bip86_pubkey` checks).
    ///
    /// # Errors
    /// [`KeyError::NoBip86`] for a secret that is not a mnemonic; [`KeyError::IndexTooGreat`]
    /// for `index` >= 2^31.
    pub fn bip86_key(&self, index: u32) -> Result<SecretKey, KeyError> {
        let base = self.bip86_base.as_ref().ok_or(KeyError::NoBip86)?;
        let child =
            ChildNumber::from_normal_idx(index).map_err(|_| KeyError::IndexTooGreat(index))?;
        base.derive_priv(SECP256K1, &[normal(0), child])
            .map(|k| k.private_key)
            .map_err(|_| KeyError::Unusable("BIP86 key"))
    }

    /// The key that spends wallet UTXO `index` (one without `close_info`) and signs
    /// `bip137_sign_message`: the BIP86 key for a mnemonic secret (for P2TR *and* P2WPKH
    /// outputs), the m/0/0 wallet key otherwise.
    ///
    /// # Errors
    /// [`KeyError::IndexTooGreat`] for `index` >= 2^31.
    pub fn wallet_utxo_key(&self, index: u32) -> Result<SecretKey, KeyError> {
        if self.bip86_base.is_some() {
            self.bip86_key(index)
        } else {
            self.wallet_key(index)
        }
    }

    /// The bolt12 base key m/9735'; its public key is in `hsmd_init_reply_v4`.
    pub fn bolt12_base_key(&self) -> &SecretKey {
        &self.bolt12_base
    }

    /// The public key of [`KeyManager::bolt12_base_key`].
    pub fn bolt12_base_pubkey(&self) -> PublicKey {
        self.bolt12_base.public_key(SECP256K1)
    }

    /// The key `sign_bolt12` signs with: the node key when `publictweak` is empty, else the
    /// bolt12 payer key `bolt12_base + SHA256(bolt12_base_pubkey ‖ publictweak)`.
    ///
    /// # Errors
    /// [`KeyError::Unusable`] if the tweak is out of range or cancels the key.
    pub fn bolt12_payer_keypair(&self, publictweak: &[u8]) -> Result<Keypair, KeyError> {
        if publictweak.is_empty() {
            return Ok(self.node_keypair());
        }
        let mut sha = Sha256::new();
        sha.update(self.bolt12_base_pubkey().serialize());
        sha.update(publictweak);
        let key = tweak_add(
            self.bolt12_base,
            sha.finalize().into(),
            "bolt12 payer tweak",
        )?;
        Ok(Keypair::from_secret_key(SECP256K1, &key))
    }

    /// The key `sign_bolt12_2` signs with: the node key when `tweakmessage` is empty, else the
    /// node alias `node_key + SHA256(derive_secret(info) ‖ tweakmessage)`.
    ///
    /// # Errors
    /// [`KeyError::Unusable`] if the tweak is out of range or cancels the key.
    pub fn bolt12_alias_keypair(
        &self,
        info: &[u8],
        tweakmessage: &[u8],
    ) -> Result<Keypair, KeyError> {
        if tweakmessage.is_empty() {
            return Ok(self.node_keypair());
        }
        let base = Zeroizing::new(self.derive_secret(info));
        let mut sha = Sha256::new();
        sha.update(&base[..]);
        sha.update(tweakmessage);
        let key = tweak_add(
            self.node_secret,
            sha.finalize().into(),
            "bolt12 alias tweak",
        )?;
        Ok(Keypair::from_secret_key(SECP256K1, &key))
    }

    /// `hsmd_derive_secret`: a 32-byte pseudorandom secret for `info` (for example the SCB
    /// key for "scb secret"); the same `info` always gives the same secret.
    pub fn derive_secret(&self, info: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        hkdf(&mut out, &[], self.derived_secret.as_ref(), info);
        out
    }

    /// The seed of the channel with `peer_id` (its 33 wire bytes, used as given) and `dbid`.
    pub fn channel_seed(&self, peer_id: &[u8; 33], dbid: u64) -> Zeroizing<[u8; 32]> {
        let mut salt = [0u8; 41];
        salt[..33].copy_from_slice(peer_id);
        salt[33..].copy_from_slice(&dbid.to_le_bytes());
        let mut seed = Zeroizing::new([0u8; 32]);
        hkdf(
            seed.as_mut(),
            &salt,
            self.channel_seed_base.as_ref(),
            b"per-peer seed",
        );
        seed
    }

    /// The secrets of the channel with `peer_id` and `dbid` (funding key, basepoint secrets,
    /// shachain seed).
    ///
    /// # Errors
    /// [`KeyError::Unusable`] if a derived secret is not a valid key (probability ~2^-126).
    pub fn channel_secrets(
        &self,
        peer_id: &[u8; 33],
        dbid: u64,
    ) -> Result<std::sync::Arc<ChannelSecrets>, KeyError> {
        let key = (*peer_id, dbid);
        let mut cache = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let secrets = std::sync::Arc::new(ChannelSecrets::from_seed(
            &self.channel_seed(peer_id, dbid),
        )?);
        if cache.len() >= CHANNEL_CACHE {
            cache.clear();
        }
        cache.insert(key, secrets.clone());
        Ok(secrets)
    }

    /// The key of an output that a peer's unilateral close pays to us (`close_info` UTXOs,
    /// `get_output_scriptpubkey`): the channel's payment basepoint secret, or with a
    /// `commitment_point` (channels without `option_static_remotekey`) that secret tweaked by
    /// it as BOLT 3 derives `localpubkey`.
    ///
    /// # Errors
    /// [`KeyError::Unusable`] if a derivation fails.
    pub fn unilateral_close_key(
        &self,
        peer_id: &[u8; 33],
        dbid: u64,
        commitment_point: Option<&PublicKey>,
    ) -> Result<SecretKey, KeyError> {
        let secrets = self.channel_secrets(peer_id, dbid)?;
        match commitment_point {
            None => Ok(secrets.payment_basepoint_secret),
            Some(point) => channel::derive_simple_privkey(&secrets.payment_basepoint_secret, point),
        }
    }
}

/// HKDF-SHA256 into `out` (at most 255 * 32 bytes). An empty salt is the RFC's "no salt".
pub(crate) fn hkdf(out: &mut [u8], salt: &[u8], ikm: &[u8], info: &[u8]) {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out)
        .expect("every output here is far below HKDF's 8160-byte limit");
}

/// hsmd's retry loop: HKDF with salt 0, 1, 2, ... (u32 little-endian) until `accept` takes the
/// 32-byte output. Practically always the first.
fn first_valid<T>(derive: impl Fn(&[u8], &mut [u8]), accept: impl Fn(&[u8]) -> Option<T>) -> T {
    let mut salt: u32 = 0;
    loop {
        let mut out = Zeroizing::new([0u8; 32]);
        derive(&salt.to_le_bytes(), out.as_mut());
        if let Some(value) = accept(out.as_ref()) {
            return value;
        }
        salt = salt
            .checked_add(1)
            .expect("2^32 invalid keys in a row cannot happen");
    }
}

/// `key + tweak`, with the tweak as a big-endian scalar.
pub(crate) fn tweak_add(
    key: SecretKey,
    tweak: [u8; 32],
    what: &'static str,
) -> Result<SecretKey, KeyError> {
    let tweak = Scalar::from_be_bytes(tweak).map_err(|_| KeyError::Unusable(what))?;
    key.add_tweak(&tweak).map_err(|_| KeyError::Unusable(what))
}

fn normal(index: u32) -> ChildNumber {
    ChildNumber::Normal { index }
}

fn hardened(index: u32) -> ChildNumber {
    ChildNumber::Hardened { index }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(byte: u8) -> HsmSecret {
        HsmSecret::from_plain([byte; 32])
    }

    #[test]
    fn bip32_versions() {
        assert_eq!(
            Bip32Version::from_init(BIP32_MAINNET_PUBLIC, BIP32_MAINNET_PRIVATE),
            Ok(Bip32Version::Mainnet)
        );
        assert_eq!(
            Bip32Version::from_init(BIP32_TESTNET_PUBLIC, BIP32_TESTNET_PRIVATE),
            Ok(Bip32Version::Testnet)
        );
        assert_eq!(
            Bip32Version::from_init(BIP32_TESTNET_PUBLIC, BIP32_MAINNET_PRIVATE),
            Ok(Bip32Version::Mainnet)
        );
        assert!(Bip32Version::from_init(0x483c_7324, BIP32_TESTNET_PRIVATE).is_err());
        assert!(Bip32Version::from_init(BIP32_TESTNET_PUBLIC, 0).is_err());
    }

    #[test]
    fn xpub_version_bytes_follow_the_request() {
        let main = KeyManager::new(&plain(1), Bip32Version::Mainnet).unwrap();
        let test = KeyManager::new(&plain(1), Bip32Version::Testnet).unwrap();
        assert_eq!(
            main.bip32_base_xpub().encode()[..4],
            BIP32_MAINNET_PUBLIC.to_be_bytes()
        );
        assert_eq!(
            test.bip32_base_xpub().encode()[..4],
            BIP32_TESTNET_PUBLIC.to_be_bytes()
        );
        assert_eq!(
            main.bip32_base_xpub().encode()[4..],
            test.bip32_base_xpub().encode()[4..]
        );
        assert_eq!(main.node_id(), test.node_id());
    }

    #[test]
    fn hardened_wallet_index_is_refused() {
        let keys = KeyManager::new(&plain(2), Bip32Version::Testnet).unwrap();
        assert!(keys.wallet_key((1 << 31) - 1).is_ok());
        assert_eq!(
            keys.wallet_key(1 << 31),
            Err(KeyError::IndexTooGreat(1 << 31))
        );
        assert_eq!(
            keys.wallet_utxo_key(u32::MAX),
            Err(KeyError::IndexTooGreat(u32::MAX))
        );
    }

    #[test]
    fn plain_secret_has_no_bip86() {
        let keys = KeyManager::new(&plain(3), Bip32Version::Testnet).unwrap();
        assert!(keys.bip86_base_xpub().is_none());
        assert_eq!(keys.bip86_key(0), Err(KeyError::NoBip86));
        assert_eq!(keys.wallet_utxo_key(5), keys.wallet_key(5));
    }

    #[test]
    fn empty_bolt12_tweaks_mean_the_node_key() {
        let keys = KeyManager::new(&plain(4), Bip32Version::Testnet).unwrap();
        assert_eq!(keys.bolt12_payer_keypair(&[]).unwrap(), keys.node_keypair());
        assert_eq!(
            keys.bolt12_alias_keypair(b"info", &[]).unwrap(),
            keys.node_keypair()
        );
        assert_ne!(
            keys.bolt12_payer_keypair(b"x").unwrap(),
            keys.node_keypair()
        );
        assert_ne!(
            keys.bolt12_alias_keypair(b"info", b"x").unwrap(),
            keys.node_keypair()
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let keys = KeyManager::new(&plain(5), Bip32Version::Testnet).unwrap();
        let shown = format!("{keys:?}");
        for secret in [
            keys.node_secret_key(),
            keys.bolt12_base_key(),
            &keys.bip32_base().private_key,
        ] {
            assert!(
                !shown.contains(&hex::encode(secret.secret_bytes())),
                "{shown}"
            );
        }
    }
}
