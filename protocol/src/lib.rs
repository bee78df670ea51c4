//! Core Lightning's hsmd wire protocol, with no I/O runtime of its own.
//!
//! - [`msgs`]: every message of `hsmd_wire.csv` (and the status messages of fd 0) as a typed
//!   struct, and the [`Message`] enum with `decode` / `encode`;
//! - [`types`]: the strong field types and Core Lightning's composite encodings;
//! - [`codec`]: the bounds-checked field reader and the [`codec::Wire`] trait;
//! - [`frame`]: the 4-byte length prefix, read and written on blocking and tokio streams;
//! - [`permissions`]: the `HSM_PERM_*` bits and which message needs which;
//! - [`facts`]: what each request type is (quick, state-changing, a preapproval), the
//!   capabilities advertised, and [`facts::peek_type`];
//! - [`socket`]: an hsmd fd on tokio that wakes its task only for reads (runs in the
//!   caller's runtime);
//! - [`check`]: the answers of `vls_check_request`, our extension (would the signer sign
//!   this request of lightningd's?);
//! - [`error`]: typed decode and encode errors;
//! - [`json`]: JSON rendering of fields, for the decode tool and logs.

#[cfg(test)]
mod arb;
pub mod check;
pub mod codec;
pub mod error;
pub mod facts;
pub mod frame;
pub mod json;
pub mod msgs;
pub mod permissions;
#[cfg(feature = "tokio")]
pub mod socket;
pub mod types;

pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use facts::{facts, peek_type};
pub use msgs::Message;
pub use permissions::Permissions;
