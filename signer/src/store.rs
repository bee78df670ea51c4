//! Durable state in redb: per-channel records, locked outpoints, and the reply cache that
//! makes a repeated request get the same reply without moving state twice.
//!
//! One write transaction per state-changing request; the handler commits it before its reply
//! leaves (see [`crate::Signer::handle`]). A commit that fails is an error reply, never a panic.

use crate::context::ChannelKey;
use crate::error::{Result, SignerError};
use bitcoin::OutPoint;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use secp256k1::PublicKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const CHANNELS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("channels");
const REPLIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("replies");
const OUTPOINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("locked_outpoints");
const PAYMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("payments");
const APPROVALS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("approvals");
const CHANNEL_PAYMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("channel_payments");
const HTLCS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("htlcs");

/// Tables of JSON records keyed by bytes, for state other than channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// Preapproved payments, by payment hash.
    Payments,
    /// The operator's approval queue and decisions, by payment hash.
    Approvals,
    /// The payment hashes with HTLCs on a channel's latest commitments, by channel key.
    ChannelPayments,
    /// The HTLCs of one payment hash on every channel, both directions, by payment hash.
    Htlcs,
}

impl Records {
    fn table(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        match self {
            Records::Payments => PAYMENTS,
            Records::Approvals => APPROVALS,
            Records::ChannelPayments => CHANNEL_PAYMENTS,
            Records::Htlcs => HTLCS,
        }
    }
}

/// How many replies per client the cache keeps (request ids are increasing per proxy session;
/// a repeat is always one of the most recent ones).
const REPLIES_KEPT_PER_CLIENT: u64 = 256;

/// What the signer remembers about one channel. Numbers only move forward.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// The `hsmd_setup_channel` request that fixed the channel's parameters (encoded).
    #[serde(with = "hex_bytes::option")]
    pub setup: Option<Vec<u8>>,
    /// The highest holder commitment number whose counterparty signatures were validated.
    pub holder_validated: Option<u64>,
    /// Every holder commitment below this number has been revoked (its secret revealed).
    pub holder_revoked_below: u64,
    /// The highest counterparty commitment number we signed.
    pub counterparty_signed: Option<u64>,
    /// Every counterparty commitment below this number has been revoked to us.
    pub counterparty_revoked_below: u64,
    /// Per-commitment points the counterparty gave for its commitments we signed
    /// (commitment number -> compressed point), pruned once revoked.
    #[serde(with = "hex_bytes::points")]
    pub counterparty_points: BTreeMap<u64, PublicKey>,
    /// Per-commitment secrets the counterparty revealed (commitment number -> secret), the
    /// most recent ones (older ones are derivable from these with the shachain).
    #[serde(with = "hex_bytes::map")]
    pub counterparty_secrets: BTreeMap<u64, Vec<u8>>,
    /// Set by `forget_channel`: no more signatures for this channel.
    pub forgotten: bool,
    /// The funding outpoint (txid in its internal byte order, output index): from
    /// `setup_channel`, then from each `lock_outpoint` (a splice moves it).
    #[serde(default, with = "hex_bytes::outpoint")]
    pub funding_outpoint: Option<OutPoint>,
    /// Set by `lock_outpoint`: the funding (or a splice) transaction is locked in, and
    /// `setup_channel` may no longer change the channel's parameters.
    #[serde(default)]
    pub funding_locked: bool,
    /// The lowest holder commitment number signed for broadcast (`sign_commitment_tx`): it and
    /// every later holder commitment must never be revoked.
    #[serde(default)]
    pub holder_signed_from: Option<u64>,
    /// What the latest holder commitments we validated gave us (commitment number -> balance),
    /// the newest two: `commitment-balance` measures the next one against them.
    #[serde(default)]
    pub holder_balances: BTreeMap<u64, CommitmentBalance>,
    /// What the latest counterparty commitments we signed gave us, the newest two.
    #[serde(default)]
    pub counterparty_balances: BTreeMap<u64, CommitmentBalance>,
    /// Txids (internal byte order) of the closing transactions we signed with
    /// `sign_mutual_close_tx`, newest last (at most [`MAX_MUTUAL_CLOSES`]): lightningd sends
    /// the agreed one again as the channel's last transaction in `sign_commitment_tx`.
    #[serde(default)]
    pub mutual_closes: Vec<[u8; 32]>,
    /// Our commitments signed for broadcast (`sign_commitment_tx`), the newest
    /// [`MAX_BROADCAST_COMMITMENTS`]: number -> (txid in internal byte order, output values in
    /// satoshis). What their outputs hold is known, not claimed: an HTLC transaction that
    /// spends one (`sign_htlc_tx_mingle`) is paid for by that output's value.
    #[serde(default)]
    pub broadcast_outputs: BTreeMap<u64, (Vec<u8>, Vec<u64>)>,
}

