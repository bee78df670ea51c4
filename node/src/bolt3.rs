//! BOLT 3 transactions of a channel: the funding output, commitment transactions (with fee,
//! HTLC trimming and anchors), and their HTLC transactions.
//!
//! This is a thin layer over LDK's `lightning::ln::chan_utils`, which builds the outputs,
//! scripts, BIP 69 order and obscured commitment number. What this layer adds is what BOLT 3
//! asks of the *caller* of such a builder: which HTLCs are trimmed, the commitment fee and who
//! pays it, the anchors' cost, and which balance is dropped below the dust limit. It never
//! signs: signatures come from the signer (`sign_remote_commitment_tx`), and the peer's are
//! checked here with public keys only ([`verify_commitment_sig`]).
//!
//! Everything is computed from the point of view of the *holder* (this node): a commitment
//! belongs to an [`Owner`] (ours or the peer's), balances are "ours" and "theirs", and an
//! [`Htlc`] is offered or received by us. The builder passes every commitment of the
//! BOLT 3 test vectors (Appendices C and F) byte for byte.

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, SECP256K1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid, Witness};
use lightning::chain::transaction::OutPoint as LdkOutPoint;
use lightning::ln::chan_utils::{
    self, ChannelPublicKeys, ChannelTransactionParameters, CommitmentTransaction,
    CounterpartyChannelTransactionParameters, HTLCOutputInCommitment,
};
use lightning::ln::channel_keys::{DelayedPaymentBasepoint, HtlcBasepoint, RevocationBasepoint};
use lightning::types::features::ChannelTypeFeatures;
use lightning::types::payment::PaymentHash;
use serde::{Deserialize, Serialize};

/// The highest commitment number (BOLT 3: 48 bits).
pub const MAX_COMMITMENT_NUMBER: u64 = (1 << 48) - 1;
/// The value of each anchor output, in satoshis.
pub const ANCHOR_OUTPUT_SAT: u64 = 330;
/// Commitment weight without HTLC outputs (BOLT 3 "Fee Calculation").
pub const COMMITMENT_BASE_WEIGHT: u64 = 724;
/// Commitment weight without HTLC outputs, with anchors.
pub const COMMITMENT_BASE_WEIGHT_ANCHORS: u64 = 1124;
/// Weight each untrimmed HTLC output adds to a commitment.
pub const HTLC_OUTPUT_WEIGHT: u64 = 172;

/// Why a transaction could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Bolt3Error {
    /// The balances and HTLCs add up to more than the channel holds.
    #[error("balances and HTLCs ({total_msat} msat) exceed the channel value ({value_sat} sat)")]
    Overdrawn {
        /// What the commitment would distribute.
        total_msat: u128,
        /// The channel value.
        value_sat: u64,
    },
    /// A commitment number above 2^48 - 1.
    #[error("commitment number {0} is above 2^48 - 1")]
    CommitmentNumber(u64),
    /// A funding output index that BOLT 2 cannot carry (above 65535).
    #[error("funding output index {0} does not fit in 16 bits")]
    FundingIndex(u32),
}

/// The channel types this node opens and accepts (BOLT 2 `channel_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// `option_static_remotekey` (feature bit 12).
    StaticRemoteKey,
    /// `option_anchors_zero_fee_htlc_tx` with `option_static_remotekey` (bits 22 and 12).
    Anchors,
}

impl ChannelKind {
    /// The `channel_type` feature bits.
    pub fn feature_bits(self) -> &'static [usize] {
        match self {
            ChannelKind::StaticRemoteKey => &[12],
            ChannelKind::Anchors => &[12, 22],
        }
    }

    /// The type as LDK's `channel_type` features.
    pub fn features(self) -> ChannelTypeFeatures {
        match self {
            ChannelKind::StaticRemoteKey => ChannelTypeFeatures::only_static_remote_key(),
            ChannelKind::Anchors => ChannelTypeFeatures::anchors_zero_htlc_fee_and_dependencies(),
        }
    }

    /// The kind whose `channel_type` is exactly `features`, if it is one of ours.
    pub fn from_features(features: &ChannelTypeFeatures) -> Option<ChannelKind> {
        [ChannelKind::StaticRemoteKey, ChannelKind::Anchors]
            .into_iter()
            .find(|k| k.features() == *features)
    }

    /// Whether commitments have anchor outputs (and zero-fee HTLC transactions).
    pub fn has_anchors(self) -> bool {
        self == ChannelKind::Anchors
    }

    /// Commitment weight without HTLC outputs.
    pub fn commitment_base_weight(self) -> u64 {
        if self.has_anchors() {
            COMMITMENT_BASE_WEIGHT_ANCHORS
        } else {
            COMMITMENT_BASE_WEIGHT
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelKind::StaticRemoteKey => "static_remotekey",
            ChannelKind::Anchors => "anchors",
        })
    }
}

