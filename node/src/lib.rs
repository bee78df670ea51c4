//! The node side of the remote signer: an hsmd client that starts the proxy exactly as
//! Core Lightning's lightningd starts its hsmd, and talks to it.
//!
//! - [`hsmd`]: [`Hsmd::spawn`] checks `--version`, starts the process with fd 0 = status
//!   socket and fd 3 = master socket in the network directory, and owns it (killed on drop);
//!   [`Hsmd::new_client`] asks for a client fd with `hsmd_client_hsmfd`;
//! - [`client`]: [`HsmClient`], one framed request/reply connection (master or client fd);
//! - [`calls`]: typed requests ([`Call`]) and helpers for the common messages;
//! - [`status`]: the status channel reader and its queryable [`StatusLog`];
//! - [`subdaemon`]: the permissions lightningd gives each subdaemon's client;
//! - [`replay`]: replaying a conformance corpus against the proxy and a signer
//!   (`node replay`);
//! - [`process`]: owning a child process (killed on drop);
//! - [`fdpass`]: receiving a passed descriptor (`SCM_RIGHTS`).

pub mod calls;
pub mod client;
pub mod fdpass;
pub mod hsmd;
pub mod process;
pub mod replay;
pub mod status;
pub mod subdaemon;

pub use calls::{init_request, Call};
pub use client::{ClientError, ClientInfo, HsmClient};
pub use hsmd::{Hsmd, HsmdConfig, LogTarget, SpawnError};
pub use process::{Process, WaitError};
pub use status::{StatusEvent, StatusLog};
pub use subdaemon::Subdaemon;
pub mod backup;
pub mod bench;
pub mod bolt3;
pub mod chain;
pub mod channel;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod invoice;
pub mod latency;
pub mod payments;
pub mod store;
pub mod transport;
pub mod wallet;
