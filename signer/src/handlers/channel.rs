//! Channel lifecycle and the holder/counterparty commitment state machine: basepoints, setup, per-commitment points and secrets, validation and revocation.

use crate::error::{Result, SignerError};
use crate::handler::Req;
use protocol::msgs::*;
use protocol::Message;

/// Answers `GetChannelBasepoints`.
pub(crate) fn get_channel_basepoints(_r: &mut Req<'_>, _m: GetChannelBasepoints) -> Result<Message> {
    Err(SignerError::BadRequest("get_channel_basepoints is not supported yet".into()))
}

/// Answers `NewChannel`.
pub(crate) fn new_channel(_r: &mut Req<'_>, _m: NewChannel) -> Result<Message> {
    Err(SignerError::BadRequest("new_channel is not supported yet".into()))
}

/// Answers `SetupChannel`.
pub(crate) fn setup_channel(_r: &mut Req<'_>, _m: SetupChannel) -> Result<Message> {
    Err(SignerError::BadRequest("setup_channel is not supported yet".into()))
}

/// Answers `ForgetChannel`.
pub(crate) fn forget_channel(_r: &mut Req<'_>, _m: ForgetChannel) -> Result<Message> {
    Err(SignerError::BadRequest("forget_channel is not supported yet".into()))
}

/// Answers `CheckOutpoint`.
pub(crate) fn check_outpoint(_r: &mut Req<'_>, _m: CheckOutpoint) -> Result<Message> {
    Err(SignerError::BadRequest("check_outpoint is not supported yet".into()))
}

/// Answers `LockOutpoint`.
pub(crate) fn lock_outpoint(_r: &mut Req<'_>, _m: LockOutpoint) -> Result<Message> {
    Err(SignerError::BadRequest("lock_outpoint is not supported yet".into()))
}

/// Answers `GetPerCommitmentPoint`.
pub(crate) fn get_per_commitment_point(_r: &mut Req<'_>, _m: GetPerCommitmentPoint) -> Result<Message> {
    Err(SignerError::BadRequest("get_per_commitment_point is not supported yet".into()))
}

/// Answers `CheckFutureSecret`.
pub(crate) fn check_future_secret(_r: &mut Req<'_>, _m: CheckFutureSecret) -> Result<Message> {
    Err(SignerError::BadRequest("check_future_secret is not supported yet".into()))
}

/// Answers `ValidateCommitmentTx`.
pub(crate) fn validate_commitment_tx(_r: &mut Req<'_>, _m: ValidateCommitmentTx) -> Result<Message> {
    Err(SignerError::BadRequest("validate_commitment_tx is not supported yet".into()))
}

/// Answers `RevokeCommitmentTx`.
pub(crate) fn revoke_commitment_tx(_r: &mut Req<'_>, _m: RevokeCommitmentTx) -> Result<Message> {
    Err(SignerError::BadRequest("revoke_commitment_tx is not supported yet".into()))
}

/// Answers `ValidateRevocation`.
pub(crate) fn validate_revocation(_r: &mut Req<'_>, _m: ValidateRevocation) -> Result<Message> {
    Err(SignerError::BadRequest("validate_revocation is not supported yet".into()))
}
