//! The channel and commitment rules: what kind of channel the signer takes part in
//! (`setup_channel`), and what a commitment transaction may contain before we sign it
//! (`sign_remote_commitment_tx`, `sign_commitment_tx`) or accept the peer's signature on it
//! (`validate_commitment_tx`).
//!
//! | rule | refuses | limits |
//! |---|---|---|
//! | `channel-safe-type` | a channel type without `option_static_remotekey` (bit 12) or `option_anchors_zero_fee_htlc_tx` (bit 22); any bit but 12, 22, `option_scid_alias` (46), and `option_zeroconf` (50) when we fund | |
//! | `channel-to-self-delay` | either side's `to_self_delay` out of range | `min_to_self_delay`, `max_to_self_delay` |
//! | `channel-push-limit` | a channel we fund that pushes more than the limit to the peer | `max_push_msat` |
//! | `channel-max-value` | a channel above the maximum, or pushing more than its value | `max_channel_value_sat` |
//! | `channel-dust-limit` | a commitment output (anchors aside) below the minimum dust limit | `min_dust_limit_sat` |
//! | `commitment-feerate` | a commitment whose fee rate (what it pays, over its BOLT 3 weight) is out of range | `min_feerate_per_kw`, `max_feerate_per_kw` |
//! | `commitment-htlc-limits` | too many HTLCs, too large an HTLC, an output that is no balance, anchor, or listed HTLC | `max_htlcs`, `max_htlc_value_msat` |
//! | `commitment-balance` | a commitment not spending the funding outpoint, or taking more than the channel, or leaving too much out of its outputs, or giving us less than the history allows | `max_commitment_dust_sat` |
//! | `commitment-signed-by-peer` | a holder commitment without the peer's valid signature under its funding key, or without its valid signature of each HTLC output's BOLT 3 HTLC transaction (in output order) | |
//!
//! Channel types: `option_anchor_outputs` (bit 20, anchors whose HTLC transactions carry their
//! own fee) is refused: its `SIGHASH_SINGLE|ANYONECANPAY` HTLC signatures let the peer take
//! the HTLC transactions' fees, which is why zero-fee HTLC anchors replaced it (the anchors
//! Core Lightning opens). `option_zeroconf` is refused when the peer funds: payments
//! over a channel whose funding can still be double-spent could be lost.
//!
//! Dust limits: hsmd's protocol carries neither side's `dust_limit_satoshis`. BOLT 3 trims every
//! output below the commitment owner's dust limit, so an output below `min_dust_limit_sat`
//! shows a dust limit below it (such a commitment would not even relay). A dust limit that is
//! too high leaves no trace (the trimmed output is simply absent), so `max_dust_limit_sat` is
//! not checked; what it would cost, value trimmed into fees, is bounded by `commitment-balance`.
//!
//! # What `commitment-balance` checks, exactly
//!
//! Outputs are recognised by their scripts, built from the channel's keys as BOLT 3 builds
//! them: our balance (on a holder commitment our `to_local`, P2WSH of the `to_local` script
//! with our delayed key and the delay the peer asked for — either `to_self_delay` of
//! `setup_channel` is accepted, both being within the operator's range; on the peer's
//! commitment our `to_remote`, P2WPKH of our payment basepoint, or with anchors its P2WSH
//! `OP_CHECKSIGVERIFY 1 OP_CSV` script), the peer's balance, the two anchors, and one HTLC
//! output per listed HTLC. With `value` the channel value of `setup_channel`:
//!
//! 1. the only input spends the channel's funding outpoint (from `setup_channel`, moved by
//!    `lock_outpoint`), the amount the signature commits to is `value`, and the outputs
//!    together take at most `value`;
//! 2. `missing = value - outputs (anchors aside) - anchors (660 sat with anchors)` is what
//!    the transaction pays miners; its fee rate over BOLT 3's weight (724, or 1124 with
//!    anchors, plus 172 per HTLC output) is what `commitment-feerate` checks. It splits into
//!    `fee`, the BOLT 3 fee at the request's fee rate but never more than `missing`, and
//!    `dust = missing - fee`, at most `max_commitment_dust_sat`: the value of trimmed HTLCs
//!    and balances, which hsmd's requests do not list;
//! 3. our balance `ours` (0 when trimmed) is at least
//!    `prev.ours - new_offered - fee_increase - max(0, dust - prev.dust)`, where
//!    - `prev` is the previous commitment of the same side (holder or counterparty; the
//!      newest two of each are kept, so a retransmitted commitment is measured against the
//!      one before it), or for the first one the opening: `value - push - 660 (anchors)` if
//!      we fund, else the push, with no fee, dust or HTLCs;
//!    - `new_offered` is the sum of the HTLCs we offer that `prev` did not have (rounded up
//!      to satoshis);
//!    - `fee_increase` is `fee - prev.fee` when we fund the channel (negative when the fee
//!      drops: then our balance must grow by as much), 0 otherwise.
//!
//!    Every legitimate BOLT 2 update passes: a balance moves down only when we offer an HTLC
//!    or pay more fee, and an HTLC offered or trimmed lands in `new_offered` or `dust`.
//!
//! `sign_commitment_tx` (our own commitment, for broadcast) carries no fee rate and no HTLCs:
//! it checks 1, and that our balance is at least what the validated commitment of that number
//! gave us (a commitment never validated has no known balance and is refused).
//!
//! What it cannot see: whether an HTLC that left a commitment was fulfilled or failed (hsmd's
//! protocol carries no preimages), so an HTLC we offered may vanish to the peer; and trimmed
//! HTLCs, so value can move through `dust` up to `max_commitment_dust_sat` per commitment.
//! Paying HTLCs is what the payment rules (invoice preapproval, velocity) limit. A splice
//! changes the funding outpoint and value in ways hsmd's protocol does not tell the signer:
//! commitments of an unconfirmed splice, and after a splice that changed the channel value,
//! are refused, so a node that splices runs `commitment-balance` in warn mode.

