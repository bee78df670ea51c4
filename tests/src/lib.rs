//! Helpers shared by the whole-system tests: the built binaries (`vls-proxy`, `signer`,
//! `node`) and the test data.
//!
//! `env!("CARGO_BIN_EXE_...")` only exists for binaries of the test's own package, so
//! [`binaries`] builds the three binaries once per test executable with the same cargo
//! (`cargo build -p vls-proxy -p signer -p node --bins`) and finds them in the target
//! directory. It then hard-links them into a private directory, so that a rebuild running
//! meanwhile (another test run, another developer) cannot swap or remove them under a test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod adversary;
pub mod chan;
pub mod cln;

/// The paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `vls-proxy`.
    pub proxy: PathBuf,
    /// `signer`.
    pub signer: PathBuf,
    /// `node`.
    pub node: PathBuf,
    /// `vls-plugin`, the Core Lightning plugin.
    pub plugin: PathBuf,
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// A file of the test data, e.g. `conformance/cln-hsmd-golden.json`.
pub fn data_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(rel)
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Builds the binaries (once per test executable) and returns their private copies.
///
/// # Panics
/// If the build fails: every whole-system test needs them.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "-p",
                "vls-proxy",
                "-p",
                "signer",
                "-p",
                "node",
                "--bins",
            ])
            .status()
            .expect("cannot run cargo build");
        assert!(
            status.success(),
            "cargo build of the binaries failed: {status}"
        );
        let built = target_dir().join("debug");
        let private = private_dir();
        let take = |name: &str| {
            let from = built.join(name);
            assert!(from.exists(), "{} was not built", from.display());
            let to = private.join(name);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {name}: {e}"));
            }
            to
        };
        Binaries {
            proxy: take("vls-proxy"),
            signer: take("signer"),
            node: take("node"),
            plugin: take("vls-plugin"),
        }
    })
}

