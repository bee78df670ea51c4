//! Strong types for the fields of hsmd messages, with their wire encodings: node ids,
//! secrets, amounts, bitcoin signatures, Core Lightning's composite encodings
//! (`bitcoin_tx`, `wally_psbt`, `hsm_utxo`, `hsm_htlc`, `basepoints`, `channel_type`, ...).

use crate::codec::{write_len, Reader, Wire};
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use bitcoin::hashes::sha256;
use bitcoin::psbt::Psbt;
use bitcoin::{Transaction, Txid};
use secp256k1::{ecdsa, PublicKey};
use std::fmt;

/// A node id: 33 bytes as they appear on the wire.
///
/// Core Lightning does not check that a node id on the wire is a valid point, so neither does
/// decoding; [`NodeId::to_public_key`] checks it where a key is needed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 33]);

impl NodeId {
    /// The node id with these bytes.
    pub const fn from_bytes(b: [u8; 33]) -> Self {
        NodeId(b)
    }
    /// The node id of a public key.
    pub fn from_pubkey(pk: &PublicKey) -> Self {
        NodeId(pk.serialize())
    }
    /// The 33 bytes.
    pub fn as_bytes(&self) -> &[u8; 33] {
        &self.0
    }
    /// The public key, if these bytes are a valid compressed point.
    pub fn to_public_key(&self) -> Option<PublicKey> {
        PublicKey::from_slice(&self.0).ok()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl Wire for NodeId {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(NodeId(r.array()?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.0);
        Ok(())
    }
}

/// A 32-byte secret (ECDH result, per-commitment secret, derived secret, private key).
///
/// Its `Debug` never prints the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Wire for Secret {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Secret(r.array()?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.0);
        Ok(())
    }
}

/// An amount in millisatoshis.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct AmountMsat(u64);

impl AmountMsat {
    /// Zero.
    pub const ZERO: AmountMsat = AmountMsat(0);
    /// The amount of `msat` millisatoshis.
    pub const fn from_msat(msat: u64) -> Self {
        AmountMsat(msat)
    }
    /// The amount in millisatoshis.
    pub const fn to_msat(self) -> u64 {
        self.0
    }
    /// Sum, or `None` on overflow.
    pub fn checked_add(self, o: AmountMsat) -> Option<AmountMsat> {
        self.0.checked_add(o.0).map(AmountMsat)
    }
    /// Difference, or `None` if `o` is larger.
    pub fn checked_sub(self, o: AmountMsat) -> Option<AmountMsat> {
        self.0.checked_sub(o.0).map(AmountMsat)
    }
}

impl Wire for AmountMsat {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AmountMsat(u64::read(r)?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.0.write(w)
    }
}

/// The sighash types a `bitcoin_signature` may carry on this protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SighashFlag {
    /// SIGHASH_ALL (0x01).
    All,
    /// SIGHASH_SINGLE|SIGHASH_ANYONECANPAY (0x83), used by anchor HTLC transactions.
    SingleAnyoneCanPay,
}

impl SighashFlag {
    /// The sighash byte.
    pub fn to_u8(self) -> u8 {
        match self {
            SighashFlag::All => 0x01,
            SighashFlag::SingleAnyoneCanPay => 0x83,
        }
    }
}

/// `bitcoin_signature`: a compact ECDSA signature and its sighash byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BitcoinSignature {
    /// The signature.
    pub sig: ecdsa::Signature,
    /// What it commits to.
    pub sighash: SighashFlag,
}

impl Wire for BitcoinSignature {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let sig = ecdsa::Signature::read(r)?;
        let sighash = match u8::read(r)? {
            0x01 => SighashFlag::All,
            0x83 => SighashFlag::SingleAnyoneCanPay,
            b => return Err(r.error(DecodeErrorKind::InvalidSighash(b))),
        };
        Ok(BitcoinSignature { sig, sighash })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.sig.write(w)?;
        w.push(self.sighash.to_u8());
        Ok(())
    }
}