use crate::bolt3::{anchor_script, htlc_script, revocation_pubkey, to_local_script};
use crate::context::ChannelKey;
use crate::error::Result;
use crate::handler::Req;
use crate::keys::channel::derive_simple_pubkey;
use crate::keys::ChannelSecrets;
use crate::policy::Policy;
use crate::psbt_sign::input_amount;
use crate::store::{ChannelState, CommitmentBalance};
use bitcoin::hashes::{ripemd160, Hash};
use bitcoin::opcodes::all::{OP_CHECKSIGVERIFY, OP_CSV};
use bitcoin::script::Builder;
use bitcoin::{CompressedPublicKey, ScriptBuf, Transaction};
use protocol::msgs::SetupChannel;
use protocol::types::{BitcoinTx, ChannelType, HsmHtlc, Side};
use secp256k1::PublicKey;
use std::collections::{BTreeMap, HashMap};

/// `channel-safe-type`.
pub(crate) const SAFE_TYPE: &str = "channel-safe-type";
/// `channel-to-self-delay`.
pub(crate) const TO_SELF_DELAY: &str = "channel-to-self-delay";
/// `channel-max-value`.
pub(crate) const MAX_VALUE: &str = "channel-max-value";
/// Rule: the push of a channel we fund.
pub(crate) const PUSH_LIMIT: &str = "channel-push-limit";
/// `channel-dust-limit`.
pub(crate) const DUST_LIMIT: &str = "channel-dust-limit";
/// `commitment-feerate`.
pub(crate) const FEERATE: &str = "commitment-feerate";
/// `commitment-htlc-limits`.
pub(crate) const HTLC_LIMITS: &str = "commitment-htlc-limits";
/// `commitment-balance`.
pub(crate) const BALANCE: &str = "commitment-balance";
/// `commitment-signed-by-peer`.
pub(crate) const SIGNED_BY_PEER: &str = "commitment-signed-by-peer";

/// The value of each anchor output (BOLT 3).
const ANCHOR_SAT: u64 = 330;
/// Commitment weight without HTLC outputs, and per HTLC output (BOLT 3 "Fee Calculation").
const BASE_WEIGHT: u64 = 724;
const BASE_WEIGHT_ANCHORS: u64 = 1124;
const HTLC_OUTPUT_WEIGHT: u64 = 172;

/// Checks the parameters `setup_channel` fixes: `channel-safe-type`, `channel-to-self-delay`,
/// `channel-max-value`.
pub(crate) fn check_setup(policy: &Policy, m: &SetupChannel) -> Result<()> {
    let t = &m.channel_type;
    let unsafe_bits: Vec<usize> = t
        .bits()
        .into_iter()
        .filter(|&b| !safe_bit(b, m.is_outbound))
        .collect();
    let base = t.has(ChannelType::STATIC_REMOTEKEY) || t.has(ChannelType::ANCHORS_ZERO_FEE_HTLC);
    policy.check(SAFE_TYPE, base && unsafe_bits.is_empty(), || {
        format!(
            "channel type {:?} (bitfield {}): {}",
            t.bits(),
            hex::encode(t.as_bytes()),
            if base {
                format!("feature bits {unsafe_bits:?} are unknown or unsafe")
            } else {
                "neither option_static_remotekey (12) nor zero-fee HTLC anchors (22)".into()
            }
        )
    })?;

    let l = &policy.limits;
    let range = l.min_to_self_delay..=l.max_to_self_delay;
    policy.check(
        TO_SELF_DELAY,
        range.contains(&m.local_to_self_delay) && range.contains(&m.remote_to_self_delay),
        || {
            format!(
                "to_self_delay {} (ours on the peer) and {} (the peer's on us) must be within {}..={}",
                m.local_to_self_delay,
                m.remote_to_self_delay,
                l.min_to_self_delay,
                l.max_to_self_delay
            )
        },
    )?;

    let value = m.channel_value.to_sat();
    let push = m.push_value.to_msat();
    policy.check(
        MAX_VALUE,
        value <= l.max_channel_value_sat && u128::from(push) <= u128::from(value) * 1000,
        || {
            format!(
                "channel of {value} sat pushing {push} msat: at most {} sat, pushing at most its value",
                l.max_channel_value_sat
            )
        },
    )?;
    policy.check(
        PUSH_LIMIT,
        !m.is_outbound || push <= l.max_push_msat,
        || {
            format!(
                "a channel we fund pushes {push} msat to the peer: at most {} msat (max_push_msat)",
                l.max_push_msat
            )
        },
    )
}

