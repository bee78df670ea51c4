//! What both sides of an opening share: the conversation with the peer, the reservation
//! of wallet outputs, the checks of the peer's parameters, and the first commitments.

use super::hsm::ChannelSigner;
use super::io::MessageIo;
use super::msgs::{self, Notice, Received};
use super::record::{ChannelConfig, ChannelRecord, ChannelState};
use super::{ChannelError, NodeContext, PeerLimits, MAX_ACCEPTED_HTLCS};
use crate::bolt3::{self, ChannelKeys, ChannelParams, CommitmentSpec, Owner};
use crate::wallet::UnsignedFunding;
use bitcoin::{OutPoint, ScriptBuf, TxOut};
use lightning::ln::msgs::{CommonAcceptChannelFields, CommonOpenChannelFields};
use lightning::util::ser::Writeable;
use secp256k1::PublicKey;
use std::time::Duration;

/// The peer's side of the conversation: sends, and receives what is expected next.
pub(super) struct Session<'p, P: MessageIo> {
    pub(super) io: &'p mut P,
    pub(super) timeout: Duration,
    /// The ids the channel has had (temporary, then final): `error`s about them end it.
    pub(super) ids: Vec<[u8; 32]>,
}

impl<P: MessageIo> Session<'_, P> {
    pub(super) async fn send<M: Writeable>(
        &mut self,
        msg_type: u16,
        msg: &M,
    ) -> Result<(), ChannelError> {
        self.io
            .send(msg_type, &msgs::encode(msg))
            .await
            .map_err(|e| ChannelError::Io(Box::new(e)))
    }

    /// The next message of type `want`. Warnings, pings and unknown odd messages are
    /// skipped, as is an `error` about another channel; an `error` about this one (or all)
    /// ends the opening.
    pub(super) async fn expect(&mut self, want: u16) -> Result<Received, ChannelError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.io.recv()).await;
            let (msg_type, payload) = match next {
                Err(_) => {
                    return Err(ChannelError::Timeout {
                        waiting_for: msgs::name(want),
                        timeout: self.timeout,
                    })
                }
                Ok(Err(e)) => return Err(ChannelError::Io(Box::new(e))),
                Ok(Ok(m)) => m,
            };
            if msg_type == want {
                return Ok(msgs::decode(msg_type, &payload)?);
            }
            match msgs::decode(msg_type, &payload)? {
                Received::Error(n) if n.concerns(&self.ids) => {
                    return Err(ChannelError::PeerFailed(n.text))
                }
                Received::Error(n) | Received::Warning(n) => {
                    log::warn!(
                        "peer {}: {} (channel {})",
                        msgs::name(msg_type),
                        n.text,
                        hex::encode(n.channel_id)
                    );
                }
                Received::Other(t) if t % 2 == 1 || t == msgs::PING || t == msgs::PONG => {}
                _ => {
                    return Err(ChannelError::Protocol(format!(
                        "expected {}, got {} (type {msg_type})",
                        msgs::name(want),
                        msgs::name(msg_type)
                    )))
                }
            }
        }
    }

    /// Tells the peer the opening failed (best effort).
    pub(super) async fn fail(&mut self, why: &ChannelError) {
        let Some(id) = self.ids.last().copied() else {
            return;
        };
        let payload = Notice::encode(&id, &why.to_string());
        if let Err(e) = self.io.send(msgs::ERROR, &payload).await {
            log::debug!("cannot tell the peer the opening failed: {e}");
        }
    }
}

/// How far an opening got, for the cleanup after a failure.
#[derive(Default)]
pub(super) struct Progress {
    /// The channel was saved (and, for the opener, its funding broadcast may follow):
    /// the signer must keep it.
    pub(super) saved: bool,
}

/// After an opening: on failure, tells the peer (unless it failed itself or is gone) and has
/// the signer forget a channel that was never saved. Returns `result` unchanged.
pub(super) async fn conclude<P: MessageIo, T>(
    session: &mut Session<'_, P>,
    signer: &ChannelSigner<'_>,
    progress: &Progress,
    result: Result<T, ChannelError>,
) -> Result<T, ChannelError> {
    if let Err(e) = &result {
        if e.tell_peer() {
            session.fail(e).await;
        }
        if !progress.saved {
            signer.forget().await;
        }
    }
    result
}

