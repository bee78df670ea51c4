//! Whole-system tests of the reference node (issue 6), with real processes only: each node is
//! `node run` (which starts its own `vls-proxy` as lightningd starts hsmd) with its own
//! `signer run` dialing that proxy over mutual TLS, set up as an operator would (`signer
//! init`, `vls-proxy certs`, the signer's certificates copied to it). The tests drive them
//! with the `node` and `signer` command lines and check the files the node writes:
//!
//! 1. channels: two nodes fund, connect, open an anchors channel one way and a
//!    static_remotekey channel the other; both count two channels; each outbox holds a
//!    funding transaction whose wallet input spends the funded output with a valid signature
//!    by the wallet key; each side's backup records the negotiated channel types; both
//!    nodes keep their channels across a restart (same data directory, same signer process,
//!    which reconnects by itself), and a third channel opens afterwards from the change;
//! 2. invoices: `node invoice` decodes with pyln-proto (`tests/py/invoice.py`, in the venv of
//!    [`tests::pyln_python`]), whose signature recovers our node id;
//! 3. payments: `node pay` and `node keysend` are preapproved; above the signer's
//!    `max_auto_approve_msat` a payment is refused with the rule's name once the approval
//!    times out, and approved (or denied) by `signer approvals approve|deny` while `node pay`
//!    waits;
//! 4. static channel backup: `node backup export | verify | restore`, the file's framing
//!    (nonce || ciphertext, sealed with the signer's `derive_secret("scb secret")`), and the one
//!    clear error for a foreign, truncated or altered backup, with nothing written;
//! 5. `node demo` completes and prints its latency table.
//!
//! Every process runs in its own process group (a node's proxy with it), killed as a group
//! when the test drops it, on every path; each test is bounded by timeouts.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Transaction};
use node::backup::{BackupKey, BACKUP_FILE, NONCE_LEN, RESTORED_FILE};
use node::chain::Outbox;
use node::control::{self, Request, CONTROL_SOCKET};
use node::process::Process;
use protocol::msgs::{DeriveSecret, DeriveSecretReply};
use secp256k1::{PublicKey, Secp256k1};
use serde_json::Value;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// How long a node may take to come up (its proxy started, its signer connected).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command-line call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped node (and its proxy) may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// The one error of a backup that does not open (truncated, altered, someone else's).
const CANNOT_OPEN: &str = "cannot open the static channel backup";

fn bins() -> &'static tests::Binaries {
    tests::binaries()
}

/// The live (not zombie) processes of process group `pgid`, from `/proc`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first().is_some_and(|s| *s != "Z" && *s != "X")
                && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .collect()
}

/// A long-running process in its own process group, with whatever it starts (a node's
/// proxy): the whole group is killed (SIGKILL) when it is dropped.
struct Daemon {
    what: String,
    process: Process,
    pgid: u32,
}

impl Daemon {
    fn spawn(what: impl Into<String>, mut cmd: Command) -> Daemon {
        let what = what.into();
        cmd.process_group(0).stdin(Stdio::null()).kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let pgid = child.id().expect("a running child has a pid");
        Daemon {
            what,
            process: Process::new(child),
            pgid,
        }
    }

