//! The `hsmd_sign_withdrawal` that lightningd would send for a command, built from the
//! command's parameters and lightningd's RPC, as lightningd builds it:
//!
//! - `withdraw` and `txprepare` (the `txprepare` plugin of Core Lightning): the outputs the
//!   command names, funded by `fundpsbt` (or `utxopsbt` when it names its UTXOs) with the same
//!   fee rate, `minconf` and start weight, the change as excess; the command's outputs are
//!   inserted before the change, in order. Unlike the command, nothing is reserved
//!   (`reserve: 0`), so nothing needs releasing whatever happens next. (Like the command,
//!   `fundpsbt` derives a fresh change address.)
//! - `signpsbt`: the PSBT given (version 0, as lightningd writes it to hsmd).
//!
//! Then as `signpsbt` does (`wallet/walletrpc.c`): every input that spends one of our UTXOs
//! (`listfunds`), among the `signonly` ones if given, gets its `witness_utxo` (and P2SH
//! redeem script) when it has no UTXO data, and becomes an `hsm_utxo` with its key index
//! (from `listaddresses`) and no close info (`hsmd/hsm_utxo.c`).
//!
//! One difference is left: lightningd also names the wallet key of each output that pays its
//! wallet (BIP32 or taproot derivation), which needs the public key the RPC does not give.
//! Without it the signer recognises wallet outputs only among its first `wallet_scan_depth`
//! keys; [`foreign_refusal`] tells a refusal that comes from that difference alone.

use bitcoin::address::NetworkUnchecked;
use bitcoin::psbt::{Output as PsbtOutput, Psbt};
use bitcoin::{Address, Amount, Denomination, Network, OutPoint, ScriptBuf, TxOut, Txid};
use cln_rpc::ClnRpc;
use protocol::msgs::SignWithdrawal;
use protocol::types::{HsmUtxo, WirePsbt};
use protocol::Message;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// An amount of a command's output: satoshis, or everything left (`all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sats {
    /// This many.
    Amount(Amount),
    /// What the inputs leave after the other outputs and the fee.
    All,
}

/// What a `withdraw` or `txprepare` asks to pay, and how to fund it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spend {
    /// The outputs, in the command's order.
    pub outputs: Vec<(ScriptBuf, Sats)>,
    /// The fee rate as given (a number or a name such as `normal`), if given.
    pub feerate: Option<Value>,
    /// `minconf`, if given.
    pub minconf: Option<Value>,
    /// The UTXOs to spend (`txid:vout`), if given.
    pub utxos: Option<Value>,
}

impl Spend {
    /// The satoshis of the outputs with a fixed amount (`all` counts nothing).
    pub fn fixed_sat(&self) -> u64 {
        self.outputs
            .iter()
            .map(|(_, s)| match s {
                Sats::Amount(a) => a.to_sat(),
                Sats::All => 0,
            })
            .sum()
    }
}

/// The network of lightningd's `network` name.
pub fn network(name: &str) -> Option<Network> {
    match name {
        "bitcoin" => Some(Network::Bitcoin),
        "testnet" => Some(Network::Testnet),
        other => Network::from_core_arg(other).ok(),
    }
}

/// Parameter `name`, the `position`-th when the parameters are positional; `null` is absent.
fn param<'a>(params: &'a Value, name: &str, position: usize) -> Option<&'a Value> {
    match params {
        Value::Object(m) => m.get(name),
        Value::Array(a) => a.get(position),
        _ => None,
    }
    .filter(|v| !v.is_null())
}

/// The parameters of `withdraw` (`destination`, `satoshi`, `feerate`, `minconf`, `utxos`).
///
/// # Errors
/// What is missing or malformed (lightningd will refuse the command itself).
pub fn withdraw_params(params: &Value, network: Network) -> Result<Spend, String> {
    let destination = param(params, "destination", 0).ok_or("no destination")?;
    let satoshi = param(params, "satoshi", 1).ok_or("no satoshi")?;
    Ok(Spend {
        outputs: vec![(script_of(destination, network)?, sats(satoshi)?)],
        feerate: param(params, "feerate", 2).cloned(),
        minconf: param(params, "minconf", 3).cloned(),
        utxos: param(params, "utxos", 4).cloned(),
    })
}

