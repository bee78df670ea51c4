//! The channel and commitment rules through [`Signer::handle`]: setup parameters, and
//! commitments built as BOLT 3 builds them from a BOLT 2 channel state. A well-behaved channel
//! passes an enforcing policy; each rule refuses its attack in enforce mode (naming the rule,
//! changing no state) and answers as Core Lightning does in warn mode.

use super::*;
use crate::bolt3::funding_redeem_script;
use crate::context::ClientContext;
use crate::keys::ChannelSecrets;
use crate::sign::{segwit_v0_sighash, sign_ecdsa_cln_grind};
use crate::store::Store;
use crate::{Signer, SignerError};
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::hashes::sha256;
use bitcoin::psbt::Psbt;
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{absolute, transaction, Amount, OutPoint, TxIn, TxOut, Txid};
use protocol::msgs::*;
use protocol::types::{
    AmountMsat, Basepoints, Bip32KeyVersion, BitcoinSignature, NodeId, SighashFlag,
};
use protocol::{Message, Permissions};
use secp256k1::SecretKey;
use secp256k1::SECP256K1;
use serde_json::Value;
use std::path::PathBuf;

const DBID: u64 = 7;
const VALUE_SAT: u64 = 1_000_000;
const PUSH_MSAT: u64 = 200_000_000;
/// The dust limit the test channel's commitments trim at.
const DUST: u64 = 546;

fn peer_id() -> NodeId {
    NodeId::from_pubkey(
        &SecretKey::from_slice(&[0x11; 32])
            .unwrap()
            .public_key(SECP256K1),
    )
}

fn key() -> ChannelKey {
    ChannelKey {
        peer_id: peer_id(),
        dbid: DBID,
    }
}

fn encode(m: impl Into<Message>) -> Vec<u8> {
    m.into().encode().unwrap()
}

/// Our channel `setup_channel`: we fund 1 000 000 sat, push 200 000 sat, zero-fee anchors.
fn setup_msg(peer: &ChannelSecrets) -> SetupChannel {
    let p = peer.basepoints();
    SetupChannel::new(
        true,
        Amount::from_sat(VALUE_SAT),
        AmountMsat::from_msat(PUSH_MSAT),
        Txid::from_byte_array([7; 32]),
        1,
        144,
        vec![],
        None,
        Basepoints {
            revocation: p.revocation,
            payment: p.payment,
            htlc: p.htlc,
            delayed_payment: p.delayed_payment,
        },
        p.funding_pubkey,
        144,
        vec![],
        ChannelType::from_bits(&[12, 22]),
    )
}

fn htlc(side: Side, msat: u64, id: u8) -> HsmHtlc {
    HsmHtlc {
        side,
        amount: AmountMsat::from_msat(msat),
        payment_hash: sha256::Hash::hash(&[id]),
        cltv_expiry: 800_000 + u32::from(id),
    }
}

/// A channel as BOLT 2 keeps it: each side's balance (msat, before the fee and anchors that
/// the funder pays), the HTLCs, and the fee rate.
#[derive(Clone, Debug)]
struct Model {
    ours_msat: u64,
    theirs_msat: u64,
    htlcs: Vec<HsmHtlc>,
    feerate: u32,
}

impl Model {
    fn opening() -> Model {
        Model {
            ours_msat: VALUE_SAT * 1000 - PUSH_MSAT,
            theirs_msat: PUSH_MSAT,
            htlcs: vec![],
            feerate: 253,
        }
    }
    /// We offer an HTLC (from our balance).
    fn offer(mut self, msat: u64, id: u8) -> Model {
        self.ours_msat -= msat;
        self.htlcs.push(htlc(Side::Local, msat, id));
        self
    }
    /// The peer offers an HTLC (from its balance).
    fn receive(mut self, msat: u64, id: u8) -> Model {
        self.theirs_msat -= msat;
        self.htlcs.push(htlc(Side::Remote, msat, id));
        self
    }
    fn remove(&mut self, id: u8) -> HsmHtlc {
        let i = self
            .htlcs
            .iter()
            .position(|h| h.payment_hash == sha256::Hash::hash(&[id]))
            .unwrap();
        self.htlcs.remove(i)
    }
    /// HTLC `id` is fulfilled: its amount goes to the side it was offered to.
    fn fulfill(mut self, id: u8) -> Model {
        let h = self.remove(id);
        match h.side {
            Side::Local => self.theirs_msat += h.amount.to_msat(),
            Side::Remote => self.ours_msat += h.amount.to_msat(),
        }
        self
    }
    /// HTLC `id` fails: its amount goes back to the side that offered it.
    fn fail(mut self, id: u8) -> Model {
        let h = self.remove(id);
        match h.side {
            Side::Local => self.ours_msat += h.amount.to_msat(),
            Side::Remote => self.theirs_msat += h.amount.to_msat(),
        }
        self
    }
    fn feerate(mut self, feerate: u32) -> Model {
        self.feerate = feerate;
        self
    }
}

/// A commitment as a request carries it.
#[derive(Clone)]
struct Built {
    tx: BitcoinTx,
    htlcs: Vec<HsmHtlc>,
    feerate: u32,
}

