//! The node's control socket (`node.sock` in its data directory, mode 0600): the commands
//! `node getinfo | invoice | pay | keysend | connect | open | backup | stats | stop` send one
//! JSON request per line to the running node and get one JSON reply per line.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the node's data directory.
pub const CONTROL_SOCKET: &str = "node.sock";

/// A request to the running node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The node id, network, peers and channels.
    Getinfo,
    /// A BOLT 11 invoice signed by the signer.
    Invoice {
        /// Amount, if any.
        amount_msat: Option<u64>,
        /// Description.
        description: String,
    },
    /// Asks the signer to preapprove paying an invoice.
    Pay {
        /// The invoice.
        invoice: String,
    },
    /// Asks the signer to preapprove a keysend.
    Keysend {
        /// The destination node id (hex).
        node: String,
        /// The amount.
        amount_msat: u64,
    },
    /// Connects to a peer (`id@host:port`) over BOLT 8.
    Connect {
        /// `id@host:port`.
        peer: String,
    },
    /// Opens a channel with a connected peer.
    Open {
        /// The peer's node id (hex).
        peer: String,
        /// Channel value.
        amount_sat: u64,
        /// `anchors` or `static_remotekey`.
        channel_type: String,
    },
    /// Records a wallet output (no chain backend: stands for a deposit on regtest).
    Fund {
        /// Its amount.
        amount_sat: u64,
    },
    /// Writes the encrypted static channel backup again.
    BackupExport,
    /// Decrypts and checks the static channel backup.
    BackupVerify,
    /// Restores channels from a backup file into `restored-channels.json`.
    BackupRestore {
        /// The backup file.
        path: String,
    },
    /// Round-trip latency of every signer call, by message type.
    Stats,
    /// Stops the node.
    Stop,
}

/// The node's answer: `ok` and a JSON result, or an error text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether it worked.
    pub ok: bool,
    /// The result.
    #[serde(default)]
    pub result: serde_json::Value,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Reply {
        Reply {
            ok: true,
            result,
            error: None,
        }
    }
    /// A failure.
    pub fn err(e: impl ToString) -> Reply {
        Reply {
            ok: false,
            result: serde_json::Value::Null,
            error: Some(e.to_string()),
        }
    }
}

/// Binds the socket at `path` (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Reads one request line from `sock` (at most 64 KiB).
pub async fn read_request(sock: &mut BufReader<UnixStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    let n = tokio::io::AsyncReadExt::take(&mut *sock, 64 * 1024)
        .read_line(&mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one reply line.
pub async fn write_reply(sock: &mut BufReader<UnixStream>, reply: &Reply) -> io::Result<()> {
    let mut out = serde_json::to_vec(reply).map_err(io::Error::other)?;
    out.push(b'\n');
    sock.get_mut().write_all(&out).await
}

/// Sends one request to the node at `path` and waits for its reply.
pub async fn request(path: &Path, req: &Request) -> io::Result<Reply> {
    let sock = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the node at {}: {e} (is `node run` running?)",
                path.display()
            ),
        )
    })?;
    let mut sock = BufReader::new(sock);
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    sock.get_mut().write_all(&line).await?;
    let mut reply = String::new();
    if sock.read_line(&mut reply).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the node closed the socket",
        ));
    }
    serde_json::from_str(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"invoice","amount_msat":5,"description":"x"}"#).unwrap();
        assert_eq!(
            r,
            Request::Invoice {
                amount_msat: Some(5),
                description: "x".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::BackupVerify).unwrap(),
            r#"{"cmd":"backup_verify"}"#
        );
    }
}
