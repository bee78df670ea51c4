//! The on-chain rules: where withdrawals, sweeps and mutual closes may send funds, how much an
//! on-chain transaction may pay in fees, and that what we sign cannot have its txid malleated.
//!
//! | rule | refuses |
//! |---|---|
//! | `onchain-destination-allowlisted` | an output that pays neither our wallet, nor the channel's shutdown script (mutual close), nor an allowlisted destination |
//! | `onchain-fee-cap` | a fee above `max_onchain_fee_sat`, a fee rate above `max_onchain_feerate_per_kw`, or a fee that cannot be known (an input without amount) |
//! | `funding-output-exact` | a withdrawal output to a channel's funding script that is not that channel's funding output: the channel value, at the funding outpoint `setup_channel` named |
//! | `close-balance` | a mutual close that pays us less than our balance on the channel's newest commitments less the closing fee, or that closes while HTLCs are pending |
//! | `funding-segwit-only` | a PSBT (withdrawal, anchor spend, HTLC mingle, splice) with an input that does not provably spend a segwit output |
//!
//! **Destinations.** An output is allowed when it pays
//! - nothing: a zero-value output moves no funds (what it burns is fee, and fees are capped);
//! - our wallet: the P2WPKH or P2TR (BIP86 key path) script of wallet key `i`, the key
//!   `sign_withdrawal` spends wallet UTXO `i` with (m/0/0/`i`, or m/86'/0'/0'/0/`i` for a
//!   mnemonic secret). A PSBT output whose BIP32 or taproot derivation names a wallet index is
//!   checked at that index (any index); any other output is compared with the first
//!   `wallet_scan_depth` keys;
//! - an allowlisted destination (`Limits::allowlist`): an address of this node's network, or
//!   an extended public key whose first `allowlist_xpub_depth` receive (0/`i`) and change
//!   (1/`i`) P2WPKH or P2TR addresses are allowed. Entries that do not parse, or are for
//!   another network, allow nothing (and say so in the log).
//!
//! What each request may pay besides:
//! - `sign_withdrawal`: the funding output (P2WSH of the 2-of-2 of its funding keys) of a
//!   channel that was set up and not forgotten, so that channels can be funded: exactly the
//!   channel value, at the funding outpoint of `setup_channel` (or the one `lock_outpoint`
//!   moved it to), so a funding is paid once and for what the channel holds;
//! - `sign_htlc_tx_mingle`: the output paired with (at the index of) an input that spends
//!   none of the listed UTXOs and is known to hold at least that output's value (an output of
//!   our commitment signed for broadcast, or proven by the spent transaction in the PSBT; never
//!   the node's claim): the HTLC transaction's own output, which its `SIGHASH_SINGLE`
//!   signature already fixed and its input pays for;
//! - `sign_any_local_htlc_tx`: the BOLT 3 delayed output of our commitment `commit_num`;
//! - `sign_mutual_close_tx`: our output must pay the channel's shutdown script
//!   (`local_shutdown_script`, or the wallet key `local_shutdown_wallet_index`) when
//!   `setup_channel` gave one, else the wallet or the allowlist; every other output is the
//!   peer's, which must pay its `remote_shutdown_script` when there is one (at most one
//!   output otherwise).
//!
//! **Fees** are the sum of the input amounts (`witness_utxo`, or the spent output of a
//! `non_witness_utxo` whose txid is the spent one) minus the outputs; the fee rate divides it by
//! the weight of the transaction once signed, estimated from each input's script type (see
//! [`estimated_weight`]; a lower bound, so the rate is never underestimated).
//!
//! Nothing here keeps state: every check is a function of the request, the keys, the policy
//! and (for channel funding and mutual closes) the channel's stored setup.

use crate::bolt3::funding_redeem_script;
use crate::bolt3::{revocation_pubkey, to_local_script};
use crate::context::ChannelKey;
use crate::error::Result;
use crate::handler::Req;
use crate::keys::channel::derive_simple_pubkey;
use crate::keys::{Bip32Version, KeyManager};
use crate::store::ChannelState;
use bitcoin::address::NetworkUnchecked;
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Output as PsbtOutput, Psbt};
use bitcoin::{
    Address, CompressedPublicKey, Network, NetworkKind, OutPoint, Script, ScriptBuf, Transaction,
    TxOut,
};
use protocol::msgs::SetupChannel;
use protocol::types::{BitcoinTx, HsmUtxo};
use secp256k1::{PublicKey, SECP256K1};
use std::str::FromStr;

