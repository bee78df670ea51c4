//! `node run`: the node as a long-running process. It starts its `vls-proxy` exactly as
//! lightningd starts hsmd, waits for the signer to answer `hsmd_init`, and then serves its
//! control socket (see [`crate::control`]); peers and channels come in through
//! [`crate::transport`] and [`crate::channel`].

use crate::backup::{self, BackupKey, BACKUP_FILE};
use crate::chain::{Outbox, WalletUtxo};
use crate::channel::{self, AcceptPolicy, MessageIo, NodeContext, OpenParams};
use crate::control::{self, Reply, Request, CONTROL_SOCKET};
use crate::invoice::{create_invoice, InvoiceBook, InvoiceRequest};
use crate::payments::{PaymentError, Payments};
use crate::store::Store as NodeStore;
use crate::transport::{Features, Init, Message, Peer, PeerError};
use crate::wallet::Wallet;
use crate::{init_request, HsmClient, Hsmd, HsmdConfig, Subdaemon};
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::hashes::Hash;
use bitcoin::Network;
use protocol::msgs::InitReplyV4;
use protocol::types::NodeId;
use secp256k1::PublicKey;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

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
    /// The node's own files.
    #[error("{0}")]
    Files(String),
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
    /// The on-chain wallet (addresses from the signer's xpub).
    pub wallet: Wallet,
    /// Channels and peers on disk.
    pub store: NodeStore,
    /// Where funding transactions go, and the wallet's outputs.
    pub chain: Outbox,
    /// Connected peers: a task owns each, commands go to it.
    peers: Mutex<HashMap<PublicKey, mpsc::Sender<PeerCommand>>>,
    invoices: Mutex<InvoiceBook>,
}

/// What a peer's task can be asked to do.
enum PeerCommand {
    Open(
        OpenParams,
        oneshot::Sender<Result<channel::ChannelRecord, String>>,
    ),
}

/// A peer's BOLT 8 connection as the channel code's message pipe.
struct PeerIo<'a>(&'a mut Peer<TcpStream>);

impl MessageIo for PeerIo<'_> {
    type Error = PeerError;

    async fn send(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), PeerError> {
        let mut msg = msg_type.to_be_bytes().to_vec();
        msg.extend_from_slice(payload);
        self.0.send_raw(&msg).await
    }

    async fn recv(&mut self) -> Result<(u16, Vec<u8>), PeerError> {
        let msg = self.0.recv().await?;
        let bytes = msg.encode()?;
        Ok((msg.msg_type(), bytes.get(2..).unwrap_or_default().to_vec()))
    }
}

impl Node {
    /// Starts the proxy and waits for the signer's answer to `hsmd_init`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let hsmd_config = HsmdConfig::new(&config.proxy, &config.cln_version, &config.data_dir)
            .env("VLS_PORT", config.signer_port.to_string());
        let hsmd = Hsmd::spawn(hsmd_config).await?;
        log::info!("waiting for the signer to dial port {}", config.signer_port);
        let init = hsmd
            .master()
            .init(&init_request(config.network, None))
            .await?;
        let node_id = init
            .node_id
            .to_public_key()
            .ok_or(NodeError::BadNodeId(init.node_id))?;
        log::info!("signer answered: node id {node_id}");
        let connectd = hsmd
            .new_client(init.node_id, 0, Subdaemon::Connectd.permissions())
            .await?;
        let invoices = InvoiceBook::open(&config.data_dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let wallet = Wallet::from_init_reply(&init, config.network)
            .map_err(|e| NodeError::Files(e.to_string()))?;
        let store =
            NodeStore::open(&config.data_dir).map_err(|e| NodeError::Files(e.to_string()))?;
        let chain = Outbox::in_dir(&config.data_dir);
        let node = Node {
            config,
            hsmd,
            init,
            node_id,
            connectd: Arc::new(connectd),
            wallet,
            store,
            chain,
            peers: Mutex::new(HashMap::new()),
            invoices: Mutex::new(invoices),
        };
        // Funding transactions of channels not ready yet go out again (broadcasting is
        // idempotent).
        for c in node
            .store
            .channels()
            .map_err(|e| NodeError::Files(e.to_string()))?
        {
            if !c.is_ready() {
                if let Some(tx) = &c.funding_tx {
                    use crate::chain::Chain;
                    let _ = node.chain.broadcast(tx);
                }
            }
        }
        Ok(node)
    }

