//! The status channel to lightningd (fd 0): `status_version` first, then log lines,
//! `hsmstatus_client_bad_request` for a client's bad request, and `status_fail` before a
//! fatal exit.
//!
//! It is also where the proxy's own log goes while it runs as lightningd's hsmd: [`Logger`]
//! turns every `log` record into a `status_log` at the matching Core Lightning level, so the
//! operator reads the proxy's lines in lightningd's log (filtered by its `--log-level`), as
//! with hsmd's, instead of on lightningd's stderr.

use protocol::frame::tokio_io;
use protocol::msgs::{ClientBadRequest, StatusFail, StatusLog, StatusVersion};
use protocol::types::{NodeId, WireString};
use protocol::Message;
use std::sync::OnceLock;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};

/// Core Lightning's `enum log_level` (common/status_levels.h), as `status_log` carries it.
pub mod level {
    /// Extra-gory details (`--log-level=trace`).
    pub const TRACE: u8 = 2;
    /// Debugging details.
    pub const DEBUG: u8 = 3;
    /// What is going on.
    pub const INFORM: u8 = 4;
    /// Something strange.
    pub const UNUSUAL: u8 = 5;
    /// Something broken.
    pub const BROKEN: u8 = 6;
}

enum Out {
    Frame(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// The write side of fd 0. Messages are written in the order they were given, by one task; a
/// failed write is logged to stderr, never fatal by itself (lightningd closing fd 0 shows up
/// as EOF on fd 3 too).
pub struct Status {
    tx: mpsc::UnboundedSender<Out>,
}

impl Status {
    /// The status channel over `out`; must be called inside the runtime.
    pub fn new(mut out: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        tokio::spawn(async move {
            let mut broken = false;
            while let Some(o) = rx.recv().await {
                match o {
                    Out::Frame(bytes) if !broken => {
                        if let Err(e) = tokio_io::write(&mut out, &bytes).await {
                            // lightningd closed it: it is stopping, and so are we (EOF on
                            // fd 3); there is nobody left to tell.
                            if e.kind() != std::io::ErrorKind::BrokenPipe {
                                eprintln!("vls-proxy: status channel write failed: {e}");
                            }
                            broken = true;
                        }
                    }
                    Out::Frame(_) => {}
                    Out::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Status { tx }
    }

    fn send(&self, m: Message) {
        match m.encode() {
            Ok(b) => {
                let _ = self.tx.send(Out::Frame(b));
            }
            Err(e) => eprintln!("vls-proxy: cannot encode status message: {e}"),
        }
    }

    /// Waits until everything given so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Out::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// `status_version`: the first message lightningd expects.
    pub fn version(&self, version: &str) {
        self.send(StatusVersion::new(WireString::from(version)).into())
    }

    /// A client sent a bad request (it is closed right after). The message carries at most
    /// 65 535 bytes of the request (its length is a u16): a longer one is truncated, never
    /// dropped, so lightningd always hears of the refusal.
    pub fn bad_request(&self, client: NodeId, description: &str, request: &[u8]) {
        let shown = &request[..request.len().min(usize::from(u16::MAX))];
        let msg = ClientBadRequest::new(client, WireString::from(description), shown.to_vec());
        self.send(msg.into())
    }

    /// The proxy is about to exit because of `reason`/`desc`; returns once it is written.
    pub async fn fail(&self, reason: u8, desc: &str) {
        self.send(StatusFail::new(reason, WireString::from(desc)).into());
        self.flush().await
    }
}

/// Where log records go once the status channel is up.
static STATUS_LOG: OnceLock<mpsc::UnboundedSender<Out>> = OnceLock::new();

/// The proxy's logger: records go to lightningd's log through the status channel once
/// [`Logger::attach`] was called, to stderr before that (and for the proxy's own commands).
/// The proxy's records pass from `max_level` up; other crates' (TLS, HTTP/2) from warnings.
pub struct Logger {
    max_level: log::LevelFilter,
    /// Also write every record to stderr (`VLS_LOG_STDERR`): for harnesses that start the
    /// proxy themselves and read its stderr; lightningd shows only the status channel.
    tee_stderr: bool,
}

impl Logger {
    /// Installs the logger, letting the proxy's records through from `max_level`.
    pub fn install(max_level: log::LevelFilter) {
        let tee_stderr = std::env::var("VLS_LOG_STDERR").is_ok_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "yes" | "true" | "on" | "y"
            )
        });
        let logger = Logger {
            max_level,
            tee_stderr,
        };
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            log::set_max_level(max_level.max(log::LevelFilter::Warn));
        }
    }

    /// From now on, records go to lightningd's log through `status`.
    pub fn attach(status: &Status) {
        let _ = STATUS_LOG.set(status.tx.clone());
    }
}

/// The Core Lightning level of a `log` level.
pub fn cln_level(l: log::Level) -> u8 {
    match l {
        log::Level::Error => level::BROKEN,
        log::Level::Warn => level::UNUSUAL,
        log::Level::Info => level::INFORM,
        log::Level::Debug => level::DEBUG,
        log::Level::Trace => level::TRACE,
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        let ours = m.target().starts_with("vls_proxy") || m.target().starts_with("protocol");
        if ours {
            m.level() <= self.max_level
        } else {
            m.level() <= log::Level::Warn
        }
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = if r.target().starts_with("vls_proxy") {
            r.args().to_string()
        } else {
            format!("{}: {}", r.target(), r.args())
        };
        if self.tee_stderr && STATUS_LOG.get().is_some() {
            eprintln!("vls-proxy {}: {line}", r.level());
        }
        match STATUS_LOG.get() {
            Some(tx) => {
                let m: Message =
                    StatusLog::new(cln_level(r.level()), None, WireString::from(line.as_str()))
                        .into();
                if let Ok(b) = m.encode() {
                    let _ = tx.send(Out::Frame(b));
                }
            }
            None => eprintln!("vls-proxy {}: {line}", r.level()),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_are_written_in_order_and_fail_waits_for_them() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let status = Status::new(a);
        status.version("v26.06.6");
        status.send(
            StatusLog::new(level::UNUSUAL, None, WireString::from("something strange")).into(),
        );
        status.fail(3, "stopping").await;
        drop(status);
        let (mut rd, _w) = b.into_split();
        let first = tokio_io::read(&mut rd).await.unwrap().unwrap();
        assert_eq!(
            StatusVersion::decode(&first)
                .unwrap()
                .version
                .to_string_lossy(),
            "v26.06.6"
        );
        let second = tokio_io::read(&mut rd).await.unwrap().unwrap();
        let log = StatusLog::decode(&second).unwrap();
        assert_eq!(log.level, 5);
        assert_eq!(log.entry.to_string_lossy(), "something strange");
        let third = tokio_io::read(&mut rd).await.unwrap().unwrap();
        assert_eq!(
            StatusFail::decode(&third).unwrap().desc.to_string_lossy(),
            "stopping"
        );
    }

    #[tokio::test]
    async fn a_bad_request_too_long_for_the_status_message_is_truncated_not_dropped() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let status = Status::new(a);
        let huge = vec![7u8; 70_000];
        let id = NodeId::from_bytes([2; 33]);
        status.bad_request(id, "policy x: y", &huge);
        status.flush().await;
        drop(status);
        let (mut rd, _w) = b.into_split();
        let m = tokio_io::read(&mut rd).await.unwrap().unwrap();
        let bad = ClientBadRequest::decode(&m).unwrap();
        assert_eq!(bad.description.to_string_lossy(), "policy x: y");
        assert_eq!(bad.msg.len(), 65_535);
    }

    #[test]
    fn levels_are_core_lightnings() {
        assert_eq!(cln_level(log::Level::Error), 6);
        assert_eq!(cln_level(log::Level::Warn), 5);
        assert_eq!(cln_level(log::Level::Info), 4);
        assert_eq!(cln_level(log::Level::Debug), 3);
        assert_eq!(cln_level(log::Level::Trace), 2);
    }
}
