//! Real lightningd <-> hsmd traffic recorded by the Validating Lightning Signer project with an
//! older Core Lightning (see tests/data/conformance/README.md). Frames whose layout is still
//! current decode and re-encode to identical bytes; frames of a retired layout are named here
//! and must be rejected with a typed error, never a panic.

use protocol::{DecodeErrorKind, Message};
use std::path::PathBuf;

/// The frames of one recorded file: (length prefix, message).
fn frames(name: &str) -> Vec<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/conformance/vls-recorded")
        .join(name);
    let text = std::fs::read_to_string(p).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    lines
        .chunks(2)
        .map(|c| {
            let len = u32::from_str_radix(c[0], 16).unwrap() as usize;
            let msg = hex::decode(c[1]).unwrap();
            assert_eq!(len, msg.len(), "{name}: length prefix");
            msg
        })
        .collect()
}

/// Frames of a layout Core Lightning has since changed: (file, message type, why, expected
/// error).
type Retired = (
    &'static str,
    u16,
    &'static str,
    fn(&DecodeErrorKind) -> bool,
);

const RETIRED: &[Retired] = &[
    ("r_3.hex", 11, "hsmd_init without the version fields", |k| {
        matches!(k, DecodeErrorKind::Short { .. })
    }),
    // The old tx encoding is cut short, or its bytes do not form a PSBT that re-encodes.
    (
        "r_6.hex",
        19,
        "sign_remote_commitment_tx without commit_num/htlcs/feerate",
        |k| {
            matches!(
                k,
                DecodeErrorKind::Short { .. } | DecodeErrorKind::InvalidPsbt(_)
            )
        },
    ),
    (
        "w_3.hex",
        111,
        "init reply of type 111, replaced by hsmd_init_reply_v4 (114)",
        |k| matches!(k, DecodeErrorKind::UnknownType),
    ),
];

#[test]
fn recorded_traffic() {
    let mut current = 0;
    let mut retired = 0;
    for file in [
        "r_3.hex", "r_5.hex", "r_6.hex", "w_0.hex", "w_3.hex", "w_4.hex", "w_5.hex", "w_6.hex",
    ] {
        for (i, msg) in frames(file).into_iter().enumerate() {
            let t = u16::from_be_bytes([msg[0], msg[1]]);
            let result = Message::decode_known(&msg);
            match RETIRED.iter().find(|(f, ty, _, _)| *f == file && *ty == t) {
                Some((_, _, why, check)) => {
                    let e = result.expect_err(why);
                    assert!(check(e.kind()), "{file} frame {i} ({why}): wrong error {e}");
                    println!("{file} frame {i}: retired layout ({why}): {e}");
                    retired += 1;
                }
                None => {
                    let m = result.unwrap_or_else(|e| panic!("{file} frame {i}: {e}"));
                    assert_eq!(m.encode().unwrap(), msg, "{file} frame {i} ({})", m.name());
                    current += 1;
                }
            }
        }
    }
    println!("{current} current frames round-trip, {retired} retired frames rejected");
    assert_eq!((current, retired), (178, 17));
}
