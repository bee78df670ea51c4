//! In-process latency of `Signer::handle` per message type, with the state store in memory
//! (no durable commit) and on disk (every state-changing request fsynced before its reply).
//!
//! Run: `cargo bench -p signer --bench handlers` (`-- --quick` for fewer iterations). Prints
//! one JSON object per line: `{"op", "store", "n", "p50_us", "p99_us", "mean_us"}`.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use protocol::msgs::*;
use protocol::types::{AmountMsat, HsmHtlc, HsmUtxo, NodeId, Side};
use protocol::Permissions;
use secp256k1::{PublicKey, SECP256K1};
use serde_json::Value;
use signer::{ClientContext, Policy, Signer, Store};
use std::time::Instant;

fn corpus() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/conformance/cln-hsmd-golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The first request of `name` in case `case`, and the case's secret and init request.
fn from_case(c: &Value, case: &str, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
    let case = c["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == case)
        .unwrap();
    let steps = case["steps"].as_array().unwrap();
    let secret = hex::decode(case["hsm_secret"].as_str().unwrap()).unwrap();
    let init = hex::decode(steps[0]["request"].as_str().unwrap()).unwrap();
    let step = steps.iter().find(|s| s["request_name"] == name).unwrap();
    let client = steps
        .iter()
        .find(|s| s["request_name"] == "hsmd_client_hsmfd")
        .map(|s| hex::decode(s["request"].as_str().unwrap()).unwrap());
    (
        secret,
        init,
        hex::decode(step["request"].as_str().unwrap()).unwrap(),
        client,
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn measure(op: &str, store: &str, n: usize, mut f: impl FnMut(usize)) {
    for i in 0..n.min(20) {
        f(i);
    }
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        f(i);
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = t.iter().sum::<f64>() / t.len() as f64;
    println!(
        "{{\"op\": \"{op}\", \"store\": \"{store}\", \"n\": {n}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"mean_us\": {:.1}}}",
        percentile(&t, 0.5),
        percentile(&t, 0.99),
        mean
    );
}

fn signer(secret: &[u8], init: &[u8], durable: bool, dir: &std::path::Path) -> Signer {
    let store = if durable {
        Store::open(&dir.join("state.redb")).unwrap()
    } else {
        Store::temporary().unwrap()
    };
    let s = Signer::new(secret.to_vec(), store, Policy::warn_only());
    s.handle(&ClientContext::master(), None, init).unwrap();
    s
}

fn client_ctx(hsmfd: &[u8]) -> ClientContext {
    let h = ClientHsmfd::decode(hsmfd).unwrap();
    ClientContext::client(h.id, h.dbid, Permissions::from_bits(h.permissions))
}

/// A remote commitment with `n` HTLC outputs, from a recorded one.
fn with_htlcs(req: &[u8], n: usize) -> Vec<u8> {
    let mut m = SignRemoteCommitmentTx::decode(req).unwrap();
    m.htlcs.clear();
    let mut tx = m.tx.tx.clone();
    tx.output.truncate(2);
    for i in 0..n {
        let hash = sha256::Hash::hash(&[i as u8]);
        m.htlcs.push(HsmHtlc {
            side: if i % 2 == 0 {
                Side::Local
            } else {
                Side::Remote
            },
            amount: AmountMsat::from_msat(1_000_000),
            payment_hash: hash,
            cltv_expiry: 500 + i as u32,
        });
        tx.output.push(TxOut {
            value: Amount::from_sat(1000),
            script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::hash(&[i as u8])),
        });
    }
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    psbt.inputs[0] = m.tx.psbt.inputs[0].clone();
    m.tx.tx = tx;
    m.tx.psbt = psbt.into();
    m.encode().unwrap()
}

/// A withdrawal spending `n` P2WPKH wallet outputs (key indexes 0..n).
fn withdrawal(s: &Signer, n: usize) -> Vec<u8> {
    let keys = &s.session().unwrap().keys;
    let mut inputs = Vec::new();
    let mut utxos = Vec::new();
    let mut spent = Vec::new();
    for i in 0..n {
        let pk = PublicKey::from_secret_key(SECP256K1, &keys.wallet_key(i as u32).unwrap());
        let spk = ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(pk).wpubkey_hash());
        let txid = Txid::from_byte_array(sha256::Hash::hash(&[i as u8, 7]).to_byte_array());
        inputs.push(TxIn {
            previous_output: OutPoint::new(txid, 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        });
        spent.push(TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: spk.clone(),
        });
        utxos.push(HsmUtxo {
            txid,
            vout: 0,
            amount: Amount::from_sat(100_000),
            keyindex: i as u32,
            legacy_is_p2sh: false,
            script_pubkey: spk,
            close_info: None,
            legacy_is_in_coinbase: false,
        });
    }
    let out = TxOut {
        value: Amount::from_sat(100_000 * n as u64 - 1000),
        script_pubkey: spent[0].script_pubkey.clone(),
    };
    let tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: inputs,
        output: vec![out],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    for (i, o) in spent.into_iter().enumerate() {
        psbt.inputs[i].witness_utxo = Some(o);
    }
    SignWithdrawal::new(utxos, psbt.into()).encode().unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 200 } else { 2000 };
    let c = corpus();
    for durable in [false, true] {
        let store = if durable { "durable" } else { "memory" };
        let dir = tempfile::tempdir().unwrap();
        let master = ClientContext::master();

        let (secret, init, ecdh, _) = from_case(&c, "ecdh_master", "hsmd_ecdh_req");
        let s = signer(&secret, &init, durable, dir.path());
        measure("ecdh", store, n, |_| {
            s.handle(&master, None, &ecdh).unwrap();
        });
        let (_, _, inv, _) = from_case(&c, "sign_invoice_regtest", "hsmd_sign_invoice");
        measure("sign_invoice", store, n, |_| {
            s.handle(&master, None, &inv).unwrap();
        });
        let w1 = withdrawal(&s, 1);
        measure("sign_withdrawal_1_input", store, n / 4, |_| {
            s.handle(&master, None, &w1).unwrap();
        });
        let w10 = withdrawal(&s, 10);
        measure("sign_withdrawal_10_inputs", store, n / 10, |_| {
            s.handle(&master, None, &w10).unwrap();
        });
        drop(s);

        let dir = tempfile::tempdir().unwrap();
        let (secret, init, remote, hsmfd) = from_case(
            &c,
            "channel_static_remotekey_we_open",
            "hsmd_sign_remote_commitment_tx",
        );
        let s = signer(&secret, &init, durable, dir.path());
        let hsmfd = hsmfd.unwrap();
        s.handle(&master, None, &hsmfd).unwrap();
        let ctx = client_ctx(&hsmfd);
        let setup_steps: Vec<Vec<u8>> = {
            let case = c["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == "channel_static_remotekey_we_open")
                .unwrap();
            case["steps"]
                .as_array()
                .unwrap()
                .iter()
                .take_while(|st| st["request_name"] != "hsmd_sign_remote_commitment_tx")
                .map(|st| hex::decode(st["request"].as_str().unwrap()).unwrap())
                .collect()
        };
        for (i, st) in setup_steps.iter().enumerate().skip(1) {
            let who = if ClientHsmfd::decode(st).is_ok() || i < 2 {
                &master
            } else {
                &ctx
            };
            let _ = s
                .handle(who, None, st)
                .or_else(|_| s.handle(&master, None, st));
        }
        let point = GetPerCommitmentPoint::new(1).encode().unwrap();
        measure("get_per_commitment_point", store, n, |_| {
            s.handle(&ctx, None, &point).unwrap();
        });
        let r0 = with_htlcs(&remote, 0);
        let r10 = with_htlcs(&remote, 10);
        let _ = NodeId::from_bytes([2; 33]);
        measure("sign_remote_commitment_tx_0_htlcs", store, n / 4, |i| {
            s.handle(&ctx, Some(i as u64 * 2), &r0).unwrap();
        });
        measure("sign_remote_commitment_tx_10_htlcs", store, n / 4, |i| {
            s.handle(&ctx, Some(i as u64 * 2 + 1), &r10).unwrap();
        });
    }
}
