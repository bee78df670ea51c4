//! HTTP/2 keepalive for the proxy ↔ signer link.
//!
//! The proxy keeps one signer stream at a time and must notice quickly when
//! the signer behind it has vanished (host powered off, NAT entry dropped,
//! cable pulled) — TCP alone may take many minutes to say so. Both ends
//! therefore send HTTP/2 PING frames every [`HTTP2_KEEPALIVE_INTERVAL`], also
//! while no request is in flight, and close the connection when a PING is not
//! acknowledged within [`HTTP2_KEEPALIVE_TIMEOUT`]. A silent peer is thus
//! detected at most [`DEAD_PEER_DETECTION`] (7 s) after it stopped answering,
//! well inside the 10 s the design allows. Closing the connection ends every
//! stream on it:
//!
//! - the client (signer) sees its `SignerStream` response stream fail with an
//!   error status;
//! - the server (proxy) sees its inbound `Streaming<SignerResponse>` *end*, and
//!   with tonic 0.14 that end is clean (`Ok(None)`), not an error. The proxy
//!   must therefore treat any end of the signer's stream as a lost signer.
//!
//! The intervals are aggressive for a public gRPC service but fit this link,
//! which has exactly one long-lived connection. Peers built on tonic/hyper
//! (including the Validating Lightning Signer's) accept such PINGs; a grpc-go
//! or grpc-c++ server with its default ping policy would answer them with
//! `GOAWAY too_many_pings`.
//!
//! Apply [`configure_server`] to the proxy's [`Server`] builder and
//! [`configure_endpoint`] to the signer's [`Endpoint`].

use std::time::Duration;

use tonic::transport::{Endpoint, Server};

/// How often each end sends an HTTP/2 PING on an open connection (2 s).
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// How long each end waits for a PING to be acknowledged before it closes
/// the connection (5 s).
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a dead peer can go unnoticed: one interval plus one timeout
/// (7 s).
pub const DEAD_PEER_DETECTION: Duration =
    Duration::from_secs(HTTP2_KEEPALIVE_INTERVAL.as_secs() + HTTP2_KEEPALIVE_TIMEOUT.as_secs());

/// How long the signer waits for the TCP connection to the proxy before it
/// gives up on one attempt (10 s). The TLS handshake has its own bound,
/// [`crate::tls::TLS_HANDSHAKE_TIMEOUT`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns on HTTP/2 keepalive on the proxy's server: PINGs every
/// [`HTTP2_KEEPALIVE_INTERVAL`], connection closed after
/// [`HTTP2_KEEPALIVE_TIMEOUT`] without an acknowledgement. Also enables TCP
/// keepalive as a backstop.
pub fn configure_server<L>(server: Server<L>) -> Server<L> {
    server
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(HTTP2_KEEPALIVE_INTERVAL))
}

/// Turns on HTTP/2 keepalive on the signer's endpoint: PINGs every
/// [`HTTP2_KEEPALIVE_INTERVAL`] even while idle, connection closed after
/// [`HTTP2_KEEPALIVE_TIMEOUT`] without an acknowledgement, a connection
/// attempt bounded by [`CONNECT_TIMEOUT`], and TCP keepalive as a backstop.
pub fn configure_endpoint(endpoint: Endpoint) -> Endpoint {
    endpoint
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(HTTP2_KEEPALIVE_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_peer_is_detected_within_ten_seconds() {
        assert_eq!(
            DEAD_PEER_DETECTION,
            HTTP2_KEEPALIVE_INTERVAL + HTTP2_KEEPALIVE_TIMEOUT
        );
        assert!(DEAD_PEER_DETECTION <= Duration::from_secs(10));
    }
}
