//! The BOLT 3 test vectors (`tests/data/vectors/bolt03-vectors.json`): every commitment
//! transaction of Appendix C (`option_static_remotekey`) and Appendix F (`option_anchors`),
//! and every HTLC transaction, byte for byte.
//!
//! The vectors give the peer's signatures; ours come from the spec's test keys (the local
//! funding and HTLC secrets), signed here with RFC 6979 as the spec's generator did. Only
//! tests hold these keys: the node itself never signs.

use super::*;
use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::hashes::sha256;
use secp256k1::SecretKey;
use serde_json::Value;
use std::str::FromStr;

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/vectors/bolt03-vectors.json");
    let text = std::fs::read_to_string(&path).expect("bolt03-vectors.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number"))
}

fn pk(v: &Value, key: &str) -> PublicKey {
    PublicKey::from_str(s(v, key)).unwrap()
}

fn sk(v: &Value, key: &str) -> SecretKey {
    SecretKey::from_str(s(v, key)).unwrap()
}

fn der(hex_sig: &str) -> ecdsa::Signature {
    ecdsa::Signature::from_der(&hex::decode(hex_sig).unwrap()).unwrap()
}

/// The channel of the vectors, from the local (funder's) point of view.
fn params(v: &Value, kind: ChannelKind) -> ChannelParams {
    let c = &v["commitment_static_remotekey"]["common"];
    let d = &v["commitment_static_remotekey"]["derivation_inputs_from_spec_comment"];
    // Basepoints a holder commitment does not use are set to any valid point.
    let unused = pk(c, "local_payment_basepoint");
    ChannelParams {
        kind,
        funding_outpoint: OutPoint {
            txid: Txid::from_str(s(c, "funding_tx_id")).unwrap(),
            vout: u(c, "funding_output_index") as u32,
        },
        value_sat: u(c, "funding_amount_satoshi"),
        we_opened: true,
        holder: ChannelKeys {
            funding: pk(c, "local_funding_pubkey"),
            revocation: unused,
            payment: pk(c, "local_payment_basepoint"),
            delayed_payment: pk(d, "local_delayed_payment_basepoint"),
            htlc: pk(c, "local_htlc_basepoint"),
        },
        counterparty: ChannelKeys {
            funding: pk(c, "remote_funding_pubkey"),
            revocation: pk(d, "remote_revocation_basepoint"),
            payment: pk(c, "remote_payment_basepoint"),
            delayed_payment: unused,
            htlc: pk(c, "remote_htlc_basepoint"),
        },
        holder_selected_delay: u(c, "local_delay") as u16,
        counterparty_selected_delay: u(c, "local_delay") as u16,
    }
}

/// The HTLCs `indexes` of the vectors' HTLC set, with their preimages.
fn htlcs(v: &Value, indexes: &Value) -> Vec<(Htlc, [u8; 32])> {
    let all = v["commitment_static_remotekey"]["htlcs"]
        .as_array()
        .unwrap();
    indexes
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let h = &all[i.as_u64().unwrap() as usize];
            let preimage: [u8; 32] = hex::decode(s(h, "payment_preimage"))
                .unwrap()
                .try_into()
                .unwrap();
            let htlc = Htlc {
                offered_by_us: s(h, "direction") == "local->remote",
                amount_msat: u(h, "amount_msat"),
                payment_hash: sha256::Hash::hash(&preimage).to_byte_array(),
                cltv_expiry: u(h, "expiry") as u32,
            };
            (htlc, preimage)
        })
        .collect()
}

fn spec(
    v: &Value,
    to_us_msat: u64,
    to_them_msat: u64,
    feerate: u64,
    dust_limit_sat: u64,
    htlcs: &[(Htlc, [u8; 32])],
) -> CommitmentSpec {
    let c = &v["commitment_static_remotekey"]["common"];
    let d = &v["commitment_static_remotekey"]["derivation_inputs_from_spec_comment"];
    CommitmentSpec {
        number: u(c, "commitment_number"),
        per_commitment_point: pk(d, "local_per_commitment_point"),
        to_us_msat,
        to_them_msat,
        feerate_per_kw: feerate as u32,
        dust_limit_sat,
        htlcs: htlcs.iter().map(|(h, _)| *h).collect(),
    }
}

fn preimage_of(htlcs: &[(Htlc, [u8; 32])], h: &Htlc) -> [u8; 32] {
    htlcs.iter().find(|(x, _)| x == h).unwrap().1
}