/// `wirestring`: bytes of at least 0x20 each, NUL-terminated on the wire.
///
/// Not necessarily UTF-8 (Core Lightning accepts any byte >= 0x20).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WireString(Vec<u8>);

impl WireString {
    /// The string, if no byte is below 0x20.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Self> {
        let b = bytes.into();
        b.iter().all(|&c| c >= 0x20).then_some(WireString(b))
    }
    /// The bytes, without the NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
    /// The text, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<&str> for WireString {
    /// Control characters (below 0x20) are replaced by spaces.
    fn from(s: &str) -> Self {
        WireString(s.bytes().map(|c| if c < 0x20 { b' ' } else { c }).collect())
    }
}

impl fmt::Debug for WireString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl Wire for WireString {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let rest = r.peek_rest();
        for (i, &c) in rest.iter().enumerate() {
            if c == 0 {
                let s = WireString(rest[..i].to_vec());
                r.take(i + 1)?;
                return Ok(s);
            }
            if c < 0x20 {
                break;
            }
        }
        Err(r.error(DecodeErrorKind::InvalidWireString))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.0);
        w.push(0);
        Ok(())
    }
}

fn rewind_error(r: &mut Reader<'_>, pos: usize, kind: DecodeErrorKind) -> DecodeError {
    r.rewind_to(pos);
    r.error(kind)
}

/// `wally_psbt`: a PSBT as lightningd sent it, parsed, with its exact bytes kept.
///
/// libwally, which lightningd uses, writes the maps of a PSBT in its own order (not sorted) and
/// rust-bitcoin re-serializes them sorted, so a parsed PSBT alone would not give back the bytes
/// that came in. A `WirePsbt` keeps those bytes and writes them again for as long as nobody
/// changed the PSBT: reading goes through `Deref`, and any mutable access (`DerefMut`,
/// [`WirePsbt::into_inner`]) drops them, so a changed PSBT is written as rust-bitcoin
/// serializes it (which libwally reads back).
#[derive(Clone, Debug)]
pub struct WirePsbt {
    psbt: Psbt,
    /// The bytes it was decoded from, while it is unchanged.
    raw: Option<Vec<u8>>,
}

impl WirePsbt {
    /// Parses a serialized PSBT (any valid map order), keeping its bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, String> {
        if b.is_empty() {
            return Err("empty".into());
        }
        let psbt = Psbt::deserialize(b).map_err(|e| e.to_string())?;
        // rust-bitcoin stops after the last map; libwally refuses bytes after it, and so do we.
        let maps = 1 + psbt.inputs.len() + psbt.outputs.len();
        if maps_end(b, maps) != Some(b.len()) {
            return Err("bytes after the last map".into());
        }
        Ok(WirePsbt {
            psbt,
            raw: Some(b.to_vec()),
        })
    }
    /// The PSBT, to change or keep.
    pub fn into_inner(self) -> Psbt {
        self.psbt
    }
    /// The bytes this PSBT is written as: the received ones while unchanged.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.raw {
            Some(b) => b.clone(),
            None => self.psbt.serialize(),
        }
    }
    /// Whether the bytes received are still what gets written.
    pub fn is_unchanged(&self) -> bool {
        self.raw.is_some()
    }
}

/// Where the `maps`-th key-value map of a serialized PSBT ends (after the 5-byte magic), if
/// the bytes hold that many.
fn maps_end(b: &[u8], maps: usize) -> Option<usize> {
    fn compact_size(b: &[u8], i: &mut usize) -> Option<usize> {
        let first = *b.get(*i)?;
        *i += 1;
        let n = match first {
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
            v => return Some(usize::from(v)),
        };
        let bytes = b.get(*i..*i + n)?;
        *i += n;
        let mut v: u64 = 0;
        for (k, byte) in bytes.iter().enumerate() {
            v |= u64::from(*byte) << (8 * k);
        }
        usize::try_from(v).ok()
    }
    let mut i = 5;
    for _ in 0..maps {
        loop {
            let klen = compact_size(b, &mut i)?;
            if klen == 0 {
                break;
            }
            i = i.checked_add(klen)?;
            let vlen = compact_size(b, &mut i)?;
            i = i.checked_add(vlen)?;
        }
    }
    (i <= b.len()).then_some(i)
}

