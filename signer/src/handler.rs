//! The signer's entry point: one request from one client in, one reply out.
//!
//! [`Signer::handle`] checks, in Core Lightning's order, that the signer was initialized, that
//! the client may send this request, and that it parses; then one handler function per
//! message type answers it (`handlers/`). Requests that change state run in one write
//! transaction, committed before the reply is returned, together with the reply itself so
//! that a repeated request id gets the same reply without moving state twice.

use crate::approvals::Approvals;
use crate::context::{ChannelKey, ClientContext};
use crate::error::{Result, SignerError, FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};
use crate::handlers;
use crate::keys::{Bip32Version, ChannelSecrets, KeyManager};
use crate::policy::Policy;
use crate::secret::{HsmSecret, SecretError};
use crate::store::{ChannelState, Store, Txn};
use bitcoin::hashes::{sha256, Hash};
use protocol::msgs::*;
use protocol::types::{Bip32KeyVersion, WireString};
use protocol::Message;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use zeroize::Zeroizing;

/// The lowest and highest hsmd protocol versions this signer speaks.
pub const MIN_VERSION: u32 = 4;
/// See [`MIN_VERSION`].
pub const MAX_VERSION: u32 = 6;

/// The request types advertised in `hsmd_init_reply_v4`, in Core Lightning's order.
pub use protocol::facts::CAPABILITIES;

/// `hsmd_init_reply_failure` error code: the secret could not be loaded.
pub const INIT_FAILURE_BAD_SECRET: u32 = 1;
/// `hsmd_init_reply_failure` error code: wrong or missing passphrase.
pub const INIT_FAILURE_PASSPHRASE: u32 = 2;

/// What `hsmd_init` established: the keys for the network asked, and the protocol version.
pub struct Session {
    /// Every long-lived key.
    pub keys: KeyManager,
    /// The negotiated protocol version (4..=6).
    pub version: u32,
    /// The BIP32 version bytes of the init request.
    pub bip32: Bip32KeyVersion,
    /// The policy on the network of the init request.
    pub policy: Policy,
}

/// The signer: answers hsmd requests from the root secret, the policy and the durable state.
///
/// Guarantees: nothing is signed that the policy refuses; a request that fails changes no
/// state; a reply to a state-changing request leaves only after its state is committed; the
/// same request id from the same client with the same bytes gets the same reply.
pub struct Signer {
    secret_file: Zeroizing<Vec<u8>>,
    session: RwLock<Option<Arc<Session>>>,
    store: Store,
    policy: Policy,
    approvals: Approvals,
}

