//! The attack cases, the enforcing policy they are replayed with, and what the legitimate
//! steps assume of it.
//!
//! Every case starts from a fresh signer. Channel cases open the same kind of channel: we
//! fund 1 000 000 sat and push 200 000 sat to the peer, zero-fee HTLC anchors
//! (`option_static_remotekey` + `option_anchors_zero_fee_htlc_tx`), `to_self_delay` 144 both
//! ways, 2 500 sat/kw, then move through a history of BOLT 2 rounds (see [`history`]).
//! Whenever an attack closes a client, a new client for the same channel (what lightningd
//! does when it restarts a subdaemon) carries the `after_attack` steps.

use crate::{keys_signer, CaseBuilder};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::psbt::Psbt;
use bitcoin::{
    transaction, Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use protocol::msgs::*;
use protocol::types::{AmountMsat, BitcoinTx, ChannelType, HsmUtxo, NodeId, WireString};
use protocol::Permissions;
use secp256k1::{SecretKey, SECP256K1};
use signer::Session;
use std::sync::Arc;
use std::time::Duration;
use tests::chan::{self, p2wpkh, pubkey, txid, Channel, Model, Opening, Owner};

/// The operator's limits the corpus is replayed with.
const MAX_CHANNEL_VALUE_SAT: u64 = 5_000_000;
const MAX_FEERATE_PER_KW: u32 = 50_000;
const MAX_HTLC_VALUE_MSAT: u64 = 500_000_000;
const MAX_ONCHAIN_FEE_SAT: u64 = 50_000;
const MAX_ONCHAIN_FEERATE_PER_KW: u64 = 25_000;
const MAX_AUTO_APPROVE_MSAT: u64 = 100_000_000;
const VELOCITY_LIMIT_SAT: u64 = 250_000;
const MAX_TRACKED_INVOICES: usize = 5;

/// The channel value and push of every channel case.
const VALUE_SAT: u64 = 1_000_000;
const PUSH_MSAT: u64 = 200_000_000;
/// Wallet key our mutual closes pay (`local_shutdown_wallet_index`).
const SHUTDOWN_WALLET_INDEX: u32 = 5;
/// Wallet key our sweeps pay.
const SWEEP_WALLET_INDEX: u32 = 7;

/// Invoice timestamps: fixed, so the corpus is deterministic.
const INVOICE_TIME: u64 = 1_750_000_000;
/// Valid invoices expire 100 years after [`INVOICE_TIME`].
const FAR_EXPIRY_SECS: u64 = 100 * 365 * 24 * 3600;
/// The expired invoice: one hour, in 2020.
const PAST_TIME: u64 = 1_600_000_000;

/// The attacker's address (P2WPKH of the key `[0x66; 32]`).
fn attacker() -> ScriptBuf {
    p2wpkh(&pubkey(0x66))
}

/// The operator's one allowlisted destination (P2WPKH of the key `[0x77; 32]`), e.g. a cold
/// wallet.
fn allowlisted() -> ScriptBuf {
    p2wpkh(&pubkey(0x77))
}

fn regtest_address(script: &ScriptBuf) -> String {
    Address::from_script(script, Network::Regtest)
        .expect("standard script")
        .to_string()
}

/// The policy file the corpus is replayed with: every rule enforced.
pub fn policy_toml() -> String {
    format!(
        r#"# The enforcing policy tests/data/attacks/policy-attacks.json is replayed with
# (`node replay --corpus policy-attacks.json --policy policy.toml`, and signer/tests/attacks.rs).
# Written by `cargo run -p tests --bin make_attack_corpus`; do not edit by hand.
# Every rule is enforced; the limits are tight enough that each attack breaks one, and the
# legitimate steps stay within them (see `policy_assumptions` in the corpus).
default = "enforce"

[limits]
min_to_self_delay = 144
max_to_self_delay = 2016
max_channel_value_sat = {MAX_CHANNEL_VALUE_SAT}
# The channels we fund push {PUSH_MSAT} msat to the peer, which the operator allows.
max_push_msat = {PUSH_MSAT}
min_dust_limit_sat = 354
max_commitment_dust_sat = 60000
min_feerate_per_kw = 253
max_feerate_per_kw = {MAX_FEERATE_PER_KW}
max_htlcs = 30
max_htlc_value_msat = {MAX_HTLC_VALUE_MSAT}
max_onchain_fee_sat = {MAX_ONCHAIN_FEE_SAT}
max_onchain_feerate_per_kw = {MAX_ONCHAIN_FEERATE_PER_KW}
# P2WPKH of the key [0x77; 32] on regtest.
allowlist = ["{allow}"]
wallet_scan_depth = 100
max_auto_approve_msat = {MAX_AUTO_APPROVE_MSAT}
velocity_window_secs = 86400
velocity_limit_sat = {VELOCITY_LIMIT_SAT}
max_tracked_invoices = {MAX_TRACKED_INVOICES}
# Payments above max_auto_approve_msat wait this long for the operator, then are refused.
approval_timeout_secs = 1
max_routing_fee_ppm = 10000
max_routing_fee_base_msat = 5000
"#,
        allow = regtest_address(&allowlisted()),
    )
}

/// What the legitimate steps assume of the enforcing policy.
pub fn policy_assumptions() -> serde_json::Value {
    serde_json::json!({
        "network": "regtest",
        "channel_types": ["option_static_remotekey + option_anchors_zero_fee_htlc_tx (bits 12 and 22)"],
        "to_self_delay": {"both_sides": chan::TO_SELF_DELAY, "allowed": [144, 2016]},
        "channel_value_sat": {"used": VALUE_SAT, "push_msat": PUSH_MSAT, "max": MAX_CHANNEL_VALUE_SAT},
        "commitment_feerate_per_kw": {"used": chan::FEERATE, "allowed": [253, MAX_FEERATE_PER_KW]},
        "dust_limit_sat": {"used": chan::DUST_LIMIT_SAT, "min": 354},
        "htlcs": {"largest_msat": 50_000_000, "max_value_msat": MAX_HTLC_VALUE_MSAT, "max_count": 30},
        "onchain": {
            "largest_fee_sat": 1_000,
            "max_fee_sat": MAX_ONCHAIN_FEE_SAT,
            "max_feerate_per_kw": MAX_ONCHAIN_FEERATE_PER_KW,
            "destinations": "our wallet (keys below 100), the channel's funding output, the shutdown wallet key, and the one allowlisted address",
            "allowlist": [regtest_address(&allowlisted())],
        },
        "payments": {
            "largest_auto_approved_msat": 100_000_000,
            "max_auto_approve_msat": MAX_AUTO_APPROVE_MSAT,
            "velocity_limit_sat": VELOCITY_LIMIT_SAT,
            "velocity_window_secs": 86_400,
            "max_tracked_invoices": MAX_TRACKED_INVOICES,
            "approval_timeout_secs": 1,
            "invoices": format!("timestamp {INVOICE_TIME}, expiry 100 years (valid whenever replayed); the expired one: timestamp {PAST_TIME}, expiry 1 hour"),
        },
    })
}

/// Every case.
pub fn all() -> Vec<CaseBuilder> {
    let k = Keys::new();
    vec![
        // Our commitments and their revocation.
        revoke_skipping_ahead(&k),
        revoke_latest_commitment(&k),
        revoke_commitment_signed_for_broadcast(&k),
        sign_revoked_holder_commitment(&k),
        validate_skipping_a_commitment_number(&k),
        validate_holder_commitment_giving_us_less(&k),
        validate_holder_commitment_without_the_peers_signature(&k),
        // The peer's commitments and their revocation.
        sign_older_remote_commitment(&k),
        sign_remote_skipping_a_commitment_number(&k),
        sign_remote_before_previous_revoked(&k),
        peer_revocation_with_wrong_secret(&k),
        peer_revocation_out_of_order(&k),
        // Commitment contents.
        commitment_with_absurd_feerate(&k),
        commitment_with_hidden_output(&k),
        commitment_with_oversized_htlc(&k),
        commitment_moving_our_balance_to_the_peer(&k),
        commitment_with_dust_output(&k),
        // Channels.
        sign_for_forgotten_channel(&k),
        sign_for_channel_never_set_up(&k),
        open_channel_with_unsafe_type(&k),
        open_channel_with_absurd_to_self_delay(&k),
        open_channel_above_max_value(&k),
        open_channel_pushing_too_much(&k),
        channeld_message_on_openingd_fd(&k),
        // On chain.
        withdraw_to_unknown_address(&k),
        withdraw_paying_fee_above_cap(&k),
        withdraw_signed_with_sighash_none(&k),
        anchorspend_of_the_funding_output(&k),
        fund_channel_with_legacy_input(&k),
        fund_channel_twice(&k),
        mutual_close_to_unknown_script(&k),
        mutual_close_giving_our_balance_to_the_peer(&k),
        sweep_to_unknown_address(&k),
        sweep_paying_fee_above_cap(&k),
        // Payments.
        pay_expired_invoice(&k),
        pay_unparseable_invoice(&k),
        pay_invoice_over_limit_unapproved(&k),
        pay_amountless_invoice_unapproved(&k),
        keysend_over_limit_unapproved(&k),
        split_payments_over_velocity_limit(&k),
        track_too_many_payments(&k),
        offer_htlc_above_approved_amount(&k),
        keysend_reusing_an_invoice_hash(&k),
        offer_htlc_never_preapproved(&k),
        forward_more_than_offered_to_us(&k),
        forward_expiring_too_late(&k),
        fail_back_a_forward_claimed_downstream(&k),
        setup_channel_again_in_use(&k),
        validate_holder_commitment_with_a_bad_htlc_signature(&k),
    ]
}

/// The node's keys, to build requests with.
struct Keys {
    session: Arc<Session>,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            session: keys_signer().session().expect("initialized"),
        }
    }

    fn wallet(&self, index: u32) -> ScriptBuf {
        let key = self.session.keys.wallet_key(index).expect("wallet key");
        p2wpkh(&key.public_key(SECP256K1))
    }

    /// The standard channel with the peer whose node key is `[peer_byte; 32]`.
    fn channel(&self, peer_byte: u8, dbid: u64, funding: OutPoint) -> Channel {
        Channel::new(
            &self.session.keys,
            peer(peer_byte),
            dbid,
            [peer_byte.wrapping_add(0x40); 32],
            &Opening {
                value_sat: VALUE_SAT,
                push_msat: PUSH_MSAT,
                funding,
                shutdown_wallet_index: SHUTDOWN_WALLET_INDEX,
                remote_shutdown: p2wpkh(&pubkey(peer_byte.wrapping_add(0x20))),
            },
        )
    }
}