impl std::str::FromStr for ChannelKind {
    type Err = String;

    /// `static_remotekey` (or `static-remotekey`) and `anchors`.
    fn from_str(s: &str) -> Result<ChannelKind, String> {
        match s {
            "static_remotekey" | "static-remotekey" => Ok(ChannelKind::StaticRemoteKey),
            "anchors" => Ok(ChannelKind::Anchors),
            other => Err(format!(
                "unknown channel type {other:?}: expected static_remotekey or anchors"
            )),
        }
    }
}

/// One side's channel keys: its funding key and its four basepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelKeys {
    /// The funding key (2-of-2 output).
    #[serde(with = "crate::store::serde_hex::pubkey")]
    pub funding: PublicKey,
    /// Revocation basepoint.
    #[serde(with = "crate::store::serde_hex::pubkey")]
    pub revocation: PublicKey,
    /// Payment basepoint (with `option_static_remotekey`, the key of `to_remote`).
    #[serde(with = "crate::store::serde_hex::pubkey")]
    pub payment: PublicKey,
    /// Delayed payment basepoint.
    #[serde(with = "crate::store::serde_hex::pubkey")]
    pub delayed_payment: PublicKey,
    /// HTLC basepoint.
    #[serde(with = "crate::store::serde_hex::pubkey")]
    pub htlc: PublicKey,
}

impl ChannelKeys {
    fn to_ldk(self) -> ChannelPublicKeys {
        ChannelPublicKeys {
            funding_pubkey: self.funding,
            revocation_basepoint: RevocationBasepoint(self.revocation),
            payment_point: self.payment,
            delayed_payment_basepoint: DelayedPaymentBasepoint(self.delayed_payment),
            htlc_basepoint: HtlcBasepoint(self.htlc),
        }
    }
}

/// Whose commitment transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// Ours: we may broadcast it once the peer signed it.
    Holder,
    /// The peer's: we sign it.
    Counterparty,
}

/// The parameters of a channel that every commitment transaction depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelParams {
    /// The channel type.
    pub kind: ChannelKind,
    /// The funding outpoint.
    pub funding_outpoint: OutPoint,
    /// The channel value.
    pub value_sat: u64,
    /// Whether we opened (funded) the channel; the funder pays the commitment fee.
    pub we_opened: bool,
    /// Our keys.
    pub holder: ChannelKeys,
    /// The peer's keys.
    pub counterparty: ChannelKeys,
    /// The `to_self_delay` we asked of the peer: it delays the peer's own output on the
    /// peer's commitment.
    pub holder_selected_delay: u16,
    /// The `to_self_delay` the peer asked of us: it delays our own output on our commitment.
    pub counterparty_selected_delay: u16,
}

impl ChannelParams {
    /// The funding output's witness script (2-of-2 of the funding keys, BOLT 3 order).
    pub fn funding_witness_script(&self) -> ScriptBuf {
        funding_witness_script(&self.holder.funding, &self.counterparty.funding)
    }

    /// The funding output (P2WSH of the witness script, the channel value).
    pub fn funding_txout(&self) -> TxOut {
        TxOut {
            value: Amount::from_sat(self.value_sat),
            script_pubkey: self.funding_witness_script().to_p2wsh(),
        }
    }

    /// The per-commitment data LDK wants, for this channel.
    fn to_ldk(&self) -> Result<ChannelTransactionParameters, Bolt3Error> {
        let index = u16::try_from(self.funding_outpoint.vout)
            .map_err(|_| Bolt3Error::FundingIndex(self.funding_outpoint.vout))?;
        Ok(ChannelTransactionParameters {
            holder_pubkeys: self.holder.to_ldk(),
            holder_selected_contest_delay: self.holder_selected_delay,
            is_outbound_from_holder: self.we_opened,
            counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
                pubkeys: self.counterparty.to_ldk(),
                selected_contest_delay: self.counterparty_selected_delay,
            }),
            funding_outpoint: Some(LdkOutPoint {
                txid: self.funding_outpoint.txid,
                index,
            }),
            splice_parent_funding_txid: None,
            channel_type_features: self.kind.features(),
            channel_value_satoshis: self.value_sat,
        })
    }
}

