//! The signer daemon: dials the proxy, answers its requests, and keeps the link up forever.
//!
//! [`run`] opens the node's `hsm_secret` and state database in the data directory, dials the
//! proxy's `Hsmd` service (mutual TLS unless [`LinkSecurity::Plaintext`] is asked for, HTTP/2
//! keepalive always), opens one `SignerStream` and answers every [`SignerRequest`] on it with
//! one [`SignerResponse`] (see [`response`]).
//!
//! - **Ordering and threads.** Requests are handled in order within a channel and in
//!   parallel across channels ([`crate::lanes`]). The link itself (TLS, HTTP/2, the stream)
//!   and the bookkeeping run on one thread, which also answers a lone stateless request
//!   itself; bursts go to a pool of one thread per core, and requests that commit state to
//!   tokio's blocking pool.
//! - **Reconnects.** A dropped link is routine: it is logged and dialled again after an
//!   exponential backoff with jitter ([`Reconnect`]), forever. The backoff starts over once a
//!   stream has stayed up for [`Reconnect::stable_after`].
//! - **Shutdown.** When the `shutdown` future of [`run`] completes, no new request is taken;
//!   requests in flight are answered and committed, the signer's half of the stream is closed,
//!   and [`run`] returns `Ok(())`.
//!
//! Neither requests nor replies are logged (replies can carry secrets, e.g. ECDH results);
//! only request ids, types, lanes and error descriptions are.

use crate::context::ClientContext;
use crate::error::SignerError;
use crate::handler::Signer;
use crate::keys::{Bip32Version, KeyError, KeyManager};
use crate::lanes::{Job, Lanes};
use crate::policy::Policy;
use crate::secret::{HsmSecret, SecretError};
use crate::store::Store;
use bitcoin::secp256k1::PublicKey;
use proto::hsmd::hsmd_client::HsmdClient;
use proto::hsmd::{HsmRequestContext, SignerRequest, SignerResponse};
use proto::keepalive;
use proto::tls::{ClientTls, TlsError, TlsPaths};
use proto::tonic;
use protocol::types::NodeId;
use protocol::Permissions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;
use tonic::Streaming;

/// The root secret's file in the data directory, in any format Core Lightning writes.
pub const HSM_SECRET_FILE: &str = "hsm_secret";
/// The state database's file in the data directory.
pub const STATE_FILE: &str = "state.redb";
/// The default directory of the link's TLS files in the data directory
/// ([`TlsPaths::signer`] layout: `ca.pem`, `signer.pem`, `signer-key.pem`).
pub const TLS_DIR: &str = "tls";

/// The largest gRPC message accepted or sent: an hsmd message is shorter than 2^27 bytes
/// (the framing limit), plus room for the protobuf fields around it.
pub const MAX_MESSAGE_SIZE: usize = proto::MAX_MESSAGE_SIZE;

/// How the link to the proxy is secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkSecurity {
    /// Mutual TLS: the signer presents its certificate and trusts only the link's CA. The
    /// default, and the only choice for a real node.
    MutualTls(TlsPaths),
    /// No TLS at all: for tests, and for peers that cannot do TLS, behind an explicit flag.
    Plaintext,
}

/// When to dial the proxy again after the link dropped or could not be opened.
///
/// The `n`-th consecutive retry waits a random time between half and all of
/// `min(initial_delay * 2^n, max_delay)` ("equal jitter"), so that signers restarted together
/// do not dial in lock step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// The base delay of the first retry (100 ms).
    pub initial_delay: Duration,
    /// The largest base delay (10 s).
    pub max_delay: Duration,
    /// A stream that stayed up this long was a success: the next retry starts again at
    /// `initial_delay` (5 s). A proxy that accepts streams and drops them at once (e.g.
    /// because it refuses this signer's identity) is thus not dialled in a tight loop.
    pub stable_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            stable_after: Duration::from_secs(5),
        }
    }
}

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Holds [`HSM_SECRET_FILE`] (must exist) and [`STATE_FILE`] (created if missing).
    pub data_dir: PathBuf,
    /// The proxy's gRPC address, e.g. `https://proxy.example:7701`; without a scheme,
    /// `https://` is assumed for TLS and `http://` for plaintext.
    pub proxy_url: String,
    /// TLS or not.
    pub security: LinkSecurity,
    /// The policy every request is checked against.
    pub policy: Policy,
    /// The reconnect backoff.
    pub reconnect: Reconnect,
    /// How long a channel's lane may stay idle before it is dropped (60 s).
    pub lane_idle_timeout: Duration,
    /// How long a shutdown waits, after the last in-flight reply, for the proxy to close its
    /// half of the stream (so that the replies are surely on the wire) (2 s).
    pub shutdown_grace: Duration,
    /// A shell command run for every payment queued for the operator (none).
    pub on_approval_request: Option<String>,
    /// Which proxy's decoders the replies are written for (recognised by default).
    pub proxy_compat: ProxyCompat,
}

