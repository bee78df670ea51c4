//! The daemon against a stand-in proxy: a tiny in-process `Hsmd` server (plaintext, on an
//! ephemeral 127.0.0.1 port) that sends requests from Core Lightning's golden corpus and
//! checks the replies, then drops the stream and expects the daemon to dial back by itself,
//! and finally asks for a graceful shutdown.

use proto::hsmd::hsmd_server::{Hsmd, HsmdServer};
use proto::hsmd::{HsmRequestContext, PingReply, PingRequest, SignerRequest, SignerResponse};
use proto::tonic;
use serde_json::Value;
use signer::daemon::{self, DaemonConfig, LinkSecurity, HSM_SECRET_FILE};
use signer::Policy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

/// Bound on every step expected to happen promptly.
const STEP: Duration = Duration::from_secs(10);

/// One signer stream as the test proxy sees it.
struct StreamEnds {
    /// Requests to the signer; dropping it ends the stream from the proxy's side.
    to_signer: mpsc::UnboundedSender<Result<SignerRequest, Status>>,
    /// The signer's responses.
    from_signer: Streaming<SignerResponse>,
}

/// Hands every new signer stream to the test.
struct TestProxy {
    streams: mpsc::UnboundedSender<StreamEnds>,
    /// Whether it answers the stream with our proxy's header (else it stands for the
    /// Validating Lightning Signer's proxy, which sends none).
    names_itself: bool,
}

#[tonic::async_trait]
impl Hsmd for TestProxy {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            message: request.into_inner().message,
        }))
    }

    type SignerStreamStream = UnboundedReceiverStream<Result<SignerRequest, Status>>;

    async fn signer_stream(
        &self,
        request: Request<Streaming<SignerResponse>>,
    ) -> Result<Response<Self::SignerStreamStream>, Status> {
        let (to_signer, outbound) = mpsc::unbounded_channel();
        let _ = self.streams.send(StreamEnds {
            to_signer,
            from_signer: request.into_inner(),
        });
        let mut response = Response::new(UnboundedReceiverStream::new(outbound));
        if self.names_itself {
            response.metadata_mut().insert(
                proto::PROXY_HEADER,
                tonic::metadata::MetadataValue::from_static("vls-proxy/test"),
            );
        }
        Ok(response)
    }
}

async fn start_proxy(names_itself: bool) -> (SocketAddr, mpsc::UnboundedReceiver<StreamEnds>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams, accepted) = mpsc::unbounded_channel();
    let router = proto::keepalive::configure_server(Server::builder()).add_service(
        HsmdServer::new(TestProxy {
            streams,
            names_itself,
        }),
    );
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    (addr, accepted)
}

/// One step of a corpus case: the request and Core Lightning's reply.
type Step = (Vec<u8>, Vec<u8>);

/// The corpus case the test replays: its secret, and its steps.
fn corpus_case(name: &str) -> (Vec<u8>, Vec<Step>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/conformance/cln-hsmd-golden.json");
    let corpus: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = corpus["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    let hex = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    let steps = case["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (hex(&s["request"]), hex(&s["reply"])))
        .collect();
    (hex(&case["hsm_secret"]), steps)
}

async fn next_stream(accepted: &mut mpsc::UnboundedReceiver<StreamEnds>) -> StreamEnds {
    tokio::time::timeout(STEP, accepted.recv())
        .await
        .expect("the signer opened a stream in time")
        .expect("the proxy is running")
}

async fn next_response(stream: &mut StreamEnds) -> SignerResponse {
    tokio::time::timeout(STEP, stream.from_signer.message())
        .await
        .expect("a response in time")
        .expect("the stream is healthy")
        .expect("a response before the end of the stream")
}

