//! Tests of the on-chain rules through [`Signer::handle`]: each rule refuses in enforce mode
//! (naming itself, with no state changed) and only logs in warn mode, where the reply is the
//! one the request gets when it breaks no rule.

use super::*;
use crate::context::ClientContext;
use crate::error::SignerError;
use crate::keys::channel::ChannelSecrets;
use crate::policy::Policy;
use crate::secret::HsmSecret;
use crate::store::Store;
use crate::Signer;
use bitcoin::absolute::LockTime;
use bitcoin::bip32::{Fingerprint, Xpriv};
use bitcoin::hashes::Hash;
use bitcoin::{transaction, Amount, Sequence, TxIn, Txid, Witness};
use protocol::msgs::*;
use protocol::types::{Basepoints, ChannelType, NodeId};
use protocol::{Message, Permissions};
use secp256k1::SecretKey;

/// A policy with the five on-chain rules in `mode`, every other rule in warn mode, and
/// `limits` (TOML lines of a `[limits]` table).
fn policy(mode: &str, limits: &str) -> Policy {
    Policy::from_toml(&format!(
        "default = \"warn\"\n[rules]\n{DESTINATION} = \"{mode}\"\n{FEE_CAP} = \"{mode}\"\n\
         {SEGWIT_ONLY} = \"{mode}\"\n{CLOSE_BALANCE} = \"{mode}\"\n{FUNDING_EXACT} = \"{mode}\"\n[limits]\nwallet_scan_depth = 20\nallowlist_xpub_depth = 5\n{limits}"
    ))
    .unwrap()
}

fn enforcing(limits: &str) -> Policy {
    policy("enforce", limits)
}

fn warning(limits: &str) -> Policy {
    policy("warn", limits)
}

use crate::test_support::initialized_signer as signer;

fn key(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).unwrap()
}

fn pubkey(byte: u8) -> PublicKey {
    key(byte).public_key(SECP256K1)
}

fn p2wpkh(key: &PublicKey) -> ScriptBuf {
    key_scripts(key)[0].clone()
}

fn p2tr(key: &PublicKey) -> ScriptBuf {
    key_scripts(key)[1].clone()
}

/// The regtest address of `script`.
fn address(script: &Script) -> String {
    Address::from_script(script, Network::Regtest)
        .unwrap()
        .to_string()
}

/// Wallet key `i` of the signer's secret ([1; 32]).
fn wallet(signer: &Signer, i: u32) -> PublicKey {
    wallet_pubkey(&signer.session().unwrap().keys, i).unwrap()
}

fn rule_of<T: std::fmt::Debug>(got: &std::result::Result<T, SignerError>) -> Option<&str> {
    match got {
        Err(SignerError::Policy { rule, .. }) => Some(rule),
        _ => None,
    }
}

fn detail_of<T>(got: &std::result::Result<T, SignerError>) -> String {
    match got {
        Err(SignerError::Policy { detail, .. }) => detail.clone(),
        _ => String::new(),
    }
}

fn txin(txid: u8, vout: u32) -> TxIn {
    TxIn {
        previous_output: OutPoint {
            txid: Txid::from_byte_array([txid; 32]),
            vout,
        },
        script_sig: ScriptBuf::new(),
        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        witness: Witness::new(),
    }
}

fn out(sat: u64, script: ScriptBuf) -> TxOut {
    TxOut {
        value: Amount::from_sat(sat),
        script_pubkey: script,
    }
}

fn tx(input: Vec<TxIn>, output: Vec<TxOut>) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input,
        output,
    }
}

// --- withdrawals -------------------------------------------------------------------------

/// Our wallet UTXO: 100 000 sat at wallet key 3, spent by input 0.
fn wallet_utxo(signer: &Signer) -> HsmUtxo {
    HsmUtxo {
        txid: Txid::from_byte_array([4; 32]),
        vout: 0,
        amount: Amount::from_sat(100_000),
        keyindex: 3,
        legacy_is_p2sh: false,
        script_pubkey: p2wpkh(&wallet(signer, 3)),
        close_info: None,
        legacy_is_in_coinbase: false,
    }
}

/// A withdrawal of our wallet UTXO to `outputs`.
fn withdrawal_psbt(signer: &Signer, outputs: Vec<TxOut>) -> Psbt {
    let utxo = wallet_utxo(signer);
    let mut psbt = Psbt::from_unsigned_tx(tx(vec![txin(4, 0)], outputs)).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(utxo.amount.to_sat(), utxo.script_pubkey));
    psbt
}

fn withdraw(signer: &Signer, psbt: Psbt) -> std::result::Result<Vec<u8>, SignerError> {
    let m = SignWithdrawal::new(vec![wallet_utxo(signer)], psbt.into());
    signer.handle(
        &ClientContext::master(),
        None,
        &Message::from(m).encode().unwrap(),
    )
}

/// Enforce refuses by `rule` and changes no state; warn answers with `compliant_reply`.
/// `prepare` runs first on each signer (e.g. to set the channel up).
fn refused_then_warned(
    rule: &str,
    prepare: impl Fn(&Signer),
    run: impl Fn(&Signer) -> std::result::Result<Vec<u8>, SignerError>,
    limits: &str,
    compliant_reply: &[u8],
) {
    let strict = signer(enforcing(limits));
    prepare(&strict);
    let before = strict.store().channels().unwrap();
    let got = run(&strict);
    assert_eq!(rule_of(&got), Some(rule), "{got:?}");
    assert_eq!(strict.store().channels().unwrap(), before);
    let lenient = signer(warning(limits));
    prepare(&lenient);
    assert_eq!(run(&lenient).unwrap(), compliant_reply);
}

fn no_setup(_: &Signer) {}

fn set_up(s: &Signer) {
    setup(s, None, None);
}

#[test]
fn withdrawal_to_the_wallet_passes_by_scan() {
    let s = signer(enforcing(""));
    let outputs = vec![
        out(50_000, p2wpkh(&wallet(&s, 7))),
        out(49_000, p2tr(&wallet(&s, 19))),
    ];
    withdraw(&s, withdrawal_psbt(&s, outputs)).unwrap();
    // Index 20 is beyond the scan depth of these tests.
    let got = withdraw(
        &s,
        withdrawal_psbt(&s, vec![out(99_000, p2wpkh(&wallet(&s, 20)))]),
    );
    assert_eq!(rule_of(&got), Some(DESTINATION));
}