/// The parameters of `txprepare` (`outputs` as `[{address: amount}, ...]`, `feerate`,
/// `minconf`, `utxos`).
///
/// # Errors
/// What is missing or malformed (lightningd will refuse the command itself).
pub fn txprepare_params(params: &Value, network: Network) -> Result<Spend, String> {
    let outputs = param(params, "outputs", 0)
        .and_then(Value::as_array)
        .ok_or("no outputs array")?;
    let mut parsed = Vec::with_capacity(outputs.len());
    for o in outputs {
        let entry = o
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.iter().next())
            .ok_or("an output is not {destination: amount}")?;
        parsed.push((
            script_of(&Value::String(entry.0.clone()), network)?,
            sats(entry.1)?,
        ));
    }
    if parsed.iter().filter(|(_, s)| *s == Sats::All).count() > 1 {
        return Err("two outputs are 'all'".into());
    }
    Ok(Spend {
        outputs: parsed,
        feerate: param(params, "feerate", 1).cloned(),
        minconf: param(params, "minconf", 2).cloned(),
        utxos: param(params, "utxos", 3).cloned(),
    })
}

/// The parameters of `signpsbt`: the PSBT (base64) and the inputs to sign, if limited.
///
/// # Errors
/// What is missing or malformed.
pub fn signpsbt_params(params: &Value) -> Result<(String, Option<Vec<usize>>), String> {
    let psbt = param(params, "psbt", 0)
        .and_then(Value::as_str)
        .ok_or("no psbt")?
        .to_string();
    let only = match param(params, "signonly", 1) {
        None => None,
        Some(v) => Some(
            v.as_array()
                .ok_or("signonly is not an array")?
                .iter()
                .map(|n| n.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or("signonly holds something else than input numbers")?,
        ),
    };
    Ok((psbt, only))
}

fn script_of(address: &Value, network: Network) -> Result<ScriptBuf, String> {
    let s = address.as_str().ok_or("the destination is not a string")?;
    let a: Address<NetworkUnchecked> = s.parse().map_err(|e| format!("address {s}: {e}"))?;
    let a = a
        .require_network(network)
        .map_err(|e| format!("address {s}: {e}"))?;
    Ok(a.script_pubkey())
}

/// An amount as lightningd's `param_sat_or_all` reads it: a number of satoshis, `all`,
/// `<n>sat`, `<n>msat` (whole satoshis) or `<x>btc`.
fn sats(v: &Value) -> Result<Sats, String> {
    if let Some(n) = v.as_u64() {
        return Ok(Sats::Amount(Amount::from_sat(n)));
    }
    let s = v.as_str().ok_or_else(|| format!("amount {v}"))?;
    let bad = || format!("amount {s}");
    if s == "all" {
        return Ok(Sats::All);
    }
    let amount = if let Some(msat) = s.strip_suffix("msat") {
        let msat: u64 = msat.parse().map_err(|_| bad())?;
        if !msat.is_multiple_of(1000) {
            return Err(bad());
        }
        Amount::from_sat(msat / 1000)
    } else if let Some(sat) = s.strip_suffix("sat") {
        Amount::from_sat(sat.parse().map_err(|_| bad())?)
    } else if let Some(btc) = s.strip_suffix("btc") {
        Amount::from_str_in(btc, Denomination::Bitcoin).map_err(|_| bad())?
    } else {
        Amount::from_sat(s.parse().map_err(|_| bad())?)
    };
    Ok(Sats::Amount(amount))
}

fn varint_size(n: usize) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Core Lightning's `bitcoin_tx_core_weight` (segwit, not Elements).
fn core_weight(inputs: usize, outputs: usize) -> usize {
    (4 + varint_size(inputs) + varint_size(outputs) + 4) * 4 + 2
}

/// Core Lightning's `bitcoin_tx_output_weight` (not Elements).
fn output_weight(script_len: usize) -> usize {
    (8 + varint_size(script_len) + script_len) * 4
}

/// The `startweight` the `txprepare` plugin asks `fundpsbt` for: the transaction without
/// inputs, with one input counted in the core, and the command's outputs.
pub fn start_weight(spend: &Spend) -> usize {
    core_weight(1, spend.outputs.len())
        + spend
            .outputs
            .iter()
            .map(|(s, _)| output_weight(s.len()))
            .sum::<usize>()
}

/// The `fundpsbt` (or `utxopsbt`) request funding `spend` without reserving anything.
pub fn funding_request(spend: &Spend) -> (&'static str, Value) {
    let total = spend.fixed_sat();
    let satoshi = if spend.outputs.iter().any(|(_, s)| *s == Sats::All) {
        json!("all")
    } else {
        json!(format!("{total}sat"))
    };
    let mut req = json!({
        "satoshi": satoshi,
        "feerate": spend.feerate.clone().unwrap_or_else(|| json!("opening")),
        "startweight": start_weight(spend),
        "reserve": 0,
        "excess_as_change": true,
    });
    match &spend.utxos {
        Some(utxos) => {
            req["utxos"] = utxos.clone();
            req["reservedok"] = json!(false);
            ("utxopsbt", req)
        }
        None => {
            if let Some(m) = &spend.minconf {
                req["minconf"] = m.clone();
            }
            ("fundpsbt", req)
        }
    }
}

/// The PSBT of a `fundpsbt` answer with the command's outputs put in, as the `txprepare`
/// plugin does (each at its index, so before the change; `all` gets the excess less the
/// other outputs).
///
/// # Errors
/// When the answer is malformed or cannot pay the outputs (lightningd will say so itself).
pub fn add_outputs(mut psbt: Psbt, funded: &Value, spend: &Spend) -> Result<Psbt, String> {
    let fixed = spend.fixed_sat();
    for (i, (script, sats)) in spend.outputs.iter().enumerate() {
        let value = match sats {
            Sats::Amount(a) => *a,
            Sats::All => {
                let excess = funded["excess_msat"]
                    .as_u64()
                    .ok_or("fundpsbt gave no excess_msat")?
                    / 1000;
                Amount::from_sat(
                    excess
                        .checked_sub(fixed)
                        .ok_or("the inputs cannot pay the other outputs")?,
                )
            }
        };
        if i > psbt.unsigned_tx.output.len() {
            return Err("fundpsbt's PSBT has fewer outputs than expected".into());
        }
        psbt.unsigned_tx.output.insert(
            i,
            TxOut {
                value,
                script_pubkey: script.clone(),
            },
        );
        psbt.outputs.insert(i, PsbtOutput::default());
    }
    Ok(psbt)
}

/// One of our UTXOs, as `listfunds` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Fund {
    amount: Amount,
    script_pubkey: ScriptBuf,
    redeem_script: Option<ScriptBuf>,
    address: Option<String>,
}