fn peer(byte: u8) -> NodeId {
    NodeId::from_pubkey(&pubkey(byte))
}

/// The channel's states, one per commitment number: the opening, then we pay 20 000 sat
/// (HTLC 1 offered, then fulfilled), then the peer pays us 30 000 sat (HTLC 2), then the fee
/// rate rises.
fn history(ch: &Channel) -> Vec<Model> {
    let m0 = ch.opening();
    let m1 = m0.clone().offer(20_000_000, 1);
    let m2 = m1.clone().fulfill(1);
    let m3 = m2.clone().receive(30_000_000, 2);
    let m4 = m3.clone().fulfill(2);
    let m5 = m4.clone().feerate(5_000);
    vec![m0, m1, m2, m3, m4, m5]
}

/// lightningd declares the channel; openingd (its client number returned) sets it up and
/// exchanges commitment 0.
fn open(b: &mut CaseBuilder, ch: &Channel) -> u64 {
    let m0 = ch.opening();
    // The payments the channel's history makes (HTLC 1, and HTLC 4 that some cases offer),
    // preapproved as lightningd's `keysend` does before it offers an HTLC.
    for (id, msat) in [(1, 20_000_000), (4, 200_000)] {
        b.master(PreapproveKeysend::new(
            ch.peer_id,
            chan::hash_of(id),
            AmountMsat::from_msat(msat),
        ));
    }
    b.master(NewChannel::new(ch.peer_id, ch.dbid));
    b.master(GetChannelBasepoints::new(ch.peer_id, ch.dbid));
    let openingd = b.client(ch.peer_id, ch.dbid, Permissions::OPENINGD);
    b.on(openingd, GetPerCommitmentPoint::new(0));
    b.on(openingd, ch.setup_msg());
    b.on(
        openingd,
        ch.sign_remote(0, &ch.build(Owner::Counterparty, 0, &m0)),
    );
    b.on(openingd, ch.validate(0, &ch.build(Owner::Holder, 0, &m0)));
    openingd
}

/// One BOLT 2 round to commitment `n` with state `m`, as the funder who proposes it: we sign
/// the peer's commitment `n`, the peer revokes `n - 1`, we validate our `n` and revoke `n - 1`.
fn round(b: &mut CaseBuilder, c: u64, ch: &Channel, n: u64, m: &Model) {
    b.on(c, ch.sign_remote(n, &ch.build(Owner::Counterparty, n, m)));
    b.on(c, ch.peer_revokes(n - 1));
    b.on(c, ch.validate(n, &ch.build(Owner::Holder, n, m)));
    b.on(c, ch.revoke(n - 1));
}

/// A case whose channel is open, with channeld (its client number returned) through
/// commitment `upto` on both sides, everything before it revoked.
fn opened(
    k: &Keys,
    name: &str,
    description: &str,
    why: &str,
    upto: u64,
) -> (CaseBuilder, Channel, u64) {
    let mut b = CaseBuilder::new(name, description, why);
    let ch = k.channel(
        0x11,
        1,
        OutPoint {
            txid: txid(0xf0),
            vout: 1,
        },
    );
    open(&mut b, &ch);
    let channeld = b.client(ch.peer_id, ch.dbid, Permissions::CHANNELD);
    let h = history(&ch);
    for n in 1..=upto {
        round(&mut b, channeld, &ch, n, &h[n as usize]);
    }
    (b, ch, channeld)
}

/// lightningd restarts channeld after the attack closed it: a new client for the channel.
fn new_channeld(b: &mut CaseBuilder, ch: &Channel) -> u64 {
    let c = b.client(ch.peer_id, ch.dbid, Permissions::CHANNELD);
    b.note(
        "lightningd restarts channeld: a new client for the same channel (replaces the old one)",
    );
    c
}

// --- Our commitments and their revocation ------------------------------------------------

fn revoke_skipping_ahead(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "revoke_skipping_ahead",
        "Our commitment 0 is revoked and 1 is the next to revoke; channeld validates 2, 3 and 4, \
         then asks to reveal the secret of 3, skipping 1 and 2.",
        "Secrets are revealed strictly in order. The secret of commitment 3 (shachain index \
         2^48-4) also derives those of 1 and 2, so skipping ahead reveals secrets of commitments \
         nobody asked to revoke; a signer that loses track of what it revealed can later sign \
         one of them for broadcast, and the peer takes the whole channel with a penalty \
         transaction.",
        1,
    );
    let h = history(&ch);
    for n in 2..=4u64 {
        b.on(
            c,
            ch.sign_remote(n, &ch.build(Owner::Counterparty, n, &h[n as usize])),
        );
        b.on(c, ch.peer_revokes(n - 1));
        b.on(
            c,
            ch.validate(n, &ch.build(Owner::Holder, n, &h[n as usize])),
        );
    }
    b.attack(c, ch.revoke(3), "revoke-in-order");
    let c = new_channeld(&mut b, &ch);
    for n in 1..=3 {
        b.on(c, ch.revoke(n));
    }
    b
}

fn revoke_latest_commitment(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "revoke_latest_commitment",
        "Commitment 1 is our latest validated commitment; channeld asks to revoke it before the \
         peer signed commitment 2. Then the peer goes silent and lightningd closes the channel \
         with commitment 1.",
        "Revealing the secret of our newest commitment leaves us no commitment we can broadcast \
         safely: if the peer then goes silent, closing the channel means broadcasting a revoked \
         commitment, and the peer takes everything with the revealed secret.",
        1,
    );
    b.attack(c, ch.revoke(1), "revoke-superseded-only");
    b.master(ch.sign_holder(1, &ch.build(Owner::Holder, 1, &history(&ch)[1])));
    b.note("the peer goes silent: lightningd closes with commitment 1, still unrevoked");
    b
}

fn revoke_commitment_signed_for_broadcast(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "revoke_commitment_signed_for_broadcast",
        "lightningd had our commitment 1 signed for broadcast (a unilateral close); then \
         channeld goes on with commitment 2 and asks to revoke 1.",
        "A commitment signed for broadcast may already be in the mempool or a block. Revealing \
         its secret lets the peer answer that broadcast with a penalty transaction and take the \
         whole channel.",
        1,
    );
    let h = history(&ch);
    b.master(ch.sign_holder(1, &ch.build(Owner::Holder, 1, &h[1])));
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.on(c, ch.peer_revokes(1));
    b.on(c, ch.validate(2, &ch.build(Owner::Holder, 2, &h[2])));
    b.attack(c, ch.revoke(1), "commitment-holder-not-revoked");
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.revoke(0));
    b.note(
        "the latest revocation again (as after a reconnect): allowed only if 1 is still unrevoked",
    );
    b
}

fn sign_revoked_holder_commitment(k: &Keys) -> CaseBuilder {
    let (mut b, ch, _) = opened(
        k,
        "sign_revoked_holder_commitment",
        "Commitments 0 and 1 are revoked; lightningd asks for commitment 1 to be signed for \
         broadcast (a unilateral close with an old state).",
        "The peer holds the secret of commitment 1: once it is broadcast, the peer sweeps every \
         output of it with the revocation key, our balance included.",
        2,
    );
    let h = history(&ch);
    b.attack(
        0,
        ch.sign_holder(1, &ch.build(Owner::Holder, 1, &h[1])),
        "commitment-holder-not-revoked",
    );
    b
}

