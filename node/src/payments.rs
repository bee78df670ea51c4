//! Paying, as far as the signer's part goes: before the node sends a payment it asks the
//! signer to preapprove it, and a refusal reaches the user with the policy's reason.
//!
//! - `pay(invoice)`: `hsmd_preapprove_invoice`, or `hsmd_preapprove_invoice_check` with
//!   `check_only = false` when the signer lists its type (51) in the init reply's
//!   capabilities;
//! - `keysend(node, amount)`: a fresh preimage, then `hsmd_preapprove_keysend`, or
//!   `hsmd_preapprove_keysend_check` (52) when advertised.
//!
//! hsmd's protocol has no error reply for a refusal: the reply says `approved = false`, and
//! our signer appends the policy's reason after that byte as a NUL-terminated string (Core
//! Lightning ignores such trailing bytes). [`PaymentError::Refused`] carries it. Core
//! Lightning's hsmd answers the `_check` variants with the plain reply types (138 / 139); the
//! `_check` reply types (151 / 152) are accepted too.
//!
//! Sending the HTLCs is not done here.

use crate::client::{ClientError, HsmClient};
use crate::invoice::{decode_invoice, payee, PaymentPreimage};
use bitcoin::hashes::sha256;
use bitcoin::Network;
use lightning_invoice::Currency;
use protocol::msgs::{
    InitReplyV4, PreapproveInvoice, PreapproveInvoiceCheck, PreapproveInvoiceCheckReply,
    PreapproveInvoiceReply, PreapproveKeysend, PreapproveKeysendCheck, PreapproveKeysendCheckReply,
    PreapproveKeysendReply,
};
use protocol::types::{AmountMsat, NodeId, WireString};
use protocol::{DecodeError, DecodeErrorKind};
use secp256k1::PublicKey;

/// The longest refusal reason passed on (longer ones are cut).
const MAX_REASON_CHARS: usize = 1000;

/// Why a payment was not approved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// The string is not a valid BOLT 11 invoice.
    #[error("{0}")]
    BadInvoice(String),
    /// The invoice is for another network than the node's.
    #[error("the invoice is for {invoice}, but this node runs on {node}")]
    WrongNetwork {
        /// The invoice's currency.
        invoice: Currency,
        /// The node's network.
        node: Network,
    },
    /// A keysend of nothing.
    #[error("the amount must be more than 0 msat")]
    ZeroAmount,
    /// The signer's policy refused the payment.
    #[error("the signer refused the payment: {reason}")]
    Refused {
        /// The policy's reason (the rule and what it saw), as the signer gave it.
        reason: String,
    },
    /// The signer could not be asked, or its answer was not a preapproval reply.
    #[error("cannot ask the signer: {0}")]
    Signer(#[from] ClientError),
}

/// An invoice payment the signer approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedInvoice {
    /// The invoice's payment hash.
    pub payment_hash: sha256::Hash,
    /// The node to pay.
    pub destination: PublicKey,
    /// The invoice's amount, if it has one.
    pub amount_msat: Option<u64>,
}

/// A keysend the signer approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedKeysend {
    /// The node to pay.
    pub destination: PublicKey,
    /// The amount.
    pub amount_msat: u64,
    /// The preimage the payment reveals to the destination (in the keysend TLV).
    pub preimage: PaymentPreimage,
    /// Its hash, which the signer approved.
    pub payment_hash: sha256::Hash,
}

/// Asks the signer to preapprove payments, with the request variants it advertises.
#[derive(Debug)]
pub struct Payments<'a> {
    client: &'a HsmClient,
    network: Network,
    invoice_check: bool,
    keysend_check: bool,
}

impl<'a> Payments<'a> {
    /// Payments on `network` through `client` (which needs the master permission), using the
    /// `_check` variants when `capabilities` (the init reply's list) contains their types.
    pub fn new(client: &'a HsmClient, network: Network, capabilities: &[u32]) -> Self {
        Payments {
            client,
            network,
            invoice_check: capabilities.contains(&u32::from(PreapproveInvoiceCheck::TYPE)),
            keysend_check: capabilities.contains(&u32::from(PreapproveKeysendCheck::TYPE)),
        }
    }

    /// Like [`Payments::new`], with the capabilities of the signer's init reply.
    pub fn from_init_reply(client: &'a HsmClient, network: Network, init: &InitReplyV4) -> Self {
        Self::new(client, network, &init.hsm_capabilities)
    }

