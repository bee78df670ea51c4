//! The gRPC side: the `Hsmd` service the signer dials. One signer stream at a time; each new
//! stream first gets the node's `hsmd_init` replayed, and is refused if its node id is not
//! the pinned one. A node id in an init reply is only a claim: before the stream is used, the
//! signer proves it holds that node key by signing a fresh random challenge with
//! `hsmd_sign_message` (which Core Lightning's hsmd and VLS both answer with the node key); a
//! stream that cannot is dropped.

use crate::router::{Admission, Router};
use bitcoin::secp256k1;
use proto::hsmd::hsmd_server::Hsmd;
use proto::hsmd::{PingReply, PingRequest, SignerRequest, SignerResponse};
use protocol::msgs::{InitReplyV4, SignMessage, SignMessageReply};
use protocol::types::NodeId;
use protocol::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Request ids at and above this are the proxy's own (init replays); the node's requests
/// count up from 1 and never get here.
const REPLAY_ID_BASE: u64 = 1 << 63;

/// Request ids of the node-key challenges (one per stream, above the replays' ids).
const CHALLENGE_ID_BASE: u64 = REPLAY_ID_BASE + (1 << 62);

/// A fresh challenge for the signer to sign with its node key.
fn challenge() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut nonce = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(format!("vls-proxy node key challenge {}", hex::encode(nonce)).into_bytes())
}

/// Checks the signer's answer to `challenge`: a `sign_message` signature that recovers to
/// `node_id`.
fn check_proof(challenge: &[u8], resp: &SignerResponse, node_id: &NodeId) -> Result<(), String> {
    use bitcoin::hashes::{sha256d, Hash, HashEngine};
    if !resp.error.is_empty() {
        return Err(format!("it refused to sign the challenge: {}", resp.error));
    }
    let reply = SignMessageReply::decode(&resp.message)
        .map_err(|e| format!("its answer to the challenge does not decode: {e}"))?;
    let mut e = sha256d::Hash::engine();
    e.input(b"Lightning Signed Message:");
    e.input(challenge);
    let digest = secp256k1::Message::from_digest(sha256d::Hash::from_engine(e).to_byte_array());
    let key = secp256k1::SECP256K1
        .recover_ecdsa(&digest, &reply.sig)
        .map_err(|e| format!("its signature of the challenge does not recover: {e}"))?;
    if NodeId::from_pubkey(&key) != *node_id {
        return Err(format!(
            "it claims node id {node_id} but signs the challenge with {key}"
        ));
    }
    Ok(())
}

/// How long a signer stream may leave an init it was sent unanswered before it is dropped
/// (it holds the only signer slot).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Hsmd` service.
pub struct HsmdService {
    router: Arc<Router>,
    init_timeout: Duration,
}

impl HsmdService {
    /// The service routing through `router` (its log reaches lightningd's).
    pub fn new(router: Arc<Router>) -> Self {
        HsmdService::with_init_timeout(router, INIT_TIMEOUT)
    }

    /// The same, dropping a stream that leaves an init unanswered for `timeout`.
    pub fn with_init_timeout(router: Arc<Router>, timeout: Duration) -> Self {
        HsmdService {
            router,
            init_timeout: timeout,
        }
    }
}

type RequestStream = Pin<Box<dyn Stream<Item = Result<SignerRequest, Status>> + Send>>;

