//! The operator's admin socket: `signer approvals list | approve <payment_hash> |
//! deny <payment_hash>` talk to the running daemon here.
//!
//! A unix socket in the data directory, created with mode 0600 inside a 0700 directory, so
//! only the signer's user can open it. One JSON request per line, one JSON reply per line:
//! `{"cmd": "list"}`, `{"cmd": "approve", "payment_hash": "<hex>"}`,
//! `{"cmd": "deny", "payment_hash": "<hex>"}` → `{"ok": true, "approvals": [...]}` or
//! `{"ok": false, "error": "..."}`.

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
    },
    /// Deny a queued payment.
    Deny {
        /// Its payment hash, hex.
        payment_hash: String,
    },
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
    let (hash, approve) = match req {
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
        AdminRequest::Approve { payment_hash } => (payment_hash, true),
        AdminRequest::Deny { payment_hash } => (payment_hash, false),
    };
    let Some(h) = hex::decode(&hash)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return failure(format!("`{hash}` is not a 32-byte payment hash in hex"));
    };
    match signer.approvals().decide(signer.store(), &h, approve) {
        Ok(Some(a)) => AdminReply {
            ok: true,
            approvals: vec![a],
            error: None,
        },
        Ok(None) => failure(format!("no payment {hash} waits for a decision")),
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

trait TakeLimit: Sized {
    fn take_limit(self) -> tokio::io::Take<Self>;
}

impl TakeLimit for tokio::net::unix::OwnedReadHalf {
    fn take_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, (MAX_LINE * 64) as u64)
    }
}

/// Sends one request to the daemon's socket at `path`.
pub async fn request(path: &Path, req: &AdminRequest) -> io::Result<AdminReply> {
    let sock = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the signer at {}: {e} (is `signer run` running?)",
                path.display()
            ),
        )
    })?;
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
                payment_hash: "ab".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&AdminRequest::List).unwrap(),
            r#"{"cmd":"list"}"#
        );
    }

    #[tokio::test]
    async fn socket_is_private_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_SOCKET);
        let signer = Arc::new(Signer::new(
            vec![1; 32],
            crate::Store::temporary().unwrap(),
            crate::Policy::enforcing(),
        ));
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
}
