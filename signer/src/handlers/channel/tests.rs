//! The channel state machine through [`Signer::handle`]: a well-behaved channel passes an
//! enforcing policy, and each rule refuses its attack in enforce mode (naming the rule and
//! changing no state) while warn mode answers as Core Lightning would.

use crate::context::{ChannelKey, ClientContext};
use crate::keys::ChannelSecrets;
use crate::policy::Policy;
use crate::store::{ChannelState, Store};
use crate::{Signer, SignerError};
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut, Txid};
use protocol::msgs::*;
use protocol::types::{
    AmountMsat, Basepoints, Bip32KeyVersion, BitcoinTx, ChannelType, NodeId, Secret,
};
use protocol::{Message, Permissions};
use secp256k1::{PublicKey, SecretKey, SECP256K1};

const DBID: u64 = 42;

/// Every rule enforced but the commitment content rules, which the toy transactions here do
/// not satisfy (`policy_channel`'s tests build BOLT 3 commitments for those).
fn state_rules_enforced() -> Policy {
    let mut toml = String::from("[rules]\n");
    for rule in [
        "commitment-feerate",
        "commitment-htlc-limits",
        "channel-dust-limit",
        "commitment-balance",
    ] {
        toml.push_str(&format!("{rule} = \"warn\"\n"));
    }
    Policy::from_toml(&toml).expect("known rules")
}

/// A signer with one channel, the peer's own keys, and the clients that talk about it.
struct Channel {
    signer: Signer,
    master: ClientContext,
    channeld: ClientContext,
    peer: ChannelSecrets,
}

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

/// A one-input, one-output transaction spending 1_000_000 sat, with its PSBT.
fn tx() -> BitcoinTx {
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([7; 32]),
                vout: 1,
            },
            ..TxIn::default()
        }],
        output: vec![TxOut {
            value: Amount::from_sat(990_000),
            script_pubkey: ScriptBuf::new(),
        }],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(1_000_000),
        script_pubkey: ScriptBuf::new(),
    });
    BitcoinTx {
        tx,
        psbt: psbt.into(),
    }
}