#[tonic::async_trait]
impl Hsmd for HsmdService {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            message: request.into_inner().message,
        }))
    }

    type SignerStreamStream = RequestStream;

    async fn signer_stream(
        &self,
        request: Request<Streaming<SignerResponse>>,
    ) -> Result<Response<RequestStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or("unknown".into(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let (out, out_rx) = mpsc::unbounded_channel();
        let stream = match self.router.admit(out.clone()) {
            Admission::Admitted(s) => s,
            Admission::Busy => {
                log::warn!("refusing a second signer stream from {peer}: one is connected");
                return Err(Status::already_exists("a signer is already connected"));
            }
        };
        log::info!("signer connected from {peer} (stream {stream})");
        let replay_id = REPLAY_ID_BASE + stream;
        if let Some(init) = self.router.replay_init() {
            let _ = out.send(SignerRequest {
                request_id: replay_id,
                context: None,
                message: init,
            });
        }
        let router = self.router.clone();
        let init_timeout = self.init_timeout;
        tokio::spawn(async move {
            // `out` keeps the outbound stream open until this task ends.
            let challenge_id = CHALLENGE_ID_BASE + stream;
            // The challenge sent, and the node id it must be signed with.
            let mut asked: Option<(Vec<u8>, NodeId)> = None;
            let prove = |node_id: NodeId| -> Option<(Vec<u8>, NodeId)> {
                let c = challenge().ok()?;
                let message = Message::from(SignMessage::new(c.clone())).encode().ok()?;
                out.send(SignerRequest {
                    request_id: challenge_id,
                    context: None,
                    message,
                })
                .ok()?;
                Some((c, node_id))
            };
            let mut deadline = tokio::time::Instant::now() + init_timeout;
            loop {
                let next = if router.is_ready(stream) {
                    inbound.message().await
                } else {
                    match tokio::time::timeout_at(deadline, inbound.message()).await {
                        Ok(next) => next,
                        Err(_) if router.init_pending_on(stream) => {
                            log::error!(
                                "signer stream {stream} from {peer} left init unanswered for {init_timeout:?}: dropped"
                            );
                            break;
                        }
                        Err(_) => {
                            // Nothing asked of it yet (the node has not sent init).
                            deadline = tokio::time::Instant::now() + init_timeout;
                            continue;
                        }
                    }
                };
                let resp = match next {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        log::warn!("signer stream {stream} ended");
                        break;
                    }
                    Err(status) => {
                        log::warn!("signer stream {stream} failed: {status}");
                        break;
                    }
                };
                if resp.request_id == replay_id {
                    if !resp.error.is_empty() {
                        log::error!("signer refused the replayed init: {}", resp.error);
                        break;
                    }
                    if let Err(why) = router.identity_ok(&resp.message) {
                        log::error!("refusing signer from {peer}: {why}");
                        break;
                    }
                    let Ok(r) = InitReplyV4::decode(&resp.message) else {
                        break;
                    };
                    asked = prove(r.node_id);
                    if asked.is_none() {
                        log::error!("cannot send the node key challenge to stream {stream}");
                        break;
                    }
                    continue;
                }
                if resp.request_id == challenge_id {
                    let Some((c, node_id)) = asked.take() else {
                        continue;
                    };
                    match check_proof(&c, &resp, &node_id) {
                        Ok(()) => {
                            log::info!("signer from {peer} proved node key {node_id}");
                            router.ready(stream);
                        }
                        Err(why) => {
                            log::error!("refusing signer from {peer}: {why}");
                            break;
                        }
                    }
                    continue;
                }
                let claimed = (resp.message.get(..2) == Some(&InitReplyV4::TYPE.to_be_bytes()[..]))
                    .then(|| InitReplyV4::decode(&resp.message).ok().map(|r| r.node_id))
                    .flatten();
                match router.reply(stream, resp) {
                    Ok(false) => {}
                    Ok(true) => {
                        asked = claimed.and_then(prove);
                        if asked.is_none() {
                            log::error!("cannot send the node key challenge to stream {stream}");
                            break;
                        }
                    }
                    Err(why) => {
                        log::error!("refusing signer from {peer}: {why}");
                        break;
                    }
                }
            }
            router.down(stream);
            log::warn!("signer disconnected; requests wait for it");
        });
        let out = UnboundedReceiverStream::new(out_rx).map(Ok);
        let mut response = Response::new(Box::pin(out) as RequestStream);
        // Tells our signer it speaks to this proxy (which passes Core Lightning's replies
        // through whole), not to one that needs the older init reply.
        response.metadata_mut().insert(
            proto::PROXY_HEADER,
            tonic::metadata::MetadataValue::from_static(concat!(
                "vls-proxy/",
                env!("CARGO_PKG_VERSION")
            )),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::router::RouterConfig;
    use proto::hsmd::hsmd_client::HsmdClient;
    use proto::hsmd::hsmd_server::HsmdServer;

    /// A signer that connects, takes the node's init and never answers it is dropped after
    /// the timeout, and the next signer gets the slot (and the init).
    #[tokio::test]
    async fn a_signer_that_never_answers_init_loses_the_slot() {
        let router = Router::new(RouterConfig::default(), Arc::new(Metrics::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = HsmdService::with_init_timeout(router.clone(), Duration::from_millis(300));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HsmdServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let init = crate::router::tests::init();
        let call = {
            let (router, init) = (router.clone(), init.clone());
            tokio::spawn(async move { router.call(None, init).await })
        };
        let connect = || async {
            let mut client = HsmdClient::connect(format!("http://{addr}")).await.unwrap();
            let (tx, rx) = mpsc::unbounded_channel::<SignerResponse>();
            let replies = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let requests = client.signer_stream(replies).await.unwrap().into_inner();
            (tx, requests)
        };
        // The silent signer.
        let (_silent, mut requests) = connect().await;
        let first = requests.message().await.unwrap().expect("the init");
        assert_eq!(first.message, init);
        let ended = tokio::time::timeout(Duration::from_secs(10), requests.message())
            .await
            .expect("the proxy ends the stream");
        assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
        // The next signer gets the init, answers, and the call completes.
        let (answer, mut requests) = connect().await;
        let again = requests.message().await.unwrap().expect("the init again");
        assert_eq!(again.message, init);
        assert!(!call.is_finished());
        answer
            .send(SignerResponse {
                request_id: again.request_id,
                error: "no secret here".into(),
                ..Default::default()
            })
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call ends")
            .unwrap();
        assert!(
            matches!(got, Err(crate::router::CallError::Refused { .. })),
            "{got:?}"
        );
    }

    /// A signer answering init and the node-key challenge: signing it with `key`.
    async fn signer_proving_with(key: [u8; 32]) -> (Arc<Router>, bool) {
        let router = Router::new(RouterConfig::default(), Arc::new(Metrics::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HsmdServer::new(HsmdService::new(router.clone())))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let call = {
            let router = router.clone();
            tokio::spawn(async move { router.call(None, crate::router::tests::init()).await })
        };
        let mut client = HsmdClient::connect(format!("http://{addr}")).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel::<SignerResponse>();
        let replies = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut requests = client.signer_stream(replies).await.unwrap().into_inner();
        let init = requests.message().await.unwrap().expect("the init");
        tx.send(SignerResponse {
            request_id: init.request_id,
            message: crate::plugin_socket::tests::init_reply(),
            ..Default::default()
        })
        .unwrap();
        call.await.unwrap().expect("lightningd gets its init reply");
        let asked = requests.message().await.unwrap().expect("the challenge");
        let m = SignMessage::decode(&asked.message).expect("a sign_message");
        use bitcoin::hashes::{sha256d, Hash, HashEngine};
        let mut e = sha256d::Hash::engine();
        e.input(b"Lightning Signed Message:");
        e.input(&m.msg);
        let digest = secp256k1::Message::from_digest(sha256d::Hash::from_engine(e).to_byte_array());
        let sk = secp256k1::SecretKey::from_slice(&key).unwrap();
        let sig = secp256k1::SECP256K1.sign_ecdsa_recoverable(&digest, &sk);
        tx.send(SignerResponse {
            request_id: asked.request_id,
            message: Message::from(SignMessageReply::new(sig)).encode().unwrap(),
            ..Default::default()
        })
        .unwrap();
        // Ready, or dropped.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if router.is_ready(1) {
                return (router, true);
            }
            if std::time::Instant::now() > deadline || !router.init_pending_on(1) {
                return (router, false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_signer_proves_its_node_key_before_the_stream_is_used() {
        let (_, ready) = signer_proving_with(crate::plugin_socket::tests::NODE_KEY).await;
        assert!(ready);
        let (router, ready) = signer_proving_with([9; 32]).await;
        assert!(!ready, "a signer that only claims the node id is refused");
        assert!(!router.init_pending_on(1), "its stream was dropped");
    }
}
