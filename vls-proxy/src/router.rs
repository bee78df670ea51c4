//! Routing between the node's clients and the signer's stream.
//!
//! Every request gets an id and waits in the in-flight map until its reply comes back, on
//! whichever signer stream is current then: a request sent on a stream that died is sent
//! again, with its id, on the next one (the signer answers a repeat from its reply cache).
//! Until the signer has answered `hsmd_init`, only `hsmd_init` goes out; on every new stream
//! the node's init is replayed first and the signer's node id checked. Temporary failures
//! are retried with exponential backoff; approved preapprovals are answered from a cache.

use crate::cache::PreapprovalCache;
use crate::metrics::Metrics;
use backon::{ExponentialBuilder, Retryable};
use proto::hsmd::{HsmRequestContext, SignerRequest, SignerResponse};
use protocol::msgs::{ClientHsmfd, Init, InitReplyFailure, InitReplyV4};
use protocol::types::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How a request failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The signer refused it.
    Refused {
        /// The signer's description (names the policy rule, if one refused).
        description: String,
        /// Whether the signer will not serve this node any more (hsmd would exit).
        fatal: Option<u8>,
        /// The policy rule that refused it, when one did.
        rule: Option<String>,
    },
    /// The signer kept reporting a temporary failure past the retry budget.
    RetriesExhausted {
        /// The last failure's description.
        description: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused { description, .. } => write!(f, "signer refused: {description}"),
            CallError::RetriesExhausted { description } => {
                write!(f, "signer failed temporarily too many times: {description}")
            }
        }
    }
}

/// Tunables of the router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Retries after a temporary failure before the client gets an error.
    pub retry_attempts: usize,
    /// First retry delay (doubling, with jitter).
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Preapproval cache entries.
    pub cache_capacity: usize,
    /// How long an approval is answered from the cache.
    pub cache_ttl: Duration,
    /// The node id the signer must have; otherwise the first one seen is pinned.
    pub expect_node_id: Option<NodeId>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            retry_attempts: 6,
            retry_min_delay: Duration::from_millis(50),
            retry_max_delay: Duration::from_secs(2),
            cache_capacity: 6,
            cache_ttl: Duration::from_secs(60),
            expect_node_id: None,
        }
    }
}

/// The state of the link to the signer.
#[derive(Clone)]
enum Link {
    /// No signer stream.
    Down,
    /// A stream is there but has not answered `hsmd_init`: only init goes out.
    Connected {
        stream: u64,
        out: mpsc::UnboundedSender<SignerRequest>,
    },
    /// The signer answered init on this stream: everything goes out.
    Ready {
        stream: u64,
        out: mpsc::UnboundedSender<SignerRequest>,
    },
}

struct Inflight {
    req: SignerRequest,
    /// May go out before the signer answered init (`hsmd_init`, `hsmd_client_hsmfd`).
    early: bool,
    /// Is the node's `hsmd_init`: its reply names the signer's identity.
    is_init: bool,
    /// The stream it was last sent on.
    sent_on: Option<u64>,
    /// On how many streams it went out.
    sends: u32,
    reply: oneshot::Sender<SignerResponse>,
}

/// On how many signer streams one request may go out before it fails: a request whose every
/// stream ends before the reply (a reply the link cannot carry, a signer that crashes on it)
/// gets an error instead of being sent forever.
pub const MAX_SENDS: u32 = 8;

/// The node's init, as replayed to every new signer stream.
#[derive(Clone)]
struct Pinned {
    /// The init request with its version range pinned to the negotiated version.
    request: Vec<u8>,
    node_id: NodeId,
}

/// Routes requests to the current signer stream and replies back to their callers.
pub struct Router {
    config: RouterConfig,
    next_id: AtomicU64,
    next_stream: AtomicU64,
    /// Guarded together with `link` changes, so a request is sent exactly once per stream.
    inflight: Mutex<HashMap<u64, Inflight>>,
    link: watch::Sender<Link>,
    pinned: Mutex<Option<Pinned>>,
    /// Whether the node has sent `hsmd_init` (hsmd refuses anything else before it).
    init_seen: std::sync::atomic::AtomicBool,
    cache: PreapprovalCache,
    /// Counters for the metrics endpoint.
    pub metrics: Arc<Metrics>,
}