/// Rule: outputs pay only the wallet, the shutdown script or allowlisted destinations.
pub(crate) const DESTINATION: &str = "onchain-destination-allowlisted";
/// Rule: absolute fee and fee rate caps.
pub(crate) const FEE_CAP: &str = "onchain-fee-cap";
/// Rule: only segwit inputs in a PSBT we sign.
pub(crate) const SEGWIT_ONLY: &str = "funding-segwit-only";
/// Rule: a withdrawal funds a channel only with its funding output, exactly.
pub(crate) const FUNDING_EXACT: &str = "funding-output-exact";
/// Rule: a mutual close pays us our balance, less at most the closing fee.
pub(crate) const CLOSE_BALANCE: &str = "close-balance";

/// The wallet request a PSBT comes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalletRequest {
    /// `sign_withdrawal`: withdrawals, channel funding, our inputs of a splice.
    Withdrawal,
    /// `sign_anchorspend`: a CPFP child of a commitment.
    Anchorspend,
    /// `sign_htlc_tx_mingle`: wallet inputs added to an HTLC transaction.
    HtlcTxMingle,
}

/// The checks of `sign_withdrawal`, `sign_anchorspend` and `sign_htlc_tx_mingle`, before
/// anything is signed: segwit inputs only, the fee cap, and every output to an allowed
/// destination (see the module documentation).
///
/// # Errors
/// [`crate::SignerError::Policy`] naming the rule violated (enforce mode); a storage error
/// if the channels cannot be read.
pub(crate) fn check_wallet_tx(
    r: &Req<'_>,
    request: WalletRequest,
    psbt: &Psbt,
    utxos: &[HsmUtxo],
) -> Result<()> {
    let tx = &psbt.unsigned_tx;
    check_segwit_inputs(r, tx, psbt)?;
    check_fee(r, tx, psbt)?;
    let mut open = Destinations::wallet_and_allowlist(r).unmatched(tx, &psbt.outputs);
    if request == WalletRequest::HtlcTxMingle && !open.is_empty() {
        let known = broadcast_commitment_outputs(r)?;
        open.retain(|&i| !paired_with_foreign_input(psbt, utxos, i, &known));
    }
    if request == WalletRequest::Withdrawal && !open.is_empty() {
        let funding = channel_fundings(r)?;
        let txid = tx.compute_txid();
        let mut misfunded = Vec::new();
        open.retain(|&i| {
            let out = &tx.output[i];
            let paying: Vec<&ChannelFunding> = funding
                .iter()
                .filter(|f| f.script == out.script_pubkey)
                .collect();
            if paying.is_empty() {
                return true;
            }
            let exact = paying.iter().any(|f| {
                f.value_sat == out.value.to_sat()
                    && f.outpoints.contains(&OutPoint {
                        txid,
                        vout: i as u32,
                    })
            });
            if !exact {
                misfunded.push(i);
            }
            false
        });
        r.policy.check(FUNDING_EXACT, misfunded.is_empty(), || {
            format!(
                "{txid} pays a channel's funding script other than as that channel's funding output (its value, at the outpoint set up): {}",
                describe_outputs(tx, &misfunded)
            )
        })?;
    }
    report_destinations(r, tx, &open, "our wallet or an allowlisted destination")
}

/// The checks of a sweep (`sign_*_to_us`, `sign_any_*`) of `channel`: its output pays the
/// wallet or the allowlist (or, for our own HTLC transaction of commitment
/// `local_htlc_commitment`, its BOLT 3 delayed output), and the fee cap.
///
/// # Errors
/// [`crate::SignerError::Policy`] naming the rule violated (enforce mode).
pub(crate) fn check_sweep(
    r: &mut Req<'_>,
    channel: &ChannelKey,
    tx: &BitcoinTx,
    local_htlc_commitment: Option<u64>,
) -> Result<()> {
    let extra = match local_htlc_commitment {
        Some(n) => {
            let state = r.channel_state(channel)?;
            delayed_output_scripts(r, channel, &state, n)
        }
        None => Vec::new(),
    };
    let mut dest = Destinations::wallet_and_allowlist(r);
    dest.extra = extra;
    let open = dest.unmatched(&tx.tx, &tx.psbt.outputs);
    let what = if local_htlc_commitment.is_some() {
        "our wallet, an allowlisted destination or the HTLC transaction's delayed output"
    } else {
        "our wallet or an allowlisted destination"
    };
    report_destinations(r, &tx.tx, &open, what)?;
    check_fee(r, &tx.tx, &tx.psbt)
}

