//! `node bench`: how fast and how lean the remote-signing path is, and the [`Rig`] of real
//! processes it (and the whole-system tests) run on.
//!
//! The full path is the one a node uses: this library's hsmd client → `vls-proxy` (started as
//! lightningd starts hsmd) → gRPC over mutual TLS → the `signer` daemon (warn mode, state on
//! disk). It is compared with the signer's handler called in-process (same thread, state on
//! disk; built only with the `inprocess-bench` feature, because the node does not otherwise
//! link the signer). [`run`] prints one JSON object per line:
//!
//! - `{"op", "path": "full"|"inprocess", "clients", "threads", "n", "p50_us", "p99_us",
//!   "ops_per_s"}` for `ecdh`, `get_per_commitment_point` and `sign_remote_commitment_tx`
//!   (the first one of the golden corpus's `channel_static_remotekey_we_open`, after its setup
//!   steps): one client in sequence (latency), then 8 and 64 concurrent clients (throughput);
//!   in-process, one thread and two threads;
//! - `{"metric": "proxy_idle_clients", "clients", "rss_kb", "threads"}`: the proxy's memory
//!   (`VmRSS`) and threads with no client but lightningd's, then with 1,000 idle clients;
//! - `{"metric": "recovery_after_signer_restart_ms", ...}`: after a `kill -9` of the signer,
//!   the time from starting it again to the reply of a request that waited meanwhile;
//! - `{"metric": "ipc_round_trip", "transport": "unix"|"tcp", "n", "p50_us", "p99_us",
//!   "guest_halt_poll_ns"}`:
//!   the machine's floor, one byte there and back between two threads over a unix socket
//!   pair and over TCP on loopback. A request on the full path makes two such round trips
//!   (node ↔ proxy, proxy ↔ signer): when the cores are idle between requests, each one
//!   pays for waking a sleeping core twice, which on a virtual machine whose idle vCPUs halt
//!   at once (`guest_halt_poll_ns` 0) costs far more than the work itself.

use crate::client::HsmClient;
use crate::hsmd::{Hsmd, HsmdConfig, LogTarget};
use crate::process::Process;
use crate::replay::corpus::{Case, Corpus};
use crate::subdaemon::Subdaemon;
use protocol::msgs::{
    ClientHsmfd, EcdhReq, GetPerCommitmentPoint, NewChannel, SignRemoteCommitmentTx,
};
use protocol::types::NodeId;
use protocol::Permissions;
use secp256k1::{PublicKey, Secp256k1, SecretKey};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// The rig: a proxy and its signer, set up from nothing.
// ---------------------------------------------------------------------------------------------

/// How long a setup tool (`signer init`, `vls-proxy certs`) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the proxy may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times the proxy is started (on fresh ports) before giving up.
const START_ATTEMPTS: u32 = 3;

/// Variables of our environment that would change how the proxy runs: never passed on (the
/// rig sets the ones it wants).
const PROXY_ENV: &[&str] = &[
    "VLS_CLN_VERSION",
    "VLS_PORT",
    "VLS_BIND",
    "VLS_TLS_DIR",
    "VLS_PLAINTEXT",
    "VLS_EXPECT_NODE_ID",
    "VLS_METRICS_PORT",
    "VLS_PREAPPROVAL_CACHE",
    "VLS_RETRY_ATTEMPTS",
    "RUST_LOG",
];
/// Variables of our environment that would change how the signer runs: never passed on.
const SIGNER_ENV: &[&str] = &[
    "SIGNER_CONFIG",
    "SIGNER_DATA_DIR",
    "SIGNER_CONNECT",
    "SIGNER_TLS_DIR",
    "SIGNER_POLICY",
    "SIGNER_PASSPHRASE_FILE",
    "RUST_LOG",
];

/// How to set up a [`Rig`].
#[derive(Clone, Debug)]
pub struct RigConfig {
    /// The `vls-proxy` binary.
    pub proxy: PathBuf,
    /// The `signer` binary.
    pub signer: PathBuf,
    /// The Core Lightning version the proxy reports.
    pub cln_version: String,
    /// The signer's `hsm_secret` file contents.
    pub secret: Vec<u8>,
    /// No TLS on the link (`VLS_PLAINTEXT`, `signer run --plaintext`).
    pub plaintext: bool,
    /// Serve the proxy's metrics (on a free port, see [`Rig::metrics_port`]).
    pub metrics: bool,
    /// More proxy environment, e.g. `("VLS_RETRY_ATTEMPTS", "3")`.
    pub proxy_env: Vec<(String, String)>,
    /// The signer's policy file (TOML); `None` runs it with `--warn-only`.
    pub policy: Option<String>,
    /// `RUST_LOG` of the proxy and the signers.
    pub log_filter: String,
    /// Start the signer as soon as the proxy listens.
    pub start_signer: bool,
}

impl RigConfig {
    /// Mutual TLS, warn-only signer started at once, no metrics, `info` logs.
    pub fn new(proxy: impl Into<PathBuf>, signer: impl Into<PathBuf>, secret: &[u8]) -> Self {
        RigConfig {
            proxy: proxy.into(),
            signer: signer.into(),
            cln_version: "v26.06.6".into(),
            secret: secret.to_vec(),
            plaintext: false,
            metrics: false,
            proxy_env: Vec::new(),
            policy: None,
            log_filter: "info".into(),
            start_signer: true,
        }
    }
}

/// A running proxy (started as lightningd starts hsmd) and, usually, a signer dialling it,
/// in a temporary directory that holds their data, certificates and logs.
///
/// Dropping it kills every process it started.
pub struct Rig {
    /// The proxy, as lightningd sees it.
    pub hsmd: Hsmd,
    /// The port the proxy listens on for the signer.
    pub port: u16,
    /// The proxy's metrics port, if asked for.
    pub metrics_port: Option<u16>,
    /// The main signer (behind a lock, so that it can be restarted while clients of the
    /// proxy are borrowed).
    signer: std::sync::Mutex<Option<Process>>,
    cfg: RigConfig,
    // Dropped last: the processes go first.
    dir: tempfile::TempDir,
}

