//! The two sides of a v1 channel opening (see the module documentation of
//! [`crate::channel`] for the sequence).

use super::hsm::{signer_error, ChannelSigner};
use super::io::MessageIo;
use super::msgs::{self, Notice, Received};
use super::record::{ChannelConfig, ChannelRecord, ChannelState};
use super::{AcceptPolicy, ChannelError, NodeContext, OpenParams, PeerLimits, MAX_ACCEPTED_HTLCS};
use crate::bolt3::{self, ChannelKeys, ChannelKind, ChannelParams, CommitmentSpec, Owner};
use crate::store::unix_now;
use crate::wallet::{UnsignedFunding, WalletError};
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, OutPoint, ScriptBuf, TxOut, WScriptHash};
use lightning::ln::msgs::{
    AcceptChannel, ChannelReady, CommonAcceptChannelFields, CommonOpenChannelFields,
    FundingCreated, FundingSigned, OpenChannel,
};
use lightning::ln::types::ChannelId;
use lightning::util::ser::Writeable;
use secp256k1::PublicKey;
use std::time::Duration;

/// The peer's side of the conversation: sends, and receives what is expected next.
struct Session<'p, P: MessageIo> {
    io: &'p mut P,
    timeout: Duration,
    /// The ids the channel has had (temporary, then final): `error`s about them end it.
    ids: Vec<[u8; 32]>,
}

