//! Every HTLC on our channels, by payment hash: an HTLC we offer is either part of a payment
//! the operator's limits approved or the forward of HTLCs offered to us on other channels, and
//! an HTLC offered to us that we forwarded is never failed back while what we offered for it
//! may have been claimed.
//!
//! | rule | refuses |
//! |---|---|
//! | `payment-within-approved-amount` | HTLCs we offer for a preapproved payment, on all channels together, above its amount plus the routing fee allowance |
//! | `htlc-forward-matched` | an HTLC we offer for a payment hash never preapproved, unless HTLCs of that hash offered to us on other channels cover every HTLC we offer for it and expire at least `min_forward_cltv_delta` blocks after the latest |
//! | `htlc-forward-settled` | a commitment from which an HTLC offered to us that we forwarded is gone without our balance growing by it, while an HTLC we offered for it is still pending or was claimed |
//!
//! Each channel's HTLCs are taken from every commitment of either side that is not revoked yet
//! (holder commitments we validated, counterparty commitments we signed, a commitment signed
//! again with other content included): any of them can still be broadcast. An HTLC we offer
//! counts from the first of them that carries it until the last that does is revoked (the peer
//! can claim it from any); an HTLC offered to us counts only while all of them carry it. So a
//! forward's failure becomes final only once the downstream peer revoked every commitment with
//! it, as BOLT 2 has it.
//!
//! Whether an HTLC that left a commitment was fulfilled or failed, hsmd's protocol does not
//! say: the commitment's balance does. `commitment-balance` computes the least our balance may
//! be; what a commitment gives us beyond that is the gain (see `CommitmentBalance::gain_sat`),
//! brought by HTLCs offered to us that were fulfilled and HTLCs we offered that failed. An
//! incoming HTLC of a forward that leaves a commitment must be covered by that gain (it was
//! fulfilled: we were paid). An outgoing HTLC of a forward that leaves a commitment without
//! the gain covering it may have been claimed by the downstream peer: from then on the
//! incoming HTLCs of that hash may leave only fulfilled; for a payment, it counts as paid, and
//! the HTLCs still offered for that hash together with what was paid stay within the approved
//! amount (so a payment claimed once cannot be offered again). Gain is attributed to the
//! incoming HTLCs first; each HTLC is allowed one satoshi of rounding.

use super::payments::PaymentRecord;
use crate::context::ChannelKey;
use crate::error::Result;
use crate::handler::Req;
use crate::policy_channel::Owner;
use crate::store::Records;
use bitcoin::hashes::Hash;
use protocol::types::{HsmHtlc, Side};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `payment-within-approved-amount`.
pub(crate) const WITHIN_APPROVED: &str = "payment-within-approved-amount";
/// `htlc-forward-matched`.
pub(crate) const FORWARD_MATCHED: &str = "htlc-forward-matched";
/// `htlc-forward-settled`.
pub(crate) const FORWARD_SETTLED: &str = "htlc-forward-settled";

/// The HTLCs of one payment hash in one direction on one commitment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    /// Their total, millisatoshis.
    msat: u64,
    /// Their expiry: the earliest for HTLCs offered to us, the latest for those we offer.
    cltv: u32,
    /// When the commitment was signed again with other content: what its earlier versions
    /// carried (the most for HTLCs we offer, the least for those offered to us). They can
    /// still be broadcast until the commitment is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    earlier: Option<u64>,
}

impl Part {
    fn new(msat: u64, cltv: u32) -> Part {
        Part {
            msat,
            cltv,
            earlier: None,
        }
    }

    /// The most any version of the commitment carries.
    fn most(&self) -> u64 {
        self.msat.max(self.earlier.unwrap_or(0))
    }

    /// The least every version of the commitment carries.
    fn least(&self) -> u64 {
        self.msat.min(self.earlier.unwrap_or(u64::MAX))
    }
}

/// How many commitments below a new one are recorded as carrying none of a hash first seen
/// on it (those from the oldest unrevoked one; in a channel that keeps its revocations in
/// order there are at most two).
const MAX_FILL: u64 = 8;

