//! Requests signed or answered with the node key or the wallet's BIP32 keys: ECDH, derived
//! secrets, key checks, messages, invoices, BOLT 12, gossip, liquidity ads.
//!
//! Every answer is Core Lightning's hsmd's, byte for byte; the nonce of each signature follows
//! hsmd's code path (see [`crate::sign`]):
//!
//! | request | key | signature |
//! |---|---|---|
//! | `sign_message` | node key | recoverable, plain RFC 6979, over SHA256d("Lightning Signed Message:" ‖ msg) |
//! | `bip137_sign_message` | wallet key `keyidx` (BIP86 key for a mnemonic secret) | recoverable, plain RFC 6979 |
//! | `sign_invoice` | node key | recoverable, plain RFC 6979, over hrp ‖ packed 5-bit data (unvalidated, as hsmd) |
//! | `sign_bolt12` | node key, or the bolt12 payer key tweaked by `publictweak` | BIP340, no aux |
//! | `sign_bolt12_2` | node key, or the node alias tweaked by `derive_secret(info)` and `publictweak` | BIP340, no aux |
//! | gossip (`*announcement*`, `cupdate`) | node key (+ the channel's funding key for `channel_announcement`) | hsmd's `sign_hash` (low-R grinding from a zero counter) |
//! | `sign_option_will_fund_offer` | node key | plain RFC 6979, no grinding |
//!
//! Where hsmd stops altogether, so does this: a wallet index of 2^31 or more
//! (`STATUS_FAIL_MASTER_IO`, "Index N too great") and a `check_pubkey` /
//! `check_bip86_pubkey` mismatch (`STATUS_FAIL_INTERNAL_ERROR`). Malformed gossip is a bad
//! request (see [`crate::gossip`]).

use bitcoin::hashes::Hash;
use protocol::msgs::*;
use protocol::types::Secret;
use protocol::Message;
use secp256k1::{PublicKey, SecretKey, SECP256K1};

use crate::context::ChannelKey;
use crate::error::{Result, SignerError, FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};
use crate::gossip::{self, ChannelUpdate, GossipError};
use crate::handler::Req;
use crate::keys::KeyError;
use crate::sign::digest::{
    bip137_digest, bolt12_sighash, invoice_digest, sign_message_digest, will_fund_digest,
};
use crate::sign::{
    sign_ecdsa_cln_grind, sign_ecdsa_no_grind, sign_ecdsa_recoverable, sign_schnorr_no_aux,
};

/// Answers `EcdhReq`: SHA256 of the shared point of the node key and `point` (BOLT 8, onion).
pub(crate) fn ecdh(r: &mut Req<'_>, m: EcdhReq) -> Result<Message> {
    Ok(EcdhResp::new(Secret(r.keys().ecdh(&m.point))).into())
}

/// Answers `DeriveSecret`: the pseudorandom secret for `info` (e.g. the SCB key).
pub(crate) fn derive_secret(r: &mut Req<'_>, m: DeriveSecret) -> Result<Message> {
    Ok(DeriveSecretReply::new(Secret(r.keys().derive_secret(&m.info))).into())
}

/// Answers `CheckPubkey`: `true` when lightningd derived wallet key m/0/0/`index` as we do;
/// anything else stops the signer, as in hsmd (lightningd's wallet would be wrong).
pub(crate) fn check_pubkey(r: &mut Req<'_>, m: CheckPubkey) -> Result<Message> {
    let ours = r.keys().wallet_key(m.index).map_err(key_fatal)?;
    check_same_key("BIP32", m.index, &m.pubkey, &ours)?;
    Ok(CheckPubkeyReply::new(true).into())
}