#[test]
fn static_remotekey_commitments_and_htlc_txs_match_appendix_c() {
    let v = vectors();
    let p = params(&v, ChannelKind::StaticRemoteKey);
    let common = &v["commitment_static_remotekey"]["common"];
    let dust = u(common, "local_dust_limit_satoshi");
    let funding_key = sk(common, "local_funding_privkey");
    let cases = v["commitment_static_remotekey"]["cases"]
        .as_array()
        .unwrap();
    assert_eq!(cases.len(), 16);
    let mut htlc_txs = 0;
    for case in cases {
        let name = s(case, "name");
        let hs = htlcs(&v, &case["htlcs_in_commitment"]);
        let spec = spec(
            &v,
            u(case, "to_local_msat"),
            u(case, "to_remote_msat"),
            u(case, "local_feerate_per_kw"),
            dust,
            &hs,
        );
        let c = build_commitment(&p, Owner::Holder, &spec).unwrap();
        assert_eq!(
            c.htlc_outputs.len() as u64,
            u(case, "num_htlcs"),
            "{name}: untrimmed HTLCs"
        );
        if let Some(fee) = case["actual_fee_sat"].as_u64() {
            let paid = p.value_sat - c.tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
            assert_eq!(paid, fee, "{name}: fee");
        }
        let remote_sig = der(s(case, "remote_signature"));
        let local_sig = der(s(case, "local_signature"));
        assert!(
            verify_commitment_sig(&c.tx, &p, &remote_sig, &p.counterparty.funding),
            "{name}: the peer's signature does not verify"
        );
        let msg = commitment_sighash(&c.tx, &p).unwrap();
        assert_eq!(
            SECP256K1.sign_ecdsa(&msg, &funding_key),
            local_sig,
            "{name}"
        );
        let signed = finalize_commitment(&c.tx, &p, &local_sig, &remote_sig);
        assert_eq!(serialize_hex(&signed), s(case, "commit_tx_hex"), "{name}");

        let expected = case["htlc_txs"].as_array().unwrap();
        let built = c.htlc_transactions();
        assert_eq!(built.len(), expected.len(), "{name}: HTLC transactions");
        for (b, e) in built.iter().zip(expected) {
            assert_eq!(
                u64::from(b.output.output_index),
                u(e, "commit_output_index")
            );
            assert_eq!(b.is_timeout, s(e, "type") == "htlc-timeout", "{name}");
            let preimage = (!b.is_timeout).then(|| preimage_of(&hs, &b.output.htlc));
            let tx = b.with_witness(
                p.kind,
                &der(s(e, "local_htlc_signature")),
                &der(s(e, "remote_htlc_signature")),
                preimage,
            );
            assert_eq!(serialize_hex(&tx), s(e, "tx_hex"), "{name}");
            htlc_txs += 1;
        }
    }
    assert!(htlc_txs >= 20, "only {htlc_txs} HTLC transactions compared");
}

#[test]
fn anchors_commitments_and_htlc_txs_match_appendix_f() {
    let v = vectors();
    let p = params(&v, ChannelKind::Anchors);
    let common = &v["commitment_static_remotekey"]["common"];
    let funding_key = sk(common, "local_funding_privkey");
    let htlc_key = sk(common, "local_privkey");
    let cases = v["commitment_anchors"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let name = s(case, "Name");
        let hs = htlcs(&v, &case["htlcs_in_commitment"]);
        let spec = spec(
            &v,
            u(case, "LocalBalance"),
            u(case, "RemoteBalance"),
            u(case, "FeePerKw"),
            u(case, "DustLimitSatoshis"),
            &hs,
        );
        let c = build_commitment(&p, Owner::Holder, &spec).unwrap();
        let remote_sig = der(s(case, "RemoteSigHex"));
        assert!(
            verify_commitment_sig(&c.tx, &p, &remote_sig, &p.counterparty.funding),
            "{name}: the peer's signature does not verify"
        );
        let local_sig = SECP256K1.sign_ecdsa(&commitment_sighash(&c.tx, &p).unwrap(), &funding_key);
        let signed = finalize_commitment(&c.tx, &p, &local_sig, &remote_sig);
        assert_eq!(
            serialize_hex(&signed),
            s(case, "ExpectedCommitmentTxHex"),
            "{name}"
        );

        let expected = case["HtlcDescs"].as_array().unwrap();
        let built = c.htlc_transactions();
        assert_eq!(built.len(), expected.len(), "{name}: HTLC transactions");
        for (b, e) in built.iter().zip(expected) {
            let local = SECP256K1.sign_ecdsa(&b.sighash_all(), &htlc_key);
            let preimage = (!b.is_timeout).then(|| preimage_of(&hs, &b.output.htlc));
            let tx = b.with_witness(p.kind, &local, &der(s(e, "RemoteSigHex")), preimage);
            assert_eq!(serialize_hex(&tx), s(e, "ResolutionTxHex"), "{name}");
        }
    }
}

