//! Typed calls: every hsmd request paired with the reply it gets, and helpers for the
//! messages a node sends all the time.
//!
//! [`Call`] ties a request struct of the `protocol` crate to its reply struct;
//! [`HsmClient::call`] encodes the request, sends it and decodes the reply, so a reply of
//! the wrong type or one that does not parse is a [`ClientError`], never a panic.

use crate::client::{ClientError, HsmClient};
use bitcoin::blockdata::constants::ChainHash;
use bitcoin::Network;
use protocol::msgs::*;
use protocol::types::{Bip32KeyVersion, BitcoinSignature, NodeId, Secret, WireString};
use protocol::{DecodeError, DecodeErrorKind, EncodeError};
use secp256k1::{ecdsa, PublicKey};

/// A request message and the reply it gets.
pub trait Call {
    /// The reply's struct.
    type Reply;
    /// The request's csv name.
    const NAME: &'static str;
    /// The reply's type number.
    const REPLY_TYPE: u16;
    /// The whole request (type + body).
    fn encode_request(&self) -> Result<Vec<u8>, EncodeError>;
    /// Decodes a whole reply (type + body).
    fn decode_reply(msg: &[u8]) -> Result<Self::Reply, DecodeError>;
}

macro_rules! calls {
    ($($req:ident => $reply:ident),* $(,)?) => {$(
        impl Call for $req {
            type Reply = $reply;
            const NAME: &'static str = $req::NAME;
            const REPLY_TYPE: u16 = $reply::TYPE;
            fn encode_request(&self) -> Result<Vec<u8>, EncodeError> {
                self.encode()
            }
            fn decode_reply(msg: &[u8]) -> Result<$reply, DecodeError> {
                $reply::decode(msg)
            }
        }
    )*};
}

calls! {
    Init => InitReplyV4,
    NewChannel => NewChannelReply,
    GetChannelBasepoints => GetChannelBasepointsReply,
    SetupChannel => SetupChannelReply,
    CheckOutpoint => CheckOutpointReply,
    LockOutpoint => LockOutpointReply,
    ForgetChannel => ForgetChannelReply,
    NodeAnnouncementSigReq => NodeAnnouncementSigReply,
    SignWithdrawal => SignWithdrawalReply,
    SignInvoice => SignInvoiceReply,
    PreapproveInvoice => PreapproveInvoiceReply,
    PreapproveKeysend => PreapproveKeysendReply,
    // Core Lightning answers the `_check` variants with the plain replies.
    PreapproveInvoiceCheck => PreapproveInvoiceReply,
    PreapproveKeysendCheck => PreapproveKeysendReply,
    EcdhReq => EcdhResp,
    CannouncementSigReq => CannouncementSigReply,
    SignAnyCannouncementReq => SignAnyCannouncementReply,
    CupdateSigReq => CupdateSigReply,
    SignCommitmentTx => SignCommitmentTxReply,
    ValidateCommitmentTx => ValidateCommitmentTxReply,
    RevokeCommitmentTx => RevokeCommitmentTxReply,
    ValidateRevocation => ValidateRevocationReply,
    SignDelayedPaymentToUs => SignTxReply,
    SignRemoteHtlcToUs => SignTxReply,
    SignPenaltyToUs => SignTxReply,
    SignRemoteCommitmentTx => SignTxReply,
    SignRemoteHtlcTx => SignTxReply,
    SignMutualCloseTx => SignTxReply,
    SignSpliceTx => SignTxReply,
    GetPerCommitmentPoint => GetPerCommitmentPointReply,
    CheckFutureSecret => CheckFutureSecretReply,
    SignMessage => SignMessageReply,
    Bip137SignMessage => Bip137SignMessageReply,
    GetOutputScriptpubkey => GetOutputScriptpubkeyReply,
    SignBolt12 => SignBolt12Reply,
    SignBolt122 => SignBolt122Reply,
    SignOptionWillFundOffer => SignOptionWillFundOfferReply,
    DeriveSecret => DeriveSecretReply,
    CheckPubkey => CheckPubkeyReply,
    CheckBip86Pubkey => CheckBip86PubkeyReply,
    SignAnchorspend => SignAnchorspendReply,
    SignAnyDelayedPaymentToUs => SignTxReply,
    SignAnyRemoteHtlcToUs => SignTxReply,
    SignAnyPenaltyToUs => SignTxReply,
    SignAnyLocalHtlcTx => SignTxReply,
    SignHtlcTxMingle => SignHtlcTxMingleReply,
}

