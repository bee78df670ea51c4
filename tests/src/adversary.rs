//! The adversary: a compromised node driving the in-process signer. Each sequence starts a
//! fresh channel the legitimate way and then, step by step, either takes the next legitimate
//! BOLT 2 step or sends a well-formed but hostile request: other commitment numbers, value
//! moved from our outputs to the peer's or an attacker's, closes that short us, withdrawals to
//! strangers or with weak sighash flags, revocations with wrong secrets, and the same or
//! conflicting requests sent concurrently from two clients. After every answered request the
//! invariants of the signer's promise are checked:
//!
//! 1. no holder commitment is both signed for broadcast and revoked (its secret given out);
//! 2. a counterparty commitment is signed only once every counterparty commitment two or more
//!    numbers below it is revoked, and every revocation accepted matches the point the
//!    commitment we signed was built with (so every old state we signed can be punished);
//! 3. nothing that lets value leave our control beyond the policy is signed: a commitment
//!    giving the peer part of our balance without an HTLC, an attacker's output, a close paying
//!    us less than our balance less the fee (or closing with HTLCs pending), a withdrawal to a
//!    destination neither ours nor allowlisted, over the fee cap, not `SIGHASH_ALL`, or funding
//!    the channel's 2-of-2 a second time;
//! 4. no commitment we sign or accept offers, for a payment hash, more than lightningd
//!    preapproved for it plus the routing fee allowance (each sequence's channel has no other
//!    channel to forward from, so every HTLC we offer is a payment).
//!
//! The choices come from a [`Choices`] source: a seeded generator in the test suite, the
//! fuzzer's bytes in `tests/fuzz`.

use crate::chan::{p2wpkh, pubkey, Built, Channel, Model, Opening, Owner};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{
    absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
};
use protocol::msgs::*;
use protocol::types::{HsmUtxo, NodeId};
use protocol::{Message, Permissions};
use secp256k1::SECP256K1;
use signer::{ClientContext, Policy, Signer, SignerError, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The enforcing policy of the attack corpus (every rule enforced, tight limits).
pub const POLICY: &str = include_str!("../data/attacks/policy.toml");

const VALUE_SAT: u64 = 1_000_000;
const PUSH_MSAT: u64 = 200_000_000;
const SHUTDOWN_WALLET_INDEX: u32 = 5;
/// `max_onchain_fee_sat` of [`POLICY`].
const FEE_CAP_SAT: u64 = 50_000;

/// Where the adversary's choices come from.
pub trait Choices {
    /// The next 64 random bits.
    fn next(&mut self) -> u64;

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A seeded generator (SplitMix64): the same seed, the same sequence.
pub struct Seeded(pub u64);

impl Choices for Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A fuzzer's input read eight bytes at a time (zeros once it is used up).
pub struct FromBytes<'a>(pub &'a [u8]);

impl Choices for FromBytes<'_> {
    fn next(&mut self) -> u64 {
        let take = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..take].copy_from_slice(&self.0[..take]);
        self.0 = &self.0[take..];
        u64::from_le_bytes(b)
    }
}

/// A broken invariant: what was signed, and why that must never happen.
#[derive(Debug)]
pub struct Violation(pub String);

/// What the sequences did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Sequences run.
    pub sequences: u64,
    /// Requests sent, all sequences together.
    pub requests: u64,
    /// Requests answered (signed or otherwise served).
    pub answered: u64,
    /// Requests refused.
    pub refused: u64,
    /// Hostile requests (labelled as moving value beyond the policy), all refused.
    pub hostile: u64,
}

/// One signer, shared by many sequences (each on a channel of its own).
pub struct Adversary {
    signer: Signer,
    master: ClientContext,
}

impl Default for Adversary {
    fn default() -> Self {
        Self::new()
    }
}

impl Adversary {
    /// A signer under [`POLICY`], initialized on regtest.
    pub fn new() -> Adversary {
        let mut policy = Policy::from_toml(POLICY).expect("the attack corpus policy parses");
        // Every sequence's payments are preapproved on one signer: room for all of them.
        policy.limits.velocity_limit_sat = u64::MAX / 1000;
        policy.limits.max_tracked_invoices = usize::MAX;
        let signer = Signer::new(vec![0x5a; 32], Store::temporary().expect("store"), policy);
        let master = ClientContext::master();
        let init = crate::chan::init_regtest();
        signer
            .handle(&master, None, &Message::from(init).encode().expect("init"))
            .expect("init");
        Adversary { signer, master }
    }

