//! End to end under a real Core Lightning: bitcoind regtest and two lightningd (`--developer`,
//! stock options), each with `vls-proxy` as its hsmd and its own signer over mutual TLS in
//! enforce mode with the default policy. Every flow Core Lightning runs for a legitimate
//! channel must pass: funding, opening (each side funds one channel), invoice payments and
//! keysend both ways, a signer restart in the middle of a payment, a lightningd restart, a
//! mutual close, a force close with the sweep back to the wallet, a withdrawal to our own
//! address, and one to a foreign address that `vls-plugin` refuses with a JSON-RPC error
//! naming the rule while lightningd stays up. The same scenario with Core Lightning's own hsmd
//! is the control.
//!
//! Needs `lightningd`, `lightning-cli`, `bitcoind` and `bitcoin-cli` (v26.06.6 and v31.1) on
//! `PATH` or in `LIGHTNINGD_BIN_DIR`: the tests are `#[ignore]`d, and `scripts/test.sh` runs
//! them when the programs are there and says loudly that they were skipped when not.

use std::time::Instant;
use tests::cln::{wait_for, Bitcoind, Hsmd, Node, Tools};

fn tools() -> Tools {
    Tools::find().unwrap_or_else(|missing| {
        panic!("these tests need {missing:?} (PATH or LIGHTNINGD_BIN_DIR)")
    })
}

/// Leaves the test's directory in place when the test fails, and says where.
struct Keep(std::path::PathBuf);

impl Drop for Keep {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = self.0.with_extension("kept");
            if std::fs::rename(&self.0, &kept).is_ok() {
                eprintln!("logs kept in {}", kept.display());
            }
        }
    }
}

/// Seconds since `start`, for the step log.
fn step(start: Instant, what: &str) {
    eprintln!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
}

fn wait_normal(a: &mut Node, b_id: &str, channels: usize) {
    let name = a.name.clone();
    wait_for(
        &format!("{name}'s channels to be CHANNELD_NORMAL"),
        60,
        || {
            let states = a.channel_states(b_id);
            (states.len() >= channels && states.iter().all(|(_, s)| s == "CHANNELD_NORMAL"))
                .then_some(())
        },
    );
}

/// Pays a fresh invoice of `payee` from `payer`.
fn pay_invoice(payer: &mut Node, payee: &mut Node, msat: u64, label: &str) {
    let inv = payee.rpc(
        "invoice",
        &[
            &format!("amount_msat={msat}"),
            &format!("label={label}"),
            "description=e2e",
        ],
    );
    let bolt11 = inv["bolt11"].as_str().unwrap().to_string();
    let paid = payer.rpc("pay", &[&format!("bolt11={bolt11}")]);
    assert_eq!(paid["status"], "complete", "{paid}");
}

