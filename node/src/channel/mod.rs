//! Opening channels (BOLT 2 v1 establishment) with every key operation on the signer.
//!
//! Both roles, over any [`MessageIo`]:
//!
//! ```text
//!  opener ([`open`])                                   acceptor ([`accept`])
//!  get_channel_basepoints, new_channel, client         (same, once open_channel came)
//!  get_per_commitment_point(0)
//!          ── open_channel ──────────────────────────▶ checks it against its AcceptPolicy
//!          ◀───────────────────────────── accept_channel ── (minimum_depth 0: zero-conf)
//!  builds the funding tx from wallet UTXOs
//!  setup_channel; sign_remote_commitment_tx(0)
//!          ── funding_created ───────────────────────▶ setup_channel
//!                                                      validate_commitment_tx(0)
//!                                                      sign_remote_commitment_tx(0)
//!          ◀─────────────────────────────── funding_signed
//!  validate_commitment_tx(0); sign_withdrawal
//!  saves the channel; broadcast (outbox)               saves the channel
//!          ── channel_ready ─────────────────────────▶
//!          ◀──────────────────────────────── channel_ready (sent right after funding_signed)
//! ```
//!
//! The node never signs: our signature on the peer's first commitment is
//! `sign_remote_commitment_tx`, the peer's signature on ours is checked here (public key
//! only) and then by the signer (`validate_commitment_tx`, whose reply is our next
//! per-commitment point), and the funding transaction is signed by `sign_withdrawal`.
//! Transactions are built by [`crate::bolt3`]. Channel types: `option_static_remotekey` and
//! `option_anchors_zero_fee_htlc_tx` ([`ChannelKind`]); the defaults ([`ChannelConfig`],
//! [`OpenParams`], [`AcceptPolicy`]) are within what the signer's default policy accepts
//! (`to_self_delay` 144..=2016, channel value up to 1 BTC, fee rates 253..=100000 sat/kw).
//!
//! Failures: a bad or refused proposal gets an `error` to the peer naming the reason; a
//! signer refusal carries the proxy's reason (the policy rule); if nothing was signed for
//! broadcast the signer forgets the channel. A channel is saved to the store before its
//! funding transaction is broadcast, and again once `channel_ready` came.

mod accept;
mod hsm;
pub mod io;
pub mod msgs;
mod open;
pub mod record;
mod session;

pub use accept::{accept, accept_open_channel};
pub use io::{memory_pair, MemoryClosed, MemoryIo, MessageIo};
pub use open::open;
pub use record::{ChannelConfig, ChannelRecord, ChannelState};

use crate::bolt3::{Bolt3Error, ChannelKind};
use crate::chain::{Chain, ChainError};
use crate::client::ClientError;
use crate::hsmd::Hsmd;
use crate::store::{Store, StoreError};
use crate::wallet::{Wallet, WalletError};
use bitcoin::Network;
use std::ops::RangeInclusive;
use std::time::Duration;

/// How long to wait for each of the peer's messages by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default commitment fee rate (sat per 1000 weight).
pub const DEFAULT_FEERATE_PER_KW: u32 = 2500;
/// The largest channel by default: the signer's default `max_channel_value_sat` (1 BTC).
pub const MAX_FUNDING_SAT: u64 = 100_000_000;
/// The smallest channel accepted by default.
pub const MIN_FUNDING_SAT: u64 = 20_000;
/// The BOLT 3 lower bound of a dust limit, and the signer's default minimum.
pub const MIN_DUST_LIMIT_SAT: u64 = 354;
/// A dust limit above this is refused (value trimmed into fees).
pub const MAX_DUST_LIMIT_SAT: u64 = 20_000;
/// BOLT 2's limit on `max_accepted_htlcs`.
pub const MAX_ACCEPTED_HTLCS: u16 = 483;