#[test]
fn withdrawal_to_an_unknown_address_is_refused_unless_allowlisted() {
    let external = p2wpkh(&pubkey(9));
    let change = p2tr(&wallet(&signer(warning("")), 2));
    let outputs = || vec![out(60_000, external.clone()), out(39_000, change.clone())];
    let allow = format!("allowlist = [\"{}\"]", address(&external));
    let allowed = signer(enforcing(&allow));
    let reply = withdraw(&allowed, withdrawal_psbt(&allowed, outputs())).unwrap();
    refused_then_warned(
        DESTINATION,
        no_setup,
        |s| withdraw(s, withdrawal_psbt(s, outputs())),
        "",
        &reply,
    );
    let got = withdraw(&signer(enforcing("")), withdrawal_psbt(&allowed, outputs()));
    assert!(detail_of(&got).contains("output 0 (60000 sat"), "{got:?}");
    assert!(!detail_of(&got).contains("output 1"), "{got:?}");
}

#[test]
fn allowlisted_address_of_another_network_allows_nothing() {
    let external = p2wpkh(&pubkey(9));
    let mainnet = Address::from_script(&external, Network::Bitcoin)
        .unwrap()
        .to_string();
    let s = signer(enforcing(&format!("allowlist = [\"{mainnet}\"]")));
    let got = withdraw(&s, withdrawal_psbt(&s, vec![out(99_000, external)]));
    assert_eq!(rule_of(&got), Some(DESTINATION));
}

#[test]
fn allowlisted_xpub_allows_its_first_receive_and_change_addresses() {
    let master = Xpriv::new_master(NetworkKind::Test, &[7; 32]).unwrap();
    let xpub = Xpub::from_priv(SECP256K1, &master);
    let child = |chain: u32, i: u32| {
        let path = [
            ChildNumber::Normal { index: chain },
            ChildNumber::Normal { index: i },
        ];
        xpub.derive_pub(SECP256K1, &path).unwrap().public_key
    };
    let allow = format!("allowlist = [\"{xpub}\"]");
    let s = signer(enforcing(&allow));
    let ok = vec![
        out(50_000, p2tr(&child(1, 4))),
        out(49_000, p2wpkh(&child(0, 0))),
    ];
    withdraw(&s, withdrawal_psbt(&s, ok)).unwrap();
    // Depth 5: index 5 is not allowed; neither is another branch.
    for script in [p2wpkh(&child(0, 5)), p2wpkh(&child(2, 0))] {
        let got = withdraw(&s, withdrawal_psbt(&s, vec![out(99_000, script)]));
        assert_eq!(rule_of(&got), Some(DESTINATION));
    }
    // A mainnet xpub on a regtest node allows nothing.
    let main = Xpub::from_priv(
        SECP256K1,
        &Xpriv::new_master(NetworkKind::Main, &[7; 32]).unwrap(),
    );
    let s = signer(enforcing(&format!("allowlist = [\"{main}\"]")));
    let got = withdraw(
        &s,
        withdrawal_psbt(&s, vec![out(99_000, p2wpkh(&child(0, 0)))]),
    );
    assert_eq!(rule_of(&got), Some(DESTINATION));
}

#[test]
fn change_naming_its_wallet_key_passes_beyond_the_scan() {
    let s = signer(enforcing(""));
    let far = 5_000;
    let (ecdsa, taproot) = (wallet(&s, far), wallet(&s, far + 1));
    let source = |i: u32| {
        (
            Fingerprint::default(),
            DerivationPath::from(vec![ChildNumber::Normal { index: i }]),
        )
    };
    let mut psbt = withdrawal_psbt(
        &s,
        vec![out(50_000, p2wpkh(&ecdsa)), out(49_000, p2tr(&taproot))],
    );
    psbt.outputs[0].bip32_derivation.insert(ecdsa, source(far));
    let xonly = taproot.x_only_public_key().0;
    psbt.outputs[1]
        .tap_key_origins
        .insert(xonly, (Vec::new(), source(far + 1)));
    withdraw(&s, psbt.clone()).unwrap();

    // Naming a key that is not the wallet key of its index, or a script of another key, fails.
    let mut wrong_index = psbt.clone();
    wrong_index.outputs[0]
        .bip32_derivation
        .insert(ecdsa, source(far + 2));
    assert_eq!(rule_of(&withdraw(&s, wrong_index)), Some(DESTINATION));
    let mut other_script = psbt;
    other_script.unsigned_tx.output[0].script_pubkey = p2wpkh(&pubkey(9));
    assert_eq!(rule_of(&withdraw(&s, other_script)), Some(DESTINATION));
}

#[test]
fn zero_value_outputs_move_nothing() {
    let s = signer(enforcing(""));
    let outputs = vec![
        out(0, ScriptBuf::new_op_return([1u8; 4])),
        out(99_000, p2wpkh(&wallet(&s, 1))),
    ];
    withdraw(&s, withdrawal_psbt(&s, outputs)).unwrap();
}

// --- channels ----------------------------------------------------------------------------

const DBID: u64 = 5;

fn peer() -> NodeId {
    NodeId::from_pubkey(&pubkey(2))
}

/// A client of the channel (peer 2, dbid 5) that may set it up, close it, splice it and sweep.
fn channel_client() -> ClientContext {
    ClientContext::client(peer(), DBID, Permissions::from_bits(8 | 4 | 32 | 128))
}

fn channel_key() -> ChannelKey {
    ChannelKey {
        peer_id: peer(),
        dbid: DBID,
    }
}

fn secrets(signer: &Signer) -> std::sync::Arc<ChannelSecrets> {
    signer
        .session()
        .unwrap()
        .keys
        .channel_secrets(peer().as_bytes(), DBID)
        .unwrap()
}

