//! Signatures on transactions that sweep channel outputs after a unilateral close (onchaind's
//! requests and their sign_any_* forms from lightningd).
//!
//! Each signs one input of a one-input transaction with a BOLT 3 key of the channel, the way
//! Core Lightning's hsmd does (`sign_hash` nonces, BIP143 over the given witness script, the
//! amount from the PSBT's UTXO):
//!
//! | request | key | sighash |
//! |---|---|---|
//! | `sign_delayed_payment_to_us` | delayed-payment basepoint secret tweaked by our per-commitment point `commit_num` | ALL |
//! | `sign_remote_htlc_to_us` | HTLC basepoint secret tweaked by the peer's per-commitment point | ALL, or SINGLE\|ANYONECANPAY with anchors |
//! | `sign_penalty_to_us` | revocation private key from the revocation basepoint secret and the revealed secret | ALL |
//! | `sign_any_local_htlc_tx` | HTLC basepoint secret tweaked by our per-commitment point `commit_num` | ALL, or SINGLE\|ANYONECANPAY with anchors |
//!
//! onchaind's forms work on the client's own channel; the `sign_any_*` forms name the channel
//! (peer id, dbid) and the input. As hsmd, the transaction must have exactly one input and the
//! named input must exist (so it is input 0); anything else is a bad request.
//!
//! Before signing, the on-chain rules check where the sweep pays and its fee (the output to
//! the wallet or an allowlisted destination; our HTLC transaction to its BOLT 3 delayed
//! output): see [`crate::policy_onchain`].

use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{Amount, Script, Transaction};
use protocol::msgs::*;
use protocol::types::{BitcoinSignature, BitcoinTx, NodeId, SighashFlag};
use protocol::Message;
use secp256k1::{PublicKey, SecretKey};

use crate::context::ChannelKey;
use crate::error::{Result, SignerError};
use crate::handler::Req;
use crate::keys::channel::{derive_revocation_privkey, derive_simple_privkey};
use crate::policy_onchain::check_sweep;
use crate::psbt_sign::input_amount;
use crate::sign::{segwit_v0_sighash, sign_ecdsa_cln_grind};

/// Answers `SignDelayedPaymentToUs` (onchaind: sweep our delayed `to_local` output).
pub(crate) fn sign_delayed_payment_to_us(
    r: &mut Req<'_>,
    m: SignDelayedPaymentToUs,
) -> Result<Message> {
    let channel = r.client.channel_key();
    delayed_payment_to_us(r, &channel, 0, m.commit_num, &m.tx, &m.wscript)
}

/// Answers `SignAnyDelayedPaymentToUs` (lightningd's form of the above).
pub(crate) fn sign_any_delayed_payment_to_us(
    r: &mut Req<'_>,
    m: SignAnyDelayedPaymentToUs,
) -> Result<Message> {
    let channel = channel_of(m.peerid, m.channel_dbid);
    delayed_payment_to_us(r, &channel, m.input, m.commit_num, &m.tx, &m.wscript)
}

/// Answers `SignRemoteHtlcToUs` (onchaind: take an HTLC output of the peer's commitment).
pub(crate) fn sign_remote_htlc_to_us(r: &mut Req<'_>, m: SignRemoteHtlcToUs) -> Result<Message> {
    let channel = r.client.channel_key();
    let point = m.remote_per_commitment_point;
    remote_htlc_to_us(
        r,
        &channel,
        0,
        &point,
        &m.tx,
        &m.wscript,
        m.option_anchor_outputs,
    )
}

/// Answers `SignAnyRemoteHtlcToUs` (lightningd's form of the above).
pub(crate) fn sign_any_remote_htlc_to_us(
    r: &mut Req<'_>,
    m: SignAnyRemoteHtlcToUs,
) -> Result<Message> {
    let channel = channel_of(m.peerid, m.channel_dbid);
    let point = m.remote_per_commitment_point;
    remote_htlc_to_us(
        r,
        &channel,
        m.input,
        &point,
        &m.tx,
        &m.wscript,
        m.option_anchor_outputs,
    )
}

/// Answers `SignPenaltyToUs` (onchaind: spend an output of a revoked peer commitment).
pub(crate) fn sign_penalty_to_us(r: &mut Req<'_>, m: SignPenaltyToUs) -> Result<Message> {
    let channel = r.client.channel_key();
    penalty_to_us(r, &channel, 0, &m.revocation_secret.0, &m.tx, &m.wscript)
}

/// Answers `SignAnyPenaltyToUs` (lightningd's form of the above).
pub(crate) fn sign_any_penalty_to_us(r: &mut Req<'_>, m: SignAnyPenaltyToUs) -> Result<Message> {
    let channel = channel_of(m.peerid, m.channel_dbid);
    penalty_to_us(
        r,
        &channel,
        m.input,
        &m.revocation_secret.0,
        &m.tx,
        &m.wscript,
    )
}

