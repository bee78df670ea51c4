//! The `signer` command line and its configuration file.
//!
//! Every setting comes, in order of precedence, from a command-line flag, its environment
//! variable (`SIGNER_DATA_DIR`, `SIGNER_CONNECT`, ...), the TOML file named by `--config`
//! (`SIGNER_CONFIG`), or a default. The file may hold any of:
//!
//! ```toml
//! data_dir = "/var/lib/signer"          # default ~/.signer
//! connect = "https://proxy.example:7701"
//! tls_dir = "/etc/signer/tls"           # default <data_dir>/tls
//! plaintext = false
//! policy = "/etc/signer/policy.toml"    # default: every rule enforced
//! warn_only = false                     # every rule in warn mode (Core Lightning's behaviour)
//! passphrase_file = "/run/secrets/hsm-passphrase"
//! on_approval_request = "notify-send 'payment waits'"   # run for each payment queued
//! ```
//!
//! Relative paths in the file are relative to the file's directory. Unknown keys are refused,
//! so a typo cannot silently fall back to a default.

use crate::daemon::{DaemonConfig, LinkSecurity, TLS_DIR};
use crate::policy::{Policy, PolicyError};
use clap::{Args, Parser, Subcommand};
use proto::tls::TlsPaths;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The `signer` command line.
#[derive(Debug, Parser)]
#[command(
    name = "signer",
    version,
    about = "The remote signer of a Lightning node"
)]
pub struct Cli {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SIGNER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of hsm_secret, state.redb and tls/ [default: ~/.signer].
    #[arg(long, env = "SIGNER_DATA_DIR", global = true, value_name = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates DATA_DIR/hsm_secret (never overwrites one) and prints the node id.
    Init(InitArgs),
    /// Prints the node id of DATA_DIR/hsm_secret.
    NodeId(PassphraseArgs),
    /// Dials the proxy and answers its requests until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Inspects the policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Decides payments that wait for the operator (talks to the running daemon).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
}

/// `signer approvals ...`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Lists payments waiting for a decision, and past decisions.
    List,
    /// Approves a waiting payment.
    Approve {
        /// Its payment hash (hex).
        payment_hash: String,
        /// The most its HTLCs may carry, routing fees aside: required for an invoice without
        /// an amount (lightningd does not tell the signer what it will pay), and if given for
        /// one with an amount, it must be that amount.
        #[arg(long, value_name = "MSAT")]
        amount_msat: Option<u64>,
    },
    /// Denies a waiting payment.
    Deny {
        /// Its payment hash (hex).
        payment_hash: String,
    },
    /// Prints each payment as it is queued for a decision, one JSON line each, until
    /// interrupted (pipe it to a notifier).
    Watch,
}

/// `signer init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Copy an existing Core Lightning hsm_secret (plain, mnemonic, or legacy encrypted with
    /// --passphrase-file) instead of generating one: the node keeps its id and funds.
    #[arg(long, value_name = "HSM_SECRET", conflicts_with = "mnemonic")]
    pub import: Option<PathBuf>,
    /// Generate a 12-word BIP39 mnemonic (shown once, for the backup) instead of 32 random
    /// bytes.
    #[arg(long)]
    pub mnemonic: bool,
    /// The passphrase.
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

/// The passphrase of an `hsm_secret`, for the commands that open one offline.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// File holding the hsm_secret passphrase (one trailing newline is ignored).
    #[arg(long, env = "SIGNER_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `signer run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The proxy's gRPC address, e.g. `https://proxy.example:7701`.
    #[arg(long, env = "SIGNER_CONNECT", value_name = "URL")]
    pub connect: Option<String>,
    /// Directory of ca.pem, signer.pem and signer-key.pem [default: DATA_DIR/tls].
    #[arg(long, env = "SIGNER_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Talk to the proxy without TLS (tests, or peers that cannot do TLS).
    #[arg(long)]
    pub plaintext: bool,
    /// Shell command run for every payment queued for the operator's decision, with the
    /// request as JSON on its standard input.
    #[arg(long, env = "SIGNER_ON_APPROVAL_REQUEST", value_name = "CMD")]
    pub on_approval_request: Option<String>,
    /// Which proxy the replies are written for: `auto` recognises ours by the header it
    /// answers the stream with, and takes any other for the Validating Lightning Signer's
    /// (whose decoder refuses the TLVs Core Lightning v25+ append to the init reply).
    #[arg(long, env = "SIGNER_PROXY_COMPAT", value_enum, default_value = "auto")]
    pub proxy_compat: crate::daemon::ProxyCompat,
    /// The policy.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Where the policy comes from.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Policy file (TOML: `default` and `[rules]`) [default: every rule enforced].
    #[arg(long, env = "SIGNER_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Every rule in warn mode: violations are logged and signed anyway, as Core Lightning's
    /// hsmd does.
    #[arg(long, conflicts_with = "policy")]
    pub warn_only: bool,
}

/// `signer policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Prints the effective policy as TOML.
    Show(ShowArgs),
}