impl<P: MessageIo> Session<'_, P> {
    async fn send<M: Writeable>(&mut self, msg_type: u16, msg: &M) -> Result<(), ChannelError> {
        self.io
            .send(msg_type, &msgs::encode(msg))
            .await
            .map_err(|e| ChannelError::Io(Box::new(e)))
    }

    /// The next message of type `want`. Warnings, pings and unknown odd messages are
    /// skipped, as is an `error` about another channel; an `error` about this one (or all)
    /// ends the opening.
    async fn expect(&mut self, want: u16) -> Result<Received, ChannelError> {
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
    async fn fail(&mut self, why: &ChannelError) {
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
struct Progress {
    /// The channel was saved (and, for the opener, its funding broadcast may follow):
    /// the signer must keep it.
    saved: bool,
}

/// The reserve we require: 1% of the value, at least both dust limits (BOLT 2).
fn our_reserve(config: &ChannelConfig, funding_sat: u64, their_dust_sat: u64) -> u64 {
    if config.channel_reserve_sat > 0 {
        return config.channel_reserve_sat.max(their_dust_sat);
    }
    (funding_sat / 100)
        .max(config.dust_limit_sat)
        .max(their_dust_sat)
}

/// The peer's parameters against BOLT 2 and our limits (which match the signer's policy).
fn check_peer_config(
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

fn random_id() -> [u8; 32] {
    secp256k1::rand::random()
}

fn keys_of_open(o: &CommonOpenChannelFields) -> ChannelKeys {
    ChannelKeys {
        funding: o.funding_pubkey,
        revocation: o.revocation_basepoint,
        payment: o.payment_basepoint,
        delayed_payment: o.delayed_payment_basepoint,
        htlc: o.htlc_basepoint,
    }
}

fn keys_of_accept(a: &CommonAcceptChannelFields) -> ChannelKeys {
    ChannelKeys {
        funding: a.funding_pubkey,
        revocation: a.revocation_basepoint,
        payment: a.payment_basepoint,
        delayed_payment: a.delayed_payment_basepoint,
        htlc: a.htlc_basepoint,
    }
}

fn script_bytes(s: &Option<ScriptBuf>) -> Vec<u8> {
    s.as_ref().map(|s| s.to_bytes()).unwrap_or_default()
}

fn script_opt(b: &[u8]) -> Option<ScriptBuf> {
    (!b.is_empty()).then(|| ScriptBuf::from_bytes(b.to_vec()))
}

/// What both sides' first commitments share.
struct FirstCommitments<'a> {
    params: &'a ChannelParams,
    to_us_msat: u64,
    to_them_msat: u64,
    feerate_per_kw: u32,
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
    async fn sign_theirs(
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
    async fn validate_ours(
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

/// Opens a channel to `peer_id` over `io` (after `init`), funded from the wallet, and
/// returns it once both `channel_ready` were exchanged (or, if the peer wants confirmations
/// first, once our funding transaction is out, in state
/// [`ChannelState::AwaitingChannelReady`]).
///
/// # Errors
/// [`ChannelError`]: the peer refused or misbehaved, the signer refused (with its reason),
/// the wallet has too little, or a store, chain or connection error. The peer is sent an
/// `error` when it is not the cause.
pub async fn open<P: MessageIo>(
    ctx: &NodeContext<'_>,
    io: &mut P,
    peer_id: &PublicKey,
    params: &OpenParams,
) -> Result<ChannelRecord, ChannelError> {
    check_open_params(params)?;
    // Refuse before talking to anyone if the wallet cannot pay for it.
    let dummy = TxOut {
        value: Amount::from_sat(params.funding_sat),
        script_pubkey: ScriptBuf::new_p2wsh(&WScriptHash::all_zeros()),
    };
    let change_probe = 0;
    ctx.wallet.build_funding(
        &ctx.chain.utxos()?,
        dummy,
        params.funding_feerate_per_kw,
        change_probe,
    )?;

    let dbid = ctx.store.next_dbid()?;
    let signer = ChannelSigner::start(ctx.hsmd, peer_id, dbid).await?;
    let mut session = Session {
        io,
        timeout: params.timeout,
        ids: Vec::new(),
    };
    let mut progress = Progress::default();
    let result = opener(ctx, &mut session, &signer, peer_id, dbid, params, &mut progress).await;
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

fn check_open_params(p: &OpenParams) -> Result<(), ChannelError> {
    let bad = |s: String| Err(ChannelError::InvalidParams(s));
    if p.funding_sat < super::MIN_FUNDING_SAT || p.funding_sat > super::MAX_FUNDING_SAT {
        return bad(format!(
            "a channel of {} sat is outside {}..={} sat",
            p.funding_sat,
            super::MIN_FUNDING_SAT,
            super::MAX_FUNDING_SAT
        ));
    }
    if u128::from(p.push_msat) > u128::from(p.funding_sat) * 1000 {
        return bad(format!("pushing {} msat is more than the channel", p.push_msat));
    }
    if !p.limits.to_self_delay.contains(&p.config.to_self_delay) {
        return bad(format!(
            "our to_self_delay {} is outside {:?}",
            p.config.to_self_delay, p.limits.to_self_delay
        ));
    }
    if !p.limits.feerate_per_kw.contains(&p.commitment_feerate_per_kw) {
        return bad(format!(
            "commitment fee rate {} is outside {:?}",
            p.commitment_feerate_per_kw, p.limits.feerate_per_kw
        ));
    }
    if !p.limits.dust_limit_sat.contains(&p.config.dust_limit_sat) {
        return bad(format!(
            "our dust limit {} is outside {:?}",
            p.config.dust_limit_sat, p.limits.dust_limit_sat
        ));
    }
    let fee = bolt3::commitment_fee_sat(p.kind, p.commitment_feerate_per_kw, 0)
        + if p.kind.has_anchors() {
            2 * bolt3::ANCHOR_OUTPUT_SAT
        } else {
            0
        };
    if (u128::from(p.funding_sat) * 1000 - u128::from(p.push_msat)) < u128::from(fee) * 1000 {
        return bad(format!("what we keep cannot pay the commitment fee of {fee} sat"));
    }
    Ok(())
}

async fn opener<P: MessageIo>(
    ctx: &NodeContext<'_>,
    s: &mut Session<'_, P>,
    signer: &ChannelSigner<'_>,
    peer_id: &PublicKey,
    dbid: u64,
    params: &OpenParams,
    progress: &mut Progress,
) -> Result<ChannelRecord, ChannelError> {
    let temp_id = random_id();
    s.ids.push(temp_id);
    let our_point = signer.point(0).await?;
    let keys = signer.keys;
    let funding_sat = params.funding_sat;
    let mut ours = params.config.clone();
    ours.channel_reserve_sat = our_reserve(&ours, funding_sat, 0);

    let open = OpenChannel {
        common_fields: CommonOpenChannelFields {
            chain_hash: ChainHash::using_genesis_block(ctx.network),
            temporary_channel_id: ChannelId(temp_id),
            funding_satoshis: funding_sat,
            dust_limit_satoshis: ours.dust_limit_sat,
            max_htlc_value_in_flight_msat: ours
                .max_htlc_value_in_flight_msat
                .min(funding_sat * 1000),
            htlc_minimum_msat: ours.htlc_minimum_msat,
            commitment_feerate_sat_per_1000_weight: params.commitment_feerate_per_kw,
            to_self_delay: ours.to_self_delay,
            max_accepted_htlcs: ours.max_accepted_htlcs,
            funding_pubkey: keys.funding,
            revocation_basepoint: keys.revocation,
            payment_basepoint: keys.payment,
            delayed_payment_basepoint: keys.delayed_payment,
            htlc_basepoint: keys.htlc,
            first_per_commitment_point: our_point,
            channel_flags: u8::from(params.announce),
            shutdown_scriptpubkey: script_opt(&ours.shutdown_script),
            channel_type: Some(params.kind.features()),
        },
        push_msat: params.push_msat,
        channel_reserve_satoshis: ours.channel_reserve_sat,
    };
    s.send(msgs::OPEN_CHANNEL, &open).await?;

    let Received::AcceptChannel(accept) = s.expect(msgs::ACCEPT_CHANNEL).await? else {
        return Err(ChannelError::Protocol("expected accept_channel".into()));
    };
    let a = &accept.common_fields;
    if a.temporary_channel_id.0 != temp_id {
        return Err(ChannelError::Protocol(
            "accept_channel for another temporary channel id".into(),
        ));
    }
    match &a.channel_type {
        Some(t) if *t == params.kind.features() => {}
        Some(t) => {
            return Err(ChannelError::Refused(format!(
                "the peer answered with channel type {t}, we proposed {}",
                params.kind
            )))
        }
        None => return Err(ChannelError::Refused("accept_channel has no channel_type".into())),
    }
    let theirs = ChannelConfig {
        to_self_delay: a.to_self_delay,
        dust_limit_sat: a.dust_limit_satoshis,
        channel_reserve_sat: accept.channel_reserve_satoshis,
        htlc_minimum_msat: a.htlc_minimum_msat,
        max_htlc_value_in_flight_msat: a.max_htlc_value_in_flight_msat,
        max_accepted_htlcs: a.max_accepted_htlcs,
        shutdown_script: script_bytes(&a.shutdown_scriptpubkey),
    };
    check_peer_config(&theirs, &ours, funding_sat, &params.limits).map_err(ChannelError::Refused)?;
    if ours.channel_reserve_sat < theirs.dust_limit_sat {
        return Err(ChannelError::Refused(format!(
            "the peer's dust limit {} is above our reserve {}",
            theirs.dust_limit_sat, ours.channel_reserve_sat
        )));
    }
    let their_keys = keys_of_accept(a);
    let their_point = a.first_per_commitment_point;

    // The funding transaction: its txid fixes the channel.
    let change_index = ctx.store.next_wallet_index()?;
    ctx.chain
        .watch(ctx.wallet.script_pubkey(change_index)?, change_index)?;
    let script = bolt3::funding_witness_script(&keys.funding, &their_keys.funding);
    let funding_out = TxOut {
        value: Amount::from_sat(funding_sat),
        script_pubkey: script.to_p2wsh(),
    };
    let unsigned: UnsignedFunding = ctx.wallet.build_funding(
        &ctx.chain.utxos()?,
        funding_out,
        params.funding_feerate_per_kw,
        change_index,
    )?;
    let outpoint = unsigned.outpoint();
    let p = ChannelParams {
        kind: params.kind,
        funding_outpoint: outpoint,
        value_sat: funding_sat,
        we_opened: true,
        holder: keys,
        counterparty: their_keys,
        holder_selected_delay: ours.to_self_delay,
        counterparty_selected_delay: theirs.to_self_delay,
    };
    signer.setup(&p, params.push_msat, &ours, &theirs).await?;
    let first = FirstCommitments {
        params: &p,
        to_us_msat: funding_sat * 1000 - params.push_msat,
        to_them_msat: params.push_msat,
        feerate_per_kw: params.commitment_feerate_per_kw,
    };
    let our_sig = first
        .sign_theirs(signer, their_point, theirs.dust_limit_sat)
        .await?;
    let funding_output_index = u16::try_from(outpoint.vout)
        .map_err(|_| ChannelError::Protocol("funding output index above 65535".into()))?;
    s.send(
        msgs::FUNDING_CREATED,
        &FundingCreated {
            temporary_channel_id: ChannelId(temp_id),
            funding_txid: outpoint.txid,
            funding_output_index,
            signature: our_sig,
        },
    )
    .await?;

    let channel_id = bolt3::channel_id(&outpoint);
    s.ids.push(channel_id);
    let Received::FundingSigned(signed) = s.expect(msgs::FUNDING_SIGNED).await? else {
        return Err(ChannelError::Protocol("expected funding_signed".into()));
    };
    if signed.channel_id.0 != channel_id {
        return Err(ChannelError::Protocol(format!(
            "funding_signed for channel {}, expected {}",
            hex::encode(signed.channel_id.0),
            hex::encode(channel_id)
        )));
    }
    let next_point = first
        .validate_ours(signer, our_point, ours.dust_limit_sat, &signed.signature)
        .await?;

    // Only now may the funding transaction be signed and sent.
    let mark = ctx.hsmd.status().mark();
    let funding_tx = match ctx.wallet.sign(ctx.hsmd.master(), &unsigned).await {
        Ok(tx) => tx,
        Err(WalletError::Signer(e)) => {
            return Err(signer_error(ctx.hsmd, mark, None, "sign_withdrawal", e).await)
        }
        Err(e) => return Err(e.into()),
    };
    let mut record = ChannelRecord {
        channel_id,
        peer_id: *peer_id,
        dbid,
        we_opened: true,
        kind: params.kind,
        funding_outpoint: outpoint,
        capacity_sat: funding_sat,
        push_msat: params.push_msat,
        state: ChannelState::AwaitingChannelReady,
        feerate_per_kw: params.commitment_feerate_per_kw,
        ours,
        theirs,
        our_keys: keys,
        their_keys,
        our_commitment_number: 0,
        their_commitment_number: 0,
        their_current_point: their_point,
        their_next_point: None,
        to_us_msat: first.to_us_msat,
        to_them_msat: first.to_them_msat,
        their_commitment_sig: Some(signed.signature),
        funding_tx: Some(funding_tx.clone()),
        created_at: unix_now(),
    };
    ctx.store.save_channel(&record)?;
    progress.saved = true;
    ctx.chain.broadcast(&funding_tx)?;
    log::info!(
        "channel {} with {peer_id}: funding {} broadcast",
        record.channel_id_hex(),
        outpoint
    );
    s.send(
        msgs::CHANNEL_READY,
        &ChannelReady {
            channel_id: ChannelId(channel_id),
            next_per_commitment_point: next_point,
            short_channel_id_alias: None,
        },
    )
    .await?;
    if a.minimum_depth > 0 {
        log::info!(
            "channel {}: the peer waits for {} confirmations before channel_ready",
            record.channel_id_hex(),
            a.minimum_depth
        );
        return Ok(record);
    }
    await_channel_ready(ctx, s, &mut record).await?;
    Ok(record)
}

/// Waits for the peer's `channel_ready` and marks the channel ready.
async fn await_channel_ready<P: MessageIo>(
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

/// Waits for the peer's `open_channel` over `io` and accepts it if `policy` allows (see
/// [`accept_open_channel`]).
///
/// # Errors
/// As [`accept_open_channel`]; also a message other than `open_channel` first.
pub async fn accept<P: MessageIo>(
    ctx: &NodeContext<'_>,
    io: &mut P,
    peer_id: &PublicKey,
    policy: &AcceptPolicy,
) -> Result<ChannelRecord, ChannelError> {
    let mut session = Session {
        io,
        timeout: policy.timeout,
        ids: Vec::new(),
    };
    let open = match session.expect(msgs::OPEN_CHANNEL).await {
        Ok(Received::OpenChannel(o)) => o,
        Ok(_) => return Err(ChannelError::Protocol("expected open_channel".into())),
        Err(e) => return Err(e),
    };
    accept_open_channel(ctx, session.io, peer_id, open, policy).await
}

/// Accepts (or refuses, with an `error` to the peer) an `open_channel` the peer sent, and
/// runs the acceptor's side to the end: zero-conf, our `channel_ready` goes right after
/// `funding_signed`. Returns the channel once the peer's `channel_ready` came.
///
/// # Errors
/// [`ChannelError::Refused`] if the proposal is outside `policy` (or BOLT 2), and the other
/// [`ChannelError`]s as for [`open`].
pub async fn accept_open_channel<P: MessageIo>(
    ctx: &NodeContext<'_>,
    io: &mut P,
    peer_id: &PublicKey,
    open: OpenChannel,
    policy: &AcceptPolicy,
) -> Result<ChannelRecord, ChannelError> {
    let mut session = Session {
        io,
        timeout: policy.timeout,
        ids: vec![open.common_fields.temporary_channel_id.0],
    };
    let kind = match check_open_channel(ctx, &open, policy) {
        Ok(k) => k,
        Err(e) => {
            session.fail(&e).await;
            return Err(e);
        }
    };
    let dbid = ctx.store.next_dbid()?;
    let signer = match ChannelSigner::start(ctx.hsmd, peer_id, dbid).await {
        Ok(s) => s,
        Err(e) => {
            session.fail(&e).await;
            return Err(e);
        }
    };
    let mut progress = Progress::default();
    let result = acceptor(
        ctx,
        &mut session,
        &signer,
        peer_id,
        dbid,
        &open,
        kind,
        policy,
        &mut progress,
    )
    .await;
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

/// The peer's `open_channel` against BOLT 2 and `policy`; returns the channel type.
fn check_open_channel(
    ctx: &NodeContext<'_>,
    open: &OpenChannel,
    policy: &AcceptPolicy,
) -> Result<ChannelKind, ChannelError> {
    let o = &open.common_fields;
    let refuse = |s: String| Err(ChannelError::Refused(s));
    if o.chain_hash != ChainHash::using_genesis_block(ctx.network) {
        return refuse(format!("chain {} is not ours", o.chain_hash));
    }
    let kind = match &o.channel_type {
        None => return refuse("open_channel has no channel_type".into()),
        Some(t) => match ChannelKind::from_features(t) {
            Some(k) if policy.kinds.contains(&k) => k,
            _ => return refuse(format!("channel type {t} is not one we accept")),
        },
    };
    if !policy.funding_sat.contains(&o.funding_satoshis) {
        return refuse(format!(
            "a channel of {} sat is outside {:?} sat",
            o.funding_satoshis, policy.funding_sat
        ));
    }
    let value_msat = u128::from(o.funding_satoshis) * 1000;
    if u128::from(open.push_msat) > value_msat {
        return refuse(format!("push_msat {} is more than the channel", open.push_msat));
    }
    if !policy
        .limits
        .feerate_per_kw
        .contains(&o.commitment_feerate_sat_per_1000_weight)
    {
        return refuse(format!(
            "commitment fee rate {} is outside {:?}",
            o.commitment_feerate_sat_per_1000_weight, policy.limits.feerate_per_kw
        ));
    }
    let theirs = ChannelConfig {
        to_self_delay: o.to_self_delay,
        dust_limit_sat: o.dust_limit_satoshis,
        channel_reserve_sat: open.channel_reserve_satoshis,
        htlc_minimum_msat: o.htlc_minimum_msat,
        max_htlc_value_in_flight_msat: o.max_htlc_value_in_flight_msat,
        max_accepted_htlcs: o.max_accepted_htlcs,
        shutdown_script: script_bytes(&o.shutdown_scriptpubkey),
    };
    check_peer_config(&theirs, &policy.config, o.funding_satoshis, &policy.limits)
        .map_err(ChannelError::Refused)?;
    if theirs.dust_limit_sat > theirs.channel_reserve_sat {
        return refuse(format!(
            "dust_limit_satoshis {} is above channel_reserve_satoshis {}",
            theirs.dust_limit_sat, theirs.channel_reserve_sat
        ));
    }
    let fee = bolt3::commitment_fee_sat(kind, o.commitment_feerate_sat_per_1000_weight, 0)
        + if kind.has_anchors() {
            2 * bolt3::ANCHOR_OUTPUT_SAT
        } else {
            0
        };
    if value_msat - u128::from(open.push_msat) < u128::from(fee) * 1000 {
        return refuse(format!(
            "the funder's balance cannot pay the first commitment's fee ({fee} sat)"
        ));
    }
    Ok(kind)
}

#[allow(clippy::too_many_arguments)]
async fn acceptor<P: MessageIo>(
    ctx: &NodeContext<'_>,
    s: &mut Session<'_, P>,
    signer: &ChannelSigner<'_>,
    peer_id: &PublicKey,
    dbid: u64,
    open: &OpenChannel,
    kind: ChannelKind,
    policy: &AcceptPolicy,
    progress: &mut Progress,
) -> Result<ChannelRecord, ChannelError> {
    let o = &open.common_fields;
    let temp_id = o.temporary_channel_id.0;
    let funding_sat = o.funding_satoshis;
    let our_point = signer.point(0).await?;
    let keys = signer.keys;
    let theirs = ChannelConfig {
        to_self_delay: o.to_self_delay,
        dust_limit_sat: o.dust_limit_satoshis,
        channel_reserve_sat: open.channel_reserve_satoshis,
        htlc_minimum_msat: o.htlc_minimum_msat,
        max_htlc_value_in_flight_msat: o.max_htlc_value_in_flight_msat,
        max_accepted_htlcs: o.max_accepted_htlcs,
        shutdown_script: script_bytes(&o.shutdown_scriptpubkey),
    };
    let mut ours = policy.config.clone();
    ours.channel_reserve_sat = our_reserve(&ours, funding_sat, theirs.dust_limit_sat);
    let their_keys = keys_of_open(o);
    let their_point = o.first_per_commitment_point;

    let accept = AcceptChannel {
        common_fields: CommonAcceptChannelFields {
            temporary_channel_id: ChannelId(temp_id),
            dust_limit_satoshis: ours.dust_limit_sat,
            max_htlc_value_in_flight_msat: ours
                .max_htlc_value_in_flight_msat
                .min(funding_sat * 1000),
            htlc_minimum_msat: ours.htlc_minimum_msat,
            minimum_depth: 0,
            to_self_delay: ours.to_self_delay,
            max_accepted_htlcs: ours.max_accepted_htlcs,
            funding_pubkey: keys.funding,
            revocation_basepoint: keys.revocation,
            payment_basepoint: keys.payment,
            delayed_payment_basepoint: keys.delayed_payment,
            htlc_basepoint: keys.htlc,
            first_per_commitment_point: our_point,
            shutdown_scriptpubkey: script_opt(&ours.shutdown_script),
            channel_type: Some(kind.features()),
        },
        channel_reserve_satoshis: ours.channel_reserve_sat,
    };
    s.send(msgs::ACCEPT_CHANNEL, &accept).await?;

    let Received::FundingCreated(created) = s.expect(msgs::FUNDING_CREATED).await? else {
        return Err(ChannelError::Protocol("expected funding_created".into()));
    };
    if created.temporary_channel_id.0 != temp_id {
        return Err(ChannelError::Protocol(
            "funding_created for another temporary channel id".into(),
        ));
    }
    let outpoint = OutPoint {
        txid: created.funding_txid,
        vout: u32::from(created.funding_output_index),
    };
    let p = ChannelParams {
        kind,
        funding_outpoint: outpoint,
        value_sat: funding_sat,
        we_opened: false,
        holder: keys,
        counterparty: their_keys,
        holder_selected_delay: ours.to_self_delay,
        counterparty_selected_delay: theirs.to_self_delay,
    };
    signer.setup(&p, open.push_msat, &ours, &theirs).await?;
    let first = FirstCommitments {
        params: &p,
        to_us_msat: open.push_msat,
        to_them_msat: funding_sat * 1000 - open.push_msat,
        feerate_per_kw: o.commitment_feerate_sat_per_1000_weight,
    };
    let next_point = first
        .validate_ours(signer, our_point, ours.dust_limit_sat, &created.signature)
        .await?;
    let our_sig = first
        .sign_theirs(signer, their_point, theirs.dust_limit_sat)
        .await?;
    let channel_id = bolt3::channel_id(&outpoint);
    s.ids.push(channel_id);
    let mut record = ChannelRecord {
        channel_id,
        peer_id: *peer_id,
        dbid,
        we_opened: false,
        kind,
        funding_outpoint: outpoint,
        capacity_sat: funding_sat,
        push_msat: open.push_msat,
        state: ChannelState::AwaitingChannelReady,
        feerate_per_kw: o.commitment_feerate_sat_per_1000_weight,
        ours,
        theirs,
        our_keys: keys,
        their_keys,
        our_commitment_number: 0,
        their_commitment_number: 0,
        their_current_point: their_point,
        their_next_point: None,
        to_us_msat: first.to_us_msat,
        to_them_msat: first.to_them_msat,
        their_commitment_sig: Some(created.signature),
        funding_tx: None,
        created_at: unix_now(),
    };
    ctx.store.save_channel(&record)?;
    progress.saved = true;
    s.send(
        msgs::FUNDING_SIGNED,
        &FundingSigned {
            channel_id: ChannelId(channel_id),
            signature: our_sig,
        },
    )
    .await?;
    // Zero-conf: we trust the opener's funding transaction at once.
    s.send(
        msgs::CHANNEL_READY,
        &ChannelReady {
            channel_id: ChannelId(channel_id),
            next_per_commitment_point: next_point,
            short_channel_id_alias: None,
        },
    )
    .await?;
    await_channel_ready(ctx, s, &mut record).await?;
    Ok(record)
}