impl Signer {
    /// A signer for the `hsm_secret` file contents `secret_file` (any format Core Lightning
    /// writes; a passphrase, if needed, comes with `hsmd_init`).
    pub fn new(secret_file: Vec<u8>, store: Store, policy: Policy) -> Signer {
        Signer {
            secret_file: Zeroizing::new(secret_file),
            session: RwLock::new(None),
            store,
            policy,
            approvals: Approvals::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The operator's approval queue.
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    /// The session established by the last `hsmd_init`, if any.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Answers `request` (type + body) from `client`.
    ///
    /// `request_id`, when given, identifies the request within its client: the same id and
    /// bytes again get the same reply (from the reply cache for state-changing requests).
    ///
    /// A payment that needs the operator's decision holds the calling thread while it waits
    /// (up to the approval timeout); the daemon uses [`Signer::handle_with`] to park it.
    ///
    /// # Errors
    /// See [`SignerError`]; on any error no state changed.
    pub fn handle(
        &self,
        client: &ClientContext,
        request_id: Option<u64>,
        request: &[u8],
    ) -> Result<Vec<u8>> {
        self.handle_with(client, request_id, request, Wait::Block)
    }

    /// [`Signer::handle`], with `wait` saying how a payment that needs the operator waits.
    ///
    /// # Errors
    /// See [`SignerError`] ([`SignerError::Parked`] only with [`Wait::Park`]); on any error
    /// no state changed but the operator's queue.
    pub fn handle_with(
        &self,
        client: &ClientContext,
        request_id: Option<u64>,
        request: &[u8],
        wait: Wait,
    ) -> Result<Vec<u8>> {
        let Some(t) = protocol::peek_type(request) else {
            return Err(permission_error(-1));
        };
        let session = self.session();
        if session.is_none() && t != Init::TYPE && t != ClientHsmfd::TYPE {
            return Err(SignerError::Fatal {
                reason: FAIL_MASTER_IO,
                message: format!(
                    "hsmd was not initialized correctly, expected message type 11, got {t}"
                ),
            });
        }
        if !client.permissions.allows(t) {
            return Err(permission_error(i32::from(t)));
        }
        let msg = Message::decode(request).map_err(SignerError::malformed)?;
        let msg = match msg {
            Message::Init(m) => return self.init(m).and_then(encode),
            Message::ClientHsmfd(_) => return encode(ClientHsmfdReply::new().into()),
            m => m,
        };
        // Permission passed and the session exists for every other type.
        let session = session.ok_or_else(|| SignerError::malformed("not initialized"))?;
        // Our extension: would lightningd's request be signed? (Answered, never kept.)
        if let Message::VlsCheckRequest(m) = msg {
            return crate::dry_run::check(self, &session, client, &m).and_then(encode);
        }

        let cache = request_id
            .filter(|_| changes_state(t))
            .map(|id| (id, sha256::Hash::hash(request).to_byte_array()));
        let mut req = Req {
            session: &session,
            client,
            policy: &session.policy,
            store: &self.store,
            approvals: &self.approvals,
            wait,
            txn: None,
        };
        // Every read-check-write of state runs in one write transaction, begun before anything
        // is read: redb has one writer, so requests that touch the same state, whatever lane
        // or client they come from, take effect one after the other and each sees what the
        // previous one committed (a revocation and a signature of the same commitment can never
        // both pass their checks). A preapproval may wait for the operator, which must not hold
        // the writer; it begins its transaction after the wait (see `handlers::payments`).
        if changes_state(t) && !waits_for_operator(t) {
            let txn = req.txn()?;
            if let Some((id, hash)) = &cache {
                if let Some(reply) = txn.cached_reply(&client.channel_key(), *id, hash)? {
                    return Ok(reply);
                }
            }
        } else if let Some((id, hash)) = &cache {
            // Requests of one client come in order (one lane per channel), so reading the
            // cache before the handler's transaction begins cannot miss a concurrent twin.
            if let Some(reply) = self.store.cached_reply(&client.channel_key(), *id, hash)? {
                return Ok(reply);
            }
        }
        let reply = encode(handlers::dispatch(&mut req, msg)?)?;
        if let Some((id, hash)) = &cache {
            req.txn()?
                .put_reply(&client.channel_key(), *id, hash, &reply)?;
        }
        if let Some(txn) = req.txn.take() {
            txn.commit()?;
        }
        Ok(reply)
    }

    /// Runs `msg` through its handler exactly as [`Signer::handle`] does, but never commits:
    /// the write transaction it opened, if any, is rolled back, so nothing it wrote is kept.
    /// Its reply is returned for the caller to inspect; it must not leave the signer.
    pub(crate) fn handle_uncommitted(
        &self,
        session: &Session,
        client: &ClientContext,
        msg: Message,
    ) -> Result<Message> {
        let mut req = Req {
            session,
            client,
            policy: &session.policy,
            store: &self.store,
            approvals: &self.approvals,
            // A dry run never waits for the operator (its payments are `check_only`).
            wait: Wait::Park { deadline: None },
            txn: None,
        };
        let outcome = handlers::dispatch(&mut req, msg);
        if let Some(txn) = req.txn.take() {
            if let Err(e) = txn.abort() {
                // Nothing was committed either way; redb repairs a failed rollback on reopen.
                log::warn!("rolling back a dry run: {e}");
            }
        }
        outcome
    }

    fn init(&self, m: Init) -> Result<Message> {
        // Core Lightning only refuses ranges that cannot meet ours.
        if MIN_VERSION > m.hsm_wire_max_version || MAX_VERSION < m.hsm_wire_min_version {
            return Err(SignerError::malformed(format!(
                "protocol versions {}..={} do not meet {MIN_VERSION}..={MAX_VERSION}",
                m.hsm_wire_min_version, m.hsm_wire_max_version
            )));
        }
        let version = m.hsm_wire_max_version.min(MAX_VERSION);
        if m.dev_force_privkey.is_some()
            || m.dev_force_bip32_seed.is_some()
            || m.dev_force_channel_secrets.is_some()
            || m.dev_force_channel_secrets_shaseed.is_some()
        {
            return Err(SignerError::Fatal {
                reason: FAIL_INTERNAL_ERROR,
                message: "hsmd_init asks for developer key overrides, which this signer refuses"
                    .into(),
            });
        }
        let bip32v = Bip32Version::from_init(
            m.bip32_key_version.pubkey_version,
            m.bip32_key_version.privkey_version,
        )
        .map_err(|e| SignerError::Fatal {
            reason: FAIL_INTERNAL_ERROR,
            message: e.to_string(),
        })?;
        let passphrase = m
            .tlvs
            .hsm_passphrase
            .as_ref()
            .map(|p| p.as_bytes().to_vec());
        let secret = match HsmSecret::from_file_bytes(&self.secret_file, passphrase.as_deref()) {
            Ok(s) => s,
            Err(e) => return Ok(init_failure(&e).into()),
        };
        let keys = KeyManager::new(&secret, bip32v).map_err(|e| SignerError::Fatal {
            reason: FAIL_INTERNAL_ERROR,
            message: e.to_string(),
        })?;
        let tlvs = InitReplyV4Tlvs {
            hsm_secret_type: Some(keys.secret_kind().wire_code()),
            bip86_base: keys.bip86_base_xpub(),
            unknown: Vec::new(),
        };
        let reply = InitReplyV4::new(
            version,
            CAPABILITIES.to_vec(),
            protocol::types::NodeId::from_pubkey(&keys.node_id()),
            keys.bip32_base_xpub(),
            keys.bolt12_base_pubkey(),
            tlvs,
        );
        log::info!(
            "initialized: node id {}, protocol version {version}",
            keys.node_id()
        );
        let policy = match bitcoin::Network::from_chain_hash(m.chainparams) {
            Some(network) => self.policy.for_network(network),
            None => {
                log::warn!("hsmd_init names an unknown chain: mainnet limits apply");
                self.policy.clone()
            }
        };
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Session {
            keys,
            version,
            bip32: m.bip32_key_version,
            policy,
        }));
        Ok(reply.into())
    }
}