/// Our UTXOs by outpoint, from a `listfunds` answer.
pub fn funds(listfunds: &Value) -> HashMap<OutPoint, Fund> {
    let mut out = HashMap::new();
    for o in listfunds["outputs"].as_array().into_iter().flatten() {
        let parsed = (|| {
            let txid = Txid::from_str(o["txid"].as_str()?).ok()?;
            let vout = u32::try_from(o["output"].as_u64()?).ok()?;
            let fund = Fund {
                amount: Amount::from_sat(o["amount_msat"].as_u64()? / 1000),
                script_pubkey: ScriptBuf::from_hex(o["scriptpubkey"].as_str()?).ok()?,
                redeem_script: o["redeemscript"]
                    .as_str()
                    .and_then(|h| ScriptBuf::from_hex(h).ok()),
                address: o["address"].as_str().map(str::to_string),
            };
            Some((OutPoint { txid, vout }, fund))
        })();
        match parsed {
            Some((outpoint, fund)) => {
                out.insert(outpoint, fund);
            }
            None => log::debug!("listfunds output not understood: {o}"),
        }
    }
    out
}

/// Our addresses' key indexes, from a `listaddresses` answer.
pub fn key_indexes(listaddresses: &Value) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for a in listaddresses["addresses"].as_array().into_iter().flatten() {
        let Some(i) = a["keyidx"].as_u64().and_then(|i| u32::try_from(i).ok()) else {
            continue;
        };
        for kind in ["bech32", "p2tr"] {
            if let Some(addr) = a[kind].as_str().filter(|s| !s.is_empty()) {
                out.insert(addr.to_string(), i);
            }
        }
    }
    out
}

