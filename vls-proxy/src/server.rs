//! The gRPC side: the `Hsmd` service the signer dials. One signer stream at a time; each new
//! stream first gets the node's `hsmd_init` replayed, and is refused if its node id is not
//! the pinned one.

use crate::router::{Admission, Router};
use proto::hsmd::hsmd_server::Hsmd;
use proto::hsmd::{PingReply, PingRequest, SignerRequest, SignerResponse};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Request ids at and above this are the proxy's own (init replays); the node's requests
/// count up from 1 and never get here.
const REPLAY_ID_BASE: u64 = 1 << 63;

/// The `Hsmd` service.
pub struct HsmdService {
    router: Arc<Router>,
}

impl HsmdService {
    /// The service routing through `router` (its log reaches lightningd's).
    pub fn new(router: Arc<Router>) -> Self {
        HsmdService { router }
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
        tokio::spawn(async move {
            // Keeps the outbound stream open until this task ends.
            let _out = out;
            loop {
                let resp = match inbound.message().await {
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
