//! BOLT 3 building blocks the channel handlers need: the funding output's witness script, and
//! the compact storage of the per-commitment secrets a counterparty reveals.
//!
//! Secret storage follows BOLT 3 "Efficient Per-commitment Secret Storage": a secret for
//! shachain index `I` (commitment `n` has `I = 2^48 - 1 - n`) is kept at position
//! `trailing_zeros(I)`, and every secret at a lower position must be derivable from it. At
//! most 49 secrets are kept, and every secret received so far can be derived from them.

use crate::keys::channel::{shachain_from_seed, MAX_COMMITMENT_NUMBER};
use crate::memo::Memo;
use bitcoin::hashes::{hash160, Hash};
use bitcoin::opcodes::all::*;
use bitcoin::script::Builder;
use bitcoin::ScriptBuf;
use secp256k1::{PublicKey, Scalar, SECP256K1};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The funding output's witness script: `2 <key1> <key2> 2 OP_CHECKMULTISIG`, the two funding
/// keys ordered by their compressed serialization (lexicographically smaller first), as BOLT 3
/// specifies and Core Lightning's `bitcoin_redeem_2of2` builds it.
pub fn funding_redeem_script(ours: &PublicKey, theirs: &PublicKey) -> ScriptBuf {
    let (a, b) = if ours.serialize() <= theirs.serialize() {
        (ours, theirs)
    } else {
        (theirs, ours)
    };
    Builder::new()
        .push_int(2)
        .push_slice(a.serialize())
        .push_slice(b.serialize())
        .push_int(2)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script()
}

/// The shachain index of commitment `n`.
fn shachain_index(n: u64) -> u64 {
    MAX_COMMITMENT_NUMBER - n
}

/// Where BOLT 3 stores the secret of index `index`: its count of trailing zero bits (48 for 0).
fn position(index: u64) -> u32 {
    index.trailing_zeros().min(48)
}

/// Derives the secret of `target` from a secret `base` stored at `base_index`, if `target`
/// lies below it in the shachain tree (same bits above the base's position).
fn derive_from(base: &[u8; 32], base_index: u64, target: u64) -> Option<[u8; 32]> {
    let bits = position(base_index);
    if bits >= 48 {
        return Some(shachain_from_seed(base, target));
    }
    let low = (1u64 << bits) - 1;
    (target & !low == base_index & !low).then(|| shachain_from_seed(base, target & low))
}

/// Adds the counterparty's secret for commitment `n` to the compact store `known`
/// (commitment number -> secret), dropping the secrets now derivable from it.
///
/// Returns whether the new secret is consistent with the stored ones (each of them derivable
/// from it where BOLT 3 says it must be). The secret is stored either way: the caller decides,
/// by policy, whether an inconsistent secret may be accepted at all.
pub fn insert_counterparty_secret(
    known: &mut BTreeMap<u64, Vec<u8>>,
    n: u64,
    secret: &[u8; 32],
) -> bool {
    if n > MAX_COMMITMENT_NUMBER {
        return false;
    }
    let index = shachain_index(n);
    let pos = position(index);
    let mut consistent = true;
    known.retain(|&old_n, old_secret| {
        if old_n > MAX_COMMITMENT_NUMBER {
            return false;
        }
        let old_pos = position(shachain_index(old_n));
        if old_pos > pos {
            return true;
        }
        if old_pos < pos
            && derive_from(secret, index, shachain_index(old_n))
                .as_ref()
                .map(|s| &s[..])
                != Some(&old_secret[..])
        {
            consistent = false;
        }
        false
    });
    known.insert(n, secret.to_vec());
    consistent
}