/// Runs a setup tool to completion; its stderr is the error if it fails.
async fn run_tool(mut cmd: tokio::process::Command, what: &str) -> Result<(), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(TOOL_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("{what} did not finish within {TOOL_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run {what}: {e}")),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{what} failed ({}): {}", out.status, err.trim()));
    }
    Ok(())
}

/// A port nobody listens on right now (the kernel's pick).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn signer_command(program: &Path, log_filter: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    for k in SIGNER_ENV {
        c.env_remove(k);
    }
    c.env("RUST_LOG", log_filter)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// The sum of a metric's samples (every label set) in Prometheus' text format.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with(' ') {
            rest.trim()
        } else if rest.starts_with('{') {
            match rest.rsplit_once('}') {
                Some((_, v)) => v.trim(),
                None => continue,
            }
        } else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

impl Rig {
    /// Sets everything up in a new temporary directory: the signer's data directory (the
    /// secret imported with `signer init --import`), the link's certificates (`vls-proxy
    /// certs`), the proxy on free ports, and, if asked, the signer.
    ///
    /// # Errors
    /// What failed, as text.
    pub async fn start(cfg: RigConfig) -> Result<Rig, String> {
        let dir = tempfile::Builder::new()
            .prefix("node-rig-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let root = dir.path().to_path_buf();
        init_data_dir(&cfg, &root.join("signer"), &cfg.secret).await?;

        let net_dir = root.join("regtest");
        std::fs::create_dir_all(&net_dir).map_err(|e| format!("{}: {e}", net_dir.display()))?;
        let proxy_tls = net_dir.join("vls-tls");
        let mut certs = tokio::process::Command::new(&cfg.proxy);
        certs.arg("certs").arg("--dir").arg(&proxy_tls);
        run_tool(certs, "vls-proxy certs").await?;
        let signer_tls = root.join("signer-tls");
        std::fs::create_dir_all(&signer_tls).map_err(|e| format!("{e}"))?;
        for n in ["ca.pem", "signer.pem", "signer-key.pem"] {
            std::fs::copy(proxy_tls.join(n), signer_tls.join(n))
                .map_err(|e| format!("copying {n}: {e}"))?;
        }
        if let Some(p) = &cfg.policy {
            std::fs::write(root.join("policy.toml"), p).map_err(|e| format!("policy: {e}"))?;
        }

        let mut attempt = 0;
        let (hsmd, port, metrics_port) = loop {
            attempt += 1;
            let port = free_port()?;
            let metrics_port = if cfg.metrics {
                Some(free_port()?)
            } else {
                None
            };
            let mut h = HsmdConfig::new(&cfg.proxy, &cfg.cln_version, &net_dir);
            for k in PROXY_ENV {
                h = h.env_remove(*k);
            }
            h = h
                .env("VLS_CLN_VERSION", &cfg.cln_version)
                .env("VLS_PORT", port.to_string())
                .env("VLS_BIND", "127.0.0.1")
                .env("VLS_TLS_DIR", "vls-tls")
                .env("RUST_LOG", &cfg.log_filter);
            if cfg.plaintext {
                h = h.env("VLS_PLAINTEXT", "true");
            }
            if let Some(m) = metrics_port {
                h = h.env("VLS_METRICS_PORT", m.to_string());
            }
            for (k, v) in &cfg.proxy_env {
                h = h.env(k, v);
            }
            h.stderr = LogTarget::File(root.join("proxy.log"));
            h.kill_with_parent = true;
            let hsmd = Hsmd::spawn(h).await.map_err(|e| e.to_string())?;
            let listening = async {
                wait_listening(&hsmd, port).await?;
                if let Some(m) = metrics_port {
                    wait_listening(&hsmd, m).await?;
                }
                Ok::<_, String>(())
            };
            match listening.await {
                Ok(()) => break (hsmd, port, metrics_port),
                Err(e) if attempt < START_ATTEMPTS => {
                    log::warn!("proxy start failed ({e}); trying other ports");
                    hsmd.kill();
                }
                Err(e) => return Err(e),
            }
        };
        let start_signer = cfg.start_signer;
        let rig = Rig {
            hsmd,
            port,
            metrics_port,
            signer: std::sync::Mutex::new(None),
            cfg,
            dir,
        };
        if start_signer {
            rig.start_signer()?;
        }
        Ok(rig)
    }

    /// The rig's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The main signer's data directory (`hsm_secret`, `state.redb`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("signer")
    }

    /// The proxy's TLS directory (`ca.pem`, `ca-key.pem`, `proxy.pem`, ...).
    pub fn proxy_tls_dir(&self) -> PathBuf {
        self.dir().join("regtest").join("vls-tls")
    }

    /// The signer's TLS directory (`ca.pem`, `signer.pem`, `signer-key.pem`).
    pub fn signer_tls_dir(&self) -> PathBuf {
        self.dir().join("signer-tls")
    }

    /// The log file of `who` (`proxy`, `signer`, or a name given to [`Rig::spawn_signer`]).
    pub fn log_path(&self, who: &str) -> PathBuf {
        self.dir().join(format!("{who}.log"))
    }

    /// The log of `who` so far (empty if there is none).
    pub fn log(&self, who: &str) -> String {
        std::fs::read_to_string(self.log_path(who)).unwrap_or_default()
    }

    /// The address a signer dials to reach `port` on this host.
    pub fn url(&self, port: u16) -> String {
        if self.cfg.plaintext {
            format!("http://127.0.0.1:{port}")
        } else {
            format!("https://localhost:{port}")
        }
    }

