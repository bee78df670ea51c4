//! The status channel (fd 0 of the proxy, read here): a reader task decodes every message
//! the proxy sends there into a [`StatusEvent`] and keeps them in a [`StatusLog`] that can
//! be queried and waited on.
//!
//! What lightningd learns on this channel: `status_version` first, log lines,
//! `hsmstatus_client_bad_request` when a client is closed for a bad request, and
//! `status_fail` just before the proxy exits. Messages that do not decode are kept as
//! [`StatusEvent::Undecodable`]; nothing from the proxy makes the reader panic.

use protocol::frame::{tokio_io, FrameError};
use protocol::types::NodeId;
use protocol::Message;
use tokio::net::UnixStream;
use tokio::sync::watch;

/// Log entries kept at most; later ones are counted, not stored (other events are always
/// stored), so a chatty proxy cannot exhaust memory.
pub const MAX_LOG_ENTRIES: usize = 10_000;

/// One message from the status channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusEvent {
    /// `status_version`: the version the proxy claims.
    Version(String),
    /// `status_log`: a line for lightningd's log.
    Log {
        /// Log level (0 io .. 5 broken, as in Core Lightning).
        level: u8,
        /// The peer the line is about, if any.
        peer: Option<NodeId>,
        /// The line.
        entry: String,
    },
    /// `status_fail`: the proxy is about to exit.
    Fail {
        /// Core Lightning's `status_failreason` (0 master I/O, 3 internal error, ...).
        reason: u8,
        /// Why.
        message: String,
    },
    /// `hsmstatus_client_bad_request`: a client was closed for a bad request.
    ClientBadRequest {
        /// The client's peer id (from its `hsmd_client_hsmfd`).
        node_id: NodeId,
        /// What was wrong (a refusal names the policy rule).
        description: String,
        /// The offending request.
        request: Vec<u8>,
    },
    /// A well-formed message of a type not expected on this channel.
    Other(Vec<u8>),
    /// A message that does not decode.
    Undecodable {
        /// The bytes.
        msg: Vec<u8>,
        /// Why.
        error: String,
    },
}

impl StatusEvent {
    fn from_msg(msg: Vec<u8>) -> StatusEvent {
        match Message::decode(&msg) {
            Ok(Message::StatusVersion(v)) => StatusEvent::Version(v.version.to_string_lossy()),
            Ok(Message::StatusLog(l)) => StatusEvent::Log {
                level: l.level,
                peer: l.peer,
                entry: l.entry.to_string_lossy(),
            },
            Ok(Message::StatusFail(f)) => StatusEvent::Fail {
                reason: f.failreason,
                message: f.desc.to_string_lossy(),
            },
            Ok(Message::ClientBadRequest(b)) => StatusEvent::ClientBadRequest {
                node_id: b.id,
                description: b.description.to_string_lossy(),
                request: b.msg,
            },
            Ok(_) => StatusEvent::Other(msg),
            Err(e) => StatusEvent::Undecodable {
                error: e.to_string(),
                msg,
            },
        }
    }
}

/// How the status channel ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusEnd {
    /// EOF: the proxy closed it (normally because it exited).
    Eof,
    /// A framing or socket error.
    Error(String),
}

/// Everything seen on the status channel so far.
#[derive(Clone, Debug, Default)]
pub struct StatusState {
    /// The events, in order of arrival. Their indices never change.
    pub events: Vec<StatusEvent>,
    /// Log entries that arrived after [`MAX_LOG_ENTRIES`] and were not stored.
    pub dropped_logs: u64,
    /// Set once the channel ended.
    pub end: Option<StatusEnd>,
}

/// The status messages of one proxy process, filled by a reader task.
#[derive(Clone, Debug)]
pub struct StatusLog {
    state: watch::Receiver<StatusState>,
}