    fn context(&self) -> NodeContext<'_> {
        NodeContext {
            hsmd: &self.hsmd,
            network: self.config.network,
            wallet: &self.wallet,
            chain: &self.chain,
            store: &self.store,
        }
    }

    fn our_init(&self) -> Init {
        Init::new(
            Features::node_default(),
            vec![ChainHash::using_genesis_block(self.config.network)],
        )
    }

    /// Takes over a connected peer: exchanges `init`, then serves it on its own task.
    async fn adopt(
        self: &Arc<Self>,
        mut peer: Peer<TcpStream>,
        address: Option<String>,
    ) -> Result<PublicKey, String> {
        peer.exchange_init(&self.our_init())
            .await
            .map_err(|e| e.to_string())?;
        peer.set_handled_types(channel::msgs::is_channel_message);
        let id = *peer.remote_id();
        let _ = self.store.touch_peer(&id, address.as_deref());
        let (tx, rx) = mpsc::channel(4);
        self.peers.lock().await.insert(id, tx);
        log::info!("peer {id} connected");
        tokio::spawn(self.clone().serve_peer(peer, rx));
        Ok(id)
    }

    /// A peer's task: answers its messages (an `open_channel` is accepted under the node's
    /// accept policy) and carries out commands for it.
    async fn serve_peer(
        self: Arc<Self>,
        mut peer: Peer<TcpStream>,
        mut commands: mpsc::Receiver<PeerCommand>,
    ) {
        let id = *peer.remote_id();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(PeerCommand::Open(params, reply)) => {
                        let ctx = self.context();
                        let r = channel::open(&ctx, &mut PeerIo(&mut peer), &id, &params).await;
                        if let Ok(rec) = &r {
                            self.channel_changed(rec).await;
                        }
                        let _ = reply.send(r.map_err(|e| e.to_string()));
                    }
                },
                msg = peer.recv() => match msg {
                    Ok(Message::Unknown { msg_type, payload }) => {
                        if let Ok(channel::msgs::Received::OpenChannel(open)) = channel::msgs::decode(msg_type, &payload) {
                            let ctx = self.context();
                            let policy = AcceptPolicy::default();
                            match channel::accept_open_channel(&ctx, &mut PeerIo(&mut peer), &id, open, &policy).await {
                                Ok(rec) => self.channel_changed(&rec).await,
                                Err(e) => log::warn!("channel from {id} not accepted: {e}"),
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::info!("peer {id} gone: {e}");
                        break;
                    }
                },
            }
        }
        self.peers.lock().await.remove(&id);
    }

    /// A channel opened (or changed): the static channel backup is written again.
    async fn channel_changed(&self, rec: &channel::ChannelRecord) {
        log::info!(
            "channel {} with {} is {:?}",
            rec.channel_id_hex(),
            rec.peer_id,
            rec.state
        );
        if let Err(e) = self.write_backup().await {
            log::error!("static channel backup not written: {e}");
        }
    }

    /// The channels as the static channel backup records them.
    fn backup_records(&self) -> Result<Vec<backup::ChannelRecord>, String> {
        let channels = self.store.channels().map_err(|e| e.to_string())?;
        Ok(channels
            .iter()
            .map(|c| {
                let addresses = self
                    .store
                    .peer(&c.peer_id)
                    .ok()
                    .flatten()
                    .map(|p| p.addresses)
                    .unwrap_or_default();
                c.to_backup(addresses)
            })
            .collect())
    }

    /// Accepts peers on `listener` until the process ends.
    async fn listen(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, addr)) = listener.accept().await else {
                continue;
            };
            let node = self.clone();
            tokio::spawn(async move {
                match Peer::accept(stream, &*node.connectd, node.node_id).await {
                    Ok(peer) => {
                        if let Err(e) = node.adopt(peer, None).await {
                            log::warn!("peer from {addr}: {e}");
                        }
                    }
                    Err(e) => log::warn!("handshake with {addr} failed: {e}"),
                }
            });
        }
    }

    fn master(&self) -> &HsmClient {
        self.hsmd.master()
    }

    /// Carries out one control request.
    pub async fn execute(self: &Arc<Self>, req: Request) -> Reply {
        let r = match req {
            Request::Connect { peer } => self.connect(&peer).await,
            Request::Open {
                peer,
                amount_sat,
                channel_type,
            } => self.open(&peer, amount_sat, &channel_type).await,
            Request::Fund { amount_sat } => self.fund(amount_sat),
            other => self.try_execute(other).await,
        };
        match r {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(e),
        }
    }

    async fn connect(self: &Arc<Self>, peer: &str) -> Result<serde_json::Value, String> {
        let (id, addr) = peer.split_once('@').ok_or("expected node_id@host:port")?;
        let id: PublicKey = id.parse().map_err(|e| format!("node id: {e}"))?;
        let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("address: {e}"))?;
        let p = Peer::connect_tcp(addr, &*self.connectd, self.node_id, id)
            .await
            .map_err(|e| e.to_string())?;
        let id = self.adopt(p, Some(addr.to_string())).await?;
        Ok(json!({"id": id.to_string(), "address": addr.to_string()}))
    }

    async fn open(
        self: &Arc<Self>,
        peer: &str,
        amount_sat: u64,
        kind: &str,
    ) -> Result<serde_json::Value, String> {
        let id: PublicKey = peer.parse().map_err(|e| format!("node id: {e}"))?;
        let kind = kind.parse().map_err(|e| format!("channel type: {e}"))?;
        let tx = self
            .peers
            .lock()
            .await
            .get(&id)
            .cloned()
            .ok_or("not connected to that peer")?;
        let (reply, rx) = oneshot::channel();
        tx.send(PeerCommand::Open(OpenParams::new(amount_sat, kind), reply))
            .await
            .map_err(|_| "the peer is gone")?;
        let rec = rx.await.map_err(|_| "the peer is gone")??;
        Ok(json!({
            "channel_id": rec.channel_id_hex(),
            "funding_txid": rec.funding_outpoint.txid.to_string(),
            "funding_output": rec.funding_outpoint.vout,
            "capacity_sat": rec.capacity_sat,
            "state": format!("{:?}", rec.state),
        }))
    }

    /// Records a wallet output of `amount_sat` at a new wallet address. There is no chain
    /// backend: on regtest this stands for a deposit the operator made.
    fn fund(&self, amount_sat: u64) -> Result<serde_json::Value, String> {
        let index = self.store.next_wallet_index().map_err(|e| e.to_string())?;
        let address = self.wallet.address(index).map_err(|e| e.to_string())?;
        let mut seed = self.node_id.serialize().to_vec();
        seed.extend_from_slice(&index.to_be_bytes());
        let txid = bitcoin::Txid::from_byte_array(
            bitcoin::hashes::sha256d::Hash::hash(&seed).to_byte_array(),
        );
        self.chain
            .add_utxo(WalletUtxo {
                txid,
                vout: 0,
                amount_sat,
                keyindex: index,
            })
            .map_err(|e| e.to_string())?;
        Ok(json!({"address": address.to_string(), "amount_sat": amount_sat, "keyindex": index}))
    }

    async fn try_execute(&self, req: Request) -> Result<serde_json::Value, String> {
        match req {
            Request::Getinfo => Ok(json!({
                "id": self.node_id.to_string(),
                "network": self.config.network.to_string(),
                "bip32": self.init.bip32.to_string(),
                "hsm_version": self.init.hsm_version,
                "channels": self.store.channels().map(|c| c.len()).unwrap_or(0),
                "peers": self.peers.lock().await.len(),
            })),
            Request::Invoice {
                amount_msat,
                description,
            } => {
                let req = InvoiceRequest::new(amount_msat, description);
                let issued =
                    create_invoice(self.master(), &self.node_id, self.config.network, &req)
                        .await
                        .map_err(|e| e.to_string())?;
                self.invoices
                    .lock()
                    .await
                    .add(&issued)
                    .map_err(|e| e.to_string())?;
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
                let key = BackupKey::derive(self.master())
                    .await
                    .map_err(|e| e.to_string())?;
                let path = self.config.data_dir.join(BACKUP_FILE);
                let b =
                    backup::read_backup(&path, &key, &self.node_id).map_err(|e| e.to_string())?;
                Ok(json!({"path": path, "channels": b.channels.len(), "verified": true}))
            }
            Request::BackupRestore { path } => {
                let key = BackupKey::derive(self.master())
                    .await
                    .map_err(|e| e.to_string())?;
                let out = backup::restore(
                    std::path::Path::new(&path),
                    &self.config.data_dir,
                    &key,
                    &self.node_id,
                )
                .map_err(|e| e.to_string())?;
                Ok(json!({"restored_to": out}))
            }
            Request::Stats => {
                Ok(serde_json::to_value(crate::latency::snapshot()).unwrap_or_default())
            }
            Request::Connect { .. } | Request::Open { .. } | Request::Fund { .. } => {
                Err("needs the node's handle (internal error)".into())
            }
            Request::Stop => Ok(json!({"stopping": true})),
        }
    }

    /// Seals the current channels into `channel.backup` (write-temp-then-rename).
    pub async fn write_backup(&self) -> Result<serde_json::Value, String> {
        let channels = self.backup_records()?;
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
    // Peers we know an address of are dialled again.
    for peer in node.store.peers().unwrap_or_default() {
        let Some(addr) = peer.addresses.first().cloned() else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let target = format!("{}@{addr}", peer.node_id);
            match node.connect(&target).await {
                Ok(_) => log::info!("reconnected to {target}"),
                Err(e) => log::warn!("reconnecting to {target}: {e}"),
            }
        });
    }
    if let Some(addr) = node.config.listen {
        let l = tokio::net::TcpListener::bind(addr).await?;
        log::info!("listening for peers on {addr}");
        tokio::spawn(node.clone().listen(l));
    }
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