impl Built {
    /// Moves `sat` from our balance output to the peer's (the theft every rule is about).
    fn move_to_peer(mut self, c: &Chan, owner: Owner, n: u64, sat: u64) -> Built {
        let (ours, theirs) = c.balance_scripts(owner, n);
        for o in &mut self.tx.tx.output {
            if o.script_pubkey == ours {
                o.value = Amount::from_sat(o.value.to_sat() - sat);
            } else if o.script_pubkey == theirs {
                o.value = Amount::from_sat(o.value.to_sat() + sat);
            }
        }
        self.sync()
    }
    /// Takes `sat` from our balance output and leaves it to the fee.
    fn burn(mut self, c: &Chan, owner: Owner, n: u64, sat: u64) -> Built {
        let (ours, _) = c.balance_scripts(owner, n);
        for o in &mut self.tx.tx.output {
            if o.script_pubkey == ours {
                o.value = Amount::from_sat(o.value.to_sat() - sat);
            }
        }
        self.sync()
    }
    fn push_output(mut self, sat: u64, script: ScriptBuf) -> Built {
        self.tx.tx.output.push(TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: script,
        });
        self.sync()
    }
    fn sync(mut self) -> Built {
        let utxo = self.tx.psbt.inputs[0].witness_utxo.clone();
        self.tx.psbt = Psbt::from_unsigned_tx(self.tx.tx.clone()).unwrap().into();
        self.tx.psbt.inputs[0].witness_utxo = utxo;
        self
    }
}

/// A signer with one channel of ours, the peer's own keys, and the clients that talk about
/// it.
struct Chan {
    signer: Signer,
    master: ClientContext,
    channeld: ClientContext,
    peer: ChannelSecrets,
    setup: SetupChannel,
}

impl Chan {
    /// A channel that lightningd declared, not set up yet.
    fn declared(policy: Policy) -> Chan {
        let signer = Signer::new(vec![0x42; 32], Store::temporary().unwrap(), policy);
        let master = ClientContext::master();
        let init = Init::new(
            Bip32KeyVersion::TESTNET,
            ChainHash::REGTEST,
            None,
            None,
            None,
            None,
            None,
            4,
            6,
            InitTlvs::default(),
        );
        signer.handle(&master, None, &encode(init)).unwrap();
        signer
            .handle(&master, None, &encode(NewChannel::new(peer_id(), DBID)))
            .unwrap();
        let channeld = ClientContext::client(peer_id(), DBID, Permissions::CHANNELD);
        let peer = ChannelSecrets::from_seed(&[0x55; 32]).unwrap();
        let setup = setup_msg(&peer);
        Chan {
            signer,
            master,
            channeld,
            peer,
            setup,
        }
    }

    /// A channel set up with `setup` (changed from the default by `change`).
    fn open_with(policy: Policy, change: impl Fn(&mut SetupChannel)) -> Chan {
        let mut c = Chan::declared(policy);
        change(&mut c.setup);
        c.ask(&c.channeld, c.setup.clone()).unwrap();
        c
    }

    fn open(policy: Policy) -> Chan {
        Chan::open_with(policy, |_| {})
    }

    fn ask(&self, client: &ClientContext, m: impl Into<Message>) -> Result<Vec<u8>> {
        self.signer.handle(client, None, &encode(m))
    }

    fn state(&self) -> Option<ChannelState> {
        self.signer.store().channel(&key()).unwrap()
    }

    fn ours(&self) -> std::sync::Arc<ChannelSecrets> {
        self.signer
            .session()
            .unwrap()
            .keys
            .channel_secrets(peer_id().as_bytes(), DBID)
            .unwrap()
    }

    fn point(&self, owner: Owner, n: u64) -> PublicKey {
        match owner {
            Owner::Holder => self.ours().per_commitment_point(n).unwrap(),
            Owner::Counterparty => self.peer.per_commitment_point(n).unwrap(),
        }
    }

    fn scripts(&self, owner: Owner, n: u64) -> Scripts {
        let state = ChannelState::default();
        let ours = self.ours();
        let ch = Channel {
            setup: &self.setup,
            secrets: &ours,
            state: &state,
        };
        let anchors = self
            .setup
            .channel_type
            .has(ChannelType::ANCHORS_ZERO_FEE_HTLC);
        Scripts::of(&ch, owner, &self.point(owner, n), anchors).unwrap()
    }

    /// Our and the peer's balance output scripts on commitment `n` of `owner`.
    fn balance_scripts(&self, owner: Owner, n: u64) -> (ScriptBuf, ScriptBuf) {
        let s = self.scripts(owner, n);
        (s.ours[0].clone(), s.theirs[0].clone())
    }