/// `signer policy show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Where the policy comes from.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The network whose limits to show (`bitcoin`, `testnet`, `testnet4`, `signet`,
    /// `regtest`); the signer learns it from lightningd's `hsmd_init`.
    #[arg(long, default_value = "bitcoin")]
    pub network: bitcoin::Network,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("invalid configuration file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: toml::de::Error,
    },
    /// The policy file is not valid.
    #[error("policy file {}: {source}", path.display())]
    Policy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: PolicyError,
    },
    /// A setting is missing or contradicts another.
    #[error("{0}")]
    Invalid(String),
}

/// The configuration file (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Cli::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`RunArgs::connect`].
    pub connect: Option<String>,
    /// See [`RunArgs::tls_dir`].
    pub tls_dir: Option<PathBuf>,
    /// See [`RunArgs::plaintext`].
    #[serde(default)]
    pub plaintext: bool,
    /// See [`PolicyArgs::policy`].
    pub policy: Option<PathBuf>,
    /// See [`PolicyArgs::warn_only`].
    #[serde(default)]
    pub warn_only: bool,
    /// See [`PassphraseArgs::passphrase_file`].
    pub passphrase_file: Option<PathBuf>,
    /// See [`RunArgs::on_approval_request`].
    pub on_approval_request: Option<String>,
}

impl FileConfig {
    /// Reads and parses `path`; relative paths in it become relative to its directory.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut file: FileConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [
            &mut file.data_dir,
            &mut file.tls_dir,
            &mut file.policy,
            &mut file.passphrase_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// Where the effective policy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// Every rule enforced (the default).
    Enforcing,
    /// Every rule in warn mode.
    WarnOnly,
    /// A policy file.
    File(PathBuf),
}