/// Whether a channel feature bit is one the signer knows to be safe.
fn safe_bit(bit: usize, we_fund: bool) -> bool {
    match bit {
        ChannelType::STATIC_REMOTEKEY | ChannelType::ANCHORS_ZERO_FEE_HTLC => true,
        ChannelType::SCID_ALIAS => true,
        ChannelType::ZEROCONF => we_fund,
        _ => false,
    }
}

/// Whose commitment transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Ours (we may broadcast it; the peer signed it).
    Holder,
    /// The peer's (we sign it).
    Counterparty,
}

/// A commitment transaction to check, as a request describes it.
pub(crate) struct Commitment<'a> {
    /// Whose it is.
    pub owner: Owner,
    /// Its commitment number.
    pub number: u64,
    /// The owner's per-commitment point for it.
    pub point: PublicKey,
    /// The transaction.
    pub tx: &'a BitcoinTx,
    /// The HTLCs and fee rate the request gives; `None` for `sign_commitment_tx`, which
    /// gives neither.
    pub terms: Option<(&'a [HsmHtlc], u32)>,
}

/// What [`check_commitment`] needs of the channel.
pub(crate) struct Channel<'a> {
    /// The stored `setup_channel`.
    pub setup: &'a SetupChannel,
    /// Our channel secrets.
    pub secrets: &'a ChannelSecrets,
    /// Its state before this request.
    pub state: &'a ChannelState,
}