/// The checks of `sign_mutual_close_tx` on `channel` (set up, with `state`): our output pays
/// the shutdown script (or the wallet or allowlist when there is none), the peer's its own,
/// and the fee cap.
///
/// # Errors
/// [`crate::SignerError::Policy`] naming the rule violated (enforce mode).
pub(crate) fn check_mutual_close(
    r: &Req<'_>,
    channel: &ChannelKey,
    state: &ChannelState,
    tx: &BitcoinTx,
) -> Result<()> {
    let setup = decode_setup(channel, state);
    let mut dest = Destinations::wallet_and_allowlist(r);
    let (ours, theirs) = match &setup {
        Some(s)
            if !s.local_shutdown_script.is_empty() || s.local_shutdown_wallet_index.is_some() =>
        {
            dest.wallet_and_allowlist = false;
            dest.extra = std::iter::once(ScriptBuf::from_bytes(s.local_shutdown_script.clone()))
                .filter(|s| !s.is_empty())
                .chain(s.local_shutdown_wallet_index.into_iter().flat_map(|i| {
                    wallet_pubkey(r.keys(), i).map_or_else(Vec::new, |k| key_scripts(&k).to_vec())
                }))
                .collect();
            (
                "the channel's shutdown script",
                s.remote_shutdown_script.clone(),
            )
        }
        s => (
            "our wallet or an allowlisted destination",
            s.as_ref()
                .map(|s| s.remote_shutdown_script.clone())
                .unwrap_or_default(),
        ),
    };
    let open = dest.unmatched(&tx.tx, &tx.psbt.outputs);
    let strays: Vec<usize> = if !theirs.is_empty() {
        open.iter()
            .copied()
            .filter(|&i| tx.tx.output[i].script_pubkey.as_bytes() != theirs)
            .collect()
    } else if open.len() <= 1 {
        Vec::new()
    } else {
        open.clone()
    };
    r.policy.check(DESTINATION, strays.is_empty(), || {
        let peer = if theirs.is_empty() {
            "at most one output may be the peer's".to_string()
        } else {
            format!("the peer's must pay its shutdown script {}", hex::encode(&theirs))
        };
        format!(
            "mutual close of channel {} with peer {}: {}: neither to {ours} nor to the peer ({peer})",
            channel.dbid,
            channel.peer_id,
            describe_outputs(&tx.tx, &strays)
        )
    })?;
    if let Some(setup) = &setup {
        check_close_balance(r, channel, setup, state, &tx.tx, &open)?;
    }
    check_fee(r, &tx.tx, &tx.psbt)
}

/// `close-balance`: a mutual close pays us what the channel owes us (see
/// [`crate::policy_channel::close_entitlement`]) less at most the whole closing fee (whoever
/// pays it by the protocol; `onchain-fee-cap` bounds it), and never while HTLCs are pending.
/// `open` are the outputs that pay none of our destinations; every other output is ours. A
/// balance the closing fee leaves below the dust limit may have no output at all.
fn check_close_balance(
    r: &Req<'_>,
    channel: &ChannelKey,
    setup: &SetupChannel,
    state: &ChannelState,
    tx: &Transaction,
    open: &[usize],
) -> Result<()> {
    let entitled = crate::policy_channel::close_entitlement(setup, state);
    let ours: u64 = (0..tx.output.len())
        .filter(|i| !open.contains(i))
        .map(|i| tx.output[i].value.to_sat())
        .sum();
    let outputs: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    let fee = setup.channel_value.to_sat().saturating_sub(outputs);
    // BOLT 3 rounds each balance down to satoshis on either transaction: one satoshi of slack.
    let floor = entitled.map(|e| e.saturating_sub(fee).saturating_sub(1));
    let dust = r.policy.limits.max_dust_limit_sat;
    r.policy.check(
        CLOSE_BALANCE,
        floor.is_some_and(|f| ours >= f || (ours == 0 && f < dust)),
        || match entitled {
            None => format!(
                "mutual close of channel {} with peer {}: HTLCs are still pending on its newest commitments",
                channel.dbid, channel.peer_id
            ),
            Some(e) => format!(
                "mutual close of channel {} with peer {} pays us {ours} sat; our balance is {e} sat and the closing fee {fee} sat",
                channel.dbid, channel.peer_id
            ),
        },
    )
}