/// Sends on `stream` every in-flight request not yet sent on it (only inits when
/// `inits_only`), oldest first.
fn resend(
    map: &mut HashMap<u64, Inflight>,
    stream: u64,
    out: &mpsc::UnboundedSender<SignerRequest>,
    inits_only: bool,
) {
    let mut ids: Vec<u64> = map.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let e = map.get_mut(&id).expect("key from the map");
        if e.sent_on == Some(stream) || (inits_only && !e.early) {
            continue;
        }
        if e.sends >= MAX_SENDS {
            let e = map.remove(&id).expect("key from the map");
            let t = protocol::peek_type(&e.req.message).unwrap_or(0);
            let error = format!(
                "request {id} (type {t}) went out on {MAX_SENDS} signer streams and each ended \
                 before replying: given up"
            );
            log::error!("{error}");
            let _ = e.reply.send(SignerResponse {
                request_id: id,
                error,
                ..Default::default()
            });
            continue;
        }
        if out.send(e.req.clone()).is_ok() {
            e.sent_on = Some(stream);
            e.sends += 1;
        }
    }
}

/// Whether a stream may start: refused while another one is connected.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// This stream id is now the current one.
    Admitted(u64),
    /// Another stream is connected and healthy.
    Busy,
}

impl Router {
    /// A router with no signer yet.
    pub fn new(config: RouterConfig, metrics: Arc<Metrics>) -> Arc<Router> {
        let cache = PreapprovalCache::new(config.cache_capacity, config.cache_ttl);
        Arc::new(Router {
            config,
            next_id: AtomicU64::new(1),
            next_stream: AtomicU64::new(1),
            inflight: Mutex::new(HashMap::new()),
            link: watch::channel(Link::Down).0,
            pinned: Mutex::new(None),
            init_seen: std::sync::atomic::AtomicBool::new(false),
            cache,
            metrics,
        })
    }

    /// The signer's node id, once a signer answered init.
    pub fn node_id(&self) -> Option<NodeId> {
        lock(&self.pinned).as_ref().map(|p| p.node_id)
    }

    /// Sends `message` from a client (`context` absent for the master) and waits for the
    /// signer's reply, retrying temporary failures.
    pub async fn call(
        &self,
        context: Option<HsmRequestContext>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let msg_type = protocol::peek_type(&message).unwrap_or(u16::MAX);
        self.metrics.request(msg_type);
        // Only preapprovals are cached (and hashed), by client and request: an approval given
        // to one client is never another's answer (the signer checks each client's
        // permission to ask).
        let key = PreapprovalCache::applies_to(msg_type)
            .then(|| PreapprovalCache::key(context.as_ref(), &message));
        if let Some(key) = &key {
            if let Some(reply) = self.cache.get(key) {
                self.metrics.cache_hit();
                return Ok(reply);
            }
        }
        let is_init = msg_type == Init::TYPE;
        if is_init {
            self.init_seen.store(true, Ordering::Relaxed);
        } else if msg_type != ClientHsmfd::TYPE && !self.init_seen.load(Ordering::Relaxed) {
            // Core Lightning's hsmd stops here: lightningd broke the protocol.
            return Err(CallError::Refused {
                description: format!(
                    "hsmd was not initialized correctly, expected message type 11, got {msg_type}"
                ),
                fatal: Some(0),
                rule: None,
            });
        }
        // hsmd answers `hsmd_client_hsmfd` even before init: it may go out as init does.
        let early = is_init || msg_type == ClientHsmfd::TYPE;
        let attempt = || async {
            let resp = self
                .round_trip(context.clone(), message.clone(), early)
                .await;
            if resp.is_temporary_failure {
                return Err(CallError::RetriesExhausted {
                    description: resp.error,
                });
            }
            if !resp.error.is_empty() || resp.is_fatal {
                return Err(CallError::Refused {
                    description: if resp.error.is_empty() {
                        "fatal".into()
                    } else {
                        resp.error
                    },
                    fatal: resp.is_fatal.then_some(resp.fatal_reason as u8),
                    rule: (!resp.policy_rule.is_empty()).then(|| resp.policy_rule.clone()),
                });
            }
            Ok(resp.message)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.retry_attempts)
            .with_jitter();
        let reply = attempt
            .retry(backoff)
            .when(|e| matches!(e, CallError::RetriesExhausted { .. }))
            .notify(|e, d| {
                self.metrics.retry();
                log::warn!("temporary failure from signer ({e}); retrying in {d:?}");
            })
            .await;
        if let Err(CallError::Refused { description, .. }) = &reply {
            self.metrics.refusal(description);
        }
        let reply = reply?;
        if is_init {
            self.pin_init(&message, &reply);
        }
        if let Some(key) = key.filter(|_| PreapprovalCache::is_approval(&reply)) {
            self.cache.put(key, reply.clone());
        }
        Ok(reply)
    }