    /// Creates another signer data directory `name` with `secret` (`signer init --import`).
    ///
    /// # Errors
    /// If `signer init` fails.
    pub async fn init_data_dir(&self, name: &str, secret: &[u8]) -> Result<PathBuf, String> {
        let d = self.dir().join(name);
        init_data_dir(&self.cfg, &d, secret).await?;
        Ok(d)
    }

    /// Starts a signer daemon on `data_dir` dialling `port` on this host (the proxy's, or a
    /// relay's), with the rig's TLS files and policy; its stderr goes to `log_name`'s log.
    /// It is killed when the returned [`Process`] is dropped, or when this thread ends.
    ///
    /// # Errors
    /// If it cannot be started.
    pub fn spawn_signer(
        &self,
        data_dir: &Path,
        port: u16,
        log_name: &str,
        log_filter: &str,
    ) -> Result<Process, String> {
        let mut run = signer_command(&self.cfg.signer, log_filter);
        run.arg("--data-dir")
            .arg(data_dir)
            .arg("run")
            .arg("--connect")
            .arg(self.url(port));
        if self.cfg.plaintext {
            run.arg("--plaintext");
        } else {
            run.arg("--tls-dir").arg(self.signer_tls_dir());
        }
        if self.cfg.policy.is_some() {
            run.arg("--policy").arg(self.dir().join("policy.toml"));
        } else {
            run.arg("--warn-only");
        }
        let log = LogTarget::File(self.log_path(log_name))
            .stdio()
            .map_err(|e| format!("signer log: {e}"))?;
        run.stdout(Stdio::null()).stderr(log);
        // SAFETY: prctl is async-signal-safe. The signer dies with this thread even if this
        // process is killed without running destructors.
        unsafe {
            run.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = run
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.cfg.signer.display()))?;
        Ok(Process::new(child))
    }

    /// Starts the main signer (data directory [`Rig::data_dir`], log `signer`) dialling the
    /// proxy.
    ///
    /// # Errors
    /// If one runs already, or it cannot be started.
    pub fn start_signer(&self) -> Result<(), String> {
        self.start_signer_via(self.port)
    }

    /// Starts the main signer dialling `port` instead of the proxy's (e.g. a relay's).
    ///
    /// # Errors
    /// If one runs already, or it cannot be started.
    pub fn start_signer_via(&self, port: u16) -> Result<(), String> {
        let mut signer = self.lock_signer();
        if signer.as_ref().is_some_and(|p| p.exit_status().is_none()) {
            return Err("the signer runs already".into());
        }
        let filter = self.cfg.log_filter.clone();
        *signer = Some(self.spawn_signer(&self.data_dir(), port, "signer", &filter)?);
        Ok(())
    }

    fn lock_signer(&self) -> std::sync::MutexGuard<'_, Option<Process>> {
        self.signer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The main signer's process id, while it runs.
    pub fn signer_pid(&self) -> Option<u32> {
        self.lock_signer()
            .as_ref()
            .filter(|p| p.exit_status().is_none())
            .and_then(|p| p.pid())
    }

    /// Kills the main signer with SIGKILL and waits until it is gone.
    pub async fn kill_signer(&self) {
        let p = self.lock_signer().take();
        if let Some(p) = p {
            p.kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), p.wait()).await;
        }
    }

    /// Stops the main signer with SIGTERM (it answers what is in flight, then exits) and
    /// waits, killing it if it takes longer than 10 s.
    pub async fn stop_signer(&self) {
        let p = self.lock_signer().take();
        if let Some(p) = p {
            if let Some(pid) = p.pid() {
                if p.exit_status().is_none() {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGTERM);
                    }
                }
            }
            if tokio::time::timeout(Duration::from_secs(10), p.wait())
                .await
                .is_err()
            {
                p.kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), p.wait()).await;
            }
        }
    }

    /// The proxy's metrics page.
    ///
    /// # Errors
    /// If metrics are off or the page cannot be read.
    pub async fn metrics(&self) -> Result<String, String> {
        let port = self.metrics_port.ok_or("metrics are off")?;
        let get = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .map_err(|_| "metrics: timeout".to_string())?
            .map_err(|e| format!("metrics: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        Ok(match text.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_string(),
            None => text.into_owned(),
        })
    }

    /// One metric of the proxy (summed over its labels); 0 if absent.
    ///
    /// # Errors
    /// See [`Rig::metrics`].
    pub async fn metric(&self, name: &str) -> Result<f64, String> {
        Ok(metric_value(&self.metrics().await?, name).unwrap_or(0.0))
    }

    /// Kills every process and waits (briefly) until they are gone.
    pub async fn teardown(self) {
        self.hsmd.kill();
        self.kill_signer().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.hsmd.wait_exit()).await;
    }
}

async fn init_data_dir(cfg: &RigConfig, data_dir: &Path, secret: &[u8]) -> Result<(), String> {
    let parent = data_dir.parent().unwrap_or(data_dir);
    let name = data_dir
        .file_name()
        .map_or("signer".into(), |n| n.to_string_lossy().into_owned());
    let import = parent.join(format!("{name}.hsm_secret.import"));
    std::fs::write(&import, secret).map_err(|e| format!("{}: {e}", import.display()))?;
    let mut init = signer_command(&cfg.signer, "warn");
    init.arg("--data-dir")
        .arg(data_dir)
        .arg("init")
        .arg("--import")
        .arg(&import);
    let r = run_tool(init, "signer init").await;
    let _ = std::fs::remove_file(&import);
    r
}

