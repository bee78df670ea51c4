//! The operator's admin socket: `signer approvals list | approve <payment_hash> |
//! deny <payment_hash>` talk to the running daemon here.
//!
//! A unix socket in the data directory, created with mode 0600 inside a 0700 directory, so
//! only the signer's user can open it. One JSON request per line, one JSON reply per line:
//! `{"cmd": "list"}`, `{"cmd": "approve", "payment_hash": "<hex>"}` (with `"amount_msat": N`
//! for an invoice without an amount),
//! `{"cmd": "deny", "payment_hash": "<hex>"}` → `{"ok": true, "approvals": [...]}` or
//! `{"ok": false, "error": "..."}`. `{"cmd": "watch"}` → one line per payment newly queued
//! for the operator (the JSON of an approval), for as long as the connection stays open.

use crate::approvals::{Approval, Approvals};
use crate::Signer;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// Longest request line accepted.
const MAX_LINE: usize = 4096;

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum AdminRequest {
    /// Every queued payment.
    List,
    /// Approve a queued payment.
    Approve {
        /// Its payment hash, hex.
        payment_hash: String,
        /// The most it may carry (required for an amountless invoice).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount_msat: Option<u64>,
    },
    /// Deny a queued payment.
    Deny {
        /// Its payment hash, hex.
        payment_hash: String,
    },
    /// Stream payments as they are queued.
    Watch,
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The queue (for `list`) or the decided entry.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn failure(e: impl ToString) -> AdminReply {
    AdminReply {
        ok: false,
        approvals: vec![],
        error: Some(e.to_string()),
    }
}

/// Carries out one request.
pub fn execute(signer: &Signer, req: AdminRequest) -> AdminReply {
    let (hash, approve, amount_msat) = match req {
        AdminRequest::List => {
            return match Approvals::list(signer.store()) {
                Ok(approvals) => AdminReply {
                    ok: true,
                    approvals,
                    error: None,
                },
                Err(e) => failure(e),
            }
        }
        AdminRequest::Approve {
            payment_hash,
            amount_msat,
        } => (payment_hash, true, amount_msat),
        AdminRequest::Deny { payment_hash } => (payment_hash, false, None),
        AdminRequest::Watch => return failure("`watch` streams: it is served by `serve`"),
    };
    let Some(h) = hex::decode(&hash)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return failure(format!("`{hash}` is not a 32-byte payment hash in hex"));
    };
    let decision = if approve {
        crate::approvals::Verdict::Approve { amount_msat }
    } else {
        crate::approvals::Verdict::Deny
    };
    match signer.approvals().decide(signer.store(), &h, decision) {
        Ok(a) => AdminReply {
            ok: true,
            approvals: vec![a],
            error: None,
        },
        Err(e) => failure(e),
    }
}

/// Binds the socket at `path` (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves the socket until the process ends.
pub async fn serve(listener: UnixListener, signer: Arc<Signer>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let signer = signer.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = sock.into_split();
            let mut lines = BufReader::new(rd.take_limit()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match serde_json::from_str::<AdminRequest>(&line) {
                    Ok(AdminRequest::Watch) => {
                        stream_queued(&signer, &mut wr).await;
                        break;
                    }
                    Ok(req) => {
                        let signer = signer.clone();
                        tokio::task::spawn_blocking(move || execute(&signer, req))
                            .await
                            .unwrap_or_else(failure)
                    }
                    Err(e) => failure(format!("bad request: {e}")),
                };
                let mut out = serde_json::to_vec(&reply).unwrap_or_default();
                out.push(b'\n');
                if wr.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The next payment queued for the operator (`None` once the signer is gone); a `who` that
/// fell behind is told in the log how many it missed.
async fn next_queued(
    queued: &mut tokio::sync::broadcast::Receiver<Approval>,
    who: &str,
) -> Option<Approval> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match queued.recv().await {
            Ok(a) => return Some(a),
            Err(RecvError::Lagged(n)) => log::warn!("{who} fell behind and missed {n} requests"),
            Err(RecvError::Closed) => return None,
        }
    }
}

/// Writes each payment queued for the operator as a JSON line, until the watcher goes away.
async fn stream_queued(signer: &Signer, wr: &mut tokio::net::unix::OwnedWriteHalf) {
    let mut queued = signer.approvals().watch();
    while let Some(a) = next_queued(&mut queued, "an approvals watcher").await {
        let mut out = serde_json::to_vec(&a).unwrap_or_default();
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Runs `command` (with `sh -c`) for every payment queued for the operator, the approval's
/// JSON on its standard input: how an operator wires approvals to a notifier. A command that
/// fails is logged; the payment keeps waiting for a decision either way.
pub async fn run_on_queued(signer: Arc<Signer>, command: String) {
    let mut queued = signer.approvals().watch();
    while let Some(a) = next_queued(&mut queued, "--on-approval-request").await {
        let json = serde_json::to_vec(&a).unwrap_or_default();
        let command = command.clone();
        tokio::spawn(async move {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("--on-approval-request `{command}`: {e}");
                    return;
                }
            };
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(&json).await;
            }
            match child.wait().await {
                Ok(st) if st.success() => {}
                Ok(st) => log::warn!("--on-approval-request `{command}` exited with {st}"),
                Err(e) => log::warn!("--on-approval-request `{command}`: {e}"),
            }
        });
    }
}