    /// One round trip: registers the request, sends it on the current stream if it may go,
    /// and waits for the reply from whichever stream answers it.
    async fn round_trip(
        &self,
        context: Option<HsmRequestContext>,
        message: Vec<u8>,
        early: bool,
    ) -> SignerResponse {
        let is_init = message.get(..2) == Some(&Init::TYPE.to_be_bytes()[..]);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = SignerRequest {
            request_id: id,
            context,
            message,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut map = lock(&self.inflight);
            let sent_on = match &*self.link.borrow() {
                Link::Ready { stream, out } => out.send(req.clone()).ok().map(|_| *stream),
                // Before a signer's identity is checked, only the node's init goes out; other
                // early requests (client_hsmfd) only while no init was ever answered.
                Link::Connected { stream, out }
                    if is_init || (early && lock(&self.pinned).is_none()) =>
                {
                    out.send(req.clone()).ok().map(|_| *stream)
                }
                _ => None,
            };
            map.insert(
                id,
                Inflight {
                    req,
                    early,
                    is_init,
                    sends: u32::from(sent_on.is_some()),
                    sent_on,
                    reply: tx,
                },
            );
        }
        let started = std::time::Instant::now();
        // The sender lives in the map until the reply arrives; the router outlives callers.
        let resp = rx.await.unwrap_or_else(|_| SignerResponse {
            request_id: id,
            error: "proxy shutting down".into(),
            is_fatal: true,
            ..Default::default()
        });
        self.metrics.latency(started.elapsed());
        resp
    }

    /// A new signer stream wants to start. Refused while another one is connected; the
    /// previous one is detected dead by HTTP/2 keepalive and taken down by [`Router::down`].
    pub fn admit(&self, out: mpsc::UnboundedSender<SignerRequest>) -> Admission {
        let mut map = lock(&self.inflight);
        if !matches!(*self.link.borrow(), Link::Down) {
            return Admission::Busy;
        }
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.link.send_replace(Link::Connected {
            stream,
            out: out.clone(),
        });
        // With no init pinned yet, the node's own init (if waiting) goes out now.
        if lock(&self.pinned).is_none() {
            resend(&mut map, stream, &out, true);
        }
        self.metrics.connect();
        Admission::Admitted(stream)
    }

    /// The init to replay to a new stream, if the node has sent one.
    pub fn replay_init(&self) -> Option<Vec<u8>> {
        lock(&self.pinned).as_ref().map(|p| p.request.clone())
    }

    /// The stream answered init with the right identity: everything may go out on it.
    pub fn ready(&self, stream: u64) {
        let mut map = lock(&self.inflight);
        let out = match &*self.link.borrow() {
            Link::Connected { stream: s, out } if *s == stream => out.clone(),
            _ => return,
        };
        self.link.send_replace(Link::Ready {
            stream,
            out: out.clone(),
        });
        resend(&mut map, stream, &out, false);
        log::info!("signer stream {stream} ready");
    }

    /// The stream ended (closed, failed, or refused): requests wait for the next one.
    pub fn down(&self, stream: u64) {
        let _map = lock(&self.inflight);
        let current = match &*self.link.borrow() {
            Link::Connected { stream: s, .. } | Link::Ready { stream: s, .. } => *s == stream,
            Link::Down => false,
        };
        if current {
            self.link.send_replace(Link::Down);
            self.metrics.disconnect();
            log::warn!("signer stream {stream} is gone; requests wait for the signer to return");
        }
    }

    /// Whether `stream` answered init with the right identity.
    pub fn is_ready(&self, stream: u64) -> bool {
        matches!(&*self.link.borrow(), Link::Ready { stream: s, .. } if *s == stream)
    }

    /// Whether an init went out on `stream`, the current stream, and waits for its answer: the
    /// node's replayed init (sent on every new stream once one was answered), or the node's
    /// first one.
    pub fn init_pending_on(&self, stream: u64) -> bool {
        let map = lock(&self.inflight);
        let current =
            matches!(&*self.link.borrow(), Link::Connected { stream: s, .. } if *s == stream);
        current
            && (lock(&self.pinned).is_some()
                || map.values().any(|e| e.is_init && e.sent_on == Some(stream)))
    }