impl From<Psbt> for WirePsbt {
    fn from(psbt: Psbt) -> Self {
        WirePsbt { psbt, raw: None }
    }
}

impl std::ops::Deref for WirePsbt {
    type Target = Psbt;
    fn deref(&self) -> &Psbt {
        &self.psbt
    }
}

impl std::ops::DerefMut for WirePsbt {
    fn deref_mut(&mut self) -> &mut Psbt {
        self.raw = None;
        &mut self.psbt
    }
}

/// Equal when they hold the same PSBT (whatever the map order of the bytes received).
impl PartialEq for WirePsbt {
    fn eq(&self, other: &Self) -> bool {
        self.psbt == other.psbt
    }
}

/// u32 length, then a serialized PSBT (length 0 is invalid).
impl Wire for WirePsbt {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u32::read(r)? as usize;
        let start = r.position();
        let b = r.take(len)?;
        WirePsbt::from_bytes(b).map_err(|e| rewind_error(r, start, DecodeErrorKind::InvalidPsbt(e)))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        let b = self.to_bytes();
        write_len::<u32>("psbt", b.len(), u32::MAX as usize, w)?;
        w.extend_from_slice(&b);
        Ok(())
    }
}

/// `bitcoin_tx`: u32 length, the serialized transaction (witness form if it has witnesses),
/// then its PSBT as a `wally_psbt` (which carries the amounts being spent).
#[derive(Clone, PartialEq, Debug)]
pub struct BitcoinTx {
    /// The transaction.
    pub tx: Transaction,
    /// Its PSBT.
    pub psbt: WirePsbt,
}

impl Wire for BitcoinTx {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u32::read(r)? as usize;
        let start = r.position();
        let b = r.take(len)?;
        let tx: Transaction = bitcoin::consensus::deserialize(b).map_err(|e| {
            rewind_error(r, start, DecodeErrorKind::InvalidTransaction(e.to_string()))
        })?;
        let psbt = WirePsbt::read(r)?;
        Ok(BitcoinTx { tx, psbt })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        let b = bitcoin::consensus::serialize(&self.tx);
        write_len::<u32>("tx", b.len(), u32::MAX as usize, w)?;
        w.extend_from_slice(&b);
        self.psbt.write(w)
    }
}

/// Which side of a channel: ours (`Local`) or the peer's (`Remote`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Side {
    /// Us.
    Local,
    /// The peer.
    Remote,
}

impl Wire for Side {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::read(r)? {
            0 => Ok(Side::Local),
            1 => Ok(Side::Remote),
            b => Err(r.error(DecodeErrorKind::InvalidSide(b))),
        }
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.push(match self {
            Side::Local => 0,
            Side::Remote => 1,
        });
        Ok(())
    }
}

/// `hsm_htlc`: an HTLC of a commitment transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HsmHtlc {
    /// Who offered it.
    pub side: Side,
    /// Its amount.
    pub amount: AmountMsat,
    /// Its payment hash.
    pub payment_hash: sha256::Hash,
    /// Its absolute CLTV expiry.
    pub cltv_expiry: u32,
}

impl Wire for HsmHtlc {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(HsmHtlc {
            side: Side::read(r)?,
            amount: AmountMsat::read(r)?,
            payment_hash: sha256::Hash::read(r)?,
            cltv_expiry: u32::read(r)?,
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.side.write(w)?;
        self.amount.write(w)?;
        self.payment_hash.write(w)?;
        self.cltv_expiry.write(w)
    }
}

/// `basepoints`: a channel's four basepoints.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Basepoints {
    /// Revocation basepoint.
    pub revocation: PublicKey,
    /// Payment basepoint.
    pub payment: PublicKey,
    /// HTLC basepoint.
    pub htlc: PublicKey,
    /// Delayed payment basepoint.
    pub delayed_payment: PublicKey,
}

