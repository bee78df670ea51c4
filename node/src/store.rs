//! The node's persistent state under its data directory: channels and peers, one JSON file
//! each, and a few counters.
//!
//! ```text
//! <data dir>/node.json                 counters: next channel dbid, next wallet key index
//! <data dir>/channels/<channel id>.json  a ChannelRecord
//! <data dir>/peers/<node id>.json        a PeerRecord
//! ```
//!
//! Every file is written atomically ([`write_atomic`]: a temporary file in the same
//! directory, fsynced, renamed over the old one, and the directory fsynced), so a crash
//! leaves either the old or the new content, never a torn file. A file that does not parse is
//! a [`StoreError::Corrupt`] naming it: nothing is silently dropped. Counters only go up, and
//! are persisted before the value is handed out, so a dbid or wallet index is never given
//! twice across restarts.

use crate::channel::ChannelRecord;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the store could not read or write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A counter ran out.
    #[error("the {0} counter is exhausted")]
    Exhausted(&'static str),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it is written and fsynced,
/// then renamed over `path`, and the directory is fsynced. A crash leaves the old content or
/// the new, and a reader never sees a partial file.
///
/// # Errors
/// The I/O error; `path` is then unchanged (a stray temporary file may remain).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// What the node knows of a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer's node id.
    #[serde(with = "serde_hex::pubkey")]
    pub node_id: secp256k1::PublicKey,
    /// Addresses it was reached at (`host:port`), most recent first.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// When we last connected (unix seconds), if ever.
    #[serde(default)]
    pub last_connected: Option<u64>,
}

/// The counters of `node.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counters {
    /// The next channel database id (starts at 1: 0 is for global clients).
    next_dbid: u64,
    /// The next wallet key index to hand out.
    next_wallet_index: u32,
}