    /// Commitment `n` of `owner` for the channel state `m`, as BOLT 3 builds it (HTLCs below
    /// the dust limit are trimmed and not listed, as Core Lightning lists only HTLC outputs).
    fn build(&self, owner: Owner, n: u64, m: &Model) -> Built {
        let s = self.scripts(owner, n);
        let anchors = s.anchors_channel;
        let listed: Vec<HsmHtlc> = m
            .htlcs
            .iter()
            .filter(|h| h.amount.to_msat() / 1000 >= DUST)
            .cloned()
            .collect();
        let base = if anchors {
            BASE_WEIGHT_ANCHORS
        } else {
            BASE_WEIGHT
        };
        let fee = u64::from(m.feerate) * (base + HTLC_OUTPUT_WEIGHT * listed.len() as u64) / 1000;
        let cost = (fee + if anchors { 2 * ANCHOR_SAT } else { 0 }) * 1000;
        let (ours, theirs) = if self.setup.is_outbound {
            (m.ours_msat - cost, m.theirs_msat)
        } else {
            (m.ours_msat, m.theirs_msat - cost)
        };
        let mut output = Vec::new();
        if anchors {
            for a in &s.anchors {
                output.push(TxOut {
                    value: Amount::from_sat(ANCHOR_SAT),
                    script_pubkey: a.clone(),
                });
            }
        }
        for (msat, script) in [(ours, &s.ours[0]), (theirs, &s.theirs[0])] {
            if msat / 1000 >= DUST {
                output.push(TxOut {
                    value: Amount::from_sat(msat / 1000),
                    script_pubkey: script.clone(),
                });
            }
        }
        for h in &listed {
            output.push(TxOut {
                value: Amount::from_sat(h.amount.to_msat() / 1000),
                script_pubkey: s.htlc(h, owner),
            });
        }
        let funding = OutPoint {
            txid: self.setup.funding_txid,
            vout: u32::from(self.setup.funding_txout),
        };
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: funding,
                ..TxIn::default()
            }],
            output,
        };
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
        let script = funding_redeem_script(
            &self.ours().basepoints().funding_pubkey,
            &self.setup.remote_funding_pubkey,
        );
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(VALUE_SAT),
            script_pubkey: ScriptBuf::new_p2wsh(&script.wscript_hash()),
        });
        Built {
            tx: BitcoinTx {
                tx,
                psbt: psbt.into(),
            },
            htlcs: listed,
            feerate: m.feerate,
        }
    }

    fn sign_remote(&self, n: u64, b: &Built) -> Result<Vec<u8>> {
        let m = SignRemoteCommitmentTx::new(
            b.tx.clone(),
            self.setup.remote_funding_pubkey,
            self.point(Owner::Counterparty, n),
            true,
            n,
            b.htlcs.clone(),
            b.feerate,
        );
        self.ask(&self.channeld, m)
    }

    fn validate(&self, n: u64, b: &Built) -> Result<Vec<u8>> {
        let sig = crate::test_support::peer_commitment_sig(
            &b.tx.tx,
            &self.ours().basepoints().funding_pubkey,
            &self.peer.funding_key,
            Amount::from_sat(VALUE_SAT),
        );
        let htlc_sigs = self.htlc_sigs(n, b);
        let m =
            ValidateCommitmentTx::new(b.tx.clone(), b.htlcs.clone(), n, b.feerate, sig, htlc_sigs);
        self.ask(&self.channeld, m)
    }

    /// The peer's signatures of the HTLC transactions of our commitment `n` (`b`), in the
    /// order of its HTLC outputs, as `commitment_signed` carries them.
    fn htlc_sigs(&self, n: u64, b: &Built) -> Vec<BitcoinSignature> {
        let ours = self.ours();
        let state = self.state().unwrap_or_default();
        let ch = Channel {
            setup: &self.setup,
            secrets: &ours,
            state: &state,
        };
        let point = ours.per_commitment_point(n).unwrap();
        let t = &self.setup.channel_type;
        let anchors =
            t.has(ChannelType::ANCHORS_ZERO_FEE_HTLC) || t.has(ChannelType::ANCHOR_OUTPUTS);
        let scripts = Scripts::of(&ch, Owner::Holder, &point, anchors).unwrap();
        let delayed = derive_simple_pubkey(&ours.basepoints().delayed_payment, &point).unwrap();
        let to_local = p2wsh(to_local_script(
            &scripts.revocation,
            self.setup.remote_to_self_delay,
            &delayed,
        ));
        let key =
            crate::keys::channel::derive_simple_privkey(&self.peer.htlc_basepoint_secret, &point)
                .unwrap();
        let (flag, ty) = if anchors {
            (
                SighashFlag::SingleAnyoneCanPay,
                EcdsaSighashType::SinglePlusAnyoneCanPay,
            )
        } else {
            (SighashFlag::All, EcdsaSighashType::All)
        };
        let txid = b.tx.tx.compute_txid();
        let mut left: Vec<&HsmHtlc> = b.htlcs.iter().collect();
        let mut sigs = Vec::new();
        for (i, out) in b.tx.tx.output.iter().enumerate() {
            let sat = out.value.to_sat();
            let Some(at) = left.iter().position(|h| {
                scripts.htlc(h, Owner::Holder) == out.script_pubkey
                    && h.amount.to_msat() / 1000 == sat
            }) else {
                continue;
            };
            let h = left.remove(at);
            let tx = crate::bolt3::htlc_tx(
                OutPoint {
                    txid,
                    vout: i as u32,
                },
                sat,
                h.side == Side::Local,
                h.cltv_expiry,
                to_local.clone(),
                b.feerate,
                anchors,
            );
            let wscript = scripts.htlc_wscript(h, Owner::Holder);
            let msg = segwit_v0_sighash(&tx, 0, &wscript, Amount::from_sat(sat), ty).unwrap();
            sigs.push(BitcoinSignature {
                sig: sign_ecdsa_cln_grind(&msg, &key),
                sighash: flag,
            });
        }
        sigs
    }

    fn sign_holder(&self, n: u64, b: &Built) -> Result<Vec<u8>> {
        let m = SignCommitmentTx::new(
            peer_id(),
            DBID,
            b.tx.clone(),
            self.setup.remote_funding_pubkey,
            n,
        );
        self.ask(&self.master, m)
    }

    /// Commitment `n` of both sides for `m`, signed and validated, and `n - 1` revoked both
    /// ways: one BOLT 2 round.
    fn step(&self, n: u64, m: &Model) {
        self.sign_remote(n, &self.build(Owner::Counterparty, n, m))
            .unwrap();
        self.validate(n, &self.build(Owner::Holder, n, m)).unwrap();
        if n > 0 {
            self.ask(&self.channeld, RevokeCommitmentTx::new(n - 1))
                .unwrap();
            let secret = self.peer.per_commitment_secret(n - 1).unwrap();
            self.ask(
                &self.channeld,
                ValidateRevocation::new(n - 1, protocol::types::Secret(secret)),
            )
            .unwrap();
        }
    }

    /// Rounds 0..models.len() with these states.
    fn history(&self, models: &[Model]) {
        for (n, m) in models.iter().enumerate() {
            self.step(n as u64, m);
        }
    }

    /// What Core Lightning answers `sign_remote_commitment_tx` / `sign_commitment_tx` with:
    /// our funding signature.
    fn funding_sig(&self, b: &Built) -> BitcoinSignature {
        let ours = self.ours();
        let script = funding_redeem_script(
            &ours.basepoints().funding_pubkey,
            &self.setup.remote_funding_pubkey,
        );
        let msg = segwit_v0_sighash(
            &b.tx.tx,
            0,
            &script,
            Amount::from_sat(VALUE_SAT),
            EcdsaSighashType::All,
        )
        .unwrap();
        BitcoinSignature {
            sig: sign_ecdsa_cln_grind(&msg, &ours.funding_key),
            sighash: SighashFlag::All,
        }
    }

    fn sign_reply(&self, b: &Built) -> Vec<u8> {
        encode(SignTxReply::new(self.funding_sig(b)))
    }

    fn validate_reply(&self, n: u64) -> Vec<u8> {
        encode(ValidateCommitmentTxReply::new(
            None,
            self.point(Owner::Holder, n + 1),
        ))
    }
}