/// Sets the channel up (remote basepoints from keys 10..13, remote funding key 14): the peer
/// opened it with 1 000 000 sat at [8; 32]:0 and pushed us 600 000 sat.
fn setup(signer: &Signer, local_shutdown: Option<&Script>, remote_shutdown: Option<&Script>) {
    let funding = OutPoint {
        txid: Txid::from_byte_array([8; 32]),
        vout: 0,
    };
    setup_with(
        signer,
        local_shutdown,
        remote_shutdown,
        funding,
        1_000_000,
        600_000_000,
    );
}

/// [`setup`] with the funding outpoint, the channel value and the push.
fn setup_with(
    signer: &Signer,
    local_shutdown: Option<&Script>,
    remote_shutdown: Option<&Script>,
    funding: OutPoint,
    value_sat: u64,
    push_msat: u64,
) {
    let mut m = setup_msg(false, value_sat, push_msat);
    m.funding_txid = funding.txid;
    m.funding_txout = funding.vout as u16;
    m.local_shutdown_script = local_shutdown.map_or_else(Vec::new, |s| s.to_bytes());
    m.remote_shutdown_script = remote_shutdown.map_or_else(Vec::new, |s| s.to_bytes());
    signer
        .handle(&channel_client(), None, &Message::from(m).encode().unwrap())
        .unwrap();
}

/// The channel's `setup_channel` (remote basepoints from keys 10..13, remote funding key 14,
/// funding at [8; 32]:0, no shutdown scripts, zero-fee anchors).
fn setup_msg(outbound: bool, value_sat: u64, push_msat: u64) -> SetupChannel {
    SetupChannel::new(
        outbound,
        Amount::from_sat(value_sat),
        protocol::types::AmountMsat::from_msat(push_msat),
        Txid::from_byte_array([8; 32]),
        0,
        144,
        vec![],
        None,
        Basepoints {
            revocation: pubkey(10),
            payment: pubkey(11),
            htlc: pubkey(12),
            delayed_payment: pubkey(13),
        },
        pubkey(14),
        144,
        vec![],
        ChannelType::from_bits(&[
            ChannelType::STATIC_REMOTEKEY,
            ChannelType::ANCHORS_ZERO_FEE_HTLC,
        ]),
    )
}

fn funding_script(signer: &Signer) -> ScriptBuf {
    let ours = secrets(signer).funding_key.public_key(SECP256K1);
    ScriptBuf::new_p2wsh(&funding_redeem_script(&ours, &pubkey(14)).wscript_hash())
}

#[test]
fn withdrawal_may_fund_a_channel_that_was_set_up() {
    let s = signer(enforcing(""));
    let to_wallet = |sat| out(sat, p2wpkh(&wallet(&s, 1)));
    let psbt = withdrawal_psbt(&s, vec![out(90_000, funding_script(&s)), to_wallet(9_000)]);
    assert_eq!(rule_of(&withdraw(&s, psbt.clone())), Some(DESTINATION));
    let at = OutPoint {
        txid: psbt.unsigned_tx.compute_txid(),
        vout: 0,
    };
    setup_with(&s, None, None, at, 90_000, 0);
    withdraw(&s, psbt.clone()).unwrap();
    // The channel's 2-of-2 paid with another value, or by another transaction (twice).
    let more = withdrawal_psbt(&s, vec![out(95_000, funding_script(&s)), to_wallet(4_000)]);
    let again = withdrawal_psbt(&s, vec![out(90_000, funding_script(&s)), to_wallet(8_000)]);
    for attack in [more, again] {
        assert_eq!(rule_of(&withdraw(&s, attack.clone())), Some(FUNDING_EXACT));
        let w = signer(warning(""));
        setup_with(&w, None, None, at, 90_000, 0);
        withdraw(&w, attack).expect("warn mode signs");
    }
    // A 2-of-2 with another remote key is not that channel's.
    let ours = secrets(&s).funding_key.public_key(SECP256K1);
    let other = ScriptBuf::new_p2wsh(&funding_redeem_script(&ours, &pubkey(15)).wscript_hash());
    let got = withdraw(&s, withdrawal_psbt(&s, vec![out(99_000, other)]));
    assert_eq!(rule_of(&got), Some(DESTINATION));
    // A forgotten channel is funded no more.
    let forget = ForgetChannel::new(peer(), DBID);
    s.handle(
        &ClientContext::master(),
        None,
        &Message::from(forget).encode().unwrap(),
    )
    .unwrap();
    assert_eq!(rule_of(&withdraw(&s, psbt)), Some(DESTINATION));
}

/// The mutual close of the channel: input 0 spends the 1 000 000 sat funding output.
fn close_tx(signer: &Signer, outputs: Vec<TxOut>) -> BitcoinTx {
    let tx = tx(vec![txin(8, 0)], outputs);
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(1_000_000, funding_script(signer)));
    BitcoinTx {
        tx,
        psbt: psbt.into(),
    }
}

fn close(signer: &Signer, outputs: Vec<TxOut>) -> std::result::Result<Vec<u8>, SignerError> {
    let m = SignMutualCloseTx::new(close_tx(signer, outputs), pubkey(14));
    signer.handle(&channel_client(), None, &Message::from(m).encode().unwrap())
}

#[test]
fn mutual_close_pays_our_shutdown_script_and_the_peers() {
    let ours = p2wpkh(&pubkey(20));
    let theirs = p2wpkh(&pubkey(21));
    let stranger = p2wpkh(&pubkey(22));
    let s = signer(enforcing(""));
    setup(&s, Some(&ours), Some(&theirs));
    let good = vec![out(600_000, ours.clone()), out(399_000, theirs.clone())];
    let reply = close(&s, good.clone()).unwrap();

    let wallet_instead = vec![
        out(600_000, p2wpkh(&wallet(&s, 1))),
        out(399_000, theirs.clone()),
    ];
    let to_stranger = vec![out(600_000, ours.clone()), out(399_000, stranger.clone())];
    for outputs in [wallet_instead, to_stranger] {
        let before = s.store().channel(&channel_key()).unwrap();
        let got = close(&s, outputs.clone());
        assert_eq!(rule_of(&got), Some(DESTINATION), "{got:?}");
        assert_eq!(s.store().channel(&channel_key()).unwrap(), before);

        // In warn mode the signature is the one of any close (it depends only on the keys and
        // the transaction): the same as where these outputs are allowed.
        let w = signer(warning(""));
        setup(&w, Some(&ours), Some(&theirs));
        let allowed = signer(enforcing(&format!(
            "allowlist = [\"{}\", \"{}\"]",
            address(&outputs[0].script_pubkey),
            address(&outputs[1].script_pubkey)
        )));
        setup(&allowed, None, None);
        let compliant = close(&allowed, outputs.clone());
        assert_eq!(close(&w, outputs).unwrap(), compliant.unwrap());
    }
    assert_eq!(close(&s, good).unwrap(), reply);
}

