//! The opener's side: [`open`].

use super::hsm::{signer_error, ChannelSigner};
use super::io::MessageIo;
use super::msgs::{self, Received};
use super::record::{ChannelConfig, ChannelRecord, ChannelState};
use super::session::*;
use super::{ChannelError, NodeContext, OpenParams};
use crate::bolt3::{self, ChannelParams};
use crate::store::unix_now;
use crate::wallet::WalletError;
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, ScriptBuf, TxOut, WScriptHash};
use lightning::ln::msgs::{ChannelReady, CommonOpenChannelFields, FundingCreated, OpenChannel};
use lightning::ln::types::ChannelId;
use secp256k1::PublicKey;

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
        &Reservation::available(ctx)?,
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
    let result = opener(
        ctx,
        &mut session,
        &signer,
        peer_id,
        dbid,
        params,
        &mut progress,
    )
    .await;
    conclude(&mut session, &signer, &progress, result).await
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
        return bad(format!(
            "pushing {} msat is more than the channel",
            p.push_msat
        ));
    }
    if !p.limits.to_self_delay.contains(&p.config.to_self_delay) {
        return bad(format!(
            "our to_self_delay {} is outside {:?}",
            p.config.to_self_delay, p.limits.to_self_delay
        ));
    }
    if !p
        .limits
        .feerate_per_kw
        .contains(&p.commitment_feerate_per_kw)
    {
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
        return bad(format!(
            "what we keep cannot pay the commitment fee of {fee} sat"
        ));
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
        None => {
            return Err(ChannelError::Refused(
                "accept_channel has no channel_type".into(),
            ))
        }
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
    check_peer_config(&theirs, &ours, funding_sat, &params.limits)
        .map_err(ChannelError::Refused)?;
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
    // The inputs stay reserved until the funding transaction is out (they are then spent)
    // or the opening fails.
    let (unsigned, _reservation) = Reservation::fund(
        ctx,
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
    ctx.store.touch_peer(peer_id, None)?;
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
