//! Channel lifecycle and the holder/counterparty commitment state machine: basepoints, setup,
//! per-commitment points and secrets, validation and revocation.
//!
//! Replies are Core Lightning's; what this adds is durable per-channel state (see
//! [`ChannelState`]) and the policy rules that keep a compromised node from making us reveal
//! or sign what could cost the channel's funds:
//!
//! | rule | refuses |
//! |---|---|
//! | `channel-known` | any request for a forgotten channel; commitment work on a channel never set up |
//! | `commitment-number-monotonic` | validating a holder commitment older than one already validated, or skipping one |
//! | `revoke-superseded-only` | revealing the secret of holder commitment `n` before `n + 1` was validated |
//! | `revoke-in-order` | revoking ahead of the next commitment in order (a revocation already given is given again); the peer's revocations out of order |
//! | `commitment-holder-not-revoked` | revoking a holder commitment that was signed for broadcast |
//! | `revocation-secret-matches` | a peer's secret that is not the one of the point it gave |
//! | `channel-safe-type`, `channel-to-self-delay`, `channel-max-value` | a `setup_channel` whose channel type, delays or value are unsafe |
//! | `commitment-feerate`, `commitment-htlc-limits`, `channel-dust-limit`, `commitment-balance` | validating a holder commitment whose content is unsafe (see `policy_channel`) |
//!
//! Numbers are compared as given; a channel's first validated (or signed) commitment fixes
//! where its history starts, so channels need not begin at commitment 0.

use crate::bolt3;
use crate::context::ChannelKey;
use crate::error::{Result, SignerError};
use crate::handler::Req;
use crate::keys::channel::MAX_COMMITMENT_NUMBER;
use crate::policy_channel::{self, Commitment, Owner};
use crate::store::ChannelState;
use bitcoin::hashes::Hash;
use protocol::msgs::*;
use protocol::types::{Basepoints, Secret};
use protocol::Message;
use secp256k1::{SecretKey, SECP256K1};

/// Refuses, by `channel-known`, any request for a channel that `forget_channel` forgot.
pub(crate) fn check_not_forgotten(
    r: &Req<'_>,
    key: &ChannelKey,
    state: &ChannelState,
) -> Result<()> {
    r.policy.check("channel-known", !state.forgotten, || {
        format!(
            "channel {} with peer {} was forgotten",
            key.dbid, key.peer_id
        )
    })
}

/// Refuses, by `channel-known`, commitment work on a channel that was never set up
/// (`setup_channel`) or was forgotten.
pub(crate) fn check_set_up(r: &Req<'_>, key: &ChannelKey, state: &ChannelState) -> Result<()> {
    check_not_forgotten(r, key, state)?;
    r.policy.check("channel-known", state.setup.is_some(), || {
        format!(
            "channel {} with peer {} was never set up",
            key.dbid, key.peer_id
        )
    })
}

/// Answers `GetChannelBasepoints`: the channel's basepoints and funding key (public data,
/// derived from the channel seed; no state).
pub(crate) fn get_channel_basepoints(r: &mut Req<'_>, m: GetChannelBasepoints) -> Result<Message> {
    let key = ChannelKey {
        peer_id: m.peerid,
        dbid: m.dbid,
    };
    let bp = r.channel_secrets(&key)?.basepoints();
    let basepoints = Basepoints {
        revocation: bp.revocation,
        payment: bp.payment,
        htlc: bp.htlc,
        delayed_payment: bp.delayed_payment,
    };
    Ok(GetChannelBasepointsReply::new(basepoints, bp.funding_pubkey).into())
}

/// Answers `NewChannel`: records the channel (a forgotten one is not brought back).
pub(crate) fn new_channel(r: &mut Req<'_>, m: NewChannel) -> Result<Message> {
    let key = ChannelKey {
        peer_id: m.id,
        dbid: m.dbid,
    };
    let state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    r.put_channel_state(&key, &state)?;
    Ok(NewChannelReply::new().into())
}

