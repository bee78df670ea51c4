//! The processes of one replayed case, set up from nothing and torn down on every path.
//!
//! In a fresh temporary directory: the case's secret is imported into a new signer data
//! directory (`signer init --import`), certificates are made (`vls-proxy certs`) and the
//! signer's share copied to its TLS directory, a free port is picked, the proxy is started
//! as lightningd starts hsmd ([`Hsmd::spawn`]), and once it listens the signer daemon is
//! started to dial it over mutual TLS. Dropping a [`CaseEnv`] kills both processes.

use super::ReplayConfig;
use crate::hsmd::{Hsmd, HsmdConfig, LogTarget};
use crate::process::Process;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a setup tool (`signer init`, `vls-proxy certs`) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the proxy may take to listen for the signer.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times the proxy is started before a case gives up on it.
const START_ATTEMPTS: u32 = 3;

/// Variables of our environment that would change how the signer runs; never passed.
const SIGNER_ENV: &[&str] = &[
    "SIGNER_CONFIG",
    "SIGNER_DATA_DIR",
    "SIGNER_CONNECT",
    "SIGNER_TLS_DIR",
    "SIGNER_POLICY",
    "SIGNER_PASSPHRASE_FILE",
];
/// Variables of our environment that would change how the proxy runs; never passed (the
/// replay sets the ones it needs).
const PROXY_ENV: &[&str] = &[
    "VLS_PORT",
    "VLS_BIND",
    "VLS_TLS_DIR",
    "VLS_PLAINTEXT",
    "VLS_EXPECT_NODE_ID",
    "VLS_METRICS_PORT",
];

/// The running processes of one case, and its directory.
pub struct CaseEnv {
    /// The proxy, started as lightningd starts hsmd.
    pub hsmd: Hsmd,
    /// The signer daemon.
    pub signer: Process,
    // Dropped last: the processes go first.
    _dir: tempfile::TempDir,
}

fn signer_command(cfg: &ReplayConfig) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&cfg.signer);
    for k in SIGNER_ENV {
        c.env_remove(k);
    }
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Runs a setup tool to completion; its stderr is the error if it fails.
async fn run_tool(mut cmd: tokio::process::Command, what: &str) -> Result<(), String> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let out = match tokio::time::timeout(TOOL_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("{what} did not finish within {TOOL_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run {what}: {e}")),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().lines().last().unwrap_or("").to_string();
        return Err(format!("{what} failed ({}): {err}", out.status));
    }
    Ok(())
}

/// A port nobody listens on right now (the kernel's pick).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn log_target(cfg: &ReplayConfig, case: &str, who: &str) -> LogTarget {
    match &cfg.log_dir {
        Some(d) => {
            let safe: String = case
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            LogTarget::File(d.join(format!("{safe}.{who}.log")))
        }
        None => LogTarget::Null,
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn copy_files(from: &Path, to: &Path, names: &[&str]) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for n in names {
        std::fs::copy(from.join(n), to.join(n)).map_err(|e| format!("copying {n}: {e}"))?;
    }
    Ok(())
}

