//! The remote signer.
pub mod keys;
pub mod secret;
pub mod sign;