/// Polls until the proxy accepts TCP connections on `port`; fails if it exits first.
async fn wait_listening(hsmd: &Hsmd, port: u16) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(s) = hsmd.exit_status() {
            let _ = tokio::time::timeout(Duration::from_secs(1), hsmd.status().wait_end()).await;
            let why = hsmd.status().failure().map(|(_, m)| m).unwrap_or_default();
            return Err(format!("the proxy exited during startup ({s}): {why}"));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() > LISTEN_TIMEOUT {
            return Err(format!(
                "the proxy did not listen on port {port} within {LISTEN_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The proxy's (or any process's) resident memory in kB and its thread count, from
/// `/proc/<pid>/status`.
///
/// # Errors
/// If the file cannot be read or lacks the fields.
pub fn proc_status(pid: u32) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("Threads:")?))
}

// ---------------------------------------------------------------------------------------------
// The benchmark.
// ---------------------------------------------------------------------------------------------

/// The corpus the benchmark takes its `sign_remote_commitment_tx` from, as built.
pub const DEFAULT_CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/conformance/cln-hsmd-golden.json"
);
/// The corpus case whose channel is set up and signed for.
pub const CASE: &str = "channel_static_remotekey_we_open";

/// What to run the benchmark with.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The `vls-proxy` binary.
    pub proxy: PathBuf,
    /// The `signer` binary.
    pub signer: PathBuf,
    /// The Core Lightning version the proxy reports.
    pub cln_version: String,
    /// The golden corpus.
    pub corpus: PathBuf,
    /// Fewer iterations: done in well under a minute.
    pub quick: bool,
    /// Only the operations whose name contains this, and neither the idle clients nor the
    /// restarts (to profile one operation).
    pub only: Option<String>,
}

/// How many iterations and how long.
struct Sizes {
    /// Sequential requests per cheap op.
    latency_n: usize,
    /// Sequential requests of the state-changing op (each commits to disk).
    latency_n_disk: usize,
    /// How long each throughput figure runs.
    duration: Duration,
    /// Idle clients.
    idle_clients: usize,
    /// Signer restarts.
    restarts: usize,
    /// The operations measured.
    ops: Vec<Op>,
    /// Whether the idle clients and the restarts are measured too.
    extras: bool,
}

impl Sizes {
    fn of(quick: bool, only: Option<&str>) -> Sizes {
        let ops = Op::ALL
            .into_iter()
            .filter(|o| only.is_none_or(|f| o.name().contains(f)))
            .collect();
        let extras = only.is_none();
        if quick {
            Sizes {
                latency_n: 2_000,
                latency_n_disk: 300,
                duration: Duration::from_millis(1_000),
                idle_clients: 1_000,
                restarts: 2,
                ops,
                extras,
            }
        } else {
            Sizes {
                latency_n: 20_000,
                latency_n_disk: 2_000,
                duration: Duration::from_secs(4),
                idle_clients: 1_000,
                restarts: 5,
                ops,
                extras,
            }
        }
    }
}

/// The three operations measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ecdh,
    PerCommitmentPoint,
    SignRemoteCommitment,
}

impl Op {
    const ALL: [Op; 3] = [Op::Ecdh, Op::PerCommitmentPoint, Op::SignRemoteCommitment];

    fn name(self) -> &'static str {
        match self {
            Op::Ecdh => "ecdh",
            Op::PerCommitmentPoint => "get_per_commitment_point",
            Op::SignRemoteCommitment => "sign_remote_commitment_tx",
        }
    }
}

/// One figure of an operation.
#[derive(Serialize, Debug)]
struct OpFigure {
    op: &'static str,
    path: &'static str,
    clients: usize,
    threads: Option<usize>,
    n: usize,
    p50_us: f64,
    p99_us: f64,
    ops_per_s: f64,
    /// Full path: CPU time (user + system) each process spent per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_us_per_op: Option<CpuPerOp>,
}

/// CPU time per request of each process of the full path, in microseconds.
#[derive(Serialize, Debug, Clone, Copy)]
struct CpuPerOp {
    /// This process: the node's client (full path), or the handler itself (in-process).
    node: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<f64>,
}

/// Clock ticks spent over `n` requests, in microseconds per request.
fn ticks_per_op_us(ticks: u64, n: usize) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    round1(ticks as f64 / hz * 1e6 / n.max(1) as f64)
}

impl CpuPerOp {
    /// In-process: this process's time since `since` (ticks of [`cpu_ticks`]).
    #[cfg_attr(not(feature = "inprocess-bench"), allow(dead_code))]
    fn inprocess(since: u64, n: usize) -> CpuPerOp {
        CpuPerOp {
            node: ticks_per_op_us(cpu_ticks("self").saturating_sub(since), n),
            proxy: None,
            signer: None,
        }
    }
}

/// The CPU time (user + system, all threads) of the three processes so far, in clock ticks.
struct CpuSnapshot {
    node: u64,
    proxy: u64,
    signer: u64,
}

/// The CPU time (user + system, all threads) process `pid` has spent so far (zero if it is
/// gone).
pub fn cpu_time(pid: u32) -> std::time::Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::time::Duration::from_secs_f64(cpu_ticks(&pid.to_string()) as f64 / hz)
}

/// CPU time of `pid` (`self` for this process) in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

impl CpuSnapshot {
    fn take(rig: &Rig) -> CpuSnapshot {
        let pid = |p: Option<u32>| p.map_or(0, |p| cpu_ticks(&p.to_string()));
        CpuSnapshot {
            node: cpu_ticks("self"),
            proxy: pid(rig.hsmd.pid()),
            signer: pid(rig.signer_pid()),
        }
    }

    /// The time each process spent since `self`, per request of `n`.
    fn per_op(&self, rig: &Rig, n: usize) -> CpuPerOp {
        let now = CpuSnapshot::take(rig);
        let us = |a: u64, b: u64| ticks_per_op_us(b.saturating_sub(a), n);
        CpuPerOp {
            node: us(self.node, now.node),
            proxy: Some(us(self.proxy, now.proxy)),
            signer: Some(us(self.signer, now.signer)),
        }
    }
}