/// `hsmd_sign_withdrawal` for `psbt` as `signpsbt` sends it: our UTXOs among its inputs (the
/// `only` ones, if given), with the data lightningd adds to their inputs. UTXOs whose key
/// index is unknown (a peer's unilateral close pays them to a channel key) are left out.
///
/// # Errors
/// When no input is ours (lightningd refuses to sign such a PSBT itself).
pub fn sign_withdrawal(
    mut psbt: Psbt,
    only: Option<&[usize]>,
    funds: &HashMap<OutPoint, Fund>,
    keys: &HashMap<String, u32>,
) -> Result<Vec<u8>, String> {
    let only: Option<HashSet<usize>> = only.map(|o| o.iter().copied().collect());
    let mut utxos = Vec::new();
    let mut ours = 0;
    for i in 0..psbt.unsigned_tx.input.len() {
        if only.as_ref().is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let outpoint = psbt.unsigned_tx.input[i].previous_output;
        let Some(fund) = funds.get(&outpoint) else {
            continue;
        };
        ours += 1;
        let input = &mut psbt.inputs[i];
        if input.witness_utxo.is_none() && input.non_witness_utxo.is_none() {
            input.witness_utxo = Some(TxOut {
                value: fund.amount,
                script_pubkey: fund.script_pubkey.clone(),
            });
            if let Some(rs) = &fund.redeem_script {
                input.redeem_script = Some(rs.clone());
            }
        }
        let Some(keyindex) = fund.address.as_ref().and_then(|a| keys.get(a)) else {
            log::debug!("{outpoint}: no key index known (a channel close output?)");
            continue;
        };
        utxos.push(HsmUtxo {
            txid: outpoint.txid,
            vout: outpoint.vout,
            amount: fund.amount,
            keyindex: *keyindex,
            legacy_is_p2sh: false,
            script_pubkey: fund.script_pubkey.clone(),
            close_info: None,
            legacy_is_in_coinbase: false,
        });
    }
    if ours == 0 {
        return Err("no input of the PSBT spends our wallet".into());
    }
    Message::from(SignWithdrawal::new(utxos, WirePsbt::from(psbt)))
        .encode()
        .map_err(|e| format!("encoding hsmd_sign_withdrawal: {e}"))
}

/// The outputs of `psbt` that pay our wallet (an address `listaddresses` lists).
pub fn wallet_outputs(psbt: &Psbt, keys: &HashMap<String, u32>, network: Network) -> Vec<usize> {
    psbt.unsigned_tx
        .output
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            Address::from_script(&o.script_pubkey, network)
                .is_ok_and(|a| keys.contains_key(&a.to_string()))
        })
        .map(|(i, _)| i)
        .collect()
}

/// The outputs an `onchain-destination-allowlisted` refusal names (as `output <i> (`).
pub fn refused_outputs(detail: &str) -> Vec<usize> {
    detail
        .split("output ")
        .skip(1)
        .filter_map(|rest| {
            let (n, after) = rest.split_once(' ')?;
            after.starts_with('(').then(|| n.parse().ok())?
        })
        .collect()
}

/// Whether an `onchain-destination-allowlisted` refusal names an output that does not pay
/// our wallet. When it names only outputs to our wallet, it comes from the key derivations
/// lightningd adds and this request lacks (see the module documentation): lightningd's own
/// request would pass.
pub fn foreign_refusal(detail: &str, wallet: &[usize]) -> bool {
    let named = refused_outputs(detail);
    named.is_empty() || named.iter().any(|i| !wallet.contains(i))
}

