//! One function per request type, grouped by what they touch. Dispatch is one line per type.

mod channel;
mod commitment;
mod forwards;
mod node;
mod onchain;
mod payments;
mod wallet;

use crate::error::{Result, SignerError};
use crate::handler::Req;
use protocol::Message;

/// Answers a decoded request. `Init` and `ClientHsmfd` are answered by [`crate::Signer`]
/// itself; replies, status messages and unknown types never reach here (no client has the
/// permission to send them).
pub(crate) fn dispatch(r: &mut Req<'_>, msg: Message) -> Result<Message> {
    match msg {
        Message::EcdhReq(m) => node::ecdh(r, m),
        Message::DeriveSecret(m) => node::derive_secret(r, m),
        Message::CheckPubkey(m) => node::check_pubkey(r, m),
        Message::CheckBip86Pubkey(m) => node::check_bip86_pubkey(r, m),
        Message::SignMessage(m) => node::sign_message(r, m),
        Message::Bip137SignMessage(m) => node::bip137_sign_message(r, m),
        Message::SignInvoice(m) => node::sign_invoice(r, m),
        Message::SignBolt12(m) => node::sign_bolt12(r, m),
        Message::SignBolt122(m) => node::sign_bolt12_2(r, m),
        Message::NodeAnnouncementSigReq(m) => node::node_announcement_sig(r, m),
        Message::CannouncementSigReq(m) => node::cannouncement_sig(r, m),
        Message::SignAnyCannouncementReq(m) => node::sign_any_cannouncement(r, m),
        Message::CupdateSigReq(m) => node::cupdate_sig(r, m),
        Message::SignOptionWillFundOffer(m) => node::sign_option_will_fund_offer(r, m),

        Message::GetChannelBasepoints(m) => channel::get_channel_basepoints(r, m),
        Message::NewChannel(m) => channel::new_channel(r, m),
        Message::SetupChannel(m) => channel::setup_channel(r, m),
        Message::ForgetChannel(m) => channel::forget_channel(r, m),
        Message::CheckOutpoint(m) => channel::check_outpoint(r, m),
        Message::LockOutpoint(m) => channel::lock_outpoint(r, m),
        Message::GetPerCommitmentPoint(m) => channel::get_per_commitment_point(r, m),
        Message::CheckFutureSecret(m) => channel::check_future_secret(r, m),
        Message::ValidateCommitmentTx(m) => channel::validate_commitment_tx(r, m),
        Message::RevokeCommitmentTx(m) => channel::revoke_commitment_tx(r, m),
        Message::ValidateRevocation(m) => channel::validate_revocation(r, m),

        Message::SignRemoteCommitmentTx(m) => commitment::sign_remote_commitment_tx(r, m),
        Message::SignRemoteHtlcTx(m) => commitment::sign_remote_htlc_tx(r, m),
        Message::SignCommitmentTx(m) => commitment::sign_commitment_tx(r, m),
        Message::SignMutualCloseTx(m) => commitment::sign_mutual_close_tx(r, m),
        Message::SignSpliceTx(m) => commitment::sign_splice_tx(r, m),

        Message::SignDelayedPaymentToUs(m) => onchain::sign_delayed_payment_to_us(r, m),
        Message::SignRemoteHtlcToUs(m) => onchain::sign_remote_htlc_to_us(r, m),
        Message::SignPenaltyToUs(m) => onchain::sign_penalty_to_us(r, m),
        Message::SignAnyDelayedPaymentToUs(m) => onchain::sign_any_delayed_payment_to_us(r, m),
        Message::SignAnyRemoteHtlcToUs(m) => onchain::sign_any_remote_htlc_to_us(r, m),
        Message::SignAnyPenaltyToUs(m) => onchain::sign_any_penalty_to_us(r, m),
        Message::SignAnyLocalHtlcTx(m) => onchain::sign_any_local_htlc_tx(r, m),

        Message::SignWithdrawal(m) => wallet::sign_withdrawal(r, m),
        Message::SignAnchorspend(m) => wallet::sign_anchorspend(r, m),
        Message::SignHtlcTxMingle(m) => wallet::sign_htlc_tx_mingle(r, m),
        Message::GetOutputScriptpubkey(m) => wallet::get_output_scriptpubkey(r, m),

        Message::PreapproveInvoice(m) => payments::preapprove_invoice(r, m),
        Message::PreapproveKeysend(m) => payments::preapprove_keysend(r, m),
        Message::PreapproveInvoiceCheck(m) => payments::preapprove_invoice_check(r, m),
        Message::PreapproveKeysendCheck(m) => payments::preapprove_keysend_check(r, m),

        // Developer-only messages: this signer never runs in developer mode, so like Core
        // Lightning's hsmd without --developer it treats them as requests it cannot parse.
        m @ (Message::DevMemleak(_) | Message::DevPreinit(_)) => Err(SignerError::malformed(
            format!("{} is a developer-only request", m.name()),
        )),
        m => Err(SignerError::malformed(format!(
            "{} is not a request",
            m.name()
        ))),
    }
}