/// Which proxy the signer answers for. Core Lightning v25 and later append TLVs to
/// `hsmd_init_reply_v4` (the secret's type, the BIP86 base) that the Validating Lightning
/// Signer's proxy does not decode: it refuses the whole reply (`TrailingBytes`) and stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyCompat {
    /// Ours when the proxy names itself in its [`proto::PROXY_HEADER`] response header, the
    /// Validating Lightning Signer's otherwise.
    #[default]
    Auto,
    /// Replies exactly as Core Lightning's hsmd writes them (our proxy).
    CoreLightning,
    /// The init reply without its TLVs, which that proxy's decoder does not know.
    Vls,
}

impl ProxyCompat {
    /// Whether to send the init reply without its TLVs, given whether the proxy named
    /// itself.
    pub fn older_init_reply(self, proxy_named_itself: bool) -> bool {
        match self {
            ProxyCompat::Auto => !proxy_named_itself,
            ProxyCompat::CoreLightning => false,
            ProxyCompat::Vls => true,
        }
    }
}

/// `response` as a proxy that knows only the older init reply can decode it: an
/// `hsmd_init_reply_v4` loses its TLVs; everything else is left as it is.
pub fn for_older_proxy(mut response: SignerResponse) -> SignerResponse {
    use protocol::msgs::InitReplyV4;
    if response.message.get(..2) == Some(&InitReplyV4::TYPE.to_be_bytes()[..]) {
        if let Ok(mut reply) = InitReplyV4::decode(&response.message) {
            reply.tlvs = Default::default();
            if let Ok(bytes) = reply.encode() {
                response.message = bytes;
            }
        }
    }
    response
}

impl DaemonConfig {
    /// A configuration with the default backoff, lane timeout and shutdown grace.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        proxy_url: impl Into<String>,
        security: LinkSecurity,
        policy: Policy,
    ) -> Self {
        DaemonConfig {
            data_dir: data_dir.into(),
            proxy_url: proxy_url.into(),
            security,
            policy,
            reconnect: Reconnect::default(),
            lane_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(2),
            on_approval_request: None,
            proxy_compat: ProxyCompat::Auto,
        }
    }
}

