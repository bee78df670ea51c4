//! Static channel backup (SCB): what it takes to recover the funds of every channel after
//! the node's data is lost, sealed with a key only the signer can derive.
//!
//! - The key is the signer's `hsmd_derive_secret("scb secret")` ([`BackupKey::derive`]): the
//!   node holds it only while it seals or opens a backup, and another node's signer derives
//!   another key.
//! - Per channel ([`ChannelRecord`]): funding outpoint, peer node id and addresses, capacity,
//!   who opened it, channel type, both `to_self_delay`s, both funding keys and basepoints, and
//!   the `dbid` that, with the peer id, lets the signer re-derive the channel seed and so the
//!   shachain root and our keys.
//! - Plaintext: a versioned JSON document ([`StaticChannelBackup`]) that names the node id.
//! - File: `nonce (24 bytes) || XChaCha20-Poly1305(key, nonce, plaintext, aad = nonce)`. The
//!   nonce is random. After decryption the node id inside must be ours.
//! - A file that is truncated, altered, or sealed for another node fails with the one error
//!   [`BackupError::CannotOpen`], which does not say which (a wrong key and a flipped bit
//!   look the same to AEAD, and the message should not help anyone probe).
//! - [`write_backup`] writes a temporary file in the same directory, fsyncs it, renames it
//!   over `channel.backup` and fsyncs the directory: a crash leaves the old or the new
//!   backup, never a torn one. [`restore`] writes nothing unless the backup opens, and never
//!   overwrites an earlier restore.

use crate::client::{ClientError, HsmClient};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secp256k1::rand::{thread_rng, RngCore};
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// The file name of the backup in the node's directory.
pub const BACKUP_FILE: &str = "channel.backup";

/// The file [`restore`] writes in the target directory.
pub const RESTORED_FILE: &str = "restored-channels.json";

/// The `derive_secret` info string of the backup key (as Core Lightning's).
pub const SCB_SECRET_INFO: &[u8] = b"scb secret";

/// The `format` field of the plaintext.
pub const FORMAT: &str = "node static channel backup";

/// The plaintext version this code writes and reads.
pub const VERSION: u32 = 1;

/// The nonce length (XChaCha20).
pub const NONCE_LEN: usize = 24;

/// The Poly1305 tag length.
const TAG_LEN: usize = 16;

/// Backups larger than this are not read (far beyond any real node's).
const MAX_FILE_LEN: u64 = 64 << 20;