/// One direction's HTLCs of a payment hash on one channel, on every commitment of each side
/// that is not revoked yet (commitment number -> HTLCs; one without any is recorded as 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Sides {
    holder: BTreeMap<u64, Part>,
    counterparty: BTreeMap<u64, Part>,
}

impl Sides {
    fn side_mut(&mut self, owner: Owner) -> &mut BTreeMap<u64, Part> {
        match owner {
            Owner::Holder => &mut self.holder,
            Owner::Counterparty => &mut self.counterparty,
        }
    }

    /// What `owner`'s commitment `n` replaces: itself when it is signed again, else the newest
    /// one below it.
    fn before(&self, owner: Owner, n: u64) -> Part {
        let side = match owner {
            Owner::Holder => &self.holder,
            Owner::Counterparty => &self.counterparty,
        };
        side.range(..=n)
            .next_back()
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }

    /// Records `p` on `owner`'s commitment `n`, forgetting those below `unrevoked_from`; the
    /// unrevoked ones below `n` not recorded carried none of it. Commitment `n` signed again
    /// with other content (lightningd retrying after a crash) does not replace the first
    /// version, which can still be broadcast: HTLCs we offer count as the larger of the two,
    /// HTLCs offered to us as the smaller.
    fn record(&mut self, owner: Owner, n: u64, p: Part, unrevoked_from: u64, incoming: bool) {
        self.prune(owner, unrevoked_from);
        let side = self.side_mut(owner);
        for k in n.saturating_sub(MAX_FILL).max(unrevoked_from)..n {
            side.entry(k).or_default();
        }
        let p = match side.get(&n) {
            Some(first) if first.msat != p.msat || first.earlier.is_some() => Part {
                msat: p.msat,
                cltv: if incoming {
                    first.cltv.min(p.cltv)
                } else {
                    first.cltv.max(p.cltv)
                },
                earlier: Some(if incoming {
                    first.least()
                } else {
                    first.most()
                }),
            },
            _ => p,
        };
        side.insert(n, p);
    }

    /// Forgets `owner`'s commitments below `unrevoked_from`.
    fn prune(&mut self, owner: Owner, unrevoked_from: u64) {
        let side = self.side_mut(owner);
        *side = side.split_off(&unrevoked_from);
    }

    fn all(&self) -> impl Iterator<Item = Part> + '_ {
        self.holder
            .values()
            .chain(self.counterparty.values())
            .copied()
    }

    /// What the peer may claim: the most on any commitment that can still be broadcast.
    fn pending(&self) -> u64 {
        self.all().map(|p| p.most()).max().unwrap_or(0)
    }

    /// What is committed to us: the least on any commitment that can still be broadcast,
    /// either side's (0 unless both sides carry it).
    fn committed(&self) -> u64 {
        if self.holder.is_empty() || self.counterparty.is_empty() {
            return 0;
        }
        self.all().map(|p| p.least()).min().unwrap_or(0)
    }

    fn parts(&self) -> impl Iterator<Item = Part> + '_ {
        self.all().filter(|p| p.most() > 0)
    }

    /// No unrevoked commitment carries any of it.
    fn is_empty(&self) -> bool {
        self.parts().next().is_none()
    }
}

/// Every HTLC of one payment hash on our channels (channel key hex -> sides).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct HashHtlcs {
    incoming: BTreeMap<String, Sides>,
    outgoing: BTreeMap<String, Sides>,
    /// An HTLC we offered for this hash went out as a forward, not as a payment.
    #[serde(default)]
    forwarded: bool,
    /// An HTLC we offered for this forward left a commitment without our balance growing back:
    /// the downstream peer may have claimed it, so the incoming ones must be claimed too.
    #[serde(default)]
    claimed_downstream: bool,
}

impl HashHtlcs {
    fn outgoing_pending(&self) -> u64 {
        self.outgoing
            .values()
            .map(Sides::pending)
            .fold(0, u64::saturating_add)
    }

    fn is_empty(&self) -> bool {
        self.incoming.is_empty() && self.outgoing.is_empty()
    }