fn validate_skipping_a_commitment_number(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "validate_skipping_a_commitment_number",
        "Our latest validated commitment is 1; channeld presents commitment 3 as the peer's \
         signed next state.",
        "Commitment numbers advance one by one. Accepting 3 right after 1 would make \
         commitment 2, never seen, count as superseded: the signer would reveal secrets for \
         commitments it never validated, and its balance history, which every later commitment \
         is checked against, would skip a state.",
        1,
    );
    let h = history(&ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.on(c, ch.peer_revokes(1));
    b.attack(
        c,
        ch.validate(3, &ch.build(Owner::Holder, 3, &h[3])),
        "commitment-number-monotonic",
    );
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.validate(2, &ch.build(Owner::Holder, 2, &h[2])));
    b.on(c, ch.revoke(1));
    b
}

fn validate_holder_commitment_giving_us_less(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "validate_holder_commitment_giving_us_less",
        "The peer's signature on our commitment 2 comes with a transaction that moves 100 000 sat \
         from our to_local output to the peer's to_remote, with no HTLC to explain it.",
        "Once we revoke commitment 1, this would be the only commitment we can broadcast: the \
         peer has taken 100 000 sat of ours.",
        1,
    );
    let h = history(&ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.on(c, ch.peer_revokes(1));
    let s = ch.scripts(Owner::Holder, 2);
    let short = ch
        .build(Owner::Holder, 2, &h[2])
        .shift(&s.ours, &s.theirs, 100_000);
    b.attack(c, ch.validate(2, &short), "commitment-balance");
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.validate(2, &ch.build(Owner::Holder, 2, &h[2])));
    b.on(c, ch.revoke(1));
    b
}

fn validate_holder_commitment_without_the_peers_signature(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "validate_holder_commitment_without_the_peers_signature",
        "Our commitment 2 comes to be validated with a signature that is the peer's, but made \
         over another transaction (one that gives the peer 100 000 sat of ours); afterwards with \
         the peer's signature over commitment 2 itself.",
        "A commitment we cannot broadcast is no commitment: validated on a bad signature, it \
         lets channeld revoke commitment 1 next, and we are left with no valid state but a \
         revoked one. The peer then holds our whole balance hostage, or takes it when we \
         broadcast the revoked state.",
        1,
    );
    let h = history(&ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.on(c, ch.peer_revokes(1));
    let good = ch.build(Owner::Holder, 2, &h[2]);
    let s = ch.scripts(Owner::Holder, 2);
    let other = good.clone().shift(&s.ours, &s.theirs, 100_000);
    let Message::ValidateCommitmentTx(mut forged) = ch.validate(2, &good) else {
        unreachable!("validate builds a ValidateCommitmentTx")
    };
    let Message::ValidateCommitmentTx(for_other) = ch.validate(2, &other) else {
        unreachable!("validate builds a ValidateCommitmentTx")
    };
    forged.sig = for_other.sig;
    b.attack(c, forged, "commitment-signed-by-peer");
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.validate(2, &good));
    b.on(c, ch.revoke(1));
    b
}

// --- The peer's commitments and their revocation ----------------------------------------

fn sign_older_remote_commitment(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "sign_older_remote_commitment",
        "The peer's commitments 0 and 1 are revoked and 2 is current; channeld asks for another \
         version of commitment 1, in which the 20 000 sat HTLC we offered is already the peer's.",
        "A second signature for an old commitment number gives the peer a valid transaction our \
         node and watchtowers never saw, with balances of the peer's choosing; the signer never \
         signs backwards.",
        2,
    );
    let h = history(&ch);
    b.attack(
        c,
        ch.sign_remote(1, &ch.build(Owner::Counterparty, 1, &h[2])),
        "commitment-number-monotonic",
    );
    let c = new_channeld(&mut b, &ch);
    round(&mut b, c, &ch, 3, &h[3]);
    b
}

fn sign_remote_skipping_a_commitment_number(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "sign_remote_skipping_a_commitment_number",
        "The peer's latest signed commitment is 1; channeld asks for a signature on its \
         commitment 3.",
        "Counterparty commitments advance one by one and each is revoked before the one after \
         next is signed. Skipping a number leaves the peer a valid commitment outside that \
         sequence, never to be revoked, which it can broadcast whenever it pays it more.",
        1,
    );
    let h = history(&ch);
    b.attack(
        c,
        ch.sign_remote(3, &ch.build(Owner::Counterparty, 3, &h[3])),
        "commitment-number-monotonic",
    );
    let c = new_channeld(&mut b, &ch);
    round(&mut b, c, &ch, 2, &h[2]);
    b
}

fn sign_remote_before_previous_revoked(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "sign_remote_before_previous_revoked",
        "We signed the peer's commitment 2, but the peer never revoked 1; channeld asks for a \
         signature on commitment 3.",
        "With commitment 1 unrevoked the peer would hold three valid commitments (1, 2, 3) and \
         broadcast the one that pays it most, e.g. the one from before it paid us an HTLC; only \
         revoked commitments can be punished.",
        1,
    );
    let h = history(&ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.attack(
        c,
        ch.sign_remote(3, &ch.build(Owner::Counterparty, 3, &h[3])),
        "commitment-previous-revoked",
    );
    let c = new_channeld(&mut b, &ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.note("after the reconnect channeld retransmits commitment 2, the latest it signed");
    b.on(c, ch.peer_revokes(1));
    b.on(c, ch.validate(2, &ch.build(Owner::Holder, 2, &h[2])));
    b.on(c, ch.revoke(1));
    b.on(
        c,
        ch.sign_remote(3, &ch.build(Owner::Counterparty, 3, &h[3])),
    );
    b
}

fn peer_revocation_with_wrong_secret(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "peer_revocation_with_wrong_secret",
        "We signed the peer's commitment 2; its revocation of commitment 1 carries the secret of \
         commitment 2 instead.",
        "Taking a wrong secret as the revocation of commitment 1 would let the signer sign \
         commitment 3 as if 1 were revoked; the peer then broadcasts 1 and we hold no secret to \
         punish it with.",
        1,
    );
    let h = history(&ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    let wrong = ch.peer.per_commitment_secret(2).expect("in range");
    b.attack(
        c,
        ch.peer_revokes_with(1, wrong),
        "revocation-secret-matches",
    );
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.peer_revokes(1));
    b.on(c, ch.validate(2, &ch.build(Owner::Holder, 2, &h[2])));
    b.on(c, ch.revoke(1));
    b
}

fn peer_revocation_out_of_order(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "peer_revocation_out_of_order",
        "We signed the peer's commitment 2 and 1 is next to be revoked; channeld presents the \
         (genuine) secret of commitment 2 instead.",
        "Counting 2 as revoked would mark 1 revoked too, though its secret never came: the \
         signer would then sign commitment 4, and the peer could broadcast commitment 1, which \
         pays it more, without any penalty.",
        1,
    );
    let h = history(&ch);
    b.on(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
    );
    b.attack(c, ch.peer_revokes(2), "revoke-in-order");
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.peer_revokes(1));
    b.on(c, ch.validate(2, &ch.build(Owner::Holder, 2, &h[2])));
    b.on(c, ch.revoke(1));
    b
}

// --- Commitment contents -----------------------------------------------------------------

/// A content attack on the peer's commitment 2: `attack` is what channeld asks us to sign;
/// afterwards the honest commitment 2 (`m`) is signed, then the round completes.
fn content_attack(
    k: &Keys,
    name: &str,
    description: &str,
    why: &str,
    rule: &'static str,
    attack: impl Fn(&Channel) -> chan::Built,
    honest: impl Fn(&Channel) -> Model,
) -> CaseBuilder {
    let (mut b, ch, c) = opened(k, name, description, why, 1);
    b.attack(c, ch.sign_remote(2, &attack(&ch)), rule);
    let c = new_channeld(&mut b, &ch);
    round(&mut b, c, &ch, 2, &honest(&ch));
    b
}

fn commitment_with_absurd_feerate(k: &Keys) -> CaseBuilder {
    content_attack(
        k,
        "commitment_with_absurd_feerate",
        "channeld asks for a signature on the peer's commitment 2 at 80 000 sat/kw (the \
         operator allows at most 50 000), built correctly for that fee rate.",
        "We fund the channel, so the commitment fee comes out of our balance: at 80 000 sat/kw \
         it is about 90 000 sat, burnt to miners (a miner the attacker works with) when the \
         commitment confirms.",
        "commitment-feerate",
        |ch| {
            ch.build(
                Owner::Counterparty,
                2,
                &history(ch)[2].clone().feerate(80_000),
            )
        },
        |ch| history(ch)[2].clone(),
    )
}

fn commitment_with_hidden_output(k: &Keys) -> CaseBuilder {
    content_attack(
        k,
        "commitment_with_hidden_output",
        "The peer's commitment 2 takes 50 000 sat from our output and adds an output paying \
         them to the attacker's address; the request lists no HTLC for it.",
        "Every output of a commitment must be a balance, an anchor or a listed HTLC; this one \
         pays 50 000 sat of ours to a stranger when the commitment confirms.",
        "commitment-htlc-limits",
        |ch| {
            let s = ch.scripts(Owner::Counterparty, 2);
            ch.build(Owner::Counterparty, 2, &history(ch)[2])
                .take(&s.ours, 50_000)
                .push_output(50_000, attacker())
        },
        |ch| history(ch)[2].clone(),
    )
}

