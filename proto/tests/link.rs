//! The proxy ↔ signer link over real sockets on 127.0.0.1 with the real tonic
//! stack: mutual TLS accepts the right signer and refuses every other client,
//! plaintext works when both ends ask for it, and HTTP/2 keepalive notices a
//! silent peer within 10 s.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::hsmd::hsmd_client::HsmdClient;
use proto::hsmd::hsmd_server::{Hsmd, HsmdServer};
use proto::hsmd::{HsmRequestContext, PingReply, PingRequest, SignerRequest, SignerResponse};
use proto::keepalive;
use proto::tls::{self, ClientTls, ServerTls, TlsPaths};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// Bound on every step that is expected to succeed or fail quickly.
const STEP: Duration = Duration::from_secs(20);

/// What the test server saw on a signer stream.
#[derive(Debug)]
enum ServerEvent {
    /// The signer answered.
    Response(SignerResponse),
    /// The signer's half of the stream ended, cleanly or with an error.
    Ended(Result<(), Status>),
}

/// A stand-in proxy: echoes pings, and on each signer stream sends one
/// request and reports what comes back.
struct TestProxy {
    pings: Arc<AtomicUsize>,
    events: mpsc::UnboundedSender<ServerEvent>,
}

/// The request every signer stream starts with.
fn test_request() -> SignerRequest {
    SignerRequest {
        request_id: 42,
        context: Some(HsmRequestContext {
            peer_id: vec![2; 33],
            dbid: 7,
            capabilities: 0b101,
        }),
        message: vec![0x00, 0x17, 0xaa, 0xbb],
    }
}

