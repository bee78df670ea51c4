//! The on-chain wallet, without a single private key: addresses from the signer's extended
//! public key, funding transactions built here and signed by the signer.
//!
//! Wallet key `i` is child `i` of the wallet base the signer reports in `hsmd_init_reply_v4`:
//! m/0/0 of its BIP32 tree (so key `i` is m/0/0/`i`), or for a signer whose secret is a
//! mnemonic, m/86'/0'/0'/0 (the `bip86_base` TLV; Core Lightning signs P2WPKH wallet outputs
//! of such a secret with that key too). Addresses are P2WPKH.
//!
//! A funding transaction ([`Wallet::build_funding`]) spends wallet UTXOs, pays the channel's
//! funding output, and returns change to a fresh wallet key. It is version 2 with segwit
//! inputs only, so its txid is fixed before it is signed (the channel's peer signs our first
//! commitment, which spends it, before we sign it). [`Wallet::sign`] asks the signer
//! (`hsmd_sign_withdrawal`, on the master client, with the `hsm_utxo` of each input), checks
//! that the transaction it signed is the one we built and that each signature verifies, and
//! finalizes the witnesses.

use crate::chain::WalletUtxo;
use crate::client::{ClientError, HsmClient};
use bitcoin::absolute::LockTime;
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpub};
use bitcoin::psbt::Psbt;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
};
use protocol::msgs::{InitReplyV4, SignWithdrawal};
use protocol::types::HsmUtxo;
use secp256k1::{Message, PublicKey, SECP256K1};
use std::collections::BTreeMap;

/// Outputs below this are not made: change this small goes to the fee.
pub const CHANGE_DUST_SAT: u64 = 546;
/// Weight of a transaction without inputs and outputs (version, counts, lock time, segwit
/// marker and flag).
const TX_BASE_WEIGHT: u64 = 4 * (4 + 1 + 1 + 4) + 2;
/// Weight of a P2WPKH input with its witness (a 72-byte signature at most).
const P2WPKH_INPUT_WEIGHT: u64 = 4 * (32 + 4 + 1 + 4) + (1 + 1 + 72 + 1 + 33);

/// Why the wallet could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// A key index that cannot be derived (hardened or invalid).
    #[error("wallet key {0} cannot be derived")]
    BadIndex(u32),
    /// Not enough funds.
    #[error("the wallet has {available_sat} sat in {utxos} outputs; {needed_sat} sat are needed")]
    InsufficientFunds {
        /// The total of the wallet's UTXOs.
        available_sat: u64,
        /// How many there are.
        utxos: usize,
        /// The output plus the fee.
        needed_sat: u64,
    },
    /// The signer's request failed (or it refused: the proxy then closes the client).
    #[error("the signer did not sign the funding transaction: {0}")]
    Signer(#[from] ClientError),
    /// The signer's reply is not a signature of our transaction.
    #[error("the signer's reply does not sign our transaction: {0}")]
    BadSignature(String),
    /// The PSBT could not be made.
    #[error("cannot build the PSBT: {0}")]
    Psbt(String),
}

/// The wallet: derives keys and builds and finalizes transactions. It holds no private key.
#[derive(Clone, Debug)]
pub struct Wallet {
    base: Xpub,
    network: Network,
}

/// A funding transaction built and not yet signed.
#[derive(Clone, Debug)]
pub struct UnsignedFunding {
    /// The PSBT sent to the signer (every input with its `witness_utxo`).
    pub psbt: Psbt,
    /// The UTXOs it spends, in input order.
    pub inputs: Vec<WalletUtxo>,
    /// The index of the funding output.
    pub funding_output: u32,
    /// The change output and the wallet key it pays, if there is change.
    pub change: Option<(u32, u32)>,
    /// The fee it pays.
    pub fee_sat: u64,
}

impl UnsignedFunding {
    /// The transaction id (final: every input is segwit).
    pub fn txid(&self) -> Txid {
        self.psbt.unsigned_tx.compute_txid()
    }

    /// The funding outpoint.
    pub fn outpoint(&self) -> OutPoint {
        OutPoint {
            txid: self.txid(),
            vout: self.funding_output,
        }
    }
}

impl Wallet {
    /// A wallet whose key `i` is child `i` of `base`, with addresses of `network`.
    pub fn new(base: Xpub, network: Network) -> Wallet {
        Wallet { base, network }
    }