    /// A reply from the signer on `stream`, handed to whoever waits for it. A reply to a
    /// request no longer in flight (a duplicate after a resend), or to one that was not last
    /// sent on this stream (a stream may only answer what it was asked), is dropped. A successful
    /// reply to the node's init must carry the expected node id: otherwise the request stays
    /// in flight for the next signer and the error says why this one is refused.
    ///
    /// Returns whether the reply was the node's init, answered with the expected identity:
    /// the stream must then prove it holds the node key before it is [`Router::ready`].
    pub fn reply(&self, stream: u64, resp: SignerResponse) -> Result<bool, String> {
        let mut map = lock(&self.inflight);
        let Some(e) = map.get_mut(&resp.request_id) else {
            log::debug!("reply to request {} that is not in flight", resp.request_id);
            return Ok(false);
        };
        if e.sent_on != Some(stream) {
            log::warn!(
                "signer stream {stream} answered request {}, which was not sent on it: dropped",
                resp.request_id
            );
            return Ok(false);
        }
        // A failed init (the signer cannot open its secret) goes to lightningd as hsmd's
        // `hsmd_init_reply_failure`; only a successful one is checked and makes the link ready.
        let init_ok = e.is_init
            && resp.error.is_empty()
            && !resp.is_temporary_failure
            && InitReplyFailure::decode(&resp.message).is_err();
        if init_ok {
            if let Err(why) = self.identity_ok(&resp.message) {
                e.sent_on = None;
                return Err(why);
            }
        }
        let e = map.remove(&resp.request_id).expect("present above");
        drop(map);
        let _ = e.reply.send(resp);
        Ok(init_ok)
    }

    /// Records the node's init with its version range pinned to the negotiated version, and
    /// the signer's node id.
    fn pin_init(&self, request: &[u8], reply: &[u8]) {
        let (Ok(mut init), Ok(r)) = (Init::decode(request), InitReplyV4::decode(reply)) else {
            return;
        };
        init.hsm_wire_min_version = r.hsm_version;
        init.hsm_wire_max_version = r.hsm_version;
        let Ok(pinned) = init.encode() else { return };
        *lock(&self.pinned) = Some(Pinned {
            request: pinned,
            node_id: r.node_id,
        });
    }

    /// Checks the node id of an init reply against the one pinned (or expected).
    pub fn identity_ok(&self, reply: &[u8]) -> Result<(), String> {
        let got = match InitReplyV4::decode(reply) {
            Ok(r) => r.node_id,
            Err(e) => return Err(format!("init reply does not decode: {e}")),
        };
        let want = self.node_id().or(self.config.expect_node_id);
        match want {
            Some(w) if w != got => Err(format!("signer has node id {got}, expected {w}")),
            _ => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::types::Bip32KeyVersion;
    use protocol::Message;

    /// `hsmd_init` for regtest, protocol versions 4..=6, as lightningd sends it.
    pub(crate) fn init() -> Vec<u8> {
        Message::from(Init::new(
            Bip32KeyVersion::TESTNET,
            bitcoin::blockdata::constants::ChainHash::REGTEST,
            None,
            None,
            None,
            None,
            None,
            4,
            6,
            protocol::msgs::InitTlvs::default(),
        ))
        .encode()
        .unwrap()
    }

    #[tokio::test]
    async fn a_stream_answers_only_what_was_sent_on_it() {
        let router = Router::new(RouterConfig::default(), Arc::new(Metrics::default()));
        let (first_out, mut first) = mpsc::unbounded_channel();
        let Admission::Admitted(s1) = router.admit(first_out) else {
            panic!("no stream is up");
        };
        let call = {
            let router = router.clone();
            tokio::spawn(async move { router.call(None, init()).await })
        };
        let sent = first.recv().await.expect("the init goes out");
        assert!(router.init_pending_on(s1));
        assert!(!router.is_ready(s1));
        // A reply for it from another (never admitted) stream is dropped.
        let forged = SignerResponse {
            request_id: sent.request_id,
            message: b"forged".to_vec(),
            ..Default::default()
        };
        router.reply(s1 + 1, forged).unwrap();
        assert!(!call.is_finished());
        // A reply to a request never sent is dropped too.
        router
            .reply(
                s1,
                SignerResponse {
                    request_id: sent.request_id + 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(!call.is_finished());
        router.down(s1);
        assert!(!router.init_pending_on(s1));
    }

    #[tokio::test]
    async fn a_request_whose_every_stream_dies_fails_after_max_sends() {
        let router = Router::new(RouterConfig::default(), Arc::new(Metrics::default()));
        let call = {
            let router = router.clone();
            tokio::spawn(async move { router.call(None, init()).await })
        };
        for n in 1..=MAX_SENDS {
            let (out, mut rx) = mpsc::unbounded_channel();
            let Admission::Admitted(stream) = router.admit(out) else {
                panic!("no stream is up");
            };
            let sent = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the request goes out on every new stream")
                .expect("sent");
            assert_eq!(sent.message, init(), "send {n}");
            router.down(stream);
        }
        // The next stream gets nothing: the request failed.
        let (out, mut rx) = mpsc::unbounded_channel();
        assert!(matches!(router.admit(out), Admission::Admitted(_)));
        let got = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call ends")
            .expect("no panic");
        match got {
            Err(CallError::Refused {
                description, fatal, ..
            }) => {
                assert!(description.contains("given up"), "{description}");
                assert_eq!(fatal, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_err());
    }
}
