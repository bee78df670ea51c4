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

/// The response header with which our proxy answers `SignerStream` (its name and version).
/// A proxy that sends none is taken for the Validating Lightning Signer's, whose decoders know
/// only what Core Lightning's hsmd sent before v25 (see the signer's `--proxy-compat`).
pub const PROXY_HEADER: &str = "x-hsmd-proxy";

/// The largest gRPC message either end sends or accepts, both directions: an hsmd frame (below
/// 2^27 bytes, as Core Lightning allows) with the request id, context and error fields around
/// it. Both the proxy's server and the signer's client set it, so no reply that one end may
/// send is one the other refuses (tonic's default decode limit is 4 MiB).
pub const MAX_MESSAGE_SIZE: usize = (1 << 27) + 64 * 1024;

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