/// An HTLC of the channel, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Htlc {
    /// Whether we offered it (an outgoing payment); otherwise the peer did.
    pub offered_by_us: bool,
    /// Its amount.
    pub amount_msat: u64,
    /// Its payment hash.
    pub payment_hash: [u8; 32],
    /// Its absolute CLTV expiry.
    pub cltv_expiry: u32,
}

/// What one commitment transaction contains before fees and trimming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitmentSpec {
    /// The commitment number (0 for the first).
    pub number: u64,
    /// The owner's per-commitment point for this number.
    pub per_commitment_point: PublicKey,
    /// Our balance, HTLCs excluded, before the fee.
    pub to_us_msat: u64,
    /// The peer's balance, HTLCs excluded, before the fee.
    pub to_them_msat: u64,
    /// The fee rate, satoshis per 1000 weight.
    pub feerate_per_kw: u32,
    /// The owner's dust limit: outputs below it are trimmed.
    pub dust_limit_sat: u64,
    /// The HTLCs in flight.
    pub htlcs: Vec<Htlc>,
}

/// An HTLC that has an output on a commitment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HtlcOutput {
    /// The HTLC.
    pub htlc: Htlc,
    /// Its output's index in the commitment.
    pub output_index: u32,
}

/// A built (unsigned) commitment transaction.
#[derive(Clone, Debug)]
pub struct Commitment {
    /// Whose it is.
    pub owner: Owner,
    /// The transaction, without witness.
    pub tx: Transaction,
    /// The fee it pays by BOLT 3's formula (trimmed value and rounding come on top).
    pub fee_sat: u64,
    /// The owner's balance output (0 when absent).
    pub to_broadcaster_sat: u64,
    /// The other side's balance output (0 when absent).
    pub to_countersignatory_sat: u64,
    /// The HTLCs with an output, in output order.
    pub htlc_outputs: Vec<HtlcOutput>,
    /// The HTLCs trimmed (below the dust limit plus their HTLC transaction's fee).
    pub trimmed: Vec<Htlc>,
    inner: CommitmentTransaction,
    params: ChannelTransactionParameters,
}

/// An HTLC transaction of a commitment (HTLC-timeout for an HTLC the owner offered,
/// HTLC-success for one it received), unsigned.
#[derive(Clone, Debug)]
pub struct HtlcTx {
    /// The HTLC and the commitment output it spends.
    pub output: HtlcOutput,
    /// The transaction.
    pub tx: Transaction,
    /// The witness script of the commitment output it spends.
    pub witness_script: ScriptBuf,
    /// The amount it spends.
    pub amount: Amount,
    /// Whether it is an HTLC-timeout (the owner offered the HTLC); else HTLC-success.
    pub is_timeout: bool,
}

/// The funding output's witness script for two funding keys (in either order).
pub fn funding_witness_script(a: &PublicKey, b: &PublicKey) -> ScriptBuf {
    chan_utils::make_funding_redeemscript(a, b)
}

/// The fee BOLT 3 gives a commitment with `untrimmed_htlcs` HTLC outputs.
pub fn commitment_fee_sat(kind: ChannelKind, feerate_per_kw: u32, untrimmed_htlcs: usize) -> u64 {
    let weight = kind.commitment_base_weight() + HTLC_OUTPUT_WEIGHT * untrimmed_htlcs as u64;
    u64::from(feerate_per_kw) * weight / 1000
}

/// The fees of the HTLC-success and HTLC-timeout transactions (0 with zero-fee anchors).
fn second_stage_fees_sat(kind: ChannelKind, feerate_per_kw: u32) -> (u64, u64) {
    if kind.has_anchors() {
        return (0, 0);
    }
    let f = kind.features();
    let feerate = u64::from(feerate_per_kw);
    (
        feerate * chan_utils::htlc_success_tx_weight(&f) / 1000,
        feerate * chan_utils::htlc_timeout_tx_weight(&f) / 1000,
    )
}

