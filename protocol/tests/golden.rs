//! The conformance corpus recorded from Core Lightning's hsmd: every request and reply decodes
//! and re-encodes to the identical bytes; requests hsmd could not parse give a typed error.

use protocol::{DecodeErrorKind, Message};
use serde_json::Value;
use std::path::PathBuf;

fn corpus(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/conformance")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn steps(c: &Value) -> impl Iterator<Item = (&str, &Value)> {
    c["cases"].as_array().unwrap().iter().flat_map(|case| {
        let name = case["name"].as_str().unwrap();
        case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(move |s| (name, s))
    })
}

/// Decodes `hex` and checks it re-encodes unchanged. Returns the decode error, if any.
fn round_trip(what: &str, hex_msg: &str) -> Result<Message, protocol::DecodeError> {
    let bytes = hex::decode(hex_msg).unwrap();
    let m = Message::decode(&bytes)?;
    assert_eq!(
        hex::encode(m.encode().unwrap()),
        hex_msg,
        "{what}: re-encoding differs"
    );
    Ok(m)
}

/// Requests Core Lightning could not parse (the step's outcome is a refusal), with the typed
/// error we give them.
fn expected_malformed(case: &str, request_name: &str) -> Option<fn(&DecodeErrorKind) -> bool> {
    Some(match (case, request_name) {
        (_, n) if n.starts_with("(short message") => |k| matches!(k, DecodeErrorKind::Short { .. }),
        ("init_unknown_even_tlv", _) => |k| matches!(k, DecodeErrorKind::InvalidTlv(_)),
        ("init_truncated", _) | ("bad_master_truncated", _) => {
            |k| matches!(k, DecodeErrorKind::Short { .. })
        }
        ("ecdh_invalid_point_master" | "ecdh_invalid_point_client", _) => {
            |k| matches!(k, DecodeErrorKind::InvalidPublicKey)
        }
        ("bad_requests_on_clients", "hsmd_ecdh_req") => {
            |k| matches!(k, DecodeErrorKind::Short { .. })
        }
        (
            "bad_requests_on_clients",
            "hsmd_sign_remote_commitment_tx" | "hsmd_sign_remote_htlc_tx",
        )
        | ("bad_master_bool2", _) => |k| matches!(k, DecodeErrorKind::InvalidBool(2)),
        ("bad_master_wirestring_control_char", _) => {
            |k| matches!(k, DecodeErrorKind::InvalidWireString)
        }
        _ => return None,
    })
}

#[test]
fn golden_corpus_round_trips() {
    let mut checked = 0;
    let mut typed_errors = 0;
    for file in ["cln-hsmd-golden.json", "cln-hsmd-mnemonic.json"] {
        let c = corpus(file);
        for (case, step) in steps(&c) {
            let req = step["request"].as_str().unwrap();
            let rname = step["request_name"].as_str().unwrap();
            let outcome = step["outcome"].as_str().unwrap_or("");
            let what = format!("{file} {case} {rname}");
            // A refusal because hsmd could not parse the request (rather than a missing
            // permission or a semantic check).
            let bad = step["bad_request"].as_str().unwrap_or("");
            let parse_refusal =
                outcome == "hsmd_exited" || bad.contains("could not parse") || bad.ends_with(" -1");
            match round_trip(&what, req) {
                Ok(m) => {
                    assert!(
                        !parse_refusal || expected_malformed(case, rname).is_none(),
                        "{what}: CLN could not parse this, but it decoded as {m:?}"
                    );
                    if !rname.starts_with("unknown_type") {
                        assert_eq!(m.name(), rname, "{what}");
                    }
                }
                Err(e) => {
                    assert_ne!(
                        outcome, "reply",
                        "{what}: CLN answered, we could not decode: {e}"
                    );
                    // CLN refused it too; where the corpus says why, the kind must match.
                    if let Some(check) = expected_malformed(case, rname) {
                        assert!(check(e.kind()), "{what}: wrong error kind {e}");
                    }
                    typed_errors += 1;
                }
            }
            if let Some(reply) = step["reply"].as_str() {
                let m = round_trip(&format!("{what} reply"), reply)
                    .unwrap_or_else(|e| panic!("{what}: reply does not decode: {e}"));
                assert_eq!(m.name(), step["reply_name"].as_str().unwrap(), "{what}");
            }
            checked += 1;
        }
    }
    println!("{checked} steps checked, {typed_errors} typed decode errors");
    assert!(checked > 500);
    assert!(typed_errors >= 8);
}

/// A PSBT with a byte after its last map is refused, as libwally refuses it.
#[test]
fn psbt_that_would_not_round_trip_is_refused() {
    let m = hex::decode(
        "006b0000003e70736274ff010033020000000100000000000000000000000000000000000000000000000000000000000000000000000000ffffffff0000000000000000",
    )
    .unwrap();
    let e = Message::decode(&m).unwrap_err();
    assert!(matches!(e.kind(), DecodeErrorKind::InvalidPsbt(_)), "{e}");
}