/// The checks of `sign_splice_tx`: the splice is a funding transaction, so every input must
/// be segwit; and the fee cap. (Its outputs belong to both peers, so where they pay is left
/// to the channel's protocol; our wallet inputs are checked by `sign_withdrawal`.)
///
/// # Errors
/// [`crate::SignerError::Policy`] naming the rule violated (enforce mode).
pub(crate) fn check_splice(r: &Req<'_>, tx: &BitcoinTx) -> Result<()> {
    check_segwit_inputs(r, &tx.tx, &tx.psbt)?;
    check_fee(r, &tx.tx, &tx.psbt)
}

/// Checks that every entry of an allowlist parses (an address, or an extended public key),
/// for `network` when given; returns the first that does not, with why.
///
/// # Errors
/// The offending entry and the reason, for the operator.
///
/// Called when a policy file is loaded, so that a typo is refused up front.
pub(crate) fn validate_allowlist(
    entries: &[String],
    network: Option<NetworkKind>,
) -> std::result::Result<(), String> {
    for entry in entries {
        Allowed::parse(entry, network).map_err(|e| format!("allowlist entry `{entry}`: {e}"))?;
    }
    Ok(())
}

/// `funding-segwit-only`: every input of `tx` spends an output that is a witness program (or
/// P2SH of a witness redeem script given in the PSBT), as its PSBT input shows.
fn check_segwit_inputs(r: &Req<'_>, tx: &Transaction, psbt: &Psbt) -> Result<()> {
    let legacy: Vec<usize> = (0..tx.input.len())
        .filter(|&i| !spends_segwit(tx, psbt, i))
        .collect();
    r.policy.check(SEGWIT_ONLY, legacy.is_empty(), || {
        format!(
            "input(s) {legacy:?} of {} do not provably spend segwit outputs (a witness_utxo with \
             a witness program, or P2SH of a witness redeem script): the txid could be malleated",
            tx.compute_txid()
        )
    })
}

fn spends_segwit(tx: &Transaction, psbt: &Psbt, index: usize) -> bool {
    let Some(spent) = spent_output(tx, psbt, index) else {
        return false;
    };
    let spk = &spent.script_pubkey;
    if spk.is_witness_program() {
        return true;
    }
    let redeem = psbt
        .inputs
        .get(index)
        .and_then(|i| i.redeem_script.as_ref());
    spk.is_p2sh()
        && redeem.is_some_and(|rs| {
            rs.is_witness_program() && ScriptBuf::new_p2sh(&rs.script_hash()) == *spk
        })
}

/// The output input `index` of `tx` spends, as its PSBT input tells: from the spent transaction
/// when the PSBT carries it (`non_witness_utxo`; see [`proven_spent_output`]), else the
/// `witness_utxo`.
fn spent_output<'a>(tx: &Transaction, psbt: &'a Psbt, index: usize) -> Option<&'a TxOut> {
    let input = psbt.inputs.get(index)?;
    if input.non_witness_utxo.is_some() {
        // The spent transaction decides; a witness_utxo that disagrees with it is a lie.
        return proven_spent_output(tx, psbt, index);
    }
    input.witness_utxo.as_ref()
}

/// `onchain-fee-cap` on `tx` with the amounts of `psbt`'s inputs.
fn check_fee(r: &Req<'_>, tx: &Transaction, psbt: &Psbt) -> Result<()> {
    let limits = &r.policy.limits;
    let mut total_in: u64 = 0;
    for index in 0..tx.input.len() {
        let Some(spent) = spent_output(tx, psbt, index) else {
            return r.policy.check(FEE_CAP, false, || {
                format!(
                    "input {index} of {} carries no amount that holds (no witness_utxo, nor the \
                     spent transaction as non_witness_utxo, or one that does not hash to the \
                     txid or disagrees with witness_utxo): its fee cannot be checked",
                    tx.compute_txid()
                )
            });
        };
        total_in = total_in.saturating_add(spent.value.to_sat());
    }
    let total_out = tx
        .output
        .iter()
        .fold(0u64, |sum, o| sum.saturating_add(o.value.to_sat()));
    // Outputs above the inputs make an invalid transaction, not a fee.
    let fee = total_in.saturating_sub(total_out);
    let weight = estimated_weight(tx, psbt).max(1);
    let rate = u64::try_from(u128::from(fee) * 1000 / u128::from(weight)).unwrap_or(u64::MAX);
    r.policy.check(
        FEE_CAP,
        fee <= limits.max_onchain_fee_sat && rate <= limits.max_onchain_feerate_per_kw,
        || {
            format!(
                "{} pays a fee of {fee} sat at {rate} sat/kw (estimated weight {weight}); the \
                 caps are {} sat and {} sat/kw",
                tx.compute_txid(),
                limits.max_onchain_fee_sat,
                limits.max_onchain_feerate_per_kw
            )
        },
    )
}

