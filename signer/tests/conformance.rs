//! The golden corpus of Core Lightning's hsmd, replayed in-process through `Signer::handle`
//! with every policy rule in warn mode: every reply must be byte-identical, every request
//! hsmd refused must be refused (client closed, or the whole signer stopped).
//!
//! The client bookkeeping here (new clients, same-dbid replacement, the dbid-0 limit) is what
//! the proxy does in production.

use protocol::msgs::{ClientHsmfd, InitReplyFailure};
use protocol::Permissions;
use serde_json::Value;
use signer::{ClientContext, Policy, Signer, SignerError, Store};
use std::path::PathBuf;

fn corpus(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/conformance")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// What happened to one step.
#[derive(Debug, PartialEq)]
enum Outcome {
    Reply(String),
    ClientClosed,
    Exited,
}

/// Replays one case; returns the mismatches.
fn replay(case: &Value) -> Vec<String> {
    replay_under(case, Policy::warn_only())
}

/// Replays one case under `policy`; returns the mismatches.
fn replay_under(case: &Value, policy: Policy) -> Vec<String> {
    let secret = match case.get("hsm_secret_file").and_then(Value::as_str) {
        Some(f) => hex::decode(f).unwrap(),
        None => hex::decode(case["hsm_secret"].as_str().unwrap()).unwrap(),
    };
    let signer = Signer::new(secret, Store::temporary().unwrap(), policy);
    let mut clients: Vec<Option<ClientContext>> = vec![Some(ClientContext::master())];
    let mut mismatches = Vec::new();
    let mut exited = false;
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let c = step["client"].as_u64().unwrap() as usize;
        let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
        let got = if exited {
            Outcome::Exited
        } else {
            match clients.get(c).cloned().flatten() {
                None => Outcome::ClientClosed,
                Some(ctx) => match signer.handle(&ctx, Some(i as u64), &req) {
                    Ok(reply) => {
                        if let Ok(h) = ClientHsmfd::decode(&req) {
                            let perms = Permissions::from_bits(h.permissions);
                            let new = ClientContext::client(h.id, h.dbid, perms);
                            if h.dbid != 0 {
                                // A new client for the same channel replaces the old one.
                                for old in clients.iter_mut() {
                                    if old
                                        .as_ref()
                                        .is_some_and(|o| !o.is_master && o.dbid == h.dbid)
                                    {
                                        *old = None;
                                    }
                                }
                            } else {
                                let global = clients
                                    .iter()
                                    .flatten()
                                    .filter(|o| !o.is_master && o.dbid == 0)
                                    .count();
                                if global >= 2 {
                                    exited = true;
                                }
                            }
                            clients.push(Some(new));
                        }
                        if exited {
                            Outcome::Exited
                        } else {
                            if InitReplyFailure::decode(&reply).is_ok() {
                                exited = true;
                            }
                            Outcome::Reply(hex::encode(reply))
                        }
                    }
                    Err(e) => {
                        if ctx.is_master || matches!(e, SignerError::Fatal { .. }) {
                            exited = true;
                            Outcome::Exited
                        } else {
                            clients[c] = None;
                            Outcome::ClientClosed
                        }
                    }
                },
            }
        };
        let want = match step["outcome"].as_str() {
            Some("reply") => Outcome::Reply(step["reply"].as_str().unwrap().to_string()),
            Some("client_closed") => Outcome::ClientClosed,
            Some("hsmd_exited") => Outcome::Exited,
            other => panic!("unexpected outcome {other:?}"),
        };
        if got != want {
            mismatches.push(format!(
                "{} step {i} ({}): want {want:?}, got {got:?}",
                case["name"].as_str().unwrap(),
                step["request_name"].as_str().unwrap()
            ));
        }
    }
    mismatches
}

/// Core Lightning's real commitments (the golden corpus's channels, HTLCs included) carry the
/// peer's valid commitment and HTLC signatures: `commitment-signed-by-peer` enforced, every
/// step still answers as hsmd did.
#[test]
fn real_peer_signatures_pass_commitment_signed_by_peer() {
    let policy =
        Policy::from_toml("default = \"warn\"\n[rules]\ncommitment-signed-by-peer = \"enforce\"\n")
            .unwrap();
    let cases = corpus("cln-hsmd-golden.json");
    let channels: Vec<&Value> = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("channel_"))
        .collect();
    assert!(channels.len() >= 4);
    let htlc_sigs: usize = channels
        .iter()
        .flat_map(|c| c["steps"].as_array().unwrap())
        .filter_map(|s| hex::decode(s["request"].as_str()?).ok())
        .filter_map(|r| protocol::msgs::ValidateCommitmentTx::decode(&r).ok())
        .map(|v| v.htlc_sigs.len())
        .sum();
    assert!(
        htlc_sigs > 0,
        "the corpus's commitments carry HTLC signatures to check"
    );
    for case in channels {
        let m = replay_under(case, policy.clone());
        assert!(m.is_empty(), "{m:#?}");
    }
}

#[test]
fn golden_corpus_in_process() {
    let (mut passed, mut failed) = (0, 0);
    for file in ["cln-hsmd-golden.json", "cln-hsmd-mnemonic.json"] {
        for case in corpus(file)["cases"].as_array().unwrap() {
            let m = replay(case);
            if m.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                for line in m {
                    println!("mismatch: {line}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    assert_eq!(failed, 0);
}