    /// Waits for the group leader to exit; its status, or `None` on timeout.
    async fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.process.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Waits until nothing of the group is left running; whether it got there in time.
    async fn wait_group_gone(&self, within: Duration) -> bool {
        let start = Instant::now();
        while !group_members(self.pgid).is_empty() {
            if start.elapsed() > within {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    fn kill_group(&self) {
        if group_members(self.pgid).is_empty() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_group();
        self.process.kill();
    }
}

/// What a command-line call printed.
#[derive(Debug)]
struct CliOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl CliOutput {
    /// Its stdout as JSON, asserting that it succeeded.
    fn json(&self, what: &str) -> Value {
        assert!(self.ok, "{what} failed:\n{}{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{what} did not print JSON ({e}):\n{}", self.stdout))
    }

    /// Its stderr, asserting that it failed.
    fn failure(&self, what: &str) -> &str {
        assert!(
            !self.ok,
            "{what} should have failed, but printed:\n{}",
            self.stdout
        );
        &self.stderr
    }
}

/// Runs `program args` to completion within `within` (killed if not).
async fn run_cli<I, S>(program: &Path, args: I, within: Duration) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{cmd:?}");
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{shown} did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    CliOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One node and its signer, each in its own directory under the test's root.
struct Side {
    name: &'static str,
    /// The node's data directory (its proxy's network directory too).
    node_dir: PathBuf,
    signer_dir: PathBuf,
    logs: PathBuf,
    signer_port: u16,
    p2p: SocketAddr,
    /// The node id `signer init` printed.
    id: String,
    node: Option<Daemon>,
    signer: Option<Daemon>,
    /// How many times the node / the signer was started (numbers their log files).
    node_runs: u32,
    signer_runs: u32,
}

impl Side {
    /// A new signer secret and the TLS certificates of the node–signer link.
    async fn create(root: &Path, name: &'static str) -> Side {
        let base = root.join(name);
        let node_dir = base.join("node");
        let signer_dir = base.join("signer");
        let logs = base.join("logs");
        std::fs::create_dir_all(&node_dir).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        let b = bins();
        let out = run_cli(
            &b.signer,
            [
                OsStr::new("--data-dir"),
                signer_dir.as_os_str(),
                "init".as_ref(),
            ],
            CLI_TIMEOUT,
        )
        .await;
        assert!(out.ok, "signer init: {}", out.stderr);
        let id = out
            .stdout
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert_eq!(id.len(), 66, "signer init printed {:?}", out.stdout);
        let tls = node_dir.join("vls-tls");
        let out = run_cli(
            &b.proxy,
            [OsStr::new("certs"), "--dir".as_ref(), tls.as_os_str()],
            CLI_TIMEOUT,
        )
        .await;
        assert!(out.ok, "vls-proxy certs: {}{}", out.stdout, out.stderr);
        let signer_tls = signer_dir.join("tls");
        std::fs::create_dir_all(&signer_tls).unwrap();
        for f in ["ca.pem", "signer.pem", "signer-key.pem"] {
            std::fs::copy(tls.join(f), signer_tls.join(f))
                .unwrap_or_else(|e| panic!("copying {f}: {e}"));
        }
        Side {
            name,
            node_dir,
            signer_dir,
            logs,
            signer_port: free_port(),
            p2p: ([127, 0, 0, 1], free_port()).into(),
            id,
            node: None,
            signer: None,
            node_runs: 0,
            signer_runs: 0,
        }
    }

    fn log_file(&self, name: &str) -> Stdio {
        Stdio::from(std::fs::File::create(self.logs.join(name)).expect("log file"))
    }

    /// Starts `node run` (it waits for its signer before it answers).
    fn start_node(&mut self) {
        self.node_runs += 1;
        let b = bins();
        let mut cmd = Command::new(&b.node);
        cmd.arg("--data-dir")
            .arg(&self.node_dir)
            .arg("run")
            .args(["--signer-port", &self.signer_port.to_string()])
            .args(["--listen", &self.p2p.to_string()])
            .arg("--proxy")
            .arg(&b.proxy)
            .env("RUST_LOG", "info")
            .stdout(self.log_file(&format!("node-{}.out", self.node_runs)))
            .stderr(self.log_file(&format!("node-{}.err", self.node_runs)));
        self.node = Some(Daemon::spawn(format!("{} node", self.name), cmd));
    }

    /// Starts `signer run` dialing the node's proxy over mutual TLS, with `policy` if given
    /// (else the default: every rule enforced).
    fn start_signer(&mut self, policy: Option<&Path>) {
        self.signer_runs += 1;
        let mut cmd = Command::new(&bins().signer);
        cmd.arg("--data-dir")
            .arg(&self.signer_dir)
            .arg("run")
            .args([
                "--connect",
                &format!("https://localhost:{}", self.signer_port),
            ]);
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log_file(&format!("signer-{}.err", self.signer_runs)));
        self.signer = Some(Daemon::spawn(format!("{} signer", self.name), cmd));
    }

    /// Kills the signer (SIGKILL) and waits until it is gone.
    async fn kill_signer(&mut self) {
        if let Some(s) = self.signer.take() {
            s.kill_group();
            assert!(
                s.wait_group_gone(EXIT_TIMEOUT).await,
                "{} did not die",
                s.what
            );
        }
    }

    /// Waits until the node answers `getinfo` on its control socket; its answer.
    async fn wait_ready(&self) -> Value {
        let sock = self.node_dir.join(CONTROL_SOCKET);
        let start = Instant::now();
        loop {
            if let Ok(r) = control::request(&sock, &Request::Getinfo).await {
                if r.ok {
                    return r.result;
                }
            }
            if let Some(s) = self.node.as_ref().and_then(|n| n.process.exit_status()) {
                panic!("{} node exited while starting: {s}", self.name);
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "{} node did not come up within {START_TIMEOUT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the node and its signer and waits until the node answers.
    async fn start(&mut self, policy: Option<&Path>) -> Value {
        self.start_node();
        self.start_signer(policy);
        let info = self.wait_ready().await;
        assert_eq!(info["id"], self.id.as_str(), "{}: getinfo", self.name);
        info
    }

    /// `node stop`, waits for the node and its proxy to exit, and runs the node again on the
    /// same data directory; the signer keeps running and reconnects to the new proxy.
    async fn restart_node(&mut self) -> Value {
        let stopped = self.cli(["stop"]).await.json("node stop");
        assert_eq!(stopped["stopping"], true);
        let node = self.node.take().expect("the node runs");
        let status = node.wait_exit(EXIT_TIMEOUT).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not exit cleanly after stop: {status:?}",
            node.what
        );
        assert!(
            node.wait_group_gone(EXIT_TIMEOUT).await,
            "{}'s proxy did not exit after the node stopped",
            node.what
        );
        drop(node);
        self.start_node();
        let info = self.wait_ready().await;
        assert_eq!(info["id"], self.id.as_str(), "{}: getinfo", self.name);
        info
    }

    /// `node --data-dir D args...`.
    async fn cli<I, S>(&self, args: I) -> CliOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            vec!["--data-dir".into(), self.node_dir.clone().into_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cli(&bins().node, all, CLI_TIMEOUT).await
    }

    /// `node getinfo`.
    async fn getinfo(&self) -> Value {
        self.cli(["getinfo"]).await.json("node getinfo")
    }

    /// `signer --data-dir S args...`.
    async fn signer_cli<I, S>(&self, args: I) -> CliOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            "--data-dir".into(),
            self.signer_dir.clone().into_os_string(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cli(&bins().signer, all, CLI_TIMEOUT).await
    }

    /// `node fund AMT`: the wallet output it recorded (from `utxos.json`) and its address.
    async fn fund(&self, amount_sat: u64) -> (OutPoint, Address) {
        let f = self
            .cli(["fund", &amount_sat.to_string()])
            .await
            .json("node fund");
        assert_eq!(f["amount_sat"], amount_sat);
        let keyindex = f["keyindex"].as_u64().expect("keyindex");
        let address: Address<_> = f["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("a valid address");
        let address = address
            .require_network(Network::Regtest)
            .expect("a regtest address");
        let utxos: Value = serde_json::from_slice(
            &std::fs::read(self.node_dir.join(Outbox::UTXO_FILE)).expect("utxos.json"),
        )
        .expect("utxos.json is JSON");
        let u = utxos
            .as_array()
            .expect("a list")
            .iter()
            .find(|u| u["keyindex"].as_u64() == Some(keyindex))
            .expect("the funded output is in utxos.json");
        assert_eq!(u["amount_sat"], amount_sat);
        let outpoint = OutPoint {
            txid: u["txid"].as_str().unwrap().parse().expect("a txid"),
            vout: u["vout"].as_u64().unwrap() as u32,
        };
        (outpoint, address)
    }

    fn backup_path(&self) -> PathBuf {
        self.node_dir.join(BACKUP_FILE)
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.logs) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            eprintln!(
                "----- {} {} (last lines)\n{}",
                self.name,
                f.file_name().unwrap_or_default().to_string_lossy(),
                tail(&f, 30)
            );
        }
    }
}

/// Two started nodes, with their signers (default policy).
async fn two_nodes(root: &Path) -> (Side, Side) {
    let mut a = Side::create(root, "alice").await;
    let mut b = Side::create(root, "bob").await;
    // Both start at once: the proxies wait for their signers in parallel.
    a.start_node();
    a.start_signer(None);
    b.start_node();
    b.start_signer(None);
    let (ia, ib) = tokio::join!(a.wait_ready(), b.wait_ready());
    assert_eq!(ia["id"], a.id.as_str());
    assert_eq!(ib["id"], b.id.as_str());
    assert_eq!(ia["network"], "regtest");
    (a, b)
}

/// The transactions of a node's outbox (one hex transaction a line).
fn outbox(side: &Side) -> Vec<Transaction> {
    let text = std::fs::read_to_string(side.node_dir.join(Outbox::OUTBOX_FILE))
        .unwrap_or_else(|e| panic!("{} outbox: {e}", side.name));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            deserialize_hex::<Transaction>(l.trim()).unwrap_or_else(|e| {
                panic!("{} outbox line is not a transaction ({e}): {l}", side.name)
            })
        })
        .collect()
}