/// Runs `attack` on the channel `prepare` builds (with `policy` enforcing): `rule` refuses it
/// and no state changes. With every rule warned, it is answered with `expected`, what Core
/// Lightning answers.
fn refused(
    rule: &str,
    policy: Policy,
    prepare: impl Fn(&Chan),
    attack: impl Fn(&Chan) -> Result<Vec<u8>>,
    expected: impl Fn(&Chan) -> Vec<u8>,
) {
    let c = Chan::declared(policy);
    prepare(&c);
    let before = c.state();
    let e = attack(&c).expect_err("an enforced rule must refuse");
    assert_eq!(e.rule(), Some(rule), "{e}");
    assert!(e.description().starts_with(&format!("policy {rule}: ")));
    assert_eq!(c.state(), before, "a refusal changes no state");

    let c = Chan::declared(Policy::warn_only());
    prepare(&c);
    assert_eq!(attack(&c).expect("warn mode answers"), expected(&c));
}

fn set_up(c: &Chan) {
    c.ask(&c.channeld, c.setup.clone()).unwrap();
}

/// Every rule enforced, the push of [`setup_msg`] allowed by the operator.
fn enforcing() -> Policy {
    with_limits("")
}

/// [`enforcing`] with further `limits` (TOML lines of a `[limits]` table). The HTLCs these
/// channels offer are payments nobody preapproved: whether they may be offered is the payment
/// rules' question (tested in `handlers::forwards`), so that rule only warns here.
fn with_limits(limits: &str) -> Policy {
    Policy::from_toml(&format!(
        "[rules]\nhtlc-forward-matched = \"warn\"\n[limits]\nmax_push_msat = {PUSH_MSAT}\n{limits}\n"
    ))
    .unwrap()
}

/// The channel states of a well-behaved channel: payments both ways, a trimmed HTLC, fee
/// changes.
fn well_behaved_history() -> Vec<Model> {
    let m0 = Model::opening();
    let m1 = m0.clone().offer(50_000_000, 1);
    let m2 = m1.clone().fulfill(1).receive(30_000_000, 2);
    let m3 = m2.clone().fulfill(2).offer(300_000, 3);
    let m4 = m3
        .clone()
        .feerate(5_000)
        .offer(20_000_000, 4)
        .receive(400_000, 5);
    let m5 = m4.clone().fail(3).fail(4).fulfill(5).feerate(1_000);
    vec![m0, m1, m2, m3, m4, m5]
}

#[test]
fn a_well_behaved_channel_passes_every_rule_enforced() {
    let c = Chan::open(enforcing());
    let history = well_behaved_history();
    c.history(&history);
    let n = history.len() as u64 - 1;
    let last = c.build(Owner::Holder, n, &history[n as usize]);
    assert_eq!(
        c.sign_holder(n, &last).unwrap(),
        encode(SignCommitmentTxReply::new(c.funding_sig(&last)))
    );
    let s = c.state().unwrap();
    assert_eq!(
        s.holder_balances.keys().copied().collect::<Vec<_>>(),
        vec![n - 1, n]
    );
    assert_eq!(
        s.counterparty_balances.keys().copied().collect::<Vec<_>>(),
        vec![n - 1, n]
    );
    // Funded by us: 1 000 000 - 200 000 pushed + 30 000 received - 50 000 paid - fee - anchors.
    let fee = 1_000 * BASE_WEIGHT_ANCHORS / 1000;
    assert_eq!(s.holder_balances[&n].ours_sat, 780_000 - fee - 660 + 400);
    assert_eq!(s.holder_balances[&n].offered, vec![]);

    // The peer funds: our balance is what it pushed, and its fees are not ours to pay.
    let c = Chan::open_with(enforcing(), |s| s.is_outbound = false);
    let m0 = Model {
        ours_msat: PUSH_MSAT,
        theirs_msat: VALUE_SAT * 1000 - PUSH_MSAT,
        htlcs: vec![],
        feerate: 253,
    };
    let m1 = m0.clone().feerate(20_000).receive(1_000_000, 1);
    let m2 = m1.clone().fulfill(1).offer(5_000_000, 2);
    c.history(&[m0, m1, m2]);
}

#[test]
fn setup_refuses_unsafe_channel_types() {
    let with_type = |bits: &'static [usize], outbound: bool| {
        move |c: &Chan| {
            let mut m = c.setup.clone();
            m.channel_type = ChannelType::from_bits(bits);
            m.is_outbound = outbound;
            c.ask(&c.channeld, m)
        }
    };
    let answered = |_: &Chan| encode(SetupChannelReply::new());
    for (bits, outbound) in [
        (&[][..], true),
        (&[20][..], true),
        (&[12, 20][..], true),
        (&[12, 22, 100][..], true),
        (&[13][..], true),
        (&[12, 22, 50][..], false),
    ] {
        refused(
            SAFE_TYPE,
            enforcing(),
            |_| {},
            with_type(bits, outbound),
            answered,
        );
    }
    for (bits, outbound) in [
        (&[12][..], true),
        (&[22][..], false),
        (&[12, 22, 46][..], false),
        (&[12, 22, 46, 50][..], true),
    ] {
        let c = Chan::declared(enforcing());
        with_type(bits, outbound)(&c).unwrap_or_else(|e| panic!("{bits:?}: {e}"));
    }
}