/// Why the daemon could not start. Once it runs, nothing but shutdown ends it.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The `hsm_secret` file cannot be read, or is not in any format Core Lightning writes.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Keys cannot be derived from the secret.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The state database cannot be opened (e.g. another signer has it open).
    #[error("cannot open the state database {}: {error}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        error: SignerError,
    },
    /// The TLS files are missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The worker threads cannot be started.
    #[error("cannot start the worker threads: {0}")]
    Threads(#[source] std::io::Error),
    /// The proxy address is not usable.
    #[error("invalid proxy address {url:?}: {reason}")]
    Url {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Runs the daemon until `shutdown` completes: dials the proxy, answers its requests, and
/// reconnects whenever the link drops. See the [module docs](self).
///
/// # Errors
/// Only for what prevents starting at all: the secret, the database, the TLS files or the
/// proxy address. A link that fails is retried forever; it is never an error.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let endpoint = endpoint(&config.proxy_url, &config.security)?;
    let signer = open_signer(&config.data_dir, config.policy.clone()).await?;
    log::info!(
        "signer ready; dialling the proxy at {} ({})",
        endpoint.uri(),
        match config.security {
            LinkSecurity::MutualTls(_) => "mutual TLS",
            LinkSecurity::Plaintext => "plaintext, no TLS",
        }
    );

    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let signer = Arc::new(signer);
    let admin_path = config.data_dir.join(crate::admin::ADMIN_SOCKET);
    match crate::admin::bind(&admin_path) {
        Ok(l) => {
            tokio::spawn(crate::admin::serve(l, signer.clone()));
        }
        Err(e) => log::warn!(
            "admin socket {}: {e}; `signer approvals` will not work",
            admin_path.display()
        ),
    }
    if let Some(cmd) = &config.on_approval_request {
        tokio::spawn(crate::admin::run_on_queued(signer.clone(), cmd.clone()));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut lanes =
        Lanes::new(signer, config.lane_idle_timeout, threads).map_err(DaemonError::Threads)?;
    let mut backoff = Backoff::new(config.reconnect);
    loop {
        let end = serve_link(
            &endpoint,
            &mut lanes,
            &mut stop,
            config.shutdown_grace,
            config.proxy_compat,
        )
        .await;
        let reason = match end {
            LinkEnd::Shutdown => break,
            LinkEnd::Failed(reason) => reason,
            LinkEnd::Lost { lasted, reason } => {
                if lasted >= config.reconnect.stable_after {
                    backoff.reset();
                }
                format!("link to the proxy lost after {lasted:.1?}: {reason}")
            }
        };
        let delay = backoff.next_delay();
        log::warn!("{reason}; dialling again in {delay:.1?}");
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    // Requests still in flight from a stream that was lost (their replies are dropped, the
    // proxy re-sends them): finish them so that their state is committed.
    lanes.finish().await;
    log::info!("signer stopped");
    Ok(())
}

/// The [`ClientContext`] of a request's context: the master client when there is none.
///
/// # Errors
/// [`SignerError::BadRequest`] when the peer id is not 33 bytes.
pub fn client_context(context: Option<&HsmRequestContext>) -> Result<ClientContext, SignerError> {
    let Some(context) = context else {
        return Ok(ClientContext::master());
    };
    let peer_id: [u8; 33] = context.peer_id.as_slice().try_into().map_err(|_| {
        SignerError::BadRequest(format!(
            "request context has a {}-byte peer id, expected 33",
            context.peer_id.len()
        ))
    })?;
    Ok(ClientContext::client(
        NodeId::from_bytes(peer_id),
        context.dbid,
        Permissions::from_bits(context.capabilities),
    ))
}

/// The response to request `request_id` with this outcome.
///
/// A reply goes in `message`. An error goes in `error` ([`SignerError::description`], never
/// empty); `is_temporary_failure` is set for [`SignerError::Temporary`] and
/// [`SignerError::Storage`] (the proxy retries those), `policy_rule` names the rule of a
/// [`SignerError::Policy`], and `is_fatal` with `fatal_reason` mark a [`SignerError::Fatal`].
pub fn response(request_id: u64, outcome: Result<Vec<u8>, SignerError>) -> SignerResponse {
    let e = match outcome {
        Ok(message) => {
            return SignerResponse {
                request_id,
                message,
                ..Default::default()
            }
        }
        Err(e) => e,
    };
    let mut error = e.description();
    if error.is_empty() {
        // An empty error would read as a successful, empty reply.
        error = "request refused".into();
    }
    let (is_fatal, fatal_reason) = match &e {
        SignerError::Fatal { reason, .. } => (true, u32::from(*reason)),
        _ => (false, 0),
    };
    SignerResponse {
        request_id,
        message: Vec::new(),
        error,
        is_temporary_failure: matches!(
            e,
            SignerError::Temporary(_) | SignerError::Storage(_) | SignerError::Parked { .. }
        ),
        policy_rule: e.rule().unwrap_or_default().to_string(),
        is_fatal,
        fatal_reason,
    }
}

/// The node id of `secret` (the same for every network).
///
/// # Errors
/// [`KeyError`] if keys cannot be derived (probability about 2^-127).
pub fn node_id(secret: &HsmSecret) -> Result<PublicKey, KeyError> {
    Ok(KeyManager::new(secret, Bip32Version::Mainnet)?.node_id())
}

/// The endpoint for `url`: keepalive on, message size limits for hsmd messages, and TLS
/// unless `security` is plaintext. A URL without a scheme gets the scheme of `security`; a
/// scheme that contradicts it is refused.
///
/// # Errors
/// [`DaemonError::Url`] for a bad address, [`DaemonError::Tls`] for unusable TLS files.
pub fn endpoint(url: &str, security: &LinkSecurity) -> Result<Endpoint, DaemonError> {
    let bad = |reason: &str| DaemonError::Url {
        url: url.into(),
        reason: reason.into(),
    };
    let tls = matches!(security, LinkSecurity::MutualTls(_));
    let full = match url.split_once("://") {
        None => format!("{}://{url}", if tls { "https" } else { "http" }),
        Some(("https", _)) if !tls => {
            return Err(bad(
                "https:// needs TLS; drop the plaintext flag or dial http://",
            ))
        }
        Some(("http", _)) if tls => {
            return Err(bad(
                "http:// is plaintext; dial https:// or ask for plaintext explicitly",
            ))
        }
        Some(("http" | "https", _)) => url.to_string(),
        Some(_) => return Err(bad("the scheme must be http:// or https://")),
    };
    let endpoint = Endpoint::from_shared(full).map_err(|e| bad(&error_chain(&e)))?;
    let endpoint = keepalive::configure_endpoint(endpoint);
    match security {
        LinkSecurity::Plaintext => Ok(endpoint),
        LinkSecurity::MutualTls(paths) => {
            let tls = ClientTls::from_paths(paths)?;
            endpoint.tls_config(tls).map_err(|e| bad(&error_chain(&e)))
        }
    }
}

/// Reads the secret file, checks that it is usable, and opens the store.
async fn open_signer(data_dir: &Path, policy: Policy) -> Result<Signer, DaemonError> {
    let secret_path = data_dir.join(HSM_SECRET_FILE);
    let bytes = std::fs::read(&secret_path).map_err(|source| SecretError::Io {
        path: secret_path.clone(),
        source,
    })?;
    warn_if_readable_by_others(&secret_path);
    match HsmSecret::from_file_bytes(&bytes, None) {
        Ok(secret) => log::info!("node id {}", node_id(&secret)?),
        Err(SecretError::PassphraseRequired) => log::info!(
            "{} is protected by a passphrase; lightningd gives it with hsmd_init",
            secret_path.display()
        ),
        Err(e) => return Err(e.into()),
    }
    let store_path = data_dir.join(STATE_FILE);
    let path = store_path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&path))
        .await
        .map_err(|e| SignerError::Storage(e.to_string()))
        .and_then(|r| r)
        .map_err(|error| DaemonError::Store {
            path: store_path,
            error,
        })?;
    if policy_is_warn_only(&policy) {
        log::warn!(
            "policy: every rule in warn mode (Core Lightning's behaviour): nothing is refused"
        );
    }
    Ok(Signer::new(bytes, store, policy))
}

fn policy_is_warn_only(policy: &Policy) -> bool {
    crate::policy::RULES
        .iter()
        .all(|(rule, _)| policy.mode(rule) == crate::policy::Mode::Warn)
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} is readable by others than its owner; chmod 600 it",
                path.display()
            );
        }
    }
}