impl CaseEnv {
    /// Sets up and starts everything for a case with this `hsm_secret` file content and
    /// passphrase. `name` only names log files.
    pub async fn start(
        cfg: &ReplayConfig,
        name: &str,
        secret_file: &[u8],
        passphrase: Option<&str>,
    ) -> Result<CaseEnv, String> {
        let dir = tempfile::Builder::new()
            .prefix("node-replay-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let root = dir.path();

        // The signer's secret, imported as an operator would move an existing node's.
        let import = root.join("hsm_secret.import");
        write_file(&import, secret_file)?;
        let data_dir = root.join("signer");
        let mut init = signer_command(cfg);
        init.arg("--data-dir")
            .arg(&data_dir)
            .arg("init")
            .arg("--import")
            .arg(&import);
        if let Some(p) = passphrase {
            let pf = root.join("passphrase");
            write_file(&pf, p.as_bytes())?;
            init.arg("--passphrase-file").arg(pf);
        }
        run_tool(init, "signer init").await?;

        // The node's network directory with the link's certificates; the signer's share.
        let net_dir = root.join("regtest");
        std::fs::create_dir_all(&net_dir).map_err(|e| format!("{}: {e}", net_dir.display()))?;
        let proxy_tls = net_dir.join("vls-tls");
        let mut certs = tokio::process::Command::new(&cfg.proxy);
        certs
            .arg("certs")
            .arg("--dir")
            .arg(&proxy_tls)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        run_tool(certs, "vls-proxy certs").await?;
        let signer_tls = root.join("signer-tls");
        copy_files(
            &proxy_tls,
            &signer_tls,
            &["ca.pem", "signer.pem", "signer-key.pem"],
        )?;

        // The port is free when picked, but someone may take it before the proxy binds it:
        // a proxy that exits during startup is tried again on another port.
        let mut attempt = 0;
        let (hsmd, port) = loop {
            attempt += 1;
            let port = free_port()?;
            let mut hcfg = HsmdConfig::new(&cfg.proxy, &cfg.cln_version, &net_dir)
                .env("VLS_PORT", port.to_string())
                .env("VLS_BIND", "127.0.0.1")
                .env("VLS_TLS_DIR", "vls-tls");
            for k in PROXY_ENV {
                if !["VLS_PORT", "VLS_BIND", "VLS_TLS_DIR"].contains(k) {
                    hcfg = hcfg.env_remove(*k);
                }
            }
            hcfg.stderr = log_target(cfg, name, "proxy");
            hcfg.args = cfg.proxy_args.clone();
            hcfg.kill_with_parent = true;
            let hsmd = Hsmd::spawn(hcfg).await.map_err(|e| e.to_string())?;
            match wait_listening(&hsmd, port).await {
                Ok(()) => break (hsmd, port),
                Err(Listen::Exited(e)) if attempt < START_ATTEMPTS => {
                    log::warn!("proxy start failed ({e}); trying another port");
                }
                Err(Listen::Exited(e) | Listen::Timeout(e)) => return Err(e),
            }
        };

        let mut run = signer_command(cfg);
        run.arg("--data-dir")
            .arg(&data_dir)
            .arg("run")
            .arg("--connect")
            .arg(format!("https://localhost:{port}"))
            .arg("--tls-dir")
            .arg(&signer_tls);
        match &cfg.policy {
            Some(p) => run.arg("--policy").arg(p),
            None => run.arg("--warn-only"),
        };
        let signer_log = log_target(cfg, name, "signer").stdio();
        run.stdout(Stdio::null())
            .stderr(signer_log.map_err(|e| format!("signer log: {e}"))?);
        // SAFETY: prctl is async-signal-safe. The signer dies with this thread even if this
        // process is killed without running destructors (as the proxy does, see
        // `HsmdConfig::kill_with_parent`).
        unsafe {
            run.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let signer = Process::new(
            run.spawn()
                .map_err(|e| format!("cannot start {}: {e}", cfg.signer.display()))?,
        );
        Ok(CaseEnv {
            hsmd,
            signer,
            _dir: dir,
        })
    }

    /// Kills both processes and waits (briefly) until they are gone.
    pub async fn teardown(self) {
        self.hsmd.kill();
        self.signer.kill();
        let both = async {
            let _ = self.hsmd.wait_exit().await;
            let _ = self.signer.wait().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), both).await;
    }
}

/// Why the proxy is not listening.
enum Listen {
    /// It exited first.
    Exited(String),
    /// It did not listen in time.
    Timeout(String),
}

/// Polls until the proxy accepts TCP connections on `port`, or fails if it exits first.
async fn wait_listening(hsmd: &Hsmd, port: u16) -> Result<(), Listen> {
    let start = Instant::now();
    loop {
        if let Some(s) = hsmd.exit_status() {
            let _ = tokio::time::timeout(Duration::from_secs(1), hsmd.status().wait_end()).await;
            let why = hsmd.status().failure().map(|(_, m)| m).unwrap_or_default();
            return Err(Listen::Exited(format!(
                "the proxy exited during startup ({s}): {why}"
            )));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() > LISTEN_TIMEOUT {
            return Err(Listen::Timeout(format!(
                "the proxy did not listen on port {port} within {LISTEN_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The binary `name` next to the running executable, or `name` itself (looked up in PATH).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(OsStr::new(name)))
}
