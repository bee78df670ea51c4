//! The plugin's socket: where `vls-plugin` (a Core Lightning plugin in lightningd) asks
//! whether the signer would sign a request before lightningd sends it.
//!
//! lightningd's own requests have no error reply, so a refusal of one stops the proxy and
//! lightningd with it. The plugin hooks the commands that lead to such requests (`withdraw`,
//! `txprepare`, `signpsbt`), builds the request lightningd would send, and asks here; a
//! refusal becomes an error of the command, and lightningd stays up. The signer answers it
//! with a dry run of the same handler and policy (`signer::dry_run`).
//!
//! - **Where.** A unix socket at `VLS_PLUGIN_SOCKET`, by default `vls-proxy.sock` in the
//!   working directory (lightningd runs hsmd in `<lightning-dir>/<network>`, so the plugin
//!   finds it there); an empty value serves none. A stale socket left by an earlier run is
//!   replaced; any other file there is left alone, and the socket is not served.
//! - **Who.** The socket is created with mode 0600, and a connection from a process of
//!   another user is closed unanswered.
//! - **What.** hsmd's framing (4-byte big-endian length, then the message). Each frame holds
//!   one `vls_check_request` and is answered with one `vls_check_request_reply`: the signer's,
//!   forwarded as lightningd's own client asks (no request context). Anything else is
//!   answered `bad-request` without reaching the signer.
//! - **Never fatal.** Nothing on this socket can stop the proxy or touch lightningd's fds: a
//!   refusal of the check, a signer that is away (`signer-unavailable` after
//!   [`CHECK_TIMEOUT`]), a malformed or oversized frame (that connection is closed) are all
//!   answered here or logged.
//! - **Bounded.** At most [`MAX_CONNECTIONS`] connections, each closed after
//!   [`IDLE_TIMEOUT`] without a request; frames below [`MAX_FRAME`] bytes (refused from their
//!   length prefix); at most [`MAX_PENDING`] checks waiting for the signer at once (a check
//!   that timed out still waits in the router until a signer answers it, and keeps its slot
//!   until then).

use crate::router::{CallError, Router};
use protocol::check::{refusal, BAD_REQUEST, SIGNER_UNAVAILABLE};
use protocol::frame::tokio_io;
use protocol::msgs::{name_of, VlsCheckRequest, VlsCheckRequestReply};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// The environment variable naming the socket (empty: no socket).
pub const ENV: &str = "VLS_PLUGIN_SOCKET";
/// The socket's path when [`ENV`] is unset, relative to the working directory.
pub const DEFAULT_PATH: &str = "vls-proxy.sock";
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// Checks waiting for the signer at once; more are answered `signer-unavailable` at once.
pub const MAX_PENDING: usize = 8;
/// How long a check waits for the signer's answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection may stay without sending a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames must be shorter than this (a withdrawal's PSBT with its inputs' transactions).
pub const MAX_FRAME: usize = 16 << 20;

/// Serves the plugin's socket (at [`ENV`] or [`DEFAULT_PATH`]) in the background, checking
/// through `router`. A socket that cannot be created is logged, and the proxy goes on
/// without it.
pub fn spawn(router: Arc<Router>) {
    let path = match std::env::var_os(ENV) {
        Some(p) if p.is_empty() => {
            log::info!("{ENV} is empty: no socket for the plugin");
            return;
        }
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(DEFAULT_PATH),
    };
    match bind(&path) {
        Ok(listener) => {
            log::info!("checks for the plugin on {}", path.display());
            tokio::spawn(Checks::new(router).serve(listener));
        }
        Err(e) => log::warn!(
            "no socket for the plugin at {}: {e} (the plugin's checks will not be answered)",
            path.display()
        ),
    }
}