/// Why a backup could not be written, opened or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file is not a backup this node can open: truncated, altered, or sealed for another
    /// node (with another signer's key). Nothing was written.
    #[error(
        "cannot open the static channel backup: it is truncated or altered, or it was sealed \
         for another node"
    )]
    CannotOpen,
    /// The backup opened, but was written by a newer version of this software.
    #[error("the static channel backup has version {0}; this node reads version {VERSION}")]
    UnsupportedVersion(u32),
    /// [`restore`] found an earlier restore in the target directory and left it alone.
    #[error("{} already exists; not overwriting an earlier restore", path.display())]
    AlreadyRestored {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The signer did not derive the key.
    #[error("cannot get the backup key from the signer: {0}")]
    Signer(#[from] ClientError),
    /// The backup could not be serialized (not expected to happen).
    #[error("cannot serialize the backup: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// The key that seals backups: the signer's `derive_secret("scb secret")`. Wiped on drop;
/// `Debug` does not show it.
pub struct BackupKey([u8; 32]);

impl BackupKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        BackupKey(bytes)
    }

    /// Asks the signer for the key (`hsmd_derive_secret` with info `scb secret`; needs the
    /// master permission).
    pub async fn derive(client: &HsmClient) -> Result<BackupKey, ClientError> {
        let secret = client.derive_secret(SCB_SECRET_INFO).await?;
        Ok(BackupKey(secret.0))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

impl Drop for BackupKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

/// A channel's four basepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basepoints {
    /// Revocation basepoint.
    #[serde(with = "text")]
    pub revocation: PublicKey,
    /// Payment basepoint.
    #[serde(with = "text")]
    pub payment: PublicKey,
    /// HTLC basepoint.
    #[serde(with = "text")]
    pub htlc: PublicKey,
    /// Delayed payment basepoint.
    #[serde(with = "text")]
    pub delayed_payment: PublicKey,
}

impl From<&protocol::types::Basepoints> for Basepoints {
    fn from(b: &protocol::types::Basepoints) -> Self {
        Basepoints {
            revocation: b.revocation,
            payment: b.payment,
            htlc: b.htlc,
            delayed_payment: b.delayed_payment,
        }
    }
}

impl From<&Basepoints> for protocol::types::Basepoints {
    fn from(b: &Basepoints) -> Self {
        protocol::types::Basepoints {
            revocation: b.revocation,
            payment: b.payment,
            htlc: b.htlc,
            delayed_payment: b.delayed_payment,
        }
    }
}

/// What it takes to recover one channel's funds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The funding output (`txid:vout`).
    #[serde(with = "text")]
    pub funding_outpoint: bitcoin::OutPoint,
    /// The peer's node id.
    #[serde(with = "text")]
    pub peer_id: PublicKey,
    /// Where the peer was reachable (`host:port`), to reconnect and ask it to close.
    pub peer_addresses: Vec<String>,
    /// The channel's capacity (the funding output's value).
    pub capacity_sat: u64,
    /// Whether we opened (funded) the channel.
    pub we_initiated: bool,
    /// The channel type's feature bits (e.g. 12 = `option_static_remotekey`, 22 = anchors).
    pub channel_type: Vec<usize>,
    /// The delay on our outputs in our commitment (set by the peer).
    pub our_to_self_delay: u16,
    /// The delay on their outputs in their commitment (set by us).
    pub their_to_self_delay: u16,
    /// The channel's database id: with `peer_id`, the signer re-derives the channel seed, our
    /// basepoints, funding key and shachain root from it.
    pub dbid: u64,
    /// Our funding public key.
    #[serde(with = "text")]
    pub our_funding_pubkey: PublicKey,
    /// The peer's funding public key.
    #[serde(with = "text")]
    pub their_funding_pubkey: PublicKey,
    /// Our basepoints.
    pub our_basepoints: Basepoints,
    /// The peer's basepoints.
    pub their_basepoints: Basepoints,
}

/// The plaintext of a backup: the node it belongs to and its channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticChannelBackup {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this code.
    pub version: u32,
    /// The node whose channels these are.
    #[serde(with = "text")]
    pub node_id: PublicKey,
    /// When the backup was made (Unix seconds).
    pub created_at: u64,
    /// The channels.
    pub channels: Vec<ChannelRecord>,
}

impl StaticChannelBackup {
    /// A backup of `node_id`'s `channels`, made now.
    pub fn new(node_id: PublicKey, channels: Vec<ChannelRecord>) -> Self {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        StaticChannelBackup {
            format: FORMAT.to_string(),
            version: VERSION,
            node_id,
            created_at,
            channels,
        }
    }
}

/// Seals `backup` with `key` and a fresh random nonce: `nonce || ciphertext`.
pub fn seal(key: &BackupKey, backup: &StaticChannelBackup) -> Result<Vec<u8>, BackupError> {
    let mut plain = serde_json::to_vec(backup).map_err(BackupError::Serialize)?;
    let mut nonce = [0u8; NONCE_LEN];
    thread_rng().fill_bytes(&mut nonce);
    let sealed = key.cipher().encrypt(
        XNonce::from_slice(&nonce),
        Payload {
            msg: &plain,
            aad: &nonce,
        },
    );
    plain.zeroize();
    // Encryption only fails for plaintexts beyond 256 GiB.
    let ct = sealed.map_err(|_| BackupError::CannotOpen)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a sealed backup of `node_id`.
///
/// # Errors
/// [`BackupError::CannotOpen`] if it is too short, fails authentication (altered, truncated,
/// or another key), or names another node; [`BackupError::UnsupportedVersion`] for a newer
/// format.
pub fn open(
    key: &BackupKey,
    node_id: &PublicKey,
    sealed: &[u8],
) -> Result<StaticChannelBackup, BackupError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(BackupError::CannotOpen);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let mut plain = key
        .cipher()
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: nonce,
            },
        )
        .map_err(|_| BackupError::CannotOpen)?;
    let parsed = parse_plaintext(&plain, node_id);
    plain.zeroize();
    parsed
}