impl Wire for Basepoints {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Basepoints {
            revocation: PublicKey::read(r)?,
            payment: PublicKey::read(r)?,
            htlc: PublicKey::read(r)?,
            delayed_payment: PublicKey::read(r)?,
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.revocation.write(w)?;
        self.payment.write(w)?;
        self.htlc.write(w)?;
        self.delayed_payment.write(w)
    }
}

/// `channel_type`: u16 length, then a big-endian feature bitfield.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ChannelType(Vec<u8>);

impl ChannelType {
    /// `option_static_remotekey` (bit 12).
    pub const STATIC_REMOTEKEY: usize = 12;
    /// `option_anchors_zero_fee_htlc_tx` (bit 22).
    pub const ANCHORS_ZERO_FEE_HTLC: usize = 22;
    /// `option_anchor_outputs` (bit 20, obsolete).
    pub const ANCHOR_OUTPUTS: usize = 20;
    /// `option_scid_alias` (bit 46).
    pub const SCID_ALIAS: usize = 46;
    /// `option_zeroconf` (bit 50).
    pub const ZEROCONF: usize = 50;

    /// The type with this bitfield.
    pub fn from_bytes(b: Vec<u8>) -> Self {
        ChannelType(b)
    }
    /// The type with exactly these feature bits set.
    pub fn from_bits(bits: &[usize]) -> Self {
        let max = bits.iter().copied().max().map_or(0, |m| m / 8 + 1);
        let mut b = vec![0u8; max];
        for &bit in bits {
            b[max - 1 - bit / 8] |= 1 << (bit % 8);
        }
        ChannelType(b)
    }
    /// The bitfield.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Whether feature `bit` is set.
    pub fn has(&self, bit: usize) -> bool {
        let byte = bit / 8;
        byte < self.0.len() && self.0[self.0.len() - 1 - byte] & (1 << (bit % 8)) != 0
    }
    /// The set bits, lowest first.
    pub fn bits(&self) -> Vec<usize> {
        (0..self.0.len() * 8).filter(|&b| self.has(b)).collect()
    }
}

impl Wire for ChannelType {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = u16::read(r)? as usize;
        Ok(ChannelType(r.read_bytes(n)?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_len::<u16>("channel_type", self.0.len(), u16::MAX as usize, w)?;
        w.extend_from_slice(&self.0);
        Ok(())
    }
}

/// `bip32_key_version`: the version bytes for serialized public and private extended keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Bip32KeyVersion {
    /// Version of public keys (0x0488B21E mainnet `xpub`, 0x043587CF testnet `tpub`).
    pub pubkey_version: u32,
    /// Version of private keys (0x0488ADE4 mainnet, 0x04358394 testnet).
    pub privkey_version: u32,
}

impl Bip32KeyVersion {
    /// Mainnet `xpub` / `xprv`.
    pub const MAINNET: Bip32KeyVersion = Bip32KeyVersion {
        pubkey_version: 0x0488_B21E,
        privkey_version: 0x0488_ADE4,
    };
    /// Testnet, signet and regtest `tpub` / `tprv`.
    pub const TESTNET: Bip32KeyVersion = Bip32KeyVersion {
        pubkey_version: 0x0435_87CF,
        privkey_version: 0x0435_8394,
    };
}

impl Wire for Bip32KeyVersion {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Bip32KeyVersion {
            pubkey_version: u32::read(r)?,
            privkey_version: u32::read(r)?,
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.pubkey_version.write(w)?;
        self.privkey_version.write(w)
    }
}

/// `secrets`: a channel's private keys as `hsmd_init`'s developer override carries them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DevChannelSecrets {
    /// Funding private key.
    pub funding_privkey: Secret,
    /// Revocation basepoint secret.
    pub revocation_basepoint_secret: Secret,
    /// Payment basepoint secret.
    pub payment_basepoint_secret: Secret,
    /// HTLC basepoint secret.
    pub htlc_basepoint_secret: Secret,
    /// Delayed payment basepoint secret.
    pub delayed_payment_basepoint_secret: Secret,
}

