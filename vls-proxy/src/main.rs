//! `vls-proxy`: started by the node in place of Core Lightning's `hsmd`. It serves the node's
//! hsmd fds (fd 3 and the client fds it hands out), and forwards every key operation to the
//! remote signer, which dials in over mutually authenticated gRPC.
//!
//! lightningd gives a subdaemon only its own flags (`--developer`, `--log-io`, `--log-trace`,
//! `--dev-debug-self`), so everything else is configurable by environment (`VLS_*`) as well
//! as by flags.

mod cache;
mod clients;
mod decode;
mod dev;
mod fdpass;
mod metrics;
mod plugin_socket;
mod router;
mod server;
mod status;

use clap::{Parser, Subcommand};
use proto::hsmd::hsmd_server::HsmdServer;
use protocol::socket::HsmdSocket;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "vls-proxy",
    about = "Drop-in hsmd for Core Lightning that forwards key operations to a remote signer",
    disable_version_flag = true
)]
struct Cli {
    /// Print the Core Lightning version this proxy stands in for, and exit (lightningd checks
    /// that it equals its own).
    #[arg(long)]
    version: bool,
    /// The Core Lightning version to report (must equal `lightningd --version`).
    #[arg(long, env = "VLS_CLN_VERSION", default_value = "v26.06.6")]
    cln_version: String,
    /// Address the signer dials.
    #[arg(long, env = "VLS_BIND", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Port the signer dials.
    #[arg(long, env = "VLS_PORT", default_value_t = 7701)]
    port: u16,
    /// Directory with ca.pem, proxy.pem and proxy-key.pem (see `vls-proxy certs`); relative
    /// to the working directory (the node's network directory).
    #[arg(long, env = "VLS_TLS_DIR", default_value = "vls-tls")]
    tls_dir: PathBuf,
    /// Accept the signer without TLS. Only for tests and peers that cannot do TLS: anyone who
    /// reaches the port could then pose as the signer.
    /// `VLS_PLAINTEXT` takes 1/0, yes/no, true/false, on/off.
    #[arg(
        long,
        env = "VLS_PLAINTEXT",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    plaintext: bool,
    /// The node id the signer must have (hex); without it the first signer's id is pinned.
    #[arg(long, env = "VLS_EXPECT_NODE_ID")]
    expect_node_id: Option<String>,
    /// Serve Prometheus metrics on this port (127.0.0.1).
    #[arg(long, env = "VLS_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Entries of the preapproval cache (0 disables it).
    #[arg(long, env = "VLS_PREAPPROVAL_CACHE", default_value_t = 6)]
    preapproval_cache: usize,
    /// Retries of a request the signer failed temporarily.
    #[arg(long, env = "VLS_RETRY_ATTEMPTS", default_value_t = 6)]
    retry_attempts: usize,
    /// Set by lightningd when it runs with `--developer`: honour `hsmd_dev_preinit` and
    /// `hsmd_dev_memleak` as hsmd does.
    #[arg(long)]
    developer: bool,
    /// Set by lightningd when hsmd's log is printed at io level.
    #[arg(long)]
    log_io: bool,
    /// Set by lightningd when hsmd's log is printed at trace level.
    #[arg(long)]
    log_trace: bool,
    /// Set by lightningd with `--dev-debugger=hsmd` (the proxy logs its pid to attach to).
    #[arg(long)]
    dev_debug_self: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    fn subdaemon_flags(&self) -> dev::SubdaemonFlags {
        dev::SubdaemonFlags {
            developer: self.developer,
            log_io: self.log_io,
            log_trace: self.log_trace,
            debug_self: self.dev_debug_self,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Decode hsmd messages given as hex, one per line on stdin, into JSON lines.
    Decode,
    /// Create a CA and certificate/key pairs for the proxy and the signer.
    Certs {
        /// Where to write them.
        #[arg(long, default_value = "vls-tls")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses the signer may dial the proxy by.
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    status::Logger::install(if cli.command.is_some() {
        log::LevelFilter::Info
    } else {
        cli.subdaemon_flags().log_level()
    });
    if cli.version {
        println!("{}", cli.cln_version);
        return;
    }
    match cli.command {
        Some(Command::Decode) => {
            if let Err(e) = decode::run(std::io::stdin().lock(), std::io::stdout().lock()) {
                eprintln!("vls-proxy decode: {e}");
                std::process::exit(1);
            }
        }
        Some(Command::Certs { dir, names }) => {
            let mut all: Vec<String> = proto::tls::DEFAULT_PROXY_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect();
            all.extend(names);
            match proto::tls::generate_ca_and_certs(&dir, &all) {
                Ok(_) => println!("certificates written to {}", dir.display()),
                Err(e) => {
                    eprintln!("vls-proxy certs: {e}");
                    std::process::exit(1);
                }
            }
        }
        None => std::process::exit(run(cli)),
    }
}

/// Serves as hsmd until lightningd closes fd 3 or a fatal error; returns the exit status.
fn run(cli: Cli) -> i32 {
    // One thread: the proxy only moves bytes (~15 µs of CPU a request), and every hand-off
    // between threads would cost a wake-up on each round trip.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> i32 {
    // SAFETY: lightningd starts every subdaemon with fd 0 = status socket and fd 3 = master
    // socket; nothing else in this process owns them.
    let (status_sock, master_sock) = unsafe {
        (
            std::os::unix::net::UnixStream::from_raw_fd(0),
            std::os::unix::net::UnixStream::from_raw_fd(3),
        )
    };
    // Registered for reads only: see `protocol::socket`.
    let (status_sock, master_sock) =
        match (HsmdSocket::new(status_sock), HsmdSocket::new(master_sock)) {
            (Ok(a), Ok(b)) => (a.into_split().1, b),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("fd 0 and fd 3 must be sockets from lightningd: {e}");
                return 1;
            }
        };
    let status = Arc::new(status::Status::new(status_sock));
    status.version(&cli.cln_version);
    status::Logger::attach(&status);
    let flags = cli.subdaemon_flags();
    if flags.debug_self {
        log::info!(
            "--dev-debug-self: attach a debugger to pid {}",
            std::process::id()
        );
    }

    let expect_node_id = match cli.expect_node_id.as_deref().map(parse_node_id).transpose() {
        Ok(n) => n,
        Err(e) => {
            status.fail(3, &e).await;
            return clients::EXIT_STATUS_FAIL;
        }
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let config = router::RouterConfig {
        retry_attempts: cli.retry_attempts,
        cache_capacity: cli.preapproval_cache,
        expect_node_id,
        ..Default::default()
    };
    let router = router::Router::new(config, metrics.clone());
    // vls-plugin's checks (would the signer sign lightningd's next request?): see plugin_socket.
    plugin_socket::spawn(router.clone());

    let addr = SocketAddr::new(cli.bind, cli.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let why = format!("cannot listen on {addr} for the signer: {e}");
            log::error!("{why}");
            status.fail(3, &why).await;
            return clients::EXIT_STATUS_FAIL;
        }
    };
    let mut server = proto::keepalive::configure_server(tonic::transport::Server::builder());
    if !cli.plaintext {
        let tls = match proto::tls::ServerTls::load(&cli.tls_dir) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("TLS for the signer link: {e} (create certificates with `vls-proxy certs`, or set VLS_PLAINTEXT for tests)");
                log::error!("{why}");
                status.fail(3, &why).await;
                return clients::EXIT_STATUS_FAIL;
            }
        };
        server = match server.tls_config(tls) {
            Ok(s) => s,
            Err(e) => {
                status.fail(3, &format!("TLS configuration: {e}")).await;
                return clients::EXIT_STATUS_FAIL;
            }
        };
    } else {
        log::warn!("signer link without TLS: anyone who reaches {addr} can pose as the signer");
    }
    log::info!("waiting for the signer on {addr}");
    // serve_with_incoming ignores the builder's TCP options: set them on the listener.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(proto::keepalive::HTTP2_KEEPALIVE_INTERVAL));
    let grpc = server.add_service(
        HsmdServer::new(server::HsmdService::new(router.clone()))
            .max_decoding_message_size(proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(proto::MAX_MESSAGE_SIZE),
    );
    tokio::spawn(async move {
        if let Err(e) = grpc.serve_with_incoming(incoming).await {
            log::error!("gRPC server stopped: {e}");
        }
    });
    if let Some(port) = cli.metrics_port {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => {
                tokio::spawn(metrics::serve(l, metrics.clone()));
            }
            Err(e) => log::warn!("metrics port {port}: {e}"),
        }
    }

    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel();
    let dev = Arc::new(dev::DevMode::new(flags));
    let proxy = clients::Proxy::new(router, status.clone(), dev, exit_tx);
    tokio::spawn(proxy.serve_master(master_sock));
    let exit = exit_rx.recv().await.unwrap_or(clients::Exit {
        code: 1,
        why: "no reason".into(),
    });
    log::info!("exiting with status {}: {}", exit.code, exit.why);
    // Stop without waiting for the signer, once lightningd has every status message.
    let _ = tokio::time::timeout(Duration::from_millis(500), status.flush()).await;
    exit.code
}

