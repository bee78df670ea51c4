//! The node's view of the chain: where signed transactions go and which outputs the wallet
//! may spend.
//!
//! [`Chain`] is what a bitcoind (or Electrum, or Esplora) backend would implement. This node
//! has no chain backend: [`Outbox`] appends every transaction it is asked to broadcast to an
//! outbox file (one hex transaction a line) for the operator or a test to pick up, and keeps
//! the wallet's UTXOs in a JSON file that the operator (or a test) fills with the outputs
//! paying the wallet's addresses:
//!
//! ```json
//! [{"txid": "…", "vout": 0, "amount_sat": 1000000, "keyindex": 0}]
//! ```
//!
//! Broadcasting a transaction spends its inputs from that file at once and adds its outputs
//! that pay a watched wallet script (the change), as a backend would once it sees the
//! transaction. Both files are only ever replaced atomically or appended to.

use crate::store::{serde_hex, write_atomic};
use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, Txid};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An output the wallet can spend: wallet key `keyindex` (m/0/0/`keyindex`, P2WPKH) owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WalletUtxo {
    /// The transaction that created it.
    #[serde(with = "serde_hex::txid")]
    pub txid: Txid,
    /// Its index in that transaction.
    pub vout: u32,
    /// Its amount.
    pub amount_sat: u64,
    /// The wallet key that owns it.
    pub keyindex: u32,
}

impl WalletUtxo {
    /// Its outpoint.
    pub fn outpoint(&self) -> OutPoint {
        OutPoint {
            txid: self.txid,
            vout: self.vout,
        }
    }

    /// Its amount.
    pub fn amount(&self) -> Amount {
        Amount::from_sat(self.amount_sat)
    }
}

/// Why the chain backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The transaction is not fully signed (an input without witness or script).
    #[error("transaction {txid} is not signed: input {input} has no witness")]
    Unsigned {
        /// The transaction.
        txid: Txid,
        /// The first unsigned input.
        input: usize,
    },
    /// The transaction spends an output the wallet does not have (or no longer has).
    #[error("transaction {txid} spends {outpoint}, which is not a wallet UTXO")]
    UnknownInput {
        /// The transaction.
        txid: Txid,
        /// The outpoint.
        outpoint: OutPoint,
    },
}

/// The chain as the node needs it. Implementations must be safe to share between tasks.
pub trait Chain: Send + Sync {
    /// Hands a fully signed transaction to the network. Broadcasting the same transaction
    /// again is not an error.
    ///
    /// # Errors
    /// [`ChainError`] if it cannot be sent, is not signed, or spends what the wallet does
    /// not have.
    fn broadcast(&self, tx: &Transaction) -> Result<(), ChainError>;

    /// The wallet's unspent outputs.
    ///
    /// # Errors
    /// [`ChainError`] if they cannot be listed.
    fn utxos(&self) -> Result<Vec<WalletUtxo>, ChainError>;

    /// Asks the backend to report outputs paying `script` as wallet UTXOs of key
    /// `keyindex` (the wallet's change).
    ///
    /// # Errors
    /// [`ChainError`] if the backend cannot watch it.
    fn watch(&self, script: ScriptBuf, keyindex: u32) -> Result<(), ChainError>;
}