impl OpFigure {
    fn new(
        op: Op,
        path: &'static str,
        clients: usize,
        threads: Option<usize>,
        mut lat_us: Vec<f64>,
        elapsed: Duration,
    ) -> OpFigure {
        lat_us.sort_by(|a, b| a.total_cmp(b));
        let n = lat_us.len();
        OpFigure {
            op: op.name(),
            path,
            clients,
            threads,
            n,
            p50_us: round1(percentile(&lat_us, 0.50)),
            p99_us: round1(percentile(&lat_us, 0.99)),
            ops_per_s: round1(n as f64 / elapsed.as_secs_f64().max(1e-9)),
            cpu_us_per_op: None,
        }
    }

    fn with_cpu(mut self, cpu: CpuPerOp) -> OpFigure {
        self.cpu_us_per_op = Some(cpu);
        self
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => round1((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn emit(out: &mut impl Write, v: &impl Serialize) -> Result<(), String> {
    let line = serde_json::to_string(v).map_err(|e| e.to_string())?;
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("output: {e}"))
}

/// A public key for `k` (its secret key is `[k; 32]`).
pub fn point(k: u8) -> PublicKey {
    PublicKey::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[k; 32]).expect("a valid secret key"),
    )
}

/// The peer of the benchmark's own channels.
fn bench_peer() -> NodeId {
    NodeId::from_pubkey(&point(9))
}

/// The corpus case, split where the measured request is: its secret, its setup steps (each
/// a client number, the request, and the `hsmd_client_hsmfd` it is if it is one, with the
/// client number it creates) and the `sign_remote_commitment_tx` request.
struct Workload {
    secret: Vec<u8>,
    setup: Vec<SetupStep>,
    /// The channel's own `hsmd_setup_channel`, to set up more channels like it.
    setup_channel: Vec<u8>,
    sign_remote: Vec<u8>,
    /// The client (peer, dbid, permissions) the case signs on.
    sign_client: ClientHsmfd,
}

struct SetupStep {
    client: u64,
    request: Vec<u8>,
    /// For `hsmd_client_hsmfd`: the client it creates, and its number.
    new_client: Option<(ClientHsmfd, u64)>,
    /// Core Lightning's reply, which ours must equal.
    reply: Option<Vec<u8>>,
}

impl Workload {
    fn load(corpus: &Path) -> Result<Workload, String> {
        let corpus = Corpus::load(corpus)?;
        let case: &Case = corpus
            .cases
            .iter()
            .find(|c| c.name == CASE)
            .ok_or_else(|| format!("the corpus has no case {CASE}"))?;
        let secret = case.secret_file().map_err(|e| e.0)?;
        let mut setup = Vec::new();
        let mut clients: HashMap<u64, ClientHsmfd> = HashMap::new();
        let mut setup_channel = None;
        for step in &case.steps {
            let request = step.request_bytes().map_err(|e| e.0)?;
            let name = step.request_name.as_deref().unwrap_or("");
            if name == "hsmd_sign_remote_commitment_tx" {
                let sign_client = clients
                    .get(&step.client)
                    .cloned()
                    .ok_or("the signing step is not on a client fd")?;
                SignRemoteCommitmentTx::decode(&request)
                    .map_err(|e| format!("corpus sign_remote_commitment_tx: {e}"))?;
                return Ok(Workload {
                    secret,
                    setup,
                    setup_channel: setup_channel.ok_or("the case has no setup_channel")?,
                    sign_remote: request,
                    sign_client,
                });
            }
            if name == "hsmd_setup_channel" {
                setup_channel = Some(request.clone());
            }
            let new_client = match (name, step.new_client) {
                ("hsmd_client_hsmfd", Some(n)) => {
                    let c = ClientHsmfd::decode(&request)
                        .map_err(|e| format!("corpus client_hsmfd: {e}"))?;
                    clients.insert(n, c.clone());
                    Some((c, n))
                }
                _ => None,
            };
            let reply = step
                .reply
                .as_deref()
                .map(hex::decode)
                .transpose()
                .map_err(|e| format!("corpus reply: {e}"))?;
            setup.push(SetupStep {
                client: step.client,
                request,
                new_client,
                reply,
            });
        }
        Err(format!("case {CASE} has no sign_remote_commitment_tx"))
    }