    /// Runs one sequence of about `steps` requests on the new channel `dbid` (unique per
    /// adversary), adding to `stats`.
    ///
    /// # Errors
    /// The first invariant broken.
    pub fn run(
        &self,
        dbid: u64,
        steps: usize,
        c: &mut impl Choices,
        stats: &mut Stats,
    ) -> Result<(), Violation> {
        let mut s = Run::open(self, dbid, c, stats)?;
        for _ in 0..steps {
            s.step(c)?;
        }
        s.stats.sequences += 1;
        Ok(())
    }
}

/// What a request may do to value, as the adversary built it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Intent {
    /// Within the policy if the signer's state allows it.
    Benign,
    /// Moves value beyond the policy: must be refused.
    Hostile(&'static str),
}

/// One channel's sequence and what the invariants need to remember of it.
struct Run<'a> {
    adv: &'a Adversary,
    ch: Channel,
    channeld: ClientContext,
    stats: &'a mut Stats,
    /// The legitimate states, one per commitment number.
    history: Vec<Model>,
    /// The next legitimate step: commitment `next` is in round phase `phase`.
    next: u64,
    phase: u8,
    /// Holder commitments whose secret we gave out, and those signed for broadcast.
    revealed: BTreeSet<u64>,
    broadcastable: BTreeSet<u64>,
    /// Counterparty commitments we signed (number -> the point it was built with), and those
    /// whose revocation we accepted.
    signed_theirs: BTreeMap<u64, secp256k1::PublicKey>,
    revoked_theirs: BTreeSet<u64>,
    /// The newest states the signer accepted, holder and counterparty.
    accepted_holder: Option<u64>,
    accepted_theirs: Option<u64>,
    /// Wallet UTXO counter (fresh outpoints).
    utxos: u8,
    /// What lightningd preapproved, by payment hash (msat).
    approved: BTreeMap<bitcoin::hashes::sha256::Hash, u64>,
}

