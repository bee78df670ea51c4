//! A channel as BOLT 2 runs it and BOLT 3 builds its transactions, and the hsmd requests that
//! drive it: the same model as `signer/src/policy_channel/tests.rs`, with real keys on both
//! sides (ours from the signer's secret, the peer's from a seed), outputs in BOLT 3 order and
//! the obscured commitment number in locktime and sequence.

use bitcoin::hashes::{ripemd160, sha256, Hash};
use bitcoin::opcodes::all::{OP_CHECKSIGVERIFY, OP_CSV};
use bitcoin::psbt::Psbt;
use bitcoin::script::Builder;
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{
    absolute, transaction, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid,
};
use protocol::msgs::*;
use protocol::types::{
    AmountMsat, Basepoints, BitcoinSignature, BitcoinTx, ChannelType, HsmHtlc, NodeId, Secret,
    Side, SighashFlag,
};
use secp256k1::{PublicKey, SecretKey, SECP256K1};
use signer::bolt3::funding_redeem_script;
use signer::bolt3::{anchor_script, htlc_script, revocation_pubkey, to_local_script};
use signer::keys::channel::derive_simple_pubkey;
use signer::keys::{ChannelSecrets, KeyManager};
use signer::sign::{segwit_v0_sighash, sign_ecdsa_cln_grind};

/// `hsmd_init` for regtest, protocol versions 4..=6, as lightningd sends it.
pub fn init_regtest() -> Init {
    Init::new(
        protocol::types::Bip32KeyVersion::TESTNET,
        bitcoin::blockdata::constants::ChainHash::REGTEST,
        None,
        None,
        None,
        None,
        None,
        4,
        6,
        InitTlvs::default(),
    )
}

/// The value of each anchor output (BOLT 3).
pub const ANCHOR_SAT: u64 = 330;
/// Commitment weight without HTLC outputs (anchors channel), and per HTLC output.
const BASE_WEIGHT_ANCHORS: u64 = 1124;
const HTLC_OUTPUT_WEIGHT: u64 = 172;
/// The dust limit both sides' commitments trim at.
pub const DUST_LIMIT_SAT: u64 = 546;
/// Both sides' `to_self_delay`.
pub const TO_SELF_DELAY: u16 = 144;
/// The opening fee rate (sat per 1000 weight).
pub const FEERATE: u32 = 2_500;

/// Whose commitment transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Ours (the peer signs it; we validate it and may broadcast it).
    Holder,
    /// The peer's (we sign it).
    Counterparty,
}

/// The payment hash of test HTLC `id`.
pub fn hash_of(id: u8) -> sha256::Hash {
    salted_hash_of(id, 0)
}

/// The payment hash of test HTLC `id` in a history salted with `salt` (0: [`hash_of`]), so
/// that histories of different channels pay different hashes.
pub fn salted_hash_of(id: u8, salt: u64) -> sha256::Hash {
    if salt == 0 {
        return sha256::Hash::hash(&[b'h', id]);
    }
    let mut data = vec![b'h', id];
    data.extend(salt.to_be_bytes());
    sha256::Hash::hash(&data)
}

/// A channel's balances as BOLT 2 keeps them (msat, before the fee and anchors the funder
/// pays), its HTLCs and fee rate.
#[derive(Clone, Debug)]
pub struct Model {
    /// Our balance, msat.
    pub ours_msat: u64,
    /// The peer's balance, msat.
    pub theirs_msat: u64,
    /// The HTLCs on the commitment.
    pub htlcs: Vec<HsmHtlc>,
    /// The fee rate, sat per 1000 weight.
    pub feerate: u32,
    /// What HTLC ids are salted with to make their payment hashes (see [`salted_hash_of`]).
    pub salt: u64,
}

impl Model {
    /// The payment hash of HTLC `id` in this history.
    pub fn hash(&self, id: u8) -> sha256::Hash {
        salted_hash_of(id, self.salt)
    }

    /// We offer an HTLC (from our balance).
    pub fn offer(self, msat: u64, id: u8) -> Model {
        let hash = self.hash(id);
        self.offer_hash(msat, hash)
    }

    /// We offer an HTLC paying `hash`.
    pub fn offer_hash(mut self, msat: u64, hash: sha256::Hash) -> Model {
        self.ours_msat -= msat;
        self.htlcs.push(htlc(Side::Local, msat, hash));
        self
    }