/// Builds the commitment transaction of `owner` (BOLT 3 "Commitment Transaction
/// Construction"): trims HTLCs, takes the fee (and the anchors) from the funder's balance,
/// drops balances below the dust limit, and lets LDK build and order the outputs.
///
/// # Errors
/// [`Bolt3Error`] when the balances and HTLCs exceed the channel value, the commitment
/// number is out of range, or the funding index does not fit.
pub fn build_commitment(
    params: &ChannelParams,
    owner: Owner,
    spec: &CommitmentSpec,
) -> Result<Commitment, Bolt3Error> {
    if spec.number > MAX_COMMITMENT_NUMBER {
        return Err(Bolt3Error::CommitmentNumber(spec.number));
    }
    let total_msat = u128::from(spec.to_us_msat)
        + u128::from(spec.to_them_msat)
        + spec
            .htlcs
            .iter()
            .map(|h| u128::from(h.amount_msat))
            .sum::<u128>();
    if total_msat > u128::from(params.value_sat) * 1000 {
        return Err(Bolt3Error::Overdrawn {
            total_msat,
            value_sat: params.value_sat,
        });
    }
    let ldk_params = params.to_ldk()?;
    let holder_owns = owner == Owner::Holder;
    let (success_fee, timeout_fee) = second_stage_fees_sat(params.kind, spec.feerate_per_kw);

    let mut untrimmed = Vec::new();
    let mut trimmed = Vec::new();
    for h in &spec.htlcs {
        // Offered by the commitment's owner: it is an HTLC-timeout on this commitment.
        let offered = h.offered_by_us == holder_owns;
        let second_stage_fee = if offered { timeout_fee } else { success_fee };
        if h.amount_msat / 1000 < spec.dust_limit_sat.saturating_add(second_stage_fee) {
            trimmed.push(*h);
        } else {
            untrimmed.push(HTLCOutputInCommitment {
                offered,
                amount_msat: h.amount_msat,
                cltv_expiry: h.cltv_expiry,
                payment_hash: PaymentHash(h.payment_hash),
                transaction_output_index: None,
            });
        }
    }

    let fee_sat = commitment_fee_sat(params.kind, spec.feerate_per_kw, untrimmed.len());
    let anchors_sat = if params.kind.has_anchors() {
        2 * ANCHOR_OUTPUT_SAT
    } else {
        0
    };
    let (mut ours, mut theirs) = (spec.to_us_msat, spec.to_them_msat);
    let funder = if params.we_opened {
        &mut ours
    } else {
        &mut theirs
    };
    *funder = funder.saturating_sub((fee_sat + anchors_sat).saturating_mul(1000));
    let (to_broadcaster_msat, to_countersignatory_msat) = if holder_owns {
        (ours, theirs)
    } else {
        (theirs, ours)
    };
    let above_dust = |msat: u64| {
        let sat = msat / 1000;
        if sat < spec.dust_limit_sat {
            0
        } else {
            sat
        }
    };
    let to_broadcaster_sat = above_dust(to_broadcaster_msat);
    let to_countersignatory_sat = above_dust(to_countersignatory_msat);

    let directed = if holder_owns {
        ldk_params.as_holder_broadcastable()
    } else {
        ldk_params.as_counterparty_broadcastable()
    };
    // LDK counts commitment numbers down from 2^48 - 1.
    let inner = CommitmentTransaction::new(
        MAX_COMMITMENT_NUMBER - spec.number,
        &spec.per_commitment_point,
        to_broadcaster_sat,
        to_countersignatory_sat,
        spec.feerate_per_kw,
        untrimmed,
        &directed,
        SECP256K1,
    );
    let tx = inner.trust().built_transaction().transaction.clone();
    let htlc_outputs = inner
        .nondust_htlcs()
        .iter()
        .filter_map(|h| {
            Some(HtlcOutput {
                htlc: Htlc {
                    offered_by_us: h.offered == holder_owns,
                    amount_msat: h.amount_msat,
                    payment_hash: h.payment_hash.0,
                    cltv_expiry: h.cltv_expiry,
                },
                output_index: h.transaction_output_index?,
            })
        })
        .collect();
    Ok(Commitment {
        owner,
        tx,
        fee_sat,
        to_broadcaster_sat,
        to_countersignatory_sat,
        htlc_outputs,
        trimmed,
        inner,
        params: ldk_params,
    })
}

impl Commitment {
    /// The transaction id.
    pub fn txid(&self) -> Txid {
        self.tx.compute_txid()
    }