/// A directory for this process's copies of the binaries, under the target directory;
/// those of test processes that are gone are removed first.
fn private_dir() -> PathBuf {
    let base = target_dir().join("test-bins");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!("{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A replay configuration for `corpus` with the built binaries (warn-only signer, default
/// timeouts), for tests that use the `node` library's case environment directly.
pub fn replay_config(corpus: PathBuf) -> node::replay::ReplayConfig {
    let b = binaries();
    node::replay::ReplayConfig {
        corpus,
        proxy_args: Vec::new(),
        policy: None,
        proxy: b.proxy.clone(),
        signer: b.signer.clone(),
        cln_version: "v26.06.6".into(),
        step_timeout: node::replay::DEFAULT_STEP_TIMEOUT,
        log_dir: None,
        only: None,
        verbose: false,
    }
}

/// A [`node::bench::RigConfig`] for `secret` with the built binaries: mutual TLS, a
/// warn-only signer started at once, no metrics (change what a test needs).
pub fn rig_config(secret: &[u8]) -> node::bench::RigConfig {
    let b = binaries();
    node::bench::RigConfig::new(&b.proxy, &b.signer, secret)
}

/// A TCP relay on loopback that a test controls, to put between the signer and the proxy.
///
/// It forwards bytes both ways until [`Relay::cut`]; then it forwards nothing in either
/// direction and closes nothing, as a pulled cable or a dropped NAT entry: each end only
/// learns of it from its own keepalive. [`Relay::heal`] resumes forwarding on every
/// connection still open. A connection accepted during a cut reaches the upstream only once
/// healed. Dropping the relay closes every connection.
pub struct Relay {
    /// The port to dial instead of the upstream's.
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay on a free loopback port to `127.0.0.1:upstream`.
    ///
    /// # Panics
    /// If it cannot listen.
    pub async fn start(upstream: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("relay listens");
        let port = listener.local_addr().expect("relay address").port();
        let cut = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let c = cut.clone();
        let task = tokio::spawn(async move {
            // Dropped (and every connection with it) when the relay is.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        if let Ok((down, _)) = a {
                            conns.spawn(relay_connection(down, upstream, c.subscribe()));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Relay { port, cut, task }
    }

    /// Stops forwarding, without closing anything.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    down: tokio::net::TcpStream,
    upstream: u16,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    if !relay_until(&mut cut, false).await {
        return;
    }
    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    tokio::join!(relay_pipe(dr, uw, cut.clone()), relay_pipe(ur, dw, cut));
}

/// Copies `from` to `to` while not cut; at EOF or an error, closes `to`'s write side.
async fn relay_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !relay_until(&mut cut, false).await {
            return;
        }
        tokio::select! {
            // A cut is seen before anything more is read (what was read is on its way, as
            // on a wire).
            biased;
            _ = relay_until(&mut cut, true) => {}
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// Waits until the relay is cut (`true`) or not (`false`); false if the relay is gone.
async fn relay_until(cut: &mut tokio::sync::watch::Receiver<bool>, cut_state: bool) -> bool {
    let ok = cut.wait_for(|c| *c == cut_state).await.is_ok();
    ok
}

/// Polls `metric` of the rig's proxy until `pred` holds, for at most `within`; the last
/// value, and whether `pred` held.
pub async fn wait_metric(
    rig: &node::bench::Rig,
    metric: &str,
    within: std::time::Duration,
    pred: impl Fn(f64) -> bool,
) -> (f64, bool) {
    let start = std::time::Instant::now();
    loop {
        let v = rig.metric(metric).await.unwrap_or(f64::NAN);
        if pred(v) {
            return (v, true);
        }
        if start.elapsed() > within {
            return (v, false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The reference for a run: an in-process signer for `secret` under `policy`, its state in
/// memory, initialized with the node's `init` request; and its reply to that init (which the
/// node must get through the processes too).
///
/// # Panics
/// If the init is refused.
pub fn reference_signer(
    secret: &[u8],
    policy: signer::Policy,
    init: &[u8],
) -> (signer::Signer, Vec<u8>) {
    let store = signer::Store::temporary().expect("in-memory store");
    let s = signer::Signer::new(secret.to_vec(), store, policy);
    let reply = s
        .handle(&signer::ClientContext::master(), None, init)
        .expect("the reference signer takes the init");
    (s, reply)
}

/// The Python packages of the pyln venv, pinned: pyln-proto's BOLT 8, message and BOLT 11
/// modules; bitstring 4.4 because pyln-proto's BOLT 11 decoder fails with bitstring 5.
pub const PYLN_PIP_PACKAGES: &[&str] = &["pyln-proto==26.6.9", "bitstring==4.4.0"];

fn run_setup(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn pyln_venv_works(dir: &Path) -> bool {
    Command::new(dir.join("bin/python"))
        .args([
            "-c",
            "import pyln.proto.wire, pyln.proto.message, pyln.proto.invoice",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates `dir` as a venv with [`PYLN_PIP_PACKAGES`], atomically: it is built beside and
/// renamed into place, so concurrent test processes never see a half-made one.
fn create_pyln_venv(dir: &Path) -> Result<(), String> {
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    run_setup(
        Command::new(&python).arg("-m").arg("venv").arg(&tmp),
        "python3 -m venv",
    )
    .map_err(|e| {
        let hint = if e.contains("ensurepip") || e.contains("No module named venv") {
            "\n=> python3's venv/ensurepip is missing: install it (Debian/Ubuntu: \
             `apt-get install python3-venv`)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    run_setup(
        Command::new(tmp.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYLN_PIP_PACKAGES),
        "pip install (needs access to PyPI)",
    )?;
    if std::fs::rename(&tmp, dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if !pyln_venv_works(dir) {
        return Err(format!("{} does not import pyln.proto", dir.display()));
    }
    Ok(())
}

/// The python of a venv with pyln-proto: `PYLN_VENV` (used as it is) or
/// `<target>/pyln-venv`, created (once per test executable) if missing or broken.
///
/// Needs `python3` with the `venv` module and `ensurepip` (Debian/Ubuntu:
/// `apt-get install python3-venv`), and access to PyPI for `pip install`, the first time.
///
/// A venv's scripts (`bin/pip`, ...) hard-code the path it was made at, so after the rename
/// only `bin/python` is used (with `-m`), which finds its venv from its own location.
///
/// # Panics
/// If the venv cannot be set up.
pub fn pyln_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(d) = std::env::var_os("PYLN_VENV") {
            let dir = PathBuf::from(d);
            assert!(
                pyln_venv_works(&dir),
                "PYLN_VENV={} cannot import pyln.proto (pip install {})",
                dir.display(),
                PYLN_PIP_PACKAGES.join(" ")
            );
            return dir.join("bin/python");
        }
        let dir = target_dir().join("pyln-venv");
        if !pyln_venv_works(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(e) = create_pyln_venv(&dir) {
                panic!(
                    "cannot set up the pyln-proto venv at {}: {e}",
                    dir.display()
                );
            }
        }
        dir.join("bin/python")
    })
}
