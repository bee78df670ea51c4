//! Random valid values of every field type, for the round-trip property tests.

use crate::types::*;
use bitcoin::hashes::{sha256, Hash};
use proptest::prelude::*;
use secp256k1::{ecdsa, schnorr, Message as SecpMessage, PublicKey, SecretKey, SECP256K1};

/// A type with a strategy producing valid values.
pub trait Arb: Sized + std::fmt::Debug {
    /// The strategy.
    fn arb() -> BoxedStrategy<Self>;
}

macro_rules! arb_any {
    ($($t:ty),*) => {$(
        impl Arb for $t {
            fn arb() -> BoxedStrategy<Self> { any::<$t>().boxed() }
        }
    )*};
}
arb_any!(u8, u16, u32, u64, bool);

impl<T: Arb + 'static> Arb for Option<T> {
    fn arb() -> BoxedStrategy<Self> {
        proptest::option::of(T::arb()).boxed()
    }
}

fn secret_key() -> BoxedStrategy<SecretKey> {
    any::<[u8; 32]>()
        .prop_filter_map("valid key", |b| SecretKey::from_slice(&b).ok())
        .boxed()
}

impl Arb for PublicKey {
    fn arb() -> BoxedStrategy<Self> {
        secret_key()
            .prop_map(|k| PublicKey::from_secret_key(SECP256K1, &k))
            .boxed()
    }
}

impl Arb for NodeId {
    fn arb() -> BoxedStrategy<Self> {
        any::<[u8; 33]>().prop_map(NodeId::from_bytes).boxed()
    }
}

impl Arb for Secret {
    fn arb() -> BoxedStrategy<Self> {
        any::<[u8; 32]>().prop_map(Secret).boxed()
    }
}

impl Arb for DevChannelSecrets {
    fn arb() -> BoxedStrategy<Self> {
        (
            Secret::arb(),
            Secret::arb(),
            Secret::arb(),
            Secret::arb(),
            Secret::arb(),
        )
            .prop_map(|(a, b, c, d, e)| DevChannelSecrets {
                funding_privkey: a,
                revocation_basepoint_secret: b,
                payment_basepoint_secret: c,
                htlc_basepoint_secret: d,
                delayed_payment_basepoint_secret: e,
            })
            .boxed()
    }
}

impl Arb for sha256::Hash {
    fn arb() -> BoxedStrategy<Self> {
        any::<[u8; 32]>()
            .prop_map(sha256::Hash::from_byte_array)
            .boxed()
    }
}

impl Arb for bitcoin::Txid {
    fn arb() -> BoxedStrategy<Self> {
        any::<[u8; 32]>()
            .prop_map(bitcoin::Txid::from_byte_array)
            .boxed()
    }
}

impl Arb for bitcoin::blockdata::constants::ChainHash {
    fn arb() -> BoxedStrategy<Self> {
        any::<[u8; 32]>().prop_map(Self::from).boxed()
    }
}

impl Arb for ecdsa::Signature {
    fn arb() -> BoxedStrategy<Self> {
        (secret_key(), any::<[u8; 32]>())
            .prop_map(|(k, m)| SECP256K1.sign_ecdsa(&SecpMessage::from_digest(m), &k))
            .boxed()
    }
}

impl Arb for ecdsa::RecoverableSignature {
    fn arb() -> BoxedStrategy<Self> {
        (secret_key(), any::<[u8; 32]>())
            .prop_map(|(k, m)| SECP256K1.sign_ecdsa_recoverable(&SecpMessage::from_digest(m), &k))
            .boxed()
    }
}

impl Arb for schnorr::Signature {
    fn arb() -> BoxedStrategy<Self> {
        (secret_key(), any::<[u8; 32]>())
            .prop_map(|(k, m)| {
                let kp = secp256k1::Keypair::from_secret_key(SECP256K1, &k);
                SECP256K1.sign_schnorr_no_aux_rand(&SecpMessage::from_digest(m), &kp)
            })
            .boxed()
    }
}

impl Arb for BitcoinSignature {
    fn arb() -> BoxedStrategy<Self> {
        (ecdsa::Signature::arb(), any::<bool>())
            .prop_map(|(sig, all)| BitcoinSignature {
                sig,
                sighash: if all {
                    SighashFlag::All
                } else {
                    SighashFlag::SingleAnyoneCanPay
                },
            })
            .boxed()
    }
}

impl Arb for AmountMsat {
    fn arb() -> BoxedStrategy<Self> {
        any::<u64>().prop_map(AmountMsat::from_msat).boxed()
    }
}

impl Arb for bitcoin::Amount {
    fn arb() -> BoxedStrategy<Self> {
        any::<u64>().prop_map(bitcoin::Amount::from_sat).boxed()
    }
}

impl Arb for WireString {
    fn arb() -> BoxedStrategy<Self> {
        proptest::collection::vec(0x20u8..=0xff, 0..24)
            .prop_map(|b| WireString::new(b).expect("no control bytes"))
            .boxed()
    }
}