fn parse_node_id(s: &str) -> Result<protocol::types::NodeId, String> {
    let b = hex::decode(s).map_err(|e| format!("--expect-node-id: {e}"))?;
    let a: [u8; 33] = b
        .try_into()
        .map_err(|_| "--expect-node-id: not 33 bytes".to_string())?;
    Ok(protocol::types::NodeId::from_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lightningds_flags_and_boolean_environment_values_parse() {
        let cli = Cli::try_parse_from([
            "vls-proxy",
            "--log-io",
            "--log-trace",
            "--dev-debug-self",
            "--developer",
        ])
        .unwrap();
        let f = cli.subdaemon_flags();
        assert!(f.developer && f.log_io && f.log_trace && f.debug_self);
        assert_eq!(f.log_level(), log::LevelFilter::Trace);
        for (value, expected) in [
            ("1", true),
            ("yes", true),
            ("true", true),
            ("0", false),
            ("no", false),
            ("false", false),
        ] {
            std::env::set_var("VLS_PLAINTEXT", value);
            let cli = Cli::try_parse_from(["vls-proxy", "--version"]).unwrap();
            assert_eq!(cli.plaintext, expected, "VLS_PLAINTEXT={value}");
        }
        std::env::remove_var("VLS_PLAINTEXT");
        assert!(Cli::try_parse_from(["vls-proxy", "--unknown"]).is_err());
    }
}
