//! PSBT signing exactly as Core Lightning's hsmd does it with libwally, so that the PSBT of a
//! `sign_withdrawal`, `sign_anchorspend` or `sign_htlc_tx_mingle` reply comes out byte for
//! byte as hsmd's.
//!
//! What hsmd does, and [`WallyPsbt`] reproduces:
//!
//! - It works on the PSBT after converting it to version 2 and back, which raises an unsigned
//!   transaction version below 2 to 2 (in what is signed and in the reply) and drops the
//!   witnesses of `non_witness_utxo` transactions from the reply.
//! - For each of our UTXOs it first records the spending key on the PSBT input
//!   ([`WallyPsbt::add_pubkey`]): a BIP32 derivation (or, for P2TR, a taproot BIP32
//!   derivation) whose fingerprint is the first 4 bytes of HASH160 of the compressed key and
//!   whose path is the single step `0`.
//! - Then it signs with that key like `wally_psbt_sign` ([`WallyPsbt::sign`]): every input
//!   whose derivations name the key and that has no signature from it yet gets one. ECDSA
//!   signatures (low-R grinding as libwally does it, [`sign_ecdsa_wally_grind`]) go into the
//!   partial signatures; an input whose UTXO is P2TR gets a BIP86 key-path signature (tweaked
//!   by the input's merkle root, if any) in `tap_key_sig`. Nothing is finalized.
//! - Finalized inputs are serialized without their partial signatures, sighash type,
//!   scripts and derivations ([`WallyPsbt::into_reply`]).
//!
//! Where libwally would fail (no UTXO, a script that does not match, an unknown script type)
//! this returns [`SignerError::BadRequest`] instead: hsmd exits in these cases, and every
//! request that signs PSBTs comes from lightningd, whose bad requests stop the signer too.

use crate::policy::Policy;
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, KeySource};
use bitcoin::hashes::Hash;
use bitcoin::key::TapTweak;
use bitcoin::psbt::{Input, Psbt};
use bitcoin::sighash::{EcdsaSighashType, SighashCache, TapSighashType};
use bitcoin::{transaction, Amount, CompressedPublicKey, OutPoint, PubkeyHash, ScriptBuf, TxOut};
use secp256k1::{Keypair, Message, PublicKey, SecretKey, SECP256K1};

use crate::error::{Result, SignerError};
use crate::sign::{
    segwit_v0_sighash, sign_ecdsa_wally_grind, sign_schnorr_no_aux, taproot_key_spend_sighash,
};

/// The amount spent by input `index` of `psbt`, as hsmd's `psbt_input_get_amount` finds it:
/// the input's `witness_utxo`, else the output it spends of its `non_witness_utxo`.
///
/// # Errors
/// [`SignerError::BadRequest`] when the PSBT has no such input or the input carries neither
/// (hsmd aborts there).
pub(crate) fn input_amount(psbt: &Psbt, index: usize) -> Result<Amount> {
    let input = psbt.inputs.get(index).ok_or_else(|| {
        SignerError::BadRequest(format!(
            "PSBT has no input {index} (it has {})",
            psbt.inputs.len()
        ))
    })?;
    utxo_of(psbt, index, input)
        .map(|utxo| utxo.value)
        .ok_or_else(|| SignerError::BadRequest(format!("PSBT input {index} has no UTXO amount")))
}

/// The output spent by input `index`: its `witness_utxo`, else the output of its
/// `non_witness_utxo` at the spent index (libwally's `utxo_from_input`).
pub(crate) fn utxo_of<'a>(psbt: &Psbt, index: usize, input: &'a Input) -> Option<&'a TxOut> {
    if let Some(utxo) = &input.witness_utxo {
        return Some(utxo);
    }
    let vout = psbt.unsigned_tx.input.get(index)?.previous_output.vout;
    input
        .non_witness_utxo
        .as_ref()?
        .output
        .get(usize::try_from(vout).ok()?)
}

/// `onchain-sighash-all`.
pub(crate) const SIGHASH_ALL: &str = "onchain-sighash-all";

/// A PSBT as hsmd holds it while signing; see the module documentation.
pub(crate) struct WallyPsbt {
    psbt: Psbt,
}

impl WallyPsbt {
    /// Takes the PSBT of a request (version 2 conversion included).
    pub(crate) fn new(mut psbt: Psbt) -> WallyPsbt {
        // libwally's v0 -> v2 conversion: "v2 requires a tx version of at least 2".
        let version = psbt.unsigned_tx.version.0;
        if (version as u32) < 2 {
            psbt.unsigned_tx.version = transaction::Version::TWO;
        }
        WallyPsbt { psbt }
    }