    /// Records `p` on `owner`'s commitment `n` of `chan` in `map` (`incoming`: HTLCs offered to
    /// us), returning what the commitment it follows had, or `Err` with what any earlier
    /// version had for a commitment signed again (the most we offered, the least offered to
    /// us): nothing left a commitment then, the earlier versions can still be broadcast.
    fn record(
        map: &mut BTreeMap<String, Sides>,
        chan: &str,
        (owner, n, unrevoked_from): (Owner, u64, u64),
        p: Part,
        incoming: bool,
    ) -> std::result::Result<u64, u64> {
        let mut sides = map.remove(chan).unwrap_or_default();
        let before = sides.before(owner, n);
        let resigned = matches!(owner, Owner::Holder) && sides.holder.contains_key(&n)
            || matches!(owner, Owner::Counterparty) && sides.counterparty.contains_key(&n);
        sides.record(owner, n, p, unrevoked_from, incoming);
        if !sides.is_empty() {
            map.insert(chan.to_string(), sides);
        }
        match (resigned, incoming) {
            (true, true) => Err(before.least()),
            (true, false) => Err(before.most()),
            (false, _) => Ok(before.msat),
        }
    }

    /// Forgets `owner`'s commitments of `chan` below `unrevoked_from`.
    fn prune(&mut self, chan: &str, owner: Owner, unrevoked_from: u64) {
        for map in [&mut self.incoming, &mut self.outgoing] {
            if let Some(sides) = map.get_mut(chan) {
                sides.prune(owner, unrevoked_from);
                if sides.is_empty() {
                    map.remove(chan);
                }
            }
        }
    }
}

/// The HTLCs of `htlcs` offered by `side`, by payment hash.
fn by_hash(htlcs: &[HsmHtlc], side: Side) -> BTreeMap<[u8; 32], Part> {
    let incoming = side == Side::Remote;
    let mut out: BTreeMap<[u8; 32], Part> = BTreeMap::new();
    for h in htlcs.iter().filter(|h| h.side == side) {
        let p = out
            .entry(h.payment_hash.to_byte_array())
            .or_insert(Part::new(0, if incoming { u32::MAX } else { 0 }));
        p.msat = p.msat.saturating_add(h.amount.to_msat());
        p.cltv = if incoming {
            p.cltv.min(h.cltv_expiry)
        } else {
            p.cltv.max(h.cltv_expiry)
        };
    }
    out
}

/// `owner`'s commitment `number` of a channel: its HTLCs, and what it gives us beyond the least
/// `commitment-balance` allowed (`gain_sat`, see the module docs). `unrevoked_from` is the
/// oldest commitment of that side not revoked yet.
pub(crate) struct Signed<'a> {
    pub owner: Owner,
    pub number: u64,
    pub unrevoked_from: u64,
    pub htlcs: &'a [HsmHtlc],
    pub gain_sat: i64,
}