#[test]
fn funding_script_matches_appendix_b() {
    let v = vectors();
    let f = &v["funding_tx"];
    let script = funding_witness_script(
        &pk(f, "remote_funding_pubkey"),
        &pk(f, "local_funding_pubkey"),
    );
    assert_eq!(
        hex::encode(script.as_bytes()),
        s(f, "funding_witness_script")
    );
    let tx: Transaction = deserialize(&hex::decode(s(f, "funding_tx_hex")).unwrap()).unwrap();
    let out = &tx.output[u(f, "funding_output_index") as usize];
    assert_eq!(out.script_pubkey, script.to_p2wsh());
    assert_eq!(out.value.to_sat(), u(f, "funding_satoshis"));
}

#[test]
fn channel_id_is_ldks() {
    let txid =
        Txid::from_str("8984484a580b825b9972d7adb15050b3ab624ccd731946b3eeddb92f4e7ef6be").unwrap();
    for vout in [0u32, 1, 258, 65535] {
        let ldk = lightning::ln::types::ChannelId::v1_from_funding_outpoint(LdkOutPoint {
            txid,
            index: vout as u16,
        });
        assert_eq!(channel_id(&OutPoint { txid, vout }), ldk.0);
    }
}

#[test]
fn the_funder_pays_fee_and_anchors_on_either_commitment() {
    let v = vectors();
    let mut p = params(&v, ChannelKind::Anchors);
    p.we_opened = false;
    let mut sp = spec(&v, 3_000_000_000, 7_000_000_000, 1000, 546, &[]);
    let theirs = build_commitment(&p, Owner::Counterparty, &sp).unwrap();
    let fee = commitment_fee_sat(ChannelKind::Anchors, 1000, 0);
    assert_eq!(theirs.fee_sat, fee);
    assert_eq!(theirs.to_broadcaster_sat, 7_000_000 - fee - 660);
    assert_eq!(theirs.to_countersignatory_sat, 3_000_000);
    let ours = build_commitment(&p, Owner::Holder, &sp).unwrap();
    assert_eq!(ours.to_broadcaster_sat, 3_000_000);
    assert_eq!(ours.to_countersignatory_sat, 7_000_000 - fee - 660);
    // A balance below the dust limit has no output.
    sp.to_us_msat = 545_999;
    sp.to_them_msat = 9_000_000_000;
    let ours = build_commitment(&p, Owner::Holder, &sp).unwrap();
    assert_eq!(ours.to_broadcaster_sat, 0);
    assert_eq!(ours.tx.output.len(), 2, "their balance and their anchor");
}

#[test]
fn overdrawn_and_out_of_range_commitments_are_refused() {
    let v = vectors();
    let p = params(&v, ChannelKind::StaticRemoteKey);
    let mut sp = spec(&v, 10_000_000_000, 1, 253, 546, &[]);
    assert!(matches!(
        build_commitment(&p, Owner::Holder, &sp),
        Err(Bolt3Error::Overdrawn { .. })
    ));
    sp.to_them_msat = 0;
    sp.number = MAX_COMMITMENT_NUMBER + 1;
    assert!(matches!(
        build_commitment(&p, Owner::Holder, &sp),
        Err(Bolt3Error::CommitmentNumber(_))
    ));
    sp.number = 0;
    let mut far = p.clone();
    far.funding_outpoint.vout = 70_000;
    assert!(matches!(
        build_commitment(&far, Owner::Holder, &sp),
        Err(Bolt3Error::FundingIndex(70_000))
    ));
}

#[test]
fn channel_kinds_round_trip_through_features() {
    for k in [ChannelKind::StaticRemoteKey, ChannelKind::Anchors] {
        assert_eq!(ChannelKind::from_features(&k.features()), Some(k));
    }
    let mut zeroconf = ChannelKind::Anchors.features();
    zeroconf.set_zero_conf_required();
    assert_eq!(ChannelKind::from_features(&zeroconf), None);
    assert_eq!(
        ChannelKind::from_features(&ChannelTypeFeatures::empty()),
        None
    );
    for k in [ChannelKind::StaticRemoteKey, ChannelKind::Anchors] {
        assert_eq!(k.to_string().parse::<ChannelKind>(), Ok(k));
    }
    assert!("anchor_outputs".parse::<ChannelKind>().is_err());
}