/// The counterparty's secret for commitment `n`, if it was stored or can be derived from the
/// stored ones.
pub fn counterparty_secret(known: &BTreeMap<u64, Vec<u8>>, n: u64) -> Option<[u8; 32]> {
    if n > MAX_COMMITMENT_NUMBER {
        return None;
    }
    let target = shachain_index(n);
    known.iter().find_map(|(&base_n, base)| {
        let base: [u8; 32] = base.as_slice().try_into().ok()?;
        if base_n > MAX_COMMITMENT_NUMBER {
            return None;
        }
        derive_from(&base, shachain_index(base_n), target)
    })
}

/// BOLT 3 `revocationpubkey`: `R·SHA256(R ‖ P) + P·SHA256(P ‖ R)` for revocation basepoint
/// `R` and per-commitment point `P`.
/// Remembered per (basepoint, point) in a bounded table, as a commitment round asks for the
/// same key several times.
pub fn revocation_pubkey(basepoint: &PublicKey, point: &PublicKey) -> Option<PublicKey> {
    static MEMO: LazyLock<Memo<(PublicKey, PublicKey), Option<PublicKey>>> =
        LazyLock::new(|| Memo::new(MEMO_CAPACITY));
    MEMO.get_or((*basepoint, *point), || {
        compute_revocation_pubkey(basepoint, point)
    })
}

/// How many derived BOLT 3 public keys of each kind are remembered: a few rounds' worth of
/// every channel the signer serves at once.
pub(crate) const MEMO_CAPACITY: usize = 4096;

fn compute_revocation_pubkey(basepoint: &PublicKey, point: &PublicKey) -> Option<PublicKey> {
    let factor = |a: &PublicKey, b: &PublicKey| {
        let hash: [u8; 32] = Sha256::new()
            .chain_update(a.serialize())
            .chain_update(b.serialize())
            .finalize()
            .into();
        Scalar::from_be_bytes(hash).ok()
    };
    let from_base = basepoint
        .mul_tweak(SECP256K1, &factor(basepoint, point)?)
        .ok()?;
    let from_point = point
        .mul_tweak(SECP256K1, &factor(point, basepoint)?)
        .ok()?;
    from_base.combine(&from_point).ok()
}

