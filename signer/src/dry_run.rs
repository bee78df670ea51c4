//! `vls_check_request`: would the signer sign this request of lightningd's?
//!
//! lightningd's own requests (its fd 3) have no error reply: when the signer refuses one, the
//! proxy has to stop, and lightningd stops with it. So a Core Lightning plugin asks first,
//! through the proxy, with the very request lightningd is about to send (e.g. the
//! `hsmd_sign_withdrawal` of a `withdraw`), and turns a refusal into an error of the command.
//!
//! The check answers exactly as the request itself would be answered — the same handler, the
//! same policy, the same stored state — but keeps nothing: the request's write transaction,
//! if it opened one, is rolled back, and its reply (the signature) never leaves the signer.
//! The answer is only `ok`, or the rule that refuses and why:
//!
//! | the request | the answer |
//! |---|---|
//! | would be signed (rules in warn mode pass, as they do for the request itself) | `ok`, empty rule |
//! | is refused by a policy rule | not ok, that rule and its detail |
//! | is malformed, not one of [`CHECKABLE`], or would stop the signer | not ok, [`BAD_REQUEST`] |
//!
//! Who may ask: only the master client (lightningd's own fd: over the link, a request with no
//! context). Any other client is refused by the `permission` rule, as for any request it may
//! not send. The request checked is judged with the master's permissions.
//!
//! A temporary or storage failure is not an answer: the check itself fails, and the proxy
//! retries it as it retries any request.
//!
//! In the daemon a check is neither quick nor state-changing (`handler::is_quick`,
//! `handler::changes_state`): it runs on the worker pool in the master's lane, in order with
//! lightningd's own requests, and has no reply cached (asked again, it is judged again).
//!
//! An answer is no promise: state may change between the check and the request (a channel
//! forgotten, another commitment revoked), and the request is checked in full when it comes.
//! What a check guarantees: it changes no state and reveals no signature.

use crate::context::ClientContext;
use crate::error::{Result, SignerError};
use crate::handler::{Session, Signer};
use protocol::msgs::{name_of, SignCommitmentTx, SignWithdrawal, VlsCheckRequest};
use protocol::Message;

/// The request types that may be checked: those lightningd sends on its own fd to spend funds
/// on chain (`hsmd_sign_withdrawal` for `withdraw`, `txsend`, `signpsbt`, channel funding;
/// `hsmd_sign_commitment_tx` when it drops a channel to chain).
pub const CHECKABLE: &[u16] = &[SignWithdrawal::TYPE, SignCommitmentTx::TYPE];

/// The rule a check names when the request cannot be judged by the policy: it does not parse,
/// it is not [`CHECKABLE`], or the signer would stop serving rather than answer it.
pub use protocol::check::BAD_REQUEST;

/// Answers `vls_check_request` from `client` (see the module documentation).
///
/// # Errors
/// [`SignerError::Policy`] (`permission`) when `client` is not the master;
/// [`SignerError::Temporary`] or [`SignerError::Storage`] when the check could not be made
/// now. A refusal of the request checked is a reply, not an error.
pub(crate) fn check(
    signer: &Signer,
    session: &Session,
    client: &ClientContext,
    m: &VlsCheckRequest,
) -> Result<Message> {
    if !client.is_master {
        return Err(SignerError::Policy {
            rule: "permission",
            detail: format!(
                "only lightningd's own client may send {}",
                VlsCheckRequest::NAME
            ),
        });
    }
    let name = protocol::peek_type(&m.request)
        .and_then(name_of)
        .unwrap_or("an unknown request");
    let reply = match verdict(signer, session, client, &m.request)? {
        None => {
            log::info!("check of {name}: it would be signed");
            protocol::check::approval()
        }
        Some((rule, detail)) => {
            log::info!("check of {name}: {rule} refuses it: {detail}");
            protocol::check::refusal(rule, &detail)
        }
    };
    Ok(reply.into())
}

