//! `node run`: the node as a long-running process. It starts its `vls-proxy` exactly as
//! lightningd starts hsmd, waits for the signer to answer `hsmd_init`, and then serves its
//! control socket (see [`crate::control`]); peers and channels come in through
//! [`crate::transport`] and [`crate::channel`].

use crate::backup::{self, BackupKey, ChannelRecord, BACKUP_FILE};
use crate::control::{self, Reply, Request, CONTROL_SOCKET};
use crate::invoice::{create_invoice, InvoiceBook, InvoiceRequest};
use crate::payments::{PaymentError, Payments};
use crate::{init_request, Hsmd, HsmdConfig, HsmClient, Subdaemon};
use bitcoin::Network;
use protocol::msgs::InitReplyV4;
use protocol::types::NodeId;
use secp256k1::PublicKey;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::BufReader;
use tokio::sync::Mutex;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the node keeps its files; also its proxy's network directory (`vls-tls/` there).
    pub data_dir: PathBuf,
    /// The network.
    pub network: Network,
    /// The `vls-proxy` executable.
    pub proxy: PathBuf,
    /// The Core Lightning version the proxy reports.
    pub cln_version: String,
    /// The port the node's signer dials (`VLS_PORT` of the proxy).
    pub signer_port: u16,
    /// Where peers connect (BOLT 8), if anywhere.
    pub listen: Option<std::net::SocketAddr>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The proxy did not start.
    #[error("starting vls-proxy: {0}")]
    Spawn(#[from] crate::SpawnError),
    /// The signer did not answer init.
    #[error("hsmd_init: {0}")]
    Init(#[from] crate::ClientError),
    /// The signer's node id is not a valid key.
    #[error("the signer's node id {0} is not a valid public key")]
    BadNodeId(NodeId),
    /// A file or socket.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running node.
pub struct Node {
    /// The config it runs with.
    pub config: NodeConfig,
    /// Its proxy (and through it, its signer).
    pub hsmd: Hsmd,
    /// The signer's answer to init.
    pub init: InitReplyV4,
    /// The node id.
    pub node_id: PublicKey,
    /// The connectd-like client (ECDH for BOLT 8).
    pub connectd: Arc<HsmClient>,
    /// The channels, as recorded for the static channel backup.
    pub channels: Mutex<Vec<ChannelRecord>>,
    invoices: Mutex<InvoiceBook>,
}

impl Node {
    /// Starts the proxy and waits for the signer's answer to `hsmd_init`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let hsmd_config = HsmdConfig::new(&config.proxy, &config.cln_version, &config.data_dir)
            .env("VLS_PORT", config.signer_port.to_string());
        let hsmd = Hsmd::spawn(hsmd_config).await?;
        log::info!("waiting for the signer to dial port {}", config.signer_port);
        let init = hsmd.master().init(&init_request(config.network, None)).await?;
        let node_id = init.node_id.to_public_key().ok_or(NodeError::BadNodeId(init.node_id))?;
        log::info!("signer answered: node id {node_id}");
        let connectd = hsmd
            .new_client(init.node_id, 0, Subdaemon::Connectd.permissions())
            .await?;
        let invoices = InvoiceBook::open(&config.data_dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Node {
            config,
            hsmd,
            init,
            node_id,
            connectd: Arc::new(connectd),
            channels: Mutex::new(Vec::new()),
            invoices: Mutex::new(invoices),
        })
    }

    fn master(&self) -> &HsmClient {
        self.hsmd.master()
    }

    /// Carries out one control request.
    pub async fn execute(&self, req: Request) -> Reply {
        match self.try_execute(req).await {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(e),
        }
    }

    async fn try_execute(&self, req: Request) -> Result<serde_json::Value, String> {
        match req {
            Request::Getinfo => Ok(json!({
                "id": self.node_id.to_string(),
                "network": self.config.network.to_string(),
                "bip32": self.init.bip32.to_string(),
                "hsm_version": self.init.hsm_version,
                "channels": self.channels.lock().await.len(),
            })),
            Request::Invoice { amount_msat, description } => {
                let req = InvoiceRequest::new(amount_msat, description);
                let issued = create_invoice(self.master(), &self.node_id, self.config.network, &req)
                    .await
                    .map_err(|e| e.to_string())?;
                self.invoices.lock().await.add(&issued).map_err(|e| e.to_string())?;
                Ok(json!({
                    "bolt11": issued.invoice.to_string(),
                    "payment_hash": issued.invoice.payment_hash().to_string(),
                }))
            }
            Request::Pay { invoice } => {
                let p = Payments::from_init_reply(self.master(), self.config.network, &self.init);
                let a = p.pay(&invoice).await.map_err(refusal)?;
                Ok(json!({
                    "approved": true,
                    "payment_hash": a.payment_hash.to_string(),
                    "destination": a.destination.to_string(),
                    "amount_msat": a.amount_msat,
                }))
            }
            Request::Keysend { node, amount_msat } => {
                let dest: PublicKey = node.parse().map_err(|e| format!("node id: {e}"))?;
                let p = Payments::from_init_reply(self.master(), self.config.network, &self.init);
                let a = p.keysend(&dest, amount_msat).await.map_err(refusal)?;
                Ok(json!({"approved": true, "payment_hash": a.payment_hash.to_string()}))
            }
            Request::BackupExport => self.write_backup().await,
            Request::BackupVerify => {
                let key = BackupKey::derive(self.master()).await.map_err(|e| e.to_string())?;
                let path = self.config.data_dir.join(BACKUP_FILE);
                let b = backup::read_backup(&path, &key, &self.node_id).map_err(|e| e.to_string())?;
                Ok(json!({"path": path, "channels": b.channels.len(), "verified": true}))
            }
            Request::BackupRestore { path } => {
                let key = BackupKey::derive(self.master()).await.map_err(|e| e.to_string())?;
                let out = backup::restore(
                    std::path::Path::new(&path),
                    &self.config.data_dir,
                    &key,
                    &self.node_id,
                )
                .map_err(|e| e.to_string())?;
                Ok(json!({"restored_to": out}))
            }
            Request::Stats => Ok(serde_json::to_value(crate::latency::snapshot()).unwrap_or_default()),
            Request::Connect { .. } | Request::Open { .. } => {
                Err("this node does not connect to peers yet".into())
            }
            Request::Stop => Ok(json!({"stopping": true})),
        }
    }

    /// Seals the current channels into `channel.backup` (write-temp-then-rename).
    pub async fn write_backup(&self) -> Result<serde_json::Value, String> {
        let channels = self.channels.lock().await.clone();
        let path = self.config.data_dir.join(BACKUP_FILE);
        let b = backup::export(self.master(), &path, &self.node_id, channels)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({"path": path, "channels": b.channels.len()}))
    }
}

/// A payment refusal, with the policy's reason.
fn refusal(e: PaymentError) -> String {
    match e {
        PaymentError::Refused { reason } => format!("the signer refused the payment: {reason}"),
        other => other.to_string(),
    }
}

/// Runs the node until `stop` over its control socket (or the proxy exits).
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    let node = Arc::new(Node::start(config).await?);
    let listener = control::bind(&node.config.data_dir.join(CONTROL_SOCKET))?;
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = stop_rx.recv() => break,
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else { continue };
                let node = node.clone();
                let stop_tx = stop_tx.clone();
                tokio::spawn(async move {
                    let mut sock = BufReader::new(sock);
                    while let Ok(Some(req)) = control::read_request(&mut sock).await {
                        let stop = req == Request::Stop;
                        let reply = node.execute(req).await;
                        let _ = control::write_reply(&mut sock, &reply).await;
                        if stop {
                            let _ = stop_tx.send(()).await;
                            return;
                        }
                    }
                });
            }
        }
    }
    log::info!("node stopping");
    Ok(())
}