/// lightningd keeps the agreed closing transaction as the channel's last one and sends it in
/// `sign_commitment_tx` to broadcast it: the one we signed is signed again, anything else is
/// still a commitment to check.
#[test]
fn the_agreed_close_comes_back_through_sign_commitment_tx() {
    let ours = p2wpkh(&pubkey(20));
    let theirs = p2wpkh(&pubkey(21));
    // Every rule enforced.
    let s = signer(Policy::from_toml("[limits]\nwallet_scan_depth = 20\n").unwrap());
    setup(&s, Some(&ours), Some(&theirs));
    let good = vec![out(600_000, ours.clone()), out(399_000, theirs.clone())];
    let signed = SignTxReply::decode(&close(&s, good.clone()).unwrap()).unwrap();
    let again = |outputs: Vec<TxOut>| {
        let m = SignCommitmentTx::new(peer(), DBID, close_tx(&s, outputs), pubkey(14), 0);
        s.handle(
            &ClientContext::master(),
            None,
            &Message::from(m).encode().unwrap(),
        )
    };
    let reply = SignCommitmentTxReply::decode(&again(good).unwrap()).unwrap();
    assert_eq!(reply.sig, signed.sig);
    // A transaction never agreed is no close: it is checked as a commitment (never validated).
    let other = vec![out(500_000, ours), out(499_000, theirs)];
    let got = again(other);
    assert_eq!(rule_of(&got), Some("commitment-balance"), "{got:?}");
}

#[test]
fn mutual_close_without_shutdown_scripts_pays_the_wallet_and_one_peer_output() {
    let s = signer(enforcing(""));
    setup(&s, None, None);
    let ours = p2tr(&wallet(&s, 4));
    close(
        &s,
        vec![
            out(600_000, ours.clone()),
            out(399_000, p2wpkh(&pubkey(21))),
        ],
    )
    .unwrap();
    let two_strangers = vec![
        out(600_000, p2wpkh(&pubkey(22))),
        out(399_000, p2wpkh(&pubkey(21))),
    ];
    assert_eq!(rule_of(&close(&s, two_strangers)), Some(DESTINATION));
}

#[test]
fn mutual_close_pays_us_our_balance_less_the_fee() {
    let ours = p2wpkh(&pubkey(20));
    let theirs = p2wpkh(&pubkey(21));
    let set_up = |s: &Signer| setup(s, Some(&ours), Some(&theirs));
    // Our 600 000 sat, less the whole 1 000 sat fee at most (and a satoshi of rounding).
    let s = signer(enforcing(""));
    set_up(&s);
    close(
        &s,
        vec![out(599_000, ours.clone()), out(400_000, theirs.clone())],
    )
    .unwrap();
    close(
        &s,
        vec![out(598_999, ours.clone()), out(400_000, theirs.clone())],
    )
    .unwrap();
    let allowed = signer(enforcing(""));
    set_up(&allowed);
    let reply = close(
        &allowed,
        vec![out(599_000, ours.clone()), out(400_000, theirs.clone())],
    )
    .unwrap();
    // The reply does not depend on the outputs' values where the check passes: compare the
    // warned answer of an attack with its own signature from a policy that has the rule off.
    for outputs in [
        vec![out(598_998, ours.clone()), out(400_002, theirs.clone())],
        vec![out(1_000, ours.clone()), out(998_000, theirs.clone())],
        vec![out(999_000, theirs.clone())],
    ] {
        let run = |s: &Signer| close(s, outputs.clone());
        let off = signer(Policy::from_toml("[rules]\nclose-balance = \"warn\"\n").unwrap());
        set_up(&off);
        let expected = run(&off).unwrap();
        assert_ne!(expected, reply);
        refused_then_warned(CLOSE_BALANCE, set_up, run, "", &expected);
    }
}

#[test]
fn the_close_entitlement_follows_the_newest_commitments() {
    use crate::policy_channel::close_entitlement;
    use crate::store::{ChannelState, CommitmentBalance};
    let setup = |outbound: bool, push_msat: u64| setup_msg(outbound, 1_000_000, push_msat);
    let balance = |ours_sat, fee_sat, htlcs| CommitmentBalance {
        ours_sat,
        fee_sat,
        htlcs,
        ..Default::default()
    };
    let mut state = ChannelState::default();
    // Before any commitment: the opening (the funder gets its anchors back).
    assert_eq!(close_entitlement(&setup(true, 0), &state), Some(1_000_000));
    assert_eq!(close_entitlement(&setup(false, 5_000), &state), Some(5));
    // As funder we get the commitment fee and the anchors back; the smaller side counts.
    state.holder_balances.insert(3, balance(700_000, 2_000, 0));
    state
        .counterparty_balances
        .insert(4, balance(650_000, 2_000, 0));
    assert_eq!(close_entitlement(&setup(true, 0), &state), Some(652_660));
    assert_eq!(close_entitlement(&setup(false, 0), &state), Some(650_000));
    // Any HTLC on the newest commitment of either side: no close yet.
    state
        .counterparty_balances
        .insert(5, balance(640_000, 2_000, 1));
    assert_eq!(close_entitlement(&setup(true, 0), &state), None);
    state.holder_balances.insert(
        6,
        CommitmentBalance {
            offered: vec![(1_000, "00".repeat(32), 500)],
            ..balance(640_000, 2_000, 0)
        },
    );
    state
        .counterparty_balances
        .insert(7, balance(640_000, 2_000, 0));
    assert_eq!(close_entitlement(&setup(true, 0), &state), None);
}