/// The node's persistent state (see the module documentation).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Serializes read-modify-write of the counters within this process.
    counters: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directories cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        for sub in [dir.clone(), dir.join("channels"), dir.join("peers")] {
            std::fs::create_dir_all(&sub).map_err(io_err(&sub))?;
        }
        Ok(Store {
            dir,
            counters: Mutex::new(()),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn channel_path(&self, channel_id: &[u8; 32]) -> PathBuf {
        self.dir
            .join("channels")
            .join(format!("{}.json", hex::encode(channel_id)))
    }

    fn peer_path(&self, node_id: &secp256k1::PublicKey) -> PathBuf {
        self.dir.join("peers").join(format!("{node_id}.json"))
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("cannot serialize: {e}"),
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes).map_err(io_err(path))
    }

    fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Every `*.json` file of a subdirectory, parsed, in file-name order.
    fn read_all<T: DeserializeOwned>(&self, sub: &str) -> Result<Vec<T>, StoreError> {
        let dir = self.dir.join(sub);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            if let Some(v) = Self::read_json(&p)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Saves (creates or replaces) a channel.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it cannot be written (the old record is then unchanged).
    pub fn save_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        self.write_json(&self.channel_path(&channel.channel_id), channel)
    }

    /// The channel with this id, if saved.
    ///
    /// # Errors
    /// [`StoreError`] if its file cannot be read or parsed.
    pub fn channel(&self, channel_id: &[u8; 32]) -> Result<Option<ChannelRecord>, StoreError> {
        let path = self.channel_path(channel_id);
        let rec: Option<ChannelRecord> = Self::read_json(&path)?;
        match rec {
            Some(r) if r.channel_id != *channel_id => Err(StoreError::Corrupt {
                path,
                reason: format!("holds channel {}", hex::encode(r.channel_id)),
            }),
            r => Ok(r),
        }
    }

    /// Every saved channel.
    ///
    /// # Errors
    /// [`StoreError`] if a file cannot be read or parsed.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.read_all("channels")
    }

    /// Saves (creates or replaces) a peer.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it cannot be written.
    pub fn save_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        self.write_json(&self.peer_path(&peer.node_id), peer)
    }

    /// The peer with this node id, if saved.
    ///
    /// # Errors
    /// [`StoreError`] if its file cannot be read or parsed.
    pub fn peer(&self, node_id: &secp256k1::PublicKey) -> Result<Option<PeerRecord>, StoreError> {
        Self::read_json(&self.peer_path(node_id))
    }

    /// Every saved peer.
    ///
    /// # Errors
    /// [`StoreError`] if a file cannot be read or parsed.
    pub fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.read_all("peers")
    }

    /// Records that we reached `node_id` at `address` (if any) now: the address goes first
    /// in its list.
    ///
    /// # Errors
    /// [`StoreError`] if the record cannot be read or written.
    pub fn touch_peer(
        &self,
        node_id: &secp256k1::PublicKey,
        address: Option<&str>,
    ) -> Result<PeerRecord, StoreError> {
        let mut rec = self.peer(node_id)?.unwrap_or(PeerRecord {
            node_id: *node_id,
            addresses: Vec::new(),
            last_connected: None,
        });
        if let Some(a) = address {
            rec.addresses.retain(|x| x != a);
            rec.addresses.insert(0, a.to_string());
        }
        rec.last_connected = Some(unix_now());
        self.save_peer(&rec)?;
        Ok(rec)
    }

    fn update_counters<T>(
        &self,
        f: impl FnOnce(&mut Counters) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _guard = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = self.dir.join("node.json");
        let mut c: Counters = Self::read_json(&path)?.unwrap_or_default();
        let out = f(&mut c)?;
        self.write_json(&path, &c)?;
        Ok(out)
    }

    /// A channel database id never handed out before (from 1 up), persisted before it is
    /// returned.
    ///
    /// # Errors
    /// [`StoreError`] if the counter cannot be read or written.
    pub fn next_dbid(&self) -> Result<u64, StoreError> {
        self.update_counters(|c| {
            let id = c.next_dbid.max(1);
            c.next_dbid = id.checked_add(1).ok_or(StoreError::Exhausted("dbid"))?;
            Ok(id)
        })
    }

    /// A wallet key index never handed out before (from 0 up), persisted before it is
    /// returned.
    ///
    /// # Errors
    /// [`StoreError`] if the counter cannot be read or written, or past 2^31 - 1 (wallet keys
    /// are unhardened).
    pub fn next_wallet_index(&self) -> Result<u32, StoreError> {
        self.update_counters(|c| {
            let i = c.next_wallet_index;
            if i >= 1 << 31 {
                return Err(StoreError::Exhausted("wallet index"));
            }
            c.next_wallet_index = i + 1;
            Ok(i)
        })
    }

    /// Makes sure later wallet indexes are above `index` (for an index learned elsewhere).
    ///
    /// # Errors
    /// [`StoreError`] if the counter cannot be read or written.
    pub fn reserve_wallet_index(&self, index: u32) -> Result<(), StoreError> {
        self.update_counters(|c| {
            c.next_wallet_index = c.next_wallet_index.max(index.saturating_add(1));
            Ok(())
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serde helpers that write keys, hashes, outpoints and signatures as hex strings, for the
/// records' JSON.
pub mod serde_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s).map_err(serde::de::Error::custom)
    }

    /// A 32-byte array as 64 hex digits.
    pub mod bytes32 {
        use super::*;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(v))
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
            hex_bytes(d)?
                .try_into()
                .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
        }
    }

    /// Bytes as hex.
    pub mod bytes {
        use super::*;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(v))
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            hex_bytes(d)
        }
    }

    /// A compressed public key as 66 hex digits.
    pub mod pubkey {
        use super::*;
        use secp256k1::PublicKey;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(v.serialize()))
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
            PublicKey::from_slice(&hex_bytes(d)?).map_err(serde::de::Error::custom)
        }
    }

    /// An optional public key.
    pub mod opt_pubkey {
        use super::*;
        use secp256k1::PublicKey;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &Option<PublicKey>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(k) => s.serialize_some(&hex::encode(k.serialize())),
                None => s.serialize_none(),
            }
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PublicKey>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    hex::decode(&s)
                        .map_err(serde::de::Error::custom)
                        .and_then(|b| PublicKey::from_slice(&b).map_err(serde::de::Error::custom))
                })
                .transpose()
        }
    }

    /// An outpoint as `txid:vout`.
    pub mod outpoint {
        use super::*;
        use bitcoin::OutPoint;
        use std::str::FromStr;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &OutPoint, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OutPoint, D::Error> {
            let s = String::deserialize(d)?;
            OutPoint::from_str(&s).map_err(serde::de::Error::custom)
        }
    }

    /// A transaction id in the usual (reversed) hex.
    pub mod txid {
        use super::*;
        use bitcoin::Txid;
        use std::str::FromStr;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &Txid, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Txid, D::Error> {
            let s = String::deserialize(d)?;
            Txid::from_str(&s).map_err(serde::de::Error::custom)
        }
    }

    /// An optional ECDSA signature as 128 hex digits (compact form).
    pub mod opt_signature {
        use super::*;
        use secp256k1::ecdsa::Signature;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &Option<Signature>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(sig) => s.serialize_some(&hex::encode(sig.serialize_compact())),
                None => s.serialize_none(),
            }
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Signature>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    hex::decode(&s)
                        .map_err(serde::de::Error::custom)
                        .and_then(|b| Signature::from_compact(&b).map_err(serde::de::Error::custom))
                })
                .transpose()
        }
    }

    /// An optional transaction as consensus hex.
    pub mod opt_tx {
        use super::*;
        use bitcoin::Transaction;
        /// Serializes.
        pub fn serialize<S: Serializer>(v: &Option<Transaction>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(tx) => s.serialize_some(&bitcoin::consensus::encode::serialize_hex(tx)),
                None => s.serialize_none(),
            }
        }
        /// Deserializes.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Transaction>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    hex::decode(&s)
                        .map_err(serde::de::Error::custom)
                        .and_then(|b| {
                            bitcoin::consensus::deserialize(&b).map_err(serde::de::Error::custom)
                        })
                })
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> secp256k1::PublicKey {
        secp256k1::SecretKey::from_slice(&[b; 32])
            .unwrap()
            .public_key(secp256k1::SECP256K1)
    }

    #[test]
    fn counters_go_up_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.next_dbid().unwrap(), 1);
        assert_eq!(s.next_dbid().unwrap(), 2);
        assert_eq!(s.next_wallet_index().unwrap(), 0);
        s.reserve_wallet_index(9).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.next_dbid().unwrap(), 3);
        assert_eq!(s.next_wallet_index().unwrap(), 10);
    }

    #[test]
    fn peers_persist_and_addresses_move_to_the_front() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.touch_peer(&key(1), Some("127.0.0.1:9735")).unwrap();
        s.touch_peer(&key(1), Some("127.0.0.1:9736")).unwrap();
        s.touch_peer(&key(1), Some("127.0.0.1:9735")).unwrap();
        s.touch_peer(&key(2), None).unwrap();
        let s = Store::open(dir.path()).unwrap();
        let peers = s.peers().unwrap();
        assert_eq!(peers.len(), 2);
        let p = s.peer(&key(1)).unwrap().unwrap();
        assert_eq!(p.addresses, ["127.0.0.1:9735", "127.0.0.1:9736"]);
        assert!(p.last_connected.is_some());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let bad = dir.path().join("peers").join(format!("{}.json", key(3)));
        std::fs::write(&bad, b"{\"node_id\": 12").unwrap();
        match s.peers() {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.path().join("node.json"), b"[]").unwrap();
        assert!(matches!(s.next_dbid(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
    }
}
