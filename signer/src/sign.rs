//! Signature primitives with Core Lightning's exact nonce choices, and the transaction
//! sighashes they sign.
//!
//! Every signature here is deterministic (RFC 6979 for ECDSA, BIP340 with fixed auxiliary
//! data), so for the same key and digest it is byte-identical to Core Lightning's hsmd. hsmd
//! reaches libsecp256k1 by several code paths that differ in low-R grinding, so the caller
//! must pick the function of the path it reproduces:
//!
//! | function | nonce | hsmd uses it for |
//! |---|---|---|
//! | [`sign_ecdsa_cln_grind`] | RFC 6979, extra data = 32 bytes, first 4 a LE counter from **0**, until R < 2^255 | `sign_hash`: commitment, HTLC, closing, splice and to-us transactions, gossip |
//! | [`sign_ecdsa_wally_grind`] | RFC 6979, first **without** extra data, then counter 1, 2, ... | libwally PSBT signing: `sign_withdrawal`, `sign_anchorspend`, `sign_htlc_tx_mingle` |
//! | [`sign_ecdsa_no_grind`] | plain RFC 6979 | `sign_option_will_fund_offer` |
//! | [`sign_ecdsa_recoverable`] | plain RFC 6979 | `sign_message`, `bip137_sign_message`, `sign_invoice` |
//! | [`sign_schnorr_no_aux`] | BIP340, aux = NULL (libsecp256k1 treats it as 32 zero bytes) | `sign_bolt12`, `sign_bolt12_2`, P2TR key-path wallet inputs |
//!
//! The digests that hsmd signs for its non-transaction messages are in [`digest`].

use bitcoin::key::TapTweak;
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{Amount, Script, Transaction, TxOut};
use secp256k1::ecdsa::{self, RecoverableSignature};
use secp256k1::{schnorr, Keypair, Message, SecretKey, SECP256K1};

#[cfg(test)]
mod corpus_tests;
pub mod digest;

/// Why a transaction sighash could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SighashError {
    /// The input to sign does not exist.
    #[error("input {index} out of range: the transaction has {inputs} inputs")]
    InputOutOfRange {
        /// The input asked for.
        index: usize,
        /// How many inputs the transaction has.
        inputs: usize,
    },
    /// BIP341 refused: prevouts missing or not one per input, or an invalid sighash type.
    #[error("taproot sighash: {0}")]
    Taproot(#[source] bitcoin::sighash::TaprootError),
}

/// ECDSA as Core Lightning's `sign_hash`: RFC 6979 with a 32-byte extra-entropy buffer that
/// is all zero on the first attempt, its first 4 bytes a little-endian counter incremented
/// until the signature has a low R (first byte of the compact form below 0x80).
///
/// Guarantee: deterministic, low-S and low-R (so at most 71 bytes in DER with a sighash
/// byte).
pub fn sign_ecdsa_cln_grind(msg: &Message, key: &SecretKey) -> ecdsa::Signature {
    let mut extra = [0u8; 32];
    let mut counter: u32 = 0;
    loop {
        extra[..4].copy_from_slice(&counter.to_le_bytes());
        let sig = SECP256K1.sign_ecdsa_with_noncedata(msg, key, &extra);
        if has_low_r(&sig) {
            return sig;
        }
        counter = counter.wrapping_add(1);
    }
}

/// ECDSA as libwally's `EC_FLAG_GRIND_R` (and Bitcoin Core): plain RFC 6979 first, then
/// extra entropy with a little-endian counter 1, 2, ... until the signature has a low R.
///
/// This is exactly libsecp256k1-rust's `sign_ecdsa_low_r`. Guarantee: deterministic, low-S
/// and low-R.
pub fn sign_ecdsa_wally_grind(msg: &Message, key: &SecretKey) -> ecdsa::Signature {
    SECP256K1.sign_ecdsa_low_r(msg, key)
}

/// Plain RFC 6979 ECDSA, no grinding (R may be high). Deterministic and low-S.
pub fn sign_ecdsa_no_grind(msg: &Message, key: &SecretKey) -> ecdsa::Signature {
    SECP256K1.sign_ecdsa(msg, key)
}

/// Plain RFC 6979 recoverable ECDSA, no grinding. Deterministic and low-S; see
/// [`recoverable_to_wire`] for hsmd's 65-byte encoding.
pub fn sign_ecdsa_recoverable(msg: &Message, key: &SecretKey) -> RecoverableSignature {
    SECP256K1.sign_ecdsa_recoverable(msg, key)
}

/// A recoverable signature as hsmd sends it: 64-byte compact R‖S, then the recovery id
/// (0..=3) as one byte (BOLT 11's layout).
pub fn recoverable_to_wire(sig: &RecoverableSignature) -> [u8; 65] {
    let (recid, compact) = sig.serialize_compact();
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&compact);
    out[64] = u8::try_from(recid.to_i32()).expect("recovery ids are 0..=3");
    out
}

/// BIP340 Schnorr with no auxiliary randomness, as hsmd's `secp256k1_schnorrsig_sign32(...,
/// NULL)`. libsecp256k1 (since 0.2) hashes a NULL aux exactly like 32 zero bytes, so this
/// equals signing with an all-zero aux. Deterministic.
pub fn sign_schnorr_no_aux(msg: &Message, keypair: &Keypair) -> schnorr::Signature {
    SECP256K1.sign_schnorr_no_aux_rand(msg, keypair)
}

