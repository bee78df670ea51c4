//! Replaying the steps of one case and judging each outcome against the corpus, as the
//! corpus README says a replacement is judged:
//!
//! - `reply`: byte-identical;
//! - `client_closed`: EOF on that fd; where a bad request is recorded, a
//!   `hsmstatus_client_bad_request` naming that client and carrying the request (its text
//!   may differ, but a refusal's must name the rule);
//! - `hsmd_exited`: a `status_fail`, then exit with a non-zero status.
//!
//! How an EOF is read: the proxy writes its status message before it closes a client, so
//! once a client sees EOF the status channel already holds a bad request (client closed) or
//! a `status_fail` (the proxy is exiting), or nothing (the client was replaced).

use super::corpus::{Case, Expectation};
use super::env::CaseEnv;
use super::ReplayConfig;
use crate::client::{ClientError, ClientInfo, HsmClient};
use crate::status::StatusEvent;
use protocol::msgs::{name_of, ClientHsmfd};
use protocol::types::NodeId;
use protocol::Permissions;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// How long a status message may lag behind the EOF it explains.
const STATUS_GRACE: Duration = Duration::from_secs(2);
/// The same when no status message is expected (a replaced client).
const SHORT_STATUS_GRACE: Duration = Duration::from_millis(100);
/// How long a request may still complete after the signer exited.
const SIGNER_EXIT_GRACE: Duration = Duration::from_secs(1);

/// A `hsmstatus_client_bad_request` as seen.
#[derive(Debug)]
struct BadRequest {
    node_id: NodeId,
    description: String,
    request: Vec<u8>,
}

/// How the proxy ended.
#[derive(Debug)]
struct ExitInfo {
    /// `None`: still running after the step timeout.
    status: Option<ExitStatus>,
    /// The `status_fail` sent during this step.
    fail: Option<(u8, String)>,
}

/// What a step showed.
#[derive(Debug)]
enum Observed {
    Reply {
        bytes: Vec<u8>,
        fd: Option<std::os::fd::OwnedFd>,
        exit: Option<ExitInfo>,
    },
    Closed {
        bad_request: Option<BadRequest>,
    },
    Exited(ExitInfo),
    NoReply(Duration),
    Failed(String),
    SignerDied(String),
}

fn short_hex(b: &[u8]) -> String {
    const MAX: usize = 40;
    if b.len() <= MAX {
        hex::encode(b)
    } else {
        format!("{}..({} bytes)", hex::encode(&b[..MAX]), b.len())
    }
}

/// A status text shortened for one line: its start and its end (where refusals name the
/// rule) are kept.
fn short_text(s: &str) -> String {
    const HEAD: usize = 80;
    const TAIL: usize = 200;
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= HEAD + TAIL + 20 {
        return s.to_string();
    }
    let head: String = chars[..HEAD].iter().collect();
    let tail: String = chars[chars.len() - TAIL..].iter().collect();
    format!("{head}...({} chars)...{tail}", chars.len())
}

fn msg_name(b: &[u8]) -> String {
    match b.get(..2) {
        Some(t) => {
            let t = u16::from_be_bytes([t[0], t[1]]);
            name_of(t).map_or_else(|| format!("type {t}"), str::to_string)
        }
        None => "short message".into(),
    }
}

impl ExitInfo {
    fn describe(&self) -> String {
        let status = match self.status {
            None => "did not exit".to_string(),
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("status {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => s.to_string(),
            },
        };
        match &self.fail {
            Some((r, m)) => format!("{status}, status_fail {r} {:?}", short_text(m)),
            None => format!("{status}, no status_fail"),
        }
    }

    /// A proper stop: `status_fail`, then a non-zero exit code; `must_name` in the message.
    fn check(&self, must_name: Option<&str>) -> Result<(), String> {
        let code = self.status.and_then(|s| s.code());
        let fail = self.fail.as_ref().map(|(_, m)| m.as_str());
        let named = match (must_name, fail) {
            (Some(rule), Some(m)) => m.contains(rule),
            _ => true,
        };
        if matches!(code, Some(c) if c != 0) && fail.is_some() && named {
            return Ok(());
        }
        let want = match must_name {
            Some(rule) => format!("status_fail naming {rule:?} and a non-zero exit"),
            None => "status_fail and a non-zero exit".into(),
        };
        Err(format!("expected {want}, got {}", self.describe()))
    }
}

