//! Passing a client's socket to lightningd: `SCM_RIGHTS` with one 0x00 data byte, as Core
//! Lightning's `fdpass_send` does.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Sends `fd` over `sock`.
pub async fn send_fd(sock: &UnixStream, fd: RawFd) -> io::Result<()> {
    loop {
        sock.writable().await?;
        let res = sock.try_io(Interest::WRITABLE, || {
            let fds = [fd];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(&[0u8])];
            sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                .map_err(io::Error::from)
        });
        match res {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