/// Wallet outputs promised to openings in progress in this process, so that two openings
/// at once never fund from the same output (the second funding transaction could not be
/// broadcast, and its peer would hold a channel that never exists).
static RESERVED: std::sync::Mutex<Vec<OutPoint>> = std::sync::Mutex::new(Vec::new());

/// A set of reserved wallet outputs, released when dropped.
pub(super) struct Reservation(Vec<OutPoint>);

impl Reservation {
    fn lock() -> std::sync::MutexGuard<'static, Vec<OutPoint>> {
        RESERVED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The wallet's UTXOs that no other opening holds.
    pub(super) fn available(
        ctx: &NodeContext<'_>,
    ) -> Result<Vec<crate::chain::WalletUtxo>, ChannelError> {
        let held = Self::lock();
        let mut utxos = ctx.chain.utxos()?;
        utxos.retain(|u| !held.contains(&u.outpoint()));
        Ok(utxos)
    }

    /// Builds a funding transaction from the outputs no other opening holds, and reserves
    /// its inputs, in one step.
    pub(super) fn fund(
        ctx: &NodeContext<'_>,
        output: TxOut,
        feerate_per_kw: u32,
        change_index: u32,
    ) -> Result<(UnsignedFunding, Reservation), ChannelError> {
        let mut held = Self::lock();
        let mut utxos = ctx.chain.utxos()?;
        utxos.retain(|u| !held.contains(&u.outpoint()));
        let funding = ctx
            .wallet
            .build_funding(&utxos, output, feerate_per_kw, change_index)?;
        let outpoints: Vec<OutPoint> = funding.inputs.iter().map(|u| u.outpoint()).collect();
        held.extend(outpoints.iter().copied());
        Ok((funding, Reservation(outpoints)))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        Self::lock().retain(|o| !self.0.contains(o));
    }
}

/// The reserve we require: 1% of the value, at least both dust limits (BOLT 2).
pub(super) fn our_reserve(config: &ChannelConfig, funding_sat: u64, their_dust_sat: u64) -> u64 {
    if config.channel_reserve_sat > 0 {
        return config.channel_reserve_sat.max(their_dust_sat);
    }
    (funding_sat / 100)
        .max(config.dust_limit_sat)
        .max(their_dust_sat)
}

/// The peer's parameters against BOLT 2 and our limits (which match the signer's policy).
pub(super) fn check_peer_config(
    theirs: &ChannelConfig,
    ours: &ChannelConfig,
    funding_sat: u64,
    limits: &PeerLimits,
) -> Result<(), String> {
    if !limits.to_self_delay.contains(&theirs.to_self_delay) {
        return Err(format!(
            "to_self_delay {} is outside {:?}",
            theirs.to_self_delay, limits.to_self_delay
        ));
    }
    if !limits.dust_limit_sat.contains(&theirs.dust_limit_sat) {
        return Err(format!(
            "dust_limit_satoshis {} is outside {:?}",
            theirs.dust_limit_sat, limits.dust_limit_sat
        ));
    }
    if theirs.channel_reserve_sat > funding_sat {
        return Err(format!(
            "channel_reserve_satoshis {} is more than the channel ({funding_sat} sat)",
            theirs.channel_reserve_sat
        ));
    }
    if theirs.channel_reserve_sat < ours.dust_limit_sat {
        return Err(format!(
            "channel_reserve_satoshis {} is below our dust limit {}",
            theirs.channel_reserve_sat, ours.dust_limit_sat
        ));
    }
    if theirs.max_accepted_htlcs == 0 || theirs.max_accepted_htlcs > MAX_ACCEPTED_HTLCS {
        return Err(format!(
            "max_accepted_htlcs {} is outside 1..={MAX_ACCEPTED_HTLCS}",
            theirs.max_accepted_htlcs
        ));
    }
    if theirs.htlc_minimum_msat >= funding_sat.saturating_mul(1000) {
        return Err(format!(
            "htlc_minimum_msat {} leaves no room for an HTLC",
            theirs.htlc_minimum_msat
        ));
    }
    Ok(())
}

