//! The acceptor's side: [`accept`] and [`accept_open_channel`].

use super::hsm::ChannelSigner;
use super::io::MessageIo;
use super::msgs::{self, Received};
use super::record::{ChannelConfig, ChannelRecord, ChannelState};
use super::session::*;
use super::{AcceptPolicy, ChannelError, NodeContext};
use crate::bolt3::{self, ChannelKind, ChannelParams};
use crate::store::unix_now;
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::OutPoint;
use lightning::ln::msgs::{
    AcceptChannel, ChannelReady, CommonAcceptChannelFields, FundingSigned, OpenChannel,
};
use lightning::ln::types::ChannelId;
use secp256k1::PublicKey;

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
/// [`ChannelError`]s as for [`open`](super::open()).
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
    conclude(&mut session, &signer, &progress, result).await
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
        return refuse(format!(
            "push_msat {} is more than the channel",
            open.push_msat
        ));
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
    ctx.store.touch_peer(peer_id, None)?;
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
