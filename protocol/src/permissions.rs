//! Client permissions (`HSM_PERM_*`) and which permission each request needs, exactly as
//! Core Lightning's hsmd maps them; our own extension (`vls_check_request`) needs the master's.

use crate::msgs::*;
use std::fmt;

/// A client's permission bits, as given in `hsmd_client_hsmfd`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u64);

impl Permissions {
    /// No permission.
    pub const NONE: Permissions = Permissions(0);
    /// `HSM_PERM_ECDH`: ecdh_req.
    pub const ECDH: Permissions = Permissions(1);
    /// `HSM_PERM_SIGN_GOSSIP`: channel and node announcements, channel updates.
    pub const SIGN_GOSSIP: Permissions = Permissions(2);
    /// `HSM_PERM_SIGN_ONCHAIN_TX`: onchaind's sweeps of this client's channel.
    pub const SIGN_ONCHAIN_TX: Permissions = Permissions(4);
    /// `HSM_PERM_COMMITMENT_POINT`: per-commitment points, future secrets, setup_channel.
    pub const COMMITMENT_POINT: Permissions = Permissions(8);
    /// `HSM_PERM_SIGN_REMOTE_TX`: remote commitments and HTLCs, validation, revocation.
    pub const SIGN_REMOTE_TX: Permissions = Permissions(16);
    /// `HSM_PERM_SIGN_CLOSING_TX`: mutual close.
    pub const SIGN_CLOSING_TX: Permissions = Permissions(32);
    /// `HSM_PERM_SIGN_WILL_FUND_OFFER`: liquidity ads.
    pub const SIGN_WILL_FUND_OFFER: Permissions = Permissions(64);
    /// `HSM_PERM_SIGN_SPLICE_TX`: splices.
    pub const SIGN_SPLICE_TX: Permissions = Permissions(128);
    /// `HSM_PERM_LOCK_OUTPOINT`: check_outpoint, lock_outpoint.
    pub const LOCK_OUTPOINT: Permissions = Permissions(256);
    /// `HSM_PERM_MASTER`: everything lightningd itself asks.
    pub const MASTER: Permissions = Permissions(1024);

    /// What lightningd's own fd (fd 3) has: MASTER | SIGN_GOSSIP | ECDH.
    pub const LIGHTNINGD: Permissions = Permissions(1024 | 2 | 1);
    /// What lightningd gives connectd.
    pub const CONNECTD: Permissions = Permissions(1);
    /// What lightningd gives openingd.
    pub const OPENINGD: Permissions = Permissions(8 | 16);
    /// What lightningd gives dualopend.
    pub const DUALOPEND: Permissions = Permissions(8 | 16 | 64 | 256);
    /// What lightningd gives channeld.
    pub const CHANNELD: Permissions = Permissions(1 | 2 | 4 | 8 | 16 | 32 | 128 | 256);
    /// What lightningd gives closingd.
    pub const CLOSINGD: Permissions = Permissions(8 | 32);
    /// What lightningd gives onchaind.
    pub const ONCHAIND: Permissions = Permissions(4 | 8);

