//! Openings between two nodes in this process, each with its own real proxy (`vls-proxy`,
//! started as lightningd starts hsmd) and signer daemon with every policy rule enforced,
//! over an in-memory [`MessageIo`] pair.
//!
//! The binaries are built (if needed) with the same cargo, as the whole-system tests do, and
//! hard-linked into a private directory so that a rebuild meanwhile cannot swap them.

use super::*;
use crate::chain::{Outbox, WalletUtxo};
use crate::replay::env::CaseEnv;
use crate::replay::ReplayConfig;
use crate::status::StatusEvent;
use crate::wallet::WalletError;
use crate::{bolt3, init_request};
use bitcoin::hashes::Hash;
use bitcoin::Txid;
use secp256k1::PublicKey;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `vls-proxy` and `signer`, built and linked into a private directory (once per process).
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the node crate sits in the workspace")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["build", "-q", "-p", "vls-proxy", "-p", "signer", "--bins"])
            .status()
            .expect("cannot run cargo build");
        assert!(status.success(), "building vls-proxy and signer failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|d| if d.is_absolute() { d } else { root.join(d) })
            .unwrap_or_else(|| root.join("target"));
        let private =
            std::env::temp_dir().join(format!("node-channel-bins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::create_dir_all(&private).unwrap();
        let take = |name: &str| {
            let from = target.join("debug").join(name);
            let to = private.join(name);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            }
            to
        };
        (take("vls-proxy"), take("signer"))
    })
}

/// One node: its proxy and signer, data directory, store, chain and wallet.
struct TestNode {
    env: CaseEnv,
    id: PublicKey,
    store: Store,
    chain: Outbox,
    wallet: Wallet,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// A node whose signer holds `secret`, with every policy rule enforced and `funds` sat
    /// in one wallet output.
    async fn start(name: &str, secret: u8, funds: u64) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        // Mainnet's delay bound, set explicitly: on regtest short delays pass by default. The
        // anchors channel below pushes 150 000 sat, which the operator allows.
        std::fs::write(
            &policy,
            "default = \"enforce\"\n[limits]\nmin_to_self_delay = 144\nmax_push_msat = 150000000\n",
        )
        .unwrap();
        let (proxy, signer) = binaries().clone();
        let cfg = ReplayConfig {
            proxy_args: Vec::new(),
            corpus: PathBuf::new(),
            policy: Some(policy),
            proxy,
            signer,
            cln_version: "v26.06.6".into(),
            step_timeout: Duration::from_secs(10),
            log_dir: None,
            only: None,
            verbose: false,
        };
        let env = CaseEnv::start(&cfg, name, &[secret; 32], None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let reply = env
            .hsmd
            .master()
            .init(&init_request(Network::Regtest, None))
            .await
            .unwrap();
        let store = Store::open(dir.path().join("data")).unwrap();
        let chain = Outbox::in_dir(store.dir());
        let wallet = Wallet::from_init_reply(&reply, Network::Regtest).unwrap();
        let keyindex = store.next_wallet_index().unwrap();
        chain
            .add_utxo(WalletUtxo {
                txid: Txid::from_byte_array([secret; 32]),
                vout: 0,
                amount_sat: funds,
                keyindex,
            })
            .unwrap();
        TestNode {
            id: reply.node_id.to_public_key().unwrap(),
            env,
            store,
            chain,
            wallet,
            _dir: dir,
        }
    }

    fn ctx(&self) -> NodeContext<'_> {
        NodeContext {
            hsmd: &self.env.hsmd,
            network: Network::Regtest,
            wallet: &self.wallet,
            chain: &self.chain,
            store: &self.store,
        }
    }

    fn bad_requests(&self) -> Vec<StatusEvent> {
        self.env.hsmd.status().bad_requests()
    }
}