fn init_failure(e: &SecretError) -> InitReplyFailure {
    let code = match e {
        SecretError::WrongPassphrase | SecretError::PassphraseRequired => INIT_FAILURE_PASSPHRASE,
        _ => INIT_FAILURE_BAD_SECRET,
    };
    InitReplyFailure::new(code, WireString::from(e.to_string().as_str()))
}

fn permission_error(t: i32) -> SignerError {
    SignerError::Policy {
        rule: "permission",
        detail: format!("client does not have capability to run {t}"),
    }
}

fn encode(m: Message) -> Result<Vec<u8>> {
    m.encode()
        .map_err(|e| SignerError::BadRequest(format!("reply cannot be encoded: {e}")))
}

/// Whether a request type is always answered in microseconds ([`protocol::facts::Facts`]):
/// the daemon may answer these on its I/O thread; everything else goes to a worker.
pub fn is_quick(t: u16) -> bool {
    protocol::facts(t).quick
}

/// Whether a request type may change the signer's state (and so runs in a write transaction
/// with its reply cached).
pub fn changes_state(t: u16) -> bool {
    protocol::facts(t).changes_state
}

/// Whether a state-changing request type may wait for the operator's decision (and so must
/// not hold the store's writer, nor the daemon's I/O thread, while it waits).
pub(crate) fn waits_for_operator(t: u16) -> bool {
    protocol::facts(t).preapproval
}