/// Checks a commitment against every commitment content rule; returns what it gives us, to
/// be recorded for the next one (see the module docs).
pub(crate) fn check_commitment(
    policy: &Policy,
    ch: &Channel<'_>,
    c: &Commitment<'_>,
) -> Result<CommitmentBalance> {
    let l = &policy.limits;
    let n = c.number;
    if let Some((htlcs, _)) = c.terms {
        let largest = htlcs.iter().map(|h| h.amount.to_msat()).max().unwrap_or(0);
        policy.check(
            HTLC_LIMITS,
            htlcs.len() <= l.max_htlcs && largest <= l.max_htlc_value_msat,
            || {
                format!(
                    "commitment {n} has {} HTLCs, the largest {largest} msat: at most {} of at most {} msat",
                    htlcs.len(),
                    l.max_htlcs,
                    l.max_htlc_value_msat
                )
            },
        )?;
    }

    let layout = Layout::of(ch, c);
    let tx = &c.tx.tx;
    if c.terms.is_some() {
        policy.check(HTLC_LIMITS, layout.unknown.is_empty(), || {
            format!(
                "commitment {n}: {} match no listed HTLC, balance or anchor",
                describe(tx, &layout.unknown)
            )
        })?;
    }
    let small: Vec<usize> = (0..tx.output.len())
        .filter(|i| {
            !layout.anchors.contains(i) && tx.output[*i].value.to_sat() < l.min_dust_limit_sat
        })
        .collect();
    policy.check(DUST_LIMIT, small.is_empty(), || {
        format!(
            "commitment {n}: {} below the smallest dust limit {} sat",
            describe(tx, &small),
            l.min_dust_limit_sat
        )
    })?;

    check_funding(policy, ch, c)?;
    let value = ch.setup.channel_value.to_sat();
    let offered: Vec<(u64, String, u32)> = match c.terms {
        Some((htlcs, _)) => htlcs
            .iter()
            .filter(|h| h.side == Side::Local)
            .map(|h| {
                (
                    h.amount.to_msat(),
                    hex::encode(h.payment_hash.to_byte_array()),
                    h.cltv_expiry,
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let Some((_, feerate)) = c.terms else {
        // Our own commitment for broadcast: it must give us what its validation did.
        let validated = ch.state.holder_balances.get(&n);
        policy.check(
            BALANCE,
            validated.is_some_and(|v| layout.ours >= v.ours_sat),
            || match validated {
                None => {
                    format!("holder commitment {n} was never validated: its balance is unknown")
                }
                Some(v) => format!(
                    "holder commitment {n} gives us {} sat, its validated version {} sat",
                    layout.ours, v.ours_sat
                ),
            },
        )?;
        return Ok(CommitmentBalance {
            ours_sat: layout.ours,
            ..Default::default()
        });
    };

    let anchors_sat = if layout.anchors_channel {
        2 * ANCHOR_SAT
    } else {
        0
    };
    // What the transaction leaves to miners: its BOLT 3 fee and whatever was trimmed.
    let missing = i128::from(value) - layout.non_anchor_total as i128 - i128::from(anchors_sat);
    check_feerate(policy, n, missing, layout.weight())?;
    // The request's fee rate only splits `missing` into fee and trimmed value, and can claim
    // no more fee than the transaction pays (openingd sends 0 for its first commitment).
    let claimed = u64::from(feerate).saturating_mul(layout.weight()) / 1000;
    let fee = u64::try_from(missing.clamp(0, i128::from(claimed))).unwrap_or(0);
    let dust = missing - i128::from(fee);
    policy.check(BALANCE, dust <= i128::from(l.max_commitment_dust_sat), || {
        format!(
            "commitment {n} leaves {dust} sat of the channel's {value} out of its outputs beyond its fee of {fee} sat: at most {}",
            l.max_commitment_dust_sat
        )
    })?;

    let history = match c.owner {
        Owner::Holder => &ch.state.holder_balances,
        Owner::Counterparty => &ch.state.counterparty_balances,
    };
    let opening;
    let prev = match history.range(..n).next_back() {
        Some((_, p)) => p,
        None => {
            opening = opening_balance(ch.setup, layout.anchors_channel);
            &opening
        }
    };
    let new_offered_msat = new_offered(&prev.offered, &offered);
    let we_fund = ch.setup.is_outbound;
    let fee_increase = if we_fund {
        i128::from(fee) - i128::from(prev.fee_sat)
    } else {
        0
    };
    let dust_increase = (dust - i128::from(prev.dust_sat)).max(0);
    let floor = i128::from(prev.ours_sat)
        - new_offered_msat.div_ceil(1000) as i128
        - fee_increase
        - dust_increase;
    policy.check(BALANCE, i128::from(layout.ours) >= floor, || {
        format!(
            "{:?} commitment {n} gives us {} sat; the previous one gave {} sat, and new HTLCs we offer ({new_offered_msat} msat), our fee increase ({fee_increase} sat) and new dust ({dust_increase} sat) allow no less than {floor} sat",
            c.owner, layout.ours, prev.ours_sat
        )
    })?;
    Ok(CommitmentBalance {
        ours_sat: layout.ours,
        fee_sat: fee,
        dust_sat: i64::try_from(dust).unwrap_or(if dust < 0 { i64::MIN } else { i64::MAX }),
        offered,
        htlcs: c.terms.map_or(0, |(h, _)| h.len()),
        gain_sat: i64::try_from(i128::from(layout.ours) - floor).unwrap_or(i64::MAX),
    })
}

/// What a mutual close owes us, from the newest commitment of each side that we validated or
/// signed: our balance on it with what we paid there as funder (its fee and the anchors, which
/// a closing transaction does not have) given back, the smaller of the two. `None` when a
/// commitment still carries HTLCs (a channel closes only once they are all resolved).
pub(crate) fn close_entitlement(setup: &SetupChannel, state: &ChannelState) -> Option<u64> {
    let t = &setup.channel_type;
    let anchors = t.has(ChannelType::ANCHORS_ZERO_FEE_HTLC) || t.has(ChannelType::ANCHOR_OUTPUTS);
    let opening = opening_balance(setup, anchors);
    let newest = [
        state.holder_balances.last_key_value().map(|(_, b)| b),
        state.counterparty_balances.last_key_value().map(|(_, b)| b),
    ];
    let mut entitled = u64::MAX;
    for b in newest.into_iter().map(|b| b.unwrap_or(&opening)) {
        if b.htlcs > 0 || !b.offered.is_empty() {
            return None;
        }
        let paid_as_funder = if setup.is_outbound {
            b.fee_sat + if anchors { 2 * ANCHOR_SAT } else { 0 }
        } else {
            0
        };
        entitled = entitled.min(b.ours_sat.saturating_add(paid_as_funder));
    }
    Some(entitled)
}

/// `commitment-feerate`: the fee rate the transaction pays (what it leaves out of its outputs,
/// over BOLT 3's weight for its outputs) is within the limits. Fee rates are never taken from a
/// request: they are what the transaction pays. BOLT 3 rounds the fee down, so a fee rate `f`
/// shows as a fee in `[f*w/1000 - 1, f*w/1000]`, which the bounds allow for.
fn check_feerate(policy: &Policy, n: u64, missing: i128, weight: u64) -> Result<()> {
    let l = &policy.limits;
    let w = i128::from(weight.max(1));
    // The highest and lowest fee rates that could have given this fee.
    let highest = (missing + 1) * 1000 / w;
    let lowest = (missing * 1000).div_euclid(w) + i128::from((missing * 1000).rem_euclid(w) != 0);
    policy.check(
        FEERATE,
        highest >= i128::from(l.min_feerate_per_kw) && lowest <= i128::from(l.max_feerate_per_kw),
        || {
            format!(
                "commitment {n} pays {missing} sat in fees for weight {weight} (about {lowest} sat/kw): the fee rate must be within {}..={}",
                l.min_feerate_per_kw, l.max_feerate_per_kw
            )
        },
    )
}

/// Runs [`check_commitment`] on a commitment of the channel `key`, if it was set up (without
/// its parameters there is nothing to compare with; `channel-known` refuses that) and the
/// owner's per-commitment point is known. Returns what to record.
pub(crate) fn check_channel_commitment(
    r: &Req<'_>,
    key: &ChannelKey,
    state: &ChannelState,
    c: Option<Commitment<'_>>,
) -> Result<Option<CommitmentBalance>> {
    let (Some(setup), Some(c)) = (stored_setup(state)?, c) else {
        return Ok(None);
    };
    let secrets = r.channel_secrets(key)?;
    let ch = Channel {
        setup: &setup,
        secrets: &secrets,
        state,
    };
    check_commitment(r.policy, &ch, &c).map(Some)
}

/// `commitment-signed-by-peer`: the peer's signature on our commitment `n` is valid under its
/// funding key for the 2-of-2 that `setup_channel` fixed and the channel value (not what the
/// request's PSBT claims), `SIGHASH_ALL`. Without it the commitment cannot be broadcast, and
/// revoking the previous one on its strength would leave us no valid state to close with.
pub(crate) fn check_peer_signature(
    policy: &Policy,
    setup: &SetupChannel,
    secrets: &ChannelSecrets,
    n: u64,
    tx: &Transaction,
    sig: &protocol::types::BitcoinSignature,
) -> Result<()> {
    let script = crate::bolt3::funding_redeem_script(
        &secrets.basepoints().funding_pubkey,
        &setup.remote_funding_pubkey,
    );
    let valid = sig.sighash == protocol::types::SighashFlag::All
        && crate::sign::segwit_v0_sighash(
            tx,
            0,
            &script,
            setup.channel_value,
            bitcoin::EcdsaSighashType::All,
        )
        .is_ok_and(|msg| {
            let mut normalized = sig.sig;
            normalized.normalize_s();
            secp256k1::SECP256K1
                .verify_ecdsa(&msg, &normalized, &setup.remote_funding_pubkey)
                .is_ok()
        });
    policy.check(SIGNED_BY_PEER, valid, || {
        format!(
            "holder commitment {n} ({}) does not carry the peer's valid signature under its funding key {}",
            tx.compute_txid(),
            setup.remote_funding_pubkey
        )
    })
}

/// `commitment-signed-by-peer`, for the HTLCs: one peer signature per HTLC output of our
/// commitment `c`, in output order, each valid under the peer's HTLC key for the BOLT 3
/// HTLC-timeout (an HTLC we offered) or HTLC-success transaction spending that output. Without
/// them the HTLCs of the only commitment we may broadcast could never be claimed by us.
pub(crate) fn check_peer_htlc_signatures(
    policy: &Policy,
    ch: &Channel<'_>,
    c: &Commitment<'_>,
    sigs: &[protocol::types::BitcoinSignature],
) -> Result<()> {
    let Some((htlcs, feerate)) = c.terms else {
        return Ok(());
    };
    let t = &ch.setup.channel_type;
    let anchors = t.has(ChannelType::ANCHORS_ZERO_FEE_HTLC) || t.has(ChannelType::ANCHOR_OUTPUTS);
    let n = c.number;
    let checked = (|| -> std::result::Result<(), String> {
        let scripts = Scripts::of(ch, Owner::Holder, &c.point, anchors)
            .ok_or_else(|| format!("the keys of holder commitment {n} cannot be derived"))?;
        let delayed = derive_simple_pubkey(&ch.secrets.basepoints().delayed_payment, &c.point)
            .map_err(|_| format!("the delayed key of holder commitment {n} cannot be derived"))?;
        let setup = ch.setup;
        // The HTLC transactions pay the delayed output our balance has (see `Scripts::of`).
        let to_local: Vec<ScriptBuf> = [setup.remote_to_self_delay, setup.local_to_self_delay]
            .iter()
            .map(|&d| p2wsh(to_local_script(&scripts.revocation, d, &delayed)))
            .collect();
        let mut listed: HashMap<(ScriptBuf, u64), Vec<&HsmHtlc>> = HashMap::new();
        for h in htlcs {
            let key = (scripts.htlc(h, Owner::Holder), h.amount.to_msat() / 1000);
            listed.entry(key).or_default().push(h);
        }
        let tx = &c.tx.tx;
        let txid = tx.compute_txid();
        let mut k = 0usize;
        for (i, out) in tx.output.iter().enumerate() {
            let spk = &out.script_pubkey;
            if scripts.anchors.contains(spk)
                || scripts.ours.contains(spk)
                || scripts.theirs.contains(spk)
            {
                continue;
            }
            let sat = out.value.to_sat();
            // An output that is no listed HTLC is `commitment-htlc-limits`' to refuse.
            let Some(h) = listed.get_mut(&(spk.clone(), sat)).and_then(Vec::pop) else {
                continue;
            };
            let sig = sigs.get(k).ok_or_else(|| {
                format!(
                    "holder commitment {n} has more HTLC outputs than the {} HTLC signatures given",
                    sigs.len()
                )
            })?;
            k += 1;
            let wscript = scripts.htlc_wscript(h, Owner::Holder);
            let outpoint = bitcoin::OutPoint {
                txid,
                vout: i as u32,
            };
            let valid = to_local.iter().any(|spk| {
                let htlc_tx = crate::bolt3::htlc_tx(
                    outpoint,
                    sat,
                    h.side == Side::Local,
                    h.cltv_expiry,
                    spk.clone(),
                    feerate,
                    anchors,
                );
                crate::bolt3::htlc_signature_valid(
                    &htlc_tx,
                    &wscript,
                    sat,
                    sig,
                    &scripts.other_htlc,
                    anchors,
                )
            });
            if !valid {
                return Err(format!(
                    "HTLC signature {} of holder commitment {n} (output {i}) is not the peer's valid signature of its HTLC transaction",
                    k - 1
                ));
            }
        }
        if k != sigs.len() {
            return Err(format!(
                "holder commitment {n} has {k} HTLC outputs but {} HTLC signatures were given",
                sigs.len()
            ));
        }
        Ok(())
    })();
    let why = checked.err();
    policy.check(SIGNED_BY_PEER, why.is_none(), || why.unwrap_or_default())
}

/// Remembers what commitment `n` gave us, keeping the newest two of that side.
pub(crate) fn record_balance(
    history: &mut BTreeMap<u64, CommitmentBalance>,
    n: u64,
    b: CommitmentBalance,
) {
    history.insert(n, b);
    while history.len() > 2 {
        history.pop_first();
    }
}

/// `commitment-balance` part 1: the funding outpoint, the amount spent, and the outputs'
/// total.
fn check_funding(policy: &Policy, ch: &Channel<'_>, c: &Commitment<'_>) -> Result<()> {
    let tx = &c.tx.tx;
    let n = c.number;
    let spent = tx.input.first().map(|i| i.previous_output);
    let funding = ch.state.funding_outpoint;
    policy.check(
        BALANCE,
        tx.input.len() == 1 && spent.is_some() && spent == funding,
        || {
            format!(
                "commitment {n} spends {:?}, not the channel's funding outpoint {}",
                tx.input
                    .iter()
                    .map(|i| i.previous_output.to_string())
                    .collect::<Vec<_>>(),
                funding.map_or("(none)".into(), |o| o.to_string())
            )
        },
    )?;
    let value = ch.setup.channel_value.to_sat();
    let amount = input_amount(&c.tx.psbt, 0).ok().map(|a| a.to_sat());
    let outputs: u128 = tx.output.iter().map(|o| u128::from(o.value.to_sat())).sum();
    policy.check(
        BALANCE,
        amount == Some(value) && outputs <= u128::from(value),
        || {
            format!(
                "commitment {n} spends {amount:?} sat and pays {outputs} sat; the channel holds {value} sat"
            )
        },
    )
}

/// What the opening gave us, as a commitment before the first: the funder's balance pays the
/// anchors (and later the fee), the other side starts with the push.
fn opening_balance(setup: &SetupChannel, anchors: bool) -> CommitmentBalance {
    let value_msat = u128::from(setup.channel_value.to_sat()) * 1000;
    let push = u128::from(setup.push_value.to_msat()).min(value_msat);
    let ours = if setup.is_outbound {
        ((value_msat - push) / 1000).saturating_sub(if anchors {
            2 * u128::from(ANCHOR_SAT)
        } else {
            0
        })
    } else {
        push / 1000
    };
    CommitmentBalance {
        ours_sat: u64::try_from(ours).unwrap_or(u64::MAX),
        ..Default::default()
    }
}

/// The total (msat) of the HTLCs in `now` that `prev` did not have (as multisets).
fn new_offered(prev: &[(u64, String, u32)], now: &[(u64, String, u32)]) -> u128 {
    let mut left: HashMap<&(u64, String, u32), usize> = HashMap::new();
    for h in prev {
        *left.entry(h).or_default() += 1;
    }
    let mut total = 0u128;
    for h in now {
        match left.get_mut(h) {
            Some(k) if *k > 0 => *k -= 1,
            _ => total += u128::from(h.0),
        }
    }
    total
}

fn describe(tx: &Transaction, indexes: &[usize]) -> String {
    let parts: Vec<String> = indexes
        .iter()
        .map(|&i| format!("output {i} ({} sat)", tx.output[i].value.to_sat()))
        .collect();
    parts.join(", ")
}

/// The outputs of a commitment, recognised by script.
struct Layout {
    /// Our balance, satoshis.
    ours: u64,
    /// Indexes of the anchor outputs.
    anchors: Vec<usize>,
    /// Outputs that are HTLCs (listed or not): neither balance nor anchor.
    htlc_outputs: usize,
    /// Outputs that are no balance, no anchor, and no listed HTLC (with its amount).
    unknown: Vec<usize>,
    /// Sum of every output but the anchors, satoshis.
    non_anchor_total: u128,
    /// Whether the channel has anchors.
    anchors_channel: bool,
}

impl Layout {
    fn weight(&self) -> u64 {
        let base = if self.anchors_channel {
            BASE_WEIGHT_ANCHORS
        } else {
            BASE_WEIGHT
        };
        base + HTLC_OUTPUT_WEIGHT * self.htlc_outputs as u64
    }

    fn of(ch: &Channel<'_>, c: &Commitment<'_>) -> Layout {
        let t = &ch.setup.channel_type;
        let anchors_channel =
            t.has(ChannelType::ANCHORS_ZERO_FEE_HTLC) || t.has(ChannelType::ANCHOR_OUTPUTS);
        let scripts = Scripts::of(ch, c.owner, &c.point, anchors_channel);
        let tx = &c.tx.tx;
        let mut layout = Layout {
            ours: 0,
            anchors: Vec::new(),
            htlc_outputs: 0,
            unknown: Vec::new(),
            non_anchor_total: 0,
            anchors_channel,
        };
        // Each listed HTLC may stand for one output of its script and amount.
        let mut listed: HashMap<(ScriptBuf, u64), usize> = HashMap::new();
        if let (Some(s), Some((htlcs, _))) = (&scripts, c.terms) {
            for h in htlcs {
                let key = (s.htlc(h, c.owner), h.amount.to_msat() / 1000);
                *listed.entry(key).or_default() += 1;
            }
        }
        for (i, out) in tx.output.iter().enumerate() {
            let spk = &out.script_pubkey;
            let sat = out.value.to_sat();
            if scripts.as_ref().is_some_and(|s| s.anchors.contains(spk)) {
                layout.anchors.push(i);
                continue;
            }
            layout.non_anchor_total += u128::from(sat);
            match &scripts {
                Some(s) if s.ours.contains(spk) => layout.ours = layout.ours.saturating_add(sat),
                Some(s) if s.theirs.contains(spk) => {}
                _ => {
                    layout.htlc_outputs += 1;
                    match listed.get_mut(&(spk.clone(), sat)) {
                        Some(k) if *k > 0 => *k -= 1,
                        _ => layout.unknown.push(i),
                    }
                }
            }
        }
        layout
    }
}

/// The output scripts (script pubkeys) of one commitment, from the channel's keys.
struct Scripts {
    /// Our balance output (one script per possible delay).
    ours: Vec<ScriptBuf>,
    /// The peer's balance output.
    theirs: Vec<ScriptBuf>,
    anchors: [ScriptBuf; 2],
    revocation: PublicKey,
    /// The HTLC keys of the commitment's owner and of the other side.
    owner_htlc: PublicKey,
    other_htlc: PublicKey,
    anchors_channel: bool,
}

impl Scripts {
    /// `None` if a key cannot be derived (a tweak out of range: never for honest points).
    fn of(ch: &Channel<'_>, owner: Owner, p: &PublicKey, anchors_channel: bool) -> Option<Scripts> {
        let setup = ch.setup;
        let ours = ch.secrets.basepoints();
        let theirs = &setup.remote_basepoints;
        let static_key = setup.channel_type.has(ChannelType::STATIC_REMOTEKEY) || anchors_channel;
        let to_remote = |payment: &PublicKey| -> Option<ScriptBuf> {
            let key = if static_key {
                *payment
            } else {
                derive_simple_pubkey(payment, p).ok()?
            };
            Some(if anchors_channel {
                p2wsh(
                    Builder::new()
                        .push_slice(key.serialize())
                        .push_opcode(OP_CHECKSIGVERIFY)
                        .push_int(1)
                        .push_opcode(OP_CSV)
                        .into_script(),
                )
            } else {
                ScriptBuf::new_p2wpkh(&CompressedPublicKey(key).wpubkey_hash())
            })
        };
        let (revocation_base, owner_keys, other) = match owner {
            Owner::Holder => (&theirs.revocation, Keys::ours(&ours), Keys::theirs(theirs)),
            Owner::Counterparty => (&ours.revocation, Keys::theirs(theirs), Keys::ours(&ours)),
        };
        let revocation = revocation_pubkey(revocation_base, p)?;
        let delayed = derive_simple_pubkey(&owner_keys.delayed, p).ok()?;
        // The owner's to_local waits the delay the other side asked for: Core Lightning puts
        // `remote_to_self_delay` on ours and `local_to_self_delay` on theirs. Either is
        // accepted (both are within the `channel-to-self-delay` range), as builders that read
        // the names the other way round exist (the golden corpus's does).
        let to_local: Vec<ScriptBuf> = [setup.remote_to_self_delay, setup.local_to_self_delay]
            .iter()
            .map(|&delay| p2wsh(to_local_script(&revocation, delay, &delayed)))
            .collect();
        let other_balance = vec![to_remote(&other.payment)?];
        let (ours_spk, theirs_spk) = match owner {
            Owner::Holder => (to_local, other_balance),
            Owner::Counterparty => (other_balance, to_local),
        };
        Some(Scripts {
            ours: ours_spk,
            theirs: theirs_spk,
            anchors: [
                p2wsh(anchor_script(&ours.funding_pubkey)),
                p2wsh(anchor_script(&setup.remote_funding_pubkey)),
            ],
            revocation,
            owner_htlc: derive_simple_pubkey(&owner_keys.htlc, p).ok()?,
            other_htlc: derive_simple_pubkey(&other.htlc, p).ok()?,
            anchors_channel,
        })
    }

    /// The script pubkey of HTLC `h` on a commitment of `owner`.
    fn htlc(&self, h: &HsmHtlc, owner: Owner) -> ScriptBuf {
        p2wsh(self.htlc_wscript(h, owner))
    }

    /// The witness script of HTLC `h` on a commitment of `owner`.
    fn htlc_wscript(&self, h: &HsmHtlc, owner: Owner) -> ScriptBuf {
        // `side` says who offered it: `Local` is us.
        let offered_by_owner = (h.side == Side::Local) == (owner == Owner::Holder);
        let hash = ripemd160::Hash::hash(h.payment_hash.as_byte_array()).to_byte_array();
        htlc_script(
            offered_by_owner,
            &self.revocation,
            &self.owner_htlc,
            &self.other_htlc,
            &hash,
            h.cltv_expiry,
            self.anchors_channel,
        )
    }
}

/// One side's basepoints, as the scripts use them.
struct Keys {
    payment: PublicKey,
    htlc: PublicKey,
    delayed: PublicKey,
}

impl Keys {
    fn ours(b: &crate::keys::ChannelBasepoints) -> Keys {
        Keys {
            payment: b.payment,
            htlc: b.htlc,
            delayed: b.delayed_payment,
        }
    }
    fn theirs(b: &protocol::types::Basepoints) -> Keys {
        Keys {
            payment: b.payment,
            htlc: b.htlc,
            delayed: b.delayed_payment,
        }
    }
}

fn p2wsh(script: ScriptBuf) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&script.wscript_hash())
}

/// The stored `setup_channel` of a channel, if it was set up.
///
/// # Errors
/// [`crate::SignerError::Storage`] if the stored request no longer decodes.
pub(crate) fn stored_setup(state: &ChannelState) -> Result<Option<SetupChannel>> {
    // Every request of a channel reads it, and decoding it parses eight public keys: the
    // decoded form is remembered per stored bytes.
    static MEMO: std::sync::LazyLock<
        crate::memo::Memo<Vec<u8>, std::result::Result<SetupChannel, String>>,
    > = std::sync::LazyLock::new(|| crate::memo::Memo::new(1024));
    state
        .setup
        .as_deref()
        .map(|b| {
            MEMO.get_or(b.to_vec(), || {
                SetupChannel::decode(b).map_err(|e| e.to_string())
            })
            .map_err(|e| {
                crate::SignerError::Storage(format!("stored setup_channel does not decode: {e}"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests;