    /// Whether invoice preapprovals use `hsmd_preapprove_invoice_check`.
    pub fn uses_invoice_check(&self) -> bool {
        self.invoice_check
    }

    /// Whether keysend preapprovals use `hsmd_preapprove_keysend_check`.
    pub fn uses_keysend_check(&self) -> bool {
        self.keysend_check
    }

    /// Asks the signer to approve paying `invoice`.
    ///
    /// # Errors
    /// [`PaymentError::BadInvoice`] / [`PaymentError::WrongNetwork`] before the signer is
    /// asked; [`PaymentError::Refused`] with the policy's reason; [`PaymentError::Signer`]
    /// if the signer could not be asked (the proxy closes the client on a malformed request).
    pub async fn pay(&self, invoice: &str) -> Result<ApprovedInvoice, PaymentError> {
        let invstring = invoice.trim();
        let inv = decode_invoice(invstring).map_err(|e| PaymentError::BadInvoice(e.to_string()))?;
        if inv.currency() != Currency::from(self.network) {
            return Err(PaymentError::WrongNetwork {
                invoice: inv.currency(),
                node: self.network,
            });
        }
        let wire = WireString::from(invstring);
        let verdict = if self.invoice_check {
            let req = PreapproveInvoiceCheck::new(wire, false);
            let msg = encode(PreapproveInvoiceCheck::NAME, req.encode())?;
            let reply = self.client.request(&msg).await?;
            invoice_verdict(PreapproveInvoiceCheck::NAME, &reply)?
        } else {
            let msg = encode(
                PreapproveInvoice::NAME,
                PreapproveInvoice::new(wire).encode(),
            )?;
            let reply = self.client.request(&msg).await?;
            invoice_verdict(PreapproveInvoice::NAME, &reply)?
        };
        verdict.into_result()?;
        Ok(ApprovedInvoice {
            payment_hash: *inv.payment_hash(),
            destination: payee(&inv),
            amount_msat: inv.amount_milli_satoshis(),
        })
    }

    /// Draws a preimage for a keysend of `amount_msat` to `destination` and asks the signer
    /// to approve it.
    ///
    /// # Errors
    /// [`PaymentError::ZeroAmount`] before the signer is asked; otherwise as
    /// [`Payments::pay`].
    pub async fn keysend(
        &self,
        destination: &PublicKey,
        amount_msat: u64,
    ) -> Result<ApprovedKeysend, PaymentError> {
        if amount_msat == 0 {
            return Err(PaymentError::ZeroAmount);
        }
        let preimage = PaymentPreimage::random();
        let payment_hash = preimage.payment_hash();
        let dest = NodeId::from_pubkey(destination);
        let amount = AmountMsat::from_msat(amount_msat);
        let verdict = if self.keysend_check {
            let req = PreapproveKeysendCheck::new(dest, payment_hash, amount, false);
            let msg = encode(PreapproveKeysendCheck::NAME, req.encode())?;
            let reply = self.client.request(&msg).await?;
            keysend_verdict(PreapproveKeysendCheck::NAME, &reply)?
        } else {
            let req = PreapproveKeysend::new(dest, payment_hash, amount);
            let msg = encode(PreapproveKeysend::NAME, req.encode())?;
            let reply = self.client.request(&msg).await?;
            keysend_verdict(PreapproveKeysend::NAME, &reply)?
        };
        verdict.into_result()?;
        Ok(ApprovedKeysend {
            destination: *destination,
            amount_msat,
            preimage,
            payment_hash,
        })
    }
}

fn encode(
    request: &'static str,
    r: Result<Vec<u8>, protocol::EncodeError>,
) -> Result<Vec<u8>, ClientError> {
    r.map_err(|source| ClientError::Encode { request, source })
}

/// A preapproval reply: approved, and what followed the `approved` byte.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    approved: bool,
    trailing: Vec<u8>,
}

impl Verdict {
    fn into_result(self) -> Result<(), PaymentError> {
        if self.approved {
            Ok(())
        } else {
            Err(PaymentError::Refused {
                reason: refusal_reason(&self.trailing),
            })
        }
    }
}

fn bad_reply(request: &'static str, expected: u16, reply: &[u8]) -> ClientError {
    ClientError::UnexpectedReply {
        request,
        expected,
        reply_type: protocol::peek_type(reply),
    }
}

