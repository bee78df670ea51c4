//! The BOLT 2 channel-establishment messages (v1) and BOLT 1 `warning`/`error`, as LDK's
//! types, serialized with LDK's `Writeable` / `LengthReadable`.
//!
//! [`decode`] never panics on a peer's bytes: a payload that does not parse is a
//! [`MsgError`]. `warning` and `error` are decoded here (their text is shown lossily), so a
//! peer's non-UTF-8 text still reaches the user.

use lightning::ln::msgs::{
    AcceptChannel, ChannelReady, FundingCreated, FundingSigned, OpenChannel,
};
use lightning::ln::types::ChannelId;
use lightning::util::ser::{LengthReadable, Writeable};

/// `warning` (BOLT 1).
pub const WARNING: u16 = 1;
/// `error` (BOLT 1).
pub const ERROR: u16 = 17;
/// `ping` (BOLT 1).
pub const PING: u16 = 18;
/// `pong` (BOLT 1).
pub const PONG: u16 = 19;
/// `open_channel`.
pub const OPEN_CHANNEL: u16 = 32;
/// `accept_channel`.
pub const ACCEPT_CHANNEL: u16 = 33;
/// `funding_created`.
pub const FUNDING_CREATED: u16 = 34;
/// `funding_signed`.
pub const FUNDING_SIGNED: u16 = 35;
/// `channel_ready`.
pub const CHANNEL_READY: u16 = 36;

/// Whether the channel code reads messages of this type (for a transport that must be told
/// which types not to treat as unknown).
pub fn is_channel_message(msg_type: u16) -> bool {
    matches!(msg_type, OPEN_CHANNEL..=CHANNEL_READY)
}

/// The name of a message type, for errors and logs.
pub fn name(msg_type: u16) -> &'static str {
    match msg_type {
        WARNING => "warning",
        ERROR => "error",
        PING => "ping",
        PONG => "pong",
        OPEN_CHANNEL => "open_channel",
        ACCEPT_CHANNEL => "accept_channel",
        FUNDING_CREATED => "funding_created",
        FUNDING_SIGNED => "funding_signed",
        CHANNEL_READY => "channel_ready",
        _ => "unknown",
    }
}

/// A message that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {name} message: {reason}")]
pub struct MsgError {
    /// The message's name.
    pub name: &'static str,
    /// Why.
    pub reason: String,
}

/// A `warning` or `error`: the channel it is about and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The channel (all zeros: every channel with the peer).
    pub channel_id: [u8; 32],
    /// The text, lossily decoded.
    pub text: String,
}

impl Notice {
    /// Whether it is about `id` or about every channel.
    pub fn concerns(&self, ids: &[[u8; 32]]) -> bool {
        self.channel_id == [0; 32] || ids.contains(&self.channel_id)
    }

    /// The payload of a `warning` or `error` about `channel_id` with this text (cut at
    /// 65535 bytes).
    pub fn encode(channel_id: &[u8; 32], text: &str) -> Vec<u8> {
        let data = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(34 + data.len());
        out.extend_from_slice(channel_id);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn decode(msg_type: u16, payload: &[u8]) -> Result<Notice, MsgError> {
        let bad = |reason: &str| MsgError {
            name: name(msg_type),
            reason: reason.into(),
        };
        let channel_id: [u8; 32] = payload
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("shorter than a channel id"))?;
        let len = payload
            .get(32..34)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| bad("no length"))?;
        let data = payload
            .get(34..34 + len)
            .ok_or_else(|| bad("shorter than its length"))?;
        Ok(Notice {
            channel_id,
            text: String::from_utf8_lossy(data).into_owned(),
        })
    }
}

/// A message received from the peer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// `open_channel`.
    OpenChannel(OpenChannel),
    /// `accept_channel`.
    AcceptChannel(AcceptChannel),
    /// `funding_created`.
    FundingCreated(FundingCreated),
    /// `funding_signed`.
    FundingSigned(FundingSigned),
    /// `channel_ready`.
    ChannelReady(ChannelReady),
    /// `warning`.
    Warning(Notice),
    /// `error`.
    Error(Notice),
    /// A type the channel code does not read (left undecoded).
    Other(u16),
}

fn read<M: LengthReadable>(msg_type: u16, payload: &[u8]) -> Result<M, MsgError> {
    let mut r = payload;
    M::read_from_fixed_length_buffer(&mut r).map_err(|e| MsgError {
        name: name(msg_type),
        reason: e.to_string(),
    })
}