impl Channel {
    fn new(store: Store, policy: Policy, version: u32) -> Channel {
        let signer = Signer::new(vec![0x42; 32], store, policy);
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
            version,
            InitTlvs::default(),
        );
        signer.handle(&master, None, &encode(init)).unwrap();
        let channeld = ClientContext::client(peer_id(), DBID, Permissions::CHANNELD);
        let peer = ChannelSecrets::from_seed(&[0x55; 32]).unwrap();
        Channel {
            signer,
            master,
            channeld,
            peer,
        }
    }

    /// A channel that lightningd declared and channeld set up.
    fn set_up(policy: Policy) -> Channel {
        let c = Channel::new(Store::temporary().unwrap(), policy, 6);
        c.new_channel().unwrap();
        c.setup().unwrap();
        c
    }

    fn ask(&self, client: &ClientContext, m: impl Into<Message>) -> Result<Vec<u8>, SignerError> {
        self.signer.handle(client, None, &encode(m))
    }

    fn state(&self) -> Option<ChannelState> {
        self.signer.store().channel(&key()).unwrap()
    }

    fn new_channel(&self) -> Result<Vec<u8>, SignerError> {
        self.ask(&self.master, NewChannel::new(peer_id(), DBID))
    }

    fn setup(&self) -> Result<Vec<u8>, SignerError> {
        self.setup_funded_by(7)
    }

    /// `setup_channel` with the funding transaction `[byte; 32]`.
    fn setup_funded_by(&self, byte: u8) -> Result<Vec<u8>, SignerError> {
        let p = self.peer.basepoints();
        let m = SetupChannel::new(
            true,
            Amount::from_sat(1_000_000),
            AmountMsat::ZERO,
            Txid::from_byte_array([byte; 32]),
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
        );
        self.ask(&self.channeld, m)
    }

    fn remote_point(&self, n: u64) -> PublicKey {
        self.peer.per_commitment_point(n).unwrap()
    }

    fn sign_remote(&self, n: u64) -> Result<Vec<u8>, SignerError> {
        self.sign_remote_with(n, self.remote_point(n))
    }

    fn sign_remote_with(&self, n: u64, point: PublicKey) -> Result<Vec<u8>, SignerError> {
        let m = SignRemoteCommitmentTx::new(
            tx(),
            self.peer.basepoints().funding_pubkey,
            point,
            true,
            n,
            vec![],
            253,
        );
        self.ask(&self.channeld, m)
    }

    fn validate(&self, n: u64) -> Result<Vec<u8>, SignerError> {
        let sig = self.peer_sig(&tx().tx);
        self.ask(
            &self.channeld,
            ValidateCommitmentTx::new(tx(), vec![], n, 253, sig, vec![]),
        )
    }

    /// The peer's signature on our commitment `tx`.
    fn peer_sig(&self, tx: &Transaction) -> protocol::types::BitcoinSignature {
        self.sig_by(tx, &self.peer.funding_key)
    }

    /// A signature by `key` on our commitment `tx`, made as the peer's would be.
    fn sig_by(&self, tx: &Transaction, key: &SecretKey) -> protocol::types::BitcoinSignature {
        let ours = self
            .signer
            .session()
            .unwrap()
            .keys
            .channel_secrets(peer_id().as_bytes(), DBID)
            .unwrap()
            .basepoints()
            .funding_pubkey;
        crate::test_support::peer_commitment_sig(tx, &ours, key, Amount::from_sat(1_000_000))
    }

    fn revoke(&self, n: u64) -> Result<Vec<u8>, SignerError> {
        self.ask(&self.channeld, RevokeCommitmentTx::new(n))
    }

    fn peer_revokes(&self, n: u64) -> Result<Vec<u8>, SignerError> {
        self.peer_revokes_with(n, self.peer.per_commitment_secret(n).unwrap())
    }

    fn peer_revokes_with(&self, n: u64, secret: [u8; 32]) -> Result<Vec<u8>, SignerError> {
        self.ask(&self.channeld, ValidateRevocation::new(n, Secret(secret)))
    }

    fn sign_holder(&self, n: u64) -> Result<Vec<u8>, SignerError> {
        let m = SignCommitmentTx::new(
            peer_id(),
            DBID,
            tx(),
            self.peer.basepoints().funding_pubkey,
            n,
        );
        self.ask(&self.master, m)
    }

    fn point(&self, n: u64) -> Result<Vec<u8>, SignerError> {
        self.ask(&self.channeld, GetPerCommitmentPoint::new(n))
    }

    /// The BOLT 2 dance up to (ours) commitment `last` validated and `last - 1` revoked, and
    /// (theirs) `last` signed and `last - 1` revoked.
    fn advance_to(&self, first: u64, last: u64) {
        self.sign_remote(first).unwrap();
        self.validate(first).unwrap();
        for n in first + 1..=last {
            self.sign_remote(n).unwrap();
            self.validate(n).unwrap();
            self.revoke(n - 1).unwrap();
            self.peer_revokes(n - 1).unwrap();
        }
    }
}

/// Runs `attack` on the channel that `prepare` builds: enforced, it is refused by `rule` and
/// changes no state; warned, it is answered.
fn refused(
    rule: &str,
    prepare: impl Fn(&Channel),
    attack: impl Fn(&Channel) -> Result<Vec<u8>, SignerError>,
) {
    let c = Channel::set_up(state_rules_enforced());
    prepare(&c);
    let before = c.state();
    let e = attack(&c).expect_err("enforced policy must refuse");
    assert_eq!(e.rule(), Some(rule), "{e}");
    assert_eq!(c.state(), before, "a refusal changes no state");

    let c = Channel::set_up(Policy::warn_only());
    prepare(&c);
    attack(&c).expect("warn mode answers as Core Lightning");
}