fn commitment_with_oversized_htlc(k: &Keys) -> CaseBuilder {
    content_attack(
        k,
        "commitment_with_oversized_htlc",
        "The peer's commitment 2 carries an HTLC of 600 000 sat that we offer (the operator \
         allows at most 500 000 sat per HTLC).",
        "The operator caps what one HTLC may carry: a compromised node moving 600 000 sat to the \
         peer in one HTLC loses it all as soon as the peer claims it with the preimage.",
        "commitment-htlc-limits",
        |ch| {
            ch.build(
                Owner::Counterparty,
                2,
                &history(ch)[2].clone().offer(600_000_000, 3),
            )
        },
        |ch| history(ch)[2].clone(),
    )
}

fn commitment_moving_our_balance_to_the_peer(k: &Keys) -> CaseBuilder {
    content_attack(
        k,
        "commitment_moving_our_balance_to_the_peer",
        "The peer's commitment 2 moves 100 000 sat from our output to the peer's, with no HTLC \
         to explain it.",
        "A plain theft: the peer broadcasts this commitment (or keeps it as its latest state) \
         and has 100 000 sat of ours.",
        "commitment-balance",
        |ch| {
            let s = ch.scripts(Owner::Counterparty, 2);
            ch.build(Owner::Counterparty, 2, &history(ch)[2])
                .shift(&s.ours, &s.theirs, 100_000)
        },
        |ch| history(ch)[2].clone(),
    )
}

fn commitment_with_dust_output(k: &Keys) -> CaseBuilder {
    content_attack(
        k,
        "commitment_with_dust_output",
        "We offer a 200 sat HTLC; the peer's commitment 2 keeps it as a 200 sat output, as \
         with a dust limit of 100 sat. Afterwards the same state with the HTLC trimmed (dust \
         limit 546) is signed.",
        "Outputs that small are below Bitcoin Core's dust threshold: the commitment does not \
         relay, so it cannot be broadcast when the channel has to be closed, and what it \
         protects cannot be enforced on chain.",
        "channel-dust-limit",
        |ch| {
            let m = history(ch)[2].clone().offer(200_000, 4);
            ch.build_with_dust(Owner::Counterparty, 2, &m, 100)
        },
        |ch| history(ch)[2].clone().offer(200_000, 4),
    )
}

// --- Channels ----------------------------------------------------------------------------

fn sign_for_forgotten_channel(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "sign_for_forgotten_channel",
        "Two channels are open; lightningd forgets the first (closed and resolved), then that \
         channel's channeld asks for a signature on a new commitment. The second channel goes \
         on.",
        "A forgotten channel is closed and its funds swept. A new commitment signature for its \
         funding output would give the peer a transaction spending it on terms the signer no \
         longer checks (a close that is not final yet can still be replaced).",
        1,
    );
    let other = k.channel(
        0x12,
        2,
        OutPoint {
            txid: txid(0xf1),
            vout: 0,
        },
    );
    open(&mut b, &other);
    let other_channeld = b.client(other.peer_id, other.dbid, Permissions::CHANNELD);
    b.master(ForgetChannel::new(ch.peer_id, ch.dbid));
    let h = history(&ch);
    b.attack(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &h[2])),
        "channel-known",
    );
    round(&mut b, other_channeld, &other, 1, &history(&other)[1]);
    b
}

fn sign_for_channel_never_set_up(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "sign_for_channel_never_set_up",
        "lightningd declares a channel and hands its channeld a client; channeld asks for a \
         commitment signature before any setup_channel. Then the channel is set up properly.",
        "Without setup_channel the signer knows nothing of the channel (value, funding \
         outpoint, keys, type, delays): none of the commitment rules can run, so signing would \
         bypass every one of them.",
    );
    let ch = k.channel(
        0x11,
        1,
        OutPoint {
            txid: txid(0xf0),
            vout: 1,
        },
    );
    let m0 = ch.opening();
    // The payments the channel's history makes (HTLC 1, and HTLC 4 that some cases offer),
    // preapproved as lightningd's `keysend` does before it offers an HTLC.
    for (id, msat) in [(1, 20_000_000), (4, 200_000)] {
        b.master(PreapproveKeysend::new(
            ch.peer_id,
            chan::hash_of(id),
            AmountMsat::from_msat(msat),
        ));
    }
    b.master(NewChannel::new(ch.peer_id, ch.dbid));
    let c = b.client(ch.peer_id, ch.dbid, Permissions::CHANNELD);
    b.attack(
        c,
        ch.sign_remote(0, &ch.build(Owner::Counterparty, 0, &m0)),
        "channel-known",
    );
    let o = b.client(ch.peer_id, ch.dbid, Permissions::OPENINGD);
    b.on(o, ch.setup_msg());
    b.on(o, ch.sign_remote(0, &ch.build(Owner::Counterparty, 0, &m0)));
    b.on(o, ch.validate(0, &ch.build(Owner::Holder, 0, &m0)));
    b
}

/// An attack on `setup_channel` (openingd); afterwards the honest setup and commitment 0.
fn setup_attack(
    k: &Keys,
    name: &str,
    description: &str,
    why: &str,
    rule: &'static str,
    change: impl Fn(&mut SetupChannel),
) -> CaseBuilder {
    let mut b = CaseBuilder::new(name, description, why);
    let ch = k.channel(
        0x11,
        1,
        OutPoint {
            txid: txid(0xf0),
            vout: 1,
        },
    );
    let m0 = ch.opening();
    // The payments the channel's history makes (HTLC 1, and HTLC 4 that some cases offer),
    // preapproved as lightningd's `keysend` does before it offers an HTLC.
    for (id, msat) in [(1, 20_000_000), (4, 200_000)] {
        b.master(PreapproveKeysend::new(
            ch.peer_id,
            chan::hash_of(id),
            AmountMsat::from_msat(msat),
        ));
    }
    b.master(NewChannel::new(ch.peer_id, ch.dbid));
    let o = b.client(ch.peer_id, ch.dbid, Permissions::OPENINGD);
    b.on(o, GetPerCommitmentPoint::new(0));
    let mut bad = ch.setup.clone();
    change(&mut bad);
    b.attack(o, bad, rule);
    let o = b.client(ch.peer_id, ch.dbid, Permissions::OPENINGD);
    b.note("the next attempt to open the channel, with a new openingd");
    b.on(o, ch.setup_msg());
    b.on(o, ch.sign_remote(0, &ch.build(Owner::Counterparty, 0, &m0)));
    b.on(o, ch.validate(0, &ch.build(Owner::Holder, 0, &m0)));
    b
}

fn open_channel_with_unsafe_type(k: &Keys) -> CaseBuilder {
    setup_attack(
        k,
        "open_channel_with_unsafe_type",
        "openingd sets up a channel of type option_static_remotekey + option_anchor_outputs \
         (bits 12 and 20).",
        "With option_anchor_outputs each HTLC transaction pays its own fee out of the HTLC \
         amount, and our signatures on the peer's are SIGHASH_SINGLE|ANYONECANPAY: the peer can \
         batch them into one transaction and add an output that pockets their fees (fee \
         siphoning). Zero-fee HTLC anchors (bit 22) replaced it; only those and \
         static_remotekey channels are safe.",
        "channel-safe-type",
        |s| {
            s.channel_type = ChannelType::from_bits(&[
                ChannelType::STATIC_REMOTEKEY,
                ChannelType::ANCHOR_OUTPUTS,
            ])
        },
    )
}

fn open_channel_with_absurd_to_self_delay(k: &Keys) -> CaseBuilder {
    setup_attack(
        k,
        "open_channel_with_absurd_to_self_delay",
        "openingd sets up a channel in which the peer makes us wait 60 000 blocks (over a \
         year) for our own funds after a unilateral close (the operator allows 144..=2016).",
        "Whenever we have to close unilaterally, our balance is locked for over a year: a \
         ransom lever for the peer, and funds the operator cannot use.",
        "channel-to-self-delay",
        |s| s.remote_to_self_delay = 60_000,
    )
}

fn open_channel_above_max_value(k: &Keys) -> CaseBuilder {
    setup_attack(
        k,
        "open_channel_above_max_value",
        "openingd sets up a channel of 20 000 000 sat (the operator allows at most 5 000 000).",
        "The operator caps what one channel, and so one peer, can hold: a compromised node \
         putting 0.2 BTC into one channel with a peer of the attacker's choice concentrates the \
         funds where a single dishonest peer can lock them up in a dispute or take them through \
         any flaw.",
        "channel-max-value",
        |s| s.channel_value = Amount::from_sat(20_000_000),
    )
}

fn open_channel_pushing_too_much(k: &Keys) -> CaseBuilder {
    setup_attack(
        k,
        "open_channel_pushing_too_much",
        "openingd sets up a channel we fund with 1 000 000 sat that pushes 900 000 sat to the \
         peer at opening (the operator allows pushes of at most 200 000 sat).",
        "A push is a payment to the peer without an invoice, preapproval or velocity check: a \
         compromised node opens a channel to the attacker's node pushing it the whole channel, \
         and the attacker closes it.",
        "channel-push-limit",
        |s| s.push_value = AmountMsat::from_msat(900_000_000),
    )
}