    /// The permissions with these bits (unknown bits are kept and grant nothing).
    pub const fn from_bits(bits: u64) -> Self {
        Permissions(bits)
    }
    /// The bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }
    /// Both sets.
    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }
    /// Whether a client with these permissions may send a request of type `msg_type`.
    /// Replies, status messages and unknown types are allowed to nobody.
    pub fn allows(self, msg_type: u16) -> bool {
        match required(msg_type) {
            Some(p) => self.0 & p.0 != 0,
            None => false,
        }
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({:#x})", self.0)
    }
}

/// The permission a request of type `msg_type` needs, or `None` if no client may send it
/// (a reply, a status message, an unknown type).
pub fn required(msg_type: u16) -> Option<Permissions> {
    Some(match msg_type {
        EcdhReq::TYPE => Permissions::ECDH,
        CannouncementSigReq::TYPE | CupdateSigReq::TYPE | NodeAnnouncementSigReq::TYPE => {
            Permissions::SIGN_GOSSIP
        }
        SignDelayedPaymentToUs::TYPE | SignRemoteHtlcToUs::TYPE | SignPenaltyToUs::TYPE => {
            Permissions::SIGN_ONCHAIN_TX
        }
        GetPerCommitmentPoint::TYPE | CheckFutureSecret::TYPE | SetupChannel::TYPE => {
            Permissions::COMMITMENT_POINT
        }
        SignRemoteCommitmentTx::TYPE
        | SignRemoteHtlcTx::TYPE
        | ValidateCommitmentTx::TYPE
        | RevokeCommitmentTx::TYPE
        | ValidateRevocation::TYPE => Permissions::SIGN_REMOTE_TX,
        SignMutualCloseTx::TYPE => Permissions::SIGN_CLOSING_TX,
        SignSpliceTx::TYPE => Permissions::SIGN_SPLICE_TX,
        SignOptionWillFundOffer::TYPE => Permissions::SIGN_WILL_FUND_OFFER,
        CheckOutpoint::TYPE | LockOutpoint::TYPE => Permissions::LOCK_OUTPOINT,
        Init::TYPE
        | DevPreinit::TYPE
        | NewChannel::TYPE
        | ForgetChannel::TYPE
        | ClientHsmfd::TYPE
        | SignWithdrawal::TYPE
        | SignInvoice::TYPE
        | SignCommitmentTx::TYPE
        | GetChannelBasepoints::TYPE
        | DevMemleak::TYPE
        | SignMessage::TYPE
        | Bip137SignMessage::TYPE
        | GetOutputScriptpubkey::TYPE
        | SignBolt12::TYPE
        | SignBolt122::TYPE
        | PreapproveInvoice::TYPE
        | PreapproveKeysend::TYPE
        | PreapproveInvoiceCheck::TYPE
        | PreapproveKeysendCheck::TYPE
        | DeriveSecret::TYPE
        | CheckPubkey::TYPE
        | CheckBip86Pubkey::TYPE
        | SignAnyPenaltyToUs::TYPE
        | SignAnyDelayedPaymentToUs::TYPE
        | SignAnyRemoteHtlcToUs::TYPE
        | SignAnyLocalHtlcTx::TYPE
        | SignAnchorspend::TYPE
        | SignHtlcTxMingle::TYPE
        | SignAnyCannouncementReq::TYPE => Permissions::MASTER,
        // Not Core Lightning's: a dry run of a request lightningd itself would send.
        VlsCheckRequest::TYPE => Permissions::MASTER,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lightningd_sets() {
        assert!(Permissions::LIGHTNINGD.allows(EcdhReq::TYPE));
        assert!(!Permissions::LIGHTNINGD.allows(GetPerCommitmentPoint::TYPE));
        assert!(!Permissions::LIGHTNINGD.allows(CheckOutpoint::TYPE));
        assert!(Permissions::OPENINGD.allows(SignRemoteCommitmentTx::TYPE));
        assert!(!Permissions::OPENINGD.allows(EcdhReq::TYPE));
        assert!(!Permissions::CHANNELD.allows(SignWithdrawal::TYPE));
        assert_eq!(Permissions::CHANNELD.bits(), 447);
        assert_eq!(Permissions::DUALOPEND.bits(), 344);
        assert!(!Permissions::from_bits(u64::MAX).allows(EcdhResp::TYPE));
        assert!(!Permissions::from_bits(u64::MAX).allows(0xffff));
    }

    #[test]
    fn only_the_master_may_ask_for_a_dry_run() {
        assert!(Permissions::LIGHTNINGD.allows(VlsCheckRequest::TYPE));
        for p in [
            Permissions::CONNECTD,
            Permissions::OPENINGD,
            Permissions::DUALOPEND,
            Permissions::CHANNELD,
            Permissions::CLOSINGD,
            Permissions::ONCHAIND,
        ] {
            assert!(!p.allows(VlsCheckRequest::TYPE), "{p:?}");
        }
        assert!(!Permissions::LIGHTNINGD.allows(VlsCheckRequestReply::TYPE));
    }
}