#[test]
fn mutual_close_fee_is_capped() {
    // 400 000 sat of fee, about 885 000 sat/kw: above the default rate cap.
    let to_wallet = |s: &Signer| vec![out(600_000, p2tr(&wallet(s, 4)))];
    let generous = "max_onchain_fee_sat = 400000\nmax_onchain_feerate_per_kw = 1000000";
    let allowed = signer_set_up(enforcing(generous));
    let reply = close(&allowed, to_wallet(&allowed)).unwrap();
    let run = |s: &Signer| close(s, to_wallet(s));
    refused_then_warned(FEE_CAP, set_up, run, "", &reply);
    let fee = "max_onchain_fee_sat = 399999\nmax_onchain_feerate_per_kw = 1000000";
    refused_then_warned(FEE_CAP, set_up, run, fee, &reply);
}

fn signer_set_up(policy: Policy) -> Signer {
    let s = signer(policy);
    setup(&s, None, None);
    s
}

// --- fees and segwit inputs -----------------------------------------------------------

#[test]
fn withdrawal_fee_and_fee_rate_are_capped() {
    let to_wallet = |s: &Signer, sat| withdrawal_psbt(s, vec![out(sat, p2wpkh(&wallet(s, 1)))]);
    // 2 000 sat of fee over an estimated 438 weight units: 4 566 sat/kw.
    let loose = signer(enforcing(
        "max_onchain_fee_sat = 2000\nmax_onchain_feerate_per_kw = 4566",
    ));
    let reply = withdraw(&loose, to_wallet(&loose, 98_000)).unwrap();
    let run = |s: &Signer| withdraw(s, to_wallet(s, 98_000));
    let too_much = "max_onchain_fee_sat = 1999\nmax_onchain_feerate_per_kw = 100000";
    refused_then_warned(FEE_CAP, no_setup, run, too_much, &reply);
    let too_fast = "max_onchain_fee_sat = 100000\nmax_onchain_feerate_per_kw = 4565";
    refused_then_warned(FEE_CAP, no_setup, run, too_fast, &reply);
}

#[test]
fn unknown_input_amount_is_refused_by_the_fee_cap() {
    let s = signer(enforcing(""));
    let mut psbt = withdrawal_psbt(&s, vec![out(99_000, p2wpkh(&wallet(&s, 1)))]);
    psbt.unsigned_tx.input.push(txin(5, 1));
    psbt.inputs.push(Default::default());
    // The segwit rule sees the same input first.
    let got = withdraw(&s, psbt.clone());
    assert_eq!(rule_of(&got), Some(SEGWIT_ONLY));
    let s = signer(Policy::from_toml(&format!("[rules]\n{SEGWIT_ONLY} = \"warn\"\n")).unwrap());
    let got = withdraw(&s, psbt);
    assert_eq!(rule_of(&got), Some(FEE_CAP));
    assert!(
        detail_of(&got).contains("input 1") && detail_of(&got).contains("no amount"),
        "{got:?}"
    );
}

/// A foreign input spending `script` through a `non_witness_utxo` (input 1 of a withdrawal).
fn with_foreign_input(s: &Signer, script: ScriptBuf, redeem: Option<ScriptBuf>) -> Psbt {
    let prev = tx(vec![txin(6, 0)], vec![out(20_000, script)]);
    let mut psbt = withdrawal_psbt(s, vec![out(119_000, p2wpkh(&wallet(s, 1)))]);
    psbt.unsigned_tx.input.push(TxIn {
        previous_output: OutPoint {
            txid: prev.compute_txid(),
            vout: 0,
        },
        ..txin(0, 0)
    });
    let mut input = bitcoin::psbt::Input {
        non_witness_utxo: Some(prev),
        ..Default::default()
    };
    input.redeem_script = redeem;
    psbt.inputs.push(input);
    psbt
}

#[test]
fn legacy_inputs_are_refused() {
    let legacy = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::hash(&pubkey(30).serialize()));
    let s = signer(enforcing(""));
    // The same transaction with a segwit input is accepted; the reply's PSBT differs only in
    // that input, so compare what warn mode signs with what enforce signs for the same PSBT
    // under a lenient segwit rule.
    let lenient = signer(
        Policy::from_toml(&format!(
        "default = \"enforce\"\n[rules]\n{SEGWIT_ONLY} = \"warn\"\n[limits]\nwallet_scan_depth = 20"
    ))
        .unwrap(),
    );
    let reply = withdraw(&lenient, with_foreign_input(&lenient, legacy.clone(), None)).unwrap();
    let run = |s: &Signer| withdraw(s, with_foreign_input(s, legacy.clone(), None));
    refused_then_warned(SEGWIT_ONLY, no_setup, run, "", &reply);
    withdraw(&s, with_foreign_input(&s, p2tr(&pubkey(30)), None)).unwrap();
    // P2SH-wrapped segwit counts, with its witness redeem script.
    let redeem = p2wpkh(&pubkey(30));
    let wrapped = ScriptBuf::new_p2sh(&redeem.script_hash());
    withdraw(&s, with_foreign_input(&s, wrapped.clone(), Some(redeem))).unwrap();
    let got = withdraw(&s, with_foreign_input(&s, wrapped, None));
    assert_eq!(rule_of(&got), Some(SEGWIT_ONLY));
    // A non_witness_utxo that is not the spent transaction proves nothing.
    let mut lying = with_foreign_input(&s, p2tr(&pubkey(30)), None);
    lying.unsigned_tx.input[1].previous_output.txid = Txid::from_byte_array([9; 32]);
    assert_eq!(rule_of(&withdraw(&s, lying)), Some(SEGWIT_ONLY));
}

fn splice(s: &Signer, other_input: TxOut) -> std::result::Result<Vec<u8>, SignerError> {
    let tx = tx(
        vec![txin(8, 0), txin(6, 1)],
        vec![out(1_010_000, funding_script(s))],
    );
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(1_000_000, funding_script(s)));
    psbt.inputs[1].witness_utxo = Some(other_input);
    let m = SignSpliceTx::new(
        BitcoinTx {
            tx,
            psbt: psbt.into(),
        },
        pubkey(14),
        0,
    );
    s.handle(&channel_client(), None, &Message::from(m).encode().unwrap())
}

