//! BOLT 7 gossip messages as the signer receives them for signing: `channel_announcement`,
//! `node_announcement` and `channel_update`, checked exactly as far as Core Lightning's hsmd
//! checks them, and the digest each signature covers.
//!
//! Each message arrives whole (2-byte type first) with its signature slots still to fill.
//! Guarantees: nothing here panics or indexes out of range on any input; a message that
//! passes is exactly one hsmd would sign, and [`ChannelUpdate::encode`] gives back the bytes
//! hsmd replies with.

use secp256k1::{ecdsa, Message};

use crate::sign::digest::{
    gossip_digest, CHANNEL_ANNOUNCEMENT_SIGNED_FROM, CHANNEL_UPDATE_SIGNED_FROM,
    NODE_ANNOUNCEMENT_SIGNED_FROM,
};

/// BOLT 7 message type of `channel_announcement`.
pub const CHANNEL_ANNOUNCEMENT: u16 = 256;
/// BOLT 7 message type of `node_announcement`.
pub const NODE_ANNOUNCEMENT: u16 = 257;
/// BOLT 7 message type of `channel_update`.
pub const CHANNEL_UPDATE: u16 = 258;

/// Length of a `channel_update` with its type and every field up to `htlc_maximum_msat`.
pub const CHANNEL_UPDATE_LEN: usize = 2 + 64 + 32 + 8 + 4 + 1 + 1 + 2 + 8 + 4 + 4 + 8;

/// Why a gossip message will not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// Shorter than its signature slots (or, for a `channel_update`, its fixed fields).
    #[error("{what} too short: {len} bytes, at least {min} needed")]
    TooShort {
        /// Which message.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The least length that can be signed.
        min: usize,
    },
    /// The inner message has another type than the request is for.
    #[error("{what} has message type {found}, expected {expected}")]
    WrongType {
        /// Which message.
        what: &'static str,
        /// The type it carries.
        found: u16,
        /// The type it must carry.
        expected: u16,
    },
    /// A `channel_update` whose signature slot is not a valid compact signature (r or s not
    /// below the curve order): Core Lightning's parser refuses it.
    #[error("channel_update carries an invalid signature encoding")]
    InvalidSignature,
}

/// The digest both signatures of a `channel_announcement` sign: SHA256d of everything after
/// the type and the four signatures. hsmd checks the length first, then the type.
///
/// # Errors
/// [`GossipError::TooShort`] below 258 bytes, [`GossipError::WrongType`] when not type 256.
pub fn channel_announcement_digest(ca: &[u8]) -> Result<Message, GossipError> {
    signed_digest(
        ca,
        "channel_announcement",
        CHANNEL_ANNOUNCEMENT,
        CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
    )
}

/// The digest the node signature of a `node_announcement` signs: SHA256d of everything after
/// the type and the signature. hsmd checks the length first, then the type.
///
/// # Errors
/// [`GossipError::TooShort`] below 66 bytes, [`GossipError::WrongType`] when not type 257.
pub fn node_announcement_digest(ann: &[u8]) -> Result<Message, GossipError> {
    signed_digest(
        ann,
        "node_announcement",
        NODE_ANNOUNCEMENT,
        NODE_ANNOUNCEMENT_SIGNED_FROM,
    )
}

fn signed_digest(
    msg: &[u8],
    what: &'static str,
    expected: u16,
    signed_from: usize,
) -> Result<Message, GossipError> {
    let too_short = GossipError::TooShort {
        what,
        len: msg.len(),
        min: signed_from,
    };
    let digest = gossip_digest(msg, signed_from).ok_or(too_short)?;
    let found = protocol::peek_type(msg).unwrap_or_default();
    if found != expected {
        return Err(GossipError::WrongType {
            what,
            found,
            expected,
        });
    }
    Ok(digest)
}

