//! One hsmd client connection: lightningd's own fd 3 (the master) or a client fd handed out
//! by `hsmd_client_hsmfd`.
//!
//! hsmd serves each fd strictly in order: one request, one reply. [`HsmClient::request`]
//! sends a framed request and waits for the framed reply. A reader task owns the read side:
//! it reads frames as they come and, on the master, receives the descriptor that follows a
//! `hsmd_client_hsmfd_reply` before it reads anything else, so that the passed socket is
//! never lost to an ordinary read.
//!
//! Requests are cancel-safe in the way that matters: if a caller gives up waiting for a reply
//! (a timeout), the next request first discards that late reply, so replies never get paired
//! with the wrong request. Nothing here panics on bytes from the proxy: bad framing, a reply
//! that does not decode, or a missing descriptor are [`ClientError`]s.

use crate::fdpass::{recv_fd, FdRecv};
use protocol::frame::{tokio_io, FrameError};
use protocol::msgs::ClientHsmfdReply;
use protocol::socket::{HsmdSocket, ReadHalf, WriteHalf};
use protocol::types::NodeId;
use protocol::{DecodeError, EncodeError, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

/// Why a request on a client got no (usable) reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The proxy closed this client (EOF or reset) without replying: it refused the request,
    /// replaced the client, or exited.
    #[error("the proxy closed this client without replying")]
    Closed,
    /// The proxy sent bytes that are not a valid frame (too long, truncated).
    #[error("bad frame from the proxy: {0}")]
    Frame(#[source] FrameError),
    /// The socket failed.
    #[error("client socket: {0}")]
    Io(#[from] io::Error),
    /// The request could not be encoded.
    #[error("cannot encode {request}: {source}")]
    Encode {
        /// The request's name.
        request: &'static str,
        /// Why.
        #[source]
        source: EncodeError,
    },
    /// The reply has another type than the request's reply.
    #[error("{request} was answered with message type {reply_type:?}, expected {expected}")]
    UnexpectedReply {
        /// The request's name.
        request: &'static str,
        /// The reply type expected.
        expected: u16,
        /// The type that came (`None` for a reply shorter than 2 bytes).
        reply_type: Option<u16>,
    },
    /// The reply has the right type but does not decode.
    #[error("reply to {request} does not decode: {source}")]
    BadReply {
        /// The request's name.
        request: &'static str,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// `hsmd_client_hsmfd` was answered, but no descriptor followed.
    #[error("hsmd_client_hsmfd_reply came without a passed descriptor")]
    MissingFd,
    /// `hsmd_init` was answered with `hsmd_init_reply_failure`.
    #[error("hsmd_init failed (code {code}): {message}")]
    InitFailed {
        /// The error code.
        code: u32,
        /// The message.
        message: String,
    },
}

/// Who a client is: the identity and permissions it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The peer (or our own node id for global clients); `None` for the master.
    pub peer_id: Option<NodeId>,
    /// The channel's database id (0 for the master and global clients).
    pub dbid: u64,
    /// What the client may ask.
    pub permissions: Permissions,
}

impl ClientInfo {
    /// The master client: lightningd's fd 3.
    pub const MASTER: ClientInfo = ClientInfo {
        peer_id: None,
        dbid: 0,
        permissions: Permissions::LIGHTNINGD,
    };
}

/// A reply as it came off the socket, with the descriptor that followed it (only after a
/// `hsmd_client_hsmfd_reply` on the master).
#[derive(Debug)]
pub struct RawReply {
    /// The message (type + body).
    pub msg: Vec<u8>,
    /// The passed descriptor, if one followed.
    pub fd: Option<OwnedFd>,
}

/// What the reader task hands over.
#[derive(Debug)]
enum Incoming {
    Frame(RawReply),
    /// A `hsmd_client_hsmfd_reply` whose descriptor never came.
    FrameMissingFd,
    Closed,
    Failed(ClientError),
}

struct Conn {
    writer: WriteHalf,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// Replies owed to requests whose callers stopped waiting.
    pending: usize,
    /// Set once the end was seen; later requests fail at once.
    closed: bool,
    /// Shared with [`HsmClient::is_closed`].
    closed_flag: Arc<AtomicBool>,
}

/// A connection to the proxy on one hsmd fd.
///
/// Dropping it closes the socket (the proxy then forgets the client; on the master, the
/// proxy exits as hsmd does when lightningd goes away).
pub struct HsmClient {
    info: ClientInfo,
    conn: Mutex<Conn>,
    reader: JoinHandle<()>,
    /// Mirrors `Conn::closed`, readable without the lock.
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for HsmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmClient")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Our end of a test's `tokio::net::UnixStream::pair`, as a client socket.
#[cfg(test)]
pub(crate) fn test_socket(sock: tokio::net::UnixStream) -> HsmdSocket {
    HsmdSocket::new(sock.into_std().unwrap()).unwrap()
}

fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

fn frame_error(e: FrameError) -> Incoming {
    match e {
        FrameError::Io(e) if is_closed_error(&e) => Incoming::Closed,
        FrameError::Io(e) => Incoming::Failed(ClientError::Io(e)),
        e => Incoming::Failed(ClientError::Frame(e)),
    }
}

/// The read side of a client: the socket itself on the master, which receives descriptors
/// (a buffered read could swallow the byte that carries one), buffered elsewhere (one read
/// per reply).
trait FrameSource: tokio::io::AsyncRead + Unpin + Send + 'static {
    /// The socket to receive a descriptor on, if this side takes them.
    fn fd_socket(&self) -> Option<&ReadHalf>;
}

impl FrameSource for ReadHalf {
    fn fd_socket(&self) -> Option<&ReadHalf> {
        Some(self)
    }
}

impl FrameSource for tokio::io::BufReader<ReadHalf> {
    fn fd_socket(&self) -> Option<&ReadHalf> {
        None
    }
}

/// Room for any ordinary reply in one read; longer ones are read through.
const READ_BUFFER: usize = 1024;

/// Reads frames until the end; on a side that takes descriptors, a
/// `hsmd_client_hsmfd_reply` is followed by receiving its descriptor.
async fn read_loop(mut rd: impl FrameSource, tx: mpsc::UnboundedSender<Incoming>) {
    loop {
        let ev = match tokio_io::read(&mut rd).await {
            Ok(None) => Incoming::Closed,
            Err(e) => frame_error(e),
            Ok(Some(msg)) => {
                let is_hsmfd_reply = msg.get(..2) == Some(&ClientHsmfdReply::TYPE.to_be_bytes());
                match rd.fd_socket().filter(|_| is_hsmfd_reply) {
                    Some(sock) => match recv_fd(sock).await {
                        Ok(FdRecv::Fd(fd)) => Incoming::Frame(RawReply { msg, fd: Some(fd) }),
                        Ok(FdRecv::Eof | FdRecv::NoFd) => Incoming::FrameMissingFd,
                        Err(e) if is_closed_error(&e) => Incoming::FrameMissingFd,
                        Err(e) => Incoming::Failed(ClientError::Io(e)),
                    },
                    None => Incoming::Frame(RawReply { msg, fd: None }),
                }
            }
        };
        let end = !matches!(ev, Incoming::Frame(_));
        if tx.send(ev).is_err() || end {
            // After a missing descriptor the stream is out of step: treat it as the end
            // (the caller is told, and the next read would see the EOF anyway).
            if end {
                let _ = tx.send(Incoming::Closed);
            }
            return;
        }
    }
}

impl HsmClient {
    /// A client over `sock`. `takes_fds` is true for the master, which receives the
    /// descriptors of new clients. Must be called within a tokio runtime.
    pub fn new(sock: HsmdSocket, info: ClientInfo, takes_fds: bool) -> HsmClient {
        let (rd, wr) = sock.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = if takes_fds {
            tokio::spawn(read_loop(rd, tx))
        } else {
            tokio::spawn(read_loop(
                tokio::io::BufReader::with_capacity(READ_BUFFER, rd),
                tx,
            ))
        };
        let closed = Arc::new(AtomicBool::new(false));
        let conn = Conn {
            writer: wr,
            incoming: rx,
            pending: 0,
            closed: false,
            closed_flag: closed.clone(),
        };
        HsmClient {
            info,
            conn: Mutex::new(conn),
            reader,
            closed,
        }
    }

    /// A client over a descriptor passed by the proxy.
    pub fn from_fd(fd: OwnedFd, info: ClientInfo) -> Result<HsmClient, ClientError> {
        Ok(HsmClient::new(HsmdSocket::from_fd(fd)?, info, false))
    }

    /// The identity and permissions this client was created with.
    pub fn info(&self) -> &ClientInfo {
        &self.info
    }

    /// Whether a request already found this client closed by the proxy (every later
    /// request fails with [`ClientError::Closed`] at once).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends `msg` (type + body, no length prefix) and returns the reply (type + body).
    ///
    /// # Errors
    /// [`ClientError::Closed`] if the proxy closed the client instead of replying;
    /// [`ClientError::Frame`] / [`ClientError::Io`] if the socket failed.
    pub async fn request(&self, msg: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(self.request_raw(msg).await?.msg)
    }

    /// Sends `msg` that gets no reply (lightningd's `hsmd_dev_preinit`).
    ///
    /// # Errors
    /// [`ClientError::Closed`] or [`ClientError::Io`] if the socket failed.
    pub async fn send_without_reply(&self, msg: &[u8]) -> Result<(), ClientError> {
        let mut conn = self.conn.lock().await;
        if conn.closed {
            return Err(ClientError::Closed);
        }
        tokio_io::write(&mut conn.writer, msg).await.map_err(|e| {
            if is_closed_error(&e) {
                conn.set_closed();
                ClientError::Closed
            } else {
                ClientError::Io(e)
            }
        })
    }

    /// Like [`HsmClient::request`], but also returns the descriptor passed after the reply
    /// (only a `hsmd_client_hsmfd` request on the master gets one).
    ///
    /// A reply of type `hsmd_client_hsmfd_reply` on the master whose descriptor did not come
    /// is [`ClientError::MissingFd`].
    pub async fn request_raw(&self, msg: &[u8]) -> Result<RawReply, ClientError> {
        let mut conn = self.conn.lock().await;
        while conn.pending > 0 {
            // A reply that a caller stopped waiting for: discard it.
            let ev = conn.next().await;
            conn.pending -= 1;
            match ev {
                Incoming::Frame(_) => {}
                other => return Err(conn.ended(other)),
            }
        }
        if conn.closed {
            return Err(ClientError::Closed);
        }
        if let Err(e) = tokio_io::write(&mut conn.writer, msg).await {
            if is_closed_error(&e) {
                conn.set_closed();
                return Err(ClientError::Closed);
            }
            return Err(ClientError::Io(e));
        }
        conn.pending += 1;
        let sent = std::time::Instant::now();
        let ev = conn.next().await;
        conn.pending -= 1;
        match ev {
            Incoming::Frame(r) => {
                if let Some(t) = protocol::peek_type(msg) {
                    crate::latency::record(t, sent.elapsed());
                }
                Ok(r)
            }
            other => Err(conn.ended(other)),
        }
    }

    /// Stops sending: the proxy sees EOF on this fd (on the master, hsmd's cue to exit).
    /// Replies already on their way can still be read.
    pub async fn close(&self) -> Result<(), ClientError> {
        let conn = self.conn.lock().await;
        match conn.writer.shutdown() {
            Ok(()) => Ok(()),
            Err(e) if is_closed_error(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Conn {
    async fn next(&mut self) -> Incoming {
        if self.closed {
            return Incoming::Closed;
        }
        self.incoming.recv().await.unwrap_or(Incoming::Closed)
    }

    /// Turns an end-of-stream event into the error for the caller, remembering the end.
    fn set_closed(&mut self) {
        self.closed = true;
        self.closed_flag.store(true, Ordering::Relaxed);
    }

    fn ended(&mut self, ev: Incoming) -> ClientError {
        self.set_closed();
        match ev {
            Incoming::Frame(_) | Incoming::Closed => ClientError::Closed,
            Incoming::FrameMissingFd => ClientError::MissingFd,
            Incoming::Failed(e) => e,
        }
    }
}

impl Drop for HsmClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    #[tokio::test]
    async fn request_reply_and_eof() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = HsmClient::new(crate::client::test_socket(a), ClientInfo::MASTER, false);
        let server = tokio::spawn(async move {
            let req = tokio_io::read(&mut b).await.unwrap().unwrap();
            assert_eq!(req, b"\x00\x01ab");
            tokio_io::write(&mut b, b"\x00\x64cd").await.unwrap();
            let _ = tokio_io::read(&mut b).await.unwrap().unwrap();
            // Close without replying.
        });
        assert_eq!(c.request(b"\x00\x01ab").await.unwrap(), b"\x00\x64cd");
        assert!(matches!(
            c.request(b"\x00\x01").await,
            Err(ClientError::Closed)
        ));
        server.await.unwrap();
        assert!(matches!(
            c.request(b"\x00\x01").await,
            Err(ClientError::Closed)
        ));
    }

    #[tokio::test]
    async fn late_reply_is_discarded() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = HsmClient::new(crate::client::test_socket(a), ClientInfo::MASTER, false);
        let first =
            tokio::time::timeout(std::time::Duration::from_millis(20), c.request(b"\x00\x01"));
        assert!(first.await.is_err());
        let _ = tokio_io::read(&mut b).await.unwrap().unwrap();
        tokio_io::write(&mut b, b"\x00\x64late").await.unwrap();
        let server = tokio::spawn(async move {
            let _ = tokio_io::read(&mut b).await.unwrap().unwrap();
            tokio_io::write(&mut b, b"\x00\x64right").await.unwrap();
            b
        });
        assert_eq!(c.request(b"\x00\x02").await.unwrap(), b"\x00\x64right");
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn oversized_frame_is_an_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = HsmClient::new(crate::client::test_socket(a), ClientInfo::MASTER, false);
        let server = tokio::spawn(async move {
            let _ = tokio_io::read(&mut b).await.unwrap().unwrap();
            b.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
            b
        });
        assert!(matches!(
            c.request(b"\x00\x01").await,
            Err(ClientError::Frame(_))
        ));
        drop(server.await.unwrap());
    }
}