/// Answers `SignAnyLocalHtlcTx` (lightningd: our own HTLC-success/timeout transaction).
pub(crate) fn sign_any_local_htlc_tx(r: &mut Req<'_>, m: SignAnyLocalHtlcTx) -> Result<Message> {
    let tx = &m.tx.tx;
    check_input_index(m.input, tx)?;
    let channel = channel_of(m.peerid, m.channel_dbid);
    let secrets = r.channel_secrets(&channel)?;
    let point = secrets.per_commitment_point(m.commit_num).map_err(|_| {
        SignerError::BadRequest(format!("bad per_commitment_point {}", m.commit_num))
    })?;
    let key = derive_simple_privkey(&secrets.htlc_basepoint_secret, &point)
        .map_err(|_| SignerError::BadRequest("Failed deriving htlc privkey".into()))?;
    check_single_input(tx)?;
    let amount = input_amount(&m.tx.psbt, 0)?;
    // Our HTLC transaction spends our own commitment: never one that was revoked.
    let state = r.channel_state(&channel)?;
    r.policy.check(
        "commitment-holder-not-revoked",
        m.commit_num >= state.holder_revoked_below,
        || {
            format!(
                "HTLC transaction of holder commitment {} which is revoked (below {})",
                m.commit_num, state.holder_revoked_below
            )
        },
    )?;
    check_sweep(r, &channel, &m.tx, Some(m.commit_num))?;
    sign(
        tx,
        &m.wscript,
        amount,
        htlc_sighash(m.option_anchor_outputs),
        &key,
    )
}

fn channel_of(peer_id: NodeId, dbid: u64) -> ChannelKey {
    ChannelKey { peer_id, dbid }
}

fn delayed_payment_to_us(
    r: &mut Req<'_>,
    channel: &ChannelKey,
    input: u32,
    commit_num: u64,
    tx: &BitcoinTx,
    wscript: &[u8],
) -> Result<Message> {
    let secrets = r.channel_secrets(channel)?;
    let point = secrets
        .per_commitment_point(commit_num)
        .map_err(|_| SignerError::BadRequest(format!("bad per_commitment_point {commit_num}")))?;
    let key = derive_simple_privkey(&secrets.delayed_payment_basepoint_secret, &point)
        .map_err(|_| SignerError::BadRequest("failed deriving privkey".into()))?;
    sign_to_us(r, channel, input, tx, wscript, SighashFlag::All, &key)
}

fn remote_htlc_to_us(
    r: &mut Req<'_>,
    channel: &ChannelKey,
    input: u32,
    remote_point: &PublicKey,
    tx: &BitcoinTx,
    wscript: &[u8],
    option_anchor_outputs: bool,
) -> Result<Message> {
    let secrets = r.channel_secrets(channel)?;
    let key = derive_simple_privkey(&secrets.htlc_basepoint_secret, remote_point)
        .map_err(|_| SignerError::BadRequest("Failed deriving htlc privkey".into()))?;
    let flag = htlc_sighash(option_anchor_outputs);
    sign_to_us(r, channel, input, tx, wscript, flag, &key)
}

fn penalty_to_us(
    r: &mut Req<'_>,
    channel: &ChannelKey,
    input: u32,
    revocation_secret: &[u8; 32],
    tx: &BitcoinTx,
    wscript: &[u8],
) -> Result<Message> {
    let secret = SecretKey::from_slice(revocation_secret)
        .map_err(|_| SignerError::BadRequest("Failed deriving pubkey".into()))?;
    let secrets = r.channel_secrets(channel)?;
    let key = derive_revocation_privkey(&secrets.revocation_basepoint_secret, &secret)
        .map_err(|_| SignerError::BadRequest("Failed deriving revocation privkey".into()))?;
    sign_to_us(r, channel, input, tx, wscript, SighashFlag::All, &key)
}

/// hsmd's `handle_sign_to_us_tx`: `input` must exist and be the only one; input 0 is signed.
fn sign_to_us(
    r: &mut Req<'_>,
    channel: &ChannelKey,
    input: u32,
    tx: &BitcoinTx,
    wscript: &[u8],
    flag: SighashFlag,
    key: &SecretKey,
) -> Result<Message> {
    check_input_index(input, &tx.tx)?;
    check_single_input(&tx.tx)?;
    let amount = input_amount(&tx.psbt, 0)?;
    check_sweep(r, channel, tx, None)?;
    sign(&tx.tx, wscript, amount, flag, key)
}

