//! BOLT 8 / BOLT 1 interop with an independent implementation: Core Lightning's Python
//! `pyln-proto`, installed from PyPI into a venv that the test suite creates
//! ([`tests::pyln_python`]: `<target>/pyln-venv`, reused when present; `PYLN_VENV` names
//! another one).
//!
//! Both ways — pyln connects to our node, our node connects to pyln — with `init`
//! exchanged and 600 pings each way (over 1000 messages per direction: both keys rotate on
//! both sides), then a `warning` answered by an `error`. The script is `tests/py/peer.py`.
//!
//! Our side's static key is a local test key for the first two tests; the last one uses
//! the real path: `vls-proxy` started as lightningd starts hsmd, a `signer` daemon, and a
//! connectd client whose `hsmd_ecdh_req` is the handshake's static-key ECDH.
//!
//! Needs: `python3` with the `venv` module and `ensurepip` (Debian/Ubuntu:
//! `apt-get install python3-venv`), and access to PyPI for `pip install`.

use bitcoin::blockdata::constants::ChainHash;
use bitcoin::Network;
use node::transport::wire::ALL_CHANNELS;
use node::transport::{connectd_client, Ecdh, Features, Init, Message, Notice, Peer};
use secp256k1::ecdh::SharedSecret;
use secp256k1::{PublicKey, Secp256k1, SecretKey};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Child;

/// Pings each way: 600 pings + 600 pongs + the rest is over 1000 messages per direction.
const PINGS: u16 = 600;
/// How long one whole session may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(180);
/// pyln's node key.
const PYLN_KEY: [u8; 32] = [0x33; 32];

/// A static key held in memory: test data standing in for the signer.
struct LocalKey(SecretKey);

impl Ecdh for LocalKey {
    type Error = Infallible;
    async fn ecdh(&self, point: &PublicKey) -> Result<[u8; 32], Infallible> {
        Ok(SharedSecret::new(point, &self.0).secret_bytes())
    }
}

impl LocalKey {
    fn public_key(&self) -> PublicKey {
        PublicKey::from_secret_key(&Secp256k1::new(), &self.0)
    }
}

fn pyln_id() -> PublicKey {
    PublicKey::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&PYLN_KEY).unwrap(),
    )
}

fn peer_script() -> PathBuf {
    tests::workspace_root().join("tests/py/peer.py")
}

fn pyln(args: &[String]) -> Child {
    let mut cmd = tokio::process::Command::new(tests::pyln_python());
    cmd.arg(peer_script())
        .arg("--privkey")
        .arg(hex::encode(PYLN_KEY))
        .arg("--pings")
        .arg(PINGS.to_string())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("cannot start peer.py")
}

/// Waits for the script and returns its stdout; fails with its stderr.
async fn finish(mut child: Child, stdout_so_far: String) -> String {
    let mut out = stdout_so_far;
    let mut err = String::new();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let (a, b) = tokio::join!(so.read_to_string(&mut out), se.read_to_string(&mut err));
    a.unwrap();
    b.unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "peer.py failed ({status}):\n{out}\n{err}");
    out
}

fn our_init() -> Init {
    Init::new(
        Features::node_default(),
        vec![ChainHash::using_genesis_block(Network::Regtest)],
    )
}

/// Our side of peer.py's session.
async fn session<S>(peer: &mut Peer<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let theirs = peer.exchange_init(&our_init()).await.unwrap().clone();
    assert_eq!(
        theirs.networks,
        Some(vec![ChainHash::using_genesis_block(Network::Regtest)])
    );
    let f = theirs.combined_features();
    assert!(f.is_set(8) && f.is_set(12) && f.is_set(14) && f.is_set(101));

    // We ping; pyln answers.
    for i in 0..PINGS {
        let want = (i * 7) % 1000;
        peer.ping(want, 8).await.unwrap();
        match peer.recv().await.unwrap() {
            Message::Pong(p) => assert_eq!(p.byteslen, want, "pong {i}"),
            other => panic!("ping {i}: got {other:?}"),
        }
    }
    // pyln pings (answered inside recv), after an odd unknown message (ignored), then
    // warns that it is done.
    match peer.recv().await.unwrap() {
        Message::Warning(n) => {
            assert_eq!(n.channel_id, ALL_CHANNELS);
            assert_eq!(n.text(), "pyln done");
        }
        other => panic!("expected pyln's warning, got {other:?}"),
    }
    peer.send(&Message::Error(Notice::connection("bye from node")))
        .await
        .unwrap();
    // pyln closes.
    assert!(peer.recv().await.is_err());
}

