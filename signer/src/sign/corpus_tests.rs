//! Every signature in Core Lightning's hsmd conformance corpus, recomputed from each case's
//! own `hsm_secret` with the primitives of this module and compared byte for byte: messages,
//! invoices, bolt12, liquidity ads, gossip, channel transactions (BIP143 + `sign_hash`
//! grinding) and wallet PSBTs (libwally grinding, BIP86 key-path Schnorr).

use std::collections::BTreeMap;

use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::{consensus, CompressedPublicKey, OutPoint, Script, ScriptBuf, Transaction, Txid};
use secp256k1::{PublicKey, SecretKey, SECP256K1};

use super::digest::*;
use super::*;
use crate::keys::channel::{derive_revocation_privkey, derive_simple_privkey};
use crate::keys::corpus::{replay, Exchange, Wire};
use crate::keys::KeyManager;

/// `bitcoin_tx`: `u32 len` + transaction, then `wally_psbt`: `u32 len` + PSBT.
fn read_tx(wire: &mut Wire<'_>) -> (Transaction, Psbt) {
    let tx = consensus::deserialize(wire.var32()).expect("transaction");
    (tx, read_psbt(wire))
}

fn read_psbt(wire: &mut Wire<'_>) -> Psbt {
    Psbt::deserialize(wire.var32()).expect("PSBT")
}

fn htlc_sighash_type(option_anchor_outputs: bool) -> EcdsaSighashType {
    if option_anchor_outputs {
        EcdsaSighashType::SinglePlusAnyoneCanPay
    } else {
        EcdsaSighashType::All
    }
}

/// A `bitcoin_signature` reply (64-byte compact + sighash byte) is `sign_hash` of the BIP143
/// sighash of `index`.
struct TxSig<'a> {
    tx: &'a Transaction,
    psbt: &'a Psbt,
    index: usize,
    script: &'a Script,
    key: SecretKey,
    sighash_type: EcdsaSighashType,
}

fn check_tx_sig(reply: &mut Wire<'_>, s: TxSig<'_>, at: &str) {
    let amount = s.psbt.inputs[s.index]
        .witness_utxo
        .as_ref()
        .expect("witness_utxo")
        .value;
    let msg = segwit_v0_sighash(s.tx, s.index, s.script, amount, s.sighash_type).unwrap();
    assert_eq!(
        reply.array::<64>(),
        sign_ecdsa_cln_grind(&msg, &s.key).serialize_compact(),
        "{at}"
    );
    assert_eq!(u32::from(reply.u8()), s.sighash_type.to_u32(), "{at}");
}

/// One `hsm_utxo` (see hsmd/hsm_utxo.c) and the key hsmd spends it with.
struct Utxo {
    outpoint: OutPoint,
    script_pubkey: ScriptBuf,
    key: SecretKey,
}

fn read_utxos(wire: &mut Wire<'_>, keys: &KeyManager) -> Vec<Utxo> {
    (0..wire.u16())
        .map(|_| {
            let txid = Txid::from_byte_array(wire.array());
            let outpoint = OutPoint {
                txid,
                vout: wire.u32(),
            };
            wire.u64(); // amount: signing takes it from the PSBT
            let keyindex = wire.u32();
            wire.bool();
            let script_pubkey = ScriptBuf::from_bytes(wire.var16().to_vec());
            let key = if wire.bool() {
                let (dbid, peer) = (wire.u64(), wire.array::<33>());
                let point = wire.optional(33).map(|p| PublicKey::from_slice(p).unwrap());
                wire.bool(); // option_anchors: the PSBT carries the witness script
                wire.u32(); // csv
                keys.unilateral_close_key(&peer, dbid, point.as_ref())
                    .unwrap()
            } else {
                keys.wallet_utxo_key(keyindex).unwrap()
            };
            wire.bool();
            Utxo {
                outpoint,
                script_pubkey,
                key,
            }
        })
        .collect()
}