/// The BIP86 output key pair for an internal key: tweaked by `TapTweak(P)` with no script
/// tree, as a P2TR key-path spend of a BIP86 wallet output signs.
pub fn bip86_tweaked_keypair(internal: &SecretKey) -> Keypair {
    Keypair::from_secret_key(SECP256K1, internal)
        .tap_tweak(SECP256K1, None)
        .to_keypair()
}

/// The BIP143 (segwit v0) sighash of input `index`, given its script code and amount: for
/// P2WSH the witness script, for P2WPKH the P2PKH script of the key hash.
///
/// # Errors
/// [`SighashError::InputOutOfRange`] when `index` is not an input of `tx`.
pub fn segwit_v0_sighash(
    tx: &Transaction,
    index: usize,
    script_code: &Script,
    amount: Amount,
    sighash_type: EcdsaSighashType,
) -> Result<Message, SighashError> {
    // `p2wsh_signature_hash` uses its script argument as the script code verbatim.
    let hash = SighashCache::new(tx)
        .p2wsh_signature_hash(index, script_code, amount, sighash_type)
        .map_err(|_| SighashError::InputOutOfRange {
            index,
            inputs: tx.input.len(),
        })?;
    Ok(Message::from(hash))
}

/// The BIP341 key-path sighash of input `index`; `prevouts` are the outputs every input spends,
/// in input order.
///
/// # Errors
/// [`SighashError::InputOutOfRange`] when `index` is not an input of `tx`;
/// [`SighashError::Taproot`] when `prevouts` does not match the inputs.
pub fn taproot_key_spend_sighash(
    tx: &Transaction,
    index: usize,
    prevouts: &[TxOut],
    sighash_type: TapSighashType,
) -> Result<Message, SighashError> {
    // rust-bitcoin does not check the index itself when it signs all inputs.
    if index >= tx.input.len() {
        return Err(SighashError::InputOutOfRange {
            index,
            inputs: tx.input.len(),
        });
    }
    let hash = SighashCache::new(tx)
        .taproot_key_spend_signature_hash(index, &Prevouts::All(prevouts), sighash_type)
        .map_err(SighashError::Taproot)?;
    Ok(Message::from(hash))
}

fn has_low_r(sig: &ecdsa::Signature) -> bool {
    sig.serialize_compact()[0] < 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).unwrap()
    }

    fn msg(byte: u8) -> Message {
        Message::from_digest([byte; 32])
    }

    #[test]
    fn grinding_always_gives_low_r_and_both_styles_agree_when_no_grinding_is_needed() {
        let mut cln_differs = 0;
        for i in 0..64u8 {
            let (m, k) = (msg(i), key(i.wrapping_add(1)));
            let cln = sign_ecdsa_cln_grind(&m, &k);
            let wally = sign_ecdsa_wally_grind(&m, &k);
            let plain = sign_ecdsa_no_grind(&m, &k);
            assert!(has_low_r(&cln) && has_low_r(&wally));
            for sig in [cln, wally, plain] {
                SECP256K1
                    .verify_ecdsa(&m, &sig, &k.public_key(SECP256K1))
                    .unwrap();
            }
            if has_low_r(&plain) {
                // Without grinding both agree with plain RFC 6979 only for wally: CLN's first
                // attempt already carries 32 zero bytes of extra data.
                assert_eq!(wally, plain);
            }
            if cln != wally {
                cln_differs += 1;
            }
        }
        assert!(
            cln_differs > 0,
            "the two grinding styles must be distinguishable"
        );
    }

    #[test]
    fn schnorr_no_aux_is_zero_aux() {
        let keypair = Keypair::from_secret_key(SECP256K1, &key(7));
        let m = msg(9);
        assert_eq!(
            sign_schnorr_no_aux(&m, &keypair),
            SECP256K1.sign_schnorr_with_aux_rand(&m, &keypair, &[0u8; 32])
        );
    }

    #[test]
    fn recoverable_wire_form_recovers_the_key() {
        let (m, k) = (msg(3), key(4));
        let wire = recoverable_to_wire(&sign_ecdsa_recoverable(&m, &k));
        let recid = ecdsa::RecoveryId::from_i32(i32::from(wire[64])).unwrap();
        let sig = RecoverableSignature::from_compact(&wire[..64], recid).unwrap();
        assert_eq!(
            SECP256K1.recover_ecdsa(&m, &sig).unwrap(),
            k.public_key(SECP256K1)
        );
    }

    #[test]
    fn sighash_of_a_missing_input_is_an_error() {
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![],
            output: vec![],
        };
        assert!(matches!(
            segwit_v0_sighash(&tx, 0, Script::new(), Amount::ZERO, EcdsaSighashType::All),
            Err(SighashError::InputOutOfRange {
                index: 0,
                inputs: 0
            })
        ));
        assert!(matches!(
            taproot_key_spend_sighash(&tx, 0, &[], TapSighashType::Default),
            Err(SighashError::InputOutOfRange {
                index: 0,
                inputs: 0
            })
        ));
    }
}