impl<'a> Run<'a> {
    fn open(
        adv: &'a Adversary,
        dbid: u64,
        c: &mut impl Choices,
        stats: &'a mut Stats,
    ) -> Result<Run<'a>, Violation> {
        let keys = adv.signer.session().expect("initialized");
        let peer_byte = 0x10 + (c.below(0x40) as u8);
        let peer_id = NodeId::from_pubkey(&pubkey(peer_byte));
        let mut funding_txid = [0u8; 32];
        funding_txid[..8].copy_from_slice(&dbid.to_be_bytes());
        funding_txid[31] = 0xf0;
        let ch = Channel::new(
            &keys.keys,
            peer_id,
            dbid,
            [peer_byte.wrapping_add(0x40); 32],
            &Opening {
                value_sat: VALUE_SAT,
                push_msat: PUSH_MSAT,
                funding: OutPoint {
                    txid: bitcoin::Txid::from_byte_array(funding_txid),
                    vout: 1,
                },
                shutdown_wallet_index: SHUTDOWN_WALLET_INDEX,
                remote_shutdown: p2wpkh(&pubkey(peer_byte.wrapping_add(0x20))),
            },
        );
        let channeld = ClientContext::client(ch.peer_id, dbid, Permissions::CHANNELD);
        let history = history(&ch, dbid, c);
        let mut s = Run {
            adv,
            ch,
            channeld,
            stats,
            history,
            next: 1,
            phase: 0,
            revealed: BTreeSet::new(),
            broadcastable: BTreeSet::new(),
            signed_theirs: BTreeMap::new(),
            revoked_theirs: BTreeSet::new(),
            accepted_holder: None,
            accepted_theirs: None,
            utxos: 0,
            approved: BTreeMap::new(),
        };
        let master = s.adv.master.clone();
        s.ask(
            &master,
            NewChannel::new(s.ch.peer_id, dbid).into(),
            Intent::Benign,
        )?;
        s.preapprove_history()?;
        let openingd = ClientContext::client(s.ch.peer_id, dbid, Permissions::OPENINGD);
        s.ask(&openingd, s.ch.setup_msg(), Intent::Benign)?;
        let m0 = s.history[0].clone();
        s.sign_theirs(&openingd, 0, &m0, Intent::Benign)?;
        s.validate_ours(
            &openingd,
            0,
            &s.ch.build(Owner::Holder, 0, &m0),
            Intent::Benign,
        )?;
        Ok(s)
    }

    /// One request: the next legitimate step most of the time, else a hostile or disordered one.
    fn step(&mut self, c: &mut impl Choices) -> Result<(), Violation> {
        if c.chance(55) {
            return self.legitimate_step();
        }
        let n = self.next;
        // A commitment number near the current one.
        let k = (n + c.below(6)).saturating_sub(3);
        let channeld = self.channeld.clone();
        match c.below(12) {
            0 => {
                let m = self.model(k);
                self.sign_theirs(&channeld, k, &m, Intent::Benign)
            }
            1 => {
                let b = self.ch.build(Owner::Holder, k, &self.model(k));
                self.validate_ours(&channeld, k, &b, Intent::Benign)
            }
            2 => self.revoke_ours(&channeld, k),
            3 => {
                let b = self.ch.build(Owner::Holder, k, &self.model(k));
                self.broadcast_ours(k, &b, Intent::Benign)
            }
            4 => {
                let right = c.chance(50);
                self.peer_revokes(&channeld, k, right)
            }
            5 => {
                // Value moved from our balance to the peer's (or an attacker's) on a commitment
                // of either side, more than anything legitimate could explain (every HTLC the
                // peer offered failed at once, and a fee change): hostile wherever it is
                // signed.
                let sat = self.explainable_sat() + 1_000 + c.below(50_000);
                let owner = if c.chance(50) {
                    Owner::Holder
                } else {
                    Owner::Counterparty
                };
                if sat + 1_000 >= self.our_output_sat(owner, k) {
                    return self.legitimate_step();
                }
                let b = self.taking(owner, k, sat, c.chance(50));
                let intent = Intent::Hostile("a commitment that gives away our balance");
                match (owner, c.below(3)) {
                    (Owner::Counterparty, _) => self.sign_theirs_built(&channeld, k, &b, intent),
                    (Owner::Holder, 0) => self.broadcast_ours(k, &b, intent),
                    (Owner::Holder, _) => self.validate_ours(&channeld, k, &b, intent),
                }
            }
            6 => self.close(c),
            7 => self.withdraw(c),
            8 => self.race_revoke_and_broadcast(),
            9 => {
                // The same legitimate request twice at once, from the same channel's client.
                let m = self.model(n);
                let b = self.ch.build(Owner::Counterparty, n, &m);
                let msg = self.ch.sign_remote(n, &b);
                let point = self.ch.point(Owner::Counterparty, n);
                let (a, b) = self.concurrently(&channeld, msg.clone(), &channeld, msg);
                for r in [a, b] {
                    if r.is_ok() {
                        self.signed_counterparty(n, point)?;
                    }
                }
                Ok(())
            }
            10 => match self.unapproved_htlc(k, c) {
                Some(b) => {
                    let intent = Intent::Hostile("an HTLC offered beyond what was approved");
                    self.sign_theirs_built(&channeld, k, &b, intent)
                }
                None => self.legitimate_step(),
            },
            _ => {
                // A commitment signed for the peer with a point that is not the peer's: its
                // revocation can never be matched, so it is never punishable.
                let m = self.model(n);
                let b = self.ch.build(Owner::Counterparty, n, &m);
                let msg = SignRemoteCommitmentTx::new(
                    b.tx.clone(),
                    self.ch.setup.remote_funding_pubkey,
                    pubkey(0x99),
                    true,
                    n,
                    b.htlcs.clone(),
                    b.feerate,
                );
                let ok = self.ask(&channeld, msg.into(), Intent::Benign)?;
                if ok {
                    self.signed_counterparty(n, pubkey(0x99))?;
                }
                Ok(())
            }
        }
    }

    /// lightningd preapproves every payment the history makes, as `keysend` does before it
    /// offers an HTLC.
    fn preapprove_history(&mut self) -> Result<(), Violation> {
        let offered: BTreeMap<_, _> = self
            .history
            .iter()
            .flat_map(|m| m.htlcs.iter())
            .filter(|h| h.side == protocol::types::Side::Local)
            .map(|h| (h.payment_hash, h.amount.to_msat()))
            .collect();
        let master = self.adv.master.clone();
        for (hash, msat) in offered {
            let m = PreapproveKeysend::new(
                self.ch.peer_id,
                hash,
                protocol::types::AmountMsat::from_msat(msat),
            );
            let bytes = Message::from(m).encode().expect("well-formed request");
            let outcome = self.adv.signer.handle(&master, None, &bytes);
            self.count(&outcome, Intent::Benign)?;
            let approved = outcome
                .ok()
                .and_then(|r| PreapproveKeysendReply::decode(&r).ok())
                .is_some_and(|r| r.approved);
            assert!(approved, "a payment within every limit is preapproved");
            self.approved.insert(hash, msat);
        }
        Ok(())
    }

    /// Invariant 4, for a commitment the signer signed or accepted.
    fn check_offered(&self, n: u64, b: &Built) -> Result<(), Violation> {
        let mut offered: BTreeMap<_, u64> = BTreeMap::new();
        for h in b
            .htlcs
            .iter()
            .filter(|h| h.side == protocol::types::Side::Local)
        {
            *offered.entry(h.payment_hash).or_default() += h.amount.to_msat();
        }
        for (hash, msat) in offered {
            let approved = self.approved.get(&hash).copied().unwrap_or(0);
            let allowed = allowance(approved);
            if approved == 0 || msat > allowed {
                return Err(Violation(format!(
                    "commitment {n} offers {msat} msat for payment hash {hash}, approved {approved} msat"
                )));
            }
        }
        Ok(())
    }

    /// Commitment `k` of the peer with an HTLC we offer that goes beyond what was approved:
    /// for a hash nobody approved, or for an approved hash, more than its allowance. `None`
    /// when our balance cannot carry it.
    fn unapproved_htlc(&self, k: u64, c: &mut impl Choices) -> Option<Built> {
        let m = self.model(k);
        let (hash, msat) = match self.approved.iter().nth(c.below(4) as usize) {
            Some((hash, approved)) if c.chance(50) => {
                let already: u64 = m
                    .htlcs
                    .iter()
                    .filter(|h| h.payment_hash == *hash)
                    .map(|h| h.amount.to_msat())
                    .sum();
                let allowed = allowance(*approved);
                // Above any dust limit, so that it is an output and listed (a trimmed HTLC's
                // value goes to fees, which `commitment-balance` bounds).
                (
                    *hash,
                    (allowed + 1_000).saturating_sub(already).max(1_000_000),
                )
            }
            _ => (
                crate::chan::salted_hash_of(0xee, self.ch.dbid + 1),
                1_000_000 + c.below(20_000_000),
            ),
        };
        (m.ours_msat > msat + 20_000_000).then(|| {
            self.ch
                .build(Owner::Counterparty, k, &m.offer_hash(msat, hash))
        })
    }

    /// The next step of the BOLT 2 dance: we sign the peer's commitment `n`, the peer revokes
    /// `n - 1`, we validate ours `n` and revoke `n - 1`.
    fn legitimate_step(&mut self) -> Result<(), Violation> {
        let n = self.next;
        if n as usize >= self.history.len() {
            return Ok(());
        }
        let channeld = self.channeld.clone();
        let m = self.history[n as usize].clone();
        match self.phase {
            0 => self.sign_theirs(&channeld, n, &m, Intent::Benign)?,
            1 => self.peer_revokes(&channeld, n - 1, true)?,
            2 => {
                let b = self.ch.build(Owner::Holder, n, &m);
                self.validate_ours(&channeld, n, &b, Intent::Benign)?
            }
            _ => self.revoke_ours(&channeld, n - 1)?,
        }
        self.phase = (self.phase + 1) % 4;
        if self.phase == 0 {
            self.next += 1;
        }
        Ok(())
    }

    /// The most our balance can legitimately fall from one commitment to a later one without
    /// an HTLC we offer: every HTLC the peer offered us failing (its amount, which the model
    /// had taken from the peer's side, going back to it), and our fee rising as funder.
    fn explainable_sat(&self) -> u64 {
        let received: u64 = self
            .history
            .iter()
            .flat_map(|m| m.htlcs.iter())
            .filter(|h| h.side == protocol::types::Side::Remote)
            .map(|h| h.amount.to_msat().div_ceil(1000))
            .sum();
        received + 20_000
    }

    /// The legitimate state of commitment `k` (the last one past the history).
    fn model(&self, k: u64) -> Model {
        let i = (k as usize).min(self.history.len() - 1);
        self.history[i].clone()
    }

    /// Our balance output on the legitimate commitment `k` of `owner` (0 when trimmed).
    fn our_output_sat(&self, owner: Owner, k: u64) -> u64 {
        let ours = self.ch.scripts(owner, k).ours;
        self.ch
            .build(owner, k, &self.model(k))
            .tx
            .tx
            .output
            .iter()
            .filter(|o| o.script_pubkey == ours)
            .map(|o| o.value.to_sat())
            .sum()
    }

    /// Commitment `k` of `owner` with `sat` of our balance moved to the peer, or to a new
    /// attacker output.
    fn taking(&self, owner: Owner, k: u64, sat: u64, to_attacker: bool) -> Built {
        let b = self.ch.build(owner, k, &self.model(k));
        let s = self.ch.scripts(owner, k);
        if to_attacker {
            b.take(&s.ours, sat).push_output(sat, attacker())
        } else {
            b.shift(&s.ours, &s.theirs, sat)
        }
    }

    fn sign_theirs(
        &mut self,
        client: &ClientContext,
        n: u64,
        m: &Model,
        intent: Intent,
    ) -> Result<(), Violation> {
        let b = self.ch.build(Owner::Counterparty, n, m);
        self.sign_theirs_built(client, n, &b, intent)
    }

    fn sign_theirs_built(
        &mut self,
        client: &ClientContext,
        n: u64,
        b: &Built,
        intent: Intent,
    ) -> Result<(), Violation> {
        if self.ask(client, self.ch.sign_remote(n, b), intent)? {
            self.check_offered(n, b)?;
            self.signed_counterparty(n, self.ch.point(Owner::Counterparty, n))?;
            if intent == Intent::Benign {
                self.accepted_theirs = self.accepted_theirs.max(Some(n));
            }
        }
        Ok(())
    }

    /// Invariant 2, when counterparty commitment `n` (built with `point`) was signed.
    fn signed_counterparty(
        &mut self,
        n: u64,
        point: secp256k1::PublicKey,
    ) -> Result<(), Violation> {
        if let Some(&old) = self.signed_theirs.get(&n) {
            if old != point {
                return Err(Violation(format!(
                    "counterparty commitment {n} signed with two different points: only one can be punished"
                )));
            }
        }
        self.signed_theirs.insert(n, point);
        if let Some(unrevoked) = self
            .signed_theirs
            .keys()
            .find(|&&m| m + 2 <= n && !self.revoked_theirs.contains(&m))
        {
            return Err(Violation(format!(
                "counterparty commitment {n} signed while {unrevoked}, two or more below it, is not revoked"
            )));
        }
        Ok(())
    }

    fn validate_ours(
        &mut self,
        client: &ClientContext,
        n: u64,
        b: &Built,
        intent: Intent,
    ) -> Result<(), Violation> {
        if self.ask(client, self.ch.validate(n, b), intent)? {
            self.check_offered(n, b)?;
            if intent == Intent::Benign {
                self.accepted_holder = self.accepted_holder.max(Some(n));
            }
        }
        Ok(())
    }

    fn revoke_ours(&mut self, client: &ClientContext, n: u64) -> Result<(), Violation> {
        if self.ask(client, self.ch.revoke(n), Intent::Benign)? {
            self.revealed.insert(n);
            self.check_revoked_never_broadcast()?;
        }
        Ok(())
    }

    fn broadcast_ours(&mut self, n: u64, b: &Built, intent: Intent) -> Result<(), Violation> {
        let master = self.adv.master.clone();
        if self.ask(&master, self.ch.sign_holder(n, b), intent)? {
            self.broadcastable.insert(n);
            self.check_revoked_never_broadcast()?;
        }
        Ok(())
    }

    /// Invariant 1.
    fn check_revoked_never_broadcast(&self) -> Result<(), Violation> {
        match self.revealed.intersection(&self.broadcastable).next() {
            Some(n) => Err(Violation(format!(
                "holder commitment {n} was both revoked and signed for broadcast"
            ))),
            None => Ok(()),
        }
    }

    fn peer_revokes(
        &mut self,
        client: &ClientContext,
        n: u64,
        right: bool,
    ) -> Result<(), Violation> {
        let secret = if right {
            self.ch.peer.per_commitment_secret(n).expect("in range")
        } else {
            [0x42; 32]
        };
        if self.ask(client, self.ch.peer_revokes_with(n, secret), Intent::Benign)? {
            // Invariant 2: the secret accepted opens the commitment we signed.
            let key = secp256k1::SecretKey::from_slice(&secret)
                .map(|k| k.public_key(SECP256K1))
                .ok();
            if let Some(&point) = self.signed_theirs.get(&n) {
                if key != Some(point) {
                    return Err(Violation(format!(
                        "a revocation of counterparty commitment {n} accepted whose secret does not match the point we signed it with"
                    )));
                }
            }
            self.revoked_theirs.insert(n);
        }
        Ok(())
    }

    /// Revealing commitment `k`'s secret and signing `k` for broadcast, sent at once from
    /// channeld and lightningd (invariant 1 decides).
    fn race_revoke_and_broadcast(&mut self) -> Result<(), Violation> {
        let k = self.next.saturating_sub(1);
        let b = self.ch.build(Owner::Holder, k, &self.model(k));
        let (channeld, master) = (self.channeld.clone(), self.adv.master.clone());
        let (revoked, signed) = self.concurrently(
            &channeld,
            self.ch.revoke(k),
            &master,
            self.ch.sign_holder(k, &b),
        );
        if revoked.is_ok() {
            self.revealed.insert(k);
        }
        if signed.is_ok() {
            self.broadcastable.insert(k);
        }
        self.check_revoked_never_broadcast()
    }

    /// A mutual close with a random split; hostile when it pays us less than our balance on
    /// the newest accepted states less the fee, or when HTLCs are pending on them.
    fn close(&mut self, c: &mut impl Choices) -> Result<(), Violation> {
        let newest = [self.accepted_holder, self.accepted_theirs];
        let states: Vec<Model> = newest.iter().flatten().map(|&n| self.model(n)).collect();
        let ours_msat = states.iter().map(|m| m.ours_msat).min().unwrap_or(0);
        let pending = states.iter().any(|m| !m.htlcs.is_empty());
        let fee = 500 + c.below(3_000);
        let ours_sat = ours_msat / 1000;
        let short = if c.chance(50) {
            0
        } else {
            1 + c.below(ours_sat.max(1))
        };
        let pay_ours = ours_sat.saturating_sub(fee).saturating_sub(short);
        let pay_theirs = VALUE_SAT - pay_ours - fee;
        let intent = if pending {
            Intent::Hostile("a mutual close with HTLCs pending")
        } else if pay_ours + fee + 1 < ours_sat {
            Intent::Hostile("a mutual close that shorts our balance")
        } else {
            Intent::Benign
        };
        let shutdown = self.wallet(SHUTDOWN_WALLET_INDEX);
        let tx = self.ch.close_tx(pay_ours, &shutdown, pay_theirs);
        let closingd = ClientContext::client(self.ch.peer_id, self.ch.dbid, Permissions::CLOSINGD);
        self.ask(&closingd, self.ch.sign_close(tx), intent)?;
        Ok(())
    }

    /// A withdrawal from a fresh wallet UTXO to a random mix of destinations, perhaps with a
    /// weak sighash flag or a fee over the cap.
    fn withdraw(&mut self, c: &mut impl Choices) -> Result<(), Violation> {
        self.utxos = self.utxos.wrapping_add(1);
        let index = 10 + u32::from(self.utxos % 50);
        let amount = 2_000_000u64;
        let mut byte = [0u8; 32];
        byte[..8].copy_from_slice(&self.ch.dbid.to_be_bytes());
        byte[8] = self.utxos;
        let utxo = HsmUtxo {
            txid: bitcoin::Txid::from_byte_array(byte),
            vout: 0,
            amount: Amount::from_sat(amount),
            keyindex: index,
            legacy_is_p2sh: false,
            script_pubkey: self.wallet(index),
            close_info: None,
            legacy_is_in_coinbase: false,
        };
        let mut intent = Intent::Benign;
        let mut outputs = Vec::new();
        let mut left = amount;
        for _ in 0..1 + c.below(3) {
            let sat = 10_000 + c.below(400_000);
            let script = match c.below(4) {
                0 => self.wallet(c.below(90) as u32),
                1 => p2wpkh(&pubkey(0x77)),
                2 => {
                    intent = Intent::Hostile("a withdrawal to a stranger");
                    attacker()
                }
                _ => {
                    intent = Intent::Hostile("a second funding of the channel");
                    self.ch.funding_spk()
                }
            };
            left -= sat;
            outputs.push((sat, script));
        }
        let fee = if c.chance(15) {
            intent = Intent::Hostile("a withdrawal over the fee cap");
            FEE_CAP_SAT + 1 + c.below(100_000)
        } else {
            1_000
        };
        outputs.push((left - fee, self.wallet(4)));
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: utxo.txid,
                    vout: 0,
                },
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            }],
            output: outputs
                .into_iter()
                .map(|(sat, script_pubkey)| TxOut {
                    value: Amount::from_sat(sat),
                    script_pubkey,
                })
                .collect(),
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).expect("unsigned");
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: utxo.amount,
            script_pubkey: utxo.script_pubkey.clone(),
        });
        if c.chance(15) {
            let weak = [
                EcdsaSighashType::None,
                EcdsaSighashType::Single,
                EcdsaSighashType::AllPlusAnyoneCanPay,
                EcdsaSighashType::NonePlusAnyoneCanPay,
            ][c.below(4) as usize];
            psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(weak));
            intent = Intent::Hostile("a withdrawal signed with a weak sighash flag");
        }
        let master = self.adv.master.clone();
        self.ask(
            &master,
            SignWithdrawal::new(vec![utxo], psbt.into()).into(),
            intent,
        )?;
        Ok(())
    }

    fn wallet(&self, index: u32) -> ScriptBuf {
        let keys = self.adv.signer.session().expect("initialized");
        p2wpkh(
            &keys
                .keys
                .wallet_key(index)
                .expect("wallet key")
                .public_key(SECP256K1),
        )
    }

    /// Sends `msg` from `client`; whether it was answered. Invariant 3: a hostile request is
    /// never answered.
    fn ask(
        &mut self,
        client: &ClientContext,
        msg: Message,
        intent: Intent,
    ) -> Result<bool, Violation> {
        let bytes = msg.encode().expect("well-formed request");
        let outcome = self.adv.signer.handle(client, None, &bytes);
        if std::env::var_os("ADVERSARY_TRACE").is_some() {
            let t = u16::from_be_bytes([bytes[0], bytes[1]]);
            eprintln!(
                "{} {intent:?}: {:?}",
                protocol::msgs::name_of(t).unwrap_or("?"),
                outcome
                    .as_ref()
                    .map(|_| "answered")
                    .map_err(|e| e.to_string())
            );
        }
        self.count(&outcome, intent)?;
        Ok(outcome.is_ok())
    }

    fn count(
        &mut self,
        outcome: &Result<Vec<u8>, SignerError>,
        intent: Intent,
    ) -> Result<(), Violation> {
        self.stats.requests += 1;
        match outcome {
            Ok(_) => self.stats.answered += 1,
            Err(_) => self.stats.refused += 1,
        }
        if let Intent::Hostile(what) = intent {
            self.stats.hostile += 1;
            if outcome.is_ok() {
                return Err(Violation(format!(
                    "signed {what} (channel {}, next commitment {})",
                    self.ch.dbid, self.next
                )));
            }
        }
        Ok(())
    }

    /// Sends two requests at the same time from two threads; both outcomes.
    fn concurrently(
        &mut self,
        a_client: &ClientContext,
        a: Message,
        b_client: &ClientContext,
        b: Message,
    ) -> (Result<Vec<u8>, SignerError>, Result<Vec<u8>, SignerError>) {
        let adv: &'a Adversary = self.adv;
        let signer = &adv.signer;
        let (a, b) = (a.encode().expect("encode"), b.encode().expect("encode"));
        let barrier = std::sync::Barrier::new(2);
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                barrier.wait();
                signer.handle(a_client, None, &a)
            });
            let tb = s.spawn(|| {
                barrier.wait();
                signer.handle(b_client, None, &b)
            });
            (ta.join().expect("thread"), tb.join().expect("thread"))
        });
        for r in [&ra, &rb] {
            self.stats.requests += 1;
            match r {
                Ok(_) => self.stats.answered += 1,
                Err(_) => self.stats.refused += 1,
            }
        }
        (ra, rb)
    }
}