fn parse_plaintext(plain: &[u8], node_id: &PublicKey) -> Result<StaticChannelBackup, BackupError> {
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    // Authenticated, so written by a holder of the key; still, nothing here may panic.
    let header: Header = serde_json::from_slice(plain).map_err(|_| BackupError::CannotOpen)?;
    if header.format != FORMAT {
        return Err(BackupError::CannotOpen);
    }
    if header.version != VERSION {
        return Err(BackupError::UnsupportedVersion(header.version));
    }
    let backup: StaticChannelBackup =
        serde_json::from_slice(plain).map_err(|_| BackupError::CannotOpen)?;
    if backup.node_id != *node_id {
        return Err(BackupError::CannotOpen);
    }
    Ok(backup)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory. The file is readable by its owner only.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = temp_file_for(path, dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_file_for(path: &Path, dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Seals `backup` and swaps it into `path` atomically (see [`write_file_atomic`]). Call it
/// whenever a channel opens or closes.
pub fn write_backup(
    path: &Path,
    key: &BackupKey,
    backup: &StaticChannelBackup,
) -> Result<(), BackupError> {
    let sealed = seal(key, backup)?;
    write_file_atomic(path, &sealed).map_err(io_err(path))
}

/// Derives the key from the signer and writes `node_id`'s backup of `channels` to `path`
/// (`node backup export`).
pub async fn export(
    client: &HsmClient,
    path: &Path,
    node_id: &PublicKey,
    channels: Vec<ChannelRecord>,
) -> Result<StaticChannelBackup, BackupError> {
    let key = BackupKey::derive(client).await?;
    let backup = StaticChannelBackup::new(*node_id, channels);
    write_backup(path, &key, &backup)?;
    Ok(backup)
}

/// Reads and opens the backup at `path` (`node backup verify`).
///
/// # Errors
/// [`BackupError::Io`] if the file cannot be read, and the errors of [`open`].
pub fn read_backup(
    path: &Path,
    key: &BackupKey,
    node_id: &PublicKey,
) -> Result<StaticChannelBackup, BackupError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(BackupError::CannotOpen);
    }
    open(key, node_id, &bytes)
}

/// Opens the backup at `backup_path` and writes its channel records as JSON (a
/// [`StaticChannelBackup`], pretty-printed) to `restored-channels.json` in `target_dir`
/// (`node backup restore`), for the node's store to take over. Returns the file written.
///
/// # Errors
/// [`BackupError::AlreadyRestored`] if the target file exists (it is left alone); the errors
/// of [`read_backup`], in which case nothing is written.
pub fn restore(
    backup_path: &Path,
    target_dir: &Path,
    key: &BackupKey,
    node_id: &PublicKey,
) -> Result<PathBuf, BackupError> {
    let target = target_dir.join(RESTORED_FILE);
    if target.exists() {
        return Err(BackupError::AlreadyRestored { path: target });
    }
    let backup = read_backup(backup_path, key, node_id)?;
    let json = serde_json::to_vec_pretty(&backup).map_err(BackupError::Serialize)?;
    let mut tmp = temp_file_for(&target, target_dir).map_err(io_err(target_dir))?;
    tmp.write_all(&json).map_err(io_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err(&target))?;
    match tmp.persist_noclobber(&target) {
        Ok(_) => {}
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BackupError::AlreadyRestored { path: target });
        }
        Err(e) => return Err(io_err(&target)(e.error)),
    }
    sync_dir(target_dir).map_err(io_err(target_dir))?;
    Ok(target)
}

