//! Signatures on channel transactions spending the funding output: remote commitments and
//! their HTLC transactions, our own commitment, mutual close, splice.
//!
//! Every signature is Core Lightning's `sign_hash` (low-R grinding from a zero counter) over
//! the BIP143 sighash, with the amount spent taken from the PSBT input. Commitment rules:
//!
//! | rule | refuses |
//! |---|---|
//! | `channel-known` | signing for a channel never set up, or forgotten |
//! | `commitment-number-monotonic` | signing an older counterparty commitment than one signed, or re-signing one with another point |
//! | `commitment-previous-revoked` | signing counterparty commitment `n` while `n - 2` is not revoked |
//! | `commitment-holder-not-revoked` | signing a holder commitment that was revoked |
//! | `commitment-feerate` | signing a counterparty commitment whose fee rate is out of range |
//! | `commitment-htlc-limits` | too many or too large HTLCs, or an output that is no listed HTLC, balance or anchor |
//! | `channel-dust-limit` | a commitment with an output (anchors aside) below the smallest dust limit |
//! | `commitment-balance` | a commitment not spending the funding outpoint, or giving us less than the channel's history allows |
//!
//! The content rules (the last four) are in `policy_channel`, whose docs say exactly what
//! they check; `sign_commitment_tx` (our own commitment) must give us at least what the
//! commitment of that number gave us when it was validated. A closing transaction we signed
//! with `sign_mutual_close_tx` is signed again when it comes back through
//! `sign_commitment_tx` (lightningd broadcasts the agreed close that way).

use super::channel::check_set_up;
use crate::bolt3::funding_redeem_script;
use crate::context::ChannelKey;
use crate::error::{Result, SignerError};
use crate::handler::Req;
use crate::keys::channel::{derive_simple_privkey, MAX_COMMITMENT_NUMBER};
use crate::keys::ChannelSecrets;
use crate::policy_channel::{self, Commitment, Owner};
use crate::sign::{segwit_v0_sighash, sign_ecdsa_cln_grind};
use crate::store::MAX_MUTUAL_CLOSES;
use bitcoin::hashes::Hash;
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{Amount, Script};
use protocol::msgs::*;
use protocol::types::{BitcoinSignature, BitcoinTx, SighashFlag};
use protocol::Message;
use secp256k1::{PublicKey, SecretKey};

/// The amount input `index` spends, as Core Lightning reads it: the PSBT input's
/// `witness_utxo`, else the output of its `non_witness_utxo` that the input spends.
///
/// # Errors
/// [`SignerError::BadRequest`] when the PSBT has no such input or no amount for it.
pub(crate) fn spent_amount(tx: &BitcoinTx, index: usize) -> Result<Amount> {
    let input = tx
        .psbt
        .inputs
        .get(index)
        .ok_or_else(|| SignerError::BadRequest(format!("PSBT has no input {index}")))?;
    if let Some(utxo) = &input.witness_utxo {
        return Ok(utxo.value);
    }
    let vout = tx
        .psbt
        .unsigned_tx
        .input
        .get(index)
        .map(|i| i.previous_output.vout);
    input
        .non_witness_utxo
        .as_ref()
        .zip(vout)
        .and_then(|(prev, vout)| prev.output.get(usize::try_from(vout).ok()?))
        .map(|out| out.value)
        .ok_or_else(|| SignerError::BadRequest(format!("PSBT input {index} carries no amount")))
}

/// Signs input `index` of `tx` (segwit v0, witness script `script`) with `key`, as hsmd's
/// `sign_tx_input` does.
///
/// # Errors
/// [`SignerError::BadRequest`] when the input does not exist or its amount is unknown.
pub(crate) fn sign_input(
    tx: &BitcoinTx,
    index: usize,
    script: &Script,
    key: &SecretKey,
    sighash: SighashFlag,
) -> Result<BitcoinSignature> {
    let inputs = tx.tx.input.len();
    if index >= inputs {
        return Err(SignerError::BadRequest(format!(
            "bad input {index} of {inputs}"
        )));
    }
    let amount = spent_amount(tx, index)?;
    let ty = match sighash {
        SighashFlag::All => EcdsaSighashType::All,
        SighashFlag::SingleAnyoneCanPay => EcdsaSighashType::SinglePlusAnyoneCanPay,
    };
    let msg = segwit_v0_sighash(&tx.tx, index, script, amount, ty)
        .map_err(|e| SignerError::BadRequest(e.to_string()))?;
    Ok(BitcoinSignature {
        sig: sign_ecdsa_cln_grind(&msg, key),
        sighash,
    })
}