impl PolicySource {
    /// Loads the policy.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Policy`] for a file that cannot be used.
    pub fn load(&self) -> Result<Policy, ConfigError> {
        match self {
            PolicySource::Enforcing => Ok(Policy::enforcing()),
            PolicySource::WarnOnly => Ok(Policy::warn_only()),
            PolicySource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Policy::from_toml(&text).map_err(|source| ConfigError::Policy {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
}

/// The effective settings of one invocation: flags and environment over the file over the
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The proxy's address, if given.
    pub connect: Option<String>,
    /// The TLS directory.
    pub tls_dir: PathBuf,
    /// Whether the link goes without TLS.
    pub plaintext: bool,
    /// The policy's source.
    pub policy: PolicySource,
    /// The passphrase file, if given.
    pub passphrase_file: Option<PathBuf>,
    /// The command run for each payment queued for the operator, if given.
    pub on_approval_request: Option<String>,
    /// Which proxy the replies are written for.
    pub proxy_compat: crate::daemon::ProxyCompat,
}

impl Settings {
    /// The settings of `cli`, reading its `--config` file if any.
    ///
    /// # Errors
    /// A [`ConfigError`] for an unusable file, a missing data directory, or contradictory
    /// policy settings.
    pub fn resolve(cli: &Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(cli, file, std::env::var_os("HOME").map(PathBuf::from))
    }

    /// Merges `cli` over `file`; `home` gives the default data directory (`~/.signer`).
    ///
    /// # Errors
    /// See [`Settings::resolve`].
    pub fn merge(
        cli: &Cli,
        file: FileConfig,
        home: Option<PathBuf>,
    ) -> Result<Settings, ConfigError> {
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .or_else(|| home.map(|h| h.join(".signer")))
            .ok_or_else(|| ConfigError::Invalid("no data directory: give --data-dir".into()))?;
        let (run, policy_args, passphrase) = match &cli.command {
            Command::Run(r) => (Some(r), Some(&r.policy), None),
            Command::Policy(PolicyCommand::Show(p)) => (None, Some(&p.policy), None),
            Command::Init(i) => (None, None, Some(&i.passphrase)),
            Command::NodeId(p) => (None, None, Some(p)),
            Command::Approvals(_) => (None, None, None),
        };
        let policy = match policy_args {
            Some(PolicyArgs {
                policy: Some(path), ..
            }) => PolicySource::File(path.clone()),
            Some(PolicyArgs {
                warn_only: true, ..
            }) => PolicySource::WarnOnly,
            _ => match (file.policy, file.warn_only) {
                (Some(_), true) => {
                    return Err(ConfigError::Invalid(
                        "the configuration file sets both `policy` and `warn_only = true`".into(),
                    ))
                }
                (Some(path), false) => PolicySource::File(path),
                (None, true) => PolicySource::WarnOnly,
                (None, false) => PolicySource::Enforcing,
            },
        };
        Ok(Settings {
            connect: run.and_then(|r| r.connect.clone()).or(file.connect),
            tls_dir: run
                .and_then(|r| r.tls_dir.clone())
                .or(file.tls_dir)
                .unwrap_or_else(|| data_dir.join(TLS_DIR)),
            plaintext: run.is_some_and(|r| r.plaintext) || file.plaintext,
            policy,
            passphrase_file: passphrase
                .and_then(|p| p.passphrase_file.clone())
                .or(file.passphrase_file),
            on_approval_request: run
                .and_then(|r| r.on_approval_request.clone())
                .or(file.on_approval_request),
            proxy_compat: run.map(|r| r.proxy_compat).unwrap_or_default(),
            data_dir,
        })
    }

    /// The daemon's configuration.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] without a proxy address; policy file errors.
    pub fn daemon_config(&self) -> Result<DaemonConfig, ConfigError> {
        let url = self.connect.clone().ok_or_else(|| {
            ConfigError::Invalid(
                "no proxy address: give --connect URL (or `connect` in the file)".into(),
            )
        })?;
        let security = if self.plaintext {
            LinkSecurity::Plaintext
        } else {
            LinkSecurity::MutualTls(TlsPaths::signer(&self.tls_dir))
        };
        let mut config = DaemonConfig::new(&self.data_dir, url, security, self.policy.load()?);
        config.on_approval_request = self.on_approval_request.clone();
        config.proxy_compat = self.proxy_compat;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("signer").chain(args.iter().copied())).unwrap()
    }

    fn merge(args: &[&str], file: &str) -> Result<Settings, ConfigError> {
        let file: FileConfig = toml::from_str(file).unwrap();
        Settings::merge(&parse(args), file, Some("/home/op".into()))
    }

    #[test]
    fn defaults() {
        let s = merge(&["run"], "").unwrap();
        assert_eq!(s.data_dir, Path::new("/home/op/.signer"));
        assert_eq!(s.tls_dir, Path::new("/home/op/.signer/tls"));
        assert_eq!(s.policy, PolicySource::Enforcing);
        assert!(!s.plaintext && s.connect.is_none());
        assert!(matches!(s.daemon_config(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn flags_override_the_file() {
        let file = "data_dir = \"/srv/signer\"\nconnect = \"https://a:1\"\nwarn_only = true\n";
        let s = merge(&["run"], file).unwrap();
        assert_eq!(s.data_dir, Path::new("/srv/signer"));
        assert_eq!(s.connect.as_deref(), Some("https://a:1"));
        assert_eq!(s.policy, PolicySource::WarnOnly);

        let s = merge(
            &[
                "--data-dir",
                "/d",
                "run",
                "--connect",
                "http://b:2",
                "--plaintext",
                "--policy",
                "/p.toml",
            ],
            file,
        )
        .unwrap();
        assert_eq!(s.data_dir, Path::new("/d"));
        assert_eq!(s.tls_dir, Path::new("/d/tls"));
        assert_eq!(s.connect.as_deref(), Some("http://b:2"));
        assert!(s.plaintext);
        assert_eq!(s.policy, PolicySource::File("/p.toml".into()));
        let c = Settings {
            policy: PolicySource::WarnOnly,
            ..s
        }
        .daemon_config()
        .unwrap();
        assert_eq!(c.security, LinkSecurity::Plaintext);
        assert_eq!(c.policy.mode("revoke-in-order"), Mode::Warn);
        assert_eq!(c.proxy_url, "http://b:2");
    }

    #[test]
    fn data_dir_flag_works_after_the_subcommand_too() {
        let s = merge(
            &["node-id", "--data-dir", "/x", "--passphrase-file", "/pw"],
            "",
        )
        .unwrap();
        assert_eq!(s.data_dir, Path::new("/x"));
        assert_eq!(s.passphrase_file.as_deref(), Some(Path::new("/pw")));
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(Cli::try_parse_from(["signer", "run", "--warn-only", "--policy", "p"]).is_err());
        assert!(Cli::try_parse_from(["signer", "init", "--mnemonic", "--import", "f"]).is_err());
        assert!(matches!(
            merge(&["policy", "show"], "policy = \"/p\"\nwarn_only = true\n"),
            Err(ConfigError::Invalid(_))
        ));
        // A flag decides the policy, whatever the file says.
        let s = merge(&["policy", "show", "--warn-only"], "policy = \"/p\"\n").unwrap();
        assert_eq!(s.policy, PolicySource::WarnOnly);
        assert!(Settings::merge(&parse(&["run"]), FileConfig::default(), None).is_err());
    }

    #[test]
    fn file_paths_are_relative_to_the_file_and_typos_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        std::fs::write(
            &path,
            "data_dir = \"data\"\npolicy = \"/abs/policy.toml\"\n",
        )
        .unwrap();
        let file = FileConfig::load(&path).unwrap();
        assert_eq!(file.data_dir.unwrap(), dir.path().join("data"));
        assert_eq!(file.policy.unwrap(), Path::new("/abs/policy.toml"));
        std::fs::write(&path, "datadir = \"data\"\n").unwrap();
        assert!(matches!(
            FileConfig::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn policy_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[rules]\nno-such-rule = \"warn\"\n").unwrap();
        let err = PolicySource::File(path.clone()).load().unwrap_err();
        assert!(err.to_string().contains("policy.toml"), "{err}");
        std::fs::write(&path, "default = \"warn\"\n").unwrap();
        let p = PolicySource::File(path).load().unwrap();
        assert_eq!(p.mode("channel-known"), Mode::Warn);
    }
}