/// Checks that `side`'s outbox holds the funding transaction `open` reported: its funding
/// output pays the capacity to a P2WSH script, and it spends `funded` (worth `funded_sat`)
/// with a witness whose key is `address`'s and whose signature is valid for that input.
fn check_funding_tx(
    side: &Side,
    open: &Value,
    funded: OutPoint,
    funded_sat: u64,
    address: &Address,
) {
    let txid = open["funding_txid"].as_str().expect("funding_txid");
    let vout = open["funding_output"].as_u64().expect("funding_output") as usize;
    let capacity = open["capacity_sat"].as_u64().expect("capacity_sat");
    let txs = outbox(side);
    let tx = txs
        .iter()
        .find(|t| t.compute_txid().to_string() == txid)
        .unwrap_or_else(|| panic!("{}: funding tx {txid} not in the outbox", side.name));
    let out = tx.output.get(vout).expect("the funding output exists");
    assert_eq!(
        out.value,
        Amount::from_sat(capacity),
        "funding output value"
    );
    assert!(out.script_pubkey.is_p2wsh(), "the funding output is P2WSH");
    assert!(!tx.input.is_empty());
    for (i, input) in tx.input.iter().enumerate() {
        assert!(!input.witness.is_empty(), "input {i} has no witness");
    }
    let (index, input) = tx
        .input
        .iter()
        .enumerate()
        .find(|(_, i)| i.previous_output == funded)
        .unwrap_or_else(|| panic!("{}: the funding tx does not spend {funded}", side.name));
    // P2WPKH: <signature> <public key>, the key of the funded address.
    assert_eq!(input.witness.len(), 2, "a P2WPKH witness");
    let pk = CompressedPublicKey::from_slice(&input.witness[1]).expect("a compressed key");
    let script = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
    assert_eq!(
        script,
        address.script_pubkey(),
        "the witness key is the funded address's"
    );
    let sig = bitcoin::ecdsa::Signature::from_slice(&input.witness[0]).expect("a DER signature");
    assert_eq!(sig.sighash_type, EcdsaSighashType::All);
    let sighash = SighashCache::new(tx)
        .p2wpkh_signature_hash(
            index,
            &script,
            Amount::from_sat(funded_sat),
            sig.sighash_type,
        )
        .expect("a sighash");
    let msg = secp256k1::Message::from_digest(sighash.to_byte_array());
    Secp256k1::verification_only()
        .verify_ecdsa(&msg, &sig.signature, &pk.0)
        .expect("the wallet input's signature is valid");
    // Change and fee: what goes in covers what comes out, with a sane fee (single input).
    if tx.input.len() == 1 {
        let out_sum: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        assert!(out_sum < funded_sat, "outputs exceed the input");
        assert!(
            funded_sat - out_sum < 50_000,
            "fee of {} sat",
            funded_sat - out_sum
        );
    }
}

