#[cfg(test)]
mod scratch {
    use protocol::Message;
    use serde_json::Value;
    #[test]
    fn dump() {
        for f in ["cln-hsmd-golden.json", "cln-hsmd-mnemonic.json"] {
            let text = std::fs::read_to_string(format!("../tests/data/conformance/{f}")).unwrap();
            let corpus: Value = serde_json::from_str(&text).unwrap();
            for case in corpus["cases"].as_array().unwrap() {
                for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
                    let req = hex::decode(step["request"].as_str().unwrap()).unwrap();
                    let Ok(m) = Message::decode(&req) else { continue };
                    let (psbt, what) = match &m {
                        Message::SetupChannel(s) => { println!("{} {i} setup: shutdown {} idx {:?} remote {}", case["name"], hex::encode(&s.local_shutdown_script), s.local_shutdown_wallet_index, hex::encode(&s.remote_shutdown_script)); continue }
                        Message::SignWithdrawal(s) => (s.psbt.clone(), format!("withdrawal utxos {:?}", s.inputs.iter().map(|u| (u.vout, u.keyindex, u.script_pubkey.to_hex_string(), u.close_info.is_some())).collect::<Vec<_>>())),
                        Message::SignAnchorspend(s) => (s.psbt.clone(), "anchorspend".into()),
                        Message::SignHtlcTxMingle(s) => (s.psbt.clone(), "mingle".into()),
                        Message::SignMutualCloseTx(s) => (s.tx.psbt.clone(), "mutual".into()),
                        Message::SignSpliceTx(s) => (s.tx.psbt.clone(), "splice".into()),
                        Message::SignAnyLocalHtlcTx(s) => (s.tx.psbt.clone(), format!("anylocalhtlc {}", s.commit_num)),
                        Message::SignDelayedPaymentToUs(s) => (s.tx.psbt.clone(), "delayed".into()),
                        Message::SignAnyDelayedPaymentToUs(s) => (s.tx.psbt.clone(), "anydelayed".into()),
                        Message::SignPenaltyToUs(s) => (s.tx.psbt.clone(), "penalty".into()),
                        Message::SignRemoteHtlcToUs(s) => (s.tx.psbt.clone(), "remotehtlc".into()),
                        _ => continue,
                    };
                    println!("{} {i} {what} outcome {:?}", case["name"], step["outcome"]);
                    for (j, inp) in psbt.inputs.iter().enumerate() {
                        println!("  in {j}: wu {:?} nwu {} ws {:?} bip32 {:?} tap {:?}", inp.witness_utxo.as_ref().map(|o| (o.value, o.script_pubkey.to_hex_string())), inp.non_witness_utxo.is_some(), inp.witness_script.as_ref().map(|s| s.len()), inp.bip32_derivation, inp.tap_key_origins);
                    }
                    for (j, (o, po)) in psbt.unsigned_tx.output.iter().zip(&psbt.outputs).enumerate() {
                        println!("  out {j}: {} {} bip32 {:?} tap {:?}", o.value, o.script_pubkey.to_hex_string(), po.bip32_derivation, po.tap_key_origins);
                    }
                }
            }
        }
    }
}
