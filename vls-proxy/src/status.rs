//! The status channel to lightningd (fd 0): `status_version` first, then log lines,
//! `hsmstatus_client_bad_request` for a client's bad request, and `status_fail` before a
//! fatal exit.

use protocol::frame::tokio_io;
use protocol::msgs::{ClientBadRequest, StatusFail, StatusLog, StatusVersion};
use protocol::types::{NodeId, WireString};
use protocol::Message;
use tokio::io::AsyncWrite;
use tokio::sync::Mutex;

/// `status_log` level: unusual.
pub const LOG_UNUSUAL: u8 = 4;
/// `status_log` level: broken.
pub const LOG_BROKEN: u8 = 5;
/// `status_log` level: informational.
pub const LOG_INFO: u8 = 3;

/// The write side of fd 0. Writes are serialized; a failed write is logged, never fatal by
/// itself (lightningd closing fd 0 shows up as EOF on fd 3 too).
pub struct Status {
    out: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
}

impl Status {
    /// The status channel over `out`.
    pub fn new(out: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Status {
            out: Mutex::new(Box::new(out)),
        }
    }

    async fn send(&self, m: Message) {
        let bytes = match m.encode() {
            Ok(b) => b,
            Err(e) => {
                log::error!("cannot encode status message: {e}");
                return;
            }
        };
        let mut out = self.out.lock().await;
        if let Err(e) = tokio_io::write(&mut *out, &bytes).await {
            log::warn!("status channel write failed: {e}");
        }
    }

    /// `status_version`: the first message lightningd expects.
    pub async fn version(&self, version: &str) {
        self.send(StatusVersion::new(WireString::from(version)).into())
            .await
    }

    /// A log line in lightningd's log.
    pub async fn log(&self, level: u8, entry: &str) {
        self.send(StatusLog::new(level, None, WireString::from(entry)).into())
            .await
    }

    /// A client sent a bad request (it is closed right after).
    pub async fn bad_request(&self, client: NodeId, description: &str, request: &[u8]) {
        let msg = ClientBadRequest::new(client, WireString::from(description), request.to_vec());
        self.send(msg.into()).await
    }

    /// The proxy is about to exit because of `reason`/`desc`.
    pub async fn fail(&self, reason: u8, desc: &str) {
        self.send(StatusFail::new(reason, WireString::from(desc)).into())
            .await
    }
}
