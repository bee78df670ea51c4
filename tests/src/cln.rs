//! A regtest world of real Core Lightning nodes for the end-to-end tests: `bitcoind`, and
//! `lightningd` nodes each with either Core Lightning's own hsmd or `vls-proxy` as its hsmd
//! and its own `signer` over mutual TLS (enforce mode, default policy).
//!
//! The Core Lightning and Bitcoin Core binaries are looked up in `LIGHTNINGD_BIN_DIR`, then on
//! `PATH`; [`Tools::find`] says which are missing so the caller can skip, loudly.

use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The external programs the tests drive.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `lightningd`.
    pub lightningd: PathBuf,
    /// `lightning-cli`.
    pub lightning_cli: PathBuf,
    /// `bitcoind`.
    pub bitcoind: PathBuf,
    /// `bitcoin-cli`.
    pub bitcoin_cli: PathBuf,
}

impl Tools {
    /// The four programs, or the names of those not found.
    pub fn find() -> Result<Tools, Vec<&'static str>> {
        let dirs: Vec<PathBuf> = std::env::var_os("LIGHTNINGD_BIN_DIR")
            .into_iter()
            .map(PathBuf::from)
            .chain(
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths),
            )
            .collect();
        let mut missing = Vec::new();
        let mut find = |name: &'static str| {
            let found = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
            if found.is_none() {
                missing.push(name);
            }
            found.unwrap_or_default()
        };
        let t = Tools {
            lightningd: find("lightningd"),
            lightning_cli: find("lightning-cli"),
            bitcoind: find("bitcoind"),
            bitcoin_cli: find("bitcoin-cli"),
        };
        if missing.is_empty() {
            Ok(t)
        } else {
            Err(missing)
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs` seconds.
///
/// # Panics
/// With `what` when time runs out.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed when dropped.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// bitcoind on regtest, without a wallet.
pub struct Bitcoind {
    tools: Tools,
    dir: PathBuf,
    rpc_port: u16,
    _proc: Proc,
}

impl Bitcoind {
    /// Starts bitcoind in `dir` and waits for its RPC.
    pub fn start(tools: &Tools, dir: &Path) -> Bitcoind {
        std::fs::create_dir_all(dir).unwrap();
        let rpc_port = free_port();
        let p2p_port = free_port();
        let child = Command::new(&tools.bitcoind)
            .args([
                "-regtest",
                "-daemon=0",
                "-printtoconsole=0",
                "-rpcuser=u",
                "-rpcpassword=p",
                "-bind=127.0.0.1",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                "-fallbackfee=0.00001",
                "-txindex=0",
            ])
            .arg(format!("-datadir={}", dir.display()))
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={p2p_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting bitcoind");
        let b = Bitcoind {
            tools: tools.clone(),
            dir: dir.to_path_buf(),
            rpc_port,
            _proc: Proc(child),
        };
        wait_for("bitcoind's RPC", 60, || {
            b.try_cli(&["getblockchaininfo"]).ok()
        });
        b
    }

    /// Options that point lightningd at this bitcoind.
    pub fn lightningd_args(&self) -> Vec<String> {
        vec![
            format!("--bitcoin-datadir={}", self.dir.display()),
            "--bitcoin-rpcconnect=127.0.0.1".into(),
            format!("--bitcoin-rpcport={}", self.rpc_port),
            "--bitcoin-rpcuser=u".into(),
            "--bitcoin-rpcpassword=p".into(),
            format!("--bitcoin-cli={}", self.tools.bitcoin_cli.display()),
        ]
    }

    /// `bitcoin-cli args...`, its output as JSON (or as a string).
    pub fn try_cli(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(&self.tools.bitcoin_cli)
            .args(["-regtest", "-rpcuser=u", "-rpcpassword=p"])
            .arg(format!("-datadir={}", self.dir.display()))
            .arg(format!("-rpcport={}", self.rpc_port))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Mines `n` blocks to `address`.
    pub fn mine(&self, n: u32, address: &str) {
        self.try_cli(&["generatetoaddress", &n.to_string(), address])
            .expect("generatetoaddress");
    }

    /// The current height.
    pub fn height(&self) -> u64 {
        self.try_cli(&["getblockcount"]).unwrap().as_u64().unwrap()
    }
}

/// Which hsmd a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hsmd {
    /// Core Lightning's own `lightning_hsmd`.
    Stock,
    /// `vls-proxy`, with a `signer` over mutual TLS.
    Remote,
}

/// One lightningd (and, with [`Hsmd::Remote`], its signer).
pub struct Node {
    /// Its name (also its directory under the world's root).
    pub name: String,
    /// `--lightning-dir`.
    pub dir: PathBuf,
    /// Its P2P port on 127.0.0.1.
    pub port: u16,
    /// Its node id, once started.
    pub id: String,
    hsmd: Hsmd,
    tools: Tools,
    extra: Vec<String>,
    bins: crate::Binaries,
    signer_dir: PathBuf,
    signer_port: u16,
    proc: Option<Proc>,
    signer: Option<Proc>,
    signer_runs: u32,
}

impl Node {
    /// Sets up a node in `root/name` (nothing runs yet), with the workspace's debug binaries.
    pub fn new(tools: &Tools, root: &Path, name: &str, hsmd: Hsmd) -> Node {
        let bins = match hsmd {
            Hsmd::Remote => crate::binaries().clone(),
            Hsmd::Stock => crate::Binaries {
                proxy: PathBuf::new(),
                signer: PathBuf::new(),
                node: PathBuf::new(),
                plugin: PathBuf::new(),
            },
        };
        Node::with_binaries(tools, root, name, hsmd, bins)
    }

    /// Sets up a node in `root/name` whose proxy and signer are `bins`.
    pub fn with_binaries(
        tools: &Tools,
        root: &Path,
        name: &str,
        hsmd: Hsmd,
        bins: crate::Binaries,
    ) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("regtest")).unwrap();
        let signer_dir = root.join(format!("{name}-signer"));
        let mut n = Node {
            name: name.into(),
            dir,
            port: free_port(),
            id: String::new(),
            hsmd,
            tools: tools.clone(),
            extra: Vec::new(),
            bins,
            signer_dir,
            signer_port: free_port(),
            proc: None,
            signer: None,
            signer_runs: 0,
        };
        if hsmd == Hsmd::Remote {
            let bins = n.bins.clone();
            let out = Command::new(&bins.signer)
                .arg("--data-dir")
                .arg(&n.signer_dir)
                .arg("init")
                .output()
                .expect("signer init");
            assert!(out.status.success(), "signer init: {out:?}");
            let tls = n.tls_dir();
            let out = Command::new(&bins.proxy)
                .arg("certs")
                .arg("--dir")
                .arg(&tls)
                .output()
                .expect("vls-proxy certs");
            assert!(out.status.success(), "vls-proxy certs: {out:?}");
            n.extra
                .push(format!("--subdaemon=hsmd:{}", bins.proxy.display()));
            if bins.plugin.is_file() {
                n.extra.push(format!("--plugin={}", bins.plugin.display()));
            }
        }
        n
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("regtest").join("vls-tls")
    }

    /// Adds lightningd options for every start.
    pub fn with_args(mut self, args: &[&str]) -> Node {
        self.extra.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Starts the signer (remote nodes only); it dials the proxy until it is there.
    pub fn start_signer(&mut self) {
        if self.hsmd != Hsmd::Remote {
            return;
        }
        self.signer_runs += 1;
        let log = std::fs::File::create(
            self.dir
                .parent()
                .unwrap()
                .join(format!("{}-signer-{}.log", self.name, self.signer_runs)),
        )
        .unwrap();
        let child = Command::new(&self.bins.signer)
            .arg("--data-dir")
            .arg(&self.signer_dir)
            .arg("run")
            .arg("--connect")
            .arg(format!("https://localhost:{}", self.signer_port))
            .arg("--tls-dir")
            .arg(self.tls_dir())
            .env(
                "RUST_LOG",
                std::env::var("CLN_SIGNER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the signer");
        self.signer = Some(Proc(child));
    }

    /// Everything the node's signer logged, over all its runs.
    pub fn signer_log(&self) -> String {
        (1..=self.signer_runs)
            .map(|i| {
                let f = self
                    .dir
                    .parent()
                    .unwrap()
                    .join(format!("{}-signer-{i}.log", self.name));
                std::fs::read_to_string(f).unwrap_or_default()
            })
            .collect()
    }

    /// Kills the signer (SIGKILL).
    pub fn kill_signer(&mut self) {
        self.signer = None;
    }

    /// Starts lightningd (and the signer if it is not running) and waits for its RPC.
    pub fn start(&mut self, bitcoind: &Bitcoind) {
        if self.hsmd == Hsmd::Remote && self.signer.is_none() {
            self.start_signer();
        }
        let child = Command::new(&self.tools.lightningd)
            .arg("--network=regtest")
            .arg(format!("--lightning-dir={}", self.dir.display()))
            .arg(format!("--addr=127.0.0.1:{}", self.port))
            .args(bitcoind.lightningd_args())
            .args(["--developer", "--dev-bitcoind-poll=1"])
            .arg(format!("--log-file={}", self.log_path().display()))
            .args(&self.extra)
            .env("VLS_PORT", self.signer_port.to_string())
            .env("VLS_TLS_DIR", self.tls_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("stderr.log"))
                    .unwrap(),
            ))
            .spawn()
            .expect("starting lightningd");
        self.proc = Some(Proc(child));
        let info = wait_for(&format!("{}'s getinfo", self.name), 90, || {
            self.check_alive();
            self.try_rpc("getinfo", &[]).ok()
        });
        self.id = info["id"].as_str().unwrap().to_string();
    }

    /// lightningd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Panics with the end of the log if lightningd exited.
    pub fn check_alive(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            if let Ok(Some(status)) = p.0.try_wait() {
                panic!(
                    "{}'s lightningd exited ({status}); its log ends:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
        }
    }

    /// The last `n` lines of lightningd's log and stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        for f in [self.log_path(), self.dir.join("stderr.log")] {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("== {}\n", f.display()));
            s.push_str(&lines[lines.len().saturating_sub(n)..].join("\n"));
            s.push('\n');
        }
        s
    }

    /// Stops lightningd with `lightning-cli stop` and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.try_rpc("stop", &[]);
        if let Some(mut p) = self.proc.take() {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if let Ok(Some(_)) = p.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// `lightning-cli -k method key=value...`.
    pub fn try_rpc(&self, method: &str, args: &[&str]) -> Result<Value, Value> {
        let out = Command::new(&self.tools.lightning_cli)
            .arg(format!("--lightning-dir={}", self.dir.display()))
            .args(["--network=regtest", "-N", "none", "-k", method])
            .args(args.iter().map(OsStr::new))
            .output()
            .map_err(|e| Value::String(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(format!(
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )));
        if out.status.success() {
            Ok(v)
        } else {
            Err(v)
        }
    }

    /// `try_rpc`, which must succeed.
    ///
    /// # Panics
    /// With the error and the end of the log.
    pub fn rpc(&mut self, method: &str, args: &[&str]) -> Value {
        match self.try_rpc(method, args) {
            Ok(v) => v,
            Err(e) => {
                self.check_alive();
                panic!(
                    "{} {method} {args:?} failed: {e}\n{}",
                    self.name,
                    self.log_tail(30)
                )
            }
        }
    }

    /// A new p2wpkh address of the node's wallet.
    pub fn new_address(&mut self) -> String {
        self.rpc("newaddr", &["addresstype=bech32"])["bech32"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The node's confirmed on-chain balance, satoshis.
    pub fn confirmed_sat(&mut self) -> u64 {
        self.rpc("listfunds", &[])["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["status"] == "confirmed" && o["reserved"] == false)
            .map(|o| o["amount_msat"].as_u64().unwrap() / 1000)
            .sum()
    }

    /// The state of every channel with `peer`, by short channel id or channel id.
    pub fn channel_states(&mut self, peer: &str) -> Vec<(String, String)> {
        self.rpc("listpeerchannels", &[&format!("id={peer}")])["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let state = c["state"].as_str().unwrap_or_default();
                // A channel is usable once its peer is connected and reestablished.
                let state = if state == "CHANNELD_NORMAL"
                    && (c["peer_connected"] != true || c["reestablished"] == false)
                {
                    "CHANNELD_NORMAL (not reestablished)"
                } else {
                    state
                };
                (
                    c["channel_id"].as_str().unwrap_or_default().to_string(),
                    state.to_string(),
                )
            })
            .collect()
    }

    /// Whether lightningd's log has a line containing `needle`.
    pub fn log_has(&self, needle: &str) -> bool {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .contains(needle)
    }
}