impl Observed {
    fn describe(&self) -> String {
        match self {
            Observed::Reply { bytes, .. } => {
                format!("reply {} {}", msg_name(bytes), short_hex(bytes))
            }
            Observed::Closed {
                bad_request: Some(b),
            } => {
                format!(
                    "client_closed (bad request {:?})",
                    short_text(&b.description)
                )
            }
            Observed::Closed { bad_request: None } => "client_closed (no bad request)".into(),
            Observed::Exited(e) => format!("hsmd_exited ({})", e.describe()),
            Observed::NoReply(t) => format!("no reply within {t:?}"),
            Observed::Failed(e) => format!("error: {e}"),
            Observed::SignerDied(e) => format!("the signer exited ({e})"),
        }
    }

    /// Whether later steps of the case can still be run.
    fn can_go_on(&self) -> bool {
        matches!(
            self,
            Observed::Reply { exit: None, .. } | Observed::Closed { .. }
        )
    }
}

fn describe_expectation(e: &Expectation) -> String {
    match e {
        Expectation::Reply { bytes, .. } => {
            format!("reply {} {}", msg_name(bytes), short_hex(bytes))
        }
        Expectation::ClientClosed {
            bad_request: true,
            must_name: Some(r),
        } => {
            format!("client_closed with a bad request naming {r:?}")
        }
        Expectation::ClientClosed {
            bad_request: true, ..
        } => "client_closed with a bad request".into(),
        Expectation::ClientClosed { .. } => "client_closed".into(),
        Expectation::Exited { must_name: Some(r) } => format!("hsmd_exited naming {r:?}"),
        Expectation::Exited { .. } => "hsmd_exited".into(),
        Expectation::NoReply => "no reply".into(),
    }
}

/// Compares what a step showed with what it must show.
fn judge(
    exp: &Expectation,
    obs: &Observed,
    peer: Option<NodeId>,
    req: &[u8],
) -> Result<(), String> {
    match (exp, obs) {
        (
            Expectation::Reply { bytes, then_exits },
            Observed::Reply {
                bytes: got, exit, ..
            },
        ) => {
            if got != bytes {
                let at = bytes
                    .iter()
                    .zip(got.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(bytes.len().min(got.len()));
                return Err(format!(
                    "expected reply {} {}, got {} {} (first difference at byte {at})",
                    msg_name(bytes),
                    short_hex(bytes),
                    msg_name(got),
                    short_hex(got)
                ));
            }
            match (then_exits, exit) {
                (true, Some(e)) => e.check(None).map_err(|m| format!("after the reply: {m}")),
                (true, None) => Err("after the reply: expected the proxy to exit".into()),
                _ => Ok(()),
            }
        }
        (
            Expectation::ClientClosed {
                bad_request,
                must_name,
            },
            Observed::Closed { bad_request: got },
        ) => {
            if !bad_request {
                return Ok(());
            }
            let Some(b) = got else {
                return Err(
                    "client closed, but no hsmstatus_client_bad_request on the status channel"
                        .into(),
                );
            };
            if let Some(p) = peer {
                if b.node_id != p {
                    return Err(format!(
                        "bad request names node {}, the client is {p}",
                        b.node_id
                    ));
                }
            }
            if b.request != req {
                return Err(format!(
                    "bad request carries {}, the request was {}",
                    short_hex(&b.request),
                    short_hex(req)
                ));
            }
            if let Some(rule) = must_name {
                if !b.description.contains(rule.as_str()) {
                    let d = short_text(&b.description);
                    return Err(format!("bad request {d:?} does not name rule {rule:?}"));
                }
            }
            Ok(())
        }
        (Expectation::Exited { must_name }, Observed::Exited(e)) => e.check(must_name.as_deref()),
        (Expectation::NoReply, Observed::NoReply(_)) => Ok(()),
        (exp, obs) => Err(format!(
            "expected {}, got {}",
            describe_expectation(exp),
            obs.describe()
        )),
    }
}

/// A client of the case, by its corpus number.
struct Slot {
    client: HsmClient,
    peer: NodeId,
}

/// Replays `case` on `env`; returns one line per mismatch.
pub async fn replay_case(cfg: &ReplayConfig, case: &Case, env: &CaseEnv) -> Vec<String> {
    let enforcing = cfg.policy.is_some();
    let mut clients: HashMap<u64, Slot> = HashMap::new();
    let mut next_client = 1u64;
    let mut fails = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let line = |m: String| format!("{} step {i} ({}): {m}", case.name, step.label());
        let (exp, req) = match step
            .expectation(enforcing)
            .and_then(|e| Ok((e, step.request_bytes()?)))
        {
            Ok(x) => x,
            Err(e) => {
                fails.push(line(format!("unusable step: {e}")));
                continue;
            }
        };
        let (client, peer) = if step.client == 0 {
            (env.hsmd.master(), None)
        } else {
            match clients.get(&step.client) {
                Some(s) => (&s.client, Some(s.peer)),
                None => {
                    fails.push(line(format!("client {} was never handed out", step.client)));
                    continue;
                }
            }
        };
        let obs = observe(cfg, env, client, step.client == 0, &req, &exp).await;
        if let Err(m) = judge(&exp, &obs, peer, &req) {
            fails.push(line(m));
        }
        let go_on = obs.can_go_on();
        if let Observed::Reply { fd: Some(fd), .. } = obs {
            let number = step.new_client.unwrap_or(next_client);
            if number != next_client {
                fails.push(line(format!(
                    "the corpus numbers this client {number}, expected {next_client}"
                )));
            }
            next_client = next_client.max(number) + 1;
            let Ok(r) = ClientHsmfd::decode(&req) else {
                fails.push(line(
                    "an fd came for a request that is not hsmd_client_hsmfd".into(),
                ));
                continue;
            };
            let info = ClientInfo {
                peer_id: Some(r.id),
                dbid: r.dbid,
                permissions: Permissions::from_bits(r.permissions),
            };
            match HsmClient::from_fd(fd, info) {
                Ok(c) => {
                    clients.insert(
                        number,
                        Slot {
                            client: c,
                            peer: r.id,
                        },
                    );
                }
                Err(e) => fails.push(line(format!("passed fd unusable: {e}"))),
            }
        }
        if !go_on {
            let left = case.steps.len() - i - 1;
            if left > 0 {
                if fails
                    .last()
                    .is_some_and(|l| l.starts_with(&line(String::new())))
                {
                    if let Some(l) = fails.last_mut() {
                        l.push_str(&format!(" [{left} later steps not run]"));
                    }
                } else {
                    fails.push(line(format!(
                        "proxy stopped serving; {left} later steps not run"
                    )));
                }
            }
            break;
        }
    }
    fails
}