/// The `hsmd_init` lightningd sends for `network`: BIP32 versions and chain hash of the
/// network, protocol versions 4 to 6, and the passphrase of a mnemonic secret if any.
pub fn init_request(network: Network, passphrase: Option<&str>) -> Init {
    let bip32 = match network {
        Network::Bitcoin => Bip32KeyVersion::MAINNET,
        _ => Bip32KeyVersion::TESTNET,
    };
    let tlvs = InitTlvs {
        hsm_passphrase: passphrase.map(WireString::from),
        unknown: Vec::new(),
    };
    Init::new(
        bip32,
        ChainHash::using_genesis_block(network),
        None,
        None,
        None,
        None,
        None,
        4,
        6,
        tlvs,
    )
}

impl HsmClient {
    /// Sends a typed request and decodes its reply.
    ///
    /// # Errors
    /// [`ClientError::UnexpectedReply`] for a reply of another type,
    /// [`ClientError::BadReply`] for one that does not decode, and the errors of
    /// [`HsmClient::request`].
    pub async fn call<R: Call>(&self, req: &R) -> Result<R::Reply, ClientError> {
        let bytes = req.encode_request().map_err(|source| ClientError::Encode {
            request: R::NAME,
            source,
        })?;
        let reply = self.request(&bytes).await?;
        R::decode_reply(&reply).map_err(|source| match source.kind() {
            DecodeErrorKind::UnexpectedType { .. } => ClientError::UnexpectedReply {
                request: R::NAME,
                expected: R::REPLY_TYPE,
                reply_type: protocol::peek_type(&reply),
            },
            _ => ClientError::BadReply {
                request: R::NAME,
                source,
            },
        })
    }

    /// `hsmd_init`: returns the init reply, or [`ClientError::InitFailed`] if the signer
    /// could not load its secret (`hsmd_init_reply_failure`).
    pub async fn init(&self, req: &Init) -> Result<InitReplyV4, ClientError> {
        let bytes = req.encode().map_err(|source| ClientError::Encode {
            request: Init::NAME,
            source,
        })?;
        let reply = self.request(&bytes).await?;
        if protocol::peek_type(&reply) == Some(InitReplyFailure::TYPE) {
            return match InitReplyFailure::decode(&reply) {
                Ok(f) => Err(ClientError::InitFailed {
                    code: f.error_code,
                    message: f.error_message.to_string_lossy(),
                }),
                Err(source) => Err(ClientError::BadReply {
                    request: Init::NAME,
                    source,
                }),
            };
        }
        InitReplyV4::decode(&reply).map_err(|source| match source.kind() {
            DecodeErrorKind::UnexpectedType { .. } => ClientError::UnexpectedReply {
                request: Init::NAME,
                expected: InitReplyV4::TYPE,
                reply_type: protocol::peek_type(&reply),
            },
            _ => ClientError::BadReply {
                request: Init::NAME,
                source,
            },
        })
    }

    /// `hsmd_ecdh_req`: the shared secret of our node key and `point` (BOLT 8).
    pub async fn ecdh(&self, point: &PublicKey) -> Result<Secret, ClientError> {
        Ok(self.call(&EcdhReq::new(*point)).await?.ss)
    }

    /// `hsmd_get_per_commitment_point`: the point for commitment `n` (and, with protocol
    /// versions below 6, the secret of `n - 2`).
    pub async fn get_per_commitment_point(
        &self,
        n: u64,
    ) -> Result<GetPerCommitmentPointReply, ClientError> {
        self.call(&GetPerCommitmentPoint::new(n)).await
    }

    /// `hsmd_get_channel_basepoints`: a channel's basepoints and funding key.
    pub async fn get_channel_basepoints(
        &self,
        peer: NodeId,
        dbid: u64,
    ) -> Result<GetChannelBasepointsReply, ClientError> {
        self.call(&GetChannelBasepoints::new(peer, dbid)).await
    }

    /// `hsmd_new_channel`: announces a channel (peer, dbid) before its first use.
    pub async fn new_channel(&self, peer: NodeId, dbid: u64) -> Result<(), ClientError> {
        self.call(&NewChannel::new(peer, dbid)).await.map(|_| ())
    }

    /// `hsmd_setup_channel`: the channel's parameters, once they are agreed.
    pub async fn setup_channel(&self, req: &SetupChannel) -> Result<(), ClientError> {
        self.call(req).await.map(|_| ())
    }

    /// `hsmd_sign_remote_commitment_tx`: our signature on the peer's commitment.
    pub async fn sign_remote_commitment_tx(
        &self,
        req: &SignRemoteCommitmentTx,
    ) -> Result<BitcoinSignature, ClientError> {
        Ok(self.call(req).await?.sig)
    }

    /// `hsmd_validate_commitment_tx`: checks the peer's signatures on our next commitment;
    /// returns the old secret (if any) and the next point.
    pub async fn validate_commitment_tx(
        &self,
        req: &ValidateCommitmentTx,
    ) -> Result<ValidateCommitmentTxReply, ClientError> {
        self.call(req).await
    }