impl StatusLog {
    /// Starts the reader task on `sock` (our end of the proxy's fd 0). Must be called within
    /// a tokio runtime; the task ends with the channel.
    pub fn start(mut sock: UnixStream) -> StatusLog {
        let (tx, rx) = watch::channel(StatusState::default());
        tokio::spawn(async move {
            let mut logs = 0usize;
            loop {
                let (ev, end) = match tokio_io::read(&mut sock).await {
                    Ok(Some(msg)) => (Some(StatusEvent::from_msg(msg)), None),
                    Ok(None) => (None, Some(StatusEnd::Eof)),
                    Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        (None, Some(StatusEnd::Eof))
                    }
                    Err(e) => (None, Some(StatusEnd::Error(e.to_string()))),
                };
                if let Some(StatusEvent::Log { level, entry, .. }) = &ev {
                    log::debug!("hsmd status log [{level}]: {entry}");
                }
                let stop = end.is_some();
                tx.send_modify(|s| {
                    if let Some(ev) = ev {
                        if matches!(ev, StatusEvent::Log { .. }) {
                            logs += 1;
                            if logs > MAX_LOG_ENTRIES {
                                s.dropped_logs += 1;
                                return;
                            }
                        }
                        s.events.push(ev);
                    }
                    if end.is_some() {
                        s.end = end;
                    }
                });
                if stop {
                    return;
                }
            }
        });
        StatusLog { state: rx }
    }

    /// A copy of everything seen so far.
    pub fn snapshot(&self) -> StatusState {
        self.state.borrow().clone()
    }

    /// The events so far.
    pub fn events(&self) -> Vec<StatusEvent> {
        self.state.borrow().events.clone()
    }

    /// How many events have arrived: an index to wait for later events from.
    pub fn mark(&self) -> usize {
        self.state.borrow().events.len()
    }

    /// The version from `status_version`, if it was the first message.
    pub fn version(&self) -> Option<String> {
        match self.state.borrow().events.first() {
            Some(StatusEvent::Version(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// The last `status_fail` (reason, message), if any.
    pub fn failure(&self) -> Option<(u8, String)> {
        self.state
            .borrow()
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                StatusEvent::Fail { reason, message } => Some((*reason, message.clone())),
                _ => None,
            })
    }

    /// Every `hsmstatus_client_bad_request` so far, as events.
    pub fn bad_requests(&self) -> Vec<StatusEvent> {
        let s = self.state.borrow();
        s.events
            .iter()
            .filter(|e| matches!(e, StatusEvent::ClientBadRequest { .. }))
            .cloned()
            .collect()
    }

    /// How the channel ended, if it did.
    pub fn end(&self) -> Option<StatusEnd> {
        self.state.borrow().end.clone()
    }

    /// Waits for the first event at index `since` or later for which `pred` is true and
    /// returns it with its index; `None` if the channel ends without one. Wrap it in a
    /// timeout: the proxy may never send it.
    pub async fn wait_for(
        &self,
        since: usize,
        mut pred: impl FnMut(&StatusEvent) -> bool,
    ) -> Option<(usize, StatusEvent)> {
        let mut rx = self.state.clone();
        let mut found = None;
        let _ = rx
            .wait_for(|s| {
                found = s
                    .events
                    .iter()
                    .enumerate()
                    .skip(since)
                    .find(|(_, e)| pred(e))
                    .map(|(i, e)| (i, e.clone()));
                found.is_some() || s.end.is_some()
            })
            .await;
        found
    }

    /// Waits until the channel ends (the proxy closed fd 0, normally by exiting).
    pub async fn wait_end(&self) -> StatusEnd {
        let mut rx = self.state.clone();
        let end = match rx.wait_for(|s| s.end.is_some()).await {
            Ok(s) => s.end.clone().unwrap_or(StatusEnd::Eof),
            Err(_) => StatusEnd::Eof,
        };
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::msgs::{ClientBadRequest, StatusFail, StatusVersion};
    use protocol::types::WireString;

    #[tokio::test]
    async fn collects_and_waits() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let log = StatusLog::start(a);
        let v = StatusVersion::new(WireString::from("v26.06.6"))
            .encode()
            .unwrap();
        tokio_io::write(&mut b, &v).await.unwrap();
        let id = NodeId::from_bytes([2; 33]);
        let br = ClientBadRequest::new(id, WireString::from("permission"), vec![0, 1]);
        tokio_io::write(&mut b, &br.encode().unwrap())
            .await
            .unwrap();
        tokio_io::write(&mut b, &[0xff]).await.unwrap();
        let (i, e) = log
            .wait_for(0, |e| matches!(e, StatusEvent::ClientBadRequest { .. }))
            .await
            .unwrap();
        assert_eq!(i, 1);
        assert!(
            matches!(e, StatusEvent::ClientBadRequest { description, .. } if description == "permission")
        );
        assert_eq!(log.version().as_deref(), Some("v26.06.6"));
        let f = StatusFail::new(3, WireString::from("bye"))
            .encode()
            .unwrap();
        tokio_io::write(&mut b, &f).await.unwrap();
        drop(b);
        assert_eq!(log.wait_end().await, StatusEnd::Eof);
        assert_eq!(log.failure(), Some((3, "bye".into())));
        assert!(matches!(log.events()[2], StatusEvent::Undecodable { .. }));
        assert!(log.wait_for(4, |_| true).await.is_none());
    }
}
