//! PSBTs as lightningd (libwally) writes them, captured from Core Lightning v26.06.6 on
//! regtest (`tests/data/psbt/`): they decode, and a frame carrying one is written back byte
//! for byte, whatever rust-bitcoin's own serialization of it would be.

use bitcoin::base64::Engine;
use protocol::codec::{Reader, Wire};
use protocol::types::WirePsbt;
use std::path::Path;

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/psbt")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    bitcoin::base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap()
}

#[test]
fn lightningds_psbts_round_trip_byte_for_byte() {
    let names = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/psbt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".b64"));
    for name in names {
        let name = name.as_str();
        let raw = vector(name);
        let mut frame = Vec::new();
        (raw.len() as u32).write(&mut frame).unwrap();
        frame.extend_from_slice(&raw);
        let mut r = Reader::new(&frame);
        let psbt = WirePsbt::read(&mut r).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!psbt.inputs.is_empty(), "{name}");
        let mut again = Vec::new();
        psbt.write(&mut again).unwrap();
        assert_eq!(again, frame, "{name}: written back as lightningd wrote it");
        println!(
            "{name}: {} bytes, rust-bitcoin would write it {}",
            raw.len(),
            if psbt.serialize() == raw {
                "identically"
            } else {
                "differently"
            }
        );
    }
}