/// Decodes a message of type `msg_type`.
///
/// # Errors
/// [`MsgError`] if the payload does not parse as that type.
pub fn decode(msg_type: u16, payload: &[u8]) -> Result<Received, MsgError> {
    Ok(match msg_type {
        OPEN_CHANNEL => Received::OpenChannel(read(msg_type, payload)?),
        ACCEPT_CHANNEL => Received::AcceptChannel(read(msg_type, payload)?),
        FUNDING_CREATED => Received::FundingCreated(read(msg_type, payload)?),
        FUNDING_SIGNED => Received::FundingSigned(read(msg_type, payload)?),
        CHANNEL_READY => Received::ChannelReady(read(msg_type, payload)?),
        WARNING => Received::Warning(Notice::decode(msg_type, payload)?),
        ERROR => Received::Error(Notice::decode(msg_type, payload)?),
        other => Received::Other(other),
    })
}

/// The payload of a message (LDK's serialization, without the type).
pub fn encode<M: Writeable>(msg: &M) -> Vec<u8> {
    msg.encode()
}

/// A channel id's 32 bytes.
pub fn id_bytes(id: &ChannelId) -> [u8; 32] {
    id.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning::ln::msgs::CommonAcceptChannelFields;
    use secp256k1::{PublicKey, SecretKey, SECP256K1};

    fn point(b: u8) -> PublicKey {
        SecretKey::from_slice(&[b; 32])
            .unwrap()
            .public_key(SECP256K1)
    }

    #[test]
    fn messages_round_trip_and_truncations_are_errors() {
        let ready = ChannelReady {
            channel_id: ChannelId([7; 32]),
            next_per_commitment_point: point(1),
            short_channel_id_alias: None,
        };
        let bytes = encode(&ready);
        assert_eq!(
            decode(CHANNEL_READY, &bytes).unwrap(),
            Received::ChannelReady(ready)
        );
        for cut in 0..bytes.len() {
            assert!(decode(CHANNEL_READY, &bytes[..cut]).is_err(), "cut {cut}");
        }
        let signed = FundingSigned {
            channel_id: ChannelId([1; 32]),
            signature: SECP256K1.sign_ecdsa(
                &secp256k1::Message::from_digest([3; 32]),
                &SecretKey::from_slice(&[2; 32]).unwrap(),
            ),
        };
        let bytes = encode(&signed);
        assert_eq!(
            decode(FUNDING_SIGNED, &bytes).unwrap(),
            Received::FundingSigned(signed)
        );
        assert!(decode(FUNDING_CREATED, &bytes).is_err());
        let accept = AcceptChannel {
            common_fields: CommonAcceptChannelFields {
                temporary_channel_id: ChannelId([9; 32]),
                dust_limit_satoshis: 546,
                max_htlc_value_in_flight_msat: 1,
                htlc_minimum_msat: 1,
                minimum_depth: 0,
                to_self_delay: 144,
                max_accepted_htlcs: 30,
                funding_pubkey: point(1),
                revocation_basepoint: point(2),
                payment_basepoint: point(3),
                delayed_payment_basepoint: point(4),
                htlc_basepoint: point(5),
                first_per_commitment_point: point(6),
                shutdown_scriptpubkey: None,
                channel_type: Some(crate::bolt3::ChannelKind::Anchors.features()),
            },
            channel_reserve_satoshis: 1000,
        };
        let bytes = encode(&accept);
        assert_eq!(
            decode(ACCEPT_CHANNEL, &bytes).unwrap(),
            Received::AcceptChannel(accept)
        );
    }

    #[test]
    fn notices_decode_lossily_and_check_their_length() {
        let p = Notice::encode(&[0; 32], "no thanks");
        assert_eq!(
            decode(ERROR, &p).unwrap(),
            Received::Error(Notice {
                channel_id: [0; 32],
                text: "no thanks".into()
            })
        );
        let mut bad = Notice::encode(&[1; 32], "x");
        bad.push(0xff);
        bad[33] = 2;
        match decode(WARNING, &bad).unwrap() {
            Received::Warning(n) => {
                assert_eq!(n.text, "x\u{fffd}");
                assert!(n.concerns(&[[1; 32]]) && !n.concerns(&[[2; 32]]));
            }
            other => panic!("{other:?}"),
        }
        assert!(decode(ERROR, &p[..33]).is_err());
        assert!(decode(ERROR, &p[..40]).is_err());
        assert_eq!(decode(99, b"").unwrap(), Received::Other(99));
    }
}