/// Answers `CheckBip86Pubkey`: as [`check_pubkey`] for BIP86 key m/86'/0'/0'/0/`index`. A
/// plain (non-mnemonic) secret has no BIP86 keys: hsmd refuses the request as malformed.
pub(crate) fn check_bip86_pubkey(r: &mut Req<'_>, m: CheckBip86Pubkey) -> Result<Message> {
    let ours = match r.keys().bip86_key(m.index) {
        Err(KeyError::NoBip86) => {
            return Err(SignerError::malformed(
                "check_bip86_pubkey needs a mnemonic hsm_secret (this one is plain)",
            ))
        }
        k => k.map_err(key_fatal)?,
    };
    check_same_key("BIP86", m.index, &m.pubkey, &ours)?;
    Ok(CheckBip86PubkeyReply::new(true).into())
}

/// Answers `SignMessage`: a recoverable node-key signature of the prefixed message.
pub(crate) fn sign_message(r: &mut Req<'_>, m: SignMessage) -> Result<Message> {
    let sig = sign_ecdsa_recoverable(&sign_message_digest(&m.msg), r.keys().node_secret_key());
    Ok(SignMessageReply::new(sig).into())
}

/// Answers `Bip137SignMessage`: a BIP137 signature with the wallet key of `keyidx` (the key
/// its UTXOs are spent with).
pub(crate) fn bip137_sign_message(r: &mut Req<'_>, m: Bip137SignMessage) -> Result<Message> {
    let key = r.keys().wallet_utxo_key(m.keyidx).map_err(key_fatal)?;
    let sig = sign_ecdsa_recoverable(&bip137_digest(&m.msg), &key);
    Ok(Bip137SignMessageReply::new(sig).into())
}

/// Answers `SignInvoice`: the BOLT 11 signature of hrp ‖ data, hashed exactly as hsmd hashes
/// it (it does not validate the 5-bit values or the hrp).
pub(crate) fn sign_invoice(r: &mut Req<'_>, m: SignInvoice) -> Result<Message> {
    let digest = invoice_digest(&m.hrp, &m.u5bytes);
    let sig = sign_ecdsa_recoverable(&digest, r.keys().node_secret_key());
    Ok(SignInvoiceReply::new(sig).into())
}

/// Answers `SignBolt12`: BIP340 over the BOLT 12 merkle root, with the node key (empty
/// `publictweak`) or the payer key the tweak derives from the bolt12 base key.
pub(crate) fn sign_bolt12(r: &mut Req<'_>, m: SignBolt12) -> Result<Message> {
    let keypair = r
        .keys()
        .bolt12_payer_keypair(&m.publictweak)
        .map_err(key_fatal)?;
    let digest = bolt12_sighash(
        m.messagename.as_bytes(),
        m.fieldname.as_bytes(),
        m.merkleroot.as_byte_array(),
    );
    Ok(SignBolt12Reply::new(sign_schnorr_no_aux(&digest, &keypair)).into())
}

/// Answers `SignBolt122`: BIP340 over the BOLT 12 merkle root, with the node key (empty
/// `publictweak`) or the node alias derived from `info` and the tweak.
pub(crate) fn sign_bolt12_2(r: &mut Req<'_>, m: SignBolt122) -> Result<Message> {
    let keypair = r
        .keys()
        .bolt12_alias_keypair(&m.info, &m.publictweak)
        .map_err(key_fatal)?;
    let digest = bolt12_sighash(
        m.messagename.as_bytes(),
        m.fieldname.as_bytes(),
        m.merkleroot.as_byte_array(),
    );
    Ok(SignBolt122Reply::new(sign_schnorr_no_aux(&digest, &keypair)).into())
}

/// Answers `NodeAnnouncementSigReq`: the node signature of a `node_announcement`.
pub(crate) fn node_announcement_sig(r: &mut Req<'_>, m: NodeAnnouncementSigReq) -> Result<Message> {
    let digest = gossip::node_announcement_digest(&m.announcement).map_err(gossip_error)?;
    let sig = sign_ecdsa_cln_grind(&digest, r.keys().node_secret_key());
    Ok(NodeAnnouncementSigReply::new(sig).into())
}

/// Answers `CannouncementSigReq` (channeld): the node and bitcoin (funding key) signatures of
/// the client's own channel's `channel_announcement`.
pub(crate) fn cannouncement_sig(r: &mut Req<'_>, m: CannouncementSigReq) -> Result<Message> {
    let channel = r.client.channel_key();
    let (node, bitcoin) = sign_channel_announcement(r, &channel, &m.ca)?;
    Ok(CannouncementSigReply::new(node, bitcoin).into())
}