/// Answers `SetupChannel`: keeps the channel's parameters (the request itself) and its
/// funding outpoint. Sent again with other parameters, it is refused once the channel is in
/// use (`channel-setup-final`): lightningd sets up a channel again only for a funding RBF,
/// before its first commitment is superseded and its funding locked.
pub(crate) fn setup_channel(r: &mut Req<'_>, m: SetupChannel) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    policy_channel::check_setup(r.policy, &m)?;
    let encoded = m
        .encode()
        .map_err(|e| SignerError::BadRequest(format!("setup_channel cannot be kept: {e}")))?;
    let changed = state.setup.as_ref().is_some_and(|s| *s != encoded);
    let in_use = state.counterparty_signed.is_some_and(|n| n > 0)
        || state.holder_validated.is_some_and(|n| n > 0)
        || state.funding_locked;
    r.policy.check(SETUP_FINAL, !(changed && in_use), || {
        format!(
            "channel {} is in use (commitments signed up to {:?}, validated up to {:?}, funding {}): its parameters cannot be set again",
            key.dbid,
            state.counterparty_signed,
            state.holder_validated,
            if state.funding_locked { "locked" } else { "not locked" }
        )
    })?;
    state.setup = Some(encoded);
    state.funding_outpoint = Some(bitcoin::OutPoint {
        txid: m.funding_txid,
        vout: u32::from(m.funding_txout),
    });
    r.put_channel_state(&key, &state)?;
    Ok(SetupChannelReply::new().into())
}

/// Rule: a channel's parameters are fixed once it is in use.
pub(crate) const SETUP_FINAL: &str = "channel-setup-final";

/// Answers `ForgetChannel`: marks the channel forgotten, after which the policy refuses every
/// request for it. Forgetting an unknown channel is fine (it stays unusable).
pub(crate) fn forget_channel(r: &mut Req<'_>, m: ForgetChannel) -> Result<Message> {
    let key = ChannelKey {
        peer_id: m.id,
        dbid: m.dbid,
    };
    let mut state = r.channel_state(&key)?;
    state.forgotten = true;
    r.put_channel_state(&key, &state)?;
    Ok(ForgetChannelReply::new().into())
}

/// Answers `CheckOutpoint`: like Core Lightning's hsmd, this signer has no view of the chain,
/// so the outpoint is always reported buried.
pub(crate) fn check_outpoint(r: &mut Req<'_>, _m: CheckOutpoint) -> Result<Message> {
    let key = r.client.channel_key();
    let state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    Ok(CheckOutpointReply::new(true).into())
}

/// Answers `LockOutpoint`: the channel's funding (or splice) outpoint is now this one.
pub(crate) fn lock_outpoint(r: &mut Req<'_>, m: LockOutpoint) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    let txid = m.funding_txid.to_byte_array();
    if let Some(other) = r.txn()?.lock_outpoint(&txid, m.funding_txout, &key)? {
        if other != key {
            log::warn!(
                "outpoint {}:{} locked by channel {} is now also locked by channel {}",
                m.funding_txid,
                m.funding_txout,
                other.dbid,
                key.dbid
            );
        }
    }
    state.funding_outpoint = Some(bitcoin::OutPoint {
        txid: m.funding_txid,
        vout: u32::from(m.funding_txout),
    });
    state.funding_locked = true;
    r.put_channel_state(&key, &state)?;
    Ok(LockOutpointReply::new().into())
}

/// Answers `GetPerCommitmentPoint`: point `n`; below protocol version 6 and for `n >= 2` also
/// the secret of commitment `n - 2`, which revokes it (so the revocation rules apply).
pub(crate) fn get_per_commitment_point(
    r: &mut Req<'_>,
    m: GetPerCommitmentPoint,
) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    let secrets = r.channel_secrets(&key)?;
    let n = m.n;
    let point = secrets
        .per_commitment_point(n)
        .map_err(|_| SignerError::BadRequest(format!("bad per_commit_point {n}")))?;
    let mut old_secret = None;
    if r.session.version < 6 && n >= 2 {
        let old = n - 2;
        let secret = secrets
            .per_commitment_secret(old)
            .map_err(|_| SignerError::BadRequest(format!("Cannot derive secret {old}")))?;
        if old >= state.holder_revoked_below {
            check_superseded(r, &state, old)?;
            check_not_signed_for_broadcast(r, &state, old)?;
            state.holder_revoked_below = old + 1;
            r.put_channel_state(&key, &state)?;
        }
        old_secret = Some(Secret(secret));
    }
    Ok(GetPerCommitmentPointReply::new(point, old_secret).into())
}

