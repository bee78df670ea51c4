//! The on-chain wallet: PSBT signatures for withdrawals, anchor spends and HTLC transactions
//! mingled with wallet inputs, and scripts of outputs to us.
//!
//! Each UTXO lightningd lists is signed on every PSBT input that spends it, with its key:
//!
//! - a UTXO with `close_info` (an output of a peer's unilateral close) uses the channel's
//!   payment basepoint secret, tweaked by `commitment_point` when there is one; for
//!   `option_anchors` channels it is a P2WSH output, so its witness script
//!   (`<key> OP_CHECKSIGVERIFY <csv> OP_CHECKSEQUENCEVERIFY`) and P2WSH UTXO are put on the
//!   input first;
//! - any other UTXO uses wallet key `keyindex`: m/0/0/`keyindex`, or for a mnemonic secret the
//!   BIP86 key m/86'/0'/0'/0/`keyindex` (for P2TR and P2WPKH outputs alike).
//!
//! The PSBT rules (which fields are added, ECDSA for segwit v0, BIP86 key-path Schnorr for
//! P2TR, libwally's nonces and serialization) are in [`crate::psbt_sign`].
//!
//! Before anything is signed, the on-chain rules check the PSBT (segwit inputs only, the fee
//! cap, outputs to the wallet, allowlisted destinations or a channel's funding output): see
//! [`crate::policy_onchain`].

use bitcoin::opcodes::all::{OP_CHECKSIGVERIFY, OP_CSV};
use bitcoin::script::Builder;
use bitcoin::{CompressedPublicKey, OutPoint, ScriptBuf};
use protocol::msgs::*;
use protocol::types::HsmUtxo;
use protocol::Message;
use secp256k1::{PublicKey, SecretKey, SECP256K1};

use crate::context::ChannelKey;
use crate::error::{Result, SignerError, FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};
use crate::handler::Req;
use crate::keys::KeyError;
use crate::policy_onchain::{check_wallet_tx, WalletRequest};
use crate::psbt_sign::WallyPsbt;

/// Answers `SignWithdrawal`: signs our UTXOs in lightningd's PSBT.
pub(crate) fn sign_withdrawal(r: &mut Req<'_>, m: SignWithdrawal) -> Result<Message> {
    check_wallet_tx(r, WalletRequest::Withdrawal, &m.psbt, &m.inputs)?;
    let mut psbt = WallyPsbt::new(m.psbt.into_inner());
    sign_our_inputs(r, &m.inputs, &mut psbt)?;
    Ok(SignWithdrawalReply::new(psbt.into_reply().into()).into())
}

/// `anchorspend-anchor-only`.
pub(crate) const ANCHOR_ONLY: &str = "anchorspend-anchor-only";

/// Answers `SignAnchorspend`: signs our UTXOs, then every input that names the channel's
/// funding key with that key, which must be the channel's anchor output
/// (`anchorspend-anchor-only`: the same key also holds our half of the 2-of-2 funding output,
/// and a signature on that spends the channel).
pub(crate) fn sign_anchorspend(r: &mut Req<'_>, m: SignAnchorspend) -> Result<Message> {
    check_wallet_tx(r, WalletRequest::Anchorspend, &m.psbt, &m.inputs)?;
    let channel = ChannelKey {
        peer_id: m.peerid,
        dbid: m.channel_dbid,
    };
    let funding_key = r.channel_secrets(&channel)?.funding_key;
    let funding_pubkey = funding_key.public_key(SECP256K1);
    let anchor = ScriptBuf::new_p2wsh(&crate::bolt3::anchor_script(&funding_pubkey).wscript_hash());
    let not_anchors: Vec<usize> = (0..m.psbt.inputs.len())
        .filter(|&i| {
            let input = &m.psbt.inputs[i];
            let names_key = input.bip32_derivation.contains_key(&funding_pubkey)
                || input
                    .tap_key_origins
                    .contains_key(&funding_pubkey.x_only_public_key().0);
            names_key
                && crate::psbt_sign::utxo_of(&m.psbt, i, input)
                    .is_none_or(|u| u.script_pubkey != anchor)
        })
        .collect();
    r.policy.check(ANCHOR_ONLY, not_anchors.is_empty(), || {
        format!(
            "inputs {not_anchors:?} ask for the channel's funding key but do not spend its anchor output"
        )
    })?;
    let mut psbt = WallyPsbt::new(m.psbt.into_inner());
    sign_our_inputs(r, &m.inputs, &mut psbt)?;
    psbt.sign(&funding_key, r.policy)?;
    Ok(SignAnchorspendReply::new(psbt.into_reply().into()).into())
}

