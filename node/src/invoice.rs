//! BOLT 11 invoices signed by the remote signer.
//!
//! The node builds the invoice with `lightning-invoice` and never holds the key that signs
//! it: the signer's `hsmd_sign_invoice` gets the human-readable part and the data part as
//! 5-bit values (one per byte), exactly as lightningd sends them, and answers with a
//! recoverable signature over `SHA256(hrp || data bits padded to bytes)`. The signature is
//! attached with [`RawBolt11Invoice::sign`], and the result is only handed out after two
//! checks: the invoice passes `lightning-invoice`'s semantic checks, and the node id
//! recovered from its signature is ours (so a signer that signed other bytes, or with another
//! key, is caught here rather than by the payer).
//!
//! The payment preimage is not a signer key: the node draws it (and the payment secret) at
//! random and keeps them in an [`IssuedInvoice`]; [`InvoiceBook`] stores them in the node's
//! directory so that the node can later claim the payment.
//!
//! [`InvoiceSigner`] is the one signer operation this module needs; it is implemented for the
//! hsmd client ([`HsmClient`]) and, in tests, by a local key.

use crate::backup::write_file_atomic;
use crate::client::{ClientError, HsmClient};
use bech32::Fe32;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::Network;
use lightning_invoice::{
    Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret, RawBolt11Invoice,
    SignedRawBolt11Invoice,
};
use protocol::msgs::SignInvoice;
use protocol::types::NodeId;
use secp256k1::ecdsa::RecoverableSignature;
use secp256k1::rand::{thread_rng, RngCore};
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an invoice can be paid when the caller does not say: one week, Core Lightning's
/// default.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The `min_final_cltv_expiry_delta` we ask for when the caller does not say (BOLT 11's
/// default when the field is absent, and Core Lightning's).
pub const DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 18;

/// The file in the node's directory where [`InvoiceBook`] keeps issued invoices.
pub const INVOICES_FILE: &str = "invoices.json";

/// The signer's part in issuing an invoice: a recoverable signature of the invoice's
/// human-readable part and 5-bit data part.
///
/// Implementations sign `SHA256(hrp || data)`, the data part's 5-bit values (`u5_data`, one
/// per byte, each below 32) packed into bytes with zero padding, with the node key — what
/// Core Lightning's `hsmd_sign_invoice` does.
pub trait InvoiceSigner {
    /// Why signing failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The recoverable signature of the invoice with this human-readable part (ASCII, e.g.
    /// `lnbcrt10u`) and data part (timestamp and tagged fields, without signature).
    fn sign_invoice(
        &self,
        hrp: &[u8],
        u5_data: &[u8],
    ) -> impl Future<Output = Result<RecoverableSignature, Self::Error>> + Send;
}

impl InvoiceSigner for HsmClient {
    type Error = ClientError;

    /// `hsmd_sign_invoice` on this client (it needs the master permission).
    fn sign_invoice(
        &self,
        hrp: &[u8],
        u5_data: &[u8],
    ) -> impl Future<Output = Result<RecoverableSignature, ClientError>> + Send {
        let req = SignInvoice::new(u5_data.to_vec(), hrp.to_vec());
        async move { Ok(self.call(&req).await?.sig) }
    }
}

/// Why no invoice came out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvoiceError {
    /// The request cannot become an invoice (description too long, amount too large, ...).
    #[error("cannot build the invoice: {0}")]
    Build(String),
    /// The system clock is before 1970 or beyond what BOLT 11 can express.
    #[error("the system clock cannot be used for an invoice timestamp")]
    Clock,
    /// The signer did not sign.
    #[error("the signer did not sign the invoice: {0}")]
    Signer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The signed invoice does not pass BOLT 11's checks (e.g. a signature that does not
    /// recover a key).
    #[error("the signed invoice is not valid: {0}")]
    Invalid(String),
    /// The signature recovers another key than our node id: the signer signed other bytes
    /// or holds another key.
    #[error("the invoice signature recovers {recovered}, not our node id {expected}")]
    WrongSigner {
        /// Our node id.
        expected: NodeId,
        /// The key the signature recovers.
        recovered: NodeId,
    },
}

/// Why a string is not an invoice we can use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeInvoiceError {
    /// Not a BOLT 11 invoice (bech32, fields, signature, features or amount).
    #[error("not a valid BOLT 11 invoice: {0}")]
    Invalid(String),
}

/// A payment preimage: the secret whose SHA-256 is the payment hash. It is the node's, not a
/// signer key; `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPreimage(#[serde(with = "hex32")] pub [u8; 32]);

impl PaymentPreimage {
    /// A fresh random preimage.
    pub fn random() -> Self {
        PaymentPreimage(random_32())
    }