/// Answers `CheckFutureSecret`: whether the secret is ours for commitment `n` (reveals
/// nothing).
pub(crate) fn check_future_secret(r: &mut Req<'_>, m: CheckFutureSecret) -> Result<Message> {
    let key = r.client.channel_key();
    let state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    let correct = r
        .channel_secrets(&key)?
        .is_per_commitment_secret(m.n, &m.commitment_secret.0)
        .map_err(|_| SignerError::BadRequest(format!("bad commit secret #{}", m.n)))?;
    Ok(CheckFutureSecretReply::new(correct).into())
}

/// Answers `ValidateCommitmentTx`: the peer signed our commitment `commit_num`; replies with
/// the point of the next one (and, as hsmd since protocol 6, no old secret).
pub(crate) fn validate_commitment_tx(r: &mut Req<'_>, m: ValidateCommitmentTx) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_set_up(r, &key, &state)?;
    let n = m.commit_num;
    // hsmd adds in u64 arithmetic, which wraps.
    let next = n.wrapping_add(1);
    let point = r
        .channel_secrets(&key)?
        .per_commitment_point(next)
        .map_err(|_| SignerError::BadRequest(format!("bad per_commit_point {next}")))?;
    r.policy.check(
        "commitment-number-monotonic",
        n <= MAX_COMMITMENT_NUMBER
            && state.holder_validated.is_none_or(|v| n >= v && n - v <= 1)
            && n >= state.holder_revoked_below,
        || {
            format!(
                "holder commitment {n} does not follow the latest validated ({:?}) or is revoked (below {})",
                state.holder_validated, state.holder_revoked_below
            )
        },
    )?;
    if let Some(setup) = policy_channel::stored_setup(&state)? {
        let secrets = r.channel_secrets(&key)?;
        policy_channel::check_peer_signature(r.policy, &setup, &secrets, n, &m.tx.tx, &m.sig)?;
    }
    let our_point = r.channel_secrets(&key)?.per_commitment_point(n).ok();
    let commitment = our_point.map(|point| Commitment {
        owner: Owner::Holder,
        number: n,
        point,
        tx: &m.tx,
        terms: Some((&m.htlcs, m.feerate)),
    });
    let balance = policy_channel::check_channel_commitment(r, &key, &state, commitment)?;
    if let (Some(setup), Some(point)) = (policy_channel::stored_setup(&state)?, our_point) {
        let secrets = r.channel_secrets(&key)?;
        let ch = policy_channel::Channel {
            setup: &setup,
            secrets: &secrets,
            state: &state,
        };
        let c = Commitment {
            owner: Owner::Holder,
            number: n,
            point,
            tx: &m.tx,
            terms: Some((&m.htlcs, m.feerate)),
        };
        policy_channel::check_peer_htlc_signatures(r.policy, &ch, &c, &m.htlc_sigs)?;
    }
    let signed = super::forwards::Signed {
        owner: Owner::Holder,
        number: n,
        unrevoked_from: state.holder_revoked_below,
        htlcs: &m.htlcs,
        gain_sat: balance.as_ref().map_or(0, |b| b.gain_sat),
    };
    super::forwards::check_htlcs(r, &key, signed)?;
    if n <= MAX_COMMITMENT_NUMBER {
        if let Some(b) = balance {
            policy_channel::record_balance(&mut state.holder_balances, n, b);
        }
        if state.holder_validated.is_none() {
            // The channel's history starts here: nothing older can be revealed or signed.
            state.holder_revoked_below = state.holder_revoked_below.max(n);
        }
        state.holder_validated = Some(state.holder_validated.map_or(n, |v| v.max(n)));
        r.put_channel_state(&key, &state)?;
    }
    Ok(ValidateCommitmentTxReply::new(None, point).into())
}

