//! What a request can fail with, and what each failure means to the caller.

use std::fmt;

/// The status_fail reasons hsmd gives (a fault of the caller's, an internal error).
pub use protocol::msgs::{FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};

/// Why the signer did not answer a request.
///
/// hsmd's protocol has no error reply: the proxy reports `BadRequest` and `Policy` from a
/// client with `hsmstatus_client_bad_request` and closes that client, and from the master with
/// `status_fail` and exits; `Fatal` stops the proxy whoever asked; `Temporary` is retried.
/// None of them changed any state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerError {
    /// The request is malformed, not allowed to this client, or makes no sense; the
    /// description says which (in Core Lightning's words where it has some).
    BadRequest(String),
    /// A policy rule refused the request; nothing was signed.
    Policy {
        /// The rule's name, e.g. `commitment-holder-not-revoked`.
        rule: &'static str,
        /// What exactly was wrong.
        detail: String,
    },
    /// Core Lightning's hsmd would stop serving altogether (e.g. a request before
    /// `hsmd_init`, a wallet index >= 2^31, a `check_pubkey` mismatch).
    Fatal {
        /// The `status_fail` reason code.
        reason: u8,
        /// The `status_fail` message.
        message: String,
    },
    /// A passing condition (e.g. an approval not decided yet, storage busy): ask again later.
    Temporary(String),
    /// The state could not be read or committed; nothing was answered.
    Storage(String),
    /// The request waits for the operator's decision, until `until` at the latest: the
    /// daemon answers it when the decision comes (see `lanes`). Never sent over the link.
    Parked {
        /// When the request is answered as undecided.
        until: std::time::Instant,
    },
}

impl SignerError {
    /// A request Core Lightning would have failed to parse.
    pub fn malformed(detail: impl fmt::Display) -> Self {
        SignerError::BadRequest(format!("could not parse request: {detail}"))
    }

    /// The error text sent back over the link: `policy <rule>: ...` for policy refusals, so
    /// the proxy and the operator see which rule fired.
    pub fn description(&self) -> String {
        match self {
            SignerError::BadRequest(d) => d.clone(),
            SignerError::Policy { rule, detail } => format!("policy {rule}: {detail}"),
            SignerError::Fatal { message, .. } => message.clone(),
            SignerError::Temporary(d) => format!("temporary failure: {d}"),
            SignerError::Storage(d) => format!("storage failure: {d}"),
            SignerError::Parked { .. } => "waiting for the operator's decision".into(),
        }
    }

    /// The policy rule that refused, if this is a policy refusal.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            SignerError::Policy { rule, .. } => Some(rule),
            _ => None,
        }
    }
}

impl fmt::Display for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

impl std::error::Error for SignerError {}

/// A result of the signer.
pub type Result<T> = std::result::Result<T, SignerError>;
