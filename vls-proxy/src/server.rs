//! The gRPC side: the `Hsmd` service the signer dials. One signer stream at a time; each new
//! stream first gets the node's `hsmd_init` replayed, and is refused if its node id is not
//! the pinned one.

use crate::router::{Admission, Router};
use proto::hsmd::hsmd_server::Hsmd;
use proto::hsmd::{PingReply, PingRequest, SignerRequest, SignerResponse};
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
            // Keeps the outbound stream open until this task ends.
            let _out = out;
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
                    match router.identity_ok(&resp.message) {
                        Ok(()) => router.ready(stream),
                        Err(why) => {
                            log::error!("refusing signer from {peer}: {why}");
                            break;
                        }
                    }
                    continue;
                }
                if let Err(why) = router.reply(stream, resp) {
                    log::error!("refusing signer from {peer}: {why}");
                    break;
                }
            }
            router.down(stream);
            log::warn!("signer disconnected; requests wait for it");
        });
        let out = UnboundedReceiverStream::new(out_rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
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
}
