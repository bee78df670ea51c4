//! Passing a client's socket to lightningd: `SCM_RIGHTS` with one 0x00 data byte, as Core
//! Lightning's `fdpass_send` does.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use protocol::socket::WriteHalf;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};

/// Sends `fd` over `sock`.
pub async fn send_fd(sock: &WriteHalf, fd: RawFd) -> io::Result<()> {
    sock.write_with(|s| {
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&[0u8])];
        sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(io::Error::from)
    })
    .await
    .map(|_| ())
}