/// Checks and records the HTLCs of a new commitment of `channel`. Runs in the request's write
/// transaction.
pub(crate) fn check_htlcs(r: &mut Req<'_>, channel: &ChannelKey, c: Signed<'_>) -> Result<()> {
    let (owner, htlcs, gain_sat) = (c.owner, c.htlcs, c.gain_sat);
    let chan = hex::encode(channel.to_bytes());
    let now_in = by_hash(htlcs, Side::Remote);
    let now_out = by_hash(htlcs, Side::Local);
    let before: Vec<[u8; 32]> = r
        .txn()?
        .record(Records::ChannelPayments, &channel.to_bytes())?
        .unwrap_or_default();
    let hashes: BTreeSet<[u8; 32]> = before
        .iter()
        .chain(now_in.keys())
        .chain(now_out.keys())
        .copied()
        .collect();
    let mut failed_back = Vec::new();
    let mut left_downstream = Vec::new();
    let mut updates = BTreeMap::new();
    let mut on_channel = Vec::new();
    for hash in hashes {
        let mut rec: HashHtlcs = r.txn()?.record(Records::Htlcs, &hash)?.unwrap_or_default();
        let new_in = now_in.get(&hash).copied().unwrap_or_default();
        let new_out = now_out.get(&hash).copied().unwrap_or_default();
        let at = (owner, c.number, c.unrevoked_from);
        let old_in = HashHtlcs::record(&mut rec.incoming, &chan, at, new_in, true);
        let old_out = HashHtlcs::record(&mut rec.outgoing, &chan, at, new_out, false);
        if new_out.msat > old_out.unwrap_or_else(|most| most) {
            check_outgoing(r, &hash, &mut rec)?;
        }
        let old_in = old_in.unwrap_or(0);
        if new_in.msat < old_in
            && rec.forwarded
            && (rec.outgoing_pending() > 0 || rec.claimed_downstream)
        {
            failed_back.push((hash, old_in - new_in.msat));
        }
        let old_out = old_out.unwrap_or(0);
        if new_out.msat < old_out {
            left_downstream.push((hash, old_out - new_out.msat));
        }
        if rec.incoming.contains_key(&chan) || rec.outgoing.contains_key(&chan) {
            on_channel.push(hash);
        }
        updates.insert(hash, rec);
    }

    let mut gain_msat = i128::from(gain_sat) * 1000;
    let must_gain: i128 = failed_back.iter().map(|(_, m)| i128::from(*m)).sum();
    let rounding = 1000 * failed_back.len() as i128;
    let settled = failed_back.is_empty() || gain_msat + rounding >= must_gain;
    r.policy.check(FORWARD_SETTLED, settled, || {
        let hashes: Vec<String> = failed_back.iter().map(|(h, _)| hex::encode(h)).collect();
        format!(
            "{owner:?} commitment drops {must_gain} msat of forwarded HTLCs offered to us ({}) while what we offered for them may be claimed, and gives us only {gain_sat} sat more",
            hashes.join(", ")
        )
    })?;
    gain_msat -= must_gain;
    for (hash, msat) in left_downstream {
        if gain_msat + 1000 >= i128::from(msat) {
            // It came back to us: it failed.
            gain_msat -= i128::from(msat);
            continue;
        }
        // It may have been claimed: a forward's incoming HTLCs must be claimed too, and a
        // payment has that much less left to pay.
        if let Some(rec) = updates.get_mut(&hash).filter(|r| r.forwarded) {
            rec.claimed_downstream = true;
        } else if let Some(mut p) = r.txn()?.record::<PaymentRecord>(Records::Payments, &hash)? {
            let side = match owner {
                Owner::Holder => &mut p.claimed_msat.0,
                Owner::Counterparty => &mut p.claimed_msat.1,
            };
            *side = side.saturating_add(msat);
            r.txn()?.put_record(Records::Payments, &hash, &p)?;
        }
    }

    let txn = r.txn()?;
    for (hash, rec) in updates {
        if rec.is_empty() {
            txn.remove_record(Records::Htlcs, &hash)?;
        } else {
            txn.put_record(Records::Htlcs, &hash, &rec)?;
        }
    }
    if on_channel.is_empty() {
        txn.remove_record(Records::ChannelPayments, &channel.to_bytes())?;
    } else {
        txn.put_record(Records::ChannelPayments, &channel.to_bytes(), &on_channel)?;
    }
    Ok(())
}

/// `owner`'s commitments of `channel` below `unrevoked_from` were revoked: what they carried can
/// no longer be claimed.
pub(crate) fn revoked(
    r: &mut Req<'_>,
    channel: &ChannelKey,
    owner: Owner,
    unrevoked_from: u64,
) -> Result<()> {
    let key = channel.to_bytes();
    let Some(hashes) = r
        .txn()?
        .record::<Vec<[u8; 32]>>(Records::ChannelPayments, &key)?
    else {
        return Ok(());
    };
    let chan = hex::encode(key);
    let mut still = Vec::new();
    for hash in hashes {
        let Some(mut rec) = r.txn()?.record::<HashHtlcs>(Records::Htlcs, &hash)? else {
            continue;
        };
        rec.prune(&chan, owner, unrevoked_from);
        let txn = r.txn()?;
        if rec.incoming.contains_key(&chan) || rec.outgoing.contains_key(&chan) {
            still.push(hash);
        }
        if rec.is_empty() {
            txn.remove_record(Records::Htlcs, &hash)?;
        } else {
            txn.put_record(Records::Htlcs, &hash, &rec)?;
        }
    }
    let txn = r.txn()?;
    if still.is_empty() {
        txn.remove_record(Records::ChannelPayments, &key)?;
    } else {
        txn.put_record(Records::ChannelPayments, &key, &still)?;
    }
    Ok(())
}

