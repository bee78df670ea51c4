//! An hsmd fd (a unix stream socket) on tokio that wakes its task only when there is
//! something to read.
//!
//! `tokio::net::UnixStream` registers every socket for readable *and* writable readiness.
//! On a unix socket, each read by the peer frees send-buffer space and the kernel then
//! signals the writer's epoll, so every request/reply round trip wakes both processes one
//! extra time for a writability nobody waits for. hsmd traffic is one small message each
//! way, so those spurious wake-ups were a large share of a round trip's cost.
//!
//! [`HsmdSocket`] registers the socket for reads only. Writes go straight to the
//! non-blocking socket; only when one would block (the peer stopped reading and the buffer is
//! full) is a duplicate of the descriptor registered for writability, until a write goes
//! through again. Core Lightning's own `io_loop` polls for writability the same way: only
//! while it has something it could not write.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A unix stream socket, registered with tokio for reads only. Must be created within a
/// tokio runtime.
#[derive(Debug)]
pub struct HsmdSocket {
    read: ReadHalf,
    write: WriteHalf,
}

/// The reading half of an [`HsmdSocket`].
#[derive(Debug)]
pub struct ReadHalf {
    io: Arc<AsyncFd<StdUnixStream>>,
}

/// The writing half of an [`HsmdSocket`].
#[derive(Debug)]
pub struct WriteHalf {
    io: Arc<AsyncFd<StdUnixStream>>,
    /// While a write would block: a duplicate of the descriptor, registered for writability.
    waiter: Option<AsyncFd<OwnedFd>>,
}

impl HsmdSocket {
    /// Takes over `sock` (made non-blocking here).
    pub fn new(sock: StdUnixStream) -> io::Result<HsmdSocket> {
        sock.set_nonblocking(true)?;
        // SAFETY: `sock` owns its descriptor, which stays open and unchanged until the
        // `AsyncFd` (its owner from here on) is dropped.
        let io = Arc::new(unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }?);
        Ok(HsmdSocket {
            read: ReadHalf { io: io.clone() },
            write: WriteHalf { io, waiter: None },
        })
    }

    /// Takes over a descriptor that is a unix stream socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<HsmdSocket> {
        HsmdSocket::new(StdUnixStream::from(fd))
    }

    /// A connected pair: this end, and the other end as a plain *blocking* socket (the end
    /// handed to another process, which reads and writes it synchronously as Core
    /// Lightning's subdaemons do).
    pub fn pair() -> io::Result<(HsmdSocket, StdUnixStream)> {
        let (ours, theirs) = StdUnixStream::pair()?;
        Ok((HsmdSocket::new(ours)?, theirs))
    }

    /// Splits into halves that can be used from different tasks. The socket closes when
    /// both are dropped.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }

    /// The reading half.
    pub fn reader(&self) -> &ReadHalf {
        &self.read
    }

    /// The writing half.
    pub fn writer(&self) -> &WriteHalf {
        &self.write
    }
}

impl AsRawFd for HsmdSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.read.io.as_raw_fd()
    }
}

fn is_retry(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl ReadHalf {
    /// Waits until the socket is readable and runs `f` on it (e.g. a `recvmsg` for a passed
    /// descriptor); again, after waiting, whenever `f` fails with `WouldBlock`.
    pub async fn read_with<R>(
        &self,
        mut f: impl FnMut(&StdUnixStream) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            let mut guard = self.io.readable().await?;
            match guard.try_io(|io| f(io.get_ref())) {
                Ok(Err(e)) if is_retry(&e) => continue,
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|io| io.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if is_retry(&e) => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl WriteHalf {
    /// Runs `f` on the socket (e.g. a `sendmsg` passing a descriptor); when it fails with
    /// `WouldBlock`, waits until the socket is writable and runs it again.
    pub async fn write_with<R>(
        &self,
        mut f: impl FnMut(&StdUnixStream) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut waiter: Option<AsyncFd<OwnedFd>> = None;
        loop {
            match f(self.io.get_ref()) {
                Err(e) if is_retry(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if waiter.is_none() {
                        waiter = Some(self.write_waiter()?);
                    }
                    if let Some(w) = &waiter {
                        w.writable().await?.clear_ready();
                    }
                }
                r => return r,
            }
        }
    }

    /// Stops writing: the peer reads EOF.
    pub fn shutdown(&self) -> io::Result<()> {
        self.io.get_ref().shutdown(Shutdown::Write)
    }

    fn write_waiter(&self) -> io::Result<AsyncFd<OwnedFd>> {
        let dup = self.io.get_ref().as_fd().try_clone_to_owned()?;
        // SAFETY: `dup` owns its descriptor, which stays open and unchanged until the
        // `AsyncFd` (its owner from here on) is dropped.
        Ok(unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }?)
    }
}

impl AsRawFd for WriteHalf {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.io.get_ref().write(buf) {
                Ok(n) => {
                    // Writable again: stop listening for writability.
                    self.waiter = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if is_retry(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.waiter.is_none() {
                        self.waiter = Some(self.write_waiter()?);
                    }
                    if let Some(w) = &self.waiter {
                        ready!(w.poll_write_ready(cx))?.clear_ready();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown())
    }
}

impl AsyncRead for HsmdSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for HsmdSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tokio_io;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn frames_both_ways_and_eof() {
        let (mut a, theirs) = HsmdSocket::pair().unwrap();
        let mut b = HsmdSocket::new(theirs).unwrap();
        tokio_io::write(&mut a, b"\x00\x01hello").await.unwrap();
        assert_eq!(
            tokio_io::read(&mut b).await.unwrap().unwrap(),
            b"\x00\x01hello"
        );
        tokio_io::write(&mut b, b"\x00\x02").await.unwrap();
        assert_eq!(tokio_io::read(&mut a).await.unwrap().unwrap(), b"\x00\x02");
        let (_, wr) = a.into_split();
        wr.shutdown().unwrap();
        assert!(tokio_io::read(&mut b).await.unwrap().is_none());
    }

    #[test]
    fn the_other_end_of_a_pair_blocks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (ours, theirs) = HsmdSocket::pair().unwrap();
        const O_NONBLOCK: u32 = 0o4000;
        assert_eq!(
            fd_flags(theirs.as_raw_fd()) & O_NONBLOCK,
            0,
            "passed end non-blocking"
        );
        assert_ne!(
            fd_flags(ours.as_raw_fd()) & O_NONBLOCK,
            0,
            "our end blocking"
        );
    }

    /// A descriptor's status flags, from /proc.
    fn fd_flags(fd: RawFd) -> u32 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
        u32::from_str_radix(line.trim_start_matches("flags:").trim(), 8).unwrap()
    }

    #[tokio::test]
    async fn a_full_buffer_waits_and_then_completes() {
        let (a, theirs) = HsmdSocket::pair().unwrap();
        let (_, mut wr) = a.into_split();
        let mut b = HsmdSocket::new(theirs).unwrap();
        // Far more than a unix socket buffers: the writer must wait for the reader.
        let big = vec![0x5au8; 4 * 1024 * 1024];
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                tokio::io::AsyncWriteExt::write_all(&mut wr, &big)
                    .await
                    .unwrap();
                wr.shutdown().unwrap();
            })
        };
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, big);
    }
}