fn transaction() -> BoxedStrategy<bitcoin::Transaction> {
    use bitcoin::{transaction, Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness};
    let input = (any::<[u8; 32]>(), any::<u32>(), any::<u32>()).prop_map(|(t, v, s)| TxIn {
        previous_output: OutPoint::new(bitcoin::Txid::from_byte_array(t), v),
        script_sig: ScriptBuf::new(),
        sequence: Sequence(s),
        witness: Witness::new(),
    });
    let output = (
        0u64..2_100_000_000_000_000,
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(v, s)| TxOut {
            value: Amount::from_sat(v),
            script_pubkey: ScriptBuf::from_bytes(s),
        });
    (
        proptest::collection::vec(input, 1..3),
        proptest::collection::vec(output, 0..3),
        any::<u32>(),
    )
        .prop_map(|(input, output, lt)| bitcoin::Transaction {
            version: transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::from_consensus(lt),
            input,
            output,
        })
        .boxed()
}

impl Arb for WirePsbt {
    fn arb() -> BoxedStrategy<Self> {
        transaction()
            .prop_map(|tx| {
                bitcoin::psbt::Psbt::from_unsigned_tx(tx)
                    .expect("unsigned")
                    .into()
            })
            .boxed()
    }
}

impl Arb for BitcoinTx {
    fn arb() -> BoxedStrategy<Self> {
        transaction()
            .prop_map(|tx| BitcoinTx {
                psbt: bitcoin::psbt::Psbt::from_unsigned_tx(tx.clone())
                    .expect("unsigned")
                    .into(),
                tx,
            })
            .boxed()
    }
}

impl Arb for Side {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![Just(Side::Local), Just(Side::Remote)].boxed()
    }
}

impl Arb for HsmHtlc {
    fn arb() -> BoxedStrategy<Self> {
        (
            Side::arb(),
            AmountMsat::arb(),
            sha256::Hash::arb(),
            any::<u32>(),
        )
            .prop_map(|(side, amount, payment_hash, cltv_expiry)| HsmHtlc {
                side,
                amount,
                payment_hash,
                cltv_expiry,
            })
            .boxed()
    }
}

impl Arb for Basepoints {
    fn arb() -> BoxedStrategy<Self> {
        (
            PublicKey::arb(),
            PublicKey::arb(),
            PublicKey::arb(),
            PublicKey::arb(),
        )
            .prop_map(|(revocation, payment, htlc, delayed_payment)| Basepoints {
                revocation,
                payment,
                htlc,
                delayed_payment,
            })
            .boxed()
    }
}

impl Arb for ChannelType {
    fn arb() -> BoxedStrategy<Self> {
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(ChannelType::from_bytes)
            .boxed()
    }
}

impl Arb for Bip32KeyVersion {
    fn arb() -> BoxedStrategy<Self> {
        (any::<u32>(), any::<u32>())
            .prop_map(|(pubkey_version, privkey_version)| Bip32KeyVersion {
                pubkey_version,
                privkey_version,
            })
            .boxed()
    }
}

impl Arb for bitcoin::bip32::Xpub {
    fn arb() -> BoxedStrategy<Self> {
        (any::<[u8; 32]>(), any::<bool>())
            .prop_map(|(seed, main)| {
                let net = if main {
                    bitcoin::NetworkKind::Main
                } else {
                    bitcoin::NetworkKind::Test
                };
                let xpriv = bitcoin::bip32::Xpriv::new_master(net, &seed).expect("seed");
                bitcoin::bip32::Xpub::from_priv(SECP256K1, &xpriv)
            })
            .boxed()
    }
}

impl Arb for HsmUtxo {
    fn arb() -> BoxedStrategy<Self> {
        let close = (
            any::<u64>(),
            NodeId::arb(),
            Option::<PublicKey>::arb(),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(
                |(channel_dbid, peer_id, commitment_point, option_anchors, csv)| CloseInfo {
                    channel_dbid,
                    peer_id,
                    commitment_point,
                    option_anchors,
                    csv,
                },
            );
        (
            (
                bitcoin::Txid::arb(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<bool>(),
            ),
            (
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::option::of(close),
                any::<bool>(),
            ),
        )
            .prop_map(
                |((txid, vout, amt, keyindex, p2sh), (spk, close_info, coinbase))| HsmUtxo {
                    txid,
                    vout,
                    amount: bitcoin::Amount::from_sat(amt),
                    keyindex,
                    legacy_is_p2sh: p2sh,
                    script_pubkey: bitcoin::ScriptBuf::from_bytes(spk),
                    close_info,
                    legacy_is_in_coinbase: coinbase,
                },
            )
            .boxed()
    }
}

/// Up to three records of distinct odd types above `max_known`.
pub fn unknown_odd_tlvs(max_known: u64) -> BoxedStrategy<Vec<UnknownTlv>> {
    proptest::collection::btree_map(
        (0u64..300).prop_map(move |k| max_known + 1 + 2 * k + (max_known % 2)),
        proptest::collection::vec(any::<u8>(), 0..10),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(tlv_type, value)| UnknownTlv { tlv_type, value })
            .collect()
    })
    .boxed()
}