/// The one outpoint the funding transaction of `open` (in `side`'s outbox) spends.
fn funding_input(side: &Side, open: &Value) -> OutPoint {
    let txid = open["funding_txid"].as_str().unwrap();
    let tx = outbox(side)
        .into_iter()
        .find(|t| t.compute_txid().to_string() == txid)
        .unwrap_or_else(|| panic!("{}: {txid} not in the outbox", side.name));
    assert_eq!(tx.input.len(), 1, "{tx:?}");
    assert!(!tx.input[0].witness.is_empty(), "unsigned: {tx:?}");
    tx.input[0].previous_output
}

/// Item 1: both channel types between two nodes, the signed funding transactions in the
/// outboxes, and the channels kept across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_open_both_channel_types_and_keep_them_across_restarts() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b) = two_nodes(root.path()).await;

    let (a_funded, a_addr) = a.fund(1_000_000).await;
    let (b_funded, b_addr) = b.fund(800_000).await;

    let peer = format!("{}@{}", b.id, b.p2p);
    let c = a.cli(["connect", &peer]).await.json("node connect");
    assert_eq!(c["id"], b.id.as_str());

    // alice opens an anchors channel to bob.
    let open_a = a
        .cli(["open", &b.id, "300000", "--channel-type", "anchors"])
        .await
        .json("node open anchors");
    assert_eq!(open_a["capacity_sat"], 300_000);
    // bob opens a static_remotekey channel to alice, over the same connection.
    let open_b = b
        .cli([
            "open",
            &a.id,
            "200000",
            "--channel-type",
            "static_remotekey",
        ])
        .await
        .json("node open static_remotekey");
    assert_eq!(open_b["capacity_sat"], 200_000);
    eprintln!("alice opened {open_a}\nbob opened {open_b}");
    assert_ne!(open_a["channel_id"], open_b["channel_id"]);

    for side in [&a, &b] {
        let info = side.getinfo().await;
        assert_eq!(info["channels"], 2, "{}: {info}", side.name);
        assert_eq!(info["peers"], 1, "{}: {info}", side.name);
    }
    check_funding_tx(&a, &open_a, a_funded, 1_000_000, &a_addr);
    check_funding_tx(&b, &open_b, b_funded, 800_000, &b_addr);
    // Each outbox holds its own node's funding transaction only.
    assert!(outbox(&a)
        .iter()
        .all(|t| t.compute_txid().to_string() != open_b["funding_txid"].as_str().unwrap()));

    // The channel types as negotiated, from each side's static channel backup (opened with
    // the signer's key).
    for side in [&a, &b] {
        let id: PublicKey = side.id.parse().unwrap();
        let backup = node::backup::read_backup(&side.backup_path(), &scb_key(side), &id)
            .expect("the backup opens");
        assert_eq!(backup.channels.len(), 2, "{}'s backup", side.name);
        for (open, opener, bits) in [(&open_a, "alice", vec![12, 22]), (&open_b, "bob", vec![12])] {
            let funding = format!(
                "{}:{}",
                open["funding_txid"].as_str().unwrap(),
                open["funding_output"]
            );
            let ch = backup
                .channels
                .iter()
                .find(|c| c.funding_outpoint.to_string() == funding)
                .unwrap_or_else(|| panic!("{}'s backup lacks {funding}", side.name));
            assert_eq!(ch.channel_type, bits, "{}: channel {funding}", side.name);
            assert_eq!(
                ch.we_initiated,
                side.name == opener,
                "{}: {funding}",
                side.name
            );
        }
    }

    // A wrong channel type is refused by the command, not the peer.
    let bad = a
        .cli(["open", &b.id, "100000", "--channel-type", "legacy"])
        .await;
    assert!(bad
        .failure("open with a bogus channel type")
        .contains("channel type"));

    // Restart both nodes on the same data directories: the channels are still there.
    for side in [&mut a, &mut b] {
        let info = side.restart_node().await;
        assert_eq!(info["channels"], 2, "{} after restart: {info}", side.name);
        eprintln!("{} after restart: {info}", side.name);
    }
    // The outbox still holds the funding transactions (re-sent ones are the same).
    check_funding_tx(&a, &open_a, a_funded, 1_000_000, &a_addr);
    check_funding_tx(&b, &open_b, b_funded, 800_000, &b_addr);
    // The restarted nodes still work with their signers: alice reconnects and opens a
    // third channel from her change (a new channel dbid, the wallet's change output).
    a.cli(["connect", &peer])
        .await
        .json("node connect after restart");
    let open_c = a
        .cli([
            "open",
            &b.id,
            "100000",
            "--channel-type",
            "static_remotekey",
        ])
        .await
        .json("node open after restart");
    assert_eq!(
        funding_input(&a, &open_c).txid.to_string(),
        open_a["funding_txid"].as_str().unwrap(),
        "the third funding spends the first one's change"
    );
    for side in [&a, &b] {
        let info = side.getinfo().await;
        assert_eq!(info["channels"], 3, "{}: {info}", side.name);
        let v = side.cli(["backup", "verify"]).await.json("backup verify");
        assert_eq!(v["channels"], 3, "{}: {v}", side.name);
    }
}