/// Signs input `index` of `tx`, which spends the channel's 2-of-2 funding output.
fn sign_funding_input(
    secrets: &ChannelSecrets,
    remote_funding_key: &PublicKey,
    tx: &BitcoinTx,
    index: usize,
) -> Result<BitcoinSignature> {
    let script = funding_redeem_script(&secrets.basepoints().funding_pubkey, remote_funding_key);
    sign_input(tx, index, &script, &secrets.funding_key, SighashFlag::All)
}

/// Core Lightning's shape checks on a commitment transaction.
fn check_commitment_shape(tx: &BitcoinTx) -> Result<()> {
    if tx.tx.input.len() != 1 {
        return Err(SignerError::BadRequest("tx must have 1 input".into()));
    }
    if tx.tx.output.is_empty() {
        return Err(SignerError::BadRequest("tx must have > 0 outputs".into()));
    }
    Ok(())
}

/// Answers `SignRemoteCommitmentTx`: our signature on the peer's commitment `commit_num`,
/// remembering the per-commitment point it uses (its revocation secret must match it).
pub(crate) fn sign_remote_commitment_tx(
    r: &mut Req<'_>,
    m: SignRemoteCommitmentTx,
) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_set_up(r, &key, &state)?;
    check_commitment_shape(&m.tx)?;
    let secrets = r.channel_secrets(&key)?;
    let sig = sign_funding_input(&secrets, &m.remote_funding_key, &m.tx, 0)?;

    let n = m.commit_num;
    let point = m.remote_per_commit;
    let known_point = state.counterparty_points.get(&n);
    r.policy.check(
        "commitment-number-monotonic",
        n <= MAX_COMMITMENT_NUMBER
            && state
                .counterparty_signed
                .is_none_or(|s| n >= s && n - s <= 1)
            && known_point.is_none_or(|p| *p == point),
        || match known_point {
            Some(p) if *p != point => format!(
                "counterparty commitment {n} was signed with point {p}, now asked with {}",
                m.remote_per_commit
            ),
            _ => format!(
                "counterparty commitment {n} does not follow the latest signed ({:?})",
                state.counterparty_signed
            ),
        },
    )?;
    r.policy.check(
        "commitment-previous-revoked",
        match state.counterparty_signed {
            Some(s) if n > s => state.counterparty_revoked_below >= n - 1,
            _ => true,
        },
        || {
            format!(
                "counterparty commitment {} is not revoked yet (revoked below {})",
                n.saturating_sub(2),
                state.counterparty_revoked_below
            )
        },
    )?;
    let commitment = Commitment {
        owner: Owner::Counterparty,
        number: n,
        point: m.remote_per_commit,
        tx: &m.tx,
        terms: Some((&m.htlcs, m.feerate)),
    };
    let balance = policy_channel::check_channel_commitment(r, &key, &state, Some(commitment))?;
    let signed = super::forwards::Signed {
        owner: Owner::Counterparty,
        number: n,
        unrevoked_from: state.counterparty_revoked_below,
        htlcs: &m.htlcs,
        gain_sat: balance.as_ref().map_or(0, |b| b.gain_sat),
    };
    super::forwards::check_htlcs(r, &key, signed)?;
    if n <= MAX_COMMITMENT_NUMBER {
        if let Some(b) = balance {
            policy_channel::record_balance(&mut state.counterparty_balances, n, b);
        }
        if state.counterparty_signed.is_none() {
            // The channel's history starts here: there is nothing older to be revoked.
            state.counterparty_revoked_below = state.counterparty_revoked_below.max(n);
        }
        state.counterparty_signed = Some(state.counterparty_signed.map_or(n, |s| s.max(n)));
        if n >= state.counterparty_revoked_below {
            state.counterparty_points.insert(n, point);
        }
        r.put_channel_state(&key, &state)?;
    }
    Ok(SignTxReply::new(sig).into())
}

/// Answers `SignRemoteHtlcTx`: our signature on an HTLC transaction of the peer's commitment
/// (key: our htlc basepoint tweaked by the peer's per-commitment point; anchors channels
/// sign `SIGHASH_SINGLE|SIGHASH_ANYONECANPAY`).
pub(crate) fn sign_remote_htlc_tx(r: &mut Req<'_>, m: SignRemoteHtlcTx) -> Result<Message> {
    let key = r.client.channel_key();
    let state = r.channel_state(&key)?;
    check_set_up(r, &key, &state)?;
    let secrets = r.channel_secrets(&key)?;
    let htlc_key =
        derive_simple_privkey(&secrets.htlc_basepoint_secret, &m.remote_per_commit_point)
            .map_err(|_| SignerError::BadRequest("Failed deriving htlc privkey".into()))?;
    let sighash = if m.option_anchor_outputs {
        SighashFlag::SingleAnyoneCanPay
    } else {
        SighashFlag::All
    };
    let sig = sign_input(&m.tx, 0, Script::from_bytes(&m.wscript), &htlc_key, sighash)?;
    Ok(SignTxReply::new(sig).into())
}