    /// The peer offers an HTLC (from its balance).
    pub fn receive(mut self, msat: u64, id: u8) -> Model {
        self.theirs_msat -= msat;
        let hash = self.hash(id);
        self.htlcs.push(htlc(Side::Remote, msat, hash));
        self
    }

    fn remove(&mut self, id: u8) -> HsmHtlc {
        let i = self
            .htlcs
            .iter()
            .position(|h| h.payment_hash == salted_hash_of(id, self.salt))
            .expect("no such HTLC");
        self.htlcs.remove(i)
    }

    /// HTLC `id` is fulfilled: its amount goes to the side it was offered to.
    pub fn fulfill(mut self, id: u8) -> Model {
        let h = self.remove(id);
        match h.side {
            Side::Local => self.theirs_msat += h.amount.to_msat(),
            Side::Remote => self.ours_msat += h.amount.to_msat(),
        }
        self
    }

    /// HTLC `id` fails: its amount goes back to the side that offered it.
    pub fn fail(mut self, id: u8) -> Model {
        let h = self.remove(id);
        match h.side {
            Side::Local => self.ours_msat += h.amount.to_msat(),
            Side::Remote => self.theirs_msat += h.amount.to_msat(),
        }
        self
    }

    /// HTLC `id` expires at block `cltv` (rather than its default, from its hash).
    pub fn expiring(mut self, id: u8, cltv: u32) -> Model {
        for h in self
            .htlcs
            .iter_mut()
            .filter(|h| h.payment_hash == hash_of(id))
        {
            h.cltv_expiry = cltv;
        }
        self
    }

    /// The fee rate changes.
    pub fn feerate(mut self, feerate: u32) -> Model {
        self.feerate = feerate;
        self
    }
}

fn htlc(side: Side, msat: u64, payment_hash: sha256::Hash) -> HsmHtlc {
    HsmHtlc {
        side,
        amount: AmountMsat::from_msat(msat),
        payment_hash,
        cltv_expiry: default_expiry(&payment_hash),
    }
}

/// The expiry an HTLC paying `hash` gets unless [`Model::expiring`] sets another.
pub fn default_expiry(hash: &sha256::Hash) -> u32 {
    800_000 + u32::from(hash.to_byte_array()[0])
}

/// A commitment as a request carries it.
#[derive(Clone)]
pub struct Built {
    /// The transaction, with the funding output as its PSBT input.
    pub tx: BitcoinTx,
    /// The HTLCs it carries.
    pub htlcs: Vec<HsmHtlc>,
    /// Its fee rate, sat per 1000 weight.
    pub feerate: u32,
}

impl Built {
    /// Adds an output (the attacker's) and re-sorts the outputs.
    pub fn push_output(mut self, sat: u64, script: ScriptBuf) -> Built {
        self.tx.tx.output.push(TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: script,
        });
        self.sync()
    }

    /// Moves `sat` between the outputs paying `from` and `to`.
    pub fn shift(mut self, from: &ScriptBuf, to: &ScriptBuf, sat: u64) -> Built {
        for o in &mut self.tx.tx.output {
            if &o.script_pubkey == from {
                o.value = Amount::from_sat(o.value.to_sat() - sat);
            } else if &o.script_pubkey == to {
                o.value = Amount::from_sat(o.value.to_sat() + sat);
            }
        }
        self.sync()
    }

    /// Takes `sat` from the output paying `from` (to the fee, or to a pushed output).
    pub fn take(mut self, from: &ScriptBuf, sat: u64) -> Built {
        for o in &mut self.tx.tx.output {
            if &o.script_pubkey == from {
                o.value = Amount::from_sat(o.value.to_sat() - sat);
            }
        }
        self.sync()
    }

    /// Re-sorts the outputs (BOLT 3 order) and rebuilds the PSBT around the changed
    /// transaction, keeping the funding input's UTXO.
    fn sync(mut self) -> Built {
        sort_outputs(&mut self.tx.tx.output);
        let utxo = self.tx.psbt.inputs[0].witness_utxo.clone();
        self.tx.psbt = Psbt::from_unsigned_tx(self.tx.tx.clone())
            .expect("unsigned")
            .into();
        self.tx.psbt.inputs[0].witness_utxo = utxo;
        self
    }
}

