//! `node replay`: replays a conformance corpus (`tests/data/conformance/`) against the real
//! proxy and signer processes, started the way a node starts them, and reports every step
//! whose outcome differs from the corpus.
//!
//! Each case gets its own temporary directory, signer data directory, certificates, port and
//! processes ([`env::CaseEnv`]); nothing is shared between cases. Steps are replayed in order
//! on their fds and judged as the corpus README says ([`step`]). Without a policy the signer
//! runs with every rule in warn mode and every step must match Core Lightning; with a policy
//! the steps marked `expected: refused` must be refused, naming their rule.

pub mod corpus;
pub mod env;
pub mod step;

use corpus::Corpus;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The default for `--step-timeout`: the corpus's `no_reply` threshold.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to replay, with which binaries.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The corpus file.
    pub corpus: PathBuf,
    /// The signer's policy file; `None` runs the signer with `--warn-only`.
    pub policy: Option<PathBuf>,
    /// The `vls-proxy` binary.
    pub proxy: PathBuf,
    /// The arguments it is started with (lightningd's subdaemon flags).
    pub proxy_args: Vec<String>,
    /// The `signer` binary.
    pub signer: PathBuf,
    /// The Core Lightning version the proxy must report for `--version`.
    pub cln_version: String,
    /// How long one step may take before it counts as no reply.
    pub step_timeout: Duration,
    /// Where to keep each case's proxy and signer logs (discarded when `None`).
    pub log_dir: Option<PathBuf>,
    /// Only the cases whose name contains this.
    pub only: Option<String>,
    /// Print a progress line per case on stderr.
    pub verbose: bool,
}

/// The result of a replay: cases that passed and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases whose every step matched.
    pub passed: usize,
    /// Cases with at least one mismatch (or that could not be set up).
    pub failed: usize,
}

/// Replays every case of the corpus, writing one line per mismatch to `out` as it goes and
/// `N passed, M failed` at the end.
///
/// # Errors
/// Only for a corpus that cannot be read or parsed, or an output that cannot be written;
/// everything else is a failed case.
pub async fn run(cfg: &ReplayConfig, out: &mut impl Write) -> Result<Summary, String> {
    let corpus = Corpus::load(&cfg.corpus)?;
    if let Some(d) = &cfg.log_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let w = |out: &mut dyn Write, l: &str| writeln!(out, "{l}").and_then(|_| out.flush());
    let mut summary = Summary::default();
    for case in &corpus.cases {
        if cfg.only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        let started = Instant::now();
        let fails = run_case(cfg, case).await;
        if cfg.verbose {
            let verdict = if fails.is_empty() { "ok" } else { "FAILED" };
            eprintln!(
                "{verdict} {} ({} ms)",
                case.name,
                started.elapsed().as_millis()
            );
        }
        for l in &fails {
            w(out, l).map_err(|e| e.to_string())?;
        }
        if fails.is_empty() {
            summary.passed += 1;
        } else {
            summary.failed += 1;
        }
    }
    w(
        out,
        &format!("{} passed, {} failed", summary.passed, summary.failed),
    )
    .map_err(|e| e.to_string())?;
    Ok(summary)
}

/// One case from nothing to teardown; its mismatch lines.
async fn run_case(cfg: &ReplayConfig, case: &corpus::Case) -> Vec<String> {
    let secret = match case.secret_file() {
        Ok(s) => s,
        Err(e) => return vec![format!("{}: {e}", case.name)],
    };
    let env = match env::CaseEnv::start(cfg, &case.name, &secret, case.passphrase.as_deref()).await
    {
        Ok(e) => e,
        Err(e) => return vec![format!("{}: setup failed: {e}", case.name)],
    };
    let fails = step::replay_case(cfg, case, &env).await;
    env.teardown().await;
    fails
}
