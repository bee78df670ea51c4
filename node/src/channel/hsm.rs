//! A channel's requests to the signer, as Core Lightning's lightningd and openingd make them.
//!
//! On the master client: `get_channel_basepoints` and `new_channel` for (peer, dbid), then a
//! client with openingd's permissions (`COMMITMENT_POINT | SIGN_REMOTE_TX`) for that channel.
//! On that client: `get_per_commitment_point`, `setup_channel`, `sign_remote_commitment_tx`
//! (our signature on the peer's commitment) and `validate_commitment_tx` (the peer's
//! signature on ours; the reply gives our next point). Commitments go as Core Lightning
//! sends them: the transaction and a PSBT whose input carries the funding output
//! (`witness_utxo`) and the 2-of-2 script (`witness_script`).
//!
//! A refusal closes the client (or, on the master, stops the proxy); the proxy says why on
//! its status channel, and [`signer_error`] puts that reason in the error.

use super::record::ChannelConfig;
use super::ChannelError;
use crate::bolt3::{ChannelKeys, ChannelParams, Commitment};
use crate::client::{ClientError, HsmClient};
use crate::hsmd::Hsmd;
use crate::status::StatusEvent;
use crate::subdaemon::Subdaemon;
use bitcoin::psbt::Psbt;
use bitcoin::Amount;
use protocol::msgs::{ForgetChannel, SetupChannel, SignRemoteCommitmentTx, ValidateCommitmentTx};
use protocol::types::{
    AmountMsat, Basepoints, BitcoinSignature, BitcoinTx, ChannelType, NodeId, SighashFlag,
};
use secp256k1::{ecdsa, PublicKey};
use std::time::Duration;

/// How long to wait for the proxy's explanation of a closed client.
const REASON_WAIT: Duration = Duration::from_millis(500);