fn check_output(out: &str, our_id: &PublicKey) {
    let line = out
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| {
            panic!("peer.py did not finish its session:\n{out}");
        });
    assert!(line.contains(&format!("remote={our_id}")), "{line}");
    assert!(line.contains("error='bye from node'"), "{line}");
    assert!(line.contains("rotated=True"), "{line}");
}

/// pyln connects to our listening port; our static key's ECDH is `ecdh`'s.
async fn pyln_connects_to<E: Ecdh + Sync>(ecdh: &E, our_id: PublicKey) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = pyln(&[
        "--connect".into(),
        format!("127.0.0.1:{port}"),
        "--node-id".into(),
        our_id.to_string(),
    ]);
    let run = async {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut peer = Peer::accept(stream, ecdh, our_id).await.unwrap();
        assert_eq!(peer.remote_id(), &pyln_id());
        session(&mut peer).await;
    };
    tokio::time::timeout(SESSION_TIMEOUT, run)
        .await
        .expect("session timed out");
    let out = tokio::time::timeout(SESSION_TIMEOUT, finish(child, String::new()))
        .await
        .expect("peer.py did not exit");
    check_output(&out, &our_id);
}

/// Our node connects to pyln's listening port.
async fn we_connect_to_pyln<E: Ecdh + Sync>(ecdh: &E, our_id: PublicKey) {
    let mut child = pyln(&[
        "--listen".into(),
        "--expect-node-id".into(),
        our_id.to_string(),
    ]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(SESSION_TIMEOUT, stdout.read_line(&mut line))
        .await
        .expect("peer.py did not listen")
        .unwrap();
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"LISTENING"), "peer.py said {line:?}");
    let port: u16 = parts[1].parse().unwrap();
    let their_id: PublicKey = parts[2].parse().unwrap();
    assert_eq!(their_id, pyln_id());
    child.stdout = Some(stdout.into_inner());
    let run = async {
        let addr = ([127, 0, 0, 1], port).into();
        let mut peer = Peer::connect_tcp(addr, ecdh, our_id, their_id)
            .await
            .unwrap();
        session(&mut peer).await;
    };
    tokio::time::timeout(SESSION_TIMEOUT, run)
        .await
        .expect("session timed out");
    let out = tokio::time::timeout(SESSION_TIMEOUT, finish(child, String::new()))
        .await
        .expect("peer.py did not exit");
    check_output(&out, &our_id);
}

#[tokio::test]
async fn pyln_connects_to_our_node() {
    let key = LocalKey(SecretKey::from_slice(&[0x21; 32]).unwrap());
    let id = key.public_key();
    pyln_connects_to(&key, id).await;
}

#[tokio::test]
async fn our_node_connects_to_pyln() {
    let key = LocalKey(SecretKey::from_slice(&[0x22; 32]).unwrap());
    let id = key.public_key();
    we_connect_to_pyln(&key, id).await;
}

/// The real path: the static-key ECDH is `hsmd_ecdh_req` on a connectd client of
/// `vls-proxy`, answered by the `signer` daemon.
#[tokio::test]
async fn both_ways_with_the_signer_holding_the_node_key() {
    tests::pyln_python();
    let cfg = tests::replay_config(tests::data_file("conformance/cln-hsmd-golden.json"));
    let env = node::replay::env::CaseEnv::start(&cfg, "transport_pyln", &[0x42; 32], None)
        .await
        .expect("proxy and signer");
    let req = node::init_request(Network::Regtest, None);
    let reply = tokio::time::timeout(Duration::from_secs(30), env.hsmd.master().init(&req))
        .await
        .expect("hsmd_init timed out")
        .expect("hsmd_init");
    let node_id = reply.node_id;
    let our_id = node_id.to_public_key().expect("a valid node id");
    let connectd = connectd_client(&env.hsmd, node_id).await.unwrap();
    assert_eq!(connectd.info().permissions.bits(), 1);

    pyln_connects_to(&connectd, our_id).await;
    we_connect_to_pyln(&connectd, our_id).await;
    env.teardown().await;
}