/// A [`Chain`] without a network: broadcasts go to an outbox file, UTXOs come from a JSON
/// file (see the module documentation).
#[derive(Debug)]
pub struct Outbox {
    outbox: PathBuf,
    utxos: PathBuf,
    watched: Mutex<HashMap<ScriptBuf, u32>>,
    /// Serializes the read-modify-write of the files within this process.
    lock: Mutex<()>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ChainError + '_ {
    move |source| ChainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Outbox {
    /// The outbox file name in a node's data directory.
    pub const OUTBOX_FILE: &'static str = "outbox";
    /// The UTXO file name in a node's data directory.
    pub const UTXO_FILE: &'static str = "utxos.json";

    /// An outbox with its two files in `dir` ([`Outbox::OUTBOX_FILE`],
    /// [`Outbox::UTXO_FILE`]). Nothing is created until it is written.
    pub fn in_dir(dir: &Path) -> Outbox {
        Outbox::new(dir.join(Self::OUTBOX_FILE), dir.join(Self::UTXO_FILE))
    }

    /// An outbox with these two files.
    pub fn new(outbox: impl Into<PathBuf>, utxos: impl Into<PathBuf>) -> Outbox {
        Outbox {
            outbox: outbox.into(),
            utxos: utxos.into(),
            watched: Mutex::new(HashMap::new()),
            lock: Mutex::new(()),
        }
    }

    /// The outbox file.
    pub fn outbox_path(&self) -> &Path {
        &self.outbox
    }

    /// The UTXO file.
    pub fn utxo_path(&self) -> &Path {
        &self.utxos
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_utxos(&self) -> Result<Vec<WalletUtxo>, ChainError> {
        let bytes = match std::fs::read(&self.utxos) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.utxos)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ChainError::Corrupt {
            path: self.utxos.clone(),
            reason: e.to_string(),
        })
    }

    fn write_utxos(&self, utxos: &[WalletUtxo]) -> Result<(), ChainError> {
        let mut bytes = serde_json::to_vec_pretty(utxos).map_err(|e| ChainError::Corrupt {
            path: self.utxos.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.utxos, &bytes).map_err(io_err(&self.utxos))
    }

    /// Tells the wallet about an output it owns (as a backend would on seeing it). Adding
    /// one it already has changes nothing.
    ///
    /// # Errors
    /// [`ChainError`] if the UTXO file cannot be read or written.
    pub fn add_utxo(&self, utxo: WalletUtxo) -> Result<(), ChainError> {
        let _g = self.guard();
        let mut all = self.read_utxos()?;
        if !all.iter().any(|u| u.outpoint() == utxo.outpoint()) {
            all.push(utxo);
            self.write_utxos(&all)?;
        }
        Ok(())
    }

    /// Every transaction in the outbox, oldest first.
    ///
    /// # Errors
    /// [`ChainError`] if the file cannot be read or a line is not a transaction.
    pub fn broadcasts(&self) -> Result<Vec<Transaction>, ChainError> {
        let text = match std::fs::read_to_string(&self.outbox) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.outbox)(e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, line)| {
                hex::decode(line.trim())
                    .ok()
                    .and_then(|b| deserialize::<Transaction>(&b).ok())
                    .ok_or_else(|| ChainError::Corrupt {
                        path: self.outbox.clone(),
                        reason: format!("line {} is not a hex transaction", i + 1),
                    })
            })
            .collect()
    }
}

impl Chain for Outbox {
    fn broadcast(&self, tx: &Transaction) -> Result<(), ChainError> {
        let txid = tx.compute_txid();
        if let Some(input) = tx
            .input
            .iter()
            .position(|i| i.witness.is_empty() && i.script_sig.is_empty())
        {
            return Err(ChainError::Unsigned { txid, input });
        }
        let _g = self.guard();
        if self.broadcasts()?.iter().any(|t| t.compute_txid() == txid) {
            return Ok(());
        }
        let mut utxos = self.read_utxos()?;
        for input in &tx.input {
            if !utxos.iter().any(|u| u.outpoint() == input.previous_output) {
                return Err(ChainError::UnknownInput {
                    txid,
                    outpoint: input.previous_output,
                });
            }
        }
        // The transaction goes out first: a crash before the UTXO update leaves the wallet
        // believing in outputs that are spent, which the next broadcast would reveal, never
        // a transaction that is lost.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.outbox)
            .map_err(io_err(&self.outbox))?;
        f.write_all(format!("{}\n", serialize_hex(tx)).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&self.outbox))?;