fn channeld_message_on_openingd_fd(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "channeld_message_on_openingd_fd",
        "openingd (permissions COMMITMENT_POINT | SIGN_REMOTE_TX) asks for a splice signature, \
         which only channeld may ask for. Core Lightning's hsmd refuses it as well.",
        "A subdaemon gets only what its job needs: a compromised openingd with a splice \
         signature could spend the channel's funding output into a transaction of its choice.",
    );
    let ch = k.channel(
        0x11,
        1,
        OutPoint {
            txid: txid(0xf0),
            vout: 1,
        },
    );
    let openingd = open(&mut b, &ch);
    let splice = {
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: ch.setup.funding_txid,
                    vout: u32::from(ch.setup.funding_txout),
                },
                sequence: Sequence::MAX,
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(VALUE_SAT - 1_000),
                script_pubkey: attacker(),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).expect("unsigned");
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(VALUE_SAT),
            script_pubkey: ch.funding_spk(),
        });
        SignSpliceTx::new(
            BitcoinTx {
                tx,
                psbt: psbt.into(),
            },
            ch.setup.remote_funding_pubkey,
            0,
        )
    };
    b.attack(openingd, splice, "permission");
    let c = b.client(ch.peer_id, ch.dbid, Permissions::CHANNELD);
    round(&mut b, c, &ch, 1, &history(&ch)[1]);
    b
}

// --- On chain ----------------------------------------------------------------------------

/// A wallet UTXO of `sat` at wallet key `index`, in the transaction `[byte; 32]`.
fn utxo(k: &Keys, byte: u8, sat: u64, index: u32) -> HsmUtxo {
    HsmUtxo {
        txid: txid(byte),
        vout: 0,
        amount: Amount::from_sat(sat),
        keyindex: index,
        legacy_is_p2sh: false,
        script_pubkey: k.wallet(index),
        close_info: None,
        legacy_is_in_coinbase: false,
    }
}

/// `sign_withdrawal` of `utxos` paying `outputs`.
fn withdrawal(utxos: Vec<HsmUtxo>, outputs: Vec<(u64, ScriptBuf)>) -> SignWithdrawal {
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: utxos
            .iter()
            .map(|u| TxIn {
                previous_output: OutPoint {
                    txid: u.txid,
                    vout: u.vout,
                },
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            })
            .collect(),
        output: outputs
            .into_iter()
            .map(|(sat, spk)| TxOut {
                value: Amount::from_sat(sat),
                script_pubkey: spk,
            })
            .collect(),
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("unsigned");
    for (i, u) in utxos.iter().enumerate() {
        psbt.inputs[i].witness_utxo = Some(TxOut {
            value: u.amount,
            script_pubkey: u.script_pubkey.clone(),
        });
    }
    SignWithdrawal::new(utxos, psbt.into())
}

fn withdraw_to_unknown_address(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "withdraw_to_unknown_address",
        "lightningd withdraws to the operator's allowlisted address (with change to the wallet) \
         and consolidates to the wallet; then it withdraws 499 000 sat to an address that is \
         neither.",
        "lightningd chooses where withdrawals go: a compromised node empties the wallet to the \
         attacker. Only the wallet, channel funding outputs and the operator's allowlist may be \
         paid.",
    );
    b.master(withdrawal(
        vec![utxo(k, 0xa1, 500_000, 3)],
        vec![(300_000, allowlisted()), (199_000, k.wallet(4))],
    ));
    b.master(withdrawal(
        vec![utxo(k, 0xa2, 200_000, 8)],
        vec![(199_500, k.wallet(9))],
    ));
    b.attack(
        0,
        withdrawal(
            vec![utxo(k, 0xa3, 500_000, 10)],
            vec![(499_000, attacker())],
        ),
        "onchain-destination-allowlisted",
    );
    b
}

fn withdraw_signed_with_sighash_none(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "withdraw_signed_with_sighash_none",
        "lightningd consolidates a wallet output to the wallet; then it asks for the same kind \
         of withdrawal with its input marked SIGHASH_NONE|ANYONECANPAY.",
        "A signature with SIGHASH_NONE commits to no output: once the signer has signed a \
         withdrawal that looks harmless, the node replaces its outputs with its own and \
         broadcasts the wallet's coins to the attacker. Our inputs are signed with SIGHASH_ALL \
         only.",
    );
    b.master(withdrawal(
        vec![utxo(k, 0xa1, 500_000, 3)],
        vec![(499_000, k.wallet(4))],
    ));
    let mut attack = withdrawal(
        vec![utxo(k, 0xa2, 500_000, 5)],
        vec![(499_000, k.wallet(6))],
    );
    attack.psbt.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from_u32(0x82));
    b.attack(0, attack, "onchain-sighash-all");
    b
}

/// `sign_anchorspend` for channel `ch`, with wallet UTXO `u`: input 0 is the channel's anchor
/// (or, with `funding`, its 2-of-2 funding output), named with the channel's funding key as
/// lightningd names it; input 1 is `u`; everything goes back to the wallet less a fee.
fn anchorspend(k: &Keys, ch: &Channel, u: HsmUtxo, funding: bool) -> SignAnchorspend {
    let funding_pubkey = ch.ours.basepoints().funding_pubkey;
    let (outpoint, sat, witness_script) = if funding {
        let outpoint = OutPoint {
            txid: ch.setup.funding_txid,
            vout: u32::from(ch.setup.funding_txout),
        };
        (
            outpoint,
            ch.setup.channel_value.to_sat(),
            ch.funding_script(),
        )
    } else {
        let anchor = OutPoint {
            txid: txid(0xe7),
            vout: 0,
        };
        (anchor, 330, signer::bolt3::anchor_script(&funding_pubkey))
    };
    let wallet_in = OutPoint {
        txid: u.txid,
        vout: u.vout,
    };
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: [outpoint, wallet_in]
            .into_iter()
            .map(|previous_output| TxIn {
                previous_output,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            })
            .collect(),
        output: vec![TxOut {
            value: Amount::from_sat(sat + u.amount.to_sat() - 2_000),
            script_pubkey: k.wallet(20),
        }],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("unsigned");
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(sat),
        script_pubkey: ScriptBuf::new_p2wsh(&witness_script.wscript_hash()),
    });
    psbt.inputs[0].witness_script = Some(witness_script);
    psbt.inputs[0].bip32_derivation.insert(
        funding_pubkey,
        (
            bitcoin::bip32::Fingerprint::default(),
            Vec::<bitcoin::bip32::ChildNumber>::new().into(),
        ),
    );
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: u.amount,
        script_pubkey: u.script_pubkey.clone(),
    });
    SignAnchorspend::new(ch.peer_id, ch.dbid, vec![u], psbt.into())
}

fn anchorspend_of_the_funding_output(k: &Keys) -> CaseBuilder {
    let (mut b, ch, _) = opened(
        k,
        "anchorspend_of_the_funding_output",
        "The channel is open; lightningd bumps its commitment's fee by spending the channel's \
         anchor with a wallet UTXO; then it asks for the same kind of anchor spend whose first \
         input is the channel's 2-of-2 funding output.",
        "The channel's funding key signs both its anchor and our half of the 2-of-2 funding \
         output. A signature on the funding output, with the peer's (a colluding peer, or the \
         node's own copy of the peer's signature on a commitment), spends the whole channel: \
         sign_anchorspend may sign the anchor only.",
        1,
    );
    b.master(anchorspend(k, &ch, utxo(k, 0xb1, 50_000, 11), false));
    b.attack(
        0,
        anchorspend(k, &ch, utxo(k, 0xb2, 50_000, 12), true),
        "anchorspend-anchor-only",
    );
    b
}

fn withdraw_paying_fee_above_cap(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "withdraw_paying_fee_above_cap",
        "lightningd withdraws to the allowlisted address with a 1 000 sat fee; then to the same \
         address with an 80 000 sat fee (the operator allows at most 50 000).",
        "Fees go to miners: a compromised node (or one colluding with a miner) burns the wallet \
         through fees without paying anyone the operator knows.",
    );
    b.master(withdrawal(
        vec![utxo(k, 0xa1, 500_000, 3)],
        vec![(300_000, allowlisted()), (199_000, k.wallet(4))],
    ));
    b.attack(
        0,
        withdrawal(
            vec![utxo(k, 0xa2, 500_000, 8)],
            vec![(300_000, allowlisted()), (120_000, k.wallet(9))],
        ),
        "onchain-fee-cap",
    );
    b
}