    /// Its payment hash.
    pub fn payment_hash(&self) -> sha256::Hash {
        sha256::Hash::hash(&self.0)
    }
}

impl fmt::Debug for PaymentPreimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentPreimage(..)")
    }
}

pub(crate) fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    thread_rng().fill_bytes(&mut b);
    b
}

/// What to put in an invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRequest {
    /// The amount in millisatoshi; `None` lets the payer choose.
    pub amount_msat: Option<u64>,
    /// The description (`d` field, at most 639 bytes).
    pub description: String,
    /// How long after its timestamp the invoice can be paid (`x` field).
    pub expiry: Duration,
    /// The CLTV delta we need on the last hop (`c` field).
    pub min_final_cltv_expiry_delta: u64,
}

impl InvoiceRequest {
    /// An invoice for `amount_msat` with `description`, and the default expiry and final CLTV
    /// delta.
    pub fn new(amount_msat: Option<u64>, description: impl Into<String>) -> Self {
        InvoiceRequest {
            amount_msat,
            description: description.into(),
            expiry: DEFAULT_EXPIRY,
            min_final_cltv_expiry_delta: DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA,
        }
    }
}

/// An invoice we issued, with the secrets needed to claim its payment.
#[derive(Clone, Debug)]
pub struct IssuedInvoice {
    /// The signed invoice (its `Display` is the `lnbc...` string).
    pub invoice: Bolt11Invoice,
    /// The preimage of its payment hash.
    pub preimage: PaymentPreimage,
    /// Its payment secret (`s` field), which the payer echoes in the onion.
    pub payment_secret: [u8; 32],
}

impl IssuedInvoice {
    /// The invoice's payment hash.
    pub fn payment_hash(&self) -> sha256::Hash {
        *self.invoice.payment_hash()
    }
}

/// The unsigned invoice for `req`: amount and currency of `network`, payment hash of
/// `preimage`, payment secret, description, expiry, final CLTV delta, and the features
/// `var_onion_optin` and `payment_secret` (required) and `basic_mpp` (optional).
pub fn unsigned_invoice(
    network: Network,
    req: &InvoiceRequest,
    preimage: &PaymentPreimage,
    payment_secret: [u8; 32],
    timestamp: Duration,
) -> Result<RawBolt11Invoice, InvoiceError> {
    if timestamp.as_secs() > lightning_invoice::MAX_TIMESTAMP {
        return Err(InvoiceError::Clock);
    }
    let builder = InvoiceBuilder::new(Currency::from(network))
        .description(req.description.clone())
        .payment_hash(preimage.payment_hash())
        .payment_secret(PaymentSecret(payment_secret))
        .basic_mpp()
        .duration_since_epoch(timestamp)
        .min_final_cltv_expiry_delta(req.min_final_cltv_expiry_delta)
        .expiry_time(req.expiry);
    let builder = match req.amount_msat {
        Some(msat) => builder.amount_milli_satoshis(msat),
        None => builder,
    };
    builder
        .build_raw()
        .map_err(|e| InvoiceError::Build(e.to_string()))
}

/// Has `signer` sign `raw` and returns the checked invoice.
///
/// The signer gets the human-readable part and the 5-bit data part (one value per byte), as
/// in `hsmd_sign_invoice`. With `node_id`, the key recovered from the signature must be it.
///
/// # Errors
/// [`InvoiceError::Signer`] if the signer fails, [`InvoiceError::Invalid`] if the signed
/// invoice fails BOLT 11's checks, [`InvoiceError::WrongSigner`] if it recovers another key.
pub async fn sign_raw_invoice<S: InvoiceSigner + ?Sized>(
    signer: &S,
    raw: RawBolt11Invoice,
    node_id: Option<&PublicKey>,
) -> Result<Bolt11Invoice, InvoiceError> {
    let (hrp, data) = raw.to_raw();
    let u5: Vec<u8> = data.iter().map(|f| f.to_u8()).collect();
    let sig = signer
        .sign_invoice(hrp.as_bytes(), &u5)
        .await
        .map_err(|e| InvoiceError::Signer(Box::new(e)))?;
    let signed = match raw.sign(|_| Ok::<_, Infallible>(sig)) {
        Ok(s) => s,
        Err(never) => match never {},
    };
    check_signed(signed, node_id)
}

fn check_signed(
    signed: SignedRawBolt11Invoice,
    node_id: Option<&PublicKey>,
) -> Result<Bolt11Invoice, InvoiceError> {
    let invoice =
        Bolt11Invoice::from_signed(signed).map_err(|e| InvoiceError::Invalid(e.to_string()))?;
    if let Some(expected) = node_id {
        let recovered = payee(&invoice);
        if recovered != *expected {
            return Err(InvoiceError::WrongSigner {
                expected: NodeId::from_pubkey(expected),
                recovered: NodeId::from_pubkey(&recovered),
            });
        }
    }
    Ok(invoice)
}