    /// The PSBT as it is now.
    #[cfg(test)]
    pub(crate) fn psbt(&self) -> &Psbt {
        &self.psbt
    }

    /// The indexes of the inputs spending `outpoint`, in order.
    pub(crate) fn inputs_spending(&self, outpoint: OutPoint) -> Vec<usize> {
        let tx = &self.psbt.unsigned_tx;
        (0..tx.input.len())
            .filter(|&i| tx.input[i].previous_output == outpoint)
            .collect()
    }

    /// hsmd's `psbt_input_add_pubkey`: records `pubkey` as a key of input `index`, as a taproot
    /// derivation (x-only key, no leaf hashes) if `taproot`, else as a BIP32 derivation. A key
    /// already recorded is left as it is.
    pub(crate) fn add_pubkey(&mut self, index: usize, pubkey: &PublicKey, taproot: bool) {
        let Some(input) = self.psbt.inputs.get_mut(index) else {
            return;
        };
        let hash = CompressedPublicKey(*pubkey).pubkey_hash().to_byte_array();
        let fingerprint = Fingerprint::from([hash[0], hash[1], hash[2], hash[3]]);
        let source: KeySource = (
            fingerprint,
            DerivationPath::from(vec![ChildNumber::Normal { index: 0 }]),
        );
        if taproot {
            let (xonly, _) = pubkey.x_only_public_key();
            input
                .tap_key_origins
                .entry(xonly)
                .or_insert_with(|| (Vec::new(), source));
        } else {
            input.bip32_derivation.entry(*pubkey).or_insert(source);
        }
    }

    /// Sets the witness script of input `index` and makes its `witness_utxo` the P2WSH output
    /// of that script with `amount` (hsmd does this for `option_anchors` close outputs).
    pub(crate) fn set_p2wsh_input(
        &mut self,
        index: usize,
        witness_script: ScriptBuf,
        amount: Amount,
    ) {
        let Some(input) = self.psbt.inputs.get_mut(index) else {
            return;
        };
        input.witness_utxo = Some(TxOut {
            value: amount,
            script_pubkey: ScriptBuf::new_p2wsh(&witness_script.wscript_hash()),
        });
        input.witness_script = Some(witness_script);
    }

    /// `wally_psbt_sign` with `key`: signs every input whose derivations name `key`'s public
    /// key and that has no signature from it yet.
    ///
    /// # Errors
    /// [`SignerError::BadRequest`] when an input to sign lacks what signing needs (its UTXO,
    /// a matching redeem or witness script, a known script type, a standard sighash type); no
    /// input is signed then.
    ///
    /// `onchain-sighash-all`: an input asking for another sighash type than `SIGHASH_ALL`
    /// (taproot: `DEFAULT` or `ALL`) would let the node change the transaction after we signed
    /// (`NONE`: any outputs; `SINGLE`: the other outputs; `ANYONECANPAY`: other inputs); the
    /// policy refuses it before anything is signed.
    pub(crate) fn sign(&mut self, key: &SecretKey, policy: &Policy) -> Result<()> {
        let pubkey = key.public_key(SECP256K1);
        let mut signed = self.psbt.clone();
        for index in 0..signed.inputs.len() {
            if wants_signature(&signed.inputs[index], &pubkey) {
                let raw = signed.inputs[index].sighash_type.map_or(0, |t| t.to_u32());
                policy.check(SIGHASH_ALL, raw == 0 || raw == 1, || {
                    format!(
                        "input {index} asks for sighash type {raw:#x}: our inputs are signed with SIGHASH_ALL only"
                    )
                })?;
                sign_input(&mut signed, index, key, &pubkey)?;
            }
        }
        self.psbt = signed;
        Ok(())
    }

    /// The PSBT of hsmd's reply: `non_witness_utxo` transactions without witnesses, finalized
    /// inputs without the fields libwally leaves out of them.
    pub(crate) fn into_reply(mut self) -> Psbt {
        for input in &mut self.psbt.inputs {
            if let Some(tx) = input.non_witness_utxo.as_mut() {
                for txin in &mut tx.input {
                    txin.witness.clear();
                }
            }
            if input.final_script_sig.is_some() || input.final_script_witness.is_some() {
                input.partial_sigs.clear();
                input.sighash_type = None;
                input.redeem_script = None;
                input.witness_script = None;
                input.bip32_derivation.clear();
            }
        }
        self.psbt
    }
}