#[test]
fn a_well_behaved_channel_passes_an_enforcing_policy() {
    for first in [0, 169] {
        let c = Channel::set_up(state_rules_enforced());
        c.point(first).unwrap();
        c.point(first + 1).unwrap();
        c.advance_to(first, first + 5);
        // lightningd retransmits: the same number may be signed and validated again.
        c.sign_remote(first + 5).unwrap();
        c.validate(first + 5).unwrap();
        c.ask(
            &c.channeld,
            SignRemoteHtlcTx::new(tx(), vec![0x51], c.remote_point(first + 5), true),
        )
        .unwrap();
        c.sign_holder(first + 5).unwrap();
        c.sign_holder(first + 5).unwrap();
        let s = c.state().unwrap();
        assert_eq!(s.holder_validated, Some(first + 5));
        assert_eq!(s.holder_revoked_below, first + 5);
        assert_eq!(s.counterparty_signed, Some(first + 5));
        assert_eq!(s.counterparty_revoked_below, first + 5);
        assert_eq!(s.holder_signed_from, Some(first + 5));
        assert_eq!(
            s.counterparty_points.keys().copied().collect::<Vec<_>>(),
            vec![first + 5]
        );
        assert_eq!(
            crate::bolt3::counterparty_secret(&s.counterparty_secrets, first),
            Some(c.peer.per_commitment_secret(first).unwrap())
        );
    }
}

#[test]
fn signing_a_revoked_holder_commitment_is_refused() {
    refused(
        "commitment-holder-not-revoked",
        |c| c.advance_to(0, 2),
        |c| c.sign_holder(1),
    );
}

#[test]
fn revoking_a_holder_commitment_signed_for_broadcast_is_refused() {
    refused(
        "commitment-holder-not-revoked",
        |c| {
            c.advance_to(0, 1);
            c.sign_holder(1).unwrap();
            c.validate(2).unwrap();
        },
        |c| c.revoke(1),
    );
}

#[test]
fn revealing_the_secret_of_a_current_commitment_is_refused() {
    refused(
        "revoke-superseded-only",
        |c| c.advance_to(0, 2),
        |c| c.revoke(2),
    );
}

#[test]
fn old_protocol_points_reveal_only_superseded_secrets() {
    let prepare = |c: &Channel| {
        c.new_channel().unwrap();
        c.setup().unwrap();
        c.sign_remote(0).unwrap();
        c.validate(0).unwrap();
    };
    let c = Channel::new(Store::temporary().unwrap(), state_rules_enforced(), 5);
    prepare(&c);
    // Point 2 carries secret 0, and commitment 1 was not validated.
    let before = c.state();
    assert_eq!(
        c.point(2).unwrap_err().rule(),
        Some("revoke-superseded-only")
    );
    assert_eq!(c.state(), before);
    c.validate(1).unwrap();
    let reply = GetPerCommitmentPointReply::decode(&c.point(2).unwrap()).unwrap();
    assert!(reply.old_commitment_secret.is_some());
    assert_eq!(c.state().unwrap().holder_revoked_below, 1);

    let c = Channel::new(Store::temporary().unwrap(), Policy::warn_only(), 5);
    prepare(&c);
    c.point(2).unwrap();
}

#[test]
fn revoking_ahead_is_refused_and_a_given_revocation_is_given_again() {
    // channeld retransmits an older revocation when it reestablishes a channel after
    // lightningd stopped between our revocation and persisting it: the secret is out already.
    let c = Channel::set_up(state_rules_enforced());
    c.advance_to(0, 2);
    let before = c.state();
    c.revoke(0).expect("a revocation already given");
    c.revoke(1).expect("the latest revocation");
    assert_eq!(
        c.state(),
        before,
        "giving a revocation again changes nothing"
    );
    refused(
        "revoke-in-order",
        |c| {
            c.advance_to(0, 1);
            c.sign_remote(2).unwrap();
            c.validate(2).unwrap();
            c.validate(3).unwrap();
        },
        |c| c.revoke(2),
    );
}