/// BOLT 3 output order: by value, then by script pubkey.
fn sort_outputs(outputs: &mut [TxOut]) {
    outputs.sort_by(|a, b| {
        a.value
            .cmp(&b.value)
            .then_with(|| a.script_pubkey.as_bytes().cmp(b.script_pubkey.as_bytes()))
    });
}

/// A channel we fund, from both sides' keys.
pub struct Channel {
    /// The peer's node id.
    pub peer_id: NodeId,
    /// Its database id at lightningd.
    pub dbid: u64,
    /// Our channel secrets (as the signer derives them).
    pub ours: std::sync::Arc<ChannelSecrets>,
    /// The peer's.
    pub peer: ChannelSecrets,
    /// The `setup_channel` that set it up.
    pub setup: SetupChannel,
}

/// What a channel is opened with.
pub struct Opening {
    /// The channel's value.
    pub value_sat: u64,
    /// What we give the peer at opening.
    pub push_msat: u64,
    /// The funding outpoint.
    pub funding: OutPoint,
    /// Our wallet key that a mutual close pays (`local_shutdown_wallet_index`).
    pub shutdown_wallet_index: u32,
    /// The peer's shutdown script.
    pub remote_shutdown: ScriptBuf,
}

impl Channel {
    /// The channel (`peer_id`, `dbid`) of the node with `keys`; the peer's keys come from
    /// `peer_seed`. Both sides ask for [`TO_SELF_DELAY`]; zero-fee HTLC anchors.
    pub fn new(
        keys: &KeyManager,
        peer_id: NodeId,
        dbid: u64,
        peer_seed: [u8; 32],
        o: &Opening,
    ) -> Channel {
        let ours = keys
            .channel_secrets(peer_id.as_bytes(), dbid)
            .expect("channel secrets");
        let peer = ChannelSecrets::from_seed(&peer_seed).expect("peer secrets");
        let p = peer.basepoints();
        let setup = SetupChannel::new(
            true,
            Amount::from_sat(o.value_sat),
            AmountMsat::from_msat(o.push_msat),
            o.funding.txid,
            u16::try_from(o.funding.vout).expect("small vout"),
            TO_SELF_DELAY,
            vec![],
            Some(o.shutdown_wallet_index),
            Basepoints {
                revocation: p.revocation,
                payment: p.payment,
                htlc: p.htlc,
                delayed_payment: p.delayed_payment,
            },
            p.funding_pubkey,
            TO_SELF_DELAY,
            o.remote_shutdown.to_bytes(),
            ChannelType::from_bits(&[
                ChannelType::STATIC_REMOTEKEY,
                ChannelType::ANCHORS_ZERO_FEE_HTLC,
            ]),
        );
        Channel {
            peer_id,
            dbid,
            ours,
            peer,
            setup,
        }
    }

    /// The state right after the opening.
    pub fn opening(&self) -> Model {
        let value_msat = self.setup.channel_value.to_sat() * 1000;
        let push = self.setup.push_value.to_msat();
        Model {
            ours_msat: value_msat - push,
            theirs_msat: push,
            htlcs: vec![],
            feerate: FEERATE,
            salt: 0,
        }
    }

    /// The funding output's witness script.
    pub fn funding_script(&self) -> ScriptBuf {
        funding_redeem_script(
            &self.ours.basepoints().funding_pubkey,
            &self.setup.remote_funding_pubkey,
        )
    }

    /// The funding output's script pubkey.
    pub fn funding_spk(&self) -> ScriptBuf {
        ScriptBuf::new_p2wsh(&self.funding_script().wscript_hash())
    }

    fn funding_outpoint(&self) -> OutPoint {
        OutPoint {
            txid: self.setup.funding_txid,
            vout: u32::from(self.setup.funding_txout),
        }
    }

    /// The per-commitment point of commitment `n` of `owner`.
    pub fn point(&self, owner: Owner, n: u64) -> PublicKey {
        match owner {
            Owner::Holder => self.ours.per_commitment_point(n),
            Owner::Counterparty => self.peer.per_commitment_point(n),
        }
        .expect("commitment number in range")
    }

    /// The scripts of commitment `n` of `owner`.
    pub fn scripts(&self, owner: Owner, n: u64) -> Scripts {
        Scripts::of(self, owner, &self.point(owner, n))
    }

