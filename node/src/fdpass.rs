//! Receiving a client's socket from the proxy: `SCM_RIGHTS` with one data byte, as Core
//! Lightning's `fdpass_recv` expects it after `hsmd_client_hsmfd_reply`.
//!
//! The received descriptor is close-on-exec (`MSG_CMSG_CLOEXEC`), so it never leaks into
//! processes this one starts later. Extra descriptors (a confused or hostile sender) are
//! closed, never kept.

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use protocol::socket::ReadHalf;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What one `recvmsg` for a passed descriptor gave.
#[derive(Debug)]
pub enum FdRecv {
    /// The descriptor.
    Fd(OwnedFd),
    /// The socket was closed before the data byte arrived.
    Eof,
    /// The data byte arrived without a descriptor (or with a truncated control message).
    NoFd,
}

/// Waits for the one-byte message that carries a descriptor on `sock` and returns it.
///
/// Must only be called when the next byte on the stream is that data byte: any other byte
/// would be consumed.
pub async fn recv_fd(sock: &ReadHalf) -> io::Result<FdRecv> {
    sock.read_with(|s| recv_once(s.as_raw_fd())).await
}

fn recv_once(fd: RawFd) -> io::Result<FdRecv> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    // Room for a few descriptors, so that extra ones are received (and closed) rather than
    // truncated away.
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY: the kernel just installed `r` in our table for us; nothing else
                    // owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(FdRecv::Eof);
    }
    if truncated || fds.len() != 1 {
        // Dropping `fds` closes whatever did arrive.
        return Ok(FdRecv::NoFd);
    }
    Ok(FdRecv::Fd(fds.remove(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::IoSlice;

    use protocol::socket::HsmdSocket;

    #[tokio::test]
    async fn receives_a_passed_socket() {
        let (b, a) = HsmdSocket::pair().unwrap();
        let b = b.into_split().0;
        let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
        let fds = [x.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert!(matches!(recv_fd(&b).await.unwrap(), FdRecv::Fd(_)));
    }

    #[tokio::test]
    async fn byte_without_fd_and_eof() {
        let (b, a) = HsmdSocket::pair().unwrap();
        let b = b.into_split().0;
        std::io::Write::write_all(&mut &a, &[0]).unwrap();
        assert!(matches!(recv_fd(&b).await.unwrap(), FdRecv::NoFd));
        drop(a);
        assert!(matches!(recv_fd(&b).await.unwrap(), FdRecv::Eof));
    }
}