/// Runs `open` on `a` and `accept` on `b` against each other.
async fn open_between(
    a: &TestNode,
    b: &TestNode,
    params: &OpenParams,
    policy: &AcceptPolicy,
) -> (
    Result<ChannelRecord, ChannelError>,
    Result<ChannelRecord, ChannelError>,
) {
    let (mut io_a, mut io_b) = memory_pair();
    let (ctx_a, ctx_b) = (a.ctx(), b.ctx());
    let (ra, rb) = tokio::join!(
        open(&ctx_a, &mut io_a, &b.id, params),
        accept(&ctx_b, &mut io_b, &a.id, policy),
    );
    (ra, rb)
}

fn check_pair(a: &ChannelRecord, b: &ChannelRecord, kind: ChannelKind, funding_sat: u64) {
    assert_eq!(a.channel_id, b.channel_id);
    assert_eq!(a.funding_outpoint, b.funding_outpoint);
    assert_eq!(a.state, ChannelState::Ready);
    assert_eq!(b.state, ChannelState::Ready);
    assert_eq!((a.kind, b.kind), (kind, kind));
    assert_eq!((a.capacity_sat, b.capacity_sat), (funding_sat, funding_sat));
    assert!(a.we_opened && !b.we_opened);
    assert_eq!(a.our_keys, b.their_keys);
    assert_eq!(b.our_keys, a.their_keys);
    assert_eq!(
        (a.to_us_msat, a.to_them_msat),
        (b.to_them_msat, b.to_us_msat)
    );
    assert!(a.their_next_point.is_some() && b.their_next_point.is_some());
    assert_eq!(bolt3::channel_id(&a.funding_outpoint), a.channel_id);
}

/// Our first commitment can be completed for broadcast: the signer signs it
/// (`sign_commitment_tx`, as lightningd does to close unilaterally), and with the peer's
/// signature kept in the record both signatures verify.
async fn check_unilateral_close(node: &TestNode, r: &ChannelRecord) {
    use protocol::msgs::SignCommitmentTx;
    use protocol::types::NodeId;
    let peer = NodeId::from_pubkey(&r.peer_id);
    let client = node
        .env
        .hsmd
        .new_client(peer, r.dbid, crate::Subdaemon::Openingd.permissions())
        .await
        .unwrap();
    let point = client
        .get_per_commitment_point(0)
        .await
        .unwrap()
        .per_commitment_point;
    let p = r.params();
    let spec = bolt3::CommitmentSpec {
        number: 0,
        per_commitment_point: point,
        to_us_msat: r.to_us_msat,
        to_them_msat: r.to_them_msat,
        feerate_per_kw: r.feerate_per_kw,
        dust_limit_sat: r.ours.dust_limit_sat,
        htlcs: Vec::new(),
    };
    let c = bolt3::build_commitment(&p, bolt3::Owner::Holder, &spec).unwrap();
    let req = SignCommitmentTx::new(
        peer,
        r.dbid,
        super::hsm::commitment_tx(&p, &c).unwrap(),
        r.their_keys.funding,
        0,
    );
    let ours = node.env.hsmd.master().call(&req).await.unwrap().sig.sig;
    let theirs = r.their_commitment_sig.unwrap();
    assert!(bolt3::verify_commitment_sig(
        &c.tx,
        &p,
        &ours,
        &r.our_keys.funding
    ));
    assert!(bolt3::verify_commitment_sig(
        &c.tx,
        &p,
        &theirs,
        &r.their_keys.funding
    ));
    let tx = bolt3::finalize_commitment(&c.tx, &p, &ours, &theirs);
    assert_eq!(tx.input[0].previous_output, r.funding_outpoint);
    assert_eq!(tx.input[0].witness.len(), 4);
}

