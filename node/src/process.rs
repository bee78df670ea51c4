//! Owning a child process: its exit status can be waited for from any task (cancel-safe),
//! and it is killed when its owner is dropped, on every path.

use std::process::ExitStatus;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Why waiting for a process failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("waiting for the process: {0}")]
pub struct WaitError(pub String);

type ExitState = Option<Result<ExitStatus, WaitError>>;

/// A running (or exited) child process.
///
/// A task waits for it; [`Process::kill`] or dropping the `Process` kills it with SIGKILL.
/// If the runtime itself goes away first, the child's kill-on-drop does it.
pub struct Process {
    exit: watch::Receiver<ExitState>,
    kill: Arc<Notify>,
    pid: Option<u32>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Takes ownership of `child` (which should have been spawned with `kill_on_drop`).
    /// Must be called within a tokio runtime.
    pub fn new(mut child: tokio::process::Child) -> Process {
        let pid = child.id();
        let (tx, rx) = watch::channel::<ExitState>(None);
        let kill = Arc::new(Notify::new());
        let kill_rx = kill.clone();
        tokio::spawn(async move {
            let r = tokio::select! {
                r = child.wait() => r,
                _ = kill_rx.notified() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            tx.send_replace(Some(r.map_err(|e| WaitError(e.to_string()))));
        });
        Process {
            exit: rx,
            kill,
            pid,
        }
    }

    /// The process id (as it was at start).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match &*self.exit.borrow() {
            Some(Ok(s)) => Some(*s),
            _ => None,
        }
    }

    /// Waits for the process to exit. Cancel-safe: wrap it in a timeout.
    pub async fn wait(&self) -> Result<ExitStatus, WaitError> {
        let mut rx = self.exit.clone();
        let r = match rx.wait_for(|s| s.is_some()).await {
            Ok(s) => s.clone(),
            Err(_) => return Err(WaitError("the waiter task is gone".into())),
        };
        r.unwrap_or_else(|| Err(WaitError("no exit status".into())))
    }

    /// Kills the process (SIGKILL) if it still runs.
    pub fn kill(&self) {
        self.kill.notify_one();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_and_kill() {
        let mut c = tokio::process::Command::new("sh");
        c.args(["-c", "exit 3"]).kill_on_drop(true);
        let p = Process::new(c.spawn().unwrap());
        assert_eq!(p.wait().await.unwrap().code(), Some(3));
        assert_eq!(p.exit_status().unwrap().code(), Some(3));

        let mut c = tokio::process::Command::new("sleep");
        c.arg("30").kill_on_drop(true);
        let p = Process::new(c.spawn().unwrap());
        assert!(p.exit_status().is_none());
        p.kill();
        let s = p.wait().await.unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&s), Some(9));
    }
}
