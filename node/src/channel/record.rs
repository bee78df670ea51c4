//! What the node keeps of a channel: everything needed to rebuild its transactions, find it
//! again in the signer, and recover its funds.

use crate::bolt3::{ChannelKeys, ChannelKind, ChannelParams};
use crate::store::serde_hex;
use bitcoin::{OutPoint, Transaction};
use secp256k1::ecdsa::Signature;
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

/// One side's channel parameters, as it announced them in `open_channel` /
/// `accept_channel`. The limits it sets apply to the *other* side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Blocks the other side's own output waits on the other side's commitment.
    pub to_self_delay: u16,
    /// Outputs below this are trimmed from this side's commitments.
    pub dust_limit_sat: u64,
    /// What the other side must keep in the channel.
    pub channel_reserve_sat: u64,
    /// The smallest HTLC this side accepts.
    pub htlc_minimum_msat: u64,
    /// The most this side lets be in flight towards it.
    pub max_htlc_value_in_flight_msat: u64,
    /// The most HTLCs this side accepts.
    pub max_accepted_htlcs: u16,
    /// The script this side closes to (`upfront_shutdown_script`); empty for none.
    #[serde(with = "serde_hex::bytes", default)]
    pub shutdown_script: Vec<u8>,
}

impl Default for ChannelConfig {
    /// Parameters that a signer with the default policy accepts (`to_self_delay` within
    /// 144..=2016, dust limit at least 354 sat); the reserve is set per channel (1% of the
    /// value, at least the dust limit).
    fn default() -> Self {
        ChannelConfig {
            to_self_delay: 144,
            dust_limit_sat: 546,
            channel_reserve_sat: 0,
            htlc_minimum_msat: 1,
            max_htlc_value_in_flight_msat: u64::MAX,
            max_accepted_htlcs: 30,
            shutdown_script: Vec::new(),
        }
    }
}

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    /// Both first commitments are signed (and, if we opened it, the funding transaction was
    /// broadcast); the peer's `channel_ready` has not come yet.
    AwaitingChannelReady,
    /// Both sides sent `channel_ready`: the channel is usable.
    Ready,
}

/// A channel, as the node persists it (one JSON file in the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The channel id (from the funding outpoint).
    #[serde(with = "serde_hex::bytes32")]
    pub channel_id: [u8; 32],
    /// The peer.
    #[serde(with = "serde_hex::pubkey")]
    pub peer_id: PublicKey,
    /// The channel's database id: with the peer id, what the signer derives the channel's
    /// keys and shachain from.
    pub dbid: u64,
    /// Whether we opened (and funded) it.
    pub we_opened: bool,
    /// Its type.
    pub kind: ChannelKind,
    /// The funding outpoint.
    #[serde(with = "serde_hex::outpoint")]
    pub funding_outpoint: OutPoint,
    /// The channel value.
    pub capacity_sat: u64,
    /// What the opener gave the other side at opening.
    pub push_msat: u64,
    /// Where it is in its life.
    pub state: ChannelState,
    /// The commitment fee rate, satoshis per 1000 weight.
    pub feerate_per_kw: u32,
    /// Our parameters.
    pub ours: ChannelConfig,
    /// The peer's parameters.
    pub theirs: ChannelConfig,
    /// Our funding key and basepoints (public: from the signer).
    pub our_keys: ChannelKeys,
    /// The peer's funding key and basepoints.
    pub their_keys: ChannelKeys,
    /// The number of our current commitment.
    pub our_commitment_number: u64,
    /// The number of the peer's current commitment.
    pub their_commitment_number: u64,
    /// The peer's per-commitment point of its current commitment.
    #[serde(with = "serde_hex::pubkey")]
    pub their_current_point: PublicKey,
    /// The peer's point for its next commitment (from its `channel_ready`).
    #[serde(with = "serde_hex::opt_pubkey", default)]
    pub their_next_point: Option<PublicKey>,
    /// Our balance, HTLCs excluded, before fees.
    pub to_us_msat: u64,
    /// The peer's balance, HTLCs excluded, before fees.
    pub to_them_msat: u64,
    /// The peer's signature on our current commitment.
    #[serde(with = "serde_hex::opt_signature", default)]
    pub their_commitment_sig: Option<Signature>,
    /// The funding transaction, if we built it.
    #[serde(with = "serde_hex::opt_tx", default)]
    pub funding_tx: Option<Transaction>,
    /// When the channel was opened (unix seconds).
    pub created_at: u64,
}

impl ChannelRecord {
    /// The channel id in hex.
    pub fn channel_id_hex(&self) -> String {
        hex::encode(self.channel_id)
    }

    /// The parameters its commitment transactions are built with.
    pub fn params(&self) -> ChannelParams {
        ChannelParams {
            kind: self.kind,
            funding_outpoint: self.funding_outpoint,
            value_sat: self.capacity_sat,
            we_opened: self.we_opened,
            holder: self.our_keys,
            counterparty: self.their_keys,
            holder_selected_delay: self.ours.to_self_delay,
            counterparty_selected_delay: self.theirs.to_self_delay,
        }
    }

    /// Whether it is usable.
    pub fn is_ready(&self) -> bool {
        self.state == ChannelState::Ready
    }

    /// What the static channel backup keeps of it, with the peer's known addresses.
    pub fn to_backup(&self, peer_addresses: Vec<String>) -> crate::backup::ChannelRecord {
        let basepoints = |k: &ChannelKeys| crate::backup::Basepoints {
            revocation: k.revocation,
            payment: k.payment,
            htlc: k.htlc,
            delayed_payment: k.delayed_payment,
        };
        crate::backup::ChannelRecord {
            funding_outpoint: self.funding_outpoint,
            peer_id: self.peer_id,
            peer_addresses,
            capacity_sat: self.capacity_sat,
            we_initiated: self.we_opened,
            channel_type: self.kind.feature_bits().to_vec(),
            // The delay on our own output is the one the peer asked of us, and vice versa.
            our_to_self_delay: self.theirs.to_self_delay,
            their_to_self_delay: self.ours.to_self_delay,
            dbid: self.dbid,
            our_funding_pubkey: self.our_keys.funding,
            their_funding_pubkey: self.their_keys.funding,
            our_basepoints: basepoints(&self.our_keys),
            their_basepoints: basepoints(&self.their_keys),
        }
    }
}