/// The error for a failed signer request: a refusal with the proxy's reason if it gave one
/// (on its status channel, after `mark`), else the client error itself.
pub(crate) async fn signer_error(
    hsmd: &Hsmd,
    mark: usize,
    peer: Option<NodeId>,
    request: &'static str,
    e: ClientError,
) -> ChannelError {
    if matches!(e, ClientError::Closed) {
        let deadline = tokio::time::Instant::now() + REASON_WAIT;
        loop {
            let reason = hsmd
                .status()
                .events()
                .into_iter()
                .skip(mark)
                .find_map(|ev| match ev {
                    StatusEvent::ClientBadRequest {
                        node_id,
                        description,
                        ..
                    } if peer.is_none_or(|p| p == node_id) => Some(description),
                    StatusEvent::Fail { message, .. } => Some(message),
                    _ => None,
                });
            if let Some(reason) = reason {
                return ChannelError::SignerRefused { request, reason };
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    ChannelError::Signer { request, source: e }
}

/// The commitment as Core Lightning sends it to hsmd.
pub(crate) fn commitment_tx(
    params: &ChannelParams,
    c: &Commitment,
) -> Result<BitcoinTx, ChannelError> {
    let mut psbt = Psbt::from_unsigned_tx(c.tx.clone())
        .map_err(|e| ChannelError::Protocol(format!("commitment PSBT: {e}")))?;
    let input = psbt
        .inputs
        .first_mut()
        .ok_or_else(|| ChannelError::Protocol("a commitment without input".into()))?;
    input.witness_utxo = Some(params.funding_txout());
    input.witness_script = Some(params.funding_witness_script());
    Ok(BitcoinTx {
        tx: c.tx.clone(),
        psbt: psbt.into(),
    })
}

/// One channel's signer: the proxy (for the master) and the channel's openingd client.
pub(crate) struct ChannelSigner<'a> {
    hsmd: &'a Hsmd,
    client: HsmClient,
    peer: NodeId,
    dbid: u64,
    /// Our funding key and basepoints.
    pub keys: ChannelKeys,
}

impl<'a> ChannelSigner<'a> {
    /// Announces the channel (peer, dbid) to the signer and opens its client.
    pub async fn start(
        hsmd: &'a Hsmd,
        peer_id: &PublicKey,
        dbid: u64,
    ) -> Result<ChannelSigner<'a>, ChannelError> {
        let peer = NodeId::from_pubkey(peer_id);
        let master = hsmd.master();
        let mark = hsmd.status().mark();
        let bp = match master.get_channel_basepoints(peer, dbid).await {
            Ok(bp) => bp,
            Err(e) => return Err(signer_error(hsmd, mark, None, "get_channel_basepoints", e).await),
        };
        if let Err(e) = master.new_channel(peer, dbid).await {
            return Err(signer_error(hsmd, mark, None, "new_channel", e).await);
        }
        let client = match hsmd
            .new_client(peer, dbid, Subdaemon::Openingd.permissions())
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(signer_error(hsmd, mark, None, "client_hsmfd", e).await),
        };
        Ok(ChannelSigner {
            hsmd,
            client,
            peer,
            dbid,
            keys: ChannelKeys {
                funding: bp.funding_pubkey,
                revocation: bp.basepoints.revocation,
                payment: bp.basepoints.payment,
                delayed_payment: bp.basepoints.delayed_payment,
                htlc: bp.basepoints.htlc,
            },
        })
    }

    async fn fail(&self, mark: usize, request: &'static str, e: ClientError) -> ChannelError {
        signer_error(self.hsmd, mark, Some(self.peer), request, e).await
    }

    /// Our per-commitment point `n`.
    pub async fn point(&self, n: u64) -> Result<PublicKey, ChannelError> {
        let mark = self.hsmd.status().mark();
        match self.client.get_per_commitment_point(n).await {
            Ok(r) => Ok(r.per_commitment_point),
            Err(e) => Err(self.fail(mark, "get_per_commitment_point", e).await),
        }
    }

    /// `setup_channel`: the agreed parameters and the funding outpoint.
    pub async fn setup(
        &self,
        p: &ChannelParams,
        push_msat: u64,
        ours: &ChannelConfig,
        theirs: &ChannelConfig,
    ) -> Result<(), ChannelError> {
        let funding_txout = u16::try_from(p.funding_outpoint.vout).map_err(|_| {
            ChannelError::Protocol(format!(
                "funding output index {} does not fit in 16 bits",
                p.funding_outpoint.vout
            ))
        })?;
        let c = &p.counterparty;
        let req = SetupChannel::new(
            p.we_opened,
            Amount::from_sat(p.value_sat),
            AmountMsat::from_msat(push_msat),
            p.funding_outpoint.txid,
            funding_txout,
            p.holder_selected_delay,
            ours.shutdown_script.clone(),
            None,
            Basepoints {
                revocation: c.revocation,
                payment: c.payment,
                htlc: c.htlc,
                delayed_payment: c.delayed_payment,
            },
            c.funding,
            p.counterparty_selected_delay,
            theirs.shutdown_script.clone(),
            ChannelType::from_bits(p.kind.feature_bits()),
        );
        let mark = self.hsmd.status().mark();
        match self.client.setup_channel(&req).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(mark, "setup_channel", e).await),
        }
    }

    /// `sign_remote_commitment_tx`: our signature on the peer's commitment `number`, built
    /// with its per-commitment point `point`.
    pub async fn sign_counterparty_commitment(
        &self,
        p: &ChannelParams,
        c: &Commitment,
        point: &PublicKey,
        number: u64,
        feerate_per_kw: u32,
    ) -> Result<ecdsa::Signature, ChannelError> {
        let req = SignRemoteCommitmentTx::new(
            commitment_tx(p, c)?,
            p.counterparty.funding,
            *point,
            true,
            number,
            Vec::new(),
            feerate_per_kw,
        );
        let mark = self.hsmd.status().mark();
        match self.client.sign_remote_commitment_tx(&req).await {
            Ok(sig) if sig.sighash == SighashFlag::All => Ok(sig.sig),
            Ok(_) => Err(ChannelError::Protocol(
                "the signer signed the commitment with another sighash than ALL".into(),
            )),
            Err(e) => Err(self.fail(mark, "sign_remote_commitment_tx", e).await),
        }
    }

    /// `validate_commitment_tx`: the peer's signature on our commitment `number`; returns
    /// our point for the next one.
    pub async fn validate_holder_commitment(
        &self,
        p: &ChannelParams,
        c: &Commitment,
        number: u64,
        feerate_per_kw: u32,
        sig: &ecdsa::Signature,
    ) -> Result<PublicKey, ChannelError> {
        let req = ValidateCommitmentTx::new(
            commitment_tx(p, c)?,
            Vec::new(),
            number,
            feerate_per_kw,
            BitcoinSignature {
                sig: *sig,
                sighash: SighashFlag::All,
            },
            Vec::new(),
        );
        let mark = self.hsmd.status().mark();
        match self.client.validate_commitment_tx(&req).await {
            Ok(r) => Ok(r.next_per_commitment_point),
            Err(e) => Err(self.fail(mark, "validate_commitment_tx", e).await),
        }
    }

    /// `forget_channel` on the master, for an opening that failed before anything was
    /// signed for broadcast (best effort: the signer then refuses every request for it).
    pub async fn forget(&self) {
        if let Err(e) = self
            .hsmd
            .master()
            .call(&ForgetChannel::new(self.peer, self.dbid))
            .await
        {
            log::warn!("forget_channel {} with {}: {e}", self.dbid, self.peer);
        }
    }
}
