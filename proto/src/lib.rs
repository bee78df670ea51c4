//! The gRPC contract between vls-proxy and the signer.