/// Answers `SignHtlcTxMingle`: signs our UTXOs added to an HTLC transaction (whose HTLC input
/// lightningd already signed with SINGLE|ANYONECANPAY).
pub(crate) fn sign_htlc_tx_mingle(r: &mut Req<'_>, m: SignHtlcTxMingle) -> Result<Message> {
    check_wallet_tx(r, WalletRequest::HtlcTxMingle, &m.psbt, &m.inputs)?;
    let mut psbt = WallyPsbt::new(m.psbt.into_inner());
    sign_our_inputs(r, &m.inputs, &mut psbt)?;
    Ok(SignHtlcTxMingleReply::new(psbt.into_reply().into()).into())
}

/// Answers `GetOutputScriptpubkey`: the P2WPKH script of the channel's payment basepoint,
/// tweaked by `commitment_point` when given (where a peer's unilateral close pays us).
pub(crate) fn get_output_scriptpubkey(
    r: &mut Req<'_>,
    m: GetOutputScriptpubkey,
) -> Result<Message> {
    let key = r
        .keys()
        .unilateral_close_key(
            m.peer_id.as_bytes(),
            m.channel_id,
            m.commitment_point.as_ref(),
        )
        .map_err(|e| SignerError::BadRequest(format!("deriving unilateral close key: {e}")))?;
    let script = p2wpkh(&key.public_key(SECP256K1));
    Ok(GetOutputScriptpubkeyReply::new(script.into_bytes()).into())
}

/// hsmd's `sign_our_inputs`: for each UTXO, each input spending it gets the UTXO's key
/// recorded and is signed with it.
fn sign_our_inputs(r: &Req<'_>, utxos: &[HsmUtxo], psbt: &mut WallyPsbt) -> Result<()> {
    for utxo in utxos {
        let outpoint = OutPoint {
            txid: utxo.txid,
            vout: utxo.vout,
        };
        for index in psbt.inputs_spending(outpoint) {
            let key = utxo_key(r, utxo)?;
            let pubkey = key.public_key(SECP256K1);
            psbt.add_pubkey(index, &pubkey, utxo.script_pubkey.is_p2tr());
            if let Some(close) = utxo.close_info.as_ref().filter(|c| c.option_anchors) {
                psbt.set_p2wsh_input(index, to_remote_anchored(&pubkey, close.csv), utxo.amount);
            }
            psbt.sign(&key, r.policy)?;
        }
    }
    Ok(())
}

/// The key that spends `utxo` (see the module documentation).
fn utxo_key(r: &Req<'_>, utxo: &HsmUtxo) -> Result<SecretKey> {
    match &utxo.close_info {
        Some(close) => r
            .keys()
            .unilateral_close_key(
                close.peer_id.as_bytes(),
                close.channel_dbid,
                close.commitment_point.as_ref(),
            )
            .map_err(|e| SignerError::BadRequest(format!("deriving unilateral close key: {e}"))),
        None => r
            .keys()
            .wallet_utxo_key(utxo.keyindex)
            .map_err(|e| match e {
                // hsmd stops on a hardened wallet index, blaming lightningd.
                KeyError::IndexTooGreat(i) => SignerError::Fatal {
                    reason: FAIL_MASTER_IO,
                    message: format!("Index {i} too great"),
                },
                e => SignerError::Fatal {
                    reason: FAIL_INTERNAL_ERROR,
                    message: e.to_string(),
                },
            }),
    }
}

/// BOLT 3 `to_remote` output script of an anchors channel:
/// `<key> OP_CHECKSIGVERIFY <csv> OP_CHECKSEQUENCEVERIFY` (hsmd takes the CSV from the UTXO).
fn to_remote_anchored(key: &PublicKey, csv: u32) -> ScriptBuf {
    Builder::new()
        .push_slice(key.serialize())
        .push_opcode(OP_CHECKSIGVERIFY)
        .push_int(i64::from(csv))
        .push_opcode(OP_CSV)
        .into_script()
}