/// Creates the socket at `path` with mode 0600, replacing a stale socket (and nothing else).
fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Nobody else may connect even between bind and chmod. (The umask is the process's; the
    // proxy creates no other file meanwhile.)
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the connections share: the router, and the limits.
struct Checks {
    router: Arc<Router>,
    connections: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    timeout: Duration,
    idle: Duration,
    uid: u32,
}

impl Checks {
    fn new(router: Arc<Router>) -> Arc<Checks> {
        Arc::new(Checks {
            router,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            timeout: CHECK_TIMEOUT,
            idle: IDLE_TIMEOUT,
            uid: nix::unistd::getuid().as_raw(),
        })
    }

    /// Accepts connections until the listener fails for good.
    async fn serve(self: Arc<Self>, listener: UnixListener) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // The permit is taken before accepting: backpressure, not refusal.
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(100);
                    let checks = self.clone();
                    tokio::spawn(async move {
                        checks.connection(stream).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait and try again.
                    log::warn!("plugin socket: accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Answers one connection's frames, one at a time, until it closes, idles or errs.
    async fn connection(&self, mut stream: UnixStream) {
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == self.uid => {}
            Ok(cred) => {
                log::warn!(
                    "plugin socket: closing a connection from uid {} (only uid {} may ask)",
                    cred.uid(),
                    self.uid
                );
                return;
            }
            Err(e) => {
                log::warn!("plugin socket: cannot tell who connected ({e}); closing");
                return;
            }
        }
        loop {
            let frame = match tokio::time::timeout(self.idle, read_frame(&mut stream)).await {
                Err(_) => return,
                Ok(Ok(None)) => return,
                Ok(Ok(Some(frame))) => frame,
                Ok(Err(e)) => {
                    log::info!("plugin socket: closing a connection: {e}");
                    return;
                }
            };
            let reply = self.answer(frame).await;
            if let Err(e) = tokio_io::write(&mut stream, &reply).await {
                log::info!("plugin socket: the plugin left before its answer: {e}");
                return;
            }
        }
    }

    /// The answer to one frame: the signer's reply to a `vls_check_request`, else a refusal
    /// that says why there is none. Never fails.
    async fn answer(&self, frame: Vec<u8>) -> Vec<u8> {
        let reply = match VlsCheckRequest::decode(&frame) {
            Ok(_) => self.forward(frame).await,
            Err(e) => {
                let what = protocol::peek_type(&frame).map_or("an empty frame".to_string(), |t| {
                    format!("{} (type {t})", name_of(t).unwrap_or("an unknown message"))
                });
                log::info!("plugin socket: {what} is not a check: {e}");
                refusal(
                    BAD_REQUEST,
                    &format!(
                        "only {} (type {}) is answered here, not {what}: {e}",
                        VlsCheckRequest::NAME,
                        VlsCheckRequest::TYPE
                    ),
                )
            }
        };
        // A bool and two strings of any length: there is nothing that could fail to encode.
        reply.encode().expect("a check reply always encodes")
    }

    /// Forwards a check to the signer as lightningd's own client, within the limits.
    async fn forward(&self, request: Vec<u8>) -> VlsCheckRequestReply {
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            return refusal(
                SIGNER_UNAVAILABLE,
                &format!("{MAX_PENDING} checks are already waiting for the signer"),
            );
        };
        let router = self.router.clone();
        // Its own task: the router keeps a request until the signer answers it, so its slot
        // is freed only then, even if this check has given up waiting.
        let call = tokio::spawn(async move {
            let outcome = router.call(None, request).await;
            router.metrics.done();
            drop(permit);
            outcome
        });
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => return refusal(SIGNER_UNAVAILABLE, &format!("the check failed: {e}")),
            Err(_) => {
                log::warn!(
                    "plugin socket: no answer from the signer within {:?}",
                    self.timeout
                );
                return refusal(
                    SIGNER_UNAVAILABLE,
                    &format!("no answer from the signer within {:?}", self.timeout),
                );
            }
        };
        match outcome {
            Ok(reply) => match VlsCheckRequestReply::decode(&reply) {
                Ok(r) => r,
                Err(e) => refusal(
                    BAD_REQUEST,
                    &format!("the signer's answer is not a check reply: {e}"),
                ),
            },
            Err(e @ CallError::Refused { .. }) => {
                log::info!("plugin socket: the signer did not answer the check: {e}");
                refusal(BAD_REQUEST, &e.to_string())
            }
            Err(e @ CallError::RetriesExhausted { .. }) => {
                refusal(SIGNER_UNAVAILABLE, &e.to_string())
            }
        }
    }
}

/// Reads one frame of at most [`MAX_FRAME`] bytes (refused from its length prefix, before
/// anything is allocated); `Ok(None)` on a clean end between frames.
async fn read_frame(stream: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len >= MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (the limit is {MAX_FRAME})"),
        ));
    }
    let mut frame = Vec::with_capacity(len.min(64 * 1024));
    stream.take(len as u64).read_to_end(&mut frame).await?;
    if frame.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended inside a frame of {len} bytes"),
        ));
    }
    Ok(Some(frame))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::router::tests::init;
    use crate::router::{Admission, RouterConfig};
    use bitcoin::bip32::{Xpriv, Xpub};
    use bitcoin::secp256k1::{SecretKey, SECP256K1};
    use proto::hsmd::{SignerRequest, SignerResponse};
    use protocol::msgs::{EcdhReq, Init, InitReplyV4, InitReplyV4Tlvs};
    use protocol::types::NodeId;
    use protocol::Message;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    const T: Duration = Duration::from_secs(10);

    /// The node key of [`init_reply`].
    pub(crate) const NODE_KEY: [u8; 32] = [3; 32];

    /// An `hsmd_init_reply_v4` naming the node key [`NODE_KEY`].
    pub(crate) fn init_reply() -> Vec<u8> {
        let key = SecretKey::from_slice(&NODE_KEY).unwrap();
        let xpriv = Xpriv::new_master(bitcoin::Network::Regtest, &[1; 32]).unwrap();
        InitReplyV4::new(
            6,
            vec![],
            NodeId::from_pubkey(&key.public_key(SECP256K1)),
            Xpub::from_priv(SECP256K1, &xpriv),
            key.public_key(SECP256K1),
            InitReplyV4Tlvs::default(),
        )
        .encode()
        .unwrap()
    }

    /// What the test signer saw: each request's message and whether it had a context.
    type Seen = Arc<Mutex<Vec<(Vec<u8>, bool)>>>;

    /// A router whose node sent init, with a test signer on the link that answers every
    /// check with `answer` (an error when it is a string).
    async fn router_with_signer(
        answer: Result<Vec<u8>, String>,
    ) -> (Arc<Router>, Seen, tokio::task::JoinHandle<()>) {
        let router = Router::new(RouterConfig::default(), Arc::new(Metrics::default()));
        let (tx, mut rx) = mpsc::unbounded_channel::<SignerRequest>();
        let Admission::Admitted(stream) = router.admit(tx) else {
            panic!("first stream is admitted")
        };
        let seen: Seen = Arc::default();
        let signer = {
            let (router, seen) = (router.clone(), seen.clone());
            tokio::spawn(async move {
                while let Some(req) = rx.recv().await {
                    seen.lock()
                        .unwrap()
                        .push((req.message.clone(), req.context.is_some()));
                    let mut resp = SignerResponse {
                        request_id: req.request_id,
                        ..Default::default()
                    };
                    if req.message.get(..2) == Some(&Init::TYPE.to_be_bytes()[..]) {
                        resp.message = init_reply();
                    } else {
                        match &answer {
                            Ok(m) => resp.message = m.clone(),
                            Err(e) => resp.error = e.clone(),
                        }
                    }
                    if router.reply(stream, resp).unwrap() {
                        // This fake signer is taken at its word (the server asks for proof).
                        router.ready(stream);
                    }
                }
            })
        };
        tokio::time::timeout(T, router.call(None, init()))
            .await
            .unwrap()
            .unwrap();
        (router, seen, signer)
    }

    fn refused_by(rule: &str) -> Vec<u8> {
        refusal(rule, "output 0 pays a stranger").encode().unwrap()
    }

    async fn ask(path: &Path, frame: &[u8]) -> VlsCheckRequestReply {
        let mut s = UnixStream::connect(path).await.unwrap();
        tokio_io::write(&mut s, frame).await.unwrap();
        let reply = tokio::time::timeout(T, tokio_io::read(&mut s))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        VlsCheckRequestReply::decode(&reply).unwrap()
    }

    fn check_of(inner: &[u8]) -> Vec<u8> {
        VlsCheckRequest::new(inner.to_vec()).encode().unwrap()
    }

    fn serve(router: Arc<Router>, dir: &Path) -> PathBuf {
        let path = dir.join("vls-proxy.sock");
        let listener = bind(&path).unwrap();
        tokio::spawn(Checks::new(router).serve(listener));
        path
    }

    #[tokio::test]
    async fn a_check_goes_to_the_signer_as_lightningds_own_request() {
        let dir = tempfile::tempdir().unwrap();
        let answer = refused_by("onchain-destination-allowlisted");
        let (router, seen, _signer) = router_with_signer(Ok(answer.clone())).await;
        let path = serve(router, dir.path());
        let check = check_of(&[0, 7, 1, 2, 3]);
        let got = ask(&path, &check).await;
        assert_eq!(got.encode().unwrap(), answer);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "init, then the check");
        assert_eq!(
            seen[1],
            (check, false),
            "forwarded unchanged, with no context"
        );
    }

    #[tokio::test]
    async fn anything_but_a_check_is_a_bad_request_that_never_reaches_the_signer() {
        let dir = tempfile::tempdir().unwrap();
        let (router, seen, _signer) = router_with_signer(Ok(refused_by("x"))).await;
        let path = serve(router, dir.path());
        let ecdh = Message::from(EcdhReq::new(
            SecretKey::from_slice(&[5; 32])
                .unwrap()
                .public_key(SECP256K1),
        ))
        .encode()
        .unwrap();
        let truncated_check = vec![0xea, 0xc4, 0, 0, 0, 9, 1];
        for frame in [ecdh, vec![], vec![0xff], truncated_check] {
            let got = ask(&path, &frame).await;
            assert!(!got.ok);
            assert_eq!(got.rule.as_str(), Some(BAD_REQUEST), "{frame:?}");
            assert!(got.detail.to_string_lossy().contains("vls_check_request"));
        }
        assert_eq!(seen.lock().unwrap().len(), 1, "only the node's init");
    }

    #[tokio::test]
    async fn several_checks_on_one_connection_and_garbage_closes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (router, _seen, _signer) = router_with_signer(Ok(refused_by("r"))).await;
        let path = serve(router, dir.path());
        let mut s = UnixStream::connect(&path).await.unwrap();
        for _ in 0..3 {
            tokio_io::write(&mut s, &check_of(&[0, 7])).await.unwrap();
            let r = tokio_io::read(&mut s).await.unwrap().unwrap();
            assert_eq!(r, refused_by("r"));
        }
        // A length prefix far above the limit: that connection is closed...
        let mut bad = UnixStream::connect(&path).await.unwrap();
        use tokio::io::AsyncWriteExt;
        bad.write_all(&[0x07, 0xff, 0xff, 0xff, 1, 2])
            .await
            .unwrap();
        let end = tokio::time::timeout(T, tokio_io::read(&mut bad))
            .await
            .unwrap();
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
        // ...and the others are served as before.
        tokio_io::write(&mut s, &check_of(&[0, 7])).await.unwrap();
        assert_eq!(
            tokio_io::read(&mut s).await.unwrap().unwrap(),
            refused_by("r")
        );
        assert!(ask(&path, &check_of(&[0, 7])).await.rule.as_str() == Some("r"));
    }

    #[tokio::test]
    async fn a_signer_refusing_the_check_itself_is_a_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        let refused = Err("policy permission: only lightningd's own client may send it".into());
        let (router, _seen, _signer) = router_with_signer(refused).await;
        let path = serve(router, dir.path());
        let got = ask(&path, &check_of(&[0, 7])).await;
        assert_eq!(got.rule.as_str(), Some(BAD_REQUEST));
        assert!(got.detail.to_string_lossy().contains("permission"));
    }

    #[tokio::test]
    async fn before_lightningds_init_a_check_is_answered_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(RouterConfig::default(), Arc::new(Metrics::default()));
        let path = serve(router, dir.path());
        let got = ask(&path, &check_of(&[0, 7])).await;
        assert!(!got.ok);
        assert_eq!(got.rule.as_str(), Some(BAD_REQUEST));
        assert!(got.detail.to_string_lossy().contains("not initialized"));
    }

    #[tokio::test]
    async fn a_signer_that_is_away_makes_the_check_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let (router, _seen, signer) = router_with_signer(Ok(refused_by("r"))).await;
        signer.abort();
        // The link is down: checks wait for a signer that does not come back in time.
        router.down(1);
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let mut checks = Checks::new(router);
        Arc::get_mut(&mut checks).unwrap().timeout = Duration::from_millis(200);
        tokio::spawn(checks.serve(listener));
        let got = ask(&path, &check_of(&[0, 7])).await;
        assert_eq!(got.rule.as_str(), Some(SIGNER_UNAVAILABLE));
        // Each timed-out check keeps its slot while it waits in the router.
        for _ in 1..MAX_PENDING {
            ask(&path, &check_of(&[0, 7])).await;
        }
        let got = ask(&path, &check_of(&[0, 7])).await;
        assert_eq!(got.rule.as_str(), Some(SIGNER_UNAVAILABLE));
        assert!(
            got.detail.to_string_lossy().contains("already waiting"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn the_socket_is_private_and_replaces_a_stale_one_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vls-proxy.sock");
        let first = bind(&path).unwrap();
        drop(first);
        // The stale socket of an earlier run is replaced.
        let _second = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A regular file is not ours to remove.
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"keep").unwrap();
        assert!(bind(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }
}