/// The weight of `tx` once signed, estimated from below: the transaction without witnesses,
/// plus for each input its witness if it has one (in the transaction or as the PSBT's final
/// witness), else the smallest witness of its script type (P2WPKH 108, P2TR key path 66,
/// P2WSH one signature and the witness script when the PSBT has it), plus a P2SH redeem
/// script push for wrapped segwit and a minimal P2PKH script for legacy inputs.
pub(crate) fn estimated_weight(tx: &Transaction, psbt: &Psbt) -> u64 {
    let mut base = tx.base_size() as u64;
    let mut witness: u64 = 0;
    let mut segwit = false;
    for (index, txin) in tx.input.iter().enumerate() {
        let input = psbt.inputs.get(index);
        if !txin.witness.is_empty() {
            witness += txin.witness.size() as u64;
            segwit = true;
            continue;
        }
        if let Some(w) = input.and_then(|i| i.final_script_witness.as_ref()) {
            witness += w.size() as u64;
            segwit = true;
            continue;
        }
        let Some(spent) = spent_output(tx, psbt, index) else {
            witness += 1;
            continue;
        };
        let mut script: &Script = &spent.script_pubkey;
        if script.is_p2sh() && txin.script_sig.is_empty() {
            if let Some(redeem) = input.and_then(|i| i.redeem_script.as_ref()) {
                // A push of the redeem script (its length stays a one-byte varint below 76).
                base += redeem.len() as u64 + 1;
                script = redeem;
            }
        }
        witness += if script.is_p2wpkh() {
            segwit = true;
            1 + 1 + 72 + 1 + 33
        } else if script.is_p2tr() {
            segwit = true;
            1 + 1 + 64
        } else if script.is_p2wsh() {
            segwit = true;
            let ws = input
                .and_then(|i| i.witness_script.as_ref())
                .map_or(0, |ws| ws.len() as u64 + if ws.len() < 253 { 1 } else { 3 });
            1 + 1 + 72 + ws
        } else if script.is_witness_program() {
            segwit = true;
            1
        } else {
            if txin.script_sig.is_empty() {
                base += 1 + 72 + 1 + 33;
            }
            1
        };
    }
    if segwit {
        base * 4 + 2 + witness
    } else {
        base * 4
    }
}

/// Where outputs may pay: see the module documentation.
struct Destinations<'a> {
    keys: &'a KeyManager,
    limits: &'a crate::limits::Limits,
    network: Option<NetworkKind>,
    /// Whether the wallet and the allowlist are allowed.
    wallet_and_allowlist: bool,
    /// Further scripts allowed (a shutdown script, our HTLC transaction's output).
    extra: Vec<ScriptBuf>,
}