/// How many of our commitments signed for broadcast a channel remembers the outputs of.
pub const MAX_BROADCAST_COMMITMENTS: usize = 4;

/// How many signed closing transactions a channel remembers (a fee negotiation signs one per
/// offer).
pub const MAX_MUTUAL_CLOSES: usize = 64;

/// What one commitment transaction gave us, as the `commitment-balance` rule measures it
/// (see `policy_channel`).
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct CommitmentBalance {
    /// Our balance output (our `to_local` on a holder commitment, our `to_remote` on the
    /// peer's), satoshis; 0 when it is absent (trimmed).
    pub ours_sat: u64,
    /// The BOLT 3 fee of the commitment at its fee rate, satoshis.
    pub fee_sat: u64,
    /// The channel value left out of the outputs beyond that fee and the anchors: trimmed
    /// HTLCs and balances, and rounding (negative if the outputs take more).
    pub dust_sat: i64,
    /// The HTLCs we offered in it: amount (msat), payment hash (hex), CLTV expiry.
    pub offered: Vec<(u64, String, u32)>,
    /// How many HTLCs (either direction, trimmed or not) it carried.
    #[serde(default)]
    pub htlcs: usize,
    /// How much more than the least `commitment-balance` allowed it gives us, satoshis: what
    /// HTLCs offered to us that were fulfilled (and ours that failed) brought back. Not kept.
    #[serde(skip)]
    pub gain_sat: i64,
}

/// The signer's database.
pub struct Store {
    db: Database,
    durable: bool,
}

impl Store {
    /// Opens (or creates) the database at `path`; every commit is flushed to disk.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path).map_err(storage)?;
        let store = Store { db, durable: true };
        store.init_tables()?;
        Ok(store)
    }

    /// A database in memory, gone with the process: for tests and for measuring the cost of
    /// durability. Never use it for a real node.
    pub fn temporary() -> Result<Store> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        let store = Store { db, durable: false };
        store.init_tables()?;
        Ok(store)
    }

    fn init_tables(&self) -> Result<()> {
        let txn = self.begin()?;
        txn.inner.open_table(CHANNELS).map_err(storage)?;
        txn.inner.open_table(REPLIES).map_err(storage)?;
        txn.inner.open_table(OUTPOINTS).map_err(storage)?;
        txn.inner.open_table(PAYMENTS).map_err(storage)?;
        txn.inner.open_table(APPROVALS).map_err(storage)?;
        txn.inner.open_table(CHANNEL_PAYMENTS).map_err(storage)?;
        txn.commit()
    }

    /// Starts the write transaction of one request.
    pub fn begin(&self) -> Result<Txn> {
        let mut inner = self.db.begin_write().map_err(storage)?;
        if !self.durable {
            inner.set_durability(Durability::None).map_err(storage)?;
        }
        Ok(Txn { inner })
    }

    /// The state of a channel as last committed, without starting a write.
    pub fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(CHANNELS).map_err(storage)?;
        let v = table.get(&key.to_bytes()[..]).map_err(storage)?;
        v.map(|v| decode_state(v.value())).transpose()
    }

    /// The reply already given to this client's request, as last committed (see
    /// [`Txn::cached_reply`]).
    pub fn cached_reply(
        &self,
        client: &ChannelKey,
        request_id: u64,
        request_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(REPLIES).map_err(storage)?;
        let v = table
            .get(&reply_key(client, request_id)[..])
            .map_err(storage)?;
        Ok(v.and_then(|v| {
            let v = v.value();
            (v.len() >= 32 && &v[..32] == request_hash).then(|| v[32..].to_vec())
        }))
    }

    /// A record, as last committed.
    pub fn record<T: DeserializeOwned>(&self, kind: Records, key: &[u8]) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(kind.table()).map_err(storage)?;
        let v = table.get(key).map_err(storage)?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(storage))
            .transpose()
    }

    /// Every record of a table, as last committed.
    pub fn records<T: DeserializeOwned>(&self, kind: Records) -> Result<Vec<(Vec<u8>, T)>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(kind.table()).map_err(storage)?;
        collect_records(table.iter().map_err(storage)?)
    }

    /// Every channel, for inspection.
    pub fn channels(&self) -> Result<Vec<(ChannelKey, ChannelState)>> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(CHANNELS).map_err(storage)?;
        collect_channels(table.iter().map_err(storage)?)
    }
}