/// BOLT 3 `to_local` witness script.
pub fn to_local_script(
    revocation: &PublicKey,
    to_self_delay: u16,
    delayed: &PublicKey,
) -> ScriptBuf {
    Builder::new()
        .push_opcode(OP_IF)
        .push_slice(revocation.serialize())
        .push_opcode(OP_ELSE)
        .push_int(i64::from(to_self_delay))
        .push_opcode(OP_CSV)
        .push_opcode(OP_DROP)
        .push_slice(delayed.serialize())
        .push_opcode(OP_ENDIF)
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// BOLT 3 anchor witness script of a funding key.
pub fn anchor_script(funding: &PublicKey) -> ScriptBuf {
    Builder::new()
        .push_slice(funding.serialize())
        .push_opcode(OP_CHECKSIG)
        .push_opcode(OP_IFDUP)
        .push_opcode(OP_NOTIF)
        .push_opcode(OP_PUSHNUM_16)
        .push_opcode(OP_CSV)
        .push_opcode(OP_ENDIF)
        .into_script()
}

/// BOLT 3 offered (by the commitment's owner) or received HTLC witness script;
/// `payment_hash160` is `RIPEMD160(payment_hash)`.
#[allow(clippy::too_many_arguments)]
pub fn htlc_script(
    offered: bool,
    revocation: &PublicKey,
    local_htlc: &PublicKey,
    remote_htlc: &PublicKey,
    payment_hash160: &[u8; 20],
    cltv_expiry: u32,
    anchors: bool,
) -> ScriptBuf {
    let revocation_hash = hash160::Hash::hash(&revocation.serialize()).to_byte_array();
    let mut b = Builder::new()
        .push_opcode(OP_DUP)
        .push_opcode(OP_HASH160)
        .push_slice(revocation_hash)
        .push_opcode(OP_EQUAL)
        .push_opcode(OP_IF)
        .push_opcode(OP_CHECKSIG)
        .push_opcode(OP_ELSE)
        .push_slice(remote_htlc.serialize())
        .push_opcode(OP_SWAP)
        .push_opcode(OP_SIZE)
        .push_int(32)
        .push_opcode(OP_EQUAL);
    b = if offered {
        b.push_opcode(OP_NOTIF)
            .push_opcode(OP_DROP)
            .push_int(2)
            .push_opcode(OP_SWAP)
            .push_slice(local_htlc.serialize())
            .push_int(2)
            .push_opcode(OP_CHECKMULTISIG)
            .push_opcode(OP_ELSE)
            .push_opcode(OP_HASH160)
            .push_slice(payment_hash160)
            .push_opcode(OP_EQUALVERIFY)
            .push_opcode(OP_CHECKSIG)
            .push_opcode(OP_ENDIF)
    } else {
        b.push_opcode(OP_IF)
            .push_opcode(OP_HASH160)
            .push_slice(payment_hash160)
            .push_opcode(OP_EQUALVERIFY)
            .push_int(2)
            .push_opcode(OP_SWAP)
            .push_slice(local_htlc.serialize())
            .push_int(2)
            .push_opcode(OP_CHECKMULTISIG)
            .push_opcode(OP_ELSE)
            .push_opcode(OP_DROP)
            .push_int(i64::from(cltv_expiry))
            .push_opcode(OP_CLTV)
            .push_opcode(OP_DROP)
            .push_opcode(OP_CHECKSIG)
            .push_opcode(OP_ENDIF)
    };
    if anchors {
        b = b.push_int(1).push_opcode(OP_CSV).push_opcode(OP_DROP);
    }
    b.push_opcode(OP_ENDIF).into_script()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ChannelSecrets;
    use secp256k1::{SecretKey, SECP256K1};

    #[test]
    fn funding_script_orders_keys_and_is_symmetric() {
        let k1 = SecretKey::from_slice(&[1; 32])
            .unwrap()
            .public_key(SECP256K1);
        let k2 = SecretKey::from_slice(&[2; 32])
            .unwrap()
            .public_key(SECP256K1);
        let s = funding_redeem_script(&k1, &k2);
        assert_eq!(s, funding_redeem_script(&k2, &k1));
        let bytes = s.as_bytes();
        assert_eq!(bytes.len(), 71);
        assert_eq!(bytes[0], 0x52);
        assert!(bytes[2..35] < bytes[36..69]);
        assert_eq!(&bytes[69..], &[0x52, 0xae]);
    }

    #[test]
    fn compact_store_keeps_every_secret_derivable() {
        let secrets = ChannelSecrets::from_seed(&[7; 32]).unwrap();
        let mut known = BTreeMap::new();
        for n in 1000..1300 {
            let s = secrets.per_commitment_secret(n).unwrap();
            assert!(
                insert_counterparty_secret(&mut known, n, &s),
                "commitment {n}"
            );
            assert!(known.len() <= 49);
        }
        for n in 1000..1300 {
            assert_eq!(
                counterparty_secret(&known, n),
                Some(secrets.per_commitment_secret(n).unwrap())
            );
        }
        assert_eq!(counterparty_secret(&known, 1300), None);
    }

    #[test]
    fn compact_store_detects_a_secret_from_another_chain() {
        let secrets = ChannelSecrets::from_seed(&[7; 32]).unwrap();
        let other = ChannelSecrets::from_seed(&[8; 32]).unwrap();
        let mut known = BTreeMap::new();
        assert!(insert_counterparty_secret(
            &mut known,
            0,
            &secrets.per_commitment_secret(0).unwrap()
        ));
        // Commitment 1 has index 2^48 - 2: position 1, so commitment 0 must derive from it.
        assert!(!insert_counterparty_secret(
            &mut known,
            1,
            &other.per_commitment_secret(1).unwrap()
        ));
    }
}

/// BOLT 3 weights of the HTLC-timeout and HTLC-success transactions (their fee, except with
/// zero-fee anchors, where they pay none).
const HTLC_TIMEOUT_WEIGHT: u64 = 663;
const HTLC_SUCCESS_WEIGHT: u64 = 703;

/// The BOLT 3 second-stage transaction of the HTLC output `htlc` of a commitment: the
/// HTLC-timeout transaction (`timeout`: an HTLC the commitment's owner offered, spendable after
/// `cltv_expiry`) or the HTLC-success one, paying `amount_sat` less its fee to `to_local` (the
/// owner's delayed output script pubkey). With zero-fee anchors (`anchors`) it pays no fee and
/// its input's sequence is 1; otherwise the fee is `feerate_per_kw` over its weight.
pub fn htlc_tx(
    htlc: bitcoin::OutPoint,
    amount_sat: u64,
    timeout: bool,
    cltv_expiry: u32,
    to_local: ScriptBuf,
    feerate_per_kw: u32,
    anchors: bool,
) -> bitcoin::Transaction {
    let weight = if timeout {
        HTLC_TIMEOUT_WEIGHT
    } else {
        HTLC_SUCCESS_WEIGHT
    };
    let fee = if anchors {
        0
    } else {
        u64::from(feerate_per_kw) * weight / 1000
    };
    bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: if timeout {
            bitcoin::absolute::LockTime::from_consensus(cltv_expiry)
        } else {
            bitcoin::absolute::LockTime::ZERO
        },
        input: vec![bitcoin::TxIn {
            previous_output: htlc,
            script_sig: ScriptBuf::new(),
            sequence: bitcoin::Sequence(u32::from(anchors)),
            witness: bitcoin::Witness::new(),
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(amount_sat.saturating_sub(fee)),
            script_pubkey: to_local,
        }],
    }
}

