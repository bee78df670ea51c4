//! The gRPC contract between `vls-proxy` and the signer.
//!
//! - [`hsmd`]: the generated messages, client and server of the `hsmd.Hsmd`
//!   service, wire-compatible with the Validating Lightning Signer's
//!   `hsmd.proto`.
//! - [`tls`]: mutual TLS for the link: certificate generation and loading.
//! - [`keepalive`]: HTTP/2 keepalive settings that detect a dead peer within
//!   seconds, for both ends.

#![warn(missing_docs)]

pub mod keepalive;
pub mod tls;

/// The tonic this crate's generated code and TLS configurations are built
/// for, so that dependents use the very same version.
pub use tonic;

pub mod hsmd {
    //! The `hsmd` protobuf package: messages and the `Hsmd` service.
    //!
    //! Generated at build time from `proto/hsmd.proto`. The proxy serves
    //! [`hsmd_server::HsmdServer`] around its [`hsmd_server::Hsmd`]
    //! implementation; the signer dials with [`hsmd_client::HsmdClient`] and
    //! calls `signer_stream`, sending [`SignerResponse`]s and receiving
    //! [`SignerRequest`]s.

    tonic::include_proto!("hsmd");
}