/// One request's write transaction. Dropped without [`Txn::commit`], it changes nothing.
pub struct Txn {
    inner: redb::WriteTransaction,
}

impl Txn {
    /// The channel's state as of this transaction.
    pub fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>> {
        let table = self.inner.open_table(CHANNELS).map_err(storage)?;
        let v = table.get(&key.to_bytes()[..]).map_err(storage)?;
        v.map(|v| decode_state(v.value())).transpose()
    }

    /// Every channel, as of this transaction.
    pub fn channels(&self) -> Result<Vec<(ChannelKey, ChannelState)>> {
        let table = self.inner.open_table(CHANNELS).map_err(storage)?;
        collect_channels(table.iter().map_err(storage)?)
    }

    /// Replaces the channel's state.
    pub fn put_channel(&mut self, key: &ChannelKey, state: &ChannelState) -> Result<()> {
        let bytes = serde_json::to_vec(state).map_err(storage)?;
        let mut table = self.inner.open_table(CHANNELS).map_err(storage)?;
        table
            .insert(&key.to_bytes()[..], &bytes[..])
            .map_err(storage)?;
        Ok(())
    }

    /// The reply already given to this client's request `request_id`, if the request was the
    /// same (`request_hash`). A different request under a reused id is not a repeat.
    pub fn cached_reply(
        &self,
        client: &ChannelKey,
        request_id: u64,
        request_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>> {
        let table = self.inner.open_table(REPLIES).map_err(storage)?;
        let v = table
            .get(&reply_key(client, request_id)[..])
            .map_err(storage)?;
        Ok(v.and_then(|v| {
            let v = v.value();
            (v.len() >= 32 && &v[..32] == request_hash).then(|| v[32..].to_vec())
        }))
    }

    /// Remembers the reply to this client's request, and forgets its old ones.
    pub fn put_reply(
        &mut self,
        client: &ChannelKey,
        request_id: u64,
        request_hash: &[u8; 32],
        reply: &[u8],
    ) -> Result<()> {
        let mut table = self.inner.open_table(REPLIES).map_err(storage)?;
        let mut v = request_hash.to_vec();
        v.extend_from_slice(reply);
        table
            .insert(&reply_key(client, request_id)[..], &v[..])
            .map_err(storage)?;
        if request_id >= REPLIES_KEPT_PER_CLIENT {
            let lo = reply_key(client, 0);
            let hi = reply_key(client, request_id - REPLIES_KEPT_PER_CLIENT);
            table
                .retain_in(&lo[..]..&hi[..], |_, _| false)
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Records that a funding outpoint is locked to `channel`. Returns the channel it was
    /// already locked to, if any.
    pub fn lock_outpoint(
        &mut self,
        txid: &[u8; 32],
        vout: u16,
        channel: &ChannelKey,
    ) -> Result<Option<ChannelKey>> {
        let mut key = txid.to_vec();
        key.extend_from_slice(&vout.to_be_bytes());
        let mut table = self.inner.open_table(OUTPOINTS).map_err(storage)?;
        let prev = table
            .get(&key[..])
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        if prev.is_none() {
            table
                .insert(&key[..], &channel.to_bytes()[..])
                .map_err(storage)?;
        }
        Ok(prev.and_then(|p| {
            (p.len() == 41).then(|| {
                let mut peer = [0u8; 33];
                peer.copy_from_slice(&p[..33]);
                let mut dbid = [0u8; 8];
                dbid.copy_from_slice(&p[33..]);
                ChannelKey {
                    peer_id: protocol::types::NodeId::from_bytes(peer),
                    dbid: u64::from_be_bytes(dbid),
                }
            })
        }))
    }

    /// A record, as of this transaction.
    pub fn record<T: DeserializeOwned>(&self, kind: Records, key: &[u8]) -> Result<Option<T>> {
        let table = self.inner.open_table(kind.table()).map_err(storage)?;
        let v = table.get(key).map_err(storage)?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(storage))
            .transpose()
    }

    /// Every record of a table, as of this transaction.
    pub fn records<T: DeserializeOwned>(&self, kind: Records) -> Result<Vec<(Vec<u8>, T)>> {
        let table = self.inner.open_table(kind.table()).map_err(storage)?;
        collect_records(table.iter().map_err(storage)?)
    }

    /// Replaces a record.
    pub fn put_record<T: Serialize>(&mut self, kind: Records, key: &[u8], value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(storage)?;
        let mut table = self.inner.open_table(kind.table()).map_err(storage)?;
        table.insert(key, &bytes[..]).map_err(storage)?;
        Ok(())
    }

    /// Removes a record, if present.
    pub fn remove_record(&mut self, kind: Records, key: &[u8]) -> Result<()> {
        let mut table = self.inner.open_table(kind.table()).map_err(storage)?;
        table.remove(key).map_err(storage)?;
        Ok(())
    }

    /// Makes every change of this transaction durable (flushed to disk unless the store is
    /// [`Store::temporary`]).
    pub fn commit(self) -> Result<()> {
        self.inner.commit().map_err(storage)
    }

    /// Rolls everything written in this transaction back (as dropping it does, but with the
    /// error reported).
    pub fn abort(self) -> Result<()> {
        self.inner.abort().map_err(storage)
    }
}

fn reply_key(client: &ChannelKey, request_id: u64) -> [u8; 49] {
    let mut k = [0u8; 49];
    k[..41].copy_from_slice(&client.to_bytes());
    k[41..].copy_from_slice(&request_id.to_be_bytes());
    k
}

fn collect_records<T: DeserializeOwned>(
    iter: redb::Range<'_, &'static [u8], &'static [u8]>,
) -> Result<Vec<(Vec<u8>, T)>> {
    let mut out = Vec::new();
    for entry in iter {
        let (k, v) = entry.map_err(storage)?;
        out.push((
            k.value().to_vec(),
            serde_json::from_slice(v.value()).map_err(storage)?,
        ));
    }
    Ok(out)
}

fn collect_channels(
    iter: redb::Range<'_, &'static [u8], &'static [u8]>,
) -> Result<Vec<(ChannelKey, ChannelState)>> {
    let mut out = Vec::new();
    for entry in iter {
        let (k, v) = entry.map_err(storage)?;
        let k = k.value();
        if k.len() != 41 {
            return Err(SignerError::Storage("corrupt channel key".into()));
        }
        let mut peer = [0u8; 33];
        peer.copy_from_slice(&k[..33]);
        let mut dbid = [0u8; 8];
        dbid.copy_from_slice(&k[33..]);
        out.push((
            ChannelKey {
                peer_id: protocol::types::NodeId::from_bytes(peer),
                dbid: u64::from_be_bytes(dbid),
            },
            decode_state(v.value())?,
        ));
    }
    Ok(out)
}

fn decode_state(b: &[u8]) -> Result<ChannelState> {
    serde_json::from_slice(b)
        .map_err(|e| SignerError::Storage(format!("corrupt channel record: {e}")))
}

/// Byte strings of a channel record written as hex strings: every request reads and writes
/// its channel's record, and JSON arrays of numbers (serde's default for bytes) are three to
/// four times longer and far slower to parse. Records written before are read as well.
mod hex_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::fmt;

    /// Bytes, from a hex string or (as older records have them) an array of numbers.
    struct Bytes(Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a hex string or an array of bytes")
                }
                fn visit_str<E: Error>(self, s: &str) -> Result<Bytes, E> {
                    hex::decode(s).map(Bytes).map_err(E::custom)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                    let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                    while let Some(b) = seq.next_element::<u8>()? {
                        v.push(b);
                    }
                    Ok(Bytes(v))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// `Option<Vec<u8>>` as an optional hex string.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&hex::encode(b)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Bytes>::deserialize(d)?.map(|b| b.0))
        }
    }