/// libwally's choice of the inputs a key signs: the key is among the BIP32 derivations and
/// has not signed yet, or (without a key-path signature yet) among the taproot derivations.
fn wants_signature(input: &Input, pubkey: &PublicKey) -> bool {
    if input.bip32_derivation.contains_key(pubkey) {
        let signed = [true, false].iter().any(|&compressed| {
            input.partial_sigs.contains_key(&bitcoin::PublicKey {
                compressed,
                inner: *pubkey,
            })
        });
        return !signed;
    }
    input.tap_key_sig.is_none()
        && input
            .tap_key_origins
            .contains_key(&pubkey.x_only_public_key().0)
}

fn bad(index: usize, what: impl std::fmt::Display) -> SignerError {
    SignerError::BadRequest(format!("cannot sign PSBT input {index}: {what}"))
}

/// Signs input `index` with `key` as `wally_psbt_sign_input_bip32` does.
fn sign_input(psbt: &mut Psbt, index: usize, key: &SecretKey, pubkey: &PublicKey) -> Result<()> {
    let input = &psbt.inputs[index];
    let utxo = utxo_of(psbt, index, input).ok_or_else(|| bad(index, "no UTXO"))?;
    let script = signing_script(input, utxo).map_err(|e| bad(index, e))?;
    let raw_sighash = input.sighash_type.map_or(0, |t| t.to_u32());
    if raw_sighash & 0xffff_ff00 != 0 {
        return Err(bad(index, format!("sighash type {raw_sighash:#x}")));
    }

    if utxo.script_pubkey.is_p2tr() {
        if input.witness_utxo.is_none() && !prevout_matches(psbt, index) {
            return Err(bad(index, "non_witness_utxo is not the spent transaction"));
        }
        let sighash_type =
            TapSighashType::from_consensus_u8(raw_sighash as u8).map_err(|e| bad(index, e))?;
        let prevouts = (0..psbt.inputs.len())
            .map(|i| utxo_of(psbt, i, &psbt.inputs[i]).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(index, "taproot signing needs the UTXO of every input"))?;
        let msg = taproot_key_spend_sighash(&psbt.unsigned_tx, index, &prevouts, sighash_type)
            .map_err(|e| bad(index, e))?;
        let merkle_root = input.tap_merkle_root;
        let keypair = Keypair::from_secret_key(SECP256K1, key)
            .tap_tweak(SECP256K1, merkle_root)
            .to_keypair();
        let signature = sign_schnorr_no_aux(&msg, &keypair);
        psbt.inputs[index].tap_key_sig = Some(bitcoin::taproot::Signature {
            signature,
            sighash_type,
        });
        return Ok(());
    }

    if !psbt.inputs[index].bip32_derivation.contains_key(pubkey) {
        // libwally would file the signature under an unrelated key here.
        return Err(bad(index, "a taproot key for an input that is not P2TR"));
    }
    let sighash_type = if raw_sighash == 0 {
        EcdsaSighashType::All
    } else {
        EcdsaSighashType::from_standard(raw_sighash).map_err(|e| bad(index, e))?
    };
    let msg = if input.witness_utxo.is_some() {
        let script_code = segwit_script_code(input, &script).map_err(|e| bad(index, e))?;
        segwit_v0_sighash(
            &psbt.unsigned_tx,
            index,
            &script_code,
            utxo.value,
            sighash_type,
        )
        .map_err(|e| bad(index, e))?
    } else {
        if !prevout_matches(psbt, index) {
            return Err(bad(index, "non_witness_utxo is not the spent transaction"));
        }
        let hash = SighashCache::new(&psbt.unsigned_tx)
            .legacy_signature_hash(index, &script, sighash_type.to_u32())
            .map_err(|e| bad(index, e))?;
        Message::from(hash)
    };
    let signature = sign_ecdsa_wally_grind(&msg, key);
    psbt.inputs[index].partial_sigs.insert(
        bitcoin::PublicKey::new(*pubkey),
        bitcoin::ecdsa::Signature {
            signature,
            sighash_type,
        },
    );
    Ok(())
}

/// libwally's `get_signing_script`: the redeem script (which must be the P2SH script of the
/// UTXO) or else the UTXO's scriptPubKey.
fn signing_script(input: &Input, utxo: &TxOut) -> std::result::Result<ScriptBuf, &'static str> {
    match &input.redeem_script {
        Some(redeem) => {
            if ScriptBuf::new_p2sh(&redeem.script_hash()) != utxo.script_pubkey {
                return Err("redeem script does not match the UTXO");
            }
            Ok(redeem.clone())
        }
        None => Ok(utxo.script_pubkey.clone()),
    }
}