/// Answers `SignCommitmentTx` (lightningd, to close unilaterally): our signature on our own
/// commitment `commit_num`, which must not be revoked; from now on it is never revoked.
pub(crate) fn sign_commitment_tx(r: &mut Req<'_>, m: SignCommitmentTx) -> Result<Message> {
    let key = ChannelKey {
        peer_id: m.peer_id,
        dbid: m.channel_dbid,
    };
    let mut state = r.channel_state(&key)?;
    check_set_up(r, &key, &state)?;
    check_commitment_shape(&m.tx)?;
    let secrets = r.channel_secrets(&key)?;
    let sig = sign_funding_input(&secrets, &m.remote_funding_key, &m.tx, 0)?;
    let txid = m.tx.tx.compute_txid().to_byte_array();
    if state.mutual_closes.contains(&txid) {
        // After a mutual close lightningd keeps the closing transaction as the channel's last
        // one and asks for it here to broadcast it (`drop_to_chain`): we signed it already.
        log::info!(
            "dbid {}: the agreed closing transaction {} comes back to be broadcast",
            key.dbid,
            m.tx.tx.compute_txid()
        );
        return Ok(SignCommitmentTxReply::new(sig).into());
    }
    let n = m.commit_num;
    r.policy.check(
        "commitment-holder-not-revoked",
        n >= state.holder_revoked_below,
        || {
            format!(
                "holder commitment {n} was revoked (every commitment below {} is)",
                state.holder_revoked_below
            )
        },
    )?;
    let commitment = secrets
        .per_commitment_point(n)
        .ok()
        .map(|point| Commitment {
            owner: Owner::Holder,
            number: n,
            point,
            tx: &m.tx,
            terms: None,
        });
    policy_channel::check_channel_commitment(r, &key, &state, commitment)?;
    state.holder_signed_from = Some(state.holder_signed_from.map_or(n, |s| s.min(n)));
    state.broadcast_outputs.insert(
        n,
        (
            txid.to_vec(),
            m.tx.tx.output.iter().map(|o| o.value.to_sat()).collect(),
        ),
    );
    while state.broadcast_outputs.len() > crate::store::MAX_BROADCAST_COMMITMENTS {
        state.broadcast_outputs.pop_first();
    }
    r.put_channel_state(&key, &state)?;
    Ok(SignCommitmentTxReply::new(sig).into())
}

/// Answers `SignMutualCloseTx`: our signature on the closing transaction (input 0 spends the
/// funding output).
pub(crate) fn sign_mutual_close_tx(r: &mut Req<'_>, m: SignMutualCloseTx) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_set_up(r, &key, &state)?;
    let secrets = r.channel_secrets(&key)?;
    let sig = sign_funding_input(&secrets, &m.remote_funding_key, &m.tx, 0)?;
    crate::policy_onchain::check_mutual_close(r, &key, &state, &m.tx)?;
    let txid = m.tx.tx.compute_txid().to_byte_array();
    if !state.mutual_closes.contains(&txid) {
        state.mutual_closes.push(txid);
        let excess = state.mutual_closes.len().saturating_sub(MAX_MUTUAL_CLOSES);
        state.mutual_closes.drain(..excess);
        r.put_channel_state(&key, &state)?;
    }
    Ok(SignTxReply::new(sig).into())
}

/// Answers `SignSpliceTx`: our signature on the splice transaction's input `input_index`,
/// which spends the current funding output.
pub(crate) fn sign_splice_tx(r: &mut Req<'_>, m: SignSpliceTx) -> Result<Message> {
    let key = r.client.channel_key();
    let state = r.channel_state(&key)?;
    check_set_up(r, &key, &state)?;
    let secrets = r.channel_secrets(&key)?;
    let index = usize::try_from(m.input_index)
        .map_err(|_| SignerError::BadRequest(format!("bad input {}", m.input_index)))?;
    let sig = sign_funding_input(&secrets, &m.remote_funding_key, &m.tx, index)?;
    crate::policy_onchain::check_splice(r, &m.tx)?;
    Ok(SignTxReply::new(sig).into())
}
