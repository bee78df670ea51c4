//! The node's side: lightningd's fd 3 (the master client) and the client fds handed out by
//! `hsmd_client_hsmfd`, each served on its own tokio task, strictly one request at a time
//! as hsmd does.
//!
//! A bad request from a client is reported on the status channel and closes that client
//! only; a bad request from the master, or a fatal error, stops the proxy as hsmd stops.

use crate::dev::{DevMode, Local};
use crate::fdpass::send_fd;
use crate::router::{CallError, Router};
use crate::status::Status;
use proto::hsmd::HsmRequestContext;
use protocol::frame::tokio_io;
use protocol::msgs::{ClientHsmfd, ClientHsmfdReply, Init, InitReplyFailure};
use protocol::msgs::{FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};
use protocol::socket::{HsmdSocket, WriteHalf};
use protocol::types::NodeId;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// Exit status after a `status_fail`, as Core Lightning's subdaemons exit
/// (`0x80 | (0xFFF2 & 0xFF)`).
pub const EXIT_STATUS_FAIL: i32 = 242;

/// Most clients served at once; lightningd has one per subdaemon per channel.
pub const MAX_CLIENTS: usize = 65_536;
/// Each client's read buffer: room for an ordinary request in one read (longer ones are
/// read through); small, because lightningd keeps thousands of clients.
const READ_BUFFER: usize = 1024;
/// Global (dbid 0) clients besides the master, as in Core Lightning.
const MAX_GLOBAL_CLIENTS: usize = 2;

/// Why the proxy stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Process exit status.
    pub code: i32,
    /// Why, for the log.
    pub why: String,
}

struct ClientEntry {
    dbid: u64,
    task: AbortHandle,
}

/// Everything the client tasks share.
pub struct Proxy {
    router: Arc<Router>,
    status: Arc<Status>,
    dev: Arc<DevMode>,
    clients: Mutex<HashMap<u64, ClientEntry>>,
    next_client: std::sync::atomic::AtomicU64,
    exit: tokio::sync::mpsc::UnboundedSender<Exit>,
}