#[test]
fn setup_refuses_delays_out_of_range() {
    let answered = |_: &Chan| encode(SetupChannelReply::new());
    for (local, remote) in [(143, 144), (144, 2017), (0, 0), (u16::MAX, 144)] {
        refused(
            TO_SELF_DELAY,
            with_limits("min_to_self_delay = 144"),
            |_| {},
            move |c| {
                let mut m = c.setup.clone();
                m.local_to_self_delay = local;
                m.remote_to_self_delay = remote;
                c.ask(&c.channeld, m)
            },
            answered,
        );
    }
}

#[test]
fn test_networks_take_the_delays_stock_nodes_use_and_mainnet_keeps_its_bounds() {
    // The harness's node runs on regtest: Core Lightning's regtest delays pass by default.
    let c = Chan::declared(enforcing());
    let mut m = c.setup.clone();
    m.local_to_self_delay = 6;
    m.remote_to_self_delay = 5;
    c.ask(&c.channeld, m).expect("regtest's delays");
    let mainnet = enforcing().for_network(bitcoin::Network::Bitcoin);
    assert_eq!(mainnet.limits.min_to_self_delay, 144);
    let regtest = enforcing().for_network(bitcoin::Network::Regtest);
    assert_eq!(regtest.limits.min_to_self_delay, 0);
    // A limit the operator set holds on every network.
    let set = Policy::from_toml("[limits]\nmin_to_self_delay = 10\n")
        .unwrap()
        .for_network(bitcoin::Network::Regtest);
    assert_eq!(set.limits.min_to_self_delay, 10);
    assert!(set
        .to_toml()
        .contains("set by the policy file on every network: min_to_self_delay"));
    assert!(regtest.to_toml().contains("# limits on regtest"));
}

#[test]
fn setup_refuses_channels_too_large_or_pushing_too_much() {
    let answered = |_: &Chan| encode(SetupChannelReply::new());
    refused(
        MAX_VALUE,
        enforcing(),
        |_| {},
        |c| {
            let mut m = c.setup.clone();
            m.channel_value = Amount::from_sat(100_000_001);
            c.ask(&c.channeld, m)
        },
        answered,
    );
    refused(
        MAX_VALUE,
        enforcing(),
        |_| {},
        |c| {
            let mut m = c.setup.clone();
            m.push_value = AmountMsat::from_msat(VALUE_SAT * 1000 + 1);
            c.ask(&c.channeld, m)
        },
        answered,
    );
    // The limit is the operator's.
    let c = Chan::declared(with_limits("max_channel_value_sat = 500000"));
    assert_eq!(
        c.ask(&c.channeld, c.setup.clone()).unwrap_err().rule(),
        Some(MAX_VALUE)
    );
    // A push from a channel we fund is a payment without an invoice: none by default, up to
    // what the operator allows; a peer's push to us is no spending of ours.
    let c = Chan::declared(Policy::enforcing());
    assert_eq!(
        c.ask(&c.channeld, c.setup.clone()).unwrap_err().rule(),
        Some(PUSH_LIMIT)
    );
    refused(
        PUSH_LIMIT,
        enforcing(),
        |_| {},
        |c| {
            let mut m = c.setup.clone();
            m.push_value = AmountMsat::from_msat(PUSH_MSAT + 1);
            c.ask(&c.channeld, m)
        },
        answered,
    );
    let c = Chan::declared(Policy::enforcing());
    let mut inbound = c.setup.clone();
    inbound.is_outbound = false;
    c.ask(&c.channeld, inbound).unwrap();
}

#[test]
fn commitment_feerate_must_be_in_range() {
    for feerate in [252, 100_001] {
        let m = Model::opening().feerate(feerate);
        refused(
            FEERATE,
            enforcing(),
            set_up,
            |c| c.sign_remote(0, &c.build(Owner::Counterparty, 0, &m)),
            |c| c.sign_reply(&c.build(Owner::Counterparty, 0, &m)),
        );
        refused(
            FEERATE,
            enforcing(),
            set_up,
            |c| c.validate(0, &c.build(Owner::Holder, 0, &m)),
            |c| c.validate_reply(0),
        );
    }
}

/// The fee rate is what the transaction pays, whatever the request says: openingd sends 0 for
/// the first commitment, and a request cannot make a transaction that pays too much pass.
#[test]
fn commitment_feerate_is_read_from_the_transaction() {
    let c = Chan::open(enforcing());
    let mut b = c.build(Owner::Counterparty, 0, &Model::opening());
    b.feerate = 0;
    c.sign_remote(0, &b)
        .expect("openingd's feerate 0 on a commitment paying 253 sat/kw");
    let mut h = c.build(Owner::Holder, 0, &Model::opening());
    h.feerate = 0;
    c.validate(0, &h).expect("the same for our own commitment");

    let m = Model::opening().feerate(100_001);
    refused(
        FEERATE,
        enforcing(),
        set_up,
        |c| {
            let mut b = c.build(Owner::Counterparty, 0, &m);
            b.feerate = 253;
            c.sign_remote(0, &b)
        },
        |c| c.sign_reply(&c.build(Owner::Counterparty, 0, &m)),
    );
}