/// Sends `(id, context, message)` requests and returns the responses by request id order.
async fn ask(
    stream: &mut StreamEnds,
    requests: Vec<(u64, Option<HsmRequestContext>, Vec<u8>)>,
) -> Vec<SignerResponse> {
    let n = requests.len();
    for (request_id, context, message) in requests {
        stream
            .to_signer
            .send(Ok(SignerRequest {
                request_id,
                context,
                message,
            }))
            .unwrap();
    }
    let mut responses = Vec::new();
    for _ in 0..n {
        responses.push(next_response(stream).await);
    }
    responses.sort_by_key(|r| r.request_id);
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_corpus_reconnects_and_shuts_down_gracefully() {
    let (secret, steps) = corpus_case("init_regtest_v4_6");
    let (init, init_reply) = steps[0].clone();
    let (ecdh, ecdh_reply) = steps[1].clone();

    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(HSM_SECRET_FILE), &secret).unwrap();
    let (addr, mut accepted) = start_proxy(true).await;

    let config = DaemonConfig::new(
        data.path(),
        format!("http://{addr}"),
        LinkSecurity::Plaintext,
        Policy::warn_only(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = tokio::spawn(daemon::run(config, async move {
        let _ = stopped.await;
    }));

    // First stream: init, then ECDH, byte-identical to Core Lightning's hsmd.
    let mut first = next_stream(&mut accepted).await;
    let r = ask(&mut first, vec![(1, None, init.clone())]).await;
    assert_eq!(r[0].error, "");
    assert_eq!(hex::encode(&r[0].message), hex::encode(&init_reply));
    let r = ask(&mut first, vec![(2, None, ecdh.clone())]).await;
    assert_eq!(r[0].request_id, 2);
    assert_eq!(hex::encode(&r[0].message), hex::encode(&ecdh_reply));

    // A malformed context is an error response, and the stream goes on.
    let bad = HsmRequestContext {
        peer_id: vec![2; 5],
        dbid: 1,
        capabilities: 1,
    };
    let r = ask(&mut first, vec![(3, Some(bad), ecdh.clone())]).await;
    assert_eq!(r[0].request_id, 3);
    assert!(r[0].error.contains("5-byte peer id"), "{:?}", r[0].error);
    assert!(r[0].message.is_empty() && !r[0].is_temporary_failure && !r[0].is_fatal);

    // A client without the ECDH permission is refused, naming the rule.
    let no_ecdh = HsmRequestContext {
        peer_id: vec![2; 33],
        dbid: 1,
        capabilities: 8,
    };
    let r = ask(&mut first, vec![(4, Some(no_ecdh), ecdh.clone())]).await;
    assert_eq!(r[0].policy_rule, "permission", "{:?}", r[0]);

    // The proxy drops the stream; the signer dials back by itself.
    drop(first);
    let mut second = next_stream(&mut accepted).await;
    // As the real proxy does: init replayed first, then the node's requests (and a repeated
    // id gets the same answer).
    let r = ask(
        &mut second,
        vec![
            (1 << 63, None, init),
            (2, None, ecdh.clone()),
            (5, None, ecdh),
        ],
    )
    .await;
    assert_eq!(hex::encode(&r[0].message), hex::encode(&ecdh_reply));
    assert_eq!(r[0].request_id, 2);
    assert_eq!(hex::encode(&r[1].message), hex::encode(&ecdh_reply));
    assert_eq!(hex::encode(&r[2].message), hex::encode(&init_reply));

    // Graceful shutdown: the daemon closes its half, then returns Ok.
    stop.send(()).unwrap();
    let end = tokio::time::timeout(STEP, second.from_signer.message())
        .await
        .expect("closed in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    drop(second);
    tokio::time::timeout(STEP, daemon)
        .await
        .expect("the daemon stopped in time")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_dialling_until_the_proxy_appears() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(HSM_SECRET_FILE), [7u8; 32]).unwrap();
    // Reserve a port, then free it: nothing listens there at first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = DaemonConfig::new(
        data.path(),
        format!("127.0.0.1:{port}"),
        LinkSecurity::Plaintext,
        Policy::enforcing(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = tokio::spawn(daemon::run(config, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !daemon.is_finished(),
        "a missing proxy must not end the daemon"
    );

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (streams, mut accepted) = mpsc::unbounded_channel();
    let router = Server::builder().add_service(HsmdServer::new(TestProxy {
        streams,
        names_itself: true,
    }));
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    let _stream = next_stream(&mut accepted).await;

    stop.send(()).unwrap();
    tokio::time::timeout(STEP, daemon)
        .await
        .expect("stopped in time")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn refuses_to_start_without_a_secret() {
    let data = tempfile::tempdir().unwrap();
    let config = DaemonConfig::new(
        data.path(),
        "127.0.0.1:1",
        LinkSecurity::Plaintext,
        Policy::enforcing(),
    );
    let err = daemon::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(HSM_SECRET_FILE), "{err}");
}

/// Against a proxy that does not name itself (as the Validating Lightning Signer's does not),
/// the init reply goes without the TLVs Core Lightning v25+ append, which that proxy's decoder
/// refuses; everything else, and the reply to our own proxy, stays byte for byte hsmd's.
/// `--proxy-compat` overrides the recognition either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_replies_as_the_proxy_decodes_them() {
    use protocol::msgs::InitReplyV4;
    use signer::daemon::ProxyCompat;
    for (case, names_itself, compat, older) in [
        ("init_regtest_v4_6", false, ProxyCompat::Auto, true),
        ("init_regtest_v4_6", true, ProxyCompat::Auto, false),
        (
            "init_regtest_v4_6",
            false,
            ProxyCompat::CoreLightning,
            false,
        ),
        ("init_regtest_v4_6", true, ProxyCompat::Vls, true),
    ] {
        let (secret, steps) = corpus_case(case);
        let (init, init_reply) = steps[0].clone();
        let (ecdh, ecdh_reply) = steps[1].clone();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join(HSM_SECRET_FILE), &secret).unwrap();
        let (addr, mut accepted) = start_proxy(names_itself).await;
        let mut config = DaemonConfig::new(
            data.path(),
            format!("http://{addr}"),
            LinkSecurity::Plaintext,
            Policy::warn_only(),
        );
        config.proxy_compat = compat;
        let (stop, stopped) = oneshot::channel::<()>();
        let daemon = tokio::spawn(daemon::run(config, async move {
            let _ = stopped.await;
        }));
        let mut stream = next_stream(&mut accepted).await;
        let r = ask(&mut stream, vec![(1, None, init), (2, None, ecdh)]).await;
        let what = format!("{case}, proxy names itself: {names_itself}, {compat:?}");
        let golden = InitReplyV4::decode(&init_reply).unwrap();
        assert!(
            golden.tlvs != Default::default(),
            "the corpus's reply has TLVs to leave out"
        );
        if older {
            let got = InitReplyV4::decode(&r[0].message).unwrap();
            assert_eq!(got.tlvs, Default::default(), "{what}");
            assert_eq!(
                InitReplyV4 {
                    tlvs: Default::default(),
                    ..golden
                },
                got,
                "{what}"
            );
            assert!(
                init_reply.starts_with(&r[0].message) && r[0].message.len() < init_reply.len(),
                "{what}: the older reply is hsmd's without its TLV stream"
            );
        } else {
            assert_eq!(
                hex::encode(&r[0].message),
                hex::encode(&init_reply),
                "{what}"
            );
        }
        assert_eq!(
            hex::encode(&r[1].message),
            hex::encode(&ecdh_reply),
            "{what}"
        );
        stop.send(()).unwrap();
        drop(stream);
        tokio::time::timeout(STEP, daemon)
            .await
            .expect("the daemon stopped in time")
            .unwrap()
            .unwrap();
    }
}
