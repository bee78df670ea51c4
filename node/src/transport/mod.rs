//! BOLT 8 transport and BOLT 1 messaging, with the node's static key in the signer.
//!
//! - [`ecdh`]: the [`Ecdh`] trait (the one operation the handshake needs from the node
//!   key), implemented by [`HsmClient`](crate::HsmClient) as `hsmd_ecdh_req`, and
//!   [`connectd_client`] to get the client lightningd would give connectd;
//! - [`noise`]: the Noise_XK handshake and message encryption with key rotation, without
//!   I/O;
//! - [`wire`]: BOLT 1 messages (`init` with features and networks, `error`, `warning`,
//!   `ping`, `pong`);
//! - [`peer`]: [`Peer`], a connection over a stream (TCP) after the handshake, with
//!   BOLT 1's housekeeping.
//!
//! Only the static-key ECDH goes to the signer (the responder's `es`, the initiator's
//! `se`); the ephemeral keys are session keys, random for each connection.

pub mod ecdh;
pub mod noise;
pub mod peer;
pub mod wire;

pub use ecdh::{connectd_client, Ecdh};
pub use noise::{CipherError, HandshakeError};
pub use peer::{Peer, PeerError};
pub use wire::{Features, Init, Message, Notice};