impl Wire for DevChannelSecrets {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(DevChannelSecrets {
            funding_privkey: Secret::read(r)?,
            revocation_basepoint_secret: Secret::read(r)?,
            payment_basepoint_secret: Secret::read(r)?,
            htlc_basepoint_secret: Secret::read(r)?,
            delayed_payment_basepoint_secret: Secret::read(r)?,
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.funding_privkey.write(w)?;
        self.revocation_basepoint_secret.write(w)?;
        self.payment_basepoint_secret.write(w)?;
        self.htlc_basepoint_secret.write(w)?;
        self.delayed_payment_basepoint_secret.write(w)
    }
}

/// What a wallet UTXO from a peer's unilateral close needs to re-derive its key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CloseInfo {
    /// The channel's database id.
    pub channel_dbid: u64,
    /// The peer.
    pub peer_id: NodeId,
    /// The commitment point, absent for `option_static_remotekey` channels.
    pub commitment_point: Option<PublicKey>,
    /// Whether the channel had anchors.
    pub option_anchors: bool,
    /// The output's CSV delay.
    pub csv: u32,
}

/// `hsm_utxo`: a wallet output being spent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HsmUtxo {
    /// The outpoint's txid.
    pub txid: Txid,
    /// The outpoint's index.
    pub vout: u32,
    /// Its amount.
    pub amount: bitcoin::Amount,
    /// Its BIP32 key index (for outputs without close info).
    pub keyindex: u32,
    /// A retired flag (`is_p2sh`), always false from current senders; kept to re-encode.
    pub legacy_is_p2sh: bool,
    /// Its scriptPubKey.
    pub script_pubkey: bitcoin::ScriptBuf,
    /// Present for outputs of a peer's unilateral close.
    pub close_info: Option<CloseInfo>,
    /// A retired flag (`is_in_coinbase`), always false from current senders; kept to re-encode.
    pub legacy_is_in_coinbase: bool,
}