fn scenario(hsmd: Hsmd) {
    let tools = tools();
    let start = Instant::now();
    // Short paths: lightningd's RPC socket path must fit in 108 bytes.
    let root = tempfile::Builder::new()
        .prefix("cln")
        .tempdir_in("/tmp")
        .unwrap();
    let _keep = Keep(root.path().to_path_buf());
    let btc = Bitcoind::start(&tools, &root.path().join("btc"));
    let mut a = Node::new(&tools, root.path(), "a", hsmd);
    let mut b = Node::new(&tools, root.path(), "b", hsmd);
    a.start(&btc);
    b.start(&btc);
    step(start, "bitcoind and two lightningd up");

    // Fund both wallets: one block each, then maturity.
    let addr_a = a.new_address();
    let addr_b = b.new_address();
    btc.mine(1, &addr_a);
    btc.mine(1, &addr_b);
    btc.mine(100, &addr_a);
    wait_for("both wallets funded", 60, || {
        (a.confirmed_sat() > 0 && b.confirmed_sat() > 0).then_some(())
    });
    step(start, "wallets funded");

    // Each side funds one channel.
    a.rpc("connect", &[&format!("id={}@127.0.0.1:{}", b.id, b.port)]);
    let b_id = b.id.clone();
    let a_id = a.id.clone();
    let ab = a.rpc("fundchannel", &[&format!("id={b_id}"), "amount=1000000"]);
    btc.mine(1, &addr_a);
    let ba = b.rpc("fundchannel", &[&format!("id={a_id}"), "amount=800000"]);
    let ab_id = ab["channel_id"].as_str().unwrap().to_string();
    let ba_id = ba["channel_id"].as_str().unwrap().to_string();
    btc.mine(6, &addr_a);
    wait_normal(&mut a, &b_id, 2);
    wait_normal(&mut b, &a_id, 2);
    step(start, "two channels open (each side funded one)");

    // Payments both ways: invoices and keysend.
    for i in 0..3 {
        pay_invoice(&mut a, &mut b, 50_000_000 + i, &format!("ab{i}"));
        pay_invoice(&mut b, &mut a, 20_000_000 + i, &format!("ba{i}"));
    }
    // `keysend` is deprecated in v26: `xkeysend` is what a user runs.
    let ks = a.rpc(
        "xkeysend",
        &[&format!("destination={b_id}"), "amount_msat=1234000"],
    );
    assert!(ks["payment_preimage"].is_string(), "{ks}");
    let ks = b.rpc(
        "xkeysend",
        &[&format!("destination={a_id}"), "amount_msat=4321000"],
    );
    assert!(ks["payment_preimage"].is_string(), "{ks}");
    step(start, "invoice payments and keysend both ways");

    // A signer restart in the middle of a payment: the payment completes.
    if hsmd == Hsmd::Remote {
        let inv = b.rpc(
            "invoice",
            &["amount_msat=7000000", "label=restart", "description=r"],
        );
        let bolt11 = inv["bolt11"].as_str().unwrap().to_string();
        a.kill_signer();
        let cli = tools.lightning_cli.clone();
        let dir = a.dir.clone();
        let payer = std::thread::spawn(move || {
            std::process::Command::new(cli)
                .arg(format!("--lightning-dir={}", dir.display()))
                .args(["--network=regtest", "-N", "none", "-k", "pay"])
                .arg(format!("bolt11={bolt11}"))
                .output()
                .unwrap()
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        a.start_signer();
        let out = payer.join().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(
            v["status"],
            "complete",
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        a.check_alive();
        step(
            start,
            "a signer restart in the middle of a payment: the payment completed",
        );
    }

    // A lightningd restart: the channels come back and work.
    a.stop();
    a.start(&btc);
    a.rpc("connect", &[&format!("id={}@127.0.0.1:{}", b_id, b.port)]);
    wait_normal(&mut a, &b_id, 2);
    pay_invoice(&mut a, &mut b, 1_000_000, "after-restart");
    step(
        start,
        "lightningd restarted, channels back, a payment after it",
    );

    // Mutual close of the channel A funded.
    let closed = a.rpc("close", &[&format!("id={ab_id}")]);
    assert_eq!(closed["type"], "mutual", "{closed}");
    // The close reaches bitcoind's mempool a moment after `close` returns: mine until it is
    // in a block.
    wait_for("the mutual close to be ONCHAIN", 60, || {
        btc.mine(1, &addr_a);
        std::thread::sleep(std::time::Duration::from_millis(300));
        a.channel_states(&b_id)
            .iter()
            .any(|(id, s)| id == &ab_id && (s == "ONCHAIN" || s == "FUNDING_SPEND_SEEN"))
            .then_some(())
    });
    a.check_alive();
    b.check_alive();
    if hsmd == Hsmd::Remote {
        // lightningd broadcast the agreed close through `sign_commitment_tx`, and the signer
        // recognised it.
        wait_for(
            "the signer to sign the agreed close for broadcast",
            30,
            || {
                a.signer_log()
                    .contains("comes back to be broadcast")
                    .then_some(())
            },
        );
    }
    step(start, "mutual close");

    // Force close of the channel B funded, by B, with its sweep back to B's wallet.
    b.rpc("disconnect", &[&format!("id={a_id}"), "force=true"]);
    let before = b.confirmed_sat();
    let forced = b.rpc("close", &[&format!("id={ba_id}"), "unilateraltimeout=1"]);
    assert_eq!(forced["type"], "unilateral", "{forced}");
    btc.mine(1, &addr_a);
    // The to_local output waits the delay A asked for, then B sweeps it to its wallet: onchaind
    // reports every output resolved once its sweep is buried.
    wait_for("B's sweep of its force-closed channel", 180, || {
        btc.mine(1, &addr_a);
        b.check_alive();
        let chans = b.rpc("listpeerchannels", &[&format!("id={a_id}")])["channels"].clone();
        let resolved = chans.as_array().unwrap().iter().any(|c| {
            c["channel_id"] == ba_id.as_str()
                && c["status"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|l| l.as_str().unwrap_or("").contains("All outputs resolved"))
                })
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        resolved.then_some(())
    });
    assert!(b.confirmed_sat() > before, "the sweep reached B's wallet");
    step(start, "force close, swept back to the wallet");

    // A withdrawal to our own address.
    let own = a.new_address();
    let w = a.rpc(
        "withdraw",
        &[&format!("destination={own}"), "satoshi=100000"],
    );
    assert!(w["txid"].is_string(), "{w}");
    btc.mine(1, &addr_a);
    a.check_alive();
    step(start, "withdrawal to our own address");

    if hsmd == Hsmd::Remote {
        // A withdrawal to a foreign address: the plugin asks the signer first, and its refusal
        // is a JSON-RPC error naming the rule; lightningd stays up.
        let foreign = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        let refused = a
            .try_rpc(
                "withdraw",
                &[&format!("destination={foreign}"), "satoshi=100000"],
            )
            .expect_err("the signer's policy refuses a foreign destination");
        assert_eq!(refused["code"], 2001, "{refused}");
        let why = refused["message"].as_str().unwrap_or_default();
        assert!(why.contains("onchain-destination-allowlisted"), "{refused}");
        a.rpc("getinfo", &[]);
        a.check_alive();
        step(
            start,
            "withdrawal to a foreign address refused by the plugin, lightningd up",
        );

        // The proxy's log is in lightningd's log, as hsmd's is, and not on its stderr.
        for n in [&a, &b] {
            assert!(
                n.log_has("INFO    hsmd: signer stream"),
                "{}",
                n.log_tail(60)
            );
            let stderr = std::fs::read_to_string(n.dir.join("stderr.log")).unwrap_or_default();
            assert!(!stderr.contains("vls-proxy"), "{} stderr: {stderr}", n.name);
        }
        // Nothing was refused along the way.
        for n in [&a, &b] {
            assert!(
                !n.log_has("refused"),
                "{} refused something:\n{}",
                n.name,
                n.log_tail(60)
            );
        }
    }
    a.stop();
    b.stop();
    step(start, "done");
}

#[test]
#[ignore = "needs lightningd and bitcoind; scripts/test.sh runs it when they are installed"]
fn real_lightningd_with_vls_proxy_and_signers() {
    scenario(Hsmd::Remote);
}

#[test]
#[ignore = "needs lightningd and bitcoind; scripts/test.sh runs it when they are installed"]
fn real_lightningd_with_stock_hsmd_control() {
    scenario(Hsmd::Stock);
}