/// The answer a well-behaved test signer gives to `request`.
fn test_response(request: &SignerRequest) -> SignerResponse {
    let mut message = request.message.clone();
    message.reverse();
    SignerResponse {
        request_id: request.request_id,
        message,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Hsmd for TestProxy {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        self.pings.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(PingReply {
            message: request.into_inner().message,
        }))
    }

    type SignerStreamStream = ReceiverStream<Result<SignerRequest, Status>>;

    async fn signer_stream(
        &self,
        request: Request<Streaming<SignerResponse>>,
    ) -> Result<Response<Self::SignerStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (to_signer, outbound) = mpsc::channel(4);
        to_signer
            .send(Ok(test_request()))
            .await
            .expect("outbound open");
        let events = self.events.clone();
        tokio::spawn(async move {
            // Holding `to_signer` keeps our half of the stream open until the
            // signer's half ends.
            let _keep_open = to_signer;
            loop {
                match inbound.message().await {
                    Ok(Some(response)) => {
                        let _ = events.send(ServerEvent::Response(response));
                    }
                    Ok(None) => {
                        let _ = events.send(ServerEvent::Ended(Ok(())));
                        break;
                    }
                    Err(status) => {
                        let _ = events.send(ServerEvent::Ended(Err(status)));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

struct RunningProxy {
    addr: SocketAddr,
    pings: Arc<AtomicUsize>,
    events: mpsc::UnboundedReceiver<ServerEvent>,
}

/// Starts a test proxy on an ephemeral 127.0.0.1 port, with keepalive and,
/// if given, TLS.
async fn start_proxy(tls: Option<ServerTlsConfig>) -> RunningProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pings = Arc::new(AtomicUsize::new(0));
    let (events_tx, events) = mpsc::unbounded_channel();
    let service = HsmdServer::new(TestProxy {
        pings: pings.clone(),
        events: events_tx,
    });

    let mut builder = keepalive::configure_server(Server::builder());
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let router = builder.add_service(service);
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    RunningProxy {
        addr,
        pings,
        events,
    }
}

/// The signer's endpoint for `addr`, with keepalive and, if given, TLS.
fn endpoint(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Endpoint {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
    let endpoint = keepalive::configure_endpoint(endpoint);
    match tls {
        Some(tls) => endpoint.tls_config(tls).unwrap(),
        None => endpoint,
    }
}

/// Connects and pings; any failure (connect, handshake or call) is an `Err`.
async fn ping(endpoint: Endpoint) -> Result<String, String> {
    let attempt = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let reply = HsmdClient::new(channel)
            .ping(PingRequest {
                message: "hello proxy".into(),
            })
            .await
            .map_err(|e| format!("ping: {e:?}"))?;
        Ok(reply.into_inner().message)
    };
    tokio::time::timeout(STEP, attempt)
        .await
        .expect("ping neither succeeded nor failed in time")
}

/// The signer's end of an open stream.
struct SignerSide {
    /// Requests from the proxy.
    requests: Streaming<SignerRequest>,
    /// Where the signer's responses go; dropping it ends the signer's half.
    responses: mpsc::Sender<SignerResponse>,
}

/// Opens a signer stream, answers the proxy's first request, and checks
/// that the proxy received the answer.
async fn signer_round_trip(channel: Channel, proxy: &mut RunningProxy) -> SignerSide {
    let (responses, outbound) = mpsc::channel(4);
    let mut requests = tokio::time::timeout(
        STEP,
        HsmdClient::new(channel).signer_stream(ReceiverStream::new(outbound)),
    )
    .await
    .expect("stream opened in time")
    .expect("stream opened")
    .into_inner();

    let request = tokio::time::timeout(STEP, requests.message())
        .await
        .expect("request in time")
        .expect("stream healthy")
        .expect("a request before the end of the stream");
    assert_eq!(request, test_request());

    responses.send(test_response(&request)).await.unwrap();
    match tokio::time::timeout(STEP, proxy.events.recv())
        .await
        .expect("response in time")
    {
        Some(ServerEvent::Response(response)) => assert_eq!(response, test_response(&request)),
        other => panic!("expected the signer's response, got {other:?}"),
    }
    SignerSide {
        requests,
        responses,
    }
}

fn generate(dir: &Path) {
    tls::generate_ca_and_certs(dir, &[]).unwrap();
}

#[tokio::test]
async fn signer_with_its_certificate_pings_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let mut proxy = start_proxy(Some(ServerTls::load(dir.path()).unwrap())).await;
    let endpoint = endpoint(proxy.addr, Some(ClientTls::load(dir.path()).unwrap()));

    assert_eq!(ping(endpoint.clone()).await.unwrap(), "hello proxy");
    assert_eq!(proxy.pings.load(Ordering::SeqCst), 1);

    let channel = endpoint.connect().await.unwrap();
    let signer = signer_round_trip(channel, &mut proxy).await;

    // The signer closing its half is seen as a clean end by the proxy.
    drop(signer.responses);
    match tokio::time::timeout(STEP, proxy.events.recv())
        .await
        .unwrap()
    {
        Some(ServerEvent::Ended(Ok(()))) => {}
        other => panic!("expected a clean end of stream, got {other:?}"),
    }
}

#[tokio::test]
async fn signer_reaches_the_proxy_by_localhost_name() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let proxy = start_proxy(Some(ServerTls::load(dir.path()).unwrap())).await;
    let tls = ClientTls::load(dir.path())
        .unwrap()
        .domain_name("localhost");
    assert_eq!(
        ping(endpoint(proxy.addr, Some(tls))).await.unwrap(),
        "hello proxy"
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    generate(ours.path());
    generate(theirs.path());
    let proxy = start_proxy(Some(ServerTls::load(ours.path()).unwrap())).await;

    // Trusts our proxy, but presents a signer certificate from another CA.
    let foreign_identity = TlsPaths {
        ca: ours.path().join(tls::CA_CERT),
        cert: theirs.path().join(tls::SIGNER_CERT),
        key: theirs.path().join(tls::SIGNER_KEY),
    };
    let err = ping(endpoint(
        proxy.addr,
        Some(ClientTls::from_paths(&foreign_identity).unwrap()),
    ))
    .await
    .unwrap_err();
    eprintln!("foreign client certificate: {err}");

    // Entirely from the other set: it does not trust our proxy either.
    let err = ping(endpoint(
        proxy.addr,
        Some(ClientTls::load(theirs.path()).unwrap()),
    ))
    .await
    .unwrap_err();
    eprintln!("foreign CA on both sides: {err}");

    assert_eq!(
        proxy.pings.load(Ordering::SeqCst),
        0,
        "no refused client got through"
    );
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let proxy = start_proxy(Some(ServerTls::load(dir.path()).unwrap())).await;

    let ca = Certificate::from_pem(std::fs::read(dir.path().join(tls::CA_CERT)).unwrap());
    let anonymous = ClientTlsConfig::new().ca_certificate(ca);
    let err = ping(endpoint(proxy.addr, Some(anonymous)))
        .await
        .unwrap_err();
    eprintln!("no client certificate: {err}");

    // Nor does a plaintext client get through to a TLS proxy.
    let err = ping(endpoint(proxy.addr, None)).await.unwrap_err();
    eprintln!("plaintext client to TLS proxy: {err}");

    assert_eq!(
        proxy.pings.load(Ordering::SeqCst),
        0,
        "no refused client got through"
    );
}

#[tokio::test]
async fn plaintext_on_both_sides_works() {
    let mut proxy = start_proxy(None).await;
    let endpoint = endpoint(proxy.addr, None);
    assert_eq!(ping(endpoint.clone()).await.unwrap(), "hello proxy");
    let channel = endpoint.connect().await.unwrap();
    signer_round_trip(channel, &mut proxy).await;
}

/// A TCP relay between the signer and the proxy that can be frozen: once
/// frozen it stops moving bytes but keeps both sockets open, like a peer
/// whose host vanished without closing anything.
async fn start_relay(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (freeze, frozen) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, frozen.clone()));
            tokio::spawn(pump(server_read, client_write, frozen.clone()));
        }
    });
    (addr, freeze)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = async { frozen.wait_for(|f| *f).await.is_ok() } => {
                // Hold both sockets open and never move another byte.
                std::future::pending::<()>().await;
            }
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { return },
            },
        }
    }
}

