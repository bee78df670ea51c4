//! Signatures on transactions that sweep channel outputs after a unilateral close (onchaind's requests and their sign_any_* forms from lightningd).

use crate::error::{Result, SignerError};
use crate::handler::Req;
use protocol::msgs::*;
use protocol::Message;

/// Answers `SignDelayedPaymentToUs`.
pub(crate) fn sign_delayed_payment_to_us(_r: &mut Req<'_>, _m: SignDelayedPaymentToUs) -> Result<Message> {
    Err(SignerError::BadRequest("sign_delayed_payment_to_us is not supported yet".into()))
}

/// Answers `SignRemoteHtlcToUs`.
pub(crate) fn sign_remote_htlc_to_us(_r: &mut Req<'_>, _m: SignRemoteHtlcToUs) -> Result<Message> {
    Err(SignerError::BadRequest("sign_remote_htlc_to_us is not supported yet".into()))
}

/// Answers `SignPenaltyToUs`.
pub(crate) fn sign_penalty_to_us(_r: &mut Req<'_>, _m: SignPenaltyToUs) -> Result<Message> {
    Err(SignerError::BadRequest("sign_penalty_to_us is not supported yet".into()))
}

/// Answers `SignAnyDelayedPaymentToUs`.
pub(crate) fn sign_any_delayed_payment_to_us(_r: &mut Req<'_>, _m: SignAnyDelayedPaymentToUs) -> Result<Message> {
    Err(SignerError::BadRequest("sign_any_delayed_payment_to_us is not supported yet".into()))
}

/// Answers `SignAnyRemoteHtlcToUs`.
pub(crate) fn sign_any_remote_htlc_to_us(_r: &mut Req<'_>, _m: SignAnyRemoteHtlcToUs) -> Result<Message> {
    Err(SignerError::BadRequest("sign_any_remote_htlc_to_us is not supported yet".into()))
}

/// Answers `SignAnyPenaltyToUs`.
pub(crate) fn sign_any_penalty_to_us(_r: &mut Req<'_>, _m: SignAnyPenaltyToUs) -> Result<Message> {
    Err(SignerError::BadRequest("sign_any_penalty_to_us is not supported yet".into()))
}

/// Answers `SignAnyLocalHtlcTx`.
pub(crate) fn sign_any_local_htlc_tx(_r: &mut Req<'_>, _m: SignAnyLocalHtlcTx) -> Result<Message> {
    Err(SignerError::BadRequest("sign_any_local_htlc_tx is not supported yet".into()))
}