pub(super) fn random_id() -> [u8; 32] {
    secp256k1::rand::random()
}

pub(super) fn keys_of_open(o: &CommonOpenChannelFields) -> ChannelKeys {
    ChannelKeys {
        funding: o.funding_pubkey,
        revocation: o.revocation_basepoint,
        payment: o.payment_basepoint,
        delayed_payment: o.delayed_payment_basepoint,
        htlc: o.htlc_basepoint,
    }
}

pub(super) fn keys_of_accept(a: &CommonAcceptChannelFields) -> ChannelKeys {
    ChannelKeys {
        funding: a.funding_pubkey,
        revocation: a.revocation_basepoint,
        payment: a.payment_basepoint,
        delayed_payment: a.delayed_payment_basepoint,
        htlc: a.htlc_basepoint,
    }
}

pub(super) fn script_bytes(s: &Option<ScriptBuf>) -> Vec<u8> {
    s.as_ref().map(|s| s.to_bytes()).unwrap_or_default()
}

pub(super) fn script_opt(b: &[u8]) -> Option<ScriptBuf> {
    (!b.is_empty()).then(|| ScriptBuf::from_bytes(b.to_vec()))
}

/// What both sides' first commitments share.
pub(super) struct FirstCommitments<'a> {
    pub(super) params: &'a ChannelParams,
    pub(super) to_us_msat: u64,
    pub(super) to_them_msat: u64,
    pub(super) feerate_per_kw: u32,
}

impl FirstCommitments<'_> {
    fn spec(&self, point: PublicKey, dust_limit_sat: u64) -> CommitmentSpec {
        CommitmentSpec {
            number: 0,
            per_commitment_point: point,
            to_us_msat: self.to_us_msat,
            to_them_msat: self.to_them_msat,
            feerate_per_kw: self.feerate_per_kw,
            dust_limit_sat,
            htlcs: Vec::new(),
        }
    }

    /// Builds the peer's first commitment and has the signer sign it.
    pub(super) async fn sign_theirs(
        &self,
        signer: &ChannelSigner<'_>,
        their_point: PublicKey,
        their_dust_sat: u64,
    ) -> Result<secp256k1::ecdsa::Signature, ChannelError> {
        let spec = self.spec(their_point, their_dust_sat);
        let c = bolt3::build_commitment(self.params, Owner::Counterparty, &spec)?;
        signer
            .sign_counterparty_commitment(self.params, &c, &their_point, 0, self.feerate_per_kw)
            .await
    }

    /// Builds our first commitment, checks the peer's signature on it, and has the signer
    /// validate it; returns our next per-commitment point.
    pub(super) async fn validate_ours(
        &self,
        signer: &ChannelSigner<'_>,
        our_point: PublicKey,
        our_dust_sat: u64,
        sig: &secp256k1::ecdsa::Signature,
    ) -> Result<PublicKey, ChannelError> {
        let spec = self.spec(our_point, our_dust_sat);
        let c = bolt3::build_commitment(self.params, Owner::Holder, &spec)?;
        if !bolt3::verify_commitment_sig(&c.tx, self.params, sig, &self.params.counterparty.funding)
        {
            return Err(ChannelError::BadSignature(0));
        }
        signer
            .validate_holder_commitment(self.params, &c, 0, self.feerate_per_kw, sig)
            .await
    }
}

/// Waits for the peer's `channel_ready` and marks the channel ready.
pub(super) async fn await_channel_ready<P: MessageIo>(
    ctx: &NodeContext<'_>,
    s: &mut Session<'_, P>,
    record: &mut ChannelRecord,
) -> Result<(), ChannelError> {
    let Received::ChannelReady(ready) = s.expect(msgs::CHANNEL_READY).await? else {
        return Err(ChannelError::Protocol("expected channel_ready".into()));
    };
    if ready.channel_id.0 != record.channel_id {
        return Err(ChannelError::Protocol(format!(
            "channel_ready for channel {}",
            hex::encode(ready.channel_id.0)
        )));
    }
    record.their_next_point = Some(ready.next_per_commitment_point);
    record.state = ChannelState::Ready;
    ctx.store.save_channel(record)?;
    log::info!("channel {} is ready", record.channel_id_hex());
    Ok(())
}