/// More is offered for `hash` than before: it must be a preapproved payment within its amount
/// (`payment-within-approved-amount`), or else a forward (`htlc-forward-matched`).
fn check_outgoing(r: &mut Req<'_>, hash: &[u8; 32], rec: &mut HashHtlcs) -> Result<()> {
    let limits = &r.policy.limits;
    let total = rec.outgoing_pending();
    if let Some(p) = r.txn()?.record::<PaymentRecord>(Records::Payments, hash)? {
        if let Some(approved) = p.amount_msat {
            let allowed = approved
                .saturating_add(approved.saturating_mul(limits.max_routing_fee_ppm) / 1_000_000)
                .saturating_add(limits.max_routing_fee_base_msat);
            let claimed = p.claimed_msat.0.max(p.claimed_msat.1);
            let total = total.saturating_add(claimed);
            r.policy.check(WITHIN_APPROVED, total <= allowed, || {
                format!(
                    "payment {} would have {total} msat outgoing or already paid ({claimed} msat paid), approved {approved} msat (+fees: {allowed})",
                    hex::encode(hash)
                )
            })?;
        }
        return Ok(());
    }
    // Only what is offered to us on channels that carry none of this hash's outgoing HTLCs
    // can pay for them.
    let mut covered = 0u64;
    let mut earliest_in = u32::MAX;
    for (chan, sides) in &rec.incoming {
        if rec.outgoing.get(chan).is_some_and(|o| o.pending() > 0) {
            continue;
        }
        covered = covered.saturating_add(sides.committed());
        if sides.committed() > 0 {
            earliest_in = sides.parts().map(|p| p.cltv).fold(earliest_in, u32::min);
        }
    }
    let latest_out = rec
        .outgoing
        .values()
        .flat_map(Sides::parts)
        .map(|p| p.cltv)
        .max()
        .unwrap_or(0);
    let delta = limits.min_forward_cltv_delta;
    let matched =
        covered > 0 && covered >= total && earliest_in >= latest_out.saturating_add(delta);
    r.policy.check(FORWARD_MATCHED, matched, || {
        if covered < total || covered == 0 {
            format!(
                "{total} msat offered for payment hash {}, which was never preapproved, and only {covered} msat of it offered to us on other channels: neither a payment nor a forward",
                hex::encode(hash)
            )
        } else {
            format!(
                "forward of payment hash {}: offered to us expiring at block {earliest_in}, we offer until block {latest_out}, less than {delta} blocks earlier",
                hex::encode(hash)
            )
        }
    })?;
    rec.forwarded = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::payments::tests::{ask, invoice, policy, signer};
    use crate::{ClientContext, Signer, Store};
    use bitcoin::hashes::sha256;
    use protocol::types::{AmountMsat, NodeId};

    fn htlc(side: Side, hash: u8, msat: u64, cltv: u32) -> HsmHtlc {
        HsmHtlc {
            side,
            amount: AmountMsat::from_msat(msat),
            payment_hash: sha256::Hash::from_byte_array([hash; 32]),
            cltv_expiry: cltv,
        }
    }

    fn out(hash: u8, msat: u64, cltv: u32) -> HsmHtlc {
        htlc(Side::Local, hash, msat, cltv)
    }

    fn inc(hash: u8, msat: u64, cltv: u32) -> HsmHtlc {
        htlc(Side::Remote, hash, msat, cltv)
    }

    fn chan(dbid: u64) -> ChannelKey {
        ChannelKey {
            peer_id: NodeId::from_bytes([2; 33]),
            dbid,
        }
    }

    thread_local! {
        /// The next commitment number of each (channel, holder?) in this test.
        static NEXT: std::cell::RefCell<BTreeMap<(u64, bool), u64>> = Default::default();
    }

    /// Runs `f` in a request's write transaction, committing it if `f` succeeds.
    fn in_request<T>(s: &Signer, f: impl FnOnce(&mut Req<'_>) -> Result<T>) -> Result<T> {
        let session = s.session().unwrap();
        let client = ClientContext::master();
        let mut r = Req::for_test(&session, &client, s.policy(), s.store(), s.approvals());
        let res = f(&mut r);
        if res.is_ok() {
            r.commit_for_test().unwrap();
        }
        res
    }

    /// Runs `owner`'s commitment `n` of channel `c` through [`check_htlcs`] (commitments below
    /// `from` revoked), committing what it records if it passes.
    fn sign(
        s: &Signer,
        c: u64,
        owner: Owner,
        (n, from): (u64, u64),
        htlcs: &[HsmHtlc],
        gain_sat: i64,
    ) -> Result<()> {
        let signed = Signed {
            owner,
            number: n,
            unrevoked_from: from,
            htlcs,
            gain_sat,
        };
        in_request(s, |r| check_htlcs(r, &chan(c), signed))
    }

    /// `owner`'s commitments of channel `c` below `from` are revoked.
    fn revoke(s: &Signer, c: u64, owner: Owner, from: u64) {
        in_request(s, |r| revoked(r, &chan(c), owner, from)).unwrap();
    }

    /// The next commitment of `owner` on channel `c`, every older one revoked at once.
    fn run(s: &Signer, c: u64, owner: Owner, htlcs: &[HsmHtlc], gain_sat: i64) -> Result<()> {
        let key = (c, owner == Owner::Holder);
        let n = NEXT.with(|m| *m.borrow().get(&key).unwrap_or(&0));
        let res = sign(s, c, owner, (n, n), htlcs, gain_sat);
        if res.is_ok() {
            NEXT.with(|m| m.borrow_mut().insert(key, n + 1));
        }
        res
    }

    /// Both commitments of channel `c` carry `htlcs`.
    fn both(s: &Signer, c: u64, htlcs: &[HsmHtlc], gain_sat: i64) -> Result<()> {
        run(s, c, Owner::Holder, htlcs, gain_sat)?;
        run(s, c, Owner::Counterparty, htlcs, gain_sat)
    }

    fn enforcing() -> std::sync::Arc<Signer> {
        signer(
            policy(|l| l.max_routing_fee_base_msat = 0),
            Store::temporary().unwrap(),
        )
    }

    #[test]
    fn split_payments_stay_within_the_approved_amount() {
        let s = enforcing();
        assert!(ask(&s, &invoice(Some(100_000), 5, 0)).0);
        run(&s, 1, Owner::Counterparty, &[out(5, 60_000, 500)], 0).unwrap();
        run(&s, 2, Owner::Counterparty, &[out(5, 40_000, 500)], 0).unwrap();
        // A third part would exceed the invoice plus 1% fees.
        let e = run(&s, 3, Owner::Counterparty, &[out(5, 2_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(WITHIN_APPROVED));
        // The same part on our own commitment is no new payment.
        run(&s, 1, Owner::Holder, &[out(5, 60_000, 500)], 0).unwrap();
        // Once the first part failed on both of its channel's commitments (our balance grew
        // back by it), the amount is free again.
        run(&s, 1, Owner::Counterparty, &[], 60).unwrap();
        let e = run(&s, 3, Owner::Counterparty, &[out(5, 60_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(WITHIN_APPROVED), "still on our commitment");
        run(&s, 1, Owner::Holder, &[], 60).unwrap();
        run(&s, 3, Owner::Counterparty, &[out(5, 60_000, 500)], 0).unwrap();
    }

    #[test]
    fn an_htlc_never_preapproved_is_refused_unless_it_forwards_one_offered_to_us() {
        let s = enforcing();
        let e = run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        // Offered to us on channel 1, on one commitment only: not committed yet.
        run(&s, 1, Owner::Holder, &[inc(7, 51_000, 520)], 0).unwrap();
        let e = run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        run(&s, 1, Owner::Counterparty, &[inc(7, 51_000, 520)], 0).unwrap();
        // More than came in, or expiring too close to the incoming one, is no forward.
        let e = run(&s, 2, Owner::Counterparty, &[out(7, 52_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        let e = run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 515)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        // Back out the same channel it came in on is no forward either.
        let e = run(
            &s,
            1,
            Owner::Counterparty,
            &[inc(7, 51_000, 520), out(7, 50_000, 500)],
            0,
        )
        .unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 514)], 0).unwrap();
        // A second outgoing part beyond what came in is refused.
        let e = run(&s, 3, Owner::Counterparty, &[out(7, 1_001, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        run(&s, 3, Owner::Counterparty, &[out(7, 1_000, 500)], 0).unwrap();
    }

    /// Channel 1 brings 51 000 msat for hash 7, channel 2 forwards 50 000 of it.
    fn forwarded() -> std::sync::Arc<Signer> {
        let s = enforcing();
        both(&s, 1, &[inc(7, 51_000, 520)], 0).unwrap();
        both(&s, 2, &[out(7, 50_000, 500)], 0).unwrap();
        s
    }

    #[test]
    fn a_forwarded_htlc_is_failed_back_only_after_the_one_we_offered_failed() {
        let s = forwarded();
        // Failing the incoming HTLC while the outgoing one is pending: refused.
        let e = run(&s, 1, Owner::Holder, &[], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_SETTLED));
        // The outgoing HTLC fails: it leaves both commitments and our balance grows back.
        both(&s, 2, &[], 50).unwrap();
        // Now the incoming one may fail back.
        both(&s, 1, &[], 0).unwrap();
        assert!(s
            .store()
            .records::<HashHtlcs>(Records::Htlcs)
            .unwrap()
            .is_empty());
        assert!(s
            .store()
            .records::<Vec<[u8; 32]>>(Records::ChannelPayments)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn once_the_outgoing_htlc_may_have_been_claimed_the_incoming_one_must_be() {
        let s = forwarded();
        // The downstream peer claims it: it leaves our commitment, our balance stays.
        run(&s, 2, Owner::Holder, &[], 0).unwrap();
        run(&s, 2, Owner::Counterparty, &[], 0).unwrap();
        // Failing the incoming HTLC back now would lose it.
        let e = run(&s, 1, Owner::Holder, &[], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_SETTLED));
        // A balance grown by less than the HTLC does not do either.
        let e = run(&s, 1, Owner::Holder, &[], 49).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_SETTLED));
        // Fulfilled: our balance grows by it, on each side.
        run(&s, 1, Owner::Holder, &[], 51).unwrap();
        let e = run(&s, 1, Owner::Counterparty, &[], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_SETTLED));
        run(&s, 1, Owner::Counterparty, &[], 51).unwrap();
        assert!(s
            .store()
            .records::<HashHtlcs>(Records::Htlcs)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_upstream_htlc_may_be_fulfilled_before_the_downstream_one_is_gone() {
        let s = forwarded();
        // The preimage came back: upstream is fulfilled at once.
        both(&s, 1, &[], 51).unwrap();
        both(&s, 2, &[], 0).unwrap();
        assert!(s
            .store()
            .records::<HashHtlcs>(Records::Htlcs)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_payment_claimed_once_is_not_offered_again() {
        let s = enforcing();
        assert!(ask(&s, &invoice(Some(100_000), 5, 0)).0);
        both(&s, 1, &[out(5, 100_000, 500)], 0).unwrap();
        // It fails (our balance grows back): it may be tried again.
        both(&s, 1, &[], 100).unwrap();
        both(&s, 1, &[out(5, 100_000, 500)], 0).unwrap();
        // It is claimed (our balance stays down): paid.
        both(&s, 1, &[], 0).unwrap();
        let e = run(&s, 2, Owner::Counterparty, &[out(5, 100_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(WITHIN_APPROVED));
        // What is left of the allowance (1%) may still go out.
        run(&s, 2, Owner::Counterparty, &[out(5, 1_000, 500)], 0).unwrap();
    }

    #[test]
    fn a_forward_fails_back_only_once_the_downstream_peer_revoked_what_carried_it() {
        let s = enforcing();
        both(&s, 1, &[inc(7, 51_000, 520)], 0).unwrap();
        // Channel 2's commitments 1 carry the forward; 0 is revoked.
        sign(&s, 2, Owner::Holder, (1, 0), &[out(7, 50_000, 500)], 0).unwrap();
        sign(
            &s,
            2,
            Owner::Counterparty,
            (1, 0),
            &[out(7, 50_000, 500)],
            0,
        )
        .unwrap();
        revoke(&s, 2, Owner::Holder, 1);
        revoke(&s, 2, Owner::Counterparty, 1);
        // The downstream peer fails it: commitments 2 without it, our balance back.
        sign(&s, 2, Owner::Holder, (2, 1), &[], 50).unwrap();
        revoke(&s, 2, Owner::Holder, 2);
        sign(&s, 2, Owner::Counterparty, (2, 1), &[], 50).unwrap();
        // The peer's commitment 1, with the HTLC, is not revoked yet: the peer can still
        // broadcast it and claim the HTLC with the preimage. Failing back now is refused.
        let e = run(&s, 1, Owner::Holder, &[], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_SETTLED));
        revoke(&s, 2, Owner::Counterparty, 2);
        both(&s, 1, &[], 0).unwrap();
        assert!(s
            .store()
            .records::<HashHtlcs>(Records::Htlcs)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_htlc_offered_to_us_counts_only_while_every_unrevoked_commitment_carries_it() {
        let s = enforcing();
        // Commitments 0 of channel 1 carry nothing; 1 carries the incoming HTLC.
        sign(&s, 1, Owner::Holder, (0, 0), &[], 0).unwrap();
        sign(&s, 1, Owner::Counterparty, (0, 0), &[], 0).unwrap();
        sign(&s, 1, Owner::Holder, (1, 0), &[inc(7, 51_000, 520)], 0).unwrap();
        sign(
            &s,
            1,
            Owner::Counterparty,
            (1, 0),
            &[inc(7, 51_000, 520)],
            0,
        )
        .unwrap();
        // Commitments 0 can still be broadcast, without it: nothing to forward yet.
        let e = run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        revoke(&s, 1, Owner::Holder, 1);
        let e = run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(FORWARD_MATCHED));
        revoke(&s, 1, Owner::Counterparty, 1);
        run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 500)], 0).unwrap();
    }

    #[test]
    fn a_commitment_signed_again_keeps_what_its_first_version_offered_until_revoked() {
        let s = enforcing();
        assert!(ask(&s, &invoice(Some(100_000), 5, 0)).0);
        sign(
            &s,
            1,
            Owner::Counterparty,
            (1, 1),
            &[out(5, 100_000, 500)],
            0,
        )
        .unwrap();
        // lightningd crashed before it stored the HTLC: commitment 1 again, without it.
        sign(&s, 1, Owner::Counterparty, (1, 1), &[], 0).unwrap();
        // The first version can still be broadcast: the payment is still out, elsewhere too.
        let e = run(&s, 2, Owner::Counterparty, &[out(5, 100_000, 500)], 0).unwrap_err();
        assert_eq!(e.rule(), Some(WITHIN_APPROVED));
        // Commitment 2 follows the second version (nothing left it), and once the peer
        // revoked commitment 1, the payment may go out elsewhere: it was never claimed.
        sign(&s, 1, Owner::Counterparty, (2, 1), &[], 0).unwrap();
        revoke(&s, 1, Owner::Counterparty, 2);
        run(&s, 2, Owner::Counterparty, &[out(5, 100_000, 500)], 0).unwrap();
    }

    #[test]
    fn payments_we_receive_may_fail() {
        let s = enforcing();
        both(&s, 1, &[inc(8, 10_000, 600)], 0).unwrap();
        both(&s, 1, &[], 0).unwrap();
    }

    #[test]
    fn warn_mode_signs_and_logs() {
        let s = signer(crate::Policy::warn_only(), Store::temporary().unwrap());
        run(&s, 2, Owner::Counterparty, &[out(7, 50_000, 500)], 0).unwrap();
    }
}