#[tokio::test]
async fn nodes_with_real_signers_open_static_remotekey_and_anchors_channels() {
    let a = TestNode::start("opener", 0x11, 5_000_000).await;
    let b = TestNode::start("acceptor", 0x22, 0).await;
    let policy = AcceptPolicy::default();
    let mut funding_txs = Vec::new();
    for (kind, funding_sat, push_msat) in [
        (ChannelKind::StaticRemoteKey, 1_000_000, 0),
        (ChannelKind::Anchors, 2_000_000, 150_000_000),
    ] {
        let mut params = OpenParams::new(funding_sat, kind);
        params.push_msat = push_msat;
        let (ra, rb) = open_between(&a, &b, &params, &policy).await;
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        check_pair(&ra, &rb, kind, funding_sat);
        assert_eq!(rb.to_us_msat, push_msat);

        // The signed funding transaction is in the outbox and pays the 2-of-2.
        let tx = ra.funding_tx.clone().unwrap();
        let out = &tx.output[ra.funding_outpoint.vout as usize];
        assert_eq!(out.value.to_sat(), funding_sat);
        assert_eq!(out.script_pubkey, ra.params().funding_txout().script_pubkey);
        assert!(tx.input.iter().all(|i| i.witness.len() == 2));
        funding_txs.push(tx);
        assert_eq!(a.chain.broadcasts().unwrap(), funding_txs);
    }
    // The second channel was funded from the first one's change.
    assert_eq!(
        funding_txs[1].input[0].previous_output.txid,
        funding_txs[0].compute_txid()
    );
    let left = a.chain.utxos().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].amount_sat < 5_000_000 - 3_000_000);

    // Both nodes kept their channels.
    for n in [&a, &b] {
        let reopened = Store::open(n.store.dir()).unwrap();
        let channels = reopened.channels().unwrap();
        assert_eq!(channels.len(), 2);
        assert!(channels.iter().all(ChannelRecord::is_ready));
    }
    assert!(a.bad_requests().is_empty(), "{:?}", a.bad_requests());
    assert!(b.bad_requests().is_empty(), "{:?}", b.bad_requests());
    for n in [&a, &b] {
        for r in n.store.channels().unwrap() {
            check_unilateral_close(n, &r).await;
        }
    }
    a.env.teardown().await;
    b.env.teardown().await;
}