/// How one attempt at the link ended.
enum LinkEnd {
    /// Shutdown was asked; the requests in flight were answered.
    Shutdown,
    /// No stream was opened.
    Failed(String),
    /// A stream was open for `lasted`, then ended.
    Lost { lasted: Duration, reason: String },
}

/// Dials once, opens the stream and serves it until it ends or shutdown is asked.
async fn serve_link(
    endpoint: &Endpoint,
    lanes: &mut Lanes<Signer>,
    stop: &mut watch::Receiver<bool>,
    grace: Duration,
    compat: ProxyCompat,
) -> LinkEnd {
    let channel = tokio::select! {
        biased;
        _ = stopped(stop) => return LinkEnd::Shutdown,
        r = endpoint.connect() => match r {
            Ok(channel) => channel,
            Err(e) => return LinkEnd::Failed(format!("cannot reach the proxy: {}", error_chain(&e))),
        },
    };
    let mut client = HsmdClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let (out, out_rx) = mpsc::unbounded_channel();
    // Known once the proxy answered the stream, before any request comes over it.
    let older = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outbound = UnboundedReceiverStream::new(out_rx).map({
        let older = older.clone();
        move |r| {
            if older.load(std::sync::atomic::Ordering::Relaxed) {
                for_older_proxy(r)
            } else {
                r
            }
        }
    });
    let mut inbound = tokio::select! {
        biased;
        _ = stopped(stop) => return LinkEnd::Shutdown,
        r = client.signer_stream(outbound) => match r {
            Ok(response) => {
                let named = response.metadata().get(proto::PROXY_HEADER);
                let strip = compat.older_init_reply(named.is_some());
                older.store(strip, std::sync::atomic::Ordering::Relaxed);
                match named.and_then(|v| v.to_str().ok()) {
                    Some(name) if !strip => log::debug!("the proxy is {name}"),
                    _ if strip => log::info!(
                        "the proxy does not name itself as ours: init replies go without Core \
                         Lightning v25's TLVs, as the Validating Lightning Signer's proxy decodes \
                         them (--proxy-compat core-lightning to keep them)"
                    ),
                    _ => {}
                }
                response.into_inner()
            }
            Err(status) => return LinkEnd::Failed(format!("the proxy refused the stream: {status}")),
        },
    };
    let opened = Instant::now();
    log::info!("signer stream to the proxy open");

    let mut tick = tokio::time::interval(lanes.idle_timeout().max(Duration::from_millis(10)) / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stopped(stop) => {
                log::info!("shutting down: answering the requests in flight, then closing the stream");
                lanes.finish().await;
                drop(out);
                close_gracefully(&mut inbound, grace).await;
                return LinkEnd::Shutdown;
            }
            // Replies first: they free lanes and clients.
            done = lanes.next_done() => lanes.complete(done),
            message = inbound.message() => {
                // Every request already received is taken at once. The last one may be
                // handled on this thread; the others go to idle pool threads while there
                // are any (see `crate::lanes`).
                let mut message = message;
                loop {
                    match message {
                        Ok(Some(request)) => {
                            let next = poll_once(inbound.message());
                            dispatch(lanes, request, &out, next.is_none());
                            match next {
                                Some(m) => message = m,
                                None => break,
                            }
                        }
                        Ok(None) => return lost(opened, "the proxy ended the stream".to_string()),
                        Err(status) => return lost(opened, status.to_string()),
                    }
                }
            }
            _ = tick.tick() => lanes.drop_idle(),
        }
    }
}

