//! Every message of the hsmd protocol (and the status messages of fd 0) as a typed struct,
//! generated at build time from `spec/hsmd_wire.csv` and `spec/status_wire.csv`, and our own
//! extensions from `spec/vls_wire.csv` (`vls_check_request`: would the signer sign this?).
//!
//! Each struct has its fields named as in the csv, `TYPE` and `NAME`, `new`, `decode` /
//! `encode` for a whole message and `decode_body` / `encode_body` for what follows the type.
//! Length fields of the csv are not stored: they are the length of the array they count.
//! Messages that do not end in a TLV stream keep the bytes after their last field in
//! `trailing`, because Core Lightning ignores them (newer senders may append fields) and a
//! re-encoded message must come out unchanged.

use crate::codec::{read_bigsize, write_bigsize, write_len, Reader, Wire};
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::json::ToJson;
use crate::types::*;
use bitcoin::bip32::Xpub;
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::hashes::sha256;

use bitcoin::{Amount, Txid};
use secp256k1::{ecdsa, schnorr, PublicKey};
use serde_json::Value;

/// `status_fail`'s `failreason` for a fault of lightningd's (`STATUS_FAIL_MASTER_IO`).
pub const FAIL_MASTER_IO: u8 = 0;
/// `status_fail`'s `failreason` for an internal error (`STATUS_FAIL_INTERNAL_ERROR`).
pub const FAIL_INTERNAL_ERROR: u8 = 3;

/// A message whose type this crate does not know.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnknownMessage {
    /// Its type number.
    pub msg_type: u16,
    /// Everything after the type.
    pub body: Vec<u8>,
}

fn tlv_error(r: &mut Reader<'_>, start: usize, what: &str) -> DecodeError {
    r.rewind_to(start);
    r.error(DecodeErrorKind::InvalidTlv(what.to_string()))
}

include!(concat!(env!("OUT_DIR"), "/msgs_gen.rs"));

impl Message {
    /// Like [`Message::decode`], but a type this crate does not know is an error
    /// ([`DecodeErrorKind::UnknownType`]) instead of [`Message::Unknown`].
    pub fn decode_known(msg: &[u8]) -> Result<Message, DecodeError> {
        match Message::decode(msg)? {
            Message::Unknown(u) => {
                let mut r = Reader::new(msg);
                r.set_msg_type(u.msg_type);
                Err(r.error(DecodeErrorKind::UnknownType))
            }
            m => Ok(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Random valid values of every message type: encode, decode, equal.
        #[test]
        fn every_message_round_trips(m in arb_message()) {
            let bytes = m.encode().unwrap();
            let back = Message::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        /// No input makes the decoder panic, and whatever decodes re-encodes unchanged.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = Message::decode(&b) {
                prop_assert_eq!(m.encode().unwrap(), b);
            }
        }
    }

    #[test]
    fn every_type_has_a_name_and_decodes_its_own_type() {
        for &t in ALL_TYPES {
            assert!(name_of(t).is_some());
        }
        assert_eq!(name_of(EcdhReq::TYPE), Some("hsmd_ecdh_req"));
        let e = EcdhReq::decode(&[0, 2, 1]).unwrap_err();
        assert!(matches!(
            e.kind(),
            DecodeErrorKind::UnexpectedType { expected: 1 }
        ));
    }

    #[test]
    fn unknown_type_is_a_value() {
        let m = Message::decode(&[0x12, 0x34, 1, 2]).unwrap();
        assert_eq!(
            m,
            Message::Unknown(UnknownMessage {
                msg_type: 0x1234,
                body: vec![1, 2]
            })
        );
        assert_eq!(m.encode().unwrap(), vec![0x12, 0x34, 1, 2]);
    }

    #[test]
    fn check_request_carries_a_whole_request_and_round_trips() {
        let inner = EcdhReq::new(
            secp256k1::SecretKey::from_slice(&[1; 32])
                .unwrap()
                .public_key(secp256k1::SECP256K1),
        );
        let inner = Message::from(inner).encode().unwrap();
        let m = VlsCheckRequest::new(inner.clone());
        let bytes = Message::from(m.clone()).encode().unwrap();
        assert_eq!(&bytes[..2], &60100u16.to_be_bytes());
        assert_eq!(&bytes[2..6], &(inner.len() as u32).to_be_bytes());
        assert_eq!(&bytes[6..], &inner[..]);
        assert_eq!(
            Message::decode(&bytes).unwrap(),
            Message::VlsCheckRequest(m)
        );
        assert_eq!(name_of(60100), Some("vls_check_request"));

        let reply = VlsCheckRequestReply::new(
            false,
            WireString::from("onchain-destination-allowlisted"),
            WireString::from("output 0 pays\na stranger"),
        );
        let bytes = reply.encode().unwrap();
        assert_eq!(&bytes[..3], &[0xeb, 0x28, 0]);
        let back = VlsCheckRequestReply::decode(&bytes).unwrap();
        assert_eq!(back, reply);
        assert_eq!(back.detail.as_str(), Some("output 0 pays a stranger"));
        let ok = VlsCheckRequestReply::new(true, WireString::from(""), WireString::from(""));
        assert_eq!(ok.encode().unwrap(), vec![0xeb, 0x28, 1, 0, 0]);
    }

    #[test]
    fn check_request_shorter_than_its_length_is_refused() {
        let e = Message::decode(&[0xea, 0xc4, 0, 0, 0, 9, 0, 1]).unwrap_err();
        assert_eq!(e.msg_type(), Some(60100));
        assert!(Message::decode(&[0xea, 0xc4, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn oversized_array_is_an_encode_error() {
        let m = SignMessage::new(vec![0; 70_000]);
        assert_eq!(m.encode().unwrap_err().field, "msg");
    }
}
