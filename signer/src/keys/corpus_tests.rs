//! Key derivation checked against every answer of Core Lightning's hsmd in the conformance
//! corpus that depends only on keys: init reply, ECDH, `derive_secret`, basepoints,
//! per-commitment points and secrets, wallet and BIP86 pubkeys, close-output scripts.
//! Everything is recomputed from each case's own `hsm_secret`.

use std::collections::BTreeMap;

use bitcoin::{CompressedPublicKey, ScriptBuf};
use secp256k1::SECP256K1;

use super::corpus::{mnemonic_files, replay, Exchange, Wire};
use crate::secret::{HsmSecret, HsmSecretKind, SecretError};

/// Reads the TLV stream of `hsmd_init_reply_v4` (all types and lengths are below 0xfd here).
fn tlvs(mut wire: Wire<'_>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.rest().is_empty() {
        let (kind, len) = (wire.u8(), wire.u8());
        assert!(
            kind < 0xfd && len < 0xfd,
            "multi-byte bigsize in init reply"
        );
        out.push((kind, wire.take(len as usize).to_vec()));
    }
    out
}

/// Checks one exchange if it is one of ours; returns its name if it was checked.
fn check(mut ex: Exchange<'_>) -> Option<&'static str> {
    let keys = ex.keys;
    let at = ex.at();
    let req = &mut ex.request;
    let reply = &mut ex.reply;
    let name = match (ex.kind, ex.reply_kind) {
        (11, 114) => {
            assert_eq!(reply.u32(), ex.version);
            let caps = reply.u16() as usize;
            reply.take(4 * caps);
            assert_eq!(
                reply.array::<33>(),
                keys.node_id().serialize(),
                "node id, {at}"
            );
            assert_eq!(
                reply.array::<78>(),
                keys.bip32_base_xpub().encode(),
                "xpub, {at}"
            );
            assert_eq!(
                reply.array::<33>(),
                keys.bolt12_base_pubkey().serialize(),
                "bolt12, {at}"
            );
            let mut expected = vec![(1, vec![keys.secret_kind().wire_code()])];
            if let Some(bip86) = keys.bip86_base_xpub() {
                expected.push((2, bip86.encode().to_vec()));
            }
            assert_eq!(tlvs(*reply), expected, "init TLVs, {at}");
            "hsmd_init"
        }
        (1, 100) => {
            assert_eq!(reply.array::<32>(), keys.ecdh(&req.pubkey()), "{at}");
            "hsmd_ecdh_req"
        }
        (27, 127) => {
            assert_eq!(reply.array::<32>(), keys.derive_secret(req.var16()), "{at}");
            "hsmd_derive_secret"
        }
        (10, 110) => {
            let (peer, dbid) = (req.array::<33>(), req.u64());
            let points = keys.channel_secrets(&peer, dbid).unwrap().basepoints();
            for (what, point) in [
                ("revocation", points.revocation),
                ("payment", points.payment),
                ("htlc", points.htlc),
                ("delayed_payment", points.delayed_payment),
                ("funding", points.funding_pubkey),
            ] {
                assert_eq!(reply.pubkey(), point, "{what} basepoint, {at}");
            }
            "hsmd_get_channel_basepoints"
        }
        (18, 118) => {
            let n = req.u64();
            let secrets = keys.channel_secrets(&ex.peer, ex.dbid).unwrap();
            assert_eq!(
                reply.pubkey(),
                secrets.per_commitment_point(n).unwrap(),
                "point {n}, {at}"
            );
            let old = reply.optional(32);
            if ex.version < 6 && n >= 2 {
                assert_eq!(
                    old.unwrap(),
                    secrets.per_commitment_secret(n - 2).unwrap(),
                    "{at}"
                );
            } else {
                assert!(old.is_none(), "{at}");
            }
            "hsmd_get_per_commitment_point"
        }
        (22, 122) => {
            let (n, suggested) = (req.u64(), req.array::<32>());
            let secrets = keys.channel_secrets(&ex.peer, ex.dbid).unwrap();
            assert_eq!(
                reply.bool(),
                secrets.is_per_commitment_secret(n, &suggested).unwrap(),
                "{at}"
            );
            "hsmd_check_future_secret"
        }
        (40, 140) => {
            let n = req.u64();
            let secrets = keys.channel_secrets(&ex.peer, ex.dbid).unwrap();
            assert_eq!(
                reply.array::<32>(),
                secrets.per_commitment_secret(n).unwrap(),
                "{at}"
            );
            assert_eq!(
                reply.pubkey(),
                secrets.per_commitment_point(n + 2).unwrap(),
                "{at}"
            );
            "hsmd_revoke_commitment_tx"
        }
        (35, 135) => {
            req.var32(); // tx
            req.var32(); // psbt
            let htlcs = req.u16() as usize;
            req.take(htlcs * (1 + 8 + 32 + 4));
            let n = req.u64();
            let secrets = keys.channel_secrets(&ex.peer, ex.dbid).unwrap();
            assert!(reply.optional(32).is_none(), "{at}");
            assert_eq!(
                reply.pubkey(),
                secrets.per_commitment_point(n + 1).unwrap(),
                "{at}"
            );
            "hsmd_validate_commitment_tx"
        }
        (24, 124) => {
            let (dbid, peer) = (req.u64(), req.array::<33>());
            let point = req
                .optional(33)
                .map(|p| secp256k1::PublicKey::from_slice(p).unwrap());
            let key = keys
                .unilateral_close_key(&peer, dbid, point.as_ref())
                .unwrap();
            let script = ScriptBuf::new_p2wpkh(
                &CompressedPublicKey(key.public_key(SECP256K1)).wpubkey_hash(),
            );
            assert_eq!(reply.var16(), script.as_bytes(), "{at}");
            "hsmd_get_output_scriptpubkey"
        }
        (28, 128) => {
            let (index, theirs) = (req.u32(), req.pubkey());
            assert_eq!(
                keys.wallet_key(index).unwrap().public_key(SECP256K1),
                theirs,
                "{at}"
            );
            assert!(reply.bool());
            "hsmd_check_pubkey"
        }
        (56, 156) => {
            let (index, theirs) = (req.u32(), req.pubkey());
            assert_eq!(
                keys.bip86_key(index).unwrap().public_key(SECP256K1),
                theirs,
                "{at}"
            );
            assert!(reply.bool());
            "hsmd_check_bip86_pubkey"
        }
        _ => return None,
    };
    Some(name)
}

#[test]
fn key_answers_match_core_lightning() {
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    replay(|ex| {
        if let Some(name) = check(ex) {
            *checked.entry(name).or_default() += 1;
        }
    });
    eprintln!("corpus key checks: {checked:?}");
    for name in [
        "hsmd_init",
        "hsmd_ecdh_req",
        "hsmd_derive_secret",
        "hsmd_get_channel_basepoints",
        "hsmd_get_per_commitment_point",
        "hsmd_check_future_secret",
        "hsmd_revoke_commitment_tx",
        "hsmd_validate_commitment_tx",
        "hsmd_get_output_scriptpubkey",
        "hsmd_check_pubkey",
        "hsmd_check_bip86_pubkey",
    ] {
        assert!(
            checked.get(name).copied().unwrap_or(0) > 0,
            "no {name} in the corpus was checked"
        );
    }
}

#[test]
fn corpus_mnemonic_files_load_only_with_their_passphrase() {
    let files = mnemonic_files();
    assert_eq!(files.len(), 2);
    for (file, passphrase) in files {
        let secret =
            HsmSecret::from_file_bytes(&file, passphrase.as_deref().map(str::as_bytes)).unwrap();
        assert_eq!(
            secret.to_file_bytes().unwrap().as_slice(),
            file.as_slice(),
            "file round trip"
        );
        match passphrase {
            Some(passphrase) => {
                assert_eq!(secret.kind(), HsmSecretKind::MnemonicWithPassphrase);
                let wrong = format!("{passphrase}x");
                assert!(matches!(
                    HsmSecret::from_file_bytes(&file, Some(wrong.as_bytes())),
                    Err(SecretError::WrongPassphrase)
                ));
                assert!(matches!(
                    HsmSecret::from_file_bytes(&file, None),
                    Err(SecretError::PassphraseRequired)
                ));
            }
            None => {
                assert_eq!(secret.kind(), HsmSecretKind::Mnemonic);
                assert!(matches!(
                    HsmSecret::from_file_bytes(&file, Some(b"x")),
                    Err(SecretError::PassphraseNotNeeded)
                ));
            }
        }
    }
}