#[test]
fn splice_inputs_are_segwit_and_its_fee_capped() {
    let segwit = out(11_000, p2wpkh(&pubkey(31)));
    let legacy = out(
        11_000,
        ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::hash(&[1])),
    );
    let reply = splice(&signer_set_up(enforcing("")), segwit.clone()).unwrap();
    // Warn mode signs the funding input as it would anyway.
    let lenient = signer_set_up(warning(""));
    let t = tx(
        vec![txin(8, 0), txin(6, 1)],
        vec![out(1_010_000, funding_script(&lenient))],
    );
    let ours = secrets(&lenient).funding_key;
    let redeem = funding_redeem_script(&ours.public_key(SECP256K1), &pubkey(14));
    let msg = crate::sign::segwit_v0_sighash(
        &t,
        0,
        &redeem,
        Amount::from_sat(1_000_000),
        bitcoin::sighash::EcdsaSighashType::All,
    )
    .unwrap();
    let sig = crate::sign::sign_ecdsa_cln_grind(&msg, &ours);
    let sig = protocol::types::BitcoinSignature {
        sig,
        sighash: protocol::types::SighashFlag::All,
    };
    let expected = Message::from(SignTxReply::new(sig)).encode().unwrap();
    refused_then_warned(
        SEGWIT_ONLY,
        set_up,
        |s| splice(s, legacy.clone()),
        "",
        &expected,
    );
    let run = |s: &Signer| splice(s, segwit.clone());
    refused_then_warned(FEE_CAP, set_up, run, "max_onchain_fee_sat = 999", &reply);
}

// --- sweeps ------------------------------------------------------------------------------

fn sweep_tx(output: ScriptBuf) -> BitcoinTx {
    let tx = tx(vec![txin(12, 1)], vec![out(9_000, output)]);
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(
        10_000,
        ScriptBuf::new_p2wsh(&Script::from_bytes(&[0x51]).wscript_hash()),
    ));
    BitcoinTx {
        tx,
        psbt: psbt.into(),
    }
}

fn sweep(s: &Signer, output: ScriptBuf) -> std::result::Result<Vec<u8>, SignerError> {
    let m = SignDelayedPaymentToUs::new(3, sweep_tx(output), vec![0x51]);
    s.handle(&channel_client(), None, &Message::from(m).encode().unwrap())
}

#[test]
fn sweeps_pay_the_wallet_or_the_allowlist() {
    let external = p2wpkh(&pubkey(40));
    let allowed = signer(enforcing(&format!(
        "allowlist = [\"{}\"]",
        address(&external)
    )));
    setup(&allowed, None, None);
    let reply = sweep(&allowed, external.clone()).unwrap();
    let s = signer_set_up(enforcing(""));
    let before = s.store().channel(&channel_key()).unwrap();
    assert_eq!(rule_of(&sweep(&s, external.clone())), Some(DESTINATION));
    assert_eq!(s.store().channel(&channel_key()).unwrap(), before);
    let w = signer_set_up(warning(""));
    assert_eq!(sweep(&w, external).unwrap(), reply);
    sweep(&s, p2tr(&wallet(&s, 11))).unwrap();
    // The fee cap applies too (1 000 sat of fee).
    let capped = signer_set_up(enforcing("max_onchain_fee_sat = 999"));
    assert_eq!(
        rule_of(&sweep(&capped, p2tr(&wallet(&capped, 11)))),
        Some(FEE_CAP)
    );
}

#[test]
fn our_htlc_transaction_pays_its_delayed_output() {
    let s = signer_set_up(enforcing(""));
    let n = 7;
    let channel = secrets(&s);
    let point = channel.per_commitment_point(n).unwrap();
    let delayed_base = channel
        .delayed_payment_basepoint_secret
        .public_key(SECP256K1);
    let delayed = derive_simple_pubkey(&delayed_base, &point).unwrap();
    let revocation = revocation_pubkey(&pubkey(10), &point).unwrap();
    let script = ScriptBuf::new_p2wsh(&to_local_script(&revocation, 144, &delayed).wscript_hash());
    let htlc = |s: &Signer, output: ScriptBuf, n: u64| {
        let m = SignAnyLocalHtlcTx::new(n, sweep_tx(output), vec![0x51], true, 0, peer(), DBID);
        s.handle(
            &ClientContext::master(),
            None,
            &Message::from(m).encode().unwrap(),
        )
    };
    htlc(&s, script.clone(), n).unwrap();
    // Another commitment's output is not this one's.
    assert_eq!(rule_of(&htlc(&s, script, n + 1)), Some(DESTINATION));
}

#[test]
fn revocation_pubkey_matches_the_revocation_privkey() {
    let base = key(50);
    let secret = key(51);
    let private = crate::keys::channel::derive_revocation_privkey(&base, &secret).unwrap();
    assert_eq!(
        revocation_pubkey(&base.public_key(SECP256K1), &secret.public_key(SECP256K1)),
        Some(private.public_key(SECP256K1))
    );
}