    /// BOLT 3 obscured commitment number of `n`: the lower 48 bits of
    /// SHA256(opener's payment basepoint || accepter's) XOR `n`.
    fn obscured(&self, n: u64) -> u64 {
        let (opener, accepter) = (
            self.ours.basepoints().payment,
            self.setup.remote_basepoints.payment,
        );
        let h = sha256::Hash::hash(&[opener.serialize(), accepter.serialize()].concat());
        let b = h.to_byte_array();
        let factor = u64::from_be_bytes([0, 0, b[26], b[27], b[28], b[29], b[30], b[31]]);
        factor ^ n
    }

    /// Commitment `n` of `owner` for the channel state `m`, as BOLT 3 builds it: HTLCs below
    /// `dust_sat` are trimmed (and not listed, as Core Lightning lists only HTLC outputs).
    pub fn build_with_dust(&self, owner: Owner, n: u64, m: &Model, dust_sat: u64) -> Built {
        let s = self.scripts(owner, n);
        let listed: Vec<HsmHtlc> = m
            .htlcs
            .iter()
            .filter(|h| h.amount.to_msat() / 1000 >= dust_sat)
            .cloned()
            .collect();
        let weight = BASE_WEIGHT_ANCHORS + HTLC_OUTPUT_WEIGHT * listed.len() as u64;
        let fee = u64::from(m.feerate) * weight / 1000;
        let cost_msat = (fee + 2 * ANCHOR_SAT) * 1000;
        // We are the funder: the fee and the anchors come out of our balance.
        let (ours, theirs) = (m.ours_msat - cost_msat, m.theirs_msat);
        let mut output = Vec::new();
        for a in &s.anchors {
            output.push(TxOut {
                value: Amount::from_sat(ANCHOR_SAT),
                script_pubkey: a.clone(),
            });
        }
        for (msat, script) in [(ours, &s.ours), (theirs, &s.theirs)] {
            if msat / 1000 >= dust_sat {
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
        sort_outputs(&mut output);
        let obscured = self.obscured(n);
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::from_consensus(
                (0x20 << 24) | (obscured & 0xFF_FFFF) as u32,
            ),
            input: vec![TxIn {
                previous_output: self.funding_outpoint(),
                sequence: Sequence((0x80 << 24) | ((obscured >> 24) & 0xFF_FFFF) as u32),
                ..TxIn::default()
            }],
            output,
        };
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).expect("unsigned");
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: self.setup.channel_value,
            script_pubkey: self.funding_spk(),
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

    /// [`Channel::build_with_dust`] at the channel's dust limit.
    pub fn build(&self, owner: Owner, n: u64, m: &Model) -> Built {
        self.build_with_dust(owner, n, m, DUST_LIMIT_SAT)
    }

    /// `setup_channel` (openingd or channeld).
    pub fn setup_msg(&self) -> Message {
        self.setup.clone().into()
    }

    /// `sign_remote_commitment_tx` for the peer's commitment `n`.
    pub fn sign_remote(&self, n: u64, b: &Built) -> Message {
        SignRemoteCommitmentTx::new(
            b.tx.clone(),
            self.setup.remote_funding_pubkey,
            self.point(Owner::Counterparty, n),
            true,
            n,
            b.htlcs.clone(),
            b.feerate,
        )
        .into()
    }

    /// `validate_commitment_tx` of our commitment `n`, with the peer's real funding signature
    /// and HTLC signatures.
    pub fn validate(&self, n: u64, b: &Built) -> Message {
        self.validate_with(n, b, self.peer_htlc_sigs(n, b))
    }

    /// [`Channel::validate`] with these HTLC signatures.
    pub fn validate_with(&self, n: u64, b: &Built, htlc_sigs: Vec<BitcoinSignature>) -> Message {
        let msg = segwit_v0_sighash(
            &b.tx.tx,
            0,
            &self.funding_script(),
            self.setup.channel_value,
            EcdsaSighashType::All,
        )
        .expect("sighash");
        let sig = BitcoinSignature {
            sig: sign_ecdsa_cln_grind(&msg, &self.peer.funding_key),
            sighash: SighashFlag::All,
        };
        ValidateCommitmentTx::new(b.tx.clone(), b.htlcs.clone(), n, b.feerate, sig, htlc_sigs)
            .into()
    }

    /// The peer's signatures of the HTLC transactions of our commitment `n` (`b`), in the
    /// order of its HTLC outputs (BOLT 2 `commitment_signed`; zero-fee anchors, so
    /// `SIGHASH_SINGLE|SIGHASH_ANYONECANPAY` and no fee).
    pub fn peer_htlc_sigs(&self, n: u64, b: &Built) -> Vec<BitcoinSignature> {
        let s = self.scripts(Owner::Holder, n);
        let point = self.point(Owner::Holder, n);
        let key =
            signer::keys::channel::derive_simple_privkey(&self.peer.htlc_basepoint_secret, &point)
                .expect("tweak");
        let txid = b.tx.tx.compute_txid();
        let mut left: Vec<&HsmHtlc> = b.htlcs.iter().collect();
        let mut sigs = Vec::new();
        for (i, out) in b.tx.tx.output.iter().enumerate() {
            let sat = out.value.to_sat();
            let Some(at) = left.iter().position(|h| {
                s.htlc(h, Owner::Holder) == out.script_pubkey && h.amount.to_msat() / 1000 == sat
            }) else {
                continue;
            };
            let h = left.remove(at);
            let tx = signer::bolt3::htlc_tx(
                OutPoint {
                    txid,
                    vout: i as u32,
                },
                sat,
                h.side == Side::Local,
                h.cltv_expiry,
                p2wsh(&s.to_local_wscript),
                b.feerate,
                true,
            );
            let msg = segwit_v0_sighash(
                &tx,
                0,
                &s.htlc_wscript(h, Owner::Holder),
                Amount::from_sat(sat),
                EcdsaSighashType::SinglePlusAnyoneCanPay,
            )
            .expect("sighash");
            sigs.push(BitcoinSignature {
                sig: sign_ecdsa_cln_grind(&msg, &key),
                sighash: SighashFlag::SingleAnyoneCanPay,
            });
        }
        sigs
    }

    /// `revoke_commitment_tx` of our commitment `n`.
    pub fn revoke(&self, n: u64) -> Message {
        RevokeCommitmentTx::new(n).into()
    }

    /// `validate_revocation`: the peer's secret for its commitment `n`.
    pub fn peer_revokes(&self, n: u64) -> Message {
        let secret = self.peer.per_commitment_secret(n).expect("in range");
        ValidateRevocation::new(n, Secret(secret)).into()
    }

    /// `validate_revocation` with a given secret.
    pub fn peer_revokes_with(&self, n: u64, secret: [u8; 32]) -> Message {
        ValidateRevocation::new(n, Secret(secret)).into()
    }

    /// `sign_commitment_tx` (lightningd, master): our commitment `n` for broadcast.
    pub fn sign_holder(&self, n: u64, b: &Built) -> Message {
        SignCommitmentTx::new(
            self.peer_id,
            self.dbid,
            b.tx.clone(),
            self.setup.remote_funding_pubkey,
            n,
        )
        .into()
    }

    /// A mutual close paying `ours_sat` to `our_script` and `theirs_sat` to the peer's
    /// shutdown script.
    pub fn close_tx(&self, ours_sat: u64, our_script: &ScriptBuf, theirs_sat: u64) -> BitcoinTx {
        let mut output = vec![
            TxOut {
                value: Amount::from_sat(ours_sat),
                script_pubkey: our_script.clone(),
            },
            TxOut {
                value: Amount::from_sat(theirs_sat),
                script_pubkey: ScriptBuf::from_bytes(self.setup.remote_shutdown_script.clone()),
            },
        ];
        sort_outputs(&mut output);
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: self.funding_outpoint(),
                sequence: Sequence::MAX,
                ..TxIn::default()
            }],
            output,
        };
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).expect("unsigned");
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: self.setup.channel_value,
            script_pubkey: self.funding_spk(),
        });
        BitcoinTx {
            tx,
            psbt: psbt.into(),
        }
    }

    /// `sign_mutual_close_tx` (closingd).
    pub fn sign_close(&self, tx: BitcoinTx) -> Message {
        SignMutualCloseTx::new(tx, self.setup.remote_funding_pubkey).into()
    }

    /// `sign_delayed_payment_to_us` (onchaind): the sweep of our `to_local` output of holder
    /// commitment `n` (`b`) to `dest`, paying `fee_sat`.
    pub fn sweep_to_local(&self, n: u64, b: &Built, dest: &ScriptBuf, fee_sat: u64) -> Message {
        let s = self.scripts(Owner::Holder, n);
        let (vout, out) =
            b.tx.tx
                .output
                .iter()
                .enumerate()
                .find(|(_, o)| o.script_pubkey == s.ours)
                .expect("commitment has our to_local output");
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: b.tx.tx.compute_txid(),
                    vout: vout as u32,
                },
                sequence: Sequence(u32::from(TO_SELF_DELAY)),
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(out.value.to_sat() - fee_sat),
                script_pubkey: dest.clone(),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx.clone()).expect("unsigned");
        psbt.inputs[0].witness_utxo = Some(out.clone());
        psbt.inputs[0].witness_script = Some(s.to_local_wscript.clone());
        SignDelayedPaymentToUs::new(
            n,
            BitcoinTx {
                tx,
                psbt: psbt.into(),
            },
            s.to_local_wscript.to_bytes(),
        )
        .into()
    }
}