/// Item 2: an invoice of ours, decoded by pyln-proto, names our node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyln_decodes_our_invoice_and_recovers_our_node_id() {
    let python = tokio::task::spawn_blocking(tests::pyln_python)
        .await
        .expect("the venv");
    let root = tempfile::tempdir().unwrap();
    let mut a = Side::create(root.path(), "alice").await;
    let info = a.start(None).await;
    let id = info["id"].as_str().unwrap().to_string();
    let script = tests::workspace_root().join("tests/py/invoice.py");

    let cases: [(Option<u64>, &str); 2] = [
        (Some(123_456_789), "pyln decodes this: café ☕"),
        (None, "any amount"),
    ];
    for (amount, description) in cases {
        let mut args = vec!["invoice".to_string()];
        if let Some(m) = amount {
            args.extend(["--amount-msat".into(), m.to_string()]);
        }
        args.extend(["--description".into(), description.into()]);
        let inv = a.cli(&args).await.json("node invoice");
        let bolt11 = inv["bolt11"].as_str().expect("bolt11");
        let out = run_cli(
            python,
            [script.as_os_str(), OsStr::new(bolt11)],
            CLI_TIMEOUT,
        )
        .await;
        let d = out.json("invoice.py");
        assert_eq!(d["pubkey"], id.as_str(), "pyln's payee: {d}");
        assert_eq!(
            d["recovered"],
            id.as_str(),
            "recovered from the signature: {d}"
        );
        assert_eq!(d["payment_hash"], inv["payment_hash"]);
        assert_eq!(d["currency"], "bcrt");
        assert_eq!(d["description"], description);
        match amount {
            Some(m) => assert_eq!(d["amount_msat"], m),
            None => assert!(d["amount_msat"].is_null(), "{d}"),
        }
    }
}

/// A policy file: every rule enforced, payments above `max_auto_approve_msat` wait
/// `timeout_secs` for the operator.
fn write_policy(path: &Path, max_auto_approve_msat: u64, timeout_secs: u64) {
    std::fs::write(
        path,
        format!(
            "default = \"enforce\"\n[limits]\nmax_auto_approve_msat = {max_auto_approve_msat}\n\
             approval_timeout_secs = {timeout_secs}\n"
        ),
    )
    .unwrap();
}

