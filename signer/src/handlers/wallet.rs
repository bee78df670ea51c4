//! The on-chain wallet: PSBT signatures for withdrawals, anchor spends and HTLC transactions mingled with wallet inputs, and scripts of outputs to us.

use crate::error::{Result, SignerError};
use crate::handler::Req;
use protocol::msgs::*;
use protocol::Message;

/// Answers `SignWithdrawal`.
pub(crate) fn sign_withdrawal(_r: &mut Req<'_>, _m: SignWithdrawal) -> Result<Message> {
    Err(SignerError::BadRequest("sign_withdrawal is not supported yet".into()))
}

/// Answers `SignAnchorspend`.
pub(crate) fn sign_anchorspend(_r: &mut Req<'_>, _m: SignAnchorspend) -> Result<Message> {
    Err(SignerError::BadRequest("sign_anchorspend is not supported yet".into()))
}

/// Answers `SignHtlcTxMingle`.
pub(crate) fn sign_htlc_tx_mingle(_r: &mut Req<'_>, _m: SignHtlcTxMingle) -> Result<Message> {
    Err(SignerError::BadRequest("sign_htlc_tx_mingle is not supported yet".into()))
}

/// Answers `GetOutputScriptpubkey`.
pub(crate) fn get_output_scriptpubkey(_r: &mut Req<'_>, _m: GetOutputScriptpubkey) -> Result<Message> {
    Err(SignerError::BadRequest("get_output_scriptpubkey is not supported yet".into()))
}