impl<'a> Destinations<'a> {
    fn wallet_and_allowlist(r: &'a Req<'_>) -> Destinations<'a> {
        let v = &r.session.bip32;
        let network = Bip32Version::from_init(v.pubkey_version, v.privkey_version)
            .ok()
            .map(Bip32Version::network_kind);
        Destinations {
            keys: r.keys(),
            limits: &r.policy.limits,
            network,
            wallet_and_allowlist: true,
            extra: Vec::new(),
        }
    }

    /// The indexes of the outputs of `tx` that pay none of the allowed destinations, cheapest
    /// checks first (`outputs` are the PSBT's outputs, with their key derivations).
    fn unmatched(&self, tx: &Transaction, outputs: &[PsbtOutput]) -> Vec<usize> {
        let mut open: Vec<usize> = (0..tx.output.len())
            .filter(|&i| {
                let out = &tx.output[i];
                let extra =
                    !out.script_pubkey.is_empty() && self.extra.contains(&out.script_pubkey);
                out.value.to_sat() != 0 && !extra
            })
            .collect();
        if !self.wallet_and_allowlist || open.is_empty() {
            return open;
        }
        open.retain(|&i| {
            !outputs
                .get(i)
                .is_some_and(|o| self.names_wallet_key(o, &tx.output[i].script_pubkey))
        });
        let allowed: Vec<Allowed> = self
            .limits
            .allowlist
            .iter()
            .filter_map(|entry| match Allowed::parse(entry, self.network) {
                Ok(a) => Some(a),
                Err(e) => {
                    log::warn!("allowlist entry `{entry}` allows nothing: {e}");
                    None
                }
            })
            .collect();
        open.retain(|&i| {
            !allowed
                .iter()
                .any(|a| matches!(a, Allowed::Script(s) if *s == tx.output[i].script_pubkey))
        });
        if let Some(base) = wallet_base(self.keys) {
            scan(&base, self.limits.wallet_scan_depth, tx, &mut open);
        }
        for xpub in allowed.iter().filter_map(|a| match a {
            Allowed::Xpub(x) => Some(x),
            Allowed::Script(_) => None,
        }) {
            for chain in [0, 1] {
                if let Ok(branch) = xpub.ckd_pub(SECP256K1, ChildNumber::Normal { index: chain }) {
                    scan(&branch, self.limits.allowlist_xpub_depth, tx, &mut open);
                }
            }
        }
        open
    }

    /// Whether the PSBT output names, by BIP32 or taproot derivation, a wallet key whose
    /// script `script` is (verified by deriving the key at the index named).
    fn names_wallet_key(&self, output: &PsbtOutput, script: &Script) -> bool {
        let ecdsa = output.bip32_derivation.iter().any(|(pk, (_, path))| {
            wallet_index(path)
                .and_then(|i| wallet_pubkey(self.keys, i))
                .is_some_and(|k| k == *pk && key_scripts(&k).iter().any(|s| **s == *script))
        });
        ecdsa
            || output
                .tap_key_origins
                .iter()
                .any(|(xonly, (_, (_, path)))| {
                    wallet_index(path)
                        .and_then(|i| wallet_pubkey(self.keys, i))
                        .is_some_and(|k| {
                            k.x_only_public_key().0 == *xonly
                                && ScriptBuf::new_p2tr(SECP256K1, *xonly, None) == *script
                        })
                })
    }
}

/// The wallet index a key derivation names: its last step, unhardened.
fn wallet_index(path: &DerivationPath) -> Option<u32> {
    match path.as_ref().last()? {
        ChildNumber::Normal { index } => Some(*index),
        ChildNumber::Hardened { .. } => None,
    }
}

/// The extended public key whose child `i` is wallet key `i`: m/0/0, or m/86'/0'/0'/0 for a
/// mnemonic secret (the keys `sign_withdrawal` spends wallet UTXOs with).
fn wallet_base(keys: &KeyManager) -> Option<Xpub> {
    match keys.bip86_base_xpub() {
        Some(bip86) => bip86
            .ckd_pub(SECP256K1, ChildNumber::Normal { index: 0 })
            .ok(),
        None => Some(keys.bip32_base_xpub()),
    }
}

/// Wallet key `index` (public).
fn wallet_pubkey(keys: &KeyManager, index: u32) -> Option<PublicKey> {
    let child = ChildNumber::from_normal_idx(index).ok()?;
    Some(
        wallet_base(keys)?
            .ckd_pub(SECP256K1, child)
            .ok()?
            .public_key,
    )
}

/// The P2WPKH and P2TR (BIP86 key path, no script tree) scripts of `key`.
fn key_scripts(key: &PublicKey) -> [ScriptBuf; 2] {
    [
        ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash()),
        ScriptBuf::new_p2tr(SECP256K1, key.x_only_public_key().0, None),
    ]
}

/// Removes from `open` the outputs paying the P2WPKH or P2TR script of one of the first
/// `depth` children of `base`.
fn scan(base: &Xpub, depth: u32, tx: &Transaction, open: &mut Vec<usize>) {
    if open.is_empty() {
        return;
    }
    let scripts = derived_scripts(base, depth);
    open.retain(|&i| !scripts.contains(&tx.output[i].script_pubkey));
}