/// Answers `SignAnyCannouncementReq` (lightningd): as [`cannouncement_sig`] for the channel
/// named by `peerid` and `channel_dbid`.
pub(crate) fn sign_any_cannouncement(
    r: &mut Req<'_>,
    m: SignAnyCannouncementReq,
) -> Result<Message> {
    let channel = ChannelKey {
        peer_id: m.peerid,
        dbid: m.channel_dbid,
    };
    let (node, bitcoin) = sign_channel_announcement(r, &channel, &m.ca)?;
    Ok(SignAnyCannouncementReply::new(node, bitcoin).into())
}

/// Answers `CupdateSigReq`: the `channel_update` re-serialized from its fields with the node
/// signature in place. Bytes after `htlc_maximum_msat` are signed over but not returned, as
/// hsmd does.
pub(crate) fn cupdate_sig(r: &mut Req<'_>, m: CupdateSigReq) -> Result<Message> {
    let (update, digest) = ChannelUpdate::parse(&m.cu).map_err(gossip_error)?;
    let sig = sign_ecdsa_cln_grind(&digest, r.keys().node_secret_key());
    Ok(CupdateSigReply::new(update.encode(&sig)).into())
}

/// Answers `SignOptionWillFundOffer`: the node's signature of a liquidity ad's lease terms
/// (plain RFC 6979, no grinding, as hsmd).
pub(crate) fn sign_option_will_fund_offer(
    r: &mut Req<'_>,
    m: SignOptionWillFundOffer,
) -> Result<Message> {
    let digest = will_fund_digest(
        &m.funding_pubkey,
        m.blockheight,
        m.channel_fee_base_max_msat,
        m.channel_fee_proportional_basis_max,
    );
    let sig = sign_ecdsa_no_grind(&digest, r.keys().node_secret_key());
    Ok(SignOptionWillFundOfferReply::new(sig).into())
}

/// The (node, bitcoin) signatures of `ca` for `channel`.
fn sign_channel_announcement(
    r: &Req<'_>,
    channel: &ChannelKey,
    ca: &[u8],
) -> Result<(secp256k1::ecdsa::Signature, secp256k1::ecdsa::Signature)> {
    let digest = gossip::channel_announcement_digest(ca).map_err(gossip_error)?;
    let funding_key = r.channel_secrets(channel)?.funding_key;
    Ok((
        sign_ecdsa_cln_grind(&digest, r.keys().node_secret_key()),
        sign_ecdsa_cln_grind(&digest, &funding_key),
    ))
}

/// hsmd's verdict when lightningd's key differs from ours: stop, naming both keys.
fn check_same_key(tree: &str, index: u32, theirs: &PublicKey, ours: &SecretKey) -> Result<()> {
    let ours = ours.public_key(SECP256K1);
    if *theirs == ours {
        return Ok(());
    }
    Err(SignerError::Fatal {
        reason: FAIL_INTERNAL_ERROR,
        message: format!(
            "{tree} derivation index {index} differed: they got {theirs}, we got {ours}"
        ),
    })
}

/// A key that cannot be derived stops hsmd: a hardened index is lightningd's fault
/// (`STATUS_FAIL_MASTER_IO`), anything else an internal error.
fn key_fatal(e: KeyError) -> SignerError {
    match e {
        KeyError::IndexTooGreat(i) => SignerError::Fatal {
            reason: FAIL_MASTER_IO,
            message: format!("Index {i} too great"),
        },
        e => SignerError::Fatal {
            reason: FAIL_INTERNAL_ERROR,
            message: e.to_string(),
        },
    }
}

