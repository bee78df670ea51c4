//! The field codec: a bounds-checked reader over a message, and the [`Wire`] trait that every
//! field type implements (big-endian integers, keys, signatures, length-prefixed arrays).
//!
//! Reading never allocates more than the input holds: a length prefix is checked against the
//! bytes that are left before anything is reserved.

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::Txid;
use secp256k1::{ecdsa, schnorr, PublicKey};

/// A cursor over one message's bytes, remembering where it is for error reports.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    msg_type: Option<u16>,
    field: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, positioned at its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            msg_type: None,
            field: "type",
        }
    }

    /// Records the message type, so that errors name the message.
    pub fn set_msg_type(&mut self, t: u16) {
        self.msg_type = Some(t);
    }

    /// Records the field about to be read, so that errors name it.
    pub fn field(&mut self, name: &'static str) {
        self.field = name;
    }

    /// An error of `kind` at the current position.
    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.msg_type, self.field, self.pos, kind)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current offset from the start of the message.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes, or a `Short` error (nothing is consumed then).
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(DecodeErrorKind::Short {
                needed: n,
                available: self.remaining(),
            }));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Everything not yet read, without consuming it.
    pub fn peek_rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Moves back to `pos` (at most the current position), to report an error at the start
    /// of the field that caused it.
    pub(crate) fn rewind_to(&mut self, pos: usize) {
        self.pos = pos.min(self.pos);
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// `n` elements of `T`, where `n` came from a length prefix. Capacity is reserved only
    /// for as many elements as the remaining bytes could hold (one byte each at least).
    pub fn read_vec<T: Wire>(&mut self, n: usize) -> Result<Vec<T>, DecodeError> {
        let mut v = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            v.push(T::read(self)?);
        }
        Ok(v)
    }

    /// `n` raw bytes, where `n` came from a length prefix.
    pub fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.take(n)?.to_vec())
    }
}

/// Writes a length prefix of type `L` for `len` elements of `field`.
pub fn write_len<L: TryFrom<usize> + Wire>(
    field: &'static str,
    len: usize,
    max: usize,
    w: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let l = L::try_from(len).map_err(|_| EncodeError { field, len, max })?;
    l.write(w)
}

/// A type with an hsmd wire encoding.
pub trait Wire: Sized {
    /// Reads one value; on error the reader's position is unspecified.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// Appends the encoding of `self`.
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError>;
}

macro_rules! wire_int {
    ($t:ty) => {
        impl Wire for $t {
            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_be_bytes(r.array()?))
            }
            fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
                w.extend_from_slice(&self.to_be_bytes());
                Ok(())
            }
        }
    };
}
wire_int!(u8);
wire_int!(u16);
wire_int!(u32);
wire_int!(u64);

impl Wire for bool {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => {
                r.pos -= 1;
                Err(r.error(DecodeErrorKind::InvalidBool(b)))
            }
        }
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.push(u8::from(*self));
        Ok(())
    }
}

/// `?T`: a bool, then `T` when it is true.
impl<T: Wire> Wire for Option<T> {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if bool::read(r)? {
            Ok(Some(T::read(r)?))
        } else {
            Ok(None)
        }
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            None => false.write(w),
            Some(v) => {
                true.write(w)?;
                v.write(w)
            }
        }
    }
}

impl Wire for PublicKey {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.pos;
        let b: [u8; 33] = r.array()?;
        PublicKey::from_slice(&b).map_err(|_| {
            r.pos = start;
            r.error(DecodeErrorKind::InvalidPublicKey)
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.serialize());
        Ok(())
    }
}

