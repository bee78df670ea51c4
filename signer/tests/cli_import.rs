//! `signer init --import` of a mnemonic `hsm_secret` protected by a passphrase: with the right
//! passphrase, without one (lightningd gives it with `hsmd_init`), never with a wrong one.

use std::path::Path;
use std::process::{Command, Output};

fn signer(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_signer"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("signer runs")
}

fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_mnemonic_with_a_passphrase_is_imported_with_or_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "battery staple\n").unwrap();
    let pass = pass.to_str().unwrap();
    let wrong = wrong.to_str().unwrap();

    let a = tmp.path().join("a");
    let made = signer(&a, &["init", "--mnemonic", "--passphrase-file", pass]);
    assert!(made.status.success(), "{made:?}");
    let id = last_line(&made);
    assert_eq!(id.len(), 66);
    let file = a.join("hsm_secret");
    let file = file.to_str().unwrap();

    // Without the passphrase: kept as it is; the node id needs the passphrase.
    let b = tmp.path().join("b");
    let imported = signer(&b, &["init", "--import", file]);
    assert!(imported.status.success(), "{imported:?}");
    assert_eq!(
        std::fs::read(b.join("hsm_secret")).unwrap(),
        std::fs::read(a.join("hsm_secret")).unwrap()
    );
    assert!(!signer(&b, &["node-id"]).status.success());
    assert!(!signer(&b, &["node-id", "--passphrase-file", wrong])
        .status
        .success());
    let shown = signer(&b, &["node-id", "--passphrase-file", pass]);
    assert_eq!(last_line(&shown), id);

    // With it: checked at once.
    let c = tmp.path().join("c");
    let right = signer(&c, &["init", "--import", file, "--passphrase-file", pass]);
    assert_eq!(last_line(&right), id);
    let d = tmp.path().join("d");
    let refused = signer(&d, &["init", "--import", file, "--passphrase-file", wrong]);
    assert!(!refused.status.success());
    assert!(!d.join("hsm_secret").exists());
}