/// Sends one request and finds out what happened.
async fn observe(
    cfg: &ReplayConfig,
    env: &CaseEnv,
    client: &HsmClient,
    is_master: bool,
    req: &[u8],
    exp: &Expectation,
) -> Observed {
    let mark = env.hsmd.status().mark();
    let was_closed = client.is_closed();
    let t = cfg.step_timeout;
    let fut = tokio::time::timeout(t, client.request_raw(req));
    tokio::pin!(fut);
    let res = tokio::select! {
        biased;
        r = &mut fut => r,
        s = env.signer.wait() => {
            // The proxy stopping may be what ended the signer: let the request finish.
            match tokio::time::timeout(SIGNER_EXIT_GRACE, &mut fut).await {
                Ok(r) => r,
                Err(_) => {
                    let s = s.map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Observed::SignerDied(s);
                }
            }
        }
    };
    match res {
        Err(_) => Observed::NoReply(t),
        Ok(Ok(r)) => {
            let then_exits = matches!(
                exp,
                Expectation::Reply {
                    then_exits: true,
                    ..
                }
            );
            let exit = if then_exits {
                Some(exit_info(cfg, env, mark).await)
            } else {
                None
            };
            Observed::Reply {
                bytes: r.msg,
                fd: r.fd,
                exit,
            }
        }
        // Closed by an earlier step: nothing new to wait for on the status channel.
        Ok(Err(ClientError::Closed)) if was_closed && !is_master => {
            Observed::Closed { bad_request: None }
        }
        Ok(Err(ClientError::Closed | ClientError::MissingFd)) => {
            classify_close(cfg, env, is_master, mark, exp).await
        }
        Ok(Err(e)) => Observed::Failed(e.to_string()),
    }
}

/// An EOF on a client: a bad request, a replaced client, or the proxy exiting.
async fn classify_close(
    cfg: &ReplayConfig,
    env: &CaseEnv,
    is_master: bool,
    mark: usize,
    exp: &Expectation,
) -> Observed {
    if !is_master {
        let grace = match exp {
            Expectation::ClientClosed {
                bad_request: false, ..
            } => SHORT_STATUS_GRACE,
            _ => STATUS_GRACE,
        };
        let status = env.hsmd.status();
        let wait = status.wait_for(mark, |e| {
            matches!(
                e,
                StatusEvent::ClientBadRequest { .. } | StatusEvent::Fail { .. }
            )
        });
        match tokio::time::timeout(grace, wait).await {
            Ok(Some((
                _,
                StatusEvent::ClientBadRequest {
                    node_id,
                    description,
                    request,
                },
            ))) => {
                return Observed::Closed {
                    bad_request: Some(BadRequest {
                        node_id,
                        description,
                        request,
                    }),
                }
            }
            // A status_fail, or the channel ended: the proxy is going.
            Ok(_) => {}
            Err(_) => return Observed::Closed { bad_request: None },
        }
    }
    Observed::Exited(exit_info(cfg, env, mark).await)
}