/// Reads a PSBT from lightningd's RPC: base64 of version 0, or of version 2 (converted with
/// `setpsbtversion`, as lightningd converts what it writes to hsmd).
///
/// # Errors
/// When neither works.
pub async fn read_psbt(rpc: &mut ClnRpc, base64: &str) -> Result<Psbt, String> {
    if let Ok(p) = Psbt::from_str(base64) {
        return Ok(p);
    }
    let v0: Value = rpc
        .call_raw("setpsbtversion", &json!({"psbt": base64, "version": 0}))
        .await
        .map_err(|e| format!("setpsbtversion: {e}"))?;
    let s = v0["psbt"].as_str().ok_or("setpsbtversion gave no psbt")?;
    Psbt::from_str(s).map_err(|e| format!("PSBT: {e}"))
}

/// What a check sends, with what is needed to read the signer's answer.
pub struct Built {
    /// The `hsmd_sign_withdrawal` lightningd would send.
    pub request: Vec<u8>,
    /// The outputs that pay our wallet.
    pub wallet_outputs: Vec<usize>,
    /// Each output's address (none for a script that has none).
    pub addresses: Vec<Option<String>>,
}

/// Builds the request for `psbt` (see [`sign_withdrawal`]) with our funds and addresses.
///
/// # Errors
/// An RPC failure, or a PSBT that spends nothing of ours.
pub async fn for_psbt(
    rpc: &mut ClnRpc,
    psbt: Psbt,
    only: Option<&[usize]>,
    network: Network,
) -> Result<Built, String> {
    let listfunds: Value = rpc
        .call_raw("listfunds", &json!({}))
        .await
        .map_err(|e| format!("listfunds: {e}"))?;
    let listaddresses: Value = rpc
        .call_raw("listaddresses", &json!({}))
        .await
        .map_err(|e| format!("listaddresses: {e}"))?;
    let keys = key_indexes(&listaddresses);
    let wallet_outputs = wallet_outputs(&psbt, &keys, network);
    let addresses = psbt
        .unsigned_tx
        .output
        .iter()
        .map(|o| {
            Address::from_script(&o.script_pubkey, network)
                .ok()
                .map(|a| a.to_string())
        })
        .collect();
    let request = sign_withdrawal(psbt, only, &funds(&listfunds), &keys)?;
    Ok(Built {
        request,
        wallet_outputs,
        addresses,
    })
}

