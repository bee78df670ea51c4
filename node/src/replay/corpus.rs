//! The conformance corpus format (`tests/data/conformance/README.md`): cases of steps, each a
//! request on one fd and the outcome Core Lightning's hsmd had, plus the steps a validating
//! signer must refuse.
//!
//! [`Step::expectation`] turns a step into what this replay checks, for the mode it runs in:
//! with an enforcing policy, refused steps must be refused as the corpus says; in warn mode
//! they must be answered as Core Lightning did.

use serde::Deserialize;
use std::path::Path;

/// A corpus file.
#[derive(Debug, Deserialize)]
pub struct Corpus {
    /// Where the replies come from.
    #[serde(default)]
    pub source: Option<String>,
    /// The cases.
    pub cases: Vec<Case>,
    /// The limits the legitimate steps stay within (informational here).
    #[serde(default)]
    pub policy_assumptions: Option<serde_json::Value>,
}

/// One case: a fresh hsmd with one secret, and its steps.
#[derive(Debug, Deserialize)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: Option<String>,
    /// The plain 32-byte `hsm_secret`, hex.
    #[serde(default)]
    pub hsm_secret: Option<String>,
    /// The exact `hsm_secret` file bytes, hex (mnemonic format); wins over `hsm_secret`.
    #[serde(default)]
    pub hsm_secret_file: Option<String>,
    /// The passphrase the case's `hsmd_init` carries (already in the request bytes).
    #[serde(default)]
    pub passphrase: Option<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// What hsmd did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It answered on the same fd.
    Reply,
    /// It closed that client without replying.
    ClientClosed,
    /// It exited.
    HsmdExited,
    /// Neither answer nor close within the timeout.
    NoReply,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Reply => "reply",
            Outcome::ClientClosed => "client_closed",
            Outcome::HsmdExited => "hsmd_exited",
            Outcome::NoReply => "no_reply",
        })
    }
}

/// A recorded `status_fail`.
#[derive(Clone, Debug, Deserialize)]
pub struct StatusFailRecord {
    /// `status_failreason`.
    #[serde(default)]
    pub reason: Option<u8>,
    /// The message.
    #[serde(default)]
    pub message: Option<String>,
}

/// What followed a reply when hsmd exited right after it (`hsmd_init_reply_failure`).
#[derive(Clone, Debug, Deserialize)]
pub struct ThenExited {
    /// The exit status.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// The last `status_fail`.
    #[serde(default)]
    pub status_fail: Option<StatusFailRecord>,
}

/// One step: a request on one fd and its recorded outcome.
#[derive(Debug, Deserialize)]
pub struct Step {
    /// 0 = master; N = the N-th client handed out in this case.
    pub client: u64,
    /// Request hex (type + body).
    pub request: String,
    /// Request name, for messages.
    #[serde(default)]
    pub request_name: Option<String>,
    /// Recorded outcome (absent on refused steps).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Recorded reply hex.
    #[serde(default)]
    pub reply: Option<String>,
    /// Reply name, for messages.
    #[serde(default)]
    pub reply_name: Option<String>,
    /// Exit status for `hsmd_exited`.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// Description of the `hsmstatus_client_bad_request`, if one was sent.
    #[serde(default)]
    pub bad_request: Option<String>,
    /// The description is not reproducible (only the outcome counts).
    #[serde(default)]
    pub bad_request_unstable: bool,
    /// The client number this step's `hsmd_client_hsmfd` reply created.
    #[serde(default)]
    pub new_client: Option<u64>,
    /// The `status_fail` before the exit.
    #[serde(default)]
    pub status_fail: Option<StatusFailRecord>,
    /// Exit right after the reply.
    #[serde(default)]
    pub then_exited: Option<ThenExited>,
    /// `"refused"` on steps a validating signer must refuse.
    #[serde(default)]
    pub expected: Option<String>,
    /// The rule a refusal cites.
    #[serde(default)]
    pub rule: Option<String>,
    /// How a refusal shows.
    #[serde(default)]
    pub expected_outcome: Option<Outcome>,
    /// The reply a refusal gets, when it is a reply (e.g. `approved = false`).
    #[serde(default)]
    pub expected_reply: Option<String>,
    /// What Core Lightning did with a refused step.
    #[serde(default)]
    pub cln_outcome: Option<Outcome>,
    /// Core Lightning's reply to a refused step.
    #[serde(default)]
    pub cln_reply: Option<String>,
    /// Core Lightning's exit status on a refused step.
    #[serde(default)]
    pub cln_exit_status: Option<i32>,
    /// Core Lightning's bad-request description on a refused step.
    #[serde(default)]
    pub cln_bad_request: Option<String>,
    /// Core Lightning's `status_fail` on a refused step.
    #[serde(default)]
    pub cln_status_fail: Option<StatusFailRecord>,
    /// A legitimate step after a refused one.
    #[serde(default)]
    pub after_attack: bool,
    /// A note.
    #[serde(default)]
    pub comment: Option<String>,
}

