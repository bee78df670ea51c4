//! Errors of the wire codec: what went wrong, in which message, at which field and offset.

use std::fmt;

/// A message that could not be decoded.
///
/// Carries the message type (when at least two bytes were there), the field being read
/// and the byte offset in the message where decoding stopped. The cause is available as
/// [`DecodeError::kind`]; its variants may grow, so match with a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    msg_type: Option<u16>,
    field: &'static str,
    offset: usize,
    kind: DecodeErrorKind,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended before the field was complete.
    Short {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The message type is not one this crate knows (only from decoders that require a
    /// known type; [`crate::Message::decode`] returns unknown types as a value).
    UnknownType,
    /// A message of another type than the one asked for.
    UnexpectedType {
        /// The type that was expected.
        expected: u16,
    },
    /// A `bool` byte other than 0 or 1.
    InvalidBool(u8),
    /// A `side` byte other than 0 (local) or 1 (remote).
    InvalidSide(u8),
    /// 33 bytes that are not a valid compressed secp256k1 point.
    InvalidPublicKey,
    /// 64 bytes that are not a valid compact ECDSA or BIP340 signature.
    InvalidSignature,
    /// A recoverable signature whose recovery id is not 0..=3.
    InvalidRecoveryId(u8),
    /// A bitcoin signature whose sighash byte is neither ALL (0x01) nor
    /// SINGLE|ANYONECANPAY (0x83).
    InvalidSighash(u8),
    /// A transaction that does not parse, or whose length prefix does not match it.
    InvalidTransaction(String),
    /// A PSBT that does not parse, or has length zero.
    InvalidPsbt(String),
    /// A serialized BIP32 extended public key that does not parse.
    InvalidExtendedKey(String),
    /// A `wirestring` with a byte below 0x20 before its terminating NUL, or no NUL.
    InvalidWireString,
    /// A TLV stream that is malformed (bad bigsize, types not ascending, length overrun,
    /// or an unknown even type).
    InvalidTlv(String),
}

impl DecodeError {
    pub(crate) fn new(
        msg_type: Option<u16>,
        field: &'static str,
        offset: usize,
        kind: DecodeErrorKind,
    ) -> Self {
        DecodeError {
            msg_type,
            field,
            offset,
            kind,
        }
    }

    /// The message type, if the input had at least the two type bytes.
    pub fn msg_type(&self) -> Option<u16> {
        self.msg_type
    }

    /// The field that was being decoded (`"type"` for the type itself).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Offset in the message (type bytes included) where decoding stopped.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The cause.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// True when the input was too short: more bytes would have been needed.
    pub fn is_short(&self) -> bool {
        matches!(self.kind, DecodeErrorKind::Short { .. })
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Short { needed, available } => {
                write!(
                    f,
                    "input too short: needed {needed} bytes, {available} left"
                )
            }
            DecodeErrorKind::UnknownType => write!(f, "unknown message type"),
            DecodeErrorKind::UnexpectedType { expected } => {
                write!(f, "unexpected message type (expected {expected})")
            }
            DecodeErrorKind::InvalidBool(b) => write!(f, "bool byte {b:#04x} is neither 0 nor 1"),
            DecodeErrorKind::InvalidSide(b) => write!(f, "side byte {b:#04x} is neither 0 nor 1"),
            DecodeErrorKind::InvalidPublicKey => write!(f, "not a valid public key"),
            DecodeErrorKind::InvalidSignature => write!(f, "not a valid signature"),
            DecodeErrorKind::InvalidRecoveryId(b) => write!(f, "recovery id {b} out of range"),
            DecodeErrorKind::InvalidSighash(b) => write!(f, "sighash type {b:#04x} not allowed"),
            DecodeErrorKind::InvalidTransaction(e) => write!(f, "invalid transaction: {e}"),
            DecodeErrorKind::InvalidPsbt(e) => write!(f, "invalid PSBT: {e}"),
            DecodeErrorKind::InvalidExtendedKey(e) => write!(f, "invalid extended key: {e}"),
            DecodeErrorKind::InvalidWireString => {
                write!(f, "string has a control character or no terminating NUL")
            }
            DecodeErrorKind::InvalidTlv(e) => write!(f, "invalid TLV stream: {e}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.msg_type.and_then(crate::msgs::name_of) {
            Some(name) => write!(f, "{name}")?,
            None => match self.msg_type {
                Some(t) => write!(f, "message type {t}")?,
                None => write!(f, "message")?,
            },
        }
        write!(
            f,
            ": field `{}` at offset {}: {}",
            self.field, self.offset, self.kind
        )
    }
}

impl std::error::Error for DecodeError {}

/// A message that cannot be encoded because a field does not fit its length prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    /// The field that is too long.
    pub field: &'static str,
    /// Its length.
    pub len: usize,
    /// The largest length its prefix can express.
    pub max: usize,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field `{}` has {} elements, its length prefix allows at most {}",
            self.field, self.len, self.max
        )
    }
}

impl std::error::Error for EncodeError {}