/// The P2WPKH and P2TR scripts of the first `depth` children of `base` (the wallet's base, or
/// an allowlisted xpub's branch). Derived once per process and kept: `depth` point
/// multiplications and tweaks are tens of milliseconds, and the same bases come back with every
/// withdrawal and sweep. Only public keys are kept; the bases in use are few (the wallet's,
/// and two branches per allowlisted xpub).
fn derived_scripts(
    base: &Xpub,
    depth: u32,
) -> std::sync::Arc<std::collections::HashSet<ScriptBuf>> {
    type Cache = std::collections::HashMap<
        (Xpub, u32),
        std::sync::Arc<std::collections::HashSet<ScriptBuf>>,
    >;
    static CACHE: std::sync::LazyLock<std::sync::Mutex<Cache>> =
        std::sync::LazyLock::new(Default::default);
    let key = (*base, depth);
    if let Some(s) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return s.clone();
    }
    let scripts: std::collections::HashSet<ScriptBuf> = (0..depth.min(1 << 31))
        .filter_map(|index| base.ckd_pub(SECP256K1, ChildNumber::Normal { index }).ok())
        .flat_map(|child| key_scripts(&child.public_key))
        .collect();
    let scripts = std::sync::Arc::new(scripts);
    CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, scripts.clone());
    scripts
}

/// An allowlist entry, parsed.
enum Allowed {
    /// An address: its script.
    Script(ScriptBuf),
    /// An extended public key.
    Xpub(Xpub),
}

impl Allowed {
    /// Parses an address or an extended public key; with `network`, it must be of that
    /// network (testnet, signet and regtest share the test kind).
    fn parse(entry: &str, network: Option<NetworkKind>) -> std::result::Result<Allowed, String> {
        let entry = entry.trim();
        if let Ok(address) = entry.parse::<Address<NetworkUnchecked>>() {
            let networks: &[Network] = match network {
                None => &[],
                Some(NetworkKind::Main) => &[Network::Bitcoin],
                Some(NetworkKind::Test) => &[
                    Network::Testnet,
                    Network::Testnet4,
                    Network::Signet,
                    Network::Regtest,
                ],
            };
            if !networks.is_empty() && !networks.iter().any(|n| address.is_valid_for_network(*n)) {
                return Err(format!("an address of another network than {network:?}"));
            }
            return Ok(Allowed::Script(address.assume_checked().script_pubkey()));
        }
        match Xpub::from_str(entry) {
            Ok(xpub) if network.is_none_or(|n| n == xpub.network) => Ok(Allowed::Xpub(xpub)),
            Ok(xpub) => Err(format!(
                "an extended public key of another network ({:?}) than {network:?}",
                xpub.network
            )),
            Err(e) => Err(format!(
                "neither an address nor an extended public key ({e})"
            )),
        }
    }
}

/// In `sign_htlc_tx_mingle`: output `index` is paired with input `index`, which spends none of
/// our listed UTXOs and is *known* to hold at least the output's value (so it, not our inputs,
/// pays it). Known, not claimed: the node writes the PSBT's `witness_utxo`, and our wallet
/// inputs' signatures do not commit to a foreign input's amount, so an inflated claim would
/// let our inputs fund an output to anyone. The value is known when the input spends an
/// output of one of our commitments signed for broadcast (whose outputs we recorded), or when
/// the PSBT carries the spent transaction itself (`non_witness_utxo`, hashing to the txid).
fn paired_with_foreign_input(
    psbt: &Psbt,
    utxos: &[HsmUtxo],
    index: usize,
    known: &std::collections::HashMap<OutPoint, u64>,
) -> bool {
    let tx = &psbt.unsigned_tx;
    let (Some(txin), Some(out)) = (tx.input.get(index), tx.output.get(index)) else {
        return false;
    };
    let ours = utxos.iter().any(|u| {
        OutPoint {
            txid: u.txid,
            vout: u.vout,
        } == txin.previous_output
    });
    let value = known
        .get(&txin.previous_output)
        .copied()
        .or_else(|| proven_spent_output(tx, psbt, index).map(|o| o.value.to_sat()));
    !ours && value.is_some_and(|v| v >= out.value.to_sat())
}

/// The outputs (outpoint -> value) of every commitment of ours signed for broadcast, on
/// every channel.
fn broadcast_commitment_outputs(r: &Req<'_>) -> Result<std::collections::HashMap<OutPoint, u64>> {
    let mut known = std::collections::HashMap::new();
    for (_, state) in r.channels()? {
        for (txid, values) in state.broadcast_outputs.values() {
            let Ok(txid) = <[u8; 32]>::try_from(&txid[..]) else {
                continue;
            };
            let txid = bitcoin::Txid::from_byte_array(txid);
            for (vout, value) in values.iter().enumerate() {
                known.insert(
                    OutPoint {
                        txid,
                        vout: vout as u32,
                    },
                    *value,
                );
            }
        }
    }
    Ok(known)
}