/// The fields of a `channel_update` (BOLT 7), as hsmd parses them before signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelUpdate {
    /// The chain's genesis hash, in wire byte order.
    pub chain_hash: [u8; 32],
    /// The channel (block height, transaction index, output index packed into 64 bits).
    pub short_channel_id: u64,
    /// When this update was made (seconds).
    pub timestamp: u32,
    /// `message_flags`.
    pub message_flags: u8,
    /// `channel_flags` (direction, disabled).
    pub channel_flags: u8,
    /// `cltv_expiry_delta`.
    pub cltv_expiry_delta: u16,
    /// `htlc_minimum_msat`.
    pub htlc_minimum_msat: u64,
    /// `fee_base_msat`.
    pub fee_base_msat: u32,
    /// `fee_proportional_millionths`.
    pub fee_proportional_millionths: u32,
    /// `htlc_maximum_msat`.
    pub htlc_maximum_msat: u64,
}

impl ChannelUpdate {
    /// Parses `cu` (type 258 first) as hsmd does, and returns the update with the digest its
    /// signature covers: SHA256d of everything after the signature, **including** any bytes
    /// after `htlc_maximum_msat` (which hsmd accepts, signs over, and drops from its reply).
    ///
    /// # Errors
    /// [`GossipError::TooShort`] when a field is missing, [`GossipError::WrongType`] when not
    /// type 258, [`GossipError::InvalidSignature`] when the signature slot does not parse.
    pub fn parse(cu: &[u8]) -> Result<(ChannelUpdate, Message), GossipError> {
        const WHAT: &str = "channel_update";
        let too_short = || GossipError::TooShort {
            what: WHAT,
            len: cu.len(),
            min: CHANNEL_UPDATE_LEN,
        };
        let mut r = Cursor(cu);
        let found = r.u16().ok_or_else(too_short)?;
        if found != CHANNEL_UPDATE {
            return Err(GossipError::WrongType {
                what: WHAT,
                found,
                expected: CHANNEL_UPDATE,
            });
        }
        let signature = r.array::<64>().ok_or_else(too_short)?;
        let mut fields = || -> Option<ChannelUpdate> {
            Some(ChannelUpdate {
                chain_hash: r.array()?,
                short_channel_id: r.u64()?,
                timestamp: r.u32()?,
                message_flags: r.u8()?,
                channel_flags: r.u8()?,
                cltv_expiry_delta: r.u16()?,
                htlc_minimum_msat: r.u64()?,
                fee_base_msat: r.u32()?,
                fee_proportional_millionths: r.u32()?,
                htlc_maximum_msat: r.u64()?,
            })
        };
        let update = fields().ok_or_else(too_short)?;
        // Core Lightning decodes the signature slot and refuses r or s >= n (zero passes).
        ecdsa::Signature::from_compact(&signature).map_err(|_| GossipError::InvalidSignature)?;
        let digest = gossip_digest(cu, CHANNEL_UPDATE_SIGNED_FROM).ok_or_else(too_short)?;
        Ok((update, digest))
    }

    /// The update as a `channel_update` message (type first) carrying `signature`: exactly
    /// [`CHANNEL_UPDATE_LEN`] bytes, nothing after `htlc_maximum_msat`.
    pub fn encode(&self, signature: &ecdsa::Signature) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHANNEL_UPDATE_LEN);
        out.extend_from_slice(&CHANNEL_UPDATE.to_be_bytes());
        out.extend_from_slice(&signature.serialize_compact());
        out.extend_from_slice(&self.chain_hash);
        out.extend_from_slice(&self.short_channel_id.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.push(self.message_flags);
        out.push(self.channel_flags);
        out.extend_from_slice(&self.cltv_expiry_delta.to_be_bytes());
        out.extend_from_slice(&self.htlc_minimum_msat.to_be_bytes());
        out.extend_from_slice(&self.fee_base_msat.to_be_bytes());
        out.extend_from_slice(&self.fee_proportional_millionths.to_be_bytes());
        out.extend_from_slice(&self.htlc_maximum_msat.to_be_bytes());
        out
    }
}

