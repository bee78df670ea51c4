//! Signatures on channel transactions spending the funding output: remote commitments and their HTLC transactions, our own commitment, mutual close, splice.

use crate::error::{Result, SignerError};
use crate::handler::Req;
use protocol::msgs::*;
use protocol::Message;

/// Answers `SignRemoteCommitmentTx`.
pub(crate) fn sign_remote_commitment_tx(_r: &mut Req<'_>, _m: SignRemoteCommitmentTx) -> Result<Message> {
    Err(SignerError::BadRequest("sign_remote_commitment_tx is not supported yet".into()))
}

/// Answers `SignRemoteHtlcTx`.
pub(crate) fn sign_remote_htlc_tx(_r: &mut Req<'_>, _m: SignRemoteHtlcTx) -> Result<Message> {
    Err(SignerError::BadRequest("sign_remote_htlc_tx is not supported yet".into()))
}

/// Answers `SignCommitmentTx`.
pub(crate) fn sign_commitment_tx(_r: &mut Req<'_>, _m: SignCommitmentTx) -> Result<Message> {
    Err(SignerError::BadRequest("sign_commitment_tx is not supported yet".into()))
}

/// Answers `SignMutualCloseTx`.
pub(crate) fn sign_mutual_close_tx(_r: &mut Req<'_>, _m: SignMutualCloseTx) -> Result<Message> {
    Err(SignerError::BadRequest("sign_mutual_close_tx is not supported yet".into()))
}

/// Answers `SignSpliceTx`.
pub(crate) fn sign_splice_tx(_r: &mut Req<'_>, _m: SignSpliceTx) -> Result<Message> {
    Err(SignerError::BadRequest("sign_splice_tx is not supported yet".into()))
}