#[tokio::test]
async fn keepalive_detects_a_silent_peer_within_ten_seconds() {
    let limit = Duration::from_secs(10);
    assert!(keepalive::DEAD_PEER_DETECTION <= limit);

    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let mut proxy = start_proxy(Some(ServerTls::load(dir.path()).unwrap())).await;
    let (relay, freeze) = start_relay(proxy.addr).await;
    let tls = ClientTls::load(dir.path())
        .unwrap()
        .domain_name("localhost");
    let channel = endpoint(relay, Some(tls)).connect().await.unwrap();
    let mut signer = signer_round_trip(channel, &mut proxy).await;

    freeze.send(true).unwrap();
    let frozen_at = Instant::now();

    // The proxy sees the signer's half of the stream fail...
    let proxy_side = async {
        match proxy.events.recv().await {
            Some(ServerEvent::Ended(end)) => (frozen_at.elapsed(), end),
            other => panic!("expected the end of the stream, got {other:?}"),
        }
    };
    // ...and the signer sees the proxy's half fail.
    let signer_side = async {
        let end = signer.requests.message().await;
        (frozen_at.elapsed(), end)
    };
    let ((proxy_after, proxy_end), (signer_after, signer_end)) =
        tokio::time::timeout(limit + Duration::from_secs(5), async {
            tokio::join!(proxy_side, signer_side)
        })
        .await
        .expect("keepalive noticed the silent peer on both ends");
    eprintln!("proxy noticed after {proxy_after:?}: {proxy_end:?}");
    eprintln!("signer noticed after {signer_after:?}: {signer_end:?}");

    assert!(proxy_after <= limit, "proxy took {proxy_after:?}");
    assert!(signer_after <= limit, "signer took {signer_after:?}");
    // On the server, tonic ends the inbound stream of a connection that
    // keepalive closed without an error (`Ok(None)`, as if the signer had
    // closed it): the proxy must treat any end of the stream as a lost signer.
    // The signer, on the client side, does see an error.
    let _ = proxy_end;
    assert!(
        signer_end.is_err(),
        "the signer sees a failure, not a clean end"
    );
    // Nothing was seen before the keepalive could have fired.
    assert!(proxy_after >= keepalive::HTTP2_KEEPALIVE_INTERVAL);
}