/// A random legitimate history: payments both ways (offered, received, fulfilled) and fee
/// changes, one state per commitment number.
fn history(ch: &Channel, dbid: u64, c: &mut impl Choices) -> Vec<Model> {
    let mut opening = ch.opening();
    opening.salt = dbid + 1;
    let mut states = vec![opening];
    let mut open: Vec<u8> = Vec::new();
    let mut id = 0u8;
    for _ in 0..12 {
        let m = states.last().expect("opening").clone();
        let next = match c.below(4) {
            0 if m.ours_msat > 60_000_000 => {
                id += 1;
                open.push(id);
                m.offer(1_000_000 + c.below(50_000_000), id)
            }
            1 if m.theirs_msat > 60_000_000 => {
                id += 1;
                open.push(id);
                m.receive(1_000_000 + c.below(50_000_000), id)
            }
            2 if !open.is_empty() => {
                let h = open.remove(c.below(open.len() as u64) as usize);
                m.fulfill(h)
            }
            _ => m.feerate(1_000 + c.below(4_000) as u32),
        };
        states.push(next);
    }
    states
}

/// What HTLCs for a payment approved for `approved_msat` may carry: the amount plus
/// `max_routing_fee_ppm` and `max_routing_fee_base_msat` of [`POLICY`].
fn allowance(approved_msat: u64) -> u64 {
    approved_msat + approved_msat * 10_000 / 1_000_000 + 5_000
}