#[tokio::test]
async fn refusals_reach_both_sides_with_their_reasons() {
    let a = TestNode::start("opener", 0x33, 5_000_000).await;
    let b = TestNode::start("acceptor", 0x44, 0).await;

    // The acceptor's policy: no anchors.
    let only_static = AcceptPolicy {
        kinds: vec![ChannelKind::StaticRemoteKey],
        ..AcceptPolicy::default()
    };
    let params = OpenParams::new(1_000_000, ChannelKind::Anchors);
    let (ra, rb) = open_between(&a, &b, &params, &only_static).await;
    assert!(
        matches!(rb, Err(ChannelError::Refused(ref m)) if m.contains("channel type")),
        "{rb:?}"
    );
    assert!(
        matches!(ra, Err(ChannelError::PeerFailed(ref m)) if m.contains("channel type")),
        "{ra:?}"
    );

    // Our own side asks for a delay the signer's policy forbids: the signer refuses
    // setup_channel, naming its rule, and the peer hears why.
    let lax = PeerLimits {
        to_self_delay: 1..=5000,
        ..PeerLimits::default()
    };
    let mut params = OpenParams::new(1_000_000, ChannelKind::StaticRemoteKey);
    params.config.to_self_delay = 100;
    params.limits = lax.clone();
    let policy = AcceptPolicy {
        limits: lax,
        ..AcceptPolicy::default()
    };
    let (ra, rb) = open_between(&a, &b, &params, &policy).await;
    match &ra {
        Err(ChannelError::SignerRefused { request, reason }) => {
            assert_eq!(*request, "setup_channel");
            assert!(reason.contains("channel-to-self-delay"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(rb, Err(ChannelError::PeerFailed(ref m)) if m.contains("channel-to-self-delay")),
        "{rb:?}"
    );
    // Nothing was spent, and the node can still open a channel.
    assert!(a.chain.broadcasts().unwrap().is_empty());
    assert!(a.store.channels().unwrap().is_empty());
    let (ra, rb) = open_between(
        &a,
        &b,
        &OpenParams::new(1_000_000, ChannelKind::StaticRemoteKey),
        &AcceptPolicy::default(),
    )
    .await;
    check_pair(
        &ra.unwrap(),
        &rb.unwrap(),
        ChannelKind::StaticRemoteKey,
        1_000_000,
    );

    // Too little in the wallet: refused before the peer hears anything.
    let (mut io, mut peer) = memory_pair();
    let big = OpenParams::new(50_000_000, ChannelKind::StaticRemoteKey);
    let ra = open(&a.ctx(), &mut io, &b.id, &big).await;
    drop(io);
    assert!(peer.recv().await.is_err(), "the peer heard something");
    assert!(
        matches!(
            ra,
            Err(ChannelError::Wallet(WalletError::InsufficientFunds { .. }))
        ),
        "{ra:?}"
    );
    a.env.teardown().await;
    b.env.teardown().await;
}

#[tokio::test]
async fn a_bad_signature_from_the_peer_is_refused_before_the_signer_sees_it() {
    let a = TestNode::start("opener", 0x55, 5_000_000).await;
    let b = TestNode::start("acceptor", 0x66, 0).await;
    let (mut io_a, mut io_b) = memory_pair();
    let params = OpenParams::new(1_000_000, ChannelKind::Anchors);
    // A man in the middle that flips a bit of funding_created's signature.
    let tamper = async {
        let policy = AcceptPolicy::default();
        let (mut mid_a, mut mid_b) = memory_pair();
        let relay = async {
            loop {
                tokio::select! {
                    m = io_b.recv() => {
                        let Ok((t, mut p)) = m else { break };
                        if t == msgs::FUNDING_CREATED {
                            let last = p.len() - 1;
                            p[last] ^= 1;
                        }
                        if mid_b.send(t, &p).await.is_err() { break }
                    }
                    m = mid_b.recv() => {
                        let Ok((t, p)) = m else { break };
                        if io_b.send(t, &p).await.is_err() { break }
                    }
                }
            }
        };
        let acceptor = async {
            let r = accept(&b.ctx(), &mut mid_a, &a.id, &policy).await;
            drop(mid_a);
            r
        };
        tokio::join!(acceptor, relay).0
    };
    let ctx_a = a.ctx();
    let (ra, rb) = tokio::join!(open(&ctx_a, &mut io_a, &b.id, &params), tamper);
    assert!(matches!(rb, Err(ChannelError::BadSignature(0))), "{rb:?}");
    assert!(matches!(ra, Err(ChannelError::PeerFailed(_))), "{ra:?}");
    assert!(b.bad_requests().is_empty());
    assert!(a.chain.broadcasts().unwrap().is_empty());
    a.env.teardown().await;
    b.env.teardown().await;
}

/// The transport's peer as a [`MessageIo`] (what the transport itself provides).
struct PeerIo<'a, S>(&'a mut crate::transport::Peer<S>);

impl<S> MessageIo for PeerIo<'_, S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    type Error = crate::transport::PeerError;

    async fn send(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), Self::Error> {
        let mut msg = msg_type.to_be_bytes().to_vec();
        msg.extend_from_slice(payload);
        self.0.send_raw(&msg).await
    }

    async fn recv(&mut self) -> Result<(u16, Vec<u8>), Self::Error> {
        let msg = self.0.recv().await?;
        let bytes = msg.encode()?;
        Ok((msg.msg_type(), bytes[2..].to_vec()))
    }
}

#[tokio::test]
async fn a_channel_opens_over_bolt8_with_both_node_keys_in_their_signers() {
    use crate::transport::{connectd_client, Features, Init, Peer};
    use bitcoin::blockdata::constants::ChainHash;
    use protocol::types::NodeId;

    let a = TestNode::start("opener", 0x77, 5_000_000).await;
    let b = TestNode::start("acceptor", 0x88, 0).await;
    let ecdh_a = connectd_client(&a.env.hsmd, NodeId::from_pubkey(&a.id))
        .await
        .unwrap();
    let ecdh_b = connectd_client(&b.env.hsmd, NodeId::from_pubkey(&b.id))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (pa, pb) = tokio::join!(Peer::connect_tcp(addr, &ecdh_a, a.id, b.id), async {
        let (stream, _) = listener.accept().await.unwrap();
        Peer::accept(stream, &ecdh_b, b.id).await
    });
    let (mut pa, mut pb) = (pa.unwrap(), pb.unwrap());
    assert_eq!(*pb.remote_id(), a.id);
    let init = Init::new(
        Features::node_default(),
        vec![ChainHash::using_genesis_block(Network::Regtest)],
    );
    let (ia, ib) = tokio::join!(pa.exchange_init(&init), pb.exchange_init(&init));
    ia.unwrap();
    ib.unwrap();
    pa.set_handled_types(msgs::is_channel_message);
    pb.set_handled_types(msgs::is_channel_message);
    a.store.touch_peer(&b.id, Some(&addr.to_string())).unwrap();

    let (ctx_a, ctx_b) = (a.ctx(), b.ctx());
    let params = OpenParams::new(1_500_000, ChannelKind::Anchors);
    let policy = AcceptPolicy::default();
    let (mut io_a, mut io_b) = (PeerIo(&mut pa), PeerIo(&mut pb));
    let (ra, rb) = tokio::join!(
        open(&ctx_a, &mut io_a, &b.id, &params),
        accept(&ctx_b, &mut io_b, &a.id, &policy),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    check_pair(&ra, &rb, ChannelKind::Anchors, 1_500_000);

    // Each node knows the other as a peer, the opener with the address it dialled.
    let peer = a.store.peer(&b.id).unwrap().unwrap();
    assert_eq!(peer.addresses, [addr.to_string()]);
    assert!(b.store.peer(&a.id).unwrap().is_some());
    let backup = ra.to_backup(peer.addresses.clone());
    assert_eq!(backup.our_to_self_delay, rb.ours.to_self_delay);
    assert_eq!(backup.channel_type, [12, 22]);
    assert!(a.bad_requests().is_empty() && b.bad_requests().is_empty());
    a.env.teardown().await;
    b.env.teardown().await;
}

#[tokio::test]
async fn concurrent_openings_fund_from_different_outputs() {
    let a = TestNode::start("opener", 0x99, 2_000_000).await;
    let b = TestNode::start("acceptor", 0xaa, 0).await;
    let c = TestNode::start("acceptor2", 0xbb, 0).await;
    let keyindex = a.store.next_wallet_index().unwrap();
    a.chain
        .add_utxo(WalletUtxo {
            txid: Txid::from_byte_array([0x9a; 32]),
            vout: 3,
            amount_sat: 2_000_000,
            keyindex,
        })
        .unwrap();
    let (mut ab, mut ba) = memory_pair();
    let (mut ac, mut ca) = memory_pair();
    let (ctx_a, ctx_b, ctx_c) = (a.ctx(), b.ctx(), c.ctx());
    let params = OpenParams::new(1_500_000, ChannelKind::StaticRemoteKey);
    let policy = AcceptPolicy::default();
    let (r1, r2, rb, rc) = tokio::join!(
        open(&ctx_a, &mut ab, &b.id, &params),
        open(&ctx_a, &mut ac, &c.id, &params),
        accept(&ctx_b, &mut ba, &a.id, &policy),
        accept(&ctx_c, &mut ca, &a.id, &policy),
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    check_pair(&r1, &rb.unwrap(), ChannelKind::StaticRemoteKey, 1_500_000);
    check_pair(&r2, &rc.unwrap(), ChannelKind::StaticRemoteKey, 1_500_000);
    let (t1, t2) = (r1.funding_tx.unwrap(), r2.funding_tx.unwrap());
    assert_ne!(t1.input[0].previous_output, t2.input[0].previous_output);
    assert_eq!(a.chain.broadcasts().unwrap().len(), 2);
    for n in [a, b, c] {
        n.env.teardown().await;
    }
}