fn fund_channel_with_legacy_input(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "fund_channel_with_legacy_input",
        "A channel's funding transaction spends our wallet UTXO and a P2PKH (legacy) output \
         the attacker contributed; the channel is set up with that funding txid and its first \
         commitments exchanged; then lightningd asks for our signature on the funding \
         transaction.",
        "A legacy input's signature is part of the txid: its owner can re-sign it and change \
         the funding txid after we signed, which invalidates every commitment transaction we \
         hold. Our 1 000 000 sat would then sit in a 2-of-2 output that only the peer's \
         cooperation can release.",
    );
    // The attacker's legacy output.
    let prev = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: txid(0xb0),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: ScriptBuf::new_p2pkh(
                &bitcoin::PublicKey::new(pubkey(0x66)).pubkey_hash(),
            ),
        }],
    };
    let ours = utxo(k, 0xa4, 1_500_000, 3);
    let placeholder = k.channel(
        0x11,
        1,
        OutPoint {
            txid: txid(0),
            vout: 0,
        },
    );
    let funding_tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![
            TxIn {
                previous_output: OutPoint {
                    txid: ours.txid,
                    vout: 0,
                },
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            },
            TxIn {
                previous_output: OutPoint {
                    txid: prev.compute_txid(),
                    vout: 0,
                },
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            },
        ],
        output: vec![
            TxOut {
                value: Amount::from_sat(VALUE_SAT),
                script_pubkey: placeholder.funding_spk(),
            },
            TxOut {
                value: Amount::from_sat(599_000),
                script_pubkey: k.wallet(4),
            },
        ],
    };
    let ch = k.channel(
        0x11,
        1,
        OutPoint {
            txid: funding_tx.compute_txid(),
            vout: 0,
        },
    );
    open(&mut b, &ch);
    let mut psbt = Psbt::from_unsigned_tx(funding_tx).expect("unsigned");
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: ours.amount,
        script_pubkey: ours.script_pubkey.clone(),
    });
    psbt.inputs[1].non_witness_utxo = Some(prev);
    b.attack(
        0,
        SignWithdrawal::new(vec![ours], psbt.into()),
        "funding-segwit-only",
    );
    b
}

fn fund_channel_twice(k: &Keys) -> CaseBuilder {
    let mut b = CaseBuilder::new(
        "fund_channel_twice",
        "A channel is set up with the funding transaction that spends our wallet UTXO and pays \
         the channel's 1 000 000 sat 2-of-2, its first commitments are exchanged and the funding \
         transaction is signed; then lightningd asks for our signature on another transaction \
         paying 1 400 000 sat to the same 2-of-2.",
        "The 2-of-2's remote key is the peer's, chosen through the compromised node: value paid \
         to it beyond the channel (a second funding, or more than the channel value) is in no \
         commitment we hold, and only the peer can spend it. A channel is funded once, with \
         exactly its value, at the outpoint it was set up with.",
    );
    let ours = utxo(k, 0xa5, 1_500_000, 3);
    let placeholder = k.channel(
        0x11,
        1,
        OutPoint {
            txid: txid(0),
            vout: 0,
        },
    );
    let funding = withdrawal(
        vec![ours],
        vec![
            (VALUE_SAT, placeholder.funding_spk()),
            (499_000, k.wallet(4)),
        ],
    );
    let ch = k.channel(
        0x11,
        1,
        OutPoint {
            txid: funding.psbt.unsigned_tx.compute_txid(),
            vout: 0,
        },
    );
    open(&mut b, &ch);
    b.master(funding);
    b.attack(
        0,
        withdrawal(
            vec![utxo(k, 0xa6, 1_500_000, 6)],
            vec![(1_400_000, ch.funding_spk()), (99_000, k.wallet(7))],
        ),
        "funding-output-exact",
    );
    b
}

/// The channel of `opened(.., 2)` closed by us unilaterally with commitment 2, and an
/// onchaind for it.
fn unilateral_close(
    k: &Keys,
    name: &str,
    description: &str,
    why: &str,
) -> (CaseBuilder, Channel, chan::Built, u64) {
    let (mut b, ch, _) = opened(k, name, description, why, 2);
    let commitment = ch.build(Owner::Holder, 2, &history(&ch)[2]);
    b.master(ch.sign_holder(2, &commitment));
    b.note("lightningd closes the channel unilaterally with our latest commitment");
    let onchaind = b.client(ch.peer_id, ch.dbid, Permissions::ONCHAIND);
    (b, ch, commitment, onchaind)
}

fn sweep_to_unknown_address(k: &Keys) -> CaseBuilder {
    let (mut b, ch, commitment, onchaind) = unilateral_close(
        k,
        "sweep_to_unknown_address",
        "After our unilateral close with commitment 2, onchaind sweeps our delayed to_local \
         output to an address that is neither our wallet nor allowlisted; afterwards to the \
         wallet.",
        "onchaind chooses where swept funds go: a compromised onchaind sends our whole channel \
         balance to the attacker.",
    );
    b.attack(
        onchaind,
        ch.sweep_to_local(2, &commitment, &attacker(), 1_000),
        "onchain-destination-allowlisted",
    );
    let onchaind = b.client(ch.peer_id, ch.dbid, Permissions::ONCHAIND);
    b.note("lightningd restarts onchaind");
    b.on(
        onchaind,
        ch.sweep_to_local(2, &commitment, &k.wallet(SWEEP_WALLET_INDEX), 1_000),
    );
    b
}

fn sweep_paying_fee_above_cap(k: &Keys) -> CaseBuilder {
    let (mut b, ch, commitment, onchaind) = unilateral_close(
        k,
        "sweep_paying_fee_above_cap",
        "After our unilateral close, onchaind sweeps our to_local output to the wallet with a \
         60 000 sat fee (the operator allows 50 000); afterwards with 1 000 sat.",
        "The fee is taken from our balance and goes to miners: a compromised onchaind (or one \
         colluding with a miner) burns our balance.",
    );
    let wallet = k.wallet(SWEEP_WALLET_INDEX);
    b.attack(
        onchaind,
        ch.sweep_to_local(2, &commitment, &wallet, 60_000),
        "onchain-fee-cap",
    );
    let onchaind = b.client(ch.peer_id, ch.dbid, Permissions::ONCHAIND);
    b.note("lightningd restarts onchaind");
    b.on(onchaind, ch.sweep_to_local(2, &commitment, &wallet, 1_000));
    b
}

fn mutual_close_to_unknown_script(k: &Keys) -> CaseBuilder {
    let (mut b, ch, _) = opened(
        k,
        "mutual_close_to_unknown_script",
        "At commitment 2 the channel is closed cooperatively; closingd's closing transaction \
         pays our side to the attacker's address instead of our shutdown script (wallet key 5, \
         given at setup). Afterwards the honest closing transaction.",
        "Our side of a mutual close is our whole channel balance: paid anywhere but the \
         shutdown script agreed at setup, it is gone.",
        2,
    );
    let m = &history(&ch)[2];
    let fee = 1_000;
    let ours = m.ours_msat / 1000 - fee;
    let theirs = m.theirs_msat / 1000;
    let closingd = b.client(ch.peer_id, ch.dbid, Permissions::CLOSINGD);
    b.attack(
        closingd,
        ch.sign_close(ch.close_tx(ours, &attacker(), theirs)),
        "onchain-destination-allowlisted",
    );
    let closingd = b.client(ch.peer_id, ch.dbid, Permissions::CLOSINGD);
    b.note("lightningd restarts closingd");
    b.on(
        closingd,
        ch.sign_close(ch.close_tx(ours, &k.wallet(SHUTDOWN_WALLET_INDEX), theirs)),
    );
    b
}

fn mutual_close_giving_our_balance_to_the_peer(k: &Keys) -> CaseBuilder {
    let (mut b, ch, _) = opened(
        k,
        "mutual_close_giving_our_balance_to_the_peer",
        "At commitment 2 the channel is closed cooperatively; closingd's closing transaction \
         pays our shutdown script 1 000 sat and the rest of our balance to the peer's. \
         Afterwards the honest closing transaction.",
        "Both outputs go where they should, yet our balance is the peer's: a mutual close must \
         give us what the latest commitments give us, less at most the closing fee.",
        2,
    );
    let m = &history(&ch)[2];
    let fee = 1_000;
    let ours = m.ours_msat / 1000 - fee;
    let theirs = m.theirs_msat / 1000;
    let shutdown = k.wallet(SHUTDOWN_WALLET_INDEX);
    let closingd = b.client(ch.peer_id, ch.dbid, Permissions::CLOSINGD);
    b.attack(
        closingd,
        ch.sign_close(ch.close_tx(1_000, &shutdown, theirs + ours - 1_000)),
        "close-balance",
    );
    let closingd = b.client(ch.peer_id, ch.dbid, Permissions::CLOSINGD);
    b.note("lightningd restarts closingd");
    b.on(
        closingd,
        ch.sign_close(ch.close_tx(ours, &shutdown, theirs)),
    );
    b
}

// --- Payments ----------------------------------------------------------------------------

