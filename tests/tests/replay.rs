//! The conformance corpora replayed end to end: `node replay` starts `vls-proxy` as
//! lightningd starts hsmd and a `signer` daemon dialling it over mutual TLS, for every case,
//! and every step must match Core Lightning's recorded outcome.

use std::process::Command;
use tests::{binaries, data_file};

/// Runs `node replay` on a corpus and asserts that every case passed.
fn replay(corpus: &str) {
    let b = binaries();
    let out = Command::new(&b.node)
        .arg("replay")
        .arg("--corpus")
        .arg(data_file(corpus))
        .arg("--proxy")
        .arg(&b.proxy)
        .arg("--signer")
        .arg(&b.signer)
        .output()
        .expect("cannot run node replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        out.status.success() && last.ends_with(" 0 failed"),
        "node replay {corpus} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn golden_corpus_replays_byte_for_byte() {
    replay("conformance/cln-hsmd-golden.json");
}

#[test]
fn mnemonic_corpus_replays_byte_for_byte() {
    replay("conformance/cln-hsmd-mnemonic.json");
}