/// What a replayed step must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// A reply with exactly these bytes; with `then_exits`, the proxy exits right after.
    Reply {
        /// The reply.
        bytes: Vec<u8>,
        /// The process exits (non-zero, after a `status_fail`) right after it.
        then_exits: bool,
    },
    /// The client is closed without a reply.
    ClientClosed {
        /// A `hsmstatus_client_bad_request` naming the client and carrying the request must
        /// be sent first.
        bad_request: bool,
        /// Its description must contain this (the rule of a refusal).
        must_name: Option<String>,
    },
    /// The proxy sends `status_fail` and exits with a non-zero status.
    Exited {
        /// The `status_fail` message must contain this (the rule of a refusal).
        must_name: Option<String>,
    },
    /// No reply and no close within the step timeout.
    NoReply,
}

/// A step that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

fn unhex(what: &str, s: &str) -> Result<Vec<u8>, StepError> {
    hex::decode(s).map_err(|e| StepError(format!("{what} is not hex: {e}")))
}

impl Step {
    /// The request bytes.
    pub fn request_bytes(&self) -> Result<Vec<u8>, StepError> {
        unhex("request", &self.request)
    }

    /// Whether a validating signer must refuse this step.
    pub fn is_refusal(&self) -> bool {
        self.expected.as_deref() == Some("refused")
    }

    /// What this step must show: with `enforcing` (a policy is in force), a refused step
    /// must be refused as `expected_outcome` says; otherwise every step must match Core
    /// Lightning's recorded outcome (`cln_*` for refused steps).
    pub fn expectation(&self, enforcing: bool) -> Result<Expectation, StepError> {
        if self.is_refusal() {
            if enforcing {
                let rule = self.rule.clone();
                return match self.expected_outcome {
                    Some(Outcome::ClientClosed) => Ok(Expectation::ClientClosed {
                        bad_request: true,
                        must_name: rule,
                    }),
                    Some(Outcome::HsmdExited) => Ok(Expectation::Exited { must_name: rule }),
                    Some(Outcome::Reply) => {
                        let hex = self.expected_reply.as_deref().ok_or_else(|| {
                            StepError(
                                "refused step with expected_outcome reply has no expected_reply"
                                    .into(),
                            )
                        })?;
                        Ok(Expectation::Reply {
                            bytes: unhex("expected_reply", hex)?,
                            then_exits: false,
                        })
                    }
                    Some(Outcome::NoReply) => Ok(Expectation::NoReply),
                    None => Err(StepError("refused step without expected_outcome".into())),
                };
            }
            return recorded(
                self.cln_outcome,
                self.cln_reply.as_deref(),
                self.cln_bad_request.is_some(),
                false,
            );
        }
        let mut e = recorded(
            self.outcome,
            self.reply.as_deref(),
            self.bad_request.is_some(),
            self.then_exited.is_some(),
        )?;
        if let Expectation::ClientClosed { bad_request, .. } = &mut e {
            // An unstable description still came in a bad-request message.
            *bad_request |= self.bad_request_unstable;
        }
        Ok(e)
    }