    /// `BTreeMap<u64, PublicKey>` with compressed points as hex string values.
    pub mod points {
        use super::*;
        use secp256k1::PublicKey;

        pub fn serialize<S: Serializer>(
            v: &BTreeMap<u64, PublicKey>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_map(v.iter().map(|(k, p)| (k, hex::encode(p.serialize()))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<u64, PublicKey>, D::Error> {
            BTreeMap::<u64, Bytes>::deserialize(d)?
                .into_iter()
                .map(|(k, b)| {
                    PublicKey::from_slice(&b.0)
                        .map(|p| (k, p))
                        .map_err(D::Error::custom)
                })
                .collect()
        }
    }

    /// `Option<OutPoint>` as `[txid, vout]`, the txid in hex in its internal byte order (as
    /// records written before have it, as an array of numbers).
    pub mod outpoint {
        use super::*;
        use bitcoin::hashes::Hash;
        use bitcoin::{OutPoint, Txid};

        pub fn serialize<S: Serializer>(v: &Option<OutPoint>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(o) => s.serialize_some(&(hex::encode(o.txid.to_byte_array()), o.vout)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OutPoint>, D::Error> {
            Option::<(Bytes, u32)>::deserialize(d)?
                .map(|(txid, vout)| {
                    let txid = <[u8; 32]>::try_from(&txid.0[..])
                        .map_err(|_| D::Error::custom("a txid is 32 bytes"))?;
                    Ok(OutPoint {
                        txid: Txid::from_byte_array(txid),
                        vout,
                    })
                })
                .transpose()
        }
    }

    /// `BTreeMap<u64, Vec<u8>>` with hex string values.
    pub mod map {
        use super::*;

        pub fn serialize<S: Serializer>(
            v: &BTreeMap<u64, Vec<u8>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_map(v.iter().map(|(k, b)| (k, hex::encode(b))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<u64, Vec<u8>>, D::Error> {
            Ok(BTreeMap::<u64, Bytes>::deserialize(d)?
                .into_iter()
                .map(|(k, b)| (k, b.0))
                .collect())
        }
    }
}

fn storage(e: impl std::fmt::Display) -> SignerError {
    SignerError::Storage(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::types::NodeId;

    fn key(d: u64) -> ChannelKey {
        ChannelKey {
            peer_id: NodeId::from_bytes([2; 33]),
            dbid: d,
        }
    }

    #[test]
    fn uncommitted_changes_vanish_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut t = store.begin().unwrap();
            let s = ChannelState {
                holder_revoked_below: 7,
                ..Default::default()
            };
            t.put_channel(&key(1), &s).unwrap();
            t.commit().unwrap();
            let mut t = store.begin().unwrap();
            t.put_channel(&key(2), &s).unwrap();
            drop(t);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store
                .channel(&key(1))
                .unwrap()
                .unwrap()
                .holder_revoked_below,
            7
        );
        assert!(store.channel(&key(2)).unwrap().is_none());
        assert_eq!(store.channels().unwrap().len(), 1);
    }

    #[test]
    fn channel_bytes_are_hex_and_records_written_before_still_read() {
        use bitcoin::hashes::Hash;
        let g = secp256k1::SecretKey::from_slice(&[1; 32])
            .unwrap()
            .public_key(secp256k1::SECP256K1);
        let s = ChannelState {
            setup: Some(vec![0, 1, 0xfe]),
            counterparty_points: BTreeMap::from([(5, g)]),
            counterparty_secrets: BTreeMap::from([(3, vec![0xab; 32]), (4, vec![])]),
            funding_outpoint: Some(OutPoint {
                txid: bitcoin::Txid::from_byte_array([9; 32]),
                vout: 2,
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""setup":"0001fe""#), "{json}");
        assert!(json.contains(&format!(r#""5":"{g}""#)), "{json}");
        let outpoint = format!(r#""funding_outpoint":["{}",2]"#, "09".repeat(32));
        assert!(json.contains(&outpoint), "{json}");
        assert_eq!(decode_state(json.as_bytes()).unwrap(), s);
        // As records were written before: bytes as arrays of numbers.
        let old = format!(
            r#"{{"setup":[0,1,254],"holder_validated":null,"holder_revoked_below":0,
            "counterparty_signed":null,"counterparty_revoked_below":0,
            "counterparty_points":{{"5":[{}]}},
            "counterparty_secrets":{{"3":[{}],"4":[]}},"forgotten":false,
            "funding_outpoint":[[{}],2]}}"#,
            g.serialize().map(|b| b.to_string()).join(","),
            ["171"; 32].join(","),
            ["9"; 32].join(",")
        );
        assert_eq!(decode_state(old.as_bytes()).unwrap(), s);
        let none = ChannelState::default();
        let json_none = serde_json::to_string(&none).unwrap();
        assert_eq!(decode_state(json_none.as_bytes()).unwrap(), none);
        for bad in [r#""0g""#, "[256]", "5", r#""abc""#] {
            let bad = old.replace("[0,1,254]", bad);
            assert!(decode_state(bad.as_bytes()).is_err(), "{bad}");
        }
        // A point that is not on the curve, a txid that is not 32 bytes.
        let off_curve = format!(r#""5":"02{}""#, "00".repeat(32));
        let bad = json.replacen(&format!(r#""5":"{g}""#), &off_curve, 1);
        assert!(decode_state(bad.as_bytes()).is_err(), "{bad}");
        let bad = json.replacen(&"09".repeat(32), "0909", 1);
        assert!(decode_state(bad.as_bytes()).is_err(), "{bad}");
    }

    #[test]
    fn reply_cache_matches_request_and_prunes() {
        let store = Store::temporary().unwrap();
        let mut t = store.begin().unwrap();
        for id in 0..300 {
            t.put_reply(&key(1), id, &[1; 32], &[id as u8]).unwrap();
        }
        assert_eq!(
            t.cached_reply(&key(1), 299, &[1; 32]).unwrap(),
            Some(vec![43])
        );
        assert_eq!(t.cached_reply(&key(1), 299, &[2; 32]).unwrap(), None);
        assert_eq!(t.cached_reply(&key(1), 10, &[1; 32]).unwrap(), None);
        assert_eq!(t.cached_reply(&key(2), 299, &[1; 32]).unwrap(), None);
    }

    #[test]
    fn outpoint_locks_once() {
        let store = Store::temporary().unwrap();
        let mut t = store.begin().unwrap();
        assert_eq!(t.lock_outpoint(&[9; 32], 1, &key(1)).unwrap(), None);
        assert_eq!(t.lock_outpoint(&[9; 32], 1, &key(2)).unwrap(), Some(key(1)));
    }
}
