//! `round_bench`: the signer's work for payments, as a node asks for it through the whole
//! path (a real `vls-proxy` started as lightningd starts hsmd, a real `signer` over mutual TLS,
//! enforce mode with the default rules), with 1, 8 and 64 channels paying at once.
//!
//! Each payment on a channel is what channeld and lightningd ask for a keysend we send and the
//! peer fulfils: `preapprove_keysend` on the master, then two BOLT 2 rounds (the HTLC added,
//! then removed), each `sign_remote_commitment_tx`, `validate_revocation`,
//! `validate_commitment_tx` (with the peer's real commitment and HTLC signatures) and
//! `revoke_commitment_tx`: nine requests, eight of them committed to disk before their reply.
//! Channels run in parallel, the requests of one channel one after the other, as lightningd
//! sends them. (Core Lightning also asks `sign_remote_htlc_tx` once per HTLC output of the
//! peer's commitment; the test model does not build it, so it is not counted here.)
//!
//! Prints one JSON line per channel count with the latency of each request type and of whole
//! payments (p50, p99, in µs), payments per second, and the signer's CPU time per payment.
//!
//! ```sh
//! cargo build --release -p vls-proxy -p signer -p tests --bin round_bench
//! ./target/release/round_bench [PAYMENTS_PER_CHANNEL] [BIN_DIR]
//! ```
//! `PAYMENTS_PER_CHANNEL` defaults to 20 (at most 200); `BIN_DIR` (where `vls-proxy` and
//! `signer` are) to `target/release`.

