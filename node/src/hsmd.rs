//! Starting the hsmd (here: `vls-proxy`) exactly as lightningd starts it, and owning the
//! process.
//!
//! lightningd first runs `<hsmd> --version` and refuses a subdaemon whose output is not its
//! own version; then it starts it with fd 0 = one end of a socketpair (the status channel)
//! and fd 3 = one end of another (the master request fd), in the node's network directory,
//! with its environment. [`Hsmd::spawn`] does the same. The process is killed when the
//! [`Hsmd`] is dropped, on every path (see [`crate::process`]).

use crate::client::{ClientError, ClientInfo, HsmClient};
use crate::process::{Process, WaitError};
use crate::status::StatusLog;
use protocol::msgs::{ClientHsmfd, ClientHsmfdReply};
use protocol::socket::HsmdSocket;
use protocol::types::NodeId;
use protocol::Permissions;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// How long `<hsmd> --version` may take.
pub const VERSION_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the proxy's stderr (its own log) goes.
#[derive(Clone, Debug, Default)]
pub enum LogTarget {
    /// Our stderr, as lightningd leaves it.
    #[default]
    Inherit,
    /// Discarded.
    Null,
    /// Appended to this file.
    File(PathBuf),
}

impl LogTarget {
    /// Opens the target for a child's stdout or stderr.
    pub fn stdio(&self) -> std::io::Result<Stdio> {
        Ok(match self {
            LogTarget::Inherit => Stdio::inherit(),
            LogTarget::Null => Stdio::null(),
            LogTarget::File(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        })
    }
}

/// How to start the hsmd.
#[derive(Clone, Debug)]
pub struct HsmdConfig {
    /// The executable (`vls-proxy`, or Core Lightning's own `lightning_hsmd`).
    pub program: PathBuf,
    /// The version it must print for `--version` (lightningd's own version).
    pub expected_version: String,
    /// Its working directory: the node's network directory.
    pub network_dir: PathBuf,
    /// Its arguments: lightningd passes `--log-io`, `--log-trace`, `--dev-debug-self` and
    /// `--developer`, in that order, each only when it applies.
    pub args: Vec<String>,
    /// Variables set on top of our environment (which is passed through), e.g. `VLS_PORT`.
    pub env: Vec<(OsString, OsString)>,
    /// Variables of our environment not to pass (e.g. a stray `VLS_PLAINTEXT`).
    pub env_remove: Vec<OsString>,
    /// Where its stderr goes.
    pub stderr: LogTarget,
    /// Have the kernel kill it (SIGKILL) when the thread that started it ends, even if this
    /// process dies without running destructors (Linux `PR_SET_PDEATHSIG`). lightningd does
    /// not do this (hsmd exits on EOF on fd 3); a test harness wants it. Start it from a
    /// thread that lives as long as it should (e.g. a current-thread runtime's).
    pub kill_with_parent: bool,
}

impl HsmdConfig {
    /// A configuration for `program` in `network_dir`, expecting `expected_version`, with
    /// `VLS_LOG_STDERR=1` (the proxy's log on its stderr as well) and stderr inherited.
    pub fn new(
        program: impl Into<PathBuf>,
        expected_version: impl Into<String>,
        network_dir: impl Into<PathBuf>,
    ) -> Self {
        HsmdConfig {
            program: program.into(),
            expected_version: expected_version.into(),
            network_dir: network_dir.into(),
            args: Vec::new(),
            // The proxy logs to the status channel, which lightningd writes to its log; the
            // node reads that channel for events only, so it wants the lines on stderr too.
            env: vec![("VLS_LOG_STDERR".into(), "1".into())],
            env_remove: Vec::new(),
            stderr: LogTarget::Inherit,
            kill_with_parent: false,
        }
    }