/// Waits for the proxy's exit and collects the `status_fail` sent since `mark`.
async fn exit_info(cfg: &ReplayConfig, env: &CaseEnv, mark: usize) -> ExitInfo {
    let status = match tokio::time::timeout(cfg.step_timeout, env.hsmd.wait_exit()).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    let log = env.hsmd.status();
    if status.is_some() {
        // Everything it wrote before exiting is readable now; the channel ends right after.
        let _ = tokio::time::timeout(STATUS_GRACE, log.wait_end()).await;
    }
    let fail = log
        .snapshot()
        .events
        .into_iter()
        .skip(mark)
        .rev()
        .find_map(|e| match e {
            StatusEvent::Fail { reason, message } => Some((reason, message)),
            _ => None,
        });
    ExitInfo { status, fail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, fail: Option<&str>) -> ExitInfo {
        ExitInfo {
            status: Some(ExitStatus::from_raw(code << 8)),
            fail: fail.map(|m| (0, m.to_string())),
        }
    }

    #[test]
    fn replies_must_be_identical() {
        let exp = Expectation::Reply {
            bytes: vec![0, 100, 1],
            then_exits: false,
        };
        let same = Observed::Reply {
            bytes: vec![0, 100, 1],
            fd: None,
            exit: None,
        };
        assert!(judge(&exp, &same, None, &[]).is_ok());
        let other = Observed::Reply {
            bytes: vec![0, 100, 2],
            fd: None,
            exit: None,
        };
        let e = judge(&exp, &other, None, &[]).unwrap_err();
        assert!(e.contains("first difference at byte 2"), "{e}");
        let closed = Observed::Closed { bad_request: None };
        assert!(judge(&exp, &closed, None, &[])
            .unwrap_err()
            .starts_with("expected reply"));
    }

    #[test]
    fn bad_requests_name_the_client_the_request_and_the_rule() {
        let peer = NodeId::from_bytes([2; 33]);
        let req = [0u8, 1, 9];
        let exp = Expectation::ClientClosed {
            bad_request: true,
            must_name: Some("permission".into()),
        };
        let obs = |node_id, description: &str, request: &[u8]| Observed::Closed {
            bad_request: Some(BadRequest {
                node_id,
                description: description.into(),
                request: request.to_vec(),
            }),
        };
        assert!(judge(
            &exp,
            &obs(peer, "policy permission: no", &req),
            Some(peer),
            &req
        )
        .is_ok());
        let other = NodeId::from_bytes([3; 33]);
        assert!(judge(&exp, &obs(other, "permission", &req), Some(peer), &req).is_err());
        assert!(judge(&exp, &obs(peer, "permission", &[0, 1]), Some(peer), &req).is_err());
        assert!(judge(&exp, &obs(peer, "parse error", &req), Some(peer), &req).is_err());
        let silent = Observed::Closed { bad_request: None };
        assert!(judge(&exp, &silent, Some(peer), &req).is_err());
        let replaced = Expectation::ClientClosed {
            bad_request: false,
            must_name: None,
        };
        assert!(judge(&replaced, &silent, Some(peer), &req).is_ok());
    }

    #[test]
    fn an_exit_needs_status_fail_and_a_non_zero_status() {
        let exp = Expectation::Exited { must_name: None };
        assert!(judge(&exp, &Observed::Exited(exit(242, Some("bad"))), None, &[]).is_ok());
        assert!(judge(&exp, &Observed::Exited(exit(0, Some("bad"))), None, &[]).is_err());
        assert!(judge(&exp, &Observed::Exited(exit(242, None)), None, &[]).is_err());
        let killed = ExitInfo {
            status: Some(ExitStatus::from_raw(9)),
            fail: Some((3, "x".into())),
        };
        assert!(judge(&exp, &Observed::Exited(killed), None, &[]).is_err());
        let named = Expectation::Exited {
            must_name: Some("revoke-in-order".into()),
        };
        let e = Observed::Exited(exit(242, Some("policy revoke-in-order: no")));
        assert!(judge(&named, &e, None, &[]).is_ok());
        let then = Expectation::Reply {
            bytes: vec![0, 115],
            then_exits: true,
        };
        let r = Observed::Reply {
            bytes: vec![0, 115],
            fd: None,
            exit: Some(exit(242, Some("x"))),
        };
        assert!(judge(&then, &r, None, &[]).is_ok());
        let r = Observed::Reply {
            bytes: vec![0, 115],
            fd: None,
            exit: Some(exit(0, None)),
        };
        assert!(judge(&then, &r, None, &[]).is_err());
    }
}