/// Asks the daemon at `path` to stream payments as they are queued, calling `each` with every
/// one until the daemon goes away or `each` returns false.
pub async fn watch(path: &Path, mut each: impl FnMut(&Approval) -> bool) -> io::Result<()> {
    let sock = connect(path).await?;
    let (rd, mut wr) = sock.into_split();
    let mut line = serde_json::to_vec(&AdminRequest::Watch).map_err(io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut lines = BufReader::new(rd).lines();
    while let Some(l) = lines.next_line().await? {
        let a: Approval = serde_json::from_str(&l).map_err(io::Error::other)?;
        if !each(&a) {
            break;
        }
    }
    Ok(())
}

trait TakeLimit: Sized {
    fn take_limit(self) -> tokio::io::Take<Self>;
}

impl TakeLimit for tokio::net::unix::OwnedReadHalf {
    fn take_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, (MAX_LINE * 64) as u64)
    }
}

async fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the signer at {}: {e} (is `signer run` running?)",
                path.display()
            ),
        )
    })
}

/// Sends one request to the daemon's socket at `path`.
pub async fn request(path: &Path, req: &AdminRequest) -> io::Result<AdminReply> {
    let sock = connect(path).await?;
    let (rd, mut wr) = sock.into_split();
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut lines = BufReader::new(rd).lines();
    let reply = lines.next_line().await?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the signer closed the socket")
    })?;
    serde_json::from_str(&reply).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_form() {
        let r: AdminRequest =
            serde_json::from_str(r#"{"cmd":"approve","payment_hash":"ab"}"#).unwrap();
        assert_eq!(
            r,
            AdminRequest::Approve {
                payment_hash: "ab".into(),
                amount_msat: None,
            }
        );
        let r: AdminRequest =
            serde_json::from_str(r#"{"cmd":"approve","payment_hash":"ab","amount_msat":5000}"#)
                .unwrap();
        assert_eq!(
            r,
            AdminRequest::Approve {
                payment_hash: "ab".into(),
                amount_msat: Some(5000),
            }
        );
        assert_eq!(
            serde_json::to_string(&AdminRequest::List).unwrap(),
            r#"{"cmd":"list"}"#
        );
    }

    /// A signer with a temporary store and every rule enforced.
    fn enforcing_signer() -> Arc<Signer> {
        Arc::new(Signer::new(
            vec![1; 32],
            crate::Store::temporary().unwrap(),
            crate::Policy::enforcing(),
        ))
    }

    #[tokio::test]
    async fn socket_is_private_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_SOCKET);
        let signer = enforcing_signer();
        let l = bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        tokio::spawn(serve(l, signer));
        let r = request(&path, &AdminRequest::List).await.unwrap();
        assert!(r.ok && r.approvals.is_empty());
        let r = request(
            &path,
            &AdminRequest::Approve {
                payment_hash: "00".repeat(32),
                amount_msat: None,
            },
        )
        .await
        .unwrap();
        assert!(!r.ok && r.error.unwrap().contains("no payment"));
        let r = request(
            &path,
            &AdminRequest::Deny {
                payment_hash: "zz".into(),
            },
        )
        .await
        .unwrap();
        assert!(!r.ok);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchers_and_the_hook_see_each_payment_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_SOCKET);
        let signer = enforcing_signer();
        tokio::spawn(serve(bind(&path).unwrap(), signer.clone()));
        let hooked = dir.path().join("hooked.json");
        tokio::spawn(run_on_queued(
            signer.clone(),
            format!("cat > '{}'", hooked.display()),
        ));
        let watcher = tokio::spawn({
            let path = path.clone();
            async move {
                let mut seen = Vec::new();
                watch(&path, |a| {
                    seen.push(a.clone());
                    false
                })
                .await
                .unwrap();
                seen
            }
        });
        // The watcher is subscribed once its request reached the daemon.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let a = Approval {
            payment_hash: "ab".repeat(32),
            kind: "keysend".into(),
            amount_msat: Some(123_000),
            detail: "02aa".into(),
            destination: Some("02aa".into()),
            description: None,
            requested_at: crate::approvals::now(),
            decision: crate::approvals::Decision::Pending,
            decided_at: None,
            approved_msat: None,
        };
        let asked = tokio::task::spawn_blocking({
            let (signer, a) = (signer.clone(), a.clone());
            move || {
                signer.approvals().ask(
                    signer.store(),
                    &[0xab; 32],
                    a,
                    std::time::Duration::from_millis(200),
                )
            }
        });
        assert_eq!(
            asked.await.unwrap().unwrap().decision,
            crate::approvals::Decision::Pending
        );
        let seen = watcher.await.unwrap();
        assert_eq!(seen, vec![a.clone()]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = std::fs::read_to_string(&hooked).unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<Approval>(&got) {
                assert_eq!(v, a);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the hook never ran");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