/// libwally's `wally_psbt_sign` with `key` on input `index` of the signed PSBT: a BIP86
/// key-path Schnorr signature for P2TR, else a grinding ECDSA signature over the input's
/// witness script (or the P2WPKH script code).
fn check_psbt_input(
    signed: &Psbt,
    index: usize,
    script_pubkey: &Script,
    key: &SecretKey,
    at: &str,
) {
    let tx = &signed.unsigned_tx;
    let input = &signed.inputs[index];
    if script_pubkey.is_p2tr() {
        let prevouts: Vec<_> = signed
            .inputs
            .iter()
            .map(|i| i.witness_utxo.clone().expect("witness_utxo"))
            .collect();
        let msg = taproot_key_spend_sighash(tx, index, &prevouts, TapSighashType::Default).unwrap();
        let expected = sign_schnorr_no_aux(&msg, &bip86_tweaked_keypair(key));
        assert_eq!(
            input.tap_key_sig.expect("key-path signature").signature,
            expected,
            "{at}"
        );
        return;
    }
    let pubkey = key.public_key(SECP256K1);
    let script_code = match &input.witness_script {
        Some(script) => script.clone(),
        None => ScriptBuf::new_p2pkh(&CompressedPublicKey(pubkey).pubkey_hash()),
    };
    let sighash_type = input
        .sighash_type
        .map_or(EcdsaSighashType::All, |t| t.ecdsa_hash_ty().unwrap());
    let amount = input.witness_utxo.as_ref().expect("witness_utxo").value;
    let msg = segwit_v0_sighash(tx, index, &script_code, amount, sighash_type).unwrap();
    let got = input
        .partial_sigs
        .get(&bitcoin::PublicKey::new(pubkey))
        .expect("our signature");
    assert_eq!(got.signature, sign_ecdsa_wally_grind(&msg, key), "{at}");
    assert_eq!(got.sighash_type, sighash_type, "{at}");
}

/// Every UTXO hsmd was asked to sign has our signature in the reply PSBT.
fn check_psbt(utxos: &[Utxo], signed: &Psbt, at: &str) {
    for utxo in utxos {
        let index = signed
            .unsigned_tx
            .input
            .iter()
            .position(|i| i.previous_output == utxo.outpoint)
            .expect("UTXO is an input");
        check_psbt_input(signed, index, &utxo.script_pubkey, &utxo.key, at);
    }
}