impl Wire for HsmUtxo {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let txid = Txid::read(r)?;
        let vout = u32::read(r)?;
        let amount = bitcoin::Amount::read(r)?;
        let keyindex = u32::read(r)?;
        let legacy_is_p2sh = bool::read(r)?;
        let n = u16::read(r)? as usize;
        let script_pubkey = bitcoin::ScriptBuf::from_bytes(r.read_bytes(n)?);
        let close_info = if bool::read(r)? {
            Some(CloseInfo {
                channel_dbid: u64::read(r)?,
                peer_id: NodeId::read(r)?,
                commitment_point: Option::<PublicKey>::read(r)?,
                option_anchors: bool::read(r)?,
                csv: u32::read(r)?,
            })
        } else {
            None
        };
        let legacy_is_in_coinbase = bool::read(r)?;
        Ok(HsmUtxo {
            txid,
            vout,
            amount,
            keyindex,
            legacy_is_p2sh,
            script_pubkey,
            close_info,
            legacy_is_in_coinbase,
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.txid.write(w)?;
        self.vout.write(w)?;
        self.amount.write(w)?;
        self.keyindex.write(w)?;
        self.legacy_is_p2sh.write(w)?;
        write_len::<u16>(
            "script_pubkey",
            self.script_pubkey.len(),
            u16::MAX as usize,
            w,
        )?;
        w.extend_from_slice(self.script_pubkey.as_bytes());
        match &self.close_info {
            None => false.write(w)?,
            Some(ci) => {
                true.write(w)?;
                ci.channel_dbid.write(w)?;
                ci.peer_id.write(w)?;
                ci.commitment_point.write(w)?;
                ci.option_anchors.write(w)?;
                ci.csv.write(w)?;
            }
        }
        self.legacy_is_in_coinbase.write(w)
    }
}

/// A TLV record of a type this crate does not know (odd, so it may be ignored); kept so that
/// re-encoding gives back the same bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnknownTlv {
    /// The record type (odd).
    pub tlv_type: u64,
    /// The record value.
    pub value: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::psbt::raw::ProprietaryKey;
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness,
    };

    /// A PSBT with several entries in its global, input and output maps.
    fn psbt() -> Psbt {
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::from_byte_array([7; 32]), 1),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(90_000),
                script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array(
                    [3; 32],
                )),
            }],
        };
        let mut p = Psbt::from_unsigned_tx(tx).unwrap();
        let prop = |n: u8| ProprietaryKey {
            prefix: b"lightning".to_vec(),
            subtype: n,
            key: vec![n],
        };
        for n in [1, 2, 3] {
            p.proprietary.insert(prop(n), vec![n; 4]);
            p.inputs[0].proprietary.insert(prop(n), vec![n; 8]);
            p.outputs[0].proprietary.insert(prop(n), vec![n; 2]);
        }
        p.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([4; 32])),
        });
        p.inputs[0].witness_script = Some(ScriptBuf::from_bytes(vec![0x51]));
        p
    }

    fn compact_size(b: &[u8], i: &mut usize) -> usize {
        let first = b[*i];
        *i += 1;
        let n = match first {
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
            v => return v as usize,
        };
        let mut v = 0usize;
        for k in 0..n {
            v |= (b[*i + k] as usize) << (8 * k);
        }
        *i += n;
        v
    }

    /// The same PSBT with the key-value pairs of every map in reverse order: valid, and not
    /// in the sorted order rust-bitcoin writes (libwally writes its own order).
    fn reversed_maps(sorted: &[u8]) -> Vec<u8> {
        let mut out = sorted[..5].to_vec();
        let mut i = 5;
        while i < sorted.len() {
            let mut pairs = Vec::new();
            loop {
                let start = i;
                let klen = compact_size(sorted, &mut i);
                if klen == 0 {
                    break;
                }
                i += klen;
                let vlen = compact_size(sorted, &mut i);
                i += vlen;
                pairs.push(&sorted[start..i]);
            }
            for p in pairs.iter().rev() {
                out.extend_from_slice(p);
            }
            out.push(0);
        }
        out
    }

    #[test]
    fn psbt_in_any_map_order_round_trips_byte_exactly() {
        let p = psbt();
        let sorted = p.serialize();
        let unsorted = reversed_maps(&sorted);
        assert_ne!(
            sorted, unsorted,
            "the test needs maps rust-bitcoin would reorder"
        );
        let mut frame = Vec::new();
        (unsorted.len() as u32).write(&mut frame).unwrap();
        frame.extend_from_slice(&unsorted);
        let mut r = Reader::new(&frame);
        let w = WirePsbt::read(&mut r).unwrap();
        assert_eq!(*w, p, "the same PSBT, whatever the order");
        assert!(w.is_unchanged());
        let mut again = Vec::new();
        w.write(&mut again).unwrap();
        assert_eq!(again, frame, "written back as received");
    }

    #[test]
    fn a_changed_psbt_is_written_as_it_now_is() {
        let p = psbt();
        let unsorted = reversed_maps(&p.serialize());
        let mut w = WirePsbt::from_bytes(&unsorted).unwrap();
        w.inputs[0].proprietary.clear();
        assert!(!w.is_unchanged());
        let back = Psbt::deserialize(&w.to_bytes()).unwrap();
        assert!(back.inputs[0].proprietary.is_empty());
        assert_eq!(back.proprietary.len(), 3);
    }

    #[test]
    fn bad_psbts_are_typed_errors() {
        for bad in [&b""[..], b"psbt", b"psbt\xff", &psbt().serialize()[..40]] {
            let mut frame = Vec::new();
            (bad.len() as u32).write(&mut frame).unwrap();
            frame.extend_from_slice(bad);
            let mut r = Reader::new(&frame);
            let e = WirePsbt::read(&mut r).unwrap_err();
            assert!(e.to_string().contains("PSBT"), "{e}");
        }
    }
}
