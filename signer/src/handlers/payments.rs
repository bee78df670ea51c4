//! Payment preapproval: lightningd asks before it pays an invoice or sends a keysend.
//!
//! Core Lightning's hsmd approves every payment; the `_check` variants are answered with the
//! plain reply types (138 / 139), as hsmd does. The operator's limits and approval queue
//! decide here once configured.

use crate::error::Result;
use crate::handler::Req;
use protocol::msgs::*;
use protocol::Message;

/// Answers `PreapproveInvoice`.
pub(crate) fn preapprove_invoice(_r: &mut Req<'_>, _m: PreapproveInvoice) -> Result<Message> {
    Ok(PreapproveInvoiceReply::new(true).into())
}

/// Answers `PreapproveKeysend`.
pub(crate) fn preapprove_keysend(_r: &mut Req<'_>, _m: PreapproveKeysend) -> Result<Message> {
    Ok(PreapproveKeysendReply::new(true).into())
}

/// Answers `PreapproveInvoiceCheck` (with hsmd's reply type 138).
pub(crate) fn preapprove_invoice_check(
    _r: &mut Req<'_>,
    _m: PreapproveInvoiceCheck,
) -> Result<Message> {
    Ok(PreapproveInvoiceReply::new(true).into())
}

/// Answers `PreapproveKeysendCheck` (with hsmd's reply type 139).
pub(crate) fn preapprove_keysend_check(
    _r: &mut Req<'_>,
    _m: PreapproveKeysendCheck,
) -> Result<Message> {
    Ok(PreapproveKeysendReply::new(true).into())
}