/// Builds the request a `withdraw` or `txprepare` of `spend` leads to.
///
/// # Errors
/// An RPC failure (e.g. the wallet cannot afford it: lightningd will say so itself).
pub async fn for_spend(rpc: &mut ClnRpc, spend: &Spend, network: Network) -> Result<Built, String> {
    let (method, req) = funding_request(spend);
    let funded: Value = rpc
        .call_raw(method, &req)
        .await
        .map_err(|e| format!("{method}: {e}"))?;
    let psbt = read_psbt(rpc, funded["psbt"].as_str().ok_or("no psbt")?).await?;
    let psbt = add_outputs(psbt, &funded, spend)?;
    for_psbt(rpc, psbt, None, network).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::Hash;
    use bitcoin::{transaction, Sequence, Transaction, TxIn, Witness};

    fn regtest_address(script_hex: &str) -> String {
        let script = ScriptBuf::from_hex(script_hex).unwrap();
        Address::from_script(&script, Network::Regtest)
            .unwrap()
            .to_string()
    }

    /// A P2WPKH address.
    fn p2wpkh() -> String {
        regtest_address(&format!("0014{}", "ab".repeat(20)))
    }

    /// A P2TR address.
    fn p2tr() -> String {
        regtest_address(&format!("5120{}", "11".repeat(32)))
    }

    #[test]
    fn withdraw_params_by_name_and_by_position() {
        let named = json!({"destination": p2wpkh(), "satoshi": 10_000, "feerate": "urgent"});
        let positional = json!([p2wpkh(), "10000sat", "urgent"]);
        let a = withdraw_params(&named, Network::Regtest).unwrap();
        let b = withdraw_params(&positional, Network::Regtest).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.outputs[0].1, Sats::Amount(Amount::from_sat(10_000)));
        assert_eq!(a.feerate, Some(json!("urgent")));
        assert_eq!(a.minconf, None);
        let all = withdraw_params(&json!([p2wpkh(), "all", null, 0]), Network::Regtest).unwrap();
        assert_eq!(all.outputs[0].1, Sats::All);
        assert_eq!(all.minconf, Some(json!(0)));
        assert!(withdraw_params(&json!([p2wpkh()]), Network::Regtest).is_err());
        // An address of another network is lightningd's to refuse.
        assert!(withdraw_params(&json!([p2wpkh(), 1]), Network::Bitcoin).is_err());
    }

    #[test]
    fn amounts_as_lightningd_reads_them() {
        let a = |v: Value| sats(&v);
        assert_eq!(a(json!(5)), Ok(Sats::Amount(Amount::from_sat(5))));
        assert_eq!(a(json!("5000msat")), Ok(Sats::Amount(Amount::from_sat(5))));
        assert!(a(json!("5001msat")).is_err());
        assert_eq!(a(json!("7sat")), Ok(Sats::Amount(Amount::from_sat(7))));
        assert_eq!(
            a(json!("0.001btc")),
            Ok(Sats::Amount(Amount::from_sat(100_000)))
        );
        assert_eq!(a(json!("all")), Ok(Sats::All));
        assert!(a(json!("lots")).is_err());
        assert!(a(json!(-1)).is_err());
    }

    #[test]
    fn txprepare_params_keep_the_outputs_in_order() {
        let p = json!({"outputs": [{p2tr(): 1000}, {p2wpkh(): "all"}], "utxos": ["aa:0"]});
        let s = txprepare_params(&p, Network::Regtest).unwrap();
        assert_eq!(s.outputs.len(), 2);
        assert_eq!(s.outputs[0].0.len(), 34);
        assert_eq!(s.outputs[1], (s.outputs[1].0.clone(), Sats::All));
        assert_eq!(s.utxos, Some(json!(["aa:0"])));
        let two_alls = json!([[{p2tr(): "all"}, {p2wpkh(): "all"}]]);
        assert!(txprepare_params(&two_alls, Network::Regtest).is_err());
        assert!(txprepare_params(&json!([[{p2tr(): 1, p2wpkh(): 2}]]), Network::Regtest).is_err());
    }

    #[test]
    fn start_weight_is_the_txprepare_plugins() {
        // One P2WPKH output: (4 + 1 + 1 + 4) * 4 + 2 + (8 + 1 + 22) * 4.
        let s = withdraw_params(&json!([p2wpkh(), 1]), Network::Regtest).unwrap();
        assert_eq!(start_weight(&s), 42 + 124);
        let (method, req) = funding_request(&s);
        assert_eq!(method, "fundpsbt");
        assert_eq!(req["satoshi"], json!("1sat"));
        assert_eq!(req["feerate"], json!("opening"));
        assert_eq!(req["reserve"], json!(0));
        assert_eq!(req["excess_as_change"], json!(true));
        let s =
            withdraw_params(&json!([p2wpkh(), "all", 5, 2, ["ab:1"]]), Network::Regtest).unwrap();
        let (method, req) = funding_request(&s);
        assert_eq!(method, "utxopsbt");
        assert_eq!(req["satoshi"], json!("all"));
        assert_eq!(req["utxos"], json!(["ab:1"]));
        assert_eq!(req["reservedok"], json!(false));
        assert!(req.get("minconf").is_none());
    }

    fn funded_psbt(change: Option<u64>) -> Psbt {
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([4; 32]),
                    vout: 1,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: change
                .map(|v| TxOut {
                    value: Amount::from_sat(v),
                    script_pubkey: ScriptBuf::from_hex(&format!("5120{}", "11".repeat(32)))
                        .unwrap(),
                })
                .into_iter()
                .collect(),
        };
        Psbt::from_unsigned_tx(tx).unwrap()
    }

    #[test]
    fn outputs_go_before_the_change_and_all_takes_the_excess() {
        let s = withdraw_params(&json!([p2wpkh(), 1000]), Network::Regtest).unwrap();
        let p = add_outputs(funded_psbt(Some(5000)), &json!({}), &s).unwrap();
        assert_eq!(p.unsigned_tx.output[0].value, Amount::from_sat(1000));
        assert_eq!(p.unsigned_tx.output[1].value, Amount::from_sat(5000));
        assert_eq!(p.outputs.len(), 2);
        let s = txprepare_params(
            &json!([[{p2tr(): 700}, {p2wpkh(): "all"}]]),
            Network::Regtest,
        )
        .unwrap();
        let p = add_outputs(funded_psbt(None), &json!({"excess_msat": 9_000_999}), &s).unwrap();
        let values: Vec<u64> = p
            .unsigned_tx
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .collect();
        assert_eq!(values, vec![700, 8300]);
        let broke = add_outputs(funded_psbt(None), &json!({"excess_msat": 1000}), &s);
        assert!(broke.is_err());
    }

    fn listfunds() -> Value {
        json!({"outputs": [
            {"txid": hex::encode([4; 32]), "output": 1, "amount_msat": 100_000_000,
             "scriptpubkey": format!("0014{}", "22".repeat(20)), "address": "ours",
             "status": "confirmed", "reserved": false},
            {"txid": hex::encode([5; 32]), "output": 0, "amount_msat": 5_000_000,
             "scriptpubkey": format!("0014{}", "33".repeat(20)), "address": "closed"},
            {"txid": "not hex"},
        ]})
    }

    #[test]
    fn our_inputs_become_hsm_utxos_with_their_key_index() {
        let funds = funds(&listfunds());
        assert_eq!(funds.len(), 2);
        let keys = key_indexes(&json!({"addresses": [
            {"keyidx": 12, "bech32": "ours", "p2tr": "ours-tr"},
            {"keyidx": 13, "bech32": "", "p2tr": "other"},
        ]}));
        assert_eq!(keys.get("ours"), Some(&12));
        assert_eq!(keys.get("other"), Some(&13));
        assert!(!keys.contains_key(""));

        let request = sign_withdrawal(funded_psbt(Some(1)), None, &funds, &keys).unwrap();
        let m = SignWithdrawal::decode(&request).unwrap();
        assert_eq!(m.inputs.len(), 1);
        let u = &m.inputs[0];
        assert_eq!((u.vout, u.keyindex, u.amount.to_sat()), (1, 12, 100_000));
        assert!(u.close_info.is_none());
        // The input gets the witness_utxo lightningd adds.
        let w = m.psbt.inputs[0].witness_utxo.as_ref().unwrap();
        assert_eq!(w.value, Amount::from_sat(100_000));
        assert_eq!(w.script_pubkey, u.script_pubkey);

        // A PSBT none of whose (signonly) inputs is ours is not signed by lightningd.
        assert!(sign_withdrawal(funded_psbt(Some(1)), Some(&[3]), &funds, &keys).is_err());
        assert!(sign_withdrawal(funded_psbt(Some(1)), None, &HashMap::new(), &keys).is_err());
    }

    #[test]
    fn a_refusal_naming_only_wallet_outputs_is_not_foreign() {
        let detail = "abcd pays outside our wallet or an allowlisted destination: output 1 \
                      (5000 sat to 5120..), output 2 (1 sat to 0014..)";
        assert!(!foreign_refusal(detail, &[1, 2]));
        assert!(foreign_refusal(detail, &[1]));
        assert!(foreign_refusal("output 0 (1 sat to 00)", &[]));
        assert_eq!(refused_outputs(detail), vec![1, 2]);
        assert!(refused_outputs("the output is 1 (x)").is_empty());
        // A detail that names no output is taken at its word.
        assert!(foreign_refusal("something else", &[0, 1]));
    }

    #[test]
    fn lightningd_network_names() {
        assert_eq!(network("bitcoin"), Some(Network::Bitcoin));
        assert_eq!(network("testnet"), Some(Network::Testnet));
        assert_eq!(network("regtest"), Some(Network::Regtest));
        assert_eq!(network("signet"), Some(Network::Signet));
        assert_eq!(network("liquid"), None);
    }
}