    /// Adds an environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps a variable of our environment from the process.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }
}

/// Why the hsmd could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// `<program> --version` could not be run.
    #[error("cannot run `{program} --version`: {source}")]
    VersionCheck {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `<program> --version` did not finish in time.
    #[error("`{program} --version` did not finish within {VERSION_CHECK_TIMEOUT:?}")]
    VersionTimeout {
        /// The program.
        program: String,
    },
    /// `<program> --version` failed.
    #[error("`{program} --version` exited with {status}")]
    VersionFailed {
        /// The program.
        program: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// It reports another version than the node's: lightningd refuses such a subdaemon.
    #[error("`{program} --version` printed {got:?}, expected {expected:?}")]
    VersionMismatch {
        /// The program.
        program: String,
        /// The version required.
        expected: String,
        /// What it printed (trimmed).
        got: String,
    },
    /// The sockets could not be created or set up.
    #[error("socket setup: {0}")]
    Socket(#[source] std::io::Error),
    /// The process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running hsmd: its process, its master client and its status channel.
///
/// Dropping it kills the process (SIGKILL) if it is still running.
pub struct Hsmd {
    master: HsmClient,
    status: StatusLog,
    process: Process,
}

impl std::fmt::Debug for Hsmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsmd")
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

/// Runs `<program> --version` as lightningd does and checks its output.
pub async fn check_version(config: &HsmdConfig) -> Result<(), SpawnError> {
    let program = config.program.display().to_string();
    let mut cmd = tokio::process::Command::new(&config.program);
    for k in &config.env_remove {
        cmd.env_remove(k);
    }
    cmd.arg("--version")
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(VERSION_CHECK_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(SpawnError::VersionTimeout { program }),
        Ok(Err(source)) => return Err(SpawnError::VersionCheck { program, source }),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(SpawnError::VersionFailed {
            program,
            status: out.status,
        });
    }
    let got = String::from_utf8_lossy(&out.stdout)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    if got != config.expected_version {
        return Err(SpawnError::VersionMismatch {
            program,
            expected: config.expected_version.clone(),
            got,
        });
    }
    Ok(())
}

/// In the child, between fork and exec: puts `status` on fd 0 and `master` on fd 3.
///
/// Both are first copied above fd 10, so that neither is clobbered if it already sits on 0
/// or 3; `dup2` clears close-on-exec on the targets.
fn place_fds(status: i32, master: i32, kill_with_parent: bool) -> std::io::Result<()> {
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close, prctl) on descriptors we own.
    unsafe {
        if kill_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = libc::fcntl(status, libc::F_DUPFD, 10);
        let m = libc::fcntl(master, libc::F_DUPFD, 10);
        if s < 0 || m < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(s, 0) < 0 || libc::dup2(m, 3) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(s);
        libc::close(m);
    }
    Ok(())
}

fn to_tokio(s: std::os::unix::net::UnixStream) -> std::io::Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

impl Hsmd {
    /// Checks the version, then starts the process with the status socket on fd 0 and the
    /// master socket on fd 3, in the network directory. Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    /// A [`SpawnError`] if the version is not the expected one or the process cannot start.
    pub async fn spawn(config: HsmdConfig) -> Result<Hsmd, SpawnError> {
        check_version(&config).await?;
        let (status_ours, status_theirs) =
            std::os::unix::net::UnixStream::pair().map_err(SpawnError::Socket)?;
        let (master_ours, master_theirs) =
            std::os::unix::net::UnixStream::pair().map_err(SpawnError::Socket)?;
        let (sfd, mfd) = (status_theirs.as_raw_fd(), master_theirs.as_raw_fd());
        let mut cmd = tokio::process::Command::new(&config.program);
        for k in &config.env_remove {
            cmd.env_remove(k);
        }
        cmd.current_dir(&config.network_dir)
            .args(&config.args)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(config.stderr.stdio().map_err(SpawnError::Socket)?)
            .kill_on_drop(true);
        let kill_with_parent = config.kill_with_parent;
        // SAFETY: the closure only makes async-signal-safe calls (see `place_fds`).
        unsafe {
            cmd.pre_exec(move || place_fds(sfd, mfd, kill_with_parent));
        }
        let program = config.program.display().to_string();
        let child = cmd
            .spawn()
            .map_err(|source| SpawnError::Spawn { program, source })?;
        // The child has its copies; ours must go so that its exit shows up as EOF.
        drop(status_theirs);
        drop(master_theirs);
        let process = Process::new(child);

        let status = StatusLog::start(to_tokio(status_ours).map_err(SpawnError::Socket)?);
        let master = HsmClient::new(
            HsmdSocket::new(master_ours).map_err(SpawnError::Socket)?,
            ClientInfo::MASTER,
            true,
        );
        Ok(Hsmd {
            master,
            status,
            process,
        })
    }

    /// lightningd's own client (fd 3): permissions MASTER | SIGN_GOSSIP | ECDH.
    pub fn master(&self) -> &HsmClient {
        &self.master
    }

    /// The status channel's messages.
    pub fn status(&self) -> &StatusLog {
        &self.status
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Asks for a new client with `hsmd_client_hsmfd` on the master, and takes the passed
    /// socket. Requests on it are served with this identity and these permissions.
    ///
    /// # Errors
    /// [`ClientError::MissingFd`] if the reply came without a descriptor; any other
    /// [`ClientError`] of the master request.
    pub async fn new_client(
        &self,
        peer_id: NodeId,
        dbid: u64,
        permissions: Permissions,
    ) -> Result<HsmClient, ClientError> {
        let req = ClientHsmfd::new(peer_id, dbid, permissions.bits());
        let bytes = req.encode().map_err(|source| ClientError::Encode {
            request: ClientHsmfd::NAME,
            source,
        })?;
        let reply = self.master.request_raw(&bytes).await?;
        if let Err(source) = ClientHsmfdReply::decode(&reply.msg) {
            let reply_type = protocol::peek_type(&reply.msg);
            if reply_type != Some(ClientHsmfdReply::TYPE) {
                return Err(ClientError::UnexpectedReply {
                    request: ClientHsmfd::NAME,
                    expected: ClientHsmfdReply::TYPE,
                    reply_type,
                });
            }
            return Err(ClientError::BadReply {
                request: ClientHsmfd::NAME,
                source,
            });
        }
        let fd = reply.fd.ok_or(ClientError::MissingFd)?;
        HsmClient::from_fd(
            fd,
            ClientInfo {
                peer_id: Some(peer_id),
                dbid,
                permissions,
            },
        )
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Waits for the process to exit (cancel-safe; wrap it in a timeout).
    pub async fn wait_exit(&self) -> Result<ExitStatus, WaitError> {
        self.process.wait().await
    }

    /// Kills the process (SIGKILL) if it still runs; [`Hsmd::wait_exit`] then returns.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Closes the master fd, as lightningd does when it stops, and waits for the exit.
    pub async fn shutdown(&self) -> Result<ExitStatus, WaitError> {
        let _ = self.master.close().await;
        self.wait_exit().await
    }
}