#[test]
fn counterparty_revocations_come_in_order() {
    refused(
        "revoke-in-order",
        |c| c.advance_to(0, 2),
        |c| c.peer_revokes(0),
    );
    refused(
        "revoke-in-order",
        |c| {
            c.sign_remote(0).unwrap();
            c.sign_remote(1).unwrap();
        },
        |c| c.peer_revokes(1),
    );
}

#[test]
fn a_revocation_secret_must_match_the_point_given() {
    let prepare = |c: &Channel| {
        c.sign_remote(0).unwrap();
        c.sign_remote(1).unwrap();
    };
    refused("revocation-secret-matches", prepare, |c| {
        c.peer_revokes_with(0, [0x99; 32])
    });
    refused("revocation-secret-matches", prepare, |c| {
        c.peer_revokes_with(0, [0; 32])
    });
    // The secret of the point, but the point was never signed for.
    refused("revocation-secret-matches", |_| {}, |c| c.peer_revokes(0));
}

#[test]
fn commitment_numbers_never_go_backwards() {
    refused(
        "commitment-number-monotonic",
        |c| c.advance_to(0, 2),
        |c| c.validate(1),
    );
    refused(
        "commitment-number-monotonic",
        |c| c.advance_to(0, 2),
        |c| c.sign_remote(1),
    );
    // Re-signing the same number is a retransmission, but only with the same point.
    refused(
        "commitment-number-monotonic",
        |c| c.advance_to(0, 2),
        |c| c.sign_remote_with(2, c.remote_point(7)),
    );
}

#[test]
fn signing_the_next_counterparty_commitment_needs_the_previous_revoked() {
    refused(
        "commitment-previous-revoked",
        |c| {
            c.sign_remote(0).unwrap();
            c.sign_remote(1).unwrap();
        },
        |c| c.sign_remote(2),
    );
}

#[test]
fn unknown_and_forgotten_channels_are_refused() {
    // Never set up: no signatures (points are fine, openingd asks before setup_channel).
    for attack in [
        (|c: &Channel| c.sign_remote(0)) as fn(&Channel) -> Result<Vec<u8>, SignerError>,
        |c| c.sign_holder(0),
        |c| c.validate(0),
        |c| {
            c.ask(
                &c.channeld,
                SignMutualCloseTx::new(tx(), c.peer.basepoints().funding_pubkey),
            )
        },
        |c| {
            c.ask(
                &c.channeld,
                SignSpliceTx::new(tx(), c.peer.basepoints().funding_pubkey, 0),
            )
        },
    ] {
        let c = Channel::new(Store::temporary().unwrap(), state_rules_enforced(), 6);
        c.new_channel().unwrap();
        c.point(0).unwrap();
        let before = c.state();
        assert_eq!(attack(&c).unwrap_err().rule(), Some("channel-known"));
        assert_eq!(c.state(), before);
        let c = Channel::new(Store::temporary().unwrap(), Policy::warn_only(), 6);
        attack(&c).unwrap();
    }
    // Forgotten: nothing at all.
    let forget = |c: &Channel| {
        c.advance_to(0, 1);
        c.ask(&c.master, ForgetChannel::new(peer_id(), DBID))
            .unwrap();
        assert!(c.state().unwrap().forgotten);
    };
    refused("channel-known", forget, |c| c.point(3));
    refused("channel-known", forget, |c| c.sign_holder(1));
    refused("channel-known", forget, |c| c.sign_remote(2));
    refused("channel-known", forget, |c| c.new_channel());
    refused("channel-known", forget, |c| c.setup());
}