/// A BOLT 11 regtest invoice of the payee `[0x33; 32]`, for `msat` (or any amount), with the
/// payment hash SHA256(`label`).
fn invoice(label: &str, msat: Option<u64>, timestamp: u64, expiry_secs: u64) -> String {
    let payee = SecretKey::from_slice(&[0x33; 32]).expect("key");
    let b = InvoiceBuilder::new(Currency::Regtest)
        .description(format!("attack corpus: {label}"))
        .payment_hash(payment_hash(label))
        .payment_secret(PaymentSecret([0x5e; 32]))
        .duration_since_epoch(Duration::from_secs(timestamp))
        .expiry_time(Duration::from_secs(expiry_secs))
        .min_final_cltv_expiry_delta(18);
    let b = match msat {
        Some(a) => b.amount_milli_satoshis(a),
        None => b,
    };
    b.build_signed(|h| SECP256K1.sign_ecdsa_recoverable(h, &payee))
        .expect("invoice")
        .to_string()
}

fn payment_hash(label: &str) -> sha256::Hash {
    sha256::Hash::hash(label.as_bytes())
}

/// A valid invoice (expiring in 100 years).
fn valid(label: &str, sat: u64) -> PreapproveInvoice {
    PreapproveInvoice::new(WireString::from(
        invoice(label, Some(sat * 1000), INVOICE_TIME, FAR_EXPIRY_SECS).as_str(),
    ))
}

fn keysend(label: &str, sat: u64) -> PreapproveKeysend {
    PreapproveKeysend::new(
        peer(0x33),
        payment_hash(label),
        AmountMsat::from_msat(sat * 1000),
    )
}

fn payments_case(name: &str, description: &str, why: &str) -> CaseBuilder {
    CaseBuilder::new(name, description, why)
}

fn pay_expired_invoice(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "pay_expired_invoice",
        "lightningd preapproves a valid 90 000 sat invoice, then one of 90 000 sat that expired \
         in 2020, then another valid one of 90 000 sat (within the 250 000 sat velocity limit \
         only if the expired one was not counted).",
        "The payee may no longer honour an expired invoice (its preimage may be known to \
         others, or the order cancelled): paying it can lose the amount without getting what \
         was paid for.",
    );
    b.master(valid("coffee", 90_000));
    let expired = invoice("expired", Some(90_000_000), PAST_TIME, 3600);
    b.attack(
        0,
        PreapproveInvoice::new(WireString::from(expired.as_str())),
        "invoice-not-expired",
    );
    b.master(valid("tea", 90_000));
    b
}

fn pay_unparseable_invoice(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "pay_unparseable_invoice",
        "lightningd asks to preapprove an invoice string with one character changed (its \
         checksum fails), then the intact invoice.",
        "Core Lightning's hsmd approves anything. An invoice the signer cannot read cannot be \
         checked against expiry, velocity or the approval limit: approving it would let a \
         compromised node pay whatever it likes behind it.",
    );
    let good = invoice("garbled", Some(40_000_000), INVOICE_TIME, FAR_EXPIRY_SECS);
    let mut garbled: Vec<char> = good.chars().collect();
    let i = garbled.len() - 20;
    garbled[i] = if garbled[i] == 'q' { 'p' } else { 'q' };
    let garbled: String = garbled.into_iter().collect();
    b.attack(
        0,
        PreapproveInvoice::new(WireString::from(garbled.as_str())),
        "invoice-valid",
    );
    b.master(PreapproveInvoice::new(WireString::from(good.as_str())));
    b
}

fn pay_invoice_over_limit_unapproved(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "pay_invoice_over_limit_unapproved",
        "lightningd preapproves a 50 000 sat invoice, then one of 150 000 sat (the auto-approve \
         limit is 100 000 sat); the operator does not approve it within the 1 s timeout. Then a \
         90 000 sat invoice (within the 250 000 sat velocity limit only if the refused one was \
         not counted).",
        "Above the auto-approve limit the operator decides: a compromised node paying a large \
         invoice of the attacker's would otherwise drain the channels in one payment.",
    );
    b.master(valid("groceries", 50_000));
    b.attack(0, valid("television", 150_000), "invoice-auto-approve");
    b.master(valid("books", 90_000));
    b
}

fn pay_amountless_invoice_unapproved(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "pay_amountless_invoice_unapproved",
        "lightningd asks to preapprove an invoice without an amount; the operator does not \
         approve it within the timeout. Then an invoice of 30 000 sat.",
        "An invoice without an amount lets the node pay any amount: the signer cannot know it \
         stays below the auto-approve limit, so the operator must decide.",
    );
    let any = invoice("donation", None, INVOICE_TIME, FAR_EXPIRY_SECS);
    b.attack(
        0,
        PreapproveInvoice::new(WireString::from(any.as_str())),
        "invoice-auto-approve",
    );
    b.master(valid("bread", 30_000));
    b
}

fn keysend_over_limit_unapproved(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "keysend_over_limit_unapproved",
        "lightningd preapproves a keysend of 50 000 sat, then one of 150 000 sat (the \
         auto-approve limit is 100 000); the operator does not approve it within the timeout. \
         Then a keysend of 100 000 sat (within the 250 000 sat velocity limit only if the \
         refused one was not counted).",
        "A keysend needs no invoice: a compromised node can send any amount to any node, the \
         attacker's included. Above the limit the operator decides.",
    );
    b.master(keysend("tip", 50_000));
    b.attack(0, keysend("gift", 150_000), "invoice-auto-approve");
    b.master(keysend("rent", 100_000));
    b
}

fn split_payments_over_velocity_limit(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "split_payments_over_velocity_limit",
        "Three invoices of 90 000 sat, each below the auto-approve limit, within a day: the \
         third would bring the day's total to 270 000 sat (the velocity limit is 250 000). \
         Then an invoice of 60 000 sat fits (240 000 in total): the refused one was not \
         counted.",
        "Splitting a large payment into parts below the auto-approve limit would drain the \
         node without the operator ever being asked; the velocity limit caps the total.",
    );
    b.master(valid("part 1", 90_000));
    b.master(valid("part 2", 90_000));
    b.attack(0, valid("part 3", 90_000), "invoice-velocity");
    b.master(valid("small", 60_000));
    b
}

fn track_too_many_payments(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "track_too_many_payments",
        "Five invoices of 1 000 sat are preapproved (the signer tracks at most five); a sixth \
         is refused. Asking again for the first is still approved.",
        "Every approved payment is tracked so its HTLCs can be held to its amount; an unbounded \
         number of them would exhaust the signer's memory and storage, after which no rule \
         could be checked.",
    );
    for i in 1..=5 {
        b.master(valid(&format!("sticker {i}"), 1_000));
    }
    b.attack(0, valid("sticker 6", 1_000), "invoice-max-tracked");
    b.master(valid("sticker 1", 1_000));
    b.note("already tracked: approved again without counting it twice");
    b
}

fn offer_htlc_above_approved_amount(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "offer_htlc_above_approved_amount",
        "lightningd preapproves a 50 000 sat invoice; channeld then offers an HTLC of 60 000 \
         sat for its payment hash. Afterwards the HTLC of 50 000 sat is signed.",
        "The operator approved paying 50 000 sat (plus routing fees up to 1% + 5 sat); an HTLC \
         of 60 000 sat for the same payment hands the payee, or a routing node of the \
         attacker's, 10 000 sat more than approved.",
        1,
    );
    b.master(valid("approved payment", 50_000));
    let hash = payment_hash("approved payment");
    let m = |msat| history(&ch)[2].clone().offer_hash(msat, hash);
    b.attack(
        c,
        ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &m(60_000_000))),
        "payment-within-approved-amount",
    );
    let c = new_channeld(&mut b, &ch);
    round(&mut b, c, &ch, 2, &m(50_000_000));
    b
}

fn keysend_reusing_an_invoice_hash(_: &Keys) -> CaseBuilder {
    let mut b = payments_case(
        "keysend_reusing_an_invoice_hash",
        "Two invoices of 90 000 sat are preapproved; then a keysend of 90 000 sat to another \
         node with the first invoice's payment hash (the day's total would be 270 000 sat; the \
         velocity limit is 250 000). Then the first invoice again, already approved.",
        "An approval is bound to what was approved: payment hash, kind, amount and \
         destination. Taken for the same payment because its hash and amount match, the \
         keysend would pay another 90 000 sat, to a node nobody approved, without being \
         counted.",
    );
    b.master(valid("first", 90_000));
    b.master(valid("second", 90_000));
    b.attack(
        0,
        PreapproveKeysend::new(
            peer(0x34),
            payment_hash("first"),
            AmountMsat::from_msat(90_000_000),
        ),
        "invoice-velocity",
    );
    b.master(valid("first", 90_000));
    b.note("the same invoice again: already approved");
    b
}

fn offer_htlc_never_preapproved(k: &Keys) -> CaseBuilder {
    content_attack(
        k,
        "offer_htlc_never_preapproved",
        "The peer's commitment 2 carries an HTLC of 100 000 sat that we offer, for a payment \
         hash lightningd never asked to preapprove and that no HTLC offered to us carries.",
        "An HTLC that is neither an approved payment nor a forward is a payment nobody \
         approved: a compromised node that never calls preapprove would pay a colluding peer \
         the whole channel, HTLC after HTLC, past the auto-approve and velocity limits.",
        "htlc-forward-matched",
        |ch| {
            ch.build(
                Owner::Counterparty,
                2,
                &history(ch)[2].clone().offer(100_000_000, 9),
            )
        },
        |ch| history(ch)[2].clone(),
    )
}