/// Big-endian reads that return `None` past the end.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let head = self.0.get(..N)?.try_into().ok()?;
        self.0 = &self.0[N..];
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::{SecretKey, SECP256K1};

    fn update_bytes(extra: &[u8]) -> Vec<u8> {
        let mut cu = CHANNEL_UPDATE.to_be_bytes().to_vec();
        cu.extend_from_slice(&[0u8; 64]);
        cu.extend((0..(CHANNEL_UPDATE_LEN - 66) as u8).map(|i| i.wrapping_mul(7)));
        cu.extend_from_slice(extra);
        cu
    }

    #[test]
    fn channel_update_round_trips_and_drops_trailing_bytes() {
        let cu = update_bytes(&[]);
        let (update, digest) = ChannelUpdate::parse(&cu).unwrap();
        let sig = SECP256K1.sign_ecdsa(&digest, &SecretKey::from_slice(&[1; 32]).unwrap());
        let out = update.encode(&sig);
        assert_eq!(out.len(), CHANNEL_UPDATE_LEN);
        assert_eq!(out[2..66], sig.serialize_compact());
        assert_eq!(out[66..], cu[66..]);

        let long = update_bytes(&[1, 2, 3]);
        let (same, long_digest) = ChannelUpdate::parse(&long).unwrap();
        assert_eq!(same, update);
        assert_ne!(long_digest, digest, "trailing bytes are signed over");
        assert_eq!(same.encode(&sig), out, "and dropped from the reply");
    }

    #[test]
    fn malformed_channel_updates_are_refused() {
        let cu = update_bytes(&[]);
        for len in 0..CHANNEL_UPDATE_LEN {
            let err = ChannelUpdate::parse(&cu[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    GossipError::TooShort { .. } | GossipError::WrongType { .. }
                ),
                "{len}: {err}"
            );
        }
        let mut wrong = cu.clone();
        wrong[1] = 0x01; // 257
        assert_eq!(
            ChannelUpdate::parse(&wrong),
            Err(GossipError::WrongType {
                what: "channel_update",
                found: 257,
                expected: 258
            })
        );
        let mut bad_sig = cu.clone();
        bad_sig[2..34].fill(0xff); // r >= n
        assert_eq!(
            ChannelUpdate::parse(&bad_sig),
            Err(GossipError::InvalidSignature)
        );
        let mut bad_s = cu;
        bad_s[34..66].fill(0xff); // s >= n
        assert_eq!(
            ChannelUpdate::parse(&bad_s),
            Err(GossipError::InvalidSignature)
        );
    }

    #[test]
    fn announcements_need_their_signature_slots_and_type() {
        let mut ca = vec![0u8; CHANNEL_ANNOUNCEMENT_SIGNED_FROM];
        ca[..2].copy_from_slice(&CHANNEL_ANNOUNCEMENT.to_be_bytes());
        // Exactly the signature slots: an empty signed part is still signed.
        assert!(channel_announcement_digest(&ca).is_ok());
        assert!(matches!(
            channel_announcement_digest(&ca[..257]),
            Err(GossipError::TooShort {
                len: 257,
                min: 258,
                ..
            })
        ));
        assert!(matches!(
            channel_announcement_digest(&[]),
            Err(GossipError::TooShort { len: 0, .. })
        ));
        ca[1] = 2; // 258
        assert!(matches!(
            channel_announcement_digest(&ca),
            Err(GossipError::WrongType { found: 258, .. })
        ));

        let mut ann = vec![0u8; NODE_ANNOUNCEMENT_SIGNED_FROM + 10];
        ann[..2].copy_from_slice(&NODE_ANNOUNCEMENT.to_be_bytes());
        assert!(node_announcement_digest(&ann).is_ok());
        assert!(matches!(
            node_announcement_digest(&ann[..65]),
            Err(GossipError::TooShort {
                len: 65,
                min: 66,
                ..
            })
        ));
        ann[1] = 0; // 256
        assert!(matches!(
            node_announcement_digest(&ann),
            Err(GossipError::WrongType { found: 256, .. })
        ));
    }

    #[test]
    fn no_input_panics() {
        let mut state = 0x1234_5678u32;
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    if i < 2 {
                        1
                    } else {
                        (state >> 16) as u8
                    }
                })
                .collect();
            let _ = ChannelUpdate::parse(&bytes);
            let _ = channel_announcement_digest(&bytes);
            let _ = node_announcement_digest(&bytes);
        }
    }
}