fn decoded(request: &'static str, r: Result<Verdict, DecodeError>) -> Result<Verdict, ClientError> {
    r.map_err(|source| match source.kind() {
        // Not reached: the type was checked before decoding.
        DecodeErrorKind::UnexpectedType { expected } => ClientError::UnexpectedReply {
            request,
            expected: *expected,
            reply_type: None,
        },
        _ => ClientError::BadReply { request, source },
    })
}

/// The verdict of an invoice preapproval reply (type 138, or 151 for the `_check` variant).
fn invoice_verdict(request: &'static str, reply: &[u8]) -> Result<Verdict, ClientError> {
    let v = match protocol::peek_type(reply) {
        Some(PreapproveInvoiceReply::TYPE) => {
            PreapproveInvoiceReply::decode(reply).map(|r| Verdict {
                approved: r.approved,
                trailing: r.trailing,
            })
        }
        Some(PreapproveInvoiceCheckReply::TYPE) if request == PreapproveInvoiceCheck::NAME => {
            PreapproveInvoiceCheckReply::decode(reply).map(|r| Verdict {
                approved: r.approved,
                trailing: r.trailing,
            })
        }
        _ => return Err(bad_reply(request, PreapproveInvoiceReply::TYPE, reply)),
    };
    decoded(request, v)
}

/// The verdict of a keysend preapproval reply (type 139, or 152 for the `_check` variant).
fn keysend_verdict(request: &'static str, reply: &[u8]) -> Result<Verdict, ClientError> {
    let v = match protocol::peek_type(reply) {
        Some(PreapproveKeysendReply::TYPE) => {
            PreapproveKeysendReply::decode(reply).map(|r| Verdict {
                approved: r.approved,
                trailing: r.trailing,
            })
        }
        Some(PreapproveKeysendCheckReply::TYPE) if request == PreapproveKeysendCheck::NAME => {
            PreapproveKeysendCheckReply::decode(reply).map(|r| Verdict {
                approved: r.approved,
                trailing: r.trailing,
            })
        }
        _ => return Err(bad_reply(request, PreapproveKeysendReply::TYPE, reply)),
    };
    decoded(request, v)
}