/// Whether `sig` is `key`'s signature of HTLC transaction `tx` (spending `amount_sat` locked
/// by the HTLC witness script `wscript`), with the sighash flag BOLT 3 gives the other side's
/// HTLC signatures: `SIGHASH_SINGLE|SIGHASH_ANYONECANPAY` with anchors, `SIGHASH_ALL` without.
pub fn htlc_signature_valid(
    tx: &bitcoin::Transaction,
    wscript: &bitcoin::Script,
    amount_sat: u64,
    sig: &protocol::types::BitcoinSignature,
    key: &PublicKey,
    anchors: bool,
) -> bool {
    use protocol::types::SighashFlag;
    let (flag, ty) = if anchors {
        (
            SighashFlag::SingleAnyoneCanPay,
            bitcoin::EcdsaSighashType::SinglePlusAnyoneCanPay,
        )
    } else {
        (SighashFlag::All, bitcoin::EcdsaSighashType::All)
    };
    if sig.sighash != flag {
        return false;
    }
    let Ok(msg) =
        crate::sign::segwit_v0_sighash(tx, 0, wscript, bitcoin::Amount::from_sat(amount_sat), ty)
    else {
        return false;
    };
    let mut normalized = sig.sig;
    normalized.normalize_s();
    SECP256K1.verify_ecdsa(&msg, &normalized, key).is_ok()
}

/// BOLT 3's own HTLC transactions (appendices C and F, `tests/data/vectors/bolt03-vectors.json`):
/// [`htlc_tx`] rebuilds each one from its commitment output, and the remote signature on it
/// verifies with [`htlc_signature_valid`] (and not over another amount).
#[cfg(test)]
mod htlc_vectors {
    use super::*;
    use bitcoin::consensus::encode::deserialize;
    use bitcoin::Transaction;
    use protocol::types::{BitcoinSignature, SighashFlag};
    use serde_json::Value;