    /// The request of `op`: the same bytes on every client. The signing request is the
    /// case's, so on the benchmark's other channels (set up with the case's parameters, to
    /// have many clients sign at once) it does not match their keys: in warn mode the signer
    /// signs it anyway, and logs a policy warning.
    fn request(&self, op: Op) -> Vec<u8> {
        match op {
            Op::Ecdh => EcdhReq::new(point(7)).encode(),
            Op::PerCommitmentPoint => GetPerCommitmentPoint::new(1).encode(),
            Op::SignRemoteCommitment => Ok(self.sign_remote.clone()),
        }
        .expect("the benchmark's requests encode")
    }
}

/// Runs the benchmark, printing one JSON line per figure to `out`.
///
/// # Errors
/// If the corpus cannot be read, the processes cannot be set up, or a request fails.
pub async fn run(cfg: &BenchConfig, out: &mut impl Write) -> Result<(), String> {
    let sizes = Sizes::of(cfg.quick, cfg.only.as_deref());
    let work = Workload::load(&cfg.corpus)?;
    raise_fd_limit();

    // In-process first, with nothing else running.
    inprocess_figures(&work, &sizes, out)?;
    for figure in ipc_round_trips(sizes.latency_n)? {
        emit(out, &figure)?;
    }

    let mut rc = RigConfig::new(&cfg.proxy, &cfg.signer, &work.secret);
    rc.cln_version = cfg.cln_version.clone();
    let rig = Rig::start(rc).await?;
    let r = full_path(&rig, &work, &sizes, out).await;
    if r.is_err() {
        eprintln!("node bench: the rig's logs: {}", rig.dir().display());
    }
    rig.teardown().await;
    r
}

/// The machine's floor for one round trip between two threads: see the module docs.
#[derive(Serialize, Debug)]
struct IpcFigure {
    metric: &'static str,
    transport: &'static str,
    n: usize,
    p50_us: f64,
    p99_us: f64,
    /// How long an idle vCPU polls before it halts, on a Linux guest with `cpuidle-haltpoll`
    /// (0: it halts at once, and every wake-up is an exit to the hypervisor).
    guest_halt_poll_ns: Option<u64>,
}

/// The guest's halt-polling time, if this is a Linux guest that has it.
fn guest_halt_poll_ns() -> Option<u64> {
    std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn ipc_round_trips(n: usize) -> Result<Vec<IpcFigure>, String> {
    let err = |e: std::io::Error| format!("ipc round trip: {e}");
    let (a, b) = std::os::unix::net::UnixStream::pair().map_err(err)?;
    let unix = ping_pong(a, b, n).map_err(err)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let a = std::net::TcpStream::connect(listener.local_addr().map_err(err)?).map_err(err)?;
    let (b, _) = listener.accept().map_err(err)?;
    a.set_nodelay(true).map_err(err)?;
    b.set_nodelay(true).map_err(err)?;
    let tcp = ping_pong(a, b, n).map_err(err)?;
    Ok([("unix", unix), ("tcp", tcp)]
        .into_iter()
        .map(|(transport, mut lat)| {
            lat.sort_by(f64::total_cmp);
            IpcFigure {
                metric: "ipc_round_trip",
                transport,
                n: lat.len(),
                p50_us: round1(percentile(&lat, 0.50)),
                p99_us: round1(percentile(&lat, 0.99)),
                guest_halt_poll_ns: guest_halt_poll_ns(),
            }
        })
        .collect())
}

/// `n` one-byte round trips from `a` to an echo thread on `b`; their latencies in µs.
fn ping_pong<S>(mut a: S, mut b: S, n: usize) -> std::io::Result<Vec<f64>>
where
    S: std::io::Read + Write + Send + 'static,
{
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        for _ in 0..n {
            b.read_exact(&mut byte)?;
            b.write_all(&byte)?;
        }
        Ok(())
    });
    let mut lat = Vec::with_capacity(n);
    let mut byte = [0u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        a.write_all(&byte)?;
        a.read_exact(&mut byte)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    echo.join()
        .map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    Ok(lat)
}

#[cfg(feature = "inprocess-bench")]
fn inprocess_figures(work: &Workload, sizes: &Sizes, out: &mut impl Write) -> Result<(), String> {
    for f in inprocess::figures(work, sizes)? {
        emit(out, &f)?;
    }
    Ok(())
}

#[cfg(not(feature = "inprocess-bench"))]
fn inprocess_figures(_: &Workload, _: &Sizes, out: &mut impl Write) -> Result<(), String> {
    emit(
        out,
        &serde_json::json!({
            "path": "inprocess",
            "skipped": "built without the inprocess-bench feature (cargo build -p node --features inprocess-bench)"
        }),
    )
}

/// How long one request may take before the benchmark fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn request(client: &HsmClient, msg: &[u8]) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, client.request(msg)).await {
        Err(_) => Err(format!("no reply within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) if r.len() >= 2 => Ok(r),
        Ok(Ok(r)) => Err(format!("short reply {}", hex::encode(r))),
    }
}

/// The reply type a request of `op` must get.
fn reply_type(op: Op) -> u16 {
    match op {
        Op::Ecdh => protocol::msgs::EcdhResp::TYPE,
        Op::PerCommitmentPoint => protocol::msgs::GetPerCommitmentPointReply::TYPE,
        Op::SignRemoteCommitment => protocol::msgs::SignTxReply::TYPE,
    }
}

fn check_reply(op: Op, reply: &[u8]) -> Result<(), String> {
    let t = protocol::peek_type(reply);
    if t != Some(reply_type(op)) {
        return Err(format!(
            "{} was answered with {}",
            op.name(),
            hex::encode(&reply[..reply.len().min(8)])
        ));
    }
    Ok(())
}

/// Everything measured through the processes.
async fn full_path(
    rig: &Rig,
    work: &Workload,
    sizes: &Sizes,
    out: &mut impl Write,
) -> Result<(), String> {
    // The case's setup, as recorded.
    let mut clients: HashMap<u64, Arc<HsmClient>> = HashMap::new();
    for step in &work.setup {
        let reply = if let Some((c, n)) = &step.new_client {
            let client = rig
                .hsmd
                .new_client(c.id, c.dbid, Permissions::from_bits(c.permissions))
                .await
                .map_err(|e| format!("client_hsmfd: {e}"))?;
            clients.insert(*n, Arc::new(client));
            None
        } else if step.client == 0 {
            Some(request(rig.hsmd.master(), &step.request).await?)
        } else {
            let c = clients
                .get(&step.client)
                .ok_or_else(|| format!("no client {}", step.client))?;
            Some(request(c, &step.request).await?)
        };
        if let (Some(got), Some(want)) = (&reply, &step.reply) {
            if got != want {
                return Err(format!(
                    "setup step {} got {}, Core Lightning {}",
                    hex::encode(&step.request[..2]),
                    hex::encode(got),
                    hex::encode(want)
                ));
            }
        }
    }
    let sign_client = clients
        .values()
        .find(|c| c.info().dbid == work.sign_client.dbid)
        .cloned()
        .ok_or("the signing client is gone")?;

    // 64 channel clients for the cheap operations, and 64 set-up channels to sign on (the
    // case's own first).
    let peer = bench_peer();
    let mut cheap = Vec::new();
    for i in 0..64u64 {
        let c = rig
            .hsmd
            .new_client(peer, 1_000 + i, Subdaemon::Channeld.permissions())
            .await
            .map_err(|e| format!("client_hsmfd: {e}"))?;
        cheap.push(Arc::new(c));
    }
    let mut signing = vec![sign_client];
    for i in 1..64u64 {
        let dbid = 2_000 + i;
        let nc = NewChannel::new(work.sign_client.id, dbid)
            .encode()
            .map_err(|e| e.to_string())?;
        request(rig.hsmd.master(), &nc).await?;
        let c = rig
            .hsmd
            .new_client(
                work.sign_client.id,
                dbid,
                Permissions::from_bits(work.sign_client.permissions),
            )
            .await
            .map_err(|e| format!("client_hsmfd: {e}"))?;
        request(&c, &work.setup_channel).await?;
        signing.push(Arc::new(c));
    }

    for &op in &sizes.ops {
        let msg = work.request(op);
        let pool = if op == Op::SignRemoteCommitment {
            &signing
        } else {
            &cheap
        };
        check_reply(op, &request(&pool[0], &msg).await?)?;
        // One client in sequence: latency.
        let n = if op == Op::SignRemoteCommitment {
            sizes.latency_n_disk
        } else {
            sizes.latency_n
        };
        for _ in 0..n.min(200) {
            request(&pool[0], &msg).await?;
        }
        let mut lat = Vec::with_capacity(n);
        let cpu = CpuSnapshot::take(rig);
        let started = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            request(&pool[0], &msg).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let elapsed = started.elapsed();
        let cpu = cpu.per_op(rig, n);
        emit(
            out,
            &OpFigure::new(op, "full", 1, None, lat, elapsed).with_cpu(cpu),
        )?;
        // Concurrent clients: throughput.
        for c in [8, 64] {
            let (lat, elapsed, cpu) = concurrent(rig, &pool[..c], &msg, sizes.duration).await?;
            emit(
                out,
                &OpFigure::new(op, "full", c, None, lat, elapsed).with_cpu(cpu),
            )?;
        }
    }
    drop(cheap);
    drop(signing);
    drop(clients);

    if !sizes.extras {
        return Ok(());
    }
    idle_clients(rig, sizes.idle_clients, out).await?;
    recovery(rig, sizes.restarts, out).await
}

/// Every client sends `msg` again and again for `duration` (after a short warm-up); the
/// latencies and the time taken.
async fn concurrent(
    rig: &Rig,
    clients: &[Arc<HsmClient>],
    msg: &[u8],
    duration: Duration,
) -> Result<(Vec<f64>, Duration, CpuPerOp), String> {
    let msg: Arc<[u8]> = msg.into();
    let run = |d: Duration| {
        let mut set = tokio::task::JoinSet::new();
        let deadline = Instant::now() + d;
        for c in clients {
            let (c, msg) = (c.clone(), msg.clone());
            set.spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    request(&c, &msg).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                Ok::<_, String>(lat)
            });
        }
        async move {
            let started = Instant::now();
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                all.extend(r.map_err(|e| e.to_string())??);
            }
            Ok::<_, String>((all, started.elapsed()))
        }
    };
    run(duration / 5).await?;
    let cpu = CpuSnapshot::take(rig);
    let (lat, elapsed) = run(duration).await?;
    let cpu = cpu.per_op(rig, lat.len());
    Ok((lat, elapsed, cpu))
}