/// In Core Lightning's corpus our HTLC transactions pay the to_local script of their
/// commitment (BOLT 3), and are accepted with the destination rule enforced; so is the
/// withdrawal that sweeps close outputs into the wallet, while withdrawals to other addresses
/// are refused (warn mode only logs them). Their change outputs are recognised as the wallet's
/// (m/0/0 keys for plain secrets, BIP86 keys for mnemonic ones): only the payment is named.
#[test]
fn corpus_htlc_transactions_pay_their_delayed_output() {
    let golden = include_str!("../../../tests/data/conformance/cln-hsmd-golden.json");
    let mnemonic = include_str!("../../../tests/data/conformance/cln-hsmd-mnemonic.json");
    let policy = || {
        Policy::from_toml(&format!(
            "default = \"warn\"\n[rules]\n{DESTINATION} = \"enforce\"\n"
        ))
        .unwrap()
    };
    let (mut accepted, mut refused, mut to_wallet) = (0, 0, 0);
    let corpora =
        [golden, mnemonic].map(|text| serde_json::from_str::<serde_json::Value>(text).unwrap());
    for case in corpora.iter().flat_map(|c| c["cases"].as_array().unwrap()) {
        let file = case.get("hsm_secret_file").unwrap_or(&case["hsm_secret"]);
        let secret = hex::decode(file.as_str().unwrap()).unwrap();
        let signer = Signer::new(secret, Store::temporary().unwrap(), policy());
        let mut clients = vec![ClientContext::master()];
        for step in case["steps"].as_array().unwrap() {
            let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
            let Some(ctx) = clients
                .get(step["client"].as_u64().unwrap() as usize)
                .cloned()
            else {
                continue;
            };
            let got = signer.handle(&ctx, None, &req);
            if let Ok(h) = ClientHsmfd::decode(&req) {
                clients.push(ClientContext::client(
                    h.id,
                    h.dbid,
                    Permissions::from_bits(h.permissions),
                ));
            }
            let answered = step["outcome"].as_str() == Some("reply");
            match step["request_name"].as_str() {
                Some("hsmd_sign_any_local_htlc_tx") if answered => {
                    assert!(got.is_ok(), "{}: {got:?}", case["name"]);
                    accepted += 1;
                }
                Some("hsmd_sign_withdrawal") if answered => match got {
                    // Change to, or a sweep of close outputs into, the wallet.
                    Ok(_) => to_wallet += 1,
                    Err(_) => {
                        assert_eq!(rule_of(&got), Some(DESTINATION));
                        assert!(!detail_of(&got).contains("output 1"), "{got:?}");
                        refused += 1;
                    }
                },
                _ => {}
            }
        }
    }
    assert!(
        accepted >= 8 && refused >= 6 && to_wallet >= 1,
        "{accepted} HTLC transactions accepted, withdrawals: {refused} refused, {to_wallet} to the wallet"
    );
}

// --- keys, weights, the policy file ------------------------------------------------------

#[test]
fn wallet_keys_are_the_keys_withdrawals_spend_with() {
    let plain = KeyManager::new(&HsmSecret::from_plain([1; 32]), Bip32Version::Testnet).unwrap();
    assert_eq!(
        wallet_pubkey(&plain, 9),
        Some(plain.wallet_key(9).unwrap().public_key(SECP256K1))
    );
    let words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    let mut file = vec![0u8; 32];
    file.extend_from_slice(words.as_bytes());
    let secret = HsmSecret::from_file_bytes(&file, None).unwrap();
    let mnemonic = KeyManager::new(&secret, Bip32Version::Testnet).unwrap();
    let bip86 = mnemonic.bip86_key(9).unwrap().public_key(SECP256K1);
    assert_eq!(wallet_pubkey(&mnemonic, 9), Some(bip86));
    assert_eq!(
        mnemonic.wallet_utxo_key(9).unwrap().public_key(SECP256K1),
        bip86
    );
    assert_eq!(wallet_pubkey(&mnemonic, 1 << 31), None);
}

#[test]
fn weight_estimate_is_a_lower_bound_close_to_the_signed_weight() {
    // One P2WPKH input, two P2WPKH outputs: 113 bytes without witness, a 108-byte witness
    // (72-byte signature) and the segwit marker: 562 weight units, as signed with a low-R
    // signature.
    let t = tx(
        vec![txin(1, 0)],
        vec![out(1, p2wpkh(&pubkey(1))), out(1, p2wpkh(&pubkey(2)))],
    );
    let mut psbt = Psbt::from_unsigned_tx(t.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(10, p2wpkh(&pubkey(3))));
    assert_eq!(estimated_weight(&t, &psbt), 562);
    // P2TR key path: 66 witness bytes.
    psbt.inputs[0].witness_utxo = Some(out(10, p2tr(&pubkey(3))));
    assert_eq!(estimated_weight(&t, &psbt), 452 + 2 + 66);
    // Unknown inputs count as witness-less.
    psbt.inputs[0].witness_utxo = None;
    assert_eq!(estimated_weight(&t, &psbt), 452);
}

#[test]
fn policy_file_with_an_allowlist() {
    let external = p2wpkh(&pubkey(9));
    let tpub = Xpub::from_priv(
        SECP256K1,
        &Xpriv::new_master(NetworkKind::Test, &[7; 32]).unwrap(),
    );
    let text = format!(
        "default = \"enforce\"\n\
         [rules]\nfunding-segwit-only = \"warn\"\n\
         [limits]\nallowlist = [\"{}\", \"{tpub}\"]\nallowlist_xpub_depth = 3\nwallet_scan_depth = 50\n\
         max_onchain_fee_sat = 5000\nmax_onchain_feerate_per_kw = 20000\n",
        address(&external)
    );
    let p = Policy::from_toml(&text).unwrap();
    assert_eq!(p.mode(SEGWIT_ONLY), crate::policy::Mode::Warn);
    assert_eq!(p.mode(DESTINATION), crate::policy::Mode::Enforce);
    assert_eq!(p.limits.allowlist.len(), 2);
    assert_eq!(
        (p.limits.allowlist_xpub_depth, p.limits.wallet_scan_depth),
        (3, 50)
    );
    assert_eq!(p.limits.max_onchain_fee_sat, 5000);
    validate_allowlist(&p.limits.allowlist, Some(NetworkKind::Test)).unwrap();
    let err = validate_allowlist(&p.limits.allowlist, Some(NetworkKind::Main)).unwrap_err();
    assert!(err.contains(&address(&external)), "{err}");
    assert!(validate_allowlist(&["bc1qnonsense".to_string()], None).is_err());
    // The shown policy reads back with the same limits.
    let back = Policy::from_toml(&p.to_toml()).unwrap();
    assert_eq!(back.limits, p.limits);

    // And it is the policy in force.
    let s = signer(p);
    let to_tpub = p2tr(
        &tpub
            .derive_pub(
                SECP256K1,
                &[
                    ChildNumber::Normal { index: 1 },
                    ChildNumber::Normal { index: 2 },
                ],
            )
            .unwrap()
            .public_key,
    );
    withdraw(
        &s,
        withdrawal_psbt(&s, vec![out(50_000, external), out(48_000, to_tpub)]),
    )
    .unwrap();
    let got = withdraw(
        &s,
        withdrawal_psbt(&s, vec![out(90_000, p2wpkh(&wallet(&s, 49)))]),
    );
    assert_eq!(rule_of(&got), Some(FEE_CAP));
}