    fn hex_of(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().expect("hex string")).expect("hex")
    }

    fn key(v: &Value) -> PublicKey {
        PublicKey::from_slice(&hex_of(v)).expect("public key")
    }

    /// Checks one HTLC transaction of a commitment; returns the remote signature's validity
    /// over a wrong amount (must be false).
    fn check(
        common: &Value,
        commitment: &Transaction,
        htlc_tx_hex: &Value,
        remote_sig: &Value,
        anchors: bool,
        feerate: u32,
    ) {
        let signed: Transaction = deserialize(&hex_of(htlc_tx_hex)).expect("htlc tx");
        let input = &signed.input[0];
        let wscript = ScriptBuf::from(input.witness.last().expect("witness script").to_vec());
        let vout = input.previous_output.vout as usize;
        assert_eq!(input.previous_output.txid, commitment.compute_txid());
        let amount_sat = commitment.output[vout].value.to_sat();
        assert_eq!(
            commitment.output[vout].script_pubkey,
            ScriptBuf::new_p2wsh(&wscript.wscript_hash())
        );
        let delay = u16::try_from(common["local_delay"].as_u64().unwrap()).unwrap();
        let to_local = ScriptBuf::new_p2wsh(
            &to_local_script(
                &key(&common["local_revocation_pubkey"]),
                delay,
                &key(&common["local_delayedpubkey"]),
            )
            .wscript_hash(),
        );
        let timeout = signed.lock_time.to_consensus_u32() != 0;
        let built = htlc_tx(
            input.previous_output,
            amount_sat,
            timeout,
            signed.lock_time.to_consensus_u32(),
            to_local,
            feerate,
            anchors,
        );
        let mut unsigned = signed.clone();
        unsigned.input[0].witness = bitcoin::Witness::new();
        assert_eq!(built, unsigned, "rebuilt HTLC transaction");
        let sig = BitcoinSignature {
            sig: secp256k1::ecdsa::Signature::from_der(&hex_of(remote_sig)).expect("DER"),
            sighash: if anchors {
                SighashFlag::SingleAnyoneCanPay
            } else {
                SighashFlag::All
            },
        };
        let remote = key(&common["remote_htlcpubkey"]);
        assert!(htlc_signature_valid(
            &built, &wscript, amount_sat, &sig, &remote, anchors
        ));
        assert!(!htlc_signature_valid(
            &built,
            &wscript,
            amount_sat + 1,
            &sig,
            &remote,
            anchors
        ));
        let local = key(&common["local_htlcpubkey"]);
        assert!(!htlc_signature_valid(
            &built, &wscript, amount_sat, &sig, &local, anchors
        ));
    }

    #[test]
    fn bolt3_htlc_transactions_and_their_remote_signatures() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/vectors/bolt03-vectors.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let common = &v["commitment_static_remotekey"]["common"];
        let mut checked = 0;
        for case in v["commitment_static_remotekey"]["cases"]
            .as_array()
            .unwrap()
        {
            let commitment: Transaction = deserialize(&hex_of(&case["commit_tx_hex"])).unwrap();
            let feerate = u32::try_from(case["local_feerate_per_kw"].as_u64().unwrap()).unwrap();
            for h in case["htlc_txs"].as_array().into_iter().flatten() {
                check(
                    common,
                    &commitment,
                    &h["tx_hex"],
                    &h["remote_htlc_signature"],
                    false,
                    feerate,
                );
                checked += 1;
            }
        }
        for case in v["commitment_anchors"]["cases"].as_array().unwrap() {
            let commitment: Transaction =
                deserialize(&hex_of(&case["ExpectedCommitmentTxHex"])).unwrap();
            let feerate = u32::try_from(case["FeePerKw"].as_u64().unwrap()).unwrap();
            for h in case["HtlcDescs"].as_array().into_iter().flatten() {
                check(
                    common,
                    &commitment,
                    &h["ResolutionTxHex"],
                    &h["RemoteSigHex"],
                    true,
                    feerate,
                );
                checked += 1;
            }
        }
        assert!(checked > 40, "{checked} HTLC transactions checked");
    }
}
