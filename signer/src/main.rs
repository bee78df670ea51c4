//! `signer`: the remote signer's command-line tool and daemon.
//!
//! - `signer init [--import HSM_SECRET | --mnemonic] [--passphrase-file F]` creates
//!   `<data-dir>/hsm_secret` (mode 0600, never overwriting one) and prints the node id;
//! - `signer node-id` prints the node id of `<data-dir>/hsm_secret`;
//! - `signer run --connect URL` dials the proxy and answers its requests until SIGINT or
//!   SIGTERM (see [`signer::daemon`]);
//! - `signer policy show` prints the effective policy;
//! - `signer approvals list | approve <payment_hash> | deny <payment_hash>` decides payments
//!   above the auto-approve limit, through the running daemon's admin socket.
//!
//! Settings come from flags, environment variables and a `--config` TOML file (see
//! [`signer::config`]). Logs go to stderr (`RUST_LOG`, default `info`). Secrets are never
//! printed or logged, except the words of a mnemonic made by `init --mnemonic`, shown once on
//! stdout because they are the backup.

use signer::admin::{AdminRequest, ADMIN_SOCKET};
use signer::config::{ApprovalsCommand, Cli, Command, InitArgs, PolicyCommand, Settings};
use signer::daemon::{self, HSM_SECRET_FILE};
use signer::secret::{HsmSecret, HsmSecretKind};
use std::error::Error;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = <Cli as clap::Parser>::parse();
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: &Cli) -> Result<()> {
    let settings = Settings::resolve(cli)?;
    match &cli.command {
        Command::Init(args) => init(&settings, args),
        Command::NodeId(_) => {
            let passphrase = read_passphrase(&settings)?;
            let secret = HsmSecret::load(
                &settings.data_dir.join(HSM_SECRET_FILE),
                passphrase.as_deref().map(Vec::as_slice),
            )?;
            println!("{}", daemon::node_id(&secret)?);
            Ok(())
        }
        Command::Policy(PolicyCommand::Show(args)) => {
            let policy = settings.policy.load()?.for_network(args.network);
            print!("{}", policy.to_toml());
            Ok(())
        }
        Command::Run(_) => run(&settings),
        Command::Approvals(cmd) => approvals(&settings, cmd),
    }
}

/// `signer approvals ...`: asks the running daemon over its admin socket.
fn approvals(settings: &Settings, cmd: &ApprovalsCommand) -> Result<()> {
    let req = match cmd {
        ApprovalsCommand::List => AdminRequest::List,
        ApprovalsCommand::Approve {
            payment_hash,
            amount_msat,
        } => AdminRequest::Approve {
            payment_hash: payment_hash.clone(),
            amount_msat: *amount_msat,
        },
        ApprovalsCommand::Deny { payment_hash } => AdminRequest::Deny {
            payment_hash: payment_hash.clone(),
        },
        ApprovalsCommand::Watch => {
            let path = settings.data_dir.join(ADMIN_SOCKET);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(signer::admin::watch(&path, |a| {
                println!("{}", serde_json::to_string(a).unwrap_or_default());
                use std::io::Write;
                std::io::stdout().flush().is_ok()
            }))?;
            return Ok(());
        }
    };
    let path = settings.data_dir.join(ADMIN_SOCKET);
    let reply = tokio::runtime::Runtime::new()?.block_on(signer::admin::request(&path, &req))?;
    if !reply.ok {
        return Err(reply.error.unwrap_or_else(|| "refused".into()).into());
    }
    let now = signer::approvals::now();
    for a in &reply.approvals {
        println!(
            "{} {:<8} {:>16} msat  {:<8} {:>8} ago  to {}  {}",
            a.payment_hash,
            a.kind,
            a.amount_msat.map_or("any".into(), |m| m.to_string()),
            format!("{:?}", a.decision).to_lowercase(),
            age(now.saturating_sub(a.requested_at)),
            a.destination.as_deref().unwrap_or("?"),
            a.description.as_deref().unwrap_or(&a.detail),
        );
    }
    if reply.approvals.is_empty() {
        println!("no payments wait for a decision");
    }
    Ok(())
}