#[test]
fn replies_follow_core_lightning() {
    let c = Channel::set_up(state_rules_enforced());
    let secrets = c
        .signer
        .session()
        .unwrap()
        .keys
        .channel_secrets(peer_id().as_bytes(), DBID)
        .unwrap();
    let reply = ValidateCommitmentTxReply::decode(&c.validate(4).unwrap()).unwrap();
    assert_eq!(reply.old_commitment_secret, None);
    assert_eq!(
        reply.next_per_commitment_point,
        secrets.per_commitment_point(5).unwrap()
    );
    c.validate(5).unwrap();
    let reply = RevokeCommitmentTxReply::decode(&c.revoke(4).unwrap()).unwrap();
    assert_eq!(
        reply.old_commitment_secret,
        Secret(secrets.per_commitment_secret(4).unwrap())
    );
    assert_eq!(
        reply.next_per_commitment_point,
        secrets.per_commitment_point(6).unwrap()
    );
    assert!(
        CheckOutpointReply::decode(
            &c.ask(
                &c.channeld,
                CheckOutpoint::new(Txid::from_byte_array([7; 32]), 1)
            )
            .unwrap()
        )
        .unwrap()
        .is_buried
    );
    // Out of the shachain: a bad request, as in hsmd.
    assert!(matches!(c.point(1 << 48), Err(SignerError::BadRequest(_))));
    assert!(matches!(
        c.revoke((1 << 48) - 2),
        Err(SignerError::BadRequest(_))
    ));
    // Input out of range: a bad request, never a panic.
    let m = SignSpliceTx::new(tx(), c.peer.basepoints().funding_pubkey, 5);
    assert!(matches!(
        c.ask(&c.channeld, m),
        Err(SignerError::BadRequest(_))
    ));
    let mut no_amount = tx();
    no_amount.psbt.inputs[0].witness_utxo = None;
    let m = SignMutualCloseTx::new(no_amount, c.peer.basepoints().funding_pubkey);
    assert!(matches!(
        c.ask(&c.channeld, m),
        Err(SignerError::BadRequest(_))
    ));
}

#[test]
fn channel_state_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let saved = {
        let c = Channel::new(Store::open(&path).unwrap(), state_rules_enforced(), 6);
        c.new_channel().unwrap();
        c.setup().unwrap();
        c.ask(
            &c.channeld,
            LockOutpoint::new(Txid::from_byte_array([8; 32]), 0),
        )
        .unwrap();
        c.advance_to(0, 3);
        c.state().unwrap()
    };
    assert!(saved.setup.is_some());
    assert_eq!(
        saved.funding_outpoint,
        Some(bitcoin::OutPoint {
            txid: bitcoin::Txid::from_byte_array([8; 32]),
            vout: 0
        })
    );

    let c = Channel::new(Store::open(&path).unwrap(), state_rules_enforced(), 6);
    assert_eq!(c.state(), Some(saved));
    // What was revealed stays revealed; what was signed stays signed. A revocation given may
    // be asked again (channeld does when it reestablishes), and changes nothing.
    c.revoke(1).unwrap();
    let again = c.revoke(2).unwrap();
    assert_eq!(c.revoke(2).unwrap(), again);
    assert_eq!(c.state().unwrap().holder_revoked_below, 3);
    assert_eq!(
        c.sign_holder(2).unwrap_err().rule(),
        Some("commitment-holder-not-revoked")
    );
    assert_eq!(
        c.sign_remote(2).unwrap_err().rule(),
        Some("commitment-number-monotonic")
    );
    c.validate(4).unwrap();
    c.revoke(3).unwrap();
}

