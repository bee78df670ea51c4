//! `node`: the reference node's command line.
//!
//! - `node replay --corpus FILE [--policy FILE] [--proxy PATH] [--signer PATH]` replays a
//!   conformance corpus against `vls-proxy` (started as lightningd starts hsmd) and a
//!   `signer` daemon, one fresh pair per case; prints one line per mismatch and
//!   `N passed, M failed`, and exits non-zero if any case failed.

use clap::{Parser, Subcommand};
use node::replay::{self, env::sibling_binary, ReplayConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "node",
    about = "A Lightning node whose keys live in a remote signer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays a conformance corpus against vls-proxy and the signer.
    Replay {
        /// The corpus (e.g. tests/data/conformance/cln-hsmd-golden.json).
        #[arg(long, value_name = "FILE")]
        corpus: PathBuf,
        /// The signer's policy: steps marked `expected: refused` must then be refused.
        /// Without it the signer runs with --warn-only and every step must match Core
        /// Lightning.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The vls-proxy binary [default: next to this one, else from PATH].
        #[arg(long, value_name = "PATH")]
        proxy: Option<PathBuf>,
        /// The signer binary [default: next to this one, else from PATH].
        #[arg(long, value_name = "PATH")]
        signer: Option<PathBuf>,
        /// The Core Lightning version the proxy must print for --version.
        #[arg(long, env = "VLS_CLN_VERSION", default_value = "v26.06.6")]
        cln_version: String,
        /// Seconds a step may take before it counts as unanswered.
        #[arg(long, value_name = "SECS", default_value_t = replay::DEFAULT_STEP_TIMEOUT.as_secs_f64())]
        step_timeout: f64,
        /// Keep each case's proxy and signer logs in this directory.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Only the cases whose name contains this.
        #[arg(long, value_name = "NAME")]
        case: Option<String>,
        /// A progress line per case on stderr.
        #[arg(short, long)]
        verbose: bool,
    },
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("node: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Replay {
            corpus,
            policy,
            proxy,
            signer,
            cln_version,
            step_timeout,
            log_dir,
            case,
            verbose,
        } => {
            if !(step_timeout.is_finite() && step_timeout > 0.0) {
                eprintln!("node replay: --step-timeout must be a positive number of seconds");
                return ExitCode::from(2);
            }
            let cfg = ReplayConfig {
                corpus,
                policy: policy.map(absolute),
                proxy: proxy
                    .map(absolute)
                    .unwrap_or_else(|| sibling_binary("vls-proxy")),
                signer: signer
                    .map(absolute)
                    .unwrap_or_else(|| sibling_binary("signer")),
                cln_version,
                step_timeout: Duration::from_secs_f64(step_timeout),
                log_dir: log_dir.map(absolute),
                only: case,
                verbose,
            };
            let result = rt.block_on(async {
                let mut out = std::io::stdout();
                tokio::select! {
                    r = replay::run(&cfg, &mut out) => Some(r),
                    // Dropping the replay kills the processes of the running case.
                    _ = tokio::signal::ctrl_c() => None,
                }
            });
            match result {
                Some(Ok(s)) if s.failed == 0 => ExitCode::SUCCESS,
                Some(Ok(_)) => ExitCode::FAILURE,
                Some(Err(e)) => {
                    eprintln!("node replay: {e}");
                    ExitCode::from(2)
                }
                None => {
                    eprintln!("node replay: interrupted");
                    ExitCode::from(130)
                }
            }
        }
    }
}