/// An address that is neither ours nor allowlisted.
fn attacker() -> ScriptBuf {
    p2wpkh(&pubkey(0x66))
}

/// How many sequences (channels) one signer serves in [`run_seeded`].
const SEQUENCES_PER_SIGNER: u64 = 100;

/// A fresh adversary running `sequences` sequences of `steps` steps from `seed`, one channel
/// each.
///
/// # Errors
/// The first invariant broken, with the seed of the sequence that broke it.
pub fn run_seeded(seed: u64, sequences: u64, steps: usize) -> Result<Stats, Violation> {
    let mut adv = Arc::new(Adversary::new());
    let mut stats = Stats::default();
    for i in 0..sequences {
        if i > 0 && i % SEQUENCES_PER_SIGNER == 0 {
            // A fresh signer now and then: every withdrawal looks at every channel.
            adv = Arc::new(Adversary::new());
        }
        let seq_seed = seed.wrapping_mul(1_000_003).wrapping_add(i);
        adv.run(1 + i, steps, &mut Seeded(seq_seed), &mut stats)
            .map_err(|v| Violation(format!("sequence seed {seq_seed}: {}", v.0)))?;
    }
    Ok(stats)
}

/// Runs the single sequence `seed` on channel `dbid` (to replay a finding).
///
/// # Errors
/// The invariant it breaks.
pub fn run_one(seed: u64, dbid: u64, steps: usize) -> Result<Stats, Violation> {
    let adv = Adversary::new();
    let mut stats = Stats::default();
    adv.run(dbid, steps, &mut Seeded(seed), &mut stats)?;
    Ok(stats)
}