/// Serde through `Display` / `FromStr` (public keys as hex, outpoints as `txid:vout`).
mod text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientInfo;
    use bitcoin::hashes::Hash;
    use protocol::frame::tokio_io;
    use protocol::msgs::{DeriveSecret, DeriveSecretReply};
    use protocol::types::Secret;
    use secp256k1::{Secp256k1, SecretKey};
    use std::str::FromStr;
    use tokio::net::UnixStream;

    fn key_of(i: u8) -> PublicKey {
        SecretKey::from_slice(&[i; 32])
            .unwrap()
            .public_key(&Secp256k1::new())
    }

    fn basepoints(i: u8) -> Basepoints {
        Basepoints {
            revocation: key_of(i),
            payment: key_of(i + 1),
            htlc: key_of(i + 2),
            delayed_payment: key_of(i + 3),
        }
    }

    fn channel(n: u8) -> ChannelRecord {
        ChannelRecord {
            funding_outpoint: bitcoin::OutPoint::new(
                bitcoin::Txid::from_byte_array([n; 32]),
                u32::from(n),
            ),
            peer_id: key_of(100 + n),
            peer_addresses: vec![format!("127.0.0.1:{}", 9700 + u16::from(n))],
            capacity_sat: 1_000_000 * u64::from(n),
            we_initiated: n % 2 == 1,
            channel_type: if n % 2 == 1 { vec![12] } else { vec![12, 22] },
            our_to_self_delay: 144,
            their_to_self_delay: 2016,
            dbid: u64::from(n),
            our_funding_pubkey: key_of(10 + n),
            their_funding_pubkey: key_of(20 + n),
            our_basepoints: basepoints(30 + n * 4),
            their_basepoints: basepoints(70 + n * 4),
        }
    }

    fn node_id() -> PublicKey {
        key_of(1)
    }

    fn backup() -> StaticChannelBackup {
        StaticChannelBackup::new(node_id(), vec![channel(1), channel(2), channel(3)])
    }

    fn key() -> BackupKey {
        BackupKey::from_bytes([0x5c; 32])
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BACKUP_FILE);
        let b = backup();
        write_backup(&path, &key(), &b).unwrap();
        assert_eq!(read_backup(&path, &key(), &node_id()).unwrap(), b);
        // Only the backup is left in the directory (the temporary file was renamed).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(BACKUP_FILE)]);
        // Replacing it: the new one is read.
        let b2 = StaticChannelBackup::new(node_id(), vec![channel(4)]);
        write_backup(&path, &key(), &b2).unwrap();
        assert_eq!(read_backup(&path, &key(), &node_id()).unwrap(), b2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only");
        }
    }

    #[test]
    fn file_layout_is_nonce_then_ciphertext_with_the_nonce_as_aad() {
        let b = backup();
        let sealed = seal(&key(), &b).unwrap();
        let plain = serde_json::to_vec(&b).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + plain.len() + TAG_LEN);
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let c = XChaCha20Poly1305::new((&[0x5c; 32]).into());
        let opened = c
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: nonce,
                },
            )
            .unwrap();
        assert_eq!(opened, plain);
        // Without the nonce as associated data, it does not open.
        assert!(c.decrypt(XNonce::from_slice(nonce), ct).is_err());
        // Fresh nonce each time.
        assert_ne!(seal(&key(), &b).unwrap()[..NONCE_LEN], sealed[..NONCE_LEN]);
        // The plaintext is readable JSON naming the node.
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["version"], 1);
        assert_eq!(v["node_id"], node_id().to_string());
        assert_eq!(
            v["channels"][0]["funding_outpoint"],
            format!("{}:1", bitcoin::Txid::from_byte_array([1; 32]))
        );
        assert_eq!(
            v["channels"][1]["channel_type"],
            serde_json::json!([12, 22])
        );
    }

    #[test]
    fn another_nodes_backup_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BACKUP_FILE);
        write_backup(&path, &key(), &backup()).unwrap();
        let other_key = BackupKey::from_bytes([0x5d; 32]);
        assert!(matches!(
            read_backup(&path, &other_key, &key_of(2)),
            Err(BackupError::CannotOpen)
        ));
        // Same key (it cannot happen with distinct signers), other node id: still refused.
        assert!(matches!(
            read_backup(&path, &key(), &key_of(2)),
            Err(BackupError::CannotOpen)
        ));
        let msg = BackupError::CannotOpen.to_string();
        assert!(
            msg.contains("another node") && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_or_altered_files_fail_the_same_way() {
        let sealed = seal(&key(), &backup()).unwrap();
        for len in [
            0,
            1,
            NONCE_LEN,
            NONCE_LEN + TAG_LEN - 1,
            NONCE_LEN + TAG_LEN,
            sealed.len() - 1,
        ] {
            assert!(
                matches!(
                    open(&key(), &node_id(), &sealed[..len]),
                    Err(BackupError::CannotOpen)
                ),
                "length {len}"
            );
        }
        // Every single bit flipped (nonce, ciphertext and tag), in a sample of positions.
        for byte in (0..sealed.len()).step_by(7).chain([sealed.len() - 1]) {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    matches!(open(&key(), &node_id(), &bad), Err(BackupError::CannotOpen)),
                    "byte {byte} bit {bit}"
                );
            }
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(
            open(&key(), &node_id(), &longer),
            Err(BackupError::CannotOpen)
        ));
    }

    #[test]
    fn a_newer_version_is_named() {
        let mut b = backup();
        b.version = 2;
        let sealed = seal(&key(), &b).unwrap();
        assert!(matches!(
            open(&key(), &node_id(), &sealed),
            Err(BackupError::UnsupportedVersion(2))
        ));
        let mut b = backup();
        b.format = "something else".into();
        let sealed = seal(&key(), &b).unwrap();
        assert!(matches!(
            open(&key(), &node_id(), &sealed),
            Err(BackupError::CannotOpen)
        ));
    }

    #[test]
    fn restore_writes_records_once_and_never_from_a_bad_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BACKUP_FILE);
        let target = tempfile::tempdir().unwrap();
        let b = backup();
        write_backup(&path, &key(), &b).unwrap();

        // A bad backup writes nothing.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        let bad = dir.path().join("bad.backup");
        std::fs::write(&bad, &bytes).unwrap();
        assert!(matches!(
            restore(&bad, target.path(), &key(), &node_id()),
            Err(BackupError::CannotOpen)
        ));
        assert!(matches!(
            restore(
                &path,
                target.path(),
                &BackupKey::from_bytes([1; 32]),
                &node_id()
            ),
            Err(BackupError::CannotOpen)
        ));
        assert!(matches!(
            restore(
                &dir.path().join("missing"),
                target.path(),
                &key(),
                &node_id()
            ),
            Err(BackupError::Io { .. })
        ));
        assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);

        // A good one is restored.
        let written = restore(&path, target.path(), &key(), &node_id()).unwrap();
        assert_eq!(written, target.path().join(RESTORED_FILE));
        let restored: StaticChannelBackup =
            serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
        assert_eq!(restored, b);
        assert_eq!(restored.channels.len(), 3);

        // Not twice: the first restore is left as it was.
        let before = std::fs::read(&written).unwrap();
        let other = dir.path().join("other.backup");
        write_backup(&other, &key(), &StaticChannelBackup::new(node_id(), vec![])).unwrap();
        assert!(matches!(
            restore(&other, target.path(), &key(), &node_id()),
            Err(BackupError::AlreadyRestored { .. })
        ));
        assert_eq!(std::fs::read(&written).unwrap(), before);
        assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 1);
    }

    #[test]
    fn records_convert_to_protocol_basepoints() {
        let b = basepoints(40);
        let p = protocol::types::Basepoints::from(&b);
        assert_eq!(Basepoints::from(&p), b);
        let json = serde_json::to_string(&channel(1)).unwrap();
        let back: ChannelRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, channel(1));
        let bad = json.replace(&key_of(101).to_string(), "02zz");
        assert!(serde_json::from_str::<ChannelRecord>(&bad).is_err());
        assert!(bitcoin::OutPoint::from_str("00:1").is_err());
    }

    #[tokio::test]
    async fn the_key_comes_from_derive_secret_scb_secret() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let client = HsmClient::new(crate::client::test_socket(a), ClientInfo::MASTER, false);
        let server = tokio::spawn(async move {
            let req = tokio_io::read(&mut b).await.unwrap().unwrap();
            let reply = DeriveSecretReply::new(Secret([0x5c; 32])).encode().unwrap();
            tokio_io::write(&mut b, &reply).await.unwrap();
            (req, b)
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BACKUP_FILE);
        let written = export(&client, &path, &node_id(), vec![channel(1)])
            .await
            .unwrap();
        let (req, _b) = server.await.unwrap();
        let req = DeriveSecret::decode(&req).unwrap();
        assert_eq!(req.info, b"scb secret");
        // The derived secret is the key: the file opens with it.
        assert_eq!(read_backup(&path, &key(), &node_id()).unwrap(), written);
        assert_eq!(format!("{:?}", key()), "BackupKey(..)");
    }
}