/// Checks one exchange if it carries a signature; returns its name if it was checked.
fn check(mut ex: Exchange<'_>) -> Option<&'static str> {
    let keys = ex.keys;
    let node = keys.node_secret_key();
    let at = ex.at();
    let (peer, dbid) = (ex.peer, ex.dbid);
    let req = &mut ex.request;
    let reply = &mut ex.reply;
    let channel = |peer: &[u8; 33], dbid| keys.channel_secrets(peer, dbid).unwrap();
    let name = match (ex.kind, ex.reply_kind) {
        (23, 123) => {
            let sig = sign_ecdsa_recoverable(&sign_message_digest(req.var16()), node);
            assert_eq!(reply.array::<65>(), recoverable_to_wire(&sig), "{at}");
            "hsmd_sign_message"
        }
        (45, 145) => {
            let (message, index) = (req.var16(), req.u32());
            let key = keys.wallet_utxo_key(index).unwrap();
            let sig = sign_ecdsa_recoverable(&bip137_digest(message), &key);
            assert_eq!(reply.array::<65>(), recoverable_to_wire(&sig), "{at}");
            "hsmd_bip137_sign_message"
        }
        (8, 108) => {
            let (u5, hrp) = (req.var16(), req.var16());
            let sig = sign_ecdsa_recoverable(&invoice_digest(hrp, u5), node);
            assert_eq!(reply.array::<65>(), recoverable_to_wire(&sig), "{at}");
            "hsmd_sign_invoice"
        }
        (25, 125) => {
            let (message, field, root) = (req.wirestring(), req.wirestring(), req.array::<32>());
            let keypair = keys.bolt12_payer_keypair(req.var16()).unwrap();
            let sig = sign_schnorr_no_aux(&bolt12_sighash(message, field, &root), &keypair);
            assert_eq!(reply.array::<64>(), sig.serialize(), "{at}");
            "hsmd_sign_bolt12"
        }
        (41, 141) => {
            let (message, field, root) = (req.wirestring(), req.wirestring(), req.array::<32>());
            let (info, tweak) = (req.var16(), req.var16());
            let keypair = keys.bolt12_alias_keypair(info, tweak).unwrap();
            let sig = sign_schnorr_no_aux(&bolt12_sighash(message, field, &root), &keypair);
            assert_eq!(reply.array::<64>(), sig.serialize(), "{at}");
            "hsmd_sign_bolt12_2"
        }
        (26, 126) => {
            let msg = will_fund_digest(&req.pubkey(), req.u32(), req.u32(), req.u16());
            assert_eq!(
                reply.array::<64>(),
                sign_ecdsa_no_grind(&msg, node).serialize_compact(),
                "{at}"
            );
            "hsmd_sign_option_will_fund_offer"
        }
        (2, 102) | (4, 104) => {
            let announcement = req.var16();
            let (peer, dbid) = if ex.kind == 4 {
                (req.array::<33>(), req.u64())
            } else {
                (peer, dbid)
            };
            let msg = gossip_digest(announcement, CHANNEL_ANNOUNCEMENT_SIGNED_FROM).unwrap();
            assert_eq!(
                reply.array::<64>(),
                sign_ecdsa_cln_grind(&msg, node).serialize_compact(),
                "{at}"
            );
            let funding = channel(&peer, dbid).funding_key;
            assert_eq!(
                reply.array::<64>(),
                sign_ecdsa_cln_grind(&msg, &funding).serialize_compact(),
                "{at}"
            );
            "hsmd_cannouncement_sig_req / sign_any_cannouncement"
        }
        (6, 106) => {
            let msg = gossip_digest(req.var16(), NODE_ANNOUNCEMENT_SIGNED_FROM).unwrap();
            assert_eq!(
                reply.array::<64>(),
                sign_ecdsa_cln_grind(&msg, node).serialize_compact(),
                "{at}"
            );
            "hsmd_node_announcement_sig_req"
        }
        (3, 103) => {
            let msg = gossip_digest(req.var16(), CHANNEL_UPDATE_SIGNED_FROM).unwrap();
            let update = reply.var16();
            assert_eq!(
                update[2..66],
                sign_ecdsa_cln_grind(&msg, node).serialize_compact(),
                "{at}"
            );
            "hsmd_cupdate_sig_req"
        }
        (5, 105) | (19, 112) | (21, 112) | (29, 112) => {
            let (peer, dbid) = if ex.kind == 5 {
                (req.array::<33>(), req.u64())
            } else {
                (peer, dbid)
            };
            let (tx, psbt) = read_tx(req);
            let remote = req.pubkey();
            let index = if ex.kind == 29 { req.u32() as usize } else { 0 };
            let secrets = channel(&peer, dbid);
            let script =
                crate::bolt3::funding_redeem_script(&secrets.basepoints().funding_pubkey, &remote);
            let (tx, psbt, script) = (&tx, &psbt, &script);
            let sighash_type = EcdsaSighashType::All;
            check_tx_sig(
                reply,
                TxSig {
                    tx,
                    psbt,
                    index,
                    script,
                    key: secrets.funding_key,
                    sighash_type,
                },
                &at,
            );
            "funding-key signatures (commitment, mutual close, splice)"
        }
        (20, 112) => {
            let (tx, psbt) = read_tx(req);
            let script = ScriptBuf::from_bytes(req.var16().to_vec());
            let (point, anchors) = (req.pubkey(), req.bool());
            let key =
                derive_simple_privkey(&channel(&peer, dbid).htlc_basepoint_secret, &point).unwrap();
            let (tx, psbt, script, sighash_type) =
                (&tx, &psbt, &script, htlc_sighash_type(anchors));
            check_tx_sig(
                reply,
                TxSig {
                    tx,
                    psbt,
                    index: 0,
                    script,
                    key,
                    sighash_type,
                },
                &at,
            );
            "hsmd_sign_remote_htlc_tx"
        }
        (146, 112) => {
            let commit_num = req.u64();
            let (tx, psbt) = read_tx(req);
            let script = ScriptBuf::from_bytes(req.var16().to_vec());
            let (anchors, index) = (req.bool(), req.u32() as usize);
            let secrets = channel(&req.array::<33>(), req.u64());
            let point = secrets.per_commitment_point(commit_num).unwrap();
            let key = derive_simple_privkey(&secrets.htlc_basepoint_secret, &point).unwrap();
            let (tx, psbt, script, sighash_type) =
                (&tx, &psbt, &script, htlc_sighash_type(anchors));
            check_tx_sig(
                reply,
                TxSig {
                    tx,
                    psbt,
                    index,
                    script,
                    key,
                    sighash_type,
                },
                &at,
            );
            "hsmd_sign_any_local_htlc_tx"
        }
        (12, 112) | (142, 112) | (13, 112) | (143, 112) | (14, 112) | (144, 112) => {
            // The three "to us" sweeps; the `_any_` variants add (input, peer, dbid) at the end.
            let commit_num = matches!(ex.kind, 12 | 142).then(|| req.u64());
            let remote_point = matches!(ex.kind, 13 | 143).then(|| req.pubkey());
            let revocation_secret = matches!(ex.kind, 14 | 144).then(|| req.array::<32>());
            let (tx, psbt) = read_tx(req);
            let script = ScriptBuf::from_bytes(req.var16().to_vec());
            let anchors = remote_point.is_some() && req.bool();
            let (peer, dbid) = if ex.kind > 100 {
                req.u32();
                (req.array::<33>(), req.u64())
            } else {
                (peer, dbid)
            };
            let secrets = channel(&peer, dbid);
            let key = if let Some(n) = commit_num {
                let point = secrets.per_commitment_point(n).unwrap();
                derive_simple_privkey(&secrets.delayed_payment_basepoint_secret, &point).unwrap()
            } else if let Some(point) = remote_point {
                derive_simple_privkey(&secrets.htlc_basepoint_secret, &point).unwrap()
            } else {
                let secret = SecretKey::from_slice(&revocation_secret.unwrap()).unwrap();
                derive_revocation_privkey(&secrets.revocation_basepoint_secret, &secret).unwrap()
            };
            // hsmd signs input 0 of these one-input transactions, whatever `input` says.
            let (tx, psbt, script, sighash_type) =
                (&tx, &psbt, &script, htlc_sighash_type(anchors));
            check_tx_sig(
                reply,
                TxSig {
                    tx,
                    psbt,
                    index: 0,
                    script,
                    key,
                    sighash_type,
                },
                &at,
            );
            "to-us sweeps (delayed payment, remote htlc, penalty)"
        }
        (7, 107) => {
            let utxos = read_utxos(req, keys);
            check_psbt(&utxos, &read_psbt(reply), &at);
            "hsmd_sign_withdrawal"
        }
        (147, 148) | (149, 150) => {
            let (peer, dbid) = (req.array::<33>(), req.u64());
            let utxos = read_utxos(req, keys);
            let signed = read_psbt(reply);
            check_psbt(&utxos, &signed, &at);
            if ex.kind == 147 {
                // The anchor input is signed with the channel's funding key.
                let funding = channel(&peer, dbid).funding_key;
                let ours = bitcoin::PublicKey::new(funding.public_key(SECP256K1));
                let anchors: Vec<usize> = (0..signed.inputs.len())
                    .filter(|&i| signed.inputs[i].partial_sigs.contains_key(&ours))
                    .collect();
                assert!(!anchors.is_empty(), "no anchor signature, {at}");
                for index in anchors {
                    check_psbt_input(&signed, index, Script::new(), &funding, &at);
                }
            }
            "hsmd_sign_anchorspend / sign_htlc_tx_mingle"
        }
        _ => return None,
    };
    Some(name)
}

#[test]
fn signatures_match_core_lightning() {
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    replay(|ex| {
        if let Some(name) = check(ex) {
            *checked.entry(name).or_default() += 1;
        }
    });
    eprintln!("corpus signature checks: {checked:#?}");
    let expected_kinds = 15;
    assert_eq!(
        checked.len(),
        expected_kinds,
        "a message kind was never checked: {checked:?}"
    );
}
