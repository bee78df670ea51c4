//! What each request type is, beyond its fields, in one place: how quickly it is answered,
//! whether it changes the signer's state, whether it may wait for the operator, and whether
//! it is a payment preapproval (which the proxy may answer again from its cache); the
//! capabilities the init reply advertises; and the peek at a frame's type that every layer
//! uses. Adding a message means adding it to the csv, to [`crate::permissions`], and here.

use crate::msgs::*;

/// The message type of a frame (type + body), hsmd's or a BOLT message's: its first two
/// bytes, big-endian.
pub fn peek_type(frame: &[u8]) -> Option<u16> {
    frame.get(..2).map(|t| u16::from_be_bytes([t[0], t[1]]))
}

/// The request types advertised in `hsmd_init_reply_v4`, in Core Lightning's order.
pub const CAPABILITIES: &[u32] = &[
    CheckPubkey::TYPE as u32,
    CheckBip86Pubkey::TYPE as u32,
    SignAnyDelayedPaymentToUs::TYPE as u32,
    SignAnchorspend::TYPE as u32,
    SignHtlcTxMingle::TYPE as u32,
    SignSpliceTx::TYPE as u32,
    CheckOutpoint::TYPE as u32,
    ForgetChannel::TYPE as u32,
    RevokeCommitmentTx::TYPE as u32,
    SignBolt122::TYPE as u32,
    Bip137SignMessage::TYPE as u32,
    PreapproveInvoiceCheck::TYPE as u32,
    PreapproveKeysendCheck::TYPE as u32,
];

/// What a request type is, for the layers that schedule, store and cache it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Always answered in microseconds: a fixed, small amount of hashing and curve
    /// arithmetic, no transaction or PSBT to walk, no wallet to scan, no state to write.
    pub quick: bool,
    /// May change the signer's state (so it runs in a write transaction, its reply cached).
    pub changes_state: bool,
    /// A payment preapproval: may wait for the operator's decision (so it must hold neither
    /// the store's writer nor a thread while it waits), and an approval may be answered
    /// again from the proxy's cache.
    pub preapproval: bool,
}

/// The facts of request type `t` (all false for a type that is not a request we know).
pub fn facts(t: u16) -> Facts {
    let preapproval = matches!(
        t,
        PreapproveInvoice::TYPE
            | PreapproveKeysend::TYPE
            | PreapproveInvoiceCheck::TYPE
            | PreapproveKeysendCheck::TYPE
    );
    let changes_state = preapproval
        || matches!(
            t,
            NewChannel::TYPE
                | SetupChannel::TYPE
                | ForgetChannel::TYPE
                | LockOutpoint::TYPE
                | ValidateCommitmentTx::TYPE
                | RevokeCommitmentTx::TYPE
                | ValidateRevocation::TYPE
                | SignRemoteCommitmentTx::TYPE
                | SignCommitmentTx::TYPE
                | SignMutualCloseTx::TYPE
        );
    let quick = matches!(
        t,
        EcdhReq::TYPE
            | GetPerCommitmentPoint::TYPE
            | CheckFutureSecret::TYPE
            | GetChannelBasepoints::TYPE
            | SignInvoice::TYPE
            | CupdateSigReq::TYPE
            | NodeAnnouncementSigReq::TYPE
            | SignMessage::TYPE
            | Bip137SignMessage::TYPE
            | GetOutputScriptpubkey::TYPE
            | DeriveSecret::TYPE
            | CheckPubkey::TYPE
            | CheckBip86Pubkey::TYPE
            | ClientHsmfd::TYPE
    );
    Facts {
        quick,
        changes_state,
        preapproval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_core_lightnings_numbers() {
        assert_eq!(
            CAPABILITIES,
            &[28, 56, 142, 147, 149, 29, 32, 34, 40, 41, 45, 51, 52]
        );
    }

    #[test]
    fn facts_agree_with_each_other() {
        for t in 0..=u16::MAX {
            let f = facts(t);
            assert!(!(f.quick && f.changes_state), "type {t}");
            assert!(!f.preapproval || f.changes_state, "type {t}");
        }
        assert!(facts(EcdhReq::TYPE).quick);
        assert!(facts(ValidateRevocation::TYPE).changes_state);
        assert!(facts(PreapproveKeysend::TYPE).preapproval);
        assert_eq!(facts(SignWithdrawal::TYPE), Facts::default());
        assert_eq!(peek_type(&[0, 1, 9]), Some(1));
        assert_eq!(peek_type(&[0]), None);
    }
}