    /// The HTLC transactions spending this commitment's HTLC outputs, in output order.
    pub fn htlc_transactions(&self) -> Vec<HtlcTx> {
        let trusted = self.inner.trust();
        let keys = trusted.keys();
        let directed = match self.owner {
            Owner::Holder => self.params.as_holder_broadcastable(),
            Owner::Counterparty => self.params.as_counterparty_broadcastable(),
        };
        let features = &self.params.channel_type_features;
        let txid = self.txid();
        self.inner
            .nondust_htlcs()
            .iter()
            .filter_map(|h| {
                let output_index = h.transaction_output_index?;
                let tx = chan_utils::build_htlc_transaction(
                    &txid,
                    self.inner.negotiated_feerate_per_kw(),
                    directed.contest_delay(),
                    h,
                    features,
                    &keys.broadcaster_delayed_payment_key,
                    &keys.revocation_key,
                );
                Some(HtlcTx {
                    output: HtlcOutput {
                        htlc: Htlc {
                            offered_by_us: h.offered == (self.owner == Owner::Holder),
                            amount_msat: h.amount_msat,
                            payment_hash: h.payment_hash.0,
                            cltv_expiry: h.cltv_expiry,
                        },
                        output_index,
                    },
                    tx,
                    witness_script: chan_utils::get_htlc_redeemscript(h, features, keys),
                    amount: h.to_bitcoin_amount(),
                    is_timeout: h.offered,
                })
            })
            .collect()
    }
}

impl HtlcTx {
    /// The BIP 143 digest of this transaction's input that the owner's side signs
    /// (`SIGHASH_ALL`).
    pub fn sighash_all(&self) -> Message {
        let hash = SighashCache::new(&self.tx)
            .p2wsh_signature_hash(0, &self.witness_script, self.amount, EcdsaSighashType::All)
            .expect("input 0 exists: an HTLC transaction has exactly one input");
        Message::from_digest(hash.to_byte_array())
    }

    /// This transaction with its witness: the other side's signature (`SIGHASH_ALL`, or
    /// `SIGHASH_SINGLE|ANYONECANPAY` with anchors), the owner's, and for HTLC-success the
    /// preimage.
    pub fn with_witness(
        &self,
        kind: ChannelKind,
        owner_sig: &ecdsa::Signature,
        other_sig: &ecdsa::Signature,
        preimage: Option<[u8; 32]>,
    ) -> Transaction {
        let mut tx = self.tx.clone();
        tx.input[0].witness = chan_utils::build_htlc_input_witness(
            owner_sig,
            other_sig,
            &preimage.map(lightning::types::payment::PaymentPreimage),
            &self.witness_script,
            &kind.features(),
        );
        tx
    }
}

/// The BIP 143 digest a commitment's funding signature signs (`SIGHASH_ALL`, input 0).
pub fn commitment_sighash(tx: &Transaction, params: &ChannelParams) -> Option<Message> {
    let script = params.funding_witness_script();
    SighashCache::new(tx)
        .p2wsh_signature_hash(
            0,
            &script,
            Amount::from_sat(params.value_sat),
            EcdsaSighashType::All,
        )
        .ok()
        .map(|h| Message::from_digest(h.to_byte_array()))
}

/// Whether `sig` is `key`'s valid funding signature on commitment `tx`.
pub fn verify_commitment_sig(
    tx: &Transaction,
    params: &ChannelParams,
    sig: &ecdsa::Signature,
    key: &PublicKey,
) -> bool {
    commitment_sighash(tx, params).is_some_and(|m| SECP256K1.verify_ecdsa(&m, sig, key).is_ok())
}

/// A commitment with its funding witness (`0`, both signatures in funding-key order, the
/// witness script): the transaction that can be broadcast.
pub fn finalize_commitment(
    tx: &Transaction,
    params: &ChannelParams,
    holder_sig: &ecdsa::Signature,
    counterparty_sig: &ecdsa::Signature,
) -> Transaction {
    let script = params.funding_witness_script();
    let holder_first =
        params.holder.funding.serialize()[..] < params.counterparty.funding.serialize()[..];
    let (first, second) = if holder_first {
        (holder_sig, counterparty_sig)
    } else {
        (counterparty_sig, holder_sig)
    };
    let mut witness = Witness::new();
    witness.push(Vec::new());
    witness.push_ecdsa_signature(&bitcoin::ecdsa::Signature::sighash_all(*first));
    witness.push_ecdsa_signature(&bitcoin::ecdsa::Signature::sighash_all(*second));
    witness.push(script.as_bytes());
    let mut tx = tx.clone();
    if let Some(input) = tx.input.first_mut() {
        input.witness = witness;
    }
    tx
}

/// The channel id of a funding outpoint (BOLT 2: the txid, in wire order, with its last
/// two bytes XORed with the output index).
pub fn channel_id(funding: &OutPoint) -> [u8; 32] {
    let mut id = funding.txid.to_byte_array();
    let index = (funding.vout & 0xffff) as u16;
    id[30] ^= (index >> 8) as u8;
    id[31] ^= (index & 0xff) as u8;
    id
}

#[cfg(test)]
mod tests;