use node::bench::{cpu_time, Rig, RigConfig};
use node::HsmClient;
use protocol::msgs::{GetPerCommitmentPoint, NewChannel, PreapproveKeysend};
use protocol::types::{AmountMsat, NodeId};
use protocol::{Message, Permissions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::chan::{self, Channel, Model, Opening, Owner};

/// The signer's `hsm_secret` in this bench.
const SECRET: [u8; 32] = [0x5b; 32];
/// Each channel's value; we fund it all.
const VALUE_SAT: u64 = 1_000_000;
/// What each payment sends.
const PAYMENT_MSAT: u64 = 10_000_000;

/// The default rules, enforced, with room for every payment the bench makes.
const POLICY: &str = "[limits]\nmax_tracked_invoices = 1000000\nvelocity_limit_sat = 1000000000\n";

/// Latencies by request name.
type Timings = BTreeMap<&'static str, Vec<Duration>>;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Sends `msg` on `client`, timing it under `name`.
async fn ask(client: &HsmClient, msg: Message, name: &'static str, t: &mut Timings) {
    let bytes = msg.encode().expect("encodable");
    let start = Instant::now();
    if let Err(e) = client.request(&bytes).await {
        panic!("{name} refused: {e}");
    }
    t.entry(name).or_default().push(start.elapsed());
}

/// One BOLT 2 round to commitment `n` with state `m`, as the side that proposes it.
async fn round(c: &HsmClient, ch: &Channel, n: u64, m: &Model, t: &mut Timings) {
    let theirs = ch.build(Owner::Counterparty, n, m);
    ask(
        c,
        ch.sign_remote(n, &theirs),
        "sign_remote_commitment_tx",
        t,
    )
    .await;
    ask(c, ch.peer_revokes(n - 1), "validate_revocation", t).await;
    let ours = ch.build(Owner::Holder, n, m);
    ask(c, ch.validate(n, &ours), "validate_commitment_tx", t).await;
    ask(c, ch.revoke(n - 1), "revoke_commitment_tx", t).await;
}

/// Opens channel `ch` (lightningd's and openingd's requests), then makes `payments`
/// payments over it; the timings of every request after the opening, and of each payment.
async fn pay(rig: Arc<Rig>, ch: Channel, payments: u8) -> (Timings, Vec<Duration>) {
    let master = rig.hsmd.master();
    let mut setup = Timings::new();
    ask(
        master,
        NewChannel::new(ch.peer_id, ch.dbid).into(),
        "new_channel",
        &mut setup,
    )
    .await;
    let openingd = rig
        .hsmd
        .new_client(ch.peer_id, ch.dbid, Permissions::OPENINGD)
        .await
        .expect("openingd's client");
    let mut m = Model {
        salt: ch.dbid,
        ..ch.opening()
    };
    ask(
        &openingd,
        GetPerCommitmentPoint::new(0).into(),
        "get_per_commitment_point",
        &mut setup,
    )
    .await;
    ask(&openingd, ch.setup_msg(), "setup_channel", &mut setup).await;
    let theirs = ch.build(Owner::Counterparty, 0, &m);
    ask(&openingd, ch.sign_remote(0, &theirs), "open", &mut setup).await;
    let ours = ch.build(Owner::Holder, 0, &m);
    ask(&openingd, ch.validate(0, &ours), "open", &mut setup).await;
    let channeld = rig
        .hsmd
        .new_client(ch.peer_id, ch.dbid, Permissions::CHANNELD)
        .await
        .expect("channeld's client");

    let mut t = Timings::new();
    let mut whole = Vec::with_capacity(usize::from(payments));
    let mut n = 0;
    for id in 1..=payments {
        let start = Instant::now();
        let keysend =
            PreapproveKeysend::new(ch.peer_id, m.hash(id), AmountMsat::from_msat(PAYMENT_MSAT));
        ask(master, keysend.into(), "preapprove_keysend", &mut t).await;
        m = m.offer(PAYMENT_MSAT, id);
        n += 1;
        round(&channeld, &ch, n, &m, &mut t).await;
        m = m.fulfill(id);
        n += 1;
        round(&channeld, &ch, n, &m, &mut t).await;
        whole.push(start.elapsed());
    }
    (t, whole)
}

async fn run(bins: &(std::path::PathBuf, std::path::PathBuf), channels: u64, payments: u8) {
    let mut cfg = RigConfig::new(&bins.0, &bins.1, &SECRET);
    cfg.policy = Some(POLICY.into());
    cfg.log_filter = "warn".into();
    let rig = Arc::new(Rig::start(cfg).await.expect("proxy and signer"));
    let init = Message::from(chan::init_regtest()).encode().expect("init");
    rig.hsmd.master().request(&init).await.expect("init");
    let (reference, _) = tests::reference_signer(&SECRET, signer::Policy::warn_only(), &init);
    let session = reference.session().expect("initialized");
    let keys = &session.keys;
    let chans: Vec<Channel> = (0..channels)
        .map(|i| {
            let peer_byte = 0x10u8.wrapping_add(i as u8);
            Channel::new(
                keys,
                NodeId::from_pubkey(&chan::pubkey(peer_byte)),
                1000 + i,
                [peer_byte.wrapping_add(0x40); 32],
                &Opening {
                    value_sat: VALUE_SAT,
                    push_msat: 0,
                    funding: bitcoin::OutPoint {
                        txid: chan::txid(peer_byte),
                        vout: 0,
                    },
                    shutdown_wallet_index: 1,
                    remote_shutdown: chan::p2wpkh(&chan::pubkey(peer_byte.wrapping_add(0x20))),
                },
            )
        })
        .collect();
    let pid = rig.signer_pid().expect("the signer runs");
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for ch in chans {
        tasks.spawn(pay(rig.clone(), ch, payments));
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.expect("a channel's payments"));
    }
    let took = started.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let mut by_op = Timings::new();
    let mut whole = Vec::new();
    for (t, w) in results {
        for (op, v) in t {
            by_op.entry(op).or_default().extend(v);
        }
        whole.extend(w);
    }
    whole.sort();
    let mut ops = serde_json::Map::new();
    for (op, mut v) in by_op {
        v.sort();
        ops.insert(
            op.into(),
            serde_json::json!({
                "n": v.len(),
                "p50_us": (percentile(&v, 0.5) * 10.0).round() / 10.0,
                "p99_us": (percentile(&v, 0.99) * 10.0).round() / 10.0,
            }),
        );
    }
    let done = whole.len() as f64;
    let line = serde_json::json!({
        "bench": "payment_rounds",
        "channels": channels,
        "payments": whole.len(),
        "payment_p50_us": (percentile(&whole, 0.5)).round(),
        "payment_p99_us": (percentile(&whole, 0.99)).round(),
        "payments_per_s": (done / took.as_secs_f64() * 10.0).round() / 10.0,
        "signer_cpu_us_per_payment": (cpu.as_secs_f64() * 1e6 / done).round(),
        "requests": ops,
    });
    println!("{line}");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let payments: u8 = args
        .next()
        .map(|a| {
            a.parse()
                .expect("PAYMENTS_PER_CHANNEL is a number up to 200")
        })
        .unwrap_or(20)
        .min(200);
    let bin_dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tests::target_dir().join("release"));
    let bins = (bin_dir.join("vls-proxy"), bin_dir.join("signer"));
    assert!(
        bins.0.is_file() && bins.1.is_file(),
        "no vls-proxy and signer in {} (cargo build --release -p vls-proxy -p signer)",
        bin_dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for channels in [1, 8, 64] {
        rt.block_on(run(&bins, channels, payments));
    }
}
