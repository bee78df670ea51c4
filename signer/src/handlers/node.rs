//! Requests signed or answered with the node key or the wallet's BIP32 keys: ECDH, derived secrets, messages, invoices, BOLT 12, gossip, liquidity ads.

use crate::error::{Result, SignerError};
use crate::handler::Req;
use protocol::msgs::*;
use protocol::Message;

/// Answers `EcdhReq`.
pub(crate) fn ecdh(_r: &mut Req<'_>, _m: EcdhReq) -> Result<Message> {
    Err(SignerError::BadRequest("ecdh is not supported yet".into()))
}

/// Answers `DeriveSecret`.
pub(crate) fn derive_secret(_r: &mut Req<'_>, _m: DeriveSecret) -> Result<Message> {
    Err(SignerError::BadRequest("derive_secret is not supported yet".into()))
}

/// Answers `CheckPubkey`.
pub(crate) fn check_pubkey(_r: &mut Req<'_>, _m: CheckPubkey) -> Result<Message> {
    Err(SignerError::BadRequest("check_pubkey is not supported yet".into()))
}

/// Answers `CheckBip86Pubkey`.
pub(crate) fn check_bip86_pubkey(_r: &mut Req<'_>, _m: CheckBip86Pubkey) -> Result<Message> {
    Err(SignerError::BadRequest("check_bip86_pubkey is not supported yet".into()))
}

/// Answers `SignMessage`.
pub(crate) fn sign_message(_r: &mut Req<'_>, _m: SignMessage) -> Result<Message> {
    Err(SignerError::BadRequest("sign_message is not supported yet".into()))
}

/// Answers `Bip137SignMessage`.
pub(crate) fn bip137_sign_message(_r: &mut Req<'_>, _m: Bip137SignMessage) -> Result<Message> {
    Err(SignerError::BadRequest("bip137_sign_message is not supported yet".into()))
}

/// Answers `SignInvoice`.
pub(crate) fn sign_invoice(_r: &mut Req<'_>, _m: SignInvoice) -> Result<Message> {
    Err(SignerError::BadRequest("sign_invoice is not supported yet".into()))
}

/// Answers `SignBolt12`.
pub(crate) fn sign_bolt12(_r: &mut Req<'_>, _m: SignBolt12) -> Result<Message> {
    Err(SignerError::BadRequest("sign_bolt12 is not supported yet".into()))
}

/// Answers `SignBolt122`.
pub(crate) fn sign_bolt12_2(_r: &mut Req<'_>, _m: SignBolt122) -> Result<Message> {
    Err(SignerError::BadRequest("sign_bolt12_2 is not supported yet".into()))
}

/// Answers `NodeAnnouncementSigReq`.
pub(crate) fn node_announcement_sig(_r: &mut Req<'_>, _m: NodeAnnouncementSigReq) -> Result<Message> {
    Err(SignerError::BadRequest("node_announcement_sig is not supported yet".into()))
}

/// Answers `CannouncementSigReq`.
pub(crate) fn cannouncement_sig(_r: &mut Req<'_>, _m: CannouncementSigReq) -> Result<Message> {
    Err(SignerError::BadRequest("cannouncement_sig is not supported yet".into()))
}

/// Answers `SignAnyCannouncementReq`.
pub(crate) fn sign_any_cannouncement(_r: &mut Req<'_>, _m: SignAnyCannouncementReq) -> Result<Message> {
    Err(SignerError::BadRequest("sign_any_cannouncement is not supported yet".into()))
}

/// Answers `CupdateSigReq`.
pub(crate) fn cupdate_sig(_r: &mut Req<'_>, _m: CupdateSigReq) -> Result<Message> {
    Err(SignerError::BadRequest("cupdate_sig is not supported yet".into()))
}

/// Answers `SignOptionWillFundOffer`.
pub(crate) fn sign_option_will_fund_offer(_r: &mut Req<'_>, _m: SignOptionWillFundOffer) -> Result<Message> {
    Err(SignerError::BadRequest("sign_option_will_fund_offer is not supported yet".into()))
}