fn p2wpkh(key: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ClientContext;
    use crate::handlers::onchain::tests::replay_own_steps;
    use crate::policy::Policy;
    use crate::Signer;
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::Hash;
    use bitcoin::psbt::Psbt;
    use bitcoin::{transaction, Amount, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
    use protocol::types::{CloseInfo, NodeId};

    #[test]
    fn corpus_steps_of_the_wallet_match_core_lightning() {
        let (compared, mismatches) = replay_own_steps(&[
            "hsmd_sign_withdrawal",
            "hsmd_sign_anchorspend",
            "hsmd_sign_htlc_tx_mingle",
            "hsmd_get_output_scriptpubkey",
        ]);
        assert!(compared >= 20, "only {compared} steps compared");
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn anchored_to_remote_script_matches_bolt3() {
        let key = SecretKey::from_slice(&[3; 32])
            .unwrap()
            .public_key(SECP256K1);
        let script = to_remote_anchored(&key, 1);
        let mut want = vec![0x21];
        want.extend_from_slice(&key.serialize());
        want.extend_from_slice(&[0xad, 0x51, 0xb2]);
        assert_eq!(script.as_bytes(), want);
        assert_eq!(
            to_remote_anchored(&key, 144).as_bytes()[34..],
            [0xad, 0x02, 0x90, 0x00, 0xb2]
        );
    }

    fn signer() -> Signer {
        crate::test_support::initialized_signer(Policy::warn_only())
    }

    fn utxo(vout: u32, keyindex: u32, close_info: Option<CloseInfo>) -> HsmUtxo {
        HsmUtxo {
            txid: Txid::from_byte_array([4; 32]),
            vout,
            amount: Amount::from_sat(10_000),
            keyindex,
            legacy_is_p2sh: false,
            script_pubkey: ScriptBuf::from_bytes(vec![0; 22]),
            close_info,
            legacy_is_in_coinbase: false,
        }
    }

    fn psbt(spent_vouts: &[u32], with_utxos: bool) -> Psbt {
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: spent_vouts
                .iter()
                .map(|&vout| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([4; 32]),
                        vout,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(900),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
        if with_utxos {
            for input in &mut psbt.inputs {
                // Wallet key 0 of secret [1; 32] is not known here: any P2WPKH will do, the
                // signature only has to exist.
                input.witness_utxo = Some(TxOut {
                    value: Amount::from_sat(10_000),
                    script_pubkey: ScriptBuf::from_bytes([&[0u8, 20][..], &[9u8; 20]].concat()),
                });
            }
        }
        psbt
    }

    fn sign(signer: &Signer, utxos: Vec<HsmUtxo>, psbt: Psbt) -> Result<Psbt> {
        let req = Message::from(SignWithdrawal::new(utxos, psbt.into()))
            .encode()
            .unwrap();
        let reply = signer.handle(&ClientContext::master(), None, &req)?;
        Ok(SignWithdrawalReply::decode(&reply)
            .unwrap()
            .psbt
            .into_inner())
    }

    #[test]
    fn withdrawal_signs_only_inputs_spending_our_utxos() {
        let signer = signer();
        let signed = sign(
            &signer,
            vec![utxo(1, 0, None), utxo(7, 1, None)],
            psbt(&[0, 1], true),
        )
        .unwrap();
        assert!(signed.inputs[0].partial_sigs.is_empty());
        assert_eq!(signed.inputs[1].partial_sigs.len(), 1);
    }

    #[test]
    fn withdrawal_without_witness_utxo_is_refused() {
        let signer = signer();
        let got = sign(&signer, vec![utxo(0, 0, None)], psbt(&[0], false));
        assert!(matches!(got, Err(SignerError::BadRequest(_))), "{got:?}");
    }

    #[test]
    fn hardened_wallet_index_stops_the_signer_only_when_used() {
        let signer = signer();
        let unused = sign(&signer, vec![utxo(5, 1 << 31, None)], psbt(&[0], true));
        assert!(unused.is_ok());
        let used = sign(&signer, vec![utxo(0, 1 << 31, None)], psbt(&[0], true));
        assert!(
            matches!(
                used,
                Err(SignerError::Fatal {
                    reason: FAIL_MASTER_IO,
                    ..
                })
            ),
            "{used:?}"
        );
    }

    #[test]
    fn anchored_close_output_gets_its_witness_script() {
        let signer = signer();
        let peer = NodeId::from_pubkey(
            &SecretKey::from_slice(&[2; 32])
                .unwrap()
                .public_key(SECP256K1),
        );
        let close = CloseInfo {
            channel_dbid: 3,
            peer_id: peer,
            commitment_point: None,
            option_anchors: true,
            csv: 1,
        };
        let signed = sign(&signer, vec![utxo(0, 0, Some(close))], psbt(&[0], false)).unwrap();
        let input = &signed.inputs[0];
        let script = input.witness_script.clone().unwrap();
        assert_eq!(
            input.witness_utxo.as_ref().unwrap().script_pubkey,
            ScriptBuf::new_p2wsh(&script.wscript_hash())
        );
        assert_eq!(input.partial_sigs.len(), 1);
    }
}