/// The output scripts (script pubkeys) of one commitment, from the channel's keys.
pub struct Scripts {
    /// Our balance output.
    pub ours: ScriptBuf,
    /// The peer's balance output.
    pub theirs: ScriptBuf,
    /// The two anchor outputs (ours, the peer's).
    pub anchors: [ScriptBuf; 2],
    /// The owner's `to_local` witness script.
    pub to_local_wscript: ScriptBuf,
    revocation: PublicKey,
    owner_htlc: PublicKey,
    other_htlc: PublicKey,
}

impl Scripts {
    fn of(ch: &Channel, owner: Owner, p: &PublicKey) -> Scripts {
        let ours = ch.ours.basepoints();
        let theirs = &ch.setup.remote_basepoints;
        let (revocation_base, owner_delayed, owner_htlc, other_payment, other_htlc) = match owner {
            Owner::Holder => (
                theirs.revocation,
                ours.delayed_payment,
                ours.htlc,
                theirs.payment,
                theirs.htlc,
            ),
            Owner::Counterparty => (
                ours.revocation,
                theirs.delayed_payment,
                theirs.htlc,
                ours.payment,
                ours.htlc,
            ),
        };
        let revocation = revocation_pubkey(&revocation_base, p).expect("valid points");
        let delayed = derive_simple_pubkey(&owner_delayed, p).expect("tweak");
        let to_local_wscript = to_local_script(&revocation, TO_SELF_DELAY, &delayed);
        let to_local = p2wsh(&to_local_wscript);
        // Anchors: the other side's balance is `<payment key> OP_CHECKSIGVERIFY 1 OP_CSV`.
        let to_remote = p2wsh(
            &Builder::new()
                .push_slice(other_payment.serialize())
                .push_opcode(OP_CHECKSIGVERIFY)
                .push_int(1)
                .push_opcode(OP_CSV)
                .into_script(),
        );
        let (ours_spk, theirs_spk) = match owner {
            Owner::Holder => (to_local, to_remote),
            Owner::Counterparty => (to_remote, to_local),
        };
        Scripts {
            ours: ours_spk,
            theirs: theirs_spk,
            anchors: [
                p2wsh(&anchor_script(&ours.funding_pubkey)),
                p2wsh(&anchor_script(&ch.setup.remote_funding_pubkey)),
            ],
            to_local_wscript,
            revocation,
            owner_htlc: derive_simple_pubkey(&owner_htlc, p).expect("tweak"),
            other_htlc: derive_simple_pubkey(&other_htlc, p).expect("tweak"),
        }
    }

    /// The script pubkey of HTLC `h` on a commitment of `owner`.
    pub fn htlc(&self, h: &HsmHtlc, owner: Owner) -> ScriptBuf {
        p2wsh(&self.htlc_wscript(h, owner))
    }

    /// The witness script of HTLC `h` on a commitment of `owner`.
    pub fn htlc_wscript(&self, h: &HsmHtlc, owner: Owner) -> ScriptBuf {
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
            true,
        )
    }
}

/// P2WSH of a witness script.
pub fn p2wsh(script: &ScriptBuf) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&script.wscript_hash())
}

/// P2WPKH of a key.
pub fn p2wpkh(key: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash())
}

/// The public key of the secret `[byte; 32]`.
pub fn pubkey(byte: u8) -> PublicKey {
    SecretKey::from_slice(&[byte; 32])
        .expect("valid key")
        .public_key(SECP256K1)
}

/// A txid made of one repeated byte (a transaction outside the corpus).
pub fn txid(byte: u8) -> Txid {
    Txid::from_byte_array([byte; 32])
}