/// libwally's `get_scriptcode` for a segwit input: P2PKH of the key hash for P2WPKH, the
/// witness script (which must match) for P2WSH.
fn segwit_script_code(
    input: &Input,
    script: &ScriptBuf,
) -> std::result::Result<ScriptBuf, &'static str> {
    if script.is_p2wpkh() {
        let hash = PubkeyHash::from_slice(&script.as_bytes()[2..22])
            .map_err(|_| "malformed P2WPKH script")?;
        return Ok(ScriptBuf::new_p2pkh(&hash));
    }
    if script.is_p2wsh() {
        let witness_script = input
            .witness_script
            .as_ref()
            .ok_or("P2WSH input without witness script")?;
        if ScriptBuf::new_p2wsh(&witness_script.wscript_hash()) != *script {
            return Err("witness script does not match the UTXO");
        }
        return Ok(witness_script.clone());
    }
    Err("unknown scriptPubKey type")
}

/// Whether input `index`'s `non_witness_utxo` is the transaction its outpoint names.
fn prevout_matches(psbt: &Psbt, index: usize) -> bool {
    let (Some(txin), Some(Some(prev))) = (
        psbt.unsigned_tx.input.get(index),
        psbt.inputs.get(index).map(|i| i.non_witness_utxo.as_ref()),
    ) else {
        return false;
    };
    prev.compute_txid() == txin.previous_output.txid
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::{Sequence, Transaction, TxIn, Txid, Witness};

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).unwrap()
    }

    fn p2wpkh(pubkey: &PublicKey) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&CompressedPublicKey(*pubkey).wpubkey_hash())
    }

    fn psbt_spending(n: usize, version: i32) -> Psbt {
        let tx = Transaction {
            version: transaction::Version(version),
            lock_time: LockTime::ZERO,
            input: (0..n)
                .map(|i| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([i as u8 + 1; 32]),
                        vout: i as u32,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(1000),
                script_pubkey: ScriptBuf::new_op_return([1u8; 4]),
            }],
        };
        Psbt::from_unsigned_tx(tx).unwrap()
    }

    #[test]
    fn missing_utxo_is_an_error_not_a_panic() {
        let k = key(1);
        let mut psbt = WallyPsbt::new(psbt_spending(1, 2));
        psbt.add_pubkey(0, &k.public_key(SECP256K1), false);
        assert!(matches!(
            psbt.sign(&k, &Policy::enforcing()),
            Err(SignerError::BadRequest(_))
        ));
        assert!(input_amount(psbt.psbt(), 0).is_err());
        assert!(input_amount(psbt.psbt(), 5).is_err());
    }

    #[test]
    fn only_sighash_all_is_signed_under_the_policy() {
        let k = key(4);
        let pk = k.public_key(SECP256K1);
        for (ty, ok) in [
            (None, true),
            (Some(0x01), true),
            (Some(0x02), false),
            (Some(0x03), false),
            (Some(0x81), false),
            (Some(0x82), false),
            (Some(0x83), false),
        ] {
            let mut raw = psbt_spending(1, 5);
            raw.inputs[0].witness_utxo = Some(TxOut {
                value: Amount::from_sat(5000),
                script_pubkey: p2wpkh(&pk),
            });
            raw.inputs[0].sighash_type = ty.map(bitcoin::psbt::PsbtSighashType::from_u32);
            let mut psbt = WallyPsbt::new(raw.clone());
            psbt.add_pubkey(0, &pk, false);
            let got = psbt.sign(&k, &Policy::enforcing());
            if ok {
                got.unwrap();
                assert_eq!(psbt.psbt().inputs[0].partial_sigs.len(), 1);
            } else {
                let e = got.unwrap_err();
                assert_eq!(e.rule(), Some(SIGHASH_ALL), "{ty:?}: {e}");
                assert!(
                    psbt.psbt().inputs[0].partial_sigs.is_empty(),
                    "nothing signed"
                );
                // Warn mode signs what was asked, as Core Lightning does.
                let mut lenient = WallyPsbt::new(raw);
                lenient.add_pubkey(0, &pk, false);
                lenient.sign(&k, &Policy::warn_only()).unwrap();
                assert_eq!(lenient.psbt().inputs[0].partial_sigs.len(), 1);
            }
        }
    }

    #[test]
    fn signs_only_inputs_naming_the_key_and_only_once() {
        let (k, other) = (key(2), key(3));
        let pk = k.public_key(SECP256K1);
        let mut raw = psbt_spending(2, 1);
        for input in &mut raw.inputs {
            input.witness_utxo = Some(TxOut {
                value: Amount::from_sat(5000),
                script_pubkey: p2wpkh(&pk),
            });
        }
        let mut psbt = WallyPsbt::new(raw);
        psbt.add_pubkey(1, &pk, false);
        psbt.sign(&other, &Policy::enforcing()).unwrap();
        psbt.sign(&k, &Policy::enforcing()).unwrap();
        let first = psbt.psbt().inputs[1].partial_sigs.clone();
        psbt.sign(&k, &Policy::enforcing()).unwrap();
        let reply = psbt.into_reply();
        assert!(reply.inputs[0].partial_sigs.is_empty());
        assert_eq!(reply.inputs[1].partial_sigs, first);
        assert_eq!(reply.inputs[1].partial_sigs.len(), 1);
        assert_eq!(reply.unsigned_tx.version, transaction::Version::TWO);
        let (fingerprint, path) = &reply.inputs[1].bip32_derivation[&pk];
        assert_eq!(
            fingerprint.as_bytes()[..],
            CompressedPublicKey(pk).pubkey_hash()[..4]
        );
        assert_eq!(path.to_u32_vec(), vec![0]);
    }

    #[test]
    fn mismatched_witness_script_is_refused() {
        let k = key(4);
        let pk = k.public_key(SECP256K1);
        let mut raw = psbt_spending(1, 2);
        raw.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(5000),
            script_pubkey: ScriptBuf::new_p2wsh(&ScriptBuf::from_bytes(vec![0x51]).wscript_hash()),
        });
        raw.inputs[0].witness_script = Some(ScriptBuf::from_bytes(vec![0x52]));
        let mut psbt = WallyPsbt::new(raw);
        psbt.add_pubkey(0, &pk, false);
        assert!(matches!(
            psbt.sign(&k, &Policy::enforcing()),
            Err(SignerError::BadRequest(_))
        ));
        assert!(psbt.psbt().inputs[0].partial_sigs.is_empty());
    }

    #[test]
    fn taproot_needs_every_prevout() {
        let k = key(5);
        let pk = k.public_key(SECP256K1);
        let mut raw = psbt_spending(2, 2);
        let output_key = Keypair::from_secret_key(SECP256K1, &k)
            .tap_tweak(SECP256K1, None)
            .to_keypair()
            .x_only_public_key()
            .0;
        raw.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(5000),
            script_pubkey: ScriptBuf::new_p2tr_tweaked(
                bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(output_key),
            ),
        });
        let mut psbt = WallyPsbt::new(raw.clone());
        psbt.add_pubkey(0, &pk, true);
        assert!(psbt.sign(&k, &Policy::enforcing()).is_err());

        raw.inputs[1].witness_utxo = Some(TxOut {
            value: Amount::from_sat(1),
            script_pubkey: p2wpkh(&key(6).public_key(SECP256K1)),
        });
        let mut psbt = WallyPsbt::new(raw);
        psbt.add_pubkey(0, &pk, true);
        psbt.sign(&k, &Policy::enforcing()).unwrap();
        let sig = psbt.psbt().inputs[0].tap_key_sig.unwrap();
        assert_eq!(sig.sighash_type, TapSighashType::Default);
        let prevouts: Vec<TxOut> = psbt
            .psbt()
            .inputs
            .iter()
            .map(|i| i.witness_utxo.clone().unwrap())
            .collect();
        let msg = taproot_key_spend_sighash(
            &psbt.psbt().unsigned_tx,
            0,
            &prevouts,
            TapSighashType::Default,
        )
        .unwrap();
        SECP256K1
            .verify_schnorr(&sig.signature, &msg, &output_key)
            .unwrap();
    }

    #[test]
    fn reply_drops_non_witness_utxo_witnesses() {
        let mut raw = psbt_spending(1, 2);
        let mut prev = psbt_spending(1, 2).unsigned_tx;
        prev.input[0].witness.push([1u8, 2, 3]);
        raw.inputs[0].non_witness_utxo = Some(prev);
        let reply = WallyPsbt::new(raw).into_reply();
        assert!(reply.inputs[0].non_witness_utxo.as_ref().unwrap().input[0]
            .witness
            .is_empty());
    }
}