    /// The wallet of a signer, from its `hsmd_init_reply_v4`: m/0/0, or m/86'/0'/0'/0 if it
    /// reports a BIP86 base (a mnemonic secret).
    ///
    /// # Errors
    /// [`WalletError::BadIndex`] if the BIP86 base has no child 0 (never for a real key).
    pub fn from_init_reply(reply: &InitReplyV4, network: Network) -> Result<Wallet, WalletError> {
        let base = match &reply.tlvs.bip86_base {
            Some(b86) => b86
                .ckd_pub(SECP256K1, ChildNumber::Normal { index: 0 })
                .map_err(|_| WalletError::BadIndex(0))?,
            None => reply.bip32,
        };
        Ok(Wallet::new(base, network))
    }

    /// The network of the addresses.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Wallet key `index`.
    ///
    /// # Errors
    /// [`WalletError::BadIndex`] for an index of 2^31 or more.
    pub fn pubkey(&self, index: u32) -> Result<PublicKey, WalletError> {
        let child =
            ChildNumber::from_normal_idx(index).map_err(|_| WalletError::BadIndex(index))?;
        self.base
            .ckd_pub(SECP256K1, child)
            .map(|x| x.public_key)
            .map_err(|_| WalletError::BadIndex(index))
    }

    /// The P2WPKH script of wallet key `index`.
    ///
    /// # Errors
    /// [`WalletError::BadIndex`].
    pub fn script_pubkey(&self, index: u32) -> Result<ScriptBuf, WalletError> {
        Ok(ScriptBuf::new_p2wpkh(
            &CompressedPublicKey(self.pubkey(index)?).wpubkey_hash(),
        ))
    }

    /// The P2WPKH address of wallet key `index`.
    ///
    /// # Errors
    /// [`WalletError::BadIndex`].
    pub fn address(&self, index: u32) -> Result<Address, WalletError> {
        Ok(Address::p2wpkh(
            &CompressedPublicKey(self.pubkey(index)?),
            self.network,
        ))
    }