/// The node the invoice pays: its `n` field, else the key recovered from its signature.
pub fn payee(invoice: &Bolt11Invoice) -> PublicKey {
    invoice.get_payee_pub_key()
}

/// Issues an invoice: a fresh preimage and payment secret, the invoice for `req` on
/// `network` timestamped now, signed by `signer` and checked to recover `node_id`.
///
/// # Errors
/// See [`unsigned_invoice`] and [`sign_raw_invoice`].
pub async fn create_invoice<S: InvoiceSigner + ?Sized>(
    signer: &S,
    node_id: &PublicKey,
    network: Network,
    req: &InvoiceRequest,
) -> Result<IssuedInvoice, InvoiceError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| InvoiceError::Clock)?;
    let preimage = PaymentPreimage::random();
    let payment_secret = random_32();
    let raw = unsigned_invoice(
        network,
        req,
        &preimage,
        payment_secret,
        Duration::from_secs(now.as_secs()),
    )?;
    let invoice = sign_raw_invoice(signer, raw, Some(node_id)).await?;
    Ok(IssuedInvoice {
        invoice,
        preimage,
        payment_secret,
    })
}

/// Decodes and checks an invoice string (bech32, fields, features, signature, amount), in
/// upper or lower case.
pub fn decode_invoice(s: &str) -> Result<Bolt11Invoice, DecodeInvoiceError> {
    Bolt11Invoice::from_str(s.trim()).map_err(|e| DecodeInvoiceError::Invalid(e.to_string()))
}

/// The 5-bit values of an invoice data part as `hsmd_sign_invoice` carries them, back as
/// field elements; `None` if a value is 32 or more.
pub fn u5_to_fe32(u5: &[u8]) -> Option<Vec<Fe32>> {
    u5.iter().map(|&b| Fe32::try_from(b).ok()).collect()
}

/// An invoice the node issued, as kept on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    /// The invoice string.
    pub invoice: String,
    /// The payment preimage.
    pub preimage: PaymentPreimage,
    /// The payment secret.
    #[serde(with = "hex32")]
    pub payment_secret: [u8; 32],
    /// The amount asked, if any.
    pub amount_msat: Option<u64>,
    /// Unix seconds after which it can no longer be paid.
    pub expires_at: u64,
}

impl From<&IssuedInvoice> for InvoiceRecord {
    fn from(i: &IssuedInvoice) -> Self {
        let expires_at = i
            .invoice
            .duration_since_epoch()
            .saturating_add(i.invoice.expiry_time())
            .as_secs();
        InvoiceRecord {
            invoice: i.invoice.to_string(),
            preimage: i.preimage,
            payment_secret: i.payment_secret,
            amount_msat: i.invoice.amount_milli_satoshis(),
            expires_at,
        }
    }
}

/// Why the invoice book could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvoiceBookError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not an invoice book.
    #[error("{path} is not an invoice book: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The invoices the node issued, by payment hash (hex), in `invoices.json` of the node's
/// directory. Every change is written to a temporary file and renamed over the old one.
#[derive(Debug)]
pub struct InvoiceBook {
    path: PathBuf,
    invoices: BTreeMap<String, InvoiceRecord>,
}

