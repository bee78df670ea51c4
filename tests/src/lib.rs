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

/// The paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `vls-proxy`.
    pub proxy: PathBuf,
    /// `signer`.
    pub signer: PathBuf,
    /// `node`.
    pub node: PathBuf,
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