/// One request being handled: who asks, with which keys, under which policy, and the write
/// transaction it opened (if it changes state).
pub struct Req<'a> {
    /// The keys and protocol version.
    pub session: &'a Session,
    /// Who asks.
    pub client: &'a ClientContext,
    /// The policy in force.
    pub policy: &'a Policy,
    store: &'a Store,
    /// The operator's approval queue.
    pub approvals: &'a Approvals,
    /// How a payment that needs the operator waits for the decision.
    pub(crate) wait: Wait,
    txn: Option<Txn>,
}

/// How a request that needs the operator's decision waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Holding the calling thread, up to the approval timeout ([`Signer::handle`]).
    Block,
    /// Not at all: while the decision is pending, the request fails with
    /// [`SignerError::Parked`] until `deadline` (set from the first attempt, `None` then),
    /// and its caller tries it again once a decision is taken; past the deadline it is
    /// answered as undecided.
    Park {
        /// When the first attempt parked.
        deadline: Option<Instant>,
    },
}

impl<'a> Req<'a> {
    /// A request context outside [`Signer::handle`], for unit tests of rules.
    #[cfg(test)]
    pub(crate) fn for_test(
        session: &'a Session,
        client: &'a ClientContext,
        policy: &'a Policy,
        store: &'a Store,
        approvals: &'a Approvals,
    ) -> Req<'a> {
        Req {
            session,
            client,
            policy,
            store,
            approvals,
            wait: Wait::Block,
            txn: None,
        }
    }

    /// Commits what a [`Req::for_test`] request wrote.
    #[cfg(test)]
    pub(crate) fn commit_for_test(mut self) -> Result<()> {
        match self.txn.take() {
            Some(t) => t.commit(),
            None => Ok(()),
        }
    }

    /// The node's keys.
    pub fn keys(&self) -> &KeyManager {
        &self.session.keys
    }

    /// The store, for what must be committed apart from this request (the approval queue).
    /// Never use it while this request's transaction is open: redb has one writer.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Whether this request has begun its write transaction.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// This request's write transaction, begun on first use.
    pub fn txn(&mut self) -> Result<&mut Txn> {
        if self.txn.is_none() {
            self.txn = Some(self.store.begin()?);
        }
        Ok(self.txn.as_mut().expect("just set"))
    }

    /// A channel's state as of this request (default for a channel never seen). Reads through
    /// the write transaction if one is open, so a request sees its own changes.
    pub fn channel_state(&mut self, key: &ChannelKey) -> Result<ChannelState> {
        let s = match &self.txn {
            Some(t) => t.channel(key)?,
            None => self.store.channel(key)?,
        };
        Ok(s.unwrap_or_default())
    }

    /// A record as of this request: through its write transaction if one is open.
    pub fn record<T: serde::de::DeserializeOwned>(
        &self,
        kind: crate::store::Records,
        key: &[u8],
    ) -> Result<Option<T>> {
        match &self.txn {
            Some(t) => t.record(kind, key),
            None => self.store.record(kind, key),
        }
    }

    /// Every record of a table as of this request (see [`Req::record`]).
    pub fn records<T: serde::de::DeserializeOwned>(
        &self,
        kind: crate::store::Records,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        match &self.txn {
            Some(t) => t.records(kind),
            None => self.store.records(kind),
        }
    }

    /// Every channel's state as of this request (see [`Req::record`]).
    pub fn channels(&self) -> Result<Vec<(ChannelKey, ChannelState)>> {
        match &self.txn {
            Some(t) => t.channels(),
            None => self.store.channels(),
        }
    }

    /// Replaces a channel's state (committed with the reply).
    pub fn put_channel_state(&mut self, key: &ChannelKey, s: &ChannelState) -> Result<()> {
        self.txn()?.put_channel(key, s)
    }

    /// The secrets of a channel.
    pub fn channel_secrets(&self, key: &ChannelKey) -> Result<std::sync::Arc<ChannelSecrets>> {
        self.keys()
            .channel_secrets(key.peer_id.as_bytes(), key.dbid)
            .map_err(|e| SignerError::BadRequest(e.to_string()))
    }
}
