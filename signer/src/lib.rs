//! The remote signer.