fn lost(opened: Instant, reason: String) -> LinkEnd {
    LinkEnd::Lost {
        lasted: opened.elapsed(),
        reason,
    }
}

/// The output of `fut` if it is ready right now. Used for the next message of a stream: a
/// `Pending` poll only leaves a no-op waker behind, which the next real poll replaces.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// Hands `request` to its channel's lane; its response goes to `reply_to`. A request whose
/// context is malformed is answered at once with an error.
fn dispatch(
    lanes: &mut Lanes<Signer>,
    request: SignerRequest,
    reply_to: &mpsc::UnboundedSender<SignerResponse>,
    may_inline: bool,
) {
    let SignerRequest {
        request_id,
        context,
        message,
    } = request;
    let client = match client_context(context.as_ref()) {
        Ok(client) => client,
        Err(e) => {
            log::warn!("request {request_id} refused: {}", e.description());
            let _ = reply_to.send(response(request_id, Err(e)));
            return;
        }
    };
    let key = (!client.is_master).then(|| client.channel_key());
    let job = Job::new(request_id, client, message, reply_to.clone());
    lanes.dispatch(key, job, may_inline);
}

/// After the signer's half is closed, waits (at most `grace`) for the proxy to close its half:
/// by then every reply has reached it. Requests that still arrive are left to the next signer
/// stream, which the proxy sends them to again.
async fn close_gracefully(inbound: &mut Streaming<SignerRequest>, grace: Duration) {
    let drain = async {
        while let Ok(Some(request)) = inbound.message().await {
            log::info!(
                "request {} arrived during shutdown; left for the next stream",
                request.request_id
            );
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        log::info!("the proxy kept the stream open for {grace:?} after shutdown; closing it");
    }
}

/// Completes once shutdown is asked (or can no longer be asked).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The error and its sources, `: `-separated (tonic's transport errors say little alone).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Exponential backoff with equal jitter (see [`Reconnect`]), on `backon` as the proxy's
/// retries are: each delay is within [base/2, base), the base doubling up to the cap.
struct Backoff {
    policy: Reconnect,
    delays: backon::ExponentialBackoff,
}

impl Backoff {
    fn new(policy: Reconnect) -> Self {
        Backoff {
            policy,
            delays: Backoff::delays(policy),
        }
    }

    /// backon adds a jitter of up to the delay itself: half the base, plus up to as much.
    fn delays(policy: Reconnect) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(policy.initial_delay / 2)
            .with_max_delay(policy.max_delay / 2)
            .without_max_times()
            .with_jitter()
            .build()
    }

    fn reset(&mut self) {
        self.delays = Backoff::delays(self.policy);
    }

    /// The delay before the next attempt; doubles the base for the one after.
    fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.policy.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};

    #[test]
    fn absent_context_is_the_master() {
        assert_eq!(client_context(None).unwrap(), ClientContext::master());
    }

    #[test]
    fn context_maps_to_a_client() {
        let ctx = HsmRequestContext {
            peer_id: vec![2; 33],
            dbid: 7,
            capabilities: 0b101,
        };
        let client = client_context(Some(&ctx)).unwrap();
        assert_eq!(
            client,
            ClientContext::client(
                NodeId::from_bytes([2; 33]),
                7,
                Permissions::from_bits(0b101)
            )
        );
        assert!(!client.is_master);
    }

    #[test]
    fn bad_peer_id_length_is_a_bad_request() {
        for len in [0, 32, 34, 65] {
            let ctx = HsmRequestContext {
                peer_id: vec![2; len],
                dbid: 1,
                capabilities: 1,
            };
            match client_context(Some(&ctx)) {
                Err(SignerError::BadRequest(d)) => {
                    assert!(d.contains(&format!("{len}-byte")), "{d}")
                }
                other => panic!("{len} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn reply_maps_to_message() {
        let r = response(9, Ok(vec![0, 100, 1]));
        assert_eq!(
            r,
            SignerResponse {
                request_id: 9,
                message: vec![0, 100, 1],
                ..Default::default()
            }
        );
    }

    #[test]
    fn errors_map_to_their_flags() {
        let r = response(1, Err(SignerError::BadRequest("could not parse".into())));
        assert_eq!(r.error, "could not parse");
        assert!(r.message.is_empty() && !r.is_temporary_failure && !r.is_fatal);
        assert_eq!(r.policy_rule, "");

        let r = response(
            2,
            Err(SignerError::Policy {
                rule: "revoke-in-order",
                detail: "x".into(),
            }),
        );
        assert_eq!(r.error, "policy revoke-in-order: x");
        assert_eq!(r.policy_rule, "revoke-in-order");
        assert!(!r.is_temporary_failure && !r.is_fatal);

        for e in [
            SignerError::Temporary("busy".into()),
            SignerError::Storage("disk".into()),
        ] {
            let r = response(3, Err(e.clone()));
            assert!(r.is_temporary_failure, "{e:?}");
            assert_eq!(r.error, e.description());
            assert!(!r.is_fatal);
        }

        for reason in [FAIL_MASTER_IO, FAIL_INTERNAL_ERROR] {
            let r = response(
                4,
                Err(SignerError::Fatal {
                    reason,
                    message: "hsmd would exit".into(),
                }),
            );
            assert!(r.is_fatal && !r.is_temporary_failure);
            assert_eq!(r.fatal_reason, u32::from(reason));
            assert_eq!(r.error, "hsmd would exit");
            assert_eq!(r.request_id, 4);
        }

        // Never an empty error, which would read as an empty reply.
        assert!(!response(5, Err(SignerError::BadRequest(String::new())))
            .error
            .is_empty());
    }

    #[test]
    fn endpoint_schemes_follow_the_security() {
        let plain = LinkSecurity::Plaintext;
        assert_eq!(
            endpoint("127.0.0.1:7701", &plain)
                .unwrap()
                .uri()
                .scheme_str(),
            Some("http")
        );
        assert!(endpoint("http://127.0.0.1:7701", &plain).is_ok());
        assert!(matches!(
            endpoint("https://127.0.0.1:7701", &plain),
            Err(DaemonError::Url { .. })
        ));
        assert!(matches!(
            endpoint("ftp://127.0.0.1:7701", &plain),
            Err(DaemonError::Url { .. })
        ));
        let tls = LinkSecurity::MutualTls(TlsPaths::signer("/nonexistent"));
        assert!(matches!(
            endpoint("http://127.0.0.1:7701", &tls),
            Err(DaemonError::Url { .. })
        ));
        assert!(matches!(
            endpoint("https://127.0.0.1:7701", &tls),
            Err(DaemonError::Tls(_))
        ));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let policy = Reconnect::default();
        let mut b = Backoff::new(policy);
        let mut base = policy.initial_delay;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d < base,
                "{d:?} not in [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(policy.max_delay);
        }
        assert_eq!(base, policy.max_delay);
        b.reset();
        assert!(b.next_delay() <= policy.initial_delay);
    }
}