impl InvoiceBook {
    /// The book in `dir` (empty if the file does not exist yet).
    ///
    /// # Errors
    /// [`InvoiceBookError`] if the file cannot be read or does not parse.
    pub fn open(dir: &Path) -> Result<InvoiceBook, InvoiceBookError> {
        let path = dir.join(INVOICES_FILE);
        let invoices = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| InvoiceBookError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(InvoiceBookError::Io { path, source }),
        };
        Ok(InvoiceBook { path, invoices })
    }

    /// Adds an issued invoice and writes the book.
    ///
    /// # Errors
    /// [`InvoiceBookError::Io`] if the file cannot be written (the book on disk is then the
    /// old one).
    pub fn add(&mut self, issued: &IssuedInvoice) -> Result<(), InvoiceBookError> {
        let key = issued.payment_hash().to_string();
        self.invoices.insert(key, InvoiceRecord::from(issued));
        let bytes = serde_json::to_vec_pretty(&self.invoices).map_err(|source| {
            InvoiceBookError::Corrupt {
                path: self.path.clone(),
                source,
            }
        })?;
        write_file_atomic(&self.path, &bytes).map_err(|source| InvoiceBookError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The invoice with this payment hash.
    pub fn get(&self, payment_hash: &sha256::Hash) -> Option<&InvoiceRecord> {
        self.invoices.get(&payment_hash.to_string())
    }

    /// All issued invoices, by payment hash (hex).
    pub fn invoices(&self) -> &BTreeMap<String, InvoiceRecord> {
        &self.invoices
    }
}

/// Serde of 32-byte arrays as hex strings.
pub(crate) mod hex32 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(D::Error::custom)?;
        v.try_into()
            .map_err(|_| D::Error::custom("expected 32 bytes of hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::{hash160, Hash};
    use bitcoin::{PubkeyHash, ScriptHash, WitnessVersion};
    use lightning_invoice::{
        Description, ExpiryTime, Fallback, MinFinalCltvExpiryDelta, PrivateRoute, RawDataPart,
        RawTaggedField, RouteHint, RouteHintHop, RoutingFees, Sha256, TaggedField,
    };
    use protocol::frame::tokio_io;
    use protocol::msgs::{InitReplyV4, SignInvoiceReply};
    use secp256k1::{Message, Secp256k1, SecretKey};
    use serde_json::Value;
    use std::sync::Mutex;
    use tokio::net::UnixStream;

    /// Packs 5-bit values into bytes, zero-padded, and hashes them after `hrp` — hsmd's
    /// `hash_u5`, written independently of `lightning-invoice`.
    fn hash_u5(hrp: &[u8], u5: &[u8]) -> [u8; 32] {
        let mut bytes = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for &v in u5 {
            acc = (acc << 5) | u32::from(v & 31);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        if bits > 0 {
            bytes.push((acc << (8 - bits)) as u8);
        }
        let mut pre = hrp.to_vec();
        pre.extend(bytes);
        sha256::Hash::hash(&pre).to_byte_array()
    }

    /// A signer holding a key locally (tests only: the node never does).
    struct LocalKeySigner(SecretKey);

    #[derive(Debug, thiserror::Error)]
    #[error("local signer refused: {0}")]
    struct LocalError(&'static str);

    impl InvoiceSigner for LocalKeySigner {
        type Error = LocalError;
        fn sign_invoice(
            &self,
            hrp: &[u8],
            u5_data: &[u8],
        ) -> impl Future<Output = Result<RecoverableSignature, LocalError>> + Send {
            let res = if u5_data.iter().any(|&v| v >= 32) {
                Err(LocalError("u5 value out of range"))
            } else {
                let msg = Message::from_digest(hash_u5(hrp, u5_data));
                Ok(Secp256k1::new().sign_ecdsa_recoverable(&msg, &self.0))
            };
            async move { res }
        }
    }

    /// Answers with a fixed signature and remembers what it was asked.
    struct FixedSigner {
        sig: RecoverableSignature,
        asked: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    }

    impl InvoiceSigner for FixedSigner {
        type Error = LocalError;
        fn sign_invoice(
            &self,
            hrp: &[u8],
            u5_data: &[u8],
        ) -> impl Future<Output = Result<RecoverableSignature, LocalError>> + Send {
            *self.asked.lock().unwrap() = Some((hrp.to_vec(), u5_data.to_vec()));
            let sig = self.sig;
            async move { Ok(sig) }
        }
    }

    fn vectors() -> Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/vectors/bolt11-vectors.json"
        );
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn golden() -> Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/conformance/cln-hsmd-golden.json"
        );
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn h32(v: &Value) -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn pk(v: &Value) -> PublicKey {
        PublicKey::from_str(v.as_str().unwrap()).unwrap()
    }

    fn scid(s: &str) -> u64 {
        let p: Vec<u64> = s.split('x').map(|x| x.parse().unwrap()).collect();
        (p[0] << 40) | (p[1] << 16) | p[2]
    }

    /// The `9` field for big-endian feature bytes, through BOLT 11's own 5-bit encoding.
    fn features_field(be_hex: &str) -> TaggedField {
        let bytes = hex::decode(be_hex).unwrap();
        let mut bits: Vec<bool> = bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
            .collect();
        while !bits.len().is_multiple_of(5) {
            bits.insert(0, false);
        }
        let mut fes: Vec<Fe32> = bits
            .chunks(5)
            .map(|c| Fe32::try_from(c.iter().fold(0u8, |a, &b| a << 1 | u8::from(b))).unwrap())
            .collect();
        while fes.first() == Some(&Fe32::Q) {
            fes.remove(0);
        }
        // A data part of a zero timestamp and this one field, parsed by lightning-invoice.
        let len = fes.len();
        let mut data = vec![Fe32::Q; 7];
        data.push(Fe32::try_from(5u8).unwrap());
        data.push(Fe32::try_from((len / 32) as u8).unwrap());
        data.push(Fe32::try_from((len % 32) as u8).unwrap());
        data.extend(fes);
        let raw = RawBolt11Invoice::from_raw("lnbc", &data).unwrap();
        match &raw.data.tagged_fields[..] {
            [RawTaggedField::KnownSemantics(f @ TaggedField::Features(_))] => f.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// The unsigned invoice of a vector, built from its decoded fields in its field order.
    /// Fields that a reader must ignore carry no semantics in the vector file; their 5-bit
    /// content is taken from the vector string itself.
    fn raw_from_fields(v: &Value) -> RawBolt11Invoice {
        let d = &v["decoded"];
        let currency = Currency::from_str(d["currency_prefix"].as_str().unwrap()).unwrap();
        let timestamp = Duration::from_secs(d["timestamp"].as_u64().unwrap());
        // The hrp's amount and SI prefix, chosen by lightning-invoice's builder.
        let mut b = InvoiceBuilder::new(currency).duration_since_epoch(timestamp);
        if let Some(msat) = d["amount_msat"].as_u64() {
            b = b.amount_milli_satoshis(msat);
        }
        let RawBolt11Invoice {
            hrp,
            data: RawDataPart { timestamp, .. },
        } = b.build_raw().unwrap();
        assert_eq!(hrp.to_string(), d["hrp"].as_str().unwrap());

        let parsed: SignedRawBolt11Invoice = v["invoice"].as_str().unwrap().parse().unwrap();
        let parsed_fields = &parsed.raw_invoice().data.tagged_fields;
        let empty = Vec::new();
        let mut fallbacks = d["fallbacks"].as_array().unwrap_or(&empty).iter();
        let mut routes = d["route_hints"].as_array().unwrap_or(&empty).iter();
        let mut fields = Vec::new();
        let ignored = d["ignored_fields"].as_array().map_or(0, |f| f.len());
        for (i, tag) in d["field_order"].as_str().unwrap().chars().enumerate() {
            if let RawTaggedField::UnknownSemantics(fes) = &parsed_fields[i] {
                // A field the reader ignores.
                assert_eq!(fes[0].to_char(), tag);
                fields.push(RawTaggedField::UnknownSemantics(fes.clone()));
                continue;
            }
            let known_field = match tag {
                'p' => TaggedField::PaymentHash(Sha256(sha256::Hash::from_byte_array(h32(
                    &d["payment_hash"]
                )))),
                's' => TaggedField::PaymentSecret(PaymentSecret(h32(&d["payment_secret"]))),
                'd' => TaggedField::Description(
                    Description::new(d["description"].as_str().unwrap().to_string()).unwrap(),
                ),
                'h' => TaggedField::DescriptionHash(Sha256(sha256::Hash::from_byte_array(h32(
                    &d["description_hash"]
                )))),
                'x' => {
                    TaggedField::ExpiryTime(ExpiryTime::from_seconds(d["expiry"].as_u64().unwrap()))
                }
                'c' => TaggedField::MinFinalCltvExpiryDelta(MinFinalCltvExpiryDelta(
                    d["min_final_cltv_expiry_delta"].as_u64().unwrap(),
                )),
                'm' => TaggedField::PaymentMetadata(
                    hex::decode(d["metadata"].as_str().unwrap()).unwrap(),
                ),
                '9' => features_field(d["features_hex"].as_str().unwrap()),
                'f' => {
                    let f = fallbacks.next().unwrap();
                    let prog = hex::decode(f["program_hex"].as_str().unwrap()).unwrap();
                    TaggedField::Fallback(match f["version"].as_u64().unwrap() {
                        17 => Fallback::PubKeyHash(PubkeyHash::from_raw_hash(
                            hash160::Hash::from_slice(&prog).unwrap(),
                        )),
                        18 => Fallback::ScriptHash(ScriptHash::from_raw_hash(
                            hash160::Hash::from_slice(&prog).unwrap(),
                        )),
                        w => Fallback::SegWitProgram {
                            version: WitnessVersion::try_from(w as u8).unwrap(),
                            program: prog,
                        },
                    })
                }
                'r' => {
                    let hops = routes.next().unwrap().as_array().unwrap();
                    let hint = RouteHint(
                        hops.iter()
                            .map(|h| RouteHintHop {
                                src_node_id: pk(&h["pubkey"]),
                                short_channel_id: scid(h["short_channel_id"].as_str().unwrap()),
                                fees: RoutingFees {
                                    base_msat: h["fee_base_msat"].as_u64().unwrap() as u32,
                                    proportional_millionths: h["fee_proportional_millionths"]
                                        .as_u64()
                                        .unwrap()
                                        as u32,
                                },
                                cltv_expiry_delta: h["cltv_expiry_delta"].as_u64().unwrap() as u16,
                                htlc_minimum_msat: None,
                                htlc_maximum_msat: None,
                            })
                            .collect(),
                    );
                    TaggedField::PrivateRoute(PrivateRoute::new(hint).unwrap())
                }
                _ => panic!("unexpected field {tag} in {}", v["title"]),
            };
            fields.push(RawTaggedField::KnownSemantics(known_field));
        }
        let unknown = fields
            .iter()
            .filter(|f| matches!(f, RawTaggedField::UnknownSemantics(_)))
            .count();
        assert_eq!(unknown, ignored, "{}", v["title"]);
        RawBolt11Invoice {
            hrp,
            data: RawDataPart {
                timestamp,
                tagged_fields: fields,
            },
        }
    }

    fn sig_of(v: &Value) -> RecoverableSignature {
        let s = &v["decoded"]["signature"];
        let rs = hex::decode(s["rs_hex"].as_str().unwrap()).unwrap();
        let id = secp256k1::ecdsa::RecoveryId::from_i32(s["recovery_id"].as_i64().unwrap() as i32)
            .unwrap();
        RecoverableSignature::from_compact(&rs, id).unwrap()
    }

    /// Every valid vector, built from its fields and signed through [`InvoiceSigner`], is
    /// the vector's string; the spec's key signs those signed with it (RFC 6979 makes the
    /// signature the same), the high-S one gets the vector's signature.
    #[tokio::test]
    async fn encoder_reproduces_every_bolt11_vector() {
        let vs = vectors();
        let key =
            SecretKey::from_slice(&hex::decode(vs["priv_key"].as_str().unwrap()).unwrap()).unwrap();
        let spec_payee = pk(&vs["payee_pubkey"]);
        let local = LocalKeySigner(key);
        let valid = vs["valid"].as_array().unwrap();
        assert_eq!(valid.len(), 16);
        for v in valid {
            let title = v["title"].as_str().unwrap();
            let raw = raw_from_fields(v);
            assert_eq!(
                hex::encode(raw.signable_hash()),
                v["decoded"]["signature"]["sha256_hex"].as_str().unwrap(),
                "{title}"
            );
            let want = pk(&v["decoded"]["payee_pubkey"]);
            let inv = if v["signed_with_spec_priv_key"].as_bool().unwrap() {
                assert_eq!(want, spec_payee);
                sign_raw_invoice(&local, raw, Some(&spec_payee))
                    .await
                    .unwrap()
            } else {
                let fixed = FixedSigner {
                    sig: sig_of(v),
                    asked: Mutex::new(None),
                };
                sign_raw_invoice(&fixed, raw, Some(&want)).await.unwrap()
            };
            assert_eq!(
                inv.to_string(),
                v["invoice"].as_str().unwrap().to_lowercase(),
                "{title}"
            );
            assert_eq!(payee(&inv), want, "{title}");
        }
    }

    /// Every valid vector decodes to its fields; every invalid one is refused.
    #[test]
    fn decoder_reads_every_bolt11_vector() {
        let vs = vectors();
        for v in vs["valid"].as_array().unwrap() {
            let title = v["title"].as_str().unwrap();
            let d = &v["decoded"];
            let inv = decode_invoice(v["invoice"].as_str().unwrap()).unwrap();
            assert_eq!(
                inv.payment_hash().to_string(),
                d["payment_hash"].as_str().unwrap()
            );
            assert_eq!(
                hex::encode(inv.payment_secret().0),
                d["payment_secret"].as_str().unwrap()
            );
            assert_eq!(
                inv.amount_milli_satoshis(),
                d["amount_msat"].as_u64(),
                "{title}"
            );
            assert_eq!(
                inv.duration_since_epoch().as_secs(),
                d["timestamp"].as_u64().unwrap()
            );
            assert_eq!(
                inv.expiry_time().as_secs(),
                d["expiry"].as_u64().unwrap_or(3600),
                "{title}"
            );
            assert_eq!(payee(&inv), pk(&d["payee_pubkey"]), "{title}");
            match inv.description() {
                lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(desc) => {
                    assert_eq!(desc.to_string(), d["description"].as_str().unwrap())
                }
                lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(h) => {
                    assert_eq!(h.0.to_string(), d["description_hash"].as_str().unwrap())
                }
            }
            assert_eq!(
                inv.fallbacks().len(),
                d["fallbacks"].as_array().map_or(0, |f| f.len())
            );
            assert_eq!(
                inv.route_hints().len(),
                d["route_hints"].as_array().map_or(0, |r| r.len())
            );
            if let Some(c) = d["min_final_cltv_expiry_delta"].as_u64() {
                assert_eq!(inv.min_final_cltv_expiry_delta(), c);
            }
            if let Some(m) = d["metadata"].as_str() {
                assert_eq!(hex::encode(inv.payment_metadata().unwrap()), m);
            }
        }
        let invalid = vs["invalid"].as_array().unwrap();
        assert_eq!(invalid.len(), 10);
        for v in invalid {
            assert!(
                decode_invoice(v["invoice"].as_str().unwrap()).is_err(),
                "accepted: {}",
                v["title"]
            );
        }
    }

    const NODE_KEY: [u8; 32] = [0x41; 32];

    fn node() -> (LocalKeySigner, PublicKey) {
        let sk = SecretKey::from_slice(&NODE_KEY).unwrap();
        (LocalKeySigner(sk), sk.public_key(&Secp256k1::new()))
    }

    #[tokio::test]
    async fn issued_invoice_recovers_our_node_id() {
        let (signer, id) = node();
        let req = InvoiceRequest::new(Some(123_456), "coffee");
        let issued = create_invoice(&signer, &id, Network::Regtest, &req)
            .await
            .unwrap();
        let s = issued.invoice.to_string();
        assert!(s.starts_with("lnbcrt1234560p1"), "{s}");
        let back = decode_invoice(&s).unwrap();
        assert_eq!(payee(&back), id);
        assert_eq!(
            back.payee_pub_key(),
            None,
            "no n field: the id is recovered"
        );
        assert_eq!(*back.payment_hash(), issued.preimage.payment_hash());
        assert_eq!(back.payment_secret().0, issued.payment_secret);
        assert_eq!(back.amount_milli_satoshis(), Some(123_456));
        assert_eq!(back.expiry_time(), DEFAULT_EXPIRY);
        assert_eq!(back.min_final_cltv_expiry_delta(), 18);
        assert_eq!(back.currency(), Currency::Regtest);
        let f = back.features().unwrap();
        assert!(f.requires_payment_secret() && f.supports_basic_mpp());

        // Without an amount, on mainnet.
        let req = InvoiceRequest::new(None, "tip jar");
        let issued = create_invoice(&signer, &id, Network::Bitcoin, &req)
            .await
            .unwrap();
        assert!(issued.invoice.to_string().starts_with("lnbc1"));
        assert_eq!(issued.invoice.amount_milli_satoshis(), None);
    }

    #[tokio::test]
    async fn a_signature_by_another_key_is_caught() {
        let (_, id) = node();
        let other = LocalKeySigner(SecretKey::from_slice(&[0x42; 32]).unwrap());
        let req = InvoiceRequest::new(Some(1000), "x");
        let e = create_invoice(&other, &id, Network::Regtest, &req)
            .await
            .unwrap_err();
        assert!(
            matches!(e, InvoiceError::WrongSigner { expected, .. } if expected == NodeId::from_pubkey(&id))
        );

        // A signature over other bytes recovers some other key.
        let (signer, _) = node();
        let bad = FixedSigner {
            sig: Secp256k1::new().sign_ecdsa_recoverable(
                &Message::from_digest([9; 32]),
                &SecretKey::from_slice(&NODE_KEY).unwrap(),
            ),
            asked: Mutex::new(None),
        };
        let e = create_invoice(&bad, &id, Network::Regtest, &req)
            .await
            .unwrap_err();
        assert!(matches!(e, InvoiceError::WrongSigner { .. }), "{e}");
        let (hrp, u5) = bad.asked.lock().unwrap().take().unwrap();
        assert_eq!(hrp, b"lnbcrt10n");
        assert!(u5.iter().all(|&v| v < 32));
        // The same data part signed by our key is accepted.
        let raw = RawBolt11Invoice::from_raw("lnbcrt10n", &u5_to_fe32(&u5).unwrap()).unwrap();
        sign_raw_invoice(&signer, raw, Some(&id)).await.unwrap();
    }

    #[tokio::test]
    async fn bad_requests_and_signer_failures_are_errors() {
        let (signer, id) = node();
        let long = InvoiceRequest::new(Some(1), "x".repeat(640));
        assert!(matches!(
            create_invoice(&signer, &id, Network::Regtest, &long).await,
            Err(InvoiceError::Build(_))
        ));
        let huge = InvoiceRequest::new(Some(u64::MAX), "x");
        assert!(matches!(
            create_invoice(&signer, &id, Network::Regtest, &huge).await,
            Err(InvoiceError::Build(_))
        ));

        struct Failing;
        impl InvoiceSigner for Failing {
            type Error = LocalError;
            async fn sign_invoice(
                &self,
                _: &[u8],
                _: &[u8],
            ) -> Result<RecoverableSignature, LocalError> {
                Err(LocalError("no"))
            }
        }
        let req = InvoiceRequest::new(Some(1), "x");
        let e = create_invoice(&Failing, &id, Network::Regtest, &req)
            .await
            .unwrap_err();
        assert!(matches!(e, InvoiceError::Signer(_)));
        assert!(e.to_string().contains("local signer refused: no"));
    }

    #[test]
    fn u5_conversion_rejects_values_above_31() {
        assert_eq!(u5_to_fe32(&[0, 31]).unwrap().len(), 2);
        assert!(u5_to_fe32(&[32]).is_none());
    }

    /// The golden corpus: the `hsmd_sign_invoice` requests that lightningd sent, turned back
    /// into invoices, go out from [`HsmClient`] byte for byte; the recorded signatures make
    /// invoices that recover the node id of the init reply, and the invoice strings the
    /// corpus then preapproves.
    #[tokio::test]
    async fn hsmd_sign_invoice_matches_the_golden_corpus() {
        let g = golden();
        let mut checked = 0;
        for case in g["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            if name != "sign_invoice_regtest" && name != "sign_invoice_bitcoin" {
                continue;
            }
            let steps = case["steps"].as_array().unwrap();
            let bytes = |s: &Value, k: &str| hex::decode(s[k].as_str().unwrap()).unwrap();
            let init = InitReplyV4::decode(&bytes(&steps[0], "reply")).unwrap();
            let node_id = init.node_id.to_public_key().unwrap();
            let preapproved: Vec<String> = steps
                .iter()
                .filter(|s| {
                    s["request_name"]
                        .as_str()
                        .unwrap()
                        .starts_with("hsmd_preapprove_invoice")
                })
                .map(|s| {
                    let r = bytes(s, "request");
                    let end = r[2..].iter().position(|&b| b == 0).unwrap();
                    String::from_utf8(r[2..2 + end].to_vec()).unwrap()
                })
                .collect();
            let mut issued = Vec::new();
            for s in steps
                .iter()
                .filter(|s| s["request_name"] == "hsmd_sign_invoice")
            {
                let request = bytes(s, "request");
                let reply = bytes(s, "reply");
                let req = SignInvoice::decode(&request).unwrap();
                let hrp = std::str::from_utf8(&req.hrp).unwrap();
                let raw =
                    RawBolt11Invoice::from_raw(hrp, &u5_to_fe32(&req.u5bytes).unwrap()).unwrap();

                // Through the real client, against a fake proxy that checks the bytes.
                let (a, mut b) = UnixStream::pair().unwrap();
                let client = HsmClient::new(
                    crate::client::test_socket(a),
                    crate::client::ClientInfo::MASTER,
                    false,
                );
                let server = tokio::spawn(async move {
                    let got = tokio_io::read(&mut b).await.unwrap().unwrap();
                    tokio_io::write(&mut b, &reply).await.unwrap();
                    (got, b)
                });
                let inv = sign_raw_invoice(&client, raw, Some(&node_id))
                    .await
                    .unwrap();
                let (got, _b) = server.await.unwrap();
                assert_eq!(hex::encode(got), hex::encode(&request), "{name}");
                assert!(SignInvoiceReply::decode(&bytes(s, "reply")).is_ok());
                issued.push(inv.to_string());
                checked += 1;
            }
            assert_eq!(issued, preapproved, "{name}");
        }
        assert_eq!(checked, 6);
    }

    #[test]
    fn invoice_book_keeps_the_preimage() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (signer, id) = node();
        let issued = rt
            .block_on(create_invoice(
                &signer,
                &id,
                Network::Regtest,
                &InvoiceRequest::new(Some(5000), "book"),
            ))
            .unwrap();
        let mut book = InvoiceBook::open(dir.path()).unwrap();
        assert!(book.invoices().is_empty());
        book.add(&issued).unwrap();
        let again = InvoiceBook::open(dir.path()).unwrap();
        let rec = again.get(&issued.payment_hash()).unwrap();
        assert_eq!(rec.preimage, issued.preimage);
        assert_eq!(rec.preimage.payment_hash(), issued.payment_hash());
        assert_eq!(rec.invoice, issued.invoice.to_string());
        assert_eq!(format!("{:?}", rec.preimage), "PaymentPreimage(..)");

        std::fs::write(dir.path().join(INVOICES_FILE), b"{not json").unwrap();
        assert!(matches!(
            InvoiceBook::open(dir.path()),
            Err(InvoiceBookError::Corrupt { .. })
        ));
    }
}