/// `None` if `request` would be signed, else the rule that refuses it and why.
fn verdict(
    signer: &Signer,
    session: &Session,
    client: &ClientContext,
    request: &[u8],
) -> Result<Option<(&'static str, String)>> {
    let Some(t) = protocol::peek_type(request) else {
        return Ok(Some((BAD_REQUEST, "the request to check is empty".into())));
    };
    if !CHECKABLE.contains(&t) {
        let names: Vec<&str> = CHECKABLE.iter().filter_map(|&t| name_of(t)).collect();
        return Ok(Some((
            BAD_REQUEST,
            format!(
                "{} (type {t}) cannot be checked; only {} can",
                name_of(t).unwrap_or("an unknown request"),
                names.join(" and ")
            ),
        )));
    }
    if !client.permissions.allows(t) {
        return Ok(Some((
            "permission",
            format!("client does not have capability to run {t}"),
        )));
    }
    let msg = match Message::decode(request) {
        Ok(m) => m,
        Err(e) => return Ok(Some((BAD_REQUEST, format!("could not parse request: {e}")))),
    };
    match signer.handle_uncommitted(session, client, msg) {
        Ok(_signed) => Ok(None),
        Err(SignerError::Policy { rule, detail }) => Ok(Some((rule, detail))),
        Err(SignerError::BadRequest(d)) => Ok(Some((BAD_REQUEST, d))),
        Err(SignerError::Fatal { message, .. }) => Ok(Some((
            BAD_REQUEST,
            format!("the signer would stop serving: {message}"),
        ))),
        Err(
            e @ (SignerError::Temporary(_) | SignerError::Storage(_) | SignerError::Parked { .. }),
        ) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ChannelKey;
    use crate::keys::ChannelSecrets;
    use crate::policy::Policy;
    use crate::store::Records;
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::{sha256, Hash};
    use bitcoin::psbt::Psbt;
    use bitcoin::{
        transaction, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
        TxOut, Txid, Witness,
    };
    use protocol::msgs::*;
    use protocol::types::{
        AmountMsat, Basepoints, BitcoinTx, ChannelType, HsmUtxo, NodeId, WirePsbt, WireString,
    };
    use protocol::Permissions;
    use secp256k1::{PublicKey, SecretKey, SECP256K1};

    use crate::test_support::initialized_signer as signer;
    const DBID: u64 = 9;

    fn encode(m: impl Into<Message>) -> Vec<u8> {
        m.into().encode().unwrap()
    }

    /// Asks `signer` whether it would sign `request` (as the proxy forwards it: master client,
    /// with a request id).
    fn check(signer: &Signer, id: u64, request: &[u8]) -> VlsCheckRequestReply {
        let m = VlsCheckRequest::new(request.to_vec());
        let reply = signer
            .handle(&ClientContext::master(), Some(id), &encode(m))
            .unwrap();
        VlsCheckRequestReply::decode(&reply).unwrap()
    }

    /// Everything the signer keeps: channels, payments, approvals, and whether the check's
    /// request id got a cached reply.
    fn snapshot(signer: &Signer, id: u64, request: &[u8]) -> String {
        let store = signer.store();
        let records = |kind| store.records::<serde_json::Value>(kind).unwrap();
        let check = encode(VlsCheckRequest::new(request.to_vec()));
        let hash = sha256::Hash::hash(&check).to_byte_array();
        format!(
            "{:?} {:?} {:?} {:?} {:?}",
            store.channels().unwrap(),
            records(Records::Payments),
            records(Records::Approvals),
            records(Records::ChannelPayments),
            store
                .cached_reply(&ClientContext::master().channel_key(), id, &hash)
                .unwrap(),
        )
    }

    fn wallet(signer: &Signer, i: u32) -> PublicKey {
        signer
            .session()
            .unwrap()
            .keys
            .wallet_utxo_key(i)
            .unwrap()
            .public_key(SECP256K1)
    }

    fn p2wpkh(key: &PublicKey) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash())
    }

    fn stranger() -> ScriptBuf {
        p2wpkh(
            &SecretKey::from_slice(&[9; 32])
                .unwrap()
                .public_key(SECP256K1),
        )
    }

    /// `hsmd_sign_withdrawal` of our 100 000 sat UTXO at wallet key 3 to `to`.
    fn withdrawal(signer: &Signer, to: ScriptBuf) -> Vec<u8> {
        let spent = p2wpkh(&wallet(signer, 3));
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([4; 32]),
                    vout: 0,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(99_000),
                script_pubkey: to,
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: spent.clone(),
        });
        let utxo = HsmUtxo {
            txid: Txid::from_byte_array([4; 32]),
            vout: 0,
            amount: Amount::from_sat(100_000),
            keyindex: 3,
            legacy_is_p2sh: false,
            script_pubkey: spent,
            close_info: None,
            legacy_is_in_coinbase: false,
        };
        encode(SignWithdrawal::new(vec![utxo], WirePsbt::from(psbt)))
    }

    fn sign(signer: &Signer, request: &[u8]) -> Result<Vec<u8>> {
        signer.handle(&ClientContext::master(), None, request)
    }

    #[test]
    fn withdrawal_to_a_stranger_is_refused_by_name_and_changes_nothing() {
        let s = signer(Policy::enforcing());
        let request = withdrawal(&s, stranger());
        let before = snapshot(&s, 7, &request);
        let got = check(&s, 7, &request);
        assert!(!got.ok);
        assert_eq!(got.rule.as_str(), Some("onchain-destination-allowlisted"));
        assert!(
            got.detail.to_string_lossy().contains("allowlisted"),
            "{got:?}"
        );
        assert_eq!(snapshot(&s, 7, &request), before);
        // The request itself gets the same refusal.
        let e = sign(&s, &request).unwrap_err();
        assert_eq!(e.rule(), Some("onchain-destination-allowlisted"));
    }

    #[test]
    fn withdrawal_to_our_wallet_would_be_signed_and_still_is_afterwards() {
        let s = signer(Policy::enforcing());
        let request = withdrawal(&s, p2wpkh(&wallet(&s, 7)));
        let before = snapshot(&s, 8, &request);
        let got = check(&s, 8, &request);
        assert_eq!(
            got,
            VlsCheckRequestReply::new(true, WireString::from(""), WireString::from(""))
        );
        // No signature leaves: the reply is just `ok` and two empty strings.
        assert_eq!(encode(got), vec![0xeb, 0x28, 1, 0, 0]);
        assert_eq!(snapshot(&s, 8, &request), before);
        let signed = SignWithdrawalReply::decode(&sign(&s, &request).unwrap()).unwrap();
        assert_eq!(signed.psbt.inputs[0].partial_sigs.len(), 1);
        assert!(check(&s, 9, &request).ok);
    }

    #[test]
    fn warn_mode_rules_pass_as_they_do_for_the_request() {
        let s = signer(Policy::warn_only());
        let request = withdrawal(&s, stranger());
        assert!(check(&s, 1, &request).ok);
        sign(&s, &request).unwrap();
    }

    fn peer() -> NodeId {
        NodeId::from_pubkey(
            &SecretKey::from_slice(&[0x11; 32])
                .unwrap()
                .public_key(SECP256K1),
        )
    }

    fn peer_secrets() -> ChannelSecrets {
        ChannelSecrets::from_seed(&[0x55; 32]).unwrap()
    }

    /// lightningd declares the channel (peer 0x11.., DBID) and channeld sets it up.
    fn set_up(s: &Signer) {
        sign(s, &encode(NewChannel::new(peer(), DBID))).unwrap();
        let p = peer_secrets().basepoints();
        let m = SetupChannel::new(
            true,
            Amount::from_sat(1_000_000),
            AmountMsat::ZERO,
            Txid::from_byte_array([7; 32]),
            1,
            144,
            vec![],
            None,
            Basepoints {
                revocation: p.revocation,
                payment: p.payment,
                htlc: p.htlc,
                delayed_payment: p.delayed_payment,
            },
            p.funding_pubkey,
            144,
            vec![],
            ChannelType::from_bits(&[12, 22]),
        );
        let channeld = ClientContext::client(peer(), DBID, Permissions::CHANNELD);
        s.handle(&channeld, None, &encode(m)).unwrap();
    }

    /// `hsmd_sign_commitment_tx` of a one-output transaction spending the funding outpoint.
    fn commitment(n: u64) -> Vec<u8> {
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([7; 32]),
                    vout: 1,
                },
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(990_000),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(1_000_000),
            script_pubkey: ScriptBuf::new(),
        });
        let tx = BitcoinTx {
            tx,
            psbt: psbt.into(),
        };
        encode(SignCommitmentTx::new(
            peer(),
            DBID,
            tx,
            peer_secrets().basepoints().funding_pubkey,
            n,
        ))
    }

    #[test]
    fn commitment_check_writes_nothing_that_signing_it_would() {
        let s = signer(Policy::warn_only());
        set_up(&s);
        let key = ChannelKey {
            peer_id: peer(),
            dbid: DBID,
        };
        let request = commitment(0);
        let before = snapshot(&s, 3, &request);
        assert!(check(&s, 3, &request).ok);
        assert!(check(&s, 3, &request).ok);
        assert_eq!(snapshot(&s, 3, &request), before);
        assert_eq!(
            s.store().channel(&key).unwrap().unwrap().holder_signed_from,
            None
        );
        sign(&s, &request).unwrap();
        assert_eq!(
            s.store().channel(&key).unwrap().unwrap().holder_signed_from,
            Some(0)
        );
    }

    #[test]
    fn commitment_of_a_channel_never_set_up_is_refused() {
        let s = signer(Policy::enforcing());
        let got = check(&s, 1, &commitment(0));
        assert!(!got.ok);
        assert_eq!(got.rule.as_str(), Some("channel-known"));
    }

    #[test]
    fn only_lightningds_own_client_may_ask() {
        let s = signer(Policy::enforcing());
        let m = encode(VlsCheckRequest::new(withdrawal(&s, stranger())));
        for client in [
            ClientContext::client(peer(), DBID, Permissions::CHANNELD),
            // Even with every bit of the master's permissions.
            ClientContext::client(peer(), 0, Permissions::LIGHTNINGD),
        ] {
            let e = s.handle(&client, None, &m).unwrap_err();
            assert_eq!(e.rule(), Some("permission"), "{e}");
        }
    }

    #[test]
    fn requests_that_cannot_be_checked_are_bad_requests() {
        let s = signer(Policy::enforcing());
        let nested = encode(VlsCheckRequest::new(withdrawal(&s, stranger())));
        let mut truncated = withdrawal(&s, stranger());
        truncated.truncate(20);
        for (request, says) in [
            (Vec::new(), "empty"),
            (vec![0x00], "empty"),
            (
                encode(SignMessage::new(b"hi".to_vec())),
                "hsmd_sign_message",
            ),
            (nested, "vls_check_request"),
            (vec![0x12, 0x34], "unknown"),
            (truncated, "could not parse"),
        ] {
            let got = check(&s, 1, &request);
            assert!(!got.ok);
            assert_eq!(got.rule.as_str(), Some(BAD_REQUEST));
            assert!(
                got.detail.to_string_lossy().contains(says),
                "{says}: {got:?}"
            );
        }
    }

    #[test]
    fn a_request_that_would_stop_the_signer_is_a_bad_request_here() {
        // Wallet index 2^31 is hardened: hsmd stops rather than sign with it.
        let s = signer(Policy::warn_only());
        let mut m = SignWithdrawal::decode(&withdrawal(&s, stranger())).unwrap();
        m.inputs[0].keyindex = 1 << 31;
        let got = check(&s, 1, &encode(m));
        assert!(!got.ok);
        assert_eq!(got.rule.as_str(), Some(BAD_REQUEST));
        assert!(got.detail.to_string_lossy().contains("stop"), "{got:?}");
    }
}