impl Proxy {
    /// A proxy routing through `router`, reporting on `status`, honouring developer mode as
    /// `dev` says, and sending its reason to stop on `exit`.
    pub fn new(
        router: Arc<Router>,
        status: Arc<Status>,
        dev: Arc<DevMode>,
        exit: tokio::sync::mpsc::UnboundedSender<Exit>,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            router,
            status,
            dev,
            clients: Mutex::new(HashMap::new()),
            next_client: std::sync::atomic::AtomicU64::new(1),
            exit,
        })
    }

    async fn fail(&self, reason: u8, desc: String) {
        log::error!("stopping: {desc}");
        self.status.fail(reason, &desc).await;
        let _ = self.exit.send(Exit {
            code: EXIT_STATUS_FAIL,
            why: desc,
        });
    }

    /// Serves lightningd's fd 3 until EOF (a clean stop) or a fatal error. EOF is noticed at
    /// once, even while a request waits for the signer.
    pub async fn serve_master(self: Arc<Self>, sock: HsmdSocket) {
        let (rd, mut wr) = sock.into_split();
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let reader = self.clone();
        tokio::spawn(async move {
            loop {
                match tokio_io::read(&mut rd).await {
                    Ok(Some(m)) => {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let why = "lightningd closed fd 3".to_string();
                        let _ = reader.exit.send(Exit { code: 0, why });
                        return;
                    }
                    Err(e) => {
                        let why = format!("reading from lightningd: {e}");
                        return reader.fail(FAIL_MASTER_IO, why).await;
                    }
                }
            }
        });
        while let Some(msg) = rx.recv().await {
            match self.dev.master_request(&msg) {
                Local::Route => {}
                Local::NoReply => continue,
                Local::Reply(reply) => {
                    if let Err(e) = tokio_io::write(&mut wr, &reply).await {
                        let why = format!("writing to lightningd: {e}");
                        return self.fail(FAIL_MASTER_IO, why).await;
                    }
                    continue;
                }
                Local::Fatal(reason, why) => return self.fail(reason, why).await,
            }
            let is_init = msg.get(..2) == Some(&Init::TYPE.to_be_bytes()[..]);
            let new_client = ClientHsmfd::decode(&msg).ok();
            if let Some(req) = &new_client {
                if let Err(desc) = self.may_add_client(req.dbid) {
                    return self.fail(FAIL_INTERNAL_ERROR, desc).await;
                }
            }
            // `hsmd_client_hsmfd` is answered here, as VLS's proxy does: its reply is empty
            // and the signer keeps nothing of it (each later request carries its client's
            // context), so it costs no round trip and works with signers that do not know it.
            let local = new_client.as_ref().and_then(|_| {
                protocol::Message::from(ClientHsmfdReply::new())
                    .encode()
                    .ok()
            });
            let reply = match local {
                Some(r) => r,
                None => match self.router.call(None, msg.clone()).await {
                    Ok(r) if is_init => self.dev.init_reply(r),
                    Ok(r) => r,
                    Err(e) => {
                        let (reason, desc) = master_failure(&msg, &e);
                        return self.fail(reason, desc).await;
                    }
                },
            };
            self.router.metrics.done();
            if let Err(e) = tokio_io::write(&mut wr, &reply).await {
                return self
                    .fail(FAIL_MASTER_IO, format!("writing to lightningd: {e}"))
                    .await;
            }
            if let Ok(failure) = InitReplyFailure::decode(&reply) {
                let why = failure.error_message.to_string_lossy();
                return self
                    .fail(FAIL_INTERNAL_ERROR, format!("hsmd_init failed: {why}"))
                    .await;
            }
            if let Some(req) = new_client {
                if let Err(desc) = self.new_client(&wr, req).await {
                    return self.fail(FAIL_INTERNAL_ERROR, desc).await;
                }
            }
        }
    }

    /// Whether lightningd may have one more client for `dbid` (checked before its request is
    /// answered, so a refused one never gets a reply, as with hsmd).
    fn may_add_client(&self, dbid: u64) -> Result<(), String> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS {
            return Err(format!("too many clients ({MAX_CLIENTS})"));
        }
        let global = clients.values().filter(|c| c.dbid == 0).count();
        if dbid == 0 && global >= MAX_GLOBAL_CLIENTS {
            return Err(format!(
                "a {}th global client was asked for; at most {MAX_GLOBAL_CLIENTS} exist",
                global + 1
            ));
        }
        Ok(())
    }

    /// Creates the client lightningd asked for and passes its fd.
    async fn new_client(
        self: &Arc<Self>,
        master: &WriteHalf,
        req: ClientHsmfd,
    ) -> Result<(), String> {
        // lightningd's end stays blocking: subdaemons read and write their hsmd fd
        // synchronously.
        let (ours, theirs) = HsmdSocket::pair().map_err(|e| format!("socketpair: {e}"))?;
        let id = self
            .next_client
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if req.dbid != 0 {
                // A new client for the same channel replaces the old one.
                let old: Vec<u64> = clients
                    .iter()
                    .filter(|(_, c)| c.dbid == req.dbid)
                    .map(|(k, _)| *k)
                    .collect();
                for k in old {
                    if let Some(c) = clients.remove(&k) {
                        log::info!("client for dbid {} replaced", req.dbid);
                        c.task.abort();
                    }
                }
            }
            let ctx = HsmRequestContext {
                peer_id: req.id.as_bytes().to_vec(),
                dbid: req.dbid,
                capabilities: req.permissions,
            };
            let task = tokio::spawn(self.clone().serve_client(id, req.id, ctx, ours));
            clients.insert(
                id,
                ClientEntry {
                    dbid: req.dbid,
                    task: task.abort_handle(),
                },
            );
        }
        send_fd(master, theirs.as_raw_fd())
            .await
            .map_err(|e| format!("passing client fd: {e}"))?;
        Ok(())
    }

    /// Serves one client until it closes, sends a bad request, or is replaced.
    async fn serve_client(
        self: Arc<Self>,
        id: u64,
        peer: NodeId,
        ctx: HsmRequestContext,
        sock: HsmdSocket,
    ) {
        let (rd, mut wr) = sock.into_split();
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
        loop {
            let msg = match tokio_io::read(&mut rd).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("client {id} (dbid {}): {e}", ctx.dbid);
                    break;
                }
            };
            if let Some(reply) = self.dev.refused_preapproval(&msg) {
                log::info!("client {id}: preapproval refused (dev_fail_preapprove)");
                if tokio_io::write(&mut wr, &reply).await.is_err() {
                    break;
                }
                continue;
            }
            match self.router.call(Some(ctx.clone()), msg.clone()).await {
                Ok(reply) => {
                    self.router.metrics.done();
                    if tokio_io::write(&mut wr, &reply).await.is_err() {
                        break;
                    }
                }
                Err(CallError::Refused {
                    fatal: Some(reason),
                    description,
                    ..
                }) => {
                    self.router.metrics.done();
                    self.fail(reason, description).await;
                    break;
                }
                Err(e) => {
                    self.router.metrics.done();
                    let desc = match &e {
                        CallError::Refused { description, .. } => description.clone(),
                        other => other.to_string(),
                    };
                    log::warn!("client {id} (dbid {}) bad request: {desc}", ctx.dbid);
                    self.status.bad_request(peer, &desc, &msg);
                    break;
                }
            }
        }
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// A request as lightningd's log may show it: in hex, except `hsmd_init`, whose TLVs may carry
/// the `hsm_secret` passphrase (only its type is shown).
fn shown_request(msg: &[u8]) -> String {
    if msg.get(..2) == Some(&Init::TYPE.to_be_bytes()[..]) {
        format!(
            "{} (hsmd_init, not shown: it may carry the passphrase)",
            hex::encode(&msg[..2])
        )
    } else {
        hex::encode(msg)
    }
}