/// The HTLC forwarded in the forwarding cases: 30 000 sat offered to us on the first channel.
const FORWARD_ID: u8 = 10;
const FORWARD_IN_MSAT: u64 = 30_000_000;

/// Two channels: the first (peer 0x11) through commitment 2, where the peer offers us HTLC
/// [`FORWARD_ID`]; the second (peer 0x12) through commitment 2. Returns the builder, both
/// channels, their channeld clients, and the incoming HTLC's expiry.
fn forwarding(k: &Keys, name: &str, description: &str, why: &str) -> Forwarding {
    let (mut b, ch1, c1) = opened(k, name, description, why, 1);
    let incoming = history(&ch1)[2]
        .clone()
        .receive(FORWARD_IN_MSAT, FORWARD_ID);
    round(&mut b, c1, &ch1, 2, &incoming);
    let ch2 = k.channel(
        0x12,
        2,
        OutPoint {
            txid: txid(0xf1),
            vout: 0,
        },
    );
    open(&mut b, &ch2);
    let c2 = b.client(ch2.peer_id, ch2.dbid, Permissions::CHANNELD);
    let h2 = history(&ch2);
    round(&mut b, c2, &ch2, 1, &h2[1]);
    round(&mut b, c2, &ch2, 2, &h2[2]);
    Forwarding {
        b,
        ch1,
        c1,
        incoming,
        ch2,
        c2,
        expiry: chan::default_expiry(&chan::hash_of(FORWARD_ID)),
    }
}

struct Forwarding {
    b: CaseBuilder,
    ch1: Channel,
    c1: u64,
    /// The first channel's state with the incoming HTLC.
    incoming: Model,
    ch2: Channel,
    c2: u64,
    expiry: u32,
}

impl Forwarding {
    /// The second channel's commitment 2 state with `msat` offered for the forward, expiring
    /// at `cltv`.
    fn outgoing(&self, msat: u64, cltv: u32) -> Model {
        history(&self.ch2)[2]
            .clone()
            .offer(msat, FORWARD_ID)
            .expiring(FORWARD_ID, cltv)
    }
}

fn forward_more_than_offered_to_us(k: &Keys) -> CaseBuilder {
    let mut f = forwarding(
        k,
        "forward_more_than_offered_to_us",
        "The peer of our first channel offers us an HTLC of 30 000 sat; channeld of the second \
         channel then offers 40 000 sat for the same payment hash. Afterwards a forward of \
         29 900 sat (100 sat fee earned) is signed.",
        "A forward pays out what comes in, less our fee. Offering more than was offered to us \
         pays the difference out of our balance to the next peer, with no approval: a \
         compromised node and two colluding peers drain the channel 10 000 sat at a time.",
    );
    let cltv = f.expiry - 40;
    let attack = f.outgoing(40_000_000, cltv);
    f.b.attack(
        f.c2,
        f.ch2
            .sign_remote(3, &f.ch2.build(Owner::Counterparty, 3, &attack)),
        "htlc-forward-matched",
    );
    let c2 = new_channeld(&mut f.b, &f.ch2);
    let honest = f.outgoing(29_900_000, cltv);
    round(&mut f.b, c2, &f.ch2, 3, &honest);
    f.b
}

fn forward_expiring_too_late(k: &Keys) -> CaseBuilder {
    let mut f = forwarding(
        k,
        "forward_expiring_too_late",
        "The peer of our first channel offers us an HTLC of 30 000 sat; channeld of the second \
         channel forwards 29 900 sat for it, expiring 2 blocks before the incoming HTLC (the \
         operator asks for at least 6). Afterwards the same forward expiring 40 blocks earlier \
         is signed.",
        "Once the next peer claims the forward with the preimage at the last moment, we need \
         time to claim the incoming HTLC before it expires and the first peer takes it back: \
         with too short a delta we pay out and are not paid.",
    );
    let attack = f.outgoing(29_900_000, f.expiry - 2);
    f.b.attack(
        f.c2,
        f.ch2
            .sign_remote(3, &f.ch2.build(Owner::Counterparty, 3, &attack)),
        "htlc-forward-matched",
    );
    let c2 = new_channeld(&mut f.b, &f.ch2);
    let honest = f.outgoing(29_900_000, f.expiry - 40);
    round(&mut f.b, c2, &f.ch2, 3, &honest);
    f.b
}

fn fail_back_a_forward_claimed_downstream(k: &Keys) -> CaseBuilder {
    let mut f = forwarding(
        k,
        "fail_back_a_forward_claimed_downstream",
        "The peer of our first channel offers us 30 000 sat; we forward 29 900 sat on the \
         second channel, whose peer claims it (the HTLC leaves its commitments, our balance \
         stays down). channeld of the first channel then fails the incoming HTLC back (the \
         peer's commitment 3 returns it to the peer). Afterwards it is fulfilled (our balance \
         grows by 30 000 sat).",
        "Failing back an HTLC whose forward was claimed gives the first peer its money back \
         while the second one keeps ours: two colluding peers and a compromised node would \
         move our balance out one forward at a time, with nothing approved.",
    );
    let outgoing = f.outgoing(29_900_000, f.expiry - 40);
    round(&mut f.b, f.c2, &f.ch2, 3, &outgoing);
    round(&mut f.b, f.c2, &f.ch2, 4, &outgoing.fulfill(FORWARD_ID));
    let failed = f.incoming.clone().fail(FORWARD_ID);
    f.b.attack(
        f.c1,
        f.ch1
            .sign_remote(3, &f.ch1.build(Owner::Counterparty, 3, &failed)),
        "htlc-forward-settled",
    );
    let c1 = new_channeld(&mut f.b, &f.ch1);
    round(&mut f.b, c1, &f.ch1, 3, &f.incoming.fulfill(FORWARD_ID));
    f.b
}

fn setup_channel_again_in_use(k: &Keys) -> CaseBuilder {
    let (mut b, ch, _) = opened(
        k,
        "setup_channel_again_in_use",
        "The channel is at commitment 1 on both sides. An openingd client for it sends \
         setup_channel again, now declaring the peer as the funder, with twice the value and \
         another funding outpoint. Then the channel's own setup again (answered), and the next \
         round.",
        "Every commitment rule measures against the parameters setup_channel fixed: who \
         funds (and so pays the fee), the value, the funding outpoint, the keys, the delays. \
         Changed under a channel in use, they would let later commitments move our balance as \
         if it had always been the peer's.",
        1,
    );
    let openingd = b.client(ch.peer_id, ch.dbid, Permissions::OPENINGD);
    let mut other = ch.setup.clone();
    other.is_outbound = false;
    other.channel_value = bitcoin::Amount::from_sat(other.channel_value.to_sat() * 2);
    other.funding_txid = txid(0xf7);
    b.attack(openingd, other, "channel-setup-final");
    let openingd = b.client(ch.peer_id, ch.dbid, Permissions::OPENINGD);
    b.on(openingd, ch.setup_msg());
    let c = new_channeld(&mut b, &ch);
    round(&mut b, c, &ch, 2, &history(&ch)[2]);
    b
}

fn validate_holder_commitment_with_a_bad_htlc_signature(k: &Keys) -> CaseBuilder {
    let (mut b, ch, c) = opened(
        k,
        "validate_holder_commitment_with_a_bad_htlc_signature",
        "The peer offers us an HTLC of 30 000 sat in commitment 2. Our commitment 2 comes to be \
         validated with the peer's valid signature on the commitment but, for the HTLC, a \
         signature made with the peer's HTLC key over something else. Afterwards with the \
         peer's signature of the HTLC's own transaction.",
        "Once we revoke commitment 1, commitment 2 is the only one we may broadcast, and an \
         HTLC output on it can be claimed by us only through its HTLC transaction, which needs \
         the peer's signature: without a valid one, what the HTLC holds is lost to us when we \
         close on chain.",
        1,
    );
    let m = history(&ch)[2].clone().receive(30_000_000, 5);
    b.on(c, ch.sign_remote(2, &ch.build(Owner::Counterparty, 2, &m)));
    b.on(c, ch.peer_revokes(1));
    let ours = ch.build(Owner::Holder, 2, &m);
    let mut bad = ch.peer_htlc_sigs(2, &ours);
    assert_eq!(bad.len(), 1, "one HTLC output");
    let digest = sha256::Hash::hash(b"not the HTLC transaction");
    let point = ch.point(Owner::Holder, 2);
    let key = signer::keys::channel::derive_simple_privkey(&ch.peer.htlc_basepoint_secret, &point)
        .expect("tweak");
    bad[0].sig = SECP256K1.sign_ecdsa(
        &secp256k1::Message::from_digest(digest.to_byte_array()),
        &key,
    );
    b.attack(
        c,
        ch.validate_with(2, &ours, bad),
        "commitment-signed-by-peer",
    );
    let c = new_channeld(&mut b, &ch);
    b.on(c, ch.validate(2, &ours));
    b.on(c, ch.revoke(1));
    b
}