impl Wire for sha256::Hash {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(sha256::Hash::from_byte_array(r.array()?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(self.as_byte_array());
        Ok(())
    }
}

/// A txid in internal byte order (as it appears in transactions), not the reversed hex order.
impl Wire for Txid {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Txid::from_byte_array(r.array()?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(self.as_byte_array());
        Ok(())
    }
}

impl Wire for bitcoin::blockdata::constants::ChainHash {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self::from(r.array::<32>()?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(self.as_bytes());
        Ok(())
    }
}

/// `secp256k1_ecdsa_signature`: 64-byte compact r || s.
impl Wire for ecdsa::Signature {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.pos;
        let b: [u8; 64] = r.array()?;
        ecdsa::Signature::from_compact(&b).map_err(|_| {
            r.pos = start;
            r.error(DecodeErrorKind::InvalidSignature)
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.serialize_compact());
        Ok(())
    }
}

/// `secp256k1_ecdsa_recoverable_signature`: 64-byte compact signature, then the recovery id.
impl Wire for ecdsa::RecoverableSignature {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.pos;
        let b: [u8; 64] = r.array()?;
        let id = u8::read(r)?;
        let recid = ecdsa::RecoveryId::from_i32(i32::from(id)).map_err(|_| {
            r.pos = start + 64;
            r.error(DecodeErrorKind::InvalidRecoveryId(id))
        })?;
        ecdsa::RecoverableSignature::from_compact(&b, recid).map_err(|_| {
            r.pos = start;
            r.error(DecodeErrorKind::InvalidSignature)
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (id, b) = self.serialize_compact();
        w.extend_from_slice(&b);
        // A RecoveryId is 0..=3 by construction.
        w.push(id.to_i32() as u8);
        Ok(())
    }
}

/// `bip340sig`: 64 bytes.
impl Wire for schnorr::Signature {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.pos;
        let b: [u8; 64] = r.array()?;
        schnorr::Signature::from_slice(&b).map_err(|_| {
            r.pos = start;
            r.error(DecodeErrorKind::InvalidSignature)
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(self.as_ref());
        Ok(())
    }
}

/// `amount_sat`: u64 satoshis.
impl Wire for bitcoin::Amount {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(bitcoin::Amount::from_sat(u64::read(r)?))
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.to_sat().write(w)
    }
}

/// `ext_key`: a 78-byte serialized BIP32 extended public key.
impl Wire for bitcoin::bip32::Xpub {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.pos;
        let b: [u8; 78] = r.array()?;
        bitcoin::bip32::Xpub::decode(&b).map_err(|e| {
            r.pos = start;
            r.error(DecodeErrorKind::InvalidExtendedKey(e.to_string()))
        })
    }
    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {
        w.extend_from_slice(&self.encode());
        Ok(())
    }
}

/// Reads a BOLT 1 `bigsize` (minimally encoded), for TLV streams.
pub fn read_bigsize(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let start = r.pos;
    let first = u8::read(r)?;
    let (v, min) = match first {
        0xfd => (u64::from(u16::read(r)?), 0xfd),
        0xfe => (u64::from(u32::read(r)?), 0x1_0000),
        0xff => (u64::read(r)?, 0x1_0000_0000),
        b => return Ok(u64::from(b)),
    };
    if v < min {
        r.pos = start;
        return Err(r.error(DecodeErrorKind::InvalidTlv(
            "bigsize not minimally encoded".into(),
        )));
    }
    Ok(v)
}

/// Appends a BOLT 1 `bigsize`.
pub fn write_bigsize(v: u64, w: &mut Vec<u8>) {
    if v < 0xfd {
        w.push(v as u8);
    } else if v <= 0xffff {
        w.push(0xfd);
        w.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        w.push(0xfe);
        w.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        w.push(0xff);
        w.extend_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigsize_round_trip_and_minimality() {
        for v in [
            0u64,
            0xfc,
            0xfd,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
        ] {
            let mut w = Vec::new();
            write_bigsize(v, &mut w);
            let mut r = Reader::new(&w);
            assert_eq!(read_bigsize(&mut r).unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        let mut r = Reader::new(&[0xfd, 0x00, 0xfc]);
        assert!(read_bigsize(&mut r).is_err());
    }

    #[test]
    fn bool_rejects_two() {
        let mut r = Reader::new(&[2]);
        let e = bool::read(&mut r).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidBool(2));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.read_vec::<u64>(usize::MAX / 16).is_err());
        assert!(r.read_bytes(usize::MAX).is_err());
    }
}
