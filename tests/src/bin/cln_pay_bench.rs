//! `cln_pay_bench`: the `pay` round trip of fresh invoices between two real lightningd on
//! regtest, with Core Lightning's own hsmd and with `vls-proxy` + `signer` (mutual TLS,
//! enforce mode, default policy) on both nodes, in the same run. Prints p50, p90, p99 and
//! the mean of each, and their ratio.
//!
//! ```sh
//! cargo build --release -p vls-proxy -p signer
//! cargo run --release -p tests --bin cln_pay_bench -- [PAYMENTS] [BIN_DIR]
//! ```
//! `PAYMENTS` defaults to 200; `BIN_DIR` (where `vls-proxy` and `signer` are) defaults to
//! `target/release`. Needs `lightningd`, `lightning-cli`, `bitcoind`, `bitcoin-cli` on `PATH`
//! (or in `LIGHTNINGD_BIN_DIR`).

use std::time::{Duration, Instant};
use tests::cln::{wait_for, Bitcoind, Hsmd, Node, Tools};
use tests::Binaries;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Opens a channel from a fresh `a` to `b` and times `payments` payments of fresh invoices.
fn run(tools: &Tools, hsmd: Hsmd, bins: &Binaries, payments: usize) -> Vec<Duration> {
    let root = tempfile::Builder::new()
        .prefix("clnbench")
        .tempdir_in("/tmp")
        .expect("a temporary directory");
    let btc = Bitcoind::start(tools, &root.path().join("btc"));
    let mut a = Node::with_binaries(tools, root.path(), "a", hsmd, bins.clone());
    let mut b = Node::with_binaries(tools, root.path(), "b", hsmd, bins.clone());
    a.start(&btc);
    b.start(&btc);
    let addr = a.new_address();
    btc.mine(101, &addr);
    wait_for("a's funds", 60, || (a.confirmed_sat() > 0).then_some(()));
    let b_id = b.id.clone();
    a.rpc("connect", &[&format!("id={b_id}@127.0.0.1:{}", b.port)]);
    a.rpc("fundchannel", &[&format!("id={b_id}"), "amount=10000000"]);
    btc.mine(6, &addr);
    wait_for("the channel", 60, || {
        let s = a.channel_states(&b_id);
        (!s.is_empty() && s.iter().all(|(_, s)| s == "CHANNELD_NORMAL")).then_some(())
    });
    // One payment to warm up (route, gossip, first commitment round).
    let mut times = Vec::with_capacity(payments);
    for i in 0..=payments {
        let inv = b.rpc(
            "invoice",
            &[
                "amount_msat=10000",
                &format!("label=bench{i}"),
                "description=bench",
            ],
        );
        let bolt11 = inv["bolt11"].as_str().unwrap().to_string();
        let t = Instant::now();
        let paid = a.rpc("pay", &[&format!("bolt11={bolt11}")]);
        let took = t.elapsed();
        assert!(paid["payment_preimage"].is_string(), "{paid}");
        if i > 0 {
            times.push(took);
        }
    }
    a.stop();
    b.stop();
    if std::env::var_os("CLN_BENCH_KEEP").is_some() {
        println!("logs kept in {}", root.keep().display());
    }
    times.sort();
    times
}

fn report(name: &str, t: &[Duration]) -> (f64, f64) {
    let mean = t.iter().map(|d| ms(*d)).sum::<f64>() / t.len() as f64;
    let (p50, p90, p99) = (
        ms(percentile(t, 0.5)),
        ms(percentile(t, 0.9)),
        ms(percentile(t, 0.99)),
    );
    println!(
        "{name:<28} n={:<4} p50 {p50:7.2} ms  p90 {p90:7.2} ms  p99 {p99:7.2} ms  mean {mean:7.2} ms",
        t.len()
    );
    (p50, p99)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let payments: usize = args
        .next()
        .map(|a| a.parse().expect("PAYMENTS is a number"))
        .unwrap_or(200);
    let bin_dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tests::target_dir().join("release"));
    let bins = Binaries {
        proxy: bin_dir.join("vls-proxy"),
        signer: bin_dir.join("signer"),
        node: bin_dir.join("node"),
        plugin: bin_dir.join("vls-plugin"),
    };
    assert!(
        bins.proxy.is_file() && bins.signer.is_file(),
        "no vls-proxy and signer in {} (cargo build --release -p vls-proxy -p signer)",
        bin_dir.display()
    );
    let tools = Tools::find().unwrap_or_else(|missing| panic!("not found: {missing:?}"));
    println!(
        "pay round trip of fresh invoices, {payments} payments per setup, lightning-cli included"
    );
    let stock = run(&tools, Hsmd::Stock, &bins, payments);
    let (s50, s99) = report("stock hsmd", &stock);
    let ours = run(&tools, Hsmd::Remote, &bins, payments);
    let (o50, o99) = report("vls-proxy + signer (mTLS)", &ours);
    println!(
        "ratio ours/stock: p50 {:.2}x  p99 {:.2}x",
        o50 / s50,
        o99 / s99
    );
}