    /// `hsmd_revoke_commitment_tx`: revokes our commitment `commit_num`.
    pub async fn revoke_commitment_tx(
        &self,
        commit_num: u64,
    ) -> Result<RevokeCommitmentTxReply, ClientError> {
        self.call(&RevokeCommitmentTx::new(commit_num)).await
    }

    /// `hsmd_sign_mutual_close_tx`: our signature on a mutual close.
    pub async fn sign_mutual_close_tx(
        &self,
        req: &SignMutualCloseTx,
    ) -> Result<BitcoinSignature, ClientError> {
        Ok(self.call(req).await?.sig)
    }

    /// `hsmd_sign_invoice`: the recoverable signature of a BOLT 11 invoice (5-bit data and
    /// human-readable part).
    pub async fn sign_invoice(
        &self,
        u5bytes: Vec<u8>,
        hrp: Vec<u8>,
    ) -> Result<ecdsa::RecoverableSignature, ClientError> {
        Ok(self.call(&SignInvoice::new(u5bytes, hrp)).await?.sig)
    }

    /// `hsmd_sign_message`: a recoverable signature of a message (`signmessage`).
    pub async fn sign_message(
        &self,
        msg: Vec<u8>,
    ) -> Result<ecdsa::RecoverableSignature, ClientError> {
        Ok(self.call(&SignMessage::new(msg)).await?.sig)
    }

    /// `hsmd_preapprove_invoice`: whether the signer approves paying this invoice.
    pub async fn preapprove_invoice(&self, invstring: &str) -> Result<bool, ClientError> {
        Ok(self
            .call(&PreapproveInvoice::new(WireString::from(invstring)))
            .await?
            .approved)
    }

    /// `hsmd_preapprove_keysend`: whether the signer approves this keysend payment.
    pub async fn preapprove_keysend(&self, req: &PreapproveKeysend) -> Result<bool, ClientError> {
        Ok(self.call(req).await?.approved)
    }

    /// `hsmd_derive_secret`: a secret derived from the root secret for `info` (e.g.
    /// `b"scb secret"`).
    pub async fn derive_secret(&self, info: &[u8]) -> Result<Secret, ClientError> {
        Ok(self.call(&DeriveSecret::new(info.to_vec())).await?.secret)
    }

    /// `hsmd_cupdate_sig_req`: the signed `channel_update`.
    pub async fn sign_channel_update(&self, cu: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        Ok(self.call(&CupdateSigReq::new(cu)).await?.cu)
    }

    /// `hsmd_node_announcement_sig_req`: the signature of a `node_announcement`.
    pub async fn sign_node_announcement(
        &self,
        announcement: Vec<u8>,
    ) -> Result<ecdsa::Signature, ClientError> {
        Ok(self
            .call(&NodeAnnouncementSigReq::new(announcement))
            .await?
            .signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::frame::tokio_io;
    use tokio::net::UnixStream;

    #[tokio::test]
    async fn typed_call_and_wrong_reply_type() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = HsmClient::new(
            crate::client::test_socket(a),
            crate::client::ClientInfo::MASTER,
            false,
        );
        let server = tokio::spawn(async move {
            let req = tokio_io::read(&mut b).await.unwrap().unwrap();
            assert!(DeriveSecret::decode(&req).is_ok());
            let reply = DeriveSecretReply::new(Secret([7; 32])).encode().unwrap();
            tokio_io::write(&mut b, &reply).await.unwrap();
            let _ = tokio_io::read(&mut b).await.unwrap().unwrap();
            tokio_io::write(&mut b, &[0, 100]).await.unwrap();
            let _ = tokio_io::read(&mut b).await.unwrap().unwrap();
            tokio_io::write(&mut b, &[0, 127, 1]).await.unwrap();
            b
        });
        assert_eq!(
            c.derive_secret(b"scb secret").await.unwrap(),
            Secret([7; 32])
        );
        assert!(matches!(
            c.derive_secret(b"x").await,
            Err(ClientError::UnexpectedReply {
                expected: 127,
                reply_type: Some(100),
                ..
            })
        ));
        assert!(matches!(
            c.derive_secret(b"x").await,
            Err(ClientError::BadReply { .. })
        ));
        drop(server.await.unwrap());
    }

    #[test]
    fn init_request_matches_lightningd() {
        let i = init_request(Network::Regtest, None);
        assert_eq!((i.hsm_wire_min_version, i.hsm_wire_max_version), (4, 6));
        assert_eq!(i.bip32_key_version, Bip32KeyVersion::TESTNET);
    }
}