/// Why an opening failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The connection to the peer failed.
    #[error("connection to the peer: {0}")]
    Io(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The peer did not answer in time.
    #[error("the peer sent no {waiting_for} within {timeout:?}")]
    Timeout {
        /// The message we waited for.
        waiting_for: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The peer sent `error`: it failed the channel.
    #[error("the peer failed the channel: {0}")]
    PeerFailed(String),
    /// The peer sent something BOLT 2 does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A message that does not parse.
    #[error(transparent)]
    Malformed(#[from] msgs::MsgError),
    /// We do not accept what the peer proposes.
    #[error("refused: {0}")]
    Refused(String),
    /// Our own parameters are unusable.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// The signer refused a request (its policy, with the reason the proxy reported).
    #[error("the signer refused {request}: {reason}")]
    SignerRefused {
        /// The request.
        request: &'static str,
        /// The reason (a refusal names the policy rule).
        reason: String,
    },
    /// A signer request failed.
    #[error("signer request {request} failed: {source}")]
    Signer {
        /// The request.
        request: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The peer's signature on our commitment does not verify.
    #[error("the peer's signature on our commitment {0} does not verify")]
    BadSignature(u64),
    /// A transaction could not be built.
    #[error(transparent)]
    Bolt3(#[from] Bolt3Error),
    /// The wallet could not fund or sign.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The chain backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChannelError {
    /// Whether the peer should be told (with an `error`) that the opening failed: not when
    /// it failed it itself or the connection is gone.
    fn tell_peer(&self) -> bool {
        !matches!(self, ChannelError::Io(_) | ChannelError::PeerFailed(_))
    }
}

/// What the channel code needs of the node. Cheap to copy.
#[derive(Clone, Copy)]
pub struct NodeContext<'a> {
    /// The proxy (its master client, and per-channel clients).
    pub hsmd: &'a Hsmd,
    /// The chain the node runs on (`open_channel`'s `chain_hash`).
    pub network: Network,
    /// The wallet (addresses and funding transactions).
    pub wallet: &'a Wallet,
    /// Where funding transactions go and wallet UTXOs come from.
    pub chain: &'a dyn Chain,
    /// Where channels are saved.
    pub store: &'a Store,
}

impl std::fmt::Debug for NodeContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// What to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenParams {
    /// The channel value (from our wallet).
    pub funding_sat: u64,
    /// What we give the peer at opening.
    pub push_msat: u64,
    /// The channel type.
    pub kind: ChannelKind,
    /// Our parameters (the reserve we require is 1% of the value, at least both dust
    /// limits, when `channel_reserve_sat` is 0).
    pub config: ChannelConfig,
    /// The commitment fee rate.
    pub commitment_feerate_per_kw: u32,
    /// The funding transaction's fee rate.
    pub funding_feerate_per_kw: u32,
    /// Whether to announce the channel (`channel_flags` bit 0).
    pub announce: bool,
    /// How long to wait for each of the peer's messages.
    pub timeout: Duration,
    /// The peer's dust limit, `to_self_delay` and fee rate must be within these (as the
    /// signer's policy requires).
    pub limits: PeerLimits,
}

impl OpenParams {
    /// A channel of `funding_sat` of type `kind` with the default parameters.
    pub fn new(funding_sat: u64, kind: ChannelKind) -> OpenParams {
        OpenParams {
            funding_sat,
            push_msat: 0,
            kind,
            config: ChannelConfig::default(),
            commitment_feerate_per_kw: DEFAULT_FEERATE_PER_KW,
            funding_feerate_per_kw: DEFAULT_FEERATE_PER_KW,
            announce: false,
            timeout: DEFAULT_TIMEOUT,
            limits: PeerLimits::default(),
        }
    }
}

/// Bounds on the peer's parameters, matching the signer's default policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    /// `to_self_delay` either side may ask (`channel-to-self-delay`).
    pub to_self_delay: RangeInclusive<u16>,
    /// Commitment fee rates (`commitment-feerate`).
    pub feerate_per_kw: RangeInclusive<u32>,
    /// Dust limits.
    pub dust_limit_sat: RangeInclusive<u64>,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            to_self_delay: 144..=2016,
            feerate_per_kw: 253..=100_000,
            dust_limit_sat: MIN_DUST_LIMIT_SAT..=MAX_DUST_LIMIT_SAT,
        }
    }
}

/// What we accept from a peer that opens a channel to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptPolicy {
    /// Our parameters (reserve as for [`OpenParams::config`]).
    pub config: ChannelConfig,
    /// The channel types we accept.
    pub kinds: Vec<ChannelKind>,
    /// Channel values we accept.
    pub funding_sat: RangeInclusive<u64>,
    /// Bounds on the peer's parameters.
    pub limits: PeerLimits,
    /// How long to wait for each of the peer's messages.
    pub timeout: Duration,
}

impl Default for AcceptPolicy {
    fn default() -> Self {
        AcceptPolicy {
            config: ChannelConfig::default(),
            kinds: vec![ChannelKind::StaticRemoteKey, ChannelKind::Anchors],
            funding_sat: MIN_FUNDING_SAT..=MAX_FUNDING_SAT,
            limits: PeerLimits::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests;