    /// A short label for messages: `client N request_name`.
    pub fn label(&self) -> String {
        let name = self.request_name.clone().unwrap_or_else(|| {
            self.request
                .get(..4)
                .map_or("?".into(), |t| format!("type 0x{t}"))
        });
        format!("client {} {name}", self.client)
    }
}

fn recorded(
    outcome: Option<Outcome>,
    reply: Option<&str>,
    bad_request: bool,
    then_exits: bool,
) -> Result<Expectation, StepError> {
    match outcome {
        Some(Outcome::Reply) => {
            let hex = reply.ok_or_else(|| StepError("outcome reply without a reply".into()))?;
            Ok(Expectation::Reply {
                bytes: unhex("reply", hex)?,
                then_exits,
            })
        }
        Some(Outcome::ClientClosed) => Ok(Expectation::ClientClosed {
            bad_request,
            must_name: None,
        }),
        Some(Outcome::HsmdExited) => Ok(Expectation::Exited { must_name: None }),
        Some(Outcome::NoReply) => Ok(Expectation::NoReply),
        None => Err(StepError("step without an outcome".into())),
    }
}

impl Case {
    /// The bytes of the `hsm_secret` file: `hsm_secret_file` if given, else `hsm_secret`.
    pub fn secret_file(&self) -> Result<Vec<u8>, StepError> {
        match (&self.hsm_secret_file, &self.hsm_secret) {
            (Some(f), _) => unhex("hsm_secret_file", f),
            (None, Some(s)) => unhex("hsm_secret", s),
            (None, None) => Err(StepError(
                "case has neither hsm_secret nor hsm_secret_file".into(),
            )),
        }
    }
}

impl Corpus {
    /// Reads and parses a corpus file.
    pub fn load(path: &Path) -> Result<Corpus, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(json: &str) -> Step {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn recorded_outcomes() {
        let s = step(
            r#"{"client":0,"request":"0001","outcome":"reply","reply":"0064","exit_status":null,"bad_request":null}"#,
        );
        assert_eq!(
            s.expectation(false).unwrap(),
            Expectation::Reply {
                bytes: vec![0, 100],
                then_exits: false
            }
        );
        let s = step(
            r#"{"client":1,"request":"0001","outcome":"client_closed","reply":null,"bad_request":"\u0018","bad_request_unstable":true}"#,
        );
        assert_eq!(
            s.expectation(true).unwrap(),
            Expectation::ClientClosed {
                bad_request: true,
                must_name: None
            }
        );
        let s =
            step(r#"{"client":1,"request":"0012","outcome":"client_closed","bad_request":null}"#);
        assert_eq!(
            s.expectation(false).unwrap(),
            Expectation::ClientClosed {
                bad_request: false,
                must_name: None
            }
        );
    }

    #[test]
    fn refused_steps_depend_on_mode() {
        let s = step(
            r#"{"client":2,"request":"0013","expected":"refused","rule":"commitment-holder-not-revoked",
            "expected_outcome":"client_closed","cln_outcome":"reply","cln_reply":"0070"}"#,
        );
        assert_eq!(
            s.expectation(true).unwrap(),
            Expectation::ClientClosed {
                bad_request: true,
                must_name: Some("commitment-holder-not-revoked".into())
            }
        );
        assert_eq!(
            s.expectation(false).unwrap(),
            Expectation::Reply {
                bytes: vec![0, 0x70],
                then_exits: false
            }
        );
        let s = step(
            r#"{"client":0,"request":"0026","expected":"refused","rule":"invoice-not-expired",
            "expected_outcome":"reply","expected_reply":"008a00","cln_outcome":"reply","cln_reply":"008a01"}"#,
        );
        assert_eq!(
            s.expectation(true).unwrap(),
            Expectation::Reply {
                bytes: vec![0, 0x8a, 0],
                then_exits: false
            }
        );
    }
}
