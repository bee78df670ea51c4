//! The conformance corpora replayed end to end: `node replay` starts `vls-proxy` as
//! lightningd starts hsmd and a `signer` daemon dialling it over mutual TLS, for every case,
//! and every step must match Core Lightning's recorded outcome.

use std::process::Command;
use tests::{binaries, data_file};

/// Runs `node replay` on a corpus (with the signer's policy file, if given) and asserts that
/// every case passed.
fn replay_with(corpus: &str, policy: Option<&str>) {
    let b = binaries();
    let mut cmd = Command::new(&b.node);
    cmd.arg("replay")
        .arg("--corpus")
        .arg(data_file(corpus))
        .arg("--proxy")
        .arg(&b.proxy)
        .arg("--signer")
        .arg(&b.signer);
    if let Some(p) = policy {
        cmd.arg("--policy").arg(data_file(p));
    }
    let out = cmd.output().expect("cannot run node replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        out.status.success() && last.ends_with(" 0 failed"),
        "node replay {corpus} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

fn replay(corpus: &str) {
    replay_with(corpus, None)
}

/// A malicious node's attacks, each refused by the rule it breaks, with the signer's state
/// unchanged (the legitimate steps after each attack get their usual replies).
#[test]
fn attacks_are_refused_under_the_enforcing_policy() {
    replay_with("attacks/policy-attacks.json", Some("attacks/policy.toml"));
}

/// The same requests with every rule in warn mode: signed as Core Lightning signs them.
#[test]
fn attacks_are_signed_in_warn_mode() {
    replay("attacks/policy-attacks.json");
}

#[test]
fn golden_corpus_replays_byte_for_byte() {
    replay("conformance/cln-hsmd-golden.json");
}

#[test]
fn mnemonic_corpus_replays_byte_for_byte() {
    replay("conformance/cln-hsmd-mnemonic.json");
}