#[test]
fn commitment_htlcs_are_limited_in_number_and_value() {
    let three = Model::opening()
        .offer(1_000_000, 1)
        .offer(1_000_000, 2)
        .receive(1_000_000, 3);
    let policy = || with_limits("max_htlcs = 2");
    let m = three.clone();
    refused(
        HTLC_LIMITS,
        policy(),
        set_up,
        move |c| c.sign_remote(0, &c.build(Owner::Counterparty, 0, &m)),
        move |c| c.sign_reply(&c.build(Owner::Counterparty, 0, &three)),
    );
    let big = Model::opening().receive(100_000_001, 1);
    let m = big.clone();
    refused(
        HTLC_LIMITS,
        with_limits("max_htlc_value_msat = 100000000"),
        set_up,
        move |c| c.validate(0, &c.build(Owner::Holder, 0, &m)),
        |c| c.validate_reply(0),
    );
    let _ = big;
}

#[test]
fn every_htlc_output_must_be_a_listed_htlc() {
    let m1 = Model::opening().offer(10_000_000, 1);
    // An output paying some other script.
    let stranger = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([9; 32]));
    let attack = {
        let (m1, stranger) = (m1.clone(), stranger.clone());
        move |c: &Chan| {
            c.build(Owner::Counterparty, 1, &m1)
                .push_output(5_000, stranger.clone())
        }
    };
    let a = attack.clone();
    refused(
        HTLC_LIMITS,
        enforcing(),
        |c| {
            set_up(c);
            c.history(&[Model::opening()]);
        },
        move |c| c.sign_remote(1, &a(c)),
        move |c| c.sign_reply(&attack(c)),
    );
    // A real HTLC output the request does not list.
    let unlisted = move |c: &Chan| {
        let mut b = c.build(Owner::Holder, 1, &m1);
        b.htlcs.clear();
        b
    };
    let u = unlisted.clone();
    refused(
        HTLC_LIMITS,
        enforcing(),
        |c| {
            set_up(c);
            c.history(&[Model::opening()]);
        },
        move |c| c.validate(1, &u(c)),
        |c| c.validate_reply(1),
    );
    // A listed HTLC whose output carries another amount.
    let m = Model::opening().offer(10_000_000, 1);
    refused(
        HTLC_LIMITS,
        enforcing(),
        |c| {
            set_up(c);
            c.history(&[Model::opening()]);
        },
        move |c| {
            let mut b = c.build(Owner::Counterparty, 1, &m);
            b.htlcs[0].amount = AmountMsat::from_msat(11_000_000);
            c.sign_remote(1, &b)
        },
        move |c| {
            let b = c.build(
                Owner::Counterparty,
                1,
                &Model::opening().offer(10_000_000, 1),
            );
            c.sign_reply(&b)
        },
    );
}

#[test]
fn no_commitment_output_is_below_the_smallest_dust_limit() {
    let m = Model::opening();
    let dusty = move |c: &Chan| {
        let (ours, _) = c.balance_scripts(Owner::Counterparty, 0);
        c.build(Owner::Counterparty, 0, &m)
            .burn(c, Owner::Counterparty, 0, 353)
            .push_output(353, ours)
    };
    let d = dusty.clone();
    refused(
        DUST_LIMIT,
        enforcing(),
        set_up,
        move |c| c.sign_remote(0, &d(c)),
        move |c| c.sign_reply(&dusty(c)),
    );
}

#[test]
fn a_commitment_must_spend_the_funding_outpoint_and_no_more_than_the_channel() {
    let other_outpoint = |c: &Chan| {
        let mut b = c.build(Owner::Counterparty, 0, &Model::opening());
        b.tx.tx.input[0].previous_output.vout = 0;
        b.sync()
    };
    refused(
        BALANCE,
        enforcing(),
        set_up,
        move |c| c.sign_remote(0, &other_outpoint(c)),
        move |c| c.sign_reply(&other_outpoint(c)),
    );
    // The amount signed for is not the channel's.
    let bigger = |c: &Chan| {
        let mut b = c.build(Owner::Holder, 0, &Model::opening());
        b.tx.psbt.inputs[0].witness_utxo.as_mut().unwrap().value = Amount::from_sat(2 * VALUE_SAT);
        b
    };
    refused(
        BALANCE,
        enforcing(),
        set_up,
        move |c| c.validate(0, &bigger(c)),
        |c| c.validate_reply(0),
    );
    // Outputs worth more than the channel.
    let inflated = |c: &Chan| {
        let (ours, _) = c.balance_scripts(Owner::Holder, 0);
        c.build(Owner::Holder, 0, &Model::opening())
            .push_output(VALUE_SAT, ours)
    };
    refused(
        BALANCE,
        enforcing(),
        set_up,
        move |c| c.validate(0, &inflated(c)),
        |c| c.validate_reply(0),
    );
    // lock_outpoint moves the funding outpoint (a splice): the old one is no longer signed.
    let c = Chan::open(enforcing());
    c.history(&[Model::opening()]);
    c.ask(
        &c.channeld,
        LockOutpoint::new(Txid::from_byte_array([8; 32]), 0),
    )
    .unwrap();
    let b = c.build(Owner::Counterparty, 1, &Model::opening());
    assert_eq!(c.sign_remote(1, &b).unwrap_err().rule(), Some(BALANCE));
}