/// The input asked for must exist ("bad input N of M").
fn check_input_index(input: u32, tx: &Transaction) -> Result<()> {
    let inputs = tx.input.len();
    if usize::try_from(input).map_or(true, |i| i >= inputs) {
        return Err(SignerError::BadRequest(format!(
            "bad input {input} of {inputs}"
        )));
    }
    Ok(())
}

/// These sweeps spend exactly one output ("bad txinput count").
fn check_single_input(tx: &Transaction) -> Result<()> {
    if tx.input.len() != 1 {
        return Err(SignerError::BadRequest("bad txinput count".into()));
    }
    Ok(())
}

/// HTLC second-level and HTLC-output sweeps commit to SINGLE|ANYONECANPAY with anchors.
fn htlc_sighash(option_anchor_outputs: bool) -> SighashFlag {
    if option_anchor_outputs {
        SighashFlag::SingleAnyoneCanPay
    } else {
        SighashFlag::All
    }
}

/// `sign_hash` of the BIP143 sighash of input 0 with `wscript` as script code.
fn sign(
    tx: &Transaction,
    wscript: &[u8],
    amount: Amount,
    flag: SighashFlag,
    key: &SecretKey,
) -> Result<Message> {
    let sighash_type = match flag {
        SighashFlag::All => EcdsaSighashType::All,
        SighashFlag::SingleAnyoneCanPay => EcdsaSighashType::SinglePlusAnyoneCanPay,
    };
    let msg = segwit_v0_sighash(tx, 0, Script::from_bytes(wscript), amount, sighash_type)
        .map_err(|e| SignerError::BadRequest(e.to_string()))?;
    let sig = sign_ecdsa_cln_grind(&msg, key);
    Ok(SignTxReply::new(BitcoinSignature { sig, sighash: flag }).into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::context::ClientContext;
    use crate::policy::Policy;
    use crate::store::Store;
    use crate::Signer;
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::Hash;
    use bitcoin::psbt::Psbt;
    use bitcoin::{transaction, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Txid, Witness};
    use protocol::Permissions;
    use serde_json::Value;

    const GOLDEN: &str = include_str!("../../../tests/data/conformance/cln-hsmd-golden.json");
    const MNEMONIC: &str = include_str!("../../../tests/data/conformance/cln-hsmd-mnemonic.json");

    /// Replays both corpus files through [`Signer::handle`] and compares the outcome of every
    /// step whose request type is in `types`; steps of other types only drive the replay
    /// (their expected outcome is assumed, so a handler written elsewhere cannot hide ours).
    /// Returns (steps compared, mismatches).
    pub(crate) fn replay_own_steps(types: &[&str]) -> (usize, Vec<String>) {
        let (mut compared, mut mismatches) = (0, Vec::new());
        for text in [GOLDEN, MNEMONIC] {
            let corpus: Value = serde_json::from_str(text).unwrap();
            for case in corpus["cases"].as_array().unwrap() {
                let secret = match case.get("hsm_secret_file").and_then(Value::as_str) {
                    Some(f) => hex::decode(f).unwrap(),
                    None => hex::decode(case["hsm_secret"].as_str().unwrap()).unwrap(),
                };
                let signer = Signer::new(secret, Store::temporary().unwrap(), Policy::warn_only());
                let mut clients = vec![Some(ClientContext::master())];
                for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
                    let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
                    let name = step["request_name"].as_str().unwrap_or("");
                    let outcome = step["outcome"].as_str().or(step["cln_outcome"].as_str());
                    let Some(ctx) = clients
                        .get(step["client"].as_u64().unwrap() as usize)
                        .cloned()
                        .flatten()
                    else {
                        continue;
                    };
                    let got = signer.handle(&ctx, Some(i as u64), &req);
                    if let Ok(h) = ClientHsmfd::decode(&req) {
                        let perms = Permissions::from_bits(h.permissions);
                        clients.push(Some(ClientContext::client(h.id, h.dbid, perms)));
                    }
                    if !types.contains(&name) {
                        continue;
                    }
                    compared += 1;
                    let want_reply = step["reply"].as_str().or(step["cln_reply"].as_str());
                    let ok = match (&got, outcome) {
                        (Ok(reply), Some("reply")) => {
                            Some(hex::encode(reply).as_str()) == want_reply
                        }
                        (Err(_), Some("client_closed" | "hsmd_exited")) => true,
                        _ => false,
                    };
                    if !ok {
                        mismatches.push(format!(
                            "{} step {i} ({name}): want {outcome:?} {want_reply:?}, got {got:?}",
                            case["name"].as_str().unwrap()
                        ));
                    }
                }
            }
        }
        (compared, mismatches)
    }

    #[test]
    fn corpus_steps_of_onchain_sweeps_match_core_lightning() {
        let (compared, mismatches) = replay_own_steps(&[
            "hsmd_sign_delayed_payment_to_us",
            "hsmd_sign_remote_htlc_to_us",
            "hsmd_sign_penalty_to_us",
            "hsmd_sign_any_delayed_payment_to_us",
            "hsmd_sign_any_remote_htlc_to_us",
            "hsmd_sign_any_penalty_to_us",
            "hsmd_sign_any_local_htlc_tx",
        ]);
        assert!(compared >= 30, "only {compared} steps compared");
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    fn tx_with_inputs(n: usize) -> BitcoinTx {
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: (0..n)
                .map(|i| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([7; 32]),
                        vout: i as u32,
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
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
        for input in &mut psbt.inputs {
            input.witness_utxo = Some(TxOut {
                value: Amount::from_sat(1000),
                script_pubkey: ScriptBuf::new(),
            });
        }
        BitcoinTx {
            tx,
            psbt: psbt.into(),
        }
    }

    /// `hsmd_init` for regtest, protocol versions 4..=6 (from the corpus).
    pub(crate) const INIT_REGTEST: &str = "000b043587cf0435839406226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f00000000000000000400000006";

    /// A signer after `hsmd_init` (regtest, versions 4..6), with an onchaind-like client.
    fn signer() -> (Signer, ClientContext) {
        let signer = Signer::new(
            vec![1; 32],
            Store::temporary().unwrap(),
            Policy::warn_only(),
        );
        let req = hex::decode(INIT_REGTEST).unwrap();
        signer.handle(&ClientContext::master(), None, &req).unwrap();
        let peer = NodeId::from_pubkey(
            &SecretKey::from_slice(&[2; 32])
                .unwrap()
                .public_key(secp256k1::SECP256K1),
        );
        (
            signer,
            ClientContext::client(peer, 5, Permissions::from_bits(12)),
        )
    }

    fn handle(signer: &Signer, ctx: &ClientContext, m: impl Into<Message>) -> Result<Vec<u8>> {
        signer.handle(ctx, None, &m.into().encode().unwrap())
    }

    #[test]
    fn sweeps_need_exactly_one_input() {
        let (signer, onchaind) = signer();
        for n in [0, 2] {
            let m = SignDelayedPaymentToUs::new(3, tx_with_inputs(n), vec![0x51]);
            assert!(matches!(
                handle(&signer, &onchaind, m),
                Err(SignerError::BadRequest(_))
            ));
            let m = SignPenaltyToUs::new(
                protocol::types::Secret([9; 32]),
                tx_with_inputs(n),
                vec![0x51],
            );
            assert!(matches!(
                handle(&signer, &onchaind, m),
                Err(SignerError::BadRequest(_))
            ));
        }
        let m = SignDelayedPaymentToUs::new(3, tx_with_inputs(1), vec![0x51]);
        assert!(handle(&signer, &onchaind, m).is_ok());
    }

    #[test]
    fn sign_any_input_out_of_range_is_refused() {
        let (signer, onchaind) = signer();
        let master = ClientContext::master();
        let peer = onchaind.peer_id;
        for input in [1, u32::MAX] {
            let m =
                SignAnyDelayedPaymentToUs::new(3, tx_with_inputs(1), vec![0x51], input, peer, 5);
            assert!(matches!(
                handle(&signer, &master, m),
                Err(SignerError::BadRequest(_))
            ));
            let m = SignAnyLocalHtlcTx::new(3, tx_with_inputs(1), vec![0x51], true, input, peer, 5);
            assert!(matches!(
                handle(&signer, &master, m),
                Err(SignerError::BadRequest(_))
            ));
        }
        let m = SignAnyLocalHtlcTx::new(3, tx_with_inputs(1), vec![0x51], true, 0, peer, 5);
        assert!(handle(&signer, &master, m).is_ok());
    }

    #[test]
    fn missing_amount_and_bad_secrets_are_refused() {
        let (signer, onchaind) = signer();
        let mut tx = tx_with_inputs(1);
        tx.psbt.inputs[0].witness_utxo = None;
        let m = SignDelayedPaymentToUs::new(3, tx, vec![0x51]);
        assert!(matches!(
            handle(&signer, &onchaind, m),
            Err(SignerError::BadRequest(_))
        ));
        // An invalid revocation secret (zero) and a commitment number beyond 2^48.
        let m = SignPenaltyToUs::new(protocol::types::Secret([0; 32]), tx_with_inputs(1), vec![]);
        assert!(matches!(
            handle(&signer, &onchaind, m),
            Err(SignerError::BadRequest(_))
        ));
        let m = SignDelayedPaymentToUs::new(1 << 48, tx_with_inputs(1), vec![]);
        assert!(matches!(
            handle(&signer, &onchaind, m),
            Err(SignerError::BadRequest(_))
        ));
    }
}
