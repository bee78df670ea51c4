//! The digests Core Lightning's hsmd signs for its non-transaction requests, byte for byte.
//!
//! Each function takes the request's fields as hsmd receives them and returns the 32-byte
//! message that goes to libsecp256k1. They validate nothing that hsmd does not validate (see
//! [`invoice_digest`]); checks belong to the handlers and the policy.

use secp256k1::{Message, PublicKey};
use sha2::{Digest, Sha256};

/// Signed part of a `channel_announcement` (with its 2-byte type): everything after the type
/// and the four 64-byte signatures.
pub const CHANNEL_ANNOUNCEMENT_SIGNED_FROM: usize = 2 + 4 * 64;
/// Signed part of a `node_announcement` (with its 2-byte type): after the type and signature.
pub const NODE_ANNOUNCEMENT_SIGNED_FROM: usize = 2 + 64;
/// Signed part of a `channel_update` (with its 2-byte type): after the type and signature.
pub const CHANNEL_UPDATE_SIGNED_FROM: usize = 2 + 64;

/// `sign_message`: SHA256d("Lightning Signed Message:" ‖ message), lnd's and CLN's scheme.
pub fn sign_message_digest(message: &[u8]) -> Message {
    sha256d(&[b"Lightning Signed Message:", message])
}

/// `bip137_sign_message`: SHA256d("\x18Bitcoin Signed Message:\n" ‖ CompactSize(len) ‖
/// message).
pub fn bip137_digest(message: &[u8]) -> Message {
    let len = message.len();
    let mut size = Vec::with_capacity(9);
    match len {
        0..=0xfc => size.push(len as u8),
        0xfd..=0xffff => {
            size.push(0xfd);
            size.extend_from_slice(&(len as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            size.push(0xfe);
            size.extend_from_slice(&(len as u32).to_le_bytes());
        }
        _ => {
            size.push(0xff);
            size.extend_from_slice(&(len as u64).to_le_bytes());
        }
    }
    sha256d(&[b"\x18Bitcoin Signed Message:\n", &size, message])
}

/// `sign_invoice` (BOLT 11): SHA256(hrp ‖ the 5-bit values packed into bytes, zero-padded).
///
/// Reproduces hsmd exactly, including on input it does not validate: the hrp ends at its first
/// NUL byte (hsmd hashes it as a C string), and a "5-bit" value of 32 or more is OR-ed into
/// the 64-bit accumulator unmasked, so its high bits spill into earlier output bits.
pub fn invoice_digest(hrp: &[u8], data_u5: &[u8]) -> Message {
    let hrp = &hrp[..hrp.iter().position(|&b| b == 0).unwrap_or(hrp.len())];
    let mut sha = Sha256::new();
    sha.update(hrp);
    let mut buf: u64 = 0;
    let mut bits: u32 = 0;
    for &value in data_u5 {
        buf = (buf << 5) | u64::from(value);
        bits += 5;
        if bits >= 32 {
            sha.update(((buf >> (bits - 32)) as u32).to_be_bytes());
            bits -= 32;
        }
    }
    if bits > 0 {
        let word = ((buf << (32 - bits)) as u32).to_be_bytes();
        sha.update(&word[..bits.div_ceil(8) as usize]);
    }
    Message::from_digest(sha.finalize().into())
}

/// `sign_bolt12` / `sign_bolt12_2` (BOLT 12): the BIP340 tagged hash of the merkle root with
/// tag "lightning" ‖ messagename ‖ fieldname.
pub fn bolt12_sighash(messagename: &[u8], fieldname: &[u8], merkle_root: &[u8; 32]) -> Message {
    let tag: [u8; 32] = Sha256::new()
        .chain_update(b"lightning")
        .chain_update(messagename)
        .chain_update(fieldname)
        .finalize()
        .into();
    let hash = Sha256::new()
        .chain_update(tag)
        .chain_update(tag)
        .chain_update(merkle_root)
        .finalize();
    Message::from_digest(hash.into())
}

/// `sign_option_will_fund_offer`: SHA256("option_will_fund" ‖ funding_pubkey ‖ blockheight ‖
/// channel_fee_max_base_msat ‖ channel_fee_max_proportional_thousandths), integers
/// big-endian.
pub fn will_fund_digest(
    funding_pubkey: &PublicKey,
    blockheight: u32,
    channel_fee_max_base_msat: u32,
    channel_fee_max_proportional_thousandths: u16,
) -> Message {
    let hash = Sha256::new()
        .chain_update(b"option_will_fund")
        .chain_update(funding_pubkey.serialize())
        .chain_update(blockheight.to_be_bytes())
        .chain_update(channel_fee_max_base_msat.to_be_bytes())
        .chain_update(channel_fee_max_proportional_thousandths.to_be_bytes())
        .finalize();
    Message::from_digest(hash.into())
}

/// A gossip message's digest (BOLT 7): SHA256d of `message[signed_from..]`, where `message`
/// starts with its 2-byte type and `signed_from` is one of the `*_SIGNED_FROM` constants.
/// `None` when the message is shorter than that.
pub fn gossip_digest(message: &[u8], signed_from: usize) -> Option<Message> {
    message.get(signed_from..).map(|signed| sha256d(&[signed]))
}

fn sha256d(parts: &[&[u8]]) -> Message {
    let mut sha = Sha256::new();
    for part in parts {
        sha.update(part);
    }
    Message::from_digest(Sha256::digest(sha.finalize()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For valid input the packing is plain BOLT 11: 8 values of 5 bits are 5 bytes.
    #[test]
    fn invoice_packing_of_valid_values() {
        let data = [0b10101u8, 0b01010, 0b11111, 0, 1, 2, 3, 4];
        let mut bits = String::new();
        for v in data {
            bits.push_str(&format!("{v:05b}"));
        }
        let packed: Vec<u8> = (0..5)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        let expected = Sha256::new()
            .chain_update(b"lnbc")
            .chain_update(&packed)
            .finalize();
        assert_eq!(
            invoice_digest(b"lnbc", &data),
            Message::from_digest(expected.into())
        );
        // A trailing partial byte is zero-padded: one value is 5 bits in one byte.
        let expected = Sha256::new()
            .chain_update(b"x")
            .chain_update([0b11111000])
            .finalize();
        assert_eq!(
            invoice_digest(b"x", &[31]),
            Message::from_digest(expected.into())
        );
    }

    #[test]
    fn invoice_hrp_stops_at_nul() {
        assert_eq!(
            invoice_digest(b"lnbc\0junk", &[1, 2]),
            invoice_digest(b"lnbc", &[1, 2])
        );
    }

    #[test]
    fn bip137_compact_size_boundaries() {
        let short = vec![b'a'; 0xfc];
        let long = vec![b'a'; 0xfd];
        let expected_short = sha256d(&[b"\x18Bitcoin Signed Message:\n", &[0xfc], &short]);
        let expected_long =
            sha256d(&[b"\x18Bitcoin Signed Message:\n", &[0xfd, 0xfd, 0x00], &long]);
        assert_eq!(bip137_digest(&short), expected_short);
        assert_eq!(bip137_digest(&long), expected_long);
    }

    #[test]
    fn gossip_digest_needs_the_signed_part() {
        assert!(gossip_digest(&[0u8; 65], NODE_ANNOUNCEMENT_SIGNED_FROM).is_none());
        assert!(gossip_digest(&[0u8; 66], NODE_ANNOUNCEMENT_SIGNED_FROM).is_some());
    }
}
