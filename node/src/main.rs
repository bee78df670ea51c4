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
    /// The node's data directory (its proxy's network directory too).
    #[arg(long, global = true, env = "NODE_DATA_DIR", default_value = ".node")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the node: starts its vls-proxy as lightningd would, waits for its signer, and
    /// serves peers and the control socket until `node stop`.
    Run {
        /// The port the node's signer dials.
        #[arg(long, env = "VLS_PORT", default_value_t = 7701)]
        signer_port: u16,
        /// Where peers connect (BOLT 8), e.g. 127.0.0.1:9735.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The vls-proxy binary [default: next to this one, else from PATH].
        #[arg(long, value_name = "PATH")]
        proxy: Option<PathBuf>,
        /// The Core Lightning version the proxy must print for --version.
        #[arg(long, env = "VLS_CLN_VERSION", default_value = "v26.06.6")]
        cln_version: String,
        /// bitcoin, testnet, signet or regtest.
        #[arg(long, default_value = "regtest")]
        network: bitcoin::Network,
    },
    /// The running node's id, network and channels.
    Getinfo,
    /// A BOLT 11 invoice signed by the signer.
    Invoice {
        /// Amount in millisatoshis.
        #[arg(long)]
        amount_msat: Option<u64>,
        /// Description.
        #[arg(long)]
        description: String,
    },
    /// Asks the signer to preapprove paying an invoice; a refusal says which rule.
    Pay {
        /// The invoice.
        invoice: String,
    },
    /// Asks the signer to preapprove a keysend.
    Keysend {
        /// The destination's node id.
        node: String,
        /// Amount in millisatoshis.
        amount_msat: u64,
    },
    /// Records a wallet output of this amount at a new wallet address. There is no chain
    /// backend: on regtest this stands for a deposit.
    Fund {
        /// Amount in satoshis.
        amount_sat: u64,
    },
    /// Connects to a peer over BOLT 8.
    Connect {
        /// `node_id@host:port`.
        peer: String,
    },
    /// Opens a channel with a connected peer.
    Open {
        /// The peer's node id.
        peer: String,
        /// Channel value in satoshis.
        amount_sat: u64,
        /// `anchors` or `static_remotekey`.
        #[arg(long, default_value = "anchors")]
        channel_type: String,
    },
    /// The encrypted static channel backup.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Round-trip latency of every signer call, by message type.
    Stats,
    /// Stops the running node.
    Stop,
    /// The end-to-end demo: two nodes, two proxies, two signers.
    Demo {
        /// Keep the demo's files and logs.
        #[arg(long)]
        keep: bool,
    },
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
    /// Measures the signing path: latency, throughput, idle clients, recovery (JSON lines).
    Bench(BenchArgs),
}

/// `node backup ...`.
#[derive(Subcommand)]
enum BackupCommand {
    /// Writes `channel.backup` again from the node's channels.
    Export,
    /// Decrypts `channel.backup` with the signer's key and checks it.
    Verify,
    /// Restores the channels of a backup file (never overwriting).
    Restore {
        /// The backup file.
        path: PathBuf,
    },
}

/// Sends one request to the running node in `data_dir` and prints its result.
fn control(
    rt: &tokio::runtime::Runtime,
    data_dir: &std::path::Path,
    req: node::control::Request,
) -> ExitCode {
    let path = data_dir.join(node::control::CONTROL_SOCKET);
    match rt.block_on(node::control::request(&path, &req)) {
        Ok(r) if r.ok => {
            match r.result {
                serde_json::Value::String(s) => println!("{s}"),
                v => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("node: {}", r.error.unwrap_or_else(|| "failed".into()));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
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
    let data_dir = absolute(cli.data_dir.clone());
    use node::control::Request as R;
    match cli.command {
        Command::Run {
            signer_port,
            listen,
            proxy,
            cln_version,
            network,
        } => {
            let config = node::daemon::NodeConfig {
                data_dir,
                network,
                proxy: proxy
                    .map(absolute)
                    .unwrap_or_else(|| sibling_binary("vls-proxy")),
                cln_version,
                signer_port,
                listen,
            };
            match rt.block_on(node::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("node run: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Getinfo => control(&rt, &data_dir, R::Getinfo),
        Command::Invoice {
            amount_msat,
            description,
        } => control(
            &rt,
            &data_dir,
            R::Invoice {
                amount_msat,
                description,
            },
        ),
        Command::Pay { invoice } => control(&rt, &data_dir, R::Pay { invoice }),
        Command::Keysend { node, amount_msat } => {
            control(&rt, &data_dir, R::Keysend { node, amount_msat })
        }
        Command::Fund { amount_sat } => control(&rt, &data_dir, R::Fund { amount_sat }),
        Command::Connect { peer } => control(&rt, &data_dir, R::Connect { peer }),
        Command::Open {
            peer,
            amount_sat,
            channel_type,
        } => control(
            &rt,
            &data_dir,
            R::Open {
                peer,
                amount_sat,
                channel_type,
            },
        ),
        Command::Backup(BackupCommand::Export) => control(&rt, &data_dir, R::BackupExport),
        Command::Backup(BackupCommand::Verify) => control(&rt, &data_dir, R::BackupVerify),
        Command::Backup(BackupCommand::Restore { path }) => control(
            &rt,
            &data_dir,
            R::BackupRestore {
                path: absolute(path).to_string_lossy().into_owned(),
            },
        ),
        Command::Stats => control(&rt, &data_dir, R::Stats),
        Command::Stop => control(&rt, &data_dir, R::Stop),
        Command::Demo { keep } => match rt.block_on(node::demo::run(keep)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node demo: {e}");
                ExitCode::FAILURE
            }
        },
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
                proxy_args: Vec::new(),
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
        Command::Bench(args) => bench(&rt, args),
    }
}

/// `node bench`.
#[derive(clap::Args)]
struct BenchArgs {
    /// Fewer iterations (under a minute).
    #[arg(long)]
    quick: bool,
    /// The corpus whose `channel_static_remotekey_we_open` case is signed for.
    #[arg(long, value_name = "FILE", default_value = node::bench::DEFAULT_CORPUS)]
    corpus: PathBuf,
    /// The vls-proxy binary [default: next to this one, else from PATH].
    #[arg(long, value_name = "PATH")]
    proxy: Option<PathBuf>,
    /// The signer binary [default: next to this one, else from PATH].
    #[arg(long, value_name = "PATH")]
    signer: Option<PathBuf>,
    /// The Core Lightning version the proxy must print for --version.
    #[arg(long, env = "VLS_CLN_VERSION", default_value = "v26.06.6")]
    cln_version: String,
    /// Only the operations whose name contains this (no idle clients, no restarts).
    #[arg(long, value_name = "OP")]
    only: Option<String>,
}

/// Runs `node bench`: one JSON line per figure on stdout.
fn bench(rt: &tokio::runtime::Runtime, args: BenchArgs) -> ExitCode {
    let cfg = node::bench::BenchConfig {
        proxy: args
            .proxy
            .map(absolute)
            .unwrap_or_else(|| sibling_binary("vls-proxy")),
        signer: args
            .signer
            .map(absolute)
            .unwrap_or_else(|| sibling_binary("signer")),
        cln_version: args.cln_version,
        corpus: absolute(args.corpus),
        quick: args.quick,
        only: args.only,
    };
    let result = rt.block_on(async {
        let mut out = std::io::stdout();
        tokio::select! {
            r = node::bench::run(&cfg, &mut out) => Some(r),
            // Dropping the benchmark kills its processes.
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match result {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("node bench: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("node bench: interrupted");
            ExitCode::from(130)
        }
    }
}
