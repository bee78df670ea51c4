//! Asking the proxy: one `vls_check_request` on its plugin socket, one reply.

use protocol::frame::tokio_io;
use protocol::msgs::{VlsCheckRequest, VlsCheckRequestReply};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

/// The environment variable the proxy and the plugin both read for the socket's path.
pub const ENV: &str = "VLS_PLUGIN_SOCKET";
/// The socket's name in lightningd's network directory (where lightningd runs the proxy).
pub const DEFAULT_NAME: &str = "vls-proxy.sock";

/// Where the proxy's socket is: `env` ([`ENV`]) if set, taken relative to `network_dir` (the
/// proxy's working directory) unless absolute; else [`DEFAULT_NAME`] there. `None` when
/// `env` is empty (the proxy serves no socket then).
pub fn socket_path(network_dir: &Path, env: Option<OsString>) -> Option<PathBuf> {
    match env {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(network_dir.join(p)),
        None => Some(network_dir.join(DEFAULT_NAME)),
    }
}

/// Asks the proxy at `socket` whether the signer would sign `request` (a whole hsmd request).
///
/// # Errors
/// When the proxy cannot be reached or answers something else than a check reply.
pub async fn ask(socket: &Path, request: Vec<u8>) -> Result<VlsCheckRequestReply, String> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to the proxy at {}: {e}", socket.display()))?;
    let check = VlsCheckRequest::new(request)
        .encode()
        .map_err(|e| format!("encoding the check: {e}"))?;
    tokio_io::write(&mut s, &check)
        .await
        .map_err(|e| format!("writing to the proxy: {e}"))?;
    let reply = tokio_io::read(&mut s)
        .await
        .map_err(|e| format!("reading from the proxy: {e}"))?
        .ok_or("the proxy closed the connection without answering")?;
    VlsCheckRequestReply::decode(&reply).map_err(|e| format!("the proxy's answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::check::refusal;

    #[test]
    fn the_socket_is_in_the_network_directory_unless_absolute() {
        let dir = Path::new("/ln/regtest");
        assert_eq!(
            socket_path(dir, None),
            Some(PathBuf::from("/ln/regtest/vls-proxy.sock"))
        );
        assert_eq!(
            socket_path(dir, Some("/run/vls.sock".into())),
            Some(PathBuf::from("/run/vls.sock"))
        );
        assert_eq!(
            socket_path(dir, Some("x.sock".into())),
            Some(PathBuf::from("/ln/regtest/x.sock"))
        );
        assert_eq!(socket_path(dir, Some("".into())), None);
    }

    #[tokio::test]
    async fn one_check_one_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let m = tokio_io::read(&mut s).await.unwrap().unwrap();
            let check = VlsCheckRequest::decode(&m).unwrap();
            let reply = refusal("some-rule", &hex::encode(&check.request));
            tokio_io::write(&mut s, &reply.encode().unwrap())
                .await
                .unwrap();
        });
        let got = ask(&path, vec![0, 7, 1]).await.unwrap();
        assert!(!got.ok);
        assert_eq!(got.rule.as_str(), Some("some-rule"));
        assert_eq!(got.detail.as_str(), Some("000701"));
        server.await.unwrap();
        // Nobody there: an error, not a hang.
        let err = ask(&dir.path().join("none.sock"), vec![0, 7])
            .await
            .unwrap_err();
        assert!(err.contains("connecting"), "{err}");
    }
}
