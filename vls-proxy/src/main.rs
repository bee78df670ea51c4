//! `vls-proxy`: started by the node in place of Core Lightning's `hsmd`; serves the node's hsmd
//! fds and forwards every key operation to the remote signer.

mod decode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vls-proxy", about = "Drop-in hsmd that forwards key operations to a remote signer")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Decode hsmd messages given as hex, one per line on stdin, into JSON lines.
    Decode,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Decode) => {
            if let Err(e) = decode::run(std::io::stdin().lock(), std::io::stdout().lock()) {
                eprintln!("vls-proxy decode: {e}");
                std::process::exit(1);
            }
        }
        None => {
            eprintln!("vls-proxy: serving hsmd is not available in this build; see `vls-proxy --help`");
            std::process::exit(2);
        }
    }
}