        utxos.retain(|u| !tx.input.iter().any(|i| i.previous_output == u.outpoint()));
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (vout, out) in tx.output.iter().enumerate() {
            if let Some(&keyindex) = watched.get(&out.script_pubkey) {
                utxos.push(WalletUtxo {
                    txid,
                    vout: vout as u32,
                    amount_sat: out.value.to_sat(),
                    keyindex,
                });
            }
        }
        self.write_utxos(&utxos)
    }

    fn utxos(&self) -> Result<Vec<WalletUtxo>, ChainError> {
        let _g = self.guard();
        self.read_utxos()
    }

    fn watch(&self, script: ScriptBuf, keyindex: u32) -> Result<(), ChainError> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(script, keyindex);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::Hash;
    use bitcoin::transaction::Version;
    use bitcoin::{Sequence, TxIn, TxOut, Witness};

    fn utxo(n: u8, vout: u32) -> WalletUtxo {
        WalletUtxo {
            txid: Txid::from_byte_array([n; 32]),
            vout,
            amount_sat: 100_000,
            keyindex: 0,
        }
    }

    fn spend(inputs: &[WalletUtxo], outputs: Vec<TxOut>, signed: bool) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|u| TxIn {
                    previous_output: u.outpoint(),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: if signed {
                        Witness::from_slice(&[vec![1u8; 71], vec![2u8; 33]])
                    } else {
                        Witness::new()
                    },
                })
                .collect(),
            output: outputs,
        }
    }

    #[test]
    fn broadcast_appends_spends_and_picks_up_watched_change() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Outbox::in_dir(dir.path());
        assert!(chain.utxos().unwrap().is_empty());
        chain.add_utxo(utxo(1, 0)).unwrap();
        chain.add_utxo(utxo(1, 0)).unwrap();
        chain.add_utxo(utxo(2, 1)).unwrap();
        assert_eq!(chain.utxos().unwrap().len(), 2);

        let change = ScriptBuf::from_bytes(vec![0x00, 0x14, 7, 7, 7]);
        chain.watch(change.clone(), 5).unwrap();
        let tx = spend(
            &[utxo(1, 0)],
            vec![
                TxOut {
                    value: Amount::from_sat(60_000),
                    script_pubkey: ScriptBuf::new_op_return([1u8; 4]),
                },
                TxOut {
                    value: Amount::from_sat(39_000),
                    script_pubkey: change,
                },
            ],
            true,
        );
        chain.broadcast(&tx).unwrap();
        chain.broadcast(&tx).unwrap();
        assert_eq!(chain.broadcasts().unwrap(), vec![tx.clone()]);
        let left = chain.utxos().unwrap();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&utxo(2, 1)));
        assert!(left.contains(&WalletUtxo {
            txid: tx.compute_txid(),
            vout: 1,
            amount_sat: 39_000,
            keyindex: 5
        }));
    }

    #[test]
    fn unsigned_or_unknown_spends_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Outbox::in_dir(dir.path());
        chain.add_utxo(utxo(1, 0)).unwrap();
        let unsigned = spend(&[utxo(1, 0)], vec![], false);
        assert!(matches!(
            chain.broadcast(&unsigned),
            Err(ChainError::Unsigned { input: 0, .. })
        ));
        let unknown = spend(&[utxo(9, 0)], vec![], true);
        assert!(matches!(
            chain.broadcast(&unknown),
            Err(ChainError::UnknownInput { .. })
        ));
        assert!(chain.broadcasts().unwrap().is_empty());
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Outbox::in_dir(dir.path());
        std::fs::write(chain.utxo_path(), b"{").unwrap();
        assert!(matches!(chain.utxos(), Err(ChainError::Corrupt { .. })));
        std::fs::write(chain.outbox_path(), b"zz\n").unwrap();
        assert!(matches!(
            chain.broadcasts(),
            Err(ChainError::Corrupt { .. })
        ));
    }
}