/// `secs` as the largest whole unit: `42s`, `5m`, `3h`, `2d`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `signer init`: writes the secret first, and only then shows anything, so that a mnemonic
/// is never shown for a secret that was not stored.
fn init(settings: &Settings, args: &InitArgs) -> Result<()> {
    let dir = &settings.data_dir;
    let path = dir.join(HSM_SECRET_FILE);
    if path.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists already; refusing to overwrite an hsm_secret",
            path.display()
        )
        .into());
    }
    let passphrase = read_passphrase(settings)?;
    let create_dir = || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))
    };
    let secret = if let Some(source) = &args.import {
        let bytes = Zeroizing::new(
            std::fs::read(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?,
        );
        let secret =
            match HsmSecret::from_file_bytes(&bytes, passphrase.as_deref().map(Vec::as_slice)) {
                Ok(secret) => secret,
                // lightningd gives the passphrase with every `hsmd_init`: a secret that needs one
                // is kept as it is and checked then, answered as Core Lightning's hsmd answers a
                // wrong or missing passphrase.
                Err(signer::secret::SecretError::PassphraseRequired) => {
                    create_dir()?;
                    write_new_secret_file(&path, &bytes)?;
                    eprintln!(
                    "imported {} into {} (protected by a passphrase, which lightningd gives with \
                     hsmd_init; `signer node-id --passphrase-file F` shows the node id)",
                    source.display(),
                    path.display()
                );
                    return Ok(());
                }
                Err(e) => {
                    return Err(
                        format!("{} is not a usable hsm_secret: {e}", source.display()).into(),
                    )
                }
            };
        create_dir()?;
        write_new_secret_file(&path, &bytes)?;
        eprintln!(
            "imported {} into {} ({})",
            source.display(),
            path.display(),
            kind_name(secret.kind())
        );
        secret
    } else if args.mnemonic {
        let secret = HsmSecret::generate_mnemonic(passphrase.as_deref().map(Vec::as_slice));
        create_dir()?;
        secret.write_new(&path)?;
        eprintln!("created {} ({})", path.display(), kind_name(secret.kind()));
        let words = secret
            .mnemonic()
            .expect("a generated mnemonic secret has its words");
        println!("BACKUP MNEMONIC: write these 12 words down, keep them offline; they are not shown again:");
        println!("{words}");
        if passphrase.is_some() {
            println!("The passphrase is not stored: keep it too; lightningd must give it at every start.");
        }
        secret
    } else {
        if passphrase.is_some() {
            return Err(
                "a passphrase protects only a mnemonic: add --mnemonic (or --import)".into(),
            );
        }
        let secret = HsmSecret::generate_plain();
        create_dir()?;
        secret.write_new(&path)?;
        eprintln!("created {} (plain 32-byte secret)", path.display());
        secret
    };
    println!("{}", daemon::node_id(&secret)?);
    Ok(())
}

fn kind_name(kind: HsmSecretKind) -> &'static str {
    match kind {
        HsmSecretKind::Plain => "plain 32-byte secret",
        HsmSecretKind::Encrypted => "legacy encrypted secret",
        HsmSecretKind::Mnemonic => "BIP39 mnemonic",
        HsmSecretKind::MnemonicWithPassphrase => "BIP39 mnemonic with passphrase",
    }
}

/// Creates `path` (mode 0600, never over an existing file) holding exactly `bytes`, synced.
fn write_new_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The passphrase from the passphrase file, without one trailing newline.
fn read_passphrase(settings: &Settings) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(path) = &settings.passphrase_file else {
        return Ok(None);
    };
    let mut bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| format!("cannot read passphrase file {}: {e}", path.display()))?,
    );
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("passphrase file {} is empty", path.display()).into());
    }
    Ok(Some(bytes))
}

/// `signer run`: the daemon, until the first SIGINT or SIGTERM; a second one exits at once.
fn run(settings: &Settings) -> Result<()> {
    let config = settings.daemon_config()?;
    // One thread for the link and the bookkeeping; handlers run on the daemon's own threads
    // (see `signer::daemon`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let shutdown = async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            log::info!(
                "{name}: shutting down once the requests in flight are answered (again to abort)"
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                // Every commit is atomic, so stopping mid-request loses no state.
                log::warn!("second signal: exiting without waiting");
                std::process::exit(1);
            });
        };
        daemon::run(config, shutdown).await?;
        Ok(())
    })
}