#[test]
fn our_balance_never_drops_without_an_htlc_we_offer_or_our_fee() {
    let history = well_behaved_history();
    let last = history.len() as u64;
    let next = history[history.len() - 1].clone();
    for owner in [Owner::Counterparty, Owner::Holder] {
        // Straight to the peer.
        let (h, m) = (history.clone(), next.clone());
        let attack = move |c: &Chan| c.build(owner, last, &m).move_to_peer(c, owner, last, 1);
        let a = attack.clone();
        refused(
            BALANCE,
            enforcing(),
            move |c| {
                set_up(c);
                c.history(&h);
            },
            move |c| match owner {
                Owner::Counterparty => c.sign_remote(last, &a(c)),
                Owner::Holder => c.validate(last, &a(c)),
            },
            move |c| match owner {
                Owner::Counterparty => c.sign_reply(&attack(c)),
                Owner::Holder => c.validate_reply(last),
            },
        );
    }
    // The first commitment must give us what the opening did.
    let steal = |c: &Chan| {
        c.build(Owner::Counterparty, 0, &Model::opening())
            .move_to_peer(c, Owner::Counterparty, 0, 1000)
    };
    refused(
        BALANCE,
        enforcing(),
        set_up,
        move |c| c.sign_remote(0, &steal(c)),
        move |c| c.sign_reply(&steal(c)),
    );
    // An HTLC that stays offered does not excuse a second drop.
    let m1 = Model::opening().offer(50_000_000, 1);
    let m2 = m1.clone().feerate(253);
    let (p1, a2) = (m1.clone(), m2.clone());
    let again = move |c: &Chan| {
        c.build(Owner::Counterparty, 2, &a2)
            .move_to_peer(c, Owner::Counterparty, 2, 40_000)
    };
    let g = again.clone();
    refused(
        BALANCE,
        enforcing(),
        move |c| {
            set_up(c);
            c.history(&[Model::opening(), p1.clone()]);
        },
        move |c| c.sign_remote(2, &g(c)),
        move |c| c.sign_reply(&again(c)),
    );
    // When our fee drops, our balance grows by as much.
    let m1 = Model::opening().feerate(10_000);
    let m2 = m1.clone().feerate(1_000);
    let (p1, a2) = (m1.clone(), m2.clone());
    let kept = move |c: &Chan| {
        c.build(Owner::Holder, 2, &a2)
            .move_to_peer(c, Owner::Holder, 2, 500)
    };
    refused(
        BALANCE,
        enforcing(),
        move |c| {
            set_up(c);
            c.history(&[Model::opening(), p1.clone()]);
        },
        move |c| c.validate(2, &kept(c)),
        |c| c.validate_reply(2),
    );
}

#[test]
fn value_left_out_of_the_outputs_is_capped() {
    // 60 000 sat of our balance burnt to fees: more than trimmed outputs may hold.
    let burn = |c: &Chan| {
        c.build(Owner::Counterparty, 1, &Model::opening())
            .burn(c, Owner::Counterparty, 1, 60_001)
    };
    let b = burn;
    refused(
        BALANCE,
        enforcing(),
        |c| {
            set_up(c);
            c.history(&[Model::opening()]);
        },
        move |c| c.sign_remote(1, &b(c)),
        move |c| c.sign_reply(&burn(c)),
    );
    // What may be trimmed is the operator's to say.
    let c = Chan::open(with_limits("max_commitment_dust_sat = 100"));
    c.history(&[Model::opening()]);
    let m = Model::opening().offer(300_000, 1).offer(200_000, 2);
    let b = c.build(Owner::Counterparty, 1, &m);
    assert_eq!(c.sign_remote(1, &b).unwrap_err().rule(), Some(BALANCE));
}

#[test]
fn our_commitment_for_broadcast_gives_us_what_it_did_when_validated() {
    let history = [Model::opening(), Model::opening().offer(10_000_000, 1)];
    let h = history.clone();
    let less = move |c: &Chan| {
        c.build(Owner::Holder, 1, &h[1])
            .move_to_peer(c, Owner::Holder, 1, 1)
    };
    let l = less.clone();
    let h = history.clone();
    refused(
        BALANCE,
        enforcing(),
        move |c| {
            set_up(c);
            c.history(&h);
        },
        move |c| c.sign_holder(1, &l(c)),
        move |c| encode(SignCommitmentTxReply::new(c.funding_sig(&less(c)))),
    );
    // Never validated: its balance is unknown.
    let m = Model::opening();
    refused(
        BALANCE,
        enforcing(),
        |c| {
            set_up(c);
            c.history(&[Model::opening()]);
        },
        move |c| c.sign_holder(1, &c.build(Owner::Holder, 1, &m)),
        |c| {
            let b = c.build(Owner::Holder, 1, &Model::opening());
            encode(SignCommitmentTxReply::new(c.funding_sig(&b)))
        },
    );
}

#[test]
fn warn_mode_records_what_was_signed() {
    let c = Chan::open(Policy::warn_only());
    c.history(&[Model::opening()]);
    let b = c
        .build(Owner::Counterparty, 1, &Model::opening())
        .move_to_peer(&c, Owner::Counterparty, 1, 1_000);
    c.sign_remote(1, &b).unwrap();
    let s = c.state().unwrap();
    assert_eq!(
        s.counterparty_balances[&1].ours_sat + 1_000,
        s.counterparty_balances[&0].ours_sat
    );
}

fn corpus_cases() -> Vec<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/conformance/cln-hsmd-golden.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// Replays the golden corpus's four channels with this module's rules enforced (every other
/// rule warned), returning the refusals as (case, step, rule).
fn replay_channels(policy_toml: &str) -> Vec<(String, usize, &'static str)> {
    let mut refusals = Vec::new();
    for case in corpus_cases() {
        let name = case["name"].as_str().unwrap();
        if !name.starts_with("channel_") || !name.contains("_open") {
            continue;
        }
        let secret = hex::decode(case["hsm_secret"].as_str().unwrap()).unwrap();
        let policy = Policy::from_toml(policy_toml).unwrap();
        let signer = Signer::new(secret, Store::temporary().unwrap(), policy);
        let mut clients = vec![ClientContext::master()];
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
            let client = &clients[step["client"].as_u64().unwrap() as usize];
            match signer.handle(client, Some(i as u64), &req) {
                Ok(reply) => assert_eq!(
                    hex::encode(reply),
                    step["reply"].as_str().unwrap(),
                    "{name} step {i}"
                ),
                Err(SignerError::Policy { rule, .. }) => refusals.push((name.to_string(), i, rule)),
                Err(e) => panic!("{name} step {i}: {e}"),
            }
            if let Ok(h) = ClientHsmfd::decode(&req) {
                clients.push(ClientContext::client(
                    h.id,
                    h.dbid,
                    Permissions::from_bits(h.permissions),
                ));
            }
        }
    }
    refusals
}