/// `sign_anchorspend` signs with the channel's funding key only the channel's anchor output:
/// the same key holds our half of the 2-of-2 funding output.
#[test]
fn anchorspend_signs_only_the_anchor_with_the_funding_key() {
    let run = |s: &Signer, spend_funding: bool| {
        let funding = secrets(s).funding_key.public_key(SECP256K1);
        let (spent, witness_script) = if spend_funding {
            let theirs = pubkey(14);
            (
                1_000_000,
                crate::bolt3::funding_redeem_script(&funding, &theirs),
            )
        } else {
            (330, crate::bolt3::anchor_script(&funding))
        };
        let spk = ScriptBuf::new_p2wsh(&witness_script.wscript_hash());
        let utxo = wallet_utxo(s);
        let mut psbt = Psbt::from_unsigned_tx(tx(
            vec![txin(8, 0), txin(4, 0)],
            vec![out(spent + 99_000, p2wpkh(&wallet(s, 5)))],
        ))
        .unwrap();
        psbt.inputs[0].witness_utxo = Some(out(spent, spk));
        psbt.inputs[0].witness_script = Some(witness_script);
        psbt.inputs[0].bip32_derivation.insert(
            funding,
            (
                Fingerprint::default(),
                Vec::<bitcoin::bip32::ChildNumber>::new().into(),
            ),
        );
        psbt.inputs[1].witness_utxo = Some(out(utxo.amount.to_sat(), utxo.script_pubkey.clone()));
        let m = SignAnchorspend::new(peer(), DBID, vec![utxo], psbt.into());
        s.handle(
            &ClientContext::master(),
            None,
            &Message::from(m).encode().unwrap(),
        )
    };
    let strict = signer(Policy::from_toml("[limits]\nwallet_scan_depth = 20\n").unwrap());
    setup(&strict, None, None);
    run(&strict, false).expect("the anchor is signed");
    let got = run(&strict, true);
    assert_eq!(rule_of(&got), Some("anchorspend-anchor-only"), "{got:?}");
    let lenient = signer(Policy::warn_only());
    setup(&lenient, None, None);
    run(&lenient, true).expect("warn mode signs as Core Lightning does");
}

// --- HTLC transactions mingled with wallet inputs --------------------------------------------

/// `sign_htlc_tx_mingle`: input 0 spends `htlc_input` claiming `claimed` sat (and the spent
/// transaction itself as `non_witness_utxo` when given), output 0 pays `claimed` to `dest`;
/// input 1 is our wallet UTXO, output 1 its change.
fn mingle(
    s: &Signer,
    htlc_input: OutPoint,
    claimed: u64,
    dest: ScriptBuf,
    spent_tx: Option<Transaction>,
) -> std::result::Result<Vec<u8>, SignerError> {
    let utxo = wallet_utxo(s);
    let mut input = txin(0, 0);
    input.previous_output = htlc_input;
    let wallet_in = txin(4, 0);
    let t = tx(
        vec![input, wallet_in],
        vec![out(claimed, dest), out(99_000, p2wpkh(&wallet(s, 1)))],
    );
    let mut psbt = Psbt::from_unsigned_tx(t).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(claimed, p2wpkh(&pubkey(30))));
    psbt.inputs[0].non_witness_utxo = spent_tx;
    psbt.inputs[1].witness_utxo = Some(out(utxo.amount.to_sat(), utxo.script_pubkey.clone()));
    let m = SignHtlcTxMingle::new(peer(), DBID, vec![utxo], psbt.into());
    s.handle(
        &ClientContext::master(),
        None,
        &Message::from(m).encode().unwrap(),
    )
}

#[test]
fn a_mingled_htlc_input_pays_its_output_only_with_a_value_that_is_known() {
    let s = signer(enforcing(""));
    setup(&s, None, None);
    // Our commitment, signed for broadcast: its outputs' values are now known.
    let commitment = tx(
        vec![txin(8, 0)],
        vec![
            out(700_000, p2wpkh(&pubkey(31))),
            out(40_000, p2wpkh(&pubkey(30))),
        ],
    );
    let mut psbt = Psbt::from_unsigned_tx(commitment.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(out(1_000_000, funding_script(&s)));
    let m = SignCommitmentTx::new(
        peer(),
        DBID,
        BitcoinTx {
            tx: commitment.clone(),
            psbt: psbt.into(),
        },
        pubkey(14),
        0,
    );
    s.handle(
        &ClientContext::master(),
        None,
        &Message::from(m).encode().unwrap(),
    )
    .unwrap();
    let htlc_output = OutPoint {
        txid: commitment.compute_txid(),
        vout: 1,
    };
    // The HTLC output's own value pays the HTLC transaction's output, wherever it goes (the
    // peer's signature fixed it).
    let stranger = p2wpkh(&pubkey(22));
    mingle(&s, htlc_output, 40_000, stranger.clone(), None).unwrap();
    // Claiming more than the output holds makes our wallet input pay the difference.
    let got = mingle(&s, htlc_output, 90_000, stranger.clone(), None);
    assert_eq!(rule_of(&got), Some(DESTINATION), "{got:?}");
    // An input of unknown origin proves nothing with witness_utxo alone...
    let elsewhere = tx(vec![txin(9, 0)], vec![out(60_000, p2wpkh(&pubkey(30)))]);
    let at = OutPoint {
        txid: elsewhere.compute_txid(),
        vout: 0,
    };
    let got = mingle(&s, at, 60_000, stranger.clone(), None);
    assert_eq!(rule_of(&got), Some(DESTINATION), "{got:?}");
    // ...but does with the spent transaction, if it agrees.
    mingle(&s, at, 60_000, stranger.clone(), Some(elsewhere.clone())).unwrap();
    // A witness_utxo that disagrees with the spent transaction proves nothing, not even that
    // the input is segwit.
    let got = mingle(&s, at, 61_000, stranger, Some(elsewhere));
    assert_eq!(rule_of(&got), Some(SEGWIT_ONLY), "{got:?}");
}