/// The reason in a refusal's trailing bytes: the text up to the first NUL (or the end),
/// control characters replaced by spaces, cut at [`MAX_REASON_CHARS`] characters.
pub fn refusal_reason(trailing: &[u8]) -> String {
    let end = trailing
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(trailing.len());
    let text: String = String::from_utf8_lossy(&trailing[..end])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        "the signer gave no reason".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientInfo;
    use crate::invoice::{create_invoice, InvoiceRequest, InvoiceSigner};
    use protocol::frame::tokio_io;
    use protocol::Message;
    use secp256k1::ecdsa::RecoverableSignature;
    use secp256k1::{Secp256k1, SecretKey};
    use std::future::Future;
    use tokio::net::UnixStream;
    use tokio::task::JoinHandle;

    /// A fake proxy: answers each request with the reply `answer` computes, and returns the
    /// requests it saw.
    fn fake_proxy(
        answer: impl Fn(&Message) -> Vec<u8> + Send + 'static,
        n: usize,
    ) -> (HsmClient, JoinHandle<Vec<Message>>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let client = HsmClient::new(crate::client::test_socket(a), ClientInfo::MASTER, false);
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..n {
                let req = tokio_io::read(&mut b).await.unwrap().unwrap();
                let m = Message::decode(&req).unwrap();
                tokio_io::write(&mut b, &answer(&m)).await.unwrap();
                seen.push(m);
            }
            seen
        });
        (client, server)
    }

    fn with_reason(mut reply: Vec<u8>, reason: &[u8]) -> Vec<u8> {
        reply.extend_from_slice(reason);
        reply
    }

    struct Key(SecretKey);
    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;
    impl InvoiceSigner for Key {
        type Error = Never;
        fn sign_invoice(
            &self,
            hrp: &[u8],
            u5: &[u8],
        ) -> impl Future<Output = Result<RecoverableSignature, Never>> + Send {
            let data = crate::invoice::u5_to_fe32(u5).unwrap();
            let raw = lightning_invoice::RawBolt11Invoice::from_raw(
                std::str::from_utf8(hrp).unwrap(),
                &data,
            )
            .unwrap();
            let msg = secp256k1::Message::from_digest(raw.signable_hash());
            let sig = Secp256k1::new().sign_ecdsa_recoverable(&msg, &self.0);
            async move { Ok(sig) }
        }
    }

    async fn an_invoice(network: Network, msat: u64) -> (String, PublicKey) {
        let sk = SecretKey::from_slice(&[3; 32]).unwrap();
        let id = sk.public_key(&Secp256k1::new());
        let issued = create_invoice(
            &Key(sk),
            &id,
            network,
            &InvoiceRequest::new(Some(msat), "t"),
        )
        .await
        .unwrap();
        (issued.invoice.to_string(), id)
    }

    const CAPS_WITH_CHECK: &[u32] = &[28, 56, 142, 147, 149, 29, 32, 34, 40, 41, 45, 51, 52];

    #[tokio::test]
    async fn pay_uses_plain_preapprove_without_the_capability() {
        let (inv, id) = an_invoice(Network::Regtest, 10_000).await;
        let (client, server) =
            fake_proxy(|_| PreapproveInvoiceReply::new(true).encode().unwrap(), 1);
        let p = Payments::new(&client, Network::Regtest, &[28, 56]);
        assert!(!p.uses_invoice_check());
        let ok = p.pay(&format!("  {inv}\n")).await.unwrap();
        assert_eq!(ok.destination, id);
        assert_eq!(ok.amount_msat, Some(10_000));
        let seen = server.await.unwrap();
        let Message::PreapproveInvoice(m) = &seen[0] else {
            panic!("{seen:?}")
        };
        assert_eq!(m.invstring.to_string_lossy(), inv);
    }

    #[tokio::test]
    async fn pay_uses_the_check_variant_when_advertised() {
        let (inv, _) = an_invoice(Network::Regtest, 10_000).await;
        // Core Lightning answers with 138; a 151 is accepted too.
        let (client, server) =
            fake_proxy(|_| PreapproveInvoiceReply::new(true).encode().unwrap(), 1);
        let p = Payments::new(&client, Network::Regtest, CAPS_WITH_CHECK);
        assert!(p.uses_invoice_check() && p.uses_keysend_check());
        p.pay(&inv).await.unwrap();
        let seen = server.await.unwrap();
        let Message::PreapproveInvoiceCheck(m) = &seen[0] else {
            panic!("{seen:?}")
        };
        assert!(!m.check_only);
        assert_eq!(m.invstring.to_string_lossy(), inv);

        let (client, _s) = fake_proxy(
            |_| PreapproveInvoiceCheckReply::new(true).encode().unwrap(),
            1,
        );
        Payments::new(&client, Network::Regtest, CAPS_WITH_CHECK)
            .pay(&inv)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_refusal_carries_the_policy_reason() {
        let (inv, _) = an_invoice(Network::Regtest, 10_000).await;
        let why = b"policy rule invoice-velocity: 3 payments in 60 s exceed the limit of 2";
        let (client, _s) = fake_proxy(
            move |_| {
                let mut r = PreapproveInvoiceReply::new(false);
                r.trailing = with_reason(Vec::new(), why);
                r.trailing.push(0);
                r.encode().unwrap()
            },
            1,
        );
        let e = Payments::new(&client, Network::Regtest, CAPS_WITH_CHECK)
            .pay(&inv)
            .await
            .unwrap_err();
        let PaymentError::Refused { reason } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(reason.as_bytes(), why);
        assert!(e.to_string().contains("invoice-velocity"));

        // A refusal without a reason (Core Lightning's hsmd never gives one).
        let (client, _s) = fake_proxy(|_| PreapproveInvoiceReply::new(false).encode().unwrap(), 1);
        let e = Payments::new(&client, Network::Regtest, &[])
            .pay(&inv)
            .await
            .unwrap_err();
        assert!(
            matches!(e, PaymentError::Refused { reason } if reason == "the signer gave no reason")
        );
    }

    #[tokio::test]
    async fn keysend_asks_with_a_fresh_payment_hash() {
        let dest = SecretKey::from_slice(&[5; 32])
            .unwrap()
            .public_key(&Secp256k1::new());
        let (client, server) = fake_proxy(
            |m| match m {
                Message::PreapproveKeysendCheck(_) => {
                    PreapproveKeysendReply::new(true).encode().unwrap()
                }
                _ => {
                    let mut r = PreapproveKeysendReply::new(false);
                    r.trailing =
                        b"policy rule invoice-auto-approve: denied by the operator\0".to_vec();
                    r.encode().unwrap()
                }
            },
            2,
        );
        let with_check = Payments::new(&client, Network::Regtest, CAPS_WITH_CHECK);
        let ok = with_check.keysend(&dest, 42_000).await.unwrap();
        assert_eq!(ok.payment_hash, ok.preimage.payment_hash());
        let plain = Payments::new(&client, Network::Regtest, &[]);
        let e = plain.keysend(&dest, 42_000).await.unwrap_err();
        assert!(
            matches!(&e, PaymentError::Refused { reason } if reason == "policy rule invoice-auto-approve: denied by the operator"),
            "{e:?}"
        );
        let seen = server.await.unwrap();
        let Message::PreapproveKeysendCheck(m) = &seen[0] else {
            panic!("{seen:?}")
        };
        assert_eq!(m.destination, NodeId::from_pubkey(&dest));
        assert_eq!(m.amount_msat.to_msat(), 42_000);
        assert_eq!(m.payment_hash, ok.payment_hash);
        assert!(!m.check_only);
        let Message::PreapproveKeysend(m) = &seen[1] else {
            panic!("{seen:?}")
        };
        assert_ne!(
            m.payment_hash, ok.payment_hash,
            "a new preimage per keysend"
        );
        assert!(matches!(
            plain.keysend(&dest, 0).await,
            Err(PaymentError::ZeroAmount)
        ));
    }

    #[tokio::test]
    async fn local_checks_come_before_the_signer() {
        let (client, _s) = fake_proxy(|_| unreachable!(), 0);
        let p = Payments::new(&client, Network::Regtest, &[]);
        assert!(matches!(
            p.pay("lnbcrt1garbage").await,
            Err(PaymentError::BadInvoice(_))
        ));
        let (mainnet, _) = an_invoice(Network::Bitcoin, 1000).await;
        assert!(matches!(
            p.pay(&mainnet).await,
            Err(PaymentError::WrongNetwork {
                invoice: Currency::Bitcoin,
                node: Network::Regtest
            })
        ));
    }

    #[tokio::test]
    async fn a_wrong_or_malformed_reply_is_a_signer_error() {
        let (inv, _) = an_invoice(Network::Regtest, 1000).await;
        // A keysend reply to an invoice preapproval.
        let (client, _s) = fake_proxy(|_| PreapproveKeysendReply::new(true).encode().unwrap(), 1);
        let e = Payments::new(&client, Network::Regtest, &[])
            .pay(&inv)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            PaymentError::Signer(ClientError::UnexpectedReply {
                reply_type: Some(139),
                ..
            })
        ));
        // A 151 to the plain request, and a bad bool.
        let (client, _s) = fake_proxy(|_| vec![0, 151, 1], 1);
        let e = Payments::new(&client, Network::Regtest, &[])
            .pay(&inv)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            PaymentError::Signer(ClientError::UnexpectedReply { .. })
        ));
        let (client, _s) = fake_proxy(|_| vec![0, 138, 7], 1);
        let e = Payments::new(&client, Network::Regtest, &[])
            .pay(&inv)
            .await
            .unwrap_err();
        assert!(
            matches!(e, PaymentError::Signer(ClientError::BadReply { .. })),
            "{e:?}"
        );
        // The proxy closing the client (a refused malformed request).
        let (client, _s) = fake_proxy(|_| unreachable!(), 0);
        let e = Payments::new(&client, Network::Regtest, &[])
            .pay(&inv)
            .await
            .unwrap_err();
        assert!(
            matches!(e, PaymentError::Signer(ClientError::Closed)),
            "{e:?}"
        );
    }

    #[test]
    fn refusal_reasons_are_cleaned() {
        assert_eq!(refusal_reason(b"rule x\0garbage"), "rule x");
        assert_eq!(refusal_reason(b"no nul"), "no nul");
        assert_eq!(refusal_reason(b"a\nb\x1bc\0"), "a b c");
        assert_eq!(refusal_reason(b"\xff\xfe\0"), "\u{fffd}\u{fffd}");
        assert_eq!(refusal_reason(b""), "the signer gave no reason");
        assert_eq!(refusal_reason(b"\0reason"), "the signer gave no reason");
        assert_eq!(refusal_reason(&[b'a'; 5000]).len(), MAX_REASON_CHARS);
    }
}