fn content_rules(mode_of_balance: &str) -> String {
    let mut toml = String::from("default = \"warn\"\n[rules]\n");
    for rule in [
        SAFE_TYPE,
        TO_SELF_DELAY,
        MAX_VALUE,
        DUST_LIMIT,
        FEERATE,
        HTLC_LIMITS,
    ] {
        toml.push_str(&format!("{rule} = \"enforce\"\n"));
    }
    toml.push_str(&format!("{BALANCE} = \"{mode_of_balance}\"\n"));
    toml
}

/// Core Lightning's channels in the golden corpus (BOLT 3 transactions with real keys, both
/// channel types, either side funding, HTLCs both ways) pass every content rule: the scripts
/// this module recognises outputs by are the real ones.
#[test]
fn golden_corpus_channels_pass_the_content_rules() {
    assert_eq!(replay_channels(&content_rules("warn")), vec![]);
    // The corpus's commitment after the first is built from made-up balances: where we fund,
    // it moves value from us to the peer that no HTLC explains, and `commitment-balance`
    // sees it (and then refuses the unvalidated commitment for broadcast). Its first
    // commitments, and every commitment where the peer funds, pass.
    let refusals = replay_channels(&content_rules("enforce"));
    let expected: Vec<(String, usize, &str)> = [
        "channel_static_remotekey_we_open",
        "channel_anchors_we_open",
    ]
    .iter()
    .flat_map(|c| [13, 16, 20].map(|i| (c.to_string(), i, BALANCE)))
    .collect();
    assert_eq!(refusals, expected);
}

/// lightningd signs the peer's commitment 1 with an HTLC we offer, crashes before it persists
/// that, and on restart signs commitment 1 again without it (Core Lightning #9213): the second
/// version passes like the first, the channel goes on, and the payment may be retried (only
/// one of the commitments that carry it can confirm), but once claimed not paid again.
#[test]
fn a_commitment_signed_again_after_a_crash_lets_the_channel_go_on() {
    let c =
        Chan::open(Policy::from_toml(&format!("[limits]\nmax_push_msat = {PUSH_MSAT}\n")).unwrap());
    let keysend = PreapproveKeysend::new(
        peer_id(),
        sha256::Hash::hash(&[1]),
        AmountMsat::from_msat(50_000_000),
    );
    let approved = c.ask(&c.master, keysend).unwrap();
    assert!(PreapproveKeysendReply::decode(&approved).unwrap().approved);
    let m0 = Model::opening();
    c.step(0, &m0);
    let paying = m0.clone().offer(50_000_000, 1);
    c.sign_remote(1, &c.build(Owner::Counterparty, 1, &paying))
        .unwrap();
    // The restart: commitment 1 again, without the HTLC (lightningd never stored it).
    c.step(1, &m0);
    // The retry on the same channel: whichever commitment confirms pays it once.
    let retry = m0.clone().offer(50_000_000, 1);
    c.step(2, &retry);
    c.step(3, &retry.clone().fulfill(1));
    // It was claimed: paying it once more is refused.
    let again = retry.fulfill(1).offer(50_000_000, 1);
    let e = c
        .sign_remote(4, &c.build(Owner::Counterparty, 4, &again))
        .unwrap_err();
    assert_eq!(e.rule(), Some("payment-within-approved-amount"));
}

/// The peer's signatures of our commitment's HTLC transactions are checked: one per HTLC
/// output, each valid for its own HTLC transaction.
#[test]
fn our_commitment_needs_the_peers_valid_htlc_signatures() {
    let c = Chan::open(enforcing());
    let m0 = Model::opening();
    c.step(0, &m0);
    let m1 = m0.clone().offer(50_000_000, 1).receive(30_000_000, 2);
    c.sign_remote(1, &c.build(Owner::Counterparty, 1, &m1))
        .unwrap();
    let b = c.build(Owner::Holder, 1, &m1);
    let sig = crate::test_support::peer_commitment_sig(
        &b.tx.tx,
        &c.ours().basepoints().funding_pubkey,
        &c.peer.funding_key,
        Amount::from_sat(VALUE_SAT),
    );
    let good = c.htlc_sigs(1, &b);
    assert_eq!(good.len(), 2);
    let ask = |sigs: Vec<BitcoinSignature>| {
        let m = ValidateCommitmentTx::new(b.tx.clone(), b.htlcs.clone(), 1, b.feerate, sig, sigs);
        c.ask(&c.channeld, m)
    };
    let before = c.state();
    // Missing, swapped, or one too many: refused, nothing recorded.
    for sigs in [
        vec![],
        vec![good[0]],
        vec![good[1], good[0]],
        vec![good[0], good[1], good[1]],
    ] {
        let e = ask(sigs).unwrap_err();
        assert_eq!(e.rule(), Some(SIGNED_BY_PEER), "{e}");
        assert_eq!(c.state(), before);
    }
    // With SIGHASH_ALL where BOLT 3 says SINGLE|ANYONECANPAY.
    let mut all = good.clone();
    all[0].sighash = SighashFlag::All;
    assert_eq!(ask(all).unwrap_err().rule(), Some(SIGNED_BY_PEER));
    ask(good).unwrap();
}