/// Revealing a commitment's secret and signing that commitment for broadcast, sent together
/// from two clients (channeld's lane and lightningd's), many times: at most one of them may
/// pass, and the state records exactly the one that did.
#[test]
fn a_revocation_racing_a_broadcast_signature_never_both_pass() {
    let mut outcomes = [0usize; 3];
    for _ in 0..200 {
        let c = Channel::set_up(state_rules_enforced());
        c.advance_to(0, 1);
        c.validate(2).unwrap();
        let barrier = std::sync::Barrier::new(2);
        let (revoked, signed) = std::thread::scope(|s| {
            let revoke = s.spawn(|| {
                barrier.wait();
                c.revoke(1).is_ok()
            });
            let sign = s.spawn(|| {
                barrier.wait();
                c.sign_holder(1).is_ok()
            });
            (revoke.join().unwrap(), sign.join().unwrap())
        });
        assert!(
            !(revoked && signed),
            "commitment 1 was both revoked and signed for broadcast"
        );
        let s = c.state().unwrap();
        assert_eq!(s.holder_revoked_below == 2, revoked, "{s:?}");
        assert_eq!(s.holder_signed_from == Some(1), signed, "{s:?}");
        outcomes[if revoked {
            1
        } else if signed {
            2
        } else {
            0
        }] += 1;
    }
    // One of the two always passes: the first to take the store's writer.
    assert_eq!(outcomes[0], 0, "neither passed: {outcomes:?}");
}

#[test]
fn a_holder_commitment_without_the_peers_valid_signature_is_refused() {
    let forged = |c: &Channel, key: &SecretKey| {
        let mut sig = c.peer_sig(&tx().tx);
        let msg = secp256k1::Message::from_digest([9; 32]);
        sig.sig = SECP256K1.sign_ecdsa(&msg, key);
        c.ask(
            &c.channeld,
            ValidateCommitmentTx::new(tx(), vec![], 1, 253, sig, vec![]),
        )
    };
    // Signed by the peer's key but over something else, or by another key over this one.
    refused(
        "commitment-signed-by-peer",
        |c| c.advance_to(0, 0),
        |c| forged(c, &c.peer.funding_key),
    );
    refused(
        "commitment-signed-by-peer",
        |c| c.advance_to(0, 0),
        |c| {
            let other = ChannelSecrets::from_seed(&[0x56; 32]).unwrap();
            let sig = c.sig_by(&tx().tx, &other.funding_key);
            c.ask(
                &c.channeld,
                ValidateCommitmentTx::new(tx(), vec![], 1, 253, sig, vec![]),
            )
        },
    );
    // With a valid signature, the same step passes.
    let c = Channel::set_up(state_rules_enforced());
    c.advance_to(0, 0);
    c.validate(1).unwrap();
    assert_eq!(c.state().unwrap().holder_validated, Some(1));
}

#[test]
fn a_channel_in_use_keeps_its_parameters() {
    let c = Channel::new(Store::temporary().unwrap(), state_rules_enforced(), 6);
    c.new_channel().unwrap();
    c.setup().unwrap();
    // Before it is in use: the same setup again, or another one (a funding RBF).
    c.setup().unwrap();
    c.setup_funded_by(8).unwrap();
    c.setup().unwrap();
    c.sign_remote(0).unwrap();
    c.validate(0).unwrap();
    c.setup_funded_by(8).unwrap();
    c.setup().unwrap();
    // In use: only the same setup again.
    c.sign_remote(1).unwrap();
    let before = c.state();
    let e = c.setup_funded_by(8).unwrap_err();
    assert_eq!(e.rule(), Some("channel-setup-final"));
    assert_eq!(c.state(), before);
    c.setup().unwrap();
    // Locked funding, even with no commitment past the first.
    let c = Channel::new(Store::temporary().unwrap(), state_rules_enforced(), 6);
    c.new_channel().unwrap();
    c.setup().unwrap();
    c.ask(
        &c.channeld,
        LockOutpoint::new(Txid::from_byte_array([7; 32]), 1),
    )
    .unwrap();
    let e = c.setup_funded_by(8).unwrap_err();
    assert_eq!(e.rule(), Some("channel-setup-final"));
}