/// Answers `RevokeCommitmentTx`: reveals the secret of holder commitment `commit_num` (which
/// must be superseded, next in order, and never signed for broadcast) and the point of
/// `commit_num + 2`.
pub(crate) fn revoke_commitment_tx(r: &mut Req<'_>, m: RevokeCommitmentTx) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    let secrets = r.channel_secrets(&key)?;
    let n = m.commit_num;
    let next = n.wrapping_add(2);
    let point = secrets
        .per_commitment_point(next)
        .map_err(|_| SignerError::BadRequest(format!("bad per_commit_point {next}")))?;
    let secret = secrets
        .per_commitment_secret(n)
        .map_err(|_| SignerError::BadRequest(format!("Cannot derive secret {n}")))?;
    check_superseded(r, &state, n)?;
    // channeld asks again for a revocation it sent when it reestablishes a channel (BOLT 2
    // retransmission; after lightningd stopped between our revocation and persisting it, for
    // one older than the latest): a secret already revealed reveals nothing new, so any
    // repeat is answered; a new revocation must be the next one.
    let repeat = n < state.holder_revoked_below;
    if repeat && n.checked_add(1) != Some(state.holder_revoked_below) {
        log::info!(
            "dbid {}: holder commitment {n} revoked again (revoked below {})",
            key.dbid,
            state.holder_revoked_below
        );
    }
    r.policy.check(
        "revoke-in-order",
        n == state.holder_revoked_below || repeat,
        || {
            format!(
                "holder commitment {n} revoked out of order: the next to revoke is {}",
                state.holder_revoked_below
            )
        },
    )?;
    check_not_signed_for_broadcast(r, &state, n)?;
    state.holder_revoked_below = state.holder_revoked_below.max(n + 1);
    r.put_channel_state(&key, &state)?;
    super::forwards::revoked(r, &key, Owner::Holder, state.holder_revoked_below)?;
    Ok(RevokeCommitmentTxReply::new(Secret(secret), point).into())
}

/// `revoke-superseded-only`: holder commitment `n` may be revoked once `n + 1` was validated.
fn check_superseded(r: &Req<'_>, state: &ChannelState, n: u64) -> Result<()> {
    r.policy.check(
        "revoke-superseded-only",
        state.holder_validated.is_some_and(|v| v > n),
        || {
            format!(
                "holder commitment {n} is not superseded: the latest validated is {:?}",
                state.holder_validated
            )
        },
    )
}

/// `commitment-holder-not-revoked`: a holder commitment signed for broadcast (or a later one)
/// is never revoked.
fn check_not_signed_for_broadcast(r: &Req<'_>, state: &ChannelState, n: u64) -> Result<()> {
    r.policy.check(
        "commitment-holder-not-revoked",
        state.holder_signed_from.is_none_or(|s| n < s),
        || {
            format!(
            "holder commitment {n} must stay unrevoked: commitment {:?} was signed for broadcast",
            state.holder_signed_from
        )
        },
    )
}

/// Answers `ValidateRevocation`: the peer revoked its commitment `revoke_num`; the secret must
/// come next in order and be the one of the point it gave for that commitment.
pub(crate) fn validate_revocation(r: &mut Req<'_>, m: ValidateRevocation) -> Result<Message> {
    let key = r.client.channel_key();
    let mut state = r.channel_state(&key)?;
    check_not_forgotten(r, &key, &state)?;
    let n = m.revoke_num;
    let secret = m.per_commitment_secret.0;
    r.policy.check(
        "revoke-in-order",
        n == state.counterparty_revoked_below,
        || {
            format!(
                "counterparty revoked commitment {n} out of order: the next to revoke is {}",
                state.counterparty_revoked_below
            )
        },
    )?;
    let given = state.counterparty_points.get(&n);
    let derived = SecretKey::from_slice(&secret)
        .ok()
        .map(|k| k.public_key(SECP256K1));
    r.policy.check(
        "revocation-secret-matches",
        matches!((given, derived), (Some(p), Some(d)) if *p == d),
        || match given {
            None => format!("no per-commitment point is known for counterparty commitment {n}"),
            Some(p) => format!("secret for commitment {n} does not match its point {p}"),
        },
    )?;
    let mut secrets = state.counterparty_secrets.clone();
    let consistent = bolt3::insert_counterparty_secret(&mut secrets, n, &secret);
    r.policy
        .check("revocation-secret-matches", consistent, || {
            format!("secret for commitment {n} is not from the same shachain as the earlier ones")
        })?;
    state.counterparty_secrets = secrets;
    state.counterparty_revoked_below = state.counterparty_revoked_below.max(n.saturating_add(1));
    state.counterparty_points.retain(|&c, _| c > n);
    r.put_channel_state(&key, &state)?;
    super::forwards::revoked(
        r,
        &key,
        Owner::Counterparty,
        state.counterparty_revoked_below,
    )?;
    Ok(ValidateRevocationReply::new().into())
}

#[cfg(test)]
mod tests;