#[derive(Serialize)]
struct IdleFigure {
    metric: &'static str,
    clients: usize,
    rss_kb: u64,
    threads: u64,
}

/// The proxy's memory and threads with no client but the master, then with `n` idle ones.
async fn idle_clients(rig: &Rig, n: usize, out: &mut impl Write) -> Result<(), String> {
    let pid = rig.hsmd.pid().ok_or("the proxy has no pid")?;
    let settle = || tokio::time::sleep(Duration::from_millis(500));
    settle().await;
    let (rss_kb, threads) = proc_status(pid)?;
    emit(
        out,
        &IdleFigure {
            metric: "proxy_idle_clients",
            clients: 0,
            rss_kb,
            threads,
        },
    )?;
    let peer = bench_peer();
    let mut idle = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let c = rig
            .hsmd
            .new_client(peer, 100_000 + i, Subdaemon::Channeld.permissions())
            .await
            .map_err(|e| format!("idle client {i}: {e}"))?;
        idle.push(c);
    }
    settle().await;
    let (rss_kb, threads) = proc_status(pid)?;
    emit(
        out,
        &IdleFigure {
            metric: "proxy_idle_clients",
            clients: n,
            rss_kb,
            threads,
        },
    )?;
    // They are idle, not dead: one of them still gets answers.
    if let Some(c) = idle.last() {
        check_reply(
            Op::Ecdh,
            &request(
                c,
                &EcdhReq::new(point(7)).encode().map_err(|e| e.to_string())?,
            )
            .await?,
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct RecoveryFigure {
    metric: &'static str,
    runs: usize,
    median_ms: f64,
    max_ms: f64,
    samples_ms: Vec<f64>,
    from: &'static str,
}

/// `kill -9` of the signer while a client waits, then the time from starting it again to
/// that client's reply.
async fn recovery(rig: &Rig, runs: usize, out: &mut impl Write) -> Result<(), String> {
    let client = rig
        .hsmd
        .new_client(bench_peer(), 3_000, Subdaemon::Channeld.permissions())
        .await
        .map_err(|e| format!("client_hsmfd: {e}"))?;
    let msg = EcdhReq::new(point(7)).encode().map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        check_reply(Op::Ecdh, &request(&client, &msg).await?)?;
        rig.kill_signer().await;
        // Let the proxy see the stream end, and the request wait for the signer.
        let pending = request(&client, &msg);
        tokio::pin!(pending);
        tokio::select! {
            r = &mut pending => return Err(format!("answered with no signer: {r:?}")),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let t0 = Instant::now();
        rig.start_signer()?;
        check_reply(Op::Ecdh, &pending.await?)?;
        samples.push(round1(t0.elapsed().as_secs_f64() * 1e3));
    }
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    emit(
        out,
        &RecoveryFigure {
            metric: "recovery_after_signer_restart_ms",
            runs,
            median_ms: median(&sorted),
            max_ms: sorted.last().copied().unwrap_or(0.0),
            samples_ms: samples,
            from: "signer process started",
        },
    )
}

/// Raises the soft limit of open files to the hard one: 1,000 idle clients need as many
/// descriptors here and in the proxy (which inherits the limit).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The same operations on the signer's handler, called directly.
#[cfg(feature = "inprocess-bench")]
mod inprocess {
    use super::{bench_peer, cpu_ticks, CpuPerOp, Op, OpFigure, Sizes, Workload};
    use protocol::msgs::NewChannel;
    use protocol::Permissions;
    use signer::{ClientContext, Policy, Signer, Store};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A signer on a fresh on-disk store with the case's setup done, and the contexts of
    /// two channels per operation.
    struct Setup {
        signer: Arc<Signer>,
        cheap: [ClientContext; 2],
        signing: [ClientContext; 2],
        _dir: tempfile::TempDir,
    }

    fn setup(work: &Workload) -> Result<Setup, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = Store::open(&dir.path().join("state.redb")).map_err(|e| e.to_string())?;
        let signer = Signer::new(work.secret.clone(), store, Policy::warn_only());
        let master = ClientContext::master();
        let mut contexts: HashMap<u64, ClientContext> = HashMap::new();
        contexts.insert(0, master.clone());
        for step in &work.setup {
            let ctx = contexts
                .get(&step.client)
                .cloned()
                .ok_or_else(|| format!("no client {}", step.client))?;
            let reply = signer
                .handle(&ctx, None, &step.request)
                .map_err(|e| e.description())?;
            if let Some(want) = &step.reply {
                if &reply != want {
                    return Err("in-process setup differs from Core Lightning".into());
                }
            }
            if let Some((c, n)) = &step.new_client {
                contexts.insert(
                    *n,
                    ClientContext::client(c.id, c.dbid, Permissions::from_bits(c.permissions)),
                );
            }
        }
        let sc = &work.sign_client;
        let first = ClientContext::client(sc.id, sc.dbid, Permissions::from_bits(sc.permissions));
        let second_dbid = 2_001;
        let nc = NewChannel::new(sc.id, second_dbid)
            .encode()
            .map_err(|e| e.to_string())?;
        signer
            .handle(&master, None, &nc)
            .map_err(|e| e.description())?;
        let second =
            ClientContext::client(sc.id, second_dbid, Permissions::from_bits(sc.permissions));
        signer
            .handle(&second, None, &work.setup_channel)
            .map_err(|e| e.description())?;
        let chan = |d| ClientContext::client(bench_peer(), d, Permissions::CHANNELD);
        Ok(Setup {
            signer: Arc::new(signer),
            cheap: [chan(1_000), chan(1_001)],
            signing: [first, second],
            _dir: dir,
        })
    }

    /// Request ids as the daemon passes them (one per request, increasing).
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    fn once(s: &Signer, ctx: &ClientContext, msg: &[u8]) -> Result<(), String> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        s.handle(ctx, Some(id), msg)
            .map(|_| ())
            .map_err(|e| e.description())
    }

    pub(super) fn figures(work: &Workload, sizes: &Sizes) -> Result<Vec<OpFigure>, String> {
        // The warn-mode policy warnings of the signing request would flood this process's
        // log (the daemon writes them to its own log file).
        let level = log::max_level();
        log::set_max_level(log::LevelFilter::Error);
        let r = measure(work, sizes);
        log::set_max_level(level);
        r
    }

    fn measure(work: &Workload, sizes: &Sizes) -> Result<Vec<OpFigure>, String> {
        let s = setup(work)?;
        let mut out = Vec::new();
        for &op in &sizes.ops {
            let msg = work.request(op);
            let ctxs = if op == Op::SignRemoteCommitment {
                &s.signing
            } else {
                &s.cheap
            };
            let n = if op == Op::SignRemoteCommitment {
                sizes.latency_n_disk
            } else {
                sizes.latency_n
            };
            for _ in 0..n.min(200) {
                once(&s.signer, &ctxs[0], &msg)?;
            }
            let mut lat = Vec::with_capacity(n);
            let cpu = cpu_ticks("self");
            let started = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                once(&s.signer, &ctxs[0], &msg)?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let elapsed = started.elapsed();
            let cpu = CpuPerOp::inprocess(cpu, n);
            out.push(OpFigure::new(op, "inprocess", 1, Some(1), lat, elapsed).with_cpu(cpu));
            // Two threads, each on its own channel.
            let cpu = cpu_ticks("self");
            let (lat, elapsed) = two_threads(&s.signer, ctxs, &msg, sizes.duration)?;
            let cpu = CpuPerOp::inprocess(cpu, lat.len());
            out.push(OpFigure::new(op, "inprocess", 2, Some(2), lat, elapsed).with_cpu(cpu));
        }
        Ok(out)
    }

    fn two_threads(
        signer: &Arc<Signer>,
        ctxs: &[ClientContext; 2],
        msg: &[u8],
        duration: Duration,
    ) -> Result<(Vec<f64>, Duration), String> {
        let started = Instant::now();
        let deadline = started + duration;
        let threads: Vec<_> = ctxs
            .iter()
            .map(|ctx| {
                let (signer, ctx, msg) = (signer.clone(), ctx.clone(), msg.to_vec());
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        once(&signer, &ctx, &msg)?;
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Ok::<_, String>(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            all.extend(t.join().map_err(|_| "a thread panicked".to_string())??);
        }
        Ok((all, started.elapsed()))
    }
}