/// The `status_fail` for a master request the signer refused: a policy refusal reads as one,
/// naming its rule and the request (lightningd has no error reply on fd 3, so this is the
/// line its log ends with).
fn master_failure(msg: &[u8], e: &CallError) -> (u8, String) {
    let t = protocol::peek_type(msg).unwrap_or(u16::MAX);
    let name = protocol::msgs::name_of(t).unwrap_or("unknown request");
    match e {
        CallError::Refused {
            fatal: Some(reason),
            description,
            ..
        } => (*reason, description.clone()),
        CallError::Refused {
            rule: Some(rule),
            description,
            ..
        } => (
            FAIL_INTERNAL_ERROR,
            format!(
                "the signer's policy rule {rule} refused {name} from lightningd: {description}"
            ),
        ),
        CallError::Refused { description, .. } => (
            FAIL_MASTER_IO,
            format!("Error parsing {t}: {}: {description}", shown_request(msg)),
        ),
        other => (FAIL_INTERNAL_ERROR, format!("{name} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_refusal_on_fd_3_reads_as_a_refusal_with_its_rule() {
        let msg = [0u8, 7, 1, 2, 3];
        let (reason, desc) = master_failure(
            &msg,
            &CallError::Refused {
                description: "policy onchain-destination-allowlisted: output 0 pays a stranger"
                    .into(),
                fatal: None,
                rule: Some("onchain-destination-allowlisted".into()),
            },
        );
        assert_eq!(reason, FAIL_INTERNAL_ERROR);
        assert!(desc.starts_with(
            "the signer's policy rule onchain-destination-allowlisted refused hsmd_sign_withdrawal"
        ), "{desc}");
        assert!(!desc.contains("parsing"), "{desc}");
        // A request the signer could not read is still reported as hsmd reports it.
        let (reason, desc) = master_failure(
            &msg,
            &CallError::Refused {
                description: "field psbt: invalid PSBT".into(),
                fatal: None,
                rule: None,
            },
        );
        assert_eq!(reason, FAIL_MASTER_IO);
        assert!(desc.starts_with("Error parsing 7: 0007010203"), "{desc}");
        // An init's passphrase never reaches the log.
        let init = [0u8, 11, 0xaa, 0xbb, b's', b'e', b'c', b'r', b'e', b't'];
        let (_, desc) = master_failure(
            &init,
            &CallError::Refused {
                description: "bad init".into(),
                fatal: None,
                rule: None,
            },
        );
        assert!(!desc.contains(&hex::encode(b"secret")), "{desc}");
    }
}