/// The output input `index` spends, from the spent transaction itself (`non_witness_utxo`,
/// which must hash to the outpoint's txid, and agree with `witness_utxo` if both are given):
/// an amount that is proven, not claimed.
fn proven_spent_output<'a>(tx: &Transaction, psbt: &'a Psbt, index: usize) -> Option<&'a TxOut> {
    let input = psbt.inputs.get(index)?;
    let outpoint = tx.input.get(index)?.previous_output;
    let prev = input.non_witness_utxo.as_ref()?;
    if prev.compute_txid() != outpoint.txid {
        return None;
    }
    let out = prev.output.get(usize::try_from(outpoint.vout).ok()?)?;
    input
        .witness_utxo
        .as_ref()
        .is_none_or(|w| w == out)
        .then_some(out)
}

/// A channel's funding output as it was set up: the P2WSH of its 2-of-2, the channel value,
/// and the outpoints it may be at (`setup_channel`'s, and the one `lock_outpoint` moved it to).
struct ChannelFunding {
    script: ScriptBuf,
    value_sat: u64,
    outpoints: Vec<OutPoint>,
}

/// The funding output of every channel that was set up and not forgotten.
fn channel_fundings(r: &Req<'_>) -> Result<Vec<ChannelFunding>> {
    let mut fundings = Vec::new();
    for (key, state) in r.channels()? {
        if state.forgotten {
            continue;
        }
        let (Some(setup), Ok(secrets)) = (decode_setup(&key, &state), r.channel_secrets(&key))
        else {
            continue;
        };
        let ours = secrets.funding_key.public_key(SECP256K1);
        let redeem = funding_redeem_script(&ours, &setup.remote_funding_pubkey);
        let mut outpoints = vec![OutPoint {
            txid: setup.funding_txid,
            vout: u32::from(setup.funding_txout),
        }];
        outpoints.extend(state.funding_outpoint);
        fundings.push(ChannelFunding {
            script: ScriptBuf::new_p2wsh(&redeem.wscript_hash()),
            value_sat: setup.channel_value.to_sat(),
            outpoints,
        });
    }
    Ok(fundings)
}

/// The stored `setup_channel` of a channel, if it was set up (and still decodes).
fn decode_setup(key: &ChannelKey, state: &ChannelState) -> Option<SetupChannel> {
    let bytes = state.setup.as_deref()?;
    SetupChannel::decode(bytes)
        .map_err(|e| log::warn!("stored setup of channel {} does not decode: {e}", key.dbid))
        .ok()
}

/// The P2WSH scripts of the BOLT 3 delayed output of our commitment `n` (what our HTLC
/// transactions pay), with either side's `to_self_delay`.
fn delayed_output_scripts(
    r: &Req<'_>,
    key: &ChannelKey,
    state: &ChannelState,
    n: u64,
) -> Vec<ScriptBuf> {
    let Some(setup) = decode_setup(key, state) else {
        return Vec::new();
    };
    let Ok(secrets) = r.channel_secrets(key) else {
        return Vec::new();
    };
    let Ok(point) = secrets.per_commitment_point(n) else {
        return Vec::new();
    };
    let delayed_base = secrets
        .delayed_payment_basepoint_secret
        .public_key(SECP256K1);
    let (Ok(delayed), Some(revocation)) = (
        derive_simple_pubkey(&delayed_base, &point),
        revocation_pubkey(&setup.remote_basepoints.revocation, &point),
    ) else {
        return Vec::new();
    };
    [setup.remote_to_self_delay, setup.local_to_self_delay]
        .iter()
        .map(|&delay| {
            let script = to_local_script(&revocation, delay, &delayed);
            ScriptBuf::new_p2wsh(&script.wscript_hash())
        })
        .collect()
}

/// `onchain-destination-allowlisted` over the outputs left in `open`.
fn report_destinations(r: &Req<'_>, tx: &Transaction, open: &[usize], allowed: &str) -> Result<()> {
    r.policy.check(DESTINATION, open.is_empty(), || {
        format!(
            "{} pays outside {allowed}: {}",
            tx.compute_txid(),
            describe_outputs(tx, open)
        )
    })
}

fn describe_outputs(tx: &Transaction, indexes: &[usize]) -> String {
    let parts: Vec<String> = indexes
        .iter()
        .map(|&i| {
            let out = &tx.output[i];
            format!(
                "output {i} ({} sat to {})",
                out.value.to_sat(),
                out.script_pubkey.to_hex_string()
            )
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests;