fn gossip_error(e: GossipError) -> SignerError {
    SignerError::BadRequest(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ClientContext;
    use crate::gossip::{CHANNEL_ANNOUNCEMENT, CHANNEL_UPDATE, CHANNEL_UPDATE_LEN};
    use crate::keys::Bip32Version;
    use crate::policy::Policy;
    use crate::secret::HsmSecret;
    use crate::store::Store;
    use crate::Signer;
    use protocol::types::{Bip32KeyVersion, NodeId};
    use protocol::Permissions;

    const TPUB: u32 = crate::keys::BIP32_TESTNET_PUBLIC;
    const TPRV: u32 = crate::keys::BIP32_TESTNET_PRIVATE;

    fn signer() -> Signer {
        let s = Signer::new(
            vec![7u8; 32],
            Store::temporary().unwrap(),
            Policy::enforcing(),
        );
        let init = Init::new(
            Bip32KeyVersion {
                pubkey_version: TPUB,
                privkey_version: TPRV,
            },
            bitcoin::blockdata::constants::ChainHash::REGTEST,
            None,
            None,
            None,
            None,
            None,
            4,
            6,
            InitTlvs::default(),
        );
        let bytes = Message::from(init).encode().unwrap();
        s.handle(&ClientContext::master(), None, &bytes).unwrap();
        s
    }

    fn keys() -> crate::keys::KeyManager {
        crate::keys::KeyManager::new(&HsmSecret::from_plain([7u8; 32]), Bip32Version::Testnet)
            .unwrap()
    }

    fn gossip_client() -> ClientContext {
        ClientContext::client(NodeId::from_bytes([2; 33]), 5, Permissions::CHANNELD)
    }

    fn ask(s: &Signer, c: &ClientContext, m: impl Into<Message>) -> Result<Vec<u8>> {
        s.handle(c, None, &m.into().encode().unwrap())
    }

    fn channel_update(len: usize) -> Vec<u8> {
        let mut cu = CHANNEL_UPDATE.to_be_bytes().to_vec();
        cu.resize(len.max(66), 3);
        cu[2..66].fill(0);
        cu.truncate(len);
        cu
    }

    #[test]
    fn malformed_gossip_is_a_bad_request() {
        let s = signer();
        let c = gossip_client();
        let bad =
            |r: Result<Vec<u8>>| assert!(matches!(r, Err(SignerError::BadRequest(_))), "{r:?}");

        // channel_announcement: shorter than the four signatures, or another type.
        bad(ask(&s, &c, CannouncementSigReq::new(vec![1, 0])));
        bad(ask(&s, &c, CannouncementSigReq::new(vec![])));
        let mut ca = vec![0u8; 300];
        ca[..2].copy_from_slice(&258u16.to_be_bytes());
        bad(ask(&s, &c, CannouncementSigReq::new(ca.clone())));
        ca[..2].copy_from_slice(&CHANNEL_ANNOUNCEMENT.to_be_bytes());
        bad(ask(&s, &c, CannouncementSigReq::new(ca[..257].to_vec())));
        assert!(ask(&s, &c, CannouncementSigReq::new(ca[..258].to_vec())).is_ok());

        // node_announcement: shorter than type + signature, or another type.
        let mut ann = vec![0u8; 100];
        ann[..2].copy_from_slice(&257u16.to_be_bytes());
        bad(ask(&s, &c, NodeAnnouncementSigReq::new(ann[..65].to_vec())));
        bad(ask(&s, &c, NodeAnnouncementSigReq::new(vec![])));
        assert!(ask(&s, &c, NodeAnnouncementSigReq::new(ann.clone())).is_ok());
        ann[1] = 0;
        bad(ask(&s, &c, NodeAnnouncementSigReq::new(ann)));

        // channel_update: short, wrong type, invalid signature slot.
        for len in [0, 1, 2, 66, CHANNEL_UPDATE_LEN - 1] {
            bad(ask(&s, &c, CupdateSigReq::new(channel_update(len))));
        }
        let mut cu = channel_update(CHANNEL_UPDATE_LEN);
        cu[1] = 0;
        bad(ask(&s, &c, CupdateSigReq::new(cu)));
        let mut cu = channel_update(CHANNEL_UPDATE_LEN);
        cu[2..34].fill(0xff);
        bad(ask(&s, &c, CupdateSigReq::new(cu)));
    }

    #[test]
    fn channel_update_reply_is_reserialized_and_signed() {
        let s = signer();
        let c = ClientContext::master();
        let cu = channel_update(CHANNEL_UPDATE_LEN + 4);
        let reply = ask(&s, &c, CupdateSigReq::new(cu.clone())).unwrap();
        let Message::CupdateSigReply(reply) = Message::decode(&reply).unwrap() else {
            panic!("not a cupdate reply");
        };
        assert_eq!(reply.cu.len(), CHANNEL_UPDATE_LEN);
        assert_eq!(reply.cu[66..], cu[66..CHANNEL_UPDATE_LEN]);
        let (_, digest) = ChannelUpdate::parse(&cu).unwrap();
        let sig = secp256k1::ecdsa::Signature::from_compact(&reply.cu[2..66]).unwrap();
        SECP256K1
            .verify_ecdsa(&digest, &sig, &keys().node_id())
            .unwrap();
    }

    #[test]
    fn channel_announcement_signed_with_the_clients_funding_key() {
        let s = signer();
        let c = gossip_client();
        let mut ca = vec![9u8; 300];
        ca[..2].copy_from_slice(&CHANNEL_ANNOUNCEMENT.to_be_bytes());
        let reply = ask(&s, &c, CannouncementSigReq::new(ca.clone())).unwrap();
        let Message::CannouncementSigReply(reply) = Message::decode(&reply).unwrap() else {
            panic!("not a cannouncement reply");
        };
        let keys = keys();
        let digest = gossip::channel_announcement_digest(&ca).unwrap();
        let funding = keys.channel_secrets(&[2; 33], 5).unwrap().funding_key;
        SECP256K1
            .verify_ecdsa(
                &digest,
                &reply.bitcoin_signature,
                &funding.public_key(SECP256K1),
            )
            .unwrap();
        SECP256K1
            .verify_ecdsa(&digest, &reply.node_signature, &keys.node_id())
            .unwrap();

        // The master names the channel: same signatures.
        let any = SignAnyCannouncementReq::new(ca, NodeId::from_bytes([2; 33]), 5);
        let any = ask(&s, &ClientContext::master(), any).unwrap();
        let Message::SignAnyCannouncementReply(any) = Message::decode(&any).unwrap() else {
            panic!("not a sign_any_cannouncement reply");
        };
        assert_eq!(any.node_signature, reply.node_signature);
        assert_eq!(any.bitcoin_signature, reply.bitcoin_signature);
    }

    #[test]
    fn key_checks_stop_the_signer_as_hsmd_does() {
        let s = signer();
        let m = ClientContext::master();
        let k = keys();
        let good = k.wallet_key(3).unwrap().public_key(SECP256K1);
        let reply = ask(&s, &m, CheckPubkey::new(3, good)).unwrap();
        assert_eq!(
            reply,
            Message::from(CheckPubkeyReply::new(true)).encode().unwrap()
        );

        match ask(&s, &m, CheckPubkey::new(4, good)) {
            Err(SignerError::Fatal { reason, message }) => {
                assert_eq!(reason, FAIL_INTERNAL_ERROR);
                assert!(message.starts_with("BIP32 derivation index 4 differed: they got "));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ask(&s, &m, CheckPubkey::new(1 << 31, good)),
            Err(SignerError::Fatal {
                reason: FAIL_MASTER_IO,
                message: "Index 2147483648 too great".into()
            })
        );
        assert_eq!(
            ask(&s, &m, Bip137SignMessage::new(b"hi".to_vec(), u32::MAX)),
            Err(SignerError::Fatal {
                reason: FAIL_MASTER_IO,
                message: "Index 4294967295 too great".into()
            })
        );
        // A plain secret has no BIP86 keys: a bad request, not a crash.
        assert!(matches!(
            ask(&s, &m, CheckBip86Pubkey::new(0, good)),
            Err(SignerError::BadRequest(_))
        ));
    }
}