/// `signer approvals list` until the line of `hash` shows `state`.
async fn wait_approval_state(side: &Side, hash: &str, state: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = side.signer_cli(["approvals", "list"]).await;
        if out.ok {
            if let Some(line) = out.stdout.lines().find(|l| l.starts_with(hash)) {
                if line.split_whitespace().any(|w| w == state) {
                    return line.to_string();
                }
            }
        }
        assert!(
            start.elapsed() < within,
            "{hash} not {state} within {within:?}; approvals list said:\n{}{}",
            out.stdout,
            out.stderr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Item 3: preapprovals through the signer's policy, refusals with the rule's name, and the
/// operator approving or denying while `node pay` waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_preapproved_refused_and_approved_by_the_operator() {
    const LIMIT_MSAT: u64 = 10_000_000;
    let root = tempfile::tempdir().unwrap();
    let policy = root.path().join("alice-policy.toml");
    write_policy(&policy, LIMIT_MSAT, 1);
    let mut a = Side::create(root.path(), "alice").await;
    let mut b = Side::create(root.path(), "bob").await;
    a.start_node();
    a.start_signer(Some(&policy));
    b.start_node();
    b.start_signer(None);
    tokio::join!(a.wait_ready(), b.wait_ready());

    let invoice = |msat: u64, d: &'static str| {
        let b = &b;
        async move {
            b.cli([
                "invoice",
                "--amount-msat",
                &msat.to_string(),
                "--description",
                d,
            ])
            .await
            .json("node invoice")
        }
    };

    // Within the limit: approved.
    let small = invoice(1_000_000, "small").await;
    let paid = a
        .cli(["pay", small["bolt11"].as_str().unwrap()])
        .await
        .json("node pay (small)");
    assert_eq!(paid["approved"], true);
    assert_eq!(paid["payment_hash"], small["payment_hash"]);
    assert_eq!(paid["destination"], b.id.as_str());
    assert_eq!(paid["amount_msat"], 1_000_000);

    // Keysend within the limit: approved.
    let ks = a
        .cli(["keysend", &b.id, "2000000"])
        .await
        .json("node keysend (small)");
    assert_eq!(ks["approved"], true);
    assert_eq!(ks["payment_hash"].as_str().map(str::len), Some(64));

    // Above the limit: nobody approves within 1 s, refused with the rule's name.
    let big = invoice(50_000_000, "big").await;
    let t = Instant::now();
    let refused = a.cli(["pay", big["bolt11"].as_str().unwrap()]).await;
    let err = refused.failure("node pay above the limit");
    assert!(err.contains("invoice-auto-approve"), "stderr: {err}");
    assert!(err.contains("refused"), "stderr: {err}");
    eprintln!("refused after {:?}: {}", t.elapsed(), err.trim());
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let refused = a.cli(["keysend", &b.id, "40000000"]).await;
    let err = refused.failure("node keysend above the limit");
    assert!(err.contains("invoice-auto-approve"), "stderr: {err}");

    // A bad invoice never reaches the signer.
    let bad = a.cli(["pay", "lnbcrt1notaninvoice"]).await;
    assert!(!bad.failure("node pay of garbage").is_empty());

    // The operator now has 20 s to decide: restart alice's signer with that policy (the
    // node's proxy keeps waiting for it).
    write_policy(&policy, LIMIT_MSAT, 20);
    a.kill_signer().await;
    a.start_signer(Some(&policy));

    for (decision, amount) in [("approve", 60_000_000u64), ("deny", 70_000_000)] {
        let inv = invoice(amount, "operator decides").await;
        let hash = inv["payment_hash"].as_str().unwrap().to_string();
        // `node pay` in the background, waiting for the operator.
        let mut pay = Command::new(&bins().node);
        pay.arg("--data-dir")
            .arg(&a.node_dir)
            .args(["pay", inv["bolt11"].as_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let pay = pay.spawn().expect("node pay");
        let line = wait_approval_state(&a, &hash, "pending", Duration::from_secs(15)).await;
        assert!(line.contains(&amount.to_string()), "{line}");
        eprintln!("waiting for the operator: {line}");
        let out = a.signer_cli(["approvals", decision, &hash]).await;
        assert!(out.ok, "signer approvals {decision}: {}", out.stderr);
        let out = tokio::time::timeout(Duration::from_secs(25), pay.wait_with_output())
            .await
            .expect("node pay finished after the decision")
            .expect("node pay ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if decision == "approve" {
            assert!(out.status.success(), "pay after approval: {stdout}{stderr}");
            let v: Value = serde_json::from_str(&stdout).expect("JSON");
            assert_eq!(v["approved"], true);
            assert_eq!(v["payment_hash"], hash.as_str());
            wait_approval_state(&a, &hash, "approved", Duration::from_secs(5)).await;
            // Asked again, it is approved at once (the decision is recorded).
            let again = a
                .cli(["pay", inv["bolt11"].as_str().unwrap()])
                .await
                .json("node pay again");
            assert_eq!(again["approved"], true);
        } else {
            assert!(!out.status.success(), "pay after denial: {stdout}");
            assert!(stderr.contains("invoice-auto-approve"), "{stderr}");
            assert!(stderr.contains("denied"), "{stderr}");
            eprintln!("after the denial: {}", stderr.trim());
        }
    }
}

/// The backup key as the signer derives it: `derive_secret("scb secret")` of an in-process
/// signer on the same `hsm_secret`.
fn scb_key(side: &Side) -> BackupKey {
    let secret = std::fs::read(side.signer_dir.join("hsm_secret")).expect("hsm_secret");
    let init = node::init_request(Network::Regtest, None)
        .encode()
        .expect("init encodes");
    let (signer, _) = tests::reference_signer(&secret, signer::Policy::warn_only(), &init);
    let req = DeriveSecret::new(node::backup::SCB_SECRET_INFO.to_vec())
        .encode()
        .expect("derive_secret encodes");
    let reply = signer
        .handle(&signer::ClientContext::master(), None, &req)
        .expect("derive_secret");
    let secret = DeriveSecretReply::decode(&reply).expect("a derive_secret reply");
    BackupKey::from_bytes(secret.secret.0)
}

/// Item 4: the static channel backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_channel_backup_export_verify_restore() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(root.path()).await;
    a.fund(1_000_000).await;
    a.cli(["connect", &format!("{}@{}", b.id, b.p2p)])
        .await
        .json("node connect");
    let open = a
        .cli(["open", &b.id, "250000", "--channel-type", "anchors"])
        .await
        .json("node open");
    let funding = format!(
        "{}:{}",
        open["funding_txid"].as_str().unwrap(),
        open["funding_output"]
    );

    // Both sides wrote their backup when the channel opened.
    for side in [&a, &b] {
        let v = side.cli(["backup", "verify"]).await.json("backup verify");
        assert_eq!(v["channels"], 1, "{}: {v}", side.name);
        assert_eq!(v["verified"], true);
    }

    // nonce || ciphertext, a fresh nonce each export.
    let e1 = a.cli(["backup", "export"]).await.json("backup export");
    assert_eq!(e1["channels"], 1);
    let first = std::fs::read(a.backup_path()).unwrap();
    a.cli(["backup", "export"]).await.json("backup export");
    let second = std::fs::read(a.backup_path()).unwrap();
    assert_eq!(first.len(), second.len());
    assert_ne!(
        first[..NONCE_LEN],
        second[..NONCE_LEN],
        "the nonce is fresh"
    );
    assert_ne!(first[NONCE_LEN..], second[NONCE_LEN..]);
    // Sealed with the signer's derive_secret("scb secret"), for alice's node id; the length
    // is nonce + the JSON plaintext + the Poly1305 tag.
    let a_id: PublicKey = a.id.parse().unwrap();
    let key = scb_key(&a);
    let backup = node::backup::open(&key, &a_id, &second).expect("the signer's key opens it");
    assert_eq!(
        second.len(),
        NONCE_LEN + serde_json::to_vec(&backup).unwrap().len() + 16
    );
    assert_eq!(backup.channels.len(), 1);
    let ch = &backup.channels[0];
    assert_eq!(ch.funding_outpoint.to_string(), funding);
    assert_eq!(ch.peer_id.to_string(), b.id);
    assert_eq!(ch.peer_addresses, vec![b.p2p.to_string()]);
    assert_eq!(ch.capacity_sat, 250_000);
    assert!(ch.we_initiated);
    // Bob's key does not open alice's backup.
    assert!(node::backup::open(&scb_key(&b), &a_id, &second).is_err());

    let mine = root.path().join("alice-copy.backup");
    std::fs::write(&mine, &second).unwrap();
    let restored = a.node_dir.join(RESTORED_FILE);

    // Backups that do not open: bob's, truncated, altered (ciphertext and nonce).
    let foreign = root.path().join("bob-copy.backup");
    std::fs::copy(b.backup_path(), &foreign).unwrap();
    let mut bad_files = vec![("bob's backup", foreign)];
    let mut variants: Vec<(&str, Vec<u8>)> = vec![
        ("truncated by one byte", second[..second.len() - 1].to_vec()),
        ("truncated inside the nonce", second[..10].to_vec()),
        ("empty", Vec::new()),
    ];
    let mut flipped = second.clone();
    flipped[NONCE_LEN + (second.len() - NONCE_LEN) / 2] ^= 0x01;
    variants.push(("a ciphertext byte flipped", flipped));
    let mut flipped = second.clone();
    flipped[3] ^= 0x80;
    variants.push(("a nonce byte flipped", flipped));
    let mut flipped = second.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    variants.push(("a tag byte flipped", flipped));
    for (i, (what, bytes)) in variants.into_iter().enumerate() {
        let p = root.path().join(format!("bad-{i}.backup"));
        std::fs::write(&p, bytes).unwrap();
        bad_files.push((what, p));
    }
    let mut errors = Vec::new();
    for (what, path) in &bad_files {
        let before = std::fs::read(path).unwrap();
        // restore PATH: refused, nothing written, the file untouched.
        let out = a
            .cli([OsStr::new("backup"), "restore".as_ref(), path.as_os_str()])
            .await;
        let err = out
            .failure(&format!("restore of {what}"))
            .trim()
            .to_string();
        assert!(err.contains(CANNOT_OPEN), "restore of {what}: {err}");
        assert!(
            !restored.exists(),
            "restore of {what} wrote {}",
            restored.display()
        );
        assert_eq!(std::fs::read(path).unwrap(), before, "{what} was changed");
        errors.push(err);
        // verify of it in place of alice's channel.backup: the same error, left as it was.
        std::fs::write(a.backup_path(), &before).unwrap();
        let out = a.cli(["backup", "verify"]).await;
        let err = out.failure(&format!("verify of {what}")).trim().to_string();
        assert!(err.contains(CANNOT_OPEN), "verify of {what}: {err}");
        assert_eq!(std::fs::read(a.backup_path()).unwrap(), before);
        errors.push(err);
    }
    // One error for all of them: it does not tell a wrong key from a flipped bit.
    assert!(errors.iter().all(|e| *e == errors[0]), "{errors:#?}");
    eprintln!("every bad backup: {}", errors[0]);

    // Alice's own backup back in place verifies again.
    std::fs::write(a.backup_path(), &second).unwrap();
    let v = a.cli(["backup", "verify"]).await.json("backup verify");
    assert_eq!(v["channels"], 1);

    // restore: writes restored-channels.json once, then refuses.
    let r = a
        .cli([OsStr::new("backup"), "restore".as_ref(), mine.as_os_str()])
        .await
        .json("backup restore");
    assert_eq!(r["restored_to"], restored.to_str().unwrap());
    let written = std::fs::read(&restored).expect("restored-channels.json");
    let doc: Value = serde_json::from_slice(&written).expect("JSON");
    assert_eq!(doc["node_id"], a.id.as_str());
    assert_eq!(doc["channels"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["channels"][0]["funding_outpoint"], funding.as_str());
    let again = a
        .cli([OsStr::new("backup"), "restore".as_ref(), mine.as_os_str()])
        .await;
    let err = again.failure("a second restore");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        written,
        "the restore was overwritten"
    );
}

/// Item 5: `node demo` (debug binaries) completes and prints its latency table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("demo.out"), dir.path().join("demo.err"));
    let mut cmd = Command::new(&bins().node);
    // Its signers, nodes and proxies are the binaries next to this one: the test's copies.
    cmd.arg("demo")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let start = Instant::now();
    let demo = Daemon::spawn("node demo", cmd);
    let status = demo.wait_exit(Duration::from_secs(90)).await;
    let elapsed = start.elapsed();
    // Whatever it started goes with it.
    assert!(
        demo.wait_group_gone(Duration::from_secs(10)).await,
        "node demo left processes behind"
    );
    drop(demo);
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("node demo did not finish within 90 s:\n{out}\n{err}"));
    assert!(
        status.success(),
        "node demo failed ({status}):\n{out}\n{err}"
    );
    eprintln!("node demo took {:.1} s", elapsed.as_secs_f64());
    assert!(out.contains("Demo complete."), "{out}");
    assert!(out.contains("approved: true"), "{out}");
    assert!(out.contains("channel(s) in"), "{out}");
    assert!(
        out.contains("of 40 invoices created across the restart"),
        "{out}"
    );
    // The latency table: a header, then one row per node and message type.
    let header = out
        .lines()
        .position(|l| l.contains("message") && l.contains("p50 us") && l.contains("p99 us"))
        .unwrap_or_else(|| panic!("no latency table:\n{out}"));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(header + 1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .take_while(|f| f.len() == 5)
        .collect();
    for (who, msg) in [
        ("alice", "hsmd_init"),
        ("bob", "hsmd_init"),
        ("alice", "hsmd_sign_withdrawal"),
        ("alice", "hsmd_ecdh_req"),
        ("bob", "hsmd_ecdh_req"),
        ("bob", "hsmd_sign_invoice"),
        ("alice", "hsmd_sign_remote_commitment_tx"),
        ("bob", "hsmd_validate_commitment_tx"),
    ] {
        let row = rows
            .iter()
            .find(|f| f[0] == who && f[1] == msg)
            .unwrap_or_else(|| panic!("no {who} {msg} row in the latency table:\n{out}"));
        let calls: u64 = row[2].parse().expect("a call count");
        let p50: u64 = row[3].parse().expect("a p50");
        let p99: u64 = row[4].parse().expect("a p99");
        assert!(calls >= 1 && p50 > 0 && p99 >= p50, "{row:?}");
    }
}