    /// Builds a transaction paying `output` from `utxos` at `feerate_per_kw`, with change (if
    /// above [`CHANGE_DUST_SAT`]) to wallet key `change_index`. Coins are taken largest
    /// first. The funding output comes first, the change second.
    ///
    /// # Errors
    /// [`WalletError::InsufficientFunds`], or [`WalletError::BadIndex`] for a UTXO or change
    /// key that cannot be derived.
    pub fn build_funding(
        &self,
        utxos: &[WalletUtxo],
        output: TxOut,
        feerate_per_kw: u32,
        change_index: u32,
    ) -> Result<UnsignedFunding, WalletError> {
        let change_script = self.script_pubkey(change_index)?;
        let change_weight = 4 * (8 + 1 + change_script.len() as u64);
        let fixed_weight = TX_BASE_WEIGHT + 4 * (8 + 1 + output.script_pubkey.len() as u64);
        let fee_for = |weight: u64| (u64::from(feerate_per_kw) * weight).div_ceil(1000);

        let mut sorted: Vec<WalletUtxo> = utxos.to_vec();
        sorted.sort_by(|a, b| {
            b.amount_sat
                .cmp(&a.amount_sat)
                .then(a.outpoint().cmp(&b.outpoint()))
        });
        let target = output.value.to_sat();
        let mut chosen = Vec::new();
        let mut total: u64 = 0;
        let mut weight = fixed_weight;
        let mut found = None;
        for u in sorted {
            chosen.push(u);
            total = total.saturating_add(u.amount_sat);
            weight += P2WPKH_INPUT_WEIGHT;
            let fee_without = fee_for(weight);
            let fee_with = fee_for(weight + change_weight);
            if let Some(change) = total.checked_sub(target.saturating_add(fee_with)) {
                if change >= CHANGE_DUST_SAT {
                    found = Some((fee_with, Some(change)));
                    break;
                }
            }
            if total >= target.saturating_add(fee_without) {
                // No change worth making: the rest goes to the fee.
                found = Some((total - target, None));
                break;
            }
        }
        let Some((fee_sat, change)) = found else {
            let available_sat = utxos.iter().map(|u| u.amount_sat).sum();
            let needed_sat = target.saturating_add(fee_for(
                fixed_weight + P2WPKH_INPUT_WEIGHT * utxos.len().max(1) as u64,
            ));
            return Err(WalletError::InsufficientFunds {
                available_sat,
                utxos: utxos.len(),
                needed_sat,
            });
        };

        let mut outputs = vec![output];
        if let Some(value) = change {
            outputs.push(TxOut {
                value: Amount::from_sat(value),
                script_pubkey: change_script.clone(),
            });
        }
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: chosen
                .iter()
                .map(|u| TxIn {
                    previous_output: u.outpoint(),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| WalletError::Psbt(e.to_string()))?;
        for (input, u) in psbt.inputs.iter_mut().zip(&chosen) {
            input.witness_utxo = Some(TxOut {
                value: u.amount(),
                script_pubkey: self.script_pubkey(u.keyindex)?,
            });
        }
        if change.is_some() {
            // Name the change key, so the signer need not search its wallet for it.
            let key = self.pubkey(change_index)?;
            let path = DerivationPath::from(vec![ChildNumber::Normal {
                index: change_index,
            }]);
            psbt.outputs[1]
                .bip32_derivation
                .insert(key, (self.base.fingerprint(), path));
        }
        Ok(UnsignedFunding {
            psbt,
            inputs: chosen,
            funding_output: 0,
            change: change.map(|_| (1, change_index)),
            fee_sat,
        })
    }

    /// The `hsm_utxo` Core Lightning sends for a wallet UTXO.
    ///
    /// # Errors
    /// [`WalletError::BadIndex`].
    pub fn hsm_utxo(&self, u: &WalletUtxo) -> Result<HsmUtxo, WalletError> {
        Ok(HsmUtxo {
            txid: u.txid,
            vout: u.vout,
            amount: u.amount(),
            keyindex: u.keyindex,
            legacy_is_p2sh: false,
            script_pubkey: self.script_pubkey(u.keyindex)?,
            close_info: None,
            legacy_is_in_coinbase: false,
        })
    }

    /// Has the signer sign `funding` (`hsmd_sign_withdrawal` on the master client) and
    /// returns the transaction with its witnesses.
    ///
    /// # Errors
    /// [`WalletError::Signer`] if the signer refuses or fails; [`WalletError::BadSignature`]
    /// if its reply changed the transaction or a signature does not verify.
    pub async fn sign(
        &self,
        master: &HsmClient,
        funding: &UnsignedFunding,
    ) -> Result<Transaction, WalletError> {
        let inputs = funding
            .inputs
            .iter()
            .map(|u| self.hsm_utxo(u))
            .collect::<Result<Vec<_>, _>>()?;
        let reply = master
            .call(&SignWithdrawal::new(inputs, funding.psbt.clone().into()))
            .await?;
        self.finalize(funding, &reply.psbt)
    }

    /// Checks the signer's PSBT against ours and puts its signatures into witnesses.
    fn finalize(
        &self,
        funding: &UnsignedFunding,
        signed: &Psbt,
    ) -> Result<Transaction, WalletError> {
        let mut tx = funding.psbt.unsigned_tx.clone();
        if signed.unsigned_tx != tx {
            return Err(WalletError::BadSignature(format!(
                "it signed transaction {} instead of {}",
                signed.unsigned_tx.compute_txid(),
                tx.compute_txid()
            )));
        }
        let mut cache = SighashCache::new(&funding.psbt.unsigned_tx);
        let mut witnesses = Vec::with_capacity(tx.input.len());
        for (i, u) in funding.inputs.iter().enumerate() {
            let key = self.pubkey(u.keyindex)?;
            let bkey = bitcoin::PublicKey::new(key);
            let sig = signed
                .inputs
                .get(i)
                .and_then(|input| input.partial_sigs.get(&bkey))
                .ok_or_else(|| {
                    WalletError::BadSignature(format!("input {i} has no signature by {key}"))
                })?;
            if sig.sighash_type != EcdsaSighashType::All {
                return Err(WalletError::BadSignature(format!(
                    "input {i} is signed with {}",
                    sig.sighash_type
                )));
            }
            let script = self.script_pubkey(u.keyindex)?;
            let hash = cache
                .p2wpkh_signature_hash(i, &script, u.amount(), EcdsaSighashType::All)
                .map_err(|e| WalletError::BadSignature(e.to_string()))?;
            let msg = Message::from_digest(bitcoin::hashes::Hash::to_byte_array(hash));
            SECP256K1
                .verify_ecdsa(&msg, &sig.signature, &key)
                .map_err(|_| {
                    WalletError::BadSignature(format!("the signature of input {i} does not verify"))
                })?;
            witnesses.push(Witness::p2wpkh(sig, &key));
        }
        for (input, w) in tx.input.iter_mut().zip(witnesses) {
            input.witness = w;
        }
        Ok(tx)
    }
}

/// The sum of some UTXOs, by wallet key (for reports).
pub fn balance_by_key(utxos: &[WalletUtxo]) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for u in utxos {
        *m.entry(u.keyindex).or_insert(0) += u.amount_sat;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::bip32::Xpriv;
    use bitcoin::hashes::Hash;

    fn wallet() -> (Wallet, Xpriv) {
        let xpriv = Xpriv::new_master(Network::Regtest, &[7u8; 32]).unwrap();
        (
            Wallet::new(Xpub::from_priv(SECP256K1, &xpriv), Network::Regtest),
            xpriv,
        )
    }

    fn utxo(n: u8, amount_sat: u64, keyindex: u32) -> WalletUtxo {
        WalletUtxo {
            txid: Txid::from_byte_array([n; 32]),
            vout: 1,
            amount_sat,
            keyindex,
        }
    }

    fn funding_out(sat: u64) -> TxOut {
        TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::all_zeros()),
        }
    }

    #[test]
    fn addresses_are_p2wpkh_children_of_the_base() {
        let (w, xpriv) = wallet();
        let child = xpriv
            .derive_priv(SECP256K1, &[ChildNumber::Normal { index: 3 }])
            .unwrap();
        assert_eq!(
            w.pubkey(3).unwrap(),
            child.private_key.public_key(SECP256K1)
        );
        assert!(w.address(3).unwrap().to_string().starts_with("bcrt1q"));
        assert!(matches!(w.pubkey(1 << 31), Err(WalletError::BadIndex(_))));
    }

    #[test]
    fn funding_takes_largest_coins_first_and_returns_change() {
        let (w, _) = wallet();
        let utxos = [utxo(1, 50_000, 0), utxo(2, 300_000, 1), utxo(3, 200_000, 2)];
        let f = w
            .build_funding(&utxos, funding_out(400_000), 1000, 9)
            .unwrap();
        let tx = &f.psbt.unsigned_tx;
        assert_eq!(f.inputs, vec![utxos[1], utxos[2]]);
        assert_eq!(tx.version, Version::TWO);
        assert_eq!(tx.output[0].value.to_sat(), 400_000);
        let change = tx.output[1].value.to_sat();
        assert_eq!(500_000, 400_000 + change + f.fee_sat);
        assert_eq!(f.change, Some((1, 9)));
        assert_eq!(tx.output[1].script_pubkey, w.script_pubkey(9).unwrap());
        // About 1000 sat/kw of a two-input, two-output transaction.
        assert!((800..=900).contains(&f.fee_sat), "fee {}", f.fee_sat);
        assert!(f.psbt.inputs.iter().all(|i| i.witness_utxo.is_some()));
        assert_eq!(f.outpoint().vout, 0);
    }

    #[test]
    fn dust_change_goes_to_the_fee_and_shortfalls_are_reported() {
        let (w, _) = wallet();
        let f = w
            .build_funding(&[utxo(1, 100_700, 0)], funding_out(100_000), 1000, 1)
            .unwrap();
        assert_eq!(f.psbt.unsigned_tx.output.len(), 1);
        assert_eq!(f.fee_sat, 700);
        match w.build_funding(&[utxo(1, 100_000, 0)], funding_out(100_000), 1000, 1) {
            Err(WalletError::InsufficientFunds {
                available_sat: 100_000,
                utxos: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finalize_checks_the_signers_psbt() {
        let (w, xpriv) = wallet();
        let f = w
            .build_funding(&[utxo(1, 300_000, 4)], funding_out(100_000), 1000, 5)
            .unwrap();
        // What the signer does: a SIGHASH_ALL partial signature with wallet key 4.
        let key = xpriv
            .derive_priv(SECP256K1, &[ChildNumber::Normal { index: 4 }])
            .unwrap()
            .private_key;
        let mut signed = f.psbt.clone();
        let hash = SighashCache::new(&signed.unsigned_tx)
            .p2wpkh_signature_hash(
                0,
                &w.script_pubkey(4).unwrap(),
                Amount::from_sat(300_000),
                EcdsaSighashType::All,
            )
            .unwrap();
        let sig = SECP256K1.sign_ecdsa(&Message::from_digest(hash.to_byte_array()), &key);
        signed.inputs[0].partial_sigs.insert(
            bitcoin::PublicKey::new(key.public_key(SECP256K1)),
            bitcoin::ecdsa::Signature::sighash_all(sig),
        );
        let tx = w.finalize(&f, &signed).unwrap();
        assert_eq!(tx.compute_txid(), f.txid());
        assert_eq!(tx.input[0].witness.len(), 2);

        let mut other = signed.clone();
        other.unsigned_tx.lock_time = LockTime::from_consensus(1);
        assert!(matches!(
            w.finalize(&f, &other),
            Err(WalletError::BadSignature(_))
        ));
        let mut forged = signed;
        let wrong = SECP256K1.sign_ecdsa(&Message::from_digest([1; 32]), &key);
        forged.inputs[0]
            .partial_sigs
            .values_mut()
            .for_each(|s| s.signature = wrong);
        assert!(matches!(
            w.finalize(&f, &forged),
            Err(WalletError::BadSignature(_))
        ));
    }
}
