//! The remote signer: answers Core Lightning's hsmd requests exactly as its own hsmd does from
//! the same secret, refuses what the operator's policy forbids, and keeps its state durable.
//!
//! - [`secret`]: the root secret and Core Lightning's `hsm_secret` file formats;
//! - [`keys`]: every key, derived as Core Lightning derives it;
//! - [`sign`]: signature primitives with Core Lightning's exact nonce choices;
//! - [`handler`]: [`Signer::handle`], one request in, one reply out; `handlers/` holds one
//!   function per request type;
//! - [`dry_run`]: `vls_check_request`, whether a request of lightningd's would be signed,
//!   asked before lightningd sends it (a refusal on its own fd would stop it);
//! - [`policy`]: named rules, each enforced or warned;
//! - `policy_channel`: the channel and commitment rules (channel types, delays, values, fee
//!   rates, HTLCs, balances);
//! - `policy_onchain`: the on-chain rules (destinations, fee caps, segwit-only inputs);
//! - [`store`]: durable per-channel state and the reply cache, in redb;
//! - [`bolt3`]: the funding script and the counterparty's per-commitment secret storage;
//! - [`context`], [`error`]: who asks, and what can go wrong;
//! - [`daemon`]: the `signer run` daemon that dials the proxy and answers its requests;
//! - [`config`]: the `signer` command line and configuration file.

pub mod admin;
pub mod approvals;
pub mod bolt3;
pub mod config;
pub mod context;
pub mod daemon;
pub mod dry_run;
pub mod error;
pub mod gossip;
pub mod handler;
mod handlers;
pub mod keys;
mod lanes;
pub mod limits;
mod memo;
pub mod policy;
mod policy_channel;
mod policy_onchain;
mod psbt_sign;
pub mod secret;
pub mod sign;
pub mod store;
#[cfg(test)]
mod test_support;

pub use context::{ChannelKey, ClientContext};
pub use error::SignerError;
pub use handler::{Session, Signer};
pub use policy::Policy;
pub use store::Store;
